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
//!
//! Layout: [`fetch`] (this file) checks the arguments and bounds the whole
//! exchange by the profile's timeout; `exchange` sends the hops and follows
//! redirects, `request` parses the method, headers and URL, `policy`
//! applies the profile's rules to each hop, [`addr`] classifies addresses,
//! [`host`] reads host literals and [`resolver`] resolves names through
//! the same checks.

pub mod addr;
mod exchange;
pub mod host;
mod policy;
mod request;
pub mod resolver;

pub use addr::{AddrClass, AddrRefusal, check_addr, classify, classify_v4, classify_v6};
pub use host::{HostError, HostLiteral, parse_host, parse_ipv4, raw_host};
pub use policy::{domain_matches, normalize_domain};
pub use resolver::CheckedResolver;

use crate::abi::wire::typed_args;
use crate::abi::{Errno, SysError};
use crate::sandbox::profile::NetPolicy;
use exchange::{Pending, exchange};
use request::{parse_method, parse_url, request_headers};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value};
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

#[cfg(test)]
mod tests;
