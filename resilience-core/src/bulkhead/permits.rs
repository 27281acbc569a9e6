//! A counting semaphore with a lock-free fast path, async and blocking waits, and a
//! limit that can change while permits are held.
//!
//! tokio's `Semaphore` takes its waiter lock on every release; this one only touches
//! one atomic to acquire and one to release while nobody waits. Waiters are woken
//! through a `Notify` (async) or a `Condvar` (blocking). Waiting is not FIFO: a caller
//! arriving when a permit is free takes it even if others wait, which keeps the fast
//! path fast; `max_wait` bounds how long any waiter can be passed over.

use std::pin::pin;
use std::time::Duration;

use tokio::sync::Notify;

use crate::sync::{lock, AtomicU64, AtomicUsize, Condvar, Mutex, Ordering::*};

// One word holds both the free permits and the number of registered waiters, so a
// release learns from its own `fetch_add` whether anyone must be woken: no second
// atomic, no fence, and a waiter either takes a permit or registers, atomically.
//
// Low 40 bits: free permits + AVAILABLE_BIAS (permits go negative when the limit is
// lowered below the permits in use). High 24 bits: registered waiters.
const AVAILABLE_BITS: u32 = 40;
const AVAILABLE_MASK: u64 = (1 << AVAILABLE_BITS) - 1;
const AVAILABLE_BIAS: i64 = 1 << 38;
const WAITER: u64 = 1 << AVAILABLE_BITS;

/// Longer waits are cut to this, so adding them to an instant cannot overflow.
const LONGEST_WAIT: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The largest limit a bulkhead accepts.
pub(crate) const MAX_PERMITS: usize = resilience_rules::MAX_PERMITS;

fn available_of(word: u64) -> i64 {
    (word & AVAILABLE_MASK) as i64 - AVAILABLE_BIAS
}

fn waiters_of(word: u64) -> u64 {
    word >> AVAILABLE_BITS
}

pub(crate) struct Permits {
    word: AtomicU64,
    limit: AtomicUsize,
    /// Blocking waiters among the registered ones; only read when some are registered.
    blocking_waiters: AtomicUsize,
    notify: Notify,
    lock: Mutex<()>,
    condvar: Condvar,
}

/// A registered waiter; unregisters on drop unless it left by taking a permit.
struct Registration<'a> {
    permits: &'a Permits,
    registered: bool,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if self.registered {
            self.permits.word.fetch_sub(WAITER, AcqRel);
        }
    }
}

impl Permits {
    pub(crate) fn new(limit: usize) -> Self {
        let limit = limit.min(MAX_PERMITS);
        Self {
            word: AtomicU64::new((limit as i64 + AVAILABLE_BIAS) as u64),
            limit: AtomicUsize::new(limit),
            blocking_waiters: AtomicUsize::new(0),
            notify: Notify::new(),
            lock: Mutex::new(()),
            condvar: Condvar::new(),
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Relaxed)
    }

    /// Free permits right now (zero when the limit was lowered below the permits in use).
    pub(crate) fn available(&self) -> usize {
        usize::try_from(available_of(self.word.load(Relaxed))).unwrap_or(0)
    }

    /// Permits held now (the limit minus the free ones; more than the limit just after
    /// it was lowered).
    pub(crate) fn in_use(&self) -> usize {
        let held = self.limit() as i64 - available_of(self.word.load(Relaxed));
        usize::try_from(held).unwrap_or(0)
    }

    #[inline]
    pub(crate) fn try_acquire(&self) -> bool {
        let mut word = self.word.load(Relaxed);
        while available_of(word) > 0 {
            match self.word.compare_exchange_weak(word, word - 1, Acquire, Relaxed) {
                Ok(_) => return true,
                Err(actual) => word = actual,
            }
        }
        false
    }

    /// Takes a permit if one is free, else registers as a waiter (`registered` false),
    /// or, for a waiter already registered, takes a permit and unregisters in one step.
    fn take_or_register(&self, registration: &mut Registration<'_>) -> bool {
        let mut word = self.word.load(Acquire);
        loop {
            let (next, took) = match (available_of(word) > 0, registration.registered) {
                (true, false) => (word - 1, true),
                (true, true) => (word - 1 - WAITER, true),
                (false, false) => (word + WAITER, false),
                (false, true) => return false,
            };
            match self.word.compare_exchange_weak(word, next, AcqRel, Acquire) {
                Ok(_) => {
                    registration.registered = !took;
                    return took;
                }
                Err(actual) => word = actual,
            }
        }
    }

    #[inline]
    pub(crate) fn release(&self) {
        let before = self.word.fetch_add(1, AcqRel);
        if waiters_of(before) > 0 {
            self.wake_one();
        }
    }

    #[cold]
    fn wake_one(&self) {
        self.notify.notify_one();
        if self.blocking_waiters.load(Acquire) > 0 {
            let _guard = lock(&self.lock);
            self.condvar.notify_one();
        }
    }

    /// Changes the limit. Permits in use stay valid and are returned as usual, so the
    /// count of calls in flight is never lost or counted twice; above the new limit,
    /// new calls wait until enough of them have finished.
    pub(crate) fn set_limit(&self, limit: usize) {
        let limit = limit.min(MAX_PERMITS);
        let old = self.limit.swap(limit, AcqRel);
        let delta = limit as i64 - old as i64;
        let before = self.word.fetch_add(delta as u64, AcqRel);
        if waiters_of(before) > 0 {
            for _ in 0..delta.max(0) {
                self.wake_one();
            }
        }
    }

    /// Waits up to `max_wait` for a permit.
    pub(crate) async fn acquire(&self, max_wait: Duration) -> bool {
        if self.try_acquire() {
            return true;
        }
        if max_wait.is_zero() {
            return false;
        }
        let deadline = tokio::time::Instant::now() + max_wait.min(LONGEST_WAIT);
        let mut registration = Registration { permits: self, registered: false };
        loop {
            // Listen before looking, so a release between the look and the wait
            // still reaches this waiter.
            let mut notified = pin!(self.notify.notified());
            notified.as_mut().enable();
            if self.take_or_register(&mut registration) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.take_or_register(&mut registration);
            }
        }
    }

    /// Blocks the thread up to `max_wait` for a permit.
    pub(crate) fn acquire_blocking(&self, max_wait: Duration) -> bool {
        if self.try_acquire() {
            return true;
        }
        if max_wait.is_zero() {
            return false;
        }
        let deadline = std::time::Instant::now() + max_wait.min(LONGEST_WAIT);
        let mut guard = lock(&self.lock);
        self.blocking_waiters.fetch_add(1, AcqRel);
        let mut registration = Registration { permits: self, registered: false };
        let acquired = loop {
            if self.take_or_register(&mut registration) {
                break true;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                break false;
            }
            guard = match self.condvar.wait_timeout(guard, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        };
        drop(registration);
        self.blocking_waiters.fetch_sub(1, AcqRel);
        // A wake-up meant for this thread may have raced its time-out; pass it on.
        if !acquired && waiters_of(self.word.load(Acquire)) > 0 {
            self.condvar.notify_one();
        }
        drop(guard);
        acquired
    }
}

#[cfg(all(test, resilience_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;
    use std::time::Duration;

    const LONG: Duration = Duration::from_secs(3600);

    #[test]
    fn fast_path_never_exceeds_the_limit() {
        loom::model(|| {
            let permits = Arc::new(Permits::new(1));
            let in_use = Arc::new(AtomicUsize::new(0));
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let (permits, in_use) = (permits.clone(), in_use.clone());
                    thread::spawn(move || {
                        if permits.try_acquire() {
                            assert_eq!(in_use.fetch_add(1, SeqCst), 0, "two holders of one permit");
                            in_use.fetch_sub(1, SeqCst);
                            permits.release();
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            assert_eq!(permits.available(), 1);
        });
    }

    #[test]
    fn a_blocking_waiter_is_always_woken() {
        // Under loom a timed wait never times out, so a lost wake-up is a deadlock
        // that loom reports.
        loom::model(|| {
            let permits = Arc::new(Permits::new(1));
            assert!(permits.try_acquire());
            let waiter = {
                let permits = permits.clone();
                thread::spawn(move || {
                    assert!(permits.acquire_blocking(LONG));
                    permits.release();
                })
            };
            permits.release();
            waiter.join().unwrap();
            assert_eq!(permits.available(), 1);
        });
    }

    #[test]
    fn lowering_the_limit_keeps_the_count() {
        loom::model(|| {
            let permits = Arc::new(Permits::new(2));
            assert!(permits.try_acquire());
            let lower = {
                let permits = permits.clone();
                thread::spawn(move || permits.set_limit(1))
            };
            let user = {
                let permits = permits.clone();
                thread::spawn(move || {
                    if permits.try_acquire() {
                        permits.release();
                    }
                })
            };
            lower.join().unwrap();
            user.join().unwrap();
            permits.release();
            assert_eq!(permits.available(), 1);
            assert_eq!(permits.limit(), 1);
        });
    }

    #[test]
    fn two_blocking_waiters_both_get_through() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let permits = Arc::new(Permits::new(1));
            assert!(permits.try_acquire());
            let waiters: Vec<_> = (0..2)
                .map(|_| {
                    let permits = permits.clone();
                    thread::spawn(move || {
                        assert!(permits.acquire_blocking(LONG));
                        permits.release();
                    })
                })
                .collect();
            permits.release();
            for w in waiters {
                w.join().unwrap();
            }
            assert_eq!(permits.available(), 1);
        });
    }
}
