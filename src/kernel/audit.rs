//! The audit trail: every denied syscall and every admin action (and denied
//! admin request), kept in the `audit` tree and read with `agentos audit`.
//! Entries ride the next group commit; they are also logged on the `audit`
//! tracing target.
//!
//! Bounded: a denial identical to the agent's previous audit entry (same
//! kind, call and reason) is not written again; that entry counts it
//! (`repeated`) and takes its time. At most `audit_entries` (a profile
//! limit) entries about one agent are kept, counted since the daemon
//! started; older ones are removed first.

use super::Kernel;
use super::pcb::{Pid, now_ms};
use super::store::key;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

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
    /// How many identical denials this entry stands for, when more than one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeated: Option<u64>,
}

/// Per agent: the sequence numbers of its audit entries, oldest first, and
/// whether the newest may absorb a repetition.
#[derive(Default)]
struct AgentTrail {
    seqs: VecDeque<u64>,
    last: Option<AuditEntry>,
}

/// Coalescing and retention state of the audit trail.
#[derive(Default)]
pub struct AuditTrail {
    agents: Mutex<HashMap<Pid, AgentTrail>>,
}

impl AuditTrail {
    fn lock(&self) -> MutexGuard<'_, HashMap<Pid, AgentTrail>> {
        // Plain bookkeeping: a panic leaves nothing half-done that matters.
        self.agents.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets an ended agent's coalescing and retention state (its
    /// entries stay).
    pub fn forget(&self, pid: Pid) {
        self.lock().remove(&pid);
    }
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
            repeated: None,
        };
        let tree = &self.store.trees.audit;
        let Some(pid) = pid else {
            if let Err(e) = self.store.append(tree, 0, &entry) {
                tracing::error!("audit write failed: {e}");
            }
            return;
        };
        let keep = self
            .table
            .get(pid)
            .map_or(crate::abi::limits::DEFAULT_AUDIT_ENTRIES, |p| {
                p.limits.audit_entries
            })
            .max(1);
        let mut agents = self.audit_trail.lock();
        let trail = agents.entry(pid).or_default();
        // The same denial again: the previous entry counts it.
        if kind == "syscall-denied"
            && let (Some(last), Some(&seq)) = (trail.last.as_mut(), trail.seqs.back())
            && last.kind == entry.kind
            && last.op == entry.op
            && last.detail == entry.detail
        {
            last.repeated = Some(last.repeated.unwrap_or(1) + 1);
            last.ts_ms = entry.ts_ms;
            let written = serde_json::to_vec(&*last)
                .map_err(super::store::StoreError::from)
                .and_then(|b| Ok(tree.insert(key(0, seq), b)?));
            if let Err(e) = written {
                tracing::error!("audit write failed: {e}");
            }
            return;
        }
        match self.store.append(tree, 0, &entry) {
            Ok(seq) => {
                trail.seqs.push_back(seq);
                trail.last = Some(entry);
                while trail.seqs.len() as u64 > keep {
                    if let Some(old) = trail.seqs.pop_front()
                        && let Err(e) = tree.remove(key(0, old))
                    {
                        tracing::error!("audit retention failed: {e}");
                    }
                }
            }
            Err(e) => tracing::error!("audit write failed: {e}"),
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
