//! Handing a launch plan to the launcher: the daemon writes a length-prefixed
//! JSON plan on the agent's socket together with file descriptors as
//! SCM_RIGHTS — agent stdout pipe, agent stderr pipe, status pipe, then one
//! per extra read-only bind; the
//! launcher, which got the socket as its stdin, reads exactly that much, so
//! nothing of the plan is left for the agent to see.

use super::plan::LaunchPlan;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Largest plan accepted (a plan is a few KiB; this bounds a confused peer).
const MAX_PLAN_BYTES: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("socket error: {0}")]
    Sys(#[from] nix::Error),
    #[error("plan encoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the peer closed the socket before the plan was complete")]
    Eof,
    #[error("expected {0} file descriptors with the plan, got {1}")]
    Fds(usize, usize),
    #[error("plan of {0} bytes is larger than the cap")]
    TooLarge(usize),
}

/// Descriptors that always come first: agent stdout, agent stderr, status.
pub const STDIO_FDS: usize = 3;
const MAX_FDS: usize = STDIO_FDS + super::binds::MAX_EXTRA_BINDS;

/// Daemon side: sends the plan and its descriptors (stdio three first, then
/// one per `plan.extra_ro` entry).
pub fn send(sock: RawFd, plan: &LaunchPlan, fds: &[RawFd]) -> Result<(), HandoffError> {
    if fds.len() != STDIO_FDS + plan.extra_ro.len() || fds.len() > MAX_FDS {
        return Err(HandoffError::Fds(
            STDIO_FDS + plan.extra_ro.len(),
            fds.len(),
        ));
    }
    let body = serde_json::to_vec(plan)?;
    let len = (body.len() as u32).to_le_bytes();
    let cmsg = [ControlMessage::ScmRights(fds)];
    let iov = [IoSlice::new(&len), IoSlice::new(&body)];
    let mut sent = sendmsg::<()>(sock, &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)?;
    let total = len.len() + body.len();
    // The descriptors travel with the first byte; the rest is plain data.
    while sent < total {
        let rest = if sent < 4 {
            [&len[sent..], &body[..]].concat()
        } else {
            body[sent - 4..].to_vec()
        };
        let n = nix::sys::socket::send(sock, &rest, MsgFlags::MSG_NOSIGNAL)?;
        sent += n;
    }
    Ok(())
}

/// Launcher side: receives the plan and its descriptors
/// `[agent stdout, agent stderr, status, extra binds...]`.
pub fn receive(sock: RawFd) -> Result<(LaunchPlan, Vec<OwnedFd>), HandoffError> {
    let mut header = [0u8; 4];
    let mut cmsg_buf = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut got_fds: Vec<RawFd> = Vec::new();
    let mut filled = 0;
    while filled < header.len() {
        let mut iov = [IoSliceMut::new(&mut header[filled..])];
        let msg = recvmsg::<()>(
            sock,
            &mut iov,
            Some(&mut cmsg_buf),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                got_fds.extend(fds);
            }
        }
        if msg.bytes == 0 {
            return Err(HandoffError::Eof);
        }
        filled += msg.bytes;
    }
    // SAFETY: the kernel just installed these descriptors in our table for us
    // (SCM_RIGHTS); nothing else owns them.
    let owned: Vec<OwnedFd> = got_fds
        .iter()
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_PLAN_BYTES {
        return Err(HandoffError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        let n = nix::sys::socket::recv(sock, &mut body[filled..], MsgFlags::empty())?;
        if n == 0 {
            return Err(HandoffError::Eof);
        }
        filled += n;
    }
    let plan: LaunchPlan = serde_json::from_slice(&body)?;
    let expected = STDIO_FDS + plan.extra_ro.len();
    if owned.len() != expected {
        return Err(HandoffError::Fds(expected, owned.len()));
    }
    Ok((plan, owned))
}
