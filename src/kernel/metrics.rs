//! Counters for the Prometheus endpoint (opt-in, `[metrics] listen`) and the
//! listener that serves them in the text exposition format.

use super::Kernel;
use super::pcb::State;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Counters the daemon updates as it works.
#[derive(Default)]
pub struct Metrics {
    pub spawns: AtomicU64,
    pub denied: AtomicU64,
    /// Agents' output lines not kept: the state filesystem was below its
    /// low-water mark.
    pub output_dropped: AtomicU64,
    /// (call, result code) → count.
    syscalls: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    pub llm_requests: AtomicU64,
    pub llm_latency_us: AtomicU64,
    pub llm_wait_us: AtomicU64,
}

impl Metrics {
    /// Counts one call (None: an unknown name) with its result code.
    pub fn syscall(&self, call: Option<crate::abi::calls::Call>, result: &'static str) {
        let mut m = self.syscalls.lock().unwrap_or_else(|e| e.into_inner());
        // Unknown names are folded so an agent cannot grow the table.
        let call = call.map_or("unknown", |c| c.name());
        *m.entry((call, result)).or_default() += 1;
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn output_dropped_at_floor(&self) {
        Self::add(&self.output_dropped, 1);
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A metric with one unlabelled value.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    metric(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// A summary of durations: their sum in seconds (from µs) and their count.
fn summary(out: &mut String, name: &str, help: &str, sum_us: u64, count: u64) {
    metric(out, name, "summary", help);
    let _ = writeln!(out, "{name}_sum {}", secs(sum_us));
    let _ = writeln!(out, "{name}_count {count}");
}

impl Kernel {
    /// The exposition text.
    pub fn render_metrics(&self) -> String {
        let m = &self.metrics;
        let mut out = String::new();
        let pcbs = self.table.all();
        metric(&mut out, "agentos_agents", "gauge", "Agents by state.");
        for s in [
            State::Ready,
            State::Running,
            State::Blocked,
            State::Sleeping,
            State::Stopped,
            State::Terminated,
        ] {
            let n = pcbs.iter().filter(|p| p.state == s).count();
            let _ = writeln!(out, "agentos_agents{{state=\"{}\"}} {n}", s.as_str());
        }
        single(
            &mut out,
            "agentos_spawns_total",
            "counter",
            "Agents spawned since start.",
            m.spawns.load(Ordering::Relaxed),
        );
        metric(
            &mut out,
            "agentos_syscalls_total",
            "counter",
            "Syscalls by name and result.",
        );
        for ((call, result), n) in m.syscalls.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                out,
                "agentos_syscalls_total{{call=\"{call}\",result=\"{result}\"}} {n}"
            );
        }
        single(
            &mut out,
            "agentos_syscalls_denied_total",
            "counter",
            "Syscalls refused (EACCES/EPERM).",
            m.denied.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "agentos_output_dropped_at_floor_total",
            "counter",
            "Agent output lines not kept: the state filesystem was below its low-water mark.",
            m.output_dropped.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "agentos_state_free_bytes",
            "gauge",
            "Free bytes on the state filesystem (its low-water mark is min_free_bytes).",
            self.floor.free_bytes().unwrap_or(0),
        );
        metric(
            &mut out,
            "agentos_llm_tokens_total",
            "counter",
            "LLM tokens of all agents, by direction.",
        );
        let (tin, tout) = pcbs.iter().fold((0, 0), |(a, b), p| {
            (a + p.counters.tokens_in, b + p.counters.tokens_out)
        });
        let _ = writeln!(out, "agentos_llm_tokens_total{{direction=\"in\"}} {tin}");
        let _ = writeln!(out, "agentos_llm_tokens_total{{direction=\"out\"}} {tout}");
        let reqs = m.llm_requests.load(Ordering::Relaxed);
        summary(
            &mut out,
            "agentos_llm_latency_seconds",
            "Provider latency of inferences.",
            m.llm_latency_us.load(Ordering::Relaxed),
            reqs,
        );
        let stats = self.inference().scheduler.stats();
        single(
            &mut out,
            "agentos_scheduler_queue_length",
            "gauge",
            "Inferences waiting for a slot.",
            stats.waiting,
        );
        single(
            &mut out,
            "agentos_scheduler_in_flight",
            "gauge",
            "Inferences running.",
            stats.in_flight,
        );
        summary(
            &mut out,
            "agentos_scheduler_wait_seconds",
            "Time inferences waited for a slot.",
            m.llm_wait_us.load(Ordering::Relaxed),
            reqs,
        );
        let (flushes, flush_us) = self.store.flush_stats();
        summary(
            &mut out,
            "agentos_store_flush_seconds",
            "Group-commit flush latency.",
            flush_us,
            flushes,
        );
        out
    }

    /// Serves `GET /metrics` on `listen` (a loopback address is advised).
    pub fn start_metrics(self: &Arc<Self>, listen: &str) -> std::io::Result<()> {
        let std_listener = std::net::TcpListener::bind(listen)?;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let k = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    continue;
                };
                let k = k.clone();
                tokio::spawn(async move {
                    // Read the request head (up to 4 KiB), however it is split.
                    let mut buf = Vec::with_capacity(4096);
                    let mut chunk = [0u8; 1024];
                    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 4096 {
                        match tokio::time::timeout_at(deadline, conn.read(&mut chunk)).await {
                            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                    }
                    let request = String::from_utf8_lossy(&buf);
                    let (status, body) = if request.starts_with("GET /metrics ") {
                        ("200 OK", k.render_metrics())
                    } else {
                        ("404 Not Found", "only GET /metrics\n".to_string())
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(head.as_bytes()).await;
                    let _ = conn.write_all(body.as_bytes()).await;
                });
            }
        });
        Ok(())
    }
}

fn secs(us: u64) -> String {
    format!("{:.6}", us as f64 / 1e6)
}
