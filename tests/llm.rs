//! Agents that think: the built-in runtime inside a real sandbox, LLM_INFER
//! through the daemon to a real HTTP server on 127.0.0.1 speaking each wire
//! format, the scheduler's fairness and budgets, context compaction, and a
//! multi-agent team on the scripted provider.

mod common;
#[path = "common/mock_llm.rs"]
mod mock_llm;

use agentos::admin::protocol::{AdminRequest, SpawnRequest};
use agentos::kernel::pcb::{LimitsPatch, Pcb};
use agentos::llm::config::ProviderKind;
use common::{Daemon, repo, require_root};
use mock_llm::{MockLlm, usage};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const KEY: &str = "sk-test-7f3a9c1e-DO-NOT-LEAK";

fn kind_name(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Openai => "openai",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Gemini => "gemini",
        ProviderKind::Scripted => "scripted",
    }
}

/// A daemon whose configuration has one provider of `kind` at the mock and
/// one model `m` (plus any extra TOML). The key is in a root-only file.
fn daemon_for(
    mock: &MockLlm,
    kind: ProviderKind,
    tool_calls: bool,
    extra: &str,
) -> (Daemon, PathBuf) {
    daemon_with_slots(mock, kind, tool_calls, extra, 4)
}

fn daemon_with_slots(
    mock: &MockLlm,
    kind: ProviderKind,
    tool_calls: bool,
    extra: &str,
    slots: usize,
) -> (Daemon, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "agentos-llm-cfg-{}-{}",
        std::process::id(),
        rand_tag()
    ));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let key_file = dir.join("api-key");
    std::fs::write(&key_file, format!("{KEY}\n")).expect("key");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let config = format!(
        r#"
[scheduler]
max_concurrency = {slots}
inference_timeout_s = 60

[[providers]]
name = "mock"
kind = "{}"
base_url = "{}"
api_key_file = "{}"
max_retries = 4
max_concurrency = {slots}

[[models]]
name = "m"
provider = "mock"
model = "mock-model-1"
tool_calls = {tool_calls}
{extra}
"#,
        kind_name(kind),
        mock.base_url(kind),
        key_file.display()
    );
    let path = dir.join("agentosd.toml");
    std::fs::write(&path, config).expect("config");
    (
        Daemon::start_with(&["--config", &path.display().to_string()]),
        dir,
    )
}

fn rand_tag() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn llm_agent(
    d: &Daemon,
    name: &str,
    role: &str,
    permissions: &[&str],
    limits: Option<LimitsPatch>,
) -> Pcb {
    d.spawn(SpawnRequest {
        name: name.into(),
        role: Some(role.into()),
        model: Some("m".into()),
        permissions: Some(permissions.iter().map(|s| s.to_string()).collect()),
        limits,
        ..Default::default()
    })
}

fn write_and_exit_text() -> String {
    "I will write the file.\n[SYS_CALL::FS_WRITE] {\"path\": \"/hello.txt\", \"content\": \"hello from the model\"}\n[SYS_CALL::SYS_EXIT] {\"code\": 0}".into()
}

/// The key header each wire format must carry.
fn key_header(kind: ProviderKind) -> (&'static str, String) {
    match kind {
        ProviderKind::Openai => ("authorization", format!("Bearer {KEY}")),
        ProviderKind::Anthropic => ("x-api-key", KEY.into()),
        ProviderKind::Gemini => ("x-goog-api-key", KEY.into()),
        ProviderKind::Scripted => ("", String::new()),
    }
}

fn run_write_and_exit(kind: ProviderKind, tool_form: bool) {
    let mock = MockLlm::start();
    if tool_form {
        mock.push_tool_call(
            "FS_WRITE",
            json!({"path": "/hello.txt", "content": "hello from the model"}),
            usage(50, 10),
        );
        mock.push_tool_call("SYS_EXIT", json!({"code": 0}), usage(60, 5));
    } else {
        mock.push_text(write_and_exit_text(), usage(50, 20));
    }
    let (d, cfg) = daemon_for(&mock, kind, tool_form, "");
    let a = llm_agent(
        &d,
        "writer",
        "Write /hello.txt and exit.",
        &["FS_WRITE", "inference"],
        None,
    );
    let exit = d.wait(a.pid, Duration::from_secs(60));
    assert_eq!(
        exit.code,
        0,
        "{kind:?} tool_form={tool_form}: {exit:?}\n{}",
        d.logs(a.pid)
    );
    let written =
        std::fs::read_to_string(d.workspace(a.pid).join("hello.txt")).expect("file written");
    assert_eq!(written, "hello from the model");

    let requests = mock.requests();
    assert!(!requests.is_empty());
    let (header, value) = key_header(kind);
    for r in &requests {
        assert_eq!(
            r.header(header),
            Some(value.as_str()),
            "{kind:?}: key header missing in {:?}",
            r.headers
        );
        if tool_form {
            let body = r.body.to_string();
            assert!(body.contains("FS_WRITE"), "tools not offered: {body}");
        }
    }
    let pcb = d.inspect(a.pid);
    assert!(
        pcb.counters.tokens_in >= 50 && pcb.counters.llm_calls >= 1,
        "{:?}",
        pcb.counters
    );
    let _ = std::fs::remove_dir_all(cfg);
}

#[test]
fn openai_text_and_tool_calls() {
    if !require_root("openai_text_and_tool_calls") {
        return;
    }
    run_write_and_exit(ProviderKind::Openai, false);
    run_write_and_exit(ProviderKind::Openai, true);
}

#[test]
fn anthropic_text_and_tool_calls() {
    if !require_root("anthropic_text_and_tool_calls") {
        return;
    }
    run_write_and_exit(ProviderKind::Anthropic, false);
    run_write_and_exit(ProviderKind::Anthropic, true);
}

#[test]
fn gemini_text_and_tool_calls() {
    if !require_root("gemini_text_and_tool_calls") {
        return;
    }
    run_write_and_exit(ProviderKind::Gemini, false);
    run_write_and_exit(ProviderKind::Gemini, true);
}

#[test]
fn the_api_key_never_reaches_the_agent() {
    if !require_root("the_api_key_never_reaches_the_agent") {
        return;
    }
    let mock = MockLlm::start();
    mock.set_latency(Duration::from_millis(1500));
    mock.push_text(
        "[SYS_CALL::FS_WRITE] {\"path\": \"/env.txt\", \"content\": \"checked\"}",
        usage(10, 10),
    );
    mock.push_text("[SYS_CALL::SYS_EXIT] {\"code\": 0}", usage(10, 10));
    let (d, cfg) = daemon_for(&mock, ProviderKind::Openai, false, "");
    let a = llm_agent(&d, "curious", "Exit.", &["fs", "inference"], None);
    // While the agent waits for its first reply, look at its process.
    let host_pid =
        common::eventually(Duration::from_secs(10), || d.inspect(a.pid).host_pid).expect("running");
    let environ = std::fs::read(format!("/proc/{host_pid}/environ")).expect("environ");
    let cmdline = std::fs::read(format!("/proc/{host_pid}/cmdline")).expect("cmdline");
    let exit = d.wait(a.pid, Duration::from_secs(60));
    assert_eq!(exit.code, 0, "{exit:?}\n{}", d.logs(a.pid));
    // The key did reach the server...
    assert!(
        mock.requests()
            .iter()
            .any(|r| r.header("authorization") == Some(&format!("Bearer {KEY}")))
    );
    // ...and nothing the agent can see or that is logged about it.
    let needle = KEY.as_bytes();
    let contains = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(&environ), "key in the agent's environment");
    assert!(!contains(&cmdline), "key in the agent's command line");
    for entry in walk(&d.workspace(a.pid)) {
        let data = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !contains(&data),
            "key in workspace file {}",
            entry.display()
        );
    }
    assert!(
        !d.logs(a.pid).contains(KEY),
        "key in the agent's log or journal"
    );
    assert!(!d.log().contains(KEY), "key in the daemon's log");
    let inspect = d
        .call(AdminRequest::Inspect { pid: a.pid })
        .expect("inspect")
        .to_string();
    assert!(!inspect.contains(KEY));
    let _ = std::fs::remove_dir_all(cfg);
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn an_invalid_reply_gets_a_correction_and_the_next_one_works() {
    if !require_root("an_invalid_reply_gets_a_correction_and_the_next_one_works") {
        return;
    }
    let mock = MockLlm::start();
    mock.push_text(
        "[SYS_CALL::FS_WRITE] {\"path\": \"/hello.txt\", \"content\": ",
        usage(10, 10),
    );
    mock.push_text(write_and_exit_text(), usage(10, 10));
    let (d, cfg) = daemon_for(&mock, ProviderKind::Openai, false, "");
    let a = llm_agent(
        &d,
        "fixer",
        "Write /hello.txt.",
        &["FS_WRITE", "inference"],
        None,
    );
    let exit = d.wait(a.pid, Duration::from_secs(60));
    assert_eq!(exit.code, 0, "{exit:?}\n{}", d.logs(a.pid));
    assert!(d.workspace(a.pid).join("hello.txt").exists());
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    let second = requests[1].body.to_string();
    assert!(
        second.contains("could not be executed"),
        "no corrective message sent: {second}"
    );
    let _ = std::fs::remove_dir_all(cfg);
}

#[test]
fn repeated_invalid_replies_end_the_agent_with_a_reason() {
    if !require_root("repeated_invalid_replies_end_the_agent_with_a_reason") {
        return;
    }
    let mock = MockLlm::start();
    mock.set_default_text("I am not sure what to do.", usage(10, 10));
    let (d, cfg) = daemon_for(&mock, ProviderKind::Openai, false, "");
    let a = llm_agent(&d, "lost", "Do something.", &["inference"], None);
    let exit = d.wait(a.pid, Duration::from_secs(60));
    assert_eq!(exit.code, 5, "{exit:?}");
    assert!(exit.reason.contains("invalid replies"), "{exit:?}");
    assert_eq!(mock.request_count(), 3);
    let _ = std::fs::remove_dir_all(cfg);
}

#[test]
fn rate_limits_and_server_errors_are_retried_but_a_bad_key_is_not() {
    if !require_root("rate_limits_and_server_errors_are_retried_but_a_bad_key_is_not") {
        return;
    }
    let mock = MockLlm::start();
    mock.push_failure(429, Some(1), "{\"error\": \"slow down\"}");
    mock.push_failure(500, None, "{\"error\": \"oops\"}");
    mock.push_failure(503, None, "{\"error\": \"busy\"}");
    mock.push_text(write_and_exit_text(), usage(10, 10));
    let (d, cfg) = daemon_for(&mock, ProviderKind::Openai, false, "");
    let started = Instant::now();
    let a = llm_agent(
        &d,
        "patient",
        "Write /hello.txt.",
        &["FS_WRITE", "inference"],
        None,
    );
    let exit = d.wait(a.pid, Duration::from_secs(60));
    assert_eq!(exit.code, 0, "{exit:?}\n{}", d.logs(a.pid));
    let requests = mock.requests();
    assert_eq!(requests.len(), 4, "429, 500, 503, then success");
    let gap = requests[1].at.duration_since(requests[0].at);
    assert!(
        gap >= Duration::from_millis(950),
        "Retry-After: 1 not honoured ({gap:?})"
    );
    assert!(started.elapsed() < Duration::from_secs(30));

    // A 401 is permanent: one request, and the agent ends saying why.
    mock.clear_requests();
    mock.push_failure(
        401,
        None,
        "{\"error\": {\"message\": \"Incorrect API key provided\"}}",
    );
    let b = llm_agent(
        &d,
        "rejected",
        "Write /hello.txt.",
        &["FS_WRITE", "inference"],
        None,
    );
    let exit = d.wait(b.pid, Duration::from_secs(60));
    assert_eq!(exit.code, 4, "{exit:?}");
    assert!(
        exit.reason.contains("401") || exit.reason.contains("credentials"),
        "{exit:?}"
    );
    assert_eq!(mock.request_count(), 1, "a 401 must not be retried");
    let _ = std::fs::remove_dir_all(cfg);
}

/// A Python agent that calls LLM_INFER in a loop until killed.
fn looper(d: &Daemon, name: &str, priority: u32) -> Pcb {
    d.spawn(SpawnRequest {
        model: Some("m".into()),
        priority: Some(priority),
        ..common::python_agent(name, "infer_loop.py", &[], Some(&["inference"]))
    })
}

fn tokens(d: &Daemon, pid: u64) -> u64 {
    let c = d.inspect(pid).counters;
    c.tokens_in + c.tokens_out
}

/// Token deltas of `pids` over `window`, measured after all have started.
fn shares(d: &Daemon, pids: &[u64], window: Duration) -> Vec<u64> {
    std::thread::sleep(Duration::from_millis(500));
    let before: Vec<u64> = pids.iter().map(|p| tokens(d, *p)).collect();
    std::thread::sleep(window);
    let after: Vec<u64> = pids.iter().map(|p| tokens(d, *p)).collect();
    after.iter().zip(&before).map(|(a, b)| a - b).collect()
}

#[test]
fn one_slot_is_shared_fairly_and_by_weight() {
    if !require_root("one_slot_is_shared_fairly_and_by_weight") {
        return;
    }
    let mock = MockLlm::start();
    mock.set_latency(Duration::from_millis(10));
    mock.set_default_text("ok", usage(20, 80));
    // One slot for everyone.
    let (d, cfg) = daemon_with_slots(&mock, ProviderKind::Openai, false, "", 1);

    let pids: Vec<u64> = (0..10)
        .map(|i| looper(&d, &format!("eq{i}"), 1).pid)
        .collect();
    let got = shares(&d, &pids, Duration::from_secs(5));
    let total: u64 = got.iter().sum();
    assert!(total > 0, "no inference happened:\n{}", d.logs(pids[0]));
    let mean = total as f64 / got.len() as f64;
    for (pid, g) in pids.iter().zip(&got) {
        let dev = (*g as f64 - mean).abs() / mean;
        assert!(
            dev <= 0.10,
            "agent {pid} got {g} tokens, mean {mean:.0} (±{:.0}%): {got:?}",
            dev * 100.0
        );
    }
    assert!(mock.max_in_flight() <= 1, "the slot was exceeded");
    for p in &pids {
        d.call(AdminRequest::Kill { pid: *p }).expect("kill");
    }

    let heavy = looper(&d, "heavy", 2).pid;
    let light = looper(&d, "light", 1).pid;
    let got = shares(&d, &[heavy, light], Duration::from_secs(5));
    let ratio = got[0] as f64 / got[1].max(1) as f64;
    assert!(
        (1.7..=2.3).contains(&ratio),
        "weights 2:1 gave {got:?} (ratio {ratio:.2})"
    );
    let _ = std::fs::remove_dir_all(cfg);
}

#[test]
fn a_token_budget_stops_the_agent_at_the_budget() {
    if !require_root("a_token_budget_stops_the_agent_at_the_budget") {
        return;
    }
    let mock = MockLlm::start();
    mock.set_default_text("[SYS_CALL::GETPID] {}", usage(100, 20));
    let (d, cfg) = daemon_for(&mock, ProviderKind::Openai, false, "max_tokens = 64");
    let limits = LimitsPatch {
        budget_tokens: Some(3000),
        ..Default::default()
    };
    let a = llm_agent(
        &d,
        "spender",
        "Keep asking who you are.",
        &["inference"],
        Some(limits),
    );
    let exit = d.wait(a.pid, Duration::from_secs(60));
    assert_eq!(exit.code, 3, "{exit:?}\n{}", d.logs(a.pid));
    assert!(exit.reason.contains("budget"), "{exit:?}");
    let c = d.inspect(a.pid).counters;
    assert!(
        c.tokens_in + c.tokens_out <= 3000,
        "spent {} of 3000",
        c.tokens_in + c.tokens_out
    );
    assert!(c.llm_calls >= 2, "{c:?}");
    let _ = std::fs::remove_dir_all(cfg);
}

/// A child's token budget is carved out of its parent's remaining budget:
/// more than is left is refused, a child that names none gets half of what
/// is left, and what a child did not spend returns when it ends. The tree
/// never spends more than the root's budget.
#[test]
fn a_child_budget_is_carved_from_the_parent_and_returns() {
    if !require_root("a_child_budget_is_carved_from_the_parent_and_returns") {
        return;
    }
    let mock = MockLlm::start();
    mock.set_default_text("[SYS_CALL::GETPID] {}", usage(100, 20));
    let (d, cfg) = daemon_for(&mock, ProviderKind::Openai, false, "max_tokens = 64");
    let mut req = common::python_agent(
        "lender",
        "budget_tree.py",
        &["parent"],
        Some(&["process", "inference", "time", "fs"]),
    );
    req.models = vec!["m".into()];
    req.limits = Some(LimitsPatch {
        budget_tokens: Some(6000),
        ..Default::default()
    });
    let parent = d.spawn(req).pid;
    let exit = d.wait(parent, Duration::from_secs(120));
    assert_eq!(exit.code, 0, "{exit:?}\n{}", d.logs(parent));
    let r = d.report(parent);
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));

    let spender = d.inspect(n("spender"));
    let spent = spender.counters.tokens_own();
    assert_eq!(spender.limits.budget_tokens, 2000);
    assert!(
        spent > 0 && spent <= 2000,
        "the child spent {spent} of its 2000"
    );
    assert!(
        spender
            .exit
            .as_ref()
            .is_some_and(|e| e.reason.contains("budget")),
        "{:?}",
        spender.exit
    );
    assert_eq!(n("start"), 6000, "{r}");
    assert_eq!(r["too_big"][0], "EQUOTA", "{r}");
    assert!(
        r["too_big"][1]
            .as_str()
            .is_some_and(|m| m.contains("budget")),
        "{r}"
    );
    assert_eq!(
        n("after_spender"),
        6000 - spent,
        "only what it spent is gone: {r}"
    );

    let left = 6000 - spent;
    let half = d.inspect(n("half"));
    assert_eq!(half.limits.budget_tokens, left.div_ceil(2), "{r}");
    assert_eq!(n("beside_half"), left - left.div_ceil(2), "{r}");
    assert_eq!(r["too_much"][0], "EQUOTA", "{r}");
    let all_of_it = d.inspect(n("all_of_it"));
    assert_eq!(all_of_it.limits.budget_tokens, n("beside_half"), "{r}");
    assert_eq!(n("while_lent"), 0, "{r}");
    assert_eq!(r["infer_while_lent"][0], "EQUOTA", "{r}");
    assert_eq!(n("after_kill"), left, "unspent tokens return: {r}");

    assert_eq!(r["infer"][0], "SUCCESS", "{r}");
    let p = d.inspect(parent);
    assert_eq!(p.counters.tokens_lent, 0);
    assert_eq!(p.counters.tokens_children, spent);
    assert_eq!(n("end"), 6000 - spent - p.counters.tokens_own(), "{r}");
    let tree_total = p.counters.tokens_own()
        + spent
        + half.counters.tokens_own()
        + all_of_it.counters.tokens_own();
    assert!(tree_total <= 6000, "the tree spent {tree_total} of 6000");
    let _ = std::fs::remove_dir_all(cfg);
}

#[test]
fn a_context_that_outgrows_the_window_is_compacted() {
    if !require_root("a_context_that_outgrows_the_window_is_compacted") {
        return;
    }
    let mock = MockLlm::start();
    for _ in 0..40 {
        mock.push_text("Checking again.\n[SYS_CALL::GETPID] {}", usage(10, 10));
    }
    mock.push_text("[SYS_CALL::SYS_EXIT] {\"code\": 0}", usage(10, 10));
    let (d, cfg) = daemon_for(
        &mock,
        ProviderKind::Openai,
        false,
        "context_tokens = 1024\nmax_tokens = 64",
    );
    let a = llm_agent(
        &d,
        "chatty",
        "Ask for your pid forty times, then exit.",
        &[],
        None,
    );
    let exit = d.wait(a.pid, Duration::from_secs(60));
    assert_eq!(exit.code, 0, "{exit:?}\n{}", d.logs(a.pid));
    assert!(d.logs(a.pid).contains("context compacted"));
    let requests = mock.requests();
    assert_eq!(requests.len(), 41);
    let sizes: Vec<usize> = requests
        .iter()
        .map(|r| r.body["messages"].as_array().map(|m| m.len()).unwrap_or(0))
        .collect();
    let last = requests
        .last()
        .map(|r| r.body.to_string())
        .unwrap_or_default();
    assert!(
        last.contains("Context compacted"),
        "no compaction notice in the last request"
    );
    assert!(
        sizes[40] < sizes[20] + 20,
        "the context kept growing: {sizes:?}"
    );
    let _ = std::fs::remove_dir_all(cfg);
}

#[test]
fn a_team_spawns_messages_pipes_and_reports() {
    if !require_root("a_team_spawns_messages_pipes_and_reports") {
        return;
    }
    let dir = std::env::temp_dir().join(format!(
        "agentos-team-{}-{}",
        std::process::id(),
        rand_tag()
    ));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let config = format!(
        "[scheduler]\ndefault_model = \"scripted\"\n\n[[providers]]\nname = \"script\"\nkind = \"scripted\"\nscript = \"{}\"\n\n[[models]]\nname = \"scripted\"\nprovider = \"script\"\n",
        repo().join("examples/scripts/team.json").display()
    );
    std::fs::write(dir.join("agentosd.toml"), config).expect("config");
    let d = Daemon::start_with(&["--config", &dir.join("agentosd.toml").display().to_string()]);
    let lead = d.spawn(SpawnRequest {
        name: "lead".into(),
        role: Some("Lead a team of two agents.".into()),
        ..Default::default()
    });
    assert_eq!(lead.pid, 1, "the script expects a fresh daemon");
    let exit = d.wait(lead.pid, Duration::from_secs(60));
    assert_eq!(exit.code, 0, "{exit:?}\n{}", d.logs(lead.pid));

    let (writer, researcher) = (d.inspect(2), d.inspect(3));
    assert_eq!(
        (writer.name.as_str(), researcher.name.as_str()),
        ("writer", "researcher")
    );
    for child in [&writer, &researcher] {
        assert_eq!(child.ppid, 1);
        assert!(
            child.permissions.is_subset(&lead.permissions),
            "{:?}",
            child.permissions
        );
        assert!(child.permissions.len() < lead.permissions.len());
        assert_eq!(
            child.exit.as_ref().map(|e| e.code),
            Some(0),
            "{}",
            d.logs(child.pid)
        );
    }
    assert_eq!(researcher.pipe_to, Some(2));
    // The pipe carried the researcher's output into the writer's stdin.
    let wlog = d.logs(2);
    assert!(
        wlog.contains("SYS_READ_STDIN") && wlog.contains("mount namespace"),
        "{wlog}"
    );
    // Both children reported back by message.
    let llog = d.logs(1);
    assert!(
        llog.contains("writer: /report.md written") && llog.contains("researcher: three facts"),
        "{llog}"
    );
    assert!(d.workspace(2).join("report.md").exists());
    let summary = std::fs::read_to_string(d.workspace(1).join("summary.md")).expect("summary");
    assert!(summary.contains("Team summary"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn top_shows_agents_and_the_scheduler() {
    if !require_root("top_shows_agents_and_the_scheduler") {
        return;
    }
    let mock = MockLlm::start();
    mock.set_latency(Duration::from_millis(20));
    mock.set_default_text("ok", usage(5, 5));
    let (d, cfg) = daemon_for(&mock, ProviderKind::Openai, false, "");
    let a = looper(&d, "busy", 1);
    std::thread::sleep(Duration::from_millis(800));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentos"))
        .args([
            "--socket",
            &d.socket.display().to_string(),
            "--json",
            "top",
            "--once",
        ])
        .output()
        .expect("top");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["scheduler"]["providers"][0]["name"], "mock");
    assert!(
        v["scheduler"]["providers"][0]["requests"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{v}"
    );
    let agent = &v["agents"][0];
    assert_eq!(agent["pid"], a.pid);
    assert!(
        agent["counters"]["llm_calls"].as_u64().unwrap_or(0) > 0,
        "{v}"
    );
    let table = std::process::Command::new(env!("CARGO_BIN_EXE_agentos"))
        .args(["--socket", &d.socket.display().to_string(), "top", "--once"])
        .output()
        .expect("top");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("TOK IN") && text.contains("busy"), "{text}");
    let _ = std::fs::remove_dir_all(cfg);
}

#[test]
fn constrained_decoding_sends_the_grammar_or_schema() {
    if !require_root("constrained_decoding_sends_the_grammar_or_schema") {
        return;
    }
    for (mode, field) in [("grammar", "grammar"), ("json_schema", "response_format")] {
        let mock = MockLlm::start();
        mock.push_text(write_and_exit_text(), usage(10, 10));
        let (d, cfg) = daemon_for(
            &mock,
            ProviderKind::Openai,
            false,
            &format!("constrain = \"{mode}\""),
        );
        let a = llm_agent(&d, "constrained", "Write /hello.txt.", &["FS_WRITE"], None);
        let exit = d.wait(a.pid, Duration::from_secs(60));
        assert_eq!(exit.code, 0, "{mode}: {exit:?}\n{}", d.logs(a.pid));
        let body = &mock.requests()[0].body;
        let constraint = body[field].to_string();
        assert!(
            constraint.contains("FS_WRITE"),
            "{mode}: {field} does not name the permitted calls: {body}"
        );
        assert!(
            !constraint.contains("SEND_MSG"),
            "{mode}: {field} offers a call the agent lacks"
        );
        let _ = std::fs::remove_dir_all(cfg);
    }
}

#[test]
fn an_llm_agent_resumes_from_its_journal_after_a_crash() {
    if !require_root("an_llm_agent_resumes_from_its_journal_after_a_crash") {
        return;
    }
    let mock = MockLlm::start();
    // One reply: append to a file, then sleep — the daemon dies meanwhile.
    mock.push_text(
        "[SYS_CALL::FS_WRITE] {\"path\": \"/count.txt\", \"content\": \"x\", \"append\": true}\n[SYS_CALL::SLEEP] {\"ms\": 20000}",
        usage(10, 10),
    );
    let (mut d, cfg) = daemon_for(&mock, ProviderKind::Openai, false, "");
    let a = llm_agent(
        &d,
        "resumer",
        "Count once, then exit.",
        &["fs", "time"],
        None,
    );
    common::eventually(Duration::from_secs(20), || {
        (d.inspect(a.pid).state == agentos::kernel::pcb::State::Sleeping).then_some(())
    })
    .expect("the agent reaches its SLEEP");
    d.crash();
    mock.push_text("[SYS_CALL::SYS_EXIT] {\"code\": 0}", usage(10, 10));
    d.launch();
    let exit = d.wait(a.pid, Duration::from_secs(60));
    assert_eq!(exit.code, 0, "{exit:?}\n{}", d.logs(a.pid));
    // Nothing ran twice, and the model was not asked again for its first reply.
    let count = std::fs::read_to_string(d.workspace(a.pid).join("count.txt")).expect("count");
    assert_eq!(count, "x", "FS_WRITE was executed again after the restart");
    let requests = mock.requests();
    assert_eq!(
        requests.len(),
        2,
        "the model was asked again for a reply it had given"
    );
    let resumed = requests[1].body.to_string();
    assert!(
        resumed.contains("count.txt"),
        "the first reply is missing from the rebuilt context"
    );
    assert!(
        resumed.contains("EINTR"),
        "the interrupted SLEEP was not answered EINTR: {resumed}"
    );
    assert_eq!(d.inspect(a.pid).recoveries, 1);
    assert!(d.logs(a.pid).contains("resumed after a supervisor restart"));
    let _ = std::fs::remove_dir_all(cfg);
}
