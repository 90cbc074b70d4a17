//! The sandbox launcher: a small single-threaded program the daemon starts
//! for every agent. It receives a [`LaunchPlan`] on its stdin (the agent's
//! syscall socket) and applies the confinement in one linear sequence
//! (DESIGN.md §2), then execs the agent program.
//!
//! Process shape: the launcher unshares a pid namespace and forks; the child
//! becomes pid 1 of that namespace, confines itself step by step and execs
//! the program. The launcher stays outside as a relay: it reports the
//! child's host pid and exits with the child's status, so the daemon only
//! ever waits for its own direct child. A failed step is reported on the
//! status pipe as `{"event": "failed", "step": ..., "error": ...}`.

use super::plan::{LaunchEvent, LaunchPlan, Rlimits};
use super::{handoff, ids, landlock, mounts, seccomp};
use nix::sched::{CloneFlags, unshare};
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};
use std::ffi::CString;
use std::fmt::Display;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

/// The agent's syscall socket, as the ABI promises.
pub const AGENT_SOCKET_FD: RawFd = 3;
/// The status pipe while the launcher runs (close-on-exec).
const STATUS_FD: RawFd = 4;
/// Sources of the extra read-only binds, in plan order (close-on-exec).
pub const FIRST_BIND_FD: RawFd = 5;
/// Exit code of a launcher whose setup failed.
pub const EXIT_SETUP_FAILED: i32 = 125;

/// Entry point of the `agentos-launcher` binary.
pub fn main() -> ! {
    // The sandbox's own files (its /etc, mount points) must be readable by
    // the agent whatever umask the daemon runs with.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));

    // Receive the plan and the agent's stdout/stderr/status descriptors.
    let (plan, fds) = match handoff::receive(0) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("agentos-launcher: cannot receive the launch plan: {e}");
            std::process::exit(EXIT_SETUP_FAILED);
        }
    };

    // 1. Sanitize: socket → fd 3, stdout/stderr → the daemon's log pipes,
    //    status → fd 4 and the bind sources → 5.. (close-on-exec),
    //    stdin → /dev/null, close the rest.
    if let Err(e) = install_descriptors(fds) {
        eprintln!("agentos-launcher: step fds: {e}");
        std::process::exit(EXIT_SETUP_FAILED);
    }

    // Die with the daemon. Set before anything else can race its death.
    let parent = nix::unistd::getppid();
    let dies_with_daemon = set_parent_death_signal();
    if dies_with_daemon.is_err() || nix::unistd::getppid() != parent {
        report_failed("parent-death signal", "the daemon went away");
    }

    // 2. A new pid namespace: the next child is its pid 1.
    if let Err(e) = unshare(CloneFlags::CLONE_NEWPID) {
        report_failed("pid namespace", e);
    }

    // SAFETY: this process is single-threaded (a fresh exec of the launcher
    // that starts no threads), so the child may use any function.
    match unsafe { fork() } {
        Err(e) => report_failed("fork", e),
        Ok(ForkResult::Parent { child }) => relay(child),
        Ok(ForkResult::Child) => {
            let err = confine_and_exec(&plan);
            report_failed(&err.step, err.error)
        }
    }
}

/// A failed step: which one, and why.
struct StepFailure {
    step: String,
    error: String,
}

fn step<T, E: Display>(name: &str, r: Result<T, E>) -> Result<T, StepFailure> {
    r.map_err(|e| StepFailure {
        step: name.to_string(),
        error: e.to_string(),
    })
}

/// The confinement sequence of the agent's pid 1. Returns only on failure.
fn confine_and_exec(plan: &LaunchPlan) -> StepFailure {
    match confine(plan) {
        Ok(never) => match never {},
        Err(f) => f,
    }
}

fn confine(plan: &LaunchPlan) -> Result<std::convert::Infallible, StepFailure> {
    // Build argv/envp first: after seccomp nothing should allocate surprises.
    let (path, argv, envp) = step("exec arguments", exec_arguments(plan))?;

    // 3. Join the agent's cgroups (limits are already set by the daemon).
    step("cgroup", join_cgroups(&plan.cgroup_procs))?;
    // 4. rlimits.
    step("rlimits", set_rlimits(&plan.rlimits))?;
    // 5a. Detach the bind sources while still in the daemon's mount namespace.
    step(
        "bind sources",
        mounts::detach_bind_sources(FIRST_BIND_FD, plan.extra_ro.len()),
    )?;
    // 5. The other namespaces (pid was unshared by the launcher).
    let mut namespaces = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWCGROUP;
    if plan.share_network {
        namespaces.remove(CloneFlags::CLONE_NEWNET);
    }
    step("namespaces", unshare(namespaces))?;
    // 6. The root filesystem, then pivot_root into it.
    step("mounts", mounts::build_root(plan))?;
    // 7. hostname agent-<pid>.
    step(
        "hostname",
        nix::unistd::sethostname(format!("agent-{}", plan.pid)),
    )?;
    // 8. Empty the bounding set while we still hold CAP_SETPCAP.
    step("capability bounding set", ids::drop_bounding_set())?;
    // 9. setgroups([]), setresgid, setresuid.
    step("ids", ids::switch_to(plan.uid, plan.gid))?;
    // 10. The uid switch reset the parent-death signal; set it again.
    step("parent-death signal", set_parent_death_signal())?;
    // 11. Every capability set empty, verified.
    step("capabilities", ids::clear_all_capabilities())?;
    // 12. no_new_privs.
    step("no_new_privs", set_no_new_privs())?;
    // 13. Landlock, or refuse to run.
    step("landlock", landlock::restrict(plan))?;
    // 14. Default signal dispositions and an empty mask (Rust ignores SIGPIPE).
    step("signals", reset_signals())?;
    step("working directory", std::env::set_current_dir("/workspace"))?;
    // 15. seccomp: the last restriction before exec.
    step("seccomp", seccomp::install(&plan.seccomp))?;
    // 16. exec.
    let err = nix::unistd::execve(&path, &argv, &envp);
    step("exec", err)
}

type ExecArgs = (CString, Vec<CString>, Vec<CString>);

fn exec_arguments(plan: &LaunchPlan) -> Result<ExecArgs, std::ffi::NulError> {
    let path = CString::new(plan.program.as_os_str().as_bytes())?;
    let mut argv = vec![path.clone()];
    for a in &plan.args {
        argv.push(CString::new(a.as_bytes())?);
    }
    let envp = plan
        .env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((path, argv, envp))
}

fn install_descriptors(fds: Vec<OwnedFd>) -> std::io::Result<()> {
    // The received descriptors may sit on the target numbers themselves:
    // lift every source above them before placing anything.
    let devnull = std::fs::OpenOptions::new().read(true).open("/dev/null")?;
    let socket = lift(0)?;
    let lifted = fds
        .iter()
        .map(|fd| lift(fd.as_raw_fd()))
        .collect::<std::io::Result<Vec<RawFd>>>()?;
    let null = lift(devnull.as_raw_fd())?;
    // Close the originals now, before their numbers are reused below.
    drop((fds, devnull));
    let (stdio, binds) = lifted.split_at(handoff::STDIO_FDS);
    dup_onto(socket, AGENT_SOCKET_FD, false)?;
    dup_onto(stdio[0], 1, false)?;
    dup_onto(stdio[1], 2, false)?;
    dup_onto(stdio[2], STATUS_FD, true)?;
    for (i, &fd) in binds.iter().enumerate() {
        dup_onto(fd, FIRST_BIND_FD + i as RawFd, true)?;
    }
    dup_onto(null, 0, false)?;
    let first_free = FIRST_BIND_FD as u32 + binds.len() as u32;
    // SAFETY: close_range only closes descriptors; everything from
    // `first_free` up is a leftover (the lifted copies) that no live Rust
    // object refers to.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first_free, u32::MAX, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Duplicates `fd` to a number of at least 16 (close-on-exec).
fn lift(fd: RawFd) -> std::io::Result<RawFd> {
    // SAFETY: F_DUPFD_CLOEXEC only creates a new descriptor number.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 16) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n)
}

/// dup3 `from` onto `to`; a descriptor onto itself only has its flag fixed.
fn dup_onto(from: RawFd, to: RawFd, cloexec: bool) -> std::io::Result<()> {
    let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
    let rc = if from == to {
        let fd_flags = if cloexec { libc::FD_CLOEXEC } else { 0 };
        // SAFETY: F_SETFD on a descriptor we hold changes only its flags.
        unsafe { libc::fcntl(to, libc::F_SETFD, fd_flags) }
    } else {
        // SAFETY: dup3 atomically replaces `to`; the launcher owns both
        // numbers and no Rust object wraps `to` at this point.
        unsafe { libc::dup3(from, to, flags) }
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn set_parent_death_signal() -> nix::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
}

fn set_no_new_privs() -> nix::Result<()> {
    nix::sys::prctl::set_no_new_privs()
}

fn join_cgroups(procs: &[std::path::PathBuf]) -> std::io::Result<()> {
    for p in procs {
        // "0" means the writing process itself.
        std::fs::write(p, b"0")
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
    }
    Ok(())
}

fn set_rlimits(r: &Rlimits) -> nix::Result<()> {
    setrlimit(Resource::RLIMIT_NOFILE, r.nofile, r.nofile)?;
    setrlimit(Resource::RLIMIT_FSIZE, r.fsize, r.fsize)?;
    setrlimit(Resource::RLIMIT_NPROC, r.nproc, r.nproc)?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0)
}

fn reset_signals() -> nix::Result<()> {
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL does not involve any handler code.
        unsafe { nix::sys::signal::signal(sig, SigHandler::SigDfl) }?;
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
}

/// Writes one status event; errors are ignored (the daemon also sees the exit).
fn report(event: &LaunchEvent) {
    if let Ok(mut line) = serde_json::to_vec(event) {
        line.push(b'\n');
        // SAFETY: STATUS_FD is open (or the write fails harmlessly with EBADF);
        // the buffer is valid for its length.
        unsafe { libc::write(STATUS_FD, line.as_ptr().cast(), line.len()) };
    }
}

fn report_failed(step: &str, error: impl Display) -> ! {
    report(&LaunchEvent::Failed {
        step: step.to_string(),
        error: error.to_string(),
    });
    std::process::exit(EXIT_SETUP_FAILED)
}

/// The launcher's life after the fork: report the child's host pid, drop
/// every descriptor so the daemon sees EOF exactly when the agent closes its
/// own, then wait and exit with the child's status.
fn relay(child: nix::unistd::Pid) -> ! {
    report(&LaunchEvent::Forked {
        host_pid: child.as_raw(),
    });
    // SAFETY: closes all our descriptors; the relay needs none of them.
    unsafe { libc::syscall(libc::SYS_close_range, 0, u32::MAX, 0) };
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                // Die the same way, so the daemon sees the real signal.
                // SAFETY: SIG_DFL involves no handler code.
                let _ = unsafe { nix::sys::signal::signal(sig, SigHandler::SigDfl) };
                let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
                let _ = nix::sys::signal::raise(sig);
                std::process::exit(128 + sig as i32)
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => std::process::exit(EXIT_SETUP_FAILED),
        }
    }
}
