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
//! temperature = 0.0               # sampling: temperature, top_p, seed, stop
//! seed = 42
//! max_turns = 30                  # the runtime's loop control
//! max_calls_per_reply = 1
//! ```
//!
//! [`ModelConfig::check`] refuses settings a provider refuses or ignores;
//! docs/CONFIG.md lists them.

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
    /// Sampling temperature sent with every request (absent: the
    /// provider's default; llama-server's is 0.8). An LLM_INFER that names
    /// its own temperature overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling: only the most likely tokens whose probabilities
    /// add up to this (0 < top_p <= 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Sampling seed, for repeatable runs (OpenAI-compatible servers and
    /// Gemini; Anthropic has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Sequences that end a reply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Inferences the built-in runtime makes before it gives up (exit 6);
    /// `agentos spawn --max-turns` lowers it for one agent.
    #[serde(default = "default_max_turns")]
    pub max_turns: u32,
    /// Most syscalls the runtime runs from one reply (later ones are
    /// reported as not run); also bounds the grammar and the reply schema.
    /// 1 suits small models: they see each result before the next step.
    /// Absent: 8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_calls_per_reply: Option<u32>,
    /// The runtime holds a SYS_EXIT with code 0 while the task names a
    /// file or directory none of the agent's calls has used, tells the
    /// model which, and ends the agent as unfinished (exit 8) if it still
    /// finishes after two such holds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confirm_exit: bool,
    /// The runtime ends every result message with the task and the calls
    /// made so far.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remind_task: bool,
    /// The runtime shows the model a short task done turn by turn before
    /// its own (text, grammar and json_schema modes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub worked_example: bool,
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
fn default_max_turns() -> u32 {
    100
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConstrainMode {
    Grammar,
    JsonSchema,
}

/// A model setting that cannot work (with its provider).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ModelSettingError {
    /// The offending key, e.g. `constrain`.
    pub key: &'static str,
    pub message: String,
}

impl ModelConfig {
    pub fn provider_model(&self) -> &str {
        self.model.as_deref().unwrap_or(&self.name)
    }

    /// Refuses settings out of range and combinations the provider
    /// refuses or cannot honour:
    /// - `tool_calls = true` with `constrain = "grammar"`: llama-server
    ///   answers every such request with 400 ("Cannot use custom grammar
    ///   constraints with tools"), and no other provider takes a grammar;
    /// - `constrain` with an Anthropic or Gemini provider: neither API
    ///   takes a grammar or a free JSON schema for a reply (the constraint
    ///   would be silently dropped);
    /// - `temperature` outside 0-2 (Anthropic: 0-1), `top_p` outside (0, 1],
    ///   `max_turns` or `max_calls_per_reply` of 0.
    pub fn check(&self, kind: ProviderKind) -> Result<(), ModelSettingError> {
        let bad = |key, message: String| Err(ModelSettingError { key, message });
        if self.tool_calls && self.constrain == Some(ConstrainMode::Grammar) {
            return bad(
                "constrain",
                "constrain = \"grammar\" cannot be combined with tool_calls = true: llama-server refuses requests with both (400), and no other provider takes a grammar".into(),
            );
        }
        if let (Some(mode), ProviderKind::Anthropic | ProviderKind::Gemini) = (self.constrain, kind)
        {
            let mode = match mode {
                ConstrainMode::Grammar => "grammar",
                ConstrainMode::JsonSchema => "json_schema",
            };
            return bad(
                "constrain",
                format!(
                    "constrain = \"{mode}\" is not supported by {kind:?} providers (OpenAI-compatible servers only)"
                ),
            );
        }
        let max_temperature = if kind == ProviderKind::Anthropic {
            1.0
        } else {
            2.0
        };
        if let Some(t) = self.temperature {
            if !(0.0..=max_temperature).contains(&t) {
                return bad(
                    "temperature",
                    format!("must be between 0 and {max_temperature}"),
                );
            }
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return bad("top_p", "must be greater than 0 and at most 1".into());
            }
        }
        if self.max_turns == 0 {
            return bad("max_turns", "must be at least 1".into());
        }
        if self.max_calls_per_reply == Some(0) {
            return bad("max_calls_per_reply", "must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn model(extra: &str) -> ModelConfig {
        toml::from_str(&format!("name = \"m\"\nprovider = \"p\"\n{extra}")).unwrap()
    }

    #[test]
    fn sampling_and_loop_settings_parse_with_defaults() {
        let m = model("");
        assert_eq!((m.temperature, m.top_p, m.seed), (None, None, None));
        assert!(m.stop.is_empty());
        assert_eq!(m.max_turns, 100);
        assert_eq!(m.max_calls_per_reply, None);
        let m = model(
            "temperature = 0.0\ntop_p = 0.9\nseed = 42\nstop = [\"END\"]\nmax_turns = 12\nmax_calls_per_reply = 1",
        );
        assert_eq!(m.temperature, Some(0.0));
        assert_eq!(m.top_p, Some(0.9));
        assert_eq!(m.seed, Some(42));
        assert_eq!(m.stop, ["END"]);
        assert_eq!((m.max_turns, m.max_calls_per_reply), (12, Some(1)));
        assert!(m.check(ProviderKind::Openai).is_ok());
        // What AGENT_INFO hands the runtime reads back the same.
        let back: ModelConfig = serde_json::from_value(serde_json::to_value(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn combinations_a_provider_refuses_are_rejected() {
        let e = model("tool_calls = true\nconstrain = \"grammar\"")
            .check(ProviderKind::Openai)
            .unwrap_err();
        assert_eq!(e.key, "constrain");
        assert!(e.message.contains("llama-server refuses"), "{e}");
        // A JSON schema next to tools is accepted by llama-server.
        assert!(
            model("tool_calls = true\nconstrain = \"json_schema\"")
                .check(ProviderKind::Openai)
                .is_ok()
        );
        for kind in [ProviderKind::Anthropic, ProviderKind::Gemini] {
            let e = model("constrain = \"json_schema\"")
                .check(kind)
                .unwrap_err();
            assert_eq!(e.key, "constrain");
        }
        assert!(
            model("constrain = \"grammar\"")
                .check(ProviderKind::Scripted)
                .is_ok()
        );
    }

    #[test]
    fn out_of_range_settings_are_rejected() {
        for (extra, key, kind) in [
            ("temperature = 2.5", "temperature", ProviderKind::Openai),
            ("temperature = 1.5", "temperature", ProviderKind::Anthropic),
            ("temperature = -1.0", "temperature", ProviderKind::Gemini),
            ("top_p = 0.0", "top_p", ProviderKind::Openai),
            ("top_p = 1.5", "top_p", ProviderKind::Openai),
            ("max_turns = 0", "max_turns", ProviderKind::Openai),
            (
                "max_calls_per_reply = 0",
                "max_calls_per_reply",
                ProviderKind::Openai,
            ),
        ] {
            assert_eq!(model(extra).check(kind).unwrap_err().key, key, "{extra}");
        }
        assert!(
            model("temperature = 1.5")
                .check(ProviderKind::Openai)
                .is_ok()
        );
    }

    #[test]
    fn the_daemon_configuration_names_the_model_and_key() {
        let text = "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\n\n[[models]]\nname = \"m\"\nprovider = \"p\"\ntool_calls = true\nconstrain = \"grammar\"\n";
        let e = crate::config::FileConfig::parse(text, "t.toml").unwrap_err();
        assert!(e.to_string().contains("models[0].constrain (m)"), "{e}");
    }
}
