//! LLM providers: the types of one inference (request, response, usage;
//! the chat messages and tools are the ABI's, from [`crate::abi::chat`]),
//! the provider configuration, and the providers themselves — OpenAI-compatible
//! chat completions, Anthropic Messages, Google Gemini generateContent, and
//! a scripted provider that replays replies from a file. The daemon calls
//! providers on behalf of agents (LLM_INFER); API keys never leave it.

pub mod anthropic;
pub mod config;
pub mod gemini;
pub mod http;
pub mod openai;
pub mod provider;
pub mod scripted;

pub use crate::abi::chat::{ChatMessage, Constraint, Role, ToolCall, ToolSpec};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One inference request, as the daemon hands it to a provider. The
/// sampling fields are the model's (`[[models]]`), the temperature
/// overridden by an LLM_INFER that names one; each provider sends those
/// its API has.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InferRequest {
    /// The provider's own model id.
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<Constraint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Sampling seed (OpenAI-compatible servers, Gemini).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Sequences that end the reply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
}

/// Tokens used by one inference, as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// A provider's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferResponse {
    /// The text of the reply (may be empty when only tools were called).
    pub content: String,
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// Who is asking, for providers that need it (the scripted provider picks
/// the agent's script by name and turn).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InferContext {
    pub pid: u64,
    pub agent_name: String,
    /// How many inferences this agent had before this one.
    pub turn: u64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    /// 429: retry after the given delay (from Retry-After when present).
    #[error("rate limited by the provider{}", .retry_after.map(|d| format!(" (retry after {d:?})")).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    /// 5xx or a network error: worth retrying.
    #[error("transient provider error: {0}")]
    Transient(String),
    /// 401/403: the key is wrong; retrying cannot help.
    #[error("the provider refused the credentials: {0}")]
    Auth(String),
    /// Any other 4xx: the request itself is wrong.
    #[error("the provider rejected the request: {0}")]
    BadRequest(String),
    #[error("the provider did not answer within {0:?}")]
    Timeout(Duration),
    /// The answer could not be understood.
    #[error("unexpected answer from the provider: {0}")]
    Protocol(String),
    /// The provider has no more scripted replies or is misconfigured.
    #[error("{0}")]
    Config(String),
}

impl LlmError {
    /// Whether retrying the same request may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            LlmError::RateLimited { .. } | LlmError::Transient(_) | LlmError::Timeout(_)
        )
    }
}
