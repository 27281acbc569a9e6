//! The instance's side of shared state (`resilience::shared`), without Redis: what a
//! shared breaker reports, how it takes the fleet's verdicts, how a shared limit admits
//! from leases, credit and its local share. (`tests/shared_state.rs` runs the whole
//! thing across processes against a real Redis.)

use std::time::Duration;

use proptest::prelude::*;
use resilience::shared::{self, FleetState, RestoredState, SharedBreaker, SharedLimit};
use resilience::{CircuitBreaker, CircuitBreakerConfig, CircuitState, RateLimiter, RateLimiterConfig, ResilienceError};

use crate::support::nz;

fn breaker(name: &str, threshold: u32, trials: u32) -> (CircuitBreaker, SharedBreaker) {
    let b = CircuitBreaker::new(
        name,
        CircuitBreakerConfig {
            failure_threshold: Some(nz(threshold)),
            recovery_timeout: Duration::from_secs(30),
            half_open_max_calls: Some(nz(trials)),
            success_threshold: nz(1),
            shared: true,
            ..Default::default()
        },
    )
    .unwrap();
    let handle = shared::shared_breakers()
        .into_iter()
        .rev()
        .find(|s| s.breaker().name() == name)
        .expect("a shared breaker is listed");
    (b, handle)
}

fn fail(b: &CircuitBreaker) -> bool {
    b.try_acquire().map(|p| p.failure()).is_ok()
}

fn succeed(b: &CircuitBreaker) -> bool {
    b.try_acquire().map(|p| p.success()).is_ok()
}

#[test]
fn a_shared_breaker_not_joined_is_a_local_one() {
    let (b, s) = breaker("shared_local", 3, 1);
    assert!(b.is_shared());
    assert!(!s.joined());
    for _ in 0..3 {
        fail(&b);
    }
    assert_eq!(b.state(), CircuitState::Open);
}

#[test]
fn joined_the_local_window_does_not_open_it_and_reports_every_outcome() {
    let (b, s) = breaker("shared_joined", 3, 1);
    s.set_joined(true);
    for _ in 0..10 {
        fail(&b);
    }
    for _ in 0..5 {
        succeed(&b);
    }
    assert_eq!(b.state(), CircuitState::Closed, "one instance's failures opened a joined shared breaker");
    let r = s.take_report();
    assert_eq!((r.calls, r.failures, r.slow, r.state), (15, 10, 0, CircuitState::Closed));
    let again = s.take_report();
    assert_eq!((again.calls, again.failures), (0, 0), "a report counts what happened since the last");
}

#[test]
fn verdicts_open_grant_trials_and_close() {
    let (b, s) = breaker("shared_verdicts", 3, 2);
    s.set_joined(true);
    let r = s.take_report();
    assert!(s.apply(&r, FleetState::Open { remaining: Duration::from_secs(10) }));
    assert_eq!(b.state(), CircuitState::Open);
    let open = b.open_for().unwrap();
    assert!(open >= Duration::from_secs(19) && open <= Duration::from_secs(21), "open for {open:?}");
    // Rejected calls ask for trials; the breaker does not turn half-open on its own.
    assert!(!succeed(&b));
    let r = s.take_report();
    assert_eq!((r.rejected, r.wants_trials), (1, 2));
    assert!(s.apply(&r, FleetState::HalfOpen { granted: 1 }));
    assert_eq!(b.state(), CircuitState::HalfOpen);
    // One trial granted: one call through, the next rejected.
    let trial = b.try_acquire().expect("the granted trial");
    assert!(b.try_acquire().is_err(), "a second trial went through with one granted");
    let r = s.take_report();
    // Calls still waiting: it asks for the rest of the period's trials (two in all).
    assert_eq!(r.wants_trials, 1);
    assert!(!s.apply(&r, FleetState::HalfOpen { granted: 1 }));
    assert!(b.try_acquire().map(|p| p.ignore()).is_ok(), "the second grant was not added");
    trial.success();
    let r = s.take_report();
    assert_eq!(r.trial_successes, 1);
    // success_threshold 1: the local trial closed it, as the fleet will.
    assert_eq!(b.state(), CircuitState::Closed);
    assert!(!s.apply(&r, FleetState::Closed));
}

#[test]
fn a_verdict_on_a_stale_report_is_not_applied() {
    let (b, s) = breaker("shared_stale", 3, 1);
    s.set_joined(true);
    let r = s.take_report();
    b.force_open();
    assert!(!s.apply(&r, FleetState::Closed));
    assert_eq!(b.state(), CircuitState::ForcedOpen);
    // Forced open stays local whatever the fleet says.
    let r = s.take_report();
    assert!(!s.apply(&r, FleetState::Closed));
    assert_eq!(b.state(), CircuitState::ForcedOpen);
}

#[test]
fn a_breaker_built_after_a_restore_starts_open() {
    shared::restore_breaker("shared_restored", RestoredState::Open { remaining: Duration::from_secs(5) });
    let (b, _) = breaker("shared_restored", 3, 1);
    assert_eq!(b.state(), CircuitState::Open);
    let open = b.open_for().unwrap();
    assert!(open >= Duration::from_secs(24), "open for {open:?}: not resumed with 5 s left");
    // Taken once: the next breaker of that name starts closed.
    let (again, _) = breaker("shared_restored", 3, 1);
    assert_eq!(again.state(), CircuitState::Closed);
}

fn limit(name: &str, rate: f64, burst: u32) -> (RateLimiter, SharedLimit) {
    let l = RateLimiter::new(name, RateLimiterConfig { rate, burst: nz(burst), shared: true, ..Default::default() })
        .unwrap();
    let handle = shared::shared_limits()
        .into_iter()
        .rev()
        .find(|s| s.limiter().name() == name)
        .expect("a shared limit is listed");
    (l, handle)
}

fn admitted(l: &RateLimiter, n: usize) -> usize {
    (0..n).filter(|_| l.check().is_ok()).count()
}

#[test]
fn a_shared_limit_not_joined_enforces_its_local_share() {
    let (l, s) = limit("shared_share", 0.001, 8);
    assert_eq!(admitted(&l, 20), 8, "the whole burst, one instance");
    let (l, s2) = limit("shared_share_four", 0.001, 8);
    s2.set_local_share(4);
    assert_eq!(admitted(&l, 20), 2, "a quarter of the burst among four instances");
    drop(s);
}

#[test]
fn joined_a_shared_limit_admits_leases_then_credit_then_rejects() {
    let (l, s) = limit("shared_lease", 0.001, 8);
    s.set_local_share(4);
    s.set_joined(true);
    assert_eq!(s.add_tokens(5), 5);
    assert_eq!(admitted(&l, 5), 5);
    // Out of tokens: credit up to the local share's burst (8 / 4), then rejections.
    let outcomes: Vec<bool> = (0..4).map(|_| l.check().is_ok()).collect();
    assert_eq!(outcomes, [true, true, false, false]);
    assert!(matches!(l.check(), Err(ResilienceError::RateLimited { .. })));
    assert!(s.take_dry(), "running dry did not ask for a lease");
    assert_eq!(s.debt(), 2);
    // The next lease pays the credit back first.
    assert_eq!(s.add_tokens(3), 1);
    assert_eq!(s.debt(), 0);
    assert_eq!(admitted(&l, 3), 1 + 2, "one leased token left, then credit again");
    assert_eq!(s.clear_tokens(), 0);
    let (from_leases, turned_away) = s.counts();
    assert_eq!((from_leases, turned_away), (5 + 2 + 3, 3));
}

#[derive(Debug, Clone)]
enum Step {
    Success,
    Failure,
    Verdict(u8, u32),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Success),
        3 => Just(Step::Failure),
        2 => (0u8..3, 0u32..4).prop_map(|(s, g)| Step::Verdict(s, g)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A joined shared breaker against a model of the rules: it changes state only by
    /// a verdict or a trial's outcome, follows every verdict on a fresh report, and never
    /// lets more trials through in a half-open period than the fleet granted.
    #[test]
    fn a_joined_breaker_follows_the_fleet(steps in proptest::collection::vec(step(), 1..60)) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = format!("shared_model_{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let (b, s) = breaker(&name, 2, 3);
        s.set_joined(true);
        let (mut granted, mut trials) = (0u32, 0u32);
        for step in steps {
            let before = b.state();
            match step {
                Step::Success | Step::Failure => {
                    let permit = b.try_acquire();
                    if before == CircuitState::HalfOpen && permit.is_ok() {
                        trials += 1;
                    }
                    prop_assert!(trials <= granted, "{trials} trials with {granted} granted");
                    if before == CircuitState::Open {
                        prop_assert!(permit.is_err(), "an open joined breaker let a call through");
                    }
                    let went = permit.is_ok();
                    match (permit, &step) {
                        (Ok(p), Step::Success) => p.success(),
                        (Ok(p), _) => p.failure(),
                        (Err(_), _) => {}
                    }
                    let after = b.state();
                    let expected = match (before, went, &step) {
                        // A failed trial re-opens; one success closes (success_threshold 1).
                        (CircuitState::HalfOpen, true, Step::Failure) => CircuitState::Open,
                        (CircuitState::HalfOpen, true, _) => CircuitState::Closed,
                        // Otherwise nothing the instance does changes a joined breaker:
                        // closed, its failures do not open it.
                        (state, _, _) => state,
                    };
                    prop_assert_eq!(after, expected);
                    if after != CircuitState::HalfOpen {
                        granted = 0;
                        trials = 0;
                    }
                }
                Step::Verdict(state, g) => {
                    let report = s.take_report();
                    let verdict = match state {
                        0 => FleetState::Closed,
                        1 => FleetState::Open { remaining: Duration::from_secs(5) },
                        _ => FleetState::HalfOpen { granted: g },
                    };
                    s.apply(&report, verdict);
                    let expected = match verdict {
                        FleetState::Closed => CircuitState::Closed,
                        FleetState::Open { .. } => CircuitState::Open,
                        FleetState::HalfOpen { .. } => CircuitState::HalfOpen,
                    };
                    prop_assert_eq!(b.state(), expected);
                    match verdict {
                        FleetState::HalfOpen { granted: g } if before == CircuitState::HalfOpen => granted += g,
                        FleetState::HalfOpen { granted: g } => { granted = g; trials = 0; }
                        _ => { granted = 0; trials = 0; }
                    }
                }
            }
        }
    }
}

#[resilience::resilient(
    name = "shared_attributed",
    circuit_breaker(shared = true, failure_threshold = 3),
    rate_limit(rate = 100, shared = true)
)]
async fn shared_attributed() -> Result<(), crate::support::AppError> {
    Ok(())
}

#[tokio::test]
async fn attributes_and_registrations_opt_in_and_health_says_so() {
    shared_attributed().await.unwrap();
    let config = resilience::registry().get("shared_attributed").unwrap().config();
    assert!(config.circuit_breaker.shared);
    assert!(config.rate_limit.is_some_and(|r| r.shared));
    let registered = resilience::register_api_dependency!("shared_registered", circuit_breaker(shared = true));
    assert!(registered.config().circuit_breaker.shared);
    assert!(registered.pipeline().circuit_breaker().is_some_and(|b| b.is_shared()));
    let report = resilience::health();
    let entry = report.dependencies.iter().find(|d| d.name == "shared_attributed").unwrap();
    assert!(entry.shared_circuit_breaker && entry.shared_rate_limit);
    let json = report.to_json();
    assert!(json.contains("\"shared_circuit_breaker\":true") && json.contains("\"shared_state\":"), "{json}");
}

/// Four threads check a joined shared limit while a fifth leases one token at a time:
/// no call is admitted but from a lease or within the credit, and the credit never
/// goes below zero or past its cap (the checks take and give back with compare-and-swap,
/// so a lease racing a refused call cannot lose or make a token).
#[test]
fn racing_checks_and_leases_admit_exactly_the_leases_and_the_credit() {
    const LEASES: u64 = 200_000;
    let (l, s) = limit("shared_race", 0.001, 8);
    s.set_local_share(4);
    s.set_joined(true);
    let done = std::sync::atomic::AtomicBool::new(false);
    let admitted = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let mut mine = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    if l.check().is_ok() {
                        mine += 1;
                    }
                    assert!(s.debt() <= 2, "credit {} past its cap of 2", s.debt());
                }
                admitted.fetch_add(mine, std::sync::atomic::Ordering::Relaxed);
            });
        }
        for _ in 0..LEASES {
            s.add_tokens(1);
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let admitted = admitted.into_inner();
    let (tokens, debt) = (s.tokens(), s.debt());
    // Every lease is a call admitted, a token left, or credit paid back.
    assert_eq!(admitted, LEASES - tokens + debt, "admitted {admitted}, {tokens} tokens left, credit {debt}");
}
