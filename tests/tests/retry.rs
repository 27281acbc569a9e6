//! Retry on its own.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use resilience::{Jitter, Retry, RetryConfig};
use tokio::time::Instant;

use crate::support::{nz, AppError};

fn retry(attempts: u32) -> Retry {
    Retry::new(
        "r",
        RetryConfig {
            max_attempts: nz(attempts),
            base_delay: Duration::from_millis(100),
            exponential_base: 2.0,
            max_delay: Duration::from_millis(250),
            jitter: Jitter::None,
            ..Default::default()
        },
    )
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn max_attempts_counts_the_first_call_and_delays_grow() {
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    let mut at = Vec::new();
    let r = retry(4)
        .call(|| {
            calls.fetch_add(1, SeqCst);
            at.push(start.elapsed());
            async { Err::<(), _>(AppError::Down) }
        })
        .await;
    assert_eq!(r, Err(AppError::Down), "the last error, as it was");
    assert_eq!(calls.load(SeqCst), 4);
    let ms: Vec<u128> = at.iter().map(Duration::as_millis).collect();
    // Delays 100, 200, then capped at 250.
    assert_eq!(ms, [0, 100, 300, 550]);
}

#[tokio::test(start_paused = true)]
async fn stops_at_the_first_success() {
    let calls = AtomicU32::new(0);
    let r = retry(5)
        .call(|| {
            let n = calls.fetch_add(1, SeqCst);
            async move {
                if n < 2 {
                    Err(AppError::Down)
                } else {
                    Ok(n)
                }
            }
        })
        .await;
    assert_eq!(r, Ok(2));
}

#[tokio::test(start_paused = true)]
async fn retry_if_decides_which_errors_are_retried() {
    let calls = AtomicU32::new(0);
    let r = retry(5)
        .call_with(
            |e: &AppError| *e == AppError::Down,
            || {
                calls.fetch_add(1, SeqCst);
                async { Err::<(), _>(AppError::NotFound) }
            },
        )
        .await;
    assert_eq!(r, Err(AppError::NotFound));
    assert_eq!(calls.load(SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn max_elapsed_stops_early() {
    let r = Retry::new(
        "r",
        RetryConfig {
            max_attempts: nz(10),
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            max_elapsed: Some(Duration::from_millis(350)),
            ..Default::default()
        },
    )
    .unwrap();
    let calls = AtomicU32::new(0);
    r.call(|| {
        calls.fetch_add(1, SeqCst);
        async { Err::<(), _>(AppError::Down) }
    })
    .await
    .ok();
    // Attempts at 0, 100, 300; the next would start at 700 > 350.
    assert_eq!(calls.load(SeqCst), 3);
}

#[test]
fn blocking_retry_sleeps_the_thread() {
    let r = Retry::new(
        "r",
        RetryConfig { max_attempts: nz(3), base_delay: Duration::from_millis(1), ..Default::default() },
    )
    .unwrap();
    let mut calls = 0;
    let out = r.call_blocking(|| {
        calls += 1;
        if calls < 3 {
            Err(AppError::Down)
        } else {
            Ok(calls)
        }
    });
    assert_eq!(out, Ok(3));
}

#[test]
fn invalid_retry_configs() {
    let bad = RetryConfig { exponential_base: 0.5, ..Default::default() };
    assert!(Retry::new("r", bad).unwrap_err().to_string().contains("retry.exponential_base"));
    let bad = RetryConfig { base_delay: Duration::from_secs(60), ..Default::default() };
    assert!(Retry::new("r", bad).unwrap_err().to_string().contains("retry.base_delay"));
}

/// `max_elapsed` counts from the start of the first attempt, on the pipeline's path and
/// the attribute's: attempts of 60 ms with 10 ms, 20 ms delays and a 100 ms budget make
/// two attempts (counted from the first failure it would be three).
#[tokio::test(start_paused = true)]
async fn max_elapsed_counts_from_the_first_attempt_s_start() {
    let config = RetryConfig {
        max_attempts: nz(10),
        base_delay: Duration::from_millis(10),
        exponential_base: 2.0,
        max_delay: Duration::from_secs(1),
        jitter: Jitter::None,
        max_elapsed: Some(Duration::from_millis(100)),
        ..Default::default()
    };
    let pipeline = resilience::Pipeline::builder("elapsed").retry(config).build().unwrap();
    let calls = AtomicU32::new(0);
    let r = pipeline
        .call(|| {
            calls.fetch_add(1, SeqCst);
            async {
                tokio::time::sleep(Duration::from_millis(60)).await;
                Err::<(), _>(AppError::Down)
            }
        })
        .await;
    assert_eq!(r, Err(AppError::Down));
    assert_eq!(calls.load(SeqCst), 2, "through the pipeline");
    assert_eq!(attributed_elapsed().await, Err(AppError::Down));
    assert_eq!(ATTRIBUTED_CALLS.load(SeqCst), 2, "through the attribute");
}

static ATTRIBUTED_CALLS: AtomicU32 = AtomicU32::new(0);

#[resilience::resilience_pattern(
    name = "retry_elapsed_attr",
    retry(max_attempts = 10, base_delay = "10ms", max_delay = "1s", jitter = none, max_elapsed = "100ms")
)]
async fn attributed_elapsed() -> Result<(), AppError> {
    ATTRIBUTED_CALLS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(60)).await;
    Err(AppError::Down)
}
