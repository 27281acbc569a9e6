//! A counting semaphore with a lock-free fast path, async and blocking waits, and a
//! limit that can change while permits are held.
//!
//! tokio's `Semaphore` takes its waiter lock on every release; this one only touches
//! one atomic to acquire and one to release while nobody waits. Waiters are woken
//! through a `Notify` (async) or a `Condvar` (blocking). Waiting is not FIFO: a caller
//! arriving when a permit is free takes it even if others wait, which keeps the fast
//! path fast; `max_wait` bounds how long any waiter can be passed over.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use tokio::sync::Notify;

use crate::sync::{lock, AtomicIsize, AtomicUsize, Condvar, Mutex, Ordering, Ordering::*};

pub(crate) struct Permits {
    /// Free permits; negative after the limit was lowered below the permits in use.
    available: AtomicIsize,
    limit: AtomicUsize,
    async_waiters: AtomicUsize,
    blocking_waiters: AtomicUsize,
    notify: Notify,
    lock: Mutex<()>,
    condvar: Condvar,
}

/// Decrements a waiter count when the wait ends, however it ends (including a dropped future).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, SeqCst);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

fn to_isize(n: usize) -> isize {
    isize::try_from(n).unwrap_or(isize::MAX)
}

impl Permits {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            available: AtomicIsize::new(to_isize(limit)),
            limit: AtomicUsize::new(limit),
            async_waiters: AtomicUsize::new(0),
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
        usize::try_from(self.available.load(Relaxed)).unwrap_or(0)
    }

    #[inline]
    pub(crate) fn try_acquire(&self) -> bool {
        self.try_acquire_ordered(Relaxed)
    }

    /// `load` orders the first read of the count; waiters use `SeqCst` so that a
    /// concurrent release either sees them registered or they see its permit.
    #[inline]
    fn try_acquire_ordered(&self, load: Ordering) -> bool {
        let mut current = self.available.load(load);
        while current > 0 {
            match self.available.compare_exchange_weak(current, current - 1, Acquire, Relaxed) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
        false
    }

    #[inline]
    pub(crate) fn release(&self) {
        self.available.fetch_add(1, SeqCst);
        self.wake_one();
    }

    #[inline]
    fn wake_one(&self) {
        if self.async_waiters.load(SeqCst) > 0 {
            self.notify.notify_one();
        }
        if self.blocking_waiters.load(SeqCst) > 0 {
            let _guard = lock(&self.lock);
            self.condvar.notify_one();
        }
    }

    /// Changes the limit. Permits in use stay valid and are returned as usual, so the
    /// count of calls in flight is never lost or counted twice; above the new limit,
    /// new calls wait until enough of them have finished.
    pub(crate) fn set_limit(&self, limit: usize) {
        let old = self.limit.swap(limit, SeqCst);
        let delta = to_isize(limit) - to_isize(old);
        self.available.fetch_add(delta, SeqCst);
        for _ in 0..delta.max(0) {
            self.wake_one();
        }
    }

    /// Waits up to `max_wait` for a permit.
    pub(crate) fn acquire(&self, max_wait: Duration) -> impl Future<Output = bool> + Send + '_ {
        async move {
            if self.try_acquire() {
                return true;
            }
            if max_wait.is_zero() {
                return false;
            }
            let deadline = tokio::time::Instant::now() + max_wait;
            let _waiting = Waiting::new(&self.async_waiters);
            loop {
                let mut notified = pin!(self.notify.notified());
                notified.as_mut().enable();
                if self.try_acquire_ordered(SeqCst) {
                    return true;
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return self.try_acquire_ordered(SeqCst);
                }
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
        let deadline = std::time::Instant::now() + max_wait;
        let mut guard = lock(&self.lock);
        let waiting = Waiting::new(&self.blocking_waiters);
        let acquired = loop {
            if self.try_acquire_ordered(SeqCst) {
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
        drop(waiting);
        // A wake-up meant for us may have raced our time-out; pass it on.
        if !acquired && self.available.load(SeqCst) > 0 && self.blocking_waiters.load(SeqCst) > 0 {
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
}
