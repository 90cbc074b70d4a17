//! A provider that replays replies from a JSON script: no network, but the
//! same [`InferResponse`] (or [`LlmError`]) as a real provider, so the
//! daemon and the runtime take exactly the same path.
//!
//! ```json
//! {
//!   "agents": {
//!     "writer": [
//!       "plain text reply",
//!       {"tool_calls": [{"name": "fs_write", "arguments": {"path": "a", "data": "x"}}]},
//!       {"content": "slow", "delay_ms": 200, "usage": {"prompt_tokens": 10, "completion_tokens": 2}},
//!       {"error": "rate_limited"}
//!     ]
//!   },
//!   "default": ["reply of any other agent"]
//! }
//! ```
//!
//! The agent's k-th inference ([`InferContext::turn`] = k) gets entry k of
//! the list under its name, or of `default` when there is none. Errors are
//! tied to the turn too: an `error` entry is replayed each time that turn
//! is asked for. Usage, when absent, is estimated at 4 characters a token.

use super::{InferContext, InferRequest, InferResponse, LlmError, ToolCall, Usage};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An injected failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptedFailure {
    RateLimited,
    Transient,
    Auth,
}

impl ScriptedFailure {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "rate_limited" => Some(ScriptedFailure::RateLimited),
            "transient" => Some(ScriptedFailure::Transient),
            "auth" => Some(ScriptedFailure::Auth),
            _ => None,
        }
    }

    fn error(self) -> LlmError {
        match self {
            ScriptedFailure::RateLimited => LlmError::RateLimited { retry_after: None },
            ScriptedFailure::Transient => LlmError::Transient("scripted transient failure".into()),
            ScriptedFailure::Auth => LlmError::Auth("scripted authentication failure".into()),
        }
    }
}

/// A tool call of a scripted reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptedToolCall {
    pub id: Option<String>,
    pub name: String,
    pub arguments: Value,
}

/// One scripted reply.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScriptedReply {
    pub content: String,
    pub tool_calls: Vec<ScriptedToolCall>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub delay: Duration,
    pub error: Option<ScriptedFailure>,
}

/// The scripted provider.
#[derive(Debug, Clone)]
pub struct ScriptedProvider {
    name: String,
    path: PathBuf,
    agents: BTreeMap<String, Vec<ScriptedReply>>,
    default: Option<Vec<ScriptedReply>>,
}

impl ScriptedProvider {
    /// Loads and validates a script file; the provider is named
    /// `scripted`.
    pub fn load(path: &Path) -> Result<Self, LlmError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LlmError::Config(format!("cannot read script {}: {e}", path.display())))?;
        Self::parse(&text, path)
    }

    /// Validates a script given as text (`path` is only used in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, LlmError> {
        let err = |msg: String| LlmError::Config(format!("script {}: {msg}", path.display()));
        let v: Value = serde_json::from_str(text).map_err(|e| {
            err(format!(
                "invalid JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            ))
        })?;
        let Value::Object(top) = v else {
            return Err(err(
                "the top level must be an object with \"agents\" and/or \"default\"".into(),
            ));
        };
        let mut agents = BTreeMap::new();
        let mut default = None;
        for (k, v) in &top {
            match k.as_str() {
                "agents" => {
                    let Value::Object(map) = v else {
                        return Err(err(
                            "\"agents\" must be an object of agent name → list of replies".into(),
                        ));
                    };
                    for (name, list) in map {
                        let replies = parse_list(list, &format!("agents.{name}")).map_err(&err)?;
                        agents.insert(name.clone(), replies);
                    }
                }
                "default" => default = Some(parse_list(v, "default").map_err(&err)?),
                other => {
                    return Err(err(format!(
                        "unknown top-level key {other:?} (expected \"agents\" and/or \"default\")"
                    )));
                }
            }
        }
        if agents.is_empty() && default.is_none() {
            return Err(err("no replies: give \"agents\" and/or \"default\"".into()));
        }
        Ok(ScriptedProvider {
            name: "scripted".into(),
            path: path.to_path_buf(),
            agents,
            default,
        })
    }

    /// The same provider under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many replies an agent of this name has (its own list or
    /// `default`).
    pub fn replies_for(&self, agent: &str) -> usize {
        self.list_for(agent).map_or(0, |(l, _)| l.len())
    }

    fn list_for(&self, agent: &str) -> Option<(&[ScriptedReply], bool)> {
        match self.agents.get(agent) {
            Some(l) => Some((l, false)),
            None => self.default.as_deref().map(|l| (l, true)),
        }
    }

    /// The reply for this turn and how long to wait before giving it.
    pub fn respond(
        &self,
        req: &InferRequest,
        ctx: &InferContext,
    ) -> (Duration, Result<InferResponse, LlmError>) {
        let name = &ctx.agent_name;
        let Some((list, is_default)) = self.list_for(name) else {
            return (
                Duration::ZERO,
                Err(LlmError::Config(format!(
                    "script {} has no replies for {name} and no \"default\"",
                    self.path.display()
                ))),
            );
        };
        let reply = usize::try_from(ctx.turn).ok().and_then(|k| list.get(k));
        let Some(reply) = reply else {
            return (
                Duration::ZERO,
                Err(LlmError::Config(format!(
                    "script for {name} has only {} replies{}",
                    list.len(),
                    if is_default {
                        " (the \"default\" list)"
                    } else {
                        ""
                    }
                ))),
            );
        };
        if let Some(f) = reply.error {
            return (reply.delay, Err(f.error()));
        }
        let tool_calls: Vec<ToolCall> = reply
            .tool_calls
            .iter()
            .enumerate()
            .map(|(i, c)| ToolCall {
                id: c
                    .id
                    .clone()
                    .unwrap_or_else(|| format!("call_{}_{i}", ctx.turn)),
                name: c.name.clone(),
                arguments: c.arguments.clone(),
            })
            .collect();
        let prompt_chars: usize = req
            .messages
            .iter()
            .map(|m| {
                m.content.chars().count()
                    + m.tool_calls
                        .iter()
                        .map(|c| c.name.len() + c.arguments.to_string().chars().count())
                        .sum::<usize>()
            })
            .sum();
        let completion_chars = reply.content.chars().count()
            + tool_calls
                .iter()
                .map(|c| c.name.len() + c.arguments.to_string().chars().count())
                .sum::<usize>();
        let usage = Usage {
            prompt_tokens: reply
                .prompt_tokens
                .unwrap_or_else(|| estimate_tokens(prompt_chars)),
            completion_tokens: reply
                .completion_tokens
                .unwrap_or_else(|| estimate_tokens(completion_chars)),
        };
        let finish_reason = if tool_calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        };
        (
            reply.delay,
            Ok(InferResponse {
                content: reply.content.clone(),
                tool_calls,
                usage,
                finish_reason: Some(finish_reason.into()),
            }),
        )
    }

    /// One inference: the reply for `ctx.turn` after its delay.
    pub async fn infer(
        &self,
        req: &InferRequest,
        ctx: &InferContext,
    ) -> Result<InferResponse, LlmError> {
        let (delay, result) = self.respond(req, ctx);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        result
    }
}

/// Characters / 4, at least 1.
fn estimate_tokens(chars: usize) -> u64 {
    u64::try_from(chars / 4).unwrap_or(u64::MAX).max(1)
}

fn parse_list(v: &Value, at: &str) -> Result<Vec<ScriptedReply>, String> {
    let Value::Array(items) = v else {
        return Err(format!("{at} must be a list of replies"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_reply(item, &format!("{at}[{i}]")))
        .collect()
}

fn non_negative(v: &Value, at: &str) -> Result<u64, String> {
    v.as_u64()
        .ok_or_else(|| format!("{at} must be a non-negative integer, not {v}"))
}

fn parse_reply(v: &Value, at: &str) -> Result<ScriptedReply, String> {
    let obj = match v {
        Value::String(s) => {
            return Ok(ScriptedReply {
                content: s.clone(),
                ..ScriptedReply::default()
            });
        }
        Value::Object(o) => o,
        other => {
            return Err(format!("{at} must be a string or an object, not {other}"));
        }
    };
    let mut reply = ScriptedReply::default();
    for (k, v) in obj {
        let here = format!("{at}.{k}");
        match k.as_str() {
            "content" => {
                reply.content = v
                    .as_str()
                    .ok_or_else(|| format!("{here} must be a string"))?
                    .to_string();
            }
            "tool_calls" => {
                let Value::Array(calls) = v else {
                    return Err(format!("{here} must be a list"));
                };
                for (i, c) in calls.iter().enumerate() {
                    reply
                        .tool_calls
                        .push(parse_tool_call(c, &format!("{here}[{i}]"))?);
                }
            }
            "usage" => {
                let Value::Object(u) = v else {
                    return Err(format!(
                        "{here} must be an object with prompt_tokens and/or completion_tokens"
                    ));
                };
                for (uk, uv) in u {
                    let n = non_negative(uv, &format!("{here}.{uk}"))?;
                    match uk.as_str() {
                        "prompt_tokens" => reply.prompt_tokens = Some(n),
                        "completion_tokens" => reply.completion_tokens = Some(n),
                        other => {
                            return Err(format!(
                                "{here}: unknown key {other:?} (expected prompt_tokens, completion_tokens)"
                            ));
                        }
                    }
                }
            }
            "delay_ms" => reply.delay = Duration::from_millis(non_negative(v, &here)?),
            "error" => {
                let s = v.as_str().unwrap_or_default();
                reply.error = Some(ScriptedFailure::parse(s).ok_or_else(|| {
                    format!("{here} must be \"rate_limited\", \"transient\" or \"auth\", not {v}")
                })?);
            }
            other => {
                return Err(format!(
                    "{at}: unknown key {other:?} (expected content, tool_calls, usage, delay_ms, error)"
                ));
            }
        }
    }
    if reply.error.is_some()
        && (!reply.content.is_empty()
            || !reply.tool_calls.is_empty()
            || reply.prompt_tokens.is_some()
            || reply.completion_tokens.is_some())
    {
        return Err(format!(
            "{at}: an \"error\" reply can only have \"delay_ms\" besides"
        ));
    }
    Ok(reply)
}

fn parse_tool_call(v: &Value, at: &str) -> Result<ScriptedToolCall, String> {
    let Value::Object(o) = v else {
        return Err(format!(
            "{at} must be an object with \"name\" and \"arguments\""
        ));
    };
    let mut call = ScriptedToolCall {
        id: None,
        name: String::new(),
        arguments: Value::Object(Default::default()),
    };
    let mut has_name = false;
    for (k, v) in o {
        match k.as_str() {
            "name" => {
                call.name = v
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| format!("{at}.name must be a non-empty string"))?
                    .to_string();
                has_name = true;
            }
            "arguments" => {
                if !v.is_object() {
                    return Err(format!("{at}.arguments must be an object"));
                }
                call.arguments = v.clone();
            }
            "id" => {
                call.id = Some(
                    v.as_str()
                        .ok_or_else(|| format!("{at}.id must be a string"))?
                        .to_string(),
                );
            }
            other => {
                return Err(format!(
                    "{at}: unknown key {other:?} (expected name, arguments, id)"
                ));
            }
        }
    }
    if !has_name {
        return Err(format!("{at}: missing \"name\""));
    }
    Ok(call)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::llm::{ChatMessage, Role};
    use serde_json::json;
    use std::time::Instant;

    fn script(v: Value) -> Result<ScriptedProvider, LlmError> {
        ScriptedProvider::parse(&v.to_string(), Path::new("/etc/agentos/script.json"))
    }

    fn req(text: &str) -> InferRequest {
        InferRequest {
            model: "scripted".into(),
            messages: vec![
                ChatMessage::new(Role::System, "s".repeat(20)),
                ChatMessage::new(Role::User, text),
            ],
            tools: vec![],
            max_tokens: None,
            temperature: None,
            constraint: None,
            ..Default::default()
        }
    }

    fn ctx(name: &str, turn: u64) -> InferContext {
        InferContext {
            pid: 7,
            agent_name: name.into(),
            turn,
        }
    }

    fn example() -> ScriptedProvider {
        script(json!({
            "agents": {
                "writer": [
                    "first reply",
                    {"tool_calls": [{"name": "fs_write", "arguments": {"path": "a", "data": "xy"}},
                                    {"name": "exit", "id": "mine"}],
                     "usage": {"prompt_tokens": 50, "completion_tokens": 9}},
                    {"error": "rate_limited"},
                    {"error": "transient"},
                    {"error": "auth"},
                    {"content": "partial", "usage": {"completion_tokens": 5}}
                ]
            },
            "default": ["from default"]
        }))
        .unwrap()
    }

    #[test]
    fn replies_follow_the_turn() {
        let p = example();
        let r = p.respond(&req("hello"), &ctx("writer", 0)).1.unwrap();
        assert_eq!(r.content, "first reply");
        assert!(r.tool_calls.is_empty());
        assert_eq!(r.finish_reason.as_deref(), Some("stop"));
        // 20 + 12 chars of prompt → 8 tokens; 11 chars → 2 tokens.
        let r = p
            .respond(&req("hello world!"), &ctx("writer", 0))
            .1
            .unwrap();
        assert_eq!(
            r.usage,
            Usage {
                prompt_tokens: 8,
                completion_tokens: 2
            }
        );

        let r = p.respond(&req("x"), &ctx("writer", 1)).1.unwrap();
        assert_eq!(r.content, "");
        assert_eq!(
            r.tool_calls,
            vec![
                ToolCall {
                    id: "call_1_0".into(),
                    name: "fs_write".into(),
                    arguments: json!({"path": "a", "data": "xy"})
                },
                ToolCall {
                    id: "mine".into(),
                    name: "exit".into(),
                    arguments: json!({})
                },
            ]
        );
        assert_eq!(
            r.usage,
            Usage {
                prompt_tokens: 50,
                completion_tokens: 9
            }
        );
        assert_eq!(r.finish_reason.as_deref(), Some("tool_calls"));

        assert_eq!(
            p.respond(&req("x"), &ctx("writer", 2)).1,
            Err(LlmError::RateLimited { retry_after: None })
        );
        assert!(matches!(
            p.respond(&req("x"), &ctx("writer", 3)).1,
            Err(LlmError::Transient(_))
        ));
        assert!(matches!(
            p.respond(&req("x"), &ctx("writer", 4)).1,
            Err(LlmError::Auth(_))
        ));
        let r = p.respond(&req("x"), &ctx("writer", 5)).1.unwrap();
        assert_eq!(
            r.usage,
            Usage {
                prompt_tokens: 5,
                completion_tokens: 5
            }
        );
    }

    #[test]
    fn past_the_end_and_default() {
        let p = example();
        assert_eq!(
            p.respond(&req("x"), &ctx("writer", 6)).1,
            Err(LlmError::Config(
                "script for writer has only 6 replies".into()
            ))
        );
        let r = p.respond(&req("x"), &ctx("someone", 0)).1.unwrap();
        assert_eq!(r.content, "from default");
        let err = p.respond(&req("x"), &ctx("someone", 1)).1.unwrap_err();
        assert!(
            matches!(&err, LlmError::Config(m) if m.starts_with("script for someone has only 1 replies")),
            "{err:?}"
        );
        assert_eq!(p.replies_for("writer"), 6);
        assert_eq!(p.replies_for("anyone"), 1);

        let p = script(json!({"agents": {"a": ["x"]}})).unwrap();
        let err = p.respond(&req("x"), &ctx("b", 0)).1.unwrap_err();
        assert!(matches!(&err, LlmError::Config(m) if m.contains("no replies for b")));
    }

    #[tokio::test]
    async fn delay_is_applied() {
        let p = script(json!({"default": [{"content": "slow", "delay_ms": 150}, {"error": "transient", "delay_ms": 100}]}))
            .unwrap();
        let t = Instant::now();
        let r = p.infer(&req("x"), &ctx("a", 0)).await.unwrap();
        assert_eq!(r.content, "slow");
        assert!(t.elapsed() >= Duration::from_millis(150));
        let t = Instant::now();
        assert!(p.infer(&req("x"), &ctx("a", 1)).await.is_err());
        assert!(t.elapsed() >= Duration::from_millis(100));
        let t = Instant::now();
        assert!(p.infer(&req("x"), &ctx("a", 2)).await.is_err());
        assert!(t.elapsed() < Duration::from_millis(100));
    }

    fn config_error(text: &str) -> String {
        match ScriptedProvider::parse(text, Path::new("/s.json")) {
            Err(LlmError::Config(m)) => m,
            other => panic!("expected a Config error, got {other:?}"),
        }
    }

    #[test]
    fn invalid_scripts_are_explained() {
        let m = config_error("{\n  \"default\": [\"a\",]\n}");
        assert!(
            m.starts_with("script /s.json: invalid JSON at line 2 column"),
            "{m}"
        );
        let m = config_error(r#"{"agents": {"w": ["ok", {"contnet": "x"}]}}"#);
        assert!(m.contains("agents.w[1]: unknown key \"contnet\""), "{m}");
        let m = config_error(r#"{"default": [{"error": "nope"}]}"#);
        assert!(m.contains("default[0].error must be"), "{m}");
        let m = config_error(r#"{"default": [{"tool_calls": [{"arguments": {}}]}]}"#);
        assert!(
            m.contains("default[0].tool_calls[0]: missing \"name\""),
            "{m}"
        );
        let m = config_error(r#"{"default": [{"usage": {"prompt_tokens": -1}}]}"#);
        assert!(
            m.contains("default[0].usage.prompt_tokens must be a non-negative integer"),
            "{m}"
        );
        let m = config_error(r#"{"default": [{"delay_ms": "5"}]}"#);
        assert!(m.contains("default[0].delay_ms"), "{m}");
        let m = config_error(r#"{"default": [{"error": "auth", "content": "x"}]}"#);
        assert!(m.contains("only have \"delay_ms\""), "{m}");
        let m = config_error(r#"{"defaults": []}"#);
        assert!(m.contains("unknown top-level key \"defaults\""), "{m}");
        let m = config_error(r#"{}"#);
        assert!(m.contains("no replies"), "{m}");
        let m = config_error(r#"{"default": [3]}"#);
        assert!(
            m.contains("default[0] must be a string or an object"),
            "{m}"
        );
        let m = config_error(r#"{"agents": {"a": "x"}}"#);
        assert!(m.contains("agents.a must be a list"), "{m}");
    }

    #[test]
    fn load_reads_the_file_and_names_missing_ones() {
        let dir = std::env::temp_dir().join(format!("agentos-script-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.json");
        std::fs::write(&path, r#"{"default": ["hi"]}"#).unwrap();
        let p = ScriptedProvider::load(&path).unwrap().named("local");
        assert_eq!(p.name(), "local");
        assert_eq!(p.path(), path.as_path());
        assert_eq!(p.replies_for("x"), 1);
        let missing = dir.join("missing.json");
        let err = ScriptedProvider::load(&missing).unwrap_err();
        assert!(
            matches!(&err, LlmError::Config(m) if m.contains(&missing.display().to_string()) && m.contains("No such file")),
            "{err:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
