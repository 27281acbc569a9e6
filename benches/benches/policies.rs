//! The policies against the anchor crates, in one binary and one run.
//!
//! Every benchmark drives one call to completion by polling it by hand with a no-op
//! waker inside an entered tokio runtime (timers register with its driver but never
//! need to fire), so what is measured is the cost of the wrappers themselves. Each
//! runs on a future that is ready at once (`ready`) and on one that returns `Pending`
//! once before completing (`yields`), on one thread and on two threads sharing one
//! instance. `scripts/bench-ratios` turns the output into the ratios of BENCHMARKS.md.
//!
//! Run: `cargo bench -p resilience-benches --bench policies`

use std::future::Future;
use std::num::{NonZeroU32, NonZeroUsize};
use std::pin::{pin, Pin};
use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use divan::{black_box, Bencher};
use resilience::{
    CircuitBreaker, CircuitBreakerConfig, Pipeline, RateLimiter, RateLimiterConfig, ResilienceError, Retry,
    RetryConfig, SemaphoreBulkhead, SemaphoreBulkheadConfig, Timeout,
};
use tower::{Service, ServiceBuilder, ServiceExt};

#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

fn main() {
    divan::main();
}

const LIMIT: usize = 1_000;
const TIMEOUT: Duration = Duration::from_secs(30);

static RUNTIME: LazyLock<tokio::runtime::Runtime> =
    LazyLock::new(|| tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime"));

/// Polls `fut` to completion with a no-op waker.
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

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("error")
    }
}

impl std::error::Error for Error {}

impl From<ResilienceError> for Error {
    fn from(_: ResilienceError) -> Self {
        Error
    }
}

/// A body that returns `Pending` `yields` times before its value.
struct Body {
    yields: u8,
}

impl Future for Body {
    type Output = Result<u64, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.yields == 0 {
            Poll::Ready(Ok(black_box(1)))
        } else {
            self.yields -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

fn body(yields: u8) -> Body {
    Body { yields: black_box(yields) }
}

const YIELDS: &[u8] = &[0, 1];

fn bench_async<F, Fut>(bencher: Bencher, yields: u8, mut call: F)
where
    F: FnMut(u8) -> Fut + Sync,
    Fut: Future,
{
    let _guard = RUNTIME.enter();
    // The first call initialises the shared instance outside the measurement.
    run(call(yields));
    bencher.bench_local(|| run(call(yields)));
}

// ---------------------------------------------------------------- baselines

#[divan::bench(args = YIELDS, threads = [1, 2])]
fn bare(bencher: Bencher, yields: u8) {
    bench_async(bencher, yields, body);
}

#[divan::bench(args = YIELDS, threads = [1, 2])]
fn tokio_timeout(bencher: Bencher, yields: u8) {
    bench_async(bencher, yields, |y| tokio::time::timeout(TIMEOUT, body(y)));
}

static TOKIO_SEMAPHORE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(LIMIT);

#[divan::bench(args = YIELDS, threads = [1, 2])]
fn tokio_semaphore(bencher: Bencher, yields: u8) {
    bench_async(bencher, yields, |y| async move {
        let _permit = TOKIO_SEMAPHORE.acquire().await;
        body(y).await
    });
}

type TowerStack = tower::limit::ConcurrencyLimit<tower::timeout::Timeout<tower::util::ServiceFn<fn(u8) -> Body>>>;

static TOWER: LazyLock<TowerStack> = LazyLock::new(|| {
    ServiceBuilder::new().concurrency_limit(LIMIT).timeout(TIMEOUT).service(tower::service_fn(body as fn(u8) -> Body))
});

#[divan::bench(args = YIELDS, threads = [1, 2])]
fn tower_concurrency_limit_timeout(bencher: Bencher, yields: u8) {
    // Tower services are cloned per user; clones share the semaphore.
    let mut svc = TOWER.clone();
    let _guard = RUNTIME.enter();
    let mut call = || {
        run(async {
            let ready = svc.ready().await.map_err(|_| Error)?;
            ready.call(yields).await.map_err(|_| Error)
        })
    };
    call().ok();
    bencher.bench_local(call);
}

type FailsafePolicy = failsafe::failure_policy::OrElse<
    failsafe::failure_policy::SuccessRateOverTimeWindow<failsafe::backoff::EqualJittered>,
    failsafe::failure_policy::ConsecutiveFailures<failsafe::backoff::EqualJittered>,
>;

static FAILSAFE: LazyLock<failsafe::StateMachine<FailsafePolicy, ()>> =
    LazyLock::new(|| failsafe::Config::new().build());

#[divan::bench(args = YIELDS, threads = [1, 2])]
fn failsafe_breaker(bencher: Bencher, yields: u8) {
    use failsafe::futures::CircuitBreaker as _;
    bench_async(bencher, yields, |y| FAILSAFE.call(body(y)));
}

static RECLOSER: LazyLock<recloser::AsyncRecloser> =
    LazyLock::new(|| recloser::AsyncRecloser::from(recloser::Recloser::default()));

#[divan::bench(args = YIELDS, threads = [1, 2])]
fn recloser_breaker(bencher: Bencher, yields: u8) {
    bench_async(bencher, yields, |y| RECLOSER.call(body(y)));
}

static GOVERNOR: LazyLock<governor::DefaultDirectRateLimiter> = LazyLock::new(|| {
    governor::RateLimiter::direct(governor::Quota::per_second(NonZeroU32::new(u32::MAX).expect("non-zero")))
});

#[divan::bench(args = YIELDS, threads = [1, 2])]
fn governor_rate_limiter(bencher: Bencher, yields: u8) {
    bench_async(bencher, yields, |y| async move {
        GOVERNOR.check().map_err(|_| Error)?;
        body(y).await
    });
}

// ---------------------------------------------------------------- ours

static BREAKER: LazyLock<CircuitBreaker> =
    LazyLock::new(|| CircuitBreaker::new("bench", CircuitBreakerConfig::default()).expect("valid"));

#[divan::bench(args = YIELDS, threads = [1, 2])]
fn ours_breaker(bencher: Bencher, yields: u8) {
    bench_async(bencher, yields, |y| BREAKER.call(body(y)));
}

static RETRY: LazyLock<Retry> = LazyLock::new(|| Retry::new("bench", RetryConfig::default()).expect("valid"));

#[divan::bench(args = YIELDS, threads = [1, 2])]
fn ours_retry(bencher: Bencher, yields: u8) {
    bench_async(bencher, yields, |y| RETRY.call(move || body(y)));
}

static TIMEOUT_POLICY: LazyLock<Timeout> = LazyLock::new(|| Timeout::new("bench", TIMEOUT).expect("valid"));

#[divan::bench(args = YIELDS, threads = [1, 2])]
fn ours_timeout(bencher: Bencher, yields: u8) {
    bench_async(bencher, yields, |y| TIMEOUT_POLICY.call(body(y)));
}

static BULKHEAD: LazyLock<SemaphoreBulkhead> =
    LazyLock::new(|| SemaphoreBulkhead::new("bench", bulkhead()).expect("valid"));

#[divan::bench(args = YIELDS, threads = [1, 2])]
fn ours_bulkhead(bencher: Bencher, yields: u8) {
    bench_async(bencher, yields, |y| BULKHEAD.call(move || body(y)));
}

static RATE_LIMITER: LazyLock<RateLimiter> = LazyLock::new(|| {
    RateLimiter::new("bench", RateLimiterConfig::per_second(1e9, NonZeroU32::new(u32::MAX).expect("non-zero")))
        .expect("valid")
});

#[divan::bench(args = YIELDS, threads = [1, 2])]
fn ours_rate_limiter(bencher: Bencher, yields: u8) {
    bench_async(bencher, yields, |y| async move {
        RATE_LIMITER.check()?;
        body(y).await
    });
}

/// Timeout, retry and breaker: what every pipeline benchmark has, before its bulkhead
/// (and budget).
fn policies(name: &str) -> resilience::PipelineBuilder {
    Pipeline::builder(name)
        .timeout(TIMEOUT)
        .retry(RetryConfig::default())
        .circuit_breaker(CircuitBreakerConfig::default())
}

/// The fixed bulkhead of the pipeline benchmarks.
fn bulkhead() -> SemaphoreBulkheadConfig {
    SemaphoreBulkheadConfig { max_concurrent: NonZeroUsize::new(LIMIT).expect("non-zero"), max_wait: Duration::ZERO }
}

static PIPELINE: LazyLock<Pipeline> = LazyLock::new(|| policies("bench").bulkhead(bulkhead()).build().expect("valid"));

/// Breaker + retry + bulkhead + timeout: the pipeline behind `#[resilient]`.
#[divan::bench(args = YIELDS, threads = [1, 2])]
fn ours_pipeline(bencher: Bencher, yields: u8) {
    bench_async(bencher, yields, |y| PIPELINE.call(move || body(y)));
}

/// `PIPELINE` with an adaptive bulkhead in place of the fixed one (issue 14), starting
/// and bounded at the same limit so that its probes never refuse a call.
static PIPELINE_ADAPTIVE: LazyLock<Pipeline> = LazyLock::new(|| {
    let limit = NonZeroUsize::new(LIMIT).expect("non-zero");
    let adaptive = resilience::AdaptiveBulkheadConfig {
        initial_limit: limit,
        min_limit: limit,
        max_limit: limit,
        max_wait: Duration::ZERO,
    };
    policies("bench_adaptive").adaptive_bulkhead(adaptive).build().expect("valid")
});

#[divan::bench(args = YIELDS, threads = [1, 2])]
fn ours_pipeline_adaptive(bencher: Bencher, yields: u8) {
    bench_async(bencher, yields, |y| PIPELINE_ADAPTIVE.call(move || body(y)));
}

/// `PIPELINE` with a retry budget (issue 14): every call deposits.
static PIPELINE_BUDGET: LazyLock<Pipeline> = LazyLock::new(|| {
    let budget = resilience::RetryBudgetConfig::default();
    policies("bench_budget").retry_budget(budget).bulkhead(bulkhead()).build().expect("valid")
});

#[divan::bench(args = YIELDS, threads = [1, 2])]
fn ours_pipeline_budget(bencher: Bencher, yields: u8) {
    bench_async(bencher, yields, |y| PIPELINE_BUDGET.call(move || body(y)));
}

static MANAGER: LazyLock<resilience::ResilienceManager> = LazyLock::new(|| {
    let manager = resilience::ResilienceManager::default();
    // The same policies as `PIPELINE`, as a registered dependency.
    let own = resilience::ConfigOverrides {
        timeout: Some(TIMEOUT),
        circuit_breaker: resilience::BreakerOverrides { failure_threshold: NonZeroU32::new(5), ..Default::default() },
        bulkhead: resilience::BulkheadOverrides { max_concurrent: NonZeroUsize::new(LIMIT), ..Default::default() },
        ..Default::default()
    };
    manager.registry().register("bench_db", resilience::DependencyType::Database, own).expect("valid");
    manager
});

/// `manager.execute` on a registered name: the pipeline plus resolving the name.
#[divan::bench(args = YIELDS, threads = [1, 2])]
fn ours_manager_execute(bencher: Bencher, yields: u8) {
    bench_async(bencher, yields, |y| {
        MANAGER.execute("bench_db", resilience::ResilienceStrategy::Database, move || body(y))
    });
}

static SITE_DEPENDENCY: LazyLock<&'static resilience::Dependency> = LazyLock::new(|| {
    // The same policies as `PIPELINE`, registered under the attribute's name.
    let own = resilience::ConfigOverrides {
        timeout: Some(TIMEOUT),
        circuit_breaker: resilience::BreakerOverrides { failure_threshold: NonZeroU32::new(5), ..Default::default() },
        retry: resilience::RetryOverrides { max_attempts: NonZeroU32::new(3), ..Default::default() },
        bulkhead: resilience::BulkheadOverrides { max_concurrent: NonZeroUsize::new(LIMIT), ..Default::default() },
        ..Default::default()
    };
    resilience::registry().register("bench_site", resilience::DependencyType::Database, own).expect("valid")
});

#[resilience::resilient(name = "bench_site", strategy = Database)]
async fn attributed(yields: u8) -> Result<u64, Error> {
    body(yields).await
}

/// A call through `#[resilient]` (the registered `bench_site`: breaker, 3 attempts,
/// bulkhead, 30 s timeout).
#[divan::bench(args = YIELDS, threads = [1, 2])]
fn ours_attribute(bencher: Bencher, yields: u8) {
    LazyLock::force(&SITE_DEPENDENCY);
    bench_async(bencher, yields, attributed);
}

/// The same function written by hand: an `async fn` awaiting the same registered
/// dependency's current pipeline, the body in an `async` block. What `ours_attribute`
/// is held to (at most 1.05x).
async fn by_hand(dependency: &'static resilience::Dependency, yields: u8) -> Result<u64, Error> {
    dependency.pipeline().call(move || async move { body(yields).await }).await
}

#[divan::bench(args = YIELDS, threads = [1, 2])]
fn ours_attribute_by_hand(bencher: Bencher, yields: u8) {
    let dependency: &'static resilience::Dependency = *SITE_DEPENDENCY;
    bench_async(bencher, yields, |y| by_hand(dependency, y));
}
