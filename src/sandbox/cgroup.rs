//! Agent cgroups, daemon side: create one cgroup per agent with its memory,
//! pids and cpu limits, nested inside its parent's so that the limits of an
//! agent bound its whole subtree; kill everything in it, freeze/thaw it,
//! tell whether the OOM killer fired, read its use, and remove it.
//!
//! Two layouts are supported:
//! - pure cgroup v2 (systemd hosts): `<own cgroup>/agents/...`; the daemon
//!   moves itself into `<own cgroup>/supervisor` so that its own cgroup may
//!   delegate controllers (the "no internal processes" rule);
//! - v1 controllers (memory, pids, cpu, freezer) with an optional cgroup2
//!   hierarchy at `/sys/fs/cgroup/unified` used for `cgroup.kill` and
//!   `cgroup.freeze` (hybrid hosts). Limits come from v1.
//!
//! Both use the same tree below the instance directory: agent P with
//! parent Q (a child of root agent R) lives in `agent-R/agent-Q/agent-P`,
//! which carries P's limits; P's own processes are in its leaf
//! `agent-P/self`, its children in `agent-P/agent-C` and its EXEC_CMD
//! sandboxes in `agent-P/exec-<n>`. An agent's directory never holds
//! processes itself, so cgroup v2 may enable controllers below it.
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
    /// Unified hierarchy with memory and pids controllers; `controllers`
    /// is what each agent directory enables for its children.
    V2 {
        agents: PathBuf,
        controllers: String,
    },
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

/// The cgroup(s) of one agent (with its subtree) or of one EXEC_CMD
/// sandbox.
#[derive(Debug, Clone)]
pub struct AgentCgroup {
    /// Directories, one per hierarchy.
    pub dirs: Vec<PathBuf>,
    /// Where `cgroup.kill` and `cgroup.freeze` live, if anywhere.
    v2_dir: Option<PathBuf>,
    memory_dir: PathBuf,
    pids_dir: PathBuf,
    freezer_dir: Option<PathBuf>,
    v2_memory: bool,
    /// The leaf below each directory that its own processes join (`self`
    /// for an agent), or None when they join the directory itself.
    own_leaf: Option<&'static str>,
}

/// The leaf of an agent's own processes.
const OWN_LEAF: &str = "self";

/// Use of an agent's cgroup: its own processes, and its whole subtree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CgroupUse {
    pub memory_bytes: u64,
    pub pids: u64,
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
            mode: Mode::V2 {
                agents,
                controllers: wanted.join(" "),
            },
        })
    }

    /// The per-instance parent directories.
    fn bases(&self) -> Vec<PathBuf> {
        match &self.mode {
            Mode::V2 { agents, .. } => vec![agents.clone()],
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
            Mode::V2 { .. } => "cgroup v2 (nested per agent tree)".into(),
            Mode::V1 { unified, .. } => format!(
                "cgroup v1 (memory, pids; nested per agent tree){}",
                if unified.is_some() {
                    " + cgroup2 for kill/freeze"
                } else {
                    ""
                }
            ),
        }
    }

    /// The path, relative to the instance directory, of the agent whose
    /// lineage (root first, the agent last) is `lineage`.
    pub fn agent_path(lineage: &[u64]) -> PathBuf {
        lineage.iter().map(|p| format!("agent-{p}")).collect()
    }

    /// The cgroup of the agent with `lineage` (root first, the agent
    /// last), whether or not it exists yet.
    pub fn agent(&self, lineage: &[u64]) -> AgentCgroup {
        let mut cg = self.named(&Self::agent_path(lineage));
        cg.own_leaf = Some(OWN_LEAF);
        cg
    }

    /// The cgroup at `rel` under this instance (whether or not it exists
    /// yet), whose processes join the directory itself: EXEC_CMD sandboxes
    /// (`<agent path>/exec-<n>`).
    pub fn named(&self, rel: &Path) -> AgentCgroup {
        match &self.mode {
            Mode::V2 { agents, .. } => {
                let d = agents.join(rel);
                AgentCgroup {
                    dirs: vec![d.clone()],
                    v2_dir: Some(d.clone()),
                    memory_dir: d.clone(),
                    pids_dir: d,
                    freezer_dir: None,
                    v2_memory: true,
                    own_leaf: None,
                }
            }
            Mode::V1 {
                memory,
                pids,
                cpu,
                freezer,
                unified,
            } => {
                let memory_dir = memory.join(rel);
                let pids_dir = pids.join(rel);
                let mut dirs = vec![memory_dir.clone(), pids_dir.clone()];
                dirs.extend(cpu.as_ref().map(|c| c.join(rel)));
                let freezer_dir = freezer.as_ref().map(|f| f.join(rel));
                dirs.extend(freezer_dir.clone());
                let v2_dir = unified.as_ref().map(|u| u.join(rel));
                dirs.extend(v2_dir.clone());
                AgentCgroup {
                    dirs,
                    v2_dir,
                    memory_dir,
                    pids_dir,
                    freezer_dir,
                    v2_memory: false,
                    own_leaf: None,
                }
            }
        }
    }

    /// Creates the cgroup of the agent with `lineage` (inside its parent's,
    /// which must exist) with its limits, and its `self` leaf.
    pub fn create(&self, lineage: &[u64], limits: &Limits) -> Result<AgentCgroup, CgroupError> {
        let cg = self.create_at(self.agent(lineage), limits)?;
        for d in &cg.dirs {
            let leaf = d.join(OWN_LEAF);
            fs::create_dir(&leaf).map_err(io_err(&leaf))?;
        }
        Ok(cg)
    }

    /// Creates the cgroup at `rel` (see [`Cgroups::named`]; inside its
    /// agent's, which must exist) with `limits`.
    pub fn create_named(&self, rel: &Path, limits: &Limits) -> Result<AgentCgroup, CgroupError> {
        self.create_at(self.named(rel), limits)
    }

    fn create_at(&self, cg: AgentCgroup, limits: &Limits) -> Result<AgentCgroup, CgroupError> {
        // A leftover from a crashed run must not keep old processes around.
        cg.remove();
        for d in &cg.dirs {
            // Never recreate a missing parent: a directory outside the
            // parent's would escape its limits (the parent has ended).
            if let Some(parent) = d.parent()
                && !parent.exists()
            {
                return Err(CgroupError::Io(
                    d.display().to_string(),
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        "the parent agent's cgroup is gone (the parent has ended)",
                    ),
                ));
            }
            fs::create_dir(d).map_err(io_err(d))?;
        }
        let write = |dir: &Path, file: &str, value: String| -> Result<(), CgroupError> {
            let p = dir.join(file);
            fs::write(&p, value).map_err(io_err(&p))
        };
        let quota = |period: u64| limits.cpu_percent * period / 100;
        match &self.mode {
            Mode::V2 { controllers, .. } => {
                let d = &cg.memory_dir;
                write(d, "memory.max", limits.memory_bytes.to_string())?;
                if d.join("memory.swap.max").exists() {
                    write(d, "memory.swap.max", "0".into())?;
                }
                write(d, "pids.max", limits.pids.to_string())?;
                if d.join("cpu.max").exists() {
                    write(d, "cpu.max", format!("{} 100000", quota(100_000)))?;
                }
                if cg.own_leaf.is_some() {
                    // Children, EXEC_CMD sandboxes and `self` get the
                    // controllers; the directory itself holds no process.
                    write(d, "cgroup.subtree_control", controllers.clone())?;
                }
            }
            Mode::V1 { cpu, .. } => {
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
                write(&cg.pids_dir, "pids.max", limits.pids.to_string())?;
                if cpu.is_some()
                    && let Some(d) = cg.dirs.get(2)
                {
                    write(d, "cpu.cfs_period_us", "100000".into())?;
                    write(d, "cpu.cfs_quota_us", quota(100_000).to_string())?;
                }
            }
        }
        Ok(cg)
    }

    /// Removes every agent and EXEC_CMD cgroup of this instance, at any
    /// depth, killing what is left in them (at start, before recovery).
    pub fn remove_all(&self) {
        for base in self.bases() {
            let Ok(entries) = fs::read_dir(&base) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if e.path().is_dir() && (name.starts_with("agent-") || name.starts_with("exec-")) {
                    self.named(Path::new(&name)).remove();
                }
            }
        }
    }
}

impl AgentCgroup {
    /// `cgroup.procs` of every hierarchy that the sandbox's processes join
    /// (an agent's `self` leaf), for the launcher.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.own_dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// The directories of the agent's own processes.
    fn own_dirs(&self) -> Vec<PathBuf> {
        match self.own_leaf {
            Some(leaf) => self.dirs.iter().map(|d| d.join(leaf)).collect(),
            None => self.dirs.clone(),
        }
    }

    /// `(cgroup dir, pid)` of every process in `dirs` and below.
    fn members_below(dirs: &[PathBuf]) -> Vec<(PathBuf, i32)> {
        let mut out = Vec::new();
        for d in dirs {
            for dir in subdirs_depth_first(d) {
                if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
                    out.extend(
                        text.split_whitespace()
                            .filter_map(|p| p.parse::<i32>().ok())
                            .map(|p| (dir.clone(), p)),
                    );
                }
            }
        }
        out
    }

    /// Kills every process in the cgroup and below it (its whole subtree:
    /// children's cgroups, EXEC_CMD sandboxes), double-forked ones too.
    pub fn kill(&self) {
        if let Some(v2) = &self.v2_dir
            && fs::write(v2.join("cgroup.kill"), "1").is_ok()
        {
            return;
        }
        // v1 only: freeze so nobody can fork while we sweep (the freezer is
        // hierarchical), then kill all, each through a pidfd.
        self.freeze(true);
        for _ in 0..100 {
            let members = Self::members_below(&self.dirs);
            if members.is_empty() {
                break;
            }
            for (dir, pid) in members {
                super::pidfd::kill_member(pid, &dir);
            }
            self.freeze(false);
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// Kills the agent's own processes only (its `self` leaf), leaving its
    /// children to be ended one by one with their reason.
    pub fn kill_own(&self) {
        let own = self.own_dirs();
        let v2 = self.v2_dir.as_ref().map(|d| match self.own_leaf {
            Some(leaf) => d.join(leaf),
            None => d.clone(),
        });
        if let Some(v2) = &v2
            && fs::write(v2.join("cgroup.kill"), "1").is_ok()
        {
            return;
        }
        for _ in 0..100 {
            let members = Self::members_below(&own);
            if members.is_empty() {
                break;
            }
            for (dir, pid) in members {
                super::pidfd::kill_member(pid, &dir);
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// Freezes (`true`) or thaws the whole cgroup, subtree included.
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

    /// Whether the OOM killer killed one of the agent's own processes (in
    /// its `self` leaf; a child's OOM is the child's).
    pub fn oom_killed(&self) -> bool {
        let own = match self.own_leaf {
            Some(leaf) => self.memory_dir.join(leaf),
            None => self.memory_dir.clone(),
        };
        let (file, key) = if self.v2_memory {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        let Ok(text) = fs::read_to_string(own.join(file)) else {
            return false;
        };
        text.lines().any(|l| {
            let mut it = l.split_whitespace();
            it.next() == Some(key) && it.next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0) > 0
        })
    }

    /// Memory and pids charged to the whole subtree (`tree`) and to the
    /// agent's own processes (`own`, its `self` leaf).
    pub fn usage(&self) -> (CgroupUse, CgroupUse) {
        let mem_file = if self.v2_memory {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        };
        let read = |p: PathBuf| -> u64 {
            fs::read_to_string(p)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0)
        };
        let tree = CgroupUse {
            memory_bytes: read(self.memory_dir.join(mem_file)),
            pids: read(self.pids_dir.join("pids.current")),
        };
        let own = match self.own_leaf {
            Some(leaf) => CgroupUse {
                memory_bytes: read(self.memory_dir.join(leaf).join(mem_file)),
                pids: read(self.pids_dir.join(leaf).join("pids.current")),
            },
            None => tree,
        };
        (tree, own)
    }

    /// Kills what is left (the whole subtree) and removes the directories,
    /// the deepest first.
    pub fn remove(&self) {
        if self.dirs.iter().all(|d| !d.exists()) {
            return;
        }
        self.kill();
        for d in &self.dirs {
            for dir in subdirs_depth_first(d).into_iter().rev() {
                for _ in 0..50 {
                    match fs::remove_dir(&dir) {
                        Ok(()) => break,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                        Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                    }
                }
            }
        }
    }
}

/// `dir` and every directory below it, parents before children.
fn subdirs_depth_first(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if !d.is_dir() {
            continue;
        }
        if let Ok(entries) = fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(e.path());
                }
            }
        }
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_paths_nest_by_lineage() {
        assert_eq!(Cgroups::agent_path(&[3]), PathBuf::from("agent-3"));
        assert_eq!(
            Cgroups::agent_path(&[3, 5, 9]),
            PathBuf::from("agent-3/agent-5/agent-9")
        );
    }

    #[test]
    fn depth_first_lists_parents_before_children() {
        let a = std::env::temp_dir().join(format!("cgroup-walk-{}", std::process::id()));
        let _ = fs::remove_dir_all(&a);
        fs::create_dir_all(a.join("b/c")).expect("dirs");
        fs::create_dir_all(a.join("d")).expect("dirs");
        let list = subdirs_depth_first(&a);
        let pos = |p: &Path| list.iter().position(|x| x == p).expect("listed");
        assert!(pos(&a) < pos(&a.join("b")));
        assert!(pos(&a.join("b")) < pos(&a.join("b/c")));
        assert_eq!(list.len(), 4);
        let _ = fs::remove_dir_all(&a);
    }
}
