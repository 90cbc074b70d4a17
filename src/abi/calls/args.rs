//! The typed arguments of the calls the ABI gives a type: each one is the
//! `args` of its entry in the syscall table ([`super::table`]) and what the
//! call's handler deserializes. Unknown fields are refused (except by
//! [`NoArgs`]).

use crate::abi::chat::{ChatMessage, Constraint, ToolSpec};
use crate::abi::limits::LimitsPatch;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The arguments of a call that takes none. Fields are ignored, as they
/// always were for these calls.
#[derive(Debug, Default, Deserialize)]
pub struct NoArgs {}

/// The arguments object of a call whose handler reads the fields itself
/// (its argument type is private to the handler).
pub type ArgsObject = Map<String, Value>;

/// SYS_EXIT.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitArgs {
    #[serde(default)]
    pub code: i32,
    #[serde(default)]
    pub reason: Option<String>,
}

/// SPAWN_AGENT.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnArgs {
    pub name: String,
    /// Absolute path of the program; defaults to the parent's own program.
    #[serde(default)]
    pub program: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// Absent or empty: the child gets no permissions.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Absent fields inherit the parent's limit; present ones must not exceed it.
    #[serde(default)]
    pub limits: Option<LimitsPatch>,
    /// Agent that receives this child's SYS_WRITE_STDOUT output on its stdin.
    #[serde(default)]
    pub pipe_to: Option<u64>,
    /// For an LLM child: its role (system prompt). A child with a role runs
    /// the built-in runtime.
    #[serde(default)]
    pub role: Option<String>,
    /// Model of an LLM child: the parent's unless it names another model
    /// the parent may use.
    #[serde(default)]
    pub model: Option<String>,
    /// Scheduling weight (1-100), at most the parent's.
    #[serde(default)]
    pub priority: Option<u32>,
}

/// KILL: the agent to end.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PidArgs {
    pub pid: u64,
}

/// WAIT.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitArgs {
    pub pid: u64,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// SEND_MSG.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendArgs {
    pub to: u64,
    pub body: String,
}

/// SYS_READ_STDIN.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecvArgs {
    /// How long to block when the inbox is empty; 0 or absent returns at once.
    #[serde(default)]
    pub wait_ms: u64,
    /// Most messages to return in one reply.
    #[serde(default)]
    pub max: Option<usize>,
}

/// RECV_MSG: like [`RecvArgs`], plus explicit acknowledgement.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecvMsgArgs {
    #[serde(default)]
    pub wait_ms: u64,
    #[serde(default)]
    pub max: Option<usize>,
    /// Leave the returned messages in the inbox until acknowledged (for
    /// programs that must not lose a message to a crash).
    #[serde(default)]
    pub keep: bool,
    /// First remove every message with a sequence number up to this one.
    #[serde(default)]
    pub ack: Option<u64>,
}

/// SYS_WRITE_STDOUT.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteStdoutArgs {
    pub data: String,
}

/// SLEEP.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SleepArgs {
    pub ms: u64,
}

/// LLM_INFER.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferArgs {
    pub messages: Vec<ChatMessage>,
    /// Syscalls offered as native tools (names); the runtime fills this
    /// for models with tool calling.
    #[serde(default)]
    pub tools: Vec<ToolSpec>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Another configured model the agent may use; default: its own.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub constraint: Option<Constraint>,
}
