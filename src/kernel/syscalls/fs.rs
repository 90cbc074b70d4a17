//! FS_READ, FS_WRITE, FS_LIST and FS_DELETE: the file driver
//! ([`crate::drivers::fs`]) acting in the caller's workspace, opened when
//! the agent started and kept in its live handle.
//!
//! The driver blocks and switches the thread's filesystem credentials, so
//! every operation runs on the blocking pool.

use crate::abi::SysError;
use crate::drivers::fs::{self, Workspace};
use crate::kernel::Kernel;
use crate::kernel::pcb::Pcb;
use serde_json::Value;
use std::sync::Arc;

/// One file operation of the driver.
type FileOp = fn(&Workspace, &Value) -> Result<Value, SysError>;

/// FS_READ.
pub async fn fs_read(k: &Arc<Kernel>, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
    in_workspace(k, pcb, args, fs::fs_read).await
}

/// FS_WRITE.
pub async fn fs_write(k: &Arc<Kernel>, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
    in_workspace(k, pcb, args, fs::fs_write).await
}

/// FS_LIST.
pub async fn fs_list(k: &Arc<Kernel>, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
    in_workspace(k, pcb, args, fs::fs_list).await
}

/// FS_DELETE.
pub async fn fs_delete(k: &Arc<Kernel>, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
    in_workspace(k, pcb, args, fs::fs_delete).await
}

/// Runs `op` in the caller's workspace on the blocking pool.
async fn in_workspace(k: &Kernel, pcb: &Pcb, args: &Value, op: FileOp) -> Result<Value, SysError> {
    let live = k
        .live
        .get(pcb.pid)
        .ok_or_else(|| SysError::srch("agent is not running"))?;
    let ws = live.workspace.clone();
    let args = args.clone();
    tokio::task::spawn_blocking(move || op(&ws, &args))
        .await
        .map_err(|e| SysError::io(format!("file operation failed: {e}")))?
}
