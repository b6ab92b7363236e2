//! Untrusted datagrams: `wire::Unverified::parse` + `verify`, then a fresh
//! `core::Node` fed with the same bytes (twice, for the replay path). The
//! fixed sender key first joins that node as a pigeon does (protocol v2: a
//! padded announce, the node's challenge, the signed response), so that
//! its datagrams get past the peer table (a key that has not joined only
//! reaches the announce and response paths).
//!
//! Random bytes almost never carry a valid signature, so the first input
//! byte picks how the rest is used (and, by its bit 2, whether the
//! datagram arrives on the group or the unicast socket), and three of the four modes sign what
//! the fuzzer wrote with a fixed key, so the code behind the signature
//! check (body parsing, address checks, payload validation, Slips output)
//! is fuzzed too:
//!
//! * 0: the raw datagram;
//! * 1: the signed part `M` verbatim (header and body), signed and framed;
//! * 2: a valid header of kind `byte[1] % 8` with the rest as raw body JSON;
//! * 3: a `data` message whose payload is the rest (lossy UTF-8).
//!
//! Invariants checked besides "no panic": a datagram is never acted upon
//! twice, nothing reaches Slips that fails payload validation, and the
//! peer table stays within its bound.

#![no_main]

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::fuzz_target;
use pigeon::config::Config;
use pigeon::core::{Action, Destination, Node, NodeParams, Now, Via};
use pigeon::slips::ToSlips;
use pigeon::slips::payload;
use pigeon::wire::{
    self, AnnounceBody, ChallengeBody, DataBody, Kind, ResponseBody, SIGN_DOMAIN, Stamp, Unverified,
};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

const NET: &str = "slips";
const NOW: u64 = 1_800_000_000_000;
const KINDS: [&str; 8] = [
    "announce",
    "goodbye",
    "data",
    "ack",
    "digest",
    "nack",
    "challenge",
    "response",
];
/// Sequence numbers 1 and 2 of the sender's instance 1 are spent joining.
const FIRST_SEQ: u64 = 3;

fn frame(key: &SigningKey, m: &[u8]) -> Vec<u8> {
    let mut signed = SIGN_DOMAIN.to_vec();
    signed.extend_from_slice(NET.as_bytes());
    signed.push(0);
    signed.extend_from_slice(m);
    let sig = key.sign(&signed);
    let mut out = b"{\"m\":".to_vec();
    out.extend_from_slice(m);
    out.extend_from_slice(b",\"sig\":\"");
    out.extend_from_slice(BASE64_STANDARD.encode(sig.to_bytes()).as_bytes());
    out.extend_from_slice(b"\"}");
    out
}

fn datagram(data: &[u8], key: &SigningKey) -> Option<Vec<u8>> {
    let (&mode, rest) = data.split_first()?;
    match mode % 4 {
        0 => Some(rest.to_vec()),
        1 => Some(frame(key, rest)),
        2 => {
            let (&kind, body) = rest.split_first()?;
            let pk = BASE64_STANDARD.encode(key.verifying_key().as_bytes());
            let mut m = format!(
                "{{\"v\":2,\"net\":\"{NET}\",\"pk\":\"{pk}\",\"inst\":1,\"seq\":{FIRST_SEQ},\"ts\":{NOW},\"kind\":\"{}\",\"body\":",
                KINDS[usize::from(kind) % KINDS.len()]
            )
            .into_bytes();
            m.extend_from_slice(body);
            m.push(b'}');
            Some(frame(key, &m))
        }
        _ => {
            let body = DataBody {
                id: 1,
                to: None,
                to_inst: None,
                payload: String::from_utf8_lossy(rest).into_owned(),
            };
            let stamp = Stamp {
                instance: 1,
                seq: FIRST_SEQ,
                ts_ms: NOW,
            };
            wire::seal(key, NET, stamp, Kind::Data, &body)
        }
    }
}

/// The sender joins `node` from `src`: afterwards its address is proven
/// and a session with its instance 1 is open from broadcast id 1.
fn join(node: &mut Node, key: &SigningKey, src: SocketAddrV4) {
    let stamp = |seq| Stamp {
        instance: 1,
        seq,
        ts_ms: NOW,
    };
    let mut body = AnnounceBody {
        ip: *src.ip(),
        port: src.port(),
        interval_ms: 30_000,
        last_bcast: 0,
        pad: String::new(),
    };
    body.pad = wire::padding(key, NET, stamp(1), Kind::Announce, &body, wire::MIN_ANNOUNCE_LEN)
        .expect("announce");
    let announce = wire::seal(key, NET, stamp(1), Kind::Announce, &body).expect("seal");
    node.handle_datagram(Now::same(NOW), Via::Group, SocketAddr::V4(src), &announce);
    let mut nonce = None;
    while let Some(a) = node.poll_action() {
        if let Action::Send {
            to: Destination::Probe(to),
            datagram,
        } = a
            && to == src
            && let Ok(v) = Unverified::parse(&datagram, NET).and_then(|u| u.verify(NET))
            && v.kind == Kind::Challenge
        {
            nonce = v.body::<ChallengeBody>().ok().map(|b| b.nonce);
        }
    }
    let response = ResponseBody {
        nonce: nonce.expect("a padded announce is challenged"),
        next_bcast: 1,
    };
    let d = wire::seal(key, NET, stamp(2), Kind::Response, &response).expect("seal");
    node.handle_datagram(Now::same(NOW), Via::Unicast, SocketAddr::V4(src), &d);
    assert!(node.peers().is_proven_at(&key.verifying_key(), src));
    while node.poll_action().is_some() {}
}

fuzz_target!(|data: &[u8]| {
    let sender = SigningKey::from_bytes(&[7; 32]);
    let Some(d) = datagram(data, &sender) else {
        return;
    };
    if let Ok(u) = Unverified::parse(&d, NET) {
        let _ = u.stamp();
        let _ = u.claimed_key();
        if let Ok(v) = u.verify(NET) {
            let _ = v.body::<serde::de::IgnoredAny>();
        }
    }

    let config = Config::default();
    let mut node = Node::new(
        &config,
        SigningKey::from_bytes(&[9; 32]),
        NodeParams {
            unicast: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 9), 4001),
            instance: 1,
            rng_seed: 1,
        },
        Vec::new(),
        Now::same(NOW),
    );
    let src4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 7), 4001);
    join(&mut node, &sender, src4);
    let via = if data.first().is_some_and(|m| m & 4 != 0) {
        Via::Unicast
    } else {
        Via::Group
    };
    let src = SocketAddr::V4(src4);
    node.handle_datagram(Now::same(NOW), via, src, &d);
    let accepted = node.stats().datagrams_accepted;
    node.handle_datagram(Now::same(NOW), via, src, &d);
    assert_eq!(
        node.stats().datagrams_accepted,
        accepted,
        "a datagram was acted upon twice"
    );
    assert!(node.peers().len() <= config.security.max_peers);
    let mut go_data = 0;
    while let Some(action) = node.poll_action() {
        if let Action::ToSlips(ToSlips::GoData { message, .. }) = action {
            go_data += 1;
            assert!(
                payload::validate(&message).is_ok(),
                "invalid payload forwarded to Slips: {message:?}"
            );
        }
    }
    assert!(go_data <= 1, "one datagram, {go_data} messages for Slips");
});
