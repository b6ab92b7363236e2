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
//! This module holds the state and decides what is sent when, and what a
//! receiver delivers; [`super::Node`] seals, budgets and counts what it is
//! told to send.

use super::Millis;
use crate::config::DeliveryConfig;
use crate::wire::replay::ReplayWindow;
use crate::wire::{DataBody, DigestBody};
use rand::{Rng, RngExt as _};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddrV4;

/// Longest gap between two transmissions of an unacknowledged directed
/// message. The gap starts at `delivery.directed_retry_ms` and doubles up
/// to this: doubling alone fits only 4 transmissions into the 1.5 s
/// deadline (0, 100, 300, 700 ms), so with 30 % loss on each link 0.3⁴ ≈
/// 0.8 % of Slips' answers never arrive; capped, 11 fit (0.3¹¹ ≈ 2·10⁻⁶).
/// A LAN's round trip is far below this, and the cap bounds what a message
/// to a vanished peer costs (11 datagrams).
const MAX_DIRECTED_BACKOFF_MS: Millis = 150;

/// Shortest gap between two nacks to one sender instance.
const MIN_NACK_GAP_MS: Millis = 100;

/// A broadcast kept for repeats and repair.
#[derive(Debug, Clone)]
struct Broadcast {
    id: u64,
    sent_ms: Millis,
    payload: String,
}

impl Broadcast {
    fn body(&self) -> DataBody {
        DataBody {
            id: self.id,
            to: None,
            to_inst: None,
            payload: self.payload.clone(),
        }
    }
}

/// The recipient of a directed message, as it was when first sent.
#[derive(Debug, Clone)]
pub(super) struct Recipient {
    /// Its key: only it can acknowledge.
    pub(super) key: [u8; 32],
    /// Its peer id (in the message body).
    pub(super) peer_id: String,
    /// Its instance when the message was first sent: kept for every
    /// retransmission, so a restarted recipient refuses it.
    pub(super) inst: u64,
    /// Its proven address.
    pub(super) addr: SocketAddrV4,
}

/// A directed message waiting for its acknowledgement.
#[derive(Debug, Clone)]
struct Pending {
    to: Recipient,
    payload: String,
    next_ms: Millis,
    backoff_ms: Millis,
    deadline_ms: Millis,
    /// Operator view: first transmission, for the delivery time.
    first_sent_ms: Millis,
}

impl Pending {
    fn body(&self, id: u64) -> DataBody {
        DataBody {
            id,
            to: Some(self.to.peer_id.clone()),
            to_inst: Some(self.to.inst),
            payload: self.payload.clone(),
        }
    }
}

/// The digests still to send after the latest broadcast.
#[derive(Debug, Clone, Copy)]
struct DigestTimer {
    due_ms: Millis,
    interval_ms: Millis,
    left: u32,
}

/// What the sender must transmit now (from [`Outbox::due`]), in order.
#[derive(Debug)]
pub(super) enum Due {
    /// A scheduled copy of a broadcast, by multicast.
    Repeat(DataBody),
    /// A digest of the retained broadcasts, by multicast.
    Digest(DigestBody),
    /// A retransmission of an unacknowledged directed message.
    Retransmit {
        /// The recipient's latest proven address.
        addr: SocketAddrV4,
        /// The message, as first sent.
        body: DataBody,
    },
    /// A directed message whose deadline passed unacknowledged: given up.
    Expired {
        /// Its recipient.
        peer_id: String,
        /// Its id.
        id: u64,
    },
}

/// Sender side: ids, retained broadcasts, scheduled copies and digests,
/// unacknowledged directed messages.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    /// Latest broadcast id given out (ids start at 1).
    last_bcast: u64,
    /// Latest directed id given out.
    last_directed: u64,
    recent: VecDeque<Broadcast>,
    /// Scheduled copies: (due, id).
    repeats: Vec<(Millis, u64)>,
    digest: Option<DigestTimer>,
    pending: BTreeMap<u64, Pending>,
}

impl Outbox {
    /// Latest broadcast id given out (announcements carry it).
    pub(super) fn last_broadcast(&self) -> u64 {
        self.last_bcast
    }

    /// The id the next broadcast gets.
    pub(super) fn next_broadcast_id(&self) -> u64 {
        self.last_bcast + 1
    }

    /// The id the next directed message gets.
    pub(super) fn next_directed_id(&self) -> u64 {
        self.last_directed + 1
    }

    /// Unacknowledged directed messages.
    pub(super) fn pending_directed(&self) -> usize {
        self.pending.len()
    }

    /// Broadcasts retained for repair.
    pub(super) fn retained_broadcasts(&self) -> usize {
        self.recent.len()
    }

    /// The broadcast [`Self::next_broadcast_id`] was sent at `now`: retains
    /// it, schedules its copies (jittered with `rng`) and the digests after
    /// it.
    pub(super) fn broadcast_sent(
        &mut self,
        now: Millis,
        payload: String,
        d: &DeliveryConfig,
        rng: &mut impl Rng,
    ) {
        let id = self.new_broadcast(now, payload);
        let spacing = d.repeat_spacing_ms;
        for k in 1..=u64::from(d.broadcast_repeats) {
            let jitter = rng.random_range(0..=spacing / 2);
            let due = now + k * spacing - spacing / 4 + jitter;
            self.repeats.push((due, id));
        }
        self.arm_digests(now, d.first_digest_ms, d.digests_after_broadcast);
    }

    /// The directed message [`Self::next_directed_id`] was sent to `to` at
    /// `now`: kept until acknowledged or its deadline. Beyond
    /// `max_pending_directed` the oldest is given up; returns whether one
    /// was.
    pub(super) fn directed_sent(
        &mut self,
        now: Millis,
        to: Recipient,
        payload: String,
        d: &DeliveryConfig,
    ) -> bool {
        self.last_directed += 1;
        let mut evicted = false;
        if self.pending.len() >= d.max_pending_directed
            && let Some((&oldest, _)) = self.pending.iter().next()
        {
            self.pending.remove(&oldest);
            evicted = true;
        }
        let pending = Pending {
            to,
            payload,
            next_ms: now + d.directed_retry_ms,
            backoff_ms: d.directed_retry_ms,
            deadline_ms: now + d.directed_deadline_ms,
            first_sent_ms: now,
        };
        self.pending.insert(self.last_directed, pending);
        evicted
    }

    /// The recipient with key `from` acknowledged directed message `id`:
    /// no more retransmissions. Returns when it was first sent; `None` if
    /// it is not pending or `from` is not its recipient (a third party
    /// cannot cancel retransmissions).
    pub(super) fn acknowledged(&mut self, id: u64, from: &[u8; 32]) -> Option<Millis> {
        if self.pending.get(&id)?.to.key != *from {
            return None;
        }
        self.pending.remove(&id).map(|p| p.first_sent_ms)
    }

    /// Resends of the retained broadcasts among `ids` (a nack), in order.
    pub(super) fn repairs(&self, ids: &[u64]) -> Vec<DataBody> {
        ids.iter()
            .filter_map(|id| self.broadcast(*id))
            .map(Broadcast::body)
            .collect()
    }

    /// What is due at `now`: broadcast copies, then a digest, then
    /// retransmissions (to the address `proven_addr` gives for the
    /// recipient's peer id, if any: a peer is followed only to an address
    /// it has proven) and the directed messages given up.
    pub(super) fn due(
        &mut self,
        now: Millis,
        retry_ms: Millis,
        proven_addr: impl Fn(&str) -> Option<SocketAddrV4>,
    ) -> Vec<Due> {
        let mut out = Vec::new();
        let due: Vec<u64> = self
            .repeats
            .iter()
            .filter(|(d, _)| *d <= now)
            .map(|(_, id)| *id)
            .collect();
        self.repeats.retain(|(d, _)| *d > now);
        out.extend(
            due.into_iter()
                .filter_map(|id| self.broadcast(id))
                .map(|b| Due::Repeat(b.body())),
        );
        if let Some(mut d) = self.digest.filter(|d| d.due_ms <= now) {
            out.push(Due::Digest(DigestBody {
                floor: self.floor(),
                last: self.settled_last(),
            }));
            d.left = d.left.saturating_sub(1);
            d.interval_ms = d.interval_ms.saturating_mul(2);
            d.due_ms = now + d.interval_ms;
            self.digest = (d.left > 0).then_some(d);
        }
        let due: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.next_ms <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(mut p) = self.pending.remove(&id) else {
                continue;
            };
            if now >= p.deadline_ms {
                out.push(Due::Expired {
                    peer_id: p.to.peer_id,
                    id,
                });
                continue;
            }
            if let Some(a) = proven_addr(&p.to.peer_id) {
                p.to.addr = a;
            }
            out.push(Due::Retransmit {
                addr: p.to.addr,
                body: p.body(id),
            });
            p.backoff_ms = p
                .backoff_ms
                .saturating_mul(2)
                .min(MAX_DIRECTED_BACKOFF_MS.max(retry_ms));
            p.next_ms = (now + p.backoff_ms).min(p.deadline_ms);
            self.pending.insert(id, p);
        }
        out
    }

    /// Records a new broadcast and returns its id.
    fn new_broadcast(&mut self, now: Millis, payload: String) -> u64 {
        self.last_bcast += 1;
        self.recent.push_back(Broadcast {
            id: self.last_bcast,
            sent_ms: now,
            payload,
        });
        self.last_bcast
    }

    /// A retained broadcast.
    fn broadcast(&self, id: u64) -> Option<&Broadcast> {
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
    fn arm_digests(&mut self, now: Millis, first_ms: Millis, count: u32) {
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
    fn settled_last(&self) -> u64 {
        self.repeats
            .iter()
            .map(|&(_, id)| id)
            .min()
            .map_or(self.last_bcast, |id| id.saturating_sub(1))
    }

    /// Oldest broadcast id still retained (`last_bcast + 1` if none).
    fn floor(&self) -> u64 {
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

/// What becomes of a verified `data` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delivery {
    /// Not delivered before: on to Slips.
    New,
    /// Delivered already (a copy, retransmission or repair).
    Duplicate,
    /// A broadcast of an instance we have no session with.
    NoSession,
    /// A broadcast sent before our session with its sender began.
    BeforeSession,
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
    bcast_base: Option<u64>,
    /// Delivered broadcast ids.
    bcast: ReplayWindow,
    /// Delivered directed ids.
    directed: ReplayWindow,
    /// When we last sent this instance a nack.
    last_nack_ms: Millis,
}

impl RxState {
    /// Our session with this instance opened; its next broadcast will have
    /// id `next_bcast`. A session already open keeps its base.
    pub fn open_session(&mut self, next_bcast: u64) {
        if self.bcast_base.is_none() {
            self.bcast_base = Some(next_bcast);
        }
    }

    /// Whether `data` message `id` (directed or broadcast) is delivered,
    /// recording it if so.
    pub(super) fn deliver(&mut self, directed: bool, id: u64) -> Delivery {
        if directed {
            return if self.directed.commit(id) {
                Delivery::New
            } else {
                Delivery::Duplicate
            };
        }
        match self.bcast_base {
            // Broadcasts count only inside a session: after our
            // restart a replayed broadcast has no session to join.
            None => Delivery::NoSession,
            Some(base) if id < base => Delivery::BeforeSession,
            Some(_) if self.bcast.commit(id) => Delivery::New,
            Some(_) => Delivery::Duplicate,
        }
    }

    /// The sender has broadcasts `floor..=last`: the ids to nack at `now`
    /// (at most `max`), or `None` if nothing is missing or the previous
    /// nack was too recent.
    pub(super) fn nack(
        &mut self,
        now: Millis,
        floor: u64,
        last: u64,
        max: usize,
    ) -> Option<Vec<u64>> {
        let ids = self.missing(floor, last, max);
        if ids.is_empty() || now.saturating_sub(self.last_nack_ms) < MIN_NACK_GAP_MS {
            return None;
        }
        self.last_nack_ms = now;
        Some(ids)
    }

    /// Broadcast ids in `floor..=last` we expect but have not delivered,
    /// at most `max`.
    fn missing(&self, floor: u64, last: u64, max: usize) -> Vec<u64> {
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
