//! Criterion benchmarks of the pure parts: envelope sealing and
//! verification (next to raw `ed25519_dalek::verify_strict` on the same
//! bytes, so the envelope's overhead is a ratio measured in one run),
//! payload validation, the node's handling of one data datagram, and
//! loading a large peer list.
//!
//! Run: `cargo bench --bench pure` (results in `target/criterion/`;
//! `cargo bench --bench lab -- summary` turns them into a table with the
//! verify ratio). See `docs/BENCHMARKS.md`.

// Set-up failures should stop the benchmark loudly, as in tests.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signature, Signer as _, SigningKey};
use pigeon::config::Config;
use pigeon::core::{Action, Destination, Millis, Node, NodeParams, Now, PeerRecord, Via};
use pigeon::identity::peer_id_of;
use pigeon::peerstore::{self, FORMAT_VERSION, Loaded, PeerFile, StoredPeer, StoredReliability};
use pigeon::slips::{ToSlips, payload};
use pigeon::wire::{
    self, AnnounceBody, ChallengeBody, DataBody, Kind, ResponseBody, SIGN_DOMAIN, Stamp, Unverified,
};
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

const NET: &str = "slips";
const T0: Millis = 1_800_000_000_000;
/// Length of the envelope's fixed suffix `,"sig":"<88 base64>"}`.
const SUFFIX_LEN: usize = 8 + 88 + 2;
const PREFIX_LEN: usize = 5; // {"m":

/// The base64 payload of a typical Slips report, byte for byte what Slips
/// 1.1.21 publishes (Python `json.dumps` separators).
fn report_payload(ip: Ipv4Addr) -> String {
    let inner = format!(
        "{{\"message_type\": \"report\", \"key_type\": \"ip\", \"key\": \"{ip}\", \
         \"evaluation_type\": \"score_confidence\", \"evaluation\": {{\"score\": 0.8, \"confidence\": 0.9}}}}"
    );
    BASE64_STANDARD.encode(inner)
}

fn data_body(id: u64) -> DataBody {
    DataBody {
        id,
        to: None,
        to_inst: None,
        payload: report_payload(Ipv4Addr::new(203, 0, 113, 7)),
    }
}

/// Datagram `seq` of the sender is stamped, and handed to the node, at
/// `at(seq)`: 100 ms apart, because a proven peer's `go_data` toward Slips
/// is limited to 10 per second (bursts of 200).
const SPACING_MS: Millis = 100;

fn at(seq: u64) -> Millis {
    T0 + seq * SPACING_MS
}

fn stamp(seq: u64) -> Stamp {
    Stamp {
        instance: 42,
        seq,
        ts_ms: at(seq),
    }
}

/// Datagrams the sender spends on joining (announce, response).
const JOIN_SEQS: u64 = 2;

/// The sender joins `node` as a pigeon does (protocol v2): a padded
/// announce from `src`, the node's challenge to `src`, and the signed
/// response from `src`. Afterwards its address is proven and a session is
/// open from broadcast id 1.
fn join(node: &mut Node, sender: &SigningKey, src: SocketAddr) {
    let SocketAddr::V4(src4) = src else {
        panic!("IPv4 source expected");
    };
    let mut body = AnnounceBody {
        ip: *src4.ip(),
        port: src4.port(),
        interval_ms: 30_000,
        last_bcast: 0,
        pad: String::new(),
    };
    body.pad = wire::padding(
        sender,
        NET,
        stamp(1),
        Kind::Announce,
        &body,
        wire::MIN_ANNOUNCE_LEN,
    )
    .expect("announce");
    let announce = wire::seal(sender, NET, stamp(1), Kind::Announce, &body).expect("seal");
    assert!(announce.len() >= wire::MIN_ANNOUNCE_LEN);
    node.handle_datagram(Now::same(at(1)), Via::Group, src, &announce);
    let mut nonce = None;
    while let Some(a) = node.poll_action() {
        if let Action::Send {
            to: Destination::Probe(to),
            datagram,
        } = a
            && to == src4
            && let Ok(v) = Unverified::parse(&datagram, NET).and_then(|u| u.verify(NET))
            && v.kind == Kind::Challenge
        {
            nonce = v.body::<ChallengeBody>().ok().map(|b| b.nonce);
        }
    }
    let nonce = nonce.expect("the node challenges a padded announce");
    let response = ResponseBody {
        nonce,
        next_bcast: 1,
    };
    let d = wire::seal(sender, NET, stamp(2), Kind::Response, &response).expect("seal");
    node.handle_datagram(Now::same(at(2)), Via::Unicast, src, &d);
    assert!(
        node.peers().is_proven_at(&sender.verifying_key(), src4),
        "the sender's address is proven after its response"
    );
}

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn envelope(c: &mut Criterion) {
    let k = key(1);
    let body = data_body(1);
    let d = wire::seal(&k, NET, stamp(1), Kind::Data, &body).expect("seal");
    // Exactly the bytes the envelope signs: domain, network, NUL, M.
    let m = &d[PREFIX_LEN..d.len() - SUFFIX_LEN];
    let mut signed = SIGN_DOMAIN.to_vec();
    signed.extend_from_slice(NET.as_bytes());
    signed.push(0);
    signed.extend_from_slice(m);
    let sig: Signature = k.sign(&signed);
    let vk = k.verifying_key();
    assert!(vk.verify_strict(&signed, &sig).is_ok());
    assert!(
        Unverified::parse(&d, NET)
            .and_then(|u| u.verify(NET))
            .is_ok()
    );
    eprintln!(
        "envelope: datagram {} bytes, signed message {} bytes",
        d.len(),
        signed.len()
    );

    // Only when benchmarking: `cargo test --benches` runs this file too.
    if std::env::args().any(|a| a == "--bench") {
        interleaved_ratio(&d, &signed, &sig, &vk);
    }

    let mut g = c.benchmark_group("envelope");
    g.throughput(Throughput::Elements(1));
    g.bench_function("seal", |b| {
        b.iter(|| wire::seal(&k, NET, black_box(stamp(1)), Kind::Data, black_box(&body)))
    });
    g.bench_function("parse_verify", |b| {
        b.iter(|| {
            Unverified::parse(black_box(&d), NET)
                .and_then(|u| u.verify(NET))
                .map(|v| v.stamp)
        })
    });
    g.bench_function("parse_only", |b| {
        b.iter(|| Unverified::parse(black_box(&d), NET).map(|u| u.stamp()))
    });
    g.bench_function("raw_verify_strict", |b| {
        b.iter(|| vk.verify_strict(black_box(&signed), black_box(&sig)))
    });
    g.bench_function("raw_sign", |b| b.iter(|| k.sign(black_box(&signed))));
    g.finish();
}

/// Envelope decode+verify against raw `verify_strict`, alternated in short
/// rounds so that load drifting between criterion's separate runs cannot
/// bias the ratio. Printed and saved to `target/bench-lab/verify_ratio.json`
/// (read by `cargo bench --bench lab -- summary`).
fn interleaved_ratio(d: &[u8], signed: &[u8], sig: &Signature, vk: &ed25519_dalek::VerifyingKey) {
    const ROUNDS: u32 = 40;
    const PER_ROUND: u32 = 250;
    let (mut wire_t, mut raw_t) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..ROUNDS {
        let s = Instant::now();
        for _ in 0..PER_ROUND {
            let ok = Unverified::parse(black_box(d), NET).and_then(|u| u.verify(NET));
            black_box(ok.is_ok());
        }
        wire_t += s.elapsed();
        let s = Instant::now();
        for _ in 0..PER_ROUND {
            black_box(vk.verify_strict(black_box(signed), black_box(sig)).is_ok());
        }
        raw_t += s.elapsed();
    }
    let n = f64::from(ROUNDS * PER_ROUND);
    let wire_us = wire_t.as_secs_f64() / n * 1e6;
    let raw_us = raw_t.as_secs_f64() / n * 1e6;
    let ratio = raw_us / wire_us;
    eprintln!(
        "envelope: interleaved {ROUNDS} x {PER_ROUND}: decode+verify {wire_us:.2} µs, \
         raw verify_strict {raw_us:.2} µs; ratio of rates {ratio:.3} (goal >= 0.8)"
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-lab");
    let json = format!(
        "{{\"decode_verify_us\": {wire_us:.3}, \"raw_verify_strict_us\": {raw_us:.3}, \"ratio\": {ratio:.4}, \"datagram_bytes\": {}, \"signed_bytes\": {}}}\n",
        d.len(),
        signed.len()
    );
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join("verify_ratio.json"), json);
    }
}

fn validate(c: &mut Criterion) {
    let p = report_payload(Ipv4Addr::new(203, 0, 113, 7));
    assert!(payload::validate(&p).is_ok());
    let mut g = c.benchmark_group("payload");
    g.throughput(Throughput::Elements(1));
    g.bench_function("validate_report", |b| {
        b.iter(|| payload::validate(black_box(&p)))
    });
    g.finish();
}

/// `Node::handle_datagram` for a valid broadcast data datagram from a
/// joined peer (address proven, session open): parse, replay and rate checks, signature, dedup, payload
/// validation, reliability update and the go_data action for Slips.
fn handle_datagram(c: &mut Criterion) {
    let config = Config::default();
    let sender = key(2);
    let src = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 4001));
    let new_node = || {
        Node::new(
            &config,
            key(1),
            NodeParams {
                unicast: SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 4001),
                instance: 7,
                rng_seed: 1,
            },
            Vec::new(),
            Now::same(T0),
        )
    };
    // Sanity: the datagram is delivered to Slips.
    {
        let mut n = new_node();
        join(&mut n, &sender, src);
        let d = wire::seal(
            &sender,
            NET,
            stamp(JOIN_SEQS + 1),
            Kind::Data,
            &data_body(1),
        )
        .expect("seal");
        n.handle_datagram(Now::same(at(JOIN_SEQS + 1)), Via::Group, src, &d);
        let mut delivered = 0;
        while let Some(a) = n.poll_action() {
            if matches!(a, Action::ToSlips(ToSlips::GoData { .. })) {
                delivered += 1;
            }
        }
        assert_eq!(delivered, 1, "the benchmark datagram must reach Slips");
    }

    let mut g = c.benchmark_group("node");
    g.throughput(Throughput::Elements(1));
    g.bench_function("handle_datagram_data", |b| {
        // Every datagram has a fresh seq, id and timestamp (replays are
        // dropped early) and arrives 100 ms after the previous one (within
        // the per-peer quotas toward the node and toward Slips). Sealing and a fresh node per batch are
        // outside the timing.
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let batch = (iters - done).min(2_000);
                let datagrams: Vec<Vec<u8>> = (1..=batch)
                    .map(|i| {
                        wire::seal(
                            &sender,
                            NET,
                            stamp(JOIN_SEQS + i),
                            Kind::Data,
                            &data_body(i),
                        )
                        .expect("seal")
                    })
                    .collect();
                let mut node = new_node();
                join(&mut node, &sender, src);
                while node.poll_action().is_some() {}
                let mut delivered = 0u64;
                let start = Instant::now();
                for (i, d) in datagrams.iter().enumerate() {
                    node.handle_datagram(
                        Now::same(at(JOIN_SEQS + i as u64 + 1)),
                        Via::Group,
                        src,
                        d,
                    );
                    while let Some(a) = node.poll_action() {
                        delivered +=
                            u64::from(matches!(a, Action::ToSlips(ToSlips::GoData { .. })));
                        black_box(a);
                    }
                }
                total += start.elapsed();
                assert_eq!(delivered, batch, "every datagram delivered to Slips");
                done += batch;
            }
            total
        })
    });
    g.finish();
}

/// A peer list of `n` peers with keys from seeds, as pigeon writes it.
fn peer_file(n: usize, now_secs: u64) -> PeerFile {
    let peers = (0..n)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            let vk = SigningKey::from_bytes(&seed).verifying_key();
            StoredPeer {
                peer_id: peer_id_of(&vk),
                public_key: BASE64_STANDARD.encode(vk.as_bytes()),
                ip: Some(Ipv4Addr::from(0x0a4d_0000 + i as u32 + 256)),
                port: Some(4001),
                first_seen: now_secs - 86_400,
                last_seen: now_secs - 60,
                reliability: StoredReliability {
                    sum: 3.0,
                    weight: 4.0,
                    at_ms: (now_secs - 60) * 1000,
                },
                reported_reliability: Some(0.75),
                organisations: Vec::new(),
            }
        })
        .collect();
    PeerFile {
        version: FORMAT_VERSION,
        saved_at: now_secs,
        peers,
    }
}

/// Start-up cost of a large peer list: `peerstore::load` (read + JSON) and
/// `PeerFile::into_records` (key decoding), then `Node::new` (table
/// inserts; beyond `max_peers`, 1024 by default, every insert evicts the
/// least recently seen inactive peer).
fn peer_list(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let now_secs = T0 / 1000;
    let mut g = c.benchmark_group("peer_list");
    g.sample_size(10);
    for n in [1_000usize, 10_000] {
        let path = dir.path().join(format!("peers-{n}.json"));
        peerstore::save(&path, &peer_file(n, now_secs)).expect("save");
        let config = Config::default();
        let load = || match peerstore::load(&path).expect("load") {
            Loaded::Peers(f) => f.into_records(),
            other => panic!("peer list not loaded: {other:?}"),
        };
        let new_node = |stored: Vec<PeerRecord>| {
            Node::new(
                &config,
                key(1),
                NodeParams {
                    unicast: SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 4001),
                    instance: 7,
                    rng_seed: 1,
                },
                stored,
                Now::same(T0),
            )
        };
        let kept = new_node(load()).peers().len();
        eprintln!("peer_list: {n} stored peers -> {kept} in the table");
        g.bench_function(format!("load_{n}"), |b| b.iter(load));
        g.bench_function(format!("node_new_{n}"), |b| {
            b.iter_batched(load, new_node, BatchSize::LargeInput)
        });
        g.bench_function(format!("load_and_node_new_{n}"), |b| {
            b.iter(|| new_node(load()))
        });
    }
    g.finish();
}

/// Organisations: what sealing an org message costs on top of the clear
/// one (bytes and µs), distributing a sending key (HPKE wrap / unwrap,
/// once per member and epoch) and checking a member's credential (once
/// per announce that carries a new one).
fn org(c: &mut Criterion) {
    use pigeon::org::crypto::{self, MemberSecret, SealedPayload};
    use pigeon::org::{Credential, MembershipRequest};
    use rand::SeedableRng as _;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let org = key(200);
    let sender = key(1);
    let recipient = MemberSecret::derive(&key(2).to_bytes());
    let report = report_payload(Ipv4Addr::new(203, 0, 113, 7));
    let sending_key = [42u8; 32];
    let (org_pk, sender_pk) = (
        *org.verifying_key().as_bytes(),
        *sender.verifying_key().as_bytes(),
    );
    let org_id = pigeon::org::org_id(&org.verifying_key());
    let seal = |rng: &mut rand::rngs::StdRng| {
        let nonce: [u8; crypto::NONCE_LEN] = rand::RngExt::random(rng);
        let aad = crypto::message_aad(&org_pk, &sender_pk, 12_345);
        SealedPayload {
            org_id: org_id.clone(),
            epoch: 12_345,
            nonce,
            ciphertext: crypto::seal(&sending_key, &nonce, &aad, report.as_bytes()),
        }
        .encode()
    };
    let sealed = seal(&mut rng);
    let datagram_len = |payload: &str| {
        let body = DataBody {
            id: 1,
            to: None,
            to_inst: None,
            payload: payload.to_owned(),
        };
        wire::seal(&sender, NET, stamp(1), Kind::Data, &body)
            .expect("seal")
            .len()
    };
    eprintln!(
        "org: report datagram {} bytes in clear, {} bytes sealed (+{}); payload {} -> {} characters",
        datagram_len(&report),
        datagram_len(&sealed),
        datagram_len(&sealed) - datagram_len(&report),
        report.len(),
        sealed.len()
    );
    let mut g = c.benchmark_group("org");
    g.bench_function("seal_report", |b| b.iter(|| black_box(seal(&mut rng))));
    g.bench_function("open_report", |b| {
        b.iter(|| {
            let p = SealedPayload::parse(black_box(&sealed)).expect("parse");
            let aad = crypto::message_aad(&org_pk, &sender_pk, p.epoch);
            black_box(crypto::open(&sending_key, &p.nonce, &aad, &p.ciphertext).expect("open"))
        })
    });
    let info = crypto::key_info(
        &org_pk,
        &sender_pk,
        12_345,
        key(2).verifying_key().as_bytes(),
    );
    g.bench_function("wrap_sending_key", |b| {
        b.iter(|| {
            black_box(crypto::wrap_key(
                &mut rng,
                &recipient.public(),
                &info,
                &sending_key,
            ))
        })
    });
    let (enc, wrapped) =
        crypto::wrap_key(&mut rng, &recipient.public(), &info, &sending_key).expect("wrap");
    g.bench_function("unwrap_sending_key", |b| {
        b.iter(|| black_box(recipient.unwrap_key(&enc, &wrapped, &info).expect("unwrap")))
    });
    let (req, _) = MembershipRequest::new(&key(2));
    let cred = Credential::issue(&org, &req, 1, 0, u64::MAX).encode();
    g.bench_function("credential_decode_verify", |b| {
        b.iter(|| black_box(Credential::decode(black_box(&cred)).expect("credential")))
    });
    g.finish();
}

criterion_group!(benches, envelope, validate, handle_datagram, peer_list, org);
criterion_main!(benches);
