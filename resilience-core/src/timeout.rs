//! Per-attempt time limits.

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::clock::duration_nanos;
use crate::deadline;
use crate::error::{ConfigError, ResilienceError};
use crate::offload;

pin_project! {
    /// Runs a future with a time limit, creating the timer only if the future does not
    /// finish on its first poll: a ready future never touches the clock or the timer wheel.
    pub(crate) struct Limited<F> {
        #[pin]
        inner: F,
        timer: Timer,
        // Nanoseconds, 0 for no limit: a whole word, so that moving this future never
        // reads a half-written one.
        limit_nanos: u64,
    }
}

/// A limited future's timer, made at its first `Pending`.
enum Timer {
    /// Not made yet (or no limit).
    None,
    /// A long limit's deadline, kept by the helper thread of `crate::deadline`.
    Coarse(deadline::Armed),
    /// A tokio timer: a short limit, or a paused clock. Boxed, so that the futures of
    /// the long limits most calls have do not carry its 112 bytes.
    Fine(Pin<Box<Sleep>>),
}

/// The limit passed before the future finished.
#[derive(Debug)]
pub(crate) struct Elapsed;

impl<F> Limited<F> {
    /// `limit_nanos` is the limit in nanoseconds, 0 for none (see [`limit_nanos`]).
    #[inline]
    pub(crate) fn new(inner: F, limit_nanos: u64) -> Self {
        Self { inner, timer: Timer::None, limit_nanos }
    }

    fn limit(&self) -> Duration {
        Duration::from_nanos(self.limit_nanos)
    }

    /// When the attempt started, if its timer was created (it went `Pending`).
    pub(crate) fn started(&self) -> Option<Instant> {
        match &self.timer {
            Timer::None => None,
            Timer::Coarse(armed) => Some(Instant::from_std(armed.start())),
            Timer::Fine(sleep) => sleep.deadline().checked_sub(self.limit()),
        }
    }
}

impl<F: Future> Future for Limited<F> {
    type Output = Result<F::Output, Elapsed>;

    /// Inline: a future ready at once costs one poll and a branch; the timer's part is
    /// out of line, once for every `F`.
    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(out) = self.as_mut().poll_inner(cx) {
            return Poll::Ready(Ok(out));
        }
        match self.expired(cx) {
            true => Poll::Ready(Err(Elapsed)),
            false => Poll::Pending,
        }
    }
}

impl<F: Future> Limited<F> {
    /// The inner future's poll alone.
    #[inline]
    pub(crate) fn poll_inner(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }

    /// After the inner future returned `Pending`: whether the limit has passed (arming
    /// the timer at the first call).
    #[inline]
    pub(crate) fn expired(self: Pin<&mut Self>, cx: &mut Context<'_>) -> bool {
        let this = self.project();
        *this.limit_nanos != 0 && poll_timer(this.timer, *this.limit_nanos, cx)
    }
}

/// Whether the limit has passed, arming the timer at the first call (the attempt's
/// first `Pending`: its start, to within this one poll). `limit_nanos` is not 0.
#[inline(never)]
fn poll_timer(timer: &mut Timer, limit_nanos: u64, cx: &mut Context<'_>) -> bool {
    match timer {
        Timer::Coarse(armed) => armed.poll_fired(cx),
        Timer::Fine(sleep) => sleep.as_mut().poll(cx).is_ready(),
        Timer::None => {
            let limit = Duration::from_nanos(limit_nanos);
            if limit >= deadline::MIN_LIMIT {
                if let Some(armed) = deadline::arm(limit, cx) {
                    *timer = Timer::Coarse(armed);
                    return false;
                }
            }
            let start = Instant::now();
            let mut sleep = Box::pin(match start.checked_add(limit) {
                Some(deadline) => tokio::time::sleep_until(deadline),
                // Beyond the clock's range: a timer that never fires.
                None => tokio::time::sleep(limit),
            });
            let fired = sleep.as_mut().poll(cx).is_ready();
            *timer = Timer::Fine(sleep);
            fired
        }
    }
}

pin_project! {
    /// The future returned by [`Timeout::call`].
    #[must_use = "futures do nothing unless polled"]
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: Limited<F>,
        name: Arc<str>,
    }
}

impl<F: Future> Future for TimeoutFuture<F> {
    type Output = Result<F::Output, ResilienceError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let limit = this.inner.limit();
        match ready!(this.inner.poll(cx)) {
            Ok(out) => Poll::Ready(Ok(out)),
            Err(Elapsed) => Poll::Ready(Err(ResilienceError::timeout(this.name, limit))),
        }
    }
}

/// A time limit for one attempt.
///
/// Async calls are raced against a timer created lazily, only for an attempt that does
/// not finish on its first poll. A limit of 100 ms or more is kept by one helper thread
/// of the process (`resilience-deadlines`, started on first use, asleep while no attempt
/// waits) instead of tokio's timer wheel: a registered tokio timer makes every idle
/// worker park with a kernel timeout, which measured at 5–9 % of a Redis `GET` on
/// loopback. It fires a fraction of a millisecond after the deadline (0.2–0.4 ms on an
/// idle machine, `deadline::tests::a_long_limit_fires_on_time`). Shorter
/// limits, and every limit while tokio's clock is paused (`tokio::time::pause`, tests
/// with `start_paused`), use a tokio timer, so virtual time ends them; that timer is
/// boxed (one allocation per attempt that waits), which keeps it out of the futures of
/// the long limits. A blocking
/// call cannot be interrupted, so there are two forms:
/// [`call_blocking`](Self::call_blocking) runs `Send + 'static` work on a helper thread
/// and returns [`ResilienceError::Timeout`] on time, leaving the work to finish on its
/// own; [`call_blocking_in_place`](Self::call_blocking_in_place) runs borrowing work on
/// the caller's thread and reports an overrun as `Timeout` when the work returns.
#[derive(Debug, Clone)]
pub struct Timeout {
    name: Arc<str>,
    limit: Duration,
}

impl Timeout {
    /// A limit of `limit` per call; zero is rejected.
    pub fn new(name: impl Into<Arc<str>>, limit: Duration) -> Result<Self, ConfigError> {
        validate(limit)?;
        Ok(Self { name: name.into(), limit })
    }

    /// The limit.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Runs `fut`, failing with [`ResilienceError::Timeout`] if it outlives the limit.
    #[inline]
    pub fn call<F: Future>(&self, fut: F) -> TimeoutFuture<F> {
        TimeoutFuture { inner: Limited::new(fut, limit_nanos(Some(self.limit))), name: Arc::clone(&self.name) }
    }

    /// Runs `f` on a helper thread and waits at most the limit for it. On time-out the
    /// caller gets `Timeout` at once; `f` keeps running and its result is discarded.
    /// A panic in `f` is resumed on the caller's thread.
    pub fn call_blocking<T, F>(&self, f: F) -> Result<T, ResilienceError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        run_detached(f, Some(self.limit)).ok_or_else(|| ResilienceError::timeout(&self.name, self.limit))
    }

    /// Runs `f` on this thread; if it took longer than the limit, its result is
    /// discarded and `Timeout` returned.
    pub fn call_blocking_in_place<T>(&self, f: impl FnOnce() -> T) -> Result<T, ResilienceError> {
        let start = Instant::now();
        let out = f();
        if start.elapsed() > self.limit {
            Err(ResilienceError::timeout(&self.name, self.limit))
        } else {
            Ok(out)
        }
    }
}

/// A limit as [`Limited`] takes it: nanoseconds, at least 1, or 0 for no limit.
pub(crate) fn limit_nanos(limit: Option<Duration>) -> u64 {
    limit.map_or(0, |l| duration_nanos(l).max(1))
}

pub(crate) fn validate(limit: Duration) -> Result<(), ConfigError> {
    ConfigError::check("timeout", resilience_rules::timeout(limit))
}

/// Runs `f` on a helper thread and waits up to `limit` (forever if `None`); `None` if
/// the limit passed first. A panic in `f` is resumed here.
pub(crate) fn run_detached<T, F>(f: F, limit: Option<Duration>) -> Option<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = sync_channel(1);
    offload::spawn(Box::new(move || {
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(out);
    }));
    let received = match limit {
        Some(limit) => rx.recv_timeout(limit),
        None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
    };
    match received {
        Ok(Ok(out)) => Some(out),
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => None,
    }
}
