//! `inbox`, `logs` and `audit` are paged: `--tail N` returns exactly the
//! last N entries, `--since SEQ` (audit: `--since-seq`) those after SEQ,
//! and without either a reply holds at most the last 1000 and says how
//! many earlier ones it skipped (the CLI on stderr). An agent with 5000 log
//! lines is the subject; a well-behaved agent keeps answering beside it.

mod common;

use agentos::abi::limits::LimitsPatch;
use agentos::admin::client::Client;
use agentos::admin::protocol::{AdminRequest, DEFAULT_PAGE, MAX_PAGE, SpawnRequest};
use common::{Daemon, python_agent};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const LINES: usize = 5000;

fn logs(
    d: &Daemon,
    pid: u64,
    tail: Option<usize>,
    since: Option<u64>,
) -> (Vec<Value>, Option<u64>) {
    let mut c = Client::connect(&d.socket).expect("connect");
    let (v, skipped) = c
        .call_paged(&AdminRequest::Logs {
            pid,
            follow: false,
            tail,
            since,
        })
        .expect("logs");
    (v.as_array().cloned().expect("a list"), skipped)
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect()
}

fn cli(d: &Daemon, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_agentos"))
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .env_remove("AGENTOS_SOCKET")
        .output()
        .expect("run agentos");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn logs_inbox_and_audit_are_paged() {
    if !common::require_root("logs_inbox_and_audit_are_paged") {
        return;
    }
    let d = Daemon::start();
    // 5000 lines of output: seq prints 1..=5000.
    let chatty = d.spawn(SpawnRequest {
        name: "chatty".into(),
        program: "/usr/bin/seq".into(),
        args: vec!["1".into(), LINES.to_string()],
        limits: Some(LimitsPatch {
            log_bytes: Some(64 << 20),
            ..Default::default()
        }),
        ..Default::default()
    });
    d.wait(chatty.pid, Duration::from_secs(120));
    // Everything, as one maximal page (polled: output may still be landing).
    let all = common::eventually(Duration::from_secs(60), || {
        let (all, skipped) = logs(&d, chatty.pid, Some(MAX_PAGE), None);
        let stdout = all.iter().filter(|e| e["stream"] == "stdout").count();
        (stdout == LINES).then_some((all, skipped))
    });
    let (all, skipped) = all.unwrap_or_else(|| panic!("5000 lines never logged\n{}", d.log()));
    assert_eq!(skipped, Some(0), "a page of everything skipped some");
    let last_line = all
        .iter()
        .rev()
        .find(|e| e["stream"] == "stdout")
        .expect("a stdout line");
    assert_eq!(last_line["text"], LINES.to_string());
    let n = all.len();

    // --tail 10: exactly the last 10, and 10 fewer than all were skipped.
    let (tail, skipped) = logs(&d, chatty.pid, Some(10), None);
    assert_eq!(seqs(&tail), seqs(&all[n - 10..]));
    assert_eq!(skipped, Some((n - 10) as u64));

    // --since SEQ: exactly those after it.
    let since = all[n - 25]["seq"].as_u64().expect("seq");
    let (after, skipped) = logs(&d, chatty.pid, None, Some(since));
    assert_eq!(seqs(&after), seqs(&all[n - 24..]));
    assert_eq!(skipped, Some(0));
    // Both: the last 5 of those.
    let (both, skipped) = logs(&d, chatty.pid, Some(5), Some(since));
    assert_eq!(seqs(&both), seqs(&all[n - 5..]));
    assert_eq!(skipped, Some(19));

    // Default: the last 1000, and how many were skipped.
    let (page, skipped) = logs(&d, chatty.pid, None, None);
    assert_eq!(page.len(), DEFAULT_PAGE);
    assert_eq!(seqs(&page), seqs(&all[n - DEFAULT_PAGE..]));
    assert_eq!(skipped, Some((n - DEFAULT_PAGE) as u64));

    // The CLI: the same pages, and the default one says what it left out.
    let pid = chatty.pid.to_string();
    let (code, out, err) = cli(&d, &["--json", "logs", "--tail", "10", &pid]);
    assert_eq!(code, 0, "{err}");
    // One JSON event per line.
    let listed: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(seqs(&listed), seqs(&all[n - 10..]));
    let (code, out, err) = cli(&d, &["logs", "--since", &since.to_string(), &pid]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 24, "{out}");
    assert!(out.contains(&format!(" {LINES}\n")), "{out}");
    let (code, out, err) = cli(&d, &["logs", &pid]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), DEFAULT_PAGE);
    assert!(
        err.contains(&format!("{} earlier events skipped", n - DEFAULT_PAGE)),
        "{err}"
    );
    let (_, help, _) = cli(&d, &["logs", "--help"]);
    assert!(help.contains("last 1000"), "{help}");

    // The inbox: 30 messages; --tail 5 and --since.
    let sink = d.spawn(SpawnRequest {
        name: "sink".into(),
        program: "/usr/bin/sleep".into(),
        args: vec!["300".into()],
        ..Default::default()
    });
    let mut sent = Vec::new();
    for i in 0..30 {
        let v = d
            .call(AdminRequest::Send {
                pid: sink.pid,
                body: format!("m{i}"),
            })
            .expect("send");
        sent.push(v["seq"].as_u64().expect("seq"));
    }
    let mut c = Client::connect(&d.socket).expect("connect");
    let (v, skipped) = c
        .call_paged(&AdminRequest::Inbox {
            pid: sink.pid,
            tail: Some(5),
            since: None,
        })
        .expect("inbox");
    let bodies: Vec<&str> = v
        .as_array()
        .expect("list")
        .iter()
        .map(|m| m["body"].as_str().expect("body"))
        .collect();
    assert_eq!(bodies, ["m25", "m26", "m27", "m28", "m29"]);
    assert_eq!(skipped, Some(25));
    let (v, skipped) = c
        .call_paged(&AdminRequest::Inbox {
            pid: sink.pid,
            tail: None,
            since: Some(sent[27]),
        })
        .expect("inbox");
    let got: Vec<u64> = v
        .as_array()
        .expect("list")
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(got, sent[28..]);
    assert_eq!(skipped, Some(0));
    let (code, out, err) = cli(&d, &["inbox", "--tail", "2", &sink.pid.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(err.contains("28 earlier messages skipped"), "{err}");

    // The audit trail (the 30 sends are admin actions): --tail 3 and
    // --since-seq.
    let (v, skipped) = c
        .call_paged(&AdminRequest::Audit {
            pid: Some(sink.pid),
            since_ms: None,
            tail: Some(3),
            since_seq: None,
        })
        .expect("audit");
    let entries = v.as_array().expect("list").clone();
    assert_eq!(entries.len(), 3, "{v}");
    assert!(entries.iter().all(|e| e["op"] == "send"), "{v}");
    assert!(skipped.is_some_and(|s| s >= 27), "{skipped:?}");
    let first = entries[0]["seq"].as_u64().expect("audit seq");
    let (v, _) = c
        .call_paged(&AdminRequest::Audit {
            pid: Some(sink.pid),
            since_ms: None,
            tail: None,
            since_seq: Some(first),
        })
        .expect("audit");
    assert_eq!(v.as_array().expect("list").len(), 2, "{v}");

    // A well-behaved agent still answers.
    let pcb = d.spawn(python_agent(
        "neighbour",
        "hostile_admin.py",
        &["neighbour"],
        None,
    ));
    let rep = d.finish(pcb.pid, Duration::from_secs(120));
    assert_eq!(rep["answered"].as_u64(), Some(20), "{rep}");
}
