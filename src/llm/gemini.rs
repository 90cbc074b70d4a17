//! Google Gemini generateContent
//! (`POST {base}/models/{model}:generateContent`).
//!
//! System messages become `systemInstruction`; the assistant is the
//! `model` role; tool calls are `functionCall` parts and tool results
//! `functionResponse` parts in a `user` turn; consecutive turns of the same
//! role are merged. Gemini has no tool call ids: ids are generated when
//! parsing, and a tool result is matched to its call's name by id when
//! the message has no `name`. Tool parameter schemas are reduced to the
//! OpenAPI subset Gemini accepts (it rejects `$schema`,
//! `additionalProperties`, `const`, type lists...). Constraints are
//! ignored.

use super::http::{self, WireFormat};
use super::{InferRequest, InferResponse, LlmError, Role, Usage};
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// The vendor's public endpoint.
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com/v1beta";

/// The Gemini generateContent wire format.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gemini;

http::module_infer!(Gemini);

impl WireFormat for Gemini {
    fn default_base_url(&self) -> &'static str {
        DEFAULT_BASE_URL
    }

    /// The URL of the generateContent endpoint of `model` (a leading
    /// `models/` is accepted; unusual characters are percent-encoded).
    fn endpoint(&self, base_url: Option<&str>, model: &str) -> String {
        let model = model.strip_prefix("models/").unwrap_or(model);
        format!(
            "{}/models/{}:generateContent",
            http::base(base_url, DEFAULT_BASE_URL),
            encode_path_segment(model)
        )
    }

    /// `x-goog-api-key` when there is a key.
    fn headers(&self, api_key: Option<&str>) -> Vec<(&'static str, String)> {
        api_key
            .map(|k| vec![("x-goog-api-key", k.to_string())])
            .unwrap_or_default()
    }

    /// The request body.
    fn build_body(&self, req: &InferRequest) -> Value {
        let mut call_names: HashMap<&str, &str> = HashMap::new();
        let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
        for m in &req.messages {
            let (role, parts) = match m.role {
                Role::System => continue,
                Role::User => ("user", text_part(&m.content)),
                Role::Assistant => {
                    let mut parts = text_part(&m.content);
                    for c in &m.tool_calls {
                        call_names.insert(c.id.as_str(), c.name.as_str());
                        parts.push(json!({"functionCall": {"name": c.name, "args": http::arguments_object(&c.arguments)}}));
                    }
                    ("model", parts)
                }
                Role::Tool => {
                    let name = m
                        .name
                        .as_deref()
                        .or_else(|| {
                            m.tool_call_id
                                .as_deref()
                                .and_then(|id| call_names.get(id).copied())
                        })
                        .unwrap_or_default();
                    (
                        "user",
                        vec![
                            json!({"functionResponse": {"name": name, "response": {"content": m.content}}}),
                        ],
                    )
                }
            };
            http::push_turn(&mut turns, role, parts);
        }
        let contents: Vec<Value> = turns
            .into_iter()
            .map(|(role, parts)| json!({"role": role, "parts": parts}))
            .collect();

        let mut body = Map::new();
        if let Some(system) = http::system_prompt(req) {
            body.insert(
                "systemInstruction".into(),
                json!({"parts": [{"text": system}]}),
            );
        }
        body.insert("contents".into(), Value::Array(contents));
        if !req.tools.is_empty() {
            let decls: Vec<Value> = req
                .tools
                .iter()
                .map(|t| {
                    json!({"name": t.name, "description": t.description,
                           "parameters": gemini_schema(&t.parameters)})
                })
                .collect();
            body.insert("tools".into(), json!([{"functionDeclarations": decls}]));
        }
        let mut gen_config = Map::new();
        if let Some(n) = req.max_tokens {
            gen_config.insert("maxOutputTokens".into(), json!(n));
        }
        if let Some(t) = req.temperature {
            gen_config.insert("temperature".into(), http::temperature_json(t));
        }
        if let Some(p) = req.top_p {
            gen_config.insert("topP".into(), http::temperature_json(p));
        }
        if let Some(seed) = req.seed {
            gen_config.insert("seed".into(), json!(seed));
        }
        if !req.stop.is_empty() {
            gen_config.insert("stopSequences".into(), json!(req.stop));
        }
        if !gen_config.is_empty() {
            body.insert("generationConfig".into(), Value::Object(gen_config));
        }
        Value::Object(body)
    }

    /// Parses a generateContent answer.
    fn parse_response(&self, v: &Value) -> Result<InferResponse, LlmError> {
        if let Some(msg) = http::error_message(v) {
            return Err(LlmError::Protocol(format!("provider error: {msg}")));
        }
        let Some(candidate) = v
            .get("candidates")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        else {
            let reason = v
                .pointer("/promptFeedback/blockReason")
                .and_then(Value::as_str);
            return Err(LlmError::Protocol(match reason {
                Some(r) => format!("the prompt was blocked ({r})"),
                None => "no candidates in the answer".into(),
            }));
        };
        let mut content = String::new();
        let mut tool_calls = Vec::new();
        let parts = candidate
            .pointer("/content/parts")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (i, p) in parts.iter().enumerate() {
            if let Some(call) = p.get("functionCall") {
                let name = call.get("name").and_then(Value::as_str).ok_or_else(|| {
                    LlmError::Protocol(format!("functionCall part {i} has no name"))
                })?;
                let arguments = call.get("args").cloned().unwrap_or_else(|| json!({}));
                tool_calls.push(http::tool_call(
                    call.get("id"),
                    "gemini_call",
                    name,
                    arguments,
                ));
            } else if let Some(text) = p.get("text").and_then(Value::as_str) {
                // Thought summaries are not the reply.
                if p.get("thought").and_then(Value::as_bool) != Some(true) {
                    content.push_str(text);
                }
            }
        }
        let usage = v.get("usageMetadata").unwrap_or(&Value::Null);
        let field = |k: &str| http::tokens(usage.get(k).unwrap_or(&Value::Null));
        Ok(InferResponse {
            content,
            tool_calls,
            usage: Usage {
                prompt_tokens: field("promptTokenCount"),
                // Thinking tokens are billed as output.
                completion_tokens: field("candidatesTokenCount") + field("thoughtsTokenCount"),
            },
            finish_reason: candidate
                .get("finishReason")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn text_part(text: &str) -> Vec<Value> {
    if text.is_empty() {
        Vec::new()
    } else {
        vec![json!({"text": text})]
    }
}

/// A JSON schema reduced to Gemini's OpenAPI `Schema` subset: unknown
/// keywords are dropped, `const` becomes a one-value `enum`, `oneOf`
/// becomes `anyOf`, and a type list such as `["string", "null"]` becomes
/// `"string"` with `nullable: true`.
pub fn gemini_schema(schema: &Value) -> Value {
    let Value::Object(src) = schema else {
        return schema.clone();
    };
    const KEEP: &[&str] = &[
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "default",
        "minimum",
        "maximum",
        "required",
        "propertyOrdering",
    ];
    let mut out = Map::new();
    for (k, v) in src {
        match k.as_str() {
            "type" => match v {
                Value::Array(types) => {
                    let non_null: Vec<&Value> = types
                        .iter()
                        .filter(|t| t.as_str() != Some("null"))
                        .collect();
                    if non_null.len() < types.len() {
                        out.insert("nullable".into(), json!(true));
                    }
                    if let Some(t) = non_null.first() {
                        out.insert("type".into(), (*t).clone());
                    }
                }
                other => {
                    out.insert("type".into(), other.clone());
                }
            },
            "properties" => {
                if let Value::Object(props) = v {
                    let props: Map<String, Value> = props
                        .iter()
                        .map(|(name, s)| (name.clone(), gemini_schema(s)))
                        .collect();
                    out.insert("properties".into(), Value::Object(props));
                }
            }
            "items" => {
                out.insert("items".into(), gemini_schema(v));
            }
            "anyOf" | "oneOf" => {
                if let Value::Array(alts) = v {
                    out.insert(
                        "anyOf".into(),
                        Value::Array(alts.iter().map(gemini_schema).collect()),
                    );
                }
            }
            "const" if v.is_string() => {
                out.insert("enum".into(), json!([v]));
            }
            // An explicit `nullable` does not undo one from a type list.
            k if KEEP.contains(&k) && (k != "nullable" || !out.contains_key("nullable")) => {
                out.insert(k.to_string(), v.clone());
            }
            _ => {}
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::llm::{ChatMessage, ToolCall, ToolSpec};

    fn conversation() -> InferRequest {
        let mut assistant = ChatMessage::new(Role::Assistant, "");
        assistant.tool_calls.push(ToolCall {
            id: "gemini_call_7".into(),
            name: "fs_read".into(),
            arguments: json!({"path": "a.txt"}),
        });
        let mut result = ChatMessage::new(Role::Tool, "file contents");
        result.tool_call_id = Some("gemini_call_7".into());
        InferRequest {
            model: "gemini-2.5-flash".into(),
            messages: vec![
                ChatMessage::new(Role::System, "You are an agent."),
                ChatMessage::new(Role::User, "Read a.txt"),
                assistant,
                result,
                ChatMessage::new(Role::User, "And?"),
                ChatMessage::new(Role::Assistant, "Done."),
            ],
            tools: vec![ToolSpec {
                name: "fs_read".into(),
                description: "Read a file".into(),
                parameters: json!({"type": "object", "properties": {"path": {"type": "string"}},
                                   "required": ["path"]}),
            }],
            max_tokens: Some(300),
            temperature: Some(0.5),
            constraint: None,
            ..Default::default()
        }
    }

    #[test]
    fn sampling_fields_go_in_the_generation_config() {
        let req = InferRequest {
            model: "m".into(),
            messages: vec![ChatMessage::new(Role::User, "hi")],
            temperature: Some(0.0),
            top_p: Some(0.5),
            seed: Some(7),
            stop: vec!["END".into()],
            ..Default::default()
        };
        let g = &Gemini.build_body(&req)["generationConfig"];
        assert_eq!(g["temperature"], json!(0.0));
        assert_eq!(g["topP"], json!(0.5));
        assert_eq!(g["seed"], json!(7));
        assert_eq!(g["stopSequences"], json!(["END"]));
    }

    #[test]
    fn body_system_contents_tools_and_config() {
        assert_eq!(
            Gemini.build_body(&conversation()),
            json!({
                "systemInstruction": {"parts": [{"text": "You are an agent."}]},
                "contents": [
                    {"role": "user", "parts": [{"text": "Read a.txt"}]},
                    {"role": "model", "parts": [{"functionCall": {"name": "fs_read", "args": {"path": "a.txt"}}}]},
                    {"role": "user", "parts": [
                        {"functionResponse": {"name": "fs_read", "response": {"content": "file contents"}}},
                        {"text": "And?"}
                    ]},
                    {"role": "model", "parts": [{"text": "Done."}]}
                ],
                "tools": [{"functionDeclarations": [{"name": "fs_read", "description": "Read a file",
                    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}]}],
                "generationConfig": {"maxOutputTokens": 300, "temperature": 0.5}
            })
        );
    }

    #[test]
    fn body_minimal_and_tool_name_from_message() {
        let mut result = ChatMessage::new(Role::Tool, "r");
        result.name = Some("explicit".into());
        let req = InferRequest {
            model: "m".into(),
            messages: vec![ChatMessage::new(Role::User, "hi"), result],
            tools: vec![],
            max_tokens: None,
            temperature: None,
            constraint: None,
            ..Default::default()
        };
        assert_eq!(
            Gemini.build_body(&req),
            json!({"contents": [{"role": "user", "parts": [
                {"text": "hi"},
                {"functionResponse": {"name": "explicit", "response": {"content": "r"}}}
            ]}]})
        );
    }

    #[test]
    fn schema_is_reduced_to_the_openapi_subset() {
        let schema = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "mode": {"const": "append", "description": "how"},
                "path": {"type": ["string", "null"], "minLength": 1},
                "additionalProperties": {"type": "integer", "exclusiveMinimum": 0},
                "list": {"type": "array", "items": {"type": "object", "additionalProperties": false,
                                                     "properties": {"x": {"oneOf": [{"type": "string"}, {"type": "number"}]}}}}
            },
            "required": ["path"]
        });
        assert_eq!(
            gemini_schema(&schema),
            json!({
                "type": "object",
                "properties": {
                    "mode": {"enum": ["append"], "description": "how"},
                    "path": {"type": "string", "nullable": true, "minLength": 1},
                    "additionalProperties": {"type": "integer"},
                    "list": {"type": "array", "items": {"type": "object",
                             "properties": {"x": {"anyOf": [{"type": "string"}, {"type": "number"}]}}}}
                },
                "required": ["path"]
            })
        );
    }

    #[test]
    fn parses_text_and_function_calls() {
        let v = json!({
            "candidates": [{
                "content": {"role": "model", "parts": [
                    {"text": "thinking...", "thought": true},
                    {"text": "Reading "},
                    {"text": "both."},
                    {"functionCall": {"name": "fs_read", "args": {"path": "a.txt"}}},
                    {"functionCall": {"name": "fs_read", "args": {"path": "b.txt"}}}
                ]},
                "finishReason": "STOP", "index": 0
            }],
            "usageMetadata": {"promptTokenCount": 80, "candidatesTokenCount": 12,
                              "thoughtsTokenCount": 3, "totalTokenCount": 95},
            "modelVersion": "gemini-2.5-flash"
        });
        let r = Gemini.parse_response(&v).unwrap();
        assert_eq!(r.content, "Reading both.");
        assert_eq!(r.tool_calls.len(), 2);
        assert_eq!(r.tool_calls[0].name, "fs_read");
        assert_eq!(r.tool_calls[1].arguments, json!({"path": "b.txt"}));
        assert!(r.tool_calls[0].id.starts_with("gemini_call_"));
        assert_ne!(r.tool_calls[0].id, r.tool_calls[1].id);
        assert_eq!(
            r.usage,
            Usage {
                prompt_tokens: 80,
                completion_tokens: 15
            }
        );
        assert_eq!(r.finish_reason.as_deref(), Some("STOP"));
    }

    #[test]
    fn parses_empty_candidate_and_blocked_prompt() {
        let r = Gemini
            .parse_response(&json!({"candidates": [{"finishReason": "MAX_TOKENS"}]}))
            .unwrap();
        assert_eq!(r.content, "");
        assert_eq!(r.usage, Usage::default());
        assert_eq!(r.finish_reason.as_deref(), Some("MAX_TOKENS"));
        let err = Gemini
            .parse_response(&json!({"promptFeedback": {"blockReason": "SAFETY"}}))
            .unwrap_err();
        assert!(matches!(&err, LlmError::Protocol(m) if m.contains("SAFETY")));
        let err = Gemini
            .parse_response(&json!({"error": {"code": 400, "message": "API key not valid"}}))
            .unwrap_err();
        assert!(matches!(&err, LlmError::Protocol(m) if m.contains("API key not valid")));
    }

    #[test]
    fn endpoint_and_headers() {
        assert_eq!(
            Gemini.endpoint(None, "gemini-2.5-flash"),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            Gemini.endpoint(Some("http://127.0.0.1:5/v1beta/"), "models/g-1"),
            "http://127.0.0.1:5/v1beta/models/g-1:generateContent"
        );
        assert_eq!(
            Gemini.endpoint(None, "a/b?c"),
            "https://generativelanguage.googleapis.com/v1beta/models/a%2Fb%3Fc:generateContent"
        );
        assert_eq!(
            Gemini.headers(Some("AIza-1")),
            vec![("x-goog-api-key", "AIza-1".to_string())]
        );
        assert!(Gemini.headers(None).is_empty());
    }
}
