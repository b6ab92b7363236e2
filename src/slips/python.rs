//! Python's `json.dumps` formatting, byte for byte: pigeon re-encodes
//! every payload it hands Slips with it (`payload::ValidPayload::
//! canonical`), exactly as Slips' own `json.dumps` writes it.
//!
//! Not part of the crate's API. The dev-only `testkit` crate compiles this
//! same file (`#[path]`) for the builders of Slips' messages that the tests,
//! the bench and `pigeon-slips` use, so the formatting exists once; there
//! its items are public, hence `pub` here in a crate-private module.
#![allow(unreachable_pub)]

/// Python's `repr(float)`: shortest round-trip digits, exponent form below
/// 1e-4 and from 1e16 on, and always a `.0` on integral values.
pub fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    let sign = if x.is_sign_negative() { "-" } else { "" };
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let decpt = exp + 1;
    let body = if (-4..16).contains(&exp) {
        if decpt <= 0 {
            format!("0.{}{digits}", "0".repeat(decpt.unsigned_abs() as usize))
        } else if decpt as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(decpt as usize - digits.len()))
        } else {
            let (int, frac) = digits.split_at(decpt as usize);
            format!("{int}.{frac}")
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{first}{frac}e{esign}{:02}", exp.unsigned_abs())
    };
    format!("{sign}{body}")
}

/// A JSON string as Python's `json.dumps` writes it (`ensure_ascii`).
pub fn dumps_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

/// The `evaluation` of a go message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evaluation<'a> {
    /// No `evaluation` key (Slips' requests).
    Absent,
    /// `"evaluation": null` (a report saying "I know nothing").
    Null,
    /// `{"score": …, "confidence": …}`, both already rendered.
    ScoreConfidence(&'a str, &'a str),
}

/// Slips' `build_go_message` with every form of `evaluation`, as
/// `json.dumps(build_go_message(…))` writes it: keys in this order, `", "`
/// and `": "` separators, scores and confidences already rendered.
pub fn go_message(message_type: &str, ip: &str, evaluation: Evaluation<'_>) -> String {
    let mut text = format!(
        "{{\"message_type\": {}, \"key_type\": \"ip\", \"key\": {}, \"evaluation_type\": \"score_confidence\"",
        dumps_str(message_type),
        dumps_str(ip)
    );
    match evaluation {
        Evaluation::Absent => {}
        Evaluation::Null => text.push_str(", \"evaluation\": null"),
        Evaluation::ScoreConfidence(score, confidence) => text.push_str(&format!(
            ", \"evaluation\": {{\"score\": {score}, \"confidence\": {confidence}}}"
        )),
    }
    text.push('}');
    text
}
