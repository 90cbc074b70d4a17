//! `probe`: an AgentOS agent that tests its own confinement from the inside.
//!
//! The supervisor starts this program as an ordinary (untrusted) agent. It
//! talks to the supervisor over the inherited Unix stream socket on fd 3 using
//! the agent protocol: newline-delimited JSON, one request or reply per line,
//! replies matched to requests by `id` (they may arrive out of order).
//!
//! The first argument selects a mode:
//!
//! * `confine [--other-pid PID] [--other-workspace PATH] [--admin-socket PATH]
//!   [--forbidden PATH]...` attempts a list of escapes. Every check is reported
//!   as `{"name", "ok", "detail"}` where `ok: true` means *the confinement held*
//!   (the escape failed, or a thing that must work inside the sandbox worked).
//!   Every check can genuinely fail: run unconfined as root, most of them do.
//!   The report `{"checks", "info", "all_ok"}` goes to `/report.json` in the
//!   workspace (FS_WRITE), a one-line summary per check goes to stdout, and the
//!   probe leaves with SYS_EXIT 0 when everything held, 1 otherwise.
//! * `forkbomb` forks as fast as it can (each child forks once more, then
//!   sleeps) for at most 20 s or 5,000 forks, then reports how far it got.
//! * `balloon MIB` allocates and touches memory 16 MiB at a time.
//! * `abuse` feeds the supervisor oversized, malformed and flooding input and
//!   checks that every reply is correct and the connection survives.
//! * `echo` answers every message with `echo:<body>` until it receives `exit`.
//! * `send TO COUNT` sends COUNT messages to TO and reports the acks.
//! * `exit CODE` leaves through SYS_EXIT; `exit-and-wait CODE` calls SYS_EXIT
//!   and then waits for the supervisor to end it; `sleep MS` sleeps, then
//!   exits plainly.
//!
//! Risky experiments (unshare, mount, setuid, ptrace, foreign syscall ABIs)
//! run in short-lived forked children so that a *successful* escape can never
//! change the probe itself or, when run unconfined for testing, the host.
//! Files created by a breached write check are removed again, and a chown
//! that goes through is undone. Two checks act for real when they can:
//! `--other-pid` sends SIGKILL, and TIOCSTI pushes a NUL byte into a tty.
//!
//! Verdict rules worth knowing:
//! * A check that cannot decide (unexpected errno, missing /workspace, a
//!   panic) counts as failed, with the reason in `detail`.
//! * A forbidden path that exists as an *empty* directory holds (nothing of
//!   the host shows through a bare mount point); for `--other-workspace` any
//!   successful open is a leak.
//! * Dangerous syscalls are called with valid arguments and hold only when
//!   refused by policy (EPERM, EACCES or ENOSYS), not for bad arguments.
//! * Facts that are not pass/fail (/sys present, abstract-socket and
//!   `kill(-1, 0)` results, chmod) are reported in `info` or in `detail`.
//!
//! Built in the AgentOS tree as `cargo build --example probe`; it needs only
//! `libc` and `serde_json` and must stay single-threaded while running the
//! confine checks (they fork).

use std::collections::{BTreeMap, HashSet};
use std::ffi::{CStr, CString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixStream};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const USAGE: &str = "usage: probe confine [--other-pid PID] [--other-workspace PATH] \
[--admin-socket PATH] [--forbidden PATH]...
       probe forkbomb
       probe balloon MIB
       probe abuse
       probe echo
       probe send TO COUNT
       probe exit CODE
       probe exit-and-wait CODE
       probe sleep MS";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let rest = &args[1..];
    let code = match mode.as_str() {
        "confine" => run_confine(rest),
        "forkbomb" => with_client(run_forkbomb),
        "balloon" => match parse_one::<usize>(rest, "MIB") {
            Ok(mib) => with_client(|c| run_balloon(c, mib)),
            Err(e) => usage_error(&e),
        },
        "abuse" => with_client(run_abuse),
        "echo" => with_client(run_echo),
        "send" => match parse_send_args(rest) {
            Ok((to, count)) => with_client(|c| run_send(c, to, count)),
            Err(e) => usage_error(&e),
        },
        "exit" => match parse_one::<i32>(rest, "CODE") {
            Ok(code) => with_client(|c| exit_via_supervisor(Some(c), code)),
            Err(e) => usage_error(&e),
        },
        "exit-and-wait" => match parse_one::<i32>(rest, "CODE") {
            Ok(code) => with_client(|c| exit_and_wait(c, code)),
            Err(e) => usage_error(&e),
        },
        "sleep" => match parse_one::<u64>(rest, "MS") {
            Ok(ms) => {
                std::thread::sleep(Duration::from_millis(ms));
                0
            }
            Err(e) => usage_error(&e),
        },
        other => usage_error(&format!("unknown mode {other:?}")),
    };
    std::process::exit(code);
}

fn usage_error(message: &str) -> i32 {
    eprintln!("probe: {message}\n{USAGE}");
    2
}

/// Parses the single positional argument of a mode.
fn parse_one<T: std::str::FromStr>(rest: &[String], what: &str) -> Result<T, String> {
    match rest {
        [one] => one.parse().map_err(|_| format!("invalid {what}: {one:?}")),
        _ => Err(format!("expected exactly one argument {what}")),
    }
}

fn parse_send_args(rest: &[String]) -> Result<(i64, u64), String> {
    match rest {
        [to, count] => Ok((
            to.parse().map_err(|_| format!("invalid TO: {to:?}"))?,
            count
                .parse()
                .map_err(|_| format!("invalid COUNT: {count:?}"))?,
        )),
        _ => Err("expected arguments TO COUNT".to_string()),
    }
}

/// Runs a mode that cannot work without the supervisor connection.
fn with_client(mode: impl FnOnce(&mut Client) -> i32) -> i32 {
    match Client::from_inherited_fd() {
        Ok(mut client) => mode(&mut client),
        Err(e) => {
            eprintln!("probe: no supervisor connection on fd 3: {e}");
            2
        }
    }
}

// ---------------------------------------------------------------------------
// errno helpers
// ---------------------------------------------------------------------------

fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Symbolic name of an errno value ("EPERM"), or "errno N" for rare ones.
fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EPIPE => "EPIPE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENOKEY => "ENOKEY",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::ESOCKTNOSUPPORT => "ESOCKTNOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNRESET => "ECONNRESET",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

/// errno name of an I/O error, or its text if it carries no errno.
fn io_error_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(errno) => errno_name(errno),
        None => e.to_string(),
    }
}

/// Turns a raw syscall return (-1 plus errno on failure) into value-or-negative-errno.
fn sys_result(ret: libc::c_long) -> i64 {
    if ret == -1 {
        -i64::from(last_errno())
    } else {
        ret
    }
}

/// Describes a value-or-negative-errno result.
fn describe_result(value: i64) -> String {
    if value < 0 {
        errno_name(i32::try_from(-value).unwrap_or(i32::MAX))
    } else {
        format!("succeeded ({value})")
    }
}

/// An errno that means "refused by policy" (seccomp, capabilities, LSM), as
/// opposed to "the arguments were wrong".
fn is_denial(value: i64) -> bool {
    matches!(
        i32::try_from(-value),
        Ok(libc::EPERM | libc::EACCES | libc::ENOSYS)
    )
}

fn close_fd(fd: i64) {
    if let Ok(fd) = RawFd::try_from(fd) {
        // SAFETY: `fd` was just returned to us by a successful syscall and is
        // owned by nobody else; closing it twice is impossible because callers
        // pass each descriptor here exactly once.
        unsafe { libc::close(fd) };
    }
}

// ---------------------------------------------------------------------------
// Supervisor client (fd 3)
// ---------------------------------------------------------------------------

/// The supervisor socket every agent inherits.
const SUPERVISOR_FD: RawFd = 3;
/// How long an ordinary call may take before we give up on its reply.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A reply from the supervisor.
#[derive(Debug)]
enum Reply {
    Success(Value),
    Error { code: String, message: String },
}

impl Reply {
    fn from_value(reply: &Value) -> Reply {
        if reply.get("status").and_then(Value::as_str) == Some("SUCCESS") {
            return Reply::Success(reply.get("result").cloned().unwrap_or(Value::Null));
        }
        let error = reply.get("error");
        let text = |key: &str| {
            error
                .and_then(|e| e.get(key))
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string()
        };
        Reply::Error {
            code: text("code"),
            message: text("message"),
        }
    }
}

/// "SUCCESS" or the error code of a raw reply.
fn reply_code(reply: &Value) -> String {
    match Reply::from_value(reply) {
        Reply::Success(_) => "SUCCESS".to_string(),
        Reply::Error { code, .. } => code,
    }
}

fn reply_id(reply: &Value) -> Option<u64> {
    reply.get("id").and_then(Value::as_u64)
}

/// Splits a byte stream into lines without quadratic copying.
#[derive(Default)]
struct LineReader {
    buf: Vec<u8>,
    start: usize,
}

impl LineReader {
    /// Returns the next complete line (without the newline), reading from
    /// `sock` as needed until `deadline`.
    fn next_line(&mut self, sock: &UnixStream, deadline: Instant) -> Result<Vec<u8>, String> {
        let mut scanned = self.start;
        loop {
            if let Some(pos) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + pos;
                let line = self.buf[self.start..end].to_vec();
                self.start = end + 1;
                if self.start > self.buf.len() / 2 {
                    self.buf.drain(..self.start);
                    self.start = 0;
                }
                return Ok(line);
            }
            scanned = self.buf.len();
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err("timed out waiting for the supervisor".to_string());
            }
            sock.set_read_timeout(Some(remaining))
                .map_err(|e| format!("set_read_timeout: {e}"))?;
            let mut chunk = [0u8; 64 * 1024];
            match (&*sock).read(&mut chunk) {
                Ok(0) => return Err("supervisor closed the connection".to_string()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err("timed out waiting for the supervisor".to_string());
                }
                Err(e) => return Err(format!("reading from the supervisor: {e}")),
            }
        }
    }
}

/// A tiny blocking client for the agent protocol on fd 3.
struct Client {
    sock: UnixStream,
    reader: LineReader,
    /// Replies that arrived while we were waiting for a different id.
    stash: Vec<Value>,
    next_id: u64,
}

impl Client {
    /// Takes ownership of the inherited supervisor socket (at most once).
    fn from_inherited_fd() -> Result<Client, String> {
        static TAKEN: AtomicBool = AtomicBool::new(false);
        if TAKEN.swap(true, Ordering::SeqCst) {
            return Err("fd 3 was already taken".to_string());
        }
        // SAFETY: F_GETFD only reads the descriptor flags of fd 3.
        if unsafe { libc::fcntl(SUPERVISOR_FD, libc::F_GETFD) } == -1 {
            return Err(format!("fd 3 is not open ({})", errno_name(last_errno())));
        }
        // SAFETY: fd 3 is open (checked above) and nothing else in this
        // program refers to it; the TAKEN flag guarantees that ownership is
        // transferred into an OwnedFd exactly once.
        let fd = unsafe { OwnedFd::from_raw_fd(SUPERVISOR_FD) };
        let sock = UnixStream::from(fd);
        // getsockname fails (and std rejects non-AF_UNIX families) unless fd 3
        // really is a Unix socket.
        sock.local_addr()
            .map_err(|e| format!("fd 3 is not a Unix socket: {e}"))?;
        Ok(Client {
            sock,
            reader: LineReader::default(),
            stash: Vec::new(),
            next_id: 1000,
        })
    }

    fn send_raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        (&self.sock)
            .write_all(bytes)
            .map_err(|e| format!("writing to the supervisor: {e}"))
    }

    /// The next reply: a stashed one first, otherwise the next line read.
    fn next_any(&mut self, deadline: Instant) -> Result<Value, String> {
        if !self.stash.is_empty() {
            return Ok(self.stash.remove(0));
        }
        self.read_message(deadline)
    }

    fn read_message(&mut self, deadline: Instant) -> Result<Value, String> {
        let line = self.reader.next_line(&self.sock, deadline)?;
        serde_json::from_slice(&line).map_err(|e| {
            let shown = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
            format!("unparsable reply {shown:?}: {e}")
        })
    }

    /// Waits for the first reply matching `pred`; other replies are stashed.
    fn wait_for(
        &mut self,
        deadline: Instant,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Result<Value, String> {
        if let Some(i) = self.stash.iter().position(&mut pred) {
            return Ok(self.stash.remove(i));
        }
        loop {
            let reply = self.read_message(deadline)?;
            if pred(&reply) {
                return Ok(reply);
            }
            self.stash.push(reply);
        }
    }

    fn call_with_timeout(
        &mut self,
        call: &str,
        args: Value,
        timeout: Duration,
    ) -> Result<Reply, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut line = serde_json::to_vec(&json!({"id": id, "call": call, "args": args}))
            .map_err(|e| format!("encoding {call}: {e}"))?;
        line.push(b'\n');
        self.send_raw(&line)?;
        let reply = self.wait_for(Instant::now() + timeout, |r| reply_id(r) == Some(id))?;
        Ok(Reply::from_value(&reply))
    }

    fn call(&mut self, call: &str, args: Value) -> Result<Reply, String> {
        self.call_with_timeout(call, args, CALL_TIMEOUT)
    }

    /// A call whose ERROR reply is also turned into `Err`.
    fn call_ok(&mut self, call: &str, args: Value) -> Result<Value, String> {
        match self.call(call, args)? {
            Reply::Success(result) => Ok(result),
            Reply::Error { code, message } => Err(format!("{call} failed: {code}: {message}")),
        }
    }

    fn fs_write(&mut self, path: &str, content: &str) -> Result<(), String> {
        self.call_ok("FS_WRITE", json!({"path": path, "content": content}))
            .map(|_| ())
    }
}

/// Writes `report` as pretty JSON to `/report.json` in the workspace.
fn write_report(client: &mut Client, report: &Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    client.fs_write("/report.json", &text)
}

/// Leaves through SYS_EXIT; falls back to a plain exit if the supervisor
/// neither kills us nor closes the connection.
fn exit_via_supervisor(client: Option<&mut Client>, code: i32) -> ! {
    if let Some(client) = client {
        match client.call_with_timeout("SYS_EXIT", json!({"code": code}), Duration::from_secs(5)) {
            Ok(Reply::Success(_)) => {}
            Ok(Reply::Error { code, message }) => {
                eprintln!("probe: SYS_EXIT refused: {code}: {message}");
            }
            // The supervisor may close the connection instead of replying.
            Err(e) => eprintln!("probe: SYS_EXIT: {e}"),
        }
    }
    std::process::exit(code)
}

/// SYS_EXIT, then says on stdout whether it was answered and waits: the
/// supervisor must end the agent itself, after the reply.
fn exit_and_wait(client: &mut Client, code: i32) -> ! {
    match client.call_with_timeout("SYS_EXIT", json!({"code": code}), Duration::from_secs(5)) {
        Ok(Reply::Success(_)) => println!("SYS_EXIT answered"),
        Ok(Reply::Error { code, message }) => println!("SYS_EXIT refused: {code}: {message}"),
        Err(e) => println!("SYS_EXIT not answered: {e}"),
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The agent sees its own cgroup as the root of every hierarchy (its cgroup
/// namespace was made after it joined): no path of the host's tree shows.
fn check_cgroup_namespace() -> CheckResult {
    let text =
        fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let ok = !lines.is_empty() && lines.iter().all(|l| l.ends_with(":/"));
    Ok(Verdict::new(
        ok,
        format!("/proc/self/cgroup: {}", lines.join(" | ")),
    ))
}

/// `/` can be listed, and holds only the sandbox's own entries: the system
/// binds, /etc, /dev, /proc, /tmp, /workspace, and where the program is
/// bound (the first component of its path).
fn check_root_listing() -> CheckResult {
    let mut names: Vec<String> = fs::read_dir("/")
        .map_err(|e| format!("listing /: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let program_top = exe
        .components()
        .nth(1)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    let expected = [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "proc",
        "sbin",
        "tmp",
        "usr",
        "workspace",
    ];
    let foreign: Vec<&String> = names
        .iter()
        .filter(|n| !expected.contains(&n.as_str()) && **n != program_top)
        .collect();
    let ok = foreign.is_empty() && names.iter().any(|n| n == "workspace");
    Ok(Verdict::new(
        ok,
        format!("/ holds {names:?}; not the sandbox's own: {foreign:?}"),
    ))
}

// ---------------------------------------------------------------------------
// Forked-child experiments
// ---------------------------------------------------------------------------

/// How a forked experiment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChildEnd {
    /// The child ran the experiment and reported this value-or-negative-errno.
    Returned(i64),
    /// The child was killed by this signal before it could report.
    Signaled(i32),
    /// The child exited without reporting (should not happen).
    Exited(i32),
    /// The child hung and was killed.
    TimedOut,
}

/// Value a child reports when the experiment itself panicked.
const CHILD_PANICKED: i64 = i64::MIN;

impl ChildEnd {
    fn describe(self) -> String {
        match self {
            ChildEnd::Returned(CHILD_PANICKED) => "experiment panicked in the child".to_string(),
            ChildEnd::Returned(v) => describe_result(v),
            ChildEnd::Signaled(sig) => format!("child killed by {}", signal_name(sig)),
            ChildEnd::Exited(code) => format!("child exited with {code} without reporting"),
            ChildEnd::TimedOut => "child hung and was killed".to_string(),
        }
    }
}

fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGSYS => "SIGSYS",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGILL => "SIGILL",
        libc::SIGBUS => "SIGBUS",
        libc::SIGABRT => "SIGABRT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGTRAP => "SIGTRAP",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

const CHILD_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `experiment` in a forked child and returns how it ended. The child
/// sends the experiment's i64 result back through a pipe, then `_exit`s.
///
/// Must only be called while the probe is single-threaded.
fn in_child(experiment: impl FnOnce() -> i64) -> Result<ChildEnd, String> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two descriptors for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(format!("pipe2: {}", errno_name(last_errno())));
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by us.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };

    // SAFETY: the probe is single-threaded when it runs experiments, so the
    // child gets a consistent copy of the process; the child only runs the
    // experiment (raw syscalls) and then write(2)/_exit(2), never returning.
    let pid = unsafe { libc::fork() };
    if pid == -1 {
        return Err(format!("fork: {}", errno_name(last_errno())));
    }
    if pid == 0 {
        child_report(experiment, write_end.as_raw_fd());
    }
    drop(write_end);

    let mut reader = File::from(read_end);
    let mut buf = [0u8; 8];
    let mut got = 0;
    let mut timed_out = false;
    let deadline = Instant::now() + CHILD_TIMEOUT;
    while got < buf.len() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: reader.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(remaining.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `pfd` is a valid pollfd that outlives the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ready == -1 && last_errno() == libc::EINTR {
            continue;
        }
        if ready == 0 {
            timed_out = true;
            break;
        }
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if timed_out {
        // SAFETY: `pid` is our own unreaped child, so it cannot be a recycled pid.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let status = reap(pid)?;
    Ok(if timed_out {
        ChildEnd::TimedOut
    } else if got == buf.len() {
        ChildEnd::Returned(i64::from_ne_bytes(buf))
    } else if libc::WIFSIGNALED(status) {
        ChildEnd::Signaled(libc::WTERMSIG(status))
    } else {
        ChildEnd::Exited(libc::WEXITSTATUS(status))
    })
}

/// Child side of [`in_child`]: run, report, `_exit`.
fn child_report(experiment: impl FnOnce() -> i64, report_fd: RawFd) -> ! {
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit only reads the valid rlimit struct; failure is harmless.
    // A child killed by SIGSYS must not leave core files behind.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    let value = panic::catch_unwind(AssertUnwindSafe(experiment)).unwrap_or(CHILD_PANICKED);
    let bytes = value.to_ne_bytes();
    // SAFETY: `bytes` is valid for its length and `report_fd` is the pipe's
    // write end inherited from the parent. `_exit` ends the child without
    // running destructors or exit handlers that belong to the parent.
    unsafe {
        libc::write(report_fd, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(0)
    }
}

/// Waits for child `pid` to terminate and returns its wait status. A child
/// that is merely stopped (e.g. ptrace-stopped) is killed first.
fn reap(pid: libc::pid_t) -> Result<libc::c_int, String> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid out-pointer for waitpid.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r == -1 {
            if last_errno() == libc::EINTR {
                continue;
            }
            return Err(format!("waitpid({pid}): {}", errno_name(last_errno())));
        }
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            return Ok(status);
        }
        // SAFETY: `pid` is our own unreaped child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Forks a child that just waits to be killed, runs `with_pid` on it, then
/// kills and reaps it.
fn with_idle_child<T>(with_pid: impl FnOnce(libc::pid_t) -> T) -> Result<T, String> {
    // SAFETY: getpid takes no arguments.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the probe is single-threaded here; the child only calls
    // async-signal-safe functions (prctl, getppid, pause, _exit).
    let pid = unsafe { libc::fork() };
    if pid == -1 {
        return Err(format!("fork: {}", errno_name(last_errno())));
    }
    if pid == 0 {
        // SAFETY: prctl/getppid/pause/_exit are async-signal-safe and touch no
        // shared state; the loop never returns into the parent's code.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(0);
            }
            loop {
                libc::pause();
            }
        }
    }
    let result = with_pid(pid);
    // SAFETY: `pid` is our own unreaped child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    reap(pid)?;
    Ok(result)
}

// ---------------------------------------------------------------------------
// Check framework
// ---------------------------------------------------------------------------

/// The outcome of one check: `ok` means the confinement held.
struct Verdict {
    ok: bool,
    detail: String,
}

impl Verdict {
    fn new(ok: bool, detail: impl Into<String>) -> Verdict {
        Verdict {
            ok,
            detail: detail.into(),
        }
    }
}

/// `Err` is an unexpected error: the check could not decide and counts as failed.
type CheckResult = Result<Verdict, String>;

struct Check {
    name: String,
    ok: bool,
    detail: String,
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".to_string()
    }
}

/// Runs one check, turning errors and panics into failures, and prints its
/// one-line summary.
fn run_check(name: impl Into<String>, check: impl FnOnce() -> CheckResult) -> Check {
    let name = name.into();
    let (ok, detail) = match panic::catch_unwind(AssertUnwindSafe(check)) {
        Ok(Ok(verdict)) => (verdict.ok, verdict.detail),
        Ok(Err(e)) => (false, format!("error: {e}")),
        Err(payload) => (false, format!("panic: {}", panic_message(payload.as_ref()))),
    };
    println!("[{}] {name}: {detail}", if ok { " ok " } else { "FAIL" });
    Check { name, ok, detail }
}

// ---------------------------------------------------------------------------
// confine
// ---------------------------------------------------------------------------

const DEFAULT_ADMIN_SOCKET: &str = "/run/agentos/agentosd.sock";
const DEFAULT_FORBIDDEN: &[&str] = &["/etc/shadow", "/root", "/home", "/var/lib", "/etc/ssh"];
const WORKSPACE: &str = "/workspace";

struct ConfineOpts {
    other_pid: Option<libc::pid_t>,
    other_workspace: Option<PathBuf>,
    admin_socket: PathBuf,
    forbidden: Vec<PathBuf>,
}

impl ConfineOpts {
    fn parse(args: &[String]) -> Result<ConfineOpts, String> {
        let mut opts = ConfineOpts {
            other_pid: None,
            other_workspace: None,
            admin_socket: PathBuf::from(DEFAULT_ADMIN_SOCKET),
            forbidden: DEFAULT_FORBIDDEN.iter().map(PathBuf::from).collect(),
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--other-pid" => {
                    let pid = value
                        .parse()
                        .map_err(|_| format!("invalid --other-pid {value:?}"))?;
                    opts.other_pid = Some(pid);
                }
                "--other-workspace" => opts.other_workspace = Some(PathBuf::from(value)),
                "--admin-socket" => opts.admin_socket = PathBuf::from(value),
                "--forbidden" => opts.forbidden.push(PathBuf::from(value)),
                _ => return Err(format!("unknown option {flag:?}")),
            }
        }
        Ok(opts)
    }
}

fn run_confine(args: &[String]) -> i32 {
    let opts = match ConfineOpts::parse(args) {
        Ok(opts) => opts,
        Err(e) => return usage_error(&e),
    };
    // Without a supervisor the checks still run and print; only the report
    // cannot be written (and the open_fds check will notice fd 3 is missing).
    let mut client = match Client::from_inherited_fd() {
        Ok(client) => Some(client),
        Err(e) => {
            eprintln!("probe: no supervisor connection ({e}); report will not be written");
            None
        }
    };

    let checks = confine_checks(&opts);
    let all_ok = checks.iter().all(|c| c.ok);
    let held = checks.iter().filter(|c| c.ok).count();
    println!(
        "confine: {held}/{} checks held; all_ok={all_ok}",
        checks.len()
    );

    let report = json!({
        "checks": checks
            .iter()
            .map(|c| json!({"name": c.name, "ok": c.ok, "detail": c.detail}))
            .collect::<Vec<_>>(),
        "info": confine_info(),
        "all_ok": all_ok,
    });
    let mut code = if all_ok { 0 } else { 1 };
    if let Some(client) = client.as_mut() {
        if let Err(e) = write_report(client, &report) {
            eprintln!("probe: could not write /report.json: {e}");
            code = 1;
        }
    }
    exit_via_supervisor(client.as_mut(), code)
}

/// Runs every confinement check, in order. The fd and /proc checks come first
/// so that they see the process exactly as the supervisor started it.
fn confine_checks(opts: &ConfineOpts) -> Vec<Check> {
    let mut checks = vec![
        run_check("open_fds", check_open_fds),
        run_check("proc_pids", check_proc_pids),
        run_check("uid_gid", check_uid_gid),
        run_check("proc_status", check_proc_status),
    ];
    for path in &opts.forbidden {
        checks.push(run_check(format!("read_denied:{}", path.display()), || {
            check_read_denied(path, EmptyDir::Harmless)
        }));
    }
    for dir in ["/", "/usr", "/etc", "/var", "/proc/self", "/dev"] {
        checks.push(run_check(format!("write_denied:{dir}"), || {
            check_write_denied(Path::new(dir))
        }));
    }
    checks.extend([
        run_check("write_allowed:workspace+tmp", check_write_allowed),
        run_check("socket_denied:inet+netlink+packet", check_sockets_denied),
        run_check("socket_allowed:unix", check_unix_socket_allowed),
        run_check("ptrace_traceme", check_ptrace_traceme),
        run_check("ptrace_attach+seize", check_ptrace_attach),
        run_check("unshare:user", || check_unshare(libc::CLONE_NEWUSER)),
        run_check("unshare:mount", || check_unshare(libc::CLONE_NEWNS)),
        run_check("unshare:net", || check_unshare(libc::CLONE_NEWNET)),
        run_check("setns:net", check_setns),
        run_check("mount:tmpfs", check_mount),
        run_check("clone:newuser", check_clone_newuser),
        run_check("clone3:enosys", check_clone3),
        run_check("syscall:x32", check_x32_syscall),
        run_check("syscall:int80", check_int80_syscall),
        run_check("ioctl:TIOCSTI", || check_tty_ioctl(libc::TIOCSTI, 0)),
        run_check("ioctl:TIOCLINUX", || {
            // Subcode 6 (TIOCL_GETSHIFTSTATE) only reads; harmless if allowed.
            check_tty_ioctl(libc::TIOCLINUX, 6)
        }),
        run_check("syscall:io_uring_setup", || {
            check_syscall_denied(try_io_uring_setup)
        }),
        run_check("syscall:bpf", || check_syscall_denied(try_bpf)),
        run_check("syscall:perf_event_open", || {
            check_syscall_denied(try_perf_event_open)
        }),
        run_check("syscall:userfaultfd", || {
            check_syscall_denied(try_userfaultfd)
        }),
        run_check("syscall:keyctl", || check_syscall_denied(try_keyctl)),
        run_check("hostname", check_hostname),
        run_check("admin_socket", || check_admin_socket(&opts.admin_socket)),
    ]);
    if let Some(pid) = opts.other_pid {
        checks.push(run_check("other_pid", || check_other_pid(pid)));
    }
    if let Some(path) = &opts.other_workspace {
        checks.push(run_check("other_workspace", || {
            check_read_denied(path, EmptyDir::Leak)
        }));
    }
    checks.extend([
        run_check("setuid_root", check_setuid_root),
        run_check("chown_workspace", check_chown_workspace),
        run_check("network_interfaces", check_network_interfaces),
        run_check("root_listing", check_root_listing),
        run_check("cgroup_namespace", check_cgroup_namespace),
    ]);
    checks
}

/// Facts that are reported but are not pass/fail.
fn confine_info() -> Value {
    let sys_entries = fs::read_dir("/sys").map(|d| d.count()).ok();
    json!({
        "pid": std::process::id(),
        "sys_present": Path::new("/sys").exists(),
        "sys_entries": sys_entries,
    })
}

// --- fds, pids, identity ---------------------------------------------------

/// Exactly fds 0-3 are open: stdin, stdout, stderr and the supervisor socket.
fn check_open_fds() -> CheckResult {
    let listed: Vec<RawFd> = fs::read_dir("/proc/self/fd")
        .map_err(|e| format!("listing /proc/self/fd: {e}"))?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // The directory handle used for listing is closed now, so it no longer
    // resolves; every descriptor that still resolves was really open.
    let mut open: Vec<(RawFd, String)> = listed
        .into_iter()
        .filter_map(|fd| {
            let target = fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
            Some((fd, target.display().to_string()))
        })
        .collect();
    open.sort();
    let fds: Vec<RawFd> = open.iter().map(|(fd, _)| *fd).collect();
    let detail = open
        .iter()
        .map(|(fd, target)| format!("{fd}->{target}"))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(Verdict::new(
        fds == [0, 1, 2, 3],
        format!("open fds: {detail}"),
    ))
}

/// Reads a "Key:\tvalue" field from a /proc status file.
fn status_field(status: &str, key: &str) -> Option<String> {
    status.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == key).then(|| v.trim().to_string())
    })
}

/// The probe is pid 1 of its own pid namespace and /proc shows only that
/// namespace: a handful of pids, all descending from pid 1.
fn check_proc_pids() -> CheckResult {
    let me = std::process::id();
    let self_link = fs::read_link("/proc/self")
        .map_err(|e| format!("readlink /proc/self: {e}"))?
        .display()
        .to_string();
    let mut pids: Vec<u32> = fs::read_dir("/proc")
        .map_err(|e| format!("listing /proc: {e}"))?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();

    let mut strangers = Vec::new();
    for &pid in &pids {
        // Walk up the parent chain; a chain that ends in ppid 0 anywhere but
        // at pid 1 was started outside our init's family.
        let mut cur = pid;
        let mut steps = 0;
        while cur != 1 && steps < 64 {
            let Ok(status) = fs::read_to_string(format!("/proc/{cur}/status")) else {
                break; // exited meanwhile
            };
            cur = status_field(&status, "PPid")
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            if cur == 0 {
                strangers.push(pid);
                break;
            }
            steps += 1;
        }
    }
    let ok = me == 1 && self_link == me.to_string() && pids.len() < 10 && strangers.is_empty();
    Ok(Verdict::new(
        ok,
        format!(
            "getpid={me}, /proc/self->{self_link}, pids in /proc: {}, not descending from 1: {}",
            short_list(&pids),
            short_list(&strangers)
        ),
    ))
}

/// Formats at most 20 items of a list, with the total if there are more.
fn short_list(items: &[u32]) -> String {
    const SHOWN: usize = 20;
    let head: Vec<String> = items.iter().take(SHOWN).map(u32::to_string).collect();
    if items.len() > SHOWN {
        format!("[{}, ... ({} in all)]", head.join(", "), items.len())
    } else {
        format!("[{}]", head.join(", "))
    }
}

/// Real, effective and saved ids are equal and not root; no root group.
fn check_uid_gid() -> CheckResult {
    let (mut ruid, mut euid, mut suid) = (0, 0, 0);
    let (mut rgid, mut egid, mut sgid) = (0, 0, 0);
    // SAFETY: the three pointers are valid, distinct out-parameters.
    let ru = unsafe { libc::getresuid(&mut ruid, &mut euid, &mut suid) };
    // SAFETY: as above.
    let rg = unsafe { libc::getresgid(&mut rgid, &mut egid, &mut sgid) };
    if ru != 0 || rg != 0 {
        return Err(format!("getresuid/getresgid: {}", errno_name(last_errno())));
    }
    let mut groups = vec![0 as libc::gid_t; 256];
    let len = libc::c_int::try_from(groups.len()).unwrap_or(0);
    // SAFETY: `groups` has room for `len` entries.
    let n = unsafe { libc::getgroups(len, groups.as_mut_ptr()) };
    let n = usize::try_from(n).map_err(|_| format!("getgroups: {}", errno_name(last_errno())))?;
    groups.truncate(n);

    let uids_ok = ruid != 0 && ruid == euid && euid == suid;
    let gids_ok = rgid != 0 && rgid == egid && egid == sgid;
    let groups_ok = !groups.contains(&0);
    Ok(Verdict::new(
        uids_ok && gids_ok && groups_ok,
        format!("uid r/e/s={ruid}/{euid}/{suid} gid r/e/s={rgid}/{egid}/{sgid} groups={groups:?}"),
    ))
}

/// No capabilities in any set, no_new_privs on, seccomp in filter mode.
fn check_proc_status() -> CheckResult {
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("reading /proc/self/status: {e}"))?;
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for cap in ["CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"] {
        let value = status_field(&status, cap);
        let zero = value
            .as_deref()
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            == Some(0);
        if !zero {
            problems.push(format!("{cap} not 0"));
        }
        seen.push(format!("{cap}={}", value.as_deref().unwrap_or("missing")));
    }
    for (key, want) in [("NoNewPrivs", "1"), ("Seccomp", "2")] {
        let value = status_field(&status, key);
        if value.as_deref() != Some(want) {
            problems.push(format!("{key} not {want}"));
        }
        seen.push(format!("{key}={}", value.as_deref().unwrap_or("missing")));
    }
    let detail = if problems.is_empty() {
        seen.join(" ")
    } else {
        format!("{}; {}", problems.join(", "), seen.join(" "))
    };
    Ok(Verdict::new(problems.is_empty(), detail))
}

// --- filesystem --------------------------------------------------------------

/// What an empty directory at a forbidden path means.
#[derive(Clone, Copy, PartialEq, Eq)]
enum EmptyDir {
    /// Nothing of the host is visible through it (e.g. a bare mount point).
    Harmless,
    /// Its mere presence is a leak (another agent's workspace).
    Leak,
}

/// Opening (and listing or reading) `path` must fail.
fn check_read_denied(path: &Path, empty_dir: EmptyDir) -> CheckResult {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) => {
            return match e.raw_os_error() {
                Some(libc::ENOENT | libc::ENOTDIR) => Ok(Verdict::new(
                    true,
                    format!("not present ({})", io_error_name(&e)),
                )),
                Some(libc::EACCES | libc::EPERM) => Ok(Verdict::new(
                    true,
                    format!("denied ({})", io_error_name(&e)),
                )),
                _ => Err(format!("unexpected error opening: {e}")),
            };
        }
    };
    let meta = file.metadata().map_err(|e| format!("fstat: {e}"))?;
    if !meta.is_dir() {
        let mut byte = [0u8; 1];
        return match (&file).read(&mut byte) {
            Ok(n) => Ok(Verdict::new(false, format!("opened and read {n} byte(s)"))),
            Err(e) => Ok(Verdict::new(
                false,
                format!("opened (read then failed: {})", io_error_name(&e)),
            )),
        };
    }
    match fs::read_dir(path) {
        Ok(entries) => {
            let names: Vec<String> = entries
                .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect();
            if names.is_empty() {
                let harmless = empty_dir == EmptyDir::Harmless;
                Ok(Verdict::new(
                    harmless,
                    if harmless {
                        "directory present but empty: nothing of the host visible"
                    } else {
                        "directory present (empty) and listable"
                    },
                ))
            } else {
                let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
                Ok(Verdict::new(
                    false,
                    format!("listed {} entries, e.g. {shown:?}", names.len()),
                ))
            }
        }
        Err(e) => Ok(Verdict::new(
            matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)),
            format!("directory opened, listing failed: {}", io_error_name(&e)),
        )),
    }
}

fn probe_file_name() -> String {
    format!("agentos-probe-{}.tmp", std::process::id())
}

/// Creating a new file in `dir` must fail.
fn check_write_denied(dir: &Path) -> CheckResult {
    let path = dir.join(probe_file_name());
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(_) => {
            let removed = fs::remove_file(&path).is_ok();
            Ok(Verdict::new(
                false,
                format!("created {} (removed again: {removed})", path.display()),
            ))
        }
        // EEXIST is checked before permissions, so it proves nothing.
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            Err(format!("{} already exists; inconclusive", path.display()))
        }
        Err(e) => Ok(Verdict::new(
            true,
            format!("denied ({})", io_error_name(&e)),
        )),
    }
}

/// Writes in /workspace and /tmp must succeed: proof the write checks are not
/// vacuous (e.g. a probe that cannot write anywhere).
fn check_write_allowed() -> CheckResult {
    let mut results = Vec::new();
    let mut ok = true;
    for dir in [WORKSPACE, "/tmp"] {
        let path = Path::new(dir).join(probe_file_name());
        let content = b"agentos probe write test\n";
        let outcome = fs::write(&path, content).and_then(|()| fs::read(&path));
        let _ = fs::remove_file(&path);
        match outcome {
            Ok(back) if back == content => results.push(format!("{dir}: written")),
            Ok(_) => {
                ok = false;
                results.push(format!("{dir}: read back different content"));
            }
            Err(e) => {
                ok = false;
                results.push(format!("{dir}: {}", io_error_name(&e)));
            }
        }
    }
    Ok(Verdict::new(ok, results.join(", ")))
}

// --- sockets -----------------------------------------------------------------

/// Tries socket(2); closes the descriptor if it was created.
fn try_socket(domain: libc::c_int, ty: libc::c_int, protocol: libc::c_int) -> i64 {
    // SAFETY: socket(2) takes no pointers.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) };
    let result = sys_result(libc::c_long::from(fd));
    if result >= 0 {
        close_fd(result);
    }
    result
}

/// Every non-Unix socket family must be refused.
fn check_sockets_denied() -> CheckResult {
    let eth_p_all = libc::c_int::from((libc::ETH_P_ALL as u16).to_be());
    let attempts = [
        ("inet/stream", libc::AF_INET, libc::SOCK_STREAM, 0),
        ("inet/dgram", libc::AF_INET, libc::SOCK_DGRAM, 0),
        ("inet6/stream", libc::AF_INET6, libc::SOCK_STREAM, 0),
        (
            "netlink/route",
            libc::AF_NETLINK,
            libc::SOCK_RAW,
            libc::NETLINK_ROUTE,
        ),
        ("packet/raw", libc::AF_PACKET, libc::SOCK_RAW, eth_p_all),
        ("vsock/stream", libc::AF_VSOCK, libc::SOCK_STREAM, 0),
    ];
    let mut ok = true;
    let mut results = Vec::new();
    for (name, domain, ty, protocol) in attempts {
        let r = try_socket(domain, ty, protocol);
        ok &= r < 0;
        results.push(format!("{name}: {}", describe_result(r)));
    }
    Ok(Verdict::new(ok, results.join(", ")))
}

/// AF_UNIX sockets must work (the socket checks are not vacuous).
fn check_unix_socket_allowed() -> CheckResult {
    let r = try_socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
    Ok(Verdict::new(
        r >= 0,
        format!("unix/stream: {}", describe_result(r)),
    ))
}

// --- ptrace --------------------------------------------------------------------

fn raw_ptrace(request: libc::c_uint, pid: libc::pid_t) -> i64 {
    // SAFETY: the ptrace requests used here (TRACEME, ATTACH, SEIZE) take no
    // pointer arguments; addr and data are zero.
    let r = unsafe {
        libc::syscall(
            libc::SYS_ptrace,
            libc::c_long::from(request),
            libc::c_long::from(pid),
            0 as libc::c_long,
            0 as libc::c_long,
        )
    };
    sys_result(r)
}

/// PTRACE_TRACEME must fail. Tried in a child so that, if it works, the probe
/// itself never becomes a tracee of the supervisor.
fn check_ptrace_traceme() -> CheckResult {
    let end = in_child(|| raw_ptrace(libc::PTRACE_TRACEME, 0))?;
    let ok = match end {
        ChildEnd::Returned(v) => v < 0 && v != CHILD_PANICKED,
        ChildEnd::Signaled(_) => true,
        ChildEnd::Exited(_) | ChildEnd::TimedOut => false,
    };
    Ok(Verdict::new(
        ok,
        format!("PTRACE_TRACEME: {}", end.describe()),
    ))
}

/// Attaching to (or seizing) our own child must fail.
fn check_ptrace_attach() -> CheckResult {
    let attach = with_idle_child(|pid| raw_ptrace(libc::PTRACE_ATTACH, pid))?;
    let seize = with_idle_child(|pid| raw_ptrace(libc::PTRACE_SEIZE as libc::c_uint, pid))?;
    Ok(Verdict::new(
        attach < 0 && seize < 0,
        format!(
            "PTRACE_ATTACH: {}, PTRACE_SEIZE: {}",
            describe_result(attach),
            describe_result(seize)
        ),
    ))
}

// --- namespaces, mount, clone ----------------------------------------------------

/// An experiment in a child must have reported a failure (or been killed).
fn child_failed(end: ChildEnd) -> bool {
    match end {
        ChildEnd::Returned(v) => v < 0 && v != CHILD_PANICKED,
        ChildEnd::Signaled(_) => true,
        ChildEnd::Exited(_) | ChildEnd::TimedOut => false,
    }
}

/// unshare(flag) must fail; tried in a child so a success changes nothing here.
fn check_unshare(flag: libc::c_int) -> CheckResult {
    let end = in_child(|| {
        // SAFETY: unshare takes no pointers; it only affects the forked child.
        let r = unsafe { libc::unshare(flag) };
        sys_result(r.into())
    })?;
    Ok(Verdict::new(child_failed(end), end.describe()))
}

/// Re-entering even our own network namespace via setns must fail (it needs
/// CAP_SYS_ADMIN, and the seccomp filter should refuse setns outright).
fn check_setns() -> CheckResult {
    let ns = File::open("/proc/self/ns/net").map_err(|e| format!("open /proc/self/ns/net: {e}"))?;
    let fd = ns.as_raw_fd();
    let end = in_child(|| {
        // SAFETY: setns takes no pointers; `fd` stays open until `ns` is
        // dropped, after the child has been reaped.
        let r = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
        sys_result(r.into())
    })?;
    Ok(Verdict::new(
        child_failed(end),
        format!("setns(net): {}", end.describe()),
    ))
}

/// Child reports this when it created a mount namespace but could not make it
/// private, and therefore refused to mount anything.
const MOUNT_NOT_ISOLATED: i64 = 1;

/// mount("tmpfs", "/tmp", "tmpfs") must fail. The child first tries to move
/// into a private mount namespace (which the sandbox refuses) so that a
/// successful mount, e.g. when run unconfined, can never propagate to the host.
fn check_mount() -> CheckResult {
    let end = in_child(|| {
        let c = |s: &str| CString::new(s).unwrap_or_default();
        let (root, tmp, tmpfs) = (c("/"), c("/tmp"), c("tmpfs"));
        // SAFETY: unshare takes no pointers.
        let unshared = unsafe { libc::unshare(libc::CLONE_NEWNS) } == 0;
        if unshared {
            // SAFETY: `root` is a valid C string; the other pointers may be null
            // for a propagation change.
            let private = unsafe {
                libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                )
            };
            if private != 0 {
                return MOUNT_NOT_ISOLATED;
            }
        }
        // SAFETY: all strings are valid C strings; data may be null.
        let r = unsafe {
            libc::mount(
                tmpfs.as_ptr(),
                tmp.as_ptr(),
                tmpfs.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        let result = sys_result(libc::c_long::from(r));
        if result == 0 {
            // SAFETY: `tmp` is a valid C string.
            unsafe { libc::umount2(tmp.as_ptr(), libc::MNT_DETACH) };
        }
        result
    })?;
    let detail = match end {
        ChildEnd::Returned(MOUNT_NOT_ISOLATED) => {
            "unshare(CLONE_NEWNS) succeeded but the namespace could not be made private; did not mount".to_string()
        }
        ChildEnd::Returned(0) => "mounted tmpfs on /tmp (unmounted again)".to_string(),
        other => format!("mount tmpfs on /tmp: {}", other.describe()),
    };
    let ok = child_failed(end);
    Ok(Verdict::new(ok, detail))
}

/// A raw clone(CLONE_NEWUSER) must fail.
fn check_clone_newuser() -> CheckResult {
    let flags = libc::c_long::from(libc::CLONE_NEWUSER | libc::SIGCHLD);
    // SAFETY: without CLONE_VM and with a null stack, clone behaves like fork:
    // the child runs on a copy-on-write copy of our stack and immediately
    // calls _exit, touching nothing else.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    };
    if ret == 0 {
        // SAFETY: we are the new child; leave at once without running any
        // of the parent's cleanup.
        unsafe { libc::_exit(0) };
    }
    let result = sys_result(ret);
    if result > 0 {
        let pid = libc::pid_t::try_from(result).map_err(|e| e.to_string())?;
        reap(pid)?;
        return Ok(Verdict::new(
            false,
            format!("clone(CLONE_NEWUSER) created child {pid}"),
        ));
    }
    Ok(Verdict::new(
        true,
        format!("clone(CLONE_NEWUSER): {}", describe_result(result)),
    ))
}

/// The first 64 bytes of `struct clone_args` (CLONE_ARGS_SIZE_VER0).
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

/// clone3 must fail with ENOSYS, so that libc falls back to clone (which the
/// filter can inspect). The arguments form a plain, valid fork request.
fn check_clone3() -> CheckResult {
    let args = CloneArgs {
        flags: 0,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
    };
    // SAFETY: `args` is a valid clone_args of the size passed. With no
    // CLONE_VM and no stack this is a fork; the child calls _exit at once.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret == 0 {
        // SAFETY: we are the new child; leave at once.
        unsafe { libc::_exit(0) };
    }
    let result = sys_result(ret);
    if result > 0 {
        let pid = libc::pid_t::try_from(result).map_err(|e| e.to_string())?;
        reap(pid)?;
    }
    Ok(Verdict::new(
        result == -i64::from(libc::ENOSYS),
        format!("clone3: {}", describe_result(result)),
    ))
}

// --- foreign syscall ABIs ------------------------------------------------------

/// Held if the child reported an error or was killed; breached if the call
/// returned a value.
fn abi_verdict(end: ChildEnd) -> Verdict {
    let ok = child_failed(end);
    let how = match end {
        ChildEnd::Signaled(_) => "killed",
        ChildEnd::Returned(v) if v < 0 => "returned an error",
        ChildEnd::Returned(_) => "returned a value: the call went through",
        ChildEnd::Exited(_) | ChildEnd::TimedOut => "inconclusive",
    };
    Verdict::new(ok, format!("{how}: {}", end.describe()))
}

/// getpid through the x32 ABI (nr | 0x40000000) must not go through.
#[cfg(target_arch = "x86_64")]
fn check_x32_syscall() -> CheckResult {
    const X32_SYSCALL_BIT: libc::c_long = 0x4000_0000;
    let end = in_child(|| {
        // SAFETY: getpid takes no arguments and touches no memory, whatever ABI.
        let r = unsafe { libc::syscall(libc::SYS_getpid | X32_SYSCALL_BIT) };
        sys_result(r)
    })?;
    Ok(abi_verdict(end))
}

/// getpid through `int 0x80` (i386 syscall 20) must not return a pid.
#[cfg(target_arch = "x86_64")]
fn check_int80_syscall() -> CheckResult {
    let end = in_child(|| {
        let ret: u64;
        // SAFETY: `int 0x80` with eax=20 is i386 getpid: it takes no
        // arguments and touches no user memory. The kernel's compat entry
        // zeroes r8-r11 on return, declared as clobbered; the interrupt uses
        // the kernel stack, not ours.
        unsafe {
            core::arch::asm!(
                "int 0x80",
                inlateout("rax") 20u64 => ret,
                lateout("r8") _,
                lateout("r9") _,
                lateout("r10") _,
                lateout("r11") _,
            );
        }
        // The i386 return value is the low 32 bits, negative on error.
        i64::from(ret as u32 as i32)
    })?;
    Ok(abi_verdict(end))
}

#[cfg(not(target_arch = "x86_64"))]
fn check_x32_syscall() -> CheckResult {
    Err("x32 syscalls only exist on x86_64".to_string())
}

#[cfg(not(target_arch = "x86_64"))]
fn check_int80_syscall() -> CheckResult {
    Err("int 0x80 only exists on x86".to_string())
}

// --- ioctl and dangerous syscalls ------------------------------------------------

/// A terminal-injection ioctl must fail on every standard descriptor.
/// EPERM on all of them is the signature of the seccomp filter; ENOTTY only
/// says the descriptor is not a terminal.
fn check_tty_ioctl(request: libc::Ioctl, first_byte: u8) -> CheckResult {
    let mut ok = true;
    let mut results = Vec::new();
    for fd in 0..=2 {
        let mut arg = [first_byte, 0, 0, 0];
        // SAFETY: both TIOCSTI and TIOCLINUX read (and TIOCLINUX subcode 6
        // writes) a single byte at the pointer; `arg` has room for four.
        let r = unsafe { libc::ioctl(fd, request, arg.as_mut_ptr()) };
        let result = sys_result(libc::c_long::from(r));
        ok &= result < 0;
        results.push(format!("fd{fd}: {}", describe_result(result)));
    }
    let seccomp = if !ok {
        ""
    } else if results.iter().all(|r| r.ends_with("EPERM")) {
        " (EPERM everywhere: refused by seccomp)"
    } else {
        " (not refused by seccomp: failed only because no fd is a terminal)"
    };
    Ok(Verdict::new(ok, format!("{}{seccomp}", results.join(", "))))
}

/// A dangerous syscall, called with valid arguments, must be refused by
/// policy (EPERM/EACCES/ENOSYS), not just rejected for bad arguments.
fn check_syscall_denied(attempt: fn() -> i64) -> CheckResult {
    let result = attempt();
    Ok(Verdict::new(is_denial(result), describe_result(result)))
}

/// io_uring_setup(1 entry); closes the ring on success.
fn try_io_uring_setup() -> i64 {
    let mut params = [0u8; 120]; // struct io_uring_params
    // SAFETY: `params` is a zeroed io_uring_params of the right size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            1 as libc::c_long,
            params.as_mut_ptr(),
        )
    };
    let result = sys_result(r);
    if result >= 0 {
        close_fd(result);
    }
    result
}

/// bpf(BPF_MAP_CREATE) of a one-element array map; closes the map on success.
fn try_bpf() -> i64 {
    let mut attr = [0u32; 32]; // union bpf_attr, zero tail
    attr[0] = 2; // map_type = BPF_MAP_TYPE_ARRAY
    attr[1] = 4; // key_size
    attr[2] = 4; // value_size
    attr[3] = 1; // max_entries
    // SAFETY: `attr` is a valid bpf_attr buffer of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0 as libc::c_long, // BPF_MAP_CREATE
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    let result = sys_result(r);
    if result >= 0 {
        close_fd(result);
    }
    result
}

/// perf_event_open of a disabled software clock on ourselves; closes it on success.
fn try_perf_event_open() -> i64 {
    let mut attr = [0u32; 32]; // struct perf_event_attr, zero tail
    attr[0] = 1; // type = PERF_TYPE_SOFTWARE (config 0 = PERF_COUNT_SW_CPU_CLOCK)
    attr[1] = 64; // size = PERF_ATTR_SIZE_VER0
    attr[10] = 1 | (1 << 5) | (1 << 6); // disabled | exclude_kernel | exclude_hv
    // SAFETY: `attr` is a valid perf_event_attr buffer; the other arguments
    // are plain integers (self, any cpu, no group, no flags).
    let r = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_mut_ptr(),
            0 as libc::c_long,
            -1 as libc::c_long,
            -1 as libc::c_long,
            0 as libc::c_long,
        )
    };
    let result = sys_result(r);
    if result >= 0 {
        close_fd(result);
    }
    result
}

/// userfaultfd in user-mode-only form (allowed to unprivileged users by
/// default); closes it on success.
fn try_userfaultfd() -> i64 {
    const UFFD_USER_MODE_ONLY: libc::c_long = 1;
    // SAFETY: userfaultfd takes only flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_userfaultfd,
            libc::c_long::from(libc::O_CLOEXEC) | UFFD_USER_MODE_ONLY,
        )
    };
    let result = sys_result(r);
    if result >= 0 {
        close_fd(result);
    }
    result
}

/// keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, no create).
fn try_keyctl() -> i64 {
    // SAFETY: this keyctl operation takes only integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            0 as libc::c_long,  // KEYCTL_GET_KEYRING_ID
            -3 as libc::c_long, // KEY_SPEC_SESSION_KEYRING
            0 as libc::c_long,
        )
    };
    sys_result(r)
}

// --- host visibility -------------------------------------------------------------

/// The UTS namespace carries the supervisor-assigned "agent-..." hostname.
fn check_hostname() -> CheckResult {
    // SAFETY: utsname is plain old data; all-zero is a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid out-pointer.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return Err(format!("uname: {}", errno_name(last_errno())));
    }
    // SAFETY: the kernel NUL-terminates nodename within the array.
    let name = unsafe { CStr::from_ptr(uts.nodename.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    Ok(Verdict::new(
        name.starts_with("agent-"),
        format!("hostname {name:?}"),
    ))
}

/// The supervisor's admin socket must be unreachable. The abstract name
/// "\0agentos" is only reported (it is per network namespace).
fn check_admin_socket(path: &Path) -> CheckResult {
    let (ok, path_result) = match UnixStream::connect(path) {
        Ok(_) => (false, "connected!".to_string()),
        Err(e) => (true, io_error_name(&e)),
    };
    let abstract_result = match SocketAddr::from_abstract_name(b"agentos")
        .and_then(|addr| UnixStream::connect_addr(&addr))
    {
        Ok(_) => "connected".to_string(),
        Err(e) => io_error_name(&e),
    };
    Ok(Verdict::new(
        ok,
        format!(
            "connect {}: {path_result}; abstract @agentos (report only): {abstract_result}",
            path.display()
        ),
    ))
}

/// Signals to another agent's host pid must not arrive (the pid is not even
/// visible from our pid namespace). This really sends SIGKILL if it can.
fn check_other_pid(pid: libc::pid_t) -> CheckResult {
    if pid <= 1 || u32::try_from(pid).ok() == Some(std::process::id()) {
        return Err(format!("pid {pid} is ourselves or init here; inconclusive"));
    }
    // SAFETY: kill takes no pointers; signal 0 only checks permissions.
    let probe = sys_result(unsafe { libc::kill(pid, 0) }.into());
    // SAFETY: kill takes no pointers. Sending SIGKILL is the point of the test.
    let kill = sys_result(unsafe { libc::kill(pid, libc::SIGKILL) }.into());
    // SAFETY: kill takes no pointers; signal 0 only checks permissions.
    let everyone = sys_result(unsafe { libc::kill(-1, 0) }.into());
    Ok(Verdict::new(
        probe < 0 && kill < 0,
        format!(
            "kill({pid}, 0): {}, kill({pid}, SIGKILL): {}, kill(-1, 0) (report only): {}",
            describe_result(probe),
            describe_result(kill),
            describe_result(everyone)
        ),
    ))
}

/// Becoming root must fail. Tried in children so that success changes
/// nothing in the probe itself.
fn check_setuid_root() -> CheckResult {
    let uid = in_child(|| {
        // SAFETY: setuid takes no pointers; it only affects the forked child.
        let r = unsafe { libc::setuid(0) };
        sys_result(r.into())
    })?;
    let gid = in_child(|| {
        // SAFETY: setgid takes no pointers; it only affects the forked child.
        let r = unsafe { libc::setgid(0) };
        sys_result(r.into())
    })?;
    Ok(Verdict::new(
        child_failed(uid) && child_failed(gid),
        format!(
            "setuid(0): {}, setgid(0): {}",
            uid.describe(),
            gid.describe()
        ),
    ))
}

/// Giving /workspace to root must be refused (EPERM/EACCES). chmod is only
/// reported: the agent may own its workspace. Ownership and mode are restored
/// if a change goes through.
fn check_chown_workspace() -> CheckResult {
    let meta = fs::metadata(WORKSPACE).map_err(|e| format!("stat {WORKSPACE}: {e}"))?;
    let chmod =
        match fs::set_permissions(WORKSPACE, fs::Permissions::from_mode(meta.mode() & 0o7777)) {
            Ok(()) => "allowed".to_string(),
            Err(e) => io_error_name(&e),
        };
    match std::os::unix::fs::chown(WORKSPACE, Some(0), Some(0)) {
        Ok(()) => {
            let restored =
                std::os::unix::fs::chown(WORKSPACE, Some(meta.uid()), Some(meta.gid())).is_ok();
            Ok(Verdict::new(
                false,
                format!("chown to root succeeded (restored: {restored}); chmod: {chmod}"),
            ))
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => Ok(Verdict::new(
            true,
            format!(
                "chown to root: {}; chmod (report only): {chmod}",
                io_error_name(&e)
            ),
        )),
        Err(e) => Err(format!("chown to root: unexpected {e}")),
    }
}

/// Interface flags through SIOCGIFFLAGS on a Unix socket (works in any family).
fn interface_flags(name: &str) -> Option<libc::c_int> {
    let sock = try_socket_fd(libc::AF_UNIX, libc::SOCK_DGRAM)?;
    let mut ifreq = [0u8; 40]; // struct ifreq: 16-byte name, then a union
    let bytes = name.as_bytes();
    if bytes.len() >= 16 {
        return None;
    }
    ifreq[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: `ifreq` is a NUL-terminated name followed by room for the
    // union that SIOCGIFFLAGS fills in.
    let r = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCGIFFLAGS as _,
            ifreq.as_mut_ptr(),
        )
    };
    (r == 0).then(|| libc::c_int::from(u16::from_ne_bytes([ifreq[16], ifreq[17]])))
}

fn try_socket_fd(domain: libc::c_int, ty: libc::c_int) -> Option<OwnedFd> {
    // SAFETY: socket(2) takes no pointers.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, 0) };
    // SAFETY: a non-negative result is a new descriptor that we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Network interface names from /sys/class/net, or /proc/net/dev without /sys.
fn interface_names() -> Result<(Vec<String>, &'static str), String> {
    if let Ok(entries) = fs::read_dir("/sys/class/net") {
        let mut names: Vec<String> = entries
            .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        return Ok((names, "/sys/class/net"));
    }
    let dev =
        fs::read_to_string("/proc/net/dev").map_err(|e| format!("reading /proc/net/dev: {e}"))?;
    let names = dev
        .lines()
        .skip(2)
        .filter_map(|line| Some(line.split_once(':')?.0.trim().to_string()))
        .collect();
    Ok((names, "/proc/net/dev"))
}

/// The only network interface is loopback.
fn check_network_interfaces() -> CheckResult {
    let (names, source) = interface_names()?;
    let mut ok = true;
    let mut described = Vec::new();
    for name in &names {
        let flags = interface_flags(name);
        let loopback = match flags {
            Some(f) => f & libc::IFF_LOOPBACK != 0,
            None => name == "lo",
        };
        ok &= loopback;
        let state = match flags {
            Some(f) if f & libc::IFF_UP != 0 => "up",
            Some(_) => "down",
            None => "flags unknown",
        };
        let kind = if loopback { "loopback" } else { "NOT loopback" };
        described.push(format!("{name} ({kind}, {state})"));
    }
    Ok(Verdict::new(
        ok,
        format!("from {source}: {}", described.join(", ")),
    ))
}

// ---------------------------------------------------------------------------
// forkbomb
// ---------------------------------------------------------------------------

const FORKBOMB_TIME_CAP: Duration = Duration::from_secs(20);
const FORKBOMB_FORK_CAP: u64 = 5_000;
const FORKBOMB_CHILD_SLEEP_SECS: libc::c_uint = 30;

/// Forks as fast as possible until the time or fork cap, then reports how
/// many forks succeeded and the first error (the pids limit should yield
/// EAGAIN long before the caps).
fn run_forkbomb(client: &mut Client) -> i32 {
    // SAFETY: getpid takes no arguments.
    let top = unsafe { libc::getpid() };
    let start = Instant::now();
    let mut children = Vec::new();
    let mut forks_ok: u64 = 0;
    let mut fork_errors: u64 = 0;
    let mut first_error: Option<String> = None;
    while start.elapsed() < FORKBOMB_TIME_CAP && forks_ok < FORKBOMB_FORK_CAP {
        // SAFETY: this mode is single-threaded; the child only calls
        // async-signal-safe functions in `bomb_child` and never returns.
        let pid = unsafe { libc::fork() };
        match pid {
            -1 => {
                fork_errors += 1;
                if first_error.is_none() {
                    let e = last_errno();
                    first_error = Some(format!("{} (errno {e})", errno_name(e)));
                    println!(
                        "forkbomb: first fork error after {forks_ok} forks: {}",
                        first_error.as_deref().unwrap_or("")
                    );
                }
            }
            0 => bomb_child(top),
            child => {
                forks_ok += 1;
                children.push(child);
            }
        }
    }
    let elapsed = start.elapsed();
    let stopped_by = if forks_ok >= FORKBOMB_FORK_CAP {
        "fork cap"
    } else {
        "time cap"
    };
    println!(
        "forkbomb: stopped by {stopped_by} after {forks_ok} forks, {fork_errors} failures, {elapsed:?}"
    );

    // Clean up: kill our children (their own children die with them through
    // PR_SET_PDEATHSIG) and reap whatever we can within a few seconds.
    for &child in &children {
        // SAFETY: each pid is our own unreaped child.
        unsafe { libc::kill(child, libc::SIGKILL) };
    }
    let reap_deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < reap_deadline {
        // SAFETY: a null status pointer is allowed.
        let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG | libc::__WALL) };
        if r == -1 && last_errno() == libc::ECHILD {
            break;
        }
        if r == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    let report = json!({
        "forks_ok": forks_ok,
        "first_error": first_error,
        "fork_errors": fork_errors,
        "stopped_by": stopped_by,
        "elapsed_ms": u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
    });
    let code = match write_report(client, &report) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("probe: could not write /report.json: {e}");
            1
        }
    };
    exit_via_supervisor(Some(client), code)
}

/// A bomb child forks exactly once more, then both sleep and exit. Both die
/// with their parent (PR_SET_PDEATHSIG), so the bomb is bounded.
fn bomb_child(parent: libc::pid_t) -> ! {
    // SAFETY: only async-signal-safe calls (prctl, getppid, getpid, fork,
    // sleep, _exit) in a freshly forked child; it never returns.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(0);
        }
        let me = libc::getpid();
        if libc::fork() == 0 {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != me {
                libc::_exit(0);
            }
        }
        libc::sleep(FORKBOMB_CHILD_SLEEP_SECS);
        libc::_exit(0)
    }
}

// ---------------------------------------------------------------------------
// balloon
// ---------------------------------------------------------------------------

const BALLOON_STEP_MIB: usize = 16;

/// Allocates and touches memory until `mib` MiB; a memory limit should kill
/// the probe long before.
fn run_balloon(client: &mut Client, mib: usize) -> i32 {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut reached = 0;
    while reached < mib {
        let step = BALLOON_STEP_MIB.min(mib - reached);
        let mut chunk = Vec::new();
        if let Err(e) = chunk.try_reserve_exact(step << 20) {
            println!("balloon: allocation failed at {reached} MiB: {e}");
            let report = json!({"reached_mib": reached, "error": e.to_string()});
            if let Err(e) = write_report(client, &report) {
                eprintln!("probe: could not write /report.json: {e}");
            }
            exit_via_supervisor(Some(client), 1);
        }
        // Filling writes every byte, so every page is really backed.
        chunk.resize(step << 20, 0xa5);
        chunks.push(chunk);
        reached += step;
        println!("balloon: {reached} MiB");
        let _ = fs::write("/tmp/balloon-progress", format!("{reached}\n"));
    }
    std::hint::black_box(&chunks);
    let code = match write_report(client, &json!({"reached_mib": reached})) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("probe: could not write /report.json: {e}");
            1
        }
    };
    exit_via_supervisor(Some(client), code)
}

// ---------------------------------------------------------------------------
// abuse
// ---------------------------------------------------------------------------

const OVERSIZED_LINE: usize = 10 << 20;
const FLOOD_COUNT: u64 = 20_000;
const FLOOD_FIRST_ID: u64 = 1_000_000;
const FLOOD_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
const ABUSE_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

struct AbuseResult {
    name: &'static str,
    ok: bool,
    detail: String,
    codes: Vec<String>,
}

/// Sends bad input and checks every reply; the connection must survive.
fn run_abuse(client: &mut Client) -> i32 {
    type Test = fn(&mut Client) -> Result<AbuseResult, String>;
    let tests: [(&'static str, Test); 5] = [
        ("oversized_line", abuse_oversized_line),
        ("invalid_json", abuse_invalid_json),
        ("unknown_call", abuse_unknown_call),
        ("wrong_arg_types", abuse_wrong_types),
        ("flood", abuse_flood),
    ];
    let mut results = Vec::new();
    for (name, test) in tests {
        let result = match panic::catch_unwind(AssertUnwindSafe(|| test(client))) {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => AbuseResult {
                name,
                ok: false,
                detail: format!("error: {e}"),
                codes: Vec::new(),
            },
            Err(p) => AbuseResult {
                name,
                ok: false,
                detail: format!("panic: {}", panic_message(p.as_ref())),
                codes: Vec::new(),
            },
        };
        println!(
            "[{}] {}: {} (codes seen: {:?})",
            if result.ok { " ok " } else { "FAIL" },
            result.name,
            result.detail,
            result.codes
        );
        results.push(result);
    }
    let all_ok = results.iter().all(|r| r.ok);
    let report = json!({
        "tests": results
            .iter()
            .map(|r| json!({"name": r.name, "ok": r.ok, "detail": r.detail, "codes": r.codes}))
            .collect::<Vec<_>>(),
        "all_ok": all_ok,
    });
    let mut code = if all_ok { 0 } else { 1 };
    if let Err(e) = write_report(client, &report) {
        eprintln!("probe: could not write /report.json: {e}");
        code = 1;
    }
    exit_via_supervisor(Some(client), code)
}

/// Reads replies (stashed ones first) until one satisfies `pred` or the
/// timeout passes; returns every reply seen and the matching one, if any.
fn collect_until(
    client: &mut Client,
    timeout: Duration,
    mut pred: impl FnMut(&Value) -> bool,
) -> (Vec<Value>, Option<Value>) {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while let Ok(reply) = client.next_any(deadline) {
        if pred(&reply) {
            seen.push(reply.clone());
            return (seen, Some(reply));
        }
        seen.push(reply);
    }
    (seen, None)
}

fn codes_of(replies: &[Value]) -> Vec<String> {
    replies
        .iter()
        .map(|r| match r.get("id") {
            Some(Value::Null) | None => format!("{} (id null)", reply_code(r)),
            Some(id) => format!("{} (id {id})", reply_code(r)),
        })
        .collect()
}

/// GETPID still answers with SUCCESS.
fn getpid_works(client: &mut Client) -> Result<(), String> {
    let result = client.call_ok("GETPID", json!({}))?;
    result
        .get("pid")
        .and_then(Value::as_i64)
        .map(|_| ())
        .ok_or_else(|| format!("GETPID result without pid: {result}"))
}

/// (a) A 10 MiB line gets EMSGSIZE, and the connection keeps working.
fn abuse_oversized_line(client: &mut Client) -> Result<AbuseResult, String> {
    let mut line = br#"{"id":1,"call":"GETPID","args":{"pad":""#.to_vec();
    line.resize(OVERSIZED_LINE, b'a');
    client
        .sock
        .set_write_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    client.send_raw(&line)?;
    client.send_raw(b"\n")?;
    let (seen, found) = collect_until(client, ABUSE_REPLY_TIMEOUT, |r| reply_code(r) == "EMSGSIZE");
    let mut codes = codes_of(&seen);
    let after = getpid_works(client);
    codes.push(format!(
        "GETPID afterwards: {}",
        after
            .as_ref()
            .map_or_else(Clone::clone, |()| "SUCCESS".to_string())
    ));
    Ok(AbuseResult {
        name: "oversized_line",
        ok: found.is_some() && after.is_ok(),
        detail: format!(
            "sent a {} MiB line; EMSGSIZE {}; connection {}",
            OVERSIZED_LINE >> 20,
            if found.is_some() {
                "received"
            } else {
                "NOT received"
            },
            if after.is_ok() {
                "still works"
            } else {
                "broken"
            }
        ),
        codes,
    })
}

/// Sends one raw line and waits for the reply that `pred` recognises.
fn expect_reply(
    client: &mut Client,
    name: &'static str,
    line: &[u8],
    expectation: &str,
    mut pred: impl FnMut(&Value) -> bool,
    want_code: &str,
) -> Result<AbuseResult, String> {
    client.send_raw(line)?;
    let (seen, found) = collect_until(client, ABUSE_REPLY_TIMEOUT, &mut pred);
    let codes = codes_of(&seen);
    let (ok, detail) = match found {
        Some(reply) if reply_code(&reply) == want_code => {
            (true, format!("{expectation}: got {want_code}"))
        }
        Some(reply) => (
            false,
            format!(
                "{expectation}: got {} instead of {want_code}",
                reply_code(&reply)
            ),
        ),
        None => (false, format!("{expectation}: no such reply")),
    };
    Ok(AbuseResult {
        name,
        ok,
        detail,
        codes,
    })
}

/// (b) Unparsable JSON gets EINVAL with id null.
fn abuse_invalid_json(client: &mut Client) -> Result<AbuseResult, String> {
    expect_reply(
        client,
        "invalid_json",
        b"{this is not json\n",
        "reply with id null",
        |r| r.get("id") == Some(&Value::Null) && reply_code(r) != "EMSGSIZE",
        "EINVAL",
    )
}

/// (c) An unknown call gets ENOSYS.
fn abuse_unknown_call(client: &mut Client) -> Result<AbuseResult, String> {
    expect_reply(
        client,
        "unknown_call",
        b"{\"id\":2,\"call\":\"NOPE\"}\n",
        "reply to id 2",
        |r| reply_id(r) == Some(2),
        "ENOSYS",
    )
}

/// (d) Arguments of the wrong type get EINVAL.
fn abuse_wrong_types(client: &mut Client) -> Result<AbuseResult, String> {
    expect_reply(
        client,
        "wrong_arg_types",
        b"{\"id\":3,\"call\":\"SEND_MSG\",\"args\":{\"to\":\"x\",\"body\":5}}\n",
        "reply to id 3",
        |r| reply_id(r) == Some(3),
        "EINVAL",
    )
}

/// (e) 20,000 pipelined GETPIDs all get SUCCESS, then GETPID still works.
fn abuse_flood(client: &mut Client) -> Result<AbuseResult, String> {
    let ids = FLOOD_FIRST_ID..FLOOD_FIRST_ID + FLOOD_COUNT;
    client
        .sock
        .set_write_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut successes: HashSet<u64> = HashSet::new();
    let mut duplicates = 0u64;
    let mut out_of_order = 0u64;
    let mut other_codes: BTreeMap<String, u64> = BTreeMap::new();
    let mut read_error = None;

    let sock: &UnixStream = &client.sock;
    let reader = &mut client.reader;
    let stash = &mut client.stash;
    let write_result = std::thread::scope(|scope| {
        let writer = scope.spawn(|| -> Result<(), String> {
            let mut batch = Vec::with_capacity(64 * 1024);
            for id in ids.clone() {
                batch.extend_from_slice(
                    format!("{{\"id\":{id},\"call\":\"GETPID\",\"args\":{{}}}}\n").as_bytes(),
                );
                if batch.len() >= 60 * 1024 {
                    (&*sock)
                        .write_all(&batch)
                        .map_err(|e| format!("flood write: {e}"))?;
                    batch.clear();
                }
            }
            (&*sock)
                .write_all(&batch)
                .map_err(|e| format!("flood write: {e}"))
        });

        let mut highest = 0u64;
        let mut received = 0u64;
        while received < FLOOD_COUNT {
            // Give up early if the supervisor goes quiet: lost replies would
            // otherwise keep us here until the overall deadline.
            let wait_until = deadline.min(Instant::now() + FLOOD_IDLE_TIMEOUT);
            let line = match reader.next_line(sock, wait_until) {
                Ok(line) => line,
                Err(e) => {
                    read_error = Some(e);
                    break;
                }
            };
            let reply: Value = match serde_json::from_slice(&line) {
                Ok(v) => v,
                Err(e) => {
                    *other_codes
                        .entry(format!("unparsable reply: {e}"))
                        .or_default() += 1;
                    continue;
                }
            };
            let Some(id) = reply_id(&reply).filter(|id| ids.contains(id)) else {
                stash.push(reply);
                continue;
            };
            received += 1;
            if id < highest {
                out_of_order += 1;
            }
            highest = highest.max(id);
            match reply_code(&reply).as_str() {
                "SUCCESS" => {
                    if !successes.insert(id) {
                        duplicates += 1;
                    }
                }
                code => *other_codes.entry(code.to_string()).or_default() += 1,
            }
        }
        writer
            .join()
            .unwrap_or_else(|p| Err(format!("writer panicked: {}", panic_message(p.as_ref()))))
    });

    let after = getpid_works(client);
    let mut codes = vec![format!("SUCCESS x{}", successes.len())];
    codes.extend(other_codes.iter().map(|(code, n)| format!("{code} x{n}")));
    let ok = successes.len() as u64 == FLOOD_COUNT
        && duplicates == 0
        && other_codes.is_empty()
        && write_result.is_ok()
        && read_error.is_none()
        && after.is_ok();
    let mut detail = format!(
        "{} of {FLOOD_COUNT} GETPIDs succeeded ({duplicates} duplicate replies, {out_of_order} out of order); GETPID afterwards: {}",
        successes.len(),
        match &after {
            Ok(()) => "SUCCESS".to_string(),
            Err(e) => e.clone(),
        }
    );
    if let Err(e) = &write_result {
        detail.push_str(&format!("; writer: {e}"));
    }
    if let Some(e) = &read_error {
        detail.push_str(&format!("; reader: {e}"));
    }
    Ok(AbuseResult {
        name: "flood",
        ok,
        detail,
        codes,
    })
}

// ---------------------------------------------------------------------------
// echo, send
// ---------------------------------------------------------------------------

/// Echoes every message back to its sender until a message says "exit".
fn run_echo(client: &mut Client) -> i32 {
    loop {
        let reply = client.call_with_timeout(
            "RECV_MSG",
            json!({"wait_ms": 30_000}),
            Duration::from_secs(30) + CALL_TIMEOUT,
        );
        let result = match reply {
            Ok(Reply::Success(result)) => result,
            Ok(Reply::Error { code, message }) => {
                eprintln!("echo: RECV_MSG failed: {code}: {message}");
                exit_via_supervisor(Some(client), 1);
            }
            Err(e) => {
                eprintln!("echo: RECV_MSG: {e}");
                exit_via_supervisor(Some(client), 1);
            }
        };
        let messages = result
            .get("messages")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for message in messages {
            let body = match message.get("body") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            if body == "exit" {
                println!("echo: exit requested");
                exit_via_supervisor(Some(client), 0);
            }
            let Some(from) = message.get("from").cloned() else {
                eprintln!("echo: message without sender: {message}");
                continue;
            };
            if from == json!(0) {
                // From an admin (`agentos send`): there is no agent to answer.
                println!("echo: admin says {body:?}");
                continue;
            }
            match client.call(
                "SEND_MSG",
                json!({"to": from, "body": format!("echo:{body}")}),
            ) {
                Ok(Reply::Success(_)) => println!("echo: echoed {body:?} to {from}"),
                Ok(Reply::Error { code, message }) => {
                    eprintln!("echo: SEND_MSG to {from} failed: {code}: {message}");
                }
                Err(e) => {
                    eprintln!("echo: SEND_MSG: {e}");
                    exit_via_supervisor(Some(client), 1);
                }
            }
        }
    }
}

/// Sends `count` messages to `to`, recording each ack's sequence number.
fn run_send(client: &mut Client, to: i64, count: u64) -> i32 {
    let mut acked: Vec<Value> = Vec::new();
    for i in 0..count {
        match client.call("SEND_MSG", json!({"to": to, "body": format!("msg-{i}")})) {
            Ok(Reply::Success(result)) => {
                acked.push(result.get("seq").cloned().unwrap_or(Value::Null));
                println!("acked {i}");
                if let Err(e) = write_report(client, &json!({"acked": acked})) {
                    eprintln!("probe: could not write /report.json: {e}");
                    exit_via_supervisor(Some(client), 1);
                }
            }
            Ok(Reply::Error { code, message }) => {
                eprintln!("send: message {i} refused: {code}: {message}");
                let report = json!({"acked": acked, "error": {"index": i, "code": code, "message": message}});
                if let Err(e) = write_report(client, &report) {
                    eprintln!("probe: could not write /report.json: {e}");
                }
                exit_via_supervisor(Some(client), 1);
            }
            Err(e) => {
                eprintln!("send: SEND_MSG: {e}");
                exit_via_supervisor(Some(client), 1);
            }
        }
    }
    if count == 0 {
        if let Err(e) = write_report(client, &json!({"acked": acked})) {
            eprintln!("probe: could not write /report.json: {e}");
            exit_via_supervisor(Some(client), 1);
        }
    }
    exit_via_supervisor(Some(client), 0)
}
