//! The mock LLM server, and each provider module's `infer` against it for
//! all three wire formats: text and tool calls, key headers, retries on
//! injected failures, keep-alive, latency, and that proxies are ignored.
#![allow(clippy::unwrap_used)]

#[path = "common/mock_llm.rs"]
mod mock_llm;

use agentos::llm::config::{ProviderConfig, ProviderKind};
use agentos::llm::http::{RetryPolicy, client_builder};
use agentos::llm::provider::Provider;
use agentos::llm::{
    ChatMessage, InferContext, InferRequest, LlmError, Role, ToolSpec, anthropic, gemini, openai,
};
use mock_llm::{MockLlm, MockReply, usage};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const KINDS: [ProviderKind; 3] = [
    ProviderKind::Openai,
    ProviderKind::Anthropic,
    ProviderKind::Gemini,
];

fn config(kind: ProviderKind, mock: &MockLlm, key: Option<&str>) -> ProviderConfig {
    ProviderConfig {
        name: format!("{kind:?}-mock").to_lowercase(),
        kind,
        base_url: Some(mock.base_url(kind)),
        api_key: key.map(str::to_string),
        api_key_env: None,
        api_key_file: None,
        max_concurrency: 4,
        requests_per_minute: None,
        tokens_per_minute: None,
        timeout_s: 10,
        max_retries: 3,
        script: None,
    }
}

fn fast_policy(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        base: Duration::from_millis(1),
        cap: Duration::from_millis(10),
        timeout: Some(Duration::from_secs(10)),
        ..RetryPolicy::default()
    }
}

fn provider(kind: ProviderKind, mock: &MockLlm, key: Option<&str>) -> Provider {
    Provider::from_config(&config(kind, mock, key))
        .unwrap()
        .with_retry_policy(fast_policy(3))
}

fn model_of(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Openai => "gpt-test",
        ProviderKind::Anthropic => "claude-test",
        _ => "gemini-test",
    }
}

fn request(kind: ProviderKind) -> InferRequest {
    InferRequest {
        model: model_of(kind).into(),
        messages: vec![
            ChatMessage::new(Role::System, "You are a test agent."),
            ChatMessage::new(Role::User, "Say hello."),
        ],
        tools: vec![ToolSpec {
            name: "fs_read".into(),
            description: "Read a file".into(),
            parameters: json!({"type": "object", "properties": {"path": {"type": "string"}},
                               "required": ["path"]}),
        }],
        max_tokens: Some(64),
        temperature: Some(0.0),
        constraint: None,
        ..Default::default()
    }
}

fn ctx() -> InferContext {
    InferContext {
        pid: 42,
        agent_name: "tester".into(),
        turn: 0,
    }
}

fn expected_path(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Openai => "/v1/chat/completions",
        ProviderKind::Anthropic => "/v1/messages",
        _ => "/v1beta/models/gemini-test:generateContent",
    }
}

/// (header, expected value) that carries `key` in this format.
fn key_header(kind: ProviderKind, key: &str) -> (&'static str, String) {
    match kind {
        ProviderKind::Openai => ("authorization", format!("Bearer {key}")),
        ProviderKind::Anthropic => ("x-api-key", key.to_string()),
        _ => ("x-goog-api-key", key.to_string()),
    }
}

#[tokio::test]
async fn text_reply_and_key_header_in_every_format() {
    for kind in KINDS {
        let mock = MockLlm::start();
        mock.push_text(format!("hello from {kind:?}"), usage(17, 4));
        let key = format!("sk-test-{kind:?}");
        let p = provider(kind, &mock, Some(&key));
        let r = p.infer(&request(kind), &ctx()).await.unwrap();
        assert_eq!(r.content, format!("hello from {kind:?}"), "{kind:?}");
        assert!(r.tool_calls.is_empty());
        assert_eq!(r.usage, usage(17, 4), "{kind:?}");
        assert!(r.finish_reason.is_some(), "{kind:?}");

        let reqs = mock.requests();
        assert_eq!(reqs.len(), 1, "{kind:?}");
        let rec = &reqs[0];
        assert_eq!(rec.method, "POST");
        assert_eq!(rec.path, expected_path(kind));
        assert_eq!(rec.kind(), Some(kind));
        let (h, v) = key_header(kind, &key);
        assert_eq!(
            rec.header(h),
            Some(v.as_str()),
            "{kind:?}: {:?}",
            rec.headers
        );
        // Only the format's own key header is sent.
        for other in ["authorization", "x-api-key", "x-goog-api-key"] {
            if other != h {
                assert_eq!(rec.header(other), None, "{kind:?} sent {other}");
            }
        }
        assert!(
            rec.header("user-agent")
                .is_some_and(|ua| ua.starts_with("agentosd/"))
        );
        assert_eq!(rec.header("content-type"), Some("application/json"));
        match kind {
            ProviderKind::Openai => {
                assert_eq!(rec.body["model"], "gpt-test");
                assert_eq!(rec.body["messages"][0]["role"], "system");
                assert_eq!(rec.body["messages"][1]["content"], "Say hello.");
                assert_eq!(rec.body["tools"][0]["function"]["name"], "fs_read");
                assert_eq!(rec.body["max_tokens"], 64);
            }
            ProviderKind::Anthropic => {
                assert_eq!(rec.header("anthropic-version"), Some("2023-06-01"));
                assert_eq!(rec.body["model"], "claude-test");
                assert_eq!(rec.body["system"], "You are a test agent.");
                assert_eq!(rec.body["messages"][0]["role"], "user");
                assert_eq!(rec.body["tools"][0]["input_schema"]["type"], "object");
            }
            _ => {
                assert_eq!(
                    rec.body["systemInstruction"]["parts"][0]["text"],
                    "You are a test agent."
                );
                assert_eq!(rec.body["contents"][0]["parts"][0]["text"], "Say hello.");
                assert_eq!(
                    rec.body["tools"][0]["functionDeclarations"][0]["name"],
                    "fs_read"
                );
                assert_eq!(rec.body["generationConfig"]["maxOutputTokens"], 64);
            }
        }
    }
}

/// A tool call comes back parsed; the tool result sent on the next turn
/// answers it in the format's own way.
#[tokio::test]
async fn tool_calls_round_trip_in_every_format() {
    for kind in KINDS {
        let mock = MockLlm::start();
        mock.push_tool_call("fs_read", json!({"path": "notes.txt"}), usage(30, 8));
        mock.push_text("The file says hi.", usage(45, 5));
        let p = provider(kind, &mock, Some("k-123456"));
        let mut req = request(kind);
        let r = p.infer(&req, &ctx()).await.unwrap();
        assert_eq!(r.content, "", "{kind:?}");
        assert_eq!(r.tool_calls.len(), 1, "{kind:?}");
        let call = r.tool_calls[0].clone();
        assert_eq!(call.name, "fs_read");
        assert_eq!(call.arguments, json!({"path": "notes.txt"}));
        assert!(!call.id.is_empty());
        assert_eq!(r.usage, usage(30, 8));

        let mut assistant = ChatMessage::new(Role::Assistant, "");
        assistant.tool_calls.push(call.clone());
        let mut result = ChatMessage::new(Role::Tool, "hi");
        result.tool_call_id = Some(call.id.clone());
        req.messages.push(assistant);
        req.messages.push(result);
        let r = p
            .infer(&req, &InferContext { turn: 1, ..ctx() })
            .await
            .unwrap();
        assert_eq!(r.content, "The file says hi.");

        let sent = &mock.requests()[1].body;
        match kind {
            ProviderKind::Openai => {
                let m = &sent["messages"];
                assert_eq!(m[2]["role"], "assistant");
                assert_eq!(m[2]["tool_calls"][0]["id"], json!(call.id));
                let args: Value = serde_json::from_str(
                    m[2]["tool_calls"][0]["function"]["arguments"]
                        .as_str()
                        .unwrap(),
                )
                .unwrap();
                assert_eq!(args, json!({"path": "notes.txt"}));
                assert_eq!(m[3]["role"], "tool");
                assert_eq!(m[3]["tool_call_id"], json!(call.id));
                assert_eq!(m[3]["content"], "hi");
            }
            ProviderKind::Anthropic => {
                let m = &sent["messages"];
                assert_eq!(m[1]["role"], "assistant");
                assert_eq!(
                    m[1]["content"][0],
                    json!({"type": "tool_use", "id": call.id, "name": "fs_read",
                           "input": {"path": "notes.txt"}})
                );
                assert_eq!(m[2]["role"], "user");
                assert_eq!(
                    m[2]["content"][0],
                    json!({"type": "tool_result", "tool_use_id": call.id, "content": "hi"})
                );
            }
            _ => {
                let c = &sent["contents"];
                assert_eq!(c[1]["role"], "model");
                assert_eq!(
                    c[1]["parts"][0],
                    json!({"functionCall": {"name": "fs_read", "args": {"path": "notes.txt"}}})
                );
                assert_eq!(c[2]["role"], "user");
                assert_eq!(
                    c[2]["parts"][0],
                    json!({"functionResponse": {"name": "fs_read", "response": {"content": "hi"}}})
                );
            }
        }
    }
}

/// The modules' own `infer`, called directly, without a key: no key
/// header at all (local servers).
#[tokio::test]
async fn module_infer_without_key_sends_no_key_header() {
    let mock = MockLlm::start();
    let client = client_builder(Duration::from_secs(10)).build().unwrap();
    let policy = fast_policy(0);
    mock.push_text("o", usage(1, 1));
    mock.push_text("a", usage(2, 2));
    mock.push_text("g", usage(3, 3));
    let o = openai::infer(
        &client,
        Some(&mock.base_url(ProviderKind::Openai)),
        None,
        &request(ProviderKind::Openai),
        &policy,
    )
    .await
    .unwrap();
    let a = anthropic::infer(
        &client,
        Some(&mock.base_url(ProviderKind::Anthropic)),
        None,
        &request(ProviderKind::Anthropic),
        &policy,
    )
    .await
    .unwrap();
    let g = gemini::infer(
        &client,
        Some(&mock.base_url(ProviderKind::Gemini)),
        None,
        &request(ProviderKind::Gemini),
        &policy,
    )
    .await
    .unwrap();
    assert_eq!((o.content.as_str(), o.usage), ("o", usage(1, 1)));
    assert_eq!((a.content.as_str(), a.usage), ("a", usage(2, 2)));
    assert_eq!((g.content.as_str(), g.usage), ("g", usage(3, 3)));
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        for h in ["authorization", "x-api-key", "x-goog-api-key"] {
            assert_eq!(r.header(h), None, "{} sent {h}", r.path);
        }
    }
    assert_eq!(reqs[1].header("anthropic-version"), Some("2023-06-01"));
}

#[tokio::test]
async fn rate_limit_with_retry_after_is_honoured() {
    let mock = MockLlm::start();
    mock.push_failure(429, Some(1), r#"{"error": {"message": "slow down"}}"#);
    mock.push_text("after the wait", usage(1, 1));
    let p = provider(ProviderKind::Anthropic, &mock, Some("k-abcdef"));
    let r = p
        .infer(&request(ProviderKind::Anthropic), &ctx())
        .await
        .unwrap();
    assert_eq!(r.content, "after the wait");
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].at - reqs[0].at;
    // The fast policy's backoff is ≤ 10 ms: only Retry-After explains 1 s.
    assert!(gap >= Duration::from_millis(950), "gap {gap:?}");
    assert!(gap < Duration::from_secs(3), "gap {gap:?}");
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    let mock = MockLlm::start();
    mock.push_failure(500, None, "internal");
    mock.push_failure(503, None, "unavailable");
    mock.push_text("third time lucky", usage(1, 1));
    let p = provider(ProviderKind::Gemini, &mock, Some("g-key-000"));
    let r = p
        .infer(&request(ProviderKind::Gemini), &ctx())
        .await
        .unwrap();
    assert_eq!(r.content, "third time lucky");
    assert_eq!(mock.request_count(), 3);
    assert_eq!(mock.pending(), 0);
}

#[tokio::test]
async fn retries_are_bounded() {
    let mock = MockLlm::start();
    for _ in 0..5 {
        mock.push_failure(502, None, "bad gateway");
    }
    let p = provider(ProviderKind::Openai, &mock, None).with_retry_policy(fast_policy(2));
    let err = p
        .infer(&request(ProviderKind::Openai), &ctx())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LlmError::Transient(m) if m.contains("502")),
        "{err:?}"
    );
    assert_eq!(mock.request_count(), 3);
    assert_eq!(mock.pending(), 2);
}

#[tokio::test]
async fn unauthorized_is_not_retried_and_never_shows_the_key() {
    for kind in KINDS {
        let mock = MockLlm::start();
        let key = "sk-live-SECRET-0123456789";
        // Some providers echo (part of) the key back.
        mock.push_failure(
            401,
            None,
            format!(r#"{{"error": {{"message": "Incorrect API key provided: {key}"}}}}"#),
        );
        mock.push_text("must not be reached", usage(1, 1));
        let p = provider(kind, &mock, Some(key));
        let err = p.infer(&request(kind), &ctx()).await.unwrap_err();
        let LlmError::Auth(msg) = &err else {
            panic!("{kind:?}: {err:?}")
        };
        assert!(msg.contains("401"), "{msg}");
        assert!(!msg.contains("SECRET"), "{kind:?} leaked the key: {msg}");
        assert!(!err.to_string().contains("SECRET"));
        assert!(!format!("{p:?}").contains("SECRET"));
        assert_eq!(mock.request_count(), 1, "{kind:?} retried a 401");
    }
}

#[tokio::test]
async fn empty_queue_fails_fast_with_a_clear_error() {
    let mock = MockLlm::start();
    let p = provider(ProviderKind::Openai, &mock, None);
    let err = p
        .infer(&request(ProviderKind::Openai), &ctx())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LlmError::BadRequest(m) if m.contains("no reply queued")),
        "{err:?}"
    );
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test]
async fn per_format_queues_come_before_the_shared_queue() {
    let mock = MockLlm::start();
    mock.push_text("shared", usage(1, 1));
    mock.push_for(
        ProviderKind::Anthropic,
        MockReply::Text {
            content: "for anthropic".into(),
            usage: usage(2, 2),
        },
    );
    let a = provider(ProviderKind::Anthropic, &mock, None);
    let o = provider(ProviderKind::Openai, &mock, None);
    let r = a
        .infer(&request(ProviderKind::Anthropic), &ctx())
        .await
        .unwrap();
    assert_eq!(r.content, "for anthropic");
    let r = o
        .infer(&request(ProviderKind::Openai), &ctx())
        .await
        .unwrap();
    assert_eq!(r.content, "shared");
    assert_eq!(mock.pending(), 0);
}

#[tokio::test]
async fn malformed_answer_is_a_protocol_error() {
    let mock = MockLlm::start();
    mock.push_raw(200, r#"{"choices": []}"#);
    mock.push_raw(200, "not json at all");
    let p = provider(ProviderKind::Openai, &mock, None);
    for _ in 0..2 {
        let err = p
            .infer(&request(ProviderKind::Openai), &ctx())
            .await
            .unwrap_err();
        assert!(matches!(err, LlmError::Protocol(_)), "{err:?}");
    }
    assert_eq!(mock.request_count(), 2);
}

/// reqwest reuses its connection: the mock must serve several requests on
/// one keep-alive connection.
#[tokio::test]
async fn keep_alive_connections_are_reused() {
    let mock = MockLlm::start();
    mock.set_default_text("again", usage(3, 1));
    let p = provider(ProviderKind::Openai, &mock, Some("k-keepalive"));
    for _ in 0..5 {
        let r = p
            .infer(&request(ProviderKind::Openai), &ctx())
            .await
            .unwrap();
        assert_eq!(r.content, "again");
    }
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 5);
    let conns: HashSet<u64> = reqs.iter().map(|r| r.connection).collect();
    assert_eq!(conns.len(), 1, "connections: {conns:?}");
    assert_eq!(mock.connections(), 1);
}

/// The unlimited default reply with latency: concurrent inferences overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_reply_with_latency_serves_concurrent_requests() {
    let mock = MockLlm::start();
    mock.set_default_text("steady", usage(10, 2));
    mock.set_latency(Duration::from_millis(300));
    let p = std::sync::Arc::new(provider(ProviderKind::Gemini, &mock, Some("g-123456")));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            p.infer(
                &request(ProviderKind::Gemini),
                &InferContext { turn: i, ..ctx() },
            )
            .await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        assert_eq!(r.content, "steady");
        assert_eq!(r.usage, usage(10, 2));
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    // Serial would take 1.2 s.
    assert!(elapsed < Duration::from_millis(1000), "{elapsed:?}");
    assert!(mock.max_in_flight() >= 2, "{}", mock.max_in_flight());
    assert_eq!(mock.request_count(), 4);
    assert_eq!(mock.pending(), 0);
}

#[tokio::test]
async fn request_timeout_is_reported_after_retries() {
    let mock = MockLlm::start();
    mock.set_default_text("too late", usage(1, 1));
    mock.set_latency(Duration::from_millis(700));
    let p = provider(ProviderKind::Openai, &mock, None).with_retry_policy(RetryPolicy {
        timeout: Some(Duration::from_millis(150)),
        ..fast_policy(1)
    });
    let err = p
        .infer(&request(ProviderKind::Openai), &ctx())
        .await
        .unwrap_err();
    assert_eq!(err, LlmError::Timeout(Duration::from_millis(150)));
    assert_eq!(mock.request_count(), 2);
}

// ---- The mock itself, over raw TCP ----

fn read_response(reader: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>, Value) {
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    let mut len = 0;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        if k.eq_ignore_ascii_case("content-length") {
            len = v.trim().parse().unwrap();
        }
        headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    (
        status,
        headers,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

#[test]
fn raw_keep_alive_content_length_chunked_and_routing() {
    let mock = MockLlm::start();
    mock.push_text("one", usage(1, 1));
    mock.push_failure(429, Some(7), r#"{"error": "later"}"#);
    mock.push_tool_call("exit", json!({"code": 0}), usage(2, 3));
    let stream = TcpStream::connect(mock.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);

    // 1: Content-Length body.
    let body = r#"{"model": "m1", "messages": []}"#;
    write!(
        writer,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Api-Key: abc\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let (status, _, v) = read_response(&mut reader);
    assert_eq!(status, 200);
    assert_eq!(v["choices"][0]["message"]["content"], "one");
    assert_eq!(v["model"], "m1");

    // 2: same connection, chunked body, Retry-After on the failure.
    writer
        .write_all(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n")
        .unwrap();
    let (status, headers, v) = read_response(&mut reader);
    assert_eq!(status, 429);
    assert!(headers.contains(&("retry-after".into(), "7".into())));
    assert_eq!(v, json!({"error": "later"}));

    // 3: Gemini path, tool call.
    let body = "{}";
    write!(
        writer,
        "POST /v1beta/models/gem-1:generateContent HTTP/1.1\r\nContent-Length: 2\r\n\r\n{body}"
    )
    .unwrap();
    let (status, _, v) = read_response(&mut reader);
    assert_eq!(status, 200);
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["functionCall"],
        json!({"name": "exit", "args": {"code": 0}})
    );
    assert_eq!(v["modelVersion"], "gem-1");

    // 4: unknown path and wrong method, then Connection: close.
    writer
        .write_all(b"POST /v2/other HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut reader).0, 404);
    writer
        .write_all(b"GET /v1/messages HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut reader).0, 405);
    let mut rest = Vec::new();
    assert_eq!(reader.read_to_end(&mut rest).unwrap(), 0, "not closed");

    let reqs = mock.requests();
    assert_eq!(reqs.len(), 5);
    assert!(reqs.iter().all(|r| r.connection == reqs[0].connection));
    assert_eq!(reqs[0].header("x-api-key"), Some("abc"));
    assert_eq!(reqs[0].body["model"], "m1");
    assert_eq!(reqs[1].body, json!({"a": 1}));
    assert_eq!(reqs[1].kind(), Some(ProviderKind::Anthropic));
    assert_eq!(reqs[2].kind(), Some(ProviderKind::Gemini));
    assert_eq!(reqs[3].kind(), None);
    assert_eq!(reqs[4].method, "GET");
    assert_eq!(mock.pending(), 0);
}

#[test]
fn drop_stops_the_server() {
    let mock = MockLlm::start();
    let addr = mock.addr();
    let idle = TcpStream::connect(addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Make sure the idle connection was accepted before dropping.
    let deadline = Instant::now() + Duration::from_secs(5);
    while mock.connections() < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(mock);
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "still listening after drop"
    );
    let mut buf = [0u8; 1];
    let n = (&idle).read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the open connection was not closed");
}

/// Proxy environment variables are ignored: in a child process with
/// HTTP_PROXY/HTTPS_PROXY/ALL_PROXY pointing at a closed port, a request
/// to the mock still arrives.
#[test]
fn proxy_environment_is_ignored() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "proxy_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("AGENTOS_PROXY_CHILD", "1")
        .env("HTTP_PROXY", &dead_url)
        .env("http_proxy", &dead_url)
        .env("HTTPS_PROXY", &dead_url)
        .env("https_proxy", &dead_url)
        .env("ALL_PROXY", &dead_url)
        .env("all_proxy", &dead_url)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("proxy child reached the mock"), "{stdout}");
}

#[tokio::test]
#[ignore = "run by proxy_environment_is_ignored in a child process"]
async fn proxy_child() {
    if std::env::var_os("AGENTOS_PROXY_CHILD").is_none() {
        return;
    }
    assert!(std::env::var_os("HTTP_PROXY").is_some());
    let mock = MockLlm::start();
    mock.push_text("direct", usage(1, 1));
    let p = provider(ProviderKind::Openai, &mock, None).with_retry_policy(fast_policy(0));
    let r = p
        .infer(&request(ProviderKind::Openai), &ctx())
        .await
        .unwrap();
    assert_eq!(r.content, "direct");
    assert_eq!(mock.request_count(), 1);
    println!("proxy child reached the mock");
}
