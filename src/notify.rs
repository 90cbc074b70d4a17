//! A minimal `sd_notify(3)` client: tells systemd (or any supervisor that
//! speaks the same protocol) that the daemon is ready, is stopping, what it
//! is doing, and that it is still alive (watchdog).
//!
//! The protocol is one datagram of newline-separated `KEY=VALUE` lines sent
//! to the `AF_UNIX` datagram socket named by `$NOTIFY_SOCKET`: an absolute
//! path, or an abstract socket name written with a leading `@`. systemd
//! learns the sender's pid from the socket credentials, so nothing else is
//! needed. Without `$NOTIFY_SOCKET` (not started by systemd, or not as
//! `Type=notify`) every call does nothing.
//!
//! Notification must never break the daemon: [`ready`], [`stopping`],
//! [`status`] and [`watchdog`] ignore failures after logging them;
//! [`notify`] returns them for callers (and tests) that care.
//!
//! Wiring in `agentosd`: [`ready`] once the admin socket listens, a task
//! sending [`watchdog`] every [`watchdog_interval`]`/2` when systemd asked
//! for one (`WatchdogSec=`), and [`stopping`] when shutdown begins.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The environment variable naming the notification socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (e.g. `"READY=1"`, several assignments separated by `\n`)
/// to `$NOTIFY_SOCKET`. `Ok(false)`: no socket is configured, nothing sent.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET) {
        None => Ok(false),
        Some(s) if s.is_empty() => Ok(false),
        Some(socket) => send_to(&socket, state).map(|()| true),
    }
}

/// Sends `state` as one datagram to the socket named `socket` (a path, or
/// `@name` for an abstract socket).
pub fn send_to(socket: &OsStr, state: &str) -> io::Result<()> {
    let addr = socket_addr(socket)?;
    let sock = UnixDatagram::unbound()?;
    let sent = sock.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("notification truncated: {sent} of {} bytes", state.len()),
        ));
    }
    Ok(())
}

fn socket_addr(socket: &OsStr) -> io::Result<SocketAddr> {
    let bytes = socket.as_bytes();
    match bytes.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        Some(b'/') => SocketAddr::from_pathname(socket),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "${NOTIFY_SOCKET} {socket:?} is neither an absolute path nor an @abstract name"
            ),
        )),
    }
}

fn notify_or_log(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!(error = %e, state, "could not notify the service manager");
    }
}

/// `READY=1`: start-up is complete (the admin socket accepts connections).
pub fn ready() {
    notify_or_log("READY=1");
}

/// `STOPPING=1`: shutdown has begun.
pub fn stopping() {
    notify_or_log("STOPPING=1");
}

/// `STATUS=...`: a one-line status shown by `systemctl status`. Newlines
/// (which would end the assignment) are replaced by spaces.
pub fn status(msg: &str) {
    notify_or_log(&status_line(msg));
}

fn status_line(msg: &str) -> String {
    format!("STATUS={}", msg.replace(['\n', '\r'], " "))
}

/// `WATCHDOG=1`: the daemon is alive. Send it at least every
/// [`watchdog_interval`] (systemd recommends every half interval).
pub fn watchdog() {
    notify_or_log("WATCHDOG=1");
}

/// The watchdog interval systemd expects pings within (`WatchdogSec=`),
/// from `$WATCHDOG_USEC`; `None` when no watchdog is configured, or when
/// `$WATCHDOG_PID` names another process (the variables were inherited).
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != me {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn temp_socket(tag: &str) -> (std::path::PathBuf, UnixDatagram) {
        let dir = std::env::temp_dir().join(format!(
            "agentos-notify-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        (path, sock)
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("a datagram");
        String::from_utf8(buf[..n].to_vec()).expect("utf-8")
    }

    #[test]
    fn sends_one_datagram_to_a_path_socket() {
        let (path, sock) = temp_socket("path");
        send_to(path.as_os_str(), "READY=1\nSTATUS=up").expect("send");
        assert_eq!(recv(&sock), "READY=1\nSTATUS=up");
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("agentos-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let sock = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        send_to(OsStr::new(&format!("@{name}")), "STOPPING=1").expect("send");
        assert_eq!(recv(&sock), "STOPPING=1");
    }

    #[test]
    fn refuses_relative_and_reports_missing_sockets() {
        let e = send_to(OsStr::new("relative/notify.sock"), "READY=1").expect_err("relative");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = send_to(OsStr::new("/nonexistent/agentos/notify.sock"), "READY=1")
            .expect_err("missing");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn status_is_one_line() {
        assert_eq!(status_line("2 agents\nrunning"), "STATUS=2 agents running");
        assert_eq!(status_line("ok"), "STATUS=ok");
    }

    #[test]
    fn watchdog_interval_parsing() {
        let me = 4242;
        assert_eq!(
            watchdog_interval_from(Some("30000000"), None, me),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_interval_from(Some("500000"), Some("4242"), me),
            Some(Duration::from_millis(500))
        );
        // Inherited from a parent that was the watchdog's target.
        assert_eq!(watchdog_interval_from(Some("500000"), Some("1"), me), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, me), None);
        assert_eq!(watchdog_interval_from(Some("soon"), None, me), None);
        assert_eq!(watchdog_interval_from(None, Some("4242"), me), None);
        assert_eq!(watchdog_interval_from(Some("500000"), Some("x"), me), None);
    }

    /// Runs `env_child` in a child process of this test binary with the
    /// given environment (the environment of this multi-threaded test
    /// process is left alone) and returns its output.
    fn run_child(env: &[(&str, &str)]) -> std::process::Output {
        let exe = std::env::current_exe().expect("test binary");
        let mut cmd = Command::new(exe);
        cmd.args([
            "--exact",
            "notify::tests::env_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_remove(NOTIFY_SOCKET)
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run the child test")
    }

    #[test]
    fn ready_status_watchdog_stopping_through_notify_socket() {
        let (path, sock) = temp_socket("env");
        let out = run_child(&[
            (NOTIFY_SOCKET, path.to_str().expect("utf-8 path")),
            ("WATCHDOG_USEC", "2000000"),
            ("AGENTOS_NOTIFY_CHILD", "expect-watchdog"),
        ]);
        assert!(
            out.status.success(),
            "child failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Exactly these datagrams, in this order, each exactly this text.
        for want in [
            "READY=1",
            "STATUS=serving 2 agents",
            "WATCHDOG=1",
            "STOPPING=1",
        ] {
            assert_eq!(recv(&sock), want);
        }
        sock.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 64];
        assert!(sock.recv(&mut buf).is_err(), "no further datagram");
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    #[test]
    fn without_notify_socket_nothing_is_sent_and_nothing_fails() {
        let out = run_child(&[("AGENTOS_NOTIFY_CHILD", "expect-nothing")]);
        assert!(
            out.status.success(),
            "child failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The child half of the two tests above (run only by them).
    #[test]
    #[ignore = "run in a child process by the NOTIFY_SOCKET tests"]
    fn env_child() {
        let mode = std::env::var("AGENTOS_NOTIFY_CHILD").expect("run by a parent test");
        match mode.as_str() {
            "expect-watchdog" => {
                // WATCHDOG_PID unset: the interval is ours.
                assert_eq!(watchdog_interval(), Some(Duration::from_secs(2)));
                assert!(notify("READY=1").expect("sent"));
                status("serving 2\nagents");
                watchdog();
                stopping();
            }
            "expect-nothing" => {
                assert_eq!(watchdog_interval(), None);
                assert!(!notify("READY=1").expect("no error"));
                ready();
                stopping();
            }
            other => panic!("unknown mode {other}"),
        }
    }
}
