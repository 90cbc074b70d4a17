//! Creating and ending agents: validation of a spawn request, the PCB, the
//! uid, workspace and cgroup, the launch through the launcher server, and the
//! reaper that turns a dead process into a TERMINATED PCB with its reason.

use super::Kernel;
use super::journal::clip;
use super::live::Live;
use super::pcb::{Counters, ExitStatus, Limits, Pcb, Pid, State, now_ms};
use crate::abi::SysError;
use crate::abi::calls::Call;
use crate::drivers::fs::{FsLimits, Workspace};
use crate::sandbox::binds;
use crate::sandbox::handoff::LaunchEvent;
use crate::sandbox::launcher::EXIT_SETUP_FAILED;
use crate::sandbox::plan::{LaunchPlan, Rlimits};
use crate::sandbox::spawner::Launched;
use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// How long a sandbox may take to reach exec before it is killed.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest stdout/stderr line stored as one log entry.
const MAX_LOG_LINE: usize = 8192;

/// A validated request to create an agent.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    pub name: String,
    pub ppid: Pid,
    pub owner: u32,
    /// Primary gid of the owner, used when opening the program and binds.
    pub owner_gid: u32,
    pub profile: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub ro_binds: Vec<PathBuf>,
    pub permissions: BTreeSet<Call>,
    pub limits: Limits,
    pub pipe_to: Option<Pid>,
    /// For LLM agents: model, role and the models it may use.
    pub model: Option<String>,
    pub role: Option<String>,
    pub models: BTreeSet<String>,
    pub priority: u32,
}

/// Checks a name given to an agent.
pub fn check_name(name: &str) -> Result<(), SysError> {
    if name.is_empty() || name.len() > 64 {
        return Err(SysError::inval("name must be 1 to 64 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(SysError::inval(format!(
            "name {name:?} may only hold letters, digits, '-', '_' and '.'"
        )));
    }
    Ok(())
}

/// Sandbox paths that extra read-only binds may not cover: they are built
/// fresh in every sandbox (or, for /workspace, belong to the agent).
const RESERVED: [&str; 4] = ["/proc", "/dev", "/workspace", "/etc"];

/// Checks a host path that is to be bound read-only into the sandbox.
pub fn check_ro_bind(path: &Path) -> Result<(), SysError> {
    if !path.is_absolute() || path.components().any(|c| c.as_os_str() == "..") {
        return Err(SysError::inval(format!(
            "{} must be an absolute path without ..",
            path.display()
        )));
    }
    if path == Path::new("/") || RESERVED.iter().any(|r| path.starts_with(r)) {
        return Err(SysError::inval(format!(
            "{} cannot be bound into a sandbox (/, /proc, /dev, /etc and /workspace are built per agent)",
            path.display()
        )));
    }
    if !path.exists() {
        return Err(SysError::noent(format!(
            "{} does not exist",
            path.display()
        )));
    }
    Ok(())
}

/// Checks that a program path names an executable regular file.
pub fn check_program(path: &Path) -> Result<(), SysError> {
    if !path.is_absolute() {
        return Err(SysError::inval(format!(
            "program {} must be an absolute path",
            path.display()
        )));
    }
    let meta = std::fs::metadata(path)
        .map_err(|e| SysError::noent(format!("program {}: {e}", path.display())))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(SysError::inval(format!(
            "program {} is not an executable file",
            path.display()
        )));
    }
    Ok(())
}

impl Kernel {
    /// Creates, launches and returns a new agent. Returns once the sandbox
    /// reached exec (or failed, in which case the PCB is TERMINATED with the
    /// failing step and the error names it). The PCB is durable on return.
    pub async fn spawn(self: &Arc<Self>, spec: SpawnSpec) -> Result<Pcb, SysError> {
        check_name(&spec.name)?;
        if let Some(m) = &spec.model {
            self.inference().model(m)?;
        }
        if !(1..=100).contains(&spec.priority) {
            return Err(SysError::inval("priority must be between 1 and 100"));
        }
        check_program(&spec.program)?;
        check_ro_bind(&spec.program)?;
        for p in &spec.ro_binds {
            check_ro_bind(p)?;
        }
        let profile = self
            .profiles
            .get(&spec.profile)
            .map_err(|e| SysError::inval(e.to_string()))?
            .clone();
        if let Some(target) = spec.pipe_to {
            match self.table.get(target) {
                Some(t) if t.is_live() && t.owner == spec.owner => {}
                Some(t) if t.is_live() => {
                    return Err(SysError::acces(format!(
                        "pipe_to agent {target} belongs to another user"
                    )));
                }
                _ => return Err(SysError::srch(format!("pipe_to: no live agent {target}"))),
            }
        }

        // Opened first, with the owner's permissions: a refused path leaves
        // no trace in the table.
        let mut paths = vec![spec.program.clone()];
        paths.extend(spec.ro_binds.iter().cloned());
        let bind_fds = open_binds(&paths, spec.owner, spec.owner_gid).await?;

        let pid = self.store.next_pid().map_err(store_err)?;
        let uid = self
            .uids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allocate()
            .map_err(|e| SysError::new(crate::abi::Errno::EAGAIN, e.to_string()))?;
        let workspace = self.workspace_dir(pid);
        let pcb = Pcb {
            pid,
            ppid: spec.ppid,
            name: spec.name.clone(),
            owner: spec.owner,
            owner_gid: spec.owner_gid,
            uid,
            gid: uid,
            state: State::Ready,
            profile: profile.name.clone(),
            program: spec.program.display().to_string(),
            args: spec.args.clone(),
            ro_binds: spec
                .ro_binds
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            permissions: spec.permissions.clone(),
            limits: spec.limits,
            pipe_to: spec.pipe_to,
            counters: Counters::default(),
            created_ms: now_ms(),
            recoveries: 0,
            started_ms: None,
            ended_ms: None,
            exit: None,
            host_pid: None,
            workspace: workspace.display().to_string(),
            model: spec.model.clone(),
            role: spec.role.clone(),
            models: spec.models.clone(),
            priority: spec.priority,
        };
        if let Err(e) = self.table.insert(pcb.clone()) {
            self.release_uid(uid);
            return Err(store_err(e));
        }

        match self.launch(&pcb, &profile, bind_fds).await {
            Ok(()) => {}
            Err(e) => {
                // The PCB stays, TERMINATED, so the failure can be inspected.
                self.mark_terminated(
                    pid,
                    ExitStatus {
                        code: EXIT_SETUP_FAILED,
                        signal: None,
                        reason: e.message.clone(),
                    },
                )
                .await;
                return Err(e);
            }
        }
        self.store.durable().await.map_err(store_err)?;
        super::metrics::Metrics::add(&self.metrics.spawns, 1);
        self.table
            .get(pid)
            .ok_or_else(|| SysError::io("agent vanished during spawn"))
    }

    /// Builds the workspace, cgroup and plan, has the launcher start it and waits
    /// until the agent program is exec'd.
    pub(crate) async fn launch(
        self: &Arc<Self>,
        pcb: &Pcb,
        profile: &crate::sandbox::profile::Profile,
        bind_fds: Vec<OwnedFd>,
    ) -> Result<(), SysError> {
        let pid = pcb.pid;
        let workspace = PathBuf::from(&pcb.workspace);
        make_workspace(&workspace, pcb.uid, pcb.gid)
            .map_err(|e| SysError::io(format!("workspace {}: {e}", workspace.display())))?;
        let ws = Workspace::open(
            &workspace,
            pcb.uid,
            pcb.gid,
            FsLimits {
                quota_bytes: pcb.limits.workspace_bytes,
                max_file_bytes: pcb.limits.max_file_bytes,
                max_read_bytes: pcb.limits.max_read_bytes,
            },
        )
        .map_err(|e| SysError::io(format!("workspace {}: {e}", workspace.display())))?;
        // The cgroups are created while the sandbox's pid 1 builds its
        // namespaces and root; it joins them once told they are ready.
        let cgroup_paths = self.cgroups.agent(pid);
        let creating = {
            let (cgroups, limits) = (self.cgroups.clone(), pcb.limits);
            tokio::task::spawn_blocking(move || cgroups.create(pid, &limits))
        };

        let mut extra_ro = vec![PathBuf::from(&pcb.program)];
        extra_ro.extend(pcb.ro_binds.iter().map(PathBuf::from));
        let plan = LaunchPlan {
            pid,
            uid: pcb.uid,
            gid: pcb.gid,
            program: PathBuf::from(&pcb.program),
            args: pcb.args.clone(),
            env: agent_env(pid, pcb.recoveries),
            new_root: self.config.state_dir.join("root"),
            workspace: workspace.clone(),
            ro_binds: profile.filesystem.ro_binds.clone(),
            extra_ro,
            etc: profile.filesystem.etc.clone(),
            dev: profile.filesystem.dev.clone(),
            tmp_bytes: pcb.limits.tmp_bytes,
            cgroup_procs: cgroup_paths.procs_files(),
            rlimits: Rlimits {
                nofile: pcb.limits.nofile,
                fsize: pcb.limits.workspace_bytes.max(pcb.limits.tmp_bytes),
                nproc: pcb.limits.pids,
            },
            landlock_min_abi: profile.landlock.min_abi,
            seccomp: profile.filters.clone(),
            share_network: false,
        };

        let launched = self.spawner.launch(plan, &bind_fds).await;
        drop(bind_fds);
        let created = creating
            .await
            .map_err(|e| SysError::io(format!("cgroup: {e}")))
            .and_then(|r| r.map_err(|e| SysError::io(format!("cgroup: {e}"))));
        let (mut sandbox, io, cgroup) = match (launched, created) {
            (Ok((sandbox, io)), Ok(cgroup)) => {
                // Ready: pid 1 may join. If it already died, its exit
                // report settles the spawn below.
                let _ = nix::unistd::write(&io.cgroup_ready, &[1]);
                (sandbox, io, cgroup)
            }
            (launched, created) => {
                // Closing the ready pipe unwritten fails pid 1's cgroup step.
                let error = match launched {
                    Ok((mut sandbox, io)) => {
                        drop(io);
                        sandbox.kill();
                        let _ = sandbox.wait().await;
                        created.err()
                    }
                    Err(e) => Some(SysError::io(e.to_string())),
                };
                let _ = tokio::task::spawn_blocking(move || cgroup_paths.remove()).await;
                return Err(error.unwrap_or_else(|| SysError::io("sandbox setup failed")));
            }
        };

        let live = Arc::new(Live {
            cgroup,
            host_pid: Some(sandbox.host_pid),
            workspace: Arc::new(ws),
            inbox: Default::default(),
            stdin: Default::default(),
            kill_reason: Default::default(),
            dying: Default::default(),
            recv_lock: Default::default(),
            logged_bytes: Default::default(),
            exiting: Default::default(),
        });
        self.live.insert(pid, live.clone());

        // Wait for the launcher's verdict: the host pid, then EOF (exec'd)
        // or a failed step.
        let outcome = tokio::time::timeout(SETUP_TIMEOUT, read_launch_events(io.status)).await;
        let (host_pid, failure) = match outcome {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => (None, Some(format!("reading launcher status: {e}"))),
            Err(_) => (
                None,
                Some(format!("sandbox setup took longer than {SETUP_TIMEOUT:?}")),
            ),
        };
        if let Some(reason) = failure {
            live.kill(&reason);
            let _ = sandbox.wait().await;
            self.finish(pid, &live, None).await;
            return Err(SysError::io(reason));
        }

        if let Ok(Some(p)) = self.table.update(pid, |p| {
            p.state = State::Running;
            p.host_pid = host_pid;
            p.started_ms = Some(now_ms());
        }) {
            let _ = p;
        }
        self.journal_state(pid, State::Ready, State::Running, None);

        let socket_err = |e: std::io::Error| SysError::io(format!("socket: {e}"));
        let stream = io.socket;
        stream.set_nonblocking(true).map_err(socket_err)?;
        let stream = tokio::net::UnixStream::from_std(stream).map_err(socket_err)?;
        tokio::spawn(super::conn::serve(self.clone(), pid, stream));
        for (fd, name) in [(io.stdout, "stdout"), (io.stderr, "stderr")] {
            tokio::spawn(self.clone().pump_output(pid, fd, name, live.clone()));
        }
        let wall = pcb.limits.wall_time_s;
        tokio::spawn(self.clone().reap(pid, sandbox, live, wall));
        Ok(())
    }

    /// Copies one output pipe of the agent into its log.
    async fn pump_output(
        self: Arc<Self>,
        pid: Pid,
        fd: OwnedFd,
        stream: &'static str,
        live: Arc<Live>,
    ) {
        let Ok(rx) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
            return;
        };
        let cap = self.config.log_bytes_per_agent;
        let mut reader = BufReader::new(rx);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            // Read up to a newline, but never hold more than MAX_LOG_LINE.
            let mut limited = (&mut reader).take(MAX_LOG_LINE as u64);
            match tokio::io::AsyncBufReadExt::read_until(&mut limited, b'\n', &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let before = live
                        .logged_bytes
                        .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    if before >= cap {
                        continue;
                    }
                    if before + n as u64 >= cap {
                        self.log_line(
                            pid,
                            "daemon",
                            format!("log limit of {cap} bytes reached; further output is dropped"),
                        );
                        continue;
                    }
                    let text = String::from_utf8_lossy(&buf)
                        .trim_end_matches('\n')
                        .to_string();
                    self.log_line(pid, stream, text);
                }
            }
        }
    }

    /// Waits for the agent to end (or its wall-time limit) and finishes it.
    async fn reap(self: Arc<Self>, pid: Pid, mut sandbox: Launched, live: Arc<Live>, wall_s: u64) {
        let status = if wall_s > 0 {
            tokio::select! {
                s = sandbox.wait() => s,
                _ = tokio::time::sleep(Duration::from_secs(wall_s)) => {
                    live.kill(&format!("wall-time limit of {wall_s} s reached"));
                    sandbox.wait().await
                }
            }
        } else {
            sandbox.wait().await
        };
        self.finish(pid, &live, status).await;
    }

    /// Records how the agent ended, removes its cgroup and wakes waiters.
    async fn finish(&self, pid: Pid, live: &Arc<Live>, status: Option<std::process::ExitStatus>) {
        use std::os::unix::process::ExitStatusExt;
        let oom = live.cgroup.oom_killed();
        let kill_reason = live.kill_reason();
        let limit = self
            .table
            .get(pid)
            .map(|p| p.limits.memory_bytes)
            .unwrap_or(0);
        let cgroup = live.cgroup.clone();
        let _ = tokio::task::spawn_blocking(move || cgroup.remove()).await;

        let (code, signal) = match status {
            Some(s) => match s.signal() {
                Some(sig) => (128 + sig, Some(sig)),
                None => (s.code().unwrap_or(-1), None),
            },
            None => (-1, None),
        };
        if self.shutting_down.load(std::sync::atomic::Ordering::SeqCst) && kill_reason.is_none() {
            // Stopped for a daemon shutdown: the agent stays live in the
            // table and is recovered at the next start.
            self.park_for_recovery(pid).await;
            self.live.remove(pid);
            return;
        }
        let reason = if let Some(r) = kill_reason {
            r
        } else if oom {
            format!("killed by the OOM killer (memory limit {limit} bytes)")
        } else if let Some(sig) = signal {
            format!("killed by signal {}", signal_name(sig))
        } else {
            format!("exited with code {code}")
        };
        self.mark_terminated(
            pid,
            ExitStatus {
                code,
                signal,
                reason,
            },
        )
        .await;
        self.live.remove(pid);
    }

    /// Makes the PCB TERMINATED (keeping an exit status already recorded by
    /// SYS_EXIT), makes that durable, frees the uid and wakes waiters.
    pub(crate) async fn mark_terminated(&self, pid: Pid, exit: ExitStatus) {
        let mut from = State::Terminated;
        let mut uid = None;
        let updated = self.table.update(pid, |p| {
            from = p.state;
            if from == State::Terminated {
                return;
            }
            uid = Some(p.uid);
            p.state = State::Terminated;
            p.host_pid = None;
            p.ended_ms = Some(now_ms());
            if p.exit.is_none() {
                p.exit = Some(exit.clone());
            }
        });
        let reason = match updated {
            Ok(Some(p)) => p.exit.map(|e| e.reason),
            Ok(None) => return,
            Err(e) => {
                tracing::error!(pid, "cannot record termination: {e}");
                None
            }
        };
        if from == State::Terminated {
            return;
        }
        self.journal_state(pid, from, State::Terminated, reason.map(clip));
        if let Err(e) = self.store.durable().await {
            tracing::error!(pid, "flush after termination failed: {e}");
        }
        if let Some(uid) = uid {
            self.release_uid(uid);
        }
        self.cancel_timers(pid);
        self.drop_webhooks(pid);
        tracing::info!(pid, "agent terminated");
        self.exits.notify_waiters();
    }

    fn release_uid(&self, uid: u32) {
        self.uids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .release(uid);
    }
}

/// Opens the program (first) and extra binds with the owner's permissions,
/// on a blocking thread (the identity switch is per thread).
pub(crate) async fn open_binds(
    paths: &[PathBuf],
    owner: u32,
    owner_gid: u32,
) -> Result<Vec<OwnedFd>, SysError> {
    if paths.len() > binds::MAX_EXTRA_BINDS {
        return Err(SysError::inval(format!(
            "at most {} read-only binds (program included)",
            binds::MAX_EXTRA_BINDS
        )));
    }
    let paths = paths.to_vec();
    tokio::task::spawn_blocking(move || {
        paths
            .iter()
            .enumerate()
            .map(|(i, p)| binds::open_as(p, owner, owner_gid, i == 0))
            .collect()
    })
    .await
    .map_err(|e| SysError::io(format!("opening binds: {e}")))?
}

fn store_err(e: super::store::StoreError) -> SysError {
    SysError::io(format!("store: {e}"))
}

fn make_workspace(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

fn agent_env(pid: Pid, recoveries: u32) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("HOME", "/workspace"),
        ("TMPDIR", "/tmp"),
        ("LANG", "C.UTF-8"),
        ("USER", "agent"),
        ("AGENTOS_FD", "3"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain([("AGENTOS_PID".to_string(), pid.to_string())])
    .collect();
    if recoveries > 0 {
        // Tells a restarted program that it is resuming, and how often.
        env.push(("AGENTOS_RECOVERED".into(), recoveries.to_string()));
    }
    env
}

async fn read_launch_events(fd: OwnedFd) -> std::io::Result<(Option<i32>, Option<String>)> {
    let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
    let mut lines = BufReader::new(rx).lines();
    let mut host_pid = None;
    let mut failure = None;
    while let Some(line) = lines.next_line().await? {
        match serde_json::from_str::<LaunchEvent>(&line) {
            Ok(LaunchEvent::Forked { host_pid: p }) => host_pid = Some(p),
            Ok(LaunchEvent::Failed { step, error }) => {
                failure = Some(format!("sandbox setup failed at step {step}: {error}"))
            }
            Err(_) => failure = Some(format!("launcher said something unexpected: {line}")),
        }
    }
    if host_pid.is_none() && failure.is_none() {
        failure = Some("the launcher exited before starting the agent".into());
    }
    Ok((host_pid, failure))
}

pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("{sig}"))
}

use tokio::io::AsyncReadExt;
