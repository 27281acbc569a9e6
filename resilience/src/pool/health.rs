//! Background health checks of the pools.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::PoolManager;

/// How a [`PoolHealthChecker`] checks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthCheckConfig {
    /// Time between two rounds of checks. Default 60 s.
    pub check_interval: Duration,
    /// A pool whose operations failed more often than this fraction since the previous
    /// round is unhealthy. Default 0.1.
    pub error_rate_threshold: f64,
    /// A pool whose health check failed this many times in a row is unhealthy. Default 3.
    pub consecutive_failures_threshold: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self { check_interval: Duration::from_secs(60), error_rate_threshold: 0.1, consecutive_failures_threshold: 3 }
    }
}

/// One pool as the checker last saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolCheck {
    /// The pool.
    pub name: String,
    /// What the last round decided; `None` before the first.
    pub healthy: Option<bool>,
    /// Checks failed in a row.
    pub consecutive_failures: u32,
    /// Rounds that looked at this pool.
    pub checks: u64,
    /// Why the last failed check failed.
    pub last_error: Option<String>,
}

/// Checks every pool of a [`PoolManager`] in the background: an HTTP pool asks for its
/// `health_check_path` under its `base_url` (outside its policies, so that a check still
/// reaches the server while the breaker is open) and looks at its error rate. What it
/// finds is in [`summary`](Self::summary), in [`health()`](crate::health) (pool entries
/// and the "failed health checks" alert) and in `resilience_pool_healthy{pool}`.
#[derive(Debug, Clone)]
pub struct PoolHealthChecker {
    config: HealthCheckConfig,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
    manager: Arc<Mutex<Option<&'static PoolManager>>>,
}

impl PoolHealthChecker {
    /// A checker that checks nothing until [`start`](Self::start)ed.
    pub fn new(config: HealthCheckConfig) -> Self {
        Self { config, task: Arc::default(), manager: Arc::default() }
    }

    /// Checks `manager`'s pools (those there now and those added later) every
    /// `check_interval`, on the current tokio runtime, until [`stop`](Self::stop) or
    /// until the runtime shuts down. A second `start` replaces the first.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as `tokio::spawn` does).
    pub fn start(&self, manager: &'static PoolManager) {
        let config = self.config;
        *self.manager.lock().unwrap_or_else(|p| p.into_inner()) = Some(manager);
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(config.check_interval.max(Duration::from_millis(1)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                check_all(manager, &config).await;
            }
        });
        if let Some(previous) = self.task.lock().unwrap_or_else(|p| p.into_inner()).replace(task) {
            previous.abort();
        }
    }

    /// Stops the background checks.
    pub fn stop(&self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }

    /// Runs one round of checks now.
    pub async fn check_now(&self, manager: &'static PoolManager) {
        *self.manager.lock().unwrap_or_else(|p| p.into_inner()) = Some(manager);
        check_all(manager, &self.config).await;
    }

    /// Every pool as the checks last saw it, by name.
    pub fn summary(&self) -> Vec<PoolCheck> {
        let Some(manager) = *self.manager.lock().unwrap_or_else(|p| p.into_inner()) else { return Vec::new() };
        manager
            .read()
            .iter()
            .map(|(name, pool)| {
                let (healthy, consecutive_failures, checks, last_error) = pool.state().check_state();
                PoolCheck { name: name.clone(), healthy, consecutive_failures, checks, last_error }
            })
            .collect()
    }
}

async fn check_all(manager: &PoolManager, config: &HealthCheckConfig) {
    manager.refresh_gauges();
    for pool in manager.pools() {
        let state = pool.state();
        if state.due() {
            let outcome = pool.check().await;
            pool.state().record_check(
                outcome,
                config.consecutive_failures_threshold.max(1),
                config.error_rate_threshold,
            );
        }
    }
}
