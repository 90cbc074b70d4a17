//! The arguments of the four file calls, parsed so that a bad argument is
//! reported naming its field, and the content encodings.

use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::path::{MAX_ECHO_BYTES, clip};
use crate::abi::errno::SysError;

/// Base64 as accepted from agents: standard alphabet, padding optional.
pub(super) const BASE64_IN: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
/// Encoding of file content in FS_READ results and FS_WRITE arguments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Encoding {
    /// UTF-8 text, carried as a JSON string.
    #[default]
    #[serde(alias = "utf-8")]
    Utf8,
    /// Any bytes, carried as standard base64.
    Base64,
}

impl Encoding {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf8",
            Encoding::Base64 => "base64",
        }
    }
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object with the FS_READ arguments"
)]
pub(super) struct ReadArgs {
    pub(super) path: String,
    pub(super) offset: Option<u64>,
    pub(super) max_bytes: Option<u64>,
    pub(super) encoding: Option<Encoding>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object with the FS_WRITE arguments"
)]
pub(super) struct WriteArgs {
    pub(super) path: String,
    pub(super) content: String,
    pub(super) append: Option<bool>,
    pub(super) encoding: Option<Encoding>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object with the FS_LIST arguments"
)]
pub(super) struct ListArgs {
    pub(super) path: Option<String>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object with the FS_DELETE arguments"
)]
pub(super) struct DeleteArgs {
    pub(super) path: String,
    pub(super) recursive: Option<bool>,
}

/// A field name and a check of its value's type, so that a bad argument is
/// reported with the name of its field (serde alone does not say which field
/// had the wrong type).
type FieldCheck = (&'static str, fn(&Value) -> Result<(), serde_json::Error>);

fn check<T: DeserializeOwned>(value: &Value) -> Result<(), serde_json::Error> {
    T::deserialize(value).map(drop)
}

pub(super) const READ_FIELDS: &[FieldCheck] = &[
    ("path", check::<String>),
    ("offset", check::<Option<u64>>),
    ("max_bytes", check::<Option<u64>>),
    ("encoding", check::<Option<Encoding>>),
];
pub(super) const WRITE_FIELDS: &[FieldCheck] = &[
    ("path", check::<String>),
    ("content", check::<String>),
    ("append", check::<Option<bool>>),
    ("encoding", check::<Option<Encoding>>),
];
pub(super) const LIST_FIELDS: &[FieldCheck] = &[("path", check::<Option<String>>)];
pub(super) const DELETE_FIELDS: &[FieldCheck] = &[
    ("path", check::<String>),
    ("recursive", check::<Option<bool>>),
];

/// Parses the arguments of `op`. `null` counts as `{}`. Any problem is EINVAL
/// "bad arguments for OP: ..." naming the field.
pub(super) fn parse_args<T: DeserializeOwned>(
    op: &str,
    args: &Value,
    fields: &[FieldCheck],
) -> Result<T, SysError> {
    let bad = |msg: &str| {
        SysError::inval(format!(
            "bad arguments for {op}: {}",
            clip(msg, 2 * MAX_ECHO_BYTES)
        ))
    };
    let empty = Value::Object(serde_json::Map::new());
    let args = match args {
        Value::Null => &empty,
        Value::Object(map) => {
            for (key, value) in map {
                match fields.iter().find(|(name, _)| name == key) {
                    None => {
                        let known: Vec<String> =
                            fields.iter().map(|(name, _)| format!("`{name}`")).collect();
                        return Err(bad(&format!(
                            "unknown field `{}`, expected one of {}",
                            clip(key, MAX_ECHO_BYTES),
                            known.join(", ")
                        )));
                    }
                    Some((_, check)) => {
                        check(value).map_err(|e| bad(&format!("field `{key}`: {e}")))?
                    }
                }
            }
            args
        }
        Value::Bool(_) => return Err(bad("expected a JSON object, got a boolean")),
        Value::Number(_) => return Err(bad("expected a JSON object, got a number")),
        Value::String(_) => return Err(bad("expected a JSON object, got a string")),
        Value::Array(_) => return Err(bad("expected a JSON object, got an array")),
    };
    T::deserialize(args).map_err(|e| bad(&e.to_string()))
}
