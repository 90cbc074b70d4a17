//! The admin socket: the JSON-lines protocol the `agentos` CLI speaks, the
//! daemon's server with peer-credential authorisation, and a client.

pub mod client;
pub mod conns;
pub mod hostcopy;
pub mod owners;
pub mod protocol;
pub mod server;
