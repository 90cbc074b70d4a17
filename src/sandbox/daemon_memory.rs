//! The daemon's own memory bound: a cgroup of its own, beside the agents',
//! whose limit is `daemon_memory_max` (default: [`default_max`]).
//!
//! - cgroup v2: the daemon already lives in `<own>/<name>.supervisor` (see
//!   [`super::cgroup`]); it sets `memory.high` there to 9/10 of the bound
//!   (reclaim and throttling start) and `memory.max` to the bound.
//! - cgroup v1 (hybrid hosts): it makes `<own memory cgroup>/<name>.supervisor`,
//!   sets `memory.soft_limit_in_bytes` (9/10) and `memory.limit_in_bytes`
//!   there, and moves itself in (the memory it already holds stays charged
//!   where it was; everything after counts).
//!
//! Past the bound the kernel kills the daemon inside its own cgroup, never
//! an agent's neighbour, and systemd restarts it (`Restart=on-failure`);
//! agents are recovered from the journal. The unit's `OOMScoreAdjust=-500`
//! and the agents' `oom_score_adj` of 500 make the kernel pick agents first
//! when the whole host runs short.

use super::cgroup::{CgroupError, Cgroups, Mode};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The fixed part of the default bound.
pub const BASE_BYTES: u64 = 256 << 20;
/// What the daemon may hold per agent in the default bound.
pub const PER_AGENT_BYTES: u64 = 64 << 10;

/// The default bound: 256 MiB + 64 KiB for every agent the daemon can run
/// at once (one uid each, so the size of its uid range).
pub fn default_max(max_agents: u64) -> u64 {
    BASE_BYTES.saturating_add(PER_AGENT_BYTES.saturating_mul(max_agents))
}

fn write(dir: &Path, file: &str, value: u64) -> Result<(), CgroupError> {
    let p = dir.join(file);
    fs::write(&p, value.to_string()).map_err(|e| CgroupError::Io(p.display().to_string(), e))
}

/// Puts the daemon under `max` bytes (0: no bound). Returns the cgroup
/// directory that holds the bound.
pub fn bound(cgroups: &Cgroups, instance: &str, max: u64) -> Result<Option<PathBuf>, CgroupError> {
    if max == 0 {
        return Ok(None);
    }
    let high = max / 10 * 9;
    let sibling = |base: &Path| -> Result<PathBuf, CgroupError> {
        let parent = base.parent().ok_or_else(|| {
            CgroupError::Unsupported(format!("{} has no parent cgroup", base.display()))
        })?;
        Ok(parent.join(format!("{instance}.supervisor")))
    };
    match &cgroups.mode {
        Mode::V2 { agents, .. } => {
            let dir = sibling(agents)?;
            write(&dir, "memory.high", high)?;
            write(&dir, "memory.max", max)?;
            Ok(Some(dir))
        }
        Mode::V1 { memory, .. } => {
            let dir = sibling(memory)?;
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(CgroupError::Io(dir.display().to_string(), e)),
            }
            write(&dir, "memory.soft_limit_in_bytes", high)?;
            write(&dir, "memory.limit_in_bytes", max)?;
            write(&dir, "cgroup.procs", u64::from(std::process::id()))?;
            Ok(Some(dir))
        }
    }
}
