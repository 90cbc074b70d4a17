//! Confinement of agents. The daemon side builds a [`plan::LaunchPlan`]
//! from a profile ([`profile`], with its [`seccomp`] filters compiled to
//! [`bpf`]) and hands it through [`spawner`] to the launcher server
//! ([`launch_server`]) over the wire of [`handoff`], which also holds the
//! table of descriptor numbers a sandbox receives. The server's child, the
//! sandbox's pid 1 ([`launcher`]), applies the steps in one linear
//! sequence: fds, rlimits, namespaces, mounts ([`mounts`]), cgroups
//! ([`cgroup`], joined once the daemon has made them), hostname, ids
//! ([`ids`]), capabilities, no_new_privs, Landlock ([`landlock`]), seccomp,
//! exec. The agent's program and extra binds are opened by the daemon with
//! the owner's permissions ([`binds`], through the per-thread credentials
//! of [`creds`], which the workspace file driver uses too); agent uids come
//! from [`uids`], kernel features from [`features`]; every signal to an agent process goes
//! through a pidfd ([`pidfd`]). The daemon's own cgroup bounds its memory
//! ([`daemon_memory`]) and weighs it above its agents for CPU
//! ([`daemon_cpu`]).

pub mod beneath;
pub mod binds;
pub mod bpf;
pub mod cgroup;
pub mod creds;
pub mod daemon_cpu;
pub mod daemon_memory;
pub mod features;
pub mod handoff;
pub mod ids;
pub mod landlock;
pub mod launch_server;
pub mod launcher;
pub mod mounts;
pub mod pidfd;
pub mod plan;
pub mod profile;
pub mod quota;
pub mod seccomp;
pub mod spawner;
pub mod uids;
