//! A small blocking client of the admin socket, used by the `agentos` CLI
//! and by the integration tests.

use super::protocol::{AdminRequest, AdminResponse};
use crate::abi::SysError;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to {path}: {source} (is agentosd running? set --socket or AGENTOS_SOCKET)"
    )]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("admin socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("the daemon sent something unreadable: {0}")]
    Protocol(String),
    #[error("the request could not be encoded: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("the daemon sent something unreadable: {source}: {line}")]
    Decode {
        source: serde_json::Error,
        line: String,
    },
    #[error("the daemon closed the connection")]
    Closed,
    /// The daemon refused or failed the request.
    #[error("{0}")]
    Refused(SysError),
}

pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let s = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.display().to_string(),
            source,
        })?;
        let writer = s.try_clone()?;
        Ok(Client {
            reader: BufReader::new(s),
            writer,
        })
    }

    /// Writes one request line. A daemon that refuses a line (e.g. one
    /// over `max_request_bytes`) answers and closes before it has read it
    /// all: the write then fails, and its answer is what is returned.
    fn send(&mut self, req: &AdminRequest) -> Result<(), ClientError> {
        let mut line = serde_json::to_vec(req).map_err(ClientError::Encode)?;
        line.push(b'\n');
        match self.writer.write_all(&line) {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                match self.read() {
                    Ok(AdminResponse {
                        error: Some(refusal),
                        ..
                    }) => Err(ClientError::Refused(refusal)),
                    _ => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    fn read(&mut self) -> Result<AdminResponse, ClientError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(ClientError::Closed);
        }
        serde_json::from_str(&line).map_err(|source| ClientError::Decode { source, line })
    }

    /// Sends a request and returns its result.
    pub fn call(&mut self, req: &AdminRequest) -> Result<Value, ClientError> {
        self.send(req)?;
        let resp = self.read()?;
        match (resp.ok, resp.error) {
            (false, Some(e)) => Err(ClientError::Refused(e)),
            (false, None) => Err(ClientError::Protocol("error without details".into())),
            (true, _) => Ok(resp.result.unwrap_or(Value::Null)),
        }
    }

    /// Sends a request for a page (`inbox`, `logs`, `audit`) and returns
    /// its result and how many earlier entries the page left out (None from
    /// a daemon that does not page).
    pub fn call_paged(&mut self, req: &AdminRequest) -> Result<(Value, Option<u64>), ClientError> {
        self.send(req)?;
        let resp = self.read()?;
        match (resp.ok, resp.error) {
            (false, Some(e)) => Err(ClientError::Refused(e)),
            (false, None) => Err(ClientError::Protocol("error without details".into())),
            (true, _) => Ok((resp.result.unwrap_or(Value::Null), resp.skipped)),
        }
    }

    /// Sends a streaming request and calls `each` for every event until the
    /// stream ends.
    pub fn stream(
        &mut self,
        req: &AdminRequest,
        mut each: impl FnMut(crate::kernel::journal::LogEvent) -> bool,
    ) -> Result<(), ClientError> {
        self.send(req)?;
        loop {
            let resp = self.read()?;
            if let Some(e) = resp.error {
                return Err(ClientError::Refused(e));
            }
            if resp.end {
                return Ok(());
            }
            if let Some(ev) = resp.event {
                if !each(ev) {
                    return Ok(());
                }
            }
        }
    }
}
