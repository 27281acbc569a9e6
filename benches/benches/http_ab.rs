//! The HTTP pool against raw reqwest, interleaved: each round runs the same `concurrency`
//! GETs through the pool, through the raw client with the same timeout, and through the
//! raw client alone (in an order that turns each round), so that drift of the machine (the first benchmark of a
//! divan run measures slower) falls on all three alike. Over `ROUNDS` rounds: each
//! variant's median round, and its throughput (requests over the rounds' total time), on
//! a two-worker runtime and then on a current-thread one, first with the server on a
//! thread of its own and then with it in the client's runtime (see `main`); and each
//! variant's CPU time per request (the process's, every thread's: client and in-process
//! server).
//!
//! Run: `cargo bench -p resilience-benches --bench http_ab` (`ONLY=N`: one variant, see
//! `only`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use resilience::{initialize_pools, pool_manager, HttpPoolConfig, PoolConfig};

#[path = "support/hello.rs"]
mod hello;

const ROUNDS: usize = 3_000;

/// The six orders of the three variants, one per round in turn: each variant runs first,
/// second and third, after each of the others, equally often.
const ORDERS: [[usize; 3]; 6] = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];

/// The system allocator, counting allocations while `COUNTING` is set (one relaxed load
/// otherwise), for the allocations-per-request line.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to `System` unchanged.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations per call of `get` (client and server together), over 1,000 calls one
/// after another.
async fn allocations<F, Fut>(get: F) -> f64
where
    F: Fn() -> Fut,
    Fut: Future<Output = usize> + Send + 'static,
{
    const CALLS: u64 = 1_000;
    for _ in 0..100 {
        tokio::spawn(get()).await.expect("joined");
    }
    ALLOCATIONS.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    for _ in 0..CALLS {
        tokio::spawn(get()).await.expect("joined");
    }
    COUNTING.store(false, Ordering::Relaxed);
    ALLOCATIONS.load(Ordering::Relaxed) as f64 / CALLS as f64
}

fn main() {
    // Two places for the server, each with two client runtimes, one after the other.
    //
    // - The server on a thread of its own (as a dependency runs: another process, not
    //   tasks of its client's runtime). These are the lines the target is read on.
    // - The server in the client's runtime. On the current-thread runtime client and
    //   server then share one thread: no hand-offs between threads, so a round's time is
    //   the work itself and the ratio repeats to a few tenths of a percent: the client's
    //   own cost. On two workers the server's tasks compete with the client's for the same
    //   two workers, and a request at concurrency 1 takes 23–90 µs by where its tasks
    //   happen to run (a wake-up between workers or not); the median moves between those
    //   modes from run to run, and the pool's few hundred nanoseconds move which mode a
    //   request falls in.
    //
    // The client runtimes: tokio's multi-thread scheduler on two workers (what most
    // services run) and a current-thread one.
    for (place, own_thread) in [("server on its own thread", true), ("server in the client's runtime", false)] {
        for (kind, runtime) in [
            (
                "multi-thread, 2 workers",
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build(),
            ),
            ("current-thread", tokio::runtime::Builder::new_current_thread().enable_all().build()),
        ] {
            let runtime = runtime.expect("runtime");
            // A pool per runtime: a client's connections belong to the runtime that made them.
            let name = match (own_thread, kind.starts_with("multi")) {
                (true, true) => "bench_http_ab_own_mt",
                (true, false) => "bench_http_ab_own_ct",
                (false, true) => "bench_http_ab_mt",
                (false, false) => "bench_http_ab_ct",
            };
            runtime.block_on(compare(&format!("{place}, {kind}"), name, own_thread));
        }
    }
}

/// The pool named `name` against the same reqwest client raw, on the current runtime,
/// with the server on a thread of its own (`own_thread`) or on the current runtime.
async fn compare(kind: &str, name: &'static str, own_thread: bool) {
    let server = if own_thread { hello::start_on_own_thread() } else { hello::start().await };
    let url = format!("http://{server}/");
    let own = resilience::ConfigOverrides {
        bulkhead: resilience::BulkheadOverrides {
            max_concurrent: std::num::NonZeroUsize::new(64),
            ..Default::default()
        },
        ..Default::default()
    };
    resilience::registry().register(name, resilience::DependencyType::ExternalApi, own).expect("registered");
    let config = HttpPoolConfig { max_connections_per_host: 64, health_check_path: None, ..Default::default() };
    initialize_pools(vec![PoolConfig::http(name, config)]).await.expect("pool");
    let pool = pool_manager().http(name).expect("pool");
    let client = pool.client().clone();
    println!("{kind}:");
    {
        let (c, u) = (client.clone(), url.clone());
        let raw = async move { c.get(u).send().await.expect("answered").bytes().await.expect("body").len() };
        let pool_get = pool.get(url.clone());
        let sizes = (std::mem::size_of_val(&pool_get), std::mem::size_of_val(&raw));
        println!("  future size: pool.get {} bytes, raw {} bytes", sizes.0, sizes.1);
    }
    let pool_allocations = allocations(|| {
        let (pool, url) = (pool.clone(), url.clone());
        async move { pool.get(url).await.expect("answered").bytes().await.expect("body").len() }
    })
    .await;
    let raw_allocations = allocations(|| {
        let (client, url) = (client.clone(), url.clone());
        async move { client.get(url).send().await.expect("answered").bytes().await.expect("body").len() }
    })
    .await;
    println!("  allocations per request (client and server): pool {pool_allocations:.1}  raw {raw_allocations:.1}");
    // The rounds run in a task of the runtime, as a service's handler makes its calls:
    // driven from `block_on`'s thread, each round would also time that thread's
    // hand-offs with the workers (a wake-up each way), which no service has.
    let driver = tokio::spawn(async move {
        for concurrency in [1usize, 32] {
            let mut times: [Vec<Duration>; 3] = [Vec::new(), Vec::new(), Vec::new()];
            let mut cpu = [Duration::ZERO; 3];
            for round in 0..ROUNDS + 100 {
                // Each variant goes first, second and third in turn: whichever runs first
                // in a round finds the connections as the previous round left them.
                let mut t = [Duration::ZERO; 3];
                for variant in ORDERS[round % ORDERS.len()] {
                    if only().is_some_and(|only| only != variant) {
                        continue;
                    }
                    let cpu_before = cpu_time();
                    t[variant] = match variant {
                        0 => {
                            timed(concurrency, || {
                                let (pool, url) = (pool.clone(), url.clone());
                                async move { pool.get(url).await.expect("answered").bytes().await.expect("body").len() }
                            })
                            .await
                        }
                        1 => {
                            timed(concurrency, || {
                                let (client, url) = (client.clone(), url.clone());
                                async move {
                                    let r = client
                                        .get(url)
                                        .timeout(Duration::from_secs(15))
                                        .send()
                                        .await
                                        .expect("answered");
                                    r.bytes().await.expect("body").len()
                                }
                            })
                            .await
                        }
                        _ => {
                            timed(concurrency, || {
                                let (client, url) = (client.clone(), url.clone());
                                async move {
                                    client.get(url).send().await.expect("answered").bytes().await.expect("body").len()
                                }
                            })
                            .await
                        }
                    };
                    if round >= 100 {
                        cpu[variant] += cpu_time() - cpu_before;
                    }
                }
                if round >= 100 {
                    for (i, d) in t.into_iter().enumerate() {
                        times[i].push(d);
                    }
                }
            }
            if only().is_none() {
                let per_request = cpu.map(|c| c / (ROUNDS * concurrency) as u32);
                report(concurrency, times, per_request);
            }
        }
    });
    driver.await.expect("driver");
}

/// One concurrency's line: each variant's median round and its throughput over all
/// rounds (requests over their total time).
fn report(concurrency: usize, times: [Vec<Duration>; 3], cpu: [Duration; 3]) {
    let [pool, timeout, raw] = times.map(|mut v| {
        v.sort();
        let total: Duration = v.iter().sum();
        (v[v.len() / 2], (v.len() * concurrency) as f64 / total.as_secs_f64())
    });
    println!(
        "  concurrency {concurrency:>2}: p50 pool {:>7.1?}  raw+timeout {:>7.1?}  raw {:>7.1?} (pool +{:.1?})   \
         throughput pool {:>6.0}/s  raw+timeout {:>6.0}/s  raw {:>6.0}/s   pool/raw {:.3}  pool/raw+timeout {:.3}",
        pool.0,
        timeout.0,
        raw.0,
        pool.0.saturating_sub(raw.0),
        pool.1,
        timeout.1,
        raw.1,
        pool.1 / raw.1,
        pool.1 / timeout.1,
    );
    println!(
        "                  CPU per request (client and server, every thread): pool {:.2?}  raw+timeout {:.2?}  raw {:.2?}",
        cpu[0], cpu[1], cpu[2]
    );
}

/// The process's CPU time (user and system, all threads) so far.
fn cpu_time() -> Duration {
    // SAFETY: `getrusage` fills the struct it is given.
    #[allow(unsafe_code)]
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let t = |v: libc::timeval| Duration::new(v.tv_sec as u64, v.tv_usec as u32 * 1000);
    t(usage.ru_utime) + t(usage.ru_stime)
}

/// The one variant to run (`ONLY=0` the pool, `1` raw with the timeout, `2` raw), for
/// profiling: then nothing is reported.
fn only() -> Option<usize> {
    std::env::var("ONLY").ok().and_then(|v| v.parse().ok())
}

/// The time of one round: `concurrency` calls of `get` at once.
async fn timed<F, Fut>(concurrency: usize, get: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: Future<Output = usize> + Send + 'static,
{
    let start = Instant::now();
    let calls: Vec<_> = (0..concurrency).map(|_| tokio::spawn(get())).collect();
    for call in calls {
        assert_eq!(call.await.expect("joined"), 5);
    }
    start.elapsed()
}
