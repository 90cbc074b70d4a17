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

use std::borrow::Cow;
use std::ffi::{CStr, CString};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use nix::NixPath;
use nix::dir::Dir;
use nix::errno::Errno as Nerr;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{FileStat, Mode, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, ftruncate, unlinkat};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::creds::AgentCreds;
use crate::abi::errno::{Errno, SysError};

/// Longest path an agent may pass, in bytes.
const MAX_PATH_BYTES: usize = 4096;
/// The first component of an absolute path that names the workspace root as the
/// agent's own process sees it (its workspace is mounted at `/workspace`).
const AGENT_MOUNT: &str = "workspace";
/// Deepest directory nesting that usage accounting and recursive deletion walk
/// (each level holds one open directory fd).
const MAX_TREE_DEPTH: usize = 256;
/// Most entries FS_LIST returns; the rest is cut off and `truncated` is set.
const MAX_LIST_ENTRIES: usize = 10_000;
/// How often `openat2` is retried when the kernel reports a race (`EAGAIN`).
const RESOLVE_RETRIES: usize = 16;
/// How often FS_WRITE retries when the target appears or vanishes between its
/// probe and its open.
const WRITE_ATTEMPTS: usize = 4;
/// Longest argument or path echoed back in an error message, in bytes.
const MAX_ECHO_BYTES: usize = 200;

/// Base64 as accepted from agents: standard alphabet, padding optional.
const BASE64_IN: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

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

    /// Opens the directory `comps` beneath the root (`O_PATH`), creating missing
    /// directories (mode 0700, owned by the agent) one component at a time.
    fn ensure_dir(&self, comps: &[&str], op: &str, path: &WsPath<'_>) -> Result<OwnedFd, SysError> {
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
            return Err(io_path_err(
                &e,
                OP,
                path,
                &format!("writing failed ({note})"),
            ));
        }
        let st = fstat(&file).map_err(|e| path_err(e, OP, path))?;
        Ok(json!({ "bytes_written": len, "size": file_size(&st) }))
    }
}

/// Encoding of file content in FS_READ results and FS_WRITE arguments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Encoding {
    /// UTF-8 text, carried as a JSON string.
    #[default]
    #[serde(alias = "utf-8")]
    Utf8,
    /// Any bytes, carried as standard base64.
    Base64,
}

impl Encoding {
    fn as_str(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf8",
            Encoding::Base64 => "base64",
        }
    }
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object with the FS_READ arguments"
)]
struct ReadArgs {
    path: String,
    offset: Option<u64>,
    max_bytes: Option<u64>,
    encoding: Option<Encoding>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object with the FS_WRITE arguments"
)]
struct WriteArgs {
    path: String,
    content: String,
    append: Option<bool>,
    encoding: Option<Encoding>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object with the FS_LIST arguments"
)]
struct ListArgs {
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object with the FS_DELETE arguments"
)]
struct DeleteArgs {
    path: String,
    recursive: Option<bool>,
}

/// A field name and a check of its value's type, so that a bad argument is
/// reported with the name of its field (serde alone does not say which field
/// had the wrong type).
type FieldCheck = (&'static str, fn(&Value) -> Result<(), serde_json::Error>);

fn check<T: DeserializeOwned>(value: &Value) -> Result<(), serde_json::Error> {
    T::deserialize(value).map(drop)
}

const READ_FIELDS: &[FieldCheck] = &[
    ("path", check::<String>),
    ("offset", check::<Option<u64>>),
    ("max_bytes", check::<Option<u64>>),
    ("encoding", check::<Option<Encoding>>),
];
const WRITE_FIELDS: &[FieldCheck] = &[
    ("path", check::<String>),
    ("content", check::<String>),
    ("append", check::<Option<bool>>),
    ("encoding", check::<Option<Encoding>>),
];
const LIST_FIELDS: &[FieldCheck] = &[("path", check::<Option<String>>)];
const DELETE_FIELDS: &[FieldCheck] = &[
    ("path", check::<String>),
    ("recursive", check::<Option<bool>>),
];

/// Parses the arguments of `op`. `null` counts as `{}`. Any problem is EINVAL
/// "bad arguments for OP: ..." naming the field.
fn parse_args<T: DeserializeOwned>(
    op: &str,
    args: &Value,
    fields: &[FieldCheck],
) -> Result<T, SysError> {
    let bad = |msg: &str| {
        SysError::inval(format!(
            "bad arguments for {op}: {}",
            clip(msg, 2 * MAX_ECHO_BYTES)
        ))
    };
    let empty = Value::Object(serde_json::Map::new());
    let args = match args {
        Value::Null => &empty,
        Value::Object(map) => {
            for (key, value) in map {
                match fields.iter().find(|(name, _)| name == key) {
                    None => {
                        let known: Vec<String> =
                            fields.iter().map(|(name, _)| format!("`{name}`")).collect();
                        return Err(bad(&format!(
                            "unknown field `{}`, expected one of {}",
                            clip(key, MAX_ECHO_BYTES),
                            known.join(", ")
                        )));
                    }
                    Some((_, check)) => {
                        check(value).map_err(|e| bad(&format!("field `{key}`: {e}")))?
                    }
                }
            }
            args
        }
        Value::Bool(_) => return Err(bad("expected a JSON object, got a boolean")),
        Value::Number(_) => return Err(bad("expected a JSON object, got a number")),
        Value::String(_) => return Err(bad("expected a JSON object, got a string")),
        Value::Array(_) => return Err(bad("expected a JSON object, got an array")),
    };
    T::deserialize(args).map_err(|e| bad(&e.to_string()))
}

/// A path as the agent gave it, normalised lexically to components beneath the
/// workspace root: none of them is empty, `.` or `..`.
struct WsPath<'a> {
    raw: &'a str,
    comps: Vec<&'a str>,
}

impl<'a> WsPath<'a> {
    /// Validates and normalises `raw`. "/workspace/a", "/a", "a" and "./a" all
    /// name the same file; only an absolute path loses a leading "workspace"
    /// component. A `..` that would climb above the root is EXDEV.
    fn parse(op: &str, raw: &'a str) -> Result<Self, SysError> {
        let bad =
            |why: &str| SysError::inval(format!("bad arguments for {op}: field `path` {why}"));
        if raw.is_empty() {
            return Err(bad("is empty"));
        }
        if raw.len() > MAX_PATH_BYTES {
            return Err(bad(&format!("is longer than {MAX_PATH_BYTES} bytes")));
        }
        if raw.contains('\0') {
            return Err(bad("contains a NUL byte"));
        }
        let mut parts = raw
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .peekable();
        if raw.starts_with('/') && parts.peek() == Some(&AGENT_MOUNT) {
            parts.next();
        }
        let mut comps = Vec::new();
        for part in parts {
            if part == ".." {
                if comps.pop().is_none() {
                    return Err(SysError::new(
                        Errno::EXDEV,
                        format!("{op} {}: path escapes the workspace", shown(raw)),
                    ));
                }
            } else {
                comps.push(part);
            }
        }
        Ok(WsPath { raw, comps })
    }

    /// The path relative to the root, "." for the root itself.
    fn rel(&self) -> String {
        join_rel(&self.comps)
    }

    /// The parent components and the final name; `None` for the root.
    fn split_last(&self) -> Option<(&[&'a str], &'a str)> {
        self.comps
            .split_last()
            .map(|(last, parents)| (parents, *last))
    }

    /// The agent's path, quoted (and shortened) for messages.
    fn shown(&self) -> String {
        shown(self.raw)
    }
}

fn join_rel(comps: &[&str]) -> String {
    if comps.is_empty() {
        ".".to_owned()
    } else {
        comps.join("/")
    }
}

fn shown(raw: &str) -> String {
    format!("{:?}", clip(raw, MAX_ECHO_BYTES))
}

/// `s` cut to at most `max` bytes on a character boundary, marked with "…" if cut.
fn clip(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}

/// `openat2(dir, path)` confined beneath `dir`: no absolute paths or symlinks,
/// no escaping `..`, no magic links, no mount crossings. `O_CLOEXEC` is always
/// added. Retried when the kernel reports a rename race (`EAGAIN`) or `EINTR`.
fn open_beneath<P: ?Sized + NixPath>(
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
fn open_dir_path(dir: &Path) -> io::Result<OwnedFd> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)?;
    Ok(OwnedFd::from(file))
}

/// `fstat` of `rel` beneath `dir` itself, never following a final symlink and
/// without opening the object (`O_PATH`): a FIFO or device is not opened.
fn probe(dir: BorrowedFd<'_>, rel: &str) -> nix::Result<FileStat> {
    let fd = open_beneath(dir, rel, OFlag::O_PATH | OFlag::O_NOFOLLOW, Mode::empty())?;
    fstat(&fd)
}

/// Opens `rel` beneath `dir` with `access`, non-blocking, without acquiring a
/// controlling terminal and without following a final symlink, and checks the
/// fd obtained: only a regular file with one link is returned.
fn open_checked(
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

fn file_type(st: &FileStat) -> libc::mode_t {
    st.st_mode & libc::S_IFMT
}

fn kind_name(st: &FileStat) -> &'static str {
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
fn require_regular(st: &FileStat, op: &str, path: &WsPath<'_>) -> Result<(), SysError> {
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

fn file_size(st: &FileStat) -> u64 {
    u64::try_from(st.st_size).unwrap_or(0)
}

fn len_u64(data: &[u8]) -> u64 {
    u64::try_from(data.len()).unwrap_or(u64::MAX)
}

fn off_t(n: u64) -> libc::off_t {
    libc::off_t::try_from(n).unwrap_or(libc::off_t::MAX)
}

/// Maps an errno from an operation on `path` to the ABI, with a message naming the call and path.
fn path_err(e: Nerr, op: &str, path: &WsPath<'_>) -> SysError {
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
fn plain_err(e: Nerr, ctx: &str) -> SysError {
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
fn io_path_err(e: &io::Error, op: &str, path: &WsPath<'_>, what: &str) -> SysError {
    let code = SysError::from_io(e, "").code;
    SysError::new(code, format!("{op} {}: {what}: {e}", path.shown()))
}

/// The names in `dir`, without "." and "..".
fn read_entries(dir: &mut Dir) -> nix::Result<Vec<CString>> {
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
fn walk_tree<V, L>(
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

/// Reads at most `limit` bytes of `file` from `offset`, and never past `size`.
fn read_range(file: &File, offset: u64, limit: u64, size: u64) -> io::Result<Vec<u8>> {
    if offset >= size || limit == 0 {
        return Ok(Vec::new());
    }
    let want = limit.min(size - offset);
    let mut buf = Vec::new();
    buf.try_reserve_exact(usize::try_from(want).unwrap_or(usize::MAX))
        .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "read buffer too large"))?;
    let mut reader = file;
    reader.seek(SeekFrom::Start(offset))?;
    reader.take(want).read_to_end(&mut buf)?;
    Ok(buf)
}

/// FS_READ `{"path", "offset"?, "max_bytes"?, "encoding"?}` →
/// `{"content", "size", "truncated", "encoding"}`.
///
/// Returns at most `min(max_bytes, limits.max_read_bytes)` bytes from `offset`
/// (default 0); `size` is the file's size, `truncated` tells that the file goes
/// on past what was returned. With the default encoding "utf8" the bytes must be
/// UTF-8 (EINVAL otherwise, pointing at "encoding": "base64"); a character cut
/// in two by the size limit is left out of `content`.
pub fn fs_read(ws: &Workspace, args: &Value) -> Result<Value, SysError> {
    const OP: &str = "FS_READ";
    let a: ReadArgs = parse_args(OP, args, READ_FIELDS)?;
    let path = WsPath::parse(OP, &a.path)?;
    let encoding = a.encoding.unwrap_or_default();
    let offset = a.offset.unwrap_or(0);
    let max_read = ws.limits.max_read_bytes;
    let limit = a.max_bytes.map_or(max_read, |m| m.min(max_read));
    let (bytes, size) = {
        let _creds = AgentCreds::enter(ws.uid, ws.gid)?;
        let root_fd = ws.root()?;
        let root = root_fd.as_fd();
        let rel = path.rel();
        let st = probe(root, &rel).map_err(|e| path_err(e, OP, &path))?;
        require_regular(&st, OP, &path)?;
        let (file, st) = open_checked(root, &rel, OFlag::O_RDONLY, OP, &path)?;
        let size = file_size(&st);
        let bytes = read_range(&file, offset, limit, size)
            .map_err(|e| io_path_err(&e, OP, &path, "reading failed"))?;
        (bytes, size)
    };
    let cut_by_limit = offset.saturating_add(len_u64(&bytes)) < size;
    let content = match encoding {
        Encoding::Base64 => STANDARD.encode(&bytes),
        Encoding::Utf8 => {
            let not_utf8 = |at: usize| {
                SysError::inval(format!(
                    "{OP} {}: the content is not valid UTF-8 (at byte {}); \
                     read it with \"encoding\": \"base64\"",
                    path.shown(),
                    offset.saturating_add(len_u64(&bytes[..at]))
                ))
            };
            match std::str::from_utf8(&bytes) {
                Ok(text) => text.to_owned(),
                // Only a character cut in two by the size limit is forgiven.
                Err(e) if cut_by_limit && e.error_len().is_none() => {
                    std::str::from_utf8(&bytes[..e.valid_up_to()])
                        .map_err(|_| not_utf8(e.valid_up_to()))?
                        .to_owned()
                }
                Err(e) => return Err(not_utf8(e.valid_up_to())),
            }
        }
    };
    let returned = match encoding {
        Encoding::Base64 => len_u64(&bytes),
        Encoding::Utf8 => len_u64(content.as_bytes()),
    };
    Ok(json!({
        "content": content,
        "size": size,
        "truncated": offset.saturating_add(returned) < size,
        "encoding": encoding.as_str(),
    }))
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
        return Err(io_path_err(
            &e,
            OP,
            path,
            &format!("writing failed ({note})"),
        ));
    }
    let st = fstat(&file).map_err(|e| path_err(e, OP, path))?;
    Ok(json!({ "bytes_written": len_u64(data), "size": file_size(&st) }))
}

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::drivers::creds::{current_fsgid, current_fsuid, set_thread_groups};
    use nix::unistd::{Gid, getgroups};
    use std::collections::hash_map::DefaultHasher;
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::{MetadataExt, PermissionsExt, chown, lchown, symlink};
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    const AGENT_UID: u32 = 2_900_001;
    const AGENT_GID: u32 = 2_900_001;

    const BIG: FsLimits = FsLimits {
        quota_bytes: 1 << 30,
        max_file_bytes: 1 << 26,
        max_read_bytes: 1 << 26,
    };

    /// A temporary directory `base` holding the workspace `base/ws` (owned by
    /// the agent, 0700) and host files beside it. Removed on drop.
    struct TestWs {
        base: PathBuf,
        dir: PathBuf,
        ws: Arc<Workspace>,
    }

    impl Drop for TestWs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }

    fn setup(limits: FsLimits) -> TestWs {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        assert_eq!(
            nix::unistd::geteuid().as_raw(),
            0,
            "these tests must run as root"
        );
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let base = std::env::temp_dir().join(format!(
            "agentos-fs-test-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir(&base).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = base.join("ws");
        std::fs::create_dir(&dir).unwrap();
        chown(&dir, Some(AGENT_UID), Some(AGENT_GID)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let ws = Arc::new(Workspace::open(&dir, AGENT_UID, AGENT_GID, limits).unwrap());
        TestWs { base, dir, ws }
    }

    /// A host file beside the workspace, owned by the agent and world-writable,
    /// so that only the confinement (not DAC) keeps the agent away from it.
    fn host_file(t: &TestWs, name: &str, content: &[u8]) -> PathBuf {
        let p = t.base.join(name);
        std::fs::write(&p, content).unwrap();
        chown(&p, Some(AGENT_UID), Some(AGENT_GID)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        p
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn err(r: Result<Value, SysError>) -> SysError {
        match r {
            Ok(v) => panic!("expected an error, got {v}"),
            Err(e) => e,
        }
    }

    fn write(ws: &Workspace, path: &str, content: &str) -> Result<Value, SysError> {
        fs_write(ws, &json!({ "path": path, "content": content }))
    }

    fn read(ws: &Workspace, path: &str) -> Result<Value, SysError> {
        fs_read(ws, &json!({ "path": path }))
    }

    fn read_text(ws: &Workspace, path: &str) -> String {
        read(ws, path).unwrap()["content"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn hash_file(p: &Path) -> u64 {
        let mut h = DefaultHasher::new();
        std::fs::read(p).unwrap().hash(&mut h);
        h.finish()
    }

    /// Runs `f` on another thread and fails if it takes more than 5 s.
    fn within_5s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the operation hung for more than 5 s")
    }

    fn thread_creds() -> (u32, u32, Vec<u32>) {
        let groups = getgroups().unwrap().into_iter().map(Gid::as_raw).collect();
        (current_fsuid().as_raw(), current_fsgid().as_raw(), groups)
    }

    #[test]
    fn round_trip_write_read_list_delete() {
        let t = setup(BIG);
        let ws = &*t.ws;
        let r = write(ws, "a/b/c.txt", "hello").unwrap();
        assert_eq!(r, json!({ "bytes_written": 5, "size": 5 }));
        for (p, mode) in [("a", 0o700), ("a/b", 0o700), ("a/b/c.txt", 0o600)] {
            let md = std::fs::symlink_metadata(t.dir.join(p)).unwrap();
            assert_eq!((md.uid(), md.gid()), (AGENT_UID, AGENT_GID), "owner of {p}");
            assert_eq!(md.mode() & 0o7777, mode, "mode of {p}");
        }
        assert_eq!(std::fs::read(t.dir.join("a/b/c.txt")).unwrap(), b"hello");
        let r = read(ws, "a/b/c.txt").unwrap();
        assert_eq!(
            r,
            json!({ "content": "hello", "size": 5, "truncated": false, "encoding": "utf8" })
        );

        let r = fs_write(
            ws,
            &json!({ "path": "a/b/c.txt", "content": " world", "append": true }),
        )
        .unwrap();
        assert_eq!(r, json!({ "bytes_written": 6, "size": 11 }));
        assert_eq!(read_text(ws, "a/b/c.txt"), "hello world");
        // Overwriting truncates the old content.
        write(ws, "a/b/c.txt", "bye").unwrap();
        assert_eq!(read_text(ws, "a/b/c.txt"), "bye");
        // Appending to a missing file creates it.
        fs_write(
            ws,
            &json!({ "path": "new.txt", "content": "x", "append": true }),
        )
        .unwrap();
        assert_eq!(read_text(ws, "new.txt"), "x");

        let r = fs_list(ws, &json!({})).unwrap();
        assert_eq!(
            r,
            json!({ "entries": [
                { "name": "a", "type": "dir", "size": 0 },
                { "name": "new.txt", "type": "file", "size": 1 },
            ], "truncated": false })
        );
        let r = fs_list(ws, &json!({ "path": "/a/b" })).unwrap();
        assert_eq!(
            r["entries"],
            json!([{ "name": "c.txt", "type": "file", "size": 3 }])
        );

        let e = err(fs_delete(ws, &json!({ "path": "a" })));
        assert_eq!(e.code, Errno::ENOTEMPTY, "{e}");
        assert!(t.dir.join("a/b/c.txt").exists());
        assert_eq!(
            fs_delete(ws, &json!({ "path": "new.txt" })).unwrap(),
            json!({ "deleted": true })
        );
        assert!(!t.dir.join("new.txt").exists());
        fs_delete(ws, &json!({ "path": "a", "recursive": true })).unwrap();
        assert!(!t.dir.join("a").exists());
        assert_eq!(fs_list(ws, &Value::Null).unwrap()["entries"], json!([]));
        assert_eq!(err(read(ws, "a/b/c.txt")).code, Errno::ENOENT);
        assert_eq!(
            err(fs_delete(ws, &json!({ "path": "a" }))).code,
            Errno::ENOENT
        );
        // An empty directory goes without `recursive`.
        std::fs::create_dir(t.dir.join("empty")).unwrap();
        fs_delete(ws, &json!({ "path": "empty" })).unwrap();
        assert!(!t.dir.join("empty").exists());
    }

    #[test]
    fn base64_round_trip_and_utf8_refusal() {
        let t = setup(BIG);
        let ws = &*t.ws;
        let bytes: Vec<u8> = (0..=255u8).collect();
        let b64 = STANDARD.encode(&bytes);
        let r = fs_write(
            ws,
            &json!({ "path": "bin", "content": b64, "encoding": "base64" }),
        )
        .unwrap();
        assert_eq!(r["bytes_written"], 256);
        assert_eq!(std::fs::read(t.dir.join("bin")).unwrap(), bytes);
        let r = fs_read(ws, &json!({ "path": "bin", "encoding": "base64" })).unwrap();
        assert_eq!(r["content"], json!(b64));
        assert_eq!(r["encoding"], "base64");
        let e = err(read(ws, "bin"));
        assert_eq!(e.code, Errno::EINVAL);
        assert!(e.message.contains("\"encoding\": \"base64\""), "{e}");
        // Unpadded base64 is accepted too.
        fs_write(
            ws,
            &json!({ "path": "p", "content": "YWI", "encoding": "base64" }),
        )
        .unwrap();
        assert_eq!(read_text(ws, "p"), "ab");
    }

    #[test]
    fn utf8_character_cut_by_the_limit_is_left_out() {
        let t = setup(BIG);
        let ws = &*t.ws;
        write(ws, "e.txt", "ééé").unwrap(); // 6 bytes
        let r = fs_read(ws, &json!({ "path": "e.txt", "max_bytes": 3 })).unwrap();
        assert_eq!(r["content"], "é");
        assert_eq!(r["truncated"], true);
        let r = fs_read(ws, &json!({ "path": "e.txt", "offset": 2, "max_bytes": 4 })).unwrap();
        assert_eq!(r["content"], "éé");
        assert_eq!(r["truncated"], false);
        // A read starting inside a character is not UTF-8.
        assert_eq!(
            err(fs_read(ws, &json!({ "path": "e.txt", "offset": 1 }))).code,
            Errno::EINVAL
        );
    }

    #[test]
    fn workspace_prefix_and_relative_paths_name_the_same_file() {
        let t = setup(BIG);
        let ws = &*t.ws;
        write(ws, "/a.txt", "1").unwrap();
        assert_eq!(read_text(ws, "a.txt"), "1");
        assert_eq!(read_text(ws, "/workspace/a.txt"), "1");
        assert_eq!(read_text(ws, "./a.txt"), "1");
        assert_eq!(read_text(ws, "//workspace//./a.txt"), "1");
        write(ws, "/workspace/a.txt", "2").unwrap();
        assert_eq!(read_text(ws, "/a.txt"), "2");
        write(ws, "a.txt", "3").unwrap();
        assert_eq!(read_text(ws, "/workspace/a.txt"), "3");
        assert_eq!(names_in(&t.dir), vec!["a.txt"]);
        for root in ["/", "/workspace", "/workspace/", ".", "sub/.."] {
            let r = fs_list(ws, &json!({ "path": root })).unwrap();
            assert_eq!(r["entries"][0]["name"], "a.txt", "listing {root}");
        }
        // Only a leading component of an absolute path is the mount point.
        write(ws, "workspace/b.txt", "4").unwrap();
        assert!(t.dir.join("workspace/b.txt").exists());
        assert_eq!(read_text(ws, "/workspace/workspace/b.txt"), "4");
        write(ws, "x/../c.txt", "5").unwrap();
        assert!(t.dir.join("c.txt").exists());
        assert!(!t.dir.join("x").exists());
        assert_eq!(err(read(ws, "/")).code, Errno::EISDIR);
        assert_eq!(err(write(ws, "/workspace", "x")).code, Errno::EISDIR);
    }

    #[test]
    fn dotdot_escapes_are_exdev_and_touch_nothing() {
        let t = setup(BIG);
        let ws = &*t.ws;
        std::fs::create_dir(t.dir.join("a")).unwrap();
        chown(t.dir.join("a"), Some(AGENT_UID), Some(AGENT_GID)).unwrap();
        let before = names_in(&t.base);
        for p in [
            "../x",
            "/../../etc/passwd",
            "a/../../x",
            "/workspace/../x",
            "..",
            "a/../..",
        ] {
            for (what, r) in [
                ("read", read(ws, p)),
                ("write", write(ws, p, "pwned")),
                ("list", fs_list(ws, &json!({ "path": p }))),
                (
                    "delete",
                    fs_delete(ws, &json!({ "path": p, "recursive": true })),
                ),
            ] {
                let e = err(r);
                assert_eq!(e.code, Errno::EXDEV, "{what} {p}: {e}");
                assert!(e.message.contains("escapes the workspace"), "{e}");
            }
        }
        assert_eq!(names_in(&t.base), before);
        assert_eq!(names_in(&t.dir), vec!["a"]);
        assert!(std::fs::metadata("/etc/passwd").unwrap().len() > 0);
    }

    #[test]
    fn deleting_the_root_is_einval() {
        let t = setup(BIG);
        let ws = &*t.ws;
        write(ws, "f", "x").unwrap();
        for p in ["/", "/workspace", ".", "a/..", "/workspace/."] {
            let e = err(fs_delete(ws, &json!({ "path": p, "recursive": true })));
            assert_eq!(e.code, Errno::EINVAL, "{p}: {e}");
        }
        assert!(t.dir.join("f").exists());
    }

    #[test]
    fn symlinks_out_of_the_workspace_are_refused() {
        let t = setup(BIG);
        let ws = &*t.ws;
        let shadow = Path::new("/etc/shadow");
        let shadow_hash = hash_file(shadow);
        let shadow_mtime = std::fs::metadata(shadow).unwrap().mtime();
        let host = host_file(&t, "host.txt", b"host secret");
        let host_dir = t.base.join("hostdir");
        std::fs::create_dir(&host_dir).unwrap();
        std::fs::set_permissions(&host_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let links: [(&str, PathBuf); 6] = [
            ("shadow", shadow.into()),
            ("procroot", "/proc/self/root".into()),
            ("up", "../../..".into()),
            ("hostabs", host.clone()),
            ("hostrel", "../host.txt".into()),
            ("hostdir", host_dir.clone()),
        ];
        for (name, target) in &links {
            symlink(target, t.dir.join(name)).unwrap();
            lchown(t.dir.join(name), Some(AGENT_UID), Some(AGENT_GID)).unwrap();
        }
        let base_before = names_in(&t.base);
        // The symlink itself as final component: refused, never followed.
        for (name, _) in &links {
            let e = err(read(ws, name));
            assert_eq!(e.code, Errno::EFTYPE, "read {name}: {e}");
            assert!(e.message.contains("symlink"), "{e}");
            let e = err(write(ws, name, "pwned"));
            assert_eq!(e.code, Errno::EFTYPE, "write {name}: {e}");
            let e = err(fs_write(
                ws,
                &json!({ "path": name, "content": "pwned", "append": true }),
            ));
            assert_eq!(e.code, Errno::EFTYPE, "append {name}: {e}");
            let e = err(fs_list(ws, &json!({ "path": name })));
            assert_eq!(e.code, Errno::EFTYPE, "list {name}: {e}");
        }
        // Through the symlink as a directory: escapes.
        for p in [
            "procroot/etc/shadow",
            "procroot/etc/passwd",
            "up/etc/passwd",
            "up/tmp/pwned",
            "hostdir/pwned",
            "hostdir/x/y/z",
            "shadow/x",
        ] {
            let e = err(read(ws, p));
            assert!(
                matches!(e.code, Errno::EXDEV | Errno::ENOTDIR | Errno::ENOENT),
                "read {p}: {e}"
            );
            let e = err(write(ws, p, "pwned"));
            assert_eq!(e.code, Errno::EXDEV, "write {p}: {e}");
            let e = err(fs_delete(ws, &json!({ "path": p })));
            assert_eq!(e.code, Errno::EXDEV, "delete {p}: {e}");
        }
        std::fs::create_dir(host_dir.join("sub")).unwrap();
        for p in ["procroot/etc", "up/tmp", "up/etc/", "hostdir/sub"] {
            let e = err(fs_list(ws, &json!({ "path": p })));
            assert_eq!(e.code, Errno::EXDEV, "list {p}: {e}");
        }
        // Deleting a symlink removes the link, not its target.
        fs_delete(ws, &json!({ "path": "hostabs" })).unwrap();
        fs_delete(ws, &json!({ "path": "shadow", "recursive": true })).unwrap();
        fs_delete(ws, &json!({ "path": "hostdir", "recursive": true })).unwrap();
        assert_eq!(hash_file(shadow), shadow_hash);
        assert_eq!(std::fs::metadata(shadow).unwrap().mtime(), shadow_mtime);
        assert_eq!(std::fs::read(&host).unwrap(), b"host secret");
        assert_eq!(names_in(&host_dir), vec!["sub"]);
        assert!(names_in(&host_dir.join("sub")).is_empty());
        assert_eq!(names_in(&t.base), base_before);
        assert!(!Path::new("/tmp/pwned").exists());
    }

    #[test]
    fn hard_links_to_host_files_are_refused() {
        let t = setup(BIG);
        let ws = &*t.ws;
        let host = host_file(&t, "host.txt", b"host secret");
        std::fs::hard_link(&host, t.dir.join("hl")).unwrap();
        let e = err(read(ws, "hl"));
        assert_eq!(e.code, Errno::EFTYPE, "{e}");
        assert!(e.message.contains("hard-linked files are refused"), "{e}");
        for append in [false, true] {
            let e = err(fs_write(
                ws,
                &json!({ "path": "hl", "content": "pwned", "append": append }),
            ));
            assert_eq!(e.code, Errno::EFTYPE, "{e}");
        }
        assert_eq!(std::fs::read(&host).unwrap(), b"host secret");
        assert_eq!(std::fs::metadata(&host).unwrap().nlink(), 2);
        // Deleting the link is fine and leaves the host file alone.
        fs_delete(ws, &json!({ "path": "hl" })).unwrap();
        assert_eq!(std::fs::read(&host).unwrap(), b"host secret");
    }

    #[test]
    fn fifos_and_sockets_are_refused_without_hanging() {
        let t = setup(BIG);
        nix::unistd::mkfifo(&t.dir.join("fifo"), Mode::from_bits_truncate(0o666)).unwrap();
        chown(t.dir.join("fifo"), Some(AGENT_UID), Some(AGENT_GID)).unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(t.dir.join("sock")).unwrap();
        chown(t.dir.join("sock"), Some(AGENT_UID), Some(AGENT_GID)).unwrap();
        for (name, kind) in [("fifo", "FIFO"), ("sock", "socket")] {
            let ws = Arc::clone(&t.ws);
            let started = Instant::now();
            let (r, w, a) = within_5s(move || {
                (
                    read(&ws, name),
                    write(&ws, name, "x"),
                    fs_write(
                        &ws,
                        &json!({ "path": name, "content": "x", "append": true }),
                    ),
                )
            });
            assert!(started.elapsed() < Duration::from_secs(5));
            for (what, r) in [("read", r), ("write", w), ("append", a)] {
                let e = err(r);
                assert_eq!(e.code, Errno::EFTYPE, "{what} {name}: {e}");
                assert!(e.message.contains(kind), "{e}");
            }
        }
        // Refused before open: also with the other end held open by a reader.
        let fifo_reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(t.dir.join("fifo"))
            .unwrap();
        let ws = Arc::clone(&t.ws);
        let e = err(within_5s(move || write(&ws, "fifo", "x")));
        assert_eq!(e.code, Errno::EFTYPE, "{e}");
        drop(fifo_reader);
        let r = fs_list(&t.ws, &json!({})).unwrap();
        assert_eq!(
            r["entries"],
            json!([
                { "name": "fifo", "type": "other", "size": 0 },
                { "name": "sock", "type": "other", "size": 0 },
            ])
        );
        assert!(t.dir.join("fifo").exists());
    }

    /// Gives the test thread supplementary group 0, as a daemon started from a
    /// root login shell has, until dropped.
    struct RootGroup(Vec<libc::gid_t>);

    impl RootGroup {
        fn join() -> Self {
            let prev = getgroups().unwrap().into_iter().map(Gid::as_raw).collect();
            set_thread_groups(&[0]).unwrap();
            RootGroup(prev)
        }
    }

    impl Drop for RootGroup {
        fn drop(&mut self) {
            set_thread_groups(&self.0).unwrap();
        }
    }

    /// The checks made on the opened fd hold on their own, i.e. when the
    /// object was swapped after the `O_PATH` probe.
    #[test]
    fn open_checked_refuses_without_the_probe() {
        let t = setup(BIG);
        nix::unistd::mkfifo(&t.dir.join("fifo"), Mode::from_bits_truncate(0o666)).unwrap();
        chown(t.dir.join("fifo"), Some(AGENT_UID), Some(AGENT_GID)).unwrap();
        write(&t.ws, "target", "t").unwrap();
        symlink("target", t.dir.join("link")).unwrap();
        let host = host_file(&t, "host.txt", b"host");
        std::fs::hard_link(&host, t.dir.join("hl")).unwrap();
        std::fs::create_dir(t.dir.join("dir")).unwrap();
        let cases = [
            ("fifo", OFlag::O_RDONLY, Errno::EFTYPE),
            ("fifo", OFlag::O_WRONLY, Errno::EFTYPE),
            ("link", OFlag::O_RDONLY, Errno::EFTYPE),
            ("link", OFlag::O_WRONLY, Errno::EFTYPE),
            ("hl", OFlag::O_RDONLY, Errno::EFTYPE),
            ("hl", OFlag::O_WRONLY, Errno::EFTYPE),
            ("dir", OFlag::O_RDONLY, Errno::EISDIR),
        ];
        for (name, access, code) in cases {
            let ws = Arc::clone(&t.ws);
            let r = within_5s(move || {
                let _creds = AgentCreds::enter(AGENT_UID, AGENT_GID).unwrap();
                let path = WsPath::parse("TEST", name).unwrap();
                open_checked(
                    ws.root().expect("root").as_fd(),
                    name,
                    access,
                    "TEST",
                    &path,
                )
                .map(drop)
            });
            let e = r.expect_err(name);
            assert_eq!(e.code, code, "{name} {access:?}: {e}");
        }
        assert_eq!(std::fs::read(&host).unwrap(), b"host");
    }

    #[test]
    fn root_owned_files_are_out_of_reach() {
        let t = setup(BIG);
        let ws = &*t.ws;
        let _root_group = RootGroup::join();
        assert_eq!(thread_creds().2, vec![0]);
        for (name, mode) in [("secret600", 0o600), ("secret640", 0o640)] {
            let p = t.dir.join(name);
            std::fs::write(&p, b"root only").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            // 0640 root:root would be readable through the daemon's group 0.
            let e = err(read(ws, name));
            assert_eq!(e.code, Errno::EACCES, "read {name}: {e}");
            let e = err(write(ws, name, "pwned"));
            assert_eq!(e.code, Errno::EACCES, "write {name}: {e}");
            assert_eq!(std::fs::read(&p).unwrap(), b"root only");
        }
        // A root-owned directory: no creating inside, no listing.
        let d = t.dir.join("rootdir");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert_eq!(err(write(ws, "rootdir/x", "pwned")).code, Errno::EACCES);
        assert_eq!(err(write(ws, "rootdir/sub/x", "pwned")).code, Errno::EACCES);
        assert_eq!(
            err(fs_list(ws, &json!({ "path": "rootdir" }))).code,
            Errno::EACCES
        );
        assert!(names_in(&d).is_empty());
        // ...but a world-readable root file can be read (DAC applies as "other").
        std::fs::write(t.dir.join("public"), b"hi").unwrap();
        assert_eq!(read_text(ws, "public"), "hi");
    }

    #[test]
    fn credentials_are_restored_after_every_call() {
        let t = setup(BIG);
        let ws = &*t.ws;
        let _root_group = RootGroup::join();
        let before = thread_creds();
        assert_eq!(before, (0, 0, vec![0]));
        write(ws, "f", "x").unwrap();
        assert_eq!(thread_creds(), before);
        let _ = read(ws, "../x");
        let _ = read(ws, "missing");
        let _ = fs_list(ws, &json!({ "path": "f" }));
        let _ = fs_delete(ws, &json!({ "path": "f" }));
        assert_eq!(thread_creds(), before);
        {
            let _g = AgentCreds::enter(AGENT_UID, AGENT_GID).unwrap();
            assert_eq!(thread_creds(), (AGENT_UID, AGENT_GID, vec![]));
        }
        assert_eq!(thread_creds(), before);
        let r = std::panic::catch_unwind(|| {
            let _g = AgentCreds::enter(AGENT_UID, AGENT_GID).unwrap();
            panic!("unwinding through the guard");
        });
        assert!(r.is_err());
        assert_eq!(thread_creds(), before);
        // Other, already running threads are not affected while one is switched.
        let (ask_tx, ask_rx) = mpsc::channel::<()>();
        let (tell_tx, tell_rx) = mpsc::channel();
        let other = std::thread::spawn(move || {
            while ask_rx.recv().is_ok() {
                tell_tx.send(thread_creds()).unwrap();
            }
        });
        {
            let _g = AgentCreds::enter(AGENT_UID, AGENT_GID).unwrap();
            assert_eq!(thread_creds(), (AGENT_UID, AGENT_GID, vec![]));
            ask_tx.send(()).unwrap();
            assert_eq!(tell_rx.recv().unwrap(), before);
        }
        drop(ask_tx);
        other.join().unwrap();
    }

    #[test]
    fn root_and_invalid_ids_are_refused() {
        let t = setup(BIG);
        for (uid, gid) in [
            (0, AGENT_GID),
            (AGENT_UID, 0),
            (u32::MAX, AGENT_GID),
            (AGENT_UID, u32::MAX),
        ] {
            let e = Workspace::open(&t.dir, uid, gid, BIG).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
        symlink(&t.dir, t.base.join("wslink")).unwrap();
        assert!(Workspace::open(&t.base.join("wslink"), AGENT_UID, AGENT_GID, BIG).is_err());
    }

    #[test]
    fn symlink_swap_race_never_reaches_the_host() {
        let t = setup(BIG);
        let ws = &*t.ws;
        const SECRET: &str = "HOST-SENTINEL-CONTENT";
        let host_dir = t.base.join("host");
        std::fs::create_dir(&host_dir).unwrap();
        std::fs::set_permissions(&host_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let sentinel = host_dir.join("sentinel");
        std::fs::write(&sentinel, SECRET).unwrap();
        chown(&sentinel, Some(AGENT_UID), Some(AGENT_GID)).unwrap();
        std::fs::set_permissions(&sentinel, std::fs::Permissions::from_mode(0o666)).unwrap();
        let sentinel_mtime = std::fs::metadata(&sentinel).unwrap().mtime_nsec();

        std::fs::create_dir(t.dir.join("d")).unwrap();
        chown(t.dir.join("d"), Some(AGENT_UID), Some(AGENT_GID)).unwrap();
        symlink(&host_dir, t.dir.join("e")).unwrap(); // absolute
        symlink("../host", t.dir.join("f")).unwrap(); // relative, climbing out
        let ws_dir = File::open(&t.dir).unwrap();

        let stop = AtomicBool::new(false);
        let swaps = AtomicUsize::new(0);
        let ok_reads = AtomicUsize::new(0);
        let ok_writes = AtomicUsize::new(0);
        let refused = AtomicUsize::new(0);
        let leaked: Mutex<Vec<String>> = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            s.spawn(|| {
                let deadline = Instant::now() + Duration::from_secs(2);
                let mut i = 0usize;
                while Instant::now() < deadline {
                    let other = if i % 2 == 0 { "e" } else { "f" };
                    let exchange = || {
                        nix::fcntl::renameat2(
                            &ws_dir,
                            "d",
                            &ws_dir,
                            other,
                            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                        )
                        .unwrap();
                    };
                    exchange();
                    exchange();
                    // Leave `d` a symlink for a moment, too.
                    exchange();
                    std::thread::yield_now();
                    exchange();
                    swaps.fetch_add(4, Ordering::Relaxed);
                    i += 1;
                }
                stop.store(true, Ordering::SeqCst);
            });
            for worker in 0..2 {
                let (stop, ok_reads, ok_writes, refused, leaked) =
                    (&stop, &ok_reads, &ok_writes, &refused, &leaked);
                s.spawn(move || {
                    let paths = ["d/sentinel", "/workspace/d/sentinel", "d/./sentinel"];
                    let mut n = 0usize;
                    while !stop.load(Ordering::SeqCst) {
                        let p = paths[n % paths.len()];
                        n += 1;
                        let w = if worker == 0 {
                            write(ws, p, "AGENT")
                        } else {
                            fs_write(ws, &json!({ "path": "d/sub/sentinel", "content": "AGENT" }))
                        };
                        match w {
                            Ok(_) => ok_writes.fetch_add(1, Ordering::Relaxed),
                            Err(_) => refused.fetch_add(1, Ordering::Relaxed),
                        };
                        match read(ws, p) {
                            Ok(v) => {
                                ok_reads.fetch_add(1, Ordering::Relaxed);
                                // Empty while the other worker is between truncation and write.
                                let c = v["content"].as_str().unwrap_or_default().to_owned();
                                if c != "AGENT" && !c.is_empty() {
                                    leaked.lock().unwrap().push(c);
                                }
                            }
                            Err(e) => {
                                assert!(
                                    matches!(e.code, Errno::EXDEV | Errno::ENOENT | Errno::EAGAIN),
                                    "unexpected error {e}"
                                );
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
        });
        let leaked = leaked.into_inner().unwrap();
        assert!(
            leaked.is_empty(),
            "reads returned foreign content: {leaked:?}"
        );
        assert_eq!(std::fs::read_to_string(&sentinel).unwrap(), SECRET);
        assert_eq!(
            std::fs::metadata(&sentinel).unwrap().mtime_nsec(),
            sentinel_mtime
        );
        assert_eq!(names_in(&host_dir), vec!["sentinel"]);
        let (swaps, reads, writes, refused) = (
            swaps.into_inner(),
            ok_reads.into_inner(),
            ok_writes.into_inner(),
            refused.into_inner(),
        );
        eprintln!(
            "race: {swaps} swaps, {writes} writes and {reads} reads succeeded, {refused} refused"
        );
        assert!(swaps > 100, "the swapper barely ran");
        assert!(refused > 0, "no operation ever met the symlink");
        assert!(
            writes > 0 && reads > 0,
            "no operation ever met the directory"
        );
    }

    #[test]
    fn quota_and_size_limits() {
        let t = setup(FsLimits {
            quota_bytes: 1000,
            max_file_bytes: 600,
            max_read_bytes: 100,
        });
        let ws = &*t.ws;
        let data = |n: usize, c: char| c.to_string().repeat(n);
        write(ws, "a.txt", &data(500, 'a')).unwrap();
        assert_eq!(ws.usage_bytes().unwrap(), 500);

        let e = err(write(ws, "b.txt", &data(600, 'b')));
        assert_eq!(e.code, Errno::EQUOTA, "{e}");
        assert!(
            e.message.contains("500") && e.message.contains("1100") && e.message.contains("1000"),
            "{e}"
        );
        assert!(!t.dir.join("b.txt").exists());
        assert_eq!(ws.usage_bytes().unwrap(), 500);

        let e = err(write(ws, "c.txt", &data(601, 'c')));
        assert_eq!(e.code, Errno::EQUOTA, "{e}");
        assert!(
            e.message.contains("601") && e.message.contains("600"),
            "{e}"
        );
        assert!(!t.dir.join("c.txt").exists());

        // Replacing a file counts only the difference.
        write(ws, "a.txt", &data(600, 'A')).unwrap();
        assert_eq!(ws.usage_bytes().unwrap(), 600);
        // Appending past the per-file limit: refused, the file untouched.
        let e = err(fs_write(
            ws,
            &json!({ "path": "a.txt", "content": "x", "append": true }),
        ));
        assert_eq!(e.code, Errno::EQUOTA, "{e}");
        assert_eq!(
            std::fs::read_to_string(t.dir.join("a.txt")).unwrap(),
            data(600, 'A')
        );

        write(ws, "c.txt", &data(400, 'c')).unwrap(); // exactly at the quota
        assert_eq!(ws.usage_bytes().unwrap(), 1000);
        assert_eq!(err(write(ws, "d/e.txt", "x")).code, Errno::EQUOTA);
        assert_eq!(ws.usage_bytes().unwrap(), 1000);
        // Shrinking is always allowed.
        write(ws, "a.txt", &data(100, 'a')).unwrap();
        assert_eq!(ws.usage_bytes().unwrap(), 500);
        write(ws, "b.txt", &data(450, 'b')).unwrap();
        // Overwriting a.txt (100) with 200 bytes: 950 - 100 + 200 = 1050 > 1000.
        let e = err(write(ws, "a.txt", &data(200, 'z')));
        assert_eq!(e.code, Errno::EQUOTA, "{e}");
        assert_eq!(
            std::fs::read_to_string(t.dir.join("a.txt")).unwrap(),
            data(100, 'a')
        );
        assert_eq!(ws.usage_bytes().unwrap(), 950);

        // Reads are capped at max_read_bytes.
        let r = read(ws, "c.txt").unwrap();
        assert_eq!(r["content"].as_str().unwrap().len(), 100);
        assert_eq!(
            (r["size"].clone(), r["truncated"].clone()),
            (json!(400), json!(true))
        );
        let r = fs_read(ws, &json!({ "path": "c.txt", "max_bytes": 5000 })).unwrap();
        assert_eq!(r["content"].as_str().unwrap().len(), 100);
        // (content, truncated) of an FS_READ with `args`.
        let read_window = |args: Value| {
            let r = fs_read(ws, &args).unwrap();
            (r["content"].clone(), r["truncated"].clone())
        };
        assert_eq!(
            read_window(json!({ "path": "c.txt", "offset": 395, "max_bytes": 10 })),
            (json!("ccccc"), json!(false))
        );
        assert_eq!(
            read_window(json!({ "path": "c.txt", "offset": 10, "max_bytes": 0 })),
            (json!(""), json!(true))
        );
        assert_eq!(
            read_window(json!({ "path": "c.txt", "offset": u64::MAX })),
            (json!(""), json!(false))
        );
    }

    #[test]
    fn usage_counts_files_without_following_symlinks() {
        let t = setup(BIG);
        let ws = &*t.ws;
        assert_eq!(ws.usage_bytes().unwrap(), 0);
        write(ws, "a/b/c", &"x".repeat(1000)).unwrap();
        write(ws, "a/d", &"y".repeat(24)).unwrap();
        let big = host_file(&t, "big", &vec![0u8; 1 << 20]);
        symlink(&big, t.dir.join("a/big")).unwrap(); // counts its own length only
        symlink(&t.base, t.dir.join("up")).unwrap(); // not followed
        let expected = 1024 + big.as_os_str().len() as u64 + t.base.as_os_str().len() as u64;
        assert_eq!(ws.usage_bytes().unwrap(), expected);
    }

    #[test]
    fn recursive_delete_stays_beneath() {
        let t = setup(BIG);
        let ws = &*t.ws;
        let host_dir = t.base.join("host");
        std::fs::create_dir(&host_dir).unwrap();
        std::fs::set_permissions(&host_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let keep = host_dir.join("keep");
        std::fs::write(&keep, b"keep").unwrap();
        chown(&keep, Some(AGENT_UID), Some(AGENT_GID)).unwrap();
        let mut deep = String::from("top");
        for i in 0..50 {
            deep.push_str(&format!("/l{i}"));
        }
        write(ws, &format!("{deep}/leaf"), "x").unwrap();
        write(ws, "top/file", "x").unwrap();
        symlink(&host_dir, t.dir.join("top/abs")).unwrap();
        symlink("../../host", t.dir.join("top/l0/rel")).unwrap();
        std::fs::hard_link(&keep, t.dir.join("top/hl")).unwrap();
        fs_delete(ws, &json!({ "path": "/workspace/top", "recursive": true })).unwrap();
        assert!(!t.dir.join("top").exists());
        assert_eq!(std::fs::read(&keep).unwrap(), b"keep");
        assert_eq!(names_in(&host_dir), vec!["keep"]);
        assert!(names_in(&t.dir).is_empty());
    }

    #[test]
    fn type_errors() {
        let t = setup(BIG);
        let ws = &*t.ws;
        write(ws, "f", "x").unwrap();
        std::fs::create_dir(t.dir.join("dir")).unwrap();
        assert_eq!(err(read(ws, "dir")).code, Errno::EISDIR);
        assert_eq!(err(write(ws, "dir", "x")).code, Errno::EISDIR);
        assert_eq!(err(write(ws, "f/x", "x")).code, Errno::ENOTDIR);
        assert_eq!(err(read(ws, "f/x")).code, Errno::ENOTDIR);
        assert_eq!(
            err(fs_list(ws, &json!({ "path": "f" }))).code,
            Errno::ENOTDIR
        );
        assert_eq!(err(read(ws, "missing")).code, Errno::ENOENT);
        assert_eq!(
            err(fs_list(ws, &json!({ "path": "missing" }))).code,
            Errno::ENOENT
        );
        // A symlink inside the workspace may be a directory on the way.
        std::fs::create_dir(t.dir.join("real")).unwrap();
        chown(t.dir.join("real"), Some(AGENT_UID), Some(AGENT_GID)).unwrap();
        symlink("real", t.dir.join("alias")).unwrap();
        write(ws, "alias/new/x", "via").unwrap();
        assert_eq!(std::fs::read(t.dir.join("real/new/x")).unwrap(), b"via");
        assert_eq!(read_text(ws, "alias/new/x"), "via");
        let long = "n".repeat(300);
        assert_eq!(err(write(ws, &long, "x")).code, Errno::EINVAL);
    }

    #[test]
    fn bad_arguments_are_einval_naming_the_field() {
        let t = setup(BIG);
        let ws = &*t.ws;
        let cases: Vec<(&str, Result<Value, SysError>, &str)> = vec![
            (
                "FS_WRITE",
                fs_write(ws, &json!({ "content": "x" })),
                "missing field `path`",
            ),
            (
                "FS_WRITE",
                fs_write(ws, &json!({ "path": "a" })),
                "missing field `content`",
            ),
            ("FS_READ", fs_read(ws, &json!({})), "missing field `path`"),
            (
                "FS_DELETE",
                fs_delete(ws, &Value::Null),
                "missing field `path`",
            ),
            (
                "FS_READ",
                fs_read(ws, &json!({ "path": 5 })),
                "field `path`",
            ),
            (
                "FS_READ",
                fs_read(ws, &json!({ "path": "a", "offset": "x" })),
                "field `offset`",
            ),
            (
                "FS_READ",
                fs_read(ws, &json!({ "path": "a", "offset": -1 })),
                "field `offset`",
            ),
            (
                "FS_READ",
                fs_read(ws, &json!({ "path": "a", "max_bytes": 1.5 })),
                "field `max_bytes`",
            ),
            (
                "FS_READ",
                fs_read(ws, &json!({ "path": "a", "encoding": "latin1" })),
                "field `encoding`",
            ),
            (
                "FS_WRITE",
                fs_write(ws, &json!({ "path": "a", "content": 1 })),
                "field `content`",
            ),
            (
                "FS_WRITE",
                fs_write(ws, &json!({ "path": "a", "content": "x", "append": "yes" })),
                "field `append`",
            ),
            (
                "FS_DELETE",
                fs_delete(ws, &json!({ "path": "a", "recursive": 1 })),
                "field `recursive`",
            ),
            (
                "FS_LIST",
                fs_list(ws, &json!({ "path": ["a"] })),
                "field `path`",
            ),
            (
                "FS_WRITE",
                fs_write(ws, &json!({ "path": "a", "content": "x", "mode": 777 })),
                "unknown field `mode`",
            ),
            (
                "FS_LIST",
                fs_list(ws, &json!({ "recursive": true })),
                "unknown field `recursive`",
            ),
            (
                "FS_READ",
                fs_read(ws, &json!(["a"])),
                "expected a JSON object",
            ),
            (
                "FS_READ",
                fs_read(ws, &json!("a")),
                "expected a JSON object",
            ),
            ("FS_READ", read(ws, "a\0b"), "NUL"),
            ("FS_WRITE", write(ws, "a\0b", "x"), "NUL"),
            ("FS_READ", read(ws, ""), "empty"),
            ("FS_LIST", fs_list(ws, &json!({ "path": "" })), "empty"),
            ("FS_READ", read(ws, &"a/".repeat(2049)), "longer than 4096"),
            (
                "FS_WRITE",
                fs_write(
                    ws,
                    &json!({ "path": "a", "content": "!!", "encoding": "base64" }),
                ),
                "field `content`",
            ),
        ];
        for (op, r, needle) in cases {
            let e = err(r);
            assert_eq!(e.code, Errno::EINVAL, "{e}");
            assert!(
                e.message.starts_with(&format!("bad arguments for {op}: ")),
                "{e}"
            );
            assert!(e.message.contains(needle), "{e} should mention {needle}");
        }
        assert!(names_in(&t.dir).is_empty());
        // A 4096-byte path is still accepted.
        let p = format!("{}/{}", "d".repeat(200), "f".repeat(200)).repeat(1);
        assert!(p.len() <= 4096);
        write(ws, &p, "ok").unwrap();
        // Huge junk is not echoed back whole.
        let junk = "j".repeat(100_000);
        let e = err(fs_read(ws, &json!({ "path": "a", "offset": junk })));
        assert!(
            e.message.len() < 1000,
            "message of {} bytes",
            e.message.len()
        );
    }

    #[test]
    fn a_replaced_workspace_directory_is_refused() {
        let t = setup(BIG);
        write(&t.ws, "/a.txt", "mine").unwrap();
        // The directory is swapped for another of the same name (the agent
        // cannot do this; the check makes sure nobody's swap is followed).
        let moved = t.base.join("moved");
        std::fs::rename(&t.dir, &moved).unwrap();
        std::fs::create_dir(&t.dir).unwrap();
        chown(&t.dir, Some(AGENT_UID), Some(AGENT_GID)).unwrap();
        for r in [read(&t.ws, "/a.txt"), write(&t.ws, "/b.txt", "x")] {
            let e = err(r);
            assert_eq!(e.code, Errno::EIO, "{e}");
            assert!(e.message.contains("no longer the directory"), "{e}");
        }
        assert!(names_in(&t.dir).is_empty());
        // Back in place, it works again.
        std::fs::remove_dir(&t.dir).unwrap();
        std::fs::rename(&moved, &t.dir).unwrap();
        assert_eq!(read_text(&t.ws, "/a.txt"), "mine");
    }
}
