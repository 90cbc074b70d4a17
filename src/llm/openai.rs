//! OpenAI-compatible chat completions (`POST {base}/chat/completions`):
//! OpenAI, vLLM, llama.cpp server, Ollama, LM Studio, OpenRouter.
//!
//! Constraints: `Grammar` becomes llama.cpp's top-level `grammar` field,
//! `JsonSchema` becomes a strict `response_format` named `syscall`.

use super::http::{self, WireFormat};
use super::{Constraint, InferRequest, InferResponse, LlmError, Role, Usage};
use serde_json::{Map, Value, json};

/// The vendor's public endpoint.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// The OpenAI chat completions wire format.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAi;

http::module_infer!(OpenAi);

impl WireFormat for OpenAi {
    fn default_base_url(&self) -> &'static str {
        DEFAULT_BASE_URL
    }

    /// The URL of the chat completions endpoint.
    fn endpoint(&self, base_url: Option<&str>, _model: &str) -> String {
        format!(
            "{}/chat/completions",
            http::base(base_url, DEFAULT_BASE_URL)
        )
    }

    /// `Authorization: Bearer KEY`, or nothing for keyless local servers.
    fn headers(&self, api_key: Option<&str>) -> Vec<(&'static str, String)> {
        api_key
            .map(|k| vec![("authorization", format!("Bearer {k}"))])
            .unwrap_or_default()
    }

    /// The request body.
    fn build_body(&self, req: &InferRequest) -> Value {
        let messages: Vec<Value> = req.messages.iter().map(message_json).collect();
        let mut body = Map::new();
        body.insert("model".into(), json!(req.model));
        body.insert("messages".into(), Value::Array(messages));
        if !req.tools.is_empty() {
            let tools: Vec<Value> = req
                .tools
                .iter()
                .map(|t| {
                    json!({
                        "type": "function",
                        "function": {
                            "name": t.name,
                            "description": t.description,
                            "parameters": t.parameters,
                        }
                    })
                })
                .collect();
            body.insert("tools".into(), Value::Array(tools));
        }
        if let Some(n) = req.max_tokens {
            body.insert("max_tokens".into(), json!(n));
        }
        if let Some(t) = req.temperature {
            body.insert("temperature".into(), http::temperature_json(t));
        }
        if let Some(p) = req.top_p {
            body.insert("top_p".into(), http::temperature_json(p));
        }
        if let Some(seed) = req.seed {
            body.insert("seed".into(), json!(seed));
        }
        if !req.stop.is_empty() {
            body.insert("stop".into(), json!(req.stop));
        }
        match &req.constraint {
            Some(Constraint::Grammar(g)) => {
                body.insert("grammar".into(), json!(g));
            }
            Some(Constraint::JsonSchema(schema)) => {
                body.insert(
                    "response_format".into(),
                    json!({
                        "type": "json_schema",
                        "json_schema": {"name": "syscall", "schema": schema, "strict": true}
                    }),
                );
            }
            None => {}
        }
        Value::Object(body)
    }

    /// Parses a chat completion.
    fn parse_response(&self, v: &Value) -> Result<InferResponse, LlmError> {
        let Some(choice) = v
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        else {
            if let Some(msg) = http::error_message(v) {
                return Err(LlmError::Protocol(format!("provider error: {msg}")));
            }
            return Err(LlmError::Protocol("no choices in the answer".into()));
        };
        let message = choice.get("message").unwrap_or(&Value::Null);
        let content = match message.get("content") {
            Some(Value::String(s)) => s.clone(),
            // Some servers answer with content parts.
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect(),
            _ => String::new(),
        };
        let mut tool_calls = Vec::new();
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
            for (i, c) in calls.iter().enumerate() {
                let f = c.get("function").unwrap_or(&Value::Null);
                let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
                    LlmError::Protocol(format!("tool call {i} has no function name"))
                })?;
                let arguments = parse_arguments(f.get("arguments").unwrap_or(&Value::Null));
                tool_calls.push(http::tool_call(c.get("id"), "call", name, arguments));
            }
        }
        let usage = v.get("usage").unwrap_or(&Value::Null);
        Ok(InferResponse {
            content,
            tool_calls,
            usage: Usage {
                prompt_tokens: http::tokens(usage.get("prompt_tokens").unwrap_or(&Value::Null)),
                completion_tokens: http::tokens(
                    usage.get("completion_tokens").unwrap_or(&Value::Null),
                ),
            },
            finish_reason: choice
                .get("finish_reason")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

fn message_json(m: &super::ChatMessage) -> Value {
    match m.role {
        Role::System => json!({"role": "system", "content": m.content}),
        Role::User => json!({"role": "user", "content": m.content}),
        Role::Assistant => {
            let mut o = Map::new();
            o.insert("role".into(), json!("assistant"));
            if m.tool_calls.is_empty() {
                o.insert("content".into(), json!(m.content));
            } else {
                // OpenAI wants null rather than "" next to tool calls.
                let content = if m.content.is_empty() {
                    Value::Null
                } else {
                    json!(m.content)
                };
                o.insert("content".into(), content);
                let calls: Vec<Value> = m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        json!({
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments.to_string()},
                        })
                    })
                    .collect();
                o.insert("tool_calls".into(), Value::Array(calls));
            }
            Value::Object(o)
        }
        Role::Tool => {
            let mut o = Map::new();
            o.insert("role".into(), json!("tool"));
            if let Some(id) = &m.tool_call_id {
                o.insert("tool_call_id".into(), json!(id));
            }
            if let Some(name) = &m.name {
                o.insert("name".into(), json!(name));
            }
            o.insert("content".into(), json!(m.content));
            Value::Object(o)
        }
    }
}

/// Parses tool call arguments: a JSON string (an object already is taken
/// as is); an empty string is `{}`; invalid JSON is kept as
/// `{"_raw": "<string>"}` so the runtime can report it to the agent.
pub fn parse_arguments(v: &Value) -> Value {
    match v {
        Value::String(s) if s.trim().is_empty() => json!({}),
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| json!({"_raw": s})),
        Value::Null => json!({}),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::llm::{ChatMessage, ToolCall, ToolSpec};

    fn conversation() -> InferRequest {
        let mut assistant = ChatMessage::new(Role::Assistant, "");
        assistant.tool_calls.push(ToolCall {
            id: "call_1".into(),
            name: "fs_read".into(),
            arguments: json!({"path": "notes.txt"}),
        });
        let mut tool = ChatMessage::new(Role::Tool, "hello world");
        tool.tool_call_id = Some("call_1".into());
        tool.name = Some("fs_read".into());
        InferRequest {
            model: "gpt-4o-mini".into(),
            messages: vec![
                ChatMessage::new(Role::System, "You are an agent."),
                ChatMessage::new(Role::User, "Read notes.txt"),
                assistant,
                tool,
                ChatMessage::new(Role::Assistant, "It says hello world."),
            ],
            tools: vec![ToolSpec {
                name: "fs_read".into(),
                description: "Read a file".into(),
                parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
            }],
            max_tokens: Some(256),
            temperature: Some(0.2),
            constraint: None,
            ..Default::default()
        }
    }

    #[test]
    fn body_has_roles_tool_calls_tools_and_sampling() {
        let body = OpenAi.build_body(&conversation());
        assert_eq!(
            body,
            json!({
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "You are an agent."},
                    {"role": "user", "content": "Read notes.txt"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_1", "type": "function",
                         "function": {"name": "fs_read", "arguments": "{\"path\":\"notes.txt\"}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "call_1", "name": "fs_read", "content": "hello world"},
                    {"role": "assistant", "content": "It says hello world."}
                ],
                "tools": [{"type": "function", "function": {
                    "name": "fs_read", "description": "Read a file",
                    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
                }}],
                "max_tokens": 256,
                "temperature": 0.2
            })
        );
        // The arguments string is JSON of the arguments object.
        let args = body["messages"][2]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(args).unwrap(),
            json!({"path": "notes.txt"})
        );
    }

    #[test]
    fn sampling_fields_are_sent() {
        let req = InferRequest {
            model: "m".into(),
            messages: vec![ChatMessage::new(Role::User, "hi")],
            temperature: Some(0.0),
            top_p: Some(0.9),
            seed: Some(42),
            stop: vec!["\n\n".into()],
            ..Default::default()
        };
        let body = OpenAi.build_body(&req);
        assert_eq!(body["temperature"], json!(0.0));
        assert_eq!(body["top_p"], json!(0.9));
        assert_eq!(body["seed"], json!(42));
        assert_eq!(body["stop"], json!(["\n\n"]));
    }

    #[test]
    fn body_omits_absent_options() {
        let req = InferRequest {
            model: "m".into(),
            messages: vec![ChatMessage::new(Role::User, "hi")],
            tools: vec![],
            max_tokens: None,
            temperature: None,
            constraint: None,
            ..Default::default()
        };
        assert_eq!(
            OpenAi.build_body(&req),
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        );
    }

    #[test]
    fn constraints() {
        let mut req = conversation();
        req.constraint = Some(Constraint::Grammar("root ::= \"x\"".into()));
        let body = OpenAi.build_body(&req);
        assert_eq!(body["grammar"], json!("root ::= \"x\""));
        assert!(body.get("response_format").is_none());
        let schema = json!({"type": "object", "properties": {"call": {"type": "string"}}});
        req.constraint = Some(Constraint::JsonSchema(schema.clone()));
        let body = OpenAi.build_body(&req);
        assert!(body.get("grammar").is_none());
        assert_eq!(
            body["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "syscall", "schema": schema, "strict": true}})
        );
    }

    #[test]
    fn parses_text_reply() {
        let v = json!({
            "id": "chatcmpl-123", "object": "chat.completion", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
        });
        let r = OpenAi.parse_response(&v).unwrap();
        assert_eq!(r.content, "Hello!");
        assert!(r.tool_calls.is_empty());
        assert_eq!(
            r.usage,
            Usage {
                prompt_tokens: 12,
                completion_tokens: 3
            }
        );
        assert_eq!(r.finish_reason.as_deref(), Some("stop"));
    }

    #[test]
    fn parses_tool_calls_with_null_content() {
        let v = json!({
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [
                    {"id": "call_abc", "type": "function",
                     "function": {"name": "fs_write", "arguments": "{\"path\": \"a.txt\", \"data\": \"x\"}"}},
                    {"id": "call_def", "type": "function",
                     "function": {"name": "fs_read", "arguments": "{not json"}},
                    {"type": "function", "function": {"name": "noop", "arguments": ""}}
                ]}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20}
        });
        let r = OpenAi.parse_response(&v).unwrap();
        assert_eq!(r.content, "");
        assert_eq!(r.tool_calls.len(), 3);
        assert_eq!(r.tool_calls[0].id, "call_abc");
        assert_eq!(r.tool_calls[0].name, "fs_write");
        assert_eq!(
            r.tool_calls[0].arguments,
            json!({"path": "a.txt", "data": "x"})
        );
        assert_eq!(r.tool_calls[1].arguments, json!({"_raw": "{not json"}));
        assert_eq!(r.tool_calls[2].arguments, json!({}));
        assert!(r.tool_calls[2].id.starts_with("call_"));
        assert_ne!(r.tool_calls[2].id, "call_");
        assert_eq!(r.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(r.usage.total(), 120);
    }

    #[test]
    fn missing_usage_is_zero_and_object_arguments_accepted() {
        let v = json!({"choices": [{"message": {"content": "x", "tool_calls": [
            {"id": "1", "function": {"name": "f", "arguments": {"a": 1}}}]}}]});
        let r = OpenAi.parse_response(&v).unwrap();
        assert_eq!(r.usage, Usage::default());
        assert_eq!(r.finish_reason, None);
        assert_eq!(r.tool_calls[0].arguments, json!({"a": 1}));
    }

    #[test]
    fn malformed_answers_are_protocol_errors() {
        assert!(matches!(
            OpenAi.parse_response(&json!({"choices": []})),
            Err(LlmError::Protocol(_))
        ));
        let err = OpenAi
            .parse_response(&json!({"error": {"message": "model overloaded"}}))
            .unwrap_err();
        assert!(matches!(&err, LlmError::Protocol(m) if m.contains("model overloaded")));
        let err = OpenAi
            .parse_response(&json!({"choices": [{"message": {"tool_calls": [
            {"id": "1", "function": {"arguments": "{}"}}]}}]}))
            .unwrap_err();
        assert!(matches!(err, LlmError::Protocol(_)));
    }

    #[test]
    fn endpoint_and_headers() {
        assert_eq!(
            OpenAi.endpoint(None, "gpt-4o-mini"),
            "https://api.openai.com/v1/chat/completions"
        );
        assert_eq!(
            OpenAi.endpoint(Some("http://127.0.0.1:8080/v1/"), "m"),
            "http://127.0.0.1:8080/v1/chat/completions"
        );
        assert!(OpenAi.headers(None).is_empty());
        assert_eq!(
            OpenAi.headers(Some("sk-1")),
            vec![("authorization", "Bearer sk-1".to_string())]
        );
    }
}
