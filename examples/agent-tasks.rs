//! `agent-tasks`: how many ordinary multi-step tasks LLM agents complete on
//! AgentOS with a real model, in each mode the runtime offers.
//!
//!     sudo target/release/examples/agent-tasks [--serve qwen | --llm-url URL]
//!          [--modes text,grammar,json_schema,tool_calls,baseline] [--tasks a,b]
//!
//! It starts a real `agentosd` (the binaries beside it) configured with one
//! OpenAI-compatible provider — the llama-server it starts itself from
//! `shared/realllm/serve.sh` (`--serve`), or the one at `--llm-url` — and
//! one model per mode: free text (`text`), `constrain = "grammar"`,
//! `constrain = "json_schema"` and `tool_calls = true`, all at temperature
//! 0 with a fixed seed. Every task of `bench/tasks.rs` runs once per mode,
//! one agent at a time; its checker looks at the outcome (files, exit code,
//! messages, children), never at the transcript. `baseline` runs the same
//! tasks through `bench/baseline-loop.py`, the simplest loop around the
//! same model (a short prompt, the first call of each reply, lenient
//! arguments), as a program under AgentOS.
//!
//! It prints one line per run and, per mode, tasks completed, runs that
//! exited 0 although their checker failed ("false exit 0"), inferences,
//! tokens and wall time. docs/BENCHMARKS.md has the recorded runs.

#[path = "bench/daemon.rs"]
#[allow(dead_code)]
mod daemon;
#[path = "bench/llama.rs"]
mod llama;
#[path = "bench/tasks.rs"]
mod tasks;

use agentos::admin::client::Client;
use agentos::admin::protocol::{AdminRequest, SpawnRequest};
use agentos::drivers::fs::CopyEntry;
use agentos::kernel::ipc::Message;
use agentos::kernel::pcb::{ExitStatus, LimitsPatch, Pcb};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::Parser;
use daemon::{BenchDaemon, Bins};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tasks::{Env, Outcome, Task};

const MODES: [&str; 5] = ["text", "grammar", "json_schema", "tool_calls", "baseline"];

/// Graded multi-step tasks for LLM agents against a real model (run as root).
#[derive(Debug, Parser)]
#[command(name = "agent-tasks")]
struct Opts {
    /// Start shared/realllm/serve.sh with this model (qwen or smol).
    #[arg(long, conflicts_with = "llm_url")]
    serve: Option<String>,
    /// An OpenAI-compatible server already running, e.g. http://127.0.0.1:8095.
    #[arg(long)]
    llm_url: Option<String>,
    /// The provider's model id.
    #[arg(long, default_value = "qwen")]
    model_id: String,
    /// Modes to run: text, grammar, json_schema, tool_calls, baseline.
    #[arg(long, value_delimiter = ',', default_values_t = MODES.map(String::from))]
    modes: Vec<String>,
    /// Only these tasks (names from bench/tasks.rs).
    #[arg(long, value_delimiter = ',')]
    tasks: Vec<String>,
    /// Sampling seed sent with every request.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Leave sampling fields out of the model configuration (for daemons
    /// that predate them; pass --temp/--seed to the server instead).
    #[arg(long)]
    no_sampling: bool,
    /// Extra lines for every [[models]] entry, e.g. "max_turns = 12".
    #[arg(long)]
    model_toml: Vec<String>,
    /// Longest one run may take before the agent is killed.
    #[arg(long, default_value_t = 300)]
    run_timeout_s: u64,
    /// Token budget of each agent.
    #[arg(long, default_value_t = 60_000)]
    budget_tokens: u64,
    /// Directory with agentosd, agentos-launcher, agentos-runtime, agentos
    /// and examples/bench-agent [default: the bench's target directory].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Write every agent's log here (one file per run).
    #[arg(long)]
    logs: Option<PathBuf>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep the daemon's state directory.
    #[arg(long)]
    keep: bool,
}

/// One agent's run of one task.
struct Run {
    mode: String,
    task: &'static str,
    passed: bool,
    why: String,
    exit: ExitStatus,
    turns: u64,
    tokens: u64,
    wall: Duration,
}

fn main() {
    let opts = Opts::parse();
    if let Err(e) = run(&opts) {
        eprintln!("agent-tasks: {e}");
        std::process::exit(1);
    }
}

fn run(opts: &Opts) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("must run as root (it starts a real agentosd)".into());
    }
    for m in &opts.modes {
        if !MODES.contains(&m.as_str()) {
            return Err(format!("unknown mode {m:?} (one of {})", MODES.join(", ")));
        }
    }
    let all = tasks::all();
    for t in &opts.tasks {
        if !all.iter().any(|x| x.name == t) {
            return Err(format!("unknown task {t:?}"));
        }
    }
    let chosen: Vec<&Task> = all
        .iter()
        .filter(|t| opts.tasks.is_empty() || opts.tasks.iter().any(|n| n == t.name))
        .collect();
    let server = match &opts.serve {
        Some(model) => {
            eprintln!("agent-tasks: starting llama-server ({model})");
            Some(llama::LlamaServer::start(
                model,
                &[],
                Duration::from_secs(180),
            )?)
        }
        None => None,
    };
    let url = match (&server, &opts.llm_url) {
        (Some(s), _) => s.url(),
        (None, Some(u)) => u.trim_end_matches('/').to_string(),
        (None, None) => return Err("give --serve MODEL or --llm-url URL".into()),
    };
    let bins = Bins::locate(opts.bin_dir.as_deref())?;
    let d = BenchDaemon::start(
        &bins,
        &format!("{}-tasks", std::process::id()),
        (700_000, 719_999),
        &config_text(opts, &url),
        opts.keep,
    )?;
    if let Some(dir) = &opts.logs {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mailbox = spawn(
        &d,
        SpawnRequest {
            name: "mailbox".into(),
            program: "/bin/sleep".into(),
            args: vec!["100000".into()],
            permissions: Some(vec![]),
            ..Default::default()
        },
    )?
    .pid;
    let env = Env { mailbox };
    let started = Instant::now();
    let mut runs = Vec::new();
    for mode in &opts.modes {
        for task in &chosen {
            let r = run_one(opts, &d, &env, mode, task)?;
            println!(
                "{:<11} {:<13} {} exit {:>3} turns {:>2} tokens {:>6} {:>5.0}s  {}",
                r.mode,
                r.task,
                if r.passed { "PASS" } else { "fail" },
                r.exit.code,
                r.turns,
                r.tokens,
                r.wall.as_secs_f64(),
                if r.passed {
                    String::new()
                } else {
                    r.why.clone()
                }
            );
            let _ = std::io::stdout().flush();
            runs.push(r);
        }
    }
    summary(&runs, &opts.modes, chosen.len(), started.elapsed());
    if let Some(path) = &opts.json {
        let v = json!({
            "model": opts.serve.clone().unwrap_or_else(|| opts.model_id.clone()),
            "seed": opts.seed,
            "runs": runs.iter().map(|r| json!({
                "mode": r.mode, "task": r.task, "passed": r.passed, "why": r.why,
                "exit": r.exit, "turns": r.turns, "tokens": r.tokens,
                "wall_s": r.wall.as_secs_f64(),
            })).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&v).unwrap_or_default())
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    drop(d);
    drop(server);
    Ok(())
}

fn config_text(opts: &Opts, url: &str) -> String {
    let sampling = if opts.no_sampling {
        String::new()
    } else {
        format!("temperature = 0.0\nseed = {}\n", opts.seed)
    };
    let extra = opts.model_toml.join("\n");
    let mut text = format!(
        r#"# agent-tasks
[webhooks]
listen = "off"

[scheduler]
max_concurrency = 1
inference_timeout_s = 300

[[providers]]
name = "llm"
kind = "openai"
base_url = "{url}/v1"
max_concurrency = 1
timeout_s = 300
max_retries = 1
"#
    );
    for (name, mode_line) in [
        ("text", ""),
        ("grammar", "constrain = \"grammar\"\n"),
        ("json_schema", "constrain = \"json_schema\"\n"),
        ("tool_calls", "tool_calls = true\n"),
    ] {
        text.push_str(&format!(
            "\n[[models]]\nname = \"{name}\"\nprovider = \"llm\"\nmodel = \"{}\"\ncontext_tokens = 8192\nmax_tokens = 512\nchars_per_token = 3.5\n{mode_line}{sampling}{extra}\n",
            opts.model_id
        ));
    }
    text
}

fn call(d: &BenchDaemon, req: &AdminRequest) -> Result<Value, String> {
    let mut c: Client = d.client()?;
    c.call(req).map_err(|e| format!("{}: {e}", req.name()))
}

fn spawn(d: &BenchDaemon, req: SpawnRequest) -> Result<Pcb, String> {
    let v = call(d, &AdminRequest::Spawn(Box::new(req)))?;
    serde_json::from_value(v).map_err(|e| format!("spawn: {e}"))
}

fn inspect(d: &BenchDaemon, pid: u64) -> Result<Pcb, String> {
    let v = call(d, &AdminRequest::Inspect { pid })?;
    serde_json::from_value(v).map_err(|e| format!("inspect: {e}"))
}

/// The request that starts `task` in `mode`.
fn request(opts: &Opts, env: &Env, mode: &str, task: &Task) -> SpawnRequest {
    let mut permissions: Vec<String> = task.permissions.iter().map(|s| s.to_string()).collect();
    let limits = Some(LimitsPatch {
        budget_tokens: Some(opts.budget_tokens),
        ..Default::default()
    });
    let role = (task.role)(env);
    if mode == "baseline" {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bench/baseline-loop.py");
        permissions.push("inference".into());
        return SpawnRequest {
            name: task.name.into(),
            program: "/usr/bin/python3".into(),
            args: vec![
                script.display().to_string(),
                role,
                task.permissions.join(","),
            ],
            ro: vec![
                script
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ],
            permissions: Some(permissions),
            model: Some("text".into()),
            limits,
            copy: seed(task),
            ..Default::default()
        };
    }
    SpawnRequest {
        name: task.name.into(),
        role: Some(role),
        model: Some(mode.into()),
        permissions: Some(permissions),
        limits,
        copy: seed(task),
        ..Default::default()
    }
}

/// The task's files, put into the workspace by the daemon (as the agent)
/// before the agent starts: `agentos spawn --copy`.
fn seed(task: &Task) -> Vec<CopyEntry> {
    task.seed
        .iter()
        .map(|(path, content)| CopyEntry::File {
            path: path.to_string(),
            data: STANDARD.encode(content),
            executable: false,
            append: false,
        })
        .collect()
}

fn run_one(
    opts: &Opts,
    d: &BenchDaemon,
    env: &Env,
    mode: &str,
    task: &Task,
) -> Result<Run, String> {
    let t0 = Instant::now();
    let pcb = spawn(d, request(opts, env, mode, task))?;
    if let Some(body) = task.message {
        call(
            d,
            &AdminRequest::Send {
                pid: pcb.pid,
                body: body.into(),
            },
        )?;
    }
    let waited = call(
        d,
        &AdminRequest::Wait {
            pid: pcb.pid,
            timeout_ms: Some(opts.run_timeout_s * 1000),
        },
    );
    let exit: ExitStatus = match waited {
        Ok(v) => serde_json::from_value(v["exit"].clone()).map_err(|e| format!("wait: {e}"))?,
        Err(_) => {
            // Timed out: end it and take the exit the kill gave it.
            let _ = call(d, &AdminRequest::Kill { pid: pcb.pid });
            let v = call(
                d,
                &AdminRequest::Wait {
                    pid: pcb.pid,
                    timeout_ms: Some(30_000),
                },
            )?;
            serde_json::from_value(v["exit"].clone()).map_err(|e| format!("wait: {e}"))?
        }
    };
    let wall = t0.elapsed();
    let final_pcb = inspect(d, pcb.pid)?;
    let ps = call(d, &AdminRequest::Ps)?;
    let children: Vec<Pcb> = ps
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["ppid"].as_u64() == Some(pcb.pid))
        .filter_map(|p| p["pid"].as_u64())
        .map(|pid| {
            let _ = call(
                d,
                &AdminRequest::Wait {
                    pid,
                    timeout_ms: Some(60_000),
                },
            );
            inspect(d, pid)
        })
        .collect::<Result<_, _>>()?;
    let mailbox: Vec<Message> = serde_json::from_value(call(
        d,
        &AdminRequest::Inbox {
            pid: env.mailbox,
            tail: Some(agentos::admin::protocol::MAX_PAGE),
            since: None,
        },
    )?)
    .map_err(|e| format!("inbox: {e}"))?;
    let outcome = Outcome {
        pcb: final_pcb.clone(),
        exit: exit.clone(),
        workspace: PathBuf::from(&pcb.workspace),
        mailbox,
        children,
    };
    let verdict = (task.check)(&outcome);
    if let Some(dir) = &opts.logs {
        let log = agent_log(d, pcb.pid);
        let path = dir.join(format!("{mode}-{}.log", task.name));
        let text = format!(
            "{} in {mode}: {}\nexit: {exit:?}\n\n{log}",
            task.name,
            match &verdict {
                Ok(()) => "PASS".to_string(),
                Err(e) => format!("fail: {e}"),
            }
        );
        let _ = std::fs::write(path, text);
    }
    Ok(Run {
        mode: mode.into(),
        task: task.name,
        passed: verdict.is_ok(),
        why: verdict.err().unwrap_or_default(),
        exit,
        turns: final_pcb.counters.llm_calls,
        tokens: final_pcb.counters.tokens_in + final_pcb.counters.tokens_out,
        wall,
    })
}

/// The agent's stored log (stdout, stderr, syscalls) as text.
fn agent_log(d: &BenchDaemon, pid: u64) -> String {
    let v = call(
        d,
        &AdminRequest::Logs {
            pid,
            follow: false,
            tail: Some(agentos::admin::protocol::MAX_PAGE),
            since: None,
        },
    )
    .unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{} {}\n",
                e["stream"].as_str().unwrap_or(""),
                e["text"].as_str().unwrap_or("")
            )
        })
        .collect()
}

fn summary(runs: &[Run], modes: &[String], tasks: usize, total: Duration) {
    println!();
    println!(
        "{:<11} {:>9} {:>13} {:>10} {:>9} {:>8}",
        "mode", "completed", "false exit 0", "inferences", "tokens", "wall"
    );
    for mode in modes {
        let mine: Vec<&Run> = runs.iter().filter(|r| &r.mode == mode).collect();
        let passed = mine.iter().filter(|r| r.passed).count();
        let false_ok = mine
            .iter()
            .filter(|r| !r.passed && r.exit.code == 0)
            .count();
        let turns: u64 = mine.iter().map(|r| r.turns).sum();
        let tokens: u64 = mine.iter().map(|r| r.tokens).sum();
        let wall: Duration = mine.iter().map(|r| r.wall).sum();
        println!(
            "{:<11} {:>6}/{:<2} {:>13} {:>10} {:>9} {:>7.0}s",
            mode,
            passed,
            tasks,
            false_ok,
            turns,
            tokens,
            wall.as_secs_f64()
        );
    }
    println!("total wall time {:.0}s", total.as_secs_f64());
}
