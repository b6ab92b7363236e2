//! Printing strings that came from the network (or from anyone but us).
//!
//! A log line is read by people and by tools that split on newlines, so a
//! peer must not be able to end a line and forge the next one (`\n`, `\r`),
//! hide text (NUL, ESC sequences of a terminal) or spoof direction (bidi
//! overrides). tracing-subscriber's formatter writes `Display` fields as
//! they are, so every network-derived value is wrapped in [`Untrusted`]
//! before it reaches a `tracing` macro.

use std::fmt::{self, Display, Write};

/// Displays its content with everything but printable ASCII escaped:
/// `\n`, `\r`, `\t`, `\0` and `\\` as such, other characters as
/// `\u{hex}`, as Rust's `char::escape_default` writes them. The output is
/// always one line of printable ASCII.
#[derive(Debug, Clone, Copy)]
pub struct Untrusted<T>(pub T);

impl<T: Display> Display for Untrusted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(Escaper(f), "{}", self.0)
    }
}

/// Escapes what is written through it into the inner formatter.
struct Escaper<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl Write for Escaper<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Runs of harmless characters are written in one go.
        let mut start = 0;
        for (i, c) in s.char_indices() {
            if (' '..='~').contains(&c) && c != '\\' {
                continue;
            }
            self.0.write_str(&s[start..i])?;
            match c {
                '\0' => self.0.write_str("\\0")?,
                c => write!(self.0, "{}", c.escape_default())?,
            }
            start = i + c.len_utf8();
        }
        self.0.write_str(&s[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(s: &str) -> String {
        Untrusted(s).to_string()
    }

    #[test]
    fn printable_ascii_is_unchanged() {
        assert_eq!(
            shown("fe80::1%eth0 from 10.0.0.2:4001"),
            "fe80::1%eth0 from 10.0.0.2:4001"
        );
    }

    #[test]
    fn newline_cannot_forge_a_log_line() {
        let s = shown("fe80::1%x\n2026-12-01T00:00:00Z WARN [ALERT] fake");
        assert!(!s.contains('\n'));
        assert_eq!(s, "fe80::1%x\\n2026-12-01T00:00:00Z WARN [ALERT] fake");
    }

    #[test]
    fn carriage_return_nul_and_escape_are_escaped() {
        assert_eq!(shown("a\rb"), "a\\rb");
        assert_eq!(shown("a\0b"), "a\\0b");
        assert_eq!(shown("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(shown("tab\there"), "tab\\there");
        assert_eq!(shown("del\u{7f}"), "del\\u{7f}");
    }

    #[test]
    fn backslash_is_escaped_so_escapes_are_unambiguous() {
        assert_eq!(shown("a\\nb"), "a\\\\nb");
    }

    #[test]
    fn non_ascii_is_escaped() {
        assert_eq!(shown("ü"), "\\u{fc}");
        // A right-to-left override would reorder what a terminal shows.
        assert_eq!(shown("a\u{202e}b"), "a\\u{202e}b");
        let s = shown("ścieżka\u{2028}x");
        assert!(s.is_ascii() && !s.contains('\n'));
    }

    #[test]
    fn long_hostile_input_stays_one_printable_line() {
        let hostile: String = (0u8..=255).map(char::from).cycle().take(5000).collect();
        let s = shown(&hostile);
        assert!(s.bytes().all(|b| (b' '..=b'~').contains(&b)));
    }

    #[test]
    fn wraps_any_display() {
        assert_eq!(
            Untrusted(format_args!("{}:{}", "x\ny", 5)).to_string(),
            "x\\ny:5"
        );
    }
}
