//! The PostgreSQL pool: deadpool-postgres connections (tokio-postgres, no TLS) behind the
//! pool's connection limit, under its dependency's policies (`Database` preset).

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Object, RecyclingMethod};
use resilience_core::{DependencyType, ErrorPolicy, OwnedBulkheadPermit, ResilienceError};
pub use tokio_postgres::types::ToSql;
pub use tokio_postgres::Row;

use super::state::{PoolCore, PoolState};
use super::{config_error, PoolError};

/// A PostgreSQL pool's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresPoolConfig {
    /// `postgres://user:password@host:port/database` (or the `key=value` form).
    pub url: String,
    /// Connections at most; callers beyond wait up to `max_wait`. Default 10.
    pub max_connections: usize,
    /// How long a caller waits for a connection before `BulkheadFull`. Default 5 s.
    pub max_wait: Duration,
    /// The server cancels a statement running longer (PostgreSQL's `statement_timeout`,
    /// set on each connection). Zero leaves the server's setting. Default 30 s.
    pub statement_timeout: Duration,
    /// Making a connection gives up after this long. Default 5 s.
    pub connect_timeout: Duration,
    /// Check a connection that was idle for more than a second with an empty query
    /// before handing it out again (a busy connection is only checked for being closed,
    /// which costs nothing); a connection that fails the check is closed and another one
    /// taken. Default on.
    pub recycle_check: bool,
    /// Time between two health checks (`SELECT 1`) of a [`PoolHealthChecker`](super::PoolHealthChecker).
    /// Default 30 s.
    pub health_check_interval: Duration,
}

impl Default for PostgresPoolConfig {
    fn default() -> Self {
        Self {
            url: String::from("postgres://postgres@127.0.0.1:5432/postgres"),
            max_connections: 10,
            max_wait: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            recycle_check: true,
            health_check_interval: Duration::from_secs(30),
        }
    }
}

/// A connection idle for longer is checked before it is handed out (with `recycle_check`).
const IDLE_BEFORE_CHECK: Duration = Duration::from_secs(1);

/// Why one attempt failed.
#[derive(Debug)]
enum AttemptError {
    Policy(ResilienceError),
    Database(tokio_postgres::Error),
    Connect(String),
}

impl From<ResilienceError> for AttemptError {
    fn from(error: ResilienceError) -> Self {
        Self::Policy(error)
    }
}

/// SQLSTATE classes that say the server or the connection failed (not the statement):
/// connection exceptions, insufficient resources, operator intervention (a shutdown, a
/// cancelled statement), system errors, internal errors.
fn server_failure(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        None => true, // closed connection, I/O, protocol: the server is not answering.
        Some(db) => matches!(&db.code().code()[..2], "08" | "53" | "57" | "58" | "XX"),
    }
}

/// Failures of the server count for the breaker and are retried; a statement's own
/// errors (syntax, constraints, types) are the caller's and are neither; so are the
/// rejections of the pool's own connection limit.
fn counts(error: &AttemptError) -> bool {
    match error {
        AttemptError::Policy(e) => !e.is_rejection(),
        AttemptError::Database(e) => server_failure(e),
        AttemptError::Connect(_) => true,
    }
}

fn never(_: &AttemptError) -> bool {
    false
}

/// One statement, as the pool runs it (borrowed, so that a retry runs it again).
#[derive(Clone, Copy)]
enum Op<'a> {
    Query(&'a str, &'a [&'a (dyn ToSql + Sync)]),
    QueryOne(&'a str, &'a [&'a (dyn ToSql + Sync)]),
    Execute(&'a str, &'a [&'a (dyn ToSql + Sync)]),
}

/// What a statement gave.
enum Done {
    Rows(Vec<Row>),
    Row(Row),
    Count(u64),
}

async fn run_op(client: &tokio_postgres::Client, op: Op<'_>) -> Result<Done, tokio_postgres::Error> {
    Ok(match op {
        Op::Query(sql, params) => Done::Rows(client.query(sql, params).await?),
        Op::QueryOne(sql, params) => Done::Row(client.query_one(sql, params).await?),
        Op::Execute(sql, params) => Done::Count(client.execute(sql, params).await?),
    })
}

/// A connection of a [`PostgresPool`], from [`PostgresPool::connection`]: a
/// `tokio_postgres::Client` (through `Deref`), returned to the pool when dropped.
pub struct PostgresConnection {
    checkout: Checkout,
}

impl std::ops::Deref for PostgresConnection {
    type Target = tokio_postgres::Client;

    fn deref(&self) -> &tokio_postgres::Client {
        &self.checkout.object
    }
}

impl std::fmt::Debug for PostgresConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConnection").finish_non_exhaustive()
    }
}

/// A connection taken from the pool, with its slot of the pool's limit.
struct Checkout {
    object: Object,
    _slot: OwnedBulkheadPermit,
}

struct Inner {
    config: PostgresPoolConfig,
    pool: deadpool_postgres::Pool,
    core: PoolCore,
}

/// A pool of PostgreSQL connections whose every operation goes through the policies of
/// the dependency named like the pool (`Database` preset unless configured otherwise).
/// Cloning gives another handle to the same pool.
///
/// - At most `max_connections` connections exist; a caller waits up to `max_wait` for
///   one, then fails with `BulkheadFull`.
/// - Failures of the server (the connection failed or closed, or a SQLSTATE of class
///   08, 53, 57, 58 or XX: a shutdown, a cancelled statement, no resources) count for
///   the breaker; `query` and `query_one` are retried after them, `execute` and
///   `transaction` are not (a write may have happened).
/// - A statement's own errors (syntax, a violated constraint) come back as
///   [`PoolError::Database`] and say nothing against the server: neither counted nor
///   retried.
#[derive(Clone)]
pub struct PostgresPool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PostgresPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresPool")
            .field("name", &self.inner.core.state.name)
            .field("in_use", &self.in_use())
            .field("max_connections", &self.inner.config.max_connections)
            .finish_non_exhaustive()
    }
}

/// Why a transaction did not commit.
#[derive(Debug)]
pub enum TransactionError<E> {
    /// The body returned this error; the transaction was rolled back.
    Body(E),
    /// The pool, the server or the policies failed (the transaction was not committed).
    Pool(PoolError),
}

impl<E: std::fmt::Display> std::fmt::Display for TransactionError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Body(e) => write!(f, "transaction rolled back: {e}"),
            Self::Pool(e) => write!(f, "transaction not committed: {e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for TransactionError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Body(e) => Some(e),
            Self::Pool(e) => Some(e),
        }
    }
}

/// A transaction's end, as the policies see it.
enum TxError<E> {
    Attempt(AttemptError),
    Body(E),
}

impl<E> From<ResilienceError> for TxError<E> {
    fn from(error: ResilienceError) -> Self {
        Self::Attempt(AttemptError::Policy(error))
    }
}

fn tx_counts<E>(error: &TxError<E>) -> bool {
    match error {
        TxError::Attempt(e) => counts(e),
        TxError::Body(_) => false,
    }
}

/// The connection of a transaction in progress: statements run on it, outside the
/// policies (the transaction as a whole is under them). Cloning gives another handle
/// to the same transaction; it ends when [`PostgresPool::transaction`]'s body returns.
#[derive(Clone)]
pub struct Transaction {
    inner: Arc<TxInner>,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction").field("pool", &self.inner.pool).finish_non_exhaustive()
    }
}

struct TxInner {
    checkout: Option<Checkout>,
    /// Begun and not yet committed or rolled back.
    open: AtomicBool,
    pool: Arc<str>,
}

impl Drop for TxInner {
    fn drop(&mut self) {
        if self.open.load(SeqCst) {
            // Never return a connection inside a transaction to the pool: closing it
            // makes the server roll the transaction back.
            if let Some(checkout) = self.checkout.take() {
                drop(Object::take(checkout.object));
            }
        }
    }
}

impl Transaction {
    fn client(&self) -> Result<&tokio_postgres::Client, PoolError> {
        match &self.inner.checkout {
            Some(c) => Ok(&c.object),
            None => Err(PoolError::Transport {
                pool: self.inner.pool.to_string(),
                message: String::from("the transaction's connection is gone"),
            }),
        }
    }

    async fn run(&self, op: Op<'_>) -> Result<Done, PoolError> {
        let client = self.client()?;
        run_op(client, op).await.map_err(|e| database_error(&self.inner.pool, e))
    }

    /// The rows of `sql`, in the transaction.
    pub async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, PoolError> {
        match self.run(Op::Query(sql, params)).await? {
            Done::Rows(rows) => Ok(rows),
            _ => Ok(Vec::new()),
        }
    }

    /// The one row of `sql`, in the transaction.
    pub async fn query_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, PoolError> {
        match self.run(Op::QueryOne(sql, params)).await? {
            Done::Row(row) => Ok(row),
            _ => Err(PoolError::Transport { pool: self.inner.pool.to_string(), message: String::from("no row") }),
        }
    }

    /// Runs `sql` in the transaction; the number of rows it changed.
    pub async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, PoolError> {
        match self.run(Op::Execute(sql, params)).await? {
            Done::Count(n) => Ok(n),
            _ => Ok(0),
        }
    }
}

/// A statement's error as the pool reports it.
fn database_error(pool: &str, e: tokio_postgres::Error) -> PoolError {
    let pool = pool.to_owned();
    match e.as_db_error() {
        Some(_) => PoolError::Database { pool, error: Arc::new(e) },
        None => PoolError::Transport { pool, message: e.to_string() },
    }
}

impl PostgresPool {
    /// Builds the pool `name` (no connection is made yet); its dependency is looked up,
    /// never replaced.
    pub(super) fn new(
        name: &str,
        config: PostgresPoolConfig,
        dependency_type: Option<DependencyType>,
    ) -> Result<Self, PoolError> {
        let core = PoolCore::new(
            name,
            ("postgres", DependencyType::Database),
            dependency_type,
            (config.max_connections, config.max_wait),
            config.health_check_interval,
        )?;
        let mut pg = tokio_postgres::Config::from_str(&config.url)
            .map_err(|e| config_error(name, format!("`url` is not a PostgreSQL URL: {e}")))?;
        pg.connect_timeout(config.connect_timeout);
        if !config.statement_timeout.is_zero() {
            let mut options = pg.get_options().map(str::to_owned).unwrap_or_default();
            if !options.is_empty() {
                options.push(' ');
            }
            options.push_str(&format!("-c statement_timeout={}", config.statement_timeout.as_millis().max(1)));
            pg.options(&options);
        }
        let manager =
            Manager::from_config(pg, tokio_postgres::NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(config.max_connections)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| config_error(name, e))?;
        Ok(Self { inner: Arc::new(Inner { config, pool, core }) })
    }

    /// The pool's name (also its dependency's).
    pub fn name(&self) -> &str {
        &self.inner.core.state.name
    }

    /// The pool's settings.
    pub fn config(&self) -> &PostgresPoolConfig {
        &self.inner.config
    }

    /// Connections in use now.
    pub fn in_use(&self) -> usize {
        self.inner.core.in_use()
    }

    /// Connections open now, in use or idle.
    pub fn open_connections(&self) -> usize {
        self.inner.pool.status().size
    }

    /// The rows of `sql` (retried, and hedged if the dependency has a `hedge`: give it
    /// only statements that may run twice).
    pub async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, PoolError> {
        match self.run(true, Op::Query(sql, params)).await? {
            Done::Rows(rows) => Ok(rows),
            _ => Ok(Vec::new()),
        }
    }

    /// The one row of `sql` (an error if there are none or several).
    pub async fn query_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, PoolError> {
        match self.run(true, Op::QueryOne(sql, params)).await? {
            Done::Row(row) => Ok(row),
            _ => Err(PoolError::Transport { pool: self.name().to_owned(), message: String::from("no row") }),
        }
    }

    /// Runs `sql`; the number of rows it changed. Not retried.
    pub async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, PoolError> {
        match self.run(false, Op::Execute(sql, params)).await? {
            Done::Count(n) => Ok(n),
            _ => Ok(0),
        }
    }

    /// A connection of the pool for what it does not wrap (`COPY`, `LISTEN`, prepared
    /// statements kept across calls): under the pool's limit (waiting up to `max_wait`
    /// for a slot) and checked like any other, but outside the dependency's policies.
    /// It goes back to the pool when dropped.
    pub async fn connection(&self) -> Result<PostgresConnection, PoolError> {
        self.checkout().await.map(|checkout| PostgresConnection { checkout }).map_err(|e| self.error(e))
    }

    /// A slot and a connection.
    async fn checkout(&self) -> Result<Checkout, AttemptError> {
        let inner = &*self.inner;
        let waited = (inner.core.slots.available() == 0).then(Instant::now);
        let slot = inner.core.slots.acquire_owned().await?;
        inner.core.state.started(waited);
        let fail = |e: deadpool_postgres::PoolError| {
            inner.core.state.failed();
            AttemptError::Connect(e.to_string())
        };
        let object = inner.pool.get().await.map_err(fail)?;
        if !inner.config.recycle_check || Object::metrics(&object).last_used() < IDLE_BEFORE_CHECK {
            return Ok(Checkout { object, _slot: slot });
        }
        if object.simple_query("").await.is_ok() {
            return Ok(Checkout { object, _slot: slot });
        }
        // Dead while idle (a restarted server, a dropped link): close it, take another.
        drop(Object::take(object));
        let object = inner.pool.get().await.map_err(fail)?;
        Ok(Checkout { object, _slot: slot })
    }

    /// Runs `op` on a connection, through the policies.
    async fn run(&self, retry: bool, op: Op<'_>) -> Result<Done, PoolError> {
        let policy = ErrorPolicy { retry_if: if retry { counts } else { never }, record_if: counts };
        let inner = &*self.inner;
        let pipeline = inner.core.dependency.pipeline();
        let attempt = || async move {
            let checkout = self.checkout().await?;
            run_op(&checkout.object, op).await.map_err(|e| {
                if server_failure(&e) {
                    inner.core.state.failed();
                }
                AttemptError::Database(e)
            })
        };
        // Queries are retried as reads are, and so hedged when the dependency hedges.
        let outcome = super::call_through(&pipeline, &policy, retry, None, attempt).await;
        outcome.map_err(|e| self.error(e))
    }

    fn error(&self, e: AttemptError) -> PoolError {
        match e {
            AttemptError::Policy(error) => PoolError::Rejected { pool: self.name().to_owned(), error },
            AttemptError::Database(e) => database_error(self.name(), e),
            AttemptError::Connect(message) => PoolError::Transport { pool: self.name().to_owned(), message },
        }
    }

    /// Runs `body` in a transaction: committed when it returns `Ok`, rolled back when it
    /// returns `Err`, and never committed if the future is dropped before it ends (the
    /// connection is then closed rather than returned to the pool, so the server rolls
    /// back). The whole transaction is one call under the policies (its timeout, its
    /// breaker), not retried; the body's own errors do not count against the server.
    pub async fn transaction<T, E, F, Fut>(&self, body: F) -> Result<T, TransactionError<E>>
    where
        F: FnOnce(Transaction) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let policy = ErrorPolicy { retry_if: |_: &TxError<E>| false, record_if: tx_counts::<E> };
        let mut body = Some(body);
        let outcome = self
            .inner
            .core
            .dependency
            .pipeline()
            .call_with(&policy, || {
                let body = body.take();
                async move {
                    let checkout = self.checkout().await.map_err(TxError::Attempt)?;
                    let tx = Transaction {
                        inner: Arc::new(TxInner {
                            checkout: Some(checkout),
                            open: AtomicBool::new(false),
                            pool: Arc::clone(&self.inner.core.state.name),
                        }),
                    };
                    let client = tx.client().map_err(|e| TxError::Attempt(AttemptError::Connect(e.to_string())))?;
                    tx.inner.open.store(true, SeqCst);
                    client.batch_execute("BEGIN").await.map_err(|e| TxError::Attempt(AttemptError::Database(e)))?;
                    let Some(body) = body else {
                        return Err(TxError::Attempt(AttemptError::Connect(String::from("a transaction runs once"))));
                    };
                    match body(tx.clone()).await {
                        Ok(value) => {
                            client
                                .batch_execute("COMMIT")
                                .await
                                .map_err(|e| TxError::Attempt(AttemptError::Database(e)))?;
                            tx.inner.open.store(false, SeqCst);
                            Ok(value)
                        }
                        Err(e) => {
                            // A failed rollback leaves the transaction open, so the
                            // connection is closed rather than reused.
                            if client.batch_execute("ROLLBACK").await.is_ok() {
                                tx.inner.open.store(false, SeqCst);
                            }
                            Err(TxError::Body(e))
                        }
                    }
                }
            })
            .await;
        outcome.map_err(|e| match e {
            TxError::Body(e) => TransactionError::Body(e),
            TxError::Attempt(e) => TransactionError::Pool(self.error(e)),
        })
    }

    /// One `SELECT 1`, outside the policies (a check must reach the server while the
    /// breaker is open), within `connect_timeout`.
    pub(super) async fn check(&self) -> Option<Result<(), String>> {
        let inner = &*self.inner;
        let limit = inner.config.connect_timeout;
        let check = async {
            let client = inner.pool.get().await.map_err(|e| e.to_string())?;
            client.simple_query("SELECT 1").await.map_err(|e| e.to_string())?;
            Ok::<(), String>(())
        };
        Some(tokio::time::timeout(limit, check).await.unwrap_or_else(|_| Err(format!("no answer within {limit:?}"))))
    }

    pub(super) fn state(&self) -> &PoolState {
        &self.inner.core.state
    }
}
