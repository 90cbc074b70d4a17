//! FS_LIST.

use std::os::fd::AsFd;

use nix::dir::Dir;
use nix::errno::Errno as Nerr;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, fstatat};
use serde_json::{Value, json};

use super::Workspace;
use super::args::{LIST_FIELDS, ListArgs, parse_args};
use super::errors::path_err;
use super::open::{file_size, file_type, kind_name, open_beneath, probe};
use super::path::WsPath;
use super::walk::read_entries;
use crate::abi::errno::{Errno, SysError};
use crate::drivers::creds::AgentCreds;

/// Most entries FS_LIST returns; the rest is cut off and `truncated` is set.
const MAX_LIST_ENTRIES: usize = 10_000;

/// FS_LIST `{"path"?}` (default "/") →
/// `{"entries": [{"name", "type", "size"}], "truncated"}`.
///
/// Entries are sorted by name (bytes; names that are not UTF-8 are shown
/// lossily). `type` is "file", "dir", "symlink" or "other"; `size` is `st_size`
/// for files and symlinks, 0 otherwise. At most 10 000 entries are returned;
/// `truncated` tells that more were cut off. A symlink is never followed.
pub fn fs_list(ws: &Workspace, args: &Value) -> Result<Value, SysError> {
    const OP: &str = "FS_LIST";
    let a: ListArgs = parse_args(OP, args, LIST_FIELDS)?;
    let path = WsPath::parse(OP, a.path.as_deref().unwrap_or("/"))?;
    let mut entries = Vec::new();
    {
        let _creds = AgentCreds::enter(ws.uid, ws.gid)?;
        let root_fd = ws.root()?;
        let root = root_fd.as_fd();
        let rel = path.rel();
        let st = probe(root, &rel).map_err(|e| path_err(e, OP, &path))?;
        match file_type(&st) {
            libc::S_IFDIR => {}
            libc::S_IFLNK => {
                return Err(SysError::new(
                    Errno::EFTYPE,
                    format!(
                        "{OP} {}: is a symlink (symlinks are never followed)",
                        path.shown()
                    ),
                ));
            }
            _ => {
                return Err(SysError::new(
                    Errno::ENOTDIR,
                    format!(
                        "{OP} {}: is a {}, not a directory",
                        path.shown(),
                        kind_name(&st)
                    ),
                ));
            }
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
        let fd = open_beneath(root, rel.as_str(), flags, Mode::empty())
            .map_err(|e| path_err(e, OP, &path))?;
        let mut dir = Dir::from_fd(fd).map_err(|e| path_err(e, OP, &path))?;
        let names = read_entries(&mut dir).map_err(|e| path_err(e, OP, &path))?;
        for name in names {
            let st = match fstatat(dir.as_fd(), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Nerr::ENOENT) => continue,
                Err(e) => return Err(path_err(e, OP, &path)),
            };
            let (kind, size) = match file_type(&st) {
                libc::S_IFREG => ("file", file_size(&st)),
                libc::S_IFDIR => ("dir", 0),
                libc::S_IFLNK => ("symlink", file_size(&st)),
                _ => ("other", 0),
            };
            entries.push((name.to_string_lossy().into_owned(), kind, size));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let truncated = entries.len() > MAX_LIST_ENTRIES;
    entries.truncate(MAX_LIST_ENTRIES);
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|(name, kind, size)| json!({ "name": name, "type": kind, "size": size }))
        .collect();
    Ok(json!({ "entries": entries, "truncated": truncated }))
}
