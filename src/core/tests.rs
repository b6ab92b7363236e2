//! The node on an in-memory LAN with a simulated clock.

use super::*;
use crate::slips::Recipient;
use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::Ipv4Addr;

pub(crate) const T0: Millis = 1_800_000_000_000;

/// Faults applied to every datagram on the simulated LAN.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Faults {
    /// Probability a datagram (per receiver) is lost.
    pub(crate) loss: f64,
    /// Probability it is delivered twice.
    pub(crate) duplicate: f64,
    /// Delivery delay range (reordering follows from random delays).
    pub(crate) delay_ms: (Millis, Millis),
}

pub(crate) struct SimNode {
    pub(crate) node: Node,
    pub(crate) addr: SocketAddrV4,
    pub(crate) inbox: Vec<ToSlips>,
    pub(crate) saved: Option<PeerList>,
    /// Revocation lists the node asked to keep (org).
    pub(crate) org_lists: Vec<(String, Vec<u8>)>,
    pub(crate) up: bool,
    /// This host's wall clock minus the LAN's true time (a stepped or
    /// skewed system clock); its monotonic clock is always the true time.
    pub(crate) wall_skew: i64,
}

impl SimNode {
    /// The node's clocks when the LAN's true time is `t`.
    pub(crate) fn clock(&self, t: Millis) -> Now {
        Now {
            mono: t,
            wall: t.saturating_add_signed(self.wall_skew),
        }
    }
}

type InFlight = Reverse<(Millis, u64, usize, SocketAddrV4, Via, Vec<u8>)>;

/// A LAN of nodes exchanging datagrams through an event queue.
pub(crate) struct Sim {
    pub(crate) now: Millis,
    pub(crate) nodes: Vec<SimNode>,
    pub(crate) faults: Faults,
    pub(crate) cut: HashSet<usize>,
    rng: StdRng,
    queue: BinaryHeap<InFlight>,
    counter: u64,
    pub(crate) sent: u64,
    /// Unicast datagrams to addresses of no node (an attacker's or a
    /// victim's), in order.
    pub(crate) outside: Vec<(SocketAddrV4, Vec<u8>)>,
    /// Node whose incoming datagrams are recorded in `tapped` (a capture
    /// an attacker could make on the LAN).
    pub(crate) tap: Option<usize>,
    pub(crate) tapped: Vec<(SocketAddrV4, Via, Vec<u8>)>,
}

pub(crate) fn config() -> Config {
    Config::default()
}

pub(crate) fn addr_of(i: usize) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i as u8 + 1), 4001)
}

pub(crate) fn key_of(i: usize) -> SigningKey {
    SigningKey::from_bytes(&[i as u8 + 1; 32])
}

impl Sim {
    pub(crate) fn new(n: usize, cfg: &Config) -> Self {
        let nodes = (0..n)
            .map(|i| SimNode {
                node: Node::new(
                    cfg,
                    key_of(i),
                    NodeParams {
                        unicast: addr_of(i),
                        instance: 100 + i as u64,
                        rng_seed: i as u64,
                    },
                    Vec::new(),
                    Now::same(T0),
                ),
                addr: addr_of(i),
                inbox: Vec::new(),
                saved: None,
                org_lists: Vec::new(),
                up: true,
                wall_skew: 0,
            })
            .collect();
        Self {
            now: T0,
            nodes,
            faults: Faults::default(),
            cut: HashSet::new(),
            rng: StdRng::seed_from_u64(42),
            queue: BinaryHeap::new(),
            counter: 0,
            sent: 0,
            outside: Vec::new(),
            tap: None,
            tapped: Vec::new(),
        }
    }

    /// Replaces node `i` by a fresh process (new instance) that loaded
    /// `stored` peers.
    pub(crate) fn restart(
        &mut self,
        i: usize,
        cfg: &Config,
        stored: Vec<PeerRecord>,
        instance: u64,
    ) {
        self.nodes[i].node = Node::new(
            cfg,
            key_of(i),
            NodeParams {
                unicast: addr_of(i),
                instance,
                rng_seed: instance,
            },
            stored,
            self.nodes[i].clock(self.now),
        );
        self.nodes[i].up = true;
    }

    fn enqueue(&mut self, to: usize, from: SocketAddrV4, via: Via, data: &[u8]) {
        if self.cut.contains(&to) {
            return;
        }
        if self.rng.random_bool(self.faults.loss.clamp(0.0, 1.0)) {
            return;
        }
        let copies = if self.rng.random_bool(self.faults.duplicate.clamp(0.0, 1.0)) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let (lo, hi) = self.faults.delay_ms;
            let delay = if hi > lo {
                self.rng.random_range(lo..=hi)
            } else {
                lo
            };
            self.counter += 1;
            self.queue.push(Reverse((
                self.now + delay,
                self.counter,
                to,
                from,
                via,
                data.to_vec(),
            )));
        }
    }

    pub(crate) fn drain(&mut self, i: usize) {
        while let Some(a) = self.nodes[i].node.poll_action() {
            match a {
                Action::Send { to, datagram } => {
                    self.sent += 1;
                    if self.cut.contains(&i) {
                        continue;
                    }
                    let from = self.nodes[i].addr;
                    match to {
                        Destination::Multicast => {
                            for j in 0..self.nodes.len() {
                                if j != i {
                                    self.enqueue(j, from, Via::Group, &datagram);
                                }
                            }
                        }
                        Destination::Unicast(addr) | Destination::Probe(addr) => {
                            if let Some(j) = self.nodes.iter().position(|n| n.addr == addr) {
                                self.enqueue(j, from, Via::Unicast, &datagram);
                            } else {
                                self.outside.push((addr, datagram));
                            }
                        }
                    }
                }
                Action::ToSlips(m) => self.nodes[i].inbox.push(m),
                Action::SavePeers(f) => self.nodes[i].saved = Some(f),
                Action::SaveOrgList { org, list } => self.nodes[i].org_lists.push((org, list)),
            }
        }
    }

    /// Runs the LAN until `now + ms`.
    pub(crate) fn run_for(&mut self, ms: Millis) {
        let end = self.now + ms;
        loop {
            for i in 0..self.nodes.len() {
                self.drain(i);
            }
            let next_timer = self
                .nodes
                .iter()
                .filter(|n| n.up)
                .map(|n| n.node.poll_timeout())
                .min()
                .unwrap_or(Millis::MAX);
            let next_packet = self.queue.peek().map_or(Millis::MAX, |Reverse((t, ..))| *t);
            let next = next_timer.min(next_packet).max(self.now);
            if next > end {
                self.now = end;
                return;
            }
            self.now = next;
            while let Some(Reverse((t, ..))) = self.queue.peek() {
                if *t > self.now {
                    break;
                }
                let Some(Reverse((_, _, to, from, via, data))) = self.queue.pop() else {
                    break;
                };
                if self.tap == Some(to) {
                    self.tapped.push((from, via, data.clone()));
                }
                if self.nodes[to].up {
                    let clock = self.nodes[to].clock(self.now);
                    self.nodes[to]
                        .node
                        .handle_datagram(clock, via, SocketAddr::V4(from), &data);
                    self.drain(to);
                }
            }
            for i in 0..self.nodes.len() {
                if self.nodes[i].up && self.nodes[i].node.poll_timeout() <= self.now {
                    let clock = self.nodes[i].clock(self.now);
                    self.nodes[i].node.handle_timeout(clock);
                    self.drain(i);
                }
            }
        }
    }

    /// Hands node `i` a datagram now, as if from `src` on socket `via`.
    pub(crate) fn inject(&mut self, i: usize, via: Via, src: SocketAddrV4, data: &[u8]) {
        let clock = self.nodes[i].clock(self.now);
        self.nodes[i]
            .node
            .handle_datagram(clock, via, SocketAddr::V4(src), data);
        self.drain(i);
    }

    /// Bytes of the unicast datagrams sent to `addr` so far.
    pub(crate) fn bytes_to(&self, addr: SocketAddrV4) -> usize {
        self.outside
            .iter()
            .filter(|(a, _)| *a == addr)
            .map(|(_, d)| d.len())
            .sum()
    }

    pub(crate) fn active_peers(&self, i: usize) -> usize {
        self.nodes[i]
            .node
            .peers()
            .iter()
            .filter(|p| p.state == PeerState::Active)
            .count()
    }

    pub(crate) fn peer_id(&self, i: usize) -> String {
        self.nodes[i].node.peer_id().to_owned()
    }

    pub(crate) fn go_data(&self, i: usize) -> Vec<(String, String)> {
        self.nodes[i]
            .inbox
            .iter()
            .filter_map(|m| match m {
                ToSlips::GoData {
                    reporter, message, ..
                } => Some((reporter.clone(), message.clone())),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn peer_updates(&self, i: usize) -> usize {
        self.nodes[i]
            .inbox
            .iter()
            .filter(|m| matches!(m, ToSlips::PeerUpdate { .. }))
            .count()
    }
}

/// A key outside the simulated LAN's nodes, driven by the test: an
/// attacker, or a victim whose address is spoofed.
pub(crate) struct Rogue {
    pub(crate) key: SigningKey,
    pub(crate) addr: SocketAddrV4,
    pub(crate) inst: u64,
    seq: u64,
}

impl Rogue {
    pub(crate) fn new(seed: u32, addr: SocketAddrV4) -> Self {
        let mut s = [0u8; 32];
        s[..4].copy_from_slice(&seed.to_le_bytes());
        s[31] = 0x77;
        Self {
            key: SigningKey::from_bytes(&s),
            addr,
            inst: u64::from(seed) + 1,
            seq: 0,
        }
    }

    pub(crate) fn peer_id(&self) -> String {
        peer_id_of(&self.key.verifying_key())
    }

    /// A datagram of ours, stamped at `now`.
    pub(crate) fn seal<B: serde::Serialize>(
        &mut self,
        now: Millis,
        kind: Kind,
        body: &B,
    ) -> Vec<u8> {
        self.seq += 1;
        let stamp = Stamp {
            instance: self.inst,
            seq: self.seq,
            ts_ms: now,
        };
        wire::seal(&self.key, "slips", stamp, kind, body).unwrap()
    }

    /// An announce of `addr`, padded as a pigeon pads it.
    pub(crate) fn announce(&mut self, now: Millis) -> Vec<u8> {
        let mut body = AnnounceBody {
            ip: *self.addr.ip(),
            port: self.addr.port(),
            interval_ms: 30_000,
            last_bcast: 0,
            pad: String::new(),
        };
        let stamp = Stamp {
            instance: self.inst,
            seq: self.seq + 1,
            ts_ms: now,
        };
        body.pad = wire::padding(
            &self.key,
            "slips",
            stamp,
            Kind::Announce,
            &body,
            wire::MIN_ANNOUNCE_LEN,
        )
        .unwrap();
        self.seal(now, Kind::Announce, &body)
    }

    /// The latest challenge node traffic sent to our address, if any.
    pub(crate) fn last_challenge(&self, sim: &Sim) -> Option<String> {
        sim.outside
            .iter()
            .rev()
            .filter(|(a, _)| *a == self.addr)
            .find_map(|(_, d)| {
                let v = Unverified::parse(d, "slips").ok()?.verify("slips").ok()?;
                (v.kind == Kind::Challenge)
                    .then(|| v.body::<ChallengeBody>().ok().map(|b| b.nonce))?
            })
    }

    /// Announces to node `i` and answers its challenge: afterwards `i`
    /// knows us at our (proven) address. Returns whether it worked.
    pub(crate) fn join(&mut self, sim: &mut Sim, i: usize) -> bool {
        let a = self.announce(sim.now);
        sim.inject(i, Via::Group, self.addr, &a);
        let Some(nonce) = self.last_challenge(sim) else {
            return false;
        };
        let r = self.seal(
            sim.now,
            Kind::Response,
            &ResponseBody {
                nonce,
                next_bcast: 1,
            },
        );
        sim.inject(i, Via::Unicast, self.addr, &r);
        sim.nodes[i]
            .node
            .peers()
            .is_proven_at(&self.key.verifying_key(), self.addr)
    }

    /// A broadcast `data` datagram with `id` and `payload`.
    pub(crate) fn broadcast(&mut self, now: Millis, id: u64, payload: String) -> Vec<u8> {
        self.seal(
            now,
            Kind::Data,
            &DataBody {
                id,
                to: None,
                to_inst: None,
                payload,
            },
        )
    }
}

pub(crate) fn payload(kind: &str, ip: &str) -> String {
    let json = match kind {
        "request" => format!(
            r#"{{"message_type": "request", "key_type": "ip", "key": "{ip}", "evaluation_type": "score_confidence"}}"#
        ),
        other => format!(
            r#"{{"message_type": "{other}", "key_type": "ip", "key": "{ip}", "evaluation_type": "score_confidence", "evaluation": {{"score": 0.8, "confidence": 0.9}}}}"#
        ),
    };
    BASE64_STANDARD.encode(json)
}

#[test]
fn five_peers_discover_each_other_quickly() {
    let mut sim = Sim::new(5, &config());
    sim.run_for(3_000);
    for i in 0..5 {
        assert_eq!(sim.active_peers(i), 4, "node {i}");
        // Slips heard of every peer, with its address.
        let with_ip = sim.nodes[i]
            .inbox
            .iter()
            .filter(|m| {
                matches!(
                    m,
                    ToSlips::PeerUpdate {
                        ip: Some(_),
                        reliability: Some(_),
                        ..
                    }
                )
            })
            .count();
        assert!(with_ip >= 4, "node {i}: {with_ip}");
    }
}

#[test]
fn broadcast_reaches_every_other_peer_once() {
    let mut sim = Sim::new(6, &config());
    sim.run_for(3_000);
    let p = payload("request", "1.2.3.4");
    sim.nodes[0]
        .node
        .handle_slips(Now::same(sim.now), p.clone(), Recipient::All);
    sim.run_for(100);
    let sender = sim.peer_id(0);
    assert!(sim.go_data(0).is_empty(), "no echo to the sender");
    for i in 1..6 {
        assert_eq!(
            sim.go_data(i),
            vec![(sender.clone(), p.clone())],
            "node {i}"
        );
    }
}

#[test]
fn directed_message_reaches_only_its_target() {
    let mut sim = Sim::new(5, &config());
    sim.run_for(3_000);
    let p = payload("report", "1.2.3.4");
    let target = sim.peer_id(3);
    sim.nodes[1]
        .node
        .handle_slips(Now::same(sim.now), p.clone(), Recipient::Peer(target));
    sim.run_for(100);
    for i in 0..5 {
        let got = sim.go_data(i);
        if i == 3 {
            assert_eq!(got, vec![(sim.peer_id(1), p.clone())]);
        } else {
            assert!(got.is_empty(), "node {i} got {got:?}");
        }
    }
}

#[test]
fn unknown_recipient_is_dropped_and_counted() {
    let mut sim = Sim::new(2, &config());
    sim.run_for(3_000);
    sim.nodes[0].node.handle_slips(
        Now::same(sim.now),
        payload("report", "1.2.3.4"),
        Recipient::Peer("12D3KooWnobody".into()),
    );
    assert_eq!(
        sim.nodes[0]
            .node
            .stats()
            .dropped(DropReason::UnknownRecipient),
        1
    );
}

#[test]
fn silent_peer_becomes_inactive_and_goodbye_is_immediate() {
    let cfg = config();
    let mut sim = Sim::new(3, &cfg);
    sim.run_for(3_000);
    sim.nodes[2].up = false; // crashed: no goodbye
    sim.run_for(cfg.discovery.announce_interval_ms * 4);
    assert_eq!(sim.active_peers(0), 1);
    sim.nodes[1].node.shutdown(Now::same(sim.now));
    sim.run_for(50);
    sim.nodes[1].up = false;
    assert_eq!(sim.active_peers(0), 0);
}

#[test]
fn restarted_peer_is_recognised_and_remembers_its_peers() {
    let cfg = config();
    let mut sim = Sim::new(3, &cfg);
    sim.run_for(3_000);
    sim.nodes[0].node.shutdown(Now::same(sim.now));
    sim.drain(0);
    let saved = sim.nodes[0]
        .saved
        .clone()
        .expect("peer list saved at shutdown");
    assert_eq!(saved.peers.len(), 2);
    sim.nodes[0].up = false;
    sim.run_for(60_000);
    sim.restart(0, &cfg, saved.peers, 999);
    assert_eq!(sim.nodes[0].node.peers().len(), 2, "loaded, inactive");
    assert_eq!(sim.active_peers(0), 0);
    sim.run_for(3_000);
    assert_eq!(sim.active_peers(0), 2);
    assert_eq!(sim.active_peers(1), 2, "others accept the new instance");
}

#[test]
fn invalid_payload_is_dropped_and_lowers_reliability() {
    let mut sim = Sim::new(2, &config());
    sim.run_for(3_000);
    let key1 = key_of(1).verifying_key();
    let before = {
        let p = sim.nodes[0].node.peers().get(&key1).unwrap();
        sim.nodes[0].node.reliability_of(p, sim.now)
    };
    for bad in [
        BASE64_STANDARD.encode("[1]"),
        "ü".to_string(),
        BASE64_STANDARD.encode("1"),
    ] {
        sim.nodes[1]
            .node
            .handle_slips(Now::same(sim.now), bad, Recipient::All);
    }
    sim.run_for(100);
    assert!(sim.go_data(0).is_empty());
    assert_eq!(sim.nodes[0].node.stats().dropped(DropReason::BadPayload), 3);
    let p = sim.nodes[0].node.peers().get(&key1).unwrap();
    let after = sim.nodes[0].node.reliability_of(p, sim.now);
    assert!(after < before - 0.2, "{before} -> {after}");
    // And Slips was told about the drop in reliability, once the gap
    // between two updates of one peer has passed.
    sim.run_for(super::PEER_UPDATE_GAP_MS);
    let last = sim.nodes[0].inbox.iter().rev().find_map(|m| match m {
        ToSlips::PeerUpdate { reliability, .. } => *reliability,
        _ => None,
    });
    assert!(last.is_some_and(|r| (r - after).abs() < 0.1));
}

#[test]
fn blames_follow_the_policy() {
    let mut cfg = config();
    let mut sim = Sim::new(2, &cfg);
    sim.run_for(3_000);
    sim.nodes[1].node.handle_slips(
        Now::same(sim.now),
        payload("blame", "6.6.6.6"),
        Recipient::All,
    );
    sim.run_for(100);
    assert!(sim.go_data(0).is_empty(), "dropped by default");
    assert_eq!(
        sim.nodes[0].node.stats().dropped(DropReason::BlamePolicy),
        1
    );

    cfg.slips.blames = BlamePolicy::Allowlist;
    let mut sim = Sim::new(3, &cfg);
    let trusted = sim.peer_id(1);
    cfg.slips.blame_allowlist = vec![trusted.clone()];
    sim.restart(0, &cfg, Vec::new(), 7);
    sim.run_for(3_000);
    for i in 1..3 {
        sim.nodes[i].node.handle_slips(
            Now::same(sim.now),
            payload("blame", "6.6.6.6"),
            Recipient::All,
        );
    }
    sim.run_for(100);
    let got: Vec<_> = sim.go_data(0).into_iter().map(|(r, _)| r).collect();
    assert_eq!(got, vec![trusted]);
}

#[test]
fn replayed_stale_and_future_datagrams_are_dropped() {
    let mut sim = Sim::new(2, &config());
    sim.run_for(3_000);
    let now = sim.now;
    let key = key_of(1);
    let body = DataBody {
        id: 77,
        to: None,
        to_inst: None,
        payload: payload("request", "1.2.3.4"),
    };
    let src = SocketAddr::V4(addr_of(1));
    let mk = |seq: u64, ts: u64| {
        wire::seal(
            &key,
            "slips",
            Stamp {
                instance: 101,
                seq: 1000 + seq,
                ts_ms: ts,
            },
            Kind::Data,
            &body,
        )
        .unwrap()
    };
    let n = &mut sim.nodes[0].node;
    let fresh = mk(1, now);
    n.handle_datagram(Now::same(now), Via::Group, src, &fresh);
    n.handle_datagram(Now::same(now), Via::Group, src, &fresh);
    n.handle_datagram(Now::same(now), Via::Group, src, &mk(2, now - 31_000));
    n.handle_datagram(Now::same(now), Via::Group, src, &mk(3, now + 31_000));
    // Same message id, new sequence number (a retransmission): delivered once.
    n.handle_datagram(Now::same(now), Via::Group, src, &mk(4, now));
    let s = n.stats();
    assert_eq!(s.dropped(DropReason::Replay), 1);
    assert_eq!(s.dropped(DropReason::Stale), 1);
    assert_eq!(s.dropped(DropReason::Future), 1);
    assert_eq!(s.dropped(DropReason::Duplicate), 1);
    sim.drain(0);
    assert_eq!(sim.go_data(0).len(), 1);
}

#[test]
fn forged_and_foreign_datagrams_change_nothing() {
    let mut sim = Sim::new(2, &config());
    sim.run_for(3_000);
    let now = sim.now;
    let attacker = SigningKey::from_bytes(&[200; 32]);
    let announce = AnnounceBody {
        ip: Ipv4Addr::new(10, 0, 0, 99),
        port: 1,
        interval_ms: 30_000,
        last_bcast: 0,
        pad: String::new(),
    };
    let stamp = Stamp {
        instance: 1,
        seq: 1,
        ts_ms: now,
    };
    let sealed = wire::seal(&attacker, "slips", stamp, Kind::Announce, &announce).unwrap();
    // Same length, one signed byte changed: the signature no longer matches.
    let forged = String::from_utf8(sealed)
        .unwrap()
        .replace("\"port\":1,", "\"port\":2,")
        .into_bytes();
    let other_net = wire::seal(&attacker, "other", stamp, Kind::Announce, &announce).unwrap();
    let n = &mut sim.nodes[0].node;
    let peers_before = n.peers().len();
    n.handle_datagram(
        Now::same(now),
        Via::Group,
        "10.0.0.99:1".parse().unwrap(),
        &forged,
    );
    n.handle_datagram(
        Now::same(now),
        Via::Group,
        "10.0.0.99:1".parse().unwrap(),
        &other_net,
    );
    n.handle_datagram(
        Now::same(now),
        Via::Group,
        "10.0.0.99:1".parse().unwrap(),
        b"garbage",
    );
    assert_eq!(n.peers().len(), peers_before);
    assert!(n.stats().datagrams_accepted > 0);
    assert_eq!(n.stats().dropped(DropReason::BadSignature), 1);
    assert_eq!(n.stats().dropped(DropReason::WrongNetwork), 1);
    assert_eq!(n.stats().dropped(DropReason::BadFraming), 1);
}

#[test]
fn peer_updates_are_not_sent_on_every_announcement() {
    let mut sim = Sim::new(3, &config());
    sim.run_for(3_600_000); // one hour, ~120 announcements per peer
    for i in 0..3 {
        let n = sim.peer_updates(i);
        assert!(n <= 10, "node {i} sent {n} peer updates");
        assert_eq!(sim.active_peers(i), 2);
    }
}

#[test]
fn idle_traffic_is_small() {
    let cfg = config();
    let mut sim = Sim::new(5, &cfg);
    sim.run_for(10 * 60_000);
    // ~20 announcements in 10 minutes plus start-up and newcomer answers.
    let per_node = sim.sent as f64 / 5.0;
    assert!(per_node < 40.0, "{per_node} datagrams per node in 10 min");
}

#[test]
fn same_seed_same_run() {
    let trace = |seed_offset: u64| {
        let mut sim = Sim::new(4, &config());
        for (i, n) in sim.nodes.iter_mut().enumerate() {
            n.node = Node::new(
                &config(),
                key_of(i),
                NodeParams {
                    unicast: addr_of(i),
                    instance: 1 + i as u64,
                    rng_seed: seed_offset + i as u64,
                },
                Vec::new(),
                Now::same(T0),
            );
        }
        sim.run_for(120_000);
        (
            sim.sent,
            sim.nodes.iter().map(|n| n.inbox.len()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(trace(1), trace(1));
}

#[test]
fn peer_table_is_bounded_and_keeps_known_peers() {
    let mut cfg = config();
    cfg.security.max_peers = 10;
    let mut sim = Sim::new(3, &cfg);
    sim.run_for(3_000);
    // 500 fresh keys announce from 250 addresses and never answer the
    // challenge: none enters the table.
    for k in 0..500u32 {
        let addr = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, (k % 250) as u8 + 1), 1);
        let a = Rogue::new(k, addr).announce(sim.now);
        sim.inject(0, Via::Group, addr, &a);
    }
    assert_eq!(sim.nodes[0].node.peers().len(), 2);
    // (Time for the budget of first-contact challenges to refill.)
    sim.run_for(2_000);
    // Keys that do prove their address fill the table up to its bound,
    // and at most `max_keys_per_ip` of one host's.
    let one_host = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 1), 1);
    let joined = (0..10u32)
        .filter(|k| {
            let addr = SocketAddrV4::new(*one_host.ip(), 1000 + *k as u16);
            Rogue::new(1000 + k, addr).join(&mut sim, 0)
        })
        .count();
    assert_eq!(joined, cfg.security.max_keys_per_ip);
    for k in 0..20u32 {
        let addr = SocketAddrV4::new(Ipv4Addr::new(10, 0, 3, k as u8 + 1), 1);
        Rogue::new(2000 + k, addr).join(&mut sim, 0);
    }
    let n = &sim.nodes[0].node;
    assert!(n.peers().len() <= 10);
    for i in 1..3 {
        assert!(
            n.peers().get(&key_of(i).verifying_key()).is_some(),
            "peer {i} kept"
        );
    }
    assert!(n.stats().dropped(DropReason::TableFull) > 0);
}

/// Sends `count` distinct broadcasts from node 0, one every `gap` ms, and
/// returns (delivered exactly once, expected, duplicates) over all others.
fn broadcast_delivery(sim: &mut Sim, count: usize, gap: Millis) -> (usize, usize, usize) {
    let sent: Vec<String> = (0..count)
        .map(|i| payload("report", &format!("10.1.{}.{}", i / 250, i % 250 + 1)))
        .collect();
    for p in &sent {
        sim.nodes[0]
            .node
            .handle_slips(Now::same(sim.now), p.clone(), Recipient::All);
        sim.run_for(gap);
    }
    sim.run_for(20_000);
    let mut once = 0;
    let mut dups = 0;
    for i in 1..sim.nodes.len() {
        let got = sim.go_data(i);
        for p in &sent {
            match got.iter().filter(|(_, m)| m == p).count() {
                0 => {}
                1 => once += 1,
                n => {
                    once += 1;
                    dups += n - 1;
                }
            }
        }
    }
    (once, count * (sim.nodes.len() - 1), dups)
}

#[test]
fn broadcasts_arrive_exactly_once_at_10_percent_loss() {
    let mut sim = Sim::new(5, &config());
    sim.faults.loss = 0.10;
    sim.run_for(5_000);
    let (once, expected, dups) = broadcast_delivery(&mut sim, 200, 50);
    assert_eq!(dups, 0);
    assert!(
        once as f64 >= 0.999 * expected as f64,
        "{once}/{expected} delivered"
    );
}

#[test]
fn broadcasts_arrive_exactly_once_at_30_percent_loss() {
    let mut sim = Sim::new(5, &config());
    sim.faults.loss = 0.30;
    sim.run_for(10_000);
    let (once, expected, dups) = broadcast_delivery(&mut sim, 200, 50);
    assert_eq!(dups, 0);
    assert!(
        once as f64 >= 0.99 * expected as f64,
        "{once}/{expected} delivered"
    );
}

#[test]
fn delay_reordering_and_duplication_never_duplicate_a_delivery() {
    let mut sim = Sim::new(5, &config());
    sim.faults = Faults {
        loss: 0.05,
        duplicate: 0.3,
        delay_ms: (0, 80),
    };
    sim.run_for(5_000);
    let (once, expected, dups) = broadcast_delivery(&mut sim, 100, 10);
    assert_eq!(dups, 0);
    assert_eq!(once, expected);
}

#[test]
fn answers_arrive_once_within_slips_wait_despite_loss() {
    let mut sim = Sim::new(4, &config());
    sim.faults = Faults {
        loss: 0.30,
        duplicate: 0.1,
        delay_ms: (0, 20),
    };
    sim.run_for(10_000);
    let asker = sim.peer_id(0);
    let mut late_or_lost = 0;
    for i in 0..100 {
        let p = payload("report", &format!("10.2.0.{}", i + 1));
        let before = sim.go_data(0).len();
        let responder = 1 + i % 3;
        sim.nodes[responder].node.handle_slips(
            Now::same(sim.now),
            p.clone(),
            Recipient::Peer(asker.clone()),
        );
        sim.run_for(2_000); // Slips waits 2 s for answers.
        let got: Vec<_> = sim.go_data(0)[before..].to_vec();
        assert!(got.len() <= 1, "answer {i} delivered {} times", got.len());
        if got.len() != 1 {
            late_or_lost += 1;
        }
        for j in 1..4 {
            assert!(
                !sim.go_data(j).iter().any(|(_, m)| *m == p),
                "answer {i} leaked to node {j}"
            );
        }
    }
    // Up to 11 transmissions fit in the 1.5 s deadline (gaps capped at
    // 150 ms): an answer is lost only if all of them are (0.3¹¹).
    assert!(
        late_or_lost == 0,
        "{late_or_lost} of 100 answers late or lost"
    );
}

#[test]
fn partitioned_peer_heals_within_one_announce_interval() {
    let cfg = config();
    let mut sim = Sim::new(3, &cfg);
    sim.run_for(5_000);
    sim.cut.insert(2);
    let p = payload("report", "10.3.0.1");
    sim.nodes[0]
        .node
        .handle_slips(Now::same(sim.now), p.clone(), Recipient::All);
    sim.run_for(60_000);
    assert!(sim.go_data(2).is_empty());
    sim.cut.clear();
    // Within one (jittered) announce interval everyone is active again and
    // the missed broadcast was repaired.
    sim.run_for(cfg.discovery.announce_interval_ms * 6 / 5 + 1_000);
    assert_eq!(sim.active_peers(2), 2);
    assert_eq!(sim.active_peers(0), 2);
    assert_eq!(sim.go_data(2), vec![(sim.peer_id(0), p)]);
}

/// Slips 1.1.21 keeps the first reliability it stores for a peer forever:
/// a peer Slips never heard of is introduced at no more than the prior.
#[test]
fn first_reliability_told_to_slips_is_at_most_the_prior() {
    let cfg = config();
    let mut sim = Sim::new(3, &cfg);
    sim.run_for(3_000);
    for i in 0..3 {
        let firsts: Vec<f64> = sim.nodes[i]
            .inbox
            .iter()
            .filter_map(|m| match m {
                ToSlips::PeerUpdate { reliability, .. } => *reliability,
                _ => None,
            })
            .take(2)
            .collect();
        assert_eq!(firsts.len(), 2, "node {i}");
        assert!(
            firsts.iter().all(|r| *r <= cfg.reliability.prior),
            "node {i}: {firsts:?}"
        );
    }
}

/// A stream longer than the broadcast retention (350 reports, one every
/// 50 ms, within the `go_data` budget of a peer; 256 retained) at 30 %
/// loss, with duplication and reordering: no report reaches Slips twice,
/// and at least 99 % arrive.
#[test]
fn stream_longer_than_the_retention_at_30_percent_loss_arrives_exactly_once() {
    let mut sim = Sim::new(4, &config());
    sim.faults = Faults {
        loss: 0.30,
        duplicate: 0.1,
        delay_ms: (0, 20),
    };
    sim.run_for(10_000);
    let (once, expected, dups) = broadcast_delivery(&mut sim, 350, 50);
    assert_eq!(dups, 0);
    assert!(
        once as f64 >= 0.99 * expected as f64,
        "{once}/{expected} delivered"
    );
}

/// When each of `payloads` first reached node `i`'s Slips, noted while the
/// LAN runs until `until`, step by step.
fn run_noting_arrivals(
    sim: &mut Sim,
    until: Millis,
    payloads: &[String],
    arrivals: &mut HashMap<(usize, String), Millis>,
) {
    while sim.now < until {
        sim.run_for(100.min(until - sim.now));
        for i in 0..sim.nodes.len() {
            for (_, m) in sim.go_data(i) {
                if payloads.contains(&m) {
                    arrivals.entry((i, m)).or_insert(sim.now);
                }
            }
        }
    }
}

/// The long partition of `tests/integration/loss.rs` (its figure run
/// `long_partition_figures`) on the simulated LAN: node 3 cut off for
/// 60 s; node 0 reports once a second for the first 45 s, then falls
/// quiet, so its digests are over before the heal and only its
/// announcements can tell node 3 what it missed; node 3 reports every 2 s
/// throughout. Nothing crosses the cut. After the heal node 3's fresh
/// report reaches the others and a directed message reaches node 3 within
/// one announce interval, and every report of the cut reaches the other
/// side exactly once, each within its retention.
#[test]
fn long_partition_heals_both_ways_exactly_once() {
    let cfg = config();
    let cut = 3;
    let mut sim = Sim::new(4, &cfg);
    sim.run_for(5_000);
    sim.cut.insert(cut);
    // (payload, publish time), per origin
    let mut from0: Vec<(String, Millis)> = Vec::new();
    let mut from_cut: Vec<(String, Millis)> = Vec::new();
    for k in 0..60u32 {
        if k < 45 {
            let p = payload("report", &format!("10.3.0.{}", k + 1));
            sim.nodes[0]
                .node
                .handle_slips(Now::same(sim.now), p.clone(), Recipient::All);
            from0.push((p, sim.now));
        }
        if k % 2 == 0 {
            let p = payload("report", &format!("10.4.0.{}", k + 1));
            sim.nodes[cut]
                .node
                .handle_slips(Now::same(sim.now), p.clone(), Recipient::All);
            from_cut.push((p, sim.now));
        }
        sim.run_for(1_000);
    }
    let count =
        |sim: &Sim, i: usize, p: &str| sim.go_data(i).iter().filter(|(_, m)| m == p).count();
    for (p, _) in &from0 {
        assert_eq!(count(&sim, cut, p), 0, "crossed the cut: {p}");
        for i in 1..cut {
            assert_eq!(count(&sim, i, p), 1, "node {i} during the cut: {p}");
        }
    }
    for (p, _) in &from_cut {
        for i in 0..cut {
            assert_eq!(count(&sim, i, p), 0, "crossed the cut: {p}");
        }
    }

    sim.cut.clear();
    let healed = sim.now;
    let fresh = payload("report", "10.4.3.231");
    sim.nodes[cut]
        .node
        .handle_slips(Now::same(sim.now), fresh.clone(), Recipient::All);
    let answer = payload("report", "10.5.0.1");
    let to = sim.peer_id(cut);
    sim.nodes[0]
        .node
        .handle_slips(Now::same(sim.now), answer.clone(), Recipient::Peer(to));
    let watched: Vec<String> = from0
        .iter()
        .chain(&from_cut)
        .map(|(p, _)| p.clone())
        .chain([fresh.clone(), answer.clone()])
        .collect();
    let mut arrivals = HashMap::new();
    let retention = cfg.delivery.retain_broadcast_ms;
    let last_of_the_cut = from0.iter().chain(&from_cut).map(|(_, t)| *t).max();
    let until = last_of_the_cut.unwrap_or(healed) + retention;
    run_noting_arrivals(&mut sim, until, &watched, &mut arrivals);

    let interval = cfg.discovery.announce_interval_ms * 6 / 5 + 1_000;
    for i in 0..cut {
        let at = arrivals.get(&(i, fresh.clone()));
        assert!(
            at.is_some_and(|t| t - healed <= interval),
            "node {i}: the healed node's fresh report at {at:?}, healed at {healed}"
        );
    }
    let at = arrivals.get(&(cut, answer.clone()));
    assert!(
        at.is_some_and(|t| t - healed <= interval),
        "the directed message to the healed node at {at:?}, healed at {healed}"
    );
    for (receivers, sent) in [(cut..cut + 1, &from0), (0..cut, &from_cut)] {
        for i in receivers {
            for (p, published) in sent {
                let at = arrivals.get(&(i, p.clone()));
                assert!(
                    at.is_some_and(|t| t - published <= retention),
                    "node {i}: {p} (published at {published}) arrived at {at:?}"
                );
            }
        }
    }
    for i in 0..4 {
        for p in &watched {
            assert!(count(&sim, i, p) <= 1, "node {i} got {p} twice");
        }
    }
}

/// Fifty pigeons started together on a lossless LAN all prove each other
/// within one announce interval of the defaults: the protocol's
/// first-contact budgets (challenges, responses, answering a new key's
/// announce) do not limit discovery at this size. (The lab benchmark of
/// docs/BENCHMARKS.md §4 does not complete at 50 real pigeons; this test
/// places that outside the protocol logic.)
#[test]
fn fifty_peers_started_together_all_prove_each_other() {
    let n = 50;
    let mut sim = Sim::new(n, &config());
    sim.run_for(5_000);
    for i in 0..n {
        assert_eq!(sim.active_peers(i), n - 1, "node {i}");
    }
}
