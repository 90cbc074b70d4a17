//! Drivers: what syscalls act on outside the supervisor's own tables.

pub use crate::sandbox::creds;
pub mod exec;
pub mod fs;
pub mod memory;
pub mod net;
pub mod webhooks;
