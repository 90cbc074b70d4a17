//! The runtime's blocking client of the fd-3 syscall socket. The runtime is
//! single-threaded and makes one call at a time, so replies arrive in order.

use crate::abi::wire::{Reply, Status};
use crate::abi::{Errno, SysError};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;

pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Client {
    /// Takes over fd 3, the agent's syscall socket.
    pub fn from_fd3() -> std::io::Result<Client> {
        // SAFETY: fd 3 is the syscall socket the launcher installed for this
        // process (the ABI's contract); nothing else in the runtime owns it.
        let stream = unsafe { UnixStream::from_raw_fd(3) };
        let writer = stream.try_clone()?;
        Ok(Client {
            reader: BufReader::new(stream),
            writer,
            next_id: 0,
        })
    }

    /// Makes one syscall and waits for its reply.
    pub fn call(&mut self, call: &str, args: &Value) -> Result<Value, SysError> {
        self.next_id += 1;
        let id = self.next_id;
        let mut line = serde_json::to_vec(&json!({"id": id, "call": call, "args": args}))
            .map_err(|e| SysError::inval(e.to_string()))?;
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .map_err(|e| SysError::new(Errno::EIO, format!("fd 3: {e}")))?;
        loop {
            let mut text = String::new();
            let n = self
                .reader
                .read_line(&mut text)
                .map_err(|e| SysError::new(Errno::EIO, format!("fd 3: {e}")))?;
            if n == 0 {
                return Err(SysError::new(Errno::EIO, "the supervisor closed fd 3"));
            }
            let reply: Reply = serde_json::from_str(&text)
                .map_err(|e| SysError::new(Errno::EIO, format!("unreadable reply: {e}")))?;
            if reply.id != json!(id) {
                continue;
            }
            return match reply.status {
                Status::Success => Ok(reply.result.unwrap_or(Value::Null)),
                Status::Error => Err(reply
                    .error
                    .unwrap_or_else(|| SysError::new(Errno::EIO, "error without details"))),
            };
        }
    }
}
