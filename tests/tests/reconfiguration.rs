//! Reconfiguration is all or nothing, and builds only what changed.

use resilience::{BreakerOverrides, Bulkhead, ConfigOverrides, DependencyType, Registry, Settings};

use crate::support::nz;

fn semaphore_limit(registry: &Registry, name: &str) -> usize {
    match registry.get(name).expect("registered").pipeline().bulkhead() {
        Some(Bulkhead::Semaphore(b)) => b.max_concurrent(),
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn a_rejected_change_leaves_every_live_policy_as_it_was() {
    let registry = Registry::new();
    for i in 0..40 {
        registry.register(&format!("db_{i}"), DependencyType::Database, ConfigOverrides::default()).expect("valid");
    }
    let strict = ConfigOverrides {
        circuit_breaker: BreakerOverrides { failure_threshold: Some(nz(50)), ..Default::default() },
        ..Default::default()
    };
    registry.register("db_strict", DependencyType::Database, strict).expect("valid under a window of 100");
    let configs_before: Vec<_> = registry.snapshot().into_iter().map(|s| s.config).collect();
    let change = Settings::from_yaml_str(
        "resilience: {circuit_breaker: {window_size: 20}, bulkheads: {database: {max_concurrent: 3}}}\n",
    )
    .expect("valid on its own");
    let error = change.apply_to(&registry).expect_err("db_strict's threshold no longer fits the window");
    assert!(error.to_string().contains("db_strict.circuit_breaker"), "{error}");
    for i in 0..40 {
        assert_eq!(semaphore_limit(&registry, &format!("db_{i}")), 10, "db_{i}'s live limit changed");
    }
    let configs_after: Vec<_> = registry.snapshot().into_iter().map(|s| s.config).collect();
    assert_eq!(configs_before, configs_after, "no configuration changed");
    assert_eq!(registry.defaults(), resilience::Defaults::default(), "the defaults did not change");
}

#[test]
fn an_unchanged_configuration_builds_nothing() {
    let registry = Registry::new();
    let settings =
        Settings::from_yaml_str("external_dependencies:\n  same_db: { type: database, max_concurrent: 4 }\n")
            .expect("valid");
    settings.apply_to(&registry).expect("applies");
    let first = registry.get("same_db").expect("registered").pipeline().id();
    for _ in 0..10 {
        settings.apply_to(&registry).expect("applies");
    }
    assert_eq!(registry.get("same_db").expect("registered").pipeline().id(), first, "rebuilt without a change");
    let changed = Settings::from_yaml_str("external_dependencies:\n  same_db: { type: database, max_concurrent: 5 }\n")
        .expect("valid");
    changed.apply_to(&registry).expect("applies");
    let pipeline = registry.get("same_db").expect("registered").pipeline();
    assert_ne!(pipeline.id(), first, "a change publishes a new pipeline");
    assert_eq!(semaphore_limit(&registry, "same_db"), 5);
}
