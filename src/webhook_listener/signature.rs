//! Webhook signatures: `sha256=<lower-case hex of HMAC-SHA256(secret,
//! body)>` in [`SIGNATURE_HEADER`], verified in constant time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The request header that carries the signature of a signed path.
pub const SIGNATURE_HEADER: &str = "x-agentos-signature";

/// `sha256=<hex of HMAC-SHA256(secret, body)>`, the value a caller sends in
/// [`SIGNATURE_HEADER`].
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac_of(secret);
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn hmac_of(secret: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length; the error case cannot happen.
    match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

/// Whether `header` (the whole header value) is a valid signature of `body`
/// under `secret`. The comparison is constant-time.
pub fn verify(secret: &str, header: Option<&[u8]>, body: &[u8]) -> bool {
    let Some(header) = header else { return false };
    let Ok(header) = std::str::from_utf8(header) else {
        return false;
    };
    let Some(hex) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Some(tag) = decode_hex(hex) else {
        return false;
    };
    let mut mac = hmac_of(secret);
    mac.update(body);
    mac.verify_slice(&tag).is_ok()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_in_constant_time_form() {
        let body = b"{\"x\":1}";
        let sig = sign("s3cret", body);
        assert!(sig.starts_with("sha256="));
        assert_eq!(sig.len(), 7 + 64);
        assert!(verify("s3cret", Some(sig.as_bytes()), body));
        assert!(verify(
            "s3cret",
            Some(
                sig.to_ascii_uppercase()
                    .replace("SHA256=", "sha256=")
                    .as_bytes()
            ),
            body
        ));
        assert!(!verify("other", Some(sig.as_bytes()), body));
        assert!(!verify("s3cret", Some(sig.as_bytes()), b"{\"x\":2}"));
        assert!(!verify("s3cret", None, body));
        assert!(!verify("s3cret", Some(b"sha256=zz"), body));
        assert!(!verify("s3cret", Some(&sig.as_bytes()[7..]), body));
        assert!(!verify("s3cret", Some(&sig.as_bytes()[..20]), body));
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
