//! Confinement, tested from the inside: the probe runs as an agent, tries
//! every escape it knows and reports over fd 3 which ones held.

mod common;

use agentos::admin::protocol::{AdminRequest, SpawnRequest};
use common::{Daemon, probe, require_root};
use std::time::Duration;

#[test]
fn probe_finds_every_escape_closed() {
    if !require_root("probe_finds_every_escape_closed") {
        return;
    }
    let d = Daemon::start();
    // A neighbour whose process and workspace the probe tries to reach.
    let victim = d.spawn_probe("victim", &["echo"], &["ipc"]);
    let victim_pcb = d.running(victim.pid);
    let host_pid = victim_pcb.host_pid.expect("host pid").to_string();
    let victim_ws = d.workspace(victim.pid).display().to_string();
    let socket = d.socket.display().to_string();
    let prober = d.spawn_probe(
        "prober",
        &[
            "confine",
            "--other-pid",
            &host_pid,
            "--other-workspace",
            &victim_ws,
            "--admin-socket",
            &socket,
            "--forbidden",
            &d.state_dir().display().to_string(),
        ],
        &["fs"],
    );
    let exit = d.wait(prober.pid, Duration::from_secs(60));
    let report = d.report(prober.pid);
    let checks = report["checks"].as_array().cloned().unwrap_or_default();
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| c["ok"].as_bool() != Some(true))
        .map(|c| format!("{}: {}", c["name"], c["detail"]))
        .collect();
    assert!(
        failed.is_empty(),
        "confinement checks failed from inside:\n{}\nagent log:\n{}",
        failed.join("\n"),
        d.logs(prober.pid)
    );
    assert!(
        checks.len() >= 20,
        "the probe ran only {} checks: {report}",
        checks.len()
    );
    assert_eq!(report["all_ok"], true);
    assert_eq!(exit.code, 0, "{exit:?}");

    // The probe's identity is the one the PCB records, and not root.
    let pcb = d.inspect(prober.pid);
    assert!(
        pcb.uid >= d.uid_range.0 && pcb.uid <= d.uid_range.1,
        "{pcb:?}"
    );
    assert_ne!(pcb.uid, victim_pcb.uid, "two live agents share a uid");
    // The neighbour survived the probe's attempts to signal it.
    assert!(
        d.inspect(victim.pid).is_live(),
        "victim died:\n{}",
        d.logs(victim.pid)
    );
}

#[test]
fn workspaces_are_private_to_their_agent() {
    if !require_root("workspaces_are_private_to_their_agent") {
        return;
    }
    let d = Daemon::start();
    let a = d.spawn_probe("a", &["sleep", "30000"], &[]);
    let meta = std::fs::metadata(d.workspace(a.pid)).expect("workspace");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(meta.uid(), a.uid);
    assert_eq!(meta.gid(), a.gid);
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    d.call(AdminRequest::Kill { pid: a.pid }).expect("kill");
}

/// Writes to `dir` a copy of the shipped policies' `agent` seccomp filter
/// and their default profile with `old` replaced by `new`.
fn policies_with_default(dir: &std::path::Path, old: &str, new: &str) {
    std::fs::create_dir_all(dir.join("profiles")).expect("mkdir");
    std::fs::create_dir_all(dir.join("seccomp")).expect("mkdir");
    let repo = common::repo().join("policies");
    std::fs::copy(
        repo.join("seccomp/agent.json"),
        dir.join("seccomp/agent.json"),
    )
    .expect("copy");
    let profile = std::fs::read_to_string(repo.join("profiles/default.toml")).expect("profile");
    assert!(
        profile.contains(old),
        "default profile no longer says {old}"
    );
    std::fs::write(dir.join("profiles/default.toml"), profile.replace(old, new)).expect("write");
}

#[test]
fn a_profile_the_kernel_cannot_enforce_is_refused() {
    if !require_root("a_profile_the_kernel_cannot_enforce_is_refused") {
        return;
    }
    // A copy of the shipped policies whose profile demands Landlock ABI 10,
    // newer than any kernel this runs on: the agent must not start at all.
    let kernel_abi = agentos::sandbox::features::landlock_abi();
    assert!(
        kernel_abi >= 3,
        "this host lacks Landlock ABI 3 (has {kernel_abi})"
    );
    if kernel_abi >= 10 {
        eprintln!("kernel has Landlock ABI {kernel_abi}; nothing newer to demand");
        return;
    }
    let dir = std::env::temp_dir().join(format!("agentos-policies-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    policies_with_default(&dir, "min_abi = 3", "min_abi = 10");

    let d = Daemon::start_with(&["--policies", &dir.display().to_string()]);
    let err = d
        .call(AdminRequest::Spawn(Box::new(SpawnRequest {
            name: "never".into(),
            program: probe().display().to_string(),
            args: vec!["exit".into(), "0".into()],
            ..Default::default()
        })))
        .expect_err("spawn must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("landlock"),
        "error should name the landlock step: {msg}"
    );
    let pcb = d.inspect(1);
    assert!(!pcb.is_live());
    assert!(pcb.exit.expect("exit").reason.contains("landlock"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The namespaces of a process, as `net:[4026...]` strings.
fn namespaces_of(host_pid: i32) -> Vec<String> {
    ["net", "mnt", "pid", "ipc", "uts", "cgroup"]
        .iter()
        .map(|ns| {
            std::fs::read_link(format!("/proc/{host_pid}/ns/{ns}"))
                .map(|l| l.display().to_string())
                .unwrap_or_else(|e| panic!("/proc/{host_pid}/ns/{ns}: {e}"))
        })
        .collect()
}

#[test]
fn every_agent_has_namespaces_of_its_own() {
    if !require_root("every_agent_has_namespaces_of_its_own") {
        return;
    }
    // More agents than the launcher keeps network namespaces ready, spawned
    // back to back: pooled or made on the spot, none may be shared.
    let d = Daemon::start();
    let mut seen = vec![namespaces_of(std::process::id() as i32)];
    for i in 0..8 {
        let a = d.spawn_probe(&format!("ns{i}"), &["sleep", "30000"], &[]);
        let host_pid = common::eventually(Duration::from_secs(5), || d.inspect(a.pid).host_pid)
            .expect("agent runs");
        let mine = namespaces_of(host_pid);
        for other in &seen {
            for (ns, theirs) in mine.iter().zip(other) {
                assert_ne!(ns, theirs, "agent {} shares a namespace", a.pid);
            }
        }
        seen.push(mine);
    }
}

#[test]
fn mount_points_are_made_beneath_the_new_root() {
    if !require_root("mount_points_are_made_beneath_the_new_root") {
        return;
    }
    // A profile that binds an absolute host symlink (recreated as a symlink
    // under the new root, still naming a host path), and a spawn that binds
    // a file beneath it. Before pivot_root, a path followed through that
    // symlink is a host path: the mount point must be resolved beneath the
    // new root instead, where the symlink leads nowhere, so the spawn is
    // refused, naming the step, and nothing on the host changes.
    // Not under /tmp: the sandbox's private /tmp would hide the symlink.
    let base = std::path::PathBuf::from(format!("/var/tmp/agentos-mp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    struct RemoveOnDrop(std::path::PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = RemoveOnDrop(base.clone());
    let victim = base.join("victim");
    std::fs::create_dir_all(&victim).expect("mkdir");
    std::fs::write(victim.join("file"), "host file\n").expect("write");
    let link = base.join("lnk");
    std::os::unix::fs::symlink(&victim, &link).expect("symlink");

    let dir = base.join("policies");
    policies_with_default(
        &dir,
        r#"ro_binds = ["/usr", "/bin","#,
        &format!(r#"ro_binds = ["{}", "/usr", "/bin","#, link.display()),
    );

    let d = Daemon::start_with(&["--policies", &dir.display().to_string()]);
    let err = d
        .call(AdminRequest::Spawn(Box::new(SpawnRequest {
            name: "beneath".into(),
            program: probe().display().to_string(),
            args: vec!["exit".into(), "0".into()],
            ro: vec![link.join("file").display().to_string()],
            ..Default::default()
        })))
        .expect_err("a mount point through a host symlink must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains("mount point"),
        "error should name the step: {msg}"
    );
    let entries: Vec<_> = std::fs::read_dir(&victim)
        .expect("victim")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("file")]);
    assert_eq!(
        std::fs::read_to_string(victim.join("file")).expect("read"),
        "host file\n"
    );

    // The same profile without the bind beneath the link works.
    let ok = d.spawn_probe("fine", &["exit", "0"], &[]);
    let exit = d.wait(ok.pid, Duration::from_secs(30));
    assert_eq!(exit.code, 0, "{exit:?}");
}

#[test]
fn the_table_names_each_agents_process_and_it_verifies_as_itself() {
    if !require_root("the_table_names_each_agents_process_and_it_verifies_as_itself") {
        return;
    }
    use agentos::sandbox::pidfd::{
        NotTheAgent, RecordedAgent, cgroup_paths, start_time, verify_agent,
    };
    // Signals and a later re-adoption trust a recorded pid only together
    // with its start time, and only while it is confined as launched.
    let d = Daemon::start();
    let a = d.spawn_probe("named", &["sleep", "30000"], &[]);
    let pcb = d.running(a.pid);
    let pid = pcb.host_pid.expect("host pid");
    let start = start_time(pid).expect("its /proc/<pid>/stat");
    assert_eq!(pcb.host_start, Some(start), "recorded for pid {pid}");

    let leaf = cgroup_paths(pid)
        .into_iter()
        .find(|p| !p.is_empty())
        .expect("a cgroup below the root");
    let dir = std::path::Path::new("/sys/fs/cgroup").join(leaf);
    let recorded = RecordedAgent {
        pid,
        start,
        uid: pcb.uid,
        gid: pcb.gid,
        cgroup_dir: &dir,
    };
    // The agent as the table recorded it: confined as launched.
    if let Err(e) = verify_agent(&recorded) {
        panic!("agent {} refused: {e}", a.pid);
    }
    // Another uid, or the same pid with another start time, is not it.
    let other_uid = RecordedAgent {
        uid: pcb.uid + 1,
        ..recorded
    };
    assert!(
        matches!(verify_agent(&other_uid), Err(NotTheAgent::Unconfined { ref what, .. }) if what.starts_with("Uid")),
        "another uid accepted"
    );
    let replaced = RecordedAgent {
        start: start + 1,
        ..recorded
    };
    assert!(matches!(
        verify_agent(&replaced),
        Err(NotTheAgent::Replaced { .. })
    ));

    d.call(AdminRequest::Kill { pid: a.pid }).expect("kill");
    d.wait(a.pid, Duration::from_secs(10));
    let ended = d.inspect(a.pid);
    assert_eq!(
        (ended.host_pid, ended.host_start),
        (None, None),
        "an ended agent names no process"
    );
    assert!(matches!(
        verify_agent(&recorded),
        Err(NotTheAgent::Gone { .. } | NotTheAgent::Replaced { .. })
    ));
}
