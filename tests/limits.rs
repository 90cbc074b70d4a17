//! Resource limits: a fork bomb and a memory balloon inside an agent are
//! stopped by its cgroup and rlimits while other agents keep answering.

mod common;

use agentos::admin::protocol::{AdminRequest, SpawnRequest};
use agentos::kernel::pcb::LimitsPatch;
use common::{Daemon, probe, require_root};
use std::time::Duration;

fn spawn_limited(d: &Daemon, name: &str, args: &[&str], limits: LimitsPatch) -> u64 {
    d.spawn(SpawnRequest {
        name: name.into(),
        program: probe().display().to_string(),
        args: args.iter().map(|s| s.to_string()).collect(),
        permissions: Some(vec!["fs".into(), "ipc".into()]),
        limits: Some(limits),
        ..Default::default()
    })
    .pid
}

/// Another agent can still be spawned, make syscalls and exit cleanly.
fn neighbour_answers(d: &Daemon, tag: &str) {
    let p = d.spawn_probe(&format!("neighbour-{tag}"), &["exit", "7"], &[]);
    let exit = d.wait(p.pid, Duration::from_secs(30));
    assert_eq!(
        exit.code,
        7,
        "neighbour did not answer: {exit:?}\n{}",
        d.logs(p.pid)
    );
    assert!(exit.reason.contains("SYS_EXIT"), "{exit:?}");
}

#[test]
fn a_fork_bomb_is_stopped_by_the_pids_limit() {
    if !require_root("a_fork_bomb_is_stopped_by_the_pids_limit") {
        return;
    }
    let d = Daemon::start();
    let bomb = spawn_limited(
        &d,
        "bomb",
        &["forkbomb"],
        LimitsPatch {
            pids: Some(32),
            ..Default::default()
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !common::agent_cgroup_dirs(&d.cgroup_name, bomb).is_empty(),
        "the bomb has no cgroup"
    );
    neighbour_answers(&d, "during-bomb");
    d.call(AdminRequest::Status)
        .expect("daemon answers during the bomb");
    let exit = d.wait(bomb, Duration::from_secs(60));
    let report = d.report(bomb);
    let forks = report["forks_ok"].as_u64().expect("forks_ok");
    assert!(
        forks < 32,
        "the bomb forked {forks} times under a limit of 32: {report}"
    );
    let err = report["first_error"].as_str().unwrap_or("");
    assert!(
        err.contains("EAGAIN") || err.contains("Resource temporarily unavailable"),
        "{report}"
    );
    assert_eq!(exit.code, 0, "{exit:?}");
    // Nothing of the bomb survives its agent: its cgroup is gone.
    let left = common::agent_cgroup_dirs(&d.cgroup_name, bomb);
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
    neighbour_answers(&d, "after-bomb");
}

#[test]
fn a_memory_balloon_is_stopped_by_the_memory_limit() {
    if !require_root("a_memory_balloon_is_stopped_by_the_memory_limit") {
        return;
    }
    let d = Daemon::start();
    let balloon = spawn_limited(
        &d,
        "balloon",
        &["balloon", "2048"],
        LimitsPatch {
            memory_bytes: Some(64 << 20),
            ..Default::default()
        },
    );
    let exit = d.wait(balloon, Duration::from_secs(60));
    assert_eq!(
        exit.signal,
        Some(9),
        "balloon was not killed: {exit:?}\n{}",
        d.logs(balloon)
    );
    assert!(
        exit.reason.contains("OOM"),
        "reason should name the OOM killer: {exit:?}"
    );
    assert!(
        !d.workspace(balloon).join("report.json").exists(),
        "the balloon reached 2 GiB under a 64 MiB limit"
    );
    neighbour_answers(&d, "after-balloon");
}

#[test]
fn the_wall_time_limit_ends_an_agent() {
    if !require_root("the_wall_time_limit_ends_an_agent") {
        return;
    }
    let d = Daemon::start();
    let sleeper = spawn_limited(
        &d,
        "sleeper",
        &["sleep", "60000"],
        LimitsPatch {
            wall_time_s: Some(1),
            ..Default::default()
        },
    );
    let exit = d.wait(sleeper, Duration::from_secs(20));
    assert!(exit.reason.contains("wall-time"), "{exit:?}");
}
