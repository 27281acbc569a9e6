//! Circuit breakers, retries with backoff, timeouts, semaphore and thread-pool
//! bulkheads, rate limiting and fallbacks for Rust services.
//!
//! This is the facade: depend on `resilience` alone. Most services annotate functions:
//! [`macro@resilient`] (a strategy's preset), [`macro@resilience_pattern`] (exactly the
//! policies named), or [`macro@database_call`], [`macro@api_call`], [`macro@cache_call`],
//! [`macro@message_queue_call`] and [`macro@file_system_call`] (a named dependency of that
//! type, configured at start-up with [`register_database_dependency!`] and its siblings
//! or a settings file). Every key is checked when the code compiles.
//!
//! Every policy is also usable on its own
//! ([`CircuitBreaker`], [`Retry`], [`Timeout`], [`SemaphoreBulkhead`],
//! [`ThreadPoolBulkhead`], [`RateLimiter`], [`Fallback`]) and together through a
//! [`Pipeline`], which applies them in the order
//! `Fallback(Retry(CircuitBreaker(RateLimiter(Bulkhead(Timeout(call))))))`.
//!
//! ```no_run
//! use resilience::{Pipeline, ResilienceError};
//! use std::time::Duration;
//!
//! #[derive(Debug)]
//! enum AppError { Http(String), Resilience(ResilienceError) }
//! impl From<ResilienceError> for AppError {
//!     fn from(e: ResilienceError) -> Self { AppError::Resilience(e) }
//! }
//!
//! # async fn fetch() -> Result<String, AppError> { Ok(String::new()) }
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let pipeline = Pipeline::builder("inventory")
//!     .timeout(Duration::from_secs(2))
//!     .retry(Default::default())
//!     .circuit_breaker(Default::default())
//!     .bulkhead(Default::default())
//!     .build()?;
//! let body = pipeline.call(|| fetch()).await;
//! # Ok(()) }
//! ```
//!
//! # Metrics
//!
//! Recorded through the [`metrics`](https://docs.rs/metrics) facade, so any exporter
//! works; handles are made when a policy is built, so a call hashes no label. Names in
//! Prometheus form, each labelled with the dependency's `name`:
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `resilience_circuitbreaker_calls_total` | `kind` = `successful`, `failed`, `ignored`, `not_permitted` | calls through a breaker |
//! | `resilience_circuitbreaker_state` | `state` | 1 for the state it is in, 0 for the others |
//! | `resilience_circuitbreaker_failure_rate` | | percentage of failures in the window |
//! | `resilience_circuitbreaker_transitions_total` | `from`, `to` | state changes |
//! | `resilience_retry_calls_total` | `kind` = `successful_without_retry`, `successful_with_retry`, `failed_without_retry`, `failed_with_retry` | calls through a retry |
//! | `resilience_bulkhead_available_concurrent_calls` | | free bulkhead slots |
//! | `resilience_bulkhead_max_allowed_concurrent_calls` | | the bulkhead's limit |
//! | `resilience_bulkhead_rejected_total` | | calls a full bulkhead refused |
//! | `resilience_timelimiter_calls_total` | `kind` = `successful`, `failed`, `timeout` | attempts under a timeout |
//! | `resilience_ratelimiter_calls_total` | `kind` = `permitted`, `rejected` | rate-limit checks |
//! | `resilience_call_duration_seconds` | | sampled durations of calls that waited |
//! | `resilience_adaptive_limit` | | an adaptive bulkhead's learned limit |
//! | `resilience_adaptive_in_flight` | | calls holding a slot of an adaptive bulkhead |
//! | `resilience_adaptive_baseline_seconds` | | an adaptive bulkhead's estimate of the unloaded round trip |
//! | `resilience_retry_budget_remaining` | | retries a retry budget allows now |
//! | `resilience_retry_budget_exhausted_total` | | retries a retry budget refused |
//! | `resilience_hedge_attempts_total` | `kind` = `primary`, `hedge` | attempts of hedged calls |
//! | `resilience_hedge_won_total` | | hedged calls a hedge answered first |
//! | `resilience_hedge_losers_dropped_total` | | attempts dropped because another answered first |
//! | `resilience_hedge_suppressed_total` | | hedges the retry budget refused |
//! | `resilience_chaos_injected_total` | `kind` = `latency`, `error` | faults injected (feature `chaos`) |
//! | `resilience_shared_state_healthy` | (none) | 1 while shared state on Redis is in force, 0 while degraded (feature `shared-state`) |
//! | `resilience_shared_state_exchanges_total` | `kind` = `ok`, `failed` (no `name`) | exchanges with Redis of the shared-state task |
//! | `resilience_shared_limit_leased_total` | | tokens a shared rate limit leased from the fleet's limit |
//!
//! Gauges that follow a value (breaker state and failure rate, free slots) are set by
//! [`Registry::refresh_gauges`], which an exporter calls before it renders. Once
//! [`aggregate::enable`] is called (`prometheus::install()` does), the counters every call
//! touches and the duration histograms count per thread, and reach the exporter at
//! [`aggregate::flush`], which an exporter also calls before it renders.

pub use resilience_core::*;
pub use resilience_macros::{
    api_call, cache_call, database_call, file_system_call, message_queue_call, register_api_dependency,
    register_cache_dependency, register_database_dependency, register_file_system_dependency,
    register_message_queue_dependency, resilience_pattern, resilient,
};

#[cfg(feature = "tower")]
pub mod tower;

#[cfg(any(feature = "http", feature = "postgres", feature = "redis"))]
mod pool;
#[cfg(feature = "prometheus")]
pub mod prometheus;
#[cfg(feature = "reqwest")]
pub mod reqwest;
#[cfg(feature = "shared-state")]
pub mod shared_state;
#[cfg(feature = "axum")]
pub mod web;
#[cfg(any(feature = "http", feature = "postgres", feature = "redis"))]
pub use pool::{
    initialize_pools, pool_manager, pools_from_settings, HealthCheckConfig, PoolCheck, PoolConfig, PoolError,
    PoolHealthChecker, PoolKind, PoolManager, PoolType,
};
#[cfg(feature = "http")]
pub use pool::{install_crypto_provider, HttpPool, HttpPoolConfig, HttpResponse};
#[cfg(feature = "postgres")]
pub use pool::{
    PostgresConnection, PostgresPool, PostgresPoolConfig, Row as PostgresRow, ToSql, Transaction, TransactionError,
};
#[cfg(feature = "redis")]
pub use pool::{RedisPool, RedisPoolConfig};
#[cfg(feature = "loadtest")]
pub mod loadtest;
#[cfg(feature = "loadtest")]
pub use loadtest::{
    create_resilience_test_scenarios, write_html_report, BreakerSample, Drift, Knee, LatencySummary, LoadTestError,
    LoadTestResults, LoadTestScenario, LoadTestSuite, LoadTestType, LoadTester, Progress, TimelinePoint,
    UnknownLoadTestType, Validation,
};
#[cfg(feature = "axum")]
pub use web::{ClientKey, MiddlewareConfig, MiddlewareConfigError, RateLimitConfig, ResilienceLayer};

/// What the attribute macros expand to. Not a public API: it may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use resilience_core::macro_support::*;
    pub use resilience_core::{
        BreakerOverrides, BudgetOverrides, BulkheadKind, BulkheadOverrides, ChaosOverrides, ConfigOverrides,
        DependencyKind, ErrorPolicy, HedgeOverrides, Jitter, RateLimitOverrides, ResilienceError, RetryOverrides,
    };
    pub use std::time::Duration;
}
