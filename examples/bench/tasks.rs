//! The graded tasks of `agent-tasks`: ordinary multi-step jobs an agent is
//! given as its role, each with the permissions it needs, the files put in
//! its workspace before it starts, and a checker of the outcome — files,
//! exit code, messages and children, never the transcript.

use agentos::kernel::ipc::Message;
use agentos::kernel::pcb::{ExitStatus, Pcb};
use std::path::{Path, PathBuf};

/// What a checker may look at once the agent has ended.
pub struct Outcome {
    pub pcb: Pcb,
    pub exit: ExitStatus,
    pub workspace: PathBuf,
    /// The inbox of the mailbox agent (tasks that send a message).
    pub mailbox: Vec<Message>,
    /// The agent's children (their final PCBs).
    pub children: Vec<Pcb>,
}

impl Outcome {
    fn file(&self, path: &str) -> Result<String, String> {
        let p = self.workspace.join(path.trim_start_matches('/'));
        std::fs::read_to_string(&p).map_err(|e| format!("{path}: {e}"))
    }

    fn exited_ok(&self) -> Result<(), String> {
        if self.exit.code == 0 {
            Ok(())
        } else {
            Err(format!("exit {} ({})", self.exit.code, self.exit.reason))
        }
    }
}

/// What the task text may refer to.
pub struct Env {
    /// Pid of an idle agent whose inbox the checker reads.
    pub mailbox: u64,
}

pub struct Task {
    pub name: &'static str,
    /// The role given to the agent.
    pub role: fn(&Env) -> String,
    pub permissions: &'static [&'static str],
    /// Files put in the workspace before the agent's first step.
    pub seed: &'static [(&'static str, &'static str)],
    /// A message sent to the agent as soon as it exists.
    pub message: Option<&'static str>,
    pub check: fn(&Outcome) -> Result<(), String>,
}

fn expect_eq(what: &str, got: &str, want: &str) -> Result<(), String> {
    if got.trim() == want {
        Ok(())
    } else {
        Err(format!("{what} is {:?}, expected {want:?}", clip(got)))
    }
}

fn expect_contains(what: &str, got: &str, want: &str) -> Result<(), String> {
    if got.contains(want) {
        Ok(())
    } else {
        Err(format!(
            "{what} is {:?}, expected it to contain {want:?}",
            clip(got)
        ))
    }
}

fn clip(s: &str) -> String {
    let s: String = s.chars().take(120).collect();
    s
}

/// Runs a Python script of the workspace as nobody (on a copy) and returns
/// its stdout.
fn run_python(script: &Path) -> Result<String, String> {
    let dir = std::env::temp_dir().join(format!("agent-tasks-py-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let copy = dir.join("script.py");
    std::fs::copy(script, &copy).map_err(|e| format!("{}: {e}", script.display()))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
    let _ = std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644));
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["timeout", "10", "/usr/bin/python3", "-I"])
        .arg(&copy)
        .current_dir(&dir)
        .output()
        .map_err(|e| format!("running python3: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every task, in the order they run.
pub fn all() -> Vec<Task> {
    vec![
        Task {
            name: "write_read",
            role: |_| {
                "Write the text hello agentos into the file /greeting.txt. Then read the file back to check it. Then exit.".into()
            },
            permissions: &["fs"],
            seed: &[],
            message: None,
            check: |o| {
                expect_eq("/greeting.txt", &o.file("/greeting.txt")?, "hello agentos")?;
                o.exited_ok()
            },
        },
        Task {
            name: "cmd_output",
            role: |_| {
                "Run the shell command `uname -s` with EXEC_CMD and save its output in the file /os.txt. Then exit.".into()
            },
            permissions: &["fs", "exec"],
            seed: &[],
            message: None,
            check: |o| {
                expect_contains("/os.txt", &o.file("/os.txt")?, "Linux")?;
                o.exited_ok()
            },
        },
        Task {
            name: "compute",
            role: |_| {
                "Compute 17 * 23 with EXEC_CMD (the shell command `expr 17 \\* 23`) and write the result into the file /answer.txt. Then exit.".into()
            },
            permissions: &["fs", "exec"],
            seed: &[],
            message: None,
            check: |o| {
                expect_eq("/answer.txt", &o.file("/answer.txt")?, "391")?;
                o.exited_ok()
            },
        },
        Task {
            name: "send_msg",
            role: |e| {
                format!(
                    "Send the message \"ready\" to agent {} with SEND_MSG. Then exit.",
                    e.mailbox
                )
            },
            permissions: &["ipc"],
            seed: &[],
            message: None,
            check: |o| {
                let got: Vec<&Message> = o.mailbox.iter().filter(|m| m.from == o.pcb.pid).collect();
                match got.first() {
                    None => Err("the mailbox received no message from the agent".into()),
                    Some(m) => expect_eq("the message", &m.body, "ready"),
                }?;
                o.exited_ok()
            },
        },
        Task {
            name: "recv_msg",
            role: |_| {
                "A message with a secret word is in your inbox. Take it with RECV_MSG, then write the secret word (only the word) into the file /secret.txt. Then exit.".into()
            },
            permissions: &["ipc", "fs"],
            seed: &[],
            message: Some("The secret word is pineapple."),
            check: |o| {
                expect_contains(
                    "/secret.txt",
                    &o.file("/secret.txt")?.to_lowercase(),
                    "pineapple",
                )?;
                o.exited_ok()
            },
        },
        Task {
            name: "memory",
            role: |_| {
                "Store the text The capital of France is Paris in your memory with MEM_WRITE under the key capital. Then look it up with MEM_READ (query: capital of France) and write the text you found into the file /capital.txt. Then exit.".into()
            },
            permissions: &["memory", "fs"],
            seed: &[],
            message: None,
            check: |o| {
                expect_contains("/capital.txt", &o.file("/capital.txt")?, "Paris")?;
                o.exited_ok()
            },
        },
        Task {
            name: "index_files",
            role: |_| {
                "The directory /docs holds three text files. Write the file /index.txt with one line per file: the file name, a colon and the file's content, for example `x.txt: some text`. Then exit.".into()
            },
            permissions: &["fs"],
            seed: &[
                ("/docs/a.txt", "apples"),
                ("/docs/b.txt", "bananas"),
                ("/docs/c.txt", "cherries"),
            ],
            message: None,
            check: |o| {
                let index = o.file("/index.txt")?;
                for (name, content) in [
                    ("a.txt", "apples"),
                    ("b.txt", "bananas"),
                    ("c.txt", "cherries"),
                ] {
                    if !index
                        .lines()
                        .any(|l| l.contains(name) && l.contains(content))
                    {
                        return Err(format!(
                            "/index.txt has no line with {name} and {content}: {:?}",
                            clip(&index)
                        ));
                    }
                }
                o.exited_ok()
            },
        },
        Task {
            name: "recover_read",
            role: |_| {
                "Read the file /settings.txt. If it does not exist, create it with the content mode=default. Then exit.".into()
            },
            permissions: &["fs"],
            seed: &[],
            message: None,
            check: |o| {
                expect_eq("/settings.txt", &o.file("/settings.txt")?, "mode=default")?;
                o.exited_ok()
            },
        },
        Task {
            name: "fix_bug",
            role: |_| {
                "The Python script /calc.py should print 5, but it has a bug. Read it, fix the bug by writing the corrected script to /calc.py, then run `python3 calc.py` with EXEC_CMD to check that it prints 5. Then exit.".into()
            },
            permissions: &["fs", "exec"],
            seed: &[(
                "/calc.py",
                "def add(a, b):\n    return a - b\n\n\nprint(add(2, 3))\n",
            )],
            message: None,
            check: |o| {
                let out = run_python(&o.workspace.join("calc.py"))?;
                expect_eq("the output of calc.py", &out, "5")?;
                o.exited_ok()
            },
        },
        Task {
            name: "spawn_wait",
            role: |_| {
                "Start a helper agent with SPAWN_AGENT: its name is helper and its role is Exit with code 0. Then WAIT for the helper to end (use the pid SPAWN_AGENT returns). Then exit.".into()
            },
            permissions: &["process"],
            seed: &[],
            message: None,
            check: |o| {
                let helper = o
                    .children
                    .iter()
                    .find(|c| c.name == "helper")
                    .ok_or("no child named helper")?;
                let (Some(child_end), Some(end)) = (helper.ended_ms, o.pcb.ended_ms) else {
                    return Err("the helper did not end".into());
                };
                if child_end > end {
                    return Err("the agent ended before its helper (it did not wait)".into());
                }
                o.exited_ok()
            },
        },
        Task {
            name: "three_lines",
            role: |_| {
                "Write the file /list.txt with three lines: one, two, three (one word per line, in that order). Then exit.".into()
            },
            permissions: &["fs"],
            seed: &[],
            message: None,
            check: |o| {
                let text = o.file("/list.txt")?;
                let lines: Vec<&str> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect();
                if lines != ["one", "two", "three"] {
                    return Err(format!("/list.txt has lines {lines:?}"));
                }
                o.exited_ok()
            },
        },
        Task {
            name: "copy_file",
            role: |_| {
                "Copy the file /input.txt to a new file /copy.txt with the same content. Then exit."
                    .into()
            },
            permissions: &["fs"],
            seed: &[("/input.txt", "alpha beta gamma\n")],
            message: None,
            check: |o| {
                expect_eq("/copy.txt", &o.file("/copy.txt")?, "alpha beta gamma")?;
                o.exited_ok()
            },
        },
        Task {
            name: "count_lines",
            role: |_| {
                "Count the lines of the file /data.txt with EXEC_CMD (for example `wc -l < data.txt`) and write the number into the file /count.txt. Then exit.".into()
            },
            permissions: &["fs", "exec"],
            seed: &[(
                "/data.txt",
                "red\norange\nyellow\ngreen\nblue\nindigo\nviolet\n",
            )],
            message: None,
            check: |o| {
                expect_eq("/count.txt", &o.file("/count.txt")?, "7")?;
                o.exited_ok()
            },
        },
        Task {
            name: "replace_file",
            role: |_| {
                "Delete the file /old.txt, then create the file /new.txt with the content fresh. Then exit.".into()
            },
            permissions: &["fs"],
            seed: &[("/old.txt", "obsolete\n")],
            message: None,
            check: |o| {
                if o.workspace.join("old.txt").exists() {
                    return Err("/old.txt still exists".into());
                }
                expect_eq("/new.txt", &o.file("/new.txt")?, "fresh")?;
                o.exited_ok()
            },
        },
        Task {
            name: "uppercase",
            role: |_| {
                "Read the file /name.txt and write its content in capital letters into the file /upper.txt. Then exit.".into()
            },
            permissions: &["fs"],
            seed: &[("/name.txt", "agentos\n")],
            message: None,
            check: |o| {
                expect_eq("/upper.txt", &o.file("/upper.txt")?, "AGENTOS")?;
                o.exited_ok()
            },
        },
    ]
}
