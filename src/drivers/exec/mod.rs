//! EXEC_CMD: runs `/bin/sh -c CMD` for an agent, on its workspace, either in
//! a fresh sandbox built by the same launcher and profile as the agent
//! ([`sandbox`], the default) or in a locked-down Docker container
//! ([`docker`]). Both drivers kill everything the command started when its
//! timeout passes, keep at most `exec.max_output_bytes` of each of stdout and
//! stderr (reading and discarding the rest, so the command never blocks on a
//! full pipe), and clean up after themselves whatever happens to the caller.
//!
//! The command never gets a syscall socket: it cannot act as its agent.
//!
//! The kernel's EXEC_CMD handler checks the arguments ([`ExecRequest`]),
//! builds a [`Job`] from the caller's identity, limits and profile, and
//! hands it to [`run`], which takes one of the agent's command slots and
//! runs the job as its own task.

pub mod docker;
pub mod sandbox;

use crate::abi::SysError;
use crate::abi::wire::typed_args;
use crate::sandbox::profile::Profile;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;

/// Longest command accepted (the kernel's limit for one exec argument is
/// 128 KiB; a command is a line of shell, not a file transfer).
pub const MAX_CMD_BYTES: usize = 64 * 1024;
/// Commands one agent may have running at once; more answer EAGAIN. Each
/// one gets the agent's full memory and pids limits.
pub const MAX_RUNNING_PER_AGENT: usize = 4;

/// Arguments of EXEC_CMD.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecArgs {
    pub cmd: String,
    /// Seconds before the command and everything it started are killed;
    /// default `exec.default_timeout_s`, at most `exec.max_timeout_s`.
    #[serde(default)]
    pub timeout_s: Option<u64>,
    #[serde(default)]
    pub driver: Option<Driver>,
}

/// Where the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// A fresh sandbox like the agent's own (namespaces, uid, Landlock,
    /// seccomp, cgroup).
    #[default]
    Sandbox,
    /// A container of the configured image.
    Docker,
}

/// A validated request.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub cmd: String,
    pub timeout: Duration,
    pub driver: Driver,
}

impl ExecRequest {
    /// Checks the arguments against the daemon's `[exec]` settings. A
    /// timeout above `max_timeout_s` is lowered to it.
    pub fn check(args: &Value, cfg: &crate::config::ExecConfig) -> Result<Self, SysError> {
        let a: ExecArgs = typed_args("EXEC_CMD", args)?;
        if a.cmd.trim().is_empty() {
            return Err(SysError::inval("bad arguments for EXEC_CMD: cmd is empty"));
        }
        if a.cmd.len() > MAX_CMD_BYTES {
            return Err(SysError::msgsize(format!(
                "cmd is {} bytes; at most {MAX_CMD_BYTES}",
                a.cmd.len()
            )));
        }
        if a.cmd.contains('\0') {
            return Err(SysError::inval(
                "bad arguments for EXEC_CMD: cmd contains a NUL byte",
            ));
        }
        let secs = match a.timeout_s {
            Some(0) => {
                return Err(SysError::inval(
                    "bad arguments for EXEC_CMD: timeout_s must be at least 1",
                ));
            }
            Some(s) => s,
            None => cfg.default_timeout_s,
        };
        let secs = secs.min(cfg.max_timeout_s).max(1);
        Ok(ExecRequest {
            cmd: a.cmd,
            timeout: Duration::from_secs(secs),
            driver: a.driver.unwrap_or_default(),
        })
    }
}

/// At most `cap` bytes of one output stream; the rest is counted and dropped.
#[derive(Debug)]
pub struct Capture {
    buf: Vec<u8>,
    cap: usize,
    /// Bytes the command wrote, kept or not.
    pub total: u64,
}

impl Capture {
    pub fn new(cap: usize) -> Self {
        Capture {
            buf: Vec::new(),
            cap,
            total: 0,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.cap.saturating_sub(self.buf.len());
        let take = room.min(data.len());
        self.buf.extend_from_slice(&data[..take]);
    }

    pub fn truncated(&self) -> bool {
        self.total > self.buf.len() as u64
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

/// What a command produced.
#[derive(Debug)]
pub struct ExecOutput {
    pub stdout: Capture,
    pub stderr: Capture,
    /// The exit status, or 128 + signal (137 after a timeout's SIGKILL).
    pub exit_code: i32,
    pub timed_out: bool,
}

impl ExecOutput {
    pub fn to_json(&self) -> Value {
        json!({
            "stdout": self.stdout.text(),
            "stderr": self.stderr.text(),
            "exit_code": self.exit_code,
            "timed_out": self.timed_out,
            "truncated": self.stdout.truncated() || self.stderr.truncated(),
        })
    }
}

/// Resolves when the caller gives up on the command (it sent the signal, or
/// dropped its sender because its own future was dropped).
pub type Abort = oneshot::Receiver<()>;

/// Commands running per agent (by pid).
static RUNNING: Mutex<Option<HashMap<u64, usize>>> = Mutex::new(None);
/// Numbers the commands (cgroup and container names).
static NEXT: AtomicU64 = AtomicU64::new(1);

/// One of an agent's [`MAX_RUNNING_PER_AGENT`] command slots.
struct Slot(u64);

impl Slot {
    fn take(pid: u64) -> Result<Slot, SysError> {
        let mut map = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.get_or_insert_with(HashMap::new).entry(pid).or_insert(0);
        if *n >= MAX_RUNNING_PER_AGENT {
            return Err(SysError::new(
                crate::abi::Errno::EAGAIN,
                format!(
                    "{MAX_RUNNING_PER_AGENT} commands of this agent are running; wait for one to finish"
                ),
            ));
        }
        *n += 1;
        Ok(Slot(pid))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(map) = map.as_mut() {
            if let Some(n) = map.get_mut(&self.0) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&self.0);
                }
            }
        }
    }
}

/// A number for the next command, unique in this daemon (for the names of
/// its cgroup and container).
pub fn next_command_number() -> u64 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Refuses a sandboxed command that would share the daemon's network
/// namespace on a kernel whose Landlock cannot scope abstract Unix sockets.
pub fn check_shared_network(profile: &Profile) -> Result<(), SysError> {
    let abi = crate::sandbox::features::landlock_abi();
    if profile.exec.allow_network && abi < sandbox::MIN_ABI_FOR_SHARED_NETWORK {
        return Err(SysError::perm(format!(
            "profile {} allows EXEC_CMD a network, but this kernel's Landlock (ABI {abi}) cannot scope abstract Unix sockets (ABI {} needed); refusing to share the host network namespace",
            profile.name,
            sandbox::MIN_ABI_FOR_SHARED_NETWORK
        )));
    }
    Ok(())
}

/// Runs `job`, a command of agent `pid`, in one of the agent's command
/// slots (EAGAIN when they are all taken). The job runs as its own task:
/// whatever happens to this call (the agent dies, the connection goes), the
/// task still kills and removes what it started. When `dying` resolves
/// (the agent is being killed) the job is aborted and the call is EINTR.
pub async fn run(
    pid: u64,
    job: Job,
    dying: impl Future<Output = ()>,
) -> Result<ExecOutput, SysError> {
    let slot = Slot::take(pid)?;
    let (abort_tx, abort_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _slot = slot;
        match job {
            Job::Sandbox(j) => sandbox::run(*j, abort_rx).await,
            Job::Docker(j) => docker::run(*j, abort_rx).await,
        }
    });
    tokio::pin!(task);
    let outcome = tokio::select! {
        r = &mut task => r,
        _ = dying => {
            let _ = abort_tx.send(());
            let _ = (&mut task).await;
            return Err(SysError::intr("EXEC_CMD interrupted: the agent is being killed"));
        }
    };
    drop(abort_tx);
    outcome.map_err(|e| SysError::io(format!("EXEC_CMD task failed: {e}")))?
}

/// A command ready to run, with everything its driver needs.
pub enum Job {
    Sandbox(Box<sandbox::SandboxJob>),
    Docker(Box<docker::DockerJob>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ExecConfig;

    fn cfg() -> ExecConfig {
        ExecConfig {
            default_timeout_s: 30,
            max_timeout_s: 60,
            ..Default::default()
        }
    }

    #[test]
    fn arguments_are_checked_and_the_timeout_capped() {
        let r = ExecRequest::check(&json!({"cmd": "ls -la"}), &cfg()).expect("valid");
        assert_eq!(r.timeout, Duration::from_secs(30));
        assert_eq!(r.driver, Driver::Sandbox);
        let r = ExecRequest::check(
            &json!({"cmd": "ls", "timeout_s": 9999, "driver": "docker"}),
            &cfg(),
        )
        .expect("valid");
        assert_eq!(r.timeout, Duration::from_secs(60));
        assert_eq!(r.driver, Driver::Docker);
        for bad in [
            json!({}),
            json!({"cmd": ""}),
            json!({"cmd": "  "}),
            json!({"cmd": 5}),
            json!({"cmd": "ls", "timeout_s": 0}),
            json!({"cmd": "ls", "timeout_s": -1}),
            json!({"cmd": "ls", "timeout_s": "10"}),
            json!({"cmd": "ls", "driver": "host"}),
            json!({"cmd": "ls", "extra": true}),
            json!({"cmd": "a\u{0}b"}),
        ] {
            let e = ExecRequest::check(&bad, &cfg()).expect_err(&bad.to_string());
            assert_eq!(e.code, crate::abi::Errno::EINVAL, "{bad}: {e}");
        }
        let long = "x".repeat(MAX_CMD_BYTES + 1);
        let e = ExecRequest::check(&json!({ "cmd": long }), &cfg()).expect_err("too long");
        assert_eq!(e.code, crate::abi::Errno::EMSGSIZE);
    }

    #[test]
    fn capture_keeps_the_first_bytes_and_counts_the_rest() {
        let mut c = Capture::new(5);
        c.push(b"abc");
        assert!(!c.truncated());
        c.push(b"defgh");
        c.push(b"ijk");
        assert_eq!(c.text(), "abcde");
        assert_eq!(c.total, 11);
        assert!(c.truncated());
    }

    #[test]
    fn slots_are_limited_per_agent_and_released() {
        let pid = u64::MAX - 7;
        let slots: Vec<_> = (0..MAX_RUNNING_PER_AGENT)
            .map(|_| Slot::take(pid).expect("free slot"))
            .collect();
        let e = Slot::take(pid).err().expect("no slot left");
        assert_eq!(e.code, crate::abi::Errno::EAGAIN);
        assert!(Slot::take(pid - 1).is_ok(), "other agents are not affected");
        drop(slots);
        assert!(Slot::take(pid).is_ok());
    }
}
