//! A real local model for benchmarks and tests: starts
//! `shared/realllm/serve.sh` (llama.cpp's llama-server with a small
//! instruct model, see its README) on a free 127.0.0.1 port, waits until
//! the model is loaded, and stops the server on drop.
//!
//! The scripts are found in `$AGENTOS_REALLLM`, else in `shared/realllm`
//! beside the repository (`<repo>/../shared/realllm`, where CI puts it).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The directory holding `setup.sh` and `serve.sh`, when it exists.
pub fn realllm_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("AGENTOS_REALLLM") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/realllm"),
    };
    dir.join("serve.sh").exists().then_some(dir)
}

/// Whether `setup.sh` has built the server (its cache holds the binary).
pub fn server_built() -> bool {
    let cache = std::env::var_os("AGENTOS_LLM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/agentos-llm"));
    cache.join("llama.cpp/build/bin/llama-server").exists()
}

/// A running llama-server.
pub struct LlamaServer {
    child: Option<Child>,
    pub port: u16,
    pub log: PathBuf,
}

impl LlamaServer {
    /// Starts `serve.sh MODEL PORT EXTRA...` on a free port and waits (up
    /// to `timeout`) until `/health` answers 200.
    pub fn start(model: &str, extra: &[&str], timeout: Duration) -> Result<LlamaServer, String> {
        let dir = realllm_dir().ok_or(
            "no shared/realllm/serve.sh beside the repository (set AGENTOS_REALLLM to its directory)",
        )?;
        let port = free_port()?;
        let log =
            std::env::temp_dir().join(format!("agentos-llama-{}-{port}.log", std::process::id()));
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new("bash")
            .arg(dir.join("serve.sh"))
            .arg(model)
            .arg(port.to_string())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting serve.sh: {e}"))?;
        let mut server = LlamaServer {
            child: Some(child),
            port,
            log,
        };
        let deadline = Instant::now() + timeout;
        loop {
            if server.healthy() {
                return Ok(server);
            }
            if let Some(Ok(Some(status))) = server.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!(
                    "llama-server exited with {status}:\n{}",
                    server.log_tail(20)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "llama-server not ready within {timeout:?}:\n{}",
                    server.log_tail(20)
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn healthy(&self) -> bool {
        http_get(self.port, "/health").is_ok_and(|(status, _)| status == 200)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("binding a port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

/// A plain HTTP/1.0 GET on 127.0.0.1: (status, body).
pub fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    http(port, "GET", path, None)
}

/// A plain HTTP/1.0 POST of a JSON body on 127.0.0.1: (status, body).
pub fn http_post(port: u16, path: &str, body: &str) -> Result<(u16, String), String> {
    http(port, "POST", path, Some(body))
}

fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(600)))
        .map_err(|e| e.to_string())?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            format!(
                "no HTTP status in {:?}",
                out.chars().take(80).collect::<String>()
            )
        })?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_string()))
}
