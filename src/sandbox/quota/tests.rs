//! Unprivileged tests of the quota module: configuration, sizes, mount
//! table parsing, `mkfs.btrfs` lookup and the `off` backend. The btrfs and
//! loop-device paths are exercised as root in tests/workspace_quota.rs.

use super::config::{ByteSize, MIN_IMAGE_BYTES, QuotaMode, WorkspacesConfig, show_bytes};
use super::image::{find_mkfs, parse_mountinfo};
use super::{QuotaBackend, QuotaError, WorkspaceQuotas};
use std::path::{Path, PathBuf};

#[test]
fn sizes_parse_in_powers_of_1024() {
    let ok = |s: &str| ByteSize::parse(s).expect(s).0;
    assert_eq!(ok("1048576"), 1 << 20);
    assert_eq!(ok("300B"), 300);
    assert_eq!(ok("8G"), 8 << 30);
    assert_eq!(ok("8 GiB"), 8 << 30);
    assert_eq!(ok("512m"), 512 << 20);
    assert_eq!(ok("2T"), 2 << 40);
    assert_eq!(ok("64KiB"), 64 << 10);
    for bad in ["", "G", "8 gigs", "-1G", "1.5G", "8X"] {
        let e = ByteSize::parse(bad).expect_err(bad).to_string();
        assert!(e.contains("not a size"), "{bad}: {e}");
    }
    let e = ByteSize::parse("8GB").expect_err("ambiguous").to_string();
    assert!(
        e.contains("write G or GiB") && e.contains("powers of 1024"),
        "{e}"
    );
    assert_eq!("512M".parse::<ByteSize>(), Ok(ByteSize(512 << 20)));
    assert_eq!("off".parse::<QuotaMode>(), Ok(QuotaMode::Off));
    let e = "xfs".parse::<QuotaMode>().expect_err("unknown").to_string();
    assert!(e.contains("auto, native, image or off"), "{e}");
    assert!(ByteSize::parse("99999999999T").is_err());
    assert_eq!(show_bytes(8 << 30), "8.0 GiB");
    assert_eq!(show_bytes(300), "300 bytes");
}

fn parse(text: &str) -> Result<WorkspacesConfig, String> {
    #[derive(serde::Deserialize)]
    struct File {
        workspaces: WorkspacesConfig,
    }
    let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
    f.workspaces.validate().map_err(|e| e.to_string())?;
    Ok(f.workspaces)
}

#[test]
fn the_section_parses_with_defaults() {
    let c = parse("[workspaces]\n").expect("empty section");
    assert_eq!(c, WorkspacesConfig::default());
    assert_eq!(c.quota, QuotaMode::Auto);
    let c =
        parse("[workspaces]\nquota = \"image\"\nimage = \"/srv/ws.img\"\nimage_size = \"1G\"\n")
            .expect("full section");
    assert_eq!(c.quota, QuotaMode::Image);
    assert_eq!(c.image.as_deref(), Some(Path::new("/srv/ws.img")));
    assert_eq!(c.image_size.0, 1 << 30);
    let c = parse("[workspaces]\nimage_size = 536870912\nquota = \"off\"\n").expect("bytes");
    assert_eq!((c.quota, c.image_size.0), (QuotaMode::Off, 512 << 20));
}

#[test]
fn bad_sections_are_refused_with_the_key() {
    let e = parse("[workspaces]\nquota = \"xfs\"\n").expect_err("unknown mode");
    assert!(
        e.contains("unknown variant `xfs`") && e.contains("off"),
        "{e}"
    );
    let e = parse("[workspaces]\nimage_size = \"lots\"\n").expect_err("unparsable size");
    assert!(e.contains("image_size") && e.contains("not a size"), "{e}");
    let e = parse("[workspaces]\nimage_size = \"100M\"\n").expect_err("too small");
    assert!(
        e.contains("workspaces.image_size") && e.contains("at least 256.0 MiB"),
        "{e}"
    );
    let e = parse("[workspaces]\nimage = \"ws.img\"\n").expect_err("relative");
    assert!(
        e.contains("workspaces.image") && e.contains("absolute"),
        "{e}"
    );
    let e = parse("[workspaces]\nimages = \"/x\"\n").expect_err("unknown key");
    assert!(e.contains("images"), "{e}");
    assert_eq!(MIN_IMAGE_BYTES, 256 << 20);
}

#[test]
fn mountinfo_lines_are_parsed_and_unescaped() {
    let text = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
98 22 0:52 / /var/lib/agent\\040os/workspaces rw,nosuid,nodev,noatime shared:50 - btrfs /dev/loop3 rw,space_cache=v2,subvolid=5,subvol=/
99 22 0:53 / /tmp/x rw - tmpfs tmpfs rw
";
    let m = parse_mountinfo(text);
    assert_eq!(m.len(), 3);
    assert_eq!(
        m[1].mount_point,
        PathBuf::from("/var/lib/agent os/workspaces")
    );
    assert_eq!(m[1].fs_type, "btrfs");
    assert_eq!(m[1].source, "/dev/loop3");
    assert_eq!((m[0].id, m[1].id), (22, 98));
    assert_eq!(m[2].source, "tmpfs");
}

#[test]
fn mount_points_are_told_from_plain_directories() {
    let m = super::image::mounted_on(Path::new("/")).expect("mountinfo");
    assert_eq!(m.map(|m| m.mount_point), Some(PathBuf::from("/")));
    let plain = std::env::temp_dir().join(format!("agentos-mnt-{}", std::process::id()));
    std::fs::create_dir_all(&plain).expect("dir");
    let plain = plain.canonicalize().expect("canonical");
    assert_eq!(super::image::mounted_on(&plain).expect("mountinfo"), None);
    let _ = std::fs::remove_dir(&plain);
}

#[test]
fn mkfs_is_found_on_the_path_or_reported_missing() {
    let dir = std::env::temp_dir().join(format!("agentos-mkfs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let fake = dir.join("mkfs.btrfs");
    std::fs::write(&fake, "#!/bin/sh\n").expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_eq!(find_mkfs(Some(dir.as_os_str())).expect("found"), fake);
    // Not on this PATH: found in the sbin directories if installed, else
    // the error says what to install.
    match find_mkfs(Some(std::ffi::OsStr::new("/nonexistent"))) {
        Ok(p) => assert!(
            p.starts_with("/usr/sbin")
                || p.starts_with("/sbin")
                || p.starts_with("/usr/bin")
                || p.starts_with("/bin")
        ),
        Err(e) => {
            assert!(matches!(e, QuotaError::MkfsMissing));
            let msg = e.to_string();
            assert!(
                msg.contains("btrfs-progs") && msg.contains("quota = \"off\""),
                "{msg}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn quota_off_keeps_plain_directories_and_says_so() {
    let state = std::env::temp_dir().join(format!("agentos-quota-off-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let config = WorkspacesConfig {
        quota: QuotaMode::Off,
        ..Default::default()
    };
    let q = WorkspaceQuotas::open(&config, &state).expect("off always opens");
    assert_eq!(q.backend(), &QuotaBackend::Off);
    assert!(!q.is_enforced());
    assert!(
        q.describe()
            .starts_with("WARNING: workspace quotas are OFF"),
        "{}",
        q.describe()
    );
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let ws = q.ensure_workspace(7, uid, gid, 1 << 20).expect("workspace");
    assert_eq!(ws, q.dir().join("7"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&ws).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    // Reused as is.
    std::fs::write(ws.join("kept"), b"x").expect("write");
    q.ensure_workspace(7, uid, gid, 1 << 20).expect("again");
    assert!(ws.join("kept").exists());
    assert_eq!(q.usage(7).expect("usage"), None);
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn an_image_inside_the_workspaces_directory_is_refused() {
    let state = std::env::temp_dir().join(format!("agentos-quota-inside-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let config = WorkspacesConfig {
        quota: QuotaMode::Image,
        image: Some(state.join("workspaces/ws.img")),
        ..Default::default()
    };
    let e = WorkspaceQuotas::open(&config, &state).expect_err("inside");
    assert!(matches!(e, QuotaError::ImageInsideWorkspaces { .. }), "{e}");
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn errors_map_to_abi_codes_with_their_causes() {
    use crate::abi::errno::{Errno, SysError};
    let full = QuotaError::Workspace {
        pid: 3,
        what: "creating the subvolume".into(),
        source: std::io::Error::from_raw_os_error(libc::ENOSPC),
    };
    let e = SysError::from(full);
    assert_eq!(e.code, Errno::EQUOTA);
    assert!(
        e.message
            .starts_with("workspace of agent 3: creating the subvolume: "),
        "{}",
        e.message
    );
    let e = SysError::from(QuotaError::NoWorkspace { pid: 4 });
    assert_eq!(e.code, Errno::ENOENT);
    let e = SysError::from(QuotaError::NoLoopDevice(std::io::Error::from_raw_os_error(
        libc::ENXIO,
    )));
    assert_eq!(e.code, Errno::EIO);
    assert!(
        e.message.contains("loop device") && e.message.contains("os error 6"),
        "{}",
        e.message
    );
}
