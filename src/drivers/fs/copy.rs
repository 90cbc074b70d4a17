//! Copying files into and out of a workspace for its operator:
//! `agentos spawn --copy` (before the agent starts) and `agentos cp`.
//!
//! Both directions are built from the agent's own file calls, so they keep
//! every property of those: paths resolved beneath the workspace root,
//! symlinks never followed, only regular files with one link read or
//! written, everything done with the agent's filesystem credentials (what
//! is created belongs to the agent, and the workspace quota and per-file
//! limit hold). The host side (reading or writing the operator's files) is
//! the CLI's, done as the calling user.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use nix::sys::stat::{Mode, fchmod};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::PoisonError;

use super::Workspace;
use super::open::open_checked;
use super::path::WsPath;
use super::{fs_list, fs_read, fs_write};
use crate::abi::errno::{Errno, SysError};
use crate::drivers::creds::AgentCreds;
use nix::fcntl::OFlag;
use std::os::fd::AsFd;

/// Most bytes (file contents, before encoding) one copy out of a workspace
/// returns; a larger tree is refused with EMSGSIZE.
pub const MAX_COPY_OUT_BYTES: u64 = 64 << 20;

/// Most entries one copy moves, in either direction.
pub const MAX_COPY_ENTRIES: usize = 10_000;

/// One entry of a copy. Into a workspace, `path` is where it goes in the
/// workspace; out of one, it is relative to what was copied (`""` is the
/// copied file or directory itself, `"a/b.txt"` something below it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum CopyEntry {
    Dir {
        path: String,
    },
    File {
        path: String,
        /// The content, base64.
        data: String,
        /// Executable by its owner (mode 0700 instead of 0600).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        executable: bool,
        /// Appended to what an earlier entry wrote (a large file comes in
        /// pieces).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        append: bool,
    },
}

/// What a copy out of a workspace found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopiedOut {
    pub entries: Vec<CopyEntry>,
    /// Entries left out because they are neither files nor directories
    /// (symlinks are never followed), relative like `entries`.
    #[serde(default)]
    pub skipped: Vec<String>,
}

/// How much a copy into a workspace wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopiedIn {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
}

/// Writes `entries` into the workspace, in order, as the agent. Stops at
/// the first entry that fails (what was written before it stays) with that
/// entry's error.
pub fn copy_in(ws: &Workspace, entries: &[CopyEntry]) -> Result<CopiedIn, SysError> {
    const OP: &str = "copy";
    if entries.len() > MAX_COPY_ENTRIES {
        return Err(SysError::inval(format!(
            "{OP}: {} entries, more than {MAX_COPY_ENTRIES} in one copy",
            entries.len()
        )));
    }
    let mut done = CopiedIn::default();
    for entry in entries {
        match entry {
            CopyEntry::Dir { path } => {
                let p = WsPath::parse(OP, path)?;
                let _serial = ws.write_lock.lock().unwrap_or_else(PoisonError::into_inner);
                let _creds = AgentCreds::enter(ws.uid, ws.gid)?;
                ws.ensure_dir(p.comps(), OP, &p)?;
                done.dirs += 1;
            }
            CopyEntry::File {
                path,
                data,
                executable,
                append,
            } => {
                let args =
                    json!({"path": path, "content": data, "encoding": "base64", "append": append});
                let wrote = fs_write(ws, &args).map_err(|e| copying(path, e))?;
                if *executable {
                    make_executable(ws, path)?;
                }
                done.files += u64::from(!*append);
                done.bytes += wrote["bytes_written"].as_u64().unwrap_or(0);
            }
        }
    }
    Ok(done)
}

/// Reads the file or directory tree at `path` out of the workspace, as the
/// agent: at most [`MAX_COPY_OUT_BYTES`] of contents and
/// [`MAX_COPY_ENTRIES`] entries (EMSGSIZE beyond either).
pub fn copy_out(ws: &Workspace, path: &str) -> Result<CopiedOut, SysError> {
    let mut out = CopiedOut::default();
    let mut bytes = 0;
    // Directories still to list: (workspace path, path relative to `path`).
    let mut pending = Vec::new();
    match fs_list(ws, &json!({ "path": path })) {
        Ok(listing) => {
            out.entries.push(CopyEntry::Dir {
                path: String::new(),
            });
            pending.push((path.to_string(), String::new(), listing));
        }
        Err(e) if e.code == Errno::ENOTDIR => {
            let file = read_file(ws, path, &mut bytes)?;
            out.entries.push(file_entry(String::new(), file));
            return Ok(out);
        }
        Err(e) => return Err(copying(path, e)),
    }
    while let Some((dir, rel_dir, listing)) = pending.pop() {
        if listing["truncated"].as_bool() == Some(true) {
            return Err(too_big(
                path,
                "a directory holds more entries than one listing",
            ));
        }
        for item in listing["entries"].as_array().into_iter().flatten() {
            let name = item["name"].as_str().unwrap_or_default();
            let ws_path = format!("{}/{name}", dir.trim_end_matches('/'));
            let rel = if rel_dir.is_empty() {
                name.to_string()
            } else {
                format!("{rel_dir}/{name}")
            };
            if out.entries.len() + out.skipped.len() >= MAX_COPY_ENTRIES {
                return Err(too_big(
                    path,
                    &format!("more than {MAX_COPY_ENTRIES} entries"),
                ));
            }
            match item["type"].as_str() {
                Some("dir") => {
                    let sub = fs_list(ws, &json!({ "path": ws_path }))
                        .map_err(|e| copying(&ws_path, e))?;
                    out.entries.push(CopyEntry::Dir { path: rel.clone() });
                    pending.push((ws_path, rel, sub));
                }
                Some("file") => {
                    let file = read_file(ws, &ws_path, &mut bytes)?;
                    out.entries.push(file_entry(rel, file));
                }
                _ => out.skipped.push(rel),
            }
        }
    }
    Ok(out)
}

/// A file read out of the workspace: its bytes and whether it is
/// executable by its owner.
struct ReadFile {
    data: Vec<u8>,
    executable: bool,
}

fn file_entry(path: String, f: ReadFile) -> CopyEntry {
    CopyEntry::File {
        path,
        data: STANDARD.encode(&f.data),
        executable: f.executable,
        append: false,
    }
}

/// The whole file at `path`, in FS_READ-sized pieces; `total` counts the
/// bytes of the copy so far and refuses to pass [`MAX_COPY_OUT_BYTES`].
fn read_file(ws: &Workspace, path: &str, total: &mut u64) -> Result<ReadFile, SysError> {
    let mut data = Vec::new();
    loop {
        let args = json!({"path": path, "offset": data.len(), "encoding": "base64"});
        let piece = fs_read(ws, &args).map_err(|e| copying(path, e))?;
        let size = piece["size"].as_u64().unwrap_or(0);
        if total.saturating_add(size) > MAX_COPY_OUT_BYTES {
            return Err(too_big(
                path,
                &format!("it holds more than {MAX_COPY_OUT_BYTES} bytes"),
            ));
        }
        let content = piece["content"].as_str().unwrap_or_default();
        let bytes = STANDARD
            .decode(content)
            .map_err(|e| SysError::io(format!("copying {path}: the file driver's base64: {e}")))?;
        let got = bytes.len();
        data.extend_from_slice(&bytes);
        if piece["truncated"].as_bool() != Some(true) || got == 0 {
            break;
        }
    }
    *total += data.len() as u64;
    let executable = is_executable(ws, path)?;
    Ok(ReadFile { data, executable })
}

/// Opens the regular file at `path` as the agent (beneath the root, not
/// through a symlink) and runs `then` on it and its status.
fn with_file<T>(
    ws: &Workspace,
    path: &str,
    then: impl FnOnce(&std::fs::File, &WsPath<'_>, &nix::sys::stat::FileStat) -> Result<T, SysError>,
) -> Result<T, SysError> {
    let p = WsPath::parse("copy", path)?;
    let _creds = AgentCreds::enter(ws.uid, ws.gid)?;
    let root = ws.root()?;
    let (file, st) = open_checked(root.as_fd(), &p.rel(), OFlag::O_RDONLY, "copy", &p)?;
    then(&file, &p, &st)
}

/// Whether the regular file at `path` is executable by its owner.
fn is_executable(ws: &Workspace, path: &str) -> Result<bool, SysError> {
    with_file(ws, path, |_, _, st| Ok(st.st_mode & libc::S_IXUSR != 0))
}

/// Gives the regular file at `path` mode 0700, as the agent.
fn make_executable(ws: &Workspace, path: &str) -> Result<(), SysError> {
    with_file(ws, path, |file, p, _| {
        fchmod(file, Mode::S_IRWXU).map_err(|e| {
            SysError::from_io(
                &e.into(),
                &format!("copy {}: making it executable", p.shown()),
            )
        })
    })
}

/// A file call's error, said as part of a copy.
fn copying(path: &str, e: SysError) -> SysError {
    SysError::new(e.code, format!("copying {path}: {}", e.message))
}

fn too_big(path: &str, why: &str) -> SysError {
    SysError::msgsize(format!(
        "copying {path} out of the workspace: refused, {why}"
    ))
}
