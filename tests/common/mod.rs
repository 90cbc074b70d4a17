//! Shared harness of the integration tests: start a real `agentosd` on a
//! throw-away state directory, talk to it through the real admin socket,
//! and locate the in-sandbox probe and helper agents.
//!
//! Privileged tests call [`require_root`] first: as a normal user they are
//! skipped with a loud message; under CI (`CI` set) a skip is a failure.
#![allow(dead_code)]

use agentos::admin::client::{Client, ClientError};
use agentos::admin::protocol::{AdminRequest, MAX_PAGE, SpawnRequest};
use agentos::kernel::ipc::Message;
use agentos::kernel::pcb::{ExitStatus, Pcb};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Returns false (after a loud message) when the test cannot run because
/// we are not root; panics instead under CI.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: privileged test must run as root in CI, refusing to skip");
    }
    eprintln!(
        "\n!!!!! SKIPPED {test}: needs root (namespaces, cgroups, uids). Run the tests as root. !!!!!\n"
    );
    false
}

static INSTANCE: AtomicU32 = AtomicU32::new(0);

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Path of a cargo example binary (built by `cargo test`).
pub fn example(name: &str) -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_agentosd"));
    let p = bin
        .parent()
        .expect("target dir")
        .join("examples")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: run the tests with plain `cargo test` (it builds the examples as binaries), or `cargo build --examples` first",
        p.display()
    );
    p
}

pub fn probe() -> PathBuf {
    example("probe")
}

/// A request to run `tests/agents/<script>` under /usr/bin/python3 with
/// `args`; `tests/agents` is bound read-only so the script and `aos.py`
/// are visible. `permissions: None` means the profile's defaults.
pub fn python_agent(
    name: &str,
    script: &str,
    args: &[&str],
    permissions: Option<&[&str]>,
) -> SpawnRequest {
    let agents = repo().join("tests/agents");
    let mut argv = vec![agents.join(script).display().to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    SpawnRequest {
        name: name.into(),
        program: "/usr/bin/python3".into(),
        args: argv,
        permissions: permissions.map(|p| p.iter().map(|s| s.to_string()).collect()),
        ro: vec![agents.display().to_string()],
        ..Default::default()
    }
}

/// Runs the `agentos` CLI against daemon `d` with `args`.
pub fn agentos(d: &Daemon, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_agentos"))
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .output()
        .expect("run agentos")
}

/// A running daemon on its own state directory, socket, cgroup and uid range.
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub cgroup_name: String,
    pub uid_range: (u32, u32),
    pub extra_args: Vec<String>,
    /// A command the daemon runs under (e.g. `fiu-run -x`), if any.
    pub wrapper: Vec<String>,
}

impl Daemon {
    pub fn start() -> Daemon {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Daemon {
        Self::start_prepared(extra, |_| {})
    }

    /// Like [`Daemon::start_with`], with `prepare` run on the (not yet
    /// existing) state directory first, e.g. to mount a filesystem there.
    pub fn start_prepared(extra: &[&str], prepare: impl FnOnce(&Path)) -> Daemon {
        let n = INSTANCE.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("agentos-test-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        // Every test process gets its own uid block so parallel daemons
        // never hand out the same agent uid.
        let block = (std::process::id() % 1000) * 20 + n % 20;
        let first = 600_000 + block * 200;
        let mut d = Daemon {
            child: None,
            socket: dir.join("agentosd.sock"),
            dir,
            cgroup_name: format!("agentos-test-{tag}"),
            uid_range: (first, first + 199),
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            wrapper: Vec::new(),
        };
        prepare(&d.state_dir());
        d.launch();
        d
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Starts (or restarts) the daemon process and waits for its socket.
    pub fn launch(&mut self) {
        self.start_process();
        self.wait_ready();
    }

    /// Starts the daemon process without waiting for it.
    pub fn start_process(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .expect("daemon log");
        let mut cmd = match self.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(env!("CARGO_BIN_EXE_agentosd"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_agentosd")),
        };
        if !self.extra_args.iter().any(|a| a == "--policies") {
            cmd.arg("--policies").arg(repo().join("policies"));
        }
        // Parallel test daemons must not all bind the default webhook port:
        // the listener is off unless the test configures it.
        let config_has_webhooks = self
            .extra_args
            .iter()
            .position(|a| a == "--config")
            .and_then(|i| self.extra_args.get(i + 1))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .is_some_and(|t| t.contains("[webhooks]"));
        if !config_has_webhooks && !self.extra_args.iter().any(|a| a == "--webhooks-listen") {
            cmd.arg("--webhooks-listen").arg("off");
        }
        if !self
            .extra_args
            .iter()
            .any(|a| a == "--workspace-image-size")
        {
            cmd.arg("--workspace-image-size").arg("256M");
        }
        let child = cmd
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--socket")
            .arg(&self.socket)
            .arg("--launcher")
            .arg(env!("CARGO_BIN_EXE_agentos-launcher"))
            .arg("--cgroup-name")
            .arg(&self.cgroup_name)
            .arg("--uid-range")
            .arg(format!("{}-{}", self.uid_range.0, self.uid_range.1))
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start agentosd");
        self.child = Some(child);
    }

    /// Waits until the admin socket answers.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if Client::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("agentosd exited with {status}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("agentosd did not come up:\n{}", self.log());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("daemon running")
    }

    /// SIGKILLs the daemon, like a crash.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.socket).expect("connect to the admin socket")
    }

    pub fn call(&self, req: AdminRequest) -> Result<Value, ClientError> {
        self.client().call(&req)
    }

    /// Spawns an agent; panics with the daemon log on failure.
    pub fn spawn(&self, req: SpawnRequest) -> Pcb {
        match self.call(AdminRequest::Spawn(Box::new(req))) {
            Ok(v) => serde_json::from_value(v).expect("pcb"),
            Err(e) => panic!("spawn failed: {e}\n{}", self.log()),
        }
    }

    /// Spawns the probe with `args` and the given permissions.
    pub fn spawn_probe(&self, name: &str, args: &[&str], permissions: &[&str]) -> Pcb {
        self.spawn(SpawnRequest {
            name: name.into(),
            program: probe().display().to_string(),
            args: args.iter().map(|s| s.to_string()).collect(),
            permissions: Some(permissions.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        })
    }

    /// Waits for the agent, requires exit code 0 and returns its report.
    pub fn finish(&self, pid: u64, timeout: Duration) -> Value {
        let exit = self.wait(pid, timeout);
        assert_eq!(
            exit.code,
            0,
            "agent {pid} failed: {exit:?}\nagent log:\n{}\ndaemon log:\n{}",
            self.logs(pid),
            self.log()
        );
        self.report(pid)
    }

    pub fn wait(&self, pid: u64, timeout: Duration) -> ExitStatus {
        let v = self
            .call(AdminRequest::Wait {
                pid,
                timeout_ms: Some(timeout.as_millis() as u64),
            })
            .unwrap_or_else(|e| panic!("wait {pid}: {e}\n{}", self.log()));
        serde_json::from_value(v["exit"].clone()).expect("exit status")
    }

    pub fn inspect(&self, pid: u64) -> Pcb {
        serde_json::from_value(self.call(AdminRequest::Inspect { pid }).expect("inspect"))
            .expect("pcb")
    }

    /// The agent's PCB once its program runs (it has a host pid), within 5 s.
    pub fn running(&self, pid: u64) -> Pcb {
        eventually(Duration::from_secs(5), || {
            let p = self.inspect(pid);
            p.host_pid.map(|_| p)
        })
        .unwrap_or_else(|| panic!("agent {pid} did not start running"))
    }

    /// The agent's stored log events (stdout, stderr, syscalls), up to the
    /// largest page.
    pub fn log_events(&self, pid: u64) -> Vec<Value> {
        let v = self
            .call(AdminRequest::Logs {
                pid,
                follow: false,
                tail: Some(MAX_PAGE),
                since: None,
            })
            .expect("logs");
        v.as_array().cloned().unwrap_or_default()
    }

    /// The agent's inbox, up to the largest page (an error if the daemon
    /// does not answer, e.g. while it restarts).
    pub fn try_inbox(&self, pid: u64) -> Result<Vec<Message>, ClientError> {
        let v = self.call(AdminRequest::Inbox {
            pid,
            tail: Some(MAX_PAGE),
            since: None,
        })?;
        Ok(serde_json::from_value(v).expect("messages"))
    }

    /// The agent's inbox, up to the largest page.
    pub fn inbox(&self, pid: u64) -> Vec<Message> {
        self.try_inbox(pid)
            .unwrap_or_else(|e| panic!("inbox {pid}: {e}\n{}", self.log()))
    }

    /// The agent's stored log (stdout, stderr, syscalls) as text.
    pub fn logs(&self, pid: u64) -> String {
        self.log_events(pid)
            .iter()
            .map(|e| {
                format!(
                    "{} {}\n",
                    e["stream"].as_str().unwrap_or(""),
                    e["text"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    pub fn workspace(&self, pid: u64) -> PathBuf {
        self.state_dir().join("workspaces").join(pid.to_string())
    }

    /// Reads and parses `/report.json` that a probe wrote in its workspace.
    pub fn report(&self, pid: u64) -> Value {
        let p = self.workspace(pid).join("report.json");
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| {
            panic!(
                "{}: {e}\nagent log:\n{}\ndaemon log:\n{}",
                p.display(),
                self.logs(pid),
                self.log()
            )
        });
        serde_json::from_str(&text).expect("report is JSON")
    }

    /// What a still running agent wrote to its /report.json, once it did.
    pub fn report_when_written(&self, pid: u64) -> Value {
        let text = eventually(Duration::from_secs(120), || {
            std::fs::read_to_string(self.workspace(pid).join("report.json")).ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "agent {pid} reported nothing\n{}\n{}",
                self.logs(pid),
                self.log()
            )
        });
        serde_json::from_str(&text).expect("report is JSON")
    }

    /// Resident memory of the daemon in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        remove_cgroups(&self.cgroup_name);
        // The daemon's own cgroup (its memory bound), empty once it exited.
        remove_cgroups(&format!("{}.supervisor", self.cgroup_name));
        // A daemon that crashed leaves its workspace image mounted.
        let _ = nix::mount::umount2(
            &self.state_dir().join("workspaces"),
            nix::mount::MntFlags::MNT_DETACH,
        );
        if std::env::var_os("AGENTOS_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The cgroup directories of agent `pid` of the daemon named `cgroup_name`
/// (a child's are nested in its ancestors').
pub fn agent_cgroup_dirs(cgroup_name: &str, pid: u64) -> Vec<PathBuf> {
    let agent = format!("agent-{pid}");
    walk_named(Path::new("/sys/fs/cgroup"), cgroup_name)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|d| walk_named(&d, &agent).unwrap_or_default())
        .collect()
}

/// Removes the test daemon's cgroup directories (agents are gone by now).
fn remove_cgroups(name: &str) {
    let Ok(entries) = walk_named(Path::new("/sys/fs/cgroup"), name) else {
        return;
    };
    for dir in entries {
        remove_depth_first(&dir);
    }
}

/// Removes `dir` and the (nested agent) cgroup directories below it, the
/// deepest first.
fn remove_depth_first(dir: &Path) {
    if let Ok(children) = std::fs::read_dir(dir) {
        for c in children.flatten() {
            if c.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_depth_first(&c.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

fn walk_named(root: &Path, name: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        if depth > 10 {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            if e.file_name().to_string_lossy() == name {
                out.push(p);
            } else {
                stack.push((p, depth + 1));
            }
        }
    }
    Ok(out)
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// What a run of the `agentos` CLI printed.
pub struct CliOut {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOut {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

impl std::fmt::Display for CliOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A copy of `file` that any uid may read (and run, if it is a program):
/// the checkout may lie below a directory only root can enter (a clone in
/// `mktemp -d`, mode 0700). The copies live in a 0755 directory of this
/// test process.
pub fn for_others(file: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("agentos-for-others-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir for others");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let name = file.file_name().expect("a file name");
    let copy = dir.join(name);
    if !copy.exists() {
        // Copy then rename: parallel tests may ask for the same file.
        let tmp = dir.join(format!(
            "{}.{:?}",
            name.to_string_lossy(),
            std::thread::current().id()
        ));
        std::fs::copy(file, &tmp).expect("copy for others");
        std::fs::rename(&tmp, &copy).expect("rename");
    }
    copy
}

/// The `agentos` CLI where any uid may run it (see [`for_others`]).
pub fn cli_for_others() -> PathBuf {
    for_others(Path::new(env!("CARGO_BIN_EXE_agentos")))
}

/// Runs the real CLI (`--json`) against `d` as `uid`/`gid` (no
/// supplementary groups: std drops them when root sets a uid).
pub fn cli_as(d: &Daemon, uid: u32, gid: u32, args: &[&str]) -> CliOut {
    use std::os::unix::process::CommandExt;
    let out = Command::new(cli_for_others())
        .arg("--socket")
        .arg(&d.socket)
        .arg("--json")
        .args(args)
        .env_remove("AGENTOS_SOCKET")
        .current_dir("/")
        .uid(uid)
        .gid(gid)
        .output()
        .expect("run agentos");
    CliOut {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A well-behaved agent (`hostile_admin.py neighbour`) spawned now answers
/// all 20 of its GETPID round trips.
pub fn neighbour_answers(d: &Daemon, name: &str) {
    let pcb = d.spawn(python_agent(name, "hostile_admin.py", &["neighbour"], None));
    let rep = d.finish(pcb.pid, Duration::from_secs(120));
    assert_eq!(rep["pid"].as_u64(), Some(pcb.pid), "{rep}");
    assert_eq!(rep["answered"].as_u64(), Some(20), "{rep}");
}
