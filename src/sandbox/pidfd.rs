//! Signals to agent processes through pidfds. A host pid may be recycled
//! as soon as its process is reaped; a pidfd names one process for good.
//! Each signal opens a pidfd first and only then checks that it refers to
//! the process meant (same start time, or still a member of the agent's
//! cgroup): a recycled pid is never signalled.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// Why a signal could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum PidfdError {
    #[error("pidfd_open({pid}): {source}")]
    Open {
        pid: i32,
        #[source]
        source: io::Error,
    },
    #[error("pidfd_send_signal({pid}): {source}")]
    Send {
        pid: i32,
        #[source]
        source: io::Error,
    },
}

/// The start time of host process `pid` in clock ticks since boot (field
/// 22 of `/proc/<pid>/stat`), or None if there is no such process.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: skip past the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A pidfd of host process `pid`.
pub fn open(pid: i32) -> Result<OwnedFd, PidfdError> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new file
    // descriptor (or -1); it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(PidfdError::Open {
            pid,
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: `fd` was just returned by pidfd_open and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `signal` to the process behind `pidfd` (`pid` names it in errors).
pub fn send(pidfd: &OwnedFd, pid: i32, signal: i32) -> Result<(), PidfdError> {
    // SAFETY: pidfd_send_signal with a valid pidfd, a signal number, a null
    // siginfo (the kernel fills in a SI_USER one) and no flags; it reads
    // no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(PidfdError::Send {
            pid,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// SIGKILLs host process `pid` if it is still the one that started at
/// `start` (a start time from [`start_time`]). Returns whether it was
/// signalled; a process that is gone or was replaced is not an error.
pub fn kill_if_same(pid: i32, start: u64) -> bool {
    let Ok(fd) = open(pid) else {
        return false;
    };
    // With the pidfd open, the pid cannot be reused before we signal: if
    // the start time matches now, the pidfd is the process we mean.
    if start_time(pid) != Some(start) {
        return false;
    }
    send(&fd, pid, libc::SIGKILL).is_ok()
}

/// SIGKILLs host process `pid`, read from `cgroup_dir`'s `cgroup.procs`, if
/// it is still a member of that cgroup once its pidfd is open.
pub fn kill_member(pid: i32, cgroup_dir: &Path) -> bool {
    let Ok(fd) = open(pid) else {
        return false;
    };
    if !member_of(pid, cgroup_dir) {
        return false;
    }
    send(&fd, pid, libc::SIGKILL).is_ok()
}

/// Whether `/proc/<pid>/cgroup` places the process in `cgroup_dir` (in any
/// hierarchy: the directory's path ends with the listed cgroup path).
fn member_of(pid: i32, cgroup_dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return false;
    };
    text.lines().any(|l| {
        let path = l.splitn(3, ':').nth(2).unwrap_or("");
        let rel = path.trim_start_matches('/');
        !rel.is_empty() && cgroup_dir.ends_with(rel)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_ourselves_is_stable_and_a_wrong_one_is_not_killed() {
        let me = std::process::id() as i32;
        let t = start_time(me).expect("own start time");
        assert_eq!(start_time(me), Some(t));
        // A different start time means another process: not signalled.
        assert!(!kill_if_same(me, t + 1));
        assert!(start_time(i32::MAX).is_none());
    }
}
