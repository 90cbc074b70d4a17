//! FS_READ, FS_WRITE, FS_LIST and FS_DELETE: file syscalls that the root daemon
//! performs on behalf of an agent inside the agent's workspace directory.
//!
//! The agent is assumed hostile and able to change its workspace while a call
//! runs (e.g. swap a directory for a symlink in a tight loop). Therefore:
//!
//! * a path is normalised lexically first (the workspace root is `/` and also
//!   `/workspace`; a `..` that would climb above the root is refused with
//!   `EXDEV`), then resolved only with `openat2(2)` relative to the workspace
//!   directory fd with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`;
//! * the final component is never followed (`O_NOFOLLOW`); files are opened
//!   non-blocking and the fd actually obtained is checked with `fstat`: only
//!   regular files with a single hard link are read or written;
//! * every filesystem operation runs with the calling thread's fsuid/fsgid set
//!   to the agent's and its supplementary groups emptied ([`AgentCreds`]), so
//!   the kernel's permission checks apply as the agent and whatever is created
//!   belongs to the agent.
//!
//! Every function here blocks and switches per-thread credentials: call them
//! only from a dedicated blocking thread (e.g. `tokio::task::spawn_blocking`),
//! never directly from an async task.
//!
//! Layout: [`Workspace`] (this file) is the opened workspace; `path` reads
//! an agent's path, `args` the calls' arguments, `open` resolves and opens
//! beneath the root and checks what was opened, `errors` maps errnos to the
//! ABI, `walk` walks a tree without following symlinks; `read`, `write`,
//! `list` and `delete` are the four calls; `copy` moves trees in and out
//! for the operator with them.

mod args;
mod copy;
mod delete;
mod errors;
mod list;
mod open;
mod path;
mod read;
mod walk;
mod write;

pub use copy::{
    CopiedIn, CopiedOut, CopyEntry, MAX_COPY_ENTRIES, MAX_COPY_OUT_BYTES, copy_in, copy_out,
};
pub use delete::fs_delete;
pub use list::fs_list;
pub use read::fs_read;
pub use write::fs_write;

use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;

use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, fstat};

use super::creds::AgentCreds;
use crate::abi::errno::SysError;
use errors::plain_err;
use open::{file_size, open_beneath, open_dir_path};
use walk::walk_tree;

/// Size limits of one agent's workspace, in bytes.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct FsLimits {
    /// FS_WRITE may not grow [`Workspace::usage_bytes`] beyond this.
    pub quota_bytes: u64,
    /// Largest file FS_WRITE may produce (the content, or the old size plus the
    /// content when appending).
    pub max_file_bytes: u64,
    /// Most bytes one FS_READ returns.
    pub max_read_bytes: u64,
}

/// One agent's workspace directory and the identity and limits under which
/// the file syscalls act in it.
///
/// The directory is opened for each call rather than held open: a daemon
/// with thousands of agents would otherwise spend a descriptor on each. The
/// path is the daemon's own (root-owned parents the agent cannot write), and
/// every open is checked to be the directory first opened (device and
/// inode), so a replaced directory is refused, never followed.
pub struct Workspace {
    /// Host path of the workspace root.
    dir: std::path::PathBuf,
    /// Device of the root: usage accounting does not descend into other filesystems.
    root_dev: libc::dev_t,
    /// Inode of the root when the workspace was opened.
    root_ino: libc::ino_t,
    uid: u32,
    gid: u32,
    limits: FsLimits,
    /// Serialises FS_WRITE calls so that their quota checks and writes do not interleave.
    write_lock: Mutex<()>,
}

impl fmt::Debug for Workspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workspace")
            .field("dir", &self.dir)
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("limits", &self.limits)
            .finish()
    }
}

impl Workspace {
    /// Opens the workspace directory (O_PATH|O_DIRECTORY|O_CLOEXEC) for an agent.
    ///
    /// `dir` is the daemon's own, trusted path; its final component must not be
    /// a symlink (`O_NOFOLLOW`). `uid` and `gid` are the agent's: 0 (root) and
    /// `u32::MAX` (-1, not an id) are refused with `InvalidInput`.
    pub fn open(dir: &Path, uid: u32, gid: u32, limits: FsLimits) -> io::Result<Workspace> {
        for (what, id) in [("uid", uid), ("gid", gid)] {
            if id == 0 || id == u32::MAX {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "workspace {}: agent {what} {id} refused (agents never act as root or as id -1)",
                        dir.display()
                    ),
                ));
            }
        }
        let root = open_dir_path(dir)?;
        let st = fstat(&root)?;
        Ok(Workspace {
            dir: dir.to_path_buf(),
            root_dev: st.st_dev,
            root_ino: st.st_ino,
            uid,
            gid,
            limits,
            write_lock: Mutex::new(()),
        })
    }

    /// `O_PATH | O_DIRECTORY` fd of the workspace root, for one call; every
    /// path is resolved beneath it.
    fn root(&self) -> Result<OwnedFd, SysError> {
        let fail = |e: io::Error| SysError::io(format!("workspace {}: {e}", self.dir.display()));
        let root = open_dir_path(&self.dir).map_err(fail)?;
        let st = fstat(&root).map_err(|e| fail(e.into()))?;
        if (st.st_dev, st.st_ino) != (self.root_dev, self.root_ino) {
            return Err(fail(io::Error::other(
                "is no longer the directory created for this agent",
            )));
        }
        Ok(root)
    }

    /// Bytes used beneath the workspace: the sum of `st_size` (apparent sizes,
    /// not `st_blocks`) of every entry that is not a directory — regular files,
    /// symlinks (the length of their target), others (0) — counted once per
    /// directory entry. Directories count 0. Walked as the agent, without
    /// following symlinks and without crossing mount points; a tree deeper than
    /// 256 levels, or one the agent cannot read, is an error.
    pub fn usage_bytes(&self) -> Result<u64, SysError> {
        let _creds = AgentCreds::enter(self.uid, self.gid)?;
        self.usage_as_agent()
    }

    /// [`Workspace::usage_bytes`] for a caller that already holds [`AgentCreds`].
    fn usage_as_agent(&self) -> Result<u64, SysError> {
        const CTX: &str = "computing the workspace usage";
        let root = self.root()?;
        let top = open_beneath(
            root.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .map_err(|e| plain_err(e, CTX))?;
        let mut total: u64 = 0;
        walk_tree(
            top,
            self.root_dev,
            true,
            CTX,
            |_, _, st| {
                total = total.saturating_add(file_size(st));
                Ok(())
            },
            |_, _| Ok(()),
        )?;
        Ok(total)
    }
}

#[cfg(test)]
mod tests;
