//! `agentosd`: command line, defaults and start-up. The binary calls
//! [`main`]; tests start a daemon by running the binary.

use crate::admin::server;
use crate::config::{DEFAULT_PATH as DEFAULT_CONFIG, FileConfig};
use crate::kernel::{Kernel, KernelConfig, KernelError};
use crate::sandbox::uids::UidRange;
use anyhow::{Context, bail};
use clap::Parser;
use std::path::{Path, PathBuf};

/// The AgentOS supervisor: runs LLM agents as confined Linux processes.
///
/// Must run as root. Agents are started with `agentos spawn`; each runs in
/// its own namespaces, as its own uid, without capabilities, under
/// no_new_privs, Landlock and a seccomp allowlist, and talks to this daemon
/// through JSON syscalls on fd 3.
///
/// Settings come from the command line, then the configuration file
/// (--config, default /etc/agentos/agentosd.toml when it exists), then the
/// defaults shown here.
#[derive(Debug, Parser)]
#[command(name = "agentosd", version)]
pub struct Args {
    /// Configuration file (TOML): daemon settings, LLM providers and models.
    #[arg(long, env = "AGENTOS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Validate the configuration, the policies and the providers, then exit.
    #[arg(long)]
    pub check_config: bool,
    /// Set up the workspace filesystem (create and mount the quota image
    /// when the configuration needs one), then exit. The systemd unit runs
    /// this before the daemon, outside its private mount namespace, so that
    /// the mount is visible to the Docker engine too.
    #[arg(long)]
    pub prepare_workspaces: bool,
    /// State directory: the database, agent workspaces, the sandbox mount
    /// point [default: /var/lib/agentos].
    #[arg(long, env = "AGENTOS_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Admin socket path [default: /run/agentos/agentosd.sock].
    #[arg(long, env = "AGENTOS_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Admin socket mode (octal) [default: 660]. Access is then authorised
    /// per request from the peer's uid: root manages all agents, others only
    /// their own.
    #[arg(long, value_parser = parse_mode)]
    pub socket_mode: Option<u32>,
    /// Group owning the admin socket (name or gid); members may connect.
    /// Default: `agentos` if that group exists, else root only.
    #[arg(long)]
    pub socket_group: Option<String>,
    /// Policies directory with profiles/*.toml and seccomp/*.json.
    /// Default: /etc/agentos/policies, then /usr/share/agentos/policies.
    #[arg(long)]
    pub policies: Option<PathBuf>,
    /// The sandbox launcher binary. Default: agentos-launcher next to this
    /// binary, then /usr/libexec/agentos/agentos-launcher.
    #[arg(long)]
    pub launcher: Option<PathBuf>,
    /// The built-in LLM agent runtime. Default: agentos-runtime next to this
    /// binary, then /usr/libexec/agentos/agentos-runtime.
    #[arg(long)]
    pub runtime: Option<PathBuf>,
    /// Unix uids (and gids) given to agents, one per live agent. Must not
    /// overlap system users or systemd's dynamic range [default: 400000-499999].
    #[arg(long)]
    pub uid_range: Option<UidRange>,
    /// Name of this daemon's cgroup subtree [default: agentos].
    #[arg(long)]
    pub cgroup_name: Option<String>,
    /// Cap on one syscall request line, in bytes [default: 1048576].
    #[arg(long)]
    pub line_cap: Option<usize>,
    /// Requests one agent may have in flight [default: 64].
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// Bytes of stdout/stderr kept per agent [default: 16777216].
    #[arg(long)]
    pub log_bytes_per_agent: Option<u64>,
    /// Below this much free space on the state filesystem, agents' writes
    /// are refused so the journal keeps room; 0 = off [default: 268435456].
    #[arg(long)]
    pub min_free_bytes: Option<u64>,
    /// Address of the webhook listener (e.g. 127.0.0.1:8088), or "off"
    /// [default: off].
    #[arg(long)]
    pub webhooks_listen: Option<String>,
    /// How workspace quotas are enforced: auto, native, image, off [default: auto].
    #[arg(long)]
    pub workspace_quota: Option<String>,
    /// Size of the workspace image when it is created [default: 8G].
    #[arg(long)]
    pub workspace_image_size: Option<String>,
}

/// The settings in force: flags over the file over the defaults.
struct Settings {
    config_path: Option<PathBuf>,
    socket: PathBuf,
    socket_mode: u32,
    socket_group: Option<String>,
    kernel: KernelConfig,
}

fn settings(args: &Args) -> anyhow::Result<Settings> {
    let (mut file, path) = match &args.config {
        Some(p) => (FileConfig::load(p)?, Some(p.clone())),
        None if Path::new(DEFAULT_CONFIG).exists() => (
            FileConfig::load(Path::new(DEFAULT_CONFIG))?,
            Some(PathBuf::from(DEFAULT_CONFIG)),
        ),
        None => (FileConfig::default(), None),
    };
    if let Some(listen) = &args.webhooks_listen {
        file.webhooks.listen = listen.clone();
    }
    if let Some(mode) = &args.workspace_quota {
        file.workspaces.quota = mode
            .parse::<crate::sandbox::quota::QuotaMode>()
            .map_err(|e| anyhow::anyhow!("--workspace-quota: {e}"))?;
    }
    if let Some(size) = &args.workspace_image_size {
        file.workspaces.image_size = crate::sandbox::quota::ByteSize::parse(size)
            .map_err(|e| anyhow::anyhow!("--workspace-image-size: {e}"))?;
    }
    let in_file = |key: &str| {
        format!(
            "{}: {key}",
            path.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        )
    };
    let socket_mode = match (args.socket_mode, &file.socket_mode) {
        (Some(m), _) => m,
        (None, Some(m)) => parse_mode(m.trim_start_matches("0o"))
            .map_err(|e| anyhow::anyhow!("{}: {e}", in_file("socket_mode")))?,
        (None, None) => 0o660,
    };
    let uid_range = match (args.uid_range, &file.uid_range) {
        (Some(r), _) => r,
        (None, Some(r)) => r
            .parse()
            .map_err(|e| anyhow::anyhow!("{}: {e}", in_file("uid_range")))?,
        (None, None) => UidRange::new(400_000, 499_999)?,
    };
    let pick = |flag: &Option<PathBuf>, key: &Option<PathBuf>| flag.clone().or_else(|| key.clone());
    let kernel = KernelConfig {
        state_dir: pick(&args.state_dir, &file.state_dir)
            .unwrap_or_else(|| PathBuf::from("/var/lib/agentos")),
        policies_dir: pick(&args.policies, &file.policies).unwrap_or_else(default_policies),
        launcher: pick(&args.launcher, &file.launcher)
            .unwrap_or_else(|| default_helper("agentos-launcher")),
        runtime: pick(&args.runtime, &file.runtime)
            .unwrap_or_else(|| default_helper("agentos-runtime")),
        uid_range,
        cgroup_name: args
            .cgroup_name
            .clone()
            .or_else(|| file.cgroup_name.clone())
            .unwrap_or_else(|| "agentos".into()),
        line_cap: args
            .line_cap
            .or(file.line_cap)
            .unwrap_or(crate::abi::wire::DEFAULT_LINE_CAP),
        max_in_flight: args.max_in_flight.or(file.max_in_flight).unwrap_or(64),
        log_bytes_per_agent: args
            .log_bytes_per_agent
            .or(file.log_bytes_per_agent)
            .unwrap_or(16 << 20),
        file: crate::config::FileConfig {
            min_free_bytes: args.min_free_bytes.or(file.min_free_bytes),
            ..file.clone()
        },
    };
    Ok(Settings {
        config_path: path.clone(),
        socket: pick(&args.socket, &file.socket)
            .unwrap_or_else(|| PathBuf::from(crate::admin::protocol::DEFAULT_SOCKET)),
        socket_mode,
        socket_group: args
            .socket_group
            .clone()
            .or_else(|| file.socket_group.clone()),
        kernel,
    })
}

/// A refused `--socket-mode`.
#[derive(Debug, thiserror::Error)]
pub enum ModeError {
    #[error("{given}: not an octal mode: {source}")]
    NotOctal {
        given: String,
        #[source]
        source: std::num::ParseIntError,
    },
    #[error("{0}: the admin socket must not be accessible to others; use 660 with --socket-group")]
    OpenToOthers(String),
}

fn parse_mode(s: &str) -> Result<u32, ModeError> {
    let m = u32::from_str_radix(s, 8).map_err(|source| ModeError::NotOctal {
        given: s.to_string(),
        source,
    })?;
    if m & 0o7 != 0 {
        return Err(ModeError::OpenToOthers(s.to_string()));
    }
    Ok(m)
}

fn resolve_group(name: &str) -> anyhow::Result<Option<u32>> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(Some(gid));
    }
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    Ok(groups.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next() == Some(name))
            .then(|| f.nth(1).and_then(|g| g.parse().ok()))
            .flatten()
    }))
}

fn default_policies() -> PathBuf {
    let candidates = [
        PathBuf::from("/etc/agentos/policies"),
        PathBuf::from("/usr/share/agentos/policies"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
    ];
    candidates
        .iter()
        .find(|p| p.join("profiles").is_dir())
        .cloned()
        .unwrap_or_else(|| candidates[0].clone())
}

/// A helper binary next to this one (development), else the packaged path.
fn default_helper(name: &str) -> PathBuf {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)));
    match beside {
        Some(p) if p.exists() => p,
        _ => PathBuf::from("/usr/libexec/agentos").join(name),
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // journald and log files want plain text; colours only on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let settings = settings(&args)?;
    if args.check_config {
        return check_config(&settings);
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("agentosd must run as root: it creates namespaces, cgroups and per-agent uids");
    }
    if args.prepare_workspaces {
        let state_dir = &settings.kernel.state_dir;
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let quotas = crate::sandbox::quota::WorkspaceQuotas::open(
            &settings.kernel.file.workspaces,
            state_dir,
        )?;
        println!("{}", quotas.describe());
        return Ok(());
    }
    let socket_gid = match &settings.socket_group {
        Some(g) => Some(resolve_group(g)?.with_context(|| format!("no group named {g:?}"))?),
        None => resolve_group("agentos")?,
    };
    // Each agent holds a few descriptors in the daemon: use the whole hard
    // limit rather than the usual soft 1024.
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    let config = settings.kernel.clone();
    let config_path = settings.config_path.clone();
    let socket = settings.socket.clone();
    let socket_mode = settings.socket_mode;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("agentosd")
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let kernel = Kernel::open(config.clone()).map_err(|e| start_error(e, &config))?;
        let listener = server::bind(&socket, socket_mode, socket_gid)
            .with_context(|| format!("creating the admin socket {}", socket.display()))?;
        let features = crate::sandbox::features::detect(kernel.cgroups.describe());
        crate::kernel::syscalls::exec::sweep_leftover_containers(&kernel).await;
        crate::notify::status("recovering agents");
        let recovery = kernel.recover().await;
        kernel.start_timers();
        let metrics = &config.file.metrics.listen;
        if metrics != "off" {
            kernel
                .start_metrics(metrics)
                .with_context(|| format!("cannot serve metrics on {metrics}"))?;
        }
        crate::webhook_listener::start(&kernel)?;
        tracing::info!(
            socket = %socket.display(),
            state_dir = %config.state_dir.display(),
            policies = %config.policies_dir.display(),
            landlock_abi = features.landlock_abi,
            cgroup = %features.cgroup,
            recovered = recovery.recovered,
            not_recovered = recovery.failed.len(),
            "agentosd ready"
        );
        crate::notify::ready();
        crate::notify::status(&format!("{} agents recovered", recovery.recovered));
        if let Some(every) = crate::notify::watchdog_interval() {
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every / 2).await;
                    crate::notify::watchdog();
                }
            });
        }
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let reloader = kernel.clone();
        let config_path = config_path.clone();
        let shutdown = async move {
            loop {
                tokio::select! {
                    _ = term.recv() => return,
                    _ = int.recv() => return,
                    _ = hup.recv() => reload(&reloader, config_path.as_deref()),
                }
            }
        };
        server::run(kernel.clone(), listener, shutdown).await;
        tracing::info!("shutting down: stopping agents (they are recovered at the next start)");
        crate::notify::stopping();
        let _ = std::fs::remove_file(&socket);
        kernel.shutdown(std::time::Duration::from_secs(10)).await;
        kernel.store.durable().await?;
        if let Err(e) = kernel.quotas.release() {
            tracing::warn!("{e}");
        }
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}

/// A start-up failure, saying which part failed: the state directory only
/// when it is the state directory (a provider's script or a memory
/// backend is not).
fn start_error(e: KernelError, config: &KernelConfig) -> anyhow::Error {
    let what = match &e {
        KernelError::Store(_) | KernelError::Io(..) => {
            format!("opening the state directory {}", config.state_dir.display())
        }
        KernelError::Profiles(_) => {
            format!("loading the profiles in {}", config.policies_dir.display())
        }
        KernelError::Cgroup(_) => format!("setting up the cgroup {}", config.cgroup_name),
        KernelError::Launcher(_) | KernelError::Spawner(_) => "starting the launcher".into(),
        KernelError::Quota(_) => format!(
            "setting up the workspace filesystem under {}",
            config.state_dir.display()
        ),
        // These say what failed themselves ("LLM providers: ...").
        KernelError::Llm(_) | KernelError::Memory(_) => return anyhow::Error::new(e),
    };
    anyhow::Error::new(e).context(what)
}

/// SIGHUP: re-reads the configuration file and replaces providers, models
/// and the scheduler; agents are not touched. A bad file is refused and the
/// running configuration stays.
fn reload(kernel: &Kernel, path: Option<&Path>) {
    let Some(path) = path else {
        tracing::warn!("SIGHUP: no configuration file to reload");
        return;
    };
    match FileConfig::load(path)
        .map_err(anyhow::Error::from)
        .and_then(|f| {
            kernel.reload_inference(&f)?;
            Ok(f)
        }) {
        Ok(f) => tracing::info!(
            path = %path.display(),
            providers = f.providers.len(),
            models = f.models.len(),
            "configuration reloaded"
        ),
        Err(e) => {
            tracing::error!("SIGHUP: configuration not reloaded, keeping the running one: {e:#}")
        }
    }
}

/// `--check-config`: loads everything the daemon would load at start, but
/// touches no state.
fn check_config(s: &Settings) -> anyhow::Result<()> {
    let profiles = crate::sandbox::profile::Profiles::load(&s.kernel.policies_dir)?;
    crate::kernel::infer::Inference::from_config(&s.kernel.file, s.kernel.runtime.clone())?;
    println!(
        "configuration OK: profiles {}; providers {}; models {}",
        profiles.names().collect::<Vec<_>>().join(", "),
        s.kernel
            .file
            .providers
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        s.kernel
            .file
            .models
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    );
    Ok(())
}
