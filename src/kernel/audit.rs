//! The audit trail: every denied syscall and every admin action (and denied
//! admin request), kept in the `audit` tree and read with `agentos audit`.
//! Entries ride the next group commit; they are also logged on the `audit`
//! tracing target.

use super::Kernel;
use super::pcb::{Pid, now_ms};
use serde::{Deserialize, Serialize};

/// One audit record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    pub ts_ms: u64,
    /// "admin", "admin-denied" or "syscall-denied".
    pub kind: String,
    /// Unix uid of the admin client, for admin entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The agent concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<Pid>,
    /// The admin operation or the syscall.
    pub op: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Kernel {
    pub fn audit(&self, kind: &str, uid: Option<u32>, pid: Option<Pid>, op: &str, detail: &str) {
        let entry = AuditEntry {
            ts_ms: now_ms(),
            kind: kind.to_string(),
            uid,
            pid,
            op: op.to_string(),
            detail: super::journal::clip(detail.to_string()),
        };
        if let Err(e) = self.store.append(&self.store.trees.audit, 0, &entry) {
            tracing::error!("audit write failed: {e}");
        }
    }

    /// Audit entries since `since_ms`, about `pid` if given, oldest first.
    pub fn read_audit(&self, pid: Option<Pid>, since_ms: Option<u64>) -> Vec<AuditEntry> {
        self.store
            .range::<AuditEntry>(&self.store.trees.audit, 0, None, usize::MAX)
            .unwrap_or_default()
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e| pid.is_none() || e.pid == pid)
            .filter(|e| since_ms.is_none_or(|s| e.ts_ms >= s))
            .collect()
    }
}
