//! Ceilings for admin clients other than root: which profiles and models a
//! local user may spawn agents with, the highest priority it may give them,
//! and how many live agents and how much memory (the sum of their memory
//! limits) it may hold at once. All of it is configured in `[admin]`
//! ([`AdminConfig`]); root's requests are not bounded here.
//!
//! The checks run on the spec the spawn rule derived (so a default profile
//! or model is checked like a named one), under a per-uid lock held until
//! the new agent is in the table: two concurrent requests of one user
//! cannot both take the last slot.

use crate::abi::{Errno, SysError};
use crate::config::AdminConfig;
use crate::kernel::pcb::Pcb;
use crate::kernel::spawn::rule::SpawnSpec;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Serialises the spawns of each non-root uid.
#[derive(Debug, Default)]
pub struct Owners {
    locks: Mutex<HashMap<u32, Arc<tokio::sync::Mutex<()>>>>,
}

impl Owners {
    /// Waits for `uid`'s turn to spawn; the turn lasts as long as the guard.
    pub async fn turn(&self, uid: u32) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(uid)
            .or_default()
            .clone();
        lock.lock_owned().await
    }
}

/// What a user already holds: its live agents, children included.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Usage {
    pub agents: usize,
    pub memory_bytes: u64,
}

impl Usage {
    /// The live agents of `uid` among `all`.
    pub fn of<'a>(uid: u32, all: impl IntoIterator<Item = &'a Pcb>) -> Usage {
        all.into_iter()
            .filter(|p| p.owner == uid && p.is_live())
            .fold(Usage::default(), |u, p| Usage {
                agents: u.agents + 1,
                memory_bytes: u.memory_bytes.saturating_add(p.limits.memory_bytes),
            })
    }
}

/// Checks that non-root `uid` may create the agent `spec` describes,
/// holding `usage` already. `default_model` is the configured
/// `scheduler.default_model`, the only model allowed when `[admin] models`
/// is not set.
pub fn check(
    cfg: &AdminConfig,
    default_model: Option<&str>,
    uid: u32,
    spec: &SpawnSpec,
    usage: Usage,
) -> Result<(), SysError> {
    let profile = &spec.profile.name;
    if !cfg.profiles.iter().any(|p| p == profile) {
        return Err(SysError::perm(format!(
            "profile {profile:?} is not allowed for uid {uid}: [admin] profiles = {:?} (only root may use others)",
            cfg.profiles
        )));
    }
    for m in spec.models.iter().chain(spec.model.iter()) {
        let allowed = match &cfg.models {
            Some(list) => list.iter().any(|a| a == m),
            None => default_model == Some(m.as_str()),
        };
        if !allowed {
            let list = match &cfg.models {
                Some(list) => format!("[admin] models = {list:?}"),
                None => format!(
                    "[admin] models is not set, so only scheduler.default_model ({}) is",
                    default_model.unwrap_or("none")
                ),
            };
            return Err(SysError::perm(format!(
                "model {m:?} is not allowed for uid {uid}: {list} (only root may use others)"
            )));
        }
    }
    if spec.priority > cfg.max_priority {
        return Err(SysError::perm(format!(
            "priority {} is above [admin] max_priority = {} for uid {uid} (only root may set more)",
            spec.priority, cfg.max_priority
        )));
    }
    if usage.agents >= cfg.max_agents {
        return Err(SysError::new(
            Errno::EAGAIN,
            format!(
                "uid {uid} has {} live agents of [admin] max_agents = {}",
                usage.agents, cfg.max_agents
            ),
        ));
    }
    let asked = spec.limits.memory_bytes;
    let total = usage.memory_bytes.saturating_add(asked);
    if total > cfg.max_memory_bytes {
        return Err(SysError::quota(format!(
            "memory limits of uid {uid}'s live agents would be {total} bytes of [admin] max_memory_bytes = {} ({} in use, this agent's memory_bytes = {asked})",
            cfg.max_memory_bytes, usage.memory_bytes
        )));
    }
    Ok(())
}
