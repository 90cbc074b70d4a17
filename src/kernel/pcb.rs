//! The process control block: everything the supervisor knows about one
//! agent, persisted in the `pcb` tree as JSON. Its limits are the ABI's
//! [`Limits`] (re-exported here while callers move to `abi::limits`).

use crate::abi::calls::Call;
pub use crate::abi::limits::{Limits, LimitsPatch};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Agent ids. Allocated from a persistent counter and never reused.
pub type Pid = u64;

/// Lifecycle states of an agent, as `ps` and PS show them.
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
    /// Tokens of this agent's budget carved out for its live children
    /// (each child's `budget_tokens`); they return when the child ends.
    #[serde(default)]
    pub tokens_lent: u64,
    /// Tokens its ended children (and their subtrees) spent, charged to
    /// this agent's budget when they ended.
    #[serde(default)]
    pub tokens_children: u64,
}

impl Counters {
    /// Tokens this agent spent itself (prompt and completion).
    pub fn tokens_own(&self) -> u64 {
        self.tokens_in + self.tokens_out
    }

    /// Tokens no longer available to this agent: its own, those its ended
    /// children spent, and the budgets of its live children.
    pub fn tokens_committed(&self) -> u64 {
        self.tokens_own() + self.tokens_children + self.tokens_lent
    }
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
    /// That process's start time (clock ticks after boot, field 22 of
    /// `/proc/<pid>/stat`) while it runs: with the pid, it names the process
    /// even after the pid is reused.
    #[serde(default)]
    pub host_start: Option<u64>,
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
    /// Tokens carved out of the parent's budget for this agent (its whole
    /// `budget_tokens`); 0 when the parent's budget is unlimited.
    #[serde(default)]
    pub budget_from_parent: u64,
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

    /// Tokens left for this agent's own inferences and new children's
    /// budgets; None when its budget is unlimited.
    pub fn tokens_remaining(&self) -> Option<u64> {
        match self.limits.budget_tokens {
            0 => None,
            budget => Some(budget.saturating_sub(self.counters.tokens_committed())),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
