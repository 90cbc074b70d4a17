//! A depth-first walk of a directory tree that never follows symlinks and
//! keeps a bounded number of directory fds open.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::dir::Dir;
use nix::errno::Errno as Nerr;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, fstatat};

use super::errors::plain_err;
use super::open::{file_type, open_beneath};
use crate::abi::errno::{Errno, SysError};

/// Deepest directory nesting that usage accounting and recursive deletion walk
/// (each level holds one open directory fd).
pub(super) const MAX_TREE_DEPTH: usize = 256;

/// The names in `dir`, without "." and "..".
pub(super) fn read_entries(dir: &mut Dir) -> nix::Result<Vec<CString>> {
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// One directory being walked by [`walk_tree`].
struct Frame {
    dir: Dir,
    /// Entries not visited yet.
    pending: Vec<CString>,
    /// Name of this directory in its parent (`None` for the top).
    name: Option<CString>,
}

/// Depth-first walk of everything below the directory `top` (an `O_RDONLY`
/// directory fd), iterative and with at most [`MAX_TREE_DEPTH`] directory fds
/// open. Symlinks are never followed (entries are examined with
/// `AT_SYMLINK_NOFOLLOW`, subdirectories opened with `openat2` beneath their
/// parent with `O_NOFOLLOW`). Directories on another device than `root_dev` or
/// behind a mount point are skipped if `skip_mounts`, else an EXDEV error.
///
/// `visit(dir, name, stat)` is called for every entry that is not a directory,
/// `leave(parent, name)` after the contents of subdirectory `name` were walked.
pub(super) fn walk_tree<V, L>(
    top: OwnedFd,
    root_dev: libc::dev_t,
    skip_mounts: bool,
    ctx: &str,
    mut visit: V,
    mut leave: L,
) -> Result<(), SysError>
where
    V: FnMut(BorrowedFd<'_>, &CStr, &FileStat) -> Result<(), SysError>,
    L: FnMut(BorrowedFd<'_>, &CStr) -> Result<(), SysError>,
{
    let mut dir = Dir::from_fd(top).map_err(|e| plain_err(e, ctx))?;
    let pending = read_entries(&mut dir).map_err(|e| plain_err(e, ctx))?;
    let mut stack = vec![Frame {
        dir,
        pending,
        name: None,
    }];
    let mount_err = || {
        SysError::new(
            Errno::EXDEV,
            format!("{ctx}: a directory inside is a mount point; refusing to cross it"),
        )
    };
    loop {
        let depth = stack.len();
        let Some(frame) = stack.last_mut() else {
            break;
        };
        let Some(name) = frame.pending.pop() else {
            if let Some(done) = stack.pop() {
                if let (Some(name), Some(parent)) = (done.name, stack.last()) {
                    leave(parent.dir.as_fd(), &name)?;
                }
            }
            continue;
        };
        let st = match fstatat(
            frame.dir.as_fd(),
            name.as_c_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => st,
            Err(Nerr::ENOENT) => continue,
            Err(e) => return Err(plain_err(e, ctx)),
        };
        if file_type(&st) != libc::S_IFDIR {
            visit(frame.dir.as_fd(), &name, &st)?;
            continue;
        }
        if st.st_dev != root_dev {
            if skip_mounts {
                continue;
            }
            return Err(mount_err());
        }
        if depth >= MAX_TREE_DEPTH {
            return Err(SysError::quota(format!(
                "{ctx}: the directory tree is deeper than {MAX_TREE_DEPTH} levels"
            )));
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
        let fd = match open_beneath(frame.dir.as_fd(), name.as_c_str(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Nerr::ENOENT) => continue,
            Err(Nerr::EXDEV) if skip_mounts => continue,
            Err(Nerr::EXDEV) => return Err(mount_err()),
            Err(e) => return Err(plain_err(e, ctx)),
        };
        let mut dir = Dir::from_fd(fd).map_err(|e| plain_err(e, ctx))?;
        let pending = read_entries(&mut dir).map_err(|e| plain_err(e, ctx))?;
        stack.push(Frame {
            dir,
            pending,
            name: Some(name),
        });
    }
    Ok(())
}
