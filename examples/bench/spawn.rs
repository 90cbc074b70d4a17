//! The `spawn` section of agentos-bench: admin spawn request → the agent's
//! first syscall answered with its PCB durable, against `bwrap
//! --unshare-all`, a plain fork+exec of /bin/true and `docker run` (when the
//! test engine runs), and what one cgroup.procs write costs on this host.
//! The spawn series and bwrap runs are also the scale section's probes.

use crate::daemon::BenchDaemon;
use crate::stats::{Summary, dur, ratio, round};
use crate::{Ctx, agent_req, args, mono_ns, progress, spawn, wait_exit};
use agentos::admin::client::Client;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Spawns a `first` agent: returns (spawn request → first GETPID answered,
/// spawn request → spawn reply with the PCB durable), in ns.
fn first_spawn(
    ctx: &Ctx,
    d: &BenchDaemon,
    c: &mut Client,
    name: &str,
) -> Result<(u64, u64), String> {
    let req = agent_req(ctx, name, &args(&[&"first"]), &[]);
    let t0 = mono_ns();
    let pid = spawn(c, req)?;
    let t1 = mono_ns();
    let reason = wait_exit(d, c, pid, Duration::from_secs(30))?;
    let t = reason
        .split("t=")
        .nth(1)
        .and_then(|s| s.split(|ch: char| !ch.is_ascii_digit()).next())
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| format!("no timestamp in the exit reason {reason:?}"))?;
    Ok((t.saturating_sub(t0), t1 - t0))
}

/// `k` spawn measurements; the reported figure per spawn is the later of
/// the two events (first syscall answered, PCB durable).
pub(crate) fn spawn_series(
    ctx: &Ctx,
    d: &BenchDaemon,
    k: usize,
) -> Result<(Summary, Summary, Summary), String> {
    let mut c = d.client()?;
    let (mut both, mut first, mut reply) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..k {
        let (f, r) = first_spawn(ctx, d, &mut c, &format!("first{i}"))?;
        both.push(f.max(r));
        first.push(f);
        reply.push(r);
    }
    Ok((
        Summary::of_ns(&both),
        Summary::of_ns(&first),
        Summary::of_ns(&reply),
    ))
}

pub(crate) fn time_command(cmd: &mut Command) -> Result<u64, String> {
    let t = mono_ns();
    let st = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let took = mono_ns() - t;
    if !st.success() {
        return Err(format!("{cmd:?}: {st}"));
    }
    Ok(took)
}

fn bwrap() -> Command {
    let mut c = Command::new("bwrap");
    c.args([
        "--unshare-all",
        "--die-with-parent",
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/bin",
        "/bin",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "/bin/true",
    ]);
    c
}

/// `k` bwrap runs, when bwrap is installed.
pub(crate) fn bwrap_series(k: usize) -> Option<Summary> {
    let v: Vec<u64> = (0..k)
        .filter_map(|_| time_command(&mut bwrap()).ok())
        .collect();
    (!v.is_empty()).then(|| Summary::of_ns(&v))
}

fn docker(ctx: &Ctx) -> Command {
    let mut c = Command::new("docker");
    c.arg("-H")
        .arg(format!("unix://{}", ctx.opts.docker_socket.display()));
    c
}

/// Why docker cannot be compared with, if it cannot.
fn docker_unavailable(ctx: &Ctx) -> Option<String> {
    if !ctx.opts.docker_socket.exists() {
        return Some(format!(
            "no docker engine at {} (start it as .ci/run does)",
            ctx.opts.docker_socket.display()
        ));
    }
    let ok = docker(ctx)
        .args(["image", "inspect", &ctx.opts.docker_image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    (!ok).then(|| {
        format!(
            "image {} not found on the engine (tests/docker-image.sh builds it)",
            ctx.opts.docker_image
        )
    })
}

/// What moving a process between cgroups costs on this host
/// (`cgroup.procs` writes, as the launcher does for every agent), after an
/// idle gap and back to back. The first write after ~20 ms without one
/// waits for an RCU grace period (cgroup_threadgroup_rwsem).
fn cgroup_migration_probe(n: usize) -> Result<(Summary, Summary, String), String> {
    let v1 = Path::new("/sys/fs/cgroup/pids");
    let root = if v1.join("cgroup.procs").exists() {
        v1.to_path_buf()
    } else {
        PathBuf::from("/sys/fs/cgroup")
    };
    let dirs: Vec<PathBuf> = ["a", "b"]
        .iter()
        .map(|x| root.join(format!("agentos-bench-{}-probe-{x}", std::process::id())))
        .collect();
    for d in &dirs {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let mut child = Command::new("sleep")
        .arg("60")
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = child.id().to_string();
    let measure = |gap: Duration| -> Result<Summary, String> {
        let mut v = Vec::new();
        for i in 0..n + 1 {
            std::thread::sleep(gap);
            let t = mono_ns();
            std::fs::write(dirs[i % 2].join("cgroup.procs"), &pid).map_err(|e| e.to_string())?;
            if i > 0 {
                v.push(mono_ns() - t);
            }
        }
        Ok(Summary::of_ns(&v))
    };
    let idle = measure(Duration::from_millis(60));
    let warm = measure(Duration::from_micros(500));
    let _ = child.kill();
    let _ = child.wait();
    for d in &dirs {
        let _ = std::fs::remove_dir(d);
    }
    Ok((idle?, warm?, root.display().to_string()))
}

pub(crate) fn sec_spawn(ctx: &Ctx, d: &BenchDaemon) -> Result<Value, String> {
    let s = &ctx.sizes;
    let mut c = d.client()?;
    progress(&format!(
        "spawn: {} agents, bwrap and fork+exec, interleaved",
        s.spawn
    ));
    // Warm-up: page cache, the launcher binary, cgroup directories.
    for i in 0..3 {
        first_spawn(ctx, d, &mut c, &format!("warm{i}"))?;
    }
    let have_bwrap = Command::new("bwrap")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let (mut both, mut first, mut reply, mut bw, mut fe) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..s.spawn {
        let (f, r) = first_spawn(ctx, d, &mut c, &format!("first{i}"))?;
        both.push(f.max(r));
        first.push(f);
        reply.push(r);
        if have_bwrap {
            bw.push(time_command(&mut bwrap())?);
        }
        fe.push(time_command(&mut Command::new("/bin/true"))?);
    }
    let agentos = Summary::of_ns(&both);
    let first = Summary::of_ns(&first);
    let reply = Summary::of_ns(&reply);
    let fork = Summary::of_ns(&fe);
    let bwrap_s = have_bwrap.then(|| Summary::of_ns(&bw));

    let docker_s = match docker_unavailable(ctx) {
        Some(why) => Err(why),
        None => {
            progress(&format!("spawn: {} docker runs", s.docker));
            let mut v = Vec::new();
            let mut err = None;
            for _ in 0..s.docker {
                match time_command(docker(ctx).args([
                    "run",
                    "--rm",
                    "--network",
                    "none",
                    &ctx.opts.docker_image,
                    "true",
                ])) {
                    Ok(t) => v.push(t),
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
            match err {
                Some(e) => Err(e),
                None => Ok(Summary::of_ns(&v)),
            }
        }
    };

    ctx.latency_targets(
        "spawn",
        "spawn → first syscall answered, PCB durable",
        &agentos,
        (3000.0, "p50 ≤ 3 ms"),
        ("spawn p99", 8000.0, "p99 ≤ 8 ms"),
    );
    ctx.row("spawn", "  of which: first GETPID answered", first.text());
    ctx.row(
        "spawn",
        "  of which: spawn reply (PCB durable)",
        reply.text(),
    );
    ctx.row("spawn", "fork+exec /bin/true (floor)", fork.text());
    let r_bwrap = bwrap_s.and_then(|b| ratio(agentos.p50, b.p50));
    match &bwrap_s {
        Some(b) => {
            ctx.row("spawn", "bwrap --unshare-all /bin/true", b.text());
            ctx.target(
                "spawn",
                "ratio AgentOS/bwrap (p50)",
                format!("{:.2}", r_bwrap.unwrap_or(0.0)),
                "≤ 0.6",
                r_bwrap.map(|r| r <= 0.6),
                r_bwrap,
            );
        }
        None => ctx.row("spawn", "bwrap", "not installed".into()),
    }
    let r_docker = docker_s
        .as_ref()
        .ok()
        .and_then(|dk| ratio(dk.p50, agentos.p50));
    match &docker_s {
        Ok(dk) => {
            ctx.row("spawn", "docker run --rm --network none", dk.text());
            ctx.target(
                "spawn",
                "ratio docker/AgentOS (p50)",
                format!("{:.0}×", r_docker.unwrap_or(0.0)),
                "> 100× (expected)",
                r_docker.map(|r| r > 100.0),
                r_docker,
            );
        }
        Err(why) => ctx.row("spawn", "docker run", format!("skipped: {why}")),
    }
    let cg = cgroup_migration_probe(if ctx.opts.quick { 3 } else { 10 });
    match &cg {
        Ok((idle, warm, root)) => ctx.row(
            "spawn",
            "host: one cgroup.procs write, idle / back to back",
            format!("{} / {} ({root})", idle.text(), dur(warm.p50)),
        ),
        Err(e) => ctx.row(
            "spawn",
            "host: cgroup.procs write",
            format!("not measured: {e}"),
        ),
    }
    ctx.row(
        "spawn",
        "ratio AgentOS/fork+exec (p50)",
        format!("{:.2}", ratio(agentos.p50, fork.p50).unwrap_or(0.0)),
    );
    Ok(json!({
        "measured": "admin spawn request sent → max(the agent's first syscall (GETPID) answered, as read by the agent with CLOCK_MONOTONIC; the spawn reply, sent once the PCB is durable). Program: examples/bench-agent `first` (GETPID, then SYS_EXIT), default profile, fully confined.",
        "agentos": agentos.json(),
        "agentos_first_syscall": first.json(),
        "agentos_spawn_reply": reply.json(),
        "fork_exec": fork.json(),
        "bwrap": bwrap_s.map(|b| b.json()),
        "docker": match &docker_s { Ok(dk) => dk.json(), Err(why) => json!({"skipped": why}) },
        "ratio_agentos_bwrap": r_bwrap.map(round),
        "ratio_docker_agentos": r_docker.map(round),
        "ratio_agentos_fork_exec": ratio(agentos.p50, fork.p50).map(round),
        "cgroup_procs_write": match &cg {
            Ok((idle, warm, root)) => json!({"after_60ms_idle": idle.json(), "back_to_back": warm.json(), "hierarchy": root}),
            Err(e) => json!({"error": e}),
        },
    }))
}
