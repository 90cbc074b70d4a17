//! The process table: every PCB in memory, written through to the `pcb`
//! tree. Reads (ps, permission checks) never touch the disk; changes are
//! persisted at once and made durable by whoever acknowledges them.

use super::pcb::{Pcb, Pid, State};
use super::store::{Store, StoreError};
use std::collections::BTreeMap;
use std::sync::Mutex;

pub struct Table {
    store: Store,
    pcbs: Mutex<BTreeMap<Pid, Pcb>>,
}

impl Table {
    /// Loads every PCB from the store.
    pub fn load(store: Store) -> Result<Table, StoreError> {
        let pcbs = store.all_pcbs()?.into_iter().map(|p| (p.pid, p)).collect();
        Ok(Table {
            store,
            pcbs: Mutex::new(pcbs),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Pid, Pcb>> {
        // A panic while holding the lock cannot leave a PCB half-written
        // (updates are applied to a clone first), so poisoning is ignored.
        self.pcbs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, pid: Pid) -> Option<Pcb> {
        self.lock().get(&pid).cloned()
    }

    pub fn all(&self) -> Vec<Pcb> {
        self.lock().values().cloned().collect()
    }

    /// Inserts a new PCB and persists it.
    pub fn insert(&self, pcb: Pcb) -> Result<(), StoreError> {
        self.store.put_pcb(&pcb)?;
        self.lock().insert(pcb.pid, pcb);
        Ok(())
    }

    /// Applies `f` to a copy of the PCB and persists the result. Returns the
    /// new PCB, or None when the pid does not exist.
    pub fn update<F: FnOnce(&mut Pcb)>(&self, pid: Pid, f: F) -> Result<Option<Pcb>, StoreError> {
        let mut map = self.lock();
        let Some(old) = map.get(&pid) else {
            return Ok(None);
        };
        let mut new = old.clone();
        f(&mut new);
        if &new != old {
            self.store.put_pcb(&new)?;
            map.insert(pid, new.clone());
        }
        Ok(Some(new))
    }

    /// Changes counters in memory only; they are persisted with the next
    /// state change (the journal holds the exact record).
    pub fn count<F: FnOnce(&mut Pcb)>(&self, pid: Pid, f: F) {
        if let Some(p) = self.lock().get_mut(&pid) {
            f(p);
        }
    }

    /// Moves a live agent between RUNNING, BLOCKED and SLEEPING, leaving
    /// STOPPED and TERMINATED agents alone. Returns the previous state when
    /// it changed.
    pub fn set_activity(&self, pid: Pid, to: State) -> Result<Option<State>, StoreError> {
        let mut from = None;
        self.update(pid, |p| {
            if matches!(p.state, State::Running | State::Blocked | State::Sleeping) && p.state != to
            {
                from = Some(p.state);
                p.state = to;
            }
        })?;
        Ok(from)
    }

    /// Whether `descendant` is in the subtree below `ancestor`.
    pub fn is_descendant(&self, ancestor: Pid, descendant: Pid) -> bool {
        let map = self.lock();
        let mut cur = descendant;
        for _ in 0..map.len() + 1 {
            match map.get(&cur) {
                Some(p) if p.ppid == ancestor => return true,
                Some(p) if p.ppid != 0 && p.ppid != cur => cur = p.ppid,
                _ => return false,
            }
        }
        false
    }

    /// The lineage of `pid`: its root agent first, `pid` itself last.
    pub fn lineage(&self, pid: Pid) -> Vec<Pid> {
        let map = self.lock();
        let mut out = vec![pid];
        let mut cur = pid;
        for _ in 0..map.len() + 1 {
            match map.get(&cur) {
                Some(p) if p.ppid != 0 && p.ppid != cur => {
                    cur = p.ppid;
                    out.push(cur);
                }
                _ => break,
            }
        }
        out.reverse();
        out
    }

    /// `root` and every agent below it, in pid order.
    pub fn subtree(&self, root: Pid) -> Vec<Pcb> {
        let map = self.lock();
        let mut keep = std::collections::BTreeSet::from([root]);
        // Pids grow monotonically and a child is always younger than its
        // parent, so one pass in pid order finds the whole subtree.
        for p in map.values() {
            if keep.contains(&p.ppid) {
                keep.insert(p.pid);
            }
        }
        keep.iter()
            .filter_map(|pid| map.get(pid).cloned())
            .collect()
    }
}
