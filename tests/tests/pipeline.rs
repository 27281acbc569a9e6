//! The composed pipeline: order, classification of errors, async and blocking forms.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use resilience::{
    CircuitBreakerConfig, CircuitState, ErrorPolicy, Fallback, Pipeline, RateLimiterConfig, ResilienceError,
    RetryConfig, SemaphoreBulkheadConfig, ThreadPoolBulkheadConfig,
};

use crate::support::{nz, nzu, AppError};

fn retry(attempts: u32) -> RetryConfig {
    RetryConfig { max_attempts: nz(attempts), base_delay: Duration::from_millis(10), ..Default::default() }
}

fn breaker(failures: u32) -> CircuitBreakerConfig {
    CircuitBreakerConfig { failure_threshold: Some(nz(failures)), ..Default::default() }
}

#[tokio::test(start_paused = true)]
async fn a_healthy_call_passes_through_every_policy() {
    let p = Pipeline::builder("dep")
        .timeout(Duration::from_secs(1))
        .retry(retry(3))
        .circuit_breaker(breaker(5))
        .rate_limit(RateLimiterConfig::per_second(100.0, nz(10)))
        .bulkhead(SemaphoreBulkheadConfig::default())
        .build()
        .unwrap();
    let fut = p.call(|| async { Ok::<_, AppError>(1) });
    fn assert_send<T: Send>(_: &T) {}
    assert_send(&fut);
    assert_eq!(fut.await, Ok(1));
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_not_retried() {
    let p = Pipeline::builder("dep").retry(retry(5)).circuit_breaker(breaker(2)).build().unwrap();
    let calls = AtomicU32::new(0);
    let r = p
        .call(|| {
            calls.fetch_add(1, SeqCst);
            async { Err::<(), _>(AppError::Down) }
        })
        .await;
    // Two failures open the breaker; the third attempt is rejected and not retried.
    assert_eq!(calls.load(SeqCst), 2);
    assert!(r.unwrap_err().is_circuit_open());
}

/// A call's own limit applies with the pipeline's timeout: the shorter of the two ends
/// each attempt, in both call forms; without a pipeline timeout the call's limit alone.
#[tokio::test(start_paused = true)]
async fn a_call_within_a_limit_times_out_at_the_shorter_one() {
    let slow = || async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok::<(), AppError>(())
    };
    let p = Pipeline::builder("dep").timeout(Duration::from_secs(1)).build().unwrap();
    let policy = ErrorPolicy::default();
    for (limit, expected) in
        [(Duration::from_millis(200), Duration::from_millis(200)), (Duration::from_secs(5), Duration::from_secs(1))]
    {
        let start = tokio::time::Instant::now();
        assert!(p.call_within(&policy, limit, slow).await.unwrap_err().is_timeout());
        assert_eq!(start.elapsed(), expected, "call_within {limit:?}");
        let start = tokio::time::Instant::now();
        assert!(p.call_idempotent_within(&policy, limit, slow).await.unwrap_err().is_timeout());
        assert_eq!(start.elapsed(), expected, "call_idempotent_within {limit:?}");
    }
    let untimed = Pipeline::builder("dep").build().unwrap();
    let start = tokio::time::Instant::now();
    assert!(untimed.call_within(&policy, Duration::from_millis(300), slow).await.unwrap_err().is_timeout());
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    let quick = untimed.call_within(&policy, Duration::from_millis(300), || async { Ok::<u8, AppError>(7) });
    assert_eq!(quick.await.unwrap(), 7);
}

#[tokio::test(start_paused = true)]
async fn timeouts_are_retried_and_count_as_failures() {
    let p = Pipeline::builder("dep")
        .timeout(Duration::from_millis(100))
        .retry(retry(3))
        .circuit_breaker(breaker(10))
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let r = p
        .call(|| {
            calls.fetch_add(1, SeqCst);
            async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok::<(), AppError>(())
            }
        })
        .await;
    assert!(r.unwrap_err().is_timeout());
    assert_eq!(calls.load(SeqCst), 3);
    assert_eq!(p.circuit_breaker().unwrap().metrics().failed_calls, 3);
}

#[tokio::test(start_paused = true)]
async fn the_last_error_is_returned_as_it_was() {
    let p = Pipeline::builder("dep").retry(retry(3)).build().unwrap();
    let calls = AtomicU32::new(0);
    let r = p
        .call(|| {
            let n = calls.fetch_add(1, SeqCst);
            async move { Err::<(), _>(if n == 2 { AppError::NotFound } else { AppError::Down }) }
        })
        .await;
    assert_eq!(r, Err(AppError::NotFound));
}

#[tokio::test(start_paused = true)]
async fn rejections_by_the_bulkhead_and_rate_limiter_are_not_recorded() {
    let p = Pipeline::builder("dep")
        .circuit_breaker(breaker(1))
        .rate_limit(RateLimiterConfig::per_second(1.0, nz(1)))
        .bulkhead(SemaphoreBulkheadConfig { max_concurrent: nzu(1), max_wait: Duration::ZERO })
        .build()
        .unwrap();
    let b = p.circuit_breaker().unwrap();
    p.call(|| async { Ok::<_, AppError>(()) }).await.unwrap();
    let limited = p.call(|| async { Ok::<_, AppError>(()) }).await.unwrap_err();
    assert!(matches!(limited, AppError::Resilience(ResilienceError::RateLimited { .. })));
    assert_eq!(b.state(), CircuitState::Closed);

    tokio::time::advance(Duration::from_secs(1)).await;
    let resilience::Bulkhead::Semaphore(bulkhead) = p.bulkhead().unwrap() else { panic!("semaphore") };
    let held = bulkhead.try_acquire().unwrap();
    let full = p.call(|| async { Ok::<_, AppError>(()) }).await.unwrap_err();
    assert!(full.is_bulkhead_full());
    drop(held);
    assert_eq!(b.state(), CircuitState::Closed);
    assert_eq!(b.metrics().failed_calls, 0);
}

#[tokio::test(start_paused = true)]
async fn error_policy_classifies_the_body_s_errors() {
    let p = Pipeline::builder("dep").retry(retry(4)).circuit_breaker(breaker(1)).build().unwrap();
    let policy = ErrorPolicy::<AppError> { retry_if: |e| *e == AppError::Down, record_if: |e| *e == AppError::Down };
    let calls = AtomicU32::new(0);
    let r = p
        .call_with(&policy, || {
            calls.fetch_add(1, SeqCst);
            async { Err::<(), _>(AppError::NotFound) }
        })
        .await;
    assert_eq!(r, Err(AppError::NotFound));
    assert_eq!(calls.load(SeqCst), 1, "not retried");
    assert_eq!(p.circuit_breaker().unwrap().state(), CircuitState::Closed, "not recorded");
}

#[tokio::test(start_paused = true)]
async fn a_fallback_sees_the_final_error() {
    let p = Pipeline::builder("dep").retry(retry(2)).build().unwrap();
    let fallback = Fallback::new(|e: AppError| async move {
        assert_eq!(e, AppError::Down);
        Ok::<_, AppError>("cached")
    });
    let r = fallback.call(p.call(|| async { Err::<&str, _>(AppError::Down) })).await;
    assert_eq!(r, Ok("cached"));
}

#[test]
fn the_blocking_pipeline_needs_no_runtime() {
    let p = Pipeline::builder("dep")
        .timeout(Duration::from_secs(5))
        .retry(RetryConfig { max_attempts: nz(3), base_delay: Duration::from_millis(1), ..Default::default() })
        .circuit_breaker(breaker(5))
        .bulkhead(SemaphoreBulkheadConfig::default())
        .build()
        .unwrap();
    let mut calls = 0;
    let borrowed = String::from("row");
    let r = p.call_blocking(|| {
        calls += 1;
        if calls < 2 {
            Err(AppError::Down)
        } else {
            Ok(borrowed.len())
        }
    });
    assert_eq!(r, Ok(3));
    assert_eq!(calls, 2);
}

#[test]
fn an_in_place_blocking_overrun_is_a_timeout() {
    let p = Pipeline::builder("dep").timeout(Duration::from_millis(5)).circuit_breaker(breaker(1)).build().unwrap();
    let r = p.call_blocking(|| {
        std::thread::sleep(Duration::from_millis(20));
        Ok::<_, AppError>(())
    });
    assert!(r.unwrap_err().is_timeout());
    assert_eq!(p.circuit_breaker().unwrap().state(), CircuitState::Open);
}

/// An attempt that ran in place past its timeout is reported once, not retried: the
/// caller has already waited past the timeout (50 ms around 1 s took 3.15 s before).
#[test]
fn an_in_place_overrun_is_not_retried() {
    let p = Pipeline::builder("overrun")
        .timeout(Duration::from_millis(5))
        .retry(resilience::RetryConfig { max_attempts: nz(3), base_delay: Duration::ZERO, ..Default::default() })
        .build()
        .unwrap();
    let mut calls = 0;
    let r = p.call_blocking(|| {
        calls += 1;
        std::thread::sleep(Duration::from_millis(20));
        Ok::<_, AppError>(())
    });
    assert!(r.unwrap_err().is_timeout());
    assert_eq!(calls, 1, "an overrun in place is final");
    // Errors the body returns in time are still retried.
    let mut failures = 0;
    let r = p.call_blocking(|| {
        failures += 1;
        Err::<(), _>(AppError::Down)
    });
    assert_eq!(r, Err(AppError::Down));
    assert_eq!(failures, 3);
}

#[test]
fn a_detached_blocking_call_times_out_on_time_and_keeps_its_slot() {
    let p = Pipeline::builder("dep")
        .timeout(Duration::from_millis(30))
        .bulkhead(SemaphoreBulkheadConfig { max_concurrent: nzu(1), max_wait: Duration::ZERO })
        .build()
        .unwrap();
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let wait = Arc::new(std::sync::Mutex::new(wait));
    let start = std::time::Instant::now();
    let w = Arc::clone(&wait);
    let r = p.call_detached(move || {
        let _ = w.lock().unwrap().recv_timeout(Duration::from_secs(5));
        Ok::<_, AppError>(())
    });
    assert!(r.unwrap_err().is_timeout());
    assert!(start.elapsed() < Duration::from_secs(2));
    // The abandoned attempt still holds the only slot.
    let again = p.call_detached(|| Ok::<_, AppError>(()));
    assert!(again.unwrap_err().is_bulkhead_full());
    release.send(()).unwrap();
    let resilience::Bulkhead::Semaphore(b) = p.bulkhead().unwrap() else { panic!("semaphore") };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while b.available() == 0 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(b.available(), 1);
}

#[test]
fn detached_calls_run_on_the_thread_pool() {
    let p = Pipeline::builder("files")
        .thread_pool(ThreadPoolBulkheadConfig { max_concurrent: nzu(2), queue_capacity: 4 })
        .retry(RetryConfig { max_attempts: nz(2), base_delay: Duration::from_millis(1), ..Default::default() })
        .build()
        .unwrap();
    let r = p.call_detached(|| Ok::<_, AppError>(std::thread::current().name().map(str::to_owned)));
    assert_eq!(r.unwrap().as_deref().map(|n| n.starts_with("files-")), Some(true));
}

#[tokio::test(start_paused = true)]
async fn async_bodies_through_a_thread_pool_bulkhead_are_capped() {
    let p = Pipeline::builder("files")
        .thread_pool(ThreadPoolBulkheadConfig { max_concurrent: nzu(1), queue_capacity: 0 })
        .build()
        .unwrap();
    let (started, is_started) = tokio::sync::oneshot::channel::<()>();
    let p2 = p.clone();
    let first = tokio::spawn(async move {
        let mut started = Some(started);
        p2.call(|| {
            let started = started.take();
            async move {
                if let Some(s) = started {
                    s.send(()).ok();
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok::<_, AppError>(())
            }
        })
        .await
    });
    is_started.await.unwrap();
    assert!(p.call(|| async { Ok::<_, AppError>(()) }).await.unwrap_err().is_bulkhead_full());
    first.await.unwrap().unwrap();
    p.call(|| async { Ok::<_, AppError>(()) }).await.unwrap();
}
