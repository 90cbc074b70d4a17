//! The `sandbox` driver: `/bin/sh -c CMD` in a fresh confinement built by
//! the launcher server from the agent's own profile, exactly like the agent's
//! (pid, mount, net, ipc, uts and cgroup namespaces; the agent's uid and gid;
//! no capabilities; no_new_privs; Landlock; the profile's seccomp filters),
//! with these differences:
//!
//! - its root holds only the profile's system directories (not the agent's
//!   program or extra binds), a fresh /tmp and the agent's workspace at
//!   /workspace (read-write, the working directory);
//! - fd 0 is /dev/null, fds 1 and 2 are pipes the daemon reads, and fd 3
//!   (`AGENT_SOCKET_FD`) is a socket whose other end the daemon closed
//!   before the command can run: it has no syscall connection and cannot
//!   act as its agent;
//! - it lives in its own cgroup `exec-<pid>-<n>` with the agent's memory,
//!   pids and cpu limits, killed (`cgroup.kill`, or freeze and sweep on v1)
//!   at the timeout and removed afterwards;
//! - with `exec.allow_network` in the profile it keeps the daemon's network
//!   namespace (see [`MIN_ABI_FOR_SHARED_NETWORK`]); otherwise its network
//!   namespace is new and holds only a down loopback.

use super::{Abort, Capture, ExecOutput};
use crate::abi::SysError;
use crate::abi::limits::Limits;
use crate::sandbox::cgroup::{AgentCgroup, Cgroups};
use crate::sandbox::plan::{Identity, LaunchPlan};
use crate::sandbox::profile::Profile;
use crate::sandbox::spawner::{Launched, Payload, Spawner, launch_events};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Sharing the daemon's network namespace also shares its abstract Unix
/// sockets; Landlock ABI 6 scopes those to the sandbox. Below it, a profile
/// with `exec.allow_network` is refused rather than weakened.
pub const MIN_ABI_FOR_SHARED_NETWORK: u32 = 6;
/// How long output may still be drained after the command's end.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Everything one sandboxed command needs, owned (it runs as its own task).
pub struct SandboxJob {
    /// The plan; `cgroup_procs` is filled in once the cgroup exists.
    pub plan: LaunchPlan,
    pub spawner: Arc<Spawner>,
    pub cgroups: Cgroups,
    /// Path of the command's cgroup under the daemon's instance: inside
    /// its agent's (`<agent path>/exec-<n>`), so the agent's limits bound it.
    pub cgroup_leaf: std::path::PathBuf,
    pub limits: Limits,
    pub timeout: Duration,
    pub max_output: usize,
}

/// The launch plan of a command of the agent `who`: its identity, limits,
/// the Landlock ABI, seccomp filters and system binds of its `profile`,
/// and `/bin/sh -c cmd` as the program. Nothing but the system directories
/// is bound (no program, no extra binds); the network is the daemon's when
/// the profile allows EXEC_CMD one.
pub fn plan(
    who: Identity,
    limits: &Limits,
    profile: &Profile,
    cmd: &str,
    new_root: PathBuf,
    workspace: PathBuf,
) -> LaunchPlan {
    let mut plan = LaunchPlan::new(
        who,
        limits,
        profile,
        PathBuf::from("/bin/sh"),
        vec!["-c".into(), cmd.to_string()],
        new_root,
        workspace,
    );
    plan.share_network = profile.exec.allow_network;
    plan
}

/// Runs the command; always kills and removes its cgroup before returning.
pub async fn run(mut job: SandboxJob, abort: Abort) -> Result<ExecOutput, SysError> {
    let cgroups = job.cgroups.clone();
    let leaf = job.cgroup_leaf.clone();
    let limits = job.limits;
    let cgroup = tokio::task::spawn_blocking(move || cgroups.create_named(&leaf, &limits))
        .await
        .map_err(|e| SysError::io(format!("cgroup: {e}")))?
        .map_err(|e| SysError::io(format!("cgroup: {e}")))?;
    job.plan.cgroup_procs = cgroup.procs_files();
    let result = launch_and_wait(&job, &cgroup, abort).await;
    let cg = cgroup.clone();
    let _ = tokio::task::spawn_blocking(move || cg.remove()).await;
    result
}

async fn launch_and_wait(
    job: &SandboxJob,
    cgroup: &AgentCgroup,
    mut abort: Abort,
) -> Result<ExecOutput, SysError> {
    let (launched, io) = job
        .spawner
        .launch(job.plan.clone(), &[])
        .await
        .map_err(|e| SysError::io(e.to_string()))?;
    let mut child = KillOnDrop(launched);
    // fd 3 of the command: a socket whose other end is closed before the
    // command can run (pid 1 waits for the cgroup byte below).
    drop(io.socket);
    // The command's cgroup exists already.
    nix::unistd::write(&io.cgroup_ready, &[1])
        .map_err(|e| SysError::io(format!("cgroup ready pipe: {e}")))?;
    drop(io.cgroup_ready);
    let (out_r, err_r, status_r) = (io.stdout, io.stderr, io.status);

    let stdout = Arc::new(Mutex::new(Capture::new(job.max_output)));
    let stderr = Arc::new(Mutex::new(Capture::new(job.max_output)));
    let pumps = [
        tokio::spawn(drain(out_r, stdout.clone())),
        tokio::spawn(drain(err_r, stderr.clone())),
    ];

    let kill = |child: &mut KillOnDrop| {
        child.0.kill();
        let cg = cgroup.clone();
        tokio::task::spawn_blocking(move || cg.kill())
    };

    // Setup: the host pid, then EOF (exec'd) or a failed step.
    let setup = tokio::select! {
        r = launch_events(status_r, Payload::Command) => r.err().map(|e| e.to_string()),
        _ = &mut abort => Some("aborted".into()),
    };
    if let Some(reason) = setup {
        let _ = kill(&mut child).await;
        let _ = child.0.wait().await;
        for p in pumps {
            p.abort();
        }
        return Err(SysError::io(reason));
    }

    let (status, timed_out) = tokio::select! {
        s = child.0.wait() => (s, false),
        _ = tokio::time::sleep(job.timeout) => {
            let _ = kill(&mut child).await;
            (child.0.wait().await, true)
        }
        _ = &mut abort => {
            let _ = kill(&mut child).await;
            let _ = child.0.wait().await;
            for p in pumps {
                p.abort();
            }
            return Err(SysError::intr("EXEC_CMD aborted"));
        }
    };
    // The command's pid 1 is gone, so is its pid namespace; make sure of
    // the cgroup too, then collect what the pipes still hold.
    let _ = kill(&mut child).await;
    for p in pumps {
        let handle = p.abort_handle();
        if tokio::time::timeout(DRAIN_GRACE, p).await.is_err() {
            handle.abort();
        }
    }
    let exit_code = match status {
        Some(s) => {
            use std::os::unix::process::ExitStatusExt;
            match s.signal() {
                Some(sig) => 128 + sig,
                None => s.code().unwrap_or(-1),
            }
        }
        None => -1,
    };
    let take = |c: &Arc<Mutex<Capture>>| {
        std::mem::replace(
            &mut *c.lock().unwrap_or_else(|e| e.into_inner()),
            Capture::new(0),
        )
    };
    Ok(ExecOutput {
        stdout: take(&stdout),
        stderr: take(&stderr),
        exit_code,
        timed_out,
    })
}

/// The command's relay, killed if this task is dropped before it ended.
struct KillOnDrop(Launched);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.kill();
    }
}

/// Reads a pipe to EOF into `into`, which keeps what fits.
async fn drain(fd: OwnedFd, into: Arc<Mutex<Capture>>) {
    let Ok(mut rx) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => into
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(&buf[..n]),
        }
    }
}
