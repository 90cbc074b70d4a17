//! FS escape attempts through the daemon: a hostile agent (a Python script in
//! tests/agents/fs_escape.py) attacks the FS_* syscalls with `..` paths,
//! absolute paths, symlinks, hard links, FIFOs and a symlink swap race. The
//! agent reports the code of every reply; the test checks those codes and,
//! on the host, that nothing outside the workspace was read or written.

mod common;

use agentos::admin::protocol::AdminRequest;
use agentos::kernel::pcb::Pcb;
use common::Daemon;
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// A per-test marker for file names, so leftovers are recognisable.
fn marker(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("agentos-esc-{test}-{}-{nanos}", std::process::id())
}

/// Spawns the escape agent in `mode` with the given extra arguments.
fn spawn_agent(daemon: &Daemon, mode: &str, args: &[&str], permissions: &[&str]) -> Pcb {
    let mut argv = vec![mode];
    argv.extend_from_slice(args);
    daemon.spawn(common::python_agent(
        &format!("escape-{mode}"),
        "fs_escape.py",
        &argv,
        Some(permissions),
    ))
}

fn finish(daemon: &Daemon, pid: u64, timeout: Duration) -> Value {
    daemon.finish(pid, timeout)
}

/// The agent's log and the daemon's, for assertion messages.
fn logs(daemon: &Daemon, pid: u64) -> String {
    format!(
        "agent log:\n{}\ndaemon log:\n{}",
        daemon.logs(pid),
        daemon.log()
    )
}

/// Tells a waiting agent to go on (it blocks in RECV_MSG).
fn send_go(daemon: &Daemon, pid: u64) {
    daemon
        .call(AdminRequest::Send {
            pid,
            body: "go".into(),
        })
        .unwrap_or_else(|e| panic!("send go to {pid}: {e}\n{}", daemon.log()));
}

/// Content and identity of a host file, to compare before and after.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    content: Vec<u8>,
    mtime: (i64, i64),
    ctime: (i64, i64),
    size: u64,
    ino: u64,
    nlink: u64,
    mode: u32,
}

fn snapshot(p: &Path) -> Snapshot {
    let meta = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    Snapshot {
        content: std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        ctime: (meta.ctime(), meta.ctime_nsec()),
        size: meta.size(),
        ino: meta.ino(),
        nlink: meta.nlink(),
        mode: meta.mode(),
    }
}

/// Snapshots of host files that must survive the test unchanged. If one
/// changed anyway, its content is put back (so a regression cannot leave the
/// machine with a rewritten /etc/shadow) and the test fails.
struct Guarded(Vec<(PathBuf, Snapshot)>);

impl Guarded {
    fn new(paths: &[&Path]) -> Guarded {
        Guarded(
            paths
                .iter()
                .filter(|p| p.exists())
                .map(|p| (p.to_path_buf(), snapshot(p)))
                .collect(),
        )
    }

    fn assert_unchanged(&self, context: &dyn Fn() -> String) {
        for (p, before) in &self.0 {
            let after = snapshot(p);
            if after.content != before.content {
                let _ = std::fs::write(p, &before.content);
            }
            assert_eq!(
                &after,
                before,
                "host file {} changed\n{}",
                p.display(),
                context()
            );
        }
    }
}

/// Every path under `root` (not following symlinks) whose name contains `needle`.
fn find_named(root: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().contains(needle) {
                out.push(p.clone());
            }
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The code recorded under `report[section][key]`.
fn code_at<'a>(report: &'a Value, section: &str, key: &str) -> &'a str {
    let v = &report[section][key];
    v.as_str()
        .or_else(|| v["code"].as_str())
        .or_else(|| v["status"].as_str().map(|_| reply_code(v)))
        .unwrap_or("<missing>")
}

/// The code of a whole reply object as the agent received it.
fn reply_code(reply: &Value) -> &str {
    if reply["status"] == "SUCCESS" {
        "SUCCESS"
    } else {
        reply["error"]["code"].as_str().unwrap_or("<missing>")
    }
}

/// Asserts that `report[section][key]` has `expected` as its code.
fn expect_code(report: &Value, section: &str, key: &str, expected: &str, ctx: &dyn Fn() -> String) {
    assert_eq!(
        code_at(report, section, key),
        expected,
        "{section} {key:?}: expected {expected}\nreport: {report}\n{}",
        ctx()
    );
}

/// Asserts that every entry of `report[section]` has `expected` as its code.
fn expect_all(report: &Value, section: &str, expected: &str, ctx: &dyn Fn() -> String) {
    let map = report[section]
        .as_object()
        .unwrap_or_else(|| panic!("report has no {section}: {report}\n{}", ctx()));
    assert!(!map.is_empty(), "empty section {section}\n{}", ctx());
    for key in map.keys() {
        expect_code(report, section, key, expected, ctx);
    }
}

/// Asserts that the agent's summary `report[key]` of a reply has
/// `expected` as its `code`.
fn expect_summary(report: &Value, key: &str, expected: &str, ctx: &dyn Fn() -> String) {
    assert_eq!(
        report[key]["code"],
        expected,
        "{key:?}: expected {expected}\nreport: {report}\n{}",
        ctx()
    );
}

/// Asserts that the whole reply `report[key]` has `expected` as its code
/// and, when that is an error, carries no result.
fn expect_reply(report: &Value, key: &str, expected: &str, ctx: &dyn Fn() -> String) {
    assert_eq!(
        reply_code(&report[key]),
        expected,
        "{key:?}: {}\n{}",
        report[key],
        ctx()
    );
    if expected != "SUCCESS" {
        assert!(
            report[key]["result"].is_null(),
            "{key:?} returned data: {report}\n{}",
            ctx()
        );
    }
}

/// Removes host files created outside the daemon's directory on drop.
struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// (a) `..` paths: every one that climbs above the workspace root is EXDEV,
/// for reads, writes, listings and deletions, and nothing is created (or
/// deleted) in the state directory, the daemon's directory, /tmp or /etc.
#[test]
fn dotdot_paths_are_exdev_and_touch_nothing() {
    if !common::require_root("dotdot_paths_are_exdev_and_touch_nothing") {
        return;
    }
    let daemon = Daemon::start();
    let m = marker("dotdot");
    // Victims where a `..` escape would land: the workspaces directory, the
    // state directory, the daemon's directory and /tmp.
    let victim = format!("victim-{m}");
    let victims = [
        daemon.state_dir().join("workspaces").join(&victim),
        daemon.state_dir().join(&victim),
        daemon.dir.join(&victim),
        std::env::temp_dir().join(&victim),
    ];
    let _cleanup = RemoveOnDrop(vec![
        std::env::temp_dir().join(&victim),
        std::env::temp_dir().join(&m),
    ]);
    for v in &victims {
        std::fs::write(v, "victim").expect("victim");
        std::fs::set_permissions(v, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    }
    let guard = Guarded::new(&[
        Path::new("/etc/passwd"),
        Path::new("/etc/hostname"),
        &victims[0],
        &victims[1],
        &victims[2],
        &victims[3],
    ]);

    let pcb = spawn_agent(&daemon, "dotdot", &[&m], &["fs"]);
    let ctx = || logs(&daemon, pcb.pid);
    let report = finish(&daemon, pcb.pid, Duration::from_secs(20));

    for section in ["read", "write", "list", "delete"] {
        expect_all(&report, section, "EXDEV", &ctx);
    }
    // A `..` that stays inside is fine (so EXDEV above is about escaping).
    assert_eq!(report["inside_write"], "SUCCESS", "{report}\n{}", ctx());
    assert_eq!(
        report["inside_read"]["result"]["content"],
        "inside",
        "{report}\n{}",
        ctx()
    );

    guard.assert_unchanged(&ctx);
    for v in &victims {
        assert!(v.exists(), "{} was deleted\n{}", v.display(), ctx());
    }
    // Nothing named after the marker appeared anywhere but the victims.
    let found = find_named(&daemon.dir, &m);
    let mut expected: Vec<PathBuf> = victims[..3].to_vec();
    expected.sort();
    assert_eq!(
        found,
        expected,
        "files created outside the workspace\n{}",
        ctx()
    );
    for p in [
        std::env::temp_dir().join(&m),
        PathBuf::from("/etc").join(&m),
        PathBuf::from("/").join(&m),
    ] {
        assert!(!p.exists(), "{} was created\n{}", p.display(), ctx());
    }
    // Refused paths create no directories either (e.g. "a" of "a/../../x").
    let mut names: Vec<String> = std::fs::read_dir(daemon.workspace(pcb.pid))
        .expect("workspace")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["inside.txt", "report.json"], "{}", ctx());
}

/// (b) Absolute paths name files in the workspace: "/etc/passwd" is
/// workspace/etc/passwd (ENOENT at first), never the host's file; once the
/// agent writes it, it reads back its own content under every spelling.
#[test]
fn absolute_paths_are_workspace_paths() {
    if !common::require_root("absolute_paths_are_workspace_paths") {
        return;
    }
    let daemon = Daemon::start();
    let host_passwd = std::fs::read_to_string("/etc/passwd").expect("host /etc/passwd");
    let guard = Guarded::new(&[Path::new("/etc/passwd")]);
    let pcb = spawn_agent(&daemon, "absolute", &[], &["fs"]);
    let ctx = || logs(&daemon, pcb.pid);
    let report = finish(&daemon, pcb.pid, Duration::from_secs(20));

    for key in [
        "read_etc_passwd",
        "read_ws_etc_passwd",
        "read_proc_root",
        "list_etc",
    ] {
        expect_reply(&report, key, "ENOENT", &ctx);
    }
    expect_reply(&report, "write_etc_passwd", "SUCCESS", &ctx);
    for key in [
        "reread_etc_passwd",
        "reread_ws_etc_passwd",
        "reread_rel_etc_passwd",
    ] {
        let content = report[key]["result"]["content"]
            .as_str()
            .unwrap_or_else(|| {
                panic!("{key}: {}\n{}", report[key], ctx());
            });
        assert_eq!(content, "agent-owned passwd\n", "{key}\n{}", ctx());
        assert_ne!(
            content,
            host_passwd,
            "{key} returned the host's passwd\n{}",
            ctx()
        );
    }
    // No reply anywhere carried the host's passwd.
    let first_line = host_passwd.lines().next().unwrap_or("root:x:0:0");
    assert!(
        !report.to_string().contains(first_line),
        "the host's passwd leaked: {report}\n{}",
        ctx()
    );
    guard.assert_unchanged(&ctx);
    let inside = daemon.workspace(pcb.pid).join("etc/passwd");
    assert_eq!(
        std::fs::read_to_string(&inside).unwrap_or_default(),
        "agent-owned passwd\n",
        "{} should hold the agent's file\n{}",
        inside.display(),
        ctx()
    );
}

/// (c) Symlinks the agent makes itself (os.symlink in /workspace) to
/// /etc/shadow, through /proc/self/root, and as `../` climbs to host files:
/// a final symlink is never followed (EFTYPE), a symlink used as a directory
/// never leads out (EXDEV), and the host files keep content and mtime.
#[test]
fn agent_made_symlinks_never_lead_out() {
    if !common::require_root("agent_made_symlinks_never_lead_out") {
        return;
    }
    let daemon = Daemon::start();
    let m = marker("symlink");
    // A host file the relative links climb to (workspace/../../../ is the
    // daemon's directory), writable by anyone so only the confinement
    // protects it.
    let hostfile = daemon.dir.join(format!("hostfile-{m}"));
    std::fs::write(&hostfile, format!("HOST SECRET {m}")).expect("host file");
    std::fs::set_permissions(&hostfile, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let _cleanup = RemoveOnDrop(vec![
        PathBuf::from("/etc").join(format!("agentos-{m}")),
        std::env::temp_dir().join(&m),
    ]);
    let guard = Guarded::new(&[
        Path::new("/etc/shadow"),
        Path::new("/etc/hostname"),
        Path::new("/etc/passwd"),
        &hostfile,
    ]);
    assert!(
        Path::new("/etc/shadow").exists(),
        "this test expects a host /etc/shadow"
    );

    let pcb = spawn_agent(&daemon, "symlinks", &[&m], &["fs"]);
    let ctx = || logs(&daemon, pcb.pid);
    let report = finish(&daemon, pcb.pid, Duration::from_secs(20));

    // The agent could make every link (else the test would prove nothing).
    let made = report["made"].as_object().expect("made");
    assert_eq!(made.len(), 8, "{report}\n{}", ctx());
    for (name, target) in made {
        let target = target.as_str().unwrap_or("");
        assert!(
            !target.starts_with("ERROR"),
            "symlink {name}: {target}\n{}",
            ctx()
        );
    }

    let final_links = [
        "shadow_link",
        "procroot_link",
        "hostname_link",
        "hostfile_link",
        "/workspace/shadow_link",
    ]
    .map(String::from);
    for p in &final_links {
        for section in ["read", "write"] {
            expect_code(&report, section, p, "EFTYPE", &ctx);
        }
    }
    expect_all(&report, "append", "EFTYPE", &ctx);
    let through_dirs = [
        "etc_dir/shadow".to_string(),
        "etc_dir/hostname".to_string(),
        "procroot_dir/etc/shadow".to_string(),
        format!("up_dir/hostfile-{m}"),
        "up_etc/hostname".to_string(),
        "up_etc/shadow".to_string(),
    ];
    for p in &through_dirs {
        expect_code(&report, "read", p, "EXDEV", &ctx);
    }
    for p in [
        format!("etc_dir/agentos-{m}"),
        format!("up_dir/hostfile-{m}"),
        format!("up_dir/new-{m}"),
        format!("procroot_dir/tmp/{m}"),
        format!("etc_dir/sub/{m}"),
    ] {
        expect_code(&report, "write", &p, "EXDEV", &ctx);
    }
    for p in ["etc_dir", "up_dir"] {
        expect_code(&report, "list", p, "EFTYPE", &ctx);
    }
    for p in ["etc_dir/ssl", "up_dir/state"] {
        expect_code(&report, "list", p, "EXDEV", &ctx);
    }
    let hostfile_via_up = format!("up_dir/hostfile-{m}");
    expect_code(&report, "delete", &hostfile_via_up, "EXDEV", &ctx);
    expect_code(&report, "delete", "shadow_link", "SUCCESS", &ctx);

    // On the host: the targets are untouched, nothing new appeared, and the
    // deleted link was only the link.
    guard.assert_unchanged(&ctx);
    assert!(hostfile.exists(), "{}", ctx());
    for p in [
        PathBuf::from("/etc").join(format!("agentos-{m}")),
        daemon.dir.join(format!("new-{m}")),
        std::env::temp_dir().join(&m),
    ] {
        assert!(!p.exists(), "{} was created\n{}", p.display(), ctx());
    }
    let ws = daemon.workspace(pcb.pid);
    assert!(!ws.join("shadow_link").exists(), "{}", ctx());
    for name in ["etc_dir", "up_dir", "hostfile_link", "procroot_link"] {
        let meta = std::fs::symlink_metadata(ws.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", ctx()));
        assert!(meta.file_type().is_symlink(), "{name}\n{}", ctx());
    }
    // The refused writes created no directories inside the workspace either
    // (e.g. "etc_dir/sub" must not have been made a real directory).
    assert_eq!(
        find_named(&ws, &m),
        Vec::<PathBuf>::new(),
        "unexpected files in the workspace\n{}",
        ctx()
    );
}

/// Creates a world-writable host file in the daemon's directory, owned by
/// the agent (so plain permissions would not stop it), and hard-links it
/// into the workspace at `rel`.
fn hard_link_in(daemon: &Daemon, pcb: &Pcb, host_name: &str, rel: &str, content: &str) -> PathBuf {
    let host = daemon.dir.join(host_name);
    std::fs::write(&host, content).expect("host file");
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    std::os::unix::fs::chown(&host, Some(pcb.uid), Some(pcb.gid)).expect("chown");
    let link = daemon.workspace(pcb.pid).join(rel);
    if let Some(parent) = link.parent() {
        if !parent.exists() {
            std::fs::create_dir_all(parent).expect("mkdir");
            std::os::unix::fs::chown(parent, Some(pcb.uid), Some(pcb.gid)).expect("chown");
        }
    }
    std::fs::hard_link(&host, &link).expect("hard link into the workspace");
    host
}

/// (d) A hard link to a host file, planted in the workspace by root: FS_READ
/// and FS_WRITE refuse it (EFTYPE), and the host file keeps its content.
#[test]
fn hard_links_to_host_files_are_refused() {
    if !common::require_root("hard_links_to_host_files_are_refused") {
        return;
    }
    // With kernel quotas every workspace is a btrfs subvolume, and link(2)
    // into it from anywhere else fails with EXDEV: the attack cannot even
    // be set up. The file driver's own defence is tested on plain
    // directories.
    let daemon = Daemon::start_with(&["--workspace-quota", "off"]);
    let pcb = spawn_agent(&daemon, "hardlink", &[], &["fs", "ipc"]);
    let ctx = || logs(&daemon, pcb.pid);
    let secret = format!("HOST SECRET {}", marker("hardlink"));
    let host = hard_link_in(&daemon, &pcb, "hostfile-hl", "hl", &secret);
    let host2 = hard_link_in(&daemon, &pcb, "hostfile-hl2", "sub/hl2", &secret);
    let guard = Guarded::new(&[&host, &host2]);
    assert_eq!(snapshot(&host).nlink, 2, "the link was not made");
    send_go(&daemon, pcb.pid);
    let report = finish(&daemon, pcb.pid, Duration::from_secs(30));

    for key in [
        "read",
        "read_abs",
        "write",
        "append",
        "read_sub",
        "write_sub",
    ] {
        expect_summary(&report, key, "EFTYPE", &ctx);
        assert!(
            report[key]["result"].is_null(),
            "{key}: {report}\n{}",
            ctx()
        );
    }
    assert!(
        !report.to_string().contains(&secret),
        "the host file's content reached the agent: {report}\n{}",
        ctx()
    );
    guard.assert_unchanged(&ctx);
}

/// (e) A FIFO in the workspace: FS_READ and FS_WRITE refuse it at once
/// (EFTYPE) instead of blocking on open, and the agent finishes promptly.
#[test]
fn fifos_are_refused_without_blocking() {
    if !common::require_root("fifos_are_refused_without_blocking") {
        return;
    }
    let daemon = Daemon::start();
    let pcb = spawn_agent(&daemon, "fifo", &[], &["fs", "ipc"]);
    let ctx = || logs(&daemon, pcb.pid);
    let fifo = daemon.workspace(pcb.pid).join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666)).expect("mkfifo");
    std::os::unix::fs::chown(&fifo, Some(pcb.uid), Some(pcb.gid)).expect("chown");
    let started = Instant::now();
    send_go(&daemon, pcb.pid);
    let waited = daemon.call(AdminRequest::Wait {
        pid: pcb.pid,
        timeout_ms: Some(10_000),
    });
    let elapsed = started.elapsed();
    let waited = waited.unwrap_or_else(|e| {
        panic!(
            "the agent did not finish within 10 s (stuck on the FIFO?): {e}\n{}",
            ctx()
        )
    });
    assert_eq!(waited["exit"]["code"], 0, "{waited}\n{}", ctx());
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}\n{}", ctx());
    let report = daemon.report(pcb.pid);

    for key in ["read", "write", "append", "read_abs"] {
        expect_summary(&report, key, "EFTYPE", &ctx);
    }
    for key in ["list", "read_dirfifo"] {
        expect_summary(&report, key, "ENOTDIR", &ctx);
    }
    for key in [
        "read",
        "write",
        "append",
        "read_abs",
        "list",
        "read_dirfifo",
    ] {
        let ms = report[key]["ms"].as_f64().unwrap_or(f64::MAX);
        assert!(ms < 2000.0, "{key} took {ms} ms\n{report}\n{}", ctx());
    }
    let meta = std::fs::symlink_metadata(&fifo).expect("fifo");
    assert!(
        std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type()),
        "{}",
        ctx()
    );
}

/// (f) A symlink swap race: one agent thread flips `d` between a real
/// directory and symlinks to /etc, to a host directory (absolute, through
/// /proc/self/root and as a `../../../` climb), the other loops FS_WRITE and
/// FS_READ of `d/<sentinel>`. The host sentinel must stay unchanged and its
/// content must never reach the agent.
#[test]
fn symlink_swap_race_never_reaches_the_host() {
    if !common::require_root("symlink_swap_race_never_reaches_the_host") {
        return;
    }
    let daemon = Daemon::start();
    let m = marker("race");
    let name = format!("sentinel-{m}");
    // The host directory sits in the daemon's state directory, beside the
    // workspaces: <state>/workspaces/<pid>/../../hostdir-<m>.
    let hostdir = daemon.state_dir().join(format!("hostdir-{m}"));
    std::fs::create_dir(&hostdir).expect("host dir");
    std::fs::set_permissions(&hostdir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let sentinel = hostdir.join(&name);
    let secret = format!("HOST SECRET {m}");
    std::fs::write(&sentinel, &secret).expect("sentinel");
    std::fs::set_permissions(&sentinel, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let _cleanup = RemoveOnDrop(vec![PathBuf::from("/etc").join(&name)]);
    let guard = Guarded::new(&[&sentinel, Path::new("/etc/hostname")]);
    let rel = format!("../../hostdir-{m}");
    // Climbing to the host's / and down the absolute path.
    let hostdir_s = hostdir.display().to_string();
    let climb = format!("{}{}", "../".repeat(16), hostdir_s.trim_start_matches('/'));
    let pcb = spawn_agent(
        &daemon,
        "race",
        &[&hostdir_s, &name, &rel, &climb, "3"],
        &["fs"],
    );
    let ctx = || {
        format!(
            "agent log:\n{}\ndaemon log:\n{}",
            daemon
                .logs(pcb.pid)
                .lines()
                .take(200)
                .collect::<Vec<_>>()
                .join("\n"),
            daemon.log()
        )
    };
    let report = finish(&daemon, pcb.pid, Duration::from_secs(40));

    // The host is untouched.
    guard.assert_unchanged(&ctx);
    let mut in_hostdir: Vec<String> = std::fs::read_dir(&hostdir)
        .expect("host dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    in_hostdir.sort();
    assert_eq!(
        in_hostdir,
        [name.as_str()],
        "files appeared in the host dir\n{}",
        ctx()
    );
    assert!(!PathBuf::from("/etc").join(&name).exists(), "{}", ctx());
    // The secret never reached the agent: every content it read is its own.
    let contents = report["contents"].as_array().expect("contents");
    for c in contents {
        let c = c.as_str().unwrap_or("<not a string>");
        assert!(
            c == "written-by-agent" || c.is_empty(),
            "FS_READ returned foreign content {c:?}\nreport: {report}\n{}",
            ctx()
        );
    }
    assert!(!report.to_string().contains(&secret), "{report}\n{}", ctx());

    // The race really ran: many swaps, and both outcomes were seen.
    let stats = &report["stats"];
    let swaps = stats["exchanges"].as_u64().unwrap_or(0) + stats["renames"].as_u64().unwrap_or(0);
    assert!(swaps >= 50, "only {swaps} swaps: {report}\n{}", ctx());
    let count = |op: &str, code: &str| report["codes"][op][code].as_u64().unwrap_or(0);
    for op in ["read", "write"] {
        assert!(
            count(op, "SUCCESS") > 0,
            "no {op} succeeded: {report}\n{}",
            ctx()
        );
        assert!(
            count(op, "EXDEV") > 0,
            "no {op} hit a symlink: {report}\n{}",
            ctx()
        );
        // Only codes that describe the race are acceptable.
        let codes = report["codes"][op].as_object().expect("codes");
        let allowed = [
            "SUCCESS", "EXDEV", "ENOENT", "ENOTDIR", "EAGAIN", "EFTYPE", "EISDIR",
        ];
        for (code, n) in codes {
            assert!(
                allowed.contains(&code.as_str()),
                "{op} answered {code} {n} times: {report}\n{}",
                ctx()
            );
        }
    }
    let total: u64 = ["read", "write"]
        .iter()
        .flat_map(|op| {
            report["codes"][op]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(_, n)| n.as_u64().unwrap_or(0))
        })
        .sum();
    let mut by_code = BTreeMap::new();
    for op in ["read", "write"] {
        for (c, n) in report["codes"][op].as_object().into_iter().flatten() {
            *by_code.entry(format!("{op} {c}")).or_insert(0) += n.as_u64().unwrap_or(0);
        }
    }
    eprintln!("race: {swaps} swaps, {total} FS calls: {by_code:?}, stats {stats}");
}

/// (g) FS_LIST of `..` (every spelling) is EXDEV; of a symlink to `/` (or to
/// `../..`, or /proc/self/root) is EFTYPE; through such a symlink EXDEV.
#[test]
fn listing_parents_and_root_symlinks_is_refused() {
    if !common::require_root("listing_parents_and_root_symlinks_is_refused") {
        return;
    }
    let daemon = Daemon::start();
    let pcb = spawn_agent(&daemon, "list", &[], &["fs"]);
    let ctx = || logs(&daemon, pcb.pid);
    let report = finish(&daemon, pcb.pid, Duration::from_secs(20));
    let expect = |path: &str, code: &str| expect_reply(&report, path, code, &ctx);
    for p in [
        "..",
        "/..",
        "/workspace/..",
        "a/../..",
        "../../..",
        "/workspace/../workspace",
    ] {
        expect(p, "EXDEV");
    }
    for p in [
        "rootlink",
        "rootlink/",
        "rootlink/.",
        "/workspace/rootlink",
        "uplink",
        "procroot",
    ] {
        expect(p, "EFTYPE");
    }
    for p in [
        "rootlink/etc",
        "rootlink/proc",
        "uplink/workspaces",
        "procroot/etc",
        "a/../rootlink/etc",
    ] {
        expect(p, "EXDEV");
    }
    // Control: the workspace root lists the agent's own entries, symlinks as
    // symlinks, and nothing of the host's root.
    expect("/", "SUCCESS");
    let entries: BTreeMap<String, String> = report["/"]["result"]["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or("").to_string(),
                e["type"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let expected: BTreeMap<String, String> = [
        ("a", "dir"),
        ("procroot", "symlink"),
        ("rootlink", "symlink"),
        ("uplink", "symlink"),
    ]
    .iter()
    .map(|(n, t)| (n.to_string(), t.to_string()))
    .collect();
    assert_eq!(entries, expected, "{report}\n{}", ctx());
}
