//! The low-water mark of the state filesystem: below `min_free_bytes` of
//! free space the daemon refuses what agents would add to it (mutating
//! syscalls, output kept in their logs, messages delivered to them), so
//! that the journal, the process table and recovery always have room.
//!
//! What frees space or ends work is still answered at the floor: FS_DELETE,
//! RECV_MSG (which takes messages out of the inbox), WAIT, KILL, SYS_EXIT,
//! and every read-only call. The daemon's own records (PCBs, audit, the
//! journal of the calls it runs) are never refused here; the calls refused
//! at the floor are counted but not journaled, so an agent retrying them
//! cannot eat the room kept for the journal.
//!
//! Free space is read with statvfs (the space an unprivileged writer may
//! use, `f_bavail`): at most every [`REFRESH`] while it is far above the
//! mark (the check then costs a clock read), at every check near it.

use crate::abi::calls::{Call, Durability};
use crate::abi::{Errno, SysError};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a statvfs reading is trusted.
pub const REFRESH: Duration = Duration::from_millis(100);

/// Within this much of the mark every check reads the filesystem.
const NEAR: u64 = 256 << 20;

/// Default low-water mark: 256 MiB.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 << 20;

/// Calls answered even below the mark: they free space or end work.
const ALLOWED_AT_FLOOR: [Call; 5] = [
    Call::FS_DELETE,
    Call::RECV_MSG,
    Call::WAIT,
    Call::KILL,
    Call::SYS_EXIT,
];

/// The state filesystem's free space and its low-water mark.
pub struct Floor {
    dir: PathBuf,
    min_free: u64,
    last: Mutex<Option<(Instant, u64)>>,
}

impl Floor {
    /// Watches the filesystem holding `dir`; 0 turns the mark off.
    pub fn new(dir: &Path, min_free: u64) -> Floor {
        Floor {
            dir: dir.to_path_buf(),
            min_free,
            last: Mutex::new(None),
        }
    }

    /// The configured mark in bytes (0: off).
    pub fn min_free(&self) -> u64 {
        self.min_free
    }

    /// Free bytes on the state filesystem (a reading at most [`REFRESH`]
    /// old); `None` when statvfs fails.
    pub fn free_bytes(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        // Far from the mark a recent reading will do; near it every check
        // reads the filesystem, so at most one write passes the mark.
        if let Some((at, free)) = *last {
            if at.elapsed() < REFRESH && free > self.min_free.saturating_add(NEAR) {
                return Some(free);
            }
        }
        let st = nix::sys::statvfs::statvfs(&self.dir).ok()?;
        let free = st.blocks_available() as u64 * st.fragment_size() as u64;
        *last = Some((Instant::now(), free));
        Some(free)
    }

    /// Refuses with EQUOTA when free space is below the mark. `what` says
    /// what was refused. A filesystem that cannot be read is not taken as
    /// full: the writes themselves then fail, and say why.
    pub fn check(&self, what: &str) -> Result<(), SysError> {
        if self.min_free == 0 {
            return Ok(());
        }
        match self.free_bytes() {
            Some(free) if free < self.min_free => Err(SysError::new(
                Errno::EQUOTA,
                format!(
                    "{what} refused: the state filesystem ({}) has {free} bytes free, below its low-water mark of {} bytes (min_free_bytes); free space on it, or delete files of this agent",
                    self.dir.display(),
                    self.min_free
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Whether a syscall is checked against the mark: every call that
    /// changes state, except those that free space or end work.
    pub fn guards(call: Call) -> bool {
        call.info().durability != Durability::ReadOnly && !ALLOWED_AT_FLOOR.contains(&call)
    }

    /// Forgets the last reading (after space was freed).
    pub fn refresh(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_above_the_free_space_refuses_and_names_itself() {
        let dir = std::env::temp_dir();
        let free = Floor::new(&dir, 1).free_bytes().expect("statvfs");
        assert!(Floor::new(&dir, 1).check("FS_WRITE").is_ok());
        assert!(Floor::new(&dir, 0).check("FS_WRITE").is_ok());
        let e = Floor::new(&dir, free + (1 << 40))
            .check("FS_WRITE")
            .expect_err("above the free space");
        assert_eq!(e.code, Errno::EQUOTA);
        assert!(e.message.contains("low-water mark"), "{}", e.message);
        assert!(e.message.contains("min_free_bytes"), "{}", e.message);
    }

    #[test]
    fn what_frees_space_is_not_guarded() {
        assert!(Floor::guards(Call::FS_WRITE));
        assert!(Floor::guards(Call::SEND_MSG));
        assert!(!Floor::guards(Call::FS_DELETE));
        assert!(!Floor::guards(Call::SYS_EXIT));
        assert!(!Floor::guards(Call::GETPID));
    }
}
