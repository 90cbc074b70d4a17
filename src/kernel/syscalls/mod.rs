//! The syscall handlers: [`handle`] checks the caller's permission and
//! routes a call to its handler.
//!
//! Every handler has the same shape: `(kernel, caller's PCB, arguments) →
//! Result<Value, SysError>`; handlers that wait are `async`, the others
//! are plain functions. They live by subject:
//!
//! | calls | file |
//! |---|---|
//! | FS_READ, FS_WRITE, FS_LIST, FS_DELETE | [`fs`] |
//! | NET_FETCH | [`net`] |
//! | EXEC_CMD | [`exec`] |
//! | MEM_WRITE, MEM_READ | [`memory`] |
//! | SYS_REGISTER_WEBHOOK, SYS_WEBHOOK_REPLY | [`webhooks`] |
//! | SEND_MSG, RECV_MSG, SYS_WRITE_STDOUT, SYS_READ_STDIN | [`super::ipc`] |
//! | SYS_SCHEDULE | [`super::timers`] |
//! | LLM_INFER, AGENT_INFO | [`super::infer`] |
//! | GETPID, SYS_EXIT, SPAWN_AGENT, WAIT, KILL, PS, SLEEP | [`super::process`] |
//!
//! A handler takes what the call acts on from the kernel (the agent's
//! profile, its open workspace, the memory store, …) and hands it, with
//! plain arguments, to the driver that does the work (`crate::drivers`);
//! drivers never see the kernel. The dispatcher (`super::dispatch`)
//! journals the call and waits for durability around [`handle`].

pub mod exec;
pub mod fs;
pub mod memory;
pub mod net;
pub mod webhooks;

use super::Kernel;
use super::pcb::Pcb;
use crate::abi::calls::Call;
use crate::abi::{Errno, SysError};
use crate::sandbox::profile::Profile;
use serde_json::Value;
use std::sync::Arc;

/// Runs `call` for the agent `pcb`: refuses it without the permission or
/// with arguments that are not an object, else runs its handler.
pub async fn handle(
    k: &Arc<Kernel>,
    call: Call,
    pcb: &Pcb,
    args: &Value,
) -> Result<Value, SysError> {
    if !pcb.may(call) {
        return Err(SysError::acces(format!(
            "permission denied for syscall {}",
            call.name()
        )));
    }
    if !args.is_object() {
        return Err(SysError::inval(format!(
            "bad arguments for {}: args must be a JSON object",
            call.name()
        )));
    }
    match call {
        Call::GETPID => k.sys_getpid(pcb, args),
        Call::SYS_EXIT => k.sys_exit(pcb, args).await,
        Call::SPAWN_AGENT => k.sys_spawn(pcb, args).await,
        Call::WAIT => k.sys_wait(pcb, args).await,
        Call::KILL => k.sys_kill(pcb, args),
        Call::PS => k.sys_ps(pcb, args),
        Call::SLEEP => k.sys_sleep(pcb, args).await,
        Call::SEND_MSG => super::ipc::send_msg(k, pcb, args),
        Call::RECV_MSG => super::ipc::recv_msg(k, pcb, args).await,
        Call::SYS_WRITE_STDOUT => super::ipc::write_stdout(k, pcb, args),
        Call::SYS_READ_STDIN => super::ipc::read_stdin(k, pcb, args).await,
        Call::FS_READ => fs::fs_read(k, pcb, args).await,
        Call::FS_WRITE => fs::fs_write(k, pcb, args).await,
        Call::FS_LIST => fs::fs_list(k, pcb, args).await,
        Call::FS_DELETE => fs::fs_delete(k, pcb, args).await,
        Call::LLM_INFER => super::infer::llm_infer(k, pcb, args).await,
        Call::AGENT_INFO => super::infer::agent_info(k, pcb, args),
        Call::NET_WRITE | Call::MEM_SHARED => Err(SysError::new(
            Errno::ENOSYS,
            format!("{} is a permission, not a syscall", call.name()),
        )),
        Call::SYS_SCHEDULE => super::timers::schedule(k, pcb, args),
        Call::EXEC_CMD => exec::exec_cmd(k, pcb, args).await,
        Call::NET_FETCH => net::net_fetch(k, pcb, args).await,
        Call::MEM_WRITE => memory::mem_write(k, pcb, args).await,
        Call::MEM_READ => memory::mem_read(k, pcb, args).await,
        Call::SYS_REGISTER_WEBHOOK => webhooks::register_webhook(k, pcb, args),
        Call::SYS_WEBHOOK_REPLY => webhooks::webhook_reply(k, pcb, args),
    }
}

/// The caller's profile. It can only be missing when the policies changed
/// under a running agent: EIO, the message starting with `context`.
fn caller_profile<'k>(k: &'k Kernel, pcb: &Pcb, context: &str) -> Result<&'k Profile, SysError> {
    k.profiles
        .get(&pcb.profile)
        .map_err(|e| SysError::io(format!("{context}: {e}")))
}
