//! The btrfs ioctls that workspace quotas use, as safe functions on a
//! descriptor of the filesystem: enable quotas, create a subvolume that is
//! born inside a quota group and with its own limit, create and limit quota
//! groups, read a quota group's usage and limit from the quota tree, and
//! tell which subvolume a descriptor is in.
//!
//! Layouts and numbers are those of `<linux/btrfs.h>` and
//! `<linux/btrfs_tree.h>` (uapi, stable); the simple-quota values, newer
//! than some installed headers, are from Linux 6.7. Every argument struct
//! is `#[repr(C)]` and its size is checked against the kernel's below.

use std::ffi::c_void;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `BTRFS_IOCTL_MAGIC`.
const MAGIC: u8 = 0x94;
/// The objectid of a subvolume's root directory (`BTRFS_FIRST_FREE_OBJECTID`).
pub const SUBVOLUME_ROOT_INO: u64 = 256;
/// `BTRFS_QUOTA_TREE_OBJECTID`.
const QUOTA_TREE: u64 = 8;
/// Quota tree item types (`btrfs_tree.h`).
const QGROUP_STATUS_KEY: u32 = 240;
const QGROUP_INFO_KEY: u32 = 242;
const QGROUP_LIMIT_KEY: u32 = 244;
/// `BTRFS_QUOTA_CTL_ENABLE`, `BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA`.
const QUOTA_CTL_ENABLE_FULL: u64 = 1;
const QUOTA_CTL_ENABLE_SIMPLE: u64 = 4;
/// `BTRFS_QGROUP_STATUS_FLAG_INCONSISTENT`, `..._SIMPLE_MODE`.
const STATUS_FLAG_INCONSISTENT: u64 = 1 << 2;
const STATUS_FLAG_SIMPLE_MODE: u64 = 1 << 3;
/// `BTRFS_QGROUP_LIMIT_MAX_RFER`: the limit is on referenced bytes.
const LIMIT_MAX_RFER: u64 = 1 << 0;
/// `BTRFS_QGROUP_INHERIT_SET_LIMITS`: apply `lim` to the new subvolume's qgroup.
const INHERIT_SET_LIMITS: u64 = 1 << 0;
/// `BTRFS_SUBVOL_QGROUP_INHERIT`.
const SUBVOL_QGROUP_INHERIT: u64 = 1 << 2;
/// `BTRFS_SUBVOL_NAME_MAX`.
const SUBVOL_NAME_MAX: usize = 4039;
/// `BTRFS_INO_LOOKUP_PATH_MAX`.
const INO_LOOKUP_PATH_MAX: usize = 4080;
/// `BTRFS_SEARCH_ARGS_BUFSIZE`.
const SEARCH_BUF: usize = 4096 - size_of::<SearchKey>();
/// `BTRFS_QGROUP_LEVEL_SHIFT`.
const LEVEL_SHIFT: u32 = 48;

/// A quota group id: level and id, `<level>/<id>` in btrfs-progs' notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QgroupId(pub u64);

impl QgroupId {
    /// `level/id`. `id` must fit in 48 bits.
    pub fn new(level: u16, id: u64) -> QgroupId {
        QgroupId((u64::from(level) << LEVEL_SHIFT) | (id & ((1 << LEVEL_SHIFT) - 1)))
    }
    /// The level-0 qgroup of subvolume `subvolume_id`.
    pub fn of_subvolume(subvolume_id: u64) -> QgroupId {
        QgroupId::new(0, subvolume_id)
    }
}

impl std::fmt::Display for QgroupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}",
            self.0 >> LEVEL_SHIFT,
            self.0 & ((1 << LEVEL_SHIFT) - 1)
        )
    }
}

/// How the filesystem accounts quota groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKind {
    /// Simple quotas (Linux 6.7+): every extent is charged to the subvolume
    /// that wrote it, and a subvolume created inside another one joins its
    /// parent qgroups automatically.
    Simple,
    /// Full qgroup accounting (backrefs walked on every extent change).
    Full,
}

/// The quota status item of the filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaStatus {
    pub kind: QuotaKind,
    /// Full accounting only: the numbers are stale until a rescan.
    pub inconsistent: bool,
}

// --- argument layouts --------------------------------------------------------

/// `struct btrfs_qgroup_limit`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct QgroupLimit {
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

/// `struct btrfs_ioctl_qgroup_limit_args`.
#[repr(C)]
struct QgroupLimitArgs {
    qgroupid: u64,
    lim: QgroupLimit,
}

/// `struct btrfs_ioctl_qgroup_create_args`.
#[repr(C)]
struct QgroupCreateArgs {
    create: u64,
    qgroupid: u64,
}

/// `struct btrfs_ioctl_qgroup_assign_args`.
#[repr(C)]
struct QgroupAssignArgs {
    assign: u64,
    src: u64,
    dst: u64,
}

/// `struct btrfs_ioctl_quota_ctl_args`.
#[repr(C)]
struct QuotaCtlArgs {
    cmd: u64,
    status: u64,
}

/// `struct btrfs_ioctl_vol_args_v2` with the `size`/`qgroup_inherit` arm of
/// its first union and the `name` arm of its second.
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    size: u64,
    qgroup_inherit: u64,
    unused: [u64; 2],
    name: [u8; SUBVOL_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_ino_lookup_args`.
#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; INO_LOOKUP_PATH_MAX],
}

/// `struct btrfs_ioctl_search_key`.
#[repr(C)]
#[derive(Default)]
struct SearchKey {
    tree_id: u64,
    min_objectid: u64,
    max_objectid: u64,
    min_offset: u64,
    max_offset: u64,
    min_transid: u64,
    max_transid: u64,
    min_type: u32,
    max_type: u32,
    nr_items: u32,
    unused: u32,
    unused1: u64,
    unused2: u64,
    unused3: u64,
    unused4: u64,
}

/// `struct btrfs_ioctl_search_args`.
#[repr(C)]
struct SearchArgs {
    key: SearchKey,
    buf: [u8; SEARCH_BUF],
}

/// `struct btrfs_ioctl_search_header`, as found at the start of `buf`.
const SEARCH_HEADER_LEN: usize = 32;

const _: () = {
    assert!(size_of::<QgroupLimitArgs>() == 48);
    assert!(size_of::<QgroupCreateArgs>() == 16);
    assert!(size_of::<QgroupAssignArgs>() == 24);
    assert!(size_of::<QuotaCtlArgs>() == 16);
    assert!(size_of::<VolArgsV2>() == 4096);
    assert!(size_of::<InoLookupArgs>() == 4096);
    assert!(size_of::<SearchKey>() == 104);
    assert!(size_of::<SearchArgs>() == 4096);
};

/// Argument structs of the btrfs ioctls above.
///
/// # Safety
/// Implementors are `#[repr(C)]` structs of integers and byte arrays only
/// (every bit pattern is valid), laid out exactly as the kernel's struct
/// for the ioctls they are passed to, and hold no pointers the kernel
/// dereferences (except [`VolArgsV2`], whose caller vouches for it).
unsafe trait IoctlArg: Sized {}
// SAFETY: all of these are repr(C) structs of u64/u32/i64 and byte arrays,
// with the sizes asserted above.
unsafe impl IoctlArg for QgroupLimitArgs {}
// SAFETY: as above.
unsafe impl IoctlArg for QgroupCreateArgs {}
// SAFETY: as above.
unsafe impl IoctlArg for QgroupAssignArgs {}
// SAFETY: as above.
unsafe impl IoctlArg for QuotaCtlArgs {}
// SAFETY: as above.
unsafe impl IoctlArg for InoLookupArgs {}
// SAFETY: as above.
unsafe impl IoctlArg for SearchArgs {}

/// Direction bits of an ioctl request, as the kernel encodes them.
#[derive(Clone, Copy)]
enum Dir {
    Write,
    Read,
    ReadWrite,
}

fn request(dir: Dir, nr: u8, size: usize) -> libc::Ioctl {
    let code = match dir {
        Dir::Write => nix::request_code_write!(MAGIC, nr, size),
        Dir::Read => nix::request_code_read!(MAGIC, nr, size),
        Dir::ReadWrite => nix::request_code_readwrite!(MAGIC, nr, size),
    };
    code as libc::Ioctl
}

/// A btrfs ioctl whose only argument is `arg`; the request encodes its size.
fn ioctl<T: IoctlArg>(fd: BorrowedFd<'_>, dir: Dir, nr: u8, arg: &mut T) -> io::Result<i32> {
    let req = request(dir, nr, size_of::<T>());
    // SAFETY: `arg` is a valid, exclusively borrowed `T` for the whole
    // call; the request encodes `size_of::<T>()`, the size of the kernel
    // struct `T` mirrors (IoctlArg), so the kernel reads and writes within
    // it; `fd` is a live descriptor.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req, arg as *mut T as *mut c_void) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

// --- operations --------------------------------------------------------------

/// Enables quotas of `kind` on the filesystem of `fd` (`BTRFS_IOC_QUOTA_CTL`).
/// A no-op returning `Ok` when quotas are already on, in whichever mode:
/// check [`quota_status`] afterwards.
pub fn enable_quota(fd: BorrowedFd<'_>, kind: QuotaKind) -> io::Result<()> {
    let mut args = QuotaCtlArgs {
        cmd: match kind {
            QuotaKind::Simple => QUOTA_CTL_ENABLE_SIMPLE,
            QuotaKind::Full => QUOTA_CTL_ENABLE_FULL,
        },
        status: 0,
    };
    ioctl(fd, Dir::ReadWrite, 40, &mut args).map(drop)
}

/// Whether and how quotas are enabled: `None` when they are off.
pub fn quota_status(fd: BorrowedFd<'_>) -> io::Result<Option<QuotaStatus>> {
    let item = match search_one(fd, QUOTA_TREE, 0, QGROUP_STATUS_KEY, 0) {
        // No quota tree at all: quotas were never enabled (or disabled).
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        other => other?,
    };
    Ok(item.map(|data| {
        // btrfs_qgroup_status_item: version, generation, flags, rescan.
        let flags = le_u64(&data, 2).unwrap_or(0);
        QuotaStatus {
            kind: if flags & STATUS_FLAG_SIMPLE_MODE != 0 {
                QuotaKind::Simple
            } else {
                QuotaKind::Full
            },
            inconsistent: flags & STATUS_FLAG_INCONSISTENT != 0,
        }
    }))
}

/// Creates quota group `id` (`BTRFS_IOC_QGROUP_CREATE`); `Ok(false)` when it
/// already exists.
pub fn create_qgroup(fd: BorrowedFd<'_>, id: QgroupId) -> io::Result<bool> {
    let mut args = QgroupCreateArgs {
        create: 1,
        qgroupid: id.0,
    };
    match ioctl(fd, Dir::Write, 42, &mut args) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Makes `child` a member of `parent` (`BTRFS_IOC_QGROUP_ASSIGN`); `Ok` when
/// it already is.
pub fn assign_qgroup(fd: BorrowedFd<'_>, child: QgroupId, parent: QgroupId) -> io::Result<()> {
    let mut args = QgroupAssignArgs {
        assign: 1,
        src: child.0,
        dst: parent.0,
    };
    match ioctl(fd, Dir::Write, 41, &mut args) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Limits the referenced bytes of quota group `id` (`BTRFS_IOC_QGROUP_LIMIT`);
/// `None` is the subvolume that `fd` is in (its level-0 qgroup).
pub fn limit_qgroup(fd: BorrowedFd<'_>, id: Option<QgroupId>, max_bytes: u64) -> io::Result<()> {
    let mut args = QgroupLimitArgs {
        qgroupid: id.map_or(0, |q| q.0),
        lim: QgroupLimit {
            flags: LIMIT_MAX_RFER,
            max_rfer: max_bytes,
            ..Default::default()
        },
    };
    // The kernel declares this request _IOR although it only reads the args.
    ioctl(fd, Dir::Read, 43, &mut args).map(drop)
}

/// Creates subvolume `name` in the directory `parent` (`BTRFS_IOC_SUBVOL_CREATE_V2`):
/// its level-0 qgroup starts with a referenced-bytes limit of `max_bytes`
/// and as a member of each of `member_of`, all in the same transaction as
/// the subvolume itself.
pub fn create_subvolume(
    parent: BorrowedFd<'_>,
    name: &str,
    max_bytes: u64,
    member_of: &[QgroupId],
) -> io::Result<()> {
    if name.is_empty() || name.len() > SUBVOL_NAME_MAX || name.contains(['/', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a valid subvolume name"),
        ));
    }
    // struct btrfs_qgroup_inherit { flags, num_qgroups, num_ref_copies,
    // num_excl_copies, struct btrfs_qgroup_limit lim, __u64 qgroups[] },
    // all u64: built as one u64 array so that it is aligned and exactly
    // as long as the kernel computes from num_qgroups.
    let mut inherit: Vec<u64> = vec![
        INHERIT_SET_LIMITS,
        member_of.len() as u64,
        0,
        0,
        LIMIT_MAX_RFER,
        max_bytes,
        0,
        0,
        0,
    ];
    inherit.extend(member_of.iter().map(|q| q.0));
    let mut args = VolArgsV2 {
        fd: 0,
        transid: 0,
        flags: SUBVOL_QGROUP_INHERIT,
        size: (inherit.len() * size_of::<u64>()) as u64,
        qgroup_inherit: inherit.as_ptr() as u64,
        unused: [0; 2],
        name: [0; SUBVOL_NAME_MAX + 1],
    };
    args.name[..name.len()].copy_from_slice(name.as_bytes());
    let req = request(Dir::Write, 24, size_of::<VolArgsV2>());
    // SAFETY: `args` is a valid btrfs_ioctl_vol_args_v2 (size asserted),
    // exclusively borrowed for the call, with a NUL-terminated name; its
    // qgroup_inherit points to `inherit`, which lives until the end of this
    // function and is exactly `size` bytes long, the length the kernel
    // copies in; `parent` is a live descriptor.
    let rc = unsafe { libc::ioctl(parent.as_raw_fd(), req, &mut args as *mut VolArgsV2) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The id of the subvolume that `fd` is in (`BTRFS_IOC_INO_LOOKUP` with
/// tree 0).
pub fn subvolume_id(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut args = InoLookupArgs {
        treeid: 0,
        objectid: SUBVOLUME_ROOT_INO,
        name: [0; INO_LOOKUP_PATH_MAX],
    };
    ioctl(fd, Dir::ReadWrite, 18, &mut args)?;
    Ok(args.treeid)
}

/// Bytes referenced by quota group `id` as of the last committed
/// transaction; `None` when there is no such qgroup.
pub fn qgroup_referenced(fd: BorrowedFd<'_>, id: QgroupId) -> io::Result<Option<u64>> {
    // btrfs_qgroup_info_item: generation, rfer, rfer_cmpr, excl, excl_cmpr.
    Ok(search_one(fd, QUOTA_TREE, 0, QGROUP_INFO_KEY, id.0)?.and_then(|d| le_u64(&d, 1)))
}

/// The referenced-bytes limit of quota group `id`: `Some(None)` when the
/// group exists without one.
pub fn qgroup_limit(fd: BorrowedFd<'_>, id: QgroupId) -> io::Result<Option<Option<u64>>> {
    // btrfs_qgroup_limit_item: flags, max_rfer, max_excl, rsv_rfer, rsv_excl.
    Ok(
        search_one(fd, QUOTA_TREE, 0, QGROUP_LIMIT_KEY, id.0)?.map(|d| {
            let flags = le_u64(&d, 0).unwrap_or(0);
            (flags & LIMIT_MAX_RFER != 0)
                .then(|| le_u64(&d, 1))
                .flatten()
        }),
    )
}

/// Commits the filesystem's current transaction (`BTRFS_IOC_SYNC`).
pub fn sync(fd: BorrowedFd<'_>) -> io::Result<()> {
    let req = nix::request_code_none!(MAGIC, 8) as libc::Ioctl;
    // SAFETY: BTRFS_IOC_SYNC takes no argument; `fd` is a live descriptor.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The data of the item with exactly this key in tree `tree`
/// (`BTRFS_IOC_TREE_SEARCH`), if there is one.
fn search_one(
    fd: BorrowedFd<'_>,
    tree: u64,
    objectid: u64,
    item_type: u32,
    offset: u64,
) -> io::Result<Option<Vec<u8>>> {
    let mut args = SearchArgs {
        key: SearchKey {
            tree_id: tree,
            min_objectid: objectid,
            max_objectid: objectid,
            min_offset: offset,
            max_offset: offset,
            min_transid: 0,
            max_transid: u64::MAX,
            min_type: item_type,
            max_type: item_type,
            nr_items: 1,
            ..Default::default()
        },
        buf: [0; SEARCH_BUF],
    };
    ioctl(fd, Dir::ReadWrite, 17, &mut args)?;
    if args.key.nr_items == 0 {
        return Ok(None);
    }
    // One btrfs_ioctl_search_header { transid, objectid, offset: u64;
    // type, len: u32 }, then `len` bytes of item data.
    let header = &args.buf[..SEARCH_HEADER_LEN];
    let field = |at: usize| u64::from_ne_bytes(header[at..at + 8].try_into().unwrap_or([0; 8]));
    let u32_at = |at: usize| u32::from_ne_bytes(header[at..at + 4].try_into().unwrap_or([0; 4]));
    let (found_objectid, found_offset, found_type) = (field(8), field(16), u32_at(24));
    if (found_objectid, found_type, found_offset) != (objectid, item_type, offset) {
        return Ok(None);
    }
    let len = u32_at(28) as usize;
    let data = args
        .buf
        .get(SEARCH_HEADER_LEN..SEARCH_HEADER_LEN + len)
        .ok_or_else(|| io::Error::other("btrfs tree search returned a truncated item"))?;
    Ok(Some(data.to_vec()))
}

/// The `index`-th little-endian u64 of an on-disk item.
fn le_u64(data: &[u8], index: usize) -> Option<u64> {
    let bytes = data.get(index * 8..index * 8 + 8)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qgroup_ids_print_like_btrfs_progs() {
        assert_eq!(QgroupId::new(1, 42).to_string(), "1/42");
        assert_eq!(QgroupId::of_subvolume(256).to_string(), "0/256");
        assert_eq!(QgroupId::new(1, 42).0, (1 << 48) | 42);
    }

    #[test]
    fn request_codes_match_the_kernel_headers() {
        // Values of the _IOW/_IOR/_IOWR macros in <linux/btrfs.h> on x86-64.
        assert_eq!(request(Dir::ReadWrite, 40, 16) as u64, 0xC010_9428); // QUOTA_CTL
        assert_eq!(request(Dir::Read, 43, 48) as u64, 0x8030_942B); // QGROUP_LIMIT
        assert_eq!(request(Dir::Write, 24, 4096) as u64, 0x5000_9418); // SUBVOL_CREATE_V2
        assert_eq!(request(Dir::ReadWrite, 17, 4096) as u64, 0xD000_9411); // TREE_SEARCH
    }

    #[test]
    fn items_are_read_little_endian_and_bounds_checked() {
        let mut d = vec![0u8; 16];
        d[8] = 5;
        assert_eq!(le_u64(&d, 1), Some(5));
        assert_eq!(le_u64(&d, 2), None);
    }
}
