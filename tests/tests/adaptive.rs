//! The adaptive bulkhead against a simulated service, on a paused clock: a semaphore of
//! `capacity` slots and 100 ms of work per call, one call every 5 ms (issue 14's
//! scenarios).

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use resilience::{AdaptiveBulkheadConfig, Bulkhead, Pipeline, ResilienceError};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::support::nzu;

const WORK: Duration = Duration::from_millis(100);

/// The service: `capacity` slots (changed at `drop_at` to `dropped_to`), `WORK` each.
struct Service {
    slots: Semaphore,
    extra_taken: AtomicUsize,
}

/// What a run saw: the learned limit every 100 ms, and each completed call's end and latency.
#[derive(Default)]
struct Run {
    limits: Vec<(Duration, usize)>,
    done: Vec<(Duration, Duration)>,
    peak_in_flight: usize,
}

struct Scenario {
    initial: usize,
    capacity: usize,
    /// `(at, capacity)`: the service shrinks at `at`.
    shrink: Option<(Duration, usize)>,
    every: Duration,
    length: Duration,
}

async fn run(name: &str, s: Scenario) -> Run {
    let config = AdaptiveBulkheadConfig { initial_limit: nzu(s.initial), ..Default::default() };
    let pipeline = Arc::new(Pipeline::builder(name).adaptive_bulkhead(config).build().unwrap());
    let service = Arc::new(Service { slots: Semaphore::new(s.capacity), extra_taken: AtomicUsize::new(0) });
    let record = Arc::new(Mutex::new(Run::default()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut calls = Vec::new();
    let mut next_sample = Duration::ZERO;
    let mut t = Duration::ZERO;
    while t < s.length {
        if let Some((at, to)) = s.shrink {
            if t >= at && service.extra_taken.load(SeqCst) == 0 {
                let remove = s.capacity - to;
                service.extra_taken.store(remove, SeqCst);
                let service = Arc::clone(&service);
                // Takes `remove` slots for good, as they free up.
                tokio::spawn(async move { service.slots.acquire_many(remove as u32).await.unwrap().forget() });
            }
        }
        if t >= next_sample {
            let Some(Bulkhead::Adaptive(a)) = pipeline.bulkhead() else { unreachable!() };
            record.lock().unwrap().limits.push((t, a.limit()));
            next_sample += Duration::from_millis(100);
        }
        let (pipeline, service, record, in_flight) =
            (Arc::clone(&pipeline), Arc::clone(&service), Arc::clone(&record), Arc::clone(&in_flight));
        calls.push(tokio::spawn(async move {
            let began = Instant::now();
            let result: Result<(), ResilienceError> = pipeline
                .call(|| async {
                    let now = in_flight.fetch_add(1, SeqCst) + 1;
                    {
                        let mut r = record.lock().unwrap();
                        r.peak_in_flight = r.peak_in_flight.max(now);
                    }
                    let _slot = service.slots.acquire().await.unwrap();
                    tokio::time::sleep(WORK).await;
                    in_flight.fetch_sub(1, SeqCst);
                    Ok(())
                })
                .await;
            if result.is_ok() {
                let end = Instant::now();
                record.lock().unwrap().done.push((end - start, end - began));
            }
        }));
        tokio::time::sleep(s.every).await;
        t = start.elapsed();
    }
    for c in calls {
        c.await.unwrap();
    }
    Arc::try_unwrap(record).ok().unwrap().into_inner().unwrap()
}

fn p99(latencies: &mut [Duration]) -> Duration {
    latencies.sort();
    latencies[latencies.len() * 99 / 100]
}

fn overloaded(initial: usize) -> Scenario {
    Scenario { initial, capacity: 10, shrink: None, every: Duration::from_millis(5), length: Duration::from_secs(60) }
}

#[tokio::test(start_paused = true)]
async fn converges_from_below_to_the_capacity() {
    let run = run("adaptive_from_5", overloaded(5)).await;
    if std::env::var_os("ADAPTIVE_TRACE").is_some() {
        eprintln!("{:?}", run.limits.iter().map(|l| l.1).collect::<Vec<_>>());
    }
    let late: Vec<usize> = run.limits.iter().filter(|(t, _)| *t >= Duration::from_secs(15)).map(|l| l.1).collect();
    let (lo, hi) = (late.iter().min().unwrap(), late.iter().max().unwrap());
    assert!(*lo >= 10 && *hi <= 16, "limit from 15 s on within [{lo}, {hi}], wanted within [10, 16]");
    let mut latencies: Vec<Duration> = run.done.iter().map(|d| d.1).collect();
    let p99 = p99(&mut latencies);
    assert!(p99 <= Duration::from_millis(200), "p99 {p99:?}");
    let rate = run.done.len() as f64 / 60.0;
    assert!(rate >= 95.0, "{rate:.1} completions/s");
    eprintln!("from 5: limit {lo}..={hi} from 15 s, p99 {p99:?}, {rate:.1}/s");
}

#[tokio::test(start_paused = true)]
async fn comes_down_from_above_with_a_real_baseline() {
    let run = run("adaptive_from_40", Scenario { length: Duration::from_secs(25), ..overloaded(40) }).await;
    let at_20 = run.limits.iter().find(|(t, _)| *t >= Duration::from_secs(20)).unwrap().1;
    assert!(at_20 <= 20, "limit {at_20} at 20 s");
    eprintln!("from 40: {at_20} at 20 s");
}

#[tokio::test(start_paused = true)]
async fn follows_a_capacity_drop() {
    let scenario =
        Scenario { shrink: Some((Duration::from_secs(30), 5)), length: Duration::from_secs(45), ..overloaded(5) };
    let run = run("adaptive_drop", scenario).await;
    let after: Vec<usize> = run.limits.iter().filter(|(t, _)| *t >= Duration::from_secs(40)).map(|l| l.1).collect();
    let (lo, hi) = (after.iter().min().unwrap(), after.iter().max().unwrap());
    assert!(*lo >= 5 && *hi <= 10, "limit from 40 s on within [{lo}, {hi}], wanted within [5, 10]");
    eprintln!("drop: {lo}..={hi} from 40 s");
}

#[tokio::test(start_paused = true)]
async fn an_unsaturated_service_does_not_inflate_the_limit() {
    let scenario = Scenario { capacity: 20, every: Duration::from_millis(10), ..overloaded(20) };
    let run = run("adaptive_idle", scenario).await;
    let max = run.limits.iter().map(|l| l.1).max().unwrap();
    let bound = 2 * run.peak_in_flight + 10;
    assert!(max <= bound, "limit reached {max}, past 2 x peak in flight ({}) + 10", run.peak_in_flight);
    eprintln!("unsaturated: max limit {max}, peak in flight {}", run.peak_in_flight);
}

struct Client {
    calls: u32,
}

impl Client {
    /// Through the loop of attempts that `&mut self` methods expand to.
    #[resilience::resilient(name = "adaptive_mut_self", bulkhead(kind = adaptive, max_concurrent = 4))]
    async fn fetch(&mut self) -> Result<u32, ResilienceError> {
        self.calls += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(self.calls)
    }
}

#[resilience::resilient(name = "adaptive_fn", bulkhead(kind = adaptive, max_concurrent = 4))]
async fn fetch(work: Duration) -> Result<(), ResilienceError> {
    tokio::time::sleep(work).await;
    Ok(())
}

fn adaptive_state(name: &str) -> resilience::AdaptiveState {
    let dependency = resilience::registry().resolve(name, resilience::ResilienceStrategy::InternalService);
    match dependency.pipeline().bulkhead() {
        Some(Bulkhead::Adaptive(a)) => a.state(),
        other => panic!("{name}: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn attributed_calls_measure_their_baseline() {
    let mut client = Client { calls: 0 };
    for _ in 0..12 {
        client.fetch().await.unwrap();
        fetch(Duration::from_millis(20)).await.unwrap();
    }
    for (name, work) in [("adaptive_mut_self", 10), ("adaptive_fn", 20)] {
        let state = adaptive_state(name);
        assert_eq!(state.limit, 4, "{name}: the starting limit, learned limit unchanged by the probe");
        assert!(!state.probing, "{name}: the first probe ended after its samples");
        let baseline = state.baseline.expect("measured");
        assert!(
            baseline >= Duration::from_millis(work) && baseline < Duration::from_millis(work + 2),
            "{name}: baseline {baseline:?}"
        );
        assert_eq!(state.in_flight, 0);
    }
}

#[tokio::test(start_paused = true)]
async fn rejected_and_cancelled_calls_give_no_sample() {
    let config = AdaptiveBulkheadConfig { initial_limit: nzu(10), ..Default::default() };
    let pipeline = Arc::new(Pipeline::builder("adaptive_no_samples").adaptive_bulkhead(config).build().unwrap());
    let state = || match pipeline.bulkhead() {
        Some(Bulkhead::Adaptive(a)) => a.state(),
        _ => unreachable!(),
    };
    assert!(state().probing && state().live_limit == 3, "the first probe pins the limit: {:?}", state());
    // Ten at once: three admitted under the pin, seven rejected.
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let pipeline = Arc::clone(&pipeline);
            tokio::spawn(async move {
                pipeline
                    .call(|| async {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        Ok::<_, ResilienceError>(())
                    })
                    .await
            })
        })
        .collect();
    let mut rejected = 0;
    for c in calls {
        if let Err(ResilienceError::BulkheadFull { .. }) = c.await.unwrap() {
            rejected += 1;
        }
    }
    assert_eq!(rejected, 7);
    // Three cancelled while they wait.
    let cancelled: Vec<_> = (0..3)
        .map(|_| {
            let pipeline = Arc::clone(&pipeline);
            tokio::spawn(async move {
                pipeline
                    .call(|| async {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        Ok::<_, ResilienceError>(())
                    })
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(state().in_flight, 3);
    for c in cancelled {
        c.abort();
        assert!(c.await.unwrap_err().is_cancelled());
    }
    assert_eq!(state().in_flight, 0, "cancelled calls gave their slots back");
    // Four more that finish: 7 samples if only finished calls count, 10 (the probe's
    // number, which would end it) if the rejected or cancelled ones did too.
    for _ in 0..4 {
        let done: Result<(), ResilienceError> = pipeline
            .call(|| async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok(())
            })
            .await;
        done.unwrap();
    }
    let after = state();
    assert!(after.probing && after.baseline.is_none(), "7 samples of 10: {after:?}");
}
