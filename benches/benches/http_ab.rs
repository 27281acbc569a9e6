//! The HTTP pool against raw reqwest, interleaved: each round runs the same `concurrency`
//! GETs through the pool, then through the raw client with the same timeout, then
//! through the raw client alone, so that drift of the machine (the first benchmark of a
//! divan run measures slower) falls on all three alike. Medians over `ROUNDS` rounds.
//!
//! Run: `cargo bench -p resilience-benches --bench http_ab`

use std::future::Future;
use std::time::{Duration, Instant};

use resilience::{initialize_pools, pool_manager, HttpPoolConfig, PoolConfig};

#[path = "support/hello.rs"]
mod hello;

const ROUNDS: usize = 3_000;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    runtime.block_on(async {
        let url = format!("http://{}/", hello::start().await);
        resilience::register_api_dependency!("bench_http_ab", max_concurrent = 64);
        let config = HttpPoolConfig { max_connections_per_host: 64, health_check_path: None, ..Default::default() };
        initialize_pools(vec![PoolConfig::http("bench_http_ab", config)]).await.expect("pool");
        let pool = pool_manager().http("bench_http_ab").expect("pool");
        let client = pool.client().clone();
        for concurrency in [1usize, 32] {
            let mut times: [Vec<Duration>; 3] = [Vec::new(), Vec::new(), Vec::new()];
            for round in 0..ROUNDS + 100 {
                let t = [
                    timed(concurrency, || {
                        let (pool, url) = (pool.clone(), url.clone());
                        async move { pool.get(url).await.expect("answered").bytes().await.expect("body").len() }
                    })
                    .await,
                    timed(concurrency, || {
                        let (client, url) = (client.clone(), url.clone());
                        async move {
                            let r = client.get(url).timeout(Duration::from_secs(15)).send().await.expect("answered");
                            r.bytes().await.expect("body").len()
                        }
                    })
                    .await,
                    timed(concurrency, || {
                        let (client, url) = (client.clone(), url.clone());
                        async move { client.get(url).send().await.expect("answered").bytes().await.expect("body").len() }
                    })
                    .await,
                ];
                if round >= 100 {
                    for (i, d) in t.into_iter().enumerate() {
                        times[i].push(d);
                    }
                }
            }
            let [pool_t, timeout_t, raw_t] = times.map(|mut v| {
                v.sort();
                v[v.len() / 2]
            });
            let per_s = |d: Duration| concurrency as f64 / d.as_secs_f64();
            println!(
                "concurrency {concurrency:>2}: pool {:>8.1?} ({:>8.0}/s)  raw+timeout {:>8.1?} ({:>8.0}/s)  raw {:>8.1?} ({:>8.0}/s)  pool/raw throughput {:.3}  pool/raw+timeout {:.3}  p50 overhead vs raw {:.1?}",
                pool_t, per_s(pool_t), timeout_t, per_s(timeout_t), raw_t, per_s(raw_t),
                per_s(pool_t) / per_s(raw_t), per_s(pool_t) / per_s(timeout_t),
                pool_t.saturating_sub(raw_t),
            );
        }
    });
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
