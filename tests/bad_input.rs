//! Bad input on fd 3 and on the admin socket: clear error codes, the daemon
//! and other agents unaffected, memory flat.

mod common;

use common::{Daemon, require_root};
use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

#[test]
fn protocol_abuse_gets_clear_errors_and_hurts_nobody() {
    if !require_root("protocol_abuse_gets_clear_errors_and_hurts_nobody") {
        return;
    }
    let d = Daemon::start();
    // Warm up so that allocator growth from the first spawns is not counted.
    let warm = d.spawn_probe("warm", &["exit", "0"], &[]);
    d.wait(warm.pid, Duration::from_secs(20));
    let rss_before = d.rss_kib();

    let abuser = d.spawn_probe("abuser", &["abuse"], &["fs", "ipc"]);
    let exit = d.wait(abuser.pid, Duration::from_secs(120));
    let report = d.report(abuser.pid);
    assert_eq!(
        report["all_ok"],
        true,
        "abuse report: {report:#}\nagent log tail:\n{}",
        d.logs(abuser.pid)
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(exit.code, 0, "{exit:?}");

    // Other agents still work.
    let other = d.spawn_probe("other", &["exit", "9"], &[]);
    assert_eq!(d.wait(other.pid, Duration::from_secs(20)).code, 9);

    // 10 MiB lines and a 20,000-request flood must not leave the daemon
    // holding memory for them.
    let rss_after = d.rss_kib();
    assert!(
        rss_after < rss_before + 64 * 1024,
        "daemon RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

#[test]
fn garbage_on_the_admin_socket_is_refused() {
    if !require_root("garbage_on_the_admin_socket_is_refused") {
        return;
    }
    let d = Daemon::start();
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).expect("connect");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    for bad in [
        "not json\n",
        "{\"op\": \"format_disk\"}\n",
        "{\"op\": \"kill\", \"pid\": \"x\"}\n",
        "{\"op\": \"kill\", \"pid\": 999}\n",
        "{\"op\": \"spawn\", \"name\": \"../x\", \"program\": \"/bin/true\"}\n",
        "{\"op\": \"spawn\", \"name\": \"x\", \"program\": \"relative\"}\n",
        "{\"op\": \"spawn\", \"name\": \"x\", \"program\": \"/etc/passwd\"}\n",
        "{\"op\": \"spawn\", \"name\": \"x\", \"program\": \"/bin/true\", \"permissions\": [\"root\"]}\n",
        "{\"op\": \"spawn\", \"name\": \"x\", \"program\": \"/bin/true\", \"ro\": [\"/proc/1\"]}\n",
        "{\"op\": \"spawn\", \"name\": \"x\", \"program\": \"/bin/true\", \"profile\": \"nope\"}\n",
    ] {
        s.write_all(bad.as_bytes()).expect("write");
        let mut line = String::new();
        r.read_line(&mut line).expect("read");
        let v: serde_json::Value = serde_json::from_str(&line).expect("json reply");
        assert_eq!(v["ok"], false, "{bad} → {line}");
        let code = v["error"]["code"].as_str().unwrap_or("");
        assert!(
            ["EINVAL", "ESRCH", "ENOENT", "EACCES"].contains(&code),
            "{bad} → {line}"
        );
        assert!(!v["error"]["message"].as_str().unwrap_or("").is_empty());
    }
    // None of it created an agent, and the daemon still serves.
    let ps = d
        .call(agentos::admin::protocol::AdminRequest::Ps)
        .expect("ps");
    assert_eq!(ps.as_array().map(|a| a.len()), Some(0), "{ps}");
}
