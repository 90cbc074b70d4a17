//! The host side of `agentos spawn --copy` and `agentos cp`, run by the CLI
//! as the calling user: host files are read, and copies out of a workspace
//! written, with that user's permissions, never the daemon's.
//!
//! Symlinks are not followed on either side: a symlink named on the command
//! line is refused, one inside a copied tree is left out and reported, and
//! files are opened with `O_NOFOLLOW`. What comes out of a workspace was
//! named by the agent: every entry's path is checked to stay below the
//! destination before anything is written.

use crate::drivers::fs::{CopiedOut, CopyEntry};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Most bytes of file data one `cp` request into a workspace carries
/// (base64 makes it 4/3 of this on the wire, well below the daemon's
/// default `[admin] max_request_bytes` of 512 KiB); bigger files go in
/// appended pieces.
pub const PIECE_BYTES: usize = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum HostCopyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: is a symlink; symlinks are not followed (name its target)")]
    Symlink(String),
    #[error("{0}: is neither a regular file nor a directory")]
    Special(String),
    #[error("the agent's workspace sent an entry named {0:?}, which would leave the destination")]
    BadName(String),
    #[error("{0}: exists and is not a directory")]
    NotADirectory(String),
    #[error("{0}")]
    Usage(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> HostCopyError + '_ {
    move |source| HostCopyError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// `--copy SRC[:DEST]`: the host path and where it goes in the workspace
/// (default: `/` and the source's name).
pub fn parse_copy_spec(spec: &str) -> Result<(PathBuf, String), HostCopyError> {
    let (src, dest) = match spec.rsplit_once(':') {
        Some((src, dest)) if !src.is_empty() && !dest.is_empty() => (src, dest.to_string()),
        Some(_) => {
            return Err(HostCopyError::Usage(format!(
                "--copy {spec:?}: expected SRC or SRC:DEST"
            )));
        }
        None => {
            let name = Path::new(spec)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| {
                    HostCopyError::Usage(format!(
                        "--copy {spec:?}: the source has no name; say where it goes (SRC:DEST)"
                    ))
                })?;
            (spec, format!("/{name}"))
        }
    };
    Ok((PathBuf::from(src), dest))
}

/// `PID:PATH` of `agentos cp`: a path in an agent's workspace. None for a
/// host path.
pub fn agent_path(arg: &str) -> Option<(u64, &str)> {
    let (pid, path) = arg.split_once(':')?;
    let pid = pid.parse().ok()?;
    Some((pid, if path.is_empty() { "/" } else { path }))
}

/// A host tree read for copying into a workspace.
#[derive(Debug, Default)]
pub struct HostTree {
    /// In order: every directory before what it holds.
    pub entries: Vec<CopyEntry>,
    /// Host paths left out: symlinks and special files inside the tree.
    pub skipped: Vec<String>,
}

/// Reads the host file or directory `src` (as the calling user) into
/// entries that put it at `dest` in a workspace. Large files become
/// several entries: the first writes, the rest append, each at most
/// [`PIECE_BYTES`].
pub fn read_host(src: &Path, dest: &str) -> Result<HostTree, HostCopyError> {
    let mut tree = HostTree::default();
    let meta = std::fs::symlink_metadata(src).map_err(io_err(src))?;
    if meta.file_type().is_symlink() {
        return Err(HostCopyError::Symlink(src.display().to_string()));
    }
    if meta.is_file() {
        read_file(src, dest, &mut tree)?;
        return Ok(tree);
    }
    if !meta.is_dir() {
        return Err(HostCopyError::Special(src.display().to_string()));
    }
    let mut pending = vec![(src.to_path_buf(), dest.trim_end_matches('/').to_string())];
    while let Some((dir, at)) = pending.pop() {
        tree.entries.push(CopyEntry::Dir {
            path: if at.is_empty() {
                "/".into()
            } else {
                at.clone()
            },
        });
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(io_err(&dir))?;
        names.sort_by_key(|e| e.file_name());
        // Subdirectories after this directory's files, in name order.
        let mut subdirs = Vec::new();
        for entry in names {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let to = format!("{at}/{name}");
            let kind = entry.file_type().map_err(io_err(&path))?;
            if kind.is_dir() {
                subdirs.push((path, to));
            } else if kind.is_file() {
                read_file(&path, &to, &mut tree)?;
            } else {
                tree.skipped.push(path.display().to_string());
            }
        }
        pending.extend(subdirs.into_iter().rev());
    }
    Ok(tree)
}

/// One regular file, opened without following a symlink, as entries.
fn read_file(src: &Path, dest: &str, tree: &mut HostTree) -> Result<(), HostCopyError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(src)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => HostCopyError::Symlink(src.display().to_string()),
            _ => io_err(src)(e),
        })?;
    let meta = file.metadata().map_err(io_err(src))?;
    if !meta.is_file() {
        return Err(HostCopyError::Special(src.display().to_string()));
    }
    let executable = meta.permissions().mode() & 0o100 != 0;
    let mut data = Vec::new();
    (&file).read_to_end(&mut data).map_err(io_err(src))?;
    let mut pieces = data.chunks(PIECE_BYTES);
    let first = pieces.next().unwrap_or(&[]);
    tree.entries.push(CopyEntry::File {
        path: dest.to_string(),
        data: STANDARD.encode(first),
        executable,
        append: false,
    });
    for piece in pieces {
        tree.entries.push(CopyEntry::File {
            path: dest.to_string(),
            data: STANDARD.encode(piece),
            executable: false,
            append: true,
        });
    }
    Ok(())
}

/// Splits entries into requests of at most about [`PIECE_BYTES`] of data
/// each, in order.
pub fn batches(entries: Vec<CopyEntry>) -> Vec<Vec<CopyEntry>> {
    let mut out: Vec<Vec<CopyEntry>> = Vec::new();
    let mut size = 0;
    for e in entries {
        let len = match &e {
            CopyEntry::File { data, path, .. } => data.len() * 3 / 4 + path.len(),
            CopyEntry::Dir { path } => path.len(),
        };
        match out.last_mut() {
            Some(batch) if size + len <= PIECE_BYTES => batch.push(e),
            _ => {
                size = 0;
                out.push(vec![e]);
            }
        }
        size += len;
    }
    out
}

/// What writing a copy out of a workspace did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    /// Where the copied file or directory itself went.
    pub target: PathBuf,
}

/// Writes what was copied out of a workspace (from `src`, a workspace
/// path) to the host path `dest`, as the calling user. Like `cp -r`: into
/// `dest` (under the source's name) when `dest` is an existing directory,
/// else as `dest`. Existing files are overwritten, never through a symlink.
pub fn write_host(out: &CopiedOut, src: &str, dest: &Path) -> Result<Written, HostCopyError> {
    let base = src.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let target = match std::fs::metadata(dest) {
        Ok(m) if m.is_dir() && !base.is_empty() && base != "workspace" => dest.join(base),
        _ => dest.to_path_buf(),
    };
    let mut done = Written {
        target: target.clone(),
        ..Written::default()
    };
    for entry in &out.entries {
        let (rel, file) = match entry {
            CopyEntry::Dir { path } => (path, None),
            CopyEntry::File {
                path,
                data,
                executable,
                ..
            } => (path, Some((data, *executable))),
        };
        let to = below(&target, rel)?;
        match file {
            None => match std::fs::symlink_metadata(&to) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(HostCopyError::NotADirectory(to.display().to_string())),
                Err(_) => {
                    std::fs::create_dir(&to).map_err(io_err(&to))?;
                    done.dirs += 1;
                }
            },
            Some((data, executable)) => {
                let bytes = STANDARD.decode(data).map_err(|e| HostCopyError::Io {
                    path: to.display().to_string(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                })?;
                let mut f: File = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(if executable { 0o755 } else { 0o644 })
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&to)
                    .map_err(io_err(&to))?;
                f.write_all(&bytes).map_err(io_err(&to))?;
                done.files += 1;
                done.bytes += bytes.len() as u64;
            }
        }
    }
    Ok(done)
}

/// `target/rel`, refusing a `rel` that is absolute or climbs out.
fn below(target: &Path, rel: &str) -> Result<PathBuf, HostCopyError> {
    let mut path = target.to_path_buf();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            _ => return Err(HostCopyError::BadName(rel.to_string())),
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn copy_specs_and_agent_paths_parse() {
        let (src, dest) = parse_copy_spec("./calc.py").unwrap();
        assert_eq!(
            (src, dest.as_str()),
            (PathBuf::from("./calc.py"), "/calc.py")
        );
        let (src, dest) = parse_copy_spec("data/in:/docs").unwrap();
        assert_eq!((src, dest.as_str()), (PathBuf::from("data/in"), "/docs"));
        assert!(matches!(
            parse_copy_spec("x:"),
            Err(HostCopyError::Usage(_))
        ));
        assert!(matches!(parse_copy_spec("/"), Err(HostCopyError::Usage(_))));
        assert_eq!(agent_path("12:/out.txt"), Some((12, "/out.txt")));
        assert_eq!(agent_path("12:"), Some((12, "/")));
        assert_eq!(agent_path("./12:/x"), None);
        assert_eq!(agent_path("notes.txt"), None);
    }

    #[test]
    fn names_that_leave_the_destination_are_refused() {
        let t = Path::new("/tmp/dest");
        assert_eq!(below(t, "").unwrap(), PathBuf::from("/tmp/dest"));
        assert_eq!(
            below(t, "a/b.txt").unwrap(),
            PathBuf::from("/tmp/dest/a/b.txt")
        );
        for bad in ["../x", "a/../../x", "/etc/passwd"] {
            assert!(
                matches!(below(t, bad), Err(HostCopyError::BadName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn large_files_go_in_appended_pieces_and_batches_stay_small() {
        let dir = std::env::temp_dir().join(format!("agentos-hostcopy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let big: Vec<u8> = (0..PIECE_BYTES * 2 + 10).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.join("big.bin"), &big).unwrap();
        std::fs::write(dir.join("sub/small.txt"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).unwrap();
        let tree = read_host(&dir, "/in").unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let pieces: Vec<&CopyEntry> = tree
            .entries
            .iter()
            .filter(|e| matches!(e, CopyEntry::File { path, .. } if path == "/in/big.bin"))
            .collect();
        assert_eq!(pieces.len(), 3, "{pieces:?}");
        let appends: Vec<bool> = pieces
            .iter()
            .map(|e| matches!(e, CopyEntry::File { append: true, .. }))
            .collect();
        assert_eq!(appends, [false, true, true]);
        let mut joined = Vec::new();
        for p in &pieces {
            if let CopyEntry::File { data, .. } = p {
                joined.extend(STANDARD.decode(data).unwrap());
            }
        }
        assert_eq!(joined, big);
        assert!(
            tree.skipped.iter().any(|s| s.ends_with("/link")),
            "{:?}",
            tree.skipped
        );
        assert!(tree.entries.contains(&CopyEntry::Dir {
            path: "/in/sub".into()
        }));
        let batches = batches(tree.entries);
        assert!(batches.len() >= 3, "{}", batches.len());
        for b in &batches {
            let data: usize = b
                .iter()
                .map(|e| match e {
                    CopyEntry::File { data, .. } => data.len() * 3 / 4,
                    CopyEntry::Dir { .. } => 0,
                })
                .sum();
            assert!(data <= PIECE_BYTES + 4, "{data}");
        }
    }
}
