//! Seccomp policies: compiled by the daemon from `policies/seccomp/*.json`
//! (seccompiler's JSON format), shipped to the launcher as raw BPF inside the
//! launch plan, and installed by the launcher as the last step before exec.
//!
//! A profile's policy file holds the filter `agent` (the allowlist) and
//! optionally `clone3` (turns clone3 into ENOSYS so libc falls back to
//! clone, whose flags the allowlist can inspect); they are installed in that
//! order. `runtime.json` holds `runtime`, the stricter filter the built-in
//! LLM runtime stacks on top once it has started.
//! Every compiled program gets a prefix that kills x32 system calls
//! (`nr & 0x40000000`); seccompiler itself kills foreign-architecture calls.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Filter names in installation order.
pub const FILTER_ORDER: [&str; 3] = ["agent", "clone3", "runtime"];

const X32_SYSCALL_BIT: u32 = 0x4000_0000;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("does not compile: {0}")]
    Compile(String),
    #[error("filter {0:?} is missing")]
    Missing(&'static str),
    #[error("unexpected filter {0:?} (allowed: agent, clone3, runtime)")]
    Unexpected(String),
    #[error("filter too long for the kernel ({0} instructions)")]
    TooLong(usize),
    #[error("installing the filter failed: {0}")]
    Install(std::io::Error),
}

/// One BPF instruction, in a form that serializes into the launch plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Insn(pub u16, pub u8, pub u8, pub u32);

/// Compiled filters, in installation order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filters {
    pub programs: Vec<Vec<Insn>>,
}

/// Compiles a policy file for the running architecture.
pub fn compile_file(path: &Path) -> Result<Filters, SeccompError> {
    let text =
        std::fs::read(path).map_err(|e| SeccompError::Read(path.display().to_string(), e))?;
    compile(&text)
}

/// Compiles a profile's policy (it must hold the `agent` allowlist).
pub fn compile(json: &[u8]) -> Result<Filters, SeccompError> {
    if !serde_json::from_slice::<serde_json::Value>(json)
        .map(|v| v.get(FILTER_ORDER[0]).is_some())
        .unwrap_or(true)
    {
        return Err(SeccompError::Missing(FILTER_ORDER[0]));
    }
    compile_any(json)
}

/// Compiles a policy holding any of the known filters.
pub fn compile_any(json: &[u8]) -> Result<Filters, SeccompError> {
    let arch = seccompiler::TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| SeccompError::Compile(format!("{e:?}")))?;
    let mut map = seccompiler::compile_from_json(json, arch)
        .map_err(|e| SeccompError::Compile(e.to_string()))?;
    if let Some(extra) = map.keys().find(|k| !FILTER_ORDER.contains(&k.as_str())) {
        return Err(SeccompError::Unexpected(extra.clone()));
    }
    let mut programs = Vec::new();
    for name in FILTER_ORDER {
        if let Some(prog) = map.remove(name) {
            let mut insns = x32_kill_prefix();
            insns.extend(prog.iter().map(|f| Insn(f.code, f.jt, f.jf, f.k)));
            if insns.len() > u16::MAX as usize {
                return Err(SeccompError::TooLong(insns.len()));
            }
            programs.push(insns);
        }
    }
    if programs.is_empty() {
        return Err(SeccompError::Missing(FILTER_ORDER[0]));
    }
    Ok(Filters { programs })
}

/// `if (nr & X32_SYSCALL_BIT) return KILL_PROCESS;` — then falls through to
/// the compiled program, which starts by loading the architecture itself.
fn x32_kill_prefix() -> Vec<Insn> {
    const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const BPF_JMP_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
    const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    const SECCOMP_DATA_NR: u32 = 0;
    vec![
        Insn(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_NR),
        Insn(BPF_JMP_JSET_K, 0, 1, X32_SYSCALL_BIT),
        Insn(BPF_RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
    ]
}

/// Installs the filters on the calling thread (no_new_privs must be set).
/// Used by the launcher only.
pub fn install(filters: &Filters) -> Result<(), SeccompError> {
    for program in &filters.programs {
        let bpf: Vec<libc::sock_filter> = program
            .iter()
            .map(|i| libc::sock_filter {
                code: i.0,
                jt: i.1,
                jf: i.2,
                k: i.3,
            })
            .collect();
        let prog = libc::sock_fprog {
            len: bpf.len() as u16,
            filter: bpf.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points at `bpf`, which outlives the call; the kernel
        // copies the program and keeps no reference to our memory.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(SeccompError::Install(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_starts_with_the_x32_kill() {
        let f = compile(
            br#"{"agent": {"mismatch_action": {"errno": 1}, "match_action": "allow",
                 "filter": [{"syscall": "read"}]}}"#,
        )
        .expect("compiles");
        assert_eq!(f.programs.len(), 1);
        assert_eq!(f.programs[0][..3], x32_kill_prefix()[..]);
    }

    #[test]
    fn the_shipped_policies_compile() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/seccomp");
        let agent = compile_file(&dir.join("agent.json")).expect("agent.json");
        assert_eq!(agent.programs.len(), 2, "agent + clone3");
        let runtime = std::fs::read(dir.join("runtime.json")).expect("runtime.json");
        assert!(
            compile(&runtime).is_err(),
            "runtime.json is not a profile policy"
        );
        assert_eq!(
            compile_any(&runtime).expect("runtime.json").programs.len(),
            1
        );
    }

    #[test]
    fn missing_and_unexpected_filters_are_refused() {
        let none = compile(br#"{"clone3": {"mismatch_action": "allow", "match_action": {"errno": 38}, "filter": [{"syscall": "clone3"}]}}"#);
        assert!(matches!(none, Err(SeccompError::Missing("agent"))));
        let extra = compile(
            br#"{"agent": {"mismatch_action": {"errno": 1}, "match_action": "allow", "filter": [{"syscall": "read"}]},
                 "x": {"mismatch_action": {"errno": 1}, "match_action": "allow", "filter": [{"syscall": "read"}]}}"#,
        );
        assert!(matches!(extra, Err(SeccompError::Unexpected(_))));
        assert!(matches!(compile(b"{"), Err(SeccompError::Compile(_))));
    }
}
