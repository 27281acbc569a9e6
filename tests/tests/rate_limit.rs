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

/// Many clients, one call each: every new key gets its burst (governor admits them all
/// too), and the table never holds more than `max_keys`.
#[test]
fn under_key_rotation_every_new_key_gets_its_burst() {
    let config = RateLimiterConfig {
        rate: 100.0,
        burst: nz(10),
        max_keys: std::num::NonZeroUsize::new(10_000).unwrap(),
        shared: false,
    };
    let rl = KeyedRateLimiter::new("rotation", config).unwrap();
    let mut admitted = 0u64;
    const KEYS: u64 = 300_000;
    for key in 0..KEYS {
        admitted += u64::from(rl.check_key(&key).is_ok());
        assert!(rl.keys() <= 10_000, "{} keys tracked", rl.keys());
    }
    assert_eq!(admitted, KEYS, "every first call of a new key is admitted");
}

/// A flood of new keys cannot make the limiter forget a key that is over its limit.
#[test]
fn a_flood_of_new_keys_does_not_reset_a_limited_key() {
    let config = RateLimiterConfig {
        rate: 1.0,
        burst: nz(1),
        max_keys: std::num::NonZeroUsize::new(100).unwrap(),
        shared: false,
    };
    let rl = KeyedRateLimiter::new("flood", config).unwrap();
    let attacker = u64::MAX;
    rl.check_key(&attacker).unwrap();
    assert!(rl.check_key(&attacker).is_err(), "over its limit");
    let mut flood_admitted = 0;
    for key in 0..10_000u64 {
        flood_admitted += u32::from(rl.check_key(&key).is_ok());
        assert!(rl.keys() <= 100);
    }
    assert!(rl.check_key(&attacker).is_err(), "still limited after 10,000 new keys");
    assert_eq!(flood_admitted, 10_000, "and the new keys each got their call");
}
