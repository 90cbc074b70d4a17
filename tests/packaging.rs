//! The Debian and RPM packages, built for real with `cargo deb` and
//! `cargo generate-rpm`, inspected, and (the .deb) installed, removed and
//! purged on this machine.
//!
//! Needs root (dpkg -i), cargo-deb, cargo-generate-rpm, dpkg and rpm (.ci/run
//! installs them). Without them the tests fail under CI (the `CI` variable is
//! set) and are skipped loudly otherwise. `cargo deb` builds the release
//! binaries once per test run; every test shares that build. The install
//! test refuses to run where it could destroy something (an installed
//! agentos package, an existing /var/lib/agentos or /etc/agentos) and
//! always leaves the machine as it found it, also when it fails.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

const PKG: &str = "agentos";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// A failure under CI, a loud skip otherwise.
fn cannot_run(why: &str) -> bool {
    if in_ci() {
        panic!("{why}");
    }
    eprintln!("SKIPPED: {why}");
    false
}

fn tool_works(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Root and every tool the .deb tests need.
fn deb_prerequisites() -> bool {
    if !nix::unistd::geteuid().is_root() {
        return cannot_run("packaging tests need root (dpkg -i); run them with sudo -E");
    }
    for (tool, args) in [
        (cargo(), vec!["deb", "--version"]),
        ("dpkg-deb".to_string(), vec!["--version"]),
        ("dpkg".to_string(), vec!["--version"]),
    ] {
        if !tool_works(&tool, &args) {
            return cannot_run(&format!(
                "`{tool} {}` does not run (.ci/run installs cargo-deb and dpkg)",
                args.join(" ")
            ));
        }
    }
    true
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    eprintln!(
        "$ {cmd:?} -> {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn out_dir() -> PathBuf {
    let dir = repo().join("target/packaging-test");
    std::fs::create_dir_all(&dir).expect("output dir");
    dir
}

/// Builds the .deb (and with it the release binaries) once per test run.
fn deb() -> &'static Path {
    static DEB: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = DEB.get_or_init(|| {
        let dir = out_dir().join("deb");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(cargo());
        cmd.current_dir(repo()).arg("deb").arg("--output").arg(&dir);
        if in_ci() {
            cmd.args(["--", "--locked"]);
        }
        let out = run(&mut cmd);
        if !out.status.success() {
            return Err(format!("cargo deb failed: {}", out.status));
        }
        let debs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "deb"))
            .collect();
        match debs.as_slice() {
            [one] => Ok(one.clone()),
            other => Err(format!(
                "expected one .deb in {}, found {other:?}",
                dir.display()
            )),
        }
    });
    match built {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// Files every package must hold, with their modes.
const EXPECTED: &[(&str, u32)] = &[
    ("/usr/bin/agentosd", 0o755),
    ("/usr/bin/agentos", 0o755),
    ("/usr/libexec/agentos/agentos-launcher", 0o755),
    ("/usr/libexec/agentos/agentos-runtime", 0o755),
    ("/etc/agentos/agentosd.toml", 0o644),
    ("/usr/lib/systemd/system/agentosd.service", 0o644),
    ("/usr/lib/sysusers.d/agentos.conf", 0o644),
    ("/usr/lib/tmpfiles.d/agentos.conf", 0o644),
    ("/usr/lib/sysctl.d/60-agentos.conf", 0o644),
    ("/usr/share/agentos/policies/profiles/default.toml", 0o644),
    (
        "/usr/share/agentos/policies/profiles/restricted.toml",
        0o644,
    ),
    ("/usr/share/agentos/policies/seccomp/agent.json", 0o644),
    ("/usr/share/doc/agentos/README.md", 0o644),
    ("/usr/share/doc/agentos/ARCHITECTURE.md", 0o644),
    ("/usr/share/doc/agentos/SYSCALLS.md", 0o644),
];

/// Every binary target (src/bin/*.rs) must be packaged: user commands in
/// /usr/bin, helpers the daemon starts in /usr/libexec/agentos.
fn expected_binaries() -> Vec<String> {
    let mut bins: Vec<String> = std::fs::read_dir(repo().join("src/bin"))
        .expect("src/bin")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".rs").map(str::to_string)
        })
        .map(|bin| match bin.as_str() {
            "agentosd" | "agentos" => format!("/usr/bin/{bin}"),
            _ => format!("/usr/libexec/agentos/{bin}"),
        })
        .collect();
    bins.sort();
    bins
}

/// `dpkg-deb -c` lines: "-rwxr-xr-x root/root 123 2026-01-01 00:00 ./usr/bin/x".
fn deb_listing(deb: &Path) -> Vec<(String, String)> {
    run_ok(Command::new("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .filter_map(|l| {
            let perms = l.split_whitespace().next()?.to_string();
            let path = l.split_whitespace().nth(5)?;
            Some((perms, path.trim_start_matches('.').to_string()))
        })
        .collect()
}

fn perms_string(mode: u32) -> String {
    let mut s = String::from("-");
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

#[test]
fn deb_holds_every_file_in_place() {
    if !deb_prerequisites() {
        return;
    }
    let listing = deb_listing(deb());
    for (path, mode) in EXPECTED {
        let entry = listing.iter().find(|(_, p)| p == path);
        let Some((perms, _)) = entry else {
            panic!("{path} is not in the .deb: {listing:#?}");
        };
        assert_eq!(perms, &perms_string(*mode), "{path} mode");
    }
    for bin in expected_binaries() {
        assert!(
            listing.iter().any(|(_, p)| *p == bin),
            "binary target {bin} is not packaged; add it to [package.metadata.deb] and \
             [package.metadata.generate-rpm] assets in Cargo.toml"
        );
    }
    // Control data: the conffile and the maintainer scripts.
    let conffiles = run_ok(
        Command::new("dpkg-deb")
            .arg("-I")
            .arg(deb())
            .arg("conffiles"),
    );
    assert_eq!(conffiles.trim(), "/etc/agentos/agentosd.toml");
    let info = run_ok(Command::new("dpkg-deb").arg("-I").arg(deb()));
    assert!(info.contains(&format!("Package: {PKG}")), "{info}");
    for script in ["postinst", "prerm", "postrm"] {
        let text = run_ok(Command::new("dpkg-deb").arg("-I").arg(deb()).arg(script));
        let ours =
            std::fs::read_to_string(repo().join("packaging/deb").join(script)).expect("our script");
        assert_eq!(text, ours, "{script} in the .deb is packaging/deb/{script}");
    }
}

#[test]
fn maintainer_scripts_are_valid_sh() {
    for script in [
        "packaging/deb/postinst",
        "packaging/deb/prerm",
        "packaging/deb/postrm",
        "packaging/rpm/post.sh",
        "packaging/rpm/preun.sh",
        "packaging/rpm/postun.sh",
    ] {
        let out = run(Command::new("sh").arg("-n").arg(repo().join(script)));
        assert!(out.status.success(), "{script}: sh -n failed");
        if script.starts_with("packaging/deb/") {
            let mode = std::fs::metadata(repo().join(script)).expect(script).mode();
            assert_eq!(mode & 0o111, 0o111, "{script} is executable");
        }
    }
}

/// Uncomments every `#key = ...` and `#[table]` line (the documented
/// settings with their example values), leaving prose comments alone.
fn uncomment_settings(text: &str) -> String {
    text.lines()
        .map(|l| {
            let rest = l.strip_prefix('#').unwrap_or("");
            let setting = rest
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '[');
            if setting { rest } else { l }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The configuration file documents only keys the daemon accepts, with its
/// real defaults: `agentosd --check-config` accepts it as shipped and with
/// the daemon settings uncommented, and the whole file uncommented (the
/// provider, model and scheduler examples too) parses and validates.
#[test]
fn shipped_config_is_accepted_by_the_daemon() {
    let shipped = repo().join("packaging/agentosd.toml");
    let check = |path: &Path| {
        run(Command::new(env!("CARGO_BIN_EXE_agentosd"))
            .arg("--check-config")
            .arg("--config")
            .arg(path)
            .arg("--policies")
            .arg(repo().join("policies"))
            .env_remove("AGENTOS_CONFIG"))
    };
    let out = check(&shipped);
    assert!(out.status.success(), "the shipped file is refused");
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));

    let text = std::fs::read_to_string(&shipped).expect("read");
    let (settings, _) = text
        .split_once("# --- LLM providers")
        .expect("the LLM section marker");
    let dir = out_dir().join("config");
    std::fs::create_dir_all(&dir).expect("dir");
    let daemon_settings = dir.join("daemon-settings.toml");
    std::fs::write(&daemon_settings, uncomment_settings(settings)).expect("write");
    let out = check(&daemon_settings);
    assert!(
        out.status.success(),
        "a documented daemon setting is refused"
    );

    let all = uncomment_settings(&text);
    assert!(all.contains("\n[[providers]]") && all.contains("\n[scheduler]"));
    let parsed = agentos::config::FileConfig::parse(&all, "agentosd.toml (uncommented)")
        .unwrap_or_else(|e| panic!("the documented examples do not validate: {e}"));
    // The documented values are the daemon's defaults.
    assert_eq!(
        parsed.state_dir.as_deref(),
        Some(Path::new("/var/lib/agentos"))
    );
    assert_eq!(
        parsed.socket.as_deref(),
        Some(Path::new(agentos::admin::protocol::DEFAULT_SOCKET))
    );
    assert_eq!(parsed.line_cap, Some(agentos::abi::wire::DEFAULT_LINE_CAP));
    assert_eq!(parsed.max_in_flight, Some(64));
    assert_eq!(parsed.log_bytes_per_agent, Some(16 << 20));
    assert_eq!(parsed.uid_range.as_deref(), Some("400000-499999"));
    assert_eq!(parsed.cgroup_name.as_deref(), Some("agentos"));
    assert_eq!(parsed.socket_mode.as_deref(), Some("0660"));
    assert_eq!(parsed.webhooks.listen, "off");
    assert_eq!(parsed.providers.len(), 1);
    assert_eq!(parsed.models.len(), 1);
}

/// Undoes what the install test did, whatever happened: purges the package
/// and removes what it left that was not there before.
struct Restore {
    group_existed: bool,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if dpkg_status().is_some() {
            let _ = Command::new("dpkg").args(["--purge", PKG]).status();
        }
        for dir in ["/var/lib/agentos", "/etc/agentos", "/run/agentos"] {
            let _ = std::fs::remove_dir_all(dir);
        }
        if !self.group_existed && group_exists("agentos") {
            let _ = Command::new("groupdel").arg("agentos").status();
        }
    }
}

fn group_exists(name: &str) -> bool {
    tool_works("getent", &["group", name])
}

/// dpkg's status line of the package, None when dpkg does not know it.
fn dpkg_status() -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", PKG])
        .output()
        .ok()?;
    let status = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !status.is_empty() && status != "unknown ok not-installed")
        .then_some(status)
}

fn exists(path: &str) -> bool {
    Path::new(path).symlink_metadata().is_ok()
}

const WANTS_LINK: &str = "/etc/systemd/system/multi-user.target.wants/agentosd.service";

/// dpkg -i, -r and -P, one after the other (one test: they share the
/// machine's package database).
#[test]
fn deb_installs_removes_and_purges() {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !deb_prerequisites() {
        return;
    }
    if let Some(status) = dpkg_status() {
        cannot_run(&format!(
            "package {PKG} is already known to dpkg ({status}); this test would remove it"
        ));
        return;
    }
    for dir in ["/var/lib/agentos", "/etc/agentos"] {
        if exists(dir) {
            cannot_run(&format!(
                "{dir} exists; purging the package would delete it"
            ));
            return;
        }
    }
    let deb = deb();
    let _restore = Restore {
        group_existed: group_exists("agentos"),
    };

    // Install.
    run_ok(Command::new("dpkg").arg("-i").arg(deb));
    assert_eq!(dpkg_status().as_deref(), Some("install ok installed"));
    for (path, mode) in EXPECTED {
        let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o7777, *mode, "{path} mode");
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{path} owner");
    }
    assert!(group_exists("agentos"), "the agentos group was created");
    // postinst applied the package's sysctl.d file (the machine is root's
    // own here: CI runs as root on a VM).
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap_or_default();
    assert_eq!(pid_max.trim(), "4194304", "postinst applies kernel.pid_max");
    for (dir, mode) in [
        ("/var/lib/agentos", 0o711),
        ("/etc/agentos", 0o755),
        ("/etc/agentos/credentials", 0o700),
    ] {
        let meta = std::fs::metadata(dir).unwrap_or_else(|e| panic!("{dir}: {e}"));
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o7777, mode, "{dir} mode");
    }
    // Enabled for the next boot (not started: systemd is not even running
    // here, and postinst never starts it).
    let link = std::fs::read_link(WANTS_LINK).expect("agentosd.service is enabled");
    assert!(link.ends_with("agentosd.service"), "{}", link.display());
    assert!(
        !exists("/run/agentos/agentosd.sock"),
        "the daemon was not started"
    );

    // The installed programs run, find the packaged policies and accept the
    // packaged configuration, and the installed unit verifies with the real
    // /usr/bin/agentosd.
    let ok = run_ok(
        Command::new("/usr/bin/agentosd")
            .arg("--check-config")
            .env_remove("AGENTOS_CONFIG"),
    );
    assert!(ok.contains("configuration OK"), "{ok}");
    run_ok(Command::new("/usr/bin/agentos").arg("--help"));
    if tool_works("systemd-analyze", &["--version"]) {
        let out = run(Command::new("systemd-analyze").args([
            "verify",
            "--man=no",
            "/usr/lib/systemd/system/agentosd.service",
        ]));
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "installed unit verifies cleanly"
        );
    } else if in_ci() {
        panic!("systemd-analyze is missing (package systemd)");
    }

    // State and an edited configuration that must survive "remove".
    std::fs::write("/var/lib/agentos/marker", "state").expect("marker");
    let mut conf = std::fs::read_to_string("/etc/agentos/agentosd.toml").expect("conf");
    conf.push_str("\nmax_in_flight = 32\n");
    std::fs::write("/etc/agentos/agentosd.toml", &conf).expect("edit conf");
    std::fs::write("/etc/agentos/credentials/openai-api-key", "sk-test").expect("key");

    // Remove: programs and unit gone; state, configuration, group kept.
    run_ok(Command::new("dpkg").args(["-r", PKG]));
    assert_eq!(dpkg_status().as_deref(), Some("deinstall ok config-files"));
    for gone in [
        "/usr/bin/agentosd",
        "/usr/bin/agentos",
        "/usr/libexec/agentos/agentos-launcher",
        "/usr/lib/systemd/system/agentosd.service",
        "/usr/share/agentos/policies/profiles/default.toml",
    ] {
        assert!(!exists(gone), "{gone} was removed");
    }
    assert_eq!(
        std::fs::read_to_string("/var/lib/agentos/marker")
            .ok()
            .as_deref(),
        Some("state"),
        "/var/lib/agentos is kept on remove"
    );
    assert_eq!(
        std::fs::read_to_string("/etc/agentos/agentosd.toml").ok(),
        Some(conf),
        "the edited conffile is kept on remove"
    );
    assert!(exists("/etc/agentos/credentials/openai-api-key"));
    assert!(group_exists("agentos"));

    // Purge: everything of the package is gone.
    run_ok(Command::new("dpkg").args(["-P", PKG]));
    assert_eq!(dpkg_status(), None, "dpkg forgot the package");
    for gone in ["/var/lib/agentos", "/etc/agentos", WANTS_LINK] {
        assert!(!exists(gone), "{gone} was purged");
    }
}

fn rpm_prerequisites() -> bool {
    if !deb_prerequisites() {
        return false;
    }
    for (tool, args) in [
        (cargo(), vec!["generate-rpm", "--version"]),
        ("rpm".to_string(), vec!["--version"]),
    ] {
        if !tool_works(&tool, &args) {
            return cannot_run(&format!(
                "`{tool} {}` does not run (.ci/run installs cargo-generate-rpm and rpm)",
                args.join(" ")
            ));
        }
    }
    true
}

#[test]
fn rpm_holds_every_file_and_the_scriptlets() {
    if !rpm_prerequisites() {
        return;
    }
    // The .deb build made the release binaries the .rpm packages.
    let _ = deb();
    let rpm = out_dir().join("agentos.rpm");
    let _ = std::fs::remove_file(&rpm);
    run_ok(
        Command::new(cargo())
            .current_dir(repo())
            .args(["generate-rpm", "--output"])
            .arg(&rpm),
    );
    let files = run_ok(Command::new("rpm").arg("-qpl").arg(&rpm));
    let listed: Vec<&str> = files.lines().collect();
    for (path, _) in EXPECTED {
        assert!(
            listed.contains(path),
            "{path} is not in the .rpm: {listed:?}"
        );
    }
    for bin in expected_binaries() {
        assert!(
            listed.contains(&bin.as_str()),
            "binary target {bin} is not in the .rpm"
        );
    }
    // Modes: "path size mtime digest mode owner group ..." per file.
    let dump = run_ok(Command::new("rpm").args(["-qp", "--dump"]).arg(&rpm));
    for (path, mode) in EXPECTED {
        let line = dump
            .lines()
            .find(|l| l.split_whitespace().next() == Some(path))
            .unwrap_or_else(|| panic!("{path} not in --dump"));
        let file_mode = line.split_whitespace().nth(4).expect("mode field");
        let file_mode = u32::from_str_radix(file_mode, 8).expect("octal mode");
        assert_eq!(file_mode & 0o7777, *mode, "{path} mode in the .rpm");
    }
    let config = run_ok(Command::new("rpm").arg("-qpc").arg(&rpm));
    assert_eq!(config.trim(), "/etc/agentos/agentosd.toml");
    let scripts = run_ok(Command::new("rpm").args(["-qp", "--scripts"]).arg(&rpm));
    for (section, file) in [
        ("postinstall scriptlet", "packaging/rpm/post.sh"),
        ("preuninstall scriptlet", "packaging/rpm/preun.sh"),
        ("postuninstall scriptlet", "packaging/rpm/postun.sh"),
    ] {
        assert!(scripts.contains(section), "{section} missing:\n{scripts}");
        let body = std::fs::read_to_string(repo().join(file)).expect(file);
        assert!(
            scripts.contains(body.trim()),
            "{file} is not the {section}:\n{scripts}"
        );
    }
}
