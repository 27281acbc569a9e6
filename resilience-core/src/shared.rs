//! The instance's side of state shared across instances: what breakers and rate limiters
//! configured with `shared = true` expose to a synchronising task, such as the Redis one
//! of the `resilience` crate's `shared-state` feature (`resilience::shared_state`).
//!
//! Calls never wait on the shared store. A shared breaker tallies its outcomes on
//! per-thread stripes and keeps deciding locally; the task reads the tallies, reports
//! them, and [applies](SharedBreaker::apply) the fleet's verdict. A shared limiter admits
//! calls from tokens the task [leases](SharedLimit::add_tokens) in batches. While the
//! task is not [joined](SharedBreaker::set_joined) (nothing installed, or the store
//! unreachable) every breaker decides alone and every limiter enforces its
//! [local share](SharedLimit::set_local_share) of the limit.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use crate::circuit_breaker::{CircuitBreaker, CircuitState};
use crate::stripe::Striped;
use crate::sync::{lock, AtomicBool, AtomicU64, Mutex, Ordering::*};

/// Locks a list of this module's statics (plain `std` locks even under loom: these lists
/// are not model-checked).
fn lock_static<T>(m: &'static std::sync::Mutex<T>) -> std::sync::MutexGuard<'static, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether the shared state of this process is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SharedStateHealth {
    /// The store answers: shared breakers and limits follow the fleet.
    Healthy,
    /// The store does not answer: every instance runs its local breakers and its local
    /// share of each shared limit until it is back.
    Degraded,
}

/// The settings section `resilience: { shared_state: { … } }`, as written (keys left
/// out are `None`); `resilience::shared_state::SharedStateConfig` fills in the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SharedStateSettings {
    /// `redis_url`: the Redis server holding the shared state (empty: none).
    pub redis_url: Option<String>,
    /// `instance_id`: this instance's name among the others.
    pub instance_id: Option<String>,
    /// `sync_interval`: how often state is exchanged with the store.
    pub sync_interval: Option<Duration>,
    /// `min_instances_to_open`: distinct instances that must report failures before a
    /// shared breaker opens.
    pub min_instances_to_open: Option<u32>,
    /// `state_file`: a file keeping breaker state across restarts.
    pub state_file: Option<std::path::PathBuf>,
}

/// 0: nothing installed; 1: healthy; 2: degraded.
static STATUS: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Sets what [`status`] reports (the synchronising task's call).
pub fn set_status(status: Option<SharedStateHealth>) {
    let v = match status {
        None => 0,
        Some(SharedStateHealth::Healthy) => 1,
        Some(SharedStateHealth::Degraded) => 2,
    };
    STATUS.store(v, std::sync::atomic::Ordering::Release);
}

/// The shared state's health: `None` while none is installed.
pub fn status() -> Option<SharedStateHealth> {
    match STATUS.load(std::sync::atomic::Ordering::Acquire) {
        1 => Some(SharedStateHealth::Healthy),
        2 => Some(SharedStateHealth::Degraded),
        _ => None,
    }
}

/// What a breaker resumes in when it is built after its state was
/// [restored](restore_breaker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoredState {
    /// Open, with this much of its `recovery_timeout` left.
    Open {
        /// Time left before trial calls.
        remaining: Duration,
    },
    /// Forced open by hand.
    ForcedOpen,
}

static RESTORED: LazyLock<std::sync::Mutex<HashMap<String, RestoredState>>> =
    LazyLock::new(|| std::sync::Mutex::new(HashMap::new()));
static ANY_RESTORED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Remembers `state` for the breaker named `name`: the next breaker built under that
/// name starts in it (once), so a restarted process resumes an open breaker before its
/// first call. Returns nothing; a breaker already built is changed with
/// [`CircuitBreaker::resume_open`] or [`CircuitBreaker::force_open`].
pub fn restore_breaker(name: &str, state: RestoredState) {
    lock_static(&RESTORED).insert(name.to_owned(), state);
    ANY_RESTORED.store(true, std::sync::atomic::Ordering::Release);
}

/// The state remembered for `name`, taken (breakers call it as they are built).
pub(crate) fn take_restored(name: &str) -> Option<RestoredState> {
    if !ANY_RESTORED.load(std::sync::atomic::Ordering::Acquire) {
        return None;
    }
    lock_static(&RESTORED).remove(name)
}

/// Counters of [`BreakerLink::outcomes`].
pub(crate) const CALLS: usize = 0;
pub(crate) const FAILURES: usize = 1;
pub(crate) const SLOW: usize = 2;

/// The shared side of one breaker (present when `shared = true`).
pub(crate) struct BreakerLink {
    /// Calls recorded while closed, their failures and slow ones.
    pub(crate) outcomes: Striped<3>,
    pub(crate) trial_successes: AtomicU64,
    pub(crate) trial_failures: AtomicU64,
    /// Calls rejected (the demand for trial calls).
    pub(crate) rejected: AtomicU64,
    /// True while the fleet's verdicts are in force: the local window no longer opens
    /// the breaker, and half-open trials come from `granted`.
    pub(crate) joined: AtomicBool,
    /// Trial calls the fleet granted this half-open period.
    pub(crate) granted: AtomicU64,
    /// The cumulative counts at the last report: calls, failures, slow, trial
    /// successes, trial failures, rejected.
    reported: Mutex<[u64; 6]>,
}

impl BreakerLink {
    pub(crate) fn new() -> Self {
        Self {
            outcomes: Striped::new(),
            trial_successes: AtomicU64::new(0),
            trial_failures: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            joined: AtomicBool::new(false),
            granted: AtomicU64::new(0),
            reported: Mutex::new([0; 6]),
        }
    }

    /// Tallies one call recorded while closed, on this thread's stripe (one lookup).
    #[inline]
    pub(crate) fn tally(&self, failed: bool, slow: bool) {
        self.outcomes.add_each([1, u64::from(failed), u64::from(slow)]);
    }

    /// The counts since the last call (the first call: since the breaker was built).
    pub(crate) fn take(&self) -> [u64; 6] {
        let now = [
            self.outcomes.sum(CALLS),
            self.outcomes.sum(FAILURES),
            self.outcomes.sum(SLOW),
            self.trial_successes.load(Acquire),
            self.trial_failures.load(Acquire),
            self.rejected.load(Acquire),
        ];
        let mut reported = lock(&self.reported);
        let delta = std::array::from_fn(|i| now[i].wrapping_sub(reported[i]));
        *reported = now;
        delta
    }
}

/// What a shared breaker did since its last report, from [`SharedBreaker::take_report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerReport {
    /// Calls recorded while closed.
    pub calls: u64,
    /// Of them, failures.
    pub failures: u64,
    /// Of them, slow calls.
    pub slow: u64,
    /// Half-open trial calls that succeeded.
    pub trial_successes: u64,
    /// Half-open trial calls that failed.
    pub trial_failures: u64,
    /// Calls rejected.
    pub rejected: u64,
    /// The breaker's state when the report was taken.
    pub state: CircuitState,
    /// Trial calls it would take now (granted ones unused subtracted): non-zero only
    /// when it is open or half-open and calls are waiting for it.
    pub wants_trials: u32,
    /// The state word then, so that a verdict computed from this report is not applied
    /// over a later local change.
    pub(crate) word: u64,
}

/// The fleet's verdict on a shared breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetState {
    /// Closed for the fleet.
    Closed,
    /// Open for the fleet, with this much of the recovery time left.
    Open {
        /// Time left before trial calls.
        remaining: Duration,
    },
    /// Half-open for the fleet; this instance may make `granted` more trial calls.
    HalfOpen {
        /// Trial calls granted to this instance by this verdict.
        granted: u32,
    },
}

/// A shared breaker as the synchronising task sees it, from [`shared_breakers`].
#[derive(Clone)]
pub struct SharedBreaker {
    pub(crate) breaker: CircuitBreaker,
}

impl std::fmt::Debug for SharedBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBreaker").field("breaker", &self.breaker).finish()
    }
}

impl SharedBreaker {
    /// The breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }
}

pub(crate) static BREAKERS: std::sync::Mutex<Vec<Weak<crate::circuit_breaker::Inner>>> =
    std::sync::Mutex::new(Vec::new());

/// Every live breaker built with `shared = true`, in the order they were built (several
/// may share a name while a reconfiguration replaces one).
pub fn shared_breakers() -> Vec<SharedBreaker> {
    let mut list = lock_static(&BREAKERS);
    list.retain(|w| w.strong_count() > 0);
    list.iter().filter_map(Weak::upgrade).map(|inner| SharedBreaker { breaker: CircuitBreaker { inner } }).collect()
}

/// The shared side of one rate limiter (present when `shared = true`).
pub(crate) struct LimitLink {
    pub(crate) joined: std::sync::atomic::AtomicBool,
    /// Leased tokens left.
    pub(crate) tokens: std::sync::atomic::AtomicU64,
    /// Calls admitted from leases, and calls turned away for want of one.
    pub(crate) admitted: std::sync::atomic::AtomicU64,
    pub(crate) starved: std::sync::atomic::AtomicU64,
    /// Set when a call found no token; cleared by the task when it leases.
    pub(crate) dry: std::sync::atomic::AtomicBool,
    pub(crate) wake: tokio::sync::Notify,
    /// The local share while not joined: GCRA interval and tolerance in nanoseconds,
    /// and its arrival time.
    pub(crate) share_interval: std::sync::atomic::AtomicU64,
    pub(crate) share_tolerance: std::sync::atomic::AtomicU64,
    pub(crate) share_tat: std::sync::atomic::AtomicU64,
    /// Calls admitted on credit while out of tokens, and the most allowed.
    pub(crate) debt: std::sync::atomic::AtomicU64,
    pub(crate) debt_cap: std::sync::atomic::AtomicU64,
}

/// A shared rate limiter as the synchronising task sees it, from [`shared_limits`].
#[derive(Clone)]
pub struct SharedLimit {
    pub(crate) limiter: crate::rate_limit::RateLimiter,
}

impl std::fmt::Debug for SharedLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimit").field("limiter", &self.limiter).finish()
    }
}

pub(crate) static LIMITS: std::sync::Mutex<Vec<Weak<crate::rate_limit::Single>>> = std::sync::Mutex::new(Vec::new());

/// Every live rate limiter built with `shared = true`.
pub fn shared_limits() -> Vec<SharedLimit> {
    let mut list = lock_static(&LIMITS);
    list.retain(|w| w.strong_count() > 0);
    list.iter()
        .filter_map(Weak::upgrade)
        .map(|inner| SharedLimit { limiter: crate::rate_limit::RateLimiter { inner } })
        .collect()
}

/// Registers a newly built shared policy.
pub(crate) fn register<T>(list: &'static std::sync::Mutex<Vec<Weak<T>>>, item: &Arc<T>) {
    let mut list = lock_static(list);
    list.retain(|w| w.strong_count() > 0);
    list.push(Arc::downgrade(item));
}
