//! A flaky dependency behind a pipeline: the breaker opens, rejects without calling,
//! lets trial calls through after its recovery timeout, and closes once they succeed.
//! Then a slow call meets its timeout and a burst meets the bulkhead.
//!
//! Run with `cargo run --release --example demo`.

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use resilience::{CircuitBreakerConfig, Pipeline, ResilienceError, RetryConfig, SemaphoreBulkheadConfig};

#[derive(Debug)]
enum InventoryError {
    Unavailable,
    Resilience(ResilienceError),
}

impl From<ResilienceError> for InventoryError {
    fn from(e: ResilienceError) -> Self {
        Self::Resilience(e)
    }
}

/// A stand-in for a remote inventory service that can be switched off.
struct Inventory {
    healthy: AtomicBool,
    calls: AtomicU32,
}

impl Inventory {
    async fn stock(&self, delay: Duration) -> Result<u32, InventoryError> {
        self.calls.fetch_add(1, SeqCst);
        tokio::time::sleep(delay).await;
        if self.healthy.load(SeqCst) {
            Ok(42)
        } else {
            Err(InventoryError::Unavailable)
        }
    }
}

fn describe(result: &Result<u32, InventoryError>) -> String {
    match result {
        Ok(n) => format!("ok: {n} in stock"),
        Err(InventoryError::Unavailable) => "failed: inventory unavailable".into(),
        Err(InventoryError::Resilience(e)) if e.is_rejection() => format!("rejected: {e}"),
        Err(InventoryError::Resilience(e)) => format!("failed: {e}"),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pipeline = Pipeline::builder("inventory")
        .timeout(Duration::from_millis(200))
        .retry(RetryConfig {
            max_attempts: NonZeroU32::new(2).ok_or("zero")?,
            base_delay: Duration::from_millis(10),
            ..RetryConfig::default()
        })
        .circuit_breaker(CircuitBreakerConfig {
            failure_threshold: NonZeroU32::new(3),
            recovery_timeout: Duration::from_millis(400),
            success_threshold: NonZeroU32::new(2).ok_or("zero")?,
            ..CircuitBreakerConfig::default()
        })
        .bulkhead(SemaphoreBulkheadConfig {
            max_concurrent: NonZeroUsize::new(4).ok_or("zero")?,
            max_wait: Duration::ZERO,
        })
        .build()?;
    let breaker = pipeline.circuit_breaker().ok_or("no breaker")?.clone();
    breaker.subscribe(|t| println!("    >> breaker {}: {} -> {} ({})", t.name, t.from, t.to, t.reason));

    let inventory = Arc::new(Inventory { healthy: AtomicBool::new(true), calls: AtomicU32::new(0) });
    let fast = Duration::from_millis(5);

    println!("1. A healthy dependency");
    for i in 1..=2 {
        let r = pipeline.call(|| inventory.stock(fast)).await;
        println!("  call {i}: {}", describe(&r));
    }

    println!("2. The dependency goes down (each call is tried twice)");
    inventory.healthy.store(false, SeqCst);
    for i in 1..=4 {
        let before = inventory.calls.load(SeqCst);
        let r = pipeline.call(|| inventory.stock(fast)).await;
        let ran = inventory.calls.load(SeqCst) - before;
        println!("  call {i}: {} (body ran {ran}x, breaker {})", describe(&r), breaker.state());
    }

    println!("3. It recovers; after the recovery timeout trial calls close the breaker");
    inventory.healthy.store(true, SeqCst);
    tokio::time::sleep(Duration::from_millis(450)).await;
    for i in 1..=3 {
        let r = pipeline.call(|| inventory.stock(fast)).await;
        println!("  call {i}: {} (breaker {})", describe(&r), breaker.state());
    }

    println!("4. A call slower than the 200ms timeout");
    let before = inventory.calls.load(SeqCst);
    let r = pipeline.call(|| inventory.stock(Duration::from_secs(5))).await;
    println!("  {} (body started {}x: timeouts are retried)", describe(&r), inventory.calls.load(SeqCst) - before);
    breaker.reset();

    println!("5. Eight concurrent calls against a bulkhead of 4");
    let calls = (0..8).map(|_| pipeline.call(|| inventory.stock(Duration::from_millis(50))));
    for (i, r) in futures_join(calls).await.iter().enumerate() {
        println!("  call {}: {}", i + 1, describe(r));
    }
    Ok(())
}

/// Runs futures concurrently on the current task and collects their outputs in order.
async fn futures_join<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    use std::pin::Pin;
    use std::task::Poll;
    let mut pending: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (fut, out) in pending.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => done = false,
                }
            }
        }
        if done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
