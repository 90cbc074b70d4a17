//! The JSON side of reply parsing: finding where a bracketed value ends
//! (respecting strings) and parsing near-JSON the way models write it.

use serde_json::Value;

/// Parses JSON strictly, then after [`repair`]. The error is serde's
/// complaint about the original text.
pub(super) fn parse_json_lenient(raw: &str) -> Result<Value, serde_json::Error> {
    match serde_json::from_str::<Value>(raw) {
        Ok(v) => Ok(v),
        Err(e) => {
            let fixed = repair(raw);
            if fixed != raw {
                if let Ok(v) = serde_json::from_str::<Value>(&fixed) {
                    return Ok(v);
                }
            }
            Err(e)
        }
    }
}

/// Fixes what models get wrong in JSON: raw control characters inside
/// strings are escaped, invalid escapes (`\'`, `\d`) become what was meant,
/// and trailing commas before `}` or `]` are dropped.
pub(super) fn repair(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    let mut out = String::with_capacity(raw.len() + 16);
    let mut in_str = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if in_str {
            match c {
                '"' => {
                    in_str = false;
                    out.push(c);
                }
                '\\' => {
                    let next = chars.get(i + 1).copied();
                    let hex4 = chars
                        .get(i + 2..i + 6)
                        .is_some_and(|h| h.iter().all(char::is_ascii_hexdigit));
                    match next {
                        Some('"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't') => {
                            out.push('\\');
                            if let Some(n) = next {
                                out.push(n);
                            }
                            i += 1;
                        }
                        Some('u') if hex4 => {
                            out.push('\\');
                            out.push('u');
                            i += 1;
                        }
                        Some('\'') => {
                            out.push('\'');
                            i += 1;
                        }
                        // A lone backslash (a Windows path, a regex): literal.
                        _ => out.push_str("\\\\"),
                    }
                }
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        } else {
            match c {
                '"' => {
                    in_str = true;
                    out.push(c);
                }
                ',' => {
                    let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
                    if !matches!(next, Some('}' | ']')) {
                        out.push(c);
                    }
                }
                c => out.push(c),
            }
        }
        i += 1;
    }
    out
}

/// Index of the bracket closing the one at `start`, scanning up to `end`
/// and skipping JSON strings. When unclosed or mismatched, the error is
/// where the scan stopped.
pub(super) fn scan_balanced(b: &[u8], start: usize, end: usize) -> Result<usize, usize> {
    let mut stack: Vec<u8> = Vec::new();
    let mut in_str = false;
    let mut escaped = false;
    for (k, &c) in b.iter().enumerate().take(end).skip(start) {
        if in_str {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_str = false;
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'{' => stack.push(b'}'),
            b'[' => stack.push(b']'),
            b'}' | b']' => {
                if stack.pop() != Some(c) {
                    return Err(k);
                }
                if stack.is_empty() {
                    return Ok(k);
                }
            }
            _ => {}
        }
    }
    Err(end)
}

pub(super) fn skip_ws(b: &[u8], mut i: usize, end: usize) -> usize {
    while i < end && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

pub(super) fn starts_with_ci(b: &[u8], i: usize, end: usize, pat: &[u8]) -> bool {
    i + pat.len() <= end && b[i..i + pat.len()].eq_ignore_ascii_case(pat)
}

pub(super) fn find_ci(b: &[u8], from: usize, end: usize, pat: &[u8]) -> Option<usize> {
    (from..end).find(|&i| starts_with_ci(b, i, end, pat))
}
