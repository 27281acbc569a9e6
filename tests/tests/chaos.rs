//! Fault and latency injection on a paused clock (issue 15's scenarios). The switch is
//! process-wide, so these tests take turns.

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use resilience::{ChaosConfig, Pipeline, ResilienceError, Settings};
use tokio::time::Instant;

static TURN: Mutex<()> = Mutex::new(());

/// Takes this test's turn and sets the switch through the settings file, as users do.
fn switched(on: bool) -> MutexGuard<'static, ()> {
    let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let text = format!("resilience:\n  chaos: {{ enabled: {on} }}\n");
    Settings::from_yaml_str(&text).unwrap().apply_to(&resilience::Registry::new()).unwrap();
    assert_eq!(resilience::chaos::enabled(), on);
    turn
}

fn pipeline(name: &str, config: ChaosConfig) -> Pipeline {
    Pipeline::builder(name).chaos(config).build().unwrap()
}

/// Counts the `resilience::chaos` events raised while it is the thread's subscriber.
#[derive(Default)]
struct Events(AtomicU64);

impl tracing::Subscriber for Events {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target() == "resilience::chaos"
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {
        self.0.fetch_add(1, SeqCst);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// `n` calls one after another on a paused clock: (injected errors, delayed calls).
fn calls(p: &Pipeline, n: u32) -> (u32, u32) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    runtime.block_on(async {
        let (mut errors, mut delayed) = (0, 0);
        for _ in 0..n {
            let begun = Instant::now();
            match p.call(|| async { Ok::<_, ResilienceError>(()) }).await {
                Err(ResilienceError::Injected { .. }) => errors += 1,
                Err(other) => panic!("{other}"),
                Ok(()) => {}
            }
            if begun.elapsed() > Duration::ZERO {
                delayed += 1;
            }
        }
        (errors, delayed)
    })
}

#[test]
fn a_rate_injects_about_that_share_each_with_one_event() {
    let _turn = switched(true);
    let p = pipeline("chaos_rate", ChaosConfig { error_rate: 0.1, seed: Some(7), ..Default::default() });
    let events = Arc::new(Events::default());
    let (errors, _) = crate::support::with_subscriber(Arc::clone(&events), || calls(&p, 10_000));
    eprintln!("rate 0.1: {errors} injections in 10,000 calls");
    assert!((900..=1_100).contains(&errors), "{errors} injections");
    assert_eq!(events.0.load(SeqCst), u64::from(errors), "one event per injection");
    // The same seed, the same calls.
    let again = pipeline("chaos_rate_again", ChaosConfig { error_rate: 0.1, seed: Some(7), ..Default::default() });
    assert_eq!(calls(&again, 10_000).0, errors);
}

#[test]
fn every_tenth_is_exactly_a_tenth() {
    let _turn = switched(true);
    let every = NonZeroU32::new(10);
    let p = pipeline("chaos_every", ChaosConfig { error_rate: 1.0, every, ..Default::default() });
    assert_eq!(calls(&p, 10_000).0, 1_000);
}

#[test]
fn a_delay_and_an_abort_affect_their_combined_share() {
    let _turn = switched(true);
    let config = ChaosConfig {
        latency: Some(Duration::from_millis(100)),
        latency_rate: 0.2,
        error_rate: 0.05,
        seed: Some(11),
        ..Default::default()
    };
    let p = pipeline("chaos_mixed", config);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    let affected = runtime.block_on(async {
        let mut affected = 0u32;
        for _ in 0..10_000 {
            let begun = Instant::now();
            let result = p.call(|| async { Ok::<_, ResilienceError>(()) }).await;
            if result.is_err() || begun.elapsed() > Duration::ZERO {
                affected += 1;
            }
        }
        affected
    });
    let share = f64::from(affected) / 10_000.0;
    eprintln!("20 % delay + 5 % abort: {share:.4} of calls affected");
    assert!((share - 0.24).abs() <= 0.015, "{share:.4} of calls affected");
}

#[test]
fn an_injected_delay_longer_than_the_timeout_times_out_on_time() {
    let _turn = switched(true);
    let config = ChaosConfig { latency: Some(Duration::from_secs(2)), latency_rate: 1.0, ..Default::default() };
    let p = Pipeline::builder("chaos_timeout").timeout(Duration::from_millis(500)).chaos(config).build().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    runtime.block_on(async {
        let begun = Instant::now();
        let result = p.call(|| async { Ok::<_, ResilienceError>(()) }).await;
        assert!(matches!(result, Err(ResilienceError::Timeout { .. })), "{result:?}");
        assert_eq!(begun.elapsed(), Duration::from_millis(500));
    });
}

#[test]
fn max_active_caps_injections_in_progress() {
    let _turn = switched(true);
    let config = ChaosConfig {
        latency: Some(Duration::from_secs(1)),
        latency_rate: 1.0,
        max_active: NonZeroUsize::new(5),
        ..Default::default()
    };
    let p = Arc::new(pipeline("chaos_active", config));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    let delayed = runtime.block_on(async {
        let calls: Vec<_> = (0..100)
            .map(|_| {
                let p = Arc::clone(&p);
                tokio::spawn(async move {
                    let begun = Instant::now();
                    p.call(|| async {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        Ok::<_, ResilienceError>(())
                    })
                    .await
                    .unwrap();
                    begun.elapsed() >= Duration::from_secs(1)
                })
            })
            .collect();
        let mut delayed = 0;
        for c in calls {
            delayed += u32::from(c.await.unwrap());
        }
        delayed
    });
    assert_eq!(delayed, 5);
}

#[test]
fn injected_failures_reach_the_breaker_and_nothing_is_injected_when_switched_off() {
    let _turn = switched(true);
    let config = ChaosConfig { error_rate: 1.0, ..Default::default() };
    let p = Pipeline::builder("chaos_breaker")
        .circuit_breaker(resilience::CircuitBreakerConfig::default())
        .chaos(config)
        .build()
        .unwrap();
    assert_eq!(calls(&p, 3).0, 3);
    assert_eq!(p.circuit_breaker().unwrap().metrics().failed_calls, 3, "injected errors are failures");
    drop(_turn);
    let _turn = switched(false);
    let off = pipeline(
        "chaos_off",
        ChaosConfig { error_rate: 1.0, latency: Some(Duration::from_secs(1)), latency_rate: 1.0, ..Default::default() },
    );
    assert_eq!(calls(&off, 1_000), (0, 0));
}

#[resilience::resilient(name = "chaos_attribute", chaos(error_rate = 1.0, seed = 3), retry(enabled = false))]
async fn flaky() -> Result<(), ResilienceError> {
    Ok(())
}

#[test]
fn attributes_take_the_chaos_keys() {
    let _turn = switched(true);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    let result = runtime.block_on(flaky());
    assert!(matches!(result, Err(ResilienceError::Injected { .. })), "{result:?}");
    let settings =
        "external_dependencies:\n  chaos_file: { type: cache, chaos: { error_rate: 0.5, every: 2, seed: 9 } }\n";
    let registry = resilience::Registry::new();
    Settings::from_yaml_str(settings).unwrap().apply_to(&registry).unwrap();
    let chaos = registry.get("chaos_file").unwrap().config().chaos.unwrap();
    assert_eq!((chaos.error_rate, chaos.every.map(NonZeroU32::get), chaos.seed), (0.5, Some(2), Some(9)));
    let e = Settings::from_yaml_str("external_dependencies:\n  c:\n    type: cache\n    chaos: { error_rate: 2 }\n")
        .unwrap_err()
        .to_string();
    assert_eq!(e, "<string>:4: invalid `external_dependencies.c.chaos.error_rate`: 2 is not a fraction in [0, 1]");
}

/// The axum layer's own injection, over real sockets: a request asks through the
/// configured header, within the configured faults; nothing when switched off.
#[test]
// The turn is held across the requests on purpose: it keeps the process-wide switch as
// this test set it (other tests wait on the lock, not on the runtime).
#[allow(clippy::await_holding_lock)]
fn requests_ask_for_faults_through_the_configured_header_only() {
    use crate::web_layer::{client, serve};
    let turn = switched(true);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let config = resilience::MiddlewareConfig {
            // Rates too small for a random injection in a handful of requests (seeded).
            chaos: Some(ChaosConfig {
                latency: Some(Duration::from_millis(300)),
                latency_rate: 1e-9,
                error_rate: 1e-9,
                seed: Some(5),
                ..Default::default()
            }),
            chaos_header: Some(String::from("x-chaos")),
            ..Default::default()
        };
        let app = axum::Router::new()
            .route("/chaos", axum::routing::get(|| async { "ok" }))
            .layer(resilience::ResilienceLayer::new(config));
        let url = format!("{}/chaos", serve(app).await);
        let c = client();
        let plain = c.get(&url).send().await.unwrap();
        assert_eq!(plain.status(), 200);
        let failed = c.get(&url).header("x-chaos", "error").send().await.unwrap();
        assert_eq!(failed.status(), 500);
        assert_eq!(failed.headers()["x-resilience-chaos"], "error");
        let begun = std::time::Instant::now();
        let slow = c.get(&url).header("x-chaos", "latency=10s").send().await.unwrap();
        assert_eq!(slow.status(), 200);
        let took = begun.elapsed();
        assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(5), "capped at 300 ms: {took:?}");
        drop(turn);
        let _turn = switched(false);
        let off = c.get(&url).header("x-chaos", "error").send().await.unwrap();
        assert_eq!(off.status(), 200, "switched off: the header is ignored");
    });
    let e = resilience::ResilienceLayer::try_new(resilience::MiddlewareConfig {
        chaos_header: Some(String::from("bad header")),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(e.field, "chaos_header");
}
