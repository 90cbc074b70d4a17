//! JSON schemas of the syscall arguments, and the constraints that make a
//! model's reply a list of valid syscalls.
//!
//! - [`args_schema`] describes the arguments object of one call exactly as
//!   the daemon accepts it (a draft 2020-12 subset: `type`, `properties`,
//!   `required`, `additionalProperties: false`, `items`, `enum`, `const`,
//!   `minimum`, `maximum`, `anyOf`, `description`). Calls without a schema
//!   of their own get a permissive `{"type": "object"}`.
//! - [`tool_specs`] lists the offered calls as native tools
//!   (name, description, schema).
//! - [`reply_schema`] constrains a whole reply to
//!   `{"calls": [{"name": ..., "arguments": {...}}]}` for providers with
//!   JSON-schema structured output; the runtime's reply parser
//!   (`crate::runtime::text`) reads that shape.
//! - [`gbnf_grammar`] constrains a whole reply, for llama.cpp, to lines of
//!   the text form `[SYS_CALL::NAME] {json object}`.
//!
//! What is offered to a model ([`offered_calls`]) is the permitted calls
//! plus the always-allowed ones (GETPID, SYS_EXIT, ...), minus LLM_INFER:
//! the runtime performs inference itself, the model never calls it.
//!
//! The table is keyed by the call's wire name rather than by enum variant,
//! so that it compiles whichever calls the enum holds; a unit test checks
//! that every call except LLM_INFER has a schema of its own.

use super::calls::Call;
use serde_json::{Map, Value, json};

/// The call the runtime makes on the model's behalf; never offered to it.
const INFER: &str = "LLM_INFER";

/// Fields of SPAWN_AGENT's `limits` object (`kernel::pcb::LimitsPatch`).
const LIMIT_FIELDS: &[(&str, &str)] = &[
    ("memory_bytes", "memory cap in bytes"),
    ("pids", "most processes and threads"),
    ("cpu_percent", "CPU share in percent of one core"),
    ("wall_time_s", "wall-clock lifetime in seconds"),
    ("workspace_bytes", "workspace quota in bytes"),
    ("max_file_bytes", "largest file FS_WRITE may produce"),
    ("max_read_bytes", "most bytes one FS_READ returns"),
    ("nofile", "open file descriptors"),
    ("syscalls_per_s", "syscall rate limit"),
    ("tmp_bytes", "size of the private /tmp"),
    ("budget_tokens", "LLM tokens the child may spend"),
];

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn boolean(description: &str) -> Value {
    json!({"type": "boolean", "description": description})
}

/// A non-negative integer (a `u64`/`u32`/`usize` field).
fn count(description: &str) -> Value {
    json!({"type": "integer", "minimum": 0, "description": description})
}

fn encoding() -> Value {
    json!({
        "type": "string",
        "enum": ["utf8", "base64"],
        "description": "utf8 (default) or base64 for binary content",
    })
}

/// An object schema with the given properties (in order), the required
/// ones, and no other fields.
fn object(props: &[(&str, Value)], required: &[&str]) -> Value {
    let mut properties = Map::new();
    for (name, schema) in props {
        properties.insert((*name).to_string(), schema.clone());
    }
    let mut out = Map::new();
    out.insert("type".into(), json!("object"));
    out.insert("properties".into(), Value::Object(properties));
    if !required.is_empty() {
        out.insert("required".into(), json!(required));
    }
    out.insert("additionalProperties".into(), json!(false));
    Value::Object(out)
}

fn limits() -> Value {
    let props: Vec<(&str, Value)> = LIMIT_FIELDS
        .iter()
        .map(|(name, what)| (*name, count(what)))
        .collect();
    let mut schema = object(&props, &[]);
    if let Some(map) = schema.as_object_mut() {
        map.insert(
            "description".into(),
            json!("lower limits for the child; absent fields are inherited"),
        );
    }
    schema
}

fn recv_args(what: &str) -> Value {
    object(
        &[
            (
                "wait_ms",
                count(&format!(
                    "how long to wait for {what} when there is none; 0 (default) returns at once"
                )),
            ),
            ("max", count("most items to return (default 100)")),
        ],
        &[],
    )
}

/// The schema of a call's arguments, by wire name; `None` for a call this
/// table does not know (it then gets a permissive object schema).
fn specific_schema(name: &str) -> Option<Value> {
    let schema = match name {
        "GETPID" | "PS" | "AGENT_INFO" => object(&[], &[]),
        "SYS_EXIT" => object(
            &[
                (
                    "code",
                    json!({
                        "type": "integer",
                        "minimum": i32::MIN,
                        "maximum": i32::MAX,
                        "description": "exit code; 0 (default) means success",
                    }),
                ),
                ("reason", string("why the agent ends, for the log")),
            ],
            &[],
        ),
        "SPAWN_AGENT" => object(
            &[
                ("name", string("name of the child agent")),
                (
                    "program",
                    string("absolute path of the child's program; default: the caller's own"),
                ),
                (
                    "args",
                    json!({"type": "array", "items": {"type": "string"},
                           "description": "command-line arguments of the program"}),
                ),
                (
                    "permissions",
                    json!({"type": "array", "items": {"type": "string"},
                           "description": "call or group names (a subset of the caller's); absent: none"}),
                ),
                ("limits", limits()),
                (
                    "pipe_to",
                    count(
                        "pid (the caller or a descendant) that receives the child's SYS_WRITE_STDOUT output",
                    ),
                ),
                (
                    "role",
                    string(
                        "for an LLM child: its role (system prompt); the child runs the built-in runtime",
                    ),
                ),
                (
                    "model",
                    string("model of an LLM child; default: the caller's"),
                ),
                (
                    "priority",
                    json!({"type": "integer", "minimum": 1, "maximum": 100,
                           "description": "scheduling weight, at most the caller's"}),
                ),
            ],
            &["name"],
        ),
        "WAIT" => object(
            &[
                ("pid", count("pid of a child")),
                ("timeout_ms", count("give up after this long (ETIMEDOUT)")),
            ],
            &["pid"],
        ),
        "KILL" => object(&[("pid", count("pid of a descendant"))], &["pid"]),
        "SLEEP" => object(&[("ms", count("milliseconds to sleep"))], &["ms"]),
        "SEND_MSG" => object(
            &[
                ("to", count("pid of the recipient")),
                ("body", string("the message (at most 256 KiB)")),
            ],
            &["to", "body"],
        ),
        "RECV_MSG" => {
            let mut schema = recv_args("a message");
            if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
                props.insert(
                    "keep".into(),
                    boolean("leave the messages in the inbox until acknowledged"),
                );
                props.insert(
                    "ack".into(),
                    count("first remove every message with a seq up to this one"),
                );
            }
            schema
        }
        "SYS_READ_STDIN" => recv_args("input"),
        "SYS_WRITE_STDOUT" => object(&[("data", string("text to write"))], &["data"]),
        "FS_READ" => object(
            &[
                ("path", string("file path in the workspace, e.g. /notes.md")),
                ("offset", count("byte offset to start at")),
                ("max_bytes", count("most bytes to return")),
                ("encoding", encoding()),
            ],
            &["path"],
        ),
        "FS_WRITE" => object(
            &[
                ("path", string("file path in the workspace, e.g. /notes.md")),
                ("content", string("the new content")),
                ("append", boolean("append instead of replacing the file")),
                ("encoding", encoding()),
            ],
            &["path", "content"],
        ),
        "FS_LIST" => object(
            &[("path", string("directory in the workspace; default /"))],
            &[],
        ),
        "FS_DELETE" => object(
            &[
                ("path", string("file or directory in the workspace")),
                ("recursive", boolean("delete a non-empty directory")),
            ],
            &["path"],
        ),
        "EXEC_CMD" => object(
            &[
                ("cmd", string("shell command, run with sh -c in /workspace")),
                (
                    "timeout_s",
                    count("seconds before the whole process tree is killed (default 30)"),
                ),
                (
                    "driver",
                    json!({
                        "type": "string",
                        "enum": ["sandbox", "docker"],
                        "description": "sandbox (default): a fresh sandbox like yours; docker: a locked-down container",
                    }),
                ),
            ],
            &["cmd"],
        ),
        "NET_FETCH" => object(
            &[
                ("url", string("http or https URL")),
                (
                    "method",
                    string("GET (default); others need the NET_WRITE permission"),
                ),
                (
                    "headers",
                    json!({"type": "object", "additionalProperties": {"type": "string"}, "description": "request headers"}),
                ),
                ("body", string("request body")),
                (
                    "max_bytes",
                    count("most bytes of the response body to return"),
                ),
            ],
            &["url"],
        ),
        "MEM_WRITE" => object(
            &[
                ("key", string("identifier of the memory")),
                ("value", string("text to remember")),
                ("collection", string("collection name; default: your own")),
                (
                    "metadata",
                    json!({"type": "object", "description": "free-form metadata"}),
                ),
            ],
            &["key", "value"],
        ),
        "MEM_READ" => object(
            &[
                ("query", string("what to look for")),
                ("k", count("how many results (default 5)")),
                ("collection", string("collection name; default: your own")),
            ],
            &["query"],
        ),
        "SYS_SCHEDULE" => object(
            &[
                ("seconds", count("delay before the timer fires")),
                (
                    "prompt",
                    string("text delivered to your inbox when it fires"),
                ),
            ],
            &["seconds", "prompt"],
        ),
        "SYS_REGISTER_WEBHOOK" => object(
            &[
                ("path", string("URL path to own, e.g. /hooks/build")),
                ("secret", string("HMAC-SHA256 key callers must sign with")),
            ],
            &["path"],
        ),
        "SYS_WEBHOOK_REPLY" => object(
            &[
                ("request_id", string("the id of the webhook event")),
                ("status", count("HTTP status code")),
                ("body", string("response body")),
                (
                    "headers",
                    json!({"type": "object", "additionalProperties": {"type": "string"}, "description": "response headers"}),
                ),
                ("encoding", encoding()),
            ],
            &["request_id", "status", "body"],
        ),
        "NET_WRITE" | "MEM_SHARED" => object(&[], &[]),
        INFER => object(
            &[
                (
                    "messages",
                    json!({
                        "type": "array",
                        "description": "the conversation",
                        "items": object(
                            &[
                                (
                                    "role",
                                    json!({"type": "string",
                                           "enum": ["system", "user", "assistant", "tool"]}),
                                ),
                                ("content", json!({"type": "string"})),
                            ],
                            &["role", "content"],
                        ),
                    }),
                ),
                (
                    "max_tokens",
                    json!({"type": "integer", "minimum": 0, "maximum": u32::MAX,
                           "description": "most tokens to generate"}),
                ),
                ("temperature", json!({"type": "number", "minimum": 0})),
                (
                    "model",
                    string("another configured model; default: the agent's"),
                ),
            ],
            &["messages"],
        ),
        _ => return None,
    };
    Some(schema)
}

/// The JSON schema of `call`'s arguments object.
pub fn args_schema(call: Call) -> Value {
    specific_schema(call.name()).unwrap_or_else(|| json!({"type": "object"}))
}

/// Whether `call` takes no arguments at all (a bare `[SYS_CALL::GETPID]`
/// is then a complete call).
pub fn takes_no_args(call: Call) -> bool {
    specific_schema(call.name()).is_some_and(|s| {
        s.get("properties")
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
    })
}

/// One line telling the model what `call` does.
pub fn describe(call: Call) -> &'static str {
    match call.name() {
        "GETPID" => "Return your pid and your parent's pid.",
        "SYS_EXIT" => "End yourself with an exit code (0 = success) and an optional reason.",
        "SPAWN_AGENT" => {
            "Start a child agent with a subset of your permissions and limits; returns its pid."
        }
        "WAIT" => "Wait for a child to end; returns its exit code, signal and reason.",
        "KILL" => "Kill a descendant agent.",
        "PS" => "List the agents of your subtree (pid, ppid, name, state).",
        "SEND_MSG" => "Send a text message to another agent by pid.",
        "RECV_MSG" => "Take messages from your inbox, optionally waiting for one.",
        "SYS_WRITE_STDOUT" => {
            "Write text to your output (your pipe_to agent's input, else your log)."
        }
        "SYS_READ_STDIN" => "Read the text piped to you; eof once nothing more can arrive.",
        "SLEEP" => "Sleep for a number of milliseconds.",
        "FS_READ" => "Read a file of your workspace.",
        "FS_WRITE" => {
            "Create or overwrite (or append to) a file of your workspace; parents are created."
        }
        "FS_LIST" => "List a directory of your workspace.",
        "FS_DELETE" => "Delete a file or directory of your workspace.",
        "AGENT_INFO" => "Describe yourself: your pid, name, permissions, limits and usage.",
        INFER => "Run one inference of a language model.",
        "EXEC_CMD" => "Run a shell command in a fresh sandbox (or container) on your workspace.",
        "NET_FETCH" => "Fetch an http(s) URL; private and local addresses are refused.",
        "MEM_WRITE" => "Store a text in semantic memory under a key.",
        "MEM_READ" => "Find the stored texts most similar to a query.",
        "SYS_SCHEDULE" => "Have a prompt delivered to your inbox after some seconds (durable).",
        "SYS_REGISTER_WEBHOOK" => {
            "Own an HTTP path; requests to it arrive in your inbox as events."
        }
        "SYS_WEBHOOK_REPLY" => "Answer a webhook request that arrived in your inbox.",
        "NET_WRITE" | "MEM_SHARED" => "A permission, not a syscall.",
        _ => "A syscall of the AgentOS ABI.",
    }
}

/// A short valid arguments object for `call`, used in corrective messages
/// and examples.
pub fn example_args(call: Call) -> Value {
    match call.name() {
        "SYS_EXIT" => json!({"code": 0}),
        "SPAWN_AGENT" => json!({"name": "helper", "permissions": ["fs"]}),
        "WAIT" => json!({"pid": 2}),
        "KILL" => json!({"pid": 2}),
        "SEND_MSG" => json!({"to": 1, "body": "done"}),
        "RECV_MSG" | "SYS_READ_STDIN" => json!({"wait_ms": 1000}),
        "SYS_WRITE_STDOUT" => json!({"data": "hello"}),
        "SLEEP" => json!({"ms": 1000}),
        "FS_READ" => json!({"path": "/notes.md"}),
        "FS_WRITE" => json!({"path": "/notes.md", "content": "..."}),
        "FS_LIST" => json!({"path": "/"}),
        "FS_DELETE" => json!({"path": "/notes.md"}),
        INFER => json!({"messages": [{"role": "user", "content": "Hello"}]}),
        "EXEC_CMD" => json!({"cmd": "ls -la"}),
        "NET_FETCH" => json!({"url": "https://example.org/"}),
        "MEM_WRITE" => json!({"key": "fact-1", "value": "..."}),
        "MEM_READ" => json!({"query": "what did I learn about X?"}),
        "SYS_SCHEDULE" => json!({"seconds": 60, "prompt": "check the build"}),
        "SYS_REGISTER_WEBHOOK" => json!({"path": "/hooks/build"}),
        "SYS_WEBHOOK_REPLY" => json!({"request_id": "w-1", "status": 200, "body": "ok"}),
        _ => json!({}),
    }
}

/// Whether the model may be offered `call` (everything but LLM_INFER).
pub fn model_facing(call: Call) -> bool {
    call.name() != INFER && !call.is_permission_only()
}

/// The calls offered to a model with the given permissions: the permitted
/// ones and the always-allowed ones, without LLM_INFER, in `Call::ALL`
/// order and without duplicates.
pub fn offered_calls(permitted: &[Call]) -> Vec<Call> {
    Call::ALL
        .into_iter()
        .filter(|c| model_facing(*c) && (c.always_allowed() || permitted.contains(c)))
        .collect()
}

/// Native tool specifications (name, description, arguments schema) for
/// the calls offered with `permitted` (see [`offered_calls`]).
pub fn tool_specs(permitted: &[Call]) -> Vec<(String, String, Value)> {
    offered_calls(permitted)
        .into_iter()
        .map(|c| {
            (
                c.name().to_string(),
                describe(c).to_string(),
                args_schema(c),
            )
        })
        .collect()
}

/// A JSON schema that constrains a whole reply to
/// `{"calls": [{"name": NAME, "arguments": {...}}, ...]}` (at least one
/// call), with one `anyOf` branch per offered call tying its name to its
/// arguments schema. Optional arguments stay optional, so this is meant
/// for servers that enforce arbitrary schemas (llama.cpp, vLLM) or for
/// OpenAI's non-strict mode; see [`response_format`].
pub fn reply_schema(permitted: &[Call]) -> Value {
    let branches: Vec<Value> = offered_calls(permitted)
        .into_iter()
        .map(|c| {
            json!({
                "type": "object",
                "properties": {
                    "name": {"const": c.name()},
                    "arguments": args_schema(c),
                },
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    json!({
        "type": "object",
        "properties": {
            "calls": {
                "type": "array",
                "minItems": 1,
                "items": {"anyOf": branches},
            },
        },
        "required": ["calls"],
        "additionalProperties": false,
    })
}

/// [`reply_schema`] wrapped as an OpenAI-style `response_format` value.
pub fn response_format(permitted: &[Call]) -> Value {
    json!({
        "type": "json_schema",
        "json_schema": {
            "name": "syscalls",
            "strict": false,
            "schema": reply_schema(permitted),
        },
    })
}

/// A llama.cpp GBNF grammar for a whole reply made of one or more lines
/// `[SYS_CALL::NAME] {json object}`, NAME being one of the offered calls
/// (see [`offered_calls`]) and the arguments any JSON object.
pub fn gbnf_grammar(permitted: &[Call]) -> String {
    let names: Vec<String> = offered_calls(permitted)
        .into_iter()
        .map(|c| format!("\"{}\"", c.name()))
        .collect();
    let names = if names.is_empty() {
        // Unreachable while SYS_EXIT is always allowed; keeps the grammar valid.
        "\"SYS_EXIT\"".to_string()
    } else {
        names.join(" | ")
    };
    format!(
        r#"# A reply: one or more syscalls, one per line.
root ::= call ("\n" call)* "\n"?
call ::= "[SYS_CALL::" name "] " object
name ::= {names}

# JSON (RFC 8259), whitespace kept short.
value ::= object | array | string | number | "true" | "false" | "null"
object ::= "{{" ws ( string ws ":" ws value ws ( "," ws string ws ":" ws value ws )* )? "}}"
array ::= "[" ws ( value ws ( "," ws value ws )* )? "]"
string ::= "\"" char* "\""
char ::= [^"\\\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" hex hex hex hex )
hex ::= [0-9a-fA-F]
number ::= "-"? ( "0" | [1-9] [0-9]* ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )?
ws ::= [ \t\n]?
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::calls::{
        ExitArgs, InferArgs, PidArgs, RecvArgs, RecvMsgArgs, SendArgs, SleepArgs, SpawnArgs,
        WaitArgs, WriteStdoutArgs,
    };
    use std::collections::BTreeSet;

    // ---- a validator for the subset of JSON schema emitted above ----------

    fn type_ok(ty: &str, v: &Value) -> bool {
        match ty {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "boolean" => v.is_boolean(),
            "number" => v.is_number(),
            "integer" => v.is_i64() || v.is_u64(),
            "null" => v.is_null(),
            other => panic!("schema uses unsupported type {other}"),
        }
    }

    /// Checks `v` against `schema`; the error names the failing path.
    fn validate(schema: &Value, v: &Value, at: &str) -> Result<(), String> {
        let s = schema
            .as_object()
            .ok_or(format!("{at}: schema not an object"))?;
        for key in s.keys() {
            let known = [
                "type",
                "properties",
                "required",
                "additionalProperties",
                "items",
                "enum",
                "const",
                "minimum",
                "maximum",
                "minItems",
                "anyOf",
                "description",
            ];
            assert!(known.contains(&key.as_str()), "unsupported keyword {key}");
        }
        if let Some(ty) = s.get("type").and_then(Value::as_str) {
            if !type_ok(ty, v) {
                return Err(format!("{at}: expected {ty}, got {v}"));
            }
        }
        if let Some(options) = s.get("enum").and_then(Value::as_array) {
            if !options.contains(v) {
                return Err(format!("{at}: {v} not in {options:?}"));
            }
        }
        if let Some(c) = s.get("const") {
            if c != v {
                return Err(format!("{at}: {v} is not {c}"));
            }
        }
        if let (Some(min), Some(n)) = (s.get("minimum").and_then(Value::as_f64), v.as_f64()) {
            if n < min {
                return Err(format!("{at}: {n} < {min}"));
            }
        }
        if let (Some(max), Some(n)) = (s.get("maximum").and_then(Value::as_f64), v.as_f64()) {
            if n > max {
                return Err(format!("{at}: {n} > {max}"));
            }
        }
        if let Some(branches) = s.get("anyOf").and_then(Value::as_array) {
            if !branches.iter().any(|b| validate(b, v, at).is_ok()) {
                return Err(format!("{at}: matches no anyOf branch"));
            }
        }
        if let Some(arr) = v.as_array() {
            if let Some(min) = s.get("minItems").and_then(Value::as_u64) {
                if (arr.len() as u64) < min {
                    return Err(format!("{at}: fewer than {min} items"));
                }
            }
            if let Some(items) = s.get("items") {
                for (i, item) in arr.iter().enumerate() {
                    validate(items, item, &format!("{at}[{i}]"))?;
                }
            }
        }
        if let Some(obj) = v.as_object() {
            let props = s.get("properties").and_then(Value::as_object);
            for req in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let req = req.as_str().unwrap_or_default();
                if !obj.contains_key(req) {
                    return Err(format!("{at}: missing required {req}"));
                }
            }
            for (k, val) in obj {
                match props.and_then(|p| p.get(k)) {
                    Some(sub) => validate(sub, val, &format!("{at}.{k}"))?,
                    None if s.get("additionalProperties") == Some(&json!(false)) => {
                        return Err(format!("{at}: unknown field {k}"));
                    }
                    None => {}
                }
            }
        }
        Ok(())
    }

    fn call(name: &str) -> Call {
        Call::parse(name).unwrap_or_else(|| panic!("no call {name}"))
    }

    fn valid(name: &str, v: Value) -> Result<(), String> {
        validate(&args_schema(call(name)), &v, name)
    }

    /// Property names of an object schema.
    fn props(schema: &Value) -> BTreeSet<String> {
        schema["properties"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Backticked identifiers (`like_this`) of a text.
    fn backticked(text: &str) -> BTreeSet<String> {
        text.split('`')
            .skip(1)
            .step_by(2)
            .filter(|w| {
                !w.is_empty()
                    && w.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            })
            .map(str::to_string)
            .collect()
    }

    /// The text with parenthesized asides removed (`(\`utf8\`/\`base64\`)`).
    fn without_parens(text: &str) -> String {
        let mut depth = 0usize;
        text.chars()
            .filter(|c| {
                match c {
                    '(' => depth += 1,
                    ')' => depth = depth.saturating_sub(1),
                    _ => return depth == 0,
                }
                false
            })
            .collect()
    }

    const DOC: &str = include_str!("../../docs/SYSCALLS.md");

    // ---- the table ---------------------------------------------------------

    #[test]
    fn every_call_but_llm_infer_has_a_specific_schema() {
        for c in Call::ALL {
            if c.name() == INFER {
                continue;
            }
            assert!(
                specific_schema(c.name()).is_some(),
                "{} has no schema",
                c.name()
            );
            assert_ne!(
                describe(c),
                describe_fallback(),
                "{} has no description",
                c.name()
            );
        }
        assert_eq!(args_schema_by_name("NOT_A_CALL"), json!({"type": "object"}));
    }

    fn describe_fallback() -> &'static str {
        "A syscall of the AgentOS ABI."
    }

    fn args_schema_by_name(name: &str) -> Value {
        specific_schema(name).unwrap_or_else(|| json!({"type": "object"}))
    }

    #[test]
    fn schemas_use_only_the_subset_and_close_their_objects() {
        fn walk(s: &Value, at: &str) {
            let Some(map) = s.as_object() else {
                panic!("{at}: schema is not an object");
            };
            if map.get("type") == Some(&json!("object")) && map.contains_key("properties") {
                assert_eq!(map.get("additionalProperties"), Some(&json!(false)), "{at}");
                let props = map["properties"].as_object().expect("properties object");
                for req in map
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    assert!(
                        props.contains_key(req.as_str().expect("string")),
                        "{at}: {req}"
                    );
                }
                for (k, sub) in props {
                    walk(sub, &format!("{at}.{k}"));
                }
            }
            if let Some(items) = map.get("items") {
                walk(items, &format!("{at}[]"));
            }
            // Exercise the keyword whitelist of the validator.
            let _ = validate(s, &Value::Null, at);
        }
        for c in Call::ALL {
            walk(&args_schema(c), c.name());
        }
    }

    /// Schema fields missing from docs/SYSCALLS.md (none at the moment).
    const UNDOCUMENTED: &[(&str, &str)] = &[];

    #[test]
    fn schema_fields_match_the_docs_tables() {
        let mut seen = 0;
        for line in DOC.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if cells.len() < 4 {
                continue;
            }
            let Some(c) = Call::parse(cells[1]) else {
                continue;
            };
            if c.name() == INFER {
                // Its schema is the model-facing subset (no tools/constraint).
                continue;
            }
            seen += 1;
            let documented = backticked(&without_parens(cells[2]));
            let mut schema = props(&args_schema(c));
            // Fields the daemon accepts (see calls.rs) that the docs do not
            // list yet; remove them here once SYSCALLS.md documents them.
            for (call, field) in UNDOCUMENTED {
                if *call == c.name() {
                    assert!(
                        !documented.contains(*field),
                        "{call}.{field} is documented now: drop it from UNDOCUMENTED"
                    );
                    schema.remove(*field);
                }
            }
            assert_eq!(documented, schema, "{}: docs vs schema", c.name());
            // A field documented without `?` is required.
            let required: BTreeSet<String> = args_schema(c)["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            for field in &documented {
                let optional = cells[2].contains(&format!("`{field}`?"));
                assert_eq!(
                    !optional,
                    required.contains(field),
                    "{}: `{field}` required-ness differs from the docs",
                    c.name()
                );
            }
        }
        assert!(
            seen >= 15,
            "only {seen} call rows found in docs/SYSCALLS.md"
        );
    }

    #[test]
    fn limits_fields_match_the_docs() {
        let start = DOC.find("`limits` fields (").expect("limits paragraph");
        let para = &DOC[start + "`limits` fields (".len()..];
        let para = &para[..para.find(')').expect("closing paren")];
        let schema = args_schema(Call::SPAWN_AGENT);
        assert_eq!(backticked(para), props(&schema["properties"]["limits"]));
    }

    #[test]
    fn fs_schemas_match_the_driver_field_lists() {
        // The FS argument structs are private to the driver; their field
        // lists (`READ_FIELDS`, ...) are read from its source.
        let src = include_str!("../drivers/fs.rs");
        for (list, name) in [
            ("READ_FIELDS", "FS_READ"),
            ("WRITE_FIELDS", "FS_WRITE"),
            ("LIST_FIELDS", "FS_LIST"),
            ("DELETE_FIELDS", "FS_DELETE"),
        ] {
            let start = src
                .find(&format!("const {list}"))
                .unwrap_or_else(|| panic!("{list} not found in drivers/fs.rs"));
            let body = &src[start..];
            let body = &body[..body.find("];").expect("end of list")];
            let fields: BTreeSet<String> = body
                .split("(\"")
                .skip(1)
                .filter_map(|s| s.split('"').next().map(str::to_string))
                .collect();
            assert_eq!(fields, props(&args_schema(call(name))), "{name}");
        }
    }

    #[test]
    fn doc_shaped_examples_validate() {
        let ok = [
            ("GETPID", json!({})),
            ("PS", json!({})),
            ("SYS_EXIT", json!({})),
            ("SYS_EXIT", json!({"code": 3, "reason": "gave up"})),
            ("SYS_EXIT", json!({"code": -1})),
            (
                "SPAWN_AGENT",
                json!({"name": "w", "program": "/usr/bin/python3", "args": ["-c", "1"],
                       "permissions": ["fs", "SEND_MSG"], "pipe_to": 1,
                       "limits": {"memory_bytes": 1_000_000, "pids": 8, "cpu_percent": 50,
                                  "wall_time_s": 60, "workspace_bytes": 1, "max_file_bytes": 1,
                                  "max_read_bytes": 1, "nofile": 64, "syscalls_per_s": 10,
                                  "tmp_bytes": 1}}),
            ),
            ("SPAWN_AGENT", json!({"name": "w"})),
            ("WAIT", json!({"pid": 4, "timeout_ms": 100})),
            ("KILL", json!({"pid": 4})),
            ("SLEEP", json!({"ms": 0})),
            ("SEND_MSG", json!({"to": 1, "body": "hi"})),
            ("RECV_MSG", json!({"wait_ms": 0, "max": 100})),
            ("SYS_WRITE_STDOUT", json!({"data": "x"})),
            ("SYS_READ_STDIN", json!({"wait_ms": 5})),
            (
                "FS_READ",
                json!({"path": "/a.txt", "offset": 0, "max_bytes": 10, "encoding": "base64"}),
            ),
            (
                "FS_WRITE",
                json!({"path": "a.txt", "content": "aGk=", "append": true, "encoding": "base64"}),
            ),
            ("FS_LIST", json!({})),
            ("FS_LIST", json!({"path": "/workspace/sub"})),
            ("FS_DELETE", json!({"path": "/d", "recursive": true})),
        ];
        for (name, args) in ok {
            assert_eq!(valid(name, args.clone()), Ok(()), "{name} {args}");
        }
        for c in Call::ALL {
            assert_eq!(
                valid(c.name(), example_args(c)),
                Ok(()),
                "example of {}",
                c.name()
            );
        }
    }

    #[test]
    fn wrong_types_unknown_fields_and_missing_fields_are_rejected() {
        let bad = [
            ("GETPID", json!({"x": 1})),
            ("SYS_EXIT", json!({"code": "0"})),
            ("SYS_EXIT", json!({"code": 1.5})),
            ("SYS_EXIT", json!({"code": 3_000_000_000_u64})),
            ("SPAWN_AGENT", json!({})),
            ("SPAWN_AGENT", json!({"name": "w", "args": "a b"})),
            ("SPAWN_AGENT", json!({"name": "w", "args": [1]})),
            ("SPAWN_AGENT", json!({"name": "w", "limits": {"memory": 1}})),
            ("SPAWN_AGENT", json!({"name": "w", "limits": {"pids": -1}})),
            ("WAIT", json!({"pid": -2})),
            ("WAIT", json!({"timeout_ms": 5})),
            ("KILL", json!({"pid": "3"})),
            ("SLEEP", json!({"ms": 1, "reason": "x"})),
            ("SEND_MSG", json!({"to": 1})),
            ("SEND_MSG", json!({"to": 1, "body": {"text": "hi"}})),
            ("RECV_MSG", json!({"timeout": 5})),
            ("SYS_WRITE_STDOUT", json!({"text": "x"})),
            ("FS_READ", json!({"file": "/a"})),
            ("FS_READ", json!({"path": "/a", "encoding": "latin1"})),
            ("FS_WRITE", json!({"path": "/a"})),
            (
                "FS_WRITE",
                json!({"path": "/a", "content": "x", "append": "yes"}),
            ),
            ("FS_LIST", json!({"path": 3})),
            ("FS_DELETE", json!({"path": "/a", "force": true})),
            ("FS_DELETE", json!([])),
        ];
        for (name, args) in bad {
            assert!(valid(name, args.clone()).is_err(), "{name} {args} accepted");
        }
    }

    #[test]
    fn llm_infer_schema_is_the_documented_shape() {
        let s = specific_schema(INFER).expect("LLM_INFER schema");
        let ok = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10, "model": "m"});
        assert_eq!(validate(&s, &ok, INFER), Ok(()));
        let bad = json!({"messages": [{"role": "robot", "content": "hi"}]});
        assert!(validate(&s, &bad, INFER).is_err());
        assert!(validate(&s, &json!({"max_tokens": 1}), INFER).is_err());
    }

    // ---- the deserializers accept what the schemas accept ------------------

    /// Deserializes `args` with the daemon's type for `name`; `None` for
    /// calls whose type is not reachable from here.
    fn daemon_accepts(name: &str, args: &Value) -> Option<bool> {
        use serde_json::from_value as de;
        let a = args.clone();
        Some(match name {
            "SYS_EXIT" => de::<ExitArgs>(a).is_ok(),
            "SPAWN_AGENT" => de::<SpawnArgs>(a).is_ok(),
            "WAIT" => de::<WaitArgs>(a).is_ok(),
            "KILL" => de::<PidArgs>(a).is_ok(),
            "SEND_MSG" => de::<SendArgs>(a).is_ok(),
            "RECV_MSG" => de::<RecvMsgArgs>(a).is_ok(),
            "SYS_READ_STDIN" => de::<RecvArgs>(a).is_ok(),
            "SYS_WRITE_STDOUT" => de::<WriteStdoutArgs>(a).is_ok(),
            "SLEEP" => de::<SleepArgs>(a).is_ok(),
            INFER => de::<InferArgs>(a).is_ok(),
            _ => return None,
        })
    }

    #[test]
    fn deserializers_agree_with_the_schemas_on_examples() {
        let cases = [
            ("SEND_MSG", json!({"to": 3, "body": "hello"})),
            ("SEND_MSG", json!({"to": 3})),
            ("SEND_MSG", json!({"to": "3", "body": "x"})),
            ("SEND_MSG", json!({"to": 3, "body": "x", "cc": 4})),
            ("SYS_EXIT", json!({})),
            ("SYS_EXIT", json!({"code": "1"})),
            ("SYS_EXIT", json!({"status": 1})),
            ("WAIT", json!({"pid": 2, "timeout_ms": 10})),
            ("WAIT", json!({"pid": -2})),
            ("KILL", json!({"pid": 2})),
            ("KILL", json!({"pid": 2, "signal": 9})),
            ("SLEEP", json!({"ms": 10})),
            ("SLEEP", json!({"ms": 1.5})),
            ("RECV_MSG", json!({"wait_ms": 10, "max": 5})),
            ("RECV_MSG", json!({"max": -1})),
            ("SYS_READ_STDIN", json!({})),
            ("SYS_WRITE_STDOUT", json!({"data": "x"})),
            ("SYS_WRITE_STDOUT", json!({"data": ["x"]})),
            (
                "SPAWN_AGENT",
                json!({"name": "a", "limits": {"pids": 3}, "args": ["x"]}),
            ),
            ("SPAWN_AGENT", json!({"name": "a", "limits": {"pidz": 3}})),
            ("SPAWN_AGENT", json!({"name": "a", "permissions": "fs"})),
        ];
        for (name, args) in cases {
            let schema_ok = valid(name, args.clone()).is_ok();
            assert_eq!(
                daemon_accepts(name, &args),
                Some(schema_ok),
                "{name} {args}: schema says {schema_ok}"
            );
        }
    }

    use crate::abi::test_rng::Rng;

    /// A random instance of `schema` (optional fields included at random).
    fn instance(schema: &Value, rng: &mut Rng) -> Value {
        if let Some(options) = schema.get("enum").and_then(Value::as_array) {
            return options[rng.below(options.len() as u64) as usize].clone();
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("object") => {
                let required: Vec<&str> = schema["required"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let mut out = Map::new();
                if let Some(props) = schema["properties"].as_object() {
                    for (k, sub) in props {
                        if required.contains(&k.as_str()) || rng.below(2) == 0 {
                            out.insert(k.clone(), instance(sub, rng));
                        }
                    }
                }
                Value::Object(out)
            }
            Some("array") => (0..rng.below(3))
                .map(|_| instance(&schema["items"], rng))
                .collect(),
            Some("string") => json!(["", "x", "/a/b.txt", "{\"}", "é\n"][rng.below(5) as usize]),
            Some("boolean") => json!(rng.below(2) == 0),
            Some("integer") => {
                let min = schema
                    .get("minimum")
                    .and_then(Value::as_i64)
                    .unwrap_or(-1000);
                let max = schema
                    .get("maximum")
                    .and_then(Value::as_i64)
                    .unwrap_or(1 << 40);
                let span = (max - min).clamp(0, 1 << 40) as u64;
                json!(min + rng.below(span + 1) as i64)
            }
            Some("number") => json!(rng.below(200) as f64 / 100.0),
            other => panic!("cannot generate {other:?}"),
        }
    }

    #[test]
    fn deserializers_accept_random_schema_instances() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut checked = 0;
        for c in Call::ALL {
            let schema = args_schema(c);
            for _ in 0..200 {
                let v = instance(&schema, &mut rng);
                assert_eq!(validate(&schema, &v, c.name()), Ok(()), "generator");
                if let Some(ok) = daemon_accepts(c.name(), &v) {
                    assert!(ok, "{} rejects schema-valid {v}", c.name());
                    checked += 1;
                }
            }
        }
        assert!(checked >= 1600, "{checked}");
    }

    // ---- tools, reply schema, grammar --------------------------------------

    #[test]
    fn tool_specs_offer_permitted_and_always_allowed_calls_but_not_llm_infer() {
        let permitted: Vec<Call> = Call::ALL.into_iter().collect();
        let specs = tool_specs(&permitted);
        let names: Vec<&str> = specs.iter().map(|(n, _, _)| n.as_str()).collect();
        assert!(!names.contains(&INFER));
        assert_eq!(
            names.len(),
            Call::ALL.iter().filter(|c| model_facing(**c)).count()
        );
        for (name, description, schema) in &specs {
            assert!(!description.is_empty());
            assert_eq!(schema, &args_schema(call(name)));
        }
        let names: Vec<String> = tool_specs(&[Call::FS_READ, Call::FS_READ])
            .into_iter()
            .map(|(n, _, _)| n)
            .collect();
        assert_eq!(names.iter().filter(|n| *n == "FS_READ").count(), 1);
        assert!(names.contains(&"SYS_EXIT".to_string()));
        assert!(names.contains(&"GETPID".to_string()));
        assert!(!names.contains(&"FS_WRITE".to_string()));
    }

    #[test]
    fn reply_schema_accepts_permitted_calls_and_rejects_others() {
        let s = reply_schema(&[Call::FS_WRITE, Call::SEND_MSG]);
        let ok = json!({"calls": [
            {"name": "FS_WRITE", "arguments": {"path": "/a", "content": "x"}},
            {"name": "SYS_EXIT", "arguments": {"code": 0}},
        ]});
        assert_eq!(validate(&s, &ok, "reply"), Ok(()));
        let cases = [
            json!({"calls": []}),
            json!({"calls": [{"name": "FS_READ", "arguments": {"path": "/a"}}]}),
            json!({"calls": [{"name": "FS_WRITE", "arguments": {"path": "/a"}}]}),
            json!({"calls": [{"name": "FS_WRITE", "arguments": {"path": "/a", "content": "x", "z": 1}}]}),
            json!({"calls": [{"name": "SEND_MSG", "arguments": {"path": "/a", "content": "x"}}]}),
            json!({"calls": [{"name": "SYS_EXIT"}]}),
            json!({"calls": [], "note": "x"}),
            json!([]),
        ];
        for bad in cases {
            assert!(validate(&s, &bad, "reply").is_err(), "{bad} accepted");
        }
        let rf = response_format(&[Call::FS_WRITE]);
        assert_eq!(rf["type"], "json_schema");
        assert_eq!(rf["json_schema"]["schema"], reply_schema(&[Call::FS_WRITE]));
    }

    /// Rule names defined by a grammar, and identifiers its rules use.
    fn rules(grammar: &str) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut defined = BTreeSet::new();
        let mut used = BTreeSet::new();
        for line in grammar.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (lhs, rhs) = line.split_once("::=").expect("every line is a rule");
            defined.insert(lhs.trim().to_string());
            // Drop quoted literals and character classes, keep identifiers.
            let mut rest = String::new();
            let mut chars = rhs.chars();
            while let Some(ch) = chars.next() {
                match ch {
                    '"' | '[' => {
                        let close = if ch == '"' { '"' } else { ']' };
                        while let Some(c2) = chars.next() {
                            if c2 == '\\' {
                                chars.next();
                            } else if c2 == close {
                                break;
                            }
                        }
                        rest.push(' ');
                    }
                    _ => rest.push(ch),
                }
            }
            for word in rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
                if !word.is_empty() {
                    used.insert(word.to_string());
                }
            }
        }
        (defined, used)
    }

    #[test]
    fn grammar_structure() {
        let permitted = [Call::FS_WRITE, Call::FS_READ];
        let g = gbnf_grammar(&permitted);
        let (defined, used) = rules(&g);
        for rule in [
            "root", "call", "name", "object", "value", "string", "number",
        ] {
            assert!(defined.contains(rule), "rule {rule} missing:\n{g}");
        }
        let undefined: Vec<&String> = used.difference(&defined).collect();
        assert!(undefined.is_empty(), "undefined rules {undefined:?}");
        assert!(g.contains(r#"call ::= "[SYS_CALL::" name "] " object"#));
        let name_rule = g
            .lines()
            .find(|l| l.starts_with("name ::="))
            .expect("name rule");
        for c in offered_calls(&permitted) {
            assert!(
                name_rule.contains(&format!("\"{}\"", c.name())),
                "{}",
                c.name()
            );
        }
        for c in Call::ALL {
            let offered = offered_calls(&permitted).contains(&c);
            assert_eq!(
                g.contains(&format!("\"{}\"", c.name())),
                offered,
                "{} offered={offered}",
                c.name()
            );
        }
        // Balanced quotes on every rule line (escapes aside).
        for line in g.lines().filter(|l| !l.starts_with('#')) {
            let unescaped = line.replace("\\\\", "").replace("\\\"", "");
            let in_class = unescaped.split('[').count() - 1;
            let quotes = unescaped.matches('"').count();
            assert!(quotes % 2 == 0 || in_class > 0, "unbalanced quotes: {line}");
        }
    }

    #[test]
    fn no_args_calls() {
        assert!(takes_no_args(Call::GETPID));
        assert!(takes_no_args(Call::PS));
        assert!(!takes_no_args(Call::SYS_EXIT));
        assert!(!takes_no_args(Call::FS_LIST));
        assert!(!takes_no_args(Call::FS_WRITE));
    }
}
