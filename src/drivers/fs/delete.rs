//! FS_DELETE.

use std::os::fd::AsFd;

use nix::errno::Errno as Nerr;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};
use serde_json::{Value, json};

use super::Workspace;
use super::args::{DELETE_FIELDS, DeleteArgs, parse_args};
use super::errors::{path_err, plain_err};
use super::open::{file_type, open_beneath};
use super::path::{WsPath, join_rel};
use super::walk::walk_tree;
use crate::abi::errno::{Errno, SysError};
use crate::drivers::creds::AgentCreds;

/// FS_DELETE `{"path", "recursive"?}` → `{"deleted": true}`.
///
/// Deletes a file, symlink (never its target) or empty directory; with
/// `"recursive": true` a directory and everything below it (symlinks are not
/// followed, mount points are refused). A non-empty directory without
/// `recursive` is ENOTEMPTY; the workspace root itself is EINVAL.
pub fn fs_delete(ws: &Workspace, args: &Value) -> Result<Value, SysError> {
    const OP: &str = "FS_DELETE";
    let a: DeleteArgs = parse_args(OP, args, DELETE_FIELDS)?;
    let path = WsPath::parse(OP, &a.path)?;
    let recursive = a.recursive.unwrap_or(false);
    let Some((parents, name)) = path.split_last() else {
        return Err(SysError::inval(format!(
            "{OP} {}: refusing to delete the workspace root",
            path.shown()
        )));
    };
    let _creds = AgentCreds::enter(ws.uid, ws.gid)?;
    let root = ws.root()?;
    let parent = open_beneath(
        root.as_fd(),
        join_rel(parents).as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY,
        Mode::empty(),
    )
    .map_err(|e| path_err(e, OP, &path))?;
    let parent = parent.as_fd();
    let st =
        fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| path_err(e, OP, &path))?;
    if file_type(&st) != libc::S_IFDIR {
        unlinkat(parent, name, UnlinkatFlags::NoRemoveDir).map_err(|e| path_err(e, OP, &path))?;
        return Ok(json!({ "deleted": true }));
    }
    if st.st_dev != ws.root_dev {
        return Err(SysError::new(
            Errno::EXDEV,
            format!("{OP} {}: is a mount point", path.shown()),
        ));
    }
    if recursive {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
        let top =
            open_beneath(parent, name, flags, Mode::empty()).map_err(|e| path_err(e, OP, &path))?;
        let ctx = format!("{OP} {}", path.shown());
        walk_tree(
            top,
            ws.root_dev,
            false,
            &ctx,
            |dir, entry, _| match unlinkat(dir, entry, UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Nerr::ENOENT) => Ok(()),
                Err(e) => Err(plain_err(e, &ctx)),
            },
            |dir, entry| match unlinkat(dir, entry, UnlinkatFlags::RemoveDir) {
                Ok(()) | Err(Nerr::ENOENT) => Ok(()),
                Err(e) => Err(plain_err(e, &ctx)),
            },
        )?;
    }
    match unlinkat(parent, name, UnlinkatFlags::RemoveDir) {
        Ok(()) => Ok(json!({ "deleted": true })),
        Err(Nerr::ENOTEMPTY) | Err(Nerr::EEXIST) => Err(SysError::new(
            Errno::ENOTEMPTY,
            if recursive {
                format!(
                    "{OP} {}: the directory filled up again while it was being deleted",
                    path.shown()
                )
            } else {
                format!(
                    "{OP} {}: the directory is not empty; pass \"recursive\": true to delete it with its contents",
                    path.shown()
                )
            },
        )),
        Err(e) => Err(path_err(e, OP, &path)),
    }
}
