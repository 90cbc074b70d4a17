//! SYS_REGISTER_WEBHOOK and SYS_WEBHOOK_REPLY.
//!
//! * SYS_REGISTER_WEBHOOK `{"path", "secret"?}` makes the caller the owner
//!   of `path` (exact match; one owner per path, EEXIST for a second;
//!   re-registering one's own path replaces its secret) in the registry
//!   ([`crate::kernel::webhooks`]).
//! * SYS_WEBHOOK_REPLY `{"request_id", "status", "body"?, "headers"?,
//!   "encoding"?}` answers a request delivered to the caller's inbox; the
//!   listener turns it into the HTTP response. The reply body is bounded by
//!   the syscall line cap.
//!
//! Secrets never leave the daemon: not in results, AGENT_INFO, PS, logs or
//! the journal ([`redact_args`]).

use crate::abi::wire::typed_args;
use crate::abi::{Errno, SysError};
use crate::kernel::Kernel;
use crate::kernel::pcb::{Pcb, now_ms};
use crate::kernel::webhooks::{
    HttpReply, Registration, RegistryError, disabled, read_registration, registrations,
};
use base64::Engine;
use hyper::StatusCode;
use hyper::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Longest registrable path.
pub const MAX_PATH_LEN: usize = 256;
/// Longest secret.
pub const MAX_SECRET_LEN: usize = 1024;
/// Most paths one agent may own.
pub const MAX_PATHS_PER_AGENT: usize = 64;
/// Most headers a reply may set.
const MAX_REPLY_HEADERS: usize = 64;

/// Response headers an agent may not set: they belong to the connection or
/// the framing, which the listener controls.
const FORBIDDEN_REPLY_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyArgs {
    request_id: String,
    status: u16,
    #[serde(default)]
    body: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// "utf8" (default) or "base64" for a binary body.
    #[serde(default)]
    encoding: Option<String>,
}

/// SYS_REGISTER_WEBHOOK.
pub fn register_webhook(k: &Arc<Kernel>, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
    let (path, secret) = register_args(args)?;
    validate_path(&path)?;
    if let Some(s) = &secret {
        validate_secret(s)?;
    }
    let cfg = &k.config.file.webhooks;
    if disabled(&cfg.listen) {
        return Err(SysError::new(
            Errno::ENOSYS,
            "webhooks are disabled on this supervisor ([webhooks] listen = \"off\")",
        ));
    }
    let tree = &k.store.trees.webhooks;
    let _one_writer = k.webhooks.registry_lock();
    if !k.table.get(pcb.pid).is_some_and(|p| p.is_live()) {
        return Err(SysError::srch("agent is not running"));
    }
    match read_registration(tree, &path)? {
        Some(r) if r.pid != pcb.pid && k.table.get(r.pid).is_some_and(|p| p.is_live()) => {
            return Err(SysError::new(
                Errno::EEXIST,
                format!("webhook path {path} is registered by another agent"),
            ));
        }
        Some(r) if r.pid == pcb.pid => {}
        _ => {
            let owned = registrations(tree)?
                .iter()
                .filter(|r| r.pid == pcb.pid)
                .count();
            if owned >= MAX_PATHS_PER_AGENT {
                return Err(SysError::quota(format!(
                    "an agent may own at most {MAX_PATHS_PER_AGENT} webhook paths"
                )));
            }
        }
    }
    let signed = secret.is_some();
    let reg = Registration {
        pid: pcb.pid,
        path: path.clone(),
        secret,
        created_ms: now_ms(),
    };
    let bytes = serde_json::to_vec(&reg).map_err(RegistryError::from)?;
    tree.insert(path.as_bytes(), bytes)
        .map_err(RegistryError::from)?;
    tracing::info!(pid = pcb.pid, path = %path, signed, "webhook registered");
    let host = match k.webhooks.address() {
        Some(a) => a.to_string(),
        None => cfg.listen.trim().to_string(),
    };
    Ok(json!({"path": path, "url": format!("http://{host}{path}"), "signed": signed}))
}

/// SYS_WEBHOOK_REPLY.
pub fn webhook_reply(k: &Arc<Kernel>, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
    let a: ReplyArgs = typed_args("SYS_WEBHOOK_REPLY", args)?;
    let cfg = &k.config.file.webhooks;
    let status = StatusCode::from_u16(a.status)
        .ok()
        .filter(|s| (200..=599).contains(&s.as_u16()))
        .ok_or_else(|| {
            SysError::inval(format!(
                "status {} is not an HTTP status between 200 and 599",
                a.status
            ))
        })?;
    let body = match a.encoding.as_deref() {
        None | Some("utf8") => a.body.into_bytes(),
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(a.body.as_bytes())
            .map_err(|e| SysError::inval(format!("body is not valid base64: {e}")))?,
        Some(other) => {
            return Err(SysError::inval(format!(
                "encoding {other:?} is not \"utf8\" or \"base64\""
            )));
        }
    };
    let headers = reply_headers(&a.headers, cfg.max_header_bytes)?;
    k.webhooks.reply(
        &a.request_id,
        pcb.pid,
        HttpReply {
            status,
            headers,
            body,
        },
    )?;
    Ok(json!({"replied": true}))
}

/// The arguments of SYS_REGISTER_WEBHOOK, read by hand so that no error
/// message ever quotes the secret.
fn register_args(args: &Value) -> Result<(String, Option<String>), SysError> {
    let obj = args.as_object().ok_or_else(|| {
        SysError::inval("bad arguments for SYS_REGISTER_WEBHOOK: args must be a JSON object")
    })?;
    if let Some(k) = obj.keys().find(|k| *k != "path" && *k != "secret") {
        return Err(SysError::inval(format!(
            "bad arguments for SYS_REGISTER_WEBHOOK: unknown field {k:?}, expected `path` or `secret`"
        )));
    }
    let path = match obj.get("path") {
        Some(Value::String(p)) => p.clone(),
        Some(_) => {
            return Err(SysError::inval(
                "bad arguments for SYS_REGISTER_WEBHOOK: `path` must be a string",
            ));
        }
        None => {
            return Err(SysError::inval(
                "bad arguments for SYS_REGISTER_WEBHOOK: missing field `path`",
            ));
        }
    };
    let secret = match obj.get("secret") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(SysError::inval(
                "bad arguments for SYS_REGISTER_WEBHOOK: `secret` must be a string",
            ));
        }
    };
    Ok((path, secret))
}

/// What the journal keeps of SYS_REGISTER_WEBHOOK's arguments: the secret
/// is replaced by a marker (whatever its type).
pub fn redact_args(args: &Value) -> Value {
    let mut out = args.clone();
    if let Some(s) = out.as_object_mut().and_then(|o| o.get_mut("secret")) {
        if !s.is_null() {
            *s = Value::String("<redacted>".into());
        }
    }
    out
}

/// A registrable path: starts with '/', at most [`MAX_PATH_LEN`] bytes of
/// `A-Z a-z 0-9 - _ . ~ /`, no empty, `.` or `..` segment.
pub fn validate_path(path: &str) -> Result<(), SysError> {
    if !path.starts_with('/') {
        return Err(SysError::inval(format!(
            "webhook path {path:?} must start with '/'"
        )));
    }
    if path.len() < 2 || path.len() > MAX_PATH_LEN {
        return Err(SysError::inval(format!(
            "webhook path must be 2 to {MAX_PATH_LEN} bytes long"
        )));
    }
    if let Some(c) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '/')))
    {
        return Err(SysError::inval(format!(
            "webhook path may only contain letters, digits and - _ . ~ /, not {c:?}"
        )));
    }
    let body = path.strip_prefix('/').unwrap_or(path);
    let body = body.strip_suffix('/').unwrap_or(body);
    if body
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(SysError::inval(format!(
            "webhook path {path:?} may not contain empty, '.' or '..' segments"
        )));
    }
    Ok(())
}

fn validate_secret(secret: &str) -> Result<(), SysError> {
    if secret.is_empty() || secret.len() > MAX_SECRET_LEN {
        return Err(SysError::inval(format!(
            "webhook secret must be 1 to {MAX_SECRET_LEN} bytes long"
        )));
    }
    Ok(())
}

/// Checks and converts the headers of a reply.
fn reply_headers(
    given: &BTreeMap<String, String>,
    max_bytes: u64,
) -> Result<Vec<(HeaderName, HeaderValue)>, SysError> {
    if given.len() > MAX_REPLY_HEADERS {
        return Err(SysError::inval(format!(
            "at most {MAX_REPLY_HEADERS} reply headers"
        )));
    }
    let mut total = 0u64;
    let mut out = Vec::with_capacity(given.len());
    for (name, value) in given {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| SysError::inval(format!("{name:?} is not a valid header name")))?;
        if FORBIDDEN_REPLY_HEADERS.contains(&n.as_str()) {
            return Err(SysError::inval(format!(
                "header {name:?} is set by the listener, not the agent"
            )));
        }
        let v = HeaderValue::from_str(value)
            .map_err(|_| SysError::inval(format!("the value of header {name:?} is not valid")))?;
        total += (name.len() + value.len() + 4) as u64;
        out.push((n, v));
    }
    if total > max_bytes {
        return Err(SysError::msgsize(format!(
            "reply headers of {total} bytes exceed {max_bytes} ([webhooks] max_header_bytes)"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_validated() {
        for ok in ["/a", "/hooks/build", "/a-b_c.d~e/", "/x/y/z"] {
            assert!(validate_path(ok).is_ok(), "{ok}");
        }
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        for bad in [
            "", "/", "a", "/a/../b", "/..", "/./a", "/a//b", "/a b", "/a?b", "/a%2e", "/ä", &long,
        ] {
            let e = validate_path(bad).expect_err(bad);
            assert_eq!(e.code, Errno::EINVAL, "{bad}");
        }
    }

    #[test]
    fn the_secret_is_redacted_and_never_quoted() {
        let args = json!({"path": "/p", "secret": "hunter2"});
        let r = redact_args(&args);
        assert_eq!(r["path"], "/p");
        assert!(!r.to_string().contains("hunter2"));
        let e = register_args(&json!({"path": "/p", "secret": 123456789})).expect_err("type");
        assert!(!e.message.contains("123456789"), "{}", e.message);
        let e = register_args(&json!({"path": "/p", "secrett": "x"})).expect_err("unknown");
        assert_eq!(e.code, Errno::EINVAL);
        assert_eq!(
            register_args(&json!({"path": "/p"})).expect("ok"),
            ("/p".to_string(), None)
        );
        let reg = Registration {
            pid: 1,
            path: "/p".into(),
            secret: Some("hunter2".into()),
            created_ms: 0,
        };
        assert!(!format!("{reg:?}").contains("hunter2"));
    }

    #[test]
    fn reply_headers_are_checked() {
        let mut h = BTreeMap::new();
        h.insert("X-Result".to_string(), "ok".to_string());
        assert_eq!(reply_headers(&h, 1024).expect("valid").len(), 1);
        h.insert("Content-Length".to_string(), "3".to_string());
        assert_eq!(
            reply_headers(&h, 1024).expect_err("framing").code,
            Errno::EINVAL
        );
        let mut h = BTreeMap::new();
        h.insert("bad name".to_string(), "v".to_string());
        assert!(reply_headers(&h, 1024).is_err());
        let mut h = BTreeMap::new();
        h.insert("x".to_string(), "a\nb".to_string());
        assert!(reply_headers(&h, 1024).is_err());
        let mut h = BTreeMap::new();
        h.insert("x".to_string(), "v".repeat(100));
        assert_eq!(
            reply_headers(&h, 50).expect_err("size").code,
            Errno::EMSGSIZE
        );
    }
}
