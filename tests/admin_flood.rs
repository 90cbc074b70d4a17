//! The admin socket under a connection flood, as a local user allowed to
//! use `agentos` would mount it: hundreds of connections from many uids,
//! each holding an unterminated request line. The daemon's `[admin]` caps
//! (global and per uid), its request timeout and its request line cap must
//! bound what it holds, while root's `agentos ps` and a well-behaved agent
//! keep working.
//!
//! Non-root clients are threads of this test that switched their own
//! credentials with the raw `setresuid` system call (which, unlike the libc
//! wrapper, changes only the calling thread): the daemon sees their uid
//! through SO_PEERCRED.

mod common;

use common::{Daemon, neighbour_answers, python_agent};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The socket's group; every flooding uid uses it.
const GROUP: u32 = 4242;
/// First of the flooding uids.
const FIRST_UID: u32 = 5100;
const MAX_CONNECTIONS: usize = 64;
const PER_UID: usize = 8;
const TIMEOUT_S: u64 = 5;
const LINE_CAP: usize = 256 << 10;

fn start() -> (Daemon, PathBuf) {
    let cfg_dir = std::env::temp_dir().join(format!("agentos-admin-flood-{}", std::process::id()));
    std::fs::create_dir_all(&cfg_dir).expect("config dir");
    let cfg = cfg_dir.join(format!("agentosd-{}.toml", rand_tag()));
    std::fs::write(
        &cfg,
        format!(
            "[admin]\nmax_connections = {MAX_CONNECTIONS}\nmax_connections_per_uid = {PER_UID}\n\
             request_timeout_s = {TIMEOUT_S}\nmax_request_bytes = {LINE_CAP}\n"
        ),
    )
    .expect("write config");
    let d = Daemon::start_with(&[
        "--config",
        cfg.to_str().expect("utf-8"),
        "--socket-mode",
        "660",
        "--socket-group",
        "4242",
    ]);
    std::fs::set_permissions(&d.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    (d, cfg)
}

fn rand_tag() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// Switches the calling thread (only) to `uid`/`gid` with no supplementary groups.
fn become_thread(uid: u32, gid: u32) {
    // SAFETY: raw credential system calls with plain integer arguments;
    // they affect only the calling thread (the libc wrappers would switch
    // every thread of the test process).
    let rc = unsafe {
        let g = libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>());
        let a = libc::syscall(libc::SYS_setresgid, gid, gid, gid);
        let b = libc::syscall(libc::SYS_setresuid, uid, uid, uid);
        g | a | b
    };
    assert_eq!(rc, 0, "setresuid({uid}) failed");
}

/// What became of one flooding connection.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// Refused at connect with an error line (its message).
    Refused(String),
    /// Accepted, then closed with an error line (its message).
    TimedOut(String),
    /// No answer at all before the deadline.
    Silent,
    /// Could not even connect (the listen backlog was full).
    ConnectFailed(String),
}

fn error_message(line: &str) -> Option<String> {
    let v: Value = serde_json::from_str(line).ok()?;
    (v["ok"] == Value::Bool(false)).then(|| v["error"]["message"].as_str().unwrap_or("").into())
}

/// Opens `n` connections as `uid`, writes `partial` bytes of an unterminated
/// line on each, and reports what the daemon did with every one.
fn flood_as(socket: &Path, uid: u32, n: usize, partial: usize, wait: Duration) -> Vec<Outcome> {
    become_thread(uid, GROUP);
    let mut conns = Vec::new();
    let mut out = Vec::new();
    for _ in 0..n {
        match UnixStream::connect(socket) {
            Ok(s) => conns.push((s, Instant::now())),
            Err(e) => out.push(Outcome::ConnectFailed(e.to_string())),
        }
    }
    let junk = vec![b'x'; partial];
    for (s, _) in &mut conns {
        let _ = s.set_write_timeout(Some(Duration::from_secs(20)));
        // A refused connection is closed by the daemon: EPIPE is expected.
        let _ = s.write_all(b"{\"op\":\"ps\",\"pad\":\"");
        let _ = s.write_all(&junk);
    }
    let deadline = Instant::now() + wait;
    for (s, opened) in conns {
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = s.set_read_timeout(Some(left.max(Duration::from_millis(10))));
        let mut line = String::new();
        let got = BufReader::new(&s).read_line(&mut line);
        out.push(match (got, error_message(&line)) {
            (Ok(n), Some(m)) if n > 0 => {
                if opened.elapsed() >= Duration::from_secs(TIMEOUT_S - 1) && m.contains("timeout") {
                    Outcome::TimedOut(m)
                } else {
                    Outcome::Refused(m)
                }
            }
            _ => Outcome::Silent,
        });
    }
    out
}

/// The daemon's RSS in KiB, if it is still running.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Root's `agentos ps` through the real CLI.
fn cli_ps(d: &Daemon) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_agentos"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["--json", "ps", "--all"])
        .env_remove("AGENTOS_SOCKET")
        .output()
        .expect("run agentos")
}

#[test]
fn a_flood_of_idle_connections_is_capped_and_timed_out() {
    if !common::require_root("a_flood_of_idle_connections_is_capped_and_timed_out") {
        return;
    }
    let (d, _cfg) = start();
    // Warm up: one agent and a few requests before the baseline.
    neighbour_answers(&d, "warm-up");
    let baseline = rss_kib(d.pid()).expect("rss");

    // 500 connections from 25 uids (20 each, more than PER_UID), each
    // holding 200 KiB of an unterminated line: unbounded that would be
    // ~100 MiB in the daemon.
    const UIDS: u32 = 25;
    const EACH: usize = 20;
    let partial = 200 << 10;
    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done, pid) = (peak.clone(), done.clone(), d.pid());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                if let Some(r) = rss_kib(pid) {
                    peak.fetch_max(r, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let started = Instant::now();
    let flooders: Vec<_> = (0..UIDS)
        .map(|i| {
            let socket = d.socket.clone();
            std::thread::spawn(move || {
                flood_as(
                    &socket,
                    FIRST_UID + i,
                    EACH,
                    partial,
                    Duration::from_secs(TIMEOUT_S + 60),
                )
            })
        })
        .collect();

    // While the flood holds its connections: root's CLI and a new agent work.
    std::thread::sleep(Duration::from_millis(500));
    let ps = cli_ps(&d);
    assert!(
        ps.status.success(),
        "agentos ps during the flood: {}\n{}",
        String::from_utf8_lossy(&ps.stderr),
        d.log()
    );
    let listed: Value = serde_json::from_slice(&ps.stdout).expect("ps is JSON");
    assert!(listed.as_array().is_some_and(|a| !a.is_empty()), "{listed}");
    neighbour_answers(&d, "beside-the-flood");

    let outcomes: Vec<Outcome> = flooders
        .into_iter()
        .flat_map(|t| t.join().expect("flood thread"))
        .collect();
    done.store(true, Ordering::SeqCst);
    sampler.join().expect("sampler");
    let took = started.elapsed();

    let count = |f: &dyn Fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let refused = count(&|o| matches!(o, Outcome::Refused(_)));
    let timed_out = count(&|o| matches!(o, Outcome::TimedOut(_)));
    let silent = count(&|o| matches!(o, Outcome::Silent));
    let failed = count(&|o| matches!(o, Outcome::ConnectFailed(_)));
    eprintln!(
        "flood: {refused} refused, {timed_out} timed out, {silent} silent, {failed} not connected in {took:?}; \
         RSS baseline {baseline} KiB, peak {} KiB",
        peak.load(Ordering::SeqCst)
    );
    assert_eq!(outcomes.len(), (UIDS as usize) * EACH);
    assert_eq!(
        silent,
        0,
        "every connection is answered: {outcomes:?}\n{}",
        d.log()
    );
    assert!(
        timed_out <= MAX_CONNECTIONS,
        "at most max_connections = {MAX_CONNECTIONS} were held, {timed_out} timed out"
    );
    assert!(
        timed_out >= 1,
        "some connections were accepted and then timed out: {outcomes:?}"
    );
    assert!(
        refused + failed >= outcomes.len() - MAX_CONNECTIONS,
        "{refused} refused + {failed} unconnected of {}",
        outcomes.len()
    );
    let caps_named = outcomes.iter().all(|o| match o {
        Outcome::Refused(m) => {
            m.contains("max_connections") && m.contains(&MAX_CONNECTIONS.to_string())
                || m.contains("max_connections_per_uid") && m.contains(&PER_UID.to_string())
        }
        Outcome::TimedOut(m) => m.contains("request_timeout_s") && m.contains("5"),
        _ => true,
    });
    assert!(caps_named, "refusals name the limit: {outcomes:?}");
    // Bound: what the caps admit (64 x 200 KiB = 12.5 MiB) plus slack for
    // tasks, buffers and the agents run meanwhile; unbounded it is ~100 MiB.
    let grown = peak.load(Ordering::SeqCst).saturating_sub(baseline);
    assert!(
        grown < 40 << 10,
        "daemon RSS grew by {grown} KiB during the flood (ceiling 40 MiB)"
    );
    // And after it: the daemon answers as before.
    assert!(cli_ps(&d).status.success(), "{}", d.log());
    neighbour_answers(&d, "after-the-flood");
}

#[test]
fn a_request_line_over_the_cap_is_refused_with_the_limit_named() {
    if !common::require_root("a_request_line_over_the_cap_is_refused_with_the_limit_named") {
        return;
    }
    let (d, _cfg) = start();
    let mut s = UnixStream::connect(&d.socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    // A syntactically fine request padded past the cap (300 KiB).
    let mut line = br#"{"op":"ps","pad":""#.to_vec();
    line.extend(std::iter::repeat_n(b'x', 300 << 10));
    line.extend_from_slice(b"\"}\n");
    let _ = s.write_all(&line);
    let mut answer = String::new();
    BufReader::new(&s)
        .read_line(&mut answer)
        .expect("an answer line");
    let v: Value = serde_json::from_str(&answer).expect("JSON");
    assert_eq!(v["ok"], Value::Bool(false), "{v}");
    assert_eq!(v["error"]["code"], "EMSGSIZE", "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("max_request_bytes") && msg.contains(&LINE_CAP.to_string()),
        "{msg}"
    );
    // The connection is closed after the refusal.
    let mut rest = String::new();
    assert_eq!(BufReader::new(&s).read_line(&mut rest).unwrap_or(0), 0);
    // A request just under the cap is served.
    let mut c = UnixStream::connect(&d.socket).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut ok = br#"{"op":"ps","pad":""#.to_vec();
    ok.extend(std::iter::repeat_n(b'x', LINE_CAP - 100));
    ok.extend_from_slice(b"\"}\n");
    c.write_all(&ok).expect("write");
    let mut answer = String::new();
    BufReader::new(&c).read_line(&mut answer).expect("answer");
    let v: Value = serde_json::from_str(&answer).expect("JSON");
    assert_eq!(v["ok"], Value::Bool(true), "{v}");
}

#[test]
fn one_uid_cannot_open_more_than_its_cap() {
    if !common::require_root("one_uid_cannot_open_more_than_its_cap") {
        return;
    }
    let (d, _cfg) = start();
    let socket = d.socket.clone();
    let uid = FIRST_UID + 77;
    // One user opens 3 x its cap and holds them; the daemon answers the
    // ones beyond the cap at once.
    let outcomes = std::thread::spawn(move || {
        become_thread(uid, GROUP);
        let conns: Vec<UnixStream> = (0..PER_UID * 3)
            .map(|_| UnixStream::connect(&socket).expect("connect"))
            .collect();
        // The refusals are written at accept: poll every connection
        // (without blocking) until those beyond the cap have answered.
        let mut out: Vec<Option<String>> = vec![None; conns.len()];
        let deadline = Instant::now() + Duration::from_secs(4);
        while Instant::now() < deadline && out.iter().flatten().count() < PER_UID * 2 {
            for (s, o) in conns.iter().zip(out.iter_mut()) {
                if o.is_some() {
                    continue;
                }
                s.set_nonblocking(true).expect("nonblocking");
                let mut buf = [0u8; 4096];
                if let Ok(n) = (&*s).read(&mut buf) {
                    *o = error_message(&String::from_utf8_lossy(&buf[..n])).or(Some(String::new()));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Still holding them all: a further one is refused too.
        let mut extra = UnixStream::connect(&socket).expect("connect");
        let _ = extra.write_all(b"{\"op\":\"ps\"}\n");
        extra
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut line = String::new();
        let _ = BufReader::new(&extra).read_line(&mut line);
        drop(conns);
        // Once they are closed, the user may connect again.
        let again = common::eventually(Duration::from_secs(30), || {
            let mut c = UnixStream::connect(&socket).ok()?;
            c.write_all(b"{\"op\":\"ps\"}\n").ok()?;
            c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
            let mut l = String::new();
            BufReader::new(&c).read_line(&mut l).ok()?;
            let v: Value = serde_json::from_str(&l).ok()?;
            (v["ok"] == Value::Bool(true)).then_some(v)
        });
        (out, line, again)
    })
    .join()
    .expect("client thread");
    let (out, extra, again) = outcomes;
    let held = out.iter().filter(|o| o.is_none()).count();
    let refused: Vec<&String> = out.iter().flatten().collect();
    assert_eq!(held, PER_UID, "{out:?}\n{}", d.log());
    assert_eq!(refused.len(), PER_UID * 2, "{out:?}");
    for m in &refused {
        assert!(
            m.contains("max_connections_per_uid")
                && m.contains(&PER_UID.to_string())
                && m.contains(&uid.to_string()),
            "{m}"
        );
    }
    assert!(
        error_message(&extra).is_some_and(|m| m.contains("max_connections_per_uid")),
        "{extra}"
    );
    assert!(
        again.is_some(),
        "uid {uid} could not connect again after closing"
    );
    // Root is not held to the user's cap meanwhile.
    assert!(cli_ps(&d).status.success(), "{}", d.log());
    neighbour_answers(&d, "beside-the-user");
}

#[test]
fn agents_are_the_oom_killers_first_choice() {
    if !common::require_root("agents_are_the_oom_killers_first_choice") {
        return;
    }
    let (d, _cfg) = start();
    let pcb = d.spawn(python_agent("oom", "hostile_admin.py", &["oom"], None));
    let rep = d.finish(pcb.pid, Duration::from_secs(120));
    let own = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", d.pid()))
        .expect("daemon's score");
    let daemon: i64 = own.trim().parse().expect("number");
    let agent = rep["oom_score_adj"].as_i64().expect("agent's score");
    assert_eq!(agent, 500, "{rep}");
    assert!(agent > daemon, "agent {agent} vs daemon {daemon}");
}
