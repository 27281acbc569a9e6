//! The Redis pool: redis-rs multiplexed connections (one to a standalone server, made
//! again after it failed; a cluster through `ClusterConnection`; or the master that the
//! sentinels name), under the pool's limit of commands in flight and its dependency's
//! policies (`Cache` preset).
//!
//! Every mode hands each command a clone of its connection from a per-thread copy,
//! checked against the connection's generation (one load), rather than through a lock
//! or redis-rs's `ConnectionManager` (which clones its own handle, its shared connect
//! future and the connection per command: reference counts that every core's commands
//! write, see BENCHMARKS.md).
//!
//! Why multiplexed connections rather than a pool of exclusive ones (deadpool-redis):
//! Redis answers a connection's commands in order, so one connection carries many
//! callers' commands at once, pipelined, with no checkout; `max_connections` is then the
//! number of commands in flight at once (each waits up to `max_wait` for a slot, then
//! fails with `BulkheadFull`), which is what bounds the server's load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{FromRedisValue, IntoConnectionInfo, RedisError, ToRedisArgs};
use resilience_core::{DependencyType, ErrorPolicy, ResilienceError};

use super::state::{PoolCore, PoolState};
use super::{config_error, PoolError};

/// A Redis pool's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisPoolConfig {
    /// The server (standalone mode). Default `127.0.0.1`.
    pub host: String,
    /// Its port. Default 6379.
    pub port: u16,
    /// The database number (standalone and sentinel modes). Default 0.
    pub db: i64,
    /// The password (`AUTH`), if the server wants one.
    pub password: Option<String>,
    /// Commands in flight at most; callers beyond wait up to `max_wait`. Default 50.
    pub max_connections: usize,
    /// How long a command waits for a slot before `BulkheadFull`. Default 1 s.
    pub max_wait: Duration,
    /// Talk to a Redis Cluster through `cluster_nodes` (seed nodes, `host:port`).
    pub cluster_mode: bool,
    /// The cluster's seed nodes, `host:port` each.
    pub cluster_nodes: Vec<String>,
    /// Sentinels (`host:port` each): when set, the pool talks to the master they name
    /// `sentinel_master`, and asks them again after a failover.
    pub sentinel_hosts: Vec<String>,
    /// The master's name known to the sentinels.
    pub sentinel_master: Option<String>,
    /// Making a connection gives up after this long. Default 2 s.
    pub connect_timeout: Duration,
    /// `None` (the default) leaves the limit of each command to the dependency's timeout
    /// policy; `Some(d)` also has redis-rs give up on a command after `d`.
    pub response_timeout: Option<Duration>,
    /// Time between two health checks (`PING`). Default 30 s.
    pub health_check_interval: Duration,
}

impl Default for RedisPoolConfig {
    fn default() -> Self {
        Self {
            host: String::from("127.0.0.1"),
            port: 6379,
            db: 0,
            password: None,
            max_connections: 50,
            max_wait: Duration::from_secs(1),
            cluster_mode: false,
            cluster_nodes: Vec::new(),
            sentinel_hosts: Vec::new(),
            sentinel_master: None,
            connect_timeout: Duration::from_secs(2),
            response_timeout: None,
            health_check_interval: Duration::from_secs(30),
        }
    }
}

/// How the pool reaches Redis.
enum Mode {
    /// One server; a failed connection is made again by the next command.
    Standalone(Box<(redis::Client, redis::AsyncConnectionConfig)>),
    /// A cluster; the connection follows slot moves and failovers.
    Cluster(Box<redis::cluster::ClusterClient>),
    /// The master the sentinels name: asked again after an error, and followed at each
    /// promotion the sentinels announce.
    Sentinel(Box<SentinelMode>),
}

struct SentinelMode {
    client: tokio::sync::Mutex<redis::sentinel::SentinelClient>,
    sentinels: Vec<redis::ConnectionInfo>,
    master: String,
    watching: std::sync::Once,
}

impl SentinelMode {
    /// After `+promoted-slave slave <ip:port> <ip> <port> @ <name> <old ip> <old port>`
    /// or `+switch-master <name> <old ip> <old port> <new ip> <new port>`: connects to
    /// the new master the message names (sentinels asked now may not know it yet), or
    /// drops the connection so that the next command asks them.
    async fn switch(&self, channel: &str, message: &str, config: &RedisPoolConfig, shared: &SharedConnection) {
        let fields: Vec<&str> = message.split_whitespace().collect();
        let (name, ip, port) = match channel {
            "+promoted-slave" => (fields.get(5), fields.get(2), fields.get(3)),
            _ => (fields.first(), fields.get(3), fields.get(4)),
        };
        if name != Some(&self.master.as_str()) {
            return;
        }
        shared
            .replace(async {
                let (Some(ip), Some(port)) = (ip, port) else { return None };
                let info = node("", &format!("{ip}:{port}"), config.db, config.password.as_deref()).ok()?;
                let client = redis::Client::open(info).ok()?;
                let connection = client.get_multiplexed_async_connection_with_config(&timeouts(config)).await.ok()?;
                Some(Conn::Multiplexed(connection))
            })
            .await;
    }
}

/// Listens to one sentinel's `+promoted-slave` and `+switch-master` (a task per
/// sentinel: the one leading a failover announces the promotion first) and moves the
/// pool's connection to the new master at once, so that no command goes to the old one
/// once the sentinels name the new. Reconnects after 500 ms when the sentinel goes away;
/// ends when the pool is gone.
async fn watch_failovers(inner: std::sync::Weak<Inner>, sentinel: redis::ConnectionInfo) {
    use futures_util::StreamExt;
    loop {
        if let Ok(client) = redis::Client::open(sentinel.clone()) {
            if let Ok(mut pubsub) = client.get_async_pubsub().await {
                if pubsub.subscribe(&["+promoted-slave", "+switch-master"]).await.is_ok() {
                    let mut messages = pubsub.into_on_message();
                    while let Some(message) = messages.next().await {
                        let Some(inner) = inner.upgrade() else { return };
                        if let Mode::Sentinel(mode) = &inner.mode {
                            let text: String = message.get_payload().unwrap_or_default();
                            mode.switch(message.get_channel_name(), &text, &inner.config, &inner.connection).await;
                        }
                    }
                }
            }
        }
        if inner.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A pool's connection (of any mode): made on first use, and dropped after a failure
/// of the server (or, with sentinels, replaced at a failover) so that the next command
/// makes a new one. Commands clone a per-thread copy, checked against the connection's
/// generation; only a thread without a current copy takes the lock.
struct SharedConnection {
    /// The current connection, `None` until made or after a failure.
    current: tokio::sync::Mutex<Option<Conn>>,
    /// Bumped whenever `current` is dropped or replaced: a thread's copy of an older
    /// generation is not used.
    generation: std::sync::atomic::AtomicU64,
    /// Each thread's copy of `current` with its generation; dropped with the pool, so a
    /// dropped pool's connection is not kept open by the threads that used it.
    copies: thread_local::ThreadLocal<std::cell::RefCell<Option<(u64, Conn)>>>,
}

impl SharedConnection {
    fn new() -> Self {
        Self {
            current: tokio::sync::Mutex::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
            copies: thread_local::ThreadLocal::new(),
        }
    }

    /// This thread's copy of the current connection, if it has one, with its generation.
    fn copy(&self) -> Option<(Conn, u64)> {
        let generation = self.generation.load(std::sync::atomic::Ordering::Acquire);
        match &*self.copies.get_or_default().borrow() {
            Some((g, connection)) if *g == generation => Some((connection.clone(), generation)),
            _ => None,
        }
    }

    /// The pool's connection (made with `connect` if there is none) and its generation,
    /// copied for this thread: for a thread without a current [`copy`](Self::copy).
    async fn get<F>(&self, connect: impl FnOnce() -> F) -> Result<(Conn, u64), RedisError>
    where
        F: std::future::Future<Output = Result<Conn, RedisError>>,
    {
        use std::sync::atomic::Ordering::Acquire;
        let mut current = self.current.lock().await;
        let connection = match &*current {
            Some(connection) => connection.clone(),
            None => {
                let made = connect().await?;
                *current = Some(made.clone());
                made
            }
        };
        // Read under the lock that it is bumped under: the generation of `current`.
        let generation = self.generation.load(Acquire);
        // The thread this task runs on now (it may have moved while it waited).
        *self.copies.get_or_default().borrow_mut() = Some((generation, connection.clone()));
        Ok((connection, generation))
    }

    /// Drops the connection of `generation` after a failure of the server, unless it was
    /// replaced already (commands that were in flight on it fail one after another):
    /// every thread's copy of it is stale from now on.
    async fn forget(&self, generation: u64) {
        let mut current = self.current.lock().await;
        if self.generation.load(std::sync::atomic::Ordering::Acquire) == generation {
            *current = None;
            self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
        }
    }

    /// Replaces the connection with what `connect` makes (`None`: none, the next command
    /// makes one). Commands wait for it: none goes to the old connection meanwhile.
    async fn replace(&self, connect: impl std::future::Future<Output = Option<Conn>>) {
        let mut current = self.current.lock().await;
        *current = None;
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
        *current = connect.await;
    }
}

/// The pool's connect and response timeouts, for a connection to one server.
fn timeouts(config: &RedisPoolConfig) -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(config.response_timeout)
}

/// `name key`, built in place (no copy of a builder).
fn command(name: &str, key: &str) -> redis::Cmd {
    let mut cmd = redis::cmd(name);
    cmd.arg(key);
    cmd
}

/// A connection of any mode, for one command.
#[derive(Clone)]
enum Conn {
    Cluster(ClusterConnection),
    Multiplexed(MultiplexedConnection),
}

impl Conn {
    async fn query<T: FromRedisValue>(&mut self, cmd: &redis::Cmd) -> Result<T, RedisError> {
        match self {
            Self::Cluster(c) => cmd.query_async(c).await,
            Self::Multiplexed(c) => cmd.query_async(c).await,
        }
    }
}

#[derive(Debug)]
enum AttemptError {
    Policy(ResilienceError),
    Redis(RedisError),
}

impl From<ResilienceError> for AttemptError {
    fn from(error: ResilienceError) -> Self {
        Self::Policy(error)
    }
}

/// Errors that say the server (or the way to it) failed, rather than the command:
/// the connection, a time-out, a server loading or read-only after a failover, a
/// cluster that is down or moving, a sentinel that names no master.
fn server_failure(e: &RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::ReadOnly
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::TryAgain
            ) | ErrorKind::MasterNameNotFoundBySentinel
                | ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Io
        )
}

fn counts(error: &AttemptError) -> bool {
    match error {
        AttemptError::Policy(e) => !e.is_rejection(),
        AttemptError::Redis(e) => server_failure(e),
    }
}

struct Inner {
    config: RedisPoolConfig,
    mode: Mode,
    connection: SharedConnection,
    core: PoolCore,
}

/// A Redis client whose every command goes through the policies of the dependency named
/// like the pool (`Cache` preset unless configured otherwise). Cloning gives another
/// handle to the same pool.
///
/// Failures of the server (the connection, a time-out, `LOADING`, `READONLY` after a
/// failover, `CLUSTERDOWN`, `MASTERDOWN`, `TRYAGAIN`) count for the breaker and are
/// retried; a command's own errors (`WRONGTYPE`, a bad argument, a value that does not
/// convert) come back as [`PoolError::Redis`] and are neither.
#[derive(Clone)]
pub struct RedisPool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPool")
            .field("name", &self.inner.core.state.name)
            .field("in_use", &self.in_use())
            .field("max_connections", &self.inner.config.max_connections)
            .finish_non_exhaustive()
    }
}

/// `host:port` as a connection to database `db` with `password`.
fn node(pool: &str, address: &str, db: i64, password: Option<&str>) -> Result<redis::ConnectionInfo, PoolError> {
    let info = format!("redis://{address}/{db}")
        .into_connection_info()
        .map_err(|e| config_error(pool, format!("`{address}` is not host:port: {e}")))?;
    Ok(match password {
        Some(p) => {
            let settings = info.redis_settings().clone().set_password(p);
            info.set_redis_settings(settings)
        }
        None => info,
    })
}

impl RedisPool {
    /// Builds the pool `name` (connections are made on first use); its dependency is
    /// looked up, never replaced.
    pub(super) fn new(
        name: &str,
        config: RedisPoolConfig,
        dependency_type: Option<DependencyType>,
    ) -> Result<Self, PoolError> {
        let core = PoolCore::new(
            name,
            ("redis", DependencyType::Cache),
            dependency_type,
            (config.max_connections, config.max_wait),
            config.health_check_interval,
        )?;
        let password = config.password.as_deref();
        let mode = match (config.cluster_mode, config.sentinel_hosts.is_empty()) {
            (true, false) => return Err(config_error(name, "`cluster_mode` and `sentinel_hosts` cannot both be set")),
            (true, true) => {
                if config.cluster_nodes.is_empty() {
                    return Err(config_error(name, "`cluster_mode` needs `cluster_nodes`"));
                }
                let nodes =
                    config.cluster_nodes.iter().map(|n| node(name, n, 0, password)).collect::<Result<Vec<_>, _>>()?;
                // Few retries inside redis-rs: the pool's own policies retry (and time
                // out) the whole command.
                let client =
                    redis::cluster::ClusterClient::builder(nodes).retries(2).connection_timeout(config.connect_timeout);
                let client = match config.response_timeout {
                    Some(limit) => client.response_timeout(limit),
                    None => client,
                };
                let client = client.build().map_err(|e| config_error(name, e))?;
                Mode::Cluster(Box::new(client))
            }
            (false, false) => {
                let master = config
                    .sentinel_master
                    .clone()
                    .ok_or_else(|| config_error(name, "`sentinel_hosts` needs `sentinel_master`"))?;
                let sentinels =
                    config.sentinel_hosts.iter().map(|n| node(name, n, 0, None)).collect::<Result<Vec<_>, _>>()?;
                let mut to_master = redis::RedisConnectionInfo::default();
                to_master = to_master.set_db(config.db);
                if let Some(p) = password {
                    to_master = to_master.set_password(p);
                }
                let info = redis::sentinel::SentinelNodeConnectionInfo::default().set_redis_connection_info(to_master);
                let client = redis::sentinel::SentinelClient::build(
                    sentinels.clone(),
                    master,
                    Some(info),
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(|e| config_error(name, e))?;
                Mode::Sentinel(Box::new(SentinelMode {
                    client: tokio::sync::Mutex::new(client),
                    sentinels,
                    master: config.sentinel_master.clone().unwrap_or_default(),
                    watching: std::sync::Once::new(),
                }))
            }
            (false, true) => {
                let info = node(name, &format!("{}:{}", config.host, config.port), config.db, password)?;
                let client = redis::Client::open(info).map_err(|e| config_error(name, e))?;
                Mode::Standalone(Box::new((client, timeouts(&config))))
            }
        };
        Ok(Self { inner: Arc::new(Inner { config, mode, connection: SharedConnection::new(), core }) })
    }

    /// The pool's name (also its dependency's).
    pub fn name(&self) -> &str {
        &self.inner.core.state.name
    }

    /// The pool's settings.
    pub fn config(&self) -> &RedisPoolConfig {
        &self.inner.config
    }

    /// Commands in flight now.
    pub fn in_use(&self) -> usize {
        self.inner.core.in_use()
    }

    /// The value of `key`, `None` if it has none (a read: hedged if the dependency has a
    /// `hedge`).
    pub async fn get<T: FromRedisValue>(&self, key: &str) -> Result<Option<T>, PoolError> {
        self.send(command("GET", key), true).await
    }

    /// Sets `key` to `value`.
    pub async fn set<V: ToRedisArgs>(&self, key: &str, value: V) -> Result<(), PoolError> {
        let mut cmd = command("SET", key);
        cmd.arg(value);
        self.cmd(cmd).await
    }

    /// Sets `key` to `value`, expiring after `seconds`.
    pub async fn set_ex<V: ToRedisArgs>(&self, key: &str, value: V, seconds: u64) -> Result<(), PoolError> {
        let mut cmd = command("SET", key);
        cmd.arg(value).arg("EX").arg(seconds);
        self.cmd(cmd).await
    }

    /// Deletes `key`; whether it existed.
    pub async fn del(&self, key: &str) -> Result<bool, PoolError> {
        self.cmd::<u64>(command("DEL", key)).await.map(|n| n > 0)
    }

    /// Adds 1 to the integer at `key` (0 when it has none); the new value.
    pub async fn incr(&self, key: &str) -> Result<i64, PoolError> {
        self.cmd(command("INCR", key)).await
    }

    /// Any command, through the policies. Retried after failures of the server like the
    /// others: give it only commands that may run twice.
    pub async fn cmd<T: FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, PoolError> {
        self.send(cmd, false).await
    }

    /// Sends `cmd` through the policies; a `read` is hedged if the dependency has a `hedge`.
    // A plain `fn` returning an `async move` block: an `async fn`'s future would keep
    // `cmd` twice (as received, and bound again in its body).
    #[allow(clippy::manual_async_fn)]
    fn send<T: FromRedisValue>(
        &self,
        cmd: redis::Cmd,
        read: bool,
    ) -> impl std::future::Future<Output = Result<T, PoolError>> + '_ {
        async move {
            let policy = ErrorPolicy { retry_if: counts, record_if: counts };
            let inner = &*self.inner;
            let pipeline = inner.core.dependency.pipeline();
            let attempt = || async {
                let waited = (inner.core.slots.available() == 0).then(Instant::now);
                let _slot = inner.core.slots.acquire().await?;
                inner.core.state.started(waited);
                let result = self.run::<T>(&cmd).await;
                if let Err(e) = &result {
                    if server_failure(e) {
                        inner.core.state.failed();
                    }
                }
                result.map_err(AttemptError::Redis)
            };
            let outcome = super::call_through(&pipeline, &policy, read, None, attempt).await;
            outcome.map_err(|e| match e {
                AttemptError::Policy(error) => PoolError::Rejected { pool: self.name().to_owned(), error },
                AttemptError::Redis(e) if server_failure(&e) => {
                    PoolError::Transport { pool: self.name().to_owned(), message: e.to_string() }
                }
                AttemptError::Redis(e) => PoolError::Redis { pool: self.name().to_owned(), error: Arc::new(e) },
            })
        }
    }

    /// Runs `cmd` on the mode's connection; a connection that failed is dropped so that
    /// the next command makes (or, with sentinels, looks up) a new one.
    ///
    /// Making a connection and dropping one are boxed: their futures (redis-rs's connect
    /// futures, some kilobytes) would otherwise be part of every command's, which every
    /// command moves and whose cache lines it touches.
    async fn run<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, RedisError> {
        let (mut conn, generation) = match self.inner.connection.copy() {
            Some(copy) => copy,
            None => Box::pin(self.connect()).await?,
        };
        let result = conn.query::<T>(cmd).await;
        if let Err(e) = &result {
            if server_failure(e) {
                Box::pin(self.inner.connection.forget(generation)).await;
            }
        }
        result
    }

    /// The pool's connection (made if there is none), for a thread without a current
    /// copy of it, with its generation.
    async fn connect(&self) -> Result<(Conn, u64), RedisError> {
        let inner = &*self.inner;
        if let Mode::Sentinel(mode) = &inner.mode {
            mode.watching.call_once(|| {
                for sentinel in &mode.sentinels {
                    tokio::spawn(watch_failovers(Arc::downgrade(&self.inner), sentinel.clone()));
                }
            });
        }
        inner
            .connection
            .get(|| async {
                Ok(match &inner.mode {
                    Mode::Standalone(standalone) => {
                        let (client, timeouts) = &**standalone;
                        Conn::Multiplexed(client.get_multiplexed_async_connection_with_config(timeouts).await?)
                    }
                    Mode::Cluster(client) => Conn::Cluster(client.get_async_connection().await?),
                    Mode::Sentinel(mode) => Conn::Multiplexed(mode.client.lock().await.get_async_connection().await?),
                })
            })
            .await
    }

    /// One `PING`, outside the policies, within `connect_timeout` and then
    /// `response_timeout` (or `connect_timeout` again).
    pub(super) async fn check(&self) -> Option<Result<(), String>> {
        let config = &self.inner.config;
        let limit = config.connect_timeout + config.response_timeout.unwrap_or(config.connect_timeout);
        let ping = async { self.run::<String>(&redis::cmd("PING")).await.map(|_| ()).map_err(|e| e.to_string()) };
        Some(tokio::time::timeout(limit, ping).await.unwrap_or_else(|_| Err(format!("no answer within {limit:?}"))))
    }

    pub(super) fn state(&self) -> &PoolState {
        &self.inner.core.state
    }
}
