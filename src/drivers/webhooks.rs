//! Webhooks: an HTTP listener in the daemon that turns requests on
//! registered paths into inbox events and the owning agent's replies into
//! HTTP responses.
//!
//! * SYS_REGISTER_WEBHOOK `{"path", "secret"?}` makes the caller the owner
//!   of `path` (exact match; one owner per path, EEXIST for a second;
//!   re-registering one's own path replaces its secret). Registrations live
//!   in the `webhooks` tree (path → [`Registration`]), so they survive a
//!   daemon restart with the recovered agent; they are dropped when the
//!   agent terminates ([`Kernel::drop_webhooks`]) and, at start, when their
//!   agent is no longer live.
//! * A request on a registered path is checked (header bytes → 431, body
//!   bytes → 413, signature → 401), then put in the owner's durable inbox as
//!   a message with `kind: "webhook"` and `event: {"request_id", "method",
//!   "path", "query", "headers", "body", "encoding", "remote_addr"}` (the
//!   body as text, or base64 with `encoding: "base64"` when it is not
//!   UTF-8). The HTTP exchange then waits for SYS_WEBHOOK_REPLY with that
//!   `request_id` from the owner, up to `reply_timeout_s` (then 504); an
//!   owner that ends first gives 502. Unknown paths get 404.
//! * With a secret the request must carry [`SIGNATURE_HEADER`]:
//!   `sha256=<lower-case hex of HMAC-SHA256(secret, body)>`, compared in
//!   constant time; otherwise 401 and the agent never sees the request.
//!   Secrets never leave the daemon: not in results, AGENT_INFO, PS, logs
//!   or the journal ([`redact_args`]).

use crate::abi::wire::typed_args;
use crate::abi::{Errno, SysError};
use crate::kernel::Kernel;
use crate::kernel::ipc::{MAX_QUEUED, Message};
use crate::kernel::pcb::{Pcb, Pid, now_ms};
use crate::kernel::store::key;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::oneshot;

/// The request header that carries the signature of a signed path.
pub const SIGNATURE_HEADER: &str = "x-agentos-signature";
/// Longest registrable path.
pub const MAX_PATH_LEN: usize = 256;
/// Longest secret.
pub const MAX_SECRET_LEN: usize = 1024;
/// Most paths one agent may own.
pub const MAX_PATHS_PER_AGENT: usize = 64;
/// Most requests waiting for one agent's replies at once (more get 503).
pub const MAX_PENDING_PER_AGENT: usize = 256;
/// Most open connections to the listener; further ones wait in the backlog.
const MAX_CONNECTIONS: usize = 512;
/// Most headers a reply may set.
const MAX_REPLY_HEADERS: usize = 64;
/// A client must send its request headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// ... and its body within this time (else 408).
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// An oversized body is read and discarded up to this many bytes before the
/// 413 is sent, so that the client reads the answer instead of a reset.
const DRAIN_CAP: u64 = 16 << 20;

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

/// A registered path, as stored in the `webhooks` tree.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct Registration {
    pub pid: Pid,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_ms: u64,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("pid", &self.pid)
            .field("path", &self.path)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("created_ms", &self.created_ms)
            .finish()
    }
}

/// What the owning agent answered.
struct HttpReply {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
}

/// A request waiting for its reply.
struct Pending {
    pid: Pid,
    reply: oneshot::Sender<HttpReply>,
}

/// The in-memory side of webhooks (a field of [`Kernel`]).
#[derive(Default)]
pub struct Webhooks {
    /// request id → the HTTP exchange waiting for it.
    pending: Mutex<HashMap<String, Pending>>,
    /// Serialises changes of the registration tree (one owner per path).
    registry: Mutex<()>,
    /// The address the listener is bound to, once it is.
    bound: OnceLock<SocketAddr>,
}

impl Webhooks {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, ()> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bound address of the listener, when it runs.
    pub fn address(&self) -> Option<SocketAddr> {
        self.bound.get().copied()
    }
}

/// Whether `[webhooks] listen` disables the listener.
fn disabled(listen: &str) -> bool {
    listen.trim().eq_ignore_ascii_case("off")
}

// ---- syscalls ----------------------------------------------------------------

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

fn read_registration(tree: &sled::Tree, path: &str) -> Result<Option<Registration>, SysError> {
    let raw = tree
        .get(path.as_bytes())
        .map_err(|e| SysError::io(format!("webhook registry: {e}")))?;
    Ok(raw.and_then(|v| serde_json::from_slice(&v).ok()))
}

fn registrations(tree: &sled::Tree) -> Vec<Registration> {
    tree.iter()
        .values()
        .filter_map(|v| v.ok())
        .filter_map(|v| serde_json::from_slice::<Registration>(&v).ok())
        .collect()
}

impl Kernel {
    pub fn sys_register_webhook(&self, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
        let (path, secret) = register_args(args)?;
        validate_path(&path)?;
        if let Some(s) = &secret {
            validate_secret(s)?;
        }
        let cfg = &self.config.file.webhooks;
        if disabled(&cfg.listen) {
            return Err(SysError::new(
                Errno::ENOSYS,
                "webhooks are disabled on this supervisor ([webhooks] listen = \"off\")",
            ));
        }
        let tree = &self.store.trees.webhooks;
        let _one_writer = self.webhooks.registry();
        if !self.table.get(pcb.pid).is_some_and(|p| p.is_live()) {
            return Err(SysError::srch("agent is not running"));
        }
        match read_registration(tree, &path)? {
            Some(r) if r.pid != pcb.pid && self.table.get(r.pid).is_some_and(|p| p.is_live()) => {
                return Err(SysError::new(
                    Errno::EEXIST,
                    format!("webhook path {path} is registered by another agent"),
                ));
            }
            Some(r) if r.pid == pcb.pid => {}
            _ => {
                let owned = registrations(tree)
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
        let bytes = serde_json::to_vec(&reg).map_err(|e| SysError::io(e.to_string()))?;
        tree.insert(path.as_bytes(), bytes)
            .map_err(|e| SysError::io(format!("webhook registry: {e}")))?;
        tracing::info!(pid = pcb.pid, path = %path, signed, "webhook registered");
        let host = match self.webhooks.address() {
            Some(a) => a.to_string(),
            None => cfg.listen.trim().to_string(),
        };
        Ok(json!({"path": path, "url": format!("http://{host}{path}"), "signed": signed}))
    }

    /// The reply body is bounded by the syscall line cap.
    pub fn sys_webhook_reply(&self, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
        let a: ReplyArgs = typed_args("SYS_WEBHOOK_REPLY", args)?;
        let cfg = &self.config.file.webhooks;
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
        let mut pending = self.webhooks.pending();
        match pending.get(&a.request_id) {
            None => {
                return Err(SysError::noent(format!(
                    "no webhook request {:?} is waiting for a reply (unknown, answered, or expired)",
                    a.request_id
                )));
            }
            Some(p) if p.pid != pcb.pid => {
                return Err(SysError::acces(format!(
                    "webhook request {:?} belongs to another agent",
                    a.request_id
                )));
            }
            Some(_) => {}
        }
        let Some(p) = pending.remove(&a.request_id) else {
            return Err(SysError::noent("the webhook request vanished"));
        };
        drop(pending);
        p.reply
            .send(HttpReply {
                status,
                headers,
                body,
            })
            .map_err(|_| {
                SysError::noent(format!(
                    "the caller of webhook request {:?} has gone away",
                    a.request_id
                ))
            })?;
        Ok(json!({"replied": true}))
    }

    /// Forgets an agent's paths and fails its waiting requests (502): it
    /// terminated.
    pub fn drop_webhooks(&self, pid: Pid) {
        {
            let _one_writer = self.webhooks.registry();
            let tree = &self.store.trees.webhooks;
            for r in registrations(tree).into_iter().filter(|r| r.pid == pid) {
                if let Err(e) = tree.remove(r.path.as_bytes()) {
                    tracing::error!(pid, "removing webhook {}: {e}", r.path);
                }
            }
        }
        // Dropping the senders answers the waiting exchanges.
        self.webhooks.pending().retain(|_, p| p.pid != pid);
    }
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

// ---- signatures ----------------------------------------------------------------

/// `sha256=<hex of HMAC-SHA256(secret, body)>`, the value a caller sends in
/// [`SIGNATURE_HEADER`].
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac_of(secret);
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn hmac_of(secret: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length; the error case cannot happen.
    match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

/// Whether `header` (the whole header value) is a valid signature of `body`
/// under `secret`. The comparison is constant-time.
pub fn verify(secret: &str, header: Option<&[u8]>, body: &[u8]) -> bool {
    let Some(header) = header else { return false };
    let Ok(header) = std::str::from_utf8(header) else {
        return false;
    };
    let Some(hex) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Some(tag) = decode_hex(hex) else {
        return false;
    };
    let mut mac = hmac_of(secret);
    mac.update(body);
    mac.verify_slice(&tag).is_ok()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

// ---- the listener --------------------------------------------------------------

/// The listener could not be started.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen for webhooks on {addr} (set [webhooks] listen to a free address, or \"off\"): {source}"
)]
pub struct ListenError {
    pub addr: String,
    pub source: std::io::Error,
}

/// Drops registrations whose agent is no longer live, then binds the
/// listener (unless `[webhooks] listen = "off"`) and serves it forever.
/// Call once, after recovery.
pub fn start(k: &Arc<Kernel>) -> Result<(), ListenError> {
    {
        let _one_writer = k.webhooks.registry();
        let tree = &k.store.trees.webhooks;
        for r in registrations(tree) {
            if !k.table.get(r.pid).is_some_and(|p| p.is_live()) {
                let _ = tree.remove(r.path.as_bytes());
            }
        }
    }
    let listen = k.config.file.webhooks.listen.trim().to_string();
    if disabled(&listen) {
        tracing::info!("webhook listener disabled ([webhooks] listen = \"off\")");
        return Ok(());
    }
    let fail = |source| ListenError {
        addr: listen.clone(),
        source,
    };
    let std_listener = std::net::TcpListener::bind(listen.as_str()).map_err(fail)?;
    std_listener.set_nonblocking(true).map_err(fail)?;
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(fail)?;
    let addr = listener.local_addr().map_err(fail)?;
    let _ = k.webhooks.bound.set(addr);
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the webhook listener is reachable beyond loopback; sign webhooks with secrets");
    }
    tracing::info!(%addr, "webhook listener ready");
    tokio::spawn(serve(k.clone(), listener));
    Ok(())
}

async fn serve(k: Arc<Kernel>, listener: tokio::net::TcpListener) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let cfg = k.config.file.webhooks.clone();
    let header_cap = usize::try_from(cfg.max_header_bytes).unwrap_or(usize::MAX);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(header_cap.max(64))
        .max_buf_size(header_cap.saturating_add(1024).clamp(8192, 4 << 20));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("webhook listener: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let k = k.clone();
        let http = http.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let k = k.clone();
                async move { Ok::<_, Infallible>(handle(&k, peer, req).await) }
            });
            if let Err(e) = http.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(%peer, "webhook connection: {e}");
            }
        });
    }
}

fn text(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{msg}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// An error answer after which the connection is closed (the request body
/// may not have been read).
fn closing(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    let mut r = text(status, msg);
    r.headers_mut()
        .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    r
}

enum BodyError {
    TooLarge,
    Timeout,
    Read(String),
}

/// Reads the body up to `max` bytes. A longer one is read on and discarded
/// up to [`DRAIN_CAP`] (so the client gets to read the 413), then refused.
async fn read_body(mut body: Incoming, max: u64) -> Result<Vec<u8>, BodyError> {
    let deadline = tokio::time::Instant::now() + BODY_READ_TIMEOUT;
    let mut out = Vec::new();
    let mut total = 0u64;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(BodyError::Read(e.to_string())),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len() as u64);
        if total > max {
            if total > DRAIN_CAP {
                return Err(BodyError::TooLarge);
            }
            out = Vec::new();
            continue;
        }
        out.extend_from_slice(&data);
    }
    if total > max {
        return Err(BodyError::TooLarge);
    }
    Ok(out)
}

fn header_map_json(headers: &HeaderMap) -> Value {
    let mut out = Map::new();
    for (name, value) in headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match out.get_mut(name.as_str()) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                out.insert(name.as_str().to_string(), Value::String(v));
            }
        }
    }
    Value::Object(out)
}

/// Removes a pending request when its exchange ends (reply, timeout or the
/// client hanging up), so a late reply answers ENOENT.
struct PendingGuard<'a> {
    k: &'a Kernel,
    id: String,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.k.webhooks.pending().remove(&self.id);
    }
}

async fn handle(
    k: &Arc<Kernel>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let cfg = &k.config.file.webhooks;
    let (parts, body) = req.into_parts();
    let header_bytes: u64 = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().len() + v.len() + 4) as u64)
        .sum();
    if header_bytes > cfg.max_header_bytes {
        return closing(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request headers too large",
        );
    }
    let path = parts.uri.path().to_string();
    let tree = &k.store.trees.webhooks;
    let reg = match read_registration(tree, &path) {
        Ok(Some(r)) if k.table.get(r.pid).is_some_and(|p| p.is_live()) => r,
        Ok(_) => {
            return text(
                StatusCode::NOT_FOUND,
                "no webhook is registered at this path",
            );
        }
        Err(e) => {
            tracing::error!("webhook registry: {}", e.message);
            return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    let declared = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > cfg.max_body_bytes && n > DRAIN_CAP) {
        return closing(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    let body = match read_body(body, cfg.max_body_bytes).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return closing(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
        }
        Err(BodyError::Timeout) => {
            return closing(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
            );
        }
        Err(BodyError::Read(e)) => {
            tracing::debug!(%peer, "webhook body: {e}");
            return closing(StatusCode::BAD_REQUEST, "unreadable request body");
        }
    };
    if let Some(secret) = &reg.secret {
        let sig = parts.headers.get(SIGNATURE_HEADER).map(|v| v.as_bytes());
        if !verify(secret, sig, &body) {
            tracing::info!(pid = reg.pid, path = %path, %peer, "webhook refused: missing or invalid signature");
            return text(
                StatusCode::UNAUTHORIZED,
                "missing or invalid X-AgentOS-Signature",
            );
        }
    }
    let Some(target) = k.table.get(reg.pid).filter(|p| p.is_live()) else {
        return text(
            StatusCode::NOT_FOUND,
            "no webhook is registered at this path",
        );
    };
    if k.store.queues.inbox.get(target.pid) >= MAX_QUEUED as u64 {
        return text(StatusCode::SERVICE_UNAVAILABLE, "the agent's inbox is full");
    }
    let seq = match k.store.next_seq() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("webhook: {e}");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    let request_id = format!("w-{seq}");
    let (tx, rx) = oneshot::channel();
    {
        let mut pending = k.webhooks.pending();
        if pending.values().filter(|p| p.pid == target.pid).count() >= MAX_PENDING_PER_AGENT {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many requests are waiting for this agent",
            );
        }
        pending.insert(
            request_id.clone(),
            Pending {
                pid: target.pid,
                reply: tx,
            },
        );
    }
    let _guard = PendingGuard {
        k,
        id: request_id.clone(),
    };
    let (text_body, encoding) = match String::from_utf8(body) {
        Ok(s) => (s, "utf8"),
        Err(e) => (
            base64::engine::general_purpose::STANDARD.encode(e.as_bytes()),
            "base64",
        ),
    };
    let method = parts.method.as_str().to_string();
    let event = json!({
        "request_id": request_id,
        "method": method,
        "path": path,
        "query": parts.uri.query().unwrap_or(""),
        "headers": header_map_json(&parts.headers),
        "body": text_body,
        "encoding": encoding,
        "remote_addr": peer.to_string(),
    });
    let msg = Message {
        seq,
        from: target.pid,
        from_uid: None,
        body: format!("webhook {method} {path} (request_id {request_id})"),
        ts_ms: now_ms(),
        kind: Some("webhook".into()),
        event: Some(event),
    };
    let stored = serde_json::to_vec(&msg)
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            k.store
                .trees
                .inbox
                .insert(key(target.pid, seq), bytes)
                .map_err(|e| e.to_string())
        });
    if let Err(e) = stored {
        tracing::error!(pid = target.pid, "webhook delivery: {e}");
        return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    }
    k.store.queues.inbox.add(target.pid, 1);
    if let Some(live) = k.live.get(target.pid) {
        live.inbox.notify_waiters();
    }
    if let Err(e) = k.store.durable().await {
        tracing::error!(pid = target.pid, "webhook delivery: {e}");
        return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    }
    tracing::debug!(pid = target.pid, %request_id, path = %path, "webhook delivered");
    let timeout = Duration::from_secs(cfg.reply_timeout_s);
    let reply = tokio::select! {
        r = rx => r,
        _ = tokio::time::sleep(timeout) => {
            return text(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("the agent did not reply within {} s", cfg.reply_timeout_s),
            );
        }
    };
    let Ok(reply) = reply else {
        return text(StatusCode::BAD_GATEWAY, "the agent ended before replying");
    };
    let mut r = Response::new(Full::new(Bytes::from(reply.body)));
    *r.status_mut() = reply.status;
    for (n, v) in reply.headers {
        r.headers_mut().append(n, v);
    }
    r
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
    fn signatures_verify_in_constant_time_form() {
        let body = b"{\"x\":1}";
        let sig = sign("s3cret", body);
        assert!(sig.starts_with("sha256="));
        assert_eq!(sig.len(), 7 + 64);
        assert!(verify("s3cret", Some(sig.as_bytes()), body));
        assert!(verify(
            "s3cret",
            Some(
                sig.to_ascii_uppercase()
                    .replace("SHA256=", "sha256=")
                    .as_bytes()
            ),
            body
        ));
        assert!(!verify("other", Some(sig.as_bytes()), body));
        assert!(!verify("s3cret", Some(sig.as_bytes()), b"{\"x\":2}"));
        assert!(!verify("s3cret", None, body));
        assert!(!verify("s3cret", Some(b"sha256=zz"), body));
        assert!(!verify("s3cret", Some(&sig.as_bytes()[7..]), body));
        assert!(!verify("s3cret", Some(&sig.as_bytes()[..20]), body));
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
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
