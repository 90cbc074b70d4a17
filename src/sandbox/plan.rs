//! The launch plan: a typed, serialized description of one sandbox that the
//! daemon hands to the single-threaded launcher. The launcher never reads
//! policy files or the database; everything it does is in this plan.
//! [`LaunchPlan::new`] builds the part every sandbox of a profile shares
//! (an agent's and an EXEC_CMD command's alike); the caller adds what
//! differs.

use super::profile::Profile;
use super::seccomp::Filters;
use crate::abi::limits::Limits;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Who a sandbox runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// The agent's pid (names the hostname and the environment).
    pub pid: u64,
    pub uid: u32,
    pub gid: u32,
}

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

impl LaunchPlan {
    /// The plan of a sandbox of `profile` that runs `program` with `args` as
    /// `who` within `limits`: the profile's system binds, /etc entries,
    /// devices, Landlock ABI and seccomp filters; the limits' /tmp size and
    /// rlimits; `workspace` at /workspace, `new_root` as the mount point and
    /// the [`base_env`]. It has no extra binds and no cgroups yet, and a new
    /// network namespace.
    pub fn new(
        who: Identity,
        limits: &Limits,
        profile: &Profile,
        program: PathBuf,
        args: Vec<String>,
        new_root: PathBuf,
        workspace: PathBuf,
    ) -> LaunchPlan {
        LaunchPlan {
            pid: who.pid,
            uid: who.uid,
            gid: who.gid,
            program,
            args,
            env: base_env(who.pid),
            new_root,
            workspace,
            ro_binds: profile.filesystem.ro_binds.clone(),
            extra_ro: Vec::new(),
            etc: profile.filesystem.etc.clone(),
            dev: profile.filesystem.dev.clone(),
            tmp_bytes: limits.tmp_bytes,
            cgroup_procs: Vec::new(),
            rlimits: Rlimits::of(limits),
            landlock_min_abi: profile.landlock.min_abi,
            seccomp: profile.filters.clone(),
            share_network: false,
        }
    }
}

impl Rlimits {
    /// The rlimits that back an agent's limits: its descriptors, its
    /// processes, and no file larger than its workspace or /tmp may hold.
    pub fn of(limits: &Limits) -> Rlimits {
        Rlimits {
            nofile: limits.nofile,
            fsize: limits.workspace_bytes.max(limits.tmp_bytes),
            nproc: limits.pids,
        }
    }
}

/// The environment every sandboxed program starts with: a plain PATH, the
/// workspace as home, /tmp, a UTF-8 locale, the user name `agent` and the
/// agent's pid as `AGENTOS_PID`.
pub fn base_env(pid: u64) -> Vec<(String, String)> {
    [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("HOME", "/workspace"),
        ("TMPDIR", "/tmp"),
        ("LANG", "C.UTF-8"),
        ("USER", "agent"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain([("AGENTOS_PID".to_string(), pid.to_string())])
    .collect()
}
