//! The parts of a NET_FETCH request the agent gives: method, headers and
//! URL, checked.

use super::{
    MAX_HEADER_BYTES, MAX_HEADERS, MAX_HEADERS_TOTAL_BYTES, MAX_URL_BYTES, STRIPPED_HEADERS,
};
use crate::abi::SysError;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde_json::{Map, Value};

pub(super) fn parse_method(method: Option<&str>, may_write: bool) -> Result<Method, SysError> {
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
pub(super) fn request_headers(given: Option<&Map<String, Value>>) -> Result<HeaderMap, SysError> {
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

pub(super) fn parse_url(raw: &str) -> Result<Url, SysError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::Errno;
    use serde_json::json;

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
}
