//! Syscalls through a real daemon, driven by Python test agents: blocking
//! states, out-of-order replies, pipes, the workspace quota and the process
//! calls of a small tree.

mod common;

use agentos::admin::protocol::{AdminRequest, SpawnRequest};
use agentos::kernel::pcb::{LimitsPatch, Pcb, State};
use common::{Daemon, eventually, repo, require_root};
use std::time::Duration;

fn python(d: &Daemon, name: &str, scenario: &str, permissions: &[&str]) -> Pcb {
    python_with(d, name, scenario, permissions, None, None)
}

fn python_with(
    d: &Daemon,
    name: &str,
    scenario: &str,
    permissions: &[&str],
    limits: Option<LimitsPatch>,
    pipe_to: Option<u64>,
) -> Pcb {
    let agents = repo().join("tests/agents");
    d.spawn(SpawnRequest {
        name: name.into(),
        program: "/usr/bin/python3".into(),
        args: vec![
            agents.join("syscalls_agent.py").display().to_string(),
            scenario.into(),
        ],
        permissions: Some(permissions.iter().map(|s| s.to_string()).collect()),
        ro: vec![agents.display().to_string()],
        limits,
        pipe_to,
        ..Default::default()
    })
}

fn wait_ok(d: &Daemon, pid: u64) {
    let exit = d.wait(pid, Duration::from_secs(60));
    assert_eq!(exit.code, 0, "{exit:?}\n{}", d.logs(pid));
}

#[test]
fn blocking_calls_show_in_the_agent_state() {
    if !require_root("blocking_calls_show_in_the_agent_state") {
        return;
    }
    let d = Daemon::start();
    let a = python(&d, "states", "states", &["ipc", "time", "fs"]);
    let blocked = eventually(Duration::from_secs(20), || {
        (d.inspect(a.pid).state == State::Blocked).then_some(())
    });
    assert!(
        blocked.is_some(),
        "never BLOCKED in RECV_MSG:\n{}",
        d.logs(a.pid)
    );
    d.call(AdminRequest::Send {
        pid: a.pid,
        body: "wake up".into(),
    })
    .expect("send");
    let sleeping = eventually(Duration::from_secs(10), || {
        (d.inspect(a.pid).state == State::Sleeping).then_some(())
    });
    assert!(sleeping.is_some(), "never SLEEPING:\n{}", d.logs(a.pid));
    wait_ok(&d, a.pid);
    assert_eq!(d.report(a.pid)["got"], serde_json::json!(["wake up"]));
    let log = d.logs(a.pid);
    for t in [
        "RUNNING → BLOCKED",
        "BLOCKED → RUNNING",
        "RUNNING → SLEEPING",
        "SLEEPING → RUNNING",
    ] {
        assert!(log.contains(t), "journal lacks {t}:\n{log}");
    }
}

#[test]
fn replies_come_in_completion_order() {
    if !require_root("replies_come_in_completion_order") {
        return;
    }
    let d = Daemon::start();
    let a = python(&d, "ooo", "out_of_order", &["time", "fs"]);
    wait_ok(&d, a.pid);
    assert_eq!(
        d.report(a.pid)["order"],
        serde_json::json!(["fast", "slow"])
    );
}

#[test]
fn pipe_to_carries_stdout_into_stdin() {
    if !require_root("pipe_to_carries_stdout_into_stdin") {
        return;
    }
    let d = Daemon::start();
    let reader = python(&d, "reader", "pipe_reader", &["ipc", "fs"]);
    let writer = python_with(
        &d,
        "writer",
        "pipe_writer",
        &["ipc"],
        None,
        Some(reader.pid),
    );
    assert_eq!(writer.pipe_to, Some(reader.pid));
    d.call(AdminRequest::Send {
        pid: reader.pid,
        body: "go".into(),
    })
    .expect("send");
    wait_ok(&d, writer.pid);
    wait_ok(&d, reader.pid);
    assert_eq!(d.report(reader.pid)["data"], "line1\nline2\nline3\n");
}

#[test]
fn the_workspace_quota_is_enforced() {
    if !require_root("the_workspace_quota_is_enforced") {
        return;
    }
    let d = Daemon::start();
    let limits = LimitsPatch {
        workspace_bytes: Some(1 << 20),
        ..Default::default()
    };
    let a = python_with(&d, "quota", "quota", &["fs"], Some(limits), None);
    wait_ok(&d, a.pid);
    let r = d.report(a.pid);
    assert_eq!(
        r["codes"],
        serde_json::json!(["SUCCESS", "EQUOTA", "SUCCESS"]),
        "{r}"
    );
    assert_eq!(
        r["names"],
        serde_json::json!(["a"]),
        "the refused file exists: {r}"
    );
}

#[test]
fn process_calls_stay_in_the_callers_subtree() {
    if !require_root("process_calls_stay_in_the_callers_subtree") {
        return;
    }
    let d = Daemon::start();
    let outsider = d.spawn_probe("outsider", &["sleep", "60000"], &[]);
    let parent = python(&d, "parent", "tree", &["process", "ipc", "fs"]);
    wait_ok(&d, parent.pid);
    let r = d.report(parent.pid);
    let child = r["child"].as_u64().expect("child pid");
    assert_eq!(r["ps"], serde_json::json!([parent.pid, child]), "{r}");
    assert!(
        r["waited"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("killed by agent {}", parent.pid)),
        "{r}"
    );
    let c = d.inspect(child);
    assert_eq!(c.ppid, parent.pid);
    assert_eq!(c.owner, parent.owner);
    assert!(!c.is_live());
    assert!(d.inspect(outsider.pid).is_live());
}

#[test]
fn sys_exit_is_answered_then_the_supervisor_ends_the_agent() {
    if !require_root("sys_exit_is_answered_then_the_supervisor_ends_the_agent") {
        return;
    }
    // The probe calls SYS_EXIT and then waits forever: the reply must reach
    // it, and the daemon must end it right after, with the code it gave.
    let d = Daemon::start();
    let p = d.spawn_probe("leaver", &["exit-and-wait", "9"], &[]);
    let started = std::time::Instant::now();
    let exit = d.wait(p.pid, Duration::from_secs(10));
    assert_eq!(exit.code, 9, "{exit:?}");
    assert!(exit.reason.contains("SYS_EXIT(9)"), "{exit:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "ending the agent took {:?}",
        started.elapsed()
    );
    let logs = eventually(Duration::from_secs(5), || {
        let l = d.logs(p.pid);
        l.contains("SYS_EXIT").then_some(l)
    })
    .unwrap_or_default();
    assert!(logs.contains("SYS_EXIT answered"), "{logs}");
}
