//! One NET_FETCH exchange: each hop is checked by the policy, sent, and
//! redirects are followed by hand; then the response is read within the
//! size cap.

use super::policy::check_target;
use super::resolver::{client, transport_error};
use super::{CREDENTIAL_HEADERS, MAX_URL_BYTES};
use crate::abi::SysError;
use crate::sandbox::profile::NetPolicy;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Map, Value, json};

/// The request about to be sent (the next hop of a redirect chain).
pub(super) struct Pending {
    pub(super) method: Method,
    pub(super) url: Url,
    /// The URL as written by the agent or the server (the resolved URL
    /// when the server's Location was relative), for the second host parse.
    pub(super) raw: String,
    pub(super) headers: HeaderMap,
    pub(super) body: Option<Vec<u8>>,
}

pub(super) async fn exchange(
    policy: &NetPolicy,
    mut req: Pending,
    cap: usize,
) -> Result<Value, SysError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::net::raw_host;

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
}
