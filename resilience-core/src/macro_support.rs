//! What the attribute macros expand to. Not a public API: expansions reach it through
//! `::resilience::__private`, and it may change with any release.
//!
//! An expansion is a `static CallSite` (the name, the preset and the call-site keys, all
//! checked at compile time) and a call to [`execute`] or [`execute_blocking`]. The call
//! site resolves its dependency through the registry's per-thread cache, and caches the
//! per-call settings derived from its keys for the dependency's current pipeline, so a
//! call takes no lock and allocates nothing; a reconfiguration publishes a new pipeline,
//! which the call site notices by pointer and re-derives once.

use std::future::Future;
use std::ptr;
use std::time::Duration;

use crate::config::ConfigOverrides;
use crate::error::ResilienceError;
use crate::leak::LeakedCell;
use crate::pipeline::{ErrorPolicy, Pipeline, PipelineCall};
use crate::registry::{registry, Dependency, DependencyKind};
use crate::retry::RetryConfig;
use crate::timeout::limit_nanos;

pub use crate::preset::{DependencyType, ResilienceStrategy};

/// One annotated function.
#[derive(Debug)]
pub struct CallSite {
    name: &'static str,
    kind: DependencyKind,
    keys: ConfigOverrides,
    /// `keys` without timeout and retry: what shapes the shared instances if this call
    /// site is the first to use the dependency.
    shared: ConfigOverrides,
    /// Whether `keys` change the timeout or retries of each call.
    per_call: bool,
    view: LeakedCell<View>,
}

/// The per-call settings of a call site for one pipeline of its dependency.
#[derive(Debug)]
struct View {
    pipeline: &'static Pipeline,
    timeout_nanos: u64,
    timeout: Option<Duration>,
    retry: Option<RetryConfig>,
}

impl CallSite {
    /// A call site of dependency `name` with preset `kind` and call-site `keys`.
    pub const fn new(name: &'static str, kind: DependencyKind, keys: ConfigOverrides) -> Self {
        Self {
            name,
            kind,
            keys,
            shared: keys.shared_keys(),
            per_call: keys.sets_per_call_keys(),
            view: LeakedCell::empty(),
        }
    }

    /// The dependency's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    #[inline]
    fn dependency(&self) -> &'static Dependency {
        registry().resolve_as(self.name, self.kind, &self.shared)
    }

    /// The pipeline, timeout (as nanoseconds and as a duration) and retries of a call.
    #[inline]
    fn settings(&self) -> (&'static Pipeline, u64, Option<Duration>, Option<&'static RetryConfig>) {
        let dependency = self.dependency();
        let pipeline = dependency.pipeline();
        if !self.per_call {
            return (pipeline, pipeline.timeout_nanos(), pipeline.timeout(), pipeline.retry());
        }
        let view = match self.view.try_get() {
            Some(view) if ptr::eq(view.pipeline, pipeline) => view,
            _ => self.derive(dependency, pipeline),
        };
        (view.pipeline, view.timeout_nanos, view.timeout, view.retry.as_ref())
    }

    #[cold]
    fn derive(&self, dependency: &'static Dependency, pipeline: &'static Pipeline) -> &'static View {
        let config = dependency.config().with(&self.keys);
        let retry = Some(config.retry).filter(|r| r.enabled && r.max_attempts.get() > 1);
        self.view.set(View { pipeline, timeout_nanos: limit_nanos(config.timeout), timeout: config.timeout, retry })
    }
}

/// Runs an `async fn`'s body through its call site's pipeline.
#[inline]
pub fn execute<T, E, F, Fut>(site: &'static CallSite, policy: &ErrorPolicy<E>, f: F) -> PipelineCall<'static, E, F, Fut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: From<ResilienceError>,
{
    let (pipeline, timeout_nanos, _, retry) = site.settings();
    pipeline.call_configured(policy, f, timeout_nanos, retry)
}

/// Runs a plain `fn`'s body through its call site's pipeline, on this thread.
pub fn execute_blocking<T, E, F>(site: &'static CallSite, policy: &ErrorPolicy<E>, f: F) -> Result<T, E>
where
    F: FnMut() -> Result<T, E>,
    E: From<ResilienceError>,
{
    let (pipeline, _, timeout, retry) = site.settings();
    pipeline.call_blocking_configured(policy, f, timeout, retry)
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
