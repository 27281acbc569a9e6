//! The runtime side of the attribute macros (`__private`), driven the way an expansion
//! drives it: a `static` call site and a call through it.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use resilience::__private::{
    execute, execute_blocking, CallSite, ConfigOverrides, DependencyKind, DependencyType, ErrorPolicy,
    ResilienceStrategy, RetryOverrides,
};

use crate::support::{nz, AppError};

static TIMED: CallSite = CallSite::new(
    "call_site_timed",
    DependencyKind::Type(DependencyType::Database),
    ConfigOverrides {
        timeout: Some(Duration::from_millis(100)),
        retry: RetryOverrides { enabled: Some(false), ..RetryOverrides::EMPTY },
        ..ConfigOverrides::EMPTY
    },
);

#[tokio::test(start_paused = true)]
async fn call_site_keys_win_and_the_type_preset_applies() {
    let start = tokio::time::Instant::now();
    let r = execute(&TIMED, &ErrorPolicy::default(), || async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, AppError>(())
    })
    .await;
    assert!(r.unwrap_err().is_timeout());
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    let d = resilience::registry().get("call_site_timed").unwrap();
    assert_eq!(d.kind(), DependencyKind::Type(DependencyType::Database));
    assert!(!d.is_registered());
    // The dependency's own timeout is the type's; the call site's 100 ms is per call.
    assert_eq!(d.config().timeout, Some(Duration::from_secs(10)));
}

static RETRIED: CallSite = CallSite::new(
    "call_site_retried",
    DependencyKind::Strategy(ResilienceStrategy::InternalService),
    ConfigOverrides::EMPTY,
);

#[tokio::test(start_paused = true)]
async fn a_reconfiguration_reaches_an_existing_call_site() {
    let calls = AtomicU32::new(0);
    let fail = || {
        calls.fetch_add(1, SeqCst);
        async { Err::<(), _>(AppError::Down) }
    };
    let _ = execute(&RETRIED, &ErrorPolicy::default(), fail).await;
    assert_eq!(calls.swap(0, SeqCst), 3, "Internal strategy: 3 attempts");
    // Those 3 failures opened the breaker; the registration replaces it too.
    let own = ConfigOverrides {
        retry: RetryOverrides {
            max_attempts: Some(nz(5)),
            base_delay: Some(Duration::from_millis(1)),
            ..Default::default()
        },
        circuit_breaker: resilience::BreakerOverrides { failure_threshold: Some(nz(20)), ..Default::default() },
        ..Default::default()
    };
    resilience::registry().register("call_site_retried", DependencyType::ExternalApi, own).unwrap();
    let r = execute(&RETRIED, &ErrorPolicy::default(), fail).await;
    assert_eq!(calls.load(SeqCst), 5, "the registration's 5 attempts: {r:?}");
}

static BLOCKING: CallSite = CallSite::new(
    "call_site_blocking",
    DependencyKind::Strategy(ResilienceStrategy::Database),
    ConfigOverrides {
        retry: RetryOverrides {
            max_attempts: Some(match std::num::NonZeroU32::new(4) {
                Some(n) => n,
                None => std::num::NonZeroU32::MIN,
            }),
            base_delay: Some(Duration::from_millis(1)),
            ..RetryOverrides::EMPTY
        },
        ..ConfigOverrides::EMPTY
    },
);

#[test]
fn a_blocking_call_site_needs_no_runtime() {
    let mut calls = 0;
    let r = execute_blocking(&BLOCKING, &ErrorPolicy::default(), || {
        calls += 1;
        if calls < 3 {
            Err(AppError::Down)
        } else {
            Ok(calls)
        }
    });
    assert_eq!(r, Ok(3), "the call site's 4 attempts over the strategy's 2");
}
