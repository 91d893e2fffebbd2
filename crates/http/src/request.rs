//! A request's fields, from its path, query string and JSON body, into the
//! operation's message. Path and query values arrive as text: each is
//! turned into the type the message's field has (found from the message's
//! own default, so no per-route code), and refused with the field's name
//! when it does not fit.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tonic::Status;

/// `%41` and `+` decoded; `None` when the escapes are not UTF-8.
pub(crate) fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'%' => return None,
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The pairs of a query string, decoded.
pub(crate) fn query_pairs(query: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        let key = percent_decode(key, true).ok_or("the query string has a bad %-escape")?;
        let value = percent_decode(value, true).ok_or("the query string has a bad %-escape")?;
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// Text from a path or query turned into the type `template` (the field's
/// default) has.
fn typed(name: &str, text: &str, template: Option<&Value>) -> Result<Value, Status> {
    let wrong =
        |what: &str| Status::invalid_argument(format!("`{name}` must be {what}, not `{text}`"));
    match template {
        Some(Value::Number(_)) => text
            .parse::<u64>()
            .map(Value::from)
            .or_else(|_| text.parse::<i64>().map(Value::from))
            .map_err(|_| wrong("a whole number")),
        Some(Value::Bool(_)) => parse_bool(text)
            .map(Value::Bool)
            .ok_or_else(|| wrong("true or false")),
        Some(Value::Array(_)) => Ok(Value::Array(vec![Value::String(text.to_owned())])),
        // `optional bool` fields default to null: a boolean if it reads as one.
        Some(Value::Null) => {
            Ok(parse_bool(text).map_or_else(|| Value::String(text.to_owned()), Value::Bool))
        }
        _ => Ok(Value::String(text.to_owned())),
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "1" | "yes" | "" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// The message's fields from text pairs (path first, then query) and a JSON
/// body. A field given twice with different values is refused.
pub(crate) fn fields<T: Default + Serialize>(
    texts: &[(String, String)],
    body: Option<Map<String, Value>>,
) -> Result<Value, Status> {
    let template = serde_json::to_value(T::default()).unwrap_or(Value::Null);
    let template = template.as_object();
    let mut fields = body.unwrap_or_default();
    for (name, text) in texts {
        let field = template.and_then(|t| t.get(name));
        if template.is_some() && field.is_none() {
            return Err(unknown_field(name, template));
        }
        let value = typed(name, text, field)?;
        match fields.get_mut(name) {
            Some(Value::Array(items)) if matches!(value, Value::Array(_)) => {
                if let Value::Array(more) = value {
                    items.extend(more);
                }
            }
            Some(existing) if *existing != value => {
                return Err(Status::invalid_argument(format!(
                    "`{name}` is given twice, with different values"
                )));
            }
            _ => {
                fields.insert(name.clone(), value);
            }
        }
    }
    Ok(Value::Object(fields))
}

fn unknown_field(name: &str, template: Option<&Map<String, Value>>) -> Status {
    let known: Vec<&str> = template
        .map(|t| t.keys().map(String::as_str).collect())
        .unwrap_or_default();
    Status::invalid_argument(if known.is_empty() {
        format!("`{name}` is not a field of this request: it takes none")
    } else {
        format!(
            "`{name}` is not a field of this request: it takes {}",
            known.join(", ")
        )
    })
}

/// The message, or a refusal that names what is wrong.
pub(crate) fn decode<T: DeserializeOwned + Default + Serialize>(
    fields: Value,
) -> Result<T, Status> {
    serde_json::from_value(fields)
        .map_err(|error| Status::invalid_argument(format!("the request does not fit: {error}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use launchway_api::proto;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn text_fields_take_the_messages_types() {
        let value = fields::<proto::ListActivitiesRequest>(
            &pairs(&[("project", "shop"), ("limit", "5")]),
            None,
        )
        .unwrap();
        let request: proto::ListActivitiesRequest = decode(value).unwrap();
        assert_eq!(request.project, "shop");
        assert_eq!(request.limit, 5);
        let error =
            fields::<proto::ListActivitiesRequest>(&pairs(&[("limit", "many")]), None).unwrap_err();
        assert_eq!(
            error.message(),
            "`limit` must be a whole number, not `many`"
        );
        let error =
            fields::<proto::ListActivitiesRequest>(&pairs(&[("colour", "red")]), None).unwrap_err();
        assert!(
            error.message().starts_with("`colour` is not a field"),
            "{}",
            error.message()
        );
    }

    #[test]
    fn path_and_body_must_agree() {
        let body = serde_json::json!({"project": "blog", "value": "1"});
        let error = fields::<proto::SetProjectSettingRequest>(
            &pairs(&[("project", "shop")]),
            body.as_object().cloned(),
        )
        .unwrap_err();
        assert!(error.message().contains("given twice"));
    }

    #[test]
    fn bodies_with_unknown_or_mistyped_fields_are_refused() {
        let value = serde_json::json!({"project": "shop", "colour": 1});
        assert!(decode::<proto::GetProjectRequest>(value).is_err());
        let value = serde_json::json!({"project": 5});
        assert!(decode::<proto::GetProjectRequest>(value).is_err());
    }

    #[test]
    fn escapes_decode_and_bad_ones_are_refused() {
        assert_eq!(
            percent_decode("SHA256%3Aab%2Bc", false).unwrap(),
            "SHA256:ab+c"
        );
        assert_eq!(percent_decode("a+b", true).unwrap(), "a b");
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("%4", false), None);
        assert_eq!(percent_decode("%ff", false), None);
    }
}
