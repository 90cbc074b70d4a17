//! Workspace quotas enforced by the kernel, for every writer (the agent
//! itself, EXEC_CMD in the sandbox or in Docker, the daemon's FS_WRITE):
//! each workspace is a btrfs subvolume `<state_dir>/workspaces/<pid>` whose
//! writes stop with `EDQUOT` at its limit, for root too.
//!
//! The workspaces live either on the state directory's own filesystem when
//! it is btrfs ([`QuotaBackend::Native`]), or on a preallocated btrfs image
//! loop-mounted on `<state_dir>/workspaces` ([`QuotaBackend::Image`]), which
//! also keeps filling workspaces from taking the database's space. Quotas
//! are btrfs *simple* quotas (Linux 6.7+): each workspace's limit is set on
//! its subvolume's qgroup `0/<subvolume id>` and on a level-1 qgroup
//! `1/<pid>` that the subvolume is born in; a subvolume or snapshot an agent
//! creates inside its workspace (which needs no privilege) joins `1/<pid>`
//! automatically, so it cannot escape the limit. Full qgroup accounting has
//! no such inheritance and is refused. `quota = "off"` keeps plain
//! directories and says so loudly.
//!
//! Opened once at daemon start ([`WorkspaceQuotas::open`]); nothing here
//! ever falls back silently to no enforcement.

pub mod btrfs;
pub mod config;
pub mod image;
#[cfg(test)]
mod tests;

use crate::abi::errno::SysError;
use btrfs::{QgroupId, QuotaKind};
pub use config::{
    ByteSize, QuotaMode, SizeError, UnknownQuotaMode, WorkspacesConfig, WorkspacesConfigError,
};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// What to do about any start-up failure.
const FIX: &str = "install btrfs-progs (apt-get install btrfs-progs) and make sure the \
                   kernel has btrfs and loop devices, or set [workspaces] quota = \"off\" \
                   to run without kernel-enforced workspace quotas";

/// Level of the per-workspace quota group `1/<pid>`.
const WORKSPACE_GROUP_LEVEL: u16 = 1;
/// Largest pid that fits a qgroup id (48 bits).
const MAX_PID: u64 = (1 << 48) - 1;

#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error(transparent)]
    Config(#[from] WorkspacesConfigError),
    #[error("workspace quotas: mkfs.btrfs was not found in $PATH, /usr/sbin or /sbin: {FIX}")]
    MkfsMissing,
    #[error("workspace quotas: mkfs.btrfs {image} failed ({status}): {stderr}; {FIX}")]
    Mkfs {
        image: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("workspace quotas: image {image}: {what}; {FIX}")]
    Image {
        image: PathBuf,
        what: String,
        #[source]
        source: Option<io::Error>,
    },
    #[error(
        "workspace quotas: no loop device for the workspace image (/dev/loop-control, LOOP_CONFIGURE); {FIX}"
    )]
    NoLoopDevice(#[source] io::Error),
    #[error(
        "workspace quotas: the kernel has no btrfs (mounting {device} on {dir}); load it (modprobe btrfs) or set [workspaces] quota = \"off\""
    )]
    NoBtrfs {
        device: PathBuf,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("workspace quotas: mounting {device} on {dir}; {FIX}")]
    Mount {
        device: PathBuf,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "workspace quotas: {dir} is not on btrfs, which [workspaces] quota = \"native\" needs; use quota = \"auto\" or \"image\" (a loop-mounted btrfs image), or \"off\""
    )]
    NotBtrfs { dir: PathBuf },
    #[error(
        "workspace quotas: cannot enable btrfs simple quotas on {dir} (needs Linux 6.7 or later and CAP_SYS_ADMIN); {FIX}"
    )]
    QuotaUnavailable {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "workspace quotas: {dir} has full btrfs qgroup accounting enabled: an agent could escape its limit through a subvolume of its own (only simple quotas put nested subvolumes under the workspace's limit); disable quotas there (btrfs quota disable) or use [workspaces] quota = \"image\""
    )]
    FullQgroups { dir: PathBuf },
    #[error(
        "workspace quotas: {dir} already has {fs_type} {device} mounted on it, not the workspace image {image}; unmount it, or set [workspaces] image to that image"
    )]
    MountedElsewhere {
        dir: PathBuf,
        fs_type: String,
        device: String,
        image: PathBuf,
    },
    #[error(
        "workspace quotas: {dir} holds {entries} entries (workspaces of a run without kernel quotas?) that mounting the workspace image would hide; move them away (e.g. mv {dir} {dir}.old) or set [workspaces] quota = \"off\""
    )]
    NotEmpty { dir: PathBuf, entries: usize },
    #[error("workspace quotas: the image {image} cannot lie inside the workspaces directory {dir}")]
    ImageInsideWorkspaces { image: PathBuf, dir: PathBuf },
    #[error("workspace quotas: {what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "workspace {path} exists but is not a btrfs subvolume (made by a run without kernel quotas?): its limit cannot be enforced; move it away"
    )]
    NotASubvolume { path: PathBuf },
    #[error("workspace of agent {pid}: {what}")]
    Workspace {
        pid: u64,
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("workspace of agent {pid}: no such workspace")]
    NoWorkspace { pid: u64 },
}

impl QuotaError {
    fn io(what: impl Into<String>, source: io::Error) -> QuotaError {
        QuotaError::Io {
            what: what.into(),
            source,
        }
    }
}

/// For the spawn path: a full image or a refused ioctl answers the closest
/// code (`ENOSPC`/`EDQUOT` are `EQUOTA`), with the causes in the message.
impl From<QuotaError> for SysError {
    fn from(e: QuotaError) -> SysError {
        match &e {
            QuotaError::Workspace { source, .. } => SysError::from_io(source, &e.to_string()),
            QuotaError::NoWorkspace { .. } => SysError::noent(e.to_string()),
            _ => {
                let mut message = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    message.push_str(&format!(": {c}"));
                    cause = c.source();
                }
                SysError::io(message)
            }
        }
    }
}

/// Where workspaces live and how their limits are enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaBackend {
    /// Subvolumes on the state directory's own btrfs.
    Native,
    /// Subvolumes on the loop-mounted image.
    Image {
        image: PathBuf,
        /// The loop device it is attached to.
        device: PathBuf,
        size_bytes: u64,
        /// Made by this start (first use).
        created: bool,
        /// Already mounted when the daemon started (a restart).
        reused: bool,
    },
    /// Plain directories, no kernel enforcement.
    Off,
}

/// Bytes a workspace holds and may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkspaceUsage {
    /// Referenced bytes of the workspace's qgroup `1/<pid>` (data and the
    /// subvolumes' metadata, nested subvolumes included) as of btrfs's last
    /// transaction commit: at most the commit interval (30 s by default)
    /// behind the writes. One tree-search ioctl, no walk of the workspace.
    pub referenced_bytes: u64,
    pub limit_bytes: Option<u64>,
}

/// The workspaces of one daemon: opened once at start, then asked for a
/// workspace per spawn.
#[derive(Debug)]
pub struct WorkspaceQuotas {
    /// `<state_dir>/workspaces`.
    dir: PathBuf,
    backend: QuotaBackend,
    /// The workspaces directory (btrfs backends): every ioctl goes through it.
    root: Option<File>,
}

impl WorkspaceQuotas {
    /// Sets up `<state_dir>/workspaces` as `config` asks (see the module
    /// docs and [`QuotaMode`]). Fails, naming what failed and how to fix
    /// it, rather than run without the enforcement asked for.
    pub fn open(
        config: &WorkspacesConfig,
        state_dir: &Path,
    ) -> Result<WorkspaceQuotas, QuotaError> {
        config.validate()?;
        let dir = state_dir.join("workspaces");
        std::fs::create_dir_all(&dir)
            .map_err(|e| QuotaError::io(format!("creating {}", dir.display()), e))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| QuotaError::io(format!("resolving {}", dir.display()), e))?;
        if config.quota == QuotaMode::Off {
            let quotas = WorkspaceQuotas {
                dir,
                backend: QuotaBackend::Off,
                root: None,
            };
            tracing::warn!("{}", quotas.describe());
            return Ok(quotas);
        }
        let image = config
            .image
            .clone()
            .unwrap_or_else(|| state_dir.join(config::DEFAULT_IMAGE_NAME));
        let image = absolute(&image)?;
        if image.starts_with(&dir) {
            return Err(QuotaError::ImageInsideWorkspaces { image, dir });
        }
        let mounted = image::mounted_on(&dir)?;
        let quotas = match (&mounted, config.quota) {
            (Some(m), _) if is_our_image(m, &image) => {
                let device = PathBuf::from(&m.source);
                Self::on_image(dir, &image, device, false, true, config)?
            }
            // Something else is mounted there: natively usable if btrfs.
            (Some(m), QuotaMode::Auto | QuotaMode::Native)
                if m.fs_type == "btrfs" && !image.exists() =>
            {
                Self::native(dir)?
            }
            (Some(m), QuotaMode::Native) if m.fs_type != "btrfs" => {
                return Err(QuotaError::NotBtrfs { dir });
            }
            (Some(m), _) => {
                return Err(QuotaError::MountedElsewhere {
                    dir,
                    fs_type: m.fs_type.clone(),
                    device: m.source.clone(),
                    image,
                });
            }
            (None, QuotaMode::Native) => Self::native(dir)?,
            (None, QuotaMode::Auto) if !image.exists() && is_btrfs(&dir) => {
                match Self::native(dir.clone()) {
                    Ok(q) => q,
                    Err(e) => {
                        tracing::warn!(
                            "workspace quotas: not using the state directory's btrfs ({e}); \
                             using the image {} instead",
                            image.display()
                        );
                        Self::new_image(dir, &image, config)?
                    }
                }
            }
            (None, _) => Self::new_image(dir, &image, config)?,
        };
        tracing::info!("{}", quotas.describe());
        Ok(quotas)
    }

    /// Native btrfs on `dir`'s own filesystem.
    fn native(dir: PathBuf) -> Result<WorkspaceQuotas, QuotaError> {
        if !is_btrfs(&dir) {
            return Err(QuotaError::NotBtrfs { dir });
        }
        let root = open_root(&dir)?;
        enable_simple_quotas(root.as_fd(), &dir)?;
        Ok(WorkspaceQuotas {
            dir,
            backend: QuotaBackend::Native,
            root: Some(root),
        })
    }

    /// Creates the image if needed, then attaches and mounts it on `dir`.
    fn new_image(
        dir: PathBuf,
        image: &Path,
        config: &WorkspacesConfig,
    ) -> Result<WorkspaceQuotas, QuotaError> {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| QuotaError::io(format!("reading {}", dir.display()), e))?
            .count();
        if entries > 0 {
            return Err(QuotaError::NotEmpty { dir, entries });
        }
        let created = image::ensure_image(image, config.image_size.0)?;
        let device = image::attach_and_mount(image, &dir).map_err(|e| match e {
            QuotaError::Mount {
                device,
                dir,
                source,
            } if source.raw_os_error() == Some(libc::ENODEV) => QuotaError::NoBtrfs {
                device,
                dir,
                source,
            },
            other => other,
        })?;
        Self::on_image(dir, image, device, created, false, config)
    }

    /// Finishes the image backend once the image is mounted on `dir`.
    fn on_image(
        dir: PathBuf,
        image: &Path,
        device: PathBuf,
        created: bool,
        reused: bool,
        config: &WorkspacesConfig,
    ) -> Result<WorkspaceQuotas, QuotaError> {
        let root = open_root(&dir)?;
        enable_simple_quotas(root.as_fd(), &dir)?;
        // The mount's root is the workspaces directory: traverse only.
        nix::sys::stat::fchmod(root.as_fd(), Mode::from_bits_truncate(0o711))
            .map_err(|e| QuotaError::io(format!("chmod {}", dir.display()), e.into()))?;
        let size_bytes = image::image_size(image).map_err(|e| QuotaError::Image {
            image: image.to_path_buf(),
            what: "stat".into(),
            source: Some(e),
        })?;
        if !created && size_bytes != config.image_size.0 {
            tracing::warn!(
                "workspace quotas: the image {} is {}, not the configured image_size {}: \
                 an existing image keeps its size",
                image.display(),
                config::show_bytes(size_bytes),
                config.image_size
            );
        }
        Ok(WorkspaceQuotas {
            dir,
            backend: QuotaBackend::Image {
                image: image.to_path_buf(),
                device,
                size_bytes,
                created,
                reused,
            },
            root: Some(root),
        })
    }

    /// The workspaces directory, `<state_dir>/workspaces`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn backend(&self) -> &QuotaBackend {
        &self.backend
    }

    /// Whether the kernel enforces workspace limits.
    pub fn is_enforced(&self) -> bool {
        self.root.is_some()
    }

    /// Host path of agent `pid`'s workspace (whether or not it exists).
    pub fn workspace_dir(&self, pid: u64) -> PathBuf {
        self.dir.join(pid.to_string())
    }

    /// Creates agent `pid`'s workspace, or reuses the one left by a
    /// previous run (recovery) and applies `limit_bytes` to it again; in
    /// both cases it ends up owned by `uid:gid`, mode 0700. Returns its path.
    ///
    /// With quotas on, the workspace is a subvolume whose qgroup and the
    /// level-1 qgroup `1/<pid>` are limited to `limit_bytes` referenced
    /// bytes (data plus the subvolume's own metadata, ~16 KiB when empty).
    pub fn ensure_workspace(
        &self,
        pid: u64,
        uid: u32,
        gid: u32,
        limit_bytes: u64,
    ) -> Result<PathBuf, QuotaError> {
        let path = self.workspace_dir(pid);
        let fail = |what: &str| {
            let what = what.to_string();
            move |source: io::Error| QuotaError::Workspace { pid, what, source }
        };
        let workspace = match &self.root {
            None => {
                match std::fs::create_dir(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(fail("mkdir")(e)),
                }
                open_dir_at(None, &path).map_err(fail("open"))?
            }
            Some(root) => self.ensure_subvolume(root.as_fd(), pid, limit_bytes, &path)?,
        };
        nix::unistd::fchown(workspace.as_fd(), Some(uid.into()), Some(gid.into()))
            .map_err(|e| fail("chown")(e.into()))?;
        nix::sys::stat::fchmod(workspace.as_fd(), Mode::from_bits_truncate(0o700))
            .map_err(|e| fail("chmod")(e.into()))?;
        Ok(path)
    }

    fn ensure_subvolume(
        &self,
        root: BorrowedFd<'_>,
        pid: u64,
        limit_bytes: u64,
        path: &Path,
    ) -> Result<OwnedFd, QuotaError> {
        let fail = |what: &str| {
            let what = what.to_string();
            move |source: io::Error| QuotaError::Workspace { pid, what, source }
        };
        if pid > MAX_PID {
            return Err(fail("pid")(io::Error::from(io::ErrorKind::InvalidInput)));
        }
        if limit_bytes == 0 {
            return Err(fail("limit of 0 bytes")(io::Error::from(
                io::ErrorKind::InvalidInput,
            )));
        }
        let name = pid.to_string();
        let group = QgroupId::new(WORKSPACE_GROUP_LEVEL, pid);
        let existing = match open_dir_at(Some(root), Path::new(&name)) {
            Ok(fd) => Some(fd),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(fail("open")(e)),
        };
        let created = existing.is_none();
        if created {
            // The group first (with its limit), then the subvolume born in it.
            btrfs::create_qgroup(root, group).map_err(fail(&format!("creating qgroup {group}")))?;
            btrfs::limit_qgroup(root, Some(group), limit_bytes)
                .map_err(fail(&format!("limiting qgroup {group}")))?;
            match btrfs::create_subvolume(root, &name, limit_bytes, &[group]) {
                Ok(()) => {}
                // Created concurrently: reuse it like a recovered one.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(fail("creating the subvolume")(e)),
            }
        }
        let workspace = match existing {
            Some(fd) => fd,
            None => open_dir_at(Some(root), Path::new(&name)).map_err(fail("open"))?,
        };
        let st = nix::sys::stat::fstat(workspace.as_fd()).map_err(|e| fail("stat")(e.into()))?;
        if st.st_ino != btrfs::SUBVOLUME_ROOT_INO || !is_btrfs_fd(workspace.as_fd()) {
            return Err(QuotaError::NotASubvolume {
                path: path.to_path_buf(),
            });
        }
        if !created {
            // Recovery: the same group, membership and limits as at creation.
            let id = btrfs::subvolume_id(workspace.as_fd()).map_err(fail("subvolume id"))?;
            btrfs::create_qgroup(root, group).map_err(fail(&format!("creating qgroup {group}")))?;
            btrfs::assign_qgroup(root, QgroupId::of_subvolume(id), group)
                .map_err(fail(&format!("adding 0/{id} to {group}")))?;
            btrfs::limit_qgroup(root, Some(group), limit_bytes)
                .map_err(fail(&format!("limiting qgroup {group}")))?;
            btrfs::limit_qgroup(workspace.as_fd(), None, limit_bytes)
                .map_err(fail(&format!("limiting qgroup 0/{id}")))?;
        }
        Ok(workspace)
    }

    /// Bytes agent `pid`'s workspace holds and may hold; `None` when quotas
    /// are off (nothing is tracked: the caller has to walk the workspace).
    pub fn usage(&self, pid: u64) -> Result<Option<WorkspaceUsage>, QuotaError> {
        let Some(root) = &self.root else {
            return Ok(None);
        };
        let group = QgroupId::new(WORKSPACE_GROUP_LEVEL, pid);
        let fail = |what: &'static str| {
            move |source: io::Error| QuotaError::Workspace {
                pid,
                what: what.into(),
                source,
            }
        };
        let referenced = btrfs::qgroup_referenced(root.as_fd(), group)
            .map_err(fail("reading its qgroup"))?
            .ok_or(QuotaError::NoWorkspace { pid })?;
        let limit = btrfs::qgroup_limit(root.as_fd(), group)
            .map_err(fail("reading its limit"))?
            .flatten();
        Ok(Some(WorkspaceUsage {
            referenced_bytes: referenced,
            limit_bytes: limit,
        }))
    }

    /// At a graceful shutdown: unmounts the image if this process mounted
    /// it. The unmount is lazy (agents' mount namespaces, and this value's
    /// own descriptor until it is dropped, may still hold it); the loop
    /// device detaches once the last user is gone. An image
    /// that was already mounted at start (a previous run that crashed, or
    /// a mount unit of the administrator's) stays mounted, as does a
    /// native workspaces directory.
    pub fn release(&self) -> Result<(), QuotaError> {
        let QuotaBackend::Image { reused: false, .. } = &self.backend else {
            return Ok(());
        };
        nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| QuotaError::io(format!("unmounting {}", self.dir.display()), e.into()))
    }

    /// One line for the daemon's log and `agentos status`.
    pub fn describe(&self) -> String {
        let free = || {
            nix::sys::statvfs::statvfs(&self.dir)
                .map(|s| config::show_bytes(s.blocks_available().saturating_mul(s.fragment_size())))
                .unwrap_or_else(|_| "?".into())
        };
        match &self.backend {
            QuotaBackend::Off => format!(
                "WARNING: workspace quotas are OFF ([workspaces] quota = \"off\"): the kernel does \
                 not enforce them; only FS_WRITE checks the quota, so an agent's own writes and \
                 EXEC_CMD's can fill {} and the database's filesystem",
                self.dir.display()
            ),
            QuotaBackend::Native => format!(
                "workspace quotas: btrfs simple quotas, a subvolume per workspace in {} (the state \
                 directory's own btrfs, shared with the database; {} free)",
                self.dir.display(),
                free()
            ),
            QuotaBackend::Image {
                image,
                device,
                size_bytes,
                created,
                reused,
            } => format!(
                "workspace quotas: btrfs simple quotas, a subvolume per workspace on the image {} \
                 ({}, {} free, {}{}) mounted on {}",
                image.display(),
                config::show_bytes(*size_bytes),
                free(),
                device.display(),
                if *created {
                    ", created now"
                } else if *reused {
                    ", already mounted"
                } else {
                    ""
                },
                self.dir.display()
            ),
        }
    }
}

/// Enables simple quotas unless they are on; refuses full accounting.
fn enable_simple_quotas(root: BorrowedFd<'_>, dir: &Path) -> Result<(), QuotaError> {
    let unavailable = |source: io::Error| QuotaError::QuotaUnavailable {
        dir: dir.to_path_buf(),
        source,
    };
    let status = match btrfs::quota_status(root).map_err(unavailable)? {
        Some(s) => s,
        None => {
            btrfs::enable_quota(root, QuotaKind::Simple).map_err(unavailable)?;
            // Commit, so that everything created from now on is accounted
            // (simple quotas count extents from the enabling generation).
            btrfs::sync(root).map_err(unavailable)?;
            btrfs::quota_status(root)
                .map_err(unavailable)?
                .ok_or_else(|| unavailable(io::Error::other("quotas still off after enabling")))?
        }
    };
    match status.kind {
        QuotaKind::Simple => Ok(()),
        QuotaKind::Full => Err(QuotaError::FullQgroups {
            dir: dir.to_path_buf(),
        }),
    }
}

fn is_our_image(m: &image::MountEntry, image: &Path) -> bool {
    m.fs_type == "btrfs"
        && m.source.starts_with("/dev/loop")
        && image::loop_backs(Path::new(&m.source), image)
}

fn is_btrfs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .map(|s| s.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC)
        .unwrap_or(false)
}

fn is_btrfs_fd(fd: BorrowedFd<'_>) -> bool {
    nix::sys::statfs::fstatfs(fd)
        .map(|s| s.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC)
        .unwrap_or(false)
}

fn absolute(p: &Path) -> Result<PathBuf, QuotaError> {
    std::path::absolute(p).map_err(|e| QuotaError::io(format!("resolving {}", p.display()), e))
}

fn open_root(dir: &Path) -> Result<File, QuotaError> {
    let fd = open_dir_at(None, dir)
        .map_err(|e| QuotaError::io(format!("opening {}", dir.display()), e))?;
    Ok(File::from(fd))
}

/// Opens a directory (relative to `at`, or the current directory) without
/// following a final symlink.
fn open_dir_at(at: Option<BorrowedFd<'_>>, path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = match at {
        Some(dir) => nix::fcntl::openat(dir, path, flags, Mode::empty()),
        None => nix::fcntl::open(path, flags, Mode::empty()),
    }?;
    Ok(fd)
}
