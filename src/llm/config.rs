//! Provider and model configuration, as written in the daemon's TOML file:
//!
//! ```toml
//! [[providers]]
//! name = "local"
//! kind = "openai"                 # openai | anthropic | gemini | scripted
//! base_url = "http://127.0.0.1:8080/v1"
//! api_key_env = "OPENAI_API_KEY"  # or api_key_file, or api_key
//!
//! [[models]]
//! name = "qwen"                   # what `agentos spawn --model` names
//! provider = "local"
//! model = "qwen2.5-7b-instruct"   # the provider's model id
//! ```

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Which wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI-compatible chat completions (OpenAI, vLLM, llama.cpp server,
    /// Ollama, LM Studio, OpenRouter).
    Openai,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini generateContent.
    Gemini,
    /// Replays replies from a script file; no network.
    Scripted,
}

fn default_concurrency() -> usize {
    4
}
fn default_timeout_s() -> u64 {
    120
}
fn default_retries() -> u32 {
    4
}

/// One provider endpoint. Its `Debug` form never shows a literal key.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// Base URL, e.g. `https://api.openai.com/v1`,
    /// `https://api.anthropic.com/v1`,
    /// `https://generativelanguage.googleapis.com/v1beta`. Defaults to the
    /// vendor's public endpoint.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The key itself (discouraged: prefer a file or the environment).
    #[serde(default)]
    pub api_key: Option<String>,
    /// Environment variable of the daemon that holds the key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// File that holds the key (e.g. a systemd credential,
    /// `$CREDENTIALS_DIRECTORY/openai-api-key`; `$CREDENTIALS_DIRECTORY` is
    /// expanded).
    #[serde(default)]
    pub api_key_file: Option<String>,
    /// Inferences in flight at once on this provider.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Provider rate limits; absent = none.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    /// Seconds one HTTP request may take.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    /// Retries on 429, 5xx and network errors.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// For `kind = "scripted"`: the script file.
    #[serde(default)]
    pub script: Option<PathBuf>,
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("api_key_env", &self.api_key_env)
            .field("api_key_file", &self.api_key_file)
            .field("max_concurrency", &self.max_concurrency)
            .field("requests_per_minute", &self.requests_per_minute)
            .field("tokens_per_minute", &self.tokens_per_minute)
            .field("timeout_s", &self.timeout_s)
            .field("max_retries", &self.max_retries)
            .field("script", &self.script)
            .finish()
    }
}

/// A model agents can be spawned with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The name used by `agentos spawn --model` and SPAWN_AGENT.
    pub name: String,
    /// A provider's `name`.
    pub provider: String,
    /// The provider's model id; defaults to `name`.
    #[serde(default)]
    pub model: Option<String>,
    /// Context window the runtime keeps the conversation within.
    #[serde(default = "default_context")]
    pub context_tokens: u64,
    /// Characters per token for estimates (providers differ; ~4 for English).
    #[serde(default = "default_chars_per_token")]
    pub chars_per_token: f64,
    /// Offer syscalls as native tools (providers with tool calling).
    #[serde(default)]
    pub tool_calls: bool,
    /// Constrain every reply to valid syscalls: "grammar" (llama.cpp) or
    /// "json_schema" (OpenAI-compatible response_format).
    #[serde(default)]
    pub constrain: Option<ConstrainMode>,
    /// Most tokens one reply may have.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
}

fn default_context() -> u64 {
    16_384
}
fn default_chars_per_token() -> f64 {
    4.0
}
fn default_max_tokens() -> u32 {
    1024
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConstrainMode {
    Grammar,
    JsonSchema,
}

impl ModelConfig {
    pub fn provider_model(&self) -> &str {
        self.model.as_deref().unwrap_or(&self.name)
    }
}
