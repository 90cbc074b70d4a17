//! Webhooks, the kernel's side: the registry of paths, the requests waiting
//! for their owner's reply, and the delivery of a request into its owner's
//! inbox.
//!
//! * Registrations live in the `webhooks` tree (path → [`Registration`],
//!   one owner per path), so they survive a daemon restart with the
//!   recovered agent; they are dropped when the agent terminates
//!   ([`Kernel::drop_webhooks`]) and, at start, when their agent is no
//!   longer live ([`Kernel::prune_webhooks`]).
//! * A request is delivered ([`deliver`]) through the one inbox writer
//!   ([`Inboxes`]), like SEND_MSG: its place in the inbox is reserved
//!   against the inbox cap before anything else, so concurrent requests
//!   never overfill it. It becomes a message with `kind: "webhook"` and
//!   `event: {"request_id", "method", "path", "query", "headers", "body",
//!   "encoding", "remote_addr"}` (the body as text, or base64 with
//!   `encoding: "base64"` when it is not UTF-8), and waits for
//!   SYS_WEBHOOK_REPLY with its `request_id` ([`AwaitingReply`]).
//!
//! The HTTP listener that receives requests is a front door beside the
//! admin socket (`crate::webhook_listener`); the two syscalls are in
//! [`super::syscalls::webhooks`].

use super::Kernel;
use super::ipc::{InboxError, Inboxes, NewMessage};
use super::pcb::{Pcb, Pid};
use crate::abi::SysError;
use base64::Engine;
use hyper::StatusCode;
use hyper::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, OnceLock};
use tokio::sync::oneshot;

/// Most requests waiting for one agent's replies at once (more get 503).
pub const MAX_PENDING_PER_AGENT: usize = 256;

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

/// A failure of the registry's database.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("webhook registry: {0}")]
    Database(#[from] sled::Error),
    #[error("webhook registry: {0}")]
    Encoding(#[from] serde_json::Error),
}

impl From<RegistryError> for SysError {
    fn from(e: RegistryError) -> Self {
        SysError::io(e.to_string())
    }
}

/// Why a request could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Inbox(#[from] InboxError),
    #[error("{MAX_PENDING_PER_AGENT} requests are waiting for agent {0}")]
    TooManyWaiting(Pid),
}

/// What the owning agent answered (SYS_WEBHOOK_REPLY).
pub struct HttpReply {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Vec<u8>,
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
    fn pending(&self) -> MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Held while the registration tree is changed.
    pub fn registry_lock(&self) -> MutexGuard<'_, ()> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bound address of the listener, when it runs.
    pub fn address(&self) -> Option<SocketAddr> {
        self.bound.get().copied()
    }

    /// Records the listener's bound address (once).
    pub fn set_address(&self, addr: SocketAddr) {
        if self.bound.set(addr).is_err() {
            tracing::warn!(%addr, "the webhook listener was started twice");
        }
    }

    /// Registers request `id` of agent `pid` as waiting for its reply;
    /// refused when [`MAX_PENDING_PER_AGENT`] of the agent's wait already.
    fn wait_for_reply(
        &self,
        id: &str,
        pid: Pid,
    ) -> Result<(oneshot::Receiver<HttpReply>, PendingGuard<'_>), DeliveryError> {
        let (tx, rx) = oneshot::channel();
        let mut pending = self.pending();
        if pending.values().filter(|p| p.pid == pid).count() >= MAX_PENDING_PER_AGENT {
            return Err(DeliveryError::TooManyWaiting(pid));
        }
        pending.insert(id.to_string(), Pending { pid, reply: tx });
        let guard = PendingGuard {
            webhooks: self,
            id: id.to_string(),
        };
        Ok((rx, guard))
    }

    /// Hands `reply` to the exchange waiting for request `id`, which must
    /// be one of agent `pid`'s.
    pub fn reply(&self, id: &str, pid: Pid, reply: HttpReply) -> Result<(), SysError> {
        let mut pending = self.pending();
        match pending.get(id) {
            None => {
                return Err(SysError::noent(format!(
                    "no webhook request {id:?} is waiting for a reply (unknown, answered, or expired)"
                )));
            }
            Some(p) if p.pid != pid => {
                return Err(SysError::acces(format!(
                    "webhook request {id:?} belongs to another agent"
                )));
            }
            Some(_) => {}
        }
        let Some(p) = pending.remove(id) else {
            return Err(SysError::noent("the webhook request vanished"));
        };
        drop(pending);
        p.reply.send(reply).map_err(|_| {
            SysError::noent(format!(
                "the caller of webhook request {id:?} has gone away"
            ))
        })
    }
}

/// Removes a pending request when its exchange ends (reply, timeout or the
/// client hanging up), so a late reply answers ENOENT.
struct PendingGuard<'a> {
    webhooks: &'a Webhooks,
    id: String,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.webhooks.pending().remove(&self.id);
    }
}

/// Whether `[webhooks] listen` disables the listener.
pub fn disabled(listen: &str) -> bool {
    listen.trim().eq_ignore_ascii_case("off")
}

/// The registration of `path`, if any. An unreadable one counts as none.
pub fn read_registration(
    tree: &sled::Tree,
    path: &str,
) -> Result<Option<Registration>, RegistryError> {
    let Some(raw) = tree.get(path.as_bytes())? else {
        return Ok(None);
    };
    match serde_json::from_slice(&raw) {
        Ok(r) => Ok(Some(r)),
        Err(e) => {
            tracing::warn!(path, "ignoring an unreadable webhook registration: {e}");
            Ok(None)
        }
    }
}

/// Every readable registration.
pub fn registrations(tree: &sled::Tree) -> Result<Vec<Registration>, RegistryError> {
    let mut out = Vec::new();
    for raw in tree.iter().values() {
        match serde_json::from_slice::<Registration>(&raw?) {
            Ok(r) => out.push(r),
            Err(e) => tracing::warn!("ignoring an unreadable webhook registration: {e}"),
        }
    }
    Ok(out)
}

/// A request as the listener received it.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The request headers, as a JSON object of strings.
    pub headers: Value,
    pub body: Vec<u8>,
    pub remote_addr: SocketAddr,
}

/// A delivered request waiting for its owner's reply. Dropped, it stops
/// waiting: a late SYS_WEBHOOK_REPLY answers ENOENT.
pub struct AwaitingReply<'a> {
    pub request_id: String,
    pub reply: oneshot::Receiver<HttpReply>,
    _pending: PendingGuard<'a>,
}

/// Puts `request` in `owner`'s inbox (durable with the next flush) and
/// registers it as waiting for a reply.
pub fn deliver<'a>(
    inboxes: Inboxes<'_>,
    webhooks: &'a Webhooks,
    owner: &Pcb,
    request: WebhookRequest,
) -> Result<AwaitingReply<'a>, DeliveryError> {
    let slot = inboxes.reserve(owner)?;
    let request_id = format!("w-{}", slot.seq());
    let (reply, pending) = webhooks.wait_for_reply(&request_id, owner.pid)?;
    let (body, encoding) = match String::from_utf8(request.body) {
        Ok(s) => (s, "utf8"),
        Err(e) => (
            base64::engine::general_purpose::STANDARD.encode(e.as_bytes()),
            "base64",
        ),
    };
    let summary = format!(
        "webhook {} {} (request_id {request_id})",
        request.method, request.path
    );
    let event = json!({
        "request_id": request_id,
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "headers": request.headers,
        "body": body,
        "encoding": encoding,
        "remote_addr": request.remote_addr.to_string(),
    });
    slot.deliver(NewMessage {
        from: owner.pid,
        from_uid: None,
        body: summary,
        kind: Some("webhook".into()),
        event: Some(event),
    })?;
    Ok(AwaitingReply {
        request_id,
        reply,
        _pending: pending,
    })
}

impl Kernel {
    /// The registration of `path` and its owner, when the owner is live.
    pub fn webhook_owner(&self, path: &str) -> Result<Option<(Registration, Pcb)>, RegistryError> {
        let Some(reg) = read_registration(&self.store.trees.webhooks, path)? else {
            return Ok(None);
        };
        Ok(self
            .table
            .get(reg.pid)
            .filter(|p| p.is_live())
            .map(|owner| (reg, owner)))
    }

    /// Delivers `request` to `owner` (see [`deliver`]).
    pub fn deliver_webhook(
        &self,
        owner: &Pcb,
        request: WebhookRequest,
    ) -> Result<AwaitingReply<'_>, DeliveryError> {
        deliver(self.inboxes(), &self.webhooks, owner, request)
    }

    /// Forgets an agent's paths and fails its waiting requests (502): it
    /// terminated.
    pub fn drop_webhooks(&self, pid: Pid) {
        self.remove_registrations(|r| r.pid == pid);
        // Dropping the senders answers the waiting exchanges.
        self.webhooks.pending().retain(|_, p| p.pid != pid);
    }

    /// At start: drops the registrations whose agent is no longer live.
    pub fn prune_webhooks(&self) {
        self.remove_registrations(|r| !self.table.get(r.pid).is_some_and(|p| p.is_live()));
    }

    fn remove_registrations(&self, doomed: impl Fn(&Registration) -> bool) {
        let _one_writer = self.webhooks.registry_lock();
        let tree = &self.store.trees.webhooks;
        let all = match registrations(tree) {
            Ok(all) => all,
            Err(e) => {
                tracing::error!("{e}");
                return;
            }
        };
        for r in all.into_iter().filter(|r| doomed(r)) {
            if let Err(e) = tree.remove(r.path.as_bytes()) {
                tracing::error!(pid = r.pid, "removing webhook {}: {e}", r.path);
            }
        }
    }
}

#[cfg(test)]
mod tests;
