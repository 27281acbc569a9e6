//! The named-dependency registry: one shared set of policy instances per name.
//!
//! A dependency is created the first time its name is registered or used, and lives for
//! the rest of the process. Registering or reconfiguring it later builds a new pipeline
//! (keeping the bulkhead with its permits in use, queue and workers, and the breaker and
//! rate limiter when their configuration did not change) and publishes it atomically,
//! so every call site that already uses the name picks the new configuration up on its
//! next call. A configuration that did not change builds nothing. The replaced pipeline
//! is freed once every call that may still use it has ended (see `reclaim`).
//!
//! Every reconfiguration is all or nothing: each new pipeline is prepared without
//! touching anything in use, and only when all of them are ready are they published.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{self, Relaxed};
use std::sync::{Arc, LazyLock, Mutex, RwLock};

use crate::circuit_breaker::CircuitState;
use crate::config::{ConfigOverrides, ResilienceConfig};
use crate::error::ConfigError;
use crate::leak::LeakedCell;
use crate::pipeline::{Pipeline, PipelineRef};
use crate::preset::{DependencyType, ResilienceStrategy};
use crate::reclaim::{Guard, RcuCell};
use crate::Bulkhead;

/// What picks a dependency's preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DependencyKind {
    /// Registered with a type (registration macro, settings file or [`Registry::register`]).
    Type(DependencyType),
    /// Never registered: the strategy of the call that first used it.
    Strategy(ResilienceStrategy),
    /// Never registered: first used by a `#[resilience_pattern]`, whose keys name every
    /// policy it uses, over the global defaults alone.
    Pattern,
}

impl DependencyKind {
    fn preset(self) -> ConfigOverrides {
        match self {
            Self::Type(t) => t.preset(),
            Self::Strategy(s) => s.preset(),
            Self::Pattern => ConfigOverrides::EMPTY,
        }
    }
}

/// The layers below every dependency's own configuration: the global defaults and,
/// per strategy and per dependency type, changes to its preset (from a settings file).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Defaults {
    /// The global defaults.
    pub global: ResilienceConfig,
    /// Changes to strategy presets.
    pub strategies: HashMap<ResilienceStrategy, ConfigOverrides>,
    /// Changes to dependency-type presets.
    pub types: HashMap<DependencyType, ConfigOverrides>,
}

impl Defaults {
    /// The effective configuration of a dependency of `kind` whose own configuration is
    /// `own`: global defaults ← preset ← changes to the preset ← `own`.
    pub fn resolve(&self, kind: DependencyKind, own: &ConfigOverrides) -> ResilienceConfig {
        let preset_changes = match kind {
            DependencyKind::Type(t) => self.types.get(&t),
            DependencyKind::Strategy(s) => self.strategies.get(&s),
            DependencyKind::Pattern => None,
        };
        let mut config = self.global.clone().with(&kind.preset());
        if let Some(changes) = preset_changes {
            changes.apply(&mut config);
        }
        own.apply(&mut config);
        config
    }
}

/// One named dependency and its current pipeline.
pub struct Dependency {
    name: Arc<str>,
    state: Mutex<DependencyState>,
    pipeline: RcuCell<Pipeline>,
}

#[derive(Clone)]
struct DependencyState {
    kind: DependencyKind,
    registered: bool,
    own: ConfigOverrides,
    config: ResilienceConfig,
}

impl fmt::Debug for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dependency").field("name", &self.name).field("kind", &self.kind()).finish_non_exhaustive()
    }
}

impl Dependency {
    /// The dependency's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pipeline in force now. A reconfiguration publishes a new one; calls already
    /// running finish on the one they started with (sharing its bulkhead permits), and
    /// the replaced one is freed once no call or `PipelineRef` uses it.
    #[inline]
    pub fn pipeline(&self) -> PipelineRef {
        PipelineRef::load(&self.pipeline)
    }

    /// The pipeline in force now, valid while `guard` is held.
    #[inline(always)]
    pub(crate) fn pipeline_in<'g>(&self, guard: &'g Guard) -> &'g Pipeline {
        self.pipeline.get(guard)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, DependencyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What picks its preset.
    pub fn kind(&self) -> DependencyKind {
        self.state().kind
    }

    /// Whether it was registered (rather than created by a call with a strategy).
    pub fn is_registered(&self) -> bool {
        self.state().registered
    }

    /// Its own configuration layer (registration or settings entry).
    pub fn own_config(&self) -> ConfigOverrides {
        self.state().own
    }

    /// The effective configuration in force.
    pub fn config(&self) -> ResilienceConfig {
        self.state().config.clone()
    }

    /// Builds the pipeline for a new state without publishing it, or nothing if the
    /// effective configuration stays the same. Changes nothing in use.
    fn prepare(&self, state: &DependencyState) -> Result<Option<Pipeline>, ConfigError> {
        if self.state().config == state.config {
            return Ok(None);
        }
        let guard = crate::reclaim::enter();
        Pipeline::from_config(&self.name, &state.config, Some(self.pipeline_in(&guard))).map(Some)
    }

    /// Publishes a prepared state: the new pipeline (if any), then the limits it keeps
    /// in place from the previous one.
    fn publish(&self, state: DependencyState, pipeline: Option<Pipeline>) {
        let mut current = self.state();
        if let Some(pipeline) = pipeline {
            self.pipeline.replace(pipeline);
            let guard = crate::reclaim::enter();
            if let Err(error) = self.pipeline_in(&guard).commit(&state.config) {
                tracing::warn!(target: "resilience::registry", name = &*self.name, %error, "bulkhead not fully resized");
            }
        }
        *current = state;
    }
}

/// Where a registry keeps its dependencies.
pub struct Registry {
    id: u64,
    /// Held by whatever changes configurations (registration, defaults, first use), so
    /// that each prepares against what is in force and publishes before the next.
    writer: Mutex<()>,
    defaults: RwLock<Defaults>,
    dependencies: RwLock<HashMap<Arc<str>, &'static Dependency>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").field("dependencies", &self.names()).finish_non_exhaustive()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A point-in-time view of one dependency, for health reports and admin endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct DependencySnapshot {
    /// Its name.
    pub name: String,
    /// What picks its preset.
    pub kind: DependencyKind,
    /// Whether it was registered.
    pub registered: bool,
    /// The effective configuration.
    pub config: ResilienceConfig,
    /// The breaker's state, if it has a breaker.
    pub circuit_state: Option<CircuitState>,
    /// Free bulkhead slots, if it has a bulkhead.
    pub bulkhead_available: Option<usize>,
    /// The bulkhead's limit, if it has a bulkhead.
    pub bulkhead_max_concurrent: Option<usize>,
}

impl Registry {
    /// An empty registry with the global defaults (breaker after 5 failures, 60 s open, 2 successes to close; 3 attempts from 1 s doubling; 30 s timeout; no bulkhead).
    pub fn new() -> Self {
        Self::with_defaults(Defaults::default())
    }

    /// An empty registry with these defaults.
    pub fn with_defaults(defaults: Defaults) -> Self {
        Self {
            id: NEXT_ID.fetch_add(1, Relaxed),
            writer: Mutex::new(()),
            defaults: RwLock::new(defaults),
            dependencies: RwLock::new(HashMap::new()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, &'static Dependency>> {
        self.dependencies.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, &'static Dependency>> {
        self.dependencies.write().unwrap_or_else(|p| p.into_inner())
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The defaults below every dependency.
    pub fn defaults(&self) -> Defaults {
        self.defaults.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The dependency registered or used under `name`.
    pub fn get(&self, name: &str) -> Option<&'static Dependency> {
        self.read().get(name).copied()
    }

    /// Every dependency name, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read().keys().map(|k| k.to_string()).collect();
        names.sort();
        names
    }

    /// A view of every dependency, sorted by name.
    pub fn snapshot(&self) -> Vec<DependencySnapshot> {
        let mut deps: Vec<&'static Dependency> = self.read().values().copied().collect();
        deps.sort_by(|a, b| a.name.cmp(&b.name));
        deps.into_iter()
            .map(|d| {
                let state = d.state().clone();
                let pipeline = d.pipeline();
                let bulkhead = pipeline.bulkhead();
                DependencySnapshot {
                    name: d.name.to_string(),
                    kind: state.kind,
                    registered: state.registered,
                    config: state.config,
                    circuit_state: pipeline.circuit_breaker().map(|b| b.state()),
                    bulkhead_available: bulkhead.map(Bulkhead::available),
                    bulkhead_max_concurrent: bulkhead.map(Bulkhead::max_concurrent),
                }
            })
            .collect()
    }

    /// The health of every dependency, with the alerts of the seed notes.
    pub fn health(&self) -> crate::observe::health::HealthReport {
        crate::observe::health::report(self)
    }

    /// Sets every gauge that follows a value continuously (breaker state and failure
    /// rate, free bulkhead slots, calls in flight, retry budgets' balances) for every
    /// dependency. Exporters call this before they
    /// render, so the hot path never has to.
    pub fn refresh_gauges(&self) {
        for d in self.read().values() {
            let pipeline = d.pipeline();
            if let Some(b) = pipeline.circuit_breaker() {
                b.refresh_gauges();
            }
            if let Some(b) = pipeline.bulkhead() {
                b.refresh_gauges();
            }
            if let Some(b) = pipeline.retry_budget() {
                b.refresh_gauges();
            }
        }
    }

    /// Registers `name` as a dependency of type `dependency_type` with its own
    /// configuration `config` (over the type's preset). If the name is already in use,
    /// it is reconfigured in place and the change reaches every call site using it.
    /// An invalid configuration changes nothing.
    pub fn register(
        &self,
        name: &str,
        dependency_type: DependencyType,
        config: ConfigOverrides,
    ) -> Result<&'static Dependency, ConfigError> {
        let _writer = self.writer();
        let defaults = self.defaults();
        let state = registered(&defaults, dependency_type, config);
        if let Some(existing) = self.get(name) {
            let pipeline = existing.prepare(&state)?;
            existing.publish(state, pipeline);
            tracing::info!(target: "resilience::registry", name, kind = dependency_type.as_str(), "dependency reconfigured");
            return Ok(existing);
        }
        let name: Arc<str> = Arc::from(name);
        let pipeline = Pipeline::from_config(&name, &state.config, None)?;
        Ok(self.insert(name, state, pipeline))
    }

    /// Adds a dependency that no other has the name of (the writer lock is held).
    fn insert(&self, name: Arc<str>, state: DependencyState, pipeline: Pipeline) -> &'static Dependency {
        let dependency: &'static Dependency = Box::leak(Box::new(Dependency {
            name: Arc::clone(&name),
            state: Mutex::new(state),
            pipeline: RcuCell::new(pipeline),
        }));
        self.write().insert(name, dependency);
        dependency
    }

    /// Replaces the defaults and registers `dependencies` (name, type, own
    /// configuration) in one step: every configuration that changes is prepared first,
    /// and if any is invalid nothing changes. Dependencies not named keep their own
    /// configuration over the new defaults.
    pub fn apply(
        &self,
        defaults: Defaults,
        dependencies: &[(String, DependencyType, ConfigOverrides)],
    ) -> Result<(), ConfigError> {
        let _writer = self.writer();
        // The last entry of a name wins, as a later registration would.
        let named: HashMap<&str, (DependencyType, ConfigOverrides)> =
            dependencies.iter().map(|(name, ty, own)| (name.as_str(), (*ty, *own))).collect();
        let existing: Vec<&'static Dependency> = self.read().values().copied().collect();
        let mut changes = Vec::with_capacity(existing.len());
        for d in existing {
            let state = match named.get(&*d.name) {
                Some((ty, own)) => registered(&defaults, *ty, *own),
                None => {
                    let mut state = d.state().clone();
                    state.config = defaults.resolve(state.kind, &state.own);
                    state
                }
            };
            let pipeline = d.prepare(&state).map_err(|e| under_new_defaults(&d.name, e))?;
            changes.push((d, state, pipeline));
        }
        let mut added: Vec<(Arc<str>, DependencyState, Pipeline)> = Vec::new();
        let mut new_names = std::collections::HashSet::new();
        for (name, ty, own) in dependencies.iter().rev() {
            if self.get(name).is_some() || !new_names.insert(name.as_str()) {
                continue;
            }
            let state = registered(&defaults, *ty, *own);
            let name: Arc<str> = Arc::from(name.as_str());
            let pipeline =
                Pipeline::from_config(&name, &state.config, None).map_err(|e| under_new_defaults(&name, e))?;
            added.push((name, state, pipeline));
        }
        *self.defaults.write().unwrap_or_else(|p| p.into_inner()) = defaults;
        for (d, state, pipeline) in changes {
            d.publish(state, pipeline);
        }
        for (name, state, pipeline) in added {
            self.insert(name, state, pipeline);
        }
        Ok(())
    }

    /// The dependency `name`, created with `strategy`'s defaults if it was never
    /// registered nor used (which is logged once). After the first call on a thread this
    /// takes no lock.
    #[inline]
    pub fn resolve(&self, name: &str, strategy: ResilienceStrategy) -> &'static Dependency {
        match cache_get(self.id, name) {
            Some(d) => d,
            None => self.resolve_slow(name, DependencyKind::Strategy(strategy), None),
        }
    }

    /// Like [`resolve`](Self::resolve); `call_site` keys configure the dependency's
    /// shared instances only if this call creates it.
    #[inline]
    pub fn resolve_with(
        &self,
        name: &str,
        strategy: ResilienceStrategy,
        call_site: &ConfigOverrides,
    ) -> &'static Dependency {
        match cache_get(self.id, name) {
            Some(d) => d,
            None => self.resolve_slow(name, DependencyKind::Strategy(strategy), Some(call_site)),
        }
    }

    /// What tells this registry from any other in the process.
    #[inline]
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The dependency `name`; if it was never registered nor used it is created with the
    /// preset of `kind` (a dependency type for `#[database_call]` and its siblings) and
    /// the `call_site` keys. Takes no lock after the first call on a thread.
    #[inline]
    pub fn resolve_as(&self, name: &str, kind: DependencyKind, call_site: &ConfigOverrides) -> &'static Dependency {
        match cache_get(self.id, name) {
            Some(d) => d,
            None => self.resolve_slow(name, kind, Some(call_site)),
        }
    }

    #[cold]
    fn resolve_slow(
        &self,
        name: &str,
        kind: DependencyKind,
        call_site: Option<&ConfigOverrides>,
    ) -> &'static Dependency {
        let dependency = match self.get(name) {
            Some(d) => d,
            None => self.create(name, kind, call_site.cloned().unwrap_or_default()),
        };
        cache_put(self.id, name, dependency);
        dependency
    }

    #[cold]
    fn create(&self, name: &str, kind: DependencyKind, call_site: ConfigOverrides) -> &'static Dependency {
        let _writer = self.writer();
        if let Some(existing) = self.get(name) {
            return existing;
        }
        let defaults = self.defaults();
        let mut own = call_site;
        let mut config = defaults.resolve(kind, &own);
        let name: Arc<str> = Arc::from(name);
        let pipeline = match Pipeline::from_config(&name, &config, None) {
            Ok(p) => p,
            Err(error) => {
                // Call-site keys are checked at compile time by the macros; a bad set
                // passed by hand falls back to the strategy's defaults.
                tracing::error!(target: "resilience::registry", name = &*name, %error, "call-site keys refused with the configuration in force; the dependency uses its preset");
                own = ConfigOverrides::default();
                config = defaults.resolve(kind, &own);
                Pipeline::from_config(&name, &config, None).unwrap_or_else(|_| Pipeline::empty(Arc::clone(&name)))
            }
        };
        tracing::info!(
            target: "resilience::registry",
            name = &*name,
            preset = match kind {
                DependencyKind::Strategy(s) => s.as_str(),
                DependencyKind::Type(t) => t.as_str(),
                DependencyKind::Pattern => "resilience_pattern",
            },
            "dependency used before it was registered; using its preset's defaults"
        );
        self.insert(name, DependencyState { kind, registered: false, own, config }, pipeline)
    }

    /// Replaces the defaults and reconfigures every dependency accordingly. Every new
    /// configuration is prepared first: if any is invalid, nothing changes.
    pub fn set_defaults(&self, defaults: Defaults) -> Result<(), ConfigError> {
        self.apply(defaults, &[])
    }
}

/// An error about a dependency's configuration, named after the dependency.
fn under_new_defaults(name: &str, error: ConfigError) -> ConfigError {
    match error {
        ConfigError::Invalid { key, message } => {
            ConfigError::invalid(&format!("{name}.{key}"), format!("{message} (with the new defaults)"))
        }
        other => other,
    }
}

/// The state of a dependency registered with `ty` and `own` over `defaults`.
fn registered(defaults: &Defaults, ty: DependencyType, own: ConfigOverrides) -> DependencyState {
    let kind = DependencyKind::Type(ty);
    DependencyState { kind, registered: true, config: defaults.resolve(kind, &own), own }
}

// A per-thread cache from (registry, name) to dependency, so resolving a name on the hot
// path takes no lock. Entries never go stale: a dependency, once created, stays the one
// for its name in its registry.
const CACHE_SLOTS: usize = 64;

thread_local! {
    static CACHE: [Cell<Option<(u64, &'static Dependency)>>; CACHE_SLOTS] =
        const { [const { Cell::new(None) }; CACHE_SLOTS] };
}

#[inline]
fn slot_of(name: &str) -> usize {
    // FxHash over the bytes: names are short, and this runs on every call.
    let mut h: u64 = 0;
    for chunk in name.as_bytes().chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    (h >> 58) as usize % CACHE_SLOTS
}

#[inline]
fn cache_get(registry: u64, name: &str) -> Option<&'static Dependency> {
    CACHE.with(|cache| match cache[slot_of(name)].get() {
        Some((id, d)) if id == registry && *d.name == *name => Some(d),
        _ => None,
    })
}

fn cache_put(registry: u64, name: &str, dependency: &'static Dependency) {
    CACHE.with(|cache| cache[slot_of(name)].set(Some((registry, dependency))));
}

static GLOBAL: LazyLock<LeakedCell<Registry>> = LazyLock::new(|| {
    let registry = Registry::new();
    CURRENT.store(registry.id, Ordering::Release);
    LeakedCell::new(registry)
});

/// The id of the global registry, 0 until it exists: what a call site compares with the
/// registry it resolved its dependency in, without touching the registry itself.
static CURRENT: AtomicU64 = AtomicU64::new(0);

/// See [`CURRENT`].
#[inline(always)]
pub(crate) fn current_registry_id() -> u64 {
    CURRENT.load(Ordering::Acquire)
}

/// The global registry, used by [`manager()`](crate::manager) and the macros.
#[inline]
pub fn registry() -> &'static Registry {
    GLOBAL.get()
}

/// The health of every dependency of the global registry: each with its state, an
/// overall `Up | Degraded | Down`, and the alerts of [`HealthReport`](crate::HealthReport).
pub fn health() -> crate::observe::health::HealthReport {
    registry().health()
}

/// Replaces the global registry (for tests): later calls through the global manager and
/// the macros resolve names in `registry`. The previous registry stays valid for calls
/// already running.
pub fn set_registry(registry: Registry) -> &'static Registry {
    let id = registry.id;
    let registry = GLOBAL.set(registry);
    CURRENT.store(id, Ordering::Release);
    registry
}

#[cfg(all(test, not(resilience_loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_global_registry_can_be_swapped() {
        let before = registry();
        before.resolve("swap_test", ResilienceStrategy::Cache);
        assert!(registry().get("swap_test").is_some());
        let fresh = set_registry(Registry::new());
        assert!(std::ptr::eq(fresh, registry()));
        assert!(registry().get("swap_test").is_none(), "a fresh registry knows no names");
        // The per-thread cache must not hand out the old registry's dependency.
        let d = registry().resolve("swap_test", ResilienceStrategy::Database);
        assert_eq!(d.kind(), DependencyKind::Strategy(ResilienceStrategy::Database));
        assert!(before.get("swap_test").is_some(), "the old registry stays valid");

        // A macro's call site keeps its dependency, but not across registries.
        static SITE: crate::macro_support::CallSite = crate::macro_support::CallSite::new(
            "swap_site",
            DependencyKind::Strategy(ResilienceStrategy::Cache),
            ConfigOverrides::EMPTY,
        );
        let guard = crate::reclaim::enter();
        let first = SITE.settings(&guard).pipeline.id();
        assert_eq!(first, registry().get("swap_site").expect("created").pipeline().id());
        assert_eq!(SITE.settings(&guard).pipeline.id(), first, "kept");
        set_registry(Registry::new());
        let second = SITE.settings(&guard).pipeline.id();
        assert_ne!(first, second, "resolved again in the new registry");
        assert_eq!(second, registry().get("swap_site").expect("created").pipeline().id());
    }
}
