//! The one checker of what Slips accepts on the pigeon → Slips channel: a
//! Rust port of the checks of slips-sim (`listen`, `respond`, `peers`), the
//! Slips 1.1.21 stand-in this project was checked against. The integration
//! tests check every message they receive with it, `pigeon-slips` refuses
//! what it refuses, and the lab bench's Slips stand-ins read messages
//! through it.
//!
//! [`check_gopy`] applies every rule of the table "Validation rules and
//! reason codes" of `shared/tools/README.md`, in the same order and with the
//! same reason codes, to one payload published on the Pigeon → Slips
//! channel. It mirrors Python's semantics rather than Rust's where they
//! differ, because slips-sim is the oracle:
//!
//! * JSON is parsed by a small parser that behaves like CPython 3.11's
//!   `json.loads` with `NaN`/`Infinity` rejected: integers and floats are
//!   told apart by their text (`1` is an integer, `1.0` and `1e3` floats),
//!   integers have arbitrary size (`-0` is the integer 0; more than 4300
//!   digits is an error, as in CPython), `1e400` is the float `inf` (so "not
//!   a finite number", not "not JSON"), lone `\ud800` escapes are accepted,
//!   duplicate keys keep the last value.
//! * base64 is `base64.b64decode(s, validate=True)` of CPython 3.11 (strict
//!   mode of `binascii.a2b_base64`): standard alphabet only, `YWJj=` and
//!   non-zero trailing bits accepted, `YQ=` or `YW=J` rejected.
//! * IP addresses are `ipaddress.ip_address()` on a string: no leading zeros
//!   in IPv4 octets, every IPv6 form including an embedded IPv4 tail and a
//!   scope (`fe80::1%eth0`).
//!
//! Known, deliberate differences: a lone surrogate escape becomes U+FFFD in
//! the decoded strings (it can never make a check pass or fail differently,
//! only the `detail` text and the `decoded` value differ), and nesting deeper
//! than [`MAX_DEPTH`] is reported as `payload_not_json`/`message_not_json`
//! where slips-sim would die with a `RecursionError`. The `detail` texts
//! follow slips-sim's but are not byte-identical.
//!
//! Its tests are in `tests/integration/slips_checks.rs` (slips-sim's self
//! test vectors, and the comparison with slips-sim itself).

use super::python::{dumps_str, py_float_repr};
use serde_json::Value;

/// Every reason code, in checking order (the same list as slips-sim's
/// `REASONS`).
pub const REASONS: &[&str] = &[
    "payload_not_utf8",
    "payload_not_json",
    "payload_not_object",
    "version_missing",
    "version_mismatch",
    "message_type_missing",
    "message_type_invalid",
    "message_contents_missing",
    "message_contents_not_object",
    "null_value",
    "reporter_missing",
    "reporter_invalid",
    "report_time_missing",
    "report_time_not_integer",
    "report_time_out_of_range",
    "message_missing",
    "message_not_string",
    "message_not_ascii",
    "message_not_base64",
    "message_not_json",
    "message_not_object",
    "inner_message_type_missing",
    "inner_message_type_invalid",
    "key_type_missing",
    "key_type_invalid",
    "key_missing",
    "key_invalid",
    "evaluation_type_missing",
    "evaluation_type_invalid",
    "evaluation_missing",
    "evaluation_not_object",
    "score_missing",
    "score_not_number",
    "score_out_of_range",
    "confidence_missing",
    "confidence_not_number",
    "confidence_out_of_range",
    "peerid_missing",
    "peerid_invalid",
    "timestamp_missing",
    "timestamp_not_integer",
    "timestamp_out_of_range",
    "reliability_not_number",
    "reliability_out_of_range",
    "ip_invalid",
];

/// How far a timestamp may be ahead of the receiver's clock, in seconds.
pub const CLOCK_SLACK_S: i64 = 1;

/// Deepest JSON nesting accepted (CPython stops near its recursion limit of
/// 1000 with a `RecursionError`, which slips-sim does not catch).
pub const MAX_DEPTH: usize = 900;

/// CPython's `sys.int_info.default_max_str_digits`: longer integer literals
/// make `json.loads` raise `ValueError`.
const MAX_INT_DIGITS: usize = 4300;

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The reason code, one of [`REASONS`].
    pub reason: &'static str,
    /// A human-readable explanation, for test failure messages.
    pub detail: String,
}

/// A gopy message that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub enum GopyMsg {
    /// A peer's message for Slips.
    GoData {
        /// The sending peer's id.
        reporter: String,
        /// Receive time, Unix seconds.
        report_time: i64,
        /// The base64 text as published (one trailing `\n` possible).
        message: String,
        /// The decoded inner message (a JSON object).
        decoded: Value,
    },
    /// News about a peer.
    PeerUpdate {
        /// The peer's id.
        peerid: String,
        /// Its address, when the update carries one.
        ip: Option<String>,
        /// Its reliability, when the update carries one.
        reliability: Option<f64>,
        /// Unix seconds.
        timestamp: i64,
    },
}

impl GopyMsg {
    /// `"go_data"` or `"peer_update"`.
    pub fn kind(&self) -> &'static str {
        match self {
            GopyMsg::GoData { .. } => "go_data",
            GopyMsg::PeerUpdate { .. } => "peer_update",
        }
    }
}

/// Checks one payload published on the Pigeon → Slips channel, as
/// `slips-sim listen --strict-version --version EXPECTED_VERSION` does.
/// `now_unix` is the receiver's clock (timestamps may be at most
/// [`CLOCK_SLACK_S`] ahead of it). On failure, every violation is listed in
/// checking order; the first one is slips-sim's `reason`.
pub fn check_gopy(
    payload: &[u8],
    expected_version: &str,
    now_unix: i64,
) -> Result<GopyMsg, Vec<Violation>> {
    check_gopy_with(payload, Some(expected_version), now_unix)
}

/// [`check_gopy`] with an optional version rule: `None` is slips-sim's
/// `--no-version-check` (e.g. for the Go Pigeon, which never adds it).
pub fn check_gopy_with(
    payload: &[u8],
    expected_version: Option<&str>,
    now_unix: i64,
) -> Result<GopyMsg, Vec<Violation>> {
    let mut v = Verdict::default();
    let msg = check_into(payload, expected_version, now_unix, &mut v);
    match msg {
        Some(msg) if v.violations.is_empty() => Ok(msg),
        _ if v.violations.is_empty() => Err(vec![Violation {
            reason: "payload_not_object",
            detail: "internal error: no violation and no message".to_owned(),
        }]),
        _ => Err(v.violations),
    }
}

/// Just the reason codes of [`check_gopy_with`], empty when valid.
pub fn reasons(payload: &[u8], expected_version: Option<&str>, now_unix: i64) -> Vec<&'static str> {
    match check_gopy_with(payload, expected_version, now_unix) {
        Ok(_) => Vec::new(),
        Err(v) => v.iter().map(|v| v.reason).collect(),
    }
}

pub use crate::wait::now_unix;

// ------------------------------------------------------------------ checks

#[derive(Default)]
struct Verdict {
    violations: Vec<Violation>,
}

impl Verdict {
    fn fail(&mut self, reason: &'static str, detail: impl Into<String>) {
        debug_assert!(REASONS.contains(&reason), "{reason}");
        self.violations.push(Violation {
            reason,
            detail: detail.into(),
        });
    }
}

/// Runs every check; returns the typed message when the kind is known and
/// the fields it needs are well-formed (the caller still requires that no
/// violation was recorded).
fn check_into(payload: &[u8], version: Option<&str>, now: i64, v: &mut Verdict) -> Option<GopyMsg> {
    let text = match std::str::from_utf8(payload) {
        Ok(t) => t,
        Err(e) => {
            v.fail(
                "payload_not_utf8",
                format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            );
            return None;
        }
    };
    let payload = match parse_json(text) {
        Ok(p) => p,
        Err(e) => {
            v.fail("payload_not_json", format!("not JSON: {e}"));
            return None;
        }
    };
    let Py::Object(payload) = payload else {
        v.fail(
            "payload_not_object",
            format!("the payload is {}", show(&payload)),
        );
        return None;
    };

    if let Some(version) = version {
        match get(&payload, "version") {
            None => v.fail(
                "version_missing",
                format!("no \"version\" key; Slips {version} drops the message unseen"),
            ),
            Some(found) if !is_str(found, version) => v.fail(
                "version_mismatch",
                format!(
                    "\"version\" is {}, expected string {}",
                    show(found),
                    dumps_str(version)
                ),
            ),
            Some(_) => {}
        }
    }

    let kind = match get(&payload, "message_type") {
        None => {
            v.fail("message_type_missing", "no \"message_type\" key");
            None
        }
        Some(k) if is_str(k, "go_data") => Some("go_data"),
        Some(k) if is_str(k, "peer_update") => Some("peer_update"),
        Some(k) => {
            v.fail(
                "message_type_invalid",
                format!(
                    "\"message_type\" is {}, expected \"go_data\" or \"peer_update\"",
                    show(k)
                ),
            );
            None
        }
    };

    let contents = match get(&payload, "message_contents") {
        None => {
            v.fail("message_contents_missing", "no \"message_contents\" key");
            return None;
        }
        Some(Py::Object(c)) => c,
        Some(other) => {
            v.fail(
                "message_contents_not_object",
                format!("\"message_contents\" is {}", show(other)),
            );
            return None;
        }
    };

    let mut nulls = Vec::new();
    for (key, item) in contents {
        null_paths(item, format!("message_contents.{key}"), &mut nulls);
    }
    if !nulls.is_empty() {
        v.fail("null_value", format!("null at {}", nulls.join(", ")));
    }

    match kind {
        Some("go_data") => check_go_data(contents, v, now),
        Some(_) => check_peer_update(contents, v, now),
        None => None,
    }
}

fn null_paths(value: &Py, path: String, out: &mut Vec<String>) {
    match value {
        Py::Null => out.push(path),
        Py::Object(items) => {
            for (key, item) in items {
                null_paths(item, format!("{path}.{key}"), out);
            }
        }
        Py::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                null_paths(item, format!("{path}[{index}]"), out);
            }
        }
        _ => {}
    }
}

/// slips-sim's `_check_time`; returns the value when it is valid.
fn check_time(obj: &[(String, Py)], key: &str, v: &mut Verdict, now: i64) -> Option<i64> {
    let (missing, not_integer, out_of_range) = match key {
        "report_time" => (
            "report_time_missing",
            "report_time_not_integer",
            "report_time_out_of_range",
        ),
        _ => (
            "timestamp_missing",
            "timestamp_not_integer",
            "timestamp_out_of_range",
        ),
    };
    match get(obj, key) {
        None => v.fail(missing, format!("message_contents has no \"{key}\"")),
        Some(Py::Null) => {} // already reported as null_value
        Some(Py::Int(int)) => match int.to_i128() {
            Some(n) if n < 0 => v.fail(out_of_range, format!("\"{key}\" {n} is negative")),
            Some(n) if n > i128::from(now) + i128::from(CLOCK_SLACK_S) => v.fail(
                out_of_range,
                format!(
                    "\"{key}\" {n} is {} s in the future (receiver clock {now})",
                    n - i128::from(now)
                ),
            ),
            Some(n) => return i64::try_from(n).ok(),
            None if int.negative => v.fail(out_of_range, format!("\"{key}\" {int} is negative")),
            None => v.fail(
                out_of_range,
                format!("\"{key}\" {int} is far in the future (receiver clock {now})"),
            ),
        },
        Some(other) => v.fail(
            not_integer,
            format!(
                "\"{key}\" is {}; it must be a JSON integer (Unix seconds)",
                show(other)
            ),
        ),
    }
    None
}

/// slips-sim's `_check_range` for score, confidence and reliability;
/// returns the value when it is valid.
fn check_range(
    obj: &[(String, Py)],
    key: &str,
    low: f64,
    high: f64,
    v: &mut Verdict,
    required: bool,
    null_reported: bool,
) -> Option<f64> {
    let (missing, not_number, out_of_range) = match key {
        "score" => ("score_missing", "score_not_number", "score_out_of_range"),
        "confidence" => (
            "confidence_missing",
            "confidence_not_number",
            "confidence_out_of_range",
        ),
        _ => (
            "reliability_not_number", // never used: reliability is optional
            "reliability_not_number",
            "reliability_out_of_range",
        ),
    };
    match get(obj, key) {
        None => {
            if required {
                v.fail(missing, format!("no \"{key}\""));
            }
            None
        }
        Some(Py::Null) if null_reported => None,
        Some(value) => {
            let Some(number) = finite_number(value) else {
                v.fail(
                    not_number,
                    format!(
                        "\"{key}\" is {}; it must be a finite JSON number",
                        show(value)
                    ),
                );
                return None;
            };
            if number.in_range(low, high) {
                Some(number.as_f64())
            } else {
                v.fail(
                    out_of_range,
                    format!("\"{key}\" {} is outside [{low}, {high}]", dumps(value)),
                );
                None
            }
        }
    }
}

fn check_go_data(contents: &[(String, Py)], v: &mut Verdict, now: i64) -> Option<GopyMsg> {
    let reporter = match get(contents, "reporter") {
        None => {
            v.fail("reporter_missing", "message_contents has no \"reporter\"");
            None
        }
        Some(Py::Null) => None,
        Some(Py::Str(s)) if !s.is_empty() => Some(s.clone()),
        Some(other) => {
            v.fail(
                "reporter_invalid",
                format!("\"reporter\" is {}", show(other)),
            );
            None
        }
    };

    let report_time = check_time(contents, "report_time", v, now);

    let mut decoded = None;
    let message = match get(contents, "message") {
        None => {
            v.fail("message_missing", "message_contents has no \"message\"");
            None
        }
        Some(Py::Null) => None,
        Some(Py::Str(message)) => {
            if let Some(first) = message.chars().find(|c| !c.is_ascii()) {
                v.fail(
                    "message_not_ascii",
                    format!(
                        "\"message\" contains non-ASCII character U+{:04X}",
                        u32::from(first)
                    ),
                );
            } else if let Some(inner) = decode_inner(message, v) {
                check_inner(&inner, v);
                decoded = Some(inner);
            }
            Some(message.clone())
        }
        Some(other) => {
            v.fail(
                "message_not_string",
                format!("\"message\" is {}", show(other)),
            );
            None
        }
    };

    Some(GopyMsg::GoData {
        reporter: reporter?,
        report_time: report_time?,
        message: message?,
        decoded: to_serde(&Py::Object(decoded?)),
    })
}

/// slips-sim's `_decode_inner`: base64 → UTF-8 → strict JSON → object.
fn decode_inner(message: &str, v: &mut Verdict) -> Option<Vec<(String, Py)>> {
    let body = message.strip_suffix('\n').unwrap_or(message);
    let raw = match b64decode_validate(body.as_bytes()) {
        Ok(raw) => raw,
        Err(e) => {
            v.fail(
                "message_not_base64",
                format!("not standard padded base64: {e}"),
            );
            return None;
        }
    };
    let text = match String::from_utf8(raw) {
        Ok(t) => t,
        Err(e) => {
            v.fail(
                "message_not_json",
                format!(
                    "the decoded message is not JSON: invalid UTF-8 at byte {}",
                    e.utf8_error().valid_up_to()
                ),
            );
            return None;
        }
    };
    match parse_json(&text) {
        Ok(Py::Object(inner)) => Some(inner),
        Ok(other) => {
            v.fail(
                "message_not_object",
                format!("the decoded message is {}", show(&other)),
            );
            None
        }
        Err(e) => {
            v.fail(
                "message_not_json",
                format!("the decoded message is not JSON: {e}"),
            );
            None
        }
    }
}

/// slips-sim's `_check_constant`.
fn check_constant(
    obj: &[(String, Py)],
    key: &str,
    expected: &str,
    missing: &'static str,
    invalid: &'static str,
    v: &mut Verdict,
) {
    match get(obj, key) {
        None => v.fail(missing, format!("the decoded message has no \"{key}\"")),
        Some(value) if !is_str(value, expected) => v.fail(
            invalid,
            format!("\"{key}\" is {}, expected \"{expected}\"", show(value)),
        ),
        Some(_) => {}
    }
}

fn check_inner(inner: &[(String, Py)], v: &mut Verdict) {
    let kind = match get(inner, "message_type") {
        None => {
            v.fail(
                "inner_message_type_missing",
                "the decoded message has no \"message_type\"",
            );
            return;
        }
        Some(Py::Str(k)) if ["request", "report", "blame"].contains(&k.as_str()) => k.as_str(),
        Some(other) => {
            v.fail(
                "inner_message_type_invalid",
                format!(
                    "the decoded \"message_type\" is {}, expected \"request\", \"report\" or \"blame\"",
                    show(other)
                ),
            );
            return;
        }
    };

    check_constant(
        inner,
        "key_type",
        "ip",
        "key_type_missing",
        "key_type_invalid",
        v,
    );
    match get(inner, "key") {
        None => v.fail("key_missing", "the decoded message has no \"key\""),
        Some(Py::Str(s)) if is_ip_address(s) => {}
        Some(other) => v.fail(
            "key_invalid",
            format!("\"key\" is {}, not a valid IP address string", show(other)),
        ),
    }
    check_constant(
        inner,
        "evaluation_type",
        "score_confidence",
        "evaluation_type_missing",
        "evaluation_type_invalid",
        v,
    );
    if kind == "request" {
        return;
    }

    match get(inner, "evaluation") {
        None => v.fail(
            "evaluation_missing",
            format!("the {kind} has no \"evaluation\""),
        ),
        Some(Py::Null) => {
            if kind != "report" {
                v.fail(
                    "evaluation_not_object",
                    format!(
                        "\"evaluation\" is null in a {kind}; null (\"no data\") is only valid in a report"
                    ),
                );
            }
        }
        Some(Py::Object(evaluation)) => {
            check_range(evaluation, "score", -1.0, 1.0, v, true, false);
            check_range(evaluation, "confidence", 0.0, 1.0, v, true, false);
        }
        Some(other) => v.fail(
            "evaluation_not_object",
            format!("\"evaluation\" is {}", show(other)),
        ),
    }
}

fn check_peer_update(contents: &[(String, Py)], v: &mut Verdict, now: i64) -> Option<GopyMsg> {
    let peerid = match get(contents, "peerid") {
        None => {
            v.fail("peerid_missing", "message_contents has no \"peerid\"");
            None
        }
        Some(Py::Null) => None,
        Some(Py::Str(s)) if !s.is_empty() => Some(s.clone()),
        Some(other) => {
            v.fail("peerid_invalid", format!("\"peerid\" is {}", show(other)));
            None
        }
    };

    let timestamp = check_time(contents, "timestamp", v, now);
    let reliability = check_range(contents, "reliability", 0.0, 1.0, v, false, true);

    let ip = match get(contents, "ip") {
        None | Some(Py::Null) => None,
        Some(Py::Str(s)) if is_ip_address(s) => Some(s.clone()),
        Some(other) => {
            v.fail(
                "ip_invalid",
                format!("\"ip\" is {}, not a valid IP address string", show(other)),
            );
            None
        }
    };

    Some(GopyMsg::PeerUpdate {
        peerid: peerid?,
        ip,
        reliability,
        timestamp: timestamp?,
    })
}

// ------------------------------------------------------------------ values

/// A JSON value as CPython's `json.loads` produces it.
#[derive(Debug, Clone, PartialEq)]
enum Py {
    Null,
    Bool(bool),
    Int(PyInt),
    Float(f64),
    Str(String),
    Array(Vec<Py>),
    /// Keys in first-insertion order, duplicates already merged (last value
    /// wins), like a Python dict.
    Object(Vec<(String, Py)>),
}

/// A Python `int` of any size, kept as its canonical decimal text.
#[derive(Debug, Clone, PartialEq)]
struct PyInt {
    negative: bool,
    /// Decimal digits without sign or leading zeros ("0" for zero).
    digits: String,
}

impl PyInt {
    fn parse(literal: &str) -> PyInt {
        let (negative, digits) = match literal.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, literal),
        };
        let trimmed = digits.trim_start_matches('0');
        let digits = if trimmed.is_empty() { "0" } else { trimmed };
        PyInt {
            negative: negative && digits != "0",
            digits: digits.to_owned(),
        }
    }

    fn to_i128(&self) -> Option<i128> {
        let magnitude: i128 = self.digits.parse().ok()?;
        Some(if self.negative { -magnitude } else { magnitude })
    }
}

impl std::fmt::Display for PyInt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.negative {
            f.write_str("-")?;
        }
        f.write_str(&self.digits)
    }
}

/// A value that passed `_is_number`.
enum Number<'a> {
    Int(&'a PyInt),
    Float(f64),
}

impl Number<'_> {
    fn in_range(&self, low: f64, high: f64) -> bool {
        match self {
            // bounds are small integers, so an int beyond i128 is out
            Number::Int(int) => int
                .to_i128()
                .is_some_and(|n| (low as i128) <= n && n <= (high as i128)),
            Number::Float(f) => low <= *f && *f <= high,
        }
    }

    fn as_f64(&self) -> f64 {
        match self {
            Number::Int(int) => int.to_string().parse().unwrap_or(f64::NAN),
            Number::Float(f) => *f,
        }
    }
}

/// `_is_number`: an int (not a bool) or a finite float.
fn finite_number(value: &Py) -> Option<Number<'_>> {
    match value {
        Py::Int(int) => Some(Number::Int(int)),
        Py::Float(f) if f.is_finite() => Some(Number::Float(*f)),
        _ => None,
    }
}

fn get<'a>(obj: &'a [(String, Py)], key: &str) -> Option<&'a Py> {
    obj.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn is_str(value: &Py, expected: &str) -> bool {
    matches!(value, Py::Str(s) if s == expected)
}

fn type_name(value: &Py) -> &'static str {
    match value {
        Py::Null => "null",
        Py::Bool(_) => "boolean",
        Py::Int(_) => "integer",
        Py::Float(_) => "float",
        Py::Str(_) => "string",
        Py::Array(_) => "array",
        Py::Object(_) => "object",
    }
}

/// slips-sim's `_show`: `'float 1.5'`, `'string "abc"'`.
fn show(value: &Py) -> String {
    let mut text = dumps(value);
    if text.chars().count() > 80 {
        text = text.chars().take(77).collect::<String>() + "...";
    }
    format!("{} {text}", type_name(value))
}

/// The `serde_json` form of a value (huge integers become floats, a
/// non-finite float `null`).
fn to_serde(value: &Py) -> Value {
    match value {
        Py::Null => Value::Null,
        Py::Bool(b) => Value::Bool(*b),
        Py::Int(int) => {
            // what serde_json itself makes of the literal (beyond 64 bits:
            // its own float approximation)
            serde_json::from_str(&int.to_string()).unwrap_or(Value::Null)
        }
        Py::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Py::Str(s) => Value::String(s.clone()),
        Py::Array(items) => Value::Array(items.iter().map(to_serde).collect()),
        Py::Object(items) => Value::Object(
            items
                .iter()
                .map(|(k, v)| (k.clone(), to_serde(v)))
                .collect(),
        ),
    }
}

// ------------------------------------------------------------------ JSON parser

/// Parses `text` like CPython 3.11's `json.loads(text, parse_constant=…)`
/// with the constants `NaN`, `Infinity` and `-Infinity` rejected.
fn parse_json(text: &str) -> Result<Py, String> {
    let mut parser = Parser {
        chars: text.chars().collect(),
        pos: 0,
    };
    parser.skip_ws();
    let value = parser.value(0)?;
    parser.skip_ws();
    if parser.pos != parser.chars.len() {
        return Err(format!("Extra data: char {}", parser.pos));
    }
    Ok(value)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\n' | '\r')) {
            self.pos += 1;
        }
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what}: char {}", self.pos))
    }

    fn starts_with(&self, word: &str) -> bool {
        let end = self.pos + word.chars().count();
        end <= self.chars.len() && self.chars[self.pos..end].iter().copied().eq(word.chars())
    }

    /// Consumes `word` if the input continues with it.
    fn literal(&mut self, word: &str) -> bool {
        let found = self.starts_with(word);
        if found {
            self.pos += word.chars().count();
        }
        found
    }

    fn value(&mut self, depth: usize) -> Result<Py, String> {
        if depth > MAX_DEPTH {
            return self.err("nested too deeply (RecursionError in CPython)");
        }
        match self.peek() {
            Some('"') => {
                self.pos += 1;
                Ok(Py::Str(self.string()?))
            }
            Some('{') => self.object(depth),
            Some('[') => self.array(depth),
            Some('n') if self.literal("null") => Ok(Py::Null),
            Some('t') if self.literal("true") => Ok(Py::Bool(true)),
            Some('f') if self.literal("false") => Ok(Py::Bool(false)),
            Some('N') if self.literal("NaN") => self.err("non-standard JSON constant NaN"),
            Some('I') if self.literal("Infinity") => {
                self.err("non-standard JSON constant Infinity")
            }
            Some('-') if self.starts_with("-Infinity") => {
                self.err("non-standard JSON constant -Infinity")
            }
            Some('-' | '0'..='9') => self.number(),
            _ => self.err("Expecting value"),
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some('0'..='9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// `-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?`, as CPython's
    /// `_match_number_unicode`: a `.` or an exponent not followed by a digit
    /// is left for the caller (where it is always an error).
    fn number(&mut self) -> Result<Py, String> {
        let start = self.pos;
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        match self.peek() {
            Some('0') => self.pos += 1,
            Some('1'..='9') => {
                self.digits();
            }
            _ => {
                self.pos = start;
                return self.err("Expecting value");
            }
        }
        let int_end = self.pos;
        let mut is_float = false;
        if self.peek() == Some('.') && matches!(self.chars.get(self.pos + 1), Some('0'..='9')) {
            self.pos += 1;
            self.digits();
            is_float = true;
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            let e_start = self.pos;
            self.pos += 1;
            if matches!(self.peek(), Some('+' | '-')) {
                self.pos += 1;
            }
            if self.digits() > 0 {
                is_float = true;
            } else {
                self.pos = e_start;
            }
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        if is_float {
            // Rust's parse is correctly rounded like CPython's, and also
            // overflows to inf
            text.parse::<f64>()
                .map(Py::Float)
                .or_else(|_| self.err("bad float"))
        } else {
            let digits = int_end - start - usize::from(text.starts_with('-'));
            if digits > MAX_INT_DIGITS {
                return self.err("Exceeds the limit (4300 digits) for integer string conversion");
            }
            Ok(Py::Int(PyInt::parse(&text)))
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let mut value = 0;
        for _ in 0..4 {
            let Some(digit) = self.peek().and_then(|c| c.to_digit(16)) else {
                return self.err("Invalid \\uXXXX escape");
            };
            value = value * 16 + digit;
            self.pos += 1;
        }
        Ok(value)
    }

    /// The rest of a string after its opening quote (CPython's
    /// `scanstring_unicode` with `strict=True`).
    fn string(&mut self) -> Result<String, String> {
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return self.err("Unterminated string");
            };
            self.pos += 1;
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let Some(e) = self.peek() else {
                        return self.err("Unterminated string");
                    };
                    self.pos += 1;
                    match e {
                        '"' => out.push('"'),
                        '\\' => out.push('\\'),
                        '/' => out.push('/'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        'n' => out.push('\n'),
                        'r' => out.push('\r'),
                        't' => out.push('\t'),
                        'u' => {
                            let first = self.hex4()?;
                            let mut code = first;
                            if (0xD800..0xDC00).contains(&first)
                                && self.peek() == Some('\\')
                                && self.chars.get(self.pos + 1) == Some(&'u')
                            {
                                let save = self.pos;
                                self.pos += 2;
                                let second = self.hex4()?;
                                if (0xDC00..0xE000).contains(&second) {
                                    code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                                } else {
                                    self.pos = save;
                                }
                            }
                            // a lone surrogate (valid in Python) becomes U+FFFD
                            out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                        }
                        _ => {
                            self.pos -= 1;
                            return self.err("Invalid \\escape");
                        }
                    }
                }
                c if u32::from(c) < 0x20 => {
                    self.pos -= 1;
                    return self.err("Invalid control character");
                }
                c => out.push(c),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Py, String> {
        self.pos += 1; // {
        let mut items: Vec<(String, Py)> = Vec::new();
        self.skip_ws();
        if self.peek() == Some('}') {
            self.pos += 1;
            return Ok(Py::Object(items));
        }
        loop {
            if self.peek() != Some('"') {
                return self.err("Expecting property name enclosed in double quotes");
            }
            self.pos += 1;
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(':') {
                return self.err("Expecting ':' delimiter");
            }
            self.pos += 1;
            self.skip_ws();
            let value = self.value(depth + 1)?;
            match items.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => items.push((key, value)),
            }
            self.skip_ws();
            match self.peek() {
                Some('}') => {
                    self.pos += 1;
                    return Ok(Py::Object(items));
                }
                Some(',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                _ => return self.err("Expecting ',' delimiter"),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Py, String> {
        self.pos += 1; // [
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(']') {
            self.pos += 1;
            return Ok(Py::Array(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.peek() {
                Some(']') => {
                    self.pos += 1;
                    return Ok(Py::Array(items));
                }
                Some(',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                _ => return self.err("Expecting ',' delimiter"),
            }
        }
    }
}

// ------------------------------------------------------------------ base64

/// CPython 3.11's `base64.b64decode(data, validate=True)`, i.e.
/// `binascii.a2b_base64(data, strict_mode=True)`.
pub fn b64decode_validate(data: &[u8]) -> Result<Vec<u8>, String> {
    fn sextet(c: u8) -> Option<u8> {
        match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    if data.first() == Some(&b'=') {
        return Err("Leading padding not allowed".to_owned());
    }
    let mut out = Vec::with_capacity(data.len() / 4 * 3);
    let mut quad_pos = 0;
    let mut left: u8 = 0;
    let mut pads = 0;
    let mut padding_started = false;
    for (i, &c) in data.iter().enumerate() {
        if c == b'=' {
            padding_started = true;
            if quad_pos >= 2 {
                pads += 1;
                if quad_pos + pads >= 4 {
                    if i + 1 < data.len() {
                        return Err("Excess data after padding".to_owned());
                    }
                    return Ok(out);
                }
            }
            continue;
        }
        let Some(six) = sextet(c) else {
            return Err("Only base64 data is allowed".to_owned());
        };
        if padding_started {
            return Err("Discontinuous padding not allowed".to_owned());
        }
        pads = 0;
        match quad_pos {
            0 => {
                quad_pos = 1;
                left = six;
            }
            1 => {
                quad_pos = 2;
                out.push((left << 2) | (six >> 4));
                left = six & 0x0f;
            }
            2 => {
                quad_pos = 3;
                out.push((left << 4) | (six >> 2));
                left = six & 0x03;
            }
            _ => {
                quad_pos = 0;
                out.push((left << 6) | six);
                left = 0;
            }
        }
    }
    match quad_pos {
        0 => Ok(out),
        1 => Err(format!(
            "Invalid base64-encoded string: number of data characters ({}) cannot be 1 more than a multiple of 4",
            out.len() / 3 * 4 + 1
        )),
        _ => Err("Incorrect padding".to_owned()),
    }
}

// ------------------------------------------------------------------ IP addresses

/// `ipaddress.ip_address(s)` of CPython 3.11 succeeds.
pub fn is_ip_address(s: &str) -> bool {
    !s.contains('/') && (parse_ipv4(s).is_some() || parse_ipv6_scoped(s).is_some())
}

/// `IPv4Address._ip_int_from_string`.
fn parse_ipv4(s: &str) -> Option<u32> {
    let octets: Vec<&str> = s.split('.').collect();
    if s.is_empty() || octets.len() != 4 {
        return None;
    }
    let mut ip = 0u32;
    for octet in octets {
        if octet.is_empty()
            || !octet.bytes().all(|b| b.is_ascii_digit())
            || octet.len() > 3
            || (octet != "0" && octet.starts_with('0'))
        {
            return None;
        }
        let value: u32 = octet.parse().ok()?;
        if value > 255 {
            return None;
        }
        ip = (ip << 8) | value;
    }
    Some(ip)
}

/// `IPv6Address(s)`: `_split_scope_id` then `_ip_int_from_string`.
fn parse_ipv6_scoped(s: &str) -> Option<u128> {
    let addr = match s.split_once('%') {
        None => s,
        Some((_, scope)) if scope.is_empty() || scope.contains('%') => return None,
        Some((addr, _)) => addr,
    };
    parse_ipv6(addr)
}

fn parse_ipv6(s: &str) -> Option<u128> {
    const HEXTETS: usize = 8;
    if s.is_empty() {
        return None;
    }
    let mut parts: Vec<String> = s.split(':').map(str::to_owned).collect();
    if parts.len() < 3 {
        return None;
    }
    if parts.last().is_some_and(|p| p.contains('.')) {
        let v4 = parse_ipv4(&parts.pop()?)?;
        parts.push(format!("{:x}", (v4 >> 16) & 0xFFFF));
        parts.push(format!("{:x}", v4 & 0xFFFF));
    }
    if parts.len() > HEXTETS + 1 {
        return None;
    }
    let mut skip_index = None;
    for (i, part) in parts.iter().enumerate().take(parts.len() - 1).skip(1) {
        if part.is_empty() {
            if skip_index.is_some() {
                return None;
            }
            skip_index = Some(i);
        }
    }
    let (parts_hi, parts_lo, parts_skipped) = if let Some(skip) = skip_index {
        let mut hi = skip;
        let mut lo = parts.len() - skip - 1;
        if parts[0].is_empty() {
            hi -= 1;
            if hi != 0 {
                return None;
            }
        }
        if parts[parts.len() - 1].is_empty() {
            lo -= 1;
            if lo != 0 {
                return None;
            }
        }
        let skipped = HEXTETS.checked_sub(hi + lo).filter(|&n| n >= 1)?;
        (hi, lo, skipped)
    } else {
        if parts.len() != HEXTETS || parts[0].is_empty() || parts[parts.len() - 1].is_empty() {
            return None;
        }
        (parts.len(), 0, 0)
    };
    let hextet = |p: &str| -> Option<u128> {
        if p.is_empty() || p.len() > 4 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(p, 16).ok()
    };
    let mut ip: u128 = 0;
    for part in &parts[..parts_hi] {
        ip = (ip << 16) | hextet(part)?;
    }
    ip = ip.checked_shl(16 * parts_skipped as u32).unwrap_or(0);
    for part in &parts[parts.len() - parts_lo..] {
        ip = (ip << 16) | hextet(part)?;
    }
    Some(ip)
}

/// Python's `json.dumps(value)` for a parsed value.
fn dumps(value: &Py) -> String {
    match value {
        Py::Null => "null".to_owned(),
        Py::Bool(true) => "true".to_owned(),
        Py::Bool(false) => "false".to_owned(),
        Py::Int(int) => int.to_string(),
        Py::Float(f) => py_float_repr(*f),
        Py::Str(s) => dumps_str(s),
        Py::Array(items) => format!(
            "[{}]",
            items.iter().map(dumps).collect::<Vec<_>>().join(", ")
        ),
        Py::Object(items) => format!(
            "{{{}}}",
            items
                .iter()
                .map(|(k, v)| format!("{}: {}", dumps_str(k), dumps(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
