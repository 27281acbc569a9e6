//! The semaphore bulkhead: a cap on concurrent calls, for I/O-bound work.

use std::fmt;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::permits::Permits;
use crate::clock::duration_nanos;
use crate::error::{ConfigError, ResilienceError};
use crate::observe::metrics::BulkheadMetrics;

/// Limits of a [`SemaphoreBulkhead`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SemaphoreBulkheadConfig {
    /// Calls allowed in flight at once. Default 100.
    pub max_concurrent: NonZeroUsize,
    /// How long a call may wait for a free slot; zero (the default) fails fast.
    pub max_wait: Duration,
}

impl Default for SemaphoreBulkheadConfig {
    fn default() -> Self {
        Self { max_concurrent: NonZeroUsize::new(100).unwrap_or(NonZeroUsize::MIN), max_wait: Duration::ZERO }
    }
}

impl SemaphoreBulkheadConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::check("bulkhead.max_concurrent", resilience_rules::permits(self.max_concurrent.get()))
    }
}

/// Caps how many calls run at once; a call that finds no free slot within `max_wait`
/// is rejected with [`ResilienceError::BulkheadFull`].
///
/// Taking and returning a slot is one atomic operation each while nobody waits. A slot
/// is held by a [`BulkheadPermit`], returned when the permit drops: after the call, on
/// a panic, or when the future holding it is dropped. Cloning gives another handle to
/// the same bulkhead.
#[derive(Clone)]
pub struct SemaphoreBulkhead {
    inner: Arc<Inner>,
}

struct Inner {
    name: Arc<str>,
    /// Nanoseconds; changes in place on reconfiguration.
    max_wait_nanos: AtomicU64,
    permits: Permits,
    metrics: BulkheadMetrics,
}

impl fmt::Debug for SemaphoreBulkhead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphoreBulkhead")
            .field("name", &self.inner.name)
            .field("max_concurrent", &self.max_concurrent())
            .field("available", &self.available())
            .field("max_wait", &self.max_wait())
            .finish()
    }
}

impl SemaphoreBulkhead {
    /// Builds a bulkhead with all slots free.
    pub fn new(name: impl Into<Arc<str>>, config: SemaphoreBulkheadConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let name: Arc<str> = name.into();
        Ok(Self {
            inner: Arc::new(Inner {
                metrics: BulkheadMetrics::new(&name, config.max_concurrent.get()),
                name,
                max_wait_nanos: AtomicU64::new(duration_nanos(config.max_wait)),
                permits: Permits::new(config.max_concurrent.get()),
            }),
        })
    }

    /// The bulkhead's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The current limit.
    pub fn max_concurrent(&self) -> usize {
        self.inner.permits.limit()
    }

    /// Free slots right now.
    pub fn available(&self) -> usize {
        self.inner.permits.available()
    }

    /// How long a call waits for a slot.
    #[inline]
    pub fn max_wait(&self) -> Duration {
        Duration::from_nanos(self.inner.max_wait_nanos.load(Relaxed))
    }

    #[inline]
    pub(crate) fn waits(&self) -> bool {
        self.inner.max_wait_nanos.load(Relaxed) != 0
    }

    /// Changes how long later calls wait for a slot; calls already waiting keep theirs.
    pub fn set_max_wait(&self, max_wait: Duration) {
        self.inner.max_wait_nanos.store(duration_nanos(max_wait), Relaxed);
    }

    /// Changes the limit in place. Calls in flight keep their slots and return them as
    /// usual; if the new limit is lower, new calls are admitted once enough have ended.
    pub fn set_max_concurrent(&self, max_concurrent: NonZeroUsize) {
        self.inner.permits.set_limit(max_concurrent.get());
        self.inner.metrics.max_allowed.set(max_concurrent.get() as f64);
        self.refresh_gauges();
    }

    #[inline]
    pub(crate) fn permits(&self) -> &Permits {
        &self.inner.permits
    }

    /// Sets the available-slots gauge to the current count.
    pub(crate) fn refresh_gauges(&self) {
        self.inner.metrics.available.set(self.available() as f64);
    }

    #[cold]
    pub(crate) fn full(&self) -> ResilienceError {
        self.inner.metrics.rejected.increment(1);
        self.refresh_gauges();
        ResilienceError::bulkhead_full(&self.inner.name, self.max_concurrent())
    }

    /// Takes a slot if one is free now.
    #[inline]
    pub fn try_acquire(&self) -> Result<BulkheadPermit<'_>, ResilienceError> {
        if self.inner.permits.try_acquire() {
            Ok(BulkheadPermit { permits: &self.inner.permits })
        } else {
            Err(self.full())
        }
    }

    /// Takes a slot if one is free now, like [`try_acquire`](Self::try_acquire), but a
    /// full bulkhead is not counted as a rejection: for a caller that tries first and
    /// then waits with [`acquire`](Self::acquire).
    #[inline]
    pub fn take_free_slot(&self) -> Option<BulkheadPermit<'_>> {
        // `then`, not `then_some`: a permit made and dropped would return a slot never taken.
        self.inner.permits.try_acquire().then(|| BulkheadPermit { permits: &self.inner.permits })
    }

    /// Takes a slot, waiting up to `max_wait` (on the tokio clock).
    ///
    /// A free slot is taken at once. Only a wait allocates: its state (a notification
    /// and a timer, some 300 bytes) is boxed, so this future is a few words and the
    /// future of a caller that awaits it holds no room for a wait it rarely makes.
    pub async fn acquire(&self) -> Result<BulkheadPermit<'_>, ResilienceError> {
        if let Some(permit) = self.take_free_slot() {
            return Ok(permit);
        }
        let max_wait = self.max_wait();
        if !max_wait.is_zero() && Box::pin(self.inner.permits.acquire(max_wait)).await {
            Ok(BulkheadPermit { permits: &self.inner.permits })
        } else {
            Err(self.full())
        }
    }

    /// Takes a slot, blocking the thread up to `max_wait`.
    pub fn acquire_blocking(&self) -> Result<BulkheadPermit<'_>, ResilienceError> {
        if self.inner.permits.acquire_blocking(self.max_wait()) {
            Ok(BulkheadPermit { permits: &self.inner.permits })
        } else {
            Err(self.full())
        }
    }

    /// Runs `f` while holding a slot.
    pub async fn call<T, E, F, Fut>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<ResilienceError>,
    {
        let _permit = self.acquire().await?;
        f().await
    }

    /// Runs `f` on this thread while holding a slot.
    pub fn call_blocking<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce() -> Result<T, E>,
        E: From<ResilienceError>,
    {
        let _permit = self.acquire_blocking()?;
        f()
    }
}

/// A slot of a [`SemaphoreBulkhead`], returned on drop.
#[must_use = "the slot is returned as soon as the permit is dropped"]
pub struct BulkheadPermit<'a> {
    permits: &'a Permits,
}

impl fmt::Debug for BulkheadPermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadPermit").finish_non_exhaustive()
    }
}

impl Drop for BulkheadPermit<'_> {
    #[inline]
    fn drop(&mut self) {
        self.permits.release();
    }
}

impl SemaphoreBulkhead {
    /// Like [`acquire`](Self::acquire), but the permit keeps the bulkhead alive and can
    /// move to another thread or task (used for work that may outlive its caller).
    pub async fn acquire_owned(&self) -> Result<OwnedBulkheadPermit, ResilienceError> {
        let permit = self.acquire().await?;
        std::mem::forget(permit);
        Ok(OwnedBulkheadPermit { inner: Arc::clone(&self.inner) })
    }

    /// Like [`acquire_blocking`](Self::acquire_blocking), returning an owned permit.
    pub fn acquire_owned_blocking(&self) -> Result<OwnedBulkheadPermit, ResilienceError> {
        let permit = self.acquire_blocking()?;
        std::mem::forget(permit);
        Ok(OwnedBulkheadPermit { inner: Arc::clone(&self.inner) })
    }
}

/// A slot of a [`SemaphoreBulkhead`] that owns a handle to it, returned on drop.
#[must_use = "the slot is returned as soon as the permit is dropped"]
pub struct OwnedBulkheadPermit {
    inner: Arc<Inner>,
}

impl fmt::Debug for OwnedBulkheadPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedBulkheadPermit").field("bulkhead", &self.inner.name).finish()
    }
}

impl Drop for OwnedBulkheadPermit {
    fn drop(&mut self) {
        self.inner.permits.release();
    }
}
