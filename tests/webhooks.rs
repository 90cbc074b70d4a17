//! Webhooks end to end: a real daemon with its listener on a free loopback
//! port, Python agents (tests/agents/webhook_agent.py) that register paths
//! and answer through SYS_WEBHOOK_REPLY, and a minimal HTTP/1.1 client on
//! std's TcpStream. Nothing leaves 127.0.0.1.

mod common;

use agentos::admin::protocol::AdminRequest;
use agentos::kernel::pcb::Pcb;
use common::{Daemon, eventually, python_agent, require_root};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static CONFIGS: AtomicU32 = AtomicU32::new(0);

// ---- the HTTP client ---------------------------------------------------------

struct HttpResponse {
    status: u16,
    /// Lower-case names.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {}", self.text()))
    }
}

/// One request on a fresh connection (`Connection: close`), read to EOF.
fn http(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the listener");
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).expect("send the request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if let Some(n) = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        assert!(body.len() >= n, "short body: {} of {n} bytes", body.len());
        body.truncate(n);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`, computed here independently of
/// the daemon's code.
fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

// ---- the daemon and the agents -------------------------------------------------

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("addr").port()
}

fn write_config(port: u16, extra: &str) -> std::path::PathBuf {
    let n = CONFIGS.fetch_add(1, Ordering::SeqCst);
    let path = std::env::temp_dir().join(format!(
        "agentos-webhooks-test-{}-{n}.toml",
        std::process::id()
    ));
    std::fs::write(
        &path,
        format!("[webhooks]\nlisten = \"127.0.0.1:{port}\"\n{extra}\n"),
    )
    .expect("write config");
    path
}

/// A daemon whose listener is on a free loopback port; `extra` is added to
/// its `[webhooks]` section.
fn daemon(extra: &str) -> (Daemon, u16) {
    let port = free_port();
    let path = write_config(port, extra);
    let mut d = Daemon::start_with(&["--config", &path.display().to_string()]);
    // Kept with the daemon's directory for restarts.
    let kept = d.dir.join("agentosd.toml");
    std::fs::rename(&path, &kept).expect("keep the config");
    d.extra_args = vec!["--config".into(), kept.display().to_string()];
    (d, port)
}

/// A JSON file the agent wrote in its workspace, if it is there yet.
fn ws_json(d: &Daemon, pid: u64, name: &str) -> Option<Value> {
    let text = std::fs::read_to_string(d.workspace(pid).join(name)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Spawns webhook_agent.py in `mode` with the given registrations and
/// waits until it has made them; returns its PCB and ready.json.
fn hook_agent(d: &Daemon, name: &str, mode: &str, registrations: Value) -> (Pcb, Value) {
    hook_agent_with(d, name, mode, &registrations.to_string(), &[])
}

/// [`hook_agent`] with the registrations argument as given (JSON or
/// "@file") and extra read-only binds.
fn hook_agent_with(
    d: &Daemon,
    name: &str,
    mode: &str,
    registrations: &str,
    ro: &[String],
) -> (Pcb, Value) {
    let mut req = python_agent(
        name,
        "webhook_agent.py",
        &[mode, registrations],
        Some(&["webhooks", "ipc", "PS"]),
    );
    req.ro.extend(ro.iter().cloned());
    let pcb = d.spawn(req);
    let ready = eventually(Duration::from_secs(30), || {
        ws_json(d, pcb.pid, "results.json")?;
        ws_json(d, pcb.pid, "ready.json")
    })
    .unwrap_or_else(|| {
        panic!(
            "agent {name} did not get ready\nagent log:\n{}\ndaemon log:\n{}",
            d.logs(pcb.pid),
            d.log()
        )
    });
    (pcb, ready)
}

/// Sends a command message to the agent.
fn command(d: &Daemon, pid: u64, cmd: Value) {
    d.call(AdminRequest::Send {
        pid,
        body: cmd.to_string(),
    })
    .unwrap_or_else(|e| panic!("send to {pid}: {e}"));
}

/// Runs a command and returns its result entry from results.json (echo
/// replies are recorded there too, and skipped).
fn run(d: &Daemon, pid: u64, cmd: Value) -> Value {
    let of_cmd = |all: &Value| -> Vec<Value> {
        all.as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["cmd"] == cmd["cmd"])
            .cloned()
            .collect()
    };
    let before = ws_json(d, pid, "results.json")
        .map(|v| of_cmd(&v).len())
        .unwrap_or(0);
    command(d, pid, cmd.clone());
    eventually(Duration::from_secs(30), || {
        let all = ws_json(d, pid, "results.json")?;
        of_cmd(&all).get(before).cloned()
    })
    .unwrap_or_else(|| panic!("agent {pid} did not run the command\n{}", d.logs(pid)))
}

/// The webhook events the agent has received so far.
fn seen(d: &Daemon, pid: u64) -> Vec<Value> {
    ws_json(d, pid, "seen.json")
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// Waits until the agent has received `n` events and returns them.
fn wait_seen(d: &Daemon, pid: u64, n: usize) -> Vec<Value> {
    eventually(Duration::from_secs(30), || {
        let s = seen(d, pid);
        (s.len() >= n).then_some(s)
    })
    .unwrap_or_else(|| panic!("agent {pid} did not receive {n} webhook events"))
}

/// Tells the agent to exit and waits for it.
fn stop(d: &Daemon, pid: u64) {
    command(d, pid, json!({"cmd": "exit"}));
    d.finish(pid, Duration::from_secs(30));
}

fn registered_ok(ready: &Value, i: usize) -> &Value {
    let r = &ready["register"][i];
    assert_eq!(r["code"], "SUCCESS", "registration failed: {r}");
    &r["result"]
}

// ---- tests ------------------------------------------------------------------------

#[test]
fn a_request_round_trips_through_the_agent() {
    if !require_root("a_request_round_trips_through_the_agent") {
        return;
    }
    let (d, port) = daemon("");
    let (a, ready) = hook_agent(&d, "echo", "echo", json!([{"path": "/hooks/echo"}]));
    let reg = registered_ok(&ready, 0);
    assert_eq!(reg["path"], "/hooks/echo");
    assert_eq!(reg["url"], format!("http://127.0.0.1:{port}/hooks/echo"));

    let r = http(
        port,
        "POST",
        "/hooks/echo?build=42&x=y",
        &[("X-Test", "abc"), ("Content-Type", "text/plain")],
        b"hello webhook",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("x-echo"), Some("POST /hooks/echo"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["method"], "POST");
    assert_eq!(body["path"], "/hooks/echo");
    assert_eq!(body["query"], "build=42&x=y");
    assert_eq!(body["upper"], "HELLO WEBHOOK");
    assert_eq!(body["x_test"], "abc");
    assert_eq!(body["encoding"], "utf8");

    // What the agent saw, through RECV_MSG.
    let ev = &wait_seen(&d, a.pid, 1)[0];
    assert_eq!(ev["method"], "POST");
    assert_eq!(ev["path"], "/hooks/echo");
    assert_eq!(ev["query"], "build=42&x=y");
    assert_eq!(ev["body"], "hello webhook");
    assert_eq!(ev["headers"]["x-test"], "abc");
    assert_eq!(ev["request_id"], body["request_id"]);

    // A body that is not UTF-8 arrives as base64.
    let r = http(port, "PUT", "/hooks/echo", &[], &[0xff, 0xfe, 0x00, 0x41]);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["encoding"], "base64");
    let ev = &wait_seen(&d, a.pid, 2)[1];
    assert_eq!(ev["method"], "PUT");
    assert_eq!(ev["encoding"], "base64");
    assert_eq!(ev["body"], "//4AQQ==");

    // A second reply to an answered request, or to an unknown id: ENOENT.
    let late = run(
        &d,
        a.pid,
        json!({"cmd": "reply", "args": {"request_id": body["request_id"], "status": 200, "body": "again"}}),
    );
    assert_eq!(late["code"], "ENOENT", "{late}");
    let unknown = run(
        &d,
        a.pid,
        json!({"cmd": "reply", "args": {"request_id": "w-999999999", "status": 200, "body": ""}}),
    );
    assert_eq!(unknown["code"], "ENOENT", "{unknown}");

    // Bad arguments are refused with EINVAL and the daemon carries on.
    for args in [
        json!({"path": "relative"}),
        json!({"path": "/a/../b"}),
        json!({"path": "/a b"}),
        json!({"path": format!("/{}", "a".repeat(300))}),
        json!({"path": "/ok", "secret": ""}),
        json!({"path": "/ok", "secret": 5}),
        json!({"path": 5}),
        json!({"route": "/x"}),
    ] {
        let r = run(&d, a.pid, json!({"cmd": "register", "args": args}));
        assert_eq!(r["code"], "EINVAL", "{args}: {r}");
    }
    for args in [
        json!({"request_id": "w-1", "status": 99, "body": ""}),
        json!({"request_id": "w-1", "status": 200, "body": "", "headers": {"Content-Length": "5"}}),
        json!({"request_id": "w-1", "status": 200, "body": "", "headers": {"bad name": "x"}}),
        json!({"request_id": "w-1", "status": 200, "body": "%%", "encoding": "base64"}),
        json!({"status": 200, "body": ""}),
    ] {
        let r = run(&d, a.pid, json!({"cmd": "reply", "args": args}));
        assert_eq!(r["code"], "EINVAL", "{args}: {r}");
    }
    let r = http(port, "GET", "/hooks/echo", &[], b"");
    assert_eq!(r.status, 201, "the listener still works: {}", r.text());
    stop(&d, a.pid);
}

#[test]
fn an_agent_that_never_replies_gives_504() {
    if !require_root("an_agent_that_never_replies_gives_504") {
        return;
    }
    let (d, port) = daemon("reply_timeout_s = 2");
    let (a, ready) = hook_agent(&d, "mute", "silent", json!([{"path": "/hooks/mute"}]));
    registered_ok(&ready, 0);
    let started = Instant::now();
    let r = http(port, "POST", "/hooks/mute", &[], b"anyone?");
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "504 after {took:?}"
    );
    // The agent got the request; its reply now comes too late.
    let ev = wait_seen(&d, a.pid, 1)[0].clone();
    assert_eq!(ev["body"], "anyone?");
    let late = run(
        &d,
        a.pid,
        json!({"cmd": "reply", "args": {"request_id": ev["request_id"], "status": 200, "body": "sorry"}}),
    );
    assert_eq!(late["code"], "ENOENT", "{late}");
    stop(&d, a.pid);
}

#[test]
fn unknown_paths_get_404() {
    if !require_root("unknown_paths_get_404") {
        return;
    }
    let (d, port) = daemon("");
    let (a, ready) = hook_agent(&d, "owner", "echo", json!([{"path": "/hooks/known"}]));
    registered_ok(&ready, 0);
    for target in [
        "/",
        "/nothing",
        "/hooks/known/",
        "/hooks/known/more",
        "/hooks/KNOWN",
        "/hooks/%6Bnown",
    ] {
        let r = http(port, "POST", target, &[], b"x");
        assert_eq!(r.status, 404, "{target}: {}", r.text());
    }
    assert!(seen(&d, a.pid).is_empty(), "the agent saw a request");
    let r = http(port, "POST", "/hooks/known", &[], b"x");
    assert_eq!(r.status, 201, "{}", r.text());
    stop(&d, a.pid);
}

#[test]
fn signed_paths_need_a_valid_signature() {
    if !require_root("signed_paths_need_a_valid_signature") {
        return;
    }
    let (d, port) = daemon("");
    let secret = "s3cret-for-signing";
    let (a, ready) = hook_agent(
        &d,
        "signed",
        "echo",
        json!([{"path": "/hooks/signed", "secret": secret}]),
    );
    registered_ok(&ready, 0);
    let body = br#"{"event":"push"}"#;
    let good = signature(secret, body);
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no signature", vec![]),
        (
            "wrong secret",
            vec![("X-AgentOS-Signature", signature("other", body))],
        ),
        (
            "other body",
            vec![("X-AgentOS-Signature", signature(secret, b"{}"))],
        ),
        (
            "no prefix",
            vec![(
                "X-AgentOS-Signature",
                good.trim_start_matches("sha256=").into(),
            )],
        ),
        (
            "garbage",
            vec![("X-AgentOS-Signature", "sha256=zzzz".into())],
        ),
        (
            "truncated",
            vec![("X-AgentOS-Signature", good[..good.len() - 2].to_string())],
        ),
        ("other header", vec![("X-Signature", good.clone())]),
    ];
    for (what, headers) in &cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let r = http(port, "POST", "/hooks/signed", &h, body);
        assert_eq!(r.status, 401, "{what}: {}", r.text());
    }
    let r = http(
        port,
        "POST",
        "/hooks/signed?status=200",
        &[("X-AgentOS-Signature", &good)],
        body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["upper"], r#"{"EVENT":"PUSH"}"#);
    // Only the signed request reached the agent.
    std::thread::sleep(Duration::from_millis(300));
    let s = seen(&d, a.pid);
    assert_eq!(s.len(), 1, "the agent saw refused requests: {s:?}");
    assert_eq!(s[0]["query"], "status=200");

    // Re-registering without a secret makes the path unsigned.
    let r = run(
        &d,
        a.pid,
        json!({"cmd": "register", "args": {"path": "/hooks/signed"}}),
    );
    assert_eq!(r["code"], "SUCCESS", "{r}");
    assert_eq!(r["result"]["signed"], false);
    let r = http(port, "POST", "/hooks/signed", &[], b"open now");
    assert_eq!(r.status, 201, "{}", r.text());
    stop(&d, a.pid);
}

#[test]
fn oversized_bodies_and_headers_are_refused() {
    if !require_root("oversized_bodies_and_headers_are_refused") {
        return;
    }
    let (d, port) = daemon("max_body_bytes = 4096\nmax_header_bytes = 2048");
    let (a, ready) = hook_agent(&d, "small", "echo", json!([{"path": "/hooks/small"}]));
    registered_ok(&ready, 0);
    let r = http(port, "POST", "/hooks/small", &[], &vec![b'a'; 4097]);
    assert_eq!(r.status, 413, "{}", r.text());
    let r = http(port, "POST", "/hooks/small", &[], &vec![b'a'; 100_000]);
    assert_eq!(r.status, 413, "{}", r.text());
    let big = "v".repeat(3000);
    let r = http(port, "POST", "/hooks/small", &[("X-Big", &big)], b"x");
    assert_eq!(r.status, 431, "{}", r.text());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        seen(&d, a.pid).is_empty(),
        "the agent saw a refused request"
    );
    // At the cap is fine.
    let r = http(port, "POST", "/hooks/small", &[], &vec![b'b'; 4096]);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["upper"], "B".repeat(4096));
    stop(&d, a.pid);
}

#[test]
fn a_path_is_freed_when_its_agent_ends() {
    if !require_root("a_path_is_freed_when_its_agent_ends") {
        return;
    }
    let (d, port) = daemon("");
    let (a, ready) = hook_agent(&d, "short", "echo", json!([{"path": "/hooks/bye"}]));
    registered_ok(&ready, 0);
    let r = http(port, "POST", "/hooks/bye", &[], b"hi");
    assert_eq!(r.status, 201, "{}", r.text());
    stop(&d, a.pid);
    let r = http(port, "POST", "/hooks/bye", &[], b"hi");
    assert_eq!(r.status, 404, "{}", r.text());
    // ... and another agent may take it.
    let (b, ready) = hook_agent(&d, "next", "echo", json!([{"path": "/hooks/bye"}]));
    registered_ok(&ready, 0);
    let r = http(port, "POST", "/hooks/bye", &[], b"hi");
    assert_eq!(r.status, 201, "{}", r.text());

    // An agent killed while a request waits for it: the caller gets 502 at
    // once, not a timeout.
    let (c, ready) = hook_agent(&d, "doomed", "silent", json!([{"path": "/hooks/doomed"}]));
    registered_ok(&ready, 0);
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        (
            http(port, "POST", "/hooks/doomed", &[], b"x"),
            started.elapsed(),
        )
    });
    wait_seen(&d, c.pid, 1);
    d.call(AdminRequest::Kill { pid: c.pid }).expect("kill");
    let (r, took) = waiter.join().expect("client");
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(took < Duration::from_secs(20), "502 after {took:?}");
    let r = http(port, "POST", "/hooks/doomed", &[], b"x");
    assert_eq!(r.status, 404, "{}", r.text());
    stop(&d, b.pid);
}

#[test]
fn a_path_has_one_owner_and_only_it_may_reply() {
    if !require_root("a_path_has_one_owner_and_only_it_may_reply") {
        return;
    }
    let (d, port) = daemon("reply_timeout_s = 60");
    let (a, ready) = hook_agent(&d, "first", "silent", json!([{"path": "/hooks/shared"}]));
    registered_ok(&ready, 0);
    let (b, ready) = hook_agent(&d, "second", "silent", json!([{"path": "/hooks/shared"}]));
    let r = &ready["register"][0];
    assert_eq!(r["code"], "EEXIST", "{r}");

    let waiter = std::thread::spawn(move || http(port, "POST", "/hooks/shared", &[], b"for A"));
    let ev = wait_seen(&d, a.pid, 1)[0].clone();
    assert!(seen(&d, b.pid).is_empty());
    let id = ev["request_id"].clone();
    let r = run(
        &d,
        b.pid,
        json!({"cmd": "reply", "args": {"request_id": id, "status": 200, "body": "from B"}}),
    );
    assert_eq!(r["code"], "EACCES", "{r}");
    let r = run(
        &d,
        a.pid,
        json!({"cmd": "reply", "args": {"request_id": id, "status": 202, "body": "from A", "headers": {"X-From": "A"}}}),
    );
    assert_eq!(r["code"], "SUCCESS", "{r}");
    assert_eq!(r["result"]["replied"], true);
    let resp = waiter.join().expect("client");
    assert_eq!(resp.status, 202);
    assert_eq!(resp.text(), "from A");
    assert_eq!(resp.header("x-from"), Some("A"));

    // The owner re-registers with a secret: the path is now signed.
    let r = run(
        &d,
        a.pid,
        json!({"cmd": "register", "args": {"path": "/hooks/shared", "secret": "k"}}),
    );
    assert_eq!(r["code"], "SUCCESS", "{r}");
    assert_eq!(r["result"]["signed"], true);
    let resp = http(port, "POST", "/hooks/shared", &[], b"unsigned");
    assert_eq!(resp.status, 401, "{}", resp.text());
    stop(&d, a.pid);
    stop(&d, b.pid);
}

#[test]
fn the_secret_never_appears_in_logs_or_info() {
    if !require_root("the_secret_never_appears_in_logs_or_info") {
        return;
    }
    let (d, port) = daemon("");
    let secret = "TopSecret-Value-9f3a71";
    // The registrations come from a file bound read-only into the sandbox,
    // so that the secret is not in the agent's argv (which inspect shows).
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("webhooks-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("registrations.json");
    std::fs::write(
        &file,
        json!([
            {"path": "/hooks/keeper", "secret": secret},
            {"path": "/hooks/keeper2", "secret": secret},
        ])
        .to_string(),
    )
    .expect("write registrations");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let file = file.display().to_string();
    let regs = format!("@{file}");
    let (a, ready) = hook_agent_with(&d, "keeper", "echo", &regs, std::slice::from_ref(&file));
    registered_ok(&ready, 0);
    registered_ok(&ready, 1);
    assert!(!ready.to_string().contains(secret), "{ready}");
    assert!(ready["info"]["pid"].is_u64(), "AGENT_INFO ran: {ready}");
    assert!(ready["ps"]["agents"].is_array(), "PS ran: {ready}");
    let body = b"payload";
    let sig = signature(secret, body);
    let r = http(
        port,
        "POST",
        "/hooks/keeper",
        &[("X-AgentOS-Signature", &sig)],
        body,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = http(port, "POST", "/hooks/keeper", &[], body);
    assert_eq!(r.status, 401);

    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_agentos"))
            .arg("--socket")
            .arg(&d.socket)
            .args(args)
            .output()
            .expect("run agentos");
        assert!(out.status.success(), "agentos {args:?}: {out:?}");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let pid = a.pid.to_string();
    let logs = cli(&["logs", &pid]);
    assert!(
        logs.contains("SYS_REGISTER_WEBHOOK"),
        "the call is journaled: {logs}"
    );
    assert!(logs.contains("redacted"), "{logs}");
    for text in [
        logs,
        cli(&["--json", "logs", &pid]),
        cli(&["inspect", &pid]),
        cli(&["--json", "ps"]),
        d.logs(a.pid),
        d.log(),
    ] {
        assert!(!text.contains(secret), "the secret leaked: {text}");
    }
    stop(&d, a.pid);
    let text = cli(&["logs", &pid]);
    assert!(!text.contains(secret), "the secret leaked: {text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn registrations_survive_a_daemon_restart() {
    if !require_root("registrations_survive_a_daemon_restart") {
        return;
    }
    let (mut d, port) = daemon("");
    // Registered by command, so the recovered agent (which starts its
    // script again) does not simply register anew.
    let (a, _) = hook_agent(&d, "durable", "echo", json!([]));
    let r = run(
        &d,
        a.pid,
        json!({"cmd": "register", "args": {"path": "/hooks/durable"}}),
    );
    assert_eq!(r["code"], "SUCCESS", "{r}");
    d.crash();
    let _ = std::fs::remove_file(d.workspace(a.pid).join("ready.json"));
    let _ = std::fs::remove_file(d.workspace(a.pid).join("results.json"));
    d.launch();
    eventually(Duration::from_secs(30), || {
        ws_json(&d, a.pid, "results.json")?;
        ws_json(&d, a.pid, "ready.json")
    })
    .unwrap_or_else(|| panic!("the agent was not recovered\n{}", d.log()));
    let r = http(port, "POST", "/hooks/durable", &[], b"after restart");
    assert_eq!(r.status, 201, "{}\n{}", r.text(), d.log());
    assert_eq!(r.json()["upper"], "AFTER RESTART");
    stop(&d, a.pid);
}

#[test]
fn a_busy_listen_address_stops_the_daemon() {
    if !require_root("a_busy_listen_address_stops_the_daemon") {
        return;
    }
    let holder = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = holder.local_addr().expect("addr").port();
    let path = write_config(port, "");
    let config = path.display().to_string();
    // The admin socket exists before the listener is bound, so the harness
    // may see the daemon come up before it stops: then wait for the exit.
    let outcome = std::panic::catch_unwind(|| Daemon::start_with(&["--config", &config]));
    let _ = std::fs::remove_file(&path);
    let msg = match outcome {
        Err(panic) => panic.downcast_ref::<String>().cloned().unwrap_or_default(),
        Ok(mut d) => {
            let status = eventually(Duration::from_secs(20), || {
                d.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
            })
            .unwrap_or_else(|| panic!("the daemon runs although 127.0.0.1:{port} is taken"));
            assert!(!status.success(), "{status}");
            d.child = None;
            d.log()
        }
    };
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("webhooks"),
        "the error names the address: {msg}"
    );
    drop(holder);
}

#[test]
fn the_listener_can_be_turned_off() {
    if !require_root("the_listener_can_be_turned_off") {
        return;
    }
    let n = CONFIGS.fetch_add(1, Ordering::SeqCst);
    let path = std::env::temp_dir().join(format!(
        "agentos-webhooks-off-{}-{n}.toml",
        std::process::id()
    ));
    std::fs::write(&path, "[webhooks]\nlisten = \"off\"\n").expect("config");
    let d = Daemon::start_with(&["--config", &path.display().to_string()]);
    let _ = std::fs::remove_file(&path);
    let (a, ready) = hook_agent(&d, "nohooks", "echo", json!([{"path": "/hooks/x"}]));
    assert_eq!(ready["register"][0]["code"], "ENOSYS", "{ready}");
    assert!(d.log().contains("webhook listener disabled"), "{}", d.log());
    stop(&d, a.pid);
}
