//! Classic BPF for seccomp: the compact form of an allowlist and a small
//! interpreter that tests use to prove it equivalent.
//!
//! seccompiler emits five instructions per allowed system call and the
//! kernel converts and JIT-compiles every one of them at each sandbox's
//! `seccomp()` call (about half a millisecond for the agent allowlist).
//! [`range_allowlist`] instead allows the calls that have no argument
//! conditions with two comparisons per run of consecutive numbers, and
//! leaves only the calls with argument conditions to seccompiler's code,
//! which follows unchanged.

use serde::{Deserialize, Serialize};

/// One BPF instruction (`code`, `jt`, `jf`, `k` of `struct sock_filter`),
/// in a form that serializes into the launch plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Insn(pub u16, pub u8, pub u8, pub u32);

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const BPF_JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const BPF_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const BPF_JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
const BPF_AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
/// Offsets in `struct seccomp_data`.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;

/// The system call numbers allowed by a seccompiler program whose rules all
/// lack argument conditions, read back from its code: after the
/// architecture check and the load of the number, one chain per call of
/// exactly `JEQ nr,0,1; JA 1; JA 2; RET match; RET mismatch`, then
/// `RET mismatch`. None if the program has any other shape.
pub fn unconditional_numbers(program: &[Insn]) -> Option<Vec<u32>> {
    let body = program.get(arch_check_len(program)?..)?;
    let (load, mut rest) = body.split_first()?;
    if *load != Insn(BPF_LD_W_ABS, 0, 0, NR_OFFSET) {
        return None;
    }
    let mut numbers = Vec::new();
    while rest.len() > 1 {
        let (chain, tail) = rest.split_at_checked(5)?;
        let empty_chain = chain[0].0 == BPF_JEQ_K
            && (chain[0].1, chain[0].2) == (0, 1)
            && chain[1] == Insn(BPF_JA, 0, 0, 1)
            && chain[2] == Insn(BPF_JA, 0, 0, 2)
            && chain[3].0 == BPF_RET_K
            && chain[4].0 == BPF_RET_K;
        if !empty_chain {
            return None;
        }
        numbers.push(chain[0].3);
        rest = tail;
    }
    (rest.len() == 1 && rest[0].0 == BPF_RET_K).then_some(numbers)
}

/// Length of seccompiler's leading architecture check
/// (`LD arch; JEQ arch,1,0; RET kill`), if the program starts with one.
pub fn arch_check_len(program: &[Insn]) -> Option<usize> {
    let head = program.get(..3)?;
    let ok = head[0] == Insn(BPF_LD_W_ABS, 0, 0, ARCH_OFFSET)
        && head[1].0 == BPF_JEQ_K
        && (head[1].1, head[1].2) == (1, 0)
        && head[2].0 == BPF_RET_K;
    ok.then_some(3)
}

/// A program that returns ALLOW for every number in `allowed` and runs
/// `rest` (a complete seccompiler program starting with its architecture
/// check) for every other call. The architecture is checked first, with
/// `rest`'s own check. None when `rest` lacks that check or there are too
/// many runs for 8-bit jump offsets.
pub fn range_allowlist(allowed: &[u32], rest: &[Insn]) -> Option<Vec<Insn>> {
    let arch_check = rest.get(..arch_check_len(rest)?)?;
    let runs = runs(allowed);
    let r = runs.len();
    if r == 0 || 2 * r > u8::MAX as usize {
        return None;
    }
    let mut out = arch_check.to_vec();
    out.push(Insn(BPF_LD_W_ABS, 0, 0, NR_OFFSET));
    // Runs ascend: a number below run i is below every later run too, so
    // it goes straight to `rest`. Run i is at 2i and 2i+1 of the block,
    // ALLOW at 2r, `rest` from 2r+1. Offsets count from the next insn.
    for (i, &(lo, hi)) in runs.iter().enumerate() {
        let to_rest_from_jge = (2 * r - 2 * i) as u8;
        let to_allow_from_jgt = (2 * r - 2 * i - 2) as u8;
        let above = if i + 1 < r { 0 } else { 1 };
        out.push(Insn(BPF_JGE_K, 0, to_rest_from_jge, lo));
        out.push(Insn(BPF_JGT_K, above, to_allow_from_jgt, hi));
    }
    out.push(Insn(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ALLOW));
    out.extend_from_slice(rest);
    Some(out)
}

/// Sorted, merged runs of consecutive numbers.
fn runs(numbers: &[u32]) -> Vec<(u32, u32)> {
    let mut sorted = numbers.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for n in sorted {
        match out.last_mut() {
            Some((_, hi)) if *hi + 1 == n => *hi = n,
            _ => out.push((n, n)),
        }
    }
    out
}

/// What a program returns for one `seccomp_data` (nr, arch, six
/// arguments), for the instructions seccomp filters here use. None on
/// anything else or on a jump out of the program.
pub fn run(program: &[Insn], nr: u32, arch: u32, args: [u64; 6]) -> Option<u32> {
    let word = |offset: u32| -> Option<u32> {
        match offset {
            NR_OFFSET => Some(nr),
            ARCH_OFFSET => Some(arch),
            16..=63 => {
                let arg = args[((offset - 16) / 8) as usize];
                Some(if offset % 8 == 0 {
                    arg as u32
                } else {
                    (arg >> 32) as u32
                })
            }
            _ => None,
        }
    };
    let mut acc = 0u32;
    let mut pc = 0usize;
    loop {
        let Insn(code, jt, jf, k) = *program.get(pc)?;
        let next = pc + 1;
        let jump = |taken: bool| next + if taken { jt } else { jf } as usize;
        pc = match code {
            BPF_LD_W_ABS => {
                acc = word(k)?;
                next
            }
            BPF_AND_K => {
                acc &= k;
                next
            }
            BPF_JEQ_K => jump(acc == k),
            BPF_JGE_K => jump(acc >= k),
            BPF_JGT_K => jump(acc > k),
            BPF_JSET_K => jump(acc & k != 0),
            BPF_JA => next + k as usize,
            BPF_RET_K => return Some(k),
            _ => return None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_consecutive_numbers() {
        assert_eq!(runs(&[5, 1, 2, 3, 9, 2]), vec![(1, 3), (5, 5), (9, 9)]);
    }

    #[test]
    fn the_range_block_allows_exactly_its_numbers() {
        const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;
        let rest = vec![
            Insn(BPF_LD_W_ABS, 0, 0, ARCH_OFFSET),
            Insn(BPF_JEQ_K, 1, 0, 7),
            Insn(BPF_RET_K, 0, 0, KILL),
            Insn(BPF_RET_K, 0, 0, 99),
        ];
        let allowed = [0, 1, 2, 10, 12, 13, 40];
        let prog = range_allowlist(&allowed, &rest).expect("compact");
        for nr in 0..64 {
            let want = if allowed.contains(&nr) {
                libc::SECCOMP_RET_ALLOW
            } else {
                99
            };
            assert_eq!(run(&prog, nr, 7, [0; 6]), Some(want), "nr {nr}");
            assert_eq!(run(&prog, nr, 8, [0; 6]), Some(KILL), "foreign arch");
        }
    }
}
