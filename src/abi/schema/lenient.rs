//! Lenient, honest decoding of the arguments a model wrote for a call,
//! against the call's schema (the subset of [`crate::abi::json_schema`]):
//!
//! - fields the call does not take are dropped and named (`ignored`);
//! - a missing field written under a common other name (`command` for
//!   `cmd`, `file` for `path`, a different case) is renamed, when exactly
//!   one such name is present (`renamed`);
//! - unambiguous type slips are coerced: `"12"` → 12, `12.0` → 12,
//!   `"true"` → true, 12 → `"12"` for a string, `"fs"` → `["fs"]` for a
//!   list, `"UTF8"` → `"utf8"` for an enum; `null` for an optional field
//!   is the field left out;
//! - anything else is an [`ArgsError`] that names the field and what it
//!   must be (the runtime adds a valid example line of the call).
//!
//! The daemon itself stays strict: programs get exactly the ABI. The
//! runtime decodes a model's arguments with this before making the call
//! and tells the model what was dropped or renamed.

use serde_json::{Map, Number, Value};

/// Arguments fit for the call, and what was changed to make them so.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decoded {
    pub args: Value,
    /// Dropped fields (nested ones as `limits.foo`).
    pub ignored: Vec<String>,
    /// Renamed fields: (as written, as taken).
    pub renamed: Vec<(String, String)>,
}

/// Why arguments cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("the arguments must be a JSON object, not {got}")]
    NotAnObject { got: String },
    #[error("missing required field `{field}`")]
    Missing { field: String },
    #[error("`{field}` must be {expected}, not {got}")]
    WrongType {
        field: String,
        expected: String,
        got: String,
    },
    #[error("`{field}` must be one of {options}, not {got}")]
    NotAnOption {
        field: String,
        options: String,
        got: String,
    },
    #[error("`{field}` must be {bound}, not {got}")]
    OutOfRange {
        field: String,
        bound: String,
        got: String,
    },
}

/// Other names models give a field (checked only when the field itself is
/// absent, and used only when exactly one of them is present).
const SYNONYMS: &[(&str, &[&str])] = &[
    (
        "path",
        &[
            "file",
            "filename",
            "file_name",
            "file_path",
            "filepath",
            "dir",
            "directory",
        ],
    ),
    ("content", &["text", "data", "contents", "body", "value"]),
    ("cmd", &["command", "shell", "script", "cmdline"]),
    ("body", &["message", "text", "content", "msg", "data"]),
    ("to", &["pid", "recipient", "agent", "target", "to_pid"]),
    ("value", &["text", "content", "data", "memory"]),
    ("key", &["name", "id"]),
    ("query", &["text", "q", "search", "key"]),
    ("pid", &["child", "child_pid", "agent", "id"]),
    ("ms", &["milliseconds", "duration", "time", "duration_ms"]),
    ("code", &["exit_code", "status"]),
    ("data", &["text", "content", "output"]),
    ("role", &["task", "prompt", "instructions"]),
];

/// Decodes `args` (as a model wrote them) against `schema`.
pub fn decode(schema: &Value, args: &Value) -> Result<Decoded, ArgsError> {
    let mut out = Decoded::default();
    let args = match args {
        Value::Null => Value::Object(Map::new()),
        other => other.clone(),
    };
    out.args = value(schema, args, "", &mut out)?;
    Ok(out)
}

/// A short rendering of a value for messages.
fn shown(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

fn field_name(at: &str) -> String {
    if at.is_empty() {
        "arguments".into()
    } else {
        at.to_string()
    }
}

fn value(schema: &Value, v: Value, at: &str, out: &mut Decoded) -> Result<Value, ArgsError> {
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let v = match ty {
        "object" => object(schema, v, at, out)?,
        "array" => array(schema, v, at, out)?,
        "string" => string(v, at)?,
        "integer" => integer(v, at)?,
        "number" => number(v, at)?,
        "boolean" => boolean(v, at)?,
        _ => v,
    };
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        return one_of(options, v, at);
    }
    bounds(schema, &v, at)?;
    Ok(v)
}

fn wrong(at: &str, expected: &str, got: &Value) -> ArgsError {
    ArgsError::WrongType {
        field: field_name(at),
        expected: expected.into(),
        got: shown(got),
    }
}

fn object(schema: &Value, v: Value, at: &str, out: &mut Decoded) -> Result<Value, ArgsError> {
    let mut map = match v {
        Value::Object(m) => m,
        // An object written as a JSON string.
        Value::String(s) if s.trim_start().starts_with('{') => {
            match serde_json::from_str::<Value>(&s) {
                Ok(Value::Object(m)) => m,
                _ => return Err(not_object(at, &Value::String(s))),
            }
        }
        other => return Err(not_object(at, &other)),
    };
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        // A free-form object: values follow `additionalProperties`.
        return match schema.get("additionalProperties") {
            Some(sub @ Value::Object(_)) => {
                let mut fixed = Map::new();
                for (k, val) in map {
                    let path = join(at, &k);
                    fixed.insert(k, value(sub, val, &path, out)?);
                }
                Ok(Value::Object(fixed))
            }
            _ => Ok(Value::Object(map)),
        };
    };
    // Different case or dashes: `Path`, `timeout-s`.
    let keys: Vec<String> = map.keys().cloned().collect();
    for k in keys {
        if props.contains_key(&k) {
            continue;
        }
        let norm = k.to_ascii_lowercase().replace('-', "_");
        if props.contains_key(&norm) && !map.contains_key(&norm) {
            if let Some(val) = map.remove(&k) {
                out.renamed.push((join(at, &k), join(at, &norm)));
                map.insert(norm, val);
            }
        }
    }
    // Synonyms of absent fields.
    for (field, others) in SYNONYMS {
        if !props.contains_key(*field) || map.contains_key(*field) {
            continue;
        }
        let present: Vec<&str> = others
            .iter()
            .copied()
            .filter(|o| map.contains_key(*o) && !props.contains_key(*o))
            .collect();
        if let [only] = present.as_slice() {
            if let Some(val) = map.remove(*only) {
                out.renamed.push((join(at, only), join(at, field)));
                map.insert((*field).to_string(), val);
            }
        }
    }
    let mut fixed = Map::new();
    for (k, val) in map {
        let path = join(at, &k);
        match props.get(&k) {
            None => out.ignored.push(path),
            // null for a field is the field left out.
            Some(_) if val.is_null() => {}
            Some(sub) => {
                fixed.insert(k, value(sub, val, &path, out)?);
            }
        }
    }
    for req in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !fixed.contains_key(req) {
            return Err(ArgsError::Missing {
                field: join(at, req),
            });
        }
    }
    // The schema's order, as people write it.
    let mut ordered = Map::new();
    for k in props.keys() {
        if let Some(v) = fixed.remove(k) {
            ordered.insert(k.clone(), v);
        }
    }
    Ok(Value::Object(ordered))
}

fn not_object(at: &str, got: &Value) -> ArgsError {
    if at.is_empty() {
        ArgsError::NotAnObject { got: shown(got) }
    } else {
        wrong(at, "an object", got)
    }
}

fn join(at: &str, k: &str) -> String {
    if at.is_empty() {
        k.to_string()
    } else {
        format!("{at}.{k}")
    }
}

fn array(schema: &Value, v: Value, at: &str, out: &mut Decoded) -> Result<Value, ArgsError> {
    let items = match v {
        Value::Array(items) => items,
        // A list written as a JSON string.
        Value::String(s) if s.trim_start().starts_with('[') => {
            match serde_json::from_str::<Value>(&s) {
                Ok(Value::Array(items)) => items,
                _ => vec![Value::String(s)],
            }
        }
        // One item where a list is expected.
        other @ (Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Object(_)) => {
            vec![other]
        }
        other => return Err(wrong(at, "a list", &other)),
    };
    match schema.get("items") {
        Some(sub) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| value(sub, item, &format!("{}[{i}]", field_name(at)), out))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        None => Ok(Value::Array(items)),
    }
}

fn string(v: Value, at: &str) -> Result<Value, ArgsError> {
    match v {
        Value::String(_) => Ok(v),
        Value::Number(n) => Ok(Value::String(n.to_string())),
        Value::Bool(b) => Ok(Value::String(b.to_string())),
        other => Err(wrong(at, "a string", &other)),
    }
}

fn integer(v: Value, at: &str) -> Result<Value, ArgsError> {
    match &v {
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(v),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Value::from(f as i64)),
            _ => Err(wrong(at, "a whole number", &v)),
        },
        Value::String(s) => {
            let t = s.trim();
            if let Ok(i) = t.parse::<i64>() {
                Ok(Value::from(i))
            } else if let Ok(u) = t.parse::<u64>() {
                Ok(Value::from(u))
            } else {
                Err(wrong(at, "a whole number", &v))
            }
        }
        _ => Err(wrong(at, "a whole number", &v)),
    }
}

fn number(v: Value, at: &str) -> Result<Value, ArgsError> {
    match &v {
        Value::Number(_) => Ok(v),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| wrong(at, "a number", &v)),
        _ => Err(wrong(at, "a number", &v)),
    }
}

fn boolean(v: Value, at: &str) -> Result<Value, ArgsError> {
    match &v {
        Value::Bool(_) => Ok(v),
        Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
        Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
        _ => Err(wrong(at, "true or false", &v)),
    }
}

fn one_of(options: &[Value], v: Value, at: &str) -> Result<Value, ArgsError> {
    if options.contains(&v) {
        return Ok(v);
    }
    if let Value::String(s) = &v {
        if let Some(o) = options
            .iter()
            .find(|o| o.as_str().is_some_and(|o| o.eq_ignore_ascii_case(s.trim())))
        {
            return Ok(o.clone());
        }
    }
    Err(ArgsError::NotAnOption {
        field: field_name(at),
        options: options
            .iter()
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        got: shown(&v),
    })
}

fn bounds(schema: &Value, v: &Value, at: &str) -> Result<(), ArgsError> {
    let Some(n) = v.as_f64() else {
        return Ok(());
    };
    let min = schema.get("minimum").and_then(Value::as_f64);
    let max = schema.get("maximum").and_then(Value::as_f64);
    let outside = min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m);
    if !outside {
        return Ok(());
    }
    let bound = match (min, max) {
        (Some(0.0), None) => "zero or more".to_string(),
        (Some(a), None) => format!("at least {a}"),
        (None, Some(b)) => format!("at most {b}"),
        (Some(a), Some(b)) => format!("between {a} and {b}"),
        (None, None) => String::new(),
    };
    Err(ArgsError::OutOfRange {
        field: field_name(at),
        bound,
        got: shown(v),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::abi::calls::Call;
    use crate::abi::schema::args_schema;
    use serde_json::json;

    fn dec(call: Call, args: Value) -> Result<Decoded, ArgsError> {
        decode(&args_schema(call), &args)
    }

    #[test]
    fn unknown_fields_are_dropped_and_named() {
        let d = dec(
            Call::FS_WRITE,
            json!({"path": "/a", "content": "x", "max_bytes": 16, "mode": "w"}),
        )
        .unwrap();
        assert_eq!(d.args, json!({"path": "/a", "content": "x"}));
        assert_eq!(d.ignored, ["max_bytes", "mode"]);
        assert!(Call::FS_WRITE.check_args(&d.args).is_ok());
    }

    #[test]
    fn schema_keywords_copied_into_arguments_are_dropped() {
        let d = dec(
            Call::FS_READ,
            json!({"path": "/a", "type": "object", "additionalProperties": false}),
        )
        .unwrap();
        assert_eq!(d.args, json!({"path": "/a"}));
        assert_eq!(d.ignored, ["type", "additionalProperties"]);
    }

    #[test]
    fn unambiguous_type_slips_are_coerced() {
        let d = dec(Call::WAIT, json!({"pid": "12", "timeout_ms": 1000.0})).unwrap();
        assert_eq!(d.args, json!({"pid": 12, "timeout_ms": 1000}));
        let d = dec(Call::SEND_MSG, json!({"to": 3, "body": 391})).unwrap();
        assert_eq!(d.args, json!({"to": 3, "body": "391"}));
        let d = dec(
            Call::FS_WRITE,
            json!({"path": "/a", "content": "", "append": "true", "encoding": "UTF8"}),
        )
        .unwrap();
        assert_eq!(d.args["append"], json!(true));
        assert_eq!(d.args["encoding"], json!("utf8"));
        let d = dec(Call::SPAWN_AGENT, json!({"name": "h", "permissions": "fs"})).unwrap();
        assert_eq!(d.args["permissions"], json!(["fs"]));
        let d = dec(
            Call::SPAWN_AGENT,
            json!({"name": "h", "limits": {"pids": "4", "x": 1}}),
        )
        .unwrap();
        assert_eq!(d.args["limits"], json!({"pids": 4}));
        assert_eq!(d.ignored, ["limits.x"]);
        assert!(Call::SPAWN_AGENT.check_args(&d.args).is_ok());
    }

    #[test]
    fn null_is_a_field_left_out_and_null_arguments_are_none() {
        let d = dec(Call::FS_READ, json!({"path": "/a", "offset": null})).unwrap();
        assert_eq!(d.args, json!({"path": "/a"}));
        assert_eq!(dec(Call::GETPID, Value::Null).unwrap().args, json!({}));
        assert_eq!(
            dec(Call::FS_READ, json!({"path": null})).unwrap_err(),
            ArgsError::Missing {
                field: "path".into()
            }
        );
    }

    #[test]
    fn other_names_and_cases_of_a_missing_field_are_renamed() {
        let d = dec(Call::EXEC_CMD, json!({"command": "ls"})).unwrap();
        assert_eq!(d.args, json!({"cmd": "ls"}));
        assert_eq!(d.renamed, [("command".to_string(), "cmd".to_string())]);
        let d = dec(Call::FS_WRITE, json!({"Path": "/a", "text": "x"})).unwrap();
        assert_eq!(d.args, json!({"path": "/a", "content": "x"}));
        // Two candidates for one field: nothing is guessed.
        let e = dec(
            Call::FS_WRITE,
            json!({"path": "/a", "text": "x", "data": "y"}),
        )
        .unwrap_err();
        assert_eq!(
            e,
            ArgsError::Missing {
                field: "content".into()
            }
        );
        // The field itself wins over its synonyms, which are then unknown.
        let d = dec(Call::EXEC_CMD, json!({"cmd": "ls", "command": "pwd"})).unwrap();
        assert_eq!(d.args, json!({"cmd": "ls"}));
        assert_eq!(d.ignored, ["command"]);
    }

    #[test]
    fn anything_else_names_the_field_and_what_it_must_be() {
        let e = dec(Call::WAIT, json!({"pid": "child_pid"})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`pid` must be a whole number, not \"child_pid\""
        );
        let e = dec(Call::WAIT, json!({"pid": -1})).unwrap_err();
        assert_eq!(e.to_string(), "`pid` must be zero or more, not -1");
        let e = dec(Call::FS_WRITE, json!({"path": "/a", "content": {"a": 1}})).unwrap_err();
        assert!(
            e.to_string().starts_with("`content` must be a string"),
            "{e}"
        );
        let e = dec(Call::FS_READ, json!({"path": "/a", "encoding": "hex"})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`encoding` must be one of \"utf8\", \"base64\", not \"hex\""
        );
        let e = dec(Call::FS_READ, json!("/a")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the arguments must be a JSON object, not \"/a\""
        );
        let e = dec(Call::SEND_MSG, json!({"body": "x"})).unwrap_err();
        assert_eq!(e.to_string(), "missing required field `to`");
    }

    #[test]
    fn every_example_decodes_to_itself() {
        for c in Call::ALL {
            let ex = crate::abi::schema::example_args(c);
            let d = dec(c, ex.clone()).unwrap();
            assert_eq!(d.args, ex, "{}", c.name());
            assert!(d.ignored.is_empty() && d.renamed.is_empty(), "{}", c.name());
        }
    }
}
