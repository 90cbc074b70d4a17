//! Syscalls written as text in a model's reply.
//!
//! [`parse_reply`] extracts, in order of appearance, any mix of:
//!
//! 1. the text form `[SYS_CALL::FS_WRITE] {"path": "/a.txt", "content": "hi"}`
//!    (names in any case; the object may follow on the next line, in
//!    backticks or a code fence; calls without arguments may omit it);
//! 2. JSON tool calls as models emit them: `{"name", "arguments"}`,
//!    `{"tool"|"call"|"function", "args"|"parameters"|"input"|"params"}`,
//!    `{"function": {"name", "arguments"}}`, `{"functionCall": ...}`,
//!    arrays of those, `{"calls": [...]}` (the shape
//!    [`crate::abi::schema::reply_schema`] constrains replies to) and
//!    `{"tool_calls": [...]}`; `arguments` may be a JSON string holding
//!    the object;
//! 3. either of the above in Markdown code fences or in
//!    `<tool_call>...</tool_call>` tags.
//!
//! Near-misses of the text form are calls too when NAME is a call of the
//! ABI: `[FS_WRITE] {...}`, `[EXEC_CMD::SYS_EXIT] {...}` (the last name
//! counts; `[RESULT::NAME]`, a model echoing a result, does not) and a
//! bare `FS_WRITE {...}` (NAME in capitals, followed by its object).
//!
//! Text between `<think>` and `</think>` (reasoning models) is skipped.
//!
//! Arguments are cut out by balanced-bracket scanning that respects JSON
//! strings, so braces, brackets and marker text inside strings are content.
//! Strict JSON is tried first; failing that, a repair escapes raw control
//! characters inside strings (models write raw newlines), fixes invalid
//! escapes and drops trailing commas. JSON in the text that is not shaped
//! like a call (a file's content quoted in prose) is ignored; JSON inside
//! a call is never counted again.
//!
//! Everything that looks meant as a call but cannot be executed becomes a
//! *problem*: a short sentence addressed to the model. [`corrective_message`]
//! turns problems into the message the runtime puts back into the context,
//! and [`render_call`] writes a call in the canonical text form.
//!
//! The parser is in `parse.rs` (markers, JSON tool calls, tags) and
//! `json.rs` (bracket scanning and the repair of near-JSON).

mod json;
mod parse;
#[cfg(test)]
mod tests;

use crate::abi::calls::Call;
use crate::abi::schema;
use serde_json::Value;

/// One call found in a reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedCall {
    /// Canonical SCREAMING_CASE name, e.g. `FS_WRITE`.
    pub name: String,
    /// The arguments; always a JSON object.
    pub args: Value,
}

/// Everything found in a reply: the calls in order, and what could not
/// be used (each a corrective sentence for the model).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedReply {
    pub calls: Vec<ParsedCall>,
    pub problems: Vec<String>,
    /// How many of `calls` come before the first problem (None: no
    /// problem). A reply stops at its first failure, so only those run.
    pub first_problem_at: Option<usize>,
}

/// The syntax a model is asked to write calls in; examples in corrective
/// sentences are shown in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Syntax {
    /// `[SYS_CALL::NAME] {json}` (free text and the grammar).
    #[default]
    Text,
    /// `{"calls": [{"name": NAME, "arguments": {...}}]}` (json_schema).
    CallList,
    /// `{"name": NAME, "arguments": {...}}` (native tools; small models
    /// write this in their text).
    ToolCall,
}

impl Syntax {
    /// One call written in this syntax.
    pub fn render(self, name: &str, args: &Value) -> String {
        let name = canonical_name(name);
        let args = inline_json(args);
        match self {
            Syntax::Text => format!("[SYS_CALL::{name}] {args}"),
            Syntax::CallList => {
                format!("{{\"calls\": [{{\"name\": \"{name}\", \"arguments\": {args}}}]}}")
            }
            Syntax::ToolCall => format!("{{\"name\": \"{name}\", \"arguments\": {args}}}"),
        }
    }
}

/// The canonical example the corrective message shows.
const FS_WRITE_EXAMPLE: &str = r#"[SYS_CALL::FS_WRITE] {"path": "/notes.md", "content": "..."}"#;
const EXIT_EXAMPLE: &str = r#"[SYS_CALL::SYS_EXIT] {"code": 0}"#;

/// A sentence addressed to the model saying why something it wrote cannot
/// be executed.
type Problem = String;

/// Parses a reply, accepting every syscall name of the ABI.
pub fn parse_reply(text: &str) -> ParsedReply {
    let names: Vec<&str> = Call::ALL.iter().map(|c| c.name()).collect();
    parse_reply_with(text, &names)
}

/// Parses a reply, accepting only the calls named in `known` (a call of
/// the ABI that is not in `known` is reported as not permitted).
pub fn parse_reply_with(text: &str, known: &[&str]) -> ParsedReply {
    parse::Parser::new(text, known, Syntax::Text).run()
}

/// Like [`parse_reply_with`], with examples in corrective sentences shown
/// in `syntax`.
pub fn parse_reply_as(text: &str, known: &[&str], syntax: Syntax) -> ParsedReply {
    parse::Parser::new(text, known, syntax).run()
}

/// The canonical text form of a call: `[SYS_CALL::NAME] {"key": value}`.
pub fn render_call(name: &str, args: &Value) -> String {
    Syntax::Text.render(name, args)
}

/// The message the runtime puts into the context after a reply whose
/// calls could not be executed (or, with no problems, held no call).
/// `permitted` lists the names the model may call.
pub fn corrective_message(problems: &[String], permitted: &[&str]) -> String {
    const SHOWN: usize = 5;
    let mut out = String::new();
    if problems.is_empty() {
        out.push_str("Your last reply contained no syscall, so nothing was executed. ");
    } else {
        out.push_str("Your last reply could not be executed: ");
        for p in problems.iter().take(SHOWN) {
            out.push_str(p.trim());
            if !p.trim_end().ends_with(['.', '!', '?']) {
                out.push('.');
            }
            out.push(' ');
        }
        if problems.len() > SHOWN {
            out.push_str(&format!("({} more problems.) ", problems.len() - SHOWN));
        }
    }
    out.push_str(
        "Reply with one or more lines of the form [SYS_CALL::NAME] {json arguments}, e.g. ",
    );
    out.push_str(&example_for(permitted));
    out.push_str(". ");
    if !permitted.is_empty() {
        out.push_str(&format!("Available calls: {}. ", permitted.join(", ")));
    }
    out.push_str("To finish, use ");
    out.push_str(EXIT_EXAMPLE);
    out.push('.');
    out
}

/// An example line with a call from `permitted` (FS_WRITE when possible).
fn example_for(permitted: &[&str]) -> String {
    let has = |name: &str| permitted.iter().any(|p| p.eq_ignore_ascii_case(name));
    if permitted.is_empty() || has("FS_WRITE") {
        return FS_WRITE_EXAMPLE.to_string();
    }
    permitted
        .iter()
        .filter_map(|p| Call::parse(&canonical_name(p)))
        .find(|c| !c.always_allowed() && schema::model_facing(*c))
        .or_else(|| {
            permitted
                .iter()
                .find_map(|p| Call::parse(&canonical_name(p)))
        })
        .map(|c| render_call(c.name(), &schema::example_args(c)))
        .unwrap_or_else(|| FS_WRITE_EXAMPLE.to_string())
}

/// JSON on one line with a space after `:` and `,`, as people write it.
pub fn inline_json(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                out.push('{');
                for (i, (k, val)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push_str(": ");
                    write(val, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// `fsWrite`, `fs_write`, `fs-write`, `functions.fs_write` → `FS_WRITE`.
pub fn canonical_name(raw: &str) -> String {
    let raw = raw.trim();
    let raw = raw.rsplit('.').next().unwrap_or(raw);
    let mut out = String::with_capacity(raw.len() + 4);
    let mut prev: Option<char> = None;
    for c in raw.chars() {
        if c.is_ascii_uppercase()
            && prev.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit())
        {
            out.push('_');
        }
        match c {
            '-' | ' ' => out.push('_'),
            c => out.push(c.to_ascii_uppercase()),
        }
        prev = Some(c);
    }
    out
}

/// A name compared without underscores (`GETPID` = `GET_PID`).
fn squashed(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_')
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Finds `canon` among `names`: exactly, else ignoring underscores.
fn lookup<'a>(names: impl Iterator<Item = &'a str> + Clone, canon: &str) -> Option<&'a str> {
    names
        .clone()
        .find(|n| n.eq_ignore_ascii_case(canon))
        .or_else(|| {
            let s = squashed(canon);
            names.into_iter().find(|n| squashed(n) == s)
        })
}

/// At most `max` characters of `s` on one line, for echoing in problems.
pub fn clip(s: &str, max: usize) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match one_line.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &one_line[..i]),
        None => one_line,
    }
}
