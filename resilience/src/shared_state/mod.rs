//! Breaker and rate-limit state shared by every instance of a service, on Redis, and
//! breaker state kept across restarts (feature `shared-state`).
//!
//! ```no_run
//! # async fn run() -> Result<(), resilience::ConfigError> {
//! use resilience::shared_state::{install, SharedStateConfig};
//! use std::time::Duration;
//!
//! install(SharedStateConfig {
//!     redis_url: "redis://127.0.0.1:6379/0".into(),
//!     sync_interval: Duration::from_millis(200),
//!     min_instances_to_open: 2,
//!     ..Default::default()
//! })
//! .await?;
//! # Ok(()) }
//! ```
//!
//! Dependencies opt in with `circuit_breaker(shared = true)` and `rate_limit(shared =
//! true)` (attributes, registrations, settings); the settings section
//! `resilience: { shared_state: { redis_url, instance_id, sync_interval,
//! min_instances_to_open, state_file } }` configures [`install`] through
//! [`SharedStateConfig::from_settings`].
//!
//! # The consistency model
//!
//! Calls never wait on Redis. One task per process exchanges state every
//! `sync_interval` in one round trip (a pipeline of one script call per shared breaker,
//! and a heartbeat):
//!
//! - **Breakers.** Each instance reports the outcomes its shared breakers recorded
//!   since its last report; the fleet's window (a list on Redis, one entry per report)
//!   aggregates them: a count window keeps the fewest latest reports that hold
//!   `window_size` calls, a time window the reports of the last `window_duration`. It
//!   opens when the aggregate meets the breaker's thresholds **and** at least
//!   `min_instances_to_open` distinct instances reported failures in the window, so one
//!   sick instance cannot open the fleet's breaker (nor, while joined, its own: the
//!   instance's window no longer opens a shared breaker). An instance learns the
//!   verdict with its report, so it sees a breaker that opened anywhere within one
//!   `sync_interval` (plus a round trip); until then it lets calls through. The fleet's
//!   breaker turns half-open when its `recovery_timeout` has passed on the Redis clock,
//!   and hands out `half_open_max_calls` trial calls to the instances asking for them
//!   (those whose calls are being rejected); a failed trial anywhere re-opens it for
//!   all, and `success_threshold` successful trials across the fleet close it. A trial
//!   slot granted to an instance that never reports on it is handed out again after
//!   `max(recovery_timeout, heartbeat lifetime)`. `force_open`, `disable` and `reset`
//!   stay local to the instance.
//! - **Rate limits.** A shared limit is GCRA on Redis (its arrival time in one key).
//!   Instances lease tokens in batches of up to `burst` and admit calls from them
//!   locally: a check touches no network. A call that finds no token is admitted on
//!   credit up to the local share's burst (`burst / instances`, at least one), which the
//!   next lease pays back first, and wakes the lease task; beyond that it is rejected
//!   with [`ResilienceError::RateLimited`](crate::ResilienceError::RateLimited). So over
//!   any span the fleet admits at most `rate × span + burst` plus the credit outstanding
//!   (at most `burst` across the fleet), and less by the tokens leased and unused: a
//!   lease left unused for `max(2 × sync_interval, 1 s)` is dropped. With `burst` at
//!   least `rate × sync_interval`, a busy instance touches Redis about once per
//!   interval.
//! - **Redis unreachable.** A failed exchange (or none within `max(sync_interval, 250
//!   ms)`) turns every shared breaker back into a local one (its own window, its own
//!   timer) and every shared limit into its local share, `rate / instances last seen`
//!   (the instances that sent a heartbeat within `max(3 × sync_interval, 1 s)` of the
//!   last exchange); [`status`] and `health()` say `degraded`, and a warning is logged.
//!   The task retries every interval; when Redis answers again each instance rejoins
//!   (logged): the outcomes it recorded meanwhile are not reported, and the fleet's
//!   verdict replaces its local state.
//! - **Restarts.** [`install`] reads the fleet's breakers from Redis and the
//!   `state_file` (when set) before it returns: a breaker built afterwards under the name
//!   of one that is open starts open, with the time it had left, and breakers already
//!   built are opened in place. The `state_file` (JSON, replaced atomically) holds the
//!   open and forced-open breakers of the registry and is rewritten within one interval
//!   of a change; it suits a single instance without Redis (`redis_url` empty).
//!
//! Keys on Redis: `resilience:cb:{<name>}` (a hash), `resilience:cb:{<name>}:window`,
//! `resilience:cb:{<name>}:failing`, `resilience:rl:{<name>}`, `resilience:instances`.

mod scripts;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use resilience_core::shared::{self, FleetState, RestoredState, SharedBreaker, SharedLimit};
use resilience_core::{CircuitState, ConfigError, Settings, SlidingWindow};

pub use resilience_core::shared::{status, SharedStateHealth};

const TARGET: &str = "resilience::shared_state";
const INSTANCES_KEY: &str = "resilience:instances";

/// How [`install`] shares state (contract §10). `Default` gives Redis on
/// `127.0.0.1:6379/0`, the host name and process id as the instance, a 200 ms interval,
/// two instances to open, no state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedStateConfig {
    /// The Redis server holding the fleet's state; empty for none (a single instance
    /// keeping its breakers in `state_file`).
    pub redis_url: String,
    /// This instance's name among the others (no whitespace); default: host name and
    /// process id.
    pub instance_id: Option<String>,
    /// How often state is exchanged with Redis (10 ms to 60 s).
    pub sync_interval: Duration,
    /// Distinct instances that must report failures in a shared breaker's window before
    /// it opens (at least 1).
    pub min_instances_to_open: u32,
    /// A file keeping the registry's open breakers across restarts.
    pub state_file: Option<PathBuf>,
}

impl Default for SharedStateConfig {
    fn default() -> Self {
        Self {
            redis_url: "redis://127.0.0.1:6379/0".into(),
            instance_id: None,
            sync_interval: Duration::from_millis(200),
            min_instances_to_open: 2,
            state_file: None,
        }
    }
}

impl SharedStateConfig {
    /// The settings' `resilience: { shared_state: { … } }` over the defaults; `None`
    /// when the section is not there.
    pub fn from_settings(settings: &Settings) -> Option<Self> {
        let s = settings.shared_state()?;
        let mut config = Self::default();
        if let Some(url) = &s.redis_url {
            config.redis_url.clone_from(url);
        }
        config.instance_id.clone_from(&s.instance_id);
        if let Some(d) = s.sync_interval {
            config.sync_interval = d;
        }
        if let Some(n) = s.min_instances_to_open {
            config.min_instances_to_open = n;
        }
        config.state_file.clone_from(&s.state_file);
        Some(config)
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.checked().map(drop)
    }

    /// [`validate`](Self::validate), giving the Redis client (`None` with no URL).
    fn checked(&self) -> Result<Option<redis::Client>, ConfigError> {
        ConfigError::check("shared_state.sync_interval", resilience_rules::sync_interval(self.sync_interval))?;
        if self.min_instances_to_open == 0 {
            return Err(ConfigError::invalid("shared_state.min_instances_to_open", "must be at least 1"));
        }
        if let Some(id) = &self.instance_id {
            if id.is_empty() || id.chars().any(char::is_whitespace) {
                return Err(ConfigError::invalid("shared_state.instance_id", format!("`{id}` must be a word")));
            }
        }
        if self.redis_url.is_empty() {
            if self.state_file.is_none() {
                return Err(ConfigError::invalid(
                    "shared_state.redis_url",
                    "with no Redis URL there is nothing to share: give `redis_url`, or `state_file` to keep state across restarts",
                ));
            }
            return Ok(None);
        }
        ConfigError::check("shared_state.redis_url", resilience_rules::redis_url(&self.redis_url))?;
        redis::Client::open(self.redis_url.as_str())
            .map(Some)
            .map_err(|e| ConfigError::invalid("shared_state.redis_url", e.to_string()))
    }
}

static INSTALLED: Mutex<bool> = Mutex::new(false);

/// Starts sharing state: checks `config`, restores breaker state from Redis and the
/// state file, makes a first exchange with Redis (within `max(sync_interval, 250 ms)`),
/// and leaves a task on the current tokio runtime that keeps exchanging every
/// `sync_interval`. Redis being unreachable is not an error: the process starts with
/// local state, reports `degraded`, and joins when Redis answers.
///
/// Once per process: a second call is an error naming `shared_state`.
pub async fn install(config: SharedStateConfig) -> Result<(), ConfigError> {
    let client = config.checked()?;
    {
        let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        if *installed {
            return Err(ConfigError::invalid("shared_state", "shared state is already installed in this process"));
        }
        *installed = true;
    }
    let instance = config.instance_id.clone().unwrap_or_else(default_instance);
    let wait = config.sync_interval.max(Duration::from_millis(250));
    let sync = Arc::new(Sync {
        instance,
        heartbeat_ms: duration_ms(config.sync_interval.saturating_mul(3).max(Duration::from_secs(1))),
        wait,
        client,
        connection: Mutex::new(None),
        breaker_script: redis::Script::new(scripts::BREAKER),
        heartbeat_script: redis::Script::new(scripts::HEARTBEAT),
        lease_script: redis::Script::new(scripts::LEASE),
        state: Mutex::new(State::default()),
        config,
    });
    if let Some(path) = &sync.config.state_file {
        restore_from_file(path);
    }
    shared::set_status(Some(SharedStateHealth::Degraded));
    if sync.client.is_some() {
        if let Some(mut c) = sync.connect().await {
            if let Ok(Ok(open)) = tokio::time::timeout(wait, fleet_open_breakers(&mut c)).await {
                for (name, remaining) in open {
                    restore(&name, RestoredState::Open { remaining });
                }
            }
        }
    }
    sync.round().await;
    let task = Arc::clone(&sync);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(task.config.sync_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            task.round().await;
        }
    });
    Ok(())
}

fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into());
    let host: String = host.chars().filter(|c| !c.is_whitespace()).collect();
    format!("{host}-{}", std::process::id())
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, duration_ms)
}

/// Opens the breakers already built under `name` (in the registry or shared), or
/// remembers the state for the next one built.
fn restore(name: &str, state: RestoredState) {
    let mut found = false;
    let mut put = |b: &resilience_core::CircuitBreaker| {
        found = true;
        match state {
            RestoredState::Open { remaining } => b.resume_open(remaining),
            RestoredState::ForcedOpen => b.force_open(),
        }
    };
    if let Some(d) = resilience_core::registry().get(name) {
        if let Some(b) = d.pipeline().circuit_breaker() {
            put(b);
        }
    }
    for s in shared::shared_breakers() {
        if s.breaker().name() == name {
            put(s.breaker());
        }
    }
    if !found {
        shared::restore_breaker(name, state);
    }
}

/// What the synchronising task knows between rounds.
#[derive(Default)]
struct State {
    /// The last exchange succeeded.
    joined: bool,
    /// What the log last said: joined or degraded (`None` before the first exchange).
    logged: Option<bool>,
    /// Live instances at the last exchange.
    instances: u32,
    /// Per breaker name: the fleet generation of the last verdict.
    generations: HashMap<String, u64>,
    /// Shared limits with a lease task, by name.
    leasing: HashSet<String>,
    /// What the state file holds.
    file: Option<String>,
}

struct Sync {
    config: SharedStateConfig,
    instance: String,
    heartbeat_ms: u64,
    /// The longest an exchange may take before Redis counts as unreachable.
    wait: Duration,
    client: Option<redis::Client>,
    connection: Mutex<Option<MultiplexedConnection>>,
    breaker_script: redis::Script,
    heartbeat_script: redis::Script,
    lease_script: redis::Script,
    state: Mutex<State>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A breaker's keys on Redis (one hash slot: the name is the hash tag).
fn breaker_keys(name: &str) -> [String; 3] {
    let base = format!("resilience:cb:{{{name}}}");
    [format!("{base}:window"), format!("{base}:failing"), base]
}

async fn fleet_open_breakers(c: &mut MultiplexedConnection) -> redis::RedisResult<Vec<(String, Duration)>> {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("resilience:cb:{*}")
            .arg("COUNT")
            .arg(1000)
            .query_async(c)
            .await?;
        keys.extend(batch.into_iter().filter(|k| k.ends_with('}')));
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(c).await?;
    let now = secs * 1000 + micros / 1000;
    let mut open = Vec::new();
    for key in keys {
        let (state, until): (Option<u8>, Option<u64>) =
            redis::cmd("HMGET").arg(&key).arg("state").arg("until").query_async(c).await?;
        if state == Some(1) {
            let name = key.trim_start_matches("resilience:cb:{").trim_end_matches('}').to_owned();
            open.push((name, Duration::from_millis(until.unwrap_or(0).saturating_sub(now))));
        }
    }
    Ok(open)
}

impl Sync {
    /// The connection, connecting when there is none.
    async fn connect(&self) -> Option<MultiplexedConnection> {
        if let Some(c) = locked(&self.connection).clone() {
            return Some(c);
        }
        let client = self.client.as_ref()?;
        let timeouts = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.wait))
            .set_response_timeout(Some(self.wait));
        let mut c = client.get_multiplexed_async_connection_with_config(&timeouts).await.ok()?;
        // The exchange's pipeline calls the scripts by hash: load them first (a server
        // that restarted lost them, and every reconnection comes here).
        self.breaker_script.prepare_invoke().load_async(&mut c).await.ok()?;
        self.heartbeat_script.prepare_invoke().load_async(&mut c).await.ok()?;
        *locked(&self.connection) = Some(c.clone());
        Some(c)
    }

    /// One exchange: every shared breaker's report and verdict, the heartbeat, the
    /// limits' local shares and lease tasks, the state file.
    async fn round(self: &Arc<Self>) {
        let breakers = shared::shared_breakers();
        let limits = shared::shared_limits();
        if self.client.is_some() {
            let outcome = match self.connect().await {
                Some(mut c) => tokio::time::timeout(self.wait, self.exchange(&mut c, &breakers)).await,
                None => Ok(Err(redis::RedisError::from((redis::ErrorKind::Io, "no connection")))),
            };
            let joined = matches!(outcome, Ok(Ok(())));
            let instances = match &outcome {
                Ok(Ok(())) => locked(&self.state).instances,
                _ => {
                    *locked(&self.connection) = None;
                    // Not joined: report nothing of what was recorded meanwhile.
                    for b in &breakers {
                        b.set_joined(false);
                        let _ = b.take_report();
                    }
                    locked(&self.state).instances.max(1)
                }
            };
            let was = {
                let mut state = locked(&self.state);
                state.joined = joined;
                state.logged.replace(joined)
            };
            match (was, joined) {
                (Some(true), true) | (Some(false), false) => {}
                (_, true) => {
                    tracing::info!(target: TARGET, instance = %self.instance, "shared state joined: Redis answers")
                }
                (_, false) => {
                    let error = match &outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {:?}", self.wait),
                    };
                    tracing::warn!(target: TARGET, instance = %self.instance, %error,
                        "shared state degraded: Redis unreachable, running local breakers and local shares of shared limits")
                }
            }
            shared::set_status(Some(if joined { SharedStateHealth::Healthy } else { SharedStateHealth::Degraded }));
            metrics::gauge!("resilience_shared_state_healthy").set(f64::from(u8::from(joined)));
            metrics::counter!("resilience_shared_state_exchanges_total", "kind" => if joined { "ok" } else { "failed" })
                .increment(1);
            for l in &limits {
                l.set_local_share(instances);
                if !joined {
                    l.set_joined(false);
                }
            }
            self.start_lease_tasks(&limits);
        } else {
            shared::set_status(Some(SharedStateHealth::Healthy));
        }
        if let Some(path) = &self.config.state_file {
            self.write_state_file(path);
        }
    }

    /// One round trip: the heartbeat and every shared breaker's report in one pipeline
    /// (the scripts were loaded when the connection was made), then the verdicts.
    async fn exchange(&self, c: &mut MultiplexedConnection, breakers: &[SharedBreaker]) -> redis::RedisResult<()> {
        let rejoining = !locked(&self.state).joined;
        let mut pipe = redis::pipe();
        let mut heartbeat = self.heartbeat_script.key(INSTANCES_KEY);
        heartbeat.arg(&self.instance).arg(self.heartbeat_ms);
        pipe.invoke_script(&heartbeat);
        let mut sent = Vec::with_capacity(breakers.len());
        for b in breakers {
            let mut report = b.take_report();
            if rejoining {
                // Outcomes recorded while degraded are stale for the fleet.
                report.calls = 0;
                report.failures = 0;
                report.slow = 0;
                report.trial_successes = 0;
                report.trial_failures = 0;
            }
            let breaker = b.breaker();
            let config = breaker.config();
            let name = breaker.name().to_owned();
            let seen = locked(&self.state).generations.get(&name).copied().unwrap_or(0);
            let (kind, size) = match config.window {
                SlidingWindow::Count { size } => (0, u64::from(size.get())),
                SlidingWindow::Time { duration } => (1, duration_ms(duration)),
            };
            let slow_rate = config.slow_call_duration.map_or(-1.0, |_| config.slow_call_rate.unwrap_or(100.0));
            let trials = config.half_open_max_calls.map_or(config.success_threshold.get(), |n| n.get());
            let [window, failing, hash] = breaker_keys(&name);
            let mut invocation = self.breaker_script.key(hash);
            invocation
                .key(window)
                .key(failing)
                .key(INSTANCES_KEY)
                .arg(&self.instance)
                .arg(report.calls)
                .arg(report.failures)
                .arg(report.slow)
                .arg(report.trial_successes)
                .arg(report.trial_failures)
                .arg(report.wants_trials)
                .arg(seen)
                .arg(kind)
                .arg(size)
                .arg(config.failure_threshold.map_or(0, |t| t.get()))
                .arg(config.failure_rate.unwrap_or(-1.0))
                .arg(config.minimum_calls.get())
                .arg(slow_rate)
                .arg(duration_ms(config.recovery_timeout))
                .arg(trials)
                .arg(config.success_threshold.get())
                .arg(self.config.min_instances_to_open)
                .arg(self.heartbeat_ms);
            pipe.invoke_script(&invocation);
            sent.push((b, report, name));
        }
        let answers: Vec<redis::Value> = pipe.query_async(c).await?;
        let mut answers = answers.into_iter();
        let mut instances: u32 = redis::from_redis_value(answers.next().unwrap_or(redis::Value::Nil))?;
        for ((b, report, name), answer) in sent.into_iter().zip(answers) {
            let (state, generation, remaining, granted, .., live): (u8, u64, u64, u32, u64, u64, u32, u32) =
                redis::from_redis_value(answer)?;
            instances = live;
            locked(&self.state).generations.insert(name, generation);
            let verdict = match state {
                1 => FleetState::Open { remaining: Duration::from_millis(remaining) },
                2 => FleetState::HalfOpen { granted },
                _ => FleetState::Closed,
            };
            b.set_joined(true);
            b.apply(&report, verdict);
        }
        locked(&self.state).instances = instances.max(1);
        Ok(())
    }

    /// A lease task for every shared limit name that has none.
    fn start_lease_tasks(self: &Arc<Self>, limits: &[SharedLimit]) {
        let mut state = locked(&self.state);
        for l in limits {
            let name = l.limiter().name().to_owned();
            if state.leasing.insert(name.clone()) {
                tokio::spawn(Arc::clone(self).lease(name));
            }
        }
    }

    /// Leases tokens for the newest shared limit named `name` while it lives: whenever
    /// it runs dry, and when its lease expires.
    async fn lease(self: Arc<Self>, name: String) {
        let ttl = self.config.sync_interval.saturating_mul(2).max(Duration::from_secs(1));
        let key = format!("resilience:rl:{{{name}}}");
        let leased = metrics::counter!("resilience_shared_limit_leased_total", "name" => name.clone());
        let mut leased_at = Instant::now();
        // The newest limit of that name, looked up again once an interval (a
        // reconfiguration may replace it), not on every lease.
        let newest = || shared::shared_limits().into_iter().rev().find(|l| l.limiter().name() == name);
        let mut held: Option<(SharedLimit, Instant)> = None;
        loop {
            if held.as_ref().is_none_or(|(_, at)| at.elapsed() >= self.config.sync_interval) {
                held = newest().map(|l| (l, Instant::now()));
            }
            let Some((limit, _)) = &held else {
                locked(&self.state).leasing.remove(&name);
                return;
            };
            if !locked(&self.state).joined {
                limit.set_joined(false);
                tokio::time::sleep(self.config.sync_interval).await;
                continue;
            }
            if leased_at.elapsed() > ttl && limit.tokens() > 0 {
                limit.clear_tokens();
            }
            if !limit.joined() {
                // Redis answers: admit from leases, taking none before a call needs one
                // (a quiet instance holds no part of the fleet's limit; its first call is
                // admitted on credit and asks for the lease).
                limit.set_joined(true);
            }
            if !limit.take_dry() {
                tokio::select! {
                    () = limit.dry() => {}
                    () = tokio::time::sleep(self.config.sync_interval) => {}
                }
                continue;
            }
            let config = limit.limiter().config();
            let interval = 1e6 / config.rate;
            let burst = u64::from(config.burst.get());
            let want = burst + limit.debt();
            let Some(mut c) = self.connect().await else {
                tokio::time::sleep(self.config.sync_interval).await;
                continue;
            };
            let mut invocation = self.lease_script.key(&key);
            invocation.arg(interval).arg(interval * burst as f64).arg(want);
            match tokio::time::timeout(self.wait, invocation.invoke_async(&mut c)).await {
                Ok(Ok((granted, wait_us))) => {
                    let (granted, wait_us): (u64, u64) = (granted, wait_us);
                    limit.add_tokens(granted);
                    leased.increment(granted);
                    limit.set_joined(true);
                    leased_at = Instant::now();
                    if granted < want {
                        let pause =
                            Duration::from_micros(wait_us).clamp(Duration::from_millis(1), self.config.sync_interval);
                        tokio::time::sleep(pause).await;
                    }
                }
                _ => {
                    limit.set_joined(false);
                    tokio::time::sleep(self.config.sync_interval).await;
                }
            }
        }
    }

    /// Rewrites the state file when the registry's open breakers changed.
    fn write_state_file(&self, path: &Path) {
        // By name: `None` forced open, else open until this Unix time (ms).
        let mut open: std::collections::BTreeMap<String, Option<u64>> = std::collections::BTreeMap::new();
        let now = unix_ms();
        let mut add = |b: &resilience_core::CircuitBreaker| {
            let until = match b.state() {
                CircuitState::ForcedOpen => None,
                CircuitState::Open | CircuitState::HalfOpen => {
                    let left = b.config().recovery_timeout.saturating_sub(b.open_for().unwrap_or_default());
                    Some(now + duration_ms(left))
                }
                _ => return,
            };
            open.insert(b.name().to_owned(), until);
        };
        let registry = resilience_core::registry();
        for name in registry.names() {
            if let Some(b) = registry.get(&name).as_ref().and_then(|d| d.pipeline().circuit_breaker().cloned()) {
                add(&b);
            }
        }
        for s in shared::shared_breakers() {
            add(s.breaker());
        }
        // Rewrite only when a state changed, or an opening time moved by a second (a
        // breaker that re-opened between two rounds).
        let shape: Vec<(&String, Option<u64>)> = open.iter().map(|(k, until)| (k, until.map(|u| u / 1000))).collect();
        let shape = format!("{shape:?}");
        let mut state = locked(&self.state);
        if state.file.as_deref() == Some(shape.as_str()) {
            return;
        }
        let breakers: serde_json::Map<String, serde_json::Value> = open
            .iter()
            .map(|(name, until)| {
                let entry = match until {
                    None => serde_json::json!({ "state": "forced_open" }),
                    Some(until) => serde_json::json!({ "state": "open", "open_until_unix_ms": until }),
                };
                (name.clone(), entry)
            })
            .collect();
        let text = serde_json::json!({ "version": 1, "breakers": breakers }).to_string();
        let temporary = path.with_extension("tmp");
        let written = std::fs::write(&temporary, text).and_then(|()| std::fs::rename(&temporary, path));
        match written {
            Ok(()) => state.file = Some(shape),
            Err(e) => {
                tracing::warn!(target: TARGET, path = %path.display(), error = %e, "could not write the breaker state file")
            }
        }
    }
}

/// Restores the breakers a state file holds (a missing file holds none; an unreadable
/// one is logged and ignored: the process starts with closed breakers).
fn restore_from_file(path: &Path) {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::warn!(target: TARGET, path = %path.display(), error = %e, "could not read the breaker state file");
            return;
        }
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
        tracing::warn!(target: TARGET, path = %path.display(), "the breaker state file is not JSON; ignored");
        return;
    };
    let now = unix_ms();
    let Some(breakers) = value.get("breakers").and_then(|b| b.as_object()) else { return };
    for (name, entry) in breakers {
        match entry.get("state").and_then(|s| s.as_str()) {
            Some("forced_open") => restore(name, RestoredState::ForcedOpen),
            Some("open") => {
                let until = entry.get("open_until_unix_ms").and_then(serde_json::Value::as_u64).unwrap_or(0);
                restore(name, RestoredState::Open { remaining: Duration::from_millis(until.saturating_sub(now)) });
            }
            _ => {}
        }
    }
}
