//! Strategies and dependency types: their presets, as data (tables on
//! [`ResilienceStrategy`] and [`DependencyType`]).

use std::fmt;
use std::num::{NonZeroU32, NonZeroUsize};
use std::str::FromStr;
use std::time::Duration;

use crate::config::{BreakerOverrides, BulkheadKind, BulkheadOverrides, ConfigOverrides, RetryOverrides};

/// How a call is protected when its dependency was never registered with a type.
///
/// | strategy | timeout | breaker opens after | retry attempts / base delay | bulkhead |
/// |---|---|---|---|---|
/// | `InternalService` (`Internal`) | 10 s | 3 failures | 3 / 50 ms | 100 |
/// | `ExternalService` (`External`) | 30 s | 5 failures | 5 / 1 s | 25 |
/// | `Database` | 5 s | 3 failures | 2 / 100 ms | 200 |
/// | `Cache` | 2 s | 20 failures | 2 / 10 ms | none |
///
/// Each over the global defaults: breaker window of 100 calls, 60 s open, 2 successes
/// to close; retry delays doubling up to 30 s; no rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResilienceStrategy {
    /// Calls to services of the same system: 10 s timeout, breaker after 3 failures,
    /// 3 attempts from 50 ms, bulkhead of 100.
    InternalService,
    /// Calls to third parties: 30 s, 5 failures, 5 attempts from 1 s, bulkhead of 25.
    ExternalService,
    /// Database calls: 5 s, 3 failures, 2 attempts from 100 ms, bulkhead of 200.
    Database,
    /// Cache calls: 2 s, 20 failures, 2 attempts from 10 ms, no bulkhead.
    Cache,
}

/// The kind of a registered dependency, which picks its preset.
///
/// | type | max_concurrent | timeout | breaker | bulkhead kind |
/// |---|---|---|---|---|
/// | `Database` | 10 | 10 s | on (5 failures) | semaphore |
/// | `ExternalApi` | 15 | 15 s | on, strict (3 failures) | semaphore |
/// | `Cache` | 50 | 2 s | off | semaphore |
/// | `MessageQueue` | 20 | 10 s | on (5 failures) | semaphore |
/// | `FileSystem` | 8 | 30 s | on (5 failures) | thread_pool |
///
/// Each over the global defaults (3 attempts from 1 s, doubling; 60 s open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DependencyType {
    /// 10 concurrent calls, 10 s timeout, breaker after 5 failures, semaphore bulkhead.
    Database,
    /// 15 concurrent calls, 15 s timeout, strict breaker (3 failures), semaphore bulkhead.
    ExternalApi,
    /// 50 concurrent calls, 2 s timeout, no breaker, semaphore bulkhead.
    Cache,
    /// 20 concurrent calls, 10 s timeout, breaker after 5 failures, semaphore bulkhead.
    MessageQueue,
    /// 8 concurrent calls, 30 s timeout, breaker after 5 failures, thread-pool bulkhead.
    FileSystem,
}

fn nz(n: u32) -> Option<NonZeroU32> {
    NonZeroU32::new(n)
}

fn nzu(n: usize) -> Option<NonZeroUsize> {
    NonZeroUsize::new(n)
}

impl ResilienceStrategy {
    /// Every strategy.
    pub const ALL: [Self; 4] = [Self::InternalService, Self::ExternalService, Self::Database, Self::Cache];

    /// The variant's name, as code (and the macros) write it.
    fn code_name(self) -> &'static str {
        match self {
            Self::InternalService => "InternalService",
            Self::ExternalService => "ExternalService",
            Self::Database => "Database",
            Self::Cache => "Cache",
        }
    }

    /// The snake-case name used in settings files (`internal_service`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InternalService => "internal_service",
            Self::ExternalService => "external_service",
            Self::Database => "database",
            Self::Cache => "cache",
        }
    }

    /// The preset, as overrides of the global defaults.
    pub fn preset(self) -> ConfigOverrides {
        let (timeout, attempts, base_ms, bulkhead) = match self {
            Self::InternalService => (10, 3, 50, Some(100)),
            Self::ExternalService => (30, 5, 1_000, Some(25)),
            Self::Database => (5, 2, 100, Some(200)),
            Self::Cache => (2, 2, 10, None),
        };
        // Shared with the macros, which check a call site's window against it.
        let failures = resilience_rules::strategy_failure_threshold(self.code_name()).unwrap_or(0);
        ConfigOverrides {
            timeout: Some(Duration::from_secs(timeout)),
            circuit_breaker: BreakerOverrides { failure_threshold: nz(failures), ..Default::default() },
            retry: RetryOverrides {
                max_attempts: nz(attempts),
                base_delay: Some(Duration::from_millis(base_ms)),
                ..Default::default()
            },
            bulkhead: BulkheadOverrides {
                enabled: Some(bulkhead.is_some()),
                max_concurrent: bulkhead.and_then(nzu),
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

impl DependencyType {
    /// Every dependency type.
    pub const ALL: [Self; 5] = [Self::Database, Self::ExternalApi, Self::Cache, Self::MessageQueue, Self::FileSystem];

    /// The variant's name, as code (and the macros) write it.
    fn code_name(self) -> &'static str {
        match self {
            Self::Database => "Database",
            Self::ExternalApi => "ExternalApi",
            Self::Cache => "Cache",
            Self::MessageQueue => "MessageQueue",
            Self::FileSystem => "FileSystem",
        }
    }

    /// The snake-case name used in settings files (`database`, `external_api`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Database => "database",
            Self::ExternalApi => "external_api",
            Self::Cache => "cache",
            Self::MessageQueue => "message_queue",
            Self::FileSystem => "file_system",
        }
    }

    /// The preset, as overrides of the global defaults.
    pub fn preset(self) -> ConfigOverrides {
        let (max_concurrent, timeout, kind) = match self {
            Self::Database => (10, 10, BulkheadKind::Semaphore),
            Self::ExternalApi => (15, 15, BulkheadKind::Semaphore),
            Self::Cache => (50, 2, BulkheadKind::Semaphore),
            Self::MessageQueue => (20, 10, BulkheadKind::Semaphore),
            Self::FileSystem => (8, 30, BulkheadKind::ThreadPool),
        };
        // Shared with the macros, which check a call site's window against it.
        let breaker = resilience_rules::type_failure_threshold(self.code_name());
        ConfigOverrides {
            timeout: Some(Duration::from_secs(timeout)),
            circuit_breaker: BreakerOverrides {
                enabled: Some(breaker.is_some()),
                failure_threshold: breaker.and_then(nz),
                ..Default::default()
            },
            bulkhead: BulkheadOverrides {
                enabled: Some(true),
                kind: Some(kind),
                max_concurrent: nzu(max_concurrent),
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

/// An unknown strategy or dependency type name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{name}`; expected one of: {expected}")]
pub struct UnknownName {
    what: &'static str,
    name: String,
    expected: String,
}

impl FromStr for ResilienceStrategy {
    type Err = UnknownName;

    /// Accepts the settings names and the short forms of the attribute macros
    /// (`internal`, `Internal`, `InternalService`, `internal_service`, …).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key: String = s.chars().filter(|c| *c != '_').flat_map(char::to_lowercase).collect();
        match key.as_str() {
            "internal" | "internalservice" => Ok(Self::InternalService),
            "external" | "externalservice" => Ok(Self::ExternalService),
            "database" => Ok(Self::Database),
            "cache" => Ok(Self::Cache),
            _ => Err(UnknownName {
                what: "strategy",
                name: s.to_owned(),
                expected: Self::ALL.map(Self::as_str).join(", "),
            }),
        }
    }
}

impl FromStr for DependencyType {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| UnknownName {
            what: "dependency type",
            name: s.to_owned(),
            expected: Self::ALL.map(Self::as_str).join(", "),
        })
    }
}

impl fmt::Display for ResilienceStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for DependencyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
