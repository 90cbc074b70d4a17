//! Admin socket authorisation from peer credentials: the socket is opened to
//! a group (`--socket-mode 660 --socket-group 4242`), and the real `agentos`
//! CLI is run as an unprivileged member of that group. Root manages every
//! agent; the member sees and manages only the agents it spawned, may not
//! spawn beyond the profile, and a user outside the group cannot connect.

mod common;

use agentos::admin::protocol::{AdminRequest, SpawnRequest};
use agentos::kernel::ipc::Message;
use agentos::kernel::pcb::{Pcb, State};
use common::{CliOut as Out, Daemon, cli_as};
use serde_json::Value;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;

/// The socket's group (no real group uses it).
const GROUP: u32 = 4242;
/// An unprivileged member of GROUP (no passwd entry needed).
const USER: u32 = 4343;
/// An unprivileged user outside GROUP.
const STRANGER: u32 = 4444;

fn start() -> Daemon {
    let d = Daemon::start_with(&["--socket-mode", "660", "--socket-group", "4242"]);
    std::fs::set_permissions(&d.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    d
}

fn user(d: &Daemon, args: &[&str]) -> Out {
    cli_as(d, USER, GROUP, args)
}

fn root_sleeper(d: &Daemon, name: &str) -> Pcb {
    d.spawn(SpawnRequest {
        name: name.into(),
        program: "/usr/bin/sleep".into(),
        args: vec!["300".into()],
        ..Default::default()
    })
}

fn root_ps(d: &Daemon) -> Vec<Pcb> {
    serde_json::from_value(d.call(AdminRequest::Ps).expect("ps")).expect("pcbs")
}

fn pids_of(list: &Value) -> Vec<u64> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|p| p["pid"].as_u64().expect("pid"))
        .collect()
}

/// Asserts that the CLI was refused with EACCES (exit 1) and says `why`.
fn assert_denied(d: &Daemon, what: &str, out: &Out, why: &str) {
    assert_eq!(out.code, 1, "{what}: {out}\n{}", d.log());
    assert!(
        out.stderr.contains("EACCES") && out.stderr.contains(why),
        "{what}: expected EACCES mentioning {why:?}: {out}\n{}",
        d.log()
    );
}

#[test]
fn another_users_agent_is_invisible_and_untouchable() {
    if !common::require_root("another_users_agent_is_invisible_and_untouchable") {
        return;
    }
    let d = start();
    let theirs = root_sleeper(&d, "roots-agent");
    let before = d.inspect(theirs.pid);
    assert_eq!(before.state, State::Running, "{before:?}\n{}", d.log());
    assert_eq!(before.owner, 0);

    for args in [&["ps"][..], &["ps", "--all"], &["tree", "--all"]] {
        let out = user(&d, args);
        assert_eq!(out.code, 0, "{args:?}: {out}\n{}", d.log());
        assert!(
            !pids_of(&out.json()).contains(&theirs.pid),
            "{args:?} as uid {USER} lists root's agent {}: {out}",
            theirs.pid
        );
    }

    let pid = theirs.pid.to_string();
    let p = pid.as_str();
    let denied: [&[&str]; 9] = [
        &["inspect", p],
        &["logs", p],
        &["logs", "--follow", p],
        &["inbox", p],
        &["stop", p],
        &["kill", p],
        &["send", p, "from a stranger"],
        &["cont", p],
        &["wait", "--timeout", "1", p],
    ];
    for args in denied {
        let out = user(&d, args);
        assert_denied(&d, &format!("{args:?}"), &out, "belongs to another user");
        assert!(
            out.stdout.trim().is_empty(),
            "{args:?} printed something: {out}"
        );
    }

    // Nothing changed: same PCB, process alive, inbox empty.
    let after = d.inspect(theirs.pid);
    assert_eq!(after.state, State::Running, "{after:?}\n{}", d.log());
    assert_eq!(after, before, "root's agent changed\n{}", d.log());
    let host = after.host_pid.expect("host pid");
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(host), None).is_ok(),
        "host process {host} of root's agent is gone"
    );
    assert_eq!(d.inbox(theirs.pid), Vec::<Message>::new(), "{}", d.log());
    // The refusals were audited.
    let audited = d.log().matches("admin request denied").count();
    assert!(
        audited >= denied.len() - 1,
        "only {audited} audited refusals\n{}",
        d.log()
    );
}

#[test]
fn a_group_member_manages_its_own_agents() {
    if !common::require_root("a_group_member_manages_its_own_agents") {
        return;
    }
    let d = start();
    let roots = root_sleeper(&d, "roots-agent");

    let out = user(
        &d,
        &[
            "spawn",
            "--name",
            "mine",
            "--program",
            "/usr/bin/sleep",
            "--",
            "300",
        ],
    );
    assert_eq!(out.code, 0, "spawn as uid {USER}: {out}\n{}", d.log());
    let mine: Pcb = serde_json::from_value(out.json()).expect("pcb");
    assert_eq!(mine.owner, USER, "{mine:?}");
    assert_eq!(mine.state, State::Running, "{mine:?}\n{}", d.log());
    assert!(
        (d.uid_range.0..=d.uid_range.1).contains(&mine.uid),
        "agent uid {} outside the daemon's range",
        mine.uid
    );
    let pid = mine.pid.to_string();
    let p = pid.as_str();

    let ps = user(&d, &["ps"]);
    assert_eq!(ps.code, 0, "{ps}");
    let listed: Vec<Pcb> = serde_json::from_value(ps.json()).expect("pcbs");
    assert_eq!(
        listed.iter().map(|x| (x.pid, x.owner)).collect::<Vec<_>>(),
        vec![(mine.pid, USER)],
        "ps as uid {USER}: {ps}"
    );

    let out = user(&d, &["inspect", p]);
    assert_eq!(out.code, 0, "{out}\n{}", d.log());
    assert_eq!(out.json()["pid"], mine.pid, "{out}");

    let out = user(&d, &["stop", p]);
    assert_eq!(out.code, 0, "{out}\n{}", d.log());
    assert_eq!(out.json()["state"], "STOPPED", "{out}");
    assert_eq!(d.inspect(mine.pid).state, State::Stopped, "{}", d.log());

    let out = user(&d, &["cont", p]);
    assert_eq!(out.code, 0, "{out}\n{}", d.log());
    assert_eq!(out.json()["state"], "RUNNING", "{out}");
    assert_eq!(d.inspect(mine.pid).state, State::Running, "{}", d.log());

    let out = user(&d, &["send", p, "hello from 4343"]);
    assert_eq!(out.code, 0, "{out}\n{}", d.log());
    let seq = out.json()["seq"].as_u64().expect("seq");
    let out = user(&d, &["inbox", p]);
    assert_eq!(out.code, 0, "{out}\n{}", d.log());
    let msgs: Vec<Message> = serde_json::from_value(out.json()).expect("messages");
    assert_eq!(msgs.len(), 1, "{out}");
    assert_eq!(
        (
            msgs[0].seq,
            msgs[0].from,
            msgs[0].from_uid,
            msgs[0].body.as_str()
        ),
        (seq, 0, Some(USER), "hello from 4343"),
        "{out}"
    );

    let out = user(&d, &["logs", p]);
    assert_eq!(out.code, 0, "{out}\n{}", d.log());
    // Authorised, but the agent is still running: a timeout, not EACCES.
    let out = user(&d, &["wait", "--timeout", "1", p]);
    assert!(
        out.code == 1 && out.stderr.contains("ETIMEDOUT"),
        "wait on own running agent: {out}"
    );

    let out = user(&d, &["kill", p]);
    assert_eq!(out.code, 0, "{out}\n{}", d.log());
    assert_eq!(d.inspect(mine.pid).state, State::Terminated, "{}", d.log());
    let out = user(&d, &["wait", p]);
    assert_eq!(
        out.code,
        out.json()["exit"]["code"].as_i64().expect("code") as i32
    );

    // Root sees both, with their owners; root's agent was not touched.
    let all = root_ps(&d);
    let owners: Vec<(u64, u32)> = all.iter().map(|x| (x.pid, x.owner)).collect();
    assert!(
        owners.contains(&(roots.pid, 0)) && owners.contains(&(mine.pid, USER)),
        "root's ps: {owners:?}"
    );
    assert_eq!(d.inspect(roots.pid).state, State::Running);
}

#[test]
fn a_group_member_cannot_spawn_beyond_the_profile() {
    if !common::require_root("a_group_member_cannot_spawn_beyond_the_profile") {
        return;
    }
    let d = start();
    let roots = root_sleeper(&d, "roots-agent");
    let spawn = |extra: &[&str], program: &str| {
        let mut args = vec!["spawn", "--name", "probe"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--program", program, "--", "300"]);
        user(&d, &args)
    };
    let sleep = "/usr/bin/sleep";

    // A permission the profile does not grant.
    let out = spawn(&["--profile", "restricted", "--allow", "process"], sleep);
    assert_denied(&d, "--allow process", &out, "beyond profile");
    // A limit above the profile's.
    let out = spawn(&["--memory", "100G"], sleep);
    assert_denied(&d, "--memory 100G", &out, "memory_bytes");
    // A program the user cannot read: a root-only copy of true.
    let private = d.dir.join("private-true");
    std::fs::copy("/usr/bin/true", &private).expect("copy true");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let out = spawn(&[], &private.display().to_string());
    assert_denied(&d, "0700 root program", &out, "as uid 4343");
    // A read-only bind the user cannot read.
    let secret = d.dir.join("secret");
    std::fs::write(&secret, "root only").expect("secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = spawn(&["--ro", &secret.display().to_string()], sleep);
    assert_denied(&d, "--ro of a 0600 root file", &out, "as uid 4343");
    // A pipe into root's agent.
    let roots_pid = roots.pid.to_string();
    let out = spawn(&["--pipe-to", &roots_pid], sleep);
    assert_denied(&d, "--pipe-to root's agent", &out, "another user");

    // None of the refused requests created an agent.
    let all = root_ps(&d);
    assert_eq!(
        all.iter().map(|p| p.pid).collect::<Vec<_>>(),
        vec![roots.pid],
        "{all:?}\n{}",
        d.log()
    );

    // Controls: the same requests within the profile are granted.
    let out = spawn(&["--profile", "restricted", "--allow", "SEND_MSG"], sleep);
    assert_eq!(
        out.code,
        0,
        "within the restricted profile: {out}\n{}",
        d.log()
    );
    let within: Pcb = serde_json::from_value(out.json()).expect("pcb");
    assert_eq!(within.profile, "restricted");
    let out = spawn(&["--memory", "64M"], sleep);
    assert_eq!(out.code, 0, "--memory 64M: {out}\n{}", d.log());
    let small: Pcb = serde_json::from_value(out.json()).expect("pcb");
    assert_eq!(small.limits.memory_bytes, 64 << 20);
    for p in [within.pid, small.pid] {
        let out = user(&d, &["kill", &p.to_string()]);
        assert_eq!(out.code, 0, "{out}");
    }
}

#[test]
fn a_user_outside_the_socket_group_cannot_connect() {
    if !common::require_root("a_user_outside_the_socket_group_cannot_connect") {
        return;
    }
    let d = start();
    for args in [&["ps"][..], &["status"]] {
        let out = cli_as(&d, STRANGER, STRANGER, args);
        assert_eq!(
            out.code,
            3,
            "{args:?} as {STRANGER}:{STRANGER}: {out}\n{}",
            d.log()
        );
        assert!(
            out.stderr.contains("cannot connect") && out.stderr.contains("Permission denied"),
            "{out}"
        );
    }
    // The member of the group can.
    let out = user(&d, &["status"]);
    assert_eq!(out.code, 0, "{out}\n{}", d.log());
}

#[test]
fn the_socket_has_the_configured_mode_and_group() {
    if !common::require_root("the_socket_has_the_configured_mode_and_group") {
        return;
    }
    let d = start();
    let meta = std::fs::symlink_metadata(&d.socket).expect("stat socket");
    assert!(meta.file_type().is_socket(), "{meta:?}");
    assert_eq!(meta.mode() & 0o7777, 0o660, "mode {:o}", meta.mode());
    assert_eq!((meta.uid(), meta.gid()), (0, GROUP));
    // No staging directory is left behind next to it.
    let leftovers: Vec<String> = std::fs::read_dir(&d.dir)
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".agentosd-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Regression: `--ro` used to be checked by path and bound by path later, so
/// a user swapping a symlink in between could bind a file it cannot read.
/// Binds are now opened once with the user's permissions and bound from
/// that descriptor.
#[test]
fn a_swapped_symlink_cannot_smuggle_a_private_file_into_a_bind() {
    if !common::require_root("a_swapped_symlink_cannot_smuggle_a_private_file_into_a_bind") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let d = Daemon::start_with(&["--socket-mode", "660", "--socket-group", "4242"]);
    std::fs::set_permissions(&d.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // /var/tmp, not /tmp: the sandbox's private /tmp would hide the bind.
    let base = std::path::PathBuf::from(format!("/var/tmp/agentos-toctou-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    for (dir, mode) in [("", 0o755), ("pub", 0o755), ("priv", 0o700), ("u", 0o755)] {
        std::fs::create_dir_all(base.join(dir)).expect("mkdir");
        std::fs::set_permissions(base.join(dir), std::fs::Permissions::from_mode(mode))
            .expect("chmod");
    }
    std::os::unix::fs::chown(base.join("u"), Some(4343), Some(4242)).expect("chown");
    for (f, text) in [
        ("pub/secret.txt", "public\n"),
        ("priv/secret.txt", "TOPSECRET\n"),
    ] {
        std::fs::write(base.join(f), text).expect("write");
        std::fs::set_permissions(base.join(f), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
    }
    let link = base.join("u/d");
    std::os::unix::fs::symlink(base.join("pub"), &link).expect("symlink");
    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let stop = stop.clone();
        let base = base.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let tmp = base.join("u/tmp");
                let to = if n % 2 == 0 {
                    base.join("priv")
                } else {
                    base.join("pub")
                };
                let _ = std::fs::remove_file(&tmp);
                if std::os::unix::fs::symlink(&to, &tmp).is_ok() {
                    let _ = std::fs::rename(&tmp, base.join("u/d"));
                }
                n += 1;
            }
        })
    };
    let path = link.join("secret.txt").display().to_string();
    let (mut leaked, mut public) = (0, 0);
    for i in 0..30 {
        let out = std::process::Command::new(common::cli_for_others())
            .arg("--socket")
            .arg(&d.socket)
            .arg("--json")
            .args([
                "spawn",
                "--name",
                &format!("t{i}"),
                "--ro",
                &path,
                "--program",
                "/usr/bin/cat",
                "--",
                &path,
            ])
            .uid(4343)
            .gid(4242)
            .output()
            .expect("run agentos");
        if !out.status.success() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let pid = v["pid"].as_u64().expect("pid");
        d.wait(pid, std::time::Duration::from_secs(10));
        let logs = d.logs(pid);
        if logs.contains("TOPSECRET") {
            leaked += 1;
        }
        if logs.contains("public") {
            public += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = racer.join();
    let _ = std::fs::remove_dir_all(&base);
    assert_eq!(
        leaked, 0,
        "a private file was bound into {leaked} sandboxes"
    );
    assert!(
        public > 0,
        "no spawn got through at all; the race was not exercised"
    );
}
