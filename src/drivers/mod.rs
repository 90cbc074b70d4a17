//! Drivers: what syscalls act on outside the supervisor's own tables.

pub mod creds;
pub mod fs;
pub mod exec;
pub mod net;
