//! The launcher server: `agentos-launcher`, started once by the daemon. A
//! small single-threaded root process that holds none of the agents'
//! descriptors and none of the daemon's memory, so forking it costs the same
//! with one agent or ten thousand. For each request on its control socket
//! (fd 0, SOCK_SEQPACKET, see [`super::handoff`]) it forks the sandbox's
//! pid 1 into a new pid namespace, which confines itself and execs the
//! agent ([`super::launcher::run`]); it reaps them and tells the daemon how
//! each ended. There is no process between the server and an agent.
//!
//! Between requests it creates network namespaces ahead of time (a small
//! pool, each used by exactly one sandbox): creating one is the costliest
//! step of a sandbox, and doing it while idle takes it off the spawn path.
//!
//! It dies with the daemon (parent-death signal), and exits when the daemon
//! closes the control socket; every agent's pid 1 dies with it (same
//! signal), and with pid 1 its whole pid namespace.

use super::handoff::{self, LaunchEvent, LauncherReply, Leading, MAX_MESSAGE_BYTES};
use super::launcher;
use super::plan::LaunchPlan;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::{ForkResult, fork};
use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The control socket, as the daemon starts the launcher.
const CONTROL_FD: RawFd = 0;
/// Network namespaces kept ready.
const NETNS_POOL: usize = 4;
/// Quiet time after which the pool is refilled.
const REFILL_AFTER_IDLE_MS: u8 = 3;

/// Entry point of the `agentos-launcher` binary: `agentos-launcher <daemon pid>`.
pub fn main() -> ! {
    // The sandbox's own files (its /etc, mount points) must be readable by
    // the agent whatever umask the daemon runs with.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    if let Err(e) = check_parent() {
        fatal(&e.to_string());
    }
    let sigchld = match child_signals() {
        Ok(s) => s,
        Err(e) => fatal(&format!("signalfd: {e}")),
    };
    let server = match Server::new() {
        Ok(s) => s,
        Err(e) => fatal(&format!("cannot prepare: {e}")),
    };
    let mut pool = NetnsPool::new();
    serve(&server, &sigchld, &mut pool)
}

fn fatal(why: &str) -> ! {
    eprintln!("agentos-launcher: {why}");
    std::process::exit(1)
}

/// Why the server cannot serve its daemon.
#[derive(Debug, thiserror::Error)]
enum ParentError {
    #[error("usage: agentos-launcher <daemon pid> (started by agentosd only)")]
    Usage,
    #[error("parent-death signal: {0}")]
    DeathSignal(#[source] nix::Error),
    #[error("the daemon went away")]
    Gone,
}

/// Dies with the daemon, whose pid is our argument; set before anything can
/// race the daemon's death.
fn check_parent() -> Result<(), ParentError> {
    let expected: i32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .ok_or(ParentError::Usage)?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(ParentError::DeathSignal)?;
    if nix::unistd::getppid().as_raw() != expected {
        return Err(ParentError::Gone);
    }
    Ok(())
}

/// SIGCHLD, blocked and read from a signalfd.
fn child_signals() -> nix::Result<SignalFd> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

/// The serving loop: requests, reaped sandboxes, and pool refills when idle.
fn serve(server: &Server, sigchld: &SignalFd, pool: &mut NetnsPool) -> ! {
    let mut buf = vec![0u8; MAX_MESSAGE_BYTES];
    // Host pid of each sandbox's pid 1 → request id.
    let mut sandboxes: HashMap<i32, u64> = HashMap::new();
    let mut idle = false;
    loop {
        // SAFETY: fd 0 is the control socket for the whole life of the
        // process; nothing closes it.
        let control = unsafe { BorrowedFd::borrow_raw(CONTROL_FD) };
        let mut fds = [
            PollFd::new(control, PollFlags::POLLIN),
            PollFd::new(sigchld.as_fd(), PollFlags::POLLIN),
        ];
        // Refill only once nothing happened for a moment: right after a
        // request, the new sandbox and its agent need the CPUs.
        let timeout = match (pool.wants_more(), idle) {
            (false, _) => PollTimeout::NONE,
            (true, false) => PollTimeout::from(REFILL_AFTER_IDLE_MS),
            (true, true) => PollTimeout::ZERO,
        };
        match poll(&mut fds, timeout) {
            Ok(0) => {
                idle = true;
                pool.refill_one();
                continue;
            }
            Ok(_) => idle = false,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => fatal(&format!("poll: {e}")),
        }
        let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
        let (requests, children) = (ready(&fds[0]), ready(&fds[1]));
        if children {
            while sigchld.read_signal().ok().flatten().is_some() {}
            reap(&mut sandboxes);
        }
        if requests {
            match handoff::receive_request(CONTROL_FD, &mut buf) {
                Ok(Some((request, fds))) => {
                    let netns = match request.plan.share_network {
                        true => None,
                        false => pool.take(),
                    };
                    let reply = match server.start_sandbox(&request.plan, fds, netns) {
                        Ok(host_pid) => {
                            sandboxes.insert(host_pid, request.id);
                            LauncherReply::Started {
                                id: request.id,
                                host_pid,
                            }
                        }
                        Err(e) => LauncherReply::Refused {
                            id: request.id,
                            error: format!("cannot start the sandbox: {e}"),
                        },
                    };
                    send(&reply);
                }
                // The daemon closed its end: it is gone or shutting down.
                Ok(None) => std::process::exit(0),
                Err(handoff::HandoffError::Sys(nix::errno::Errno::EINTR)) => {}
                Err(e) => eprintln!("agentos-launcher: dropped a malformed request: {e}"),
            }
        }
    }
}

/// What the server keeps to start sandboxes.
struct Server {
    /// Our own pid namespace, to return to after each sandbox's fork.
    own_pidns: OwnedFd,
    /// A pidfd of ourselves, which each pid 1 checks for our death.
    own_pidfd: OwnedFd,
}

impl Server {
    fn new() -> std::io::Result<Server> {
        let own_pidns = OwnedFd::from(std::fs::File::open("/proc/self/ns/pid")?);
        // SAFETY: pidfd_open takes a pid and flags and returns a new
        // descriptor (or -1); no memory is involved.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this new descriptor to us.
        let own_pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        Ok(Server {
            own_pidns,
            own_pidfd,
        })
    }

    /// Forks the sandbox's pid 1 into a new pid namespace, tells the status
    /// pipe its host pid, and keeps no descriptor of the request.
    fn start_sandbox(
        &self,
        plan: &LaunchPlan,
        fds: Vec<OwnedFd>,
        netns: Option<OwnedFd>,
    ) -> nix::Result<i32> {
        unshare(CloneFlags::CLONE_NEWPID)?;
        // SAFETY: the server is single-threaded (it never starts a thread),
        // so the child may use any function.
        let forked = match unsafe { fork() } {
            Ok(ForkResult::Child) => launcher::run(plan, fds, netns, self.own_pidfd.as_fd()),
            Ok(ForkResult::Parent { child }) => Ok(child.as_raw()),
            Err(e) => Err(e),
        };
        // Our later children must not land in that namespace: go back.
        if let Err(e) = setns(&self.own_pidns, CloneFlags::CLONE_NEWPID) {
            fatal(&format!("returning to our own pid namespace: {e}"));
        }
        let child = forked?;
        let event = LaunchEvent::Forked { host_pid: child };
        if let (Some(status), Ok(mut line)) = (
            fds.get(Leading::Status.position()),
            serde_json::to_vec(&event),
        ) {
            line.push(b'\n');
            // A pipe write this small is atomic; a failure means the daemon
            // gave up on this sandbox, which the exit report settles.
            let _ = nix::unistd::write(status, &line);
        }
        Ok(child)
    }
}

/// Collects every ended sandbox and tells the daemon.
fn reap(sandboxes: &mut HashMap<i32, u64>) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into our local only.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        if let Some(id) = sandboxes.remove(&pid) {
            send(&LauncherReply::Exited {
                id,
                wait_status: status,
            });
        }
    }
}

fn send(reply: &LauncherReply) {
    if let Err(e) = handoff::send_reply(CONTROL_FD, reply) {
        // The daemon is gone; so are we.
        fatal(&format!("replying to the daemon: {e}"));
    }
}

/// Fresh network namespaces, made while idle, each handed out once.
struct NetnsPool {
    /// The namespace the server runs in (the daemon's); it returns there
    /// after making each new one.
    home: Option<OwnedFd>,
    ready: Vec<OwnedFd>,
}

impl NetnsPool {
    fn new() -> NetnsPool {
        let home = open_netns()
            .map_err(|e| eprintln!("agentos-launcher: no network namespace pool: {e}"))
            .ok();
        NetnsPool {
            home,
            ready: Vec::new(),
        }
    }

    fn wants_more(&self) -> bool {
        self.home.is_some() && self.ready.len() < NETNS_POOL
    }

    fn take(&mut self) -> Option<OwnedFd> {
        self.ready.pop()
    }

    /// Makes one namespace: enter a new one, keep a descriptor, go home.
    /// Any failure disables the pool; sandboxes then create their own.
    fn refill_one(&mut self) {
        let Some(home) = &self.home else { return };
        let made = unshare(CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)
            .and_then(|()| open_netns());
        let back = setns(home, CloneFlags::CLONE_NEWNET);
        match (made, back) {
            (Ok(ns), Ok(())) => self.ready.push(ns),
            (_, Err(e)) => fatal(&format!("returning to the daemon's network namespace: {e}")),
            (Err(e), Ok(())) => {
                eprintln!("agentos-launcher: no network namespace pool: {e}");
                self.home = None;
            }
        }
    }
}

fn open_netns() -> std::io::Result<OwnedFd> {
    let f = std::fs::File::open("/proc/thread-self/ns/net")?;
    Ok(OwnedFd::from(f))
}
