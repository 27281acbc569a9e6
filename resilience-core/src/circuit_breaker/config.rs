//! Circuit breaker configuration.

use std::num::NonZeroU32;
use std::time::Duration;

use crate::error::ConfigError;

/// The largest count-based window, in calls (keeps a window's bitmap under 32 KiB).
pub const MAX_WINDOW_SIZE: u32 = resilience_rules::MAX_WINDOW_SIZE;
/// The largest `half_open_max_calls` (trial counters are 20-bit fields of one atomic).
pub const MAX_HALF_OPEN_CALLS: u32 = resilience_rules::MAX_HALF_OPEN_CALLS;

/// Which calls the breaker's statistics cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlidingWindow {
    /// The last `size` calls.
    Count {
        /// Number of calls in the window.
        size: NonZeroU32,
    },
    /// Calls that ended within the last `duration`.
    ///
    /// The window is kept as 16 buckets of `duration / 16`: a call older than `duration`
    /// is never counted, and a call may be forgotten up to one bucket early.
    Time {
        /// Age after which a call is forgotten.
        duration: Duration,
    },
}

impl Default for SlidingWindow {
    fn default() -> Self {
        Self::Count { size: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN) }
    }
}

/// How a [`CircuitBreaker`](super::CircuitBreaker) decides to open and to close again.
///
/// The breaker opens when any configured condition holds after a call is recorded
/// (reaching a threshold counts: `>=`):
/// `failure_threshold` failures in the window; or, once `minimum_calls` calls are in the
/// window, a `failure_rate` percentage of failures or a `slow_call_rate` percentage of
/// calls that took `slow_call_duration` or longer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CircuitBreakerConfig {
    /// When false the breaker permits every call and records nothing.
    pub enabled: bool,
    /// Failures in the window that open the breaker. Default 5.
    pub failure_threshold: Option<NonZeroU32>,
    /// Percentage (0–100] of failed calls that opens the breaker. Default: not used.
    pub failure_rate: Option<f64>,
    /// Calls the window must hold before rates are evaluated. Default 10.
    pub minimum_calls: NonZeroU32,
    /// The sliding window. Default: the last 100 calls.
    pub window: SlidingWindow,
    /// A call lasting at least this long is slow. Default: slowness not tracked.
    pub slow_call_duration: Option<Duration>,
    /// Percentage (0–100] of slow calls that opens the breaker. Defaults to 100 when
    /// `slow_call_duration` is set.
    pub slow_call_rate: Option<f64>,
    /// How long the breaker stays open before letting trial calls through. Default 60 s.
    pub recovery_timeout: Duration,
    /// Trial calls admitted in one half-open period. Default: `success_threshold`.
    pub half_open_max_calls: Option<NonZeroU32>,
    /// Successful trial calls that close the breaker. Default 2.
    pub success_threshold: NonZeroU32,
    /// Shares the breaker with every instance of the service that names the same
    /// dependency, once [`shared`](crate::shared) state is installed (the `shared-state`
    /// feature of `resilience`). Default false; until installed, a local breaker.
    pub shared: bool,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_threshold: NonZeroU32::new(resilience_rules::GLOBAL_FAILURE_THRESHOLD),
            failure_rate: None,
            minimum_calls: NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
            window: SlidingWindow::default(),
            slow_call_duration: None,
            slow_call_rate: None,
            recovery_timeout: Duration::from_secs(60),
            half_open_max_calls: None,
            success_threshold: NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN),
            shared: false,
        }
    }
}

impl CircuitBreakerConfig {
    /// Checks the configuration, naming the first offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use resilience_rules as rules;
        if let SlidingWindow::Count { size } = self.window {
            ConfigError::check("circuit_breaker.window_size", rules::window_size(size.get()))?;
            if let Some(t) = self.failure_threshold {
                ConfigError::check("circuit_breaker.failure_threshold", rules::failure_threshold(t.get(), size.get()))?;
            }
            if self.failure_rate.is_some() || self.slow_call_duration.is_some() {
                ConfigError::check(
                    "circuit_breaker.minimum_calls",
                    rules::minimum_calls(self.minimum_calls.get(), size.get()),
                )?;
            }
        }
        if let SlidingWindow::Time { duration } = self.window {
            ConfigError::check("circuit_breaker.window_duration", rules::window_duration(duration))?;
        }
        for (key, rate) in [
            ("circuit_breaker.failure_rate", self.failure_rate),
            ("circuit_breaker.slow_call_rate", self.slow_call_rate),
        ] {
            if let Some(r) = rate {
                ConfigError::check(key, rules::percent(r))?;
            }
        }
        if self.slow_call_rate.is_some() {
            ConfigError::check("circuit_breaker.slow_call_rate", rules::slow_call_rate(self.slow_call_duration))?;
        }
        if let Some(d) = self.slow_call_duration {
            ConfigError::check("circuit_breaker.slow_call_duration", rules::timeout(d))?;
        }
        if self.failure_threshold.is_none() && self.failure_rate.is_none() && self.slow_call_duration.is_none() {
            return Err(ConfigError::invalid(
                "circuit_breaker",
                "nothing would ever open the breaker: set `failure_threshold`, `failure_rate` or `slow_call_duration`",
            ));
        }
        let trials = self.half_open_calls();
        ConfigError::check("circuit_breaker.half_open_max_calls", rules::half_open_max_calls(trials))?;
        if trials < self.success_threshold.get() {
            return Err(ConfigError::invalid(
                "circuit_breaker.half_open_max_calls",
                format!("{trials} trial calls can never reach a success_threshold of {}", self.success_threshold),
            ));
        }
        Ok(())
    }

    /// Trial calls admitted per half-open period.
    pub(crate) fn half_open_calls(&self) -> u32 {
        self.half_open_max_calls.map_or(self.success_threshold.get(), NonZeroU32::get)
    }

    /// The slow-call rate in force: the configured one, or 100 % when only a duration is set.
    pub(crate) fn effective_slow_call_rate(&self) -> Option<f64> {
        self.slow_call_duration.map(|_| self.slow_call_rate.unwrap_or(100.0))
    }
}
