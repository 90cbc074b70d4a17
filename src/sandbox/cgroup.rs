//! Agent cgroups, daemon side: create one cgroup per agent with its memory,
//! pids and cpu limits, kill everything in it, freeze/thaw it, tell whether
//! the OOM killer fired, and remove it.
//!
//! Two layouts are supported:
//! - pure cgroup v2 (systemd hosts): `<own cgroup>/agents/agent-<pid>`; the
//!   daemon moves itself into `<own cgroup>/supervisor` so that its own
//!   cgroup may delegate controllers (the "no internal processes" rule);
//! - v1 controllers (memory, pids, cpu, freezer) with an optional cgroup2
//!   hierarchy at `/sys/fs/cgroup/unified` used for `cgroup.kill` and
//!   `cgroup.freeze` (hybrid hosts). Limits come from v1.

use crate::abi::limits::Limits;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{0}: {1}")]
    Io(String, #[source] io::Error),
    #[error("no usable cgroup hierarchy: {0}")]
    Unsupported(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |e| CgroupError::Io(path.display().to_string(), e)
}

/// Which hierarchies this host offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Unified hierarchy with memory and pids controllers.
    V2 { agents: PathBuf },
    /// v1 controllers, plus cgroup2 (if mounted) for kill and freeze.
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: Option<PathBuf>,
        freezer: Option<PathBuf>,
        unified: Option<PathBuf>,
    },
}

/// The cgroup layout of one daemon instance.
#[derive(Debug, Clone)]
pub struct Cgroups {
    pub mode: Mode,
}

/// The cgroup(s) of one agent.
#[derive(Debug, Clone)]
pub struct AgentCgroup {
    /// Directories, one per hierarchy.
    pub dirs: Vec<PathBuf>,
    /// Where `cgroup.kill` and `cgroup.freeze` live, if anywhere.
    v2_dir: Option<PathBuf>,
    memory_dir: PathBuf,
    freezer_dir: Option<PathBuf>,
    v2_memory: bool,
}

/// The cgroup path of this process in a hierarchy: v2 (`0::`) or the v1
/// line listing `controller`.
fn own_path(controller: Option<&str>) -> io::Result<PathBuf> {
    let text = fs::read_to_string("/proc/self/cgroup")?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let matches = match controller {
            None => id == "0" && ctrls.is_empty(),
            Some(c) => ctrls.split(',').any(|x| x == c),
        };
        if matches {
            return Ok(PathBuf::from(path.trim_start_matches('/')));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no {controller:?} line in /proc/self/cgroup"),
    ))
}

impl Cgroups {
    /// Detects the host layout and prepares `<instance>` directories.
    pub fn setup(instance: &str) -> Result<Cgroups, CgroupError> {
        let root = Path::new(CGROUP_ROOT);
        if root.join("cgroup.controllers").exists() {
            return Self::setup_v2(root, instance);
        }
        let v1 = |c: &str| -> Option<PathBuf> {
            let base = root.join(c);
            if !base.join("cgroup.procs").exists() {
                return None;
            }
            let own = own_path(Some(c)).unwrap_or_default();
            Some(base.join(own).join(instance))
        };
        let (Some(memory), Some(pids)) = (v1("memory"), v1("pids")) else {
            return Err(CgroupError::Unsupported(
                "neither cgroup v2 with controllers nor v1 memory and pids controllers found"
                    .into(),
            ));
        };
        let unified = {
            let u = root.join("unified");
            if u.join("cgroup.procs").exists() {
                Some(u.join(own_path(None).unwrap_or_default()).join(instance))
            } else {
                None
            }
        };
        let mode = Mode::V1 {
            memory,
            pids,
            cpu: v1("cpu"),
            freezer: v1("freezer"),
            unified,
        };
        let cg = Cgroups { mode };
        for d in cg.bases() {
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        Ok(cg)
    }

    fn setup_v2(root: &Path, instance: &str) -> Result<Cgroups, CgroupError> {
        let own =
            root.join(own_path(None).map_err(|e| CgroupError::Io("/proc/self/cgroup".into(), e))?);
        let available = fs::read_to_string(own.join("cgroup.controllers")).map_err(io_err(&own))?;
        for needed in ["memory", "pids"] {
            if !available.split_whitespace().any(|c| c == needed) {
                return Err(CgroupError::Unsupported(format!(
                    "cgroup v2 controller {needed} is not delegated to {} (available: {available:?}); with systemd use Delegate=yes",
                    own.display()
                )));
            }
        }
        // Leave our own cgroup so it may enable controllers for its children.
        let supervisor = own.join(format!("{instance}.supervisor"));
        fs::create_dir_all(&supervisor).map_err(io_err(&supervisor))?;
        let procs = own.join("cgroup.procs");
        let members = fs::read_to_string(&procs).map_err(io_err(&procs))?;
        for pid in members.split_whitespace() {
            // Move every process of our cgroup (the daemon and its threads' group).
            let _ = fs::write(supervisor.join("cgroup.procs"), pid);
        }
        let mut wanted = vec!["+memory", "+pids"];
        if available.split_whitespace().any(|c| c == "cpu") {
            wanted.push("+cpu");
        }
        let agents = own.join(instance);
        fs::create_dir_all(&agents).map_err(io_err(&agents))?;
        for dir in [&own, &agents] {
            let sc = dir.join("cgroup.subtree_control");
            fs::write(&sc, wanted.join(" ")).map_err(io_err(&sc))?;
        }
        Ok(Cgroups {
            mode: Mode::V2 { agents },
        })
    }

    /// The per-instance parent directories.
    fn bases(&self) -> Vec<PathBuf> {
        match &self.mode {
            Mode::V2 { agents } => vec![agents.clone()],
            Mode::V1 {
                memory,
                pids,
                cpu,
                freezer,
                unified,
            } => [
                Some(memory),
                Some(pids),
                cpu.as_ref(),
                freezer.as_ref(),
                unified.as_ref(),
            ]
            .into_iter()
            .flatten()
            .cloned()
            .collect(),
        }
    }

    /// A short description for `agentos status`.
    pub fn describe(&self) -> String {
        match &self.mode {
            Mode::V2 { .. } => "cgroup v2".into(),
            Mode::V1 { unified, .. } => format!(
                "cgroup v1 (memory, pids{}){}",
                "",
                if unified.is_some() {
                    " + cgroup2 for kill/freeze"
                } else {
                    ""
                }
            ),
        }
    }

    /// The cgroup of agent `pid` (whether or not it exists yet).
    pub fn agent(&self, pid: u64) -> AgentCgroup {
        self.named(&format!("agent-{pid}"))
    }

    /// The cgroup called `leaf` under this instance (whether or not it
    /// exists yet): `agent-<pid>` for agents, `exec-<pid>-<n>` for EXEC_CMD
    /// sandboxes.
    pub fn named(&self, leaf: &str) -> AgentCgroup {
        match &self.mode {
            Mode::V2 { agents } => {
                let d = agents.join(leaf);
                AgentCgroup {
                    dirs: vec![d.clone()],
                    v2_dir: Some(d.clone()),
                    memory_dir: d,
                    freezer_dir: None,
                    v2_memory: true,
                }
            }
            Mode::V1 {
                memory,
                pids,
                cpu,
                freezer,
                unified,
            } => {
                let memory_dir = memory.join(leaf);
                let mut dirs = vec![memory_dir.clone(), pids.join(leaf)];
                dirs.extend(cpu.as_ref().map(|c| c.join(leaf)));
                let freezer_dir = freezer.as_ref().map(|f| f.join(leaf));
                dirs.extend(freezer_dir.clone());
                let v2_dir = unified.as_ref().map(|u| u.join(leaf));
                dirs.extend(v2_dir.clone());
                AgentCgroup {
                    dirs,
                    v2_dir,
                    memory_dir,
                    freezer_dir,
                    v2_memory: false,
                }
            }
        }
    }

    /// Creates the agent's cgroup with its limits.
    pub fn create(&self, pid: u64, limits: &Limits) -> Result<AgentCgroup, CgroupError> {
        self.create_named(&format!("agent-{pid}"), limits)
    }

    /// Creates the cgroup called `leaf` (see [`Cgroups::named`]) with `limits`.
    pub fn create_named(&self, leaf: &str, limits: &Limits) -> Result<AgentCgroup, CgroupError> {
        let cg = self.named(leaf);
        // A leftover from a crashed run must not keep old processes around.
        cg.remove();
        for d in &cg.dirs {
            fs::create_dir_all(d).map_err(io_err(d))?;
        }
        let write = |dir: &Path, file: &str, value: String| -> Result<(), CgroupError> {
            let p = dir.join(file);
            fs::write(&p, value).map_err(io_err(&p))
        };
        let quota = |period: u64| limits.cpu_percent * period / 100;
        match &self.mode {
            Mode::V2 { .. } => {
                let d = &cg.memory_dir;
                write(d, "memory.max", limits.memory_bytes.to_string())?;
                if d.join("memory.swap.max").exists() {
                    write(d, "memory.swap.max", "0".into())?;
                }
                write(d, "pids.max", limits.pids.to_string())?;
                if d.join("cpu.max").exists() {
                    write(d, "cpu.max", format!("{} 100000", quota(100_000)))?;
                }
            }
            Mode::V1 { pids, cpu, .. } => {
                write(
                    &cg.memory_dir,
                    "memory.limit_in_bytes",
                    limits.memory_bytes.to_string(),
                )?;
                if cg.memory_dir.join("memory.memsw.limit_in_bytes").exists() {
                    write(
                        &cg.memory_dir,
                        "memory.memsw.limit_in_bytes",
                        limits.memory_bytes.to_string(),
                    )?;
                }
                write(&pids.join(leaf), "pids.max", limits.pids.to_string())?;
                if let Some(c) = cpu {
                    let d = c.join(leaf);
                    write(&d, "cpu.cfs_period_us", "100000".into())?;
                    write(&d, "cpu.cfs_quota_us", quota(100_000).to_string())?;
                }
            }
        }
        Ok(cg)
    }
}

impl AgentCgroup {
    /// `cgroup.procs` of every hierarchy, for the launcher to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    fn members(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for d in &self.dirs {
            if let Ok(text) = fs::read_to_string(d.join("cgroup.procs")) {
                pids.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Kills every process in the cgroup, including double-forked ones.
    pub fn kill(&self) {
        if let Some(v2) = &self.v2_dir {
            if fs::write(v2.join("cgroup.kill"), "1").is_ok() {
                return;
            }
        }
        // v1 only: freeze so nobody can fork while we sweep, then kill all.
        self.freeze(true);
        for _ in 0..100 {
            let pids = self.members();
            if pids.is_empty() {
                break;
            }
            for p in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            self.freeze(false);
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// Freezes (`true`) or thaws the whole cgroup.
    pub fn freeze(&self, frozen: bool) -> bool {
        if let Some(v2) = &self.v2_dir {
            let f = v2.join("cgroup.freeze");
            if fs::write(&f, if frozen { "1" } else { "0" }).is_ok() {
                return true;
            }
        }
        if let Some(fz) = &self.freezer_dir {
            let f = fz.join("freezer.state");
            return fs::write(&f, if frozen { "FROZEN" } else { "THAWED" }).is_ok();
        }
        false
    }

    /// Whether the OOM killer killed something in this cgroup.
    pub fn oom_killed(&self) -> bool {
        let (file, key) = if self.v2_memory {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        let Ok(text) = fs::read_to_string(self.memory_dir.join(file)) else {
            return false;
        };
        text.lines().any(|l| {
            let mut it = l.split_whitespace();
            it.next() == Some(key) && it.next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0) > 0
        })
    }

    /// Kills what is left and removes the directories.
    pub fn remove(&self) {
        if self.dirs.iter().all(|d| !d.exists()) {
            return;
        }
        self.kill();
        for d in &self.dirs {
            for _ in 0..50 {
                match fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        }
    }
}
