//! Circuit breaker behaviour on the paused tokio clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use resilience::{
    CircuitBreaker, CircuitBreakerConfig, CircuitState, ConfigError, SlidingWindow, StateTransition, TransitionReason,
};
use tokio::time::advance;

use crate::support::{nz, AppError};

fn breaker(config: CircuitBreakerConfig) -> CircuitBreaker {
    CircuitBreaker::new("dep", config).expect("valid config")
}

async fn fail(b: &CircuitBreaker) -> Result<(), AppError> {
    b.call(async { Err::<(), _>(AppError::Down) }).await
}

async fn succeed(b: &CircuitBreaker) -> Result<(), AppError> {
    b.call(async { Ok::<(), AppError>(()) }).await
}

#[tokio::test(start_paused = true)]
async fn opens_on_failure_threshold_and_rejects_without_running() {
    let b = breaker(CircuitBreakerConfig { failure_threshold: Some(nz(3)), ..Default::default() });
    for _ in 0..2 {
        assert_eq!(fail(&b).await, Err(AppError::Down));
        assert_eq!(b.state(), CircuitState::Closed);
    }
    assert_eq!(fail(&b).await, Err(AppError::Down));
    assert_eq!(b.state(), CircuitState::Open);
    let mut ran = false;
    let r = b
        .call(async {
            ran = true;
            Ok::<(), AppError>(())
        })
        .await;
    assert!(r.unwrap_err().is_circuit_open());
    assert!(!ran, "a rejected call must not run its body");
}

#[tokio::test(start_paused = true)]
async fn successes_push_failures_out_of_a_count_window() {
    let b = breaker(CircuitBreakerConfig {
        failure_threshold: Some(nz(2)),
        window: SlidingWindow::Count { size: nz(3) },
        ..Default::default()
    });
    fail(&b).await.ok();
    succeed(&b).await.ok();
    succeed(&b).await.ok();
    // The first failure has left the window of three.
    fail(&b).await.ok();
    assert_eq!(b.state(), CircuitState::Closed);
    fail(&b).await.ok();
    assert_eq!(b.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn half_opens_after_recovery_and_closes_after_successes() {
    let b = breaker(CircuitBreakerConfig {
        failure_threshold: Some(nz(1)),
        recovery_timeout: Duration::from_secs(10),
        success_threshold: nz(2),
        ..Default::default()
    });
    fail(&b).await.ok();
    assert_eq!(b.state(), CircuitState::Open);
    advance(Duration::from_millis(9_999)).await;
    let err = succeed(&b).await.unwrap_err();
    match err {
        AppError::Resilience(e) => assert_eq!(e.retry_after(), Some(Duration::from_millis(1))),
        other => panic!("{other:?}"),
    }
    advance(Duration::from_millis(1)).await;
    succeed(&b).await.unwrap();
    assert_eq!(b.state(), CircuitState::HalfOpen);
    succeed(&b).await.unwrap();
    assert_eq!(b.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_failed_trial_reopens() {
    let b = breaker(CircuitBreakerConfig {
        failure_threshold: Some(nz(1)),
        recovery_timeout: Duration::from_secs(1),
        ..Default::default()
    });
    fail(&b).await.ok();
    advance(Duration::from_secs(1)).await;
    succeed(&b).await.unwrap();
    fail(&b).await.ok();
    assert_eq!(b.state(), CircuitState::Open);
    // The recovery timeout starts again from the failed trial.
    advance(Duration::from_millis(999)).await;
    assert!(succeed(&b).await.unwrap_err().is_circuit_open());
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_only_its_trial_calls() {
    let b = breaker(CircuitBreakerConfig {
        failure_threshold: Some(nz(1)),
        recovery_timeout: Duration::from_secs(1),
        half_open_max_calls: Some(nz(2)),
        success_threshold: nz(2),
        ..Default::default()
    });
    fail(&b).await.ok();
    advance(Duration::from_secs(1)).await;
    let first = b.try_acquire().expect("trial 1");
    let second = b.try_acquire().expect("trial 2");
    let rejected = b.try_acquire().map(|_| ()).expect_err("a third concurrent trial");
    assert_eq!(rejected.retry_after(), Some(Duration::from_secs(1)), "the trials may re-open it for recovery_timeout");
    // A cancelled trial hands its slot back.
    drop(second);
    let second = b.try_acquire().expect("slot handed back");
    first.success();
    second.success();
    assert_eq!(b.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn opens_on_failure_rate_once_minimum_calls_were_seen() {
    let b = breaker(CircuitBreakerConfig {
        failure_threshold: None,
        failure_rate: Some(50.0),
        minimum_calls: nz(4),
        window: SlidingWindow::Count { size: nz(10) },
        ..Default::default()
    });
    fail(&b).await.ok();
    fail(&b).await.ok();
    fail(&b).await.ok();
    assert_eq!(b.state(), CircuitState::Closed, "3 calls are below minimum_calls");
    succeed(&b).await.ok();
    // 3 of 4 failed: 75 % >= 50 %.
    assert_eq!(b.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_rate_equal_to_the_threshold_opens() {
    let b = breaker(CircuitBreakerConfig {
        failure_threshold: None,
        failure_rate: Some(50.0),
        minimum_calls: nz(2),
        ..Default::default()
    });
    succeed(&b).await.ok();
    fail(&b).await.ok();
    assert_eq!(b.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn opens_on_slow_call_rate() {
    let b = breaker(CircuitBreakerConfig {
        failure_threshold: Some(nz(100)),
        slow_call_duration: Some(Duration::from_millis(500)),
        slow_call_rate: Some(60.0),
        minimum_calls: nz(5),
        ..Default::default()
    });
    let slow = || async {
        advance(Duration::from_millis(500)).await;
        Ok::<(), AppError>(())
    };
    for _ in 0..2 {
        succeed(&b).await.unwrap();
    }
    for _ in 0..2 {
        b.call(slow()).await.unwrap();
    }
    assert_eq!(b.state(), CircuitState::Closed, "below minimum_calls");
    b.call(slow()).await.unwrap();
    // 3 of 5 calls slow: 60 %.
    assert_eq!(b.state(), CircuitState::Open);
    assert_eq!(b.metrics().slow_calls, 3, "while open, the window still shows why");
}

#[tokio::test(start_paused = true)]
async fn a_time_window_forgets_old_calls() {
    let b = breaker(CircuitBreakerConfig {
        failure_threshold: Some(nz(3)),
        window: SlidingWindow::Time { duration: Duration::from_secs(16) },
        ..Default::default()
    });
    fail(&b).await.ok();
    fail(&b).await.ok();
    assert_eq!(b.metrics().failed_calls, 2);
    advance(Duration::from_secs(16)).await;
    assert_eq!(b.metrics().calls, 0, "calls a whole window old are forgotten");
    fail(&b).await.ok();
    fail(&b).await.ok();
    assert_eq!(b.state(), CircuitState::Closed);
    advance(Duration::from_secs(10)).await;
    fail(&b).await.ok();
    assert_eq!(b.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn record_if_ignores_errors_that_say_nothing_about_the_dependency() {
    let b = breaker(CircuitBreakerConfig { failure_threshold: Some(nz(1)), ..Default::default() });
    let not_a_failure = |e: &AppError| *e != AppError::NotFound;
    for _ in 0..5 {
        let r = b.call_with(not_a_failure, async { Err::<(), _>(AppError::NotFound) }).await;
        assert_eq!(r, Err(AppError::NotFound));
    }
    assert_eq!(b.state(), CircuitState::Closed);
    assert_eq!(b.metrics().calls, 0);
    b.call_with(not_a_failure, async { Err::<(), _>(AppError::Down) }).await.ok();
    assert_eq!(b.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn forced_open_disabled_and_reset() {
    let b = breaker(CircuitBreakerConfig { failure_threshold: Some(nz(1)), ..Default::default() });
    b.force_open();
    assert_eq!(b.state(), CircuitState::ForcedOpen);
    advance(Duration::from_secs(3600)).await;
    assert!(succeed(&b).await.unwrap_err().is_circuit_open(), "forced open ignores recovery_timeout");
    b.disable();
    for _ in 0..10 {
        assert_eq!(fail(&b).await, Err(AppError::Down));
    }
    assert_eq!(b.state(), CircuitState::Disabled);
    b.reset();
    assert_eq!(b.state(), CircuitState::Closed);
    fail(&b).await.ok();
    assert_eq!(b.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn disabled_by_config() {
    let b = breaker(CircuitBreakerConfig { enabled: false, failure_threshold: Some(nz(1)), ..Default::default() });
    assert_eq!(b.state(), CircuitState::Disabled);
    fail(&b).await.ok();
    succeed(&b).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn subscribers_see_every_transition_in_order() {
    let b = breaker(CircuitBreakerConfig {
        failure_threshold: Some(nz(1)),
        recovery_timeout: Duration::from_secs(1),
        success_threshold: nz(1),
        ..Default::default()
    });
    let seen: Arc<Mutex<Vec<(CircuitState, CircuitState, TransitionReason)>>> = Arc::default();
    let sink = Arc::clone(&seen);
    b.subscribe(move |t: &StateTransition| {
        assert_eq!(&*t.name, "dep");
        sink.lock().unwrap().push((t.from, t.to, t.reason));
    });
    fail(&b).await.ok();
    advance(Duration::from_secs(1)).await;
    succeed(&b).await.unwrap();
    use CircuitState::*;
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (Closed, Open, TransitionReason::FailureThreshold),
            (Open, HalfOpen, TransitionReason::RecoveryTimeout),
            (HalfOpen, Closed, TransitionReason::TrialsSucceeded),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_body_counts_as_a_failure() {
    let b = breaker(CircuitBreakerConfig { failure_threshold: Some(nz(1)), ..Default::default() });
    let task_breaker = b.clone();
    let joined = tokio::spawn(async move {
        task_breaker
            .call(async {
                if true {
                    panic!("body panicked");
                }
                Ok::<(), AppError>(())
            })
            .await
    })
    .await;
    assert!(joined.unwrap_err().is_panic());
    assert_eq!(b.state(), CircuitState::Open);
}

#[test]
fn blocking_calls_need_no_runtime() {
    let b = breaker(CircuitBreakerConfig { failure_threshold: Some(nz(2)), ..Default::default() });
    assert_eq!(b.call_blocking(|| Ok::<_, AppError>(7)), Ok(7));
    b.call_blocking(|| Err::<(), _>(AppError::Down)).ok();
    b.call_blocking(|| Err::<(), _>(AppError::Down)).ok();
    assert!(b.call_blocking(|| Ok::<_, AppError>(7)).unwrap_err().is_circuit_open());
}

#[test]
fn invalid_configs_name_the_key() {
    let cases = [
        (
            CircuitBreakerConfig {
                failure_threshold: Some(nz(11)),
                window: SlidingWindow::Count { size: nz(10) },
                ..Default::default()
            },
            "circuit_breaker.failure_threshold",
        ),
        (CircuitBreakerConfig { failure_rate: Some(0.0), ..Default::default() }, "circuit_breaker.failure_rate"),
        (CircuitBreakerConfig { failure_rate: Some(101.0), ..Default::default() }, "circuit_breaker.failure_rate"),
        (CircuitBreakerConfig { slow_call_rate: Some(50.0), ..Default::default() }, "circuit_breaker.slow_call_rate"),
        (
            CircuitBreakerConfig { half_open_max_calls: Some(nz(1)), success_threshold: nz(2), ..Default::default() },
            "circuit_breaker.half_open_max_calls",
        ),
        (
            CircuitBreakerConfig { window: SlidingWindow::Time { duration: Duration::ZERO }, ..Default::default() },
            "circuit_breaker.window_duration",
        ),
        (CircuitBreakerConfig { failure_threshold: None, ..Default::default() }, "circuit_breaker"),
    ];
    for (config, key) in cases {
        match CircuitBreaker::new("dep", config) {
            Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
            other => panic!("{key}: {other:?}"),
        }
    }
}
