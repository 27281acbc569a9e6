//! `ResilienceLayer` in an axum hello-world on 127.0.0.1 under `wrk`, in one run: no layer,
//! our layer (timeout, bulkhead, route breaker and a per-client limiter with a high limit,
//! all on), a hand-built tower stack (tower's `TimeoutLayer`, `ConcurrencyLimitLayer`
//! and `tower_governor`'s per-IP limiter), no layer with a fixed `x-request-id` on
//! every answer (what that one header costs by itself), our layer with its request
//! ids off (`enable_request_id: false`), and an empty layer (`tower`'s `Identity`: what
//! axum's `Router::layer` costs any layer), and the floor: the least a layer with the
//! four features can do (see `floor`), and the parts: the core's own components with the
//! least glue (see `parts`). Each server runs in this process
//! on a 2-worker runtime; `wrk` (Debian's package) runs with 1 thread and 32 connections
//! for `SECONDS` per variant, in rounds (two per server) that each start with another
//! server (so that each runs in each place twice); it reports the best round, the median round and
//! the median of the rounds' own ratios (two cores shared with `wrk` make one run's
//! throughput move by 4 % or more). Next to each run's
//! requests per second it reports the CPU time this process (the servers, not `wrk`)
//! spent per request, user and kernel apart: less noisy than the throughput of two cores
//! shared with `wrk`.
//!
//! Before that it times each stack in this process without sockets (`in_process`): the
//! layers' own cost per request, on one thread.
//!
//! Run: `cargo bench -p resilience-benches --bench middleware` (`IN_PROCESS_ONLY=1`: only
//! the in-process part; `ONLY=N`: only server N, see `only`; `NO_BH=1`, `NO_RL=1`,
//! `NO_CB=1`: our layer without its bulkhead, rate limiter or route breakers, to see
//! what each costs; `PROMETHEUS=1`: with the `prometheus` feature's recorder installed,
//! so that the layer's request metrics are recorded (without it they are no-ops); `EVICT=N`: the in-process loop writes `N` bytes between requests,
//! so that each request meets cold caches as it does under `wrk`, where the kernel's
//! TCP path runs between two requests; its own time cancels in "over no layer";
//! `SERVERS=0,4,1`: only those servers under `wrk`, see `servers`; `ROUNDS=N`: `N`
//! rounds, see `rounds`). Each paired ratio comes with a 95 % confidence interval for
//! its median (see `Paired`).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::routing::get;
use resilience::{MiddlewareConfig, RateLimitConfig, ResilienceLayer};

const SECONDS: u32 = 8;

fn hello() -> axum::Router {
    axum::Router::new().route("/", get(|| async { "hello" }))
}

/// Our layer with everything on: timeout, bulkhead, route breaker, a per-client limiter
/// with a limit no client reaches, and (when `request_ids`) `x-request-id` on every
/// answer. Without request ids it has just what the target names.
fn ours(request_ids: bool) -> axum::Router {
    hello().layer(ResilienceLayer::new(MiddlewareConfig {
        bulkhead_max_concurrent: 10_000,
        rate_limit: Some(RateLimitConfig::per_client(1e9, u32::MAX)),
        enable_request_id: request_ids,
        enable_bulkhead: std::env::var_os("NO_BH").is_none(),
        enable_rate_limiting: std::env::var_os("NO_RL").is_none(),
        enable_circuit_breaker: std::env::var_os("NO_CB").is_none(),
        ..Default::default()
    }))
}

fn tower_stack() -> axum::Router {
    let governor = tower_governor::governor::GovernorConfigBuilder::default()
        .per_nanosecond(1)
        .burst_size(u32::MAX)
        .finish()
        .expect("governor config");
    hello().layer(tower_governor::GovernorLayer::new(governor)).layer(
        tower::ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|_: tower::BoxError| async { StatusCode::GATEWAY_TIMEOUT }))
            .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(30)))
            .layer(tower::limit::ConcurrencyLimitLayer::new(10_000)),
    )
}

/// Requests per second and p99 latency (ms) as `wrk --latency` reports them.
fn wrk(url: &str) -> (f64, f64) {
    let output = Command::new("wrk")
        .args(["-t1", "-c32", &format!("-d{SECONDS}s"), "--latency", url])
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in: {text}"));
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| {
            let v = v.trim();
            let (number, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
            let n: f64 = number.parse().unwrap_or(f64::NAN);
            match unit {
                "us" => n / 1000.0,
                "ms" => n,
                "s" => n * 1000.0,
                _ => f64::NAN,
            }
        })
        .unwrap_or(f64::NAN);
    let errors = text.lines().find(|l| l.contains("Non-2xx")).map(str::to_owned);
    assert!(errors.is_none(), "{url}: {}", errors.unwrap_or_default());
    (rps, p99)
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    // What a service that serves `/metrics` pays: the layer's request metrics recorded,
    // not dropped by the facade's no-op recorder.
    let _metrics = std::env::var_os("PROMETHEUS").map(|_| resilience::prometheus::install().expect("recorder"));
    in_process();
    if std::env::var_os("IN_PROCESS_ONLY").is_some() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let urls: Vec<(&str, String)> = runtime.block_on(async {
        let mut urls = Vec::new();
        for (i, name) in STACKS.into_iter().enumerate() {
            let app = app_for(i);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let url = format!("http://{}/", listener.local_addr().expect("address"));
            tokio::spawn(async move {
                let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
            });
            urls.push((name, url));
        }
        urls
    });
    let mut best = vec![(0.0f64, f64::NAN, f64::NAN); urls.len()];
    // Every run's requests per second, for the medians.
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); urls.len()];
    // By default two rounds per server, each server in each place twice: a fixed order
    // favours one position (see `http_ab`). Each round starts with the next server.
    let chosen = servers();
    let rounds = rounds().unwrap_or(2 * chosen.len());
    for round in 0..rounds {
        for k in 0..chosen.len() {
            let i = chosen[(round + k) % chosen.len()];
            if only().is_some_and(|only| only != i || round > 0) {
                continue;
            }
            let (name, url) = &urls[i];
            let before = process_cpu_seconds();
            let (rps, p99) = wrk(url);
            let after = process_cpu_seconds();
            let requests = rps * f64::from(SECONDS);
            let cpu_us = (after.0 + after.1 - before.0 - before.1) / requests * 1e6;
            let (user_us, system_us) = ((after.0 - before.0) / requests * 1e6, (after.1 - before.1) / requests * 1e6);
            eprintln!(
                "{name}: {rps:.0} requests/s, {cpu_us:.2} µs of server CPU per request \
                 ({user_us:.2} user, {system_us:.2} kernel)"
            );
            if rps > best[i].0 {
                best[i] = (rps, p99, cpu_us);
            }
            runs[i].push(rps);
        }
    }
    // Each round ran every server once, minutes apart at most: the median of the rounds'
    // own ratios cancels what drifts between rounds (before `runs` is sorted below).
    let paired = |a: usize, b: usize| -> Paired {
        let mut ratios: Vec<f64> = runs[a].iter().zip(&runs[b]).map(|(x, y)| x / y).collect();
        ratios.sort_by(f64::total_cmp);
        Paired::of(&ratios)
    };
    let pairs: Vec<Paired> = [(1, 0), (1, 2), (3, 0), (4, 0), (4, 2), (5, 0), (6, 0), (4, 6), (7, 0), (4, 7)]
        .iter()
        .map(|&(a, b)| paired(a, b))
        .collect();
    let median: Vec<f64> = runs
        .iter_mut()
        .map(|r| {
            r.sort_by(f64::total_cmp);
            median_of(r)
        })
        .collect();
    println!("| server | requests/s, best run | p99 | server CPU per request | requests/s, median run |");
    println!("|---|---|---|---|---|");
    for (((name, _), (rps, p99, cpu_us)), median) in urls.iter().zip(&best).zip(&median) {
        if median.is_nan() {
            continue;
        }
        println!("| {name} | {rps:.0} | {p99:.2} ms | {cpu_us:.2} µs | {median:.0} |");
    }
    println!();
    // Best against best, median against median (the best of the rounds is the luckiest
    // draw of each server; the medians are steadier), and the median of the rounds' own
    // ratios.
    let ratio = |a: usize, b: usize, k: usize| {
        let Paired { median: paired, low, high } = pairs[k];
        format!(
            "{:.3} (medians {:.3}, rounds' ratios {paired:.3}, 95 % interval of that median {low:.3}..{high:.3})",
            best[a].0 / best[b].0,
            median[a] / median[b]
        )
    };
    // Each comparison whose two servers ran.
    let show = |label: &str, a: usize, b: usize, k: usize| {
        if !median[a].is_nan() && !median[b].is_nan() {
            println!("{label}: {}", ratio(a, b, k));
        }
    };
    show("ResilienceLayer / no layer (>= 0.95 the target, with request ids on as well)", 1, 0, 0);
    show("ResilienceLayer / tower + tower_governor (>= 1.0 the target, with request ids on as well)", 1, 2, 1);
    show("no layer with a fixed x-request-id / no layer (the header alone)", 3, 0, 2);
    show("ResilienceLayer without request ids / no layer (the target's four features: >= 0.95)", 4, 0, 3);
    show("ResilienceLayer without request ids / tower + tower_governor (the target's: >= 1.0)", 4, 2, 4);
    show("an empty layer / no layer (what any `Router::layer` costs)", 5, 0, 5);
    show("the floor / no layer (the least the four features cost)", 6, 0, 6);
    show("ResilienceLayer without request ids / the floor", 4, 6, 7);
    show("the parts / no layer (the core's components, the least glue)", 7, 0, 8);
    show("ResilienceLayer without request ids / the parts (what our glue costs)", 4, 7, 9);
}

/// User and system CPU time of this process so far, in seconds (from `/proc/self/stat`,
/// in clock ticks of 1/100 s).
fn process_cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command name (which may hold spaces) start at the state.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (ticks(11) / 100.0, ticks(12) / 100.0)
}

/// Each stack's time per request in this process, without sockets: a request handed to
/// the router on one thread and its answer dropped, best of five rounds of
/// `IN_PROCESS_REQUESTS` (default 200,000). The layer's own cost, apart from hyper, the
/// kernel and `wrk`; one thread, so no cache line moves between cores.
fn in_process() {
    use tower::{Service, ServiceExt};
    let requests: u32 = std::env::var("IN_PROCESS_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    let peer = axum::extract::ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000)));
    let mut nanos = Vec::new();
    let mut pairs = Vec::new();
    for (i, name) in STACKS.into_iter().enumerate() {
        if only().is_some_and(|only| only != i) {
            continue;
        }
        let app = app_for(i);
        let best = runtime.block_on(async {
            // As `axum::serve` has it: every route built once, not per request.
            let mut app = app.with_state::<()>(());
            let mut best = f64::INFINITY;
            let mut scratch = vec![0u8; evict_bytes()];
            for _ in 0..5 {
                let start = std::time::Instant::now();
                for _ in 0..requests {
                    let mut request = axum::http::Request::get("/").body(axum::body::Body::empty()).expect("request");
                    request.extensions_mut().insert(peer);
                    let service =
                        ServiceExt::<axum::http::Request<axum::body::Body>>::ready(&mut app).await.expect("ready");
                    let response = service.call(request).await.expect("answer");
                    assert_eq!(response.status(), StatusCode::OK);
                    evict(&mut scratch);
                }
                best = best.min(start.elapsed().as_nanos() as f64 / f64::from(requests));
            }
            best
        });
        eprintln!("in process, {name}: {best:.0} ns per request");
        let shared = on_two_threads(app_for(i), requests, peer);
        // What `scripts/code-footprint` divides by: five rounds on one thread, five on two.
        eprintln!("in process, {name}: {} requests in all", 15 * u64::from(requests));
        eprintln!("in process, two threads, {name}: {shared:.0} ns per request per thread");
        nanos.push((name, best));
        pairs.push((name, shared));
    }
    println!("| in process | one thread: ns per request | over no layer | two threads: ns per request per thread | over no layer |");
    println!("|---|---|---|---|---|");
    let bare = nanos.iter().find(|(name, _)| *name == "no layer").map(|(_, ns)| *ns);
    let bare_pairs = pairs.iter().find(|(name, _)| *name == "no layer").map(|(_, ns)| *ns);
    for ((name, ns), (_, two)) in nanos.iter().zip(&pairs) {
        println!(
            "| {name} | {ns:.0} | {:.0} | {two:.0} | {:.0} |",
            ns - bare.unwrap_or(f64::NAN),
            two - bare_pairs.unwrap_or(f64::NAN)
        );
    }
    println!();
}

/// The stacks compared, in order (`ONLY=N` picks one).
const STACKS: [&str; 8] = [
    "no layer",
    "ResilienceLayer",
    "tower + tower_governor",
    "no layer, x-request-id",
    "ResilienceLayer, no request id",
    "an empty layer",
    "the floor (see `floor`)",
    "the parts (see `parts`)",
];

/// Stack `i` of [`STACKS`].
fn app_for(i: usize) -> axum::Router {
    match i {
        0 => hello(),
        1 => ours(true),
        2 => tower_stack(),
        3 => hello_with_id(),
        4 => ours(false),
        5 => hello().layer(tower::layer::util::Identity::new()),
        6 => hello().layer(floor::Layer::new(10_000, 1e9, u32::MAX, Duration::from_secs(30))),
        _ => hello().layer(parts::Layer::new(10_000, 1e9, u32::MAX, Duration::from_secs(30))),
    }
}

/// The hello-world answering with a fixed `x-request-id` of the length the layer's own
/// ids have (25 bytes), and no layer: what the one header the layer adds to every answer
/// costs by itself (hyper writing it, the kernel carrying it, `wrk` parsing it, on the
/// same two cores), apart from any of the layer's work.
fn hello_with_id() -> axum::Router {
    axum::Router::new().route("/", get(|| async { ([("x-request-id", "0123abcd-00000000000a1b2c")], "hello") }))
}

/// The same router (one layer's state) called on two threads at once, each with a
/// current-thread runtime of its own: what the layers' shared state (counts, the
/// bulkhead, the client's limiter cell) costs when two cores share it, without sockets.
/// Best of five rounds of `requests` per thread; nanoseconds per request per thread.
fn on_two_threads(app: axum::Router, requests: u32, peer: axum::extract::ConnectInfo<SocketAddr>) -> f64 {
    use tower::{Service, ServiceExt};
    let app = app.with_state::<()>(());
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (mut app, barrier) = (app.clone(), std::sync::Arc::clone(&barrier));
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
                    runtime.block_on(async {
                        barrier.wait();
                        let start = std::time::Instant::now();
                        for _ in 0..requests {
                            let mut request =
                                axum::http::Request::get("/").body(axum::body::Body::empty()).expect("request");
                            request.extensions_mut().insert(peer);
                            let service = ServiceExt::<axum::http::Request<axum::body::Body>>::ready(&mut app)
                                .await
                                .expect("ready");
                            let response = service.call(request).await.expect("answer");
                            assert_eq!(response.status(), StatusCode::OK);
                        }
                        start.elapsed()
                    })
                })
            })
            .collect();
        let slowest = threads.into_iter().map(|t| t.join().expect("thread")).max().unwrap_or_default();
        best = best.min(slowest.as_nanos() as f64 / f64::from(requests));
    }
    best
}

/// The servers to load (`SERVERS=0,1,4`: those of [`STACKS`], in that order; default
/// all), so that a longer run can spend its rounds on the comparisons it is for.
fn servers() -> Vec<usize> {
    let Ok(list) = std::env::var("SERVERS") else { return (0..STACKS.len()).collect() };
    list.split(',')
        .map(|n| match n.trim().parse() {
            Ok(i) if i < STACKS.len() => i,
            _ => panic!("SERVERS={list}: {n:?} is not a server of 0..{} (see `STACKS`)", STACKS.len()),
        })
        .collect()
}

/// Rounds of `wrk` runs (`ROUNDS=N`, at least one; default two per server).
fn rounds() -> Option<usize> {
    let rounds = std::env::var("ROUNDS").ok()?;
    match rounds.trim().parse() {
        Ok(n) if n > 0 => Some(n),
        _ => panic!("ROUNDS={rounds}: not a number of rounds (1 or more)"),
    }
}

/// The middle of `sorted` (the upper one of an even count), `NaN` if it is empty.
fn median_of(sorted: &[f64]) -> f64 {
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The median of the rounds' ratios of two servers, and a distribution-free 95 %
/// confidence interval for it: the order statistics `j`th and `(n + 1 - j)`th of the
/// `n` sorted ratios, for the largest `j` whose binomial tail keeps the coverage at
/// 95 % or more (no interval, `NaN`, under six rounds).
#[derive(Clone, Copy)]
struct Paired {
    median: f64,
    low: f64,
    high: f64,
}

impl Paired {
    fn of(sorted: &[f64]) -> Self {
        let n = sorted.len();
        let median = median_of(sorted);
        // P(at most j - 1 of n fair coin flips are heads), for j = 1, 2, ...
        let (mut tail, mut choose, mut j) = (0.0, 1.0, 0);
        let each = 0.5f64.powi(n as i32);
        for k in 0..n / 2 {
            tail += choose * each;
            if 2.0 * tail > 0.05 {
                break;
            }
            j = k + 1;
            choose = choose * (n - k) as f64 / (k + 1) as f64;
        }
        match j {
            0 => Self { median, low: f64::NAN, high: f64::NAN },
            j => Self { median, low: sorted[j - 1], high: sorted[n - j] },
        }
    }
}

/// The one server to run (`ONLY=0` no layer, `1` ours, `2` the tower stack, `3` no layer
/// with a fixed `x-request-id`, `4` ours without request ids, `5` the empty layer, `6` the
/// floor, `7` the parts), for profiling: then `wrk` runs once against it.
fn only() -> Option<usize> {
    std::env::var("ONLY").ok().and_then(|v| v.parse().ok())
}

/// Bytes of memory the in-process loop writes between requests (`EVICT=N`, default 0):
/// what the kernel's TCP path does to the caches between two requests under `wrk`, so
/// that the layers' code and data are met cold, as they are there.
fn evict_bytes() -> usize {
    std::env::var("EVICT").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Writes one byte of every cache line of `scratch`.
#[inline(never)]
fn evict(scratch: &mut [u8]) {
    for line in scratch.chunks_mut(64) {
        line[0] = line[0].wrapping_add(1);
    }
    std::hint::black_box(scratch);
}

/// The floor: the least a layer with the target's four features can do per request, to
/// read our layer's ratio against (not a usable layer). Its state is leaked, so a
/// request takes no reference count; each feature is one or two atomics:
/// - the timeout: nothing while the answer is ready at once (a timer is armed at the
///   inner future's first `Pending`, as ours does; hello-world never returns one);
/// - the bulkhead: one word, a compare-and-swap to take a slot, an add to give it back;
/// - the route breaker: one state load, and a failure count that only 5xx answers write;
/// - the per-client limiter: the peer address hashed into a fixed table of 1,024
///   (address, GCRA arrival time) cells, with one clock read and one compare-and-swap
///   (a client whose cell another holds is let through: a floor need not be exact).
mod floor {
    use std::future::Future;
    use std::net::SocketAddr;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
    use std::task::{ready, Context, Poll};
    use std::time::{Duration, Instant};

    use axum::http::{Request, Response, StatusCode};

    const CELLS: usize = 1024;

    pub(crate) struct State {
        in_flight: AtomicUsize,
        max_in_flight: usize,
        open: AtomicBool,
        failures: AtomicU64,
        /// Per cell: the client's address (IPv4 as its number plus one; 0 when free)
        /// and its theoretical arrival time, in nanoseconds since `epoch`.
        cells: Box<[(AtomicU64, AtomicU64)]>,
        epoch: Instant,
        interval_nanos: u64,
        tolerance_nanos: u64,
        timeout: Duration,
    }

    #[derive(Clone, Copy)]
    pub(crate) struct Layer(&'static State);

    impl Layer {
        pub(crate) fn new(max_in_flight: usize, per_second: f64, burst: u32, timeout: Duration) -> Self {
            let interval_nanos = (1e9 / per_second).max(1.0) as u64;
            Self(Box::leak(Box::new(State {
                in_flight: AtomicUsize::new(0),
                max_in_flight,
                open: AtomicBool::new(false),
                failures: AtomicU64::new(0),
                cells: (0..CELLS).map(|_| (AtomicU64::new(0), AtomicU64::new(0))).collect(),
                epoch: Instant::now(),
                interval_nanos,
                tolerance_nanos: interval_nanos.saturating_mul(u64::from(burst)),
                timeout,
            })))
        }
    }

    impl<S> tower::Layer<S> for Layer {
        type Service = Service<S>;
        fn layer(&self, inner: S) -> Service<S> {
            Service { inner, state: self.0 }
        }
    }

    #[derive(Clone)]
    pub(crate) struct Service<S> {
        inner: S,
        state: &'static State,
    }

    /// An empty answer with `status` (the parts' refusals too).
    pub(super) fn refuse<B: Default>(status: StatusCode) -> Response<B> {
        let mut response = Response::new(B::default());
        *response.status_mut() = status;
        response
    }

    impl State {
        /// The GCRA verdict for `peer`'s cell.
        fn admit(&self, peer: Option<SocketAddr>) -> bool {
            let key = match peer {
                Some(SocketAddr::V4(a)) => u64::from(a.ip().to_bits()) + 1,
                Some(SocketAddr::V6(a)) => (a.ip().to_bits() as u64) | 1 << 63,
                None => return false,
            };
            let (owner, tat) = &self.cells[(key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize % CELLS];
            if owner.load(Relaxed) != key && owner.compare_exchange(0, key, Relaxed, Relaxed).is_err() {
                return true;
            }
            let now = self.epoch.elapsed().as_nanos() as u64;
            let mut current = tat.load(Relaxed);
            loop {
                let next = current.max(now) + self.interval_nanos;
                if next - now > self.tolerance_nanos {
                    return false;
                }
                match tat.compare_exchange_weak(current, next, Relaxed, Relaxed) {
                    Ok(_) => return true,
                    Err(actual) => current = actual,
                }
            }
        }

        fn take_slot(&self) -> bool {
            let mut n = self.in_flight.load(Relaxed);
            while n < self.max_in_flight {
                match self.in_flight.compare_exchange_weak(n, n + 1, Acquire, Relaxed) {
                    Ok(_) => return true,
                    Err(actual) => n = actual,
                }
            }
            false
        }
    }

    impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for Service<S>
    where
        S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
        ResBody: Default,
    {
        type Response = Response<ResBody>;
        type Error = S::Error;
        type Future = Answer<S::Future>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
            let state = self.state;
            let peer = request.extensions().get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0);
            if !state.admit(peer) {
                return Answer::Refused { status: Some(StatusCode::TOO_MANY_REQUESTS) };
            }
            if !state.take_slot() {
                return Answer::Refused { status: Some(StatusCode::SERVICE_UNAVAILABLE) };
            }
            if state.open.load(Relaxed) {
                state.in_flight.fetch_sub(1, Release);
                return Answer::Refused { status: Some(StatusCode::SERVICE_UNAVAILABLE) };
            }
            Answer::Running { future: self.inner.call(request), timer: None, slot: Slot(state) }
        }
    }

    /// A bulkhead slot, given back when dropped (with the answer, or a cancelled one).
    pub(crate) struct Slot(&'static State);

    impl Drop for Slot {
        fn drop(&mut self) {
            self.0.in_flight.fetch_sub(1, Release);
        }
    }

    pin_project_lite::pin_project! {
        /// The answer's future.
        #[project = AnswerProj]
        pub(crate) enum Answer<F> {
            Refused { status: Option<StatusCode> },
            Running { #[pin] future: F, timer: Option<Pin<Box<tokio::time::Sleep>>>, slot: Slot },
        }
    }

    impl<F, B, E> Future for Answer<F>
    where
        F: Future<Output = Result<Response<B>, E>>,
        B: Default,
    {
        type Output = Result<Response<B>, E>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            match self.project() {
                AnswerProj::Refused { status } => Poll::Ready(Ok(refuse(status.take().unwrap_or(StatusCode::OK)))),
                AnswerProj::Running { future, timer, slot } => {
                    let answer = match future.poll(cx) {
                        Poll::Ready(answer) => answer,
                        Poll::Pending => {
                            let timeout = slot.0.timeout;
                            let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                            ready!(sleep.as_mut().poll(cx));
                            Ok(refuse(StatusCode::GATEWAY_TIMEOUT))
                        }
                    };
                    if answer.as_ref().is_ok_and(|r| r.status().is_server_error()) {
                        slot.0.failures.fetch_add(1, Relaxed);
                    }
                    Poll::Ready(answer)
                }
            }
        }
    }
}

/// The parts: the crate's own components with the least glue around them, to tell what
/// the components cost from what our layer's glue costs (not a usable layer). Like the
/// floor, its state is leaked, so a request takes no reference count; unlike it, each
/// feature is the real one:
/// - the timeout: armed at the inner future's first `Pending`, as ours and the floor's;
/// - the bulkhead: the core's `SemaphoreBulkhead` (`take_free_slot`);
/// - the route breaker: axum's `MatchedPath` looked up, the service's own route known by
///   the address of its text (as ours), and that route's core `CircuitBreaker`, told of
///   every answer;
/// - the per-client limiter: the core's `KeyedRateLimiter` (exact, bounded), keyed by
///   the peer address, at one reading of tokio's clock;
/// - the request metrics: the route's `200` counter per method and its duration
///   histogram (the core's `Counters` and `DurationHistogram`, made once per route).
mod parts {
    use std::future::Future;
    use std::net::{IpAddr, SocketAddr};
    use std::num::{NonZeroU32, NonZeroUsize};
    use std::pin::Pin;
    use std::sync::{Mutex, OnceLock};
    use std::task::{ready, Context, Poll};
    use std::time::Duration;

    use axum::extract::{ConnectInfo, MatchedPath};
    use axum::http::{Request, Response, StatusCode};
    use resilience::aggregate::{Counters, DurationHistogram};

    use super::floor::refuse;
    use resilience::{
        BulkheadPermit, CallPermit, CircuitBreaker, CircuitBreakerConfig, KeyedRateLimiter, RateLimiterConfig,
        SemaphoreBulkhead, SemaphoreBulkheadConfig,
    };

    pub(crate) struct State {
        bulkhead: SemaphoreBulkhead,
        limiter: KeyedRateLimiter<IpAddr>,
        timeout: Duration,
        routes: Mutex<Vec<&'static Route>>,
    }

    /// A matched route's breaker and metric handles.
    pub(crate) struct Route {
        breaker: CircuitBreaker,
        /// By method (GET, HEAD, POST, other).
        ok: [OnceLock<Counters<1>>; 4],
        duration: [OnceLock<DurationHistogram>; 4],
        route: Box<str>,
    }

    #[derive(Clone, Copy)]
    pub(crate) struct Layer(&'static State);

    impl Layer {
        pub(crate) fn new(max_in_flight: usize, per_second: f64, burst: u32, timeout: Duration) -> Self {
            let bulkhead = SemaphoreBulkheadConfig {
                max_concurrent: NonZeroUsize::new(max_in_flight).expect("slots"),
                max_wait: Duration::ZERO,
            };
            let limit = RateLimiterConfig {
                rate: per_second,
                burst: NonZeroU32::new(burst).expect("burst"),
                max_keys: NonZeroUsize::new(10_000).expect("keys"),
                shared: false,
            };
            Self(Box::leak(Box::new(State {
                bulkhead: SemaphoreBulkhead::new("parts", bulkhead).expect("bulkhead"),
                limiter: KeyedRateLimiter::new("parts", limit).expect("limiter"),
                timeout,
                routes: Mutex::new(Vec::new()),
            })))
        }
    }

    impl State {
        /// The state of `text` (made and leaked on first use).
        #[cold]
        fn route(&self, text: &str) -> &'static Route {
            let mut routes = self.routes.lock().expect("routes");
            if let Some(route) = routes.iter().find(|r| &*r.route == text) {
                return route;
            }
            let config = CircuitBreakerConfig { failure_threshold: NonZeroU32::new(50), ..Default::default() };
            let route: &'static Route = Box::leak(Box::new(Route {
                breaker: CircuitBreaker::new(format!("parts {text}"), config).expect("breaker"),
                ok: Default::default(),
                duration: Default::default(),
                route: Box::from(text),
            }));
            routes.push(route);
            route
        }
    }

    impl Route {
        fn count(&self, method: usize, status: StatusCode, elapsed: impl FnOnce() -> Duration) {
            if status == StatusCode::OK {
                let ok = self.ok[method].get_or_init(|| {
                    Counters::new([metrics::counter!("parts_requests_total", "route" => self.route.to_string())])
                });
                ok.increment(0, 1);
            }
            let duration = self.duration[method].get_or_init(|| {
                DurationHistogram::new(metrics::histogram!("parts_duration_seconds", "route" => self.route.to_string()))
            });
            duration.record_with(elapsed);
        }
    }

    impl<S> tower::Layer<S> for Layer {
        type Service = Service<S>;
        fn layer(&self, inner: S) -> Service<S> {
            Service { inner, state: self.0, own: Box::leak(Box::new(OnceLock::new())) }
        }
    }

    #[derive(Clone)]
    pub(crate) struct Service<S> {
        inner: S,
        state: &'static State,
        /// The service's own route and axum's text of it.
        own: &'static OnceLock<(&'static Route, Option<MatchedPath>)>,
    }

    fn method_index(method: &axum::http::Method) -> usize {
        use axum::http::Method;
        match *method {
            Method::GET => 0,
            Method::HEAD => 1,
            Method::POST => 2,
            _ => 3,
        }
    }

    impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for Service<S>
    where
        S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
        ResBody: Default,
    {
        type Response = Response<ResBody>;
        type Error = S::Error;
        type Future = Answer<S::Future>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
            let state = self.state;
            let matched = request.extensions().get::<MatchedPath>();
            let text = matched.map_or("unmatched", MatchedPath::as_str);
            let (own, own_text) = self.own.get_or_init(|| (state.route(text), matched.cloned()));
            let same = match (own_text, matched) {
                (Some(a), Some(b)) => std::ptr::eq(a.as_str(), b.as_str()) || a.as_str() == b.as_str(),
                (None, None) => true,
                _ => false,
            };
            let route = if same { *own } else { state.route(text) };
            let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
            let Some(peer) = peer else { return Answer::Refused { status: Some(StatusCode::INTERNAL_SERVER_ERROR) } };
            let started = tokio::time::Instant::now();
            if state.limiter.check_key_at(&peer, started).is_err() {
                return Answer::Refused { status: Some(StatusCode::TOO_MANY_REQUESTS) };
            }
            let Some(slot) = state.bulkhead.take_free_slot() else {
                return Answer::Refused { status: Some(StatusCode::SERVICE_UNAVAILABLE) };
            };
            let Ok(permit) = route.breaker.try_acquire() else {
                return Answer::Refused { status: Some(StatusCode::SERVICE_UNAVAILABLE) };
            };
            let method = method_index(request.method());
            Answer::Running {
                future: self.inner.call(request),
                timer: None,
                held: Some(Held { permit, _slot: slot, route, started, method, timeout: state.timeout }),
            }
        }
    }

    /// What an admitted request holds until its answer.
    pub(crate) struct Held {
        permit: CallPermit<'static>,
        _slot: BulkheadPermit<'static>,
        route: &'static Route,
        started: tokio::time::Instant,
        method: usize,
        timeout: Duration,
    }

    pin_project_lite::pin_project! {
        /// The answer's future.
        #[project = AnswerProj]
        pub(crate) enum Answer<F> {
            Refused { status: Option<StatusCode> },
            Running { #[pin] future: F, timer: Option<Pin<Box<tokio::time::Sleep>>>, held: Option<Held> },
        }
    }

    impl<F, B, E> Future for Answer<F>
    where
        F: Future<Output = Result<Response<B>, E>>,
        B: Default,
    {
        type Output = Result<Response<B>, E>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            match self.project() {
                AnswerProj::Refused { status } => Poll::Ready(Ok(refuse(status.take().unwrap_or(StatusCode::OK)))),
                AnswerProj::Running { future, timer, held } => {
                    let answer = match future.poll(cx) {
                        Poll::Ready(answer) => answer,
                        Poll::Pending => {
                            let timeout = held.as_ref().map_or(Duration::ZERO, |h| h.timeout);
                            let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                            ready!(sleep.as_mut().poll(cx));
                            Ok(refuse(StatusCode::GATEWAY_TIMEOUT))
                        }
                    };
                    let Some(held) = held.take() else { panic!("polled after its answer") };
                    match &answer {
                        Ok(r) if !r.status().is_server_error() => held.permit.success(),
                        _ => held.permit.failure(),
                    }
                    let status = answer.as_ref().map_or(StatusCode::INTERNAL_SERVER_ERROR, |r| r.status());
                    let started = held.started;
                    held.route.count(held.method, status, || started.elapsed());
                    Poll::Ready(answer)
                }
            }
        }
    }
}
