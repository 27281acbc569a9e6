//! Driving a future by hand, for the benchmarks that measure wrappers alone: polled
//! with a no-op waker, so no executor's cost is in the figures.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Polls `fut` to completion with a no-op waker.
pub fn run<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// Measures `call(yields)` run to completion by [`run`] inside `runtime` (entered, so
/// that timers register with its driver); the first call, outside the measurement,
/// initialises the shared instance.
pub fn bench_in<F, Fut>(runtime: &tokio::runtime::Runtime, bencher: divan::Bencher, yields: u8, mut call: F)
where
    F: FnMut(u8) -> Fut + Sync,
    Fut: Future,
{
    let _guard = runtime.enter();
    run(call(yields));
    bencher.bench_local(|| run(call(yields)));
}
