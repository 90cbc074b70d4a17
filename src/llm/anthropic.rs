//! Anthropic Messages (`POST {base}/messages`).
//!
//! System messages go to the top-level `system` field; every other message
//! becomes content blocks (text, `tool_use`, `tool_result`), empty
//! messages are dropped and consecutive messages of the same role are
//! merged, since the API wants user and assistant turns to alternate.
//! Constraints are not supported by this API and are ignored (the runtime
//! validates replies anyway).

use super::http::{self, WireFormat};
use super::{InferRequest, InferResponse, LlmError, Role, Usage};
use serde_json::{Map, Value, json};

/// The vendor's public endpoint.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com/v1";
/// The API version sent in `anthropic-version`.
pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` is required by the API: used when the request has none.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// The Anthropic Messages wire format.
#[derive(Debug, Clone, Copy, Default)]
pub struct Anthropic;

http::module_infer!(Anthropic);

impl WireFormat for Anthropic {
    fn default_base_url(&self) -> &'static str {
        DEFAULT_BASE_URL
    }

    /// The URL of the messages endpoint.
    fn endpoint(&self, base_url: Option<&str>, _model: &str) -> String {
        format!("{}/messages", http::base(base_url, DEFAULT_BASE_URL))
    }

    /// `x-api-key` (when there is a key) and `anthropic-version`.
    fn headers(&self, api_key: Option<&str>) -> Vec<(&'static str, String)> {
        let mut h = Vec::new();
        if let Some(k) = api_key {
            h.push(("x-api-key", k.to_string()));
        }
        h.push(("anthropic-version", API_VERSION.to_string()));
        h
    }

    /// The request body.
    fn build_body(&self, req: &InferRequest) -> Value {
        // (role, blocks), merged when the role repeats.
        let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
        for m in &req.messages {
            let (role, blocks) = match m.role {
                Role::System => continue,
                Role::User => ("user", text_block(&m.content)),
                Role::Assistant => {
                    let mut blocks = text_block(&m.content);
                    blocks.extend(m.tool_calls.iter().map(|c| {
                        json!({"type": "tool_use", "id": c.id, "name": c.name,
                               "input": http::arguments_object(&c.arguments)})
                    }));
                    ("assistant", blocks)
                }
                Role::Tool => (
                    "user",
                    vec![json!({
                        "type": "tool_result",
                        "tool_use_id": m.tool_call_id.as_deref().unwrap_or_default(),
                        "content": m.content,
                    })],
                ),
            };
            http::push_turn(&mut turns, role, blocks);
        }
        let messages: Vec<Value> = turns
            .into_iter()
            .map(|(role, blocks)| json!({"role": role, "content": blocks}))
            .collect();

        let mut body = Map::new();
        body.insert("model".into(), json!(req.model));
        body.insert(
            "max_tokens".into(),
            json!(req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
        );
        if let Some(system) = http::system_prompt(req) {
            body.insert("system".into(), json!(system));
        }
        body.insert("messages".into(), Value::Array(messages));
        if !req.tools.is_empty() {
            let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                json!({"name": t.name, "description": t.description, "input_schema": t.parameters})
            })
            .collect();
            body.insert("tools".into(), Value::Array(tools));
        }
        if let Some(t) = req.temperature {
            body.insert("temperature".into(), http::temperature_json(t));
        }
        if let Some(p) = req.top_p {
            body.insert("top_p".into(), http::temperature_json(p));
        }
        // The Messages API has no seed.
        if !req.stop.is_empty() {
            body.insert("stop_sequences".into(), json!(req.stop));
        }
        Value::Object(body)
    }

    /// Parses a Messages answer.
    fn parse_response(&self, v: &Value) -> Result<InferResponse, LlmError> {
        if v.get("type").and_then(Value::as_str) == Some("error") {
            let msg = http::error_message(v).unwrap_or_else(|| v.to_string());
            return Err(LlmError::Protocol(format!("provider error: {msg}")));
        }
        let blocks = v
            .get("content")
            .and_then(Value::as_array)
            .ok_or_else(|| LlmError::Protocol("no content blocks in the answer".into()))?;
        let mut content = String::new();
        let mut tool_calls = Vec::new();
        for (i, b) in blocks.iter().enumerate() {
            match b.get("type").and_then(Value::as_str) {
                Some("text") => {
                    content.push_str(b.get("text").and_then(Value::as_str).unwrap_or(""))
                }
                Some("tool_use") => {
                    let name = b.get("name").and_then(Value::as_str).ok_or_else(|| {
                        LlmError::Protocol(format!("tool_use block {i} has no name"))
                    })?;
                    let arguments = b.get("input").cloned().unwrap_or_else(|| json!({}));
                    tool_calls.push(http::tool_call(b.get("id"), "toolu", name, arguments));
                }
                // thinking, redacted_thinking, server tool blocks: not ours.
                _ => {}
            }
        }
        let usage = v.get("usage").unwrap_or(&Value::Null);
        let field = |k: &str| http::tokens(usage.get(k).unwrap_or(&Value::Null));
        Ok(InferResponse {
            content,
            tool_calls,
            usage: Usage {
                // Cached prompt tokens are reported apart from input_tokens.
                prompt_tokens: field("input_tokens")
                    + field("cache_creation_input_tokens")
                    + field("cache_read_input_tokens"),
                completion_tokens: field("output_tokens"),
            },
            finish_reason: v
                .get("stop_reason")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

/// A text block, or none for empty text (the API rejects empty blocks).
fn text_block(text: &str) -> Vec<Value> {
    if text.is_empty() {
        Vec::new()
    } else {
        vec![json!({"type": "text", "text": text})]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::llm::{ChatMessage, Constraint, ToolCall, ToolSpec};

    fn conversation() -> InferRequest {
        let mut assistant = ChatMessage::new(Role::Assistant, "Let me look.");
        assistant.tool_calls.push(ToolCall {
            id: "toolu_01".into(),
            name: "fs_read".into(),
            arguments: json!({"path": "a.txt"}),
        });
        assistant.tool_calls.push(ToolCall {
            id: "toolu_02".into(),
            name: "fs_read".into(),
            arguments: json!({"path": "b.txt"}),
        });
        let mut r1 = ChatMessage::new(Role::Tool, "AAA");
        r1.tool_call_id = Some("toolu_01".into());
        let mut r2 = ChatMessage::new(Role::Tool, "BBB");
        r2.tool_call_id = Some("toolu_02".into());
        InferRequest {
            model: "claude-sonnet-4-5".into(),
            messages: vec![
                ChatMessage::new(Role::System, "You are an agent."),
                ChatMessage::new(Role::System, "Be brief."),
                ChatMessage::new(Role::User, "Read a.txt and b.txt"),
                ChatMessage::new(Role::User, "Please."),
                assistant,
                r1,
                r2,
                ChatMessage::new(Role::User, "Now summarise."),
            ],
            tools: vec![ToolSpec {
                name: "fs_read".into(),
                description: "Read a file".into(),
                parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
            }],
            max_tokens: None,
            temperature: Some(0.7),
            constraint: Some(Constraint::Grammar("ignored".into())),
            ..Default::default()
        }
    }

    #[test]
    fn sampling_fields_the_api_has() {
        let req = InferRequest {
            model: "m".into(),
            messages: vec![ChatMessage::new(Role::User, "hi")],
            top_p: Some(0.5),
            seed: Some(7),
            stop: vec!["END".into()],
            ..Default::default()
        };
        let body = Anthropic.build_body(&req);
        assert_eq!(body["top_p"], json!(0.5));
        assert_eq!(body["stop_sequences"], json!(["END"]));
        assert!(body.get("seed").is_none(), "the Messages API has no seed");
    }

    #[test]
    fn body_system_merging_tools_and_results() {
        let body = Anthropic.build_body(&conversation());
        assert_eq!(
            body,
            json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 1024,
                "system": "You are an agent.\n\nBe brief.",
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "Read a.txt and b.txt"},
                        {"type": "text", "text": "Please."}
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "Let me look."},
                        {"type": "tool_use", "id": "toolu_01", "name": "fs_read", "input": {"path": "a.txt"}},
                        {"type": "tool_use", "id": "toolu_02", "name": "fs_read", "input": {"path": "b.txt"}}
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_01", "content": "AAA"},
                        {"type": "tool_result", "tool_use_id": "toolu_02", "content": "BBB"},
                        {"type": "text", "text": "Now summarise."}
                    ]}
                ],
                "tools": [{"name": "fs_read", "description": "Read a file",
                           "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}],
                "temperature": 0.7
            })
        );
    }

    #[test]
    fn body_drops_empty_messages_and_keeps_max_tokens() {
        let req = InferRequest {
            model: "m".into(),
            messages: vec![
                ChatMessage::new(Role::User, "a"),
                ChatMessage::new(Role::Assistant, ""),
                ChatMessage::new(Role::User, "b"),
            ],
            tools: vec![],
            max_tokens: Some(50),
            temperature: None,
            constraint: None,
            ..Default::default()
        };
        assert_eq!(
            Anthropic.build_body(&req),
            json!({"model": "m", "max_tokens": 50, "messages": [
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
            ]})
        );
    }

    #[test]
    fn parses_text_and_tool_use() {
        let v = json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "x"},
                {"type": "text", "text": "I'll read "},
                {"type": "text", "text": "the file."},
                {"type": "tool_use", "id": "toolu_9", "name": "fs_read", "input": {"path": "a.txt"}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 321, "output_tokens": 45,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 10}
        });
        let r = Anthropic.parse_response(&v).unwrap();
        assert_eq!(r.content, "I'll read the file.");
        assert_eq!(
            r.tool_calls,
            vec![ToolCall {
                id: "toolu_9".into(),
                name: "fs_read".into(),
                arguments: json!({"path": "a.txt"})
            }]
        );
        assert_eq!(
            r.usage,
            Usage {
                prompt_tokens: 331,
                completion_tokens: 45
            }
        );
        assert_eq!(r.finish_reason.as_deref(), Some("tool_use"));
    }

    #[test]
    fn parses_plain_text_and_errors() {
        let r = Anthropic
            .parse_response(&json!({"content": [{"type": "text", "text": "hi"}],
                                       "stop_reason": "end_turn"}))
            .unwrap();
        assert_eq!(r.content, "hi");
        assert_eq!(r.usage, Usage::default());
        let err = Anthropic
            .parse_response(&json!({"type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"}}))
            .unwrap_err();
        assert!(matches!(&err, LlmError::Protocol(m) if m.contains("Overloaded")));
        assert!(matches!(
            Anthropic.parse_response(&json!({"id": "x"})),
            Err(LlmError::Protocol(_))
        ));
    }

    #[test]
    fn endpoint_and_headers() {
        assert_eq!(
            Anthropic.endpoint(None, "claude-sonnet-4-5"),
            "https://api.anthropic.com/v1/messages"
        );
        assert_eq!(
            Anthropic.endpoint(Some("http://127.0.0.1:9/v1"), "m"),
            "http://127.0.0.1:9/v1/messages"
        );
        assert_eq!(
            Anthropic.headers(Some("k-1")),
            vec![
                ("x-api-key", "k-1".to_string()),
                ("anthropic-version", "2023-06-01".to_string())
            ]
        );
        assert_eq!(Anthropic.headers(None).len(), 1);
    }
}
