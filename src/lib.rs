//! AgentOS: a Linux supervisor that runs LLM agents as confined processes.
//!
//! Module map (see DESIGN.md §9 and docs/ARCHITECTURE.md):
//! - [`abi`]: the fd-3 syscall protocol — framing, call names, error codes.
//! - [`sandbox`]: profiles and seccomp policies, the launch plan, the
//!   launcher's confinement steps, cgroups and agent uids.
//! - [`kernel`]: the process table and store, spawning and reaping, the
//!   per-agent connection and the syscall dispatcher.
//! - [`drivers`]: what syscalls act on (the workspace file driver).
//! - [`admin`]: the admin socket protocol, server and client.
//! - [`daemon`]: `agentosd`'s command line and start-up.

#![warn(clippy::unwrap_used)]

pub mod abi;
pub mod admin;
pub mod config;
pub mod daemon;
pub mod drivers;
pub mod kernel;
pub mod llm;
pub mod notify;
pub mod runtime;
pub mod sandbox;
pub mod terminal;
