//! The metric handles of each policy, resolved once per policy instance.

use metrics::{counter, gauge, Counter, Gauge};

use crate::circuit_breaker::CircuitState;

pub(crate) struct BreakerMetrics {
    pub(crate) successful: Counter,
    pub(crate) failed: Counter,
    pub(crate) ignored: Counter,
    pub(crate) not_permitted: Counter,
    pub(crate) failure_rate: Gauge,
    state: [Gauge; 5],
    /// By `from` and `to`, in the order of `CircuitState::ALL`.
    transitions: [[Counter; 5]; 5],
}

impl BreakerMetrics {
    pub(crate) fn new(name: &str) -> Self {
        let calls = |kind: &'static str| counter!("resilience_circuitbreaker_calls_total", "name" => name.to_owned(), "kind" => kind);
        Self {
            successful: calls("successful"),
            failed: calls("failed"),
            ignored: calls("ignored"),
            not_permitted: calls("not_permitted"),
            failure_rate: gauge!("resilience_circuitbreaker_failure_rate", "name" => name.to_owned()),
            state: CircuitState::ALL
                .map(|s| gauge!("resilience_circuitbreaker_state", "name" => name.to_owned(), "state" => s.as_str())),
            transitions: CircuitState::ALL.map(|from| {
                CircuitState::ALL.map(|to| {
                    counter!(
                        "resilience_circuitbreaker_transitions_total",
                        "name" => name.to_owned(), "from" => from.as_str(), "to" => to.as_str()
                    )
                })
            }),
        }
    }

    /// One state gauge at 1, the others at 0.
    pub(crate) fn set_state(&self, state: CircuitState) {
        for (gauge, s) in self.state.iter().zip(CircuitState::ALL) {
            gauge.set(if s == state { 1.0 } else { 0.0 });
        }
    }

    /// Counts a transition and moves the state gauges.
    pub(crate) fn transition(&self, from: CircuitState, to: CircuitState) {
        let index = |s: CircuitState| CircuitState::ALL.iter().position(|x| *x == s).unwrap_or(0);
        self.transitions[index(from)][index(to)].increment(1);
        self.set_state(to);
    }
}

pub(crate) struct BulkheadMetrics {
    pub(crate) available: Gauge,
    pub(crate) max_allowed: Gauge,
    pub(crate) rejected: Counter,
}

impl BulkheadMetrics {
    pub(crate) fn new(name: &str, max: usize) -> Self {
        let m = Self {
            available: gauge!("resilience_bulkhead_available_concurrent_calls", "name" => name.to_owned()),
            max_allowed: gauge!("resilience_bulkhead_max_allowed_concurrent_calls", "name" => name.to_owned()),
            rejected: counter!("resilience_bulkhead_rejected_total", "name" => name.to_owned()),
        };
        m.available.set(max as f64);
        m.max_allowed.set(max as f64);
        m
    }
}

pub(crate) struct RateLimiterMetrics {
    pub(crate) permitted: Counter,
    pub(crate) rejected: Counter,
}

impl RateLimiterMetrics {
    pub(crate) fn new(name: &str) -> Self {
        let calls = |kind: &'static str| counter!("resilience_ratelimiter_calls_total", "name" => name.to_owned(), "kind" => kind);
        Self { permitted: calls("permitted"), rejected: calls("rejected") }
    }
}

/// Retry and time-limiter counters of a pipeline.
pub(crate) struct PipelineMetrics {
    pub(crate) successful_without_retry: Counter,
    pub(crate) successful_with_retry: Counter,
    pub(crate) failed_without_retry: Counter,
    pub(crate) failed_with_retry: Counter,
    pub(crate) time_successful: Counter,
    pub(crate) time_failed: Counter,
    pub(crate) time_timeout: Counter,
}

impl std::fmt::Debug for PipelineMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineMetrics").finish_non_exhaustive()
    }
}

impl PipelineMetrics {
    /// A call ended; `attempts` is `None` when the pipeline does not retry.
    #[inline]
    pub(crate) fn finished(&self, attempts: Option<u32>, ok: bool) {
        match (attempts, ok) {
            (None, _) => {}
            (Some(1), true) => self.successful_without_retry.increment(1),
            (Some(_), true) => self.successful_with_retry.increment(1),
            (Some(1), false) => self.failed_without_retry.increment(1),
            (Some(_), false) => self.failed_with_retry.increment(1),
        }
    }

    pub(crate) fn new(name: &str) -> Self {
        let retry =
            |kind: &'static str| counter!("resilience_retry_calls_total", "name" => name.to_owned(), "kind" => kind);
        let time = |kind: &'static str| counter!("resilience_timelimiter_calls_total", "name" => name.to_owned(), "kind" => kind);
        Self {
            successful_without_retry: retry("successful_without_retry"),
            successful_with_retry: retry("successful_with_retry"),
            failed_without_retry: retry("failed_without_retry"),
            failed_with_retry: retry("failed_with_retry"),
            time_successful: time("successful"),
            time_failed: time("failed"),
            time_timeout: time("timeout"),
        }
    }
}
