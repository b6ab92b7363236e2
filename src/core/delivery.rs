//! Delivery over lossy links: every Slips message arrives, exactly once.
//!
//! * **Directed** messages (answers to one peer) are acknowledged; the
//!   sender retransmits with doubling delays until the `ack` arrives or a
//!   deadline passes.
//! * **Broadcasts** are sent a few times with jitter (no per-peer acks, so
//!   no ack storm), then the sender multicasts a few `digest`s ("my recent
//!   broadcasts are ids floor..=last"); a receiver that misses ids asks the
//!   sender with a `nack` and gets them resent by unicast. Announcements
//!   carry the latest broadcast id too, which heals longer partitions.
//! * Receivers deduplicate per (sender key, sender instance, id) with
//!   bounded windows, so no copy, retransmission or repair reaches Slips
//!   twice.
//!
//! This module holds the state; [`super::Node`] drives it.

use super::Millis;
use crate::wire::replay::ReplayWindow;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddrV4;

/// Longest gap between two transmissions of an unacknowledged directed
/// message. The gap starts at `delivery.directed_retry_ms` and doubles up
/// to this: doubling alone fits only 4 transmissions into the 1.5 s
/// deadline (0, 100, 300, 700 ms), so with 30 % loss on each link 0.3⁴ ≈
/// 0.8 % of Slips' answers never arrive; capped, 11 fit (0.3¹¹ ≈ 2·10⁻⁶).
/// A LAN's round trip is far below this, and the cap bounds what a message
/// to a vanished peer costs (11 datagrams).
pub(super) const MAX_DIRECTED_BACKOFF_MS: Millis = 150;

/// A broadcast kept for repeats and repair.
#[derive(Debug, Clone)]
pub(super) struct Broadcast {
    pub(super) id: u64,
    pub(super) sent_ms: Millis,
    pub(super) payload: String,
}

/// A directed message waiting for its acknowledgement.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    /// Recipient's key.
    pub(super) to_key: [u8; 32],
    /// Recipient's peer id (in the message body).
    pub(super) to_peer_id: String,
    /// Recipient's instance when the message was first sent: kept for
    /// every retransmission, so a restarted recipient refuses it.
    pub(super) to_inst: u64,
    /// Where it was last sent.
    pub(super) addr: SocketAddrV4,
    pub(super) payload: String,
    pub(super) next_ms: Millis,
    pub(super) backoff_ms: Millis,
    pub(super) deadline_ms: Millis,
    /// Operator view: first transmission, for the delivery time.
    pub(super) first_sent_ms: Millis,
}

/// The digests still to send after the latest broadcast.
#[derive(Debug, Clone, Copy)]
pub(super) struct DigestTimer {
    pub(super) due_ms: Millis,
    pub(super) interval_ms: Millis,
    pub(super) left: u32,
}

/// Sender side: ids, retained broadcasts, scheduled copies and digests,
/// unacknowledged directed messages.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    /// Latest broadcast id given out (ids start at 1).
    pub(super) last_bcast: u64,
    /// Latest directed id given out.
    pub(super) last_directed: u64,
    pub(super) recent: VecDeque<Broadcast>,
    /// Scheduled copies: (due, id).
    pub(super) repeats: Vec<(Millis, u64)>,
    pub(super) digest: Option<DigestTimer>,
    pub(super) pending: BTreeMap<u64, Pending>,
}

impl Outbox {
    /// Records a new broadcast and returns its id.
    pub(super) fn new_broadcast(&mut self, now: Millis, payload: String) -> u64 {
        self.last_bcast += 1;
        self.recent.push_back(Broadcast {
            id: self.last_bcast,
            sent_ms: now,
            payload,
        });
        self.last_bcast
    }

    /// A retained broadcast.
    pub(super) fn broadcast(&self, id: u64) -> Option<&Broadcast> {
        // Ids are consecutive, so the position is arithmetic.
        let first = self.recent.front()?.id;
        let b = self
            .recent
            .get(usize::try_from(id.checked_sub(first)?).ok()?)?;
        (b.id == id).then_some(b)
    }

    /// Schedules `count` digests after a broadcast at `now`: the first
    /// `first_ms` later, then at doubling intervals. A digest already due
    /// is never postponed, so during a stream of broadcasts closer together
    /// than `first_ms` digests still go out about every `first_ms`: losses
    /// are repaired while the stream goes on and the broadcasts are still
    /// retained, not only after it ends.
    pub(super) fn arm_digests(&mut self, now: Millis, first_ms: Millis, count: u32) {
        if count == 0 {
            return;
        }
        let due_ms = self
            .digest
            .map_or(now + first_ms, |d| d.due_ms.min(now + first_ms));
        self.digest = Some(DigestTimer {
            due_ms,
            interval_ms: first_ms,
            left: count,
        });
    }

    /// The newest broadcast id whose copies have all been sent; digests
    /// name nothing newer. A receiver that lacks a newer one may still get
    /// a copy of it, and asking for it would only cost a nack and a repair.
    pub(super) fn settled_last(&self) -> u64 {
        self.repeats
            .iter()
            .map(|&(_, id)| id)
            .min()
            .map_or(self.last_bcast, |id| id.saturating_sub(1))
    }

    /// Oldest broadcast id still retained (`last_bcast + 1` if none).
    pub(super) fn floor(&self) -> u64 {
        self.recent.front().map_or(self.last_bcast + 1, |b| b.id)
    }

    /// Forgets broadcasts beyond the retention limits.
    pub(super) fn prune(&mut self, now: Millis, max: usize, max_age_ms: Millis) {
        while let Some(front) = self.recent.front() {
            if self.recent.len() > max || now.saturating_sub(front.sent_ms) > max_age_ms {
                self.recent.pop_front();
            } else {
                break;
            }
        }
    }

    /// Earliest moment something is due.
    pub(super) fn next_due(&self) -> Option<Millis> {
        let r = self.repeats.iter().map(|(t, _)| *t).min();
        let d = self.digest.map(|d| d.due_ms);
        let p = self.pending.values().map(|p| p.next_ms).min();
        [r, d, p].into_iter().flatten().min()
    }
}

/// Receiver side, per sender instance: which broadcast and directed ids
/// were delivered, and from which broadcast id on we care.
#[derive(Debug, Clone, Default)]
pub struct RxState {
    /// First broadcast id we deliver from this instance: its `next_bcast`
    /// when our session with it opened (a valid `response`). Earlier ones
    /// were sent before the session and are never delivered, so nothing
    /// captured before our restart can reach Slips again. `None`: no
    /// session, nothing delivered.
    pub bcast_base: Option<u64>,
    /// Delivered broadcast ids.
    pub bcast: ReplayWindow,
    /// Delivered directed ids.
    pub directed: ReplayWindow,
    /// When we last sent this instance a nack.
    pub last_nack_ms: Millis,
}

impl RxState {
    /// Broadcast ids in `floor..=last` we expect but have not delivered,
    /// at most `max`.
    pub fn missing(&self, floor: u64, last: u64, max: usize) -> Vec<u64> {
        let Some(base) = self.bcast_base else {
            return Vec::new();
        };
        let window_start = last.saturating_sub(crate::wire::replay::WINDOW_BITS - 1);
        let start = base.max(floor).max(window_start).max(1);
        (start..=last)
            .filter(|id| self.bcast.will_accept(*id))
            .take(max)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_finds_and_prunes_broadcasts() {
        let mut o = Outbox::default();
        for i in 0..10 {
            o.new_broadcast(i * 1000, format!("p{i}"));
        }
        assert_eq!(o.broadcast(3).map(|b| b.payload.as_str()), Some("p2"));
        o.prune(10_000, 5, 60_000);
        assert_eq!(o.floor(), 6);
        assert!(o.broadcast(5).is_none());
        assert!(o.broadcast(6).is_some());
        assert!(o.broadcast(11).is_none());
        o.prune(100_000, 5, 60_000);
        assert_eq!(o.floor(), 11);
    }

    #[test]
    fn a_stream_of_broadcasts_does_not_postpone_digests() {
        let mut o = Outbox::default();
        o.arm_digests(0, 300, 5);
        // Broadcasts every 30 ms: the digest stays due at 300.
        for t in (30..300).step_by(30) {
            o.arm_digests(t, 300, 5);
        }
        let d = o.digest.expect("armed");
        assert_eq!((d.due_ms, d.interval_ms, d.left), (300, 300, 5));
        // After a long gap the schedule starts afresh.
        o.digest = Some(DigestTimer {
            due_ms: 5_000,
            interval_ms: 2_400,
            left: 2,
        });
        o.arm_digests(1_000, 300, 5);
        let d = o.digest.expect("armed");
        assert_eq!((d.due_ms, d.interval_ms, d.left), (1_300, 300, 5));
        o.digest = None;
        o.arm_digests(0, 300, 0);
        assert!(o.digest.is_none(), "no digests configured");
    }

    #[test]
    fn digests_name_only_broadcasts_whose_copies_are_sent() {
        let mut o = Outbox::default();
        assert_eq!(o.settled_last(), 0);
        for i in 0..3 {
            o.new_broadcast(i, format!("p{i}"));
        }
        assert_eq!(o.settled_last(), 3);
        o.repeats = vec![(400, 3), (250, 2), (500, 3)];
        assert_eq!(o.settled_last(), 1);
    }

    #[test]
    fn receiver_asks_only_for_what_it_expects() {
        let mut rx = RxState::default();
        assert!(rx.missing(1, 5, 32).is_empty(), "base unknown: nothing");
        rx.bcast_base = Some(4);
        assert_eq!(rx.missing(1, 6, 32), vec![4, 5, 6]);
        rx.bcast.commit(5);
        assert_eq!(rx.missing(1, 6, 32), vec![4, 6]);
        assert_eq!(rx.missing(6, 6, 32), vec![6], "floor respected");
    }
}
