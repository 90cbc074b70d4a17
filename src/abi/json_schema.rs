//! Builders for the JSON schemas the syscall table gives each call's
//! arguments: a draft 2020-12 subset (`type`, `properties`, `required`,
//! `additionalProperties: false`, `items`, `enum`, `const`, `minimum`,
//! `maximum`, `anyOf`, `description`) that every provider with tool calling
//! or structured output understands. Objects are closed: a field the daemon
//! does not accept is not in the schema either.

use serde_json::{Map, Value, json};

/// Fields of SPAWN_AGENT's `limits` object ([`crate::abi::limits::LimitsPatch`]).
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
    ("max_turns", "inferences the child may make"),
    ("inbox_bytes", "bytes of messages waiting in the inbox"),
    ("stdin_bytes", "bytes of piped data waiting on stdin"),
    ("log_bytes", "bytes of output stored in the log"),
    (
        "memory_store_bytes",
        "bytes of the private memory collection",
    ),
    (
        "recv_reply_bytes",
        "largest RECV_MSG / SYS_READ_STDIN reply",
    ),
    (
        "reply_bytes_in_flight",
        "reply bytes queued before requests stop being read",
    ),
    (
        "journal_bytes",
        "bytes of journal entries kept about the agent",
    ),
    ("audit_entries", "audit entries kept about the agent"),
    (
        "max_descendants",
        "live agents below the child at any depth",
    ),
    ("max_depth", "levels of agents below the child"),
];

pub fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

pub fn boolean(description: &str) -> Value {
    json!({"type": "boolean", "description": description})
}

/// A non-negative integer (a `u64`/`u32`/`usize` field).
pub fn count(description: &str) -> Value {
    json!({"type": "integer", "minimum": 0, "description": description})
}

/// An array of strings.
pub fn strings(description: &str) -> Value {
    json!({"type": "array", "items": {"type": "string"}, "description": description})
}

/// An object of string values (HTTP headers).
pub fn string_map(description: &str) -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string"}, "description": description})
}

/// The `encoding` field of calls that carry bytes.
pub fn encoding() -> Value {
    json!({
        "type": "string",
        "enum": ["utf8", "base64"],
        "description": "utf8 (default) or base64 for binary content",
    })
}

/// An object schema with the given properties (in order), the required
/// ones, and no other fields.
pub fn object(props: &[(&str, Value)], required: &[&str]) -> Value {
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

/// SPAWN_AGENT's `limits` object: every limit optional.
pub fn limits() -> Value {
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

/// The arguments of a call that takes queued items (`wait_ms`, `max`),
/// with `extra` fields after them.
pub fn take_items(what: &str, extra: &[(&str, Value)]) -> Value {
    let mut props = vec![
        (
            "wait_ms",
            count(&format!(
                "how long to wait for {what} when there is none; 0 (default) returns at once"
            )),
        ),
        ("max", count("most items to return (default 100)")),
    ];
    props.extend(extra.iter().cloned());
    object(&props, &[])
}
