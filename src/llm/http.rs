//! The HTTP side of the providers: one way to build the `reqwest` client
//! (rustls with the ring crypto provider, proxies ignored, timeouts, user
//! agent), a JSON POST with retries, API key resolution, and the one
//! inference pipeline ([`infer`]: build the body, POST it, parse the
//! answer) that every wire format ([`WireFormat`]) goes through.
//!
//! Retries: 429 honours `Retry-After` (delta-seconds or HTTP-date, capped
//! by [`RetryPolicy::max_retry_after`]), falling back to the backoff;
//! 5xx, network errors and timeouts use full-jitter exponential backoff;
//! 401/403 fail at once with [`LlmError::Auth`]; other 4xx with
//! [`LlmError::BadRequest`]. API keys are never logged and never put in an
//! error message: error bodies are redacted of the values of credential
//! headers before they are quoted.

use super::config::ProviderConfig;
use super::{InferRequest, InferResponse, LlmError, Role, ToolCall};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use std::collections::hash_map::RandomState;
use std::ffi::OsString;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("agentosd/", env!("CARGO_PKG_VERSION"));

/// Longest a connection may take to establish (or the request timeout, if
/// shorter).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Most characters of an error body quoted in an error message.
const EXCERPT_CHARS: usize = 300;

/// Installs rustls' `ring` crypto provider as the process default, once.
///
/// reqwest is built with `rustls-no-provider` (no aws-lc), so a client
/// cannot be built before a provider is installed. Idempotent and safe to
/// call from many threads; if some other code installed a default provider
/// first, that one is kept.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Err only when another thread won the race: theirs is kept.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
    });
}

/// A client builder with the settings every provider uses: rustls (ring),
/// no proxy (proxy environment variables are ignored on purpose), no
/// redirects (a redirect would re-send credential headers), the given
/// per-request timeout, a connect timeout and the `agentosd/<version>`
/// user agent.
pub fn client_builder(timeout: Duration) -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .user_agent(USER_AGENT)
}

/// Builds the client of one provider (timeout from `timeout_s`).
pub fn build_client(cfg: &ProviderConfig) -> Result<reqwest::Client, LlmError> {
    if cfg.timeout_s == 0 {
        return Err(LlmError::Config(format!(
            "provider '{}': timeout_s must be at least 1",
            cfg.name
        )));
    }
    client_builder(Duration::from_secs(cfg.timeout_s))
        .build()
        .map_err(|e| {
            LlmError::Config(format!(
                "provider '{}': cannot build the HTTP client: {}",
                cfg.name,
                error_chain(&e)
            ))
        })
}

/// How [`post_json`] retries.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so at most `max_retries + 1`
    /// requests).
    pub max_retries: u32,
    /// Backoff before the first retry (upper bound of the jitter).
    pub base: Duration,
    /// Growth of the backoff per retry.
    pub factor: u32,
    /// Largest backoff.
    pub cap: Duration,
    /// Largest wait honoured from a `Retry-After` header.
    pub max_retry_after: Duration,
    /// Per-request timeout (also applied by the client); reported in
    /// [`LlmError::Timeout`].
    pub timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 4,
            base: Duration::from_millis(250),
            factor: 2,
            cap: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
            timeout: None,
        }
    }
}

impl RetryPolicy {
    /// The default policy with `max_retries` and `timeout_s` of the
    /// provider.
    pub fn from_config(cfg: &ProviderConfig) -> Self {
        RetryPolicy {
            max_retries: cfg.max_retries,
            timeout: Some(Duration::from_secs(cfg.timeout_s)),
            ..RetryPolicy::default()
        }
    }

    /// The upper bound of the backoff before retry number `attempt`
    /// (0-based): `min(cap, base * factor^attempt)`.
    pub fn backoff_ceiling(&self, attempt: u32) -> Duration {
        let mult = self.factor.max(1).checked_pow(attempt).unwrap_or(u32::MAX);
        self.base
            .checked_mul(mult)
            .unwrap_or(Duration::MAX)
            .min(self.cap)
    }

    /// The backoff before retry number `attempt` with full jitter: uniform
    /// in `[0, backoff_ceiling(attempt)]`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self.backoff_ceiling(attempt);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(random_u64() % (nanos.saturating_add(1)).max(1))
    }

    /// How long to wait before retrying after `err` (retry number
    /// `attempt`).
    fn delay_for(&self, err: &LlmError, attempt: u32) -> Duration {
        match err {
            LlmError::RateLimited {
                retry_after: Some(d),
            } => (*d).min(self.max_retry_after),
            _ => self.backoff(attempt),
        }
    }
}

/// A random number for jitter (std only: `RandomState` is seeded from the
/// OS; mixing in a counter and the time makes successive values differ).
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// POSTs `body` as JSON to `url` with `headers` and returns the JSON
/// answer, retrying as `policy` says (see the module documentation).
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, String)],
    body: &Value,
    policy: &RetryPolicy,
) -> Result<Value, LlmError> {
    let header_map = header_map(headers)?;
    let secrets = secret_values(headers);
    let mut attempt: u32 = 0;
    loop {
        let result = post_once(client, url, &header_map, &secrets, body, policy).await;
        match result {
            Ok(v) => return Ok(v),
            Err(err) if err.is_retryable() && attempt < policy.max_retries => {
                let delay = policy.delay_for(&err, attempt);
                tracing::warn!(
                    url = %url,
                    attempt = attempt + 1,
                    max_retries = policy.max_retries,
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    error = %err,
                    "LLM request failed, retrying"
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    }
}

/// What differs between the wire formats (OpenAI, Anthropic, Gemini):
/// where to POST, which headers carry the key, the request body and how
/// to read the answer. Everything else is [`infer`].
pub trait WireFormat: Send + Sync {
    /// The vendor's public endpoint, used when no `base_url` is configured.
    fn default_base_url(&self) -> &'static str;
    /// The URL to POST an inference of `model` to.
    fn endpoint(&self, base_url: Option<&str>, model: &str) -> String;
    /// The headers that carry the key (when there is one) and the API
    /// version.
    fn headers(&self, api_key: Option<&str>) -> Vec<(&'static str, String)>;
    /// The request body.
    fn build_body(&self, req: &InferRequest) -> Value;
    /// Parses the JSON answer.
    fn parse_response(&self, v: &Value) -> Result<InferResponse, LlmError>;
}

/// One inference in `wire`'s format: build the body, POST it with
/// retries ([`post_json`]), parse the answer.
pub async fn infer(
    wire: &dyn WireFormat,
    client: &reqwest::Client,
    base_url: Option<&str>,
    api_key: Option<&str>,
    req: &InferRequest,
    policy: &RetryPolicy,
) -> Result<InferResponse, LlmError> {
    let body = wire.build_body(req);
    let url = wire.endpoint(base_url, &req.model);
    let v = post_json(client, &url, &wire.headers(api_key), &body, policy).await?;
    wire.parse_response(&v)
}

/// Defines a wire format module's
/// `pub async fn infer(client, base_url, api_key, req, policy)`: [`infer`]
/// with the given [`WireFormat`], for callers that hold no configured
/// provider.
macro_rules! module_infer {
    ($wire:expr) => {
        /// One inference in this module's wire format: build, POST with
        /// retries, parse ([`http::infer`](crate::llm::http::infer)).
        pub async fn infer(
            client: &::reqwest::Client,
            base_url: Option<&str>,
            api_key: Option<&str>,
            req: &$crate::llm::InferRequest,
            policy: &$crate::llm::http::RetryPolicy,
        ) -> Result<$crate::llm::InferResponse, $crate::llm::LlmError> {
            $crate::llm::http::infer(&$wire, client, base_url, api_key, req, policy).await
        }
    };
}
pub(crate) use module_infer;

/// Whether a header carries a credential (its value is marked sensitive
/// and redacted from error bodies).
fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "authorization" || n.contains("key") || n.contains("token") || n.contains("secret")
}

fn header_map(headers: &[(&str, String)]) -> Result<HeaderMap, LlmError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let hname = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| LlmError::Config(format!("invalid HTTP header name {name:?}")))?;
        // The value is not quoted: it may be a key.
        let mut hvalue = HeaderValue::from_str(value).map_err(|_| {
            LlmError::Config(format!(
                "invalid value for HTTP header {name} (control or non-ASCII characters)"
            ))
        })?;
        if is_secret_header(name) {
            hvalue.set_sensitive(true);
        }
        map.insert(hname, hvalue);
    }
    Ok(map)
}

/// The values (and their whitespace-separated words, e.g. the key after
/// `Bearer`) of credential headers, to redact from error bodies.
fn secret_values(headers: &[(&str, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (name, value) in headers {
        if !is_secret_header(name) {
            continue;
        }
        out.push(value.clone());
        out.extend(value.split_whitespace().map(str::to_string));
    }
    out.retain(|s| s.len() >= 6);
    // Longest first so that a whole value is redacted before its parts.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

/// A short, single-line excerpt of an error body with secrets redacted.
pub(crate) fn excerpt(body: &str, secrets: &[String]) -> String {
    let mut text = body.to_string();
    for s in secrets {
        if text.contains(s.as_str()) {
            text = text.replace(s.as_str(), "[redacted]");
        }
    }
    let collapsed: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() > EXCERPT_CHARS {
        let cut: String = collapsed.chars().take(EXCERPT_CHARS).collect();
        format!("{cut}…")
    } else {
        collapsed
    }
}

/// An error and its sources on one line (reqwest's own message is terse).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        src = s.source();
    }
    msg
}

fn transport_error(e: reqwest::Error, policy: &RetryPolicy, started: Instant) -> LlmError {
    if e.is_timeout() {
        return LlmError::Timeout(policy.timeout.unwrap_or_else(|| started.elapsed()));
    }
    let e = e.without_url();
    if e.is_builder() {
        return LlmError::Config(format!("cannot build the request: {}", error_chain(&e)));
    }
    LlmError::Transient(error_chain(&e))
}

async fn post_once(
    client: &reqwest::Client,
    url: &str,
    headers: &HeaderMap,
    secrets: &[String],
    body: &Value,
    policy: &RetryPolicy,
) -> Result<Value, LlmError> {
    let started = Instant::now();
    let mut request = client.post(url).headers(headers.clone()).json(body);
    if let Some(t) = policy.timeout {
        request = request.timeout(t);
    }
    let response = request
        .send()
        .await
        .map_err(|e| transport_error(e, policy, started))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = response
        .bytes()
        .await
        .map_err(|e| transport_error(e, policy, started))?;

    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|e| {
            LlmError::Protocol(format!(
                "HTTP {status} with a body that is not JSON ({e}): {}",
                excerpt(&String::from_utf8_lossy(&bytes), secrets)
            ))
        });
    }
    let text = excerpt(&String::from_utf8_lossy(&bytes), secrets);
    let code = status.as_u16();
    Err(match code {
        429 => LlmError::RateLimited {
            retry_after: retry_after.map(|d| d.min(policy.max_retry_after)),
        },
        401 | 403 => LlmError::Auth(format!("HTTP {status}: {text}")),
        300..=399 => LlmError::BadRequest(format!(
            "HTTP {status}: redirected to {} (redirects are not followed; set base_url to the final URL)",
            location.as_deref().unwrap_or("an unknown location")
        )),
        400..=499 => LlmError::BadRequest(format!("HTTP {status}: {text}")),
        500..=599 => LlmError::Transient(format!("HTTP {status}: {text}")),
        _ => LlmError::Protocol(format!("unexpected HTTP {status}: {text}")),
    })
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP-date (IMF-fixdate,
/// RFC 850 or asctime). A date in the past gives zero. Not capped.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly long numbers saturate rather than fail.
        return Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let when = parse_http_date(v)?;
    let now_s = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    let when_s = u64::try_from(when).unwrap_or(0);
    Some(Duration::from_secs(when_s.saturating_sub(now_s)))
}

/// Seconds since the epoch of an HTTP-date (RFC 9110 §5.6.7).
pub fn parse_http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let (day, month, year, time) = match parts.as_slice() {
        // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
        [wd, d, m, y, t, "GMT"] if wd.ends_with(',') && y.len() == 4 => {
            (d.parse::<u32>().ok()?, *m, y.parse::<i64>().ok()?, *t)
        }
        // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
        [wd, dmy, t, "GMT"] if wd.ends_with(',') => {
            let mut it = dmy.split('-');
            let d = it.next()?.parse::<u32>().ok()?;
            let m = it.next()?;
            let y2 = it.next()?;
            if it.next().is_some() || y2.len() != 2 {
                return None;
            }
            let y2 = y2.parse::<i64>().ok()?;
            // RFC 9110: a two-digit year more than 50 years in the future
            // is in the past century; for our purposes: 70-99 → 19xx.
            let y = if y2 >= 70 { 1900 + y2 } else { 2000 + y2 };
            (d, m, y, *t)
        }
        // asctime: Sun Nov  6 08:49:37 1994
        [_wd, m, d, t, y] if y.len() == 4 => {
            (d.parse::<u32>().ok()?, *m, y.parse::<i64>().ok()?, *t)
        }
        _ => return None,
    };
    let month = match month {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let mut hms = time.split(':');
    let h = hms.next()?.parse::<i64>().ok()?;
    let mi = hms.next()?.parse::<i64>().ok()?;
    let se = hms.next()?.parse::<i64>().ok()?;
    if hms.next().is_some() || !(1..=31).contains(&day) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + h * 3600 + mi * 60 + se)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let d = i64::from(d);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The API key of a provider: the literal `api_key`, the daemon's
/// environment variable `api_key_env`, or the file `api_key_file` (with
/// `$CREDENTIALS_DIRECTORY` expanded and surrounding whitespace, e.g. the
/// trailing newline, trimmed). `Ok(None)` when none is configured. A key
/// that is configured but missing or empty is a [`LlmError::Config`]
/// naming the variable or file — never the key.
pub fn resolve_api_key(cfg: &ProviderConfig) -> Result<Option<String>, LlmError> {
    resolve_api_key_with(cfg, |name| std::env::var_os(name))
}

/// [`resolve_api_key`] with the environment given as a function.
pub fn resolve_api_key_with(
    cfg: &ProviderConfig,
    getenv: impl Fn(&str) -> Option<OsString>,
) -> Result<Option<String>, LlmError> {
    let name = &cfg.name;
    let configured = [
        cfg.api_key.is_some(),
        cfg.api_key_env.is_some(),
        cfg.api_key_file.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if configured > 1 {
        return Err(LlmError::Config(format!(
            "provider '{name}': set only one of api_key, api_key_env and api_key_file"
        )));
    }
    let (key, origin) = if let Some(k) = &cfg.api_key {
        (k.clone(), "api_key".to_string())
    } else if let Some(var) = &cfg.api_key_env {
        let origin = format!("environment variable {var} (api_key_env)");
        let value = getenv(var)
            .ok_or_else(|| LlmError::Config(format!("provider '{name}': {origin} is not set")))?;
        let value = value.into_string().map_err(|_| {
            LlmError::Config(format!("provider '{name}': {origin} is not valid UTF-8"))
        })?;
        (value, origin)
    } else if let Some(file) = &cfg.api_key_file {
        let path = expand_credentials_dir(file, &getenv).map_err(|why| {
            LlmError::Config(format!("provider '{name}': api_key_file {file}: {why}"))
        })?;
        let origin = format!("api_key_file {}", path.display());
        let bytes = std::fs::read(&path).map_err(|e| {
            LlmError::Config(format!("provider '{name}': cannot read {origin}: {e}"))
        })?;
        let value = String::from_utf8(bytes).map_err(|_| {
            LlmError::Config(format!("provider '{name}': {origin} is not valid UTF-8"))
        })?;
        (value, origin)
    } else {
        return Ok(None);
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(LlmError::Config(format!(
            "provider '{name}': {origin} is empty"
        )));
    }
    if key.chars().any(|c| c.is_control() || !c.is_ascii()) {
        return Err(LlmError::Config(format!(
            "provider '{name}': the key in {origin} contains control or non-ASCII characters"
        )));
    }
    Ok(Some(key.to_string()))
}

/// Expands `$CREDENTIALS_DIRECTORY` / `${CREDENTIALS_DIRECTORY}` (systemd's
/// `LoadCredential=`).
fn expand_credentials_dir(
    file: &str,
    getenv: &impl Fn(&str) -> Option<OsString>,
) -> Result<PathBuf, String> {
    const VAR: &str = "CREDENTIALS_DIRECTORY";
    let braced = format!("${{{VAR}}}");
    let plain = format!("${VAR}");
    if !file.contains(&braced) && !file.contains(&plain) {
        return Ok(PathBuf::from(file));
    }
    let dir = getenv(VAR)
        .ok_or_else(|| {
            format!("${VAR} is not set (run agentosd under systemd with LoadCredential=)")
        })?
        .into_string()
        .map_err(|_| format!("${VAR} is not valid UTF-8"))?;
    let dir = dir.trim_end_matches('/');
    Ok(PathBuf::from(
        file.replace(&braced, dir).replace(&plain, dir),
    ))
}

// ---- Helpers shared by the wire formats ----

/// `base_url` (or the vendor default) without trailing slashes.
pub(crate) fn base<'a>(base_url: Option<&'a str>, default: &'a str) -> &'a str {
    base_url
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .unwrap_or(default)
        .trim_end_matches('/')
}

/// A temperature as a JSON number without f32 noise (0.2, not
/// 0.20000000298023224).
pub(crate) fn temperature_json(t: f32) -> Value {
    t.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// A process-unique tool call id for providers that do not assign one.
pub(crate) fn generated_call_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{prefix}_{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The system messages of `req` that are not empty, one paragraph each
/// (for formats that take the system prompt apart from the turns).
pub(crate) fn system_prompt(req: &InferRequest) -> Option<String> {
    let system: Vec<&str> = req
        .messages
        .iter()
        .filter(|m| m.role == Role::System && !m.content.is_empty())
        .map(|m| m.content.as_str())
        .collect();
    (!system.is_empty()).then(|| system.join("\n\n"))
}

/// Appends one turn of `role` with `items` (content blocks or parts) to
/// `turns`: dropped when `items` is empty, merged into the last turn when
/// that has the same role (for formats that want the roles to alternate).
pub(crate) fn push_turn(
    turns: &mut Vec<(&'static str, Vec<Value>)>,
    role: &'static str,
    items: Vec<Value>,
) {
    if items.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((last_role, last_items)) if *last_role == role => last_items.extend(items),
        _ => turns.push((role, items)),
    }
}

/// Tool call arguments as the object a format requires: `null` is `{}`,
/// anything else that is not an object is wrapped as `{"_raw": …}`.
pub(crate) fn arguments_object(args: &Value) -> Value {
    match args {
        Value::Object(_) => args.clone(),
        Value::Null => Value::Object(serde_json::Map::new()),
        other => serde_json::json!({"_raw": other}),
    }
}

/// A parsed tool call: its `id` when the answer has a non-empty one, else
/// a generated `<id_prefix>_<n>`.
pub(crate) fn tool_call(
    id: Option<&Value>,
    id_prefix: &str,
    name: &str,
    arguments: Value,
) -> ToolCall {
    let id = id
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| generated_call_id(id_prefix));
    ToolCall {
        id,
        name: name.to_string(),
        arguments,
    }
}

/// A JSON number as a token count (absent, negative or not a number → 0).
pub(crate) fn tokens(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
        .unwrap_or(0)
}

/// The message of an error object some servers return with HTTP 200.
pub(crate) fn error_message(v: &Value) -> Option<String> {
    let e = v.get("error")?;
    if e.is_null() {
        return None;
    }
    Some(
        e.get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string()),
    )
}

#[cfg(test)]
mod tests {
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
}
