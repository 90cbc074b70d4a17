//! `agentos-bench`: measures a real AgentOS daemon on this machine.
//!
//!     sudo target/release/examples/agentos-bench [--quick] [--json] [--only NAME,...]
//!
//! It starts real `agentosd` daemons (the release binaries beside it, its
//! own temporary state directories, cgroup names and uid ranges), runs
//! confined agents (`examples/bench-agent.rs`, and the built-in runtime),
//! and measures, each comparison back to back in the same run:
//!
//! * `spawn` — admin spawn request → the agent's first syscall answered
//!   with its PCB durable, against `bwrap --unshare-all`, a plain
//!   fork+exec of /bin/true and `docker run` (when the test engine runs);
//! * `syscall` — GETPID round trips from inside a sandbox against the same
//!   JSON echoed over a bare socketpair; aggregate calls/s of 8 and 64
//!   agents;
//! * `ipc` — durable SEND_MSG (acknowledged after the group commit): one
//!   sender, 64 concurrent senders, against one write+fdatasync;
//! * `scale` — N idle confined agents (a tiny program, and the built-in
//!   runtime blocked in RECV_MSG): spawn time, daemon RSS, per-agent PSS,
//!   `agentos ps` latency, spawn latency as the daemon grows, and that
//!   every agent still answers;
//! * `scheduler` — LLM_INFER overhead over calling the same local mock
//!   directly, throughput of 100 agents over 16 slots at 50 ms per
//!   inference, fairness of equal and 2:1 weights;
//! * `recovery` — SIGKILL the daemon with 1,000 live agents, start it, time
//!   until every agent answers;
//! * `neighbours` — GETPID p99 of a well-behaved agent, quiet and while
//!   hostile agents and an admin client try each way of exhausting the
//!   daemon, with the daemon's peak RSS.
//!
//! Each section is a module of its own, `examples/bench/<section>.rs`; the
//! /proc and host readers they share are in `examples/bench/host.rs`.
//!
//! `--quick` runs everything once at tiny sizes (CI, `tests/bench_smoke.rs`).
//! `--json` prints the results as JSON on stdout (the table goes to stderr).
//! docs/BENCHMARKS.md explains every figure and the latest results.

#[path = "bench/daemon.rs"]
mod daemon;
#[path = "bench/host.rs"]
mod host;
#[path = "bench/ipc.rs"]
mod ipc;
#[path = "bench/mock.rs"]
mod mock;
#[path = "bench/neighbours.rs"]
mod neighbours;
#[path = "bench/recovery.rs"]
mod recovery;
#[path = "bench/scale.rs"]
mod scale;
#[path = "bench/scheduler.rs"]
mod scheduler;
#[path = "bench/spawn.rs"]
mod spawn;
#[path = "bench/stats.rs"]
mod stats;
#[path = "bench/syscall.rs"]
mod syscall;

use agentos::admin::client::Client;
use agentos::admin::protocol::{AdminRequest, SpawnRequest};
use clap::Parser;
use daemon::{BenchDaemon, Bins};
use host::{CpuSample, CpuUse, machine, raise_nofile};
use mock::MockLlm;
use serde_json::{Value, json};
use stats::{Summary, dur, round};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const SECTIONS: [&str; 7] = [
    "spawn",
    "syscall",
    "ipc",
    "scale",
    "scheduler",
    "recovery",
    "neighbours",
];

/// Measures a real AgentOS daemon (run as root).
#[derive(Debug, Parser)]
#[command(name = "agentos-bench")]
struct Opts {
    /// Every measurement once at tiny sizes (under a minute; for CI).
    #[arg(long)]
    quick: bool,
    /// Print the results as JSON on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// Only these sections: spawn, syscall, ipc, scale, scheduler, recovery,
    /// neighbours.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Idle agents of the scale section [default: 5000; --quick 50].
    #[arg(long, value_parser = positive::<usize>)]
    scale_n: Option<usize>,
    /// Built-in-runtime agents of the scale section [default: scale-n].
    #[arg(long, value_parser = positive::<usize>)]
    scale_runtime_n: Option<usize>,
    /// Spawns measured in the spawn section [default: 200; --quick 5].
    #[arg(long, value_parser = positive::<usize>)]
    spawn_samples: Option<usize>,
    /// Length of each scheduler run in ms [default: 5000; --quick 1000].
    #[arg(long, value_parser = positive::<u64>)]
    scheduler_ms: Option<u64>,
    /// Live agents when the daemon is killed [default: 1000; --quick 20].
    #[arg(long, value_parser = positive::<usize>)]
    recovery_n: Option<usize>,
    /// Directory with agentosd, agentos, agentos-launcher, agentos-runtime
    /// and examples/bench-agent [default: the bench's target directory].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Keep the daemons' state directories and logs.
    #[arg(long)]
    keep: bool,
    /// The docker engine to compare with (skipped when it does not answer).
    #[arg(
        long,
        env = "AGENTOS_TEST_DOCKER_SOCK",
        default_value = "/run/agentos-test-docker/docker.sock"
    )]
    docker_socket: PathBuf,
    #[arg(
        long,
        env = "AGENTOS_TEST_DOCKER_IMAGE",
        default_value = "agentos-busybox:test"
    )]
    docker_image: String,
    /// RLIMIT_NOFILE given to the daemons (raised from the bench's own).
    #[arg(long, default_value_t = 65536)]
    nofile: u64,
}

/// Sizes of one run.
struct Sizes {
    spawn: usize,
    docker: usize,
    getpid: usize,
    pipeline: usize,
    tput_ms: u64,
    send: usize,
    fsync: usize,
    scale: usize,
    scale_rt: usize,
    scale_probe: usize,
    infer: usize,
    sched_agents: usize,
    sched_ms: u64,
    recovery: usize,
}

impl Sizes {
    fn new(o: &Opts) -> Sizes {
        let q = o.quick;
        let scale = o.scale_n.unwrap_or(if q { 50 } else { 5000 });
        Sizes {
            spawn: o.spawn_samples.unwrap_or(if q { 5 } else { 200 }),
            docker: if q { 1 } else { 10 },
            getpid: if q { 2000 } else { 20000 },
            pipeline: if q { 2000 } else { 50000 },
            tput_ms: if q { 500 } else { 3000 },
            send: if q { 100 } else { 2000 },
            fsync: if q { 50 } else { 1000 },
            scale,
            scale_rt: o.scale_runtime_n.unwrap_or(scale),
            scale_probe: if q { 5 } else { 30 },
            infer: if q { 30 } else { 1000 },
            sched_agents: if q { 16 } else { 100 },
            sched_ms: o.scheduler_ms.unwrap_or(if q { 1000 } else { 5000 }),
            recovery: o.recovery_n.unwrap_or(if q { 20 } else { 1000 }),
        }
    }
}

/// One line of the results table.
struct Row {
    section: &'static str,
    metric: String,
    value: String,
    target: String,
    met: Option<bool>,
}

struct Ctx {
    opts: Opts,
    sizes: Sizes,
    bins: Bins,
    mock: MockLlm,
    work: PathBuf,
    uid_base: u32,
    /// RLIMIT_NOFILE the daemons inherit.
    nofile: u64,
    instance: Cell<u32>,
    rows: RefCell<Vec<Row>>,
    targets: RefCell<Vec<Value>>,
    /// The load average when each daemon started (other work on the host
    /// skews throughput figures on 2 cores).
    loads: RefCell<Vec<(String, String)>>,
}

impl Ctx {
    /// A fresh daemon with its own state directory, cgroup and uid block.
    fn daemon(&self, name: &str) -> Result<BenchDaemon, String> {
        let k = self.instance.get();
        self.instance.set(k + 1);
        let first = self.uid_base + k * 20_000;
        let tag = format!("{}-{k}-{name}", std::process::id());
        let load = std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        progress(&format!("starting agentosd ({name}); load average {load}"));
        self.loads.borrow_mut().push((name.to_string(), load));
        BenchDaemon::start(
            &self.bins,
            &tag,
            (first, first + 19_999),
            &self.config_text(),
            self.opts.keep,
        )
    }

    fn config_text(&self) -> String {
        format!(
            r#"# agentos-bench
[webhooks]
listen = "off"

[scheduler]
max_concurrency = 16

[[providers]]
name = "scripted"
kind = "scripted"
script = "{script}"

[[providers]]
name = "mock"
kind = "openai"
base_url = "{base}"
max_concurrency = 16

[[models]]
name = "idle"
provider = "scripted"

[[models]]
name = "mock0"
provider = "mock"
model = "lat0"

[[models]]
name = "mock50"
provider = "mock"
model = "lat50"
"#,
            script = self.work.join("idle-script.json").display(),
            base = self.mock.base_url(),
        )
    }

    fn row(&self, section: &'static str, metric: &str, value: String) {
        self.rows.borrow_mut().push(Row {
            section,
            metric: metric.into(),
            value,
            target: String::new(),
            met: None,
        });
    }

    /// A row with a target; also listed under "targets" in the JSON.
    fn target(
        &self,
        section: &'static str,
        metric: &str,
        value: String,
        target: &str,
        met: Option<bool>,
        measured: Option<f64>,
    ) {
        self.rows.borrow_mut().push(Row {
            section,
            metric: metric.into(),
            value: value.clone(),
            target: target.into(),
            met,
        });
        self.targets.borrow_mut().push(json!({
            "section": section,
            "metric": metric,
            "value": measured.map(round),
            "shown": value,
            "target": target,
            "met": met,
        }));
    }

    /// A latency with a p50 target (in µs) on its row and a p99 target on
    /// a row of its own.
    fn latency_targets(
        &self,
        section: &'static str,
        metric: &str,
        s: &Summary,
        (p50_max, p50_label): (f64, &str),
        (p99_metric, p99_max, p99_label): (&str, f64, &str),
    ) {
        self.target(
            section,
            metric,
            s.text(),
            p50_label,
            Some(s.p50 <= p50_max),
            Some(s.p50),
        );
        self.target(
            section,
            p99_metric,
            dur(s.p99),
            p99_label,
            Some(s.p99 <= p99_max),
            Some(s.p99),
        );
    }
}

fn progress(msg: &str) {
    eprintln!("[agentos-bench] {msg}");
}

fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

// ---------------------------------------------------------------------------
// Talking to the daemon
// ---------------------------------------------------------------------------

fn call(c: &mut Client, req: &AdminRequest) -> Result<Value, String> {
    c.call(req).map_err(|e| format!("{}: {e}", req.name()))
}

fn agent_req(ctx: &Ctx, name: &str, args: &[String], perms: &[&str]) -> SpawnRequest {
    SpawnRequest {
        name: name.into(),
        program: ctx.bins.agent.display().to_string(),
        args: args.to_vec(),
        permissions: Some(perms.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    }
}

fn args(list: &[&dyn std::fmt::Display]) -> Vec<String> {
    list.iter().map(|a| a.to_string()).collect()
}

fn spawn(c: &mut Client, req: SpawnRequest) -> Result<u64, String> {
    let v = call(c, &AdminRequest::Spawn(Box::new(req)))?;
    v["pid"]
        .as_u64()
        .ok_or_else(|| format!("spawn: no pid in {v}"))
}

/// Waits for the agent to end; returns its exit reason, requiring code 0.
fn wait_exit(
    d: &BenchDaemon,
    c: &mut Client,
    pid: u64,
    timeout: Duration,
) -> Result<String, String> {
    let v = call(
        c,
        &AdminRequest::Wait {
            pid,
            timeout_ms: Some(timeout.as_millis() as u64),
        },
    )?;
    let exit = &v["exit"];
    let reason = exit["reason"].as_str().unwrap_or("").to_string();
    if exit["code"].as_i64() != Some(0) {
        let logs = call(
            c,
            &AdminRequest::Logs {
                pid,
                follow: false,
                tail: Some(20),
                since: None,
            },
        )
        .unwrap_or_default();
        return Err(format!(
            "agent {pid} failed: {exit}\nagent log: {logs}\ndaemon log:\n{}",
            d.log_tail(20)
        ));
    }
    Ok(reason)
}

/// The agent's `/workspace/result.txt`: header fields and samples.
fn read_result(d: &BenchDaemon, pid: u64) -> Result<(HashMap<String, u64>, Vec<u64>), String> {
    let p = d.workspace(pid).join("result.txt");
    let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    let mut lines = text.lines();
    let header = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect();
    let samples = lines.filter_map(|l| l.parse().ok()).collect();
    Ok((header, samples))
}

fn ps(c: &mut Client) -> Result<Vec<Value>, String> {
    let v = call(c, &AdminRequest::Ps)?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

/// Waits until every pid in `pids` satisfies `f` (on its PCB); returns how
/// many do at the end.
fn wait_all(
    d: &BenchDaemon,
    pids: &[u64],
    timeout: Duration,
    f: impl Fn(&Value) -> bool,
) -> Result<usize, String> {
    let mut c = d.client()?;
    let want: std::collections::HashSet<u64> = pids.iter().copied().collect();
    let deadline = Instant::now() + timeout;
    loop {
        let n = ps(&mut c)?
            .iter()
            .filter(|p| p["pid"].as_u64().is_some_and(|pid| want.contains(&pid)) && f(p))
            .count();
        if n == want.len() || Instant::now() > deadline {
            return Ok(n);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_blocked(p: &Value) -> bool {
    p["state"] == "BLOCKED"
}

/// Spawns every request over `threads` admin connections. Returns the pids
/// of the spawned agents in request order (skipping failed requests), the
/// errors, and the wall time.
fn spawn_many(
    d: &BenchDaemon,
    reqs: Vec<SpawnRequest>,
    threads: usize,
) -> (Vec<u64>, Vec<String>, Duration) {
    let started = Instant::now();
    let threads = threads.clamp(1, reqs.len().max(1));
    let mut chunks: Vec<Vec<(usize, SpawnRequest)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, r) in reqs.into_iter().enumerate() {
        chunks[i % threads].push((i, r));
    }
    type Spawned = (Vec<(usize, u64)>, Vec<String>);
    let results: Vec<Spawned> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                s.spawn(move || {
                    let mut pids = Vec::new();
                    let mut errors = Vec::new();
                    let mut c = match d.client() {
                        Ok(c) => c,
                        Err(e) => return (pids, vec![e]),
                    };
                    for (i, r) in chunk {
                        match spawn(&mut c, r) {
                            Ok(pid) => pids.push((i, pid)),
                            Err(e) => {
                                errors.push(e);
                                // A limit was reached: stop after a few.
                                if errors.len() >= 5 {
                                    break;
                                }
                                if let Ok(nc) = d.client() {
                                    c = nc;
                                }
                            }
                        }
                    }
                    (pids, errors)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut pids = Vec::new();
    let mut errors = Vec::new();
    for (p, e) in results {
        pids.extend(p);
        errors.extend(e);
    }
    pids.sort_unstable();
    (
        pids.into_iter().map(|(_, p)| p).collect(),
        errors,
        started.elapsed(),
    )
}

/// Sends `body` to every pid over `threads` admin connections.
fn send_all(d: &BenchDaemon, pids: &[u64], body: &str, threads: usize) -> Result<(), String> {
    let threads = threads.clamp(1, pids.len().max(1));
    let errors: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut c = d.client()?;
                    for pid in pids.iter().skip(t).step_by(threads) {
                        call(
                            &mut c,
                            &AdminRequest::Send {
                                pid: *pid,
                                body: body.to_string(),
                            },
                        )?;
                    }
                    Ok::<(), String>(())
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap_or(Err("send thread panicked".into())).err())
            .collect()
    });
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Spawns agents that wait for `go START END`, starts them together for
/// `dur_ms`, waits for them and returns their results.
fn run_together(d: &BenchDaemon, reqs: Vec<SpawnRequest>, dur_ms: u64) -> Result<Together, String> {
    let n = reqs.len();
    let (pids, errors, _) = spawn_many(d, reqs, 4);
    if let Some(e) = errors.first() {
        return Err(format!("spawning {n} agents: {e}"));
    }
    let blocked = wait_all(d, &pids, Duration::from_secs(60), is_blocked)?;
    if blocked != pids.len() {
        return Err(format!("only {blocked} of {n} agents reached RECV_MSG"));
    }
    let lead_ms = 200 + 3 * n as u64;
    let start = mono_ns() + lead_ms * 1_000_000;
    let end = start + dur_ms * 1_000_000;
    send_all(d, &pids, &format!("go {start} {end}"), 4)?;
    if mono_ns() > start {
        progress("warning: the go messages took longer than the lead time");
    }
    // CPU use over the measured window (skipping its first 10%).
    let from = start + dur_ms * 100_000;
    std::thread::sleep(Duration::from_nanos(from.saturating_sub(mono_ns())));
    let before = CpuSample::take(d.pid());
    std::thread::sleep(Duration::from_nanos(end.saturating_sub(mono_ns())));
    let cpu = CpuSample::take(d.pid()).since(&before);
    let mut c = d.client()?;
    let mut results = Vec::new();
    for pid in pids {
        wait_exit(d, &mut c, pid, Duration::from_secs(120))?;
        results.push(read_result(d, pid)?);
    }
    Ok(Together { results, cpu })
}

struct Together {
    results: Vec<(HashMap<String, u64>, Vec<u64>)>,
    cpu: CpuUse,
}

/// Aggregate rate (counts per second) of agents run together.
fn aggregate(results: &[(HashMap<String, u64>, Vec<u64>)], key: &str) -> (u64, f64) {
    let total: u64 = results
        .iter()
        .map(|(h, _)| h.get(key).copied().unwrap_or(0))
        .sum();
    let start = results
        .iter()
        .filter_map(|(h, _)| h.get("start"))
        .min()
        .copied();
    let end = results
        .iter()
        .filter_map(|(h, _)| h.get("end"))
        .max()
        .copied();
    let secs = match (start, end) {
        (Some(s), Some(e)) if e > s => (e - s) as f64 / 1e9,
        _ => 0.0,
    };
    (total, if secs > 0.0 { total as f64 / secs } else { 0.0 })
}

fn print_table(rows: &[Row], out: &mut dyn Write) {
    let w = rows
        .iter()
        .map(|r| r.metric.chars().count())
        .max()
        .unwrap_or(10)
        .min(56);
    let mut last = "";
    for r in rows {
        if r.section != last {
            let _ = writeln!(out, "\n== {}", r.section);
            last = r.section;
        }
        let verdict = match r.met {
            Some(true) => "  [met]",
            Some(false) => "  [MISSED]",
            None => "",
        };
        let target = if r.target.is_empty() {
            String::new()
        } else {
            format!("  (target {})", r.target)
        };
        let _ = writeln!(out, "  {:w$}  {}{target}{verdict}", r.metric, r.value);
    }
}

/// A size of at least 1: a section measured zero times would report empty
/// figures as met targets.
fn positive<T: std::str::FromStr + PartialOrd + From<u8>>(text: &str) -> Result<T, String> {
    match text.parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        Ok(_) => Err("must be at least 1".into()),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

fn main() {
    let opts = Opts::parse();
    for o in &opts.only {
        if !SECTIONS.contains(&o.as_str()) {
            eprintln!("unknown section {o:?}; sections: {}", SECTIONS.join(", "));
            std::process::exit(2);
        }
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "agentos-bench must run as root (it runs agentosd, which creates namespaces, cgroups and uids)"
        );
        std::process::exit(77);
    }
    let bins = match Bins::locate(opts.bin_dir.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("agentos-bench: {e}");
            std::process::exit(2);
        }
    };
    let mock = match MockLlm::start() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("agentos-bench: starting the mock LLM: {e}");
            std::process::exit(1);
        }
    };
    let (nofile_before, nofile_now) = raise_nofile(opts.nofile);
    let work = std::env::temp_dir().join(format!("agentos-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&work);
    let script =
        json!({"default": vec!["[SYS_CALL::RECV_MSG] {\"wait_ms\": 86400000, \"max\": 100}"; 64]});
    if let Err(e) = std::fs::write(work.join("idle-script.json"), script.to_string()) {
        eprintln!("agentos-bench: {e}");
        std::process::exit(1);
    }
    let sizes = Sizes::new(&opts);
    let ctx = Ctx {
        uid_base: 5_000_000 + (std::process::id() % 50) * 100_000,
        sizes,
        bins,
        mock,
        work: work.clone(),
        nofile: nofile_now,
        instance: Cell::new(0),
        rows: RefCell::new(Vec::new()),
        targets: RefCell::new(Vec::new()),
        loads: RefCell::new(Vec::new()),
        opts,
    };
    let want = |s: &str| ctx.opts.only.is_empty() || ctx.opts.only.iter().any(|o| o == s);
    let started = Instant::now();
    let mut sections = serde_json::Map::new();
    let mut record = |name: &str, r: Result<Value, String>| {
        let v = match r {
            Ok(v) => v,
            Err(e) => {
                progress(&format!("{name} FAILED: {e}"));
                ctx.rows.borrow_mut().push(Row {
                    section: SECTIONS
                        .iter()
                        .find(|s| **s == name)
                        .copied()
                        .unwrap_or("?"),
                    metric: "error".into(),
                    value: e.lines().next().unwrap_or("").to_string(),
                    target: String::new(),
                    met: Some(false),
                });
                json!({"error": e})
            }
        };
        sections.insert(name.to_string(), v);
    };

    // Every section runs on a fresh daemon of its own.
    type Section = fn(&Ctx, &BenchDaemon) -> Result<Value, String>;
    let with_daemon: [(&str, Section); 5] = [
        ("spawn", spawn::sec_spawn),
        ("syscall", syscall::sec_syscall),
        ("ipc", ipc::sec_ipc),
        ("scheduler", scheduler::sec_scheduler),
        ("neighbours", neighbours::sec_neighbours),
    ];
    for (name, f) in with_daemon {
        if want(name) {
            let r = ctx.daemon(name).and_then(|d| f(&ctx, &d));
            record(name, r);
        }
    }
    if want("scale") {
        record("scale", scale::sec_scale(&ctx));
    }
    if want("recovery") {
        record("recovery", recovery::sec_recovery(&ctx));
    }
    let _ = std::fs::remove_dir_all(&work);

    let result = json!({
        "version": 1,
        "quick": ctx.opts.quick,
        "elapsed_s": round(started.elapsed().as_secs_f64()),
        "machine": machine(&std::env::temp_dir()),
        "bench": {
            "nofile_before": nofile_before,
            "nofile_daemons": nofile_now,
            "sizes": {
                "spawn": ctx.sizes.spawn, "docker": ctx.sizes.docker, "getpid": ctx.sizes.getpid,
                "tput_ms": ctx.sizes.tput_ms, "send": ctx.sizes.send, "scale": ctx.sizes.scale,
                "scale_runtime": ctx.sizes.scale_rt, "infer": ctx.sizes.infer,
                "scheduler_agents": ctx.sizes.sched_agents, "scheduler_ms": ctx.sizes.sched_ms,
                "recovery": ctx.sizes.recovery,
            },
        },
        "sections": sections,
        "targets": ctx.targets.borrow().clone(),
        "load_average_at_daemon_start": ctx.loads.borrow().iter().map(|(k, v)| json!({"daemon": k, "load": v})).collect::<Vec<_>>(),
    });
    let rows = ctx.rows.borrow();
    let loads: Vec<String> = ctx
        .loads
        .borrow()
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let footer = format!(
        "\n(daemons' RLIMIT_NOFILE {nofile_now}, the bench's was {nofile_before}; load average at each daemon start: {}; {:.0} s in all)",
        loads.join(", "),
        started.elapsed().as_secs_f64()
    );
    if ctx.opts.json {
        print_table(&rows, &mut std::io::stderr());
        eprintln!("{footer}");
        println!(
            "{}",
            serde_json::to_string_pretty(&result).unwrap_or_default()
        );
    } else {
        print_table(&rows, &mut std::io::stdout());
        println!("{footer}");
    }
}
