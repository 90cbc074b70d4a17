//! Power-loss faithfulness by fault injection: SIGKILL keeps the page
//! cache, so it cannot show that flushes are real. Here libfiu (Debian's
//! fiu-utils) makes the daemon's fsync/fdatasync and writes fail with EIO or
//! ENOSPC at run time: the daemon must refuse to acknowledge, say why in its
//! log, and exit rather than continue with a state it cannot make durable;
//! everything it acknowledged before the fault must be there after a
//! restart without faults.

mod common;

use agentos::admin::protocol::AdminRequest;
use common::{Daemon, require_root};
use std::process::Command;
use std::time::Duration;

fn have_fiu() -> bool {
    let ok = Command::new("fiu-run").arg("-h").output().is_ok();
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("fiu-run (Debian fiu-utils) is required in CI");
        }
        eprintln!("\n!!!!! SKIPPED fault injection: install fiu-utils !!!!!\n");
    }
    ok
}

fn inject(daemon_pid: u32, point: &str, errno: i32) {
    let out = Command::new("fiu-ctrl")
        .args([
            "-c",
            &format!("enable name={point},failinfo={errno}"),
            &daemon_pid.to_string(),
        ])
        .output()
        .expect("fiu-ctrl");
    assert!(
        out.status.success(),
        "fiu-ctrl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The daemon runs `fiu-run -x agentosd`; its pid is the wrapper's (fiu-run
/// execs the daemon).
fn run_case(point: &str, errno: i32) {
    let mut d = Daemon::start();
    d.crash();
    d.wrapper = vec!["fiu-run".into(), "-x".into()];
    d.launch();
    let inbox = d.spawn_probe("inbox", &["sleep", "100000000"], &[]).pid;
    let mut acked = Vec::new();
    for n in 0..20 {
        let body = format!("before the fault {n}");
        d.call(AdminRequest::Send {
            pid: inbox,
            body: body.clone(),
        })
        .expect("send");
        acked.push(body);
    }
    inject(d.pid(), point, errno);
    let refused = d.call(AdminRequest::Send {
        pid: inbox,
        body: "during the fault".into(),
    });
    assert!(
        refused.is_err(),
        "{point}: a message was acknowledged while the disk failed"
    );
    let exited = common::eventually(Duration::from_secs(10), || {
        d.child.as_mut().and_then(|c| c.try_wait().ok()).flatten()
    });
    let log = d.log();
    assert!(
        exited.is_some_and(|s| !s.success()),
        "{point}: the daemon kept running:\n{log}"
    );
    assert!(
        log.contains("flush failed"),
        "{point}: the log does not say why:\n{log}"
    );
    d.child = None;

    d.wrapper.clear();
    d.launch();
    let got = d.inbox(inbox);
    let bodies: std::collections::HashSet<&str> = got.iter().map(|m| m.body.as_str()).collect();
    for b in &acked {
        assert!(
            bodies.contains(b.as_str()),
            "{point}: acknowledged {b:?} lost"
        );
    }
}

#[test]
fn a_failing_fsync_stops_acknowledgements() {
    if !require_root("a_failing_fsync_stops_acknowledgements") || !have_fiu() {
        return;
    }
    run_case("posix/io/sync/*", libc::EIO);
}

#[test]
fn failing_writes_stop_acknowledgements() {
    if !require_root("failing_writes_stop_acknowledgements") || !have_fiu() {
        return;
    }
    // Positioned writes: how the store writes; stderr and sockets still work
    // so the daemon can say why it stops.
    run_case("posix/io/rw/pwrite", libc::ENOSPC);
    run_case("posix/io/rw/pwrite", libc::EIO);
}
