//! The circuit breaker: stops calling a dependency that keeps failing, and tries it
//! again after a pause.
//!
//! ```
//! use resilience_core::{CircuitBreaker, CircuitBreakerConfig, CircuitState, ResilienceError};
//! use std::num::NonZeroU32;
//!
//! #[derive(Debug)]
//! enum InventoryError { Down, Rejected(ResilienceError) }
//! impl From<ResilienceError> for InventoryError {
//!     fn from(e: ResilienceError) -> Self { Self::Rejected(e) }
//! }
//!
//! let breaker = CircuitBreaker::new(
//!     "inventory",
//!     CircuitBreakerConfig { failure_threshold: NonZeroU32::new(2), ..Default::default() },
//! )?;
//! for _ in 0..2 {
//!     let _ = breaker.call_blocking(|| Err::<(), _>(InventoryError::Down));
//! }
//! assert_eq!(breaker.state(), CircuitState::Open);
//! // Rejected without running the body.
//! let rejected = breaker.call_blocking(|| -> Result<(), InventoryError> { unreachable!() });
//! assert!(matches!(rejected, Err(InventoryError::Rejected(ResilienceError::CircuitOpen { .. }))));
//! # Ok::<(), resilience_core::ConfigError>(())
//! ```

mod config;
mod state;
mod window;

pub use config::{CircuitBreakerConfig, SlidingWindow, MAX_HALF_OPEN_CALLS, MAX_WINDOW_SIZE};
pub use state::{CircuitState, TransitionReason};

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{duration_nanos, Epoch};
use crate::error::{ConfigError, ResilienceError};
use crate::observe::metrics::BreakerMetrics;
use crate::shared::{self, BreakerLink, BreakerReport, FleetState, RestoredState, SharedBreaker};
use crate::sync::{lock, AtomicU64, Mutex, Ordering::*};
use state::{
    generation_of, half_open_word, is_closed, issued, pack, same_half_open_period, state_of, successes, ISSUED_ONE,
};
use window::{CountWindow, Stats, TimeWindow};

/// A change of state, as given to [`CircuitBreaker::subscribe`] callbacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateTransition {
    /// The breaker's name.
    pub name: Arc<str>,
    /// The state left.
    pub from: CircuitState,
    /// The state entered.
    pub to: CircuitState,
    /// What caused the change.
    pub reason: TransitionReason,
}

/// Counts over a breaker's current window, read without making a call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CircuitBreakerMetrics {
    /// The state.
    pub state: CircuitState,
    /// Calls in the window.
    pub calls: u64,
    /// Failed calls in the window.
    pub failed_calls: u64,
    /// Slow calls in the window.
    pub slow_calls: u64,
    /// Failed calls as a percentage of calls in the window (0 when empty).
    pub failure_rate: f64,
    /// Slow calls as a percentage of calls in the window (0 when empty).
    pub slow_call_rate: f64,
}

type Listener = Arc<dyn Fn(&StateTransition) + Send + Sync>;

enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

/// A circuit breaker. Cloning gives another handle to the same breaker.
///
/// Closed, the breaker lets calls through and records their outcomes in a sliding
/// window; when the window meets a condition of its [`CircuitBreakerConfig`] it opens and
/// rejects calls with [`ResilienceError::CircuitOpen`] without running them. After
/// `recovery_timeout` it turns half-open and lets trial calls through: enough successes
/// close it, any failure opens it again.
///
/// The closed path takes no lock and allocates nothing; a healthy dependency's calls only
/// read the breaker's memory. Every transition is a `tracing` event (target
/// `resilience::circuit_breaker`) and is passed to [subscribers](Self::subscribe).
#[derive(Clone)]
pub struct CircuitBreaker {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    name: Arc<str>,
    config: CircuitBreakerConfig,
    /// Needs a clock reading at the start of each call (slow-call tracking).
    times_calls: bool,
    recovery_nanos: u64,
    slow_nanos: u64,
    half_open_calls: u32,
    state: AtomicU64,
    opened_at: AtomicU64,
    half_open: AtomicU64,
    window: Window,
    epoch: Epoch,
    /// Held while changing state, so transitions are serialised; holds the subscribers.
    listeners: Mutex<Arc<Vec<Listener>>>,
    metrics: BreakerMetrics,
    /// The shared side, for a breaker built with `shared = true`.
    shared: Option<Box<BreakerLink>>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.inner.name)
            .field("state", &self.state())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl CircuitBreaker {
    /// Builds a breaker, closed (or disabled when `config.enabled` is false).
    pub fn new(name: impl Into<Arc<str>>, config: CircuitBreakerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        // Early enough that a breaker opened a whole `recovery_timeout` ago can be
        // represented (`resume_open`), by whole buckets of a time window, so that its
        // buckets start where they would from now.
        let mut back = duration_nanos(config.recovery_timeout.min(Duration::from_secs(86_400)));
        if let SlidingWindow::Time { duration } = config.window {
            let width = (duration_nanos(duration) / window::BUCKETS).max(1);
            back = back.div_ceil(width).saturating_mul(width);
        }
        let epoch = Epoch::before(Duration::from_nanos(back));
        let window = match config.window {
            SlidingWindow::Count { size } => {
                Window::Count(CountWindow::new(size.get(), config.slow_call_duration.is_some()))
            }
            SlidingWindow::Time { duration } => Window::Time(TimeWindow::new(duration_nanos(duration))),
        };
        let initial = if config.enabled { CircuitState::Closed } else { CircuitState::Disabled };
        let name: Arc<str> = name.into();
        let breaker = Self {
            inner: Arc::new(Inner {
                name: Arc::clone(&name),
                times_calls: config.slow_call_duration.is_some(),
                recovery_nanos: duration_nanos(config.recovery_timeout),
                slow_nanos: config.slow_call_duration.map_or(u64::MAX, duration_nanos),
                half_open_calls: config.half_open_calls(),
                config,
                state: AtomicU64::new(pack(initial, 0)),
                opened_at: AtomicU64::new(0),
                half_open: AtomicU64::new(half_open_word(0)),
                window,
                epoch,
                listeners: Mutex::new(Arc::new(Vec::new())),
                metrics: {
                    let m = BreakerMetrics::new(&name);
                    m.set_state(initial);
                    m
                },
                shared: (config.shared && config.enabled).then(|| Box::new(BreakerLink::new())),
            }),
        };
        if breaker.inner.shared.is_some() {
            shared::register(&shared::BREAKERS, &breaker.inner);
        }
        if config.enabled {
            match shared::take_restored(&breaker.inner.name) {
                Some(RestoredState::Open { remaining }) => breaker.resume_open(remaining),
                Some(RestoredState::ForcedOpen) => breaker.force_open(),
                None => {}
            }
        }
        Ok(breaker)
    }

    /// Opens the breaker as one that opened earlier and has `remaining` of its
    /// `recovery_timeout` left (at most all of it): how a restarted process resumes an
    /// open breaker. Does nothing to a forced-open or disabled breaker.
    pub fn resume_open(&self, remaining: Duration) {
        let inner = &*self.inner;
        loop {
            let word = inner.state.load(Acquire);
            match state_of(word) {
                CircuitState::ForcedOpen | CircuitState::Disabled => return,
                CircuitState::Open => return inner.set_remaining(remaining),
                _ => {
                    if inner.reopen(word, remaining) {
                        return;
                    }
                }
            }
        }
    }

    /// Whether the breaker was built with `shared = true`.
    pub fn is_shared(&self) -> bool {
        self.inner.shared.is_some()
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.inner.config
    }

    /// The current state. An open breaker whose `recovery_timeout` has passed reports
    /// `Open` until the next call turns it half-open.
    pub fn state(&self) -> CircuitState {
        state_of(self.inner.state.load(Acquire))
    }

    /// Counts over the current window.
    pub fn metrics(&self) -> CircuitBreakerMetrics {
        let inner = &*self.inner;
        let stats = match &inner.window {
            Window::Count(w) => w.stats(),
            Window::Time(w) => w.stats(inner.epoch.nanos()),
        };
        let rate = |n: u64| if stats.calls == 0 { 0.0 } else { n as f64 * 100.0 / stats.calls as f64 };
        CircuitBreakerMetrics {
            state: self.state(),
            calls: stats.calls,
            failed_calls: stats.failures,
            slow_calls: stats.slow,
            failure_rate: rate(stats.failures),
            slow_call_rate: rate(stats.slow),
        }
    }

    /// How long the breaker has been open (or forced open); `None` in any other state.
    pub fn open_for(&self) -> Option<Duration> {
        match self.state() {
            CircuitState::Open | CircuitState::ForcedOpen => {
                let inner = &*self.inner;
                Some(Duration::from_nanos(inner.now_nanos().saturating_sub(inner.opened_at.load(Acquire))))
            }
            _ => None,
        }
    }

    /// Sets the state and failure-rate gauges to the current values.
    pub(crate) fn refresh_gauges(&self) {
        let m = self.metrics();
        self.inner.metrics.set_state(m.state);
        self.inner.metrics.failure_rate.set(m.failure_rate);
    }

    /// Calls `listener` on every later transition, after the state has changed.
    ///
    /// Listeners run on the thread that caused the transition and must not block.
    pub fn subscribe(&self, listener: impl Fn(&StateTransition) + Send + Sync + 'static) {
        let mut guard = lock(&self.inner.listeners);
        let mut list = Vec::clone(&guard);
        list.push(Arc::new(listener));
        *guard = Arc::new(list);
    }

    /// Asks to make a call. On success the returned permit must be told the outcome;
    /// dropping it unrecorded releases it (a cancelled call), or records a failure when
    /// the thread is panicking.
    #[inline]
    pub fn try_acquire(&self) -> Result<CallPermit<'_>, ResilienceError> {
        CircuitBreakerRef(&self.inner).try_acquire()
    }

    /// Opens the breaker until [`reset`](Self::reset).
    pub fn force_open(&self) {
        self.inner.transition_from_any(CircuitState::ForcedOpen, TransitionReason::ForcedOpen);
    }

    /// Lets every call through and records nothing, until [`reset`](Self::reset).
    pub fn disable(&self) {
        self.inner.transition_from_any(CircuitState::Disabled, TransitionReason::Disabled);
    }

    /// Closes the breaker and clears its window.
    pub fn reset(&self) {
        self.inner.transition_from_any(CircuitState::Closed, TransitionReason::Reset);
    }

    /// Runs `body` if the breaker permits, recording every error as a failure. The
    /// breaker is asked when the returned future is first polled; a rejected call never
    /// polls `body`.
    pub fn call<T, E, Fut>(&self, body: Fut) -> BreakerCall<'_, Fut, fn(&E) -> bool>
    where
        Fut: Future<Output = Result<T, E>>,
        E: From<ResilienceError>,
    {
        fn always<E>(_: &E) -> bool {
            true
        }
        self.call_with(always::<E>, body)
    }

    /// Runs `body` if the breaker permits; an error counts as a failure when `record_if`
    /// says so, and is otherwise ignored (neither success nor failure).
    pub fn call_with<T, E, Fut, R>(&self, record_if: R, body: Fut) -> BreakerCall<'_, Fut, R>
    where
        Fut: Future<Output = Result<T, E>>,
        E: From<ResilienceError>,
        R: Fn(&E) -> bool,
    {
        BreakerCall { body, breaker: &self.inner, permit: None, asked: false, record_if }
    }

    /// The blocking form of [`call`](Self::call).
    pub fn call_blocking<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce() -> Result<T, E>,
        E: From<ResilienceError>,
    {
        self.call_blocking_with(|_: &E| true, f)
    }

    /// The blocking form of [`call_with`](Self::call_with).
    pub fn call_blocking_with<T, E, F>(&self, record_if: impl Fn(&E) -> bool, f: F) -> Result<T, E>
    where
        F: FnOnce() -> Result<T, E>,
        E: From<ResilienceError>,
    {
        let permit = self.try_acquire()?;
        let result = f();
        permit.record_result(&result, record_if);
        result
    }
}

impl Inner {
    #[inline]
    fn closed_permit(&self, word: u64) -> CallPermit<'_> {
        CallPermit { breaker: self, word, start: self.start_stamp() }
    }

    /// The start of a timed call (nanoseconds since the epoch, plus one), or 0 when
    /// slowness is not tracked.
    #[inline]
    fn start_stamp(&self) -> u64 {
        if self.times_calls {
            self.now_nanos() + 1
        } else {
            0
        }
    }

    fn now_nanos(&self) -> u64 {
        self.epoch.nanos()
    }

    /// Sets an open breaker's opening time so that `remaining` of its recovery is left.
    fn set_remaining(&self, remaining: Duration) {
        let left = duration_nanos(remaining).min(self.recovery_nanos);
        let now = self.now_nanos();
        // Before the epoch cannot be stored: then the breaker waits a little longer.
        self.opened_at.store(now.saturating_sub(self.recovery_nanos - left), Release);
    }

    /// Opens the breaker from the state word `expected` with `remaining` of its recovery
    /// left (a resumed or the fleet's open state); false if the state changed first.
    fn reopen(&self, expected: u64, remaining: Duration) -> bool {
        let changed = self.transition(expected, CircuitState::Open, TransitionReason::Shared);
        if changed {
            self.set_remaining(remaining);
        }
        changed
    }

    /// Whether the fleet's verdicts are in force.
    #[inline]
    fn joined(&self) -> bool {
        self.shared.as_ref().is_some_and(|l| l.joined.load(Acquire))
    }

    /// Trial calls this half-open period may make here.
    fn trial_limit(&self) -> u32 {
        match &self.shared {
            Some(l) if l.joined.load(Acquire) => l.granted.load(Acquire).min(u64::from(self.half_open_calls)) as u32,
            _ => self.half_open_calls,
        }
    }

    #[cold]
    fn acquire_slow(&self, mut word: u64) -> Result<CallPermit<'_>, ResilienceError> {
        loop {
            match state_of(word) {
                CircuitState::Closed => return Ok(self.closed_permit(word)),
                CircuitState::Disabled => return Ok(CallPermit { breaker: self, word: UNRECORDED, start: 0 }),
                CircuitState::ForcedOpen => return Err(self.not_permitted(None)),
                CircuitState::Open => {
                    let elapsed = self.now_nanos().saturating_sub(self.opened_at.load(Acquire));
                    if elapsed < self.recovery_nanos {
                        let wait = Duration::from_nanos(self.recovery_nanos - elapsed);
                        return Err(self.not_permitted(Some(wait)));
                    }
                    if self.joined() {
                        // The fleet turns a shared breaker half-open, and grants its trials.
                        return Err(self.not_permitted(None));
                    }
                    self.transition(word, CircuitState::HalfOpen, TransitionReason::RecoveryTimeout);
                }
                CircuitState::HalfOpen => {
                    let mut trials = self.half_open.load(Acquire);
                    let limit = self.trial_limit();
                    while same_half_open_period(trials, word) {
                        if issued(trials) >= limit {
                            // The trials decide: if one fails, the breaker stays open for
                            // `recovery_timeout` from then, so that is the hint.
                            return Err(self.not_permitted(Some(Duration::from_nanos(self.recovery_nanos))));
                        }
                        match self.half_open.compare_exchange_weak(trials, trials + ISSUED_ONE, AcqRel, Acquire) {
                            Ok(_) => return Ok(CallPermit { breaker: self, word, start: self.start_stamp() }),
                            Err(actual) => trials = actual,
                        }
                    }
                }
            }
            word = self.state.load(Acquire);
        }
    }

    #[cold]
    fn not_permitted(&self, retry_after: Option<Duration>) -> ResilienceError {
        self.metrics.not_permitted();
        if let Some(link) = &self.shared {
            link.rejected.fetch_add(1, Relaxed);
        }
        ResilienceError::circuit_open(&self.name, retry_after)
    }

    fn is_slow(&self, start: u64) -> bool {
        start != 0 && self.now_nanos().saturating_sub(start - 1) >= self.slow_nanos
    }

    fn record_closed(&self, word: u64, failed: bool, slow: bool) {
        let stats = match &self.window {
            Window::Count(w) => {
                // A fast success into a window of fast successes changes nothing; skip even
                // the state check so a healthy call writes no shared memory.
                if !failed && !slow && w.is_quiet() {
                    return;
                }
                if self.state.load(Acquire) != word {
                    return;
                }
                w.record(failed, slow)
            }
            Window::Time(w) => {
                if self.state.load(Acquire) != word {
                    return;
                }
                Some(w.record(self.now_nanos(), failed, slow))
            }
        };
        if let Some(s) = stats {
            self.metrics.failure_rate.set(if s.calls == 0 { 0.0 } else { s.failures as f64 * 100.0 / s.calls as f64 });
        }
        // A joined shared breaker is opened by the fleet's window, not its own.
        if let Some(reason) = stats.and_then(|s| self.trip_reason(s)).filter(|_| !self.joined()) {
            self.transition(word, CircuitState::Open, reason);
        }
    }

    fn trip_reason(&self, s: Stats) -> Option<TransitionReason> {
        let c = &self.config;
        if c.failure_threshold.is_some_and(|t| s.failures >= u64::from(t.get())) {
            return Some(TransitionReason::FailureThreshold);
        }
        if s.calls == 0 || s.calls < u64::from(c.minimum_calls.get()) {
            return None;
        }
        let reached = |count: u64, rate: f64| count as f64 * 100.0 >= rate * s.calls as f64;
        if c.failure_rate.is_some_and(|r| reached(s.failures, r)) {
            return Some(TransitionReason::FailureRate);
        }
        if c.effective_slow_call_rate().is_some_and(|r| reached(s.slow, r)) {
            return Some(TransitionReason::SlowCallRate);
        }
        None
    }

    /// A trial call ended. `failed` is `None` for a call that said nothing about the
    /// dependency (cancelled or ignored): its trial slot is handed back.
    fn record_trial(&self, word: u64, failed: Option<bool>) {
        let mut trials = self.half_open.load(Acquire);
        loop {
            if !same_half_open_period(trials, word) {
                return;
            }
            let next = match failed {
                None => trials - ISSUED_ONE,
                Some(false) => trials + 1,
                Some(true) => break,
            };
            match self.half_open.compare_exchange_weak(trials, next, AcqRel, Acquire) {
                Ok(_) => {
                    if failed == Some(false) && successes(next) >= self.config.success_threshold.get() {
                        self.transition(word, CircuitState::Closed, TransitionReason::TrialsSucceeded);
                    }
                    return;
                }
                Err(actual) => trials = actual,
            }
        }
        self.transition(word, CircuitState::Open, TransitionReason::TrialFailed);
    }

    fn transition_from_any(&self, to: CircuitState, reason: TransitionReason) {
        loop {
            let word = self.state.load(Acquire);
            if self.transition(word, to, reason) {
                return;
            }
        }
    }

    /// Moves from the state word `expected` to `to`; false if the state changed first.
    fn transition(&self, expected: u64, to: CircuitState, reason: TransitionReason) -> bool {
        let listeners = {
            let guard = lock(&self.listeners);
            if self.state.load(Acquire) != expected {
                return false;
            }
            let generation = generation_of(expected) + 1;
            match to {
                CircuitState::Open | CircuitState::ForcedOpen => self.opened_at.store(self.now_nanos(), Release),
                CircuitState::HalfOpen => {
                    if let Some(link) = &self.shared {
                        link.granted.store(0, Release);
                    }
                    self.half_open.store(half_open_word(generation), Release)
                }
                CircuitState::Closed => match &self.window {
                    Window::Count(w) => w.reset(),
                    Window::Time(w) => w.reset(),
                },
                CircuitState::Disabled => {}
            }
            self.state.store(pack(to, generation), Release);
            Arc::clone(&guard)
        };
        let change = StateTransition { name: Arc::clone(&self.name), from: state_of(expected), to, reason };
        self.metrics.transition(change.from, to);
        if to == CircuitState::Closed || to == CircuitState::Open {
            self.metrics.failure_rate.set(0.0);
        }
        emit(&change);
        for listener in listeners.iter() {
            listener(&change);
        }
        true
    }
}

fn emit(t: &StateTransition) {
    const TARGET: &str = "resilience::circuit_breaker";
    let (name, from, to, reason) = (&*t.name, t.from.as_str(), t.to.as_str(), t.reason.as_str());
    match t.to {
        CircuitState::Open | CircuitState::ForcedOpen => {
            tracing::warn!(target: TARGET, name, from, to, reason, "circuit breaker opened")
        }
        _ => tracing::info!(target: TARGET, name, from, to, reason, "circuit breaker changed state"),
    }
}

/// The `word` of a permit that has nothing (more) to record: finished, or taken from a
/// disabled breaker. Its tag bits decode as no state a permit is taken in.
const UNRECORDED: u64 = u64::MAX;

/// Permission to make one call, from [`CircuitBreaker::try_acquire`].
///
/// Tell it the outcome with [`success`](Self::success), [`failure`](Self::failure) or
/// [`ignore`](Self::ignore). Dropped without an outcome it counts as a cancelled call
/// (nothing recorded, a half-open trial slot handed back), or as a failure if dropped
/// while the thread panics.
#[must_use = "a permit records nothing unless told the outcome"]
pub struct CallPermit<'a> {
    // Whole words only: permits are built and moved on the hot path, and mixed-size
    // fields there cost store-forwarding stalls.
    breaker: &'a Inner,
    /// The state word the permit was taken in, or `UNRECORDED`.
    word: u64,
    /// See `Inner::start_stamp`.
    start: u64,
}

impl fmt::Debug for CallPermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallPermit").field("breaker", &self.breaker.name).finish_non_exhaustive()
    }
}

impl CallPermit<'_> {
    /// The call succeeded (it still counts as slow if it took `slow_call_duration`).
    #[inline]
    pub fn success(mut self) {
        // The hot path: a fast success into a window of fast successes changes nothing.
        if self.start == 0 && is_closed(self.word) {
            if let Window::Count(w) = &self.breaker.window {
                if w.is_quiet() {
                    self.word = UNRECORDED;
                    self.breaker.metrics.successful();
                    if let Some(link) = &self.breaker.shared {
                        link.outcomes.add(shared::CALLS, 1);
                    }
                    return;
                }
            }
        }
        self.finish(Some(false));
    }

    /// The call failed.
    pub fn failure(mut self) {
        self.finish(Some(true));
    }

    /// The call's outcome says nothing about the dependency.
    pub fn ignore(mut self) {
        if self.word != UNRECORDED {
            self.breaker.metrics.ignored();
        }
        self.finish(None);
    }

    /// Records `Ok` as a success and `Err(e)` as a failure if `record_if(e)`, else ignores it.
    #[inline]
    pub fn record_result<T, E>(self, result: &Result<T, E>, record_if: impl Fn(&E) -> bool) {
        match result {
            Ok(_) => self.success(),
            Err(e) if record_if(e) => self.failure(),
            Err(_) => self.ignore(),
        }
    }

    #[inline(never)]
    fn finish(&mut self, failed: Option<bool>) {
        let word = std::mem::replace(&mut self.word, UNRECORDED);
        let breaker = self.breaker;
        match failed {
            _ if word == UNRECORDED => {}
            Some(false) => breaker.metrics.successful(),
            Some(true) => breaker.metrics.failed(),
            None => {}
        }
        match state_of(word) {
            _ if word == UNRECORDED => {}
            CircuitState::Closed => {
                if let Some(failed) = failed {
                    let slow = breaker.is_slow(self.start);
                    if let Some(link) = &breaker.shared {
                        link.tally(failed, slow);
                    }
                    breaker.record_closed(word, failed, slow);
                }
            }
            CircuitState::HalfOpen => {
                // A slow trial is not a success: the dependency is not healthy yet.
                let failed = failed.map(|f| f || breaker.is_slow(self.start));
                if let (Some(link), Some(failed)) = (&breaker.shared, failed) {
                    let counter = if failed { &link.trial_failures } else { &link.trial_successes };
                    counter.fetch_add(1, Relaxed);
                }
                breaker.record_trial(word, failed);
            }
            _ => {}
        }
    }
}

impl Drop for CallPermit<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.word != UNRECORDED {
            let failed = std::thread::panicking().then_some(true);
            self.finish(failed);
        }
    }
}

#[cfg(all(test, resilience_loom))]
mod loom_tests {
    use super::*;
    use loom::thread;
    use std::num::NonZeroU32;

    fn half_open(trials: u32) -> CircuitBreaker {
        let b = CircuitBreaker::new(
            "loom",
            CircuitBreakerConfig {
                failure_threshold: NonZeroU32::new(1),
                recovery_timeout: Duration::ZERO,
                half_open_max_calls: NonZeroU32::new(trials),
                success_threshold: NonZeroU32::MIN,
                ..Default::default()
            },
        )
        .unwrap();
        b.try_acquire().unwrap().failure();
        b
    }

    #[test]
    fn one_trial_slot_goes_to_one_caller() {
        loom::model(|| {
            let b = half_open(1);
            let other = {
                let b = b.clone();
                thread::spawn(move || b.try_acquire().map(drop).is_ok())
            };
            let mine = b.try_acquire().map(drop).is_ok();
            let theirs = other.join().unwrap();
            // Both may succeed only one after the other (the first dropped its permit);
            // at least one must succeed, and the slot must be free at the end.
            assert!(mine || theirs);
            assert_eq!(b.state(), CircuitState::HalfOpen);
            b.try_acquire().expect("the slot was handed back").success();
            assert_eq!(b.state(), CircuitState::Closed);
        });
    }

    #[test]
    fn a_shared_breakers_outcomes_are_each_reported_once() {
        loom::model(|| {
            let b = CircuitBreaker::new(
                "loom_shared",
                CircuitBreakerConfig { failure_threshold: NonZeroU32::new(100), shared: true, ..Default::default() },
            )
            .unwrap();
            let handle = SharedBreaker { breaker: b.clone() };
            handle.set_joined(true);
            let other = {
                let b = b.clone();
                thread::spawn(move || b.try_acquire().unwrap().failure())
            };
            b.try_acquire().unwrap().success();
            // A report taken while the other thread records, and one after.
            let first = handle.take_report();
            other.join().unwrap();
            let second = handle.take_report();
            assert_eq!(first.calls + second.calls, 2);
            assert_eq!(first.failures + second.failures, 1);
            assert_eq!(b.state(), CircuitState::Closed);
        });
    }

    #[test]
    fn a_failed_trial_wins_over_a_racing_success() {
        loom::model(|| {
            // Two successes would close it; one failure must keep it from closing.
            let b = CircuitBreaker::new(
                "loom",
                CircuitBreakerConfig {
                    failure_threshold: NonZeroU32::new(1),
                    recovery_timeout: Duration::ZERO,
                    half_open_max_calls: NonZeroU32::new(2),
                    success_threshold: NonZeroU32::new(2).unwrap(),
                    ..Default::default()
                },
            )
            .unwrap();
            b.try_acquire().unwrap().failure();
            let failing = {
                let b = b.clone();
                thread::spawn(move || {
                    if let Ok(p) = b.try_acquire() {
                        p.failure();
                    }
                })
            };
            if let Ok(p) = b.try_acquire() {
                p.success();
            }
            failing.join().unwrap();
            assert_ne!(b.state(), CircuitState::Closed);
        });
    }
}

pin_project_lite::pin_project! {
    /// The future of [`CircuitBreaker::call`] and [`CircuitBreaker::call_with`]: asks the
    /// breaker on its first poll, then polls the body and records its outcome.
    #[must_use = "futures do nothing unless polled"]
    pub struct BreakerCall<'a, Fut, R> {
        // The body drops before the permit it ran under.
        #[pin]
        body: Fut,
        breaker: &'a Inner,
        permit: Option<CallPermit<'a>>,
        asked: bool,
        record_if: R,
    }
}

impl<Fut, R> fmt::Debug for BreakerCall<'_, Fut, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerCall").field("breaker", &self.breaker.name).finish_non_exhaustive()
    }
}

impl<T, E, Fut, R> Future for BreakerCall<'_, Fut, R>
where
    Fut: Future<Output = Result<T, E>>,
    E: From<ResilienceError>,
    R: Fn(&E) -> bool,
{
    type Output = Result<T, E>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let this = self.project();
        if !*this.asked {
            *this.asked = true;
            match CircuitBreakerRef(this.breaker).try_acquire() {
                Ok(permit) => *this.permit = Some(permit),
                Err(rejected) => return std::task::Poll::Ready(Err(E::from(rejected))),
            }
        }
        let result = std::task::ready!(this.body.poll(cx));
        if let Some(permit) = this.permit.take() {
            permit.record_result(&result, &*this.record_if);
        }
        std::task::Poll::Ready(result)
    }
}

/// `try_acquire` on the shared state, for futures that hold `&Inner`.
struct CircuitBreakerRef<'a>(&'a Inner);

impl<'a> CircuitBreakerRef<'a> {
    #[inline]
    fn try_acquire(self) -> Result<CallPermit<'a>, ResilienceError> {
        let word = self.0.state.load(Acquire);
        if is_closed(word) {
            Ok(self.0.closed_permit(word))
        } else {
            self.0.acquire_slow(word)
        }
    }
}

impl SharedBreaker {
    /// What the breaker did since the last report (the first: since it was built).
    pub fn take_report(&self) -> BreakerReport {
        let inner = &*self.breaker.inner;
        let word = inner.state.load(Acquire);
        let [calls, failures, slow, trial_successes, trial_failures, rejected] =
            inner.shared.as_ref().map_or([0; 6], |l| l.take());
        let state = state_of(word);
        let wants_trials = match (&inner.shared, state) {
            (Some(link), CircuitState::Open | CircuitState::HalfOpen) if rejected > 0 => {
                let trials = inner.half_open.load(Acquire);
                let used = if state == CircuitState::HalfOpen && same_half_open_period(trials, word) {
                    u64::from(issued(trials))
                } else {
                    0
                };
                // The period's trials not yet granted (more may have been issued than
                // granted while not joined).
                let granted = link.granted.load(Acquire).max(used);
                u64::from(inner.half_open_calls).saturating_sub(granted) as u32
            }
            _ => 0,
        };
        BreakerReport { calls, failures, slow, trial_successes, trial_failures, rejected, state, wants_trials, word }
    }

    /// Puts the fleet's verdict in force, unless the breaker changed state since
    /// `report` was taken (the next report carries that change) or is forced open or
    /// disabled. Returns whether it changed the breaker.
    pub fn apply(&self, report: &BreakerReport, verdict: FleetState) -> bool {
        let inner = &*self.breaker.inner;
        let word = inner.state.load(Acquire);
        if word != report.word {
            return false;
        }
        let Some(link) = &inner.shared else { return false };
        match (state_of(word), verdict) {
            (CircuitState::ForcedOpen | CircuitState::Disabled, _) => false,
            (CircuitState::Open, FleetState::Open { remaining }) => {
                inner.set_remaining(remaining);
                false
            }
            (_, FleetState::Open { remaining }) => inner.reopen(word, remaining),
            (CircuitState::Closed, FleetState::Closed) => false,
            (_, FleetState::Closed) => inner.transition(word, CircuitState::Closed, TransitionReason::Shared),
            (CircuitState::HalfOpen, FleetState::HalfOpen { granted }) => {
                link.granted.fetch_add(u64::from(granted), AcqRel);
                false
            }
            (_, FleetState::HalfOpen { granted }) => {
                let changed = inner.transition(word, CircuitState::HalfOpen, TransitionReason::Shared);
                if changed {
                    link.granted.fetch_add(u64::from(granted), AcqRel);
                }
                changed
            }
        }
    }

    /// Puts the fleet's verdicts in force (`true`) or leaves the breaker to decide alone
    /// (`false`, while the store is unreachable).
    pub fn set_joined(&self, joined: bool) {
        if let Some(link) = &self.breaker.inner.shared {
            link.joined.store(joined, Release);
        }
    }

    /// Whether the fleet's verdicts are in force.
    pub fn joined(&self) -> bool {
        self.breaker.inner.joined()
    }
}
