//! The reply parser: a scan over the text that finds `[SYS_CALL::NAME]`
//! markers, JSON tool calls (in prose, code fences or `<tool_call>` tags)
//! and skips `<think>` blocks, collecting calls and problems in order.

use super::json::{find_ci, parse_json_lenient, scan_balanced, skip_ws, starts_with_ci};
use super::{
    FS_WRITE_EXAMPLE, ParsedCall, ParsedReply, Problem, Syntax, canonical_name, clip, lookup,
};
use crate::abi::calls::Call;
use crate::abi::schema;
use serde_json::{Map, Value};

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

/// `[NAME]` or `[X::NAME]` (a near-miss of the marker): the range of the
/// last name and the index after `]`. `[RESULT::NAME]` (a model echoing a
/// result) is not a call.
fn read_bracketed_name(b: &[u8], i: usize, end: usize) -> Option<(usize, usize, usize)> {
    let ident = |mut j: usize| {
        let start = j;
        while j < end && (b[j].is_ascii_alphanumeric() || matches!(b[j], b'_' | b'-' | b'.')) {
            j += 1;
        }
        (start, j)
    };
    let spaces = |mut j: usize| {
        while j < end && b[j] == b' ' {
            j += 1;
        }
        j
    };
    let (s1, e1) = ident(spaces(i + 1));
    if e1 == s1 {
        return None;
    }
    let mut j = spaces(e1);
    let (mut ns, mut ne) = (s1, e1);
    if j < end && b[j] == b':' {
        let colons = j;
        while j < end && b[j] == b':' {
            j += 1;
        }
        if j - colons > 2 || b[s1..e1].eq_ignore_ascii_case(b"result") {
            return None;
        }
        (ns, ne) = ident(spaces(j));
        if ne == ns {
            return None;
        }
        j = spaces(ne);
    }
    (j < end && b[j] == b']').then_some((ns, ne, j + 1))
}

/// A bare `NAME {` (or `NAME: {`, `NAME({`) at `i`, NAME in capitals as the
/// prompt writes it: the name's range and the index after it (and a colon).
fn read_bare_name(b: &[u8], i: usize, end: usize) -> Option<(usize, usize, usize)> {
    if i > 0 && (b[i - 1].is_ascii_alphanumeric() || matches!(b[i - 1], b'_' | b'-' | b':')) {
        return None;
    }
    let mut j = i;
    while j < end && (b[j].is_ascii_uppercase() || b[j].is_ascii_digit() || b[j] == b'_') {
        j += 1;
    }
    if j < end && (b[j].is_ascii_lowercase() || matches!(b[j], b'-' | b'.')) {
        return None;
    }
    let ne = j;
    if j < end && b[j] == b':' {
        j += 1;
    }
    let after = j;
    let k = skip_ws(b, j, end);
    let opens = k < end
        && (b[k] == b'{'
            || (b[k] == b'(' && skip_ws(b, k + 1, end) < end && b[skip_ws(b, k + 1, end)] == b'{'));
    (ne > i + 1 && opens).then_some((i, ne, after))
}

pub(super) struct Parser<'a> {
    text: &'a str,
    b: &'a [u8],
    known: &'a [&'a str],
    syntax: Syntax,
    out: ParsedReply,
    budget: usize,
    /// Broken JSON calls starting before this index are not reported
    /// again (they lie inside one already reported).
    quiet_until: usize,
}

impl<'a> Parser<'a> {
    pub(super) fn new(text: &'a str, known: &'a [&'a str], syntax: Syntax) -> Self {
        Parser {
            text,
            b: text.as_bytes(),
            known,
            syntax,
            out: ParsedReply::default(),
            // Failed scans of JSON-looking text in prose may cost this much
            // in total; beyond it, prose is no longer searched for JSON calls.
            budget: text.len().saturating_mul(32).saturating_add(1 << 16),
            quiet_until: 0,
        }
    }

    /// Scans the whole text.
    pub(super) fn run(mut self) -> ParsedReply {
        self.segment(0, self.text.len(), false);
        self.out
    }

    fn problem(&mut self, p: Problem) {
        if self.out.first_problem_at.is_none() {
            self.out.first_problem_at = Some(self.out.calls.len());
        }
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
    fn resolve(&self, raw: &str) -> Result<String, Problem> {
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
    /// arguments) in the reply's syntax, for corrective sentences.
    fn example(&self, name: &str) -> String {
        match Call::parse(name) {
            Some(c) => self.syntax.render(name, &schema::example_args(c)),
            None => format!("[SYS_CALL::{name}] {{...}}"),
        }
    }

    /// Whether `raw` names a call of the ABI (offered or not).
    fn is_call_name(&self, raw: &str) -> bool {
        let canon = canonical_name(raw);
        lookup(self.known.iter().copied(), &canon).is_some()
            || lookup(Call::ALL.iter().map(|c| c.name()), &canon).is_some()
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
                    Marker::No => {
                        if let Some((ns, ne, after)) = read_bracketed_name(self.b, i, end) {
                            if self.is_call_name(&self.text[ns..ne]) {
                                i = self.marker(ns, ne, after, end);
                                continue;
                            }
                        }
                    }
                }
            }
            if c.is_ascii_uppercase() {
                if let Some((ns, ne, after)) = read_bare_name(self.b, i, end) {
                    if self.is_call_name(&self.text[ns..ne]) {
                        i = self.marker(ns, ne, after, end);
                        continue;
                    }
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
                        self.example(&name)
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
                self.example(&shown)
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
                clip(&e.to_string(), 80),
                self.example(&name)
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
                    Some(Err(e)) => clip(&e.to_string(), 80),
                    _ => "unbalanced brackets".to_string(),
                };
                if strict {
                    self.problem(format!(
                        "invalid JSON in a <tool_call> block ({why}); expected {{\"name\": ..., \"arguments\": {{...}}}}"
                    ));
                    return stop;
                }
                if i >= self.quiet_until && self.first_key_is_call_key(i, end) {
                    let example = match self.syntax {
                        Syntax::Text => FS_WRITE_EXAMPLE.to_string(),
                        _ => self.example("FS_WRITE"),
                    };
                    self.problem(format!(
                        "a JSON tool call is invalid ({why}); write {example} instead"
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
                    self.example(&name)
                )),
                Err(e) => Err(format!(
                    "the arguments string of {name} is not valid JSON ({}); expected e.g. {}",
                    clip(&e.to_string(), 80),
                    self.example(&name)
                )),
            },
            Some(_) => Err(format!(
                "the arguments of {name} must be a JSON object, e.g. {}",
                self.example(&name)
            )),
        };
        Some(args.map(|a| (name, a)))
    }
}

/// A call found in JSON (name, arguments), or a problem.
type CallResult = Result<(String, Map<String, Value>), Problem>;
