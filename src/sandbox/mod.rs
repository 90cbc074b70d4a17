//! Confinement of agents. The daemon side builds a [`plan::LaunchPlan`]
//! from a profile and hands it to the launcher ([`launcher`]), which applies
//! the steps in one linear sequence: fds, cgroup, rlimits, namespaces,
//! mounts, hostname, ids, capabilities, no_new_privs, Landlock, seccomp,
//! exec.

pub mod binds;
pub mod cgroup;
pub mod features;
pub mod handoff;
pub mod ids;
pub mod landlock;
pub mod launcher;
pub mod mounts;
pub mod plan;
pub mod profile;
pub mod seccomp;
pub mod uids;
