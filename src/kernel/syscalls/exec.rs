//! EXEC_CMD: builds the command's job from the caller's PCB, profile and
//! the daemon's `[exec]` settings, and has the exec driver
//! ([`crate::drivers::exec`]) run it; the command is aborted when the
//! agent is killed. Also the start-up sweep of containers an earlier run
//! left behind.

use crate::abi::SysError;
use crate::drivers::exec::{self, Driver, ExecRequest, Job, docker, sandbox};
use crate::kernel::Kernel;
use crate::kernel::pcb::{Pcb, now_ms};
use crate::sandbox::plan::Identity;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long the start-up sweep waits for the docker engine.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(15);

/// EXEC_CMD: runs `cmd` with the chosen driver and returns its output.
/// The permission check, journal and counters are the dispatcher's.
pub async fn exec_cmd(k: &Arc<Kernel>, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
    let cfg = &k.config.file.exec;
    let req = ExecRequest::check(args, cfg)?;
    let live = k
        .live
        .get(pcb.pid)
        .ok_or_else(|| SysError::srch("agent is not running"))?;
    let profile = super::caller_profile(k, pcb, "profile of the agent")?;
    let workspace = PathBuf::from(&pcb.workspace);
    let max_output = usize::try_from(cfg.max_output_bytes).unwrap_or(usize::MAX);
    let n = exec::next_command_number();

    // The driver's own settings are validated before a slot is taken.
    let job = match req.driver {
        Driver::Sandbox => {
            exec::check_shared_network(profile)?;
            Job::Sandbox(Box::new(sandbox::SandboxJob {
                plan: sandbox::plan(
                    Identity {
                        pid: pcb.pid,
                        uid: pcb.uid,
                        gid: pcb.gid,
                    },
                    &pcb.limits,
                    profile,
                    &req.cmd,
                    k.config.state_dir.join("root"),
                    workspace,
                ),
                spawner: k.spawner.clone(),
                cgroups: k.cgroups.clone(),
                cgroup_leaf: crate::sandbox::cgroup::Cgroups::agent_path(&k.table.lineage(pcb.pid))
                    .join(format!("exec-{n}")),
                limits: pcb.limits,
                timeout: req.timeout,
                max_output,
            }))
        }
        Driver::Docker => {
            let image = cfg.docker_image.clone().ok_or_else(|| {
                SysError::inval(
                    "the docker driver is not configured (no exec.docker_image in the daemon's configuration)",
                )
            })?;
            Job::Docker(Box::new(docker::DockerJob {
                socket: cfg.docker_socket.clone(),
                spec: docker::ContainerSpec {
                    image,
                    cmd: req.cmd.clone(),
                    pid: pcb.pid,
                    uid: pcb.uid,
                    gid: pcb.gid,
                    workspace,
                    limits: pcb.limits,
                    allow_network: profile.exec.allow_network,
                    name: format!(
                        "agentos-exec-{}-{n}-{}-{}",
                        pcb.pid,
                        std::process::id(),
                        now_ms()
                    ),
                    owner: k.config.state_dir.display().to_string(),
                },
                timeout: req.timeout,
                max_output,
            }))
        }
    };
    let out = exec::run(pcb.pid, job, live.dying.notified()).await?;
    Ok(out.to_json())
}

/// At start: removes the containers of EXEC_CMD calls that an earlier run
/// of this daemon left behind (a crash does not stop them). Only when the
/// docker driver is configured; an engine that does not answer is logged,
/// not fatal.
pub async fn sweep_leftover_containers(k: &Kernel) {
    let cfg = &k.config.file.exec;
    if cfg.docker_image.is_none() {
        return;
    }
    let owner = k.config.state_dir.display().to_string();
    let swept =
        tokio::time::timeout(SWEEP_TIMEOUT, docker::sweep(&cfg.docker_socket, &owner)).await;
    match swept {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => tracing::warn!(
            removed = n,
            "removed EXEC_CMD containers left by an earlier run"
        ),
        Ok(Err(e)) => tracing::warn!("cannot look for leftover EXEC_CMD containers: {e}"),
        Err(_) => tracing::warn!(
            "the docker engine did not answer; leftover EXEC_CMD containers were not looked for"
        ),
    }
}
