//! Resource limits of an agent, as stored in its PCB and as requested on
//! spawn (part of the wire contract: SPAWN_AGENT's `limits` object and the
//! admin protocol's spawn request carry a [`LimitsPatch`]).

use serde::{Deserialize, Serialize};

/// Why a requested limit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("limit {0} must be greater than 0")]
    NotPositive(&'static str),
    #[error(
        "limit {limit} = {value} exceeds the allowed {ceiling}{}",
        if *unlimited { " (0 would mean unlimited)" } else { "" }
    )]
    Exceeds {
        limit: &'static str,
        value: u64,
        ceiling: u64,
        /// The request was 0, which means unlimited for this limit.
        unlimited: bool,
    },
}

/// Resource limits of one agent. A child's limits never exceed its parent's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// cgroup memory limit.
    pub memory_bytes: u64,
    /// cgroup pids limit (processes and threads).
    pub pids: u64,
    /// CPU quota in percent of one core (100 = one core).
    pub cpu_percent: u64,
    /// Wall-clock lifetime in seconds; 0 = unlimited.
    pub wall_time_s: u64,
    /// Bytes the workspace may hold (enforced on FS_WRITE; RLIMIT_FSIZE bounds direct writes per file).
    pub workspace_bytes: u64,
    /// Largest file FS_WRITE writes.
    pub max_file_bytes: u64,
    /// Largest read FS_READ returns.
    pub max_read_bytes: u64,
    /// Open file descriptors (RLIMIT_NOFILE).
    pub nofile: u64,
    /// Syscalls per second over fd 3; 0 = unlimited.
    pub syscalls_per_s: u64,
    /// Size of the private /tmp.
    pub tmp_bytes: u64,
    /// LLM tokens (prompt + completion) the agent may use; 0 = unlimited.
    #[serde(default)]
    pub budget_tokens: u64,
    /// Inferences (LLM_INFER calls) the agent may make; 0 = unlimited
    /// (the built-in runtime then stops at its model's `max_turns`).
    #[serde(default)]
    pub max_turns: u64,
    /// Bytes of messages (and events) waiting in the agent's inbox.
    #[serde(default = "default_inbox_bytes")]
    pub inbox_bytes: u64,
    /// Bytes of piped data waiting on the agent's stdin.
    #[serde(default = "default_stdin_bytes")]
    pub stdin_bytes: u64,
    /// Bytes of output stored for the agent: stdout, stderr and
    /// SYS_WRITE_STDOUT together, each line charged its length plus
    /// [`LOG_ENTRY_OVERHEAD`](crate::kernel::journal::LOG_ENTRY_OVERHEAD).
    #[serde(default = "default_log_bytes")]
    pub log_bytes: u64,
    /// Bytes (keys, values and metadata) of the agent's private memory
    /// collection.
    #[serde(default = "default_memory_store_bytes")]
    pub memory_store_bytes: u64,
    /// Largest RECV_MSG / SYS_READ_STDIN reply; fewer messages are returned,
    /// with `"more": true`.
    #[serde(default = "default_recv_reply_bytes")]
    pub recv_reply_bytes: u64,
    /// Reply bytes queued for the agent's connection and not yet written;
    /// above it the daemon stops reading the agent's requests.
    #[serde(default = "default_reply_bytes_in_flight")]
    pub reply_bytes_in_flight: u64,
    /// Bytes of journal entries (its syscall trace and state changes) kept
    /// about the agent; past it the oldest are removed.
    #[serde(default = "default_journal_bytes")]
    pub journal_bytes: u64,
    /// Audit entries kept about the agent (the oldest go first); repeated
    /// identical denials share one entry.
    #[serde(default = "default_audit_entries")]
    pub audit_entries: u64,
    /// Live agents below this one at any depth; the limit of every
    /// ancestor (the root's first) bounds its whole tree.
    #[serde(default = "default_max_descendants")]
    pub max_descendants: u64,
    /// Levels of agents below this one (1: children only, no
    /// grandchildren).
    #[serde(default = "default_max_depth")]
    pub max_depth: u64,
}

/// Default of [`Limits::inbox_bytes`]: 16 MiB.
pub const DEFAULT_INBOX_BYTES: u64 = 16 << 20;
/// Default of [`Limits::stdin_bytes`]: 16 MiB.
pub const DEFAULT_STDIN_BYTES: u64 = 16 << 20;
/// Default of [`Limits::log_bytes`]: 16 MiB.
pub const DEFAULT_LOG_BYTES: u64 = 16 << 20;
/// Default of [`Limits::memory_store_bytes`]: 64 MiB.
pub const DEFAULT_MEMORY_STORE_BYTES: u64 = 64 << 20;
/// Default of [`Limits::recv_reply_bytes`]: 4 MiB.
pub const DEFAULT_RECV_REPLY_BYTES: u64 = 4 << 20;
/// Default of [`Limits::reply_bytes_in_flight`]: 8 MiB.
pub const DEFAULT_REPLY_BYTES_IN_FLIGHT: u64 = 8 << 20;
/// Default of [`Limits::audit_entries`].
pub const DEFAULT_AUDIT_ENTRIES: u64 = 1000;
/// Default of [`Limits::journal_bytes`]: 16 MiB.
pub const DEFAULT_JOURNAL_BYTES: u64 = 16 << 20;
/// Default of [`Limits::max_descendants`].
pub const DEFAULT_MAX_DESCENDANTS: u64 = 16;
/// Default of [`Limits::max_depth`].
pub const DEFAULT_MAX_DEPTH: u64 = 4;

fn default_inbox_bytes() -> u64 {
    DEFAULT_INBOX_BYTES
}
fn default_stdin_bytes() -> u64 {
    DEFAULT_STDIN_BYTES
}
fn default_log_bytes() -> u64 {
    DEFAULT_LOG_BYTES
}
fn default_memory_store_bytes() -> u64 {
    DEFAULT_MEMORY_STORE_BYTES
}
fn default_recv_reply_bytes() -> u64 {
    DEFAULT_RECV_REPLY_BYTES
}
fn default_reply_bytes_in_flight() -> u64 {
    DEFAULT_REPLY_BYTES_IN_FLIGHT
}
fn default_audit_entries() -> u64 {
    DEFAULT_AUDIT_ENTRIES
}
fn default_journal_bytes() -> u64 {
    DEFAULT_JOURNAL_BYTES
}
fn default_max_descendants() -> u64 {
    DEFAULT_MAX_DESCENDANTS
}
fn default_max_depth() -> u64 {
    DEFAULT_MAX_DEPTH
}

/// A partial set of limits, as given on spawn; absent fields are inherited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsPatch {
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    pub cpu_percent: Option<u64>,
    pub wall_time_s: Option<u64>,
    pub workspace_bytes: Option<u64>,
    pub max_file_bytes: Option<u64>,
    pub max_read_bytes: Option<u64>,
    pub nofile: Option<u64>,
    pub syscalls_per_s: Option<u64>,
    pub tmp_bytes: Option<u64>,
    pub budget_tokens: Option<u64>,
    #[serde(default)]
    pub max_turns: Option<u64>,
    #[serde(default)]
    pub inbox_bytes: Option<u64>,
    #[serde(default)]
    pub stdin_bytes: Option<u64>,
    #[serde(default)]
    pub log_bytes: Option<u64>,
    #[serde(default)]
    pub memory_store_bytes: Option<u64>,
    #[serde(default)]
    pub recv_reply_bytes: Option<u64>,
    #[serde(default)]
    pub reply_bytes_in_flight: Option<u64>,
    #[serde(default)]
    pub journal_bytes: Option<u64>,
    #[serde(default)]
    pub audit_entries: Option<u64>,
    #[serde(default)]
    pub max_descendants: Option<u64>,
    #[serde(default)]
    pub max_depth: Option<u64>,
}

macro_rules! for_each_limit {
    ($m:ident) => {
        $m!(memory_bytes, false);
        $m!(pids, false);
        $m!(cpu_percent, false);
        $m!(wall_time_s, true);
        $m!(workspace_bytes, false);
        $m!(max_file_bytes, false);
        $m!(max_read_bytes, false);
        $m!(nofile, false);
        $m!(syscalls_per_s, true);
        $m!(tmp_bytes, false);
        $m!(budget_tokens, true);
        $m!(max_turns, true);
        $m!(inbox_bytes, false);
        $m!(stdin_bytes, false);
        $m!(log_bytes, false);
        $m!(memory_store_bytes, false);
        $m!(recv_reply_bytes, false);
        $m!(reply_bytes_in_flight, false);
        $m!(journal_bytes, false);
        $m!(audit_entries, false);
        $m!(max_descendants, false);
        $m!(max_depth, false);
    };
}

impl Limits {
    /// Applies `patch` with no ceiling (root may raise limits above a
    /// profile); values must still be valid.
    pub fn overridden(&self, patch: &LimitsPatch) -> Result<Limits, LimitError> {
        let mut out = *self;
        macro_rules! apply {
            ($f:ident, $zero_unlimited:expr) => {
                if let Some(v) = patch.$f {
                    if !$zero_unlimited && v == 0 {
                        return Err(LimitError::NotPositive(stringify!($f)));
                    }
                    out.$f = v;
                }
            };
        }
        for_each_limit!(apply);
        Ok(out)
    }

    /// Applies `patch` on top of `self` (the ceiling), refusing any value
    /// above the ceiling. For limits where 0 means "unlimited", a ceiling of
    /// 0 admits anything and a requested 0 is only allowed under a 0 ceiling.
    pub fn narrow(&self, patch: &LimitsPatch) -> Result<Limits, LimitError> {
        let mut out = *self;
        macro_rules! apply {
            ($f:ident, $zero_unlimited:expr) => {
                if let Some(v) = patch.$f {
                    let ceiling = self.$f;
                    let ok = if $zero_unlimited {
                        ceiling == 0 || (v != 0 && v <= ceiling)
                    } else {
                        v <= ceiling
                    };
                    if !ok {
                        return Err(LimitError::Exceeds {
                            limit: stringify!($f),
                            value: v,
                            ceiling,
                            unlimited: $zero_unlimited && ceiling != 0 && v == 0,
                        });
                    }
                    if !$zero_unlimited && v == 0 {
                        return Err(LimitError::NotPositive(stringify!($f)));
                    }
                    out.$f = v;
                }
            };
        }
        for_each_limit!(apply);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Limits {
        Limits {
            memory_bytes: 100,
            pids: 10,
            cpu_percent: 100,
            wall_time_s: 0,
            workspace_bytes: 1000,
            max_file_bytes: 100,
            max_read_bytes: 100,
            nofile: 64,
            syscalls_per_s: 50,
            tmp_bytes: 10,
            budget_tokens: 0,
            max_turns: 0,
            inbox_bytes: 1000,
            stdin_bytes: 1000,
            log_bytes: 1000,
            memory_store_bytes: 1000,
            recv_reply_bytes: 100,
            reply_bytes_in_flight: 200,
            journal_bytes: 1000,
            audit_entries: 10,
            max_descendants: 16,
            max_depth: 4,
        }
    }

    #[test]
    fn narrowing_keeps_absent_and_accepts_lower() {
        let l = base()
            .narrow(&LimitsPatch {
                pids: Some(5),
                ..Default::default()
            })
            .expect("lower is fine");
        assert_eq!(l.pids, 5);
        assert_eq!(l.memory_bytes, 100);
    }

    #[test]
    fn narrowing_refuses_higher_and_unlimited() {
        let higher = LimitsPatch {
            memory_bytes: Some(101),
            ..Default::default()
        };
        assert!(base().narrow(&higher).is_err());
        let unlimited = LimitsPatch {
            syscalls_per_s: Some(0),
            ..Default::default()
        };
        assert!(base().narrow(&unlimited).is_err());
        let zero_pids = LimitsPatch {
            pids: Some(0),
            ..Default::default()
        };
        assert!(base().narrow(&zero_pids).is_err());
        // Under an unlimited ceiling any finite wall time is fine.
        let wall = LimitsPatch {
            wall_time_s: Some(99),
            ..Default::default()
        };
        assert_eq!(base().narrow(&wall).expect("ok").wall_time_s, 99);
    }
}
