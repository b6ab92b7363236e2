//! Validation of a peer's Slips payload before Slips sees it.
//!
//! Slips 1.1.21 crashes its P2P module on several payloads (non-ASCII
//! text, base64 of `1` or `[1]`, `null` scores…) and blocks blamed IPs
//! without any check. A payload is forwarded only if it is ASCII standard
//! base64 of a JSON object that is a well-formed request, report or blame.

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use serde_json::{Map, Value};
use std::net::IpAddr;

/// What a valid payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadKind {
    /// "What do you know about this IP?"
    Request,
    /// "This is what I know about this IP."
    Report,
    /// "This IP attacked me."
    Blame,
}

/// Why a payload was refused. Each variant is counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum PayloadError {
    /// Not ASCII, or not standard padded base64.
    #[error("payload is not ASCII standard base64")]
    NotBase64,
    /// The decoded bytes are not UTF-8 JSON.
    #[error("payload does not decode to JSON")]
    NotJson,
    /// The JSON is not an object.
    #[error("payload is not a JSON object")]
    NotObject,
    /// `message_type` is not request, report or blame.
    #[error("unknown or missing message_type")]
    BadMessageType,
    /// `key_type` is not "ip".
    #[error("key_type is not \"ip\"")]
    BadKeyType,
    /// `key` is not a string holding a valid IP address.
    #[error("key is not a valid IP address")]
    BadKey,
    /// `evaluation_type` is not "score_confidence".
    #[error("evaluation_type is not \"score_confidence\"")]
    BadEvaluationType,
    /// `evaluation` missing or not an object (null allowed in reports).
    #[error("missing or malformed evaluation")]
    BadEvaluation,
    /// `score` not a finite number in [-1, 1].
    #[error("score is not a number in [-1, 1]")]
    BadScore,
    /// `confidence` not a finite number in [0, 1].
    #[error("confidence is not a number in [0, 1]")]
    BadConfidence,
}

/// A payload that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidPayload {
    /// Request, report or blame.
    pub kind: PayloadKind,
    /// The IP address it is about, as written.
    pub key: String,
}

/// Checks one base64 payload (one trailing `\n` tolerated, as the Go
/// Pigeon's line framing left it).
pub fn validate(b64: &str) -> Result<ValidPayload, PayloadError> {
    let b64 = b64.strip_suffix('\n').unwrap_or(b64);
    if !b64.is_ascii() {
        return Err(PayloadError::NotBase64);
    }
    let bytes = BASE64_STANDARD
        .decode(b64)
        .map_err(|_| PayloadError::NotBase64)?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| PayloadError::NotJson)?;
    let obj = value.as_object().ok_or(PayloadError::NotObject)?;
    let kind = match obj.get("message_type").and_then(Value::as_str) {
        Some("request") => PayloadKind::Request,
        Some("report") => PayloadKind::Report,
        Some("blame") => PayloadKind::Blame,
        _ => return Err(PayloadError::BadMessageType),
    };
    if obj.get("key_type").and_then(Value::as_str) != Some("ip") {
        return Err(PayloadError::BadKeyType);
    }
    let key = obj
        .get("key")
        .and_then(Value::as_str)
        .filter(|k| is_ip(k))
        .ok_or(PayloadError::BadKey)?;
    if obj.get("evaluation_type").and_then(Value::as_str) != Some("score_confidence") {
        return Err(PayloadError::BadEvaluationType);
    }
    match (kind, obj.get("evaluation")) {
        (PayloadKind::Request, _) => {}
        (PayloadKind::Report, Some(Value::Null)) => {}
        (_, Some(Value::Object(eval))) => check_evaluation(eval)?,
        _ => return Err(PayloadError::BadEvaluation),
    }
    Ok(ValidPayload {
        kind,
        key: key.to_owned(),
    })
}

fn check_evaluation(eval: &Map<String, Value>) -> Result<(), PayloadError> {
    let in_range = |v: Option<&Value>, lo: f64, hi: f64| {
        v.filter(|v| v.is_number())
            .and_then(Value::as_f64)
            .is_some_and(|x| x.is_finite() && (lo..=hi).contains(&x))
    };
    if !in_range(eval.get("score"), -1.0, 1.0) {
        return Err(PayloadError::BadScore);
    }
    if !in_range(eval.get("confidence"), 0.0, 1.0) {
        return Err(PayloadError::BadConfidence);
    }
    Ok(())
}

/// An IP address as Python's `ipaddress.ip_address` accepts it from a
/// string: IPv4, IPv6, or IPv6 with a `%scope`.
pub fn is_ip(s: &str) -> bool {
    if s.parse::<IpAddr>().is_ok() {
        return true;
    }
    match s.split_once('%') {
        Some((addr, scope)) => {
            !scope.is_empty() && !scope.contains('%') && addr.parse::<std::net::Ipv6Addr>().is_ok()
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(json: &str) -> String {
        BASE64_STANDARD.encode(json)
    }

    #[test]
    fn slips_messages_pass() {
        let req = b64(
            r#"{"message_type": "request", "key_type": "ip", "key": "1.2.3.4", "evaluation_type": "score_confidence"}"#,
        );
        assert_eq!(validate(&req).unwrap().kind, PayloadKind::Request);
        let rep = b64(
            r#"{"message_type": "report", "key_type": "ip", "key": "1.2.3.4", "evaluation_type": "score_confidence", "evaluation": {"score": 0.8, "confidence": 0.9}}"#,
        );
        assert_eq!(validate(&rep).unwrap().kind, PayloadKind::Report);
        assert!(validate(&format!("{rep}\n")).is_ok());
        let nodata = b64(
            r#"{"message_type":"report","key_type":"ip","key":"fe80::1%eth0","evaluation_type":"score_confidence","evaluation":null}"#,
        );
        assert!(validate(&nodata).is_ok());
        let blame = b64(
            r#"{"message_type":"blame","key_type":"ip","key":"::1","evaluation_type":"score_confidence","evaluation":{"score":1,"confidence":1}}"#,
        );
        assert_eq!(validate(&blame).unwrap().kind, PayloadKind::Blame);
    }

    /// Every payload that crashes or fools Slips 1.1.21 is refused.
    #[test]
    fn crash_payloads_are_refused() {
        use PayloadError::*;
        let cases: &[(&str, PayloadError)] = &[
            ("ü", NotBase64),
            ("eyJ", NotBase64),
            ("!!!!", NotBase64),
            (&b64("1"), NotObject),
            (&b64("[1]"), NotObject),
            (&b64("null"), NotObject),
            (&b64("\"x\""), NotObject),
            (&b64("{"), NotJson),
            (&b64(r#"{"a":NaN}"#), NotJson),
            (&b64(r#"{"message_type":null}"#), BadMessageType),
            (&b64(r#"{"message_type":"hello"}"#), BadMessageType),
            (
                &b64(r#"{"message_type":"request","key_type":"domain"}"#),
                BadKeyType,
            ),
            (
                &b64(r#"{"message_type":"request","key_type":"ip","key":16909060}"#),
                BadKey,
            ),
            (
                &b64(r#"{"message_type":"request","key_type":"ip","key":"10.0.0.9:4001"}"#),
                BadKey,
            ),
            (
                &b64(r#"{"message_type":"request","key_type":"ip","key":"1.2.3.4"}"#),
                BadEvaluationType,
            ),
            (
                &b64(
                    r#"{"message_type":"blame","key_type":"ip","key":"1.2.3.4","evaluation_type":"score_confidence"}"#,
                ),
                BadEvaluation,
            ),
            (
                &b64(
                    r#"{"message_type":"blame","key_type":"ip","key":"1.2.3.4","evaluation_type":"score_confidence","evaluation":null}"#,
                ),
                BadEvaluation,
            ),
            (
                &b64(
                    r#"{"message_type":"report","key_type":"ip","key":"1.2.3.4","evaluation_type":"score_confidence","evaluation":{"score":null,"confidence":1}}"#,
                ),
                BadScore,
            ),
            (
                &b64(
                    r#"{"message_type":"report","key_type":"ip","key":"1.2.3.4","evaluation_type":"score_confidence","evaluation":{"score":"0.5","confidence":1}}"#,
                ),
                BadScore,
            ),
            (
                &b64(
                    r#"{"message_type":"report","key_type":"ip","key":"1.2.3.4","evaluation_type":"score_confidence","evaluation":{"score":2,"confidence":1}}"#,
                ),
                BadScore,
            ),
            (
                &b64(
                    r#"{"message_type":"report","key_type":"ip","key":"1.2.3.4","evaluation_type":"score_confidence","evaluation":{"score":0.5,"confidence":true}}"#,
                ),
                BadConfidence,
            ),
            (
                &b64(
                    r#"{"message_type":"report","key_type":"ip","key":"1.2.3.4","evaluation_type":"score_confidence","evaluation":[1]}"#,
                ),
                BadEvaluation,
            ),
        ];
        for (payload, want) in cases {
            assert_eq!(validate(payload).unwrap_err(), *want, "payload {payload}");
        }
    }

    #[test]
    fn ip_forms_match_python_ipaddress() {
        for ok in ["1.2.3.4", "::1", "fe80::1%eth0", "2001:db8::1"] {
            assert!(is_ip(ok), "{ok}");
        }
        for bad in [
            "",
            "1.2.3",
            "01.2.3.4",
            "1.2.3.4%eth0",
            "fe80::1%",
            "10.0.0.9:4001",
        ] {
            assert!(!is_ip(bad), "{bad}");
        }
    }
}
