//! The health report: every dependency's state and the alerts of the seed notes.

use std::time::Duration;

use serde::Serialize;

use crate::bulkhead::Bulkhead;
use crate::circuit_breaker::CircuitState;
use crate::registry::Registry;
use crate::shared::SharedStateHealth;

/// Overall or per-dependency health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthStatus {
    /// Working normally.
    Up,
    /// Working, with something to look at (a half-open breaker, an alert).
    Degraded,
    /// Not working: the breaker is open.
    Down,
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Act now.
    Critical,
    /// Look soon.
    Warning,
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AlertKind {
    /// The breaker has been open longer than 5 minutes (critical).
    BreakerOpen,
    /// The failure rate in the breaker's window is above 10 % (critical) or 5 % (warning),
    /// once the window holds at least `minimum_calls` calls.
    ErrorRate,
    /// The bulkhead is more than 95 % (critical) or 80 % (warning) in use.
    BulkheadUtilization,
    /// The 95th percentile of call durations is above 5 s (critical) or 2 s (warning).
    LatencyP95,
    /// A connection pool is more than 95 % (critical) or 80 % (warning) in use.
    PoolUtilization,
    /// A pool's health checks failed (warning).
    HealthCheckFailed,
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// How urgent.
    pub severity: Severity,
    /// About what.
    pub kind: AlertKind,
    /// The dependency.
    pub dependency: String,
    /// A sentence for people.
    pub message: String,
}

/// One dependency in a [`HealthReport`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DependencyHealth {
    /// Its name.
    pub name: String,
    /// Its health.
    pub status: HealthStatus,
    /// Its breaker's state, if it has a breaker.
    pub circuit_state: Option<CircuitState>,
    /// Seconds its breaker has been open.
    pub open_seconds: Option<f64>,
    /// Failed calls in the breaker's window, in percent.
    pub error_rate: Option<f64>,
    /// Calls in the breaker's window.
    pub window_calls: Option<u64>,
    /// The 95th percentile of the durations of the calls sampled since the previous
    /// report (calls that did not finish on their first poll, one in 16 per thread), as
    /// an upper bound in seconds.
    pub p95_seconds: Option<f64>,
    /// Bulkhead slots in use.
    pub bulkhead_in_use: Option<usize>,
    /// The bulkhead's limit (an adaptive bulkhead's learned limit).
    pub bulkhead_max_concurrent: Option<usize>,
    /// An adaptive bulkhead's limit right now (lower than the learned one while a
    /// baseline probe runs).
    pub adaptive_live_limit: Option<usize>,
    /// An adaptive bulkhead's estimate of the unloaded round trip, in seconds.
    pub adaptive_baseline_seconds: Option<f64>,
    /// Retries the dependency's retry budget allows now.
    pub retry_budget_remaining: Option<u64>,
    /// Its breaker is shared with the other instances (`circuit_breaker(shared = true)`).
    pub shared_circuit_breaker: bool,
    /// Its rate limit is shared with the other instances (`rate_limit(shared = true)`).
    pub shared_rate_limit: bool,
}

/// One connection pool in a [`HealthReport`], as its integration reports it (see
/// [`register_pool_reporter`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolHealth {
    /// The pool's name (also the name of its dependency).
    pub name: String,
    /// What it pools: `http`, `redis`, `postgres`.
    pub kind: &'static str,
    /// Its health: `Down` while its health checks fail, `Degraded` with an alert.
    pub status: HealthStatus,
    /// Connections in use now.
    pub in_use: usize,
    /// The most connections it may have in use.
    pub max: usize,
    /// What its last health checks said: `None` before any ran.
    pub healthy: Option<bool>,
    /// Health checks failed in a row.
    pub consecutive_failures: u32,
    /// Failed operations among the recent ones, as a fraction.
    pub error_rate: Option<f64>,
}

/// What reports pools to [`health()`](crate::health): the pool integrations of the
/// `resilience` crate, or any other.
pub trait PoolReporter: Send + Sync + 'static {
    /// Every pool it knows, with `status` left `Up` (the report decides it).
    fn pools(&self) -> Vec<PoolHealth>;
}

static POOL_REPORTERS: std::sync::Mutex<Vec<&'static dyn PoolReporter>> = std::sync::Mutex::new(Vec::new());

/// Adds `reporter`'s pools to every later [`HealthReport`], with the seed notes' pool
/// alerts: more than 95 % (critical) or 80 % (warning) of connections in use, failed
/// health checks (warning).
pub fn register_pool_reporter(reporter: &'static dyn PoolReporter) {
    POOL_REPORTERS.lock().unwrap_or_else(|p| p.into_inner()).push(reporter);
}

/// Every dependency's health, every pool's, an overall status and the alerts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    /// `Up` when every dependency and pool is up, `Down` when every one is down, else
    /// `Degraded` (`Up` with none).
    pub status: HealthStatus,
    /// Every dependency, by name.
    pub dependencies: Vec<DependencyHealth>,
    /// Every pool, by name.
    pub pools: Vec<PoolHealth>,
    /// Alerts, critical first.
    pub alerts: Vec<Alert>,
    /// Whether shared state across instances is in force: `None` when none is installed
    /// (see [`shared`](crate::shared)); while `Degraded` the overall status is at best
    /// `Degraded`.
    pub shared_state: Option<SharedStateHealth>,
}

impl HealthReport {
    /// The report as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

const OPEN_TOO_LONG: Duration = Duration::from_secs(5 * 60);

/// Critical above `critical`, warning above `warning`.
fn level(value: f64, critical: f64, warning: f64) -> Option<Severity> {
    if value > critical {
        Some(Severity::Critical)
    } else if value > warning {
        Some(Severity::Warning)
    } else {
        None
    }
}

/// Builds the report for every dependency of `registry`.
pub(crate) fn report(registry: &Registry) -> HealthReport {
    let mut dependencies = Vec::new();
    let mut alerts = Vec::new();
    for name in registry.names() {
        let Some(dependency) = registry.get(&name) else { continue };
        let pipeline = dependency.pipeline();
        let mut alert = |severity, kind, message: String| {
            alerts.push(Alert { severity, kind, dependency: name.clone(), message });
        };
        let mut health = DependencyHealth {
            name: name.clone(),
            status: HealthStatus::Up,
            circuit_state: None,
            open_seconds: None,
            error_rate: None,
            window_calls: None,
            p95_seconds: None,
            bulkhead_in_use: None,
            bulkhead_max_concurrent: None,
            adaptive_live_limit: None,
            adaptive_baseline_seconds: None,
            retry_budget_remaining: None,
            shared_circuit_breaker: pipeline.circuit_breaker().is_some_and(|b| b.is_shared()),
            shared_rate_limit: pipeline.rate_limiter().is_some_and(|r| r.config().shared),
        };
        if let Some(breaker) = pipeline.circuit_breaker() {
            let m = breaker.metrics();
            health.circuit_state = Some(m.state);
            health.window_calls = Some(m.calls);
            health.error_rate = Some(m.failure_rate);
            health.status = match m.state {
                CircuitState::Open | CircuitState::ForcedOpen => HealthStatus::Down,
                CircuitState::HalfOpen => HealthStatus::Degraded,
                CircuitState::Closed | CircuitState::Disabled => HealthStatus::Up,
            };
            if let Some(open) = breaker.open_for() {
                health.open_seconds = Some(open.as_secs_f64());
                if open > OPEN_TOO_LONG {
                    alert(
                        Severity::Critical,
                        AlertKind::BreakerOpen,
                        format!("circuit breaker open for {}s", open.as_secs()),
                    );
                }
            }
            if m.calls > 0 && m.calls >= u64::from(breaker.config().minimum_calls.get()) {
                if let Some(severity) = level(m.failure_rate, 10.0, 5.0) {
                    alert(
                        severity,
                        AlertKind::ErrorRate,
                        format!("{:.1} % of the last {} calls failed", m.failure_rate, m.calls),
                    );
                }
            }
        }
        if let Some(p95) = pipeline.latency().p95_since_last_report() {
            health.p95_seconds = Some(p95.as_secs_f64());
            if let Some(severity) = level(p95.as_secs_f64(), 5.0, 2.0) {
                alert(severity, AlertKind::LatencyP95, format!("p95 latency up to {:.1}s", p95.as_secs_f64()));
            }
        }
        if let Some(bulkhead) = pipeline.bulkhead() {
            let max = bulkhead.max_concurrent();
            let in_use = bulkhead.in_use();
            health.bulkhead_in_use = Some(in_use);
            health.bulkhead_max_concurrent = Some(max);
            if let Bulkhead::Adaptive(a) = bulkhead {
                let state = a.state();
                health.adaptive_live_limit = Some(state.live_limit);
                health.adaptive_baseline_seconds = state.baseline.map(|b| b.as_secs_f64());
            }
            let used = in_use as f64 * 100.0 / max.max(1) as f64;
            if let Some(severity) = level(used, 95.0, 80.0) {
                alert(
                    severity,
                    AlertKind::BulkheadUtilization,
                    format!("bulkhead {used:.0} % in use ({in_use}/{max})"),
                );
            }
        }
        health.retry_budget_remaining = pipeline.retry_budget().map(crate::retry::RetryBudget::remaining);
        if health.status == HealthStatus::Up && alerts.iter().any(|a| a.dependency == name) {
            health.status = HealthStatus::Degraded;
        }
        dependencies.push(health);
    }
    let reporters: Vec<&'static dyn PoolReporter> = POOL_REPORTERS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut pools: Vec<PoolHealth> = reporters.iter().flat_map(|r| r.pools()).collect();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    for pool in &mut pools {
        let name = pool.name.clone();
        let used = pool.in_use as f64 * 100.0 / pool.max.max(1) as f64;
        let mut alerted = false;
        if let Some(severity) = level(used, 95.0, 80.0) {
            let message = format!("pool {used:.0} % in use ({}/{})", pool.in_use, pool.max);
            alerts.push(Alert { severity, kind: AlertKind::PoolUtilization, dependency: name.clone(), message });
            alerted = true;
        }
        if pool.healthy == Some(false) {
            let message = format!("health checks failed {} times in a row", pool.consecutive_failures);
            alerts.push(Alert {
                severity: Severity::Warning,
                kind: AlertKind::HealthCheckFailed,
                dependency: name,
                message,
            });
        }
        pool.status = match (pool.healthy, alerted) {
            (Some(false), _) => HealthStatus::Down,
            (_, true) => HealthStatus::Degraded,
            _ => HealthStatus::Up,
        };
    }
    alerts.sort_by_key(|a| (a.severity != Severity::Critical, a.dependency.clone()));
    let statuses: Vec<HealthStatus> =
        dependencies.iter().map(|d| d.status).chain(pools.iter().map(|p| p.status)).collect();
    let shared_state = crate::shared::status();
    let status = if shared_state == Some(SharedStateHealth::Degraded) && statuses.iter().all(|s| *s == HealthStatus::Up)
    {
        HealthStatus::Degraded
    } else if statuses.iter().all(|s| *s == HealthStatus::Up) {
        HealthStatus::Up
    } else if statuses.iter().all(|s| *s == HealthStatus::Down) {
        HealthStatus::Down
    } else {
        HealthStatus::Degraded
    };
    HealthReport { status, dependencies, pools, alerts, shared_state }
}
