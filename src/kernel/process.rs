//! Process syscalls (GETPID, SYS_EXIT, SPAWN_AGENT, WAIT, KILL, PS, SLEEP)
//! and the process operations shared with the admin socket (kill, wait,
//! stop, continue).

use super::Kernel;
use super::pcb::{ExitStatus, Pcb, Pid, State};
use super::spawn::rule::{Ceiling, ChildRequest};
use crate::abi::calls::{ExitArgs, PidArgs, SleepArgs, SpawnArgs, WaitArgs};
use crate::abi::wire::typed_args;
use crate::abi::{Errno, SysError};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Longest SLEEP or WAIT a single call may ask for.
const MAX_BLOCK_MS: u64 = 24 * 3600 * 1000;

/// The short form of a PCB used by PS.
pub fn ps_entry(p: &Pcb) -> Value {
    json!({"pid": p.pid, "ppid": p.ppid, "name": p.name, "state": p.state})
}

impl Kernel {
    pub fn sys_getpid(&self, pcb: &Pcb, _args: &Value) -> Result<Value, SysError> {
        Ok(json!({"pid": pcb.pid, "ppid": pcb.ppid}))
    }

    /// Records the exit status durably, then ends the agent.
    pub async fn sys_exit(&self, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
        let a: ExitArgs = typed_args("SYS_EXIT", args)?;
        let reason = match a.reason {
            Some(r) => format!("SYS_EXIT({}): {}", a.code, super::journal::clip(r)),
            None => format!("SYS_EXIT({})", a.code),
        };
        self.table
            .update(pcb.pid, |p| {
                p.exit = Some(ExitStatus {
                    code: a.code,
                    signal: None,
                    reason: reason.clone(),
                })
            })
            .map_err(|e| SysError::io(e.to_string()))?;
        self.store
            .durable()
            .await
            .map_err(|e| SysError::io(e.to_string()))?;
        if let Some(live) = self.live.get(pcb.pid) {
            // The connection ends the agent once this reply is written.
            *live.exiting.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
        }
        Ok(json!({"exiting": true}))
    }

    /// SPAWN_AGENT: a child within this agent's own ceiling (see
    /// [`super::spawn::rule`]).
    pub async fn sys_spawn(self: &Arc<Self>, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
        let a: SpawnArgs = typed_args("SPAWN_AGENT", args)?;
        let request = ChildRequest {
            name: a.name,
            program: a.program,
            args: a.args,
            permissions: Some(a.permissions),
            limits: a.limits,
            role: a.role,
            model: a.model,
            priority: a.priority,
            pipe_to: a.pipe_to,
            ..ChildRequest::default()
        };
        let child = self.spawn(Ceiling::Agent(pcb), request).await?;
        Ok(json!({"pid": child.pid}))
    }

    pub async fn sys_wait(&self, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
        let a: WaitArgs = typed_args("WAIT", args)?;
        match self.table.get(a.pid) {
            Some(c) if c.ppid == pcb.pid => {}
            _ => {
                return Err(SysError::new(
                    Errno::ECHILD,
                    format!("agent {} is not a child of {}", a.pid, pcb.pid),
                ));
            }
        }
        let timeout = a.timeout_ms.map(|t| t.min(MAX_BLOCK_MS));
        self.set_activity(pcb.pid, State::Blocked, Some("WAIT"));
        let r = self.wait_for(a.pid, timeout, Some(pcb.pid)).await;
        self.set_activity(pcb.pid, State::Running, None);
        let exit = r?;
        Ok(
            json!({"pid": a.pid, "exit_code": exit.code, "signal": exit.signal, "reason": exit.reason}),
        )
    }

    pub fn sys_kill(&self, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
        let a: PidArgs = typed_args("KILL", args)?;
        if !self.table.is_descendant(pcb.pid, a.pid) {
            return Err(SysError::perm(format!(
                "agent {} is not a descendant of {}",
                a.pid, pcb.pid
            )));
        }
        self.kill_agent(a.pid, &format!("killed by agent {}", pcb.pid))?;
        Ok(json!({"killed": a.pid}))
    }

    pub fn sys_ps(&self, pcb: &Pcb, _args: &Value) -> Result<Value, SysError> {
        let list: Vec<Value> = self.table.subtree(pcb.pid).iter().map(ps_entry).collect();
        Ok(json!({"agents": list}))
    }

    pub async fn sys_sleep(&self, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
        let a: SleepArgs = typed_args("SLEEP", args)?;
        if a.ms > MAX_BLOCK_MS {
            return Err(SysError::inval(format!(
                "SLEEP of more than {MAX_BLOCK_MS} ms"
            )));
        }
        let live = self
            .live
            .get(pcb.pid)
            .ok_or_else(|| SysError::srch("agent is not running"))?;
        self.set_activity(pcb.pid, State::Sleeping, Some("SLEEP"));
        let dying = live.dying.notified();
        let interrupted = tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(a.ms)) => false,
            _ = dying => true,
        };
        self.set_activity(pcb.pid, State::Running, None);
        if interrupted {
            return Err(SysError::intr(
                "SLEEP interrupted: the agent is being killed",
            ));
        }
        Ok(json!({"slept_ms": a.ms}))
    }

    /// Moves the agent between RUNNING/BLOCKED/SLEEPING and journals it.
    pub fn set_activity(&self, pid: Pid, to: State, why: Option<&str>) {
        match self.table.set_activity(pid, to) {
            Ok(Some(from)) => self.journal_state(pid, from, to, why.map(String::from)),
            Ok(None) => {}
            Err(e) => tracing::error!(pid, "state change failed: {e}"),
        }
    }

    /// Ends a live agent for `reason`.
    pub fn kill_agent(&self, pid: Pid, reason: &str) -> Result<(), SysError> {
        let pcb = self
            .table
            .get(pid)
            .ok_or_else(|| SysError::srch(format!("no agent {pid}")))?;
        if !pcb.is_live() {
            return Err(SysError::srch(format!(
                "agent {pid} has already terminated"
            )));
        }
        let live = self
            .live
            .get(pid)
            .ok_or_else(|| SysError::srch(format!("agent {pid} is not running")))?;
        // A frozen cgroup must thaw for the kill to be delivered.
        live.cgroup.freeze(false);
        live.kill(reason);
        Ok(())
    }

    /// Waits until `pid` is TERMINATED. `waiter` is the waiting agent, whose
    /// own death ends the wait with EINTR.
    pub async fn wait_for(
        &self,
        pid: Pid,
        timeout_ms: Option<u64>,
        waiter: Option<Pid>,
    ) -> Result<ExitStatus, SysError> {
        let deadline = timeout_ms.map(|t| tokio::time::Instant::now() + Duration::from_millis(t));
        let waiter_live = waiter.and_then(|w| self.live.get(w));
        loop {
            let notified = self.exits.notified();
            let dying = waiter_live.as_ref().map(|l| l.dying.notified());
            match self.table.get(pid) {
                None => return Err(SysError::srch(format!("no agent {pid}"))),
                Some(p) if !p.is_live() => {
                    return p
                        .exit
                        .ok_or_else(|| SysError::io("terminated without a status"));
                }
                Some(_) => {}
            }
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let dying = async {
                match dying {
                    Some(d) => d.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = notified => {}
                _ = sleep => return Err(SysError::new(Errno::ETIMEDOUT, format!("agent {pid} is still running"))),
                _ = dying => return Err(SysError::intr("WAIT interrupted: the agent is being killed")),
            }
        }
    }

    /// Freezes (`stop`) or thaws an agent.
    pub fn set_stopped(&self, pid: Pid, stop: bool) -> Result<State, SysError> {
        let pcb = self
            .table
            .get(pid)
            .ok_or_else(|| SysError::srch(format!("no agent {pid}")))?;
        let live = self
            .live
            .get(pid)
            .ok_or_else(|| SysError::srch(format!("agent {pid} is not running")))?;
        let (from, to) = match (stop, pcb.state) {
            (true, State::Stopped) | (false, State::Running | State::Blocked | State::Sleeping) => {
                return Ok(pcb.state);
            }
            (true, s @ (State::Running | State::Blocked | State::Sleeping)) => (s, State::Stopped),
            (false, State::Stopped) => (State::Stopped, State::Running),
            (_, s) => {
                return Err(SysError::inval(format!("agent {pid} is {}", s.as_str())));
            }
        };
        if !live.cgroup.freeze(stop) {
            return Err(SysError::io("this host offers no cgroup freezer"));
        }
        self.table
            .update(pid, |p| p.state = to)
            .map_err(|e| SysError::io(e.to_string()))?;
        self.journal_state(pid, from, to, Some("admin".into()));
        Ok(to)
    }
}
