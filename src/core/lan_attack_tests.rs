//! Issue classes of a hostile LAN on the simulated LAN: reflection and
//! amplification, address binding by spoofed sources, peer-table lockout,
//! floods toward Slips, replays after a restart, the receive rules, reports
//! about pigeons, and stepped wall clocks.

use super::tests::*;
use super::*;
use crate::slips::Recipient;
use std::net::Ipv4Addr;

fn victim() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 9, 9), 4001)
}

fn go_data_count(sim: &Sim, i: usize) -> usize {
    sim.go_data(i).len()
}

/// Toward an address that never proved it receives, a pigeon sends at
/// most the bytes that arrived from it, whatever is sent in its name.
#[test]
fn spoofed_sources_get_no_more_bytes_than_they_sent() {
    let mut sim = Sim::new(3, &config());
    sim.run_for(3_000);
    // Something retained to repair, and a known attacker key.
    for k in 0..40 {
        let p = payload("report", &format!("10.5.0.{}", k + 1));
        sim.nodes[0]
            .node
            .handle_slips(Now::same(sim.now), p, Recipient::All);
    }
    sim.run_for(2_000);
    let mut mallory = Rogue::new(1, SocketAddrV4::new(Ipv4Addr::new(10, 0, 7, 7), 4001));
    assert!(mallory.join(&mut sim, 0));
    let v = victim();
    let mut sent_as_victim = 0usize;
    let mut spoof = |sim: &mut Sim, via: Via, d: Vec<u8>| {
        sent_as_victim += d.len();
        sim.inject(0, via, v, &d);
    };
    let node0 = sim.peer_id(0);
    let inst0 = 100;
    for round in 0..20u64 {
        let now = sim.now;
        // Fresh keys announcing the victim's address (each asks for a
        // challenge), the attacker announcing it, and every unicast kind.
        let mut fresh = Rogue::new(10_000 + round as u32, v);
        spoof(&mut sim, Via::Group, fresh.announce(now));
        spoof(&mut sim, Via::Group, {
            let mut m = Rogue::new(1, v);
            m.inst = mallory.inst + 1 + round;
            m.announce(now)
        });
        let ids: Vec<u64> = (1..=32).collect();
        spoof(
            &mut sim,
            Via::Unicast,
            mallory.seal(
                now,
                Kind::Nack,
                &NackBody {
                    to: node0.clone(),
                    ids,
                },
            ),
        );
        spoof(
            &mut sim,
            Via::Unicast,
            mallory.seal(
                now,
                Kind::Data,
                &DataBody {
                    id: round + 1,
                    to: Some(node0.clone()),
                    to_inst: Some(inst0),
                    payload: payload("report", "10.6.0.1"),
                },
            ),
        );
        spoof(
            &mut sim,
            Via::Unicast,
            mallory.seal(
                now,
                Kind::Challenge,
                &ChallengeBody {
                    nonce: "AAAAAAAAAAAAAAAAAAAAAA==".into(),
                    pad: String::new(),
                },
            ),
        );
        sim.run_for(500);
    }
    let out = sim.bytes_to(v);
    let ratio = out as f64 / sent_as_victim as f64;
    println!(
        "bytes to the spoofed victim: {out} for {sent_as_victim} sent in its name (ratio {ratio:.3})"
    );
    assert!(out <= sent_as_victim, "{out} > {sent_as_victim}");
    assert!(sim.nodes[0].node.stats().amplification_refused > 0);
}

/// One announce with a forged source never binds the attacker's key to
/// the victim's address: nothing but one bounded challenge goes there.
#[test]
fn a_spoofed_announce_binds_no_address() {
    let mut sim = Sim::new(2, &config());
    sim.run_for(3_000);
    let v = victim();
    // A stranger claiming the victim's address.
    let mut mallory = Rogue::new(2, v);
    let a = mallory.announce(sim.now);
    sim.inject(0, Via::Group, v, &a);
    // It cannot answer: the challenge went to the victim. A guess fails.
    let guess = mallory.seal(
        sim.now,
        Kind::Response,
        &ResponseBody {
            nonce: "AAAAAAAAAAAAAAAAAAAAAA==".into(),
            next_bcast: 1,
        },
    );
    sim.inject(0, Via::Unicast, v, &guess);
    sim.run_for(5_000);
    let n = &sim.nodes[0].node;
    assert!(n.peers().get(&mallory.key.verifying_key()).is_none());
    assert_eq!(n.stats().dropped(DropReason::BadNonce), 1);
    let to_victim: Vec<_> = sim.outside.iter().filter(|(a, _)| *a == v).collect();
    assert!(!to_victim.is_empty() && to_victim.iter().all(|(_, d)| d.len() <= a.len()));
    assert!(
        sim.bytes_to(v) <= a.len(),
        "one announce pays for what went to the victim"
    );
    sim.nodes[0].node.handle_slips(
        Now::same(sim.now),
        payload("report", "10.6.0.2"),
        Recipient::Peer(mallory.peer_id()),
    );
    assert_eq!(
        sim.nodes[0]
            .node
            .stats()
            .dropped(DropReason::UnknownRecipient),
        1
    );

    // A key with a proven address announcing a move to the victim keeps
    // its proven address until the new one is proven.
    let home = SocketAddrV4::new(Ipv4Addr::new(10, 0, 7, 8), 4001);
    let mut eve = Rogue::new(3, home);
    assert!(eve.join(&mut sim, 0));
    let mut moved = Rogue::new(3, v);
    moved.inst = eve.inst;
    let a = moved.seal(
        sim.now,
        Kind::Announce,
        &AnnounceBody {
            ip: *v.ip(),
            port: v.port(),
            interval_ms: 30_000,
            last_bcast: 0,
            pad: "x".repeat(700),
        },
    );
    // Its seq must be past eve's own: reuse eve's counter by sealing twice.
    let _ = eve.seal(sim.now, Kind::Goodbye, &GoodbyeBody {});
    sim.inject(0, Via::Group, v, &a);
    let before = sim.outside.iter().filter(|(a, _)| *a == v).count();
    sim.nodes[0].node.handle_slips(
        Now::same(sim.now),
        payload("report", "10.6.0.3"),
        Recipient::Peer(eve.peer_id()),
    );
    sim.drain(0);
    let p = sim.nodes[0]
        .node
        .peers()
        .get(&eve.key.verifying_key())
        .unwrap();
    assert_eq!(p.addr, Some(home));
    let data_to_victim = sim.outside[before..]
        .iter()
        .filter(|(a, d)| *a == v && d.len() > wire::CHALLENGE_LEN + 50)
        .count();
    assert_eq!(
        data_to_victim, 0,
        "directed data never goes to the claimed address"
    );
    // Slips never heard of the victim's address.
    assert!(!sim.nodes[0].inbox.iter().any(|m| matches!(
        m,
        ToSlips::PeerUpdate { ip: Some(ip), .. } if *ip == IpAddr::V4(*v.ip())
    )));
}

/// Runs node 0 under a flood of fresh keys announcing themselves, `per_ms`
/// a millisecond for `ms`, starting node 2 (a newcomer) 200 ms in. `src`
/// picks each flood datagram's source. Returns how long the newcomer took
/// to become active at node 0 and node 0 at it.
fn newcomer_join_under_flood(
    per_ms: u32,
    ms: u32,
    src: impl Fn(u32) -> SocketAddrV4,
) -> Option<Millis> {
    let cfg = config();
    let mut sim = Sim::new(3, &cfg);
    sim.nodes[2].up = false;
    sim.run_for(3_000);
    let mut started = None;
    let mut joined = None;
    let mut k = 0u32;
    for step in 0..ms {
        if step == 200 {
            sim.restart(2, &cfg, Vec::new(), 7_777);
            started = Some(sim.now);
        }
        for _ in 0..per_ms {
            let a = src(k);
            let d = Rogue::new(100_000 + k, a).announce(sim.now);
            sim.inject(0, Via::Group, a, &d);
            k += 1;
        }
        sim.run_for(1);
        if joined.is_none()
            && started.is_some()
            && sim.nodes[0]
                .node
                .peers()
                .get(&key_of(2).verifying_key())
                .is_some_and(|p| p.state == PeerState::Active)
            && sim.active_peers(2) == 2
        {
            joined = Some(sim.now - started.unwrap_or(0));
        }
        // The sim's challenges to the flood's addresses are not needed.
        sim.outside.clear();
    }
    assert_eq!(sim.active_peers(1), 2, "known peers stay");
    assert!(sim.nodes[0].node.peers().len() <= 2, "no flood key entered");
    joined
}

#[test]
fn honest_newcomer_joins_during_a_flood_of_fresh_keys_from_many_sources() {
    // 10 000 fresh keys a second, each from its own address.
    let joined = newcomer_join_under_flood(10, 2_500, |k| {
        SocketAddrV4::new(Ipv4Addr::from(0x0A40_0000 + k), 4001)
    });
    println!("newcomer joined after {joined:?} ms (many sources)");
    assert!(joined.is_some_and(|ms| ms <= 2_000), "{joined:?}");
}

#[test]
fn honest_newcomer_joins_during_a_flood_of_fresh_keys_from_one_source() {
    let joined = newcomer_join_under_flood(10, 2_500, |_| {
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 8, 8), 4001)
    });
    println!("newcomer joined after {joined:?} ms (one source)");
    assert!(joined.is_some_and(|ms| ms <= 2_000), "{joined:?}");
}

/// Address churn of one key, and a Sybil of many proven keys flooding
/// broadcasts, reach Slips at bounded rates.
#[test]
fn churn_and_sybil_floods_reach_slips_at_a_bounded_rate() {
    let mut sim = Sim::new(1, &config());
    sim.run_for(1_000);
    // One key moving to a new port 300 times in 6 s.
    let start = sim.now;
    let before = sim.peer_updates(0);
    for k in 0..300u16 {
        let addr = SocketAddrV4::new(Ipv4Addr::new(10, 0, 6, 1), 2000 + k);
        let mut r = Rogue::new(7, addr);
        r.inst = 7_000 + u64::from(k);
        r.join(&mut sim, 0);
        sim.run_for(20);
    }
    sim.run_for(1);
    let churn_updates = sim.peer_updates(0) - before;
    let secs = (sim.now - start) as f64 / 1000.0;
    println!("address churn: {churn_updates} peer_updates in {secs:.1} s");
    assert!(churn_updates as f64 <= 1.0 + secs / 10.0, "{churn_updates}");

    // 100 keys on 100 hosts, all proven, each broadcasting 100 a second.
    let mut sybils: Vec<Rogue> = (0..100u32)
        .map(|k| {
            Rogue::new(
                50_000 + k,
                SocketAddrV4::new(Ipv4Addr::from(0x0A50_0000 + k), 4001),
            )
        })
        .collect();
    let before_updates = sim.peer_updates(0);
    let start = sim.now;
    for s in &mut sybils {
        s.join(&mut sim, 0);
    }
    let before_data = go_data_count(&sim, 0);
    for ms in 0..5_000u64 {
        if ms % 10 == 0 {
            for s in &mut sybils {
                let d = s.broadcast(sim.now, ms / 10 + 1, payload("report", "10.7.0.1"));
                let a = s.addr;
                sim.inject(0, Via::Group, a, &d);
            }
        }
        sim.run_for(1);
    }
    let secs = (sim.now - start) as f64 / 1000.0;
    let data = go_data_count(&sim, 0) - before_data;
    let updates = sim.peer_updates(0) - before_updates;
    println!(
        "Sybil flood: {} datagrams, {data} go_data and {updates} peer_updates to Slips in {secs:.1} s",
        100 * 500
    );
    let q = GO_DATA_TOTAL_QUOTA;
    assert!(data as f64 <= q.burst + q.per_second * secs, "{data}");
    let u = PEER_UPDATE_QUOTA;
    assert!(updates as f64 <= u.burst + u.per_second * secs, "{updates}");
}

/// Every datagram a pigeon received, replayed after it restarts (within
/// the freshness window), delivers nothing to Slips a second time.
#[test]
fn replays_after_a_restart_never_reach_slips_twice() {
    let cfg = config();
    let mut sim = Sim::new(3, &cfg);
    sim.run_for(3_000);
    sim.tap = Some(0);
    let asker = sim.peer_id(0);
    for k in 0..5 {
        let b = payload("report", &format!("10.8.0.{}", k + 1));
        sim.nodes[1]
            .node
            .handle_slips(Now::same(sim.now), b, Recipient::All);
        let d = payload("report", &format!("10.8.1.{}", k + 1));
        sim.nodes[2]
            .node
            .handle_slips(Now::same(sim.now), d, Recipient::Peer(asker.clone()));
        sim.run_for(300);
    }
    sim.run_for(2_000);
    assert_eq!(go_data_count(&sim, 0), 10);
    sim.tap = None;
    let captured = std::mem::take(&mut sim.tapped);
    // Restart node 0 (a crash: nothing saved since the start).
    sim.nodes[0].node.shutdown(Now::same(sim.now));
    sim.drain(0);
    let saved = sim.nodes[0]
        .saved
        .clone()
        .map(|f| f.peers)
        .unwrap_or_default();
    sim.restart(0, &cfg, saved, 4_242);
    sim.nodes[0].inbox.clear();
    sim.run_for(3_000);
    assert_eq!(sim.active_peers(0), 2, "sessions re-opened");
    for (from, via, d) in &captured {
        sim.inject(0, *via, *from, d);
    }
    sim.run_for(1_000);
    assert_eq!(go_data_count(&sim, 0), 0, "a replay reached Slips");
    // New messages still arrive.
    let fresh = payload("report", "10.8.2.1");
    sim.nodes[1]
        .node
        .handle_slips(Now::same(sim.now), fresh.clone(), Recipient::All);
    sim.run_for(500);
    assert_eq!(sim.go_data(0), vec![(sim.peer_id(1), fresh)]);
}

/// The receive rules of PROTOCOL.md §2.1 and §4, one by one.
#[test]
fn receive_rules_are_enforced() {
    // Bans off: every malformed body below would count toward one.
    let mut cfg = config();
    cfg.security.ban_after_misbehaviours = 0;
    let mut sim = Sim::new(1, &cfg);
    sim.run_for(1_000);
    let home = SocketAddrV4::new(Ipv4Addr::new(10, 0, 7, 9), 4001);
    let mut m = Rogue::new(9, home);
    let node0 = sim.peer_id(0);
    // Data from a key that never announced.
    let d = m.broadcast(sim.now, 1, payload("report", "10.9.0.1"));
    sim.inject(0, Via::Group, home, &d);
    assert_eq!(
        sim.nodes[0].node.stats().dropped(DropReason::UnknownPeer),
        1
    );
    assert!(m.join(&mut sim, 0));
    let count = |sim: &Sim, r: DropReason| sim.nodes[0].node.stats().dropped(r);
    let bad_body_before = count(&sim, DropReason::BadBody);
    let now = sim.now;
    let bodies: Vec<(Kind, serde_json::Value)> = vec![
        // An id past 2^53.
        (
            Kind::Data,
            serde_json::json!({"id": 1u64 << 53, "payload": payload("report", "10.9.0.2")}),
        ),
        // "to": null.
        (
            Kind::Data,
            serde_json::json!({"id": 5, "to": null, "payload": payload("report", "10.9.0.3")}),
        ),
        // "to" without "to_inst".
        (
            Kind::Data,
            serde_json::json!({"id": 6, "to": node0, "payload": payload("report", "10.9.0.4")}),
        ),
        // 33 ids in a nack, and none.
        (
            Kind::Nack,
            serde_json::json!({"to": node0, "ids": (1..=33).collect::<Vec<u64>>()}),
        ),
        (Kind::Nack, serde_json::json!({"to": node0, "ids": []})),
        // An announced interval out of bounds.
        (
            Kind::Announce,
            serde_json::json!({"ip": "10.0.7.9", "port": 4001, "interval_ms": 3_600_000, "last_bcast": 0}),
        ),
    ];
    let n_bodies = bodies.len() as u64;
    for (kind, body) in bodies {
        let via = match kind {
            Kind::Announce => Via::Group,
            _ => Via::Unicast,
        };
        let d = m.seal(now, kind, &body);
        sim.inject(0, via, home, &d);
    }
    assert_eq!(count(&sim, DropReason::BadBody) - bad_body_before, n_bodies);
    // Kinds on the wrong socket.
    let before = count(&sim, DropReason::WrongChannel);
    let directed = m.seal(
        now,
        Kind::Data,
        &DataBody {
            id: 9,
            to: Some(node0.clone()),
            to_inst: Some(100),
            payload: payload("report", "10.9.0.5"),
        },
    );
    sim.inject(0, Via::Group, home, &directed);
    let ack = m.seal(
        now,
        Kind::Ack,
        &AckBody {
            id: 1,
            to: node0.clone(),
        },
    );
    sim.inject(0, Via::Group, home, &ack);
    let announce = m.announce(now);
    sim.inject(0, Via::Unicast, home, &announce);
    assert_eq!(count(&sim, DropReason::WrongChannel) - before, 3);
    // Directed data for another instance of ours.
    let old = m.seal(
        now,
        Kind::Data,
        &DataBody {
            id: 10,
            to: Some(node0),
            to_inst: Some(99),
            payload: payload("report", "10.9.0.6"),
        },
    );
    sim.inject(0, Via::Unicast, home, &old);
    assert_eq!(count(&sim, DropReason::OtherInstance), 1);
    assert!(sim.go_data(0).is_empty());
}

/// Slips' reports and blames about this host or an active peer are not
/// sent; other reports and requests are.
#[test]
fn slips_reports_about_pigeons_are_not_sent() {
    let mut sim = Sim::new(3, &config());
    sim.run_for(3_000);
    let own = addr_of(0).ip().to_string();
    let peer = addr_of(1).ip().to_string();
    for ip in [own.as_str(), peer.as_str(), "::ffff:10.0.0.2"] {
        sim.nodes[0]
            .node
            .handle_slips(Now::same(sim.now), payload("report", ip), Recipient::All);
        sim.nodes[0]
            .node
            .handle_slips(Now::same(sim.now), payload("blame", ip), Recipient::All);
    }
    sim.nodes[0].node.handle_slips(
        Now::same(sim.now),
        payload("request", &peer),
        Recipient::All,
    );
    sim.nodes[0].node.handle_slips(
        Now::same(sim.now),
        payload("report", "10.9.9.1"),
        Recipient::All,
    );
    sim.run_for(500);
    assert_eq!(
        sim.nodes[0].node.stats().dropped(DropReason::ReportsPeer),
        6
    );
    assert_eq!(
        go_data_count(&sim, 1),
        2,
        "the request and the other report"
    );
}

/// A wall clock stepped back or forward by an hour neither stalls nor
/// rushes announcements, retransmissions and saves.
#[test]
fn stepped_wall_clocks_do_not_stall_or_rush_timers() {
    for step in [-3_600_000i64, 3_600_000] {
        let cfg = config();
        let mut sim = Sim::new(2, &cfg);
        sim.run_for(5_000);
        let sent = |sim: &Sim| sim.nodes[0].node.stats().datagrams_out;
        sim.nodes[0].wall_skew = step;
        sim.nodes[0].saved = None;
        let before = sent(&sim);
        // A directed message nobody will acknowledge: peers drop our
        // datagrams as stale or future now.
        let target = sim.peer_id(1);
        let clock = Now::same(sim.now).with_wall_skew(step);
        sim.nodes[0].node.handle_slips(
            clock,
            payload("report", "10.9.9.2"),
            Recipient::Peer(target),
        );
        let retrans_before = sim.nodes[0].node.stats().retransmissions;
        sim.run_for(2_000);
        let retrans = sim.nodes[0].node.stats().retransmissions - retrans_before;
        assert!(retrans >= 5, "step {step}: {retrans} retransmissions");
        sim.run_for(88_000);
        // About 3 announcements in 90 s (30 s ± 20 %), not 0 and not a burst.
        let out = sent(&sim) - before - retrans - 1;
        assert!((2..=6).contains(&out), "step {step}: {out} datagrams");
        assert!(
            sim.nodes[0].saved.is_some() || !sim.nodes[0].node.dirty,
            "step {step}: save stalled"
        );
    }
}
