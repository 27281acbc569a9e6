//! The `pools:` section of the settings file.
//!
//! ```yaml
//! pools:
//!   inventory:
//!     type: http                       # or redis, postgres
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
//!     root_certificates: [/etc/ssl/private-ca.pem]   # PEM files, read with the file
//!   orders_db:
//!     type: postgres
//!     url: postgres://app@127.0.0.1:5432/orders
//!     max_connections: 10
//!     max_wait: 5s
//!     statement_timeout: 30s
//!     connect_timeout: 5s
//!     recycle_check: true
//!     health_check_interval: 30s
//!   sessions:
//!     type: redis
//!     host: 127.0.0.1
//!     port: 6379
//!     db: 0
//!     max_connections: 50
//!     max_wait: 1s
//!     cluster_mode: false              # or true, with cluster_nodes: [host:port, …]
//!     sentinel_hosts: []               # or [host:port, …], with sentinel_master: name
//!     connect_timeout: 2s
//!     response_timeout: 2s             # optional: else the dependency's timeout
//!     health_check_interval: 30s
//! ```
//!
//! A pool type whose feature is off (`http`, `redis`, `postgres`) is an error naming it.
//!
//! Checked when the file is read, environment sections included, with the same errors
//! as the rest of the file (key path and line).

use resilience_core::{ConfigError, DependencyType, SectionFn, SectionValue, Settings, SettingsSection};

use super::PoolConfig;

const TYPES: &[&str] = &["http", "postgres", "redis"];

const HTTP_KEYS: &[&str] = &[
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

const REDIS_KEYS: &[&str] = &[
    "type",
    "dependency_type",
    "host",
    "port",
    "db",
    "password",
    "max_connections",
    "max_wait",
    "cluster_mode",
    "cluster_nodes",
    "sentinel_hosts",
    "sentinel_master",
    "connect_timeout",
    "response_timeout",
    "health_check_interval",
];

const POSTGRES_KEYS: &[&str] = &[
    "type",
    "dependency_type",
    "url",
    "max_connections",
    "max_wait",
    "statement_timeout",
    "connect_timeout",
    "recycle_check",
    "health_check_interval",
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
        let all = entry.entries_of(&[HTTP_KEYS, REDIS_KEYS, POSTGRES_KEYS].concat())?;
        let Some((_, kind)) = all.iter().find(|(k, _)| *k == "type") else {
            return Err(entry.invalid("missing `type` (one of: http, postgres, redis)"));
        };
        let pool = match kind.word(TYPES)?.as_str() {
            "http" => http(name, &entry.entries_of(HTTP_KEYS)?, kind)?,
            "redis" => redis(name, &entry.entries_of(REDIS_KEYS)?, kind)?,
            _ => postgres(name, &entry.entries_of(POSTGRES_KEYS)?, kind)?,
        };
        let mut pool = pool;
        if let Some((_, value)) = all.iter().find(|(k, _)| *k == "dependency_type") {
            let types = DependencyType::ALL.map(DependencyType::as_str);
            pool.dependency_type = value.word(&types)?.parse().ok();
        }
        out.push(pool);
    }
    Ok(out)
}

type Keys<'a> = [(&'a str, SectionValue<'a>)];

#[cfg(feature = "http")]
fn http(name: &str, keys: &Keys<'_>, _kind: &SectionValue<'_>) -> Result<PoolConfig, ConfigError> {
    let mut config = super::HttpPoolConfig::default();
    for (key, value) in keys {
        match *key {
            "type" | "dependency_type" => {}
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
                    let pem = std::fs::read(&file).map_err(|e| path.invalid(format!("cannot read `{file}`: {e}")))?;
                    reqwest::Certificate::from_pem(&pem)
                        .map_err(|e| path.invalid(format!("`{file}` is not a PEM certificate: {e}")))?;
                    config.root_certificates.push(pem);
                }
            }
            _ => config.gzip = value.boolean()?,
        }
    }
    Ok(PoolConfig::http(name, config))
}

#[cfg(not(feature = "http"))]
fn http(_: &str, _: &Keys<'_>, kind: &SectionValue<'_>) -> Result<PoolConfig, ConfigError> {
    Err(kind.invalid("`http` pools need the `http` feature of `resilience`"))
}

#[cfg(feature = "redis")]
fn redis(name: &str, keys: &Keys<'_>, _kind: &SectionValue<'_>) -> Result<PoolConfig, ConfigError> {
    let mut config = super::RedisPoolConfig::default();
    let strings = |value: &SectionValue<'_>| -> Result<Vec<String>, ConfigError> {
        value.list()?.iter().map(SectionValue::string).collect()
    };
    for (key, value) in keys {
        match *key {
            "type" | "dependency_type" => {}
            "host" => config.host = value.string()?,
            "port" => {
                let port = value.count(1)?;
                config.port = u16::try_from(port).map_err(|_| value.invalid(format!("{port} is not a port")))?;
            }
            "db" => config.db = i64::from(u32::try_from(value.count(0)?).map_err(|_| value.invalid("too large"))?),
            "password" => config.password = Some(value.string()?),
            "max_connections" => config.max_connections = value.count_usize(1)?,
            "max_wait" => config.max_wait = value.duration()?,
            "cluster_mode" => config.cluster_mode = value.boolean()?,
            "cluster_nodes" => config.cluster_nodes = strings(value)?,
            "sentinel_hosts" => config.sentinel_hosts = strings(value)?,
            "sentinel_master" => config.sentinel_master = Some(value.string()?),
            "connect_timeout" => config.connect_timeout = value.positive_duration()?,
            "response_timeout" => config.response_timeout = Some(value.positive_duration()?),
            _ => config.health_check_interval = value.positive_duration()?,
        }
    }
    Ok(PoolConfig::redis(name, config))
}

#[cfg(not(feature = "redis"))]
fn redis(_: &str, _: &Keys<'_>, kind: &SectionValue<'_>) -> Result<PoolConfig, ConfigError> {
    Err(kind.invalid("`redis` pools need the `redis` feature of `resilience`"))
}

#[cfg(feature = "postgres")]
fn postgres(name: &str, keys: &Keys<'_>, kind: &SectionValue<'_>) -> Result<PoolConfig, ConfigError> {
    let mut config = super::PostgresPoolConfig::default();
    let mut has_url = false;
    for (key, value) in keys {
        match *key {
            "type" | "dependency_type" => {}
            "url" => {
                let url = value.string()?;
                url.parse::<tokio_postgres::Config>()
                    .map_err(|e| value.invalid(format!("`{url}` is not a PostgreSQL URL: {e}")))?;
                config.url = url;
                has_url = true;
            }
            "max_connections" => config.max_connections = value.count_usize(1)?,
            "max_wait" => config.max_wait = value.duration()?,
            "statement_timeout" => config.statement_timeout = value.duration()?,
            "connect_timeout" => config.connect_timeout = value.positive_duration()?,
            "recycle_check" => config.recycle_check = value.boolean()?,
            _ => config.health_check_interval = value.positive_duration()?,
        }
    }
    if !has_url {
        return Err(kind.invalid("a `postgres` pool needs its `url`"));
    }
    Ok(PoolConfig::postgres(name, config))
}

#[cfg(not(feature = "postgres"))]
fn postgres(_: &str, _: &Keys<'_>, kind: &SectionValue<'_>) -> Result<PoolConfig, ConfigError> {
    Err(kind.invalid("`postgres` pools need the `postgres` feature of `resilience`"))
}
