//! Creating agents. [`Kernel::spawn`] takes a request from either front
//! door, derives the agent's spec with the spawn rule ([`rule`]), records
//! its PCB and launches it. [`Kernel::launch`] is the daemon's side of one
//! sandbox, in one linear sequence: prepare (workspace, cgroups, plan),
//! start (the launcher server forks pid 1, which joins the cgroups once
//! they exist), settle (pid 1 reaches exec or names its failed step; the
//! PCB becomes RUNNING; its end, socket and output are taken care of). The
//! [`reaper`] turns the ended process into a TERMINATED PCB with its reason.

pub mod reaper;
pub mod rule;

use super::Kernel;
use super::live::Live;
use super::pcb::{Counters, ExitStatus, Pcb, Pid, State, now_ms};
use super::store::StoreError;
use super::table::ChildBounds;
use crate::abi::SysError;
use crate::drivers::fs::{CopyEntry, FsLimits, Workspace, copy_in};
use crate::sandbox::binds;
use crate::sandbox::cgroup::{AgentCgroup, CgroupError};
use crate::sandbox::handoff::AGENT_SOCKET_FD;
use crate::sandbox::launcher::EXIT_SETUP_FAILED;
use crate::sandbox::plan::{Identity, LaunchPlan};
use crate::sandbox::profile::Profile;
use crate::sandbox::quota::WorkspaceQuotas;
use crate::sandbox::spawner::{
    Launched, Payload, SandboxIo, SetupError, SpawnerError, launch_events,
};
use rule::{Ceiling, ChildRequest, SpawnSpec};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

impl Kernel {
    /// Creates, launches and returns a new agent, asked for by `parent`.
    /// Returns once the sandbox reached exec (or failed, in which case the
    /// PCB is TERMINATED with the failing step and the error names it). The
    /// PCB is durable on return.
    pub async fn spawn(
        self: &Arc<Self>,
        parent: Ceiling<'_>,
        mut request: ChildRequest,
    ) -> Result<Pcb, SysError> {
        let seed = std::mem::take(&mut request.copy);
        let spec = self.child_spec(parent, request)?;
        if let Ceiling::Agent(pcb) = parent {
            self.check_tree_pids(pcb.pid)?;
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
        let pcb = self.new_pcb(pid, uid, &spec);
        let inserted = if spec.ppid == 0 {
            self.table.insert(pcb.clone()).map(|()| Ok(pcb))
        } else {
            let bounds = ChildBounds {
                budget_asked: spec.budget_asked,
                owner_max_agents: (spec.owner != 0).then_some(self.config.file.admin.max_agents),
            };
            self.table.insert_child(spec.ppid, pcb, bounds)
        };
        let pcb = match inserted {
            Ok(Ok(pcb)) => pcb,
            Ok(Err(refusal)) => {
                self.release_uid(uid);
                return Err(rule::tree_refusal(refusal));
            }
            Err(e) => {
                self.release_uid(uid);
                return Err(store_err(e));
            }
        };

        if let Err(e) = self.launch(&pcb, &spec.profile, bind_fds, seed).await {
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
        self.store.durable().await.map_err(store_err)?;
        super::metrics::Metrics::add(&self.metrics.spawns, 1);
        self.table
            .get(pid)
            .ok_or_else(|| SysError::io("agent vanished during spawn"))
    }

    /// Refuses a child when the tree of an ancestor (`parent` included)
    /// has no pid left: the child's pid 1 joins its cgroup by migration,
    /// which `pids.max` does not stop.
    fn check_tree_pids(&self, parent: Pid) -> Result<(), SysError> {
        let lineage = self.table.lineage(parent);
        for (i, &ancestor) in lineage.iter().enumerate() {
            let Some(limit) = self.table.get(ancestor).map(|p| p.limits.pids) else {
                continue;
            };
            let (tree, _) = self.cgroups.agent(&lineage[..=i]).usage();
            if tree.pids >= limit {
                return Err(SysError::new(
                    crate::abi::Errno::EAGAIN,
                    format!(
                        "the tree of agent {ancestor} is at its pids limit: {} of pids = {limit} used",
                        tree.pids
                    ),
                ));
            }
        }
        Ok(())
    }

    /// After a child joined: refuses it if the tree of an ancestor holds
    /// more pids than its limit.
    fn check_tree_pids_over(&self, parent: Pid) -> Result<(), LaunchError> {
        let lineage = self.table.lineage(parent);
        for (i, &ancestor) in lineage.iter().enumerate() {
            let Some(limit) = self.table.get(ancestor).map(|p| p.limits.pids) else {
                continue;
            };
            let (tree, _) = self.cgroups.agent(&lineage[..=i]).usage();
            if tree.pids > limit {
                return Err(LaunchError::TreePids {
                    ancestor,
                    used: tree.pids,
                    limit,
                });
            }
        }
        Ok(())
    }

    /// The PCB of a new agent: READY, with its own uid as uid and gid.
    fn new_pcb(&self, pid: Pid, uid: u32, spec: &SpawnSpec) -> Pcb {
        Pcb {
            pid,
            ppid: spec.ppid,
            name: spec.name.clone(),
            owner: spec.owner,
            owner_gid: spec.owner_gid,
            uid,
            gid: uid,
            state: State::Ready,
            profile: spec.profile.name.clone(),
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
            host_start: None,
            workspace: self.workspace_dir(pid).display().to_string(),
            model: spec.model.clone(),
            role: spec.role.clone(),
            models: spec.models.clone(),
            priority: spec.priority,
            budget_from_parent: 0,
        }
    }

    /// Starts the sandbox of a READY agent in the table (new, or being
    /// recovered) with the sources of its program and extra binds, and
    /// returns once its program was exec'd. `seed` is put into the
    /// workspace first (a new agent's `spawn --copy`).
    pub(crate) async fn launch(
        self: &Arc<Self>,
        pcb: &Pcb,
        profile: &Profile,
        bind_fds: Vec<OwnedFd>,
        seed: Vec<CopyEntry>,
    ) -> Result<(), SysError> {
        let pid = pcb.pid;

        // Prepare.
        // 1. The workspace, owned by the agent, and its file driver; the
        //    operator's files are written into it, as the agent, before
        //    the agent can run.
        let workspace = Arc::new(open_workspace(&self.quotas, pcb)?);
        if !seed.is_empty() {
            let ws = workspace.clone();
            tokio::task::spawn_blocking(move || copy_in(&ws, &seed))
                .await
                .map_err(|e| SysError::io(format!("copying files into the workspace: {e}")))??;
        }
        // 2. The agent's cgroups, created on a blocking thread while the
        //    sandbox's pid 1 builds its namespaces and root.
        //    It nests inside the parent's, so the parent's limits bound it.
        let lineage = self.table.lineage(pid);
        let cgroup_paths = self.cgroups.agent(&lineage);
        let creating = {
            let (cgroups, limits) = (self.cgroups.clone(), pcb.limits);
            tokio::task::spawn_blocking(move || cgroups.create(&lineage, &limits))
        };
        // 3. The plan: the profile's sandbox with the agent's program, binds,
        //    cgroups and environment.
        let plan = self.agent_plan(pcb, profile, &cgroup_paths);

        // Start.
        // 4. The launcher server forks pid 1 and hands it the plan and the
        //    bind sources.
        let launched = self.spawner.launch(plan, &bind_fds).await;
        drop(bind_fds);
        // 5. Pid 1 may join its cgroups once they exist; if either side
        //    failed, both are undone.
        let created = match creating.await {
            Ok(created) => created.map_err(LaunchError::Cgroup),
            Err(e) => Err(LaunchError::CgroupTask(e)),
        };
        let (mut sandbox, io, cgroup) = cgroups_ready(launched, created, cgroup_paths)
            .await
            .map_err(|e| SysError::io(e.to_string()))?;
        // 6. The agent is live: from here on, a failure ends it like any
        //    other death.
        let live = Arc::new(Live {
            cgroup,
            host_pid: Some(sandbox.host_pid),
            host_start: sandbox.start_time(),
            workspace,
            inbox: Default::default(),
            stdin: Default::default(),
            kill_reason: Default::default(),
            dying: Default::default(),
            recv_lock: Default::default(),
            logged_bytes: Default::default(),
            exiting: Default::default(),
        });
        self.live.insert(pid, live.clone());

        // Settle.
        // 7. The launcher's verdict: the host pid, then exec or a failed step.
        // 8. RUNNING, in the table and the journal.
        let running = match launch_events(io.status, Payload::Agent).await {
            Ok(host_pid) => self.mark_running(pid, host_pid, live.host_start),
            Err(e) => Err(e.into()),
        };
        // 8b. Pid 1 joined by migration, which pids.max does not stop: a
        //     tree that a racing fork filled meanwhile does not keep it.
        let running = running.and_then(|()| match pcb.ppid {
            0 => Ok(()),
            ppid => self.check_tree_pids_over(ppid),
        });
        if let Err(e) = running {
            let reason = e.to_string();
            live.kill(&reason);
            let _ = sandbox.wait().await;
            self.finish(pid, &live, None).await;
            return Err(SysError::io(reason));
        }
        // 9. Reap it at its end, or at its wall-time limit.
        let wall = pcb.limits.wall_time_s;
        tokio::spawn(self.clone().reap(pid, sandbox, live.clone(), wall));
        // 10. Serve its syscall socket and copy its output into its log.
        if let Err(e) = self.serve(pid, io.socket, [io.stdout, io.stderr], &live) {
            live.kill(&e.message);
            return Err(e);
        }
        Ok(())
    }

    /// The launch plan of an agent's sandbox.
    fn agent_plan(&self, pcb: &Pcb, profile: &Profile, cgroup: &AgentCgroup) -> LaunchPlan {
        let who = Identity {
            pid: pcb.pid,
            uid: pcb.uid,
            gid: pcb.gid,
        };
        let program = PathBuf::from(&pcb.program);
        let mut plan = LaunchPlan::new(
            who,
            &pcb.limits,
            profile,
            program.clone(),
            pcb.args.clone(),
            self.config.state_dir.join("root"),
            PathBuf::from(&pcb.workspace),
        );
        plan.extra_ro = std::iter::once(program)
            .chain(pcb.ro_binds.iter().map(PathBuf::from))
            .collect();
        plan.cgroup_procs = cgroup.procs_files();
        plan.env
            .push(("AGENTOS_FD".into(), AGENT_SOCKET_FD.to_string()));
        if pcb.recoveries > 0 {
            // Tells a restarted program that it is resuming, and how often.
            plan.env
                .push(("AGENTOS_RECOVERED".into(), pcb.recoveries.to_string()));
        }
        plan
    }

    /// Records that the agent's program runs, under pid 1 `host_pid`
    /// started at `host_start`.
    fn mark_running(
        &self,
        pid: Pid,
        host_pid: i32,
        host_start: Option<u64>,
    ) -> Result<(), LaunchError> {
        let updated = self.table.update(pid, |p| {
            p.state = State::Running;
            p.host_pid = Some(host_pid);
            p.host_start = host_start;
            p.started_ms = Some(now_ms());
        });
        match updated {
            Ok(Some(_)) => {
                self.journal_state(pid, State::Ready, State::Running, None);
                Ok(())
            }
            Ok(None) => Err(LaunchError::Vanished),
            Err(e) => Err(LaunchError::Record(e)),
        }
    }

    /// Starts the tasks of a running agent: its syscall connection and the
    /// copies of its stdout and stderr into its log.
    fn serve(
        self: &Arc<Self>,
        pid: Pid,
        socket: std::os::unix::net::UnixStream,
        output: [OwnedFd; 2],
        live: &Arc<Live>,
    ) -> Result<(), SysError> {
        let socket_err = |e: std::io::Error| SysError::io(format!("socket: {e}"));
        socket.set_nonblocking(true).map_err(socket_err)?;
        let stream = tokio::net::UnixStream::from_std(socket).map_err(socket_err)?;
        tokio::spawn(super::conn::serve(self.clone(), pid, stream));
        for (fd, name) in output.into_iter().zip(["stdout", "stderr"]) {
            tokio::spawn(self.clone().pump_output(pid, fd, name, live.clone()));
        }
        Ok(())
    }

    pub(crate) fn release_uid(&self, uid: u32) {
        self.uids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .release(uid);
    }
}

/// Why a sandbox did not get to run its agent program.
#[derive(Debug, thiserror::Error)]
enum LaunchError {
    #[error(transparent)]
    Launcher(#[from] SpawnerError),
    #[error("cgroup: {0}")]
    Cgroup(#[source] CgroupError),
    #[error("cgroup: {0}")]
    CgroupTask(#[source] tokio::task::JoinError),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("recording the agent as running: {0}")]
    Record(#[source] StoreError),
    #[error("the PCB vanished during the launch")]
    Vanished,
    #[error("the tree of agent {ancestor} is over its pids limit: {used} of pids = {limit} used")]
    TreePids {
        ancestor: Pid,
        used: u64,
        limit: u64,
    },
}

/// Step 5 of a launch: with pid 1 started and the cgroups made, tells pid 1
/// it may join them. Otherwise kills pid 1 if it exists (closing the ready
/// pipe unwritten fails its cgroup step), removes the cgroups if they
/// exist, and says what failed (the launcher first).
async fn cgroups_ready(
    launched: Result<(Launched, SandboxIo), SpawnerError>,
    created: Result<AgentCgroup, LaunchError>,
    paths: AgentCgroup,
) -> Result<(Launched, SandboxIo, AgentCgroup), LaunchError> {
    let error = match (launched, created) {
        (Ok((sandbox, io)), Ok(cgroup)) => {
            // If pid 1 already died, the byte goes nowhere and its exit
            // report settles the launch.
            let _ = nix::unistd::write(&io.cgroup_ready, &[1]);
            return Ok((sandbox, io, cgroup));
        }
        (Ok((mut sandbox, io)), Err(e)) => {
            drop(io);
            sandbox.kill();
            let _ = sandbox.wait().await;
            e
        }
        (Err(e), _) => e.into(),
    };
    let _ = tokio::task::spawn_blocking(move || paths.remove()).await;
    Err(error)
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

/// A store error as a syscall's error.
pub(crate) fn store_err(e: StoreError) -> SysError {
    SysError::io(format!("store: {e}"))
}

/// Step 1 of a launch: makes the agent's workspace (a subvolume limited to
/// `workspace_bytes` by the kernel unless quotas are off; 0700, owned by
/// the agent) if it is new, applies its limit again if it is not
/// (recovery), and opens it for the file syscalls.
fn open_workspace(quotas: &WorkspaceQuotas, pcb: &Pcb) -> Result<Workspace, SysError> {
    let dir = Path::new(&pcb.workspace);
    let fail = |e: std::io::Error| SysError::io(format!("workspace {}: {e}", dir.display()));
    quotas.ensure_workspace(pcb.pid, pcb.uid, pcb.gid, pcb.limits.workspace_bytes)?;
    Workspace::open(dir, pcb.uid, pcb.gid, fs_limits(pcb)).map_err(fail)
}

/// The file driver's limits of an agent.
pub(crate) fn fs_limits(pcb: &Pcb) -> FsLimits {
    FsLimits {
        quota_bytes: pcb.limits.workspace_bytes,
        max_file_bytes: pcb.limits.max_file_bytes,
        max_read_bytes: pcb.limits.max_read_bytes,
    }
}
