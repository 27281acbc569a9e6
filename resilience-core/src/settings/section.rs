//! Sections of the settings file that integrations read (`pools:`, `middleware:`).
//!
//! An integration adds a [`SettingsSection`] to [`SETTINGS_SECTIONS`] (a link-time
//! list: no registration call, so a section is known before any file is parsed). The
//! loader then treats its name as a section rather than an environment, checks it in
//! the base document and in every environment section (merged over the base), and
//! [`Settings::section`](super::Settings::section) hands its value to the integration.
//! Values keep their key path and line, so integrations report errors by the same
//! rules as the core: [`SectionValue::invalid`], [`SectionValue::entries_of`].

use std::time::Duration;

use super::schema;
use super::tree::{Node, Origin, Value};
use crate::error::ConfigError;

/// A top-level section of the settings file read by an integration.
pub trait SettingsSection: Send + Sync + 'static {
    /// The section's key (`pools`).
    fn name(&self) -> &'static str;

    /// Checks the section's value (not called when the file has no such section).
    fn check(&self, value: &SectionValue<'_>) -> Result<(), ConfigError>;
}

/// Every [`SettingsSection`] linked into the program.
#[linkme::distributed_slice]
pub static SETTINGS_SECTIONS: [&'static dyn SettingsSection];

/// The names of the sections linked in.
pub(super) fn names() -> impl Iterator<Item = &'static str> {
    SETTINGS_SECTIONS.iter().map(|s| s.name())
}

/// Checks `root`'s integration sections (a whole document, base or merged).
pub(super) fn check_all(file: &str, root: &Node) -> Result<(), ConfigError> {
    for section in SETTINGS_SECTIONS.iter() {
        if let Some(node) = root.get(&[section.name()]) {
            section.check(&SectionValue { file, path: section.name().to_owned(), node })?;
        }
    }
    Ok(())
}

/// A value of the settings file, with where it was written.
#[derive(Debug, Clone)]
pub struct SectionValue<'a> {
    file: &'a str,
    path: String,
    node: &'a Node,
}

impl<'a> SectionValue<'a> {
    pub(super) fn new(file: &'a str, path: String, node: &'a Node) -> Self {
        Self { file, path, node }
    }

    /// Its key path (`pools.http_default.max_connections`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The line it was written on (`None` for a value from an environment variable).
    pub fn line(&self) -> Option<usize> {
        match self.node.origin {
            Origin::Line(line) => Some(line),
            Origin::Var(_) => None,
        }
    }

    /// An error about this value: file, line, key path and `message`.
    pub fn invalid(&self, message: impl Into<String>) -> ConfigError {
        schema::invalid(self.file, &self.path, self.node, message)
    }

    /// The entries of a mapping whose keys must all be in `allowed` (an empty mapping for
    /// an empty value); an unknown key is an error naming it, with the closest allowed
    /// key suggested.
    pub fn entries_of(&self, allowed: &[&str]) -> Result<Vec<(&'a str, SectionValue<'a>)>, ConfigError> {
        let entries = schema::entries(self.file, &self.path, self.node, allowed)?;
        Ok(entries.iter().map(|(key, node)| (key.as_str(), self.child(key, node))).collect())
    }

    /// The entries of a mapping whose keys are names (of pools, say): any key.
    pub fn named_entries(&self) -> Result<Vec<(&'a str, SectionValue<'a>)>, ConfigError> {
        match &self.node.value {
            Value::Null => Ok(Vec::new()),
            Value::Map(entries) => {
                Ok(entries.iter().map(|(key, node)| (key.as_str(), self.child(key, node))).collect())
            }
            _ => Err(self.invalid(format!("expected a mapping, found {}", self.node.kind()))),
        }
    }

    fn child(&self, key: &str, node: &'a Node) -> SectionValue<'a> {
        SectionValue { file: self.file, path: format!("{}.{key}", self.path), node }
    }

    /// The items of a list, each with its path (`key[0]`); a single value is a list of one.
    pub fn list(&self) -> Result<Vec<SectionValue<'a>>, ConfigError> {
        match &self.node.value {
            Value::List(items) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, node)| SectionValue { file: self.file, path: format!("{}[{i}]", self.path), node })
                .collect()),
            Value::Null => Ok(Vec::new()),
            _ => Ok(vec![self.clone()]),
        }
    }

    /// A string.
    pub fn string(&self) -> Result<String, ConfigError> {
        match &self.node.value {
            Value::Str(s) => Ok(s.clone()),
            _ => Err(self.invalid(format!("expected a string, found {}", self.node.kind()))),
        }
    }

    /// A whole number of at least `min`.
    pub fn count(&self, min: u64) -> Result<u64, ConfigError> {
        let n = match &self.node.value {
            Value::Int(i) => *i,
            Value::Str(s) if s.trim().parse::<i64>().is_ok() => s.trim().parse().unwrap_or_default(),
            _ => return Err(self.invalid(format!("expected a whole number, found {}", self.node.kind()))),
        };
        u64::try_from(n)
            .ok()
            .filter(|n| *n >= min)
            .ok_or_else(|| self.invalid(format!("must be at least {min}, found {n}")))
    }

    /// A number.
    pub fn number(&self) -> Result<f64, ConfigError> {
        match &self.node.value {
            Value::Int(i) => Ok(*i as f64),
            Value::Float(f) => Ok(*f),
            Value::Str(s) => s.trim().parse().map_err(|_| self.invalid(format!("`{s}` is not a number"))),
            _ => Err(self.invalid(format!("expected a number, found {}", self.node.kind()))),
        }
    }

    /// `true` or `false`.
    pub fn boolean(&self) -> Result<bool, ConfigError> {
        match &self.node.value {
            Value::Bool(b) => Ok(*b),
            Value::Str(s) if s == "true" => Ok(true),
            Value::Str(s) if s == "false" => Ok(false),
            _ => Err(self.invalid(format!("expected `true` or `false`, found {}", self.node.kind()))),
        }
    }

    /// A duration with a unit (`250ms`, `30s`, `5m`, `1h`).
    pub fn duration(&self) -> Result<Duration, ConfigError> {
        match &self.node.value {
            Value::Str(s) => schema::parse_duration(s.trim()).ok_or_else(|| {
                self.invalid(format!("`{s}` is not a duration; write a number and a unit: `250ms`, `30s`, `5m`, `1h`"))
            }),
            Value::Int(_) | Value::Float(_) => {
                Err(self.invalid("a duration needs a unit, such as `250ms`, `30s`, `5m` or `1h`"))
            }
            _ => Err(self.invalid(format!("expected a duration such as `30s`, found {}", self.node.kind()))),
        }
    }

    /// One of `expected` (a word such as `http`), with a suggestion for a near miss.
    pub fn word(&self, expected: &[&str]) -> Result<String, ConfigError> {
        let s = self.string()?;
        if expected.contains(&s.as_str()) {
            return Ok(s);
        }
        Err(self.invalid(match schema::suggest(&s, expected) {
            Some(close) => format!("unknown value `{s}`; did you mean `{close}`?"),
            None => format!("unknown value `{s}`; expected one of: {}", expected.join(", ")),
        }))
    }
}
