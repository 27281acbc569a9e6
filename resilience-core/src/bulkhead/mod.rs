//! Bulkheads: limits on how much of the service one dependency may occupy.
//!
//! [`SemaphoreBulkhead`] caps concurrent calls (for I/O-bound work);
//! [`ThreadPoolBulkhead`] runs calls on its own worker threads behind a bounded queue
//! (for blocking and CPU-bound work); [`AdaptiveBulkhead`] is a semaphore bulkhead
//! whose limit is learned from the dependency's latency.

mod adaptive;
mod permits;
mod semaphore;
mod thread_pool;

pub use adaptive::{AdaptiveBulkhead, AdaptiveBulkheadConfig, AdaptiveState};
pub use semaphore::{BulkheadPermit, OwnedBulkheadPermit, SemaphoreBulkhead, SemaphoreBulkheadConfig};
pub use thread_pool::{ThreadPoolBulkhead, ThreadPoolBulkheadConfig};

use permits::Permits;

use crate::error::ResilienceError;

/// Either kind of bulkhead, as held by a [`Pipeline`](crate::Pipeline).
#[derive(Debug, Clone)]
pub enum Bulkhead {
    /// A concurrency cap on the caller's own task or thread.
    Semaphore(SemaphoreBulkhead),
    /// Dedicated worker threads with a bounded queue.
    ThreadPool(ThreadPoolBulkhead),
    /// A concurrency cap learned from latency.
    Adaptive(AdaptiveBulkhead),
}

/// A slot held for the duration of one attempt that runs on the caller's task or
/// thread, returned on drop. One word, whichever bulkhead it came from.
pub(crate) struct Slot<'a>(&'a Permits);

impl Drop for Slot<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.release();
    }
}

impl Bulkhead {
    /// The bulkhead's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Semaphore(b) => b.name(),
            Self::ThreadPool(b) => b.name(),
            Self::Adaptive(b) => b.name(),
        }
    }

    /// The concurrency limit (an adaptive bulkhead's learned limit).
    pub fn max_concurrent(&self) -> usize {
        match self {
            Self::Semaphore(b) => b.max_concurrent(),
            Self::ThreadPool(b) => b.max_concurrent(),
            Self::Adaptive(b) => b.limit(),
        }
    }

    /// The rejection, counted in the bulkhead's metrics.
    #[cold]
    pub(crate) fn full(&self) -> ResilienceError {
        match self {
            Self::Semaphore(b) => b.full(),
            Self::ThreadPool(b) => b.inline_full(),
            Self::Adaptive(b) => b.semaphore().full(),
        }
    }

    /// Free slots now: semaphore permits, or workers not running a call.
    pub fn available(&self) -> usize {
        match self {
            Self::Semaphore(b) => b.available(),
            Self::ThreadPool(b) => b.available(),
            Self::Adaptive(b) => b.available(),
        }
    }

    /// Calls holding a slot now.
    pub fn in_use(&self) -> usize {
        match self {
            Self::Semaphore(b) => b.permits().in_use(),
            Self::Adaptive(b) => b.semaphore().permits().in_use(),
            Self::ThreadPool(b) => b.max_concurrent().saturating_sub(b.available()),
        }
    }

    /// Sets the available-slots gauge to the current count.
    pub(crate) fn refresh_gauges(&self) {
        match self {
            Self::Semaphore(b) => b.refresh_gauges(),
            Self::ThreadPool(b) => b.refresh_gauges(),
            Self::Adaptive(b) => b.refresh_gauges(),
        }
    }

    /// Whether a call may wait for a slot (a semaphore bulkhead with a `max_wait`).
    #[inline]
    pub(crate) fn waits(&self) -> bool {
        match self {
            Self::Semaphore(b) => b.waits(),
            Self::Adaptive(b) => b.semaphore().waits(),
            Self::ThreadPool(_) => false,
        }
    }

    /// The adaptive bulkhead, which wants each attempt's round trip.
    #[inline(always)]
    pub(crate) fn adaptive(&self) -> Option<&AdaptiveBulkhead> {
        match self {
            Self::Adaptive(b) => Some(b),
            _ => None,
        }
    }

    /// The semaphore that admits calls, for the kinds that have one.
    fn semaphore(&self) -> Option<&SemaphoreBulkhead> {
        match self {
            Self::Semaphore(b) => Some(b),
            Self::Adaptive(b) => Some(b.semaphore()),
            Self::ThreadPool(_) => None,
        }
    }

    /// A slot without waiting, if one is free.
    #[inline]
    pub(crate) fn try_slot(&self) -> Option<Slot<'_>> {
        let permits = match self {
            Self::Semaphore(b) => b.permits(),
            Self::ThreadPool(b) => b.inline_permits(),
            Self::Adaptive(b) => b.semaphore().permits(),
        };
        permits.try_acquire().then(|| Slot(permits))
    }

    /// A slot, waiting up to a semaphore bulkhead's `max_wait`.
    pub(crate) async fn slot(&self) -> Result<Slot<'_>, ResilienceError> {
        match self.semaphore() {
            Some(b) if b.permits().acquire(b.max_wait()).await => Ok(Slot(b.permits())),
            Some(_) => Err(self.full()),
            None => self.try_slot().ok_or_else(|| self.full()),
        }
    }

    /// A slot, blocking up to a semaphore bulkhead's `max_wait`.
    pub(crate) fn slot_blocking(&self) -> Result<Slot<'_>, ResilienceError> {
        match self.semaphore() {
            Some(b) if b.permits().acquire_blocking(b.max_wait()) => Ok(Slot(b.permits())),
            Some(_) => Err(self.full()),
            None => self.try_slot().ok_or_else(|| self.full()),
        }
    }
}
