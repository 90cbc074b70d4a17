//! Signals to agent processes through pidfds. A host pid may be recycled
//! as soon as its process is reaped; a pidfd names one process for good.
//! Each signal opens a pidfd first and only then checks that it refers to
//! the process meant (same start time, or still a member of the agent's
//! cgroup): a recycled pid is never signalled. [`verify_agent`] checks
//! more before a recorded pid is trusted as an agent: that it is still
//! confined as one.

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
    open_same(pid, start).is_ok_and(|fd| send(&fd, pid, libc::SIGKILL).is_ok())
}

/// A pidfd of host process `pid` if it is the one that started at `start`.
fn open_same(pid: i32, start: u64) -> Result<OwnedFd, NotTheAgent> {
    let fd = open(pid).map_err(|source| NotTheAgent::Gone { pid, source })?;
    // With the pidfd open, the pid cannot be reused: if the start time
    // matches now, the pidfd is the process we mean.
    let found = start_time(pid);
    if found != Some(start) {
        return Err(NotTheAgent::Replaced {
            pid,
            recorded: start,
            found,
        });
    }
    Ok(fd)
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
    cgroup_paths(pid)
        .iter()
        .any(|rel| !rel.is_empty() && cgroup_dir.ends_with(rel))
}

/// The cgroup paths of host process `pid`, one per hierarchy, relative to
/// the hierarchy's root (`""` for the root itself); none if it is gone.
pub fn cgroup_paths(pid: i32) -> Vec<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .map(|p| p.trim_start_matches('/').to_string())
        .collect()
}

/// Why a recorded pid is not taken to be the agent it was recorded for.
#[derive(Debug, thiserror::Error)]
pub enum NotTheAgent {
    #[error("process {pid} is gone: {source}")]
    Gone {
        pid: i32,
        #[source]
        source: PidfdError,
    },
    #[error("process {pid} started at tick {found:?}, not {recorded}: the pid was reused")]
    Replaced {
        pid: i32,
        recorded: u64,
        found: Option<u64>,
    },
    #[error("process {pid} is not in the agent's cgroup {}", dir.display())]
    OutsideCgroup { pid: i32, dir: std::path::PathBuf },
    #[error("process {pid} is not confined as the agent was: {what}")]
    Unconfined { pid: i32, what: String },
}

/// What an agent's pid 1 was recorded as: the process, and what it must
/// still be.
#[derive(Debug, Clone, Copy)]
pub struct RecordedAgent<'a> {
    pub pid: i32,
    /// Its start time ([`start_time`]).
    pub start: u64,
    pub uid: u32,
    pub gid: u32,
    /// Its own cgroup leaf (any hierarchy).
    pub cgroup_dir: &'a Path,
}

/// A pidfd of the process `agent` names, if it still is that agent: the
/// same process (pid and start time, checked with the pidfd open), in its
/// cgroup, with the agent's uid and gid (real, effective, saved and
/// filesystem), no_new_privs, a seccomp filter and no capabilities in any
/// set (as the probe checks from the inside). Nothing is changed in the
/// process; a refusal names the first check that failed.
pub fn verify_agent(agent: &RecordedAgent) -> Result<OwnedFd, NotTheAgent> {
    let pid = agent.pid;
    let fd = open_same(pid, agent.start)?;
    if !member_of(pid, agent.cgroup_dir) {
        return Err(NotTheAgent::OutsideCgroup {
            pid,
            dir: agent.cgroup_dir.to_path_buf(),
        });
    }
    let unconfined = |what: String| NotTheAgent::Unconfined { pid, what };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| unconfined(format!("/proc/{pid}/status: {e}")))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .ok_or_else(|| unconfined(format!("no {name} in /proc/{pid}/status")))
    };
    for (name, want) in [("Uid", agent.uid), ("Gid", agent.gid)] {
        let ids = field(name)?;
        if ids.split_whitespace().any(|id| id != want.to_string()) {
            return Err(unconfined(format!("{name} {ids}, not {want}")));
        }
    }
    for (name, want) in [("NoNewPrivs", "1"), ("Seccomp", "2")] {
        let got = field(name)?;
        if got != want {
            return Err(unconfined(format!("{name} {got}, not {want}")));
        }
    }
    for name in ["CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"] {
        let got = field(name)?;
        if u64::from_str_radix(got, 16) != Ok(0) {
            return Err(unconfined(format!("{name} {got}, not empty")));
        }
    }
    Ok(fd)
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

    #[test]
    fn an_unconfined_or_replaced_process_is_not_taken_for_an_agent() {
        let me = std::process::id() as i32;
        let start = start_time(me).expect("own start time");
        let rel = cgroup_paths(me).into_iter().next().unwrap_or_default();
        let dir = Path::new("/sys/fs/cgroup").join(&rel);
        // SAFETY: getuid and getgid only return the caller's ids.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let me_as = |start, dir| RecordedAgent {
            pid: me,
            start,
            uid,
            gid,
            cgroup_dir: dir,
        };
        let gone = RecordedAgent {
            pid: i32::MAX,
            ..me_as(start, &dir)
        };
        assert!(matches!(verify_agent(&gone), Err(NotTheAgent::Gone { .. })));
        let refused = verify_agent(&me_as(start + 1, &dir));
        assert!(
            matches!(refused, Err(NotTheAgent::Replaced { found: Some(f), .. }) if f == start),
            "{refused:?}"
        );
        let elsewhere = Path::new("/sys/fs/cgroup/not-this-one");
        let refused = verify_agent(&me_as(start, elsewhere));
        assert!(
            matches!(refused, Err(NotTheAgent::OutsideCgroup { .. })),
            "{refused:?}"
        );
        if rel.is_empty() {
            // In the root cgroup no leaf can be named: the rest needs one.
            return;
        }
        // The test runner itself: the right process, but with no seccomp
        // filter it is not an agent (whatever its capabilities).
        let refused = verify_agent(&me_as(start, &dir));
        assert!(
            matches!(&refused, Err(NotTheAgent::Unconfined { what, .. }) if what.starts_with("NoNewPrivs") || what.starts_with("Seccomp")),
            "{refused:?}"
        );
    }
}
