//! The policies composed, in a fixed order (outermost first):
//! `Fallback(Retry(CircuitBreaker(RateLimiter(Bulkhead(Timeout(call))))))`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;

use tokio::time::Instant;

use crate::bulkhead::{
    AdaptiveBulkhead, AdaptiveBulkheadConfig, Bulkhead, SemaphoreBulkhead, SemaphoreBulkheadConfig, Slot,
    ThreadPoolBulkhead, ThreadPoolBulkheadConfig,
};
use crate::chaos::ChaosConfig;
use crate::circuit_breaker::{CallPermit, CircuitBreaker, CircuitBreakerConfig};
use crate::error::{ConfigError, ResilienceError};
use crate::hedge::{Hedge, HedgeConfig, HedgedCall};
use crate::observe::latency::{self, LatencyStats};
use crate::observe::metrics::{PipelineMetrics, TimeOutcome};
use crate::rate_limit::{RateLimiter, RateLimiterConfig};
use crate::reclaim::{self, Guard, RcuCell};
use crate::retry::budget::{attempt_starts, mark_refused, refused_inside};
use crate::retry::{call_start, RetryBudget, RetryBudgetConfig, RetryConfig, RetryState};
use crate::timeout::{self, run_detached, Elapsed, Limited};

/// Which errors of a call site's error type are retried and which count as breaker
/// failures. Both default to every error.
///
/// Errors produced by the policies themselves are classified by the pipeline:
/// rejections (open breaker, full bulkhead, rate limit) are neither retried nor
/// recorded; timeouts are always both.
#[derive(Debug)]
pub struct ErrorPolicy<E> {
    /// Whether an error of the body is worth another attempt.
    pub retry_if: fn(&E) -> bool,
    /// Whether an error of the body counts as a failure of the dependency; if not, the
    /// breaker ignores the call.
    pub record_if: fn(&E) -> bool,
}

fn always<E>(_: &E) -> bool {
    true
}

impl<E> Default for ErrorPolicy<E> {
    fn default() -> Self {
        Self { retry_if: always::<E>, record_if: always::<E> }
    }
}

impl<E> Clone for ErrorPolicy<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for ErrorPolicy<E> {}

/// Retry, circuit breaker, rate limiter, bulkhead and timeout around one dependency;
/// each optional. Cloning gives another handle to the same policy instances.
///
/// A call that the breaker, rate limiter or bulkhead rejects never runs its body and
/// fails with the [`ResilienceError`] (converted into the caller's error type) at once.
/// A call through a closed breaker and a free bulkhead allocates nothing and takes no
/// lock; the timer is only created when the body does not finish on its first poll.
#[derive(Debug, Clone)]
pub struct Pipeline {
    name: Arc<str>,
    /// Unique in the process: what a call site compares to notice a new pipeline (an
    /// address could be reused once a replaced pipeline is freed).
    id: u64,
    timeout: Option<Duration>,
    /// `timeout` as the attempt's timer takes it.
    timeout_nanos: u64,
    retry: Option<RetryConfig>,
    breaker: Option<CircuitBreaker>,
    rate_limiter: Option<RateLimiter>,
    bulkhead: Option<Bulkhead>,
    budget: Option<RetryBudget>,
    hedge: Option<Hedge>,
    #[cfg(feature = "chaos")]
    chaos: Option<crate::chaos::Chaos>,
    metrics: Arc<PipelineMetrics>,
    latency: Arc<LatencyStats>,
}

/// Builds a [`Pipeline`]; see [`Pipeline::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct PipelineBuilder {
    name: Arc<str>,
    timeout: Option<Duration>,
    retry: Option<RetryConfig>,
    breaker: Option<Policy<CircuitBreakerConfig, CircuitBreaker>>,
    rate_limiter: Option<Policy<RateLimiterConfig, RateLimiter>>,
    bulkhead: Option<Policy<BulkheadConfig, Bulkhead>>,
    budget: Option<Policy<RetryBudgetConfig, RetryBudget>>,
    hedge: Option<Policy<HedgeConfig, Hedge>>,
    chaos: Option<ChaosConfig>,
    /// The injector of the pipeline this one replaces, kept if its settings did not change.
    #[cfg(feature = "chaos")]
    previous_chaos: Option<crate::chaos::Chaos>,
    /// Metric handles and latency samples to keep (a rebuilt pipeline of the same name).
    stats: Option<(Arc<PipelineMetrics>, Arc<LatencyStats>)>,
}

#[derive(Debug, Clone)]
enum Policy<C, I> {
    Config(C),
    Instance(I),
}

#[derive(Debug, Clone)]
enum BulkheadConfig {
    Semaphore(SemaphoreBulkheadConfig),
    ThreadPool(ThreadPoolBulkheadConfig),
    Adaptive(AdaptiveBulkheadConfig),
}

impl PipelineBuilder {
    /// A per-attempt time limit.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Retries with this configuration.
    pub fn retry(mut self, config: RetryConfig) -> Self {
        self.retry = Some(config);
        self
    }

    /// A new retry budget with this configuration, shared by every call of the pipeline.
    pub fn retry_budget(mut self, config: RetryBudgetConfig) -> Self {
        self.budget = Some(Policy::Config(config));
        self
    }

    /// An existing retry budget, shared with its other users.
    pub fn with_retry_budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(Policy::Instance(budget));
        self
    }

    /// Fault injection with this configuration (with the `chaos` feature, when switched
    /// on; otherwise accepted and inert).
    pub fn chaos(mut self, config: ChaosConfig) -> Self {
        self.chaos = Some(config);
        self
    }

    /// Hedging with this configuration, for the pipeline's idempotent calls.
    pub fn hedge(mut self, config: HedgeConfig) -> Self {
        self.hedge = Some(Policy::Config(config));
        self
    }

    /// An existing hedge (and its latency history), shared with its other users.
    pub fn with_hedge(mut self, hedge: Hedge) -> Self {
        self.hedge = Some(Policy::Instance(hedge));
        self
    }

    /// A new circuit breaker with this configuration.
    pub fn circuit_breaker(mut self, config: CircuitBreakerConfig) -> Self {
        self.breaker = Some(Policy::Config(config));
        self
    }

    /// An existing circuit breaker, shared with its other users.
    pub fn with_circuit_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = Some(Policy::Instance(breaker));
        self
    }

    /// A new rate limiter with this configuration.
    pub fn rate_limit(mut self, config: RateLimiterConfig) -> Self {
        self.rate_limiter = Some(Policy::Config(config));
        self
    }

    /// An existing rate limiter, shared with its other users.
    pub fn with_rate_limiter(mut self, limiter: RateLimiter) -> Self {
        self.rate_limiter = Some(Policy::Instance(limiter));
        self
    }

    /// A new semaphore bulkhead with this configuration.
    pub fn bulkhead(mut self, config: SemaphoreBulkheadConfig) -> Self {
        self.bulkhead = Some(Policy::Config(BulkheadConfig::Semaphore(config)));
        self
    }

    /// A new thread-pool bulkhead with this configuration.
    pub fn thread_pool(mut self, config: ThreadPoolBulkheadConfig) -> Self {
        self.bulkhead = Some(Policy::Config(BulkheadConfig::ThreadPool(config)));
        self
    }

    /// A new adaptive bulkhead with this configuration.
    pub fn adaptive_bulkhead(mut self, config: AdaptiveBulkheadConfig) -> Self {
        self.bulkhead = Some(Policy::Config(BulkheadConfig::Adaptive(config)));
        self
    }

    /// An existing bulkhead, shared with its other users.
    pub fn with_bulkhead(mut self, bulkhead: Bulkhead) -> Self {
        self.bulkhead = Some(Policy::Instance(bulkhead));
        self
    }

    /// Validates every configuration and builds the policies.
    pub fn build(self) -> Result<Pipeline, ConfigError> {
        if let Some(limit) = self.timeout {
            timeout::validate(limit)?;
        }
        if let Some(retry) = &self.retry {
            retry.validate()?;
        }
        let name = self.name;
        let breaker = match self.breaker {
            None => None,
            Some(Policy::Instance(b)) => Some(b),
            Some(Policy::Config(c)) => Some(CircuitBreaker::new(Arc::clone(&name), c)?),
        };
        let rate_limiter = match self.rate_limiter {
            None => None,
            Some(Policy::Instance(r)) => Some(r),
            Some(Policy::Config(c)) => Some(RateLimiter::new(Arc::clone(&name), c)?),
        };
        let bulkhead = match self.bulkhead {
            None => None,
            Some(Policy::Instance(b)) => Some(b),
            Some(Policy::Config(BulkheadConfig::Semaphore(c))) => {
                Some(Bulkhead::Semaphore(SemaphoreBulkhead::new(Arc::clone(&name), c)?))
            }
            Some(Policy::Config(BulkheadConfig::ThreadPool(c))) => {
                Some(Bulkhead::ThreadPool(ThreadPoolBulkhead::new(Arc::clone(&name), c)?))
            }
            Some(Policy::Config(BulkheadConfig::Adaptive(c))) => {
                Some(Bulkhead::Adaptive(AdaptiveBulkhead::new(Arc::clone(&name), c)?))
            }
        };
        let budget = match self.budget {
            None => None,
            Some(Policy::Instance(b)) => Some(b),
            Some(Policy::Config(c)) => Some(RetryBudget::new(&name, c)?),
        };
        if let Some(c) = &self.chaos {
            c.validate()?;
        }
        #[cfg(feature = "chaos")]
        let chaos = self.chaos.map(|c| match self.previous_chaos {
            Some(p) if *p.config() == c => p,
            _ => crate::chaos::Chaos::new(&name, c),
        });
        let hedge = match self.hedge {
            None => None,
            Some(Policy::Instance(h)) => Some(h),
            Some(Policy::Config(c)) => Some(Hedge::new(&name, c)?),
        };
        let retry = self.retry.filter(|r| r.enabled && r.max_attempts.get() > 1);
        let (metrics, latency) = match self.stats {
            Some(stats) => stats,
            None => (Arc::new(PipelineMetrics::new(&name)), Arc::new(LatencyStats::new(&name))),
        };
        Ok(Pipeline {
            id: next_id(),
            timeout: self.timeout,
            timeout_nanos: timeout::limit_nanos(self.timeout),
            retry,
            breaker,
            rate_limiter,
            bulkhead,
            budget,
            hedge,
            #[cfg(feature = "chaos")]
            chaos,
            metrics,
            latency,
            name,
        })
    }
}

fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Pipeline {
    /// Builds the pipeline `config` describes for `name`, reusing the policy instances
    /// of `previous` where they can be kept: a bulkhead of the same kind (its permits in
    /// use, its queue and its workers stay; the new limits are set by
    /// [`commit`](Self::commit)), and a breaker or rate limiter whose configuration did
    /// not change. Changes nothing that is in use: on error, everything stays as it was.
    pub(crate) fn from_config(
        name: &Arc<str>,
        config: &crate::config::ResilienceConfig,
        previous: Option<&Pipeline>,
    ) -> Result<Pipeline, ConfigError> {
        use crate::config::BulkheadKind;
        config.validate()?;
        let mut builder = Pipeline::builder(Arc::clone(name));
        if let Some(limit) = config.timeout {
            builder = builder.timeout(limit);
        }
        // Like a call site's per-call settings: no retry bookkeeping (nor retry metrics)
        // where a call makes one attempt.
        if let Some(retry) = config.call_retry() {
            builder = builder.retry(retry);
        }
        if config.circuit_breaker.enabled {
            builder = match previous.and_then(|p| p.breaker.as_ref()) {
                Some(b) if *b.config() == config.circuit_breaker => builder.with_circuit_breaker(b.clone()),
                _ => builder.circuit_breaker(config.circuit_breaker),
            };
        }
        if let Some(chaos) = config.chaos {
            builder = builder.chaos(chaos);
            #[cfg(feature = "chaos")]
            {
                builder.previous_chaos = previous.and_then(|p| p.chaos.clone());
            }
        }
        if let Some(hedge) = config.hedge {
            builder = match previous.and_then(|p| p.hedge.as_ref()) {
                Some(h) if *h.config() == hedge => builder.with_hedge(h.clone()),
                _ => builder.hedge(hedge),
            };
        }
        if let Some(budget) = config.retry_budget {
            builder = match previous.and_then(|p| p.budget.as_ref()) {
                Some(b) if *b.config() == budget => builder.with_retry_budget(b.clone()),
                _ => builder.retry_budget(budget),
            };
        }
        if let Some(limit) = config.rate_limit {
            builder = match previous.and_then(|p| p.rate_limiter.as_ref()) {
                Some(r) if r.config() == &limit => builder.with_rate_limiter(r.clone()),
                _ => builder.rate_limit(limit),
            };
        }
        let settings = &config.bulkhead;
        if settings.enabled {
            let reused = match (settings.kind, previous.and_then(|p| p.bulkhead.as_ref())) {
                (BulkheadKind::Semaphore, Some(b @ Bulkhead::Semaphore(_)))
                | (BulkheadKind::ThreadPool, Some(b @ Bulkhead::ThreadPool(_))) => Some(b.clone()),
                // An adaptive bulkhead keeps what it learned unless its bounds change.
                (BulkheadKind::Adaptive, Some(b @ Bulkhead::Adaptive(a)))
                    if adaptive_bounds(a.config()) == adaptive_bounds(&settings.adaptive()) =>
                {
                    Some(b.clone())
                }
                _ => None,
            };
            if reused.is_some() {
                // What `commit` will set must be valid now, so that it cannot fail then.
                match settings.kind {
                    BulkheadKind::Semaphore => settings.semaphore().validate()?,
                    BulkheadKind::ThreadPool => settings.thread_pool().validate()?,
                    BulkheadKind::Adaptive => settings.adaptive().validate()?,
                }
            }
            builder = match (reused, settings.kind) {
                (Some(b), _) => builder.with_bulkhead(b),
                (None, BulkheadKind::Semaphore) => builder.bulkhead(settings.semaphore()),
                (None, BulkheadKind::ThreadPool) => builder.thread_pool(settings.thread_pool()),
                (None, BulkheadKind::Adaptive) => builder.adaptive_bulkhead(settings.adaptive()),
            };
        }
        if let Some(previous) = previous {
            // The same name's metric handles and latency samples carry over.
            builder.stats = Some((Arc::clone(&previous.metrics), Arc::clone(&previous.latency)));
        }
        builder.build()
    }

    /// Sets the limits of `config` on a bulkhead kept from the previous pipeline, once
    /// this pipeline is published. Fails only when a thread-pool bulkhead cannot start
    /// the threads it grows by (it keeps those that did start).
    pub(crate) fn commit(&self, config: &crate::config::ResilienceConfig) -> Result<(), ConfigError> {
        let settings = &config.bulkhead;
        match &self.bulkhead {
            Some(Bulkhead::Semaphore(b)) if settings.enabled => {
                if b.max_concurrent() != settings.max_concurrent.get() {
                    b.set_max_concurrent(settings.max_concurrent);
                }
                if b.max_wait() != settings.max_wait {
                    b.set_max_wait(settings.max_wait);
                }
                Ok(())
            }
            Some(Bulkhead::Adaptive(a)) if settings.enabled => {
                a.set_max_wait(settings.max_wait);
                Ok(())
            }
            Some(Bulkhead::ThreadPool(p))
                if settings.enabled
                    && (p.max_concurrent() != settings.max_concurrent.get()
                        || p.queue_capacity() != settings.queue_capacity) =>
            {
                p.resize(settings.thread_pool())
            }
            _ => Ok(()),
        }
    }

    /// An id unique in the process (clones share it): tells a dependency's pipeline
    /// from the one a reconfiguration replaced it with.
    #[inline]
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// What decides whether a reconfigured adaptive bulkhead can keep its learned limit.
fn adaptive_bounds(c: &AdaptiveBulkheadConfig) -> (usize, usize, usize) {
    (c.initial_limit.get(), c.min_limit.get(), c.max_limit.get())
}

/// An attempt's body as the timeout sees it: with the `chaos` feature, under the
/// dependency's fault injection (innermost in the pipeline).
#[cfg(feature = "chaos")]
pub(crate) type Body<Fut, E> = crate::chaos::Chaotic<Fut, E>;
/// An attempt's body as the timeout sees it.
#[cfg(not(feature = "chaos"))]
pub(crate) type Body<Fut, E> = Plain<Fut, E>;

#[cfg(not(feature = "chaos"))]
pin_project! {
    /// The body itself (without the `chaos` feature there is nothing to inject).
    pub(crate) struct Plain<Fut, E> {
        #[pin]
        inner: Fut,
        _error: std::marker::PhantomData<fn() -> E>,
    }
}

#[cfg(not(feature = "chaos"))]
impl<Fut: Future, E> Future for Plain<Fut, E> {
    type Output = Fut::Output;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

/// `fut` as an attempt's body of `pipeline`.
#[inline(always)]
pub(crate) fn body<Fut, E>(pipeline: &Pipeline, fut: Fut, from: fn(ResilienceError) -> E) -> Body<Fut, E> {
    #[cfg(feature = "chaos")]
    {
        crate::chaos::Chaotic::new(fut, pipeline.chaos.as_ref(), from)
    }
    #[cfg(not(feature = "chaos"))]
    {
        let _ = (pipeline, from);
        Plain { inner: fut, _error: std::marker::PhantomData }
    }
}

/// How one attempt ended.
pub(crate) enum Attempt<T, E> {
    /// The body ran to completion.
    Done(Result<T, E>),
    /// A policy refused to run the body.
    Rejected(ResilienceError),
    /// The body was abandoned at the timeout (the caller got it on time): retried.
    TimedOut(Duration),
    /// The body ran in place past the timeout: reported when it returned, and not
    /// retried, since the caller has already waited longer than the timeout.
    Overran(Duration),
}

impl Pipeline {
    /// Starts building a pipeline for the dependency `name`.
    pub fn builder(name: impl Into<Arc<str>>) -> PipelineBuilder {
        PipelineBuilder {
            name: name.into(),
            timeout: None,
            retry: None,
            breaker: None,
            rate_limiter: None,
            bulkhead: None,
            budget: None,
            hedge: None,
            chaos: None,
            #[cfg(feature = "chaos")]
            previous_chaos: None,
            stats: None,
        }
    }

    /// A pipeline with no policy at all.
    pub(crate) fn empty(name: Arc<str>) -> Self {
        Pipeline {
            id: next_id(),
            metrics: Arc::new(PipelineMetrics::new(&name)),
            latency: Arc::new(LatencyStats::new(&name)),
            name,
            timeout: None,
            timeout_nanos: 0,
            retry: None,
            breaker: None,
            rate_limiter: None,
            bulkhead: None,
            budget: None,
            hedge: None,
            #[cfg(feature = "chaos")]
            chaos: None,
        }
    }

    /// The dependency's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The per-attempt timeout.
    #[inline]
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The retry configuration.
    #[inline]
    pub fn retry(&self) -> Option<&RetryConfig> {
        self.retry.as_ref()
    }

    /// The circuit breaker.
    pub fn circuit_breaker(&self) -> Option<&CircuitBreaker> {
        self.breaker.as_ref()
    }

    /// The rate limiter.
    pub fn rate_limiter(&self) -> Option<&RateLimiter> {
        self.rate_limiter.as_ref()
    }

    /// The bulkhead.
    pub fn bulkhead(&self) -> Option<&Bulkhead> {
        self.bulkhead.as_ref()
    }

    /// The hedging of the pipeline's idempotent calls.
    pub fn hedge(&self) -> Option<&Hedge> {
        self.hedge.as_ref()
    }

    /// The retry budget shared by the pipeline's calls.
    pub fn retry_budget(&self) -> Option<&RetryBudget> {
        self.budget.as_ref()
    }

    /// Runs `f` like [`call`](Self::call), for a call that is safe to repeat: with a
    /// hedge configured, a slow attempt gets company (see [`crate::hedge`]); each
    /// attempt calls a clone of `f`.
    pub fn call_idempotent<T, E, F, Fut>(&self, f: F) -> Idempotent<'_, E, F, Fut>
    where
        F: FnMut() -> Fut + Clone,
        Fut: Future<Output = Result<T, E>>,
        E: From<ResilienceError>,
    {
        self.call_idempotent_configured(&ErrorPolicy::default(), E::from, f, self.timeout_nanos, self.retry.as_ref())
    }

    /// Like [`call_idempotent`](Self::call_idempotent), with an [`ErrorPolicy`].
    pub fn call_idempotent_with<T, E, F, Fut>(&self, policy: &ErrorPolicy<E>, f: F) -> Idempotent<'_, E, F, Fut>
    where
        F: FnMut() -> Fut + Clone,
        Fut: Future<Output = Result<T, E>>,
        E: From<ResilienceError>,
    {
        self.call_idempotent_configured(policy, E::from, f, self.timeout_nanos, self.retry.as_ref())
    }

    /// Like [`call_idempotent_with`](Self::call_idempotent_with), with each attempt also
    /// limited to `limit`: the shorter of `limit` and the pipeline's own timeout applies
    /// (one timer per attempt, not one per limit). An attempt past it fails with
    /// [`ResilienceError::Timeout`], counted and retried like any timeout.
    pub fn call_idempotent_within<T, E, F, Fut>(
        &self,
        policy: &ErrorPolicy<E>,
        limit: Duration,
        f: F,
    ) -> Idempotent<'_, E, F, Fut>
    where
        F: FnMut() -> Fut + Clone,
        Fut: Future<Output = Result<T, E>>,
        E: From<ResilienceError>,
    {
        self.call_idempotent_configured(policy, E::from, f, self.tighter_timeout(limit), self.retry.as_ref())
    }

    /// Like [`call_with`](Self::call_with), with each attempt also limited to `limit`
    /// (see [`call_idempotent_within`](Self::call_idempotent_within)).
    pub fn call_within<T, E, F, Fut>(
        &self,
        policy: &ErrorPolicy<E>,
        limit: Duration,
        f: F,
    ) -> PipelineCall<'_, E, F, Fut>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<ResilienceError>,
    {
        self.call_configured(policy, E::from, f, self.tighter_timeout(limit), self.retry.as_ref())
    }

    /// The attempt limit (nanoseconds) of the pipeline's timeout and `limit` together.
    fn tighter_timeout(&self, limit: Duration) -> u64 {
        let limit = timeout::limit_nanos(Some(limit));
        match self.timeout_nanos {
            0 => limit,
            own => own.min(limit),
        }
    }

    /// An idempotent call with its own timeout and retries: hedged if the pipeline has a
    /// hedge, else the plain call.
    pub(crate) fn call_idempotent_configured<'a, T, E, F, Fut>(
        &'a self,
        policy: &ErrorPolicy<E>,
        from: fn(ResilienceError) -> E,
        f: F,
        timeout_nanos: u64,
        retry_config: Option<&'a RetryConfig>,
    ) -> Idempotent<'a, E, F, Fut>
    where
        F: MakeAttempt<Fut> + Clone,
        Fut: Future<Output = Result<T, E>>,
    {
        match &self.hedge {
            Some(hedge) => {
                Idempotent::Hedged { call: HedgedCall::new(self, hedge, *policy, from, f, timeout_nanos, retry_config) }
            }
            None => Idempotent::Plain { call: self.call_configured(policy, from, f, timeout_nanos, retry_config) },
        }
    }

    /// A new call begins: it deposits into the retry budget.
    #[inline(always)]
    pub(crate) fn call_begins(&self) {
        if let Some(b) = &self.budget {
            b.deposit();
        }
    }

    /// `timeout` as the attempt's timer takes it (nanoseconds, 0 for none).
    #[inline]
    pub(crate) fn timeout_nanos(&self) -> u64 {
        self.timeout_nanos
    }

    /// The sampled latency of calls through this pipeline.
    pub(crate) fn latency(&self) -> &LatencyStats {
        &self.latency
    }

    /// The adaptive bulkhead, if the bulkhead is one.
    #[inline(always)]
    pub(crate) fn adaptive(&self) -> Option<&AdaptiveBulkhead> {
        self.bulkhead.as_ref().and_then(Bulkhead::adaptive)
    }

    /// Breaker and rate limiter, the checks made before a bulkhead slot is taken.
    #[inline(always)]
    pub(crate) fn admit(&self) -> Result<Option<CallPermit<'_>>, ResilienceError> {
        let permit = match &self.breaker {
            Some(b) => Some(b.try_acquire()?),
            None => None,
        };
        if let Some(limiter) = &self.rate_limiter {
            // A rejection here drops the breaker permit unrecorded: it says nothing
            // about the dependency.
            limiter.check()?;
        }
        Ok(permit)
    }

    fn timeout_error(&self, limit: Duration) -> ResilienceError {
        ResilienceError::timeout(&self.name, limit)
    }

    /// A new attempt's bulkhead slot: `Ok(None)` when there is no bulkhead, `Err(None)`
    /// when the caller must wait for one, `Err(Some(_))` when the call is rejected.
    #[inline(always)]
    pub(crate) fn try_slot(&self) -> Result<Option<Slot<'_>>, Option<ResilienceError>> {
        match &self.bulkhead {
            None => Ok(None),
            Some(b) => match b.try_slot() {
                Some(slot) => Ok(Some(slot)),
                None if !b.waits() => Err(Some(b.full())),
                None => Err(None),
            },
        }
    }

    /// Waits for a bulkhead slot (after [`try_slot`](Self::try_slot) said to); boxed,
    /// since waiting is off the fast path.
    pub(crate) fn wait_slot(&self) -> Option<SlotWait<'_>> {
        self.bulkhead.as_ref().map(|b| -> SlotWait<'_> { Box::pin(b.slot()) })
    }

    /// Records a finished async attempt (time-limiter counters, the breaker) and
    /// classifies it: `Ok` is the call's final result, `Err` an error worth another
    /// attempt if any is left.
    #[inline(always)]
    pub(crate) fn settle_attempt<T, E>(
        &self,
        policy: &ErrorPolicy<E>,
        permit: Option<CallPermit<'_>>,
        outcome: Result<Result<T, E>, Elapsed>,
        timeout_nanos: u64,
        from: fn(ResilienceError) -> E,
    ) -> Result<Result<T, E>, E> {
        if timeout_nanos != 0 {
            match &outcome {
                Ok(Ok(_)) => self.metrics.timed(TimeOutcome::Successful),
                Ok(Err(_)) => self.metrics.timed(TimeOutcome::Failed),
                Err(Elapsed) => self.metrics.timed(TimeOutcome::Timeout),
            }
        }
        match outcome {
            Ok(Ok(value)) => {
                if let Some(p) = permit {
                    p.success();
                }
                Ok(Ok(value))
            }
            Ok(Err(error)) => {
                if let Some(p) = permit {
                    if (policy.record_if)(&error) {
                        p.failure();
                    } else {
                        p.ignore();
                    }
                }
                if (policy.retry_if)(&error) {
                    Err(error)
                } else {
                    Ok(Err(error))
                }
            }
            Err(Elapsed) => {
                if let Some(p) = permit {
                    p.failure();
                }
                Err(from(self.timeout_error(Duration::from_nanos(timeout_nanos))))
            }
        }
    }

    /// After a failed attempt worth retrying: the delay before the next attempt (logged
    /// as a retry event), or `None` when `retry` allows no more.
    ///
    /// A retry the budget refuses (or that a budget inside the failed attempt refused,
    /// on this thread) is not made, and enclosing calls are told not to make it either;
    /// so are they when a budgeted call's attempts run out (its budget saw them).
    pub(crate) fn retry_delay(&self, retry: &mut RetryState<'_>) -> Option<Duration> {
        if refused_inside() {
            return None;
        }
        let Some(delay) = retry.next_delay() else {
            if self.budget.is_some() {
                // The budget saw these attempts: an enclosing call does not start more.
                mark_refused();
            }
            return None;
        };
        if let Some(budget) = &self.budget {
            if !budget.try_withdraw() {
                retry.refused();
                mark_refused();
                return None;
            }
        }
        retry_event(&self.name, retry, delay);
        Some(delay)
    }

    /// A call ended: retry counters and, if it was timed, its latency.
    #[inline]
    pub(crate) fn finished(
        &self,
        config: Option<&RetryConfig>,
        retry: Option<&RetryState<'_>>,
        ok: bool,
        sampled_at: u64,
    ) {
        let attempts = config.map(|_| retry.map_or(1, RetryState::attempt));
        self.metrics.finished(attempts, ok);
        if sampled_at != 0 {
            self.latency.finish(sampled_at);
        }
    }

    /// Runs `f` through every policy; each attempt calls `f` again.
    pub fn call<T, E, F, Fut>(&self, f: F) -> PipelineCall<'_, E, F, Fut>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<ResilienceError>,
    {
        self.call_with(&ErrorPolicy::default(), f)
    }

    /// Like [`call`](Self::call), with `policy` deciding which errors are retried and recorded.
    pub fn call_with<T, E, F, Fut>(&self, policy: &ErrorPolicy<E>, f: F) -> PipelineCall<'_, E, F, Fut>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<ResilienceError>,
    {
        self.call_configured(policy, E::from, f, self.timeout_nanos, self.retry.as_ref())
    }

    /// A call with its own timeout (nanoseconds, 0 for none) and retry configuration
    /// but this pipeline's shared breaker, rate limiter and bulkhead; `from` turns the
    /// policies' errors into the caller's.
    pub(crate) fn call_configured<'a, T, E, F, Fut>(
        &'a self,
        policy: &ErrorPolicy<E>,
        from: fn(ResilienceError) -> E,
        f: F,
        timeout_nanos: u64,
        retry_config: Option<&'a RetryConfig>,
    ) -> PipelineCall<'a, E, F, Fut>
    where
        F: MakeAttempt<Fut>,
        Fut: Future<Output = Result<T, E>>,
    {
        PipelineCall {
            pipeline: self,
            policy: *policy,
            from,
            f,
            timeout_nanos,
            retry_config,
            span: call_span(&self.name, None),
            sampled_at: 0,
            done: false,
            permit: None,
            slot: None,
            body: None,
            wait: None,
            backoff: None,
            retry: None,
            started: None,
            attempt_started: None,
            hedge_attempt: false,
            guard: None,
        }
    }

    /// Runs the blocking `f` on this thread through every policy.
    ///
    /// The body borrows from the caller, so it cannot be abandoned: an attempt that
    /// overruns the timeout is reported as [`ResilienceError::Timeout`] when it returns
    /// (its result discarded). Use [`call_detached`](Self::call_detached) to get the
    /// timeout on time. Needs no tokio runtime.
    pub fn call_blocking<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnMut() -> Result<T, E>,
        E: From<ResilienceError>,
    {
        self.call_blocking_with(&ErrorPolicy::default(), f)
    }

    /// Like [`call_blocking`](Self::call_blocking), with an [`ErrorPolicy`].
    pub fn call_blocking_with<T, E, F>(&self, policy: &ErrorPolicy<E>, f: F) -> Result<T, E>
    where
        F: FnMut() -> Result<T, E>,
        E: From<ResilienceError>,
    {
        let mut f = f;
        self.call_blocking_configured(policy, E::from, |_last| f(), self.timeout, self.retry.as_ref())
    }

    /// A blocking call with its own timeout and retry configuration but this
    /// pipeline's shared breaker, rate limiter and bulkhead; `from` turns the policies'
    /// errors into the caller's, and `f` is told whether its attempt is the last.
    pub(crate) fn call_blocking_configured<T, E, F>(
        &self,
        policy: &ErrorPolicy<E>,
        from: fn(ResilienceError) -> E,
        mut f: F,
        timeout: Option<Duration>,
        retry: Option<&RetryConfig>,
    ) -> Result<T, E>
    where
        F: FnMut(bool) -> Result<T, E>,
    {
        self.blocking_loop(policy, from, retry, |last| {
            let permit = self.admit()?;
            let _slot = self.bulkhead.as_ref().map(Bulkhead::slot_blocking).transpose()?;
            let adaptive = self.adaptive();
            let start = (timeout.is_some() || adaptive.is_some()).then(Instant::now);
            let result = self.blocking_body(from, || f(last));
            let settled = self.settle(policy, permit, timeout, start, Some(result));
            if let (Some(a), Some(start)) = (adaptive, start) {
                a.record(start, !matches!(settled, Attempt::Done(_)));
            }
            Ok(settled)
        })
    }

    /// Runs the blocking, `'static` `f` through every policy, each attempt on a worker
    /// thread (the thread-pool bulkhead's, or a helper thread) so the caller gets
    /// [`ResilienceError::Timeout`] on time. An abandoned attempt keeps its bulkhead slot
    /// until it really finishes, so abandoned work still counts against the limit.
    pub fn call_detached<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: Fn() -> Result<T, E> + Send + Sync + 'static,
        T: Send + 'static,
        E: From<ResilienceError> + Send + 'static,
    {
        self.call_detached_with(&ErrorPolicy::default(), f)
    }

    /// Like [`call_detached`](Self::call_detached), with an [`ErrorPolicy`].
    pub fn call_detached_with<T, E, F>(&self, policy: &ErrorPolicy<E>, f: F) -> Result<T, E>
    where
        F: Fn() -> Result<T, E> + Send + Sync + 'static,
        T: Send + 'static,
        E: From<ResilienceError> + Send + 'static,
    {
        let f = Arc::new(f);
        let attempts = |_last: bool| {
            let job = Arc::clone(&f);
            move || job()
        };
        self.call_detached_configured(policy, E::from, attempts, self.timeout, self.retry.as_ref())
    }

    /// A blocking call whose attempts run where they can be abandoned (see
    /// [`call_detached`](Self::call_detached)), with its own timeout and retries;
    /// `attempts` makes each attempt's job, told whether it is the last.
    pub(crate) fn call_detached_configured<T, E, F, J>(
        &self,
        policy: &ErrorPolicy<E>,
        from: fn(ResilienceError) -> E,
        mut attempts: F,
        timeout: Option<Duration>,
        retry: Option<&RetryConfig>,
    ) -> Result<T, E>
    where
        F: FnMut(bool) -> J,
        J: FnOnce() -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        self.blocking_loop(policy, from, retry, |last| {
            let permit = self.admit()?;
            let job = attempts(last);
            #[cfg(feature = "chaos")]
            let job = {
                let chosen = self.chaos.as_ref().and_then(crate::chaos::Chaos::choose_blocking);
                move || crate::chaos::run_blocking(chosen, from, job)
            };
            let start = self.adaptive().map(|_| Instant::now());
            let result = match &self.bulkhead {
                Some(Bulkhead::ThreadPool(pool)) => match pool.execute_blocking(job, timeout) {
                    Ok(result) => Some(result),
                    Err(ResilienceError::Timeout { .. }) => None,
                    Err(rejected) => return Err(rejected),
                },
                Some(Bulkhead::Semaphore(b)) => {
                    let slot = b.acquire_owned_blocking()?;
                    run_detached(
                        move || {
                            let _slot = slot;
                            job()
                        },
                        timeout,
                    )
                }
                Some(Bulkhead::Adaptive(a)) => {
                    let slot = a.semaphore().acquire_owned_blocking()?;
                    run_detached(
                        move || {
                            let _slot = slot;
                            job()
                        },
                        timeout,
                    )
                }
                None => run_detached(job, timeout),
            };
            if let (Some(a), Some(start)) = (self.adaptive(), start) {
                a.record(start, result.is_none());
            }
            Ok(self.settle(policy, permit, timeout, None, result))
        })
    }

    /// Runs a blocking attempt in place, under the dependency's fault injection (with
    /// the `chaos` feature): the delay on this thread, then the injected error or `f`.
    #[inline(always)]
    fn blocking_body<T, E>(&self, from: fn(ResilienceError) -> E, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        #[cfg(feature = "chaos")]
        {
            crate::chaos::run_blocking(self.chaos.as_ref().and_then(crate::chaos::Chaos::choose_blocking), from, f)
        }
        #[cfg(not(feature = "chaos"))]
        {
            let _ = from;
            f()
        }
    }

    /// Records a finished blocking attempt. `result` is `None` when the attempt was
    /// abandoned at its timeout; `start` is set when an in-place overrun must be checked.
    pub(crate) fn settle<T, E>(
        &self,
        policy: &ErrorPolicy<E>,
        permit: Option<CallPermit<'_>>,
        timeout: Option<Duration>,
        start: Option<Instant>,
        result: Option<Result<T, E>>,
    ) -> Attempt<T, E> {
        let overran = match (timeout, start) {
            (Some(limit), Some(start)) => start.elapsed() > limit,
            _ => false,
        };
        match result {
            Some(result) if !overran => {
                if let Some(p) = permit {
                    p.record_result(&result, policy.record_if);
                }
                Attempt::Done(result)
            }
            late => {
                if let Some(p) = permit {
                    p.failure();
                }
                let limit = timeout.unwrap_or_default();
                if late.is_some() {
                    Attempt::Overran(limit)
                } else {
                    Attempt::TimedOut(limit)
                }
            }
        }
    }

    fn blocking_loop<T, E>(
        &self,
        policy: &ErrorPolicy<E>,
        from: fn(ResilienceError) -> E,
        retry: Option<&RetryConfig>,
        mut attempt: impl FnMut(bool) -> Result<Attempt<T, E>, ResilienceError>,
    ) -> Result<T, E> {
        let mut retry = retry.map(RetryState::new);
        self.call_begins();
        loop {
            let last = retry.as_ref().is_none_or(|r| !r.attempts_left());
            if retry.is_some() {
                attempt_starts();
            }
            let error = match self.classify(policy, attempt(last).unwrap_or_else(Attempt::Rejected), from) {
                Ok(result) => {
                    self.finished(retry.as_ref().map(|r| r.config()), retry.as_ref(), result.is_ok(), 0);
                    return result;
                }
                Err(error) => error,
            };
            match retry.as_mut().and_then(|r| self.retry_delay(r)) {
                Some(delay) => std::thread::sleep(delay),
                None => {
                    self.finished(retry.as_ref().map(|r| r.config()), retry.as_ref(), false, 0);
                    return Err(error);
                }
            }
        }
    }

    /// Classifies a finished blocking attempt: `Ok` is the call's final result, `Err` an
    /// error worth another attempt if any is left.
    pub(crate) fn classify<T, E>(
        &self,
        policy: &ErrorPolicy<E>,
        attempt: Attempt<T, E>,
        from: fn(ResilienceError) -> E,
    ) -> Result<Result<T, E>, E> {
        match attempt {
            Attempt::Done(Ok(v)) => Ok(Ok(v)),
            Attempt::Rejected(e) => Ok(Err(from(e))),
            Attempt::Done(Err(e)) if !(policy.retry_if)(&e) => Ok(Err(e)),
            Attempt::Done(Err(e)) => Err(e),
            Attempt::TimedOut(limit) => Err(from(self.timeout_error(limit))),
            Attempt::Overran(limit) => Ok(Err(from(self.timeout_error(limit)))),
        }
    }
}

/// The span of one protected call: the dependency and a correlation id unique in the
/// process, which every event inside the call (retries, transitions) carries.
#[inline]
pub(crate) fn call_span(name: &str, operation: Option<&str>) -> Option<Box<tracing::Span>> {
    if tracing::enabled!(target: "resilience::call", tracing::Level::DEBUG) {
        new_call_span(name, operation)
    } else {
        None
    }
}

#[cold]
fn new_call_span(name: &str, operation: Option<&str>) -> Option<Box<tracing::Span>> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let span = tracing::debug_span!(
        target: "resilience::call",
        "resilient_call",
        dependency = name,
        operation,
        correlation_id = id
    );
    (!span.is_disabled()).then(|| Box::new(span))
}

#[cold]
fn retry_event(name: &str, retry: &RetryState<'_>, delay: Duration) {
    let attempt = retry.attempt();
    tracing::debug!(target: "resilience::retry", name, attempt, delay_ms = delay.as_millis() as u64, "retrying");
}

/// What starts one attempt of a call: any `FnMut() -> Fut`, or a type of an integration
/// (such as a tower service and its request) that cannot be written as a closure.
pub trait MakeAttempt<Fut> {
    /// Starts an attempt. `last` says that no attempt can follow this one, so it may
    /// give the attempt what it would otherwise have to copy for the next.
    fn make_attempt(&mut self, last: bool) -> Fut;
}

impl<F: FnMut() -> Fut, Fut> MakeAttempt<Fut> for F {
    #[inline]
    fn make_attempt(&mut self, _last: bool) -> Fut {
        self()
    }
}

/// Runs `attempts` through every policy of `pipeline`, with the pipeline's own timeout
/// and retries: the form of [`Pipeline::call_with`] for attempt makers that are not
/// closures.
pub fn call_attempts<'a, T, E, F, Fut>(
    pipeline: &'a Pipeline,
    policy: &ErrorPolicy<E>,
    attempts: F,
) -> PipelineCall<'a, E, F, Fut>
where
    F: MakeAttempt<Fut>,
    Fut: Future<Output = Result<T, E>>,
    E: From<ResilienceError>,
{
    pipeline.call_configured(policy, E::from, attempts, pipeline.timeout_nanos, pipeline.retry.as_ref())
}

pub(crate) type SlotWait<'a> = Pin<Box<dyn Future<Output = Result<Slot<'a>, ResilienceError>> + Send + 'a>>;

pin_project! {
    /// The future of [`Pipeline::call`] and [`Pipeline::call_with`].
    ///
    /// A state machine written by hand rather than an `async fn`, with one optional
    /// field per phase instead of an enum of states, so that a call that succeeds at
    /// once is one short poll with no state moved around. Waiting for a bulkhead slot and
    /// sleeping between retries are boxed: they are off that path and the only parts
    /// that allocate. Dropping it at any point releases every permit it holds. It is
    /// `Send` whenever the body's future and `F` are.
    #[must_use = "futures do nothing unless polled"]
    pub struct PipelineCall<'a, E, F, Fut> {
        pipeline: &'a Pipeline,
        policy: ErrorPolicy<E>,
        from: fn(ResilienceError) -> E,
        f: F,
        // Per call, so that call-site keys can differ from the shared pipeline's.
        timeout_nanos: u64,
        retry_config: Option<&'a RetryConfig>,
        // Entered on every poll. `None` unless a subscriber wants `resilience::call`
        // spans at debug level; boxed so that a call without one carries one word.
        span: Option<Box<tracing::Span>>,
        // See `observe::latency`: nonzero for the calls that are timed, a sample of
        // the calls whose body did not finish on its first poll.
        sampled_at: u64,
        done: bool,
        // Fields drop in this order: the body (and whatever it holds) goes before the
        // slot and permit it ran under, so a cancelled call never lets the next one in
        // while its body still exists.
        #[pin]
        body: Option<Limited<Body<Fut, E>>>,
        wait: Option<SlotWait<'a>>,
        permit: Option<CallPermit<'a>>,
        slot: Option<Slot<'a>>,
        backoff: Option<Pin<Box<Sleep>>>,
        retry: Option<Box<RetryState<'a>>>,
        // When the first attempt started, for `max_elapsed` (read only when it is set).
        started: Option<Instant>,
        // When the running attempt first waited, for an adaptive bulkhead's sample.
        attempt_started: Option<Instant>,
        // A hedge of a hedged call: not an original call, so it deposits nothing.
        hedge_attempt: bool,
        // Last, so it drops after everything above that borrows the pipeline: for a
        // dependency's pipeline, what keeps it from being freed while the call runs.
        guard: Option<Guard>,
    }
}

impl<'a, E, F, Fut> PipelineCall<'a, E, F, Fut> {
    /// Marks this call as a hedge of a hedged call (it deposits nothing in the budget).
    pub(crate) fn hedge_attempt(mut self, hedge: bool) -> Self {
        self.hedge_attempt = hedge;
        self
    }

    /// This call, holding `guard` (under which its pipeline was loaded) until it is dropped.
    #[inline(always)]
    pub(crate) fn guarded(mut self, guard: Guard) -> Self {
        self.guard = Some(guard);
        self
    }
}

/// A named dependency's pipeline, kept alive while this is held (see
/// [`Dependency::pipeline`](crate::Dependency::pipeline)).
///
/// A reconfiguration publishes a new pipeline and frees the replaced one once no call
/// or `PipelineRef` that may use it is left. Holding a `PipelineRef` for long delays
/// that, for every pipeline replaced while it is held (and those replaced just before it
/// was taken, whose grace period it may fall into), so take one per call or per look.
/// Calls made with its `call…` methods hold it for as long as they run.
pub struct PipelineRef {
    // Valid while `guard` is held: `'static` is this module's promise, never handed out.
    pipeline: &'static Pipeline,
    guard: Guard,
}

impl fmt::Debug for PipelineRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.pipeline, f)
    }
}

impl std::ops::Deref for PipelineRef {
    type Target = Pipeline;

    #[inline]
    fn deref(&self) -> &Pipeline {
        self.pipeline
    }
}

impl PipelineRef {
    /// The pipeline in `cell` now.
    #[inline]
    pub(crate) fn load(cell: &RcuCell<Pipeline>) -> Self {
        let guard = reclaim::enter();
        let pipeline = cell.get(&guard);
        // SAFETY: the reference lives in `self` next to the guard it was loaded under,
        // is only lent out for borrows of `self`, and calls that take it take the guard.
        #[allow(unsafe_code)]
        let pipeline = unsafe { reclaim::extend(pipeline) };
        Self { pipeline, guard }
    }

    /// Runs `f` through every policy (see [`Pipeline::call`]), keeping the pipeline
    /// for as long as the call runs.
    #[inline]
    pub fn call<T, E, F, Fut>(self, f: F) -> PipelineCall<'static, E, F, Fut>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<ResilienceError>,
    {
        self.call_with(&ErrorPolicy::default(), f)
    }

    /// Like [`call`](Self::call), with `policy` deciding which errors are retried and recorded.
    #[inline]
    pub fn call_with<T, E, F, Fut>(self, policy: &ErrorPolicy<E>, f: F) -> PipelineCall<'static, E, F, Fut>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<ResilienceError>,
    {
        self.call_attempts(policy, f)
    }

    /// Like [`call_with`](Self::call_with), for attempt makers that are not closures
    /// (see [`call_attempts`]).
    #[inline]
    pub fn call_attempts<T, E, F, Fut>(self, policy: &ErrorPolicy<E>, attempts: F) -> PipelineCall<'static, E, F, Fut>
    where
        F: MakeAttempt<Fut>,
        Fut: Future<Output = Result<T, E>>,
        E: From<ResilienceError>,
    {
        let Self { pipeline, guard } = self;
        call_attempts(pipeline, policy, attempts).guarded(guard)
    }
}

pin_project! {
    /// The future of [`Pipeline::call_idempotent`]: hedged when the pipeline has a hedge.
    #[must_use = "futures do nothing unless polled"]
    #[project = IdempotentProj]
    #[allow(missing_docs)] // each variant's one field is the call it names
    pub enum Idempotent<'a, E, F, Fut> {
        /// No hedge: the plain call.
        Plain {
            #[pin]
            call: PipelineCall<'a, E, F, Fut>,
        },
        /// A hedged call.
        Hedged {
            #[pin]
            call: HedgedCall<'a, E, F, Fut>,
        },
    }
}

impl<'a, E, F, Fut> Idempotent<'a, E, F, Fut> {
    /// This call, holding `guard` until it is dropped.
    pub(crate) fn guarded(self, guard: Guard) -> Self {
        match self {
            Self::Plain { call } => Self::Plain { call: call.guarded(guard) },
            Self::Hedged { call } => Self::Hedged { call: call.guarded(guard) },
        }
    }
}

impl<E, F, Fut> fmt::Debug for Idempotent<'_, E, F, Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plain { call } => fmt::Debug::fmt(call, f),
            Self::Hedged { call } => fmt::Debug::fmt(call, f),
        }
    }
}

impl<T, E, F, Fut> Future for Idempotent<'_, E, F, Fut>
where
    F: MakeAttempt<Fut> + Clone,
    Fut: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            IdempotentProj::Plain { call } => call.poll(cx),
            IdempotentProj::Hedged { call } => call.poll(cx),
        }
    }
}

impl<E, F, Fut> fmt::Debug for PipelineCall<'_, E, F, Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineCall").field("pipeline", &self.pipeline.name).finish_non_exhaustive()
    }
}

impl<T, E, F, Fut> Future for PipelineCall<'_, E, F, Fut>
where
    F: MakeAttempt<Fut>,
    Fut: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let pipeline: &Pipeline = this.pipeline;
        if *this.done {
            panic!("`PipelineCall` polled after it completed");
        }
        let _entered = this.span.as_deref().map(tracing::Span::enter);
        macro_rules! finish {
            ($result:expr, $ok:expr) => {{
                pipeline.finished(*this.retry_config, this.retry.as_deref(), $ok, *this.sampled_at);
                *this.done = true;
                return Poll::Ready($result);
            }};
        }
        loop {
            let (outcome, permit) = if let Some(body) = this.body.as_mut().as_pin_mut() {
                // A body that was pending before.
                if this.retry_config.is_some() {
                    attempt_starts();
                }
                let outcome = ready!(body.poll(cx));
                this.body.set(None);
                if let Some(started) = this.attempt_started.take() {
                    if let Some(adaptive) = pipeline.adaptive() {
                        adaptive.record(started, outcome.is_err());
                    }
                }
                *this.slot = None;
                (outcome, this.permit.take())
            } else {
                if let Some(sleep) = this.backoff.as_mut() {
                    ready!(sleep.as_mut().poll(cx));
                    *this.backoff = None;
                }
                let (permit, slot) = if let Some(wait) = this.wait.as_mut() {
                    let waited = ready!(wait.as_mut().poll(cx));
                    *this.wait = None;
                    match waited {
                        Ok(slot) => (this.permit.take(), Some(slot)),
                        Err(rejected) => {
                            *this.permit = None;
                            finish!(Err((this.from)(rejected)), false)
                        }
                    }
                } else {
                    // A new attempt: breaker and rate limiter, then a bulkhead slot.
                    let permit = match pipeline.admit() {
                        Ok(permit) => permit,
                        Err(rejected) => finish!(Err((this.from)(rejected)), false),
                    };
                    let slot = match pipeline.try_slot() {
                        Ok(slot) => slot,
                        Err(Some(rejected)) => finish!(Err((this.from)(rejected)), false),
                        Err(None) => {
                            *this.permit = permit;
                            *this.wait = pipeline.wait_slot();
                            continue;
                        }
                    };
                    (permit, slot)
                };
                if this.retry.is_none() && !*this.hedge_attempt {
                    // The first attempt (a later one has retry bookkeeping).
                    pipeline.call_begins();
                }
                let last = match *this.retry_config {
                    None => true,
                    Some(config) => match this.retry.as_deref() {
                        Some(r) => !r.attempts_left(),
                        None => {
                            *this.started = call_start(config);
                            config.attempts() <= 1
                        }
                    },
                };
                this.body.set(Some(Limited::new(
                    body(pipeline, this.f.make_attempt(last), *this.from),
                    *this.timeout_nanos,
                )));
                // Poll the new body at once, keeping permit and slot in locals: a body
                // that is ready never stores them in the future (and a panic in it still
                // drops them, which records the failure and frees the slot).
                if this.retry_config.is_some() {
                    attempt_starts();
                }
                let polled = match this.body.as_mut().as_pin_mut() {
                    Some(body) => body.poll(cx),
                    None => Poll::Pending,
                };
                match polled {
                    Poll::Ready(outcome) => {
                        this.body.set(None);
                        drop(slot);
                        (outcome, permit)
                    }
                    Poll::Pending => {
                        *this.permit = permit;
                        *this.slot = slot;
                        if *this.sampled_at == 0 || pipeline.adaptive().is_some() {
                            // Only calls that wait are timed (see `observe::latency`); the
                            // timer just read the clock, so that reading is the start.
                            let started = this.body.as_ref().as_pin_ref().and_then(|b| b.get_ref().started());
                            if *this.sampled_at == 0 {
                                *this.sampled_at = latency::start_stamp(started);
                            }
                            if pipeline.adaptive().is_some_and(AdaptiveBulkhead::sampled) {
                                *this.attempt_started = Some(started.unwrap_or_else(Instant::now));
                            }
                        }
                        return Poll::Pending;
                    }
                }
            };
            let error = match pipeline.settle_attempt(this.policy, permit, outcome, *this.timeout_nanos, *this.from) {
                Ok(Ok(value)) => finish!(Ok(value), true),
                Ok(Err(error)) => finish!(Err(error), false),
                Err(error) => error,
            };
            let delay = match *this.retry_config {
                Some(config) => {
                    let started = *this.started;
                    pipeline
                        .retry_delay(this.retry.get_or_insert_with(|| Box::new(RetryState::started(config, started))))
                }
                None => None,
            };
            match delay {
                Some(delay) => *this.backoff = Some(Box::pin(tokio::time::sleep(delay))),
                None => finish!(Err(error), false),
            }
        }
    }
}
