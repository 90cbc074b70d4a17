//! Addresses: what an IP address is ([`classify`]) and whether NET_FETCH
//! may connect to it ([`check_addr`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// Why an address may not be connected to, naming the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrRefusal {
    #[error(
        "loopback {} (the profile does not set allow_loopback)",
        if *ipv4 { "127.0.0.0/8" } else { "::1" }
    )]
    Loopback { ipv4: bool },
    #[error("{0}")]
    Blocked(String),
}

/// The refusal of `ip` (naming the rule), or Ok when it may be connected to.
pub fn check_addr(ip: IpAddr, allow_loopback: bool) -> Result<(), AddrRefusal> {
    match classify(ip) {
        AddrClass::Public => Ok(()),
        AddrClass::Loopback if allow_loopback => Ok(()),
        AddrClass::Loopback => Err(AddrRefusal::Loopback { ipv4: ip.is_ipv4() }),
        AddrClass::Blocked(why) => Err(AddrRefusal::Blocked(why)),
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::drivers::net) fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().expect("must succeed"))
    }

    pub(in crate::drivers::net) fn v6(s: &str) -> IpAddr {
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
            let why = check_addr(ip, false).expect_err("must fail").to_string();
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
}
