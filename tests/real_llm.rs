//! A real model: Qwen2.5-Coder-0.5B-Instruct served by llama.cpp's
//! llama-server (`shared/realllm`, built by `.ci/run` with `setup.sh`),
//! started by each test on a free 127.0.0.1 port and asked at temperature
//! 0 with a fixed seed, so every run gives the same answers on the same
//! build. It checks the OpenAI-compatible wire with and without tools,
//! both constraint modes (a GBNF grammar, a JSON schema) with what the
//! runtime sends, and simple tasks end to end through a real daemon.
//!
//! Without the server (not built, or no `shared/realllm` beside the
//! repository) the tests are skipped with a loud message; under CI a skip
//! is a failure. One test at a time talks to a server (2 cores).

mod common;
#[path = "../examples/bench/llama.rs"]
mod llama;

use agentos::abi::calls::Call;
use agentos::abi::schema::constraint::{offer_grammar, offer_reply_schema, offer_tools};
use agentos::abi::schema::lenient;
use agentos::abi::schema::offer::{Facilities, Offer};
use agentos::admin::protocol::SpawnRequest;
use agentos::llm::{ChatMessage, Constraint, InferRequest, InferResponse, Role, ToolSpec};
use agentos::runtime::mode::Mode;
use agentos::runtime::prompt::system_prompt;
use agentos::runtime::text::{Syntax, parse_reply_as};
use common::{Daemon, require_root};
use llama::LlamaServer;
use std::sync::Mutex;
use std::time::Duration;

const SEED: u64 = 42;

/// One busy server at a time.
static SERVER: Mutex<()> = Mutex::new(());

/// Starts the server, or says why the test cannot run (a failure in CI).
fn server(test: &str) -> Option<(std::sync::MutexGuard<'static, ()>, LlamaServer)> {
    let guard = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    if llama::realllm_dir().is_none() || !llama::server_built() {
        let why = "no llama-server: run shared/realllm/setup.sh (CI does, from .ci/run)";
        if std::env::var_os("CI").is_some() {
            panic!("{test}: {why}");
        }
        eprintln!("\n!!!!! SKIPPED {test}: {why} !!!!!\n");
        return None;
    }
    match LlamaServer::start("qwen", &[], Duration::from_secs(180)) {
        Ok(s) => Some((guard, s)),
        Err(e) => panic!("{test}: {e}"),
    }
}

/// The request the daemon would send for an agent offered `calls` in
/// `mode`, with its system prompt and `task`.
fn request(calls: &[Call], mode: Mode, task: &str) -> InferRequest {
    let offer = Offer::new(calls, Facilities::default());
    let tools: Vec<ToolSpec> = mode.tools(&offer);
    InferRequest {
        model: "qwen".into(),
        messages: vec![
            ChatMessage::new(Role::System, system_prompt("t", 1, &offer, mode, 1)),
            ChatMessage::new(Role::User, task),
        ],
        tools,
        max_tokens: Some(200),
        temperature: Some(0.0),
        seed: Some(SEED),
        constraint: mode.constraint(&offer, 1),
        ..Default::default()
    }
}

/// One inference through the daemon's OpenAI-compatible provider code.
fn infer(s: &LlamaServer, req: &InferRequest) -> InferResponse {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let base = format!("{}/v1", s.url());
    rt.block_on(async {
        let client = agentos::llm::http::client_builder(Duration::from_secs(300))
            .build()
            .expect("client");
        let policy = agentos::llm::http::RetryPolicy::default();
        agentos::llm::openai::infer(&client, Some(&base), None, req, &policy)
            .await
            .unwrap_or_else(|e| panic!("inference failed: {e}\n{}", s.log_tail(20)))
    })
}

const TASK: &str = "Write the text hello into the file /hello.txt.";
const CALLS: &[Call] = &[Call::FS_WRITE, Call::FS_READ];

/// The first call of a reply, decoded as the runtime would.
fn first_call(text: &str, syntax: Syntax) -> (String, serde_json::Value) {
    let offer = Offer::new(CALLS, Facilities::default());
    let names = offer.names();
    let parsed = parse_reply_as(text, &names, syntax);
    let call = parsed
        .calls
        .first()
        .unwrap_or_else(|| panic!("no call in {text:?}: {:?}", parsed.problems));
    let c = Call::parse(&call.name).expect("a call of the ABI");
    let decoded =
        lenient::decode(&offer.schema(c), &call.args).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    (call.name.clone(), decoded.args)
}

#[test]
fn the_openai_wire_in_free_text_is_repeatable() {
    let Some((_g, s)) = server("the_openai_wire_in_free_text_is_repeatable") else {
        return;
    };
    let req = request(CALLS, Mode::Text, TASK);
    let a = infer(&s, &req);
    assert!(
        a.usage.prompt_tokens > 100 && a.usage.completion_tokens > 0,
        "{a:?}"
    );
    assert!(!a.content.is_empty(), "{a:?}");
    // Temperature 0 and a seed: the same answer again.
    let b = infer(&s, &req);
    assert_eq!(a.content, b.content);
}

#[test]
fn the_openai_wire_with_tools_gives_a_call() {
    let Some((_g, s)) = server("the_openai_wire_with_tools_gives_a_call") else {
        return;
    };
    let req = request(CALLS, Mode::Tools, TASK);
    assert!(!req.tools.is_empty());
    let offer = Offer::new(CALLS, Facilities::default());
    assert_eq!(req.tools.len(), offer_tools(&offer).len());
    let r = infer(&s, &req);
    // Native tool calls, or (what this model mostly does) their JSON in
    // the text: the runtime takes either.
    let (name, args) = match r.tool_calls.first() {
        Some(c) => (c.name.to_ascii_uppercase(), c.arguments.clone()),
        None => first_call(&r.content, Syntax::ToolCall),
    };
    assert_eq!(name, "FS_WRITE", "{r:?}");
    assert_eq!(args["path"], "/hello.txt", "{r:?}");
}

#[test]
fn a_grammar_constrains_the_reply_to_one_valid_call() {
    let Some((_g, s)) = server("a_grammar_constrains_the_reply_to_one_valid_call") else {
        return;
    };
    let req = request(CALLS, Mode::Grammar, TASK);
    let offer = Offer::new(CALLS, Facilities::default());
    assert_eq!(
        req.constraint,
        Some(Constraint::Grammar(offer_grammar(&offer, 1)))
    );
    let r = infer(&s, &req);
    assert!(r.content.starts_with("[SYS_CALL::"), "{r:?}");
    assert_eq!(r.content.lines().count(), 1, "{r:?}");
    let (name, args) = first_call(&r.content, Syntax::Text);
    assert_eq!(name, "FS_WRITE", "{r:?}");
    assert_eq!(args["path"], "/hello.txt");
    assert_eq!(args["content"], "hello");
}

#[test]
fn a_json_schema_constrains_the_reply_to_a_call_list() {
    let Some((_g, s)) = server("a_json_schema_constrains_the_reply_to_a_call_list") else {
        return;
    };
    let req = request(CALLS, Mode::JsonSchema, TASK);
    let offer = Offer::new(CALLS, Facilities::default());
    assert_eq!(
        req.constraint,
        Some(Constraint::JsonSchema(offer_reply_schema(&offer, 1)))
    );
    let r = infer(&s, &req);
    let v: serde_json::Value = serde_json::from_str(&r.content).expect("JSON");
    assert_eq!(v["calls"].as_array().map(Vec::len), Some(1), "{r:?}");
    let (name, args) = first_call(&r.content, Syntax::CallList);
    assert_eq!(name, "FS_WRITE", "{r:?}");
    assert_eq!(args["path"], "/hello.txt");
}

/// A daemon whose one model is the server in `mode`.
/// What docs/CONFIG.md recommends for a small local model: the grammar,
/// one call per reply, the worked example and the finishing check.
const SMALL_MODEL_SETTINGS: &str =
    "constrain = \"grammar\"\nworked_example = true\nconfirm_exit = true";

fn daemon(s: &LlamaServer, mode_line: &str) -> (Daemon, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("agentos-real-llm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let config = format!(
        r#"
[scheduler]
max_concurrency = 1
inference_timeout_s = 300

[[providers]]
name = "llama"
kind = "openai"
base_url = "{}/v1"
max_concurrency = 1
timeout_s = 300

[[models]]
name = "qwen"
provider = "llama"
context_tokens = 8192
max_tokens = 256
temperature = 0.0
seed = {SEED}
max_turns = 8
max_calls_per_reply = 1
{mode_line}
"#,
        s.url()
    );
    let path = dir.join("agentosd.toml");
    std::fs::write(&path, config).expect("config");
    (
        Daemon::start_with(&["--config", &path.display().to_string()]),
        dir,
    )
}

fn task(
    d: &Daemon,
    name: &str,
    role: &str,
    permissions: &[&str],
) -> (agentos::kernel::pcb::ExitStatus, u64) {
    let a = d.spawn(SpawnRequest {
        name: name.into(),
        role: Some(role.into()),
        model: Some("qwen".into()),
        permissions: Some(permissions.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    });
    let exit = d.wait(a.pid, Duration::from_secs(600));
    (exit, a.pid)
}

#[test]
fn simple_tasks_end_to_end() {
    if !require_root("simple_tasks_end_to_end") {
        return;
    }
    let Some((_g, s)) = server("simple_tasks_end_to_end") else {
        return;
    };
    let (d, dir) = daemon(&s, SMALL_MODEL_SETTINGS);
    let (exit, pid) = task(
        &d,
        "writer",
        "Write the text hello agentos into the file /greeting.txt. Then exit.",
        &["fs"],
    );
    let logs = d.logs(pid);
    assert_eq!(exit.code, 0, "{exit:?}\n{logs}");
    let text = std::fs::read_to_string(d.workspace(pid).join("greeting.txt")).unwrap_or_default();
    assert_eq!(text.trim(), "hello agentos", "{logs}");

    let (exit, pid) = task(
        &d,
        "runner",
        "Run the shell command `uname -s` with EXEC_CMD and save its output in the file /os.txt. Then exit.",
        &["fs", "exec"],
    );
    let logs = d.logs(pid);
    assert_eq!(exit.code, 0, "{exit:?}\n{logs}");
    let text = std::fs::read_to_string(d.workspace(pid).join("os.txt")).unwrap_or_default();
    assert!(text.contains("Linux"), "{text:?}\n{logs}");
    drop(d);
    let _ = std::fs::remove_dir_all(dir);
}
