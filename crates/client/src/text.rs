//! Showing peer-controlled text on a terminal.
//!
//! Message text, contact and group names and everything else a peer chooses can hold terminal
//! control sequences: ANSI CSI (`ESC [`, or the one-byte C1 `0x9b`) recolours or moves the
//! cursor, OSC 52 (`ESC ] 52 ; c ; …`) writes the user's clipboard, BEL rings, a carriage
//! return overwrites the line, and the Unicode bidi overrides (U+202A–U+202E, U+2066–U+2069)
//! reorder what the user reads. Every text output of the CLI and the TUI passes peer text
//! through [`escape_controls`], which shows these characters as escapes (`\x1b`, `\u{9b}`,
//! `\u{202e}`) and keeps newline and tab.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal as it is: C0 controls other than newline and tab, DEL,
/// C1 controls, and the bidi embedding, override and isolate controls.
pub fn is_unsafe_char(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{b}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every [`is_unsafe_char`] shown as an escape (`\x1b` below U+0080, `\u{…}` above);
/// borrowed when there is none.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !is_unsafe_char(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_sequences_are_shown_escaped_and_plain_text_is_untouched() {
        assert!(matches!(
            escape_controls("héllo\tworld\n"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_controls("\u{1b}[31mred\u{1b}]52;c;aGk=\u{7}\u{9b}2J\r\u{202e}txt.exe"),
            "\\x1b[31mred\\x1b]52;c;aGk=\\x07\\u{9b}2J\\x0d\\u{202e}txt.exe"
        );
        assert_eq!(
            escape_controls("\u{0}\u{7f}\u{2066}"),
            "\\x00\\x7f\\u{2066}"
        );
        for c in (0u32..0x3000).filter_map(char::from_u32) {
            let shown = escape_controls(&c.to_string()).into_owned();
            assert!(!shown.chars().any(is_unsafe_char), "{c:?}");
        }
    }
}
