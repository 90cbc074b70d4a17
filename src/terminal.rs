//! Terminal-safe display of text that agents control.
//!
//! Agent output, messages, exit reasons and webhook bodies reach the
//! operator's terminal through `agentos logs`, `wait`, `kill`, `inbox` and
//! `audit`. Printed raw, an agent could forge lines ("TERMINATED (exited
//! with code 0)"), rewrite what is on screen with carriage returns or
//! cursor movement, set the window title, or write the operator's
//! clipboard (OSC 52). [`escape`] makes every such character visible
//! instead: newlines and carriage returns as `\n` and `\r`, other control
//! characters as `\xNN`, C1 controls and bidirectional overrides as
//! `\u{NNNN}`. Tabs are kept (they cannot forge anything). `--raw` in the CLI skips this; `--json` output
//! is JSON-escaped already.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` would change what a terminal shows beyond printing itself.
fn is_unsafe(c: char) -> bool {
    match c {
        '\t' => false,
        // C0 controls and DEL.
        '\0'..='\x1f' | '\x7f' => true,
        // C1 controls (U+009B is an 8-bit CSI on some terminals).
        '\u{80}'..='\u{9f}' => true,
        // Bidirectional overrides and isolates, which reorder what follows.
        '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => true,
        _ => false,
    }
}

/// `s` with every character that could act on a terminal shown as a
/// visible escape; borrowed when there is none.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if !is_unsafe(c) {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for s in ["hello", "tab\there", "üñïçødé ✓", ""] {
            assert!(matches!(escape(s), Cow::Borrowed(b) if b == s), "{s:?}");
        }
    }

    #[test]
    fn forged_lines_and_escape_sequences_become_visible() {
        assert_eq!(
            escape("ok\r\nTERMINATED (exited with code 0)"),
            "ok\\r\\nTERMINATED (exited with code 0)"
        );
        // OSC 52 clipboard write and a window title, both ended by BEL.
        assert_eq!(escape("\x1b]52;c;aGk=\x07"), "\\x1b]52;c;aGk=\\x07");
        assert_eq!(escape("\x1b]0;pwned\x07"), "\\x1b]0;pwned\\x07");
        assert_eq!(escape("a\x7fb\0"), "a\\x7fb\\x00");
        assert_eq!(escape("\u{9b}31m"), "\\u{009b}31m");
        assert_eq!(escape("abc\u{202e}fed"), "abc\\u{202e}fed");
    }

    #[test]
    fn nothing_unsafe_survives_escaping() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let shown = escape(&all);
        assert!(!shown.chars().any(is_unsafe));
        assert!(shown.contains('\t'));
    }
}
