//! The closed set of error codes a syscall can answer with, and the error
//! value (code + human message) that every driver returns.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Error codes of the fd-3 ABI. The set is closed: agents can match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Errno {
    /// The agent lacks the permission, or the object belongs to someone else.
    EACCES,
    /// The operation is not permitted on that object (e.g. KILL of a non-descendant).
    EPERM,
    /// No such file, agent or message.
    ENOENT,
    /// Malformed request or argument.
    EINVAL,
    /// The object exists already.
    EEXIST,
    /// A directory where a file was expected.
    EISDIR,
    /// A file where a directory was expected.
    ENOTDIR,
    /// The request line or an argument exceeds a size cap.
    EMSGSIZE,
    /// Try again later (rate limit, too many requests in flight).
    EAGAIN,
    /// A wait ran out of time.
    ETIMEDOUT,
    /// A quota or limit was exhausted.
    EQUOTA,
    /// Unknown syscall.
    ENOSYS,
    /// An internal or storage error.
    EIO,
    /// The call was interrupted (the agent or daemon is going away).
    EINTR,
    /// No such agent.
    ESRCH,
    /// No such child.
    ECHILD,
    /// A directory that is not empty.
    ENOTEMPTY,
    /// The file type is refused (FIFO, device, socket, hard-linked file, symlink).
    EFTYPE,
    /// A path escapes the workspace.
    EXDEV,
}

impl Errno {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Errno::EACCES => "EACCES",
            Errno::EPERM => "EPERM",
            Errno::ENOENT => "ENOENT",
            Errno::EINVAL => "EINVAL",
            Errno::EEXIST => "EEXIST",
            Errno::EISDIR => "EISDIR",
            Errno::ENOTDIR => "ENOTDIR",
            Errno::EMSGSIZE => "EMSGSIZE",
            Errno::EAGAIN => "EAGAIN",
            Errno::ETIMEDOUT => "ETIMEDOUT",
            Errno::EQUOTA => "EQUOTA",
            Errno::ENOSYS => "ENOSYS",
            Errno::EIO => "EIO",
            Errno::EINTR => "EINTR",
            Errno::ESRCH => "ESRCH",
            Errno::ECHILD => "ECHILD",
            Errno::ENOTEMPTY => "ENOTEMPTY",
            Errno::EFTYPE => "EFTYPE",
            Errno::EXDEV => "EXDEV",
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed syscall: a code from the closed set and a message for humans and models.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct SysError {
    pub code: Errno,
    pub message: String,
}

impl SysError {
    pub fn new(code: Errno, message: impl Into<String>) -> Self {
        SysError {
            code,
            message: message.into(),
        }
    }

    /// Maps an OS error from a host-side operation to the closest ABI code.
    pub fn from_io(err: &std::io::Error, context: &str) -> Self {
        let code = match err.raw_os_error() {
            Some(libc::ENOENT) => Errno::ENOENT,
            Some(libc::EACCES) => Errno::EACCES,
            Some(libc::EPERM) => Errno::EPERM,
            Some(libc::EEXIST) => Errno::EEXIST,
            Some(libc::EISDIR) => Errno::EISDIR,
            Some(libc::ENOTDIR) => Errno::ENOTDIR,
            Some(libc::ENOTEMPTY) => Errno::ENOTEMPTY,
            Some(libc::EXDEV) => Errno::EXDEV,
            Some(libc::ELOOP) => Errno::EFTYPE,
            Some(libc::EINVAL) | Some(libc::ENAMETOOLONG) => Errno::EINVAL,
            Some(libc::EDQUOT) | Some(libc::ENOSPC) | Some(libc::EFBIG) => Errno::EQUOTA,
            Some(libc::EINTR) => Errno::EINTR,
            Some(libc::EAGAIN) => Errno::EAGAIN,
            _ => Errno::EIO,
        };
        SysError::new(code, format!("{context}: {err}"))
    }
}

macro_rules! sys_err_ctor {
    ($($name:ident => $code:ident),* $(,)?) => {
        impl SysError {
            $(
                #[doc = concat!("A `", stringify!($code), "` error with the given message.")]
                pub fn $name(message: impl Into<String>) -> Self {
                    SysError::new(Errno::$code, message)
                }
            )*
        }
    };
}

sys_err_ctor! {
    inval => EINVAL,
    acces => EACCES,
    perm => EPERM,
    noent => ENOENT,
    io => EIO,
    srch => ESRCH,
    quota => EQUOTA,
    msgsize => EMSGSIZE,
    intr => EINTR,
}
