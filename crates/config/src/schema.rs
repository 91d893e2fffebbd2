//! The JSON Schema of the native format, and validation of located YAML against it.
//!
//! The schema is generated from [`crate::model::ConfigFile`]; `config-schema/`
//! holds the committed copy that editors point at, and a test fails when it
//! drifts. Validation runs the same schema over the located tree, so the format
//! has one definition. Validator errors become diagnostics at the offending
//! key or value, in words a user can act on: unknown keys get a "did you mean",
//! `anyOf` failures report the alternative that came closest.

use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use serde_json::Value as Json;

use crate::diag::{Diagnostics, did_you_mean};
use crate::model::{ConfigFile, TYPE_PATTERN};
use crate::yaml::Node;

/// The JSON Schema of the native config format, as pretty-printed JSON with a final newline.
pub fn json_schema() -> String {
    let schema = schema_value();
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}

fn schema_value() -> &'static Json {
    static SCHEMA: OnceLock<Json> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let mut schema = schemars::schema_for!(ConfigFile).to_value();
        if let Some(obj) = schema.as_object_mut() {
            obj.insert(
                "$id".into(),
                Json::String("https://launchway.dev/config-schema/launchway.schema.json".into()),
            );
        }
        schema
    })
}

fn validator() -> Option<&'static Validator> {
    static VALIDATOR: OnceLock<Option<Validator>> = OnceLock::new();
    VALIDATOR
        .get_or_init(|| jsonschema::validator_for(schema_value()).ok())
        .as_ref()
}

/// Validates the assembled document (`json` is `doc` converted); every violation
/// becomes a diagnostic.
///
/// Returns the document as JSON with every rejected value removed (unknown keys,
/// values of the wrong shape), so later passes can still decode and check the
/// rest of each entry instead of stopping at its first problem.
pub(crate) fn validate(doc: &Node, mut json: Json, diags: &mut Diagnostics) -> Json {
    let Some(validator) = validator() else {
        diags.error(None, "internal error: the config schema does not compile");
        return Json::Null;
    };
    let mut rejected: Vec<Vec<String>> = Vec::new();
    for error in validator.iter_errors(&json) {
        report(doc, &error, diags);
        let path = segments(error.instance_path());
        match error.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                rejected.extend(unexpected.iter().map(|key| {
                    let mut p = path.clone();
                    p.push(key.clone());
                    p
                }));
            }
            _ => rejected.push(path),
        }
    }
    // Deepest and last first, so removing an array item never shifts another target.
    rejected.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| index_order(b, a)));
    rejected.dedup();
    for path in rejected {
        remove_at(&mut json, &path);
    }
    json
}

fn index_order(a: &[String], b: &[String]) -> std::cmp::Ordering {
    let as_index = |p: &[String]| p.last().and_then(|s| s.parse::<usize>().ok());
    as_index(a).cmp(&as_index(b)).then_with(|| a.cmp(b))
}

fn remove_at(json: &mut Json, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        *json = Json::Null;
        return;
    };
    let mut node = json;
    for segment in parents {
        node = match node {
            Json::Object(map) => match map.get_mut(segment) {
                Some(n) => n,
                None => return,
            },
            Json::Array(items) => {
                match segment.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                    Some(n) => n,
                    None => return,
                }
            }
            _ => return,
        };
    }
    match node {
        Json::Object(map) => {
            map.shift_remove(last);
        }
        Json::Array(items) => {
            if let Ok(i) = last.parse::<usize>()
                && i < items.len()
            {
                items.remove(i);
            }
        }
        _ => {}
    }
}

fn segments(location: &jsonschema::paths::Location) -> Vec<String> {
    location.iter().map(|s| s.to_string()).collect()
}

/// Where an instance path lies in the user's words: "application `app`", …
fn context(path: &[String]) -> String {
    let owner = match path {
        [section, name, ..] => match section.as_str() {
            "applications" => format!("application `{name}`"),
            "services" => format!("service `{name}`"),
            "routes" => format!("route `{name}`"),
            _ => String::new(),
        },
        _ => String::new(),
    };
    let inner = path.get(2..).unwrap_or_default().join(".");
    match (owner.is_empty(), inner.is_empty()) {
        (true, _) if path.is_empty() => "the top level".into(),
        (true, _) => format!("`{}`", path.join(".")),
        (false, true) => owner,
        (false, false) => format!("`{inner}` of {owner}"),
    }
}

fn report(doc: &Node, error: &ValidationError<'_>, diags: &mut Diagnostics) {
    let path = segments(error.instance_path());
    let located = doc.at_path(&path);
    let value_span = located.map(|(_, n)| n.span.clone());
    let key_span = located.and_then(|(k, _)| k.map(|k| k.span.clone()));
    let node = located.map(|(_, n)| n);
    let schema_path = error.schema_path().as_str().to_owned();
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let known = sibling_properties(&schema_path);
            for key in unexpected {
                let span = node
                    .and_then(|n| n.entry(key))
                    .map(|(k, _)| k.span.clone())
                    .or_else(|| value_span.clone());
                let d = diags.error(span, format!("unknown key `{key}` in {}", context(&path)));
                if let Some(best) = did_you_mean(key, known.iter().map(String::as_str)) {
                    d.hint = Some(format!("did you mean `{best}`?"));
                } else if !known.is_empty() {
                    d.hint = Some(format!("expected one of: {}", known.join(", ")));
                }
            }
        }
        ValidationErrorKind::Required { property } => {
            let property = property.as_str().unwrap_or_default();
            diags.error(
                value_span,
                format!("missing required key `{property}` in {}", context(&path)),
            );
        }
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => describe_type(&t.to_string()),
                TypeKind::Multiple(set) => {
                    let names: Vec<String> =
                        set.iter().map(|t| describe_type(&t.to_string())).collect();
                    join_alternatives(&names)
                }
            };
            let found = node.map_or("nothing", Node::kind_name);
            diags.error(
                value_span,
                format!("{} must be {expected}, found {found}", subject(&path)),
            );
        }
        ValidationErrorKind::Enum { options } => {
            let options: Vec<String> = options
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Json::as_str)
                        .map(|s| format!("`{s}`"))
                        .collect()
                })
                .unwrap_or_default();
            let shown = node.map(scalar_shown).unwrap_or_default();
            diags
                .error(
                    value_span,
                    format!("{} has an invalid value {shown}", subject(&path)),
                )
                .hint = Some(format!("expected one of: {}", options.join(", ")));
        }
        ValidationErrorKind::Pattern { pattern } => {
            let shown = node.map(scalar_shown).unwrap_or_default();
            let d = diags.error(
                value_span,
                format!("{} has an invalid value {shown}", subject(&path)),
            );
            if pattern == TYPE_PATTERN {
                d.hint = Some(
                    "write `runtime:version`, e.g. `python:3.11`, `nodejs:20` or `postgresql:15`"
                        .into(),
                );
            } else {
                d.hint = Some(format!("it must match `{pattern}`"));
            }
        }
        ValidationErrorKind::AnyOf { context: branches }
        | ValidationErrorKind::OneOfNotValid { context: branches } => {
            report_closest(doc, &path, node, (key_span, value_span), branches, diags);
        }
        ValidationErrorKind::Minimum { limit } => {
            diags.error(
                value_span,
                format!("{} must be at least {limit}", subject(&path)),
            );
        }
        ValidationErrorKind::Maximum { limit } => {
            diags.error(
                value_span,
                format!("{} must be at most {limit}", subject(&path)),
            );
        }
        _ => {
            diags.error(value_span, format!("{}: {error}", subject(&path)));
        }
    }
}

/// For an `anyOf` failure, the alternative whose errors go deepest is the one the
/// author most likely meant: report its errors. When every alternative failed on
/// the value's type itself, say which shapes are accepted.
fn report_closest(
    doc: &Node,
    path: &[String],
    node: Option<&Node>,
    (key_span, value_span): (Option<crate::diag::Span>, Option<crate::diag::Span>),
    branches: &[Vec<ValidationError<'static>>],
    diags: &mut Diagnostics,
) {
    let depth = |errors: &Vec<ValidationError<'static>>| {
        let shallow_type = same_level(errors, path.len()).iter().all(|e| {
            matches!(
                e.kind(),
                ValidationErrorKind::Type { .. } | ValidationErrorKind::Constant { .. }
            ) && e.instance_path().iter().count() == path.len()
        });
        if shallow_type {
            return 0;
        }
        errors
            .iter()
            .map(|e| e.instance_path().iter().count() + 1)
            .max()
            .unwrap_or(0)
    };
    let best = branches
        .iter()
        .filter(|b| !b.is_empty())
        .max_by_key(|b| (depth(b), std::cmp::Reverse(b.len())));
    match best {
        Some(errors) if depth(errors) > 0 => {
            for e in errors {
                report(doc, e, diags);
            }
        }
        _ => {
            let leaves: Vec<&ValidationError<'static>> = branches
                .iter()
                .flat_map(|b| same_level(b, path.len()))
                .collect();
            let constants: Vec<String> = leaves
                .iter()
                .filter_map(|e| match e.kind() {
                    ValidationErrorKind::Constant { expected_value } => {
                        Some(match expected_value.as_str() {
                            Some(s) => format!("`{s}`"),
                            None => format!("`{expected_value}`"),
                        })
                    }
                    _ => None,
                })
                .collect();
            if !constants.is_empty() {
                let shown = node.map(scalar_shown).unwrap_or_default();
                diags
                    .error(
                        value_span,
                        format!("{} has an invalid value {shown}", subject(path)),
                    )
                    .hint = Some(format!("expected one of: {}", constants.join(", ")));
                return;
            }
            let mut shapes: Vec<String> = Vec::new();
            for e in &leaves {
                {
                    if let ValidationErrorKind::Type { kind } = e.kind() {
                        let names: Vec<String> = match kind {
                            TypeKind::Single(t) => vec![describe_type(&t.to_string())],
                            TypeKind::Multiple(set) => {
                                set.iter().map(|t| describe_type(&t.to_string())).collect()
                            }
                        };
                        for n in names {
                            if !shapes.contains(&n) {
                                shapes.push(n);
                            }
                        }
                    }
                }
            }
            let found = node.map_or("nothing", Node::kind_name);
            diags.error(
                key_span.or(value_span),
                format!(
                    "{} must be {}, found {found}",
                    subject(path),
                    join_alternatives(&shapes)
                ),
            );
        }
    }
}

/// The errors of one alternative, with nested `anyOf`/`oneOf` failures on the same
/// value replaced by their own alternatives' errors (an `Option` of an untagged
/// enum nests one `anyOf` inside another).
fn same_level<'a>(
    errors: &'a [ValidationError<'static>],
    depth: usize,
) -> Vec<&'a ValidationError<'static>> {
    let mut out = Vec::new();
    for e in errors {
        match e.kind() {
            ValidationErrorKind::AnyOf { context }
            | ValidationErrorKind::OneOfNotValid { context }
                if e.instance_path().iter().count() == depth =>
            {
                for branch in context {
                    out.extend(same_level(branch, depth));
                }
            }
            _ => out.push(e),
        }
    }
    out
}

fn subject(path: &[String]) -> String {
    match path.last() {
        Some(last) if path.len() > 2 => format!("`{last}` in {}", context(&path[..path.len() - 1])),
        _ => context(path),
    }
}

fn scalar_shown(node: &Node) -> String {
    match node.to_json() {
        Json::String(s) => format!("`{s}`"),
        Json::Object(_) => "(a map)".into(),
        Json::Array(_) => "(a list)".into(),
        other => format!("`{other}`"),
    }
}

fn describe_type(json_type: &str) -> String {
    match json_type {
        "string" => "a string",
        "integer" => "a whole number",
        "number" => "a number",
        "boolean" => "true or false",
        "object" => "a map",
        "array" => "a list",
        "null" => "null",
        other => other,
    }
    .to_owned()
}

fn join_alternatives(names: &[String]) -> String {
    match names {
        [] => "something else".into(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// The property names of the object schema whose `additionalProperties` failed.
fn sibling_properties(schema_path: &str) -> Vec<String> {
    let parent = schema_path
        .strip_suffix("/additionalProperties")
        .unwrap_or(schema_path);
    schema_value()
        .pointer(parent)
        .and_then(|s| s.get("properties"))
        .and_then(Json::as_object)
        .map(|props| props.keys().cloned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn check(yaml: &str) -> String {
        let mut d = Diagnostics::default();
        let file: Arc<str> = Arc::from("c.yaml");
        let node = crate::yaml::parse(&file, yaml, &mut d).unwrap();
        validate(&node, node.to_json(), &mut d);
        d.to_string()
    }

    #[test]
    fn the_generated_schema_compiles() {
        assert!(validator().is_some());
        assert!(json_schema().contains("\"applications\""));
    }

    #[test]
    fn unknown_keys_get_a_suggestion() {
        assert_eq!(
            check("applications:\n  app:\n    type: python:3.11\n    wbe: {}\n"),
            "c.yaml:4:5: error: unknown key `wbe` in application `app`\n  help: did you mean `web`?\n"
        );
    }

    #[test]
    fn wrong_types_and_patterns_are_located() {
        let out = check("applications:\n  app:\n    type: python\n    disk: lots\n");
        assert!(
            out.contains(
                "c.yaml:3:11: error: `type` in application `app` has an invalid value `python`"
            ),
            "{out}"
        );
        assert!(
            out.contains("c.yaml:4:11: error: `disk` in application `app` must be"),
            "{out}"
        );
    }

    #[test]
    fn any_of_reports_the_closest_alternative() {
        let out = check(
            "applications:\n  app:\n    type: python:3.11\n    relationships:\n      db: {servce: x}\n",
        );
        assert!(out.contains("unknown key `servce`"), "{out}");
        assert!(out.contains("did you mean `service`?"), "{out}");
        let out = check(
            "applications:\n  app:\n    type: python:3.11\n    relationships:\n      db: [1]\n",
        );
        assert!(
            out.contains(
                "c.yaml:5:7: error: `db` in `relationships` of application `app` must be a string, a map or null, found a list"
            ),
            "{out}"
        );
    }
}
