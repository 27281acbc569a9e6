//! The settings document as a tree of plain values that remember where they came from:
//! a line of the file, or an environment variable.

use std::fmt;

use saphyr::Scalar;
use saphyr_parser::{Event, Parser, ScanError, Span};

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
    /// A list (only integration sections take lists; the core's keys do not).
    List(Vec<Node>),
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
    ///
    /// Built from the parser's events with a stack of its own, so input of any shape
    /// costs no recursion: nesting deeper than [`MAX_DEPTH`], a second document, a key
    /// that is not a plain value, an empty key and a key written twice are errors.
    pub(crate) fn parse(text: &str) -> Result<Node, SyntaxError> {
        Loader::default().load(text)
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
            Value::List(_) => "a list",
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
            // Variable names are upper case: a key written in any case is theirs.
            let found = entries
                .iter()
                .position(|(k, _)| k == first)
                .or_else(|| entries.iter().position(|(k, _)| k.eq_ignore_ascii_case(first)));
            let index = match found {
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

/// How deep mappings and lists may nest; a settings document needs five levels.
pub(crate) const MAX_DEPTH: usize = 64;

/// A mapping or list being read.
enum Frame {
    Map {
        entries: Vec<(String, Node)>,
        origin: Origin,
        /// The key read, waiting for its value, and its line.
        key: Option<(String, usize)>,
    },
    List {
        items: Vec<Node>,
        origin: Origin,
    },
}

#[derive(Default)]
struct Loader {
    stack: Vec<Frame>,
    root: Option<Node>,
    documents: usize,
}

fn line_of(span: &Span) -> usize {
    span.start.line()
}

fn syntax(span: &Span, message: impl Into<String>) -> SyntaxError {
    SyntaxError { line: span.start.line(), column: span.start.col() + 1, message: message.into() }
}

fn scan_error(e: &ScanError) -> SyntaxError {
    SyntaxError { line: e.marker().line(), column: e.marker().col() + 1, message: e.info().to_owned() }
}

impl Loader {
    fn load(mut self, text: &str) -> Result<Node, SyntaxError> {
        let mut parser = Parser::new_from_str(text);
        while let Some(event) = parser.next_event() {
            let (event, span) = event.map_err(|e| scan_error(&e))?;
            match event {
                Event::StreamEnd => break,
                Event::DocumentStart(_) => {
                    self.documents += 1;
                    if self.documents > 1 {
                        return Err(syntax(
                            &span,
                            "a second YAML document (`---`); a settings file holds one document",
                        ));
                    }
                }
                Event::MappingStart(..) => {
                    self.open(&span)?;
                    self.stack.push(Frame::Map {
                        entries: Vec::new(),
                        origin: Origin::Line(line_of(&span)),
                        key: None,
                    });
                }
                Event::SequenceStart(..) => {
                    self.open(&span)?;
                    self.stack.push(Frame::List { items: Vec::new(), origin: Origin::Line(line_of(&span)) });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    let node = match self.stack.pop() {
                        Some(Frame::Map { entries, origin, .. }) => Node { value: Value::Map(entries), origin },
                        // The schema takes no list: it reports one where it finds it.
                        Some(Frame::List { items, origin }) => Node { value: Value::List(items), origin },
                        None => return Err(syntax(&span, "unbalanced end of a mapping or list")),
                    };
                    self.value(node, &span)?;
                }
                Event::Scalar(text, style, _, tag) => {
                    if let Some(Frame::Map { key: key @ None, entries, .. }) = self.stack.last_mut() {
                        let name = match Scalar::parse_from_cow_and_metadata(text, style, tag.as_ref()) {
                            Some(Scalar::String(s)) => s.to_string(),
                            Some(Scalar::Integer(i)) => i.to_string(),
                            Some(Scalar::Boolean(b)) => b.to_string(),
                            Some(Scalar::FloatingPoint(f)) => f.to_string(),
                            Some(Scalar::Null) | None => String::new(),
                        };
                        if name.is_empty() {
                            return Err(syntax(&span, "an empty key; every key needs a name"));
                        }
                        if let Some((_, first)) = entries.iter().find(|(k, _)| *k == name) {
                            let first = match first.origin {
                                Origin::Line(line) => format!(" (first at line {line})"),
                                Origin::Var(_) => String::new(),
                            };
                            return Err(syntax(&span, format!("the key `{name}` is written twice{first}")));
                        }
                        *key = Some((name, line_of(&span)));
                        continue;
                    }
                    let value = match Scalar::parse_from_cow_and_metadata(text, style, tag.as_ref()) {
                        Some(Scalar::String(s)) => Value::Str(s.to_string()),
                        Some(Scalar::Integer(i)) => Value::Int(i),
                        Some(Scalar::FloatingPoint(f)) => Value::Float(f.into_inner()),
                        Some(Scalar::Boolean(b)) => Value::Bool(b),
                        Some(Scalar::Null) => Value::Null,
                        None => Value::Other("a value with an unknown tag"),
                    };
                    self.value(Node { value, origin: Origin::Line(line_of(&span)) }, &span)?;
                }
                Event::Alias(_) => {
                    let node = Node { value: Value::Other("an alias (`*name`)"), origin: Origin::Line(line_of(&span)) };
                    self.value(node, &span)?;
                }
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            }
        }
        Ok(self.root.unwrap_or_else(|| Node::empty_map(Origin::Line(1))))
    }

    /// A mapping or list starts: as a value, never as a key, and not too deep.
    fn open(&self, span: &Span) -> Result<(), SyntaxError> {
        if let Some(Frame::Map { key: None, .. }) = self.stack.last() {
            return Err(syntax(span, "a mapping or list as a key; keys are plain names"));
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(syntax(span, format!("nested more than {MAX_DEPTH} levels deep")));
        }
        Ok(())
    }

    /// A complete value: the pending key's, a list item, or the document itself.
    fn value(&mut self, mut node: Node, span: &Span) -> Result<(), SyntaxError> {
        match self.stack.last_mut() {
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                Some((name, line)) => {
                    // Errors about an entry point at its key, where the reader looks.
                    node.origin = Origin::Line(line);
                    entries.push((name, node));
                }
                None => return Err(syntax(span, "a mapping or list as a key; keys are plain names")),
            },
            Some(Frame::List { items, .. }) => items.push(node),
            None => self.root = Some(node),
        }
        Ok(())
    }
}
