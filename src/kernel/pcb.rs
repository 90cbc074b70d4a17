//! The process control block: everything the supervisor knows about one
//! agent, persisted in the `pcb` tree as JSON.

use crate::abi::calls::Call;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Agent ids. Allocated from a persistent counter and never reused.
pub type Pid = u64;

/// Lifecycle states (DESIGN.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    /// Created; the sandbox is being built.
    Ready,
    /// Running its program, or a syscall is in progress.
    Running,
    /// Waiting for a message, stdin or a child.
    Blocked,
    /// In SLEEP.
    Sleeping,
    /// Frozen by an admin.
    Stopped,
    /// Gone, with an exit status.
    Terminated,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ready => "READY",
            State::Running => "RUNNING",
            State::Blocked => "BLOCKED",
            State::Sleeping => "SLEEPING",
            State::Stopped => "STOPPED",
            State::Terminated => "TERMINATED",
        }
    }
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
    };
}

impl Limits {
    /// Applies `patch` with no ceiling (root may raise limits above a
    /// profile); values must still be valid.
    pub fn overridden(&self, patch: &LimitsPatch) -> Result<Limits, String> {
        let mut out = *self;
        macro_rules! apply {
            ($f:ident, $zero_unlimited:expr) => {
                if let Some(v) = patch.$f {
                    if !$zero_unlimited && v == 0 {
                        return Err(format!("limit {} must be greater than 0", stringify!($f)));
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
    pub fn narrow(&self, patch: &LimitsPatch) -> Result<Limits, String> {
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
                        return Err(format!(
                            "limit {} = {} exceeds the allowed {}{}",
                            stringify!($f),
                            v,
                            ceiling,
                            if $zero_unlimited && ceiling != 0 && v == 0 {
                                " (0 would mean unlimited)"
                            } else {
                                ""
                            }
                        ));
                    }
                    if !$zero_unlimited && v == 0 {
                        return Err(format!("limit {} must be greater than 0", stringify!($f)));
                    }
                    out.$f = v;
                }
            };
        }
        for_each_limit!(apply);
        Ok(out)
    }
}

/// How an agent ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code (128 + signal for a signal death, as shells report it).
    pub code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// Human-readable cause: "exited", "SYS_EXIT: done", "killed by admin",
    /// "out of memory (limit 64 MiB)", "sandbox setup failed at landlock: ...".
    pub reason: String,
}

/// Counters shown in `ps`, `inspect` and `top`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub syscalls: u64,
    pub denied: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    /// LLM prompt tokens, as providers reported them.
    #[serde(default)]
    pub tokens_in: u64,
    /// LLM completion tokens.
    #[serde(default)]
    pub tokens_out: u64,
    #[serde(default)]
    pub llm_calls: u64,
    /// Time spent waiting in the inference queue.
    #[serde(default)]
    pub llm_wait_ms: u64,
}

/// The process control block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pcb {
    pub pid: Pid,
    /// 0 for an agent spawned by an admin.
    pub ppid: Pid,
    pub name: String,
    /// Unix uid of the admin client that spawned the tree.
    pub owner: u32,
    /// That client's primary gid (the program and binds are opened with the
    /// owner's permissions).
    #[serde(default)]
    pub owner_gid: u32,
    pub uid: u32,
    pub gid: u32,
    pub state: State,
    pub profile: String,
    pub program: String,
    pub args: Vec<String>,
    /// Extra host paths bound read-only into the sandbox.
    pub ro_binds: Vec<String>,
    pub permissions: BTreeSet<Call>,
    pub limits: Limits,
    pub pipe_to: Option<Pid>,
    pub counters: Counters,
    /// Unix milliseconds.
    pub created_ms: u64,
    pub started_ms: Option<u64>,
    pub ended_ms: Option<u64>,
    pub exit: Option<ExitStatus>,
    /// Host pid of the agent's pid-1 process while it runs.
    pub host_pid: Option<i32>,
    /// Host path of the workspace.
    pub workspace: String,
    /// How many times the agent was restarted after a daemon restart.
    #[serde(default)]
    pub recoveries: u32,
    /// The model an LLM agent thinks with (None for plain programs that
    /// may still call LLM_INFER with a model they are allowed).
    #[serde(default)]
    pub model: Option<String>,
    /// The role (system prompt) of an LLM agent.
    #[serde(default)]
    pub role: Option<String>,
    /// Models this agent may infer with or give to children.
    #[serde(default)]
    pub models: BTreeSet<String>,
    /// Scheduling weight (1-100): shares of inference tokens are
    /// proportional to it.
    #[serde(default = "default_priority")]
    pub priority: u32,
}

fn default_priority() -> u32 {
    1
}

impl Pcb {
    pub fn may(&self, call: Call) -> bool {
        call.always_allowed() || self.permissions.contains(&call)
    }

    pub fn is_live(&self) -> bool {
        self.state != State::Terminated
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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
