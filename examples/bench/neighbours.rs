//! The `neighbours` section of agentos-bench: how much a well-behaved agent
//! suffers while hostile agents (and a hostile admin client) try to exhaust
//! the daemon.
//!
//! One daemon. The quiet figure: a confined `bench-agent getpid-until`
//! makes sequential GETPIDs for a fixed window with nothing else running.
//! For each attack class in turn, and finally for all of them at once, a
//! quiet run and then the same measurement while the attack runs (each
//! ratio is to the quiet run just before it):
//!
//! * inbox flood — `bench-agent flood-inbox` (256 KiB messages to itself,
//!   then RECV_MSG replies it never reads);
//! * stdout flood — `bench-agent flood-stdout`;
//! * fork to the pids limit — `bench-agent fork`;
//! * memory balloon — `bench-agent balloon` (killed by its memory limit and
//!   spawned again while the window lasts);
//! * disk fill — `bench-agent disk-fill` (writes its workspace to the quota);
//! * admin connection flood — the bench opens connections to the admin
//!   socket, each holding an unterminated 64 KiB request line.
//!
//! Every hostile agent runs with small limits (64 MiB, 64 pids, 16 MiB of
//! workspace). The daemon's RSS is sampled every 20 ms throughout; each row
//! prints the GETPID p99 under attack, its ratio to the quiet p99 and the
//! daemon's peak RSS. Targets (issue: resource isolation): every ratio ≤ 2,
//! daemon RSS ≤ 256 MiB + 64 KiB per agent.

use crate::daemon::BenchDaemon;
use crate::host::status_field;
use crate::stats::{Summary, dur, ratio, round};
use crate::{Ctx, agent_req, args, call, progress, ps, read_result, spawn, wait_exit};
use agentos::abi::limits::LimitsPatch;
use agentos::admin::client::Client;
use agentos::admin::protocol::{AdminRequest, SpawnRequest};
use serde_json::{Value, json};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One attack class.
#[derive(Clone, Copy, PartialEq)]
enum Attack {
    /// Hostile agents running this bench-agent mode.
    Agent(&'static str),
    /// Idle admin connections holding an unterminated line.
    AdminFlood,
}

const CLASSES: [(&str, Attack); 6] = [
    ("inbox flood", Attack::Agent("flood-inbox")),
    ("stdout flood", Attack::Agent("flood-stdout")),
    ("fork to the pids limit", Attack::Agent("fork")),
    ("memory balloon", Attack::Agent("balloon")),
    ("disk fill", Attack::Agent("disk-fill")),
    ("admin connection flood", Attack::AdminFlood),
];

/// Sizes of this section.
struct Sizes {
    /// Hostile agents per class.
    hostiles: usize,
    /// Admin connections of the connection flood.
    connections: usize,
    /// Time the attack runs before the measurement starts.
    warmup: Duration,
    /// Length of the measurement window.
    window: Duration,
}

fn sizes(quick: bool) -> Sizes {
    if quick {
        Sizes {
            hostiles: 1,
            connections: 100,
            warmup: Duration::from_millis(500),
            window: Duration::from_millis(700),
        }
    } else {
        Sizes {
            hostiles: 2,
            connections: 500,
            warmup: Duration::from_secs(3),
            window: Duration::from_secs(5),
        }
    }
}

fn hostile_req(ctx: &Ctx, mode: &str, k: usize) -> SpawnRequest {
    let mut req = agent_req(
        ctx,
        &format!("hostile-{mode}-{k}"),
        &args(&[&mode]),
        &["process", "ipc", "fs"],
    );
    req.limits = Some(LimitsPatch {
        memory_bytes: Some(64 << 20),
        pids: Some(64),
        workspace_bytes: Some(16 << 20),
        ..Default::default()
    });
    req
}

/// Peak daemon RSS (KiB) sampled while `f` runs.
fn with_rss_sampler<T>(d: &BenchDaemon, f: impl FnOnce() -> T) -> (T, u64) {
    let stop = AtomicBool::new(false);
    let peak = AtomicU64::new(0);
    let pid = d.pid();
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(status_field(pid, "VmRSS:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let out = f();
        stop.store(true, Ordering::Relaxed);
        out
    });
    (out, peak.load(Ordering::Relaxed))
}

/// GETPID latencies of one well-behaved agent over `window`, started after
/// `warmup` (both spent with whatever else is running).
/// `c` is opened before any attack starts: a flood of other connections
/// must not keep the operator out.
fn measure(ctx: &Ctx, d: &BenchDaemon, c: &mut Client, sz: &Sizes) -> Result<Measured, String> {
    let pid = spawn(
        c,
        agent_req(ctx, "neighbour", &args(&[&"getpid-until"]), &["ipc"]),
    )?;
    std::thread::sleep(sz.warmup);
    let start = crate::mono_ns() + 50_000_000;
    let end = start + sz.window.as_nanos() as u64;
    call(
        c,
        &AdminRequest::Send {
            pid,
            body: format!("go {start} {end}"),
        },
    )?;
    wait_exit(d, c, pid, Duration::from_secs(120))?;
    let (header, samples) = read_result(d, pid)?;
    if samples.is_empty() {
        return Err(format!("the neighbour {pid} made no call in its window"));
    }
    Ok(Measured {
        getpid: Summary::of_ns(&samples),
        go_late_ns: header.get("late").copied().unwrap_or(0),
    })
}

/// One measurement of the well-behaved agent.
struct Measured {
    getpid: Summary,
    /// How late its `go` message (sent by the bench through the admin
    /// socket, delivered with RECV_MSG) arrived after the window's start.
    go_late_ns: u64,
}

/// Runs `attacks` while measuring the neighbour; kills every hostile
/// afterwards. Returns the neighbour's latencies and what the attacks saw.
fn under_attack(
    ctx: &Ctx,
    d: &BenchDaemon,
    sz: &Sizes,
    attacks: &[Attack],
) -> Result<(Measured, Value), String> {
    let mut c = d.client()?;
    let modes: Vec<&str> = attacks
        .iter()
        .filter_map(|a| match a {
            Attack::Agent(m) => Some(*m),
            Attack::AdminFlood => None,
        })
        .collect();
    let mut hostiles: Vec<(u64, SpawnRequest)> = Vec::new();
    for mode in &modes {
        for k in 0..sz.hostiles {
            let req = hostile_req(ctx, mode, k);
            hostiles.push((spawn(&mut c, req.clone())?, req));
        }
    }
    let flood = attacks.contains(&Attack::AdminFlood);
    let stop = &AtomicBool::new(false);
    let respawned = &AtomicU64::new(0);
    let initial = hostiles.clone();
    let mut keeper_client = d.client()?;
    let mut measure_client = d.client()?;
    let (result, connections) = std::thread::scope(|s| {
        // Hostiles that die (the balloon meets its memory limit) are started
        // again for as long as the measurement lasts.
        let keeper = s.spawn(move || {
            let mut live = initial;
            let c = &mut keeper_client;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let Ok(list) = ps(c) else { continue };
                let running: std::collections::HashSet<u64> = list
                    .iter()
                    .filter(|p| p["state"] != "TERMINATED")
                    .filter_map(|p| p["pid"].as_u64())
                    .collect();
                for slot in live.iter_mut() {
                    if !running.contains(&slot.0) {
                        if let Ok(pid) = spawn(c, slot.1.clone()) {
                            slot.0 = pid;
                            respawned.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            live
        });
        let held = if flood {
            admin_flood(d, sz.connections)
        } else {
            Vec::new()
        };
        let result = measure(ctx, d, &mut measure_client, sz);
        stop.store(true, Ordering::Relaxed);
        let held_n = held.len();
        drop(held);
        if let Ok(live) = keeper.join() {
            hostiles.extend(live);
        }
        (result, held_n)
    });
    hostiles.sort_unstable_by_key(|h| h.0);
    hostiles.dedup_by_key(|h| h.0);
    for (pid, _) in &hostiles {
        let _ = call(&mut c, &AdminRequest::Kill { pid: *pid });
    }
    let summary = result?;
    Ok((
        summary,
        json!({
            "hostile_agents": hostiles.len(),
            "respawned": respawned.load(Ordering::Relaxed),
            "admin_connections_held": connections,
        }),
    ))
}

/// Opens up to `n` admin connections, each holding 64 KiB of a request line
/// that never ends; returns those the daemon let in.
fn admin_flood(d: &BenchDaemon, n: usize) -> Vec<UnixStream> {
    let partial = vec![b'a'; 64 * 1024];
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(mut s) = UnixStream::connect(&d.socket) else {
            continue;
        };
        let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
        if s.write_all(&partial).is_ok() {
            held.push(s);
        }
    }
    held
}

pub fn sec_neighbours(ctx: &Ctx, d: &BenchDaemon) -> Result<Value, String> {
    let sz = sizes(ctx.opts.quick);
    progress("neighbours: GETPID of a well-behaved agent, quiet");
    let mut c = d.client()?;
    let (quiet, quiet_rss) = with_rss_sampler(d, || measure(ctx, d, &mut c, &sz));
    let quiet = quiet?.getpid;
    ctx.row("neighbours", "GETPID, quiet", quiet.text());
    let mut rows = Vec::new();
    let mut peak_all = quiet_rss;
    let mut agents_peak = 0usize;
    let all: Vec<Attack> = CLASSES.iter().map(|(_, a)| *a).collect();
    let runs: Vec<(&str, Vec<Attack>)> = CLASSES
        .iter()
        .map(|(name, a)| (*name, vec![*a]))
        .chain(std::iter::once(("all at once", all)))
        .collect();
    for (name, attacks) in runs {
        // A quiet run right before each attack is its baseline: other work
        // on a 2-core host moves the figures more than minutes apart.
        let mut c = d.client()?;
        let (before, rss_before) = with_rss_sampler(d, || measure(ctx, d, &mut c, &sz));
        let before = before?.getpid;
        drop(c);
        peak_all = peak_all.max(rss_before);
        progress(&format!("neighbours: GETPID while {name}"));
        let started = Instant::now();
        let (r, rss) = with_rss_sampler(d, || under_attack(ctx, d, &sz, &attacks));
        peak_all = peak_all.max(rss);
        let row = match r {
            Ok((m, seen)) => {
                let s = m.getpid;
                let late = m.go_late_ns as f64 / 1e6;
                let agents = seen["hostile_agents"].as_u64().unwrap_or(0) as usize + 1;
                agents_peak = agents_peak.max(agents);
                let r99 = ratio(s.p99, before.p99);
                ctx.target(
                    "neighbours",
                    &format!("GETPID p99 while {name} (ratio to quiet)"),
                    format!(
                        "{} against {} quiet ({:.2}×), daemon peak RSS {} MiB{}",
                        dur(s.p99),
                        dur(before.p99),
                        r99.unwrap_or(0.0),
                        rss / 1024,
                        if late >= 1.0 {
                            format!(", its go message {late:.0} ms late")
                        } else {
                            String::new()
                        }
                    ),
                    "≤ 2",
                    r99.map(|r| r <= 2.0),
                    r99,
                );
                json!({
                    "attack": name, "getpid": s.json(), "quiet_before": before.json(),
                    "ratio_p99": r99.map(round),
                    "ratio_p50": ratio(s.p50, before.p50).map(round),
                    "daemon_peak_rss_kib": rss, "seen": seen,
                    "go_late_ms": round(late),
                    "elapsed_s": round(started.elapsed().as_secs_f64()),
                })
            }
            Err(e) => {
                ctx.target(
                    "neighbours",
                    &format!("GETPID p99 while {name}"),
                    format!("failed: {}", e.lines().next().unwrap_or("")),
                    "≤ 2",
                    Some(false),
                    None,
                );
                json!({"attack": name, "error": e, "daemon_peak_rss_kib": rss})
            }
        };
        rows.push(row);
    }
    let agents_total = ps(&mut d.client()?)?.len().max(agents_peak);
    let ceiling_kib = 256 * 1024 + 64 * agents_total as u64;
    ctx.target(
        "neighbours",
        "daemon peak RSS over the section",
        format!("{} MiB", peak_all / 1024),
        &format!("≤ 256 MiB + 64 KiB × {agents_total} agents"),
        Some(peak_all <= ceiling_kib),
        Some(peak_all as f64),
    );
    Ok(json!({
        "measured": "GETPID round trips of one confined bench-agent over a fixed window, quiet and then while each attack class runs (and all at once); hostile agents at 64 MiB / 64 pids / 16 MiB workspace; daemon VmRSS sampled every 20 ms.",
        "quiet": quiet.json(),
        "quiet_daemon_rss_kib": quiet_rss,
        "attacks": rows,
        "daemon_peak_rss_kib": peak_all,
        "rss_ceiling_kib": ceiling_kib,
        "agents_recorded": agents_total,
    }))
}
