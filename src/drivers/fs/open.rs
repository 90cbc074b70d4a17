//! Resolving and opening beneath the workspace root with `openat2(2)`, and
//! the checks of what was opened (only regular files with one link).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::NixPath;
use nix::errno::Errno as Nerr;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{FileStat, Mode, fstat};

use super::errors::path_err;
use super::path::WsPath;
use crate::abi::errno::{Errno, SysError};

/// How often `openat2` is retried when the kernel reports a race (`EAGAIN`).
const RESOLVE_RETRIES: usize = 16;

/// `openat2(dir, path)` confined beneath `dir`: no absolute paths or symlinks,
/// no escaping `..`, no magic links, no mount crossings. `O_CLOEXEC` is always
/// added. Retried when the kernel reports a rename race (`EAGAIN`) or `EINTR`.
pub(super) fn open_beneath<P: ?Sized + NixPath>(
    dir: BorrowedFd<'_>,
    path: &P,
    flags: OFlag,
    mode: Mode,
) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(mode)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    for _ in 0..RESOLVE_RETRIES {
        match openat2(dir, path, how) {
            Err(Nerr::EAGAIN) | Err(Nerr::EINTR) => continue,
            other => return other,
        }
    }
    Err(Nerr::EAGAIN)
}

/// Opens a directory by the daemon's own path, `O_PATH`, never following a
/// final symlink.
pub(super) fn open_dir_path(dir: &Path) -> io::Result<OwnedFd> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)?;
    Ok(OwnedFd::from(file))
}

/// `fstat` of `rel` beneath `dir` itself, never following a final symlink and
/// without opening the object (`O_PATH`): a FIFO or device is not opened.
pub(super) fn probe(dir: BorrowedFd<'_>, rel: &str) -> nix::Result<FileStat> {
    let fd = open_beneath(dir, rel, OFlag::O_PATH | OFlag::O_NOFOLLOW, Mode::empty())?;
    fstat(&fd)
}

/// Opens `rel` beneath `dir` with `access`, non-blocking, without acquiring a
/// controlling terminal and without following a final symlink, and checks the
/// fd obtained: only a regular file with one link is returned.
pub(super) fn open_checked(
    dir: BorrowedFd<'_>,
    rel: &str,
    access: OFlag,
    op: &str,
    path: &WsPath<'_>,
) -> Result<(File, FileStat), SysError> {
    let flags = access | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_NOFOLLOW;
    let fd = open_beneath(dir, rel, flags, Mode::empty()).map_err(|e| path_err(e, op, path))?;
    let st = fstat(&fd).map_err(|e| path_err(e, op, path))?;
    require_regular(&st, op, path)?;
    Ok((File::from(fd), st))
}

pub(super) fn file_type(st: &FileStat) -> libc::mode_t {
    st.st_mode & libc::S_IFMT
}

pub(super) fn kind_name(st: &FileStat) -> &'static str {
    match file_type(st) {
        libc::S_IFREG => "regular file",
        libc::S_IFDIR => "directory",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "FIFO",
        libc::S_IFSOCK => "socket",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        _ => "file of unknown type",
    }
}

/// Only a regular file with a single hard link may be read or written.
pub(super) fn require_regular(st: &FileStat, op: &str, path: &WsPath<'_>) -> Result<(), SysError> {
    let p = path.shown();
    match file_type(st) {
        libc::S_IFREG if st.st_nlink > 1 => Err(SysError::new(
            Errno::EFTYPE,
            format!(
                "{op} {p}: hard-linked files are refused ({} links)",
                st.st_nlink
            ),
        )),
        libc::S_IFREG => Ok(()),
        libc::S_IFDIR => Err(SysError::new(
            Errno::EISDIR,
            format!("{op} {p}: is a directory"),
        )),
        libc::S_IFLNK => Err(SysError::new(
            Errno::EFTYPE,
            format!("{op} {p}: is a symlink (symlinks are never followed)"),
        )),
        _ => Err(SysError::new(
            Errno::EFTYPE,
            format!(
                "{op} {p}: is a {}; only regular files can be read or written",
                kind_name(st)
            ),
        )),
    }
}

pub(super) fn file_size(st: &FileStat) -> u64 {
    u64::try_from(st.st_size).unwrap_or(0)
}

pub(super) fn len_u64(data: &[u8]) -> u64 {
    u64::try_from(data.len()).unwrap_or(u64::MAX)
}

pub(super) fn off_t(n: u64) -> libc::off_t {
    libc::off_t::try_from(n).unwrap_or(libc::off_t::MAX)
}
