//! Durable timers: SYS_SCHEDULE stores `(due time, id) → timer` in the
//! `timers` tree; one task fires timers when they come due by moving them
//! into the agent's inbox as a `timer` event — the inbox insert and the
//! timer removal are one transaction, so a timer fires exactly once even
//! across crashes. Timers that came due while the daemon was down fire as
//! soon as it starts. An agent's timers are cancelled when it terminates.

use super::Kernel;
use super::ipc::Message;
use super::pcb::{Pcb, Pid, now_ms};
use super::store::key;
use crate::abi::SysError;
use crate::abi::wire::typed_args;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sled::Transactional;
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

impl Kernel {
    pub fn sys_schedule(&self, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
        let a: ScheduleArgs = typed_args("SYS_SCHEDULE", args)?;
        if a.seconds > MAX_DELAY_S {
            return Err(SysError::inval(format!(
                "seconds must be at most {MAX_DELAY_S}"
            )));
        }
        if a.prompt.len() > super::ipc::MAX_MESSAGE_BYTES {
            return Err(SysError::msgsize("prompt too long"));
        }
        if self.timers_of(pcb.pid).len() >= MAX_TIMERS_PER_AGENT {
            return Err(SysError::new(
                crate::abi::Errno::EAGAIN,
                "too many pending timers",
            ));
        }
        let id = self
            .store
            .next_seq()
            .map_err(|e| SysError::io(e.to_string()))?;
        let timer = Timer {
            id,
            pid: pcb.pid,
            due_ms: now_ms() + a.seconds * 1000,
            prompt: a.prompt,
        };
        let bytes = serde_json::to_vec(&timer).map_err(|e| SysError::io(e.to_string()))?;
        self.store
            .trees
            .timers
            .insert(key(timer.due_ms, id), bytes)
            .map_err(|e| SysError::io(e.to_string()))?;
        self.timers_changed.notify_one();
        Ok(json!({"timer": id, "due_ms": timer.due_ms}))
    }

    /// Pending timers of one agent.
    pub fn timers_of(&self, pid: Pid) -> Vec<Timer> {
        self.store
            .trees
            .timers
            .iter()
            .values()
            .filter_map(|v| v.ok())
            .filter_map(|v| serde_json::from_slice::<Timer>(&v).ok())
            .filter(|t| t.pid == pid)
            .collect()
    }

    /// Drops an agent's pending timers (it terminated).
    pub fn cancel_timers(&self, pid: Pid) {
        for t in self.timers_of(pid) {
            let _ = self.store.trees.timers.remove(key(t.due_ms, t.id));
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

    /// Fires every timer that is due; returns when the next one is due.
    async fn fire_due_timers(&self) -> Option<u64> {
        let trees = &self.store.trees;
        let mut fired = false;
        loop {
            let first = trees.timers.iter().next();
            let Some(Ok((k, v))) = first else { break };
            let Ok(timer) = serde_json::from_slice::<Timer>(&v) else {
                let _ = trees.timers.remove(&k);
                continue;
            };
            if timer.due_ms > now_ms() {
                if fired {
                    let _ = self.store.durable().await;
                }
                return Some(timer.due_ms);
            }
            let live = self.table.get(timer.pid).is_some_and(|p| p.is_live());
            if !live {
                let _ = trees.timers.remove(&k);
                continue;
            }
            let seq = match self.store.next_seq() {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("timer: {e}");
                    return Some(now_ms() + 1000);
                }
            };
            let msg = Message {
                seq,
                from: timer.pid,
                from_uid: None,
                body: timer.prompt.clone(),
                ts_ms: now_ms(),
                kind: Some("timer".into()),
                event: Some(json!({"timer": timer.id, "due_ms": timer.due_ms})),
            };
            let Ok(bytes) = serde_json::to_vec(&msg) else {
                continue;
            };
            // Deliver and forget in one transaction: exactly once.
            let result: sled::transaction::TransactionResult<(), ()> =
                (&trees.inbox, &trees.timers).transaction(|(inbox, timers)| {
                    inbox.insert(&key(timer.pid, seq), bytes.as_slice())?;
                    timers.remove(&k)?;
                    Ok(())
                });
            if let Err(e) = result {
                tracing::error!(pid = timer.pid, "firing timer {}: {e:?}", timer.id);
                return Some(now_ms() + 1000);
            }
            fired = true;
            self.store.queues.inbox.add(timer.pid, 1);
            if let Some(l) = self.live.get(timer.pid) {
                l.inbox.notify_waiters();
            }
            tracing::debug!(pid = timer.pid, timer = timer.id, "timer fired");
        }
        if fired {
            let _ = self.store.durable().await;
        }
        None
    }
}
