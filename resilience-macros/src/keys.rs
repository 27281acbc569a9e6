//! Which keys each macro takes, checked before the values are parsed so that unknown,
//! misplaced and repeated keys get messages in rustc's style, with the closest known
//! key suggested.

use std::collections::HashSet;

use darling::ast::NestedMeta;
use syn::spanned::Spanned;
use syn::Meta;

/// Keys of the runtime configuration given flat.
const FLAT: &[&str] = &["timeout", "max_concurrent", "max_wait", "queue_capacity", "kind"];

/// Keys of the runtime configuration given as a group, `group(key = value, ...)`.
pub(crate) const GROUPS: &[(&str, &[&str])] = &[
    (
        "circuit_breaker",
        &[
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
        ],
    ),
    (
        "retry",
        &["enabled", "max_attempts", "base_delay", "exponential_base", "max_delay", "jitter", "max_elapsed", "budget"],
    ),
    ("bulkhead", &["enabled", "kind", "max_concurrent", "max_wait", "queue_capacity", "min_limit", "max_limit"]),
    ("rate_limit", &["rate", "burst", "max_keys", "key", "shared"]),
    ("hedge", &["max_attempts", "delay"]),
    ("chaos", &["latency", "latency_rate", "error_rate", "every", "max_active", "seed"]),
];

/// Keys of `retry(budget(...))`.
const BUDGET: &[&str] = &["ratio", "min_per_second", "window"];

/// Keys every attribute takes besides the configuration.
pub(crate) const HANDLERS: &[&str] = &["fallback", "retry_if", "record_if", "idempotent"];

/// Where a key that is not allowed here does belong.
const ELSEWHERE: &[(&str, &str)] = &[
    ("name", "`#[resilient]` and `#[resilience_pattern]`; the other attributes name their `dependency`"),
    ("strategy", "`#[resilient]`; the type attributes take the preset of their dependency type"),
    ("dependency", "`#[database_call]` and its siblings; `#[resilient]` takes `name`"),
    ("operation", "`#[database_call]` and its siblings"),
    ("fallback", "the attributes; a registration configures the dependency, not one function"),
    ("retry_if", "the attributes; a registration configures the dependency, not one function"),
    ("record_if", "the attributes; a registration configures the dependency, not one function"),
    ("idempotent", "the attributes; a registration configures the dependency, not one function"),
];

/// Checks `items` against the keys of one macro (`own`: its keys beyond the
/// configuration's), pushing an error for each unknown, misplaced, repeated or
/// ill-formed key, and returns the items worth parsing.
pub(crate) fn check(
    items: Vec<NestedMeta>,
    own: &[&str],
    site: &str,
    errors: &mut darling::error::Accumulator,
) -> Vec<NestedMeta> {
    let mut seen = HashSet::new();
    let mut kept = Vec::with_capacity(items.len());
    for item in items {
        let meta = match &item {
            NestedMeta::Meta(meta) => meta,
            NestedMeta::Lit(lit) => {
                errors.push(spanned(
                    lit,
                    format!("expected `key = value`, found a literal; {site} takes keys such as `timeout = \"5s\"`"),
                ));
                continue;
            }
        };
        let Some(key) = meta.path().get_ident().map(ToString::to_string) else {
            errors.push(spanned(meta.path(), "expected a key such as `timeout`, found a path".to_owned()));
            continue;
        };
        let group = GROUPS.iter().find(|(g, _)| *g == key).map(|(_, keys)| *keys);
        if group.is_none() && !FLAT.contains(&key.as_str()) && !own.contains(&key.as_str()) {
            errors.push(spanned(meta.path(), unknown(&key, own, site)));
            continue;
        }
        if !seen.insert(key.clone()) {
            errors.push(spanned(meta.path(), format!("duplicate key `{key}`")));
            continue;
        }
        match (group, meta) {
            (Some(keys), Meta::List(list)) => match NestedMeta::parse_meta_list(list.tokens.clone()) {
                Ok(inner) => {
                    let inner = check_group(inner, &key, keys, errors);
                    let tokens = inner.iter().map(|m| quote::quote!(#m));
                    let mut list = list.clone();
                    list.tokens = quote::quote!(#(#tokens),*);
                    kept.push(NestedMeta::Meta(Meta::List(list)));
                }
                Err(e) => errors.push(e.into()),
            },
            (Some(_), _) => {
                errors.push(spanned(meta, format!("`{key}` is a group of keys: write `{key}(key = value, ...)`")))
            }
            (None, Meta::List(_)) => errors.push(spanned(meta, format!("`{key}` takes a value: write `{key} = ...`"))),
            (None, _) => kept.push(item),
        }
    }
    kept
}

fn check_group(
    items: Vec<NestedMeta>,
    group: &str,
    keys: &[&str],
    errors: &mut darling::error::Accumulator,
) -> Vec<NestedMeta> {
    let mut seen = HashSet::new();
    let mut kept = Vec::with_capacity(items.len());
    for item in items {
        let NestedMeta::Meta(meta) = &item else {
            errors.push(spanned(&item, format!("expected `key = value` inside `{group}(...)`")));
            continue;
        };
        let Some(key) = meta.path().get_ident().map(ToString::to_string) else {
            errors.push(spanned(meta.path(), format!("expected a key inside `{group}(...)`, found a path")));
            continue;
        };
        if group == "rate_limit" && key == "per_key" {
            let message = "`per_key` was removed: for one limit per client, name the argument that tells \
                           clients apart: `rate_limit(rate = 10, key = client_id)`";
            errors.push(spanned(meta.path(), message.to_owned()));
            continue;
        }
        if !keys.contains(&key.as_str()) {
            let message = match closest(&key, keys.iter().copied()) {
                Some(near) => format!("unknown key `{key}` in `{group}(...)`, did you mean `{near}`?"),
                None if FLAT.contains(&key.as_str()) || GROUPS.iter().any(|(g, _)| *g == key) => {
                    format!("`{key}` does not belong inside `{group}(...)`; give it at the top level")
                }
                None => format!("unknown key `{key}` in `{group}(...)`; expected one of: {}", list(keys)),
            };
            errors.push(spanned(meta.path(), message));
            continue;
        }
        if !seen.insert(key.clone()) {
            errors.push(spanned(meta.path(), format!("duplicate key `{key}` in `{group}(...)`")));
            continue;
        }
        match (meta, group == "retry" && key == "budget") {
            (Meta::List(list), true) => match NestedMeta::parse_meta_list(list.tokens.clone()) {
                Ok(inner) => {
                    let inner = check_group(inner, "budget", BUDGET, errors);
                    let tokens = inner.iter().map(|m| quote::quote!(#m));
                    let mut list = list.clone();
                    list.tokens = quote::quote!(#(#tokens),*);
                    kept.push(NestedMeta::Meta(Meta::List(list)));
                }
                Err(e) => errors.push(e.into()),
            },
            (_, true) => errors.push(spanned(
                meta,
                String::from(
                    "`budget` is a group of keys: write `budget()` for the defaults, or `budget(ratio = 0.2, ...)`",
                ),
            )),
            (Meta::List(_), false) => errors.push(spanned(meta, format!("`{key}` takes a value: write `{key} = ...`"))),
            _ => kept.push(item),
        }
    }
    kept
}

fn unknown(key: &str, own: &[&str], site: &str) -> String {
    let known = FLAT.iter().chain(GROUPS.iter().map(|(g, _)| g)).chain(own.iter()).copied();
    if let Some(near) = closest(key, known.clone()) {
        return format!("unknown key `{key}`, did you mean `{near}`?");
    }
    if let Some((_, place)) = ELSEWHERE.iter().find(|(k, _)| *k == key) {
        return format!("{site} has no key `{key}`: it belongs to {place}");
    }
    if let Some((group, _)) = GROUPS.iter().find(|(_, keys)| keys.contains(&key)) {
        return format!("`{key}` belongs inside a group: write `{group}({key} = ...)`");
    }
    let mut all: Vec<&str> = known.collect();
    all.sort_unstable();
    format!("unknown key `{key}`; expected one of: {}", list(&all))
}

fn list(keys: &[&str]) -> String {
    keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
}

fn spanned(node: &impl Spanned, message: String) -> darling::Error {
    darling::Error::custom(message).with_span(&node.span())
}

/// The candidate nearest to `word` by edit distance, if near enough to be a typo.
pub(crate) fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .map(|c| (distance(&word.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance. The settings loader in `resilience-core` has its own: this
/// crate cannot depend on the runtime (as with `value::parse_duration`).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = if ca == *cb { previous } else { 1 + previous.min(row[j]).min(row[j + 1]) };
            previous = current;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(closest("max_concurent", FLAT.iter().copied()), Some("max_concurrent"));
        assert_eq!(closest("Externl", ["External", "Internal", "Cache"].into_iter()), Some("External"));
        assert_eq!(closest("colour", FLAT.iter().copied()), None);
    }
}
