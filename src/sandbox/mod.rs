//! Confinement of agents. The daemon side builds a [`plan::LaunchPlan`]
//! from a profile and hands it through [`spawner`] to the launcher server
//! ([`launch_server`]), whose child, the sandbox's pid 1 ([`launcher`]), applies
//! the steps in one linear sequence: fds, rlimits, namespaces, mounts,
//! cgroups (joined once the daemon has made them), hostname, ids,
//! capabilities, no_new_privs, Landlock, seccomp, exec.

pub mod binds;
pub mod bpf;
pub mod cgroup;
pub mod creds;
pub mod features;
pub mod handoff;
pub mod ids;
pub mod landlock;
pub mod launch_server;
pub mod launcher;
pub mod mounts;
pub mod plan;
pub mod profile;
pub mod seccomp;
pub mod spawner;
pub mod uids;
