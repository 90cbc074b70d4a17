//! Crash consistency of acknowledged state: what the supervisor
//! acknowledged (SEND_MSG, admin `send`, allocated pids) is still there after
//! the daemon is killed with SIGKILL and started again on the same state
//! directory.
//!
//! Note: SIGKILL keeps the kernel's page cache, so these tests show crash
//! consistency of the daemon process (nothing acknowledged is only in the
//! daemon's memory, and the database reopens), not durability against power
//! loss (which would need the flushes to reach the disk itself).

mod common;

use agentos::admin::protocol::{AdminRequest, SpawnRequest};
use agentos::kernel::ipc::Message;
use agentos::kernel::pcb::{Pcb, State};
use common::{Daemon, eventually, repo};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

fn agents_dir() -> String {
    repo().join("tests/agents").display().to_string()
}

/// An idle agent (sleep 300) that may use IPC.
fn spawn_sleeper(d: &Daemon, name: &str) -> Pcb {
    d.spawn(SpawnRequest {
        name: name.into(),
        program: "/usr/bin/sleep".into(),
        args: vec!["300".into()],
        permissions: Some(vec!["ipc".into()]),
        ..Default::default()
    })
}

/// The Python agent that sends `count` numbered messages to `to`.
fn spawn_sender(d: &Daemon, to: u64, count: usize, delay_s: f64) -> Pcb {
    d.spawn(SpawnRequest {
        name: "sender".into(),
        program: "/usr/bin/python3".into(),
        args: vec![
            repo()
                .join("tests/agents/send_many.py")
                .display()
                .to_string(),
            to.to_string(),
            count.to_string(),
            delay_s.to_string(),
        ],
        permissions: Some(vec!["ipc".into(), "fs".into()]),
        ro: vec![agents_dir()],
        ..Default::default()
    })
}

fn body(i: u64) -> String {
    format!("durable message {i}")
}

fn inbox(d: &Daemon, pid: u64) -> Vec<Message> {
    let v = d
        .call(AdminRequest::Inbox {
            pid,
            tail: Some(agentos::admin::protocol::MAX_PAGE),
            since: None,
        })
        .unwrap_or_else(|e| panic!("inbox {pid}: {e}\n{}", d.log()));
    serde_json::from_value(v).expect("inbox is a list of messages")
}

/// `(seq, i)` of every `acked <seq> <i>` line in the agent's stored log.
fn acks_in_log(d: &Daemon, pid: u64) -> BTreeMap<u64, u64> {
    d.logs(pid)
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("stdout acked ")?;
            let mut f = rest.split_whitespace();
            let seq = f.next()?.parse().ok()?;
            let i = f.next()?.parse().ok()?;
            Some((i, seq))
        })
        .collect()
}

/// Waits for the agent's report, failing early if the agent terminates.
fn wait_for_report(d: &Daemon, pid: u64, timeout: Duration) -> Value {
    let path = d.workspace(pid).join("report.json");
    let found = eventually(timeout, || {
        if let Some(v) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        {
            return Some(Some(v));
        }
        (!d.inspect(pid).is_live()).then_some(None)
    });
    match found {
        Some(Some(v)) => v,
        other => panic!(
            "agent {pid} wrote no report ({}):\nagent:\n{}\npcb: {:?}\ndaemon:\n{}",
            if other.is_none() {
                "timed out"
            } else {
                "it terminated"
            },
            d.logs(pid),
            d.inspect(pid),
            d.log()
        ),
    }
}

fn assert_settled_by_restart(d: &Daemon, pcb: &Pcb) {
    // The agent was live when the daemon died: it is recovered, as itself.
    let now = common::eventually(Duration::from_secs(20), || {
        let p = d.inspect(pcb.pid);
        (p.state == State::Running && p.host_pid.is_some()).then_some(p)
    })
    .unwrap_or_else(|| {
        panic!(
            "agent {} ({}) was not recovered: {:?}\n{}",
            pcb.pid,
            pcb.name,
            d.inspect(pcb.pid),
            d.log()
        )
    });
    assert_eq!(now.recoveries, 1, "{now:?}");
    assert_eq!(
        (now.uid, &now.workspace, &now.permissions),
        (pcb.uid, &pcb.workspace, &pcb.permissions)
    );
}

fn assert_status_works(d: &Daemon) {
    let status = d
        .call(AdminRequest::Status)
        .unwrap_or_else(|e| panic!("status after the restart: {e}\n{}", d.log()));
    // Every agent that was live before the crash is live again.
    assert_eq!(
        status["agents_live"],
        status["agents_total"],
        "{status}\n{}",
        d.log()
    );
    assert_eq!(status["daemon_pid"], d.pid(), "{status}");
}

#[test]
fn a_message_acknowledged_by_send_msg_survives_sigkill_of_the_daemon() {
    if !common::require_root("a_message_acknowledged_by_send_msg_survives_sigkill_of_the_daemon") {
        return;
    }
    const N: usize = 50;
    let mut d = Daemon::start();
    let r = spawn_sleeper(&d, "recipient");
    let s = spawn_sender(&d, r.pid, N, 0.0);
    let report = wait_for_report(&d, s.pid, Duration::from_secs(30));
    let acks: Vec<(u64, u64, String)> = report["acks"]
        .as_array()
        .expect("acks")
        .iter()
        .map(|a| {
            (
                a["i"].as_u64().expect("i"),
                a["seq"].as_u64().expect("seq"),
                a["body"].as_str().expect("body").to_string(),
            )
        })
        .collect();
    assert_eq!(acks.len(), N, "report: {report}\nagent:\n{}", d.logs(s.pid));
    assert!(
        report.get("error").is_none(),
        "report: {report}\n{}",
        d.log()
    );

    d.crash();
    d.launch();

    let got = inbox(&d, r.pid);
    let want: Vec<(u64, u64, String)> = acks.clone();
    let have: Vec<(u64, u64, String)> = got
        .iter()
        .map(|m| {
            let i = m
                .body
                .strip_prefix("durable message ")
                .and_then(|n| n.parse().ok())
                .unwrap_or(u64::MAX);
            (i, m.seq, m.body.clone())
        })
        .collect();
    assert_eq!(
        have,
        want,
        "the inbox after SIGKILL + restart differs from the acknowledged sends (i, seq, body)\n{}",
        d.log()
    );
    for m in &got {
        assert_eq!(m.from, s.pid, "{m:?}");
        assert_eq!(m.from_uid, None, "{m:?}");
    }
    assert_settled_by_restart(&d, &r);
    assert_settled_by_restart(&d, &s);
    assert_status_works(&d);
}

#[test]
fn messages_acknowledged_to_an_admin_survive_sigkill_of_the_daemon() {
    if !common::require_root("messages_acknowledged_to_an_admin_survive_sigkill_of_the_daemon") {
        return;
    }
    let mut d = Daemon::start();
    let r = spawn_sleeper(&d, "recipient");
    let mut acked = Vec::new();
    for i in 0..20 {
        let v = d
            .call(AdminRequest::Send {
                pid: r.pid,
                body: body(i),
            })
            .unwrap_or_else(|e| panic!("send {i}: {e}\n{}", d.log()));
        acked.push((v["seq"].as_u64().expect("seq"), body(i)));
    }

    d.crash();
    d.launch();

    let got = inbox(&d, r.pid);
    let have: Vec<(u64, String)> = got.iter().map(|m| (m.seq, m.body.clone())).collect();
    assert_eq!(
        have,
        acked,
        "inbox after SIGKILL + restart vs acknowledged admin sends\n{}",
        d.log()
    );
    for m in &got {
        assert_eq!((m.from, m.from_uid), (0, Some(0)), "{m:?}");
    }
    assert_settled_by_restart(&d, &r);
    assert_status_works(&d);
}

#[test]
fn a_crash_in_the_middle_of_sending_loses_no_acknowledged_message_and_duplicates_none() {
    if !common::require_root(
        "a_crash_in_the_middle_of_sending_loses_no_acknowledged_message_and_duplicates_none",
    ) {
        return;
    }
    const N: usize = 300;
    let mut d = Daemon::start();
    let r = spawn_sleeper(&d, "recipient");
    let s = spawn_sender(&d, r.pid, N, 0.01);
    // Crash once about half of the acknowledgements are in the log.
    let seen = eventually(Duration::from_secs(30), || {
        let acks = acks_in_log(&d, s.pid);
        if acks.len() >= N / 2 {
            return Some(acks);
        }
        assert!(
            d.inspect(s.pid).is_live(),
            "the sender died:\n{}\n{}",
            d.logs(s.pid),
            d.log()
        );
        None
    })
    .unwrap_or_else(|| {
        panic!(
            "the sender did not get {} acks in time:\n{}\n{}",
            N / 2,
            d.logs(s.pid),
            d.log()
        )
    });
    d.crash();
    d.launch();
    assert_status_works(&d);

    // Acks seen before the crash, plus any the restarted daemon still has
    // in the sender's log (an ack line can only exist after the ack).
    let mut acks = seen.clone();
    for (i, seq) in acks_in_log(&d, s.pid) {
        if let Some(old) = acks.insert(i, seq) {
            assert_eq!(old, seq, "message {i} acked with two seqs\n{}", d.log());
        }
    }
    let got = inbox(&d, r.pid);
    eprintln!(
        "crashed after {} acks seen in the log; {} acks known after the restart; {} messages in the inbox",
        seen.len(),
        acks.len(),
        got.len()
    );
    let index: Vec<u64> = got
        .iter()
        .map(|m| {
            m.body
                .strip_prefix("durable message ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected message {m:?}"))
        })
        .collect();
    // Nothing duplicated, in sending order.
    let unique: HashSet<u64> = got.iter().map(|m| m.seq).collect();
    assert_eq!(
        unique.len(),
        got.len(),
        "duplicate seqs: {got:?}\n{}",
        d.log()
    );
    assert_eq!(
        index,
        (0..got.len() as u64).collect::<Vec<_>>(),
        "the inbox is not the sent messages in order, each once\n{}",
        d.log()
    );
    assert!(
        got.windows(2).all(|w| w[0].seq < w[1].seq),
        "seqs not increasing: {got:?}"
    );
    // Every acknowledged message is there with the seq it was acked with.
    for (i, seq) in &acks {
        let m = got.get(*i as usize).unwrap_or_else(|| {
            panic!(
                "message {i} (seq {seq}) was acknowledged but is not in the inbox of {} messages\n{}",
                got.len(),
                d.log()
            )
        });
        assert_eq!(
            (m.seq, m.body.as_str(), m.from),
            (*seq, body(*i).as_str(), s.pid)
        );
    }
    // The sender sends one message at a time: at most one unacknowledged
    // message may have made it, and the crash really was mid-flight.
    let last_acked = acks.keys().next_back().copied().expect("some acks");
    assert!(
        got.len() as u64 <= last_acked + 2,
        "{} messages in the inbox but the last ack was for #{last_acked}",
        got.len()
    );
    assert!(
        got.len() < N,
        "the sender finished before the crash ({} messages); the test did not crash mid-flight",
        got.len()
    );
    assert_settled_by_restart(&d, &s);
}

#[test]
fn pids_are_never_reused_across_a_crash() {
    if !common::require_root("pids_are_never_reused_across_a_crash") {
        return;
    }
    let mut d = Daemon::start();
    let a = spawn_sleeper(&d, "before-1");
    let b = spawn_sleeper(&d, "before-2");
    assert!(b.pid > a.pid, "{a:?} {b:?}");

    d.crash();
    d.launch();

    let c = spawn_sleeper(&d, "after");
    assert!(
        c.pid > b.pid,
        "pid {} handed out after the crash is not above {} from before it\n{}",
        c.pid,
        b.pid,
        d.log()
    );
    let all: Vec<Pcb> =
        serde_json::from_value(d.call(AdminRequest::Ps).expect("ps")).expect("pcbs");
    let pids: Vec<u64> = all.iter().map(|p| p.pid).collect();
    assert_eq!(pids.len(), 3, "{all:?}");
    assert_eq!(pids.iter().filter(|p| **p == c.pid).count(), 1, "{all:?}");
    assert_settled_by_restart(&d, &a);
    assert_settled_by_restart(&d, &b);
    assert!(d.inspect(c.pid).is_live(), "{:?}", d.inspect(c.pid));
}
