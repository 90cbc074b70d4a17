//! Readers of /proc and of the host shared by the agentos-bench sections:
//! CPU use of the daemon and of the machine over a window, /proc/meminfo
//! and /proc/<pid> fields (RSS, threads, fds, RLIMIT_NOFILE, PSS, parent),
//! the machine description of the JSON and the bench's RLIMIT_NOFILE.

use crate::stats::round;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Instant;

/// CPU counters of the daemon (all threads) and of the whole machine.
pub(crate) struct CpuSample {
    at: Instant,
    daemon_ticks: u64,
    total: u64,
    idle: u64,
}

/// CPU use between two samples: cores used by the daemon, share of the
/// machine busy.
#[derive(Clone, Copy)]
pub(crate) struct CpuUse {
    pub(crate) daemon_cores: f64,
    pub(crate) machine_busy: f64,
}

impl CpuUse {
    pub(crate) fn json(&self) -> Value {
        json!({"daemon_cores": round(self.daemon_cores), "machine_busy": round(self.machine_busy)})
    }

    /// Daemon CPU time per operation, at `rate` operations per second.
    pub(crate) fn per_op_us(&self, rate: f64) -> f64 {
        if rate > 0.0 {
            self.daemon_cores / rate * 1e6
        } else {
            0.0
        }
    }
}

impl CpuSample {
    pub(crate) fn take(pid: u32) -> CpuSample {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let daemon_ticks = stat
            .rfind(')')
            .map(|i| &stat[i + 2..])
            .map(|rest| {
                let f: Vec<&str> = rest.split_whitespace().collect();
                // utime and stime are fields 14 and 15 (11 and 12 after the command).
                f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                    + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            })
            .unwrap_or(0);
        let all = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu: Vec<u64> = all
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        CpuSample {
            at: Instant::now(),
            daemon_ticks,
            total: cpu.iter().sum(),
            idle: cpu.get(3).copied().unwrap_or(0) + cpu.get(4).copied().unwrap_or(0),
        }
    }

    pub(crate) fn since(&self, before: &CpuSample) -> CpuUse {
        // SAFETY: sysconf only reads a configuration value.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let secs = self.at.duration_since(before.at).as_secs_f64().max(1e-9);
        let total = self.total.saturating_sub(before.total).max(1) as f64;
        CpuUse {
            daemon_cores: self.daemon_ticks.saturating_sub(before.daemon_ticks) as f64 / hz / secs,
            machine_busy: 1.0 - self.idle.saturating_sub(before.idle) as f64 / total,
        }
    }
}

/// The number after `key:` in a /proc file of `key: value` lines (0 when
/// absent).
fn proc_field(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub(crate) fn meminfo_kib(key: &str) -> u64 {
    proc_field("/proc/meminfo", key)
}

/// /proc/meminfo lines whose growth per agent shows the kernel's share.
pub(crate) const KERNEL_MEMINFO: [&str; 7] = [
    "Slab",
    "SUnreclaim",
    "KernelStack",
    "PageTables",
    "Percpu",
    "Shmem",
    "AnonPages",
];

pub(crate) fn status_field(pid: u32, key: &str) -> u64 {
    proc_field(&format!("/proc/{pid}/status"), key)
}

pub(crate) fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

pub(crate) fn nofile_limit(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub(crate) fn pss_kib(pid: u64) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

pub(crate) fn ppid_of(pid: u64) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

pub(crate) fn threads_of(pid: u64) -> u64 {
    status_field(pid as u32, "Threads")
}

pub(crate) fn machine(state_fs: &Path) -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|s| s.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    // The mount holding the state directories.
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut best: Option<(String, String, String)> = None;
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 3 || !state_fs.starts_with(f[1]) {
            continue;
        }
        if best.as_ref().is_none_or(|b| f[1].len() >= b.1.len()) {
            best = Some((f[0].to_string(), f[1].to_string(), f[2].to_string()));
        }
    }
    let (dev, mnt, fstype) = best.unwrap_or_default();
    json!({
        "nproc": nproc,
        "cpu": cpu,
        "mem_total_kib": meminfo_kib("MemTotal"),
        "kernel": kernel,
        "state_fs": {"device": dev, "mount": mnt, "type": fstype},
        "pid_max": std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap_or_default().trim(),
    })
}

pub(crate) fn raise_nofile(want: u64) -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the valid rlimit struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        let before = r.rlim_cur;
        let new = libc::rlimit {
            rlim_cur: want,
            rlim_max: want.max(r.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &new) != 0 {
            // Not root: take what the hard limit allows.
            let new = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &new);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        (before, r.rlim_cur)
    }
}
