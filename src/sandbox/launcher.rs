//! One sandbox: what the agent's pid 1, just forked by the launcher server
//! into a new pid namespace, does with its [`LaunchPlan`]. It puts its
//! descriptors on the numbers of the [`handoff`] table, applies the
//! confinement in one linear sequence ([`confine`]; docs/ARCHITECTURE.md
//! lists the steps), then execs the agent program. A failed step is
//! reported on the status pipe as `{"event": "failed", "step": ..., "error": ...}`;
//! the server reports the host pid there, and the exit status to the daemon.

use super::handoff::{self, CGROUP_READY_FD, FIRST_BIND_FD, LaunchEvent, Leading, STATUS_FD};
use super::plan::{LaunchPlan, Rlimits};
use super::{ids, landlock, mounts, seccomp};
use nix::fcntl::OFlag;
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::stat::Mode;
use std::ffi::CString;
use std::fmt::Display;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Exit code of a launcher whose setup failed.
pub const EXIT_SETUP_FAILED: i32 = 125;

/// The life of the sandbox's pid 1, in a process just forked by the
/// single-threaded launcher server. `fds` are the request's descriptors;
/// `netns`, when given, is a fresh, unused network namespace to enter
/// instead of creating one; `server` is a pidfd of the server.
pub fn run(
    plan: &LaunchPlan,
    fds: Vec<OwnedFd>,
    netns: Option<OwnedFd>,
    server: BorrowedFd<'_>,
) -> ! {
    // 1. Die with the server (which dies with the daemon). The server is
    //    outside our pid namespace (getppid() says 0), so whether it died
    //    before the signal was armed is asked of its pidfd.
    if set_parent_death_signal().is_err() || process_ended(server) {
        exit_now(EXIT_SETUP_FAILED);
    }

    // 2. Sanitize: every descriptor of the request onto its number in the
    //    handoff table, the network namespace after the bind sources
    //    (close-on-exec), stdin → /dev/null; close the rest (the server's
    //    own descriptors among them).
    let netns = match install_descriptors(fds, netns) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("agentos-launcher: step fds: {e}");
            exit_now(EXIT_SETUP_FAILED);
        }
    };

    // The server blocks SIGCHLD for its signalfd; the agent starts clean.
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);

    let err = confine_and_exec(plan, netns);
    report_failed(&err.step, err.error)
}

/// Whether the process behind a pidfd has ended (its pidfd is readable).
fn process_ended(pidfd: BorrowedFd<'_>) -> bool {
    let mut fds = [nix::poll::PollFd::new(pidfd, nix::poll::PollFlags::POLLIN)];
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
        Ok(n) => n > 0,
        Err(_) => true,
    }
}

/// The agents' `oom_score_adj`: the kernel's OOM killer prefers them to
/// the supervisor (-500 in its unit) and to ordinary processes (0).
pub const AGENT_OOM_SCORE_ADJ: i32 = 500;

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
fn confine_and_exec(plan: &LaunchPlan, netns: Option<RawFd>) -> StepFailure {
    match confine(plan, netns) {
        Ok(never) => match never {},
        Err(f) => f,
    }
}

fn confine(
    plan: &LaunchPlan,
    netns: Option<RawFd>,
) -> Result<std::convert::Infallible, StepFailure> {
    // Build argv/envp first: after seccomp nothing should allocate surprises.
    let (path, argv, envp) = step("exec arguments", exec_arguments(plan))?;

    // 3. rlimits.
    step("rlimits", set_rlimits(&plan.rlimits))?;
    // The OOM killer takes agents before the supervisor (whose unit sets
    // OOMScoreAdjust=-500, inherited this far): a positive score of their
    // own, kept by everything the agent starts.
    step(
        "oom score",
        std::fs::write("/proc/self/oom_score_adj", AGENT_OOM_SCORE_ADJ.to_string()),
    )?;
    // 4. Detach the bind sources while still in the server's mount namespace.
    step(
        "bind sources",
        mounts::detach_bind_sources(plan.extra_ro.len()),
    )?;
    // 5. The parents of the agent's cgroups, held open across pivot_root:
    //    the daemon creates the cgroups themselves meanwhile.
    let cgroup_parents = step("cgroup", open_cgroup_parents(&plan.cgroup_procs))?;
    // 6. Namespaces (pid was new at fork; cgroup comes after joining). The
    //    network namespace is a fresh one the server made ahead of time when
    //    it has one (creating it is the costliest namespace), else a new one
    //    now, unless the plan keeps the daemon's.
    let mut namespaces =
        CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS;
    match (plan.share_network, netns) {
        (true, _) => {}
        (false, Some(fd)) => {
            // SAFETY: `fd` is the namespace descriptor installed by
            // install_descriptors and stays open until exec (close-on-exec).
            let ns = unsafe { BorrowedFd::borrow_raw(fd) };
            step("network namespace", setns(ns, CloneFlags::CLONE_NEWNET))?;
        }
        (false, None) => namespaces |= CloneFlags::CLONE_NEWNET,
    }
    step("namespaces", unshare(namespaces))?;
    // 7. The root filesystem, then pivot_root into it.
    step("mounts", mounts::build_root(plan))?;
    // 8. Join the agent's cgroups once the daemon says they exist (limits
    //    set), then a cgroup namespace rooted there.
    step("cgroup", join_cgroups(&cgroup_parents, &plan.cgroup_procs))?;
    drop(cgroup_parents);
    step("cgroup namespace", unshare(CloneFlags::CLONE_NEWCGROUP))?;
    // 9. hostname agent-<pid>.
    step(
        "hostname",
        nix::unistd::sethostname(format!("agent-{}", plan.pid)),
    )?;
    // 10. Empty the bounding set while we still hold CAP_SETPCAP.
    step("capability bounding set", ids::drop_bounding_set())?;
    // 11. setgroups([]), setresgid, setresuid.
    step("ids", ids::switch_to(plan.uid, plan.gid))?;
    // 12. The uid switch reset the parent-death signal; set it again.
    step("parent-death signal", set_parent_death_signal())?;
    // 13. Every capability set empty, verified.
    step("capabilities", ids::clear_all_capabilities())?;
    // 14. no_new_privs.
    step("no_new_privs", set_no_new_privs())?;
    // 15. Landlock, or refuse to run.
    step("landlock", landlock::restrict(plan))?;
    // 16. Default signal dispositions and an empty mask (Rust ignores SIGPIPE).
    step("signals", reset_signals())?;
    step("working directory", std::env::set_current_dir("/workspace"))?;
    // 17. seccomp: the last restriction before exec.
    step("seccomp", seccomp::install(&plan.seccomp))?;
    // 18. exec.
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

/// Places the request's descriptors on their fixed numbers and closes every
/// other; returns where the network namespace descriptor went.
fn install_descriptors(
    fds: Vec<OwnedFd>,
    netns: Option<OwnedFd>,
) -> std::io::Result<Option<RawFd>> {
    // The received descriptors may sit on the target numbers themselves:
    // lift every source above them before placing anything.
    let devnull = std::fs::OpenOptions::new().read(true).open("/dev/null")?;
    let lifted = fds
        .iter()
        .chain(netns.iter())
        .map(|fd| lift(fd.as_raw_fd()))
        .collect::<std::io::Result<Vec<RawFd>>>()?;
    let null = lift(devnull.as_raw_fd())?;
    // Close the originals now, before their numbers are reused below.
    let has_netns = netns.is_some();
    drop((fds, netns, devnull));
    let (leading, rest) = lifted.split_at(handoff::LEADING_FDS);
    let (binds, netns_fd) = match has_netns {
        true => (&rest[..rest.len() - 1], rest.last().copied()),
        false => (rest, None),
    };
    for which in Leading::ALL {
        dup_onto(
            leading[which.position()],
            which.sandbox_fd(),
            !which.survives_exec(),
        )?;
    }
    let mut next = FIRST_BIND_FD;
    for &fd in binds {
        dup_onto(fd, next, true)?;
        next += 1;
    }
    let netns_at = match netns_fd {
        Some(fd) => {
            dup_onto(fd, next, true)?;
            next += 1;
            Some(next - 1)
        }
        None => None,
    };
    dup_onto(null, 0, false)?;
    // SAFETY: close_range only closes descriptors; everything from `next`
    // up is a leftover: the lifted copies, and the server's own descriptors,
    // whose Rust owners in this forked copy are never used or dropped (the
    // pid 1 never returns to the server loop).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, next as u32, u32::MAX, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(netns_at)
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

/// Ends this forked process at once: no atexit handlers or stdio buffers
/// inherited from the launcher server run twice.
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process; it touches no memory of ours.
    unsafe { libc::_exit(code) }
}

fn set_parent_death_signal() -> nix::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
}

fn set_no_new_privs() -> nix::Result<()> {
    nix::sys::prctl::set_no_new_privs()
}

/// Splits a `cgroup.procs` path into the directory that exists before the
/// daemon creates the sandbox's cgroup and the path below it: an agent's
/// `<parent>/agent-<pid>/self/cgroup.procs` gives `<parent>` and
/// `agent-<pid>/self/cgroup.procs`, an EXEC_CMD's
/// `<agent>/exec-<n>/cgroup.procs` gives `<agent>` and `exec-<n>/cgroup.procs`.
fn split_cgroup_procs(p: &Path) -> std::io::Result<(&Path, PathBuf)> {
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not <parent>/<leaf>/cgroup.procs", p.display()),
        )
    };
    let leaf_dir = p.parent().ok_or_else(bad)?;
    let leaf = leaf_dir.file_name().ok_or_else(bad)?;
    let above = leaf_dir.parent().ok_or_else(bad)?;
    if leaf == "self" {
        let agent = above.file_name().ok_or_else(bad)?;
        let base = above.parent().ok_or_else(bad)?;
        return Ok((base, Path::new(agent).join(leaf).join("cgroup.procs")));
    }
    Ok((above, Path::new(leaf).join("cgroup.procs")))
}

/// Opens the directory above each sandbox cgroup (see
/// [`split_cgroup_procs`]), which exists before the daemon creates it.
fn open_cgroup_parents(procs: &[PathBuf]) -> std::io::Result<Vec<OwnedFd>> {
    procs
        .iter()
        .map(|p| {
            let (parent, _) = split_cgroup_procs(p)?;
            let dir = nix::fcntl::open(
                parent,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| std::io::Error::other(format!("{}: {e}", parent.display())))?;
            Ok(dir)
        })
        .collect()
}

/// Waits until the daemon has created the agent's cgroups (one byte on the
/// ready pipe; end of file if it could not), then joins each by writing
/// "0" (this process) to `<leaf>/cgroup.procs` beneath its parent.
fn join_cgroups(parents: &[OwnedFd], procs: &[PathBuf]) -> std::io::Result<()> {
    // SAFETY: CGROUP_READY_FD was installed by install_descriptors and stays
    // open until exec (close-on-exec).
    let ready = unsafe { BorrowedFd::borrow_raw(CGROUP_READY_FD) };
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(ready, &mut byte) {
            Ok(1) => break,
            Ok(_) => {
                return Err(std::io::Error::other(
                    "the daemon could not create the agent's cgroups",
                ));
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    for (parent, p) in parents.iter().zip(procs) {
        let (_, rel) = split_cgroup_procs(p)?;
        let procs_file = nix::fcntl::openat(
            parent,
            &rel,
            OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .and_then(|f| nix::unistd::write(&f, b"0"))
        .map_err(|e| std::io::Error::other(format!("{}: {e}", p.display())))?;
        let _ = procs_file;
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
    exit_now(EXIT_SETUP_FAILED)
}
