//! One round of `concurrency` GETs (1 or 32 at once) over loopback to a hyper server in
//! this process (on a thread of its own, outside the clients' runtime, as a dependency
//! runs), through an `HttpPool`, through the same kind of reqwest client used raw, and
//! through hyper-util's client. Throughput is `concurrency / median`; the pool's p50
//! overhead is its median minus raw reqwest's at concurrency 1.
//!
//! Run: `cargo bench -p resilience-benches --bench http`

use std::net::SocketAddr;
use std::sync::LazyLock;

use bytes::Bytes;
use divan::Bencher;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioExecutor;
use resilience::{initialize_pools, pool_manager, HttpPool, HttpPoolConfig, PoolConfig};

#[path = "support/hello.rs"]
mod hello;

fn main() {
    divan::main();
}

const CONCURRENCY: &[usize] = &[1, 32];

/// The clients' runtime (two workers, like the machine's two cores).
static RUNTIME: LazyLock<tokio::runtime::Runtime> =
    LazyLock::new(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt"));

static SERVER: LazyLock<SocketAddr> = LazyLock::new(hello::start_on_own_thread);

fn url() -> String {
    format!("http://{}/", *SERVER)
}

static POOL: LazyLock<HttpPool> = LazyLock::new(|| {
    RUNTIME.block_on(async {
        let config = HttpPoolConfig { max_connections_per_host: 64, health_check_path: None, ..Default::default() };
        // The ExternalApi preset: breaker, retries, a 15-slot bulkhead, a 15 s timeout.
        // A bulkhead large enough for 32 at once keeps the comparison about overhead.
        resilience::register_api_dependency!("bench_http", max_concurrent = 64);
        initialize_pools(vec![PoolConfig::http("bench_http", config)]).await.expect("pool");
        pool_manager().http("bench_http").expect("pool")
    })
});

static REQWEST: LazyLock<reqwest::Client> = LazyLock::new(|| {
    // The pool's own client settings, without the pool.
    POOL.client().clone()
});

type HyperClient = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

static HYPER: LazyLock<HyperClient> =
    LazyLock::new(|| hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http());

fn round<F, Fut>(bencher: Bencher, concurrency: usize, get: F)
where
    F: Fn() -> Fut + Sync,
    Fut: std::future::Future<Output = usize> + Send + 'static,
{
    let run = || {
        RUNTIME.block_on(async {
            let calls: Vec<_> = (0..concurrency).map(|_| tokio::spawn(get())).collect();
            let mut bytes = 0;
            for call in calls {
                bytes += call.await.expect("joined");
            }
            assert_eq!(bytes, 5 * concurrency);
        })
    };
    run(); // connections opened outside the measurement
    bencher.counter(divan::counter::ItemsCount::new(concurrency)).bench(run);
}

#[divan::bench(args = CONCURRENCY, sample_count = 100, sample_size = 20)]
fn through_http_pool(bencher: Bencher, concurrency: usize) {
    let url = url();
    LazyLock::force(&POOL);
    round(bencher, concurrency, || {
        let (pool, url) = (POOL.clone(), url.clone());
        async move { pool.get(url).await.expect("answered").bytes().await.expect("body").len() }
    });
}

#[divan::bench(args = CONCURRENCY, sample_count = 100, sample_size = 20)]
fn reqwest_raw(bencher: Bencher, concurrency: usize) {
    let url = url();
    LazyLock::force(&REQWEST);
    round(bencher, concurrency, || {
        let (client, url) = (REQWEST.clone(), url.clone());
        async move { client.get(url).send().await.expect("answered").bytes().await.expect("body").len() }
    });
}

#[divan::bench(args = CONCURRENCY, sample_count = 100, sample_size = 20)]
fn hyper_util_client(bencher: Bencher, concurrency: usize) {
    let uri: hyper::Uri = url().parse().expect("uri");
    LazyLock::force(&HYPER);
    round(bencher, concurrency, || {
        let (client, uri) = (HYPER.clone(), uri.clone());
        async move {
            let response = client.get(uri).await.expect("answered");
            response.into_body().collect().await.expect("body").to_bytes().len()
        }
    });
}

/// Raw reqwest with a per-request timeout, as the pool's dependency has one (15 s).
#[divan::bench(args = CONCURRENCY, sample_count = 100, sample_size = 20)]
fn reqwest_raw_with_timeout(bencher: Bencher, concurrency: usize) {
    let url = url();
    LazyLock::force(&REQWEST);
    round(bencher, concurrency, || {
        let (client, url) = (REQWEST.clone(), url.clone());
        async move {
            let response = client.get(url).timeout(std::time::Duration::from_secs(15)).send().await.expect("answered");
            response.bytes().await.expect("body").len()
        }
    });
}
