//! A mock LLM provider for tests: a real HTTP/1.1 server on 127.0.0.1
//! (std only, a thread per connection, keep-alive) that speaks the three
//! wire formats by path —
//!
//! - `POST /v1/chat/completions` (OpenAI-compatible),
//! - `POST /v1/messages` (Anthropic),
//! - `POST /v1beta/models/<model>:generateContent` (Gemini) —
//!
//! answers from a queue of scripted replies (a queue per format first, then
//! the shared queue, then the optional unlimited default reply), and
//! records every request (method, path, headers, JSON body).
//!
//! ```ignore
//! let mock = MockLlm::start();
//! mock.push_failure(429, Some(0), r#"{"error":"slow down"}"#);
//! mock.push_text("hello", usage(10, 2));
//! cfg.base_url = Some(mock.base_url(ProviderKind::Openai));
//! // ... infer ...
//! assert_eq!(mock.requests()[1].header("authorization"), Some("Bearer sk-test"));
//! ```
//!
//! With nothing to answer, the mock replies 400 with a body saying so (a
//! non-retryable error, so a test with too few replies fails fast). The
//! server stops when the `MockLlm` is dropped.
#![allow(dead_code)]

use agentos::llm::Usage;
use agentos::llm::config::ProviderKind;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Usage of a reply: `usage(prompt_tokens, completion_tokens)`.
pub fn usage(prompt_tokens: u64, completion_tokens: u64) -> Usage {
    Usage {
        prompt_tokens,
        completion_tokens,
    }
}

/// One scripted answer.
#[derive(Debug, Clone, PartialEq)]
pub enum MockReply {
    /// A normal text reply in the format of the request.
    Text { content: String, usage: Usage },
    /// A reply with one tool call (and no text) in the format of the
    /// request.
    ToolCall {
        name: String,
        args: Value,
        usage: Usage,
    },
    /// An HTTP error: status, optional `Retry-After` (seconds), body.
    Failure {
        status: u16,
        retry_after: Option<u64>,
        body: String,
    },
    /// Any status and body, sent as is (e.g. a malformed answer).
    Raw { status: u16, body: String },
}

/// A recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path (with any query string).
    pub path: String,
    /// Header names lowercased, in order of arrival.
    pub headers: Vec<(String, String)>,
    /// The JSON body (`Value::Null` when the body was not JSON).
    pub body: Value,
    pub raw_body: String,
    /// Which TCP connection carried it (numbered from 1 as accepted).
    pub connection: u64,
    /// When it was fully received.
    pub at: Instant,
}

impl Recorded {
    /// The value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The wire format the path belongs to.
    pub fn kind(&self) -> Option<ProviderKind> {
        Format::of_path(&self.path).map(|(f, _)| f.kind())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Openai,
    Anthropic,
    Gemini,
}

impl Format {
    fn of_kind(kind: ProviderKind) -> Format {
        match kind {
            ProviderKind::Openai => Format::Openai,
            ProviderKind::Anthropic => Format::Anthropic,
            ProviderKind::Gemini => Format::Gemini,
            ProviderKind::Scripted => panic!("MockLlm: a scripted provider has no wire format"),
        }
    }

    fn kind(self) -> ProviderKind {
        match self {
            Format::Openai => ProviderKind::Openai,
            Format::Anthropic => ProviderKind::Anthropic,
            Format::Gemini => ProviderKind::Gemini,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The format of a path, and the model named in it (Gemini).
    fn of_path(path: &str) -> Option<(Format, Option<String>)> {
        let path = path.split('?').next().unwrap_or(path);
        match path {
            "/v1/chat/completions" => Some((Format::Openai, None)),
            "/v1/messages" => Some((Format::Anthropic, None)),
            _ => {
                let model = path
                    .strip_prefix("/v1beta/models/")?
                    .strip_suffix(":generateContent")?;
                (!model.is_empty() && !model.contains('/'))
                    .then(|| (Format::Gemini, Some(model.to_string())))
            }
        }
    }
}

#[derive(Default)]
struct State {
    per_format: [VecDeque<MockReply>; 3],
    shared: VecDeque<MockReply>,
    default_reply: Option<MockReply>,
    latency: Duration,
    requests: Vec<Recorded>,
}

struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    connections: AtomicU64,
    replies: AtomicU64,
    streams: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the requests from others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The mock server. Stops when dropped.
pub struct MockLlm {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl MockLlm {
    /// Starts a server on 127.0.0.1 on a free port.
    pub fn start() -> MockLlm {
        let listener = TcpListener::bind("127.0.0.1:0").expect("MockLlm: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("MockLlm: local address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            stop: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            connections: AtomicU64::new(0),
            replies: AtomicU64::new(0),
            streams: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("mock-llm-accept".into())
            .spawn(move || accept_loop(listener, s))
            .expect("MockLlm: spawn the accept thread");
        MockLlm {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `base_url` to configure a provider of this kind with
    /// (`…/v1` for OpenAI and Anthropic, `…/v1beta` for Gemini).
    pub fn base_url(&self, kind: ProviderKind) -> String {
        match Format::of_kind(kind) {
            Format::Openai | Format::Anthropic => format!("{}/v1", self.url()),
            Format::Gemini => format!("{}/v1beta", self.url()),
        }
    }

    /// Queues a reply for any format.
    pub fn push(&self, reply: MockReply) {
        self.shared.lock().shared.push_back(reply);
    }

    /// Queues a reply for requests of one format only (served before the
    /// shared queue).
    pub fn push_for(&self, kind: ProviderKind, reply: MockReply) {
        self.shared.lock().per_format[Format::of_kind(kind).index()].push_back(reply);
    }

    pub fn push_text(&self, content: impl Into<String>, usage: Usage) {
        self.push(MockReply::Text {
            content: content.into(),
            usage,
        });
    }

    pub fn push_tool_call(&self, name: impl Into<String>, args: Value, usage: Usage) {
        self.push(MockReply::ToolCall {
            name: name.into(),
            args,
            usage,
        });
    }

    /// Queues an HTTP error (e.g. 429 with `Retry-After`, 500, 401).
    pub fn push_failure(&self, status: u16, retry_after: Option<u64>, body: impl Into<String>) {
        self.push(MockReply::Failure {
            status,
            retry_after,
            body: body.into(),
        });
    }

    /// Queues a raw answer (any status, body sent as is).
    pub fn push_raw(&self, status: u16, body: impl Into<String>) {
        self.push(MockReply::Raw {
            status,
            body: body.into(),
        });
    }

    /// Answers every request the queues do not with this text, without
    /// limit (throughput and fairness tests).
    pub fn set_default_text(&self, content: impl Into<String>, usage: Usage) {
        self.shared.lock().default_reply = Some(MockReply::Text {
            content: content.into(),
            usage,
        });
    }

    /// Answers every request the queues do not with this reply.
    pub fn set_default(&self, reply: Option<MockReply>) {
        self.shared.lock().default_reply = reply;
    }

    /// A fixed delay before every answer.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Replies still queued (all queues; the default reply not counted).
    pub fn pending(&self) -> usize {
        let st = self.shared.lock();
        st.shared.len() + st.per_format.iter().map(VecDeque::len).sum::<usize>()
    }

    /// Most requests that were being answered at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for MockLlm {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor, then close every connection so that their
        // threads (and keep-alive clients) see the end.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        let streams = std::mem::take(
            &mut *self
                .shared
                .streams
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for s in streams {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let conn = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
        if let Ok(clone) = stream.try_clone() {
            shared
                .streams
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(clone);
        }
        let s = shared.clone();
        let _ = std::thread::Builder::new()
            .name(format!("mock-llm-conn-{conn}"))
            .spawn(move || serve_connection(stream, conn, s));
    }
}

/// A parsed request.
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    close: bool,
}

enum ReadError {
    /// The client closed the connection between requests.
    Eof,
    /// Malformed: answer 400 and close.
    Bad(String),
}

fn read_request(reader: &mut impl BufRead) -> Result<Request, ReadError> {
    let mut line = String::new();
    // Tolerate empty lines before a request (RFC 9112 §2.2).
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return Err(ReadError::Eof),
            Ok(_) if line.trim().is_empty() => continue,
            Ok(_) => break,
        }
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Bad(format!("bad request line {line:?}")));
    };
    let (method, path, version) = (method.to_string(), path.to_string(), version.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) | Err(_) => return Err(ReadError::Bad("headers cut short".into())),
            Ok(_) => {}
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        let Some((k, v)) = h.split_once(':') else {
            return Err(ReadError::Bad(format!("bad header line {h:?}")));
        };
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        if headers.len() > 100 {
            return Err(ReadError::Bad("too many headers".into()));
        }
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let chunked = get("transfer-encoding").is_some_and(|te| te.contains("chunked"));
    let body = if chunked {
        read_chunked(reader)?
    } else {
        let len = match get("content-length") {
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| ReadError::Bad(format!("bad Content-Length {v:?}")))?,
            None => 0,
        };
        let mut body = vec![0; len];
        reader
            .read_exact(&mut body)
            .map_err(|_| ReadError::Bad("body cut short".into()))?;
        body
    };
    let connection = get("connection").unwrap_or_default();
    let close = connection.contains("close")
        || (version == "HTTP/1.0" && !connection.contains("keep-alive"));
    Ok(Request {
        method,
        path,
        headers,
        body,
        close,
    })
}

fn read_chunked(reader: &mut impl BufRead) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        if reader.read_line(&mut size_line).unwrap_or(0) == 0 {
            return Err(ReadError::Bad("chunked body cut short".into()));
        }
        let size_hex = size_line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| ReadError::Bad(format!("bad chunk size {size_hex:?}")))?;
        if size == 0 {
            // Trailers until an empty line.
            loop {
                let mut t = String::new();
                if reader.read_line(&mut t).unwrap_or(0) == 0 || t.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader
            .read_exact(&mut body[start..])
            .map_err(|_| ReadError::Bad("chunk cut short".into()))?;
        let mut crlf = [0u8; 2];
        reader
            .read_exact(&mut crlf)
            .map_err(|_| ReadError::Bad("chunk without CRLF".into()))?;
    }
}

fn serve_connection(stream: TcpStream, conn: u64, shared: Arc<Shared>) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let req = match read_request(&mut reader) {
            Ok(r) => r,
            Err(ReadError::Eof) => return,
            Err(ReadError::Bad(why)) => {
                let body = json!({"error": {"message": format!("mock llm: {why}")}}).to_string();
                let _ = write_response(&mut writer, 400, &[], &body, true);
                return;
            }
        };
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let (status, extra, body, latency) = answer(&req, conn, &shared);
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
        let ok = write_response(&mut writer, status, &extra, &body, req.close).is_ok();
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !ok || req.close {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Records the request and picks the answer: (status, extra headers,
/// body, latency).
fn answer(
    req: &Request,
    conn: u64,
    shared: &Shared,
) -> (u16, Vec<(String, String)>, String, Duration) {
    let raw_body = String::from_utf8_lossy(&req.body).into_owned();
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let mut st = shared.lock();
    st.requests.push(Recorded {
        method: req.method.clone(),
        path: req.path.clone(),
        headers: req.headers.clone(),
        body: body.clone(),
        raw_body,
        connection: conn,
        at: Instant::now(),
    });
    let latency = st.latency;
    let error = |status: u16, msg: String| {
        (
            status,
            Vec::new(),
            json!({"error": {"message": msg}}).to_string(),
            latency,
        )
    };
    let Some((format, path_model)) = Format::of_path(&req.path) else {
        return error(404, format!("mock llm: no endpoint at {}", req.path));
    };
    if req.method != "POST" {
        return error(
            405,
            format!("mock llm: {} {} (only POST)", req.method, req.path),
        );
    }
    let reply = st.per_format[format.index()]
        .pop_front()
        .or_else(|| st.shared.pop_front())
        .or_else(|| st.default_reply.clone());
    drop(st);
    let Some(reply) = reply else {
        return error(
            400,
            format!("mock llm: no reply queued for POST {}", req.path),
        );
    };
    let n = shared.replies.fetch_add(1, Ordering::SeqCst) + 1;
    let model = path_model
        .or_else(|| {
            body.get("model")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "mock-model".into());
    match reply {
        MockReply::Failure {
            status,
            retry_after,
            body,
        } => {
            let extra = retry_after
                .map(|s| vec![("Retry-After".to_string(), s.to_string())])
                .unwrap_or_default();
            (status, extra, body, latency)
        }
        MockReply::Raw { status, body } => (status, Vec::new(), body, latency),
        MockReply::Text { content, usage } => (
            200,
            Vec::new(),
            text_reply(format, n, &model, &content, usage).to_string(),
            latency,
        ),
        MockReply::ToolCall { name, args, usage } => (
            200,
            Vec::new(),
            tool_reply(format, n, &model, &name, &args, usage).to_string(),
            latency,
        ),
    }
}

fn text_reply(format: Format, n: u64, model: &str, content: &str, u: Usage) -> Value {
    match format {
        Format::Openai => json!({
            "id": format!("chatcmpl-mock-{n}"), "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                      "total_tokens": u.total()}
        }),
        Format::Anthropic => json!({
            "id": format!("msg_mock_{n}"), "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": content}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": u.prompt_tokens, "output_tokens": u.completion_tokens}
        }),
        Format::Gemini => json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": content}]},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": u.prompt_tokens,
                              "candidatesTokenCount": u.completion_tokens,
                              "totalTokenCount": u.total()},
            "modelVersion": model
        }),
    }
}

fn tool_reply(format: Format, n: u64, model: &str, name: &str, args: &Value, u: Usage) -> Value {
    match format {
        Format::Openai => json!({
            "id": format!("chatcmpl-mock-{n}"), "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": format!("call_mock_{n}"), "type": "function",
                                "function": {"name": name, "arguments": args.to_string()}}]},
                "logprobs": null, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                      "total_tokens": u.total()}
        }),
        Format::Anthropic => json!({
            "id": format!("msg_mock_{n}"), "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "tool_use", "id": format!("toolu_mock_{n}"), "name": name, "input": args}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": u.prompt_tokens, "output_tokens": u.completion_tokens}
        }),
        Format::Gemini => json!({
            "candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": name, "args": args}}]},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": u.prompt_tokens,
                              "candidatesTokenCount": u.completion_tokens,
                              "totalTokenCount": u.total()},
            "modelVersion": model
        }),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        529 => "Overloaded",
        _ => "Mock",
    }
}

fn write_response(
    w: &mut TcpStream,
    status: u16,
    extra: &[(String, String)],
    body: &str,
    close: bool,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {}\r\n",
        reason(status),
        body.len(),
        if close { "close" } else { "keep-alive" }
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    w.write_all(&out)?;
    w.flush()
}
