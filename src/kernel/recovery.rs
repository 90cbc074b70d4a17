//! Recovery after a restart (docs/DURABILITY.md). Agents that were not
//! TERMINATED when the previous daemon stopped — crashed, killed or shut
//! down — are started again in a fresh sandbox with the same pid, uid,
//! workspace, permissions, limits, counters and parent/child links. Their
//! inboxes, stdin queues and timers are in the database; the built-in
//! runtime rebuilds its context from the journal; other programs get
//! `AGENTOS_RECOVERED=<n>` in their environment so they can resume.

use super::Kernel;
use super::pcb::{ExitStatus, Pid, State, now_ms};
use super::store::StoreError;
use crate::abi::SysError;
use crate::sandbox::profile::ProfileError;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Agents relaunched at once during recovery.
const PARALLEL_RELAUNCHES: usize = 16;

/// Why one agent could not be started again.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("the PCB vanished")]
    Vanished,
    #[error("parent {0} ended")]
    ParentEnded(Pid),
    #[error("its uid {uid} is outside the configured range {first}-{last}")]
    UidOutOfRange { uid: u32, first: u32, last: u32 },
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A model that is no longer configured, a bind that cannot be opened,
    /// a sandbox that did not start.
    #[error("{}", .0.message)]
    Launch(SysError),
}

/// What recovery did, for the log and `agentos status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecoverySummary {
    pub recovered: usize,
    pub failed: Vec<(Pid, String)>,
    pub millis: u64,
}

impl Kernel {
    /// At open, before anything new can start: clears cgroups left by the
    /// previous run, holds the uids of live agents and marks them READY.
    pub(crate) fn prepare_recovery(&self) -> Result<(), super::KernelError> {
        // Every cgroup of the previous run, nested ones included.
        self.cgroups.remove_all();
        let mut uids = self.uids.lock().unwrap_or_else(|e| e.into_inner());
        for pcb in self.table.all() {
            if !pcb.is_live() {
                continue;
            }
            if self.config.uid_range.contains(pcb.uid) {
                uids.hold(pcb.uid);
            }
            let from = pcb.state;
            self.table.update(pcb.pid, |p| {
                p.state = State::Ready;
                p.host_pid = None;
                p.host_start = None;
            })?;
            self.journal_state(
                pcb.pid,
                from,
                State::Ready,
                Some("supervisor restarted; syscalls in flight were interrupted (EINTR)".into()),
            );
        }
        Ok(())
    }

    /// Relaunches every agent left READY by [`Kernel::prepare_recovery`].
    pub async fn recover(self: &Arc<Self>) -> RecoverySummary {
        let started = Instant::now();
        let pending: Vec<Pid> = self
            .table
            .all()
            .into_iter()
            .filter(|p| {
                p.state == State::Ready && p.host_pid.is_none() && self.live.get(p.pid).is_none()
            })
            .map(|p| p.pid)
            .collect();
        // A child's cgroup nests in its parent's: relaunch depth by depth,
        // parents first; a child whose parent is not live ends with it.
        let mut waves: std::collections::BTreeMap<usize, Vec<Pid>> = Default::default();
        for pid in pending {
            waves
                .entry(self.table.lineage(pid).len())
                .or_default()
                .push(pid);
        }
        let slots = Arc::new(tokio::sync::Semaphore::new(PARALLEL_RELAUNCHES));
        let mut summary = RecoverySummary::default();
        for (_, wave) in waves {
            let mut tasks = Vec::new();
            for pid in wave {
                let k = self.clone();
                let slots = slots.clone();
                tasks.push(tokio::spawn(async move {
                    let _slot = slots.acquire().await;
                    (pid, k.relaunch(pid).await)
                }));
            }
            for t in tasks {
                match t.await {
                    Ok((_, Ok(()))) => summary.recovered += 1,
                    Ok((pid, Err(e))) => summary.failed.push((pid, e.to_string())),
                    Err(e) => summary
                        .failed
                        .push((0, format!("recovery task failed: {e}"))),
                }
            }
        }
        summary.millis = started.elapsed().as_millis() as u64;
        if summary.recovered > 0 || !summary.failed.is_empty() {
            tracing::info!(
                recovered = summary.recovered,
                failed = summary.failed.len(),
                millis = summary.millis,
                "recovery finished"
            );
        }
        for (pid, reason) in &summary.failed {
            tracing::warn!(pid, "agent could not be recovered: {reason}");
        }
        summary
    }

    /// Starts one agent again; on failure it becomes TERMINATED with why.
    async fn relaunch(self: &Arc<Self>, pid: Pid) -> Result<(), RecoveryError> {
        let result = self.try_relaunch(pid).await;
        if let Err(reason) = &result {
            self.mark_terminated(
                pid,
                ExitStatus {
                    code: -1,
                    signal: None,
                    reason: format!("could not be recovered: {reason}"),
                },
            )
            .await;
        }
        result
    }

    async fn try_relaunch(self: &Arc<Self>, pid: Pid) -> Result<(), RecoveryError> {
        let pcb = self.table.get(pid).ok_or(RecoveryError::Vanished)?;
        if pcb.ppid != 0 && self.live.get(pcb.ppid).is_none() {
            return Err(RecoveryError::ParentEnded(pcb.ppid));
        }
        let range = self.config.uid_range;
        if !range.contains(pcb.uid) {
            return Err(RecoveryError::UidOutOfRange {
                uid: pcb.uid,
                first: range.first,
                last: range.last,
            });
        }
        let profile = self.profiles.get(&pcb.profile)?.clone();
        if let Some(m) = &pcb.model {
            self.inference().model(m).map_err(RecoveryError::Launch)?;
        }
        let mut paths = vec![PathBuf::from(&pcb.program)];
        paths.extend(pcb.ro_binds.iter().map(PathBuf::from));
        let binds = super::spawn::open_binds(&paths, pcb.owner, pcb.owner_gid)
            .await
            .map_err(RecoveryError::Launch)?;
        let pcb = self
            .table
            .update(pid, |p| {
                p.recoveries += 1;
                p.started_ms = Some(now_ms());
            })?
            .ok_or(RecoveryError::Vanished)?;
        self.launch(&pcb, &profile, binds, Vec::new())
            .await
            .map_err(RecoveryError::Launch)?;
        Ok(self.store.durable().await?)
    }

    /// An agent stopped by a graceful shutdown: keep it live in the table
    /// (READY, no process) so the next start recovers it.
    pub(crate) async fn park_for_recovery(&self, pid: Pid) {
        let mut from = State::Ready;
        let parked = self.table.update(pid, |p| {
            from = p.state;
            p.state = State::Ready;
            p.host_pid = None;
            p.host_start = None;
        });
        if let Err(e) = parked {
            // The table still says it runs; the next start's recovery
            // relaunches it all the same.
            tracing::error!(pid, "cannot record the agent as parked for recovery: {e}");
        }
        self.journal_state(
            pid,
            from,
            State::Ready,
            Some("supervisor shutting down; will be recovered".into()),
        );
        if let Err(e) = self.store.durable().await {
            tracing::error!(pid, "flush at shutdown failed: {e}");
        }
    }
}

impl Kernel {
    /// Graceful shutdown: refuse new syscalls (EINTR), let those in flight
    /// finish for up to `grace`, then stop every agent — they stay live in
    /// the table and are recovered at the next start.
    pub async fn shutdown(self: &Arc<Self>, grace: std::time::Duration) {
        use std::sync::atomic::Ordering;
        self.shutting_down.store(true, Ordering::SeqCst);
        // Blocking calls (RECV_MSG, WAIT, SLEEP, LLM_INFER) answer EINTR now.
        for pcb in self.table.all() {
            if let Some(live) = self.live.get(pcb.pid) {
                live.dying.notify_waiters();
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        while self.in_flight.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        for pcb in self.table.all() {
            if let Some(live) = self.live.get(pcb.pid) {
                live.stop_for_shutdown();
            }
        }
        while !self.live.is_empty() && tokio::time::Instant::now() < deadline + grace {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if !self.live.is_empty() {
            tracing::warn!(left = self.live.len(), "agents still stopping at exit");
        }
    }
}
