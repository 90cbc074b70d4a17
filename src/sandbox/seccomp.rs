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
//! An allowlist is installed in compact form ([`super::bpf`]): 169
//! instructions instead of seccompiler's 1,152 for `agent`, with a test
//! proving the same verdict for every call number.

use super::bpf::{self, Insn};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Filter names in installation order.
pub const FILTER_ORDER: [&str; 3] = ["agent", "clone3", "runtime"];

const X32_SYSCALL_BIT: u32 = 0x4000_0000;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("does not compile: {0}")]
    Compile(#[source] seccompiler::Error),
    #[error("does not compile: {0:?}")]
    Arch(#[source] seccompiler::BackendError),
    #[error("does not compile: {0}")]
    Json(#[source] serde_json::Error),
    #[error("filter {0:?} is missing")]
    Missing(&'static str),
    #[error("unexpected filter {0:?} (allowed: agent, clone3, runtime)")]
    Unexpected(String),
    #[error("filter too long for the kernel ({0} instructions)")]
    TooLong(usize),
    #[error("installing the filter failed: {0}")]
    Install(#[source] std::io::Error),
}

/// Compiled filters, in installation order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filters {
    pub programs: Vec<Vec<Insn>>,
}

/// Compiles a policy file for the running architecture.
pub fn compile_file(path: &Path) -> Result<Filters, SeccompError> {
    let text = std::fs::read(path).map_err(|source| SeccompError::Read {
        path: path.to_path_buf(),
        source,
    })?;
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
    let arch =
        seccompiler::TargetArch::try_from(std::env::consts::ARCH).map_err(SeccompError::Arch)?;
    let mut map = seccompiler::compile_from_json(json, arch).map_err(SeccompError::Compile)?;
    if let Some(extra) = map.keys().find(|k| !FILTER_ORDER.contains(&k.as_str())) {
        return Err(SeccompError::Unexpected(extra.clone()));
    }
    // Valid JSON: seccompiler just parsed it.
    let policy: serde_json::Value = serde_json::from_slice(json).map_err(SeccompError::Json)?;
    let mut programs = Vec::new();
    for name in FILTER_ORDER {
        if let Some(prog) = map.remove(name) {
            let plain: Vec<Insn> = prog.iter().map(|f| Insn(f.code, f.jt, f.jf, f.k)).collect();
            let body = match compact(&policy[name], arch)? {
                Some(c) if c.len() < plain.len() => c,
                _ => plain,
            };
            let mut insns = x32_kill_prefix();
            insns.extend(body);
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

/// The same filter in compact form (see [`super::bpf`]): an allowlist's
/// calls without argument conditions become range checks, the others keep
/// seccompiler's code. None when the filter is not an allowlist or has no
/// such calls (the plain program is used).
fn compact(
    filter: &serde_json::Value,
    arch: seccompiler::TargetArch,
) -> Result<Option<Vec<Insn>>, SeccompError> {
    if filter["match_action"] != "allow" {
        return Ok(None);
    }
    let rules = filter["filter"].as_array().cloned().unwrap_or_default();
    let has_args = |r: &serde_json::Value| r["args"].as_array().is_some_and(|a| !a.is_empty());
    let (conditional, plain): (Vec<_>, Vec<_>) = rules.into_iter().partition(has_args);
    if plain.is_empty() {
        return Ok(None);
    }
    let program_of = |rules: Vec<serde_json::Value>| -> Result<Vec<Insn>, SeccompError> {
        let mut f = filter.clone();
        f["filter"] = serde_json::Value::Array(rules);
        let json = serde_json::json!({ "f": f }).to_string();
        let mut map =
            seccompiler::compile_from_json(json.as_bytes(), arch).map_err(SeccompError::Compile)?;
        let prog = map.remove("f").unwrap_or_default();
        Ok(prog.iter().map(|f| Insn(f.code, f.jt, f.jf, f.k)).collect())
    };
    // A call listed both plainly and with conditions is allowed plainly.
    let plain_names: std::collections::BTreeSet<String> = plain
        .iter()
        .filter_map(|r| r["syscall"].as_str().map(str::to_string))
        .collect();
    let conditional = conditional
        .into_iter()
        .filter(|r| {
            r["syscall"]
                .as_str()
                .is_none_or(|n| !plain_names.contains(n))
        })
        .collect();
    let Some(numbers) = bpf::unconditional_numbers(&program_of(plain)?) else {
        return Ok(None);
    };
    if numbers.len() != plain_names.len() {
        return Ok(None);
    }
    Ok(bpf::range_allowlist(&numbers, &program_of(conditional)?))
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

    /// The compact program gives the same verdict as seccompiler's for every
    /// call number, on the native and a foreign architecture, with argument
    /// values that exercise each condition of the shipped policies.
    #[test]
    fn compact_programs_match_seccompiler_exactly() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/seccomp");
        let arch = seccompiler::TargetArch::try_from(std::env::consts::ARCH).expect("arch");
        let native = if cfg!(target_arch = "x86_64") {
            0xC000_003E
        } else {
            0xC000_00B7
        };
        let arg_sets: [[u64; 6]; 6] = [
            [0; 6],
            [1, 0, 0, 0, 0, 0],
            [u64::from(u32::MAX), 5, u64::from(u32::MAX), 0, 0, 0],
            [2, 0x5412, 0, 0, 0, 0],
            [0x4000_0000, 0x541C, 1, 0, 0, 0],
            [0x11, 0x5401, 0, 0, 0, 0],
        ];
        for file in ["agent.json", "runtime.json"] {
            let json = std::fs::read(dir.join(file)).expect("policy");
            let compacted = compile_any(&json).expect("compiles");
            let mut plain = seccompiler::compile_from_json(json.as_slice(), arch).expect("plain");
            let names: Vec<&str> = FILTER_ORDER
                .iter()
                .copied()
                .filter(|n| plain.contains_key(*n))
                .collect();
            for (name, compact) in names.iter().zip(&compacted.programs) {
                let reference: Vec<Insn> = plain
                    .remove(*name)
                    .expect("program")
                    .iter()
                    .map(|f| Insn(f.code, f.jt, f.jf, f.k))
                    .collect();
                if *name == "agent" {
                    assert!(
                        compact.len() * 3 < reference.len(),
                        "{file} {name}: {} instructions, not much below {}",
                        compact.len(),
                        reference.len()
                    );
                }
                for nr in (0..1024).chain([0x4000_0000, 0x4000_0001, u32::MAX]) {
                    for a in [native, 0x4000_0003] {
                        for args in arg_sets {
                            let want = bpf::run(&reference, nr, a, args);
                            let mut got = bpf::run(compact, nr, a, args);
                            if nr & X32_SYSCALL_BIT != 0 {
                                // The prefix kills x32 calls before anything else.
                                assert_eq!(got, Some(libc::SECCOMP_RET_KILL_PROCESS));
                                got = want;
                            }
                            assert!(want.is_some(), "reference program did not run");
                            assert_eq!(got, want, "{file} {name}: nr {nr} arch {a:#x} {args:?}");
                        }
                    }
                }
            }
        }
    }

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
