//! `agentos-bench --quick --json` runs end to end against real daemons and
//! reports every section with sane numbers. It checks that the bench works,
//! not that the performance targets are met (docs/BENCHMARKS.md has those).
//!
//! Needs root like the other privileged tests: skipped loudly otherwise, and
//! a failure under CI.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn bench() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_agentosd"));
    let dir = bin.parent().expect("target dir").join("examples");
    for name in ["agentos-bench", "bench-agent"] {
        assert!(
            dir.join(name).exists(),
            "{} is missing: run the tests with plain `cargo test` (it builds the examples), or `cargo build --examples` first",
            dir.join(name).display()
        );
    }
    dir.join("agentos-bench")
}

fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("bench_smoke: the bench must run as root in CI, refusing to skip");
    }
    eprintln!(
        "\n!!!!! SKIPPED bench_smoke: agentos-bench needs root (it runs agentosd). Run the tests as root. !!!!!\n"
    );
    false
}

fn num(v: &Value, path: &str) -> f64 {
    let mut cur = v;
    for k in path.split('.') {
        cur = &cur[k];
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number: {cur}"))
}

fn positive(v: &Value, path: &str) {
    let x = num(v, path);
    assert!(x > 0.0 && x.is_finite(), "{path} = {x}");
}

#[test]
fn quick_bench_reports_every_section() {
    if !require_root() {
        return;
    }
    let out = Command::new(bench())
        .args(["--quick", "--json"])
        .output()
        .expect("run agentos-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "agentos-bench failed ({}):\n{stderr}",
        out.status
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("the JSON does not parse: {e}\nstderr:\n{stderr}"));
    let s = &v["sections"];
    for name in [
        "spawn",
        "syscall",
        "ipc",
        "scale",
        "scheduler",
        "recovery",
        "neighbours",
    ] {
        assert!(s[name].is_object(), "section {name} missing:\n{stderr}");
        assert!(
            s[name].get("error").is_none(),
            "section {name} failed: {}\n{stderr}",
            s[name]["error"]
        );
    }

    // Spawn, against the floors measured in the same run.
    for p in [
        "spawn.agentos.p50_us",
        "spawn.agentos.p99_us",
        "spawn.agentos_first_syscall.p50_us",
        "spawn.fork_exec.p50_us",
        "spawn.ratio_agentos_fork_exec",
    ] {
        positive(s, p);
    }
    assert!(num(s, "spawn.agentos.p99_us") >= num(s, "spawn.agentos.p50_us"));
    if s["spawn"]["bwrap"].is_object() {
        positive(s, "spawn.ratio_agentos_bwrap");
    }
    if s["spawn"]["docker"].get("p50_us").is_some() {
        positive(s, "spawn.ratio_docker_agentos");
    }

    // Syscalls.
    for p in [
        "syscall.getpid.p50_us",
        "syscall.socketpair_floor.p50_us",
        "syscall.ratio_getpid_floor",
        "syscall.throughput.agents_8.calls_per_s",
        "syscall.throughput.agents_64.calls_per_s",
        "syscall.pipelined_16_calls_per_s",
    ] {
        positive(s, p);
    }
    assert!(num(s, "syscall.getpid.n") >= 1000.0);

    // Durable IPC: every acknowledged message reached a sink.
    for p in [
        "ipc.one_sender.p50_us",
        "ipc.fdatasync_floor.p50_us",
        "ipc.ratio_send_fdatasync",
        "ipc.senders_64.msgs_per_s",
    ] {
        positive(s, p);
    }
    assert!(
        num(s, "ipc.senders_64.received_by_sinks") >= num(s, "ipc.senders_64.acknowledged"),
        "acknowledged messages were lost: {}",
        s["ipc"]["senders_64"]
    );

    // Scale: both populations ran, every agent answered.
    for pop in ["tiny", "runtime"] {
        let p = &s["scale"][pop];
        let n = num(p, "agents_spawned");
        assert!(n >= 10.0, "{pop}: {p}");
        assert_eq!(num(p, "answered"), n, "{pop}: not every agent answered");
        positive(p, "pss_per_agent_kib");
        positive(p, "daemon_rss_kib");
        positive(p, "ps_cli.p50_us");
    }
    positive(s, "scale.limits.fds_per_agent");

    // Scheduler.
    for p in [
        "scheduler.infer_via_agentos.p50_us",
        "scheduler.infer_direct.p50_us",
        "scheduler.throughput.per_s",
        "scheduler.fairness_equal.max_over_min",
        "scheduler.weights_2_1.ratio",
    ] {
        positive(s, p);
    }

    // Recovery: every agent came back.
    assert_eq!(
        num(s, "recovery.answered"),
        num(s, "recovery.agents"),
        "{}",
        s["recovery"]
    );
    positive(s, "recovery.all_answer_s");

    // Neighbours: the quiet figure, then every attack class and all of them
    // at once, each measured (the ratios are targets, not checked here).
    positive(s, "neighbours.quiet.p99_us");
    positive(s, "neighbours.daemon_peak_rss_kib");
    let attacks = s["neighbours"]["attacks"].as_array().expect("attacks");
    assert_eq!(attacks.len(), 7, "{attacks:?}");
    for a in attacks {
        assert!(a.get("error").is_none(), "attack failed: {a}\n{stderr}");
        positive(a, "getpid.p99_us");
        positive(a, "ratio_p99");
    }
    let flood = &attacks[5];
    assert!(
        num(flood, "seen.admin_connections_held") >= 1.0,
        "the admin flood held no connection: {flood}"
    );
    for a in &attacks[..5] {
        assert!(num(a, "seen.hostile_agents") >= 1.0, "{a}");
    }

    // Every target has a verdict or says why not.
    let targets = v["targets"].as_array().expect("targets");
    assert!(targets.len() >= 15, "{targets:?}");
}

#[test]
fn bad_arguments_are_refused_before_anything_runs() {
    // No root needed: the arguments are checked before any daemon starts.
    for (args, expected) in [
        (&["--spawn-samples", "0"][..], "must be at least 1"),
        (&["--scale-n", "many"][..], "is not a whole number"),
        (&["--only", "spawn,bogus"][..], "unknown section \"bogus\""),
    ] {
        let out = Command::new(bench())
            .args(args)
            .output()
            .expect("run bench");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed results");
    }
}
