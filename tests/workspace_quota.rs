//! Workspace quotas enforced by the kernel (src/sandbox/quota): real loop
//! devices and btrfs, as root. Writes as the workspace's uid and as root
//! stop at the limit with EDQUOT; a subvolume or snapshot made by the agent
//! inside its workspace does not escape the limit; workspaces are
//! independent; a restart (reopen while mounted, or after unmounting)
//! finds data and limits intact; bad configurations are refused with a
//! clear error. Every test unmounts what it mounted and checks that its
//! loop device is gone.

mod common;

use agentos::config::FileConfig;
use agentos::sandbox::quota::btrfs::{self, QuotaKind};
use agentos::sandbox::quota::{
    ByteSize, QuotaBackend, QuotaError, QuotaMode, WorkspaceQuotas, WorkspacesConfig,
};
use serde_json::Value;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// What a workspace may hold beyond the data written into it: the limit
/// counts referenced bytes, data *and* the subvolume's metadata (at least
/// one 16 KiB tree block), and btrfs reserves data space before copying
/// it in, so the data the kernel accepts never exceeds the limit. No slack
/// is needed above the limit; the floor below it allows for the metadata
/// and the per-write reservations of a 64 KiB write (a write that would
/// cross the limit is refused whole or cut short).
const SLACK_ABOVE: u64 = 0;
const FLOOR_BELOW: u64 = 256 << 10;

static N: AtomicU32 = AtomicU32::new(0);

/// Uids for the tests' workspaces, clear of the daemon tests' blocks.
fn test_uid(k: u32) -> u32 {
    900_000 + (std::process::id() % 1000) * 50 + k
}

/// Skips (loudly) without root or btrfs-progs; in CI a skip is a failure.
fn require_btrfs(test: &str) -> bool {
    if !common::require_root(test) {
        return false;
    }
    if agentos::sandbox::quota::image::find_mkfs(std::env::var_os("PATH").as_deref()).is_ok() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: mkfs.btrfs is missing (.ci/run installs btrfs-progs), refusing to skip");
    }
    eprintln!("\n!!!!! SKIPPED {test}: mkfs.btrfs not found (apt-get install btrfs-progs) !!!!!\n");
    false
}

/// A throw-away state directory whose workspaces are set up by
/// [`WorkspaceQuotas`]; dropping it unmounts and removes everything.
struct Fixture {
    state: PathBuf,
    config: WorkspacesConfig,
    quotas: Option<WorkspaceQuotas>,
    /// Extra mounts to undo (innermost last), e.g. a btrfs state directory.
    extra_mounts: Vec<PathBuf>,
}

impl Fixture {
    fn new(tag: &str, quota: QuotaMode) -> Fixture {
        let n = N.fetch_add(1, Ordering::SeqCst);
        let state =
            std::env::temp_dir().join(format!("agentos-quota-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        std::fs::create_dir_all(&state).expect("state dir");
        Fixture {
            config: WorkspacesConfig {
                quota,
                image: None,
                image_size: ByteSize(256 * MIB),
            },
            state,
            quotas: None,
            extra_mounts: Vec::new(),
        }
    }

    fn open(&mut self) -> &WorkspaceQuotas {
        self.quotas = None;
        let q = WorkspaceQuotas::open(&self.config, &self.state)
            .unwrap_or_else(|e| panic!("open: {e} ({e:?})"));
        self.quotas.insert(q)
    }

    fn q(&self) -> &WorkspaceQuotas {
        self.quotas.as_ref().expect("opened")
    }

    fn workspaces(&self) -> PathBuf {
        self.state.join("workspaces")
    }

    /// Commits btrfs's transaction so that qgroup numbers are current.
    fn sync(&self) {
        let root = std::fs::File::open(self.workspaces()).expect("open workspaces");
        btrfs::sync(root.as_fd()).expect("BTRFS_IOC_SYNC");
    }

    /// Closes the quotas and unmounts the workspaces, like a daemon that
    /// stopped and whose mount namespace went away; returns the loop
    /// device that was used, after checking that it detached.
    fn unmount(&mut self) -> Option<PathBuf> {
        let device = match self.quotas.take().map(|q| q.backend().clone()) {
            Some(QuotaBackend::Image { device, .. }) => Some(device),
            _ => None,
        };
        unmount(&self.workspaces());
        if let Some(d) = &device {
            assert!(
                wait_detached(d, &self.image()),
                "{} still backs {} after unmounting",
                d.display(),
                self.image().display()
            );
        }
        device
    }

    fn image(&self) -> PathBuf {
        self.config
            .image
            .clone()
            .unwrap_or_else(|| self.state.join("workspaces.img"))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.quotas = None;
        let unmount_workspaces = || {
            for _ in 0..4 {
                if !is_mount_point(&self.workspaces()) {
                    break;
                }
                unmount(&self.workspaces());
            }
        };
        unmount_workspaces();
        for m in self.extra_mounts.iter().rev() {
            unmount(m);
        }
        // Mounts that the extra ones hid.
        unmount_workspaces();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

fn is_mount_point(dir: &Path) -> bool {
    agentos::sandbox::quota::image::mounted_on(dir)
        .ok()
        .flatten()
        .is_some()
}

fn unmount(dir: &Path) {
    for _ in 0..50 {
        match nix::mount::umount2(dir, nix::mount::MntFlags::empty()) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return,
            Err(nix::errno::Errno::EBUSY) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("umount {}: {e}", dir.display()),
        }
    }
    let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
}

/// Whether loop device `device` stopped backing `image` within 2 s.
fn wait_detached(device: &Path, image: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if !agentos::sandbox::quota::image::loop_backs(device, image) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs tests/agents/quota_fill.py as `uid` (gid = uid, no groups).
fn fill_as(uid: u32, mode: &str, dir: &Path) -> Value {
    let script = common::for_others(&common::repo().join("tests/agents/quota_fill.py"));
    let out = Command::new("/usr/bin/python3")
        .arg(&script)
        .arg(mode)
        .arg(dir)
        .uid(uid)
        .gid(uid)
        .output()
        .expect("run quota_fill.py");
    assert!(
        out.status.success(),
        "quota_fill.py {mode} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "quota_fill.py output {:?}: {e}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Writes 64 KiB chunks as the test process (root) until a write fails.
fn fill_as_root(path: &Path) -> (u64, std::io::Error) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("create");
    let chunk = vec![0x3cu8; 64 << 10];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => panic!("zero-length write"),
            Ok(n) => written += n as u64,
            Err(e) => return (written, e),
        }
    }
}

fn assert_stopped_at(what: &str, report: &Value, limit: u64) {
    assert_eq!(report["setup_error"], Value::Null, "{what}: {report}");
    assert_eq!(report["error"], "EDQUOT", "{what}: {report}");
    let written = report["written"].as_u64().expect("written");
    assert_within(what, written, limit);
}

fn assert_within(what: &str, written: u64, limit: u64) {
    eprintln!("{what}: {written} bytes accepted under a limit of {limit}");
    assert!(
        written > 0 && written <= limit + SLACK_ABOVE,
        "{what}: {written} bytes written against a limit of {limit}"
    );
    assert!(
        written + FLOOR_BELOW >= limit,
        "{what}: only {written} bytes accepted under a limit of {limit}: stopped by something else?"
    );
}

#[test]
fn writes_as_the_agent_stop_at_the_limit_with_edquot() {
    if !require_btrfs("writes_as_the_agent_stop_at_the_limit_with_edquot") {
        return;
    }
    let mut fx = Fixture::new("agent", QuotaMode::Auto);
    let q = fx.open();
    match q.backend() {
        QuotaBackend::Image {
            created, reused, ..
        } => assert!(*created && !*reused, "{:?}", q.backend()),
        other => panic!("the state directory is not btrfs: expected the image, got {other:?}"),
    }
    assert!(q.is_enforced());
    assert!(q.describe().contains("simple quotas"), "{}", q.describe());
    let uid = test_uid(1);
    let ws = q.ensure_workspace(101, uid, uid, MIB).expect("workspace");
    let md = std::fs::metadata(&ws).expect("stat");
    assert_eq!(
        (md.uid(), md.gid(), md.permissions().mode() & 0o7777),
        (uid, uid, 0o700)
    );
    assert_eq!(md.ino(), btrfs::SUBVOLUME_ROOT_INO, "a subvolume");

    let report = fill_as(uid, "file", &ws);
    assert_stopped_at("one file as the agent's uid", &report, MIB);

    fx.sync();
    let usage = fx.q().usage(101).expect("usage").expect("tracked");
    assert_eq!(usage.limit_bytes, Some(MIB));
    assert!(
        usage.referenced_bytes >= report["written"].as_u64().unwrap_or(0)
            && usage.referenced_bytes <= MIB,
        "{usage:?} after {report}"
    );
    fx.unmount();
}

#[test]
fn many_small_files_and_root_writes_are_limited_too() {
    if !require_btrfs("many_small_files_and_root_writes_are_limited_too") {
        return;
    }
    let mut fx = Fixture::new("root", QuotaMode::Image);
    let q = fx.open();
    let uid = test_uid(2);
    let many = q.ensure_workspace(1, uid, uid, MIB).expect("workspace");
    let report = fill_as(uid, "many", &many);
    assert_eq!(report["error"], "EDQUOT", "{report}");
    // Metadata counts too: 4 KiB files stop well before 1 MiB of data.
    let written = report["written"].as_u64().unwrap_or(0);
    assert!(written > 0 && written <= MIB, "{report}");

    let ws = q
        .ensure_workspace(2, uid + 1, uid + 1, 2 * MIB)
        .expect("workspace");
    let (written, err) = fill_as_root(&ws.join("root-file"));
    assert_eq!(err.raw_os_error(), Some(libc::EDQUOT), "root: {err}");
    assert_within("root writing", written, 2 * MIB);
    fx.unmount();
}

#[test]
fn subvolumes_and_snapshots_made_by_the_agent_do_not_escape() {
    if !require_btrfs("subvolumes_and_snapshots_made_by_the_agent_do_not_escape") {
        return;
    }
    let mut fx = Fixture::new("nested", QuotaMode::Image);
    let q = fx.open();
    let uid = test_uid(3);
    let ws = q.ensure_workspace(5, uid, uid, MIB).expect("workspace");
    let report = fill_as(uid, "nested", &ws);
    assert_stopped_at("inside a subvolume the agent created", &report, MIB);
    assert!(ws.join("inner").is_dir());

    let ws = q
        .ensure_workspace(6, uid + 1, uid + 1, MIB)
        .expect("workspace");
    std::fs::write(ws.join("seed"), vec![1u8; 100 << 10]).expect("seed");
    let report = fill_as(uid + 1, "snapshot", &ws);
    assert_eq!(report["setup_error"], Value::Null, "{report}");
    assert_eq!(report["error"], "EDQUOT", "{report}");
    let written = report["written"].as_u64().unwrap_or(0);
    // The seed (100 KiB) counts against the same limit.
    assert!(
        written > 0 && written + (100 << 10) <= MIB,
        "snapshot: {report}"
    );
    fx.unmount();
}

#[test]
fn two_workspaces_are_independent() {
    if !require_btrfs("two_workspaces_are_independent") {
        return;
    }
    let mut fx = Fixture::new("two", QuotaMode::Image);
    let q = fx.open();
    let (ua, ub) = (test_uid(4), test_uid(5));
    let a = q.ensure_workspace(10, ua, ua, MIB).expect("a");
    let b = q.ensure_workspace(11, ub, ub, 4 * MIB).expect("b");
    assert_stopped_at("a", &fill_as(ua, "file", &a), MIB);
    // A full neighbour takes nothing from b.
    assert_stopped_at("b", &fill_as(ub, "file", &b), 4 * MIB);
    // Nor can a's uid write into b (0700, owned by b's uid).
    let report = fill_as(ua, "file", &b);
    assert_eq!(report["error"], "EACCES", "{report}");
    fx.sync();
    let (ua_use, ub_use) = (
        fx.q().usage(10).expect("usage").expect("tracked"),
        fx.q().usage(11).expect("usage").expect("tracked"),
    );
    assert!(ua_use.referenced_bytes <= MIB, "{ua_use:?}");
    assert!(
        ub_use.referenced_bytes > 2 * MIB && ub_use.referenced_bytes <= 4 * MIB,
        "{ub_use:?}"
    );
    assert!(matches!(
        fx.q().usage(12),
        Err(QuotaError::NoWorkspace { pid: 12 })
    ));
    fx.unmount();
}

#[test]
fn a_restart_keeps_workspaces_data_and_limits() {
    if !require_btrfs("a_restart_keeps_workspaces_data_and_limits") {
        return;
    }
    let mut fx = Fixture::new("restart", QuotaMode::Auto);
    let uid = test_uid(6);
    let ws = fx
        .open()
        .ensure_workspace(20, uid, uid, MIB)
        .expect("workspace");
    std::fs::write(ws.join("kept.txt"), b"survives restarts").expect("write");
    fx.sync();

    // 1. The daemon restarts while the image stays mounted: reused.
    let q = fx.open();
    match q.backend() {
        QuotaBackend::Image {
            created, reused, ..
        } => assert!(!*created && *reused, "{:?}", q.backend()),
        other => panic!("{other:?}"),
    }
    assert!(q.describe().contains("already mounted"), "{}", q.describe());
    assert_eq!(
        std::fs::read(ws.join("kept.txt")).expect("kept"),
        b"survives restarts"
    );
    // A graceful stop leaves a mount it found at start in place.
    fx.quotas.take().expect("open").release().expect("release");
    assert!(
        is_mount_point(&fx.workspaces()),
        "a mount found at start stays"
    );
    fx.open();

    // 2. The mount went away (reboot, or the daemon's mount namespace):
    //    the image is attached and mounted again, not recreated.
    let first_device = fx.unmount().expect("image backend");
    let q = fx.open();
    match q.backend() {
        QuotaBackend::Image {
            created, reused, ..
        } => assert!(!*created && !*reused, "{:?}", q.backend()),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        std::fs::read(ws.join("kept.txt")).expect("kept"),
        b"survives restarts"
    );
    // The recovered workspace keeps its limit...
    let usage = q.usage(20).expect("usage").expect("tracked");
    assert_eq!(usage.limit_bytes, Some(MIB), "{usage:?}");
    // ...and ensure_workspace applies the current one (recovery), with a
    // new owner if the uid changed.
    let uid2 = test_uid(7);
    let again = q
        .ensure_workspace(20, uid2, uid2, 2 * MIB)
        .expect("recovered");
    assert_eq!(again, ws);
    assert_eq!(std::fs::metadata(&ws).expect("stat").uid(), uid2);
    assert_eq!(
        q.usage(20).expect("usage").expect("tracked").limit_bytes,
        Some(2 * MIB)
    );
    let report = fill_as(uid2, "file", &ws);
    assert_eq!(report["error"], "EDQUOT", "{report}");
    let written = report["written"].as_u64().unwrap_or(0);
    assert!(written > MIB && written <= 2 * MIB, "new limit: {report}");
    // The image was preallocated: its blocks are allocated on the state
    // filesystem, so filling workspaces never takes more from it.
    let md = std::fs::metadata(fx.image()).expect("image");
    assert!(
        md.blocks() * 512 >= md.len(),
        "image is sparse: {} of {}",
        md.blocks() * 512,
        md.len()
    );
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    // A graceful stop unmounts what it mounted; the loop device detaches.
    let QuotaBackend::Image { device, .. } = fx.q().backend().clone() else {
        panic!("image backend");
    };
    fx.quotas.take().expect("open").release().expect("release");
    assert!(!is_mount_point(&fx.workspaces()), "unmounted by release");
    assert!(
        wait_detached(&device, &fx.image()),
        "{} still attached",
        device.display()
    );
    eprintln!(
        "loop devices: {} then {}",
        first_device.display(),
        device.display()
    );
}

#[test]
fn a_btrfs_state_directory_is_used_natively_and_full_qgroups_are_refused() {
    if !require_btrfs("a_btrfs_state_directory_is_used_natively_and_full_qgroups_are_refused") {
        return;
    }
    // A state directory that is itself on btrfs: an image of our own,
    // mounted by the test on the state directory.
    let host = Fixture::new("host", QuotaMode::Image);
    let host_image = host.state.join("host.img");
    agentos::sandbox::quota::image::ensure_image(&host_image, 256 * MIB).expect("host image");
    let mut fx = Fixture::new("native", QuotaMode::Native);
    agentos::sandbox::quota::image::attach_and_mount(&host_image, &fx.state).expect("mount host");
    fx.extra_mounts.push(fx.state.clone());

    let q = fx.open();
    assert_eq!(q.backend(), &QuotaBackend::Native);
    assert!(
        q.describe().contains("state directory's own btrfs"),
        "{}",
        q.describe()
    );
    let uid = test_uid(8);
    let ws = q.ensure_workspace(30, uid, uid, MIB).expect("workspace");
    assert_stopped_at("native", &fill_as(uid, "file", &ws), MIB);
    // auto on the same directory: native too.
    fx.config.quota = QuotaMode::Auto;
    assert_eq!(fx.open().backend(), &QuotaBackend::Native);
    fx.quotas = None;

    // Full qgroup accounting on a btrfs state directory: native refused
    // (an agent's own subvolume would escape), auto uses an image.
    let mut full = Fixture::new("full", QuotaMode::Native);
    let full_image = host.state.join("full.img");
    agentos::sandbox::quota::image::ensure_image(&full_image, 256 * MIB).expect("image");
    agentos::sandbox::quota::image::attach_and_mount(&full_image, &full.state).expect("mount");
    full.extra_mounts.push(full.state.clone());
    {
        let dir = std::fs::File::open(&full.state).expect("open");
        btrfs::enable_quota(dir.as_fd(), QuotaKind::Full).expect("full qgroups");
    }
    let e = WorkspaceQuotas::open(&full.config, &full.state).expect_err("full qgroups");
    assert!(matches!(e, QuotaError::FullQgroups { .. }), "{e}");
    assert!(e.to_string().contains("quota = \"image\""), "{e}");
    full.config.quota = QuotaMode::Auto;
    full.config.image = Some(host.state.join("full-ws.img"));
    let q = full.open();
    assert!(
        matches!(q.backend(), QuotaBackend::Image { .. }),
        "{:?}",
        q.backend()
    );
    full.unmount();
    // Dropped before `host`, which holds their images.
    drop(full);
    drop(fx);
}

#[test]
fn a_hidden_mount_of_the_workspaces_directory_is_not_taken_for_one() {
    if !require_btrfs("a_hidden_mount_of_the_workspaces_directory_is_not_taken_for_one") {
        return;
    }
    let mut fx = Fixture::new("hidden", QuotaMode::Auto);
    fx.open();
    fx.quotas = None;
    // A filesystem mounted over the state directory (tests/disk_full.rs
    // moves a daemon onto a tmpfs this way) hides the image's mount, which
    // the mount table still lists under <state>/workspaces.
    nix::mount::mount(
        Some("tmpfs"),
        &fx.state,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=300m,mode=0711"),
    )
    .expect("tmpfs over the state directory");
    fx.extra_mounts.push(fx.state.clone());
    let q = fx.open();
    match q.backend() {
        QuotaBackend::Image {
            created, reused, ..
        } => {
            assert!(*created && !*reused, "{:?}", q.backend())
        }
        other => panic!("{other:?}"),
    }
    fx.unmount();
    unmount(&fx.state);
    fx.extra_mounts.clear();
    // The first image is visible again, and still mounted.
    assert!(is_mount_point(&fx.workspaces()));
    fx.unmount();
}

#[test]
fn bad_configurations_are_refused_clearly() {
    if !require_btrfs("bad_configurations_are_refused_clearly") {
        return;
    }
    // Parsing: unknown mode, unparsable or too small sizes name the key.
    let parse = |s: &str| FileConfig::parse(&format!("[workspaces]\n{s}\n"), "agentosd.toml");
    let e = parse("quota = \"project\"").expect_err("mode").to_string();
    assert!(
        e.contains("agentosd.toml") && e.contains("project") && e.contains("off"),
        "{e}"
    );
    let e = parse("image_size = \"eight gigs\"")
        .expect_err("size")
        .to_string();
    assert!(e.contains("image_size") && e.contains("not a size"), "{e}");
    let e = parse("image_size = \"1M\"").expect_err("small").to_string();
    assert!(
        e.contains("workspaces.image_size") && e.contains("too small"),
        "{e}"
    );

    // Opening: the same checks hold for a configuration built in code.
    let fx = Fixture::new("bad", QuotaMode::Image);
    let small = WorkspacesConfig {
        image_size: ByteSize(MIB),
        ..fx.config.clone()
    };
    let e = WorkspaceQuotas::open(&small, &fx.state).expect_err("small");
    assert!(e.to_string().contains("too small"), "{e}");

    // native on ext4 (or whatever /tmp is, if not btrfs).
    if !is_btrfs(&std::env::temp_dir()) {
        let native = WorkspacesConfig {
            quota: QuotaMode::Native,
            ..fx.config.clone()
        };
        let e = WorkspaceQuotas::open(&native, &fx.state).expect_err("native on ext4");
        assert!(matches!(e, QuotaError::NotBtrfs { .. }), "{e}");
        assert!(
            e.to_string().contains("quota = \"auto\" or \"image\""),
            "{e}"
        );
    }

    // An image that would hide workspaces left by a run without quotas.
    std::fs::create_dir_all(fx.workspaces().join("7")).expect("old workspace");
    let e = WorkspaceQuotas::open(&fx.config, &fx.state).expect_err("not empty");
    assert!(matches!(e, QuotaError::NotEmpty { entries: 1, .. }), "{e}");
    assert!(e.to_string().contains("quota = \"off\""), "{e}");
    assert!(!fx.image().exists(), "nothing made before the refusal");

    // An image path that is a directory.
    std::fs::remove_dir_all(fx.workspaces()).expect("clean");
    std::fs::create_dir_all(fx.image()).expect("dir in the way");
    let e = WorkspaceQuotas::open(&fx.config, &fx.state).expect_err("not a file");
    assert!(e.to_string().contains("not a regular file"), "{e}");
    assert!(!is_mount_point(&fx.workspaces()));
}

#[test]
fn creating_workspaces_is_fast() {
    if !require_btrfs("creating_workspaces_is_fast") {
        return;
    }
    let mut fx = Fixture::new("fast", QuotaMode::Image);
    let q = fx.open();
    let uid = test_uid(9);
    let t0 = Instant::now();
    for pid in 1..=50 {
        q.ensure_workspace(pid, uid, uid, MIB).expect("workspace");
    }
    let per = t0.elapsed() / 50;
    eprintln!("ensure_workspace: {per:?} per workspace (50 created)");
    // ~1 ms measured; the CLI took ~9 ms (spawning btrfs twice).
    assert!(per < Duration::from_millis(50), "{per:?} per workspace");
    fx.unmount();
}

fn is_btrfs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .map(|s| s.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC)
        .unwrap_or(false)
}
