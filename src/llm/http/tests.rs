//! Tests of the shared HTTP pipeline (requests, retries, errors and the
//! helpers the wire formats share), against local servers.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::llm::config::ProviderKind;
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

fn cfg() -> ProviderConfig {
    ProviderConfig {
        name: "p".into(),
        kind: ProviderKind::Openai,
        base_url: None,
        api_key: None,
        api_key_env: None,
        api_key_file: None,
        max_concurrency: 4,
        requests_per_minute: None,
        tokens_per_minute: None,
        timeout_s: 5,
        max_retries: 4,
        script: None,
    }
}

fn fast(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        base: Duration::from_millis(5),
        factor: 2,
        cap: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(60),
        timeout: Some(Duration::from_secs(5)),
    }
}

/// A canned HTTP answer of the in-test server.
struct Canned {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    delay: Duration,
}

fn canned(status: u16, headers: &[(&str, &str)], body: &str) -> Canned {
    Canned {
        status,
        headers: headers
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
        body: body.to_string(),
        delay: Duration::ZERO,
    }
}

/// One recorded request: when, the raw header block and the body.
#[derive(Clone)]
struct Seen {
    at: Instant,
    head: String,
    body: String,
}

/// A tiny HTTP/1.1 server on 127.0.0.1: one request per connection
/// (answers with `Connection: close`), canned answers in order, then
/// 599 once they run out.
struct TestServer {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl TestServer {
    fn start(answers: Vec<Canned>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/x", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(std::collections::VecDeque::from(answers)));
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let seen = seen2.clone();
                let answers = answers.clone();
                std::thread::spawn(move || serve_one(stream, &seen, &answers));
            }
        });
        TestServer { url, seen }
    }
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve_one(
    stream: TcpStream,
    seen: &Mutex<Vec<Seen>>,
    answers: &Mutex<std::collections::VecDeque<Canned>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut head = String::new();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap();
            }
        }
        head.push_str(&line);
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    seen.lock().unwrap().push(Seen {
        at: Instant::now(),
        head,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let answer = answers
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| canned(599, &[], "no more canned answers"));
    std::thread::sleep(answer.delay);
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\nContent-Type: application/json\r\n",
        answer.status,
        answer.body.len()
    );
    for (k, v) in &answer.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&answer.body);
    let mut stream = stream;
    let _ = stream.write_all(out.as_bytes());
    let _ = stream.flush();
}

fn client() -> reqwest::Client {
    client_builder(Duration::from_secs(5)).build().unwrap()
}

async fn post(server: &TestServer, policy: &RetryPolicy) -> Result<Value, LlmError> {
    post_json(
        &client(),
        &server.url,
        &[("authorization", "Bearer sk-secret-key-123".to_string())],
        &json!({"hello": "world"}),
        policy,
    )
    .await
}

#[tokio::test]
async fn success_sends_json_headers_and_user_agent() {
    let server = TestServer::start(vec![canned(200, &[], r#"{"ok": true}"#)]);
    let v = post(&server, &fast(0)).await.unwrap();
    assert_eq!(v, json!({"ok": true}));
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let head = seen[0].head.to_ascii_lowercase();
    assert!(head.starts_with("post /v1/x http/1.1"), "{head}");
    assert!(head.contains("authorization: bearer sk-secret-key-123"));
    assert!(head.contains("content-type: application/json"));
    assert!(head.contains(&format!("user-agent: {}", USER_AGENT.to_ascii_lowercase())));
    assert!(USER_AGENT.starts_with("agentosd/"));
    let body: Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(body, json!({"hello": "world"}));
}

#[tokio::test]
async fn retry_after_seconds_is_honoured() {
    let server = TestServer::start(vec![
        canned(429, &[("Retry-After", "1")], r#"{"error":"slow down"}"#),
        canned(200, &[], r#"{"n": 2}"#),
    ]);
    // Backoff alone would be ≤ 20 ms: a ≥ 1 s gap proves Retry-After won.
    let v = post(&server, &fast(3)).await.unwrap();
    assert_eq!(v, json!({"n": 2}));
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_millis(950), "gap {gap:?}");
    assert!(gap < Duration::from_secs(3), "gap {gap:?}");
}

#[tokio::test]
async fn retry_after_http_date_is_honoured() {
    // Two seconds ahead, rounded to whole seconds by the format: ≥ 1 s.
    let when = SystemTime::now() + Duration::from_secs(2);
    let date = format_http_date(when);
    let server = TestServer::start(vec![
        canned(429, &[("Retry-After", &date)], "{}"),
        canned(200, &[], r#"{"n": 3}"#),
    ]);
    let v = post(&server, &fast(3)).await.unwrap();
    assert_eq!(v, json!({"n": 3}));
    let seen = server.seen();
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_millis(900), "gap {gap:?}");
    assert!(gap < Duration::from_secs(4), "gap {gap:?}");
}

#[tokio::test]
async fn retry_after_is_capped() {
    let server = TestServer::start(vec![
        canned(429, &[("Retry-After", "3600")], "{}"),
        canned(200, &[], r#"{"n": 4}"#),
    ]);
    let policy = RetryPolicy {
        max_retry_after: Duration::from_millis(100),
        ..fast(2)
    };
    let started = Instant::now();
    assert_eq!(post(&server, &policy).await.unwrap(), json!({"n": 4}));
    assert!(started.elapsed() < Duration::from_secs(3));
    let seen = server.seen();
    assert!(seen[1].at - seen[0].at >= Duration::from_millis(90));
}

#[tokio::test]
async fn server_error_then_success() {
    let server = TestServer::start(vec![
        canned(500, &[], "boom"),
        canned(503, &[], "busy"),
        canned(200, &[], r#"{"n": 5}"#),
    ]);
    assert_eq!(post(&server, &fast(4)).await.unwrap(), json!({"n": 5}));
    assert_eq!(server.seen().len(), 3);
}

#[tokio::test]
async fn unauthorized_is_not_retried_and_key_is_redacted() {
    let server = TestServer::start(vec![
        canned(
            401,
            &[],
            r#"{"error": {"message": "Incorrect API key provided: sk-secret-key-123"}}"#,
        ),
        canned(200, &[], "{}"),
    ]);
    let err = post(&server, &fast(4)).await.unwrap_err();
    let LlmError::Auth(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(msg.contains("401"), "{msg}");
    assert!(msg.contains("Incorrect API key"), "{msg}");
    assert!(!msg.contains("sk-secret-key-123"), "{msg}");
    assert!(msg.contains("[redacted]"), "{msg}");
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn forbidden_is_auth() {
    let server = TestServer::start(vec![canned(403, &[], "nope")]);
    let err = post(&server, &fast(4)).await.unwrap_err();
    assert!(matches!(&err, LlmError::Auth(m) if m.contains("403") && m.contains("nope")));
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn other_4xx_is_bad_request_without_retry() {
    let server = TestServer::start(vec![canned(400, &[], r#"{"error":"bad model"}"#)]);
    let err = post(&server, &fast(4)).await.unwrap_err();
    assert!(
        matches!(&err, LlmError::BadRequest(m) if m.contains("400") && m.contains("bad model")),
        "{err:?}"
    );
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn redirect_is_not_followed() {
    let server = TestServer::start(vec![
        canned(301, &[("Location", "http://127.0.0.1:1/elsewhere")], ""),
        canned(200, &[], "{}"),
    ]);
    let err = post(&server, &fast(4)).await.unwrap_err();
    assert!(
        matches!(&err, LlmError::BadRequest(m) if m.contains("127.0.0.1:1/elsewhere")),
        "{err:?}"
    );
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn retries_exhausted_returns_last_error() {
    let server = TestServer::start(vec![
        canned(500, &[], "one"),
        canned(502, &[], "two"),
        canned(503, &[], "three"),
        canned(200, &[], "{}"),
    ]);
    let err = post(&server, &fast(2)).await.unwrap_err();
    assert!(
        matches!(&err, LlmError::Transient(m) if m.contains("503") && m.contains("three")),
        "{err:?}"
    );
    assert_eq!(server.seen().len(), 3);
}

#[tokio::test]
async fn rate_limit_exhausted_is_rate_limited() {
    let server = TestServer::start(vec![
        canned(429, &[], "{}"),
        canned(429, &[("Retry-After", "0")], "{}"),
    ]);
    let err = post(&server, &fast(1)).await.unwrap_err();
    assert_eq!(
        err,
        LlmError::RateLimited {
            retry_after: Some(Duration::ZERO)
        }
    );
    assert_eq!(server.seen().len(), 2);
}

#[tokio::test]
async fn timeout_is_retried_then_reported() {
    let mut slow = canned(200, &[], "{}");
    slow.delay = Duration::from_millis(800);
    let mut slow2 = canned(200, &[], "{}");
    slow2.delay = Duration::from_millis(800);
    let server = TestServer::start(vec![slow, slow2]);
    let policy = RetryPolicy {
        timeout: Some(Duration::from_millis(200)),
        ..fast(1)
    };
    let err = post(&server, &policy).await.unwrap_err();
    assert_eq!(err, LlmError::Timeout(Duration::from_millis(200)));
    assert_eq!(server.seen().len(), 2);
}

#[tokio::test]
async fn connection_refused_is_transient() {
    // Bind then drop: the port is very likely closed now.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = post_json(
        &client(),
        &format!("http://127.0.0.1:{port}/v1"),
        &[],
        &json!({}),
        &fast(1),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, LlmError::Transient(_)), "{err:?}");
}

#[tokio::test]
async fn non_json_success_is_protocol() {
    let server = TestServer::start(vec![canned(200, &[], "<html>hi</html>")]);
    let err = post(&server, &fast(0)).await.unwrap_err();
    assert!(
        matches!(&err, LlmError::Protocol(m) if m.contains("<html>")),
        "{err:?}"
    );
}

#[tokio::test]
async fn invalid_header_value_is_config_without_the_value() {
    let err = post_json(
        &client(),
        "http://127.0.0.1:1/",
        &[("x-api-key", "bad\nvalue-secret".to_string())],
        &json!({}),
        &fast(0),
    )
    .await
    .unwrap_err();
    let LlmError::Config(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(msg.contains("x-api-key"));
    assert!(!msg.contains("secret"));
}

/// Formats an IMF-fixdate (for the test above).
fn format_http_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // civil_from_days (H. Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    format!(
        "{wd}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        months[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[test]
fn http_dates_parse_in_all_three_formats() {
    let expected = 784_111_777; // 1994-11-06 08:49:37 UTC
    assert_eq!(
        parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(expected)
    );
    assert_eq!(
        parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"),
        Some(expected)
    );
    assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), Some(expected));
    assert_eq!(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT"), None);
    assert_eq!(parse_http_date("tomorrow"), None);
    assert_eq!(
        format_http_date(UNIX_EPOCH + Duration::from_secs(expected as u64)),
        "Sun, 06 Nov 1994 08:49:37 GMT"
    );
}

#[test]
fn retry_after_values() {
    let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
    assert_eq!(
        parse_retry_after("120", now),
        Some(Duration::from_secs(120))
    );
    assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
        Some(Duration::from_secs(30))
    );
    // In the past: retry now.
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after("-5", now), None);
    assert_eq!(parse_retry_after("1.5", now), None);
    assert_eq!(parse_retry_after("", now), None);
}

#[test]
fn backoff_grows_is_capped_and_jittered() {
    let p = RetryPolicy::default();
    assert_eq!(p.backoff_ceiling(0), Duration::from_millis(250));
    assert_eq!(p.backoff_ceiling(1), Duration::from_millis(500));
    assert_eq!(p.backoff_ceiling(3), Duration::from_secs(2));
    assert_eq!(p.backoff_ceiling(6), Duration::from_secs(10));
    assert_eq!(p.backoff_ceiling(60), Duration::from_secs(10));
    let samples: Vec<Duration> = (0..200).map(|_| p.backoff(2)).collect();
    assert!(samples.iter().all(|d| *d <= Duration::from_secs(1)));
    // Full jitter: spread over the range, not constant.
    assert!(samples.iter().any(|d| *d < Duration::from_millis(300)));
    assert!(samples.iter().any(|d| *d > Duration::from_millis(700)));
    let zero = RetryPolicy {
        base: Duration::ZERO,
        ..p
    };
    assert_eq!(zero.backoff(3), Duration::ZERO);
}

#[test]
fn policy_from_config() {
    let mut c = cfg();
    c.max_retries = 7;
    c.timeout_s = 9;
    let p = RetryPolicy::from_config(&c);
    assert_eq!(p.max_retries, 7);
    assert_eq!(p.timeout, Some(Duration::from_secs(9)));
    assert_eq!(p.base, Duration::from_millis(250));
    assert_eq!(p.cap, Duration::from_secs(10));
    c.timeout_s = 0;
    assert!(matches!(build_client(&c), Err(LlmError::Config(_))));
    c.timeout_s = 1;
    assert!(build_client(&c).is_ok());
}

#[test]
fn crypto_provider_install_is_idempotent() {
    install_crypto_provider();
    install_crypto_provider();
    assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    assert!(client_builder(Duration::from_secs(1)).build().is_ok());
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| OsString::from(v))
    }
}

#[test]
fn key_literal_and_none() {
    let mut c = cfg();
    assert_eq!(resolve_api_key(&c).unwrap(), None);
    c.api_key = Some("  sk-literal\n".into());
    assert_eq!(resolve_api_key(&c).unwrap().as_deref(), Some("sk-literal"));
    c.api_key = Some("   ".into());
    let err = resolve_api_key(&c).unwrap_err();
    assert!(matches!(&err, LlmError::Config(m) if m.contains("api_key is empty")));
}

#[test]
fn key_from_environment() {
    let mut c = cfg();
    c.api_key_env = Some("MY_KEY".into());
    let env = env_of(&[("MY_KEY", "sk-from-env\n")]);
    assert_eq!(
        resolve_api_key_with(&c, &env).unwrap().as_deref(),
        Some("sk-from-env")
    );
    c.api_key_env = Some("OTHER_KEY".into());
    let err = resolve_api_key_with(&c, &env).unwrap_err();
    let LlmError::Config(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(
        msg.contains("OTHER_KEY") && msg.contains("not set"),
        "{msg}"
    );
    assert!(msg.contains("'p'"), "{msg}");
    // The real environment: cargo sets CARGO_PKG_NAME for tests.
    c.api_key_env = Some("CARGO_PKG_NAME".into());
    assert_eq!(
        resolve_api_key(&c).unwrap().as_deref(),
        Some(env!("CARGO_PKG_NAME"))
    );
    c.api_key_env = Some("AGENTOS_TEST_SURELY_UNSET_VARIABLE_4711".into());
    assert!(matches!(resolve_api_key(&c), Err(LlmError::Config(_))));
}

#[test]
fn key_from_file_with_credentials_directory() {
    let dir = std::env::temp_dir().join(format!("agentos-key-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("openai-api-key"), "sk-from-file\n").unwrap();
    let mut c = cfg();
    c.api_key_file = Some("$CREDENTIALS_DIRECTORY/openai-api-key".into());
    let env = env_of(&[("CREDENTIALS_DIRECTORY", dir.to_str().unwrap())]);
    assert_eq!(
        resolve_api_key_with(&c, &env).unwrap().as_deref(),
        Some("sk-from-file")
    );
    c.api_key_file = Some("${CREDENTIALS_DIRECTORY}/openai-api-key".into());
    assert_eq!(
        resolve_api_key_with(&c, &env).unwrap().as_deref(),
        Some("sk-from-file")
    );
    // Plain path.
    c.api_key_file = Some(dir.join("openai-api-key").display().to_string());
    assert_eq!(
        resolve_api_key_with(&c, env_of(&[])).unwrap().as_deref(),
        Some("sk-from-file")
    );
    // Directory variable unset.
    c.api_key_file = Some("$CREDENTIALS_DIRECTORY/openai-api-key".into());
    let err = resolve_api_key_with(&c, env_of(&[])).unwrap_err();
    assert!(
        matches!(&err, LlmError::Config(m) if m.contains("CREDENTIALS_DIRECTORY") && m.contains("not set")),
        "{err:?}"
    );
    // Missing file: named, with the OS reason.
    c.api_key_file = Some("$CREDENTIALS_DIRECTORY/missing-key".into());
    let err = resolve_api_key_with(&c, &env).unwrap_err();
    let LlmError::Config(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(
        msg.contains(&dir.join("missing-key").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("No such file"), "{msg}");
    // Empty file.
    std::fs::write(dir.join("empty"), "\n").unwrap();
    c.api_key_file = Some(dir.join("empty").display().to_string());
    assert!(
        matches!(resolve_api_key_with(&c, &env), Err(LlmError::Config(m)) if m.contains("is empty"))
    );
    // A key with an embedded newline would break the header.
    std::fs::write(dir.join("two-lines"), "sk-one\nsk-two\n").unwrap();
    c.api_key_file = Some(dir.join("two-lines").display().to_string());
    let err = resolve_api_key_with(&c, &env).unwrap_err();
    assert!(
        matches!(&err, LlmError::Config(m) if !m.contains("sk-one") && m.contains("control")),
        "{err:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn key_sources_are_exclusive() {
    let mut c = cfg();
    c.api_key = Some("sk-a".into());
    c.api_key_env = Some("B".into());
    let err = resolve_api_key_with(&c, env_of(&[("B", "sk-b")])).unwrap_err();
    assert!(matches!(&err, LlmError::Config(m) if m.contains("only one")));
}

#[test]
fn excerpt_is_short_single_line_and_redacted() {
    let secrets = secret_values(&[
        ("Authorization", "Bearer sk-abcdef123".to_string()),
        ("anthropic-version", "2023-06-01".to_string()),
    ]);
    let e = excerpt("line one\n  key sk-abcdef123 \n 2023-06-01", &secrets);
    assert_eq!(e, "line one key [redacted] 2023-06-01");
    let long = "x".repeat(1000);
    assert_eq!(excerpt(&long, &[]).chars().count(), EXCERPT_CHARS + 1);
}
