//! FS_WRITE: creates missing parents and files as the agent, checks an
//! existing file before truncating it, and keeps the workspace within its
//! quota.

use std::borrow::Cow;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::PoisonError;

use base64::Engine as _;
use nix::errno::Errno as Nerr;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, ftruncate, unlinkat};
use serde_json::{Value, json};

use super::Workspace;
use super::args::{BASE64_IN, Encoding, WRITE_FIELDS, WriteArgs, parse_args};
use super::errors::{io_path_err, path_err};
use super::open::{file_size, len_u64, off_t, open_beneath, open_checked, probe, require_regular};
use super::path::{WsPath, join_rel};
use crate::abi::errno::{Errno, SysError};
use crate::drivers::creds::AgentCreds;

/// How often FS_WRITE retries when the target appears or vanishes between its
/// probe and its open.
const WRITE_ATTEMPTS: usize = 4;

impl Workspace {
    /// Opens the directory `comps` beneath the root (`O_PATH`), creating missing
    /// directories (mode 0700, owned by the agent) one component at a time.
    pub(super) fn ensure_dir(
        &self,
        comps: &[&str],
        op: &str,
        path: &WsPath<'_>,
    ) -> Result<OwnedFd, SysError> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        let root_fd = self.root()?;
        let root = root_fd.as_fd();
        match open_beneath(root, join_rel(comps).as_str(), flags, Mode::empty()) {
            Ok(fd) => return Ok(fd),
            Err(Nerr::ENOENT) => {}
            Err(e) => return Err(path_err(e, op, path)),
        }
        let mut cur =
            open_beneath(root, ".", flags, Mode::empty()).map_err(|e| path_err(e, op, path))?;
        for (i, comp) in comps.iter().enumerate() {
            let prefix = join_rel(&comps[..=i]);
            let next = match open_beneath(root, prefix.as_str(), flags, Mode::empty()) {
                Err(Nerr::ENOENT) => {
                    // `comp` is a plain name and `cur` a directory beneath the
                    // root, so the new directory is created beneath the root.
                    match mkdirat(cur.as_fd(), *comp, Mode::S_IRWXU) {
                        Ok(()) | Err(Nerr::EEXIST) => {}
                        Err(e) => return Err(path_err(e, op, path)),
                    }
                    open_beneath(root, prefix.as_str(), flags, Mode::empty())
                }
                other => other,
            };
            cur = next.map_err(|e| path_err(e, op, path))?;
        }
        Ok(cur)
    }

    /// Refuses a write that would grow the workspace beyond its quota.
    /// `old_size` is the current size of the file written, `new_size` its size afterwards.
    /// A write that does not grow the file is always allowed.
    fn check_quota(
        &self,
        old_size: u64,
        new_size: u64,
        op: &str,
        path: &WsPath<'_>,
    ) -> Result<(), SysError> {
        if new_size <= old_size {
            return Ok(());
        }
        let usage = self.usage_as_agent()?;
        let after = usage.saturating_sub(old_size).saturating_add(new_size);
        let quota = self.limits.quota_bytes;
        if after > quota {
            return Err(SysError::quota(format!(
                "{op} {}: workspace quota exceeded: the workspace uses {usage} bytes, \
                 this write would bring it to {after} bytes, the quota is {quota} bytes",
                path.shown()
            )));
        }
        Ok(())
    }

    /// FS_WRITE to a file that exists: opened without `O_TRUNC`, checked, and
    /// only then truncated (unless appending).
    fn write_existing(
        &self,
        parent: BorrowedFd<'_>,
        name: &str,
        data: &[u8],
        append: bool,
        path: &WsPath<'_>,
    ) -> Result<Value, SysError> {
        const OP: &str = "FS_WRITE";
        let access = if append {
            OFlag::O_WRONLY | OFlag::O_APPEND
        } else {
            OFlag::O_WRONLY
        };
        let (file, st) = open_checked(parent, name, access, OP, path)?;
        let old_size = file_size(&st);
        let len = len_u64(data);
        let new_size = if append {
            old_size.saturating_add(len)
        } else {
            len
        };
        let max_file = self.limits.max_file_bytes;
        if new_size > max_file {
            return Err(SysError::quota(format!(
                "{OP} {}: the file would grow to {new_size} bytes, over the per-file limit of {max_file} bytes",
                path.shown()
            )));
        }
        self.check_quota(old_size, new_size, OP, path)?;
        if !append {
            ftruncate(&file, 0).map_err(|e| path_err(e, OP, path))?;
        }
        if let Err(e) = (&file).write_all(data) {
            let (keep, note) = if append {
                (old_size, "the file was cut back to its previous size")
            } else {
                (0, "the file is now empty")
            };
            let note = match ftruncate(&file, off_t(keep)) {
                Ok(()) => note,
                Err(_) => "the file may hold partially written data",
            };
            return Err(write_failed(&e, path, note));
        }
        written(&file, len, path)
    }
}

/// FS_WRITE `{"path", "content", "append"?, "encoding"?}` → `{"bytes_written", "size"}`.
///
/// Creates missing parent directories (0700) and a missing file (0600), owned
/// by the agent. An existing file is checked before it is truncated (or
/// appended to). EQUOTA when the file would exceed `max_file_bytes` or the
/// workspace would exceed `quota_bytes`. If writing fails midway, a new file is
/// removed, an appended file is cut back to its old size and an overwritten
/// file is left empty; the error says which.
pub fn fs_write(ws: &Workspace, args: &Value) -> Result<Value, SysError> {
    const OP: &str = "FS_WRITE";
    let a: WriteArgs = parse_args(OP, args, WRITE_FIELDS)?;
    let path = WsPath::parse(OP, &a.path)?;
    let append = a.append.unwrap_or(false);
    let data: Cow<'_, [u8]> = match a.encoding.unwrap_or_default() {
        Encoding::Utf8 => Cow::Borrowed(a.content.as_bytes()),
        Encoding::Base64 => Cow::Owned(BASE64_IN.decode(a.content.as_bytes()).map_err(|e| {
            SysError::inval(format!(
                "bad arguments for {OP}: field `content` is not valid base64: {e}"
            ))
        })?),
    };
    let len = len_u64(&data);
    let max_file = ws.limits.max_file_bytes;
    if len > max_file {
        return Err(SysError::quota(format!(
            "{OP} {}: the content is {len} bytes, over the per-file limit of {max_file} bytes",
            path.shown()
        )));
    }
    let Some((parents, name)) = path.split_last() else {
        return Err(SysError::new(
            Errno::EISDIR,
            format!("{OP} {}: is the workspace root, a directory", path.shown()),
        ));
    };
    let _serial = ws.write_lock.lock().unwrap_or_else(PoisonError::into_inner);
    let _creds = AgentCreds::enter(ws.uid, ws.gid)?;
    let parent = ws.ensure_dir(parents, OP, &path)?;
    let parent = parent.as_fd();
    for _ in 0..WRITE_ATTEMPTS {
        match probe(parent, name) {
            Ok(st) => {
                require_regular(&st, OP, &path)?;
                match ws.write_existing(parent, name, &data, append, &path) {
                    // Removed between the probe and the open: start over.
                    Err(e) if e.code == Errno::ENOENT => continue,
                    other => return other,
                }
            }
            Err(Nerr::ENOENT) => {}
            Err(e) => return Err(path_err(e, OP, &path)),
        }
        ws.check_quota(0, len, OP, &path)?;
        let flags = OFlag::O_WRONLY
            | OFlag::O_CREAT
            | OFlag::O_EXCL
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_NOFOLLOW;
        match open_beneath(parent, name, flags, Mode::S_IRUSR | Mode::S_IWUSR) {
            Ok(fd) => return write_new(fd, parent, name, &data, &path),
            // Created meanwhile (by the agent): examine it as an existing file.
            Err(Nerr::EEXIST) => continue,
            Err(e) => return Err(path_err(e, OP, &path)),
        }
    }
    Err(SysError::new(
        Errno::EAGAIN,
        format!(
            "{OP} {}: the file kept changing while being opened; try again",
            path.shown()
        ),
    ))
}

/// Writes `data` into the file just created as `name` in `parent`; on failure
/// removes it again (if `name` still is that file).
fn write_new(
    fd: OwnedFd,
    parent: BorrowedFd<'_>,
    name: &str,
    data: &[u8],
    path: &WsPath<'_>,
) -> Result<Value, SysError> {
    const OP: &str = "FS_WRITE";
    let st = fstat(&fd).map_err(|e| path_err(e, OP, path))?;
    require_regular(&st, OP, path)?;
    let file = File::from(fd);
    if let Err(e) = (&file).write_all(data) {
        let _ = ftruncate(&file, 0);
        let removed = match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(now) if now.st_dev == st.st_dev && now.st_ino == st.st_ino => {
                unlinkat(parent, name, UnlinkatFlags::NoRemoveDir).is_ok()
            }
            _ => false,
        };
        let note = if removed {
            "the partially written file was removed"
        } else {
            "the new file was left empty"
        };
        return Err(write_failed(&e, path, note));
    }
    written(&file, len_u64(data), path)
}

/// FS_WRITE's error when writing the data failed; `note` says what was
/// done about the partial file.
fn write_failed(e: &std::io::Error, path: &WsPath<'_>, note: &str) -> SysError {
    io_path_err(e, "FS_WRITE", path, &format!("writing failed ({note})"))
}

/// FS_WRITE's reply once `len` bytes are in `file`.
fn written(file: &File, len: u64, path: &WsPath<'_>) -> Result<Value, SysError> {
    let st = fstat(file).map_err(|e| path_err(e, "FS_WRITE", path))?;
    Ok(json!({ "bytes_written": len, "size": file_size(&st) }))
}
