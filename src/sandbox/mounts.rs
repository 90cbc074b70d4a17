//! Launcher step "mounts": builds the agent's root filesystem inside its new
//! mount namespace and pivots into it.
//!
//! The new root is an empty tmpfs holding only: read-only binds of the
//! profile's system directories and of the program, a minimal read-only /etc
//! (with a generated passwd/group), a fresh /proc of the agent's own pid
//! namespace, a minimal /dev, a private /tmp and the workspace at
//! /workspace. The old root is detached, so host paths (and host Unix
//! sockets) are not reachable by any name. Mount points are made and
//! mounted on through descriptors beneath the new root ([`beneath`]), never
//! along host paths.

use super::beneath::{
    self, Kind, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY,
};
use super::handoff::FIRST_BIND_FD;
use super::plan::LaunchPlan;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
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

/// Builds the root filesystem and pivots into it. Must run in a fresh mount
/// namespace, as a process of the agent's pid namespace (for /proc). Every
/// mount point is made and mounted on beneath the new root ([`beneath`]).
pub fn build_root(plan: &LaunchPlan) -> Result<(), MountError> {
    let root = plan.new_root.as_path();
    let none: Option<&str> = None;

    // Nothing mounted from here on propagates back to the host.
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(nix_err("make private", Path::new("/")))?;

    // An empty tmpfs becomes the new root; every later path is resolved
    // beneath this descriptor of it.
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755,size=4m"),
    )
    .map_err(nix_err("mount root tmpfs on", root))?;
    let rootfd = beneath::open_dir(root).map_err(err("open new root", root))?;

    // System directories, the program and extra binds, read-only. Shorter
    // paths first so that a parent exists before anything beneath it.
    let mut binds = plan.ro_binds.clone();
    binds.sort_by_key(|p| p.components().count());
    for host in &binds {
        bind_read_only(&rootfd, host)?;
    }

    // A minimal /etc with an identity for the agent's uid.
    let etc = Path::new("/etc");
    let etc_fd = beneath::mount_point(&rootfd, etc, Kind::Dir).map_err(err("mkdir", etc))?;
    write_identity(&etc_fd, plan.uid, plan.gid)?;
    for host in &plan.etc {
        if host == Path::new("/etc/passwd") || host == Path::new("/etc/group") {
            continue;
        }
        if host.symlink_metadata().is_ok() {
            bind_read_only(&rootfd, host)?;
        }
    }

    // Minimal /dev.
    let dev = Path::new("/dev");
    let dev_fd = mount_fs(
        &rootfd,
        dev,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        "mode=0755,size=64k",
    )?;
    for node in &plan.dev {
        let target = beneath::mount_point(&rootfd, node, Kind::File)
            .map_err(err("create device mount point", node))?;
        let tree = beneath::clone_tree(libc::AT_FDCWD, node).map_err(err("bind device", node))?;
        beneath::attach(tree.as_fd(), target.as_fd()).map_err(err("bind device", node))?;
    }
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let link = dev.join(name);
        beneath::symlink_beneath(&rootfd, &link, Path::new(to)).map_err(err("symlink", &link))?;
    }
    beneath::set_attrs(
        dev_fd.as_fd(),
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
    )
    .map_err(err("remount read-only", dev))?;

    // A fresh /proc showing only the agent's pid namespace.
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs(&rootfd, Path::new("/proc"), "proc", flags, "")?;

    // A private, size-limited /tmp.
    let tmp_opts = format!("mode=1777,size={}", plan.tmp_bytes);
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount_fs(&rootfd, Path::new("/tmp"), "tmpfs", flags, &tmp_opts)?;

    // The workspace, read-write.
    let ws = Path::new("/workspace");
    let target = beneath::mount_point(&rootfd, ws, Kind::Dir).map_err(err("mkdir", ws))?;
    let tree = beneath::clone_tree(libc::AT_FDCWD, &plan.workspace)
        .map_err(err("bind workspace", &plan.workspace))?;
    beneath::set_attrs(tree.as_fd(), MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
        .map_err(err("bind workspace", &plan.workspace))?;
    beneath::attach(tree.as_fd(), target.as_fd())
        .map_err(err("bind workspace", &plan.workspace))?;

    // The program and extra binds, last, so nothing above hides them. Their
    // sources are not paths but the descriptors the daemon opened, from
    // FIRST_BIND_FD on in plan order (see the handoff table).
    let mut extra: Vec<(usize, &PathBuf)> = plan.extra_ro.iter().enumerate().collect();
    extra.sort_by_key(|(_, p)| p.components().count());
    for (i, at) in extra {
        bind_descriptor(&rootfd, at, FIRST_BIND_FD + i as i32)?;
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

/// Mounts a new `fstype` on `at` beneath the root; returns a descriptor of
/// the new mount's root.
fn mount_fs(
    rootfd: &OwnedFd,
    at: &Path,
    fstype: &str,
    flags: MsFlags,
    data: &str,
) -> Result<OwnedFd, MountError> {
    let target = beneath::mount_point(rootfd, at, Kind::Dir).map_err(err("mkdir", at))?;
    let data = (!data.is_empty()).then_some(data);
    mount(
        Some(fstype),
        &beneath::fd_path(&target),
        Some(fstype),
        flags,
        data,
    )
    .map_err(nix_err("mount", at))?;
    // The descriptor above names the directory beneath the new mount.
    beneath::mount_point(rootfd, at, Kind::Dir).map_err(err("open", at))
}

/// Binds `host` read-only at the same path under the root; symlinks are
/// recreated as symlinks. Missing host paths are skipped (a profile may name
/// /lib32 on hosts that lack it); the daemon checks the program exists.
fn bind_read_only(rootfd: &OwnedFd, host: &Path) -> Result<(), MountError> {
    let Ok(meta) = host.symlink_metadata() else {
        return Ok(());
    };
    if meta.file_type().is_symlink() {
        // Recreated (or already visible through a parent bind, when the
        // entry exists: symlink_beneath leaves it).
        let to = fs::read_link(host).map_err(err("readlink", host))?;
        return beneath::symlink_beneath(rootfd, host, &to).map_err(err("symlink", host));
    }
    let kind = if meta.is_dir() { Kind::Dir } else { Kind::File };
    let target =
        beneath::mount_point(rootfd, host, kind).map_err(err("create mount point", host))?;
    let tree = beneath::clone_tree(libc::AT_FDCWD, host).map_err(err("bind", host))?;
    beneath::set_attrs(
        tree.as_fd(),
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
    )
    .map_err(err("bind", host))?;
    beneath::attach(tree.as_fd(), target.as_fd()).map_err(err("bind", host))
}

/// Launcher step "bind sources": replaces each of the `count` bind source
/// descriptors (from [`FIRST_BIND_FD`] on) by a detached clone of its
/// mount. Must run before the mount namespace is unshared: the kernel
/// refuses to bind from a descriptor whose mount belongs to another
/// namespace, but a detached tree can be attached anywhere.
pub fn detach_bind_sources(count: usize) -> io::Result<()> {
    for fd in FIRST_BIND_FD..FIRST_BIND_FD + count as i32 {
        let tree = beneath::clone_tree(fd, Path::new(""))?;
        // SAFETY: dup3 replaces `fd` (ours, not wrapped by a Rust object)
        // with the new tree; `tree` is closed when dropped.
        let rc = unsafe { libc::dup3(tree.as_raw_fd(), fd, libc::O_CLOEXEC) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Attaches the detached mount on `fd` read-only at `at` under the root.
fn bind_descriptor(rootfd: &OwnedFd, at: &Path, fd: i32) -> Result<(), MountError> {
    let source = PathBuf::from(format!("/proc/self/fd/{fd}"));
    let meta = fs::metadata(&source).map_err(err("stat bind source for", at))?;
    let kind = if meta.is_dir() { Kind::Dir } else { Kind::File };
    let target = beneath::mount_point(rootfd, at, kind).map_err(err("create mount point", at))?;
    // SAFETY: the launcher holds the bind descriptors from FIRST_BIND_FD on
    // open until exec (the handoff table); this borrow ends with the call.
    let tree = unsafe { BorrowedFd::borrow_raw(fd) };
    beneath::set_attrs(
        tree.as_fd(),
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
    )
    .map_err(err("attach bind", at))?;
    beneath::attach(tree.as_fd(), target.as_fd()).map_err(err("attach bind", at))
}

fn remount(path: &Path, flags: MsFlags, bind: bool) -> Result<(), MountError> {
    let none: Option<&str> = None;
    let mut all = MsFlags::MS_REMOUNT | flags;
    if bind {
        all |= MsFlags::MS_BIND;
    }
    mount(none, path, none, all, none).map_err(nix_err("remount", path))
}

fn write_identity(etc: &OwnedFd, uid: u32, gid: u32) -> Result<(), MountError> {
    let passwd = format!(
        "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n\
         agent:x:{uid}:{gid}:agent:/workspace:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    );
    beneath::write_file(etc, "passwd", passwd.as_bytes())
        .map_err(err("write", Path::new("/etc/passwd")))?;
    let group = format!("root:x:0:\nagent:x:{gid}:\nnogroup:x:65534:\n");
    beneath::write_file(etc, "group", group.as_bytes())
        .map_err(err("write", Path::new("/etc/group")))
}
