//! The wire between the daemon and the launcher: a SOCK_SEQPACKET socket on
//! which every launch request is one message, JSON [`LaunchRequest`] with
//! its descriptors as SCM_RIGHTS in this order: the agent's syscall socket,
//! agent stdout pipe, agent stderr pipe, status pipe, the read end of the
//! "cgroup ready" pipe, then one per extra read-only bind. Replies ([`LauncherReply`]) are one message each, without
//! descriptors. Message boundaries come from the socket type, so a request
//! is never read half or merged with the next.

use super::plan::{LaunchRequest, LauncherReply};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

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

/// Descriptors that always come first: syscall socket, stdout, stderr,
/// status, cgroup ready.
pub const STDIO_FDS: usize = 5;
const MAX_FDS: usize = STDIO_FDS + super::binds::MAX_EXTRA_BINDS;

/// Daemon side: sends one request and its descriptors (the four of
/// [`STDIO_FDS`] first, then one per `plan.extra_ro` entry). Fails with
/// EAGAIN on a non-blocking socket whose buffer is full.
pub fn send_request(
    sock: RawFd,
    request: &LaunchRequest,
    fds: &[RawFd],
) -> Result<(), HandoffError> {
    let expected = STDIO_FDS + request.plan.extra_ro.len();
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
    let expected = STDIO_FDS + request.plan.extra_ro.len();
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
