//! The settings schema: walks the tree, checks every key and value, and builds the model.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use super::tree::{Node, Origin, Value};
use super::Model;
use crate::config::{
    BreakerOverrides, BudgetOverrides, BulkheadKind, BulkheadOverrides, ChaosOverrides, ConfigOverrides,
    HedgeOverrides, RateLimitOverrides, RetryOverrides,
};
use crate::error::ConfigError;
use crate::hedge::HedgeDelay;
use crate::preset::{DependencyType, ResilienceStrategy};
use crate::registry::{Defaults, DependencyKind};
use crate::retry::Jitter;
use crate::shared::SharedStateSettings;

const RESILIENCE_KEYS: [&str; 7] =
    ["timeouts", "circuit_breaker", "retry", "bulkheads", "strategies", "chaos", "shared_state"];
const SHARED_STATE_KEYS: [&str; 5] =
    ["redis_url", "instance_id", "sync_interval", "min_instances_to_open", "state_file"];
const CHAOS_SWITCH_KEYS: [&str; 1] = ["enabled"];
const CHAOS_KEYS: [&str; 6] = ["latency", "latency_rate", "error_rate", "every", "max_active", "seed"];
const TIMEOUT_KEYS: [&str; 6] = ["default", "database", "api_call", "cache", "message_queue", "file_system"];
const BREAKER_KEYS: [&str; 12] = [
    "enabled",
    "failure_threshold",
    "failure_rate",
    "minimum_calls",
    "window_size",
    "window_duration",
    "slow_call_duration",
    "slow_call_rate",
    "recovery_timeout",
    "half_open_max_calls",
    "success_threshold",
    "shared",
];
const RETRY_KEYS: [&str; 8] =
    ["enabled", "max_attempts", "base_delay", "exponential_base", "max_delay", "jitter", "max_elapsed", "budget"];
const BUDGET_KEYS: [&str; 3] = ["ratio", "min_per_second", "window"];
const BULKHEAD_KEYS: [&str; 7] =
    ["enabled", "kind", "max_concurrent", "max_wait", "queue_capacity", "min_limit", "max_limit"];
const RATE_LIMIT_KEYS: [&str; 4] = ["rate", "burst", "max_keys", "shared"];
const STRATEGY_KEYS: [&str; 6] = ["timeout", "circuit_breaker", "retry", "bulkhead", "rate_limit", "hedge"];
const HEDGE_KEYS: [&str; 2] = ["max_attempts", "delay"];
const DEPENDENCY_KEYS: [&str; 14] = [
    "hedge",
    "chaos",
    "type",
    "timeout",
    "max_concurrent",
    "max_wait",
    "queue_capacity",
    "kind",
    "min_limit",
    "max_limit",
    "circuit_breaker",
    "retry",
    "bulkhead",
    "rate_limit",
];

fn location(file: &str, node: &Node) -> String {
    match &node.origin {
        Origin::Line(line) => format!("{file}:{line}"),
        Origin::Var(var) => format!("{file} (variable {var})"),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

pub(super) fn invalid(file: &str, key: &str, node: &Node, message: impl Into<String>) -> ConfigError {
    ConfigError::InvalidValue { location: location(file, node), key: key.to_owned(), message: message.into() }
}

pub(super) fn unknown(file: &str, key: &str, node: &Node, suggestion: Option<&str>) -> ConfigError {
    ConfigError::UnknownKey {
        location: location(file, node),
        key: key.to_owned(),
        suggestion: suggestion.map(str::to_owned),
    }
}

/// The candidate closest to `key`, if it is close enough to be a likely typo.
pub(super) fn suggest<'a>(key: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(key, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb)).min(row[j] + 1).min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

/// The entries of a mapping whose keys must all be in `allowed`.
pub(super) fn entries<'n>(
    file: &str,
    path: &str,
    node: &'n Node,
    allowed: &[&str],
) -> Result<&'n [(String, Node)], ConfigError> {
    if node.value == Value::Null {
        return Ok(&[]);
    }
    let entries = node
        .entries()
        .ok_or_else(|| invalid(file, path, node, format!("expected a mapping, found {}", node.kind())))?;
    for (key, value) in entries {
        if key == "per_key" && allowed == RATE_LIMIT_KEYS {
            return Err(invalid(
                file,
                &join(path, key),
                value,
                "`per_key` was removed: one limit per client is set where the calls are made, with \
                 `rate_limit(key = <argument>)` on the function's attribute",
            ));
        }
        if !allowed.contains(&key.as_str()) {
            return Err(unknown(file, &join(path, key), value, suggest(key, allowed)));
        }
    }
    Ok(entries)
}

pub(super) struct Reader<'a> {
    pub(super) file: &'a str,
}

impl Reader<'_> {
    pub(super) fn duration(&self, key: &str, node: &Node) -> Result<Duration, ConfigError> {
        let text = match &node.value {
            Value::Str(s) => s.trim(),
            Value::Int(_) | Value::Float(_) => {
                return Err(invalid(
                    self.file,
                    key,
                    node,
                    "a duration needs a unit, such as `250ms`, `30s`, `5m` or `1h`",
                ))
            }
            _ => {
                return Err(invalid(
                    self.file,
                    key,
                    node,
                    format!("expected a duration such as `30s`, found {}", node.kind()),
                ))
            }
        };
        parse_duration(text).ok_or_else(|| {
            invalid(
                self.file,
                key,
                node,
                format!("`{text}` is not a duration; write a number and a unit: `250ms`, `30s`, `5m`, `1h`"),
            )
        })
    }

    pub(super) fn integer(&self, key: &str, node: &Node) -> Result<i64, ConfigError> {
        match &node.value {
            Value::Int(i) => Ok(*i),
            Value::Str(s) if s.trim().parse::<i64>().is_ok() => Ok(s.trim().parse().unwrap_or_default()),
            _ => Err(invalid(self.file, key, node, format!("expected a whole number, found {}", node.kind()))),
        }
    }

    /// A whole number of at least 1, as `make` turns it into a non-zero type.
    fn positive<T: TryFrom<i64>, N>(&self, key: &str, node: &Node, make: fn(T) -> Option<N>) -> Result<N, ConfigError> {
        let n = self.integer(key, node)?;
        T::try_from(n)
            .ok()
            .and_then(make)
            .ok_or_else(|| invalid(self.file, key, node, format!("must be at least 1, found {n}")))
    }

    fn positive_u32(&self, key: &str, node: &Node) -> Result<NonZeroU32, ConfigError> {
        self.positive(key, node, NonZeroU32::new)
    }

    fn positive_usize(&self, key: &str, node: &Node) -> Result<NonZeroUsize, ConfigError> {
        self.positive(key, node, NonZeroUsize::new)
    }

    fn count(&self, key: &str, node: &Node) -> Result<usize, ConfigError> {
        let n = self.integer(key, node)?;
        usize::try_from(n).map_err(|_| invalid(self.file, key, node, format!("must not be negative, found {n}")))
    }

    pub(super) fn number(&self, key: &str, node: &Node) -> Result<f64, ConfigError> {
        match &node.value {
            Value::Int(i) => Ok(*i as f64),
            Value::Float(f) => Ok(*f),
            Value::Str(s) => {
                s.trim().parse().map_err(|_| invalid(self.file, key, node, format!("`{s}` is not a number")))
            }
            _ => Err(invalid(self.file, key, node, format!("expected a number, found {}", node.kind()))),
        }
    }

    fn percent(&self, key: &str, node: &Node) -> Result<f64, ConfigError> {
        let p = self.number(key, node)?;
        if p > 0.0 && p <= 100.0 {
            Ok(p)
        } else {
            Err(invalid(self.file, key, node, format!("{p} is not a percentage in (0, 100]")))
        }
    }

    fn text(&self, key: &str, node: &Node) -> Result<String, ConfigError> {
        match &node.value {
            Value::Str(s) if !s.trim().is_empty() => Ok(s.clone()),
            Value::Str(_) => Err(invalid(self.file, key, node, "must not be empty".to_owned())),
            _ => Err(invalid(self.file, key, node, format!("expected a string, found {}", node.kind()))),
        }
    }

    /// `resilience: { shared_state: { redis_url, instance_id, sync_interval,
    /// min_instances_to_open, state_file } }`.
    fn shared_state(&self, path: &str, node: &Node) -> Result<SharedStateSettings, ConfigError> {
        let mut s = SharedStateSettings::default();
        for (key, v) in entries(self.file, path, node, &SHARED_STATE_KEYS)? {
            let k = join(path, key);
            match key.as_str() {
                "redis_url" => {
                    // Empty: no Redis (a single instance keeping its `state_file`).
                    let url = match &v.value {
                        Value::Str(empty) if empty.is_empty() => String::new(),
                        _ => self.text(&k, v)?,
                    };
                    if !url.is_empty() {
                        resilience_rules::redis_url(&url).map_err(|m| invalid(self.file, &k, v, m))?;
                    }
                    s.redis_url = Some(url);
                }
                "instance_id" => s.instance_id = Some(self.text(&k, v)?),
                "sync_interval" => {
                    let d = self.duration(&k, v)?;
                    resilience_rules::sync_interval(d).map_err(|m| invalid(self.file, &k, v, m))?;
                    s.sync_interval = Some(d);
                }
                "min_instances_to_open" => s.min_instances_to_open = Some(self.positive_u32(&k, v)?.get()),
                _ => s.state_file = Some(self.text(&k, v)?.into()),
            }
        }
        Ok(s)
    }

    pub(super) fn boolean(&self, key: &str, node: &Node) -> Result<bool, ConfigError> {
        match &node.value {
            Value::Bool(b) => Ok(*b),
            Value::Str(s) if s == "true" => Ok(true),
            Value::Str(s) if s == "false" => Ok(false),
            _ => Err(invalid(self.file, key, node, format!("expected `true` or `false`, found {}", node.kind()))),
        }
    }

    pub(super) fn word<'n>(&self, key: &str, node: &'n Node, expected: &[&str]) -> Result<&'n str, ConfigError> {
        match &node.value {
            Value::Str(s) if expected.contains(&s.as_str()) => Ok(s),
            Value::Str(s) => Err(invalid(
                self.file,
                key,
                node,
                match suggest(s, expected) {
                    Some(close) => format!("unknown value `{s}`; did you mean `{close}`?"),
                    None => format!("unknown value `{s}`; expected one of: {}", expected.join(", ")),
                },
            )),
            _ => Err(invalid(
                self.file,
                key,
                node,
                format!("expected one of {}, found {}", expected.join(", "), node.kind()),
            )),
        }
    }

    fn breaker(&self, path: &str, node: &Node) -> Result<BreakerOverrides, ConfigError> {
        let mut b = BreakerOverrides::default();
        for (key, v) in entries(self.file, path, node, &BREAKER_KEYS)? {
            let k = join(path, key);
            match key.as_str() {
                "enabled" => b.enabled = Some(self.boolean(&k, v)?),
                "failure_threshold" => b.failure_threshold = Some(self.positive_u32(&k, v)?),
                "failure_rate" => b.failure_rate = Some(self.percent(&k, v)?),
                "minimum_calls" => b.minimum_calls = Some(self.positive_u32(&k, v)?),
                "window_size" => b.window_size = Some(self.positive_u32(&k, v)?),
                "window_duration" => b.window_duration = Some(self.duration(&k, v)?),
                "slow_call_duration" => b.slow_call_duration = Some(self.duration(&k, v)?),
                "slow_call_rate" => b.slow_call_rate = Some(self.percent(&k, v)?),
                "recovery_timeout" => b.recovery_timeout = Some(self.duration(&k, v)?),
                "half_open_max_calls" => b.half_open_max_calls = Some(self.positive_u32(&k, v)?),
                "shared" => b.shared = Some(self.boolean(&k, v)?),
                _ => b.success_threshold = Some(self.positive_u32(&k, v)?),
            }
        }
        Ok(b)
    }

    fn retry(&self, path: &str, node: &Node) -> Result<RetryOverrides, ConfigError> {
        let mut r = RetryOverrides::default();
        for (key, v) in entries(self.file, path, node, &RETRY_KEYS)? {
            let k = join(path, key);
            match key.as_str() {
                "enabled" => r.enabled = Some(self.boolean(&k, v)?),
                "max_attempts" => r.max_attempts = Some(self.positive_u32(&k, v)?),
                "base_delay" => r.base_delay = Some(self.duration(&k, v)?),
                "exponential_base" => r.exponential_base = Some(self.number(&k, v)?),
                "max_delay" => r.max_delay = Some(self.duration(&k, v)?),
                "jitter" => {
                    r.jitter = Some(match self.word(&k, v, &["none", "full", "equal", "decorrelated"])? {
                        "full" => Jitter::Full,
                        "equal" => Jitter::Equal,
                        "decorrelated" => Jitter::Decorrelated,
                        _ => Jitter::None,
                    })
                }
                "budget" => r.budget = Some(self.budget(&k, v)?),
                _ => r.max_elapsed = Some(self.duration(&k, v)?),
            }
        }
        Ok(r)
    }

    /// `hedge: { max_attempts, delay }` (`hedge: {}` for the defaults); `delay` is a
    /// duration or a percentile such as `p95`.
    fn hedge(&self, path: &str, node: &Node) -> Result<HedgeOverrides, ConfigError> {
        let mut h = HedgeOverrides::default();
        for (key, v) in entries(self.file, path, node, &HEDGE_KEYS)? {
            let k = join(path, key);
            match key.as_str() {
                "max_attempts" => {
                    let n = self.positive_u32(&k, v)?;
                    resilience_rules::hedge_attempts(n.get()).map_err(|m| invalid(self.file, &k, v, m))?;
                    h.max_attempts = Some(n);
                }
                _ => {
                    let percentile = match &v.value {
                        Value::Str(text) => text.strip_prefix('p').map(str::to_owned),
                        _ => None,
                    };
                    h.delay = Some(match percentile {
                        Some(p) => {
                            let p: f64 = p
                                .parse()
                                .map_err(|_| invalid(self.file, &k, v, "a percentile is written `p95`, `p99.9`"))?;
                            resilience_rules::hedge_percentile(p).map_err(|m| invalid(self.file, &k, v, m))?;
                            HedgeDelay::Percentile(p)
                        }
                        None => HedgeDelay::After(self.duration(&k, v)?),
                    });
                }
            }
        }
        Ok(h)
    }

    /// `chaos: { latency, latency_rate, error_rate, every, max_active, seed }`.
    fn chaos(&self, path: &str, node: &Node) -> Result<ChaosOverrides, ConfigError> {
        let mut c = ChaosOverrides::default();
        for (key, v) in entries(self.file, path, node, &CHAOS_KEYS)? {
            let k = join(path, key);
            let fraction = |x: f64| resilience_rules::fraction(x).map(|()| x).map_err(|m| invalid(self.file, &k, v, m));
            match key.as_str() {
                "latency" => c.latency = Some(self.duration(&k, v)?),
                "latency_rate" => c.latency_rate = Some(fraction(self.number(&k, v)?)?),
                "error_rate" => c.error_rate = Some(fraction(self.number(&k, v)?)?),
                "every" => c.every = Some(self.positive_u32(&k, v)?),
                "max_active" => c.max_active = Some(self.positive_usize(&k, v)?),
                _ => c.seed = Some(self.count(&k, v)? as u64),
            }
        }
        Ok(c)
    }

    /// `budget: { ratio, min_per_second, window }` (`budget: {}` for the defaults).
    fn budget(&self, path: &str, node: &Node) -> Result<BudgetOverrides, ConfigError> {
        let mut b = BudgetOverrides::default();
        for (key, v) in entries(self.file, path, node, &BUDGET_KEYS)? {
            let k = join(path, key);
            match key.as_str() {
                "ratio" => {
                    let ratio = self.number(&k, v)?;
                    resilience_rules::budget_ratio(ratio).map_err(|m| invalid(self.file, &k, v, m))?;
                    b.ratio = Some(ratio);
                }
                "min_per_second" => {
                    let n = self.count(&k, v)?;
                    b.min_per_second =
                        Some(u32::try_from(n).map_err(|_| invalid(self.file, &k, v, format!("{n} is too large")))?);
                }
                _ => {
                    let window = self.duration(&k, v)?;
                    resilience_rules::budget_window(window).map_err(|m| invalid(self.file, &k, v, m))?;
                    b.window = Some(window);
                }
            }
        }
        Ok(b)
    }

    fn bulkhead_key(&self, b: &mut BulkheadOverrides, key: &str, k: &str, v: &Node) -> Result<(), ConfigError> {
        match key {
            "enabled" => b.enabled = Some(self.boolean(k, v)?),
            "kind" => {
                b.kind = Some(match self.word(k, v, &["semaphore", "thread_pool", "adaptive"])? {
                    "thread_pool" => BulkheadKind::ThreadPool,
                    "adaptive" => BulkheadKind::Adaptive,
                    _ => BulkheadKind::Semaphore,
                })
            }
            "max_concurrent" => b.max_concurrent = Some(self.positive_usize(k, v)?),
            "max_wait" => b.max_wait = Some(self.duration(k, v)?),
            "min_limit" => b.min_limit = Some(self.positive_usize(k, v)?),
            "max_limit" => b.max_limit = Some(self.positive_usize(k, v)?),
            _ => b.queue_capacity = Some(self.count(k, v)?),
        }
        Ok(())
    }

    fn bulkhead(&self, path: &str, node: &Node) -> Result<BulkheadOverrides, ConfigError> {
        let mut b = BulkheadOverrides::default();
        for (key, v) in entries(self.file, path, node, &BULKHEAD_KEYS)? {
            self.bulkhead_key(&mut b, key, &join(path, key), v)?;
        }
        Ok(b)
    }

    fn rate_limit(&self, path: &str, node: &Node) -> Result<RateLimitOverrides, ConfigError> {
        let mut r = RateLimitOverrides::default();
        for (key, v) in entries(self.file, path, node, &RATE_LIMIT_KEYS)? {
            let k = join(path, key);
            match key.as_str() {
                "rate" => {
                    let rate = self.number(&k, v)?;
                    if rate.is_nan() || rate <= 0.0 {
                        return Err(invalid(self.file, &k, v, format!("must be greater than zero, found {rate}")));
                    }
                    r.rate = Some(rate);
                }
                "burst" => r.burst = Some(self.positive_u32(&k, v)?),
                "shared" => r.shared = Some(self.boolean(&k, v)?),
                _ => r.max_keys = Some(self.positive_usize(&k, v)?),
            }
        }
        if r.rate.is_none() && node.entries().is_some_and(|e| !e.is_empty()) {
            return Err(invalid(self.file, path, node, "a rate limit needs `rate` (calls per second)"));
        }
        Ok(r)
    }

    /// A strategy entry or a dependency entry: groups and flat keys.
    fn overrides(&self, path: &str, node: &Node, allowed: &[&str]) -> Result<ConfigOverrides, ConfigError> {
        let mut c = ConfigOverrides::default();
        for (key, v) in entries(self.file, path, node, allowed)? {
            let k = join(path, key);
            match key.as_str() {
                "type" => {}
                "timeout" => c.timeout = Some(self.duration(&k, v)?),
                "circuit_breaker" => c.circuit_breaker = self.breaker(&k, v)?,
                "retry" => c.retry = self.retry(&k, v)?,
                "bulkhead" => {
                    let nested = self.bulkhead(&k, v)?;
                    c.bulkhead = merge_bulkhead(c.bulkhead, nested);
                }
                "rate_limit" => c.rate_limit = self.rate_limit(&k, v)?,
                "hedge" => c.hedge = Some(self.hedge(&k, v)?),
                "chaos" => c.chaos = Some(self.chaos(&k, v)?),
                flat => self.bulkhead_key(&mut c.bulkhead, flat, &k, v)?,
            }
        }
        Ok(c)
    }
}

fn merge_bulkhead(low: BulkheadOverrides, high: BulkheadOverrides) -> BulkheadOverrides {
    BulkheadOverrides {
        enabled: high.enabled.or(low.enabled),
        kind: high.kind.or(low.kind),
        max_concurrent: high.max_concurrent.or(low.max_concurrent),
        max_wait: high.max_wait.or(low.max_wait),
        queue_capacity: high.queue_capacity.or(low.queue_capacity),
        min_limit: high.min_limit.or(low.min_limit),
        max_limit: high.max_limit.or(low.max_limit),
    }
}

/// `250ms`, `30s`, `1.5s`, `5m`, `1h`.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

fn type_for_timeout(key: &str) -> Option<DependencyType> {
    match key {
        "database" => Some(DependencyType::Database),
        "api_call" => Some(DependencyType::ExternalApi),
        "cache" => Some(DependencyType::Cache),
        "message_queue" => Some(DependencyType::MessageQueue),
        "file_system" => Some(DependencyType::FileSystem),
        _ => None,
    }
}

/// Checks that an environment section has the shape of the document.
pub(super) fn check_shape(file: &str, name: &str, section: &Node) -> Result<(), ConfigError> {
    entries(file, name, section, &super::sections()).map(|_| ())
}

/// Reads and validates the effective document.
pub(super) fn read(file: &str, root: &Node) -> Result<Model, ConfigError> {
    let r = Reader { file };
    let mut defaults = Defaults::default();
    let mut dependencies = Vec::new();
    let mut chaos_enabled = None;
    let mut shared_state = None;
    for (section, node) in entries(file, "", root, &super::sections())? {
        if !super::SECTIONS.contains(&section.as_str()) {
            // An integration's section: checked by its `SettingsSection`.
            continue;
        }
        if section == "resilience" {
            for (key, v) in entries(file, section, node, &RESILIENCE_KEYS)? {
                let path = join(section, key);
                match key.as_str() {
                    "timeouts" => {
                        for (name, t) in entries(file, &path, v, &TIMEOUT_KEYS)? {
                            let d = r.duration(&join(&path, name), t)?;
                            match type_for_timeout(name) {
                                Some(ty) => defaults.types.entry(ty).or_default().timeout = Some(d),
                                None => defaults.global.timeout = Some(d),
                            }
                        }
                    }
                    "circuit_breaker" => {
                        let b = r.breaker(&path, v)?;
                        ConfigOverrides { circuit_breaker: b, ..Default::default() }.apply(&mut defaults.global);
                    }
                    "retry" => {
                        let rt = r.retry(&path, v)?;
                        ConfigOverrides { retry: rt, ..Default::default() }.apply(&mut defaults.global);
                    }
                    "shared_state" => shared_state = Some(r.shared_state(&path, v)?),
                    "chaos" => {
                        for (name, switch) in entries(file, &path, v, &CHAOS_SWITCH_KEYS)? {
                            chaos_enabled = Some(r.boolean(&join(&path, name), switch)?);
                        }
                    }
                    "bulkheads" => {
                        let types = DependencyType::ALL.map(DependencyType::as_str);
                        for (name, b) in entries(file, &path, v, &types)? {
                            let ty: DependencyType = name.parse().map_err(|_| unknown(file, name, b, None))?;
                            let bulkhead = r.bulkhead(&join(&path, name), b)?;
                            let entry = defaults.types.entry(ty).or_default();
                            entry.bulkhead = merge_bulkhead(entry.bulkhead, bulkhead);
                        }
                    }
                    _ => {
                        let names = ResilienceStrategy::ALL.map(ResilienceStrategy::as_str);
                        for (name, s) in entries(file, &path, v, &names)? {
                            let strategy: ResilienceStrategy =
                                name.parse().map_err(|_| unknown(file, name, s, None))?;
                            let o = r.overrides(&join(&path, name), s, &STRATEGY_KEYS)?;
                            defaults.strategies.insert(strategy, o);
                        }
                    }
                }
            }
        } else {
            let Some(deps) = node.entries() else {
                if node.value == Value::Null {
                    continue;
                }
                return Err(invalid(file, section, node, format!("expected a mapping, found {}", node.kind())));
            };
            for (name, entry) in deps {
                let path = join(section, name);
                let types = DependencyType::ALL.map(DependencyType::as_str);
                let ty = match entry.get(&["type"]) {
                    Some(t) => r.word(&join(&path, "type"), t, &types)?.parse().unwrap_or(DependencyType::Database),
                    None => {
                        return Err(invalid(
                            file,
                            &path,
                            entry,
                            format!("missing `type` (one of: {})", types.join(", ")),
                        ))
                    }
                };
                let own = r.overrides(&path, entry, &DEPENDENCY_KEYS)?;
                dependencies.push((name.clone(), ty, own));
            }
        }
    }
    // Check every resulting configuration, and say which key of the file caused a
    // problem: the global defaults first (a bad global key is reported as such, not
    // under the first preset it spoils), then each preset, then each dependency.
    defaults.global.validate().map_err(|e| locate(file, root, "resilience", global_key(e, "default")))?;
    for ty in DependencyType::ALL {
        let timeouts_key = TIMEOUT_KEYS.iter().find(|k| type_for_timeout(k) == Some(ty)).copied().unwrap_or("default");
        defaults.resolve(DependencyKind::Type(ty), &ConfigOverrides::default()).validate().map_err(|e| {
            let e = match e {
                ConfigError::Invalid { key, message } if key.starts_with("bulkhead.") => ConfigError::Invalid {
                    key: format!("bulkheads.{}.{}", ty.as_str(), &key["bulkhead.".len()..]),
                    message,
                },
                other => global_key(other, timeouts_key),
            };
            locate(file, root, "resilience", e)
        })?;
    }
    for strategy in ResilienceStrategy::ALL {
        defaults
            .resolve(DependencyKind::Strategy(strategy), &ConfigOverrides::default())
            .validate()
            .map_err(|e| locate(file, root, &format!("resilience.strategies.{}", strategy.as_str()), e))?;
    }
    for (name, ty, own) in &dependencies {
        defaults
            .resolve(DependencyKind::Type(*ty), own)
            .validate()
            .map_err(|e| locate(file, root, &format!("external_dependencies.{name}"), e))?;
    }
    Ok(Model { defaults, dependencies, chaos_enabled, shared_state })
}

/// A validation error's key as the `resilience:` section writes it: the timeout is
/// `timeouts.<timeouts_key>`.
fn global_key(error: ConfigError, timeouts_key: &str) -> ConfigError {
    match error {
        ConfigError::Invalid { key, message } if key == "timeout" => {
            ConfigError::Invalid { key: format!("timeouts.{timeouts_key}"), message }
        }
        other => other,
    }
}

/// Turns a validation error about a key of a resolved configuration into one that
/// names the key path under `prefix` and, where the file sets it, its line.
pub(super) fn locate(file: &str, root: &Node, prefix: &str, error: ConfigError) -> ConfigError {
    let ConfigError::Invalid { key, message } = error else { return error };
    let full = join(prefix, &key);
    let candidates = [full.clone(), join("resilience", &key), prefix.to_owned()];
    for candidate in &candidates {
        let parts: Vec<&str> = candidate.split('.').collect();
        if let Some(node) = root.get(&parts) {
            return ConfigError::InvalidValue { location: location(file, node), key: full, message };
        }
        // A flat key of a dependency (`max_concurrent`) for a group key (`bulkhead.max_concurrent`).
        if let Some(last) = parts.last() {
            let mut flat = parts[..parts.len().saturating_sub(2)].to_vec();
            flat.push(last);
            if let Some(node) = root.get(&flat) {
                return ConfigError::InvalidValue { location: location(file, node), key: full, message };
            }
        }
    }
    ConfigError::InvalidValue { location: file.to_owned(), key: full, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        for bad in ["30", "s", "30x", "-1s", "1.2.3s", ""] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("failure_treshold", &BREAKER_KEYS), Some("failure_threshold"));
        assert_eq!(suggest("resilence", &["resilience", "external_dependencies"]), Some("resilience"));
        assert_eq!(suggest("zzz", &BREAKER_KEYS), None);
    }
}
