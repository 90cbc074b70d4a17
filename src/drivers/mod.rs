//! Drivers: the services syscalls act on outside the supervisor's own
//! tables. Each takes what it needs as plain arguments (ids, limits, the
//! caller's profile policy, configuration) and never sees the kernel; the
//! kernel's syscall handlers (`crate::kernel::syscalls`) call them.
//!
//! - [`fs`]: file operations in an agent's workspace, as the agent.
//! - [`net`]: the HTTP(S) fetcher, safe against request forgery.
//! - [`exec`]: commands in a fresh sandbox or a Docker container.
//! - [`memory`]: the semantic memory store and its embeddings.
//! - [`creds`]: per-thread filesystem credentials (from `crate::sandbox`).

pub use crate::sandbox::creds;
pub mod exec;
pub mod fs;
pub mod memory;
pub mod net;
