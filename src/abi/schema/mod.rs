//! What models are told about the syscalls, derived from the syscall table
//! ([`crate::abi::calls`]): argument schemas, descriptions and examples, and
//! the constraints that make a model's reply a list of valid syscalls.
//!
//! - [`args_schema`] describes the arguments object of one call exactly as
//!   the daemon accepts it (the subset of [`crate::abi::json_schema`]).
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
//! plus the always-allowed ones (GETPID, SYS_EXIT), minus the calls the
//! table marks as not offered: LLM_INFER and AGENT_INFO (the runtime
//! performs inference and reads its own description itself) and the
//! permission-only names.
//!
//! The built-in runtime works from an [`offer::Offer`] (the offered calls
//! with only the arguments that can work for the agent), constrains
//! replies with [`constraint`] (per-call grammars, `maxItems`) and decodes
//! the model's arguments with [`lenient`].

use super::calls::Call;
use serde_json::{Map, Value, json};

pub mod constraint;
pub mod lenient;
pub mod offer;
#[cfg(test)]
mod tests;

/// The JSON schema of `call`'s arguments object.
pub fn args_schema(call: Call) -> Value {
    (call.info().schema)()
}

/// Whether `call` takes no arguments at all (a bare `[SYS_CALL::GETPID]`
/// is then a complete call).
pub fn takes_no_args(call: Call) -> bool {
    args_schema(call)
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(Map::is_empty)
}

/// One line telling the model what `call` does.
pub fn describe(call: Call) -> &'static str {
    call.info().description
}

/// A short valid arguments object for `call`, used in corrective messages
/// and examples.
pub fn example_args(call: Call) -> Value {
    (call.info().example)()
}

/// Whether the model may be offered `call` (everything but LLM_INFER and
/// the permission-only names).
pub fn model_facing(call: Call) -> bool {
    call.info().offered
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
