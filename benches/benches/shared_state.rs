//! A shared breaker and a shared rate limit, joined to a real `redis-server` (started
//! here on a free port of 127.0.0.1, see `tests/tests/servers.rs`), against the
//! in-memory ones, in one run: what sharing costs a call. The calls never touch Redis
//! (the breaker tallies outcomes on per-thread stripes, the limit admits from leased
//! tokens); the synchronising task runs on its own runtime thread meanwhile.
//! `scripts/bench-ratios` turns the output into the ratios of BENCHMARKS.md.
//!
//! Run: `cargo bench -p resilience-benches --bench shared_state` (needs `redis-server`:
//! `scripts/test` installs it).

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use divan::{black_box, Bencher};
use resilience::shared_state::{install, SharedStateConfig};
use resilience::{CircuitBreaker, CircuitBreakerConfig, RateLimiter, RateLimiterConfig, ResilienceError};

#[path = "../../tests/tests/servers.rs"]
mod servers;

#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

struct Setup {
    _redis: servers::Server,
    runtime: tokio::runtime::Runtime,
}

fn breaker_config(shared: bool) -> CircuitBreakerConfig {
    // A rate-based breaker, so that 10 % failures never open it.
    CircuitBreakerConfig { failure_threshold: None, failure_rate: Some(50.0), shared, ..Default::default() }
}

fn limit_config(shared: bool) -> RateLimiterConfig {
    let burst = NonZeroU32::new(1_000_000).expect("non-zero");
    RateLimiterConfig { rate: 1e9, burst, shared, ..Default::default() }
}

static BREAKER: LazyLock<CircuitBreaker> =
    LazyLock::new(|| CircuitBreaker::new("bench_local", breaker_config(false)).expect("valid"));
static SHARED_BREAKER: LazyLock<CircuitBreaker> =
    LazyLock::new(|| CircuitBreaker::new("bench_shared", breaker_config(true)).expect("valid"));
static LIMIT: LazyLock<RateLimiter> =
    LazyLock::new(|| RateLimiter::new("bench_local", limit_config(false)).expect("valid"));
static SHARED_LIMIT: LazyLock<RateLimiter> =
    LazyLock::new(|| RateLimiter::new("bench_shared", limit_config(true)).expect("valid"));

static SETUP: LazyLock<Setup> = LazyLock::new(|| {
    let redis = servers::Server::standalone();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    LazyLock::force(&SHARED_BREAKER);
    LazyLock::force(&SHARED_LIMIT);
    runtime.block_on(async {
        let config = SharedStateConfig {
            redis_url: format!("redis://127.0.0.1:{}/0", redis.port),
            min_instances_to_open: 1,
            ..Default::default()
        };
        install(config).await.expect("install");
        // Joined: the breaker at the first exchange, the limit at its first lease.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let _ = SHARED_LIMIT.check();
            let breaker = resilience::shared::shared_breakers().into_iter().any(|s| s.joined());
            let limit = resilience::shared::shared_limits().into_iter().any(|s| s.joined() && s.tokens() > 0);
            if breaker && limit {
                break;
            }
            assert!(Instant::now() < deadline, "not joined to Redis within 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    Setup { _redis: redis, runtime }
});

fn main() {
    LazyLock::force(&SETUP);
    divan::main();
    let (admitted, turned_away) = resilience::shared::shared_limits()
        .into_iter()
        .map(|s| s.counts())
        .fold((0, 0), |(a, t), (x, y)| (a + x, t + y));
    println!(
        "shared rate limit: {admitted} calls admitted from leases or credit, {turned_away} turned away waiting for a lease \
         ({} counted by the benchmark)",
        STARVED.load(Relaxed)
    );
}

/// Polls `fut` to completion with a no-op waker. A copy of `policies.rs`'s on purpose:
/// shared through a `#[path]` module it changed the code generated for the `bare`
/// baseline (0.6 ns became 1.6–3.1 ns), which every ratio is measured against.
fn run<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

#[derive(Debug)]
struct Error;

impl From<ResilienceError> for Error {
    fn from(_: ResilienceError) -> Self {
        Error
    }
}

/// A body that returns `Pending` `yields` times, then fails if `fail`.
struct Body {
    yields: u8,
    fail: bool,
}

impl Future for Body {
    type Output = Result<u64, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.yields == 0 {
            Poll::Ready(if self.fail { Err(Error) } else { Ok(black_box(1)) })
        } else {
            self.yields -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

fn body(yields: u8) -> Body {
    Body { yields: black_box(yields), fail: false }
}

/// Every tenth call fails (per thread).
fn failing_one_in_ten(yields: u8) -> Body {
    thread_local! {
        static N: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    let n = N.with(|n| {
        n.set(n.get() + 1);
        n.get()
    });
    Body { yields: black_box(yields), fail: n.is_multiple_of(10) }
}

const YIELDS: &[u8] = &[0, 1];

fn bench_async<F, Fut>(bencher: Bencher, yields: u8, mut call: F)
where
    F: FnMut(u8) -> Fut + Sync,
    Fut: Future,
{
    let _guard = SETUP.runtime.enter();
    run(call(yields));
    bencher.bench_local(|| run(call(yields)));
}

#[divan::bench(args = YIELDS, threads = [1, 2])]
fn bare(bencher: Bencher, yields: u8) {
    bench_async(bencher, yields, body);
}

#[divan::bench(args = YIELDS, threads = [1, 2])]
fn ours_breaker(bencher: Bencher, yields: u8) {
    bench_async(bencher, yields, |y| BREAKER.call(body(y)));
}

#[divan::bench(args = YIELDS, threads = [1, 2])]
fn ours_shared_breaker(bencher: Bencher, yields: u8) {
    bench_async(bencher, yields, |y| SHARED_BREAKER.call(body(y)));
}

#[divan::bench(args = YIELDS, threads = [1, 2])]
fn ours_breaker_failing(bencher: Bencher, yields: u8) {
    bench_async(bencher, yields, |y| BREAKER.call(failing_one_in_ten(y)));
}

#[divan::bench(args = YIELDS, threads = [1, 2])]
fn ours_shared_breaker_failing(bencher: Bencher, yields: u8) {
    bench_async(bencher, yields, |y| SHARED_BREAKER.call(failing_one_in_ten(y)));
}

#[divan::bench(args = YIELDS, threads = [1, 2])]
fn ours_rate_limiter(bencher: Bencher, yields: u8) {
    bench_async(bencher, yields, |y| async move {
        LIMIT.check()?;
        body(y).await
    });
}

static STARVED: AtomicU64 = AtomicU64::new(0);

#[divan::bench(args = YIELDS, threads = [1, 2])]
fn ours_shared_rate_limiter(bencher: Bencher, yields: u8) {
    bench_async(bencher, yields, |y| async move {
        if SHARED_LIMIT.check().is_err() {
            STARVED.fetch_add(1, Relaxed);
        }
        body(y).await
    });
}
