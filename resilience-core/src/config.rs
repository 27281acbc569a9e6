//! The effective configuration of a dependency, and the partial configurations
//! (overrides) that presets, registrations, settings files and call sites layer on it.
//!
//! Precedence, lowest first: global defaults ← strategy or dependency-type preset ← the
//! named dependency's own configuration ← call-site keys. Since each layer is applied on
//! top of the one below, the timeout follows the hierarchy operation > dependency >
//! dependency type > global.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use crate::bulkhead::{AdaptiveBulkheadConfig, SemaphoreBulkheadConfig, ThreadPoolBulkheadConfig};
use crate::chaos::ChaosConfig;
use crate::circuit_breaker::{CircuitBreakerConfig, SlidingWindow};
use crate::error::ConfigError;
use crate::hedge::{HedgeConfig, HedgeDelay};
use crate::rate_limit::RateLimiterConfig;
use crate::retry::{Jitter, RetryBudgetConfig, RetryConfig};

/// Which kind of bulkhead isolates a dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BulkheadKind {
    /// A concurrency cap on the caller's task or thread.
    #[default]
    Semaphore,
    /// Dedicated worker threads and a bounded queue.
    ThreadPool,
    /// A concurrency cap on the caller's task or thread, learned from latency.
    Adaptive,
}

impl BulkheadKind {
    /// The snake-case name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Semaphore => "semaphore",
            Self::ThreadPool => "thread_pool",
            Self::Adaptive => "adaptive",
        }
    }
}

/// Bulkhead settings of a dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BulkheadSettings {
    /// Whether calls are isolated at all. Default false.
    pub enabled: bool,
    /// Semaphore or thread pool. Default semaphore.
    pub kind: BulkheadKind,
    /// Concurrent calls (worker threads for a thread pool). Default 100.
    pub max_concurrent: NonZeroUsize,
    /// How long a call may wait for a slot (semaphore). Default zero: fail fast.
    pub max_wait: Duration,
    /// Calls that may queue for a worker (thread pool). Default 100.
    pub queue_capacity: usize,
    /// The lowest limit an adaptive bulkhead may learn. Default 1.
    pub min_limit: NonZeroUsize,
    /// The highest limit an adaptive bulkhead may learn. Default 200.
    pub max_limit: NonZeroUsize,
}

impl Default for BulkheadSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            kind: BulkheadKind::Semaphore,
            max_concurrent: NonZeroUsize::new(100).unwrap_or(NonZeroUsize::MIN),
            max_wait: Duration::ZERO,
            queue_capacity: 100,
            min_limit: NonZeroUsize::new(resilience_rules::DEFAULT_MIN_LIMIT).unwrap_or(NonZeroUsize::MIN),
            max_limit: NonZeroUsize::new(resilience_rules::DEFAULT_MAX_LIMIT).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

impl BulkheadSettings {
    pub(crate) fn semaphore(&self) -> SemaphoreBulkheadConfig {
        SemaphoreBulkheadConfig { max_concurrent: self.max_concurrent, max_wait: self.max_wait }
    }

    pub(crate) fn thread_pool(&self) -> ThreadPoolBulkheadConfig {
        ThreadPoolBulkheadConfig { max_concurrent: self.max_concurrent, queue_capacity: self.queue_capacity }
    }

    pub(crate) fn adaptive(&self) -> AdaptiveBulkheadConfig {
        AdaptiveBulkheadConfig {
            initial_limit: self.max_concurrent,
            min_limit: self.min_limit,
            max_limit: self.max_limit,
            max_wait: self.max_wait,
        }
    }
}

/// Everything that decides how calls to one dependency are protected.
#[derive(Debug, Clone, PartialEq)]
pub struct ResilienceConfig {
    /// Per-attempt timeout; `None` for none. Default 30 s.
    pub timeout: Option<Duration>,
    /// Retries. Default 3 attempts from 1 s, factor 2.0.
    pub retry: RetryConfig,
    /// Circuit breaker. Default 5 failures, 60 s recovery, 2 successes to close.
    pub circuit_breaker: CircuitBreakerConfig,
    /// Bulkhead. Default off (100 when switched on).
    pub bulkhead: BulkheadSettings,
    /// Rate limit. Default none.
    pub rate_limit: Option<RateLimiterConfig>,
    /// Retry budget, shared by every call of the dependency. Default none.
    pub retry_budget: Option<RetryBudgetConfig>,
    /// Hedging of the dependency's idempotent calls. Default none.
    pub hedge: Option<HedgeConfig>,
    /// Fault injection (with the `chaos` feature, when switched on). Default none.
    pub chaos: Option<ChaosConfig>,
}

impl Default for ResilienceConfig {
    /// The global defaults (breaker after 5 failures, 60 s open, 2 successes to close; 3 attempts from 1 s doubling; 30 s timeout; no bulkhead).
    fn default() -> Self {
        Self {
            timeout: Some(Duration::from_secs(30)),
            retry: RetryConfig::default(),
            circuit_breaker: CircuitBreakerConfig::default(),
            bulkhead: BulkheadSettings::default(),
            rate_limit: None,
            retry_budget: None,
            hedge: None,
            chaos: None,
        }
    }
}

impl ResilienceConfig {
    /// Checks every enabled policy's configuration, naming the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(t) = self.timeout {
            crate::timeout::validate(t)?;
        }
        if self.retry.enabled {
            self.retry.validate()?;
        }
        if self.circuit_breaker.enabled {
            self.circuit_breaker.validate()?;
        }
        if self.bulkhead.enabled {
            match self.bulkhead.kind {
                BulkheadKind::Semaphore => self.bulkhead.semaphore().validate()?,
                BulkheadKind::ThreadPool => self.bulkhead.thread_pool().validate()?,
                BulkheadKind::Adaptive => self.bulkhead.adaptive().validate()?,
            }
        }
        if let Some(r) = &self.rate_limit {
            r.validate()?;
        }
        if let Some(b) = &self.retry_budget {
            b.validate()?;
        }
        if let Some(h) = &self.hedge {
            h.validate()?;
        }
        if let Some(c) = &self.chaos {
            c.validate()?;
        }
        Ok(())
    }

    /// The retries a call makes under this configuration: `None` when retrying is off or
    /// allows a single attempt, so the call keeps no retry bookkeeping.
    pub(crate) fn call_retry(&self) -> Option<RetryConfig> {
        Some(self.retry).filter(|r| r.enabled && r.max_attempts.get() > 1)
    }

    /// This configuration with `overrides` applied on top.
    pub fn with(mut self, overrides: &ConfigOverrides) -> Self {
        overrides.apply(&mut self);
        self
    }
}

/// Optional circuit-breaker keys; `None` leaves the value below in force. Setting
/// `failure_threshold`, `failure_rate` or `slow_call_duration` switches the breaker on
/// unless `enabled` says otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[allow(missing_docs)] // one field per key of `CircuitBreakerConfig`, documented there
pub struct BreakerOverrides {
    pub enabled: Option<bool>,
    pub failure_threshold: Option<NonZeroU32>,
    pub failure_rate: Option<f64>,
    pub minimum_calls: Option<NonZeroU32>,
    /// Selects a count-based window of this many calls.
    pub window_size: Option<NonZeroU32>,
    /// Selects a time-based window of this duration (wins over `window_size`).
    pub window_duration: Option<Duration>,
    pub slow_call_duration: Option<Duration>,
    pub slow_call_rate: Option<f64>,
    pub recovery_timeout: Option<Duration>,
    pub half_open_max_calls: Option<NonZeroU32>,
    pub success_threshold: Option<NonZeroU32>,
    pub shared: Option<bool>,
}

/// Optional retry keys; `None` leaves the value below in force. Setting
/// `max_attempts` switches retries on unless `enabled` says otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[allow(missing_docs)] // one field per key of `RetryConfig`, documented there
pub struct RetryOverrides {
    pub enabled: Option<bool>,
    pub max_attempts: Option<NonZeroU32>,
    pub base_delay: Option<Duration>,
    pub exponential_base: Option<f64>,
    pub max_delay: Option<Duration>,
    pub jitter: Option<Jitter>,
    pub max_elapsed: Option<Duration>,
    /// `budget(...)`: a retry budget shared by the dependency (a shared key, unlike the
    /// others of the group, which apply per call).
    pub budget: Option<BudgetOverrides>,
}

/// Optional retry-budget keys; giving the group at all switches the budget on, with the
/// defaults for the keys left out.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[allow(missing_docs)] // one field per key of `RetryBudgetConfig`, documented there
pub struct BudgetOverrides {
    pub ratio: Option<f64>,
    pub min_per_second: Option<u32>,
    pub window: Option<Duration>,
}

/// Optional bulkhead keys; `None` leaves the value below in force.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // one field per key of `BulkheadSettings`, documented there
pub struct BulkheadOverrides {
    pub enabled: Option<bool>,
    pub kind: Option<BulkheadKind>,
    /// Setting it (without `enabled = false`) switches the bulkhead on.
    pub max_concurrent: Option<NonZeroUsize>,
    pub max_wait: Option<Duration>,
    pub queue_capacity: Option<usize>,
    pub min_limit: Option<NonZeroUsize>,
    pub max_limit: Option<NonZeroUsize>,
}

/// Optional rate-limit keys; setting `rate` switches rate limiting on.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[allow(missing_docs)] // one field per key of `RateLimiterConfig`, documented there
pub struct RateLimitOverrides {
    pub rate: Option<f64>,
    pub burst: Option<NonZeroU32>,
    pub max_keys: Option<NonZeroUsize>,
    pub shared: Option<bool>,
}

/// Optional hedge keys; giving the group at all switches hedging on (for idempotent
/// calls), with the defaults for the keys left out.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[allow(missing_docs)] // one field per key of `HedgeConfig`, documented there
pub struct HedgeOverrides {
    pub max_attempts: Option<NonZeroU32>,
    pub delay: Option<HedgeDelay>,
}

/// Optional fault-injection keys; giving the group at all configures injection (which
/// still needs the `chaos` feature and the settings' switch).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[allow(missing_docs)] // one field per key of `ChaosConfig`, documented there
pub struct ChaosOverrides {
    pub latency: Option<Duration>,
    pub latency_rate: Option<f64>,
    pub error_rate: Option<f64>,
    pub every: Option<NonZeroU32>,
    pub max_active: Option<NonZeroUsize>,
    pub seed: Option<u64>,
}

/// A partial [`ResilienceConfig`]: what one layer (preset, registration, settings
/// entry, call site) says, leaving everything else to the layers below.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ConfigOverrides {
    /// Per-attempt timeout.
    pub timeout: Option<Duration>,
    /// Circuit-breaker keys.
    pub circuit_breaker: BreakerOverrides,
    /// Retry keys.
    pub retry: RetryOverrides,
    /// Bulkhead keys.
    pub bulkhead: BulkheadOverrides,
    /// Rate-limit keys.
    pub rate_limit: RateLimitOverrides,
    /// `hedge(...)`: hedging of idempotent calls (a shared key).
    pub hedge: Option<HedgeOverrides>,
    /// `chaos(...)`: fault injection (a shared key).
    pub chaos: Option<ChaosOverrides>,
}

impl BreakerOverrides {
    /// No key set (a `const` form of `Default`).
    pub const EMPTY: Self = Self {
        enabled: None,
        failure_threshold: None,
        failure_rate: None,
        minimum_calls: None,
        window_size: None,
        window_duration: None,
        slow_call_duration: None,
        slow_call_rate: None,
        recovery_timeout: None,
        half_open_max_calls: None,
        success_threshold: None,
        shared: None,
    };
}

impl RetryOverrides {
    /// No key set (a `const` form of `Default`).
    pub const EMPTY: Self = Self {
        enabled: None,
        max_attempts: None,
        base_delay: None,
        exponential_base: None,
        max_delay: None,
        jitter: None,
        max_elapsed: None,
        budget: None,
    };
}

impl BulkheadOverrides {
    /// No key set (a `const` form of `Default`).
    pub const EMPTY: Self = Self {
        enabled: None,
        kind: None,
        max_concurrent: None,
        max_wait: None,
        queue_capacity: None,
        min_limit: None,
        max_limit: None,
    };
}

impl RateLimitOverrides {
    /// No key set (a `const` form of `Default`).
    pub const EMPTY: Self = Self { rate: None, burst: None, max_keys: None, shared: None };
}

impl ConfigOverrides {
    /// Whether this layer sets a key that applies per call rather than to the shared
    /// instances: the timeout or any retry key.
    pub const fn sets_per_call_keys(&self) -> bool {
        let r = &self.retry;
        self.timeout.is_some()
            || r.enabled.is_some()
            || r.max_attempts.is_some()
            || r.base_delay.is_some()
            || r.exponential_base.is_some()
            || r.max_delay.is_some()
            || r.jitter.is_some()
            || r.max_elapsed.is_some()
    }

    /// This layer without the per-call keys: what may shape shared instances (the retry
    /// budget among them).
    pub const fn shared_keys(&self) -> Self {
        Self { timeout: None, retry: RetryOverrides { budget: self.retry.budget, ..RetryOverrides::EMPTY }, ..*self }
    }

    /// No key set (a `const` form of `Default`, for `static` call sites).
    pub const EMPTY: Self = Self {
        timeout: None,
        circuit_breaker: BreakerOverrides::EMPTY,
        retry: RetryOverrides::EMPTY,
        bulkhead: BulkheadOverrides::EMPTY,
        rate_limit: RateLimitOverrides::EMPTY,
        hedge: None,
        chaos: None,
    };
}

fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *target = v;
    }
}

/// Like [`set`], for a key whose value is itself optional: a layer that gives it
/// replaces it, one that does not leaves it.
fn set_some<T>(target: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *target = value;
    }
}

impl ConfigOverrides {
    /// True when this layer says nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Writes every key this layer sets into `config`.
    pub fn apply(&self, config: &mut ResilienceConfig) {
        set_some(&mut config.timeout, self.timeout);
        let (b, c) = (&self.circuit_breaker, &mut config.circuit_breaker);
        // A layer that says when to open a breaker wants one, unless it says otherwise.
        if b.failure_threshold.is_some() || b.failure_rate.is_some() || b.slow_call_duration.is_some() {
            c.enabled = true;
        }
        set(&mut c.enabled, b.enabled);
        set_some(&mut c.failure_threshold, b.failure_threshold);
        set_some(&mut c.failure_rate, b.failure_rate);
        set(&mut c.minimum_calls, b.minimum_calls);
        if let Some(size) = b.window_size {
            c.window = SlidingWindow::Count { size };
        }
        if let Some(duration) = b.window_duration {
            c.window = SlidingWindow::Time { duration };
        }
        set_some(&mut c.slow_call_duration, b.slow_call_duration);
        set_some(&mut c.slow_call_rate, b.slow_call_rate);
        set(&mut c.recovery_timeout, b.recovery_timeout);
        set_some(&mut c.half_open_max_calls, b.half_open_max_calls);
        set(&mut c.success_threshold, b.success_threshold);
        set(&mut c.shared, b.shared);

        let (r, c) = (&self.retry, &mut config.retry);
        if r.max_attempts.is_some() {
            c.enabled = true;
        }
        set(&mut c.enabled, r.enabled);
        set(&mut c.max_attempts, r.max_attempts);
        set(&mut c.base_delay, r.base_delay);
        set(&mut c.exponential_base, r.exponential_base);
        set(&mut c.max_delay, r.max_delay);
        set(&mut c.jitter, r.jitter);
        set_some(&mut c.max_elapsed, r.max_elapsed);
        if let Some(b) = r.budget {
            let budget = config.retry_budget.get_or_insert_with(RetryBudgetConfig::default);
            set(&mut budget.ratio, b.ratio);
            set(&mut budget.min_per_second, b.min_per_second);
            set(&mut budget.window, b.window);
        }

        let (k, c) = (&self.bulkhead, &mut config.bulkhead);
        if k.max_concurrent.is_some() {
            c.enabled = true;
        }
        set(&mut c.enabled, k.enabled);
        if k.kind == Some(BulkheadKind::Adaptive) && c.kind != BulkheadKind::Adaptive && k.max_concurrent.is_none() {
            // Switching to an adaptive bulkhead without a starting limit: its own default.
            c.max_concurrent = NonZeroUsize::new(resilience_rules::DEFAULT_ADAPTIVE_LIMIT).unwrap_or(NonZeroUsize::MIN);
        }
        set(&mut c.kind, k.kind);
        set(&mut c.max_concurrent, k.max_concurrent);
        set(&mut c.min_limit, k.min_limit);
        set(&mut c.max_limit, k.max_limit);
        set(&mut c.max_wait, k.max_wait);
        set(&mut c.queue_capacity, k.queue_capacity);

        let l = &self.rate_limit;
        if let Some(rate) = l.rate {
            config.rate_limit.get_or_insert_with(RateLimiterConfig::default).rate = rate;
        }
        if let Some(limit) = config.rate_limit.as_mut() {
            set(&mut limit.burst, l.burst);
            set(&mut limit.max_keys, l.max_keys);
            set(&mut limit.shared, l.shared);
        }
        if let Some(h) = self.hedge {
            let hedge = config.hedge.get_or_insert_with(HedgeConfig::default);
            set(&mut hedge.max_attempts, h.max_attempts);
            set(&mut hedge.delay, h.delay);
        }
        if let Some(o) = self.chaos {
            let chaos = config.chaos.get_or_insert_with(ChaosConfig::default);
            set_some(&mut chaos.latency, o.latency);
            set(&mut chaos.latency_rate, o.latency_rate);
            set(&mut chaos.error_rate, o.error_rate);
            set_some(&mut chaos.every, o.every);
            set_some(&mut chaos.max_active, o.max_active);
            set_some(&mut chaos.seed, o.seed);
        }
    }
}
