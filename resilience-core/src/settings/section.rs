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

/// A section given by its name and a function checking it: what most integrations need.
///
/// ```text
/// #[linkme::distributed_slice(resilience_core::SETTINGS_SECTIONS)]
/// static POOLS: &'static dyn SettingsSection = &SectionFn { name: "pools", check: |v| read(v).map(|_| ()) };
/// ```
#[derive(Debug, Clone, Copy)]
pub struct SectionFn {
    /// The section's key.
    pub name: &'static str,
    /// Checks the section's value.
    pub check: fn(&SectionValue<'_>) -> Result<(), ConfigError>,
}

impl SettingsSection for SectionFn {
    fn name(&self) -> &'static str {
        self.name
    }

    fn check(&self, value: &SectionValue<'_>) -> Result<(), ConfigError> {
        (self.check)(value)
    }
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

    fn reader(&self) -> schema::Reader<'a> {
        schema::Reader { file: self.file }
    }

    /// A whole number of at least `min`.
    pub fn count(&self, min: u64) -> Result<u64, ConfigError> {
        let n = self.reader().integer(&self.path, self.node)?;
        u64::try_from(n)
            .ok()
            .filter(|n| *n >= min)
            .ok_or_else(|| self.invalid(format!("must be at least {min}, found {n}")))
    }

    /// A whole number of at least `min` that fits a `usize`.
    pub fn count_usize(&self, min: u64) -> Result<usize, ConfigError> {
        let n = self.count(min)?;
        usize::try_from(n).map_err(|_| self.invalid(format!("{n} is too large")))
    }

    /// A number.
    pub fn number(&self) -> Result<f64, ConfigError> {
        self.reader().number(&self.path, self.node)
    }

    /// `true` or `false`.
    pub fn boolean(&self) -> Result<bool, ConfigError> {
        self.reader().boolean(&self.path, self.node)
    }

    /// A duration with a unit (`250ms`, `30s`, `5m`, `1h`).
    pub fn duration(&self) -> Result<Duration, ConfigError> {
        self.reader().duration(&self.path, self.node)
    }

    /// A duration with a unit, longer than zero.
    pub fn positive_duration(&self) -> Result<Duration, ConfigError> {
        let d = self.duration()?;
        if d.is_zero() {
            return Err(self.invalid("must be greater than zero"));
        }
        Ok(d)
    }

    /// One of `expected` (a word such as `http`), with a suggestion for a near miss.
    pub fn word(&self, expected: &[&str]) -> Result<String, ConfigError> {
        self.reader().word(&self.path, self.node, expected).map(str::to_owned)
    }
}
