//! The `recovery` section of agentos-bench: SIGKILL the daemon with 1,000
//! live agents, start it again, and time until every agent answers a
//! message in a fresh sandbox.

use crate::stats::round;
use crate::{Ctx, agent_req, args, is_blocked, progress, send_all, spawn_many, wait_all};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

pub(crate) fn sec_recovery(ctx: &Ctx) -> Result<Value, String> {
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
