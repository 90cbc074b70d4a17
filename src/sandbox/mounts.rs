//! Launcher step "mounts": builds the agent's root filesystem inside its new
//! mount namespace and pivots into it.
//!
//! The new root is an empty tmpfs holding only: read-only binds of the
//! profile's system directories and of the program, a minimal read-only /etc
//! (with a generated passwd/group), a fresh /proc of the agent's own pid
//! namespace, a minimal /dev, a private /tmp and the workspace at
//! /workspace. The old root is detached, so host paths (and host Unix
//! sockets) are not reachable by any name.

use super::handoff::FIRST_BIND_FD;
use super::plan::LaunchPlan;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {source}")]
pub struct MountError {
    what: &'static str,
    path: PathBuf,
    source: io::Error,
}

fn err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> MountError + 'a {
    move |source| MountError {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn nix_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(nix::Error) -> MountError + 'a {
    move |e| MountError {
        what,
        path: path.to_path_buf(),
        source: io::Error::from(e),
    }
}

/// Where `host` appears under the new root.
fn inside(root: &Path, host: &Path) -> PathBuf {
    root.join(host.strip_prefix("/").unwrap_or(host))
}

/// Builds the root filesystem and pivots into it. Must run in a fresh mount
/// namespace, as a process of the agent's pid namespace (for /proc).
pub fn build_root(plan: &LaunchPlan) -> Result<(), MountError> {
    let root = plan.new_root.as_path();
    let none: Option<&str> = None;

    // Nothing mounted from here on propagates back to the host.
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(nix_err("make private", Path::new("/")))?;

    // An empty tmpfs becomes the new root.
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755,size=4m"),
    )
    .map_err(nix_err("mount root tmpfs on", root))?;

    // System directories, the program and extra binds, read-only. Shorter
    // paths first so that a parent exists before anything beneath it.
    let mut binds = plan.ro_binds.clone();
    binds.sort_by_key(|p| p.components().count());
    for host in &binds {
        bind_read_only(root, host)?;
    }

    // A minimal /etc with an identity for the agent's uid.
    let etc = root.join("etc");
    fs::create_dir_all(&etc).map_err(err("mkdir", &etc))?;
    write_identity(&etc, plan.uid, plan.gid)?;
    for host in &plan.etc {
        if host == Path::new("/etc/passwd") || host == Path::new("/etc/group") {
            continue;
        }
        if host.symlink_metadata().is_ok() {
            bind_read_only(root, host)?;
        }
    }

    // Minimal /dev.
    let dev = root.join("dev");
    fs::create_dir_all(&dev).map_err(err("mkdir", &dev))?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=64k"),
    )
    .map_err(nix_err("mount /dev tmpfs on", &dev))?;
    for node in &plan.dev {
        let target = inside(root, node);
        fs::File::create(&target).map_err(err("create device mount point", &target))?;
        mount(Some(node.as_path()), &target, none, MsFlags::MS_BIND, none)
            .map_err(nix_err("bind device", node))?;
    }
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let link = dev.join(name);
        symlink(to, &link).map_err(err("symlink", &link))?;
    }
    remount(
        &dev,
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        false,
    )?;

    // A fresh /proc showing only the agent's pid namespace.
    let proc_dir = root.join("proc");
    fs::create_dir_all(&proc_dir).map_err(err("mkdir", &proc_dir))?;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        none,
    )
    .map_err(nix_err("mount proc on", &proc_dir))?;

    // A private, size-limited /tmp.
    let tmp = root.join("tmp");
    fs::create_dir_all(&tmp).map_err(err("mkdir", &tmp))?;
    let tmp_opts = format!("mode=1777,size={}", plan.tmp_bytes);
    mount(
        Some("tmpfs"),
        &tmp,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(tmp_opts.as_str()),
    )
    .map_err(nix_err("mount /tmp tmpfs on", &tmp))?;

    // The workspace, read-write.
    let ws = root.join("workspace");
    fs::create_dir_all(&ws).map_err(err("mkdir", &ws))?;
    mount(
        Some(plan.workspace.as_path()),
        &ws,
        none,
        MsFlags::MS_BIND,
        none,
    )
    .map_err(nix_err("bind workspace", &plan.workspace))?;
    remount(&ws, MsFlags::MS_NOSUID | MsFlags::MS_NODEV, true)?;

    // The program and extra binds, last, so nothing above hides them. Their
    // sources are not paths but the descriptors the daemon opened, from
    // FIRST_BIND_FD on in plan order (see the handoff table).
    let mut extra: Vec<(usize, &PathBuf)> = plan.extra_ro.iter().enumerate().collect();
    extra.sort_by_key(|(_, p)| p.components().count());
    for (i, at) in extra {
        bind_descriptor(root, at, FIRST_BIND_FD + i as i32)?;
    }

    // Freeze the root's own layout.
    remount(
        root,
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        false,
    )?;

    // Pivot: the new root becomes "/", the old one is stacked beneath it and
    // detached, so no host path remains reachable.
    std::env::set_current_dir(root).map_err(err("chdir", root))?;
    nix::unistd::pivot_root(".", ".").map_err(nix_err("pivot_root into", root))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(nix_err("detach old root", root))?;
    std::env::set_current_dir("/").map_err(err("chdir", Path::new("/")))?;
    Ok(())
}

/// Binds `host` read-only at the same path under `root`; symlinks are
/// recreated as symlinks. Missing host paths are skipped (a profile may name
/// /lib32 on hosts that lack it); the daemon checks the program exists.
fn bind_read_only(root: &Path, host: &Path) -> Result<(), MountError> {
    let Ok(meta) = host.symlink_metadata() else {
        return Ok(());
    };
    let target = inside(root, host);
    if target.symlink_metadata().is_err() {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(err("mkdir", parent))?;
        }
        if meta.file_type().is_symlink() {
            let to = fs::read_link(host).map_err(err("readlink", host))?;
            return symlink(&to, &target).map_err(err("symlink", &target));
        } else if meta.is_dir() {
            fs::create_dir(&target).map_err(err("mkdir", &target))?;
        } else {
            fs::File::create(&target).map_err(err("create mount point", &target))?;
        }
    } else if meta.file_type().is_symlink() {
        // Already visible through a parent bind.
        return Ok(());
    }
    let none: Option<&str> = None;
    mount(Some(host), &target, none, MsFlags::MS_BIND, none).map_err(nix_err("bind", host))?;
    remount(
        &target,
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        true,
    )
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

/// Launcher step "bind sources": replaces each of the `count` bind source
/// descriptors (from [`FIRST_BIND_FD`] on) by a detached clone of its
/// mount. Must run before the mount namespace is unshared: the kernel
/// refuses to bind from a descriptor whose mount belongs to another
/// namespace, but a detached tree can be attached anywhere.
pub fn detach_bind_sources(count: usize) -> io::Result<()> {
    for fd in FIRST_BIND_FD..FIRST_BIND_FD + count as i32 {
        let empty = c"";
        // SAFETY: open_tree reads the NUL-terminated empty path and returns a
        // new descriptor (or -1); no memory of ours is written.
        let tree = unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                fd,
                empty.as_ptr(),
                OPEN_TREE_CLONE
                    | libc::O_CLOEXEC as libc::c_uint
                    | libc::AT_EMPTY_PATH as libc::c_uint,
            )
        };
        if tree < 0 {
            return Err(io::Error::last_os_error());
        }
        let tree = tree as i32;
        // SAFETY: dup3 replaces `fd` (ours) with the new tree; then the
        // temporary number is closed. Neither is wrapped by a Rust object.
        let rc = unsafe { libc::dup3(tree, fd, libc::O_CLOEXEC) };
        // SAFETY: `tree` is a descriptor we just received and own.
        unsafe { libc::close(tree) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Attaches the detached mount on `fd` read-only at `at` under `root`.
fn bind_descriptor(root: &Path, at: &Path, fd: i32) -> Result<(), MountError> {
    let source = PathBuf::from(format!("/proc/self/fd/{fd}"));
    let meta = fs::metadata(&source).map_err(err("stat bind source for", at))?;
    let target = inside(root, at);
    if target.symlink_metadata().is_err() {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(err("mkdir", parent))?;
        }
        if meta.is_dir() {
            fs::create_dir(&target).map_err(err("mkdir", &target))?;
        } else {
            fs::File::create(&target).map_err(err("create mount point", &target))?;
        }
    }
    let target_c = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|e| err("mount point", at)(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    let empty = c"";
    // SAFETY: both paths are valid NUL-terminated strings for the duration
    // of the call; move_mount only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd,
            empty.as_ptr(),
            libc::AT_FDCWD,
            target_c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(err("attach bind", at)(io::Error::last_os_error()));
    }
    remount(
        &target,
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        true,
    )
}

fn remount(path: &Path, flags: MsFlags, bind: bool) -> Result<(), MountError> {
    let none: Option<&str> = None;
    let mut all = MsFlags::MS_REMOUNT | flags;
    if bind {
        all |= MsFlags::MS_BIND;
    }
    mount(none, path, none, all, none).map_err(nix_err("remount", path))
}

fn write_identity(etc: &Path, uid: u32, gid: u32) -> Result<(), MountError> {
    let passwd = etc.join("passwd");
    fs::write(
        &passwd,
        format!(
            "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n\
             agent:x:{uid}:{gid}:agent:/workspace:/bin/sh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ),
    )
    .map_err(err("write", &passwd))?;
    let group = etc.join("group");
    fs::write(
        &group,
        format!("root:x:0:\nagent:x:{gid}:\nnogroup:x:65534:\n"),
    )
    .map_err(err("write", &group))
}
