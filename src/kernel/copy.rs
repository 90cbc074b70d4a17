//! `agentos cp`: the operator copies files into a running agent's
//! workspace, or out of any agent's workspace (running or ended; an ended
//! agent's workspace stays until its record is removed). The file driver
//! does the work as the agent ([`crate::drivers::fs::copy_in`],
//! [`crate::drivers::fs::copy_out`]); this module finds the workspace.

use crate::abi::SysError;
use crate::drivers::fs::{self, CopiedIn, CopiedOut, CopyEntry, Workspace};
use crate::kernel::Kernel;
use crate::kernel::pcb::Pcb;
use std::path::Path;
use std::sync::Arc;

impl Kernel {
    /// Writes `entries` into the workspace of the running agent `pcb`.
    pub async fn copy_in(&self, pcb: &Pcb, entries: Vec<CopyEntry>) -> Result<CopiedIn, SysError> {
        let Some(live) = self.live.get(pcb.pid) else {
            return Err(SysError::srch(format!(
                "agent {} is not running: files are copied only into a running agent's \
                 workspace (`agentos spawn --copy` seeds a new one; copying out of an \
                 ended agent works)",
                pcb.pid
            )));
        };
        let ws = live.workspace.clone();
        blocking(move || fs::copy_in(&ws, &entries)).await
    }

    /// Reads the file or tree at `path` out of the workspace of `pcb`.
    pub async fn copy_out(&self, pcb: &Pcb, path: String) -> Result<CopiedOut, SysError> {
        let ws = match self.live.get(pcb.pid) {
            Some(live) => live.workspace.clone(),
            None => {
                let dir = Path::new(&pcb.workspace);
                let opened = Workspace::open(dir, pcb.uid, pcb.gid, super::spawn::fs_limits(pcb))
                    .map_err(|e| {
                    SysError::from_io(&e, &format!("workspace of agent {}", pcb.pid))
                })?;
                Arc::new(opened)
            }
        };
        blocking(move || fs::copy_out(&ws, &path)).await
    }
}

/// Runs a file-driver operation (blocking, switching credentials) on the
/// blocking pool.
async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> Result<T, SysError> + Send + 'static,
) -> Result<T, SysError> {
    tokio::task::spawn_blocking(op)
        .await
        .map_err(|e| SysError::io(format!("copy failed: {e}")))?
}
