//! The crash harness: runs the real daemon on one state directory, drives
//! agents and admin clients that send uniquely numbered messages, records
//! every acknowledgement, kills the daemon with SIGKILL at a random moment
//! (mid-traffic, during startup, during recovery), starts it again and
//! checks that the database opens, every acknowledged message is in its
//! recipient's inbox exactly once and in per-sender order, no PCB is an
//! orphan, and every live agent is running again.
//!
//! CI runs 50 iterations. More, with a fixed seed:
//!
//!     AGENTOS_CRASH_ITERATIONS=1000 AGENTOS_CRASH_SEED=42 \
//!         cargo test --release --test crash_harness -- --nocapture
//!
//! SIGKILL keeps the page cache, so this shows crash consistency of the
//! daemon and its store, not power-loss durability (see docs/DURABILITY.md).

mod common;

use agentos::admin::protocol::{AdminRequest, SpawnRequest};
use agentos::kernel::pcb::{Pcb, State};
use common::{Daemon, eventually, python_agent, require_root};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A small deterministic generator (xorshift64*), so a seed replays a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every acknowledgement seen: recipient → bodies acked to anyone, in order
/// per sender (sender tag → bodies).
#[derive(Default)]
struct Acks {
    by_recipient: HashMap<u64, Vec<(String, String)>>,
}

impl Acks {
    fn record(&mut self, recipient: u64, sender: &str, body: String) {
        self.by_recipient
            .entry(recipient)
            .or_default()
            .push((sender.to_string(), body));
    }
}

/// How an iteration kills the daemon.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    MidTraffic(u64),
    DuringStartup(u64),
    DuringRecovery,
}

/// Reads the acknowledgements a sender agent wrote to its workspace.
fn agent_acks(d: &Daemon, pid: u64) -> Vec<String> {
    std::fs::read_to_string(d.workspace(pid).join("acks.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(3, ' ').nth(2).map(str::to_string))
        .collect()
}

fn check(d: &Daemon, acks: &Acks, agent_senders: &[(u64, u64, String)], iteration: u64) {
    // 1. The database opened (the daemon answers), and nothing is an orphan.
    let pcbs: Vec<Pcb> =
        serde_json::from_value(d.call(AdminRequest::Ps).expect("ps")).expect("pcbs");
    let pids: HashSet<u64> = pcbs.iter().map(|p| p.pid).collect();
    for p in &pcbs {
        assert!(
            p.ppid == 0 || pids.contains(&p.ppid),
            "iteration {iteration}: orphan PCB {p:?}"
        );
    }
    // 2. Every acknowledged message is present exactly once, in per-sender order.
    let mut expected: HashMap<u64, Vec<(String, String)>> = acks.by_recipient.clone();
    for (sender, recipient, tag) in agent_senders {
        for body in agent_acks(d, *sender) {
            expected
                .entry(*recipient)
                .or_default()
                .push((tag.clone(), body));
        }
    }
    for (recipient, acked) in &expected {
        let got = d.inbox(*recipient);
        let mut count: HashMap<&str, usize> = HashMap::new();
        for m in &got {
            *count.entry(m.body.as_str()).or_default() += 1;
        }
        for (_, body) in acked {
            assert_eq!(
                count.get(body.as_str()).copied().unwrap_or(0),
                1,
                "iteration {iteration}: acknowledged message {body:?} to {recipient} is present {} times",
                count.get(body.as_str()).copied().unwrap_or(0)
            );
        }
        let dup: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            dup.is_empty(),
            "iteration {iteration}: duplicated messages {dup:?}"
        );
        // Per-sender order: bodies of one sender appear in send order.
        let position: HashMap<&str, usize> = got
            .iter()
            .enumerate()
            .map(|(i, m)| (m.body.as_str(), i))
            .collect();
        let mut by_sender: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (sender, body) in acked {
            if let Some(p) = position.get(body.as_str()) {
                by_sender.entry(sender.as_str()).or_default().push(*p);
            }
        }
        for (sender, positions) in by_sender {
            assert!(
                positions.windows(2).all(|w| w[0] < w[1]),
                "iteration {iteration}: sender {sender} out of order in the inbox of {recipient}"
            );
        }
    }
    // 3. Every live agent is running again (recovery completed).
    let running = eventually(Duration::from_secs(30), || {
        let pcbs: Vec<Pcb> = serde_json::from_value(d.call(AdminRequest::Ps).ok()?).ok()?;
        pcbs.iter()
            .filter(|p| p.is_live())
            .all(|p| {
                p.state != State::Ready
                    && p.host_pid
                        .is_some_and(|h| std::path::Path::new(&format!("/proc/{h}")).exists())
            })
            .then_some(())
    });
    assert!(
        running.is_some(),
        "iteration {iteration}: live agents not running again:\n{}",
        d.log()
    );
}

#[test]
fn crash_harness() {
    if !require_root("crash_harness") {
        return;
    }
    let iterations = env_u64("AGENTOS_CRASH_ITERATIONS", 50);
    let seed = env_u64(
        "AGENTOS_CRASH_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1,
    );
    eprintln!(
        "crash harness: {iterations} iterations, seed {seed} (AGENTOS_CRASH_SEED={seed} replays it)"
    );
    let mut rng = Rng(seed);
    let mut d = Daemon::start();
    // Recipients live for the whole run and never read: their inboxes are
    // the record.
    let recipients: Vec<u64> = (0..2)
        .map(|i| {
            d.spawn_probe(&format!("inbox{i}"), &["sleep", "100000000"], &[])
                .pid
        })
        .collect();
    let acks = Arc::new(Mutex::new(Acks::default()));
    let mut agent_senders: Vec<(u64, u64, String)> = Vec::new();
    let started = Instant::now();

    for it in 0..iterations {
        let kill = match rng.below(10) {
            0 | 1 => KillAt::DuringStartup(rng.below(60)),
            2 => KillAt::DuringRecovery,
            _ => KillAt::MidTraffic(20 + rng.below(400)),
        };
        // Agents that send, recording each acknowledgement on the host side.
        let mut this_round = Vec::new();
        for s in 0..2 {
            let to = recipients[(rng.below(2)) as usize];
            let tag = format!(" it{it}s{s}");
            let req: SpawnRequest = python_agent(
                &format!("sender-{it}-{s}"),
                "send_many.py",
                &[&to.to_string(), "40", "0.002", &tag],
                Some(&["ipc", "fs"]),
            );
            match d.call(AdminRequest::Spawn(Box::new(req))) {
                Ok(v) => {
                    let pid = v["pid"].as_u64().expect("pid");
                    agent_senders.push((pid, to, format!("agent{pid}")));
                    this_round.push(pid);
                }
                Err(e) => panic!("iteration {it}: spawn: {e}\n{}", d.log()),
            }
        }
        // Admin clients that send, recording acknowledgements in memory.
        let socket = d.socket.clone();
        let mut threads = Vec::new();
        for t in 0..2 {
            let (socket, acks) = (socket.clone(), acks.clone());
            let to = recipients[t % recipients.len()];
            threads.push(std::thread::spawn(move || {
                let sender = format!("admin-{it}-{t}");
                for n in 0..200 {
                    let body = format!("{sender} #{n}");
                    let Ok(mut c) = agentos::admin::client::Client::connect(&socket) else {
                        return;
                    };
                    match c.call(&AdminRequest::Send {
                        pid: to,
                        body: body.clone(),
                    }) {
                        Ok(_) => acks
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .record(to, &sender, body),
                        Err(_) => return,
                    }
                }
            }));
        }
        match kill {
            KillAt::MidTraffic(ms) => {
                std::thread::sleep(Duration::from_millis(ms));
                d.crash();
            }
            KillAt::DuringStartup(ms) => {
                std::thread::sleep(Duration::from_millis(100));
                d.crash();
                d.start_process();
                std::thread::sleep(Duration::from_millis(ms));
                d.crash();
            }
            KillAt::DuringRecovery => {
                std::thread::sleep(Duration::from_millis(100));
                d.crash();
                d.launch(); // the socket is up; recovery is running now
                d.crash();
            }
        }
        for t in threads {
            let _ = t.join();
        }
        d.launch();
        check(
            &d,
            &acks.lock().unwrap_or_else(|e| e.into_inner()),
            &agent_senders,
            it,
        );
        // Keep the run bounded: this round's senders have done their part.
        for pid in this_round {
            let _ = d.call(AdminRequest::Kill { pid });
        }
        if it % 10 == 9 {
            eprintln!("  {} iterations, {:?}", it + 1, started.elapsed());
        }
    }
    let total: usize = acks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .by_recipient
        .values()
        .map(Vec::len)
        .sum();
    eprintln!(
        "crash harness: {iterations} iterations passed in {:?}; {total} admin acknowledgements checked",
        started.elapsed()
    );
}
