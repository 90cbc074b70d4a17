//! Operating the daemon: the Prometheus endpoint parses as the exposition
//! format and counts what happened, the audit trail records denied syscalls
//! and admin actions, and the CLI prints shell completions.

mod common;

use common::{Daemon, python_agent, require_root};
use std::io::{Read, Write};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn http_get(port: u16, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let (head, body) = text.split_once("\r\n\r\n").expect("http response");
    (head.to_string(), body.to_string())
}

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// Checks the text exposition format line by line; returns samples.
fn parse_exposition(text: &str) -> Vec<(String, String, f64)> {
    let mut typed = std::collections::HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            assert!(matches!(kind, "HELP" | "TYPE"), "bad comment line: {line}");
            assert!(is_name(name), "bad metric name in: {line}");
            if kind == "TYPE" {
                let t = parts.next().unwrap_or("");
                assert!(
                    ["counter", "gauge", "summary", "histogram", "untyped"].contains(&t),
                    "{line}"
                );
                typed.insert(name.to_string());
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => {
                let l = l
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                for pair in l.split(',') {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label: {line}"));
                    assert!(
                        is_name(k) && v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                        "bad label: {line}"
                    );
                }
                (n, l.to_string())
            }
            None => (series, String::new()),
        };
        assert!(is_name(name), "bad sample name: {line}");
        let family = ["_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "sample before its # TYPE: {line}");
        samples.push((name.to_string(), labels, value));
    }
    samples
}

fn sample(samples: &[(String, String, f64)], name: &str, labels: &str) -> f64 {
    samples
        .iter()
        .find(|(n, l, _)| n == name && l == labels)
        .map(|s| s.2)
        .unwrap_or_else(|| panic!("no sample {name}{{{labels}}}"))
}

#[test]
fn metrics_audit_and_completions() {
    if !require_root("metrics_audit_and_completions") {
        return;
    }
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("agentos-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("agentosd.toml"),
        format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .expect("config");
    let d = Daemon::start_with(&["--config", &dir.join("agentosd.toml").display().to_string()]);

    // An agent without permissions tries FS_WRITE and is refused.
    let a = d.spawn(python_agent(
        "denied",
        "syscalls_agent.py",
        &["quota"],
        Some(&[]),
    ));
    d.wait(a.pid, Duration::from_secs(30));

    let (head, body) = http_get(port, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let samples = parse_exposition(&body);
    assert!(sample(&samples, "agentos_spawns_total", "") >= 1.0);
    assert!(
        sample(
            &samples,
            "agentos_syscalls_total",
            "call=\"FS_WRITE\",result=\"EACCES\""
        ) >= 1.0,
        "{body}"
    );
    assert!(sample(&samples, "agentos_syscalls_denied_total", "") >= 1.0);
    assert_eq!(
        sample(&samples, "agentos_agents", "state=\"TERMINATED\""),
        1.0
    );
    assert!(sample(&samples, "agentos_store_flush_seconds_count", "") >= 1.0);
    for family in [
        "agentos_llm_tokens_total",
        "agentos_scheduler_queue_length",
        "agentos_llm_latency_seconds_count",
    ] {
        assert!(samples.iter().any(|s| s.0 == family), "{family} missing");
    }
    let (head, _) = http_get(port, "/other");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    // The audit trail holds the denial and the admin's spawn.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentos"))
        .args([
            "--socket",
            &d.socket.display().to_string(),
            "--json",
            "audit",
            "--since",
            "1h",
        ])
        .output()
        .expect("audit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        entries
            .iter()
            .any(|e| e["kind"] == "syscall-denied" && e["op"] == "FS_WRITE" && e["pid"] == a.pid),
        "{entries:?}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["kind"] == "admin" && e["op"] == "spawn" && e["uid"] == 0),
        "{entries:?}"
    );
    let only_other = std::process::Command::new(env!("CARGO_BIN_EXE_agentos"))
        .args([
            "--socket",
            &d.socket.display().to_string(),
            "--json",
            "audit",
            "--pid",
            "999",
        ])
        .output()
        .expect("audit");
    assert_eq!(
        only_other.status.code(),
        Some(1),
        "auditing an unknown agent must fail"
    );

    // Shell completions need no daemon.
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentos"))
            .args(["completions", shell])
            .output()
            .expect("completions");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("agentos") && text.contains("spawn"),
            "{shell}: {text}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
