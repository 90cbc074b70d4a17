//! The built-in runtime's loop control and exit codes through a real
//! daemon, with replies from the mock provider: a reply stops at its first
//! failed call (a SYS_EXIT after it is not run), unknown argument fields
//! are dropped and named, the same call repeated ends the agent (exit 7),
//! the turn limit ends it (exit 6), and the daemon sends the model's
//! sampling settings.

mod common;
#[path = "common/mock_llm.rs"]
mod mock_llm;

use agentos::admin::protocol::SpawnRequest;
use agentos::kernel::pcb::LimitsPatch;
use agentos::llm::config::ProviderKind;
use common::{Daemon, require_root};
use mock_llm::{MockLlm, usage};
use std::path::PathBuf;
use std::time::Duration;

fn daemon(mock: &MockLlm, extra: &str) -> (Daemon, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "agentos-loop-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let config = format!(
        "[[providers]]\nname = \"mock\"\nkind = \"openai\"\nbase_url = \"{}\"\n\n[[models]]\nname = \"m\"\nprovider = \"mock\"\n{extra}\n",
        mock.base_url(ProviderKind::Openai)
    );
    let path = dir.join("agentosd.toml");
    std::fs::write(&path, config).expect("config");
    (
        Daemon::start_with(&["--config", &path.display().to_string()]),
        dir,
    )
}

fn agent(d: &Daemon, role: &str, limits: Option<LimitsPatch>) -> u64 {
    d.spawn(SpawnRequest {
        name: "looper".into(),
        role: Some(role.into()),
        model: Some("m".into()),
        permissions: Some(vec!["fs".into()]),
        limits,
        ..Default::default()
    })
    .pid
}

#[test]
fn a_failed_call_stops_the_reply_and_its_exit() {
    if !require_root("a_failed_call_stops_the_reply_and_its_exit") {
        return;
    }
    let mock = MockLlm::start();
    // The whole plan at once, with a read that fails: the exit must not run.
    mock.push_text(
        "[SYS_CALL::FS_READ] {\"path\": \"/missing.txt\"}\n[SYS_CALL::SYS_EXIT] {\"code\": 0}",
        usage(10, 10),
    );
    // Unknown fields are dropped and named; then a truthful exit.
    mock.push_text(
        "[SYS_CALL::FS_WRITE] {\"path\": \"/a.txt\", \"content\": \"x\", \"max_bytes\": 16}",
        usage(10, 10),
    );
    mock.push_text("[SYS_CALL::SYS_EXIT] {\"code\": 1}", usage(10, 10));
    let (d, dir) = daemon(&mock, "");
    let pid = agent(&d, "Read /missing.txt.", None);
    let exit = d.wait(pid, Duration::from_secs(60));
    assert_eq!(exit.code, 1, "{exit:?}\n{}", d.logs(pid));
    let requests = mock.requests();
    assert_eq!(requests.len(), 3);
    let second = requests[1].body.to_string();
    assert!(second.contains("ENOENT"), "{second}");
    assert!(second.contains("Not run: SYS_EXIT"), "{second}");
    let third = requests[2].body.to_string();
    assert!(third.contains(r#"\"ignored\": [\"max_bytes\"]"#), "{third}");
    assert_eq!(
        std::fs::read_to_string(d.workspace(pid).join("a.txt"))
            .ok()
            .as_deref(),
        Some("x")
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_same_call_three_times_ends_the_agent() {
    if !require_root("the_same_call_three_times_ends_the_agent") {
        return;
    }
    let mock = MockLlm::start();
    mock.set_default_text("[SYS_CALL::FS_LIST] {\"path\": \"/\"}", usage(10, 10));
    let (d, dir) = daemon(&mock, "");
    let pid = agent(&d, "List your files.", None);
    let exit = d.wait(pid, Duration::from_secs(60));
    assert_eq!(exit.code, 7, "{exit:?}\n{}", d.logs(pid));
    assert!(exit.reason.contains("same call"), "{exit:?}");
    assert_eq!(mock.request_count(), 3);
    let second = mock.requests()[2].body.to_string();
    assert!(second.contains("You already made this call"), "{second}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_turn_limit_ends_the_agent_with_its_own_code() {
    if !require_root("the_turn_limit_ends_the_agent_with_its_own_code") {
        return;
    }
    let mock = MockLlm::start();
    mock.set_default_text("Let me think about it.", usage(10, 10));
    for i in 0..3 {
        mock.push_text(
            format!("[SYS_CALL::FS_WRITE] {{\"path\": \"/{i}.txt\", \"content\": \"x\"}}"),
            usage(10, 10),
        );
    }
    let (d, dir) = daemon(
        &mock,
        "max_turns = 3\ntemperature = 0.0\nseed = 42\nstop = [\"END\"]",
    );
    let pid = agent(&d, "Write files.", None);
    let exit = d.wait(pid, Duration::from_secs(60));
    assert_eq!(exit.code, 6, "{exit:?}\n{}", d.logs(pid));
    assert!(exit.reason.contains("turn limit"), "{exit:?}");
    let requests = mock.requests();
    assert_eq!(requests.len(), 3);
    // The model's sampling settings travel with every request.
    for r in &requests {
        assert_eq!(r.body["temperature"], 0.0, "{}", r.body);
        assert_eq!(r.body["seed"], 42, "{}", r.body);
        assert_eq!(r.body["stop"], serde_json::json!(["END"]), "{}", r.body);
    }
    // A lower limit for one agent (`agentos spawn --max-turns`).
    mock.clear_requests();
    for i in 0..3 {
        mock.push_text(
            format!("[SYS_CALL::FS_WRITE] {{\"path\": \"/{i}.txt\", \"content\": \"y\"}}"),
            usage(10, 10),
        );
    }
    let limits = LimitsPatch {
        max_turns: Some(2),
        ..Default::default()
    };
    let pid = agent(&d, "Write files.", Some(limits));
    let exit = d.wait(pid, Duration::from_secs(60));
    assert_eq!(exit.code, 6, "{exit:?}\n{}", d.logs(pid));
    assert_eq!(mock.request_count(), 2);
    let _ = std::fs::remove_dir_all(dir);
}
