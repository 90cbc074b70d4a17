//! MEM_WRITE and MEM_READ: the memory store ([`crate::drivers::memory`])
//! on the collection the call names, once the caller may use it
//! ([`memory::authorize`], from its pid, its profile's `[memory] shared`
//! list and its MEM_SHARED permission).

use crate::abi::SysError;
use crate::abi::calls::Call;
use crate::drivers::memory::{self, Collection, Hit, Quota, ReadArgs, WriteArgs};
use crate::kernel::Kernel;
use crate::kernel::pcb::Pcb;
use crate::sandbox::profile::DEFAULT_SHARED_BYTES;
use serde_json::{Value, json};
use std::sync::Arc;

/// MEM_WRITE.
pub async fn mem_write(k: &Arc<Kernel>, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
    let a = WriteArgs::parse(args)?;
    let coll = resolve_collection(k, pcb, a.collection.as_deref())?;
    // The private collection is bounded by the agent's memory_store_bytes,
    // a shared one by its profile's [memory] shared_bytes.
    let quota = match coll {
        Collection::Agent(_) => Quota {
            bytes: pcb.limits.memory_store_bytes,
            limit: "memory_store_bytes",
        },
        Collection::Shared(_) => Quota {
            bytes: k
                .profiles
                .get(&pcb.profile)
                .map_or(DEFAULT_SHARED_BYTES, |p| p.memory.shared_bytes),
            limit: "[memory] shared_bytes",
        },
    };
    k.memory
        .write(&coll, &a.key, &a.value, &a.metadata, quota)
        .await?;
    Ok(json!({"key": a.key, "collection": coll.name()}))
}

/// MEM_READ.
pub async fn mem_read(k: &Arc<Kernel>, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
    let a = ReadArgs::parse(args)?;
    let coll = resolve_collection(k, pcb, a.collection.as_deref())?;
    let hits = k.memory.search(&coll, &a.query, a.k).await?;
    Ok(json!({"results": hits.iter().map(Hit::to_json).collect::<Vec<_>>()}))
}

/// The collection a call names, if the caller may use it. A profile that
/// is gone shares nothing.
fn resolve_collection(k: &Kernel, pcb: &Pcb, name: Option<&str>) -> Result<Collection, SysError> {
    let shared = k
        .profiles
        .get(&pcb.profile)
        .map(|p| p.memory.shared.clone())
        .unwrap_or_default();
    memory::authorize(
        pcb.pid,
        &pcb.profile,
        &shared,
        pcb.may(Call::MEM_SHARED),
        name,
    )
}
