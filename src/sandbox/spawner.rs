//! The daemon's side of the launcher server ([`super::launch_server`]):
//! starts `agentos-launcher` once, sends it launch requests with their
//! descriptors, and routes its replies — pid 1's host pid when a
//! sandbox starts, its wait status when it ends — to whoever asked.
//! [`launch_events`] reads a sandbox's status pipe until its program runs,
//! for the agent spawn and EXEC_CMD alike.
//!
//! The daemon never forks itself for a sandbox: its memory and descriptor
//! table grow with every agent, the server's do not.

use super::handoff::{
    self, HandoffError, LaunchEvent, LaunchRequest, LauncherReply, Leading, MAX_MESSAGE_BYTES,
};
use super::plan::LaunchPlan;
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, setsockopt, sockopt};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::oneshot;

/// How long the server may take to fork one sandbox.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a sandbox may take from its fork to the exec of its program.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Exit code of the daemon when the launcher server dies under it: no
/// sandbox can start any more and every agent died with the server, so the
/// daemon exits to be restarted and recover them.
const EXIT_LAUNCHER_GONE: i32 = 70;

#[derive(Debug, thiserror::Error)]
pub enum SpawnerError {
    #[error("{0}: {1}")]
    Io(&'static str, #[source] std::io::Error),
    #[error("handing the plan to the launcher: {0}")]
    Handoff(#[from] HandoffError),
    #[error("the launcher could not start the sandbox: {0}")]
    Refused(String),
    #[error("the launcher server is gone")]
    Gone,
    #[error("the launcher did not answer within {START_TIMEOUT:?}")]
    Timeout,
}

/// What the server answered a request.
enum Start {
    /// pid 1 runs as this host pid.
    Forked(i32),
    /// The server could not fork it, and why.
    Refused(String),
}

/// Replies still expected for one request.
struct Pending {
    started: Option<oneshot::Sender<Start>>,
    exited: Option<oneshot::Sender<i32>>,
}

type PendingMap = Arc<Mutex<HashMap<u64, Pending>>>;

/// The connection to the launcher server; shared by everything that starts
/// sandboxes.
pub struct Spawner {
    sock: Arc<AsyncFd<OwnedFd>>,
    next_id: AtomicU64,
    pending: PendingMap,
}

/// The daemon's ends of a sandbox's descriptors. The sandbox's ends travel
/// with the request and are closed here once the server has them.
pub struct SandboxIo {
    /// The agent's syscall socket ([`handoff::AGENT_SOCKET_FD`] in the sandbox).
    pub socket: UnixStream,
    /// Read ends of the agent's stdout and stderr.
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// Read end of the status pipe: the host pid, then a failed step or EOF
    /// at exec.
    pub status: OwnedFd,
    /// Write one byte once the sandbox's cgroups exist; closing it unwritten
    /// fails the sandbox's cgroup step.
    pub cgroup_ready: OwnedFd,
}

/// A sandbox as started by the server.
pub struct Launched {
    /// Host pid of the sandbox's pid 1 (the launcher server's child);
    /// killing it ends its whole pid namespace.
    pub host_pid: i32,
    /// Start time of pid 1, so that a recycled pid is never signalled.
    start: Option<u64>,
    exit: oneshot::Receiver<i32>,
    ended: Option<Option<ExitStatus>>,
}

impl Launched {
    /// Waits for pid 1's end: the agent program's exit status. None
    /// when the launcher server went away first. Cancel-safe, and may be
    /// called again after it returned.
    pub async fn wait(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.ended {
            return status;
        }
        let status = (&mut self.exit).await.ok().map(ExitStatus::from_raw);
        self.ended = Some(status);
        status
    }

    /// Sends SIGKILL to pid 1 through a pidfd, unless it was already seen
    /// to end.
    pub fn kill(&self) {
        if self.ended.is_none()
            && let Some(start) = self.start
        {
            super::pidfd::kill_if_same(self.host_pid, start);
        }
    }

    /// Start time of pid 1 (see [`super::pidfd::start_time`]).
    pub fn start_time(&self) -> Option<u64> {
        self.start
    }
}

impl Spawner {
    /// Starts the launcher server. Call from within the tokio runtime.
    pub fn start(launcher: &Path) -> Result<Spawner, SpawnerError> {
        let io = |what| move |e: nix::Error| SpawnerError::Io(what, e.into());
        let (ours, theirs) = nix::sys::socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .map_err(io("socketpair"))?;
        // A request is one message: the sender's buffer must hold the
        // largest. Forcing it past wmem_max needs CAP_NET_ADMIN (root has it).
        let size = 2 * MAX_MESSAGE_BYTES;
        if setsockopt(&ours, sockopt::SndBufForce, &size).is_err() {
            setsockopt(&ours, sockopt::SndBuf, &size).map_err(io("SO_SNDBUF"))?;
        }
        // The server's end blocks.
        nix::fcntl::fcntl(
            &theirs,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
        )
        .map_err(io("control socket"))?;
        start_server(launcher, theirs)?;
        // SAFETY: `ours` is an open socket owned by the AsyncFd from here
        // on; an OwnedFd always reports the same descriptor.
        let sock = unsafe { AsyncFd::register(ours) }
            .map_err(|e| SpawnerError::Io("control socket", e.into()))?;
        let sock = Arc::new(sock);
        let pending: PendingMap = Default::default();
        tokio::spawn(read_replies(sock.clone(), pending.clone()));
        Ok(Spawner {
            sock,
            next_id: AtomicU64::new(1),
            pending,
        })
    }

    /// Asks the server for one sandbox, with the sources of the plan's
    /// extra read-only binds (one per `plan.extra_ro` entry, in order).
    /// Returns when the sandbox's pid 1 exists, with the daemon's ends of
    /// its descriptors; setup progress comes on the status pipe.
    pub async fn launch(
        &self,
        plan: LaunchPlan,
        binds: &[OwnedFd],
    ) -> Result<(Launched, SandboxIo), SpawnerError> {
        let pipe = || {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| SpawnerError::Io("pipe", e.into()))
        };
        let (socket, theirs) = UnixStream::pair().map_err(|e| SpawnerError::Io("socketpair", e))?;
        let (stdout, out_w) = pipe()?;
        let (stderr, err_w) = pipe()?;
        let (status, status_w) = pipe()?;
        let (ready_r, cgroup_ready) = pipe()?;
        let mut fds: Vec<RawFd> = Leading::ALL
            .iter()
            .map(|which| match which {
                Leading::Socket => theirs.as_raw_fd(),
                Leading::Stdout => out_w.as_raw_fd(),
                Leading::Stderr => err_w.as_raw_fd(),
                Leading::Status => status_w.as_raw_fd(),
                Leading::CgroupReady => ready_r.as_raw_fd(),
            })
            .collect();
        fds.extend(binds.iter().map(AsRawFd::as_raw_fd));
        let launched = self.request(plan, &fds).await?;
        let io = SandboxIo {
            socket,
            stdout,
            stderr,
            status,
            cgroup_ready,
        };
        Ok((launched, io))
    }

    /// Sends one request with its descriptors and waits for pid 1 to exist.
    async fn request(&self, plan: LaunchPlan, fds: &[RawFd]) -> Result<Launched, SpawnerError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (started_tx, started_rx) = oneshot::channel();
        let (exited_tx, exited_rx) = oneshot::channel();
        self.pending_map().insert(
            id,
            Pending {
                started: Some(started_tx),
                exited: Some(exited_tx),
            },
        );
        let request = LaunchRequest { id, plan };
        if let Err(e) = self.send(&request, fds).await {
            self.pending_map().remove(&id);
            return Err(e);
        }
        let host_pid = match tokio::time::timeout(START_TIMEOUT, started_rx).await {
            Ok(Ok(Start::Forked(pid))) => pid,
            Ok(Ok(Start::Refused(why))) => return Err(SpawnerError::Refused(why)),
            Ok(Err(_)) => return Err(SpawnerError::Gone),
            Err(_) => {
                self.pending_map().remove(&id);
                return Err(SpawnerError::Timeout);
            }
        };
        Ok(Launched {
            host_pid,
            start: super::pidfd::start_time(host_pid),
            exit: exited_rx,
            ended: None,
        })
    }

    async fn send(&self, request: &LaunchRequest, fds: &[RawFd]) -> Result<(), SpawnerError> {
        loop {
            let mut ready = self
                .sock
                .writable()
                .await
                .map_err(|e| SpawnerError::Io("control socket", e))?;
            let sent = ready.try_io(|fd| {
                handoff::send_request(fd.as_raw_fd(), request, fds).map_err(|e| match e {
                    HandoffError::Sys(errno) => std::io::Error::from(errno),
                    other => std::io::Error::other(other),
                })
            });
            match sent {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => {
                    return Err(match e.downcast::<HandoffError>() {
                        Ok(h) => SpawnerError::Handoff(h),
                        Err(e) => SpawnerError::Io("sending to the launcher", e),
                    });
                }
                Err(_would_block) => continue,
            }
        }
    }

    fn pending_map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Starts `agentos-launcher <our pid>` with `control` as its stdin, from a
/// thread that lives as long as the server: the server's parent-death
/// signal fires when the thread that started it ends. If the server ever
/// dies, every agent died with it: the daemon exits and recovers them at
/// its next start.
fn start_server(launcher: &Path, control: OwnedFd) -> Result<(), SpawnerError> {
    let launcher = launcher.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("launcher-parent".into())
        .spawn(move || {
            let child = std::process::Command::new(&launcher)
                .arg(std::process::id().to_string())
                .env_clear()
                .stdin(Stdio::from(control))
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn();
            let mut child = match child {
                Ok(c) => {
                    let _ = tx.send(Ok(()));
                    c
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let status = child.wait();
            if status.as_ref().is_ok_and(|s| s.success()) {
                // It saw the control socket close: the daemon is stopping.
                return;
            }
            tracing::error!(
                ?status,
                "the launcher server {} died; exiting so that agents are recovered",
                launcher.display()
            );
            std::process::exit(EXIT_LAUNCHER_GONE);
        })
        .map_err(|e| SpawnerError::Io("starting the launcher thread", e))?;
    match rx.recv() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(SpawnerError::Io("starting the launcher", e)),
        Err(_) => Err(SpawnerError::Gone),
    }
}

/// Routes the server's replies until it closes the socket.
async fn read_replies(sock: Arc<AsyncFd<OwnedFd>>, pending: PendingMap) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Ok(mut ready) = sock.readable().await else {
            break;
        };
        let got = ready.try_io(|fd| {
            nix::sys::socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT)
                .map_err(std::io::Error::from)
        });
        let n = match got {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
            Err(_would_block) => continue,
        };
        let reply = match handoff::decode_reply(&buf[..n]) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("unexpected message from the launcher: {e}");
                continue;
            }
        };
        let mut map = pending.lock().unwrap_or_else(|e| e.into_inner());
        match reply {
            LauncherReply::Started { id, host_pid } => {
                if let Some(tx) = map.get_mut(&id).and_then(|p| p.started.take()) {
                    let _ = tx.send(Start::Forked(host_pid));
                }
            }
            LauncherReply::Refused { id, error } => {
                if let Some(tx) = map.remove(&id).and_then(|mut p| p.started.take()) {
                    let _ = tx.send(Start::Refused(error));
                }
            }
            LauncherReply::Exited { id, wait_status } => {
                if let Some(tx) = map.remove(&id).and_then(|mut p| p.exited.take()) {
                    let _ = tx.send(wait_status);
                }
            }
        }
    }
    // Dropping the senders tells every waiter that the server is gone.
    pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// What runs in a sandbox; names it in setup errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// An agent program.
    Agent,
    /// An EXEC_CMD command.
    Command,
}

impl Payload {
    fn sandbox(self) -> &'static str {
        match self {
            Payload::Agent => "sandbox",
            Payload::Command => "command sandbox",
        }
    }

    fn program(self) -> &'static str {
        match self {
            Payload::Agent => "agent",
            Payload::Command => "command",
        }
    }
}

/// Why a sandbox's program was never exec'd.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{} setup failed at step {step}: {error}", .payload.sandbox())]
    Step {
        payload: Payload,
        step: String,
        error: String,
    },
    #[error("launcher said something unexpected: {0}")]
    Unexpected(String),
    #[error("the launcher exited before starting the {}", .0.program())]
    NotStarted(Payload),
    #[error("reading launcher status: {0}")]
    Read(#[source] std::io::Error),
    #[error("sandbox setup took longer than {SETUP_TIMEOUT:?}")]
    Timeout,
}

/// Reads a sandbox's status pipe ([`SandboxIo::status`]) until its program
/// was exec'd (end of file after the server's `forked` event; the pipe is
/// close-on-exec) or a step failed, for at most [`SETUP_TIMEOUT`]. Returns
/// the host pid of the sandbox's pid 1.
pub async fn launch_events(status: OwnedFd, payload: Payload) -> Result<i32, SetupError> {
    match tokio::time::timeout(SETUP_TIMEOUT, read_events(status, payload)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(SetupError::Timeout),
    }
}

async fn read_events(status: OwnedFd, payload: Payload) -> Result<i32, SetupError> {
    let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(status).map_err(SetupError::Read)?;
    let mut lines = BufReader::new(rx).lines();
    let mut host_pid = None;
    while let Some(line) = lines.next_line().await.map_err(SetupError::Read)? {
        match serde_json::from_str::<LaunchEvent>(&line) {
            Ok(LaunchEvent::Forked { host_pid: p }) => host_pid = Some(p),
            Ok(LaunchEvent::Failed { step, error }) => {
                return Err(SetupError::Step {
                    payload,
                    step,
                    error,
                });
            }
            Err(_) => return Err(SetupError::Unexpected(line)),
        }
    }
    host_pid.ok_or(SetupError::NotStarted(payload))
}
