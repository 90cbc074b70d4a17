//! `bench-agent`: the in-sandbox half of `agentos-bench`.
//!
//! A small, fast AgentOS agent that speaks the fd-3 protocol (one JSON
//! request or reply per line) and times its own calls with CLOCK_MONOTONIC,
//! which the host and every sandbox share (agents get no time namespace),
//! so the bench can subtract its own timestamps from the agent's.
//!
//! Results go to `/workspace/result.txt`: a header line of `key=value`
//! pairs, then one latency in nanoseconds per line. Every mode that ends on
//! its own leaves through SYS_EXIT.
//!
//! Modes:
//!
//! * `first` — one GETPID, then SYS_EXIT with reason `t=<ns when the GETPID
//!   reply was read>`: the bench measures spawn → first syscall answered.
//! * `getpid N` — N sequential GETPIDs (after N/10 warm-up calls).
//! * `pipeline N DEPTH` — N GETPIDs keeping DEPTH in flight.
//! * `getpid-until` — waits for a message `go START END` (monotonic ns),
//!   sleeps until START, then makes sequential GETPIDs until END (a `go`
//!   that arrives late shifts the window; `late=` in the result says by
//!   how much).
//! * `send TO N` — N sequential SEND_MSG to agent TO (64-byte bodies).
//! * `send-self N` — N sequential SEND_MSG to itself.
//! * `send-until TO` — like `getpid-until`, with SEND_MSG to TO.
//! * `drain MS` — every MS milliseconds takes everything in its inbox
//!   (RECV_MSG, up to 1,000 at a time); runs until killed.
//! * `idle` — blocks in RECV_MSG; takes each message as it comes; leaves on
//!   a message `exit`.
//! * `infer N` — N sequential LLM_INFER calls of a one-line prompt.
//! * `infer-until DEPTH` — after `go START END`, keeps DEPTH LLM_INFER calls
//!   in flight until END; counts completions and the tokens charged.
//!
//! Hostile modes (the `neighbours` section; each runs until killed):
//!
//! * `flood-inbox` — fills its own inbox with 256 KiB messages until the
//!   daemon refuses, then keeps sending `RECV_MSG {"max":1000,"keep":true}`
//!   without ever reading a reply;
//! * `flood-stdout` — writes its standard output (and SYS_WRITE_STDOUT)
//!   as fast as it can, half of it empty lines;
//! * `fork` — forks children that sleep until fork fails (the pids limit),
//!   then keeps trying;
//! * `balloon` — allocates and touches memory 1 MiB at a time, without end;
//! * `disk-fill` — writes /workspace until the write fails (the workspace
//!   quota), deletes the file and starts again.
//!
//! Built with `cargo build --release --examples`; needs only std, libc and
//! serde_json.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;

fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until the monotonic clock reads `ns`.
fn sleep_until(ns: u64) {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: the timespec is valid for the call; no remainder is asked for.
        let rc = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        if rc != libc::EINTR {
            return;
        }
    }
}

struct Conn {
    out: UnixStream,
    inp: BufReader<UnixStream>,
    line: String,
    next_id: u64,
}

impl Conn {
    fn open() -> Conn {
        // SAFETY: the supervisor hands every agent its socket as fd 3; this
        // is the only owner of it.
        let s = unsafe { UnixStream::from_raw_fd(3) };
        let inp = BufReader::with_capacity(64 * 1024, s.try_clone().unwrap_or_else(|e| die(&e)));
        Conn {
            out: s,
            inp,
            line: String::with_capacity(4096),
            next_id: 0,
        }
    }

    /// Writes one request; returns its id.
    fn send(&mut self, call: &str, args: &str) -> u64 {
        self.next_id += 1;
        let req = format!(
            "{{\"id\":{},\"call\":\"{call}\",\"args\":{args}}}\n",
            self.next_id
        );
        self.out
            .write_all(req.as_bytes())
            .unwrap_or_else(|e| die(&e));
        self.next_id
    }

    /// Reads one reply line into `self.line`.
    fn recv(&mut self) -> &str {
        self.line.clear();
        match self.inp.read_line(&mut self.line) {
            Ok(0) => die(&"the supervisor closed fd 3"),
            Ok(_) => {}
            Err(e) => die(&e),
        }
        &self.line
    }

    /// One call with nothing else in flight; panics on an error reply.
    fn call(&mut self, call: &str, args: &str) -> &str {
        self.send(call, args);
        let line = self.recv();
        if !line.contains("\"status\":\"SUCCESS\"") {
            die(&format!("{call} failed: {line}"));
        }
        &self.line
    }

    fn json(&mut self, call: &str, args: &str) -> serde_json::Value {
        let line = self.call(call, args).to_string();
        serde_json::from_str(&line).unwrap_or_else(|e| die(&e))
    }

    fn exit(&mut self, reason: &str) -> ! {
        let args = serde_json::json!({"code": 0, "reason": reason}).to_string();
        self.send("SYS_EXIT", &args);
        let _ = self.recv();
        std::process::exit(0)
    }

    /// Blocks until a message `go START END` arrives.
    fn wait_go(&mut self) -> (u64, u64) {
        loop {
            let v = self.json("RECV_MSG", r#"{"wait_ms":3600000,"max":1}"#);
            for m in v["result"]["messages"].as_array().into_iter().flatten() {
                let body = m["body"].as_str().unwrap_or("");
                let mut it = body.split_whitespace();
                if it.next() == Some("go") {
                    let start = it.next().and_then(|s| s.parse().ok());
                    let end = it.next().and_then(|s| s.parse().ok());
                    if let (Some(s), Some(e)) = (start, end) {
                        return (s, e);
                    }
                }
            }
        }
    }
}

fn die(e: &dyn std::fmt::Display) -> ! {
    eprintln!("bench-agent: {e}");
    std::process::exit(1)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    args.get(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| die(&format!("missing or bad argument {what}")))
}

/// Writes the result file: the header, then one sample per line.
fn write_result(header: &str, samples: &[u64]) {
    let mut text = String::with_capacity(samples.len() * 8 + header.len() + 2);
    text.push_str(header);
    text.push('\n');
    for s in samples {
        let _ = writeln!(text, "{s}");
    }
    let tmp = "/workspace/result.tmp";
    std::fs::write(tmp, text).unwrap_or_else(|e| die(&e));
    std::fs::rename(tmp, "/workspace/result.txt").unwrap_or_else(|e| die(&e));
}

/// Times `n` sequential calls, appending each round trip (ns) to `samples`.
fn timed_calls(c: &mut Conn, call: &str, args: &str, n: usize, samples: &mut Vec<u64>) {
    for _ in 0..n {
        let t = mono_ns();
        c.call(call, args);
        samples.push(mono_ns() - t);
    }
}

/// Waits for the bench's go, then times back-to-back calls until its end
/// time, reports them and exits.
/// Sequential calls from START to END of a `go` message. A `go` that
/// arrives after START starts at once: when `keep_length`, the window keeps
/// its length (and `late=` says by how much it was shifted), else it ends at
/// END as the other agents' windows do.
fn timed_calls_until(mut c: Conn, call: &str, args: &str, capacity: usize, keep_length: bool) -> ! {
    let (start, mut end) = c.wait_go();
    let arrived = mono_ns();
    let late = arrived.saturating_sub(start);
    if keep_length {
        end += late;
    }
    sleep_until(start);
    let mut samples = Vec::with_capacity(capacity);
    let mut now = mono_ns();
    let start = now;
    while now < end {
        c.call(call, args);
        let t = mono_ns();
        samples.push(t - now);
        now = t;
    }
    write_result(
        &format!(
            "count={} start={start} end={now} late={late}",
            samples.len()
        ),
        &samples,
    );
    c.exit("done")
}

const BODY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn send_args(to: u64) -> String {
    format!("{{\"to\":{to},\"body\":\"{BODY}\"}}")
}

const INFER_ARGS: &str = r#"{"messages":[{"role":"user","content":"Say ok."}],"max_tokens":16}"#;

/// Tokens charged by one LLM_INFER reply.
fn tokens_of(line: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
    let u = &v["result"]["usage"];
    u["prompt_tokens"].as_u64().unwrap_or(0) + u["completion_tokens"].as_u64().unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("");
    let mut c = Conn::open();
    match mode {
        "first" => {
            c.call("GETPID", "{}");
            let t = mono_ns();
            c.exit(&format!("t={t}"));
        }
        "getpid" => {
            let n: usize = arg(&args, 1, "N");
            let mut samples = Vec::with_capacity(n);
            timed_calls(&mut c, "GETPID", "{}", (n / 10).max(10), &mut samples);
            samples.clear();
            let start = mono_ns();
            timed_calls(&mut c, "GETPID", "{}", n, &mut samples);
            let end = mono_ns();
            write_result(&format!("count={n} start={start} end={end}"), &samples);
            c.exit("done");
        }
        "pipeline" => {
            let n: u64 = arg(&args, 1, "N");
            let depth: u64 = arg::<u64>(&args, 2, "DEPTH").clamp(1, 64);
            let start = mono_ns();
            let (mut sent, mut got) = (0u64, 0u64);
            while got < n {
                while sent < n && sent - got < depth {
                    c.send("GETPID", "{}");
                    sent += 1;
                }
                if !c.recv().contains("SUCCESS") {
                    die(&format!("GETPID failed: {}", c.line));
                }
                got += 1;
            }
            let end = mono_ns();
            write_result(&format!("count={n} start={start} end={end}"), &[]);
            c.exit("done");
        }
        "getpid-until" => timed_calls_until(c, "GETPID", "{}", 1 << 16, true),
        "send" => {
            let to: u64 = arg(&args, 1, "TO");
            let n: usize = arg(&args, 2, "N");
            let req = send_args(to);
            let mut samples = Vec::with_capacity(n);
            let start = mono_ns();
            timed_calls(&mut c, "SEND_MSG", &req, n, &mut samples);
            let end = mono_ns();
            write_result(&format!("count={n} start={start} end={end}"), &samples);
            c.exit("done");
        }
        "send-self" => {
            let n: usize = arg(&args, 1, "N");
            let v = c.json("GETPID", "{}");
            let me = v["result"]["pid"].as_u64().unwrap_or(0);
            let req = send_args(me);
            let mut samples = Vec::with_capacity(n);
            timed_calls(&mut c, "SEND_MSG", &req, n, &mut samples);
            write_result(&format!("count={n}"), &samples);
            c.exit("done");
        }
        "send-until" => {
            let to: u64 = arg(&args, 1, "TO");
            timed_calls_until(c, "SEND_MSG", &send_args(to), 1 << 14, false)
        }
        "drain" => {
            let period_ms: u64 = arg(&args, 1, "MS");
            loop {
                sleep_until(mono_ns() + period_ms * 1_000_000);
                loop {
                    let v = c.json("RECV_MSG", r#"{"wait_ms":0,"max":1000}"#);
                    let n = v["result"]["messages"].as_array().map_or(0, Vec::len);
                    if n < 1000 {
                        break;
                    }
                }
            }
        }
        "idle" => loop {
            let v = c.json("RECV_MSG", r#"{"wait_ms":86400000,"max":100}"#);
            let exit = v["result"]["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["body"] == "exit");
            if exit {
                c.exit("asked to exit");
            }
        },
        "infer" => {
            let n: usize = arg(&args, 1, "N");
            let mut samples = Vec::with_capacity(n);
            for i in 0..n + (n / 10).max(5) {
                let t = mono_ns();
                c.call("LLM_INFER", INFER_ARGS);
                if i >= (n / 10).max(5) {
                    samples.push(mono_ns() - t);
                }
            }
            write_result(&format!("count={n}"), &samples);
            c.exit("done");
        }
        "infer-until" => {
            let depth: u64 = arg::<u64>(&args, 1, "DEPTH").clamp(1, 64);
            let (start, end) = c.wait_go();
            sleep_until(start);
            let mut sent_at = std::collections::HashMap::new();
            let mut samples = Vec::new();
            let (mut done, mut tokens) = (0u64, 0u64);
            let mut now = mono_ns();
            while now < end || !sent_at.is_empty() {
                while now < end && (sent_at.len() as u64) < depth {
                    let id = c.send("LLM_INFER", INFER_ARGS);
                    sent_at.insert(id, mono_ns());
                }
                let line = c.recv().to_string();
                now = mono_ns();
                if !line.contains("\"status\":\"SUCCESS\"") {
                    die(&format!("LLM_INFER failed: {line}"));
                }
                let id = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v["id"].as_u64())
                    .unwrap_or(0);
                if let Some(t) = sent_at.remove(&id) {
                    if now <= end {
                        done += 1;
                        tokens += tokens_of(&line);
                        samples.push(now - t);
                    }
                }
            }
            write_result(
                &format!("count={done} tokens={tokens} start={start} end={end}"),
                &samples,
            );
            c.exit("done");
        }
        "flood-inbox" => flood_inbox(c),
        "flood-stdout" => flood_stdout(c),
        "fork" => fork_children(),
        "balloon" => balloon(),
        "disk-fill" => disk_fill(),
        _ => die(&format!(
            "unknown mode {mode:?}; see the header of examples/bench-agent.rs"
        )),
    }
}

/// `flood-inbox`: see the module doc.
fn flood_inbox(mut c: Conn) -> ! {
    let me = c.json("GETPID", "{}")["result"]["pid"]
        .as_u64()
        .unwrap_or(0);
    let body = "x".repeat(256 * 1024);
    let req = format!("{{\"to\":{me},\"body\":\"{body}\"}}");
    for _ in 0..100_000 {
        c.send("SEND_MSG", &req);
        if !c.recv().contains("\"status\":\"SUCCESS\"") {
            break;
        }
    }
    // Requests whose replies are never read: the daemon must stop reading
    // this socket rather than hold the replies.
    loop {
        c.send("RECV_MSG", r#"{"max":1000,"keep":true}"#);
    }
}

/// `flood-stdout`: see the module doc.
fn flood_stdout(mut c: Conn) -> ! {
    let line = format!("{}\n", "y".repeat(1023));
    let blank = "\n".repeat(1024);
    let chunk = format!("{{\"data\":\"{}\"}}", "z".repeat(4096));
    let mut out = std::io::stdout().lock();
    loop {
        for _ in 0..64 {
            let _ = out.write_all(line.as_bytes());
            let _ = out.write_all(blank.as_bytes());
        }
        let _ = out.flush();
        c.send("SYS_WRITE_STDOUT", &chunk);
        let _ = c.recv();
    }
}

/// `fork`: see the module doc.
fn fork_children() -> ! {
    loop {
        // SAFETY: the child only calls async-signal-safe functions (pause,
        // _exit) before it ends.
        match unsafe { libc::fork() } {
            0 => loop {
                // SAFETY: pause has no preconditions.
                unsafe { libc::pause() };
            },
            -1 => std::thread::sleep(std::time::Duration::from_millis(5)),
            _ => {}
        }
    }
}

/// `balloon`: see the module doc.
fn balloon() -> ! {
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; 1 << 20];
        for i in (0..chunk.len()).step_by(4096) {
            chunk[i] = 1;
        }
        held.push(chunk);
    }
}

/// `disk-fill`: see the module doc.
fn disk_fill() -> ! {
    let chunk = vec![7u8; 1 << 20];
    loop {
        let path = "/workspace/fill";
        if let Ok(mut f) = std::fs::File::create(path) {
            while f.write_all(&chunk).is_ok() {}
            let _ = f.sync_all();
        }
        let _ = std::fs::remove_file(path);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
