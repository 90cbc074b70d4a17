//! The end of an agent: its stdout and stderr copied into its log, the
//! reaper that waits for its pid 1 (or its wall-time limit), and the
//! TERMINATED PCB with the reason it ended (or, at a daemon shutdown, a
//! READY one to recover).

use crate::kernel::Kernel;
use crate::kernel::journal::MAX_LOG_LINE;
use crate::kernel::journal::clip;
use crate::kernel::live::Live;
use crate::kernel::pcb::{ExitStatus, Pid, State, now_ms};
use crate::sandbox::spawner::Launched;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, BufReader};

/// Past `log_bytes` an output pipe is read in chunks of this size...
const DRAIN_CHUNK: usize = 64 << 10;
/// ...with this pause after each: at most ~6.4 MB/s, so that an agent
/// flooding its output blocks in its own writes instead of spending the
/// daemon's CPU on lines nobody keeps.
const DRAIN_PAUSE: Duration = Duration::from_millis(10);

/// Reads and discards what remains of an output pipe whose agent has
/// used up its `log_bytes`, paced (see [`DRAIN_PAUSE`]).
async fn drain_output<R: tokio::io::AsyncRead + Unpin>(mut reader: BufReader<R>) {
    let mut sink = vec![0u8; DRAIN_CHUNK];
    loop {
        match reader.read(&mut sink).await {
            Ok(0) | Err(_) => return,
            Ok(_) => tokio::time::sleep(DRAIN_PAUSE).await,
        }
    }
}

impl Kernel {
    /// Copies one output pipe of the agent into its log.
    pub(super) async fn pump_output(
        self: Arc<Self>,
        pid: Pid,
        fd: OwnedFd,
        stream: &'static str,
        live: Arc<Live>,
    ) {
        let Ok(rx) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
            return;
        };
        let cap = self
            .table
            .get(pid)
            .map(|p| self.log_cap(&p.limits))
            .unwrap_or(self.config.log_bytes_per_agent);
        let mut reader = BufReader::new(rx);
        let mut buf = Vec::new();
        loop {
            if live.logged_bytes.load(std::sync::atomic::Ordering::Relaxed) > cap {
                return drain_output(reader).await;
            }
            buf.clear();
            // Read up to a newline, but never hold more than MAX_LOG_LINE.
            let mut limited = (&mut reader).take(MAX_LOG_LINE as u64);
            match tokio::io::AsyncBufReadExt::read_until(&mut limited, b'\n', &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&buf);
                    let text = text.strip_suffix('\n').unwrap_or(&text);
                    self.log_output(pid, &live, cap, stream, text);
                }
            }
        }
    }

    /// Waits for the agent to end (or its wall-time limit) and finishes it.
    pub(super) async fn reap(
        self: Arc<Self>,
        pid: Pid,
        mut sandbox: Launched,
        live: Arc<Live>,
        wall_s: u64,
    ) {
        let status = if wall_s > 0 {
            tokio::select! {
                s = sandbox.wait() => s,
                _ = tokio::time::sleep(Duration::from_secs(wall_s)) => {
                    live.kill(&format!("wall-time limit of {wall_s} s reached"));
                    sandbox.wait().await
                }
            }
        } else {
            sandbox.wait().await
        };
        self.finish(pid, &live, status).await;
    }

    /// Records how the agent ended, removes its cgroup and wakes waiters.
    pub(super) async fn finish(
        &self,
        pid: Pid,
        live: &Arc<Live>,
        status: Option<std::process::ExitStatus>,
    ) {
        use std::os::unix::process::ExitStatusExt;
        let oom = live.cgroup.oom_killed();
        let kill_reason = live.kill_reason();
        let limit = self
            .table
            .get(pid)
            .map(|p| p.limits.memory_bytes)
            .unwrap_or(0);
        let shutting_down = self.shutting_down.load(std::sync::atomic::Ordering::SeqCst);
        if !(shutting_down && kill_reason.is_none()) {
            // The subtree ends with its root: every live descendant is ended
            // with its reason before the cgroup (which holds theirs) goes.
            self.end_descendants(pid);
        }
        let cgroup = live.cgroup.clone();
        let _ = tokio::task::spawn_blocking(move || cgroup.remove()).await;

        let (code, signal) = match status {
            Some(s) => match s.signal() {
                Some(sig) => (128 + sig, Some(sig)),
                None => (s.code().unwrap_or(-1), None),
            },
            None => (-1, None),
        };
        if self.shutting_down.load(std::sync::atomic::Ordering::SeqCst) && kill_reason.is_none() {
            // Stopped for a daemon shutdown: the agent stays live in the
            // table and is recovered at the next start.
            self.park_for_recovery(pid).await;
            self.live.remove(pid);
            return;
        }
        let reason = if let Some(r) = kill_reason {
            r
        } else if oom {
            format!("killed by the OOM killer (memory limit {limit} bytes)")
        } else if let Some(sig) = signal {
            format!("killed by signal {}", signal_name(sig))
        } else {
            format!("exited with code {code}")
        };
        self.mark_terminated(
            pid,
            ExitStatus {
                code,
                signal,
                reason,
            },
        )
        .await;
        self.live.remove(pid);
    }

    /// Ends every live descendant of `pid`, each for the reason "parent
    /// <its parent> ended" (set before any of them is killed, so none of
    /// them ends for another reason). Descendants still being launched
    /// fail their cgroup step: the parent's cgroup is gone.
    pub(crate) fn end_descendants(&self, pid: Pid) {
        let below: Vec<_> = self
            .table
            .subtree(pid)
            .into_iter()
            .filter(|p| p.pid != pid && p.is_live())
            .collect();
        let lives: Vec<_> = below
            .iter()
            .filter_map(|p| self.live.get(p.pid).map(|l| (p.ppid, l)))
            .collect();
        for (ppid, live) in &lives {
            live.set_reason(&format!("parent {ppid} ended"));
        }
        for (ppid, live) in &lives {
            live.cgroup.freeze(false);
            live.kill(&format!("parent {ppid} ended"));
        }
    }

    /// Makes the PCB TERMINATED (keeping an exit status already recorded by
    /// SYS_EXIT), makes that durable, frees the uid and wakes waiters.
    pub(crate) async fn mark_terminated(&self, pid: Pid, exit: ExitStatus) {
        let ended = self.table.terminate(pid, |p| {
            p.host_pid = None;
            p.host_start = None;
            p.ended_ms = Some(now_ms());
            if p.exit.is_none() {
                p.exit = Some(exit.clone());
            }
        });
        let (from, uid, reason) = match ended {
            Ok(Some((from, p))) => (from, p.uid, p.exit.map(|e| e.reason)),
            Ok(None) => return,
            Err(e) => {
                tracing::error!(pid, "cannot record termination: {e}");
                return;
            }
        };
        self.journal_state(pid, from, State::Terminated, reason.map(clip));
        if let Err(e) = self.store.durable().await {
            tracing::error!(pid, "flush after termination failed: {e}");
        }
        self.release_uid(uid);
        self.cancel_timers(pid);
        self.drop_webhooks(pid);
        self.journal_retention.forget(pid);
        self.audit_trail.forget(pid);
        tracing::info!(pid, "agent terminated");
        self.exits.notify_waiters();
    }
}

/// The name of a signal number (SIGKILL), or the number.
pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("{sig}"))
}
