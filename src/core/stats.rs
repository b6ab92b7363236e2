//! Counters of what the node did and dropped, and rate-limited drop logs.

use crate::untrusted::Untrusted;
use crate::wire::Kind;
use std::collections::BTreeMap;

/// Why an input was dropped. Every variant is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Larger than the maximum datagram size.
    Oversized,
    /// Not a pigeon envelope.
    BadFraming,
    /// Envelope header malformed.
    BadHeader,
    /// Unknown protocol version.
    BadVersion,
    /// Another network name.
    WrongNetwork,
    /// Invalid or weak public key.
    BadKey,
    /// Signature did not verify.
    BadSignature,
    /// Our own datagram (multicast loop).
    Own,
    /// Timestamp too far in the past.
    Stale,
    /// Timestamp too far in the future.
    Future,
    /// Sequence number already seen or too old.
    Replay,
    /// Source address over its rate.
    SourceRate,
    /// Peer over its rate.
    PeerRate,
    /// Peer table full of active peers.
    TableFull,
    /// Signed body does not match its kind.
    BadBody,
    /// Directed message for another peer.
    NotForUs,
    /// Message id already delivered.
    Duplicate,
    /// Slips payload failed validation.
    BadPayload,
    /// Blame refused by the blame policy.
    BlamePolicy,
    /// Announced address differs from the datagram's source.
    AddressMismatch,
    /// Slips asked to send to an unknown or inactive peer.
    UnknownRecipient,
    /// Slips' payload does not fit in one datagram.
    TooLargeToSend,
    /// The key is banned for repeated misbehaviour (dropped unverified).
    Banned,
    /// A kind on the wrong socket (e.g. directed data by multicast).
    WrongChannel,
    /// Anything but an announce or a response from a key not in the table.
    UnknownPeer,
    /// A reply refused: the address has not proven itself and sent fewer
    /// bytes, or its byte budget is spent (anti-amplification).
    NoCredit,
    /// A response whose nonce is not ours for that key and address.
    BadNonce,
    /// A broadcast or digest from a sender instance without a session.
    NoSession,
    /// A broadcast older than our session with its sender.
    BeforeSession,
    /// Directed data for a previous run of ours.
    OtherInstance,
    /// Slips asked to report or blame a pigeon's own address.
    ReportsPeer,
    /// A message over the rate toward Slips (per peer, unproven or total).
    SlipsRate,
    /// A new key's announce not challenged: challenges over their budget.
    ChallengeBudget,
    /// An org-sealed message for an organisation we are not a current
    /// member of, or from a sender that is not (routine for non-members).
    OrgSealed,
    /// An org-sealed message we cannot read yet (sender's key or
    /// membership not known): not delivered, so it is repaired later.
    OrgNoKey,
    /// Refused by an organisation policy (a request from a non-member
    /// under `accept_requests = "members"`, a Slips message that may go
    /// only to members and has none to go to, org traffic not for us).
    OrgPolicy,
}

impl DropReason {
    /// Stable name used in logs and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oversized => "oversized",
            Self::BadFraming => "bad_framing",
            Self::BadHeader => "bad_header",
            Self::BadVersion => "bad_version",
            Self::WrongNetwork => "wrong_network",
            Self::BadKey => "bad_key",
            Self::BadSignature => "bad_signature",
            Self::Own => "own",
            Self::Stale => "stale",
            Self::Future => "future",
            Self::Replay => "replay",
            Self::SourceRate => "source_rate",
            Self::PeerRate => "peer_rate",
            Self::TableFull => "table_full",
            Self::BadBody => "bad_body",
            Self::NotForUs => "not_for_us",
            Self::Duplicate => "duplicate",
            Self::BadPayload => "bad_payload",
            Self::BlamePolicy => "blame_policy",
            Self::AddressMismatch => "address_mismatch",
            Self::UnknownRecipient => "unknown_recipient",
            Self::TooLargeToSend => "too_large_to_send",
            Self::Banned => "banned",
            Self::WrongChannel => "wrong_channel",
            Self::UnknownPeer => "unknown_peer",
            Self::NoCredit => "no_credit",
            Self::BadNonce => "bad_nonce",
            Self::NoSession => "no_session",
            Self::BeforeSession => "before_session",
            Self::OtherInstance => "other_instance",
            Self::ReportsPeer => "reports_peer",
            Self::SlipsRate => "slips_rate",
            Self::ChallengeBudget => "challenge_budget",
            Self::OrgSealed => "org_sealed",
            Self::OrgNoKey => "org_no_key",
            Self::OrgPolicy => "org_policy",
        }
    }

    /// Whether it is normal operation rather than a sign of trouble (such
    /// drops are counted but never logged above debug).
    pub fn is_routine(self) -> bool {
        matches!(
            self,
            Self::Own
                | Self::Duplicate
                | Self::NotForUs
                | Self::BeforeSession
                | Self::NoSession
                | Self::OrgSealed
        )
    }
}

/// How often a summary of repeated drops may be logged per reason.
const DROP_LOG_INTERVAL_MS: u64 = 10_000;

/// Counters of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to the node.
    pub datagrams_in: u64,
    /// Datagrams whose signature verified and that were acted upon.
    pub datagrams_accepted: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Messages handed to Slips.
    pub to_slips: u64,
    /// Broadcast copies and directed retransmissions sent.
    pub retransmissions: u64,
    /// Broadcasts resent because a peer asked (nack).
    pub repairs: u64,
    /// Directed messages given up on (no acknowledgement by the deadline).
    pub directed_expired: u64,
    /// Keys banned for repeated misbehaviour.
    pub bans: u64,
    /// Challenges sent (return routability).
    pub challenges_sent: u64,
    /// Replies not sent because the destination had not proven itself and
    /// sent fewer bytes, or its byte budget was spent.
    pub amplification_refused: u64,
    /// `peer_update`s postponed by the total rate toward Slips.
    pub peer_updates_deferred: u64,
    /// Drops by reason.
    pub dropped: BTreeMap<DropReason, u64>,
    // operator view:
    /// Accepted (verified, acted upon) datagrams by kind.
    pub accepted_by_kind: KindCounts,
    /// Sent datagrams by kind.
    pub sent_by_kind: KindCounts,
    /// Directed message first sent → acknowledged, milliseconds.
    pub ack_delay: DelayHistogram,
}

impl Stats {
    /// Total drops of every reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    /// Drops that are not routine (see [`DropReason::is_routine`]).
    pub fn dropped_unusual(&self) -> u64 {
        self.dropped
            .iter()
            .filter(|(r, _)| !r.is_routine())
            .map(|(_, n)| n)
            .sum()
    }

    /// Drops of one reason.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.dropped.get(&r).copied().unwrap_or(0)
    }
}

/// Logs drops without letting a flood flood the log: the first drop of a
/// reason is logged, then at most one summary per reason every 10 s.
#[derive(Debug, Default)]
pub struct DropLog {
    pending: BTreeMap<DropReason, (u64, u64)>, // reason -> (unlogged count, last log ms)
}

impl DropLog {
    /// Records a drop; logs it if this reason was quiet long enough.
    ///
    /// `detail` often holds what a peer sent (addresses, ids, payload
    /// fields): it is printed through [`Untrusted`], so it cannot break
    /// the line or smuggle control characters into the log.
    pub fn record(&mut self, now_ms: u64, reason: DropReason, detail: &dyn std::fmt::Display) {
        let detail = Untrusted(detail);
        if reason.is_routine() {
            tracing::debug!(reason = reason.as_str(), "dropped: {detail}");
            return;
        }
        let entry = self.pending.entry(reason).or_insert((0, 0));
        if entry.1 == 0 || now_ms.saturating_sub(entry.1) >= DROP_LOG_INTERVAL_MS {
            if entry.0 > 0 {
                tracing::warn!(
                    reason = reason.as_str(),
                    "dropped: {detail} (and {} more of this kind since the last report)",
                    entry.0
                );
            } else {
                tracing::warn!(reason = reason.as_str(), "dropped: {detail}");
            }
            *entry = (0, now_ms.max(1));
        } else {
            entry.0 += 1;
        }
    }

    /// Logs the summaries that are due.
    pub fn flush(&mut self, now_ms: u64) {
        for (reason, (count, last)) in self.pending.iter_mut() {
            if *count > 0 && now_ms.saturating_sub(*last) >= DROP_LOG_INTERVAL_MS {
                tracing::warn!(
                    reason = reason.as_str(),
                    "dropped {count} more datagrams of this kind"
                );
                *count = 0;
                *last = now_ms.max(1);
            }
        }
    }
}

// ----- operator view: per-kind counters and delivery times -----

impl DropReason {
    /// Every reason, in declaration order (metrics list each, even at 0).
    pub const ALL: [DropReason; 36] = [
        Self::Oversized,
        Self::BadFraming,
        Self::BadHeader,
        Self::BadVersion,
        Self::WrongNetwork,
        Self::BadKey,
        Self::BadSignature,
        Self::Own,
        Self::Stale,
        Self::Future,
        Self::Replay,
        Self::SourceRate,
        Self::PeerRate,
        Self::TableFull,
        Self::BadBody,
        Self::NotForUs,
        Self::Duplicate,
        Self::BadPayload,
        Self::BlamePolicy,
        Self::AddressMismatch,
        Self::UnknownRecipient,
        Self::TooLargeToSend,
        Self::Banned,
        Self::WrongChannel,
        Self::UnknownPeer,
        Self::NoCredit,
        Self::BadNonce,
        Self::NoSession,
        Self::BeforeSession,
        Self::OtherInstance,
        Self::ReportsPeer,
        Self::SlipsRate,
        Self::ChallengeBudget,
        Self::OrgSealed,
        Self::OrgNoKey,
        Self::OrgPolicy,
    ];

    /// Index in [`DropReason::ALL`]. Exhaustive, so a new reason does not
    /// compile until it is added there too.
    pub fn position(self) -> usize {
        match self {
            Self::Oversized => 0,
            Self::BadFraming => 1,
            Self::BadHeader => 2,
            Self::BadVersion => 3,
            Self::WrongNetwork => 4,
            Self::BadKey => 5,
            Self::BadSignature => 6,
            Self::Own => 7,
            Self::Stale => 8,
            Self::Future => 9,
            Self::Replay => 10,
            Self::SourceRate => 11,
            Self::PeerRate => 12,
            Self::TableFull => 13,
            Self::BadBody => 14,
            Self::NotForUs => 15,
            Self::Duplicate => 16,
            Self::BadPayload => 17,
            Self::BlamePolicy => 18,
            Self::AddressMismatch => 19,
            Self::UnknownRecipient => 20,
            Self::TooLargeToSend => 21,
            Self::Banned => 22,
            Self::WrongChannel => 23,
            Self::UnknownPeer => 24,
            Self::NoCredit => 25,
            Self::BadNonce => 26,
            Self::NoSession => 27,
            Self::BeforeSession => 28,
            Self::OtherInstance => 29,
            Self::ReportsPeer => 30,
            Self::SlipsRate => 31,
            Self::ChallengeBudget => 32,
            Self::OrgSealed => 33,
            Self::OrgNoKey => 34,
            Self::OrgPolicy => 35,
        }
    }
}

/// Every datagram kind, in a fixed order (the index of [`KindCounts`]).
pub const KINDS: [Kind; 9] = [
    Kind::Announce,
    Kind::Goodbye,
    Kind::Data,
    Kind::Ack,
    Kind::Digest,
    Kind::Nack,
    Kind::Challenge,
    Kind::Response,
    Kind::Org,
];

/// Lower-case name of a kind, as on the wire.
pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Announce => "announce",
        Kind::Goodbye => "goodbye",
        Kind::Data => "data",
        Kind::Ack => "ack",
        Kind::Digest => "digest",
        Kind::Nack => "nack",
        Kind::Challenge => "challenge",
        Kind::Response => "response",
        Kind::Org => "org",
    }
}

/// One counter per datagram kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindCounts([u64; KINDS.len()]);

impl KindCounts {
    fn index(kind: Kind) -> usize {
        KINDS.iter().position(|k| *k == kind).unwrap_or(0)
    }

    /// Counts one datagram of `kind`.
    pub fn add(&mut self, kind: Kind) {
        self.0[Self::index(kind)] += 1;
    }

    /// The count of `kind`.
    pub fn get(&self, kind: Kind) -> u64 {
        self.0[Self::index(kind)]
    }
}

/// Upper bounds (milliseconds) of the buckets of [`DelayHistogram`]. A LAN
/// round trip is well under a millisecond; retransmissions come 100 ms
/// apart and give up after `delivery.directed_deadline_ms` (1.5 s).
pub const DELAY_BUCKETS_MS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 1500, 2500];

/// Cumulative-ready histogram of delays in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DelayHistogram {
    /// Observations per bucket (not cumulative); the last slot is `+Inf`.
    pub buckets: [u64; DELAY_BUCKETS_MS.len() + 1],
    /// Sum of the observed delays, milliseconds.
    pub sum_ms: u64,
    /// Number of observations.
    pub count: u64,
}

impl DelayHistogram {
    /// Records one delay.
    pub fn observe(&mut self, ms: u64) {
        let i = DELAY_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(DELAY_BUCKETS_MS.len());
        self.buckets[i] += 1;
        self.sum_ms = self.sum_ms.saturating_add(ms);
        self.count += 1;
    }
}

#[cfg(test)]
mod operator_tests {
    use super::*;

    #[test]
    fn delay_histogram_puts_each_delay_in_its_bucket() {
        let mut h = DelayHistogram::default();
        for ms in [0, 1, 2, 3, 2500, 2501] {
            h.observe(ms);
        }
        assert_eq!(h.buckets[0], 2, "0 and 1 ms are <= 1 ms");
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[2], 1, "3 ms is <= 5 ms");
        assert_eq!(h.buckets[DELAY_BUCKETS_MS.len() - 1], 1);
        assert_eq!(h.buckets[DELAY_BUCKETS_MS.len()], 1, "+Inf");
        assert_eq!((h.count, h.sum_ms), (6, 5007));
    }

    #[test]
    fn every_drop_reason_is_listed_once() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.position(), i, "{}", r.as_str());
        }
    }

    #[test]
    fn kind_counts_count_each_kind_apart() {
        let mut c = KindCounts::default();
        c.add(Kind::Ack);
        c.add(Kind::Ack);
        c.add(Kind::Nack);
        assert_eq!(c.get(Kind::Ack), 2);
        assert_eq!(c.get(Kind::Nack), 1);
        assert_eq!(c.get(Kind::Data), 0);
        assert_eq!(KINDS.map(kind_name).len(), 9);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects what a real tracing-subscriber formatter writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(f: impl FnOnce()) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    /// Every hostile string a peer can put in a drop detail comes out as
    /// one line of printable ASCII.
    #[test]
    fn drop_details_are_escaped_in_the_log() {
        let hostile = [
            "fe80::1%x\n2026-12-01T00:00:00Z  WARN pigeon: [ALERT] forged",
            "a\rb",
            "a\0b",
            "a\u{1b}[31mred",
            "ü\u{202e}",
        ];
        for h in hostile {
            for reason in [DropReason::BadPayload, DropReason::Duplicate] {
                let text = logged(|| {
                    let mut log = DropLog::default();
                    log.record(1, reason, &format_args!("blame about {h} from x"));
                });
                assert_eq!(text.lines().count(), 1, "{text:?}");
                let line = text.trim_end_matches('\n');
                assert!(line.bytes().all(|b| (b' '..=b'~').contains(&b)), "{line:?}");
                assert!(line.contains("blame about "), "{line:?}");
            }
        }
    }
}
