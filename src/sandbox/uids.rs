//! Per-agent Unix uids: each live agent gets its own uid (and a gid of the
//! same number) from a configured range. A uid is reused only after its
//! agent terminated and its cgroup was emptied.

use std::collections::BTreeSet;

/// systemd's dynamic-user range, which agent uids must never overlap.
const SYSTEMD_DYNAMIC: std::ops::RangeInclusive<u32> = 61184..=65519;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UidError {
    #[error("uid range {0}-{1} is empty")]
    Empty(u32, u32),
    #[error("uid range {0}-{1} overlaps system or systemd dynamic users (0-65535 is reserved)")]
    Reserved(u32, u32),
    #[error("all {0} agent uids are in use")]
    Exhausted(u32),
    #[error("invalid uid range {0:?}: expected FIRST-LAST")]
    Syntax(String),
}

/// An inclusive range of agent uids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    pub first: u32,
    pub last: u32,
}

impl UidRange {
    pub fn new(first: u32, last: u32) -> Result<UidRange, UidError> {
        if last < first {
            return Err(UidError::Empty(first, last));
        }
        if first <= 65535 || SYSTEMD_DYNAMIC.contains(&first) {
            return Err(UidError::Reserved(first, last));
        }
        Ok(UidRange { first, last })
    }

    /// How many uids (so how many live agents) the range holds.
    pub fn size(&self) -> u64 {
        u64::from(self.last - self.first) + 1
    }

    pub fn contains(&self, uid: u32) -> bool {
        (self.first..=self.last).contains(&uid)
    }
}

impl std::str::FromStr for UidRange {
    type Err = UidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| UidError::Syntax(s.into()))?;
        let a = a.trim().parse().map_err(|_| UidError::Syntax(s.into()))?;
        let b = b.trim().parse().map_err(|_| UidError::Syntax(s.into()))?;
        UidRange::new(a, b)
    }
}

/// Tracks which uids of the range are held by live agents.
#[derive(Debug)]
pub struct UidAllocator {
    range: UidRange,
    used: BTreeSet<u32>,
    /// Where the next search starts, so recently freed uids rest a while.
    cursor: u32,
}

impl UidAllocator {
    pub fn new(range: UidRange) -> Self {
        UidAllocator {
            range,
            used: BTreeSet::new(),
            cursor: range.first,
        }
    }

    /// Marks a uid as held (recovering the table at start).
    pub fn hold(&mut self, uid: u32) {
        self.used.insert(uid);
    }

    pub fn allocate(&mut self) -> Result<u32, UidError> {
        let size = self.range.last - self.range.first + 1;
        if self.used.len() as u64 >= size as u64 {
            return Err(UidError::Exhausted(size));
        }
        let mut uid = self.cursor;
        loop {
            if !self.used.contains(&uid) {
                self.used.insert(uid);
                self.cursor = if uid == self.range.last {
                    self.range.first
                } else {
                    uid + 1
                };
                return Ok(uid);
            }
            uid = if uid == self.range.last {
                self.range.first
            } else {
                uid + 1
            };
        }
    }

    pub fn release(&mut self, uid: u32) {
        self.used.remove(&uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_validated() {
        assert!("400000-499999".parse::<UidRange>().is_ok());
        assert_eq!(
            "1000-2000".parse::<UidRange>(),
            Err(UidError::Reserved(1000, 2000))
        );
        assert_eq!(
            "62000-70000".parse::<UidRange>(),
            Err(UidError::Reserved(62000, 70000))
        );
        assert!("5-".parse::<UidRange>().is_err());
        assert_eq!(
            "500000-400000".parse::<UidRange>(),
            Err(UidError::Empty(500000, 400000))
        );
    }

    #[test]
    fn allocates_distinct_uids_and_reports_exhaustion() {
        let mut a = UidAllocator::new(UidRange::new(100000, 100002).expect("range"));
        let got: BTreeSet<u32> = (0..3).map(|_| a.allocate().expect("free")).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(a.allocate(), Err(UidError::Exhausted(3)));
        a.release(100001);
        assert_eq!(a.allocate(), Ok(100001));
    }
}
