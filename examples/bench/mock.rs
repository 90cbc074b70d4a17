//! A std-only mock of an OpenAI-compatible chat-completions server for the
//! scheduler measurements: HTTP/1.1 with keep-alive, a thread per
//! connection, and a fixed latency chosen by the model name (`lat50` answers
//! after 50 ms, `lat0` at once). Every reply is `ok` with a usage of 20
//! prompt and 10 completion tokens.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Tokens the mock charges per reply.
pub const PROMPT_TOKENS: u64 = 20;
pub const COMPLETION_TOKENS: u64 = 10;

pub struct MockLlm {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU64>,
}

impl MockLlm {
    pub fn start() -> std::io::Result<MockLlm> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        std::thread::Builder::new()
            .name("mock-llm".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    let Ok(conn) = conn else { continue };
                    let counter = counter.clone();
                    let _ = std::thread::Builder::new()
                        .name("mock-conn".into())
                        .stack_size(256 * 1024)
                        .spawn(move || serve(conn, &counter));
                }
            })?;
        Ok(MockLlm { addr, requests })
    }

    /// `base_url` of a provider pointed at the mock.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

/// One HTTP request: its body.
fn read_request(r: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut line = String::new();
    let mut length = 0usize;
    let mut request_line = false;
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let l = line.trim_end();
        if !request_line {
            // Blank lines before the request line are tolerated.
            request_line = !l.is_empty();
            continue;
        }
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body).ok()?;
    Some(body)
}

fn latency_of(body: &[u8]) -> (String, Duration) {
    let model = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["model"].as_str().map(str::to_string))
        .unwrap_or_default();
    let ms = model
        .strip_prefix("lat")
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    (model, Duration::from_millis(ms))
}

fn serve(conn: TcpStream, counter: &AtomicU64) {
    let _ = conn.set_nodelay(true);
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut r = BufReader::new(conn);
    while let Some(body) = read_request(&mut r) {
        counter.fetch_add(1, Ordering::Relaxed);
        let (model, latency) = latency_of(&body);
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
        let reply = reply_body(&model);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n",
            reply.len()
        );
        let mut msg = head.into_bytes();
        msg.extend_from_slice(reply.as_bytes());
        if out.write_all(&msg).is_err() {
            return;
        }
    }
}

pub fn reply_body(model: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "ok"},
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS
        }
    })
    .to_string()
}

/// A minimal keep-alive HTTP client: the floor the scheduler's overhead is
/// measured against.
pub struct RawClient {
    out: TcpStream,
    r: BufReader<TcpStream>,
    host: String,
}

impl RawClient {
    pub fn connect(addr: SocketAddr) -> std::io::Result<RawClient> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        Ok(RawClient {
            out: s.try_clone()?,
            r: BufReader::new(s),
            host: addr.to_string(),
        })
    }

    /// POSTs a chat completion and parses the reply; returns its tokens.
    pub fn chat(&mut self, body: &str) -> std::io::Result<u64> {
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.out.write_all(req.as_bytes())?;
        let mut line = String::new();
        let mut length = 0usize;
        loop {
            line.clear();
            if self.r.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.trim().eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        self.r.read_exact(&mut body)?;
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        Ok(v["usage"]["total_tokens"].as_u64().unwrap_or(0))
    }
}
