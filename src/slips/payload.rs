//! Validation of a peer's Slips payload before Slips sees it.
//!
//! Slips 1.1.21 crashes its P2P module on several payloads (non-ASCII
//! text, base64 of `1` or `[1]`, `null` scores…) and blocks blamed IPs
//! without any check. A payload is forwarded only if it is ASCII standard
//! base64 of a JSON object that is a well-formed request, report or blame.
//!
//! What Slips then receives is not the peer's bytes but [`ValidPayload::
//! canonical`]: the same message re-encoded exactly as Slips' own
//! `json.dumps` + base64 writes it, with only the fields Slips reads. A
//! peer cannot slip extra fields, odd key types or unusual encodings
//! through (Slips publishes a forwarded blame's whole dict on `new_blame`).

use super::python::{self, Evaluation};
use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use serde_json::{Map, Number, Value};
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
    /// The IP address it is about, as written (see [`is_ip`] for its
    /// alphabet).
    pub key: String,
    /// What Slips gets: base64 of the payload as Slips' `json.dumps` would
    /// have written it, with only `message_type`, `key_type`, `key`,
    /// `evaluation_type` and (not for requests) `evaluation` holding
    /// `score` and `confidence`.
    pub canonical: String,
}

impl ValidPayload {
    fn new(kind: PayloadKind, key: &str, evaluation: Option<(&Number, &Number)>) -> Self {
        let (score, confidence) = match evaluation {
            Some((s, c)) => (py_number(s), py_number(c)),
            None => (String::new(), String::new()),
        };
        let evaluation = match (kind, evaluation) {
            (PayloadKind::Request, _) => Evaluation::Absent,
            (_, None) => Evaluation::Null,
            (_, Some(_)) => Evaluation::ScoreConfidence(&score, &confidence),
        };
        let message_type = match kind {
            PayloadKind::Request => "request",
            PayloadKind::Report => "report",
            PayloadKind::Blame => "blame",
        };
        let json = python::go_message(message_type, key, evaluation);
        Self {
            kind,
            key: key.to_owned(),
            canonical: BASE64_STANDARD.encode(json),
        }
    }
}

/// A JSON number as Python's `json.dumps` writes the value `json.loads`
/// made of it: integers as integers, anything else as a float `repr`.
fn py_number(n: &Number) -> String {
    if n.is_i64() || n.is_u64() {
        n.to_string()
    } else {
        python::py_float_repr(n.as_f64().unwrap_or(f64::NAN))
    }
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
    let evaluation = match (kind, obj.get("evaluation")) {
        (PayloadKind::Request, _) => None,
        (PayloadKind::Report, Some(Value::Null)) => None,
        (_, Some(Value::Object(eval))) => Some(check_evaluation(eval)?),
        _ => return Err(PayloadError::BadEvaluation),
    };
    Ok(ValidPayload::new(kind, key, evaluation))
}

/// `(score, confidence)` if both are finite numbers in range.
fn check_evaluation(eval: &Map<String, Value>) -> Result<(&Number, &Number), PayloadError> {
    fn in_range(v: Option<&Value>, lo: f64, hi: f64) -> Option<&Number> {
        match v {
            Some(Value::Number(n))
                if n.as_f64()
                    .is_some_and(|x| x.is_finite() && (lo..=hi).contains(&x)) =>
            {
                Some(n)
            }
            _ => None,
        }
    }
    let score = in_range(eval.get("score"), -1.0, 1.0).ok_or(PayloadError::BadScore)?;
    let confidence =
        in_range(eval.get("confidence"), 0.0, 1.0).ok_or(PayloadError::BadConfidence)?;
    Ok((score, confidence))
}

/// Longest IPv6 zone accepted: a Linux interface name (`IFNAMSIZ` 16,
/// including the terminating NUL).
pub const MAX_ZONE_LEN: usize = 15;

/// Whether `zone` can be an interface name: 1 to [`MAX_ZONE_LEN`]
/// characters of `[A-Za-z0-9._-]`. Python's `ipaddress` accepts any
/// non-empty text after `%`, newlines and NUL included; we do not.
pub fn is_zone(zone: &str) -> bool {
    (1..=MAX_ZONE_LEN).contains(&zone.len())
        && zone
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// An IP address that Python's `ipaddress.ip_address` accepts from a
/// string: IPv4, IPv6, or IPv6 with a `%zone` that [`is_zone`] accepts.
/// The alphabet is therefore `[0-9A-Fa-f.:]` before the `%` and
/// `[A-Za-z0-9._-]` after it.
pub fn is_ip(s: &str) -> bool {
    if s.parse::<IpAddr>().is_ok() {
        return true;
    }
    match s.split_once('%') {
        Some((addr, zone)) => is_zone(zone) && addr.parse::<std::net::Ipv6Addr>().is_ok(),
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

    /// A zone is an interface name: nothing that can end a log line or
    /// carry a terminal escape reaches Slips or the log.
    #[test]
    fn hostile_zones_are_refused() {
        let long = format!("fe80::1%{}", "a".repeat(MAX_ZONE_LEN + 1));
        for key in [
            "fe80::1%x\n[ALERT] forged",
            "fe80::1%x\r[ALERT]",
            "fe80::1%x\0",
            "fe80::1%x\u{1b}[31m",
            "fe80::1%eth 0",
            "fe80::1%eth0/1",
            "fe80::1%\u{fc}",
            "fe80::1%x\u{202e}",
            "fe80::1%x%y",
            "fe80::1%",
            long.as_str(),
        ] {
            let p = b64(&python::go_message("request", key, Evaluation::Absent));
            assert_eq!(validate(&p), Err(PayloadError::BadKey), "{key:?}");
        }
        let longest = format!("fe80::1%{}", "a".repeat(MAX_ZONE_LEN));
        for key in [
            "fe80::1%eth0",
            "fe80::1%1",
            "fe80::1%br-lan.10_x",
            longest.as_str(),
        ] {
            let p = b64(&python::go_message("request", key, Evaluation::Absent));
            assert_eq!(validate(&p).unwrap().key, key);
        }
    }

    /// Slips' own messages come out byte for byte as they went in.
    #[test]
    fn canonical_form_is_slips_own_bytes() {
        use Evaluation::{Absent, Null, ScoreConfidence as Sc};
        for (kind, key, evaluation) in [
            ("request", "1.2.3.4", Absent),
            ("report", "1.2.3.4", Sc("0.8", "0.9")),
            ("report", "2001:db8::1", Sc("1", "0.5")),
            ("report", "10.0.0.1", Sc("-0.25", "1e-05")),
            ("blame", "fe80::1%eth0", Sc("0", "1.0")),
            ("report", "1.2.3.4", Null),
        ] {
            let inner = python::go_message(kind, key, evaluation);
            let p = b64(&inner);
            assert_eq!(validate(&p).unwrap().canonical, p, "{inner}");
            assert_eq!(validate(&format!("{p}\n")).unwrap().canonical, p);
        }
    }

    /// Unknown fields, other key orders and spacing, and fields Slips
    /// ignores for the kind are not passed on.
    #[test]
    fn canonical_form_drops_what_slips_does_not_read() {
        let sent = b64(
            r#"{"evaluation":{"confidence":0.9,"score":0.8,"extra":"x\n[ALERT]"},"key":"1.2.3.4","evaluation_type":"score_confidence","key_type":"ip","message_type":"blame","note":{"deep":[1,2]},"\u0000":1}"#,
        );
        let v = validate(&sent).unwrap();
        assert_eq!(
            v.canonical,
            b64(&python::go_message(
                "blame",
                "1.2.3.4",
                Evaluation::ScoreConfidence("0.8", "0.9")
            ))
        );
        let request_with_evaluation = b64(
            r#"{"message_type":"request","key_type":"ip","key":"::1","evaluation_type":"score_confidence","evaluation":{"score":"\u001b"}}"#,
        );
        assert_eq!(
            validate(&request_with_evaluation).unwrap().canonical,
            b64(&python::go_message("request", "::1", Evaluation::Absent))
        );
        // Python writes what json.loads made of the number.
        let odd_numbers = b64(
            r#"{"message_type":"report","key_type":"ip","key":"1.2.3.4","evaluation_type":"score_confidence","evaluation":{"score":5e-1,"confidence":1.000}}"#,
        );
        assert_eq!(
            validate(&odd_numbers).unwrap().canonical,
            b64(&python::go_message(
                "report",
                "1.2.3.4",
                Evaluation::ScoreConfidence("0.5", "1.0")
            ))
        );
    }

    #[test]
    fn ip_forms_match_python_ipaddress() {
        for ok in ["1.2.3.4", "::1", "fe80::1%eth0", "2001:db8::1"] {
            assert!(is_ip(ok), "{ok}");
        }
        for bad in [
            "",
            "fe80::1%x\n",
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

/// Property tests: no payload a peer can send makes validation panic, and
/// whatever passes really has the shape Slips needs.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            (-2.0f64..2.0).prop_map(Value::from),
            prop_oneof![
                Just("request"),
                Just("report"),
                Just("blame"),
                Just("ip"),
                Just("score_confidence"),
                Just("1.2.3.4"),
                Just("fe80::1%eth0"),
                Just("10.0.0.9:4001"),
            ]
            .prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        let keys = prop_oneof![
            Just("message_type".to_owned()),
            Just("key_type".to_owned()),
            Just("key".to_owned()),
            Just("evaluation_type".to_owned()),
            Just("evaluation".to_owned()),
            Just("score".to_owned()),
            Just("confidence".to_owned()),
            ".{0,6}",
        ];
        leaf.prop_recursive(3, 32, 8, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map(keys.clone(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// One of `good` three times in four, else any JSON.
    fn mostly(good: &'static [&'static str]) -> impl Strategy<Value = Value> {
        prop_oneof![
            3 => proptest::sample::select(good).prop_map(Value::from),
            1 => json(),
        ]
    }

    /// What a payload that passed must be.
    fn assert_well_formed(b64: &str, valid: &ValidPayload) {
        let b64 = b64.strip_suffix('\n').unwrap_or(b64);
        assert!(b64.is_ascii());
        let v: Value = serde_json::from_slice(&BASE64_STANDARD.decode(b64).unwrap()).unwrap();
        let obj = v.as_object().unwrap();
        assert!(["request", "report", "blame"].contains(&obj["message_type"].as_str().unwrap()));
        assert_eq!(obj["key"].as_str(), Some(valid.key.as_str()));
        assert!(is_ip(&valid.key));
        assert!(valid.key.bytes().all(|b| b.is_ascii_graphic()));
        // The canonical form passes again, unchanged, and holds only the
        // fields Slips reads.
        let again = validate(&valid.canonical).unwrap();
        assert_eq!(again, *valid);
        let c: Value =
            serde_json::from_slice(&BASE64_STANDARD.decode(&valid.canonical).unwrap()).unwrap();
        let c = c.as_object().unwrap();
        for k in c.keys() {
            assert!(
                [
                    "message_type",
                    "key_type",
                    "key",
                    "evaluation_type",
                    "evaluation"
                ]
                .contains(&k.as_str()),
                "{k}"
            );
        }
        if let Some(Value::Object(e)) = c.get("evaluation") {
            assert_eq!(e.len(), 2);
        }
        if valid.kind != PayloadKind::Request {
            if let Some(eval) = obj["evaluation"].as_object() {
                let score = eval["score"].as_f64().unwrap();
                let confidence = eval["confidence"].as_f64().unwrap();
                assert!(score.is_finite() && (-1.0..=1.0).contains(&score));
                assert!(confidence.is_finite() && (0.0..=1.0).contains(&confidence));
            } else {
                assert_eq!(valid.kind, PayloadKind::Report);
                assert!(obj["evaluation"].is_null());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn any_text_never_panics(s in ".{0,300}") {
            if let Ok(v) = validate(&s) {
                assert_well_formed(&s, &v);
            }
        }

        #[test]
        fn any_bytes_as_base64_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let s = BASE64_STANDARD.encode(&b);
            if let Ok(v) = validate(&s) {
                assert_well_formed(&s, &v);
            }
        }

        /// JSON of any shape, biased towards Slips' field names and values,
        /// so many cases get deep into the checks.
        #[test]
        fn any_json_never_panics(v in json(), newline in any::<bool>()) {
            let mut s = BASE64_STANDARD.encode(v.to_string());
            if newline {
                s.push('\n');
            }
            if let Ok(valid) = validate(&s) {
                assert_well_formed(&s, &valid);
            }
        }

        /// Nearly valid reports: every field usually good, sometimes not.
        #[test]
        fn nearly_valid_reports(
            mt in mostly(&["request", "report", "blame"]),
            kt in mostly(&["ip"]),
            key in mostly(&["1.2.3.4", "::1", "fe80::1%eth0", "10.0.0.9:4001", "01.2.3.4"]),
            et in mostly(&["score_confidence"]),
            score in prop_oneof![3 => (-1.5f64..1.5).prop_map(Value::from), 1 => json()],
            conf in prop_oneof![3 => (-0.5f64..1.5).prop_map(Value::from), 1 => json()],
        ) {
            let v = serde_json::json!({
                "message_type": mt, "key_type": kt, "key": key, "evaluation_type": et,
                "evaluation": {"score": score, "confidence": conf},
            });
            let s = BASE64_STANDARD.encode(v.to_string());
            if let Ok(valid) = validate(&s) {
                assert_well_formed(&s, &valid);
            }
        }
    }
}
