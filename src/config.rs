//! The daemon's configuration file (`/etc/agentos/agentosd.toml`, or
//! `--config PATH`): daemon settings, the inference scheduler, LLM providers
//! and models, workspace quotas. Command-line flags override the file; the file overrides the
//! built-in defaults. Errors name the file, the line and the key.

use crate::llm::config::{ModelConfig, ProviderConfig, ProviderKind};
pub use crate::sandbox::quota::WorkspacesConfig;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Where the daemon looks when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/agentos/agentosd.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// toml's message carries the line, column and key.
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: String,
        key: String,
        message: String,
    },
}

/// The whole file. Every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub state_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    /// Octal, as a string: "0660".
    pub socket_mode: Option<String>,
    pub socket_group: Option<String>,
    pub policies: Option<PathBuf>,
    pub launcher: Option<PathBuf>,
    pub runtime: Option<PathBuf>,
    /// "FIRST-LAST".
    pub uid_range: Option<String>,
    pub cgroup_name: Option<String>,
    pub line_cap: Option<usize>,
    pub max_in_flight: Option<usize>,
    pub log_bytes_per_agent: Option<u64>,
    /// Low-water mark of free space on the state filesystem (kernel/floor.rs).
    pub min_free_bytes: Option<u64>,
    /// The daemon's own memory bound (sandbox/daemon_memory.rs); 0 = none.
    pub daemon_memory_max: Option<u64>,
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    #[serde(default)]
    pub exec: ExecConfig,
    #[serde(default)]
    pub memory: MemoryConfig,
    #[serde(default)]
    pub webhooks: WebhookConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub workspaces: WorkspacesConfig,
    #[serde(default)]
    pub admin: AdminConfig,
}

/// The admin socket — `[admin]`: what one local user may hold in the
/// daemon.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Open connections of users other than root, all together (root has
    /// a few more slots of its own).
    pub max_connections: usize,
    /// Open connections of one uid other than root.
    pub max_connections_per_uid: usize,
    /// Seconds a connection may take to send a complete request line
    /// (and may stay idle between requests).
    pub request_timeout_s: u64,
    /// Longest request line, bytes.
    pub max_request_bytes: usize,
    /// Profiles users other than root may spawn agents with.
    pub profiles: Vec<String>,
    /// Models users other than root may give their agents (`--model`,
    /// `--allow-model`). None: only `scheduler.default_model`.
    pub models: Option<Vec<String>>,
    /// Highest priority users other than root may give an agent.
    pub max_priority: u32,
    /// Live agents (children included) of one user other than root.
    pub max_agents: usize,
    /// Sum of the memory limits of one non-root user's live agents.
    pub max_memory_bytes: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            max_connections: 256,
            max_connections_per_uid: 32,
            request_timeout_s: 30,
            max_request_bytes: 512 << 10,
            profiles: ["default", "program", "restricted"]
                .map(String::from)
                .to_vec(),
            models: None,
            max_priority: 1,
            max_agents: 64,
            max_memory_bytes: 8 << 30,
        }
    }
}

/// The Prometheus endpoint — `[metrics]`. Off unless configured.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address to serve `GET /metrics` on, e.g. "127.0.0.1:9464"; "off".
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "off".into(),
        }
    }
}

/// EXEC_CMD — `[exec]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecConfig {
    /// Docker engine socket for `driver: "docker"`.
    pub docker_socket: String,
    /// Image for `driver: "docker"` (e.g. one made with `docker import`);
    /// none = the docker driver is refused.
    pub docker_image: Option<String>,
    /// Cap on each of stdout and stderr.
    pub max_output_bytes: u64,
    pub default_timeout_s: u64,
    pub max_timeout_s: u64,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            docker_socket: "/var/run/docker.sock".into(),
            docker_image: None,
            max_output_bytes: 1 << 20,
            default_timeout_s: 30,
            max_timeout_s: 600,
        }
    }
}

/// MEM_WRITE / MEM_READ — `[memory]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// "embedded" (vectors in the daemon's database) or "chroma".
    pub backend: String,
    /// ChromaDB server for the chroma backend, e.g. "http://127.0.0.1:8000".
    pub chroma_url: Option<String>,
    pub chroma_tenant: String,
    pub chroma_database: String,
    /// An OpenAI-compatible /v1/embeddings endpoint; none = the built-in
    /// offline lexical embedding.
    pub embeddings_url: Option<String>,
    pub embeddings_model: Option<String>,
    pub embeddings_api_key_env: Option<String>,
    pub embeddings_api_key_file: Option<String>,
    /// Dimensions of the built-in embedding.
    pub dimensions: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            backend: "embedded".into(),
            chroma_url: None,
            chroma_tenant: "default_tenant".into(),
            chroma_database: "default_database".into(),
            embeddings_url: None,
            embeddings_model: None,
            embeddings_api_key_env: None,
            embeddings_api_key_file: None,
            dimensions: 512,
        }
    }
}

/// The webhook listener — `[webhooks]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Address to listen on, e.g. "127.0.0.1:8088"; "off" (the default:
    /// no shipped profile grants webhooks) starts no listener. Exposing it
    /// beyond loopback lets anyone who can reach it send events to agents
    /// that registered a path (use secrets).
    pub listen: String,
    /// Seconds an agent has to answer before the caller gets 504.
    pub reply_timeout_s: u64,
    pub max_body_bytes: u64,
    pub max_header_bytes: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            listen: "off".into(),
            reply_timeout_s: 30,
            max_body_bytes: 1 << 20,
            max_header_bytes: 16 << 10,
        }
    }
}

/// The inference scheduler.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Inferences in flight across all providers.
    #[serde(default = "default_global")]
    pub max_concurrency: usize,
    /// The time slice: one inference (retries included) may take this long.
    #[serde(default = "default_timeout")]
    pub inference_timeout_s: u64,
    /// Model of `agentos spawn --role` without `--model`.
    #[serde(default)]
    pub default_model: Option<String>,
}

fn default_global() -> usize {
    16
}
fn default_timeout() -> u64 {
    300
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_concurrency: default_global(),
            inference_timeout_s: default_timeout(),
            default_model: None,
        }
    }
}

impl FileConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates the text of a file called `path`.
    pub fn parse(text: &str, path: &str) -> Result<FileConfig, ConfigError> {
        let cfg: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            path: path.to_string(),
            key,
            message,
        };
        if self.scheduler.max_concurrency == 0 {
            return Err(invalid(
                "scheduler.max_concurrency".into(),
                "must be at least 1".into(),
            ));
        }
        let mut names = BTreeSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let key = |k: &str| format!("providers[{i}].{k} ({})", p.name);
            if !names.insert(p.name.as_str()) {
                return Err(invalid(key("name"), "duplicate provider name".into()));
            }
            if p.max_concurrency == 0 {
                return Err(invalid(key("max_concurrency"), "must be at least 1".into()));
            }
            if p.kind == ProviderKind::Scripted && p.script.is_none() {
                return Err(invalid(
                    key("script"),
                    "a scripted provider needs a script file".into(),
                ));
            }
            if let Some(url) = &p.base_url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(invalid(
                        key("base_url"),
                        format!("{url:?} is not an http(s) URL"),
                    ));
                }
            }
            let keys = [
                p.api_key.is_some(),
                p.api_key_env.is_some(),
                p.api_key_file.is_some(),
            ];
            if keys.iter().filter(|k| **k).count() > 1 {
                return Err(invalid(
                    key("api_key"),
                    "give at most one of api_key, api_key_env, api_key_file".into(),
                ));
            }
        }
        let mut models = BTreeSet::new();
        for (i, m) in self.models.iter().enumerate() {
            let key = |k: &str| format!("models[{i}].{k} ({})", m.name);
            if !models.insert(m.name.as_str()) {
                return Err(invalid(key("name"), "duplicate model name".into()));
            }
            if !names.contains(m.provider.as_str()) {
                return Err(invalid(
                    key("provider"),
                    format!("no provider named {:?}", m.provider),
                ));
            }
            if m.context_tokens < 512 {
                return Err(invalid(
                    key("context_tokens"),
                    "must be at least 512".into(),
                ));
            }
            if !(m.chars_per_token > 0.5 && m.chars_per_token < 20.0) {
                return Err(invalid(
                    key("chars_per_token"),
                    "must be between 0.5 and 20".into(),
                ));
            }
            if let Some(p) = self.providers.iter().find(|p| p.name == m.provider) {
                m.check(p.kind)
                    .map_err(|e| invalid(key(e.key), e.message))?;
            }
        }
        let a = &self.admin;
        for (key, v) in [
            ("admin.max_connections", a.max_connections),
            ("admin.max_connections_per_uid", a.max_connections_per_uid),
            ("admin.request_timeout_s", a.request_timeout_s as usize),
        ] {
            if v == 0 {
                return Err(invalid(key.into(), "must be at least 1".into()));
            }
        }
        if a.max_request_bytes < 4096 {
            return Err(invalid(
                "admin.max_request_bytes".into(),
                "must be at least 4096".into(),
            ));
        }
        if !(1..=100).contains(&a.max_priority) {
            return Err(invalid(
                "admin.max_priority".into(),
                "must be between 1 and 100".into(),
            ));
        }
        if let Some(m) = a
            .models
            .iter()
            .flatten()
            .find(|m| !models.contains(m.as_str()))
        {
            return Err(invalid(
                "admin.models".into(),
                format!("no model named {m:?}"),
            ));
        }
        self.workspaces
            .validate()
            .map_err(|e| invalid(format!("workspaces.{}", e.key), e.message.clone()))?;
        if let Some(d) = &self.scheduler.default_model {
            if !models.contains(d.as_str()) {
                return Err(invalid(
                    "scheduler.default_model".into(),
                    format!("no model named {d:?}"),
                ));
            }
        }
        Ok(())
    }

    pub fn model(&self, name: &str) -> Option<&ModelConfig> {
        self.models.iter().find(|m| m.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
state_dir = "/var/lib/agentos"

[scheduler]
max_concurrency = 4

[[providers]]
name = "local"
kind = "openai"
base_url = "http://127.0.0.1:8080/v1"

[[models]]
name = "qwen"
provider = "local"
"#;

    #[test]
    fn a_good_file_parses() {
        let c = FileConfig::parse(GOOD, "t.toml").expect("valid");
        assert_eq!(c.scheduler.max_concurrency, 4);
        assert_eq!(c.model("qwen").map(|m| m.provider_model()), Some("qwen"));
    }

    #[test]
    fn errors_name_the_file_line_and_key() {
        let e = FileConfig::parse(
            &GOOD.replace("max_concurrency = 4", "max_concurency = 4"),
            "t.toml",
        )
        .expect_err("unknown key");
        let msg = e.to_string();
        assert!(msg.starts_with("t.toml:"), "{msg}");
        assert!(msg.contains("max_concurency"), "{msg}");
        assert!(msg.contains("line 5"), "{msg}");

        let e = FileConfig::parse(
            &GOOD.replace("provider = \"local\"", "provider = \"remote\""),
            "t.toml",
        )
        .expect_err("dangling provider");
        assert!(e.to_string().contains("models[0].provider"), "{e}");

        let e = FileConfig::parse(&GOOD.replace("http://127", "ftp://127"), "t.toml")
            .expect_err("bad url");
        assert!(e.to_string().contains("base_url"), "{e}");
    }

    #[test]
    fn the_workspaces_section_is_checked() {
        let c = FileConfig::parse(GOOD, "t.toml").expect("valid");
        assert_eq!(c.workspaces, WorkspacesConfig::default());
        let with = |section: &str| {
            FileConfig::parse(&format!("{GOOD}\n[workspaces]\n{section}\n"), "t.toml")
        };
        let c = with("quota = \"off\"").expect("off");
        assert_eq!(c.workspaces.quota, crate::sandbox::quota::QuotaMode::Off);
        let e = with("quota = \"zfs\"")
            .expect_err("unknown mode")
            .to_string();
        assert!(
            e.starts_with("t.toml:") && e.contains("zfs") && e.contains("auto"),
            "{e}"
        );
        let e = with("image_size = \"big\"")
            .expect_err("bad size")
            .to_string();
        assert!(e.contains("image_size") && e.contains("not a size"), "{e}");
        let e = with("image_size = \"64M\"").expect_err("small").to_string();
        assert!(
            e.contains("t.toml: workspaces.image_size:") && e.contains("too small"),
            "{e}"
        );
    }
}
