//! The quick-start demonstration: starts a throw-away `agentosd`, runs a
//! few confined agents that talk to each other and probe their own
//! confinement, and shows them through the real `agentos` CLI.
//!
//!     cargo build --all-targets && sudo ./target/debug/examples/demo

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
    let dir = std::env::temp_dir().join(format!("agentos-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let socket = dir.join("agentosd.sock");
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");

    println!("== starting agentosd on {}", dir.display());
    let log = std::fs::File::create(dir.join("agentosd.log")).map_err(|e| e.to_string())?;
    let daemon = Command::new(bin.join("agentosd"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(&socket)
        .arg("--policies")
        .arg(&policies)
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

    println!("\n== a small team of confined agents");
    let p = probe.display().to_string();
    let echo = demo.spawn(&[
        "--name",
        "echo",
        "--program",
        &p,
        "--allow",
        "ipc",
        "--",
        "echo",
    ])?;
    let sender = demo.spawn(&[
        "--name",
        "sender",
        "--program",
        &p,
        "--allow",
        "ipc,fs",
        "--",
        "send",
        &echo.to_string(),
        "3",
    ])?;
    let echo_ws = dir.join("state/workspaces").join(echo.to_string());
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
        &echo_ws.display().to_string(),
        "--admin-socket",
        &demo.socket.display().to_string(),
    ])?;
    demo.cli(&["wait", &sender.to_string()])?;
    demo.cli(&["send", &echo.to_string(), "hello from the admin"])?;
    demo.cli(&["ps"])?;
    demo.cli(&["tree"])?;
    demo.cli(&["wait", &prober.to_string()])?;
    demo.cli(&["logs", &sender.to_string()])?;
    demo.cli(&["send", &echo.to_string(), "exit"])?;
    demo.cli(&["wait", &echo.to_string()])?;
    demo.cli(&["logs", "--tail", "12", &echo.to_string()])?;
    demo.cli(&["ps", "--all"])?;

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

    drop(demo);
    println!("\n== results");
    println!(
        "state directory: {}/state (sled database, workspaces/<pid>/)",
        dir.display()
    );
    println!("probe report:    {}", report.display());
    println!("daemon log:      {}/agentosd.log", dir.display());
    println!(
        "look again:      sudo {0}/agentosd --state-dir {1}/state --socket {1}/agentosd.sock --policies {2} &\n                 {0}/agentos --socket {1}/agentosd.sock ps --all",
        me.parent()
            .and_then(Path::parent)
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        dir.display(),
        policies.display()
    );
    Ok(())
}
