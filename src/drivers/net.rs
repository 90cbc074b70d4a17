//! NET_FETCH: an HTTP(S) request the daemon makes on an agent's behalf.
//!
//! Agents have no network of their own; this call is their only way out,
//! so it is built to be safe against server-side request forgery (SSRF):
//!
//! * only `http` and `https` URLs; GET and HEAD, plus POST, PUT, PATCH and
//!   DELETE when the caller holds the NET_WRITE permission;
//! * the host is parsed twice — by the WHATWG URL parser that reqwest uses
//!   and by [`parse_host`], which reads IPv4 literals the way browsers and
//!   `inet_aton` do (`2130706433`, `0177.0.0.1`, `0x7f.1`, `127.1`, …) — and
//!   the two must agree; an IP literal is then classified by [`classify`]
//!   before anything is sent;
//! * a domain name is resolved by [`CheckedResolver`], which reqwest calls
//!   for every connection: it refuses the name if *any* of its addresses is
//!   blocked and hands reqwest only addresses it checked, so what was
//!   checked is what is connected to (no DNS-rebinding window);
//! * blocked: loopback (unless the profile sets `allow_loopback`, which
//!   opens 127.0.0.0/8 and ::1 only), private, link-local, CGNAT,
//!   unique-local, multicast, unspecified, broadcast, documentation,
//!   benchmarking and reserved ranges, and IPv6 forms that embed such an
//!   IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4; Teredo
//!   always);
//! * the profile's `allow_domains`/`deny_domains` (exact or subdomain match,
//!   case-insensitive, trailing dot ignored; deny wins; with an allow list,
//!   IP-literal hosts must be listed exactly);
//! * redirects are followed by hand, at most `max_redirects`, each target
//!   checked by the same rules; credentials are not carried across origins;
//! * proxy environment variables are ignored, hop-by-hop and framing
//!   request headers are dropped, header count and size are capped;
//! * the response body is cut at `max_bytes` (`truncated: true`) and the
//!   whole exchange, redirects and body included, is bounded by the
//!   profile's `timeout_s`.
//!
//! Result: `{"status", "headers", "body", "encoding", "truncated", "url",
//! "redirects"}` — `body` is UTF-8 text (`encoding: "utf8"`) or, when the
//! bytes are not UTF-8, base64 (`encoding: "base64"`); `url` is the final
//! URL after redirects. Errors: EINVAL (bad arguments or URL), EACCES (a
//! policy refusal, naming the rule), ETIMEDOUT, EIO (network errors).

use crate::abi::calls::Call;
use crate::abi::wire::typed_args;
use crate::abi::{Errno, SysError};
use crate::kernel::Kernel;
use crate::kernel::pcb::Pcb;
use crate::llm::http::error_chain;
use crate::sandbox::profile::NetPolicy;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Longest URL accepted.
pub const MAX_URL_BYTES: usize = 8192;
/// Most request headers an agent may send.
pub const MAX_HEADERS: usize = 64;
/// Longest single request header (name + value).
pub const MAX_HEADER_BYTES: usize = 8192;
/// Largest total size of the request headers.
pub const MAX_HEADERS_TOTAL_BYTES: usize = 32 * 1024;
/// Longest a TCP (and TLS) connection may take to establish, within the
/// profile's overall timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Request headers that are dropped: hop-by-hop and framing headers belong
/// to the daemon's connection, not to the agent (`proxy-*` too, by prefix).
const STRIPPED_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// Headers that carry credentials: not forwarded to another origin on a
/// redirect.
const CREDENTIAL_HEADERS: &[&str] = &["authorization", "cookie", "proxy-authorization"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchArgs {
    url: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    headers: Option<Map<String, Value>>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    max_bytes: Option<u64>,
}

impl Kernel {
    /// NET_FETCH for the agent `pcb`, under the `[net]` rules of its profile.
    pub async fn sys_net_fetch(&self, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
        let profile = self
            .profiles
            .get(&pcb.profile)
            .map_err(|e| SysError::io(format!("NET_FETCH: {e}")))?;
        fetch(&profile.net, pcb.may(Call::NET_WRITE), args).await
    }
}

/// Performs one NET_FETCH under `policy`; `may_write` says whether the
/// caller holds NET_WRITE.
pub async fn fetch(policy: &NetPolicy, may_write: bool, args: &Value) -> Result<Value, SysError> {
    let a: FetchArgs = typed_args("NET_FETCH", args)?;
    let method = parse_method(a.method.as_deref(), may_write)?;
    if a.body.is_some() && (method == Method::GET || method == Method::HEAD) {
        return Err(SysError::inval(format!(
            "a {method} request has no body (POST, PUT, PATCH and DELETE may carry one)"
        )));
    }
    let headers = request_headers(a.headers.as_ref())?;
    let url = parse_url(&a.url)?;
    let cap = a.max_bytes.unwrap_or(u64::MAX).min(policy.max_bytes);
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    let req = Pending {
        method,
        url,
        raw: a.url.clone(),
        headers,
        body: a.body.map(String::into_bytes),
    };
    let timeout = Duration::from_secs(policy.timeout_s.max(1));
    match tokio::time::timeout(timeout, exchange(policy, req, cap)).await {
        Ok(result) => result,
        Err(_) => Err(SysError::new(
            Errno::ETIMEDOUT,
            format!(
                "NET_FETCH timed out after {} s (the profile's timeout_s)",
                timeout.as_secs()
            ),
        )),
    }
}

/// The request about to be sent (the next hop of a redirect chain).
struct Pending {
    method: Method,
    url: Url,
    /// The URL as written by the agent or the server (the resolved URL
    /// when the server's Location was relative), for the second host parse.
    raw: String,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
}

async fn exchange(policy: &NetPolicy, mut req: Pending, cap: usize) -> Result<Value, SysError> {
    let client = client(policy.allow_loopback)?;
    let mut redirects = 0u32;
    loop {
        check_target(&req.url, &req.raw, policy)?;
        let mut builder = client
            .request(req.method.clone(), req.url.clone())
            .headers(req.headers.clone());
        if let Some(body) = &req.body {
            builder = builder.body(body.clone());
        }
        let resp = builder.send().await.map_err(|e| transport_error(&e))?;
        let status = resp.status();
        let location = resp.headers().get(reqwest::header::LOCATION).cloned();
        if let (true, Some(location)) = (is_redirect(status), location) {
            if redirects >= policy.max_redirects {
                return Err(SysError::acces(format!(
                    "too many redirects: the profile allows at most {} (max_redirects)",
                    policy.max_redirects
                )));
            }
            redirects += 1;
            req = follow(req, status, &location)?;
            continue;
        }
        return read_response(resp, cap, redirects, req.method == Method::HEAD).await;
    }
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// The next hop after a redirect: 303 (and 301/302 after a POST) become a
/// GET without a body, as browsers do; 307/308 keep method and body.
/// Credentials are dropped when the origin changes.
fn follow(prev: Pending, status: StatusCode, location: &HeaderValue) -> Result<Pending, SysError> {
    let location = location.to_str().map_err(|_| {
        SysError::io(format!(
            "redirect ({status}) with a Location that is not ASCII"
        ))
    })?;
    let next = prev.url.join(location).map_err(|e| {
        SysError::io(format!(
            "redirect ({status}) to an invalid URL {location:?}: {e}"
        ))
    })?;
    if next.as_str().len() > MAX_URL_BYTES {
        return Err(SysError::io(format!(
            "redirect ({status}) to a URL longer than {MAX_URL_BYTES} bytes"
        )));
    }
    if !matches!(next.scheme(), "http" | "https") {
        return Err(SysError::acces(format!(
            "redirect ({status}) to {:?} refused: only http and https URLs may be fetched",
            next.scheme()
        )));
    }
    let to_get = status == StatusCode::SEE_OTHER && prev.method != Method::HEAD
        || matches!(status.as_u16(), 301 | 302) && prev.method == Method::POST;
    let (method, body) = if to_get {
        (Method::GET, None)
    } else {
        (prev.method, prev.body)
    };
    let mut headers = prev.headers;
    if to_get {
        let content: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("content-"))
            .cloned()
            .collect();
        for k in content {
            headers.remove(k);
        }
    }
    if next.origin() != prev.url.origin() {
        for h in CREDENTIAL_HEADERS {
            headers.remove(*h);
        }
    }
    // The host as the server wrote it, when the Location names one.
    let raw =
        with_authority(location, prev.url.scheme()).unwrap_or_else(|| next.as_str().to_string());
    Ok(Pending {
        method,
        url: next,
        raw,
        headers,
        body,
    })
}

/// A redirect reference that names its own host (`scheme://…`, or `//…`
/// which takes the current `scheme`), as an absolute URL string with the
/// host as the server wrote it; None for a relative reference. Backslashes
/// count as slashes and tabs/newlines are dropped, as the URL standard
/// does for http.
fn with_authority(reference: &str, scheme: &str) -> Option<String> {
    let cleaned: String = reference
        .trim_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let scheme_len = match cleaned.split_once(':') {
        Some((s, _))
            if s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            Some(s.len())
        }
        _ => None,
    };
    let after = &cleaned[scheme_len.map_or(0, |n| n + 1)..];
    let mut chars = after.chars();
    if !matches!(
        (chars.next(), chars.next()),
        (Some('/' | '\\'), Some('/' | '\\'))
    ) {
        return None;
    }
    Some(match scheme_len {
        Some(_) => cleaned,
        None => format!("{scheme}:{cleaned}"),
    })
}

async fn read_response(
    mut resp: reqwest::Response,
    cap: usize,
    redirects: u32,
    head: bool,
) -> Result<Value, SysError> {
    let status = resp.status().as_u16();
    let url = resp.url().to_string();
    let mut headers = Map::new();
    for (name, value) in resp.headers() {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                headers.insert(name.as_str().to_string(), Value::String(v));
            }
        }
    }
    let declared = resp.content_length();
    let mut body: Vec<u8> = Vec::new();
    let mut truncated = false;
    if !head {
        loop {
            if body.len() >= cap && declared.is_some_and(|n| n > cap as u64) {
                truncated = true;
                break;
            }
            let Some(chunk) = resp.chunk().await.map_err(|e| transport_error(&e))? else {
                break;
            };
            let room = cap - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
    }
    let (body, encoding) = encode_body(body, truncated);
    Ok(json!({
        "status": status,
        "headers": headers,
        "body": body,
        "encoding": encoding,
        "truncated": truncated,
        "url": url,
        "redirects": redirects,
    }))
}

/// UTF-8 text when the bytes are UTF-8 (a character cut in half by the
/// size cap is dropped), else base64.
fn encode_body(mut bytes: Vec<u8>, truncated: bool) -> (String, &'static str) {
    match String::from_utf8(bytes) {
        Ok(s) => (s, "utf8"),
        Err(e) => {
            let err = e.utf8_error();
            bytes = e.into_bytes();
            if truncated && err.error_len().is_none() {
                bytes.truncate(err.valid_up_to());
                if let Ok(s) = String::from_utf8(bytes.clone()) {
                    return (s, "utf8");
                }
            }
            (STANDARD.encode(&bytes), "base64")
        }
    }
}

fn parse_method(method: Option<&str>, may_write: bool) -> Result<Method, SysError> {
    let m = method.unwrap_or("GET").to_ascii_uppercase();
    match m.as_str() {
        "GET" => Ok(Method::GET),
        "HEAD" => Ok(Method::HEAD),
        "POST" | "PUT" | "PATCH" | "DELETE" => {
            if !may_write {
                return Err(SysError::acces(format!(
                    "method {m} needs the NET_WRITE permission (without it only GET and HEAD)"
                )));
            }
            Method::from_bytes(m.as_bytes()).map_err(|e| SysError::inval(e.to_string()))
        }
        _ => Err(SysError::inval(format!(
            "unsupported method {m:?}: GET, HEAD, POST, PUT, PATCH or DELETE"
        ))),
    }
}

/// The agent's request headers, minus hop-by-hop and framing headers,
/// within the count and size caps.
fn request_headers(given: Option<&Map<String, Value>>) -> Result<HeaderMap, SysError> {
    let mut out = HeaderMap::new();
    let Some(given) = given else {
        return Ok(out);
    };
    if given.len() > MAX_HEADERS {
        return Err(SysError::inval(format!(
            "too many headers: {} (at most {MAX_HEADERS})",
            given.len()
        )));
    }
    let mut total = 0usize;
    for (name, value) in given {
        let Value::String(value) = value else {
            return Err(SysError::inval(format!(
                "header {name:?}: the value must be a string"
            )));
        };
        let size = name.len() + value.len();
        if size > MAX_HEADER_BYTES {
            return Err(SysError::inval(format!(
                "header {name:?} is {size} bytes (at most {MAX_HEADER_BYTES})"
            )));
        }
        total += size;
        if total > MAX_HEADERS_TOTAL_BYTES {
            return Err(SysError::inval(format!(
                "headers exceed {MAX_HEADERS_TOTAL_BYTES} bytes in total"
            )));
        }
        let lower = name.to_ascii_lowercase();
        if STRIPPED_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
            continue;
        }
        let hname = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| SysError::inval(format!("invalid header name {name:?}")))?;
        let hvalue = HeaderValue::from_str(value)
            .map_err(|_| SysError::inval(format!("invalid value for header {name:?}")))?;
        out.append(hname, hvalue);
    }
    Ok(out)
}

fn parse_url(raw: &str) -> Result<Url, SysError> {
    if raw.len() > MAX_URL_BYTES {
        return Err(SysError::inval(format!(
            "URL is {} bytes (at most {MAX_URL_BYTES})",
            raw.len()
        )));
    }
    let url = Url::parse(raw).map_err(|e| SysError::inval(format!("invalid URL {raw:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(SysError::inval(format!(
            "unsupported URL scheme {:?}: only http and https",
            url.scheme()
        )));
    }
    Ok(url)
}

/// Checks one hop's URL against the rules: scheme, agreement of the two
/// host parses, domain lists, and (for IP literals) the address ranges.
/// Domain names are checked again, by address, when they are resolved.
fn check_target(url: &Url, raw: &str, policy: &NetPolicy) -> Result<(), SysError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(SysError::inval(format!(
            "unsupported URL scheme {:?}: only http and https",
            url.scheme()
        )));
    }
    // The URL parser's reading, decided as the connector decides: a host
    // that parses as an IP address is connected to without resolution.
    let Some(host_str) = url.host_str() else {
        return Err(SysError::inval(format!("URL {url} has no host")));
    };
    let host = if let Some(inner) = host_str.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ip = inner
            .parse::<Ipv6Addr>()
            .map_err(|_| SysError::inval(format!("invalid IPv6 host {host_str}")))?;
        HostLiteral::Ip(IpAddr::V6(ip))
    } else if let Ok(ip) = host_str.parse::<Ipv4Addr>() {
        HostLiteral::Ip(IpAddr::V4(ip))
    } else {
        HostLiteral::Domain(host_str.to_string())
    };
    // Our own reading of the host as written must agree with the URL
    // parser's, so that no odd literal means one thing here and another
    // to the connector or resolver.
    let mine = match raw_host(raw) {
        Some(h) => parse_host(&h)
            .map_err(|why| SysError::inval(format!("invalid host {h:?} in {raw:?}: {why}")))?,
        None => return Err(SysError::inval(format!("no host in URL {raw:?}"))),
    };
    if let HostLiteral::Domain(d) = &host {
        // The URL parser saw a name: it must not read as a number to us.
        if let Ok(HostLiteral::Ip(ip)) = parse_host(d) {
            return Err(SysError::inval(format!(
                "ambiguous host {d:?}: it reads as the address {ip}"
            )));
        }
    }
    match (&mine, &host) {
        (HostLiteral::Ip(a), HostLiteral::Ip(b)) if a != b => {
            return Err(SysError::inval(format!(
                "ambiguous host in {raw:?}: read as {a} and as {b}"
            )));
        }
        (HostLiteral::Ip(a), HostLiteral::Domain(d)) => {
            return Err(SysError::inval(format!(
                "ambiguous host in {raw:?}: read as the address {a} and as the name {d:?}"
            )));
        }
        _ => {}
    }
    match host {
        HostLiteral::Domain(d) => {
            let name = d.strip_suffix('.').unwrap_or(&d);
            if name.len() > 253 || name.split('.').any(str::is_empty) {
                return Err(SysError::inval(format!("invalid host name {d:?}")));
            }
            check_domain(&normalize_domain(&d), policy)
        }
        HostLiteral::Ip(ip) => {
            let text = ip.to_string();
            if !policy.allow_domains.is_empty()
                && !policy
                    .allow_domains
                    .iter()
                    .any(|a| normalize_domain(a) == text)
            {
                return Err(SysError::acces(format!(
                    "{text} is not in the profile's allow_domains (an IP address must be listed exactly)"
                )));
            }
            if policy
                .deny_domains
                .iter()
                .any(|d| normalize_domain(d) == text)
            {
                return Err(SysError::acces(format!(
                    "{text} is in the profile's deny_domains"
                )));
            }
            check_addr(ip, policy.allow_loopback)
                .map_err(|why| SysError::acces(format!("address {ip} refused: {why}")))
        }
    }
}

/// Applies the profile's domain lists to a normalized name: deny wins,
/// then a non-empty allow list must match.
fn check_domain(name: &str, policy: &NetPolicy) -> Result<(), SysError> {
    if let Some(d) = policy
        .deny_domains
        .iter()
        .find(|d| domain_matches(name, &normalize_domain(d)))
    {
        return Err(SysError::acces(format!(
            "{name} is refused by the profile's deny_domains entry {d:?}"
        )));
    }
    if !policy.allow_domains.is_empty()
        && !policy
            .allow_domains
            .iter()
            .any(|a| domain_matches(name, &normalize_domain(a)))
    {
        return Err(SysError::acces(format!(
            "{name} is not in the profile's allow_domains"
        )));
    }
    Ok(())
}

/// Lower case, no trailing dot, no leading `*.` or `.`, IDNA names in
/// their ASCII (punycode) form.
pub fn normalize_domain(d: &str) -> String {
    let d = d.trim();
    let d = d
        .strip_prefix("*.")
        .or_else(|| d.strip_prefix('.'))
        .unwrap_or(d);
    let d = d.strip_suffix('.').unwrap_or(d);
    let ascii = Url::parse(&format!("http://{d}/"))
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| d.to_string());
    let ascii = ascii.trim_start_matches('[').trim_end_matches(']');
    ascii
        .strip_suffix('.')
        .unwrap_or(ascii)
        .to_ascii_lowercase()
}

/// `name` is `domain` or one of its subdomains (both normalized).
pub fn domain_matches(name: &str, domain: &str) -> bool {
    !domain.is_empty()
        && (name == domain
            || name
                .strip_suffix(domain)
                .is_some_and(|prefix| prefix.ends_with('.')))
}

// ---- addresses --------------------------------------------------------------

/// What an address is, for NET_FETCH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrClass {
    /// A globally routable unicast address.
    Public,
    /// 127.0.0.0/8 or ::1: allowed only by the profile's `allow_loopback`.
    Loopback,
    /// Always refused; says which rule.
    Blocked(String),
}

/// The refusal of `ip` (naming the rule), or Ok when it may be connected to.
pub fn check_addr(ip: IpAddr, allow_loopback: bool) -> Result<(), String> {
    match classify(ip) {
        AddrClass::Public => Ok(()),
        AddrClass::Loopback if allow_loopback => Ok(()),
        AddrClass::Loopback => Err(format!(
            "loopback {} (the profile does not set allow_loopback)",
            if ip.is_ipv4() { "127.0.0.0/8" } else { "::1" }
        )),
        AddrClass::Blocked(why) => Err(why),
    }
}

pub fn classify(ip: IpAddr) -> AddrClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Special-purpose IPv4 ranges (RFC 6890 and successors), most specific
/// first. 127.0.0.0/8 is handled apart (it is [`AddrClass::Loopback`]).
const V4_BLOCKED: &[([u8; 4], u8, &str)] = &[
    ([0, 0, 0, 0], 32, "unspecified address 0.0.0.0"),
    ([0, 0, 0, 0], 8, "\"this network\" 0.0.0.0/8"),
    ([10, 0, 0, 0], 8, "private 10.0.0.0/8"),
    ([100, 64, 0, 0], 10, "carrier-grade NAT 100.64.0.0/10"),
    (
        [169, 254, 0, 0],
        16,
        "link-local 169.254.0.0/16 (cloud metadata lives here)",
    ),
    ([172, 16, 0, 0], 12, "private 172.16.0.0/12"),
    ([192, 0, 0, 0], 24, "IETF protocol assignments 192.0.0.0/24"),
    (
        [192, 0, 2, 0],
        24,
        "documentation 192.0.2.0/24 (TEST-NET-1)",
    ),
    ([192, 88, 99, 0], 24, "6to4 relay anycast 192.88.99.0/24"),
    ([192, 168, 0, 0], 16, "private 192.168.0.0/16"),
    ([198, 18, 0, 0], 15, "benchmarking 198.18.0.0/15"),
    (
        [198, 51, 100, 0],
        24,
        "documentation 198.51.100.0/24 (TEST-NET-2)",
    ),
    (
        [203, 0, 113, 0],
        24,
        "documentation 203.0.113.0/24 (TEST-NET-3)",
    ),
    ([224, 0, 0, 0], 4, "multicast 224.0.0.0/4"),
    ([255, 255, 255, 255], 32, "broadcast 255.255.255.255"),
    ([240, 0, 0, 0], 4, "reserved 240.0.0.0/4"),
];

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

pub fn classify_v4(ip: Ipv4Addr) -> AddrClass {
    if ip.octets()[0] == 127 {
        return AddrClass::Loopback;
    }
    match V4_BLOCKED.iter().find(|(net, p, _)| in_v4(ip, *net, *p)) {
        Some((_, _, why)) => AddrClass::Blocked((*why).to_string()),
        None => AddrClass::Public,
    }
}

/// Special-purpose IPv6 ranges that embed nothing, most specific first.
const V6_BLOCKED: &[([u16; 8], u8, &str)] = &[
    (
        [0x64, 0xff9b, 1, 0, 0, 0, 0, 0],
        48,
        "local-use NAT64 64:ff9b:1::/48",
    ),
    ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard-only 100::/64"),
    (
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        32,
        "Teredo 2001::/32 (tunnels to an IPv4 address)",
    ),
    (
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        23,
        "IETF protocol assignments 2001::/23",
    ),
    (
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
        32,
        "documentation 2001:db8::/32",
    ),
    ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "documentation 3fff::/20"),
    ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "unique-local fc00::/7"),
    ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local fe80::/10"),
    (
        [0xfec0, 0, 0, 0, 0, 0, 0, 0],
        10,
        "site-local fec0::/10 (deprecated)",
    ),
    ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast ff00::/8"),
];

fn in_v6(ip: Ipv6Addr, net: [u16; 8], prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    };
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

/// The class of an IPv6 address that embeds `v4`: public only when the
/// embedded address is public (loopback never passes in an embedded form).
fn embedded(form: &str, v6: Ipv6Addr, v4: Ipv4Addr) -> AddrClass {
    match classify_v4(v4) {
        AddrClass::Public => AddrClass::Public,
        AddrClass::Loopback => AddrClass::Blocked(format!(
            "{form} address {v6} embeds loopback {v4} (only 127.0.0.0/8 and ::1 themselves may be allowed)"
        )),
        AddrClass::Blocked(why) => {
            AddrClass::Blocked(format!("{form} address {v6} embeds {v4}: {why}"))
        }
    }
}

fn low_v4(ip: Ipv6Addr) -> Ipv4Addr {
    Ipv4Addr::from((u128::from(ip) & 0xffff_ffff) as u32)
}

pub fn classify_v6(ip: Ipv6Addr) -> AddrClass {
    let bits = u128::from(ip);
    if ip.is_unspecified() {
        return AddrClass::Blocked("unspecified address ::".into());
    }
    if ip.is_loopback() {
        return AddrClass::Loopback;
    }
    // ::ffff:a.b.c.d, IPv4-mapped.
    if bits >> 32 == 0xffff {
        return embedded("IPv4-mapped", ip, low_v4(ip));
    }
    // ::ffff:0:a.b.c.d, IPv4-translated (SIIT).
    if bits >> 32 == 0xffff_0000 {
        return AddrClass::Blocked(format!(
            "IPv4-translated address {ip} (::ffff:0:0:0/96) embeds {}",
            low_v4(ip)
        ));
    }
    // ::a.b.c.d, IPv4-compatible (deprecated by RFC 4291).
    if bits >> 32 == 0 {
        let inner = match check_addr(IpAddr::V4(low_v4(ip)), false) {
            Ok(()) => String::new(),
            Err(why) => format!(": {why}"),
        };
        return AddrClass::Blocked(format!(
            "IPv4-compatible address {ip} (::/96, deprecated) embeds {}{inner}",
            low_v4(ip)
        ));
    }
    // 64:ff9b::/96, NAT64 well-known prefix.
    if in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96) {
        return embedded("NAT64", ip, low_v4(ip));
    }
    // 2002:AABB:CCDD::/48, 6to4.
    if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        let v4 = Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32);
        return embedded("6to4", ip, v4);
    }
    if let Some((_, _, why)) = V6_BLOCKED.iter().find(|(net, p, _)| in_v6(ip, *net, *p)) {
        return AddrClass::Blocked((*why).to_string());
    }
    if !in_v6(ip, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3) {
        return AddrClass::Blocked(format!(
            "{ip} is outside global unicast 2000::/3 (reserved)"
        ));
    }
    AddrClass::Public
}

// ---- host literals ----------------------------------------------------------

/// How a URL host reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostLiteral {
    Ip(IpAddr),
    Domain(String),
}

/// Reads a URL host (as written: percent-escapes allowed, IPv6 in
/// brackets) the way browsers (the WHATWG URL standard) and `inet_aton`
/// do: IPv4 in one to four parts, each decimal, octal (leading `0`) or hex
/// (`0x`), the last part filling the remaining bytes — so `2130706433`,
/// `0177.0.0.1`, `0x7f.1`, `127.1` and `0` are all addresses. A host whose
/// last label is numeric but which is not a valid address is an error, not
/// a name.
pub fn parse_host(host: &str) -> Result<HostLiteral, String> {
    let decoded = percent_decode(host)?;
    let h = decoded.to_ascii_lowercase();
    if h.is_empty() {
        return Err("empty host".into());
    }
    if let Some(inner) = h.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| "unterminated IPv6 literal".to_string())?;
        if inner.contains('%') {
            return Err("IPv6 zone identifiers are not allowed".into());
        }
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| HostLiteral::Ip(IpAddr::V6(ip)))
            .map_err(|_| format!("invalid IPv6 literal [{inner}]"));
    }
    if h.contains(':') {
        return h
            .parse::<Ipv6Addr>()
            .map(|ip| HostLiteral::Ip(IpAddr::V6(ip)))
            .map_err(|_| "a ':' in a host that is not a bracketed IPv6 literal".to_string());
    }
    match parse_ipv4(&h)? {
        Some(ip) => Ok(HostLiteral::Ip(IpAddr::V4(ip))),
        None => Ok(HostLiteral::Domain(h)),
    }
}

/// The WHATWG IPv4 parser: None when the host does not end in a number
/// (it is a name), an error when it does but is not a valid address.
pub fn parse_ipv4(host: &str) -> Result<Option<Ipv4Addr>, String> {
    let mut parts: Vec<&str> = host.split('.').collect();
    if parts.len() > 1 && parts.last() == Some(&"") {
        parts.pop();
    }
    let last = parts.last().copied().unwrap_or("");
    if !ends_in_number(last) {
        return Ok(None);
    }
    if parts.len() > 4 {
        return Err(format!("{host:?} has more than four numeric parts"));
    }
    let mut numbers = Vec::with_capacity(parts.len());
    for p in &parts {
        numbers.push(
            parse_ipv4_number(p)
                .ok_or_else(|| format!("{host:?} ends in a number but part {p:?} is not one"))?,
        );
    }
    let (last, init) = numbers.split_last().expect("at least one part");
    if init.iter().any(|n| *n > 255) {
        return Err(format!("{host:?} has a part above 255"));
    }
    let room = 256u64.pow(5 - numbers.len() as u32);
    if *last >= room {
        return Err(format!("{host:?}: the last part overflows the address"));
    }
    let mut addr = *last;
    for (i, n) in init.iter().enumerate() {
        addr += n * 256u64.pow(3 - i as u32);
    }
    Ok(Some(Ipv4Addr::from(addr as u32)))
}

fn ends_in_number(last: &str) -> bool {
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    match last.strip_prefix("0x").or_else(|| last.strip_prefix("0X")) {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => false,
    }
}

/// One part: `0x…` hex (empty is 0), `0…` octal, else decimal. None on
/// anything else or on overflow.
fn parse_ipv4_number(p: &str) -> Option<u64> {
    if p.is_empty() {
        return None;
    }
    let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        (h, 16)
    } else if p.len() > 1 && p.starts_with('0') {
        (&p[1..], 8)
    } else {
        (p, 10)
    };
    if digits.is_empty() {
        return Some(0);
    }
    if !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix)
        .ok()
        .filter(|n| *n <= u64::from(u32::MAX))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "the host is not UTF-8 once percent-decoded".to_string())
}

/// The host part of a URL as written (userinfo, port, path and escapes
/// not interpreted beyond what is needed to find it), after the URL
/// standard's clean-up of surrounding spaces and embedded tabs/newlines.
pub fn raw_host(url: &str) -> Option<String> {
    let cleaned: String = url
        .trim_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let (_, rest) = cleaned.split_once(':')?;
    let rest = rest.trim_start_matches(['/', '\\']);
    let end = rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if hostport.starts_with('[') {
        match hostport.find(']') {
            Some(i) => &hostport[..=i],
            None => hostport,
        }
    } else {
        hostport.split(':').next().unwrap_or("")
    };
    Some(host.to_string())
}

// ---- the client and its resolver --------------------------------------------

/// A name resolver that refuses any name with a blocked address and hands
/// reqwest only the addresses it checked.
pub struct CheckedResolver {
    pub allow_loopback: bool,
}

/// Why [`CheckedResolver`] gave no addresses.
#[derive(Debug, thiserror::Error)]
enum ResolveError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let allow_loopback = self.allow_loopback;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| ResolveError::Failed(format!("cannot resolve {host}: {e}")))?
                .collect();
            if addrs.is_empty() {
                return Err(ResolveError::Failed(format!("{host} has no addresses")).into());
            }
            for a in &addrs {
                if let Err(why) = check_addr(a.ip(), allow_loopback) {
                    return Err(ResolveError::Refused(format!(
                        "{host} resolves to {} which is refused: {why}",
                        a.ip()
                    ))
                    .into());
                }
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The shared client for one loopback setting. No redirects (followed by
/// hand), no proxies, no connection pool (every request resolves and
/// checks afresh), no automatic retries.
fn client(allow_loopback: bool) -> Result<reqwest::Client, SysError> {
    static CLIENTS: [OnceLock<Result<reqwest::Client, String>>; 2] =
        [OnceLock::new(), OnceLock::new()];
    CLIENTS[usize::from(allow_loopback)]
        .get_or_init(|| {
            crate::llm::http::install_crypto_provider();
            reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .retry(reqwest::retry::never())
                .pool_max_idle_per_host(0)
                .connect_timeout(CONNECT_TIMEOUT)
                .user_agent(crate::llm::http::USER_AGENT)
                .dns_resolver(Arc::new(CheckedResolver { allow_loopback }))
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))
        })
        .clone()
        .map_err(SysError::io)
}

/// Maps a reqwest error: a refusal by the resolver stays a policy refusal
/// (EACCES), timeouts are ETIMEDOUT, anything else EIO.
fn transport_error(e: &reqwest::Error) -> SysError {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(r) = s.downcast_ref::<ResolveError>() {
            return match r {
                ResolveError::Refused(m) => SysError::acces(m.clone()),
                ResolveError::Failed(m) => SysError::io(m.clone()),
            };
        }
        src = s.source();
    }
    if e.is_timeout() {
        return SysError::new(Errno::ETIMEDOUT, format!("NET_FETCH: {}", error_chain(e)));
    }
    SysError::io(format!("NET_FETCH: {}", error_chain(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().expect("must succeed"))
    }

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().expect("must succeed"))
    }

    fn blocked(ip: IpAddr) -> String {
        match classify(ip) {
            AddrClass::Blocked(why) => why,
            other => panic!("{ip} should be blocked, is {other:?}"),
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "169.253.255.255",
            "11.0.0.0",
            "1.0.0.0",
        ] {
            assert_eq!(classify(v4(ip)), AddrClass::Public, "{ip}");
        }
        for ip in [
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "2a00:1450:4001:81c::200e",
            "2001:200::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(classify(v6(ip)), AddrClass::Public, "{ip}");
        }
    }

    #[test]
    fn special_ipv4_ranges_are_blocked_with_their_rule() {
        for (ip, rule) in [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "this network"),
            ("10.0.0.1", "private 10."),
            ("10.255.255.255", "private 10."),
            ("100.64.0.1", "carrier-grade NAT"),
            ("100.127.255.255", "carrier-grade NAT"),
            ("169.254.169.254", "link-local"),
            ("172.16.0.1", "private 172.16"),
            ("172.31.255.255", "private 172.16"),
            ("192.0.0.8", "IETF protocol"),
            ("192.0.2.1", "documentation 192.0.2"),
            ("192.88.99.1", "6to4 relay"),
            ("192.168.1.1", "private 192.168"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("198.51.100.7", "documentation 198.51.100"),
            ("203.0.113.9", "documentation 203.0.113"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.254", "reserved"),
            ("255.255.255.255", "broadcast"),
        ] {
            let why = blocked(v4(ip));
            assert!(why.contains(rule), "{ip}: {why}");
        }
    }

    #[test]
    fn loopback_is_its_own_class_and_needs_the_switch() {
        for ip in [
            v4("127.0.0.1"),
            v4("127.255.255.254"),
            v4("127.1.2.3"),
            v6("::1"),
        ] {
            assert_eq!(classify(ip), AddrClass::Loopback, "{ip}");
            assert!(check_addr(ip, true).is_ok(), "{ip}");
            let why = check_addr(ip, false).expect_err("must fail");
            assert!(why.contains("loopback"), "{why}");
        }
        // The switch opens loopback only.
        for ip in [
            v4("10.0.0.1"),
            v4("192.168.0.1"),
            v6("fe80::1"),
            v6("fd00::1"),
        ] {
            assert!(check_addr(ip, true).is_err(), "{ip}");
        }
    }

    #[test]
    fn special_ipv6_ranges_are_blocked_with_their_rule() {
        for (ip, rule) in [
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("febf:ffff::1", "link-local"),
            ("fec0::1", "site-local"),
            ("fc00::1", "unique-local"),
            ("fd12:3456:789a::1", "unique-local"),
            ("ff02::1", "multicast"),
            ("ff05::1:3", "multicast"),
            ("2001:db8::1", "documentation 2001:db8"),
            ("2001:db8:ffff::1", "documentation 2001:db8"),
            ("3fff::1", "documentation 3fff"),
            ("2001::1", "Teredo"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
            ("2001:10::1", "IETF protocol"),
            ("100::1", "discard"),
            ("64:ff9b:1::a00:1", "local-use NAT64"),
            ("5f00::1", "outside global unicast"),
            ("4000::1", "outside global unicast"),
            ("1::1", "outside global unicast"),
        ] {
            let why = blocked(v6(ip));
            assert!(why.contains(rule), "{ip}: {why}");
        }
    }

    #[test]
    fn ipv6_forms_embedding_a_blocked_ipv4_are_blocked() {
        for (ip, rule) in [
            // IPv4-mapped
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:7f00:1", "loopback"),
            ("::ffff:10.1.2.3", "private 10."),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:0.0.0.0", "unspecified"),
            ("0:0:0:0:0:ffff:c0a8:0101", "private 192.168"),
            // IPv4-translated
            ("::ffff:0:127.0.0.1", "IPv4-translated"),
            // IPv4-compatible (always refused; names what is inside)
            ("::127.0.0.1", "IPv4-compatible"),
            ("::7f00:1", "loopback"),
            ("::10.0.0.1", "private 10."),
            ("::8.8.8.8", "IPv4-compatible"),
            ("::2", "IPv4-compatible"),
            // NAT64
            ("64:ff9b::127.0.0.1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("64:ff9b::192.168.0.1", "private 192.168"),
            // 6to4
            ("2002:7f00:1::", "loopback"),
            ("2002:a00:1::1", "private 10."),
            ("2002:a9fe:a9fe::", "link-local"),
            ("2002:c000:0201::1", "documentation 192.0.2"),
        ] {
            let why = blocked(v6(ip));
            assert!(why.contains(rule), "{ip}: {why}");
        }
        // Loopback never passes in an embedded form, even with the switch.
        for ip in [
            "::ffff:127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "::127.0.0.1",
        ] {
            assert!(check_addr(v6(ip), true).is_err(), "{ip}");
        }
    }

    fn ip_of(host: &str) -> IpAddr {
        match parse_host(host) {
            Ok(HostLiteral::Ip(ip)) => ip,
            other => panic!("{host:?} should read as an address, got {other:?}"),
        }
    }

    #[test]
    fn ipv4_literals_read_as_browsers_and_inet_aton_do() {
        for (host, want) in [
            ("127.0.0.1", "127.0.0.1"),
            ("2130706433", "127.0.0.1"),
            ("017700000001", "127.0.0.1"),
            ("0x7f000001", "127.0.0.1"),
            ("0X7F000001", "127.0.0.1"),
            ("0177.0.0.1", "127.0.0.1"),
            ("0177.0.0.01", "127.0.0.1"),
            ("0x7f.0.0.1", "127.0.0.1"),
            ("0x7f.1", "127.0.0.1"),
            ("127.1", "127.0.0.1"),
            ("127.0.1", "127.0.0.1"),
            ("127.0.0.1.", "127.0.0.1"),
            ("0x7f.0x0.0.0x1", "127.0.0.1"),
            ("0177.0x0.1", "127.0.0.1"),
            ("0", "0.0.0.0"),
            ("0x", "0.0.0.0"),
            ("0.0", "0.0.0.0"),
            ("00000000000000000000", "0.0.0.0"),
            ("10.1", "10.0.0.1"),
            ("012.0.0.1", "10.0.0.1"),
            ("167772161", "10.0.0.1"),
            ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
            ("2852039166", "169.254.169.254"),
            ("0251.0376.0251.0376", "169.254.169.254"),
            ("169.16689662", "169.254.169.254"),
            ("192.168.257", "192.168.1.1"),
            ("0xc0.0xa8.0x1.0x1", "192.168.1.1"),
            ("4294967295", "255.255.255.255"),
            ("%31%32%37.0.0.1", "127.0.0.1"),
            ("%30x7f.1", "127.0.0.1"),
            ("8.8.8.8", "8.8.8.8"),
        ] {
            assert_eq!(ip_of(host), v4(want), "{host}");
        }
    }

    #[test]
    fn ipv6_literals_are_read_in_brackets() {
        for (host, want) in [
            ("[::1]", "::1"),
            ("[0:0:0:0:0:0:0:1]", "::1"),
            ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
            ("[::FFFF:7F00:1]", "::ffff:7f00:1"),
            ("[::127.0.0.1]", "::7f00:1"),
            ("[64:ff9b::10.0.0.1]", "64:ff9b::a00:1"),
            ("[2002:7f00:1::]", "2002:7f00:1::"),
            ("[fe80::1]", "fe80::1"),
            ("[%3a%3a1]", "::1"),
        ] {
            assert_eq!(ip_of(host), v6(want), "{host}");
        }
        for bad in [
            "[fe80::1%25eth0]",
            "[fe80::1%eth0]",
            "[::1",
            "[1.2.3.4]",
            "[:::1]",
            "::1",
        ] {
            let r = parse_host(bad);
            assert!(
                !matches!(r, Ok(HostLiteral::Domain(_))),
                "{bad:?} must not read as a name: {r:?}"
            );
        }
        // A bare "::1" (not valid in a URL) still reads as the address.
        assert_eq!(ip_of("::1"), v6("::1"));
    }

    #[test]
    fn numeric_looking_hosts_that_are_not_addresses_are_errors() {
        for bad in [
            "1.2.3.4.5",
            "256.0.0.1",
            "1.256.0.1",
            "1.2.3.256",
            "1.2.65536",
            "1.16777216",
            "4294967296",
            "0x100000000",
            "08.0.0.1",
            "0x7g.1",
            "1..1",
            ".1",
            "99999999999999999999999",
            "foo.1",
            "foo.0x1",
        ] {
            assert!(
                parse_host(bad).is_err(),
                "{bad:?} should be an error: {:?}",
                parse_host(bad)
            );
        }
    }

    #[test]
    fn names_read_as_names() {
        for (host, want) in [
            ("example.com", "example.com"),
            ("EXAMPLE.com.", "example.com."),
            ("localhost", "localhost"),
            ("1.2.3.4.nip.io", "1.2.3.4.nip.io"),
            ("0x7f.example", "0x7f.example"),
            ("127.0.0.1x", "127.0.0.1x"),
            ("1e1", "1e1"),
            ("0xg", "0xg"),
        ] {
            assert_eq!(
                parse_host(host),
                Ok(HostLiteral::Domain(want.to_string())),
                "{host}"
            );
        }
        assert!(parse_host("").is_err());
    }

    #[test]
    fn the_raw_host_is_found_as_written() {
        for (url, want) in [
            ("http://example.com/", "example.com"),
            ("http://example.com", "example.com"),
            ("http://user:pw@example.com:8080/x?y#z", "example.com"),
            ("http://a@b@0x7f.1:80/", "0x7f.1"),
            ("http://127.0.0.1@evil.example/", "evil.example"),
            ("http://[::1]:80/", "[::1]"),
            ("http://[::ffff:127.0.0.1]/", "[::ffff:127.0.0.1]"),
            ("HTTP:\\\\2130706433\\x", "2130706433"),
            ("http:/0177.1/", "0177.1"),
            ("  http://127.1?x", "127.1"),
            ("http://127.\t0.0.1/", "127.0.0.1"),
            ("http://ex.com#frag", "ex.com"),
        ] {
            assert_eq!(raw_host(url).as_deref(), Some(want), "{url}");
        }
        assert_eq!(raw_host("no colon"), None);
    }

    fn policy(allow_loopback: bool) -> NetPolicy {
        NetPolicy {
            allow_loopback,
            ..NetPolicy::default()
        }
    }

    fn target(raw: &str, p: &NetPolicy) -> Result<(), SysError> {
        let url = parse_url(raw)?;
        check_target(&url, raw, p)
    }

    #[test]
    fn odd_literals_in_urls_are_refused_by_the_policy() {
        let p = policy(false);
        for raw in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://017700000001/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://0x7f.1/",
            "http://0x7f.0.0.1:8080/",
            "http://127.0.0.1./",
            "http://%31%32%37.0.0.1/",
            "http://0/",
            "http://0.0.0.0/",
            "http://10.1/",
            "http://167772161/",
            "http://0xa9fea9fe/latest/meta-data/",
            "http://169.254.169.254/",
            "http://192.168.1.1/",
            "http://172.16.0.1/",
            "http://100.64.0.1/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://240.0.0.1/",
            "http://192.0.2.1/",
            "http://198.51.100.1/",
            "http://203.0.113.1/",
            "http://198.18.0.1/",
            "http://[::1]/",
            "http://[::]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::127.0.0.1]/",
            "http://[2002:7f00:1::]/",
            "http://[fe80::1]/",
            "http://[fc00::1]/",
            "http://[fd00::1]/",
            "http://[ff02::1]/",
            "http://[2001:db8::1]/",
            "http://user@127.0.0.1/",
            "http://example.com@127.0.0.1/",
            "https://127.0.0.1:443/",
            "HTTP://0X7F.1/",
            "http:\\\\127.0.0.1\\",
            "http://１２７.０.０.１/",
        ] {
            let err = target(raw, &p).expect_err(raw);
            assert_eq!(err.code, Errno::EACCES, "{raw}: {err}");
            assert!(err.message.contains("refused"), "{raw}: {err}");
        }
        // With the switch, loopback literals pass (in every spelling) but
        // nothing else does.
        let lo = policy(true);
        for raw in [
            "http://127.0.0.1:1/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://[::1]/",
        ] {
            target(raw, &lo).unwrap_or_else(|e| panic!("{raw}: {e}"));
        }
        for raw in [
            "http://10.0.0.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://0/",
        ] {
            assert_eq!(
                target(raw, &lo).expect_err("must fail").code,
                Errno::EACCES,
                "{raw}"
            );
        }
    }

    #[test]
    fn bad_urls_are_einval() {
        let p = policy(false);
        for raw in [
            "",
            "not a url",
            "ftp://example.com/",
            "file:///etc/passwd",
            "gopher://127.0.0.1/",
            "http://",
            "http://1.2.3.4.5/",
            "http://256.1.1.1/",
            "http://1.2.3.4../",
            "http://a..b/",
            "http://.a/",
            "http://[::1/",
            "http://[fe80::1%25lo]/",
            "javascript:alert(1)",
            "data:text/plain,hi",
        ] {
            let err = target(raw, &p).expect_err(raw);
            assert_eq!(err.code, Errno::EINVAL, "{raw}: {err}");
        }
        let long = format!("http://example.com/{}", "a".repeat(MAX_URL_BYTES));
        assert_eq!(
            target(&long, &p).expect_err("must fail").code,
            Errno::EINVAL
        );
        // Public names and addresses pass the static checks.
        for raw in [
            "http://example.com/",
            "https://8.8.8.8/",
            "http://[2606:4700::1]/",
        ] {
            target(raw, &p).unwrap_or_else(|e| panic!("{raw}: {e}"));
        }
    }

    #[test]
    fn domain_lists_match_exactly_or_by_subdomain_and_deny_wins() {
        assert!(domain_matches("example.com", "example.com"));
        assert!(domain_matches("api.example.com", "example.com"));
        assert!(domain_matches("a.b.example.com", "example.com"));
        assert!(!domain_matches("badexample.com", "example.com"));
        assert!(!domain_matches("example.com.evil", "example.com"));
        assert!(!domain_matches("com", "example.com"));
        assert!(!domain_matches("example.com", ""));
        assert_eq!(normalize_domain("Example.COM."), "example.com");
        assert_eq!(normalize_domain("*.example.com"), "example.com");
        assert_eq!(normalize_domain(".example.com"), "example.com");
        assert_eq!(normalize_domain("bücher.example"), "xn--bcher-kva.example");

        let p = NetPolicy {
            allow_domains: vec!["Example.com".into(), "both.test".into()],
            deny_domains: vec!["both.test".into(), "secret.example.com.".into()],
            ..NetPolicy::default()
        };
        for ok in [
            "http://example.com/",
            "http://EXAMPLE.com./",
            "http://api.example.com/",
        ] {
            target(ok, &p).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (raw, rule) in [
            ("http://both.test/", "deny_domains"),
            ("http://x.both.test/", "deny_domains"),
            ("http://secret.example.com/", "deny_domains"),
            ("http://a.SECRET.example.com./", "deny_domains"),
            ("http://other.test/", "allow_domains"),
            ("http://example.com.evil.test/", "allow_domains"),
            ("http://8.8.8.8/", "allow_domains"),
        ] {
            let err = target(raw, &p).expect_err(raw);
            assert_eq!(err.code, Errno::EACCES, "{raw}");
            assert!(err.message.contains(rule), "{raw}: {err}");
        }
        let by_ip = NetPolicy {
            allow_domains: vec!["8.8.8.8".into()],
            deny_domains: vec!["1.1.1.1".into()],
            ..NetPolicy::default()
        };
        target("http://8.8.8.8/", &by_ip).expect("listed address");
        assert!(target("http://1.1.1.1/", &by_ip).is_err());
    }

    #[test]
    fn methods_need_net_write_beyond_get_and_head() {
        assert_eq!(
            parse_method(None, false).expect("must succeed"),
            Method::GET
        );
        assert_eq!(
            parse_method(Some("head"), false).expect("must succeed"),
            Method::HEAD
        );
        for m in ["POST", "put", "Patch", "DELETE"] {
            assert_eq!(
                parse_method(Some(m), false).expect_err("must fail").code,
                Errno::EACCES
            );
            assert!(parse_method(Some(m), true).is_ok());
        }
        for m in ["TRACE", "CONNECT", "OPTIONS", "PROPFIND", "", "GET\r\n"] {
            assert_eq!(
                parse_method(Some(m), true).expect_err("must fail").code,
                Errno::EINVAL,
                "{m:?}"
            );
        }
    }

    #[test]
    fn request_headers_are_stripped_and_capped() {
        let given: Map<String, Value> = serde_json::from_value(json!({
            "X-Test": "1",
            "Host": "evil.example",
            "connection": "close",
            "Proxy-Authorization": "Basic x",
            "Proxy-Connection": "keep-alive",
            "Transfer-Encoding": "chunked",
            "Content-Length": "5",
            "TE": "trailers",
            "Upgrade": "websocket",
            "Accept": "text/plain",
        }))
        .expect("must succeed");
        let h = request_headers(Some(&given)).expect("must succeed");
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort();
        assert_eq!(names, ["accept", "x-test"]);

        let many: Map<String, Value> = (0..=MAX_HEADERS)
            .map(|i| (format!("x-h{i}"), json!("v")))
            .collect();
        assert_eq!(
            request_headers(Some(&many)).expect_err("must fail").code,
            Errno::EINVAL
        );
        let big: Map<String, Value> = [("x-big".to_string(), json!("v".repeat(MAX_HEADER_BYTES)))]
            .into_iter()
            .collect();
        assert_eq!(
            request_headers(Some(&big)).expect_err("must fail").code,
            Errno::EINVAL
        );
        let total: Map<String, Value> = (0..8)
            .map(|i| (format!("x-h{i}"), json!("v".repeat(MAX_HEADER_BYTES - 10))))
            .collect();
        assert_eq!(
            request_headers(Some(&total)).expect_err("must fail").code,
            Errno::EINVAL
        );
        for bad in [
            json!({"x-a": 5}),
            json!({"bad name": "v"}),
            json!({"x-a": "line\r\nx-injected: 1"}),
        ] {
            let m: Map<String, Value> = serde_json::from_value(bad.clone()).expect("must succeed");
            assert_eq!(
                request_headers(Some(&m)).expect_err("must fail").code,
                Errno::EINVAL,
                "{bad}"
            );
        }
    }

    #[test]
    fn bodies_are_text_or_base64() {
        assert_eq!(
            encode_body(b"hello".to_vec(), false),
            ("hello".into(), "utf8")
        );
        assert_eq!(
            encode_body(vec![0xff, 0xfe, 0, 1], false),
            ("//4AAQ==".into(), "base64")
        );
        // A character cut by the cap is dropped, not a reason for base64.
        let mut cut = "é".repeat(3).into_bytes();
        cut.pop();
        assert_eq!(encode_body(cut.clone(), true), ("éé".into(), "utf8"));
        assert_eq!(encode_body(cut, false).1, "base64");
    }

    #[test]
    fn redirect_references_with_their_own_host_are_recognised() {
        for (r, want) in [
            ("http://x/", "http://x/"),
            ("https://x", "https://x"),
            ("//x/", "http://x/"),
            ("\\\\x", "http:\\\\x"),
            ("/\\x", "http:/\\x"),
            ("HTTP:\\\\x", "HTTP:\\\\x"),
            (" //0x7f.1/", "http://0x7f.1/"),
            ("/\t/x", "http://x"),
        ] {
            assert_eq!(with_authority(r, "http").as_deref(), Some(want), "{r:?}");
            let raw = with_authority(r, "http").expect("absolute");
            assert!(
                raw_host(&raw).is_some_and(|h| h.ends_with('x') || h == "0x7f.1"),
                "{raw}"
            );
        }
        for r in [
            "/x",
            "x",
            "../x",
            "?q",
            "#f",
            "http:x",
            "h\ttp:x",
            "1http://x",
        ] {
            assert_eq!(with_authority(r, "http"), None, "{r:?}");
        }
    }

    // ---- against a real server on 127.0.0.1 -----------------------------

    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A one-route-per-path HTTP/1.1 server on 127.0.0.1 (connection per
    /// request) that counts connections.
    struct Server {
        port: u16,
        connections: Arc<AtomicUsize>,
    }

    fn serve(port: u16, path: &str, stream: &mut TcpStream) {
        let reply = |s: &mut TcpStream, head: &str, body: &[u8]| {
            let _ = write!(
                s,
                "HTTP/1.1 {head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(body);
        };
        let redirect = |s: &mut TcpStream, to: &str| {
            let _ = write!(
                s,
                "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        };
        match path {
            "/hello" => reply(stream, "200 OK", b"hello"),
            "/big" => reply(stream, "200 OK", &[b'a'; 5000]),
            "/binary" => reply(stream, "200 OK", &[0xff, 0xfe, 0, 1]),
            "/slow" => {
                std::thread::sleep(Duration::from_secs(3));
                reply(stream, "200 OK", b"late");
            }
            "/stream" => {
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                );
                for _ in 0..100_000 {
                    if write!(stream, "400\r\n{}\r\n", "z".repeat(0x400)).is_err() {
                        break;
                    }
                }
            }
            "/to-private" => redirect(stream, "http://10.0.0.1/"),
            "/to-decimal" => redirect(stream, "http://2130706433:1/"),
            "/to-localhost" => redirect(stream, &format!("http://localhost:{port}/hello")),
            "/to-file" => redirect(stream, "file:///etc/passwd"),
            "/to-scheme-relative" => redirect(stream, &format!("//0x7f.1:{port}/hello")),
            p if p.starts_with("/chain/") => {
                let n: u32 = p[7..].parse().unwrap_or(0);
                if n == 0 {
                    reply(stream, "200 OK", b"end")
                } else {
                    redirect(stream, &format!("/chain/{}", n - 1))
                }
            }
            _ => reply(stream, "404 Not Found", b"no"),
        }
    }

    impl Server {
        fn start() -> Server {
            let l = TcpListener::bind("127.0.0.1:0").expect("must succeed");
            let port = l.local_addr().expect("must succeed").port();
            let connections = Arc::new(AtomicUsize::new(0));
            let count = connections.clone();
            std::thread::spawn(move || {
                for s in l.incoming() {
                    let Ok(mut s) = s else { break };
                    count.fetch_add(1, Ordering::SeqCst);
                    std::thread::spawn(move || {
                        let mut r = BufReader::new(s.try_clone().expect("must succeed"));
                        let mut line = String::new();
                        let _ = r.read_line(&mut line);
                        let path = line.split(' ').nth(1).unwrap_or("/").to_string();
                        let mut len = 0usize;
                        loop {
                            let mut h = String::new();
                            if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                                break;
                            }
                            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:")
                            {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                        let mut body = vec![0; len];
                        let _ = r.read_exact(&mut body);
                        serve(port, &path, &mut s);
                    });
                }
            });
            Server { port, connections }
        }

        fn url(&self, path: &str) -> String {
            format!("http://127.0.0.1:{}{path}", self.port)
        }
    }

    fn local(max_bytes: u64, timeout_s: u64, max_redirects: u32) -> NetPolicy {
        NetPolicy {
            allow_loopback: true,
            max_bytes,
            timeout_s,
            max_redirects,
            ..NetPolicy::default()
        }
    }

    #[tokio::test]
    async fn fetches_truncates_and_encodes() {
        let s = Server::start();
        let p = local(1000, 5, 3);
        let r = fetch(&p, false, &json!({"url": s.url("/hello")}))
            .await
            .expect("must succeed");
        assert_eq!(r["status"], 200);
        assert_eq!(r["body"], "hello");
        assert_eq!(r["encoding"], "utf8");
        assert_eq!(r["truncated"], false);
        assert_eq!(r["headers"]["content-length"], "5");

        let r = fetch(&p, false, &json!({"url": s.url("/big")}))
            .await
            .expect("must succeed");
        assert_eq!(r["body"].as_str().expect("must succeed").len(), 1000);
        assert_eq!(r["truncated"], true);
        let r = fetch(&p, false, &json!({"url": s.url("/big"), "max_bytes": 10}))
            .await
            .expect("must succeed");
        assert_eq!(r["body"], "aaaaaaaaaa");
        // The request may lower the cap, never raise it.
        let r = fetch(
            &p,
            false,
            &json!({"url": s.url("/big"), "max_bytes": 1u64 << 40}),
        )
        .await
        .expect("must succeed");
        assert_eq!(r["body"].as_str().expect("must succeed").len(), 1000);
        // An endless chunked body is cut, not waited for.
        let r = fetch(&p, false, &json!({"url": s.url("/stream")}))
            .await
            .expect("must succeed");
        assert_eq!(r["truncated"], true);
        assert_eq!(r["body"].as_str().expect("must succeed").len(), 1000);

        let r = fetch(&p, false, &json!({"url": s.url("/binary")}))
            .await
            .expect("must succeed");
        assert_eq!(r["encoding"], "base64");
        assert_eq!(r["body"], "//4AAQ==");

        let r = fetch(
            &p,
            false,
            &json!({"url": s.url("/hello"), "method": "HEAD"}),
        )
        .await
        .expect("must succeed");
        assert_eq!(r["status"], 200);
        assert_eq!(r["body"], "");
    }

    #[tokio::test]
    async fn redirects_are_rechecked_and_bounded() {
        let s = Server::start();
        let p = local(1000, 5, 3);
        let r = fetch(&p, false, &json!({"url": s.url("/chain/3")}))
            .await
            .expect("must succeed");
        assert_eq!(r["body"], "end");
        assert_eq!(r["redirects"], 3);
        assert!(
            r["url"]
                .as_str()
                .expect("must succeed")
                .ends_with("/chain/0")
        );
        let e = fetch(&p, false, &json!({"url": s.url("/chain/4")}))
            .await
            .expect_err("must fail");
        assert_eq!(e.code, Errno::EACCES, "{e}");
        assert!(e.message.contains("max_redirects"), "{e}");
        for (path, rule) in [
            ("/to-private", "private 10."),
            ("/to-file", "only http and https"),
        ] {
            let e = fetch(&p, false, &json!({"url": s.url(path)}))
                .await
                .expect_err("must fail");
            assert_eq!(e.code, Errno::EACCES, "{path}: {e}");
            assert!(e.message.contains(rule), "{path}: {e}");
        }
        // A decimal literal of loopback is loopback: followed under the switch.
        let e = fetch(&p, false, &json!({"url": s.url("/to-decimal")}))
            .await
            .expect_err("must fail");
        assert_eq!(e.code, Errno::EIO, "port 1 is closed: {e}");
        // localhost goes through the checking resolver.
        let r = fetch(&p, false, &json!({"url": s.url("/to-scheme-relative")}))
            .await
            .expect("must succeed");
        assert_eq!(r["body"], "hello");
        let r = fetch(&p, false, &json!({"url": s.url("/to-localhost")}))
            .await
            .expect("must succeed");
        assert_eq!(r["body"], "hello");
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_blocked_addresses() {
        let s = Server::start();
        let p = policy(false);
        let e = fetch(
            &p,
            false,
            &json!({"url": format!("http://localhost:{}/hello", s.port)}),
        )
        .await
        .expect_err("must fail");
        assert_eq!(e.code, Errno::EACCES, "{e}");
        assert!(e.message.contains("localhost resolves to 127.0.0.1"), "{e}");
        let e = fetch(&p, false, &json!({"url": s.url("/hello")}))
            .await
            .expect_err("must fail");
        assert_eq!(e.code, Errno::EACCES, "{e}");
        assert_eq!(
            s.connections.load(Ordering::SeqCst),
            0,
            "nothing may connect"
        );
    }

    #[tokio::test]
    async fn the_profile_timeout_bounds_the_whole_exchange() {
        let s = Server::start();
        let p = local(1000, 1, 3);
        let started = std::time::Instant::now();
        let e = fetch(&p, false, &json!({"url": s.url("/slow")}))
            .await
            .expect_err("must fail");
        assert_eq!(e.code, Errno::ETIMEDOUT, "{e}");
        assert!(started.elapsed() < Duration::from_millis(2500));
    }

    #[tokio::test]
    async fn bad_arguments_are_einval() {
        let p = local(1000, 5, 3);
        for args in [
            json!({}),
            json!({"url": 5}),
            json!({"url": "http://127.0.0.1:1/", "method": 1}),
            json!({"url": "http://127.0.0.1:1/", "headers": ["x"]}),
            json!({"url": "http://127.0.0.1:1/", "max_bytes": -1}),
            json!({"url": "http://127.0.0.1:1/", "unknown": 1}),
            json!({"url": "http://127.0.0.1:1/", "body": "x"}),
            json!({"url": "http://127.0.0.1:1/", "method": "TRACE"}),
        ] {
            let e = fetch(&p, true, &args).await.expect_err("must fail");
            assert_eq!(e.code, Errno::EINVAL, "{args}: {e}");
        }
    }
}
