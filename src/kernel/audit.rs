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

    /// A page of the audit trail: the last `limit` entries after sequence
    /// `after` that `keep` accepts, oldest first, with their sequence
    /// numbers, and how many earlier accepted ones were left out. Entries
    /// are decoded one at a time from the newest back; only the page is
    /// held.
    pub fn read_audit_page(
        &self,
        after: Option<u64>,
        limit: usize,
        keep: impl Fn(&AuditEntry) -> bool,
    ) -> Result<(Vec<(u64, AuditEntry)>, u64), super::store::StoreError> {
        let mut page = Vec::new();
        let mut skipped = 0u64;
        self.store
            .scan_back(&self.store.trees.audit, 0, after, |seq, e: AuditEntry| {
                if keep(&e) {
                    if page.len() < limit {
                        page.push((seq, e));
                    } else {
                        skipped += 1;
                    }
                }
                true
            })?;
        page.reverse();
        Ok((page, skipped))
    }
}
