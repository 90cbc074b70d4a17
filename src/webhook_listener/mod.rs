//! The webhook listener: an HTTP front door of the daemon beside the admin
//! socket. It turns requests on registered paths into inbox events of their
//! owning agent and the owner's replies (SYS_WEBHOOK_REPLY) into HTTP
//! responses.
//!
//! A request on a registered path is checked (header bytes → 431, body
//! bytes → 413, body time → 408, signature → 401), then delivered by the
//! kernel ([`Kernel::deliver_webhook`]: a full inbox, or too many requests
//! waiting for the agent, → 503) and made durable; the exchange then waits
//! for the owner's reply up to `reply_timeout_s` (then 504); an owner that
//! ends first gives 502. Unknown paths get 404.
//!
//! With a secret, the request must carry [`SIGNATURE_HEADER`]:
//! `sha256=<lower-case hex of HMAC-SHA256(secret, body)>`, compared in
//! constant time ([`signature`]); otherwise 401 and the agent never sees
//! the request.
//!
//! The registry, the delivery and the two syscalls are kernel code
//! ([`crate::kernel::webhooks`], [`crate::kernel::syscalls::webhooks`]).

pub mod signature;

use crate::kernel::Kernel;
use crate::kernel::ipc::InboxError;
use crate::kernel::webhooks::{DeliveryError, WebhookRequest, disabled};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::{Map, Value};
pub use signature::{SIGNATURE_HEADER, sign, verify};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Most open connections to the listener; further ones wait in the backlog.
const MAX_CONNECTIONS: usize = 512;
/// A client must send its request headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// ... and its body within this time (else 408).
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// An oversized body is read and discarded up to this many bytes before the
/// 413 is sent, so that the client reads the answer instead of a reset.
const DRAIN_CAP: u64 = 16 << 20;

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
    k.prune_webhooks();
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
    k.webhooks.set_address(addr);
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

fn not_found() -> Response<Full<Bytes>> {
    text(
        StatusCode::NOT_FOUND,
        "no webhook is registered at this path",
    )
}

fn internal_error() -> Response<Full<Bytes>> {
    text(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// Why a request body was not read.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("request body too large")]
    TooLarge,
    #[error("request body not received in time")]
    Timeout,
    #[error("unreadable request body: {0}")]
    Read(#[source] hyper::Error),
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
            Ok(Some(Err(e))) => return Err(BodyError::Read(e)),
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
    let reg = match k.webhook_owner(&path) {
        Ok(Some((reg, _))) => reg,
        Ok(None) => return not_found(),
        Err(e) => {
            tracing::error!("{e}");
            return internal_error();
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
        Err(e @ BodyError::TooLarge) => {
            return closing(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string());
        }
        Err(e @ BodyError::Timeout) => return closing(StatusCode::REQUEST_TIMEOUT, &e.to_string()),
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
    // The owner may have ended while the body was read.
    let Some(owner) = k.table.get(reg.pid).filter(|p| p.is_live()) else {
        return not_found();
    };
    let request = WebhookRequest {
        method: parts.method.as_str().to_string(),
        path: path.clone(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers: header_map_json(&parts.headers),
        body,
        remote_addr: peer,
    };
    let waiting = match k.deliver_webhook(&owner, request) {
        Ok(w) => w,
        Err(DeliveryError::Inbox(InboxError::Full(_) | InboxError::FullBytes { .. })) => {
            return text(StatusCode::SERVICE_UNAVAILABLE, "the agent's inbox is full");
        }
        Err(DeliveryError::Inbox(InboxError::Terminated(_))) => return not_found(),
        Err(DeliveryError::TooManyWaiting(_)) => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many requests are waiting for this agent",
            );
        }
        Err(e @ DeliveryError::Inbox(InboxError::Store(_))) => {
            tracing::error!(pid = owner.pid, "webhook delivery: {e}");
            return internal_error();
        }
    };
    if let Err(e) = k.store.durable().await {
        tracing::error!(pid = owner.pid, "webhook delivery: {e}");
        return internal_error();
    }
    tracing::debug!(pid = owner.pid, request_id = %waiting.request_id, path = %path, "webhook delivered");
    let timeout = Duration::from_secs(cfg.reply_timeout_s);
    let reply = tokio::select! {
        r = waiting.reply => r,
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
