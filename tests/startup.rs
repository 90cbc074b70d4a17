//! Starting the daemon: a start-up failure names the part that failed
//! (not the state directory when it is a provider), and the webhook
//! listener starts only when `[webhooks] listen` names an address.

mod common;

use common::{Daemon, repo, require_root};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn a_broken_provider_script_is_named_at_start() {
    if !require_root("a_broken_provider_script_is_named_at_start") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("agentos-startup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let script = dir.join("no-such-script.json");
    let config = dir.join("agentosd.toml");
    std::fs::write(
        &config,
        format!(
            "[[providers]]\nname = \"replay\"\nkind = \"scripted\"\nscript = \"{}\"\n",
            script.display()
        ),
    )
    .expect("config");
    let cgroup = format!("agentos-startup-{}", std::process::id());
    let out = Command::new(env!("CARGO_BIN_EXE_agentosd"))
        .arg("--config")
        .arg(&config)
        .arg("--policies")
        .arg(repo().join("policies"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(dir.join("agentosd.sock"))
        .arg("--launcher")
        .arg(env!("CARGO_BIN_EXE_agentos-launcher"))
        .arg("--cgroup-name")
        .arg(&cgroup)
        .arg("--uid-range")
        .arg("690000-690099")
        .stdin(Stdio::null())
        .output()
        .expect("run agentosd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started with a missing script:\n{stderr}"
    );
    assert!(
        stderr.contains("replay") && stderr.contains("no-such-script.json"),
        "the error does not name the provider and its script:\n{stderr}"
    );
    assert!(
        !stderr.contains("opening the state directory"),
        "a provider error blamed on the state directory:\n{stderr}"
    );
    // Refused before it changed the host: no workspace image is mounted.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let leaked = mounts
        .lines()
        .any(|l| l.contains(&dir.display().to_string()));
    if leaked {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(dir.join("state/workspaces"))
            .status();
    }
    assert!(
        !leaked,
        "a refused start left a mount below {}",
        dir.display()
    );
    remove_cgroups(&cgroup);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_webhook_listener_is_off_unless_configured() {
    if !require_root("the_webhook_listener_is_off_unless_configured") {
        return;
    }
    // A [webhooks] section without `listen`: the harness passes no
    // --webhooks-listen, so the daemon's own default applies.
    let dir = std::env::temp_dir().join(format!("agentos-startup-wh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("agentosd.toml");
    std::fs::write(&config, "[webhooks]\nreply_timeout_s = 5\n").expect("config");
    let d = Daemon::start_with(&["--config", &config.display().to_string()]);
    let log = common::eventually(Duration::from_secs(10), || {
        let log = d.log();
        log.contains("agentosd ready").then_some(log)
    })
    .expect("the daemon is ready");
    assert!(log.contains("webhook listener disabled"), "{log}");
    assert!(!log.contains("webhook listener ready"), "{log}");
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Removes the cgroup directories a failed start left.
fn remove_cgroups(name: &str) {
    let mut stack = vec![(std::path::PathBuf::from("/sys/fs/cgroup"), 0)];
    let mut found = Vec::new();
    while let Some((dir, depth)) = stack.pop() {
        if depth > 6 {
            continue;
        }
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let n = e.file_name().to_string_lossy().into_owned();
            if n == name || n == format!("{name}.supervisor") {
                found.push(e.path());
            } else if !n.starts_with("agent-") {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    for d in found {
        for c in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if c.path().is_dir() {
                let _ = std::fs::remove_dir(c.path());
            }
        }
        let _ = std::fs::remove_dir(&d);
    }
}

#[test]
fn the_daemon_runs_under_its_own_memory_bound() {
    if !require_root("the_daemon_runs_under_its_own_memory_bound") {
        return;
    }
    // The test daemon's uid range holds 200 uids: the default bound is
    // 256 MiB + 64 KiB × 200, in a cgroup of the daemon's own that no agent
    // shares.
    let d = Daemon::start();
    let expected = agentos::sandbox::daemon_memory::default_max(200);
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", d.pid())).expect("cgroup");
    let (file, dir) = match cgroups.lines().find_map(|l| l.split_once(":memory:")) {
        Some((_, path)) => (
            "memory.limit_in_bytes",
            format!("/sys/fs/cgroup/memory{path}"),
        ),
        None => {
            let path = cgroups
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .expect("a cgroup v2 line");
            ("memory.max", format!("/sys/fs/cgroup{path}"))
        }
    };
    assert!(
        dir.ends_with(&format!("{}.supervisor", d.cgroup_name)),
        "the daemon is not in its own cgroup: {dir}"
    );
    let limit: u64 = std::fs::read_to_string(format!("{dir}/{file}"))
        .expect("limit")
        .trim()
        .parse()
        .expect("a number");
    // v1 rounds the limit down to whole pages.
    assert!(
        limit <= expected && expected - limit < 4096,
        "{dir}/{file} = {limit}, expected {expected}"
    );
    // An agent is not inside it.
    let a = d.spawn_probe("beside", &["sleep", "30000"], &[]);
    let host_pid = common::eventually(Duration::from_secs(5), || d.inspect(a.pid).host_pid)
        .expect("agent runs");
    let agent_cg = std::fs::read_to_string(format!("/proc/{host_pid}/cgroup")).expect("cgroup");
    assert!(!agent_cg.contains(".supervisor"), "{agent_cg}");
}

#[test]
fn the_daemon_outweighs_its_agents_for_cpu() {
    if !require_root("the_daemon_outweighs_its_agents_for_cpu") {
        return;
    }
    let d = Daemon::start();
    let ratio = agentos::sandbox::daemon_cpu::RATIO;
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", d.pid())).expect("cgroup");
    let v1 = cgroups.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        ctrls
            .split(',')
            .any(|c| c == "cpu")
            .then(|| path.to_string())
    });
    let (file, dir, default) = match v1 {
        Some(path) => ("cpu.shares", format!("/sys/fs/cgroup/cpu{path}"), 1024),
        None => {
            let path = cgroups
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .expect("a cgroup v2 line");
            ("cpu.weight", format!("/sys/fs/cgroup{path}"), 100)
        }
    };
    let read = |p: &str| -> u64 {
        std::fs::read_to_string(p)
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .trim()
            .parse()
            .expect("a number")
    };
    assert!(
        dir.ends_with(&format!("{}.supervisor", d.cgroup_name)),
        "the daemon is not in a cpu cgroup of its own: {dir}"
    );
    assert_eq!(
        read(&format!("{dir}/{file}")),
        ratio * default,
        "{dir}/{file}"
    );
    // Its agents, all together, weigh the default beside it.
    let agents = dir.trim_end_matches(".supervisor");
    assert_eq!(
        read(&format!("{agents}/{file}")),
        default,
        "{agents}/{file}"
    );
    let a = d.spawn_probe("weighed", &["sleep", "30000"], &[]);
    let host_pid = common::eventually(Duration::from_secs(5), || d.inspect(a.pid).host_pid)
        .expect("agent runs");
    let agent_cg = std::fs::read_to_string(format!("/proc/{host_pid}/cgroup")).expect("cgroup");
    let leaf = std::path::Path::new(agents).file_name().expect("name");
    assert!(
        agent_cg.contains(&format!("/{}/agent-", leaf.to_string_lossy()))
            && !agent_cg.contains(".supervisor"),
        "{agent_cg}"
    );
}
