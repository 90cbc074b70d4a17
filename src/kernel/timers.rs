//! Durable timers: SYS_SCHEDULE stores `(due time, id) → timer` in the
//! `timers` tree; one task fires timers when they come due by moving them
//! into the agent's inbox as a `timer` event — the inbox insert and the
//! timer removal are one transaction ([`InboxSlot::deliver_removing`]), so
//! a timer fires exactly once even across crashes. Timer events are not
//! refused for a full inbox (an agent has at most 1000 pending timers).
//! Timers that came due while the daemon was down fire as soon as it
//! starts. An agent's timers are cancelled when it terminates.
//!
//! [`InboxSlot::deliver_removing`]: super::ipc::InboxSlot::deliver_removing

use super::Kernel;
use super::ipc::NewMessage;
use super::pcb::{Pcb, Pid, now_ms};
use super::store::{StoreError, key};
use crate::abi::SysError;
use crate::abi::wire::typed_args;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Longest delay a timer may have (one year).
const MAX_DELAY_S: u64 = 365 * 24 * 3600;
/// Most pending timers per agent.
const MAX_TIMERS_PER_AGENT: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleArgs {
    seconds: u64,
    prompt: String,
}

/// A pending timer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Timer {
    pub id: u64,
    pub pid: Pid,
    pub due_ms: u64,
    pub prompt: String,
}

/// SYS_SCHEDULE.
pub fn schedule(k: &Arc<Kernel>, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
    let a: ScheduleArgs = typed_args("SYS_SCHEDULE", args)?;
    if a.seconds > MAX_DELAY_S {
        return Err(SysError::inval(format!(
            "seconds must be at most {MAX_DELAY_S}"
        )));
    }
    if a.prompt.len() > super::ipc::MAX_MESSAGE_BYTES {
        return Err(SysError::msgsize("prompt too long"));
    }
    if k.timers_of(pcb.pid).len() >= MAX_TIMERS_PER_AGENT {
        return Err(SysError::new(
            crate::abi::Errno::EAGAIN,
            "too many pending timers",
        ));
    }
    let id = k.store.next_seq()?;
    let timer = Timer {
        id,
        pid: pcb.pid,
        due_ms: now_ms() + a.seconds * 1000,
        prompt: a.prompt,
    };
    let bytes = serde_json::to_vec(&timer).map_err(StoreError::from)?;
    k.store
        .trees
        .timers
        .insert(key(timer.due_ms, id), bytes)
        .map_err(StoreError::from)?;
    k.timers_changed.notify_one();
    Ok(json!({"timer": id, "due_ms": timer.due_ms}))
}

impl Kernel {
    /// Pending timers of one agent.
    pub fn timers_of(&self, pid: Pid) -> Vec<Timer> {
        let mut timers = Vec::new();
        for entry in self.store.trees.timers.iter().values() {
            match entry {
                Ok(v) => match serde_json::from_slice::<Timer>(&v) {
                    Ok(t) if t.pid == pid => timers.push(t),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("skipping an unreadable timer: {e}"),
                },
                Err(e) => tracing::error!(pid, "reading the timers: {e}"),
            }
        }
        timers
    }

    /// Drops an agent's pending timers (it terminated).
    pub fn cancel_timers(&self, pid: Pid) {
        for t in self.timers_of(pid) {
            if let Err(e) = self.store.trees.timers.remove(key(t.due_ms, t.id)) {
                tracing::error!(pid, "cancelling timer {}: {e}", t.id);
            }
        }
    }

    /// Fires due timers forever; start once, after recovery.
    pub fn start_timers(self: &Arc<Self>) {
        let k = self.clone();
        tokio::spawn(async move {
            loop {
                let changed = k.timers_changed.notified();
                let next = k.fire_due_timers().await;
                let wait = match next {
                    Some(due) => Duration::from_millis(due.saturating_sub(now_ms())),
                    None => Duration::from_secs(3600),
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = changed => {}
                }
            }
        });
    }

    /// Fires every timer that is due; returns when the next one is due (or
    /// when to retry after a database error).
    async fn fire_due_timers(&self) -> Option<u64> {
        let retry = || Some(now_ms() + 1000);
        let timers = &self.store.trees.timers;
        let mut fired = false;
        let next = loop {
            let (k, v) = match timers.iter().next() {
                None => break None,
                Some(Ok(entry)) => entry,
                Some(Err(e)) => {
                    tracing::error!("reading the timers: {e}");
                    break retry();
                }
            };
            let timer = match serde_json::from_slice::<Timer>(&v) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!("dropping an unreadable timer: {e}");
                    if let Err(e) = timers.remove(&k) {
                        tracing::error!("dropping an unreadable timer: {e}");
                        break retry();
                    }
                    continue;
                }
            };
            if timer.due_ms > now_ms() {
                break Some(timer.due_ms);
            }
            let Some(target) = self.table.get(timer.pid).filter(|p| p.is_live()) else {
                if let Err(e) = timers.remove(&k) {
                    tracing::error!(pid = timer.pid, "dropping timer {}: {e}", timer.id);
                    break retry();
                }
                continue;
            };
            let msg = NewMessage {
                from: timer.pid,
                from_uid: None,
                body: timer.prompt.clone(),
                kind: Some("timer".into()),
                event: Some(json!({"timer": timer.id, "due_ms": timer.due_ms})),
            };
            // Deliver and forget in one transaction: exactly once.
            let delivered = self
                .inboxes()
                .reserve_uncapped(&target)
                .and_then(|slot| slot.deliver_removing(msg, timers, &k));
            if let Err(e) = delivered {
                tracing::error!(pid = timer.pid, "firing timer {}: {e}", timer.id);
                break retry();
            }
            fired = true;
            tracing::debug!(pid = timer.pid, timer = timer.id, "timer fired");
        };
        if fired {
            if let Err(e) = self.store.durable().await {
                tracing::error!("timer events: {e}");
            }
        }
        next
    }
}
