//! Sandbox profiles: the data files in `policies/profiles/*.toml` that say
//! what an agent sees (binds), what it may do by default (permissions), its
//! limits, and which seccomp filters and Landlock ABI it needs. Loading a
//! profile also compiles its seccomp filters, so a bad policy is refused at
//! daemon start, not at the first spawn.

use super::seccomp::{self, Filters};
use crate::abi::calls::expand_permissions;
use crate::abi::limits::Limits;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Permissions {
        path: PathBuf,
        source: crate::abi::calls::UnknownPermission,
    },
    #[error("{path}: seccomp policy {filter:?}: {source}")]
    Seccomp {
        path: PathBuf,
        filter: String,
        source: seccomp::SeccompError,
    },
    #[error("no profile named {0:?}")]
    Unknown(String),
}

/// The on-disk form of a profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    description: String,
    permissions: Vec<String>,
    seccomp: String,
    landlock: LandlockPolicy,
    limits: Limits,
    filesystem: FilesystemPolicy,
    #[serde(default)]
    net: NetPolicy,
    #[serde(default)]
    exec: ExecPolicy,
    #[serde(default)]
    memory: MemoryPolicy,
}

/// NET_FETCH rules — `[net]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct NetPolicy {
    /// Allow loopback addresses (127.0.0.0/8, ::1): local development and
    /// tests only. Private and other special ranges stay blocked.
    pub allow_loopback: bool,
    /// When not empty, only these domains (and their subdomains).
    pub allow_domains: Vec<String>,
    /// Never these domains (and their subdomains).
    pub deny_domains: Vec<String>,
    /// Largest response body returned.
    pub max_bytes: u64,
    pub timeout_s: u64,
    pub max_redirects: u32,
}

impl Default for NetPolicy {
    fn default() -> Self {
        NetPolicy {
            allow_loopback: false,
            allow_domains: Vec::new(),
            deny_domains: Vec::new(),
            max_bytes: 5 << 20,
            timeout_s: 10,
            max_redirects: 5,
        }
    }
}

/// EXEC_CMD rules — `[exec]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ExecPolicy {
    /// Whether EXEC_CMD sandboxes (and containers) get a network.
    pub allow_network: bool,
}

/// MEM_WRITE / MEM_READ rules — `[memory]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryPolicy {
    /// Shared collections agents of this profile may use with MEM_SHARED.
    pub shared: Vec<String>,
    /// Bytes one shared collection may hold (all writers together); an
    /// agent of this profile whose write would pass it gets EQUOTA.
    pub shared_bytes: u64,
}

/// Default of [`MemoryPolicy::shared_bytes`]: 256 MiB.
pub const DEFAULT_SHARED_BYTES: u64 = 256 << 20;

impl Default for MemoryPolicy {
    fn default() -> Self {
        MemoryPolicy {
            shared: Vec::new(),
            shared_bytes: DEFAULT_SHARED_BYTES,
        }
    }
}

/// Landlock requirements.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LandlockPolicy {
    /// The lowest Landlock ABI that enforces this profile; the launcher
    /// refuses to start the agent on a kernel below it.
    pub min_abi: u8,
}

/// What the sandbox's root filesystem holds.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FilesystemPolicy {
    /// Host directories bound read-only at the same path (symlinks, as /bin
    /// on merged-/usr systems, are recreated as symlinks).
    pub ro_binds: Vec<PathBuf>,
    /// Entries of /etc made visible read-only (missing ones are skipped).
    pub etc: Vec<PathBuf>,
    /// Device nodes bound into the minimal /dev.
    pub dev: Vec<PathBuf>,
}

/// A loaded, validated profile.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub description: String,
    /// Default permissions of an admin-spawned agent (as written: names/groups).
    pub permissions: Vec<String>,
    pub landlock: LandlockPolicy,
    pub limits: Limits,
    pub filesystem: FilesystemPolicy,
    pub net: NetPolicy,
    pub exec: ExecPolicy,
    pub memory: MemoryPolicy,
    /// Compiled seccomp filters, in installation order.
    pub filters: Filters,
}

/// All profiles of a policies directory, by name.
#[derive(Debug, Clone)]
pub struct Profiles {
    pub dir: PathBuf,
    by_name: BTreeMap<String, Profile>,
}

impl Profiles {
    /// Loads `<dir>/profiles/*.toml`, compiling each profile's seccomp policy
    /// from `<dir>/seccomp/<name>.json`.
    pub fn load(dir: &Path) -> Result<Profiles, ProfileError> {
        let pdir = dir.join("profiles");
        let entries = std::fs::read_dir(&pdir).map_err(|source| ProfileError::Read {
            path: pdir.clone(),
            source,
        })?;
        let mut by_name = BTreeMap::new();
        for entry in entries {
            let entry = entry.map_err(|source| ProfileError::Read {
                path: pdir.clone(),
                source,
            })?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let profile = load_one(dir, &path)?;
            by_name.insert(profile.name.clone(), profile);
        }
        if by_name.is_empty() {
            return Err(ProfileError::Invalid {
                path: pdir,
                message: "no *.toml profiles found".into(),
            });
        }
        Ok(Profiles {
            dir: dir.to_path_buf(),
            by_name,
        })
    }

    pub fn get(&self, name: &str) -> Result<&Profile, ProfileError> {
        self.by_name
            .get(name)
            .ok_or_else(|| ProfileError::Unknown(name.to_string()))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

fn load_one(dir: &Path, path: &Path) -> Result<Profile, ProfileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file: ProfileFile = toml::from_str(&text).map_err(|e| ProfileError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let invalid = |message: String| ProfileError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    expand_permissions(&file.permissions).map_err(|source| ProfileError::Permissions {
        path: path.to_path_buf(),
        source,
    })?;
    if file.landlock.min_abi == 0 {
        return Err(invalid(
            "landlock.min_abi must be at least 1: profiles never run without Landlock".into(),
        ));
    }
    let l = &file.limits;
    for (name, v) in [
        ("memory_bytes", l.memory_bytes),
        ("pids", l.pids),
        ("cpu_percent", l.cpu_percent),
        ("workspace_bytes", l.workspace_bytes),
        ("max_file_bytes", l.max_file_bytes),
        ("max_read_bytes", l.max_read_bytes),
        ("nofile", l.nofile),
        ("tmp_bytes", l.tmp_bytes),
        ("inbox_bytes", l.inbox_bytes),
        ("stdin_bytes", l.stdin_bytes),
        ("log_bytes", l.log_bytes),
        ("memory_store_bytes", l.memory_store_bytes),
        ("recv_reply_bytes", l.recv_reply_bytes),
        ("reply_bytes_in_flight", l.reply_bytes_in_flight),
        ("journal_bytes", l.journal_bytes),
        ("audit_entries", l.audit_entries),
        ("max_descendants", l.max_descendants),
        ("max_depth", l.max_depth),
    ] {
        if v == 0 {
            return Err(invalid(format!("limits.{name} must be greater than 0")));
        }
    }
    if file.memory.shared_bytes == 0 {
        return Err(invalid("memory.shared_bytes must be greater than 0".into()));
    }
    for p in file
        .filesystem
        .ro_binds
        .iter()
        .chain(&file.filesystem.etc)
        .chain(&file.filesystem.dev)
    {
        if !p.is_absolute() || p.components().any(|c| c.as_os_str() == "..") {
            return Err(invalid(format!(
                "{} must be an absolute path without ..",
                p.display()
            )));
        }
    }
    for p in &file.filesystem.etc {
        if !p.starts_with("/etc") {
            return Err(invalid(format!(
                "filesystem.etc entry {} is not under /etc",
                p.display()
            )));
        }
    }
    let seccomp_path = dir.join("seccomp").join(format!("{}.json", file.seccomp));
    let filters = seccomp::compile_file(&seccomp_path).map_err(|source| ProfileError::Seccomp {
        path: path.to_path_buf(),
        filter: file.seccomp.clone(),
        source,
    })?;
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| invalid("profile file name is not UTF-8".into()))?
        .to_string();
    Ok(Profile {
        name,
        description: file.description,
        permissions: file.permissions,
        landlock: file.landlock,
        limits: file.limits,
        filesystem: file.filesystem,
        net: file.net,
        exec: file.exec,
        memory: file.memory,
        filters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_policies() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")
    }

    #[test]
    fn shipped_profiles_parse_and_compile() {
        let profiles = Profiles::load(&repo_policies()).expect("shipped policies load");
        let names: Vec<_> = profiles.names().collect();
        assert!(names.contains(&"default"), "profiles: {names:?}");
        for name in names {
            let p = profiles.get(name).expect("present");
            assert!(p.landlock.min_abi >= 1);
            assert!(!p.filters.programs.is_empty());
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = std::env::temp_dir().join(format!("agentos-profile-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("profiles")).expect("mkdir");
        std::fs::create_dir_all(dir.join("seccomp")).expect("mkdir");
        std::fs::copy(
            repo_policies().join("seccomp/agent.json"),
            dir.join("seccomp/agent.json"),
        )
        .expect("copy");
        let good = std::fs::read_to_string(repo_policies().join("profiles/default.toml"))
            .expect("default profile");
        let cases = [
            (good.replace("min_abi = ", "min_abi = 0 #"), "min_abi"),
            (good.replace("[limits]", "[limits]\nbogus = 1"), "bogus"),
            (good.replace("pids = ", "pids = 0 #"), "pids"),
            (
                good.replace("permissions = [", "permissions = [\"root\", "),
                "unknown permission",
            ),
            (
                good.replace("seccomp = \"agent\"", "seccomp = \"missing\""),
                "missing",
            ),
        ];
        for (text, expect) in cases {
            std::fs::write(dir.join("profiles/default.toml"), &text).expect("write");
            let err = Profiles::load(&dir).expect_err("must be refused");
            assert!(
                err.to_string().contains(expect),
                "error {err} should mention {expect}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
