//! Launcher step "landlock": read/execute on the read-only binds, /etc and
//! /proc; read/write on /workspace, /tmp and the device nodes; listing
//! directories (so `ls /` works); nothing else.
//! TCP and scoped IPC (abstract Unix sockets, signals) are denied where the
//! kernel supports it. The profile's minimum ABI is a hard requirement: on a
//! kernel below it the agent does not start.

use super::plan::LaunchPlan;
use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, path_beneath_rules,
};

/// The newest ABI this build knows; newer kernel features are used best-effort.
const NEWEST: ABI = ABI::V10;

#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("profile asks for Landlock ABI {0}, which this build does not know")]
    UnknownAbi(u8),
    #[error("{0}")]
    Ruleset(#[from] landlock::RulesetError),
    #[error(
        "the kernel did not enforce the Landlock ruleset (Landlock disabled or unsupported); refusing to run unconfined"
    )]
    NotEnforced,
}

pub fn abi_from(n: u8) -> Option<ABI> {
    Some(match n {
        1 => ABI::V1,
        2 => ABI::V2,
        3 => ABI::V3,
        4 => ABI::V4,
        5 => ABI::V5,
        6 => ABI::V6,
        7 => ABI::V7,
        8 => ABI::V8,
        9 => ABI::V9,
        10 => ABI::V10,
        _ => return None,
    })
}

/// Restricts the calling process. Paths are as seen after pivot_root.
pub fn restrict(plan: &LaunchPlan) -> Result<(), LandlockError> {
    let min =
        abi_from(plan.landlock_min_abi).ok_or(LandlockError::UnknownAbi(plan.landlock_min_abi))?;
    let mut read_exec: Vec<&std::path::Path> = plan
        .ro_binds
        .iter()
        .chain(&plan.extra_ro)
        .map(|p| p.as_path())
        .collect();
    read_exec.push("/etc".as_ref());
    read_exec.push("/proc".as_ref());
    let read_write = ["/workspace", "/tmp"];
    let device_access = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate;

    let status = Ruleset::default()
        // What the profile requires must be enforced, or the step fails.
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(min))?
        // What newer kernels add is taken when available.
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(NEWEST))?
        .handle_access(AccessNet::from_all(NEWEST))?
        .scope(Scope::from_all(NEWEST))?
        .create()?
        .add_rules(path_beneath_rules(read_exec, AccessFs::from_read(NEWEST)))?
        .add_rules(path_beneath_rules(read_write, AccessFs::from_all(NEWEST)))?
        .add_rules(path_beneath_rules(&plan.dev, device_access))?
        // Listing directories anywhere (`ls /`): the root is the sandbox's
        // own tmpfs of mount points, and everything else listable beneath
        // it is readable already.
        .add_rules(path_beneath_rules(["/"], AccessFs::ReadDir))?
        .restrict_self()?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err(LandlockError::NotEnforced);
    }
    Ok(())
}
