//! Messages and pipes: SEND_MSG / RECV_MSG over the durable inbox, and
//! SYS_WRITE_STDOUT / SYS_READ_STDIN over the durable stdin queue that
//! `pipe_to` wires between agents.
//!
//! Delivery rule: a message is in the recipient's inbox before SEND_MSG is
//! acknowledged (the dispatcher flushes before replying), and RECV_MSG
//! removes exactly the messages its reply carries, in the same flush as the
//! journal entry that records them.

use super::Kernel;
use super::pcb::{Pcb, Pid, State, now_ms};
use super::store::{QueueLengths, key};
use crate::abi::calls::{RecvArgs, RecvMsgArgs, SendArgs, WriteStdoutArgs};
use crate::abi::wire::typed_args;
use crate::abi::{Errno, SysError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;

/// Largest message body.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Most messages (or stdin chunks) waiting for one agent.
pub const MAX_QUEUED: usize = 10_000;
const MAX_WAIT_MS: u64 = 24 * 3600 * 1000;

/// A message in an inbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    pub seq: u64,
    /// Sending agent, or 0 for an admin.
    pub from: Pid,
    /// Unix uid of the sending admin, when `from` is 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_uid: Option<u32>,
    pub body: String,
    pub ts_ms: u64,
    /// "timer" or "webhook" for events the supervisor delivers; absent for
    /// messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The event's payload (e.g. a webhook request), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<serde_json::Value>,
}

impl Kernel {
    pub fn sys_send(&self, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
        let a: SendArgs = typed_args("SEND_MSG", args)?;
        let target = self
            .table
            .get(a.to)
            .ok_or_else(|| SysError::srch(format!("no agent {}", a.to)))?;
        if target.owner != pcb.owner {
            return Err(SysError::acces(format!(
                "agent {} belongs to another user",
                a.to
            )));
        }
        let seq = self.deliver(&target, pcb.pid, None, a.body)?;
        self.table.count(pcb.pid, |p| p.counters.messages_sent += 1);
        Ok(json!({"seq": seq}))
    }

    /// Puts a message in `target`'s inbox (durable with the next flush).
    pub fn deliver(
        &self,
        target: &Pcb,
        from: Pid,
        from_uid: Option<u32>,
        body: String,
    ) -> Result<u64, SysError> {
        if !target.is_live() {
            return Err(SysError::srch(format!(
                "agent {} has terminated",
                target.pid
            )));
        }
        if body.len() > MAX_MESSAGE_BYTES {
            return Err(SysError::msgsize(format!(
                "message of {} bytes exceeds {MAX_MESSAGE_BYTES}",
                body.len()
            )));
        }
        let inbox = &self.store.trees.inbox;
        let queued = &self.store.queues.inbox;
        if !queued.reserve(target.pid, MAX_QUEUED as u64) {
            return Err(SysError::new(
                Errno::EAGAIN,
                format!(
                    "inbox of agent {} is full ({MAX_QUEUED} messages)",
                    target.pid
                ),
            ));
        }
        let stored = self
            .store
            .next_seq()
            .map_err(|e| SysError::io(e.to_string()))
            .and_then(|seq| {
                let msg = Message {
                    seq,
                    from,
                    from_uid,
                    body,
                    ts_ms: now_ms(),
                    kind: None,
                    event: None,
                };
                let bytes = serde_json::to_vec(&msg).map_err(|e| SysError::io(e.to_string()))?;
                inbox
                    .insert(key(target.pid, seq), bytes)
                    .map_err(|e| SysError::io(e.to_string()))?;
                Ok(seq)
            });
        let seq = match stored {
            Ok(seq) => seq,
            Err(e) => {
                queued.remove(target.pid, 1);
                return Err(e);
            }
        };
        if let Some(live) = self.live.get(target.pid) {
            live.inbox.notify_waiters();
        }
        Ok(seq)
    }

    pub async fn sys_recv(&self, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
        let a: RecvMsgArgs = typed_args("RECV_MSG", args)?;
        let max = a.max.unwrap_or(100).clamp(1, 1000);
        let tree = self.store.trees.inbox.clone();
        let live = self
            .live
            .get(pcb.pid)
            .ok_or_else(|| SysError::srch("agent is not running"))?;
        let _one_reader = live.recv_lock.lock().await;
        if let Some(through) = a.ack {
            let acked: Vec<(u64, Message)> = self
                .store
                .range(&tree, pcb.pid, None, usize::MAX)
                .map_err(|e| SysError::io(e.to_string()))?
                .into_iter()
                .filter(|(seq, _)| *seq <= through)
                .collect();
            take(&tree, &self.store.queues.inbox, pcb.pid, &acked)?;
        }
        let msgs: Vec<(u64, Message)> = self
            .wait_queue(pcb.pid, &tree, max, a.wait_ms, QueueKind::Inbox)
            .await?;
        if !a.keep {
            take(&tree, &self.store.queues.inbox, pcb.pid, &msgs)?;
        }
        self.table.count(pcb.pid, |p| {
            p.counters.messages_received += msgs.len() as u64
        });
        let list: Vec<Message> = msgs.into_iter().map(|(_, m)| m).collect();
        Ok(json!({"messages": list}))
    }

    pub fn sys_write_stdout(&self, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
        let a: WriteStdoutArgs = typed_args("SYS_WRITE_STDOUT", args)?;
        if a.data.len() > MAX_MESSAGE_BYTES {
            return Err(SysError::msgsize(format!(
                "data exceeds {MAX_MESSAGE_BYTES} bytes"
            )));
        }
        let Some(target) = pcb.pipe_to else {
            let n = a.data.len();
            for line in a.data.lines() {
                self.log_line(pcb.pid, "stdout", line.to_string());
            }
            return Ok(json!({"written": n}));
        };
        let t = self
            .table
            .get(target)
            .filter(|t| t.is_live())
            .ok_or_else(|| {
                SysError::new(
                    Errno::EPERM,
                    format!("pipe reader {target} has terminated (broken pipe)"),
                )
            })?;
        let stdin = &self.store.trees.stdin;
        let queued = &self.store.queues.stdin;
        if !queued.reserve(t.pid, MAX_QUEUED as u64) {
            return Err(SysError::new(
                Errno::EAGAIN,
                "the pipe is full; retry later",
            ));
        }
        if let Err(e) = self.store.append(stdin, t.pid, &a.data) {
            queued.remove(t.pid, 1);
            return Err(SysError::io(e.to_string()));
        }
        if let Some(live) = self.live.get(t.pid) {
            live.stdin.notify_waiters();
        }
        Ok(json!({"written": a.data.len(), "piped_to": target}))
    }

    pub async fn sys_read_stdin(&self, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
        let a: RecvArgs = typed_args("SYS_READ_STDIN", args)?;
        let max = a.max.unwrap_or(100).clamp(1, 1000);
        let tree = self.store.trees.stdin.clone();
        let live = self
            .live
            .get(pcb.pid)
            .ok_or_else(|| SysError::srch("agent is not running"))?;
        let _one_reader = live.recv_lock.lock().await;
        let chunks: Vec<(u64, String)> = self
            .wait_queue(pcb.pid, &tree, max, a.wait_ms, QueueKind::Stdin)
            .await?;
        take(&tree, &self.store.queues.stdin, pcb.pid, &chunks)?;
        let data: String = chunks.iter().map(|(_, d)| d.as_str()).collect();
        let writers = self
            .table
            .all()
            .iter()
            .filter(|p| p.pipe_to == Some(pcb.pid) && p.is_live())
            .count();
        let eof = chunks.is_empty() && writers == 0;
        Ok(json!({"data": data, "eof": eof}))
    }

    /// Returns up to `max` queued entries, waiting up to `wait_ms` for the
    /// first one. The agent is BLOCKED while it waits.
    async fn wait_queue<T: serde::de::DeserializeOwned>(
        &self,
        pid: Pid,
        tree: &sled::Tree,
        max: usize,
        wait_ms: u64,
        kind: QueueKind,
    ) -> Result<Vec<(u64, T)>, SysError> {
        let read = || -> Result<Vec<(u64, T)>, SysError> {
            self.store
                .range(tree, pid, None, max)
                .map_err(|e| SysError::io(e.to_string()))
        };
        let live = self
            .live
            .get(pid)
            .ok_or_else(|| SysError::srch("agent is not running"))?;
        let first = read()?;
        if !first.is_empty() || wait_ms == 0 {
            return Ok(first);
        }
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(wait_ms.min(MAX_WAIT_MS));
        self.set_activity(pid, State::Blocked, Some(kind.reason()));
        let result = loop {
            let notify = match kind {
                QueueKind::Inbox => &live.inbox,
                QueueKind::Stdin => &live.stdin,
            };
            let arrived = notify.notified();
            let dying = live.dying.notified();
            let entries = read()?;
            if !entries.is_empty() {
                break Ok(entries);
            }
            tokio::select! {
                _ = arrived => {}
                _ = tokio::time::sleep_until(deadline) => break Ok(Vec::new()),
                _ = dying => break Err(SysError::intr("interrupted: the agent is being killed")),
            }
        };
        self.set_activity(pid, State::Running, None);
        result
    }
}

#[derive(Clone, Copy)]
enum QueueKind {
    Inbox,
    Stdin,
}

impl QueueKind {
    fn reason(self) -> &'static str {
        match self {
            QueueKind::Inbox => "RECV_MSG",
            QueueKind::Stdin => "SYS_READ_STDIN",
        }
    }
}

/// Removes delivered entries in one batch. The caller holds the agent's
/// `recv_lock`, so every entry is still there and is removed here only.
fn take<T>(
    tree: &sled::Tree,
    queued: &QueueLengths,
    pid: Pid,
    entries: &[(u64, T)],
) -> Result<(), SysError> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut batch = sled::Batch::default();
    for (seq, _) in entries {
        batch.remove(&key(pid, *seq));
    }
    tree.apply_batch(batch)
        .map_err(|e| SysError::io(e.to_string()))?;
    queued.remove(pid, entries.len() as u64);
    Ok(())
}
