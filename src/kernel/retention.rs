//! Journal retention: the journal keeps at most `journal_bytes` (a profile
//! limit) of entries about one agent. Past it the oldest entries are
//! removed, down to three quarters of the limit, and one `trimmed` entry
//! in their place says how many went (`agentos logs` shows it first). The
//! bytes an agent's journal holds are counted from disk the first time the
//! daemon writes for it (so a restart does not reset them), then kept in
//! memory until the agent ends.

use super::Kernel;
use super::journal::JournalEntry;
use super::pcb::{Pcb, Pid};
use super::store::{StoreError, key, seq_of};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Bytes charged for each journal entry on top of its value (its key).
const KEY_BYTES: u64 = 16;

/// What one agent's journal holds, and what it may.
struct Held {
    bytes: u64,
    limit: u64,
}

/// Per-agent journal sizes, for [`Kernel::retain_journal`].
#[derive(Default)]
pub struct JournalRetention {
    agents: Mutex<HashMap<Pid, Held>>,
}

impl JournalRetention {
    fn lock(&self) -> MutexGuard<'_, HashMap<Pid, Held>> {
        // Plain counters: a panic leaves nothing half-done that matters.
        self.agents.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets an ended agent (its journal stays as it is).
    pub fn forget(&self, pid: Pid) {
        self.lock().remove(&pid);
    }
}

/// The size charged for one stored journal value.
pub fn charge(value_len: usize) -> u64 {
    value_len as u64 + KEY_BYTES
}

impl Kernel {
    /// Bytes `p`'s journal holds (for `agentos inspect` and `top`): counted
    /// on disk once, then kept with the agent's other counts while it lives.
    pub fn journal_bytes(&self, p: &Pcb) -> Result<u64, StoreError> {
        if !p.is_live() {
            return self.journal_bytes_on_disk(p.pid);
        }
        let mut agents = self.journal_retention.lock();
        Ok(self.held(&mut agents, p.pid, p.limits.journal_bytes)?.bytes)
    }

    fn journal_bytes_on_disk(&self, pid: Pid) -> Result<u64, StoreError> {
        let mut bytes = 0;
        for kv in self.store.pid_entries(&self.store.trees.journal, pid) {
            bytes += charge(kv?.1.len());
        }
        Ok(bytes)
    }

    /// What `pid`'s journal holds, counted on disk the first time.
    fn held<'a>(
        &self,
        agents: &'a mut HashMap<Pid, Held>,
        pid: Pid,
        limit: u64,
    ) -> Result<&'a mut Held, StoreError> {
        use std::collections::hash_map::Entry;
        Ok(match agents.entry(pid) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Held {
                bytes: self.journal_bytes_on_disk(pid)?,
                limit,
            }),
        })
    }

    /// Counts `bytes` just written to `pid`'s journal and, past its
    /// `journal_bytes`, removes its oldest entries.
    pub(crate) fn retain_journal(&self, pid: Pid, bytes: u64) -> Result<(), StoreError> {
        let mut agents = self.journal_retention.lock();
        let held = match agents.get_mut(&pid) {
            Some(h) => {
                h.bytes += bytes;
                h
            }
            // Counted on disk: includes what was just written.
            None => {
                let limit = self
                    .table
                    .get(pid)
                    .map_or(crate::abi::limits::DEFAULT_JOURNAL_BYTES, |p| {
                        p.limits.journal_bytes
                    });
                self.held(&mut agents, pid, limit)?
            }
        };
        if held.bytes <= held.limit {
            return Ok(());
        }
        let target = held.limit - held.limit / 4;
        let journal = &self.store.trees.journal;
        let (mut entries, mut newest, mut ts_ms) = (0u64, None, 0u64);
        let mut batch = sled::Batch::default();
        for kv in self.store.pid_entries(journal, pid) {
            if held.bytes <= target {
                break;
            }
            let (k, v) = kv?;
            held.bytes = held.bytes.saturating_sub(charge(v.len()));
            match serde_json::from_slice::<JournalEntry>(&v) {
                Ok(e) => {
                    entries += match e {
                        JournalEntry::Trimmed { entries, .. } => entries,
                        _ => 1,
                    };
                    ts_ms = e.ts_ms();
                }
                Err(_) => entries += 1,
            }
            newest = Some(seq_of(&k));
            batch.remove(k);
        }
        let Some(newest) = newest else {
            return Ok(());
        };
        let marker = serde_json::to_vec(&JournalEntry::Trimmed {
            ts_ms,
            entries,
            limit: held.limit,
        })?;
        held.bytes += charge(marker.len());
        batch.insert(&key(pid, newest), marker);
        journal.apply_batch(batch)?;
        Ok(())
    }
}
