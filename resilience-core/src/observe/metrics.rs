//! The metric handles of each policy, resolved once per policy instance.

use metrics::{counter, gauge, Counter, Gauge};

use super::aggregate::Counters;
use crate::circuit_breaker::CircuitState;

pub(crate) struct BreakerMetrics {
    /// By kind, as in `BREAKER_CALLS`: counted on every call.
    calls: Counters<4>,
    pub(crate) failure_rate: Gauge,
    state: [Gauge; 5],
    /// By `from` and `to`, in the order of `CircuitState::ALL`.
    transitions: [[Counter; 5]; 5],
}

const BREAKER_CALLS: [&str; 4] = ["successful", "failed", "ignored", "not_permitted"];

impl BreakerMetrics {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            calls: Counters::new(BREAKER_CALLS.map(
                |kind| counter!("resilience_circuitbreaker_calls_total", "name" => name.to_owned(), "kind" => kind),
            )),
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

    /// Counts a call that succeeded.
    #[inline]
    pub(crate) fn successful(&self) {
        self.calls.increment(0, 1);
    }

    /// Counts a call that failed.
    #[inline]
    pub(crate) fn failed(&self) {
        self.calls.increment(1, 1);
    }

    /// Counts a call whose outcome the breaker ignored.
    #[inline]
    pub(crate) fn ignored(&self) {
        self.calls.increment(2, 1);
    }

    /// Counts a call the breaker refused.
    #[inline]
    pub(crate) fn not_permitted(&self) {
        self.calls.increment(3, 1);
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

/// A rate limiter's calls: permitted, then rejected.
pub(crate) struct RateLimiterMetrics(Counters<2>);

impl RateLimiterMetrics {
    pub(crate) fn new(name: &str) -> Self {
        Self(Counters::new(
            ["permitted", "rejected"]
                .map(|kind| counter!("resilience_ratelimiter_calls_total", "name" => name.to_owned(), "kind" => kind)),
        ))
    }

    /// Counts a call, permitted or not.
    #[inline]
    pub(crate) fn call(&self, permitted: bool) {
        self.0.increment(usize::from(!permitted), 1);
    }
}

/// Retry and time-limiter counters of a pipeline, by kind as in `RETRY_CALLS`, then
/// `TIME_CALLS`.
pub(crate) struct PipelineMetrics(Counters<7>);

const RETRY_CALLS: [&str; 4] =
    ["successful_without_retry", "successful_with_retry", "failed_without_retry", "failed_with_retry"];
const TIME_CALLS: [&str; 3] = ["successful", "failed", "timeout"];

/// How a call through a pipeline's time limiter ended.
#[derive(Clone, Copy)]
pub(crate) enum TimeOutcome {
    Successful = 4,
    Failed = 5,
    Timeout = 6,
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
        let kind = match (attempts, ok) {
            (None, _) => return,
            (Some(1), true) => 0,
            (Some(_), true) => 1,
            (Some(1), false) => 2,
            (Some(_), false) => 3,
        };
        self.0.increment(kind, 1);
    }

    /// A call through the time limiter ended.
    #[inline]
    pub(crate) fn timed(&self, outcome: TimeOutcome) {
        self.0.increment(outcome as usize, 1);
    }

    pub(crate) fn new(name: &str) -> Self {
        Self(Counters::new(std::array::from_fn(|i| match RETRY_CALLS.get(i) {
            Some(&kind) => counter!("resilience_retry_calls_total", "name" => name.to_owned(), "kind" => kind),
            None => {
                counter!("resilience_timelimiter_calls_total", "name" => name.to_owned(), "kind" => TIME_CALLS[i - RETRY_CALLS.len()])
            }
        })))
    }
}
