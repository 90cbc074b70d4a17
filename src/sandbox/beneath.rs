//! Mount points beneath the new root: every path the launcher creates or
//! mounts on while it builds an agent's root filesystem is resolved
//! relative to a descriptor of that root, never as a host path.
//!
//! Before `pivot_root` the launcher runs as root in a copy of the host's
//! mount table, so a plain `mkdir -p $root/etc/x` that met an absolute
//! symlink recreated under the new root (`/etc/localtime ->
//! /usr/share/...`, say) would create directories on the host. Here each
//! lookup is an `openat2` with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`: a
//! symlink met on the way means what it will mean inside the sandbox, with
//! the new root as `/`, and `..` cannot climb out. Missing components are
//! made with `mkdirat`/`openat(O_CREAT | O_EXCL | O_NOFOLLOW)` in the
//! directory just opened, so the component created is never a symlink. What
//! is mounted is then attached to that exact object through its descriptor
//! (`move_mount` with `MOVE_MOUNT_T_EMPTY_PATH`, or the descriptor's
//! `/proc/self/fd` link for `mount(2)`), with its attributes set on the
//! detached tree before it is attached (`mount_setattr`), so no path is
//! looked up twice.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// What a mount point is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
pub const MOUNT_ATTR_RDONLY: u64 = 0x01;
pub const MOUNT_ATTR_NOSUID: u64 = 0x02;
pub const MOUNT_ATTR_NODEV: u64 = 0x04;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x08;

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Takes ownership of a descriptor a system call just returned.
fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: `fd` was just returned by the kernel as a new descriptor that
    // nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// An `O_PATH` descriptor of a host directory (the new root itself).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    check(fd as libc::c_long).map(owned)
}

/// `at` (an absolute path as the sandbox will see it) as a path relative
/// to the root; `.` and a leading `/` are dropped.
fn relative(at: &Path) -> PathBuf {
    at.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect()
}

/// Opens `rel` beneath `root` as the sandbox will see it.
fn resolve(root: &OwnedFd, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let c = cstr(rel)?;
    let how = OpenHow {
        flags: (flags | libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `c` and `how` are valid for the duration of the call; the
    // kernel only reads them.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    check(fd).map(owned)
}

/// Makes `name` in the directory `dir` (never following a symlink there);
/// an existing entry is left as it is.
fn make(dir: &OwnedFd, name: &Path, kind: Kind) -> io::Result<()> {
    let c = cstr(name)?;
    let rc = match kind {
        // SAFETY: `c` is a valid NUL-terminated name; mkdirat does not
        // follow a final symlink.
        Kind::Dir => unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755) },
        Kind::File => {
            // SAFETY: as above; O_EXCL | O_NOFOLLOW refuse any existing
            // entry, a symlink included.
            let fd = unsafe {
                libc::openat(
                    dir.as_raw_fd(),
                    c.as_ptr(),
                    libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_NOFOLLOW
                        | libc::O_WRONLY
                        | libc::O_CLOEXEC,
                    0o644 as libc::c_uint,
                )
            };
            if fd >= 0 {
                drop(owned(fd as libc::c_long));
                0
            } else {
                -1
            }
        }
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    Ok(())
}

/// Ensures `at` exists beneath `root` (creating directories on the way and
/// the last component as `kind`) and returns an `O_PATH` descriptor of it.
pub fn mount_point(root: &OwnedFd, at: &Path, kind: Kind) -> io::Result<OwnedFd> {
    let rel = relative(at);
    let mut parent = PathBuf::new();
    let mut comps = rel.components().peekable();
    while let Some(c) = comps.next() {
        let last = comps.peek().is_none();
        let here = parent.join(c);
        let dir_flags = if last && kind == Kind::File {
            0
        } else {
            libc::O_DIRECTORY
        };
        match resolve(root, &here, dir_flags) {
            Ok(fd) if last => return Ok(fd),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let dir = resolve(root, &parent, libc::O_DIRECTORY)?;
                let k = if last { kind } else { Kind::Dir };
                make(&dir, Path::new(c.as_os_str()), k)?;
                if last {
                    return resolve(root, &here, dir_flags);
                }
            }
            Err(e) => return Err(e),
        }
        parent = here;
    }
    resolve(root, &parent, libc::O_DIRECTORY)
}

/// Makes a symlink `at` -> `to` beneath `root` (its parent directories as
/// by [`mount_point`]); an existing entry is left as it is.
pub fn symlink_beneath(root: &OwnedFd, at: &Path, to: &Path) -> io::Result<()> {
    let rel = relative(at);
    let (Some(name), Some(parent)) = (rel.file_name(), rel.parent()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a symlink needs a name",
        ));
    };
    let dir = mount_point(root, parent, Kind::Dir)?;
    let (to_c, name_c) = (cstr(to)?, cstr(Path::new(name))?);
    // SAFETY: both strings are valid NUL-terminated paths for the call.
    let rc = unsafe { libc::symlinkat(to_c.as_ptr(), dir.as_raw_fd(), name_c.as_ptr()) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    Ok(())
}

/// Writes a new file `name` in the directory `dir` (an `O_PATH` descriptor
/// from [`mount_point`]), refusing to follow a symlink there.
pub fn write_file(dir: &OwnedFd, name: &str, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let c = cstr(Path::new(name))?;
    let real = reopen_dir(dir)?;
    // SAFETY: `c` is a valid name; O_NOFOLLOW refuses a symlink.
    let fd = unsafe {
        libc::openat(
            real.as_raw_fd(),
            c.as_ptr(),
            libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW | libc::O_WRONLY | libc::O_CLOEXEC,
            0o644 as libc::c_uint,
        )
    };
    let fd = check(fd as libc::c_long).map(owned)?;
    std::fs::File::from(fd).write_all(contents)
}

/// A real (not `O_PATH`) descriptor of the directory `dir` refers to.
fn reopen_dir(dir: &OwnedFd) -> io::Result<OwnedFd> {
    let dot = c".";
    // SAFETY: "." is a valid path; openat on a directory descriptor.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            dot.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    check(fd as libc::c_long).map(owned)
}

/// The `/proc/self/fd` name of `fd`, for `mount(2)` targets: the kernel
/// follows that link to the exact object, whatever its path.
pub fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// A detached clone of the mount at `source` (a host path, or an empty path
/// with `source_fd` for a descriptor).
pub fn clone_tree(source_fd: RawFd, source: &Path) -> io::Result<OwnedFd> {
    let c = cstr(source)?;
    let empty = if source.as_os_str().is_empty() {
        libc::AT_EMPTY_PATH as libc::c_uint
    } else {
        0
    };
    // SAFETY: `c` is a valid NUL-terminated path for the call; open_tree
    // returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            source_fd,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | empty,
        )
    };
    check(fd).map(owned)
}

/// Sets `attrs` (`MOUNT_ATTR_*`) on the mount `tree` refers to.
pub fn set_attrs(tree: BorrowedFd<'_>, attrs: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let empty = c"";
    // SAFETY: `attr` and the empty path are valid for the call; the kernel
    // only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(rc).map(|_| ())
}

/// Attaches the detached mount `tree` on the object `target` refers to.
pub fn attach(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()> {
    let empty = c"";
    // SAFETY: both paths are the empty string, valid for the call; the
    // descriptors are ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    check(rc).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("agentos-beneath-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch dir");
        d
    }

    #[test]
    fn an_absolute_symlink_under_the_root_means_a_path_inside_it() {
        let base = scratch("abs");
        let root = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir_all(root.join("usr/real")).expect("root");
        std::fs::create_dir_all(&outside).expect("outside");
        // As recreated host symlinks look: absolute, naming host paths.
        symlink(&outside, root.join("etc")).expect("symlink");
        symlink("/usr/real", root.join("bin")).expect("symlink");
        let fd = open_dir(&root).expect("open root");
        // Dangling inside the root: refused, and nothing made on the host.
        let r = mount_point(&fd, Path::new("/etc/deep/point"), Kind::Dir);
        assert!(r.is_err(), "{r:?}");
        assert!(
            std::fs::read_dir(&outside)
                .expect("outside")
                .next()
                .is_none(),
            "a directory was created outside the new root"
        );
        // Pointing inside the root: followed there, as the sandbox sees it.
        mount_point(&fd, Path::new("/bin/tool"), Kind::File).expect("mount point");
        assert!(root.join("usr/real/tool").is_file());
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn dot_dot_cannot_climb_out_and_files_are_never_symlinks() {
        let base = scratch("dotdot");
        let root = base.join("root");
        std::fs::create_dir_all(&root).expect("root");
        let fd = open_dir(&root).expect("open root");
        mount_point(&fd, Path::new("/../../escaped/x"), Kind::File).expect("mount point");
        assert!(
            !base.join("escaped").exists(),
            "`..` climbed out of the root"
        );
        assert!(root.join("escaped/x").is_file());
        // A file mount point over a dangling symlink to a host path is not
        // created there.
        let target = base.join("victim");
        symlink(&target, root.join("link")).expect("symlink");
        let r = mount_point(&fd, Path::new("/link"), Kind::File);
        assert!(r.is_err(), "{r:?}");
        assert!(!target.exists(), "the file was created through the symlink");
        let dir = mount_point(&fd, Path::new("/etc"), Kind::Dir).expect("etc");
        symlink(&target, root.join("etc/passwd")).expect("symlink");
        assert!(write_file(&dir, "passwd", b"x").is_err());
        assert!(!target.exists(), "write_file followed a symlink");
        let _ = std::fs::remove_dir_all(&base);
    }
}
