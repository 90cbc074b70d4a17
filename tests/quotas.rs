//! Byte quotas: a hostile agent (tests/agents/hostile_bytes.py) tries to
//! make the supervisor hold or store unbounded bytes for it — replies in
//! flight, its inbox, its log, the audit trail and journal, the memory
//! store. Each test asserts the bound and that a well-behaved agent beside
//! it still answers.

mod common;

use agentos::admin::protocol::AdminRequest;
use agentos::kernel::pcb::LimitsPatch;
use common::{Daemon, eventually, python_agent, require_root};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

fn spawn_hostile(d: &Daemon, mode: &str, permissions: &[&str], limits: LimitsPatch) -> u64 {
    let mut req = python_agent(
        &format!("hostile-{mode}"),
        "hostile_bytes.py",
        &[mode],
        Some(permissions),
    );
    req.limits = Some(limits);
    d.spawn(req).pid
}

/// A well-behaved agent makes a GETPID round trip and exits 0.
fn neighbour_answers(d: &Daemon) {
    let pid = d
        .spawn(python_agent(
            "neighbour",
            "hostile_bytes.py",
            &["neighbour"],
            Some(&["process"]),
        ))
        .pid;
    let report = d.finish(pid, Duration::from_secs(60));
    assert_eq!(report["pid"].as_u64(), Some(pid), "{report}");
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(p) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[test]
fn recv_msg_replies_that_are_not_read_do_not_grow_the_daemon() {
    if !require_root("recv_msg_replies_that_are_not_read_do_not_grow_the_daemon") {
        return;
    }
    let d = Daemon::start();
    // Warm up (a first agent), then take the baseline.
    neighbour_answers(&d);
    let start_kib = status_kib(d.pid(), "VmRSS:");
    let pid = spawn_hostile(
        &d,
        "recv_flood",
        &["process", "ipc"],
        LimitsPatch::default(),
    );
    let ws = d.workspace(pid);
    let mut peak_kib = start_kib;
    let flooded = eventually(Duration::from_secs(120), || {
        peak_kib = peak_kib.max(status_kib(d.pid(), "VmRSS:"));
        ws.join("flooded").exists().then_some(())
    });
    assert!(
        flooded.is_some(),
        "the flood did not start\n{}",
        d.logs(pid)
    );
    // The daemon answers the twelve calls while the agent reads nothing.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        peak_kib = peak_kib.max(status_kib(d.pid(), "VmRSS:"));
        std::thread::sleep(Duration::from_millis(20));
    }
    neighbour_answers(&d);
    let hwm_kib = status_kib(d.pid(), "VmHWM:");
    let ceiling_kib = start_kib + 64 * 1024;
    assert!(
        peak_kib.max(hwm_kib) <= ceiling_kib,
        "daemon grew from {start_kib} KiB to {peak_kib} KiB (VmHWM {hwm_kib} KiB), over the ceiling of {ceiling_kib} KiB"
    );
    // Nothing acknowledged is lost: once the agent reads, every reply is
    // there, each within recv_reply_bytes, saying that more are waiting.
    std::fs::write(ws.join("go"), b"").expect("go");
    let report = d.finish(pid, Duration::from_secs(120));
    let sizes: Vec<u64> = report["sizes"]
        .as_array()
        .expect("sizes")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(sizes.len(), 12, "{report}");
    let inspected = d.inspect(pid);
    let cap = inspected.limits.recv_reply_bytes;
    assert!(cap > 0 && cap <= 4 * MIB, "recv_reply_bytes = {cap}");
    for s in &sizes {
        assert!(*s <= cap + 64 * 1024, "a reply of {s} bytes, over {cap}");
    }
    for (c, more) in report["counts"]
        .as_array()
        .expect("counts")
        .iter()
        .zip(report["more"].as_array().expect("more"))
    {
        assert!(c.as_u64().unwrap_or(0) > 0, "{report}");
        assert_eq!(more.as_bool(), Some(true), "{report}");
    }
}

#[test]
fn an_inbox_refuses_at_inbox_bytes_and_the_database_stays_bounded() {
    if !require_root("an_inbox_refuses_at_inbox_bytes_and_the_database_stays_bounded") {
        return;
    }
    let d = Daemon::start();
    let db = d.state_dir().join("db");
    let before = dir_bytes(&db);
    let quota = 4 * MIB;
    let pid = spawn_hostile(
        &d,
        "self_inbox",
        &["process", "ipc"],
        LimitsPatch {
            inbox_bytes: Some(quota),
            ..Default::default()
        },
    );
    let report = d.finish(pid, Duration::from_secs(120));
    let grown = dir_bytes(&db).saturating_sub(before);
    let sent = report["sent"].as_u64().expect("sent");
    let each = report["message_bytes"].as_u64().expect("message_bytes");
    assert!(
        sent > 0 && sent * each <= quota,
        "{sent} messages of {each} bytes accepted under inbox_bytes = {quota}"
    );
    let refusal = &report["refusal"];
    let code = refusal["code"].as_str().unwrap_or("");
    let message = refusal["message"].as_str().unwrap_or("");
    assert!(code == "EAGAIN" || code == "EQUOTA", "{report}");
    assert!(
        message.contains("inbox_bytes") && message.contains(&quota.to_string()),
        "the refusal does not name the limit: {report}"
    );
    // Nothing acknowledged was lost.
    assert_eq!(report["received"].as_u64(), Some(sent), "{report}");
    assert!(
        grown <= quota + 32 * MIB,
        "the database grew by {grown} bytes for an inbox quota of {quota}"
    );
    assert_eq!(d.inspect(pid).limits.inbox_bytes, quota);
    neighbour_answers(&d);
}

/// Bytes the daemon charges for one stored output line.
fn charged(events: &[Value]) -> (u64, usize) {
    let out: Vec<&Value> = events
        .iter()
        .filter(|e| matches!(e["stream"].as_str(), Some("stdout" | "stderr")))
        .collect();
    let bytes = out
        .iter()
        .map(|e| e["text"].as_str().unwrap_or("").len() as u64 + 1)
        .sum();
    (bytes, out.len())
}

#[test]
fn output_floods_stay_within_log_bytes() {
    if !require_root("output_floods_stay_within_log_bytes") {
        return;
    }
    let d = Daemon::start();
    let cap = 64 * 1024;
    let overhead = agentos::kernel::journal::LOG_ENTRY_OVERHEAD;
    for mode in ["stdout_flood", "write_stdout_flood", "newlines"] {
        let pid = spawn_hostile(
            &d,
            mode,
            &["process", "ipc"],
            LimitsPatch {
                log_bytes: Some(cap),
                ..Default::default()
            },
        );
        d.finish(pid, Duration::from_secs(120));
        let events = d.log_events(pid);
        let (bytes, lines) = charged(&events);
        assert!(
            bytes + lines as u64 * (overhead - 1) <= cap,
            "{mode}: {lines} lines of {bytes} bytes stored (+{overhead} each) under log_bytes = {cap}"
        );
        assert!(lines > 0, "{mode}: nothing was logged");
        let notices = events
            .iter()
            .filter(|e| {
                e["stream"] == "daemon"
                    && e["text"].as_str().is_some_and(|t| t.contains("log_bytes"))
            })
            .count();
        assert_eq!(notices, 1, "{mode}: the cap is announced once");
        assert_eq!(d.inspect(pid).limits.log_bytes, cap);
    }
    neighbour_answers(&d);
}

#[test]
fn repeated_denials_are_coalesced_in_audit_and_journal() {
    if !require_root("repeated_denials_are_coalesced_in_audit_and_journal") {
        return;
    }
    let d = Daemon::start();
    let pid = spawn_hostile(&d, "denied", &["process"], LimitsPatch::default());
    let report = d.finish(pid, Duration::from_secs(180));
    assert_eq!(report["codes"], serde_json::json!(["EACCES"]), "{report}");
    let audit = d
        .call(AdminRequest::Audit {
            pid: Some(pid),
            since_ms: None,
            tail: Some(agentos::admin::protocol::MAX_PAGE),
            since_seq: None,
        })
        .expect("audit");
    let entries = audit.as_array().cloned().unwrap_or_default();
    let denials: Vec<&Value> = entries
        .iter()
        .filter(|e| e["kind"] == "syscall-denied")
        .collect();
    assert!(
        !denials.is_empty() && denials.len() <= 10,
        "{} audit entries for 5000 identical denials",
        denials.len()
    );
    let counted: u64 = denials
        .iter()
        .map(|e| e["repeated"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(counted, 5000, "the coalesced entries count every denial");
    let journal: Vec<String> = d
        .log_events(pid)
        .iter()
        .filter(|e| e["stream"] == "syscall")
        .filter_map(|e| e["text"].as_str().map(str::to_string))
        .filter(|t| t.starts_with("FS_READ"))
        .collect();
    assert!(
        !journal.is_empty() && journal.len() <= 10,
        "{} journal entries for 5000 identical denials",
        journal.len()
    );
    assert!(
        journal.iter().any(|t| t.contains("denied 5000 times")),
        "{journal:?}"
    );
    neighbour_answers(&d);
}

/// 600 journaled calls of ~3 KiB against journal_bytes = 256 KiB: the
/// oldest entries go, one line says how many, the newest stay.
#[test]
fn the_journal_keeps_the_newest_entries_within_journal_bytes() {
    if !require_root("the_journal_keeps_the_newest_entries_within_journal_bytes") {
        return;
    }
    let d = Daemon::start();
    let limit = 256 * 1024;
    let pid = spawn_hostile(
        &d,
        "journal_flood",
        &["process", "ipc"],
        LimitsPatch {
            journal_bytes: Some(limit),
            ..Default::default()
        },
    );
    let report = d.finish(pid, Duration::from_secs(180));
    assert_eq!(report["codes"], serde_json::json!(["SUCCESS"]), "{report}");
    let inspect = d.call(AdminRequest::Inspect { pid }).expect("inspect");
    let held = inspect["usage"]["journal_bytes"]
        .as_u64()
        .expect("journal_bytes");
    assert!(
        held > 0 && held <= limit + 8192,
        "{held} bytes held of {limit}"
    );
    let events = d.log_events(pid);
    let trimmed: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["text"].as_str().is_some_and(|t| {
                t.contains(&format!(
                    "earlier journal entries removed (journal_bytes = {limit})"
                ))
            })
        })
        .collect();
    assert_eq!(trimmed.len(), 1, "one line says what went: {trimmed:?}");
    let kept = events.iter().filter(|e| e["stream"] == "syscall").count();
    assert!(kept > 20 && kept < 300, "{kept} syscall entries kept");
    // The newest are the ones kept: the agent's exit is there.
    assert!(
        events.iter().any(|e| e["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("SYS_EXIT"))),
        "the newest entries are kept"
    );
    neighbour_answers(&d);
}

#[test]
fn the_memory_store_refuses_at_memory_store_bytes() {
    if !require_root("the_memory_store_refuses_at_memory_store_bytes") {
        return;
    }
    let d = Daemon::start();
    let quota = MIB;
    let pid = spawn_hostile(
        &d,
        "mem_fill",
        &["process", "memory"],
        LimitsPatch {
            memory_store_bytes: Some(quota),
            ..Default::default()
        },
    );
    let report = d.finish(pid, Duration::from_secs(180));
    let stored = report["stored"].as_u64().expect("stored");
    let each = report["value_bytes"].as_u64().expect("value_bytes");
    assert!(
        stored > 0 && stored * each <= quota,
        "{stored} values of {each} bytes stored under memory_store_bytes = {quota}: {report}"
    );
    assert_eq!(report["refusal"]["code"], "EQUOTA", "{report}");
    let message = report["refusal"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("memory_store_bytes") && message.contains(&quota.to_string()),
        "{report}"
    );
    // Replacing a stored value is not charged twice.
    assert_eq!(report["rewrite_first"], "SUCCESS", "{report}");
    assert_eq!(d.inspect(pid).limits.memory_store_bytes, quota);
    neighbour_answers(&d);
}
