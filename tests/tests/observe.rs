//! The metrics of the crate docs, through a recording `metrics` recorder.

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::CompositeKey;
use resilience::{BreakerOverrides, BulkheadOverrides, ConfigOverrides, DependencyType, Registry, ResilienceManager};
use resilience::{ResilienceStrategy, RetryOverrides};

use crate::support::{field, nz, nzu, AppError, SpanRecorder};

fn labels(key: &CompositeKey) -> Vec<(String, String)> {
    let mut l: Vec<_> = key.key().labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
    l.sort();
    l
}

type Snapshot = [(CompositeKey, Option<metrics::Unit>, Option<metrics::SharedString>, DebugValue)];

fn find<'s>(snapshot: &'s Snapshot, name: &str, want: &[(&str, &str)]) -> Option<&'s DebugValue> {
    let mut want: Vec<(String, String)> = want.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    want.sort();
    snapshot.iter().find(|(k, _, _, _)| k.key().name() == name && labels(k) == want).map(|(_, _, _, v)| v)
}

#[tokio::test(start_paused = true)]
async fn breaker_retry_and_bulkhead_metrics_have_the_documented_names_and_labels() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // Handles are resolved when the policies are built: build them under the recorder.
    let manager = metrics::with_local_recorder(&recorder, || {
        let manager = ResilienceManager::default();
        let registry: &Registry = manager.registry();
        let flaky = ConfigOverrides {
            circuit_breaker: BreakerOverrides { failure_threshold: Some(nz(2)), ..Default::default() },
            retry: RetryOverrides {
                max_attempts: Some(nz(2)),
                base_delay: Some(Duration::from_millis(1)),
                ..Default::default()
            },
            ..Default::default()
        };
        registry.register("metrics_flaky", DependencyType::ExternalApi, flaky).unwrap();
        let narrow = ConfigOverrides {
            bulkhead: BulkheadOverrides { max_concurrent: Some(nzu(1)), ..Default::default() },
            ..Default::default()
        };
        registry.register("metrics_narrow", DependencyType::Database, narrow).unwrap();
        manager
    });

    // A retry that succeeds: fail once, then succeed.
    let mut first = true;
    manager
        .execute("metrics_flaky", ResilienceStrategy::ExternalService, || {
            let fail = std::mem::replace(&mut first, false);
            async move {
                if fail {
                    Err(AppError::Down)
                } else {
                    Ok(())
                }
            }
        })
        .await
        .unwrap();
    // The breaker opens on the next failure (two in the window); that call's retry and
    // the next call are rejected.
    let _ = manager
        .execute("metrics_flaky", ResilienceStrategy::ExternalService, || async { Err::<(), _>(AppError::Down) })
        .await;
    let rejected =
        manager.execute("metrics_flaky", ResilienceStrategy::ExternalService, || async { Ok::<_, AppError>(()) }).await;
    assert!(rejected.unwrap_err().is_circuit_open());
    // A bulkhead rejection.
    let narrow = manager.registry().get("metrics_narrow").unwrap().pipeline();
    let resilience::Bulkhead::Semaphore(b) = narrow.bulkhead().unwrap() else { panic!("semaphore") };
    let held = b.try_acquire().unwrap();
    let full =
        manager.execute("metrics_narrow", ResilienceStrategy::Database, || async { Ok::<_, AppError>(()) }).await;
    assert!(full.unwrap_err().is_bulkhead_full());
    drop(held);
    metrics::with_local_recorder(&recorder, || manager.registry().refresh_gauges());
    // Once a test of this process installed the Prometheus recorder, the hot counters
    // count per thread and reach their handles at a flush.
    resilience::aggregate::flush();

    let snapshot = snapshotter.snapshot().into_vec();
    let counter = |name: &str, want: &[(&str, &str)]| match find(&snapshot, name, want) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name} {want:?}: {other:?}"),
    };
    let gauge = |name: &str, want: &[(&str, &str)]| match find(&snapshot, name, want) {
        Some(DebugValue::Gauge(g)) => g.into_inner(),
        other => panic!("{name} {want:?}: {other:?}"),
    };
    let flaky = ("name", "metrics_flaky");
    assert_eq!(counter("resilience_circuitbreaker_calls_total", &[flaky, ("kind", "successful")]), 1);
    assert_eq!(counter("resilience_circuitbreaker_calls_total", &[flaky, ("kind", "failed")]), 2);
    assert_eq!(counter("resilience_circuitbreaker_calls_total", &[flaky, ("kind", "not_permitted")]), 2);
    assert_eq!(counter("resilience_circuitbreaker_transitions_total", &[flaky, ("from", "closed"), ("to", "open")]), 1);
    assert_eq!(gauge("resilience_circuitbreaker_state", &[flaky, ("state", "open")]), 1.0);
    assert_eq!(gauge("resilience_circuitbreaker_state", &[flaky, ("state", "closed")]), 0.0);
    assert!(find(&snapshot, "resilience_circuitbreaker_failure_rate", &[flaky]).is_some());
    assert_eq!(counter("resilience_retry_calls_total", &[flaky, ("kind", "successful_with_retry")]), 1);
    assert_eq!(counter("resilience_retry_calls_total", &[flaky, ("kind", "failed_with_retry")]), 1);
    assert_eq!(counter("resilience_retry_calls_total", &[flaky, ("kind", "failed_without_retry")]), 1);
    assert_eq!(counter("resilience_timelimiter_calls_total", &[flaky, ("kind", "successful")]), 1);
    assert_eq!(counter("resilience_timelimiter_calls_total", &[flaky, ("kind", "failed")]), 2);
    let narrow = ("name", "metrics_narrow");
    assert_eq!(counter("resilience_bulkhead_rejected_total", &[narrow]), 1);
    assert_eq!(gauge("resilience_bulkhead_max_allowed_concurrent_calls", &[narrow]), 1.0);
    assert_eq!(gauge("resilience_bulkhead_available_concurrent_calls", &[narrow]), 1.0);
}

#[test]
fn every_call_has_a_span_with_its_dependency_and_a_correlation_id() {
    let recorder = std::sync::Arc::new(SpanRecorder::of("resilient_call"));
    let manager = ResilienceManager::default();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    crate::support::with_subscriber(std::sync::Arc::clone(&recorder), || {
        runtime.block_on(async {
            for _ in 0..2 {
                manager
                    .execute("traced_db", ResilienceStrategy::Database, || async { Ok::<_, AppError>(()) })
                    .await
                    .unwrap();
            }
        })
    });
    let spans = recorder.spans.lock().unwrap();
    assert_eq!(spans.len(), 2);
    assert_eq!(field(&spans[0], "dependency"), "\"traced_db\"");
    let (a, b) = (field(&spans[0], "correlation_id"), field(&spans[1], "correlation_id"));
    assert!(!a.is_empty() && a != b, "correlation ids {a} and {b}");
}

#[tokio::test(start_paused = true)]
async fn health_reports_states_alerts_and_json() {
    let manager = ResilienceManager::default();
    let registry = manager.registry();
    assert_eq!(registry.health().status, resilience::HealthStatus::Up, "no dependency is up");
    let one_failure = ConfigOverrides {
        circuit_breaker: BreakerOverrides { failure_threshold: Some(nz(1)), ..Default::default() },
        retry: RetryOverrides { enabled: Some(false), ..Default::default() },
        ..Default::default()
    };
    registry.register("health_down", DependencyType::ExternalApi, one_failure).unwrap();
    let narrow = ConfigOverrides {
        bulkhead: BulkheadOverrides { max_concurrent: Some(nzu(1)), ..Default::default() },
        ..Default::default()
    };
    registry.register("health_busy", DependencyType::Database, narrow).unwrap();
    let _ = manager
        .execute("health_down", ResilienceStrategy::ExternalService, || async { Err::<(), _>(AppError::Down) })
        .await;
    let pipeline = registry.get("health_busy").unwrap().pipeline();
    let resilience::Bulkhead::Semaphore(b) = pipeline.bulkhead().unwrap() else { panic!("semaphore") };
    let _held = b.try_acquire().unwrap();

    let report = registry.health();
    assert_eq!(report.status, resilience::HealthStatus::Degraded);
    let down = report.dependencies.iter().find(|d| d.name == "health_down").unwrap();
    assert_eq!(down.status, resilience::HealthStatus::Down);
    assert_eq!(down.circuit_state, Some(resilience::CircuitState::Open));
    let busy = report.dependencies.iter().find(|d| d.name == "health_busy").unwrap();
    assert_eq!((busy.bulkhead_in_use, busy.bulkhead_max_concurrent), (Some(1), Some(1)));
    assert_eq!(busy.status, resilience::HealthStatus::Degraded);
    let kinds: Vec<_> = report.alerts.iter().map(|a| (a.severity, a.kind, a.dependency.as_str())).collect();
    assert_eq!(kinds, [(resilience::Severity::Critical, resilience::AlertKind::BulkheadUtilization, "health_busy")]);

    // Open for more than five minutes: critical.
    tokio::time::advance(Duration::from_secs(301)).await;
    let report = registry.health();
    assert!(report
        .alerts
        .iter()
        .any(|a| a.kind == resilience::AlertKind::BreakerOpen && a.dependency == "health_down"));
    // A failure rate above 10 % over at least `minimum_calls` (10) calls: critical.
    let tolerant = ConfigOverrides {
        circuit_breaker: BreakerOverrides { failure_threshold: Some(nz(50)), ..Default::default() },
        retry: RetryOverrides { enabled: Some(false), ..Default::default() },
        ..Default::default()
    };
    registry.register("health_flaky", DependencyType::MessageQueue, tolerant).unwrap();
    for i in 0..10 {
        let _ = manager
            .execute("health_flaky", ResilienceStrategy::Database, || async move {
                if i < 2 {
                    Err(AppError::Down)
                } else {
                    Ok(())
                }
            })
            .await;
    }
    let report = registry.health();
    let flaky: Vec<_> = report.alerts.iter().filter(|a| a.dependency == "health_flaky").collect();
    assert_eq!(flaky.len(), 1);
    assert_eq!((flaky[0].severity, flaky[0].kind), (resilience::Severity::Critical, resilience::AlertKind::ErrorRate));
    assert_eq!(flaky[0].message, "20.0 % of the last 10 calls failed");
    let json = report.to_json();
    assert!(json.starts_with("{\"status\":\"DEGRADED\""), "{json}");
    assert!(json.contains("\"circuit_state\":\"open\""), "{json}");
    assert!(json.contains("\"kind\":\"breaker_open\""), "{json}");
}

#[tokio::test(start_paused = true)]
async fn sampled_call_durations_feed_the_histogram_and_the_p95_alert() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let manager = metrics::with_local_recorder(&recorder, || {
        let manager = ResilienceManager::default();
        let own = ConfigOverrides { timeout: Some(Duration::from_secs(60)), ..Default::default() };
        manager.registry().register("latency_slow", DependencyType::ExternalApi, own).unwrap();
        manager
    });
    // One call in 16 per thread is timed: 64 calls give 4 samples of 3 s each.
    for _ in 0..64 {
        manager
            .execute("latency_slow", ResilienceStrategy::ExternalService, || async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok::<_, AppError>(())
            })
            .await
            .unwrap();
    }
    // Once a test of this process installed the Prometheus recorder, durations count per
    // thread and reach the histogram at a flush.
    resilience::aggregate::flush();
    let snapshot = snapshotter.snapshot().into_vec();
    match find(&snapshot, "resilience_call_duration_seconds", &[("name", "latency_slow")]) {
        Some(DebugValue::Histogram(values)) => {
            assert_eq!(values.len(), 64, "4 samples, each recorded with a weight of 16");
            assert!(values.iter().all(|v| (v.into_inner() - 3.0).abs() < 1e-9), "{values:?}");
        }
        other => panic!("{other:?}"),
    }
    let report = manager.registry().health();
    let slow = report.dependencies.iter().find(|d| d.name == "latency_slow").unwrap();
    assert!(slow.p95_seconds.is_some_and(|p| (3.0..=4.1).contains(&p)), "{:?}", slow.p95_seconds);
    assert!(report
        .alerts
        .iter()
        .any(|a| a.kind == resilience::AlertKind::LatencyP95 && a.severity == resilience::Severity::Warning));
    // The p95 covers the calls since the previous report: none now.
    assert_eq!(manager.registry().health().dependencies[0].p95_seconds, None);
}

/// A thread-pool bulkhead counts a rejection only when it rejects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_pool_calls_that_run_are_not_counted_as_rejected() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let config = resilience::ThreadPoolBulkheadConfig { max_concurrent: crate::support::nzu(1), queue_capacity: 0 };
    let pool = metrics::with_local_recorder(&recorder, || resilience::ThreadPoolBulkhead::new("metrics_pool", config))
        .unwrap();
    for i in 0..5 {
        assert_eq!(pool.execute(move || i).await.unwrap(), i);
    }
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let busy = pool.execute(move || wait.recv().ok());
    let busy = tokio::spawn(busy);
    // The worker is taken and nothing may queue: the next call is rejected.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pool.active() == 0 {
        assert!(std::time::Instant::now() < deadline, "the first call never started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(pool.execute(|| ()).await.unwrap_err().is_rejection());
    release.send(()).unwrap();
    busy.await.unwrap().unwrap();
    let snapshot = snapshotter.snapshot().into_vec();
    match find(&snapshot, "resilience_bulkhead_rejected_total", &[("name", "metrics_pool")]) {
        Some(DebugValue::Counter(n)) => assert_eq!(*n, 1, "six calls ran, one was rejected"),
        other => panic!("{other:?}"),
    }
}
