//! The manager: named, strategy-aware calls through the registry.

use std::future::Future;
use std::sync::LazyLock;

use crate::circuit_breaker::CircuitState;
use crate::config::{ConfigOverrides, ResilienceConfig};
use crate::error::{ConfigError, ResilienceError};
use crate::pipeline::{ErrorPolicy, PipelineCall};
use crate::preset::ResilienceStrategy;
use crate::registry::{self, Defaults, Registry};
use crate::timeout::limit_nanos;

/// Runs calls through the pipeline of a named dependency.
///
/// The global manager, [`manager()`], uses the global [`registry()`](crate::registry());
/// [`ResilienceManager::new`] makes one with its own registry and global defaults.
///
/// ```
/// # use resilience_core::{manager, ResilienceError, ResilienceStrategy};
/// # async fn demo() -> Result<u32, ResilienceError> {
/// let stock = manager().execute("inventory", ResilienceStrategy::InternalService, || async { Ok(42) }).await?;
/// # Ok(stock) }
/// ```
#[derive(Debug)]
pub struct ResilienceManager {
    /// `None`: whatever the global registry is at the time of the call.
    registry: Option<&'static Registry>,
}

impl Default for ResilienceManager {
    /// A manager with its own registry and the global defaults. Like
    /// every registry, it lives for the rest of the process: make managers at start-up.
    fn default() -> Self {
        Self { registry: Some(Box::leak(Box::new(Registry::new()))) }
    }
}

impl ResilienceManager {
    /// A manager with its own registry (which lives for the rest of the process), whose
    /// global defaults are `defaults`.
    pub fn new(defaults: ResilienceConfig) -> Result<Self, ConfigError> {
        defaults.validate()?;
        let registry = Registry::with_defaults(Defaults { global: defaults, ..Defaults::default() });
        Ok(Self { registry: Some(Box::leak(Box::new(registry))) })
    }

    /// The registry this manager resolves names in.
    pub fn registry(&self) -> &'static Registry {
        self.registry.unwrap_or_else(registry::registry)
    }

    /// Runs `f` through the pipeline of `name`. If `name` was never registered it is
    /// created with `strategy`'s defaults. Resolving a name takes no lock after its first
    /// call on a thread.
    #[inline]
    pub fn execute<T, E, F, Fut>(
        &self,
        name: &str,
        strategy: ResilienceStrategy,
        f: F,
    ) -> PipelineCall<'static, E, F, Fut>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<ResilienceError>,
    {
        self.registry().resolve(name, strategy).pipeline().call(f)
    }

    /// Like [`execute`](Self::execute), with call-site keys. `timeout` and `retry` keys
    /// apply to this call; breaker, bulkhead and rate-limit keys configure the shared
    /// instances only if this call creates the dependency (registration and settings
    /// decide them otherwise).
    pub async fn execute_with<T, E, F, Fut>(
        &self,
        name: &str,
        strategy: ResilienceStrategy,
        overrides: &ConfigOverrides,
        f: F,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<ResilienceError>,
    {
        // Timeout and retry are per call; only the keys of shared instances can shape a
        // dependency this call creates.
        let dependency = self.registry().resolve_with(name, strategy, &overrides.shared_keys());
        let pipeline = dependency.pipeline();
        if !overrides.sets_per_call_keys() {
            // Nothing to derive: skip reading the dependency's configuration.
            return pipeline.call(f).await;
        }
        let config = dependency.config().with(overrides);
        let retry = config.call_retry();
        pipeline.call_configured(&ErrorPolicy::default(), E::from, f, limit_nanos(config.timeout), retry.as_ref()).await
    }

    /// The blocking form of [`execute`](Self::execute): runs `f` on this thread (see
    /// [`Pipeline::call_blocking`](crate::Pipeline::call_blocking)); needs no runtime.
    pub fn execute_blocking<T, E, F>(&self, name: &str, strategy: ResilienceStrategy, f: F) -> Result<T, E>
    where
        F: FnMut() -> Result<T, E>,
        E: From<ResilienceError>,
    {
        self.registry().resolve(name, strategy).pipeline().call_blocking(f)
    }

    /// The breaker state of `name`, if it exists and has a breaker.
    pub fn circuit_state(&self, name: &str) -> Option<CircuitState> {
        self.registry().get(name)?.pipeline().circuit_breaker().map(|b| b.state())
    }
}

static MANAGER: LazyLock<ResilienceManager> = LazyLock::new(|| ResilienceManager { registry: None });

/// The global manager, over the global registry.
pub fn manager() -> &'static ResilienceManager {
    &MANAGER
}

macro_rules! shortcut {
    ($(#[$doc:meta])* $function:ident => $strategy:ident) => {
        $(#[$doc])*
        pub fn $function<T, E, F, Fut>(name: &str, op: F) -> PipelineCall<'static, E, F, Fut>
        where
            F: FnMut() -> Fut,
            Fut: Future<Output = Result<T, E>>,
            E: From<ResilienceError>,
        {
            manager().execute(name, ResilienceStrategy::$strategy, op)
        }
    };
}

shortcut!(
    /// Runs `op` as a call to the internal service `name` (strategy `InternalService`).
    resilient_internal_call => InternalService
);
shortcut!(
    /// Runs `op` as a call to the external service `name` (strategy `ExternalService`).
    resilient_external_call => ExternalService
);
shortcut!(
    /// Runs `op` as a call to the database `name` (strategy `Database`).
    resilient_database_call => Database
);
shortcut!(
    /// Runs `op` as a call to the cache `name` (strategy `Cache`).
    resilient_cache_call => Cache
);
