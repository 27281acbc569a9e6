//! One call through a circuit breaker whose count window holds failures, at window
//! sizes of 100, 4,096 and 262,144 calls: with running counts the cost does not grow
//! with the window.
//!
//! Run: `cargo bench -p resilience-benches --bench window`

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use divan::Bencher;
use resilience::{CircuitBreaker, CircuitBreakerConfig, SlidingWindow};

fn main() {
    divan::main();
}

/// 1 % of calls fail; the breaker opens only at a 50 % failure rate, so it stays closed.
#[divan::bench(args = [100, 4_096, 262_144], threads = [1, 2])]
fn count_window_with_failures(bencher: Bencher, size: u32) {
    let breaker = CircuitBreaker::new(
        "window_bench",
        CircuitBreakerConfig {
            failure_threshold: None,
            failure_rate: Some(50.0),
            window: SlidingWindow::Count { size: NonZeroU32::new(size).expect("non-zero") },
            ..Default::default()
        },
    )
    .expect("valid");
    let calls = AtomicU64::new(0);
    bencher.bench(|| {
        let permit = breaker.try_acquire().expect("closed");
        if calls.fetch_add(1, Relaxed).is_multiple_of(100) {
            permit.failure();
        } else {
            permit.success();
        }
    });
}
