//! The supervisor's core: the process table, spawning and reaping agents,
//! the per-agent syscall connection, the dispatcher and the syscall
//! handlers ([`syscalls`]), which call the drivers (`crate::drivers`) with
//! what each call acts on.

pub mod audit;
pub mod conn;
pub mod copy;
pub mod dispatch;
pub mod floor;
pub mod infer;
pub mod ipc;
pub mod journal;
pub mod live;
pub mod metrics;
pub mod pcb;
pub mod process;
pub mod recovery;
pub mod retention;
pub mod scheduler;
pub mod spawn;
pub mod store;
pub mod syscalls;
pub mod table;
pub mod timers;
pub mod webhooks;

use crate::sandbox::cgroup::Cgroups;
use crate::sandbox::profile::Profiles;
use crate::sandbox::spawner::Spawner;
use crate::sandbox::uids::{UidAllocator, UidRange};
use live::LiveAgents;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use store::Store;
use table::Table;

/// Daemon settings that the kernel needs.
#[derive(Debug, Clone)]
pub struct KernelConfig {
    /// Holds `db/`, `workspaces/` and `root/` (the sandbox mount point).
    pub state_dir: PathBuf,
    /// Directory with `profiles/` and `seccomp/`.
    pub policies_dir: PathBuf,
    /// Path of the `agentos-launcher` binary.
    pub launcher: PathBuf,
    pub uid_range: UidRange,
    /// Names this daemon's cgroups (lets several daemons share a host).
    pub cgroup_name: String,
    /// Cap on one request line on fd 3.
    pub line_cap: usize,
    /// Requests one agent may have in flight before the daemon stops reading.
    pub max_in_flight: usize,
    /// Bytes of stdout/stderr kept per agent.
    pub log_bytes_per_agent: u64,
    /// The built-in LLM agent runtime.
    pub runtime: PathBuf,
    /// Providers, models and the scheduler settings.
    pub file: crate::config::FileConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Profiles(#[from] crate::sandbox::profile::ProfileError),
    #[error(transparent)]
    Cgroup(#[from] crate::sandbox::cgroup::CgroupError),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("the launcher {0} is missing or not executable")]
    Launcher(PathBuf),
    #[error(transparent)]
    Spawner(#[from] crate::sandbox::spawner::SpawnerError),
    #[error("LLM providers: {0}")]
    Llm(#[from] crate::llm::LlmError),
    #[error("[memory] configuration: {0}")]
    Memory(#[from] crate::drivers::memory::OpenError),
    #[error(transparent)]
    Quota(#[from] crate::sandbox::quota::QuotaError),
}

/// Everything the supervisor holds; shared as `Arc<Kernel>`.
pub struct Kernel {
    pub config: KernelConfig,
    pub store: Store,
    pub table: Table,
    pub profiles: Profiles,
    pub cgroups: Cgroups,
    /// Workspaces and their kernel-enforced quotas.
    pub quotas: crate::sandbox::quota::WorkspaceQuotas,
    /// The state filesystem's low-water mark.
    pub floor: floor::Floor,
    /// The launcher server, which starts every sandbox.
    pub spawner: Arc<Spawner>,
    pub uids: Mutex<UidAllocator>,
    pub live: LiveAgents,
    /// Providers, models and the scheduler; replaced on SIGHUP.
    inference: std::sync::RwLock<Arc<infer::Inference>>,
    pub memory: crate::drivers::memory::Memory,
    pub logs: tokio::sync::broadcast::Sender<journal::LogEvent>,
    /// Read-only calls waiting for their agent's next journal entry.
    pub pending: journal::PendingCalls,
    /// Coalescing and retention state of the audit trail.
    pub audit_trail: audit::AuditTrail,
    /// Bytes each agent's journal holds, for its `journal_bytes`.
    pub journal_retention: retention::JournalRetention,
    /// Woken whenever an agent terminates (WAIT, `agentos wait`).
    pub exits: tokio::sync::Notify,
    pub started: std::time::Instant,
    /// Set by a graceful shutdown: agents that stop now stay recoverable.
    pub shutting_down: std::sync::atomic::AtomicBool,
    /// Syscalls being executed right now.
    pub in_flight: std::sync::atomic::AtomicUsize,
    pub metrics: metrics::Metrics,
    /// Woken when a timer is added (it may be the earliest).
    pub timers_changed: tokio::sync::Notify,
    /// Webhook requests waiting for their agent's reply.
    pub webhooks: webhooks::Webhooks,
}

impl Kernel {
    /// Opens the state directory, loads the table and policies, prepares
    /// cgroups, and settles agents left over from a previous run.
    pub fn open(config: KernelConfig) -> Result<Arc<Kernel>, KernelError> {
        let io = |what: &str| {
            let what = what.to_string();
            move |e| KernelError::Io(what, e)
        };
        if !is_executable(&config.launcher) {
            return Err(KernelError::Launcher(config.launcher.clone()));
        }
        // What only reads the configuration comes before anything that
        // changes the host (the workspace image is mounted below), so that a
        // bad profile or provider leaves nothing behind.
        let profiles = Profiles::load(&config.policies_dir)?;
        let inference = infer::Inference::from_config(&config.file, config.runtime.clone())?;
        for (dir, mode) in [
            (config.state_dir.clone(), 0o711),
            (config.state_dir.join("workspaces"), 0o711),
            (config.state_dir.join("root"), 0o755),
        ] {
            std::fs::create_dir_all(&dir).map_err(io(&dir.display().to_string()))?;
            set_mode(&dir, mode).map_err(io(&dir.display().to_string()))?;
        }
        let quotas = crate::sandbox::quota::WorkspaceQuotas::open(
            &config.file.workspaces,
            &config.state_dir,
        )?;
        let store = Store::open(&config.state_dir.join("db"))?;
        let table = Table::load(store.clone())?;
        let cgroups = Cgroups::setup(&config.cgroup_name)?;
        // Before the launcher server starts, so that it is bounded too.
        let daemon_max = config
            .file
            .daemon_memory_max
            .unwrap_or_else(|| crate::sandbox::daemon_memory::default_max(config.uid_range.size()));
        match crate::sandbox::daemon_memory::bound(&cgroups, &config.cgroup_name, daemon_max)? {
            Some(dir) => tracing::info!(
                "the daemon's memory is bounded at {daemon_max} bytes ({})",
                dir.display()
            ),
            None => tracing::warn!("daemon_memory_max = 0: the daemon's own memory is not bounded"),
        }
        match crate::sandbox::daemon_cpu::prioritize(&cgroups, &config.cgroup_name)? {
            Some(dir) => tracing::info!(
                "the daemon's CPU weight is {}x its agents' ({})",
                crate::sandbox::daemon_cpu::RATIO,
                dir.display()
            ),
            None => tracing::warn!(
                "no cpu cgroup controller: busy agents compete with the daemon for CPU on equal terms"
            ),
        }
        let spawner = Arc::new(Spawner::start(&config.launcher)?);
        let memory =
            crate::drivers::memory::Memory::open(&config.file.memory, store.trees.memory.clone())?;
        let (logs, _) = tokio::sync::broadcast::channel(4096);
        let min_free = config.file.min_free_bytes;
        let floor = floor::Floor::new(
            &config.state_dir,
            min_free.unwrap_or(floor::DEFAULT_MIN_FREE_BYTES),
        );
        let kernel = Arc::new(Kernel {
            uids: Mutex::new(UidAllocator::new(config.uid_range)),
            config,
            store,
            table,
            profiles,
            cgroups,
            quotas,
            floor,
            spawner,
            live: LiveAgents::default(),
            inference: std::sync::RwLock::new(Arc::new(inference)),
            memory,
            logs,
            pending: Default::default(),
            audit_trail: Default::default(),
            journal_retention: Default::default(),
            exits: tokio::sync::Notify::new(),
            started: std::time::Instant::now(),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            timers_changed: tokio::sync::Notify::new(),
            metrics: Default::default(),
            webhooks: Default::default(),
        });
        kernel.prepare_recovery()?;
        Ok(kernel)
    }

    /// The inference configuration in force.
    pub fn inference(&self) -> Arc<infer::Inference> {
        self.inference
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces providers, models and the scheduler (SIGHUP). Agents and
    /// their counters are untouched; inferences in flight finish on the old
    /// providers.
    pub fn reload_inference(
        &self,
        file: &crate::config::FileConfig,
    ) -> Result<(), crate::llm::LlmError> {
        let next = infer::Inference::from_config(file, self.config.runtime.clone())?;
        *self.inference.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        Ok(())
    }

    /// Host path of an agent's workspace.
    pub fn workspace_dir(&self, pid: pcb::Pid) -> PathBuf {
        self.quotas.workspace_dir(pid)
    }
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn set_mode(p: &std::path::Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}
