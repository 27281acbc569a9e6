//! What the attribute macros expand to. Not a public API: expansions reach it through
//! `::resilience::__private`, and it may change with any release.
//!
//! An expansion is a `static CallSite` (the name, the preset and the call-site keys, all
//! checked at compile time) and one of two ways to run the body:
//!
//! - an `async fn` that borrows nothing mutably passes a closure making each attempt to
//!   [`execute`], which returns the pipeline's own hand-written future (the fast path);
//! - a plain `fn` passes such a closure to [`execute_blocking`], the pipeline's blocking
//!   loop (a closure that returns the result can borrow `&mut self` for each attempt);
//! - an `async fn` taking `&mut self` or a `&mut` argument cannot (a closure cannot lend
//!   out its captured `&mut` to the future it returns); it gets a loop of attempts
//!   written into the function, driven by a [`Call`]: admit (breaker, rate limiter,
//!   bulkhead), run the body (its own block, so it borrows afresh for each attempt),
//!   settle (record, decide on a retry).
//! The call site resolves its
//! dependency through the registry's per-thread cache, and caches the per-call settings
//! derived from its keys for the dependency's current pipeline, so a call takes no lock
//! and allocates nothing; a reconfiguration publishes a new pipeline, which the call site
//! notices by the pipeline's id and re-derives once. Each call holds a read section of
//! `reclaim` for as long as it runs, so that neither is freed under it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;

use crate::bulkhead::Slot;
use crate::circuit_breaker::CallPermit;
use crate::config::ConfigOverrides;
use crate::error::ResilienceError;
use crate::observe::latency;
use crate::pipeline::{call_span, ErrorPolicy, MakeAttempt, Pipeline, PipelineCall};
use crate::reclaim::{self, Guard, RcuCell};
use crate::registry::{current_registry_id, registry, Dependency, DependencyKind};
use crate::retry::{RetryConfig, RetryState};
use crate::timeout::{limit_nanos, Limited};

pub use crate::hedge::HedgeDelay;
pub use crate::preset::{DependencyType, ResilienceStrategy};

use std::hash::{BuildHasher, Hash, RandomState};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::OnceLock;

use crate::rate_limit::{KeyedRateLimiter, RateLimiterConfig};

/// What `rate_limit(key = …)` can name: an argument of a type that can be hashed.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a rate-limit key",
    label = "`rate_limit(key = …)` needs an argument whose type implements `Hash`",
    note = "one limit is kept per value of the argument, told apart by their hashes"
)]
pub trait RateKey: Hash {}

impl<T: Hash + ?Sized> RateKey for T {}

/// One annotated function.
#[derive(Debug)]
pub struct CallSite {
    name: &'static str,
    /// `operation = "…"` of `#[database_call]` and its siblings, for the call's span.
    operation: Option<&'static str>,
    kind: DependencyKind,
    keys: ConfigOverrides,
    /// `keys` without timeout and retry: what shapes the shared instances if this call
    /// site is the first to use the dependency.
    shared: ConfigOverrides,
    /// Whether `keys` change the timeout or retries of each call.
    per_call: bool,
    view: RcuCell<View>,
    /// `rate_limit(key = …)`: one limit per value of an argument.
    key_limit: Option<KeyLimit>,
    keyed: OnceLock<Option<(RandomState, KeyedRateLimiter<u64>)>>,
}

/// The limit of each key of a call site's `rate_limit(key = …)`.
#[derive(Debug, Clone, Copy)]
struct KeyLimit {
    rate: f64,
    burst: NonZeroU32,
    max_keys: NonZeroUsize,
}

/// The per-call settings of a call site for one pipeline of its dependency.
#[derive(Debug)]
struct View {
    /// The registry it was resolved in (the global one can be swapped in tests).
    registry: u64,
    dependency: &'static Dependency,
    /// The id of the pipeline the settings were derived for.
    pipeline: u64,
    timeout_nanos: u64,
    timeout: Option<Duration>,
    retry: Option<RetryConfig>,
}

/// What one call through a call site uses, valid while the guard it was read under is held.
pub(crate) struct Settings<'g> {
    pub(crate) pipeline: &'g Pipeline,
    pub(crate) timeout_nanos: u64,
    pub(crate) timeout: Option<Duration>,
    pub(crate) retry: Option<&'g RetryConfig>,
}

impl CallSite {
    /// A call site of dependency `name` with preset `kind` and call-site `keys`.
    pub const fn new(name: &'static str, kind: DependencyKind, keys: ConfigOverrides) -> Self {
        Self {
            name,
            operation: None,
            kind,
            keys,
            shared: keys.shared_keys(),
            per_call: keys.sets_per_call_keys(),
            view: RcuCell::empty(),
            key_limit: None,
            keyed: OnceLock::new(),
        }
    }

    /// This call site, with one rate limit per value of the argument its expansion
    /// passes to [`check_key`](Self::check_key): `rate` calls per second, bursts of
    /// `burst`, at most `max_keys` values tracked (see [`KeyedRateLimiter`]).
    pub const fn with_key_limit(mut self, rate: f64, burst: NonZeroU32, max_keys: NonZeroUsize) -> Self {
        self.key_limit = Some(KeyLimit { rate, burst, max_keys });
        self
    }

    /// Admits one call under the value `key` of the call site's key argument, or
    /// rejects it with `RateLimited`. Checked once per call, before its first attempt.
    /// Values are told apart by a 64-bit keyed hash (random per process).
    #[inline]
    pub fn check_key<K: RateKey + ?Sized>(&self, key: &K) -> Result<(), ResilienceError> {
        let keyed = self.keyed.get_or_init(|| {
            let limit = self.key_limit?;
            let config =
                RateLimiterConfig { rate: limit.rate, burst: limit.burst, max_keys: limit.max_keys, shared: false };
            match KeyedRateLimiter::new(self.name, config) {
                Ok(limiter) => Some((RandomState::new(), limiter)),
                Err(error) => {
                    // The macro checked these values with the runtime's own rules.
                    tracing::error!(target: "resilience::rate_limit", name = self.name, %error, "per-key limit refused");
                    None
                }
            }
        });
        match keyed {
            Some((hasher, limiter)) => limiter.check_key(&hasher.hash_one(key)),
            None => Ok(()),
        }
    }

    /// This call site, naming its operation in each call's span.
    pub const fn with_operation(mut self, operation: &'static str) -> Self {
        self.operation = Some(operation);
        self
    }

    /// The dependency's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The pipeline, timeout (as nanoseconds and as a duration) and retries of a call.
    ///
    /// The call site keeps its dependency (as `tracing` call sites keep their interest):
    /// a call reads one pointer, checks the registry it came from, and reads the
    /// dependency's current pipeline; no name is hashed or compared.
    #[inline(always)]
    pub(crate) fn settings<'g>(&self, guard: &'g Guard) -> Settings<'g> {
        let view = match self.view.load(guard) {
            Some(view) if view.registry == current_registry_id() => view,
            _ => {
                let registry = registry();
                self.derive(registry.resolve_as(self.name, self.kind, &self.shared), registry.id(), guard)
            }
        };
        let pipeline = view.dependency.pipeline_in(guard);
        if !self.per_call {
            return Settings {
                pipeline,
                timeout_nanos: pipeline.timeout_nanos(),
                timeout: pipeline.timeout(),
                retry: pipeline.retry(),
            };
        }
        // A view derived just now may be for an even newer pipeline (a reconfiguration
        // in between): this call then runs with the newer keys, the next one re-derives.
        let view =
            if view.pipeline == pipeline.id() { view } else { self.derive(view.dependency, view.registry, guard) };
        Settings { pipeline, timeout_nanos: view.timeout_nanos, timeout: view.timeout, retry: view.retry.as_ref() }
    }

    /// Resolves (again) after the registry was swapped or the dependency reconfigured;
    /// the view it replaces is freed once no call uses it.
    #[cold]
    fn derive<'g>(&self, dependency: &'static Dependency, registry: u64, guard: &'g Guard) -> &'g View {
        // The configuration is read under the dependency's lock, after the pipeline: a
        // reconfiguration in between publishes a newer pipeline, which the next call sees.
        let pipeline = dependency.pipeline_in(guard).id();
        let config = dependency.config().with(&self.keys);
        let retry = config.call_retry();
        self.view.replace(View {
            registry,
            dependency,
            pipeline,
            timeout_nanos: limit_nanos(config.timeout),
            timeout: config.timeout,
            retry,
        });
        match self.view.load(guard) {
            Some(view) => view,
            None => unreachable!("a view was just stored"),
        }
    }
}

/// A `NonZeroU32` from a literal the macro checked to be positive.
pub const fn nz32(n: u32) -> std::num::NonZeroU32 {
    match std::num::NonZeroU32::new(n) {
        Some(v) => v,
        None => std::num::NonZeroU32::MIN,
    }
}

/// A `NonZeroUsize` from a literal the macro checked to be positive.
pub const fn nzusize(n: usize) -> std::num::NonZeroUsize {
    match std::num::NonZeroUsize::new(n) {
        Some(v) => v,
        None => std::num::NonZeroUsize::MIN,
    }
}

/// What a registration macro does: registers `name` in the global registry. The keys
/// were checked when the macro expanded; a registration the registry still refuses (its
/// defaults from a settings file make the result invalid) is logged as an error and the
/// dependency keeps its configuration (or gets its type's defaults if it is new).
pub fn register(name: &'static str, dependency_type: DependencyType, keys: ConfigOverrides) -> &'static Dependency {
    match registry().register(name, dependency_type, keys) {
        Ok(dependency) => dependency,
        Err(error) => {
            tracing::error!(target: "resilience::registry", name, %error, "registration refused");
            registry().resolve_as(name, DependencyKind::Type(dependency_type), &ConfigOverrides::EMPTY)
        }
    }
}

/// Runs an `async fn`'s body through its call site's pipeline: `attempts` makes each
/// attempt (told whether it is the last), `from` turns the policies' errors into the
/// function's.
#[inline]
pub fn execute<T, E, F, Fut>(
    site: &'static CallSite,
    policy: ErrorPolicy<E>,
    from: fn(ResilienceError) -> E,
    attempts: Attempts<F>,
) -> PipelineCall<'static, E, Attempts<F>, Fut>
where
    F: FnMut(bool) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let (guard, pipeline, retry, timeout_nanos) = site_call(site);
    pipeline.call_configured(&policy, from, attempts, timeout_nanos, retry).guarded(guard)
}

/// What a call through `site` runs under: the read section it must hold (moved into the
/// call, which drops every borrow of the pipeline and of the retry configuration, the
/// call site's view, before it), the pipeline, the retries and the timeout.
#[inline(always)]
fn site_call(site: &'static CallSite) -> (Guard, &'static Pipeline, Option<&'static RetryConfig>, u64) {
    let guard = reclaim::enter();
    let settings = site.settings(&guard);
    // SAFETY: see above: every caller moves the guard into the call that borrows these.
    #[allow(unsafe_code)]
    let (pipeline, retry) = unsafe { (reclaim::extend(settings.pipeline), settings.retry.map(|r| reclaim::extend(r))) };
    let timeout_nanos = settings.timeout_nanos;
    (guard, pipeline, retry, timeout_nanos)
}

/// Like [`execute`], for a call marked `idempotent = true`: hedged when its dependency
/// has a hedge (each attempt calls a clone of the closure).
pub fn execute_idempotent<T, E, F, Fut>(
    site: &'static CallSite,
    policy: ErrorPolicy<E>,
    from: fn(ResilienceError) -> E,
    attempts: Attempts<F>,
) -> crate::pipeline::Idempotent<'static, E, Attempts<F>, Fut>
where
    F: FnMut(bool) -> Fut + Clone,
    Fut: Future<Output = Result<T, E>>,
{
    let (guard, pipeline, retry, timeout_nanos) = site_call(site);
    pipeline.call_idempotent_configured(&policy, from, attempts, timeout_nanos, retry).guarded(guard)
}

/// The closure of an expansion that makes each attempt, given whether it is the last.
#[derive(Debug, Clone)]
pub struct Attempts<F>(pub F);

impl<F: FnMut(bool) -> Fut, Fut> MakeAttempt<Fut> for Attempts<F> {
    #[inline]
    fn make_attempt(&mut self, last: bool) -> Fut {
        (self.0)(last)
    }
}

/// Runs a plain `fn`'s body through its call site's pipeline on this thread (see
/// [`Pipeline::call_blocking`]): `attempt` runs one attempt, told whether it is the last.
#[inline]
pub fn execute_blocking<T, E, F>(
    site: &'static CallSite,
    policy: ErrorPolicy<E>,
    from: fn(ResilienceError) -> E,
    attempt: F,
) -> Result<T, E>
where
    F: FnMut(bool) -> Result<T, E>,
{
    let guard = reclaim::enter();
    let settings = site.settings(&guard);
    settings.pipeline.call_blocking_configured(&policy, from, attempt, settings.timeout, settings.retry)
}

/// The attempts of a plain `fn` whose arguments are all taken by value: each call of
/// the closure (told whether the attempt is the last) gives that attempt's job.
#[derive(Debug)]
pub struct Detach<F>(pub F);

/// Which way the attempts of a plain `fn` can run, from the types in its signature
/// (`A`: its arguments as a tuple, `R`: its return type): the expansion asks
/// `(&Probe::<A, R>::NEW).detach_kind()`, which method resolution answers with
/// [`DetachedTag`] when both are `Send + 'static` ([`DetachedAttempts`]: the attempts
/// may run on the dependency's thread pool) and [`InPlaceTag`] otherwise
/// ([`InPlaceAttempts`]). Decided on the signature's types because a closure's
/// captures are not known yet when methods are resolved.
pub struct Probe<A, R>(std::marker::PhantomData<fn() -> (A, R)>);

impl<A, R> Probe<A, R> {
    /// The probe.
    pub const NEW: Self = Self(std::marker::PhantomData);
}

impl<A, R> fmt::Debug for Probe<A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Probe")
    }
}

/// The attempts can run on a worker thread.
#[derive(Debug, Clone, Copy)]
pub struct DetachedTag;

/// The attempts run on the caller's thread.
#[derive(Debug, Clone, Copy)]
pub struct InPlaceTag;

/// Chosen by method resolution when the job can be sent to a worker (the bounds hold).
pub trait DetachedAttempts {
    /// See [`Detach`].
    fn detach_kind(&self) -> DetachedTag {
        DetachedTag
    }
}

impl<A: Send + 'static, R: Send + 'static> DetachedAttempts for Probe<A, R> {}

/// The fallback of [`DetachedAttempts`], one autoref further away.
pub trait InPlaceAttempts {
    /// See [`Detach`].
    fn detach_kind(&self) -> InPlaceTag {
        InPlaceTag
    }
}

impl<A, R> InPlaceAttempts for &Probe<A, R> {}

impl DetachedTag {
    /// Runs the call: each attempt on the dependency's thread-pool bulkhead if it has one
    /// (the caller gets `Timeout` on time, the abandoned attempt keeps its worker until it
    /// ends), else in place.
    #[inline]
    pub fn run<T, E, F, J>(
        self,
        site: &'static CallSite,
        policy: ErrorPolicy<E>,
        from: fn(ResilienceError) -> E,
        attempts: Detach<F>,
    ) -> Result<T, E>
    where
        F: FnMut(bool) -> J,
        J: FnOnce() -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let guard = reclaim::enter();
        let settings = site.settings(&guard);
        match settings.pipeline.bulkhead() {
            Some(crate::Bulkhead::ThreadPool(_)) => {
                settings.pipeline.call_detached_configured(&policy, from, attempts.0, settings.timeout, settings.retry)
            }
            _ => InPlaceTag.run(site, policy, from, attempts),
        }
    }
}

impl InPlaceTag {
    /// Runs the call with every attempt in place (see [`execute_blocking`]).
    #[inline]
    pub fn run<T, E, F, J>(
        self,
        site: &'static CallSite,
        policy: ErrorPolicy<E>,
        from: fn(ResilienceError) -> E,
        attempts: Detach<F>,
    ) -> Result<T, E>
    where
        F: FnMut(bool) -> J,
        J: FnOnce() -> Result<T, E>,
    {
        let mut make = attempts.0;
        execute_blocking(site, policy, from, |last| make(last)())
    }
}

/// Admission to one attempt: the breaker's permit and the bulkhead slot, held until the
/// attempt is settled (the slot until its body is dropped).
pub struct Admission {
    permit: Option<CallPermit<'static>>,
    slot: Option<Slot<'static>>,
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission").field("permit", &self.permit.is_some()).field("slot", &self.slot.is_some()).finish()
    }
}

/// One call of an annotated `async fn` that takes `&mut self` or a `&mut` argument: what
/// the loop of attempts in its expansion needs between attempts (the other async fns go
/// through [`execute`], plain fns through [`execute_blocking`]).
pub struct Call<E> {
    pipeline: &'static Pipeline,
    from: fn(ResilienceError) -> E,
    policy: ErrorPolicy<E>,
    timeout_nanos: u64,
    retry_config: Option<&'static RetryConfig>,
    retry: Option<RetryState<'static>>,
    /// The delay the next admission waits out.
    backoff: Option<Duration>,
    span: Option<Box<tracing::Span>>,
    // See `observe::latency`: nonzero when this call is timed.
    sampled_at: u64,
    /// When the first attempt started, for `max_elapsed` (read only when it is set).
    started: Option<tokio::time::Instant>,
    // Last: keeps the pipeline and the call site's view alive while the call runs.
    _guard: Guard,
}

impl<E> fmt::Debug for Call<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call").field("pipeline", &self.pipeline.name()).finish_non_exhaustive()
    }
}

// No bound on `E` here: the expansion passes `from` (spanned at the return type), so an
// error type that does not convert is reported once, there.
impl<E> Call<E> {
    /// A call through `site`, with `policy` classifying the body's errors and `from`
    /// turning the policies' errors into the function's.
    #[inline]
    pub fn new(site: &'static CallSite, policy: ErrorPolicy<E>, from: fn(ResilienceError) -> E) -> Self {
        let guard = reclaim::enter();
        let settings = site.settings(&guard);
        // SAFETY: the guard is kept in the call, and the expansion drops every
        // admission and attempt (which borrow the pipeline) before the call.
        #[allow(unsafe_code)]
        let (pipeline, retry_config) =
            unsafe { (reclaim::extend(settings.pipeline), settings.retry.map(|r| reclaim::extend(r))) };
        pipeline.call_begins();
        Self {
            pipeline,
            from,
            policy,
            timeout_nanos: settings.timeout_nanos,
            retry_config,
            retry: None,
            backoff: None,
            span: call_span(site.name, site.operation),
            sampled_at: 0,
            started: retry_config.and_then(crate::retry::call_start),
            _guard: guard,
        }
    }

    /// Whether another attempt may follow the coming one, so that arguments taken by
    /// value must be cloned for it rather than moved.
    #[inline]
    pub fn may_retry(&self) -> bool {
        match (self.retry_config, &self.retry) {
            (None, _) => false,
            (Some(_), Some(state)) => state.attempts_left(),
            (Some(config), None) => config.attempts() > 1,
        }
    }

    /// Waits out the backoff after a failed attempt, then asks the breaker, the rate
    /// limiter and the bulkhead for the next one. A rejection ends the call with the
    /// rejection as its error.
    pub async fn admit(&mut self) -> Result<Admission, E> {
        if let Some(delay) = self.backoff.take() {
            // Boxed: a timer is large, and a call that needs no retry never sleeps.
            Box::pin(tokio::time::sleep(delay)).await;
        }
        let permit = match self.pipeline.admit() {
            Ok(permit) => permit,
            Err(rejected) => return Err(self.rejected(rejected)),
        };
        let slot = match self.pipeline.try_slot() {
            Ok(slot) => slot,
            Err(Some(rejected)) => return Err(self.rejected(rejected)),
            Err(None) => match self.pipeline.wait_slot() {
                Some(wait) => match wait.await {
                    Ok(slot) => Some(slot),
                    Err(rejected) => return Err(self.rejected(rejected)),
                },
                None => None,
            },
        };
        Ok(Admission { permit, slot })
    }

    #[cold]
    fn rejected(&mut self, rejected: ResilienceError) -> E {
        self.pipeline.finished(self.retry_config, self.retry.as_ref(), false, self.sampled_at);
        (self.from)(rejected)
    }

    /// Runs one attempt's `body` under the timeout and settles it: resolves to the
    /// call's result, or to `None` when another attempt should follow (after the
    /// backoff, which the next [`admit`](Self::admit) waits out).
    #[inline]
    pub fn attempt<T, Fut>(&mut self, admission: Admission, body: Fut) -> Attempt<'_, E, Fut>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let limit = self.timeout_nanos;
        Attempt {
            body: Some(Limited::new(crate::pipeline::body(self.pipeline, body, self.from), limit)),
            first_poll: true,
            started: None,
            permit: admission.permit,
            slot: admission.slot,
            call: self,
        }
    }

    fn settle<T>(
        &mut self,
        permit: Option<CallPermit<'static>>,
        outcome: Result<Result<T, E>, crate::timeout::Elapsed>,
    ) -> Option<Result<T, E>> {
        let pipeline = self.pipeline;
        let error = match pipeline.settle_attempt(&self.policy, permit, outcome, self.timeout_nanos, self.from) {
            Ok(result) => {
                pipeline.finished(self.retry_config, self.retry.as_ref(), result.is_ok(), self.sampled_at);
                return Some(result);
            }
            Err(error) => error,
        };
        let delay = match self.retry_config {
            Some(config) => {
                let started = self.started;
                pipeline.retry_delay(self.retry.get_or_insert_with(|| RetryState::started(config, started)))
            }
            None => None,
        };
        match delay {
            Some(delay) => {
                self.backoff = Some(delay);
                None
            }
            None => {
                pipeline.finished(self.retry_config, self.retry.as_ref(), false, self.sampled_at);
                Some(Err(error))
            }
        }
    }
}

pin_project! {
    /// One attempt of a [`Call`]. Dropping it (a cancelled call) drops the body first,
    /// then frees the slot and hands back the breaker permit unrecorded.
    #[must_use = "futures do nothing unless polled"]
    pub struct Attempt<'a, E, Fut> {
        #[pin]
        body: Option<Limited<crate::pipeline::Body<Fut, E>>>,
        first_poll: bool,
        // When the body first waited, if an adaptive bulkhead times this attempt.
        started: Option<tokio::time::Instant>,
        permit: Option<CallPermit<'static>>,
        slot: Option<Slot<'static>>,
        call: &'a mut Call<E>,
    }
}

impl<E, Fut> fmt::Debug for Attempt<'_, E, Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attempt").field("call", &self.call).finish_non_exhaustive()
    }
}

impl<T, E, Fut> Future for Attempt<'_, E, Fut>
where
    Fut: Future<Output = Result<T, E>>,
{
    type Output = Option<Result<T, E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let call: &mut Call<E> = this.call;
        let span = call.span.take();
        let entered = span.as_deref().map(tracing::Span::enter);
        if call.retry_config.is_some() {
            crate::retry::budget::attempt_starts();
        }
        let poll = match this.body.as_mut().as_pin_mut() {
            Some(body) => body.poll(cx),
            None => panic!("`Attempt` polled after it completed"),
        };
        let settled = match poll {
            Poll::Ready(outcome) => {
                this.body.set(None);
                if let (Some(started), Some(adaptive)) = (this.started.take(), call.pipeline.adaptive()) {
                    adaptive.record(started, outcome.is_err());
                }
                *this.slot = None;
                Poll::Ready(call.settle(this.permit.take(), outcome))
            }
            Poll::Pending => {
                if std::mem::take(this.first_poll) {
                    let started = this.body.as_ref().as_pin_ref().and_then(|b| b.get_ref().started());
                    if call.sampled_at == 0 {
                        // Only calls that wait are timed (see `observe::latency`).
                        call.sampled_at = latency::start_stamp(started);
                    }
                    if call.pipeline.adaptive().is_some_and(crate::bulkhead::AdaptiveBulkhead::sampled) {
                        *this.started = Some(started.unwrap_or_else(tokio::time::Instant::now));
                    }
                }
                Poll::Pending
            }
        };
        drop(entered);
        call.span = span;
        settled
    }
}

/// The default of `retry_if` and `record_if`: every error.
pub fn always<E>(_: &E) -> bool {
    true
}

/// An argument taken by value: each attempt but the last gets a clone, the last one the
/// value itself (so a call that cannot be retried clones nothing).
#[derive(Debug)]
pub struct Arg<T>(Option<T>);

/// What an argument taken by value needs so that a retry can pass it again.
#[diagnostic::on_unimplemented(
    message = "`{Self}` must be `Clone`: retries run the body again with this argument",
    label = "an argument taken by value must be `Clone` so that each attempt gets its own",
    note = "take it by reference instead, or derive or implement `Clone` for it"
)]
pub trait RetryArgument: Sized {
    /// A copy for one attempt.
    fn again(&self) -> Self;
}

impl<T: Clone> RetryArgument for T {
    #[inline]
    fn again(&self) -> Self {
        self.clone()
    }
}

impl<T> Arg<T> {
    /// Keeps `value` for the attempts.
    #[inline]
    pub fn new(value: T) -> Self {
        Self(Some(value))
    }

    /// The value itself, for a fallback (the expansion never passes `last` then).
    #[inline]
    pub fn into_inner(self) -> T {
        match self.0 {
            Some(value) => value,
            None => unreachable!("an argument was moved into the last attempt and also asked for by the fallback"),
        }
    }
}

// The only bound on `Arg`, so that an argument that is not `Clone` gets one error, at
// the argument (the expansion spans this call there).
impl<T: RetryArgument> Arg<T> {
    /// The value for the coming attempt; `last` when no attempt can follow it.
    #[inline]
    pub fn next(&mut self, last: bool) -> T {
        match (&self.0, last) {
            (Some(value), false) => value.again(),
            _ => match self.0.take() {
                Some(value) => value,
                // The expansion asks once with `last`, then leaves the loop.
                None => unreachable!("an argument was asked for after the last attempt"),
            },
        }
    }
}

/// A fallback's return value, awaited by an `async fn`'s expansion whether the
/// fallback is a plain `fn` (returning the `Result`) or an `async fn` (returning a
/// future of it): the inherent `resolve` takes the first case, [`FallbackFuture`] the
/// second.
#[derive(Debug)]
pub struct FallbackValue<R>(pub R);

impl<T, E> FallbackValue<Result<T, E>> {
    /// The result, ready at once.
    #[inline]
    pub fn resolve(self) -> std::future::Ready<Result<T, E>> {
        std::future::ready(self.0)
    }
}

/// See [`FallbackValue`].
pub trait FallbackFuture {
    /// The fallback's future.
    type Future;
    /// The future itself.
    fn resolve(self) -> Self::Future;
}

impl<F: Future> FallbackFuture for FallbackValue<F> {
    type Future = F;
    #[inline]
    fn resolve(self) -> F {
        self.0
    }
}

/// What an annotated function may return. The expansion names the call's error type
/// as `<R as ResilientResult>::Error`, spanned at the return type, so that a return
/// type that is not a `Result` is reported there, once.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned by a resilient function",
    label = "expected `Result<T, E>` where `E: From<resilience::ResilienceError>`"
)]
pub trait ResilientResult {
    /// The error type.
    type Error;
}

impl<T, E> ResilientResult for Result<T, E> {
    type Error = E;
}

/// The error type of an annotated function: one the policies' errors convert into.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the error type of a resilient function",
    label = "`{Self}` must implement `From<resilience::ResilienceError>`",
    note = "the policies fail a call with a `ResilienceError` (circuit open, bulkhead full, timeout, rate limited), converted into the function's error type"
)]
pub trait CallError: Sized {
    /// The conversion.
    fn from_resilience(error: ResilienceError) -> Self;
}

impl<E: From<ResilienceError>> CallError for E {
    #[inline]
    fn from_resilience(error: ResilienceError) -> Self {
        E::from(error)
    }
}

pin_project! {
    /// A future under a time limit the way a pipeline's attempt runs under its timeout:
    /// no timer unless it waits, and a long limit on the helper thread rather than
    /// tokio's timer wheel (see [`Timeout`](crate::Timeout)). Polled with
    /// [`poll_inner`](Self::poll_inner), then [`expired`](Self::expired) after a
    /// `Pending`, by a future whose output is the inner one's. For the `resilience`
    /// crate's own layers (its HTTP middleware's request timeout); not a public API.
    #[must_use = "it does nothing unless polled"]
    pub struct TimeLimited<F> {
        #[pin]
        inner: Limited<F>,
    }
}

/// A [`TimeLimited`]'s limit, worked out once (a layer makes it when it is made, not on
/// each request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeLimit(u64);

impl TimeLimit {
    /// `limit` (zero: the least limit there is, one nanosecond).
    pub fn new(limit: Duration) -> Self {
        Self(limit_nanos(Some(limit)))
    }
}

/// `fut` limited to `limit` from its first poll that waits.
#[inline]
pub fn time_limited<F: Future>(fut: F, limit: TimeLimit) -> TimeLimited<F> {
    TimeLimited { inner: Limited::new(fut, limit.0) }
}

impl<F: Future> TimeLimited<F> {
    /// The inner future's poll, as it gives it, without looking at the limit: for a
    /// caller whose output is the inner future's own, so that a ready answer is not
    /// wrapped and unwrapped (each is a copy of it). After a `Pending`, ask
    /// [`expired`](Self::expired).
    #[inline]
    pub fn poll_inner(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll_inner(cx)
    }

    /// Whether the limit has passed, after [`poll_inner`](Self::poll_inner) returned
    /// `Pending` (the first such call arms the timer, which then wakes `cx`).
    #[inline]
    pub fn expired(self: Pin<&mut Self>, cx: &mut Context<'_>) -> bool {
        self.project().inner.expired(cx)
    }
}
