//! Rate limiting with the generic cell rate algorithm (GCRA).
//!
//! GCRA keeps one number per limited thing, the theoretical arrival time (TAT) of the
//! next call: a call is admitted when it would not push the TAT more than
//! `burst` emission intervals past now. It is a token bucket without a refill task,
//! updated with a single compare-and-swap.

use std::fmt;
use std::hash::Hash;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Epoch;
use crate::error::{ConfigError, ResilienceError};
use crate::observe::metrics::RateLimiterMetrics;
use crate::shared::LimitLink;

/// Limits of a [`RateLimiter`] or [`KeyedRateLimiter`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimiterConfig {
    /// Sustained calls per second. Default 100.
    pub rate: f64,
    /// Calls that may be made at once after a quiet period. Default 100.
    pub burst: NonZeroU32,
    /// Most keys a [`KeyedRateLimiter`] tracks (one per client, say: a call site's
    /// `rate_limit(key = …)`). Default 10 000.
    pub max_keys: NonZeroUsize,
    /// One limit for every instance of the service that names the same dependency, once
    /// [`shared`](crate::shared) state is installed (the `shared-state` feature of
    /// `resilience`); a [`RateLimiter`]'s only (keyed limiters stay per process). Default
    /// false; until installed, a local limit.
    pub shared: bool,
}

impl Default for RateLimiterConfig {
    fn default() -> Self {
        Self {
            rate: 100.0,
            burst: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
            max_keys: NonZeroUsize::new(10_000).unwrap_or(NonZeroUsize::MIN),
            shared: false,
        }
    }
}

impl RateLimiterConfig {
    /// `rate` calls per second with bursts of up to `burst`.
    pub fn per_second(rate: f64, burst: NonZeroU32) -> Self {
        Self { rate, burst, ..Self::default() }
    }

    /// Checks the configuration: a rate between one call in about 11.6 days
    /// (`1e-6` per second) and `1e9` per second.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::check("rate_limit.rate", resilience_rules::rate(self.rate))
    }
}

/// The arithmetic of GCRA, in nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Gcra {
    interval: u64,
    tolerance: u64,
}

impl Gcra {
    fn new(config: &RateLimiterConfig) -> Self {
        let interval = ((1e9 / config.rate).round() as u64).max(1);
        Self { interval, tolerance: interval.saturating_mul(u64::from(config.burst.get())) }
    }

    /// Admits a call at `now` against `tat` (giving the new arrival time), or says how
    /// long until it would be admitted.
    #[inline]
    fn check(self, tat: &AtomicU64, now: u64) -> Result<u64, u64> {
        let mut current = tat.load(Relaxed);
        loop {
            // Saturating: a slow rate's interval times a large burst exceeds u64.
            let next = current.max(now).saturating_add(self.interval);
            let ahead = next - now;
            if ahead > self.tolerance {
                return Err(ahead - self.tolerance);
            }
            match tat.compare_exchange_weak(current, next, Relaxed, Relaxed) {
                Ok(_) => return Ok(next),
                Err(actual) => current = actual,
            }
        }
    }

    /// What is left after an admission that set the arrival time to `tat` at `now`.
    fn quota(self, tat: u64, now: u64, burst: u32) -> Quota {
        let used = tat.saturating_sub(now);
        let remaining = self.tolerance.saturating_sub(used) / self.interval.max(1);
        Quota { limit: burst, remaining: remaining.min(u64::from(burst)) as u32, reset: Duration::from_nanos(used) }
    }
}

/// What a key has left after an admitted call (for `RateLimit-*` answer headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Calls that may be made at once after a quiet period (the burst).
    pub limit: u32,
    /// Calls that may still be made now.
    pub remaining: u32,
    /// Time until the whole burst is available again.
    pub reset: Duration,
}

/// Counts a GCRA outcome and turns a wait into the error.
#[inline]
fn verdict<T>(metrics: &RateLimiterMetrics, name: &Arc<str>, outcome: Result<T, u64>) -> Result<T, ResilienceError> {
    match outcome {
        Ok(admitted) => {
            metrics.call(true);
            Ok(admitted)
        }
        Err(wait) => Err(rejection(metrics, name, wait)),
    }
}

/// [`verdict`]'s rejection, out of line (so that an admitted call's code stays short).
#[cold]
#[inline(never)]
fn rejection(metrics: &RateLimiterMetrics, name: &Arc<str>, wait: u64) -> ResilienceError {
    metrics.call(false);
    ResilienceError::rate_limited(name, Duration::from_nanos(wait))
}

/// One rate limit shared by every call.
///
/// A rejected call gets [`ResilienceError::RateLimited`] with the time after which it
/// would be admitted. Cloning gives another handle to the same limiter.
#[derive(Clone)]
pub struct RateLimiter {
    pub(crate) inner: Arc<Single>,
}

pub(crate) struct Single {
    name: Arc<str>,
    metrics: RateLimiterMetrics,
    config: RateLimiterConfig,
    gcra: Gcra,
    tat: AtomicU64,
    epoch: Epoch,
    /// The shared side, for a limiter built with `shared = true`.
    shared: Option<Box<LimitLink>>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("name", &self.inner.name)
            .field("interval_nanos", &self.inner.gcra.interval)
            .field("tolerance_nanos", &self.inner.gcra.tolerance)
            .finish()
    }
}

impl RateLimiter {
    /// Builds a limiter with its full burst available.
    pub fn new(name: impl Into<Arc<str>>, config: RateLimiterConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let name: Arc<str> = name.into();
        let gcra = Gcra::new(&config);
        let limiter = Self {
            inner: Arc::new(Single {
                metrics: RateLimiterMetrics::new(&name),
                name,
                config,
                gcra,
                tat: AtomicU64::new(0),
                epoch: Epoch::now(),
                shared: config.shared.then(|| {
                    Box::new(LimitLink {
                        joined: AtomicBool::new(false),
                        tokens: AtomicU64::new(0),
                        admitted: AtomicU64::new(0),
                        starved: AtomicU64::new(0),
                        dry: AtomicBool::new(false),
                        wake: tokio::sync::Notify::new(),
                        share_interval: AtomicU64::new(gcra.interval),
                        share_tolerance: AtomicU64::new(gcra.tolerance),
                        share_tat: AtomicU64::new(0),
                        debt: AtomicU64::new(0),
                        debt_cap: AtomicU64::new(u64::from(config.burst.get())),
                    })
                }),
            }),
        };
        if limiter.inner.shared.is_some() {
            crate::shared::register(&crate::shared::LIMITS, &limiter.inner);
        }
        Ok(limiter)
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &RateLimiterConfig {
        &self.inner.config
    }

    /// Admits one call now, or rejects it.
    #[inline]
    pub fn check(&self) -> Result<(), ResilienceError> {
        let inner = &*self.inner;
        if let Some(link) = &inner.shared {
            return inner.check_shared(link);
        }
        verdict(&inner.metrics, &inner.name, inner.gcra.check(&inner.tat, inner.epoch.nanos())).map(|_| ())
    }
}

impl Single {
    /// A shared limit's check: a leased token while joined, else the local share.
    fn check_shared(&self, link: &LimitLink) -> Result<(), ResilienceError> {
        let outcome = if link.joined.load(Acquire) {
            // Compare-and-swap, never a subtraction undone: a lease or a repayment
            // racing this check must see no token or credit that is not there.
            let leased = link.tokens.fetch_update(AcqRel, Acquire, |n| n.checked_sub(1)).is_ok();
            if leased {
                link.admitted.fetch_add(1, Relaxed);
                Ok(())
            } else {
                // Out of tokens: borrow up to the local share's burst against the next
                // lease (which pays it back first), so that a quiet instance's first
                // call waits for no lease.
                let cap = link.debt_cap.load(Relaxed);
                let borrowed = link.debt.fetch_update(AcqRel, Acquire, |n| (n < cap).then(|| n + 1)).is_ok();
                if !link.dry.swap(true, AcqRel) {
                    link.wake.notify_one();
                }
                if borrowed {
                    link.admitted.fetch_add(1, Relaxed);
                    Ok(())
                } else {
                    link.starved.fetch_add(1, Relaxed);
                    // A token of the fleet's limit comes every interval.
                    Err(self.gcra.interval)
                }
            }
        } else {
            let share =
                Gcra { interval: link.share_interval.load(Relaxed), tolerance: link.share_tolerance.load(Relaxed) };
            share.check(&link.share_tat, self.epoch.nanos()).map(|_| ())
        };
        verdict(&self.metrics, &self.name, outcome)
    }
}

impl crate::shared::SharedLimit {
    /// The limiter.
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    fn link(&self) -> &LimitLink {
        match &self.limiter.inner.shared {
            Some(link) => link,
            // `shared_limits` lists only limiters built with a link.
            None => unreachable!("a SharedLimit always has its link"),
        }
    }

    /// Adds a lease of `tokens` from the fleet's limit: it first pays back the calls
    /// admitted on credit (out of tokens, up to the local share's burst), and the rest
    /// admits more calls while joined. Returns the tokens added.
    pub fn add_tokens(&self, tokens: u64) -> u64 {
        let link = self.link();
        let owed = link.debt.fetch_update(AcqRel, Acquire, |d| Some(d - d.min(tokens))).unwrap_or_else(|d| d);
        let repaid = owed.min(tokens);
        let added = tokens - repaid;
        link.tokens.fetch_add(added, AcqRel);
        added
    }

    /// Calls admitted on credit, not yet paid back by a lease.
    pub fn debt(&self) -> u64 {
        self.link().debt.load(Acquire)
    }

    /// Drops the leased tokens left (an expired lease); returns how many there were.
    pub fn clear_tokens(&self) -> u64 {
        self.link().tokens.swap(0, AcqRel)
    }

    /// Leased tokens left.
    pub fn tokens(&self) -> u64 {
        self.link().tokens.load(Acquire)
    }

    /// Calls admitted from leases and calls turned away for want of a token, since the
    /// limiter was built.
    pub fn counts(&self) -> (u64, u64) {
        let link = self.link();
        (link.admitted.load(Acquire), link.starved.load(Acquire))
    }

    /// Whether a call found no token since the last call (and clears the mark).
    pub fn take_dry(&self) -> bool {
        self.link().dry.swap(false, AcqRel)
    }

    /// Waits until a call finds no token.
    pub async fn dry(&self) {
        self.link().wake.notified().await;
    }

    /// Admits from leases (`true`) or enforces the local share (`false`, while the
    /// store is unreachable).
    pub fn set_joined(&self, joined: bool) {
        self.link().joined.store(joined, Release);
    }

    /// Whether leases are in force.
    pub fn joined(&self) -> bool {
        self.link().joined.load(Acquire)
    }

    /// Sets the local share to `rate / instances` with a burst of `burst / instances`
    /// (at least one call).
    pub fn set_local_share(&self, instances: u32) {
        let (link, config) = (self.link(), &self.limiter.inner.config);
        let n = f64::from(instances.max(1));
        let interval = ((1e9 / (config.rate / n)).round() as u64).max(1);
        let burst = (f64::from(config.burst.get()) / n).floor().max(1.0) as u64;
        link.share_interval.store(interval, Relaxed);
        link.share_tolerance.store(interval.saturating_mul(burst), Relaxed);
        link.debt_cap.store(burst, Relaxed);
    }
}

/// Set in a key's cell while the key is over its limit (its last call was rejected):
/// such a key is never forgotten to make room. Below it, the theoretical arrival time.
const LIMITED: u64 = 1 << 63;

impl Gcra {
    /// [`check`](Self::check) for one key's cell, which also remembers a rejection.
    #[inline]
    fn check_cell(self, cell: &AtomicU64, now: u64) -> Result<u64, u64> {
        let mut current = cell.load(Relaxed);
        loop {
            let tat = current & !LIMITED;
            let next = tat.max(now).saturating_add(self.interval).min(LIMITED - 1);
            let ahead = next - now;
            if ahead > self.tolerance {
                if current & LIMITED == 0 {
                    cell.fetch_or(LIMITED, Relaxed);
                }
                return Err(ahead - self.tolerance);
            }
            match cell.compare_exchange_weak(current, next, Relaxed, Relaxed) {
                Ok(_) => return Ok(next),
                Err(actual) => current = actual,
            }
        }
    }
}

/// A rate limit per key, such as a client address.
///
/// Memory is bounded: at most `max_keys` keys are tracked, each costing one allocation of
/// its key and an 8-byte cell (`size_of::<K>() + 8` bytes, rounded up to 8, plus the
/// allocator's header), and the table 9 bytes per slot, with at most 4 slots per key it
/// ever held at once (the table doubles when a probe fails at half full), half as many
/// again while it copies itself into a larger one. A forgotten key's allocation is freed
/// once no thread is still reading it, which is at the end of that thread's call. (A
/// client key of the HTTP middleware is 24 bytes: about 48 bytes per client, and up to 36
/// of table, plus a header key's own text of at most 128 bytes.) Lookups take no lock. When the table is full
/// and a new key arrives, it forgets the keys closest to a fresh state first: every
/// idle key (whose theoretical arrival time has passed, so forgetting it changes no
/// decision), then the eighth of the keys that have used the least of their burst. A
/// key whose last call was rejected (it is over its limit) is never forgotten while its
/// limit lasts, so a flood of new keys cannot reset it. Under key rotation (many
/// clients, one call each) every new key still gets its full burst.
///
/// The slack this allows: a forgotten key that comes back within `burst / rate` may get
/// up to the part of its burst it had used again (at most `burst - 1` calls, since a key
/// that used all of it was rejected or is among the last to be forgotten). Only when
/// every tracked key is over its limit do calls under new keys share one overflow limit.
pub struct KeyedRateLimiter<K: Hash + Eq> {
    name: Arc<str>,
    metrics: RateLimiterMetrics,
    gcra: Gcra,
    burst: u32,
    max_keys: usize,
    /// Per key, in a table whose lookups take no lock: a lookup writes no memory the
    /// other threads read (a `DashMap` shard's read lock did, and under one busy client
    /// that lock's cache line moved between cores on every call). Hashed with
    /// foldhash, seeded at random per table (a few nanoseconds where the standard
    /// library's SipHash took about twenty for an address; keys come from clients, so
    /// the hash is still one they cannot predict).
    cells: papaya::HashMap<K, AtomicU64, foldhash::fast::RandomState>,
    tracked: AtomicUsize,
    overflow: AtomicU64,
    /// Held while making room, so that one thread sweeps and the others then find room.
    sweeping: std::sync::Mutex<()>,
    /// When a sweep last found nothing to forget: the next waits a tolerance period, so
    /// a table full of limited keys does not cost a sweep per call.
    barren_sweep: AtomicU64,
    epoch: Epoch,
}

impl<K: Hash + Eq> fmt::Debug for KeyedRateLimiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimiter")
            .field("name", &self.name)
            .field("keys", &self.tracked.load(Relaxed))
            .field("max_keys", &self.max_keys)
            .finish()
    }
}

impl<K: Hash + Eq + Clone> KeyedRateLimiter<K> {
    /// Builds a limiter that tracks no key yet.
    pub fn new(name: impl Into<Arc<str>>, config: RateLimiterConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let name: Arc<str> = name.into();
        Ok(Self {
            metrics: RateLimiterMetrics::new(&name),
            name,
            gcra: Gcra::new(&config),
            burst: config.burst.get(),
            max_keys: config.max_keys.get(),
            cells: papaya::HashMap::with_hasher(foldhash::fast::RandomState::default()),
            tracked: AtomicUsize::new(0),
            overflow: AtomicU64::new(0),
            sweeping: std::sync::Mutex::new(()),
            barren_sweep: AtomicU64::new(0),
            epoch: Epoch::now(),
        })
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Keys tracked now.
    pub fn keys(&self) -> usize {
        self.tracked.load(Relaxed)
    }

    /// Admits one call under `key` now, or rejects it.
    pub fn check_key(&self, key: &K) -> Result<(), ResilienceError> {
        self.check_key_at(key, tokio::time::Instant::now())
    }

    /// Like [`check_key`](Self::check_key) at the instant `now`, a reading of tokio's
    /// clock the caller already has (see [`check_key_quota_at`](Self::check_key_quota_at)).
    pub fn check_key_at(&self, key: &K, now: tokio::time::Instant) -> Result<(), ResilienceError> {
        let now = self.epoch.nanos_at(now);
        verdict(&self.metrics, &self.name, self.admit(key, now)).map(|_| ())
    }

    /// Like [`check_key`](Self::check_key), saying what `key` has left after the call.
    pub fn check_key_quota(&self, key: &K) -> Result<Quota, ResilienceError> {
        self.check_key_quota_at(key, tokio::time::Instant::now())
    }

    /// Like [`check_key_quota`](Self::check_key_quota) at the instant `now`, a reading of
    /// tokio's clock the caller already has (one clock read fewer). An instant before
    /// the limiter was built counts as the moment it was built.
    pub fn check_key_quota_at(&self, key: &K, now: tokio::time::Instant) -> Result<Quota, ResilienceError> {
        let now = self.epoch.nanos_at(now);
        verdict(&self.metrics, &self.name, self.admit(key, now)).map(|tat| self.gcra.quota(tat, now, self.burst))
    }

    /// The GCRA decision for `key` at `now` (nanoseconds since the epoch): the new
    /// theoretical arrival time, or how long to wait.
    fn admit(&self, key: &K, now: u64) -> Result<u64, u64> {
        let cells = self.cells.pin();
        match cells.get(key) {
            Some(cell) => self.gcra.check_cell(cell, now),
            None => {
                if self.tracked.load(Relaxed) >= self.max_keys {
                    self.make_room(now);
                }
                if self.tracked.load(Relaxed) >= self.max_keys {
                    self.gcra.check(&self.overflow, now)
                } else {
                    match cells.try_insert(key.clone(), AtomicU64::new(0)) {
                        Ok(cell) => {
                            self.tracked.fetch_add(1, Relaxed);
                            self.gcra.check_cell(cell, now)
                        }
                        // Another thread added the key meanwhile.
                        Err(occupied) => self.gcra.check_cell(occupied.current, now),
                    }
                }
            }
        }
    }

    /// Forgets every idle key and the eighth of the others closest to a fresh state
    /// (never a key over its limit), when the table is full.
    #[cold]
    fn make_room(&self, now: u64) {
        let _sweeping = self.sweeping.lock().unwrap_or_else(|p| p.into_inner());
        if self.tracked.load(Relaxed) < self.max_keys {
            return; // Another thread made room meanwhile.
        }
        let barren = self.barren_sweep.load(Relaxed);
        if barren != 0 && now.saturating_sub(barren) < self.gcra.tolerance.max(1_000_000) {
            return;
        }
        let forgettable = |cell: u64| cell & !LIMITED <= now || cell & LIMITED == 0;
        let cells = self.cells.pin();
        let mut arrivals: Vec<u64> = cells
            .iter()
            .map(|(_, cell)| cell.load(Relaxed))
            .filter(|&cell| forgettable(cell))
            .map(|cell| cell & !LIMITED)
            .collect();
        if arrivals.is_empty() {
            self.barren_sweep.store(now.max(1), Relaxed);
            return;
        }
        let quota = (self.max_keys / 8).clamp(1, arrivals.len());
        let (_, threshold, _) = arrivals.select_nth_unstable(quota - 1);
        let threshold = (*threshold).max(now);
        let mut forgotten = 0;
        cells.retain(|_, cell| {
            let cell = cell.load(Relaxed);
            let forget = forgettable(cell) && cell & !LIMITED <= threshold;
            forgotten += usize::from(forget);
            !forget
        });
        self.tracked.fetch_sub(forgotten, Relaxed);
        self.barren_sweep.store(0, Relaxed);
    }
}

#[cfg(all(test, not(resilience_loom)))]
mod tests {
    use super::*;

    fn config(rate: f64, burst: u32, max_keys: usize) -> RateLimiterConfig {
        RateLimiterConfig {
            rate,
            burst: NonZeroU32::new(burst).unwrap(),
            max_keys: NonZeroUsize::new(max_keys).unwrap(),
            shared: false,
        }
    }

    #[test]
    fn gcra_admits_the_burst_then_the_rate() {
        let g = Gcra::new(&config(10.0, 3, 1));
        let tat = AtomicU64::new(0);
        let t0 = 1_000_000_000;
        for n in 1..=3u32 {
            let next = g.check(&tat, t0).expect("within the burst");
            assert_eq!(g.quota(next, t0, 3).remaining, 3 - n, "remaining after {n}");
        }
        assert_eq!(g.check(&tat, t0), Err(100_000_000));
        let next = g.check(&tat, t0 + 100_000_000).expect("one interval later");
        let quota = g.quota(next, t0 + 100_000_000, 3);
        assert_eq!((quota.remaining, quota.reset), (0, Duration::from_millis(300)), "full again in 3 intervals");
        assert!(g.check(&tat, t0 + 100_000_000).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_recovers_with_time() {
        let rl = RateLimiter::new("rl", config(2.0, 1, 1)).unwrap();
        rl.check().unwrap();
        let err = rl.check().unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_millis(500)));
        tokio::time::advance(Duration::from_millis(500)).await;
        rl.check().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn keyed_limiter_is_bounded_and_evicts_idle_keys() {
        let rl = KeyedRateLimiter::new("k", config(1.0, 1, 2)).unwrap();
        rl.check_key(&1).unwrap();
        rl.check_key(&2).unwrap();
        assert!(rl.check_key(&1).is_err());
        // Full; key 1 is over its limit, key 2 is not: key 2 is forgotten for key 3.
        rl.check_key(&3).unwrap();
        assert_eq!(rl.keys(), 2);
        assert!(rl.check_key(&1).is_err(), "a key over its limit is kept");
        tokio::time::advance(Duration::from_secs(2)).await;
        // Every key is idle now: all are forgotten to make room.
        rl.check_key(&5).unwrap();
        assert_eq!(rl.keys(), 1);
        rl.check_key(&1).unwrap();
        assert_eq!(rl.keys(), 2);
    }

    /// A check at an instant the caller read is the check at that instant: later ones
    /// see the time in between, and one before the limiter was built counts as its start.
    #[tokio::test(start_paused = true)]
    async fn a_keyed_check_at_a_given_instant_uses_that_instant() {
        let start = tokio::time::Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        let rl = KeyedRateLimiter::new("k", config(1.0, 2, 4)).unwrap();
        let now = tokio::time::Instant::now();
        assert_eq!(rl.check_key_quota_at(&1, start).map(|q| q.remaining), Ok(1), "before the limiter: its start");
        assert_eq!(rl.check_key_quota_at(&1, now).map(|q| q.remaining), Ok(0));
        assert!(rl.check_key_quota_at(&1, now).is_err(), "the burst is spent at this instant");
        let later = now + Duration::from_secs(1);
        assert_eq!(rl.check_key_quota_at(&1, later).map(|q| q.remaining), Ok(0), "one interval later");
        assert!(rl.check_key_quota(&1).is_err(), "the clock itself has not moved");
    }

    /// A check without the quota spends the same burst as one with it.
    #[tokio::test(start_paused = true)]
    async fn keyed_checks_with_and_without_the_quota_share_the_key() {
        let rl = KeyedRateLimiter::new("k", config(1.0, 2, 4)).unwrap();
        let now = tokio::time::Instant::now();
        assert_eq!(rl.check_key_at(&1, now), Ok(()));
        assert_eq!(rl.check_key_quota_at(&1, now).map(|q| q.remaining), Ok(0));
        assert!(rl.check_key_at(&1, now).is_err(), "the burst of 2 is spent");
        assert_eq!(rl.check_key_at(&2, now), Ok(()), "another key has its own");
    }
}
