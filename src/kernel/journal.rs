//! The per-agent journal (every syscall with its result and timing, every
//! state transition) and the agent log (stdout/stderr lines). Both live in
//! sled under (pid, seq) keys with one global sequence, so `agentos logs`
//! can merge them in order; new entries are also broadcast for `logs -f`.

use super::Kernel;
use super::pcb::{Pid, State, now_ms};
use super::store::StoreError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest argument/result text kept in a journal entry.
const MAX_JOURNAL_TEXT: usize = 4096;

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
            Ok(v) => ("SUCCESS".to_string(), None, clip(v.to_string())),
            Err(e) => (
                "ERROR".to_string(),
                Some(e.code.to_string()),
                clip(e.message.clone()),
            ),
        };
        JournalEntry::Syscall {
            ts_ms: now_ms(),
            call: call.to_string(),
            args: clip(args.to_string()),
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
        }
    }
}

impl Kernel {
    /// Appends a journal entry (durable with the next group commit).
    pub fn journal(&self, pid: Pid, entry: JournalEntry) -> Result<u64, StoreError> {
        let seq = self.store.append(&self.store.trees.journal, pid, &entry)?;
        let _ = self.logs.send(entry.to_log(pid, seq));
        Ok(seq)
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

    /// Appends an output line of the agent (not waited for: output is not an
    /// acknowledgement).
    pub fn log_line(&self, pid: Pid, stream: &str, text: String) {
        let line = LogLine {
            ts_ms: now_ms(),
            stream: stream.to_string(),
            text,
        };
        match self.store.append(&self.store.trees.log, pid, &line) {
            Ok(seq) => {
                let _ = self.logs.send(LogEvent {
                    pid,
                    seq,
                    ts_ms: line.ts_ms,
                    stream: line.stream,
                    text: line.text,
                });
            }
            Err(e) => tracing::error!(pid, "log write failed: {e}"),
        }
    }

    /// The stored log of `pid` after sequence `after`: output lines and the
    /// syscall trace merged in sequence order; the last `tail` events if given.
    pub fn read_log(
        &self,
        pid: Pid,
        after: Option<u64>,
        tail: Option<usize>,
    ) -> Result<Vec<LogEvent>, StoreError> {
        let lines: Vec<(u64, LogLine)> =
            self.store
                .range(&self.store.trees.log, pid, after, usize::MAX)?;
        let entries: Vec<(u64, JournalEntry)> =
            self.store
                .range(&self.store.trees.journal, pid, after, usize::MAX)?;
        let mut events: Vec<LogEvent> = lines
            .into_iter()
            .map(|(seq, l)| LogEvent {
                pid,
                seq,
                ts_ms: l.ts_ms,
                stream: l.stream,
                text: l.text,
            })
            .chain(entries.into_iter().map(|(seq, e)| e.to_log(pid, seq)))
            .collect();
        events.sort_by_key(|e| e.seq);
        if let Some(n) = tail {
            let skip = events.len().saturating_sub(n);
            events.drain(..skip);
        }
        Ok(events)
    }

    /// For LLM agents, keeps every call with its full arguments and
    /// outcome in the `turns` tree, from which the runtime rebuilds its
    /// context after a restart. Durable with the call's own flush.
    pub fn record_turn(
        &self,
        pid: Pid,
        call: Option<crate::abi::calls::Call>,
        args: &Value,
        outcome: &Result<Value, crate::abi::SysError>,
    ) -> Result<(), StoreError> {
        use crate::abi::calls::Call;
        let Some(call) = call else { return Ok(()) };
        if call == Call::AGENT_INFO || self.table.get(pid).is_none_or(|p| p.model.is_none()) {
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

    /// The journal of `pid`, oldest first.
    pub fn read_journal(&self, pid: Pid) -> Result<Vec<(u64, JournalEntry)>, StoreError> {
        self.store
            .range(&self.store.trees.journal, pid, None, usize::MAX)
    }
}
