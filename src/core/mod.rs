//! The sans-IO node: all protocol logic, no sockets, no clock, no files.
//!
//! The runtime feeds it inputs with the current time and carries out the
//! actions it returns (quinn-proto / foca style):
//!
//! * [`Node::handle_datagram`]: a UDP datagram arrived;
//! * [`Node::handle_slips`]: Slips asked us to send something;
//! * [`Node::handle_timeout`]: the deadline of [`Node::poll_timeout`] passed;
//! * [`Node::shutdown`]: say goodbye and save the peer list;
//! * [`Node::poll_action`]: what to do now ([`Action`]).
//!
//! Time is Unix milliseconds supplied by the caller, so tests run many
//! nodes on a simulated clock and an in-memory network.

pub mod bans;
pub mod delivery;
pub mod limits;
pub mod peers;
pub mod reliability;
pub mod stats;

use crate::config::DeliveryConfig;
use crate::config::{BlamePolicy, Config};
use crate::identity::peer_id_of;
use crate::peerstore::{FORMAT_VERSION, PeerFile, StoredPeer};
use crate::slips::payload::{self, PayloadKind};
use crate::slips::{Recipient, ToSlips};
use crate::wire::{
    self, AckBody, AnnounceBody, DataBody, DigestBody, GoodbyeBody, Kind, MAX_NACK_IDS, NackBody,
    Stamp, Unverified, Verified, WireError,
};
use bans::{BanParams, Bans};
use delivery::{MAX_DIRECTED_BACKOFF_MS, Outbox, Pending};
use ed25519_dalek::SigningKey;
use limits::{KeyedLimiter, Quota, TokenBucket};
use peers::{Peer, PeerState, PeerTable};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use reliability::{Observation, Reliability, ReliabilityParams};
use stats::{DropLog, DropReason, Stats};
use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr, SocketAddrV4};

/// Unix time in milliseconds.
pub type Millis = u64;

/// How often housekeeping runs (overdue peers, expiry, limiter pruning).
const HOUSEKEEPING_MS: Millis = 1_000;
/// Spacing of the startup announcements (RFC 6762 §8.3: one second).
const STARTUP_SPACING_MS: Millis = 1_000;
/// Largest random delay of the first announcement (RFC 6762 §8.1).
const FIRST_ANNOUNCE_MAX_DELAY_MS: Millis = 250;
/// Shortest gap between two answers to newcomers (RFC 6762 §6 rate limit).
const MIN_ANSWER_GAP_MS: Millis = 1_000;
/// Source addresses tracked by the pre-verification limiter.
const MAX_SOURCES: usize = 4_096;
/// Misbehaving keys whose strikes and bans are remembered.
const MAX_BAN_KEYS: usize = 4_096;
/// Valid payloads of one peer count for reliability at most this often.
const VALID_PAYLOAD_SPACING_MS: Millis = 10_000;
/// Shortest gap between two nacks to one sender instance.
const MIN_NACK_GAP_MS: Millis = 100;
/// A peer's `last_seen` is rewritten to disk at most this often.
const LAST_SEEN_PERSIST_MS: Millis = 60_000;

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The LAN's multicast group.
    Multicast,
    /// One peer.
    Unicast(SocketAddrV4),
}

/// Something the runtime must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send a datagram.
    Send {
        /// Group or peer.
        to: Destination,
        /// The bytes, at most [`wire::MAX_DATAGRAM`].
        datagram: Vec<u8>,
    },
    /// Publish a message for Slips.
    ToSlips(ToSlips),
    /// Write the peer list.
    SavePeers(PeerFile),
}

/// Facts about this run that do not come from the configuration.
#[derive(Debug, Clone)]
pub struct NodeParams {
    /// Our unicast address as announced to peers.
    pub unicast: SocketAddrV4,
    /// Random per start; peers use it to tell a restart from a replay.
    pub instance: u64,
    /// Seed of the node's RNG (jitter). Random in production, fixed in
    /// tests for determinism.
    pub rng_seed: u64,
}

/// Settings of the node, taken from [`Config`] once.
#[derive(Debug, Clone)]
struct Settings {
    network: String,
    announce_interval_ms: Millis,
    announce_jitter: f64,
    startup_announces: u32,
    inactive_after_missed: u32,
    answer_delay_max_ms: Millis,
    forget_after_ms: Millis,
    max_clock_skew_ms: Millis,
    max_peers: usize,
    peer_quota: Quota,
    reliability: ReliabilityParams,
    report_delta: f64,
    save_interval_ms: Millis,
    delivery: DeliveryConfig,
    blames: BlamePolicy,
    blame_allowlist: HashSet<String>,
}

impl Settings {
    fn from_config(c: &Config) -> Self {
        Self {
            network: c.network.name.clone(),
            announce_interval_ms: c.discovery.announce_interval_ms.max(1),
            announce_jitter: c.discovery.announce_jitter.clamp(0.0, 0.5),
            startup_announces: c.discovery.startup_announces,
            inactive_after_missed: c.discovery.inactive_after_missed.max(1),
            answer_delay_max_ms: c.discovery.answer_delay_max_ms,
            forget_after_ms: c.discovery.forget_after_days.saturating_mul(86_400_000),
            max_clock_skew_ms: c.security.max_clock_skew_ms,
            max_peers: c.security.max_peers.max(1),
            peer_quota: Quota {
                per_second: f64::from(c.security.per_peer_rate.max(1)),
                burst: f64::from(c.security.per_peer_burst.max(1)),
            },
            reliability: ReliabilityParams {
                half_life_ms: (c.reliability.half_life_hours * 3_600_000.0).max(1.0),
                prior: c.reliability.prior,
                prior_weight: c.reliability.prior_weight,
            },
            report_delta: c.reliability.report_delta,
            save_interval_ms: c.peerstore.save_interval_ms,
            delivery: c.delivery.clone(),
            blames: c.slips.blames,
            blame_allowlist: c.slips.blame_allowlist.iter().cloned().collect(),
        }
    }
}

/// The protocol state of one pigeon.
pub struct Node {
    settings: Settings,
    key: SigningKey,
    peer_id: String,
    params: NodeParams,
    seq: u64,
    outbox: Outbox,
    rng: StdRng,
    peers: PeerTable,
    sources: KeyedLimiter<IpAddr>,
    bans: Bans,
    actions: VecDeque<Action>,
    stats: Stats,
    drop_log: DropLog,
    startup_left: u32,
    next_announce_ms: Millis,
    answer_at_ms: Option<Millis>,
    last_answer_ms: Millis,
    next_housekeeping_ms: Millis,
    /// The peer list changed since it was last handed out for saving.
    dirty: bool,
    last_save_ms: Millis,
    shut_down: bool,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", &self.peer_id)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node that knows the `stored` peers (all inactive until heard).
    pub fn new(
        config: &Config,
        key: SigningKey,
        params: NodeParams,
        stored: Vec<StoredPeer>,
        now: Millis,
    ) -> Self {
        let settings = Settings::from_config(config);
        let mut rng = StdRng::seed_from_u64(params.rng_seed);
        let first = now + rng.random_range(0..=FIRST_ANNOUNCE_MAX_DELAY_MS);
        let source_quota = Quota {
            per_second: f64::from(config.security.per_source_rate.max(1)),
            burst: f64::from(config.security.per_source_burst.max(1)),
        };
        let peer_id = peer_id_of(&key.verifying_key());
        let mut node = Self {
            peer_id,
            key,
            seq: 0,
            outbox: Outbox::default(),
            rng,
            peers: PeerTable::default(),
            sources: KeyedLimiter::new(source_quota, MAX_SOURCES, now),
            bans: Bans::new(
                BanParams {
                    after: config.security.ban_after_misbehaviours,
                    window_ms: config.security.ban_window_secs.saturating_mul(1000),
                    ban_ms: config.security.ban_secs.saturating_mul(1000),
                },
                MAX_BAN_KEYS,
            ),
            actions: VecDeque::new(),
            stats: Stats::default(),
            drop_log: DropLog::default(),
            startup_left: settings.startup_announces.max(1),
            next_announce_ms: first,
            answer_at_ms: None,
            last_answer_ms: 0,
            next_housekeeping_ms: now + HOUSEKEEPING_MS,
            dirty: false,
            last_save_ms: now,
            shut_down: false,
            settings,
            params,
        };
        node.load_stored(stored, now);
        node
    }

    fn load_stored(&mut self, stored: Vec<StoredPeer>, now: Millis) {
        let own = *self.key.verifying_key().as_bytes();
        for s in stored {
            let Some(key) = wire::decode_key(&s.public_key) else {
                tracing::warn!(peer = %s.peer_id, "peer list: invalid public key, entry skipped");
                continue;
            };
            if *key.as_bytes() == own {
                continue;
            }
            let last_seen_ms = s.last_seen.saturating_mul(1000);
            if now.saturating_sub(last_seen_ms) > self.settings.forget_after_ms {
                // Forgotten: the file must be rewritten without it.
                self.mark_dirty();
                continue;
            }
            let peer = Peer {
                peer_id: peer_id_of(&key),
                key,
                addr: match (s.ip, s.port) {
                    (Some(ip), Some(port)) => Some(SocketAddrV4::new(ip, port)),
                    _ => None,
                },
                state: PeerState::Inactive,
                first_seen_ms: s.first_seen.saturating_mul(1000),
                last_seen_ms,
                persisted_last_seen_ms: last_seen_ms,
                last_announce_ms: 0,
                instance: None,
                last_valid_payload_ms: 0,
                announce_interval_ms: self.settings.announce_interval_ms,
                missed: 0,
                reliability: Reliability::from_stored(s.reliability),
                reported_reliability: s.reported_reliability.filter(|r| r.is_finite()),
                instances: Vec::new(),
                bucket: TokenBucket::full(self.settings.peer_quota, now),
            };
            self.peers.insert(peer, self.settings.max_peers);
        }
    }

    /// Our libp2p peer id.
    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The peer table.
    pub fn peers(&self) -> &PeerTable {
        &self.peers
    }

    /// Reliability of a peer now.
    pub fn reliability_of(&self, peer: &Peer, now: Millis) -> f64 {
        peer.reliability.value(now, &self.settings.reliability)
    }

    /// The next action to carry out, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Node::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Millis {
        let mut t = self.next_housekeeping_ms.min(self.next_announce_ms);
        if let Some(a) = self.answer_at_ms {
            t = t.min(a);
        }
        if let Some(d) = self.outbox.next_due() {
            t = t.min(d);
        }
        t
    }

    // ----- inputs ---------------------------------------------------------

    /// A datagram arrived from `src`.
    pub fn handle_datagram(&mut self, now: Millis, src: SocketAddr, data: &[u8]) {
        if self.shut_down {
            return;
        }
        self.stats.datagrams_in += 1;
        if !self.sources.check(&src.ip(), now) {
            return self.drop(now, DropReason::SourceRate, &src);
        }
        let unverified = match Unverified::parse(data, &self.settings.network) {
            Ok(u) => u,
            Err(e) => return self.drop(now, wire_reason(e), &format_args!("{e} from {src}")),
        };
        let key = *unverified.claimed_key();
        if key == self.key.verifying_key() {
            return self.drop(now, DropReason::Own, &"own datagram");
        }
        // A lookup: a banned key costs no further work, signature included.
        if self.bans.is_banned(key.as_bytes(), now) {
            return self.drop(
                now,
                DropReason::Banned,
                &format_args!("banned key from {src}"),
            );
        }
        let stamp = unverified.stamp();
        let skew = self.settings.max_clock_skew_ms;
        if stamp.ts_ms + skew < now {
            return self.drop(
                now,
                DropReason::Stale,
                &format_args!("stale datagram from {src}"),
            );
        }
        if stamp.ts_ms > now + skew {
            return self.drop(
                now,
                DropReason::Future,
                &format_args!("future datagram from {src}"),
            );
        }
        if let Some(p) = self.peers.get(&key)
            && !p.will_accept(stamp.instance, stamp.seq)
        {
            return self.drop(now, DropReason::Replay, &format_args!("replay from {src}"));
        }
        let verified = match unverified.verify(&self.settings.network) {
            Ok(v) => v,
            Err(e) => return self.drop(now, wire_reason(e), &format_args!("{e} from {src}")),
        };
        // Authenticated from here on: state may change.
        let is_new = self.peers.get(&key).is_none();
        if is_new && !self.admit(now, &verified) {
            return self.drop(
                now,
                DropReason::TableFull,
                &format_args!("new peer from {src}"),
            );
        }
        let quota = self.settings.peer_quota;
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if peer.commit(stamp.instance, stamp.seq, now).is_none() {
            return self.drop(now, DropReason::Replay, &format_args!("replay from {src}"));
        }
        peer.last_seen_ms = now;
        if !peer.bucket.take(quota, now) {
            self.drop(
                now,
                DropReason::PeerRate,
                &format_args!("peer over its rate: {src}"),
            );
            return self.over_rate(now, &key);
        }
        if now.saturating_sub(peer.persisted_last_seen_ms) >= LAST_SEEN_PERSIST_MS {
            self.mark_dirty();
        }
        self.stats.datagrams_accepted += 1;
        match verified.kind {
            Kind::Announce => self.on_announce(now, src, &verified),
            Kind::Goodbye => self.on_goodbye(&verified),
            Kind::Data => self.on_data(now, src, &verified),
            Kind::Ack => self.on_ack(now, &verified),
            Kind::Digest => self.on_digest(now, src, &verified),
            Kind::Nack => self.on_nack(now, src, &verified),
        }
    }

    /// Slips asked us to send `message` to `recipient`.
    pub fn handle_slips(&mut self, now: Millis, message: String, recipient: Recipient) {
        if self.shut_down {
            return;
        }
        match recipient {
            Recipient::All => self.broadcast(now, message),
            Recipient::Peer(peer_id) => self.send_directed(now, message, peer_id),
        }
    }

    fn broadcast(&mut self, now: Millis, payload: String) {
        let body = DataBody {
            id: self.outbox.last_bcast + 1,
            to: None,
            payload,
        };
        if !self.send(now, Destination::Multicast, Kind::Data, &body) {
            return self.drop(now, DropReason::TooLargeToSend, &"Slips message to *");
        }
        let id = self.outbox.new_broadcast(now, body.payload);
        let d = &self.settings.delivery;
        let (spacing, first_digest, digests) = (
            d.repeat_spacing_ms,
            d.first_digest_ms,
            d.digests_after_broadcast,
        );
        for k in 1..=u64::from(d.broadcast_repeats) {
            let jitter = self.rng.random_range(0..=spacing / 2);
            let due = now + k * spacing - spacing / 4 + jitter;
            self.outbox.repeats.push((due, id));
        }
        self.outbox.arm_digests(now, first_digest, digests);
    }

    fn send_directed(&mut self, now: Millis, payload: String, peer_id: String) {
        let target = self
            .peers
            .by_peer_id(&peer_id)
            .filter(|p| p.state == PeerState::Active)
            .and_then(|p| p.addr.map(|a| (a, *p.key.as_bytes())));
        let Some((addr, to_key)) = target else {
            return self.drop(
                now,
                DropReason::UnknownRecipient,
                &format_args!("Slips message for unknown or inactive peer {peer_id}"),
            );
        };
        let id = self.outbox.last_directed + 1;
        let body = DataBody {
            id,
            to: Some(peer_id),
            payload,
        };
        if !self.send(now, Destination::Unicast(addr), Kind::Data, &body) {
            return self.drop(now, DropReason::TooLargeToSend, &"directed Slips message");
        }
        self.outbox.last_directed = id;
        let d = &self.settings.delivery;
        if self.outbox.pending.len() >= d.max_pending_directed
            && let Some((&oldest, _)) = self.outbox.pending.iter().next()
        {
            self.outbox.pending.remove(&oldest);
            self.stats.directed_expired += 1;
        }
        let pending = Pending {
            to_key,
            to_peer_id: body.to.unwrap_or_default(),
            addr,
            payload: body.payload,
            next_ms: now + d.directed_retry_ms,
            backoff_ms: d.directed_retry_ms,
            deadline_ms: now + d.directed_deadline_ms,
        };
        self.outbox.pending.insert(id, pending);
    }

    /// Timers: announcements, answers, housekeeping, saving.
    pub fn handle_timeout(&mut self, now: Millis) {
        if self.shut_down {
            return;
        }
        if now >= self.next_announce_ms {
            self.announce(now);
            self.next_announce_ms = if self.startup_left > 0 {
                self.startup_left -= 1;
                now + STARTUP_SPACING_MS
            } else {
                now + self.jittered_interval()
            };
        }
        if self.answer_at_ms.is_some_and(|t| now >= t) {
            self.answer_at_ms = None;
            self.last_answer_ms = now;
            self.announce(now);
        }
        if now >= self.next_housekeeping_ms {
            self.next_housekeeping_ms = now + HOUSEKEEPING_MS;
            self.housekeeping(now);
        }
        self.delivery_timers(now);
    }

    /// Broadcast copies, digests and retransmissions that are due.
    fn delivery_timers(&mut self, now: Millis) {
        let due: Vec<u64> = self
            .outbox
            .repeats
            .iter()
            .filter(|(t, _)| *t <= now)
            .map(|(_, id)| *id)
            .collect();
        self.outbox.repeats.retain(|(t, _)| *t > now);
        for id in due {
            if let Some(b) = self.outbox.broadcast(id) {
                let body = DataBody {
                    id,
                    to: None,
                    payload: b.payload.clone(),
                };
                self.stats.retransmissions += 1;
                self.send(now, Destination::Multicast, Kind::Data, &body);
            }
        }
        if let Some(mut d) = self.outbox.digest.filter(|d| d.due_ms <= now) {
            let body = DigestBody {
                floor: self.outbox.floor(),
                last: self.outbox.settled_last(),
            };
            self.send(now, Destination::Multicast, Kind::Digest, &body);
            d.left = d.left.saturating_sub(1);
            d.interval_ms = d.interval_ms.saturating_mul(2);
            d.due_ms = now + d.interval_ms;
            self.outbox.digest = (d.left > 0).then_some(d);
        }
        let due: Vec<u64> = self
            .outbox
            .pending
            .iter()
            .filter(|(_, p)| p.next_ms <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(mut p) = self.outbox.pending.remove(&id) else {
                continue;
            };
            if now >= p.deadline_ms {
                self.stats.directed_expired += 1;
                tracing::warn!(peer = %p.to_peer_id, id, "directed message not acknowledged in time");
                continue;
            }
            // Follow the peer if it moved meanwhile.
            if let Some(a) = self.peers.by_peer_id(&p.to_peer_id).and_then(|q| q.addr) {
                p.addr = a;
            }
            let body = DataBody {
                id,
                to: Some(p.to_peer_id.clone()),
                payload: p.payload.clone(),
            };
            self.stats.retransmissions += 1;
            self.send(now, Destination::Unicast(p.addr), Kind::Data, &body);
            p.backoff_ms = p
                .backoff_ms
                .saturating_mul(2)
                .min(MAX_DIRECTED_BACKOFF_MS.max(self.settings.delivery.directed_retry_ms));
            p.next_ms = (now + p.backoff_ms).min(p.deadline_ms);
            self.outbox.pending.insert(id, p);
        }
    }

    /// Says goodbye and saves the peer list. The node ignores every input
    /// afterwards.
    pub fn shutdown(&mut self, now: Millis) {
        if self.shut_down {
            return;
        }
        self.send(now, Destination::Multicast, Kind::Goodbye, &GoodbyeBody {});
        self.save(now);
        self.shut_down = true;
    }

    // ----- handlers -------------------------------------------------------

    /// Adds a verified newcomer to the table; false if the table is full.
    fn admit(&mut self, now: Millis, v: &Verified<'_>) -> bool {
        let peer = Peer {
            peer_id: peer_id_of(&v.key),
            key: v.key,
            addr: None,
            state: PeerState::Inactive,
            first_seen_ms: now,
            last_seen_ms: now,
            persisted_last_seen_ms: 0,
            last_announce_ms: 0,
            instance: None,
            last_valid_payload_ms: 0,
            announce_interval_ms: self.settings.announce_interval_ms,
            missed: 0,
            reliability: Reliability::default(),
            reported_reliability: None,
            instances: Vec::new(),
            bucket: TokenBucket::full(self.settings.peer_quota, now),
        };
        let ok = self.peers.insert(peer, self.settings.max_peers);
        if ok {
            self.mark_dirty();
        }
        ok
    }

    fn on_announce(&mut self, now: Millis, src: SocketAddr, v: &Verified<'_>) {
        let Ok(body) = v.body::<AnnounceBody>() else {
            return self.misbehaved(now, v, DropReason::BadBody, "malformed announce");
        };
        if src.ip() != IpAddr::V4(body.ip) {
            // A signed announce relayed from elsewhere: never let it
            // redirect directed traffic. Not held against the key: anyone
            // can resend a multicast announce that we missed.
            return self.drop(
                now,
                DropReason::AddressMismatch,
                &format_args!("announce relayed from {src}"),
            );
        }
        let params = self.settings.reliability;
        let Some(peer) = self.peers.get_mut(&v.key) else {
            return;
        };
        let addr = SocketAddrV4::new(body.ip, body.port);
        let moved = peer.addr != Some(addr);
        let was_active = peer.state == PeerState::Active;
        // A peer we have not heard announce in this run of its own (new,
        // restarted, back from silence, or moved) gets a prompt answer, so
        // it learns about us without waiting for our next announcement.
        let restarted = peer.instance != Some(v.stamp.instance);
        let newcomer = restarted || !was_active || moved;
        peer.instance = Some(v.stamp.instance);
        peer.addr = Some(addr);
        peer.state = PeerState::Active;
        peer.missed = 0;
        // Start-up announcements and answers come faster than the interval;
        // one announcement per half interval counts, so announcing more
        // often cannot raise reliability.
        if restarted || now.saturating_sub(peer.last_announce_ms) >= peer.announce_interval_ms / 2 {
            peer.last_announce_ms = now;
            peer.reliability
                .observe(now, reliability::ANNOUNCE_ON_TIME, &params);
        }
        peer.announce_interval_ms = body.interval_ms.clamp(1_000, 3_600_000);
        let peer_id = peer.peer_id.clone();
        if moved || !was_active {
            tracing::info!(peer = %peer_id, %addr, "peer active");
            self.mark_dirty();
        }
        self.peer_update(now, &v.key, moved);
        if newcomer {
            self.schedule_answer(now);
        }
        // An announcement doubles as a digest: it heals what a partition
        // longer than the digest schedule made us miss.
        self.check_broadcasts(now, src, v, 0, body.last_bcast);
    }

    fn on_goodbye(&mut self, v: &Verified<'_>) {
        if let Some(peer) = self.peers.get_mut(&v.key) {
            if peer.state == PeerState::Active {
                tracing::info!(peer = %peer.peer_id, "peer said goodbye");
            }
            peer.state = PeerState::Inactive;
            self.mark_dirty();
        }
    }

    fn on_data(&mut self, now: Millis, src: SocketAddr, v: &Verified<'_>) {
        let Ok(body) = v.body::<DataBody>() else {
            return self.misbehaved(now, v, DropReason::BadBody, "malformed data");
        };
        if let Some(to) = &body.to
            && *to != self.peer_id
        {
            return self.drop(
                now,
                DropReason::NotForUs,
                &"directed message for another peer",
            );
        }
        let directed = body.to.is_some();
        let Some(peer) = self.peers.get_mut(&v.key) else {
            return;
        };
        let reporter = peer.peer_id.clone();
        let Some(inst) = peer.instance_mut(v.stamp.instance) else {
            return;
        };
        let fresh = if directed {
            inst.rx.directed.commit(body.id)
        } else {
            if inst.rx.bcast_base.is_none() {
                inst.rx.bcast_base = Some(body.id);
            }
            inst.rx.bcast.commit(body.id)
        };
        if directed {
            // Acknowledge every copy: the previous ack may have been lost.
            if let SocketAddr::V4(to) = src {
                let ack = AckBody {
                    id: body.id,
                    to: reporter.clone(),
                };
                self.send(now, Destination::Unicast(to), Kind::Ack, &ack);
            }
        }
        if !fresh {
            return self.drop(now, DropReason::Duplicate, &"message already delivered");
        }
        let valid = match payload::validate(&body.payload) {
            Ok(p) => p,
            Err(e) => return self.misbehaved(now, v, DropReason::BadPayload, &e.to_string()),
        };
        if valid.kind == PayloadKind::Blame {
            let allowed = match self.settings.blames {
                BlamePolicy::Drop => false,
                BlamePolicy::All => true,
                BlamePolicy::Allowlist => self.settings.blame_allowlist.contains(&reporter),
            };
            if !allowed {
                return self.drop(
                    now,
                    DropReason::BlamePolicy,
                    &format_args!("blame about {} from {reporter} (blame policy)", valid.key),
                );
            }
        }
        // At most one valid payload per peer counts per interval, so a
        // chatty (or flooding) key cannot farm reliability.
        if let Some(peer) = self.peers.get_mut(&v.key)
            && now.saturating_sub(peer.last_valid_payload_ms) >= VALID_PAYLOAD_SPACING_MS
        {
            peer.last_valid_payload_ms = now;
            self.observe(now, &v.key, reliability::VALID_PAYLOAD);
        }
        tracing::info!(peer = %reporter, kind = ?valid.kind, ip = %valid.key, "received from peer");
        // Slips gets the payload re-encoded as Slips itself writes it
        // (src/slips/payload.rs), never the peer's bytes.
        self.emit(ToSlips::GoData {
            reporter,
            report_time: secs(now),
            request_ip: (valid.kind == PayloadKind::Request).then(|| valid.key.clone()),
            message: valid.canonical,
        });
    }

    fn on_ack(&mut self, now: Millis, v: &Verified<'_>) {
        let Ok(body) = v.body::<AckBody>() else {
            return self.misbehaved(now, v, DropReason::BadBody, "malformed ack");
        };
        if body.to != self.peer_id {
            return self.drop(now, DropReason::NotForUs, &"ack for another peer");
        }
        // Only the recipient can acknowledge: a third party cannot cancel
        // retransmissions.
        if self
            .outbox
            .pending
            .get(&body.id)
            .is_some_and(|p| p.to_key == *v.key.as_bytes())
        {
            self.outbox.pending.remove(&body.id);
        }
    }

    fn on_digest(&mut self, now: Millis, src: SocketAddr, v: &Verified<'_>) {
        let Ok(body) = v.body::<DigestBody>() else {
            return self.misbehaved(now, v, DropReason::BadBody, "malformed digest");
        };
        self.check_broadcasts(now, src, v, body.floor, body.last);
    }

    /// The sender says its broadcasts `floor..=last` are available: ask for
    /// the ones we expected and did not get.
    fn check_broadcasts(
        &mut self,
        now: Millis,
        src: SocketAddr,
        v: &Verified<'_>,
        floor: u64,
        last: u64,
    ) {
        let Some(peer) = self.peers.get_mut(&v.key) else {
            return;
        };
        let to = peer.peer_id.clone();
        let addr = peer.addr.or(match src {
            SocketAddr::V4(a) => Some(a),
            SocketAddr::V6(_) => None,
        });
        let Some(inst) = peer.instance_mut(v.stamp.instance) else {
            return;
        };
        inst.rx.learn_last(last);
        let ids = inst.rx.missing(floor, last, MAX_NACK_IDS);
        if ids.is_empty() || now.saturating_sub(inst.rx.last_nack_ms) < MIN_NACK_GAP_MS {
            return;
        }
        inst.rx.last_nack_ms = now;
        if let Some(addr) = addr {
            self.send(
                now,
                Destination::Unicast(addr),
                Kind::Nack,
                &NackBody { to, ids },
            );
        }
    }

    fn on_nack(&mut self, now: Millis, src: SocketAddr, v: &Verified<'_>) {
        let Ok(body) = v.body::<NackBody>() else {
            return self.misbehaved(now, v, DropReason::BadBody, "malformed nack");
        };
        if body.to != self.peer_id {
            return self.drop(now, DropReason::NotForUs, &"nack for another peer");
        }
        let addr = self.peers.get(&v.key).and_then(|p| p.addr).or(match src {
            SocketAddr::V4(a) => Some(a),
            SocketAddr::V6(_) => None,
        });
        let Some(addr) = addr else {
            return;
        };
        let repairs: Vec<DataBody> = body
            .ids
            .iter()
            .take(MAX_NACK_IDS)
            .filter_map(|id| self.outbox.broadcast(*id))
            .map(|b| DataBody {
                id: b.id,
                to: None,
                payload: b.payload.clone(),
            })
            .collect();
        for repair in repairs {
            self.stats.repairs += 1;
            self.send(now, Destination::Unicast(addr), Kind::Data, &repair);
        }
    }

    /// A verified peer broke the rules: drop, count, lower its reliability.
    fn misbehaved(&mut self, now: Millis, v: &Verified<'_>, reason: DropReason, what: &str) {
        let who = self
            .peers
            .get(&v.key)
            .map(|p| p.peer_id.clone())
            .unwrap_or_default();
        self.drop(now, reason, &format_args!("{what} from {who}"));
        self.observe(now, &v.key, reliability::MISBEHAVIOUR);
        if self.bans.strike(v.key.as_bytes(), now) {
            self.banned(now, &v.key);
        }
    }

    /// A verified peer went over its rate: a misbehaviour once per second
    /// it lasts (see [`bans::RATE_STRIKE_SPACING_MS`]).
    fn over_rate(&mut self, now: Millis, key: &ed25519_dalek::VerifyingKey) {
        let (counted, banned) = self.bans.rate_strike(key.as_bytes(), now);
        if counted {
            self.observe(now, key, reliability::MISBEHAVIOUR);
        }
        if banned {
            self.banned(now, key);
        }
    }

    /// A key was just banned: it is no longer a peer to send to, and Slips
    /// hears its reliability is 0 until the ban ends.
    fn banned(&mut self, now: Millis, key: &ed25519_dalek::VerifyingKey) {
        self.stats.bans += 1;
        let secs_left = self
            .bans
            .banned_until(key.as_bytes(), now)
            .map_or(0, |t| t.saturating_sub(now) / 1000);
        if let Some(p) = self.peers.get_mut(key) {
            tracing::warn!(peer = %p.peer_id, secs = secs_left, "peer banned after repeated misbehaviour");
            p.state = PeerState::Inactive;
        }
        self.mark_dirty();
        self.peer_update(now, key, true);
    }

    fn observe(&mut self, now: Millis, key: &ed25519_dalek::VerifyingKey, o: Observation) {
        let params = self.settings.reliability;
        if let Some(p) = self.peers.get_mut(key) {
            p.reliability.observe(now, o, &params);
            self.peer_update(now, key, false);
        }
    }

    // ----- timers ---------------------------------------------------------

    fn jittered_interval(&mut self) -> Millis {
        let base = self.settings.announce_interval_ms as f64;
        let j = self.settings.announce_jitter;
        let f = if j > 0.0 {
            self.rng.random_range(1.0 - j..=1.0 + j)
        } else {
            1.0
        };
        (base * f).max(1.0) as Millis
    }

    fn schedule_answer(&mut self, now: Millis) {
        if self.answer_at_ms.is_some() {
            return;
        }
        let earliest = self.last_answer_ms + MIN_ANSWER_GAP_MS;
        let delay = self.rng.random_range(0..=self.settings.answer_delay_max_ms);
        self.answer_at_ms = Some((now + delay).max(earliest));
    }

    fn announce(&mut self, now: Millis) {
        let body = AnnounceBody {
            ip: *self.params.unicast.ip(),
            port: self.params.unicast.port(),
            interval_ms: self.settings.announce_interval_ms,
            last_bcast: self.outbox.last_bcast,
        };
        self.send(now, Destination::Multicast, Kind::Announce, &body);
    }

    fn housekeeping(&mut self, now: Millis) {
        let params = self.settings.reliability;
        let limit = self.settings.inactive_after_missed;
        let mut changed = Vec::new();
        for peer in self.peers.iter_mut() {
            if peer.state != PeerState::Active || peer.last_announce_ms == 0 {
                continue;
            }
            let interval = peer.announce_interval_ms;
            let since = now.saturating_sub(peer.last_announce_ms);
            // Announcements jitter by up to ±50 %: one is missed only when
            // half an interval past its mean due time.
            let expected_missed = (since.saturating_sub(interval / 2) / interval) as u32;
            if peer.missed >= expected_missed {
                continue;
            }
            while peer.missed < expected_missed {
                peer.missed += 1;
                peer.reliability
                    .observe(now, reliability::ANNOUNCE_MISSED, &params);
            }
            // Missed announcements cost reliability, but a peer we still
            // hear from (acks, data, digests) is alive: under heavy loss its
            // announcements may be what got lost.
            let heard_recently = now.saturating_sub(peer.last_seen_ms) < interval;
            if peer.missed >= limit && !heard_recently {
                peer.state = PeerState::Inactive;
                tracing::info!(peer = %peer.peer_id, missed = peer.missed, "peer inactive");
            }
            changed.push(peer.key);
        }
        for key in changed {
            self.peer_update(now, &key, false);
        }
        let forget = self.settings.forget_after_ms;
        let forgotten = self.peers.retain(|p| {
            p.state == PeerState::Active || now.saturating_sub(p.last_seen_ms) <= forget
        });
        if forgotten > 0 {
            tracing::info!(forgotten, "forgot peers not seen for too long");
            self.mark_dirty();
        }
        self.sources.prune(now);
        for ended in self.bans.prune(now) {
            let key = self
                .peers
                .iter()
                .find(|p| *p.key.as_bytes() == ended)
                .map(|p| p.key);
            if let Some(key) = key {
                // Its real reliability again (misbehaviour included).
                self.peer_update(now, &key, true);
            }
        }
        let d = &self.settings.delivery;
        self.outbox
            .prune(now, d.retain_broadcasts, d.retain_broadcast_ms);
        self.drop_log.flush(now);
        if self.dirty && now.saturating_sub(self.last_save_ms) >= self.settings.save_interval_ms {
            self.save(now);
        }
    }

    // ----- outputs --------------------------------------------------------

    fn send<B: serde::Serialize>(
        &mut self,
        now: Millis,
        to: Destination,
        kind: Kind,
        body: &B,
    ) -> bool {
        self.seq += 1;
        let stamp = Stamp {
            instance: self.params.instance,
            seq: self.seq,
            ts_ms: now,
        };
        match wire::seal(&self.key, &self.settings.network, stamp, kind, body) {
            Some(datagram) => {
                self.stats.datagrams_out += 1;
                self.actions.push_back(Action::Send { to, datagram });
                true
            }
            None => false,
        }
    }

    fn emit(&mut self, msg: ToSlips) {
        self.stats.to_slips += 1;
        self.actions.push_back(Action::ToSlips(msg));
    }

    /// Tells Slips about a peer if it is new to Slips, moved, or its
    /// reliability changed by at least `report_delta`.
    fn peer_update(&mut self, now: Millis, key: &ed25519_dalek::VerifyingKey, force: bool) {
        let params = self.settings.reliability;
        let delta = self.settings.report_delta;
        let banned = self.bans.is_banned(key.as_bytes(), now);
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        let r = if banned {
            0.0
        } else {
            peer.reliability.value(now, &params)
        };
        let due = match peer.reported_reliability {
            None => true,
            Some(old) => (r - old).abs() >= delta,
        };
        if !(force || due) {
            return;
        }
        peer.reported_reliability = Some(r);
        let msg = ToSlips::PeerUpdate {
            peerid: peer.peer_id.clone(),
            ip: peer.addr.map(|a| IpAddr::V4(*a.ip())),
            reliability: Some(r),
            timestamp: secs(now),
        };
        self.mark_dirty();
        self.emit(msg);
    }

    fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    fn save(&mut self, now: Millis) {
        for p in self.peers.iter_mut() {
            p.persisted_last_seen_ms = p.last_seen_ms;
        }
        let mut peers: Vec<StoredPeer> = self.peers.iter().map(Peer::to_stored).collect();
        peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        self.actions.push_back(Action::SavePeers(PeerFile {
            version: FORMAT_VERSION,
            saved_at: secs(now) as u64,
            peers,
        }));
        self.dirty = false;
        self.last_save_ms = now;
    }

    fn drop(&mut self, now: Millis, reason: DropReason, detail: &dyn std::fmt::Display) {
        *self.stats.dropped.entry(reason).or_insert(0) += 1;
        self.drop_log.record(now, reason, detail);
    }
}

fn secs(ms: Millis) -> i64 {
    i64::try_from(ms / 1000).unwrap_or(i64::MAX)
}

fn wire_reason(e: WireError) -> DropReason {
    match e {
        WireError::Oversized => DropReason::Oversized,
        WireError::BadFraming => DropReason::BadFraming,
        WireError::BadHeader => DropReason::BadHeader,
        WireError::BadVersion => DropReason::BadVersion,
        WireError::WrongNetwork => DropReason::WrongNetwork,
        WireError::BadKey => DropReason::BadKey,
        WireError::BadSignature => DropReason::BadSignature,
    }
}

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;
