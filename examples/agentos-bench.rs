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
//!   daemon (examples/bench/neighbours.rs), with the daemon's peak RSS.
//!
//! `--quick` runs everything once at tiny sizes (CI, `tests/bench_smoke.rs`).
//! `--json` prints the results as JSON on stdout (the table goes to stderr).
//! docs/BENCHMARKS.md explains every figure and the latest results.

#[path = "bench/daemon.rs"]
mod daemon;
#[path = "bench/mock.rs"]
mod mock;
#[path = "bench/neighbours.rs"]
mod neighbours;
#[path = "bench/stats.rs"]
mod stats;

use agentos::admin::client::Client;
use agentos::admin::protocol::{AdminRequest, SpawnRequest};
use clap::Parser;
use daemon::{BenchDaemon, Bins};
use mock::MockLlm;
use serde_json::{Value, json};
use stats::{Summary, dur, ratio, round};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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

/// CPU counters of the daemon (all threads) and of the whole machine.
struct CpuSample {
    at: Instant,
    daemon_ticks: u64,
    total: u64,
    idle: u64,
}

/// CPU use between two samples: cores used by the daemon, share of the
/// machine busy.
#[derive(Clone, Copy)]
struct CpuUse {
    daemon_cores: f64,
    machine_busy: f64,
}

impl CpuUse {
    fn json(&self) -> Value {
        json!({"daemon_cores": round(self.daemon_cores), "machine_busy": round(self.machine_busy)})
    }

    /// Daemon CPU time per operation, at `rate` operations per second.
    fn per_op_us(&self, rate: f64) -> f64 {
        if rate > 0.0 {
            self.daemon_cores / rate * 1e6
        } else {
            0.0
        }
    }
}

impl CpuSample {
    fn take(pid: u32) -> CpuSample {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let daemon_ticks = stat
            .rfind(')')
            .map(|i| &stat[i + 2..])
            .map(|rest| {
                let f: Vec<&str> = rest.split_whitespace().collect();
                // utime and stime are fields 14 and 15 (11 and 12 after the command).
                f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                    + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            })
            .unwrap_or(0);
        let all = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu: Vec<u64> = all
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        CpuSample {
            at: Instant::now(),
            daemon_ticks,
            total: cpu.iter().sum(),
            idle: cpu.get(3).copied().unwrap_or(0) + cpu.get(4).copied().unwrap_or(0),
        }
    }

    fn since(&self, before: &CpuSample) -> CpuUse {
        // SAFETY: sysconf only reads a configuration value.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let secs = self.at.duration_since(before.at).as_secs_f64().max(1e-9);
        let total = self.total.saturating_sub(before.total).max(1) as f64;
        CpuUse {
            daemon_cores: self.daemon_ticks.saturating_sub(before.daemon_ticks) as f64 / hz / secs,
            machine_busy: 1.0 - self.idle.saturating_sub(before.idle) as f64 / total,
        }
    }
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
fn spawn_series(
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

// ---------------------------------------------------------------------------
// Host measurements
// ---------------------------------------------------------------------------

fn time_command(cmd: &mut Command) -> Result<u64, String> {
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
fn bwrap_series(k: usize) -> Option<Summary> {
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

/// A 64-byte write + fdatasync, `n` times, in `dir`: appending (the file
/// grows, so the journal commits its size too) and overwriting inside a
/// preallocated file (data only). Returns (append, overwrite).
fn fdatasync_floor(dir: &Path, n: usize) -> Result<(Summary, Summary), String> {
    use std::os::unix::fs::FileExt;
    let p = dir.join("bench-fdatasync");
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&p)
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let buf = [0x5au8; 64];
    let run = |f: &std::fs::File, wrap: Option<usize>| -> Result<Summary, String> {
        let mut samples = Vec::with_capacity(n);
        for i in 0..n + 5 {
            let off = match wrap {
                Some(slots) => (i % slots) * 64,
                None => i * 64,
            };
            let t = mono_ns();
            f.write_at(&buf, off as u64).map_err(|e| e.to_string())?;
            f.sync_data().map_err(|e| e.to_string())?;
            if i >= 5 {
                samples.push(mono_ns() - t);
            }
        }
        Ok(Summary::of_ns(&samples))
    };
    let append = run(&open()?, None)?;
    let f = open()?;
    f.write_at(&vec![0u8; 1 << 20], 0)
        .map_err(|e| e.to_string())?;
    f.sync_all().map_err(|e| e.to_string())?;
    let overwrite = run(&f, Some((1 << 20) / 64))?;
    let _ = std::fs::remove_file(&p);
    Ok((append, overwrite))
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

fn meminfo_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// /proc/meminfo lines whose growth per agent shows the kernel's share.
const KERNEL_MEMINFO: [&str; 7] = [
    "Slab",
    "SUnreclaim",
    "KernelStack",
    "PageTables",
    "Percpu",
    "Shmem",
    "AnonPages",
];

fn status_field(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn nofile_limit(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn pss_kib(pid: u64) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn ppid_of(pid: u64) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn threads_of(pid: u64) -> u64 {
    status_field(pid as u32, "Threads")
}

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

// ---------------------------------------------------------------------------
// Sections
// ---------------------------------------------------------------------------

fn sec_spawn(ctx: &Ctx, d: &BenchDaemon) -> Result<Value, String> {
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

fn throughput_text(rate: f64, lat: &Summary, cpu: &CpuUse, unit: &str) -> String {
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

fn sec_syscall(ctx: &Ctx, d: &BenchDaemon) -> Result<Value, String> {
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

fn sec_ipc(ctx: &Ctx, d: &BenchDaemon) -> Result<Value, String> {
    let s = &ctx.sizes;
    let mut c = d.client()?;
    progress("ipc: 8 sink agents draining their inboxes every 20 ms");
    let sink_reqs = (0..8)
        .map(|i| agent_req(ctx, &format!("sink{i}"), &args(&[&"drain", &20]), &["ipc"]))
        .collect();
    let (sinks, errors, _) = spawn_many(d, sink_reqs, 2);
    if let Some(e) = errors.first() {
        return Err(e.clone());
    }
    progress(&format!("ipc: one sender, {} sequential SEND_MSG", s.send));
    let pid = spawn(
        &mut c,
        agent_req(
            ctx,
            "sender",
            &args(&[&"send", &sinks[0], &s.send]),
            &["ipc"],
        ),
    )?;
    wait_exit(d, &mut c, pid, Duration::from_secs(300))?;
    let (_, samples) = read_result(d, pid)?;
    let one = Summary::of_ns(&samples);
    let (fsync_append, fsync) = fdatasync_floor(&d.state_dir(), s.fsync)?;

    progress(&format!("ipc: 64 senders for {} ms", s.tput_ms));
    let reqs = (0..64)
        .map(|i| {
            agent_req(
                ctx,
                &format!("sender{i}"),
                &args(&[&"send-until", &sinks[i % sinks.len()]]),
                &["ipc"],
            )
        })
        .collect();
    let together = run_together(d, reqs, s.tput_ms)?;
    let res = &together.results;
    let cpu64 = together.cpu;
    let (total, rate) = aggregate(res, "count");
    let all: Vec<u64> = res.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    let lat64 = Summary::of_ns(&all);
    std::thread::sleep(Duration::from_millis(100));
    let received: u64 = ps(&mut c)?
        .iter()
        .filter(|p| p["pid"].as_u64().is_some_and(|pid| sinks.contains(&pid)))
        .map(|p| p["counters"]["messages_received"].as_u64().unwrap_or(0))
        .sum();
    for pid in &sinks {
        let _ = call(&mut c, &AdminRequest::Kill { pid: *pid });
    }
    let r_fsync = ratio(one.p50, fsync.p50);
    ctx.target(
        "ipc",
        "SEND_MSG acknowledged durable, one sender",
        one.text(),
        "p50 ≤ 1.5 ms",
        Some(one.p50 <= 1500.0),
        Some(one.p50),
    );
    ctx.row(
        "ipc",
        "write+fdatasync in place on the state dir (floor)",
        fsync.text(),
    );
    ctx.row(
        "ipc",
        "append+fdatasync on the state dir",
        fsync_append.text(),
    );
    ctx.row(
        "ipc",
        "ratio SEND_MSG/fdatasync (p50)",
        format!("{:.2}", r_fsync.unwrap_or(0.0)),
    );
    ctx.target(
        "ipc",
        "64 concurrent senders",
        throughput_text(rate, &lat64, &cpu64, "msgs"),
        "≥ 20,000 msgs/s",
        Some(rate >= 20_000.0),
        Some(rate),
    );
    Ok(json!({
        "measured": "SEND_MSG from confined agents to 8 draining sink agents, timed inside the sender; acknowledged only after the group commit (sled flush + fdatasync). Floor: a 64-byte write in place in a preallocated file + fdatasync, looped in the bench on the state directory's filesystem (appending, which also commits the file size, for reference).",
        "one_sender": one.json(),
        "fdatasync_floor": fsync.json(),
        "fdatasync_append": fsync_append.json(),
        "ratio_send_fdatasync": r_fsync.map(round),
        "senders_64": {
            "acknowledged": total,
            "msgs_per_s": round(rate),
            "latency": lat64.json(),
            "received_by_sinks": received,
            "cpu": cpu64.json(),
            "daemon_cpu_us_per_msg": round(cpu64.per_op_us(rate)),
        },
    }))
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

fn sec_scale(ctx: &Ctx) -> Result<Value, String> {
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

fn sec_scheduler(ctx: &Ctx, d: &BenchDaemon) -> Result<Value, String> {
    let s = &ctx.sizes;
    let mut c = d.client()?;
    progress(&format!(
        "scheduler: {} sequential LLM_INFER (mock, 0 ms)",
        s.infer
    ));
    let req = SpawnRequest {
        model: Some("mock0".into()),
        ..agent_req(ctx, "infer", &args(&[&"infer", &s.infer]), &["inference"])
    };
    let pid = spawn(&mut c, req)?;
    wait_exit(d, &mut c, pid, Duration::from_secs(300))?;
    let (_, samples) = read_result(d, pid)?;
    let via = Summary::of_ns(&samples);
    // The same request straight to the mock from the bench, keep-alive.
    let body = json!({"model": "lat0", "messages": [{"role": "user", "content": "Say ok."}], "max_tokens": 16}).to_string();
    let mut raw = mock::RawClient::connect(ctx.mock.addr).map_err(|e| e.to_string())?;
    let mut direct = Vec::new();
    for i in 0..s.infer + s.infer / 10 {
        let t = mono_ns();
        raw.chat(&body).map_err(|e| e.to_string())?;
        if i >= s.infer / 10 {
            direct.push(mono_ns() - t);
        }
    }
    let direct = Summary::of_ns(&direct);
    let overhead = via.p50 - direct.p50;
    // The daemon's own provider code (reqwest, the OpenAI body and parser)
    // called from the bench, and one durable call (a flush) in the same
    // daemon: the two parts of the overhead that are not the dispatcher.
    let provider = provider_floor(ctx, s.infer)?;
    let pid = spawn(
        &mut c,
        agent_req(
            ctx,
            "durable",
            &args(&[&"send-self", &s.infer.min(500)]),
            &["ipc"],
        ),
    )?;
    wait_exit(d, &mut c, pid, Duration::from_secs(300))?;
    let durable = Summary::of_ns(&read_result(d, pid)?.1);

    // Throughput and equal shares.
    let n = s.sched_agents;
    progress(&format!(
        "scheduler: {n} agents, 16 slots, mock at 50 ms, for {} ms",
        s.sched_ms
    ));
    let mk = |name: String, depth: u32, priority: u32| SpawnRequest {
        model: Some("mock50".into()),
        priority: Some(priority),
        ..agent_req(
            ctx,
            &name,
            &args(&[&"infer-until", &depth]),
            &["inference", "ipc"],
        )
    };
    let together = run_together(
        d,
        (0..n).map(|i| mk(format!("eq{i}"), 1, 1)).collect(),
        s.sched_ms,
    )?;
    let res = &together.results;
    let (done, rate) = aggregate(res, "count");
    let tokens: Vec<f64> = res
        .iter()
        .map(|(h, _)| h.get("tokens").copied().unwrap_or(0) as f64)
        .collect();
    let (tmax, tmin) = (
        tokens.iter().cloned().fold(0.0, f64::max),
        tokens.iter().cloned().fold(f64::INFINITY, f64::min),
    );
    let tsum: f64 = tokens.iter().sum();
    let tsq: f64 = tokens.iter().map(|t| t * t).sum();
    let jain = if tsq > 0.0 {
        tsum * tsum / (tokens.len() as f64 * tsq)
    } else {
        0.0
    };
    let lat: Vec<u64> = res.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    let lat = Summary::of_ns(&lat);
    let ideal = 16.0 / 0.050;

    // Weights 2:1, every agent backlogged (4 requests in flight each).
    let half = n / 2;
    progress(&format!(
        "scheduler: {half} agents of weight 2 and {half} of weight 1, 4 requests in flight each"
    ));
    let reqs = (0..2 * half)
        .map(|i| mk(format!("w{i}"), 4, if i < half { 2 } else { 1 }))
        .collect();
    let wres = run_together(d, reqs, s.sched_ms)?.results;
    let group = |r: std::ops::Range<usize>| -> f64 {
        let len = r.len().max(1) as f64;
        wres[r]
            .iter()
            .map(|(h, _)| h.get("tokens").copied().unwrap_or(0) as f64)
            .sum::<f64>()
            / len
    };
    let (w2, w1) = (group(0..half), group(half..2 * half));
    let wratio = ratio(w2, w1);
    let (_, wrate) = aggregate(&wres, "count");

    ctx.target(
        "scheduler",
        "LLM_INFER overhead over a direct call (p50)",
        format!(
            "{} (via AgentOS {}, direct {})",
            dur(overhead),
            via.text(),
            direct.text()
        ),
        "≤ 200 µs",
        Some(overhead <= 200.0),
        Some(overhead),
    );
    ctx.row(
        "scheduler",
        "  the provider code alone (reqwest → mock), from the bench",
        provider.text(),
    );
    ctx.row(
        "scheduler",
        "  one durable call (SEND_MSG to itself) in this daemon",
        durable.text(),
    );
    ctx.target(
        "scheduler",
        &format!("throughput, {n} agents, 16 slots, 50 ms"),
        format!(
            "{rate:.0}/s = {:.0}% of {ideal:.0}/s (latency {})",
            rate / ideal * 100.0,
            lat.text()
        ),
        "≥ 90% of 320/s",
        Some(rate >= 0.9 * ideal),
        Some(rate),
    );
    ctx.row(
        "scheduler",
        "equal weights: tokens per agent",
        format!(
            "max/min {:.2}, (max-min)/mean {:.1}%, Jain index {jain:.3}",
            ratio(tmax, tmin).unwrap_or(0.0),
            (tmax - tmin) / (tsum / tokens.len().max(1) as f64).max(1e-9) * 100.0
        ),
    );
    ctx.target(
        "scheduler",
        "weights 2:1, token share ratio",
        format!("{:.2} ({wrate:.0}/s in total)", wratio.unwrap_or(0.0)),
        "≈ 2 (1.8-2.2)",
        wratio.map(|r| (1.8..=2.2).contains(&r)),
        wratio,
    );
    Ok(json!({
        "measured": "LLM_INFER from a confined agent (examples/bench-agent) to an OpenAI-compatible mock in the bench (std HTTP/1.1, keep-alive), against the bench calling the mock directly with a raw keep-alive HTTP client. Throughput: closed-loop agents (one request each in flight) over max_concurrency 16, mock latency 50 ms.",
        "infer_via_agentos": via.json(),
        "infer_direct": direct.json(),
        "overhead_p50_us": round(overhead),
        "provider_code_direct": provider.json(),
        "durable_call_same_daemon": durable.json(),
        "throughput": {
            "agents": n,
            "completed": done,
            "per_s": round(rate),
            "ideal_per_s": ideal,
            "fraction_of_ideal": round(rate / ideal),
            "latency": lat.json(),
            "cpu": together.cpu.json(),
        },
        "fairness_equal": {
            "tokens_max": tmax,
            "tokens_min": tmin,
            "max_over_min": ratio(tmax, tmin).map(round),
            "jain_index": round(jain),
        },
        "weights_2_1": {
            "agents_per_group": half,
            "tokens_per_agent_weight2": round(w2),
            "tokens_per_agent_weight1": round(w1),
            "ratio": wratio.map(round),
            "per_s": round(wrate),
        },
        "mock_requests": ctx.mock.requests.load(std::sync::atomic::Ordering::Relaxed),
    }))
}

/// The daemon's OpenAI provider code (`agentos::llm::openai::infer` over
/// the same reqwest client settings) calling the mock from the bench, on a
/// multi-threaded tokio runtime like the daemon's.
fn provider_floor(ctx: &Ctx, n: usize) -> Result<Summary, String> {
    use agentos::llm::{ChatMessage, InferRequest, Role};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let base = ctx.mock.base_url();
    rt.block_on(async move {
        let client = agentos::llm::http::client_builder(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        let req = InferRequest {
            model: "lat0".into(),
            messages: vec![ChatMessage::new(Role::User, "Say ok.")],
            tools: Vec::new(),
            max_tokens: Some(16),
            temperature: None,
            constraint: None,
            ..Default::default()
        };
        let policy = agentos::llm::http::RetryPolicy::default();
        let mut v = Vec::new();
        for i in 0..n + n / 10 {
            let t = mono_ns();
            agentos::llm::openai::infer(&client, Some(&base), None, &req, &policy)
                .await
                .map_err(|e| e.to_string())?;
            if i >= n / 10 {
                v.push(mono_ns() - t);
            }
        }
        Ok(Summary::of_ns(&v))
    })
}

fn sec_recovery(ctx: &Ctx) -> Result<Value, String> {
    let n = ctx.sizes.recovery;
    let mut d = ctx.daemon("recovery")?;
    progress(&format!("recovery: spawning {n} idle agents"));
    let reqs = (0..n)
        .map(|i| agent_req(ctx, &format!("rec{i}"), &args(&[&"idle"]), &["ipc"]))
        .collect();
    let (pids, errors, spawn_time) = spawn_many(&d, reqs, 4);
    if let Some(e) = errors.first() {
        return Err(format!("spawning: {e}"));
    }
    let blocked = wait_all(&d, &pids, Duration::from_secs(300), is_blocked)?;
    if blocked != n {
        return Err(format!("only {blocked} of {n} agents blocked in RECV_MSG"));
    }
    progress("recovery: SIGKILL the daemon");
    d.crash();
    let t0 = Instant::now();
    d.launch()?;
    let ready = t0.elapsed();
    progress(&format!(
        "recovery: daemon answering after {:.2} s; pinging every agent",
        ready.as_secs_f64()
    ));
    send_all(&d, &pids, "ping", 8)?;
    let answered = wait_all(&d, &pids, Duration::from_secs(300), |p| {
        p["counters"]["messages_received"].as_u64().unwrap_or(0) >= 1
            && p["recoveries"].as_u64() == Some(1)
    })?;
    let took = t0.elapsed();
    let log_ms = d
        .log()
        .lines()
        .rev()
        .find(|l| l.contains("recovery finished"))
        .and_then(|l| l.split("millis=").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse::<u64>().ok());
    ctx.target(
        "recovery",
        &format!("SIGKILL with {n} live agents → all answer"),
        format!(
            "{:.2} s ({answered} of {n}; daemon serving after {:.2} s, relaunch {} )",
            took.as_secs_f64(),
            ready.as_secs_f64(),
            log_ms
                .map(|m| format!("{m} ms"))
                .unwrap_or_else(|| "?".into())
        ),
        "≤ 10 s",
        Some(answered == n && took <= Duration::from_secs(10)),
        Some(took.as_secs_f64()),
    );
    Ok(json!({
        "measured": "N examples/bench-agent `idle` agents; SIGKILL the daemon (the agents die with it), wait until their processes are gone, then start the daemon: time from exec of the new daemon until every agent has taken a message from its inbox in a fresh sandbox.",
        "agents": n,
        "spawn_s": round(spawn_time.as_secs_f64()),
        "ready_s": round(ready.as_secs_f64()),
        "all_answer_s": round(took.as_secs_f64()),
        "answered": answered,
        "relaunch_ms_logged": log_ms,
    }))
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

fn machine(state_fs: &Path) -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|s| s.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    // The mount holding the state directories.
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut best: Option<(String, String, String)> = None;
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 3 || !state_fs.starts_with(f[1]) {
            continue;
        }
        if best.as_ref().is_none_or(|b| f[1].len() >= b.1.len()) {
            best = Some((f[0].to_string(), f[1].to_string(), f[2].to_string()));
        }
    }
    let (dev, mnt, fstype) = best.unwrap_or_default();
    json!({
        "nproc": nproc,
        "cpu": cpu,
        "mem_total_kib": meminfo_kib("MemTotal"),
        "kernel": kernel,
        "state_fs": {"device": dev, "mount": mnt, "type": fstype},
        "pid_max": std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap_or_default().trim(),
    })
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

fn raise_nofile(want: u64) -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the valid rlimit struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        let before = r.rlim_cur;
        let new = libc::rlimit {
            rlim_cur: want,
            rlim_max: want.max(r.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &new) != 0 {
            // Not root: take what the hard limit allows.
            let new = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &new);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        (before, r.rlim_cur)
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
        ("spawn", sec_spawn),
        ("syscall", sec_syscall),
        ("ipc", sec_ipc),
        ("scheduler", sec_scheduler),
        ("neighbours", neighbours::sec_neighbours),
    ];
    for (name, f) in with_daemon {
        if want(name) {
            let r = ctx.daemon(name).and_then(|d| f(&ctx, &d));
            record(name, r);
        }
    }
    if want("scale") {
        record("scale", sec_scale(&ctx));
    }
    if want("recovery") {
        record("recovery", sec_recovery(&ctx));
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
