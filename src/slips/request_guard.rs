//! Whether Slips 1.1.21 can answer a peer's `request` without crashing.
//!
//! Slips answers a request with `get_ip_info_from_slips`
//! (`modules/p2p_trust/utils/utils.py`), which reads three values of its
//! cache with `db.get_ip_info(ip, field)`: `HGET IPsInfo:<field> <ip>` on
//! the cache connection (Redis port 6379, DB 1, `decode_responses=True`),
//! then `json.loads` of the text when it parses, the text itself when it
//! does not, and `None` for a missing or empty value
//! (`slips_files/core/database/redis_db/database.py`, `get_ip_info`). Then:
//!
//! ```text
//! try:
//!     if threat_level := get("threat_level"):
//!         score = threat_levels[threat_level]      # 5 names
//!     else:
//!         score = float(get("score"))
//! except (KeyError, ValueError):
//!     return None, None                            # "no data": fine
//! try:
//!     confidence = float(get("confidence"))
//! except ValueError:
//!     pass                                         # left unbound
//! return (score, confidence)                       # UnboundLocalError
//! ```
//!
//! Any other exception (a `TypeError` from `float(None)` when Slips has no
//! score, from `float([..])`, from an unhashable threat level; an
//! `UnboundLocalError` when the confidence is missing from a readable but
//! non-numeric value; an `OverflowError` from `float` of a huge integer)
//! ends Slips' P2P module. [`judge`] evaluates that code on the three raw
//! values; pigeon delivers a request only when the verdict is
//! [`Verdict::Safe`]. Where the outcome depends on details this model does
//! not follow (non-ASCII number text, JSON Python parses and serde does
//! not, integers near the float limit) the verdict is [`Verdict::Unsure`]
//! and the request is dropped as well: Slips only answers requests it has
//! data for, so a dropped request loses nothing a peer would get.

/// The Slips cache fields read for a request, in the order Slips reads
/// them (the Redis hash is `IPsInfo:<field>`, the hash field the IP).
pub const FIELDS: [&str; 3] = ["threat_level", "score", "confidence"];

/// Slips' `threat_levels` keys (`modules/p2p_trust/utils/utils.py`).
pub const THREAT_LEVELS: [&str; 5] = ["info", "low", "medium", "high", "critical"];

/// What Slips would do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Slips answers (or says it has no data) without raising.
    Safe,
    /// Slips raises; the reason says what.
    Crash(&'static str),
    /// Outside what this model follows exactly; treated as unsafe.
    Unsure(&'static str),
}

impl Verdict {
    /// Whether pigeon may deliver the request.
    pub fn is_safe(self) -> bool {
        self == Self::Safe
    }

    /// A short reason, for logs and tests.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Safe => "safe",
            Self::Crash(r) | Self::Unsure(r) => r,
        }
    }
}

/// What `get_ip_info` returns for one raw `HGET` reply.
#[derive(Debug, Clone, PartialEq)]
enum Py {
    /// `None`: missing, empty, or JSON `null`.
    None,
    Bool(bool),
    /// An integer; `zero` and whether `float()` of it overflows.
    Int {
        zero: bool,
        overflows: bool,
    },
    Float(f64),
    Str(String),
    /// A list or dict; `empty` decides its truth.
    Container {
        empty: bool,
    },
    /// `get_ip_info` itself raises `ValueError` (the bytes are not UTF-8:
    /// `UnicodeDecodeError`).
    RaisesValueError,
    /// Not modelled exactly.
    Unsure(&'static str),
}

impl Py {
    /// `bool(value)`.
    fn truthy(&self) -> bool {
        match self {
            Self::None => false,
            Self::Bool(b) => *b,
            Self::Int { zero, .. } => !zero,
            Self::Float(x) => *x != 0.0,
            Self::Str(s) => !s.is_empty(),
            Self::Container { empty } => !empty,
            Self::RaisesValueError | Self::Unsure(_) => true,
        }
    }
}

/// Result of `float(value)`.
enum Float {
    Ok,
    ValueError,
    Crash(&'static str),
    Unsure(&'static str),
}

fn py_float(v: &Py) -> Float {
    match v {
        Py::None => Float::Crash("float(None): TypeError"),
        Py::Bool(_) | Py::Float(_) => Float::Ok,
        Py::Int {
            overflows: true, ..
        } => Float::Crash("float(int): OverflowError"),
        Py::Int { .. } => Float::Ok,
        Py::Str(s) => match float_text(s) {
            Some(true) => Float::Ok,
            Some(false) => Float::ValueError,
            None => Float::Unsure("non-ASCII number text"),
        },
        Py::Container { .. } => Float::Crash("float(list or dict): TypeError"),
        Py::RaisesValueError => Float::ValueError,
        Py::Unsure(r) => Float::Unsure(r),
    }
}

/// Whether Python's `float(s)` accepts `s`; `None` when `s` is not ASCII
/// (Python also takes other Unicode digits and spaces).
fn float_text(s: &str) -> Option<bool> {
    if !s.is_ascii() {
        return None;
    }
    // str.strip() whitespace among ASCII: \t \n \v \f \r, \x1c-\x1f, space.
    let t = s.trim_matches(|c: char| {
        matches!(
            c,
            '\t' | '\n' | '\x0b' | '\x0c' | '\r' | '\x1c'..='\x1f' | ' '
        )
    });
    let t = t.strip_prefix(['+', '-']).unwrap_or(t);
    let lower = t.to_ascii_lowercase();
    if matches!(lower.as_str(), "inf" | "infinity" | "nan") {
        return Some(true);
    }
    // digitpart ["." [digitpart]] | "." digitpart, then [eE][+-]digitpart;
    // digitpart = digit (["_"] digit)*.
    let b = t.as_bytes();
    let mut i = 0;
    let digitpart = |i: &mut usize| -> bool {
        let start = *i;
        while *i < b.len() {
            let digit = b[*i].is_ascii_digit();
            let joiner = b[*i] == b'_'
                && *i > start
                && b[*i - 1].is_ascii_digit()
                && b.get(*i + 1).is_some_and(u8::is_ascii_digit);
            if !(digit || joiner) {
                break;
            }
            *i += 1;
        }
        *i > start
    };
    let int = digitpart(&mut i);
    let mut frac = false;
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac = digitpart(&mut i);
    }
    if !int && !frac {
        return Some(false);
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digitpart(&mut i) {
            return Some(false);
        }
    }
    Some(i == b.len())
}

/// `get_ip_info` of one raw `HGET` reply (`None`: no such field).
fn get_ip_info(raw: Option<&[u8]>) -> Py {
    let Some(raw) = raw else {
        return Py::None;
    };
    let Ok(text) = std::str::from_utf8(raw) else {
        return Py::RaisesValueError;
    };
    if text.is_empty() {
        return Py::None;
    }
    json_loads_or_text(text)
}

/// `json.loads(text)`, or `text` itself on `JSONDecodeError`.
fn json_loads_or_text(text: &str) -> Py {
    let t = text.trim_matches([' ', '\t', '\n', '\r']);
    match t {
        "null" => return Py::None,
        "true" => return Py::Bool(true),
        "false" => return Py::Bool(false),
        "NaN" => return Py::Float(f64::NAN),
        "Infinity" => return Py::Float(f64::INFINITY),
        "-Infinity" => return Py::Float(f64::NEG_INFINITY),
        _ => {}
    }
    if let Some(n) = json_number(t) {
        return n;
    }
    if t.starts_with(['"', '[', '{']) {
        return match serde_json::from_str::<serde_json::Value>(t) {
            Ok(serde_json::Value::String(s)) => Py::Str(s),
            Ok(serde_json::Value::Array(a)) => Py::Container {
                empty: a.is_empty(),
            },
            Ok(serde_json::Value::Object(o)) => Py::Container {
                empty: o.is_empty(),
            },
            // Python may still parse it (NaN inside, lone surrogates,
            // nesting deeper than serde's limit) or not.
            _ => Py::Unsure("JSON text not followed exactly"),
        };
    }
    Py::Str(text.to_owned())
}

/// A JSON number (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?`).
fn json_number(t: &str) -> Option<Py> {
    let b = t.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let int_start = i;
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
        _ => return None,
    }
    let int_digits = &t[int_start..i];
    let mut is_float = false;
    if b.get(i) == Some(&b'.') {
        i = digits_after(b, i + 1)?;
        is_float = true;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits_after(b, i)?;
        is_float = true;
    }
    if i != b.len() {
        return None;
    }
    if is_float {
        // Python's float literal parse never raises (overflow is inf).
        return Some(Py::Float(t.parse::<f64>().unwrap_or(f64::NAN)));
    }
    // f64::MAX has 309 digits: fewer always fit, more never do; 309 is
    // decided by the value, and Python 3.11+ refuses integer text of more
    // than 4300 digits (ValueError inside json.loads, not caught there).
    Some(match int_digits.len() {
        0..=308 => Py::Int {
            zero: int_digits == "0",
            overflows: false,
        },
        310..=4300 => Py::Int {
            zero: false,
            overflows: true,
        },
        _ => Py::Unsure("integer near the float limit or above Python's digit limit"),
    })
}

/// What `get_ip_info_from_slips` does with the raw `HGET` replies for
/// `IPsInfo:threat_level`, `IPsInfo:score` and `IPsInfo:confidence`
/// (`None`: the field is absent).
pub fn judge(
    threat_level: Option<&[u8]>,
    score: Option<&[u8]>,
    confidence: Option<&[u8]>,
) -> Verdict {
    let level = get_ip_info(threat_level);
    match &level {
        Py::RaisesValueError => return Verdict::Safe,
        Py::Unsure(r) => return Verdict::Unsure(r),
        v if v.truthy() => match v {
            Py::Str(s) if THREAT_LEVELS.contains(&s.as_str()) => {}
            // Hashable but not a key: KeyError, caught: "no data".
            Py::Str(_) | Py::Bool(_) | Py::Int { .. } | Py::Float(_) => return Verdict::Safe,
            _ => return Verdict::Crash("unhashable threat_level: TypeError"),
        },
        _ => match py_float(&get_ip_info(score)) {
            Float::Ok => {}
            Float::ValueError => return Verdict::Safe,
            Float::Crash(r) => return Verdict::Crash(r),
            Float::Unsure(r) => return Verdict::Unsure(r),
        },
    }
    match py_float(&get_ip_info(confidence)) {
        Float::Ok => Verdict::Safe,
        Float::ValueError => Verdict::Crash("confidence not a number: UnboundLocalError"),
        Float::Crash(r) => Verdict::Crash(r),
        Float::Unsure(r) => Verdict::Unsure(r),
    }
}

/// The index past the ASCII digits that start at `i`; `None` if there is
/// not at least one (a JSON fraction or exponent needs one).
fn digits_after(b: &[u8], mut i: usize) -> Option<usize> {
    let start = i;
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    (i > start).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(t: Option<&str>, s: Option<&str>, c: Option<&str>) -> Verdict {
        judge(
            t.map(str::as_bytes),
            s.map(str::as_bytes),
            c.map(str::as_bytes),
        )
    }

    #[test]
    fn known_ip_is_safe() {
        assert_eq!(j(Some("medium"), None, Some("0.8")), Verdict::Safe);
        assert_eq!(j(Some("\"high\""), None, Some("1")), Verdict::Safe);
        assert_eq!(j(None, Some("0.5"), Some("0.3")), Verdict::Safe);
        assert_eq!(j(Some("0"), Some("-1"), Some("\" 1e3 \"")), Verdict::Safe);
    }

    #[test]
    fn unknown_ip_crashes_slips() {
        assert!(matches!(j(None, None, None), Verdict::Crash(_)));
        assert!(matches!(j(Some("medium"), None, None), Verdict::Crash(_)));
        assert!(matches!(
            j(Some("low"), None, Some("abc")),
            Verdict::Crash(_)
        ));
        assert!(matches!(j(None, Some("[1]"), Some("1")), Verdict::Crash(_)));
        assert!(matches!(
            j(Some("[\"x\"]"), None, Some("1")),
            Verdict::Crash(_)
        ));
    }

    #[test]
    fn no_data_answers_are_safe() {
        assert_eq!(j(Some("severe"), None, None), Verdict::Safe);
        assert_eq!(j(None, Some("abc"), None), Verdict::Safe);
        assert_eq!(j(Some("1"), None, None), Verdict::Safe);
        assert_eq!(judge(Some(b"\xff"), None, None), Verdict::Safe);
    }

    #[test]
    fn python_float_text() {
        for ok in [
            " 1e3 ",
            "nan",
            "-inf",
            "+Infinity",
            "1_000.5",
            ".5",
            "5.",
            "1E+05",
            "\x1c7\x1f",
        ] {
            assert_eq!(float_text(ok), Some(true), "{ok:?}");
        }
        for bad in [
            "", "abc", "1__0", "_1", "1_", "1e", "0x10", "in f", "1.2.3", "\x001",
        ] {
            assert_eq!(float_text(bad), Some(false), "{bad:?}");
        }
        assert_eq!(float_text("１"), None);
    }

    #[test]
    fn huge_integers() {
        let big = "9".repeat(400);
        assert!(matches!(j(None, Some(&big), Some("1")), Verdict::Crash(_)));
        assert!(matches!(
            j(None, Some("1"), Some(&"9".repeat(309))),
            Verdict::Unsure(_)
        ));
        assert_eq!(j(None, Some(&"9".repeat(308)), Some("1")), Verdict::Safe);
    }
}
