//! The limits and checks of `resilience` configurations, in one place.
//!
//! The runtime (`resilience-core`) validates every configuration with these functions,
//! and the attribute and registration macros (`resilience-macros`) check the values
//! written at a call site with the same ones, so that what compiles is accepted at run
//! time as written. Each check returns the reason a value is refused, without the key
//! (the caller names the key its way: a key path, or a span).
//!
//! This crate has no dependencies, so the proc-macro crate can use it.

use std::time::Duration;

/// Most attempts a retry may make (the first call included).
pub const MAX_ATTEMPTS: u32 = 1000;
/// The largest count-based breaker window, in calls.
pub const MAX_WINDOW_SIZE: u32 = 1 << 18;
/// The shortest time-based breaker window.
pub const MIN_WINDOW_DURATION: Duration = Duration::from_millis(1);
/// The most trial calls a half-open breaker admits in one period.
pub const MAX_HALF_OPEN_CALLS: u32 = (1 << 20) - 1;
/// The slowest rate a limiter takes: one call in about 11.6 days.
pub const MIN_RATE: f64 = 1e-6;
/// The fastest rate a limiter takes, in calls per second.
pub const MAX_RATE: f64 = 1e9;
/// The largest semaphore bulkhead.
pub const MAX_PERMITS: usize = 1 << 36;
/// The most worker threads of a thread-pool bulkhead.
pub const MAX_WORKERS: usize = 4096;

/// The window of a breaker that sets none: the last 100 calls.
pub const DEFAULT_WINDOW_SIZE: u32 = 100;
/// Calls a window must hold before rates are evaluated, unless set.
pub const DEFAULT_MINIMUM_CALLS: u32 = 10;
/// The first retry delay, unless set.
pub const DEFAULT_BASE_DELAY: Duration = Duration::from_secs(1);
/// The longest retry delay, unless set.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30);

/// Failures that open the breaker under the global defaults.
pub const GLOBAL_FAILURE_THRESHOLD: u32 = 5;

/// Failures that open the breaker of a strategy's preset, by the strategy's name in
/// code (`InternalService`, `ExternalService`, `Database`, `Cache`).
pub fn strategy_failure_threshold(strategy: &str) -> Option<u32> {
    match strategy {
        "InternalService" | "Database" => Some(3),
        "ExternalService" => Some(5),
        "Cache" => Some(20),
        _ => None,
    }
}

/// Failures that open the breaker of a dependency type's preset, by the type's name in
/// code; `None` for a type whose preset has no breaker (`Cache`).
pub fn type_failure_threshold(dependency_type: &str) -> Option<u32> {
    match dependency_type {
        "Database" | "MessageQueue" | "FileSystem" => Some(5),
        "ExternalApi" => Some(3),
        _ => None,
    }
}

/// What a check says of a refused value.
pub type Verdict = Result<(), String>;

fn refuse(message: String) -> Verdict {
    Err(message)
}

/// A per-attempt timeout: longer than zero.
pub fn timeout(limit: Duration) -> Verdict {
    if limit.is_zero() {
        return refuse(String::from("must be greater than zero"));
    }
    Ok(())
}

/// `retry.max_attempts`: at least 1 and at most [`MAX_ATTEMPTS`].
pub fn max_attempts(n: u32) -> Verdict {
    if n == 0 {
        return refuse(String::from("must be at least 1"));
    }
    if n > MAX_ATTEMPTS {
        return refuse(format!("{n} is more than the maximum of {MAX_ATTEMPTS} attempts"));
    }
    Ok(())
}

/// `retry.exponential_base`: a finite number of at least 1.0.
pub fn exponential_base(factor: f64) -> Verdict {
    if !(factor.is_finite() && factor >= 1.0) {
        return refuse(format!("{factor} must be a finite number of at least 1.0"));
    }
    Ok(())
}

/// `retry.base_delay` against `retry.max_delay`: the first delay is not longer than the cap.
pub fn delays(base: Duration, max: Duration) -> Verdict {
    if base > max {
        return refuse(format!("{base:?} is longer than `max_delay` ({max:?})"));
    }
    Ok(())
}

/// `rate_limit.rate`, in calls per second: in [[`MIN_RATE`], [`MAX_RATE`]].
pub fn rate(rate: f64) -> Verdict {
    if !(rate.is_finite() && (MIN_RATE..=MAX_RATE).contains(&rate)) {
        return refuse(format!("{rate} is not a rate between {MIN_RATE} and {MAX_RATE:e} calls per second"));
    }
    Ok(())
}

/// A percentage (`failure_rate`, `slow_call_rate`): in (0, 100].
pub fn percent(p: f64) -> Verdict {
    if !(p > 0.0 && p <= 100.0) {
        return refuse(format!("{p} is not a percentage in (0, 100]"));
    }
    Ok(())
}

/// `circuit_breaker.window_size`: at most [`MAX_WINDOW_SIZE`] calls.
pub fn window_size(size: u32) -> Verdict {
    if size > MAX_WINDOW_SIZE {
        return refuse(format!("{size} is larger than the maximum of {MAX_WINDOW_SIZE} calls"));
    }
    Ok(())
}

/// `circuit_breaker.failure_threshold` in a count window of `size` calls.
pub fn failure_threshold(threshold: u32, size: u32) -> Verdict {
    if threshold > size {
        return refuse(format!("{threshold} failures can never fit in a window of {size} calls"));
    }
    Ok(())
}

/// `circuit_breaker.minimum_calls` in a count window of `size` calls, when a rate is used.
pub fn minimum_calls(minimum: u32, size: u32) -> Verdict {
    if minimum > size {
        return refuse(format!(
            "{minimum} is larger than the window of {size} calls, so rates would never be evaluated"
        ));
    }
    Ok(())
}

/// `circuit_breaker.window_duration`: at least [`MIN_WINDOW_DURATION`].
pub fn window_duration(duration: Duration) -> Verdict {
    if duration < MIN_WINDOW_DURATION {
        return refuse(format!("{duration:?} is shorter than the minimum of 1ms"));
    }
    Ok(())
}

/// `circuit_breaker.slow_call_rate` needs `slow_call_duration`.
pub fn slow_call_rate(duration: Option<Duration>) -> Verdict {
    match duration {
        None => refuse(String::from("needs `slow_call_duration` to say which calls are slow")),
        Some(_) => Ok(()),
    }
}

/// `circuit_breaker.half_open_max_calls`: at most [`MAX_HALF_OPEN_CALLS`].
pub fn half_open_max_calls(n: u32) -> Verdict {
    if n > MAX_HALF_OPEN_CALLS {
        return refuse(format!("{n} is more than the maximum of {MAX_HALF_OPEN_CALLS}"));
    }
    Ok(())
}

/// `bulkhead.max_concurrent` of a semaphore bulkhead: at most [`MAX_PERMITS`].
pub fn permits(n: usize) -> Verdict {
    if n > MAX_PERMITS {
        return refuse(format!("{n} is more than the maximum of {MAX_PERMITS}"));
    }
    Ok(())
}

/// `bulkhead.max_concurrent` of a thread-pool bulkhead: at most [`MAX_WORKERS`] threads.
pub fn workers(n: usize) -> Verdict {
    if n > MAX_WORKERS {
        return refuse(format!("{n} worker threads is more than the maximum of {MAX_WORKERS}"));
    }
    Ok(())
}

/// The starting limit of an adaptive bulkhead that gives none.
pub const DEFAULT_ADAPTIVE_LIMIT: usize = 20;
/// The lowest limit an adaptive bulkhead may learn, unless set.
pub const DEFAULT_MIN_LIMIT: usize = 1;
/// The highest limit an adaptive bulkhead may learn, unless set.
pub const DEFAULT_MAX_LIMIT: usize = 200;

/// An adaptive bulkhead's `min_limit`, starting limit (`max_concurrent`) and
/// `max_limit`: `min_limit <= max_concurrent <= max_limit <= MAX_PERMITS`; the key at
/// fault is named in the message.
pub fn adaptive_limits(min: usize, start: usize, max: usize) -> Result<(), (&'static str, String)> {
    if max > MAX_PERMITS {
        return Err(("max_limit", format!("{max} is more than the maximum of {MAX_PERMITS}")));
    }
    if min > max {
        return Err(("min_limit", format!("{min} is larger than `max_limit` ({max})")));
    }
    if start < min || start > max {
        return Err((
            "max_concurrent",
            format!("the starting limit {start} is outside `min_limit`..=`max_limit` ({min}..={max})"),
        ));
    }
    Ok(())
}

/// The default share of a retry budget: retries may add a fifth to the calls.
pub const DEFAULT_BUDGET_RATIO: f64 = 0.2;
/// Retries a budget allows per second whatever the calls, unless set.
pub const DEFAULT_BUDGET_MIN_PER_SECOND: u32 = 10;
/// The window over which a budget counts, unless set.
pub const DEFAULT_BUDGET_WINDOW: Duration = Duration::from_secs(10);
/// The shortest budget window.
pub const MIN_BUDGET_WINDOW: Duration = Duration::from_millis(100);
/// The longest budget window.
pub const MAX_BUDGET_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// `retry.budget.ratio`: a fraction in (0, 1].
pub fn budget_ratio(ratio: f64) -> Verdict {
    if !(ratio > 0.0 && ratio <= 1.0) {
        return refuse(format!("{ratio} is not a fraction in (0, 1]"));
    }
    Ok(())
}

/// `retry.budget.window`: from [`MIN_BUDGET_WINDOW`] to [`MAX_BUDGET_WINDOW`].
pub fn budget_window(window: Duration) -> Verdict {
    if window < MIN_BUDGET_WINDOW || window > MAX_BUDGET_WINDOW {
        return refuse(format!("{window:?} is not between 100ms and 24h"));
    }
    Ok(())
}

/// A share such as `chaos.error_rate`: in [0, 1].
pub fn fraction(x: f64) -> Verdict {
    if !(0.0..=1.0).contains(&x) {
        return refuse(format!("{x} is not a fraction in [0, 1]"));
    }
    Ok(())
}

/// The most attempts a hedged call makes, the primary included.
pub const MAX_HEDGE_ATTEMPTS: u32 = 10;

/// `hedge.max_attempts`: from 1 to [`MAX_HEDGE_ATTEMPTS`].
pub fn hedge_attempts(n: u32) -> Verdict {
    if n == 0 || n > MAX_HEDGE_ATTEMPTS {
        return refuse(format!("{n} is not between 1 and {MAX_HEDGE_ATTEMPTS} attempts"));
    }
    Ok(())
}

/// `hedge.delay` as a percentile (`"p95"`): in (0, 100).
pub fn hedge_percentile(p: f64) -> Verdict {
    if !(p > 0.0 && p < 100.0) {
        return refuse(format!("p{p} is not a percentile between p0 and p100 (exclusive)"));
    }
    Ok(())
}

/// The shortest `shared_state.sync_interval`.
pub const MIN_SYNC_INTERVAL: Duration = Duration::from_millis(10);
/// The longest `shared_state.sync_interval`.
pub const MAX_SYNC_INTERVAL: Duration = Duration::from_secs(60);

/// `shared_state.sync_interval`: from [`MIN_SYNC_INTERVAL`] to [`MAX_SYNC_INTERVAL`].
pub fn sync_interval(interval: Duration) -> Verdict {
    if interval < MIN_SYNC_INTERVAL || interval > MAX_SYNC_INTERVAL {
        return refuse(format!("{interval:?} is not between 10ms and 60s"));
    }
    Ok(())
}

/// `shared_state.redis_url`: a `redis://`, `rediss://` or `redis+unix://`/`unix://` URL.
pub fn redis_url(url: &str) -> Verdict {
    let known = ["redis://", "rediss://", "redis+unix://", "unix://"];
    if !known.iter().any(|scheme| url.starts_with(scheme)) {
        return refuse(format!("`{url}` is not a Redis URL (expected `redis://host:port/db`)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_and_budget_limits() {
        assert!(adaptive_limits(1, 20, 200).is_ok() && adaptive_limits(5, 5, 5).is_ok());
        assert_eq!(adaptive_limits(10, 5, 20).map_err(|e| e.0), Err("max_concurrent"));
        assert_eq!(adaptive_limits(30, 30, 20).map_err(|e| e.0), Err("min_limit"));
        assert_eq!(adaptive_limits(1, 1, MAX_PERMITS + 1).map_err(|e| e.0), Err("max_limit"));
        assert!(budget_ratio(1.0).is_ok() && budget_ratio(0.01).is_ok());
        for bad in [0.0, -0.5, 1.01, f64::NAN] {
            assert!(budget_ratio(bad).is_err(), "{bad}");
        }
        assert!(budget_window(Duration::from_secs(10)).is_ok() && budget_window(Duration::from_millis(10)).is_err());
    }

    #[test]
    fn limits_are_inclusive() {
        assert!(max_attempts(MAX_ATTEMPTS).is_ok() && max_attempts(MAX_ATTEMPTS + 1).is_err());
        assert!(max_attempts(0).is_err());
        assert!(rate(MIN_RATE).is_ok() && rate(MAX_RATE).is_ok());
        for bad in [0.0, -1.0, 1e-11, 2e9, f64::NAN, f64::INFINITY] {
            assert!(rate(bad).is_err(), "{bad}");
        }
        assert!(exponential_base(1.0).is_ok() && exponential_base(0.5).is_err());
        assert!(exponential_base(f64::INFINITY).is_err());
        assert!(delays(Duration::from_secs(1), Duration::from_secs(1)).is_ok());
        assert!(delays(Duration::from_secs(2), Duration::from_secs(1)).is_err());
        assert!(window_size(MAX_WINDOW_SIZE).is_ok() && window_size(MAX_WINDOW_SIZE + 1).is_err());
        assert!(failure_threshold(100, 100).is_ok() && failure_threshold(101, 100).is_err());
        assert!(window_duration(MIN_WINDOW_DURATION).is_ok());
        assert!(window_duration(Duration::from_micros(500)).is_err());
        assert!(workers(MAX_WORKERS).is_ok() && workers(MAX_WORKERS + 1).is_err());
        assert!(percent(100.0).is_ok() && percent(0.0).is_err() && percent(100.5).is_err());
    }
}
