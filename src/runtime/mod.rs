//! The built-in agent runtime: the program of every agent spawned with
//! `--model/--role`. It runs inside the same sandbox as any agent, stacks a
//! stricter seccomp filter on itself (no exec, no new files, no sockets, no
//! processes) and reaches the world only through fd 3.
//!
//! Its loop: build the context (instructions with the permitted syscalls,
//! the role, the turns so far) → LLM_INFER → run the syscalls in the reply
//! in order → append their results → repeat, until SYS_EXIT, an exhausted
//! budget, repeated invalid replies, or a kill. Each step is printed to
//! stdout, which the supervisor keeps as the agent's log.
//!
//! [`prompt`] writes the instructions, [`text`] finds the syscalls in a
//! reply, [`context`] keeps (and compacts) the conversation and [`client`]
//! talks to fd 3.

pub mod client;
pub mod context;
pub mod prompt;
pub mod text;

use crate::abi::calls::Call;
use crate::abi::schema::{gbnf_grammar, reply_schema, tool_specs};
use crate::abi::{Errno, SysError};
use crate::llm::config::{ConstrainMode, ModelConfig};
use crate::llm::{ChatMessage, Constraint, Role, ToolSpec};
use client::Client;
use context::{Context, Turn};
use serde_json::{Value, json};
use text::{ParsedCall, corrective_message, parse_reply_with};

/// Invalid replies in a row before the agent is ended.
const MAX_INVALID_REPLIES: u32 = 3;
/// Retries of an inference that failed transiently (after the daemon's own).
const MAX_INFER_RETRIES: u32 = 3;
/// Longest syscall result kept in the context.
const MAX_RESULT_CHARS: usize = 8000;

/// Exit codes of the runtime (also in the PCB's exit status).
pub mod exit {
    pub const DONE: i32 = 0;
    pub const SETUP: i32 = 2;
    pub const BUDGET: i32 = 3;
    pub const INFERENCE: i32 = 4;
    pub const INVALID_REPLIES: i32 = 5;
}

/// Entry point of `agentos-runtime`.
pub fn main() -> ! {
    let mut client = match Client::from_fd3() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("agentos-runtime: no syscall socket on fd 3: {e}");
            std::process::exit(exit::SETUP)
        }
    };
    let code = match run(&mut client) {
        Ok(()) => exit::DONE,
        Err((code, reason)) => {
            eprintln!("agentos-runtime: {reason}");
            let _ = client.call("SYS_EXIT", &json!({"code": code, "reason": reason}));
            code
        }
    };
    std::process::exit(code)
}

type Fatal = (i32, String);

fn setup_error(what: &str, e: impl std::fmt::Display) -> Fatal {
    (exit::SETUP, format!("{what}: {e}"))
}

/// Stacks the runtime's own seccomp filter (policies/seccomp/runtime.json,
/// built into the binary).
fn restrict_self() -> Result<(), Fatal> {
    let policy = include_bytes!("../../policies/seccomp/runtime.json");
    let filters = crate::sandbox::seccomp::compile_any(policy)
        .map_err(|e| setup_error("runtime seccomp policy", e))?;
    crate::sandbox::seccomp::install(&filters)
        .map_err(|e| setup_error("installing the runtime seccomp filter", e))
}

fn run(client: &mut Client) -> Result<(), Fatal> {
    let info = client
        .call("AGENT_INFO", &json!({"history": true}))
        .map_err(|e| setup_error("AGENT_INFO", e))?;
    let model: ModelConfig = serde_json::from_value(info["model"].clone()).map_err(|_| {
        setup_error(
            "AGENT_INFO",
            "this agent has no model; spawn it with --model/--role",
        )
    })?;
    let permitted: Vec<String> =
        serde_json::from_value(info["permissions"].clone()).unwrap_or_default();
    let name = info["name"].as_str().unwrap_or("agent").to_string();
    let pid = info["pid"].as_u64().unwrap_or(0);
    let role = info["role"]
        .as_str()
        .unwrap_or("You have no task. Exit.")
        .to_string();
    restrict_self()?;

    let calls = prompt::model_calls(&permitted);
    let names: Vec<&str> = calls.iter().map(|c| c.name()).collect();
    let tools: Vec<ToolSpec> = if model.tool_calls {
        tool_specs(&calls)
            .into_iter()
            .map(|(name, description, parameters)| ToolSpec {
                name,
                description,
                parameters,
            })
            .collect()
    } else {
        Vec::new()
    };
    let constraint = match model.constrain {
        Some(ConstrainMode::Grammar) => Some(Constraint::Grammar(gbnf_grammar(&calls))),
        Some(ConstrainMode::JsonSchema) => Some(Constraint::JsonSchema(reply_schema(&calls))),
        None => None,
    };
    let mut ctx = Context::new(
        prompt::system_prompt(&name, pid, &calls, model.tool_calls),
        role,
        model.chars_per_token,
    );
    println!(
        "runtime: agent {pid} ({name}) thinking with model {}; syscalls: {}",
        model.name,
        names.join(" ")
    );

    let history: Vec<Value> = serde_json::from_value(info["history"].clone()).unwrap_or_default();
    if !history.is_empty() {
        let interrupted = rebuild(&mut ctx, &history, &names);
        println!(
            "runtime: resumed after a supervisor restart; context rebuilt from {} journal records ({interrupted} interrupted calls)",
            history.len()
        );
    }
    let window = model
        .context_tokens
        .saturating_sub(u64::from(model.max_tokens) + 64);
    let mut invalid = 0;
    for turn in 1.. {
        let dropped = ctx.compact(window);
        if dropped > 0 {
            println!("runtime: context compacted ({dropped} old turns replaced by a summary)");
        }
        let mut args = json!({"messages": ctx.messages(), "max_tokens": model.max_tokens});
        if !tools.is_empty() {
            args["tools"] = json!(tools);
        }
        if let Some(c) = &constraint {
            args["constraint"] = json!(c);
        }
        println!(
            "▶ turn {turn}: {} messages, ~{} tokens",
            ctx.messages().len(),
            ctx.tokens()
        );
        let reply = infer(client, &args)?;
        let todo = accept_reply(&mut ctx, &reply, &names, &mut invalid)?;
        for (tool_id, call) in todo {
            let result = execute(client, &call);
            let exiting = call.name == Call::SYS_EXIT.name() && result.is_ok();
            accept_result(&mut ctx, tool_id, &call, &result);
            if exiting {
                // The supervisor ends the process; stop acting meanwhile.
                std::process::exit(exit::DONE);
            }
        }
    }
    Ok(())
}

/// Takes the model's reply into the context and returns the calls to run
/// (with native tool-call ids). An invalid reply gets a corrective message;
/// too many in a row end the agent.
fn accept_reply(
    ctx: &mut Context,
    reply: &Value,
    names: &[&str],
    invalid: &mut u32,
) -> Result<Vec<(Option<String>, ParsedCall)>, Fatal> {
    let content = reply["content"].as_str().unwrap_or("").to_string();
    let native: Vec<crate::llm::ToolCall> =
        serde_json::from_value(reply["tool_calls"].clone()).unwrap_or_default();
    println!("◀ model: {}", content.trim());
    let mut assistant = ChatMessage::new(Role::Assistant, content.clone());
    assistant.tool_calls = native.clone();
    ctx.push_turn(Turn {
        messages: vec![assistant],
    });
    // Native tool calls first; otherwise the text forms.
    let (todo, mut problems): (Vec<(Option<String>, ParsedCall)>, Vec<String>) =
        if !native.is_empty() {
            let calls = native
                .iter()
                .map(|c| {
                    let pc = ParsedCall {
                        name: c.name.to_ascii_uppercase(),
                        args: c.arguments.clone(),
                    };
                    (Some(c.id.clone()), pc)
                })
                .collect();
            (calls, Vec::new())
        } else {
            let parsed = parse_reply_with(&content, names);
            (
                parsed.calls.into_iter().map(|c| (None, c)).collect(),
                parsed.problems,
            )
        };
    if !todo.is_empty() && problems.is_empty() {
        *invalid = 0;
        return Ok(todo);
    }
    *invalid += 1;
    if todo.is_empty() && problems.is_empty() {
        problems.push("your reply contained no syscall".into());
    }
    println!(
        "runtime: invalid reply ({invalid}/{MAX_INVALID_REPLIES}): {}",
        problems.join("; ")
    );
    if *invalid >= MAX_INVALID_REPLIES {
        return Err((
            exit::INVALID_REPLIES,
            format!(
                "the model gave {MAX_INVALID_REPLIES} invalid replies in a row (last: {})",
                problems.join("; ")
            ),
        ));
    }
    ctx.push(ChatMessage::new(
        Role::User,
        corrective_message(&problems, names),
    ));
    Ok(todo)
}

/// Takes a syscall's result into the context.
fn accept_result(
    ctx: &mut Context,
    tool_id: Option<String>,
    call: &ParsedCall,
    result: &Result<Value, SysError>,
) {
    let status = match result {
        Ok(_) => "SUCCESS".to_string(),
        Err(e) => e.code.to_string(),
    };
    ctx.record(format!(
        "{} {} → {status}",
        call.name,
        short(&call.args.to_string(), 120)
    ));
    let text = match result {
        Ok(v) => json!({"status": "SUCCESS", "result": v}).to_string(),
        Err(e) => json!({"status": "ERROR", "error": e}).to_string(),
    };
    // The call and its result are in the journal (`agentos logs`).
    let text = short(&text, MAX_RESULT_CHARS);
    match tool_id {
        Some(id) => {
            let mut m = ChatMessage::new(Role::Tool, text);
            m.tool_call_id = Some(id);
            m.name = Some(call.name.clone());
            ctx.push(m);
        }
        None => ctx.push(ChatMessage::new(
            Role::User,
            format!("[RESULT::{}] {text}", call.name),
        )),
    }
}

/// After a restart: replays the agent's journal of turns into the context
/// — the model is not asked again for what it already answered, and no
/// call runs twice. Calls of the last reply that never completed get an
/// EINTR result, so the model decides whether to make them again.
fn rebuild(ctx: &mut Context, history: &[Value], names: &[&str]) -> usize {
    let mut pending: std::collections::VecDeque<(Option<String>, ParsedCall)> = Default::default();
    let mut invalid = 0;
    let mut interrupted = 0;
    let mut interrupt_pending = |ctx: &mut Context,
                                 pending: &mut std::collections::VecDeque<(
        Option<String>,
        ParsedCall,
    )>| {
        for (id, call) in pending.drain(..) {
            let e = SysError::intr(
                "interrupted by a supervisor restart before it completed; it was not run — make it again if it is still needed",
            );
            accept_result(ctx, id, &call, &Err(e));
            interrupted += 1;
        }
    };
    for rec in history {
        let call = rec["call"].as_str().unwrap_or("");
        if call == Call::LLM_INFER.name() {
            interrupt_pending(ctx, &mut pending);
            if let Some(reply) = rec.get("result") {
                pending = accept_reply(ctx, reply, names, &mut invalid)
                    .unwrap_or_default()
                    .into();
            }
            continue;
        }
        if pending.front().is_some_and(|(_, c)| c.name == call) {
            if let Some((id, c)) = pending.pop_front() {
                let result = match (rec.get("result"), rec.get("error")) {
                    (Some(v), _) => Ok(v.clone()),
                    (None, Some(e)) => Err(serde_json::from_value(e.clone())
                        .unwrap_or_else(|_| SysError::io("unreadable error in the journal"))),
                    (None, None) => Err(SysError::io("no outcome in the journal")),
                };
                accept_result(ctx, id, &c, &result);
            }
        }
    }
    interrupt_pending(ctx, &mut pending);
    interrupted
}

/// LLM_INFER with a few retries on transient failures; a spent budget or a
/// permanent failure ends the agent with the reason.
fn infer(client: &mut Client, args: &Value) -> Result<Value, Fatal> {
    let mut attempt = 0;
    loop {
        match client.call("LLM_INFER", args) {
            Ok(v) => return Ok(v),
            Err(e) if e.code == Errno::EQUOTA => {
                return Err((
                    exit::BUDGET,
                    format!("token budget exhausted: {}", e.message),
                ));
            }
            Err(e)
                if matches!(e.code, Errno::EAGAIN | Errno::ETIMEDOUT)
                    && attempt < MAX_INFER_RETRIES =>
            {
                attempt += 1;
                println!("runtime: inference failed ({e}); retry {attempt}/{MAX_INFER_RETRIES}");
                std::thread::sleep(std::time::Duration::from_millis(500 * u64::from(attempt)));
            }
            Err(e) => return Err((exit::INFERENCE, format!("LLM_INFER failed: {e}"))),
        }
    }
}

/// Runs one syscall the model asked for.
fn execute(client: &mut Client, call: &ParsedCall) -> Result<Value, SysError> {
    if matches!(
        Call::parse(&call.name),
        Some(Call::LLM_INFER | Call::AGENT_INFO)
    ) {
        return Err(SysError::acces(format!(
            "{} is not available to the model",
            call.name
        )));
    }
    client.call(&call.name, &call.args)
}

fn short(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} chars)", &s[..end], s.len())
}
