//! The check before a successful SYS_EXIT (`confirm_exit`): the files and
//! directories the task names (`/os.txt`, `/docs`) must each have been
//! used by a call that succeeded — written, read, listed or deleted, or
//! named in a command that ran. A model that finishes without touching
//! one is held and told which, twice at most; if it still finishes, the
//! agent ends with [`super::exit::UNFINISHED`] instead of a success it
//! did not earn.
//!
//! This is a check of what was done, not of whether it was done well: a
//! file written with the wrong content passes it. One no-op is caught on
//! the way: an FS_WRITE of exactly the text the model last read from that
//! file changed nothing, and the model is told so.

use crate::abi::calls::Call;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Exits held for paths not yet used before the agent is ended.
pub const MAX_HOLDS: u32 = 2;

/// The task's paths and what the agent's successful calls used.
#[derive(Debug, Default)]
pub struct FinishCheck {
    named: Vec<String>,
    used: BTreeSet<String>,
    /// Words of commands that ran (`wc -l < data.txt` uses /data.txt).
    command_words: BTreeSet<String>,
    /// The whole text last read from each file.
    read: BTreeMap<String, String>,
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
            ..FinishCheck::default()
        }
    }

    /// Takes in a call that succeeded with `result`; returns a note for the
    /// model when the call changed nothing.
    pub fn note(&mut self, call: Call, args: &Value, result: &Value) -> Option<String> {
        let path = args["path"].as_str().map(normal);
        match (call, &path) {
            (Call::FS_READ, Some(p)) => match result["content"].as_str() {
                Some(text)
                    if result["truncated"] == false
                        && result["encoding"] != "base64"
                        && args.get("offset").is_none() =>
                {
                    self.read.insert(p.clone(), text.to_string());
                }
                _ => {
                    self.read.remove(p);
                }
            },
            (Call::FS_WRITE | Call::FS_DELETE, Some(p)) => {
                let before = self.read.remove(p);
                let same = call == Call::FS_WRITE
                    && args["append"] != true
                    && before.is_some_and(|b| args["content"].as_str() == Some(b.as_str()));
                if same {
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
                        self.command_words.insert(normal(w));
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
}
