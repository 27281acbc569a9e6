//! Retry budgets on a paused clock: a dependency that fails every call, 1,000 calls a
//! second (issue 14's scenarios).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use resilience::{Jitter, Pipeline, ResilienceError, RetryBudget, RetryBudgetConfig, RetryConfig};
use tokio::time::Instant;

#[derive(Debug)]
struct Down;

impl From<ResilienceError> for Down {
    fn from(_: ResilienceError) -> Self {
        Down
    }
}

/// `attempts` in all, 1 ms apart: with one delay for every retry, the retries reach the
/// dependency as the budget granted them, 1 ms later, so its windows are the budget's.
fn retry(attempts: u32) -> RetryConfig {
    RetryConfig {
        max_attempts: NonZeroU32::new(attempts).unwrap(),
        base_delay: Duration::from_millis(1),
        exponential_base: 1.0,
        jitter: Jitter::None,
        ..RetryConfig::default()
    }
}

fn budgeted(name: &str, budget: RetryBudgetConfig) -> Arc<Pipeline> {
    Arc::new(Pipeline::builder(name).retry(retry(4)).retry_budget(budget).build().unwrap())
}

/// What the dependency saw: every call's attempts, and when each retry reached it.
#[derive(Default)]
struct Seen {
    calls: u64,
    attempts: u64,
    retries_at: Vec<Duration>,
}

/// One call every millisecond for `length`, each through `call` (given the attempt
/// counter of that call), all failing.
async fn drive<F, Fut>(length: Duration, call: F) -> Seen
where
    F: Fn(Arc<AtomicU32>, Arc<Mutex<Seen>>, Instant) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let seen = Arc::new(Mutex::new(Seen::default()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    while start.elapsed() < length {
        seen.lock().unwrap().calls += 1;
        tasks.push(tokio::spawn(call(Arc::new(AtomicU32::new(0)), Arc::clone(&seen), start)));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap()
}

/// An attempt reaching the dependency: counted, and timed if it is a retry.
fn attempt(count: &AtomicU32, seen: &Mutex<Seen>, start: Instant) -> Result<(), Down> {
    let n = count.fetch_add(1, SeqCst);
    let mut seen = seen.lock().unwrap();
    seen.attempts += 1;
    if n > 0 {
        seen.retries_at.push(start.elapsed());
    }
    Err(Down)
}

/// The most retries any window of `window` holds.
fn busiest_window(times: &[Duration], window: Duration) -> usize {
    let mut times = times.to_vec();
    times.sort();
    let (mut best, mut first) = (0, 0);
    for (i, t) in times.iter().enumerate() {
        while *t - times[first] >= window {
            first += 1;
        }
        best = best.max(i + 1 - first);
    }
    best
}

#[tokio::test(start_paused = true)]
async fn a_failing_dependency_sees_at_most_a_fifth_more_calls() {
    let pipeline = budgeted("budget_default", RetryBudgetConfig::default());
    let seen = drive(Duration::from_secs(30), |count, seen, start| {
        let pipeline = Arc::clone(&pipeline);
        async move {
            let _ = pipeline.call(|| std::future::ready(attempt(&count, &seen, start))).await;
        }
    })
    .await;
    let amplification = seen.attempts as f64 / seen.calls as f64;
    let busiest = busiest_window(&seen.retries_at, Duration::from_secs(10));
    eprintln!("default budget: {amplification:.4}x the calls, busiest 10 s window {busiest} retries");
    assert!(amplification <= 1.21, "{amplification:.4}x");
    assert!(amplification > 1.15, "the budget allows about 1.2x: {amplification:.4}x");
    assert!(busiest <= 2_100, "{busiest} retries in one 10 s window");
}

#[tokio::test(start_paused = true)]
async fn the_ratio_is_kept_as_given() {
    let config = RetryBudgetConfig { ratio: 0.6, min_per_second: 0, ..Default::default() };
    let pipeline = budgeted("budget_ratio", config);
    let seen = drive(Duration::from_secs(30), |count, seen, start| {
        let pipeline = Arc::clone(&pipeline);
        async move {
            let _ = pipeline.call(|| std::future::ready(attempt(&count, &seen, start))).await;
        }
    })
    .await;
    let ratio = seen.retries_at.len() as f64 / seen.calls as f64;
    eprintln!("ratio 0.6: retries / calls {ratio:.4}");
    assert!((ratio - 0.6).abs() <= 0.01, "{ratio:.4}");
}

#[tokio::test(start_paused = true)]
async fn nested_retries_do_not_multiply() {
    // The outer call retries whatever the inner one returns; both belong to the same
    // kind of dependency with its own budget.
    let inner = budgeted("budget_inner", RetryBudgetConfig::default());
    let outer = budgeted("budget_outer", RetryBudgetConfig::default());
    let seen = drive(Duration::from_secs(30), |count, seen, start| {
        let (inner, outer) = (Arc::clone(&inner), Arc::clone(&outer));
        async move {
            let _ = outer
                .call(|| {
                    let (inner, count, seen) = (Arc::clone(&inner), Arc::clone(&count), Arc::clone(&seen));
                    async move { inner.call(|| std::future::ready(attempt(&count, &seen, start))).await }
                })
                .await;
        }
    })
    .await;
    let amplification = seen.attempts as f64 / seen.calls as f64;
    eprintln!("nested: {amplification:.4}x the calls");
    assert!(amplification <= 1.21, "{amplification:.4}x, not 1.21x");
}

#[tokio::test(start_paused = true)]
async fn the_window_really_slides() {
    // tower's budget, fed 142 deposits a second for 20 s, keeps about 0.6x of its window.
    let budget =
        RetryBudget::new("budget_window", RetryBudgetConfig { ratio: 1.0, min_per_second: 0, ..Default::default() })
            .unwrap();
    let start = Instant::now();
    for i in 1..=20 * 142u32 {
        tokio::time::sleep_until(start + Duration::from_secs(20) * i / (20 * 142)).await;
        budget.deposit();
    }
    let remaining = budget.remaining();
    eprintln!("142/s for 20 s: {remaining} withdrawable");
    assert!((1_405..=1_435).contains(&remaining), "{remaining}");
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_budget_returns_the_attempts_error_at_once() {
    let pipeline = budgeted("budget_empty", RetryBudgetConfig { ratio: 0.01, min_per_second: 0, ..Default::default() });
    let count = AtomicU32::new(0);
    let result: Result<(), Down> = pipeline
        .call(|| {
            count.fetch_add(1, SeqCst);
            std::future::ready(Err(Down))
        })
        .await;
    assert!(matches!(result, Err(Down)));
    assert_eq!(count.load(SeqCst), 1, "nothing deposited, so no retry");
    assert_eq!(pipeline.retry_budget().unwrap().remaining(), 0);
}

#[resilience::resilient(name = "budget_site", strategy = Internal, retry(budget()))]
async fn budgeted_site(count: &AtomicU32) -> Result<(), Down> {
    count.fetch_add(1, SeqCst);
    Err(Down)
}

#[tokio::test(start_paused = true)]
async fn budgets_and_adaptive_limits_come_from_registrations_and_attributes() {
    resilience::register_api_dependency!(
        "budget_registered",
        retry(max_attempts = 3, base_delay = "1ms", budget(ratio = 0.5, window = "5s")),
        bulkhead(kind = adaptive, max_concurrent = 4, min_limit = 2, max_limit = 50)
    );
    let snapshots = resilience::registry().snapshot();
    let snapshot = snapshots.iter().find(|s| s.name == "budget_registered").expect("registered");
    assert_eq!(snapshot.bulkhead_max_concurrent, Some(4), "the starting limit");
    let dependency =
        resilience::registry().resolve("budget_registered", resilience::ResilienceStrategy::ExternalService);
    let pipeline = dependency.pipeline();
    let budget = pipeline.retry_budget().expect("a budget");
    assert_eq!(*budget.config(), RetryBudgetConfig { ratio: 0.5, min_per_second: 10, window: Duration::from_secs(5) });
    assert!(matches!(pipeline.bulkhead(), Some(resilience::Bulkhead::Adaptive(a)) if a.config().min_limit.get() == 2));
    // `budget()` alone: the defaults; the reserve lets this call retry.
    let count = AtomicU32::new(0);
    assert!(budgeted_site(&count).await.is_err());
    assert_eq!(count.load(SeqCst), 3, "the Internal preset's 3 attempts, within the reserve");
}

/// One step of the model test: time passes, calls deposit, retries are asked for.
#[derive(Debug, Clone)]
struct Step {
    advance_ms: u64,
    deposits: u32,
    withdrawals: u32,
}

fn step_strategy() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    (0u64..120, 0u32..40, 1u32..6).prop_map(|(advance_ms, deposits, withdrawals)| Step {
        advance_ms,
        deposits,
        withdrawals,
    })
}

/// The budget against an exact sliding window kept as lists of every deposit and every
/// granted withdrawal. Its readings of the deposit count fall at each step (every step
/// asks for a retry), so its estimate of the deposits at the window's start can be off
/// by the deposits of one step: the model allows that much, no more.
fn check_budget(ratio: f64, min_per_second: u32, steps: Vec<Step>) -> Result<(), proptest::test_runner::TestCaseError> {
    use proptest::prelude::*;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    runtime.block_on(async {
        let window = Duration::from_secs(1);
        let budget = RetryBudget::new("budget_model", RetryBudgetConfig { ratio, min_per_second, window }).unwrap();
        let reserve = f64::from(min_per_second) * window.as_secs_f64();
        let start = Instant::now();
        let (mut deposits, mut granted): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
        let mut step_deposits = 0u32;
        for (i, step) in steps.iter().enumerate() {
            tokio::time::advance(Duration::from_millis(step.advance_ms)).await;
            let now = start.elapsed();
            for _ in 0..step.deposits {
                budget.deposit();
                deposits.push(now);
            }
            step_deposits = step_deposits.max(step.deposits);
            let in_window = |list: &[Duration], from: Option<Duration>| {
                list.iter().filter(|t| from.is_none_or(|f| **t > f)).count() as f64
            };
            for _ in 0..step.withdrawals {
                let from = now.checked_sub(window);
                let exact = ratio * in_window(&deposits, from) + reserve - in_window(&granted, from);
                // Withdrawals within a millisecond of a run's first are kept as one run
                // that expires with its latest: a granted retry may count a little longer.
                let late = from.map_or(0.0, |f| {
                    granted.iter().filter(|t| **t > f.saturating_sub(Duration::from_millis(1)) && **t <= f).count()
                        as f64
                });
                let slack = ratio * f64::from(step_deposits);
                let ok = budget.try_withdraw();
                if ok {
                    granted.push(now);
                    prop_assert!(exact >= 1.0 - slack - 1e-9, "step {i}: granted with an exact balance of {exact}");
                } else {
                    prop_assert!(
                        exact < 1.0 + slack + late + 1e-9,
                        "step {i}: refused with an exact balance of {exact}"
                    );
                }
            }
        }
        Ok(())
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 400, ..Default::default() })]

    #[test]
    fn the_budget_matches_an_exact_sliding_window(
        ratio in 0.05f64..=1.0,
        min_per_second in 0u32..20,
        steps in proptest::collection::vec(step_strategy(), 1..150),
    ) {
        check_budget(ratio, min_per_second, steps)?;
    }
}
