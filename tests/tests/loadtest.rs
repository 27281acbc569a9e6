//! The load tester against axum servers on 127.0.0.1: each shape shows in the timeline,
//! the open model sees a stall the closed one hides, stress finds the knee.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use resilience::{LoadTestError, LoadTestScenario, LoadTestType, LoadTester};

/// Serves `app` on a free port of 127.0.0.1; its base URL.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// A server counting its requests.
async fn counting() -> (String, Arc<AtomicU64>) {
    let count = Arc::new(AtomicU64::new(0));
    let c = Arc::clone(&count);
    let app = axum::Router::new().route(
        "/",
        get(move || {
            c.fetch_add(1, SeqCst);
            async { "ok" }
        }),
    );
    (serve(app).await, count)
}

fn scenario(url: &str, test_type: LoadTestType) -> LoadTestScenario {
    LoadTestScenario { name: format!("{test_type}"), test_type, target_url: url.to_owned(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_model_keeps_its_arrival_rate() {
    let (url, served) = counting().await;
    let s = LoadTestScenario {
        arrival_rate: Some(400.0),
        duration: Duration::from_secs(3),
        ..scenario(&url, LoadTestType::Sustained)
    };
    let r = LoadTester::new(s).run().await.expect("runs");
    let expected = 1200.0;
    for (what, n) in [("recorded", r.total_requests), ("served", served.load(SeqCst))] {
        assert!((n as f64 - expected).abs() <= expected * 0.02, "{what}: {n} requests, expected {expected} ± 2 %");
    }
    assert_eq!(r.model, "open");
    assert_eq!(r.status_codes.get(&200), Some(&r.total_requests));
    assert!(r.passed(), "{:?}", r.validations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramp_up_adds_users_over_time() {
    let (url, _) = counting().await;
    let s = LoadTestScenario {
        max_users: 20,
        duration: Duration::from_secs(4),
        think_time: Duration::from_millis(20),
        ..scenario(&url, LoadTestType::RampUp)
    };
    let r = LoadTester::new(s).run().await.expect("runs");
    let t = &r.timeline;
    assert!(t.len() >= 4, "{t:?}");
    let loads: Vec<f64> = t[..4].iter().map(|p| p.load).collect();
    assert!(loads.windows(2).all(|w| w[1] > w[0]), "users rise every second: {loads:?}");
    assert!(loads[3] >= 15.0 && loads[0] <= 6.0, "{loads:?}");
    assert!(
        t[3].requests > 2 * t[0].requests,
        "throughput follows the users: {} then {}",
        t[0].requests,
        t[3].requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spike_jumps_in_the_timeline() {
    let (url, _) = counting().await;
    let s = LoadTestScenario {
        max_users: 20,
        duration: Duration::from_secs(5),
        think_time: Duration::from_millis(20),
        ..scenario(&url, LoadTestType::Spike)
    };
    let r = LoadTester::new(s).run().await.expect("runs");
    let t = &r.timeline;
    let (base, peak, after) = (t[1].requests, t[2].requests, t[4].requests);
    assert_eq!((t[1].load, t[2].load, t[4].load), (4.0, 20.0, 4.0), "a fifth of the peak, the peak, a fifth");
    assert!(peak >= 3 * base && peak >= 3 * after, "the jump: {base}, then {peak}, then {after}");
}

/// A server that holds every request arriving in `[1 s, 2 s)` after it starts until 2 s.
async fn stalling() -> String {
    let started = Instant::now();
    let app = axum::Router::new().route(
        "/",
        get(move || async move {
            let t = started.elapsed();
            if t >= Duration::from_secs(1) && t < Duration::from_secs(2) {
                tokio::time::sleep(Duration::from_secs(2) - t).await;
            }
            "ok"
        }),
    );
    serve(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_in_the_open_model_s_p99_and_hides_from_one_closed_user() {
    let open = LoadTestScenario {
        arrival_rate: Some(200.0),
        duration: Duration::from_secs(3),
        ..scenario(&stalling().await, LoadTestType::Sustained)
    };
    let open = LoadTester::new(open).run().await.expect("runs");
    assert!(open.latency.p99 >= Duration::from_millis(800), "open model p99 {:?}", open.latency.p99);

    let closed = LoadTestScenario {
        max_users: 1,
        duration: Duration::from_secs(3),
        ..scenario(&stalling().await, LoadTestType::Sustained)
    };
    let closed = LoadTester::new(closed).run().await.expect("runs");
    assert!(closed.latency.max >= Duration::from_millis(800), "the one user met the stall: {:?}", closed.latency.max);
    assert!(closed.latency.p99 < Duration::from_millis(100), "closed model p99 {:?} hides it", closed.latency.p99);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_steps_up_until_the_target_gives_way_and_reports_the_knee() {
    // Takes 10 requests at a time (each 10 ms); beyond that, 503 at once.
    let in_flight = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/",
        get(move || {
            let in_flight = Arc::clone(&in_flight);
            async move {
                if in_flight.fetch_add(1, SeqCst) >= 10 {
                    in_flight.fetch_sub(1, SeqCst);
                    return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                in_flight.fetch_sub(1, SeqCst);
                (axum::http::StatusCode::OK, "ok")
            }
        }),
    );
    let url = serve(app).await;
    let s = LoadTestScenario {
        max_users: 20,
        steps: 5,
        duration: Duration::from_secs(5),
        ..scenario(&url, LoadTestType::Stress)
    };
    let r = LoadTester::new(s).run().await.expect("runs");
    let knee = r.knee.as_ref().expect("a stress test reports its knee");
    assert_eq!(knee.last_good_load, Some(8.0), "{knee:?}");
    assert_eq!(knee.breaking_load, Some(12.0), "{knee:?}");
    assert!(knee.reason.as_deref().is_some_and(|r| r.contains("error rate")), "{knee:?}");
    assert!(r.duration < Duration::from_millis(4500), "stopped at the knee, after {:?}", r.duration);
    assert!(r.validations.iter().any(|v| v.name == "stress_knee" && v.passed), "{:?}", r.validations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_sends_and_receives_large_bodies() {
    let app = axum::Router::new().route(
        "/",
        post(|body: axum::body::Bytes| async move {
            assert_eq!(body.len(), 256 * 1024);
            vec![b'x'; 64 * 1024]
        }),
    );
    let url = serve(app).await;
    let s = LoadTestScenario { max_users: 2, duration: Duration::from_secs(1), ..scenario(&url, LoadTestType::Volume) };
    let r = LoadTester::new(s).run().await.expect("runs");
    assert!(r.total_requests > 0 && r.failed_requests == 0, "{:?}", r.status_codes);
    assert_eq!(r.bytes_sent, r.total_requests * 256 * 1024);
    assert_eq!(r.bytes_received, r.total_requests * 64 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endurance_compares_its_first_and_last_tenth() {
    let (url, _) = counting().await;
    let s =
        LoadTestScenario { max_users: 2, duration: Duration::from_secs(2), ..scenario(&url, LoadTestType::Endurance) };
    let r = LoadTester::new(s).run().await.expect("runs");
    let drift = r.drift.as_ref().expect("endurance reports its drift");
    assert!(drift.first_p99 > Duration::ZERO && drift.last_p99 > Duration::ZERO, "{drift:?}");
    assert!(r.validations.iter().any(|v| v.name == "endurance_drift"), "{:?}", r.validations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stops_at_its_request_cap_and_failures_fail_it() {
    let failing =
        axum::Router::new().route("/", get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "no") }));
    let url = serve(failing).await;
    let s = LoadTestScenario {
        max_users: 4,
        max_requests: Some(50),
        duration: Duration::from_secs(30),
        ..scenario(&url, LoadTestType::Sustained)
    };
    let started = Instant::now();
    let r = LoadTester::new(s).run().await.expect("runs");
    assert!(started.elapsed() < Duration::from_secs(5), "stopped at the cap");
    assert!(r.total_requests <= 50 && r.total_requests >= 46, "{}", r.total_requests);
    assert_eq!(r.failed_requests, r.total_requests);
    assert!(!r.passed(), "a run whose requests all failed does not pass");
    let error_rate = r.validations.iter().find(|v| v.name == "error_rate").expect("always validated");
    assert!(!error_rate.passed && error_rate.detail.contains("100.00 %"), "{error_rate:?}");
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).expect("JSON");
    assert_eq!(json["status_codes"]["500"], r.total_requests);
    assert_eq!(json["passed"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_scenarios_and_unreachable_targets_are_errors() {
    let bad = |s: LoadTestScenario| async move { LoadTester::new(s).run().await.unwrap_err() };
    let base = scenario("http://127.0.0.1:9", LoadTestType::Sustained);
    let e = bad(LoadTestScenario { max_users: 0, ..base.clone() }).await;
    assert!(matches!(e, LoadTestError::InvalidScenario { field: "max_users", .. }), "{e}");
    let e = bad(LoadTestScenario { arrival_rate: Some(f64::NAN), ..base.clone() }).await;
    assert!(matches!(e, LoadTestError::InvalidScenario { field: "arrival_rate", .. }), "{e}");
    let e = bad(LoadTestScenario { target_url: "https://127.0.0.1:9".into(), ..base.clone() }).await;
    assert!(e.to_string().contains("https"), "{e}");
    let e = bad(LoadTestScenario { headers: vec![("bad name".into(), "v".into())], ..base.clone() }).await;
    assert!(
        matches!(e, LoadTestError::Unreachable { .. } | LoadTestError::InvalidScenario { field: "headers", .. }),
        "{e}"
    );
    // Port 9 (discard) has no listener on a test machine.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    let e = bad(LoadTestScenario { target_url: closed, ..base }).await;
    assert!(matches!(e, LoadTestError::Unreachable { .. }), "{e}");
}

/// A short run with the breaker validations against a service whose downstream (the
/// dependency `name`) fails from 0.5 s to 1.5 s; the service answers a fallback then.
async fn run_against_a_failing_downstream(name: &'static str) -> resilience::LoadTestResults {
    use crate::support::AppError;
    use resilience::{BreakerOverrides, ConfigOverrides, DependencyType, RetryOverrides};
    let own = ConfigOverrides {
        retry: RetryOverrides { enabled: Some(false), ..Default::default() },
        circuit_breaker: BreakerOverrides {
            failure_threshold: std::num::NonZeroU32::new(5),
            recovery_timeout: Some(Duration::from_millis(500)),
            ..Default::default()
        },
        ..Default::default()
    };
    resilience::registry().register(name, DependencyType::ExternalApi, own).expect("registered");
    let started = Arc::new(Mutex::new(None::<Instant>));
    let app = axum::Router::new()
        .route(
            "/",
            get(move || {
                let started = Arc::clone(&started);
                async move {
                    let since = started.lock().unwrap().get_or_insert_with(Instant::now).elapsed();
                    let failing = since >= Duration::from_millis(500) && since < Duration::from_millis(1500);
                    let pipeline = resilience::registry().get(name).expect("registered").pipeline();
                    let result: Result<&str, AppError> = pipeline
                        .call(|| async move {
                            if failing {
                                Err(AppError::Down)
                            } else {
                                Ok("ok")
                            }
                        })
                        .await;
                    result.unwrap_or("fallback")
                }
            }),
        )
        .merge(resilience::web::routes());
    let url = serve(app).await;
    let s = LoadTestScenario {
        max_users: 4,
        duration: Duration::from_secs(3),
        think_time: Duration::from_millis(5),
        validate_circuit_breakers: true,
        recovery_wait: Duration::from_secs(10),
        ..scenario(&url, LoadTestType::Sustained)
    };
    LoadTester::new(s).run().await.expect("runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_validations_see_a_breaker_open_under_failure_and_close_after() {
    let name = "loadtest_downstream";
    let r = run_against_a_failing_downstream(name).await;
    let by_name = |n: &str| {
        r.validations.iter().find(|v| v.name == n).unwrap_or_else(|| panic!("{n}: {:?}", r.validations)).clone()
    };
    let opened = by_name("circuit_breakers_opened");
    assert!(opened.passed && opened.detail.contains(name), "{opened:?}");
    let closed = by_name("circuit_breakers_closed");
    assert!(closed.passed, "{closed:?}: {:?}", r.breaker_timeline);
    assert!(r.breaker_timeline.iter().any(|s| s.breakers.iter().any(|(n, st)| n == name && st == "open")));
}

/// The HTML report in headless Chromium: every chart is there (the breaker one with an
/// open stretch), nothing loads from outside, and a screenshot is saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium: run scripts/test, which installs it"]
async fn the_html_report_shows_its_charts_in_chromium() {
    let r = run_against_a_failing_downstream("loadtest_report_downstream").await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/loadtest-report.html");
    r.write_html(path).expect("written");
    let html = std::fs::read_to_string(path).expect("read back");
    for outside in ["http://", "https://", "<script", "<link", "@import"] {
        assert!(!html.contains(outside), "the report is self-contained, yet has {outside}");
    }
    let dom =
        String::from_utf8_lossy(&crate::support::chromium(format!("file://{path}"), None).await.stdout).into_owned();
    for chart in ["latency-0", "throughput-0", "status-0", "breakers-0"] {
        assert!(dom.contains(&format!("<svg id=\"{chart}\"")), "chart {chart} rendered: {dom}");
    }
    assert!(dom.matches("class=\"series\"").count() >= 3, "p50, p90 and p99 lines");
    assert!(dom.contains("data-state=\"open\""), "the breaker's open stretch");
    let screenshot = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/loadtest-report.png");
    let shot = crate::support::chromium(format!("file://{path}"), Some(screenshot)).await;
    assert!(shot.status.success(), "{}", String::from_utf8_lossy(&shot.stderr));
    assert!(std::fs::metadata(screenshot).map(|m| m.len()).unwrap_or(0) > 1_000, "a screenshot was saved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suite_runs_its_scenarios_in_turn_and_the_standard_set_has_every_shape() {
    let standard = resilience::create_resilience_test_scenarios("http://127.0.0.1:8000");
    let shapes: Vec<LoadTestType> = standard.iter().map(|s| s.test_type).collect();
    assert_eq!(shapes, LoadTestType::ALL.to_vec());
    assert!(standard.iter().all(|s| s.duration <= Duration::from_secs(120) && s.target_url == "http://127.0.0.1:8000"));

    let (url, served) = counting().await;
    let short = |test_type| LoadTestScenario {
        max_users: 2,
        duration: Duration::from_millis(500),
        ..scenario(&url, test_type)
    };
    let suite = resilience::LoadTestSuite::new(vec![short(LoadTestType::Sustained), short(LoadTestType::Spike)]);
    let results = suite.run_all().await.expect("runs");
    let names: Vec<&str> = results.iter().map(|r| r.scenario.as_str()).collect();
    assert_eq!(names, ["sustained", "spike"]);
    // Each user's request in flight at the end of a run is cancelled, not counted.
    let (recorded, served) = (results.iter().map(|r| r.total_requests).sum::<u64>(), served.load(SeqCst));
    assert!(recorded <= served && served - recorded <= 4, "recorded {recorded}, served {served}");
}

/// The pool validations against a service whose route calls a downstream through an
/// HTTP pool of 4 connections per host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_validations_read_the_target_s_pools() {
    use resilience::{HttpPoolConfig, PoolConfig};
    let (downstream, _) = counting().await;
    let config = HttpPoolConfig {
        base_url: Some(downstream),
        max_connections: 8,
        max_connections_per_host: 4,
        max_wait: Duration::from_millis(200),
        ..Default::default()
    };
    resilience::initialize_pools(vec![PoolConfig::http("loadtest_pool", config)]).await.expect("pool");
    let app = axum::Router::new()
        .route(
            "/",
            get(|| async {
                let pool = resilience::pool_manager().http("loadtest_pool").expect("pool");
                match pool.get("/").await {
                    Ok(r) => (r.status(), String::from("ok")),
                    Err(e) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
                }
            }),
        )
        .merge(resilience::web::routes());
    let url = serve(app).await;
    let s = LoadTestScenario {
        max_users: 8,
        duration: Duration::from_secs(2),
        validate_connection_pools: true,
        ..scenario(&url, LoadTestType::Sustained)
    };
    let r = LoadTester::new(s).run().await.expect("runs");
    let within = r.validations.iter().find(|v| v.name == "pools_within_limits").expect("validated");
    assert!(within.passed && within.detail.contains("loadtest_pool"), "{within:?}");
    let hung = r.validations.iter().find(|v| v.name == "requests_rejected_not_hung").expect("validated");
    assert!(hung.passed, "{hung:?}");
    assert!(r.breaker_timeline.len() >= 3, "read before and during the run: {:?}", r.breaker_timeline.len());
}
