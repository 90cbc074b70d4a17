//! The syscall names, the permission groups that bundle them, and the typed
//! arguments of each call.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Every syscall of the ABI. Names on the wire are the SCREAMING_CASE forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum Call {
    GETPID,
    SYS_EXIT,
    SPAWN_AGENT,
    WAIT,
    KILL,
    PS,
    SEND_MSG,
    RECV_MSG,
    SYS_WRITE_STDOUT,
    SYS_READ_STDIN,
    SLEEP,
    FS_READ,
    FS_WRITE,
    FS_LIST,
    FS_DELETE,
    LLM_INFER,
    AGENT_INFO,
    EXEC_CMD,
    NET_FETCH,
    MEM_WRITE,
    MEM_READ,
    SYS_SCHEDULE,
    SYS_REGISTER_WEBHOOK,
    SYS_WEBHOOK_REPLY,
    /// A permission, not a call: lets NET_FETCH use methods other than GET
    /// and HEAD.
    NET_WRITE,
    /// A permission, not a call: lets MEM_WRITE/MEM_READ use the shared
    /// collections the profile names.
    MEM_SHARED,
}

impl Call {
    pub const ALL: [Call; 26] = [
        Call::GETPID,
        Call::SYS_EXIT,
        Call::SPAWN_AGENT,
        Call::WAIT,
        Call::KILL,
        Call::PS,
        Call::SEND_MSG,
        Call::RECV_MSG,
        Call::SYS_WRITE_STDOUT,
        Call::SYS_READ_STDIN,
        Call::SLEEP,
        Call::FS_READ,
        Call::FS_WRITE,
        Call::FS_LIST,
        Call::FS_DELETE,
        Call::LLM_INFER,
        Call::AGENT_INFO,
        Call::EXEC_CMD,
        Call::NET_FETCH,
        Call::MEM_WRITE,
        Call::MEM_READ,
        Call::SYS_SCHEDULE,
        Call::SYS_REGISTER_WEBHOOK,
        Call::SYS_WEBHOOK_REPLY,
        Call::NET_WRITE,
        Call::MEM_SHARED,
    ];

    pub fn parse(name: &str) -> Option<Call> {
        Call::ALL.into_iter().find(|c| c.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Call::GETPID => "GETPID",
            Call::SYS_EXIT => "SYS_EXIT",
            Call::SPAWN_AGENT => "SPAWN_AGENT",
            Call::WAIT => "WAIT",
            Call::KILL => "KILL",
            Call::PS => "PS",
            Call::SEND_MSG => "SEND_MSG",
            Call::RECV_MSG => "RECV_MSG",
            Call::SYS_WRITE_STDOUT => "SYS_WRITE_STDOUT",
            Call::SYS_READ_STDIN => "SYS_READ_STDIN",
            Call::SLEEP => "SLEEP",
            Call::FS_READ => "FS_READ",
            Call::FS_WRITE => "FS_WRITE",
            Call::FS_LIST => "FS_LIST",
            Call::FS_DELETE => "FS_DELETE",
            Call::LLM_INFER => "LLM_INFER",
            Call::AGENT_INFO => "AGENT_INFO",
            Call::EXEC_CMD => "EXEC_CMD",
            Call::NET_FETCH => "NET_FETCH",
            Call::MEM_WRITE => "MEM_WRITE",
            Call::MEM_READ => "MEM_READ",
            Call::SYS_SCHEDULE => "SYS_SCHEDULE",
            Call::SYS_REGISTER_WEBHOOK => "SYS_REGISTER_WEBHOOK",
            Call::SYS_WEBHOOK_REPLY => "SYS_WEBHOOK_REPLY",
            Call::NET_WRITE => "NET_WRITE",
            Call::MEM_SHARED => "MEM_SHARED",
        }
    }

    /// Calls every agent may make whatever its permission list says: asking
    /// who it is and ending itself grant nothing.
    pub fn always_allowed(self) -> bool {
        matches!(self, Call::GETPID | Call::SYS_EXIT | Call::AGENT_INFO)
    }

    /// Names that are permissions only: granting them changes what another
    /// call may do; calling them answers ENOSYS.
    pub fn is_permission_only(self) -> bool {
        matches!(self, Call::NET_WRITE | Call::MEM_SHARED)
    }

    /// Whether the call only reads state. Journal entries of read-only calls
    /// ride the next group commit instead of delaying the reply.
    pub fn is_read_only(self) -> bool {
        matches!(
            self,
            Call::GETPID
                | Call::PS
                | Call::FS_READ
                | Call::FS_LIST
                | Call::SLEEP
                | Call::WAIT
                | Call::AGENT_INFO
                | Call::MEM_READ
        )
    }
}

/// Permission groups accepted wherever a permission list is given.
pub const GROUPS: &[(&str, &[Call])] = &[
    (
        "process",
        &[Call::SPAWN_AGENT, Call::WAIT, Call::KILL, Call::PS],
    ),
    (
        "ipc",
        &[
            Call::SEND_MSG,
            Call::RECV_MSG,
            Call::SYS_WRITE_STDOUT,
            Call::SYS_READ_STDIN,
        ],
    ),
    ("time", &[Call::SLEEP, Call::SYS_SCHEDULE]),
    ("exec", &[Call::EXEC_CMD]),
    ("net", &[Call::NET_FETCH]),
    ("memory", &[Call::MEM_WRITE, Call::MEM_READ]),
    (
        "webhooks",
        &[Call::SYS_REGISTER_WEBHOOK, Call::SYS_WEBHOOK_REPLY],
    ),
    ("inference", &[Call::LLM_INFER]),
    (
        "fs",
        &[
            Call::FS_READ,
            Call::FS_WRITE,
            Call::FS_LIST,
            Call::FS_DELETE,
        ],
    ),
];

/// A permission list named something that is neither a call nor a group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown permission {0:?} (a call name, one of the groups {groups}, or *)",
    groups = GROUPS.iter().map(|(g, _)| *g).collect::<Vec<_>>().join(", ")
)]
pub struct UnknownPermission(pub String);

impl From<UnknownPermission> for super::SysError {
    fn from(e: UnknownPermission) -> Self {
        super::SysError::inval(e.to_string())
    }
}

/// Expands a permission list (call names, group names, or `*`) into calls.
pub fn expand_permissions(list: &[String]) -> Result<BTreeSet<Call>, UnknownPermission> {
    let mut out = BTreeSet::new();
    for item in list {
        let item = item.trim();
        if item == "*" {
            out.extend(Call::ALL);
        } else if let Some((_, calls)) = GROUPS.iter().find(|(g, _)| *g == item) {
            out.extend(calls.iter().copied());
        } else if let Some(call) = Call::parse(&item.to_ascii_uppercase()) {
            out.insert(call);
        } else {
            return Err(UnknownPermission(item.to_string()));
        }
    }
    Ok(out)
}

// ---- typed arguments -------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitArgs {
    #[serde(default)]
    pub code: i32,
    #[serde(default)]
    pub reason: Option<String>,
}

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
    pub limits: Option<crate::abi::limits::LimitsPatch>,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PidArgs {
    pub pid: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitArgs {
    pub pid: u64,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendArgs {
    pub to: u64,
    pub body: String,
}

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteStdoutArgs {
    pub data: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SleepArgs {
    pub ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferArgs {
    pub messages: Vec<crate::abi::chat::ChatMessage>,
    /// Syscalls offered as native tools (names); the runtime fills this
    /// for models with tool calling.
    #[serde(default)]
    pub tools: Vec<crate::abi::chat::ToolSpec>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Another configured model the agent may use; default: its own.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub constraint: Option<crate::abi::chat::Constraint>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Call::ALL {
            assert_eq!(Call::parse(c.name()), Some(c));
        }
        assert_eq!(Call::parse("NOPE"), None);
    }

    #[test]
    fn groups_and_names_expand() {
        let set = expand_permissions(&["fs".into(), "send_msg".into()]).expect("valid");
        assert!(set.contains(&Call::FS_DELETE));
        assert!(set.contains(&Call::SEND_MSG));
        assert!(!set.contains(&Call::KILL));
        assert!(expand_permissions(&[]).expect("empty").is_empty());
        assert!(expand_permissions(&["root".into()]).is_err());
    }
}
