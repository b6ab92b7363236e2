//! The operator view of a node: plain snapshot structs built by
//! a pure function, [`Node::status`], and the two counting hooks the node
//! calls. No IO: `pigeon status` and the Prometheus endpoint render these
//! (see `crate::status` and `crate::io::control`, `crate::io::metrics`).

use super::peers::{Peer, PeerState};
use super::stats::{DELAY_BUCKETS_MS, DropReason, KINDS, Stats, kind_name};
use super::{Destination, Millis, Node, Now};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddrV4;

/// Whether `peer` proved in this run that it receives at its address
/// (return routability, `docs/PROTOCOL.md` §4.7–4.8).
pub fn address_proven(peer: &Peer) -> bool {
    peer.proven && peer.addr.is_some()
}

/// What one node knows and counted, at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    /// Our libp2p peer id (derived from our key).
    pub peer_id: String,
    /// Our unicast address, as announced.
    pub address: SocketAddrV4,
    /// Network name (`-rendezvous`).
    pub network: String,
    /// Random id of this run.
    pub instance: u64,
    /// When the node started, Unix ms.
    pub started_ms: Millis,
    /// When the snapshot was taken, Unix ms.
    pub now_ms: Millis,
    /// Totals since start.
    pub counters: Counters,
    /// Directed messages waiting for their acknowledgement.
    pub pending_directed: usize,
    /// Broadcasts kept for repair.
    pub retained_broadcasts: usize,
    /// Every known peer: active first, then by peer id.
    pub peers: Vec<PeerStatus>,
}

/// The node's counters, with stable names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Datagrams handed to the node.
    pub datagrams_in: u64,
    /// Datagrams whose signature verified and that were acted upon.
    pub datagrams_accepted: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Accepted datagrams by kind (every kind listed).
    pub accepted_by_kind: BTreeMap<String, u64>,
    /// Sent datagrams by kind (every kind listed).
    pub sent_by_kind: BTreeMap<String, u64>,
    /// Messages handed to Slips.
    pub to_slips: u64,
    /// Broadcast copies and directed retransmissions sent.
    pub retransmissions: u64,
    /// Broadcasts resent because a peer asked.
    pub repairs: u64,
    /// Directed messages given up on.
    pub directed_expired: u64,
    /// Keys banned.
    pub bans: u64,
    /// Drops by reason (every reason listed).
    pub dropped: BTreeMap<String, u64>,
    /// Drops that are normal operation (own echoes, duplicates, messages
    /// for other peers).
    pub dropped_routine: u64,
    /// Every other drop.
    pub dropped_unusual: u64,
    /// Directed message first sent → acknowledged.
    pub ack_delay: DelaySnapshot,
}

/// A histogram of delays, milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelaySnapshot {
    /// Upper bounds of the buckets; a last, unbounded bucket follows.
    pub bounds_ms: Vec<u64>,
    /// Observations per bucket (not cumulative), `bounds_ms.len() + 1`.
    pub counts: Vec<u64>,
    /// Sum of the delays.
    pub sum_ms: u64,
    /// Number of delays.
    pub count: u64,
}

/// One row of the peer table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its libp2p peer id.
    pub peer_id: String,
    /// Last announced unicast address.
    pub address: Option<SocketAddrV4>,
    /// Whether that address is proven to reach it ([`address_proven`]).
    pub address_proven: bool,
    /// `active`, `inactive` or `banned`.
    pub state: String,
    /// First verified datagram, Unix ms.
    pub first_seen_ms: Millis,
    /// Last verified datagram, Unix ms.
    pub last_seen_ms: Millis,
    /// Its verified, fresh datagrams this run.
    pub datagrams_in: u64,
    /// Unicast datagrams sent to it this run.
    pub datagrams_out: u64,
    /// Its verified, fresh datagrams dropped this run for a reason that is
    /// not routine (rate, malformed body or payload, blame policy…).
    pub drops: u64,
    /// Reliability as Slips is told it (0 while banned).
    pub reliability: f64,
    /// Organisations it proved membership of (verified credentials of
    /// organisations we belong to or trust).
    pub organisations: Vec<String>,
}

impl Counters {
    /// Stable-named copy of [`Stats`].
    pub fn from_stats(s: &Stats) -> Self {
        let dropped = DropReason::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), s.dropped(*r)))
            .collect();
        let by_kind = |c: &super::stats::KindCounts| {
            KINDS
                .iter()
                .map(|k| (kind_name(*k).to_owned(), c.get(*k)))
                .collect()
        };
        Self {
            datagrams_in: s.datagrams_in,
            datagrams_accepted: s.datagrams_accepted,
            datagrams_out: s.datagrams_out,
            accepted_by_kind: by_kind(&s.accepted_by_kind),
            sent_by_kind: by_kind(&s.sent_by_kind),
            to_slips: s.to_slips,
            retransmissions: s.retransmissions,
            repairs: s.repairs,
            directed_expired: s.directed_expired,
            bans: s.bans,
            dropped,
            dropped_routine: s.dropped_total() - s.dropped_unusual(),
            dropped_unusual: s.dropped_unusual(),
            ack_delay: DelaySnapshot {
                bounds_ms: DELAY_BUCKETS_MS.to_vec(),
                counts: s.ack_delay.buckets.to_vec(),
                sum_ms: s.ack_delay.sum_ms,
                count: s.ack_delay.count,
            },
        }
    }
}

impl Node {
    /// The operator view at `now`. Pure; O(peers).
    pub fn status(&self, now: Now) -> StatusSnapshot {
        let t = now.mono;
        let mut peers: Vec<PeerStatus> = self
            .peers
            .iter()
            .map(|p| {
                let banned = self.bans.is_banned(p.key.as_bytes(), t);
                PeerStatus {
                    peer_id: p.peer_id.clone(),
                    address: p.addr,
                    address_proven: address_proven(p),
                    state: if banned {
                        "banned".to_owned()
                    } else {
                        p.state.as_str().to_owned()
                    },
                    first_seen_ms: p.first_seen_ms,
                    last_seen_ms: p.last_seen_ms,
                    datagrams_in: p.traffic.datagrams_in,
                    datagrams_out: p.traffic.datagrams_out,
                    drops: p.traffic.drops,
                    reliability: if banned {
                        0.0
                    } else {
                        p.reliability.value(now.wall, &self.settings.reliability)
                    },
                    organisations: self.org_ids_of(&p.key),
                }
            })
            .collect();
        let active = PeerState::Active.as_str();
        peers.sort_by(|a, b| (a.state != active, &a.peer_id).cmp(&(b.state != active, &b.peer_id)));
        StatusSnapshot {
            peer_id: self.peer_id.clone(),
            address: self.params.unicast,
            network: self.settings.network.clone(),
            instance: self.params.instance,
            started_ms: now.wall.saturating_sub(t.saturating_sub(self.started_ms)),
            now_ms: now.wall,
            counters: Counters::from_stats(&self.stats),
            pending_directed: self.outbox.pending_directed(),
            retained_broadcasts: self.outbox.retained_broadcasts(),
            peers,
        }
    }

    /// Counts a sent datagram by kind, and against the peer it went to.
    pub(super) fn count_sent(&mut self, to: Destination, kind: crate::wire::Kind) {
        self.stats.sent_by_kind.add(kind);
        let Some(addr) = to.unicast() else {
            return;
        };
        // Most unicast datagrams answer the peer being handled: look there
        // first, and scan the table only for the others.
        let current = self
            .handling_from
            .filter(|k| self.peers.get(k).is_some_and(|p| p.addr == Some(addr)));
        let key = current.or_else(|| {
            self.peers
                .iter()
                .find(|p| p.addr == Some(addr))
                .map(|p| p.key)
        });
        if let Some(p) = key.and_then(|k| self.peers.get_mut(&k)) {
            p.traffic.datagrams_out += 1;
        }
    }

    /// Counts a drop against the peer whose datagram is being handled,
    /// unless it is routine (a duplicate copy, a message for another peer)
    /// or not its doing: anyone can relay its signed multicast announce
    /// from another address (`address_mismatch`, see `Node::on_announce`).
    pub(super) fn count_peer_drop(&mut self, reason: DropReason) {
        if reason.is_routine() || reason == DropReason::AddressMismatch {
            return;
        }
        if let Some(key) = self.handling_from
            && let Some(p) = self.peers.get_mut(&key)
        {
            p.traffic.drops += 1;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::core::{Action, NodeParams, Via};
    use ed25519_dalek::SigningKey;

    const T0: Millis = 1_000_000;

    fn node(seed: u8, port: u16) -> Node {
        Node::new(
            &Config::default(),
            SigningKey::from_bytes(&[seed; 32]),
            NodeParams {
                unicast: SocketAddrV4::new([10, 0, 0, seed].into(), port),
                instance: u64::from(seed),
                rng_seed: u64::from(seed),
            },
            Vec::new(),
            Now::same(T0),
        )
    }

    /// The datagrams `from` wants to send, with the socket they arrive on.
    fn sent(from: &mut Node) -> Vec<(Via, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(a) = from.poll_action() {
            if let Action::Send { to, datagram } = a {
                let via = match to {
                    Destination::Multicast => Via::Group,
                    Destination::Unicast(_) | Destination::Probe(_) => Via::Unicast,
                };
                out.push((via, datagram));
            }
        }
        out
    }

    /// Delivers every pending datagram of `from` to `to`.
    fn deliver(from: &mut Node, to: &mut Node, now: Millis) {
        let src = std::net::SocketAddr::V4(from.params.unicast);
        for (via, d) in sent(from) {
            to.handle_datagram(Now::same(now), via, src, &d);
        }
    }

    /// Two nodes that discovered each other (address proven both ways).
    fn pair() -> (Node, Node, Millis) {
        let (mut a, mut b) = (node(1, 4001), node(2, 4002));
        let mut now = T0;
        for _ in 0..4 {
            now += 1_000;
            a.handle_timeout(Now::same(now));
            b.handle_timeout(Now::same(now));
            for _ in 0..3 {
                deliver(&mut a, &mut b, now);
                deliver(&mut b, &mut a, now);
            }
        }
        (a, b, now)
    }

    #[test]
    fn status_lists_a_discovered_peer_with_its_traffic() {
        let (a, b, now) = pair();
        let s = a.status(Now::same(now));
        assert_eq!(s.peer_id, a.peer_id());
        assert_eq!(s.address, SocketAddrV4::new([10, 0, 0, 1].into(), 4001));
        assert_eq!(s.peers.len(), 1);
        let p = &s.peers[0];
        assert_eq!(p.peer_id, b.peer_id());
        assert_eq!(p.state, "active");
        assert_eq!(
            p.address,
            Some(SocketAddrV4::new([10, 0, 0, 2].into(), 4002))
        );
        assert!(p.address_proven, "proven by its response");
        assert!(p.datagrams_in >= 3, "{p:?}");
        assert!(p.organisations.is_empty());
        assert!(s.counters.accepted_by_kind["announce"] >= 1);
        assert!(s.counters.accepted_by_kind["response"] >= 1);
        assert_eq!(
            s.counters.sent_by_kind.values().sum::<u64>(),
            s.counters.datagrams_out
        );
        assert_eq!(s.counters.dropped.len(), DropReason::ALL.len());
        assert_eq!(s.started_ms, T0, "uptime from the monotonic start");
    }

    #[test]
    fn a_directed_message_counts_out_and_its_ack_delay() {
        let (mut a, mut b, mut now) = pair();
        let out_before = a.status(Now::same(now)).peers[0].datagrams_out;
        let report = crate::core::tests::payload("report", "198.51.100.7");
        a.handle_slips(
            Now::same(now),
            report,
            crate::slips::Recipient::Peer(b.peer_id().to_owned()),
        );
        deliver(&mut a, &mut b, now);
        now += 7;
        deliver(&mut b, &mut a, now);
        let s = a.status(Now::same(now));
        assert_eq!(s.peers[0].datagrams_out, out_before + 1);
        assert_eq!(s.counters.ack_delay.count, 1);
        assert_eq!(s.counters.ack_delay.sum_ms, 7);
        assert_eq!(s.pending_directed, 0);
    }

    #[test]
    fn a_refused_blame_counts_against_its_sender() {
        let (mut a, mut b, now) = pair();
        let blame = crate::core::tests::payload("blame", "198.51.100.8");
        b.handle_slips(Now::same(now), blame, crate::slips::Recipient::All);
        deliver(&mut b, &mut a, now);
        let s = a.status(Now::same(now));
        assert_eq!(s.counters.dropped["blame_policy"], 1);
        assert_eq!(s.peers[0].drops, 1, "{:?}", s.peers[0]);
    }

    #[test]
    fn drops_of_a_verified_peer_count_against_it() {
        let (mut a, mut b, now) = pair();
        let before = a.status(Now::same(now));
        let later = now + 40_000;
        b.handle_timeout(Now::same(later));
        let src = std::net::SocketAddr::V4(b.params.unicast);
        let out = sent(&mut b);
        assert!(!out.is_empty());
        for (via, d) in &out {
            a.handle_datagram(Now::same(later), *via, src, d);
        }
        // The same datagrams again are replays: dropped before they count.
        for (via, d) in &out {
            a.handle_datagram(Now::same(later), *via, src, d);
        }
        let s = a.status(Now::same(later));
        let p = &s.peers[0];
        assert_eq!(
            p.datagrams_in - before.peers[0].datagrams_in,
            out.len() as u64
        );
        assert_eq!(p.drops, 0, "a replay is not held against the peer");
        assert_eq!(
            s.counters.dropped["replay"] - before.counters.dropped["replay"],
            out.len() as u64
        );
    }
}
