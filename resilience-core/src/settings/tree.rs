//! The settings document as a tree of plain values that remember where they came from:
//! a line of the file, or an environment variable.

use std::fmt;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

/// Where a value was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A line of the file (1-based).
    Line(usize),
    /// An environment variable.
    Var(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Line(line) => write!(f, "line {line}"),
            Self::Var(name) => write!(f, "variable {name}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Map(Vec<(String, Node)>),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
    Other(&'static str),
}

/// A value, where it came from, and (for a map entry) where its key was written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) value: Value,
    pub(crate) origin: Origin,
}

/// A YAML syntax error: line (1-based), column (1-based) and message.
#[derive(Debug)]
pub(crate) struct SyntaxError {
    pub(crate) line: usize,
    pub(crate) column: usize,
    pub(crate) message: String,
}

impl Node {
    pub(crate) fn empty_map(origin: Origin) -> Self {
        Self { value: Value::Map(Vec::new()), origin }
    }

    /// Parses one YAML document (an empty document is an empty map).
    pub(crate) fn parse(text: &str) -> Result<Node, SyntaxError> {
        let docs = MarkedYaml::load_from_str(text).map_err(|e| SyntaxError {
            line: e.marker().line(),
            column: e.marker().col() + 1,
            message: e.info().to_owned(),
        })?;
        Ok(match docs.into_iter().next() {
            Some(doc) => convert(&doc),
            None => Node::empty_map(Origin::Line(1)),
        })
    }

    /// A short description of the value's kind, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match &self.value {
            Value::Map(_) => "a mapping",
            Value::Str(_) => "a string",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Bool(_) => "a boolean",
            Value::Null => "nothing",
            Value::Other(kind) => kind,
        }
    }

    /// Deep-merges `top` into this node: maps merge key by key, anything else is replaced.
    pub(crate) fn merge(&mut self, top: &Node) {
        match (&mut self.value, &top.value) {
            (Value::Map(base), Value::Map(entries)) => {
                for (key, value) in entries {
                    match base.iter_mut().find(|(k, _)| k == key) {
                        Some((_, existing)) => existing.merge(value),
                        None => base.push((key.clone(), value.clone())),
                    }
                }
            }
            _ => *self = top.clone(),
        }
    }

    /// Sets the value at `path` (creating maps on the way), as an environment variable says.
    pub(crate) fn set_path(&mut self, path: &[String], value: Node) {
        let Some((first, rest)) = path.split_first() else {
            *self = value;
            return;
        };
        if !matches!(self.value, Value::Map(_)) {
            self.value = Value::Map(Vec::new());
            self.origin = value.origin.clone();
        }
        if let Value::Map(entries) = &mut self.value {
            let index = match entries.iter().position(|(k, _)| k == first) {
                Some(i) => i,
                None => {
                    entries.push((first.clone(), Node::empty_map(value.origin.clone())));
                    entries.len() - 1
                }
            };
            entries[index].1.set_path(rest, value);
        }
    }

    /// The entries of a map, or `None`.
    pub(crate) fn entries(&self) -> Option<&[(String, Node)]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The node at `path`, if any.
    pub(crate) fn get(&self, path: &[&str]) -> Option<&Node> {
        let Some((first, rest)) = path.split_first() else { return Some(self) };
        self.entries()?.iter().find(|(k, _)| k == first)?.1.get(rest)
    }
}

fn convert(yaml: &MarkedYaml<'_>) -> Node {
    let origin = Origin::Line(yaml.span.start.line());
    let value = match &yaml.data {
        YamlData::Mapping(map) => Value::Map(
            map.iter()
                .map(|(k, v)| {
                    let key = match &k.data {
                        YamlData::Value(Scalar::String(s)) => s.to_string(),
                        YamlData::Value(Scalar::Integer(i)) => i.to_string(),
                        YamlData::Value(Scalar::Boolean(b)) => b.to_string(),
                        YamlData::Value(Scalar::FloatingPoint(f)) => f.to_string(),
                        _ => String::from("<complex key>"),
                    };
                    let mut node = convert(v);
                    // Errors about an entry point at its key, where the reader looks.
                    node.origin = Origin::Line(k.span.start.line());
                    (key, node)
                })
                .collect(),
        ),
        YamlData::Value(Scalar::String(s)) => Value::Str(s.to_string()),
        YamlData::Value(Scalar::Integer(i)) => Value::Int(*i),
        YamlData::Value(Scalar::FloatingPoint(f)) => Value::Float(f.into_inner()),
        YamlData::Value(Scalar::Boolean(b)) => Value::Bool(*b),
        YamlData::Value(Scalar::Null) => Value::Null,
        YamlData::Representation(s, _, _) => Value::Str(s.to_string()),
        YamlData::Sequence(_) => Value::Other("a list"),
        _ => Value::Other("an unsupported YAML value"),
    };
    Node { value, origin }
}
