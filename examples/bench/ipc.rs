//! The `ipc` section of agentos-bench: durable SEND_MSG (acknowledged after
//! the group commit) from one sender and from 64 concurrent senders to
//! draining sinks, against one write+fdatasync on the state directory.

use crate::daemon::BenchDaemon;
use crate::stats::{Summary, ratio, round};
use crate::syscall::throughput_text;
use crate::{
    Ctx, agent_req, aggregate, args, call, mono_ns, progress, ps, read_result, run_together, spawn,
    spawn_many, wait_exit,
};
use agentos::admin::protocol::AdminRequest;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

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

pub(crate) fn sec_ipc(ctx: &Ctx, d: &BenchDaemon) -> Result<Value, String> {
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
