//! Presets, precedence, the registry and the manager.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use resilience::{
    BreakerOverrides, Bulkhead, BulkheadKind, BulkheadOverrides, CircuitState, ConfigOverrides, Defaults,
    DependencyKind, DependencyType, Registry, ResilienceConfig, ResilienceManager, ResilienceStrategy, RetryOverrides,
};

use crate::support::{nz, nzu, AppError};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn strategy_presets_have_the_documented_numbers() {
    let defaults = Defaults::default();
    let table = [
        (ResilienceStrategy::InternalService, 10, 3, 3, 50, Some(100)),
        (ResilienceStrategy::ExternalService, 30, 5, 5, 1_000, Some(25)),
        (ResilienceStrategy::Database, 5, 3, 2, 100, Some(200)),
        (ResilienceStrategy::Cache, 2, 20, 2, 10, None),
    ];
    for (strategy, timeout, failures, attempts, base_ms, bulkhead) in table {
        let c = defaults.resolve(DependencyKind::Strategy(strategy), &ConfigOverrides::default());
        assert_eq!(c.timeout, Some(secs(timeout)), "{strategy}");
        assert!(c.circuit_breaker.enabled, "{strategy}");
        assert_eq!(c.circuit_breaker.failure_threshold, Some(nz(failures)), "{strategy}");
        assert_eq!(c.retry.max_attempts, nz(attempts), "{strategy}");
        assert_eq!(c.retry.base_delay, Duration::from_millis(base_ms), "{strategy}");
        assert_eq!(c.bulkhead.enabled.then_some(c.bulkhead.max_concurrent.get()), bulkhead, "{strategy}");
        // Global defaults where the preset says nothing.
        assert_eq!(c.circuit_breaker.recovery_timeout, secs(60));
        assert_eq!(c.circuit_breaker.success_threshold, nz(2));
        assert_eq!(c.retry.exponential_base, 2.0);
    }
}

#[test]
fn dependency_type_presets_have_the_documented_numbers() {
    let defaults = Defaults::default();
    let table = [
        (DependencyType::Database, 10, 10, Some(5), BulkheadKind::Semaphore),
        (DependencyType::ExternalApi, 15, 15, Some(3), BulkheadKind::Semaphore),
        (DependencyType::Cache, 50, 2, None, BulkheadKind::Semaphore),
        (DependencyType::MessageQueue, 20, 10, Some(5), BulkheadKind::Semaphore),
        (DependencyType::FileSystem, 8, 30, Some(5), BulkheadKind::ThreadPool),
    ];
    for (ty, max_concurrent, timeout, breaker, kind) in table {
        let c = defaults.resolve(DependencyKind::Type(ty), &ConfigOverrides::default());
        assert!(c.bulkhead.enabled, "{ty}");
        assert_eq!(c.bulkhead.max_concurrent, nzu(max_concurrent), "{ty}");
        assert_eq!(c.bulkhead.kind, kind, "{ty}");
        assert_eq!(c.timeout, Some(secs(timeout)), "{ty}");
        assert_eq!(c.circuit_breaker.enabled.then_some(c.circuit_breaker.failure_threshold).flatten(), breaker.map(nz));
        // Global retry defaults: 3 attempts from 1 s.
        assert_eq!(c.retry.max_attempts, nz(3));
        assert_eq!(c.retry.base_delay, secs(1));
    }
}

#[test]
fn each_layer_wins_over_the_one_below() {
    let mut defaults = Defaults::default();
    let kind = DependencyKind::Type(DependencyType::Database);
    // Global: wins where nothing above says anything.
    defaults.global.circuit_breaker.recovery_timeout = secs(42);
    defaults.global.timeout = Some(secs(99));
    let c = defaults.resolve(kind, &ConfigOverrides::default());
    assert_eq!(c.circuit_breaker.recovery_timeout, secs(42), "global");
    // Preset over global.
    assert_eq!(c.timeout, Some(secs(10)), "dependency type over global");
    // Changes to the preset (settings `timeouts.database`) over the preset.
    defaults.types.insert(DependencyType::Database, ConfigOverrides { timeout: Some(secs(7)), ..Default::default() });
    assert_eq!(defaults.resolve(kind, &ConfigOverrides::default()).timeout, Some(secs(7)));
    // The dependency's own configuration over its type.
    let own = ConfigOverrides {
        timeout: Some(secs(5)),
        circuit_breaker: BreakerOverrides { failure_threshold: Some(nz(2)), ..Default::default() },
        ..Default::default()
    };
    let c = defaults.resolve(kind, &own);
    assert_eq!(c.timeout, Some(secs(5)), "dependency over type");
    assert_eq!(c.circuit_breaker.failure_threshold, Some(nz(2)));
    // Call-site keys over the dependency.
    let call_site = ConfigOverrides { timeout: Some(secs(1)), ..Default::default() };
    assert_eq!(c.with(&call_site).timeout, Some(secs(1)), "operation over dependency");
}

#[test]
fn keys_that_ask_for_a_policy_switch_it_on() {
    let defaults = Defaults::default();
    // The Cache type has no breaker, but a registration that sets a threshold wants one.
    let own = ConfigOverrides {
        circuit_breaker: BreakerOverrides { failure_threshold: Some(nz(4)), ..Default::default() },
        ..Default::default()
    };
    let c = defaults.resolve(DependencyKind::Type(DependencyType::Cache), &own);
    assert!(c.circuit_breaker.enabled);
    // The Cache strategy has no bulkhead; `max_concurrent` switches one on.
    let own = ConfigOverrides {
        bulkhead: BulkheadOverrides { max_concurrent: Some(nzu(3)), ..Default::default() },
        ..Default::default()
    };
    let c = defaults.resolve(DependencyKind::Strategy(ResilienceStrategy::Cache), &own);
    assert!(c.bulkhead.enabled);
    assert_eq!(c.bulkhead.max_concurrent, nzu(3));
}

fn own_manager() -> ResilienceManager {
    ResilienceManager::default()
}

#[tokio::test(start_paused = true)]
async fn an_unregistered_name_gets_its_strategy_s_defaults() {
    let m = own_manager();
    let calls = AtomicU32::new(0);
    for _ in 0..3 {
        let r = m
            .execute("payments", ResilienceStrategy::InternalService, || {
                calls.fetch_add(1, SeqCst);
                async { Err::<(), _>(AppError::Down) }
            })
            .await;
        assert!(r.is_err());
    }
    // Internal: 3 attempts per call, breaker opens at the third failure.
    assert_eq!(calls.load(SeqCst), 3);
    assert_eq!(m.circuit_state("payments"), Some(CircuitState::Open));
    let d = m.registry().get("payments").unwrap();
    assert_eq!(d.kind(), DependencyKind::Strategy(ResilienceStrategy::InternalService));
    assert!(!d.is_registered());
    assert_eq!(m.circuit_state("nobody"), None);
}

#[tokio::test(start_paused = true)]
async fn a_registered_type_wins_over_the_call_s_strategy() {
    let m = own_manager();
    m.registry().register("session_cache", DependencyType::Cache, ConfigOverrides::default()).unwrap();
    for _ in 0..30 {
        let _ = m
            .execute("session_cache", ResilienceStrategy::ExternalService, || async { Err::<(), _>(AppError::Down) })
            .await;
    }
    // The Cache type has no breaker at all.
    assert_eq!(m.circuit_state("session_cache"), None);
    assert_eq!(m.registry().names(), ["session_cache"]);
}

#[tokio::test(start_paused = true)]
async fn a_call_site_timeout_applies_to_that_call_only() {
    let m = own_manager();
    let slow = || async {
        tokio::time::sleep(secs(3)).await;
        Ok::<_, AppError>(())
    };
    let call_site = ConfigOverrides {
        timeout: Some(secs(1)),
        retry: RetryOverrides { enabled: Some(false), ..Default::default() },
        ..Default::default()
    };
    let start = tokio::time::Instant::now();
    let r = m.execute_with("reports", ResilienceStrategy::ExternalService, &call_site, slow).await;
    assert!(r.unwrap_err().is_timeout());
    assert_eq!(start.elapsed(), secs(1));
    // The dependency's own timeout (External: 30 s) for other calls.
    m.execute("reports", ResilienceStrategy::ExternalService, slow).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn registering_after_first_use_reaches_existing_call_sites() {
    let m = own_manager();
    let fail = || async { Err::<(), _>(AppError::Down) };
    // First used unregistered: Database strategy, breaker after 3 failures.
    let _ = m.execute("user_db", ResilienceStrategy::Database, fail).await;
    assert_eq!(m.circuit_state("user_db"), Some(CircuitState::Closed));
    let own = ConfigOverrides {
        circuit_breaker: BreakerOverrides { failure_threshold: Some(nz(1)), ..Default::default() },
        retry: RetryOverrides { enabled: Some(false), ..Default::default() },
        ..Default::default()
    };
    m.registry().register("user_db", DependencyType::Database, own).unwrap();
    let _ = m.execute("user_db", ResilienceStrategy::Database, fail).await;
    assert_eq!(m.circuit_state("user_db"), Some(CircuitState::Open), "the new threshold of 1 applies");
    let snapshot = m.registry().snapshot();
    assert_eq!(snapshot.len(), 1);
    assert!(snapshot[0].registered);
    assert_eq!(snapshot[0].kind, DependencyKind::Type(DependencyType::Database));
    assert_eq!(snapshot[0].bulkhead_max_concurrent, Some(10));
}

#[test]
fn an_invalid_registration_changes_nothing() {
    let registry = Registry::new();
    registry.register("db", DependencyType::Database, ConfigOverrides::default()).unwrap();
    let bad = ConfigOverrides {
        circuit_breaker: BreakerOverrides { failure_threshold: Some(nz(500)), ..Default::default() },
        ..Default::default()
    };
    let err = registry.register("db", DependencyType::Database, bad).unwrap_err();
    assert!(err.to_string().contains("circuit_breaker.failure_threshold"), "{err}");
    let config = registry.get("db").unwrap().config();
    assert_eq!(config.circuit_breaker.failure_threshold, Some(nz(5)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfiguring_with_calls_in_flight_neither_loses_nor_double_counts_permits() {
    let m: &'static ResilienceManager = Box::leak(Box::new(own_manager()));
    let registry = m.registry();
    let with_limit = |n: usize| ConfigOverrides {
        bulkhead: BulkheadOverrides { max_concurrent: Some(nzu(n)), ..Default::default() },
        retry: RetryOverrides { enabled: Some(false), ..Default::default() },
        ..Default::default()
    };
    registry.register("orders", DependencyType::MessageQueue, with_limit(2)).unwrap();
    let bulkhead = || match registry.get("orders").unwrap().pipeline().bulkhead() {
        Some(Bulkhead::Semaphore(b)) => b.clone(),
        other => panic!("{other:?}"),
    };
    // Two calls hold both permits until released.
    let (release, held) = tokio::sync::watch::channel(false);
    let started = Arc::new(tokio::sync::Semaphore::new(0));
    let mut in_flight = Vec::new();
    for _ in 0..2 {
        let (held, started) = (held.clone(), Arc::clone(&started));
        in_flight.push(tokio::spawn(async move {
            m.execute("orders", ResilienceStrategy::Database, || {
                let (mut held, started) = (held.clone(), Arc::clone(&started));
                async move {
                    started.add_permits(1);
                    while !*held.borrow_and_update() {
                        held.changed().await.ok();
                    }
                    Ok::<_, AppError>(())
                }
            })
            .await
        }));
    }
    started.acquire_many(2).await.unwrap().forget();
    assert_eq!(bulkhead().available(), 0);
    let full = m.execute("orders", ResilienceStrategy::Database, || async { Ok::<_, AppError>(()) }).await;
    assert!(full.unwrap_err().is_bulkhead_full());

    // Raise the limit to 3 while both calls run: exactly one more call fits.
    registry.register("orders", DependencyType::MessageQueue, with_limit(3)).unwrap();
    assert_eq!(bulkhead().max_concurrent(), 3);
    assert_eq!(bulkhead().available(), 1);
    // Lower it to 1 while both still run: nothing fits until both have finished.
    registry.register("orders", DependencyType::MessageQueue, with_limit(1)).unwrap();
    assert_eq!(bulkhead().available(), 0);
    let full = m.execute("orders", ResilienceStrategy::Database, || async { Ok::<_, AppError>(()) }).await;
    assert!(full.unwrap_err().is_bulkhead_full());

    release.send(true).unwrap();
    for call in in_flight {
        call.await.unwrap().unwrap();
    }
    // The permits of the calls that started under the old configuration came back
    // into the same bulkhead: one free slot, as the new limit says.
    assert_eq!(bulkhead().available(), 1);
    m.execute("orders", ResilienceStrategy::Database, || async { Ok::<_, AppError>(()) }).await.unwrap();
}

#[test]
fn the_blocking_path_resolves_names_too() {
    let m = own_manager();
    let mut calls = 0;
    let r = m.execute_blocking("disk", ResilienceStrategy::InternalService, || {
        calls += 1;
        if calls < 2 {
            Err(AppError::Down)
        } else {
            Ok(calls)
        }
    });
    // Internal strategy: retries from 50 ms.
    assert_eq!(r, Ok(2));
}

#[test]
fn a_manager_can_have_its_own_global_defaults() {
    let defaults = ResilienceConfig { timeout: Some(secs(99)), ..ResilienceConfig::default() };
    let m = ResilienceManager::new(defaults).unwrap();
    assert_eq!(m.registry().defaults().global.timeout, Some(secs(99)));
    let bad = ResilienceConfig { timeout: Some(Duration::ZERO), ..ResilienceConfig::default() };
    assert!(ResilienceManager::new(bad).is_err());
}

#[tokio::test(start_paused = true)]
async fn the_global_manager_and_its_shortcuts() {
    let r = resilience::resilient_cache_call("registry_test_global_cache", || async { Ok::<_, AppError>(7) }).await;
    assert_eq!(r, Ok(7));
    let d = resilience::registry().get("registry_test_global_cache").unwrap();
    assert_eq!(d.kind(), DependencyKind::Strategy(ResilienceStrategy::Cache));
    let r = resilience::resilient_internal_call("registry_test_global_internal", || async { Ok::<_, AppError>(1) });
    assert_eq!(r.await, Ok(1));
    let r = resilience::resilient_external_call("registry_test_global_external", || async { Ok::<_, AppError>(2) });
    assert_eq!(r.await, Ok(2));
    let r = resilience::resilient_database_call("registry_test_global_db", || async { Ok::<_, AppError>(3) });
    assert_eq!(r.await, Ok(3));
}

#[test]
fn strategy_and_type_names_parse() {
    for (text, strategy) in [
        ("External", ResilienceStrategy::ExternalService),
        ("ExternalService", ResilienceStrategy::ExternalService),
        ("external_service", ResilienceStrategy::ExternalService),
        ("internal", ResilienceStrategy::InternalService),
        ("Database", ResilienceStrategy::Database),
        ("cache", ResilienceStrategy::Cache),
    ] {
        assert_eq!(text.parse::<ResilienceStrategy>(), Ok(strategy));
    }
    let err = "Externl".parse::<ResilienceStrategy>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown strategy `Externl`; expected one of: internal_service, external_service, database, cache"
    );
    assert_eq!("file_system".parse::<DependencyType>(), Ok(DependencyType::FileSystem));
    assert!("filesystem".parse::<DependencyType>().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_reconfigures_live_call_sites_with_calls_in_flight() {
    let settings = |limit: usize| {
        resilience::Settings::from_yaml_str(&format!(
            "external_dependencies:\n  reload_test_orders: {{ type: message_queue, max_concurrent: {limit}, retry: {{ enabled: false }} }}\n"
        ))
        .unwrap()
    };
    resilience::init(&settings(1)).unwrap();
    let m = resilience::manager();
    let bulkhead = || match m.registry().get("reload_test_orders").unwrap().pipeline().bulkhead() {
        Some(Bulkhead::Semaphore(b)) => b.clone(),
        other => panic!("{other:?}"),
    };
    let (release, held) = tokio::sync::watch::channel(false);
    let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
    let call = tokio::spawn(async move {
        let mut started_tx = Some(started_tx);
        m.execute("reload_test_orders", ResilienceStrategy::Database, || {
            let (mut held, started_tx) = (held.clone(), started_tx.take());
            async move {
                if let Some(tx) = started_tx {
                    tx.send(()).ok();
                }
                while !*held.borrow_and_update() {
                    held.changed().await.ok();
                }
                Ok::<_, AppError>(())
            }
        })
        .await
    });
    started.await.unwrap();
    let quick = || m.execute("reload_test_orders", ResilienceStrategy::Database, || async { Ok::<_, AppError>(()) });
    assert!(quick().await.unwrap_err().is_bulkhead_full());
    resilience::reload(&settings(2)).unwrap();
    // The call in flight still holds its permit under the new limit of 2.
    assert_eq!(bulkhead().available(), 1);
    quick().await.unwrap();
    release.send(true).unwrap();
    call.await.unwrap().unwrap();
    assert_eq!(bulkhead().available(), 2);
}
