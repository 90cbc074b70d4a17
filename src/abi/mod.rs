//! The fd-3 syscall ABI: newline-delimited JSON requests and replies
//! ([`wire`]), the syscall table with the calls, their permissions and
//! typed arguments ([`calls`]), what models are told about them
//! ([`schema`], built with [`json_schema`]), the chat types of LLM_INFER
//! ([`chat`]), resource limits ([`limits`]) and the closed set of error
//! codes ([`errno`]). The ABI depends on nothing else in the crate.

pub mod calls;
pub mod chat;
pub mod errno;
pub mod json_schema;
pub mod limits;
pub mod schema;
#[cfg(test)]
pub(crate) mod test_rng;
pub mod wire;

pub use errno::{Errno, SysError};
