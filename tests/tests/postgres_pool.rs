//! The PostgreSQL pool against real `postgres` servers on 127.0.0.1: a throwaway cluster
//! per test (see `servers.rs`), removed when the test ends.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::{Duration, Instant};

use crate::servers::PgServer;
use crate::support::{eventually, healthy, started_checker};
use resilience::{
    initialize_pools, pool_manager, BreakerOverrides, BulkheadOverrides, ConfigOverrides, DependencyType, PoolConfig,
    PoolError, PostgresPoolConfig, ResilienceError, RetryOverrides, TransactionError,
};

/// Registers `name` with no retries, the given breaker, and a bulkhead that leaves the
/// pool's own limit in charge; then makes the pool.
async fn pool(name: &str, config: PostgresPoolConfig, breaker: BreakerOverrides) -> resilience::PostgresPool {
    let own = ConfigOverrides {
        timeout: Some(Duration::from_secs(2)),
        retry: RetryOverrides { enabled: Some(false), ..Default::default() },
        circuit_breaker: breaker,
        bulkhead: BulkheadOverrides { max_concurrent: NonZeroUsize::new(1000), ..Default::default() },
        ..Default::default()
    };
    resilience::registry().register(name, DependencyType::Database, own).expect("valid");
    initialize_pools(vec![PoolConfig::postgres(name, config)]).await.expect("pool");
    pool_manager().postgres(name).expect("the pool")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_run_and_transactions_commit_or_roll_back() {
    let server = PgServer::new();
    let pg = pool("pg_basic", PostgresPoolConfig { url: server.url(), ..Default::default() }, Default::default()).await;
    pg.execute("CREATE TABLE items (id int PRIMARY KEY, name text)", &[]).await.expect("create");
    assert_eq!(pg.execute("INSERT INTO items VALUES ($1, $2)", &[&1i32, &"tea"]).await.expect("insert"), 1);
    let row = pg.query_one("SELECT name FROM items WHERE id = $1", &[&1i32]).await.expect("select");
    assert_eq!(row.get::<_, String>(0), "tea");

    let committed = pg
        .transaction(|tx| async move {
            tx.execute("INSERT INTO items VALUES (2, 'milk')", &[]).await?;
            tx.execute("INSERT INTO items VALUES (3, 'bread')", &[]).await?;
            Ok::<_, PoolError>("done")
        })
        .await;
    assert_eq!(committed.ok(), Some("done"));
    let rolled_back = pg
        .transaction(|tx| async move {
            tx.execute("INSERT INTO items VALUES (4, 'jam')", &[]).await?;
            Err::<(), PoolError>(PoolError::Config { pool: "pg_basic".into(), message: "changed my mind".into() })
        })
        .await;
    assert!(matches!(rolled_back, Err(TransactionError::Body(_))), "{rolled_back:?}");
    let ids: Vec<i32> =
        pg.query("SELECT id FROM items ORDER BY id", &[]).await.expect("ids").iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, [1, 2, 3], "the failed transaction left nothing");

    // A statement's own error is the caller's: named with its SQLSTATE, never counted.
    let breaker = pg_breaker("pg_basic");
    for _ in 0..10 {
        let e = pg.query("SELEC 1", &[]).await.unwrap_err();
        assert!(e.to_string().contains("42601"), "{e}");
        assert!(matches!(e, PoolError::Database { .. }), "{e:?}");
    }
    assert_eq!(breaker.state(), resilience::CircuitState::Closed, "syntax errors say nothing about the server");
    let duplicate = pg.execute("INSERT INTO items VALUES (1, 'again')", &[]).await.unwrap_err();
    assert!(duplicate.to_string().contains("23505"), "{duplicate}");

    // A connection of its own, under the pool's limit, back in the pool when dropped.
    let connection = pg.connection().await.expect("a connection");
    let n: i64 = connection.query_one("SELECT count(*) FROM items", &[]).await.expect("count").get(0);
    assert_eq!((n, pg.in_use()), (3, 1));
    drop(connection);
    assert_eq!(pg.in_use(), 0);
}

fn pg_breaker(name: &str) -> resilience::CircuitBreaker {
    resilience::registry().get(name).expect("registered").pipeline().circuit_breaker().expect("a breaker").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_dropped_mid_way_commits_nothing() {
    let server = PgServer::new();
    let config = PostgresPoolConfig { url: server.url(), max_connections: 2, ..Default::default() };
    let pg = pool("pg_dropped", config, Default::default()).await;
    pg.execute("CREATE TABLE ledger (amount int)", &[]).await.expect("create");
    let abandoned = tokio::time::timeout(Duration::from_millis(300), async {
        pg.transaction(|tx| async move {
            tx.execute("INSERT INTO ledger VALUES (100)", &[]).await?;
            std::future::pending::<()>().await;
            Ok::<_, PoolError>(())
        })
        .await
    })
    .await;
    assert!(abandoned.is_err(), "the transaction was dropped mid-way");
    for _ in 0..4 {
        let n: i64 = pg.query_one("SELECT count(*) FROM ledger", &[]).await.expect("count").get(0);
        assert_eq!(n, 0, "nothing committed, and no connection came back inside the open transaction");
    }
    assert_eq!(pg.in_use(), 0, "the slot came back");
}

/// Client backends connected to `server` now, counted by the server (one of them is
/// the counting connection itself).
async fn backends(server: &PgServer) -> i64 {
    let (client, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'", &[])
        .await
        .expect("count");
    row.get::<_, i64>(0) - 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_4_under_64_callers_never_opens_a_fifth_and_rejects_after_max_wait() {
    let server = PgServer::new();
    let config = PostgresPoolConfig {
        url: server.url(),
        max_connections: 4,
        max_wait: Duration::from_millis(300),
        ..Default::default()
    };
    let pg = pool("pg_capped", config, BreakerOverrides { enabled: Some(false), ..Default::default() }).await;
    let calls: Vec<_> = (0..64)
        .map(|_| {
            let pg = pg.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                (pg.query("SELECT pg_sleep(0.6)", &[]).await, started.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let during = backends(&server).await;
    assert!(during <= 4, "{during} connections while 64 callers wanted one");
    let (mut ok, mut rejected) = (0, 0);
    for call in calls {
        let (result, took) = call.await.expect("joined");
        match result {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(matches!(e.resilience(), Some(ResilienceError::BulkheadFull { .. })), "{e}");
                assert!(took < Duration::from_millis(900), "rejected after max_wait, not hung: {took:?}");
                rejected += 1;
            }
        }
    }
    assert!(ok >= 4 && rejected >= 48, "{ok} ran, {rejected} rejected");
    assert!(pg.open_connections() <= 4, "{}", pg.open_connections());
    assert!(backends(&server).await <= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_opens_the_breaker_and_everything_recovers_when_it_is_back() {
    let server = PgServer::new();
    let name = "pg_fault";
    let config = PostgresPoolConfig {
        url: server.url(),
        max_connections: 4,
        connect_timeout: Duration::from_millis(500),
        health_check_interval: Duration::from_millis(100),
        ..Default::default()
    };
    let breaker = BreakerOverrides {
        failure_threshold: NonZeroU32::new(3),
        recovery_timeout: Some(Duration::from_millis(500)),
        ..Default::default()
    };
    let pg = pool(name, config, breaker).await;
    let checker = started_checker(Duration::from_millis(200));
    eventually(Duration::from_secs(3), "healthy at first", async || healthy(&checker, name) == Some(true)).await;
    pg.query("SELECT 1", &[]).await.expect("works");

    server.stop();
    let stopped = Instant::now();
    for _ in 0..5 {
        let started = Instant::now();
        assert!(pg.query("SELECT 1", &[]).await.is_err(), "the server is down");
        assert!(started.elapsed() < Duration::from_millis(2_500), "no call waits past its timeout");
    }
    assert_eq!(pg_breaker(name).state(), resilience::CircuitState::Open);
    let started = Instant::now();
    let refused = pg.query("SELECT 1", &[]).await.unwrap_err();
    assert!(matches!(refused.resilience(), Some(ResilienceError::CircuitOpen { .. })), "{refused}");
    assert!(started.elapsed() < Duration::from_millis(50), "refused fast: {:?}", started.elapsed());
    let limit = Duration::from_millis(600 + 3 * 500 + 500);
    let what = "unhealthy within 3 x 200 ms (and the checks' own time)";
    eventually(limit, what, async || healthy(&checker, name) == Some(false)).await;
    assert!(stopped.elapsed() < Duration::from_secs(4));

    server.start();
    eventually(Duration::from_secs(5), "healthy again", async || healthy(&checker, name) == Some(true)).await;
    eventually(Duration::from_secs(5), "queries work again, the breaker closed", async || {
        pg.query("SELECT 1", &[]).await.is_ok() && pg_breaker(name).state() == resilience::CircuitState::Closed
    })
    .await;
    checker.stop();
}

#[test]
fn postgres_pools_come_from_the_settings_file_with_its_error_rules() {
    let yaml = "pools:\n  orders:\n    type: postgres\n    url: postgres://app@127.0.0.1:5433/orders\n    max_connections: 4\n    statement_timeout: 2s\n    recycle_check: false\n";
    let pools = resilience::pools_from_settings(&resilience::Settings::from_yaml_str(yaml).unwrap()).unwrap();
    let resilience::PoolKind::Postgres(pg) = &pools[0].kind else { panic!("postgres") };
    assert_eq!((pg.max_connections, pg.statement_timeout, pg.recycle_check), (4, Duration::from_secs(2), false));
    let err = |yaml: &str| resilience::Settings::from_yaml_str(yaml).unwrap_err().to_string();
    assert_eq!(
        err("pools:\n  p:\n    type: postgres\n"),
        "<string>:3: invalid `pools.p.type`: a `postgres` pool needs its `url`"
    );
    let bad = err("pools:\n  p:\n    type: postgres\n    url: 'host=127.0.0.1 port=notaport'\n");
    assert!(
        bad.starts_with("<string>:4: invalid `pools.p.url`: `host=127.0.0.1 port=notaport` is not a PostgreSQL URL"),
        "{bad}"
    );
    assert_eq!(
        err("pools:\n  p:\n    type: postgres\n    url: postgres://x@127.0.0.1/db\n    base_url: http://x\n"),
        "<string>:5: unknown key `pools.p.base_url`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_while_idle_is_replaced_without_a_failed_call() {
    let server = PgServer::new();
    let config = PostgresPoolConfig { url: server.url(), max_connections: 1, ..Default::default() };
    let pg = pool("pg_recycled", config, Default::default()).await;
    let pid: i32 = pg.query_one("SELECT pg_backend_pid()", &[]).await.expect("pid").get(0);
    let (admin, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    let killed: bool = admin.query_one("SELECT pg_terminate_backend($1)", &[&pid]).await.expect("terminate").get(0);
    assert!(killed);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let again: i32 = pg.query_one("SELECT pg_backend_pid()", &[]).await.expect("no failed call").get(0);
    assert_ne!(again, pid, "a new connection");
}
