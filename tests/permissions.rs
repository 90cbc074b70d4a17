//! Permission checks of the syscall dispatcher and of SPAWN_AGENT, KILL and
//! WAIT, exercised by Python agents (tests/agents/permissions.py) on a real
//! daemon.

mod common;

use agentos::abi::calls::Call;
use agentos::admin::protocol::{AdminRequest, SpawnRequest};
use agentos::kernel::pcb::{LimitsPatch, Pcb, State};
use common::{Daemon, eventually};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

fn spawn_req(name: &str, args: &[&str], permissions: Option<&[&str]>) -> SpawnRequest {
    common::python_agent(name, "permissions.py", args, permissions)
}

fn finish(daemon: &Daemon, pid: u64, timeout: Duration) -> Value {
    daemon.finish(pid, timeout)
}

fn fs_calls() -> BTreeSet<Call> {
    BTreeSet::from([
        Call::FS_READ,
        Call::FS_WRITE,
        Call::FS_LIST,
        Call::FS_DELETE,
    ])
}

/// Asserts that the reply the agent reported under `key` has `code`.
fn expect_code(report: &Value, key: &str, code: &str, ctx: &dyn Fn() -> String) {
    assert_eq!(report[key]["code"], code, "{key}: {report}\n{}", ctx());
}

/// The pid in a successful SPAWN_AGENT reply as the agent reported it.
fn spawned_pid(report: &Value, key: &str, ctx: &dyn Fn() -> String) -> u64 {
    expect_code(report, key, "SUCCESS", ctx);
    report[key]["result"]["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("{key}: no pid in {}\n{}", report[key], ctx()))
}

/// (a) An agent with no permissions: FS_WRITE, SEND_MSG, SPAWN_AGENT, SLEEP
/// and PS are EACCES "permission denied for syscall X", each refusal is in
/// the journal and counted in `counters.denied`. GETPID (and SYS_EXIT, which
/// the agent uses to end) are always allowed: they grant nothing.
#[test]
fn empty_permissions_deny_everything_but_getpid() {
    if !common::require_root("empty_permissions_deny_everything_but_getpid") {
        return;
    }
    let daemon = Daemon::start();
    let pcb = daemon.spawn(spawn_req("no-perms", &["empty"], Some(&[])));
    assert!(pcb.permissions.is_empty(), "{pcb:?}");
    let report = finish(&daemon, pcb.pid, Duration::from_secs(20));
    let logs = daemon.logs(pcb.pid);
    let ctx = || format!("agent log:\n{logs}\ndaemon log:\n{}", daemon.log());

    let denied = ["FS_WRITE", "SEND_MSG", "SPAWN_AGENT", "SLEEP", "PS"];
    for call in denied {
        expect_code(&report, call, "EACCES", &ctx);
        assert_eq!(
            report[call]["message"],
            format!("permission denied for syscall {call}"),
            "{call}: {report}\n{}",
            ctx()
        );
        // The journal records the refusal: "FS_WRITE {args} → EACCES permission denied ...".
        let line = logs
            .lines()
            .find(|l| l.starts_with(&format!("syscall {call} ")) && l.contains("→ EACCES"))
            .unwrap_or_else(|| panic!("no journal entry for the denied {call}\n{}", ctx()));
        assert!(
            line.contains(&format!("permission denied for syscall {call}")),
            "{line}\n{}",
            ctx()
        );
    }
    // Always allowed: GETPID answers with the agent's own pid.
    for key in ["getpid", "getpid_again"] {
        expect_code(&report, key, "SUCCESS", &ctx);
        assert_eq!(report[key]["result"]["pid"], pcb.pid, "{report}\n{}", ctx());
    }
    let refused_lines = logs
        .lines()
        .filter(|l| l.starts_with("syscall ") && l.contains("→ EACCES"))
        .count();
    assert_eq!(refused_lines, denied.len(), "{}", ctx());
    assert!(
        logs.lines()
            .any(|l| l.starts_with("syscall GETPID ") && l.contains("→ SUCCESS")),
        "{}",
        ctx()
    );
    // Nothing was written, sent or spawned.
    assert!(
        !daemon.workspace(pcb.pid).join("x.txt").exists(),
        "{}",
        ctx()
    );
    let after = daemon.inspect(pcb.pid);
    assert_eq!(
        after.counters.denied,
        denied.len() as u64,
        "{after:?}\n{}",
        ctx()
    );
    assert_eq!(after.counters.messages_sent, 0, "{after:?}\n{}", ctx());
    let ps = daemon.call(AdminRequest::Ps).expect("ps");
    assert_eq!(
        ps.as_array().map(|a| a.len()),
        Some(1),
        "a child was spawned: {ps}\n{}",
        ctx()
    );
}

/// The memory limit the kernel enforces on agent `pid`: cgroup v1
/// memory.limit_in_bytes, or memory.max on a pure cgroup v2 host.
fn cgroup_memory_limit(daemon: &Daemon, pid: u64) -> Result<u64, String> {
    for dir in common::agent_cgroup_dirs(&daemon.cgroup_name, pid) {
        for file in ["memory.limit_in_bytes", "memory.max"] {
            let f = dir.join(file);
            if let Ok(text) = std::fs::read_to_string(&f) {
                return text
                    .trim()
                    .parse()
                    .map_err(|e| format!("{}: {text:?}: {e}", f.display()));
            }
        }
    }
    Err(format!(
        "no memory.limit_in_bytes or memory.max for agent-{pid} under a cgroup named {}",
        daemon.cgroup_name
    ))
}

/// (b) SPAWN_AGENT narrows: a child may not get a permission or a limit its
/// parent lacks (EACCES, and no PCB is created), a narrower request
/// succeeds with exactly what was asked, and the lower memory limit is the
/// one the kernel enforces on the child's cgroup. (c) A child spawned with
/// `"permissions": []` (or none given) has no permissions at all.
#[test]
fn spawn_narrows_permissions_and_limits() {
    if !common::require_root("spawn_narrows_permissions_and_limits") {
        return;
    }
    let daemon = Daemon::start();
    const PARENT_MEM: u64 = 384 << 20;
    const LOW_MEM: u64 = 256 << 20;
    let parent_mem = PARENT_MEM.to_string();
    let low_mem = LOW_MEM.to_string();
    let mut req = spawn_req(
        "parent",
        &["parent", &parent_mem, &low_mem],
        Some(&["fs", "SPAWN_AGENT", "WAIT"]),
    );
    req.limits = Some(LimitsPatch {
        memory_bytes: Some(PARENT_MEM),
        ..Default::default()
    });
    let parent = daemon.spawn(req);
    let ctx = || {
        format!(
            "parent log:\n{}\ndaemon log:\n{}",
            daemon.logs(parent.pid),
            daemon.log()
        )
    };
    assert_eq!(parent.limits.memory_bytes, PARENT_MEM, "{parent:?}");
    let mut expected_parent = fs_calls();
    expected_parent.extend([Call::SPAWN_AGENT, Call::WAIT]);
    assert_eq!(parent.permissions, expected_parent, "{parent:?}");

    // While the low-memory child is alive (it waits for a file), look at
    // its PCB and its real cgroup.
    let spawned = eventually(Duration::from_secs(40), || {
        let text =
            std::fs::read_to_string(daemon.workspace(parent.pid).join("spawned.json")).ok()?;
        serde_json::from_str::<Value>(&text).ok()
    })
    .unwrap_or_else(|| panic!("the parent never spawned the low-memory child\n{}", ctx()));
    let low = spawned["low"].as_u64().expect("low pid");
    let low_ctx = || format!("child log:\n{}\n{}", daemon.logs(low), ctx());
    eventually(Duration::from_secs(20), || {
        daemon.workspace(low).join("held").exists().then_some(())
    })
    .unwrap_or_else(|| panic!("the low-memory child did not start\n{}", low_ctx()));
    let child: Pcb = daemon.inspect(low);
    assert!(child.is_live(), "{child:?}\n{}", low_ctx());
    assert_eq!(child.ppid, parent.pid, "{child:?}");
    assert_eq!(child.permissions, fs_calls(), "{child:?}");
    assert_eq!(child.limits.memory_bytes, LOW_MEM, "{child:?}");
    // Other limits are inherited from the parent.
    assert_eq!(child.limits.pids, parent.limits.pids, "{child:?}");
    assert_eq!(child.ro_binds, parent.ro_binds, "{child:?}");
    let enforced =
        cgroup_memory_limit(&daemon, low).unwrap_or_else(|e| panic!("{e}\n{}", low_ctx()));
    assert_eq!(enforced, LOW_MEM, "the child's cgroup limit\n{}", low_ctx());
    let parent_enforced =
        cgroup_memory_limit(&daemon, parent.pid).unwrap_or_else(|e| panic!("{e}\n{}", ctx()));
    assert_eq!(
        parent_enforced,
        PARENT_MEM,
        "the parent's cgroup limit\n{}",
        ctx()
    );
    std::fs::write(daemon.workspace(low).join("release"), "go").expect("release");

    let report = finish(&daemon, parent.pid, Duration::from_secs(60));
    let full = || format!("report: {report}\n{}", ctx());

    // A permission the parent lacks: EACCES naming it.
    expect_code(&report, "spawn_fs_send", "EACCES", &full);
    let msg = report["spawn_fs_send"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("SEND_MSG"), "{msg}\n{}", full());
    // A memory limit above the parent's: EACCES naming the limit.
    expect_code(&report, "spawn_mem_over", "EACCES", &full);
    let msg = report["spawn_mem_over"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("memory_bytes"), "{msg}\n{}", full());
    // Refused spawns leave no PCB behind.
    let ps = daemon.call(AdminRequest::Ps).expect("ps");
    let names: Vec<&str> = ps
        .as_array()
        .expect("ps list")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for refused in ["too-many-perms", "too-much-mem"] {
        assert!(
            !names.contains(&refused),
            "{refused} exists: {names:?}\n{}",
            full()
        );
    }

    // ["fs"]: exactly the FS_* calls; its FS_WRITE works, SEND_MSG does not.
    let fs_child = spawned_pid(&report, "spawn_fs", &full);
    let pcb = daemon.inspect(fs_child);
    assert_eq!(pcb.permissions, fs_calls(), "{pcb:?}\n{}", full());
    assert_eq!(pcb.ppid, parent.pid, "{pcb:?}");
    assert_eq!(
        pcb.limits.memory_bytes, PARENT_MEM,
        "inherited limit: {pcb:?}"
    );
    expect_code(&report, "wait_fs", "SUCCESS", &full);
    assert_eq!(report["wait_fs"]["result"]["exit_code"], 0, "{}", full());
    let child_report = daemon.report(fs_child);
    expect_code(&child_report, "FS_WRITE", "SUCCESS", &full);
    expect_code(&child_report, "SEND_MSG", "EACCES", &full);
    assert_eq!(
        std::fs::read_to_string(daemon.workspace(fs_child).join("probe.txt")).unwrap_or_default(),
        "probe"
    );

    // The low-memory child ran to its end once released.
    expect_code(&report, "wait_low", "SUCCESS", &full);
    assert_eq!(report["wait_low"]["result"]["exit_code"], 0, "{}", full());

    // (c) "permissions": [] and no permissions field: nothing at all.
    for key in ["spawn_none", "spawn_absent"] {
        let pid = spawned_pid(&report, key, &full);
        let pcb = daemon.inspect(pid);
        assert!(pcb.permissions.is_empty(), "{key}: {pcb:?}\n{}", full());
        let wait_key = key.replace("spawn_", "wait_");
        expect_code(&report, &wait_key, "SUCCESS", &full);
        let child_report = daemon.report(pid);
        let child_logs = daemon.logs(pid);
        for call in ["FS_WRITE", "SEND_MSG"] {
            assert_eq!(
                child_report[call]["code"],
                "EACCES",
                "{key} {call}: {child_report}\nchild log:\n{child_logs}\n{}",
                full()
            );
            assert_eq!(
                child_report[call]["message"],
                format!("permission denied for syscall {call}"),
                "{child_report}"
            );
        }
        assert!(
            !daemon.workspace(pid).join("probe.txt").exists(),
            "{}",
            full()
        );
        assert_eq!(
            pcb.counters.denied, 2,
            "{key}: {pcb:?}\nchild log:\n{child_logs}"
        );
    }
}

/// Spawns an idle agent (it waits for /workspace/release) as a sibling of
/// the agent under test, and waits until it runs.
fn spawn_idle_sibling(daemon: &Daemon) -> Pcb {
    let sibling = daemon.spawn(spawn_req("sibling", &["idle", "40"], Some(&[])));
    eventually(Duration::from_secs(20), || {
        daemon
            .workspace(sibling.pid)
            .join("started")
            .exists()
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the sibling did not start\n{}\n{}",
            daemon.logs(sibling.pid),
            daemon.log()
        )
    });
    sibling
}

/// Ends the idle sibling through the admin socket (after the checks).
fn kill_sibling(daemon: &Daemon, pid: u64) {
    let _ = daemon.call(AdminRequest::Kill { pid });
}

/// Spawns an idle sibling, then the agent `mode` (permission "process")
/// with the sibling's pid, and runs the agent to its end: the sibling, the
/// agent and the agent's report.
fn run_beside_idle_sibling(daemon: &Daemon, mode: &str) -> (Pcb, Pcb, Value) {
    let sibling = spawn_idle_sibling(daemon);
    let agent = daemon.spawn(spawn_req(
        mode,
        &[mode, &sibling.pid.to_string()],
        Some(&["process"]),
    ));
    let report = finish(daemon, agent.pid, Duration::from_secs(30));
    (sibling, agent, report)
}

/// The logs of the agent, of its sibling and of the daemon, for assertion
/// messages.
fn sibling_logs(daemon: &Daemon, agent: &Pcb, sibling: &Pcb) -> String {
    format!(
        "{} log:\n{}\nsibling log:\n{}\ndaemon log:\n{}",
        agent.name,
        daemon.logs(agent.pid),
        daemon.logs(sibling.pid),
        daemon.log()
    )
}

/// (d) KILL of an agent that is not a descendant (a sibling spawned by the
/// admin, or no agent at all) is EPERM, and the sibling keeps running; the
/// same agent may kill its own child.
#[test]
fn kill_of_a_non_descendant_is_eperm() {
    if !common::require_root("kill_of_a_non_descendant_is_eperm") {
        return;
    }
    let daemon = Daemon::start();
    let (sibling, killer, report) = run_beside_idle_sibling(&daemon, "killer");
    let ctx = || sibling_logs(&daemon, &killer, &sibling);
    for key in ["kill_sibling", "kill_sibling_again", "kill_missing"] {
        expect_code(&report, key, "EPERM", &ctx);
    }
    // Control: its own child could be killed, so EPERM is about the tree.
    for key in ["spawn_child", "kill_child", "wait_child"] {
        expect_code(&report, key, "SUCCESS", &ctx);
    }
    let reason = report["wait_child"]["result"]["reason"]
        .as_str()
        .unwrap_or("");
    assert!(reason.contains("killed by agent"), "{reason}\n{}", ctx());

    // The sibling is still alive: its PCB, its host process, its own view.
    std::thread::sleep(Duration::from_millis(300));
    let now = daemon.inspect(sibling.pid);
    assert!(
        now.is_live() && now.exit.is_none(),
        "the sibling was killed: {now:?}\n{}",
        ctx()
    );
    assert_ne!(now.state, State::Terminated, "{}", ctx());
    let host_pid = now
        .host_pid
        .unwrap_or_else(|| panic!("no host pid: {now:?}\n{}", ctx()));
    assert!(
        Path::new(&format!("/proc/{host_pid}")).exists(),
        "the sibling's process {host_pid} is gone\n{}",
        ctx()
    );
    assert!(
        !daemon.workspace(sibling.pid).join("report.json").exists(),
        "the sibling finished early\n{}",
        ctx()
    );
    kill_sibling(&daemon, sibling.pid);
}

/// (e) WAIT on an agent that is not a child (a sibling, itself, a pid that
/// does not exist) is ECHILD, at once; the same agent may wait for its own
/// child.
#[test]
fn wait_on_a_non_child_is_echild() {
    if !common::require_root("wait_on_a_non_child_is_echild") {
        return;
    }
    let daemon = Daemon::start();
    let (sibling, waiter, report) = run_beside_idle_sibling(&daemon, "waiter");
    let ctx = || sibling_logs(&daemon, &waiter, &sibling);
    for key in [
        "wait_sibling",
        "wait_missing",
        "wait_self",
        "wait_parentless",
    ] {
        expect_code(&report, key, "ECHILD", &ctx);
    }
    // Control: its own child can be waited for.
    for key in ["spawn_child", "wait_child"] {
        expect_code(&report, key, "SUCCESS", &ctx);
    }
    assert_eq!(
        report["wait_child"]["result"]["exit_code"],
        0,
        "{report}\n{}",
        ctx()
    );
    // Waiting did not disturb the sibling.
    let now = daemon.inspect(sibling.pid);
    assert!(now.is_live(), "{now:?}\n{}", ctx());
    kill_sibling(&daemon, sibling.pid);
}
