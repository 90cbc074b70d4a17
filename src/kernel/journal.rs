//! The per-agent journal (every syscall with its result and timing, every
//! state transition) and the agent log (stdout/stderr lines). Both live in
//! sled under (pid, seq) keys with one global sequence, so `agentos logs`
//! can merge them in order; new entries are also broadcast for `logs -f`.
//!
//! Read-only calls (GETPID, PS, AGENT_INFO, FS_READ, …) changed nothing, so
//! they are not written one by one: each agent's latest ones wait in memory
//! ([`PendingCalls`], at most [`PENDING_MAX_CALLS`] and
//! [`PENDING_MAX_BYTES`]; older ones are counted in an `omitted` entry) and
//! go into the journal, with their own sequence numbers, in the same batch
//! as the agent's next journal entry — its next state-changing call or state
//! transition, at the latest its termination. `agentos logs` shows them
//! from memory meanwhile.

use super::Kernel;
use super::pcb::{Pid, State, now_ms};
use super::store::{StoreError, key};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

/// Bytes charged to an agent's `log_bytes` for every stored output line
/// on top of its text (the key and record around it): a flood of empty
/// lines is bounded too.
pub const LOG_ENTRY_OVERHEAD: u64 = 64;
/// Longest output line stored as one log entry; longer ones are split.
pub const MAX_LOG_LINE: usize = 8192;

/// Longest argument/result text kept in a journal entry.
const MAX_JOURNAL_TEXT: usize = 4096;
/// Read-only calls of one agent kept in memory until its next journal entry.
pub const PENDING_MAX_CALLS: usize = 256;
/// Text (arguments and results) of those calls kept in memory per agent.
pub const PENDING_MAX_BYTES: usize = 32 * 1024;

/// One journal record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JournalEntry {
    Syscall {
        ts_ms: u64,
        call: String,
        args: String,
        status: String,
        /// Error code, when the call failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        result: String,
        duration_us: u64,
    },
    State {
        ts_ms: u64,
        from: State,
        to: State,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Read-only calls that were answered and counted but not kept: more
    /// came between two journal entries than the in-memory buffer holds.
    Omitted {
        /// Time of the last call omitted.
        ts_ms: u64,
        calls: u64,
    },
    /// Older entries removed to keep the agent's journal within its
    /// `journal_bytes` (see [`super::retention`]).
    Trimmed {
        /// Time of the newest entry removed.
        ts_ms: u64,
        entries: u64,
        limit: u64,
    },
}

/// What `agentos logs` shows: one line of output or of the syscall trace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogEvent {
    pub pid: Pid,
    pub seq: u64,
    pub ts_ms: u64,
    /// "stdout", "stderr", "syscall", "state" or "daemon".
    pub stream: String,
    pub text: String,
}

/// A stored stdout/stderr line.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LogLine {
    ts_ms: u64,
    stream: String,
    text: String,
}

/// `clip(v.to_string())` without building the whole text of a large value
/// (a RECV_MSG reply of 1,000 messages is clipped to 4 KiB anyway).
pub fn clip_json(v: &Value) -> String {
    struct Bounded {
        head: Vec<u8>,
        total: usize,
    }
    impl std::io::Write for Bounded {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.total += b.len();
            let room = MAX_JOURNAL_TEXT.saturating_sub(self.head.len());
            self.head.extend_from_slice(&b[..room.min(b.len())]);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = Bounded {
        head: Vec::new(),
        total: 0,
    };
    if serde_json::to_writer(&mut w, v).is_err() {
        return clip(v.to_string());
    }
    let head = match std::str::from_utf8(&w.head) {
        Ok(s) => s,
        // Cut inside a character: keep the whole characters before it.
        Err(e) => std::str::from_utf8(&w.head[..e.valid_up_to()]).unwrap_or_default(),
    };
    if w.total <= MAX_JOURNAL_TEXT {
        head.to_string()
    } else {
        format!("{head}… ({} bytes)", w.total)
    }
}

pub fn clip(s: String) -> String {
    if s.len() <= MAX_JOURNAL_TEXT {
        return s;
    }
    let mut end = MAX_JOURNAL_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

impl JournalEntry {
    pub fn syscall(
        call: &str,
        args: &Value,
        outcome: &Result<Value, crate::abi::SysError>,
        duration_us: u64,
    ) -> Self {
        let (status, error, result) = match outcome {
            Ok(v) => ("SUCCESS".to_string(), None, clip_json(v)),
            Err(e) => (
                "ERROR".to_string(),
                Some(e.code.to_string()),
                clip(e.message.clone()),
            ),
        };
        JournalEntry::Syscall {
            ts_ms: now_ms(),
            call: call.to_string(),
            args: clip_json(args),
            status,
            error,
            result,
            duration_us,
        }
    }

    fn to_log(&self, pid: Pid, seq: u64) -> LogEvent {
        match self {
            JournalEntry::Syscall {
                ts_ms,
                call,
                args,
                status,
                error,
                result,
                duration_us,
            } => LogEvent {
                pid,
                seq,
                ts_ms: *ts_ms,
                stream: "syscall".into(),
                text: format!(
                    "{call} {args} → {} {result} ({duration_us} µs)",
                    error.as_deref().unwrap_or(status)
                ),
            },
            JournalEntry::State {
                ts_ms,
                from,
                to,
                reason,
            } => LogEvent {
                pid,
                seq,
                ts_ms: *ts_ms,
                stream: "state".into(),
                text: match reason {
                    Some(r) => format!("{} → {} ({r})", from.as_str(), to.as_str()),
                    None => format!("{} → {}", from.as_str(), to.as_str()),
                },
            },
            JournalEntry::Omitted { ts_ms, calls } => LogEvent {
                pid,
                seq,
                ts_ms: *ts_ms,
                stream: "syscall".into(),
                text: format!("… {calls} earlier read-only calls not kept"),
            },
            JournalEntry::Trimmed {
                ts_ms,
                entries,
                limit,
            } => LogEvent {
                pid,
                seq,
                ts_ms: *ts_ms,
                stream: "daemon".into(),
                text: format!(
                    "… {entries} earlier journal entries removed (journal_bytes = {limit})"
                ),
            },
        }
    }

    /// When it happened.
    pub fn ts_ms(&self) -> u64 {
        match self {
            JournalEntry::Syscall { ts_ms, .. }
            | JournalEntry::State { ts_ms, .. }
            | JournalEntry::Omitted { ts_ms, .. }
            | JournalEntry::Trimmed { ts_ms, .. } => *ts_ms,
        }
    }

    /// Text held by the entry, for the in-memory bound.
    fn text_len(&self) -> usize {
        match self {
            JournalEntry::Syscall {
                call,
                args,
                error,
                result,
                ..
            } => call.len() + args.len() + error.as_ref().map_or(0, String::len) + result.len(),
            JournalEntry::State { reason, .. } => reason.as_ref().map_or(0, String::len),
            JournalEntry::Omitted { .. } | JournalEntry::Trimmed { .. } => 0,
        }
    }
}

/// One agent's read-only calls not yet in the journal.
#[derive(Default)]
struct Pending {
    calls: VecDeque<(u64, JournalEntry)>,
    bytes: usize,
    /// Calls dropped from the front since the last write, with the sequence
    /// number and time of the last one dropped.
    omitted: u64,
    omitted_seq: u64,
    omitted_ts_ms: u64,
}

impl Pending {
    /// The entries to write or show (those after `after`), oldest first,
    /// omitted ones summarised.
    fn entries(&self, after: Option<u64>) -> Vec<(u64, JournalEntry)> {
        let keep = |seq: u64| after.is_none_or(|a| seq > a);
        let mut out = Vec::with_capacity(self.calls.len() + 1);
        if self.omitted > 0 && keep(self.omitted_seq) {
            out.push((
                self.omitted_seq,
                JournalEntry::Omitted {
                    ts_ms: self.omitted_ts_ms,
                    calls: self.omitted,
                },
            ));
        }
        out.extend(self.calls.iter().filter(|(seq, _)| keep(*seq)).cloned());
        out
    }
}

/// Read-only calls of every agent waiting for that agent's next journal
/// entry (see the module documentation), and each agent's latest denied
/// call while it is the agent's latest entry (for coalescing).
#[derive(Default)]
pub struct PendingCalls {
    map: Mutex<HashMap<Pid, Pending>>,
    denied: Mutex<HashMap<Pid, Denied>>,
}

/// An agent's latest journal entry, a denied call, and how many identical
/// denials it stands for.
struct Denied {
    seq: u64,
    entry: JournalEntry,
    count: u64,
}

/// Denied calls are identical when the call and the refusal are (the
/// arguments may differ: the entry keeps the first call's).
fn same_denial(a: &JournalEntry, b: &JournalEntry) -> bool {
    match (a, b) {
        (
            JournalEntry::Syscall {
                call: c1,
                error: e1,
                result: r1,
                ..
            },
            JournalEntry::Syscall {
                call: c2,
                error: e2,
                result: r2,
                ..
            },
        ) => c1 == c2 && e1 == e2 && r1 == r2,
        _ => false,
    }
}

impl PendingCalls {
    fn denied(&self) -> MutexGuard<'_, HashMap<Pid, Denied>> {
        self.denied.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Another entry follows the agent's latest denial: no more coalescing.
    fn break_chain(&self, pid: Pid) {
        let mut d = self.denied();
        if !d.is_empty() {
            d.remove(&pid);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Pid, Pending>> {
        // Plain buffers: a panic cannot leave one half-updated in a way
        // that matters, so poisoning is ignored.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, pid: Pid, seq: u64, entry: JournalEntry) {
        let len = entry.text_len();
        let mut map = self.lock();
        let p = map.entry(pid).or_default();
        p.calls.push_back((seq, entry));
        p.bytes += len;
        while p.calls.len() > PENDING_MAX_CALLS || p.bytes > PENDING_MAX_BYTES {
            let Some((seq, old)) = p.calls.pop_front() else {
                break;
            };
            p.bytes -= old.text_len();
            p.omitted += 1;
            p.omitted_seq = seq;
            if let JournalEntry::Syscall { ts_ms, .. } = old {
                p.omitted_ts_ms = ts_ms;
            }
        }
    }
}

impl Kernel {
    /// Appends a journal entry (durable with the next group commit), with
    /// the agent's read-only calls waiting in memory before it.
    pub fn journal(&self, pid: Pid, entry: JournalEntry) -> Result<u64, StoreError> {
        self.pending.break_chain(pid);
        let seq = self.store.next_seq()?;
        let bytes = serde_json::to_vec(&entry)?;
        let mut written = super::retention::charge(bytes.len());
        let journal = &self.store.trees.journal;
        let has_pending = self.pending.lock().contains_key(&pid);
        if has_pending {
            // Held while writing, so that a reader (which looks at memory
            // first, then the tree) never misses a call that moves.
            let mut map = self.pending.lock();
            let mut batch = sled::Batch::default();
            if let Some(p) = map.get(&pid) {
                for (s, e) in p.entries(None) {
                    let value = serde_json::to_vec(&e)?;
                    written += super::retention::charge(value.len());
                    batch.insert(&key(pid, s), value);
                }
            }
            batch.insert(&key(pid, seq), bytes);
            journal.apply_batch(batch)?;
            map.remove(&pid);
        } else {
            journal.insert(key(pid, seq), bytes)?;
        }
        self.retain_journal(pid, written)?;
        self.broadcast(pid, seq, &entry);
        Ok(seq)
    }

    /// Records a read-only call: counted by the caller, shown by `agentos
    /// logs` at once, written to the journal with the agent's next entry.
    pub fn journal_read_only(&self, pid: Pid, entry: JournalEntry) -> Result<u64, StoreError> {
        self.pending.break_chain(pid);
        let seq = self.store.next_seq()?;
        self.broadcast(pid, seq, &entry);
        self.pending.push(pid, seq, entry);
        Ok(seq)
    }

    /// Journals a denied call. When the agent's latest entry is the same
    /// denial, that entry is rewritten in place to count it ("denied N
    /// times", with the time of the latest) instead of a new one being
    /// added: a flood of identical refusals takes one entry.
    pub fn journal_denied(&self, pid: Pid, entry: JournalEntry) -> Result<u64, StoreError> {
        {
            let mut denied = self.pending.denied();
            if let Some(d) = denied.get_mut(&pid)
                && same_denial(&d.entry, &entry)
            {
                d.count += 1;
                let mut merged = d.entry.clone();
                if let (
                    JournalEntry::Syscall { ts_ms, result, .. },
                    JournalEntry::Syscall { ts_ms: now, .. },
                ) = (&mut merged, &entry)
                {
                    *ts_ms = *now;
                    *result = format!("{result} (denied {} times)", d.count);
                }
                self.store
                    .trees
                    .journal
                    .insert(key(pid, d.seq), serde_json::to_vec(&merged)?)?;
                self.broadcast(pid, d.seq, &merged);
                return Ok(d.seq);
            }
        }
        let seq = self.journal(pid, entry.clone())?;
        self.pending.denied().insert(
            pid,
            Denied {
                seq,
                entry,
                count: 1,
            },
        );
        Ok(seq)
    }

    /// Wakes `agentos logs -f` followers, if there are any.
    fn broadcast(&self, pid: Pid, seq: u64, entry: &JournalEntry) {
        if self.logs.receiver_count() > 0 {
            let _ = self.logs.send(entry.to_log(pid, seq));
        }
    }

    /// Journals a state transition.
    pub fn journal_state(&self, pid: Pid, from: State, to: State, reason: Option<String>) {
        let entry = JournalEntry::State {
            ts_ms: now_ms(),
            from,
            to,
            reason,
        };
        if let Err(e) = self.journal(pid, entry) {
            tracing::error!(pid, "journal write failed: {e}");
        }
    }

    /// The output bytes stored for an agent with these limits: its
    /// `log_bytes`, within the daemon's own per-agent cap.
    pub fn log_cap(&self, limits: &crate::abi::limits::Limits) -> u64 {
        limits.log_bytes.min(self.config.log_bytes_per_agent)
    }

    /// Stores one line of the agent's output (stdout, stderr or
    /// SYS_WRITE_STDOUT) against `cap` (see [`Kernel::log_cap`]): each piece
    /// of at most [`MAX_LOG_LINE`] bytes is charged its length plus
    /// [`LOG_ENTRY_OVERHEAD`]; the piece that would pass the cap is
    /// replaced by one notice naming the limit, and later output is dropped.
    pub fn log_output(
        &self,
        pid: Pid,
        live: &super::live::Live,
        cap: u64,
        stream: &str,
        text: &str,
    ) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut rest = text;
        loop {
            let mut end = rest.len().min(MAX_LOG_LINE);
            while !rest.is_char_boundary(end) {
                end -= 1;
            }
            let (piece, tail) = rest.split_at(end);
            let cost = piece.len() as u64 + LOG_ENTRY_OVERHEAD;
            let before = live.logged_bytes.fetch_add(cost, Relaxed);
            if before > cap {
                return;
            }
            if before + cost > cap {
                // The one piece that crosses the cap (the counter only grows).
                self.log_line(
                    pid,
                    "daemon",
                    format!(
                        "log_bytes = {cap} reached: {before} bytes of output stored; further output is dropped"
                    ),
                );
                return;
            }
            self.log_line(pid, stream, piece.to_string());
            if tail.is_empty() {
                return;
            }
            rest = tail;
        }
    }

    /// Appends an output line of the agent (not waited for: output is not an
    /// acknowledgement).
    pub fn log_line(&self, pid: Pid, stream: &str, text: String) {
        // Below the low-water mark an agent's output is not kept (floor.rs);
        // the daemon's own lines are.
        if stream != "daemon" && self.floor.check("output").is_err() {
            self.metrics.output_dropped_at_floor();
            return;
        }
        let line = LogLine {
            ts_ms: now_ms(),
            stream: stream.to_string(),
            text,
        };
        match self.store.append(&self.store.trees.log, pid, &line) {
            Ok(seq) => {
                if self.logs.receiver_count() > 0 {
                    let _ = self.logs.send(LogEvent {
                        pid,
                        seq,
                        ts_ms: line.ts_ms,
                        stream: line.stream,
                        text: line.text,
                    });
                }
            }
            Err(e) => tracing::error!(pid, "log write failed: {e}"),
        }
    }

    /// A page of the stored log of `pid` after sequence `after`: output
    /// lines and the syscall trace (read-only calls still in memory
    /// included) merged in sequence order, the last `limit` of them, and
    /// how many earlier ones (after `after`) were left out. Only what is
    /// returned is decoded: the trees are scanned from the end, and the
    /// skipped entries are counted by key.
    pub fn read_log_page(
        &self,
        pid: Pid,
        after: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<LogEvent>, u64), StoreError> {
        let pending = self.pending_entries(pid, after);
        let lines = self
            .store
            .range_tail(&self.store.trees.log, pid, after, limit)?;
        let entries = self
            .store
            .range_tail(&self.store.trees.journal, pid, after, limit)?;
        let held: Vec<u64> = pending.iter().map(|(seq, _)| *seq).collect();
        let mut events = merge(pid, lines, entries, pending);
        let skip = events.len().saturating_sub(limit);
        events.drain(..skip);
        let skipped = match events.first() {
            Some(first) if events.len() >= limit => {
                let before = first.seq;
                let count = |tree: &sled::Tree| self.store.count_between(tree, pid, after, before);
                let held = held.iter().filter(|seq| **seq < before).count();
                (count(&self.store.trees.log) + count(&self.store.trees.journal) + held) as u64
            }
            _ => 0,
        };
        Ok((events, skipped))
    }

    /// The first `limit` events of the stored log of `pid` after sequence
    /// `after` (as [`Self::read_log_page`], read forwards: `logs --follow`).
    pub fn read_log_after(
        &self,
        pid: Pid,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<LogEvent>, StoreError> {
        let pending = self.pending_entries(pid, after);
        let lines = self.store.range(&self.store.trees.log, pid, after, limit)?;
        let entries = self
            .store
            .range(&self.store.trees.journal, pid, after, limit)?;
        let mut events = merge(pid, lines, entries, pending);
        events.truncate(limit);
        Ok(events)
    }

    /// Calls of `pid` still in memory after `after`. Read before the trees:
    /// a call that moves to the tree meanwhile is then seen twice (and
    /// shown once), never missed.
    fn pending_entries(&self, pid: Pid, after: Option<u64>) -> Vec<(u64, JournalEntry)> {
        self.pending
            .lock()
            .get(&pid)
            .map(|p| p.entries(after))
            .unwrap_or_default()
    }

    /// For LLM agents (`has_model`), keeps every call with its full
    /// arguments and outcome in the `turns` tree, from which the runtime
    /// rebuilds its context after a restart. Durable with the call's own
    /// flush.
    pub fn record_turn(
        &self,
        pid: Pid,
        has_model: bool,
        call: Option<crate::abi::calls::Call>,
        args: &Value,
        outcome: &Result<Value, crate::abi::SysError>,
    ) -> Result<(), StoreError> {
        use crate::abi::calls::Call;
        let Some(call) = call else { return Ok(()) };
        if call == Call::AGENT_INFO || !has_model {
            return Ok(());
        }
        // The messages of an inference are the context itself: not kept.
        let args = if call == Call::LLM_INFER {
            Value::Null
        } else {
            args.clone()
        };
        let record = match outcome {
            Ok(v) => serde_json::json!({"call": call.name(), "args": args, "result": v}),
            Err(e) => serde_json::json!({"call": call.name(), "args": args, "error": e}),
        };
        self.store.append(&self.store.trees.turns, pid, &record)?;
        Ok(())
    }

    /// The journal of `pid`, oldest first, read-only calls still in memory
    /// included.
    pub fn read_journal(&self, pid: Pid) -> Result<Vec<(u64, JournalEntry)>, StoreError> {
        let pending = self
            .pending
            .lock()
            .get(&pid)
            .map(|p| p.entries(None))
            .unwrap_or_default();
        let mut entries: Vec<(u64, JournalEntry)> =
            self.store
                .range(&self.store.trees.journal, pid, None, usize::MAX)?;
        entries.extend(pending);
        entries.sort_by_key(|(seq, _)| *seq);
        entries.dedup_by_key(|(seq, _)| *seq);
        Ok(entries)
    }
}

/// Output lines and trace entries of `pid` as log events in sequence
/// order, each once.
fn merge(
    pid: Pid,
    lines: Vec<(u64, LogLine)>,
    entries: Vec<(u64, JournalEntry)>,
    pending: Vec<(u64, JournalEntry)>,
) -> Vec<LogEvent> {
    let mut events: Vec<LogEvent> = lines
        .into_iter()
        .map(|(seq, l)| LogEvent {
            pid,
            seq,
            ts_ms: l.ts_ms,
            stream: l.stream,
            text: l.text,
        })
        .chain(
            entries
                .into_iter()
                .chain(pending)
                .map(|(seq, e)| e.to_log(pid, seq)),
        )
        .collect();
    events.sort_by_key(|e| e.seq);
    events.dedup_by_key(|e| e.seq);
    events
}
