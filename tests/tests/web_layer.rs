//! `ResilienceLayer` in an axum app served on 127.0.0.1: every answer, over real sockets.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;

use crate::support::{chromium, field, SpanRecorder};
use resilience::{ClientKey, MiddlewareConfig, RateLimitConfig, ResilienceLayer};

/// Serves `app` (with peer addresses) on a free port of 127.0.0.1.
pub(crate) async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
    });
    format!("http://{addr}")
}

pub(crate) fn client() -> reqwest::Client {
    resilience::install_crypto_provider();
    reqwest::Client::builder().build().expect("client")
}

fn app(config: MiddlewareConfig) -> axum::Router {
    let failures = Arc::new(AtomicUsize::new(0));
    axum::Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route("/users/{id}", get(|| async { "a user" }))
        .route(
            "/fail",
            get(move || {
                failures.fetch_add(1, SeqCst);
                async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "broken") }
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(400)).await;
                "slow"
            }),
        )
        .route(
            "/hold",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "held"
            }),
        )
        .route("/healthz", get(|| async { "healthy" }))
        .layer(ResilienceLayer::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_gets_504() {
    let url = serve(app(MiddlewareConfig { request_timeout: Duration::from_millis(100), ..Default::default() })).await;
    let start = std::time::Instant::now();
    let response = client().get(format!("{url}/slow")).send().await.unwrap();
    assert_eq!(response.status(), 504);
    assert!(start.elapsed() < Duration::from_millis(350), "answered after {:?}", start.elapsed());
    assert_eq!(client().get(format!("{url}/ok")).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_bulkhead_gets_503_with_retry_after() {
    let url = serve(app(MiddlewareConfig { bulkhead_max_concurrent: 1, ..Default::default() })).await;
    let slow = tokio::spawn({
        let url = url.clone();
        async move { client().get(format!("{url}/hold")).send().await.unwrap().status() }
    });
    // While `/hold` has the only slot, other requests are refused (polled: the first
    // request may get there before it).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    let response = loop {
        let response = client().get(format!("{url}/ok")).send().await.unwrap();
        if response.status() == 503 {
            break response;
        }
        assert!(tokio::time::Instant::now() < deadline, "never refused while the slot was held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(slow.await.unwrap(), 200);
    assert_eq!(client().get(format!("{url}/ok")).send().await.unwrap().status(), 200, "the slot came back");
}

/// Status of `router`'s answer to a GET of `path`, if it comes in one poll; the pending
/// future otherwise.
fn get_now(
    router: &axum::Router,
    path: &str,
) -> Result<u16, std::pin::Pin<Box<dyn std::future::Future<Output = u16> + Send>>> {
    use tower::ServiceExt;
    let request = axum::http::Request::get(path).body(axum::body::Body::empty()).unwrap();
    let router = router.clone();
    let mut future: std::pin::Pin<Box<dyn std::future::Future<Output = u16> + Send>> =
        Box::pin(async move { router.oneshot(request).await.unwrap().status().as_u16() });
    let waker = std::task::Waker::noop();
    match future.as_mut().poll(&mut std::task::Context::from_waker(waker)) {
        std::task::Poll::Ready(status) => Ok(status),
        std::task::Poll::Pending => Err(future),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_request_gives_its_slot_back_whether_it_ran_or_waited() {
    let router = |max_wait| {
        axum::Router::new()
            .route("/ok", get(|| async { "ok" }))
            .route("/hold", get(std::future::pending::<&'static str>))
            .layer(ResilienceLayer::new(MiddlewareConfig {
                bulkhead_max_concurrent: 1,
                bulkhead_max_wait: max_wait,
                ..Default::default()
            }))
    };
    // Refused at once while the slot is held; free again once the holder is dropped.
    let app = router(Duration::ZERO);
    let held = get_now(&app, "/hold").expect_err("/hold never answers");
    assert_eq!(get_now(&app, "/ok").ok(), Some(503));
    drop(held);
    assert_eq!(get_now(&app, "/ok").ok(), Some(200), "the dropped request's slot came back");

    // With a wait: a waiting request gets the slot when the holder ends, and one
    // dropped while waiting takes nothing with it.
    let app = router(Duration::from_secs(10));
    let held = get_now(&app, "/hold").expect_err("/hold never answers");
    let waiting = get_now(&app, "/ok").expect_err("waits for the slot");
    drop(waiting);
    let waiting = get_now(&app, "/ok").expect_err("waits for the slot");
    drop(held);
    let status = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("the waiting request got the slot");
    assert_eq!(status, 200);
    assert_eq!(get_now(&app, "/ok").ok(), Some(200), "every slot came back");
}

#[tokio::test(start_paused = true)]
async fn the_timeout_keeps_tokio_s_clock_so_a_paused_test_is_exact() {
    use tower::ServiceExt;
    let app = axum::Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "slow"
            }),
        )
        .layer(ResilienceLayer::new(MiddlewareConfig {
            request_timeout: Duration::from_secs(2),
            ..Default::default()
        }));
    // Real time passes before the request: a deadline from the wall clock would drift.
    std::thread::sleep(Duration::from_millis(50));
    let started = tokio::time::Instant::now();
    let request = axum::http::Request::get("/slow").body(axum::body::Body::empty()).unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 504);
    assert_eq!(started.elapsed(), Duration::from_secs(2), "the deadline, on tokio's clock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_s_breaker_opens_on_5xx_and_only_that_route_is_refused() {
    let config = MiddlewareConfig {
        circuit_breaker_failure_threshold: 3,
        circuit_breaker_recovery_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let url = serve(app(config)).await;
    let c = client();
    for _ in 0..3 {
        assert_eq!(c.get(format!("{url}/fail")).send().await.unwrap().status(), 500);
    }
    let refused = c.get(format!("{url}/fail")).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    let after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&after), "{after}");
    assert_eq!(c.get(format!("{url}/ok")).send().await.unwrap().status(), 200, "another route is not affected");
    // Breakers are per matched route: `/users/{id}` is one route whatever the id.
    for id in 0..10 {
        assert_eq!(c.get(format!("{url}/users/{id}")).send().await.unwrap().status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_limit_gets_429_with_the_ratelimit_headers() {
    let config = MiddlewareConfig {
        rate_limit: Some(RateLimitConfig::per_client(1.0, 3).with_quota_headers()),
        excluded_paths: vec!["/healthz".into()],
        ..Default::default()
    };
    let url = serve(app(config)).await;
    let c = client();
    for remaining in [2, 1, 0] {
        let response = c.get(format!("{url}/ok")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["ratelimit-limit"], "3");
        assert_eq!(response.headers()["ratelimit-remaining"], remaining.to_string().as_str());
    }
    let limited = c.get(format!("{url}/ok")).send().await.unwrap();
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "1");
    assert_eq!(limited.headers()["ratelimit-remaining"], "0");
    assert!(limited.headers().contains_key("ratelimit-reset"));
    // Forged forwarding headers from an untrusted peer do not make a new client.
    for i in 0..5 {
        let forged = c.get(format!("{url}/ok")).header("x-forwarded-for", format!("203.0.113.{i}")).send().await;
        assert_eq!(forged.unwrap().status(), 429);
    }
    // Excluded paths bypass everything.
    for _ in 0..10 {
        assert_eq!(c.get(format!("{url}/healthz")).send().await.unwrap().status(), 200);
    }
}

/// Without `quota_headers`, admitted answers carry no `RateLimit-*` header; the 429 still
/// carries all three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admitted_answers_carry_the_ratelimit_headers_only_when_asked() {
    let url =
        serve(app(MiddlewareConfig { rate_limit: Some(RateLimitConfig::per_client(1.0, 1)), ..Default::default() }))
            .await;
    let c = client();
    let admitted = c.get(format!("{url}/ok")).send().await.unwrap();
    assert_eq!(admitted.status(), 200);
    for name in ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"] {
        assert!(!admitted.headers().contains_key(name), "{name} on an admitted answer");
    }
    let limited = c.get(format!("{url}/ok")).send().await.unwrap();
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["ratelimit-limit"], "1");
    assert_eq!(limited.headers()["ratelimit-remaining"], "0");
    assert!(limited.headers().contains_key("ratelimit-reset"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_can_be_told_apart_by_a_header() {
    let config = MiddlewareConfig {
        rate_limit: Some(RateLimitConfig::per_client(1.0, 1).keyed_by(ClientKey::Header("x-api-key".parse().unwrap()))),
        ..Default::default()
    };
    let url = serve(app(config)).await;
    let c = client();
    assert_eq!(c.get(format!("{url}/ok")).header("x-api-key", "a").send().await.unwrap().status(), 200);
    assert_eq!(c.get(format!("{url}/ok")).header("x-api-key", "a").send().await.unwrap().status(), 429);
    assert_eq!(c.get(format!("{url}/ok")).header("x-api-key", "b").send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_id_is_kept_or_made() {
    let url = serve(app(MiddlewareConfig::default())).await;
    let c = client();
    let kept = c.get(format!("{url}/ok")).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(kept.headers()["x-request-id"], "abc-123");
    let made = c.get(format!("{url}/ok")).send().await.unwrap();
    let id = made.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(!id.is_empty());
    let other = c.get(format!("{url}/ok")).send().await.unwrap();
    assert_ne!(other.headers()["x-request-id"].to_str().unwrap(), id, "a new id per request");
    // An id that cannot be repeated safely is replaced.
    let bad = c.get(format!("{url}/ok")).header("x-request-id", "a b").send().await.unwrap();
    assert_ne!(bad.headers()["x-request-id"], "a b");

    // Switched off, the layer neither makes an id nor repeats the client's.
    let off = serve(app(MiddlewareConfig { enable_request_id: false, ..Default::default() })).await;
    let none = c.get(format!("{off}/ok")).send().await.unwrap();
    assert_eq!(none.status(), 200);
    assert!(none.headers().get("x-request-id").is_none());
    let given = c.get(format!("{off}/ok")).header("x-request-id", "abc-123").send().await.unwrap();
    assert!(given.headers().get("x-request-id").is_none());
}

/// The request's span carries its method, matched route and request id (the client's,
/// or the one made for it and answered), for a subscriber that takes it.
#[test]
fn the_request_span_carries_the_request_id() {
    use tower::ServiceExt;
    let recorder = Arc::new(SpanRecorder::of("request"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let peer = axum::extract::ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000)));
    let made = crate::support::with_subscriber(Arc::clone(&recorder), || {
        runtime.block_on(async {
            let app = app(MiddlewareConfig::default());
            let mut ids = Vec::new();
            for given in [Some("client-7"), None] {
                let mut request = axum::http::Request::get("/users/42");
                if let Some(id) = given {
                    request = request.header("x-request-id", id);
                }
                let mut request = request.body(axum::body::Body::empty()).unwrap();
                request.extensions_mut().insert(peer);
                let response = app.clone().oneshot(request).await.unwrap();
                ids.push(response.headers()["x-request-id"].to_str().unwrap().to_owned());
            }
            ids
        })
    });
    assert_eq!(made[0], "client-7");
    let spans = recorder.spans.lock().unwrap();
    assert_eq!(spans.len(), 2, "{spans:?}");
    for (span, id) in spans.iter().zip(&made) {
        assert_eq!(field(span, "request_id"), format!("{id:?}"));
        assert_eq!(field(span, "route"), "\"/users/{id}\"");
        assert_eq!(field(span, "method"), "\"GET\"");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_headers_get_answers_not_panics() {
    let config = MiddlewareConfig {
        rate_limit: Some(RateLimitConfig::per_client(1000.0, 1000).with_quota_headers()),
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..Default::default()
    };
    let url = serve(app(config)).await;
    let c = client();
    let long = "x".repeat(16 * 1024);
    for (name, value) in [
        ("x-forwarded-for", "not, an, address"),
        ("x-forwarded-for", long.as_str()),
        ("forwarded", "for=\"[::1"),
        ("forwarded", ";;;=,for"),
        ("x-request-id", long.as_str()),
    ] {
        let response = c.get(format!("{url}/ok")).header(name, value).send().await.unwrap();
        assert_eq!(response.status(), 200, "{name}");
    }
    // Behind a trusted proxy (127.0.0.1 here), the forwarded client is limited on its own.
    let one = c.get(format!("{url}/ok")).header("x-forwarded-for", "198.51.100.7").send().await.unwrap();
    assert_eq!(one.headers()["ratelimit-remaining"], "999");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_peer_address_a_per_address_limit_says_so() {
    let app = app(MiddlewareConfig { rate_limit: Some(RateLimitConfig::per_client(10.0, 10)), ..Default::default() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let response = client().get(format!("{url}/ok")).send().await.unwrap();
    assert_eq!(response.status(), 500);
    assert!(response.text().await.unwrap().contains("into_make_service_with_connect_info"));
}

/// A million distinct clients through the limiter: its table never holds more than
/// `max_clients`, and every new client still gets its burst.
#[test]
fn a_million_clients_stay_within_the_bound() {
    let limiter = resilience::KeyedRateLimiter::new(
        "http_million",
        resilience::RateLimiterConfig {
            rate: 100.0,
            burst: std::num::NonZeroU32::new(10).unwrap(),
            max_keys: std::num::NonZeroUsize::new(10_000).unwrap(),
            shared: false,
        },
    )
    .unwrap();
    let mut admitted = 0u64;
    for client in 0..1_000_000u64 {
        let ip = std::net::IpAddr::V6(std::net::Ipv6Addr::from(u128::from(client) << 64));
        admitted += u64::from(limiter.check_key(&ip).is_ok());
        assert!(limiter.keys() <= 10_000);
    }
    assert_eq!(admitted, 1_000_000);
}

#[test]
fn a_bad_configuration_is_an_error_naming_the_field() {
    let e =
        ResilienceLayer::try_new(MiddlewareConfig { bulkhead_max_concurrent: 0, ..Default::default() }).unwrap_err();
    assert_eq!(e.to_string(), "invalid `bulkhead_max_concurrent`: must be at least 1");
    let e = ResilienceLayer::try_new(MiddlewareConfig {
        rate_limit: Some(RateLimitConfig::per_client(0.0, 1)),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.to_string().starts_with("invalid `rate_limit.per_second`"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_observability_routes_answer() {
    // Installs the Prometheus recorder for the process (the other tests record locally).
    let routes: axum::Router = resilience::web::routes();
    // A healthy dependency of its own, so the process is never all down (a test forces one
    // breaker open) and `/health` answers 200.
    resilience::registry()
        .register("observed_healthy", resilience::DependencyType::Cache, Default::default())
        .expect("valid");
    // Routes of its own: the recorder is the process's, and other tests count `/ok`.
    let app = axum::Router::new()
        .route("/observed", get(|| async { "ok" }))
        .route("/observed_fail", get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "broken") }))
        .layer(ResilienceLayer::new(MiddlewareConfig::default()));
    let url = serve(routes.merge(app)).await;
    let c = client();
    for _ in 0..3 {
        assert_eq!(c.get(format!("{url}/observed")).send().await.unwrap().status(), 200);
    }
    assert_eq!(c.get(format!("{url}/observed_fail")).send().await.unwrap().status(), 500);
    let health = c.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.headers()["content-type"], "application/json");
    let body = health.text().await.unwrap();
    assert!(body.contains("\"dependencies\"") && body.contains("\"pools\"") && body.contains("\"alerts\""), "{body}");
    // An adaptive bulkhead and a retry budget (issue 14), made after the recorder.
    let own = resilience::ConfigOverrides {
        bulkhead: resilience::BulkheadOverrides {
            kind: Some(resilience::BulkheadKind::Adaptive),
            ..Default::default()
        },
        retry: resilience::RetryOverrides { budget: Some(Default::default()), ..Default::default() },
        ..Default::default()
    };
    resilience::registry().register("observed_adaptive", resilience::DependencyType::Cache, own).expect("valid");
    let report = c.get(format!("{url}/resilience")).send().await.unwrap().text().await.unwrap();
    assert!(report.starts_with("{\"status\":"), "{report}");
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let adaptive =
        report["dependencies"].as_array().unwrap().iter().find(|d| d["name"] == "observed_adaptive").unwrap();
    assert_eq!(adaptive["bulkhead_max_concurrent"], 20, "the adaptive default start: {adaptive}");
    assert_eq!(adaptive["adaptive_live_limit"], 3, "pinned by the first probe: {adaptive}");
    assert_eq!(adaptive["retry_budget_remaining"], 100, "the reserve, 10/s over 10 s: {adaptive}");
    let metrics = c.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("resilience_http_requests_total{method=\"GET\",route=\"/observed\",status=\"200\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("resilience_http_requests_total{method=\"GET\",route=\"/observed_fail\",status=\"500\"} 1"),
        "{text}"
    );
    // Counted per thread, handed to the recorder before the render: every answer is
    // there (the unit tests of `aggregate` check each lands in its bucket).
    for suffix in
        ["_bucket{method=\"GET\",route=\"/observed\",le=\"+Inf\"}", "_count{method=\"GET\",route=\"/observed\"}"]
    {
        let line = format!("resilience_http_request_duration_seconds{suffix} 3\n");
        assert!(text.contains(&line), "durations are histograms, {line}: {text}");
    }
    // The recorder's samples are folded into their buckets whether or not anything
    // scrapes: its upkeep runs on a thread of its own.
    let threads: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect();
    assert!(threads.iter().any(|name| name == resilience::prometheus::UPKEEP_THREAD), "{threads:?}");
    assert!(text.contains("resilience_adaptive_limit{name=\"observed_adaptive\"} 20"), "{text}");
    assert!(text.contains("resilience_adaptive_in_flight{name=\"observed_adaptive\"} 0"), "{text}");
    assert!(text.contains("resilience_retry_budget_remaining{name=\"observed_adaptive\"} 100"), "{text}");
    let page = c.get(format!("{url}/resilience/dashboard")).send().await.unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let page = page.text().await.unwrap();
    assert!(page.contains("fetch(\"../resilience\""), "the page reads /resilience");
    for outside in ["src=", "href=", "@import", "url("] {
        assert!(!page.contains(outside), "the page loads nothing from outside: `{outside}`");
    }
}

/// The dashboard in headless Chromium against a running server whose breaker is open:
/// the page shows the dependency as open, and a screenshot is saved to
/// `target/dashboard.png`; the browser can reach no host but 127.0.0.1, so the page
/// cannot load anything from outside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium: run scripts/test, which installs it"]
async fn the_dashboard_shows_an_open_breaker_in_chromium() {
    let dependency = resilience::registry()
        .register("dashboard_payments", resilience::DependencyType::ExternalApi, Default::default())
        .expect("valid");
    dependency.pipeline().circuit_breaker().expect("a breaker").force_open();
    let shared = resilience::ConfigOverrides {
        circuit_breaker: resilience::BreakerOverrides { shared: Some(true), ..Default::default() },
        rate_limit: resilience::RateLimitOverrides { rate: Some(50.0), shared: Some(true), ..Default::default() },
        ..Default::default()
    };
    resilience::registry()
        .register("dashboard_shared", resilience::DependencyType::ExternalApi, shared)
        .expect("valid");
    let routes: axum::Router = resilience::web::routes();
    let page = format!("{}/resilience/dashboard", serve(routes).await);
    let output = chromium(page.clone(), None).await;
    let dom = String::from_utf8_lossy(&output.stdout);
    let row = dom
        .split("<tr")
        .find(|row| row.contains("data-dependency=\"dashboard_payments\""))
        .unwrap_or_else(|| panic!("the page lists the dependency: {dom}"));
    assert!(row.contains("class=\"state forced_open\""), "shown as open: {row}");
    assert!(!row.contains("class=\"tag\""), "a local breaker marked shared: {row}");
    let row = dom
        .split("<tr")
        .find(|row| row.contains("data-dependency=\"dashboard_shared\""))
        .unwrap_or_else(|| panic!("the page lists the shared dependency: {dom}"));
    assert!(row.contains(">shared<") && row.contains(">shared limit<"), "shown as shared: {row}");
    let screenshot = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/dashboard.png");
    let shot = chromium(page, Some(screenshot)).await;
    assert!(shot.status.success(), "{}", String::from_utf8_lossy(&shot.stderr));
    let size = std::fs::metadata(screenshot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 1_000, "a screenshot was saved ({size} bytes)");
}

#[test]
fn the_middleware_comes_from_the_settings_file_with_its_error_rules() {
    let settings = resilience::Settings::from_yaml_str(
        "middleware:\n  request_timeout: 5s\n  enable_request_id: false\n  bulkhead_max_concurrent: 50\n  rate_limit: { per_second: 10, burst: 5, key_header: x-api-key, quota_headers: true }\n  trusted_proxies: [10.0.0.0/8, 192.168.1.1]\n  excluded_paths:\n    - /health\n    - /metrics\n",
    )
    .expect("valid");
    let config = resilience::web::middleware_from_settings(&settings).unwrap().expect("a section");
    assert_eq!(config.request_timeout, Duration::from_secs(5));
    assert!(!config.enable_request_id);
    assert_eq!(config.bulkhead_max_concurrent, 50);
    assert_eq!(config.excluded_paths, ["/health", "/metrics"]);
    assert_eq!(config.trusted_proxies, ["10.0.0.0/8".parse().unwrap(), "192.168.1.1/32".parse().unwrap()]);
    let limit = config.rate_limit.expect("a limit");
    assert_eq!((limit.per_second, limit.burst), (10.0, 5));
    assert_eq!(limit.key, ClientKey::Header("x-api-key".parse().unwrap()));
    assert!(limit.quota_headers);
    ResilienceLayer::try_new(MiddlewareConfig { rate_limit: Some(limit), ..config }).expect("a layer");

    let with_chaos = resilience::Settings::from_yaml_str(
        "middleware:\n  chaos: { latency: 200ms, latency_rate: 0.1, error_rate: 0.01, max_active: 3, seed: 7 }\n  chaos_header: x-chaos\n",
    )
    .expect("valid");
    let config = resilience::web::middleware_from_settings(&with_chaos).unwrap().expect("a section");
    let chaos = config.chaos.expect("chaos");
    assert_eq!((chaos.latency, chaos.latency_rate, chaos.error_rate), (Some(Duration::from_millis(200)), 0.1, 0.01));
    assert_eq!((chaos.max_active.map(|n| n.get()), chaos.seed), (Some(3), Some(7)));
    assert_eq!(config.chaos_header.as_deref(), Some("x-chaos"));

    let err = |yaml: &str| resilience::Settings::from_yaml_str(yaml).unwrap_err().to_string();
    assert_eq!(
        err("middleware:\n  chaos: { error_rate: 1.5 }\n"),
        "<string>:2: invalid `middleware.chaos.error_rate`: 1.5 is not a fraction in [0, 1]"
    );
    assert_eq!(
        err("middleware:\n  request_timout: 5s\n"),
        "<string>:2: unknown key `middleware.request_timout`; did you mean `request_timeout`?"
    );
    assert_eq!(
        err("middleware:\n  trusted_proxies: 10.0.0.0/8, nonsense\n"),
        "<string>:2: invalid `middleware.trusted_proxies`: `nonsense` is not an address or a CIDR network"
    );
    assert_eq!(
        err("middleware:\n  excluded_paths: [/a, { x: 1 }]\n"),
        "<string>:2: invalid `middleware.excluded_paths[1]`: expected a string, found a mapping"
    );
    assert_eq!(
        err("middleware:\n  rate_limit: { burst: 5 }\n"),
        "<string>:2: invalid `middleware.rate_limit`: a rate limit needs `per_second`"
    );
    assert_eq!(
        err("middleware: {}\nproduction:\n  middleware:\n    request_timeout: 0s\n"),
        "<string>:4: invalid `production.middleware.request_timeout`: must be greater than zero"
    );
}
