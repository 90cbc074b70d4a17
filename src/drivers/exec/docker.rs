//! The `docker` driver: `/bin/sh -c CMD` in a container of the configured
//! image, through the engine's Unix socket (bollard, API version
//! negotiated). The container:
//!
//! - runs as the agent's uid:gid (never root), with every capability
//!   dropped and `no-new-privileges`;
//! - has a read-only root filesystem, a tmpfs /tmp, and the agent's
//!   workspace bound read-write at /workspace (its working directory) — no
//!   other host path;
//! - has no network (`none`) unless the profile's `exec.allow_network`
//!   (then the engine's `bridge`), and private pid, ipc, uts and cgroup
//!   namespaces;
//! - gets the agent's memory (no swap), pids and cpu limits;
//! - is killed at the timeout and always removed, whatever happened.
//!
//! The whole host configuration is built by [`host_config`], which checks
//! its invariants with [`check_host_config`] before anything reaches the
//! engine. When the engine cannot be reached the call fails with EIO: it
//! never falls back to running the command anywhere else.

use super::{Abort, Capture, ExecOutput};
use crate::abi::SysError;
use crate::abi::limits::Limits;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigCgroupnsModeEnum, HostConfigLogConfig, Mount,
    MountType, ResourcesUlimits,
};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, KillContainerOptions, ListContainersOptions,
    RemoveContainerOptions, WaitContainerOptions,
};
use futures_core::Stream;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

/// Where the workspace appears in the container.
pub const WORKSPACE: &str = "/workspace";
/// The only security option, and a required one.
const NO_NEW_PRIVILEGES: &str = "no-new-privileges";
/// Timeout of each request to the engine (not of the command).
const ENGINE_TIMEOUT_S: u64 = 30;
/// Label on every container the daemon creates.
pub const LABEL: &str = "agentos.exec";
/// Label naming the daemon instance (its state directory) that created it.
pub const OWNER_LABEL: &str = "agentos.state";

/// Everything one container command needs, owned (it runs as its own task).
pub struct DockerJob {
    /// The engine's Unix socket.
    pub socket: String,
    pub spec: ContainerSpec,
    pub timeout: Duration,
    pub max_output: usize,
}

/// What the container is made from.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub image: String,
    pub cmd: String,
    /// The agent's pid (hostname and label).
    pub pid: u64,
    pub uid: u32,
    pub gid: u32,
    /// Host path of the agent's workspace.
    pub workspace: PathBuf,
    pub limits: Limits,
    pub allow_network: bool,
    /// Unique container name.
    pub name: String,
    /// The daemon's state directory (the owner label).
    pub owner: String,
}

/// The container's host configuration, checked: see the module docs.
pub fn host_config(spec: &ContainerSpec) -> Result<HostConfig, SysError> {
    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let hc = HostConfig {
        privileged: Some(false),
        network_mode: Some(if spec.allow_network { "bridge" } else { "none" }.into()),
        ipc_mode: Some("private".into()),
        cgroupns_mode: Some(HostConfigCgroupnsModeEnum::PRIVATE),
        readonly_rootfs: Some(true),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec![NO_NEW_PRIVILEGES.into()]),
        mounts: Some(vec![Mount {
            typ: Some(MountType::BIND),
            source: Some(spec.workspace.display().to_string()),
            target: Some(WORKSPACE.into()),
            read_only: Some(false),
            ..Default::default()
        }]),
        tmpfs: Some(HashMap::from([(
            "/tmp".to_string(),
            format!(
                "rw,nosuid,nodev,mode=1777,size={}",
                spec.limits.tmp_bytes.max(4096)
            ),
        )])),
        memory: Some(as_i64(spec.limits.memory_bytes)),
        // Equal to memory: no swap on top.
        memory_swap: Some(as_i64(spec.limits.memory_bytes)),
        pids_limit: Some(as_i64(spec.limits.pids)),
        // 100 % of one core = 1e9 nano-CPUs.
        nano_cpus: Some(as_i64(spec.limits.cpu_percent.saturating_mul(10_000_000))),
        // As in the sandbox: the largest file, open files, no core dumps.
        ulimits: Some(vec![
            ulimit(
                "fsize",
                spec.limits.workspace_bytes.max(spec.limits.tmp_bytes),
            ),
            ulimit("nofile", spec.limits.nofile),
            ulimit("core", 0),
        ]),
        // Output travels over the attach stream only; nothing on disk.
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }),
        auto_remove: Some(false),
        ..Default::default()
    };
    check_host_config(&hc, &spec.workspace, spec.allow_network)?;
    Ok(hc)
}

fn ulimit(name: &str, value: u64) -> ResourcesUlimits {
    let v = i64::try_from(value).unwrap_or(i64::MAX);
    ResourcesUlimits {
        name: Some(name.into()),
        soft: Some(v),
        hard: Some(v),
    }
}

/// Why [`check_host_config`] refused a host configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsafeHostConfig {
    #[error("the container must not be privileged")]
    Privileged,
    #[error(
        "network mode {0:?} is not allowed (only \"none\", or \"bridge\" when the profile allows a network)"
    )]
    NetworkMode(Option<String>),
    #[error("{what} mode {mode:?} would share a namespace")]
    SharedNamespace { what: &'static str, mode: String },
    #[error("the cgroup namespace must be private")]
    CgroupNamespace,
    #[error("capabilities may not be added: {0:?}")]
    AddedCapabilities(Option<Vec<String>>),
    #[error("every capability must be dropped (cap_drop ALL)")]
    CapabilitiesKept,
    #[error("{0} are not allowed")]
    NotAllowed(&'static str),
    #[error("the only mount must be the workspace {workspace} bound at {WORKSPACE}, not {mount}")]
    WrongMount { workspace: String, mount: String },
    #[error("exactly one mount (the workspace) is allowed, not {0:?}")]
    MountCount(Option<usize>),
    #[error("tmpfs mounts other than /tmp: {0:?}")]
    Tmpfs(Vec<String>),
    #[error("the root filesystem must be read-only")]
    WritableRoot,
    #[error("security options must be exactly [{NO_NEW_PRIVILEGES:?}], not {0:?}")]
    SecurityOptions(Option<Vec<String>>),
    #[error("{0} must be limited")]
    Unlimited(&'static str),
    #[error("memory_swap must equal memory (no swap)")]
    Swap,
}

/// A refused host configuration is the daemon's own mistake: EIO.
impl From<UnsafeHostConfig> for SysError {
    fn from(e: UnsafeHostConfig) -> Self {
        SysError::io(format!(
            "refusing to create the container: {e} (this is a bug in the daemon)"
        ))
    }
}

/// Refuses any host configuration that would weaken the container: a
/// privileged container, host (or another container's) namespaces, added
/// capabilities or devices, host paths other than the workspace, a
/// writable root, missing limits, or security options other than
/// `no-new-privileges`.
pub fn check_host_config(
    hc: &HostConfig,
    workspace: &Path,
    allow_network: bool,
) -> Result<(), UnsafeHostConfig> {
    use UnsafeHostConfig as Unsafe;
    if hc.privileged != Some(false) {
        return Err(Unsafe::Privileged);
    }
    match hc.network_mode.as_deref() {
        Some("none") => {}
        Some("bridge") if allow_network => {}
        other => return Err(Unsafe::NetworkMode(other.map(str::to_string))),
    }
    let private =
        |what: &'static str, mode: &Option<String>, allowed: &[&str]| match mode.as_deref() {
            None | Some("") => Ok(()),
            Some(m) if allowed.contains(&m) => Ok(()),
            Some(m) => Err(Unsafe::SharedNamespace {
                what,
                mode: m.to_string(),
            }),
        };
    private("pid", &hc.pid_mode, &[])?;
    private("ipc", &hc.ipc_mode, &["private", "none"])?;
    private("uts", &hc.uts_mode, &[])?;
    private("user namespace", &hc.userns_mode, &[])?;
    if hc.cgroupns_mode != Some(HostConfigCgroupnsModeEnum::PRIVATE) {
        return Err(Unsafe::CgroupNamespace);
    }
    if hc.cap_add.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(Unsafe::AddedCapabilities(hc.cap_add.clone()));
    }
    if !hc
        .cap_drop
        .as_ref()
        .is_some_and(|c| c.iter().any(|x| x.eq_ignore_ascii_case("ALL")))
    {
        return Err(Unsafe::CapabilitiesKept);
    }
    let nonempty = |v: bool, what: &'static str| {
        if v {
            Err(Unsafe::NotAllowed(what))
        } else {
            Ok(())
        }
    };
    nonempty(
        hc.devices.as_ref().is_some_and(|d| !d.is_empty()),
        "devices",
    )?;
    nonempty(
        hc.device_requests.as_ref().is_some_and(|d| !d.is_empty()),
        "device requests",
    )?;
    nonempty(
        hc.device_cgroup_rules
            .as_ref()
            .is_some_and(|d| !d.is_empty()),
        "device cgroup rules",
    )?;
    nonempty(
        hc.binds.as_ref().is_some_and(|b| !b.is_empty()),
        "binds (the workspace is the only mount)",
    )?;
    nonempty(
        hc.volumes_from.as_ref().is_some_and(|v| !v.is_empty()),
        "volumes from other containers",
    )?;
    nonempty(hc.volume_driver.is_some(), "volume drivers")?;
    nonempty(
        hc.group_add.as_ref().is_some_and(|g| !g.is_empty()),
        "supplementary groups",
    )?;
    nonempty(
        hc.sysctls.as_ref().is_some_and(|s| !s.is_empty()),
        "sysctls",
    )?;
    nonempty(
        hc.links.as_ref().is_some_and(|l| !l.is_empty()),
        "links to other containers",
    )?;
    nonempty(
        hc.port_bindings.as_ref().is_some_and(|p| !p.is_empty())
            || hc.publish_all_ports == Some(true),
        "published ports",
    )?;
    // Some(empty) would unmask /proc paths the engine hides by default.
    nonempty(
        hc.masked_paths.is_some() || hc.readonly_paths.is_some(),
        "changes to masked or read-only paths",
    )?;
    nonempty(hc.runtime.is_some(), "other runtimes")?;
    nonempty(hc.cgroup_parent.is_some(), "cgroup parents")?;
    nonempty(hc.cgroup.is_some(), "cgroup sharing")?;
    nonempty(
        hc.oom_kill_disable == Some(true),
        "disabling the OOM killer",
    )?;

    match hc.mounts.as_deref() {
        Some([m]) => {
            let ok = m.typ == Some(MountType::BIND)
                && m.source.as_deref().map(Path::new) == Some(workspace)
                && m.target.as_deref() == Some(WORKSPACE)
                && m.read_only != Some(true)
                && workspace.is_absolute()
                && !workspace
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir));
            if !ok {
                return Err(Unsafe::WrongMount {
                    workspace: workspace.display().to_string(),
                    mount: format!("{m:?}"),
                });
            }
        }
        other => return Err(Unsafe::MountCount(other.map(|m| m.len()))),
    }
    if let Some(t) = &hc.tmpfs {
        if t.keys().any(|k| k != "/tmp") {
            return Err(Unsafe::Tmpfs(t.keys().cloned().collect()));
        }
    }
    if hc.readonly_rootfs != Some(true) {
        return Err(Unsafe::WritableRoot);
    }
    if hc.security_opt.as_deref() != Some(&[NO_NEW_PRIVILEGES.to_string()][..]) {
        return Err(Unsafe::SecurityOptions(hc.security_opt.clone()));
    }
    for (what, v) in [
        ("memory", hc.memory),
        ("memory_swap", hc.memory_swap),
        ("pids_limit", hc.pids_limit),
        ("nano_cpus", hc.nano_cpus),
    ] {
        if v.is_none_or(|v| v <= 0) {
            return Err(Unsafe::Unlimited(what));
        }
    }
    if hc.memory_swap != hc.memory {
        return Err(Unsafe::Swap);
    }
    Ok(())
}

/// The create request: the checked host configuration plus the command,
/// the agent's uid:gid and the working directory.
pub fn create_body(spec: &ContainerSpec) -> Result<ContainerCreateBody, SysError> {
    if spec.uid == 0 || spec.gid == 0 {
        return Err(SysError::perm("containers never run as root"));
    }
    let host = host_config(spec)?;
    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        // The entrypoint is ours, whatever the image says.
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        cmd: Some(vec![spec.cmd.clone()]),
        user: Some(format!("{}:{}", spec.uid, spec.gid)),
        working_dir: Some(WORKSPACE.into()),
        hostname: Some(format!("agent-{}", spec.pid)),
        env: Some(vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            "HOME=/workspace".into(),
            "TMPDIR=/tmp".into(),
            format!("AGENTOS_PID={}", spec.pid),
        ]),
        network_disabled: Some(!spec.allow_network),
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(false),
        tty: Some(false),
        labels: Some(HashMap::from([
            (LABEL.to_string(), "1".to_string()),
            ("agentos.pid".to_string(), spec.pid.to_string()),
            ("agentos.daemon".to_string(), std::process::id().to_string()),
            (OWNER_LABEL.to_string(), spec.owner.clone()),
        ])),
        host_config: Some(host),
        ..Default::default()
    })
}

/// Connects to the engine and negotiates the API version; EIO when it
/// cannot be reached.
pub async fn connect(socket: &str) -> Result<Docker, SysError> {
    let unreachable = |e: &dyn std::fmt::Display| {
        SysError::io(format!(
            "the docker engine at {socket} is unreachable: {e}; the command was not run"
        ))
    };
    let docker = Docker::connect_with_unix(socket, ENGINE_TIMEOUT_S, bollard::API_DEFAULT_VERSION)
        .map_err(|e| unreachable(&e))?;
    match tokio::time::timeout(
        Duration::from_secs(ENGINE_TIMEOUT_S),
        docker.negotiate_version(),
    )
    .await
    {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(unreachable(&e)),
        Err(_) => Err(unreachable(&"no answer")),
    }
}

/// Removes every container that an earlier run of this daemon (the same
/// state directory) left behind, running or not: their agents are gone or
/// being restarted, and nothing may go on running on their behalf. Returns
/// how many there were.
pub async fn sweep(socket: &str, owner: &str) -> Result<usize, SysError> {
    let docker = connect(socket).await?;
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{LABEL}=1"), format!("{OWNER_LABEL}={owner}")],
    )]);
    let found = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|e| SysError::io(format!("listing containers: {}", engine_message(&e))))?;
    let ids: Vec<String> = found.into_iter().filter_map(|c| c.id).collect();
    for id in &ids {
        remove(&docker, id).await;
    }
    Ok(ids.len())
}

/// Runs the command in a new container and removes the container, whatever
/// happened.
pub async fn run(job: DockerJob, abort: Abort) -> Result<ExecOutput, SysError> {
    let body = create_body(&job.spec)?;
    let docker = connect(&job.socket).await?;
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(job.spec.name.clone()),
                ..Default::default()
            }),
            body,
        )
        .await
        .map_err(|e| match &e {
            DockerError::DockerResponseServerError {
                status_code: 404, ..
            } => SysError::io(format!(
                "image {} is not in the engine (the daemon never pulls): {}",
                job.spec.image,
                engine_message(&e)
            )),
            _ => SysError::io(format!("creating the container: {}", engine_message(&e))),
        })?;
    let id = created.id;
    let result = run_container(&docker, &id, &job, abort).await;
    remove(&docker, &id).await;
    result
}

async fn run_container(
    docker: &Docker,
    id: &str,
    job: &DockerJob,
    mut abort: Abort,
) -> Result<ExecOutput, SysError> {
    let engine = |what: &'static str| {
        move |e: DockerError| SysError::io(format!("{what}: {}", engine_message(&e)))
    };
    // Attached before the start, so no output is missed.
    let attach = docker
        .attach_container(
            id,
            Some(AttachContainerOptions {
                stdout: true,
                stderr: true,
                stream: true,
                logs: false,
                ..Default::default()
            }),
        )
        .await
        .map_err(engine("attaching to the container"))?;
    let mut output = attach.output;
    docker
        .start_container(id, None)
        .await
        .map_err(engine("starting the container"))?;

    let mut stdout = Capture::new(job.max_output);
    let mut stderr = Capture::new(job.max_output);
    let finished = async {
        // The stream ends when the container's processes are gone.
        while let Some(item) = next(&mut output).await {
            match item {
                Ok(LogOutput::StdOut { message }) => stdout.push(&message),
                Ok(LogOutput::StdErr { message }) => stderr.push(&message),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        exit_code(docker, id).await
    };
    let (exit, timed_out) = tokio::select! {
        code = finished => (code?, false),
        _ = tokio::time::sleep(job.timeout) => {
            kill(docker, id).await;
            (exit_code(docker, id).await.unwrap_or(137), true)
        }
        _ = &mut abort => {
            kill(docker, id).await;
            return Err(SysError::intr("EXEC_CMD aborted"));
        }
    };
    Ok(ExecOutput {
        stdout,
        stderr,
        exit_code: exit,
        timed_out,
    })
}

/// The next item of a bollard stream.
async fn next<T>(s: &mut Pin<Box<dyn Stream<Item = T> + Send>>) -> Option<T> {
    std::future::poll_fn(|cx| s.as_mut().poll_next(cx)).await
}

/// Waits for the container to stop and returns its exit code.
async fn exit_code(docker: &Docker, id: &str) -> Result<i32, SysError> {
    let mut wait = Box::pin(docker.wait_container(
        id,
        Some(WaitContainerOptions {
            condition: "not-running".into(),
        }),
    ));
    let item = std::future::poll_fn(|cx| wait.as_mut().poll_next(cx)).await;
    match item {
        Some(Ok(r)) => Ok(r.status_code as i32),
        Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Ok(code as i32),
        Some(Err(e)) => Err(SysError::io(format!(
            "waiting for the container: {}",
            engine_message(&e)
        ))),
        None => Err(SysError::io("waiting for the container: no answer")),
    }
}

async fn kill(docker: &Docker, id: &str) {
    let _ = docker
        .kill_container(
            id,
            Some(KillContainerOptions {
                signal: "KILL".into(),
            }),
        )
        .await;
}

/// Removes the container (killing it if it still runs). Logged, not
/// returned: the command's result stands either way.
async fn remove(docker: &Docker, id: &str) {
    let opts = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    for attempt in 0..3 {
        match docker.remove_container(id, Some(opts.clone())).await {
            Ok(()) => return,
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => return,
            Err(e) => {
                tracing::warn!(
                    container = id,
                    attempt,
                    "removing an EXEC_CMD container: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The engine's own message for server errors, bollard's otherwise.
fn engine_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
