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
use crate::kernel::pcb::{Limits, Pid};
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
    pub pid: Pid,
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
    check_host_config(&hc, &spec.workspace, spec.allow_network).map_err(|e| {
        SysError::io(format!(
            "refusing to create the container: {e} (this is a bug in the daemon)"
        ))
    })?;
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

/// Refuses any host configuration that would weaken the container: a
/// privileged container, host (or another container's) namespaces, added
/// capabilities or devices, host paths other than the workspace, a
/// writable root, missing limits, or security options other than
/// `no-new-privileges`.
pub fn check_host_config(
    hc: &HostConfig,
    workspace: &Path,
    allow_network: bool,
) -> Result<(), String> {
    if hc.privileged != Some(false) {
        return Err("the container must not be privileged".into());
    }
    match hc.network_mode.as_deref() {
        Some("none") => {}
        Some("bridge") if allow_network => {}
        other => {
            return Err(format!(
                "network mode {other:?} is not allowed (only \"none\", or \"bridge\" when the profile allows a network)"
            ));
        }
    }
    let private = |what: &str, mode: &Option<String>, allowed: &[&str]| match mode.as_deref() {
        None | Some("") => Ok(()),
        Some(m) if allowed.contains(&m) => Ok(()),
        Some(m) => Err(format!("{what} mode {m:?} would share a namespace")),
    };
    private("pid", &hc.pid_mode, &[])?;
    private("ipc", &hc.ipc_mode, &["private", "none"])?;
    private("uts", &hc.uts_mode, &[])?;
    private("user namespace", &hc.userns_mode, &[])?;
    if hc.cgroupns_mode != Some(HostConfigCgroupnsModeEnum::PRIVATE) {
        return Err("the cgroup namespace must be private".into());
    }
    if hc.cap_add.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(format!("capabilities may not be added: {:?}", hc.cap_add));
    }
    if !hc
        .cap_drop
        .as_ref()
        .is_some_and(|c| c.iter().any(|x| x.eq_ignore_ascii_case("ALL")))
    {
        return Err("every capability must be dropped (cap_drop ALL)".into());
    }
    let nonempty = |v: bool, what: &str| {
        if v {
            Err(format!("{what} are not allowed"))
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
                return Err(format!(
                    "the only mount must be the workspace {} bound at {WORKSPACE}, not {m:?}",
                    workspace.display()
                ));
            }
        }
        other => {
            return Err(format!(
                "exactly one mount (the workspace) is allowed, not {:?}",
                other.map(|m| m.len())
            ));
        }
    }
    if let Some(t) = &hc.tmpfs {
        if t.keys().any(|k| k != "/tmp") {
            return Err(format!(
                "tmpfs mounts other than /tmp: {:?}",
                t.keys().collect::<Vec<_>>()
            ));
        }
    }
    if hc.readonly_rootfs != Some(true) {
        return Err("the root filesystem must be read-only".into());
    }
    if hc.security_opt.as_deref() != Some(&[NO_NEW_PRIVILEGES.to_string()][..]) {
        return Err(format!(
            "security options must be exactly [{NO_NEW_PRIVILEGES:?}], not {:?}",
            hc.security_opt
        ));
    }
    for (what, v) in [
        ("memory", hc.memory),
        ("memory_swap", hc.memory_swap),
        ("pids_limit", hc.pids_limit),
        ("nano_cpus", hc.nano_cpus),
    ] {
        if v.is_none_or(|v| v <= 0) {
            return Err(format!("{what} must be limited"));
        }
    }
    if hc.memory_swap != hc.memory {
        return Err("memory_swap must equal memory (no swap)".into());
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
mod tests {
    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            image: "busybox".into(),
            cmd: "id -u".into(),
            pid: 7,
            uid: 600_123,
            gid: 600_123,
            workspace: PathBuf::from("/var/lib/agentos/workspaces/7"),
            limits: Limits {
                memory_bytes: 64 << 20,
                pids: 64,
                cpu_percent: 50,
                wall_time_s: 0,
                workspace_bytes: 1 << 30,
                max_file_bytes: 1 << 20,
                max_read_bytes: 1 << 20,
                nofile: 64,
                syscalls_per_s: 0,
                tmp_bytes: 16 << 20,
                budget_tokens: 0,
            },
            allow_network: false,
            name: "t".into(),
            owner: "/var/lib/agentos".into(),
        }
    }

    fn ws() -> PathBuf {
        spec().workspace
    }

    #[test]
    fn the_built_configuration_is_locked_down() {
        let hc = host_config(&spec()).expect("the daemon's own configuration passes");
        assert_eq!(hc.privileged, Some(false));
        assert_eq!(hc.network_mode.as_deref(), Some("none"));
        assert_eq!(hc.readonly_rootfs, Some(true));
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(hc.security_opt, Some(vec!["no-new-privileges".to_string()]));
        assert_eq!(hc.memory, Some(64 << 20));
        assert_eq!(hc.pids_limit, Some(64));
        assert_eq!(hc.nano_cpus, Some(500_000_000));
        let mounts = hc.mounts.expect("mounts");
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].target.as_deref(), Some("/workspace"));
        assert!(hc.tmpfs.expect("tmpfs").contains_key("/tmp"));

        let mut networked = spec();
        networked.allow_network = true;
        let hc = host_config(&networked).expect("networked");
        assert_eq!(hc.network_mode.as_deref(), Some("bridge"));

        let body = create_body(&spec()).expect("body");
        assert_eq!(body.user.as_deref(), Some("600123:600123"));
        assert_eq!(body.working_dir.as_deref(), Some("/workspace"));
        let mut root = spec();
        root.uid = 0;
        assert!(create_body(&root).is_err(), "root is refused");
    }

    /// Every weakening of the configuration is refused.
    #[test]
    fn weakened_configurations_are_refused() {
        let good = host_config(&spec()).expect("good");
        type Change = Box<dyn Fn(&mut HostConfig)>;
        let cases: Vec<(&str, Change)> = vec![
            ("privileged", Box::new(|h| h.privileged = Some(true))),
            ("privileged unset", Box::new(|h| h.privileged = None)),
            (
                "host network",
                Box::new(|h| h.network_mode = Some("host".into())),
            ),
            (
                "another container's network",
                Box::new(|h| h.network_mode = Some("container:abc".into())),
            ),
            (
                "bridge without permission",
                Box::new(|h| h.network_mode = Some("bridge".into())),
            ),
            ("default network", Box::new(|h| h.network_mode = None)),
            ("host pid", Box::new(|h| h.pid_mode = Some("host".into()))),
            (
                "another container's pid",
                Box::new(|h| h.pid_mode = Some("container:abc".into())),
            ),
            ("host ipc", Box::new(|h| h.ipc_mode = Some("host".into()))),
            (
                "shareable ipc",
                Box::new(|h| h.ipc_mode = Some("shareable".into())),
            ),
            ("host uts", Box::new(|h| h.uts_mode = Some("host".into()))),
            (
                "host userns",
                Box::new(|h| h.userns_mode = Some("host".into())),
            ),
            (
                "host cgroupns",
                Box::new(|h| h.cgroupns_mode = Some(HostConfigCgroupnsModeEnum::HOST)),
            ),
            (
                "added capability",
                Box::new(|h| h.cap_add = Some(vec!["SYS_ADMIN".into()])),
            ),
            ("capabilities kept", Box::new(|h| h.cap_drop = None)),
            (
                "some capabilities kept",
                Box::new(|h| h.cap_drop = Some(vec!["NET_RAW".into()])),
            ),
            (
                "a device",
                Box::new(|h| {
                    h.devices = Some(vec![bollard::models::DeviceMapping {
                        path_on_host: Some("/dev/sda".into()),
                        path_in_container: Some("/dev/sda".into()),
                        cgroup_permissions: Some("rwm".into()),
                    }])
                }),
            ),
            (
                "a device request",
                Box::new(|h| h.device_requests = Some(vec![Default::default()])),
            ),
            (
                "device cgroup rule",
                Box::new(|h| h.device_cgroup_rules = Some(vec!["a *:* rwm".into()])),
            ),
            (
                "a host bind",
                Box::new(|h| h.binds = Some(vec!["/:/host".into()])),
            ),
            (
                "the docker socket",
                Box::new(|h| {
                    h.binds = Some(vec!["/var/run/docker.sock:/var/run/docker.sock".into()])
                }),
            ),
            (
                "a second mount",
                Box::new(|h| {
                    let mut m = h.mounts.clone().unwrap_or_default();
                    m.push(Mount {
                        typ: Some(MountType::BIND),
                        source: Some("/etc".into()),
                        target: Some("/etc".into()),
                        ..Default::default()
                    });
                    h.mounts = Some(m);
                }),
            ),
            (
                "another host path as the workspace",
                Box::new(|h| {
                    h.mounts = Some(vec![Mount {
                        typ: Some(MountType::BIND),
                        source: Some("/root".into()),
                        target: Some("/workspace".into()),
                        ..Default::default()
                    }])
                }),
            ),
            (
                "a volume as the workspace",
                Box::new(|h| {
                    if let Some(m) = h.mounts.as_mut() {
                        m[0].typ = Some(MountType::VOLUME);
                    }
                }),
            ),
            ("no mount", Box::new(|h| h.mounts = None)),
            (
                "volumes from",
                Box::new(|h| h.volumes_from = Some(vec!["other".into()])),
            ),
            (
                "writable root",
                Box::new(|h| h.readonly_rootfs = Some(false)),
            ),
            (
                "seccomp unconfined",
                Box::new(|h| {
                    h.security_opt =
                        Some(vec![NO_NEW_PRIVILEGES.into(), "seccomp=unconfined".into()])
                }),
            ),
            (
                "apparmor unconfined",
                Box::new(|h| h.security_opt = Some(vec!["apparmor=unconfined".into()])),
            ),
            ("new privileges", Box::new(|h| h.security_opt = None)),
            (
                "unmasked /proc",
                Box::new(|h| h.masked_paths = Some(Vec::new())),
            ),
            (
                "writable /proc/sys",
                Box::new(|h| h.readonly_paths = Some(Vec::new())),
            ),
            (
                "sysctl",
                Box::new(|h| {
                    h.sysctls = Some(HashMap::from([("net.ipv4.ip_forward".into(), "1".into())]))
                }),
            ),
            (
                "extra tmpfs",
                Box::new(|h| {
                    if let Some(t) = h.tmpfs.as_mut() {
                        t.insert("/etc".into(), String::new());
                    }
                }),
            ),
            (
                "root group",
                Box::new(|h| h.group_add = Some(vec!["0".into()])),
            ),
            ("no memory limit", Box::new(|h| h.memory = None)),
            ("swap", Box::new(|h| h.memory_swap = Some(-1))),
            ("no pids limit", Box::new(|h| h.pids_limit = Some(0))),
            ("no cpu limit", Box::new(|h| h.nano_cpus = None)),
            (
                "no OOM killer",
                Box::new(|h| h.oom_kill_disable = Some(true)),
            ),
            (
                "other runtime",
                Box::new(|h| h.runtime = Some("runsc-debug".into())),
            ),
            (
                "cgroup parent",
                Box::new(|h| h.cgroup_parent = Some("/".into())),
            ),
            (
                "published ports",
                Box::new(|h| h.publish_all_ports = Some(true)),
            ),
        ];
        for (name, change) in cases {
            let mut hc = good.clone();
            change(&mut hc);
            assert!(
                check_host_config(&hc, &ws(), false).is_err(),
                "{name} was accepted: {hc:?}"
            );
        }
        assert!(check_host_config(&good, &ws(), false).is_ok());
        assert!(
            check_host_config(&good, Path::new("/var/lib/agentos/workspaces/8"), false).is_err(),
            "another agent's workspace"
        );
    }
}
