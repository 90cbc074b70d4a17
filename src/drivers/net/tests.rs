//! NET_FETCH against a real server on 127.0.0.1.

use super::*;
use serde_json::json;
use std::sync::Arc;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A one-route-per-path HTTP/1.1 server on 127.0.0.1 (connection per
/// request) that counts connections.
struct Server {
    port: u16,
    connections: Arc<AtomicUsize>,
}

fn serve(port: u16, path: &str, stream: &mut TcpStream) {
    let reply = |s: &mut TcpStream, head: &str, body: &[u8]| {
        let _ = write!(
            s,
            "HTTP/1.1 {head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(body);
    };
    let redirect = |s: &mut TcpStream, to: &str| {
        let _ = write!(
            s,
            "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    };
    match path {
        "/hello" => reply(stream, "200 OK", b"hello"),
        "/big" => reply(stream, "200 OK", &[b'a'; 5000]),
        "/binary" => reply(stream, "200 OK", &[0xff, 0xfe, 0, 1]),
        "/slow" => {
            std::thread::sleep(Duration::from_secs(3));
            reply(stream, "200 OK", b"late");
        }
        "/stream" => {
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            );
            for _ in 0..100_000 {
                if write!(stream, "400\r\n{}\r\n", "z".repeat(0x400)).is_err() {
                    break;
                }
            }
        }
        "/to-private" => redirect(stream, "http://10.0.0.1/"),
        "/to-decimal" => redirect(stream, "http://2130706433:1/"),
        "/to-localhost" => redirect(stream, &format!("http://localhost:{port}/hello")),
        "/to-file" => redirect(stream, "file:///etc/passwd"),
        "/to-scheme-relative" => redirect(stream, &format!("//0x7f.1:{port}/hello")),
        p if p.starts_with("/chain/") => {
            let n: u32 = p[7..].parse().unwrap_or(0);
            if n == 0 {
                reply(stream, "200 OK", b"end")
            } else {
                redirect(stream, &format!("/chain/{}", n - 1))
            }
        }
        _ => reply(stream, "404 Not Found", b"no"),
    }
}

impl Server {
    fn start() -> Server {
        let l = TcpListener::bind("127.0.0.1:0").expect("must succeed");
        let port = l.local_addr().expect("must succeed").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { break };
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut r = BufReader::new(s.try_clone().expect("must succeed"));
                    let mut line = String::new();
                    let _ = r.read_line(&mut line);
                    let path = line.split(' ').nth(1).unwrap_or("/").to_string();
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    let _ = r.read_exact(&mut body);
                    serve(port, &path, &mut s);
                });
            }
        });
        Server { port, connections }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn policy(allow_loopback: bool) -> NetPolicy {
    NetPolicy {
        allow_loopback,
        ..NetPolicy::default()
    }
}

fn local(max_bytes: u64, timeout_s: u64, max_redirects: u32) -> NetPolicy {
    NetPolicy {
        allow_loopback: true,
        max_bytes,
        timeout_s,
        max_redirects,
        ..NetPolicy::default()
    }
}

#[tokio::test]
async fn fetches_truncates_and_encodes() {
    let s = Server::start();
    let p = local(1000, 5, 3);
    let r = fetch(&p, false, &json!({"url": s.url("/hello")}))
        .await
        .expect("must succeed");
    assert_eq!(r["status"], 200);
    assert_eq!(r["body"], "hello");
    assert_eq!(r["encoding"], "utf8");
    assert_eq!(r["truncated"], false);
    assert_eq!(r["headers"]["content-length"], "5");

    let r = fetch(&p, false, &json!({"url": s.url("/big")}))
        .await
        .expect("must succeed");
    assert_eq!(r["body"].as_str().expect("must succeed").len(), 1000);
    assert_eq!(r["truncated"], true);
    let r = fetch(&p, false, &json!({"url": s.url("/big"), "max_bytes": 10}))
        .await
        .expect("must succeed");
    assert_eq!(r["body"], "aaaaaaaaaa");
    // The request may lower the cap, never raise it.
    let r = fetch(
        &p,
        false,
        &json!({"url": s.url("/big"), "max_bytes": 1u64 << 40}),
    )
    .await
    .expect("must succeed");
    assert_eq!(r["body"].as_str().expect("must succeed").len(), 1000);
    // An endless chunked body is cut, not waited for.
    let r = fetch(&p, false, &json!({"url": s.url("/stream")}))
        .await
        .expect("must succeed");
    assert_eq!(r["truncated"], true);
    assert_eq!(r["body"].as_str().expect("must succeed").len(), 1000);

    let r = fetch(&p, false, &json!({"url": s.url("/binary")}))
        .await
        .expect("must succeed");
    assert_eq!(r["encoding"], "base64");
    assert_eq!(r["body"], "//4AAQ==");

    let r = fetch(
        &p,
        false,
        &json!({"url": s.url("/hello"), "method": "HEAD"}),
    )
    .await
    .expect("must succeed");
    assert_eq!(r["status"], 200);
    assert_eq!(r["body"], "");
}

#[tokio::test]
async fn redirects_are_rechecked_and_bounded() {
    let s = Server::start();
    let p = local(1000, 5, 3);
    let r = fetch(&p, false, &json!({"url": s.url("/chain/3")}))
        .await
        .expect("must succeed");
    assert_eq!(r["body"], "end");
    assert_eq!(r["redirects"], 3);
    assert!(
        r["url"]
            .as_str()
            .expect("must succeed")
            .ends_with("/chain/0")
    );
    let e = fetch(&p, false, &json!({"url": s.url("/chain/4")}))
        .await
        .expect_err("must fail");
    assert_eq!(e.code, Errno::EACCES, "{e}");
    assert!(e.message.contains("max_redirects"), "{e}");
    for (path, rule) in [
        ("/to-private", "private 10."),
        ("/to-file", "only http and https"),
    ] {
        let e = fetch(&p, false, &json!({"url": s.url(path)}))
            .await
            .expect_err("must fail");
        assert_eq!(e.code, Errno::EACCES, "{path}: {e}");
        assert!(e.message.contains(rule), "{path}: {e}");
    }
    // A decimal literal of loopback is loopback: followed under the switch.
    let e = fetch(&p, false, &json!({"url": s.url("/to-decimal")}))
        .await
        .expect_err("must fail");
    assert_eq!(e.code, Errno::EIO, "port 1 is closed: {e}");
    // localhost goes through the checking resolver.
    let r = fetch(&p, false, &json!({"url": s.url("/to-scheme-relative")}))
        .await
        .expect("must succeed");
    assert_eq!(r["body"], "hello");
    let r = fetch(&p, false, &json!({"url": s.url("/to-localhost")}))
        .await
        .expect("must succeed");
    assert_eq!(r["body"], "hello");
}

#[tokio::test]
async fn the_resolver_refuses_names_of_blocked_addresses() {
    let s = Server::start();
    let p = policy(false);
    let e = fetch(
        &p,
        false,
        &json!({"url": format!("http://localhost:{}/hello", s.port)}),
    )
    .await
    .expect_err("must fail");
    assert_eq!(e.code, Errno::EACCES, "{e}");
    assert!(e.message.contains("localhost resolves to 127.0.0.1"), "{e}");
    let e = fetch(&p, false, &json!({"url": s.url("/hello")}))
        .await
        .expect_err("must fail");
    assert_eq!(e.code, Errno::EACCES, "{e}");
    assert_eq!(
        s.connections.load(Ordering::SeqCst),
        0,
        "nothing may connect"
    );
}

#[tokio::test]
async fn the_profile_timeout_bounds_the_whole_exchange() {
    let s = Server::start();
    let p = local(1000, 1, 3);
    let started = std::time::Instant::now();
    let e = fetch(&p, false, &json!({"url": s.url("/slow")}))
        .await
        .expect_err("must fail");
    assert_eq!(e.code, Errno::ETIMEDOUT, "{e}");
    assert!(started.elapsed() < Duration::from_millis(2500));
}

#[tokio::test]
async fn bad_arguments_are_einval() {
    let p = local(1000, 5, 3);
    for args in [
        json!({}),
        json!({"url": 5}),
        json!({"url": "http://127.0.0.1:1/", "method": 1}),
        json!({"url": "http://127.0.0.1:1/", "headers": ["x"]}),
        json!({"url": "http://127.0.0.1:1/", "max_bytes": -1}),
        json!({"url": "http://127.0.0.1:1/", "unknown": 1}),
        json!({"url": "http://127.0.0.1:1/", "body": "x"}),
        json!({"url": "http://127.0.0.1:1/", "method": "TRACE"}),
    ] {
        let e = fetch(&p, true, &args).await.expect_err("must fail");
        assert_eq!(e.code, Errno::EINVAL, "{args}: {e}");
    }
}
