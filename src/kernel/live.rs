//! Runtime handles of running agents: what the supervisor needs to wake,
//! kill or freeze an agent, which is not part of its durable PCB.

use super::pcb::Pid;
use crate::drivers::fs::Workspace;
use crate::sandbox::cgroup::AgentCgroup;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// One running agent.
pub struct Live {
    pub cgroup: AgentCgroup,
    /// Host pid of the sandbox's pid 1 (a child of the launcher server).
    pub host_pid: Option<i32>,
    /// Its start time: signals go through a pidfd, and only to this one.
    pub host_start: Option<u64>,
    /// Opened workspace for the file syscalls.
    pub workspace: Arc<Workspace>,
    /// Woken when a message lands in the inbox.
    pub inbox: Notify,
    /// Woken when data lands on stdin.
    pub stdin: Notify,
    /// Set when the supervisor ends the agent on purpose; becomes the reason.
    pub kill_reason: Mutex<Option<String>>,
    /// Woken when the agent is being killed, to end blocking calls.
    pub dying: Notify,
    /// Serializes RECV_MSG / SYS_READ_STDIN so two concurrent reads never
    /// hand out the same entry.
    pub recv_lock: tokio::sync::Mutex<()>,
    /// Bytes of stdout/stderr logged so far.
    pub logged_bytes: std::sync::atomic::AtomicU64,
    /// Set by a successful SYS_EXIT: the agent is ended, for this reason,
    /// once the reply has been written to its socket.
    pub exiting: Mutex<Option<String>>,
}

impl Live {
    /// Ends the agent: records why, kills its pid 1 (the rest of its pid
    /// namespace goes with it) and everything in its own cgroup leaf. Its
    /// descendants are ended when it is finished (see `Kernel::finish`),
    /// each with its own reason.
    pub fn kill(&self, reason: &str) {
        self.set_reason(reason);
        self.dying.notify_waiters();
        self.kill_pid1();
        self.cgroup.kill_own();
    }

    /// Records why the agent is being ended, unless a reason is set already.
    pub fn set_reason(&self, reason: &str) {
        let mut r = self.kill_reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some(reason.to_string());
        }
    }

    /// SIGKILLs pid 1 through a pidfd, if it is still the same process.
    fn kill_pid1(&self) {
        if let (Some(pid), Some(start)) = (self.host_pid, self.host_start) {
            crate::sandbox::pidfd::kill_if_same(pid, start);
        }
    }

    /// Stops the agent's processes for a daemon shutdown, recording no
    /// reason: the agent is not finished and will be recovered.
    pub fn stop_for_shutdown(&self) {
        self.dying.notify_waiters();
        self.cgroup.freeze(false);
        self.kill_pid1();
        self.cgroup.kill();
    }

    /// The reason SYS_EXIT gave, taken once its reply has been written.
    pub fn take_exit(&self) -> Option<String> {
        self.exiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    pub fn kill_reason(&self) -> Option<String> {
        self.kill_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The map of running agents.
#[derive(Default)]
pub struct LiveAgents {
    map: Mutex<HashMap<Pid, Arc<Live>>>,
}

impl LiveAgents {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Pid, Arc<Live>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, pid: Pid) -> Option<Arc<Live>> {
        self.lock().get(&pid).cloned()
    }

    pub fn insert(&self, pid: Pid, live: Arc<Live>) {
        self.lock().insert(pid, live);
    }

    pub fn remove(&self, pid: Pid) -> Option<Arc<Live>> {
        self.lock().remove(&pid)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
