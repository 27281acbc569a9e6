//! The thread-pool bulkhead: dedicated worker threads and a bounded queue, for blocking
//! and CPU-bound work that must not starve the async runtime or each other.

use std::collections::VecDeque;
use std::fmt;
use std::num::NonZeroUsize;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::permits::Permits;
use crate::error::{ConfigError, ResilienceError};
use crate::observe::metrics::BulkheadMetrics;

/// A call for a worker. It is handed a function that frees the worker's slot, to call
/// once its result is computed and before the result is delivered: a caller that has
/// its result can then count on the slot being free again.
type Job = Box<dyn FnOnce(&mut dyn FnMut()) + Send + 'static>;

/// Limits of a [`ThreadPoolBulkhead`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ThreadPoolBulkheadConfig {
    /// Worker threads, which is also the number of calls that run at once. Default 8.
    pub max_concurrent: NonZeroUsize,
    /// Calls that may wait for a free worker; beyond that calls are rejected. Default 100.
    pub queue_capacity: usize,
}

impl Default for ThreadPoolBulkheadConfig {
    fn default() -> Self {
        Self { max_concurrent: NonZeroUsize::new(8).unwrap_or(NonZeroUsize::MIN), queue_capacity: 100 }
    }
}

impl ThreadPoolBulkheadConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::check("bulkhead.max_concurrent", resilience_rules::workers(self.max_concurrent.get()))
    }
}

/// Runs calls on its own set of worker threads, with a bounded queue in front.
///
/// A call submitted when every worker is busy and the queue is full is rejected with
/// [`ResilienceError::BulkheadFull`] at once. Async callers get a future
/// ([`execute`](Self::execute)); blocking callers wait, optionally with a timeout that
/// returns on time while the worker finishes the abandoned call
/// ([`execute_blocking`](Self::execute_blocking)). A call whose caller has gone away
/// before a worker picks it up is skipped. Workers exit once the last handle is dropped
/// and the queue is drained. [`resize`](Self::resize) changes the number of workers and
/// the queue in place: calls running or queued keep their place.
///
/// Async bodies cannot run on a worker thread; a [`Pipeline`](crate::Pipeline) running
/// an async body through this bulkhead admits it against a separate limit of
/// `max_concurrent` calls on the caller's task.
#[derive(Clone)]
pub struct ThreadPoolBulkhead {
    inner: Arc<Handle>,
}

/// Owned by the handles only: dropping the last one shuts the workers down.
struct Handle {
    shared: Arc<Shared>,
    inline: Permits,
    metrics: BulkheadMetrics,
}

struct Shared {
    name: Arc<str>,
    /// `Queue::workers`, readable without the lock.
    workers: AtomicUsize,
    queue_capacity: AtomicUsize,
    queue: Mutex<Queue>,
    work: Condvar,
}

struct Queue {
    jobs: VecDeque<Job>,
    /// Workers running a job.
    busy: usize,
    /// Workers wanted.
    workers: usize,
    queue_capacity: usize,
    /// Worker threads alive; above `workers` after a shrink, until the extra ones exit.
    live: usize,
    /// Names the next worker thread.
    started: usize,
    shutdown: bool,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn work(self: &Arc<Self>) {
        let mut queue = self.queue();
        loop {
            if queue.live > queue.workers && !queue.shutdown {
                // Shrunk: the extra workers leave once they are between jobs.
                queue.live -= 1;
                return;
            }
            if let Some(job) = queue.jobs.pop_front() {
                queue.busy += 1;
                drop(queue);
                let mut freed = false;
                job(&mut || {
                    if !freed {
                        freed = true;
                        self.queue().busy -= 1;
                    }
                });
                queue = self.queue();
                if !freed {
                    queue.busy -= 1;
                }
            } else if queue.shutdown {
                queue.live -= 1;
                return;
            } else {
                queue = self.work.wait(queue).unwrap_or_else(|p| p.into_inner());
            }
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.queue().shutdown = true;
        self.shared.work.notify_all();
    }
}

impl fmt::Debug for ThreadPoolBulkhead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPoolBulkhead")
            .field("name", &self.inner.shared.name)
            .field("max_concurrent", &self.max_concurrent())
            .field("queue_capacity", &self.queue_capacity())
            .field("active", &self.active())
            .field("queued", &self.queued())
            .finish()
    }
}

impl ThreadPoolBulkhead {
    /// Starts `max_concurrent` worker threads named after the bulkhead.
    pub fn new(name: impl Into<Arc<str>>, config: ThreadPoolBulkheadConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let shared = Arc::new(Shared {
            name: name.into(),
            workers: AtomicUsize::new(0),
            queue_capacity: AtomicUsize::new(config.queue_capacity),
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                busy: 0,
                workers: 0,
                queue_capacity: config.queue_capacity,
                live: 0,
                started: 0,
                shutdown: false,
            }),
            work: Condvar::new(),
        });
        let handle = Handle {
            shared: Arc::clone(&shared),
            inline: Permits::new(config.max_concurrent.get()),
            metrics: BulkheadMetrics::new(&shared.name, config.max_concurrent.get()),
        };
        let pool = Self { inner: Arc::new(handle) };
        pool.start_workers(config.max_concurrent.get())?;
        Ok(pool)
    }

    /// Sets the number of workers to `workers`, starting the missing ones; fails (with
    /// the workers that did start kept) when the process cannot start a thread.
    fn start_workers(&self, workers: usize) -> Result<(), ConfigError> {
        let shared = &self.inner.shared;
        let mut queue = shared.queue();
        queue.workers = workers;
        shared.workers.store(workers, Release);
        while queue.live < workers {
            let worker = Arc::clone(shared);
            let name = format!("{}-{}", shared.name, queue.started);
            match std::thread::Builder::new().name(name).spawn(move || worker.work()) {
                Ok(_) => {
                    queue.live += 1;
                    queue.started += 1;
                }
                Err(e) => {
                    queue.workers = queue.live.max(1);
                    shared.workers.store(queue.workers, Release);
                    return Err(ConfigError::invalid(
                        "bulkhead.max_concurrent",
                        format!("could not start worker thread {}: {e}", queue.started),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Changes the number of workers and the queue's capacity in place. Calls running
    /// or queued keep their place; when shrinking, the extra workers exit once their
    /// current call is done. Fails only when the process cannot start a thread; the
    /// pool then keeps the workers that did start.
    pub fn resize(&self, config: ThreadPoolBulkheadConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let shared = &self.inner.shared;
        {
            let mut queue = shared.queue();
            queue.queue_capacity = config.queue_capacity;
            shared.queue_capacity.store(config.queue_capacity, Release);
        }
        let result = self.start_workers(config.max_concurrent.get());
        // Idle workers above the new count wake up to leave.
        shared.work.notify_all();
        let workers = self.max_concurrent();
        self.inner.inline.set_limit(workers);
        self.inner.metrics.max_allowed.set(workers as f64);
        self.refresh_gauges();
        result
    }

    /// Worker threads alive now (above [`max_concurrent`](Self::max_concurrent) for a
    /// moment after a shrink, below it once the pool is shut down).
    pub fn threads(&self) -> usize {
        self.inner.shared.queue().live
    }

    /// The bulkhead's name.
    pub fn name(&self) -> &str {
        &self.inner.shared.name
    }

    /// Worker threads.
    pub fn max_concurrent(&self) -> usize {
        self.inner.shared.workers.load(Acquire)
    }

    /// Calls that may wait for a worker.
    pub fn queue_capacity(&self) -> usize {
        self.inner.shared.queue_capacity.load(Acquire)
    }

    /// Calls running on a worker now.
    pub fn active(&self) -> usize {
        self.inner.shared.queue().busy
    }

    /// Calls waiting for a worker now.
    pub fn queued(&self) -> usize {
        self.inner.shared.queue().jobs.len()
    }

    #[cold]
    fn full(&self) -> ResilienceError {
        self.inner.metrics.rejected.increment(1);
        ResilienceError::bulkhead_full(&self.inner.shared.name, self.max_concurrent())
    }

    /// Workers not running a call now.
    pub fn available(&self) -> usize {
        self.max_concurrent().saturating_sub(self.active())
    }

    /// Sets the available-slots gauge: workers not busy.
    pub(crate) fn refresh_gauges(&self) {
        self.inner.metrics.available.set(self.available() as f64);
    }

    fn submit(&self, job: Job) -> Result<(), ResilienceError> {
        let shared = &self.inner.shared;
        let mut queue = shared.queue();
        // Jobs that a free worker will take at once do not occupy the queue.
        if queue.jobs.len() + queue.busy >= queue.workers.saturating_add(queue.queue_capacity) {
            return Err(self.full());
        }
        queue.jobs.push_back(job);
        drop(queue);
        shared.work.notify_one();
        Ok(())
    }

    /// Runs `f` on a worker; the future resolves with its result. Dropping the future
    /// before a worker starts `f` removes the call. A panic in `f` is resumed in the
    /// awaiting task.
    pub fn execute<T, F>(&self, f: F) -> impl std::future::Future<Output = Result<T, ResilienceError>> + Send + 'static
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let submitted = self.submit(Box::new(move |free: &mut dyn FnMut()| {
            if !tx.is_closed() {
                let out = catch_unwind(AssertUnwindSafe(f));
                free();
                let _ = tx.send(out);
            }
        }));
        // Counted as a rejection only if it is one (not made up front for every call).
        let pool = self.clone();
        async move {
            submitted?;
            match rx.await {
                Ok(Ok(out)) => Ok(out),
                Ok(Err(panic)) => resume_unwind(panic),
                // Only a worker that dropped the job unrun closes the channel.
                Err(_) => Err(pool.full()),
            }
        }
    }

    /// Runs `f` on a worker and blocks until it finishes, or until `timeout` passes, in
    /// which case `Timeout` is returned at once and `f`'s result is discarded (a call
    /// still queued then is skipped). A panic in `f` is resumed on this thread.
    pub fn execute_blocking<T, F>(&self, f: F, timeout: Option<Duration>) -> Result<T, ResilienceError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = sync_channel(1);
        let abandoned = Arc::new(AtomicBool::new(false));
        let skip = Arc::clone(&abandoned);
        self.submit(Box::new(move |free: &mut dyn FnMut()| {
            if !skip.load(Acquire) {
                let out = catch_unwind(AssertUnwindSafe(f));
                free();
                let _ = tx.send(out);
            }
        }))?;
        let received = match timeout {
            Some(limit) => rx.recv_timeout(limit).ok(),
            None => rx.recv().ok(),
        };
        match received {
            Some(Ok(out)) => Ok(out),
            Some(Err(panic)) => resume_unwind(panic),
            None => {
                abandoned.store(true, Release);
                match timeout {
                    Some(limit) => Err(ResilienceError::timeout(&self.inner.shared.name, limit)),
                    None => Err(self.full()),
                }
            }
        }
    }

    /// The `max_concurrent` slots for calls that run on the caller's own task or
    /// thread (async bodies), apart from the workers.
    #[inline]
    pub(crate) fn inline_permits(&self) -> &Permits {
        &self.inner.inline
    }

    #[cold]
    pub(crate) fn inline_full(&self) -> ResilienceError {
        self.full()
    }
}
