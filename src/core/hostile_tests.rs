//! The node against hostile input, on the simulated LAN of `tests.rs`:
//! arbitrary datagrams (property tests) and bans of repeat offenders.

use super::tests::{Sim, T0, addr_of, config, key_of, payload};
use super::*;
use crate::slips::Recipient;
use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use proptest::prelude::*;
use std::net::Ipv4Addr;

/// What a node's peer table says, for before/after comparisons.
fn table(n: &Node, now: Millis) -> Vec<(String, Option<SocketAddrV4>, PeerState, u64, u64)> {
    let mut rows: Vec<_> = n
        .peers()
        .iter()
        .map(|p| {
            (
                p.peer_id.clone(),
                p.addr,
                p.state,
                p.last_seen_ms,
                n.reliability_of(p, now).to_bits(),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

/// Three nodes that know each other, and a fresh genuine datagram of node 1
/// that node 0 has not seen.
fn lan() -> (Sim, Vec<u8>) {
    let mut sim = Sim::new(3, &config());
    sim.run_for(3_000);
    let d = wire::seal(
        &key_of(1),
        "slips",
        Stamp {
            instance: 555,
            seq: 1,
            ts_ms: sim.now,
        },
        Kind::Data,
        &DataBody {
            id: 1,
            to: None,
            to_inst: None,
            payload: payload("request", "1.2.3.4"),
        },
    )
    .unwrap();
    (sim, d)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary bytes, and damaged copies of a genuine datagram, from any
    /// source: no panic, no change to the peer table, nothing for Slips.
    #[test]
    fn hostile_datagrams_change_nothing(
        garbage in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1300), 1..8),
        flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 1..4),
        cut in any::<usize>(),
        src in any::<[u8; 4]>(),
        port in any::<u16>(),
    ) {
        let (mut sim, genuine) = lan();
        let now = sim.now;
        let before = table(&sim.nodes[0].node, now);
        let inbox_before = sim.nodes[0].inbox.len();
        let accepted_before = sim.nodes[0].node.stats().datagrams_accepted;
        let src = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(src), port));
        let n = &mut sim.nodes[0].node;
        for g in &garbage {
            n.handle_datagram(Now::same(now), Via::Group, src, g);
        }
        let mut damaged = genuine.clone();
        for (i, mask) in &flips {
            let i = i % damaged.len();
            damaged[i] ^= mask;
        }
        n.handle_datagram(Now::same(now), Via::Group, src, &damaged);
        n.handle_datagram(Now::same(now), Via::Group, src, &genuine[..cut % genuine.len()]);
        prop_assert_eq!(n.stats().datagrams_accepted, accepted_before);
        sim.run_for(0);
        prop_assert_eq!(table(&sim.nodes[0].node, now), before);
        prop_assert_eq!(sim.nodes[0].inbox.len(), inbox_before);
    }
}

fn last_reported(sim: &Sim, i: usize, peer: &str) -> Option<f64> {
    sim.nodes[i].inbox.iter().rev().find_map(|m| match m {
        ToSlips::PeerUpdate {
            peerid,
            reliability,
            ..
        } if peerid == peer => *reliability,
        _ => None,
    })
}

/// Base64 of `[1]`: crashes Slips 1.1.21, refused by validation.
fn bad_payload() -> String {
    BASE64_STANDARD.encode("[1]")
}

#[test]
fn repeated_bad_payloads_ban_the_key_for_a_while() {
    let cfg = config();
    let after = cfg.security.ban_after_misbehaviours;
    let mut sim = Sim::new(2, &cfg);
    sim.run_for(3_000);
    let offender = sim.peer_id(1);
    for k in 0..after {
        assert!(
            !sim.nodes[0]
                .node
                .bans
                .is_banned(key_of(1).verifying_key().as_bytes(), sim.now),
            "banned after {k}"
        );
        sim.nodes[1]
            .node
            .handle_slips(Now::same(sim.now), bad_payload(), Recipient::All);
        sim.run_for(1_000);
    }
    let n = &sim.nodes[0].node;
    assert_eq!(n.stats().dropped(DropReason::BadPayload), u64::from(after));
    assert_eq!(n.stats().bans, 1);
    assert!(
        n.bans
            .is_banned(key_of(1).verifying_key().as_bytes(), sim.now)
    );
    assert_eq!(
        sim.active_peers(0),
        0,
        "a banned peer is not a peer to send to"
    );
    assert_eq!(last_reported(&sim, 0, &offender), Some(0.0), "Slips told");

    // While banned, even valid messages and announcements are dropped
    // unverified.
    let banned_before = sim.nodes[0].node.stats().dropped(DropReason::Banned);
    sim.nodes[1].node.handle_slips(
        Now::same(sim.now),
        payload("request", "1.2.3.4"),
        Recipient::All,
    );
    sim.run_for(60_000);
    assert!(sim.go_data(0).is_empty());
    assert!(sim.nodes[0].node.stats().dropped(DropReason::Banned) > banned_before);
    assert_eq!(sim.active_peers(0), 0);
    // The victim's own traffic still reaches the offender: a ban is local.
    assert_eq!(sim.active_peers(1), 1);

    // The ban ends; the next announcement makes it a peer again, Slips
    // hears its real (lowered) reliability, and its messages flow.
    let ban_ms = cfg.security.ban_secs * 1000;
    sim.run_for(ban_ms + cfg.discovery.announce_interval_ms * 2);
    assert!(
        !sim.nodes[0]
            .node
            .bans
            .is_banned(key_of(1).verifying_key().as_bytes(), sim.now)
    );
    assert_eq!(sim.active_peers(0), 1);
    let r = last_reported(&sim, 0, &offender).unwrap();
    assert!(r > 0.0 && r < 0.5, "reliability after the ban: {r}");
    sim.nodes[1].node.handle_slips(
        Now::same(sim.now),
        payload("request", "5.6.7.8"),
        Recipient::All,
    );
    sim.run_for(1_000);
    let got = sim.go_data(0);
    assert!(
        got.iter().any(|(_, m)| *m == payload("request", "5.6.7.8")),
        "{got:?}"
    );
    assert!(got.iter().all(|(_, m)| *m != bad_payload()));
}

#[test]
fn spread_out_misbehaviour_is_not_banned() {
    let cfg = config();
    let mut sim = Sim::new(2, &cfg);
    sim.run_for(3_000);
    let window = cfg.security.ban_window_secs * 1000;
    let per_window = cfg.security.ban_after_misbehaviours - 1;
    for _ in 0..3 * per_window {
        sim.nodes[1]
            .node
            .handle_slips(Now::same(sim.now), bad_payload(), Recipient::All);
        sim.run_for(window / u64::from(per_window) + 1_000);
    }
    let n = &sim.nodes[0].node;
    assert_eq!(
        n.stats().dropped(DropReason::BadPayload),
        u64::from(3 * per_window)
    );
    assert_eq!(n.stats().bans, 0);
    assert_eq!(sim.active_peers(0), 1);
}

#[test]
fn bans_can_be_disabled() {
    let mut cfg = config();
    cfg.security.ban_after_misbehaviours = 0;
    let mut sim = Sim::new(2, &cfg);
    sim.run_for(3_000);
    for _ in 0..20 {
        sim.nodes[1]
            .node
            .handle_slips(Now::same(sim.now), bad_payload(), Recipient::All);
        sim.run_for(200);
    }
    assert_eq!(sim.nodes[0].node.stats().bans, 0);
    assert_eq!(
        sim.nodes[0].node.stats().dropped(DropReason::BadPayload),
        20
    );
}

/// A key flooding above its rate is banned after a few seconds, and Slips
/// gets no more than the rate allowed meanwhile.
#[test]
fn a_flooding_key_is_banned() {
    let cfg = config();
    let mut sim = Sim::new(2, &cfg);
    sim.run_for(3_000);
    let key = key_of(1);
    let src = SocketAddr::V4(addr_of(1));
    let start = sim.now;
    // 1000 datagrams per second for 10 s, from its own session (its
    // instance), numbered far above what it sends itself.
    let inst = 101;
    for ms in 0..10_000u64 {
        let now = start + ms;
        let seq = 1_000_000 + ms;
        let d = wire::seal(
            &key,
            "slips",
            Stamp {
                instance: inst,
                seq,
                ts_ms: now,
            },
            Kind::Data,
            &DataBody {
                id: seq,
                to: None,
                to_inst: None,
                payload: payload("request", "9.9.9.9"),
            },
        )
        .unwrap();
        sim.nodes[0]
            .node
            .handle_datagram(Now::same(now), Via::Group, src, &d);
    }
    sim.now = start + 10_000;
    sim.run_for(0);
    let s = sim.nodes[0].node.stats().clone();
    assert_eq!(s.bans, 1);
    // Slips got at most the peer's budget toward Slips over the 10 s.
    let delivered = sim.go_data(0).len() as f64;
    let q = super::GO_DATA_PEER_QUOTA;
    assert!(delivered <= q.burst + q.per_second * 10.0, "{delivered}");
    assert!(delivered >= q.burst, "{delivered}");
    assert!(s.dropped(DropReason::SlipsRate) > 0);
    assert!(s.dropped(DropReason::Banned) > 0);
    assert!(s.dropped(DropReason::SourceRate) > 0, "source limit first");
    assert_eq!(last_reported(&sim, 0, &sim.peer_id(1)), Some(0.0));
}

/// Anyone can resend a signed announce the victim missed, from another
/// address: it is dropped, and never counted against its signer.
#[test]
fn a_relayed_announce_is_not_held_against_its_sender() {
    let cfg = config();
    let mut sim = Sim::new(2, &cfg);
    sim.run_for(3_000);
    let k1 = key_of(1).verifying_key();
    let reliability = |sim: &Sim| {
        let n = &sim.nodes[0].node;
        n.reliability_of(n.peers().get(&k1).unwrap(), sim.now)
    };
    let before = reliability(&sim);
    let relay = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 66), 4001));
    let now = sim.now;
    for seq in 0..20 {
        let d = wire::seal(
            &key_of(1),
            "slips",
            Stamp {
                instance: 101,
                seq: 10_000 + seq,
                ts_ms: now,
            },
            Kind::Announce,
            &AnnounceBody {
                ip: *addr_of(1).ip(),
                port: addr_of(1).port(),
                interval_ms: 30_000,
                last_bcast: 0,
                pad: String::new(),
            },
        )
        .unwrap();
        sim.nodes[0]
            .node
            .handle_datagram(Now::same(now), Via::Group, relay, &d);
    }
    let n = &sim.nodes[0].node;
    assert_eq!(n.stats().dropped(DropReason::AddressMismatch), 20);
    assert_eq!(n.stats().bans, 0);
    assert_eq!(reliability(&sim), before);
    assert_eq!(n.peers().get(&k1).unwrap().addr, Some(addr_of(1)));
}

/// A banned key's datagrams are dropped before the signature is checked:
/// a forged one counts as `banned`, not `bad_signature`.
#[test]
fn banned_keys_cost_no_signature_check() {
    let mut sim = Sim::new(2, &config());
    sim.run_for(3_000);
    let now = sim.now;
    for _ in 0..config().security.ban_after_misbehaviours {
        sim.nodes[0]
            .node
            .bans
            .strike(key_of(1).verifying_key().as_bytes(), now);
    }
    let d = wire::seal(
        &key_of(1),
        "slips",
        Stamp {
            instance: 101,
            seq: 50_000,
            ts_ms: now,
        },
        Kind::Goodbye,
        &wire::GoodbyeBody {},
    )
    .unwrap();
    let mut forged = d.clone();
    let i = forged.len() - 10;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let n = &mut sim.nodes[0].node;
    n.handle_datagram(
        Now::same(now),
        Via::Group,
        SocketAddr::V4(addr_of(1)),
        &forged,
    );
    assert_eq!(n.stats().dropped(DropReason::Banned), 1);
    assert_eq!(n.stats().dropped(DropReason::BadSignature), 0);
}

/// Thousands of unknown keys sending invalid payloads create no state at
/// all: no peer, no strike, no ban (only a key in the table can misbehave).
#[test]
fn unknown_keys_create_no_state() {
    let mut cfg = config();
    cfg.security.max_peers = 100_000;
    let mut sim = Sim::new(1, &cfg);
    let now = T0 + 1_000;
    let n_keys = MAX_BAN_KEYS as u32 + 50;
    for k in 0..n_keys {
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&k.to_le_bytes());
        seed[31] = 0x5B;
        let d = wire::seal(
            &SigningKey::from_bytes(&seed),
            "slips",
            Stamp {
                instance: 1,
                seq: 1,
                ts_ms: now,
            },
            Kind::Data,
            &DataBody {
                id: 1,
                to: None,
                to_inst: None,
                payload: bad_payload(),
            },
        )
        .unwrap();
        let src = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(0x0A00_0000 + k), 1));
        sim.nodes[0]
            .node
            .handle_datagram(Now::same(now), Via::Group, src, &d);
    }
    let n = &sim.nodes[0].node;
    assert_eq!(
        n.stats().dropped(DropReason::UnknownPeer),
        u64::from(n_keys)
    );
    assert_eq!(n.stats().dropped(DropReason::BadPayload), 0);
    assert_eq!(n.bans.len(), 0);
    assert_eq!(n.peers().len(), 0);
}
