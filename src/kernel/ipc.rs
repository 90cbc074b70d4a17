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
//! then filled ([`InboxSlot::deliver`]), which charges the stored bytes to
//! the recipient's `inbox_bytes`; a reservation that is not filled is given
//! back when it is dropped.
//!
//! Byte quotas: an inbox holds at most `inbox_bytes` and a stdin queue
//! `stdin_bytes` (stored bytes; a full queue answers EAGAIN naming the
//! limit). One RECV_MSG or SYS_READ_STDIN reply carries at most
//! `recv_reply_bytes` of entries (always at least one), with `"more": true`
//! when entries are left.
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
    #[error(
        "inbox of agent {pid} is full: {queued} bytes of inbox_bytes = {cap} used, {bytes} more refused"
    )]
    FullBytes {
        pid: Pid,
        queued: u64,
        bytes: u64,
        cap: u64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<InboxError> for SysError {
    fn from(e: InboxError) -> Self {
        match e {
            InboxError::Terminated(_) => SysError::srch(e.to_string()),
            InboxError::Full(_) | InboxError::FullBytes { .. } => {
                SysError::new(Errno::EAGAIN, e.to_string())
            }
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
        self.reserve_within(target, MAX_QUEUED as u64, target.limits.inbox_bytes)
    }

    /// Like [`Inboxes::reserve`], without the cap: for timer events, which
    /// are bounded by the agent's pending timers and must fire exactly once.
    pub fn reserve_uncapped(self, target: &Pcb) -> Result<InboxSlot<'a>, InboxError> {
        self.reserve_within(target, u64::MAX, u64::MAX)
    }

    fn reserve_within(
        self,
        target: &Pcb,
        cap: u64,
        byte_cap: u64,
    ) -> Result<InboxSlot<'a>, InboxError> {
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
            byte_cap,
            charged: 0,
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
    /// The recipient's `inbox_bytes` (or no cap, for timer events).
    byte_cap: u64,
    /// Bytes charged to the inbox for this message so far.
    charged: u64,
    filled: bool,
}

impl InboxSlot<'_> {
    /// The sequence number the message will have.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Puts the message in the inbox (durable with the next flush) and wakes
    /// a waiting RECV_MSG.
    pub fn deliver(mut self, msg: NewMessage) -> Result<u64, InboxError> {
        let bytes = self.encode(msg)?;
        self.charge(bytes.len())?;
        let tree = &self.inboxes.store.trees.inbox;
        tree.insert(key(self.pid, self.seq), bytes)
            .map_err(StoreError::from)?;
        Ok(self.filled())
    }

    /// Puts the message in the inbox and removes `key` from `tree` in one
    /// transaction: a timer fires exactly once, even across a crash.
    pub fn deliver_removing(
        mut self,
        msg: NewMessage,
        tree: &sled::Tree,
        removed: &[u8],
    ) -> Result<u64, InboxError> {
        use sled::Transactional;
        use sled::transaction::TransactionError;
        let bytes = self.encode(msg)?;
        self.charge(bytes.len())?;
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

    /// Charges the stored message to the recipient's `inbox_bytes`.
    fn charge(&mut self, len: usize) -> Result<(), InboxError> {
        let len = len as u64;
        self.inboxes
            .queued()
            .charge(self.pid, len, self.byte_cap)
            .map_err(|queued| InboxError::FullBytes {
                pid: self.pid,
                queued,
                bytes: len,
                cap: self.byte_cap,
            })?;
        self.charged = len;
        Ok(())
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
            self.inboxes.queued().remove(self.pid, 1, self.charged);
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
        let acked = acked_through(&tree, pcb.pid, through)?;
        take(&tree, &k.store.queues.inbox, pcb.pid, &acked)?;
    }
    let bound = Bound {
        max,
        bytes: pcb.limits.recv_reply_bytes,
    };
    let (msgs, more): (Vec<Entry<Message>>, bool) = k
        .wait_queue(pcb.pid, &tree, bound, a.wait_ms, QueueKind::Inbox)
        .await?;
    if !a.keep {
        take(&tree, &k.store.queues.inbox, pcb.pid, &msgs)?;
    }
    k.table.count(pcb.pid, |p| {
        p.counters.messages_received += msgs.len() as u64
    });
    let list: Vec<Message> = msgs.into_iter().map(|e| e.value).collect();
    Ok(json!({"messages": list, "more": more}))
}

/// The keys and stored sizes of the messages up to `through` (for `ack`),
/// without decoding them.
fn acked_through(tree: &sled::Tree, pid: Pid, through: u64) -> Result<Vec<Entry<()>>, SysError> {
    let mut out = Vec::new();
    for kv in tree.range(key(pid, 0)..=key(pid, through)) {
        let (k, v) = kv.map_err(StoreError::from)?;
        out.push(Entry {
            seq: super::store::seq_of(&k),
            value: (),
            stored: v.len() as u64,
        });
    }
    Ok(out)
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
        if let Some(live) = k.live.get(pcb.pid) {
            let cap = k.log_cap(&pcb.limits);
            for line in a.data.lines() {
                k.log_output(pcb.pid, &live, cap, "stdout", line);
            }
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
    let stored = serde_json::to_vec(&a.data).map_err(StoreError::from)?;
    let len = stored.len() as u64;
    let cap = t.limits.stdin_bytes;
    if let Err(used) = queued.charge(t.pid, len, cap) {
        queued.remove(t.pid, 1, 0);
        return Err(SysError::new(
            Errno::EAGAIN,
            format!(
                "the pipe is full: {used} bytes of stdin_bytes = {cap} of agent {target} used, {len} more refused; retry later"
            ),
        ));
    }
    let inserted = k
        .store
        .next_seq()
        .and_then(|seq| Ok(stdin.insert(key(t.pid, seq), stored)?));
    if let Err(e) = inserted {
        queued.remove(t.pid, 1, len);
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
    let bound = Bound {
        max,
        bytes: pcb.limits.recv_reply_bytes,
    };
    let (chunks, more): (Vec<Entry<String>>, bool) = k
        .wait_queue(pcb.pid, &tree, bound, a.wait_ms, QueueKind::Stdin)
        .await?;
    take(&tree, &k.store.queues.stdin, pcb.pid, &chunks)?;
    let data: String = chunks.iter().map(|e| e.value.as_str()).collect();
    let writers = k
        .table
        .all()
        .iter()
        .filter(|p| p.pipe_to == Some(pcb.pid) && p.is_live())
        .count();
    let eof = chunks.is_empty() && writers == 0;
    Ok(json!({"data": data, "eof": eof, "more": more}))
}

/// One queued entry, with the bytes it takes in the tree.
struct Entry<T> {
    seq: u64,
    value: T,
    stored: u64,
}

/// How much one read of a queue returns.
#[derive(Clone, Copy)]
struct Bound {
    max: usize,
    /// Stored bytes; the first entry is returned whatever its size.
    bytes: u64,
}

/// Reads up to `bound` of `pid`'s entries, oldest first; `true` when
/// entries are left.
fn read_bounded<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    pid: Pid,
    bound: Bound,
) -> Result<(Vec<Entry<T>>, bool), StoreError> {
    let mut out = Vec::new();
    let mut total = 0u64;
    for kv in tree.range(key(pid, 0)..=key(pid, u64::MAX)) {
        let (k, v) = kv?;
        let len = v.len() as u64;
        if out.len() >= bound.max || (!out.is_empty() && total + len > bound.bytes) {
            return Ok((out, true));
        }
        total += len;
        out.push(Entry {
            seq: super::store::seq_of(&k),
            value: serde_json::from_slice(&v)?,
            stored: len,
        });
    }
    Ok((out, false))
}

impl Kernel {
    /// Returns the entries `bound` allows, waiting up to `wait_ms` for the
    /// first one. The agent is BLOCKED while it waits.
    async fn wait_queue<T: serde::de::DeserializeOwned>(
        &self,
        pid: Pid,
        tree: &sled::Tree,
        bound: Bound,
        wait_ms: u64,
        kind: QueueKind,
    ) -> Result<(Vec<Entry<T>>, bool), SysError> {
        let read =
            || -> Result<(Vec<Entry<T>>, bool), SysError> { Ok(read_bounded(tree, pid, bound)?) };
        let live = self
            .live
            .get(pid)
            .ok_or_else(|| SysError::srch("agent is not running"))?;
        let first = read()?;
        if !first.0.is_empty() || wait_ms == 0 {
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
            if !entries.0.is_empty() {
                break Ok(entries);
            }
            tokio::select! {
                _ = arrived => {}
                _ = tokio::time::sleep_until(deadline) => break Ok((Vec::new(), false)),
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
    entries: &[Entry<T>],
) -> Result<(), SysError> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut batch = sled::Batch::default();
    for e in entries {
        batch.remove(&key(pid, e.seq));
    }
    tree.apply_batch(batch).map_err(StoreError::from)?;
    let bytes = entries.iter().map(|e| e.stored).sum();
    queued.remove(pid, entries.len() as u64, bytes);
    Ok(())
}
