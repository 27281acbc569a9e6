//! Rate limiters on the paused clock.

use std::time::Duration;

use resilience::{KeyedRateLimiter, RateLimiter, RateLimiterConfig, ResilienceError};

use crate::support::nz;

#[tokio::test(start_paused = true)]
async fn admits_a_burst_then_the_sustained_rate() {
    let rl = RateLimiter::new("api", RateLimiterConfig::per_second(10.0, nz(5))).unwrap();
    for _ in 0..5 {
        rl.check().unwrap();
    }
    let err = rl.check().unwrap_err();
    assert!(matches!(err, ResilienceError::RateLimited { .. }));
    assert_eq!(err.retry_after(), Some(Duration::from_millis(100)));
    let mut admitted = 0;
    for _ in 0..100 {
        tokio::time::advance(Duration::from_millis(10)).await;
        admitted += usize::from(rl.check().is_ok());
    }
    assert_eq!(admitted, 10, "one second at 10 per second");
}

#[tokio::test(start_paused = true)]
async fn keys_are_limited_independently() {
    let rl = KeyedRateLimiter::new("clients", RateLimiterConfig::per_second(1.0, nz(2))).unwrap();
    for client in ["a", "b"] {
        rl.check_key(&client).unwrap();
        rl.check_key(&client).unwrap();
        assert!(rl.check_key(&client).is_err());
    }
    assert_eq!(rl.keys(), 2);
}

#[test]
fn a_bad_rate_names_the_key() {
    let err = RateLimiter::new("x", RateLimiterConfig::per_second(0.0, nz(1))).unwrap_err();
    assert_eq!(err.to_string(), "invalid `rate_limit.rate`: 0 is not a rate between 0.000001 and 1e9 calls per second");
}

#[test]
fn tiny_rates_are_refused_and_slow_ones_never_overflow() {
    // Below one call in about 11.6 days is refused (it used to overflow the arithmetic:
    // a panic in debug builds, five calls in 5 ms for a rate of 1e-11 in release).
    for rate in [1e-12, 1e-11, 1e-7] {
        assert!(RateLimiter::new("tiny", RateLimiterConfig::per_second(rate, nz(1))).is_err(), "{rate}");
    }
    let slowest = RateLimiter::new("slowest", RateLimiterConfig::per_second(1e-6, nz(1))).unwrap();
    slowest.check().unwrap();
    for _ in 0..5 {
        assert!(slowest.check().is_err(), "one call, then none for 11.6 days");
    }
    // The largest burst at the slowest rate: its tolerance does not fit 64 bits.
    let wide = RateLimiter::new("wide", RateLimiterConfig::per_second(1e-6, nz(u32::MAX))).unwrap();
    for _ in 0..1_000 {
        wide.check().unwrap();
    }
}
