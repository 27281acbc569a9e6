//! The Redis and PostgreSQL pools against their raw clients, in one run, against the
//! same local servers (started here: `redis-server` and a throwaway PostgreSQL cluster
//! on free ports of 127.0.0.1, see `tests/tests/servers.rs`): a Redis `GET` through
//! `RedisPool` (its dependency has the `Cache` preset) against a raw redis-rs
//! `MultiplexedConnection` (32 of each, used in turn: see `CONNECTIONS`), and
//! `SELECT 1` through `PostgresPool` (`Database` preset) against raw deadpool-postgres,
//! at 1 and 32 concurrent callers. Each round runs ours
//! and the raw client, ours first in even rounds and second in odd ones (a fixed order
//! favours one side: see the HTTP pool's `http_ab`), so that the machine's drift falls
//! on both alike; latencies are each operation's, throughputs each round's.
//!
//! Run: `cargo bench -p resilience-benches --bench pools` (needs `redis-server` and
//! PostgreSQL: `scripts/test` installs them). With `DIST=1` each comparison also prints
//! both sides' latency quantiles and mean, and the process's CPU time (user and system,
//! every thread) per operation of each side: the measure that found what a command
//! costs beyond the raw client's, where latencies vary too much from run to run to show
//! it. With `REDIS_ONLY=1` the run stops after the Redis comparison.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../../tests/tests/servers.rs"]
mod servers;

/// Rounds per comparison. With 200, the Redis ratio at 32 callers moved from run to run
/// by ±0.06 (1.03 to 1.16 at p50 in eight runs) around a steady difference; with 800 by
/// about ±0.02.
const ROUNDS: usize = 800;

/// Redis connections per side, used in turn by the rounds. One multiplexed connection's
/// latency at 32 callers depends on where its driver task runs: six raw connections made
/// one after another in one process had medians from 70 to 98 µs, each keeping its own
/// for the whole run. With one connection a side, a run compared two draws of that; with
/// several each side gets a mix. At one caller the draw is starker: a connection is
/// either fast (a median of 20–28 µs) or slow (46–64 µs) for the whole run, on either
/// side, so the median of a side with eight connections moved with how many of its eight
/// came out slow (ratios from 0.54 to 1.24 at one caller in six runs). With 32 a side the
/// mix varies less: 0.93–0.99 in four runs.
const CONNECTIONS: usize = 32;

/// `a` and `b` one after the other, `a` first in even rounds and second in odd ones: the
/// first of a pair finds the machine as the previous round left it, so neither side may
/// always be first.
async fn in_turn<A: Future, B: Future>(
    round: usize,
    a: impl FnOnce() -> A,
    b: impl FnOnce() -> B,
) -> (A::Output, B::Output) {
    if round.is_multiple_of(2) {
        let x = a().await;
        (x, b().await)
    } else {
        let y = b().await;
        (a().await, y)
    }
}

/// `GET k` as a raw redis-rs user writes it (`AsyncCommands::get`: the command is built
/// for each call, as the pool builds it from its key).
async fn raw_get<C: redis::aio::ConnectionLike + Send + Sync>(conn: &mut C) -> Option<String> {
    redis::AsyncCommands::get(conn, "k").await.expect("get")
}

/// What one round measured.
struct Round {
    /// Every operation's latency.
    latencies: Vec<Duration>,
    /// The round's time.
    took: Duration,
    /// The process's CPU time in the round (every thread's, user and system).
    cpu: Duration,
}

/// `callers` tasks each running `op` `each` times.
async fn round<F, Fut>(callers: usize, each: usize, op: F) -> Round
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let (started, cpu) = (Instant::now(), cpu_time());
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let op = Arc::clone(&op);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(each);
                for _ in 0..each {
                    let at = Instant::now();
                    op().await;
                    latencies.push(at.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(callers * each);
    for t in tasks {
        all.extend(t.await.expect("joined"));
    }
    Round { latencies: all, took: started.elapsed(), cpu: cpu_time() - cpu }
}

/// A round of `op` on a clone of `handle` per operation.
async fn round_on<H, F, Fut>(callers: usize, each: usize, handle: &H, op: F) -> Round
where
    H: Clone + Send + Sync + 'static,
    F: Fn(H) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let handle = handle.clone();
    round(callers, each, move || op(handle.clone())).await
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

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    throughputs: Vec<f64>,
    cpu: Duration,
}

impl Tally {
    fn add(&mut self, round: Round) {
        self.cpu += round.cpu;
        self.throughputs.push(round.latencies.len() as f64 / round.took.as_secs_f64());
        self.latencies.extend(round.latencies);
    }

    fn p50(&mut self) -> Duration {
        self.latencies.sort();
        self.latencies[self.latencies.len() / 2]
    }

    fn throughput(&mut self) -> f64 {
        self.throughputs.sort_by(f64::total_cmp);
        self.throughputs[self.throughputs.len() / 2]
    }
}

fn report(what: &str, callers: usize, ours: &mut Tally, raw: &mut Tally) {
    let (p50_ours, p50_raw) = (ours.p50(), raw.p50());
    let (t_ours, t_raw) = (ours.throughput(), raw.throughput());
    if std::env::var_os("DIST").is_some() {
        for (n, t) in [("ours", &ours.latencies), ("raw", &raw.latencies)] {
            let q = |f: f64| t[((t.len() as f64 * f) as usize).min(t.len() - 1)].as_secs_f64() * 1e6;
            let mean = t.iter().map(|d| d.as_secs_f64()).sum::<f64>() / t.len() as f64 * 1e6;
            eprintln!(
                "{what} {callers} {n}: p10 {:.1} p25 {:.1} p50 {:.1} p75 {:.1} p90 {:.1} p99 {:.1} mean {:.1}",
                q(0.1),
                q(0.25),
                q(0.5),
                q(0.75),
                q(0.9),
                q(0.99),
                mean
            );
        }
        let per_op = |t: &Tally| t.cpu.as_secs_f64() * 1e6 / t.latencies.len() as f64;
        eprintln!("{what} {callers}: CPU per operation ours {:.2} µs, raw {:.2} µs", per_op(ours), per_op(raw));
    }
    println!(
        "| {what} | {callers} | {:.1} µs | {:.1} µs | {:.3} | {:.0}/s | {:.0}/s | {:.3} |",
        p50_ours.as_secs_f64() * 1e6,
        p50_raw.as_secs_f64() * 1e6,
        p50_ours.as_secs_f64() / p50_raw.as_secs_f64(),
        t_ours,
        t_raw,
        t_ours / t_raw
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let redis_server = servers::Server::standalone();
    let pg_server = servers::PgServer::new();
    runtime.block_on(async {
        // Both dependencies keep their presets, with a bulkhead wide enough for 32
        // callers (the `Database` preset's is 10 at once, which would refuse the rest).
        let redis_names: Vec<String> = (0..CONNECTIONS).map(|i| format!("bench_redis_{i}")).collect();
        for name in redis_names.iter().map(String::as_str).chain(["bench_pg"]) {
            let own = resilience::ConfigOverrides {
                bulkhead: resilience::BulkheadOverrides {
                    max_concurrent: std::num::NonZeroUsize::new(64),
                    ..Default::default()
                },
                ..Default::default()
            };
            use resilience::DependencyType::{Cache, Database};
            let kind = if name == "bench_pg" { Database } else { Cache };
            resilience::registry().register(name, kind, own).expect("registered");
        }
        let redis_config = resilience::RedisPoolConfig { port: redis_server.port, ..Default::default() };
        let pg_config =
            resilience::PostgresPoolConfig { url: pg_server.url(), max_connections: 32, ..Default::default() };
        let mut pools: Vec<_> =
            redis_names.iter().map(|name| resilience::PoolConfig::redis(name, redis_config.clone())).collect();
        pools.push(resilience::PoolConfig::postgres("bench_pg", pg_config));
        resilience::initialize_pools(pools).await.expect("pools");
        let mut ours_redis = Vec::new();
        for name in &redis_names {
            let pool = resilience::pool_manager().redis(name).expect("redis pool");
            pool.set("k", "value").await.expect("set");
            ours_redis.push(pool);
        }
        let ours_pg = resilience::pool_manager().postgres("bench_pg").expect("pg pool");
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", redis_server.port)).expect("client");
        let mut raw_redis = Vec::new();
        for _ in 0..CONNECTIONS {
            raw_redis.push(client.get_multiplexed_async_connection().await.expect("raw redis"));
        }
        let raw_pg = {
            let config: tokio_postgres::Config = pg_server.url().parse().expect("url");
            let manager = deadpool_postgres::Manager::from_config(
                config,
                tokio_postgres::NoTls,
                deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast },
            );
            deadpool_postgres::Pool::builder(manager).max_size(32).build().expect("raw pg")
        };

        println!(
            "| operation | callers | p50 ours | p50 raw | p50 ratio | \
             throughput ours | throughput raw | throughput ratio |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for (callers, each) in [(1, 20), (32, 10)] {
            let (mut ours, mut raw) = (Tally::default(), Tally::default());
            for r in 0..ROUNDS {
                let (x, y) = in_turn(
                    r,
                    || {
                        round_on(callers, each, &ours_redis[(r / 2) % CONNECTIONS], |pool| async move {
                            pool.get::<String>("k").await.expect("get");
                        })
                    },
                    || {
                        round_on(callers, each, &raw_redis[(r / 2) % CONNECTIONS], |mut conn| async move {
                            raw_get(&mut conn).await;
                        })
                    },
                )
                .await;
                ours.add(x);
                raw.add(y);
            }
            report("Redis GET", callers, &mut ours, &mut raw);
        }
        if std::env::var_os("REDIS_ONLY").is_some() {
            return;
        }
        // Why the pool multiplexes: deadpool-redis (a connection per caller at a time)
        // against the raw multiplexed connection, same servers, same rounds.
        let deadpool_redis = deadpool_redis::Config::from_url(format!("redis://127.0.0.1:{}/", redis_server.port))
            .builder()
            .expect("deadpool-redis config")
            .max_size(32)
            .runtime(deadpool_redis::Runtime::Tokio1)
            .build()
            .expect("deadpool-redis");
        for (callers, each) in [(1, 20), (32, 10)] {
            let (mut pooled, mut raw) = (Tally::default(), Tally::default());
            for r in 0..ROUNDS {
                let (x, y) = in_turn(
                    r,
                    || {
                        round_on(callers, each, &deadpool_redis, |pool| async move {
                            let mut conn = pool.get().await.expect("connection");
                            raw_get(&mut conn).await;
                        })
                    },
                    || {
                        round_on(callers, each, &raw_redis[(r / 2) % CONNECTIONS], |mut conn| async move {
                            raw_get(&mut conn).await;
                        })
                    },
                )
                .await;
                pooled.add(x);
                raw.add(y);
            }
            report("Redis GET: deadpool-redis / multiplexed", callers, &mut pooled, &mut raw);
        }
        // 32 callers first: each pool then holds 32 connections, which one caller takes in
        // turn (deadpool hands out the longest idle first), so both sides meet the same mix
        // of backend processes. With one connection each, which core its backend runs on
        // decides everything: two raw deadpool pools differed 5.5x at 1 caller.
        for (callers, each) in [(32, 10), (1, 20)] {
            let (mut ours, mut raw) = (Tally::default(), Tally::default());
            for r in 0..ROUNDS {
                let (x, y) = in_turn(
                    r,
                    || {
                        round_on(callers, each, &ours_pg, |pool| async move {
                            pool.query_one("SELECT 1", &[]).await.expect("select");
                        })
                    },
                    || {
                        round_on(callers, each, &raw_pg, |pool| async move {
                            pool.get().await.expect("connection").query_one("SELECT 1", &[]).await.expect("select");
                        })
                    },
                )
                .await;
                ours.add(x);
                raw.add(y);
            }
            report("PostgreSQL SELECT 1", callers, &mut ours, &mut raw);
        }
        // The checkout alone (take a connection, give it back): ours (the pool's slot,
        // then deadpool), deadpool-postgres, and bb8 (bb8-postgres), 32 connections each.
        // bb8 tests every connection it hands out by default (a round trip to the
        // server, about 90 µs here); neither deadpool's `Fast` recycling nor ours (which
        // checks only a connection idle for a while) does, so bb8's test is off too.
        let bb8 = {
            let config: tokio_postgres::Config = pg_server.url().parse().expect("url");
            let manager = bb8_postgres::PostgresConnectionManager::new(config, tokio_postgres::NoTls);
            bb8::Pool::builder().max_size(32).test_on_check_out(false).build(manager).await.expect("bb8")
        };
        for (callers, each) in [(1, 50), (32, 20)] {
            let (mut ours, mut deadpool, mut bb8_tally) = (Tally::default(), Tally::default(), Tally::default());
            for r in 0..ROUNDS {
                let (x, (y, z)) = in_turn(
                    r,
                    || {
                        round_on(callers, each, &ours_pg, |pool| async move {
                            drop(pool.connection().await.expect("checkout"));
                        })
                    },
                    || async {
                        let y = round_on(callers, each, &raw_pg, |pool| async move {
                            drop(pool.get().await.expect("checkout"));
                        })
                        .await;
                        let z = round_on(callers, each, &bb8, |pool| async move {
                            drop(pool.get().await.expect("checkout"));
                        })
                        .await;
                        (y, z)
                    },
                )
                .await;
                ours.add(x);
                deadpool.add(y);
                bb8_tally.add(z);
            }
            let mut deadpool_again = Tally {
                latencies: deadpool.latencies.clone(),
                throughputs: deadpool.throughputs.clone(),
                cpu: deadpool.cpu,
            };
            report("PostgreSQL checkout: ours / deadpool", callers, &mut ours, &mut deadpool);
            report("PostgreSQL checkout: bb8 / deadpool", callers, &mut bb8_tally, &mut deadpool_again);
        }
    });
}
