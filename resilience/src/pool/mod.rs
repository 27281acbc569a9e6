//! Connection pools and the pool manager (features `http`, `redis` and `postgres`).
//!
//! A pool is a client of a dependency, under the dependency's name: every operation goes
//! through that dependency's policies (breaker, retry, rate limiter, bulkhead, timeout),
//! configured like any other dependency (a registration macro, a settings file, or the
//! type's preset: `ExternalApi` for HTTP pools unless the pool names another type).
//! Creating a pool never replaces a dependency's configuration.
//!
//! ```no_run
//! use resilience::{initialize_pools, pool_manager, HttpPoolConfig, PoolConfig};
//!
//! # async fn run() -> Result<(), resilience::PoolError> {
//! initialize_pools(vec![PoolConfig::http(
//!     "inventory",
//!     HttpPoolConfig { base_url: Some("http://127.0.0.1:8080".into()), ..Default::default() },
//! )])
//! .await?;
//! let response = pool_manager().http("inventory")?.get("/items/7").await?;
//! assert!(response.status().is_success());
//! # Ok(()) }
//! ```

mod health;
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
mod settings;
mod state;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{LazyLock, Once, RwLock};

pub use health::{HealthCheckConfig, PoolCheck, PoolHealthChecker};
#[cfg(feature = "reqwest")]
pub(crate) use http::is_idempotent;
#[cfg(feature = "http")]
pub use http::{install_crypto_provider, HttpPool, HttpPoolConfig, HttpResponse};
#[cfg(feature = "postgres")]
pub use postgres::{PostgresConnection, PostgresPool, PostgresPoolConfig, Row, ToSql, Transaction, TransactionError};
#[cfg(feature = "redis")]
pub use redis::{RedisPool, RedisPoolConfig};
use resilience_core::{DependencyType, PoolHealth, PoolReporter, ResilienceError};
pub use settings::pools_from_settings;

/// What a pool pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PoolType {
    /// HTTP connections (`HttpPool`, feature `http`).
    Http,
    /// PostgreSQL connections (`PostgresPool`, feature `postgres`).
    Postgres,
    /// Redis connections (`RedisPool`, feature `redis`).
    Redis,
}

impl PoolType {
    /// The lower-case name (`http`, `postgres`, `redis`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Postgres => "postgres",
            Self::Redis => "redis",
        }
    }
}

impl fmt::Display for PoolType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One pool to create with [`initialize_pools`].
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// The pool's name, which is also its dependency's name.
    pub name: String,
    /// The preset of the pool's dependency when nothing else configures it: `None` for
    /// the pool type's own (`ExternalApi` for HTTP).
    pub dependency_type: Option<DependencyType>,
    /// What kind of pool, with its settings.
    pub kind: PoolKind,
}

/// A pool's kind and settings.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PoolKind {
    /// An HTTP pool.
    #[cfg(feature = "http")]
    Http(HttpPoolConfig),
    /// A PostgreSQL pool.
    #[cfg(feature = "postgres")]
    Postgres(PostgresPoolConfig),
    /// A Redis pool.
    #[cfg(feature = "redis")]
    Redis(RedisPoolConfig),
}

impl PoolConfig {
    /// An HTTP pool named `name`.
    #[cfg(feature = "http")]
    pub fn http(name: impl Into<String>, config: HttpPoolConfig) -> Self {
        Self { name: name.into(), dependency_type: None, kind: PoolKind::Http(config) }
    }

    /// A Redis pool named `name`.
    #[cfg(feature = "redis")]
    pub fn redis(name: impl Into<String>, config: RedisPoolConfig) -> Self {
        Self { name: name.into(), dependency_type: None, kind: PoolKind::Redis(config) }
    }

    /// A PostgreSQL pool named `name`.
    #[cfg(feature = "postgres")]
    pub fn postgres(name: impl Into<String>, config: PostgresPoolConfig) -> Self {
        Self { name: name.into(), dependency_type: None, kind: PoolKind::Postgres(config) }
    }

    /// This pool, with its dependency getting `dependency_type`'s preset.
    pub fn with_dependency_type(mut self, dependency_type: DependencyType) -> Self {
        self.dependency_type = Some(dependency_type);
        self
    }

    /// What kind of pool this is.
    pub fn pool_type(&self) -> PoolType {
        match self.kind {
            #[cfg(feature = "http")]
            PoolKind::Http(_) => PoolType::Http,
            #[cfg(feature = "postgres")]
            PoolKind::Postgres(_) => PoolType::Postgres,
            #[cfg(feature = "redis")]
            PoolKind::Redis(_) => PoolType::Redis,
        }
    }
}

/// Why a pool operation failed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PoolError {
    /// The dependency's policies refused or cut short the call: open breaker, full
    /// bulkhead (also the pool's own connection limits after `max_wait`), rate limit,
    /// timeout.
    Rejected {
        /// The pool.
        pool: String,
        /// What the policies said.
        error: ResilienceError,
    },
    /// The request did not get an answer: the connection was refused or reset, TLS
    /// failed, the body could not be read.
    Transport {
        /// The pool.
        pool: String,
        /// What went wrong, as the client said it.
        message: String,
    },
    /// The answer's body is not what was asked for (`json`).
    Body {
        /// The pool.
        pool: String,
        /// Why it could not be read.
        message: String,
    },
    /// A request could not be built (a bad URL, a relative URL without `base_url`).
    Request {
        /// The pool.
        pool: String,
        /// Why.
        message: String,
    },
    /// A pool's configuration cannot be used.
    Config {
        /// The pool.
        pool: String,
        /// Why.
        message: String,
    },
    /// No pool has this name.
    Unknown {
        /// The name asked for.
        pool: String,
        /// The pools there are.
        known: Vec<String>,
    },
    /// The database refused a statement (a syntax error, a violated constraint): the
    /// caller's error, not the server's failure.
    #[cfg(feature = "postgres")]
    Database {
        /// The pool.
        pool: String,
        /// What the database said (`as_db_error()` gives its SQLSTATE and message).
        error: std::sync::Arc<tokio_postgres::Error>,
    },
    /// Redis refused a command (`WRONGTYPE`, a bad argument) or its answer did not
    /// convert to the type asked for: the caller's error, not the server's failure.
    #[cfg(feature = "redis")]
    Redis {
        /// The pool.
        pool: String,
        /// What redis-rs said.
        error: std::sync::Arc<::redis::RedisError>,
    },
    /// The pool exists but is of another kind.
    WrongKind {
        /// The pool.
        pool: String,
        /// What the caller asked for.
        expected: PoolType,
        /// What it is.
        actual: PoolType,
    },
    /// A pool of this name exists already (pools are never replaced).
    Duplicate {
        /// The pool.
        pool: String,
    },
}

impl PoolError {
    /// The pool the error is about.
    pub fn pool(&self) -> &str {
        match self {
            Self::Rejected { pool, .. }
            | Self::Transport { pool, .. }
            | Self::Body { pool, .. }
            | Self::Request { pool, .. }
            | Self::Config { pool, .. }
            | Self::Unknown { pool, .. }
            | Self::WrongKind { pool, .. }
            | Self::Duplicate { pool } => pool,
            #[cfg(feature = "postgres")]
            Self::Database { pool, .. } => pool,
            #[cfg(feature = "redis")]
            Self::Redis { pool, .. } => pool,
        }
    }

    /// The policies' error, when they rejected or timed out the call.
    pub fn resilience(&self) -> Option<&ResilienceError> {
        match self {
            Self::Rejected { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected { pool, error } => write!(f, "pool `{pool}`: {error}"),
            Self::Transport { pool, message } => write!(f, "pool `{pool}`: request failed: {message}"),
            Self::Body { pool, message } => write!(f, "pool `{pool}`: unexpected answer body: {message}"),
            Self::Request { pool, message } => write!(f, "pool `{pool}`: bad request: {message}"),
            Self::Config { pool, message } => write!(f, "pool `{pool}`: invalid configuration: {message}"),
            Self::Unknown { pool, known } if known.is_empty() => {
                write!(f, "no pool `{pool}`: no pool was initialised (see `initialize_pools`)")
            }
            Self::Unknown { pool, known } => write!(f, "no pool `{pool}`; the pools are: {}", known.join(", ")),
            Self::WrongKind { pool, expected, actual } => {
                write!(f, "pool `{pool}` is of kind `{actual}`, not `{expected}`")
            }
            Self::Duplicate { pool } => write!(f, "a pool `{pool}` exists already; pools are never replaced"),
            #[cfg(feature = "postgres")]
            Self::Database { pool, error } => match error.as_db_error() {
                Some(db) => write!(
                    f,
                    "pool `{pool}`: the database refused the statement: {} ({})",
                    db.message(),
                    db.code().code()
                ),
                None => write!(f, "pool `{pool}`: {error}"),
            },
            #[cfg(feature = "redis")]
            Self::Redis { pool, error } => write!(f, "pool `{pool}`: redis refused the command: {error}"),
        }
    }
}

impl std::error::Error for PoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Rejected { error, .. } => Some(error),
            #[cfg(feature = "postgres")]
            Self::Database { error, .. } => Some(&**error),
            #[cfg(feature = "redis")]
            Self::Redis { error, .. } => Some(&**error),
            _ => None,
        }
    }
}

/// A pool's configuration error.
/// The call of `attempt` through `pipeline`: hedged when `idempotent` and the pipeline
/// hedges, each attempt also limited to `limit` when one is given (the shorter of it and
/// the pipeline's timeout). One future type whichever the form, so an operation's `async
/// fn` holds one call's future, not one per form.
fn call_through<'a, T, E, F, Fut>(
    pipeline: &'a resilience_core::Pipeline,
    policy: &resilience_core::ErrorPolicy<E>,
    idempotent: bool,
    limit: Option<std::time::Duration>,
    attempt: F,
) -> resilience_core::Idempotent<'a, E, F, Fut>
where
    F: FnMut() -> Fut + Clone,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: From<ResilienceError>,
{
    use resilience_core::Idempotent;
    match (idempotent, limit) {
        (true, None) => pipeline.call_idempotent_with(policy, attempt),
        (true, Some(limit)) => pipeline.call_idempotent_within(policy, limit, attempt),
        (false, None) => Idempotent::Plain { call: pipeline.call_with(policy, attempt) },
        (false, Some(limit)) => Idempotent::Plain { call: pipeline.call_within(policy, limit, attempt) },
    }
}

fn config_error(pool: &str, message: impl fmt::Display) -> PoolError {
    PoolError::Config { pool: pool.to_owned(), message: message.to_string() }
}

impl From<ResilienceError> for PoolError {
    fn from(error: ResilienceError) -> Self {
        Self::Rejected { pool: error.name().to_owned(), error }
    }
}

/// One pool of the manager.
#[derive(Debug, Clone)]
enum Pool {
    #[cfg(feature = "http")]
    Http(HttpPool),
    #[cfg(feature = "postgres")]
    Postgres(PostgresPool),
    #[cfg(feature = "redis")]
    Redis(RedisPool),
}

/// Runs `$body` with `$p` bound to whichever pool `$pool` is.
macro_rules! each_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            #[cfg(feature = "http")]
            Pool::Http($p) => $body,
            #[cfg(feature = "postgres")]
            Pool::Postgres($p) => $body,
            #[cfg(feature = "redis")]
            Pool::Redis($p) => $body,
        }
    };
}

impl Pool {
    fn pool_type(&self) -> PoolType {
        match self {
            #[cfg(feature = "http")]
            Self::Http(_) => PoolType::Http,
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => PoolType::Postgres,
            #[cfg(feature = "redis")]
            Self::Redis(_) => PoolType::Redis,
        }
    }

    /// Connections (Redis: commands) in use now.
    fn in_use(&self) -> usize {
        each_pool!(self, p => p.in_use())
    }

    /// The pool's entry in [`health()`](crate::health).
    fn health(&self) -> PoolHealth {
        self.state().health(self.in_use())
    }

    fn state(&self) -> &state::PoolState {
        each_pool!(self, p => p.state())
    }

    /// Sets the gauge of connections in use (exporters call this before they render,
    /// through [`PoolManager::refresh_gauges`], so operations never have to).
    fn refresh_gauges(&self) {
        self.state().refresh_gauges(self.in_use());
    }

    /// One health check, outside the pool's policies; `None` when there is nothing to
    /// check.
    async fn check(&self) -> Option<Result<(), String>> {
        each_pool!(self, p => p.check().await)
    }
}

/// Every pool of the process, by name: see [`pool_manager`].
#[derive(Debug, Default)]
pub struct PoolManager {
    pools: RwLock<BTreeMap<String, Pool>>,
}

impl PoolManager {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Pool>> {
        self.pools.read().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, name: &str) -> Result<Pool, PoolError> {
        let pools = self.read();
        pools
            .get(name)
            .cloned()
            .ok_or_else(|| PoolError::Unknown { pool: name.to_owned(), known: pools.keys().cloned().collect() })
    }

    /// The HTTP pool `name`: a cheap handle to it.
    #[cfg(feature = "http")]
    pub fn http(&self, name: &str) -> Result<HttpPool, PoolError> {
        match self.get(name)? {
            Pool::Http(pool) => Ok(pool),
            #[allow(unreachable_patterns)] // with only the `http` feature, every pool is one
            other => {
                Err(PoolError::WrongKind { pool: name.to_owned(), expected: PoolType::Http, actual: other.pool_type() })
            }
        }
    }

    /// The Redis pool `name`: a cheap handle to it.
    #[cfg(feature = "redis")]
    pub fn redis(&self, name: &str) -> Result<RedisPool, PoolError> {
        match self.get(name)? {
            Pool::Redis(pool) => Ok(pool),
            #[allow(unreachable_patterns)] // with only the `redis` feature, every pool is one
            other => Err(PoolError::WrongKind {
                pool: name.to_owned(),
                expected: PoolType::Redis,
                actual: other.pool_type(),
            }),
        }
    }

    /// The PostgreSQL pool `name`: a cheap handle to it.
    #[cfg(feature = "postgres")]
    pub fn postgres(&self, name: &str) -> Result<PostgresPool, PoolError> {
        match self.get(name)? {
            Pool::Postgres(pool) => Ok(pool),
            #[allow(unreachable_patterns)] // with only the `postgres` feature, every pool is one
            other => Err(PoolError::WrongKind {
                pool: name.to_owned(),
                expected: PoolType::Postgres,
                actual: other.pool_type(),
            }),
        }
    }

    /// Every pool's name and kind, sorted by name.
    pub fn list(&self) -> Vec<(String, PoolType)> {
        self.read().iter().map(|(name, pool)| (name.clone(), pool.pool_type())).collect()
    }

    fn pools(&self) -> Vec<Pool> {
        self.read().values().cloned().collect()
    }

    /// Sets every pool gauge that follows a value (connections in use). Exporters call
    /// this before they render; [`health()`](crate::health) and each round of a
    /// [`PoolHealthChecker`] do too.
    pub fn refresh_gauges(&self) {
        for pool in self.read().values() {
            pool.refresh_gauges();
        }
    }
}

impl PoolReporter for PoolManager {
    fn pools(&self) -> Vec<PoolHealth> {
        self.refresh_gauges();
        self.read().values().map(Pool::health).collect()
    }
}

static MANAGER: LazyLock<PoolManager> = LazyLock::new(PoolManager::default);

/// The process's pool manager. Its pools appear in [`health()`](crate::health).
pub fn pool_manager() -> &'static PoolManager {
    static REPORTS: Once = Once::new();
    REPORTS.call_once(|| resilience_core::register_pool_reporter(&*MANAGER));
    &MANAGER
}

/// Creates `configs`' pools and adds them to [`pool_manager`]: all of them, or (on the
/// first error, which names the pool) none. A name already in use is an error; so is a
/// name given twice. May be called again to add more pools.
pub async fn initialize_pools(configs: Vec<PoolConfig>) -> Result<(), PoolError> {
    let manager = pool_manager();
    let mut built: Vec<(String, Pool)> = Vec::with_capacity(configs.len());
    for config in configs {
        if built.iter().any(|(name, _)| *name == config.name) || manager.read().contains_key(&config.name) {
            return Err(PoolError::Duplicate { pool: config.name });
        }
        if config.name.trim().is_empty() {
            return Err(PoolError::Config { pool: config.name, message: String::from("a pool needs a name") });
        }
        let pool = match &config.kind {
            #[cfg(feature = "http")]
            PoolKind::Http(http) => Pool::Http(HttpPool::new(&config.name, http.clone(), config.dependency_type)?),
            #[cfg(feature = "postgres")]
            PoolKind::Postgres(pg) => {
                Pool::Postgres(PostgresPool::new(&config.name, pg.clone(), config.dependency_type)?)
            }
            #[cfg(feature = "redis")]
            PoolKind::Redis(r) => Pool::Redis(RedisPool::new(&config.name, r.clone(), config.dependency_type)?),
        };
        built.push((config.name, pool));
    }
    let mut pools = manager.pools.write().unwrap_or_else(|p| p.into_inner());
    if let Some((name, _)) = built.iter().find(|(name, _)| pools.contains_key(name)) {
        // Added by a concurrent call meanwhile.
        return Err(PoolError::Duplicate { pool: name.clone() });
    }
    pools.extend(built);
    Ok(())
}
