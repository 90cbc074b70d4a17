//! The dispatcher: runs a call through [`super::syscalls::handle`] (which
//! checks it against the caller's PCB and runs its handler), journals the
//! call with its result and timing, counts it, and — for calls that change
//! state — waits for the group commit before the reply leaves. How long a
//! call's reply waits is its [`Durability`] in the syscall table
//! (`abi/calls/table.rs`).

use super::Kernel;
use super::journal::JournalEntry;
use super::pcb::Pid;
use crate::abi::calls::{Call, Durability};
use crate::abi::wire::{Reply, Request};
use crate::abi::{Errno, SysError};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Runs one request of agent `pid` and returns its reply. Boxed because
/// SPAWN_AGENT makes the call graph recursive (a spawned agent's connection
/// dispatches calls too).
pub fn dispatch(
    k: &Arc<Kernel>,
    pid: Pid,
    req: Request,
) -> Pin<Box<dyn Future<Output = Reply> + Send + '_>> {
    Box::pin(dispatch_inner(k, pid, req))
}

async fn dispatch_inner(k: &Arc<Kernel>, pid: Pid, req: Request) -> Reply {
    use std::sync::atomic::Ordering;
    if k.shutting_down.load(Ordering::SeqCst) {
        return Reply::error(
            req.id,
            SysError::intr("the supervisor is shutting down; retry after it restarts"),
        );
    }
    k.in_flight.fetch_add(1, Ordering::SeqCst);
    let reply = execute(k, pid, req).await;
    k.in_flight.fetch_sub(1, Ordering::SeqCst);
    reply
}

async fn execute(k: &Arc<Kernel>, pid: Pid, req: Request) -> Reply {
    let started = std::time::Instant::now();
    let call = Call::parse(&req.call);
    // Below the state filesystem's low-water mark only what frees space or
    // ends work runs (floor.rs). The refusal is counted but not journaled:
    // the room left is the journal's.
    if let Some(c) = call.filter(|c| super::floor::Floor::guards(*c)) {
        if let Err(e) = k.floor.check(c.name()) {
            k.table.count(pid, |p| p.counters.syscalls += 1);
            k.metrics.syscall(call, e.code.as_str());
            return Reply::error(req.id, e);
        }
    }
    let (outcome, has_model) = run(k, pid, call, &req).await;
    let elapsed = started.elapsed().as_micros() as u64;
    // Refusals (missing permission, escalation attempts, someone else's
    // agent or file) are counted and audited.
    let denied = matches!(&outcome, Err(e) if matches!(e.code, Errno::EACCES | Errno::EPERM));
    k.table.count(pid, |p| {
        p.counters.syscalls += 1;
        if denied {
            p.counters.denied += 1;
        }
    });
    let result = match &outcome {
        Ok(_) => "SUCCESS",
        Err(e) => e.code.as_str(),
    };
    tracing::debug!(
        pid,
        call = %req.call,
        duration_us = elapsed,
        result,
        "syscall"
    );
    k.metrics.syscall(call, result);
    if denied {
        super::metrics::Metrics::add(&k.metrics.denied, 1);
        let reason = match &outcome {
            Err(e) => e.message.clone(),
            Ok(_) => String::new(),
        };
        tracing::warn!(target: "audit", pid, call = %req.call, "syscall denied: {reason}");
        k.audit("syscall-denied", None, Some(pid), &req.call, &reason);
    }
    let durability = call.map(|c| c.info().durability);
    let read_only = durability == Some(Durability::ReadOnly);
    let recorded_args = journal_args(call, &req.args);
    let entry = JournalEntry::syscall(&req.call, &recorded_args, &outcome, elapsed);
    // A read-only call changed nothing: its entry waits in memory and goes
    // into the journal with the agent's next entry (journal.rs). Refusals
    // are audited and written at once, repeated identical ones coalesced.
    let journaled = if denied {
        k.journal_denied(pid, entry)
    } else if read_only {
        k.journal_read_only(pid, entry)
    } else {
        k.journal(pid, entry)
    };
    if let Err(e) = journaled {
        return Reply::error(req.id, SysError::io(format!("journal: {e}")));
    }
    if let Err(e) = k.record_turn(pid, has_model, call, &recorded_args, &outcome) {
        return Reply::error(req.id, SysError::io(format!("journal: {e}")));
    }
    // A state change is acknowledged only once it is durable: one group
    // commit covers the change, its journal entry and its turn record.
    // Read-only calls and refusals changed nothing and are not waited for.
    let mutating = !read_only && outcome.is_ok();
    if mutating || denied {
        // An inference's reply waits for its own flush only, never for a
        // group of other writers to fill.
        let durable = if durability == Some(Durability::OwnFlush) {
            k.store.durable_now().await
        } else {
            k.store.durable().await
        };
        if let Err(e) = durable {
            return Reply::error(req.id, SysError::io(format!("store: {e}")));
        }
    }
    Reply::from_result(req.id, outcome)
}

/// Runs the call; also says whether the caller is an LLM agent (whose calls
/// are kept as turns).
async fn run(
    k: &Arc<Kernel>,
    pid: Pid,
    call: Option<Call>,
    req: &Request,
) -> (Result<Value, SysError>, bool) {
    let Some(call) = call else {
        return (
            Err(SysError::new(
                Errno::ENOSYS,
                format!("unknown syscall {:?}", req.call),
            )),
            false,
        );
    };
    let Some(pcb) = k.table.get(pid) else {
        return (Err(SysError::srch("caller has no PCB")), false);
    };
    let has_model = pcb.model.is_some();
    let outcome = super::syscalls::handle(k, call, &pcb, &req.args).await;
    if call == Call::FS_DELETE && outcome.is_ok() {
        k.floor.refresh();
    }
    (outcome, has_model)
}

/// What the journal keeps of a call's arguments: everything, except for
/// LLM_INFER whose message history is summarised (the reply is kept) and
/// SYS_REGISTER_WEBHOOK whose secret is redacted.
fn journal_args(call: Option<Call>, args: &Value) -> Value {
    if call == Some(Call::SYS_REGISTER_WEBHOOK) {
        return super::syscalls::webhooks::redact_args(args);
    }
    if call == Some(Call::NET_FETCH) {
        return redact_credentials(args);
    }
    if call != Some(Call::LLM_INFER) {
        return args.clone();
    }
    let messages = args.get("messages").and_then(Value::as_array);
    let last = messages
        .and_then(|m| m.last())
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .map(|s| super::journal::clip(s.chars().take(300).collect()));
    serde_json::json!({
        "messages": messages.map(|m| m.len()),
        "last": last,
        "model": args.get("model"),
    })
}

/// NET_FETCH arguments without the values of credential headers.
fn redact_credentials(args: &Value) -> Value {
    const SECRET: [&str; 4] = [
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
    ];
    let mut out = args.clone();
    if let Some(headers) = out.get_mut("headers").and_then(Value::as_object_mut) {
        for (name, value) in headers.iter_mut() {
            if SECRET.contains(&name.to_ascii_lowercase().as_str()) {
                *value = Value::from("<redacted>");
            }
        }
    }
    out
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn credential_headers_are_not_journaled() {
        let args = serde_json::json!({"url": "https://x", "headers": {"Authorization": "Bearer s3cret", "Accept": "text/plain"}});
        let kept = journal_args(Some(Call::NET_FETCH), &args).to_string();
        assert!(!kept.contains("s3cret"), "{kept}");
        assert!(kept.contains("text/plain"), "{kept}");
    }
}
