//! The `agentos` CLI against a real daemon: tables for people, `--json` for
//! scripts, `logs -f` following live, exit codes scripts can rely on.

mod common;

use common::{Daemon, agentos, repo, require_root};
use std::process::{Command, Output};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "agentos failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("json output")
}

#[test]
fn cli_manages_an_agent_end_to_end() {
    if !require_root("cli_manages_an_agent_end_to_end") {
        return;
    }
    let d = Daemon::start();
    let agents = repo().join("tests/agents");
    let script = agents.join("syscalls_agent.py").display().to_string();
    let ro = agents.display().to_string();

    let spawned = json(&agentos(
        &d,
        &[
            "--json",
            "spawn",
            "--name",
            "talker",
            "--program",
            "/usr/bin/python3",
            "--ro",
            &ro,
            "--allow",
            "none",
            "--",
            &script,
            "stdout_lines",
        ],
    ));
    let pid = spawned["pid"]
        .as_u64()
        .expect("spawn --json prints the pid");
    let pid_s = pid.to_string();
    assert_eq!(spawned["name"], "talker");
    assert_eq!(spawned["permissions"], serde_json::json!([]));

    // logs -f follows until the agent ends and shows both streams.
    let follow = agentos(&d, &["logs", "-f", &pid_s]);
    let text = stdout(&follow);
    assert!(follow.status.success());
    for want in [
        "stdout  hello on stdout",
        "stderr  hello on stderr",
        "stdout  after a second",
        "TERMINATED",
    ] {
        assert!(text.contains(want), "logs -f lacks {want:?}:\n{text}");
    }

    // wait exits with the agent's own code; --json carries the status.
    let w = agentos(&d, &["--json", "wait", &pid_s]);
    assert_eq!(w.status.code(), Some(3), "{}", stdout(&w));
    assert_eq!(json_lenient(&w)["exit"]["code"], 3);

    // ps hides terminated agents unless --all; --json is an array of PCBs.
    let ps = json(&agentos(&d, &["--json", "ps", "--all"]));
    assert_eq!(ps.as_array().map(|a| a.len()), Some(1));
    assert_eq!(ps[0]["state"], "TERMINATED");
    let table = stdout(&agentos(&d, &["ps", "--all"]));
    for col in [
        "PID", "PPID", "NAME", "STATE", "UID", "OWNER", "UPTIME", "SYSCALLS", "talker",
    ] {
        assert!(table.contains(col), "ps table lacks {col}:\n{table}");
    }
    assert!(!stdout(&agentos(&d, &["ps"])).contains("talker"));
}

fn json_lenient(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).expect("json output")
}

#[test]
fn cli_stop_cont_kill_tree_status() {
    if !require_root("cli_stop_cont_kill_tree_status") {
        return;
    }
    let d = Daemon::start();
    let probe = common::probe().display().to_string();
    let a = json(&agentos(
        &d,
        &[
            "--json",
            "spawn",
            "--name",
            "sleepy",
            "--program",
            &probe,
            "--",
            "sleep",
            "60000",
        ],
    ));
    let pid = a["pid"].as_u64().expect("pid").to_string();

    let stop = json(&agentos(&d, &["--json", "stop", &pid]));
    assert_eq!(stop["state"], "STOPPED");
    assert_eq!(
        d.inspect(a["pid"].as_u64().expect("pid")).state,
        agentos::kernel::pcb::State::Stopped
    );
    let cont = json(&agentos(&d, &["--json", "cont", &pid]));
    assert_eq!(cont["state"], "RUNNING");

    let tree = stdout(&agentos(&d, &["tree"]));
    assert!(tree.contains("sleepy [RUNNING]"), "{tree}");

    let status = stdout(&agentos(&d, &["status"]));
    for want in [
        "landlock:    ABI",
        "seccomp:",
        "cgroups:",
        "namespaces:  mnt pid net ipc uts cgroup",
    ] {
        assert!(status.contains(want), "status lacks {want:?}:\n{status}");
    }

    let killed = json(&agentos(&d, &["--json", "kill", &pid]));
    assert!(
        killed["exit"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("killed by admin"),
        "{killed}"
    );

    // Errors: exit code 1 with the code and message; 3 without a daemon.
    let missing = agentos(&d, &["inspect", "999"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("ESRCH"));
    let nowhere = Command::new(env!("CARGO_BIN_EXE_agentos"))
        .args(["--socket", "/nonexistent/agentosd.sock", "ps"])
        .output()
        .expect("run");
    assert_eq!(nowhere.status.code(), Some(3));
}

#[test]
fn every_command_explains_itself() {
    for cmd in [
        "spawn", "ps", "tree", "inspect", "logs", "send", "inbox", "stop", "cont", "kill", "wait",
        "status", "top",
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_agentos"))
            .args([cmd, "--help"])
            .output()
            .expect("run");
        assert!(o.status.success(), "{cmd} --help failed");
        assert!(
            stdout(&o).contains("Usage:"),
            "{cmd} --help:\n{}",
            stdout(&o)
        );
    }
    let o = Command::new(env!("CARGO_BIN_EXE_agentosd"))
        .arg("--help")
        .output()
        .expect("run");
    assert!(stdout(&o).contains("--uid-range"));
}

/// An agent that writes terminal escape sequences (clipboard write, window
/// title, screen clear) and a forged "TERMINATED" line is shown escaped by
/// `logs` and `wait`; `--raw` prints it as it is and `--json` is unchanged.
#[test]
fn agent_text_is_escaped_on_the_terminal() {
    if !require_root("agent_text_is_escaped_on_the_terminal") {
        return;
    }
    let d = Daemon::start();
    let agents = repo().join("tests/agents");
    let script = agents.join("hostile.py").display().to_string();
    let ro = agents.display().to_string();
    let spawned = json(&agentos(
        &d,
        &[
            "--json",
            "spawn",
            "--name",
            "forger",
            "--program",
            "/usr/bin/python3",
            "--ro",
            &ro,
            "--allow",
            "SYS_WRITE_STDOUT",
            "--",
            &script,
            "terminal",
        ],
    ));
    let pid = spawned["pid"].as_u64().expect("pid").to_string();

    let waited = agentos(&d, &["wait", &pid]);
    assert_eq!(waited.status.code(), Some(7));
    let text = stdout(&waited);
    assert!(!text.contains('\x1b'), "wait printed a raw ESC: {text:?}");
    assert!(
        text.contains("done\\x1b]52;c;cHduZWQ=\\x07\\nTERMINATED"),
        "{text:?}"
    );
    assert_eq!(
        text.lines().count(),
        1,
        "the reason forged a second line: {text:?}"
    );

    let logs = stdout(&agentos(&d, &["logs", &pid]));
    assert!(!logs.contains('\x1b'), "logs printed a raw ESC: {logs:?}");
    assert!(!logs.contains('\x07') && !logs.contains('\r'), "{logs:?}");
    for want in [
        "\\x1b]52;c;cHduZWQ=\\x07clipboard",
        "\\x1b]0;window title\\x07title",
        "\\x1b[2J\\x1b[Hcleared",
        "progress\\rTERMINATED (exited with code 0)",
        "via syscall\\x1b[31m red",
    ] {
        assert!(logs.contains(want), "logs lack {want:?}:\n{logs}");
    }

    // --raw is the operator's explicit choice; --json carries the bytes.
    let raw = stdout(&agentos(&d, &["--raw", "logs", &pid]));
    assert!(raw.contains("\x1b]52;c;cHduZWQ=\x07clipboard"), "{raw:?}");
    let events = stdout(&agentos(&d, &["--json", "logs", &pid]));
    assert!(
        events.contains("\\u001b]52;c;cHduZWQ=\\u0007clipboard"),
        "{events}"
    );
}
