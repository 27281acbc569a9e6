//! The `pools:` section of the settings file.
//!
//! ```yaml
//! pools:
//!   inventory:
//!     type: http                       # the only kind so far
//!     dependency_type: external_api    # optional: the preset of the pool's dependency
//!     base_url: http://127.0.0.1:8080
//!     max_connections: 100
//!     max_connections_per_host: 30
//!     connect_timeout: 10s
//!     request_timeout: 5s              # optional
//!     max_idle_time: 300s
//!     max_wait: 50ms
//!     health_check_interval: 60s
//!     health_check_path: /health
//!     gzip: true
//!     root_certificates: [/etc/ssl/private-ca.pem]   # PEM files, read when the file is
//! ```
//!
//! Checked when the file is read, environment sections included, with the same errors
//! as the rest of the file (key path and line).

use resilience_core::{ConfigError, DependencyType, SectionFn, SectionValue, Settings, SettingsSection};

use super::{HttpPoolConfig, PoolConfig};

const POOL_KEYS: &[&str] = &[
    "type",
    "dependency_type",
    "base_url",
    "max_connections",
    "max_connections_per_host",
    "connect_timeout",
    "request_timeout",
    "max_idle_time",
    "max_wait",
    "health_check_interval",
    "health_check_path",
    "gzip",
    "root_certificates",
];

#[linkme::distributed_slice(resilience_core::SETTINGS_SECTIONS)]
static POOLS: &'static dyn SettingsSection = &SectionFn { name: "pools", check: |value| read(value).map(|_| ()) };

/// The pools of `settings`' `pools:` section, to pass to
/// [`initialize_pools`](super::initialize_pools) (none if the file has no such section).
pub fn pools_from_settings(settings: &Settings) -> Result<Vec<PoolConfig>, ConfigError> {
    settings.section("pools").map_or_else(|| Ok(Vec::new()), |pools| read(&pools))
}

fn read(pools: &SectionValue<'_>) -> Result<Vec<PoolConfig>, ConfigError> {
    let mut out = Vec::new();
    for (name, entry) in pools.named_entries()? {
        let keys = entry.entries_of(POOL_KEYS)?;
        let Some((_, kind)) = keys.iter().find(|(k, _)| *k == "type") else {
            return Err(entry.invalid("missing `type` (one of: http)"));
        };
        kind.word(&["http"])?;
        let mut config = HttpPoolConfig::default();
        let mut dependency_type = None;
        for (key, value) in &keys {
            match *key {
                "type" => {}
                "dependency_type" => {
                    let types = DependencyType::ALL.map(DependencyType::as_str);
                    dependency_type = value.word(&types)?.parse().ok();
                }
                "base_url" => {
                    let url = value.string()?;
                    reqwest::Url::parse(&url).map_err(|e| value.invalid(format!("`{url}` is not a URL: {e}")))?;
                    config.base_url = Some(url);
                }
                "max_connections" => config.max_connections = value.count_usize(1)?,
                "max_connections_per_host" => config.max_connections_per_host = value.count_usize(1)?,
                "connect_timeout" => config.connect_timeout = value.positive_duration()?,
                "request_timeout" => config.request_timeout = Some(value.positive_duration()?),
                "max_idle_time" => config.max_idle_time = value.duration()?,
                "max_wait" => config.max_wait = value.duration()?,
                "health_check_interval" => config.health_check_interval = value.positive_duration()?,
                "health_check_path" => config.health_check_path = Some(value.string()?),
                "root_certificates" => {
                    for path in value.list()? {
                        let file = path.string()?;
                        let pem =
                            std::fs::read(&file).map_err(|e| path.invalid(format!("cannot read `{file}`: {e}")))?;
                        reqwest::Certificate::from_pem(&pem)
                            .map_err(|e| path.invalid(format!("`{file}` is not a PEM certificate: {e}")))?;
                        config.root_certificates.push(pem);
                    }
                }
                _ => config.gzip = value.boolean()?,
            }
        }
        let mut pool = PoolConfig::http(name, config);
        pool.dependency_type = dependency_type;
        out.push(pool);
    }
    Ok(out)
}
