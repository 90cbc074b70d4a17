//! Messages and pipes: SEND_MSG / RECV_MSG over the durable inbox, and
//! SYS_WRITE_STDOUT / SYS_READ_STDIN over the durable stdin queue that
//! `pipe_to` wires between agents.
//!
//! Delivery rule: a message is in the recipient's inbox before SEND_MSG is
//! acknowledged (the dispatcher flushes before replying), and RECV_MSG
//! removes exactly the messages its reply carries, in the same flush as the
//! journal entry that records them.
//!
//! One writer: everything that lands in an inbox (SEND_MSG, admin messages,
//! webhook requests, timer events) goes through [`Inboxes`]: a place is
//! reserved against the cap of [`MAX_QUEUED`] first ([`Inboxes::reserve`]),
//! then filled ([`InboxSlot::deliver`]); a reservation that is not filled is
//! given back when it is dropped.
//!
//! The handlers here follow the syscall convention of
//! [`crate::kernel::syscalls`]: `(kernel, caller's PCB, arguments)`.

use super::Kernel;
use super::live::LiveAgents;
use super::pcb::{Pcb, Pid, State, now_ms};
use super::store::{QueueLengths, Store, StoreError, key};
use crate::abi::calls::{RecvArgs, RecvMsgArgs, SendArgs, WriteStdoutArgs};
use crate::abi::wire::typed_args;
use crate::abi::{Errno, SysError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
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

/// A message about to be delivered: the inbox gives it its sequence number
/// and time stamp.
#[derive(Debug, Clone, Default)]
pub struct NewMessage {
    pub from: Pid,
    pub from_uid: Option<u32>,
    pub body: String,
    pub kind: Option<String>,
    pub event: Option<Value>,
}

/// Why a message could not be put in an inbox.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("agent {0} has terminated")]
    Terminated(Pid),
    #[error("inbox of agent {0} is full ({MAX_QUEUED} messages)")]
    Full(Pid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<InboxError> for SysError {
    fn from(e: InboxError) -> Self {
        match e {
            InboxError::Terminated(_) => SysError::srch(e.to_string()),
            InboxError::Full(_) => SysError::new(Errno::EAGAIN, e.to_string()),
            InboxError::Store(e) => e.into(),
        }
    }
}

/// The inboxes of all agents: the one writer of the `inbox` tree.
#[derive(Clone, Copy)]
pub struct Inboxes<'a> {
    store: &'a Store,
    live: &'a LiveAgents,
}

impl<'a> Inboxes<'a> {
    pub fn new(store: &'a Store, live: &'a LiveAgents) -> Self {
        Inboxes { store, live }
    }

    /// Reserves a place in `target`'s inbox and the sequence number of the
    /// message that will take it; refused when [`MAX_QUEUED`] messages are
    /// waiting already (counting the places reserved and not yet filled).
    pub fn reserve(self, target: &Pcb) -> Result<InboxSlot<'a>, InboxError> {
        self.reserve_within(target, MAX_QUEUED as u64)
    }

    /// Like [`Inboxes::reserve`], without the cap: for timer events, which
    /// are bounded by the agent's pending timers and must fire exactly once.
    pub fn reserve_uncapped(self, target: &Pcb) -> Result<InboxSlot<'a>, InboxError> {
        self.reserve_within(target, u64::MAX)
    }

    fn reserve_within(self, target: &Pcb, cap: u64) -> Result<InboxSlot<'a>, InboxError> {
        if !target.is_live() {
            return Err(InboxError::Terminated(target.pid));
        }
        if !self.store.queues.inbox.reserve(target.pid, cap) {
            return Err(InboxError::Full(target.pid));
        }
        let mut slot = InboxSlot {
            inboxes: self,
            pid: target.pid,
            seq: 0,
            filled: false,
        };
        // On error the slot is dropped unfilled, which gives the place back.
        slot.seq = self.store.next_seq()?;
        Ok(slot)
    }

    fn queued(&self) -> &'a QueueLengths {
        &self.store.queues.inbox
    }
}

/// A place reserved in one agent's inbox. Dropped without being filled, it
/// is given back.
#[must_use = "a reserved inbox place is given back when dropped"]
pub struct InboxSlot<'a> {
    inboxes: Inboxes<'a>,
    pid: Pid,
    seq: u64,
    filled: bool,
}

impl InboxSlot<'_> {
    /// The sequence number the message will have.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Puts the message in the inbox (durable with the next flush) and wakes
    /// a waiting RECV_MSG.
    pub fn deliver(self, msg: NewMessage) -> Result<u64, InboxError> {
        let bytes = self.encode(msg)?;
        let tree = &self.inboxes.store.trees.inbox;
        tree.insert(key(self.pid, self.seq), bytes)
            .map_err(StoreError::from)?;
        Ok(self.filled())
    }

    /// Puts the message in the inbox and removes `key` from `tree` in one
    /// transaction: a timer fires exactly once, even across a crash.
    pub fn deliver_removing(
        self,
        msg: NewMessage,
        tree: &sled::Tree,
        removed: &[u8],
    ) -> Result<u64, InboxError> {
        use sled::Transactional;
        use sled::transaction::TransactionError;
        let bytes = self.encode(msg)?;
        let inbox_key = key(self.pid, self.seq);
        let result: sled::transaction::TransactionResult<(), ()> =
            (&self.inboxes.store.trees.inbox, tree).transaction(|(inbox, other)| {
                inbox.insert(&inbox_key, bytes.as_slice())?;
                other.remove(removed)?;
                Ok(())
            });
        result.map_err(|e| match e {
            TransactionError::Storage(e) => StoreError::Sled(e),
            TransactionError::Abort(()) => StoreError::Transaction("aborted".into()),
        })?;
        Ok(self.filled())
    }

    fn encode(&self, msg: NewMessage) -> Result<Vec<u8>, StoreError> {
        let msg = Message {
            seq: self.seq,
            from: msg.from,
            from_uid: msg.from_uid,
            body: msg.body,
            ts_ms: now_ms(),
            kind: msg.kind,
            event: msg.event,
        };
        Ok(serde_json::to_vec(&msg)?)
    }

    /// Marks the place taken and wakes the agent's RECV_MSG.
    fn filled(mut self) -> u64 {
        self.filled = true;
        if let Some(live) = self.inboxes.live.get(self.pid) {
            live.inbox.notify_waiters();
        }
        self.seq
    }
}

impl Drop for InboxSlot<'_> {
    fn drop(&mut self) {
        if !self.filled {
            self.inboxes.queued().remove(self.pid, 1);
        }
    }
}

/// SEND_MSG.
pub fn send_msg(k: &Arc<Kernel>, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
    let a: SendArgs = typed_args("SEND_MSG", args)?;
    let target = k
        .table
        .get(a.to)
        .ok_or_else(|| SysError::srch(format!("no agent {}", a.to)))?;
    if target.owner != pcb.owner {
        return Err(SysError::acces(format!(
            "agent {} belongs to another user",
            a.to
        )));
    }
    let seq = k.deliver(&target, pcb.pid, None, a.body)?;
    k.table.count(pcb.pid, |p| p.counters.messages_sent += 1);
    Ok(json!({"seq": seq}))
}

impl Kernel {
    /// The inboxes, for delivering into them.
    pub fn inboxes(&self) -> Inboxes<'_> {
        Inboxes::new(&self.store, &self.live)
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
            return Err(InboxError::Terminated(target.pid).into());
        }
        self.floor.check("a message")?;
        if body.len() > MAX_MESSAGE_BYTES {
            return Err(SysError::msgsize(format!(
                "message of {} bytes exceeds {MAX_MESSAGE_BYTES}",
                body.len()
            )));
        }
        let slot = self.inboxes().reserve(target)?;
        Ok(slot.deliver(NewMessage {
            from,
            from_uid,
            body,
            ..NewMessage::default()
        })?)
    }
}

/// RECV_MSG.
pub async fn recv_msg(k: &Arc<Kernel>, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
    let a: RecvMsgArgs = typed_args("RECV_MSG", args)?;
    let max = a.max.unwrap_or(100).clamp(1, 1000);
    let tree = k.store.trees.inbox.clone();
    let live = k
        .live
        .get(pcb.pid)
        .ok_or_else(|| SysError::srch("agent is not running"))?;
    let _one_reader = live.recv_lock.lock().await;
    if let Some(through) = a.ack {
        let acked: Vec<(u64, Message)> = k
            .store
            .range(&tree, pcb.pid, None, usize::MAX)?
            .into_iter()
            .filter(|(seq, _)| *seq <= through)
            .collect();
        take(&tree, &k.store.queues.inbox, pcb.pid, &acked)?;
    }
    let msgs: Vec<(u64, Message)> = k
        .wait_queue(pcb.pid, &tree, max, a.wait_ms, QueueKind::Inbox)
        .await?;
    if !a.keep {
        take(&tree, &k.store.queues.inbox, pcb.pid, &msgs)?;
    }
    k.table.count(pcb.pid, |p| {
        p.counters.messages_received += msgs.len() as u64
    });
    let list: Vec<Message> = msgs.into_iter().map(|(_, m)| m).collect();
    Ok(json!({"messages": list}))
}

/// SYS_WRITE_STDOUT.
pub fn write_stdout(k: &Arc<Kernel>, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
    let a: WriteStdoutArgs = typed_args("SYS_WRITE_STDOUT", args)?;
    if a.data.len() > MAX_MESSAGE_BYTES {
        return Err(SysError::msgsize(format!(
            "data exceeds {MAX_MESSAGE_BYTES} bytes"
        )));
    }
    let Some(target) = pcb.pipe_to else {
        let n = a.data.len();
        for line in a.data.lines() {
            k.log_line(pcb.pid, "stdout", line.to_string());
        }
        return Ok(json!({"written": n}));
    };
    let t = k.table.get(target).filter(|t| t.is_live()).ok_or_else(|| {
        SysError::new(
            Errno::EPERM,
            format!("pipe reader {target} has terminated (broken pipe)"),
        )
    })?;
    let stdin = &k.store.trees.stdin;
    let queued = &k.store.queues.stdin;
    if !queued.reserve(t.pid, MAX_QUEUED as u64) {
        return Err(SysError::new(
            Errno::EAGAIN,
            "the pipe is full; retry later",
        ));
    }
    if let Err(e) = k.store.append(stdin, t.pid, &a.data) {
        queued.remove(t.pid, 1);
        return Err(e.into());
    }
    if let Some(live) = k.live.get(t.pid) {
        live.stdin.notify_waiters();
    }
    Ok(json!({"written": a.data.len(), "piped_to": target}))
}

/// SYS_READ_STDIN.
pub async fn read_stdin(k: &Arc<Kernel>, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
    let a: RecvArgs = typed_args("SYS_READ_STDIN", args)?;
    let max = a.max.unwrap_or(100).clamp(1, 1000);
    let tree = k.store.trees.stdin.clone();
    let live = k
        .live
        .get(pcb.pid)
        .ok_or_else(|| SysError::srch("agent is not running"))?;
    let _one_reader = live.recv_lock.lock().await;
    let chunks: Vec<(u64, String)> = k
        .wait_queue(pcb.pid, &tree, max, a.wait_ms, QueueKind::Stdin)
        .await?;
    take(&tree, &k.store.queues.stdin, pcb.pid, &chunks)?;
    let data: String = chunks.iter().map(|(_, d)| d.as_str()).collect();
    let writers = k
        .table
        .all()
        .iter()
        .filter(|p| p.pipe_to == Some(pcb.pid) && p.is_live())
        .count();
    let eof = chunks.is_empty() && writers == 0;
    Ok(json!({"data": data, "eof": eof}))
}

impl Kernel {
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
        let read =
            || -> Result<Vec<(u64, T)>, SysError> { Ok(self.store.range(tree, pid, None, max)?) };
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
    tree.apply_batch(batch).map_err(StoreError::from)?;
    queued.remove(pid, entries.len() as u64);
    Ok(())
}
