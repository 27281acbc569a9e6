//! The `middleware:` section of the settings file.
//!
//! ```yaml
//! middleware:
//!   enable_circuit_breaker: true
//!   enable_bulkhead: true
//!   enable_rate_limiting: true
//!   request_timeout: 30s
//!   bulkhead_max_concurrent: 1000
//!   bulkhead_max_wait: 0s
//!   circuit_breaker_failure_threshold: 5
//!   circuit_breaker_recovery_timeout: 60s
//!   rate_limit: { per_second: 100, burst: 20, max_clients: 10000, key_header: x-api-key, quota_headers: true }
//!   enable_request_id: true                      # x-request-id on every answer and span
//!   trusted_proxies: [10.0.0.0/8, 192.168.0.0/16]
//!   excluded_paths: [/health, /metrics]          # or one comma-separated string
//!   chaos: { latency: 200ms, latency_rate: 0.1, error_rate: 0.01, max_active: 10, seed: 7 }
//!   chaos_header: x-chaos                        # requests may ask for a fault, within `chaos`
//! ```
//!
//! Checked when the file is read, environment sections included, with the same errors as
//! the rest of the file (key path and line).

use resilience_core::{ConfigError, SectionFn, SectionValue, Settings, SettingsSection};

use super::{ClientKey, IpNet, MiddlewareConfig, RateLimitConfig};

const KEYS: &[&str] = &[
    "enable_circuit_breaker",
    "enable_bulkhead",
    "enable_rate_limiting",
    "request_timeout",
    "bulkhead_max_concurrent",
    "bulkhead_max_wait",
    "circuit_breaker_failure_threshold",
    "circuit_breaker_recovery_timeout",
    "rate_limit",
    "enable_request_id",
    "trusted_proxies",
    "excluded_paths",
    "chaos",
    "chaos_header",
];

const CHAOS_KEYS: &[&str] = &["latency", "latency_rate", "error_rate", "every", "max_active", "seed"];

const RATE_LIMIT_KEYS: &[&str] = &["per_second", "burst", "max_clients", "key_header", "quota_headers"];

#[linkme::distributed_slice(resilience_core::SETTINGS_SECTIONS)]
static MIDDLEWARE: &'static dyn SettingsSection =
    &SectionFn { name: "middleware", check: |value| read(value).map(|_| ()) };

/// The [`MiddlewareConfig`] of `settings`' `middleware:` section over the defaults, or
/// `None` if the file has no such section.
pub fn middleware_from_settings(settings: &Settings) -> Result<Option<MiddlewareConfig>, ConfigError> {
    settings.section("middleware").map(|section| read(&section)).transpose()
}

/// A YAML list of strings, or one string of comma-separated items (as an environment
/// variable gives it).
fn list(value: &SectionValue<'_>) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::new();
    for item in value.list()? {
        out.extend(item.string()?.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned));
    }
    Ok(out)
}

fn read(section: &SectionValue<'_>) -> Result<MiddlewareConfig, ConfigError> {
    let mut c = MiddlewareConfig::default();
    for (key, value) in section.entries_of(KEYS)? {
        match key {
            "enable_circuit_breaker" => c.enable_circuit_breaker = value.boolean()?,
            "enable_bulkhead" => c.enable_bulkhead = value.boolean()?,
            "enable_rate_limiting" => c.enable_rate_limiting = value.boolean()?,
            "enable_request_id" => c.enable_request_id = value.boolean()?,
            "request_timeout" => c.request_timeout = value.positive_duration()?,
            "bulkhead_max_concurrent" => c.bulkhead_max_concurrent = value.count_usize(1)?,
            "bulkhead_max_wait" => c.bulkhead_max_wait = value.duration()?,
            "circuit_breaker_failure_threshold" => {
                let n = value.count(1)?;
                if n > 100 {
                    return Err(value.invalid(format!("{n} failures can never fit in the window of 100 requests")));
                }
                c.circuit_breaker_failure_threshold = n as u32;
            }
            "circuit_breaker_recovery_timeout" => c.circuit_breaker_recovery_timeout = value.duration()?,
            "rate_limit" => {
                let mut limit = RateLimitConfig::per_client(0.0, 1);
                let mut rate = None;
                for (key, v) in value.entries_of(RATE_LIMIT_KEYS)? {
                    match key {
                        "per_second" => {
                            let r = v.number()?;
                            resilience_rules::rate(r).map_err(|m| v.invalid(m))?;
                            rate = Some(r);
                        }
                        "burst" => limit.burst = u32::try_from(v.count(1)?).map_err(|_| v.invalid("too large"))?,
                        "max_clients" => limit.max_clients = v.count_usize(1)?,
                        "quota_headers" => limit.quota_headers = v.boolean()?,
                        _ => {
                            let name = v.string()?;
                            let header = http::HeaderName::try_from(name.as_str())
                                .map_err(|_| v.invalid(format!("`{name}` is not a header name")))?;
                            limit.key = ClientKey::Header(header);
                        }
                    }
                }
                limit.per_second = rate.ok_or_else(|| value.invalid("a rate limit needs `per_second`"))?;
                c.rate_limit = Some(limit);
            }
            "trusted_proxies" => {
                let mut nets = Vec::new();
                for net in list(&value)? {
                    let parsed = net
                        .parse::<IpNet>()
                        .or_else(|_| net.parse::<std::net::IpAddr>().map(IpNet::from))
                        .map_err(|_| value.invalid(format!("`{net}` is not an address or a CIDR network")))?;
                    nets.push(parsed);
                }
                c.trusted_proxies = nets;
            }
            "chaos" => {
                let mut chaos = resilience_core::ChaosConfig::default();
                for (key, v) in value.entries_of(CHAOS_KEYS)? {
                    let fraction = |v: &SectionValue<'_>| {
                        let x = v.number()?;
                        resilience_rules::fraction(x).map(|()| x).map_err(|m| v.invalid(m))
                    };
                    match key {
                        "latency" => chaos.latency = Some(v.duration()?),
                        "latency_rate" => chaos.latency_rate = fraction(&v)?,
                        "error_rate" => chaos.error_rate = fraction(&v)?,
                        "every" => {
                            let n = u32::try_from(v.count(1)?).map_err(|_| v.invalid("too large"))?;
                            chaos.every = std::num::NonZeroU32::new(n);
                        }
                        "max_active" => chaos.max_active = std::num::NonZeroUsize::new(v.count_usize(1)?),
                        _ => chaos.seed = Some(v.count(0)?),
                    }
                }
                c.chaos = Some(chaos);
            }
            "chaos_header" => {
                let name = value.string()?;
                http::HeaderName::try_from(name.as_str())
                    .map_err(|_| value.invalid(format!("`{name}` is not a header name")))?;
                c.chaos_header = Some(name);
            }
            _ => c.excluded_paths = list(&value)?,
        }
    }
    Ok(c)
}
