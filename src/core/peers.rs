//! The peer table: every peer we know, keyed by its public key.

use super::Millis;
use super::delivery::RxState;
use super::limits::TokenBucket;
use super::reliability::{Reliability, ReliabilitySums};
use crate::wire::replay::ReplayWindow;
use ed25519_dalek::VerifyingKey;
use std::collections::HashMap;
use std::net::SocketAddrV4;

/// Sender instances whose replay windows are kept per peer. A restarted
/// peer has a new instance; the previous one stays guarded until its
/// datagrams are too old to pass the freshness check anyway.
const INSTANCES_KEPT: usize = 4;

/// Whether a peer is reachable now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Announcing on time: directed messages go to it.
    Active,
    /// Missed several announcements, said goodbye, or loaded from the peer
    /// list and not heard yet.
    Inactive,
}

impl PeerState {
    /// Lower-case name for tables and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inactive => "inactive",
        }
    }
}

/// A peer as it is remembered across restarts: what
/// [`Action::SavePeers`](super::Action::SavePeers) hands out and
/// [`Node::new`](super::Node::new) takes back. Plain values: how they are
/// written to disk is the peer list adapter's business (`peerstore`).
#[derive(Debug, Clone, PartialEq)]
pub struct PeerRecord {
    /// libp2p peer id of `key` (what Slips and the operator know it by).
    pub peer_id: String,
    /// Its key: its identity.
    pub key: VerifyingKey,
    /// The last address it proved it receives at.
    pub addr: Option<SocketAddrV4>,
    /// First verified datagram, Unix ms.
    pub first_seen_ms: Millis,
    /// Last verified datagram, Unix ms (drives forgetting).
    pub last_seen_ms: Millis,
    /// Reliability sums (times in Unix ms).
    pub reliability: ReliabilitySums,
    /// Last reliability told to Slips, if any.
    pub reported_reliability: Option<f64>,
    /// Ids of the organisations it had proved membership of when the list
    /// was made, for `pigeon peers`; never trusted when loaded (a peer
    /// proves its memberships again in its announces).
    pub organisations: Vec<String>,
}

/// The peer list at one moment, ordered by peer id.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerList {
    /// When the node made it, Unix ms.
    pub saved_at_ms: Millis,
    /// One record per known peer.
    pub peers: Vec<PeerRecord>,
}

/// What we keep per instance (process start) of a peer.
#[derive(Debug, Clone)]
pub struct InstanceState {
    /// Random id the peer chose at start.
    pub instance: u64,
    /// Sequence numbers seen (replay protection).
    pub replay: ReplayWindow,
    /// Last verified datagram of this instance.
    pub last_used_ms: u64,
    /// Delivery state (deduplication, repair).
    pub rx: RxState,
}

/// One known peer. Only a key that proved an address (a valid `response`)
/// enters the table, or one loaded from the peer list.
///
/// Times named `_ms` are monotonic milliseconds of this run unless they
/// say "Unix".
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its key: its identity.
    pub key: VerifyingKey,
    /// libp2p peer id string of `key`: the id Slips knows it by.
    pub peer_id: String,
    /// Last address the peer proved it receives at (possibly in an
    /// earlier run: see `proven`). Directed traffic goes only here.
    pub addr: Option<SocketAddrV4>,
    /// Whether `addr` was proven in this run (return routability).
    pub proven: bool,
    /// Active or not.
    pub state: PeerState,
    /// First verified datagram, Unix ms.
    pub first_seen_ms: u64,
    /// Last verified datagram, Unix ms (persisted, drives forgetting).
    pub last_seen_ms: u64,
    /// `last_seen_ms` as last written to the peer list.
    pub persisted_last_seen_ms: u64,
    /// Last verified datagram (0 = none this run).
    pub last_heard_ms: u64,
    /// Last announcement (or proof) counted for liveness (0 = none this run).
    pub last_announce_ms: u64,
    /// Last valid payload that counted for reliability.
    pub last_valid_payload_ms: u64,
    /// Last challenge we sent it.
    pub last_challenge_ms: u64,
    /// Instance of its latest announcement: a new one means it restarted.
    pub instance: Option<u64>,
    /// Instance of its latest valid response: directed data carries it as
    /// `to_inst`, and broadcasts of it are delivered.
    pub session_instance: Option<u64>,
    /// The peer's announced interval (within the protocol's bounds).
    pub announce_interval_ms: u64,
    /// Missed announcements counted since the last one received.
    pub missed: u32,
    /// Reliability sums (times in Unix ms: they persist).
    pub reliability: Reliability,
    /// Last reliability told to Slips.
    pub reported_reliability: Option<f64>,
    /// A `peer_update` is owed to Slips (sent when its gap allows).
    pub update_pending: bool,
    /// When Slips last heard about it.
    pub last_update_ms: Option<u64>,
    /// State of the peer's latest instances (bounded).
    pub instances: Vec<InstanceState>,
    /// Per-peer rate limit of datagrams.
    pub bucket: TokenBucket,
    /// Byte budget of responses (acks, nacks, repairs) to its address.
    pub responses: TokenBucket,
    /// Budget of its messages to Slips.
    pub go_data: TokenBucket,
    /// Datagrams exchanged with it and dropped, this run (operator view).
    pub traffic: PeerTraffic,
}

/// What one peer sent us and we sent it, this run (`pigeon status`). Only
/// datagrams whose signature verified and that were not replays count, so
/// nobody can inflate another peer's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerTraffic {
    /// Its verified, fresh datagrams.
    pub datagrams_in: u64,
    /// Unicast datagrams we sent to its address (multicast goes to
    /// everyone and counts only in the totals).
    pub datagrams_out: u64,
    /// Its verified, fresh datagrams dropped afterwards for a reason that
    /// is not routine (rate, malformed body or payload, blame policy…;
    /// not duplicates or messages for other peers).
    pub drops: u64,
}

impl Peer {
    /// Whether `(instance, seq)` would be new.
    pub fn will_accept(&self, instance: u64, seq: u64) -> bool {
        self.instances
            .iter()
            .find(|i| i.instance == instance)
            .is_none_or(|i| i.replay.will_accept(seq))
    }

    /// Records `(instance, seq)` after verification; returns the
    /// instance's state, or `None` for a replay.
    pub fn commit(&mut self, instance: u64, seq: u64, now_ms: u64) -> Option<&mut InstanceState> {
        let state = self.instance_state(instance, now_ms);
        if !state.replay.commit(seq) {
            return None;
        }
        state.last_used_ms = now_ms;
        Some(state)
    }

    /// The state of `instance`, created (evicting the least recently used
    /// of [`INSTANCES_KEPT`]) if new.
    pub fn instance_state(&mut self, instance: u64, now_ms: u64) -> &mut InstanceState {
        let pos = match self.instances.iter().position(|i| i.instance == instance) {
            Some(p) => p,
            None => {
                if self.instances.len() >= INSTANCES_KEPT
                    && let Some(oldest) = self
                        .instances
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, i)| i.last_used_ms)
                        .map(|(p, _)| p)
                {
                    self.instances.swap_remove(oldest);
                }
                self.instances.push(InstanceState {
                    instance,
                    replay: ReplayWindow::new(),
                    last_used_ms: now_ms,
                    rx: RxState::default(),
                });
                self.instances.len() - 1
            }
        };
        &mut self.instances[pos]
    }

    /// The state of one instance, if known.
    pub fn instance_mut(&mut self, instance: u64) -> Option<&mut InstanceState> {
        self.instances.iter_mut().find(|i| i.instance == instance)
    }

    /// What is remembered of it across restarts.
    pub fn to_record(&self) -> PeerRecord {
        PeerRecord {
            peer_id: self.peer_id.clone(),
            key: self.key,
            addr: self.addr,
            first_seen_ms: self.first_seen_ms,
            last_seen_ms: self.last_seen_ms,
            reliability: self.reliability.sums(),
            reported_reliability: self.reported_reliability,
            organisations: Vec::new(),
        }
    }
}

/// All known peers, bounded.
#[derive(Debug, Default)]
pub struct PeerTable {
    by_key: HashMap<[u8; 32], Peer>,
    by_id: HashMap<String, [u8; 32]>,
}

impl PeerTable {
    /// Looks a peer up by key.
    pub fn get(&self, key: &VerifyingKey) -> Option<&Peer> {
        self.by_key.get(key.as_bytes())
    }

    /// Looks a peer up by key, mutably.
    pub fn get_mut(&mut self, key: &VerifyingKey) -> Option<&mut Peer> {
        self.by_key.get_mut(key.as_bytes())
    }

    /// Looks a peer up by its peer id.
    pub fn by_peer_id(&self, id: &str) -> Option<&Peer> {
        self.by_id.get(id).and_then(|k| self.by_key.get(k))
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether there is no peer.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Every peer.
    pub fn iter(&self) -> impl Iterator<Item = &Peer> {
        self.by_key.values()
    }

    /// Every peer, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Peer> {
        self.by_key.values_mut()
    }

    /// Whether `key` proved in this run that it receives at `addr`.
    pub fn is_proven_at(&self, key: &VerifyingKey, addr: SocketAddrV4) -> bool {
        self.get(key)
            .is_some_and(|p| p.proven && p.addr == Some(addr))
    }

    /// Inserts a peer. At most `max_per_ip` keys share one IPv4 address
    /// and `max` peers are known: beyond either, the least recently seen
    /// inactive peer (of that address, or of all) makes room. Returns false
    /// if there is none: the newcomer is refused, and active peers are
    /// never pushed out by new keys.
    pub fn insert(&mut self, peer: Peer, max: usize, max_per_ip: usize) -> bool {
        if let Some(ip) = peer.addr.map(|a| *a.ip()) {
            let at_ip = |p: &Peer| p.addr.is_some_and(|a| *a.ip() == ip);
            if self.by_key.values().filter(|p| at_ip(p)).count() >= max_per_ip
                && !self.evict_inactive(at_ip)
            {
                return false;
            }
        }
        if self.by_key.len() >= max && !self.evict_inactive(|_| true) {
            return false;
        }
        self.by_id
            .insert(peer.peer_id.clone(), *peer.key.as_bytes());
        self.by_key.insert(*peer.key.as_bytes(), peer);
        true
    }

    /// Removes the least recently seen inactive peer among those `which`
    /// selects; false if there is none.
    fn evict_inactive(&mut self, which: impl Fn(&Peer) -> bool) -> bool {
        let victim = self
            .by_key
            .values()
            .filter(|p| p.state == PeerState::Inactive && which(p))
            .min_by_key(|p| p.last_seen_ms)
            .map(|p| *p.key.as_bytes());
        victim.is_some_and(|k| self.remove(&k).is_some())
    }

    /// Removes a peer.
    pub fn remove(&mut self, key: &[u8; 32]) -> Option<Peer> {
        let p = self.by_key.remove(key)?;
        self.by_id.remove(&p.peer_id);
        Some(p)
    }

    /// Removes every peer for which `f` is false.
    pub fn retain(&mut self, mut f: impl FnMut(&Peer) -> bool) -> usize {
        let before = self.by_key.len();
        self.by_key.retain(|_, p| f(p));
        let keys = &self.by_key;
        self.by_id.retain(|_, k| keys.contains_key(k));
        before - self.by_key.len()
    }
}
