//! Semaphore and thread-pool bulkheads.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use resilience::{
    ResilienceError, SemaphoreBulkhead, SemaphoreBulkheadConfig, ThreadPoolBulkhead, ThreadPoolBulkheadConfig,
};

use crate::support::{nzu, AppError};

fn semaphore(max: usize, wait_ms: u64) -> SemaphoreBulkhead {
    SemaphoreBulkhead::new(
        "sem",
        SemaphoreBulkheadConfig { max_concurrent: nzu(max), max_wait: Duration::from_millis(wait_ms) },
    )
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn fails_fast_with_zero_wait() {
    let b = semaphore(2, 0);
    let p1 = b.try_acquire().unwrap();
    let _p2 = b.acquire().await.unwrap();
    assert_eq!(b.available(), 0);
    let err = b.acquire().await.unwrap_err();
    assert!(matches!(&err, ResilienceError::BulkheadFull { name, max_concurrent: 2, .. } if &**name == "sem"));
    assert_eq!(err.to_string(), "bulkhead of `sem` is full (2 concurrent calls)");
    drop(p1);
    assert_eq!(b.available(), 1);
    let _permit = b.acquire().await.unwrap();
}

#[test]
fn a_miss_when_taking_a_free_slot_gives_back_nothing() {
    let b = semaphore(1, 0);
    let held = b.take_free_slot().expect("a free slot");
    for _ in 0..3 {
        assert!(b.take_free_slot().is_none(), "no second slot");
    }
    assert_eq!(b.available(), 0, "a miss gave back no slot it never took");
    drop(held);
    assert_eq!(b.available(), 1);
}

#[tokio::test(start_paused = true)]
async fn waits_up_to_max_wait() {
    let b = semaphore(1, 100);
    let held = b.try_acquire().unwrap();
    let start = tokio::time::Instant::now();
    assert!(b.acquire().await.is_err());
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    // Released while a caller waits: the waiter gets the slot.
    let b2 = b.clone();
    let waiter = tokio::spawn(async move { b2.acquire().await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(held);
    waiter.await.unwrap().unwrap();
    assert_eq!(b.available(), 1);
}

#[test]
fn blocking_acquire_waits_for_a_release() {
    let b = semaphore(1, 5_000);
    let held = b.acquire_owned_blocking().unwrap();
    let b2 = b.clone();
    let waiter = std::thread::spawn(move || b2.call_blocking(|| Ok::<_, AppError>(1)));
    std::thread::sleep(Duration::from_millis(20));
    drop(held);
    assert_eq!(waiter.join().unwrap(), Ok(1));
    let quick = semaphore(1, 10);
    let _held = quick.try_acquire().unwrap();
    assert!(quick.acquire_blocking().is_err());
}

#[tokio::test(start_paused = true)]
async fn lowering_the_limit_keeps_every_permit() {
    let b = semaphore(3, 0);
    let mut held: Vec<_> = (0..3).map(|_| b.acquire_owned_blocking().unwrap()).collect();
    b.set_max_concurrent(nzu(1));
    held.truncate(1);
    assert!(b.try_acquire().is_err(), "one call still in flight fills the new limit of one");
    b.set_max_concurrent(nzu(2));
    let p = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
    drop(p);
    assert_eq!(b.available(), 1);
}

fn pool(workers: usize, queue: usize) -> ThreadPoolBulkhead {
    ThreadPoolBulkhead::new("pool", ThreadPoolBulkheadConfig { max_concurrent: nzu(workers), queue_capacity: queue })
        .unwrap()
}

#[tokio::test]
async fn thread_pool_runs_on_its_workers_and_rejects_when_full() {
    let p = pool(2, 1);
    let gate = Arc::new(Barrier::new(3));
    let running: Vec<_> = (0..2)
        .map(|_| {
            let gate = Arc::clone(&gate);
            p.execute(move || {
                gate.wait();
                std::thread::current().name().map(str::to_owned)
            })
        })
        .map(tokio::spawn)
        .collect();
    while p.active() < 2 {
        tokio::task::yield_now().await;
    }
    let queued = tokio::spawn(p.execute(|| 3));
    while p.queued() < 1 {
        tokio::task::yield_now().await;
    }
    let rejected = p.execute(|| 4).await;
    assert!(matches!(rejected, Err(ResilienceError::BulkheadFull { .. })));
    gate.wait();
    for r in running {
        let name = r.await.unwrap().unwrap().unwrap();
        assert!(name.starts_with("pool-"), "{name}");
    }
    assert_eq!(queued.await.unwrap(), Ok(3));
}

#[test]
fn thread_pool_blocking_timeout_returns_on_time() {
    let p = pool(1, 0);
    let start = std::time::Instant::now();
    let r = p.execute_blocking(|| std::thread::sleep(Duration::from_millis(500)), Some(Duration::from_millis(20)));
    assert!(matches!(r, Err(ResilienceError::Timeout { .. })));
    assert!(start.elapsed() < Duration::from_millis(400));
    // The abandoned call still occupies the only worker.
    assert!(matches!(p.execute_blocking(|| (), None), Err(ResilienceError::BulkheadFull { .. })));
}

#[tokio::test]
async fn thread_pool_skips_calls_whose_caller_left() {
    let p = pool(1, 4);
    let ran = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Barrier::new(2));
    let g = Arc::clone(&gate);
    let first = tokio::spawn(p.execute(move || {
        g.wait();
    }));
    while p.active() < 1 {
        tokio::task::yield_now().await;
    }
    let r = Arc::clone(&ran);
    drop(p.execute(move || r.fetch_add(1, SeqCst)));
    gate.wait();
    first.await.unwrap().unwrap();
    let r = Arc::clone(&ran);
    p.execute(move || r.fetch_add(1, SeqCst)).await.unwrap();
    assert_eq!(ran.load(SeqCst), 1, "the dropped call was skipped");
}

#[tokio::test]
async fn a_panic_on_a_worker_reaches_the_caller_and_the_worker_survives() {
    let p = pool(1, 0);
    let task = tokio::spawn(p.execute(|| -> u32 { panic!("worker job panicked") }));
    assert!(task.await.unwrap_err().is_panic());
    assert_eq!(p.execute(|| 5).await, Ok(5));
}

/// An unbounded queue (`queue_capacity: usize::MAX`) is taken as written: adding the
/// workers to it used to overflow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_pool_with_an_unbounded_queue_runs_calls() {
    let config =
        resilience::ThreadPoolBulkheadConfig { max_concurrent: crate::support::nzu(2), queue_capacity: usize::MAX };
    let pool = resilience::ThreadPoolBulkhead::new("unbounded_queue", config).unwrap();
    let calls: Vec<_> = (0..20).map(|i| pool.execute(move || i * 2)).collect();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap(), i * 2);
    }
}
