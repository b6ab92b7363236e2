//! The attack suite: two real pigeons on the simulated LAN, and a third
//! host that attacks them with everything a LAN host can send, one test
//! per attack, each on a fixture of its own ([`AttackLan`]).
//!
//! Hosts 1 and 2 run pigeons as Slips would (a [`SlipsTree`] each); their
//! "Slips" is a subscriber on `p2p_gopy` and a publisher on `p2p_pygo` in
//! each host's own Redis. Host 3 is the attacker: the test forges datagrams
//! with the library (`pigeon::wire`, or by hand where the library refuses
//! to build something invalid) and sends them from sockets created inside
//! host 3 (multicast to the group with TTL 1, and unicast to the victims'
//! ports read from their `multiAddress`). Since protocol v2 only a key
//! that proved its address gets past the peer table, so every attack on
//! what lies behind it (payload checks, blame policy, bans, rates) is made
//! by a [`RoguePigeon`] that joined both victims first, each from an
//! address of its own on host 3 (at most `security.max_keys_per_ip` keys
//! per address enter a table).
//!
//! Checked after every attack ([`AttackLan::finish`]): both pigeons are
//! still running and exit cleanly; every message their Slips received
//! passes `check_gopy`; none carries an attacker's payload (only the
//! valid-signed flood may get a few valid requests through, within its
//! rate); the attack left the drop reason it should at a victim;
//! legitimate traffic h1↔h2 still flows; the peer table stayed within its
//! bound and kept the real peer. The tests judge outcomes, never speed:
//! the h1→h2 request latency with and without a flood is measured by the
//! figure run `attack_figures` (ignored by default), recorded in
//! docs/SECURITY.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use ed25519_dalek::{Signer, SigningKey};
use pigeon::config::Config;
use pigeon::wire::{self, AnnounceBody, DigestBody, GoodbyeBody, Kind, NackBody, Stamp};

use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::{BTreeSet, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use testkit::SLIPS_VERSION as VERSION;
use testkit::lab::{Lab, LabChild, SlipsTree};
use testkit::rogue::{GROUP, NET, RoguePigeon, now_ms, padded_announce, udp_socket};
use testkit::slips::{self as slips_checks, GopyMsg, SlipsSide};
use testkit::wait::{tail, wait_until};
use testkit::world::MultiAddr;

/// Unicast ports of the victims (Slips passes one per run).
const PORTS: [u16; 2] = [40101, 40102];
/// Requests per latency sample, and their spacing: Slips itself sends far
/// less (each request blocks its P2P module for 2 s).
const LATENCY_REQUESTS: usize = 50;
const LATENCY_SPACING: Duration = Duration::from_millis(100);
/// How long a legitimate message may take before it counts as lost.
const DELIVERY_LIMIT: Duration = Duration::from_secs(3);
/// Sybil keys of the peer-table exhaustion in the figure run and in the
/// test (20 times the default table bound of 1024, enough to spend the
/// victims' challenge budget), and the source addresses they are spread
/// over (secondary addresses of host 3).
const SYBIL_KEYS: u32 = 100_000;
const SYBIL_KEYS_TEST: u32 = 20_000;
const SYBIL_SOURCES: u8 = 100;
const SYBIL_FIRST_ADDR: u8 = 100;
/// Length of the framed signature after `M`: `,"sig":"` + 88 + `"}`.
const SIG_SUFFIX: usize = 98;

/// A pigeon under attack, with its Slips side.
pub(crate) struct Victim {
    pub(crate) host: usize,
    pub(crate) tree: SlipsTree,
    pub(crate) pigeon: LabChild,
    pub(crate) slips: SlipsSide,
    pub(crate) peer_id: String,
    pub(crate) unicast: SocketAddrV4,
}

impl Victim {
    pub(crate) fn start(lab: &Lab, host: usize, port: u16) -> Self {
        let tree = SlipsTree::new();
        let slips = SlipsSide::start(lab, host);
        let pigeon = tree.spawn_in_lab(lab, host, port).unwrap();
        let mut multiaddr = None;
        wait_until(Duration::from_secs(10), "multiAddress", || {
            multiaddr = slips.get("multiAddress");
            multiaddr.is_some()
        });
        let multiaddr = multiaddr.unwrap();
        let addr = MultiAddr::parse(&multiaddr).unwrap_or_else(|| panic!("{multiaddr}"));
        assert_eq!(addr.ip, lab.host_ip(host));
        wait_until(
            Duration::from_secs(10),
            "the pigeon's pygo subscription",
            || slips.pygo_subscribers() >= 1,
        );
        Self {
            host,
            tree,
            pigeon,
            slips,
            peer_id: addr.peer_id,
            unicast: SocketAddrV4::new(addr.ip, addr.port),
        }
    }

    pub(crate) fn assert_running(&mut self, when: &str) {
        assert!(
            self.pigeon.is_running(),
            "pigeon of host {} died {when}; stderr:\n{}\nlog tail:\n{}",
            self.host,
            self.tree.read_stderr(),
            tail(&self.tree.read_log(), 40)
        );
    }

    /// The latest peer_update about `peer` its Slips received.
    pub(crate) fn last_update(&self, peer: &str) -> Option<(Option<String>, Option<f64>)> {
        self.slips.last_peer_update(peer)
    }
}

/// Drop reasons named in a pigeon log (`reason=...` fields of drop lines).
pub(crate) fn logged_reasons(log: &str) -> BTreeSet<String> {
    log.lines()
        .filter(|l| l.contains("dropped"))
        .filter_map(|l| l.split("reason=").nth(1))
        .filter_map(|r| r.split_whitespace().next())
        .map(|r| r.trim_matches('"').to_owned())
        .collect()
}

// ------------------------------------------------------------------ attacker

/// Sockets in host 3 and the bookkeeping of what was sent.
struct Attacker {
    tx: UdpSocket,
    capture: UdpSocket,
    seq: u64,
    /// Every payload an attacker sent that must never reach Slips.
    forbidden: HashSet<String>,
}

impl Attacker {
    fn new(lab: &Lab) -> Self {
        let ip = lab.host_ip(3);
        let (tx, capture) = lab.run_in(3, move || {
            let cap = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
            cap.set_reuse_address(true).unwrap();
            cap.set_reuse_port(true).unwrap();
            cap.bind(&SocketAddrV4::new(*GROUP.ip(), GROUP.port()).into())
                .unwrap();
            cap.join_multicast_v4(GROUP.ip(), &ip).unwrap();
            cap.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            (udp_socket(ip), UdpSocket::from(cap))
        });
        Self {
            tx,
            capture,
            seq: 0,
            forbidden: HashSet::new(),
        }
    }

    fn stamp(&mut self, skew_ms: i64) -> Stamp {
        self.seq += 1;
        Stamp {
            instance: 4242,
            seq: self.seq,
            ts_ms: now_ms().saturating_add_signed(skew_ms),
        }
    }

    fn seal<B: Serialize>(&mut self, key: &SigningKey, kind: Kind, body: &B) -> Vec<u8> {
        let stamp = self.stamp(0);
        wire::seal(key, NET, stamp, kind, body).unwrap()
    }

    fn to_group(&self, d: &[u8]) {
        self.tx.send_to(d, GROUP).unwrap();
    }

    fn to(&self, dest: SocketAddrV4, d: &[u8]) {
        self.tx.send_to(d, dest).unwrap();
    }

    /// Waits for a multicast datagram from `from` whose text contains
    /// `needle`, skipping whatever else was captured.
    fn capture(&self, from: Ipv4Addr, needle: &str, limit: Duration) -> Vec<u8> {
        let start = Instant::now();
        let mut buf = vec![0u8; 2048];
        while start.elapsed() < limit {
            if let Ok((n, SocketAddr::V4(src))) = self.capture.recv_from(&mut buf)
                && *src.ip() == from
                && String::from_utf8_lossy(&buf[..n]).contains(needle)
            {
                return buf[..n].to_vec();
            }
        }
        panic!("captured no datagram from {from} containing {needle:?} within {limit:?}");
    }

    fn drain_capture(&self) {
        self.capture.set_nonblocking(true).unwrap();
        let mut buf = vec![0u8; 2048];
        while self.capture.recv_from(&mut buf).is_ok() {}
        self.capture.set_nonblocking(false).unwrap();
    }
}

/// Signs `m` (the envelope's signed object, verbatim) and frames it, for
/// envelopes `wire::seal` would never build.
fn frame(key: &SigningKey, net: &str, m: &str) -> Vec<u8> {
    let mut signed = wire::SIGN_DOMAIN.to_vec();
    signed.extend_from_slice(net.as_bytes());
    signed.push(0);
    signed.extend_from_slice(m.as_bytes());
    let sig = BASE64_STANDARD.encode(key.sign(&signed).to_bytes());
    format!("{{\"m\":{m},\"sig\":\"{sig}\"}}").into_bytes()
}

fn header(pk: &str, seq: u64, ts: u64, kind: &str, body: &str) -> String {
    format!(
        "{{\"v\":2,\"net\":\"{NET}\",\"pk\":\"{pk}\",\"inst\":4242,\"seq\":{seq},\"ts\":{ts},\"kind\":\"{kind}\",\"body\":{body}}}"
    )
}

fn pk_of(key: &SigningKey) -> String {
    BASE64_STANDARD.encode(key.verifying_key().as_bytes())
}

/// The signed object `M` of a framed datagram.
fn m_of(d: &[u8]) -> &str {
    let text = std::str::from_utf8(d).unwrap();
    let end = text.rfind(",\"sig\":\"").unwrap();
    &text["{\"m\":".len()..end]
}

fn key(tag: u8, n: u32) -> SigningKey {
    let mut seed = [tag; 32];
    seed[..4].copy_from_slice(&n.to_le_bytes());
    SigningKey::from_bytes(&seed)
}

/// Base64 of a Slips-shaped inner message about `ip` (attackers use
/// 203.0.113.0/24, legitimate traffic 192.0.2.0/24 and 198.51.100.0/24).
fn inner(json: &str) -> String {
    BASE64_STANDARD.encode(json)
}

// ------------------------------------------------------------------ latency

/// h1's Slips asks everyone about one IP; the time until h2's Slips gets
/// the go_data, for `n` requests. Requests that do not arrive within
/// [`DELIVERY_LIMIT`] are counted as lost.
fn request_latencies(h1: &mut Victim, h2: &Victim, n: usize, base: u32) -> (Vec<Duration>, usize) {
    let mut got = Vec::new();
    let mut lost = 0;
    for k in 0..n {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 51, 100, 0)) + base + k as u32);
        let b64 = slips_checks::request_b64(&ip.to_string());
        let from = h2.slips.len();
        let sent = Instant::now();
        assert_eq!(
            h1.slips
                .publish(&slips_checks::pygo_scroll(&b64, "*", VERSION)),
            1
        );
        let mut arrived = None;
        while sent.elapsed() < DELIVERY_LIMIT {
            arrived = h2.slips.go_data_arrival_from(&b64, from);
            if arrived.is_some() {
                break;
            }
            // The subscriber stamps arrivals itself: polling gently keeps
            // the harness from competing with the pigeons for the cores.
            thread::sleep(Duration::from_millis(2));
        }
        match arrived {
            Some(t) => got.push(t.saturating_duration_since(sent)),
            None => {
                lost += 1;
                // What the receiving pigeon logged about it, if anything.
                let log = h2.tree.read_log();
                let about: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains(&*ip.to_string()))
                    .collect();
                let drops: Vec<&str> = log.lines().filter(|l| l.contains("dropped")).collect();
                println!(
                    "lost: request about {ip}; h2's log lines about it: {about:?}; h2's last drop lines: {:?}",
                    &drops[drops.len().saturating_sub(8)..]
                );
            }
        }
        let next = sent + LATENCY_SPACING;
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    got.sort();
    (got, lost)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// CPU time (user + system) of a process so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

/// Datagrams the kernel dropped on the UDP sockets of `pid`'s network
/// namespace (full receive buffers), from `/proc/PID/net/udp`.
fn udp_drops(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/net/udp"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ------------------------------------------------------------------ floods

/// Sends datagrams from host 3 as fast as one thread can until `stop`:
/// garbage and pre-signed valid datagrams, to the group and to `victim`'s
/// unicast port. Stores the number of datagrams sent in `sent`.
fn flood(lab: &Lab, victim: SocketAddrV4, valid: &[Vec<u8>], stop: &AtomicBool, sent: &AtomicU64) {
    let ip = lab.host_ip(3);
    lab.run_in(3, || {
        let s = udp_socket(ip);
        s.set_nonblocking(true).unwrap();
        let garbage: Vec<Vec<u8>> = (0..64u32)
            .map(|k| {
                (0..(k * 37 % 1300))
                    .map(|j| (j * 31 + k * 7) as u8)
                    .collect()
            })
            .collect();
        let mut n = 0u64;
        let mut k = 0usize;
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..256 {
                let d = if k.is_multiple_of(2) {
                    &garbage[k / 2 % garbage.len()]
                } else {
                    &valid[k / 2 % valid.len()]
                };
                let dest = if k % 4 < 2 { GROUP } else { victim };
                // A full send buffer is the flood's own limit, not an error.
                if s.send_to(d, dest).is_ok() {
                    n += 1;
                }
                k += 1;
            }
        }
        sent.store(n, Ordering::Relaxed);
    });
}

// ------------------------------------------------------------------ the fixture

/// Bound of every wait for something that happens at once on an idle LAN
/// (a delivery, a join, a shutdown): only a hang reaches it, however busy
/// the machine.
const HANG_LIMIT: Duration = Duration::from_secs(30);
/// Requests h1's Slips sends while a flood runs in the flood test.
const REQUESTS_UNDER_FLOOD: usize = 20;

/// Mallory: the attacker's own key, for the attacks that need no proven
/// address (everything dropped before the peer table is consulted).
fn mallory() -> SigningKey {
    key(0xA1, 0)
}

fn announce_of(ip: Ipv4Addr, port: u16) -> AnnounceBody {
    AnnounceBody {
        ip,
        port,
        interval_ms: 30_000,
        last_bcast: 0,
        pad: String::new(),
    }
}

/// What the checks after an attack found, for the figures.
struct Verdict {
    /// Valid-signed flood messages each victim's Slips got.
    flood_delivered: [usize; 2],
    /// Peers in each victim's `peers.json` at exit.
    table_sizes: [usize; 2],
    /// Drop reasons seen at either victim.
    reasons: BTreeSet<String>,
}

/// The shared fixture: two victims (hosts 1 and 2) that met, the attacker
/// (host 3), and what the checks after every attack need to know. Every
/// test builds its own, so an attack's effects (bans, spent budgets,
/// counters) cannot leak into another's checks.
struct AttackLan {
    h1: Victim,
    h2: Victim,
    att: Attacker,
    defaults: Config,
    /// Peer ids of the attacker keys that joined both victims.
    joined: Vec<String>,
    /// The one joined key whose valid requests may reach Slips (the
    /// valid-signed flood), within its rate.
    flooder: Option<String>,
    /// Secondary addresses of host 3 handed out so far.
    addresses: u8,
    // Last: the pigeons and sockets go before the namespaces.
    lab: Lab,
}

impl AttackLan {
    fn up() -> Self {
        let lab = Lab::up(3);
        // Both victims start at once, as two Slips on a LAN would.
        let (h1, h2) = thread::scope(|s| {
            let h2 = s.spawn(|| Victim::start(&lab, 2, PORTS[1]));
            let h1 = Victim::start(&lab, 1, PORTS[0]);
            (h1, h2.join().unwrap())
        });
        let att = Attacker::new(&lab);
        wait_until(HANG_LIMIT, "h1 and h2 to meet", || {
            h2.last_update(&h1.peer_id).is_some() && h1.last_update(&h2.peer_id).is_some()
        });
        Self {
            h1,
            h2,
            att,
            defaults: Config::default(),
            joined: Vec::new(),
            flooder: None,
            addresses: 0,
            lab,
        }
    }

    fn ip(&self, i: usize) -> Ipv4Addr {
        self.lab.host_ip(i)
    }

    fn victims(&self) -> [SocketAddrV4; 2] {
        [self.h1.unicast, self.h2.unicast]
    }

    /// `n` fresh secondary addresses of host 3 (10.77.0.100 and up): the
    /// sources of joining attacker keys (at most `max_keys_per_ip` keys of
    /// one address enter a peer table) and of the Sybils.
    fn new_addresses(&mut self, n: u8) -> Vec<Ipv4Addr> {
        let first = SYBIL_FIRST_ADDR
            .checked_add(self.addresses)
            .filter(|f| f.checked_add(n).is_some())
            .expect("host 3 has no more secondary addresses to give");
        let ips: Vec<Ipv4Addr> = (0..n)
            .map(|j| Ipv4Addr::new(10, 77, 0, first + j))
            .collect();
        let batch: String = ips
            .iter()
            .map(|ip| format!("addr add {ip}/24 dev veth0\n"))
            .collect();
        let batch_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(batch_file.path(), batch).unwrap();
        let out = Command::new("ip")
            .args(["-n", &self.lab.netns(3), "-batch"])
            .arg(batch_file.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.addresses += n;
        ips
    }

    /// `key` joins both victims from `ip` (an address of host 3). Returns
    /// once both victims told their Slips about it: the key's address is
    /// then proven at both, so what it sends next is judged on its merits.
    fn join(&mut self, ip: Ipv4Addr, key: SigningKey) -> RoguePigeon {
        let mut rogue = RoguePigeon::new(&self.lab, 3, ip, key);
        rogue.join(&self.victims(), HANG_LIMIT);
        let id = rogue.peer_id();
        wait_until(
            HANG_LIMIT,
            &format!("both victims' Slips to hear of {id}"),
            || self.h1.last_update(&id).is_some() && self.h2.last_update(&id).is_some(),
        );
        self.joined.push(id);
        rogue
    }

    /// Records a payload that must never reach a victim's Slips.
    fn forbid(&mut self, payload: &str) {
        self.att.forbidden.insert(payload.to_owned());
    }

    /// A signed announce of Mallory's.
    fn mallory_announce(&mut self) -> Vec<u8> {
        let body = announce_of(self.ip(3), 9);
        self.att.seal(&mallory(), Kind::Announce, &body)
    }

    /// h1's Slips broadcasts `b64`; returns the datagram of it captured on
    /// the LAN, once h2's Slips got it.
    fn captured_broadcast_of_h1(&mut self, b64: &str) -> Vec<u8> {
        assert_eq!(
            self.h1
                .slips
                .publish(&slips_checks::pygo_scroll(b64, "*", VERSION)),
            1
        );
        let d = self.att.capture(self.ip(1), b64, HANG_LIMIT);
        wait_until(HANG_LIMIT, "h1's broadcast at h2", || {
            self.h2.slips.go_data_arrival(b64).is_some()
        });
        d
    }

    /// The checks after every attack: both victims still run; legitimate
    /// traffic flows both ways (directed too), exactly once; they exit
    /// cleanly on SIGINT; every message their Slips got is valid, none is
    /// an attacker's, and Slips heard only of keys that joined; each of
    /// `reasons` was dropped at a victim; the peer tables stayed bounded
    /// and kept the real peer.
    fn finish(&mut self, reasons: &[&str]) -> Verdict {
        self.h1.assert_running("after the attack");
        self.h2.assert_running("after the attack");
        self.legitimate_traffic_flows();
        for v in [&mut self.h1, &mut self.h2] {
            v.pigeon.sigint().unwrap();
            let status = v.pigeon.wait_timeout(HANG_LIMIT);
            assert!(
                status.is_some_and(|s| s.success()),
                "host {} exit: {status:?}\n{}",
                v.host,
                v.tree.read_stderr()
            );
        }
        let flood_delivered = self.slips_got_nothing_of_the_attackers();
        let seen = self.drop_reasons();
        let missing: Vec<&&str> = reasons.iter().filter(|r| !seen.contains(**r)).collect();
        assert!(
            missing.is_empty(),
            "drop reasons not seen: {missing:?}\nseen: {seen:?}"
        );
        Verdict {
            flood_delivered,
            table_sizes: self.peer_tables_kept_the_real_peer(),
            reasons: seen,
        }
    }

    fn legitimate_traffic_flows(&mut self) {
        let directed = slips_checks::report_b64("192.0.2.1", 0.25, 0.5);
        let from2 = slips_checks::request_b64("192.0.2.2");
        let from1 = slips_checks::request_b64("192.0.2.3");
        let to_h1 = slips_checks::pygo_scroll(&directed, &self.h1.peer_id, VERSION);
        assert_eq!(self.h2.slips.publish(&to_h1), 1);
        assert_eq!(
            self.h2
                .slips
                .publish(&slips_checks::pygo_scroll(&from2, "*", VERSION)),
            1
        );
        assert_eq!(
            self.h1
                .slips
                .publish(&slips_checks::pygo_scroll(&from1, "*", VERSION)),
            1
        );
        for (v, b64, what) in [
            (&self.h1, &directed, "h2's directed report at h1"),
            (&self.h1, &from2, "h2's broadcast at h1"),
            (&self.h2, &from1, "h1's broadcast at h2"),
        ] {
            wait_until(HANG_LIMIT, what, || v.slips.go_data_arrival(b64).is_some());
            assert_eq!(v.slips.count_go_data(b64), 1, "{what}: more than once");
        }
        let (ip1, ip2) = (self.ip(1), self.ip(2));
        for (v, other, ip) in [
            (&self.h1, &self.h2.peer_id, ip2),
            (&self.h2, &self.h1.peer_id, ip1),
        ] {
            assert_eq!(
                v.last_update(other).and_then(|(ip, _)| ip),
                Some(ip.to_string()),
                "the other victim's address at host {}",
                v.host
            );
        }
    }

    /// Every message the victims' Slips got passes `check_gopy`; none
    /// carries an attacker's payload or comes from an attacker's key, but
    /// for the valid-signed flood within its rate; no attacker's
    /// `peer_update` carries a victim's address, and none is about a key
    /// that never joined. Returns the flood messages each victim got.
    fn slips_got_nothing_of_the_attackers(&self) -> [usize; 2] {
        let now = slips_checks::now_unix();
        let (ip1, ip2) = (self.ip(1).to_string(), self.ip(2).to_string());
        let victims = [&self.h1.peer_id, &self.h2.peer_id];
        let mut flood_delivered = [0usize; 2];
        for (v, victim) in [&self.h1, &self.h2].iter().enumerate() {
            for (_, payload) in victim.slips.messages() {
                let msg =
                    slips_checks::check_gopy(&payload, VERSION, now + 1).unwrap_or_else(|e| {
                        panic!(
                            "host {}'s Slips got an invalid message {:?}: {e:?}",
                            victim.host,
                            String::from_utf8_lossy(&payload)
                        )
                    });
                match msg {
                    GopyMsg::GoData {
                        reporter, message, ..
                    } => {
                        let message = message.trim_end_matches('\n');
                        assert!(
                            !self.att.forbidden.contains(message),
                            "host {}'s Slips got an attacker's payload {message} from {reporter}",
                            victim.host
                        );
                        if self.flooder.as_ref() == Some(&reporter) {
                            flood_delivered[v] += 1;
                        } else {
                            assert!(
                                victims.contains(&&reporter),
                                "host {}'s Slips got go_data from attacker or unknown {reporter}: {message}",
                                victim.host
                            );
                        }
                    }
                    GopyMsg::PeerUpdate { peerid, ip, .. } => {
                        if victims.contains(&&peerid) {
                            continue;
                        }
                        assert!(
                            self.joined.contains(&peerid),
                            "host {}'s Slips heard of {peerid}, a key that never joined",
                            victim.host
                        );
                        assert_ne!(ip.as_ref(), Some(&ip1), "{peerid} hijacked h1's address");
                        assert_ne!(ip.as_ref(), Some(&ip2), "{peerid} hijacked h2's address");
                    }
                }
            }
        }
        // The valid-signed flood: a key's valid requests get through at
        // its rate at most, until over-rate strikes ban it.
        let s = &self.defaults.security;
        let budget = s.per_peer_burst as f64
            + s.per_peer_rate as f64 * (f64::from(s.ban_after_misbehaviours) + 2.0);
        for (v, n) in flood_delivered.iter().enumerate() {
            assert!(
                (*n as f64) <= budget,
                "host {} delivered {n} flood messages (budget {budget})",
                v + 1
            );
        }
        flood_delivered
    }

    /// Drop reasons at either victim: named in a drop line of its log, or
    /// counted in the `drops by reason` line it logs at exit (which counts
    /// the routine ones, logged at debug level only, too).
    fn drop_reasons(&self) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        for v in [&self.h1, &self.h2] {
            let log = v.tree.read_log();
            seen.extend(logged_reasons(&log));
            seen.extend(drop_counts(&log).into_keys());
        }
        seen
    }

    /// Each victim's stored peers: the real peer and at most the attacker
    /// keys that joined. Returns the table sizes.
    fn peer_tables_kept_the_real_peer(&self) -> [usize; 2] {
        let mut sizes = [0; 2];
        for (k, (v, other)) in [(&self.h1, &self.h2.peer_id), (&self.h2, &self.h1.peer_id)]
            .into_iter()
            .enumerate()
        {
            let file = std::fs::read_to_string(v.tree.runtime_dir().join("peers.json")).unwrap();
            let file: serde_json::Value = serde_json::from_str(&file).unwrap();
            let peers = file["peers"].as_array().unwrap();
            assert!(
                peers.len() <= 1 + self.joined.len(),
                "host {}: {} peers stored, {} attacker keys joined",
                v.host,
                peers.len(),
                self.joined.len()
            );
            assert!(
                peers.iter().any(|p| p["peer_id"] == **other),
                "host {} forgot its real peer",
                v.host
            );
            sizes[k] = peers.len();
        }
        sizes
    }
}

/// The counters of the `drops by reason: a=1 b=2` line a pigeon logs at
/// exit (the last one in `log`).
fn drop_counts(log: &str) -> std::collections::BTreeMap<String, u64> {
    let Some(line) = log.lines().rev().find(|l| l.contains("drops by reason:")) else {
        return Default::default();
    };
    line.split("drops by reason:")
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|w| {
            let (k, n) = w.split_once('=')?;
            Some((k.to_owned(), n.parse().ok()?))
        })
        .filter(|(k, n)| k != "bans" && *n > 0)
        .collect()
}

// ------------------------------------------------------------------ malformed and forged datagrams

/// A datagram cut short is dropped as badly framed.
#[test]
fn truncated_datagram_is_dropped_as_bad_framing() {
    let mut lan = AttackLan::up();
    let a = lan.mallory_announce();
    lan.att.to_group(&a[..a.len() - 10]);
    lan.finish(&["bad_framing"]);
}

/// One byte over the datagram limit (1201 bytes) is dropped unparsed.
#[test]
fn datagram_over_the_size_limit_is_dropped_as_oversized() {
    let mut lan = AttackLan::up();
    let mut big = lan.mallory_announce();
    big.resize(wire::MAX_DATAGRAM + 1, b' ');
    lan.att.to_group(&big);
    lan.finish(&["oversized"]);
}

/// A 64 KiB datagram, to the group and to a unicast port, is dropped
/// unread.
#[test]
fn datagram_of_64_kib_is_dropped_as_oversized_on_both_sockets() {
    let mut lan = AttackLan::up();
    let huge = vec![b'{'; 65_507];
    lan.att.to_group(&huge);
    lan.att.to(lan.h2.unicast, &huge);
    lan.finish(&["oversized"]);
}

/// An empty datagram, to the group and to a unicast port.
#[test]
fn empty_datagram_is_dropped_as_bad_framing() {
    let mut lan = AttackLan::up();
    lan.att.to_group(b"");
    lan.att.to(lan.h2.unicast, b"");
    lan.finish(&["bad_framing"]);
}

/// A header that is not JSON, framed with a genuine signature's bytes.
#[test]
fn bad_json_in_the_header_is_dropped_as_bad_header() {
    let mut lan = AttackLan::up();
    let a = lan.mallory_announce();
    let mut bad_json = b"{\"m\":{\"v\":1,\"net\":slips,}".to_vec();
    bad_json.extend_from_slice(&a[a.len() - SIG_SUFFIX..]);
    lan.att.to_group(&bad_json);
    lan.finish(&["bad_header"]);
}

/// One base64 character of the signature changed.
#[test]
fn changed_signature_is_dropped_as_bad_signature() {
    let mut lan = AttackLan::up();
    let mut bad_sig = lan.mallory_announce();
    let i = bad_sig.len() - 20;
    bad_sig[i] = if bad_sig[i] == b'A' { b'B' } else { b'A' };
    lan.att.to_group(&bad_sig);
    lan.finish(&["bad_signature"]);
}

/// The signature of another datagram of the same key.
#[test]
fn signature_of_another_datagram_is_dropped_as_bad_signature() {
    let mut lan = AttackLan::up();
    let good = lan.mallory_announce();
    let other = lan.att.seal(&mallory(), Kind::Goodbye, &GoodbyeBody {});
    let mut swapped = good[..good.len() - SIG_SUFFIX].to_vec();
    swapped.extend_from_slice(&other[other.len() - SIG_SUFFIX..]);
    lan.att.to_group(&swapped);
    lan.finish(&["bad_signature"]);
}

/// A validly signed datagram of another network.
#[test]
fn wrong_network_name_is_dropped_as_wrong_network() {
    let mut lan = AttackLan::up();
    let stamp = lan.att.stamp(0);
    let wrong_net = wire::seal(&mallory(), "other", stamp, Kind::Goodbye, &GoodbyeBody {}).unwrap();
    lan.att.to_group(&wrong_net);
    lan.finish(&["wrong_network"]);
}

/// `"v":3`, validly signed.
#[test]
fn unknown_protocol_version_is_dropped_as_bad_version() {
    let mut lan = AttackLan::up();
    let s = lan.att.stamp(0);
    let v3 =
        header(&pk_of(&mallory()), s.seq, s.ts_ms, "goodbye", "{}").replace("\"v\":2", "\"v\":3");
    lan.att.to_group(&frame(&mallory(), NET, &v3));
    lan.finish(&["bad_version"]);
}

/// `"kind":"exploit"`, validly signed.
#[test]
fn unknown_kind_is_dropped_as_bad_header() {
    let mut lan = AttackLan::up();
    let s = lan.att.stamp(0);
    let exploit = header(&pk_of(&mallory()), s.seq, s.ts_ms, "exploit", "{}");
    lan.att.to_group(&frame(&mallory(), NET, &exploit));
    lan.finish(&["bad_header"]);
}

/// A sequence number JavaScript could not represent (above 2^53).
#[test]
fn sequence_number_above_2_53_is_dropped_as_bad_header() {
    let mut lan = AttackLan::up();
    let s = lan.att.stamp(0);
    let unsafe_int = header(&pk_of(&mallory()), 1 << 60, s.ts_ms, "goodbye", "{}");
    lan.att.to_group(&frame(&mallory(), NET, &unsafe_int));
    lan.finish(&["bad_header"]);
}

/// A header field given twice, validly signed.
#[test]
fn duplicate_header_field_is_dropped_as_bad_header() {
    let mut lan = AttackLan::up();
    let s = lan.att.stamp(0);
    let dup_field = header(&pk_of(&mallory()), s.seq, s.ts_ms, "goodbye", "{}")
        .replace("\"v\":2,", "\"v\":2,\"v\":2,");
    lan.att.to_group(&frame(&mallory(), NET, &dup_field));
    lan.finish(&["bad_header"]);
}

/// Characters outside base64 in the signature.
#[test]
fn signature_not_base64_is_dropped_as_bad_framing() {
    let mut lan = AttackLan::up();
    let mut not_b64_sig = lan.mallory_announce();
    let n = not_b64_sig.len();
    not_b64_sig[n - 30..n - 20].copy_from_slice(b"!!!!!!!!!!");
    lan.att.to_group(&not_b64_sig);
    lan.finish(&["bad_framing"]);
}

/// h1's genuine announce and broadcast, captured on the LAN and sent again
/// from host 3 (to the group and to h2's port): dropped as replays, and
/// h2's Slips got the broadcast exactly once.
#[test]
fn replayed_genuine_datagrams_are_dropped_and_delivered_once() {
    let mut lan = AttackLan::up();
    // A pigeon announces at once when a new peer proved its address: the
    // genuine announce to replay is h1's answer to Mallory joining.
    lan.att.drain_capture();
    let ip3 = lan.ip(3);
    lan.join(ip3, mallory());
    let h1_announce = lan
        .att
        .capture(lan.ip(1), "\"kind\":\"announce\"", HANG_LIMIT);
    let legit = slips_checks::request_b64("192.0.2.77");
    let h1_data = lan.captured_broadcast_of_h1(&legit);
    for d in [&h1_data, &h1_announce] {
        lan.att.to_group(d);
        lan.att.to(lan.h2.unicast, d);
    }
    lan.finish(&["replay"]);
    assert_eq!(
        lan.h2.slips.count_go_data(&legit),
        1,
        "replay delivered twice"
    );
}

/// A timestamp 60 s old (twice the allowed clock skew).
#[test]
fn timestamp_60_s_old_is_dropped_as_stale() {
    let mut lan = AttackLan::up();
    let stamp = lan.att.stamp(-60_000);
    let old = wire::seal(&mallory(), NET, stamp, Kind::Goodbye, &GoodbyeBody {}).unwrap();
    lan.att.to_group(&old);
    lan.finish(&["stale"]);
}

/// A timestamp 60 s ahead.
#[test]
fn timestamp_60_s_ahead_is_dropped_as_future() {
    let mut lan = AttackLan::up();
    let stamp = lan.att.stamp(60_000);
    let future = wire::seal(&mallory(), NET, stamp, Kind::Goodbye, &GoodbyeBody {}).unwrap();
    lan.att.to_group(&future);
    lan.finish(&["future"]);
}

/// An announce of 10.77.0.1 (h1's address) sent from 10.77.0.3, to the
/// group and to h2's port: dropped, and h1's address at h2 unchanged
/// (checked by `finish`).
#[test]
fn announce_of_another_hosts_address_is_dropped_as_address_mismatch() {
    let mut lan = AttackLan::up();
    let spoof = lan.att.seal(
        &mallory(),
        Kind::Announce,
        &announce_of(lan.ip(1), PORTS[0]),
    );
    lan.att.to_group(&spoof);
    lan.att.to(lan.h2.unicast, &spoof);
    lan.finish(&["address_mismatch"]);
}

/// h1's public key in an announce and a goodbye signed by the attacker:
/// dropped, and h1 stays a peer of h2 (`finish` exchanges traffic).
#[test]
fn victims_key_with_another_signature_is_dropped_as_bad_signature() {
    let mut lan = AttackLan::up();
    let h1_data = lan.captured_broadcast_of_h1(&slips_checks::request_b64("192.0.2.78"));
    let h1_m: serde_json::Value = serde_json::from_str(m_of(&h1_data)).unwrap();
    let h1_pk = h1_m["pk"].as_str().unwrap().to_owned();
    let s = lan.att.stamp(0);
    let impersonation = header(
        &h1_pk,
        s.seq,
        s.ts_ms,
        "announce",
        &format!(
            "{{\"ip\":\"{}\",\"port\":9,\"interval_ms\":30000,\"last_bcast\":0}}",
            lan.ip(3)
        ),
    );
    // By multicast: announces and goodbyes by unicast are dropped as on
    // the wrong channel before their signature is checked.
    lan.att.to_group(&frame(&mallory(), NET, &impersonation));
    let s = lan.att.stamp(0);
    let goodbye_as_h1 = header(&h1_pk, s.seq, s.ts_ms, "goodbye", "{}");
    lan.att.to_group(&frame(&mallory(), NET, &goodbye_as_h1));
    lan.finish(&["bad_signature"]);
}

/// A small-order public key (the identity point).
#[test]
fn weak_public_key_is_dropped_as_bad_key() {
    let mut lan = AttackLan::up();
    let mut weak = [0u8; 32];
    weak[0] = 1;
    let s = lan.att.stamp(0);
    let weak_m = header(
        &BASE64_STANDARD.encode(weak),
        s.seq,
        s.ts_ms,
        "goodbye",
        "{}",
    );
    lan.att.to_group(&frame(&mallory(), NET, &weak_m));
    lan.finish(&["bad_key"]);
}

/// A validly signed announce whose body is not an announce's.
#[test]
fn signed_announce_with_a_malformed_body_is_dropped_as_bad_body() {
    let mut lan = AttackLan::up();
    let s = lan.att.stamp(0);
    let bad_body = header(
        &pk_of(&mallory()),
        s.seq,
        s.ts_ms,
        "announce",
        "{\"ip\":\"x\"}",
    );
    lan.att.to_group(&frame(&mallory(), NET, &bad_body));
    lan.finish(&["bad_body"]);
}

// ------------------------------------------------------------------ joined attackers

/// Directed data for h1 sent to h2 by a key h2 knows: judged on its
/// recipient, dropped as not for h2 (a routine drop, in the exit
/// counters), delivered nowhere.
#[test]
fn directed_data_for_another_peer_is_not_delivered() {
    let mut lan = AttackLan::up();
    let ip3 = lan.ip(3);
    let mut mal = lan.join(ip3, mallory());
    let for_h1 = slips_checks::request_b64("203.0.113.1");
    lan.forbid(&for_h1);
    let directed = mal.directed(&lan.h1.peer_id, lan.h1.unicast, &for_h1);
    mal.send_to(lan.h2.unicast, &directed);
    lan.finish(&["not_for_us"]);
}

/// Every payload that crashes or fools Slips 1.1.21, each validly signed
/// by a key of its own (so no ban interferes) that joined both victims
/// from an address of its own: none reaches Slips, each is counted as a
/// bad payload at both victims.
#[test]
fn payloads_that_crash_or_fool_slips_never_reach_it() {
    let report = |ip: &str| slips_checks::report_b64(ip, 0.5, 0.9);
    let crash: &[(&str, String)] = &[
        ("non-ASCII payload", format!("{}ü", report("203.0.113.2"))),
        ("base64 of 1", inner("1")),
        ("base64 of [1]", inner("[1]")),
        (
            "null score",
            inner(
                r#"{"message_type": "report", "key_type": "ip", "key": "203.0.113.3", "evaluation_type": "score_confidence", "evaluation": {"score": null, "confidence": 0.9}}"#,
            ),
        ),
        (
            "non-dict evaluation",
            inner(
                r#"{"message_type": "report", "key_type": "ip", "key": "203.0.113.4", "evaluation_type": "score_confidence", "evaluation": [0.5, 0.9]}"#,
            ),
        ),
        ("non-IP key", report("evil.example")),
        (
            "integer key",
            inner(
                r#"{"message_type": "request", "key_type": "ip", "key": 3405803781, "evaluation_type": "score_confidence"}"#,
            ),
        ),
        ("key 10.0.0.9:4001", report("10.0.0.9:4001")),
        (
            "NaN score",
            inner(
                r#"{"message_type": "report", "key_type": "ip", "key": "203.0.113.5", "evaluation_type": "score_confidence", "evaluation": {"score": NaN, "confidence": 0.9}}"#,
            ),
        ),
        (
            "JSON nested 250 deep",
            inner(&format!("{}{}", "[".repeat(250), "]".repeat(250))),
        ),
    ];
    let mut lan = AttackLan::up();
    let sources = lan.new_addresses(crash.len() as u8);
    for (k, (_, payload)) in crash.iter().enumerate() {
        let mut sybil = lan.join(sources[k], key(0xC0, k as u32));
        lan.forbid(payload);
        let d = sybil.broadcast(payload);
        sybil.to_group(&d);
    }
    lan.finish(&["bad_payload"]);
    for v in [&lan.h1, &lan.h2] {
        let counted = drop_counts(&v.tree.read_log())
            .get("bad_payload")
            .copied()
            .unwrap_or(0);
        assert_eq!(
            counted,
            crash.len() as u64,
            "host {} counted {counted} bad payloads for {:?}",
            v.host,
            crash.iter().map(|(name, _)| *name).collect::<Vec<_>>()
        );
    }
}

/// A blame, under the default blame policy (drop).
#[test]
fn blame_is_dropped_by_the_default_policy() {
    let mut lan = AttackLan::up();
    let ip3 = lan.ip(3);
    let mut mal = lan.join(ip3, mallory());
    let blame = slips_checks::blame_b64("203.0.113.6", 1.0, 1.0);
    lan.forbid(&blame);
    let d = mal.broadcast(&blame);
    mal.to_group(&d);
    lan.finish(&["blame_policy"]);
}

/// Delivery-layer abuse by a joined key: a digest claiming 2^53
/// broadcasts (asks the victims to nack), and a nack for broadcasts of h1
/// that were never sent. Neither crashes a victim nor gets anything to
/// Slips.
#[test]
fn digest_of_2_53_broadcasts_and_nack_of_unknown_ones_change_nothing() {
    let mut lan = AttackLan::up();
    let ip3 = lan.ip(3);
    let mut mal = lan.join(ip3, mallory());
    let digest = mal.seal(
        Kind::Digest,
        &DigestBody {
            floor: 1,
            last: wire::MAX_SAFE_INT,
        },
    );
    mal.to_group(&digest);
    let nack = mal.seal(
        Kind::Nack,
        &NackBody {
            to: lan.h1.peer_id.clone(),
            ids: (1_000_000..1_000_032).collect(),
        },
    );
    mal.send_to(lan.h1.unicast, &nack);
    lan.finish(&[]);
}

/// `ban_after_misbehaviours` + 1 bad payloads from one key, then a valid
/// request: the key is banned at both victims, Slips hears reliability 0
/// for it, and the request is not delivered.
#[test]
fn repeated_bad_payloads_ban_the_key() {
    let mut lan = AttackLan::up();
    let source = lan.new_addresses(1)[0];
    let mut offender = lan.join(source, key(0xB0, 0));
    let offender_id = offender.peer_id();
    lan.forbid(&inner("[1]"));
    for _ in 0..lan.defaults.security.ban_after_misbehaviours + 1 {
        let d = offender.broadcast(&inner("[1]"));
        offender.to_group(&d);
        // The offender's own pace (a sender's rate), not a wait for the
        // victims: they take the datagrams in order whatever it is.
        thread::sleep(Duration::from_millis(20));
    }
    let valid_after_ban = slips_checks::request_b64("203.0.113.7");
    lan.forbid(&valid_after_ban);
    let d = offender.broadcast(&valid_after_ban);
    offender.to_group(&d);
    // Slips hears of the ban once the 10 s gap since its last update
    // about the key (the join) has passed.
    wait_until(HANG_LIMIT, "both victims to ban the offender", || {
        [&lan.h1, &lan.h2].iter().all(|v| {
            v.last_update(&offender_id)
                .is_some_and(|(_, r)| r == Some(0.0))
        })
    });
    lan.finish(&["banned"]);
}

// ------------------------------------------------------------------ floods

/// h1's Slips publishes `n` requests to everyone, `LATENCY_SPACING`
/// apart; returns their messages.
fn publish_requests(h1: &mut Victim, n: usize, base: u32) -> Vec<String> {
    (0..n)
        .map(|k| {
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 51, 100, 0)) + base + k as u32);
            let b64 = slips_checks::request_b64(&ip.to_string());
            let sent = Instant::now();
            assert_eq!(
                h1.slips
                    .publish(&slips_checks::pygo_scroll(&b64, "*", VERSION)),
                1
            );
            thread::sleep((sent + LATENCY_SPACING).saturating_duration_since(Instant::now()));
            b64
        })
        .collect()
}

/// What a flood did.
struct FloodFigures {
    sent: u64,
    secs: f64,
    /// Pigeon CPU of h1 and h2 during the flood, in %.
    cpu_pct: [f64; 2],
    /// Datagrams the kernel dropped at h1 and h2 (full receive buffers).
    kernel_drops: [u64; 2],
}

/// A joined key of host 3 and 20 000 valid broadcasts it signed, for a
/// flood; the key is the one whose valid requests may reach Slips.
fn flooder(lan: &mut AttackLan) -> Vec<Vec<u8>> {
    let source = lan.new_addresses(1)[0];
    let mut flooder = lan.join(source, key(0xF1, 0));
    lan.flooder = Some(flooder.peer_id());
    (0..20_000u32)
        .map(|k| {
            let ip = format!("203.0.113.{}", 100 + k % 100);
            flooder.broadcast(&slips_checks::request_b64(&ip))
        })
        .collect()
}

/// Runs `during` while host 3 floods h2 (group and unicast) with garbage
/// and the valid-signed datagrams `valid`, from one thread as fast as it
/// can; the flood starts 500 ms before `during` and stops after it.
fn with_flood<R>(
    lan: &mut AttackLan,
    valid: &[Vec<u8>],
    during: impl FnOnce(&mut Victim, &Victim) -> R,
) -> (R, FloodFigures) {
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let pids = [lan.h1.pigeon.pid(), lan.h2.pigeon.pid()];
    let cpu_before = pids.map(cpu_ticks);
    let drops_before = pids.map(udp_drops);
    let start = Instant::now();
    let target = lan.h2.unicast;
    let (lab, h1, h2) = (&lan.lab, &mut lan.h1, &lan.h2);
    let (r, secs) = thread::scope(|scope| {
        let flooding = scope.spawn(|| flood(lab, target, valid, &stop, &sent));
        thread::sleep(Duration::from_millis(500));
        let r = during(h1, h2);
        stop.store(true, Ordering::Relaxed);
        flooding.join().unwrap();
        (r, start.elapsed().as_secs_f64())
    });
    let ticks = 100.0; // USER_HZ
    let figures = FloodFigures {
        sent: sent.load(Ordering::Relaxed),
        secs,
        cpu_pct: [0, 1].map(|i| (cpu_ticks(pids[i]) - cpu_before[i]) as f64 / ticks / secs * 100.0),
        kernel_drops: [0, 1].map(|i| udp_drops(pids[i]) - drops_before[i]),
    };
    lan.h1.assert_running("under flood");
    lan.h2.assert_running("under flood");
    (r, figures)
}

/// A flood from host 3 (garbage and valid-signed datagrams of a joined
/// key, to the group and to h2's port) is dropped almost entirely by the
/// source rate limit; the flooding key gets at most its rate through
/// (checked by `finish`), and every request h1's Slips makes meanwhile
/// reaches h2's Slips exactly once.
#[test]
fn flood_is_dropped_by_source_rate_and_legitimate_requests_still_arrive() {
    let mut lan = AttackLan::up();
    let valid = flooder(&mut lan);
    let (requests, _) = with_flood(&mut lan, &valid, |h1, _| {
        publish_requests(h1, REQUESTS_UNDER_FLOOD, 1000)
    });
    // The kernel drops part of every socket's input under the flood,
    // legitimate copies too: the broadcast's copies and digests make them
    // good, after the flood if need be.
    for b64 in &requests {
        wait_until(HANG_LIMIT, "a request made under flood at h2", || {
            lan.h2.slips.go_data_arrival(b64).is_some()
        });
    }
    lan.finish(&["source_rate"]);
    for b64 in &requests {
        assert_eq!(lan.h2.slips.count_go_data(b64), 1, "{b64} more than once");
    }
}

/// What the Sybil flood took.
struct SybilFigures {
    keys: u32,
    sign_secs: f64,
    send_secs: f64,
}

/// `keys` fresh keys announce from 100 secondary addresses of host 3, each
/// announce padded as a pigeon's (so each earns a challenge) and stamped
/// when signed, none answering its challenge. Signed and sent in chunks,
/// so none is stale when it arrives however long the signing takes.
fn sybil_flood(lan: &mut AttackLan, keys: u32) -> SybilFigures {
    let addrs = lan.new_addresses(SYBIL_SOURCES);
    let sources: Vec<UdpSocket> = lan
        .lab
        .run_in(3, || addrs.iter().map(|ip| udp_socket(*ip)).collect());
    let ports: Vec<u16> = sources
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect();
    const CHUNK: u32 = 2_000;
    let (mut sign_secs, mut send_secs) = (0.0, 0.0);
    for chunk in (0..keys).step_by(CHUNK as usize) {
        let signing = Instant::now();
        let ts = now_ms();
        let announces: Vec<(usize, Vec<u8>)> = thread::scope(|scope| {
            let workers: Vec<_> = (0..2u32)
                .map(|w| {
                    let (ports, addrs) = (&ports, &addrs);
                    scope.spawn(move || {
                        (chunk..(chunk + CHUNK).min(keys))
                            .filter(|k| k % 2 == w)
                            .map(|k| {
                                let j = (k % u32::from(SYBIL_SOURCES)) as usize;
                                let stamp = Stamp {
                                    instance: 1,
                                    seq: 1,
                                    ts_ms: ts,
                                };
                                (j, padded_announce(&key(0x5B, k), stamp, addrs[j], ports[j]))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        sign_secs += signing.elapsed().as_secs_f64();
        let sending = Instant::now();
        for (k, (j, d)) in announces.iter().enumerate() {
            // Each from the address it announces.
            let _ = sources[*j].send_to(d, GROUP);
            if k % 1000 == 999 {
                thread::sleep(Duration::from_millis(1));
            }
        }
        send_secs += sending.elapsed().as_secs_f64();
    }
    lan.h1.assert_running("after the Sybil flood");
    lan.h2.assert_running("after the Sybil flood");
    SybilFigures {
        keys,
        sign_secs,
        send_secs,
    }
}

/// Peer-table exhaustion: 20 000 fresh keys (100 000 in the figure run)
/// announce from 100 addresses and none answers its challenge. Since
/// protocol v2 none enters a table, so Slips hears of none and the tables
/// keep the real peer (checked by `finish`); the victims run out of
/// challenge budget rather than of anything else.
#[test]
fn fresh_keys_that_never_answer_their_challenge_enter_no_peer_table() {
    let mut lan = AttackLan::up();
    sybil_flood(&mut lan, SYBIL_KEYS_TEST);
    lan.finish(&["challenge_budget"]);
}

// ------------------------------------------------------------------ figures

/// The figure run for docs/SECURITY.md §5.1: h1→h2 request latency before
/// any attack, under the flood and after the Sybil flood, the flood's
/// rate and cost, the Sybil flood's. Judges the latency too (p50 under
/// flood below 250 ms, p90 below 1 s, no request later than
/// `DELIVERY_LIMIT`), which only a quiet machine can promise: hence
/// ignored by default.
#[test]
#[ignore = "figure run, ~40 s: cargo test --test integration attack_figures -- --ignored --nocapture"]
fn attack_figures() {
    let run_start = Instant::now();
    let mut lan = AttackLan::up();

    let (base, base_lost) = request_latencies(&mut lan.h1, &lan.h2, LATENCY_REQUESTS, 0);
    let valid = flooder(&mut lan);
    let ((under, under_lost), flood) = with_flood(&mut lan, &valid, |h1, h2| {
        request_latencies(h1, h2, LATENCY_REQUESTS, 1000)
    });
    let sybils = sybil_flood(&mut lan, SYBIL_KEYS);
    let (after, after_lost) = request_latencies(&mut lan.h1, &lan.h2, 10, 2000);
    let verdict = lan.finish(&["source_rate"]);

    println!("drop reasons in the victims' logs: {:?}", verdict.reasons);
    println!(
        "latency h1 -> h2 (ms): baseline p50 {:.2} p90 {:.2} max {:.2} ({} ok, {base_lost} lost)",
        ms(pct(&base, 0.5)),
        ms(pct(&base, 0.9)),
        ms(pct(&base, 1.0)),
        base.len()
    );
    println!(
        "latency h1 -> h2 (ms): under flood p50 {:.2} p90 {:.2} max {:.2} ({} ok, {under_lost} lost)",
        ms(pct(&under, 0.5)),
        ms(pct(&under, 0.9)),
        ms(pct(&under, 1.0)),
        under.len()
    );
    println!(
        "latency h1 -> h2 (ms): after attacks p50 {:.2} ({} ok, {after_lost} lost)",
        ms(pct(&after, 0.5)),
        after.len()
    );
    println!(
        "flood: {} datagrams in {:.1} s = {:.0}/s; valid-signed flood delivered to Slips: h1 {} h2 {}",
        flood.sent,
        flood.secs,
        flood.sent as f64 / flood.secs,
        verdict.flood_delivered[0],
        verdict.flood_delivered[1]
    );
    println!(
        "during the flood: pigeon CPU h1 {:.0}% h2 {:.0}%; datagrams dropped by the kernel (full receive buffers) h1 {} h2 {}",
        flood.cpu_pct[0], flood.cpu_pct[1], flood.kernel_drops[0], flood.kernel_drops[1]
    );
    println!(
        "sybils: {} announces signed in {:.1} s, sent in {:.1} s from {SYBIL_SOURCES} addresses; peer tables at exit: h1 {} h2 {}",
        sybils.keys,
        sybils.sign_secs,
        sybils.send_secs,
        verdict.table_sizes[0],
        verdict.table_sizes[1]
    );
    for v in [&lan.h1, &lan.h2] {
        let log = v.tree.read_log();
        let stopped = log
            .lines()
            .rev()
            .find(|l| l.contains(" stopped"))
            .unwrap_or("");
        let by_reason = log
            .lines()
            .rev()
            .find(|l| l.contains("drops by reason"))
            .unwrap_or("");
        println!("host {} at exit: {}", v.host, stopped.trim());
        println!("host {} at exit: {}", v.host, by_reason.trim());
    }
    if let Some(id) = &lan.flooder {
        println!(
            "flooding key's last reliability: h1 {:?} h2 {:?}",
            lan.h1.last_update(id),
            lan.h2.last_update(id)
        );
    }
    let (p50_base, p50_flood) = (pct(&base, 0.5), pct(&under, 0.5));
    println!(
        "p50 under flood / baseline: {:.1}x (goal: 2x)",
        p50_flood.as_secs_f64() / p50_base.as_secs_f64()
    );
    println!("run time: {:.1} s", run_start.elapsed().as_secs_f64());

    assert_eq!(base_lost, 0, "legitimate requests lost without any attack");
    assert_eq!(after_lost, 0, "legitimate requests lost after the attacks");
    // Under flood every request still arrives well within the 2 s Slips
    // waits for answers. The goal "p50 within 2x of the baseline" is
    // reported, not asserted: it holds in some runs only, because the
    // flooding thread shares the two cores with the victims and the kernel
    // then drops part of every socket's input, legitimate copies included
    // (the broadcast's next copy, 100 ms later, delivers it). See
    // docs/SECURITY.md.
    assert_eq!(under_lost, 0, "legitimate requests lost under flood");
    assert!(
        p50_flood < Duration::from_millis(250) && pct(&under, 0.9) < Duration::from_secs(1),
        "h1->h2 latency under flood: p50 {:.2} ms, p90 {:.2} ms",
        ms(p50_flood),
        ms(pct(&under, 0.9))
    );
}
