//! The one error the policies produce, and the error for invalid configuration.

use std::sync::Arc;
use std::time::Duration;

/// Why a protected call did not produce the body's own result.
///
/// Every variant names the dependency it concerns ([`ResilienceError::name`]). A call
/// site's error type receives these through `E: From<ResilienceError>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResilienceError {
    /// Rejected without running the body: the breaker is open, forced open, or half-open
    /// with all of its trial calls taken.
    #[error("circuit breaker of `{name}` is open")]
    #[non_exhaustive]
    CircuitOpen {
        /// The dependency.
        name: Arc<str>,
        /// How long until the breaker lets a trial call through, when known.
        retry_after: Option<Duration>,
    },
    /// No bulkhead permit (or thread-pool queue slot) became free within `max_wait`.
    #[error("bulkhead of `{name}` is full ({max_concurrent} concurrent calls)")]
    #[non_exhaustive]
    BulkheadFull {
        /// The dependency.
        name: Arc<str>,
        /// The bulkhead's limit at the time of the rejection.
        max_concurrent: usize,
    },
    /// The attempt outlived its timeout.
    #[error("call to `{name}` timed out after {timeout:?}")]
    #[non_exhaustive]
    Timeout {
        /// The dependency.
        name: Arc<str>,
        /// The per-attempt timeout that elapsed.
        timeout: Duration,
    },
    /// Rejected by a rate limiter.
    #[error("call to `{name}` was rate limited; retry after {retry_after:?}")]
    #[non_exhaustive]
    RateLimited {
        /// The dependency.
        name: Arc<str>,
        /// The earliest time at which the same call would be admitted.
        retry_after: Duration,
    },
    /// Failed on purpose by the dependency's `chaos` settings (fault injection): a
    /// failure like any other, recorded by the breaker and retried.
    #[error("call to `{name}` failed by fault injection")]
    #[non_exhaustive]
    Injected {
        /// The dependency.
        name: Arc<str>,
    },
}

impl ResilienceError {
    /// The name of the dependency that produced this error.
    pub fn name(&self) -> &str {
        match self {
            Self::CircuitOpen { name, .. }
            | Self::BulkheadFull { name, .. }
            | Self::Timeout { name, .. }
            | Self::RateLimited { name, .. }
            | Self::Injected { name } => name,
        }
    }

    /// True for the errors that reject a call without running its body (open breaker,
    /// full bulkhead, rate limit). Rejections are never retried and never recorded by a
    /// circuit breaker.
    pub fn is_rejection(&self) -> bool {
        !matches!(self, Self::Timeout { .. } | Self::Injected { .. })
    }

    /// How long a caller should wait before trying again, when the policy knows.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::CircuitOpen { retry_after, .. } => *retry_after,
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            Self::BulkheadFull { .. } | Self::Timeout { .. } | Self::Injected { .. } => None,
        }
    }

    pub(crate) fn circuit_open(name: &Arc<str>, retry_after: Option<Duration>) -> Self {
        Self::CircuitOpen { name: Arc::clone(name), retry_after }
    }

    pub(crate) fn bulkhead_full(name: &Arc<str>, max_concurrent: usize) -> Self {
        Self::BulkheadFull { name: Arc::clone(name), max_concurrent }
    }

    pub(crate) fn timeout(name: &Arc<str>, timeout: Duration) -> Self {
        Self::Timeout { name: Arc::clone(name), timeout }
    }

    #[cfg_attr(not(feature = "chaos"), allow(dead_code))]
    pub(crate) fn injected(name: &Arc<str>) -> Self {
        Self::Injected { name: Arc::clone(name) }
    }

    pub(crate) fn rate_limited(name: &Arc<str>, retry_after: Duration) -> Self {
        Self::RateLimited { name: Arc::clone(name), retry_after }
    }
}

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A key holds a value outside its valid range, or contradicts another key.
    #[error("invalid `{key}`: {message}")]
    #[non_exhaustive]
    Invalid {
        /// The key path, such as `circuit_breaker.failure_threshold`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A settings file could not be read.
    #[error("cannot read settings file `{file}`: {message}")]
    #[non_exhaustive]
    Io {
        /// The file.
        file: String,
        /// The operating system's reason.
        message: String,
    },
    /// A settings file is not valid YAML.
    #[error("{file}:{line}:{column}: invalid YAML: {message}")]
    #[non_exhaustive]
    Syntax {
        /// The file (`<string>` for text given directly).
        file: String,
        /// The line (1-based).
        line: usize,
        /// The column (1-based).
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// A settings file has a key the schema does not know.
    #[error("{location}: unknown key `{key}`{}", suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    #[non_exhaustive]
    UnknownKey {
        /// Where: `file:line`, or the file and the environment variable.
        location: String,
        /// The full key path.
        key: String,
        /// The closest known key, when one is close.
        suggestion: Option<String>,
    },
    /// A settings value is malformed or out of range.
    #[error("{location}: invalid `{key}`: {message}")]
    #[non_exhaustive]
    InvalidValue {
        /// Where: `file:line`, or the file and the environment variable.
        location: String,
        /// The full key path.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The environment section asked for does not exist.
    #[error("{file}: no environment section `{name}`; the file has: {available}")]
    #[non_exhaustive]
    UnknownEnvironment {
        /// The file.
        file: String,
        /// The environment asked for.
        name: String,
        /// The sections the file has.
        available: String,
    },
}

impl ConfigError {
    /// The key path the error is about, when it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } | Self::UnknownKey { key, .. } | Self::InvalidValue { key, .. } => Some(key),
            _ => None,
        }
    }

    /// An error about the value of `key` (a key path such as
    /// `shared_state.redis_url`), for configuration checked outside a settings file.
    pub fn invalid(key: &str, message: impl Into<String>) -> Self {
        Self::Invalid { key: key.to_owned(), message: message.into() }
    }

    /// A shared rule's verdict on the value of `key` (see `resilience-rules`).
    pub fn check(key: &str, verdict: resilience_rules::Verdict) -> Result<(), Self> {
        verdict.map_err(|message| Self::invalid(key, message))
    }

    /// The same error found in environment section `section` of a settings file: its
    /// key path starts with the section's name.
    pub(crate) fn in_section(self, section: &str) -> Self {
        match self {
            Self::UnknownKey { location, key, suggestion } => {
                Self::UnknownKey { location, key: format!("{section}.{key}"), suggestion }
            }
            Self::InvalidValue { location, key, message } => {
                Self::InvalidValue { location, key: format!("{section}.{key}"), message }
            }
            other => other,
        }
    }
}
