//! YAML to a located tree.
//!
//! Serde-based YAML readers lose positions, so this module builds its own tree
//! from the event stream of `yaml-rust2`, keeping the file, line and column of
//! every node and key. Guarantees, whatever the input:
//! - bounded work: nesting deeper than [`MAX_DEPTH`] and alias expansion past
//!   [`MAX_NODES`] nodes stop the read with an error (alias bombs fail fast,
//!   because the budget is charged before an anchor's subtree is copied);
//! - no panics: scanner errors become diagnostics at their position.
//!
//! Scalars resolve as YAML 1.2's core schema plus the YAML 1.1 booleans
//! (`yes`/`no`/`on`/`off`) that real Platform.sh files use. Keys are kept as the
//! text written. `<<` merge keys are honoured. A duplicate key is an error.

use std::collections::HashMap;
use std::sync::Arc;

use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::diag::{Diagnostics, Span};

/// Deepest nesting of collections accepted in one file.
pub(crate) const MAX_DEPTH: usize = 64;
/// Most nodes one file may expand to, aliases included.
pub(crate) const MAX_NODES: usize = 100_000;

/// A value with its location.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    pub(crate) value: Value,
    pub(crate) span: Span,
    /// A local tag such as `include` for `!include`; `None` when untagged.
    pub(crate) tag: Option<String>,
    /// Nodes in this subtree, itself included; charged again for each alias use.
    size: usize,
}

/// A mapping key: the text as written and where.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Key {
    pub(crate) text: String,
    pub(crate) span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

impl Node {
    pub(crate) fn new(value: Value, span: Span) -> Node {
        let size = 1 + match &value {
            Value::Seq(items) => items.iter().map(|n| n.size).sum(),
            Value::Map(entries) => entries.iter().map(|(_, n)| n.size).sum(),
            _ => 0,
        };
        Node {
            value,
            span,
            tag: None,
            size,
        }
    }

    /// The value of `key` in a mapping node.
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key and value of `key` in a mapping node.
    pub(crate) fn entry(&self, key: &str) -> Option<(&Key, &Node)> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.text == key)
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A short name of the value's kind, for messages.
    pub(crate) fn kind_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a map",
        }
    }

    /// Converts to JSON for schema validation and typed decoding.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.text.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// The node and, for map entries, the key at a JSON pointer's segments.
    pub(crate) fn at_path<'a>(&'a self, path: &[String]) -> Option<(Option<&'a Key>, &'a Node)> {
        let mut key = None;
        let mut node = self;
        for segment in path {
            match &node.value {
                Value::Map(entries) => {
                    let (k, v) = entries.iter().find(|(k, _)| &k.text == segment)?;
                    key = Some(k);
                    node = v;
                }
                Value::Seq(items) => {
                    node = items.get(segment.parse::<usize>().ok()?)?;
                    key = None;
                }
                _ => return None,
            }
        }
        Some((key, node))
    }
}

/// Parses one YAML document. On a syntax error, or when a limit is hit, the
/// problem is recorded in `diags` and `None` is returned.
pub(crate) fn parse(file: &Arc<str>, text: &str, diags: &mut Diagnostics) -> Option<Node> {
    let mut builder = Builder {
        file: Arc::clone(file),
        stack: Vec::new(),
        anchors: HashMap::new(),
        budget: MAX_NODES,
        root: None,
        documents: 0,
    };
    let mut parser = Parser::new_from_str(text);
    loop {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => break,
            Ok((event, mark)) => {
                if let Err(failure) = builder.on_event(event, mark) {
                    diags.error(Some(failure.span), failure.message);
                    return None;
                }
            }
            Err(e) => {
                let span = builder.span(*e.marker());
                diags.error(Some(span), format!("YAML syntax error: {}", e.info()));
                return None;
            }
        }
    }
    Some(
        builder
            .root
            .unwrap_or_else(|| Node::new(Value::Null, Span::file_start(file))),
    )
}

struct Failure {
    span: Span,
    message: String,
}

enum Frame {
    Seq {
        start: Span,
        anchor: usize,
        tag: Option<String>,
        items: Vec<Node>,
    },
    Map {
        start: Span,
        anchor: usize,
        tag: Option<String>,
        entries: Vec<(Key, Node)>,
        merges: Vec<Node>,
        pending_key: Option<Key>,
    },
}

struct Builder {
    file: Arc<str>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    budget: usize,
    root: Option<Node>,
    documents: usize,
}

impl Builder {
    fn span(&self, mark: Marker) -> Span {
        Span {
            file: Arc::clone(&self.file),
            line: u32::try_from(mark.line()).unwrap_or(u32::MAX),
            column: u32::try_from(mark.col() + 1).unwrap_or(u32::MAX),
        }
    }

    fn charge(&mut self, nodes: usize, span: &Span) -> Result<(), Failure> {
        match self.budget.checked_sub(nodes) {
            Some(rest) => {
                self.budget = rest;
                Ok(())
            }
            None => Err(Failure {
                span: span.clone(),
                message: format!(
                    "document expands to more than {MAX_NODES} nodes (aliases included); refusing to read it"
                ),
            }),
        }
    }

    fn on_event(&mut self, event: Event, mark: Marker) -> Result<(), Failure> {
        let span = self.span(mark);
        match event {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(Failure {
                        span,
                        message: "a config file holds one YAML document; found a second one".into(),
                    });
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.charge(1, &span)?;
                let tag = tag.as_ref().and_then(local_tag);
                let value = if style == TScalarStyle::Plain && tag.is_none() {
                    resolve_plain(&text)
                } else {
                    Value::Str(text)
                };
                let mut node = Node::new(value, span);
                node.tag = tag;
                self.complete(node, anchor)?;
            }
            Event::Alias(anchor) => {
                let Some(size) = self.anchors.get(&anchor).map(|n| n.size) else {
                    return Err(Failure {
                        span,
                        message: "alias refers to an unknown anchor".into(),
                    });
                };
                self.charge(size, &span)?;
                let Some(node) = self.anchors.get(&anchor).cloned() else {
                    return Ok(());
                };
                self.complete(node, 0)?;
            }
            Event::SequenceStart(anchor, tag) => {
                self.enter(&span)?;
                self.stack.push(Frame::Seq {
                    start: span,
                    anchor,
                    tag: tag.as_ref().and_then(local_tag),
                    items: Vec::new(),
                });
            }
            Event::MappingStart(anchor, tag) => {
                self.enter(&span)?;
                self.stack.push(Frame::Map {
                    start: span,
                    anchor,
                    tag: tag.as_ref().and_then(local_tag),
                    entries: Vec::new(),
                    merges: Vec::new(),
                    pending_key: None,
                });
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq {
                    start,
                    anchor,
                    tag,
                    items,
                }) = self.stack.pop()
                {
                    let span = earliest(start, items.first().map(|n| &n.span));
                    let mut node = Node::new(Value::Seq(items), span);
                    node.tag = tag;
                    self.complete(node, anchor)?;
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    start,
                    anchor,
                    tag,
                    mut entries,
                    merges,
                    ..
                }) = self.stack.pop()
                {
                    let span = earliest(start, entries.first().map(|(k, _)| &k.span));
                    apply_merges(&mut entries, merges, &span)?;
                    let mut node = Node::new(Value::Map(entries), span);
                    node.tag = tag;
                    self.complete(node, anchor)?;
                }
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
        Ok(())
    }

    fn enter(&mut self, span: &Span) -> Result<(), Failure> {
        self.charge(1, span)?;
        if self.stack.len() >= MAX_DEPTH {
            return Err(Failure {
                span: span.clone(),
                message: format!("nesting deeper than {MAX_DEPTH} levels"),
            });
        }
        Ok(())
    }

    /// Hands a finished node to its parent (or makes it the root).
    fn complete(&mut self, node: Node, anchor: usize) -> Result<(), Failure> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                merges,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => {
                    let text = match &node.value {
                        Value::Str(s) => s.clone(),
                        Value::Null => String::new(),
                        Value::Bool(_) | Value::Int(_) | Value::Float(_) => scalar_text(&node),
                        Value::Seq(_) | Value::Map(_) => {
                            return Err(Failure {
                                span: node.span,
                                message: "a list or map cannot be a key".into(),
                            });
                        }
                    };
                    if text != "<<"
                        && let Some((first, _)) = entries.iter().find(|(k, _)| k.text == text)
                    {
                        return Err(Failure {
                            span: node.span,
                            message: format!(
                                "duplicate key `{text}` (first defined at line {})",
                                first.span.line
                            ),
                        });
                    }
                    *pending_key = Some(Key {
                        text,
                        span: node.span,
                    });
                }
                Some(key) if key.text == "<<" => merges.push(node),
                Some(key) => entries.push((key, node)),
            },
        }
        Ok(())
    }
}

/// Applies `<<` merge keys: merged entries never override keys written in the map.
fn apply_merges(
    entries: &mut Vec<(Key, Node)>,
    merges: Vec<Node>,
    span: &Span,
) -> Result<(), Failure> {
    for merge in merges {
        let sources = match merge.value {
            Value::Map(_) => vec![merge],
            Value::Seq(items) => items,
            _ => {
                return Err(Failure {
                    span: merge.span,
                    message: "a `<<` merge key needs a map or a list of maps".into(),
                });
            }
        };
        for source in sources {
            let Value::Map(source_entries) = source.value else {
                return Err(Failure {
                    span: span.clone(),
                    message: "a `<<` merge key needs a map or a list of maps".into(),
                });
            };
            for (k, v) in source_entries {
                if !entries.iter().any(|(e, _)| e.text == k.text) {
                    entries.push((k, v));
                }
            }
        }
    }
    Ok(())
}

fn earliest(start: Span, first_child: Option<&Span>) -> Span {
    match first_child {
        Some(child) if (child.line, child.column) < (start.line, start.column) => child.clone(),
        _ => start,
    }
}

/// `!include` → `include`; core tags (`!!str`) → `None` except `!!str`, kept as `str`.
fn local_tag(tag: &Tag) -> Option<String> {
    if tag.handle == "!" {
        Some(tag.suffix.clone())
    } else if tag.suffix == "str" || tag.suffix.ends_with(":str") {
        Some("str".into())
    } else {
        None
    }
}

fn scalar_text(node: &Node) -> String {
    match &node.value {
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Str(s) => s.clone(),
        _ => String::new(),
    }
}

/// Resolves an untagged plain scalar.
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => {
            return Value::Bool(true);
        }
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
            return Value::Bool(false);
        }
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Str(text.to_owned()),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = text.parse::<i64>() {
            return Value::Int(i);
        }
        return Value::Str(text.to_owned());
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::Int(i);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Value::Int(i);
    }
    if looks_like_float(digits)
        && let Ok(f) = text.parse::<f64>()
    {
        return Value::Float(f);
    }
    Value::Str(text.to_owned())
}

/// YAML 1.2 core float syntax (without sign): `1.5`, `.5`, `1.`, `1e3`, `1.5E-3`.
fn looks_like_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = all_digits(int_part)
        && frac_part.is_none_or(all_digits)
        && (!int_part.is_empty() || frac_part.is_some_and(|f| !f.is_empty()))
        && (frac_part.is_some() || exponent.is_some());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Node {
        let mut d = Diagnostics::default();
        let file: Arc<str> = Arc::from("t.yaml");
        let node = parse(&file, text, &mut d);
        assert!(d.is_empty(), "{d}");
        node.unwrap()
    }

    fn parse_err(text: &str) -> String {
        let mut d = Diagnostics::default();
        let file: Arc<str> = Arc::from("t.yaml");
        assert!(parse(&file, text, &mut d).is_none());
        d.to_string()
    }

    #[test]
    fn keeps_positions_of_keys_and_values() {
        let n = parse_ok("a:\n  b: x\n  c: [1, 2]\n");
        let (k, v) = n.get("a").unwrap().entry("c").unwrap();
        assert_eq!((k.span.line, k.span.column), (3, 3));
        assert_eq!((v.span.line, v.span.column), (3, 6));
        assert_eq!(n.get("a").unwrap().span.line, 2);
    }

    #[test]
    fn resolves_scalars_like_platform_files_expect() {
        let n = parse_ok("a: on\nb: 'on'\nc: 12\nd: 1.5\ne: python:3.11\nf:\ng: 1e3\nh: 1.2.3\n");
        assert_eq!(n.get("a").unwrap().value, Value::Bool(true));
        assert_eq!(n.get("b").unwrap().value, Value::Str("on".into()));
        assert_eq!(n.get("c").unwrap().value, Value::Int(12));
        assert_eq!(n.get("d").unwrap().value, Value::Float(1.5));
        assert_eq!(n.get("e").unwrap().value, Value::Str("python:3.11".into()));
        assert_eq!(n.get("f").unwrap().value, Value::Null);
        assert_eq!(n.get("g").unwrap().value, Value::Float(1000.0));
        assert_eq!(n.get("h").unwrap().value, Value::Str("1.2.3".into()));
    }

    #[test]
    fn merges_and_aliases() {
        let n = parse_ok("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n");
        let other = n.get("other").unwrap();
        assert_eq!(other.get("x").unwrap().value, Value::Int(1));
        assert_eq!(other.get("y").unwrap().value, Value::Int(3));
    }

    #[test]
    fn rejects_duplicate_keys_and_syntax_errors() {
        assert_eq!(
            parse_err("a: 1\nb: 2\na: 3\n"),
            "t.yaml:3:1: error: duplicate key `a` (first defined at line 1)\n"
        );
        assert!(parse_err("a: [1, 2\n").starts_with("t.yaml:"));
        assert!(parse_err("a: 1\n---\nb: 2\n").contains("second"));
    }

    #[test]
    fn stops_alias_bombs_fast() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..20 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(parse_err(&bomb).contains("more than"));
    }

    #[test]
    fn rejects_deep_nesting() {
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(parse_err(&deep).contains("nesting deeper"));
    }

    #[test]
    fn keeps_local_tags() {
        let n = parse_ok("a: !include x.yaml\nb: !include {type: string, path: y}\n");
        assert_eq!(n.get("a").unwrap().tag.as_deref(), Some("include"));
        assert_eq!(n.get("b").unwrap().tag.as_deref(), Some("include"));
    }
}
