//! Hedged calls on a paused clock (issue 15's scenarios).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use resilience::{
    CircuitBreakerConfig, HedgeConfig, HedgeDelay, Pipeline, ResilienceError, RetryBudgetConfig, SlidingWindow,
};
use tokio::time::Instant;

/// Counts attempts dropped before they finished.
struct Dropped(Arc<AtomicU64>, bool);

impl Drop for Dropped {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, SeqCst);
        }
    }
}

#[derive(Default)]
struct Counts {
    attempts: AtomicU64,
    dropped: Arc<AtomicU64>,
}

/// One attempt: `took` of work, counted, and counted as dropped if it does not finish.
async fn attempt(counts: &Counts, took: Duration) -> Result<(), ResilienceError> {
    counts.attempts.fetch_add(1, SeqCst);
    let mut guard = Dropped(Arc::clone(&counts.dropped), false);
    tokio::time::sleep(took).await;
    guard.1 = true;
    Ok(())
}

fn hedged(name: &str, delay: Duration) -> Pipeline {
    let config = HedgeConfig { max_attempts: NonZeroU32::new(2).unwrap(), delay: HedgeDelay::After(delay) };
    Pipeline::builder(name)
        .hedge(config)
        .circuit_breaker(CircuitBreakerConfig {
            window: SlidingWindow::Count { size: NonZeroU32::new(10_000).unwrap() },
            ..Default::default()
        })
        .build()
        .unwrap()
}

/// `calls` calls, one a millisecond, each given its index and which of its attempts
/// runs (0 for the primary); the latencies.
async fn run(
    pipeline: Arc<Pipeline>,
    counts: Arc<Counts>,
    calls: u32,
    work: impl Fn(u32, u32) -> Duration + Send + Sync + Copy + 'static,
) -> Vec<Duration> {
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..calls {
        let (pipeline, counts, latencies) = (Arc::clone(&pipeline), Arc::clone(&counts), Arc::clone(&latencies));
        tasks.push(tokio::spawn(async move {
            let begun = Instant::now();
            let nth = Arc::new(AtomicU32::new(0));
            let result = pipeline
                .call_idempotent(|| {
                    let (counts, nth) = (Arc::clone(&counts), Arc::clone(&nth));
                    async move {
                        let n = nth.fetch_add(1, SeqCst);
                        attempt(&counts, work(i, n)).await
                    }
                })
                .await;
            result.unwrap();
            latencies.lock().unwrap().push(begun.elapsed());
        }));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut latencies = Arc::try_unwrap(latencies).unwrap().into_inner().unwrap();
    latencies.sort();
    latencies
}

fn p99(latencies: &[Duration]) -> Duration {
    latencies[latencies.len() * 99 / 100 - 1]
}

#[tokio::test(start_paused = true)]
async fn a_hedge_cuts_the_tail() {
    let pipeline = Arc::new(hedged("hedge_tail", Duration::from_millis(50)));
    let counts = Arc::new(Counts::default());
    let slow_primary = |i: u32, n: u32| {
        if i.is_multiple_of(10) && n == 0 {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(10)
        }
    };
    let latencies = run(Arc::clone(&pipeline), Arc::clone(&counts), 1_000, slow_primary).await;
    let tail = p99(&latencies);
    eprintln!(
        "hedged: p99 {tail:?}, {} attempts, {} dropped",
        counts.attempts.load(SeqCst),
        counts.dropped.load(SeqCst)
    );
    assert_eq!(tail, Duration::from_millis(60));
    assert_eq!(counts.attempts.load(SeqCst), 1_100);
    assert_eq!(counts.dropped.load(SeqCst), 100);
    let breaker = pipeline.circuit_breaker().unwrap().metrics();
    assert_eq!((breaker.calls, breaker.failed_calls), (1_000, 0), "the dropped losers count nowhere");

    // Without hedging, the same calls' p99 is the slow primaries'.
    let plain = Arc::new(Pipeline::builder("hedge_tail_off").build().unwrap());
    let latencies = run(plain, Arc::new(Counts::default()), 1_000, slow_primary).await;
    assert_eq!(p99(&latencies), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn calls_faster_than_the_delay_are_not_hedged() {
    let pipeline = Arc::new(hedged("hedge_none", Duration::from_millis(50)));
    let counts = Arc::new(Counts::default());
    run(pipeline, Arc::clone(&counts), 1_000, |_, _| Duration::from_millis(40)).await;
    assert_eq!(counts.attempts.load(SeqCst), 1_000);
    assert_eq!(counts.dropped.load(SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn hedges_draw_from_the_retry_budget() {
    let config =
        HedgeConfig { max_attempts: NonZeroU32::new(2).unwrap(), delay: HedgeDelay::After(Duration::from_millis(50)) };
    let budget = RetryBudgetConfig { ratio: 0.1, min_per_second: 10, window: Duration::from_secs(10) };
    let pipeline = Arc::new(Pipeline::builder("hedge_budget").hedge(config).retry_budget(budget).build().unwrap());
    let counts = Arc::new(Counts::default());
    // Every attempt is slow: every call would hedge.
    run(pipeline, Arc::clone(&counts), 10_000, |_, _| Duration::from_millis(200)).await;
    let hedges = counts.attempts.load(SeqCst) - 10_000;
    eprintln!("budgeted: {hedges} hedges");
    assert!(hedges <= 1_100, "{hedges} hedges");
    assert!(hedges >= 1_000, "the budget allows about 1,100: {hedges}");
}

#[tokio::test(start_paused = true)]
async fn a_percentile_delay_waits_for_samples_then_follows_latency() {
    let config = HedgeConfig { max_attempts: NonZeroU32::new(3).unwrap(), delay: HedgeDelay::Percentile(95.0) };
    let pipeline = Arc::new(Pipeline::builder("hedge_p95").hedge(config).build().unwrap());
    assert_eq!(pipeline.hedge().unwrap().delay(), None, "no samples: no hedge");
    let counts = Arc::new(Counts::default());
    run(Arc::clone(&pipeline), Arc::clone(&counts), 100, |_, _| Duration::from_millis(20)).await;
    assert_eq!(counts.attempts.load(SeqCst), 100, "20 ms calls never outlast their own p95");
    let delay = pipeline.hedge().unwrap().delay().expect("enough samples");
    assert!(delay >= Duration::from_millis(20) && delay <= Duration::from_millis(25), "{delay:?}");
}

#[tokio::test(start_paused = true)]
async fn a_retryable_failure_starts_the_next_attempt_at_once_and_a_fatal_one_ends_the_call() {
    #[derive(Debug, PartialEq)]
    enum Error {
        Busy,
        Gone,
        Policy,
    }
    impl From<ResilienceError> for Error {
        fn from(_: ResilienceError) -> Self {
            Error::Policy
        }
    }
    fn busy_only(e: &Error) -> bool {
        *e == Error::Busy
    }
    let config =
        HedgeConfig { max_attempts: NonZeroU32::new(3).unwrap(), delay: HedgeDelay::After(Duration::from_secs(10)) };
    let pipeline = Pipeline::builder("hedge_errors").hedge(config).build().unwrap();
    let policy = resilience::ErrorPolicy { retry_if: busy_only, ..Default::default() };
    let begun = Instant::now();
    let n = AtomicU32::new(0);
    let result = pipeline
        .call_idempotent_with(&policy, || {
            let i = n.fetch_add(1, SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if i < 2 {
                    Err(Error::Busy)
                } else {
                    Ok(i)
                }
            }
        })
        .await;
    assert_eq!(result, Ok(2), "two busy answers, each followed by the next attempt at once");
    assert_eq!(begun.elapsed(), Duration::from_millis(15), "no wait for the 10 s delay");
    let n = AtomicU32::new(0);
    let result: Result<u32, Error> = pipeline
        .call_idempotent_with(&policy, || {
            n.fetch_add(1, SeqCst);
            async { Err(Error::Gone) }
        })
        .await;
    assert_eq!(result, Err(Error::Gone));
    assert_eq!(n.load(SeqCst), 1, "a fatal error ends the call");
}

#[resilience::resilient(name = "hedge_attribute", idempotent = true, hedge(delay = "50ms"), retry(enabled = false))]
async fn fetch(slow_first: &AtomicU32) -> Result<u32, ResilienceError> {
    let n = slow_first.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(if n == 0 { 1_000 } else { 10 })).await;
    Ok(n)
}

#[resilience::resilient(name = "hedge_attribute_plain", hedge(delay = "50ms"), retry(enabled = false))]
async fn fetch_unmarked(slow_first: &AtomicU32) -> Result<u32, ResilienceError> {
    let n = slow_first.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(if n == 0 { 1_000 } else { 10 })).await;
    Ok(n)
}

#[tokio::test(start_paused = true)]
async fn attributes_hedge_only_calls_marked_idempotent() {
    let begun = Instant::now();
    let attempts = AtomicU32::new(0);
    assert_eq!(fetch(&attempts).await, Ok(1), "the hedge answered first");
    assert_eq!(begun.elapsed(), Duration::from_millis(60));
    let begun = Instant::now();
    let attempts = AtomicU32::new(0);
    assert_eq!(fetch_unmarked(&attempts).await, Ok(0), "not marked: one attempt");
    assert_eq!(begun.elapsed(), Duration::from_secs(1));
}

#[test]
fn hedges_from_the_settings_file() {
    let text = "external_dependencies:
  search: { type: external_api, hedge: { max_attempts: 3, delay: 20ms } }
  feed: { type: cache, hedge: { delay: p99.5 } }
";
    let registry = resilience::Registry::new();
    resilience::Settings::from_yaml_str(text).unwrap().apply_to(&registry).unwrap();
    let search = registry.get("search").unwrap().config().hedge.unwrap();
    assert_eq!((search.max_attempts.get(), search.delay), (3, HedgeDelay::After(Duration::from_millis(20))));
    let feed = registry.get("feed").unwrap().config().hedge.unwrap();
    assert_eq!((feed.max_attempts.get(), feed.delay), (2, HedgeDelay::Percentile(99.5)));
    let err = |text: &str| resilience::Settings::from_yaml_str(text).unwrap_err().to_string();
    assert_eq!(
        err("external_dependencies:\n  s:\n    type: cache\n    hedge: { delay: p100 }\n"),
        "<string>:4: invalid `external_dependencies.s.hedge.delay`: p100 is not a percentile between p0 and p100 (exclusive)"
    );
    assert!(err("external_dependencies:\n  s:\n    type: cache\n    hedge: { max_attempts: 11 }\n")
        .contains("between 1 and 10"));
}
