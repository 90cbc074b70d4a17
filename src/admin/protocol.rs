//! The admin socket protocol: one JSON request per line, answered by one
//! response line (or, for `logs --follow`, a stream of event lines closed by
//! an `end` line).

use crate::abi::SysError;
use crate::abi::limits::LimitsPatch;
use crate::drivers::fs::CopyEntry;
use crate::kernel::journal::LogEvent;
use crate::kernel::pcb::Pid;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Default admin socket path.
pub const DEFAULT_SOCKET: &str = "/run/agentos/agentosd.sock";

/// Entries `inbox`, `logs` and `audit` return without `tail`: the last
/// ones; the reply's `skipped` says how many earlier ones were left out.
pub const DEFAULT_PAGE: usize = 1000;
/// The most entries one `inbox`, `logs` or `audit` reply holds.
pub const MAX_PAGE: usize = 10_000;

/// The page size a request asks for: `tail`, at most [`MAX_PAGE`].
pub fn page_size(tail: Option<usize>) -> usize {
    tail.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE)
}

/// An admin request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminRequest {
    Spawn(Box<SpawnRequest>),
    Ps,
    Tree,
    Inspect {
        pid: Pid,
    },
    Logs {
        pid: Pid,
        #[serde(default)]
        follow: bool,
        /// Only the last N events (default [`DEFAULT_PAGE`]).
        #[serde(default)]
        tail: Option<usize>,
        /// Only events with a sequence number above this.
        #[serde(default)]
        since: Option<u64>,
    },
    Kill {
        pid: Pid,
    },
    Stop {
        pid: Pid,
    },
    Cont {
        pid: Pid,
    },
    Send {
        pid: Pid,
        body: String,
    },
    Wait {
        pid: Pid,
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    Inbox {
        pid: Pid,
        /// Only the last N messages (default [`DEFAULT_PAGE`]).
        #[serde(default)]
        tail: Option<usize>,
        /// Only messages with a sequence number above this.
        #[serde(default)]
        since: Option<u64>,
    },
    Status,
    /// Copies files and directories into a running agent's workspace, as
    /// the agent (`agentos cp HOST PID:PATH`).
    CopyIn {
        pid: Pid,
        entries: Vec<CopyEntry>,
    },
    /// Copies a file or directory tree out of an agent's workspace, running
    /// or ended (`agentos cp PID:PATH HOST`).
    CopyOut {
        pid: Pid,
        path: String,
    },
    /// Per-agent inference and syscall figures plus the scheduler's queues.
    Top,
    /// The audit trail: denied syscalls and admin actions.
    Audit {
        #[serde(default)]
        pid: Option<Pid>,
        #[serde(default)]
        since_ms: Option<u64>,
        /// Only the last N entries (default [`DEFAULT_PAGE`]).
        #[serde(default)]
        tail: Option<usize>,
        /// Only entries with a sequence number above this.
        #[serde(default)]
        since_seq: Option<u64>,
    },
}

impl AdminRequest {
    /// The agent the request is about, if any.
    pub fn target(&self) -> Option<Pid> {
        match self {
            AdminRequest::Inspect { pid }
            | AdminRequest::Logs { pid, .. }
            | AdminRequest::Kill { pid }
            | AdminRequest::Stop { pid }
            | AdminRequest::Cont { pid }
            | AdminRequest::Send { pid, .. }
            | AdminRequest::Wait { pid, .. }
            | AdminRequest::Inbox { pid, .. }
            | AdminRequest::CopyIn { pid, .. }
            | AdminRequest::CopyOut { pid, .. } => Some(*pid),
            AdminRequest::Spawn(_)
            | AdminRequest::Ps
            | AdminRequest::Tree
            | AdminRequest::Status
            | AdminRequest::Top
            | AdminRequest::Audit { .. } => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            AdminRequest::Spawn(_) => "spawn",
            AdminRequest::Ps => "ps",
            AdminRequest::Tree => "tree",
            AdminRequest::Inspect { .. } => "inspect",
            AdminRequest::Logs { .. } => "logs",
            AdminRequest::Kill { .. } => "kill",
            AdminRequest::Stop { .. } => "stop",
            AdminRequest::Cont { .. } => "cont",
            AdminRequest::Send { .. } => "send",
            AdminRequest::Wait { .. } => "wait",
            AdminRequest::Inbox { .. } => "inbox",
            AdminRequest::Status => "status",
            AdminRequest::CopyIn { .. } => "copy_in",
            AdminRequest::CopyOut { .. } => "copy_out",
            AdminRequest::Top => "top",
            AdminRequest::Audit { .. } => "audit",
        }
    }
}

/// What `agentos spawn` asks for.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SpawnRequest {
    pub name: String,
    /// Empty for an LLM agent (the built-in runtime).
    #[serde(default)]
    pub program: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Profile name; `default` when absent.
    #[serde(default)]
    pub profile: Option<String>,
    /// Permission names or groups; the profile's defaults when absent.
    #[serde(default)]
    pub permissions: Option<Vec<String>>,
    #[serde(default)]
    pub limits: Option<LimitsPatch>,
    /// Extra host paths bound read-only.
    #[serde(default)]
    pub ro: Vec<String>,
    #[serde(default)]
    pub pipe_to: Option<Pid>,
    /// An LLM agent: its model (default: the configured default model).
    #[serde(default)]
    pub model: Option<String>,
    /// An LLM agent: its role (system prompt). With a role or a model and no
    /// program, the agent runs the built-in runtime.
    #[serde(default)]
    pub role: Option<String>,
    /// Further models the agent may use (LLM_INFER, children).
    #[serde(default)]
    pub models: Vec<String>,
    /// Scheduling weight 1-100 (default 1).
    #[serde(default)]
    pub priority: Option<u32>,
    /// Files put into the workspace, owned by the agent, before it starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy: Vec<CopyEntry>,
}

/// One response line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AdminResponse {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<SysError>,
    /// A streamed log event (logs --follow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<LogEvent>,
    /// Closes a stream.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub end: bool,
    /// A page of `inbox`, `logs` or `audit`: how many earlier entries it
    /// left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<u64>,
}

impl AdminResponse {
    pub fn result(v: Value) -> Self {
        AdminResponse {
            ok: true,
            result: Some(v),
            error: None,
            event: None,
            end: false,
            skipped: None,
        }
    }

    pub fn error(e: SysError) -> Self {
        AdminResponse {
            ok: false,
            result: None,
            error: Some(e),
            event: None,
            end: false,
            skipped: None,
        }
    }

    pub fn event(e: LogEvent) -> Self {
        AdminResponse {
            ok: true,
            result: None,
            error: None,
            event: Some(e),
            end: false,
            skipped: None,
        }
    }

    pub fn end() -> Self {
        AdminResponse {
            ok: true,
            result: None,
            error: None,
            event: None,
            end: true,
            skipped: None,
        }
    }

    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_else(|_| {
            br#"{"ok":false,"error":{"code":"EIO","message":"response encoding failed"}}"#.to_vec()
        });
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_with_an_op_tag() {
        let r = AdminRequest::Logs {
            pid: 3,
            follow: true,
            tail: None,
            since: Some(7),
        };
        let s = serde_json::to_string(&r).expect("encode");
        assert!(s.contains(r#""op":"logs""#), "{s}");
        assert_eq!(serde_json::from_str::<AdminRequest>(&s).expect("decode"), r);
        let spawn: AdminRequest =
            serde_json::from_str(r#"{"op":"spawn","name":"a","program":"/bin/true"}"#)
                .expect("spawn");
        assert_eq!(spawn.name(), "spawn");
        assert!(serde_json::from_str::<AdminRequest>(r#"{"op":"format_disk"}"#).is_err());
        // Requests of older clients, without the paging fields, still parse.
        let old: AdminRequest = serde_json::from_str(r#"{"op":"inbox","pid":4}"#).expect("inbox");
        assert_eq!(
            old,
            AdminRequest::Inbox {
                pid: 4,
                tail: None,
                since: None
            }
        );
        let reply: AdminResponse =
            serde_json::from_str(r#"{"ok":true,"result":[]}"#).expect("reply");
        assert_eq!(reply.skipped, None);
    }
}
