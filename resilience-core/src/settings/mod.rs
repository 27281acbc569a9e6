//! Settings from a YAML file: global defaults, preset changes, external
//! dependencies, environment sections and `RESILIENCE__…` variable overrides.
//!
//! ```
//! use resilience_core::{Registry, Settings};
//!
//! let settings = Settings::from_yaml_str(r#"
//! resilience:
//!   timeouts: { default: 30s, database: 10s }
//!   circuit_breaker: { failure_threshold: 5, recovery_timeout: 60s }
//! external_dependencies:
//!   user_db: { type: database, max_concurrent: 10, timeout: 5s }
//! production:
//!   external_dependencies:
//!     user_db: { max_concurrent: 40 }
//! "#)?
//! .with_environment("production")?;
//! let registry = Registry::new();
//! settings.apply_to(&registry)?;
//! assert_eq!(registry.get("user_db").unwrap().config().bulkhead.max_concurrent.get(), 40);
//! # Ok::<(), resilience_core::ConfigError>(())
//! ```

mod schema;
mod section;
mod tree;

pub use section::{SectionFn, SectionValue, SettingsSection, SETTINGS_SECTIONS};

use std::path::Path;

use crate::config::ConfigOverrides;
use crate::error::ConfigError;
use crate::preset::DependencyType;
use crate::registry::{registry, Defaults, Registry};
use tree::{Node, Origin};

/// The variable that picks the environment section, as [`Settings::with_environment`] does.
pub const ENVIRONMENT_VARIABLE: &str = "RESILIENCE_ENV";
/// The prefix of variables that override single values:
/// `RESILIENCE__EXTERNAL_DEPENDENCIES__USER_DB__TIMEOUT=3s`.
pub const OVERRIDE_PREFIX: &str = "RESILIENCE__";

/// A validated settings file.
///
/// Every constructor validates the whole document, so a `Settings` value can always be
/// applied: [`init`] and [`reload`] change nothing if it does not fit the registry.
///
/// Besides the keys of the contract's example, a dependency (or strategy) entry takes
/// `bulkhead: { kind: adaptive, max_concurrent, min_limit, max_limit }`,
/// `retry: { budget: { ratio, min_per_second, window } }` (`budget: {}` for the
/// defaults), `hedge: { max_attempts, delay }` (`delay: 20ms` or `delay: p95`) and
/// `chaos: { latency, latency_rate, error_rate, every, max_active, seed }`;
/// `resilience: { chaos: { enabled: true } }` switches fault injection on (with the
/// `chaos` feature). `circuit_breaker: { shared: true }` and `rate_limit: { shared: true }`
/// share a dependency's breaker and limit with the service's other instances, and
/// `resilience: { shared_state: { redis_url, instance_id, sync_interval,
/// min_instances_to_open, state_file } }` says how (read by [`Settings::shared_state`];
/// installed by `resilience::shared_state`, feature `shared-state`; an empty `redis_url`
/// keeps state in `state_file` alone).
///
/// ```
/// use resilience_core::{Registry, Settings};
///
/// let settings = Settings::from_yaml_str(
///     "external_dependencies:
///   search:
///     type: external_api
///     bulkhead: { kind: adaptive, max_concurrent: 8, max_limit: 64 }
///     retry: { budget: { ratio: 0.1 } }
///     hedge: { delay: p95 }
/// ",
/// )?;
/// let registry = Registry::new();
/// settings.apply_to(&registry)?;
/// let config = registry.get("search").unwrap().config();
/// assert_eq!(config.retry_budget.unwrap().ratio, 0.1);
/// assert!(config.hedge.is_some());
/// # Ok::<(), resilience_core::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    file: String,
    base: Node,
    environments: Vec<(String, Node)>,
    environment: Option<String>,
    overrides: Vec<(String, String)>,
    /// The document in force: the base, the environment section, the variables.
    effective: Node,
    model: Model,
}

/// What a settings document says, ready to apply.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Model {
    pub(crate) defaults: Defaults,
    pub(crate) dependencies: Vec<(String, DependencyType, ConfigOverrides)>,
    /// `resilience: { chaos: { enabled } }`, when given.
    pub(crate) chaos_enabled: Option<bool>,
    /// `resilience: { shared_state: { … } }`, when given.
    pub(crate) shared_state: Option<crate::shared::SharedStateSettings>,
}

const SECTIONS: [&str; 2] = ["resilience", "external_dependencies"];

/// Every top-level section: the core's and the integrations' (see [`SettingsSection`]).
fn sections() -> Vec<&'static str> {
    SECTIONS.iter().copied().chain(section::names()).collect()
}

impl Settings {
    /// Parses and validates settings from YAML text (`<string>` in error messages).
    /// Reads no environment variable.
    pub fn from_yaml_str(text: &str) -> Result<Self, ConfigError> {
        Self::parse("<string>", text)
    }

    /// Reads, parses and validates a settings file, then applies the process
    /// environment: the section named by `RESILIENCE_ENV` (if set) and every
    /// `RESILIENCE__…` override.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Io { file: file.clone(), message: e.to_string() })?;
        Self::parse(&file, &text)?.with_process_environment()
    }

    fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        let root = Node::parse(text).map_err(|e| ConfigError::Syntax {
            file: file.to_owned(),
            line: e.line,
            column: e.column,
            message: e.message,
        })?;
        let mut base = Node::empty_map(Origin::Line(1));
        let mut environments = Vec::new();
        let Some(entries) = root.entries() else {
            if root.value == tree::Value::Null {
                return Self::build(file, base, environments, None, Vec::new());
            }
            return Err(schema::invalid(
                file,
                "",
                &root,
                format!("the document must be a mapping, not {}", root.kind()),
            ));
        };
        let sections = sections();
        for (key, node) in entries {
            if sections.contains(&key.as_str()) {
                base.set_path(std::slice::from_ref(key), node.clone());
            } else if let Some(close) = schema::suggest(key, &sections).filter(|_| node.entries().is_some()) {
                // Most likely a misspelt section rather than an environment.
                return Err(schema::unknown(file, key, node, Some(close)));
            } else {
                environments.push((key.clone(), node.clone()));
            }
        }
        Self::build(file, base, environments, None, Vec::new())
    }

    fn build(
        file: &str,
        base: Node,
        environments: Vec<(String, Node)>,
        environment: Option<String>,
        overrides: Vec<(String, String)>,
    ) -> Result<Self, ConfigError> {
        // Every environment section is checked, selected or not, as merged over the
        // rest of the document (so it may leave out what the base gives).
        for (name, section) in &environments {
            schema::check_shape(file, name, section)?;
            if environment.as_deref() != Some(name.as_str()) {
                let mut merged = base.clone();
                merged.merge(section);
                schema::read(file, &merged).map_err(|e| e.in_section(name))?;
                section::check_all(file, &merged).map_err(|e| e.in_section(name))?;
            }
        }
        let mut effective = base.clone();
        if let Some(name) = &environment {
            let section = environments.iter().find(|(n, _)| n == name).map(|(_, s)| s).ok_or_else(|| {
                ConfigError::UnknownEnvironment {
                    file: file.to_owned(),
                    name: name.clone(),
                    available: if environments.is_empty() {
                        String::from("no environment sections")
                    } else {
                        environments.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                    },
                }
            })?;
            effective.merge(section);
        }
        for (variable, value) in &overrides {
            let path = variable_path(variable);
            let origin = Origin::Var(variable.clone());
            effective.set_path(&path, Node { value: tree::Value::Str(value.clone()), origin });
        }
        let model = schema::read(file, &effective)?;
        section::check_all(file, &effective)?;
        Ok(Self { file: file.to_owned(), base, environments, environment, overrides, effective, model })
    }

    /// Applies the environment section `name` over the rest of the document.
    pub fn with_environment(self, name: &str) -> Result<Self, ConfigError> {
        Self::build(&self.file, self.base, self.environments, Some(name.to_owned()), self.overrides)
    }

    /// Applies `RESILIENCE_ENV` and the `RESILIENCE__…` overrides found in `vars`
    /// (name and value pairs, as [`std::env::vars`] gives them). Variable overrides win
    /// over the environment section, which wins over the rest of the document.
    pub fn with_variables(self, vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut environment = self.environment;
        let mut overrides = self.overrides;
        for (name, value) in vars {
            if name == ENVIRONMENT_VARIABLE {
                // Set but empty means not set, as for most variables of this kind.
                if !value.is_empty() {
                    environment = Some(value);
                }
            } else if name.starts_with(OVERRIDE_PREFIX) && name.len() > OVERRIDE_PREFIX.len() {
                overrides.retain(|(n, _)| *n != name);
                overrides.push((name, value));
            }
        }
        overrides.sort();
        Self::build(&self.file, self.base, self.environments, environment, overrides)
    }

    /// [`with_variables`](Self::with_variables) with the process environment.
    pub fn with_process_environment(self) -> Result<Self, ConfigError> {
        self.with_variables(std::env::vars())
    }

    /// The environment section in force, if any.
    pub fn environment(&self) -> Option<&str> {
        self.environment.as_deref()
    }

    /// The integration section `name` (`pools`, say) as in force (base, environment
    /// section, variables), already checked by its [`SettingsSection`]; `None` if the
    /// file has none.
    pub fn section(&self, name: &str) -> Option<SectionValue<'_>> {
        let node = self.effective.get(&[name])?;
        Some(SectionValue::new(&self.file, name.to_owned(), node))
    }

    /// The defaults these settings give every dependency.
    pub fn defaults(&self) -> &Defaults {
        &self.model.defaults
    }

    /// The external dependencies: name, type and own configuration.
    pub fn dependencies(&self) -> impl Iterator<Item = (&str, DependencyType, &ConfigOverrides)> {
        self.model.dependencies.iter().map(|(n, t, c)| (n.as_str(), *t, c))
    }

    /// Applies these settings to `registry`: its defaults and every external dependency,
    /// reconfiguring in place the ones already in use, in one step. Every resulting
    /// configuration is prepared first, also of dependencies the settings do not name
    /// (registered in code, over the new defaults); on error nothing changes.
    ///
    /// The section `resilience: { shared_state: { … } }`, when given: what
    /// `resilience::shared_state::SharedStateConfig::from_settings` installs.
    pub fn shared_state(&self) -> Option<&crate::shared::SharedStateSettings> {
        self.model.shared_state.as_ref()
    }

    /// `resilience: { chaos: { enabled } }`, when given, switches fault injection on or
    /// off for the whole process once the rest is applied (with the `chaos` feature;
    /// without it the key is accepted and inert).
    pub fn apply_to(&self, registry: &Registry) -> Result<(), ConfigError> {
        registry.apply(self.model.defaults.clone(), &self.model.dependencies)?;
        #[cfg(feature = "chaos")]
        if let Some(on) = self.model.chaos_enabled {
            crate::chaos::set_enabled(on);
        }
        Ok(())
    }
}

fn variable_path(variable: &str) -> Vec<String> {
    variable[OVERRIDE_PREFIX.len()..].split("__").map(str::to_ascii_lowercase).collect()
}

/// Reads a duration as the settings file writes it: `250ms`, `30s`, `1.5s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    schema::parse_duration(text)
}

/// Applies `settings` to the global registry: defaults, then every external dependency.
/// On error nothing changes.
pub fn init(settings: &Settings) -> Result<(), ConfigError> {
    settings.apply_to(registry())
}

/// Applies new settings to the global registry while it is in use: every live
/// dependency is reconfigured in place (bulkhead permits in use are kept and counted
/// against the new limit) and every call site sees the change on its next call.
/// Dependencies the new settings do not mention keep their configuration.
/// On error nothing changes.
pub fn reload(settings: &Settings) -> Result<(), ConfigError> {
    settings.apply_to(registry())
}
