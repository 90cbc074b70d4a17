//! The `syscall` section of agentos-bench: GETPID round trips from inside
//! a sandbox against the same JSON echoed over a bare socketpair, pipelined
//! GETPIDs, and aggregate calls/s of 8 and 64 agents (8 again once the
//! journal has grown).

use crate::daemon::BenchDaemon;
use crate::host::CpuUse;
use crate::stats::{Summary, ratio, round};
use crate::{
    Ctx, agent_req, aggregate, args, mono_ns, progress, read_result, run_together, spawn, wait_exit,
};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// GETPID's JSON echoed over a bare socketpair between two threads: the
/// request is parsed and a reply serialised, as a minimal server would.
fn socketpair_floor(n: usize, pin: bool) -> Result<Summary, String> {
    let (a, b) = UnixStream::pair().map_err(|e| e.to_string())?;
    let server = std::thread::spawn(move || {
        if pin {
            pin_to_cpu(0);
        }
        let mut w = match b.try_clone() {
            Ok(w) => w,
            Err(_) => return,
        };
        let mut r = BufReader::new(b);
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            let mut reply =
                json!({"id": v["id"], "status": "SUCCESS", "result": {"pid": 7, "ppid": 0}})
                    .to_string();
            reply.push('\n');
            if w.write_all(reply.as_bytes()).is_err() {
                return;
            }
        }
    });
    let client = std::thread::spawn(move || -> Result<Vec<u64>, String> {
        if pin {
            pin_to_cpu(0);
        }
        let mut w = a.try_clone().map_err(|e| e.to_string())?;
        let mut r = BufReader::new(a);
        let mut line = String::new();
        let mut samples = Vec::with_capacity(n);
        for i in 0..n + n / 10 {
            let req = format!("{{\"id\":{i},\"call\":\"GETPID\",\"args\":{{}}}}\n");
            let t = mono_ns();
            w.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
            line.clear();
            r.read_line(&mut line).map_err(|e| e.to_string())?;
            let took = mono_ns() - t;
            if !line.contains("SUCCESS") {
                return Err(format!("bad echo {line}"));
            }
            if i >= n / 10 {
                samples.push(took);
            }
        }
        Ok(samples)
    });
    let samples = client.join().map_err(|_| "floor client panicked")??;
    let _ = server.join();
    Ok(Summary::of_ns(&samples))
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and sched_setaffinity
    // only touch the set and the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// `k` agents calling GETPID together for the bench's duration: (calls/s,
/// JSON of the run, CPU use).
fn getpid_throughput(
    ctx: &Ctx,
    d: &BenchDaemon,
    k: usize,
    tag: &str,
) -> Result<(f64, Value, CpuUse, Summary), String> {
    let s = &ctx.sizes;
    progress(&format!(
        "syscall: {k} agents calling GETPID for {} ms ({tag})",
        s.tput_ms
    ));
    let reqs = (0..k)
        .map(|i| {
            agent_req(
                ctx,
                &format!("tput{k}-{i}"),
                &args(&[&"getpid-until"]),
                &["ipc"],
            )
        })
        .collect();
    let together = run_together(d, reqs, s.tput_ms)?;
    let res = &together.results;
    let (total, rate) = aggregate(res, "count");
    let all: Vec<u64> = res.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    let lat = Summary::of_ns(&all);
    let cpu = together.cpu;
    let v = json!({"agents": k, "calls": total, "calls_per_s": round(rate), "latency": lat.json(),
        "cpu": cpu.json(), "daemon_cpu_us_per_call": round(cpu.per_op_us(rate))});
    Ok((rate, v, cpu, lat))
}

pub(crate) fn throughput_text(rate: f64, lat: &Summary, cpu: &CpuUse, unit: &str) -> String {
    format!(
        "{rate:.0} {unit}/s (latency {}; daemon {:.2} cores = {:.1} µs CPU each, machine {:.0}% busy)",
        lat.text(),
        cpu.daemon_cores,
        cpu.per_op_us(rate),
        cpu.machine_busy * 100.0
    )
}

/// Size of the daemon's database directory on disk.
fn db_size_kib(d: &BenchDaemon) -> u64 {
    fn walk(p: &Path) -> u64 {
        std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    }
    walk(&d.state_dir().join("db")) / 1024
}

pub(crate) fn sec_syscall(ctx: &Ctx, d: &BenchDaemon) -> Result<Value, String> {
    let s = &ctx.sizes;
    let mut c = d.client()?;
    let mut tput = serde_json::Map::new();
    // Throughput first, on a fresh database; again at the end, after the
    // journal has grown by every call of this section.
    let (rate8, v8, cpu8, lat8) = getpid_throughput(ctx, d, 8, "fresh daemon")?;
    tput.insert("agents_8".into(), v8);

    progress(&format!(
        "syscall: {} sequential GETPIDs from one agent",
        s.getpid
    ));
    let pid = spawn(
        &mut c,
        agent_req(ctx, "getpid", &args(&[&"getpid", &s.getpid]), &[]),
    )?;
    wait_exit(d, &mut c, pid, Duration::from_secs(300))?;
    let (_, samples) = read_result(d, pid)?;
    let agent = Summary::of_ns(&samples);
    let floor = socketpair_floor(s.getpid, false)?;
    let floor_pinned = socketpair_floor(s.getpid, true)?;
    let r_floor = ratio(agent.p50, floor.p50);

    progress("syscall: pipelined GETPIDs (16 in flight) from one agent");
    let pid = spawn(
        &mut c,
        agent_req(
            ctx,
            "pipeline",
            &args(&[&"pipeline", &s.pipeline, &16]),
            &[],
        ),
    )?;
    wait_exit(d, &mut c, pid, Duration::from_secs(300))?;
    let (h, _) = read_result(d, pid)?;
    let pipe_rate = match (h.get("start"), h.get("end")) {
        (Some(a), Some(b)) if b > a => s.pipeline as f64 / ((b - a) as f64 / 1e9),
        _ => 0.0,
    };

    let (rate64, v64, cpu64, lat64) = getpid_throughput(ctx, d, 64, "")?;
    tput.insert("agents_64".into(), v64);
    let journal_kib = db_size_kib(d);
    let (rate8b, v8b, cpu8b, lat8b) =
        getpid_throughput(ctx, d, 8, "again, after the journal grew")?;
    tput.insert("agents_8_after_growth".into(), v8b);
    tput.insert("db_kib_before_last_run".into(), json!(journal_kib));

    ctx.latency_targets(
        "syscall",
        "GETPID round trip, one agent",
        &agent,
        (30.0, "p50 ≤ 30 µs"),
        ("GETPID p99", 150.0, "p99 ≤ 150 µs"),
    );
    ctx.row("syscall", "socketpair JSON echo (floor)", floor.text());
    ctx.row(
        "syscall",
        "socketpair JSON echo, pinned to one CPU",
        floor_pinned.text(),
    );
    ctx.target(
        "syscall",
        "ratio GETPID/socketpair (p50)",
        format!("{:.2}", r_floor.unwrap_or(0.0)),
        "≤ 2",
        r_floor.map(|r| r <= 2.0),
        r_floor,
    );
    ctx.target(
        "syscall",
        "GETPID throughput, 8 agents (fresh daemon)",
        throughput_text(rate8, &lat8, &cpu8, "calls"),
        "≥ 50,000 calls/s",
        Some(rate8 >= 50_000.0),
        Some(rate8),
    );
    ctx.target(
        "syscall",
        "GETPID throughput, 64 agents",
        throughput_text(rate64, &lat64, &cpu64, "calls"),
        "≥ 50,000 calls/s",
        Some(rate64 >= 50_000.0),
        Some(rate64),
    );
    ctx.row(
        "syscall",
        &format!("8 agents again, database at {} MiB", journal_kib / 1024),
        throughput_text(rate8b, &lat8b, &cpu8b, "calls"),
    );
    ctx.row(
        "syscall",
        "one agent, 16 GETPIDs in flight",
        format!("{pipe_rate:.0} calls/s"),
    );
    Ok(json!({
        "measured": "GETPID round trips timed inside a confined agent (examples/bench-agent) with CLOCK_MONOTONIC; floor: the same request line parsed and a reply serialised by a thread at the other end of a socketpair in the bench process. Throughput: agents started together by a message, each calling GETPID sequentially until a common deadline; CPU from /proc over the window.",
        "getpid": agent.json(),
        "socketpair_floor": floor.json(),
        "socketpair_floor_pinned": floor_pinned.json(),
        "ratio_getpid_floor": r_floor.map(round),
        "pipelined_16_calls_per_s": round(pipe_rate),
        "throughput": tput,
    }))
}
