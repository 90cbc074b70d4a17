//! `agentosd`: command line, defaults and start-up. The binary calls
//! [`main`]; tests start a daemon by running the binary.

use crate::admin::server;
use crate::kernel::{Kernel, KernelConfig};
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
#[derive(Debug, Parser)]
#[command(name = "agentosd", version)]
pub struct Args {
    /// State directory: the database, agent workspaces, the sandbox mount point.
    #[arg(long, env = "AGENTOS_STATE_DIR", default_value = "/var/lib/agentos")]
    pub state_dir: PathBuf,
    /// Admin socket path.
    #[arg(long, env = "AGENTOS_SOCKET", default_value = crate::admin::protocol::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Admin socket mode (octal). Access is then authorised per request from
    /// the peer's uid: root manages all agents, others only their own.
    #[arg(long, default_value = "660", value_parser = parse_mode)]
    pub socket_mode: u32,
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
    /// Unix uids (and gids) given to agents, one per live agent. Must not
    /// overlap system users or systemd's dynamic range.
    #[arg(long, default_value = "400000-499999")]
    pub uid_range: UidRange,
    /// Name of this daemon's cgroup subtree.
    #[arg(long, default_value = "agentos")]
    pub cgroup_name: String,
    /// Cap on one syscall request line, in bytes.
    #[arg(long, default_value_t = crate::abi::wire::DEFAULT_LINE_CAP)]
    pub line_cap: usize,
    /// Requests one agent may have in flight.
    #[arg(long, default_value_t = 64)]
    pub max_in_flight: usize,
    /// Bytes of stdout/stderr kept per agent.
    #[arg(long, default_value_t = 16 << 20)]
    pub log_bytes_per_agent: u64,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let m = u32::from_str_radix(s, 8).map_err(|e| format!("{s}: not an octal mode: {e}"))?;
    if m & 0o7 != 0 {
        return Err(format!(
            "{s}: the admin socket must not be accessible to others; use 660 with --socket-group"
        ));
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

fn default_launcher() -> PathBuf {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("agentos-launcher")));
    match beside {
        Some(p) if p.exists() => p,
        _ => PathBuf::from("/usr/libexec/agentos/agentos-launcher"),
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
        .init();
    if !nix::unistd::geteuid().is_root() {
        bail!("agentosd must run as root: it creates namespaces, cgroups and per-agent uids");
    }
    let socket_gid = match &args.socket_group {
        Some(g) => Some(resolve_group(g)?.with_context(|| format!("no group named {g:?}"))?),
        None => resolve_group("agentos")?,
    };
    let config = KernelConfig {
        state_dir: args.state_dir.clone(),
        policies_dir: args.policies.clone().unwrap_or_else(default_policies),
        launcher: args.launcher.clone().unwrap_or_else(default_launcher),
        uid_range: args.uid_range,
        cgroup_name: args.cgroup_name.clone(),
        line_cap: args.line_cap,
        max_in_flight: args.max_in_flight,
        log_bytes_per_agent: args.log_bytes_per_agent,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("agentosd")
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let kernel = Kernel::open(config.clone()).with_context(|| {
            format!("opening the state directory {}", config.state_dir.display())
        })?;
        let listener = server::bind(&args.socket, args.socket_mode, socket_gid)
            .with_context(|| format!("creating the admin socket {}", args.socket.display()))?;
        let features = crate::sandbox::features::detect(kernel.cgroups.describe());
        tracing::info!(
            socket = %args.socket.display(),
            state_dir = %config.state_dir.display(),
            policies = %config.policies_dir.display(),
            landlock_abi = features.landlock_abi,
            cgroup = %features.cgroup,
            "agentosd ready"
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        server::run(kernel.clone(), listener, shutdown).await;
        tracing::info!("shutting down");
        let _ = std::fs::remove_file(&args.socket);
        kernel.store.durable().await?;
        anyhow::Ok(())
    })
}
