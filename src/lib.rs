//! AgentOS: a Linux supervisor that runs LLM agents as confined processes.
//!
//! Module map (see docs/ARCHITECTURE.md):
//! - [`abi`]: the fd-3 syscall protocol — framing, call names, error codes.
//! - [`sandbox`]: profiles and seccomp policies, the launch plan, the
//!   launcher's confinement steps, cgroups and agent uids.
//! - [`drivers`]: the services syscalls act on (workspace files, the
//!   fetcher, command execution, the memory store); they never see the
//!   kernel.
//! - [`kernel`]: the process table and store, spawning and reaping, the
//!   per-agent connection, the dispatcher and the syscall handlers.
//! - [`admin`]: the admin socket protocol, server and client.
//! - [`webhook_listener`]: the webhook HTTP listener, a second front door.
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
pub mod webhook_listener;
