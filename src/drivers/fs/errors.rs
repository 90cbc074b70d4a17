//! Errnos of the file operations mapped to the ABI, with messages naming
//! the call and the agent's path.

use std::io;

use nix::errno::Errno as Nerr;

use super::path::WsPath;
use crate::abi::errno::{Errno, SysError};

/// Maps an errno from an operation on `path` to the ABI, with a message naming the call and path.
pub(super) fn path_err(e: Nerr, op: &str, path: &WsPath<'_>) -> SysError {
    let (code, why) = match e {
        Nerr::EXDEV => (
            Errno::EXDEV,
            "path escapes the workspace (through a symlink or a mount point)",
        ),
        Nerr::ENOENT => (Errno::ENOENT, "no such file or directory"),
        Nerr::EACCES => (Errno::EACCES, "permission denied"),
        Nerr::EPERM => (Errno::EPERM, "operation not permitted"),
        Nerr::ELOOP => (
            Errno::EFTYPE,
            "is a symlink, or resolves through too many symlinks (a final symlink is never followed)",
        ),
        Nerr::ENXIO => (Errno::EFTYPE, "is not a regular file"),
        Nerr::ENOTDIR => (Errno::ENOTDIR, "a path component is not a directory"),
        Nerr::EISDIR => (Errno::EISDIR, "is a directory"),
        Nerr::EEXIST => (Errno::EEXIST, "already exists"),
        Nerr::ENOTEMPTY => (Errno::ENOTEMPTY, "directory not empty"),
        Nerr::EAGAIN => (
            Errno::EAGAIN,
            "the workspace changed while the path was resolved; try again",
        ),
        Nerr::ENAMETOOLONG => (Errno::EINVAL, "a path component is too long"),
        Nerr::EDQUOT | Nerr::ENOSPC | Nerr::EFBIG => (Errno::EQUOTA, e.desc()),
        Nerr::EINTR => (Errno::EINTR, "interrupted"),
        other => {
            return SysError::from_io(&io::Error::from(other), &format!("{op} {}", path.shown()));
        }
    };
    SysError::new(code, format!("{op} {}: {why}", path.shown()))
}

/// Maps an errno from an operation that has no single path of its own.
pub(super) fn plain_err(e: Nerr, ctx: &str) -> SysError {
    match e {
        Nerr::EXDEV => SysError::new(
            Errno::EXDEV,
            format!("{ctx}: crosses a mount point or escapes the workspace"),
        ),
        Nerr::ENOTDIR | Nerr::ELOOP => SysError::new(
            Errno::EAGAIN,
            format!("{ctx}: the workspace changed during the walk; try again"),
        ),
        other => SysError::from_io(&io::Error::from(other), ctx),
    }
}

/// Maps an I/O error of a read or write of `path`.
pub(super) fn io_path_err(e: &io::Error, op: &str, path: &WsPath<'_>, what: &str) -> SysError {
    let code = SysError::from_io(e, "").code;
    SysError::new(code, format!("{op} {}: {what}: {e}", path.shown()))
}
