//! The HTTP pool, the pool manager, pool health checks and the reqwest middleware,
//! against real servers on 127.0.0.1.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use resilience::{
    initialize_pools, pool_manager, BreakerOverrides, ConfigOverrides, DependencyType, HealthCheckConfig,
    HttpPoolConfig, PoolConfig, PoolError, PoolHealthChecker, ResilienceError, RetryOverrides,
};

use crate::http_server::{answer, handler, TestCertificate, TestServer};
use crate::support::{eventually, nz};

/// Registers `name` with no retries (and `breaker`), so a test sees each attempt.
fn register_once(name: &str, breaker: BreakerOverrides) {
    let own = ConfigOverrides {
        retry: RetryOverrides { enabled: Some(false), ..Default::default() },
        circuit_breaker: breaker,
        ..Default::default()
    };
    resilience::registry().register(name, DependencyType::ExternalApi, own).expect("valid");
}

/// `n` GETs of `/` at once, each on its own task.
fn concurrent_gets(
    http: &resilience::HttpPool,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Result<resilience::HttpResponse, PoolError>>> {
    (0..n)
        .map(|_| {
            let http = http.clone();
            tokio::spawn(async move { http.get("/").await })
        })
        .collect()
}

/// A pool for one test. Tests share the process's pool manager, so a health checker one
/// test starts checks every pool: only the fault test's pool has a health path.
async fn pool(name: &str, config: HttpPoolConfig) -> resilience::HttpPool {
    let config = HttpPoolConfig { health_check_path: None, ..config };
    initialize_pools(vec![PoolConfig::http(name, config)]).await.expect("pool");
    pool_manager().http(name).expect("the pool")
}

/// On one thread, so that the connection's task has handed the connection back before the
/// next request asks for one (on several, a request may now and then find it still busy
/// and open a second).
#[tokio::test(flavor = "current_thread")]
async fn a_hundred_sequential_requests_reuse_one_connection() {
    let server = TestServer::start(handler(|_| async { answer(200, "ok") })).await;
    let http = pool("http_reuse", HttpPoolConfig { base_url: Some(server.url()), ..Default::default() }).await;
    for _ in 0..100 {
        let response = http.get("/").await.expect("answered");
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "ok");
    }
    assert_eq!(server.accepted.load(SeqCst), 1, "keep-alive: one connection for 100 requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_host_are_capped() {
    const CAP: usize = 4;
    let slow = handler(|_| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        answer(200, "slow")
    });
    let server = TestServer::start(slow).await;
    register_once("http_capped", BreakerOverrides::default());
    let config = HttpPoolConfig { base_url: Some(server.url()), max_connections_per_host: CAP, ..Default::default() };
    let http = pool("http_capped", config).await;
    let calls = concurrent_gets(&http, CAP + 5);
    let mut ok = 0;
    let mut full = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(response) => {
                assert_eq!(response.status(), 200);
                ok += 1;
            }
            Err(e) => {
                assert!(matches!(e.resilience(), Some(ResilienceError::BulkheadFull { .. })), "{e}");
                full += 1;
            }
        }
    }
    assert_eq!((ok, full), (CAP, 5), "the extra requests fail at once with `max_wait` zero");
    assert!(
        server.peak.load(SeqCst) <= CAP,
        "at most {CAP} at the server at once: {} (accepted {})",
        server.peak.load(SeqCst),
        server.accepted.load(SeqCst)
    );
    assert!(server.accepted.load(SeqCst) <= CAP, "{} connections", server.accepted.load(SeqCst));

    // With a `max_wait`, the extra requests wait for a slot instead.
    let waiting = HttpPoolConfig {
        base_url: Some(server.url()),
        max_connections_per_host: CAP,
        max_wait: Duration::from_secs(5),
        ..Default::default()
    };
    register_once("http_capped_waiting", BreakerOverrides::default());
    let http = pool("http_capped_waiting", waiting).await;
    server.peak.store(0, SeqCst);
    let calls = concurrent_gets(&http, CAP + 5);
    for call in calls {
        assert_eq!(call.await.unwrap().expect("waited for a slot").status(), 200);
    }
    // In use at once: at most the cap. (Open connections may briefly be one more while a
    // freed connection is still on its way back into reqwest's pool.)
    assert!(server.peak.load(SeqCst) <= CAP, "never more than {CAP} requests at the server at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_needs_the_test_s_root_certificate() {
    let certificate = TestCertificate::new();
    let server = TestServer::start_tls(handler(|_| async { answer(200, "secure") }), &certificate).await;
    register_once("https_trusted", BreakerOverrides::default());
    register_once("https_untrusted", BreakerOverrides::default());
    let trusted = HttpPoolConfig {
        base_url: Some(server.url()),
        root_certificates: vec![certificate.pem.clone().into_bytes()],
        ..Default::default()
    };
    let http = pool("https_trusted", trusted).await;
    let response = http.get("/").await.expect("the test's root is trusted");
    assert_eq!(response.text().await.unwrap(), "secure");
    let http = pool("https_untrusted", HttpPoolConfig { base_url: Some(server.url()), ..Default::default() }).await;
    match http.get("/").await {
        Err(PoolError::Transport { message, .. }) => assert!(message.contains("connect"), "{message}"),
        other => panic!("an unknown certificate must be refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_answers_are_decoded() {
    let body = "compressible ".repeat(200);
    let compressed = {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(body.as_bytes()).unwrap();
        bytes::Bytes::from(encoder.finish().unwrap())
    };
    let asked_for_gzip = Arc::new(AtomicBool::new(false));
    let asked = Arc::clone(&asked_for_gzip);
    let server = TestServer::start(handler(move |req| {
        let compressed = compressed.clone();
        let asked = Arc::clone(&asked);
        async move {
            let accepts = req.headers().get("accept-encoding").and_then(|v| v.to_str().ok()).unwrap_or("");
            asked.store(accepts.contains("gzip"), SeqCst);
            let mut response = answer(200, compressed);
            response.headers_mut().insert("content-encoding", http::HeaderValue::from_static("gzip"));
            response
        }
    }))
    .await;
    let http = pool("http_gzip", HttpPoolConfig { base_url: Some(server.url()), ..Default::default() }).await;
    let response = http.get("/").await.unwrap();
    assert_eq!(response.text().await.unwrap(), body);
    assert!(asked_for_gzip.load(SeqCst), "the pool asks for gzip");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_request_timeout_fails_on_time() {
    let server = TestServer::start(handler(|_| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        answer(200, "late")
    }))
    .await;
    register_once("http_request_timeout", BreakerOverrides::default());
    let config = HttpPoolConfig {
        base_url: Some(server.url()),
        request_timeout: Some(Duration::from_millis(100)),
        ..Default::default()
    };
    let http = pool("http_request_timeout", config).await;
    let start = std::time::Instant::now();
    let error = http.get("/").await.expect_err("too slow");
    assert!(matches!(error.resilience(), Some(ResilienceError::Timeout { .. })), "{error}");
    assert!(start.elapsed() < Duration::from_secs(1), "returned after {:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_4xx_are_not_failures_5xx_are_and_the_last_5xx_is_returned() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let server = TestServer::start(handler(move |req| {
        let counted = Arc::clone(&counted);
        async move {
            counted.fetch_add(1, SeqCst);
            if req.uri().path() == "/missing" {
                answer(404, "no")
            } else {
                answer(503, "busy")
            }
        }
    }))
    .await;
    // Three attempts, no delay, a breaker that would open on the third failure.
    let own = ConfigOverrides {
        retry: RetryOverrides { max_attempts: Some(nz(3)), base_delay: Some(Duration::ZERO), ..Default::default() },
        circuit_breaker: BreakerOverrides { failure_threshold: Some(nz(4)), ..Default::default() },
        ..Default::default()
    };
    resilience::registry().register("http_statuses", DependencyType::ExternalApi, own).unwrap();
    let http = pool("http_statuses", HttpPoolConfig { base_url: Some(server.url()), ..Default::default() }).await;
    for _ in 0..10 {
        assert_eq!(http.get("/missing").await.unwrap().status(), 404);
    }
    assert_eq!(calls.load(SeqCst), 10, "a 4xx is not retried");
    let state = || resilience::manager().circuit_state("http_statuses");
    assert_eq!(state(), Some(resilience::CircuitState::Closed), "4xx answers are not failures");
    let response = http.get("/busy").await.expect("a 5xx is an answer");
    assert_eq!(response.status(), 503);
    assert_eq!(calls.load(SeqCst), 13, "a 5xx to an idempotent request is retried");
    // POST is not idempotent: one attempt.
    assert_eq!(http.post("/busy", "x").await.unwrap().status(), 503);
    assert_eq!(calls.load(SeqCst), 14);
    assert_eq!(state(), Some(resilience::CircuitState::Open), "four 5xx answers opened the breaker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_turns_unhealthy_opens_the_breaker_and_everything_recovers() {
    let server = TestServer::start(handler(|_| async { answer(200, "up") })).await;
    let breaker = BreakerOverrides {
        failure_threshold: Some(nz(3)),
        recovery_timeout: Some(Duration::from_millis(300)),
        success_threshold: Some(nz(1)),
        ..Default::default()
    };
    register_once("http_fault", breaker);
    let config = HttpPoolConfig {
        base_url: Some(server.url()),
        connect_timeout: Duration::from_millis(500),
        health_check_interval: Duration::from_millis(50),
        ..Default::default()
    };
    initialize_pools(vec![PoolConfig::http("http_fault", config)]).await.expect("pool");
    let http = pool_manager().http("http_fault").unwrap();
    let checker = PoolHealthChecker::new(HealthCheckConfig {
        check_interval: Duration::from_millis(50),
        error_rate_threshold: 1.0,
        consecutive_failures_threshold: 3,
    });
    checker.start(pool_manager());
    let healthy = |checker: &PoolHealthChecker| {
        checker.summary().into_iter().find(|p| p.name == "http_fault").and_then(|p| p.healthy)
    };
    eventually(Duration::from_secs(5), "healthy at first", async || healthy(&checker) == Some(true)).await;
    assert_eq!(http.get("/").await.unwrap().status(), 200);

    server.stop().await;
    let start = std::time::Instant::now();
    let mut failures = 0;
    while resilience::manager().circuit_state("http_fault") != Some(resilience::CircuitState::Open) {
        assert!(http.get("/").await.is_err(), "a stopped server cannot answer");
        failures += 1;
        assert!(failures <= 3, "the breaker opens after three failures");
    }
    let rejected = http.get("/").await.expect_err("open");
    assert!(matches!(rejected.resilience(), Some(ResilienceError::CircuitOpen { .. })), "{rejected}");
    // 3 checks × 50 ms, plus the checks' own connect attempts.
    eventually(Duration::from_secs(3), "unhealthy", async || healthy(&checker) == Some(false)).await;
    let report = resilience::health();
    let entry = report.pools.iter().find(|p| p.name == "http_fault").expect("the pool is in health()");
    assert_eq!(entry.status, resilience::HealthStatus::Down);
    assert!(report
        .alerts
        .iter()
        .any(|a| a.dependency == "http_fault" && a.kind == resilience::AlertKind::HealthCheckFailed));
    assert!(start.elapsed() < Duration::from_secs(5), "no call waited past its timeout");

    server.restart().await;
    eventually(Duration::from_secs(5), "healthy again", async || healthy(&checker) == Some(true)).await;
    // The breaker half-opens after 300 ms and the next call closes it.
    eventually(Duration::from_secs(5), "the breaker closes", async || {
        http.get("/").await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert_eq!(resilience::manager().circuit_state("http_fault"), Some(resilience::CircuitState::Closed));
    checker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_middleware_gives_a_plain_reqwest_client_the_dependency_s_breaker() {
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&requests);
    let server = TestServer::start(handler(move |_| {
        counted.fetch_add(1, SeqCst);
        async { answer(500, "broken") }
    }))
    .await;
    register_once("reqwest_mw", BreakerOverrides { failure_threshold: Some(nz(3)), ..Default::default() });
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(resilience::reqwest::ResilienceMiddleware::new("reqwest_mw"))
        .build();
    for _ in 0..3 {
        let response = client.get(server.url()).send().await.expect("a 5xx is an answer");
        assert_eq!(response.status(), 500);
    }
    let error = client.get(server.url()).send().await.expect_err("the breaker is open");
    let reqwest_middleware::Error::Middleware(inner) = &error else { panic!("{error}") };
    assert!(matches!(inner.downcast_ref::<ResilienceError>(), Some(ResilienceError::CircuitOpen { .. })), "{inner}");
    assert_eq!(requests.load(SeqCst), 3, "a rejected call never reached the server");
}

#[tokio::test]
async fn the_manager_names_unknown_pools_and_adds_all_or_nothing() {
    let e = pool_manager().http("no_such_pool").unwrap_err();
    assert!(e.to_string().starts_with("no pool `no_such_pool`"), "{e}");
    initialize_pools(vec![PoolConfig::http("manager_first", HttpPoolConfig::default())]).await.unwrap();
    let e = initialize_pools(vec![
        PoolConfig::http("manager_second", HttpPoolConfig::default()),
        PoolConfig::http("manager_first", HttpPoolConfig::default()),
    ])
    .await
    .unwrap_err();
    assert!(matches!(&e, PoolError::Duplicate { pool } if pool == "manager_first"), "{e}");
    assert!(pool_manager().http("manager_second").is_err(), "nothing of a refused list is added");
    let e = initialize_pools(vec![PoolConfig::http(
        "manager_bad",
        HttpPoolConfig { max_connections: 0, ..Default::default() },
    )])
    .await
    .unwrap_err();
    assert_eq!(e.to_string(), "pool `manager_bad`: invalid configuration: `max_connections` must be at least 1");
    let e = initialize_pools(vec![PoolConfig::http(
        "manager_bad_url",
        HttpPoolConfig { base_url: Some("not a url".into()), ..Default::default() },
    )])
    .await
    .unwrap_err();
    assert!(e.to_string().starts_with("pool `manager_bad_url`: invalid configuration: `base_url`"), "{e}");
    let http = pool_manager().http("manager_first").unwrap();
    let e = http.get("/relative").await.unwrap_err();
    assert!(e.to_string().contains("relative and the pool has no `base_url`"), "{e}");
}

#[test]
fn pools_come_from_the_settings_file_with_its_error_rules() {
    let settings = resilience::Settings::from_yaml_str(
        "pools:\n  settings_http:\n    type: http\n    base_url: http://127.0.0.1:9\n    max_connections: 7\n    request_timeout: 2s\n    dependency_type: database\nproduction:\n  pools:\n    settings_http: { max_connections: 9 }\n",
    )
    .expect("valid");
    let pools = resilience::pools_from_settings(&settings).unwrap();
    assert_eq!(pools.len(), 1);
    assert_eq!(pools[0].name, "settings_http");
    assert_eq!(pools[0].dependency_type, Some(DependencyType::Database));
    let resilience::PoolKind::Http(http) = &pools[0].kind else { panic!("http") };
    assert_eq!((http.max_connections, http.request_timeout), (7, Some(Duration::from_secs(2))));
    let production = settings.with_environment("production").unwrap();
    let resilience::PoolKind::Http(http) = &resilience::pools_from_settings(&production).unwrap()[0].kind else {
        panic!("http")
    };
    assert_eq!(http.max_connections, 9, "an environment section refines a pool");

    let err = |yaml: &str| resilience::Settings::from_yaml_str(yaml).unwrap_err().to_string();
    assert_eq!(
        err("pools:\n  p:\n    type: http\n    max_conections: 3\n"),
        "<string>:4: unknown key `pools.p.max_conections`; did you mean `max_connections`?"
    );
    assert_eq!(
        err("pools:\n  p:\n    type: htp\n"),
        "<string>:3: invalid `pools.p.type`: unknown value `htp`; did you mean `http`?"
    );
    assert_eq!(
        err("pools:\n  p:\n    base_url: x\n"),
        "<string>:2: invalid `pools.p`: missing `type` (one of: http, postgres, redis)"
    );
    assert_eq!(
        err("pools:\n  p:\n    type: http\n    max_connections: 0\n"),
        "<string>:4: invalid `pools.p.max_connections`: must be at least 1, found 0"
    );
    assert_eq!(
        err("pools:\n  p: { type: http }\nstaging:\n  pools:\n    p: { request_timeout: 0s }\n"),
        "<string>:5: invalid `staging.pools.p.request_timeout`: must be greater than zero"
    );
    // Root certificates are PEM files, read with the settings.
    let certificate = TestCertificate::new();
    let pem = std::env::temp_dir().join(format!("resilience-test-root-{}.pem", std::process::id()));
    std::fs::write(&pem, &certificate.pem).unwrap();
    let yaml = format!("pools:\n  p:\n    type: http\n    root_certificates: [{}]\n", pem.display());
    let pools = resilience::pools_from_settings(&resilience::Settings::from_yaml_str(&yaml).unwrap()).unwrap();
    let resilience::PoolKind::Http(http) = &pools[0].kind else { panic!("http") };
    assert_eq!(http.root_certificates, [certificate.pem.clone().into_bytes()]);
    std::fs::remove_file(&pem).ok();
    let e = err("pools:\n  p:\n    type: http\n    root_certificates:\n      - /no/such/file.pem\n");
    assert!(
        e.starts_with("<string>:5: invalid `pools.p.root_certificates[0]`: cannot read `/no/such/file.pem`"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_metrics_and_pool_alerts() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    // A gate with no permit: each answer waits for one (none is missed, whenever given).
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let wait = Arc::clone(&release);
    let server = TestServer::start(handler(move |_| {
        let wait = Arc::clone(&wait);
        async move {
            let _pass = wait.acquire().await;
            answer(200, "done")
        }
    }))
    .await;
    register_once("http_metrics", BreakerOverrides::default());
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let config = HttpPoolConfig { base_url: Some(server.url()), max_connections: 5, ..Default::default() };
    let http = metrics::with_local_recorder(&recorder, || {
        tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(pool("http_metrics", config)))
    });
    // All five connections in use: above 95 %, a critical alert.
    let calls = concurrent_gets(&http, 5);
    eventually(Duration::from_secs(5), "five in use", async || http.in_use() == 5).await;
    let report = resilience::health();
    let entry = report.pools.iter().find(|p| p.name == "http_metrics").expect("in health()");
    assert_eq!((entry.in_use, entry.max, entry.kind), (5, 5, "http"));
    assert!(report.alerts.iter().any(|a| a.dependency == "http_metrics"
        && a.kind == resilience::AlertKind::PoolUtilization
        && a.severity == resilience::Severity::Critical));
    release.add_permits(5);
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(http.in_use(), 0);
    pool_manager().refresh_gauges();
    // Once a test of this process installed the Prometheus recorder, durations are
    // counted per thread and reach the histogram at a flush.
    resilience::aggregate::flush();
    let snapshot = snapshotter.snapshot().into_vec();
    let find = |name: &str| snapshot.iter().find(|(k, _, _, _)| k.key().name() == name).map(|(_, _, _, v)| v);
    assert_eq!(find("resilience_pool_max_connections"), Some(&DebugValue::Gauge(5.0.into())));
    assert!(matches!(find("resilience_pool_acquire_duration_seconds"), Some(DebugValue::Histogram(h)) if h.len() == 5));
    assert_eq!(find("resilience_pool_connections"), Some(&DebugValue::Gauge(0.0.into())));
    assert_eq!(find("resilience_pool_healthy"), Some(&DebugValue::Gauge(1.0.into())));
}

/// A slow first answer and a quick second one over real sockets: a GET is hedged, a
/// POST is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_hedged_and_writes_are_not() {
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&requests);
    let server = TestServer::start(handler(move |_| {
        let n = seen.fetch_add(1, SeqCst);
        async move {
            if n.is_multiple_of(2) {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            answer(200, format!("answer {n}"))
        }
    }))
    .await;
    let own = ConfigOverrides {
        retry: RetryOverrides { enabled: Some(false), ..Default::default() },
        hedge: Some(resilience::HedgeOverrides {
            delay: Some(resilience::HedgeDelay::After(Duration::from_millis(100))),
            ..Default::default()
        }),
        ..Default::default()
    };
    resilience::registry().register("http_hedged", DependencyType::ExternalApi, own).expect("valid");
    let http = pool("http_hedged", HttpPoolConfig { base_url: Some(server.url()), ..Default::default() }).await;
    let begun = std::time::Instant::now();
    let response = http.get("/").await.expect("answered");
    assert_eq!(response.text().await.unwrap(), "answer 1", "the hedge answered");
    assert!(begun.elapsed() < Duration::from_secs(1), "not the slow answer: {:?}", begun.elapsed());
    let begun = std::time::Instant::now();
    let response = http.post("/", "x").await.expect("answered");
    assert_eq!(response.text().await.unwrap(), "answer 2", "one attempt");
    assert!(begun.elapsed() >= Duration::from_secs(2));
    assert_eq!(requests.load(SeqCst), 3);
}
