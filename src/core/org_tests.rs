//! Organisations on the simulated LAN (`core::orgs`, PROTOCOL.md §10):
//! membership proofs, policies toward Slips, sealed messages, key
//! distribution, revocation, expiry, joins and restarts.

use super::tests::{Faults, Rogue, Sim, T0, addr_of, config, key_of, payload};
use super::*;
use crate::org::config::{Membership, RequestPolicy, Share, TrustedOrg};
use crate::org::{Credential, MembershipRequest, RevocationEntry, RevocationList};

/// The organisation's key (the administrator's).
fn org_key() -> SigningKey {
    SigningKey::from_bytes(&[200; 32])
}

fn org_id() -> String {
    crate::org::org_id(&org_key().verifying_key())
}

/// Node `i`'s credential, serial `i + 1`, valid `[T0 − 10 s, T0 + life)`.
fn credential(i: usize, life_s: u64) -> Credential {
    let (req, _) = MembershipRequest::new(&key_of(i));
    let now_s = T0 / 1000;
    Credential::issue(&org_key(), &req, i as u64 + 1, now_s - 10, now_s + life_s)
}

fn member_config(i: usize, life_s: u64) -> Config {
    let mut c = config();
    c.org.member = vec![Membership {
        credential: credential(i, life_s).encode(),
        share_reports: Share::Org,
        share_requests: Share::Org,
    }];
    c.org.trusted = vec![trusted(true)];
    c
}

fn trusted(forward_blames: bool) -> TrustedOrg {
    TrustedOrg {
        id: org_id(),
        trust: 0.8,
        forward_blames,
    }
}

/// Five pigeons: 0, 1, 2 members of the organisation; 3 trusts it
/// without being a member; 4 knows nothing of it.
fn lan() -> Sim {
    let mut sim = Sim::new(5, &config());
    for i in 0..3 {
        sim.restart(i, &member_config(i, 86_400), Vec::new(), 100 + i as u64);
    }
    let mut c3 = config();
    c3.org.trusted = vec![trusted(true)];
    sim.restart(3, &c3, Vec::new(), 103);
    sim.run_for(5_000);
    sim
}

fn reports_of(sim: &Sim, i: usize, ip: &str) -> usize {
    let p = payload("report", ip);
    sim.go_data(i).iter().filter(|(_, m)| *m == p).count()
}

fn orgs_seen_by(sim: &Sim, i: usize, j: usize) -> Vec<String> {
    let id = sim.peer_id(j);
    sim.nodes[i]
        .node
        .status(Now::same(sim.now))
        .peers
        .into_iter()
        .find(|p| p.peer_id == id)
        .map(|p| p.organisations)
        .unwrap_or_default()
}

/// Every datagram node `i` received, as one byte string (a capture).
fn capture(sim: &Sim) -> Vec<u8> {
    sim.tapped.iter().flat_map(|(_, _, d)| d.clone()).collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn members_prove_their_membership_to_every_pigeon_that_knows_the_org() {
    let sim = lan();
    for i in 0..4 {
        for j in 0..3 {
            if i != j {
                assert_eq!(orgs_seen_by(&sim, i, j), vec![org_id()], "{i} sees {j}");
            }
        }
        assert!(orgs_seen_by(&sim, i, 4).is_empty());
    }
    // Node 4 trusts nothing: it keeps no claims at all.
    for j in 0..4 {
        assert!(orgs_seen_by(&sim, 4, j).is_empty());
    }
}

#[test]
fn an_org_report_reaches_the_other_members_once_and_nobody_else_can_read_it() {
    let mut sim = lan();
    sim.tap = Some(4);
    let ip = "198.51.100.21";
    sim.nodes[0]
        .node
        .handle_slips(Now::same(sim.now), payload("report", ip), Recipient::All);
    sim.run_for(10_000);
    assert_eq!(reports_of(&sim, 1, ip), 1);
    assert_eq!(reports_of(&sim, 2, ip), 1);
    assert_eq!(reports_of(&sim, 3, ip), 0, "trusting is not belonging");
    assert_eq!(reports_of(&sim, 4, ip), 0);
    let seen = capture(&sim);
    assert!(!seen.is_empty());
    let clear = payload("report", ip);
    assert!(!contains(&seen, clear.as_bytes()), "payload in clear");
    assert!(
        !contains(&seen, ip.as_bytes()),
        "the reported address in clear"
    );
    // The non-members counted it as an org message, not a fault of node 0.
    for i in [3, 4] {
        let s = sim.nodes[i].node.stats();
        assert!(s.dropped(DropReason::OrgSealed) >= 1, "node {i}");
        assert_eq!(s.dropped(DropReason::BadPayload), 0, "node {i}");
    }
}

#[test]
fn org_messages_arrive_exactly_once_despite_loss_and_duplication() {
    let mut sim = lan();
    sim.faults = Faults {
        loss: 0.2,
        duplicate: 0.1,
        delay_ms: (0, 30),
    };
    let n = 20;
    for k in 0..n {
        let ip = format!("203.0.113.{k}");
        sim.nodes[k % 3].node.handle_slips(
            Now::same(sim.now),
            payload("report", &ip),
            Recipient::All,
        );
        sim.run_for(200);
    }
    sim.faults = Faults::default();
    sim.run_for(60_000);
    for k in 0..n {
        let ip = format!("203.0.113.{k}");
        for i in 0..3 {
            let expected = usize::from(i != k % 3);
            assert_eq!(reports_of(&sim, i, &ip), expected, "report {k} at node {i}");
        }
        assert_eq!(reports_of(&sim, 3, &ip) + reports_of(&sim, 4, &ip), 0);
    }
}

#[test]
fn an_answer_to_a_member_is_sealed_and_to_a_non_member_not_sent() {
    let mut sim = lan();
    let ip = "198.51.100.30";
    let to_member = Recipient::Peer(sim.peer_id(1));
    sim.nodes[0]
        .node
        .handle_slips(Now::same(sim.now), payload("report", ip), to_member);
    let to_stranger = Recipient::Peer(sim.peer_id(4));
    sim.nodes[0]
        .node
        .handle_slips(Now::same(sim.now), payload("report", ip), to_stranger);
    sim.run_for(3_000);
    assert_eq!(reports_of(&sim, 1, ip), 1);
    assert_eq!(reports_of(&sim, 4, ip), 0);
    assert_eq!(sim.nodes[0].node.stats().dropped(DropReason::OrgPolicy), 1);
}

#[test]
fn blames_reach_slips_only_from_members_of_orgs_trusted_with_forward_blames() {
    let mut sim = lan();
    // A member's blame (sealed) at the other members, which trust the org
    // with forward_blames.
    let member_ip = "198.51.100.40";
    sim.nodes[0].node.handle_slips(
        Now::same(sim.now),
        payload("blame", member_ip),
        Recipient::All,
    );
    // A stranger's blame (in clear) everywhere.
    let stranger_ip = "198.51.100.41";
    sim.nodes[4].node.handle_slips(
        Now::same(sim.now),
        payload("blame", stranger_ip),
        Recipient::All,
    );
    sim.run_for(5_000);
    let blames = |i: usize, ip: &str| {
        let p = payload("blame", ip);
        sim.go_data(i).iter().filter(|(_, m)| *m == p).count()
    };
    assert_eq!(blames(1, member_ip), 1);
    assert_eq!(blames(2, member_ip), 1);
    for i in 0..4 {
        assert_eq!(blames(i, stranger_ip), 0, "node {i}");
    }
}

#[test]
fn a_member_without_forward_blames_keeps_the_default_blame_policy() {
    let mut sim = Sim::new(2, &config());
    for i in 0..2 {
        let mut c = member_config(i, 86_400);
        c.org.trusted = vec![trusted(false)];
        sim.restart(i, &c, Vec::new(), 100 + i as u64);
    }
    sim.run_for(5_000);
    let ip = "198.51.100.42";
    sim.nodes[0]
        .node
        .handle_slips(Now::same(sim.now), payload("blame", ip), Recipient::All);
    sim.run_for(3_000);
    assert!(sim.go_data(1).is_empty());
    assert_eq!(
        sim.nodes[1].node.stats().dropped(DropReason::BlamePolicy),
        1
    );
}

#[test]
fn requests_from_non_members_can_be_kept_from_slips() {
    let mut sim = Sim::new(5, &config());
    for i in 0..3 {
        let mut c = member_config(i, 86_400);
        c.org.accept_requests = RequestPolicy::Members;
        // Requests in clear, so that non-members could ask and be heard.
        c.org.member[0].share_requests = Share::All;
        sim.restart(i, &c, Vec::new(), 100 + i as u64);
    }
    sim.run_for(5_000);
    let (from_member, from_stranger) = ("198.51.100.50", "198.51.100.51");
    sim.nodes[1].node.handle_slips(
        Now::same(sim.now),
        payload("request", from_member),
        Recipient::All,
    );
    sim.nodes[4].node.handle_slips(
        Now::same(sim.now),
        payload("request", from_stranger),
        Recipient::All,
    );
    sim.run_for(3_000);
    let got = sim.go_data(0);
    assert!(
        got.iter()
            .any(|(_, m)| *m == payload("request", from_member))
    );
    assert!(
        !got.iter()
            .any(|(_, m)| *m == payload("request", from_stranger))
    );
    assert_eq!(sim.nodes[0].node.stats().dropped(DropReason::OrgPolicy), 1);
    // Node 3 accepts anyone (the default).
    assert!(
        sim.go_data(3)
            .iter()
            .any(|(_, m)| *m == payload("request", from_stranger))
    );
}

#[test]
fn the_first_reliability_of_a_verified_member_is_its_orgs_trust() {
    let sim = lan();
    let first = |i: usize, j: usize| {
        let id = sim.peer_id(j);
        sim.nodes[i].inbox.iter().find_map(|m| match m {
            ToSlips::PeerUpdate {
                peerid,
                reliability,
                ..
            } if *peerid == id => *reliability,
            _ => None,
        })
    };
    for (i, j) in [(0, 1), (0, 2), (1, 0), (3, 0), (3, 2)] {
        assert_eq!(first(i, j), Some(0.8), "{i} about {j}");
    }
    for (i, j) in [(0, 4), (3, 4), (4, 0)] {
        let r = first(i, j).unwrap_or(1.0);
        assert!(r <= 0.5, "{i} about {j}: {r}");
    }
}

fn revoke(serial: u64, seq: u64) -> String {
    let e = [RevocationEntry::Serial {
        serial,
        until: u64::MAX,
    }];
    let now_s = T0 / 1000;
    RevocationList::issue(&org_key(), seq, now_s, now_s + 86_400, &e)
        .unwrap()
        .encode()
}

#[test]
fn a_revocation_dropped_on_one_pigeon_reaches_all_and_locks_the_member_out() {
    let mut sim = lan();
    let before = "198.51.100.60";
    sim.nodes[0].node.handle_slips(
        Now::same(sim.now),
        payload("report", before),
        Recipient::All,
    );
    sim.run_for(2_000);
    assert_eq!(reports_of(&sim, 2, before), 1);
    // Node 2 (serial 3) is revoked; the list is dropped on node 3, which
    // only trusts the organisation.
    let list = revoke(3, 1);
    assert_eq!(
        sim.nodes[3].node.handle_org_list(Now::same(sim.now), &list),
        Ok(true)
    );
    sim.drain(3);
    sim.run_for(2_000);
    for i in [0, 1, 2, 4] {
        if i == 4 {
            assert!(sim.nodes[i].org_lists.is_empty(), "node 4 keeps no list");
        } else {
            assert_eq!(sim.nodes[i].org_lists.len(), 1, "node {i} has the list");
        }
    }
    assert!(orgs_seen_by(&sim, 0, 2).is_empty());
    assert!(orgs_seen_by(&sim, 3, 2).is_empty());
    // What members send now, node 2 cannot read: it stays out of its Slips.
    let after = "198.51.100.61";
    for i in [0, 1] {
        sim.nodes[i].node.handle_slips(
            Now::same(sim.now),
            payload("report", after),
            Recipient::All,
        );
    }
    sim.run_for(10_000);
    assert_eq!(reports_of(&sim, 0, after), 1);
    assert_eq!(reports_of(&sim, 1, after), 1);
    assert_eq!(reports_of(&sim, 2, after), 0);
    // And node 2's own messages are no longer taken as the org's.
    let from_revoked = "198.51.100.62";
    sim.nodes[2].node.handle_slips(
        Now::same(sim.now),
        payload("report", from_revoked),
        Recipient::All,
    );
    sim.run_for(5_000);
    assert_eq!(reports_of(&sim, 0, from_revoked), 0);
    // An older list changes nothing.
    assert_eq!(
        sim.nodes[0]
            .node
            .handle_org_list(Now::same(sim.now), &revoke(1, 1)),
        Ok(false)
    );
}

#[test]
fn a_pigeon_that_missed_the_list_gets_it_from_a_peer_at_its_next_announce() {
    let mut sim = lan();
    sim.cut.insert(1);
    assert_eq!(
        sim.nodes[0]
            .node
            .handle_org_list(Now::same(sim.now), &revoke(3, 1)),
        Ok(true)
    );
    sim.drain(0);
    sim.run_for(1_000);
    assert!(sim.nodes[1].org_lists.is_empty(), "cut off");
    sim.cut.clear();
    // One announce interval (30 s ± 20 %) and its answer.
    sim.run_for(40_000);
    assert_eq!(sim.nodes[1].org_lists.len(), 1);
    assert!(orgs_seen_by(&sim, 1, 2).is_empty());
}

#[test]
fn an_expired_credential_ends_the_membership() {
    let mut sim = Sim::new(3, &config());
    for i in 0..3 {
        let life = if i == 2 { 30 } else { 86_400 };
        sim.restart(i, &member_config(i, life), Vec::new(), 100 + i as u64);
    }
    sim.run_for(5_000);
    assert_eq!(orgs_seen_by(&sim, 0, 2), vec![org_id()]);
    sim.run_for(30_000);
    assert!(orgs_seen_by(&sim, 0, 2).is_empty());
    let ip = "198.51.100.70";
    sim.nodes[0]
        .node
        .handle_slips(Now::same(sim.now), payload("report", ip), Recipient::All);
    sim.run_for(5_000);
    assert_eq!(reports_of(&sim, 1, ip), 1);
    assert_eq!(reports_of(&sim, 2, ip), 0);
    // Node 2 knows its own membership ended: it sends nothing to the org.
    sim.nodes[2]
        .node
        .handle_slips(Now::same(sim.now), payload("report", ip), Recipient::All);
    assert_eq!(sim.nodes[2].node.stats().dropped(DropReason::OrgPolicy), 1);
}

/// Epochs of the sealed broadcasts from `from` in the capture, in order.
fn sealed_epochs(sim: &Sim, from: SocketAddrV4) -> Vec<u64> {
    let mut v: Vec<u64> = sim
        .tapped
        .iter()
        .filter(|(src, _, _)| *src == from)
        .filter_map(|(_, _, d)| {
            let v = Unverified::parse(d, "slips").ok()?.verify("slips").ok()?;
            let body = v.body::<DataBody>().ok().filter(|_| v.kind == Kind::Data)?;
            crate::org::crypto::SealedPayload::parse(&body.payload).map(|p| p.epoch)
        })
        .collect();
    v.dedup();
    v
}

#[test]
fn a_joining_member_reads_what_is_sent_after_it_joined_and_not_before() {
    let mut sim = Sim::new(3, &config());
    for i in 0..2 {
        sim.restart(i, &member_config(i, 86_400), Vec::new(), 100 + i as u64);
    }
    sim.nodes[2].up = false;
    sim.cut.insert(2);
    sim.tap = Some(1);
    sim.run_for(5_000);
    let before = "198.51.100.80";
    sim.nodes[0].node.handle_slips(
        Now::same(sim.now),
        payload("report", before),
        Recipient::All,
    );
    sim.run_for(2_000);
    assert_eq!(reports_of(&sim, 1, before), 1);
    // Node 2 joins (no administrator involved).
    sim.cut.clear();
    sim.restart(2, &member_config(2, 86_400), Vec::new(), 102);
    sim.run_for(5_000);
    let after = "198.51.100.81";
    sim.nodes[0]
        .node
        .handle_slips(Now::same(sim.now), payload("report", after), Recipient::All);
    sim.run_for(5_000);
    assert_eq!(reports_of(&sim, 2, after), 1);
    assert_eq!(reports_of(&sim, 1, after), 1);
    assert_eq!(reports_of(&sim, 2, before), 0);
    // Node 0's key changed when node 2 joined: the key node 2 got cannot
    // open what was sealed before.
    let epochs = sealed_epochs(&sim, addr_of(0));
    assert_eq!(epochs.len(), 2, "{epochs:?}");
    assert_ne!(epochs[0], epochs[1]);
}

#[test]
fn a_restarted_member_gets_the_keys_again() {
    let mut sim = lan();
    let ip1 = "198.51.100.90";
    sim.nodes[0]
        .node
        .handle_slips(Now::same(sim.now), payload("report", ip1), Recipient::All);
    sim.run_for(2_000);
    assert_eq!(reports_of(&sim, 1, ip1), 1);
    sim.nodes[1].inbox.clear();
    sim.restart(1, &member_config(1, 86_400), Vec::new(), 555);
    sim.run_for(5_000);
    let ip2 = "198.51.100.91";
    sim.nodes[0]
        .node
        .handle_slips(Now::same(sim.now), payload("report", ip2), Recipient::All);
    sim.run_for(5_000);
    assert_eq!(reports_of(&sim, 1, ip2), 1);
    assert_eq!(reports_of(&sim, 1, ip1), 0, "nothing delivered twice");
}

#[test]
fn a_credential_replayed_by_another_key_proves_nothing() {
    let mut sim = lan();
    let mut rogue = Rogue::new(7, SocketAddrV4::new([10, 0, 0, 99].into(), 4001));
    assert!(rogue.join(&mut sim, 0));
    // The rogue announces node 1's credential as its own.
    let stolen = credential(1, 86_400).encode();
    let body = serde_json::json!({
        "ip": rogue.addr.ip().to_string(), "port": rogue.addr.port(),
        "interval_ms": 30_000, "last_bcast": 0,
        "orgs": [{"cred": stolen, "rl": 0}],
        "pad": "x".repeat(500),
    });
    let a = rogue.seal(sim.now, Kind::Announce, &body);
    sim.inject(0, Via::Group, rogue.addr, &a);
    let status = sim.nodes[0].node.status(Now::same(sim.now));
    let row = status
        .peers
        .iter()
        .find(|p| p.peer_id == rogue.peer_id())
        .map(|p| p.organisations.clone());
    assert_eq!(row, Some(Vec::new()));
}

#[test]
fn org_traffic_from_a_non_member_gets_nothing() {
    let mut sim = lan();
    let mut rogue = Rogue::new(8, SocketAddrV4::new([10, 0, 0, 98].into(), 4001));
    assert!(rogue.join(&mut sim, 0));
    // The rogue asks node 0 for its key, and offers one of its own.
    let sent_before = sim.outside.len();
    let req = rogue.seal(
        sim.now,
        Kind::Org,
        &serde_json::json!({"op": "keyreq", "org": org_id(), "epoch": 1, "to": sim.peer_id(0)}),
    );
    sim.inject(0, Via::Unicast, rogue.addr, &req);
    let key = rogue.seal(
        sim.now,
        Kind::Org,
        &serde_json::json!({"op": "key", "org": org_id(), "epoch": 1, "to": sim.peer_id(0),
            "enc": "AAAA", "key": "AAAA"}),
    );
    sim.inject(0, Via::Unicast, rogue.addr, &key);
    let to_rogue = sim.outside[sent_before..]
        .iter()
        .filter(|(a, _)| *a == rogue.addr)
        .count();
    assert_eq!(to_rogue, 0, "nothing sent to a non-member");
    assert_eq!(sim.nodes[0].node.stats().dropped(DropReason::OrgPolicy), 2);
    // A list that does not verify is the sender's misbehaviour; a key by
    // multicast is refused.
    let bad = rogue.seal(
        sim.now,
        Kind::Org,
        &serde_json::json!({"op": "list", "list": "AAAA"}),
    );
    sim.inject(0, Via::Group, rogue.addr, &bad);
    assert_eq!(sim.nodes[0].node.stats().dropped(DropReason::BadBody), 1);
    let key = rogue.seal(
        sim.now,
        Kind::Org,
        &serde_json::json!({"op": "key", "org": org_id(), "epoch": 1, "to": sim.peer_id(0),
            "enc": "AAAA", "key": "AAAA"}),
    );
    sim.inject(0, Via::Group, rogue.addr, &key);
    assert_eq!(
        sim.nodes[0].node.stats().dropped(DropReason::WrongChannel),
        1
    );
    // A sealed-looking payload from a non-member is not delivered and not
    // held against it.
    let fake = crate::org::crypto::SealedPayload {
        org_id: org_id(),
        epoch: 1,
        nonce: [0; 24],
        ciphertext: vec![0; 40],
    }
    .encode();
    let d = rogue.broadcast(sim.now, 1, fake.clone());
    sim.inject(0, Via::Group, rogue.addr, &d);
    // Its claims are not known yet: held back (a member's key may come).
    assert_eq!(sim.nodes[0].node.stats().dropped(DropReason::OrgNoKey), 1);
    let a = rogue.announce(sim.now);
    sim.inject(0, Via::Group, rogue.addr, &a);
    let d = rogue.broadcast(sim.now, 1, fake);
    sim.inject(0, Via::Group, rogue.addr, &d);
    assert!(sim.go_data(0).iter().all(|(r, _)| *r != rogue.peer_id()));
    assert_eq!(sim.nodes[0].node.stats().dropped(DropReason::OrgSealed), 1);
    assert_eq!(sim.nodes[0].node.stats().dropped(DropReason::BadPayload), 0);
}

#[test]
fn an_announce_with_too_many_orgs_is_malformed() {
    let mut sim = lan();
    let mut rogue = Rogue::new(9, SocketAddrV4::new([10, 0, 0, 97].into(), 4001));
    assert!(rogue.join(&mut sim, 0));
    let entry = serde_json::json!({"id": org_id(), "rl": 0});
    let body = serde_json::json!({
        "ip": rogue.addr.ip().to_string(), "port": rogue.addr.port(),
        "interval_ms": 30_000, "last_bcast": 0,
        "orgs": [entry, entry, entry, entry, entry],
        "pad": "x".repeat(400),
    });
    let a = rogue.seal(sim.now, Kind::Announce, &body);
    sim.inject(0, Via::Group, rogue.addr, &a);
    assert_eq!(sim.nodes[0].node.stats().dropped(DropReason::BadBody), 1);
}
