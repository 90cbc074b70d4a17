//! The wire between the daemon and the launcher server, and the table of
//! descriptors a sandbox receives.
//!
//! The control socket is a SOCK_SEQPACKET socket on which every launch
//! request is one message: JSON [`LaunchRequest`] with its descriptors as
//! SCM_RIGHTS. Replies ([`LauncherReply`]) are one message each, without
//! descriptors. Message boundaries come from the socket type, so a request
//! is never read half or merged with the next. While a sandbox is set up,
//! its status pipe carries one JSON [`LaunchEvent`] per line.
//!
//! ## Descriptors
//!
//! A request's descriptors come in this order, and the sandbox's pid 1
//! installs each on a fixed number before anything else:
//!
//! | position | descriptor                              | in the sandbox                          |
//! |----------|-----------------------------------------|-----------------------------------------|
//! | 0        | the agent's syscall socket              | [`AGENT_SOCKET_FD`] (3)                 |
//! | 1        | write end of the agent's stdout pipe    | 1                                       |
//! | 2        | write end of the agent's stderr pipe    | 2                                       |
//! | 3        | write end of the status pipe            | [`STATUS_FD`] (4), close-on-exec        |
//! | 4        | read end of the "cgroup ready" pipe     | [`CGROUP_READY_FD`] (5), close-on-exec  |
//! | 5 + i    | source of extra read-only bind i        | [`FIRST_BIND_FD`] + i (6 + i), close-on-exec |
//!
//! fd 0 is /dev/null. A network namespace the server made ahead of time
//! takes the number after the last bind source (close-on-exec). Nothing
//! else stays open; only 0 to 3 survive exec.

use super::plan::LaunchPlan;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The agent's syscall socket in the sandbox, as the ABI promises.
pub const AGENT_SOCKET_FD: RawFd = 3;
/// The status pipe in the sandbox while pid 1 sets up (close-on-exec).
pub const STATUS_FD: RawFd = 4;
/// Readable (one byte) once the daemon has created the agent's cgroups;
/// end of file if it could not (close-on-exec).
pub const CGROUP_READY_FD: RawFd = 5;
/// Sources of the extra read-only binds, in plan order (close-on-exec).
pub const FIRST_BIND_FD: RawFd = 6;

/// The descriptors that lead every request, in request order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leading {
    Socket = 0,
    Stdout = 1,
    Stderr = 2,
    Status = 3,
    CgroupReady = 4,
}

impl Leading {
    /// All of them, in request order.
    pub const ALL: [Leading; 5] = [
        Leading::Socket,
        Leading::Stdout,
        Leading::Stderr,
        Leading::Status,
        Leading::CgroupReady,
    ];

    /// Its position among a request's descriptors.
    pub const fn position(self) -> usize {
        self as usize
    }

    /// The number pid 1 installs it on.
    pub const fn sandbox_fd(self) -> RawFd {
        match self {
            Leading::Socket => AGENT_SOCKET_FD,
            Leading::Stdout => 1,
            Leading::Stderr => 2,
            Leading::Status => STATUS_FD,
            Leading::CgroupReady => CGROUP_READY_FD,
        }
    }

    /// Whether the agent program inherits it (the others are close-on-exec).
    pub const fn survives_exec(self) -> bool {
        matches!(self, Leading::Socket | Leading::Stdout | Leading::Stderr)
    }
}

/// Descriptors that always come first (the [`Leading`] ones).
pub const LEADING_FDS: usize = Leading::ALL.len();
const MAX_FDS: usize = LEADING_FDS + super::binds::MAX_EXTRA_BINDS;

/// One request to the launcher: build the sandbox of `plan`. Travels as one
/// message with the descriptors of the table above.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LaunchRequest {
    /// Chosen by the daemon; names the replies about this sandbox.
    pub id: u64,
    pub plan: LaunchPlan,
}

/// What the launcher tells the daemon about its requests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum LauncherReply {
    /// The pid 1 of request `id` runs as host pid `host_pid`; setup
    /// progress follows on the request's status pipe.
    Started { id: u64, host_pid: i32 },
    /// Request `id` could not even be forked.
    Refused { id: u64, error: String },
    /// The pid 1 of request `id` ended; `wait_status` as waitpid(2) gave it.
    Exited { id: u64, wait_status: i32 },
}

/// Status lines on a sandbox's status pipe (from the server and pid 1).
/// End of file without a failure means the program was exec'd.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LaunchEvent {
    /// The agent's pid-1 process exists; its pid as the host sees it.
    Forked { host_pid: i32 },
    /// A setup step failed; the agent program never ran.
    Failed { step: String, error: String },
}

/// Largest request accepted (a plan is a few tens of KiB: the seccomp
/// programs dominate). Both ends size their socket buffers for it.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("socket error: {0}")]
    Sys(#[from] nix::Error),
    #[error("message encoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error("expected {0} file descriptors with the request, got {1}")]
    Fds(usize, usize),
    #[error("message larger than {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
}

/// Daemon side: sends one request and its descriptors (the [`Leading`]
/// ones first, then one per `plan.extra_ro` entry). Fails with
/// EAGAIN on a non-blocking socket whose buffer is full.
pub fn send_request(
    sock: RawFd,
    request: &LaunchRequest,
    fds: &[RawFd],
) -> Result<(), HandoffError> {
    let expected = LEADING_FDS + request.plan.extra_ro.len();
    if fds.len() != expected || fds.len() > MAX_FDS {
        return Err(HandoffError::Fds(expected, fds.len()));
    }
    let body = serde_json::to_vec(request)?;
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(HandoffError::TooLarge);
    }
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(
        sock,
        &[IoSlice::new(&body)],
        &cmsg,
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        None,
    )?;
    Ok(())
}

/// Launcher side: receives one request, or None when the daemon closed
/// its end. Descriptors arrive close-on-exec.
pub fn receive_request(
    sock: RawFd,
    buf: &mut [u8],
) -> Result<Option<(LaunchRequest, Vec<OwnedFd>)>, HandoffError> {
    let mut cmsg_buf = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock,
        &mut iov,
        Some(&mut cmsg_buf),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut got = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just installed these descriptors in our
            // table for us (SCM_RIGHTS); nothing else owns them.
            got.extend(
                fds.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let (bytes, flags) = (msg.bytes, msg.flags);
    if bytes == 0 && got.is_empty() {
        return Ok(None);
    }
    if flags.contains(MsgFlags::MSG_TRUNC) {
        return Err(HandoffError::TooLarge);
    }
    if flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(HandoffError::Fds(MAX_FDS, MAX_FDS + 1));
    }
    let request: LaunchRequest = serde_json::from_slice(&buf[..bytes])?;
    let expected = LEADING_FDS + request.plan.extra_ro.len();
    if got.len() != expected {
        return Err(HandoffError::Fds(expected, got.len()));
    }
    Ok(Some((request, got)))
}

/// Launcher side: sends one reply (blocking).
pub fn send_reply(sock: RawFd, reply: &LauncherReply) -> Result<(), HandoffError> {
    let body = serde_json::to_vec(reply)?;
    nix::sys::socket::send(sock, &body, MsgFlags::MSG_NOSIGNAL)?;
    Ok(())
}

/// Daemon side: decodes one reply message.
pub fn decode_reply(msg: &[u8]) -> Result<LauncherReply, HandoffError> {
    Ok(serde_json::from_slice(msg)?)
}
