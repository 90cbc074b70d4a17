//! NET_FETCH: the fetcher ([`crate::drivers::net`]) under the `[net]`
//! rules of the caller's profile, with POST, PUT, PATCH and DELETE when the
//! caller holds NET_WRITE.

use crate::abi::SysError;
use crate::abi::calls::Call;
use crate::drivers::net;
use crate::kernel::Kernel;
use crate::kernel::pcb::Pcb;
use serde_json::Value;
use std::sync::Arc;

/// NET_FETCH.
pub async fn net_fetch(k: &Arc<Kernel>, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
    let profile = super::caller_profile(k, pcb, "NET_FETCH")?;
    net::fetch(&profile.net, pcb.may(Call::NET_WRITE), args).await
}
