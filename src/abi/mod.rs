//! The fd-3 syscall ABI: newline-delimited JSON requests and replies, the
//! call names and their arguments, and the closed set of error codes.

pub mod calls;
pub mod chat;
pub mod errno;
pub mod limits;
pub mod schema;
#[cfg(test)]
pub(crate) mod test_rng;
pub mod wire;

pub use errno::{Errno, SysError};
