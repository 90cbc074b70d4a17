//! The built-in agent runtime: the program of every agent spawned with
//! `--model/--role`. It runs inside the same sandbox as any agent, stacks a
//! stricter seccomp filter on itself (no exec, no new files, no sockets, no
//! processes) and reaches the world only through fd 3.
//!
//! Its loop: build the context (instructions with the offered syscalls,
//! the role, the turns so far) → LLM_INFER → run the calls of the reply in
//! order, stopping at the first that fails → append their results →
//! repeat, until SYS_EXIT, the turn limit, an exhausted budget, repeated
//! invalid replies, the same call repeated with the same result, or a
//! kill. Every way it ends itself has its own exit code and a reason
//! (`agentos wait`, `inspect`). Each step is printed to stdout, which the
//! supervisor keeps as the agent's log.
//!
//! [`prompt`] writes the instructions, [`mode`] holds what differs between
//! text, grammar, json_schema and tools, [`text`] finds the calls in a
//! reply, [`reply`] turns a reply into calls and results, [`repeat`]
//! notices loops, [`context`] keeps (and compacts) the conversation and
//! [`client`] talks to fd 3.

pub mod client;
pub mod context;
pub mod example;
pub mod finish;
pub mod mode;
pub mod prompt;
pub mod repeat;
pub mod reply;
pub mod text;

use crate::abi::Errno;
use crate::abi::SysError;
use crate::abi::calls::{Call, expand_permissions};
use crate::abi::schema::constraint::DEFAULT_MAX_CALLS;
use crate::abi::schema::offer::{Facilities, Offer};
use crate::llm::config::ModelConfig;
use client::Client;
use context::Context;
use mode::Mode;
use reply::{Agent, Coaching, Fatal, Planned};
use serde_json::{Value, json};

/// Retries of an inference that failed transiently (after the daemon's own).
const MAX_INFER_RETRIES: u32 = 3;

/// Exit codes of the runtime (also in the PCB's exit status).
pub mod exit {
    pub const DONE: i32 = 0;
    pub const SETUP: i32 = 2;
    pub const BUDGET: i32 = 3;
    pub const INFERENCE: i32 = 4;
    pub const INVALID_REPLIES: i32 = 5;
    /// The turn limit (`max_turns`) was reached before SYS_EXIT.
    pub const TURN_LIMIT: i32 = 6;
    /// The model made the same call with the same result three times.
    pub const REPEATED: i32 = 7;
    /// The model finished although its task names a path none of its
    /// calls used, a call it never made, a value no call wrote, or a file
    /// it left as it read it (`confirm_exit`).
    pub const UNFINISHED: i32 = 8;
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

/// What AGENT_INFO tells the runtime about its agent.
struct Setup {
    model: ModelConfig,
    offer: Offer,
    name: String,
    pid: u64,
    role: String,
    max_turns: u64,
    turns_used: u64,
    history: Vec<Value>,
}

fn setup(client: &mut Client) -> Result<Setup, Fatal> {
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
    let granted = expand_permissions(&permitted).unwrap_or_default();
    let calls = prompt::model_calls(&permitted);
    let facilities = Facilities {
        docker: info["exec"]["drivers"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x == "docker")),
        shared_memory: granted.contains(&Call::MEM_SHARED),
    };
    // The agent's limit (`agentos spawn --max-turns`, a parent's
    // `limits`) when it has one, never more than the model's.
    let model_turns = u64::from(model.max_turns).max(1);
    let max_turns = match info["limits"]["max_turns"].as_u64() {
        Some(n) if n > 0 => n.min(model_turns),
        _ => model_turns,
    };
    Ok(Setup {
        offer: Offer::new(&calls, facilities),
        name: info["name"].as_str().unwrap_or("agent").to_string(),
        pid: info["pid"].as_u64().unwrap_or(0),
        role: info["role"]
            .as_str()
            .unwrap_or("You have no task. Exit.")
            .to_string(),
        max_turns,
        turns_used: info["llm_calls"].as_u64().unwrap_or(0),
        history: serde_json::from_value(info["history"].clone()).unwrap_or_default(),
        model,
    })
}

fn run(client: &mut Client) -> Result<(), Fatal> {
    let s = setup(client)?;
    restrict_self()?;
    let model = &s.model;
    let mode = Mode::of(model);
    let max_calls = model
        .max_calls_per_reply
        .map_or(DEFAULT_MAX_CALLS, |n| n as usize)
        .max(1);
    let tools = mode.tools(&s.offer);
    let constraint = mode.constraint(&s.offer, max_calls);
    let mut ctx = Context::new(
        prompt::system_prompt(&s.name, s.pid, &s.offer, mode, max_calls),
        s.role.clone(),
        model.chars_per_token,
    );
    if model.worked_example {
        ctx = ctx.with_example(example::messages(&s.offer, mode));
    }
    println!(
        "runtime: agent {} ({}) thinking with model {} ({} mode, at most {max_calls} calls per reply, {} turns); syscalls: {}",
        s.pid,
        s.name,
        model.name,
        mode.name(),
        s.max_turns,
        s.offer.names().join(" ")
    );
    let mut agent = Agent::new(ctx, s.offer.clone(), mode, max_calls).with_coaching(Coaching {
        task: s.role.clone(),
        confirm_exit: model.confirm_exit,
        remind_task: model.remind_task,
    });
    if !s.history.is_empty() {
        let interrupted = rebuild(&mut agent, &s.history);
        println!(
            "runtime: resumed after a supervisor restart; context rebuilt from {} journal records ({interrupted} interrupted calls)",
            s.history.len()
        );
    }
    let window = model
        .context_tokens
        .saturating_sub(u64::from(model.max_tokens) + 64);
    for turn in s.turns_used + 1..=s.max_turns {
        let dropped = agent.ctx.compact(window);
        if dropped > 0 {
            println!("runtime: context compacted ({dropped} old turns replaced by a summary)");
        }
        let mut args = json!({"messages": agent.ctx.messages(), "max_tokens": model.max_tokens});
        // Calls the model repeated with the same result are left out
        // where the wire can leave them out (grammar, schema, tools),
        // until two other calls got new results.
        let avoided = agent.avoided();
        let narrowed = (!avoided.is_empty()).then(|| s.offer.without(&avoided));
        let (tools, constraint) = match &narrowed {
            Some(o) => (mode.tools(o), mode.constraint(o, max_calls)),
            None => (tools.clone(), constraint.clone()),
        };
        if !tools.is_empty() {
            args["tools"] = json!(tools);
        }
        if let Some(c) = &constraint {
            args["constraint"] = json!(c);
        }
        if let Some(t) = model.temperature {
            args["temperature"] = json!(t);
        }
        println!(
            "▶ turn {turn}: {} messages, ~{} tokens",
            agent.ctx.messages().len(),
            agent.ctx.tokens()
        );
        let reply = infer(client, &args)?;
        let planned = agent.take_reply(&reply)?;
        let exited = run_calls(&mut agent, planned, &mut |call, args| {
            client.call(call.name(), args)
        })?;
        if exited {
            // The supervisor ends the process; stop acting meanwhile.
            std::process::exit(exit::DONE);
        }
        agent.close_turn();
    }
    Err((
        exit::TURN_LIMIT,
        format!(
            "turn limit reached: {} inferences without SYS_EXIT",
            s.max_turns
        ),
    ))
}

/// Makes one syscall (offered, with decoded arguments).
pub type Exec<'a> = dyn FnMut(Call, &Value) -> Result<Value, SysError> + 'a;

/// Runs the calls of one reply in order through `exec`, stopping at the
/// first failure. Returns whether a SYS_EXIT succeeded.
fn run_calls(agent: &mut Agent, planned: Vec<Planned>, exec: &mut Exec) -> Result<bool, Fatal> {
    let mut rest = planned.into_iter();
    let mut ran = 0;
    while let Some(p) = rest.next() {
        if ran == agent.max_calls {
            let mut skipped = vec![p];
            skipped.extend(rest);
            let why = format!(
                "only {} call{} per reply {} run",
                agent.max_calls,
                if agent.max_calls == 1 { "" } else { "s" },
                if agent.max_calls == 1 { "is" } else { "are" }
            );
            agent.not_run(skipped, &why);
            break;
        }
        ran += 1;
        let prepared = agent.prepare(&p);
        if let Ok((Call::SYS_EXIT, decoded)) = &prepared {
            // A file a command may have changed is read again first.
            for path in agent.stale_files(&decoded.args) {
                let now = exec(Call::FS_READ, &json!({"path": path})).ok();
                let text = now.as_ref().and_then(|v| v["content"].as_str());
                agent.observed(&path, text);
            }
            if agent.hold_exit(&decoded.args)? {
                agent.not_run(rest.collect(), "it came after SYS_EXIT");
                break;
            }
        }
        let (result, fix) = match &prepared {
            Ok((call, decoded)) => (exec(*call, &decoded.args), None),
            Err(r) => (Err(r.error.clone()), r.fix.as_deref()),
        };
        agent.take_result(&p, prepared.as_ref().ok().map(|(_, d)| d), &result, fix)?;
        if p.call.name == Call::SYS_EXIT.name() && result.is_ok() {
            return Ok(true);
        }
        if result.is_err() {
            let why = format!("it came after {}, which failed", p.call.name);
            agent.not_run(rest.collect(), &why);
            break;
        }
    }
    Ok(false)
}

/// After a restart: replays the agent's journal of turns into the context
/// — the model is not asked again for what it already answered, and no
/// call runs twice. Calls of the last reply that never completed get an
/// EINTR result, so the model decides whether to make them again.
fn rebuild(agent: &mut Agent, history: &[Value]) -> usize {
    let mut pending: std::collections::VecDeque<Planned> = Default::default();
    let mut interrupted = 0;
    let interrupt = |agent: &mut Agent, pending: &mut std::collections::VecDeque<Planned>| {
        let mut n = 0;
        for p in pending.drain(..) {
            let e = SysError::intr(
                "interrupted by a supervisor restart before it completed; it was not run — make it again if it is still needed",
            );
            let decoded = agent.prepare(&p).ok().map(|(_, d)| d);
            let _ = agent.take_result(&p, decoded.as_ref(), &Err(e), None);
            n += 1;
        }
        n
    };
    // Calls the runtime refused itself (bad arguments) never reached the
    // journal: answer them the same way again, in order.
    let settle = |agent: &mut Agent, pending: &mut std::collections::VecDeque<Planned>| {
        while let Some(p) = pending.front().cloned() {
            match agent.prepare(&p) {
                Ok((Call::SYS_EXIT, d)) if agent.hold_exit(&d.args).unwrap_or(false) => {
                    pending.pop_front();
                    let rest: Vec<Planned> = pending.drain(..).collect();
                    agent.not_run(rest, "it came after SYS_EXIT");
                }
                Ok(_) => return,
                Err(r) => {
                    pending.pop_front();
                    let _ = agent.take_result(&p, None, &Err(r.error), r.fix.as_deref());
                    let rest: Vec<Planned> = pending.drain(..).collect();
                    agent.not_run(
                        rest,
                        &format!("it came after {}, which failed", p.call.name),
                    );
                }
            }
        }
    };
    for rec in history {
        let call = rec["call"].as_str().unwrap_or("");
        if call == Call::LLM_INFER.name() {
            interrupted += interrupt(agent, &mut pending);
            agent.close_turn();
            if let Some(reply) = rec.get("result") {
                let mut planned = agent.take_reply(reply).unwrap_or_default();
                if planned.len() > agent.max_calls {
                    let skipped = planned.split_off(agent.max_calls);
                    agent.not_run(skipped, "only the first calls of a reply are run");
                }
                pending = planned.into();
                settle(agent, &mut pending);
            }
            continue;
        }
        if pending.front().is_some_and(|p| p.call.name == call) {
            if let Some(p) = pending.pop_front() {
                let result = match (rec.get("result"), rec.get("error")) {
                    (Some(v), _) => Ok(v.clone()),
                    (None, Some(e)) => Err(serde_json::from_value(e.clone())
                        .unwrap_or_else(|_| SysError::io("unreadable error in the journal"))),
                    (None, None) => Err(SysError::io("no outcome in the journal")),
                };
                let decoded = agent.prepare(&p).ok().map(|(_, d)| d);
                let _ = agent.take_result(&p, decoded.as_ref(), &result, None);
                if result.is_err() {
                    let rest: Vec<Planned> = pending.drain(..).collect();
                    agent.not_run(
                        rest,
                        &format!("it came after {}, which failed", p.call.name),
                    );
                }
                settle(agent, &mut pending);
            }
        }
    }
    interrupted += interrupt(agent, &mut pending);
    agent.close_turn();
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

#[cfg(test)]
mod tests;
