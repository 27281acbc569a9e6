//! How call-site keys, presets and registrations meet at an attribute's call site.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use resilience::{database_call, resilient, DependencyKind, DependencyType};

use crate::support::{nz, AppError};

#[database_call(dependency = "call_site_timed", timeout = "100ms", retry(enabled = false))]
async fn timed() -> Result<(), AppError> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn call_site_keys_win_and_the_type_preset_applies() {
    let start = tokio::time::Instant::now();
    assert!(timed().await.unwrap_err().is_timeout());
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    let d = resilience::registry().get("call_site_timed").unwrap();
    assert_eq!(d.kind(), DependencyKind::Type(DependencyType::Database));
    assert!(!d.is_registered());
    // The dependency's own timeout is the type's; the call site's 100 ms is per call.
    assert_eq!(d.config().timeout, Some(Duration::from_secs(10)));
}

static RETRIED_CALLS: AtomicU32 = AtomicU32::new(0);

#[resilient(name = "call_site_retried", strategy = Internal)]
async fn retried() -> Result<(), AppError> {
    RETRIED_CALLS.fetch_add(1, SeqCst);
    Err(AppError::Down)
}

#[tokio::test(start_paused = true)]
async fn a_reconfiguration_reaches_an_existing_call_site() {
    let _ = retried().await;
    assert_eq!(RETRIED_CALLS.swap(0, SeqCst), 3, "Internal strategy: 3 attempts");
    // Those 3 failures opened the breaker; the registration replaces it too.
    let own = resilience::ConfigOverrides {
        retry: resilience::RetryOverrides {
            max_attempts: Some(nz(5)),
            base_delay: Some(Duration::from_millis(1)),
            ..Default::default()
        },
        circuit_breaker: resilience::BreakerOverrides { failure_threshold: Some(nz(20)), ..Default::default() },
        ..Default::default()
    };
    resilience::registry().register("call_site_retried", DependencyType::ExternalApi, own).unwrap();
    let r = retried().await;
    assert_eq!(RETRIED_CALLS.load(SeqCst), 5, "the registration's 5 attempts: {r:?}");
}

static BLOCKING_CALLS: AtomicU32 = AtomicU32::new(0);

#[resilient(name = "call_site_blocking", strategy = Database, retry(max_attempts = 4, base_delay = "1ms"))]
fn blocking() -> Result<u32, AppError> {
    let calls = BLOCKING_CALLS.fetch_add(1, SeqCst) + 1;
    if calls < 3 {
        Err(AppError::Down)
    } else {
        Ok(calls)
    }
}

#[test]
fn a_blocking_call_site_keys_win_over_the_strategy() {
    assert_eq!(blocking(), Ok(3), "the call site's 4 attempts over the strategy's 2");
}
