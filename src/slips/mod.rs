//! The Slips side of the contract, as pure functions: what Slips publishes
//! to us (pygo), what we publish to Slips (gopy), and the validation that
//! keeps peers' payloads from crashing or fooling Slips.
//!
//! Facts are from Slips 1.1.21 (`modules/p2p_trust`): see
//! `docs/SLIPS.md` and the contract reference.

pub mod payload;
pub(crate) mod python;
pub mod request_guard;

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Slips' legacy stop command (the Go Pigeon matched this exact string).
pub const STOP_PROCESS: &str = "stop_process";

/// A message from Slips on the pygo channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromSlips {
    /// Send `message` (Slips' base64 payload, verbatim) to `recipient`.
    Send {
        /// Base64 of a JSON request/report/blame.
        message: String,
        /// Everyone or one peer.
        recipient: Recipient,
        /// Slips' `version` field, when present.
        version: Option<String>,
    },
    /// `stop_process`, raw or wrapped as `{"text": "stop_process", …}`.
    Stop {
        /// Slips' `version` field, when present.
        version: Option<String>,
    },
}

impl FromSlips {
    /// The `version` Slips put in the message, if any.
    pub fn version(&self) -> Option<&str> {
        match self {
            Self::Send { version, .. } | Self::Stop { version } => version.as_deref(),
        }
    }
}

/// Who a Slips message is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// `"*"`: every peer (multicast).
    All,
    /// One peer id (unicast).
    Peer(String),
}

/// Why a pygo message was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PygoError {
    /// Not JSON (and not the raw stop string).
    #[error("not JSON")]
    NotJson,
    /// JSON, but not an object with string `message` and `recipient`.
    #[error("missing or non-string \"{0}\"")]
    MissingField(&'static str),
    /// `message` or `recipient` is empty (the Go Pigeon dropped these too).
    #[error("empty \"{0}\"")]
    EmptyField(&'static str),
}

#[derive(Deserialize)]
struct Scroll {
    message: Option<serde_json::Value>,
    recipient: Option<serde_json::Value>,
    text: Option<serde_json::Value>,
    version: Option<serde_json::Value>,
}

/// Parses one pygo message. Unknown fields are tolerated.
pub fn parse_pygo(raw: &str) -> Result<FromSlips, PygoError> {
    let trimmed = raw.trim();
    if trimmed == STOP_PROCESS {
        return Ok(FromSlips::Stop { version: None });
    }
    let scroll: Scroll = serde_json::from_str(trimmed).map_err(|_| PygoError::NotJson)?;
    let version = scroll.version.and_then(|v| v.as_str().map(str::to_owned));
    if scroll.text.as_ref().and_then(|t| t.as_str()) == Some(STOP_PROCESS) {
        return Ok(FromSlips::Stop { version });
    }
    let message = match scroll.message {
        Some(serde_json::Value::String(s)) => s,
        _ => return Err(PygoError::MissingField("message")),
    };
    let recipient = match scroll.recipient {
        Some(serde_json::Value::String(s)) => s,
        _ => return Err(PygoError::MissingField("recipient")),
    };
    if message.is_empty() {
        return Err(PygoError::EmptyField("message"));
    }
    if recipient.is_empty() {
        return Err(PygoError::EmptyField("recipient"));
    }
    let recipient = if recipient == "*" {
        Recipient::All
    } else {
        Recipient::Peer(recipient)
    };
    Ok(FromSlips::Send {
        message,
        recipient,
        version,
    })
}

/// A message for Slips on the gopy channel (without the `version`, which
/// [`SlipsVersion`] adds when serialising).
#[derive(Debug, Clone, PartialEq)]
pub enum ToSlips {
    /// A peer's payload (already validated).
    GoData {
        /// The sender's peer id.
        reporter: String,
        /// Local receive time, Unix seconds. Never the sender's clock:
        /// Slips drops anything in its future.
        report_time: i64,
        /// The base64 payload, re-encoded canonically.
        message: String,
        /// For a `request`: the IP it asks about. Not sent to Slips; the
        /// runtime delivers the request only if Slips can answer it
        /// (`io::slips_cache`).
        request_ip: Option<String>,
    },
    /// What we know about a peer.
    PeerUpdate {
        /// The peer id.
        peerid: String,
        /// Its address; omitted until known.
        ip: Option<IpAddr>,
        /// Reliability in [0, 1]; omitted when unknown.
        reliability: Option<f64>,
        /// Local time of the update, Unix seconds.
        timestamp: i64,
    },
}

#[derive(Serialize)]
struct GoDataContents<'a> {
    reporter: &'a str,
    report_time: i64,
    message: &'a str,
}

#[derive(Serialize)]
struct PeerUpdateContents<'a> {
    peerid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reliability: Option<f64>,
    timestamp: i64,
}

#[derive(Serialize)]
struct Envelope<'a, C: Serialize> {
    message_type: &'static str,
    message_contents: C,
    version: &'a str,
}

impl ToSlips {
    /// The exact JSON Slips 1.1.21 accepts on the gopy channel.
    pub fn to_json(&self, version: &str) -> String {
        let out = match self {
            Self::GoData {
                reporter,
                report_time,
                message,
                ..
            } => serde_json::to_string(&Envelope {
                message_type: "go_data",
                message_contents: GoDataContents {
                    reporter,
                    report_time: (*report_time).max(0),
                    message,
                },
                version,
            }),
            Self::PeerUpdate {
                peerid,
                ip,
                reliability,
                timestamp,
            } => serde_json::to_string(&Envelope {
                message_type: "peer_update",
                message_contents: PeerUpdateContents {
                    peerid,
                    ip: ip.map(|i| i.to_string()),
                    // Never NaN or out of range: Slips has no range check.
                    reliability: reliability
                        .filter(|r| r.is_finite())
                        .map(|r| (r.clamp(0.0, 1.0) * 1000.0).round() / 1000.0),
                    timestamp: (*timestamp).max(0),
                },
                version,
            }),
        };
        // Serialising these plain structs cannot fail; an empty string
        // would be dropped by Slips rather than crash it.
        out.unwrap_or_default()
    }
}

/// Where the Slips version came from, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSource {
    /// `<slips>/VERSION`, next to the `p2p4slips/` folder of our binary.
    File,
    /// The `version` field of the first message Slips sent us.
    FirstMessage,
    /// `slips.version` in the configuration (last resort).
    Config,
}

/// The Slips version to stamp on every message for Slips. Slips 1.1.21
/// silently drops any message whose `version` differs from its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlipsVersion {
    value: String,
    source: VersionSource,
}

/// Where Slips keeps its version, for our binary at `binary`: Slips'
/// layout is `<slips>/p2p4slips/p2p4slips`, so `<slips>/VERSION`. (The
/// runtime reads it: this module does no IO.)
pub fn version_file(binary: &Path) -> Option<PathBuf> {
    binary
        .parent()
        .and_then(Path::parent)
        .map(|slips| slips.join("VERSION"))
}

impl SlipsVersion {
    /// The version in `version_file`, the contents of Slips' `VERSION`
    /// file ([`version_file`]) if it could be read and holds a plausible
    /// one; else `config_value`.
    pub fn new(version_file: Option<&str>, config_value: &str) -> Self {
        let from_file = version_file
            .map(|s| s.replace(['\n', '\r'], "").trim().to_owned())
            .filter(|s| is_plausible_version(s));
        match from_file {
            Some(value) => Self {
                value,
                source: VersionSource::File,
            },
            None => Self {
                value: config_value.to_owned(),
                source: VersionSource::Config,
            },
        }
    }

    /// The version to publish.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Where it came from.
    pub fn source(&self) -> VersionSource {
        self.source
    }

    /// Decides whether a pygo message is ours. Returns false for a message
    /// carrying another version (another Slips sharing the channel during a
    /// self-update) once the version is known from the file or an earlier
    /// message; adopts the message's version when only the configured
    /// fallback was known.
    pub fn accept(&mut self, msg_version: Option<&str>) -> bool {
        match (msg_version, self.source) {
            (None, _) => true,
            (Some(v), VersionSource::Config) => {
                if is_plausible_version(v) {
                    self.value = v.to_owned();
                    self.source = VersionSource::FirstMessage;
                }
                true
            }
            (Some(v), _) => v == self.value,
        }
    }
}

fn is_plausible_version(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.chars().all(|c| c.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_slips_scroll_exactly_as_slips_sends_it() {
        let raw = r#"{"message": "eyJtZXNzYWdlX3R5cGUiOiAicmVxdWVzdCJ9", "recipient": "*", "version": "1.1.21"}"#;
        assert_eq!(
            parse_pygo(raw).unwrap(),
            FromSlips::Send {
                message: "eyJtZXNzYWdlX3R5cGUiOiAicmVxdWVzdCJ9".into(),
                recipient: Recipient::All,
                version: Some("1.1.21".into()),
            }
        );
        let directed = r#"{"message":"eyJ9","recipient":"12D3KooWabc","extra":1}"#;
        assert!(matches!(
            parse_pygo(directed).unwrap(),
            FromSlips::Send { recipient: Recipient::Peer(p), version: None, .. } if p == "12D3KooWabc"
        ));
    }

    #[test]
    fn both_stop_forms() {
        assert_eq!(
            parse_pygo("stop_process").unwrap(),
            FromSlips::Stop { version: None }
        );
        assert_eq!(
            parse_pygo(r#"{"text": "stop_process", "version": "1.1.21"}"#).unwrap(),
            FromSlips::Stop {
                version: Some("1.1.21".into())
            }
        );
    }

    #[test]
    fn bad_scrolls_are_errors() {
        assert_eq!(parse_pygo("hello"), Err(PygoError::NotJson));
        assert_eq!(parse_pygo("[1]"), Err(PygoError::NotJson));
        assert_eq!(
            parse_pygo(r#"{"message":1,"recipient":"*"}"#),
            Err(PygoError::MissingField("message"))
        );
        assert_eq!(
            parse_pygo(r#"{"message":"","recipient":"*"}"#),
            Err(PygoError::EmptyField("message"))
        );
        assert_eq!(
            parse_pygo(r#"{"message":"eA==","recipient":""}"#),
            Err(PygoError::EmptyField("recipient"))
        );
    }

    #[test]
    fn gopy_shapes_are_exact() {
        let g = ToSlips::GoData {
            reporter: "12D3KooWx".into(),
            report_time: 1_700_000_000,
            message: "eyJ9".into(),
            request_ip: Some("1.2.3.4".into()),
        };
        assert_eq!(
            g.to_json("1.1.21"),
            r#"{"message_type":"go_data","message_contents":{"reporter":"12D3KooWx","report_time":1700000000,"message":"eyJ9"},"version":"1.1.21"}"#
        );
        let p = ToSlips::PeerUpdate {
            peerid: "12D3KooWx".into(),
            ip: Some("10.0.0.2".parse().unwrap()),
            reliability: Some(1.0),
            timestamp: 1_700_000_000,
        };
        assert_eq!(
            p.to_json("1.1.21"),
            r#"{"message_type":"peer_update","message_contents":{"peerid":"12D3KooWx","ip":"10.0.0.2","reliability":1.0,"timestamp":1700000000},"version":"1.1.21"}"#
        );
        let bare = ToSlips::PeerUpdate {
            peerid: "p".into(),
            ip: None,
            reliability: Some(f64::NAN),
            timestamp: 5,
        };
        assert_eq!(
            bare.to_json("1"),
            r#"{"message_type":"peer_update","message_contents":{"peerid":"p","timestamp":5},"version":"1"}"#
        );
    }

    #[test]
    fn version_file_is_beside_our_folder() {
        assert_eq!(
            version_file(Path::new("/opt/slips/p2p4slips/p2p4slips")),
            Some(PathBuf::from("/opt/slips/VERSION"))
        );
    }

    #[test]
    fn version_from_file_then_filter() {
        let mut v = SlipsVersion::new(Some("1.1.21\n"), "0.0.0");
        assert_eq!((v.value(), v.source()), ("1.1.21", VersionSource::File));
        assert!(v.accept(Some("1.1.21")));
        assert!(v.accept(None));
        assert!(!v.accept(Some("1.1.22")), "another Slips during an update");
    }

    #[test]
    fn version_adopted_from_first_message_when_no_file() {
        let mut v = SlipsVersion::new(None, "1.1.21");
        assert_eq!(v.source(), VersionSource::Config);
        assert!(v.accept(Some("1.2.0")));
        assert_eq!(
            (v.value(), v.source()),
            ("1.2.0", VersionSource::FirstMessage)
        );
        assert!(!v.accept(Some("1.1.21")));
    }
}

/// Property tests: nothing Slips (or anyone who can publish on its Redis)
/// sends makes the pygo parser panic.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// JSON values of any shape, a few levels deep.
    fn json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            ".{0,20}".prop_map(serde_json::Value::from),
            prop_oneof![
                Just("message"),
                Just("recipient"),
                Just("text"),
                Just("version"),
                Just("stop_process"),
                Just("*"),
            ]
            .prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("message".to_owned()),
                        Just("recipient".to_owned()),
                        Just("text".to_owned()),
                        Just("version".to_owned()),
                        ".{0,8}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn any_text_never_panics(raw in ".{0,400}") {
            let _ = parse_pygo(&raw);
        }

        /// Any JSON parses or is refused with a typed error; a `Send` always
        /// has a non-empty message and recipient.
        #[test]
        fn any_json_never_panics(v in json()) {
            match parse_pygo(&v.to_string()) {
                Ok(FromSlips::Send { message, recipient, .. }) => {
                    prop_assert!(!message.is_empty());
                    if let Recipient::Peer(p) = recipient {
                        prop_assert!(!p.is_empty() && p != "*");
                    }
                }
                Ok(FromSlips::Stop { .. }) | Err(_) => {}
            }
        }
    }
}
