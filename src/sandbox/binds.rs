//! Extra read-only binds (the agent's program and `--ro` paths), daemon
//! side. Each path is opened once, with the filesystem permissions of the
//! agent's owner, and the open descriptor travels to the launcher, which
//! binds that very file: what is bound is exactly what was checked, however
//! the path's directories or symlinks change in between.

use super::creds::AgentCreds;
use crate::abi::SysError;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Most extra binds one agent may have (the program included).
pub const MAX_EXTRA_BINDS: usize = 32;

/// Opens `path` as user `uid`/`gid` (root: as the daemon) for binding. The
/// program (`executable`) must be a regular file with an execute bit;
/// other binds may be regular files or directories.
pub fn open_as(path: &Path, uid: u32, gid: u32, executable: bool) -> Result<OwnedFd, SysError> {
    let _creds = if uid == 0 {
        None
    } else {
        Some(AgentCreds::enter(uid, gid)?)
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            let who = if uid == 0 {
                String::new()
            } else {
                format!(" as uid {uid}")
            };
            SysError::from_io(&e, &format!("opening {}{who}", path.display()))
        })?;
    let meta = file
        .metadata()
        .map_err(|e| SysError::from_io(&e, &path.display().to_string()))?;
    let ok = if executable {
        meta.is_file() && meta.mode() & 0o111 != 0
    } else {
        meta.is_file() || meta.is_dir()
    };
    if !ok {
        return Err(SysError::inval(format!(
            "{} is not {}",
            path.display(),
            if executable {
                "an executable file"
            } else {
                "a regular file or directory"
            }
        )));
    }
    Ok(OwnedFd::from(file))
}
