//! NET_FETCH end to end: Python agents (tests/agents/net_fetch.py) make the
//! calls through a real daemon against a real HTTP/1.1 server on 127.0.0.1
//! started by the test.
//!
//! No test sends traffic anywhere but loopback: every address that must be
//! refused is refused by policy before any connection — the tests assert
//! the policy refusal (EACCES, never a connect error) and, for loopback
//! forms aimed at the test server, that the server saw no connection. The
//! only names resolved are "localhost" (from /etc/hosts); names that must
//! be refused by a domain list are refused before resolution.

mod common;

use agentos::admin::protocol::SpawnRequest;
use common::Daemon;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// ---- the test server ---------------------------------------------------------

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    /// Lower-case names.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A small HTTP/1.1 server (std only, a thread per connection, one request
/// per connection) that records what it is sent and counts connections.
struct Server {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start() -> Server {
        Self::start_on("127.0.0.1:0")
    }

    fn start_on(bind: &str) -> Server {
        let listener = TcpListener::bind(bind).expect("bind the test server");
        let addr = listener.local_addr().expect("local addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s, st) = (connections.clone(), seen.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                std::thread::spawn(move || handle(conn, addr, &s));
            }
        });
        Server {
            addr,
            connections,
            seen,
            stop,
        }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:<port><path>` (or the [::1] form).
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn handle(mut conn: TcpStream, addr: SocketAddr, seen: &Mutex<Vec<Seen>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(clone) = conn.try_clone() else { return };
    let mut r = BufReader::new(clone);
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len.min(1 << 20)];
    let _ = r.read_exact(&mut body);
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    seen.lock().expect("seen").push(Seen {
        method: method.clone(),
        path: path.to_string(),
        headers,
        body,
    });
    respond(&mut conn, addr, path, query);
    let _ = conn.flush();
    let _ = conn.shutdown(Shutdown::Both);
}

fn reply(conn: &mut TcpStream, status: &str, extra: &str, body: &[u8]) {
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    );
    let _ = conn.write_all(body);
}

fn redirect(conn: &mut TcpStream, status: &str, to: &str) {
    reply(conn, status, &format!("Location: {to}\r\n"), b"");
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(conn: &mut TcpStream, addr: SocketAddr, path: &str, query: &str) {
    match path {
        "/hello" => reply(
            conn,
            "200 OK",
            "Content-Type: text/plain\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n",
            b"hello from the test server",
        ),
        "/big" => reply(conn, "200 OK", "", &[b'a'; 5000]),
        "/binary" => reply(conn, "200 OK", "", &[0xff, 0xfe, 0x00, 0x01, 0x80]),
        "/echo" => reply(conn, "200 OK", "", b"ok"),
        "/sleep" => {
            std::thread::sleep(Duration::from_secs(5));
            reply(conn, "200 OK", "", b"late");
        }
        "/stream" => {
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            );
            let chunk = format!("400\r\n{}\r\n", "z".repeat(0x400));
            for _ in 0..1_000_000 {
                if conn.write_all(chunk.as_bytes()).is_err() {
                    break;
                }
            }
        }
        "/redirect" => {
            let to = query
                .strip_prefix("to=")
                .map(percent_decode)
                .unwrap_or_default();
            redirect(conn, "302 Found", &to);
        }
        "/see-other" => redirect(conn, "303 See Other", "/echo"),
        "/temporary" => redirect(conn, "307 Temporary Redirect", "/echo"),
        "/to-localhost" => redirect(
            conn,
            "302 Found",
            &format!("http://localhost:{}/hello", addr.port()),
        ),
        p if p.starts_with("/chain/") => match p["/chain/".len()..].parse::<u32>() {
            Ok(0) => reply(conn, "200 OK", "", b"end of the chain"),
            Ok(n) => redirect(conn, "302 Found", &format!("/chain/{}", n - 1)),
            Err(_) => reply(conn, "400 Bad Request", "", b"bad chain"),
        },
        _ => reply(conn, "404 Not Found", "", b"not found"),
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---- policies and agents ---------------------------------------------------------

/// A copy of the shipped policies plus test profiles derived from
/// `networked.toml` with other `[net]` settings.
struct Policies {
    dir: PathBuf,
}

impl Policies {
    fn new(tag: &str, profiles: &[(&str, &[(&str, &str)])]) -> Policies {
        let dir =
            std::env::temp_dir().join(format!("agentos-net-policies-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let repo = common::repo().join("policies");
        for sub in ["profiles", "seccomp"] {
            std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
            for e in std::fs::read_dir(repo.join(sub)).expect("read policies") {
                let e = e.expect("entry");
                if e.path().is_file() {
                    std::fs::copy(e.path(), dir.join(sub).join(e.file_name())).expect("copy");
                }
            }
        }
        let base =
            std::fs::read_to_string(repo.join("profiles/networked.toml")).expect("networked");
        for (name, settings) in profiles {
            let mut text = base.clone();
            for (key, value) in *settings {
                let mut found = false;
                text = text
                    .lines()
                    .map(|l| {
                        let t = l.trim_start();
                        if t.starts_with(&format!("{key} ")) || t.starts_with(&format!("{key}=")) {
                            found = true;
                            format!("{key} = {value}")
                        } else {
                            l.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                assert!(found, "networked.toml has no {key} line");
            }
            std::fs::write(dir.join(format!("profiles/{name}.toml")), text).expect("write profile");
        }
        Policies { dir }
    }

    fn daemon(&self) -> Daemon {
        Daemon::start_with(&["--policies", &self.dir.display().to_string()])
    }
}

impl Drop for Policies {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// allow_loopback with small limits: 1000 bytes, 2 s, 3 redirects.
const LOCAL: &[(&str, &str)] = &[
    ("allow_loopback", "true"),
    ("max_bytes", "1000"),
    ("timeout_s", "2"),
    ("max_redirects", "3"),
];

/// Runs the NET_FETCH calls `calls` (argument objects) in one agent of
/// `profile` and returns one report entry per call.
fn run(d: &Daemon, profile: &str, permissions: Option<&[&str]>, calls: &[Value]) -> Vec<Value> {
    let list = Value::Array(calls.to_vec()).to_string();
    let req = SpawnRequest {
        profile: Some(profile.to_string()),
        ..common::python_agent("net", "net_fetch.py", &[&list], permissions)
    };
    let pcb = d.spawn(req);
    let report = d.finish(pcb.pid, Duration::from_secs(90));
    let entries = report.as_array().expect("report is a list").clone();
    assert_eq!(entries.len(), calls.len(), "one entry per call: {report}");
    entries
}

fn ok<'a>(entry: &'a Value, what: &str) -> &'a Value {
    assert_eq!(entry["code"], "SUCCESS", "{what}: {entry}");
    &entry["result"]
}

fn refused(entry: &Value, code: &str, needle: &str, what: &str) {
    assert_eq!(entry["code"], code, "{what}: {entry}");
    let msg = entry["message"].as_str().unwrap_or("");
    assert!(
        msg.contains(needle),
        "{what}: message should mention {needle:?}: {msg}"
    );
}

fn get(url: &str) -> Value {
    json!({ "url": url })
}

// ---- tests -----------------------------------------------------------------

#[test]
fn loopback_and_every_odd_literal_are_refused_before_connecting_by_default() {
    if !common::require_root(
        "loopback_and_every_odd_literal_are_refused_before_connecting_by_default",
    ) {
        return;
    }
    let server = Server::start();
    let p = server.port();
    let d = Daemon::start(); // the shipped policies: `networked` has allow_loopback = false
    // (url, a word the refusal must name)
    let cases: Vec<(String, &str)> = vec![
        (server.url("/hello"), "loopback"),
        (
            format!("http://localhost:{p}/hello"),
            "localhost resolves to 127.0.0.1",
        ),
        (format!("http://LOCALHOST:{p}/hello"), "loopback"),
        (format!("http://2130706433:{p}/"), "loopback"),
        (format!("http://017700000001:{p}/"), "loopback"),
        (format!("http://0x7f000001:{p}/"), "loopback"),
        (format!("http://0177.0.0.1:{p}/"), "loopback"),
        (format!("http://0x7f.1:{p}/"), "loopback"),
        (format!("http://0x7F.0.0.1:{p}/"), "loopback"),
        (format!("http://127.1:{p}/"), "loopback"),
        (format!("http://127.0.1:{p}/"), "loopback"),
        (format!("http://0177.0x0.1:{p}/"), "loopback"),
        (format!("http://127.0.0.1.:{p}/"), "loopback"),
        (format!("http://%31%32%37.0.0.1:{p}/"), "loopback"),
        (format!("http://user:pw@127.0.0.1:{p}/"), "loopback"),
        (format!("http://example.com@127.0.0.1:{p}/"), "loopback"),
        (format!("http:\\\\127.0.0.1:{p}\\hello"), "loopback"),
        (format!("HTTPS://0X7F.1:{p}/"), "loopback"),
        (format!("http://[::1]:{p}/"), "loopback"),
        (format!("http://[::ffff:127.0.0.1]:{p}/"), "IPv4-mapped"),
        (format!("http://[::ffff:7f00:1]:{p}/"), "IPv4-mapped"),
        (format!("http://[::127.0.0.1]:{p}/"), "IPv4-compatible"),
        (format!("http://[64:ff9b::7f00:1]:{p}/"), "NAT64"),
        (format!("http://[2002:7f00:1::]:{p}/"), "6to4"),
        (format!("http://0:{p}/"), "unspecified"),
        (format!("http://0.0.0.0:{p}/"), "unspecified"),
        (format!("http://[::]:{p}/"), "unspecified"),
        // Nothing listens at these; a connect attempt would be EIO or a timeout.
        ("http://10.0.0.1/".into(), "private 10."),
        ("http://10.1/".into(), "private 10."),
        ("http://167772161/".into(), "private 10."),
        ("http://172.16.0.1/".into(), "private 172.16"),
        ("http://172.31.255.254/".into(), "private 172.16"),
        ("http://192.168.0.1/".into(), "private 192.168"),
        ("http://0xc0.0xa8.1/".into(), "private 192.168"),
        (
            "http://169.254.169.254/latest/meta-data/".into(),
            "link-local",
        ),
        ("http://2852039166/".into(), "link-local"),
        ("http://0251.0376.0251.0376/".into(), "link-local"),
        ("http://100.64.0.1/".into(), "carrier-grade NAT"),
        ("http://224.0.0.1/".into(), "multicast"),
        ("http://255.255.255.255/".into(), "broadcast"),
        ("http://4294967295/".into(), "broadcast"),
        ("http://192.0.2.1/".into(), "documentation"),
        ("http://198.51.100.1/".into(), "documentation"),
        ("http://203.0.113.1/".into(), "documentation"),
        ("http://198.18.0.1/".into(), "benchmarking"),
        ("http://240.0.0.1/".into(), "reserved"),
        ("http://0.1.2.3/".into(), "this network"),
        ("http://[fe80::1]/".into(), "link-local"),
        ("http://[fc00::1]/".into(), "unique-local"),
        ("http://[fd00::1]/".into(), "unique-local"),
        ("http://[ff02::1]/".into(), "multicast"),
        ("http://[2001:db8::1]/".into(), "documentation"),
        ("http://[::ffff:10.0.0.1]/".into(), "private 10."),
        ("http://[::ffff:169.254.169.254]/".into(), "link-local"),
        ("http://[64:ff9b::a9fe:a9fe]/".into(), "link-local"),
        ("http://[2002:c0a8:1::1]/".into(), "private 192.168"),
        ("http://[2001::1]/".into(), "Teredo"),
    ];
    let calls: Vec<Value> = cases.iter().map(|(u, _)| get(u)).collect();
    let entries = run(&d, "networked", None, &calls);
    for ((url, rule), e) in cases.iter().zip(&entries) {
        refused(e, "EACCES", rule, url);
    }
    assert_eq!(
        server.connections(),
        0,
        "a refused fetch must not connect: {:?}",
        server.seen()
    );
}

#[test]
fn fetches_from_127_0_0_1_when_the_profile_allows_loopback() {
    if !common::require_root("fetches_from_127_0_0_1_when_the_profile_allows_loopback") {
        return;
    }
    let server = Server::start();
    let v6 = TcpListener::bind("[::1]:0")
        .is_ok()
        .then(|| Server::start_on("[::1]:0"));
    let pol = Policies::new("basic", &[("netlocal", LOCAL)]);
    let d = pol.daemon();
    let mut calls = vec![
        get(&server.url("/hello")),
        json!({"url": server.url("/hello"), "method": "HEAD"}),
        get(&server.url("/binary")),
        get(&server.url("/missing")),
        json!({"url": server.url("/echo"), "headers": {
            "X-Test": "yes",
            "Host": "evil.example",
            "Connection": "keep-alive",
            "Proxy-Authorization": "Basic c2VjcmV0",
            "Transfer-Encoding": "chunked",
            "Content-Length": "999",
            "Upgrade": "h2c",
        }}),
        get(&format!("http://localhost:{}/hello", server.port())),
        get(&format!("http://2130706433:{}/hello", server.port())),
        // Bad arguments are EINVAL and leave the agent and daemon running.
        json!({}),
        json!({"url": 7}),
        json!({"url": "ftp://127.0.0.1/"}),
        json!({"url": "file:///etc/passwd"}),
        json!({"url": "not a url"}),
        json!({"url": "http://1.2.3.4.5/"}),
        json!({"url": "http://[::1/"}),
        json!({"url": server.url("/hello"), "method": "TRACE"}),
        json!({"url": server.url("/hello"), "method": "GET", "body": "x"}),
        json!({"url": server.url("/hello"), "headers": {"X-A": 1}}),
        json!({"url": server.url("/hello"), "headers": {"X-A": "a\r\nX-Injected: 1"}}),
        json!({"url": server.url("/hello"), "headers": (0..100).map(|i| (format!("x-h{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
        json!({"url": server.url("/hello"), "max_bytes": -1}),
        json!({"url": server.url("/hello"), "surprise": true}),
        json!({"url": format!("http://example.com/{}", "a".repeat(9000))}),
        get(&server.url("/hello")),
        // ::1 is loopback too; its IPv4-mapped form of 127.0.0.1 is not.
        get(&format!(
            "http://[::ffff:127.0.0.1]:{}/hello",
            server.port()
        )),
    ];
    if let Some(v6) = &v6 {
        calls.push(get(&v6.url("/hello")));
    }
    let e = run(&d, "netlocal", None, &calls);

    let r = ok(&e[0], "GET /hello");
    assert_eq!(r["status"], 200);
    assert_eq!(r["body"], "hello from the test server");
    assert_eq!(r["encoding"], "utf8");
    assert_eq!(r["truncated"], false);
    assert_eq!(r["headers"]["content-type"], "text/plain");
    assert_eq!(r["headers"]["set-cookie"], "a=1, b=2");
    assert_eq!(r["url"], server.url("/hello"));
    let r = ok(&e[1], "HEAD /hello");
    assert_eq!(
        (r["status"].clone(), r["body"].clone()),
        (json!(200), json!(""))
    );
    let r = ok(&e[2], "binary");
    assert_eq!(r["encoding"], "base64");
    assert_eq!(r["body"], "//4AAYA=");
    assert_eq!(
        ok(&e[3], "404")["status"],
        404,
        "an HTTP error status is a result"
    );

    ok(&e[4], "headers");
    let echo = server
        .seen()
        .into_iter()
        .find(|s| s.path == "/echo")
        .expect("the server saw /echo");
    assert_eq!(echo.header("x-test"), Some("yes"));
    assert_eq!(
        echo.header("host"),
        Some(format!("127.0.0.1:{}", server.port()).as_str()),
        "Host comes from the URL"
    );
    assert_eq!(echo.header("proxy-authorization"), None);
    assert_eq!(echo.header("transfer-encoding"), None);
    assert_eq!(echo.header("upgrade"), None);
    assert_ne!(echo.header("content-length"), Some("999"));
    assert_ne!(echo.header("connection"), Some("keep-alive"));
    assert!(
        echo.header("user-agent")
            .is_some_and(|u| u.starts_with("agentosd/")),
        "{echo:?}"
    );

    assert_eq!(ok(&e[5], "localhost")["body"], "hello from the test server");
    assert_eq!(ok(&e[6], "decimal loopback")["status"], 200);
    for (i, entry) in e.iter().enumerate().take(22).skip(7) {
        assert_eq!(entry["code"], "EINVAL", "call {i} {}: {entry}", calls[i]);
    }
    assert_eq!(ok(&e[22], "after the bad calls")["status"], 200);
    refused(&e[23], "EACCES", "IPv4-mapped", "mapped loopback");
    if let Some(v6) = &v6 {
        assert_eq!(ok(&e[24], "[::1]")["body"], "hello from the test server");
        assert_eq!(v6.connections(), 1);
    }
    // The daemon is still serving.
    let again = run(&d, "netlocal", None, &[get(&server.url("/hello"))]);
    ok(&again[0], "a second agent");
}

#[test]
fn the_size_cap_truncates_and_a_request_may_only_lower_it() {
    if !common::require_root("the_size_cap_truncates_and_a_request_may_only_lower_it") {
        return;
    }
    let server = Server::start();
    let pol = Policies::new("cap", &[("netlocal", LOCAL)]);
    let d = pol.daemon();
    let e = run(
        &d,
        "netlocal",
        None,
        &[
            get(&server.url("/big")),
            json!({"url": server.url("/big"), "max_bytes": 10}),
            json!({"url": server.url("/big"), "max_bytes": 1_000_000_000u64}),
            json!({"url": server.url("/big"), "max_bytes": 0}),
            get(&server.url("/stream")),
            json!({"url": server.url("/hello"), "max_bytes": 26}),
        ],
    );
    let r = ok(&e[0], "profile cap");
    assert_eq!(r["truncated"], true);
    assert_eq!(r["body"], "a".repeat(1000));
    let r = ok(&e[1], "lowered cap");
    assert_eq!(
        (r["body"].clone(), r["truncated"].clone()),
        (json!("a".repeat(10)), json!(true))
    );
    let r = ok(&e[2], "a larger request cap");
    assert_eq!(
        r["body"].as_str().map(str::len),
        Some(1000),
        "cannot raise the cap"
    );
    let r = ok(&e[3], "zero");
    assert_eq!(
        (r["body"].clone(), r["truncated"].clone()),
        (json!(""), json!(true))
    );
    let r = ok(&e[4], "endless body");
    assert_eq!(r["truncated"], true);
    assert_eq!(r["body"].as_str().map(str::len), Some(1000));
    assert!(
        e[4]["ms"].as_u64().unwrap_or(u64::MAX) < 1900,
        "cut, not timed out: {}",
        e[4]
    );
    let r = ok(&e[5], "exactly the cap");
    assert_eq!(r["truncated"], false);
}

#[test]
fn a_slow_server_times_out_at_the_profile_timeout() {
    if !common::require_root("a_slow_server_times_out_at_the_profile_timeout") {
        return;
    }
    let server = Server::start();
    let pol = Policies::new("timeout", &[("netlocal", LOCAL)]);
    let d = pol.daemon();
    let e = run(
        &d,
        "netlocal",
        None,
        &[get(&server.url("/sleep")), get(&server.url("/hello"))],
    );
    refused(&e[0], "ETIMEDOUT", "timeout_s", "slow server");
    let ms = e[0]["ms"].as_u64().expect("ms");
    assert!(
        (1900..4500).contains(&ms),
        "timed out after {ms} ms (profile: 2 s, server: 5 s)"
    );
    ok(&e[1], "the next fetch works");
}

#[test]
fn redirects_are_followed_within_the_limit_and_each_target_is_checked() {
    if !common::require_root("redirects_are_followed_within_the_limit_and_each_target_is_checked") {
        return;
    }
    let server = Server::start();
    let p = server.port();
    let pol = Policies::new("redirects", &[("netlocal", LOCAL)]);
    let d = pol.daemon();
    let to = |target: &str| get(&server.url(&format!("/redirect?to={}", encode(target))));
    let cases = [
        to("/hello"),
        get(&server.url("/chain/3")),
        get(&server.url("/chain/4")),
        get(&server.url("/to-localhost")),
        to(&format!("http://0x7f.1:{p}/hello")),
        to("http://10.0.0.1/"),
        to("http://169.254.169.254/latest/meta-data/"),
        to("http://0xa9fea9fe/"),
        to(&format!("http://[::ffff:127.0.0.1]:{p}/hello")),
        to("http://[fd00::1]/"),
        to("file:///etc/passwd"),
        to("gopher://127.0.0.1/"),
        to(&format!("//0x7f.1:{p}/hello")),
        to("//10.0.0.1/"),
    ];
    let e = run(&d, "netlocal", None, &cases);
    let r = ok(&e[0], "relative redirect");
    assert_eq!(
        (r["body"].clone(), r["redirects"].clone()),
        (json!("hello from the test server"), json!(1))
    );
    assert_eq!(r["url"], server.url("/hello"));
    let r = ok(&e[1], "three redirects");
    assert_eq!(
        (r["body"].clone(), r["redirects"].clone()),
        (json!("end of the chain"), json!(3))
    );
    refused(&e[2], "EACCES", "max_redirects", "four redirects");
    assert_eq!(
        ok(&e[3], "to localhost")["body"],
        "hello from the test server"
    );
    assert_eq!(ok(&e[4], "to a hex loopback literal")["status"], 200);
    refused(&e[5], "EACCES", "private 10.", "to 10.0.0.1");
    refused(&e[6], "EACCES", "link-local", "to the metadata address");
    refused(
        &e[7],
        "EACCES",
        "link-local",
        "to the metadata address in hex",
    );
    refused(&e[8], "EACCES", "IPv4-mapped", "to mapped loopback");
    refused(&e[9], "EACCES", "unique-local", "to fd00::1");
    refused(&e[10], "EACCES", "http and https", "to file:");
    refused(&e[11], "EACCES", "http and https", "to gopher:");
    assert_eq!(ok(&e[12], "scheme-relative")["status"], 200);
    refused(
        &e[13],
        "EACCES",
        "private 10.",
        "scheme-relative to 10.0.0.1",
    );
    // The chain of four stopped at the limit: /chain/4 … /chain/1, never /chain/0.
    let chain: Vec<String> = server
        .seen()
        .into_iter()
        .map(|s| s.path)
        .filter(|p| p.starts_with("/chain/"))
        .collect();
    assert_eq!(
        chain.iter().filter(|p| *p == "/chain/0").count(),
        1,
        "{chain:?}"
    );
    assert_eq!(chain.len(), 4 + 4, "{chain:?}");
}

#[test]
fn methods_other_than_get_and_head_need_net_write() {
    if !common::require_root("methods_other_than_get_and_head_need_net_write") {
        return;
    }
    let server = Server::start();
    let pol = Policies::new("methods", &[("netlocal", LOCAL)]);
    let d = pol.daemon();
    let echo = server.url("/echo");
    let writes: Vec<Value> = ["POST", "PUT", "PATCH", "DELETE", "post"]
        .iter()
        .map(|m| json!({"url": echo, "method": m, "body": format!("{m} body")}))
        .collect();

    // Without NET_WRITE: refused before anything is sent.
    let e = run(&d, "netlocal", Some(&["fs", "NET_FETCH"]), &writes);
    for (entry, call) in e.iter().zip(&writes) {
        refused(entry, "EACCES", "NET_WRITE", &call.to_string());
    }
    assert_eq!(server.connections(), 0, "{:?}", server.seen());

    // With NET_WRITE: sent, with their bodies.
    let mut calls = writes.clone();
    calls.push(
        json!({"url": server.url("/see-other"), "method": "POST", "body": "form",
        "headers": {"Content-Type": "text/plain"}}),
    );
    calls.push(json!({"url": server.url("/temporary"), "method": "PUT", "body": "kept"}));
    calls.push(json!({"url": echo, "method": "OPTIONS"}));
    let e = run(
        &d,
        "netlocal",
        Some(&["fs", "NET_FETCH", "NET_WRITE"]),
        &calls,
    );
    for (i, entry) in e.iter().enumerate().take(7) {
        assert_eq!(ok(entry, &calls[i].to_string())["status"], 200);
    }
    refused(&e[7], "EINVAL", "OPTIONS", "an unsupported method");
    let seen = server.seen();
    for m in ["POST", "PUT", "PATCH", "DELETE"] {
        let s = seen
            .iter()
            .find(|s| {
                s.method == m && s.path == "/echo" && s.body == format!("{m} body").as_bytes()
            })
            .unwrap_or_else(|| panic!("the server never saw the {m} body: {seen:?}"));
        assert_eq!(
            s.header("content-length"),
            Some(format!("{}", m.len() + 5).as_str())
        );
    }
    assert!(
        seen.iter()
            .any(|s| s.method == "POST" && s.body == b"post body")
    );
    // 303 after a POST: a GET without the body; 307 keeps method and body.
    let after_303 = seen
        .iter()
        .position(|s| s.path == "/see-other")
        .map(|i| &seen[i + 1])
        .expect("303 followed");
    assert_eq!(
        (after_303.method.as_str(), after_303.path.as_str()),
        ("GET", "/echo")
    );
    assert!(
        after_303.body.is_empty() && after_303.header("content-type").is_none(),
        "{after_303:?}"
    );
    let after_307 = seen
        .iter()
        .position(|s| s.path == "/temporary")
        .map(|i| &seen[i + 1])
        .expect("307 followed");
    assert_eq!(
        (after_307.method.as_str(), after_307.body.as_slice()),
        ("PUT", b"kept".as_slice())
    );
}

#[test]
fn domain_allow_and_deny_lists_apply_and_deny_wins() {
    if !common::require_root("domain_allow_and_deny_lists_apply_and_deny_wins") {
        return;
    }
    let server = Server::start();
    let p = server.port();
    let lists: &[(&str, &str)] = &[
        ("allow_loopback", "true"),
        ("allow_domains", r#"["LocalHost", "both.test"]"#),
        ("deny_domains", r#"["both.test", "evil.localhost."]"#),
    ];
    let deny: &[(&str, &str)] = &[
        ("allow_loopback", "true"),
        ("deny_domains", r#"["LOCALHOST."]"#),
    ];
    let pol = Policies::new("lists", &[("netlists", lists), ("netdeny", deny)]);
    let d = pol.daemon();

    // Every refused name is refused before it is resolved: none of them
    // exists, and a lookup would leave this machine.
    let e = run(
        &d,
        "netlists",
        None,
        &[
            get(&format!("http://localhost:{p}/hello")),
            get(&format!("http://LOCALHOST:{p}/hello")),
            get(&format!("http://both.test:{p}/")),
            get(&format!("http://api.both.test:{p}/")),
            get(&format!("http://evil.localhost:{p}/")),
            get(&format!("http://a.EVIL.localhost.:{p}/")),
            get(&format!("http://example.com:{p}/")),
            get(&format!("http://notlocalhost:{p}/")),
            get(&format!("http://localhost.evil.test:{p}/")),
            get(&format!("http://127.0.0.1:{p}/hello")),
        ],
    );
    assert_eq!(
        ok(&e[0], "allowed name")["body"],
        "hello from the test server"
    );
    assert_eq!(ok(&e[1], "case-insensitive")["status"], 200);
    refused(
        &e[2],
        "EACCES",
        "deny_domains",
        "denied and allowed: deny wins",
    );
    refused(
        &e[3],
        "EACCES",
        "deny_domains",
        "subdomain of a denied name",
    );
    refused(
        &e[4],
        "EACCES",
        "deny_domains",
        "denied subdomain of an allowed name",
    );
    refused(&e[5], "EACCES", "deny_domains", "case and trailing dot");
    refused(&e[6], "EACCES", "allow_domains", "not in the allow list");
    refused(&e[7], "EACCES", "allow_domains", "suffix without a dot");
    refused(&e[8], "EACCES", "allow_domains", "allowed name as a prefix");
    refused(
        &e[9],
        "EACCES",
        "allow_domains",
        "IP literal with an allow list",
    );
    assert_eq!(
        server.connections(),
        2,
        "only the allowed fetches connected"
    );

    let e = run(
        &d,
        "netdeny",
        None,
        &[
            get(&format!("http://localhost:{p}/hello")),
            get(&format!("http://localhost.:{p}/hello")),
            get(&format!("http://www.localhost:{p}/hello")),
            get(&format!("http://127.0.0.1:{p}/hello")),
        ],
    );
    for (i, what) in ["denied name", "trailing dot", "subdomain"]
        .iter()
        .enumerate()
    {
        refused(&e[i], "EACCES", "deny_domains", what);
    }
    assert_eq!(ok(&e[3], "not a denied name")["status"], 200);
}
