//! Host literals: how a URL host reads, the way browsers and `inet_aton`
//! read it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How a URL host reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostLiteral {
    Ip(IpAddr),
    Domain(String),
}

/// Why a host that looks like an address is not a valid one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("empty host")]
    Empty,
    #[error("unterminated IPv6 literal")]
    UnterminatedIpv6,
    #[error("IPv6 zone identifiers are not allowed")]
    ZoneId,
    #[error("invalid IPv6 literal [{0}]")]
    Ipv6(String),
    #[error("a ':' in a host that is not a bracketed IPv6 literal")]
    StrayColon,
    #[error("{0:?} has more than four numeric parts")]
    TooManyParts(String),
    #[error("{host:?} ends in a number but part {part:?} is not one")]
    NotANumber { host: String, part: String },
    #[error("{0:?} has a part above 255")]
    PartAbove255(String),
    #[error("{0:?}: the last part overflows the address")]
    Overflow(String),
    #[error("the host is not UTF-8 once percent-decoded")]
    NotUtf8,
}

/// Reads a URL host (as written: percent-escapes allowed, IPv6 in
/// brackets) the way browsers (the WHATWG URL standard) and `inet_aton`
/// do: IPv4 in one to four parts, each decimal, octal (leading `0`) or hex
/// (`0x`), the last part filling the remaining bytes — so `2130706433`,
/// `0177.0.0.1`, `0x7f.1`, `127.1` and `0` are all addresses. A host whose
/// last label is numeric but which is not a valid address is an error, not
/// a name.
pub fn parse_host(host: &str) -> Result<HostLiteral, HostError> {
    let decoded = percent_decode(host)?;
    let h = decoded.to_ascii_lowercase();
    if h.is_empty() {
        return Err(HostError::Empty);
    }
    if let Some(inner) = h.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(HostError::UnterminatedIpv6)?;
        if inner.contains('%') {
            return Err(HostError::ZoneId);
        }
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| HostLiteral::Ip(IpAddr::V6(ip)))
            .map_err(|_| HostError::Ipv6(inner.to_string()));
    }
    if h.contains(':') {
        return h
            .parse::<Ipv6Addr>()
            .map(|ip| HostLiteral::Ip(IpAddr::V6(ip)))
            .map_err(|_| HostError::StrayColon);
    }
    match parse_ipv4(&h)? {
        Some(ip) => Ok(HostLiteral::Ip(IpAddr::V4(ip))),
        None => Ok(HostLiteral::Domain(h)),
    }
}

/// The WHATWG IPv4 parser: None when the host does not end in a number
/// (it is a name), an error when it does but is not a valid address.
pub fn parse_ipv4(host: &str) -> Result<Option<Ipv4Addr>, HostError> {
    let mut parts: Vec<&str> = host.split('.').collect();
    if parts.len() > 1 && parts.last() == Some(&"") {
        parts.pop();
    }
    let last = parts.last().copied().unwrap_or("");
    if !ends_in_number(last) {
        return Ok(None);
    }
    if parts.len() > 4 {
        return Err(HostError::TooManyParts(host.to_string()));
    }
    let mut numbers = Vec::with_capacity(parts.len());
    for p in &parts {
        numbers.push(parse_ipv4_number(p).ok_or_else(|| HostError::NotANumber {
            host: host.to_string(),
            part: p.to_string(),
        })?);
    }
    let (last, init) = numbers.split_last().expect("at least one part");
    if init.iter().any(|n| *n > 255) {
        return Err(HostError::PartAbove255(host.to_string()));
    }
    let room = 256u64.pow(5 - numbers.len() as u32);
    if *last >= room {
        return Err(HostError::Overflow(host.to_string()));
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

fn percent_decode(s: &str) -> Result<String, HostError> {
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
    String::from_utf8(out).map_err(|_| HostError::NotUtf8)
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

#[cfg(test)]
mod tests {
    use super::super::addr::tests::{v4, v6};
    use super::*;

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
}
