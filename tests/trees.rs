//! Agent trees: an agent's limits bound its whole subtree (memory and pids
//! of every descendant count against the root's cgroup), and the subtree
//! ends with its root (admin KILL, SYS_EXIT), leaving no process and no
//! cgroup behind. Each test also checks that a well-behaved agent beside
//! the hostile tree keeps answering.

mod common;

use agentos::admin::protocol::{AdminRequest, SpawnRequest};
use agentos::kernel::pcb::{LimitsPatch, Pcb, State};
use common::{Daemon, eventually, python_agent, require_root};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SCRIPT: &str = "hostile_trees.py";

/// Spawns the hostile tree script as a root agent with `limits`.
fn spawn_root(d: &Daemon, name: &str, args: &[&str], limits: LimitsPatch) -> u64 {
    let mut req: SpawnRequest = python_agent(name, SCRIPT, args, Some(&["process", "time", "fs"]));
    req.limits = Some(limits);
    d.spawn(req).pid
}

/// Another agent can still be spawned, make syscalls and exit cleanly.
fn neighbour_answers(d: &Daemon, tag: &str) {
    let p = d.spawn_probe(&format!("neighbour-{tag}"), &["exit", "7"], &[]);
    let exit = d.wait(p.pid, Duration::from_secs(60));
    assert_eq!(
        exit.code,
        7,
        "neighbour did not answer: {exit:?}\n{}",
        d.logs(p.pid)
    );
    assert!(exit.reason.contains("SYS_EXIT"), "{exit:?}");
}

/// Every PCB of the daemon.
fn all_pcbs(d: &Daemon) -> Vec<Pcb> {
    serde_json::from_value(d.call(AdminRequest::Ps).expect("ps")).expect("pcbs")
}

/// `root` and every agent below it.
fn subtree(d: &Daemon, root: u64) -> Vec<Pcb> {
    let all = all_pcbs(d);
    let mut keep = BTreeSet::from([root]);
    for p in &all {
        if keep.contains(&p.ppid) {
            keep.insert(p.pid);
        }
    }
    all.into_iter().filter(|p| keep.contains(&p.pid)).collect()
}

fn running(p: &Pcb) -> bool {
    matches!(p.state, State::Running | State::Sleeping | State::Blocked)
}

/// A host process of an agent tree.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct HostProc {
    pid: i32,
    start: u64,
    anon_kib: u64,
    tasks: u64,
}

/// The start time of host process `pid` (field 22 of its stat).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Every host process whose cgroup (in any hierarchy) lies in the cgroup
/// of one of `agents` of this daemon, whatever the layout (flat or nested).
fn tree_processes(d: &Daemon, agents: &BTreeSet<u64>) -> Vec<HostProc> {
    let names: BTreeSet<String> = agents.iter().map(|p| format!("agent-{p}")).collect();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cg) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            continue;
        };
        let ours = cg.lines().any(|l| {
            let path = l.splitn(3, ':').nth(2).unwrap_or("");
            path.contains(&d.cgroup_name) && path.split('/').any(|c| names.contains(c))
        });
        if !ours {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let Some(start) = start_time(pid) else {
            continue;
        };
        out.push(HostProc {
            pid,
            start,
            anon_kib: field("RssAnon:"),
            tasks: field("Threads:"),
        });
    }
    out
}

/// Every cgroup directory named `agent-<pid>` (at any depth) of this daemon.
fn cgroup_dirs_of(d: &Daemon, pid: u64) -> Vec<PathBuf> {
    let name = format!("agent-{pid}");
    let mut out = Vec::new();
    let mut stack = vec![(PathBuf::from("/sys/fs/cgroup"), 0, false)];
    while let Some((dir, depth, inside)) = stack.pop() {
        if depth > 16 {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let n = e.file_name().to_string_lossy().to_string();
            if inside && n == name {
                out.push(e.path());
            }
            let now_inside = inside || n == d.cgroup_name;
            stack.push((e.path(), depth + 1, now_inside));
        }
    }
    out
}

/// The top-level cgroup directory of agent `pid` in the hierarchy that
/// holds `file` (memory or pids accounting).
fn accounting_dir(d: &Daemon, pid: u64, file: &str) -> Option<PathBuf> {
    cgroup_dirs_of(d, pid)
        .into_iter()
        .find(|p| p.join(file).exists())
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Whether each of `children` has either logged `marker` or terminated.
fn settled(d: &Daemon, children: &[u64], marker: &str) -> bool {
    children.iter().all(|&c| {
        let p = d.inspect(c);
        !p.is_live() || d.logs(c).contains(marker)
    })
}

/// The children that a fan-out agent reported.
fn reported_children(d: &Daemon, root: u64) -> Vec<u64> {
    d.report_when_written(root)["children"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
        .unwrap_or_default()
}

/// Live agents below `root`.
fn live_descendants(d: &Daemon, root: u64) -> usize {
    subtree(d, root)
        .iter()
        .filter(|p| p.pid != root && running(p))
        .count()
}

#[test]
fn a_trees_memory_never_exceeds_the_roots_limit() {
    if !require_root("a_trees_memory_never_exceeds_the_roots_limit") {
        return;
    }
    let d = Daemon::start();
    let limit: u64 = 64 << 20;
    // Four children, each ballooning 40 MiB: 160 MiB asked under 64 MiB.
    let root = spawn_root(
        &d,
        "mem-root",
        &["fan", "4", "balloon", "40"],
        LimitsPatch {
            memory_bytes: Some(limit),
            ..Default::default()
        },
    );
    let children = reported_children(&d, root);
    assert!(!children.is_empty(), "no child spawned: {}", d.logs(root));
    let mut peak_anon = 0u64;
    let mut peak_cgroup = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mem_dir = accounting_dir(&d, root, "memory.max_usage_in_bytes")
        .or_else(|| accounting_dir(&d, root, "memory.current"))
        .expect("the root agent has a memory cgroup");
    loop {
        let agents: BTreeSet<u64> = subtree(&d, root).iter().map(|p| p.pid).collect();
        let anon: u64 = tree_processes(&d, &agents)
            .iter()
            .map(|p| p.anon_kib * 1024)
            .sum();
        peak_anon = peak_anon.max(anon);
        for f in ["memory.max_usage_in_bytes", "memory.peak", "memory.current"] {
            if let Some(v) = read_u64(&mem_dir.join(f)) {
                peak_cgroup = peak_cgroup.max(v);
            }
        }
        if settled(&d, &children, "held") || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        peak_anon <= limit,
        "the tree's processes held {peak_anon} bytes of anonymous memory under a root limit of {limit}"
    );
    assert!(
        peak_cgroup <= limit,
        "the root's cgroup charged {peak_cgroup} bytes over its limit of {limit}"
    );
    // The tree really tried: some child did not get its 40 MiB.
    let held = children
        .iter()
        .filter(|&&c| d.logs(c).contains("held"))
        .count();
    assert!(
        held < children.len(),
        "every child held 40 MiB under a 64 MiB tree"
    );
    neighbour_answers(&d, "beside-balloons");
}

#[test]
fn a_trees_pids_never_exceed_the_roots_limit() {
    if !require_root("a_trees_pids_never_exceed_the_roots_limit") {
        return;
    }
    let d = Daemon::start();
    let limit: u64 = 24;
    let root = spawn_root(
        &d,
        "pids-root",
        &["fan", "4", "forker", "40"],
        LimitsPatch {
            pids: Some(limit),
            ..Default::default()
        },
    );
    let children = reported_children(&d, root);
    assert!(!children.is_empty(), "no child spawned: {}", d.logs(root));
    let mut peak_tasks = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let agents: BTreeSet<u64> = subtree(&d, root).iter().map(|p| p.pid).collect();
        let tasks: u64 = tree_processes(&d, &agents).iter().map(|p| p.tasks).sum();
        peak_tasks = peak_tasks.max(tasks);
        if settled(&d, &children, "forked") || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // A child's pid 1 joins its cgroup by migration, which pids.max does
    // not stop: while one SPAWN_AGENT is in flight the tree may hold one
    // task more, and the daemon then ends that child at once.
    assert!(
        peak_tasks <= limit + 1,
        "the tree ran {peak_tasks} tasks under a root pids limit of {limit}"
    );
    // Once every child is done forking, the bound holds exactly.
    let steady = eventually(Duration::from_secs(30), || {
        let agents: BTreeSet<u64> = subtree(&d, root).iter().map(|p| p.pid).collect();
        let tasks: u64 = tree_processes(&d, &agents).iter().map(|p| p.tasks).sum();
        (tasks <= limit).then_some(tasks)
    });
    assert!(
        steady.is_some(),
        "the tree stayed above its pids limit of {limit}"
    );
    // Four children of 40 forks each asked for 160 tasks.
    assert!(
        peak_tasks >= limit - 4,
        "the forkers never filled the tree: {peak_tasks}"
    );
    if let Some(dir) = accounting_dir(&d, root, "pids.current") {
        let current = read_u64(&dir.join("pids.current")).unwrap_or(0);
        assert!(
            current <= limit,
            "pids.current of the root is {current} > {limit}"
        );
    }
    neighbour_answers(&d, "beside-forkers");
}

/// Waits until the whole tree below `root` (`expected` agents with the
/// root) runs, and returns its agents and host processes.
fn running_tree(d: &Daemon, root: u64, expected: usize) -> (Vec<Pcb>, Vec<HostProc>) {
    eventually(Duration::from_secs(180), || {
        let tree = subtree(d, root);
        if tree.len() != expected || !tree.iter().all(running) {
            return None;
        }
        let agents: BTreeSet<u64> = tree.iter().map(|p| p.pid).collect();
        let procs = tree_processes(d, &agents);
        (procs.len() >= expected).then_some((tree, procs))
    })
    .unwrap_or_else(|| {
        panic!(
            "the tree of {root} never ran whole: {:#?}\n{}",
            subtree(d, root)
                .iter()
                .map(|p| (p.pid, p.ppid, p.state))
                .collect::<Vec<_>>(),
            d.log()
        )
    })
}

/// After the root ended: no process of the tree is left (same pid and
/// start time), every agent is TERMINATED (descendants because their
/// parent ended) and no cgroup directory of the tree is left.
fn assert_tree_gone(d: &Daemon, root: u64, tree: &[Pcb], procs: &[HostProc]) {
    let left = eventually(Duration::from_secs(60), || {
        let alive: Vec<&HostProc> = procs
            .iter()
            .filter(|p| start_time(p.pid) == Some(p.start))
            .collect();
        alive.is_empty().then_some(())
    });
    let alive: Vec<&HostProc> = procs
        .iter()
        .filter(|p| start_time(p.pid) == Some(p.start))
        .collect();
    assert!(
        left.is_some(),
        "processes of the tree survived its root: {alive:?}"
    );
    for p in tree {
        let exit = d.wait(p.pid, Duration::from_secs(60));
        if p.pid != root {
            assert_eq!(
                exit.reason,
                format!("parent {} ended", p.ppid),
                "agent {} ended for another reason",
                p.pid
            );
        }
        let dirs = eventually(Duration::from_secs(30), || {
            cgroup_dirs_of(d, p.pid).is_empty().then_some(())
        });
        assert!(
            dirs.is_some(),
            "cgroup of {} left behind: {:?}",
            p.pid,
            cgroup_dirs_of(d, p.pid)
        );
    }
}

#[test]
fn killing_a_parent_ends_its_whole_subtree() {
    if !require_root("killing_a_parent_ends_its_whole_subtree") {
        return;
    }
    let d = Daemon::start();
    // Depth 2, width 2: the root, 2 children, 4 grandchildren.
    let root = spawn_root(&d, "kill-root", &["tree", "2", "2"], LimitsPatch::default());
    let (tree, procs) = running_tree(&d, root, 7);
    neighbour_answers(&d, "before-kill");
    d.call(AdminRequest::Kill { pid: root })
        .expect("admin kill");
    assert_tree_gone(&d, root, &tree, &procs);
    neighbour_answers(&d, "after-kill");
}

#[test]
fn sys_exit_of_a_parent_ends_its_children() {
    if !require_root("sys_exit_of_a_parent_ends_its_children") {
        return;
    }
    let d = Daemon::start();
    let root = spawn_root(
        &d,
        "exit-root",
        &["spawn_then_exit", "3"],
        LimitsPatch::default(),
    );
    // The children's processes, seen while the parent waits for them.
    let mut seen: BTreeSet<HostProc> = BTreeSet::new();
    let mut tree = Vec::new();
    let exit = loop {
        let t = subtree(&d, root);
        if t.len() > tree.len() {
            tree = t.clone();
        }
        let agents: BTreeSet<u64> = t.iter().map(|p| p.pid).collect();
        seen.extend(tree_processes(&d, &agents));
        let me = d.inspect(root);
        if !me.is_live() {
            break me.exit.expect("exit status");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(exit.code, 0, "{exit:?}\n{}", d.logs(root));
    let children = reported_children(&d, root);
    assert_eq!(children.len(), 3, "{}", d.logs(root));
    assert_eq!(tree.len(), 4, "tree: {tree:?}");
    let procs: Vec<HostProc> = seen.into_iter().collect();
    assert!(procs.len() >= 4, "too few processes seen: {procs:?}");
    assert_tree_gone(&d, root, &tree, &procs);
    neighbour_answers(&d, "after-exit");
}

#[test]
fn a_roots_max_descendants_bounds_its_children() {
    if !require_root("a_roots_max_descendants_bounds_its_children") {
        return;
    }
    let d = Daemon::start();
    let root = spawn_root(
        &d,
        "desc-root",
        &["fan", "5", "sleeper"],
        LimitsPatch {
            max_descendants: Some(3),
            ..Default::default()
        },
    );
    let r = d.report_when_written(root);
    let children = r["children"].as_array().expect("children").len();
    let errors = r["errors"].as_array().expect("errors");
    assert_eq!(children, 3, "{r}\n{}", d.logs(root));
    assert_eq!(errors.len(), 2, "{r}");
    for e in errors {
        assert_eq!(e["code"], "EAGAIN", "{e}");
        let msg = e["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("max_descendants = 3") && msg.contains("3 live descendants"),
            "refusal does not name the limit: {msg}"
        );
    }
    assert_eq!(live_descendants(&d, root), 3);
    neighbour_answers(&d, "beside-fan");
}

#[test]
fn a_roots_max_descendants_counts_grandchildren() {
    if !require_root("a_roots_max_descendants_counts_grandchildren") {
        return;
    }
    let d = Daemon::start();
    // The root asks for 2 children and each for 2 grandchildren: 6 agents
    // under a limit of 4. Whatever the order, exactly 4 get in.
    let root = spawn_root(
        &d,
        "grand-root",
        &["tree", "2", "2"],
        LimitsPatch {
            max_descendants: Some(4),
            ..Default::default()
        },
    );
    let mut peak = 0;
    let ready = eventually(Duration::from_secs(180), || {
        let tree = subtree(&d, root);
        let live = tree.iter().filter(|p| running(p)).count() - 1;
        peak = peak.max(live);
        let all_ready = tree
            .iter()
            .all(|p| !running(p) || d.logs(p.pid).contains("tree ready"));
        (all_ready && live == 4).then_some(live)
    });
    assert!(peak <= 4, "the tree held {peak} live descendants");
    assert_eq!(ready, Some(4), "tree: {:?}\n{}", subtree(&d, root), d.log());
    assert_eq!(live_descendants(&d, root), 4);
    neighbour_answers(&d, "beside-grandchildren");
}

#[test]
fn a_chain_of_agents_stops_at_max_depth() {
    if !require_root("a_chain_of_agents_stops_at_max_depth") {
        return;
    }
    let d = Daemon::start();
    let root = spawn_root(
        &d,
        "chain-root",
        &["chain"],
        LimitsPatch {
            max_depth: Some(2),
            ..Default::default()
        },
    );
    let mut links = vec![root];
    let refusal = loop {
        let last = *links.last().expect("a link");
        let r = d.report_when_written(last);
        if let Some(child) = r["child"].as_u64() {
            assert!(
                links.len() <= 2,
                "the chain went deeper: {links:?} -> {child}"
            );
            links.push(child);
        } else {
            break r["refused"].clone();
        }
    };
    assert_eq!(links.len(), 3, "root + 2 levels: {links:?}");
    assert_eq!(refusal["code"], "EPERM", "{refusal}");
    let msg = refusal["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("max_depth = 2") && msg.contains(&format!("agent {root}")),
        "refusal does not name the limit: {msg}"
    );
    assert_eq!(live_descendants(&d, root), 2);
    neighbour_answers(&d, "beside-chain");
}

/// Runs the `agentos` CLI against the daemon and returns its stdout.
fn cli(d: &Daemon, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentos"))
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .output()
        .expect("run agentos");
    assert!(
        out.status.success(),
        "agentos {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn inspect_and_top_show_own_and_tree_use() {
    if !require_root("inspect_and_top_show_own_and_tree_use") {
        return;
    }
    let d = Daemon::start();
    // Two children holding 8 MiB each: the tree holds at least 16 MiB
    // more than the root's own processes.
    let root = spawn_root(
        &d,
        "usage-root",
        &["fan", "2", "balloon", "8"],
        LimitsPatch::default(),
    );
    let children = reported_children(&d, root);
    assert_eq!(children.len(), 2, "{}", d.logs(root));
    let held = eventually(Duration::from_secs(120), || {
        children
            .iter()
            .all(|&c| d.logs(c).contains("held"))
            .then_some(())
    });
    assert!(held.is_some(), "children did not balloon");

    let v: serde_json::Value =
        serde_json::from_str(&cli(&d, &["--json", "inspect", &root.to_string()])).expect("json");
    let u = &v["usage"];
    eprintln!("inspect {root}: usage {u}");
    assert_eq!(u["descendants"], 2, "{u}");
    let own_mem = u["own"]["memory_bytes"].as_u64().expect("own memory");
    let tree_mem = u["tree"]["memory_bytes"].as_u64().expect("tree memory");
    assert!(own_mem > 0, "{u}");
    assert!(tree_mem >= own_mem + (16 << 20), "{u}");
    let own_pids = u["own"]["pids"].as_u64().expect("own pids");
    let tree_pids = u["tree"]["pids"].as_u64().expect("tree pids");
    assert!(own_pids >= 1 && tree_pids >= own_pids + 2, "{u}");
    // The PCB fields are still there (the output is additive).
    assert_eq!(v["pid"], root);
    assert!(v["limits"]["max_descendants"].as_u64().is_some(), "{v}");

    let child: serde_json::Value =
        serde_json::from_str(&cli(&d, &["--json", "inspect", &children[0].to_string()]))
            .expect("json");
    assert_eq!(child["usage"]["descendants"], 0, "{child}");
    assert!(child["usage"]["own"]["memory_bytes"].as_u64().unwrap_or(0) >= 8 << 20);

    let top: serde_json::Value =
        serde_json::from_str(&cli(&d, &["--json", "top", "--once"])).expect("json");
    let row = top["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .find(|a| a["pid"] == root)
        .expect("root in top")
        .clone();
    assert_eq!(row["usage"]["descendants"], 2, "{row}");
    let text = cli(&d, &["top", "--once"]);
    assert!(text.contains("TREE MiB") && text.contains("DESC"), "{text}");
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(root.to_string().as_str()))
        .unwrap_or_else(|| panic!("no row for {root}: {text}"));
    assert_eq!(line.split_whitespace().last(), Some("2"), "{line}");
    neighbour_answers(&d, "beside-usage");
}
