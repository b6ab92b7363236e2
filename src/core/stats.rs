//! Counters of what the node did and dropped, and rate-limited drop logs.

use crate::untrusted::Untrusted;
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
        }
    }

    /// Whether it is normal operation rather than a sign of trouble (such
    /// drops are counted but never logged above debug).
    pub fn is_routine(self) -> bool {
        matches!(self, Self::Own | Self::Duplicate | Self::NotForUs)
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
    /// Drops by reason.
    pub dropped: BTreeMap<DropReason, u64>,
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
