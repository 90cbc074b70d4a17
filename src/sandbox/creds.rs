//! Per-thread filesystem identity: lets a daemon thread act on files with
//! an agent's (or an admin client's) permissions instead of root's. Used to
//! open an agent's program and extra binds for the launcher and by the
//! workspace file driver.

use crate::abi::errno::SysError;
use nix::unistd::{Gid, Uid, getgroups, setfsgid, setfsuid};
use std::io;
use std::marker::PhantomData;

/// Switches the calling thread's filesystem identity to an agent's, and back
/// when dropped (also during unwinding).
///
/// Entering sets the thread's fsgid, then its fsuid, and empties its
/// supplementary groups, so that the kernel checks permissions as the agent (a
/// root daemon's group 0 would otherwise still grant group access) and new
/// files and directories belong to the agent. All three are per-thread
/// credentials in the kernel; `setgroups` is made as a raw syscall because
/// libc's wrapper would apply it to every thread of the process. Each switch is
/// verified (`setfsuid(-1)` changes nothing and returns the current fsuid) and
/// a failure is EIO.
///
/// The guard belongs to the OS thread that created it (it is `!Send`). Hold it
/// only on a dedicated blocking thread (e.g. inside
/// `tokio::task::spawn_blocking`) and never across an `.await`: anything else
/// run by that thread meanwhile would act as the agent, and so would any thread
/// it spawns meanwhile (a new thread inherits its creator's credentials).
pub struct AgentCreds {
    prev_uid: Uid,
    prev_gid: Gid,
    /// The thread's groups before entering, if they were changed.
    prev_groups: Option<Vec<libc::gid_t>>,
    _thread_bound: PhantomData<*const ()>,
}

impl AgentCreds {
    pub fn enter(uid: u32, gid: u32) -> Result<Self, SysError> {
        let prev_groups: Vec<libc::gid_t> = getgroups()
            .map_err(|e| SysError::io(format!("reading the thread's supplementary groups: {e}")))?
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        let mut guard = AgentCreds {
            prev_uid: current_fsuid(),
            prev_gid: current_fsgid(),
            prev_groups: None,
            _thread_bound: PhantomData,
        };
        set_thread_groups(&[]).map_err(|e| {
            SysError::io(format!("dropping the thread's supplementary groups: {e}"))
        })?;
        guard.prev_groups = Some(prev_groups);
        setfsgid(Gid::from_raw(gid));
        if current_fsgid().as_raw() != gid {
            return Err(SysError::io(format!(
                "could not switch the filesystem gid to {gid}"
            )));
        }
        setfsuid(Uid::from_raw(uid));
        if current_fsuid().as_raw() != uid {
            return Err(SysError::io(format!(
                "could not switch the filesystem uid to {uid}"
            )));
        }
        Ok(guard)
    }
}

impl Drop for AgentCreds {
    fn drop(&mut self) {
        setfsuid(self.prev_uid);
        setfsgid(self.prev_gid);
        let groups_ok = match &self.prev_groups {
            Some(groups) => set_thread_groups(groups).is_ok(),
            None => true,
        };
        if current_fsuid() != self.prev_uid || current_fsgid() != self.prev_gid || !groups_ok {
            // Cannot happen while the daemon keeps CAP_SETUID/CAP_SETGID. Going
            // on would run later work of this pooled thread with an agent's
            // identity, so stop the process instead.
            eprintln!("agentos: could not restore the thread's filesystem credentials; aborting");
            std::process::abort();
        }
    }
}

/// The thread's fsuid: -1 is never a valid id, so `setfsuid(-1)` changes
/// nothing and returns the current value.
pub fn current_fsuid() -> Uid {
    setfsuid(Uid::from_raw(u32::MAX))
}

/// The thread's fsgid (see [`current_fsuid`]).
pub fn current_fsgid() -> Gid {
    setfsgid(Gid::from_raw(u32::MAX))
}

/// Sets the supplementary groups of the calling thread only.
pub fn set_thread_groups(groups: &[libc::gid_t]) -> io::Result<()> {
    let len = libc::c_long::try_from(groups.len())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: setgroups(2) reads `len` gid_t values from the pointer, which is
    // exactly the live, initialised slice `groups` borrowed for the duration of
    // the call (for an empty slice nothing is read). The syscall changes only
    // the calling thread's credentials and touches no memory of ours otherwise.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, len, groups.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
