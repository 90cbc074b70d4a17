//! The admin socket server. The socket is created in a private directory
//! with its final mode and group already set and then renamed into place,
//! so there is no moment at which it is more open than configured. Every
//! request is authorised from the peer's credentials (SO_PEERCRED): root
//! manages everything, any other user only the agents it spawned.
//!
//! What one client can hold in the daemon is bounded by `[admin]`: the
//! number of open connections (all users together and per uid, see
//! [`super::conns`]), the time to send a complete request line, and the
//! line's length. A refused connection gets one error line, then is closed.

use super::conns::{Admission, Refusal, Slot};
use super::owners::{self, Owners, Usage};
use super::protocol::{AdminRequest, AdminResponse, SpawnRequest, page_size};
use crate::abi::{Errno, SysError};
use crate::kernel::Kernel;
use crate::kernel::pcb::{Pcb, Pid};
use crate::kernel::spawn::rule::{Ceiling, ChildRequest};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("another agentosd is already listening on {0}")]
    InUse(PathBuf),
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
}

impl Peer {
    fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// Creates the listening socket at `path` with `mode` and group `gid`.
pub fn bind(path: &Path, mode: u32, gid: Option<u32>) -> Result<UnixListener, ServerError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |e| ServerError::Io(what, e)
    };
    let dir = path.parent().ok_or_else(|| {
        ServerError::Io(
            path.display().to_string(),
            std::io::ErrorKind::InvalidInput.into(),
        )
    })?;
    std::fs::create_dir_all(dir).map_err(io(&dir.display().to_string()))?;
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServerError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io(&path.display().to_string()))?;
    }
    // A private staging directory: nobody else can reach the socket until
    // it has its final permissions.
    let staging = dir.join(format!(".agentosd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir(&staging).map_err(io(&staging.display().to_string()))?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o700))
        .map_err(io(&staging.display().to_string()))?;
    let tmp = staging.join("sock");
    let result = (|| {
        let std_listener = std::os::unix::net::UnixListener::bind(&tmp).map_err(io("bind"))?;
        std::os::unix::fs::chown(&tmp, Some(0), gid).map_err(io("chown socket"))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .map_err(io("chmod socket"))?;
        std::fs::rename(&tmp, path).map_err(io("rename socket into place"))?;
        std_listener.set_nonblocking(true).map_err(io("socket"))?;
        UnixListener::from_std(std_listener).map_err(io("socket"))
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// Serves admin requests until `shutdown` resolves.
pub async fn run(
    kernel: Arc<Kernel>,
    listener: UnixListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let cfg = &kernel.config.file.admin;
    let admission = Admission::new(cfg.max_connections, cfg.max_connections_per_uid);
    let owners = Arc::new(Owners::default());
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let Ok(cred) = stream.peer_cred() else {
                        continue;
                    };
                    let peer = Peer {
                        uid: cred.uid(),
                        gid: cred.gid(),
                    };
                    match admission.admit(peer.uid) {
                        Ok(slot) => {
                            tokio::spawn(serve_client(kernel.clone(), owners.clone(), stream, peer, slot));
                        }
                        Err(refusal) => refuse(&stream, peer, &refusal),
                    }
                }
                Err(e) => {
                    tracing::warn!("admin accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Answers a connection beyond a cap with one error line and closes it.
/// The line is written without waiting: a new connection's send buffer is
/// empty, and a client that does not read it loses nothing else.
fn refuse(stream: &UnixStream, peer: Peer, refusal: &Refusal) {
    tracing::warn!(uid = peer.uid, "admin connection refused: {refusal}");
    let line = AdminResponse::error(SysError::new(Errno::EAGAIN, refusal.to_string())).to_line();
    let _ = stream.try_write(&line);
}

async fn serve_client(
    k: Arc<Kernel>,
    owners: Arc<Owners>,
    stream: UnixStream,
    peer: Peer,
    _slot: Slot,
) {
    let cap = k.config.file.admin.max_request_bytes;
    let timeout_s = k.config.file.admin.request_timeout_s;
    let (rd, mut wr) = stream.into_split();
    let mut reader = BufReader::new(rd);
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut limited = (&mut reader).take(cap as u64);
        let read = tokio::io::AsyncBufReadExt::read_until(&mut limited, b'\n', &mut line);
        match tokio::time::timeout(std::time::Duration::from_secs(timeout_s), read).await {
            Err(_) => {
                let e = SysError::new(
                    Errno::ETIMEDOUT,
                    format!(
                        "no complete admin request within request_timeout_s = {timeout_s} s: closing the connection"
                    ),
                );
                let _ = send(&mut wr, &AdminResponse::error(e), timeout_s).await;
                return;
            }
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) if line.last() != Some(&b'\n') && line.len() >= cap => {
                let e = SysError::msgsize(format!(
                    "admin request line longer than max_request_bytes = {cap} bytes"
                ));
                let _ = send(&mut wr, &AdminResponse::error(e), timeout_s).await;
                return;
            }
            Ok(Ok(_)) => {}
        }
        let req: AdminRequest = match serde_json::from_slice(&line) {
            Ok(r) => r,
            Err(e) => {
                let e = SysError::inval(format!("bad admin request: {e}"));
                if !send(&mut wr, &AdminResponse::error(e), timeout_s).await {
                    return;
                }
                continue;
            }
        };
        if let AdminRequest::Logs {
            pid,
            follow: true,
            tail,
            since,
        } = req
        {
            if let Err(e) = authorize(&k, peer, pid) {
                let _ = send(&mut wr, &AdminResponse::error(e), timeout_s).await;
                continue;
            }
            follow_logs(&k, pid, tail, since, &mut wr).await;
            return;
        }
        let resp = match handle(&k, &owners, peer, req).await {
            Ok((v, skipped)) => AdminResponse {
                skipped,
                ..AdminResponse::result(v)
            },
            Err(e) => AdminResponse::error(e),
        };
        if !send(&mut wr, &resp, timeout_s).await {
            return;
        }
    }
}

/// Writes one response line; false when the client is gone or has not
/// taken it within `timeout_s` (a client that does not read its answers
/// cannot hold the connection and its buffers forever).
async fn send(
    wr: &mut tokio::net::unix::OwnedWriteHalf,
    resp: &AdminResponse,
    timeout_s: u64,
) -> bool {
    let line = resp.to_line();
    matches!(
        tokio::time::timeout(
            std::time::Duration::from_secs(timeout_s),
            wr.write_all(&line)
        )
        .await,
        Ok(Ok(()))
    )
}

use tokio::io::AsyncReadExt;

/// Checks that `peer` may act on agent `pid`.
fn authorize(k: &Kernel, peer: Peer, pid: Pid) -> Result<Pcb, SysError> {
    let pcb = k
        .table
        .get(pid)
        .ok_or_else(|| SysError::srch(format!("no agent {pid}")))?;
    if !peer.is_root() && pcb.owner != peer.uid {
        return Err(SysError::acces(format!(
            "permission denied: agent {pid} belongs to another user (you are uid {})",
            peer.uid
        )));
    }
    Ok(pcb)
}

/// The PCB as JSON plus `usage`: memory and pids of the agent's own
/// processes (`own`) and of its whole subtree (`tree`) from its cgroups,
/// its live `descendants` (counted by the caller), the bytes its journal
/// holds (`journal_bytes`), and its token budget:
/// spent by itself, by its ended children, lent to live ones, and left
/// (null when unlimited).
fn with_usage(k: &Kernel, p: &Pcb, descendants: u64) -> Value {
    let (tree, own) = k.cgroups.agent(&k.table.lineage(p.pid)).usage();
    let mut v = json!(p);
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "usage".into(),
            json!({
                "own": own,
                "tree": tree,
                "descendants": descendants,
                "journal_bytes": k.journal_bytes(p).unwrap_or(0),
                "tokens": {
                    "own": p.counters.tokens_own(),
                    "children": p.counters.tokens_children,
                    "lent": p.counters.tokens_lent,
                    "remaining": p.tokens_remaining(),
                },
            }),
        );
    }
    v
}

/// Answers one request: its result and, for a page of `inbox`, `logs` or
/// `audit`, how many earlier entries it left out.
async fn handle(
    k: &Arc<Kernel>,
    owners: &Owners,
    peer: Peer,
    req: AdminRequest,
) -> Result<(Value, Option<u64>), SysError> {
    let op = req.name();
    let target = req.target();
    let checked = match target {
        Some(pid) => Some(authorize(k, peer, pid).inspect_err(|e| {
            tracing::warn!(target: "audit", uid = peer.uid, op, pid, "admin request denied: {}", e.message);
            k.audit("admin-denied", Some(peer.uid), Some(pid), op, &e.message);
        })?),
        None => None,
    };
    if !matches!(
        req,
        AdminRequest::Ps
            | AdminRequest::Tree
            | AdminRequest::Status
            | AdminRequest::Inspect { .. }
            | AdminRequest::Logs { .. }
            | AdminRequest::Inbox { .. }
            | AdminRequest::Wait { .. }
            | AdminRequest::CopyOut { .. }
    ) {
        tracing::info!(target: "audit", uid = peer.uid, op, pid = target, "admin action");
        k.audit("admin", Some(peer.uid), target, op, "");
    }
    let visible = |p: &Pcb| peer.is_root() || p.owner == peer.uid;
    let store_err = |e: crate::kernel::store::StoreError| SysError::io(e.to_string());
    let value = match req {
        AdminRequest::Status => Ok(status(k)),
        AdminRequest::Audit {
            pid,
            since_ms,
            tail,
            since_seq,
        } => {
            if let Some(p) = pid {
                authorize(k, peer, p)?;
            }
            // Non-root users see entries about their own agents or by themselves.
            let keep = |e: &crate::kernel::audit::AuditEntry| {
                (pid.is_none() || e.pid == pid)
                    && since_ms.is_none_or(|s| e.ts_ms >= s)
                    && (peer.is_root()
                        || e.uid == Some(peer.uid)
                        || e.pid
                            .and_then(|p| k.table.get(p))
                            .is_some_and(|p| p.owner == peer.uid))
            };
            let (entries, skipped) = k
                .read_audit_page(since_seq, page_size(tail), keep)
                .map_err(store_err)?;
            let list: Vec<Value> = entries
                .into_iter()
                .map(|(seq, e)| {
                    let mut v = json!(e);
                    if let Some(o) = v.as_object_mut() {
                        o.insert("seq".into(), json!(seq));
                    }
                    v
                })
                .collect();
            return Ok((json!(list), Some(skipped)));
        }
        AdminRequest::Top => {
            let agents: Vec<Pcb> = k
                .table
                .all()
                .into_iter()
                .filter(|p| p.is_live() && visible(p))
                .collect();
            let descendants = k.table.live_descendant_counts();
            let agents: Vec<Value> = agents
                .iter()
                .map(|p| with_usage(k, p, descendants.get(&p.pid).copied().unwrap_or(0)))
                .collect();
            Ok(json!({"agents": agents, "scheduler": k.inference().scheduler.stats()}))
        }
        AdminRequest::Ps => Ok(json!(
            k.table
                .all()
                .into_iter()
                .filter(visible)
                .collect::<Vec<_>>()
        )),
        AdminRequest::Tree => {
            let list: Vec<Value> = k
                .table
                .all()
                .into_iter()
                .filter(visible)
                .map(|p| json!({"pid": p.pid, "ppid": p.ppid, "name": p.name, "state": p.state}))
                .collect();
            Ok(json!(list))
        }
        AdminRequest::Inspect { .. } => Ok(match &checked {
            Some(p) => with_usage(k, p, k.table.live_descendants(p.pid)),
            None => Value::Null,
        }),
        AdminRequest::Logs {
            pid, tail, since, ..
        } => {
            let (events, skipped) = k
                .read_log_page(pid, since, page_size(tail))
                .map_err(store_err)?;
            return Ok((json!(events), Some(skipped)));
        }
        AdminRequest::Kill { pid } => {
            k.kill_agent(pid, &format!("killed by admin (uid {})", peer.uid))?;
            let exit = k.wait_for(pid, Some(10_000), None).await?;
            Ok(json!({"pid": pid, "exit": exit}))
        }
        AdminRequest::Stop { pid } | AdminRequest::Cont { pid } => {
            let state = k.set_stopped(pid, matches!(req, AdminRequest::Stop { .. }))?;
            k.store
                .durable()
                .await
                .map_err(|e| SysError::io(e.to_string()))?;
            Ok(json!({"pid": pid, "state": state}))
        }
        AdminRequest::Send { pid, body } => {
            let target = checked.ok_or_else(|| SysError::srch(format!("no agent {pid}")))?;
            let seq = k.deliver(&target, 0, Some(peer.uid), body)?;
            k.store
                .durable()
                .await
                .map_err(|e| SysError::io(e.to_string()))?;
            Ok(json!({"pid": pid, "seq": seq}))
        }
        AdminRequest::CopyIn { pid, entries } => {
            let target = checked.ok_or_else(|| SysError::srch(format!("no agent {pid}")))?;
            Ok(json!(k.copy_in(&target, entries).await?))
        }
        AdminRequest::CopyOut { pid, path } => {
            let target = checked.ok_or_else(|| SysError::srch(format!("no agent {pid}")))?;
            Ok(json!(k.copy_out(&target, path).await?))
        }
        AdminRequest::Wait { pid, timeout_ms } => {
            let exit = k.wait_for(pid, timeout_ms, None).await?;
            Ok(json!({"pid": pid, "exit": exit}))
        }
        AdminRequest::Inbox { pid, tail, since } => {
            let inbox = &k.store.trees.inbox;
            let limit = page_size(tail);
            let msgs: Vec<(u64, crate::kernel::ipc::Message)> = k
                .store
                .range_tail(inbox, pid, since, limit)
                .map_err(store_err)?;
            let skipped = match msgs.first() {
                Some((first, _)) if msgs.len() >= limit => {
                    k.store.count_between(inbox, pid, since, *first) as u64
                }
                _ => 0,
            };
            let list: Vec<_> = msgs.into_iter().map(|(_, m)| m).collect();
            return Ok((json!(list), Some(skipped)));
        }
        AdminRequest::Spawn(s) => {
            // A client's ceiling is the profile it names (root's is none).
            let parent = Ceiling::Admin {
                uid: peer.uid,
                gid: peer.gid,
            };
            let request = child_request(*s);
            if peer.is_root() {
                return Ok((json!(k.spawn(parent, request).await?), None));
            }
            // Other users: within their [admin] ceiling, checked and
            // spawned in one turn per uid.
            let _turn = owners.turn(peer.uid).await;
            let spec = k.child_spec(parent, request.clone())?;
            let usage = Usage::of(peer.uid, &k.table.all());
            let inference = k.inference();
            owners::check(
                &k.config.file.admin,
                inference.default_model.as_deref(),
                peer.uid,
                &spec,
                usage,
            )
            .inspect_err(|e| {
                tracing::warn!(target: "audit", uid = peer.uid, "admin spawn refused: {}", e.message);
                k.audit("admin-denied", Some(peer.uid), None, "spawn", &e.message);
            })?;
            let pcb = k.spawn(parent, request).await?;
            Ok(json!(pcb))
        }
    };
    value.map(|v| (v, None))
}

/// The spawn rule's form of an admin spawn request (an empty program
/// means none).
fn child_request(s: SpawnRequest) -> ChildRequest {
    ChildRequest {
        name: s.name,
        program: (!s.program.is_empty()).then_some(s.program),
        args: s.args,
        permissions: s.permissions,
        limits: s.limits,
        role: s.role,
        model: s.model,
        priority: s.priority,
        pipe_to: s.pipe_to,
        profile: s.profile,
        ro_binds: s.ro,
        models: s.models,
        copy: s.copy,
    }
}

fn status(k: &Kernel) -> Value {
    let all = k.table.all();
    let live = all.iter().filter(|p| p.is_live()).count();
    let features = crate::sandbox::features::detect(k.cgroups.describe());
    let a = &k.config.file.admin;
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "daemon_pid": std::process::id(),
        "uptime_s": k.started.elapsed().as_secs(),
        "agents_live": live,
        "agents_total": all.len(),
        "state_dir": k.config.state_dir,
        "uid_range": format!("{}-{}", k.config.uid_range.first, k.config.uid_range.last),
        "profiles": k.profiles.names().collect::<Vec<_>>(),
        "kernel": features,
        "owner_ceiling": {
            "profiles": a.profiles,
            "models": a.models,
            "max_priority": a.max_priority,
            "max_agents": a.max_agents,
            "max_memory_bytes": a.max_memory_bytes,
        },
    })
}

/// Streams the stored log (the last `tail` events after `since`, default
/// one page), then new events a page at a time, until the agent has
/// terminated and everything it wrote was sent.
async fn follow_logs(
    k: &Arc<Kernel>,
    pid: Pid,
    tail: Option<usize>,
    since: Option<u64>,
    wr: &mut tokio::net::unix::OwnedWriteHalf,
) {
    let mut wake = k.logs.subscribe();
    let mut last = since;
    let mut first = true;
    let limit = page_size(None);
    loop {
        let terminated = k.table.get(pid).is_none_or(|p| !p.is_live());
        let read = if first {
            k.read_log_page(pid, last, page_size(tail)).map(|(e, _)| e)
        } else {
            k.read_log_after(pid, last, limit)
        };
        let events = match read {
            Ok(e) => e,
            Err(e) => {
                let _ = wr
                    .write_all(
                        &AdminResponse::error(SysError::new(Errno::EIO, e.to_string())).to_line(),
                    )
                    .await;
                return;
            }
        };
        first = false;
        let full = events.len() >= limit;
        let seen = last;
        for ev in events
            .into_iter()
            .filter(|e| seen.is_none_or(|s| e.seq > s))
        {
            last = Some(ev.seq);
            if wr
                .write_all(&AdminResponse::event(ev).to_line())
                .await
                .is_err()
            {
                return;
            }
        }
        if full {
            // More is waiting: the next page at once.
            continue;
        }
        if terminated {
            let _ = wr.write_all(&AdminResponse::end().to_line()).await;
            return;
        }
        // Wake on any new log event, or re-check every 250 ms.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(250), wake.recv()).await;
    }
}
