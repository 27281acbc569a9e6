//! What every kind of pool keeps alike: its counts of operations and errors, what its
//! health checks found, and its metric handles.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram, Counter, Gauge};
use resilience_core::aggregate::DurationHistogram;
#[cfg(any(feature = "redis", feature = "postgres"))]
use resilience_core::{
    registry, Dependency, DependencyKind, DependencyType, SemaphoreBulkhead, SemaphoreBulkheadConfig,
};
use resilience_core::{HealthStatus, PoolHealth};

#[cfg(any(feature = "redis", feature = "postgres"))]
use super::PoolError;

#[cfg(any(feature = "redis", feature = "postgres"))]
/// What the Redis and PostgreSQL pools share: their slots (`max_connections`, waited
/// for up to `max_wait`), their dependency and their state.
pub(super) struct PoolCore {
    pub(super) slots: SemaphoreBulkhead,
    pub(super) dependency: &'static Dependency,
    pub(super) state: PoolState,
    max: usize,
}

#[cfg(any(feature = "redis", feature = "postgres"))]
impl PoolCore {
    /// The core of pool `name` of `kind`; its dependency (created with
    /// `dependency_type`'s preset, else `default_type`'s, if nothing registered it) is
    /// looked up, never replaced.
    pub(super) fn new(
        name: &str,
        (kind, default_type): (&'static str, DependencyType),
        dependency_type: Option<DependencyType>,
        (max, max_wait): (usize, Duration),
        health_check_interval: Duration,
    ) -> Result<Self, PoolError> {
        let config_error = |message: String| PoolError::Config { pool: name.to_owned(), message };
        let max_concurrent = std::num::NonZeroUsize::new(max)
            .ok_or_else(|| config_error(String::from("`max_connections` must be at least 1")))?;
        let slots = SemaphoreBulkhead::new(name, SemaphoreBulkheadConfig { max_concurrent, max_wait })
            .map_err(|e| config_error(e.to_string()))?;
        let kind_of = DependencyKind::Type(dependency_type.unwrap_or(default_type));
        let dependency = registry().resolve_as(name, kind_of, &Default::default());
        let state = PoolState::new(name, kind, max, health_check_interval);
        Ok(Self { slots, dependency, state, max })
    }

    /// Slots in use now.
    pub(super) fn in_use(&self) -> usize {
        self.max.saturating_sub(self.slots.available())
    }
}

/// A pool's metric handles (the pool metrics of the crate docs).
pub(super) struct PoolMetrics {
    pub(super) active: Gauge,
    pub(super) max: Gauge,
    pub(super) acquire: DurationHistogram,
    pub(super) errors: Counter,
    pub(super) healthy: Gauge,
}

impl PoolMetrics {
    fn new(pool: &str) -> Self {
        let m = Self {
            active: gauge!("resilience_pool_connections", "pool" => pool.to_owned(), "state" => "active"),
            max: gauge!("resilience_pool_max_connections", "pool" => pool.to_owned()),
            acquire: DurationHistogram::new(
                histogram!("resilience_pool_acquire_duration_seconds", "pool" => pool.to_owned()),
            ),
            errors: counter!("resilience_pool_errors_total", "pool" => pool.to_owned()),
            healthy: gauge!("resilience_pool_healthy", "pool" => pool.to_owned()),
        };
        m.healthy.set(1.0);
        m
    }
}

/// A counter that threads add to without contending: one cache line per stripe, each
/// thread on its own stripe (of eight), read as the sum.
#[derive(Default)]
struct Striped([Stripe; 8]);

#[derive(Default)]
#[repr(align(128))]
struct Stripe(AtomicU64);

impl Striped {
    fn add(&self) {
        use std::sync::atomic::AtomicUsize;
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static STRIPE: usize = NEXT.fetch_add(1, Relaxed) % 8;
        }
        let i = STRIPE.with(|s| *s);
        self.0[i].0.fetch_add(1, Relaxed);
    }

    fn sum(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Relaxed)).sum()
    }
}

/// What the health checks found.
#[derive(Debug, Default)]
struct CheckState {
    healthy: Option<bool>,
    consecutive_failures: u32,
    checks: u64,
    last_error: Option<String>,
    /// When the pool was last checked.
    last: Option<Instant>,
}

/// The state every pool keeps, whatever it pools.
pub(super) struct PoolState {
    pub(super) name: Arc<str>,
    kind: &'static str,
    max: usize,
    health_check_interval: Duration,
    operations: Striped,
    errors: AtomicU64,
    /// Operations and errors when the health checker last looked, for its error rate.
    seen: Mutex<(u64, u64)>,
    check: Mutex<CheckState>,
    pub(super) metrics: PoolMetrics,
}

impl PoolState {
    /// The state of pool `name` of `kind` (`http`, `redis`, `postgres`), of at most `max`
    /// connections, checked every `health_check_interval`.
    pub(super) fn new(name: &str, kind: &'static str, max: usize, health_check_interval: Duration) -> Self {
        let metrics = PoolMetrics::new(name);
        metrics.max.set(max as f64);
        Self {
            name: Arc::from(name),
            kind,
            max,
            health_check_interval,
            operations: Striped::default(),
            errors: AtomicU64::new(0),
            seen: Mutex::new((0, 0)),
            check: Mutex::new(CheckState::default()),
            metrics,
        }
    }

    /// Counts an operation that got its connection after `waited` (`None`: no wait).
    pub(super) fn started(&self, waited: Option<Instant>) {
        self.metrics.acquire.record_with(|| waited.map_or(Duration::ZERO, |at| at.elapsed()));
        self.operations.add();
    }

    /// Counts a failed operation.
    pub(super) fn failed(&self) {
        self.errors.fetch_add(1, Relaxed);
        self.metrics.errors.increment(1);
    }

    /// Whether the pool is due for a check (its `health_check_interval` has passed);
    /// marks it checked.
    pub(super) fn due(&self) -> bool {
        let mut check = self.check.lock().unwrap_or_else(|p| p.into_inner());
        if check.last.is_some_and(|at| at.elapsed() < self.health_check_interval) {
            return false;
        }
        check.last = Some(Instant::now());
        true
    }

    /// Records a health check's outcome (`None`: the pool has nothing to check);
    /// `threshold` failures in a row, or an error rate above `error_rate` since the
    /// previous check, make the pool unhealthy.
    pub(super) fn record_check(&self, outcome: Option<Result<(), String>>, threshold: u32, error_rate: f64) {
        let rate = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let (operations, errors) = (self.operations.sum(), self.errors.load(Relaxed));
            let (o, e) = (operations.saturating_sub(seen.0), errors.saturating_sub(seen.1));
            *seen = (operations, errors);
            (o > 0).then(|| e as f64 / o as f64)
        };
        let mut check = self.check.lock().unwrap_or_else(|p| p.into_inner());
        check.checks += 1;
        match outcome {
            Some(Ok(())) => {
                check.consecutive_failures = 0;
                check.last_error = None;
            }
            Some(Err(error)) => {
                check.consecutive_failures += 1;
                check.last_error = Some(error);
            }
            None => {}
        }
        let failing = check.consecutive_failures >= threshold || rate.is_some_and(|r| r > error_rate);
        check.healthy = Some(!failing);
        self.metrics.healthy.set(if failing { 0.0 } else { 1.0 });
    }

    /// What the health checks found so far: healthy, failures in a row, checks, the
    /// last error.
    pub(super) fn check_state(&self) -> (Option<bool>, u32, u64, Option<String>) {
        let c = self.check.lock().unwrap_or_else(|p| p.into_inner());
        (c.healthy, c.consecutive_failures, c.checks, c.last_error.clone())
    }

    /// Sets the gauge of connections in use.
    pub(super) fn refresh_gauges(&self, in_use: usize) {
        self.metrics.active.set(in_use as f64);
    }

    /// The pool's entry in [`health()`](crate::health), with `in_use` connections.
    pub(super) fn health(&self, in_use: usize) -> PoolHealth {
        let (healthy, consecutive_failures, _, _) = self.check_state();
        let (operations, errors) = (self.operations.sum(), self.errors.load(Relaxed));
        PoolHealth {
            name: self.name.to_string(),
            kind: self.kind,
            status: HealthStatus::Up,
            in_use,
            max: self.max,
            healthy,
            consecutive_failures,
            error_rate: (operations > 0).then(|| errors as f64 / operations as f64),
        }
    }
}
