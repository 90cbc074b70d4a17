//! The `scale` section of agentos-bench: N idle confined agents (a tiny
//! program, and the built-in runtime blocked in RECV_MSG): spawn time,
//! daemon RSS, per-agent PSS, `agentos ps` latency, spawn latency as the
//! daemon grows, that every agent still answers, and the next limit.

use crate::daemon::BenchDaemon;
use crate::host::{
    KERNEL_MEMINFO, fd_count, meminfo_kib, nofile_limit, ppid_of, pss_kib, status_field, threads_of,
};
use crate::spawn::{bwrap_series, spawn_series, time_command};
use crate::stats::{Summary, dur, round};
use crate::{
    Ctx, agent_req, args, call, is_blocked, mono_ns, progress, ps, send_all, spawn_many, wait_all,
};
use agentos::admin::protocol::{AdminRequest, SpawnRequest};
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};

/// Memory of live agents: PSS of each agent's pid 1, and of the launcher
/// server they share (its parent), counted once.
struct AgentMemory {
    agents: usize,
    processes: usize,
    threads: u64,
    pss_kib: u64,
    agent_pss_kib: u64,
    launcher_pss_kib: u64,
}

fn agent_memory(pcbs: &[Value], pids: &[u64]) -> AgentMemory {
    let want: std::collections::HashSet<u64> = pids.iter().copied().collect();
    let mut m = AgentMemory {
        agents: 0,
        processes: 0,
        threads: 0,
        pss_kib: 0,
        agent_pss_kib: 0,
        launcher_pss_kib: 0,
    };
    let mut parents = std::collections::HashSet::new();
    for p in pcbs {
        let Some(pid) = p["pid"].as_u64() else {
            continue;
        };
        if !want.contains(&pid) {
            continue;
        }
        let Some(host) = p["host_pid"].as_u64() else {
            continue;
        };
        m.agents += 1;
        if let Some(k) = pss_kib(host) {
            m.agent_pss_kib += k;
            m.processes += 1;
            m.threads += threads_of(host);
        }
        if let Some(parent) = ppid_of(host) {
            parents.insert(parent);
        }
    }
    for parent in parents {
        if let Some(k) = pss_kib(parent) {
            m.launcher_pss_kib += k;
            m.processes += 1;
            m.threads += threads_of(parent);
        }
    }
    m.pss_kib = m.agent_pss_kib + m.launcher_pss_kib;
    m
}

/// `agentos ps` through the CLI binary and the admin request alone.
fn ps_latency(d: &BenchDaemon, runs: usize) -> Result<(Summary, Summary, usize), String> {
    let mut c = d.client()?;
    let mut admin = Vec::new();
    let mut bytes = 0;
    for _ in 0..runs {
        let t = mono_ns();
        let v = call(&mut c, &AdminRequest::Ps)?;
        admin.push(mono_ns() - t);
        bytes = v.to_string().len();
    }
    let mut cli = Vec::new();
    for _ in 0..runs {
        cli.push(time_command(
            Command::new(&d.bins.cli)
                .arg("--socket")
                .arg(&d.socket)
                .arg("ps"),
        )?);
    }
    Ok((Summary::of_ns(&cli), Summary::of_ns(&admin), bytes))
}

/// The scale measurements on one population of idle agents.
fn scale_population(
    ctx: &Ctx,
    label: &'static str,
    n: usize,
    make: &dyn Fn(usize) -> SpawnRequest,
) -> Result<Value, String> {
    let s = &ctx.sizes;
    let mem_before = meminfo_kib("MemAvailable");
    let kernel_before: Vec<u64> = KERNEL_MEMINFO.iter().map(|k| meminfo_kib(k)).collect();
    let d = ctx.daemon(&format!("scale-{label}"))?;
    let daemon_pid = d.pid();
    let rss_empty = status_field(daemon_pid, "VmRSS");
    let fds_empty = fd_count(daemon_pid);
    let threads = 4;
    let mut out = serde_json::Map::new();
    out.insert("agents_requested".into(), json!(n));
    out.insert("daemon_nofile".into(), json!(nofile_limit(daemon_pid)));

    // A baseline of spawn latency in this (empty) daemon, then spawn in
    // chunks of 1,000 with a probe after the first.
    let (base, _, _) = spawn_series(ctx, &d, s.scale_probe)?;
    out.insert("spawn_at_0".into(), base.json());
    // bwrap beside each probe: does the kernel side grow with N too?
    let bw0 = bwrap_series(s.scale_probe);
    let mut probes = vec![(0usize, base, bw0)];
    let mut pids: Vec<u64> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut spawn_time = Duration::ZERO;
    let mut chunk_rates = Vec::new();
    while pids.len() < n && errors.is_empty() {
        let from = pids.len();
        let k = (n - from).min(1000);
        progress(&format!(
            "scale/{label}: spawning agents {}..{}",
            from + 1,
            from + k
        ));
        let (p, e, t) = spawn_many(&d, (from..from + k).map(make).collect(), threads);
        chunk_rates.push(json!({"from": from, "spawned": p.len(), "per_s": round(p.len() as f64 / t.as_secs_f64().max(1e-9))}));
        pids.extend(p);
        errors.extend(e);
        spawn_time += t;
        if pids.len() == 1000 && n > 1000 && errors.is_empty() {
            let (at, _, _) = spawn_series(ctx, &d, s.scale_probe)?;
            out.insert("spawn_at_1000".into(), at.json());
            probes.push((1000, at, bwrap_series(s.scale_probe)));
        }
    }
    out.insert("spawn_chunks".into(), json!(chunk_rates));
    let limit_at = (!errors.is_empty()).then_some(pids.len());
    if let Some(at) = limit_at {
        // A limit was reached. Free a few agents so that the daemon has the
        // descriptors left to be measured and managed.
        progress(&format!(
            "scale/{label}: spawning stopped at {at} agents: {}; killing 20 to measure",
            errors[0]
        ));
        let mut c = d.client()?;
        for pid in pids.split_off(pids.len().saturating_sub(20)) {
            let _ = call(&mut c, &AdminRequest::Kill { pid });
        }
        let log = d.log();
        let accept_failures = log.matches("admin accept failed").count();
        out.insert(
            "limit".into(),
            json!({"reached_at": at, "error": errors[0], "admin_accept_failures_logged": accept_failures}),
        );
    }
    let spawned = pids.len();
    progress(&format!(
        "scale/{label}: {spawned} running, spawned in {:.1} s; waiting for all to block in RECV_MSG",
        spawn_time.as_secs_f64()
    ));
    let waited = Instant::now();
    let blocked = wait_all(&d, &pids, Duration::from_secs(600), is_blocked)?;
    let all_idle = spawn_time + waited.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let pcbs = ps(&mut d.client()?)?;
    let mem = agent_memory(&pcbs, &pids);
    let rss = status_field(daemon_pid, "VmRSS");
    let fds = fd_count(daemon_pid);
    let dthreads = status_field(daemon_pid, "Threads");
    let mem_after = meminfo_kib("MemAvailable");
    let kernel_per_agent: serde_json::Map<String, Value> = KERNEL_MEMINFO
        .iter()
        .zip(&kernel_before)
        .map(|(k, before)| {
            let delta = meminfo_kib(k) as f64 - *before as f64;
            (k.to_string(), json!(round(delta / spawned.max(1) as f64)))
        })
        .collect();
    let per_agent_pss = mem.pss_kib as f64 / mem.agents.max(1) as f64;
    let per_agent_sys = mem_before.saturating_sub(mem_after) as f64 / spawned.max(1) as f64;
    let fds_per_agent = (fds.saturating_sub(fds_empty)) as f64 / spawned.max(1) as f64;

    let (at_n, _, _) = spawn_series(ctx, &d, s.scale_probe)?;
    probes.push((spawned, at_n, bwrap_series(s.scale_probe)));
    out.insert(format!("spawn_at_{spawned}"), at_n.json());
    out.insert(
        "spawn_probes".into(),
        json!(probes.iter().map(|(k, a, b)| json!({"agents": k, "agentos": a.json(), "bwrap": b.map(|b| b.json())})).collect::<Vec<_>>()),
    );
    let (cli_ps, admin_ps, ps_bytes) = ps_latency(&d, if ctx.opts.quick { 2 } else { 5 })?;

    progress(&format!("scale/{label}: sending every agent a message"));
    let t = Instant::now();
    send_all(&d, &pids, "ping", 8)?;
    let sent_in = t.elapsed();
    let answered = wait_all(&d, &pids, Duration::from_secs(300), |p| {
        p["counters"]["messages_received"].as_u64().unwrap_or(0) >= 1 && is_blocked(p)
    })?;
    let answer_time = t.elapsed();

    let probe_text: Vec<String> = probes
        .iter()
        .map(|(k, sm, bw)| match bw {
            Some(b) => format!("{k}: {} (bwrap {})", dur(sm.p50), dur(b.p50)),
            None => format!("{k}: {}", dur(sm.p50)),
        })
        .collect();
    let flat = probes.last().map(|(_, l, _)| l.p50).unwrap_or(0.0) / base.p50.max(1e-9);
    let sec = "scale";
    let reached = limit_at.unwrap_or(spawned);
    ctx.target(
        sec,
        &format!("{label}: {n} idle agents running"),
        format!(
            "{reached} spawned in {:.1} s ({:.0}/s, {threads} admin clients); {blocked} of {spawned} blocked in RECV_MSG after {:.1} s",
            spawn_time.as_secs_f64(),
            reached as f64 / spawn_time.as_secs_f64().max(1e-9),
            all_idle.as_secs_f64()
        ),
        &format!("{n}"),
        Some(limit_at.is_none()),
        Some(reached as f64),
    );
    if let (Some(e), Some(at)) = (errors.first(), limit_at) {
        ctx.row(
            sec,
            &format!("{label}: spawning stopped"),
            format!("at {at} agents: {e} (20 killed again to measure the rest)"),
        );
    }
    ctx.row(
        sec,
        &format!("{label}: daemon"),
        format!(
            "RSS {:.1} MiB ({:.1} KiB/agent), {fds} fds ({fds_per_agent:.1}/agent), {dthreads} threads",
            rss as f64 / 1024.0,
            rss.saturating_sub(rss_empty) as f64 / spawned.max(1) as f64
        ),
    );
    let pss_target = label == "runtime";
    let pss_text = format!(
        "{:.0} KiB (agent {:.0} + share of the launcher server {:.1}); {} processes, {} threads",
        per_agent_pss,
        mem.agent_pss_kib as f64 / mem.agents.max(1) as f64,
        mem.launcher_pss_kib as f64 / mem.agents.max(1) as f64,
        mem.processes,
        mem.threads
    );
    if pss_target {
        ctx.target(
            sec,
            &format!("{label}: PSS per agent"),
            pss_text,
            "≤ 1 MiB",
            Some(per_agent_pss <= 1024.0),
            Some(per_agent_pss),
        );
    } else {
        ctx.row(sec, &format!("{label}: PSS per agent"), pss_text);
    }
    ctx.row(
        sec,
        &format!("{label}: host memory per agent (MemAvailable drop)"),
        format!(
            "{per_agent_sys:.0} KiB; growth per agent in KiB: {}",
            kernel_per_agent
                .iter()
                .map(|(k, v)| format!("{k} {}", v.as_f64().unwrap_or(0.0).round()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    ctx.target(
        sec,
        &format!("{label}: `agentos ps` at {spawned} agents"),
        format!(
            "CLI {} (admin request alone {}, {} KiB of JSON)",
            cli_ps.text(),
            dur(admin_ps.p50),
            ps_bytes / 1024
        ),
        "< 200 ms",
        Some(cli_ps.p50 < 200_000.0),
        Some(cli_ps.p50),
    );
    ctx.row(
        sec,
        &format!("{label}: spawn p50 as the daemon grows"),
        format!("{} (last/first {flat:.2})", probe_text.join(", ")),
    );
    ctx.target(
        sec,
        &format!("{label}: agents answering a message"),
        format!(
            "{answered} of {spawned} in {:.1} s (sends took {:.1} s)",
            answer_time.as_secs_f64(),
            sent_in.as_secs_f64()
        ),
        "all",
        Some(answered == spawned),
        Some(answered as f64),
    );
    out.insert("agents_spawned".into(), json!(spawned));
    out.insert("spawn_errors".into(), json!(errors));
    out.insert("spawn_all_s".into(), json!(round(spawn_time.as_secs_f64())));
    out.insert("spawn_threads".into(), json!(threads));
    out.insert("all_blocked_s".into(), json!(round(all_idle.as_secs_f64())));
    out.insert("blocked".into(), json!(blocked));
    out.insert("daemon_rss_kib".into(), json!(rss));
    out.insert("daemon_rss_empty_kib".into(), json!(rss_empty));
    out.insert("daemon_fds".into(), json!(fds));
    out.insert("daemon_fds_per_agent".into(), json!(round(fds_per_agent)));
    out.insert("daemon_threads".into(), json!(dthreads));
    out.insert("pss_per_agent_kib".into(), json!(round(per_agent_pss)));
    out.insert(
        "pss".into(),
        json!({
            "agents_measured": mem.agents,
            "processes": mem.processes,
            "threads": mem.threads,
            "total_kib": mem.pss_kib,
            "agent_kib": mem.agent_pss_kib,
            "launcher_kib": mem.launcher_pss_kib,
        }),
    );
    out.insert(
        "kernel_memory_per_agent_kib".into(),
        Value::Object(kernel_per_agent.clone()),
    );
    out.insert(
        "host_memory_per_agent_kib".into(),
        json!(round(per_agent_sys)),
    );
    out.insert("ps_cli".into(), cli_ps.json());
    out.insert("ps_admin".into(), admin_ps.json());
    out.insert("ps_json_bytes".into(), json!(ps_bytes));
    out.insert("spawn_flat_ratio".into(), json!(round(flat)));
    out.insert("answered".into(), json!(answered));
    out.insert("answer_s".into(), json!(round(answer_time.as_secs_f64())));
    progress(&format!("scale/{label}: tearing down"));
    let t = Instant::now();
    drop(d);
    out.insert("teardown_s".into(), json!(round(t.elapsed().as_secs_f64())));
    Ok(Value::Object(out))
}

pub(crate) fn sec_scale(ctx: &Ctx) -> Result<Value, String> {
    let s = &ctx.sizes;
    let tiny = |i: usize| agent_req(ctx, &format!("idle{i}"), &args(&[&"idle"]), &["ipc"]);
    let tiny_v = scale_population(ctx, "tiny", s.scale, &tiny)?;
    let runtime = |i: usize| SpawnRequest {
        name: format!("llm{i}"),
        model: Some("idle".into()),
        role: Some("Wait for messages.".into()),
        permissions: Some(vec!["ipc".into()]),
        ..Default::default()
    };
    let rt_v = if s.scale_rt > 0 {
        scale_population(ctx, "runtime", s.scale_rt, &runtime)?
    } else {
        Value::Null
    };
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let limits = next_limits(ctx, &tiny_v, &rt_v, pid_max);
    Ok(json!({
        "measured": "N idle confined agents: examples/bench-agent `idle` (blocked in RECV_MSG) and the built-in runtime (scripted model whose reply is RECV_MSG with a 24 h wait). PSS: /proc/<pid>/smaps_rollup of each agent's pid 1, plus the launcher server they share, once. `agentos ps`: the CLI binary, wall time. Answering: every agent is sent a message and must take it from its inbox (its RECV_MSG counter rises and it blocks again).",
        "tiny": tiny_v,
        "runtime": rt_v,
        "limits": limits,
    }))
}

/// How many agents each limit allows, from the measured per-agent costs.
fn next_limits(ctx: &Ctx, tiny: &Value, rt: &Value, pid_max: u64) -> Value {
    let pop = if rt.is_object() { rt } else { tiny };
    let fds = pop["daemon_fds_per_agent"].as_f64().unwrap_or(0.0);
    let pss = pop["pss_per_agent_kib"].as_f64().unwrap_or(0.0);
    let sys = pop["host_memory_per_agent_kib"].as_f64().unwrap_or(0.0);
    let n = pop["agents_spawned"].as_f64().unwrap_or(0.0).max(1.0);
    let tasks = pop["pss"]["threads"].as_f64().unwrap_or(0.0) / n;
    let mem_kib = meminfo_kib("MemTotal") as f64;
    let nofile = ctx.nofile as f64;
    let by_fd = if fds > 0.0 { nofile / fds } else { 0.0 };
    let by_fd_1024 = if fds > 0.0 { 1024.0 / fds } else { 0.0 };
    let by_pid = if tasks > 0.0 {
        pid_max as f64 / tasks
    } else {
        0.0
    };
    let per_agent_mem = sys.max(pss);
    let by_mem = if per_agent_mem > 0.0 {
        mem_kib / per_agent_mem
    } else {
        0.0
    };
    let by_uid = 100_000.0;
    let fd_label = format!("RLIMIT_NOFILE of the daemon ({})", ctx.nofile);
    let mut list = [
        (fd_label.as_str(), by_fd),
        ("pid_max (tasks: agent threads)", by_pid),
        ("memory (MemTotal / host memory per agent)", by_mem),
        ("uid range (default 400000-499999)", by_uid),
    ];
    list.sort_by(|a, b| a.1.total_cmp(&b.1));
    ctx.row(
        "scale",
        "next limit",
        format!(
            "{} at ~{:.0} agents; then {} (~{:.0}); a daemon left at the common soft RLIMIT_NOFILE of 1024 stops at ~{:.0}",
            list[0].0, list[0].1, list[1].0, list[1].1, by_fd_1024
        ),
    );
    json!({
        "fds_per_agent": round(fds),
        "tasks_per_agent": round(tasks),
        "host_memory_per_agent_kib": round(per_agent_mem),
        "pid_max": pid_max,
        "daemon_nofile": ctx.nofile,
        "max_agents_by_daemon_nofile": by_fd.round(),
        "max_agents_by_nofile_65536": if fds > 0.0 { (65536.0 / fds).round() } else { 0.0 },
        "max_agents_by_nofile_1024": by_fd_1024.round(),
        "max_agents_by_pid_max": by_pid.round(),
        "max_agents_by_memory": by_mem.round(),
        "max_agents_by_default_uid_range": by_uid,
        "first_limit": list[0].0,
    })
}
