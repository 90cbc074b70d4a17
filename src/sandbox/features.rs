//! What the running kernel offers for confinement, for `agentos status` and
//! for refusing to start when a profile cannot be enforced.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct KernelFeatures {
    pub kernel: String,
    /// Landlock ABI version, or 0 when Landlock is unavailable.
    pub landlock_abi: u32,
    pub seccomp_filter: bool,
    pub namespaces: Vec<String>,
    pub cgroup: String,
}

/// Landlock ABI of the running kernel (0 = none).
pub fn landlock_abi() -> u32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a NULL attribute, size 0 and the VERSION flag the syscall
    // only returns the ABI number; no memory is read or written.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if rc < 0 { 0 } else { rc as u32 }
}

pub fn detect(cgroup: String) -> KernelFeatures {
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let seccomp_filter = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail")
        .map(|s| s.contains("errno") && s.contains("kill_process"))
        .unwrap_or(false);
    let namespaces = ["mnt", "pid", "net", "ipc", "uts", "cgroup", "user"]
        .iter()
        .filter(|n| std::path::Path::new("/proc/self/ns").join(n).exists())
        .map(|n| n.to_string())
        .collect();
    KernelFeatures {
        kernel,
        landlock_abi: landlock_abi(),
        seccomp_filter,
        namespaces,
        cgroup,
    }
}
