//! The framing of the fd-3 protocol: one JSON object per line in each
//! direction, requests carry an `id` that the reply echoes.
//!
//! ```text
//! → {"id": 7, "call": "FS_READ", "args": {"path": "/notes.txt"}}
//! ← {"id": 7, "status": "SUCCESS", "result": {"content": "..."}}
//! ← {"id": 8, "status": "ERROR", "error": {"code": "EACCES", "message": "..."}}
//! ```

use super::errno::{Errno, SysError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Default cap on one request line, newline included.
pub const DEFAULT_LINE_CAP: usize = 1 << 20;

/// A request as it arrives, before the call's arguments are typed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// Echoed in the reply; any JSON number or string the agent chooses.
    #[serde(default)]
    pub id: Value,
    /// The syscall name, e.g. `FS_READ`.
    pub call: String,
    /// The call's arguments; absent means `{}`.
    #[serde(default = "empty_object")]
    pub args: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// Outcome tag of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Success,
    Error,
}

/// A reply line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub id: Value,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<SysError>,
}

impl Reply {
    pub fn success(id: Value, result: Value) -> Self {
        Reply {
            id,
            status: Status::Success,
            result: Some(result),
            error: None,
        }
    }

    pub fn error(id: Value, error: SysError) -> Self {
        Reply {
            id,
            status: Status::Error,
            result: None,
            error: Some(error),
        }
    }

    pub fn from_result(id: Value, result: Result<Value, SysError>) -> Self {
        match result {
            Ok(v) => Reply::success(id, v),
            Err(e) => Reply::error(id, e),
        }
    }

    /// The reply as one line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        // Serializing a Reply cannot fail: every field is plain data.
        let mut line = serde_json::to_vec(self).unwrap_or_else(|_| {
            br#"{"id":null,"status":"ERROR","error":{"code":"EIO","message":"reply encoding failed"}}"#
                .to_vec()
        });
        line.push(b'\n');
        line
    }
}

/// Parses one request line (without its newline). A line that is not a
/// request object yields an error reply carrying whatever id could be read.
pub fn parse_request(line: &[u8]) -> Result<Request, Box<Reply>> {
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        Box::new(Reply::error(
            Value::Null,
            SysError::new(Errno::EINVAL, format!("invalid JSON: {e}")),
        ))
    })?;
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    serde_json::from_value::<Request>(value).map_err(|e| {
        Box::new(Reply::error(
            id,
            SysError::new(
                Errno::EINVAL,
                format!("not a request object ({{\"id\", \"call\", \"args\"}}): {e}"),
            ),
        ))
    })
}

/// Types a call's arguments, turning serde's complaint into an EINVAL that
/// names the call.
pub fn typed_args<T: serde::de::DeserializeOwned>(call: &str, args: &Value) -> Result<T, SysError> {
    serde_json::from_value(args.clone())
        .map_err(|e| SysError::inval(format!("bad arguments for {call}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_request_and_defaults_args() {
        let r = parse_request(br#"{"id": 1, "call": "GETPID"}"#).expect("valid");
        assert_eq!(r.call, "GETPID");
        assert!(r.args.as_object().is_some_and(|o| o.is_empty()));
    }

    #[test]
    fn invalid_json_is_einval_with_null_id() {
        let e = parse_request(b"{nope").expect_err("invalid");
        assert_eq!(e.id, Value::Null);
        assert_eq!(e.error.as_ref().map(|e| e.code), Some(Errno::EINVAL));
    }

    #[test]
    fn missing_call_keeps_the_id() {
        let e = parse_request(br#"{"id": 9, "args": {}}"#).expect_err("no call");
        assert_eq!(e.id, Value::from(9));
    }

    #[test]
    fn reply_line_ends_with_newline_and_round_trips() {
        let r = Reply::error(Value::from(3), SysError::acces("no"));
        let line = r.to_line();
        assert_eq!(line.last(), Some(&b'\n'));
        let back: Reply = serde_json::from_slice(&line[..line.len() - 1]).expect("json");
        assert_eq!(back, r);
    }
}
