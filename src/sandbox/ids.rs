//! Launcher steps "capability bounding set", "ids" and "capabilities": the
//! agent's process ends with its own uid/gid, no supplementary groups and
//! every capability set empty.

use caps::{CapSet, Capability};
use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};

#[derive(Debug, thiserror::Error)]
pub enum IdsError {
    #[error("{0}: {1}")]
    Caps(&'static str, caps::errors::CapsError),
    #[error("{0}: {1}")]
    Sys(&'static str, #[source] nix::Error),
    #[error("capability set {0:?} still holds {1:?} after clearing")]
    Leftover(CapSet, Vec<Capability>),
    #[error("refusing to run an agent as uid/gid 0")]
    Root,
}

/// Empties the bounding set. Needs CAP_SETPCAP, so it runs before the uid
/// switch.
pub fn drop_bounding_set() -> Result<(), IdsError> {
    caps::clear(None, CapSet::Bounding).map_err(|e| IdsError::Caps("clear bounding set", e))
}

/// Drops supplementary groups, then gid, then uid (real, effective, saved).
pub fn switch_to(uid: u32, gid: u32) -> Result<(), IdsError> {
    if uid == 0 || gid == 0 {
        return Err(IdsError::Root);
    }
    setgroups(&[]).map_err(|e| IdsError::Sys("setgroups", e))?;
    let g = Gid::from_raw(gid);
    setresgid(g, g, g).map_err(|e| IdsError::Sys("setresgid", e))?;
    let u = Uid::from_raw(uid);
    setresuid(u, u, u).map_err(|e| IdsError::Sys("setresuid", e))
}

/// Clears every remaining capability set and checks that all are empty.
pub fn clear_all_capabilities() -> Result<(), IdsError> {
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(|e| IdsError::Caps("clear", e))?;
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
        CapSet::Bounding,
    ] {
        let left = caps::read(None, set).map_err(|e| IdsError::Caps("read", e))?;
        if !left.is_empty() {
            return Err(IdsError::Leftover(set, left.into_iter().collect()));
        }
    }
    Ok(())
}
