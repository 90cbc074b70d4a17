//! The process table: every PCB in memory, written through to the `pcb`
//! tree. Reads (ps, permission checks) never touch the disk; changes are
//! persisted at once and made durable by whoever acknowledges them.

use super::pcb::{Pcb, Pid, State};
use super::store::{Store, StoreError};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Why an agent's tree has no room for one more agent below `parent`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeRefusal {
    #[error(
        "the tree of agent {ancestor} is at its max_descendants limit: {live} live descendants of max_descendants = {limit}"
    )]
    Descendants {
        ancestor: Pid,
        live: u64,
        limit: u64,
    },
    #[error(
        "a child would be {depth} levels below agent {ancestor}, beyond its max_depth = {limit}"
    )]
    Depth {
        ancestor: Pid,
        depth: u64,
        limit: u64,
    },
    #[error(
        "agent {parent} has {remaining} tokens of its budget left, fewer than the child's budget_tokens = {asked}{}",
        if *remaining == 0 { " (its budget is spent or lent to its live children)" } else { "" }
    )]
    Budget {
        parent: Pid,
        asked: u64,
        remaining: u64,
    },
    #[error("uid {uid} has {live} live agents of [admin] max_agents = {limit}")]
    OwnerAgents { uid: u32, live: usize, limit: usize },
}

/// What bounds a new child beyond its tree's shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChildBounds {
    /// The `budget_tokens` the request named, if any.
    pub budget_asked: Option<u64>,
    /// For an owner other than root: its `[admin] max_agents`, which the
    /// children of its agents count towards too.
    pub owner_max_agents: Option<usize>,
}

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

    /// Checks that one more agent fits below `parent`: for every ancestor
    /// (the root first, `parent` last), its live descendants stay within
    /// its `max_descendants` and the new agent within its `max_depth`.
    pub fn tree_room(&self, parent: Pid) -> Result<(), TreeRefusal> {
        tree_room_in(&self.lock(), parent)
    }

    /// Inserts a new agent below `parent` and persists it, if
    /// [`Table::tree_room`] admits it, its owner is below `owner_max_agents`
    /// and the parent's budget covers the child's. A parent with a token
    /// budget lends the child `budget_asked` (or, when none was asked, half
    /// of what it has left, rounded up): the child's `budget_tokens`
    /// becomes that amount and the parent's `tokens_lent` grows by it until
    /// the child ends ([`Table::terminate`]). All under
    /// one lock and in one atomic write, so concurrent spawns in one tree
    /// cannot overshoot its limits. Returns the child as inserted.
    pub fn insert_child(
        &self,
        parent: Pid,
        mut pcb: Pcb,
        bounds: ChildBounds,
    ) -> Result<Result<Pcb, TreeRefusal>, StoreError> {
        let mut map = self.lock();
        if let Err(refusal) = tree_room_in(&map, parent) {
            return Ok(Err(refusal));
        }
        if let Some(limit) = bounds.owner_max_agents {
            let live = map
                .values()
                .filter(|p| p.owner == pcb.owner && p.is_live())
                .count();
            if live >= limit {
                return Ok(Err(TreeRefusal::OwnerAgents {
                    uid: pcb.owner,
                    live,
                    limit,
                }));
            }
        }
        let lender = match map.get(&parent) {
            Some(p) => p.tokens_remaining().map(|remaining| (p.clone(), remaining)),
            None => None,
        };
        let Some((mut lender, remaining)) = lender else {
            self.store.put_pcb(&pcb)?;
            map.insert(pcb.pid, pcb.clone());
            return Ok(Ok(pcb));
        };
        let budget = bounds.budget_asked.unwrap_or(remaining.div_ceil(2));
        if budget == 0 || budget > remaining {
            return Ok(Err(TreeRefusal::Budget {
                parent,
                asked: budget,
                remaining,
            }));
        }
        pcb.limits.budget_tokens = budget;
        pcb.budget_from_parent = budget;
        lender.counters.tokens_lent += budget;
        self.store.put_pcbs(&[&lender, &pcb])?;
        map.insert(parent, lender);
        map.insert(pcb.pid, pcb.clone());
        Ok(Ok(pcb))
    }

    /// Applies `f` to a live agent's PCB and marks it TERMINATED; if its
    /// budget was carved from its parent's, the parent is repaid in the
    /// same atomic write: what the child committed (its own tokens, its
    /// ended children's and what it still lends to live ones, at most its
    /// budget) is charged to the parent, the rest returns. Returns the
    /// state it had, or None when it does not exist or already ended.
    pub fn terminate<F: FnOnce(&mut Pcb)>(
        &self,
        pid: Pid,
        f: F,
    ) -> Result<Option<(State, Pcb)>, StoreError> {
        let mut map = self.lock();
        let Some(old) = map.get(&pid).filter(|p| p.is_live()) else {
            return Ok(None);
        };
        let from = old.state;
        let mut ended = old.clone();
        f(&mut ended);
        ended.state = State::Terminated;
        let lent = ended.budget_from_parent;
        let parent = map
            .get(&ended.ppid)
            .filter(|_| lent > 0 && ended.ppid != 0)
            .map(|p| {
                let mut p = p.clone();
                p.counters.tokens_lent = p.counters.tokens_lent.saturating_sub(lent);
                p.counters.tokens_children += ended.counters.tokens_committed().min(lent);
                p
            });
        match &parent {
            Some(p) => self.store.put_pcbs(&[p, &ended])?,
            None => self.store.put_pcb(&ended)?,
        }
        if let Some(p) = parent {
            map.insert(p.pid, p);
        }
        map.insert(pid, ended.clone());
        Ok(Some((from, ended)))
    }

    /// Live agents below `root` at any depth.
    pub fn live_descendants(&self, root: Pid) -> u64 {
        live_descendants_in(&self.lock(), root)
    }

    /// Live descendants of every agent that has any, in one pass over the
    /// table (for `agentos top`, instead of a scan per agent).
    pub fn live_descendant_counts(&self) -> std::collections::HashMap<Pid, u64> {
        let map = self.lock();
        let mut counts = std::collections::HashMap::new();
        for p in map.values().filter(|p| p.is_live()) {
            for ancestor in lineage_in(&map, p.pid).iter().rev().skip(1) {
                *counts.entry(*ancestor).or_default() += 1;
            }
        }
        counts
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
        lineage_in(&self.lock(), pid)
    }

    /// `root` and every agent below it, in pid order.
    pub fn subtree(&self, root: Pid) -> Vec<Pcb> {
        let map = self.lock();
        map.get(&root)
            .into_iter()
            .chain(below_in(&map, root))
            .cloned()
            .collect()
    }
}

/// The lineage of `pid` in `map`: its root first, `pid` last.
fn lineage_in(map: &BTreeMap<Pid, Pcb>, pid: Pid) -> Vec<Pid> {
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

/// The agents below `root` in `map` (not `root` itself), in pid order.
/// Pids grow monotonically and a child is always younger than its parent,
/// so one pass in pid order from `root` finds the whole subtree.
fn below_in(map: &BTreeMap<Pid, Pcb>, root: Pid) -> impl Iterator<Item = &Pcb> {
    let mut keep = std::collections::BTreeSet::from([root]);
    map.range(root + 1..)
        .map(|(_, p)| p)
        .filter(move |p| keep.contains(&p.ppid) && keep.insert(p.pid))
}

/// Live agents below `root` in `map`, `root` itself not counted.
fn live_descendants_in(map: &BTreeMap<Pid, Pcb>, root: Pid) -> u64 {
    below_in(map, root).filter(|p| p.is_live()).count() as u64
}

fn tree_room_in(map: &BTreeMap<Pid, Pcb>, parent: Pid) -> Result<(), TreeRefusal> {
    let lineage = lineage_in(map, parent);
    let n = lineage.len() as u64;
    for (i, ancestor) in lineage.iter().enumerate() {
        let Some(a) = map.get(ancestor) else {
            continue;
        };
        let depth = n - i as u64;
        if depth > a.limits.max_depth {
            return Err(TreeRefusal::Depth {
                ancestor: *ancestor,
                depth,
                limit: a.limits.max_depth,
            });
        }
        let live = live_descendants_in(map, *ancestor);
        if live >= a.limits.max_descendants {
            return Err(TreeRefusal::Descendants {
                ancestor: *ancestor,
                live,
                limit: a.limits.max_descendants,
            });
        }
    }
    Ok(())
}
