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

use super::calls::Call;
use super::schema;
use serde_json::{Map, Value};

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
}

/// The canonical example the corrective message shows.
const FS_WRITE_EXAMPLE: &str = r#"[SYS_CALL::FS_WRITE] {"path": "/notes.md", "content": "..."}"#;
const EXIT_EXAMPLE: &str = r#"[SYS_CALL::SYS_EXIT] {"code": 0}"#;

/// Keys that name the called tool in a JSON tool call.
const NAME_KEYS: &[&str] = &["name", "tool", "tool_name", "call", "function", "syscall"];
/// Keys that hold its arguments.
const ARGS_KEYS: &[&str] = &["arguments", "args", "parameters", "params", "input"];
/// Other keys a JSON tool call may carry (ids, provider type tags).
const META_KEYS: &[&str] = &["id", "type", "index", "call_id"];
/// Keys of objects that wrap one call.
const WRAPPER_KEYS: &[&str] = &["function", "function_call", "functionCall"];
/// Keys of objects that hold a list of calls.
const LIST_KEYS: &[&str] = &["calls", "tool_calls"];

const OPEN_TAG: &str = "<tool_call>";
/// Reasoning models think between these; nothing in there is a call.
const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";
const CLOSE_TAG: &str = "</tool_call>";
const MARKER_WORD: &[u8] = b"sys_call";

/// Parses a reply, accepting every syscall name of the ABI.
pub fn parse_reply(text: &str) -> ParsedReply {
    let names: Vec<&str> = Call::ALL.iter().map(|c| c.name()).collect();
    parse_reply_with(text, &names)
}

/// Parses a reply, accepting only the calls named in `known` (a call of
/// the ABI that is not in `known` is reported as not permitted).
pub fn parse_reply_with(text: &str, known: &[&str]) -> ParsedReply {
    let mut parser = Parser {
        text,
        b: text.as_bytes(),
        known,
        out: ParsedReply::default(),
        // Failed scans of JSON-looking text in prose may cost this much in
        // total; beyond it, prose is no longer searched for JSON calls.
        budget: text.len().saturating_mul(32).saturating_add(1 << 16),
        quiet_until: 0,
    };
    parser.segment(0, text.len(), false);
    parser.out
}

/// The canonical text form of a call: `[SYS_CALL::NAME] {"key": value}`.
pub fn render_call(name: &str, args: &Value) -> String {
    format!("[SYS_CALL::{}] {}", canonical_name(name), inline_json(args))
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
fn inline_json(v: &Value) -> String {
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
fn canonical_name(raw: &str) -> String {
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
fn clip(s: &str, max: usize) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match one_line.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &one_line[..i]),
        None => one_line,
    }
}

/// Parses JSON strictly, then after [`repair`]. The error is serde's
/// complaint about the original text.
fn parse_json_lenient(raw: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(raw) {
        Ok(v) => Ok(v),
        Err(e) => {
            let fixed = repair(raw);
            if fixed != raw {
                if let Ok(v) = serde_json::from_str::<Value>(&fixed) {
                    return Ok(v);
                }
            }
            Err(e.to_string())
        }
    }
}

/// Fixes what models get wrong in JSON: raw control characters inside
/// strings are escaped, invalid escapes (`\'`, `\d`) become what was meant,
/// and trailing commas before `}` or `]` are dropped.
fn repair(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    let mut out = String::with_capacity(raw.len() + 16);
    let mut in_str = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if in_str {
            match c {
                '"' => {
                    in_str = false;
                    out.push(c);
                }
                '\\' => {
                    let next = chars.get(i + 1).copied();
                    let hex4 = chars
                        .get(i + 2..i + 6)
                        .is_some_and(|h| h.iter().all(char::is_ascii_hexdigit));
                    match next {
                        Some('"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't') => {
                            out.push('\\');
                            if let Some(n) = next {
                                out.push(n);
                            }
                            i += 1;
                        }
                        Some('u') if hex4 => {
                            out.push('\\');
                            out.push('u');
                            i += 1;
                        }
                        Some('\'') => {
                            out.push('\'');
                            i += 1;
                        }
                        // A lone backslash (a Windows path, a regex): literal.
                        _ => out.push_str("\\\\"),
                    }
                }
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        } else {
            match c {
                '"' => {
                    in_str = true;
                    out.push(c);
                }
                ',' => {
                    let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
                    if !matches!(next, Some('}' | ']')) {
                        out.push(c);
                    }
                }
                c => out.push(c),
            }
        }
        i += 1;
    }
    out
}

/// Index of the bracket closing the one at `start`, scanning up to `end`
/// and skipping JSON strings. When unclosed or mismatched, the error is
/// where the scan stopped.
fn scan_balanced(b: &[u8], start: usize, end: usize) -> Result<usize, usize> {
    let mut stack: Vec<u8> = Vec::new();
    let mut in_str = false;
    let mut escaped = false;
    for (k, &c) in b.iter().enumerate().take(end).skip(start) {
        if in_str {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_str = false;
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'{' => stack.push(b'}'),
            b'[' => stack.push(b']'),
            b'}' | b']' => {
                if stack.pop() != Some(c) {
                    return Err(k);
                }
                if stack.is_empty() {
                    return Ok(k);
                }
            }
            _ => {}
        }
    }
    Err(end)
}

fn skip_ws(b: &[u8], mut i: usize, end: usize) -> usize {
    while i < end && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

fn starts_with_ci(b: &[u8], i: usize, end: usize, pat: &[u8]) -> bool {
    i + pat.len() <= end && b[i..i + pat.len()].eq_ignore_ascii_case(pat)
}

fn find_ci(b: &[u8], from: usize, end: usize, pat: &[u8]) -> Option<usize> {
    (from..end).find(|&i| starts_with_ci(b, i, end, pat))
}

/// What a `[SYS_CALL` at some position turned out to be.
enum Marker {
    /// `[SYS_CALL::NAME]`: the name's range, and the index after `]`.
    Call(usize, usize, usize),
    /// `[SYS_CALL` followed by something else; the index after `[SYS_CALL`.
    Malformed(usize),
    /// Not a marker at all.
    No,
}

/// Reads `[ SYS_CALL :: NAME ]` (spaces optional, one or two colons).
fn read_marker(b: &[u8], i: usize, end: usize) -> Marker {
    let mut j = i + 1;
    while j < end && b[j] == b' ' {
        j += 1;
    }
    if !starts_with_ci(b, j, end, MARKER_WORD) {
        return Marker::No;
    }
    j += MARKER_WORD.len();
    let after_word = j;
    while j < end && b[j] == b' ' {
        j += 1;
    }
    let colons_at = j;
    while j < end && b[j] == b':' {
        j += 1;
    }
    if !(1..=2).contains(&(j - colons_at)) {
        return Marker::Malformed(after_word);
    }
    while j < end && b[j] == b' ' {
        j += 1;
    }
    let name_start = j;
    while j < end && (b[j].is_ascii_alphanumeric() || matches!(b[j], b'_' | b'-' | b'.')) {
        j += 1;
    }
    let name_end = j;
    while j < end && b[j] == b' ' {
        j += 1;
    }
    if name_end == name_start || j >= end || b[j] != b']' {
        return Marker::Malformed(after_word);
    }
    Marker::Call(name_start, name_end, j + 1)
}

struct Parser<'a> {
    text: &'a str,
    b: &'a [u8],
    known: &'a [&'a str],
    out: ParsedReply,
    budget: usize,
    /// Broken JSON calls starting before this index are not reported
    /// again (they lie inside one already reported).
    quiet_until: usize,
}

impl Parser<'_> {
    fn problem(&mut self, p: String) {
        self.out.problems.push(p);
    }

    fn call(&mut self, name: String, args: Map<String, Value>) {
        self.out.calls.push(ParsedCall {
            name,
            args: Value::Object(args),
        });
    }

    /// Resolves a name the model wrote to a known canonical name, or says
    /// what is wrong with it.
    fn resolve(&self, raw: &str) -> Result<String, String> {
        let canon = canonical_name(raw);
        if let Some(k) = lookup(self.known.iter().copied(), &canon) {
            return Ok(canonical_name(k));
        }
        let valid = self.known.join(", ");
        if let Some(c) = lookup(Call::ALL.iter().map(|c| c.name()), &canon) {
            return Err(format!(
                "syscall {c} is not permitted to you; use one of: {valid}"
            ));
        }
        Err(format!(
            "unknown syscall {}; use one of: {valid}",
            clip(raw.trim(), 40)
        ))
    }

    /// The example line for a resolved name (the call's own example
    /// arguments), for corrective sentences.
    fn example(name: &str) -> String {
        match Call::parse(name) {
            Some(c) => render_call(name, &schema::example_args(c)),
            None => format!("[SYS_CALL::{name}] {{...}}"),
        }
    }

    /// Scans `[start, end)`. Inside a `<tool_call>` block (`strict`), JSON
    /// that is broken or not a call is a problem rather than prose.
    fn segment(&mut self, start: usize, end: usize, strict: bool) {
        let mut i = start;
        while i < end {
            let c = self.b[i];
            if c == b'[' {
                match read_marker(self.b, i, end) {
                    Marker::Call(ns, ne, after) => {
                        i = self.marker(ns, ne, after, end);
                        continue;
                    }
                    Marker::Malformed(after) => {
                        let shown = clip(&self.text[i..after.max(i)], 40);
                        self.problem(format!(
                            "malformed marker {shown}...; write [SYS_CALL::NAME] followed by a JSON object of arguments"
                        ));
                        i = after;
                        continue;
                    }
                    Marker::No => {}
                }
            }
            if c == b'<' && !strict && starts_with_ci(self.b, i, end, OPEN_TAG.as_bytes()) {
                i = self.tool_block(i, end);
                continue;
            }
            if c == b'<' && !strict && starts_with_ci(self.b, i, end, THINK_OPEN.as_bytes()) {
                i = find_ci(self.b, i, end, THINK_CLOSE.as_bytes())
                    .map_or(end, |k| k + THINK_CLOSE.len());
                continue;
            }
            if (c == b'{' || c == b'[') && (strict || self.looks_like_json(i, end)) {
                i = self.json_candidate(i, end, strict);
                continue;
            }
            i += 1;
        }
    }

    /// `{` followed by a key, or `[` followed by an object: worth a scan.
    fn looks_like_json(&self, i: usize, end: usize) -> bool {
        if self.budget == 0 {
            return false;
        }
        let j = skip_ws(self.b, i + 1, end);
        j < end
            && match self.b[i] {
                b'{' => self.b[j] == b'"',
                _ => self.b[j] == b'{',
            }
    }

    /// Handles a marker whose name spans `[ns, ne)` and that ends at
    /// `after`; returns where scanning resumes.
    fn marker(&mut self, ns: usize, ne: usize, after: usize, end: usize) -> usize {
        let raw_name = &self.text[ns..ne];
        let resolved = self.resolve(raw_name);
        let shown = match &resolved {
            Ok(n) => n.clone(),
            Err(_) => clip(raw_name, 40),
        };
        // The object may sit in backticks, a code fence or parentheses.
        let mut j = skip_ws(self.b, after, end);
        let mut closers: Vec<u8> = Vec::new();
        if j < end && self.b[j] == b'(' {
            closers.push(b')');
            j = skip_ws(self.b, j + 1, end);
        }
        let ticks_at = j;
        while j < end && self.b[j] == b'`' {
            j += 1;
        }
        let ticks = j - ticks_at;
        if ticks > 0 {
            if ticks >= 3 {
                // A fence's language tag, e.g. ```json
                while j < end && self.b[j].is_ascii_alphanumeric() {
                    j += 1;
                }
            }
            j = skip_ws(self.b, j, end);
        }
        if j >= end || self.b[j] != b'{' {
            match resolved {
                Ok(name) => match Call::parse(&name) {
                    Some(c) if schema::takes_no_args(c) => self.call(name, Map::new()),
                    _ => self.problem(format!(
                        "[SYS_CALL::{name}] must be followed by a JSON object of arguments on the same line, e.g. {}",
                        Self::example(&name)
                    )),
                },
                Err(p) => self.problem(p),
            }
            return after;
        }
        if self.budget == 0 {
            self.problem(
                "the rest of the reply was not read: too much of it is malformed JSON".to_string(),
            );
            return end;
        }
        let close = match scan_balanced(self.b, j, end) {
            Ok(close) => close,
            Err(stopped) => {
                self.budget = self.budget.saturating_sub(stopped - j);
                self.problem(format!(
                "the JSON object after [SYS_CALL::{shown}] is never closed (unbalanced braces or an unescaped quote in a string); expected e.g. {}",
                Self::example(&shown)
            ));
                // Resume at the next marker: the rest of this one is unusable.
                return find_ci(self.b, after, end, b"[sys_call").unwrap_or(end);
            }
        };
        match (parse_json_lenient(&self.text[j..=close]), resolved) {
            (Ok(Value::Object(args)), Ok(name)) => self.call(name, args),
            (Ok(_), Ok(name)) => self.problem(format!(
                "the arguments of [SYS_CALL::{name}] must be a JSON object"
            )),
            (Err(e), Ok(name)) => self.problem(format!(
                "invalid JSON after [SYS_CALL::{name}] ({}); expected e.g. {}",
                clip(&e, 80),
                Self::example(&name)
            )),
            (_, Err(p)) => self.problem(p),
        }
        let mut k = close + 1;
        if ticks > 0 {
            let t = skip_ws(self.b, k, end);
            let mut n = 0;
            while t + n < end && self.b[t + n] == b'`' && n < ticks {
                n += 1;
            }
            if n == ticks {
                k = t + n;
            }
        }
        for closer in closers {
            let t = skip_ws(self.b, k, end);
            if t < end && self.b[t] == closer {
                k = t + 1;
            }
        }
        k
    }

    /// `<tool_call>...</tool_call>` (the closing tag may be missing).
    fn tool_block(&mut self, i: usize, end: usize) -> usize {
        let inner_start = i + OPEN_TAG.len();
        let (inner_end, resume) = match find_ci(self.b, inner_start, end, CLOSE_TAG.as_bytes()) {
            Some(k) => (k, k + CLOSE_TAG.len()),
            None => (end, end),
        };
        let before = (self.out.calls.len(), self.out.problems.len());
        self.segment(inner_start, inner_end, true);
        if (self.out.calls.len(), self.out.problems.len()) == before {
            self.problem(
                r#"a <tool_call> block held no call; write <tool_call>{"name": "FS_WRITE", "arguments": {"path": "/notes.md", "content": "..."}}</tool_call>"#
                    .to_string(),
            );
        }
        resume
    }

    /// JSON at `i` in prose (or in a tool block when `strict`).
    fn json_candidate(&mut self, i: usize, end: usize, strict: bool) -> usize {
        let scanned = scan_balanced(self.b, i, end);
        let closed = scanned.ok();
        let parsed = closed.map(|close| parse_json_lenient(&self.text[i..=close]));
        match (closed, parsed) {
            (Some(close), Some(Ok(v))) => {
                match self.calls_in(&v) {
                    Some(found) => {
                        for item in found {
                            match item {
                                Ok((name, args)) => self.call(name, args),
                                Err(p) => self.problem(p),
                            }
                        }
                    }
                    None if strict => self.problem(format!(
                        "the JSON in a <tool_call> block is not a call ({}); expected {{\"name\": ..., \"arguments\": {{...}}}}",
                        clip(&v.to_string(), 60)
                    )),
                    None => {}
                }
                close + 1
            }
            (closed, parsed) => {
                let stop = closed.map_or(end, |c| c + 1);
                if !strict {
                    let scan_end = match scanned {
                        Ok(c) => c,
                        Err(stopped) => stopped,
                    };
                    self.budget = self.budget.saturating_sub(scan_end - i + 1);
                }
                let why = match parsed {
                    Some(Err(e)) => clip(&e, 80),
                    _ => "unbalanced brackets".to_string(),
                };
                if strict {
                    self.problem(format!(
                        "invalid JSON in a <tool_call> block ({why}); expected {{\"name\": ..., \"arguments\": {{...}}}}"
                    ));
                    return stop;
                }
                if i >= self.quiet_until && self.first_key_is_call_key(i, end) {
                    self.problem(format!(
                        "a JSON tool call is invalid ({why}); write {FS_WRITE_EXAMPLE} instead"
                    ));
                    self.quiet_until = stop;
                }
                i + 1
            }
        }
    }

    /// Whether the object at `i` starts with a key that only tool calls use.
    fn first_key_is_call_key(&self, i: usize, end: usize) -> bool {
        if self.b[i] != b'{' {
            return false;
        }
        let j = skip_ws(self.b, i + 1, end);
        let Some(close) = (j + 1..end).find(|&k| self.b[k] == b'"') else {
            return false;
        };
        let key = &self.text[j + 1..close];
        NAME_KEYS.contains(&key) || WRAPPER_KEYS.contains(&key) || LIST_KEYS.contains(&key)
    }

    /// The calls a JSON value holds, or `None` when it is not call-shaped.
    fn calls_in(&self, v: &Value) -> Option<Vec<CallResult>> {
        match v {
            Value::Array(items) if !items.is_empty() => {
                items.iter().map(|item| self.one_call(item)).collect()
            }
            Value::Object(map) => {
                if let Some(list) = LIST_KEYS
                    .iter()
                    .find_map(|k| map.get(*k).and_then(Value::as_array))
                {
                    return list.iter().map(|item| self.one_call(item)).collect();
                }
                self.one_call(v).map(|r| vec![r])
            }
            _ => None,
        }
    }

    /// One call-shaped object, or `None`.
    fn one_call(&self, v: &Value) -> Option<CallResult> {
        let map = v.as_object()?;
        for wrapper in WRAPPER_KEYS {
            if let Some(inner @ Value::Object(_)) = map.get(*wrapper) {
                if map
                    .keys()
                    .all(|k| k == wrapper || META_KEYS.contains(&k.as_str()))
                {
                    return self.one_call(inner);
                }
                return None;
            }
        }
        let (name_key, name) = NAME_KEYS
            .iter()
            .find_map(|k| map.get(*k).and_then(Value::as_str).map(|n| (*k, n)))?;
        let args_key = ARGS_KEYS.iter().find(|k| map.contains_key(**k)).copied();
        let only_call_keys = map.keys().all(|k| {
            k == name_key || Some(k.as_str()) == args_key || META_KEYS.contains(&k.as_str())
        });
        if !only_call_keys {
            return None;
        }
        let resolved = self.resolve(name);
        if args_key.is_none() && resolved.is_err() {
            // `{"name": "Alice"}` in prose is not a call.
            return None;
        }
        let name = match resolved {
            Ok(n) => n,
            Err(p) => return Some(Err(p)),
        };
        let args = match args_key.and_then(|k| map.get(k)) {
            None | Some(Value::Null) => Ok(Map::new()),
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(Map::new()),
            Some(Value::String(s)) => match parse_json_lenient(s) {
                Ok(Value::Object(m)) => Ok(m),
                Ok(_) => Err(format!(
                    "the arguments of {name} must be a JSON object, e.g. {}",
                    Self::example(&name)
                )),
                Err(e) => Err(format!(
                    "the arguments string of {name} is not valid JSON ({}); expected e.g. {}",
                    clip(&e, 80),
                    Self::example(&name)
                )),
            },
            Some(_) => Err(format!(
                "the arguments of {name} must be a JSON object, e.g. {}",
                Self::example(&name)
            )),
        };
        Some(args.map(|a| (name, a)))
    }
}

/// A call found in JSON (name, arguments), or a problem.
type CallResult = Result<(String, Map<String, Value>), String>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn calls(text: &str) -> Vec<(String, Value)> {
        let r = parse_reply(text);
        assert!(
            r.problems.is_empty(),
            "unexpected problems {:?}",
            r.problems
        );
        r.calls.into_iter().map(|c| (c.name, c.args)).collect()
    }

    fn one(text: &str) -> (String, Value) {
        let mut all = calls(text);
        assert_eq!(all.len(), 1, "expected one call in {text:?}: {all:?}");
        all.remove(0)
    }

    // ---- the text form -----------------------------------------------------

    #[test]
    fn single_text_call() {
        let (name, args) = one(r#"[SYS_CALL::FS_WRITE] {"path": "/a.txt", "content": "hi"}"#);
        assert_eq!(name, "FS_WRITE");
        assert_eq!(args, json!({"path": "/a.txt", "content": "hi"}));
    }

    #[test]
    fn several_text_calls_with_prose_between() {
        let text = "I will write the file first.\n\
            [SYS_CALL::FS_WRITE] {\"path\": \"/a.txt\", \"content\": \"hi\"}\n\
            Then tell my parent.\n\
            [SYS_CALL::SEND_MSG]\n  {\"to\": 1, \"body\": \"done\"}\n\
            [SYS_CALL::SYS_EXIT] {\"code\": 0}\nThat is all.";
        let got = calls(text);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["FS_WRITE", "SEND_MSG", "SYS_EXIT"]);
        assert_eq!(got[1].1, json!({"to": 1, "body": "done"}));
        assert_eq!(got[2].1, json!({"code": 0}));
    }

    #[test]
    fn braces_brackets_and_markers_inside_strings_are_content() {
        let text = r#"[SYS_CALL::FS_WRITE] {"path": "/x.rs", "content": "fn f() { let a = [1, 2]; } } ] { [SYS_CALL::KILL] {\"pid\": 1}"} trailing"#;
        let (name, args) = one(text);
        assert_eq!(name, "FS_WRITE");
        assert_eq!(
            args["content"],
            r#"fn f() { let a = [1, 2]; } } ] { [SYS_CALL::KILL] {"pid": 1}"#
        );
    }

    #[test]
    fn escaped_quotes_and_backslashes() {
        let text = r#"[SYS_CALL::FS_WRITE] {"path": "/q", "content": "say \"hi\" \\ \\\" }"}"#;
        let (_, args) = one(text);
        assert_eq!(args["content"], r#"say "hi" \ \" }"#);
    }

    #[test]
    fn raw_newlines_and_tabs_inside_strings_are_repaired() {
        let text = "[SYS_CALL::FS_WRITE] {\"path\": \"/p.py\", \"content\": \"def f():\n\treturn {1: 2}\n\"}\n[SYS_CALL::GETPID]";
        let got = calls(text);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1["content"], "def f():\n\treturn {1: 2}\n");
        assert_eq!(got[1], ("GETPID".to_string(), json!({})));
    }

    #[test]
    fn repair_fixes_invalid_escapes_and_trailing_commas() {
        let text = r#"[SYS_CALL::FS_WRITE] {"path": "C:\dir", "content": "it\'s",}"#;
        let (_, args) = one(text);
        assert_eq!(args, json!({"path": "C:\\dir", "content": "it's"}));
    }

    #[test]
    fn nested_objects_and_arrays() {
        let text = r#"[SYS_CALL::SPAWN_AGENT] {"name": "w", "args": ["-c", "print({})"], "limits": {"pids": 4, "memory_bytes": 1000}, "permissions": ["fs"]}"#;
        let (name, args) = one(text);
        assert_eq!(name, "SPAWN_AGENT");
        assert_eq!(args["limits"], json!({"pids": 4, "memory_bytes": 1000}));
        assert_eq!(args["args"], json!(["-c", "print({})"]));
    }

    #[test]
    fn lowercase_and_mixed_case_names() {
        for text in [
            r#"[sys_call::fs_write] {"path": "/a", "content": ""}"#,
            r#"[SYS_CALL::fs_write] {"path": "/a", "content": ""}"#,
            r#"[Sys_Call::Fs_Write] {"path": "/a", "content": ""}"#,
            r#"[SYS_CALL::fsWrite] {"path": "/a", "content": ""}"#,
            r#"[ SYS_CALL :: FS_WRITE ] {"path": "/a", "content": ""}"#,
            r#"[SYS_CALL:FS_WRITE] {"path": "/a", "content": ""}"#,
        ] {
            assert_eq!(one(text).0, "FS_WRITE", "{text}");
        }
        assert_eq!(one("[SYS_CALL::GetPid]").0, "GETPID");
    }

    #[test]
    fn object_in_backticks_fence_or_parentheses() {
        let fenced = "[SYS_CALL::FS_READ]\n```json\n{\"path\": \"/a\"}\n```\nok";
        assert_eq!(one(fenced), ("FS_READ".to_string(), json!({"path": "/a"})));
        let ticked = "`[SYS_CALL::FS_READ] {\"path\": \"/b\"}`";
        assert_eq!(one(ticked).1, json!({"path": "/b"}));
        let inline = "[SYS_CALL::FS_READ] `{\"path\": \"/c\"}` then";
        assert_eq!(one(inline).1, json!({"path": "/c"}));
        let paren = "[SYS_CALL::FS_READ]({\"path\": \"/d\"})";
        assert_eq!(one(paren).1, json!({"path": "/d"}));
    }

    #[test]
    fn no_args_calls_may_omit_the_object_but_others_may_not() {
        assert_eq!(
            calls("[SYS_CALL::GETPID]\n[SYS_CALL::PS]"),
            [
                ("GETPID".to_string(), json!({})),
                ("PS".to_string(), json!({}))
            ]
        );
        let r = parse_reply("When I am done I will call [SYS_CALL::SYS_EXIT].");
        assert!(r.calls.is_empty());
        assert_eq!(r.problems.len(), 1);
        assert!(r.problems[0].contains("[SYS_CALL::SYS_EXIT] must be followed by a JSON object"));
        assert!(
            r.problems[0].contains(r#"{"code": 0}"#),
            "{}",
            r.problems[0]
        );
    }

    #[test]
    fn trailing_prose_after_the_object_is_ignored() {
        let (_, args) =
            one("[SYS_CALL::SLEEP] {\"ms\": 5} and then I will think about {braces} more.");
        assert_eq!(args, json!({"ms": 5}));
    }

    #[test]
    fn invalid_json_after_a_marker_is_a_corrective_problem() {
        let r = parse_reply(r#"[SYS_CALL::FS_WRITE] {"path": "/a", content: "x"}"#);
        assert!(r.calls.is_empty());
        assert_eq!(r.problems.len(), 1);
        let p = &r.problems[0];
        assert!(
            p.starts_with("invalid JSON after [SYS_CALL::FS_WRITE]"),
            "{p}"
        );
        assert!(
            p.contains(
                r#"expected e.g. [SYS_CALL::FS_WRITE] {"content": "...", "path": "/notes.md"}"#
            ),
            "{p}"
        );
    }

    #[test]
    fn an_unclosed_object_is_a_problem_and_later_calls_still_count() {
        let text = "[SYS_CALL::FS_WRITE] {\"path\": \"/a\", \"content\": \"x\"\n[SYS_CALL::GETPID]";
        let r = parse_reply(text);
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0].contains("never closed"));
        assert_eq!(r.calls.len(), 1);
        assert_eq!(r.calls[0].name, "GETPID");
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let r = parse_reply(r#"[SYS_CALL::FS_COPY] {"from": "/a", "to": "/b"}"#);
        assert!(r.calls.is_empty());
        assert_eq!(r.problems.len(), 1);
        assert!(r.problems[0].starts_with("unknown syscall FS_COPY; use one of: "));
        for c in Call::ALL {
            assert!(r.problems[0].contains(c.name()), "{} missing", c.name());
        }
        // The object of an unknown call is not re-read as anything else.
        let r = parse_reply(r#"[SYS_CALL::NOPE] {"name": "fs_write", "arguments": {}}"#);
        assert_eq!((r.calls.len(), r.problems.len()), (0, 1));
    }

    #[test]
    fn known_restricts_names_and_reports_unpermitted_calls() {
        let known = ["FS_READ", "SYS_EXIT"];
        let r = parse_reply_with(
            "[SYS_CALL::fs_read] {\"path\": \"/a\"}\n[SYS_CALL::FS_DELETE] {\"path\": \"/a\"}\n[SYS_CALL::RM] {}",
            &known,
        );
        assert_eq!(r.calls.len(), 1);
        assert_eq!(r.calls[0].name, "FS_READ");
        assert_eq!(
            r.problems,
            [
                "syscall FS_DELETE is not permitted to you; use one of: FS_READ, SYS_EXIT",
                "unknown syscall RM; use one of: FS_READ, SYS_EXIT"
            ]
        );
    }

    #[test]
    fn arguments_that_are_not_objects_are_problems() {
        let r = parse_reply("[SYS_CALL::SLEEP] [1000]");
        assert!(r.calls.is_empty());
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0].contains("must be followed by a JSON object"));
        let r = parse_reply(r#"{"name": "sleep", "arguments": 1000}"#);
        assert_eq!(r.problems.len(), 1);
        assert!(r.problems[0].contains("arguments of SLEEP must be a JSON object"));
        let r = parse_reply(r#"{"name": "sleep", "arguments": "[1000]"}"#);
        assert!(r.problems[0].contains("arguments of SLEEP must be a JSON object"));
        let r = parse_reply(r#"{"name": "sleep", "arguments": "{ms: 5}"}"#);
        assert!(r.problems[0].contains("arguments string of SLEEP is not valid JSON"));
    }

    #[test]
    fn malformed_markers_are_problems() {
        let r = parse_reply(r#"[SYS_CALL::FS WRITE] {"path": "/a"}"#);
        assert!(r.calls.is_empty());
        assert!(
            r.problems.iter().any(|p| p.starts_with("malformed marker")),
            "{:?}",
            r.problems
        );
    }

    // ---- JSON tool calls ---------------------------------------------------

    #[test]
    fn plain_json_tool_call_shapes() {
        let want = (
            "FS_WRITE".to_string(),
            json!({"path": "/a", "content": "x"}),
        );
        for text in [
            r#"{"name": "fs_write", "arguments": {"path": "/a", "content": "x"}}"#,
            r#"{"name": "FS_WRITE", "arguments": "{\"path\": \"/a\", \"content\": \"x\"}"}"#,
            r#"{"tool": "fs_write", "args": {"path": "/a", "content": "x"}}"#,
            r#"{"tool": "fs_write", "parameters": {"path": "/a", "content": "x"}}"#,
            r#"{"tool": "fs_write", "input": {"path": "/a", "content": "x"}}"#,
            r#"{"type": "tool_use", "id": "t1", "name": "fs_write", "input": {"path": "/a", "content": "x"}}"#,
            r#"{"function": {"name": "fs_write", "arguments": "{\"path\":\"/a\",\"content\":\"x\"}"}}"#,
            r#"{"id": "call_1", "type": "function", "function": {"name": "fs_write", "arguments": {"path": "/a", "content": "x"}}}"#,
            r#"{"functionCall": {"name": "fsWrite", "args": {"path": "/a", "content": "x"}}}"#,
            r#"{"call": "FS_WRITE", "args": {"path": "/a", "content": "x"}}"#,
            r#"{"id": 7, "call": "FS_WRITE", "args": {"path": "/a", "content": "x"}}"#,
            r#"Sure! {"name": "fs_write", "arguments": {"path": "/a", "content": "x"}} Done."#,
        ] {
            assert_eq!(one(text), want, "{text}");
        }
    }

    #[test]
    fn name_without_arguments_is_a_call_only_when_the_name_is_a_syscall() {
        assert_eq!(
            one(r#"{"name": "getpid"}"#),
            ("GETPID".to_string(), json!({}))
        );
        let r = parse_reply(r#"The config is {"name": "Alice"}."#);
        assert_eq!(r, ParsedReply::default());
    }

    #[test]
    fn arrays_of_calls_and_call_lists() {
        let text = r#"[{"name": "fs_read", "arguments": {"path": "/a"}}, {"name": "getpid", "arguments": {}}]"#;
        let names: Vec<String> = calls(text).into_iter().map(|c| c.0).collect();
        assert_eq!(names, ["FS_READ", "GETPID"]);
        let text = r#"{"tool_calls": [{"id": "1", "type": "function", "function": {"name": "ps", "arguments": "{}"}}]}"#;
        assert_eq!(one(text), ("PS".to_string(), json!({})));
    }

    #[test]
    fn the_constrained_reply_shape() {
        let text = r#"{"calls": [{"name": "FS_WRITE", "arguments": {"path": "/a", "content": "{\"k\": [1]}"}}, {"name": "SYS_EXIT", "arguments": {"code": 0}}]}"#;
        let got = calls(text);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1["content"], r#"{"k": [1]}"#);
        assert_eq!(got[1], ("SYS_EXIT".to_string(), json!({"code": 0})));
        assert_eq!(parse_reply(r#"{"calls": []}"#), ParsedReply::default());
    }

    #[test]
    fn code_fences_around_json_and_text_calls() {
        let text = "Here:\n```json\n{\"name\": \"fs_list\", \"arguments\": {\"path\": \"/\"}}\n```\n```\n[SYS_CALL::GETPID]\n```";
        let got = calls(text);
        assert_eq!(
            got,
            [
                ("FS_LIST".to_string(), json!({"path": "/"})),
                ("GETPID".to_string(), json!({}))
            ]
        );
    }

    #[test]
    fn tool_call_tags() {
        let text = "<tool_call>\n{\"name\": \"fs_read\", \"arguments\": {\"path\": \"/a\"}}\n</tool_call>\n<tool_call>[SYS_CALL::PS]</tool_call>";
        let got = calls(text);
        assert_eq!(
            got,
            [
                ("FS_READ".to_string(), json!({"path": "/a"})),
                ("PS".to_string(), json!({}))
            ]
        );
        // Fenced inside the tags, and an unterminated last block.
        let text = "<TOOL_CALL>```json\n{\"name\": \"kill\", \"arguments\": {\"pid\": 3}}\n```</TOOL_CALL><tool_call>{\"name\": \"getpid\"}";
        let got = calls(text);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], ("KILL".to_string(), json!({"pid": 3})));
    }

    #[test]
    fn tool_call_tags_are_strict() {
        let r = parse_reply(
            "<tool_call>{\"name\": \"fs_read\", \"arguments\": {\"path\": }}</tool_call>",
        );
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0].starts_with("invalid JSON in a <tool_call> block"));
        let r = parse_reply("<tool_call>{\"path\": \"/a\"}</tool_call>");
        assert!(r.problems[0].contains("is not a call"), "{:?}", r.problems);
        let r = parse_reply("<tool_call>I will read the file.</tool_call>");
        assert!(r.problems[0].contains("held no call"), "{:?}", r.problems);
    }

    #[test]
    fn thinking_is_not_executed() {
        let text = "<think>Maybe [SYS_CALL::KILL] {\"pid\": 1} or {\"name\": \"ps\"}?</think>\n[SYS_CALL::GETPID]";
        assert_eq!(calls(text), [("GETPID".to_string(), json!({}))]);
        assert_eq!(parse_reply("<think>[SYS_CALL::PS]"), ParsedReply::default());
    }

    #[test]
    fn non_call_json_in_prose_is_ignored() {
        let text = r#"The file holds {"version": 2, "items": [{"name": "a", "size": 3}]} and the
        schema is {"type": "object", "name": "fs_write", "properties": {}}; an array
        [{"a": 1}, {"b": 2}] and a set {1, 2} and a link [docs](http://x) and {"name": "x", "version": "1.0"}
        and a tool description {"function": {"name": "ps", "arguments": {}}, "description": "lists"}."#;
        assert_eq!(parse_reply(text), ParsedReply::default());
    }

    #[test]
    fn quoted_file_content_with_a_marker_in_a_string_is_not_a_call() {
        let text = r#"The log says {"line": "[SYS_CALL::KILL] {\"pid\": 1}"} which is old."#;
        assert_eq!(parse_reply(text), ParsedReply::default());
    }

    #[test]
    fn a_broken_json_tool_call_is_reported_once() {
        let r = parse_reply(r#"{"name": "fs_write", "arguments": {"path": "/a", "content": "x"}"#);
        assert!(r.calls.is_empty());
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0].starts_with("a JSON tool call is invalid"));
    }

    #[test]
    fn order_is_preserved_across_forms() {
        let text = "first {\"name\": \"fs_read\", \"arguments\": {\"path\": \"/1\"}}\n\
            [SYS_CALL::FS_READ] {\"path\": \"/2\"}\n\
            <tool_call>{\"name\": \"fs_read\", \"arguments\": {\"path\": \"/3\"}}</tool_call>\n\
            ```json\n[{\"name\": \"fs_read\", \"arguments\": {\"path\": \"/4\"}}]\n```\n\
            [SYS_CALL::FS_READ] {\"path\": \"/5\"}";
        let paths: Vec<Value> = calls(text)
            .into_iter()
            .map(|(_, a)| a["path"].clone())
            .collect();
        assert_eq!(
            paths,
            [
                json!("/1"),
                json!("/2"),
                json!("/3"),
                json!("/4"),
                json!("/5")
            ]
        );
    }

    #[test]
    fn no_double_counting() {
        // Tool-call JSON as the content of a text call.
        let inner = r#"{"name": "kill", "arguments": {"pid": 1}}"#;
        let text = format!(
            "[SYS_CALL::FS_WRITE] {}",
            json!({"path": "/t.json", "content": inner})
        );
        assert_eq!(one(&text).0, "FS_WRITE");
        // A text call inside a tool_call block.
        assert_eq!(calls("<tool_call>[SYS_CALL::PS] {}</tool_call>").len(), 1);
        // A call list is one set of calls, not also its elements.
        let text = r#"{"calls": [{"name": "PS", "arguments": {}}]}"#;
        assert_eq!(calls(text).len(), 1);
    }

    #[test]
    fn pathological_input_terminates() {
        let text = "{\"".repeat(20_000) + &"[".repeat(5_000) + "[SYS_CALL::GETPID]";
        let r = parse_reply(&text);
        assert_eq!(r.calls.len(), 1);
        let text = "[SYS_CALL::".repeat(5_000);
        assert!(parse_reply(&text).calls.is_empty());
        // Unclosed objects after many markers: bounded work, then one notice.
        let text = "[SYS_CALL::FS_READ] {\"path\": [\n".repeat(20_000);
        let started = std::time::Instant::now();
        let r = parse_reply(&text);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(r.calls.is_empty());
        assert!(r.problems.len() < 100, "{}", r.problems.len());
        assert!(r.problems.last().is_some_and(|p| p.contains("not read")));
    }

    // ---- rendering and corrective messages ---------------------------------

    #[test]
    fn render_call_is_the_canonical_form() {
        assert_eq!(
            render_call("fs_write", &json!({"path": "/a.txt", "content": "hi\n"})),
            r#"[SYS_CALL::FS_WRITE] {"content": "hi\n", "path": "/a.txt"}"#
        );
        assert_eq!(render_call("GETPID", &json!({})), "[SYS_CALL::GETPID] {}");
    }

    #[test]
    fn corrective_message_wording() {
        let m = corrective_message(
            &["unknown syscall X; use one of: FS_WRITE".to_string()],
            &["FS_WRITE", "SYS_EXIT"],
        );
        assert_eq!(
            m,
            "Your last reply could not be executed: unknown syscall X; use one of: FS_WRITE. \
             Reply with one or more lines of the form [SYS_CALL::NAME] {json arguments}, e.g. \
             [SYS_CALL::FS_WRITE] {\"path\": \"/notes.md\", \"content\": \"...\"}. \
             Available calls: FS_WRITE, SYS_EXIT. \
             To finish, use [SYS_CALL::SYS_EXIT] {\"code\": 0}."
        );
        let m = corrective_message(&[], &["SEND_MSG", "SYS_EXIT"]);
        assert!(m.starts_with("Your last reply contained no syscall"));
        assert!(
            m.contains(r#"e.g. [SYS_CALL::SEND_MSG] {"body": "done", "to": 1}."#),
            "{m}"
        );
        let many: Vec<String> = (0..8).map(|i| format!("problem {i}")).collect();
        let m = corrective_message(&many, &[]);
        assert!(m.contains("problem 4.") && !m.contains("problem 5"), "{m}");
        assert!(m.contains("(3 more problems.)"));
    }

    /// Every example line the corrective messages show parses back.
    #[test]
    fn corrective_examples_parse() {
        let names: Vec<&str> = Call::ALL.iter().map(|c| c.name()).collect();
        for c in Call::ALL {
            let line = example_for(&[c.name(), "SYS_EXIT"]);
            let r = parse_reply_with(&line, &names);
            assert!(r.problems.is_empty(), "{line}: {:?}", r.problems);
            assert_eq!(r.calls.len(), 1, "{line}");
        }
        let r = parse_reply(FS_WRITE_EXAMPLE);
        assert_eq!(r.calls.len(), 1);
        assert_eq!(parse_reply(EXIT_EXAMPLE).calls[0].args, json!({"code": 0}));
    }

    // ---- round trip on generated arguments ---------------------------------

    use crate::abi::test_rng::Rng;

    const PIECES: &[&str] = &[
        "a",
        "path",
        "{",
        "}",
        "[",
        "]",
        "\"",
        "\\",
        "\n",
        "\t",
        "\r",
        "\u{1}",
        "é",
        "🦀",
        "```",
        "`",
        "<tool_call>",
        "</tool_call>",
        "[SYS_CALL::KILL]",
        "[SYS_CALL::FS_WRITE] {",
        "{\"name\": \"kill\", \"arguments\": {\"pid\": 1}}",
        "\\n",
        "\\\"",
        ",",
        ":",
        " ",
        "null",
    ];

    fn random_string(rng: &mut Rng) -> String {
        (0..rng.below(6))
            .map(|_| PIECES[rng.below(PIECES.len() as u64) as usize])
            .collect()
    }

    fn random_value(rng: &mut Rng, depth: u32) -> Value {
        match rng.below(if depth >= 3 { 5 } else { 7 }) {
            0 => Value::Null,
            1 => json!(rng.below(2) == 0),
            2 => json!(rng.next() as i64),
            3 => json!((rng.below(1_000_000) as f64) / 8.0),
            4 => json!(random_string(rng)),
            5 => (0..rng.below(4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
            _ => Value::Object(random_object(rng, depth + 1)),
        }
    }

    fn random_object(rng: &mut Rng, depth: u32) -> Map<String, Value> {
        (0..rng.below(5))
            .map(|_| (random_string(rng), random_value(rng, depth)))
            .collect()
    }

    #[test]
    fn render_then_parse_round_trips() {
        let mut rng = Rng(0x0123_4567_89AB_CDEF);
        for round in 0..2000 {
            let call = Call::ALL[rng.below(Call::ALL.len() as u64) as usize];
            let args = Value::Object(random_object(&mut rng, 0));
            let line = render_call(call.name(), &args);
            let r = parse_reply(&line);
            assert!(
                r.problems.is_empty(),
                "round {round}: {line}: {:?}",
                r.problems
            );
            assert_eq!(
                r.calls,
                [ParsedCall {
                    name: call.name().to_string(),
                    args: args.clone()
                }],
                "round {round}: {line}"
            );
            // Several rendered calls with prose between them parse in order.
            let second = Value::Object(random_object(&mut rng, 0));
            let text = format!(
                "Thinking {{about it}}.\n{line}\nand then\n{}\n",
                render_call("fs_read", &second)
            );
            let r = parse_reply(&text);
            assert!(
                r.problems.is_empty(),
                "round {round}: {text}: {:?}",
                r.problems
            );
            assert_eq!(r.calls.len(), 2, "round {round}: {text}");
            assert_eq!(r.calls[1].args, second);
        }
    }

    #[test]
    fn canonical_names() {
        assert_eq!(canonical_name("fsWrite"), "FS_WRITE");
        assert_eq!(canonical_name("fs-write"), "FS_WRITE");
        assert_eq!(canonical_name("functions.fs_write"), "FS_WRITE");
        assert_eq!(canonical_name("SYS_WRITE_STDOUT"), "SYS_WRITE_STDOUT");
        assert_eq!(canonical_name("sysWriteStdout"), "SYS_WRITE_STDOUT");
    }
}
