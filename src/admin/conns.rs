//! Admission of admin connections: a cap on connections from users other
//! than root (all together, `max_connections`) and on each uid's
//! (`max_connections_per_uid`). Root is held only to a few slots beyond the
//! global cap, kept free for it, so that `agentos` as root still works while
//! users flood the socket. A connection's slot is released when its
//! [`Slot`] is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Connections root may open beyond `max_connections`.
pub const ROOT_RESERVE: usize = 16;

/// Why a connection was refused; the message names the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("too many admin connections: {open} open of max_connections = {max} (try again later)")]
    Global { open: usize, max: usize },
    #[error(
        "too many admin connections for uid {uid}: {open} open of max_connections_per_uid = {max}"
    )]
    PerUid { uid: u32, open: usize, max: usize },
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_uid: HashMap<u32, usize>,
}

/// The open connections, by uid.
#[derive(Debug)]
pub struct Admission {
    max: usize,
    per_uid: usize,
    counts: Arc<Mutex<Counts>>,
}

/// One admitted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    uid: u32,
    counts: Arc<Mutex<Counts>>,
}

impl Admission {
    pub fn new(max: usize, per_uid: usize) -> Admission {
        Admission {
            max,
            per_uid,
            counts: Arc::default(),
        }
    }

    /// Admits a connection from `uid`, or says which cap it would exceed.
    pub fn admit(&self, uid: u32) -> Result<Slot, Refusal> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mine = c.per_uid.get(&uid).copied().unwrap_or(0);
        if uid == 0 {
            if c.total >= self.max + ROOT_RESERVE {
                return Err(Refusal::Global {
                    open: c.total,
                    max: self.max,
                });
            }
        } else {
            if mine >= self.per_uid {
                return Err(Refusal::PerUid {
                    uid,
                    open: mine,
                    max: self.per_uid,
                });
            }
            if c.total >= self.max {
                return Err(Refusal::Global {
                    open: c.total,
                    max: self.max,
                });
            }
        }
        c.total += 1;
        *c.per_uid.entry(uid).or_default() += 1;
        Ok(Slot {
            uid,
            counts: self.counts.clone(),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts.lock().map(|c| c.total).unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                c.per_uid.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_and_slots_come_back() {
        let a = Admission::new(3, 2);
        let s1 = a.admit(1000).expect("first");
        let _s2 = a.admit(1000).expect("second");
        let e = a.admit(1000).expect_err("per uid");
        assert!(e.to_string().contains("max_connections_per_uid = 2"), "{e}");
        let _s3 = a.admit(1001).expect("other uid");
        let e = a.admit(1002).expect_err("global");
        assert!(e.to_string().contains("max_connections = 3"), "{e}");
        // Root still gets in, up to the reserve.
        let roots: Vec<_> = (0..ROOT_RESERVE)
            .map(|_| a.admit(0).expect("root"))
            .collect();
        assert!(a.admit(0).is_err());
        drop(roots);
        drop(s1);
        let _s4 = a.admit(1000).expect("slot released");
        assert_eq!(a.open(), 3);
    }
}
