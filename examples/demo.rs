//! The demo: a flaky downstream service and a shop service that depends on it, both on
//! 127.0.0.1, under a 16-second load test.
//!
//! - `inventory` (the downstream) answers `/stock` and `/price`; from 4 s to 9 s into
//!   the load it fails every request with a 500.
//! - `shop` is an axum service with `ResilienceLayer` and `web::routes()` (`/health`,
//!   `/metrics`, `/resilience`, `/resilience/dashboard`). Its `/stock` calls the
//!   downstream through the HTTP pool `inventory` (a named dependency: breaker, retry,
//!   bulkhead, timeout); its `/price` calls it from a function under
//!   `#[api_call(dependency = "pricing", fallback = …)]`. While a breaker is open, calls
//!   are refused at once, without touching the downstream, and answered from a fallback.
//! - `LoadTester` drives the shop with 16 virtual users, validates that the breakers
//!   opened under failure and closed again by themselves, and writes `demo-report.html`.
//! - Then, in a second: tail latency cut by hedging (a `search` dependency whose every
//!   tenth answer is slow, with and without `hedge`), and a retry budget holding a dead
//!   dependency's retries to a fifth of its calls.
//!
//! Run with `cargo run --release --example demo`. It exits with status 1 if a
//! validation failed.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use resilience::{
    api_call, pool_manager, BreakerOverrides, ConfigOverrides, DependencyType, HttpPoolConfig, LoadTestScenario,
    LoadTestType, LoadTester, MiddlewareConfig, PoolConfig, RateLimitConfig, ResilienceError, ResilienceLayer,
    RetryOverrides,
};

/// Whether the downstream fails every request now.
static FAILING: AtomicBool = AtomicBool::new(false);
/// When the load started (for the event log).
static STARTED: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Calls the shop refused because a breaker was open, and the slowest such refusal.
static REFUSED: AtomicU64 = AtomicU64::new(0);
static SLOWEST_REFUSAL_MICROS: AtomicU64 = AtomicU64::new(0);
static REFUSED_UNDER_A_MILLISECOND: AtomicU64 = AtomicU64::new(0);
/// Requests the downstream got while it was failing.
static DOWNSTREAM_FAILED: AtomicU64 = AtomicU64::new(0);

fn note_refusal(took: Duration) {
    REFUSED.fetch_add(1, SeqCst);
    if took < Duration::from_millis(1) {
        REFUSED_UNDER_A_MILLISECOND.fetch_add(1, SeqCst);
    }
    SLOWEST_REFUSAL_MICROS.fetch_max(took.as_micros() as u64, SeqCst);
}

/// The downstream: a little work, then an answer, or a 500 while failing.
async fn downstream(answer: &'static str) -> (StatusCode, &'static str) {
    tokio::time::sleep(Duration::from_millis(2)).await;
    if FAILING.load(SeqCst) {
        DOWNSTREAM_FAILED.fetch_add(1, SeqCst);
        (StatusCode::INTERNAL_SERVER_ERROR, "inventory is down")
    } else {
        (StatusCode::OK, answer)
    }
}

#[derive(Debug)]
enum ShopError {
    Downstream(String),
    Resilience(ResilienceError),
}

impl From<ResilienceError> for ShopError {
    fn from(e: ResilienceError) -> Self {
        Self::Resilience(e)
    }
}

/// The price, from the downstream, under the `pricing` dependency's policies.
#[api_call(dependency = "pricing", fallback = last_known_price)]
async fn price(client: &reqwest::Client, url: &str) -> Result<String, ShopError> {
    let response = client.get(url).send().await.map_err(|e| ShopError::Downstream(e.to_string()))?;
    if response.status().is_server_error() {
        return Err(ShopError::Downstream(format!("answered {}", response.status())));
    }
    response.text().await.map_err(|e| ShopError::Downstream(e.to_string()))
}

/// What `/price` answers when the downstream cannot.
fn last_known_price(_client: &reqwest::Client, _url: &str, error: ShopError) -> Result<String, ShopError> {
    Ok(match error {
        ShopError::Resilience(e) if e.is_rejection() => String::from("9.99 (last known: pricing is unavailable)"),
        ShopError::Resilience(e) => format!("9.99 (last known: {e})"),
        ShopError::Downstream(why) => format!("9.99 (last known: the inventory {why})"),
    })
}

#[derive(Clone)]
struct Shop {
    client: reqwest::Client,
    price_url: String,
}

/// `/stock`: through the HTTP pool `inventory`.
async fn stock() -> (StatusCode, String) {
    let started = Instant::now();
    let pool = match pool_manager().http("inventory") {
        Ok(pool) => pool,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    match pool.get("/stock").await {
        Ok(response) if response.status().is_success() => match response.text().await {
            Ok(text) => (StatusCode::OK, format!("in stock: {text}")),
            Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()),
        },
        Ok(_) => (StatusCode::OK, String::from("stock unknown (the inventory failed)")),
        Err(e) => {
            if matches!(e.resilience(), Some(ResilienceError::CircuitOpen { .. })) {
                note_refusal(started.elapsed());
            }
            (StatusCode::OK, String::from("stock unknown (the inventory is unavailable)"))
        }
    }
}

/// `/price`: through the `#[api_call]` function.
async fn price_route(State(shop): State<Shop>) -> (StatusCode, String) {
    let started = Instant::now();
    let pricing_open = resilience::registry()
        .get("pricing")
        .and_then(|d| d.pipeline().circuit_breaker().map(|b| b.state() == resilience::CircuitState::Open))
        .unwrap_or(false);
    let answer = price(&shop.client, &shop.price_url).await;
    if pricing_open {
        note_refusal(started.elapsed());
    }
    match answer {
        Ok(text) => (StatusCode::OK, text),
        Err(_) => (StatusCode::BAD_GATEWAY, String::from("no price")),
    }
}

async fn serve(app: axum::Router) -> Result<SocketAddr, std::io::Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
    });
    Ok(addr)
}

/// The policies of both dependencies: a breaker that opens after 5 failures of its
/// last 100 calls and tries again after 2 s, two attempts, a 1 s timeout.
fn policies() -> ConfigOverrides {
    ConfigOverrides {
        timeout: Some(Duration::from_secs(1)),
        circuit_breaker: BreakerOverrides {
            failure_threshold: NonZeroU32::new(5),
            recovery_timeout: Some(Duration::from_secs(2)),
            ..Default::default()
        },
        retry: RetryOverrides {
            max_attempts: NonZeroU32::new(2),
            base_delay: Some(Duration::from_millis(20)),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn watch_breaker(name: &'static str) {
    let Some(dependency) = resilience::registry().get(name) else { return };
    let Some(breaker) = dependency.pipeline().circuit_breaker().cloned() else { return };
    breaker.subscribe(move |t| {
        println!(
            "  {:>5.1} s  breaker `{name}`: {} -> {} ({})",
            STARTED.elapsed().as_secs_f64(),
            t.from,
            t.to,
            t.reason
        );
    });
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    resilience::install_crypto_provider();
    let inventory = serve(
        axum::Router::new().route("/stock", get(|| downstream("42"))).route("/price", get(|| downstream("9.99"))),
    )
    .await?;

    resilience::registry().register("inventory", DependencyType::ExternalApi, policies())?;
    resilience::registry().register("pricing", DependencyType::ExternalApi, policies())?;
    resilience::initialize_pools(vec![PoolConfig::http(
        "inventory",
        HttpPoolConfig {
            base_url: Some(format!("http://{inventory}")),
            max_connections: 64,
            max_connections_per_host: 32,
            ..Default::default()
        },
    )])
    .await?;
    watch_breaker("inventory");
    watch_breaker("pricing");

    let shop = Shop { client: reqwest::Client::builder().build()?, price_url: format!("http://{inventory}/price") };
    let app = axum::Router::new()
        .route("/stock", get(stock))
        .route("/price", get(price_route))
        .with_state(shop)
        .merge(resilience::web::routes())
        .layer(ResilienceLayer::new(MiddlewareConfig {
            request_timeout: Duration::from_secs(5),
            bulkhead_max_concurrent: 200,
            rate_limit: Some(RateLimitConfig::per_client(100_000.0, 10_000)),
            excluded_paths: vec!["/health".into(), "/metrics".into(), "/resilience".into()],
            ..Default::default()
        }));
    let shop_addr = serve(app).await?;
    println!("inventory (the flaky downstream) on http://{inventory}");
    println!("shop on http://{shop_addr}; its dashboard: http://{shop_addr}/resilience/dashboard\n");

    println!("16 s of load on /stock and /price (16 users); the inventory fails from 4 s to 9 s:");
    LazyLock::force(&STARTED);
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_secs(4)).await;
        println!("  {:>5.1} s  the inventory starts failing", STARTED.elapsed().as_secs_f64());
        FAILING.store(true, SeqCst);
        tokio::time::sleep(Duration::from_secs(5)).await;
        FAILING.store(false, SeqCst);
        println!("  {:>5.1} s  the inventory is back", STARTED.elapsed().as_secs_f64());
    });
    let scenario = LoadTestScenario {
        name: String::from("demo: a downstream outage"),
        test_type: LoadTestType::Sustained,
        max_users: 16,
        duration: Duration::from_secs(16),
        think_time: Duration::from_millis(10),
        target_url: format!("http://{shop_addr}"),
        request_paths: vec![String::from("/stock"), String::from("/price")],
        validate_circuit_breakers: true,
        recovery_wait: Duration::from_secs(10),
        ..Default::default()
    };
    let results = LoadTester::new(scenario).run().await?;

    let l = &results.latency;
    println!(
        "\nThe load: {} requests, {} failed, {:.0} requests/s",
        results.total_requests, results.failed_requests, results.throughput
    );
    println!("  latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", ms(l.p50), ms(l.p99), ms(l.max));
    println!(
        "  while a breaker was open, {} calls were refused without calling the inventory and answered from fallbacks:",
        REFUSED.load(SeqCst)
    );
    println!(
        "  {} of them in under 1 ms; the slowest took {:.1} ms",
        REFUSED_UNDER_A_MILLISECOND.load(SeqCst),
        SLOWEST_REFUSAL_MICROS.load(SeqCst) as f64 / 1e3
    );
    println!("  the inventory got {} requests while it was failing", DOWNSTREAM_FAILED.load(SeqCst));
    println!("\nValidations:");
    for v in &results.validations {
        println!("  [{}] {}: {}", if v.passed { "pass" } else { "FAIL" }, v.name, v.detail);
    }
    results.write_html("demo-report.html")?;
    tail_and_budget().await?;
    println!(
        "\nReport: demo-report.html. The dashboard was at http://{shop_addr}/resilience/dashboard while the demo ran."
    );
    if !results.passed() {
        return Err("a validation failed".into());
    }
    Ok(())
}

/// The dead dependency's answer.
#[derive(Debug)]
struct Dead;

impl From<ResilienceError> for Dead {
    fn from(_: ResilienceError) -> Self {
        Dead
    }
}

/// The second act: hedging against a slow tail, and a retry budget against a retry storm.
async fn tail_and_budget() -> Result<(), Box<dyn std::error::Error>> {
    use std::sync::Arc;

    use resilience::{HedgeConfig, HedgeDelay, Jitter, Pipeline, RetryBudgetConfig, RetryConfig};

    println!("\nTail latency: 200 searches, every tenth first answer takes 300 ms, the rest 5 ms:");
    let plain = Arc::new(Pipeline::builder("search_plain").build()?);
    let hedge = HedgeConfig {
        max_attempts: NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN),
        delay: HedgeDelay::After(Duration::from_millis(20)),
    };
    let hedged = Arc::new(Pipeline::builder("search_hedged").hedge(hedge).build()?);
    for (label, pipeline) in [("without hedging", plain), ("hedged after 20 ms", hedged)] {
        let attempts = Arc::new(AtomicU64::new(0));
        let mut calls = Vec::new();
        for i in 0..200u64 {
            let (pipeline, attempts) = (Arc::clone(&pipeline), Arc::clone(&attempts));
            calls.push(tokio::spawn(async move {
                let begun = Instant::now();
                let first = Arc::new(AtomicBool::new(true));
                let _ = pipeline
                    .call_idempotent(|| {
                        let (attempts, first) = (Arc::clone(&attempts), Arc::clone(&first));
                        async move {
                            attempts.fetch_add(1, SeqCst);
                            let slow = i % 10 == 0 && first.swap(false, SeqCst);
                            tokio::time::sleep(Duration::from_millis(if slow { 300 } else { 5 })).await;
                            Ok::<_, ResilienceError>(())
                        }
                    })
                    .await;
                begun.elapsed()
            }));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut latencies = Vec::new();
        for c in calls {
            latencies.push(c.await?);
        }
        latencies.sort();
        println!(
            "  {label:<20} p50 {:>6.1} ms, p99 {:>6.1} ms, {} attempts",
            ms(latencies[latencies.len() / 2]),
            ms(latencies[latencies.len() * 99 / 100 - 1]),
            attempts.load(SeqCst)
        );
    }

    println!("\nA retry storm: 2,000 calls to a dead dependency, 4 attempts each allowed:");
    let retry = RetryConfig {
        max_attempts: NonZeroU32::new(4).unwrap_or(NonZeroU32::MIN),
        base_delay: Duration::from_millis(1),
        jitter: Jitter::None,
        ..Default::default()
    };
    let budget = RetryBudgetConfig { min_per_second: 0, ..Default::default() };
    for (label, pipeline) in [
        ("plain retries", Pipeline::builder("dead_plain").retry(retry).build()?),
        ("with a 20 % budget", Pipeline::builder("dead_budget").retry(retry).retry_budget(budget).build()?),
    ] {
        let attempts = AtomicU64::new(0);
        for _ in 0..2_000 {
            let _ = pipeline
                .call(|| {
                    attempts.fetch_add(1, SeqCst);
                    async { Err::<(), _>(Dead) }
                })
                .await;
        }
        println!("  {label:<20} the dependency got {} attempts for 2,000 calls", attempts.load(SeqCst));
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
