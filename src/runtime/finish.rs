//! The check before a successful SYS_EXIT (`confirm_exit`): the files and
//! directories the task names (`/os.txt`, `/docs`) must each have been
//! used by a call that succeeded — written, read, listed or deleted, or
//! named in a command that ran. A model that finishes without touching
//! one is held and told which, twice at most; if it still finishes, the
//! agent ends with [`super::exit::UNFINISHED`] instead of a success it
//! did not earn.
//!
//! Calls the task names (`with SEND_MSG`, `Then WAIT`) must each have
//! succeeded once.
//!
//! Values the task spells out as settings (`mode=default`) or in double
//! quotes (`"hello"`) must likewise appear in some successful call's
//! arguments: a task that says what to write is not done while that text
//! was written nowhere.
//!
//! A named file the agent wrote but left holding exactly the text it had
//! when the agent first read it counts as not done either ("fix /calc.py"
//! answered by writing the script back unchanged): nothing in the task
//! asks for a write that changes nothing. If a command named such a file
//! after the write (`python3 calc.py`, `sed -i … calc.py`), the runtime
//! reads it again before it judges the exit. The model is also told at
//! once when an FS_WRITE repeats the text it last read from that file.
//!
//! This is a check of what was done, not of whether it was done well: a
//! file written with other wrong content passes it.

use crate::abi::calls::Call;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Exits held before the agent is ended as unfinished.
pub const MAX_HOLDS: u32 = 2;

/// The task's paths and what the agent's successful calls used.
#[derive(Debug, Default)]
pub struct FinishCheck {
    named: Vec<String>,
    /// The calls the task names (other than SYS_EXIT), each with whether
    /// it succeeded.
    calls: Vec<(Call, bool)>,
    /// The values the task spells out, each with whether a call used it.
    literals: Vec<(String, bool)>,
    used: BTreeSet<String>,
    /// Words of commands that ran (`wc -l < data.txt` uses /data.txt).
    command_words: BTreeSet<String>,
    /// The whole text last read from each file.
    read: BTreeMap<String, String>,
    /// The text each file had when the agent first read it, before any
    /// write of its own.
    original: BTreeMap<String, String>,
    /// The text each file was last written with (whole writes only).
    written: BTreeMap<String, String>,
    /// Written files a command named since: their text is read again
    /// before an exit is checked ([`FinishCheck::stale`]).
    stale: BTreeSet<String>,
    pub holds: u32,
}

/// The workspace paths a task names: words that start with `/` after a
/// space, a quote, a bracket or the start, e.g. `/os.txt` or `/docs`.
pub fn task_paths(task: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let b = task.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        let starts =
            c == b'/' && (i == 0 || matches!(b[i - 1], b' ' | b'`' | b'"' | b'\'' | b'(' | b'\n'));
        if !starts {
            continue;
        }
        let word: String = task[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'))
            .collect();
        let word = word.trim_end_matches(['.', '/']).to_string();
        if word.len() > 1 && word.chars().any(|c| c.is_ascii_alphanumeric()) && !out.contains(&word)
        {
            out.push(word);
        }
    }
    out
}

/// The calls a task names by their names, e.g. SEND_MSG in "Send the
/// message ready to agent 1 with SEND_MSG"; SYS_EXIT is not one.
pub fn task_calls(task: &str) -> Vec<Call> {
    let mut out: Vec<Call> = Vec::new();
    for word in task.split(|c: char| !(c.is_ascii_uppercase() || c == '_')) {
        match Call::parse(word) {
            Some(c) if c != Call::SYS_EXIT && !out.contains(&c) => out.push(c),
            _ => {}
        }
    }
    out
}

/// The values a task spells out: `key=value` words and double-quoted
/// texts, e.g. `mode=default` in "create it with the content
/// mode=default".
pub fn task_literals(task: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |v: &str| {
        if !v.trim().is_empty() && !out.iter().any(|o| o == v) {
            out.push(v.to_string());
        }
    };
    for word in task.split_whitespace() {
        let word = word.trim_end_matches(['.', ',', ';', ':', ')']);
        let setting = word.split_once('=').is_some_and(|(k, v)| {
            let name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
            !k.is_empty() && k.chars().all(name) && !v.is_empty() && !v.starts_with('=')
        });
        if setting && !word.contains(['"', '`', '\'']) {
            add(word);
        }
    }
    let quoted: Vec<&str> = task.split('"').collect();
    // Texts between pairs of quotes: the odd pieces, if the quotes pair up.
    if quoted.len() % 2 == 1 {
        for q in quoted.iter().skip(1).step_by(2) {
            add(q);
        }
    }
    out
}

/// Whether any string in `args` (at any depth) contains `text`.
fn mentions(args: &Value, text: &str) -> bool {
    match args {
        Value::String(s) => s.contains(text),
        Value::Array(a) => a.iter().any(|v| mentions(v, text)),
        Value::Object(o) => o.values().any(|v| mentions(v, text)),
        _ => false,
    }
}

/// A path as the agent gave it, in the task's form (`/a/b`).
fn normal(path: &str) -> String {
    let p = path.trim().trim_end_matches('/');
    let p = p.strip_prefix("/workspace").unwrap_or(p);
    let p = p.strip_prefix("./").unwrap_or(p);
    if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/{p}")
    }
}

impl FinishCheck {
    pub fn new(task: &str) -> FinishCheck {
        FinishCheck {
            named: task_paths(task),
            calls: task_calls(task).into_iter().map(|c| (c, false)).collect(),
            literals: task_literals(task)
                .into_iter()
                .map(|l| (l, false))
                .collect(),
            ..FinishCheck::default()
        }
    }

    /// Takes in a call that succeeded with `result`; returns a note for the
    /// model when the call changed nothing.
    pub fn note(&mut self, call: Call, args: &Value, result: &Value) -> Option<String> {
        for (named, made) in &mut self.calls {
            *made = *made || *named == call;
        }
        for (text, used) in &mut self.literals {
            *used = *used || mentions(args, text);
        }
        let path = args["path"].as_str().map(normal);
        match (call, &path) {
            (Call::FS_READ, Some(p)) => match result["content"].as_str() {
                Some(text)
                    if result["truncated"] == false
                        && result["encoding"] != "base64"
                        && args.get("offset").is_none() =>
                {
                    self.read.insert(p.clone(), text.to_string());
                    if !self.written.contains_key(p) {
                        self.original
                            .entry(p.clone())
                            .or_insert_with(|| text.to_string());
                    }
                }
                _ => {
                    self.read.remove(p);
                }
            },
            (Call::FS_WRITE | Call::FS_DELETE, Some(p)) => {
                let before = self.read.remove(p);
                let whole = match args["content"].as_str() {
                    Some(text) if call == Call::FS_WRITE && args["append"] != true => Some(text),
                    _ => None,
                };
                match whole {
                    Some(text) => self.written.insert(p.clone(), text.to_string()),
                    None => self.written.remove(p),
                };
                self.stale.remove(p);
                if whole.is_some() && before.as_deref() == whole {
                    self.used.insert(p.clone());
                    return Some(format!(
                        "This FS_WRITE wrote exactly the text {p} already had: it changed nothing."
                    ));
                }
            }
            _ => {}
        }
        match call {
            Call::EXEC_CMD => {
                let cmd = args["cmd"].as_str().unwrap_or_default();
                for w in cmd.split(|c: char| c.is_whitespace() || "<>|;&'\"`()".contains(c)) {
                    if !w.is_empty() {
                        // A command may change the file: its text is no
                        // longer known.
                        let w = normal(w);
                        self.read.remove(&w);
                        if self.written.contains_key(&w) {
                            self.stale.insert(w.clone());
                        }
                        self.command_words.insert(w);
                    }
                }
            }
            _ => {
                if let Some(p) = path {
                    self.used.insert(p);
                }
            }
        }
        None
    }

    /// Named files the agent wrote whose text a later command may have
    /// changed: the caller reads each and reports it with
    /// [`FinishCheck::observed`]. One never read again (a turn replayed
    /// after a restart) is not counted as unchanged.
    pub fn stale(&self) -> Vec<String> {
        self.stale
            .iter()
            .filter(|p| self.named.contains(p) && self.original.contains_key(*p))
            .cloned()
            .collect()
    }

    /// The text a stale file holds now (`None`: it could not be read).
    pub fn observed(&mut self, path: &str, text: Option<&str>) {
        self.stale.remove(path);
        match text {
            Some(t) => self.written.insert(path.to_string(), t.to_string()),
            None => self.written.remove(path),
        };
    }

    /// The task's files the agent wrote but that hold the text they had
    /// when it first read them.
    pub fn unchanged(&self) -> Vec<&str> {
        self.named
            .iter()
            .filter(|p| !self.stale.contains(*p))
            .filter(|p| {
                let (Some(now), Some(was)) = (self.written.get(*p), self.original.get(*p)) else {
                    return false;
                };
                now == was
            })
            .map(String::as_str)
            .collect()
    }

    /// The task's paths no successful call has used yet.
    pub fn unused(&self) -> Vec<&str> {
        self.named
            .iter()
            .filter(|p| {
                let inside = format!("{p}/");
                !self
                    .used
                    .iter()
                    .chain(&self.command_words)
                    .any(|u| u == *p || u.starts_with(&inside))
            })
            .map(String::as_str)
            .collect()
    }

    /// The calls the task names that have not succeeded yet.
    pub fn unmade(&self) -> Vec<&'static str> {
        self.calls
            .iter()
            .filter(|(_, made)| !made)
            .map(|(c, _)| c.name())
            .collect()
    }

    /// The values the task spells out that no successful call's
    /// arguments contain yet.
    pub fn unwritten(&self) -> Vec<&str> {
        self.literals
            .iter()
            .filter(|(_, used)| !used)
            .map(|(text, _)| text.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_are_read_from_the_task() {
        assert_eq!(
            task_paths("Run `uname -s` and save it in the file /os.txt. Then exit."),
            ["/os.txt"]
        );
        assert_eq!(
            task_paths("The directory /docs holds files. Write /index.txt, e.g. `x.txt: y`."),
            ["/docs", "/index.txt"]
        );
        assert!(task_paths("Compute 17 * 23 and/or 4/2.").is_empty());
    }

    #[test]
    fn a_path_is_used_by_a_file_call_a_call_inside_it_or_a_command() {
        let mut c = FinishCheck::new("Count /data.txt into /count.txt; list /docs.");
        assert_eq!(c.unused(), ["/data.txt", "/count.txt", "/docs"]);
        let ok = json!({});
        c.note(Call::EXEC_CMD, &json!({"cmd": "wc -l < data.txt"}), &ok);
        c.note(
            Call::FS_READ,
            &json!({"path": "/workspace/docs/a.txt"}),
            &ok,
        );
        assert_eq!(c.unused(), ["/count.txt"]);
        c.note(
            Call::FS_WRITE,
            &json!({"path": "count.txt", "content": "7"}),
            &ok,
        );
        assert!(c.unused().is_empty());
    }

    #[test]
    fn writing_back_what_was_read_is_noticed() {
        let mut c = FinishCheck::new("Fix /calc.py.");
        let text = "print(2 - 3)\n";
        let read = json!({"content": text, "truncated": false, "encoding": "utf8"});
        assert_eq!(
            c.note(Call::FS_READ, &json!({"path": "/calc.py"}), &read),
            None
        );
        let same = json!({"path": "calc.py", "content": text});
        let told = c
            .note(Call::FS_WRITE, &same, &json!({}))
            .unwrap_or_default();
        assert!(told.contains("changed nothing"), "{told}");
        // A changed text, or a write without a read before it, is not.
        c.note(Call::FS_READ, &json!({"path": "/calc.py"}), &read);
        let fixed = json!({"path": "/calc.py", "content": "print(2 + 3)\n"});
        assert_eq!(c.note(Call::FS_WRITE, &fixed, &json!({})), None);
        assert_eq!(c.note(Call::FS_WRITE, &same, &json!({})), None);
    }

    #[test]
    fn a_named_file_written_back_unchanged_is_not_done() {
        let mut c = FinishCheck::new("Fix the bug in /calc.py.");
        let buggy = "print(2 - 3)\n";
        let read = |text: &str| json!({"content": text, "truncated": false, "encoding": "utf8"});
        let path = json!({"path": "/calc.py"});
        c.note(Call::FS_READ, &path, &read(buggy));
        assert!(c.unchanged().is_empty(), "reading alone is not a write");
        let back = json!({"path": "calc.py", "content": buggy});
        c.note(Call::FS_WRITE, &back, &json!({}));
        assert!(c.unused().is_empty());
        assert_eq!(c.unchanged(), ["/calc.py"]);
        // Read again and written again unchanged: still the original text.
        c.note(Call::FS_READ, &path, &read(buggy));
        c.note(Call::FS_WRITE, &back, &json!({}));
        assert_eq!(c.unchanged(), ["/calc.py"]);
        // A changed text clears it, and so does a later no-op write of
        // the changed text (the file differs from the original).
        let fixed = json!({"path": "/calc.py", "content": "print(2 + 3)\n"});
        c.note(Call::FS_WRITE, &fixed, &json!({}));
        assert!(c.unchanged().is_empty());
        c.note(Call::FS_READ, &path, &read("print(2 + 3)\n"));
        c.note(Call::FS_WRITE, &fixed, &json!({}));
        assert!(c.unchanged().is_empty());
        // A command that names the file may have changed it: it is read
        // again, and judged by what it holds.
        let mut c = FinishCheck::new("Fix the bug in /calc.py.");
        c.note(Call::FS_READ, &path, &read(buggy));
        c.note(Call::FS_WRITE, &back, &json!({}));
        let run = json!({"cmd": "python3 calc.py"});
        c.note(Call::EXEC_CMD, &run, &json!({}));
        assert_eq!(c.stale(), ["/calc.py"]);
        assert!(c.unchanged().is_empty(), "not judged before it is read");
        c.observed("/calc.py", Some(buggy));
        assert!(c.stale().is_empty());
        assert_eq!(c.unchanged(), ["/calc.py"]);
        let sed = json!({"cmd": "sed -i s/-/+/ calc.py"});
        c.note(Call::EXEC_CMD, &sed, &json!({}));
        c.observed("/calc.py", Some("print(2 + 3)\n"));
        assert!(c.unchanged().is_empty());
        // A command naming a file the agent only read is not a reason to
        // read it again.
        let mut c = FinishCheck::new("Run /calc.py.");
        c.note(Call::FS_READ, &path, &read(buggy));
        c.note(Call::EXEC_CMD, &run, &json!({}));
        assert!(c.stale().is_empty());
        assert!(c.unchanged().is_empty());
        // A file the task does not name is not checked.
        let mut c = FinishCheck::new("Write /b.txt.");
        c.note(Call::FS_READ, &path, &read(buggy));
        c.note(Call::FS_WRITE, &back, &json!({}));
        assert!(c.unchanged().is_empty());
    }

    #[test]
    fn values_the_task_spells_out_must_be_used() {
        assert_eq!(
            task_literals(
                "If it does not exist, create it with the content mode=default. Then exit."
            ),
            ["mode=default"]
        );
        assert_eq!(
            task_literals("Write \"hello world\" to /a.txt, then \"bye\"; x == y, a=, =b."),
            ["hello world", "bye"]
        );
        assert!(task_literals("Run `FOO=1 make` and say \"unpaired.").is_empty());
        let mut c = FinishCheck::new("Create /s.txt with the content mode=default.");
        let ok = json!({});
        c.note(
            Call::FS_WRITE,
            &json!({"path": "/s.txt", "content": "default"}),
            &ok,
        );
        assert!(c.unused().is_empty());
        assert_eq!(c.unwritten(), ["mode=default"]);
        c.note(
            Call::FS_WRITE,
            &json!({"path": "/s.txt", "content": "mode=default\n"}),
            &ok,
        );
        assert!(c.unwritten().is_empty());
    }

    #[test]
    fn calls_the_task_names_must_succeed() {
        let task = "Start a helper with SPAWN_AGENT. Then WAIT for it (use the pid SPAWN_AGENT returns). Then exit with SYS_EXIT.";
        assert_eq!(task_calls(task), [Call::SPAWN_AGENT, Call::WAIT]);
        assert!(task_calls("Wait for it, then say OK. FS_READS is no call.").is_empty());
        let mut c = FinishCheck::new(task);
        assert_eq!(c.unmade(), ["SPAWN_AGENT", "WAIT"]);
        c.note(
            Call::SPAWN_AGENT,
            &json!({"name": "helper"}),
            &json!({"pid": 3}),
        );
        assert_eq!(c.unmade(), ["WAIT"]);
        c.note(Call::WAIT, &json!({"pid": 3}), &json!({"code": 0}));
        assert!(c.unmade().is_empty());
    }
}
