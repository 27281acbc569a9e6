//! Settings files: the schema, environments, variables, and error messages.

use std::time::Duration;

use resilience::{BulkheadKind, ConfigError, DependencyType, Registry, ResilienceStrategy, Settings};

use crate::support::nz;

/// A file with every section: global defaults, preset changes, dependencies and environments.
const FULL_EXAMPLE: &str = r#"
resilience:
  timeouts: { default: 30s, database: 10s, api_call: 15s, cache: 2s, message_queue: 10s, file_system: 30s }
  circuit_breaker: { failure_threshold: 5, recovery_timeout: 60s, success_threshold: 2 }
  retry: { max_attempts: 3, base_delay: 1s, exponential_base: 2.0, max_delay: 30s, jitter: full }
  bulkheads:
    file_system: { kind: thread_pool, max_concurrent: 8, queue_capacity: 100 }
  strategies:
    external_service: { timeout: 20s }
external_dependencies:
  user_db: { type: database, max_concurrent: 10, timeout: 5s }
  payment_gateway: { type: external_api, max_concurrent: 5, circuit_breaker: { failure_threshold: 3 } }
development:
  resilience:
    timeouts: { default: 5s }
production:
  external_dependencies:
    user_db: { max_concurrent: 40 }
"#;

fn err(text: &str) -> String {
    Settings::from_yaml_str(text).unwrap_err().to_string()
}

#[test]
fn the_full_example_applies() {
    let settings = Settings::from_yaml_str(FULL_EXAMPLE).unwrap();
    let registry = Registry::new();
    settings.apply_to(&registry).unwrap();
    assert_eq!(registry.names(), ["payment_gateway", "user_db"]);
    let user_db = registry.get("user_db").unwrap().config();
    assert_eq!(user_db.timeout, Some(Duration::from_secs(5)), "dependency over type");
    assert_eq!(user_db.bulkhead.max_concurrent.get(), 10);
    assert_eq!(user_db.retry.jitter, resilience::Jitter::Full, "global retry");
    let gateway = registry.get("payment_gateway").unwrap().config();
    assert_eq!(gateway.timeout, Some(Duration::from_secs(15)), "timeouts.api_call");
    assert_eq!(gateway.circuit_breaker.failure_threshold, Some(nz(3)));
    let defaults = registry.defaults();
    assert_eq!(
        defaults
            .resolve(resilience::DependencyKind::Type(DependencyType::FileSystem), &Default::default())
            .bulkhead
            .kind,
        BulkheadKind::ThreadPool
    );
    let external = defaults
        .resolve(resilience::DependencyKind::Strategy(ResilienceStrategy::ExternalService), &Default::default());
    assert_eq!(external.timeout, Some(Duration::from_secs(20)), "strategies.external_service");
}

#[test]
fn an_environment_section_and_variables_override_the_file() {
    let settings = Settings::from_yaml_str(FULL_EXAMPLE).unwrap().with_environment("production").unwrap();
    assert_eq!(settings.environment(), Some("production"));
    let (_, _, user_db) = settings.dependencies().find(|(n, _, _)| *n == "user_db").unwrap();
    assert_eq!(user_db.bulkhead.max_concurrent.map(|n| n.get()), Some(40));
    assert_eq!(user_db.timeout, Some(Duration::from_secs(5)), "the rest of the entry stays");

    let vars = [
        ("RESILIENCE_ENV".to_owned(), "development".to_owned()),
        ("RESILIENCE__EXTERNAL_DEPENDENCIES__USER_DB__TIMEOUT".to_owned(), "3s".to_owned()),
        ("UNRELATED".to_owned(), "x".to_owned()),
    ];
    let settings = Settings::from_yaml_str(FULL_EXAMPLE).unwrap().with_variables(vars).unwrap();
    assert_eq!(settings.environment(), Some("development"));
    assert_eq!(settings.defaults().global.timeout, Some(Duration::from_secs(5)));
    let (_, _, user_db) = settings.dependencies().find(|(n, _, _)| *n == "user_db").unwrap();
    assert_eq!(user_db.timeout, Some(Duration::from_secs(3)));
}

#[test]
fn an_unknown_key_names_its_path_and_line() {
    let text = "resilience:\n  circuit_breaker:\n    failure_treshold: 5\n";
    assert_eq!(
        err(text),
        "<string>:3: unknown key `resilience.circuit_breaker.failure_treshold`; did you mean `failure_threshold`?"
    );
    assert_eq!(err("resilence:\n  timeouts: {}\n"), "<string>:1: unknown key `resilence`; did you mean `resilience`?");
}

#[test]
fn a_bad_duration_says_how_to_write_one() {
    let text = "external_dependencies:\n  user_db:\n    type: database\n    timeout: 5 seconds\n";
    assert_eq!(
        err(text),
        "<string>:4: invalid `external_dependencies.user_db.timeout`: `5 seconds` is not a duration; write a number and a unit: `250ms`, `30s`, `5m`, `1h`"
    );
    let text = "resilience:\n  timeouts: { default: 30 }\n";
    assert_eq!(
        err(text),
        "<string>:2: invalid `resilience.timeouts.default`: a duration needs a unit, such as `250ms`, `30s`, `5m` or `1h`"
    );
}

#[test]
fn a_zero_threshold_is_refused() {
    let text = "resilience:\n  circuit_breaker:\n    failure_threshold: 0\n";
    assert_eq!(
        err(text),
        "<string>:3: invalid `resilience.circuit_breaker.failure_threshold`: must be at least 1, found 0"
    );
}

#[test]
fn an_unknown_dependency_type_suggests_one() {
    let text = "external_dependencies:\n  queue:\n    type: message_queu\n";
    assert_eq!(
        err(text),
        "<string>:3: invalid `external_dependencies.queue.type`: unknown value `message_queu`; did you mean `message_queue`?"
    );
    let text = "external_dependencies:\n  queue: { max_concurrent: 3 }\n";
    assert!(err(text).contains("missing `type`"), "{}", err(text));
}

#[test]
fn a_bad_variable_names_the_variable() {
    let vars = [("RESILIENCE__EXTERNAL_DEPENDENCIES__USER_DB__MAX_CONCURRENT".to_owned(), "many".to_owned())];
    let e = Settings::from_yaml_str(FULL_EXAMPLE).unwrap().with_variables(vars).unwrap_err();
    assert_eq!(
        e.to_string(),
        "<string> (variable RESILIENCE__EXTERNAL_DEPENDENCIES__USER_DB__MAX_CONCURRENT): invalid `external_dependencies.user_db.max_concurrent`: expected a whole number, found a string"
    );
    let vars = [("RESILIENCE__RESILIENCE__TIMEOUTS__DEFALT".to_owned(), "1s".to_owned())];
    let e = Settings::from_yaml_str(FULL_EXAMPLE).unwrap().with_variables(vars).unwrap_err();
    assert!(matches!(&e, ConfigError::UnknownKey { suggestion: Some(s), .. } if s == "default"), "{e}");
}

#[test]
fn a_missing_environment_lists_the_sections() {
    let e = Settings::from_yaml_str(FULL_EXAMPLE).unwrap().with_environment("staging").unwrap_err();
    assert_eq!(e.to_string(), "<string>: no environment section `staging`; the file has: development, production");
}

#[test]
fn a_rule_across_keys_points_at_the_key() {
    let text = "external_dependencies:\n  db:\n    type: database\n    circuit_breaker:\n      window_size: 10\n      failure_threshold: 20\n";
    assert_eq!(
        err(text),
        "<string>:6: invalid `external_dependencies.db.circuit_breaker.failure_threshold`: 20 failures can never fit in a window of 10 calls"
    );
}

#[test]
fn syntax_errors_and_files() {
    let e = err("resilience:\n  timeouts: { default: 30s\n");
    assert!(e.starts_with("<string>:"), "{e}");
    assert!(e.contains("invalid YAML"), "{e}");
    let missing = Settings::from_file("/nonexistent/resilience.yaml").unwrap_err();
    assert!(missing.to_string().starts_with("cannot read settings file `/nonexistent/resilience.yaml`"), "{missing}");
    let dir = std::env::temp_dir().join(format!("resilience-settings-{}.yaml", std::process::id()));
    std::fs::write(&dir, "resilience:\n  retry:\n    jitter: fullish\n").unwrap();
    let e = Settings::from_file(&dir).unwrap_err().to_string();
    std::fs::remove_file(&dir).ok();
    assert!(e.starts_with(&format!("{}:3: invalid `resilience.retry.jitter`", dir.display())), "{e}");
}

#[test]
fn settings_that_do_not_fit_the_registry_change_nothing() {
    let registry = Registry::new();
    // A dependency registered by code, with a small window.
    let own = resilience::ConfigOverrides {
        circuit_breaker: resilience::BreakerOverrides { window_size: Some(nz(10)), ..Default::default() },
        ..Default::default()
    };
    registry.register("ledger", DependencyType::Database, own).unwrap();
    // Valid on its own, but rates over at least 20 calls cannot work in `ledger`'s window of 10.
    let settings = Settings::from_yaml_str(
        "resilience:\n  circuit_breaker: { failure_rate: 50, minimum_calls: 20 }\nexternal_dependencies:\n  user_db: { type: database }\n",
    )
    .unwrap();
    let e = settings.apply_to(&registry).unwrap_err();
    assert!(e.to_string().contains("`ledger.circuit_breaker.minimum_calls`"), "{e}");
    assert!(registry.get("user_db").is_none(), "nothing was registered");
    assert_eq!(registry.defaults().global.circuit_breaker.failure_rate, None, "defaults unchanged");
}

/// Parses `text` on a thread with a 2 MiB stack, as a tokio worker has.
fn err_on_small_stack(text: String) -> String {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || Settings::from_yaml_str(&text).map(|_| ()).unwrap_err().to_string())
        .expect("thread")
        .join()
        .expect("no stack overflow")
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let lists = err_on_small_stack(format!("{}1\n", "- ".repeat(20_000)));
    assert!(lists.starts_with("<string>:1:") && lists.contains("nested more than 64 levels deep"), "{lists}");
    let mut maps = String::new();
    for depth in 0..2_000 {
        maps.push_str(&" ".repeat(depth));
        maps.push_str("k:\n");
    }
    let maps = err_on_small_stack(maps);
    assert!(maps.starts_with("<string>:65:") && maps.contains("nested more than 64 levels deep"), "{maps}");
    let flow = err_on_small_stack(format!("a: {}{}\n", "[".repeat(5_000), "]".repeat(5_000)));
    assert!(flow.contains("<string>:1:"), "{flow}");
}

#[test]
fn global_defaults_are_checked_like_a_dependency() {
    let e = err("resilience:\n  timeouts: { default: 0s }\n");
    assert!(e.starts_with("<string>:2: invalid `resilience.timeouts.default`"), "{e}");
    let e = err("resilience:\n  circuit_breaker:\n    failure_threshold: 200\n");
    assert!(e.starts_with("<string>:3: invalid `resilience.circuit_breaker.failure_threshold`"), "{e}");
    let e = err("resilience:\n  circuit_breaker:\n    window_size: 4294967295\n");
    assert!(e.starts_with("<string>:3: invalid `resilience.circuit_breaker.window_size`"), "{e}");
    let e = err("resilience:\n  retry:\n    exponential_base: .inf\n");
    assert!(e.starts_with("<string>:3: invalid `resilience.retry.exponential_base`"), "{e}");
    let e = err("resilience:\n  timeouts:\n    cache: 1s\n    database: 0s\n");
    assert!(e.starts_with("<string>:4: invalid `resilience.timeouts.database`"), "{e}");
}

#[test]
fn nonsense_in_a_file_is_an_error_naming_key_and_line() {
    let e = err("resilience: {}\nproduction:\n  resilience:\n    circuit_breaker:\n      failure_treshold: 3\n");
    assert_eq!(
        e,
        "<string>:5: unknown key `production.resilience.circuit_breaker.failure_treshold`; did you mean `failure_threshold`?"
    );
    // An environment section may leave out what the base gives, and is checked merged.
    Settings::from_yaml_str(
        "external_dependencies:\n  db: { type: database }\nproduction:\n  external_dependencies:\n    db: { max_concurrent: 4 }\n",
    )
    .expect("an environment section refines the base");
    let e = err("external_dependencies:\n  db: { type: database }\nstaging:\n  external_dependencies:\n    db: { max_concurrent: 0 }\n");
    assert!(e.starts_with("<string>:5: invalid `staging.external_dependencies.db.max_concurrent`"), "{e}");
    let e = err("resilience: {}\n---\nresilience: {}\n");
    assert!(e.starts_with("<string>:2:") && e.contains("a second YAML document"), "{e}");
    let e = err("external_dependencies:\n  api: { type: external_api, rate_limit: { burst: 5 } }\n");
    assert!(
        e.starts_with("<string>:2: invalid `external_dependencies.api.rate_limit`: a rate limit needs `rate`"),
        "{e}"
    );
    let e = err("external_dependencies:\n  '': { type: cache }\n");
    assert!(e.starts_with("<string>:2:") && e.contains("an empty key"), "{e}");
    let e = err("external_dependencies:\n  ? [a, b]\n  : { type: cache }\n");
    assert!(e.starts_with("<string>:2:") && e.contains("as a key"), "{e}");
    let e = err("external_dependencies:\n  1: { type: cache }\n  '1': { type: database }\n");
    assert!(e.starts_with("<string>:3:") && e.contains("the key `1` is written twice (first at line 2)"), "{e}");
}

#[test]
fn an_empty_environment_variable_selects_no_section() {
    let settings = Settings::from_yaml_str("resilience: {}\nproduction:\n  resilience: {}\n")
        .unwrap()
        .with_variables([(String::from("RESILIENCE_ENV"), String::new())])
        .expect("an empty RESILIENCE_ENV is as good as none");
    assert_eq!(settings.environment(), None);
}

#[test]
fn variables_reach_dependencies_named_in_any_case() {
    let settings = Settings::from_yaml_str("external_dependencies:\n  UserCache: { type: cache }\n")
        .unwrap()
        .with_variables([(String::from("RESILIENCE__EXTERNAL_DEPENDENCIES__USERCACHE__TIMEOUT"), String::from("3s"))])
        .expect("the variable reaches `UserCache`");
    let (name, _, own) = settings.dependencies().next().expect("one dependency");
    assert_eq!((name, own.timeout), ("UserCache", Some(Duration::from_secs(3))));
}

#[test]
fn per_key_is_gone_and_says_what_replaced_it() {
    let e = err("external_dependencies:\n  api: { type: external_api, rate_limit: { rate: 5, per_key: true } }\n");
    assert!(
        e.starts_with("<string>:2: invalid `external_dependencies.api.rate_limit.per_key`: `per_key` was removed")
            && e.contains("`rate_limit(key = <argument>)`"),
        "{e}"
    );
    let s = Settings::from_yaml_str(
        "external_dependencies:\n  api: { type: external_api, rate_limit: { rate: 5, max_keys: 50 } }\n",
    )
    .unwrap();
    let (_, _, own) = s.dependencies().next().unwrap();
    assert_eq!(own.rate_limit.max_keys, std::num::NonZeroUsize::new(50));
}

#[test]
fn adaptive_bulkheads_and_retry_budgets_from_the_file() {
    let text = "external_dependencies:
  search:
    type: external_api
    bulkhead: { kind: adaptive, max_concurrent: 8, min_limit: 2, max_limit: 64 }
    retry: { max_attempts: 4, budget: { ratio: 0.1, min_per_second: 5, window: 30s } }
  feed:
    type: cache
    kind: adaptive
    retry: { budget: {} }
";
    let registry = Registry::new();
    Settings::from_yaml_str(text).unwrap().apply_to(&registry).unwrap();
    let search = registry.get("search").unwrap().config();
    assert_eq!(search.bulkhead.kind, BulkheadKind::Adaptive);
    assert_eq!(
        (search.bulkhead.max_concurrent.get(), search.bulkhead.min_limit.get(), search.bulkhead.max_limit.get()),
        (8, 2, 64)
    );
    let budget = search.retry_budget.unwrap();
    assert_eq!((budget.ratio, budget.min_per_second, budget.window), (0.1, 5, Duration::from_secs(30)));
    let feed = registry.get("feed").unwrap().config();
    assert_eq!(feed.bulkhead.max_concurrent.get(), 20, "an adaptive bulkhead's default start");
    assert_eq!(feed.retry_budget, Some(resilience::RetryBudgetConfig::default()), "`budget: {{}}`: the defaults");
}

#[test]
fn bad_adaptive_bounds_and_budgets_name_their_key_and_line() {
    let e = err("external_dependencies:\n  db:\n    type: database\n    retry:\n      budget: { ratio: 1.5 }\n");
    assert_eq!(e, "<string>:5: invalid `external_dependencies.db.retry.budget.ratio`: 1.5 is not a fraction in (0, 1]");
    let e = err("external_dependencies:\n  db:\n    type: database\n    retry:\n      budget: { ratoi: 0.5 }\n");
    assert!(e.contains("external_dependencies.db.retry.budget.ratoi") && e.contains("ratio"), "{e}");
    let text =
        "external_dependencies:\n  db:\n    type: database\n    bulkhead:\n      kind: adaptive\n      min_limit: 50\n";
    let registry = Registry::new();
    let e = Settings::from_yaml_str(text).and_then(|s| s.apply_to(&registry)).unwrap_err().to_string();
    assert_eq!(
        e,
        "<string>:2: invalid `external_dependencies.db.bulkhead.max_concurrent`: the starting limit 20 is outside \
         `min_limit`..=`max_limit` (50..=200)"
    );
    assert!(registry.get("db").is_none(), "nothing was registered");
}

#[test]
fn shared_keys_and_the_shared_state_section() {
    let text = "resilience:\n  shared_state:\n    redis_url: redis://127.0.0.1:6390/2\n    sync_interval: 50ms\n    \
                min_instances_to_open: 3\n    state_file: /tmp/breakers.json\nexternal_dependencies:\n  payments:\n    \
                type: external_api\n    circuit_breaker: { shared: true }\n    rate_limit: { rate: 50, shared: true }\n";
    let settings = Settings::from_yaml_str(text).unwrap();
    let registry = Registry::new();
    settings.apply_to(&registry).unwrap();
    let config = registry.get("payments").unwrap().config();
    assert!(config.circuit_breaker.shared);
    assert!(config.rate_limit.is_some_and(|r| r.shared && r.rate == 50.0));
    let shared = resilience::shared_state::SharedStateConfig::from_settings(&settings).unwrap();
    assert_eq!(shared.redis_url, "redis://127.0.0.1:6390/2");
    assert_eq!(shared.sync_interval, Duration::from_millis(50));
    assert_eq!(shared.min_instances_to_open, 3);
    assert_eq!(shared.state_file.as_deref(), Some(std::path::Path::new("/tmp/breakers.json")));
    assert_eq!(shared.instance_id, None);
    shared.validate().unwrap();
    let none = Settings::from_yaml_str("external_dependencies: {}\n").unwrap();
    assert!(resilience::shared_state::SharedStateConfig::from_settings(&none).is_none());
}

#[test]
fn bad_shared_state_settings_name_their_key_and_line() {
    let e = err("resilience:\n  shared_state:\n    redis_url: http://127.0.0.1:6379\n");
    assert_eq!(
        e,
        "<string>:3: invalid `resilience.shared_state.redis_url`: `http://127.0.0.1:6379` is not a Redis URL (expected \
         `redis://host:port/db`)"
    );
    let e = err("resilience:\n  shared_state:\n    sync_interval: 1ms\n");
    assert_eq!(e, "<string>:3: invalid `resilience.shared_state.sync_interval`: 1ms is not between 10ms and 60s");
    let e = err("resilience:\n  shared_state:\n    min_instance_to_open: 2\n");
    assert!(e.contains("resilience.shared_state.min_instance_to_open") && e.contains("min_instances_to_open"), "{e}");
    let e = err("external_dependencies:\n  db:\n    type: database\n    circuit_breaker: { shared: yes }\n");
    assert!(e.starts_with("<string>:4: invalid `external_dependencies.db.circuit_breaker.shared`"), "{e}");
    // Checked when installed: an id with spaces, nothing to share.
    let bad = resilience::shared_state::SharedStateConfig { instance_id: Some("a b".into()), ..Default::default() };
    assert_eq!(bad.validate().unwrap_err().key(), Some("shared_state.instance_id"));
    let nothing = resilience::shared_state::SharedStateConfig { redis_url: String::new(), ..Default::default() };
    assert_eq!(nothing.validate().unwrap_err().key(), Some("shared_state.redis_url"));
}
