//! The bytes Slips 1.1.21 publishes on the Slips → pigeon channel, as
//! Slips (and slips-sim) write them: Python's `json.dumps` with its default
//! separators (`", "`, `": "`) and `ensure_ascii`, Python's float `repr`,
//! Slips' key order. The one builder of Slips' messages for the tests, the
//! lab bench and `pigeon-slips`.
//!
//! The Python formatting itself is pigeon's own (`src/slips/python.rs`,
//! compiled into this crate as [`super::python`]): pigeon re-encodes every
//! payload it hands Slips with it, so there is one implementation of it in
//! the repository.

use super::python::{self, Evaluation};
use base64::Engine as _;

pub use super::python::{dumps_str, py_float_repr};

/// A number as Slips holds it: `1` stays an integer, `1.0` a float.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PyNum {
    /// Serialised like a Python int.
    Int(i64),
    /// Serialised like Python's `repr(float)`.
    Float(f64),
}

impl From<i64> for PyNum {
    fn from(n: i64) -> Self {
        PyNum::Int(n)
    }
}

impl From<f64> for PyNum {
    fn from(f: f64) -> Self {
        PyNum::Float(f)
    }
}

impl std::fmt::Display for PyNum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PyNum::Int(n) => write!(f, "{n}"),
            PyNum::Float(x) => f.write_str(&py_float_repr(*x)),
        }
    }
}

/// The JSON text of Slips' `build_go_message`: keys `message_type`,
/// `key_type`, `key`, `evaluation_type` and, when `evaluation` is given,
/// `evaluation: {"score": S, "confidence": C}`.
pub fn build_go_message(
    message_type: &str,
    ip: &str,
    evaluation: Option<(PyNum, PyNum)>,
) -> String {
    match evaluation {
        None => python::go_message(message_type, ip, Evaluation::Absent),
        Some((score, confidence)) => python::go_message(
            message_type,
            ip,
            Evaluation::ScoreConfidence(&score.to_string(), &confidence.to_string()),
        ),
    }
}

/// Standard padded base64, as Slips encodes the inner message.
pub fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
}

/// The scroll Slips publishes on pygo around an already encoded message:
/// `{"message": "<b64>", "recipient": "*", "version": "1.1.21"}`.
pub fn pygo_scroll(message_b64: &str, recipient: &str, version: &str) -> String {
    format!(
        "{{\"message\": {}, \"recipient\": {}, \"version\": {}}}",
        dumps_str(message_b64),
        dumps_str(recipient),
        dumps_str(version)
    )
}
/// The base64 `message` of a request about `ip`.
pub fn request_b64(ip: &str) -> String {
    b64(&build_go_message("request", ip, None))
}

/// The base64 `message` of a report about `ip`.
pub fn report_b64(ip: &str, score: impl Into<PyNum>, confidence: impl Into<PyNum>) -> String {
    b64(&build_go_message(
        "report",
        ip,
        Some((score.into(), confidence.into())),
    ))
}

/// The base64 `message` of a blame about `ip`.
pub fn blame_b64(ip: &str, score: impl Into<PyNum>, confidence: impl Into<PyNum>) -> String {
    b64(&build_go_message(
        "blame",
        ip,
        Some((score.into(), confidence.into())),
    ))
}

/// The whole scroll of a request to every peer, as `slips-sim request`.
pub fn request_scroll(ip: &str, version: &str) -> String {
    pygo_scroll(&request_b64(ip), "*", version)
}

/// The whole scroll of a report, as `slips-sim report` (and `respond`).
pub fn report_scroll(
    ip: &str,
    score: impl Into<PyNum>,
    confidence: impl Into<PyNum>,
    recipient: &str,
    version: &str,
) -> String {
    pygo_scroll(&report_b64(ip, score, confidence), recipient, version)
}
