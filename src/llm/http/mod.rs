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
mod tests;
