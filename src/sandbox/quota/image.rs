//! The loop-mounted btrfs image that holds workspaces when the state
//! directory's own filesystem cannot enforce per-workspace limits: made
//! once (preallocated with `fallocate`, formatted with `mkfs.btrfs`),
//! attached to a free loop device (`LOOP_CTL_GET_FREE`, `LOOP_CONFIGURE`
//! with autoclear, so that unmounting frees the device) and mounted
//! `nosuid,nodev,noatime,nodiscard`. At a restart an existing mount of the
//! same image is reused.

use super::QuotaError;
use std::ffi::c_void;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `<linux/loop.h>`.
const LOOP_CTL_GET_FREE: libc::Ioctl = 0x4C82;
const LOOP_CONFIGURE: libc::Ioctl = 0x4C0A;
const LOOP_GET_STATUS64: libc::Ioctl = 0x4C05;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;
/// Attempts when another process takes the loop device we were offered.
const LOOP_ATTEMPTS: usize = 8;
/// Where `mkfs.btrfs` is looked for after `$PATH` (daemons often run with
/// a PATH without the sbin directories).
const MKFS_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];
/// Label of the filesystems this module makes.
pub const LABEL: &str = "agentos-ws";

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = {
    assert!(std::mem::size_of::<LoopInfo64>() == 232);
    assert!(std::mem::size_of::<LoopConfig>() == 304);
};

impl LoopInfo64 {
    fn zeroed() -> LoopInfo64 {
        LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: 0,
            lo_file_name: [0; LO_NAME_SIZE],
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; LO_KEY_SIZE],
            lo_init: [0; 2],
        }
    }
}

/// One line of `/proc/self/mountinfo`, the fields this module needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount id (first field), as `statx` reports it in `stx_mnt_id`.
    pub id: u64,
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
}

/// Parses `/proc/self/mountinfo` text (octal escapes such as `\040` decoded).
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut left = left.split(' ');
            let id = left.next()?.parse().ok()?;
            let mount_point = left.nth(3)?;
            let mut right = right.split(' ');
            let fs_type = right.next()?;
            let source = right.next()?;
            Some(MountEntry {
                id,
                mount_point: PathBuf::from(unescape(mount_point)),
                fs_type: unescape(fs_type),
                source: unescape(source),
            })
        })
        .collect()
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The filesystem mounted on `dir` right now, if `dir` is a mount point:
/// the mount that `dir` resolves to (its `statx` mount id), when its
/// mount point is `dir` itself. A mount hidden by a later mount on a parent
/// directory still appears in the mount table under `dir`'s path, but is
/// not what `dir` resolves to.
pub fn mounted_on(dir: &Path) -> Result<Option<MountEntry>, QuotaError> {
    let id = mount_id(dir).map_err(|e| QuotaError::io(format!("statx {}", dir.display()), e))?;
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|source| QuotaError::io("reading /proc/self/mountinfo", source))?;
    Ok(parse_mountinfo(&text)
        .into_iter()
        .find(|m| m.id == id)
        .filter(|m| m.mount_point == dir))
}

/// The id of the mount `path` is on (`statx` `STATX_MNT_ID`, Linux 5.8+).
fn mount_id(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `c` is a NUL-terminated path, `stx` points to writable
    // memory of the size of struct statx, which the kernel fills.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_MNT_ID,
            stx.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statx succeeded and filled the struct (zeroed beforehand,
    // and every bit pattern is a valid struct statx anyway).
    let stx = unsafe { stx.assume_init() };
    if stx.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(io::Error::other(
            "the kernel reports no mount id (statx STATX_MNT_ID)",
        ));
    }
    Ok(stx.stx_mnt_id)
}

/// Whether loop device `device` is backed by the file `image`.
pub fn loop_backs(device: &Path, image: &Path) -> bool {
    let (Ok(file), Ok(dev)) = (
        std::fs::metadata(image),
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(device),
    ) else {
        return false;
    };
    let mut info = LoopInfo64::zeroed();
    // SAFETY: LOOP_GET_STATUS64 writes one struct loop_info64 (layout and
    // size asserted above) to the pointer; `info` is exclusively borrowed
    // for the call and `dev` is open.
    let rc = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_GET_STATUS64,
            &mut info as *mut LoopInfo64 as *mut c_void,
        )
    };
    rc == 0 && info.lo_device == file.dev() && info.lo_inode == file.ino()
}

/// Creates the image if it does not exist: `<image>.new` preallocated to
/// `size` bytes and formatted, then renamed into place, so that a crash
/// midway leaves no half-made image behind. Returns whether it was made.
pub fn ensure_image(image: &Path, size: u64) -> Result<bool, QuotaError> {
    match std::fs::symlink_metadata(image) {
        Ok(m) if m.is_file() => return Ok(false),
        Ok(_) => {
            return Err(QuotaError::Image {
                image: image.to_path_buf(),
                what: "exists but is not a regular file".into(),
                source: None,
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(QuotaError::io(format!("{}", image.display()), e)),
    }
    let mkfs = find_mkfs(std::env::var_os("PATH").as_deref())?;
    if let Some(parent) = image.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| QuotaError::io(format!("creating {}", parent.display()), e))?;
    }
    let staging = image.with_extension("img.new");
    let _ = std::fs::remove_file(&staging);
    let fail = |what: &str, source: io::Error| QuotaError::Image {
        image: image.to_path_buf(),
        what: what.into(),
        source: Some(source),
    };
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&staging)
        .map_err(|e| fail(&format!("creating {}", staging.display()), e))?;
    let len = libc::off_t::try_from(size)
        .map_err(|_| fail("size", io::Error::from(io::ErrorKind::InvalidInput)))?;
    // Allocated now, not when workspaces fill: the space is taken from the
    // state filesystem once, and filling workspaces never takes more.
    let allocated =
        nix::fcntl::fallocate(file.as_fd(), nix::fcntl::FallocateFlags::empty(), 0, len);
    if let Err(e) = allocated {
        let _ = std::fs::remove_file(&staging);
        return Err(fail(
            &format!(
                "preallocating {} (fallocate; is there room on the state filesystem?)",
                super::config::show_bytes(size)
            ),
            io::Error::from(e),
        ));
    }
    drop(file);
    let out = Command::new(&mkfs)
        .args(["-q", "-L", LABEL])
        .arg(&staging)
        .output()
        .map_err(|e| fail(&format!("running {}", mkfs.display()), e))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&staging);
        return Err(QuotaError::Mkfs {
            image: image.to_path_buf(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    File::open(&staging)
        .and_then(|f| f.sync_all())
        .map_err(|e| fail("syncing", e))?;
    std::fs::rename(&staging, image).map_err(|e| fail("renaming into place", e))?;
    if let Some(parent) = image.parent() {
        let _ = File::open(parent).and_then(|d| d.sync_all());
    }
    Ok(true)
}

/// `mkfs.btrfs` from `path` (a `$PATH` value), then the usual sbin directories.
pub fn find_mkfs(path: Option<&std::ffi::OsStr>) -> Result<PathBuf, QuotaError> {
    let dirs: Vec<PathBuf> = path
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    dirs.into_iter()
        .chain(MKFS_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join("mkfs.btrfs"))
        .find(|p| is_executable(p))
        .ok_or(QuotaError::MkfsMissing)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Attaches `image` to a free loop device and mounts it on `dir`. The
/// device detaches itself once the filesystem is unmounted (autoclear).
pub fn attach_and_mount(image: &Path, dir: &Path) -> Result<PathBuf, QuotaError> {
    let backing = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(image)
        .map_err(|e| QuotaError::Image {
            image: image.to_path_buf(),
            what: "opening".into(),
            source: Some(e),
        })?;
    let (device, loop_fd) = attach(backing.as_fd())?;
    drop(backing);
    let flags = nix::mount::MsFlags::MS_NOSUID
        | nix::mount::MsFlags::MS_NODEV
        | nix::mount::MsFlags::MS_NOATIME;
    // nodiscard: a discard on the loop device would punch holes in the
    // image and give back to the state filesystem the space preallocated
    // for workspaces.
    nix::mount::mount(
        Some(device.as_path()),
        dir,
        Some("btrfs"),
        flags,
        Some("nodiscard"),
    )
    .map_err(|e| QuotaError::Mount {
        device: device.clone(),
        dir: dir.to_path_buf(),
        source: io::Error::from(e),
    })?;
    disable_discard(&device);
    // The mount holds the device now; closing ours lets autoclear work.
    drop(loop_fd);
    Ok(device)
}

/// A free loop device configured on `backing`: its path and an open
/// descriptor (closing it before mounting detaches the device).
fn attach(backing: BorrowedFd<'_>) -> Result<(PathBuf, File), QuotaError> {
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/loop-control")
        .map_err(QuotaError::NoLoopDevice)?;
    let mut last = None;
    for _ in 0..LOOP_ATTEMPTS {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device
        // number; `control` is open.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(QuotaError::NoLoopDevice(io::Error::last_os_error()));
        }
        let device = PathBuf::from(format!("/dev/loop{n}"));
        let dev = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&device)
        {
            Ok(f) => f,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        for flags in [LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO, LO_FLAGS_AUTOCLEAR] {
            match configure(&dev, backing, flags) {
                Ok(()) => return Ok((device, dev)),
                // Direct I/O refused by the backing filesystem: buffered.
                Err(e)
                    if e.raw_os_error() == Some(libc::EINVAL)
                        && flags & LO_FLAGS_DIRECT_IO != 0 => {}
                Err(e) => {
                    last = Some(e);
                    break;
                }
            }
        }
        // EBUSY: someone else configured it between GET_FREE and now.
    }
    Err(QuotaError::NoLoopDevice(
        last.unwrap_or_else(|| io::Error::other("no free loop device")),
    ))
}

fn configure(dev: &File, backing: BorrowedFd<'_>, flags: u32) -> io::Result<()> {
    let mut info = LoopInfo64::zeroed();
    info.lo_flags = flags;
    let config = LoopConfig {
        fd: backing.as_raw_fd() as u32,
        block_size: 0,
        info,
        reserved: [0; 8],
    };
    // SAFETY: LOOP_CONFIGURE reads one struct loop_config (layout and size
    // asserted above) from the pointer, which is valid for the call;
    // `config.fd` is an open descriptor of the backing file and `dev` is
    // an open loop device.
    let rc = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_CONFIGURE,
            &config as *const LoopConfig as *const c_void,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Best effort: no discards reach the loop device even from an `fstrim`
/// (a discard would punch holes in the image). Needs a writable /sys.
fn disable_discard(device: &Path) {
    if let Some(name) = device.file_name() {
        let knob = Path::new("/sys/block")
            .join(name)
            .join("queue/discard_max_bytes");
        let _ = std::fs::write(knob, "0");
    }
}

/// Size of the image file in bytes.
pub fn image_size(image: &Path) -> io::Result<u64> {
    Ok(std::fs::metadata(image)?.len())
}
