//! `agentos`: the command-line client of agentosd's admin socket.
//!
//! Exit codes: 0 success; 1 the daemon refused or failed the request;
//! 2 usage error; 3 the daemon cannot be reached; `wait` exits with the
//! agent's own exit code (0-255).

#[path = "agentos/cp.rs"]
mod cp;
#[path = "agentos/show.rs"]
mod show;

use agentos::admin::client::{Client, ClientError};
use agentos::admin::hostcopy::{self, HostCopyError};
use agentos::admin::protocol::{AdminRequest, DEFAULT_SOCKET, SpawnRequest};
use agentos::kernel::journal::LogEvent;
use agentos::kernel::pcb::{LimitsPatch, Pcb, now_ms};
use clap::{Parser, Subcommand};
use cp::note_left_out;
use serde_json::Value;
use show::{fmt_time, print_ps, print_status, print_top, print_tree};
use std::path::PathBuf;
use std::process::ExitCode;

/// Control AgentOS agents: spawn confined agents, watch and manage them.
#[derive(Debug, Parser)]
#[command(name = "agentos", version)]
struct Cli {
    /// Admin socket of agentosd.
    #[arg(long, global = true, env = "AGENTOS_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Print agent-provided text (output, messages, reasons) as it is. By
    /// default control characters in it are shown escaped (e.g. `\x1b`),
    /// so that an agent cannot forge lines or drive the terminal.
    #[arg(long, global = true)]
    raw: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
enum Command {
    /// Start a new confined agent running PROGRAM.
    ///
    /// Example: agentos spawn --name probe --program /usr/local/bin/my-agent -- --flag
    Spawn(SpawnArgs),
    /// Copy files between the host and an agent's workspace, like `docker cp`.
    ///
    /// Into a running agent:        agentos cp ./calc.py 12:/calc.py
    /// Out of an agent (even ended): agentos cp 12:/results ./results
    ///
    /// Host files are read and written as you; in the workspace, files are
    /// written as the agent (owned by it, within its quota). Symlinks are
    /// not followed on either side: one named here is refused, one inside a
    /// copied directory is left out and reported. A DEST that is an existing
    /// directory receives the source under its own name.
    Cp {
        /// A host path, or PID:PATH in an agent's workspace.
        src: String,
        /// A host path, or PID:PATH in an agent's workspace.
        dest: String,
    },
    /// List agents (running ones; --all includes terminated).
    Ps {
        #[arg(long, short)]
        all: bool,
    },
    /// Show the agent process tree.
    Tree {
        #[arg(long, short)]
        all: bool,
    },
    /// Show an agent's whole process control block.
    Inspect { pid: u64 },
    /// Show an agent's output and syscall trace: the last 1000 events
    /// unless --tail says otherwise (at most 10000); a note on stderr says
    /// how many earlier ones were left out.
    Logs {
        pid: u64,
        /// Keep following until the agent terminates.
        #[arg(long, short)]
        follow: bool,
        /// Only the last N events (default 1000, at most 10000).
        #[arg(long)]
        tail: Option<usize>,
        /// Only events after sequence number SEQ (the `seq` of --json).
        #[arg(long, value_name = "SEQ")]
        since: Option<u64>,
    },
    /// Put a message in an agent's inbox (it reads it with RECV_MSG).
    Send { pid: u64, message: String },
    /// List the messages waiting in an agent's inbox: the last 1000
    /// unless --tail says otherwise (at most 10000); a note on stderr says
    /// how many earlier ones were left out.
    Inbox {
        pid: u64,
        /// Only the last N messages (default 1000, at most 10000).
        #[arg(long)]
        tail: Option<usize>,
        /// Only messages after sequence number SEQ.
        #[arg(long, value_name = "SEQ")]
        since: Option<u64>,
    },
    /// Freeze an agent (all its processes).
    Stop { pid: u64 },
    /// Thaw a stopped agent.
    Cont { pid: u64 },
    /// Kill an agent and everything it started.
    Kill { pid: u64 },
    /// Wait for an agent to terminate; exits with its exit code.
    Wait {
        pid: u64,
        /// Give up after this many seconds (exit 1).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Daemon version, uptime and the kernel's confinement features.
    Status,
    /// The audit trail: denied syscalls and admin actions; the last 1000
    /// entries unless --tail says otherwise (at most 10000); a note on
    /// stderr says how many earlier ones were left out.
    Audit {
        /// Only entries about this agent.
        #[arg(long)]
        pid: Option<u64>,
        /// Only the last N entries (default 1000, at most 10000).
        #[arg(long)]
        tail: Option<usize>,
        /// Only entries after sequence number SEQ (the `seq` of --json).
        #[arg(long, value_name = "SEQ")]
        since_seq: Option<u64>,
        /// Only entries newer than this: a duration ago (30s, 10m, 2h, 1d)
        /// or a Unix time in milliseconds.
        #[arg(long, value_parser = parse_since)]
        since: Option<u64>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Live view: per agent state, tokens, LLM calls, syscalls, queue wait;
    /// the scheduler's queues and spend.
    Top {
        /// Print one snapshot and exit.
        #[arg(long)]
        once: bool,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
}

#[derive(Debug, clap::Args)]
struct SpawnArgs {
    /// Agent name (letters, digits, - _ .).
    #[arg(long)]
    name: String,
    /// Absolute path of the program to run confined. Omit it for an LLM agent
    /// (--model/--role), which runs the built-in runtime.
    #[arg(long, required_unless_present_any = ["model", "role"])]
    program: Option<String>,
    /// Model of an LLM agent (a name from the daemon's configuration).
    #[arg(long)]
    model: Option<String>,
    /// Role of an LLM agent: its instructions, e.g. "You are a researcher...".
    #[arg(long)]
    role: Option<String>,
    /// LLM tokens (prompt + completion) the agent may spend.
    #[arg(long)]
    budget_tokens: Option<u64>,
    /// Inferences the agent may make (an LLM agent's turns); at most the
    /// model's max_turns for the built-in runtime.
    #[arg(long)]
    max_turns: Option<u64>,
    /// Scheduling weight 1-100: inference token shares are proportional to it.
    #[arg(long)]
    priority: Option<u32>,
    /// Another model the agent may use (LLM_INFER, children); repeatable.
    #[arg(long = "allow-model")]
    allow_model: Vec<String>,
    /// Sandbox profile from the policies directory.
    #[arg(long)]
    profile: Option<String>,
    /// Syscalls or groups to grant (e.g. fs,ipc,SLEEP); repeatable. Default:
    /// the profile's. `--allow none` grants nothing.
    #[arg(long, value_delimiter = ',')]
    allow: Vec<String>,
    /// Memory limit (e.g. 256M, 1G).
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// Process/thread limit.
    #[arg(long)]
    pids: Option<u64>,
    /// CPU quota in percent of one core.
    #[arg(long)]
    cpu: Option<u64>,
    /// Wall-clock lifetime in seconds.
    #[arg(long)]
    wall_time: Option<u64>,
    /// Workspace quota (e.g. 100M).
    #[arg(long, value_parser = parse_size)]
    workspace: Option<u64>,
    /// Syscalls per second on fd 3.
    #[arg(long)]
    syscall_rate: Option<u64>,
    /// Extra host path made visible read-only (e.g. a script); repeatable.
    #[arg(long)]
    ro: Vec<String>,
    /// Put a host file or directory into the workspace before the agent
    /// starts, owned by the agent: SRC[:DEST], DEST defaulting to /NAME of
    /// SRC; repeatable. Read as you; symlinks are not followed. All copies
    /// travel in the spawn request ([admin] max_request_bytes, 512 KiB by
    /// default); bring bigger trees with `agentos cp` once it runs.
    #[arg(long = "copy", value_name = "SRC[:DEST]")]
    copy: Vec<String>,
    /// Send this agent's SYS_WRITE_STDOUT output to another agent's stdin.
    #[arg(long)]
    pipe_to: Option<u64>,
    /// Arguments passed to the program (after --).
    #[arg(last = true)]
    args: Vec<String>,
}

fn parse_since(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s}: expected e.g. 10m or a Unix time in ms"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("{s}: unit must be s, m, h or d")),
    };
    Ok(now_ms().saturating_sub(secs * 1000))
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        None => (s, 1u64),
        Some((i, _)) => {
            let unit = s[i..].to_ascii_uppercase();
            let mult = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => return Err(format!("{s}: unknown unit (use K, M, G or T)")),
            };
            (&s[..i], mult)
        }
    };
    let n: u64 = num.trim().parse().map_err(|_| format!("{s}: not a size"))?;
    n.checked_mul(mult).ok_or_else(|| format!("{s}: too large"))
}

/// Why a command failed: the daemon's side, or the host's.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    HostCopy(#[from] HostCopyError),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(CliError::HostCopy(HostCopyError::Usage(e))) => {
            eprintln!("agentos: {e}");
            ExitCode::from(2)
        }
        Err(CliError::HostCopy(e)) => {
            eprintln!("agentos: {e}");
            ExitCode::from(1)
        }
        Err(CliError::Client(e)) => client_failed(e),
    }
}

fn client_failed(e: ClientError) -> ExitCode {
    match e {
        ClientError::Connect { path, source } => {
            eprintln!(
                "agentos: cannot connect to {path}: {source}\n  is agentosd running? (--socket or AGENTOS_SOCKET)"
            );
            ExitCode::from(3)
        }
        ClientError::Refused(e) => {
            eprintln!("agentos: {}: {}", e.code, e.message);
            ExitCode::from(1)
        }
        e => {
            eprintln!("agentos: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: &Cli) -> Result<ExitCode, CliError> {
    if let Command::Completions { shell } = &cli.command {
        use clap::CommandFactory;
        clap_complete::generate(
            *shell,
            &mut Cli::command(),
            "agentos",
            &mut std::io::stdout(),
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut c = Client::connect(&cli.socket)?;
    let print_json =
        |v: &Value| println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    // Agent-provided text, made safe for a terminal unless --raw.
    let shown = |s: &str| -> String {
        if cli.raw {
            s.to_string()
        } else {
            agentos::terminal::escape(s).into_owned()
        }
    };
    match &cli.command {
        Command::Spawn(a) => {
            let permissions = match a.allow.as_slice() {
                [] => None,
                [one] if one == "none" => Some(Vec::new()),
                list => Some(list.to_vec()),
            };
            let limits = LimitsPatch {
                memory_bytes: a.memory,
                pids: a.pids,
                cpu_percent: a.cpu,
                wall_time_s: a.wall_time,
                workspace_bytes: a.workspace,
                syscalls_per_s: a.syscall_rate,
                budget_tokens: a.budget_tokens,
                max_turns: a.max_turns,
                ..Default::default()
            };
            let mut copy = Vec::new();
            for spec in &a.copy {
                let (src, dest) = hostcopy::parse_copy_spec(spec)?;
                let tree = hostcopy::read_host(&src, &dest)?;
                note_left_out(&tree.skipped);
                copy.extend(tree.entries);
            }
            let req = AdminRequest::Spawn(Box::new(SpawnRequest {
                name: a.name.clone(),
                program: a.program.clone().unwrap_or_default(),
                args: a.args.clone(),
                profile: a.profile.clone(),
                permissions,
                limits: (limits != LimitsPatch::default()).then_some(limits),
                ro: a.ro.clone(),
                pipe_to: a.pipe_to,
                model: a.model.clone(),
                role: a.role.clone(),
                models: a.allow_model.clone(),
                priority: a.priority,
                copy,
            }));
            let v = c.call(&req)?;
            if cli.json {
                print_json(&v);
            } else {
                let p: Pcb = decode(v)?;
                println!(
                    "spawned agent {} ({}) as uid {}, workspace {}",
                    p.pid, p.name, p.uid, p.workspace
                );
            }
        }
        Command::Cp { src, dest } => return cp::copy(&mut c, cli, src, dest),
        Command::Ps { all } => {
            let pcbs: Vec<Pcb> = decode(c.call(&AdminRequest::Ps)?)?;
            let pcbs: Vec<Pcb> = pcbs.into_iter().filter(|p| *all || p.is_live()).collect();
            if cli.json {
                print_json(&serde_json::to_value(&pcbs).unwrap_or_default());
            } else {
                print_ps(&pcbs);
            }
        }
        Command::Tree { all } => {
            let pcbs: Vec<Value> = decode(c.call(&AdminRequest::Tree)?)?;
            if cli.json {
                print_json(&Value::Array(pcbs));
            } else {
                print_tree(&pcbs, *all);
            }
        }
        Command::Inspect { pid } => print_json(&c.call(&AdminRequest::Inspect { pid: *pid })?),
        Command::Logs {
            pid,
            follow,
            tail,
            since,
        } => {
            let show = |e: &LogEvent| {
                if cli.json {
                    println!("{}", serde_json::to_string(e).unwrap_or_default());
                } else {
                    println!("{} {:<7} {}", fmt_time(e.ts_ms), e.stream, shown(&e.text));
                }
            };
            let req = AdminRequest::Logs {
                pid: *pid,
                follow: *follow,
                tail: *tail,
                since: *since,
            };
            if *follow {
                c.stream(&req, |e| {
                    show(&e);
                    true
                })?;
            } else {
                let (v, skipped) = c.call_paged(&req)?;
                let events: Vec<LogEvent> = decode(v)?;
                events.iter().for_each(show);
                note_skipped(skipped, events.len(), "events", "--since");
            }
        }
        Command::Send { pid, message } => {
            let v = c.call(&AdminRequest::Send {
                pid: *pid,
                body: message.clone(),
            })?;
            if cli.json {
                print_json(&v);
            } else {
                println!("delivered to agent {pid} (seq {})", v["seq"]);
            }
        }
        Command::Inbox { pid, tail, since } => {
            let (v, skipped) = c.call_paged(&AdminRequest::Inbox {
                pid: *pid,
                tail: *tail,
                since: *since,
            })?;
            note_skipped(
                skipped,
                v.as_array().map_or(0, Vec::len),
                "messages",
                "--since",
            );
            if cli.json {
                print_json(&v);
            } else {
                for m in v.as_array().into_iter().flatten() {
                    println!(
                        "{:>8}  from {:<6} {}",
                        m["seq"],
                        m["from"],
                        shown(m["body"].as_str().unwrap_or(""))
                    );
                }
            }
        }
        Command::Stop { pid } | Command::Cont { pid } => {
            let req = if matches!(cli.command, Command::Stop { .. }) {
                AdminRequest::Stop { pid: *pid }
            } else {
                AdminRequest::Cont { pid: *pid }
            };
            let v = c.call(&req)?;
            if cli.json {
                print_json(&v);
            } else {
                println!("agent {pid}: {}", v["state"].as_str().unwrap_or("?"));
            }
        }
        Command::Kill { pid } => {
            let v = c.call(&AdminRequest::Kill { pid: *pid })?;
            if cli.json {
                print_json(&v);
            } else {
                println!(
                    "agent {pid}: {}",
                    shown(v["exit"]["reason"].as_str().unwrap_or("killed"))
                );
            }
        }
        Command::Wait { pid, timeout } => {
            let v = c.call(&AdminRequest::Wait {
                pid: *pid,
                timeout_ms: timeout.map(|t| t * 1000),
            })?;
            let code = v["exit"]["code"].as_i64().unwrap_or(1);
            if cli.json {
                print_json(&v);
            } else {
                println!(
                    "agent {pid}: {} (exit code {code})",
                    shown(v["exit"]["reason"].as_str().unwrap_or("?"))
                );
            }
            return Ok(ExitCode::from(code.clamp(0, 255) as u8));
        }
        Command::Top { once, interval } => loop {
            let v = c.call(&AdminRequest::Top)?;
            if cli.json {
                println!("{}", serde_json::to_string(&v).unwrap_or_default());
            } else {
                if !*once && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                    print!("\x1b[H\x1b[2J");
                }
                print_top(&v);
            }
            if *once {
                break;
            }
            std::thread::sleep(std::time::Duration::from_secs_f64(interval.max(0.1)));
        },
        Command::Completions { .. } => {}
        Command::Audit {
            pid,
            since,
            tail,
            since_seq,
        } => {
            let (v, skipped) = c.call_paged(&AdminRequest::Audit {
                pid: *pid,
                since_ms: *since,
                tail: *tail,
                since_seq: *since_seq,
            })?;
            note_skipped(
                skipped,
                v.as_array().map_or(0, Vec::len),
                "entries",
                "--since-seq",
            );
            if cli.json {
                print_json(&v);
            } else {
                for e in v.as_array().into_iter().flatten() {
                    println!(
                        "{} {:<15} uid {:<6} pid {:<6} {:<14} {}",
                        fmt_time(e["ts_ms"].as_u64().unwrap_or(0)),
                        e["kind"].as_str().unwrap_or(""),
                        e["uid"]
                            .as_u64()
                            .map(|u| u.to_string())
                            .unwrap_or_else(|| "-".into()),
                        e["pid"]
                            .as_u64()
                            .map(|u| u.to_string())
                            .unwrap_or_else(|| "-".into()),
                        shown(e["op"].as_str().unwrap_or("")),
                        shown(e["detail"].as_str().unwrap_or(""))
                    );
                }
            }
        }
        Command::Status => {
            let v = c.call(&AdminRequest::Status)?;
            if cli.json {
                print_json(&v);
            } else {
                print_status(&v);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Says on stderr that a page left earlier entries out.
fn note_skipped(skipped: Option<u64>, shown: usize, what: &str, since_flag: &str) {
    if let Some(n) = skipped.filter(|n| *n > 0) {
        eprintln!(
            "agentos: {n} earlier {what} skipped, showing the last {shown} (use --tail N or {since_flag} SEQ)"
        );
    }
}

fn decode<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ClientError> {
    serde_json::from_value(v).map_err(|e| ClientError::Protocol(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("lots").is_err());
    }
}
