//! A real `agentosd` for the bench: its own temporary state directory,
//! admin socket, cgroup name and uid range, started from the release
//! binaries next to the bench, and torn down (SIGKILL, agents reaped by
//! their parent-death signals, cgroups removed, directory deleted) on drop.

use agentos::admin::client::Client;
use agentos::admin::protocol::AdminRequest;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binaries the bench runs.
#[derive(Debug, Clone)]
pub struct Bins {
    pub agentosd: PathBuf,
    pub launcher: PathBuf,
    pub runtime: PathBuf,
    pub cli: PathBuf,
    pub agent: PathBuf,
    pub policies: PathBuf,
}

impl Bins {
    /// Binaries beside the bench (`target/<profile>/examples/..`), or in
    /// `dir` when given.
    pub fn locate(dir: Option<&Path>) -> Result<Bins, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let examples = exe.parent().ok_or("no parent dir")?.to_path_buf();
        let bin_dir = match dir {
            Some(d) => d.to_path_buf(),
            None => examples.parent().ok_or("no target dir")?.to_path_buf(),
        };
        let b = Bins {
            agentosd: bin_dir.join("agentosd"),
            launcher: bin_dir.join("agentos-launcher"),
            runtime: bin_dir.join("agentos-runtime"),
            cli: bin_dir.join("agentos"),
            agent: bin_dir.join("examples").join("bench-agent"),
            policies: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies"),
        };
        for p in [&b.agentosd, &b.launcher, &b.runtime, &b.cli, &b.agent] {
            if !p.exists() {
                return Err(format!(
                    "{} is missing: build with `cargo build --release --examples --bins` first",
                    p.display()
                ));
            }
        }
        Ok(b)
    }
}

pub struct BenchDaemon {
    child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub cgroup_name: String,
    pub uid_range: (u32, u32),
    pub config: PathBuf,
    pub bins: Bins,
    pub keep: bool,
    /// When the daemon process was last started.
    pub started: Instant,
}

impl BenchDaemon {
    pub fn start(
        bins: &Bins,
        tag: &str,
        uid_range: (u32, u32),
        config_text: &str,
        keep: bool,
    ) -> Result<BenchDaemon, String> {
        let dir = std::env::temp_dir().join(format!("agentos-bench-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let config = dir.join("agentosd.toml");
        std::fs::write(&config, config_text).map_err(|e| format!("config: {e}"))?;
        let mut d = BenchDaemon {
            child: None,
            socket: dir.join("agentosd.sock"),
            cgroup_name: format!("agentos-bench-{tag}"),
            dir,
            uid_range,
            config,
            bins: bins.clone(),
            keep,
            started: Instant::now(),
        };
        d.launch()?;
        Ok(d)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn workspace(&self, pid: u64) -> PathBuf {
        self.state_dir().join("workspaces").join(pid.to_string())
    }

    /// Starts the daemon process and waits until it answers on the admin
    /// socket (which it does only once recovery has finished).
    pub fn launch(&mut self) -> Result<(), String> {
        self.start_process()?;
        self.wait_ready(Duration::from_secs(600))
    }

    pub fn start_process(&mut self) -> Result<(), String> {
        let _ = std::fs::remove_file(&self.socket);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .map_err(|e| format!("daemon log: {e}"))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        self.started = Instant::now();
        let child = Command::new(&self.bins.agentosd)
            .arg("--config")
            .arg(&self.config)
            .arg("--policies")
            .arg(&self.bins.policies)
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--socket")
            .arg(&self.socket)
            .arg("--launcher")
            .arg(&self.bins.launcher)
            .arg("--runtime")
            .arg(&self.bins.runtime)
            .arg("--cgroup-name")
            .arg(&self.cgroup_name)
            .arg("--uid-range")
            .arg(format!("{}-{}", self.uid_range.0, self.uid_range.1))
            // The smallest workspace image: the benchmark's state lives in
            // the temporary directory, which may not hold the 8 GiB default.
            .arg("--workspace-image-size")
            .arg("256M")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.bins.agentosd.display()))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(mut c) = Client::connect(&self.socket) {
                if c.call(&AdminRequest::Status).is_ok() {
                    return Ok(());
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!(
                    "agentosd exited with {status}:\n{}",
                    self.log_tail(40)
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(format!(
            "agentosd did not answer within {timeout:?}:\n{}",
            self.log_tail(40)
        ))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn client(&self) -> Result<Client, String> {
        Client::connect(&self.socket).map_err(|e| e.to_string())
    }

    /// SIGKILLs the daemon, like a crash. Its agents die with it (parent-
    /// death signals); this waits until their processes are gone.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.wait_agents_gone(Duration::from_secs(120));
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// The daemon's cgroup directories (every hierarchy).
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        walk_named(Path::new("/sys/fs/cgroup"), &self.cgroup_name)
    }

    /// Waits until no process is left in the daemon's agent cgroups.
    fn wait_agents_gone(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let busy = self.cgroup_dirs().iter().any(|d| {
                std::fs::read_dir(d)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|e| {
                        std::fs::read_to_string(e.path().join("cgroup.procs"))
                            .map(|s| !s.trim().is_empty())
                            .unwrap_or(false)
                    })
            });
            if !busy || Instant::now() > deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn remove_cgroups(&self) {
        for _ in 0..100 {
            let mut left = false;
            for dir in self.cgroup_dirs() {
                for c in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    if c.path().is_dir() && std::fs::remove_dir(c.path()).is_err() {
                        left = true;
                    }
                }
                if std::fs::remove_dir(&dir).is_err() {
                    left = true;
                }
            }
            if !left {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        self.crash();
        self.remove_cgroups();
        // A daemon that was killed leaves its workspace image mounted.
        let _ = nix::mount::umount2(
            &self.state_dir().join("workspaces"),
            nix::mount::MntFlags::MNT_DETACH,
        );
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Directories named `name` (or `name.supervisor`) under `root`, at most
/// ten levels down.
fn walk_named(root: &Path, name: &str) -> Vec<PathBuf> {
    let supervisor = format!("{name}.supervisor");
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
            if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let n = e.file_name();
            let n = n.to_string_lossy();
            if n == name || n == supervisor.as_str() {
                out.push(e.path());
            } else if !n.starts_with("agent-") {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    out
}
