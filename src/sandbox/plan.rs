//! The launch plan: a typed, serialized description of one sandbox that the
//! daemon hands to the single-threaded launcher. The launcher never reads
//! policy files or the database; everything it does is in this plan.

use super::seccomp::Filters;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Everything the launcher needs to build one agent's sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LaunchPlan {
    /// Agent pid (names the hostname and the environment).
    pub pid: u64,
    pub uid: u32,
    pub gid: u32,
    /// Absolute host path of the program to exec.
    pub program: PathBuf,
    /// argv[1..].
    pub args: Vec<String>,
    /// The complete environment of the agent program.
    pub env: Vec<(String, String)>,
    /// An empty host directory used as the mount point of the new root.
    pub new_root: PathBuf,
    /// Host path of the workspace (bound read-write at /workspace).
    pub workspace: PathBuf,
    /// System directories bound read-only at the same path. Symlinks among
    /// them are recreated as symlinks.
    pub ro_binds: Vec<PathBuf>,
    /// Where the program and extra paths appear, bound read-only after /tmp
    /// and the workspace exist. The sources are not paths but the
    /// descriptors that travel with the plan, in this order.
    pub extra_ro: Vec<PathBuf>,
    /// /etc entries bound read-only.
    pub etc: Vec<PathBuf>,
    /// Device nodes bound into /dev.
    pub dev: Vec<PathBuf>,
    pub tmp_bytes: u64,
    /// `cgroup.procs` files the agent joins (one per hierarchy).
    pub cgroup_procs: Vec<PathBuf>,
    pub rlimits: Rlimits,
    pub landlock_min_abi: u8,
    pub seccomp: Filters,
    /// Keep the daemon's network namespace instead of a new, empty one
    /// (EXEC_CMD sandboxes of a profile with `exec.allow_network`).
    #[serde(default)]
    pub share_network: bool,
}

/// Resource limits set with setrlimit (soft = hard).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rlimits {
    pub nofile: u64,
    /// Largest file the agent can write directly (RLIMIT_FSIZE).
    pub fsize: u64,
    /// Processes of the agent's uid (RLIMIT_NPROC): a second fork-bomb guard.
    pub nproc: u64,
}
