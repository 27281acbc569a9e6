//! Hedged calls: another attempt when the first is slow.
//!
//! A hedged call starts its primary attempt; if no attempt has answered after the
//! hedge's `delay` (a fixed duration, or a percentile of the latency of the
//! dependency's recent successful attempts once [`MIN_SAMPLES`] of them finished), it
//! starts another, up to `max_attempts` in all. Each attempt is a whole call through the dependency's
//! pipeline (its own retries, breaker permit, rate-limit check, bulkhead slot and
//! timeout). The first success wins and the others are dropped at once: a dropped
//! attempt counts as neither success nor failure anywhere (breaker, adaptive limit,
//! metrics of outcomes). An attempt that fails with an error worth retrying
//! (`retry_if`) starts the next one at once; one that fails with any other error ends
//! the call with that error. Every hedge (each attempt after the primary) draws a retry
//! from the dependency's retry budget, if it has one; a refused hedge is not started.
//!
//! Only calls marked idempotent are hedged: [`Pipeline::call_idempotent`], attributes
//! with `idempotent = true`, and the pools' reads.

use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use metrics::{counter, Counter};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::error::{ConfigError, ResilienceError};
use crate::observe::latency::{bucket_limit, bucket_of, BUCKETS};
use crate::pipeline::{ErrorPolicy, MakeAttempt, Pipeline, PipelineCall};
use crate::reclaim::Guard;
use crate::retry::RetryConfig;
use crate::sync::{AtomicU64, Mutex, Ordering::Relaxed};

/// Finished attempts a percentile delay needs before calls are hedged.
pub const MIN_SAMPLES: u64 = 20;
/// After this many samples the histogram's counts are halved, so it follows recent
/// latency.
const HALVE_AFTER: u64 = 2_000;

/// When a hedge starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HedgeDelay {
    /// After this long without an answer.
    After(Duration),
    /// After this percentile (in (0, 100)) of the dependency's recent attempts' latency.
    Percentile(f64),
}

/// A hedge's settings (`hedge(max_attempts, delay)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgeConfig {
    /// Attempts in all, the primary included. Default 2.
    pub max_attempts: NonZeroU32,
    /// When each further attempt starts. Default the 95th percentile.
    pub delay: HedgeDelay,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        Self { max_attempts: NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN), delay: HedgeDelay::Percentile(95.0) }
    }
}

impl HedgeConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::check("hedge.max_attempts", resilience_rules::hedge_attempts(self.max_attempts.get()))?;
        match self.delay {
            HedgeDelay::Percentile(p) => ConfigError::check("hedge.delay", resilience_rules::hedge_percentile(p)),
            HedgeDelay::After(_) => Ok(()),
        }
    }
}

/// A dependency's hedging: its settings, the recent latency of its attempts and its
/// metrics. Cloning gives another handle to the same one.
#[derive(Clone)]
pub struct Hedge {
    inner: Arc<Inner>,
}

struct Inner {
    config: HedgeConfig,
    buckets: [AtomicU64; BUCKETS],
    samples: AtomicU64,
    halving: Mutex<()>,
    primary: Counter,
    hedges: Counter,
    won: Counter,
    dropped: Counter,
    suppressed: Counter,
}

impl fmt::Debug for Hedge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge").field("config", &self.inner.config).field("delay", &self.delay()).finish()
    }
}

impl Hedge {
    /// A hedge with no latency seen yet.
    pub fn new(name: &str, config: HedgeConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let attempts =
            |kind: &'static str| counter!("resilience_hedge_attempts_total", "name" => name.to_owned(), "kind" => kind);
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                buckets: std::array::from_fn(|_| AtomicU64::new(0)),
                samples: AtomicU64::new(0),
                halving: Mutex::new(()),
                primary: attempts("primary"),
                hedges: attempts("hedge"),
                won: counter!("resilience_hedge_won_total", "name" => name.to_owned()),
                dropped: counter!("resilience_hedge_losers_dropped_total", "name" => name.to_owned()),
                suppressed: counter!("resilience_hedge_suppressed_total", "name" => name.to_owned()),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &HedgeConfig {
        &self.inner.config
    }

    /// How long a call waits before its next hedge: the fixed delay, or the percentile
    /// of recent latency (an upper bound, at half-octave resolution); `None` while a
    /// percentile has too few samples, when calls are not hedged.
    pub fn delay(&self) -> Option<Duration> {
        match self.inner.config.delay {
            HedgeDelay::After(d) => Some(d),
            HedgeDelay::Percentile(p) => {
                if self.inner.samples.load(Relaxed) < MIN_SAMPLES {
                    return None;
                }
                let counts: [u64; BUCKETS] = std::array::from_fn(|i| self.inner.buckets[i].load(Relaxed));
                let total: u64 = counts.iter().sum();
                let wanted = ((total as f64) * p / 100.0).ceil() as u64;
                let mut seen = 0;
                counts.iter().enumerate().find_map(|(i, n)| {
                    seen += n;
                    (seen >= wanted.max(1)).then(|| bucket_limit(i))
                })
            }
        }
    }

    /// Records a finished attempt's duration.
    fn record(&self, took: Duration) {
        let nanos = crate::clock::duration_nanos(took);
        self.inner.buckets[bucket_of(nanos)].fetch_add(1, Relaxed);
        let n = self.inner.samples.fetch_add(1, Relaxed) + 1;
        if n.is_multiple_of(HALVE_AFTER) {
            if let Ok(_halving) = self.inner.halving.try_lock() {
                for b in &self.inner.buckets {
                    let v = b.load(Relaxed);
                    b.fetch_sub(v / 2, Relaxed);
                }
            }
        }
    }
}

/// One running attempt of a hedged call.
struct Running<'a, E, F, Fut> {
    call: Pin<Box<PipelineCall<'a, E, F, Fut>>>,
    started: Instant,
    hedge: bool,
}

pin_project! {
    /// The future of a hedged call (see the module documentation).
    #[must_use = "futures do nothing unless polled"]
    pub struct HedgedCall<'a, E, F, Fut> {
        pipeline: &'a Pipeline,
        hedge: &'a Hedge,
        policy: ErrorPolicy<E>,
        from: fn(ResilienceError) -> E,
        f: F,
        timeout_nanos: u64,
        retry_config: Option<&'a RetryConfig>,
        running: Vec<Running<'a, E, F, Fut>>,
        started: u32,
        timer: Option<Pin<Box<Sleep>>>,
        // No further hedge: the budget refused one.
        refused: bool,
        last_error: Option<E>,
        // Last: what keeps the pipeline alive while the call runs.
        guard: Option<Guard>,
    }
}

impl<'a, E, F, Fut> HedgedCall<'a, E, F, Fut> {
    pub(crate) fn new(
        pipeline: &'a Pipeline,
        hedge: &'a Hedge,
        policy: ErrorPolicy<E>,
        from: fn(ResilienceError) -> E,
        f: F,
        timeout_nanos: u64,
        retry_config: Option<&'a RetryConfig>,
    ) -> Self {
        Self {
            pipeline,
            hedge,
            policy,
            from,
            f,
            timeout_nanos,
            retry_config,
            running: Vec::new(),
            started: 0,
            timer: None,
            refused: false,
            last_error: None,
            guard: None,
        }
    }

    /// This call, holding `guard` until it is dropped.
    pub(crate) fn guarded(mut self, guard: Guard) -> Self {
        self.guard = Some(guard);
        self
    }
}

impl<E, F, Fut> fmt::Debug for HedgedCall<'_, E, F, Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgedCall")
            .field("pipeline", &self.pipeline.name())
            .field("running", &self.running.len())
            .finish_non_exhaustive()
    }
}

impl<'a, T, E, F, Fut> Future for HedgedCall<'a, E, F, Fut>
where
    F: MakeAttempt<Fut> + Clone,
    Fut: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let (pipeline, hedge) = (*this.pipeline, *this.hedge);
        let max = hedge.config().max_attempts.get();
        // Start an attempt: the primary, or a hedge if the budget allows one.
        let (policy, from, timeout_nanos, retry_config) =
            (*this.policy, *this.from, *this.timeout_nanos, *this.retry_config);
        let template: &F = this.f;
        let start = |running: &mut Vec<Running<'a, E, F, Fut>>, started: &mut u32, refused: &mut bool| {
            let is_hedge = *started > 0;
            if is_hedge {
                if pipeline.retry_budget().is_some_and(|b| !b.try_withdraw()) {
                    *refused = true;
                    hedge.inner.suppressed.increment(1);
                    return false;
                }
                hedge.inner.hedges.increment(1);
            } else {
                hedge.inner.primary.increment(1);
            }
            *started += 1;
            let call = pipeline
                .call_configured(&policy, from, template.clone(), timeout_nanos, retry_config)
                .hedge_attempt(is_hedge);
            running.push(Running { call: Box::pin(call), started: Instant::now(), hedge: is_hedge });
            true
        };
        if *this.started == 0 {
            start(this.running, this.started, this.refused);
        }
        loop {
            let mut next_now = false;
            let mut i = 0;
            while i < this.running.len() {
                let polled = this.running[i].call.as_mut().poll(cx);
                let Poll::Ready(result) = polled else {
                    i += 1;
                    continue;
                };
                let done = this.running.swap_remove(i);
                match result {
                    Ok(value) => {
                        // Successes only: a rejection or a quick failure says nothing of
                        // how long the dependency takes to answer.
                        hedge.record(done.started.elapsed());
                        if done.hedge {
                            hedge.inner.won.increment(1);
                        }
                        hedge.inner.dropped.increment(this.running.len() as u64);
                        this.running.clear();
                        return Poll::Ready(Ok(value));
                    }
                    Err(error) if (this.policy.retry_if)(&error) => {
                        *this.last_error = Some(error);
                        next_now = true;
                    }
                    Err(error) => {
                        hedge.inner.dropped.increment(this.running.len() as u64);
                        this.running.clear();
                        return Poll::Ready(Err(error));
                    }
                }
            }
            let can_start = *this.started < max && !*this.refused;
            let due = can_start
                && match this.timer.as_mut() {
                    Some(timer) => timer.as_mut().poll(cx).is_ready(),
                    None => false,
                };
            if can_start && (next_now || due) {
                *this.timer = None;
                if start(this.running, this.started, this.refused) {
                    continue;
                }
            }
            if this.running.is_empty() {
                return match this.last_error.take() {
                    Some(error) => Poll::Ready(Err(error)),
                    // Unreachable in practice: a call that ends has a result or an error.
                    None => Poll::Pending,
                };
            }
            if *this.started < max && !*this.refused && this.timer.is_none() {
                if let Some(delay) = hedge.delay() {
                    let mut timer = Box::pin(tokio::time::sleep(delay));
                    if timer.as_mut().poll(cx).is_ready() {
                        *this.timer = Some(timer);
                        continue;
                    }
                    *this.timer = Some(timer);
                }
            }
            return Poll::Pending;
        }
    }
}
