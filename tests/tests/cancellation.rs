//! Dropped futures and panics must release every permit and trial slot they held.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use resilience::{Bulkhead, CircuitBreakerConfig, CircuitState, Pipeline, RetryConfig, SemaphoreBulkheadConfig};
use tokio::task::JoinSet;

use crate::support::{nz, nzu, AppError};

const TASKS: u64 = 10_000;

/// Polls the inner future at most `polls + 1` times, then drops it: a cancellation at
/// a point chosen by the caller.
struct CancelAfter<F> {
    inner: Option<Pin<Box<F>>>,
    polls: u32,
}

impl<F: Future> Future for CancelAfter<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        if let Poll::Ready(out) = inner.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if self.polls == 0 {
            self.inner = None;
            return Poll::Ready(None);
        }
        self.polls -= 1;
        // Ask to be polled again even if the inner future is parked on something that
        // never wakes: the cancellation point must come.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

fn cancel_after<F: Future>(polls: u32, inner: F) -> CancelAfter<F> {
    CancelAfter { inner: Some(Box::pin(inner)), polls }
}

/// xorshift64, so every task draws its own cancellation point.
fn draw(seed: &mut u64, below: u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed % below
}

/// Counts bodies in flight and remembers the highest count.
struct InBody {
    now: AtomicUsize,
    max: AtomicUsize,
}

struct Entered<'a>(&'a InBody);

impl InBody {
    fn enter(&self) -> Entered<'_> {
        let n = self.now.fetch_add(1, SeqCst) + 1;
        self.max.fetch_max(n, SeqCst);
        Entered(self)
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, SeqCst);
    }
}

/// Waits for every task of a stress test and checks what any such run must show: many
/// calls cancelled, some bodies panicked, never more than `limit` bodies at once, none
/// left running, and every permit of `bulkhead` back.
async fn join_stressed<T: 'static>(
    mut tasks: JoinSet<Option<T>>,
    in_body: &InBody,
    limit: usize,
    bulkhead: Option<&Bulkhead>,
) {
    let (mut panicked, mut cancelled) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(None) => cancelled += 1,
            Ok(Some(_)) => {}
            Err(e) => {
                assert!(e.is_panic());
                panicked += 1;
            }
        }
    }
    let (max, now) = (in_body.max.load(SeqCst), in_body.now.load(SeqCst));
    let seen = format!("{cancelled} cancelled, {panicked} panicked, at most {max} bodies at once, {now} left");
    assert!(cancelled > 500, "too few calls were cancelled: {seen}");
    assert!(panicked > 5, "too few bodies panicked: {seen}");
    assert!(max <= limit, "more bodies than the bulkhead's {limit} ran at once: {seen}");
    assert_eq!(now, 0, "bodies still running: {seen}");
    assert_eq!(bulkhead.map(Bulkhead::available), Some(limit), "every permit came back: {seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_cancelled_calls_never_exceed_the_bulkhead_and_leak_nothing() {
    const LIMIT: usize = 8;
    let pipeline = Pipeline::builder("stress")
        .timeout(Duration::from_millis(200))
        .retry(RetryConfig { max_attempts: nz(2), base_delay: Duration::from_micros(50), ..Default::default() })
        .circuit_breaker(CircuitBreakerConfig {
            failure_threshold: Some(nz(100)),
            recovery_timeout: Duration::from_millis(1),
            ..Default::default()
        })
        .bulkhead(SemaphoreBulkheadConfig { max_concurrent: nzu(LIMIT), max_wait: Duration::from_millis(20) })
        .build()
        .unwrap();
    let in_body = Arc::new(InBody { now: AtomicUsize::new(0), max: AtomicUsize::new(0) });
    let mut tasks = JoinSet::new();
    for i in 0..TASKS {
        let mut seed = (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let (yields, polls, panics, fails) =
            (draw(&mut seed, 6), draw(&mut seed, 10) as u32, draw(&mut seed, 40) == 0, draw(&mut seed, 4) == 0);
        let (pipeline, in_body) = (pipeline.clone(), Arc::clone(&in_body));
        tasks.spawn(async move {
            let call = pipeline.call(|| {
                let in_body = Arc::clone(&in_body);
                async move {
                    let _entered = in_body.enter();
                    assert!(!panics, "a body that panics");
                    for _ in 0..yields {
                        tokio::task::yield_now().await;
                    }
                    if fails {
                        Err(AppError::Down)
                    } else {
                        Ok(())
                    }
                }
            });
            cancel_after(polls, call).await
        });
    }
    join_stressed(tasks, &in_body, LIMIT, pipeline.bulkhead()).await;
}

/// A `&mut self` method: the attribute's loop of attempts rather than the pipeline's
/// own future.
struct Worker {
    in_body: Arc<InBody>,
    yields: u64,
    panics: bool,
    fails: bool,
}

impl Worker {
    #[resilience::database_call(dependency = "cancellation_attribute_stress")]
    async fn work(&mut self) -> Result<(), AppError> {
        let _entered = self.in_body.enter();
        assert!(!self.panics, "a body that panics");
        for _ in 0..self.yields {
            tokio::task::yield_now().await;
        }
        if self.fails {
            Err(AppError::Down)
        } else {
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_cancelled_attribute_calls_leak_nothing() {
    const LIMIT: usize = 8;
    let dependency = resilience::register_database_dependency!(
        "cancellation_attribute_stress",
        max_concurrent = 8,
        max_wait = "20ms",
        timeout = "200ms",
        retry(max_attempts = 2, base_delay = "1ms"),
        circuit_breaker(failure_threshold = 100, recovery_timeout = "1ms")
    );
    let in_body = Arc::new(InBody { now: AtomicUsize::new(0), max: AtomicUsize::new(0) });
    let mut tasks = JoinSet::new();
    for i in 0..TASKS {
        let mut seed = (i + 3).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let (yields, polls, panics, fails) =
            (draw(&mut seed, 6), draw(&mut seed, 10) as u32, draw(&mut seed, 40) == 0, draw(&mut seed, 4) == 0);
        let mut worker = Worker { in_body: Arc::clone(&in_body), yields, panics, fails };
        tasks.spawn(async move { cancel_after(polls, worker.work()).await });
    }
    join_stressed(tasks, &in_body, LIMIT, dependency.pipeline().bulkhead()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_trial_calls_hand_their_half_open_slots_back() {
    const TRIALS: u32 = 3;
    let pipeline = Pipeline::builder("trials")
        .circuit_breaker(CircuitBreakerConfig {
            failure_threshold: Some(nz(1)),
            recovery_timeout: Duration::ZERO,
            half_open_max_calls: Some(nz(TRIALS)),
            success_threshold: nz(TRIALS),
            ..Default::default()
        })
        .build()
        .unwrap();
    pipeline.call(|| async { Err::<(), _>(AppError::Down) }).await.ok();
    let breaker = pipeline.circuit_breaker().unwrap().clone();
    assert_eq!(breaker.state(), CircuitState::Open);
    let mut tasks = JoinSet::new();
    for i in 0..TASKS {
        let mut seed = (i + 7).wrapping_mul(0x2545_F491_4F6C_DD1D);
        let polls = draw(&mut seed, 5) as u32;
        let pipeline = pipeline.clone();
        tasks.spawn(async move {
            // A trial that never finishes on its own: only cancellation ends it.
            let call = pipeline.call(|| async {
                tokio::task::yield_now().await;
                std::future::pending::<Result<(), AppError>>().await
            });
            cancel_after(polls, call).await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap();
    }
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    let trials: Vec<_> = (0..TRIALS).map(|_| breaker.try_acquire().expect("a trial slot leaked")).collect();
    assert!(breaker.try_acquire().is_err());
    for t in trials {
        t.success();
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[test]
fn a_panicking_blocking_body_releases_its_slot_and_counts_as_a_failure() {
    let pipeline = Pipeline::builder("panics")
        .circuit_breaker(CircuitBreakerConfig { failure_threshold: Some(nz(1)), ..Default::default() })
        .bulkhead(SemaphoreBulkheadConfig { max_concurrent: nzu(1), max_wait: Duration::ZERO })
        .build()
        .unwrap();
    let p = pipeline.clone();
    let joined = std::thread::spawn(move || p.call_blocking(|| -> Result<(), AppError> { panic!("boom") })).join();
    assert!(joined.is_err());
    let Some(Bulkhead::Semaphore(bulkhead)) = pipeline.bulkhead() else { panic!("semaphore bulkhead") };
    assert_eq!(bulkhead.available(), 1);
    assert_eq!(pipeline.circuit_breaker().unwrap().state(), CircuitState::Open);
}

#[resilience::database_call(
    dependency = "cancellation_blocking_panic",
    max_concurrent = 1,
    circuit_breaker(failure_threshold = 1),
    retry(enabled = false)
)]
fn explodes() -> Result<(), AppError> {
    panic!("boom")
}

#[test]
fn a_panicking_attributed_fn_releases_its_slot_and_counts_as_a_failure() {
    assert!(std::thread::spawn(explodes).join().is_err());
    let pipeline = resilience::registry().get("cancellation_blocking_panic").expect("used").pipeline();
    assert_eq!(pipeline.bulkhead().map(Bulkhead::available), Some(1));
    assert_eq!(pipeline.circuit_breaker().map(|b| b.state()), Some(CircuitState::Open));
}

/// Checks, when dropped, that the bulkhead slot its body ran under is still held.
struct SlotStillHeld(resilience::SemaphoreBulkhead);

impl Drop for SlotStillHeld {
    fn drop(&mut self) {
        assert_eq!(self.0.available(), 0, "the slot was freed before the body was dropped");
    }
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_body_is_dropped_before_its_slot_is_freed() {
    let pipeline = Pipeline::builder("order")
        .bulkhead(SemaphoreBulkheadConfig { max_concurrent: nzu(1), max_wait: Duration::ZERO })
        .build()
        .unwrap();
    let Some(Bulkhead::Semaphore(bulkhead)) = pipeline.bulkhead() else { panic!("semaphore bulkhead") };
    let guard_bulkhead = bulkhead.clone();
    let call = pipeline.call(move || {
        let guard = SlotStillHeld(guard_bulkhead.clone());
        async move {
            let _guard = guard;
            std::future::pending::<Result<(), AppError>>().await
        }
    });
    assert!(cancel_after(0, call).await.is_none());
    assert_eq!(bulkhead.available(), 1);
}
