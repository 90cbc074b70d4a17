//! The profile's `[net]` rules applied to one hop: scheme, agreement of the
//! two host parses, the domain lists, and for IP literals the address
//! ranges.

use super::addr::check_addr;
use super::host::{HostLiteral, parse_host, raw_host};
use crate::abi::SysError;
use crate::sandbox::profile::NetPolicy;
use reqwest::Url;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Checks one hop's URL against the rules: scheme, agreement of the two
/// host parses, domain lists, and (for IP literals) the address ranges.
/// Domain names are checked again, by address, when they are resolved.
pub(super) fn check_target(url: &Url, raw: &str, policy: &NetPolicy) -> Result<(), SysError> {
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

#[cfg(test)]
mod tests {
    use super::super::MAX_URL_BYTES;
    use super::super::request::parse_url;
    use super::*;
    use crate::abi::Errno;

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
}
