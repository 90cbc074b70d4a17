//! The daemon's CPU priority over its agents: its own cgroup, beside the
//! agents', weighs [`RATIO`] times theirs, so that however many agents are
//! busy the daemon (and with it every other agent's syscalls) gets the CPU
//! when it needs it.
//!
//! - cgroup v2: the daemon already lives in `<own>/<name>.supervisor` (see
//!   [`super::cgroup`]); `cpu.weight` there is `RATIO` × 100 against the
//!   agents' `<own>/<name>`, which keeps the default 100.
//! - cgroup v1 (hybrid hosts): `<own cpu cgroup>/<name>.supervisor` gets
//!   `cpu.shares` = `RATIO` × 1024 and the daemon moves itself in; the
//!   agents' `<own cpu cgroup>/<name>` keeps the default 1024.
//!
//! Agents' own CPU limits (`cpu_percent`) are unchanged; this only decides
//! who runs first when the host's CPUs are all busy.

use super::cgroup::{CgroupError, Cgroups, Mode};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The daemon's weight against all of its agents together.
pub const RATIO: u64 = 64;
/// cgroup v2's default `cpu.weight` (the agents' directory keeps it).
const V2_DEFAULT_WEIGHT: u64 = 100;
/// cgroup v1's default `cpu.shares` (the agents' directory keeps it).
const V1_DEFAULT_SHARES: u64 = 1024;

fn write(dir: &Path, file: &str, value: u64) -> Result<(), CgroupError> {
    let p = dir.join(file);
    fs::write(&p, value.to_string()).map_err(|e| CgroupError::Io(p.display().to_string(), e))
}

/// The `<name>.supervisor` sibling of the instance directory `base`.
fn supervisor_of(base: &Path, instance: &str) -> Result<PathBuf, CgroupError> {
    let parent = base.parent().ok_or_else(|| {
        CgroupError::Unsupported(format!("{} has no parent cgroup", base.display()))
    })?;
    Ok(parent.join(format!("{instance}.supervisor")))
}

/// Gives the daemon [`RATIO`] times its agents' CPU weight. Returns the
/// cgroup directory that holds the weight, or None when the host has no
/// cpu controller to weigh with (the caller says so in the log).
pub fn prioritize(cgroups: &Cgroups, instance: &str) -> Result<Option<PathBuf>, CgroupError> {
    match &cgroups.mode {
        Mode::V2 { agents, .. } => {
            let dir = supervisor_of(agents, instance)?;
            if !dir.join("cpu.weight").exists() {
                return Ok(None);
            }
            write(&dir, "cpu.weight", RATIO * V2_DEFAULT_WEIGHT)?;
            Ok(Some(dir))
        }
        Mode::V1 { cpu: None, .. } => Ok(None),
        Mode::V1 { cpu: Some(cpu), .. } => {
            let dir = supervisor_of(cpu, instance)?;
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(CgroupError::Io(dir.display().to_string(), e)),
            }
            write(&dir, "cpu.shares", RATIO * V1_DEFAULT_SHARES)?;
            write(&dir, "cgroup.procs", u64::from(std::process::id()))?;
            Ok(Some(dir))
        }
    }
}
