//! The breaker checked against a small reference model: random configurations and
//! random sequences of successes, failures, slow calls, ignored and cancelled calls,
//! resets and clock advances. After every step the breaker and the model must agree on
//! whether the call was admitted, on the state, and on the window's counts.

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;
use resilience::{CircuitBreaker, CircuitBreakerConfig, CircuitState, SlidingWindow};

use crate::support::nz;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Success,
    Failure,
    Ignored,
    Cancelled,
}

#[derive(Debug, Clone)]
enum Op {
    /// A call lasting `ms` milliseconds of tokio time.
    Call(Outcome, u64),
    Advance(u64),
    Reset,
}

const SLOW_MS: u64 = 50;
const BUCKETS: u64 = 16;

#[derive(Debug, Clone, Copy, PartialEq)]
enum ModelState {
    Closed,
    Open { since: u64 },
    HalfOpen { issued: u32, successes: u32 },
}

/// The breaker as its documentation describes it, with none of the implementation's tricks.
struct Model {
    config: CircuitBreakerConfig,
    state: ModelState,
    /// (end time in ns, failed, slow) of the calls since the window was last cleared.
    calls: VecDeque<(u64, bool, bool)>,
}

impl Model {
    fn window(&self, now: u64) -> (u64, u64, u64) {
        let in_window: Vec<_> = match self.config.window {
            SlidingWindow::Count { size } => self.calls.iter().rev().take(size.get() as usize).collect(),
            SlidingWindow::Time { duration } => {
                let width = (duration.as_nanos() as u64 / BUCKETS).max(1);
                let newest = now / width;
                self.calls.iter().filter(|(t, _, _)| t / width + BUCKETS > newest).collect()
            }
        };
        let failures = in_window.iter().filter(|c| c.1).count() as u64;
        let slow = in_window.iter().filter(|c| c.2).count() as u64;
        (in_window.len() as u64, failures, slow)
    }

    fn trips(&self, now: u64) -> bool {
        let (calls, failures, slow) = self.window(now);
        let c = &self.config;
        if c.failure_threshold.is_some_and(|t| failures >= u64::from(t.get())) {
            return true;
        }
        if calls == 0 || calls < u64::from(c.minimum_calls.get()) {
            return false;
        }
        let reached = |n: u64, rate: f64| n as f64 * 100.0 >= rate * calls as f64;
        c.failure_rate.is_some_and(|r| reached(failures, r))
            || c.slow_call_duration.is_some() && reached(slow, c.slow_call_rate.unwrap_or(100.0))
    }

    /// Whether a call starting at `now` is admitted.
    fn admit(&mut self, now: u64) -> bool {
        if let ModelState::Open { since } = self.state {
            if now - since >= self.config.recovery_timeout.as_nanos() as u64 {
                self.state = ModelState::HalfOpen { issued: 0, successes: 0 };
            }
        }
        match &mut self.state {
            ModelState::Closed => true,
            ModelState::Open { .. } => false,
            ModelState::HalfOpen { issued, .. } => {
                let max = self.config.half_open_max_calls.map_or(self.config.success_threshold.get(), |m| m.get());
                if *issued < max {
                    *issued += 1;
                    true
                } else {
                    false
                }
            }
        }
    }

    fn finish(&mut self, now: u64, outcome: Outcome, slow: bool) {
        let slow = slow && self.config.slow_call_duration.is_some();
        match &mut self.state {
            ModelState::Closed => {
                if matches!(outcome, Outcome::Success | Outcome::Failure) {
                    self.calls.push_back((now, outcome == Outcome::Failure, slow));
                    if self.trips(now) {
                        self.state = ModelState::Open { since: now };
                        self.calls.clear();
                    }
                }
            }
            ModelState::HalfOpen { issued, successes } => match outcome {
                Outcome::Ignored | Outcome::Cancelled => *issued -= 1,
                Outcome::Failure => self.state = ModelState::Open { since: now },
                Outcome::Success if slow => self.state = ModelState::Open { since: now },
                Outcome::Success => {
                    *successes += 1;
                    if *successes >= self.config.success_threshold.get() {
                        self.state = ModelState::Closed;
                        self.calls.clear();
                    }
                }
            },
            ModelState::Open { .. } => unreachable!("an admitted call in the open state"),
        }
    }

    fn reset(&mut self) {
        self.state = ModelState::Closed;
        self.calls.clear();
    }

    fn public_state(&self) -> CircuitState {
        match self.state {
            ModelState::Closed => CircuitState::Closed,
            ModelState::Open { .. } => CircuitState::Open,
            ModelState::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }
}

fn config_strategy() -> impl Strategy<Value = CircuitBreakerConfig> {
    (
        prop_oneof![
            (1u32..12).prop_map(|n| SlidingWindow::Count { size: nz(n) }),
            (1u64..4).prop_map(|s| { SlidingWindow::Time { duration: Duration::from_millis(s * 800) } })
        ],
        proptest::option::of(1u32..8),
        proptest::option::of(20u32..=100),
        1u32..8,
        proptest::option::of(proptest::option::of(30u32..=100)),
        100u64..1500,
        1u32..4,
        proptest::option::of(0u32..3),
    )
        .prop_map(|(window, threshold, rate, min_calls, slow, recovery_ms, successes, extra_trials)| {
            let size = match window {
                SlidingWindow::Count { size } => size.get(),
                SlidingWindow::Time { .. } => u32::MAX,
            };
            CircuitBreakerConfig {
                enabled: true,
                failure_threshold: threshold.map(|t| nz(t.min(size))),
                failure_rate: rate.map(f64::from),
                minimum_calls: nz(min_calls.min(size)),
                window,
                slow_call_duration: slow.map(|_| Duration::from_millis(SLOW_MS)),
                slow_call_rate: slow.flatten().map(f64::from),
                recovery_timeout: Duration::from_millis(recovery_ms),
                half_open_max_calls: extra_trials.map(|e| nz(successes + e)),
                success_threshold: nz(successes),
                shared: false,
            }
        })
        .prop_filter("some condition must open the breaker", |c| c.validate().is_ok())
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let outcome = prop_oneof![
        4 => Just(Outcome::Success),
        4 => Just(Outcome::Failure),
        1 => Just(Outcome::Ignored),
        1 => Just(Outcome::Cancelled),
    ];
    prop_oneof![
        10 => (outcome, prop_oneof![3 => 0u64..SLOW_MS, 1 => SLOW_MS..2 * SLOW_MS]).prop_map(|(o, ms)| Op::Call(o, ms)),
        3 => (0u64..1200).prop_map(Op::Advance),
        1 => Just(Op::Reset),
    ]
}

fn check(config: CircuitBreakerConfig, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    rt.block_on(async move {
        let start = tokio::time::Instant::now();
        let breaker = CircuitBreaker::new("model", config).expect("valid config");
        let mut model = Model { config, state: ModelState::Closed, calls: VecDeque::new() };
        let now = || (tokio::time::Instant::now() - start).as_nanos() as u64;
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Advance(ms) => tokio::time::advance(Duration::from_millis(ms)).await,
                Op::Reset => {
                    breaker.reset();
                    model.reset();
                }
                Op::Call(outcome, ms) => {
                    let admitted = model.admit(now());
                    let permit = breaker.try_acquire();
                    prop_assert_eq!(permit.is_ok(), admitted, "step {}: admission of {:?}", step, op);
                    if let Ok(permit) = permit {
                        tokio::time::advance(Duration::from_millis(ms)).await;
                        model.finish(now(), outcome, ms >= SLOW_MS);
                        match outcome {
                            Outcome::Success => permit.success(),
                            Outcome::Failure => permit.failure(),
                            Outcome::Ignored => permit.ignore(),
                            Outcome::Cancelled => drop(permit),
                        }
                    }
                }
            }
            prop_assert_eq!(breaker.state(), model.public_state(), "step {}: state after {:?}", step, op);
            if model.state == ModelState::Closed {
                let m = breaker.metrics();
                let (calls, failures, slow) = model.window(now());
                prop_assert_eq!(
                    (m.calls, m.failed_calls, m.slow_calls),
                    (calls, failures, slow),
                    "step {}: window",
                    step
                );
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn breaker_matches_the_reference_model(config in config_strategy(), ops in proptest::collection::vec(op_strategy(), 1..120)) {
        check(config, ops)?;
    }
}
