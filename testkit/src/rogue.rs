//! An attacker pigeon that joins (protocol v2): a key of the test's, with a
//! real UDP socket inside a lab host, that passes return routability at
//! real pigeons exactly as an honest pigeon does: a padded `announce` to
//! the group from its socket, the pigeons' unicast `challenge`s read from
//! that socket, and a signed `response` back to each. Afterwards its
//! address is proven at those pigeons and a session with its instance is
//! open, so everything it sends is judged on its merits (payload checks,
//! rates, bans) instead of being dropped as from an unknown key.
//!
//! Also the padded announce of any key and address ([`padded_announce`]),
//! which the Sybil floods and the spoofing tests send.
//!
//! Every socket is created inside a lab host ([`Lab::run_in`]), never in
//! the root namespace.

// Panicking with a message is how this harness reports a failed set-up.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::lab::Lab;
use ed25519_dalek::SigningKey;
use pigeon::identity::peer_id_of;
use pigeon::wire::{
    self, AnnounceBody, ChallengeBody, DataBody, Kind, ResponseBody, Stamp, Unverified,
};
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

/// Time for a pigeon to handle our response before we send anything
/// else (a LAN hop and one event-loop turn, with room for a busy machine).
const JOIN_SETTLE: Duration = Duration::from_millis(100);

/// The pigeons' multicast group and port (pigeon.toml defaults).
pub const GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 112, 103), 47474);
/// The network name (`-rendezvous` default).
pub const NET: &str = "slips";

pub use crate::wait::now_ms;

/// A UDP socket bound to `bind` (port chosen by the kernel) that sends to
/// the group on the lab LAN only (TTL 1, no loop). Call inside a lab host.
pub fn udp_socket(bind: Ipv4Addr) -> UdpSocket {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.set_multicast_if_v4(&bind).unwrap();
    s.set_multicast_ttl_v4(1).unwrap();
    s.set_multicast_loop_v4(false).unwrap();
    s.set_send_buffer_size(1 << 20).unwrap();
    s.set_recv_buffer_size(1 << 20).unwrap();
    s.bind(&SocketAddrV4::new(bind, 0).into()).unwrap();
    s.into()
}

/// A signed announce by `key` of `ip:port`, padded to at least
/// [`wire::MIN_ANNOUNCE_LEN`] bytes as a pigeon pads it (so that it earns a
/// challenge).
pub fn padded_announce(key: &SigningKey, stamp: Stamp, ip: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut body = AnnounceBody {
        ip,
        port,
        interval_ms: 30_000,
        last_bcast: 0,
        pad: String::new(),
    };
    body.pad = wire::padding(
        key,
        NET,
        stamp,
        Kind::Announce,
        &body,
        wire::MIN_ANNOUNCE_LEN,
    )
    .unwrap();
    let d = wire::seal(key, NET, stamp, Kind::Announce, &body).unwrap();
    assert!(d.len() >= wire::MIN_ANNOUNCE_LEN, "{}", d.len());
    d
}

/// A verified datagram's kind, stamp and body text, if `d` verifies.
pub fn open(d: &[u8]) -> Option<(Kind, Stamp, Vec<u8>)> {
    let v = Unverified::parse(d, NET).ok()?.verify(NET).ok()?;
    Some((v.kind, v.stamp, d.to_vec()))
}

/// An attacker key that joins real pigeons from a socket of its own.
pub struct RoguePigeon {
    pub key: SigningKey,
    pub socket: UdpSocket,
    /// Where the socket is bound: the address it announces and proves.
    pub addr: SocketAddrV4,
    pub instance: u64,
    seq: u64,
    next_id: u64,
    /// Instance of each pigeon that challenged us (its current run: the
    /// `to_inst` of directed data), by its unicast address.
    pub sessions: HashMap<SocketAddrV4, u64>,
}

impl RoguePigeon {
    /// `key` with a socket bound at `ip` inside lab host `host` (`ip` must
    /// be an address of that host).
    pub fn new(lab: &Lab, host: usize, ip: Ipv4Addr, key: SigningKey) -> Self {
        let socket = lab.run_in(host, move || udp_socket(ip));
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let SocketAddr::V4(addr) = socket.local_addr().unwrap() else {
            panic!("IPv4 socket expected");
        };
        let instance = u64::from_le_bytes(key.to_bytes()[..8].try_into().unwrap()) % (1 << 40) + 1;
        Self {
            key,
            socket,
            addr,
            instance,
            seq: 0,
            next_id: 0,
            sessions: HashMap::new(),
        }
    }

    pub fn peer_id(&self) -> String {
        peer_id_of(&self.key.verifying_key())
    }

    /// The next stamp of this instance, at the wall clock now.
    pub fn stamp(&mut self) -> Stamp {
        self.seq += 1;
        Stamp {
            instance: self.instance,
            seq: self.seq,
            ts_ms: now_ms(),
        }
    }

    pub fn seal<B: Serialize>(&mut self, kind: Kind, body: &B) -> Vec<u8> {
        let stamp = self.stamp();
        wire::seal(&self.key, NET, stamp, kind, body).unwrap()
    }

    /// Our padded announce of our own address.
    pub fn announce(&mut self) -> Vec<u8> {
        let stamp = self.stamp();
        padded_announce(&self.key, stamp, *self.addr.ip(), self.addr.port())
    }

    /// A broadcast `data` message (ids count up from 1, as a pigeon's).
    pub fn broadcast(&mut self, payload: &str) -> Vec<u8> {
        self.next_id += 1;
        let body = DataBody {
            id: self.next_id,
            to: None,
            to_inst: None,
            payload: payload.to_owned(),
        };
        self.seal(Kind::Data, &body)
    }

    /// A directed `data` message for `peer_id`, the pigeon at `at`, with
    /// the instance it challenged us from.
    pub fn directed(&mut self, peer_id: &str, at: SocketAddrV4, payload: &str) -> Vec<u8> {
        self.next_id += 1;
        let to_inst = *self
            .sessions
            .get(&at)
            .unwrap_or_else(|| panic!("no session with the pigeon at {at}"));
        let body = DataBody {
            id: self.next_id,
            to: Some(peer_id.to_owned()),
            to_inst: Some(to_inst),
            payload: payload.to_owned(),
        };
        self.seal(Kind::Data, &body)
    }

    pub fn to_group(&self, d: &[u8]) {
        self.socket.send_to(d, GROUP).unwrap();
    }

    pub fn send_to(&self, dest: SocketAddrV4, d: &[u8]) {
        self.socket.send_to(d, dest).unwrap();
    }

    /// Joins the pigeons whose unicast addresses are `pigeons`: announces
    /// (again every 500 ms while some have not challenged us) and answers
    /// every challenge from them. Panics if one has not challenged us
    /// within `limit`.
    pub fn join(&mut self, pigeons: &[SocketAddrV4], limit: Duration) {
        let start = Instant::now();
        let mut answered: HashMap<SocketAddrV4, bool> =
            pigeons.iter().map(|p| (*p, false)).collect();
        let mut last_announce: Option<Instant> = None;
        let mut buf = vec![0u8; 2048];
        while answered.values().any(|a| !a) {
            assert!(
                start.elapsed() < limit,
                "key {} at {} not challenged by {:?} within {limit:?}",
                self.peer_id(),
                self.addr,
                answered.iter().filter(|(_, a)| !**a).collect::<Vec<_>>()
            );
            if last_announce.is_none_or(|t| t.elapsed() >= Duration::from_millis(500)) {
                let a = self.announce();
                self.to_group(&a);
                last_announce = Some(Instant::now());
            }
            let Ok((n, SocketAddr::V4(src))) = self.socket.recv_from(&mut buf) else {
                continue;
            };
            // Challenges leave from the pigeon's probe socket: same host,
            // another port. The response goes back where the challenge
            // came from.
            let Some(pigeon) = pigeons.iter().copied().find(|p| p.ip() == src.ip()) else {
                continue;
            };
            let Ok(v) = Unverified::parse(&buf[..n], NET).and_then(|u| u.verify(NET)) else {
                continue;
            };
            if v.kind != Kind::Challenge {
                continue;
            }
            let Ok(body) = v.body::<ChallengeBody>() else {
                continue;
            };
            self.sessions.insert(pigeon, v.stamp.instance);
            let r = self.seal(
                Kind::Response,
                &ResponseBody {
                    nonce: body.nonce,
                    next_bcast: self.next_id + 1,
                },
            );
            self.send_to(src, &r);
            answered.insert(pigeon, true);
        }
        // A pigeon reads its unicast socket (our response) and its group
        // socket (what we send next) in no fixed order: let it take the
        // response first.
        std::thread::sleep(JOIN_SETTLE);
    }

    /// Reads and discards whatever arrived on our socket.
    pub fn drain(&self) {
        self.socket.set_nonblocking(true).unwrap();
        let mut buf = vec![0u8; 2048];
        while self.socket.recv_from(&mut buf).is_ok() {}
        self.socket.set_nonblocking(false).unwrap();
    }
}
