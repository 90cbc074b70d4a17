//! The spawn rule: what a new agent may be, derived in one place from what
//! is asked ([`ChildRequest`]) and who asks ([`Ceiling`]). The admin
//! socket's `spawn` and SPAWN_AGENT both come here, and every check runs
//! once, in this order: profile, permissions, limits, the tree's room
//! (`max_descendants`, `max_depth`), model, program, models, priority,
//! pipe_to, name, and last the paths on disk.
//!
//! An admin client's ceiling is the profile it names: root may raise the
//! limits above it and grant any permission, any other user gets at most
//! the profile's. An agent's ceiling is its own PCB: its child gets at most
//! its permissions, limits, priority and models, runs its program (or a
//! program under the profile's system directories, or the built-in
//! runtime) and has its extra binds.

use crate::abi::SysError;
use crate::abi::calls::{Call, expand_permissions};
use crate::abi::limits::{Limits, LimitsPatch};
use crate::drivers::fs::CopyEntry;
use crate::kernel::Kernel;
use crate::kernel::pcb::{Pcb, Pid};
use crate::kernel::table::TreeRefusal;
use crate::sandbox::profile::Profile;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The profile of an admin request that names none.
const DEFAULT_PROFILE: &str = "default";

/// Who asks for the new agent, and so what bounds it.
#[derive(Debug, Clone, Copy)]
pub enum Ceiling<'a> {
    /// An admin client (its peer credentials), starting a new tree. The
    /// profile it names bounds the agent, unless it is root.
    Admin { uid: u32, gid: u32 },
    /// An agent spawning a child: its own PCB bounds the child.
    Agent(&'a Pcb),
}

/// What is asked for, from either front door.
#[derive(Debug, Clone, Default)]
pub struct ChildRequest {
    pub name: String,
    /// Absolute path of the program. None: the parent's program (agents)
    /// or, for an LLM agent, the built-in runtime.
    pub program: Option<String>,
    pub args: Vec<String>,
    /// Permission names or groups. None: the profile's (admin) or none
    /// (agent).
    pub permissions: Option<Vec<String>>,
    /// Absent fields: the ceiling's.
    pub limits: Option<LimitsPatch>,
    /// An LLM agent's role (system prompt).
    pub role: Option<String>,
    /// An LLM agent's model.
    pub model: Option<String>,
    /// Scheduling weight (1-100). None: 1 (admin) or the parent's (agent).
    pub priority: Option<u32>,
    /// Agent that receives this one's stdout on its stdin.
    pub pipe_to: Option<Pid>,
    /// Admin requests only (an agent's child has its parent's): the
    /// profile, `default` when absent.
    pub profile: Option<String>,
    /// Admin requests only: extra host paths bound read-only.
    pub ro_binds: Vec<String>,
    /// Admin requests only: further models the agent may use.
    pub models: Vec<String>,
    /// Admin requests only: files put into the workspace, as the agent,
    /// before its program starts (`agentos spawn --copy`).
    pub copy: Vec<CopyEntry>,
}

/// A checked request to create an agent, as [`Kernel::child_spec`] derives
/// it.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    pub name: String,
    pub ppid: Pid,
    pub owner: u32,
    /// Primary gid of the owner, used when opening the program and binds.
    pub owner_gid: u32,
    pub profile: Profile,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub ro_binds: Vec<PathBuf>,
    pub permissions: BTreeSet<Call>,
    pub limits: Limits,
    /// The `budget_tokens` the request named, if any: an agent's child
    /// without one gets half of its parent's remaining budget when it is
    /// inserted (see [`crate::kernel::table::Table::insert_child`]).
    pub budget_asked: Option<u64>,
    pub pipe_to: Option<Pid>,
    /// For LLM agents: model, role and the models it may use.
    pub model: Option<String>,
    pub role: Option<String>,
    pub models: BTreeSet<String>,
    pub priority: u32,
}

impl Kernel {
    /// The spawn rule: the spec of the agent `request` asks for, within
    /// `parent`'s ceiling, or why it may not be.
    pub fn child_spec(
        &self,
        parent: Ceiling<'_>,
        request: ChildRequest,
    ) -> Result<SpawnSpec, SysError> {
        let inference = self.inference();
        let ChildRequest {
            name,
            program: asked_program,
            args,
            permissions: asked_permissions,
            limits: asked_limits,
            role,
            model: asked_model,
            priority: asked_priority,
            pipe_to,
            profile: asked_profile,
            ro_binds: asked_binds,
            models: asked_models,
            copy: _,
        } = request;
        // An LLM agent has a role or a model; without a program of its own
        // it runs the built-in runtime.
        let llm = role.is_some() || asked_model.is_some();
        let runs_runtime = llm && asked_program.is_none();

        // 1. The profile: the one an admin names, or the parent's.
        let profile = match parent {
            Ceiling::Admin { .. } => self
                .profiles
                .get(asked_profile.as_deref().unwrap_or(DEFAULT_PROFILE))
                .map_err(|e| SysError::inval(e.to_string()))?,
            Ceiling::Agent(pcb) => {
                if asked_profile.is_some() || !asked_binds.is_empty() || !asked_models.is_empty() {
                    return Err(SysError::inval(
                        "an agent's child has its parent's profile, binds and models",
                    ));
                }
                self.profiles
                    .get(&pcb.profile)
                    .map_err(|e| SysError::io(e.to_string()))?
            }
        };

        // 2. Permissions: those asked for (LLM_INFER for the built-in
        //    runtime, which thinks through it), within the ceiling.
        let mut permissions = match (&asked_permissions, parent) {
            (Some(list), _) => expand_permissions(list)?,
            (None, Ceiling::Admin { .. }) => expand_permissions(&profile.permissions)?,
            (None, Ceiling::Agent(_)) => BTreeSet::new(),
        };
        if runs_runtime {
            permissions.insert(Call::LLM_INFER);
        }
        match parent {
            Ceiling::Admin { uid: 0, .. } => {}
            Ceiling::Admin { .. } => {
                let ceiling = expand_permissions(&profile.permissions)?;
                if let Some(c) = permissions.iter().find(|c| !ceiling.contains(c)) {
                    return Err(SysError::acces(format!(
                        "permission {} is beyond profile {}; only root may grant it",
                        c.name(),
                        profile.name
                    )));
                }
            }
            Ceiling::Agent(pcb) => {
                if let Some(extra) = permissions.iter().find(|c| !pcb.permissions.contains(c)) {
                    return Err(SysError::acces(format!(
                        "permission {} exceeds the parent's permissions",
                        extra.name()
                    )));
                }
            }
        }

        // 3. Limits: the ceiling's, narrowed by the request (root may
        //    override the profile's).
        let budget_asked = asked_limits.and_then(|l| l.budget_tokens);
        let limits = match (asked_limits, parent) {
            (None, Ceiling::Admin { .. }) => profile.limits,
            (None, Ceiling::Agent(pcb)) => pcb.limits,
            (Some(patch), Ceiling::Admin { uid: 0, .. }) => profile
                .limits
                .overridden(&patch)
                .map_err(|e| SysError::inval(e.to_string()))?,
            (Some(patch), Ceiling::Admin { .. }) => profile
                .limits
                .narrow(&patch)
                .map_err(|e| SysError::acces(e.to_string()))?,
            (Some(patch), Ceiling::Agent(pcb)) => pcb
                .limits
                .narrow(&patch)
                .map_err(|e| SysError::acces(e.to_string()))?,
        };

        // 3b. Room in the tree: every ancestor's max_descendants and
        //     max_depth (checked again, atomically, when the PCB is
        //     inserted).
        if let Ceiling::Agent(pcb) = parent {
            self.table.tree_room(pcb.pid).map_err(tree_refusal)?;
        }

        // 4. The model: the one asked for or, for an LLM agent, the
        //    configured default (admin) or the parent's (agent). An agent's
        //    child may only use models its parent may.
        let model = match parent {
            Ceiling::Admin { .. } => match (asked_model, llm) {
                (Some(m), _) => Some(m),
                (None, true) => Some(inference.default_model.clone().ok_or_else(|| {
                    SysError::inval("no --model given and no scheduler.default_model configured")
                })?),
                (None, false) => None,
            },
            Ceiling::Agent(pcb) if llm => {
                let model = asked_model.or_else(|| pcb.model.clone()).ok_or_else(|| {
                    SysError::inval("an LLM child needs a model: this agent has none")
                })?;
                if pcb.model.as_deref() != Some(model.as_str()) && !pcb.models.contains(&model) {
                    return Err(SysError::acces(format!(
                        "model {model:?} is not one this agent may use"
                    )));
                }
                Some(model)
            }
            Ceiling::Agent(_) => None,
        };

        // 5. The program: the built-in runtime, the one asked for (an
        //    agent's child only its parent's or one under the profile's
        //    system directories, and not with a model), or the parent's.
        let program = match (asked_program, parent) {
            (None, _) if runs_runtime => inference.runtime.clone(),
            (Some(_), Ceiling::Agent(_)) if llm => {
                return Err(SysError::inval(
                    "give either a program or a role/model, not both",
                ));
            }
            (None, Ceiling::Admin { .. }) => {
                return Err(SysError::inval(
                    "give a --program, or a --model/--role for an LLM agent",
                ));
            }
            (None, Ceiling::Agent(pcb)) => PathBuf::from(&pcb.program),
            (Some(p), Ceiling::Admin { .. }) => PathBuf::from(p),
            (Some(p), Ceiling::Agent(pcb)) => {
                let path = PathBuf::from(&p);
                let visible = path == Path::new(&pcb.program)
                    || profile
                        .filesystem
                        .ro_binds
                        .iter()
                        .any(|b| !is_symlink(b) && path.starts_with(b));
                if !visible || p.contains("/../") {
                    return Err(SysError::acces(format!(
                        "program {p} is neither the parent's program nor under the system directories"
                    )));
                }
                path
            }
        };

        // 6. Models it may use: its own and, from an admin, those named;
        //    each must be configured.
        let mut models: BTreeSet<String> = asked_models.into_iter().collect();
        models.extend(model.iter().cloned());
        for m in &models {
            inference.model(m)?;
        }

        // 7. Priority, within the parent's and between 1 and 100.
        let priority = match parent {
            Ceiling::Admin { .. } => asked_priority.unwrap_or(1),
            Ceiling::Agent(pcb) => {
                let priority = asked_priority.unwrap_or(pcb.priority);
                if priority > pcb.priority {
                    return Err(SysError::acces(format!(
                        "priority {priority} exceeds the parent's {}",
                        pcb.priority
                    )));
                }
                priority
            }
        };
        if !(1..=100).contains(&priority) {
            return Err(SysError::inval("priority must be between 1 and 100"));
        }

        // 8. Who it belongs to, and the agent its output goes to: a live
        //    one of the same owner (for an agent's child, the parent itself
        //    or one of its descendants).
        let (ppid, owner, owner_gid, ro_binds) = match parent {
            Ceiling::Admin { uid, gid } => (
                0,
                uid,
                gid,
                asked_binds.iter().map(PathBuf::from).collect::<Vec<_>>(),
            ),
            Ceiling::Agent(pcb) => (
                pcb.pid,
                pcb.owner,
                pcb.owner_gid,
                pcb.ro_binds.iter().map(PathBuf::from).collect(),
            ),
        };
        if let Some(target) = pipe_to {
            if let Ceiling::Agent(pcb) = parent
                && target != pcb.pid
                && !self.table.is_descendant(pcb.pid, target)
            {
                return Err(SysError::acces(format!(
                    "pipe_to {target}: only the parent itself or its descendants"
                )));
            }
            match self.table.get(target) {
                Some(t) if t.is_live() && t.owner == owner => {}
                Some(t) if t.is_live() => {
                    return Err(SysError::acces(format!(
                        "pipe_to agent {target} belongs to another user"
                    )));
                }
                _ => return Err(SysError::srch(format!("pipe_to: no live agent {target}"))),
            }
        }

        // 9. The name.
        check_name(&name)?;

        // 10. The paths on disk: the program and every extra bind.
        check_program(&program)?;
        check_ro_bind(&program)?;
        for p in &ro_binds {
            check_ro_bind(p)?;
        }

        Ok(SpawnSpec {
            name,
            ppid,
            owner,
            owner_gid,
            profile: profile.clone(),
            program,
            args,
            ro_binds,
            permissions,
            limits,
            budget_asked,
            pipe_to,
            model,
            role,
            models,
            priority,
        })
    }
}

/// The error of a spawn that does not fit in its tree: EAGAIN while the
/// tree, or its owner's `[admin] max_agents`, is full (room returns when an
/// agent ends), EPERM when too deep,
/// EQUOTA when the parent's remaining token budget cannot cover the child's.
pub fn tree_refusal(r: TreeRefusal) -> SysError {
    match r {
        TreeRefusal::Descendants { .. } | TreeRefusal::OwnerAgents { .. } => {
            SysError::new(crate::abi::Errno::EAGAIN, r.to_string())
        }
        TreeRefusal::Depth { .. } => SysError::perm(r.to_string()),
        TreeRefusal::Budget { .. } => SysError::quota(r.to_string()),
    }
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

fn is_symlink(p: &Path) -> bool {
    p.symlink_metadata()
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false)
}
