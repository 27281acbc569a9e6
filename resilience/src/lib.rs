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

pub use resilience_core::*;
pub use resilience_macros::{
    api_call, cache_call, database_call, file_system_call, message_queue_call, register_api_dependency,
    register_cache_dependency, register_database_dependency, register_file_system_dependency,
    register_message_queue_dependency, resilience_pattern, resilient,
};

#[cfg(feature = "tower")]
pub mod tower;

/// What the attribute macros expand to. Not a public API: it may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use resilience_core::macro_support::*;
    pub use resilience_core::{
        BreakerOverrides, BulkheadKind, BulkheadOverrides, ConfigOverrides, DependencyKind, ErrorPolicy, Jitter,
        RateLimitOverrides, ResilienceError, RetryOverrides,
    };
    pub use std::time::Duration;
}
