//! The registration macros, through the facade.

use std::time::Duration;

use resilience::{BulkheadKind, CircuitState, DependencyKind, DependencyType, Jitter};

use crate::support::nz;

#[test]
fn each_macro_registers_its_type_with_the_keys_given() {
    let db = resilience::register_database_dependency!("reg_user_db", max_concurrent = 10);
    assert_eq!(db.kind(), DependencyKind::Type(DependencyType::Database));
    assert!(db.is_registered());
    assert_eq!(db.config().bulkhead.max_concurrent.get(), 10);

    let api = resilience::register_api_dependency!("reg_payments", max_concurrent = 5, timeout = "5s");
    let c = api.config();
    assert_eq!((c.bulkhead.max_concurrent.get(), c.timeout), (5, Some(Duration::from_secs(5))));
    assert_eq!(c.circuit_breaker.failure_threshold, Some(nz(3)), "the ExternalApi preset");

    let cache = resilience::register_cache_dependency!("reg_sessions", max_concurrent = 50);
    assert!(!cache.config().circuit_breaker.enabled, "the Cache preset has no breaker");

    let queue = resilience::register_message_queue_dependency!("reg_orders");
    assert_eq!(queue.config().bulkhead.max_concurrent.get(), 20);

    let fs = resilience::register_file_system_dependency!("reg_reports", max_concurrent = 4);
    let c = fs.config();
    assert_eq!((c.bulkhead.kind, c.bulkhead.max_concurrent.get()), (BulkheadKind::ThreadPool, 4));
}

#[test]
fn groups_and_every_kind_of_value() {
    let d = resilience::register_api_dependency!(
        "reg_everything",
        timeout = "1.5s",
        circuit_breaker(
            failure_threshold = 3,
            window_size = 20,
            recovery_timeout = "30s",
            failure_rate = 50,
            minimum_calls = 10
        ),
        retry(max_attempts = 4, base_delay = "100ms", exponential_base = 3, jitter = full, max_elapsed = "5m"),
        bulkhead(max_concurrent = 7, max_wait = "50ms"),
        rate_limit(rate = 100, burst = 10),
    );
    let c = d.config();
    assert_eq!(c.timeout, Some(Duration::from_millis(1500)));
    assert_eq!(c.circuit_breaker.failure_threshold, Some(nz(3)));
    assert_eq!(c.circuit_breaker.recovery_timeout, Duration::from_secs(30));
    assert_eq!(c.circuit_breaker.failure_rate, Some(50.0));
    assert_eq!(c.retry.max_attempts, nz(4));
    assert_eq!(c.retry.exponential_base, 3.0);
    assert_eq!(c.retry.jitter, Jitter::Full);
    assert_eq!(c.retry.max_elapsed, Some(Duration::from_secs(300)));
    assert_eq!((c.bulkhead.max_concurrent.get(), c.bulkhead.max_wait), (7, Duration::from_millis(50)));
    let limit = c.rate_limit.unwrap();
    assert_eq!((limit.rate, limit.burst), (100.0, nz(10)));
    assert_eq!(resilience::manager().circuit_state("reg_everything"), Some(CircuitState::Closed));
}
