//! The datagram format: one signed JSON envelope per UDP datagram.
//!
//! ```text
//! datagram  = "{\"m\":" M ",\"sig\":\"" SIG "\"}"
//! M         = JSON object {"v","net","pk","inst","seq","ts","kind","body"}
//! SIG       = standard base64 (88 chars) of Ed25519(sign_key,
//!               DOMAIN || net || 0x00 || M)
//! ```
//!
//! The signature covers the exact bytes of `M` as sent: nothing is ever
//! re-serialised to verify. Because the suffix after `M` has a fixed length,
//! a receiver finds `M` by slicing, without a JSON parser that reports
//! spans. `docs/PROTOCOL.md` is the normative description.
//!
//! Untrusted bytes become an [`Unverified`] envelope (header parsed, body
//! still raw); only [`Unverified::verify`] turns it into a [`Verified`] one.

pub mod replay;

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::net::Ipv4Addr;

/// Protocol version carried in every envelope (`v`). Version 2 added
/// return-routability challenges, sessions and the receiver instance of
/// directed data; version-1 peers cannot follow it.
pub const PROTOCOL_VERSION: u32 = 2;

/// Largest datagram sent or accepted, in bytes. Fits any LAN MTU with room
/// to spare (QUIC's initial size); larger datagrams are dropped unread.
pub const MAX_DATAGRAM: usize = 1200;

/// Domain-separation prefix of every signed message, so a pigeon signature
/// can never be replayed as a signature of any other protocol.
pub const SIGN_DOMAIN: &[u8] = b"pigeon-datagram/2\0";

const PREFIX: &[u8] = b"{\"m\":";
const SIG_OPEN: &[u8] = b",\"sig\":\"";
const SIG_CLOSE: &[u8] = b"\"}";
const SIG_B64_LEN: usize = 88;
const SUFFIX_LEN: usize = SIG_OPEN.len() + SIG_B64_LEN + SIG_CLOSE.len();

/// Largest JSON-safe integer: `inst`, `seq`, `ts` and message ids stay below
/// it so implementations with IEEE doubles read them exactly.
pub const MAX_SAFE_INT: u64 = (1 << 53) - 1;

/// Why a datagram was rejected before or during verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum WireError {
    /// Longer than [`MAX_DATAGRAM`].
    #[error("datagram larger than {MAX_DATAGRAM} bytes")]
    Oversized,
    /// Not of the form `{"m":…,"sig":"…"}`.
    #[error("not a pigeon envelope")]
    BadFraming,
    /// `M` is not the expected JSON object.
    #[error("malformed envelope header")]
    BadHeader,
    /// Unknown protocol version.
    #[error("unsupported protocol version")]
    BadVersion,
    /// Another network name (`-rendezvous`).
    #[error("datagram of another network")]
    WrongNetwork,
    /// The public key is not a valid, strong Ed25519 key.
    #[error("invalid or weak public key")]
    BadKey,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
}

/// What a datagram is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// "I am here, reach me at ip:port" (multicast, periodic).
    Announce,
    /// "I am leaving" (multicast, at shutdown).
    Goodbye,
    /// A Slips message, to everyone (multicast) or to one peer (unicast).
    Data,
    /// Receipt of a directed `data` message.
    Ack,
    /// "My recent broadcasts are ids floor..=last" (multicast, after
    /// broadcasts), so receivers notice what they missed.
    Digest,
    /// "Please resend these broadcasts to me" (unicast to their sender).
    Nack,
    /// "Prove you receive datagrams at this address" (unicast, in reply to
    /// a datagram from that address).
    Challenge,
    /// The signed echo of a challenge: proves the key listens at the
    /// address, and opens a session (unicast, to the challenge's source).
    Response,
    /// Organisation traffic: revocation lists, members' sending keys and
    /// requests for them (`docs/PROTOCOL.md` §10; body in `core::orgs`).
    /// Pigeons without organisation support drop it unverified.
    Org,
}

/// Body of an `announce`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceBody {
    /// Unicast address of the sender: where directed messages go.
    pub ip: Ipv4Addr,
    /// Unicast port of the sender.
    pub port: u16,
    /// The sender's mean announce interval, so receivers know when it is
    /// overdue whatever their own configuration.
    pub interval_ms: u64,
    /// Id of the sender's latest broadcast (0 = none yet): a receiver that
    /// has a session with this instance asks for repair of what it missed.
    pub last_bcast: u64,
    /// Filler that makes the datagram at least [`MIN_ANNOUNCE_LEN`] bytes,
    /// so that a challenge in reply never sends more bytes than arrived.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pad: String,
}

/// Bounds of `announce.interval_ms`: an announced interval outside them is
/// a malformed body. The upper bound caps how long a silent peer stays
/// active (3 missed intervals of at most 5 minutes).
pub const ANNOUNCE_INTERVAL_MS: std::ops::RangeInclusive<u64> = 1_000..=300_000;

/// Smallest announce datagram a pigeon sends (padded with `pad`). Toward
/// an unproven address a pigeon sends at most the bytes it received from
/// it, so an announce must pay for the challenge it asks for and for its
/// retries under loss: three [`CHALLENGE_LEN`] datagrams (QUIC pads its
/// first datagrams to 1200 bytes for the same reason, RFC 9000 §14.1).
pub const MIN_ANNOUNCE_LEN: usize = 1_100;

/// Size of every challenge datagram (padded with `pad`). A response is
/// always smaller, so answering a challenge never amplifies.
pub const CHALLENGE_LEN: usize = 360;

impl AnnounceBody {
    /// Whether every field is within its documented bounds.
    pub fn is_valid(&self) -> bool {
        ANNOUNCE_INTERVAL_MS.contains(&self.interval_ms)
            && self.port != 0
            && self.last_bcast <= MAX_SAFE_INT
            && is_unicast_v4(self.ip)
    }
}

/// A host address a peer can be reached at: not unspecified, broadcast,
/// multicast or in 0.0.0.0/8.
pub fn is_unicast_v4(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.octets()[0] == 0)
}

/// Body of a `challenge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeBody {
    /// Unpredictable value the challenged key must sign back (standard
    /// base64 of [`NONCE_LEN`] bytes).
    pub nonce: String,
    /// Filler that makes the datagram [`CHALLENGE_LEN`] bytes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pad: String,
}

/// Bytes of a challenge nonce.
pub const NONCE_LEN: usize = 16;

/// Body of a `response`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseBody {
    /// The challenge's nonce, verbatim.
    pub nonce: String,
    /// Id the sender instance's next broadcast will carry: the receiver
    /// delivers broadcasts of this instance from this id on.
    pub next_bcast: u64,
}

impl ResponseBody {
    /// Whether every field is within its bounds.
    pub fn is_valid(&self) -> bool {
        self.next_bcast >= 1 && self.next_bcast <= MAX_SAFE_INT && self.nonce.len() <= 64
    }
}

/// Body of a `data` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataBody {
    /// Message id, unique per sender instance; retransmissions keep it, so
    /// receivers deliver each message once.
    pub id: u64,
    /// Recipient peer id for directed messages; absent for broadcasts
    /// (`null` is malformed).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub to: Option<String>,
    /// Recipient instance of directed messages (required with `to`,
    /// forbidden without): a restarted recipient refuses what was meant for
    /// its previous run.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub to_inst: Option<u64>,
    /// Slips' base64 payload, verbatim.
    pub payload: String,
}

impl DataBody {
    /// Whether the fields are within bounds and consistent.
    pub fn is_valid(&self) -> bool {
        (1..=MAX_SAFE_INT).contains(&self.id)
            && self.to.is_some() == self.to_inst.is_some()
            && self.to_inst.is_none_or(|i| i <= MAX_SAFE_INT)
    }
}

/// Deserializes a field that, when present, must not be `null`.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// Body of an `ack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckBody {
    /// Id of the acknowledged `data` message.
    pub id: u64,
    /// Peer id of the acknowledged message's sender.
    pub to: String,
}

impl AckBody {
    /// Whether the id is within bounds.
    pub fn is_valid(&self) -> bool {
        (1..=MAX_SAFE_INT).contains(&self.id)
    }
}

/// Body of a `digest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestBody {
    /// Oldest broadcast id the sender can still resend.
    pub floor: u64,
    /// Latest broadcast id sent.
    pub last: u64,
}

impl DigestBody {
    /// Whether the ids are within bounds.
    pub fn is_valid(&self) -> bool {
        self.floor <= MAX_SAFE_INT && self.last <= MAX_SAFE_INT
    }
}

/// Body of a `nack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NackBody {
    /// Peer id of the broadcasts' sender.
    pub to: String,
    /// Missing broadcast ids (at most [`MAX_NACK_IDS`]).
    pub ids: Vec<u64>,
}

/// Most ids in one `nack`.
pub const MAX_NACK_IDS: usize = 32;

impl NackBody {
    /// Whether there are 1 to [`MAX_NACK_IDS`] ids, each within bounds.
    pub fn is_valid(&self) -> bool {
        (1..=MAX_NACK_IDS).contains(&self.ids.len())
            && self.ids.iter().all(|i| (1..=MAX_SAFE_INT).contains(i))
    }
}

/// Body of a `goodbye`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GoodbyeBody {}

#[derive(Serialize)]
struct HeaderOut<'a, B: Serialize> {
    v: u32,
    net: &'a str,
    pk: &'a str,
    inst: u64,
    seq: u64,
    ts: u64,
    kind: Kind,
    body: &'a B,
}

#[derive(Deserialize)]
struct HeaderIn<'a> {
    v: u32,
    #[serde(borrow)]
    net: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pk: std::borrow::Cow<'a, str>,
    inst: u64,
    seq: u64,
    ts: u64,
    kind: Kind,
    #[serde(borrow)]
    body: &'a RawValue,
}

/// Fields of an envelope that identify and order it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Random per process start: a new instance resets the replay window.
    pub instance: u64,
    /// Per-instance datagram counter, starting at 1.
    pub seq: u64,
    /// Sender's clock, Unix milliseconds.
    pub ts_ms: u64,
}

/// Signs and frames one datagram.
///
/// Returns `None` if the result would exceed [`MAX_DATAGRAM`].
pub fn seal<B: Serialize>(
    key: &SigningKey,
    network: &str,
    stamp: Stamp,
    kind: Kind,
    body: &B,
) -> Option<Vec<u8>> {
    let m = message_bytes(key, network, stamp, kind, body)?;
    if PREFIX.len() + m.len() + SUFFIX_LEN > MAX_DATAGRAM {
        return None;
    }
    let sig = key.sign(&signed_bytes(network, &m));
    let mut out = Vec::with_capacity(PREFIX.len() + m.len() + SUFFIX_LEN);
    out.extend_from_slice(PREFIX);
    out.extend_from_slice(&m);
    out.extend_from_slice(SIG_OPEN);
    out.extend_from_slice(BASE64_STANDARD.encode(sig.to_bytes()).as_bytes());
    out.extend_from_slice(SIG_CLOSE);
    Some(out)
}

/// Length of the datagram [`seal`] would build, without signing.
pub fn sealed_len<B: Serialize>(
    key: &SigningKey,
    network: &str,
    stamp: Stamp,
    kind: Kind,
    body: &B,
) -> Option<usize> {
    message_bytes(key, network, stamp, kind, body).map(|m| PREFIX.len() + m.len() + SUFFIX_LEN)
}

/// The `pad` string that makes the datagram of `body` (sealed with its
/// pad empty) at least `min_len` bytes: empty if it is long enough
/// already. A body's `pad` is its last field, so `,"pad":""` costs 9 bytes
/// and every pad character one more.
pub fn padding<B: Serialize>(
    key: &SigningKey,
    network: &str,
    stamp: Stamp,
    kind: Kind,
    body: &B,
    min_len: usize,
) -> Option<String> {
    let bare = sealed_len(key, network, stamp, kind, body)?;
    Some(if bare >= min_len {
        String::new()
    } else {
        "x".repeat(min_len.saturating_sub(bare + 9).max(1))
    })
}

fn message_bytes<B: Serialize>(
    key: &SigningKey,
    network: &str,
    stamp: Stamp,
    kind: Kind,
    body: &B,
) -> Option<Vec<u8>> {
    let pk = BASE64_STANDARD.encode(key.verifying_key().as_bytes());
    let header = HeaderOut {
        v: PROTOCOL_VERSION,
        net: network,
        pk: &pk,
        inst: stamp.instance,
        seq: stamp.seq,
        ts: stamp.ts_ms,
        kind,
        body,
    };
    serde_json::to_vec(&header).ok()
}

fn signed_bytes(network: &str, m: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(SIGN_DOMAIN.len() + network.len() + 1 + m.len());
    v.extend_from_slice(SIGN_DOMAIN);
    v.extend_from_slice(network.as_bytes());
    v.push(0);
    v.extend_from_slice(m);
    v
}

/// A datagram whose header parsed but whose signature is not checked yet.
/// Nothing in it may be acted upon except to decide whether to verify.
#[derive(Debug)]
pub struct Unverified<'a> {
    m: &'a [u8],
    sig: [u8; 64],
    key: VerifyingKey,
    stamp: Stamp,
    kind: Kind,
    body: &'a RawValue,
}

impl<'a> Unverified<'a> {
    /// Cheap checks only: size, framing, header syntax, version, network
    /// name and key validity. No signature work.
    pub fn parse(datagram: &'a [u8], network: &str) -> Result<Self, WireError> {
        if datagram.len() > MAX_DATAGRAM {
            return Err(WireError::Oversized);
        }
        if datagram.len() < PREFIX.len() + 2 + SUFFIX_LEN
            || !datagram.starts_with(PREFIX)
            || !datagram.ends_with(SIG_CLOSE)
        {
            return Err(WireError::BadFraming);
        }
        let m_end = datagram.len() - SUFFIX_LEN;
        let m = &datagram[PREFIX.len()..m_end];
        let suffix = &datagram[m_end..];
        if !suffix.starts_with(SIG_OPEN) {
            return Err(WireError::BadFraming);
        }
        let sig_b64 = &suffix[SIG_OPEN.len()..SIG_OPEN.len() + SIG_B64_LEN];
        let sig_vec = BASE64_STANDARD
            .decode(sig_b64)
            .map_err(|_| WireError::BadFraming)?;
        let sig: [u8; 64] = sig_vec.try_into().map_err(|_| WireError::BadFraming)?;
        // The whole of `M` must be UTF-8 (RFC 8259 §8.1), unknown fields
        // included: serde_json does not check strings it skips.
        let m_text = std::str::from_utf8(m).map_err(|_| WireError::BadHeader)?;
        let header: HeaderIn<'a> =
            serde_json::from_str(m_text).map_err(|_| WireError::BadHeader)?;
        if header.v != PROTOCOL_VERSION {
            return Err(WireError::BadVersion);
        }
        if header.net != network {
            return Err(WireError::WrongNetwork);
        }
        if header.inst > MAX_SAFE_INT || header.seq > MAX_SAFE_INT || header.ts > MAX_SAFE_INT {
            return Err(WireError::BadHeader);
        }
        let key = decode_key(&header.pk).ok_or(WireError::BadKey)?;
        Ok(Self {
            m,
            sig,
            key,
            stamp: Stamp {
                instance: header.inst,
                seq: header.seq,
                ts_ms: header.ts,
            },
            kind: header.kind,
            body: header.body,
        })
    }

    /// The key that claims to have signed this datagram.
    pub fn claimed_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Instance, sequence number and timestamp, as claimed.
    pub fn stamp(&self) -> Stamp {
        self.stamp
    }

    /// The kind, as claimed.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Checks the signature (`verify_strict`: no malleable or small-order
    /// signatures) over the domain-separated exact bytes.
    pub fn verify(self, network: &str) -> Result<Verified<'a>, WireError> {
        let sig = Signature::from_bytes(&self.sig);
        self.key
            .verify_strict(&signed_bytes(network, self.m), &sig)
            .map_err(|_| WireError::BadSignature)?;
        Ok(Verified {
            key: self.key,
            stamp: self.stamp,
            kind: self.kind,
            body: self.body,
        })
    }
}

/// A datagram whose signature verified: `key` really sent it.
#[derive(Debug)]
pub struct Verified<'a> {
    /// The sender. Its identity is this key, never a source address.
    pub key: VerifyingKey,
    /// Instance, sequence and timestamp, authenticated.
    pub stamp: Stamp,
    /// What the datagram is.
    pub kind: Kind,
    body: &'a RawValue,
}

impl Verified<'_> {
    /// Parses the authenticated body as `T`.
    pub fn body<T: for<'de> Deserialize<'de>>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.body.get())
    }
}

/// Decodes a base64 Ed25519 public key, rejecting invalid and weak
/// (small-order) keys.
pub fn decode_key(b64: &str) -> Option<VerifyingKey> {
    let bytes = BASE64_STANDARD.decode(b64).ok()?;
    let arr: [u8; 32] = bytes.try_into().ok()?;
    let key = VerifyingKey::from_bytes(&arr).ok()?;
    if key.is_weak() {
        return None;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn stamp() -> Stamp {
        Stamp {
            instance: 7,
            seq: 1,
            ts_ms: 1_700_000_000_000,
        }
    }

    fn announce() -> AnnounceBody {
        AnnounceBody {
            ip: Ipv4Addr::new(10, 77, 0, 1),
            port: 4001,
            interval_ms: 30_000,
            last_bcast: 0,
            pad: String::new(),
        }
    }

    #[test]
    fn seal_then_verify_round_trips() {
        let k = key(1);
        let d = seal(&k, "slips", stamp(), Kind::Announce, &announce()).unwrap();
        assert!(d.len() < 400, "announce is small: {}", d.len());
        let v = Unverified::parse(&d, "slips")
            .unwrap()
            .verify("slips")
            .unwrap();
        assert_eq!(v.key, k.verifying_key());
        assert_eq!(v.stamp, stamp());
        assert_eq!(v.kind, Kind::Announce);
        assert_eq!(v.body::<AnnounceBody>().unwrap(), announce());
        // The whole datagram is valid JSON too.
        let _: serde_json::Value = serde_json::from_slice(&d).unwrap();
    }

    #[test]
    fn any_flipped_byte_is_rejected() {
        let k = key(2);
        let d = seal(&k, "slips", stamp(), Kind::Announce, &announce()).unwrap();
        for i in 0..d.len() {
            let mut t = d.clone();
            t[i] ^= 0x01;
            let ok = Unverified::parse(&t, "slips").and_then(|u| u.verify("slips"));
            assert!(ok.is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn other_network_is_rejected_even_if_header_lies() {
        let k = key(3);
        let d = seal(&k, "other", stamp(), Kind::Goodbye, &GoodbyeBody {}).unwrap();
        assert_eq!(
            Unverified::parse(&d, "slips").unwrap_err(),
            WireError::WrongNetwork
        );
        // A datagram signed for "other" but whose header is edited to say
        // "slips" fails the signature.
        let text = String::from_utf8(d)
            .unwrap()
            .replace("\"other\"", "\"slips\"");
        let u = Unverified::parse(text.as_bytes(), "slips").unwrap();
        assert_eq!(u.verify("slips").unwrap_err(), WireError::BadSignature);
    }

    #[test]
    fn oversized_payload_is_not_sealed() {
        let k = key(4);
        let body = DataBody {
            id: 1,
            to: None,
            to_inst: None,
            payload: "A".repeat(MAX_DATAGRAM),
        };
        assert!(seal(&k, "slips", stamp(), Kind::Data, &body).is_none());
        let big = vec![b' '; MAX_DATAGRAM + 1];
        assert_eq!(
            Unverified::parse(&big, "slips").unwrap_err(),
            WireError::Oversized
        );
    }

    #[test]
    fn invalid_utf8_anywhere_in_m_is_rejected() {
        let k = key(5);
        let d = seal(&k, "slips", stamp(), Kind::Goodbye, &GoodbyeBody {}).unwrap();
        // An unknown field holding invalid UTF-8, signature made over it.
        let m_end = d.len() - SUFFIX_LEN;
        let mut m = d[PREFIX.len()..m_end - 1].to_vec();
        m.extend_from_slice(b",\"x\":\"\xff\xfe\"}");
        let sig = k.sign(&signed_bytes("slips", &m));
        let mut out = PREFIX.to_vec();
        out.extend_from_slice(&m);
        out.extend_from_slice(SIG_OPEN);
        out.extend_from_slice(BASE64_STANDARD.encode(sig.to_bytes()).as_bytes());
        out.extend_from_slice(SIG_CLOSE);
        assert_eq!(
            Unverified::parse(&out, "slips").unwrap_err(),
            WireError::BadHeader
        );
    }

    #[test]
    fn weak_key_is_rejected() {
        // The identity point (small order) encoded as a public key.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        assert!(decode_key(&BASE64_STANDARD.encode(weak)).is_none());
    }

    #[test]
    fn garbage_never_panics() {
        for g in [
            &b""[..],
            b"{}",
            b"{\"m\":",
            b"{\"m\":{},\"sig\":\"\"}",
            &[0xff; 200],
        ] {
            assert!(Unverified::parse(g, "slips").is_err());
        }
    }
}

/// Property tests: whatever arrives, parsing and verification never panic,
/// and nothing but an untouched sealed datagram verifies.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// A sealed datagram of any kind, key and stamp.
    fn sealed() -> impl Strategy<Value = Vec<u8>> {
        (
            any::<[u8; 32]>(),
            0..=MAX_SAFE_INT,
            1..=MAX_SAFE_INT,
            0..=MAX_SAFE_INT,
            0u8..3,
            ".{0,200}",
            any::<u64>(),
        )
            .prop_filter_map(
                "too large to seal",
                |(seed, instance, seq, ts_ms, kind, text, n)| {
                    let key = SigningKey::from_bytes(&seed);
                    let stamp = Stamp {
                        instance,
                        seq,
                        ts_ms,
                    };
                    match kind {
                        0 => seal(
                            &key,
                            "slips",
                            stamp,
                            Kind::Announce,
                            &AnnounceBody {
                                ip: Ipv4Addr::from(n as u32),
                                port: (n >> 32) as u16,
                                interval_ms: n,
                                last_bcast: n,
                                pad: String::new(),
                            },
                        ),
                        1 => seal(
                            &key,
                            "slips",
                            stamp,
                            Kind::Data,
                            &DataBody {
                                id: n,
                                to: (n % 2 == 0).then(|| text.clone()),
                                to_inst: (n % 2 == 0).then_some(n >> 12),
                                payload: text,
                            },
                        ),
                        _ => seal(&key, "slips", stamp, Kind::Goodbye, &GoodbyeBody {}),
                    }
                },
            )
    }

    /// One way of damaging a datagram.
    #[derive(Debug, Clone)]
    enum Mutation {
        Flip(usize, u8),
        Insert(usize, u8),
        Remove(usize),
        Truncate(usize),
        Overwrite(usize, Vec<u8>),
        Duplicate(usize, usize),
        /// The signature of another sealed datagram.
        ForeignSignature(Vec<u8>),
        /// One header field of `M` set to another JSON value, `M`
        /// re-serialised, the original signature kept.
        EditField(usize, serde_json::Value),
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            ".{0,40}".prop_map(serde_json::Value::from),
            Just(serde_json::json!({})),
            Just(serde_json::json!([1])),
        ]
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), 1u8..=255).prop_map(|(i, m)| Mutation::Flip(i, m)),
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
            any::<usize>().prop_map(Mutation::Remove),
            any::<usize>().prop_map(Mutation::Truncate),
            (
                any::<usize>(),
                proptest::collection::vec(any::<u8>(), 1..16)
            )
                .prop_map(|(i, b)| Mutation::Overwrite(i, b)),
            (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Duplicate(a, b)),
            sealed().prop_map(Mutation::ForeignSignature),
            (any::<usize>(), json_value()).prop_map(|(f, v)| Mutation::EditField(f, v)),
        ]
    }

    fn apply(d: &[u8], m: &Mutation) -> Vec<u8> {
        let mut t = d.to_vec();
        if t.is_empty() {
            return t;
        }
        let at = |i: usize| i % t.len().max(1);
        match m {
            Mutation::Flip(i, mask) => {
                let i = at(*i);
                t[i] ^= mask;
            }
            Mutation::Insert(i, b) => t.insert(at(*i), *b),
            Mutation::Remove(i) => {
                t.remove(at(*i));
            }
            Mutation::Truncate(n) => t.truncate(n % t.len()),
            Mutation::Overwrite(i, bytes) => {
                let i = at(*i);
                for (k, b) in bytes.iter().enumerate() {
                    if let Some(x) = t.get_mut(i + k) {
                        *x = *b;
                    }
                }
            }
            Mutation::Duplicate(a, b) => {
                let (a, b) = (at(*a), at(*b));
                let piece = t[a.min(b)..a.max(b)].to_vec();
                t.splice(a..a, piece);
            }
            Mutation::ForeignSignature(other) => {
                let (n, len) = (SUFFIX_LEN, t.len());
                if len >= n {
                    t[len - n..].copy_from_slice(&other[other.len() - n..]);
                }
            }
            Mutation::EditField(f, v) => {
                // Only while the datagram is still framed and M an object.
                if t.len() < PREFIX.len() + SUFFIX_LEN {
                    return t;
                }
                let m = &t[PREFIX.len()..t.len() - SUFFIX_LEN];
                let Ok(mut header) =
                    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(m)
                else {
                    return t;
                };
                let fields = ["v", "net", "pk", "inst", "seq", "ts", "kind", "body"];
                header.insert(fields[f % fields.len()].to_owned(), v.clone());
                let mut out = PREFIX.to_vec();
                out.extend_from_slice(&serde_json::to_vec(&header).unwrap());
                out.extend_from_slice(&t[t.len() - SUFFIX_LEN..]);
                t = out;
            }
        }
        t
    }

    fn check(d: &[u8]) -> Result<Verified<'_>, WireError> {
        let u = Unverified::parse(d, "slips")?;
        let _ = (u.claimed_key(), u.stamp());
        u.verify("slips")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Arbitrary bytes never panic and never verify.
        #[test]
        fn arbitrary_bytes_are_rejected(d in proptest::collection::vec(any::<u8>(), 0..1500)) {
            prop_assert!(check(&d).is_err());
        }

        /// Well-framed garbage reaches the header parser and the signature
        /// check; it never panics and never verifies.
        #[test]
        fn framed_garbage_is_rejected(m in ".{0,300}", sig in "[A-Za-z0-9+/]{86}==") {
            let d = format!("{{\"m\":{m},\"sig\":\"{sig}\"}}");
            prop_assert!(check(d.as_bytes()).is_err());
        }

        /// A sealed datagram verifies; any change to it makes it fail.
        #[test]
        fn only_untouched_datagrams_verify(
            d in sealed(),
            ms in proptest::collection::vec(mutation(), 1..4),
        ) {
            prop_assert!(check(&d).is_ok());
            let mut t = d.clone();
            for m in &ms {
                if !t.is_empty() {
                    t = apply(&t, m);
                }
            }
            if t == d {
                prop_assert!(check(&t).is_ok(), "untouched datagram rejected");
            } else {
                prop_assert!(check(&t).is_err(), "mutated datagram verified: {:?}", ms);
            }
        }

        /// Bodies of every type parse from any verified body without
        /// panicking (errors are fine).
        #[test]
        fn bodies_of_any_shape_never_panic(body in "[ -~]{0,200}", seed in any::<[u8; 32]>()) {
            let key = SigningKey::from_bytes(&seed);
            let raw = serde_json::value::RawValue::from_string(body.clone());
            let stamp = Stamp { instance: 1, seq: 1, ts_ms: 1 };
            if let Ok(raw) = raw
                && let Some(d) = seal(&key, "slips", stamp, Kind::Data, &raw)
            {
                let v = check(&d).unwrap();
                let _ = v.body::<AnnounceBody>();
                let _ = v.body::<DataBody>();
                let _ = v.body::<AckBody>();
                let _ = v.body::<DigestBody>();
                let _ = v.body::<NackBody>();
                let _ = v.body::<GoodbyeBody>();
            }
        }
    }
}
