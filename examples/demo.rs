//! The quick-start demonstration: starts a throw-away `agentosd`, runs a
//! small team of LLM agents (a lead that spawns a writer and a researcher,
//! which message, pipe, write files and exit) and a probe that tries to
//! escape its sandbox, and shows them live through the real `agentos` CLI.
//!
//!     cargo build --all-targets && sudo ./target/debug/examples/demo
//!
//! By default the agents think with the scripted provider (no key, no
//! network). `demo --config FILE --model NAME` points the same team at a
//! real model from a daemon configuration file instead.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    if let Err(e) = run() {
        eprintln!("demo: {e}");
        std::process::exit(1);
    }
}

struct Demo {
    bin: PathBuf,
    socket: PathBuf,
    daemon: Option<Child>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            // SIGTERM: the daemon flushes and removes its socket.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(d.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = d.wait();
        }
    }
}

impl Demo {
    /// Runs `agentos ARGS` and shows its output.
    fn cli(&self, args: &[&str]) -> Result<String, String> {
        println!("\n$ agentos {}", args.join(" "));
        let out = Command::new(self.bin.join("agentos"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .map_err(|e| format!("running agentos: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        print!("{text}");
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        Ok(text)
    }

    /// Spawns an agent with `--json` and returns its pid.
    fn spawn(&self, args: &[&str]) -> Result<u64, String> {
        let out = Command::new(self.bin.join("agentos"))
            .arg("--socket")
            .arg(&self.socket)
            .arg("--json")
            .arg("spawn")
            .args(args)
            .output()
            .map_err(|e| format!("running agentos: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("spawn output: {e}"))?;
        let pid = v["pid"].as_u64().ok_or("spawn printed no pid")?;
        println!(
            "spawned agent {pid} {:<8} uid {}  {}",
            v["name"].as_str().unwrap_or(""),
            v["uid"],
            args.join(" ")
        );
        Ok(pid)
    }
}

fn run() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "run me as root (sudo): agents need namespaces, cgroups and their own uids".into(),
        );
    }
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let examples = me.parent().ok_or("no parent dir")?.to_path_buf();
    let bin = examples.parent().ok_or("no target dir")?.to_path_buf();
    for b in ["agentosd", "agentos", "agentos-launcher"] {
        if !bin.join(b).exists() {
            return Err(format!(
                "{} missing: run `cargo build --all-targets` first",
                bin.join(b).display()
            ));
        }
    }
    let probe = examples.join("probe");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let (config, model, real_model) = match (flag("--config"), flag("--model")) {
        (Some(c), Some(m)) => (PathBuf::from(c), m, true),
        (None, None) => (PathBuf::new(), "scripted".to_string(), false),
        _ => return Err("give both --config FILE and --model NAME, or neither".into()),
    };
    let dir = std::env::temp_dir().join(format!("agentos-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let socket = dir.join("agentosd.sock");
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let config = if real_model {
        config
    } else {
        // The scripted provider replays examples/scripts/team.json.
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scripts/team.json");
        let path = dir.join("agentosd.toml");
        std::fs::write(
            &path,
            format!(
                "[[providers]]\nname = \"script\"\nkind = \"scripted\"\nscript = \"{}\"\n\n[[models]]\nname = \"scripted\"\nprovider = \"script\"\n",
                script.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        path
    };

    println!("== starting agentosd on {}", dir.display());
    let log = std::fs::File::create(dir.join("agentosd.log")).map_err(|e| e.to_string())?;
    let daemon = Command::new(bin.join("agentosd"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(&socket)
        .arg("--policies")
        .arg(&policies)
        .arg("--config")
        .arg(&config)
        .arg("--webhooks-listen")
        .arg("off")
        // The demo's state lives in a temporary directory: the smallest
        // workspace image (the 8 GiB default is for /var/lib/agentos).
        .arg("--workspace-image-size")
        .arg("256M")
        .arg("--cgroup-name")
        .arg(format!("agentos-demo-{}", std::process::id()))
        .stdin(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting agentosd: {e}"))?;
    let demo = Demo {
        bin,
        socket,
        daemon: Some(daemon),
    };
    let up = Instant::now();
    while std::os::unix::net::UnixStream::connect(&demo.socket).is_err() {
        if up.elapsed() > Duration::from_secs(15) {
            return Err(format!(
                "agentosd did not start; see {}",
                dir.join("agentosd.log").display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    demo.cli(&["status"])?;

    println!(
        "\n== a team of LLM agents ({})",
        if real_model {
            "real model"
        } else {
            "scripted model"
        }
    );
    let lead = demo.spawn(&[
        "--name",
        "lead",
        "--model",
        &model,
        "--role",
        "Lead a team of two agents: a writer that turns notes arriving on its stdin into /report.md, \
         and a researcher that writes three facts about Linux namespaces to its stdout, piped into \
         the writer. Wait for both, read their messages, write /summary.md and exit.",
    ])?;
    // Follow the lead's thoughts live until it exits.
    demo.cli(&["logs", "-f", &lead.to_string()])?;
    demo.cli(&["ps", "--all"])?;
    demo.cli(&["tree", "--all"])?;
    for pid in [2, 3] {
        let _ = demo.cli(&["logs", "--tail", "8", &pid.to_string()]);
    }

    println!("\n== a probe tries to escape its sandbox");
    let p = probe.display().to_string();
    let lead_ws = dir.join("state/workspaces").join(lead.to_string());
    let prober = demo.spawn(&[
        "--name",
        "prober",
        "--program",
        &p,
        "--allow",
        "fs",
        "--",
        "confine",
        "--other-workspace",
        &lead_ws.display().to_string(),
        "--admin-socket",
        &demo.socket.display().to_string(),
    ])?;
    demo.cli(&["wait", &prober.to_string()])?;

    println!("\n== what the probe found from inside its sandbox");
    let report = dir
        .join("state/workspaces")
        .join(prober.to_string())
        .join("report.json");
    match std::fs::read_to_string(&report).map(|t| serde_json::from_str::<serde_json::Value>(&t)) {
        Ok(Ok(v)) => {
            for c in v["checks"].as_array().into_iter().flatten() {
                println!(
                    "  [{}] {:<28} {}",
                    if c["ok"].as_bool() == Some(true) {
                        "held"
                    } else {
                        "FAIL"
                    },
                    c["name"].as_str().unwrap_or(""),
                    c["detail"].as_str().unwrap_or("")
                );
            }
            println!("  all confinement checks held: {}", v["all_ok"]);
        }
        _ => println!("  (no report at {})", report.display()),
    }

    // Read while the daemon runs: workspaces live on the image it mounts
    // (state/workspaces.img) and unmounts when it stops.
    println!("\n== results");
    for (pid, file) in [(1, "summary.md"), (2, "report.md")] {
        let path = dir
            .join("state/workspaces")
            .join(pid.to_string())
            .join(file);
        println!("agent {pid} wrote {}:", path.display());
        match std::fs::read_to_string(&path) {
            Ok(text) => println!(
                "{}",
                text.trim_end()
                    .lines()
                    .map(|l| format!("    {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
            Err(e) => println!("    ({e})"),
        }
    }
    drop(demo);
    println!(
        "state directory: {}/state (sled database; workspaces/<pid>/ on workspaces.img, mounted while agentosd runs)",
        dir.display()
    );
    println!("probe report:    {}", report.display());
    println!("daemon log:      {}/agentosd.log", dir.display());
    println!(
        "look again:      sudo {0}/agentosd --state-dir {1}/state --socket {1}/agentosd.sock --policies {2} --config {3} &\n                 {0}/agentos --socket {1}/agentosd.sock ps --all",
        me.parent()
            .and_then(Path::parent)
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        dir.display(),
        policies.display(),
        config.display()
    );
    Ok(())
}
