//! The runtime of the `resilience` framework: every policy, usable on its own or
//! composed in a [`Pipeline`].
//!
//! Most users depend on the `resilience` facade, which re-exports this crate.
//!
//! | policy | type | rejects with |
//! |---|---|---|
//! | circuit breaker | [`CircuitBreaker`] | [`ResilienceError::CircuitOpen`] |
//! | retry | [`Retry`] | (the last attempt's error) |
//! | timeout | [`Timeout`] | [`ResilienceError::Timeout`] |
//! | semaphore bulkhead | [`SemaphoreBulkhead`] | [`ResilienceError::BulkheadFull`] |
//! | thread-pool bulkhead | [`ThreadPoolBulkhead`] | [`ResilienceError::BulkheadFull`] |
//! | adaptive bulkhead (limit learned from latency) | [`AdaptiveBulkhead`] | [`ResilienceError::BulkheadFull`] |
//! | rate limiter | [`RateLimiter`], [`KeyedRateLimiter`] | [`ResilienceError::RateLimited`] |
//! | fallback | [`Fallback`] | (the fallback's result) |
//!
//! All time on the async path comes from `tokio::time`, so tests with a paused tokio
//! clock are exact and instant.

pub mod bulkhead;
pub mod chaos;
pub mod circuit_breaker;
mod clock;
pub mod config;
mod deadline;
mod error;
mod fallback;
pub mod hedge;
mod leak;
pub mod lend;
#[doc(hidden)]
pub mod macro_support;
mod manager;
mod observe;
mod offload;
mod pipeline;
mod preset;
pub mod rate_limit;
mod reclaim;
pub mod registry;
pub mod retry;
mod settings;
pub mod shared;
mod stripe;
mod sync;
mod timeout;

pub use bulkhead::{
    AdaptiveBulkhead, AdaptiveBulkheadConfig, AdaptiveState, Bulkhead, BulkheadPermit, OwnedBulkheadPermit,
    SemaphoreBulkhead, SemaphoreBulkheadConfig, ThreadPoolBulkhead, ThreadPoolBulkheadConfig,
};
pub use chaos::ChaosConfig;
pub use circuit_breaker::{
    BreakerCall, CallPermit, CircuitBreaker, CircuitBreakerConfig, CircuitBreakerMetrics, CircuitState, SlidingWindow,
    StateTransition, TransitionReason,
};
pub use config::{
    BreakerOverrides, BudgetOverrides, BulkheadKind, BulkheadOverrides, BulkheadSettings, ChaosOverrides,
    ConfigOverrides, HedgeOverrides, RateLimitOverrides, ResilienceConfig, RetryOverrides,
};
pub use error::{ConfigError, ResilienceError};
pub use fallback::Fallback;
pub use hedge::{Hedge, HedgeConfig, HedgeDelay, HedgedCall};
pub use lend::{Lender, Loan, Replicated};
pub use manager::{
    manager, resilient_cache_call, resilient_database_call, resilient_external_call, resilient_internal_call,
    ResilienceManager,
};
pub use observe::aggregate;
pub use observe::health::{
    register_pool_reporter, Alert, AlertKind, DependencyHealth, HealthReport, HealthStatus, PoolHealth, PoolReporter,
    Severity,
};
pub use pipeline::{call_attempts, ErrorPolicy, MakeAttempt, Pipeline, PipelineBuilder};
pub use pipeline::{Idempotent, PipelineCall, PipelineRef};
pub use preset::{DependencyType, ResilienceStrategy, UnknownName};
pub use rate_limit::{KeyedRateLimiter, Quota, RateLimiter, RateLimiterConfig};
pub use registry::{
    health, registry, set_registry, Defaults, Dependency, DependencyKind, DependencySnapshot, Registry,
};
pub use retry::{Backoff, Jitter, Retry, RetryBudget, RetryBudgetConfig, RetryConfig};
pub use settings::{
    init, parse_duration, reload, SectionFn, SectionValue, Settings, SettingsSection, ENVIRONMENT_VARIABLE,
    OVERRIDE_PREFIX, SETTINGS_SECTIONS,
};
pub use timeout::{Timeout, TimeoutFuture};
