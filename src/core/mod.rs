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
//! Time is supplied by the caller as [`Now`]: a monotonic clock for every
//! timer and the wall clock for datagram timestamps, freshness and what is
//! persisted, so tests run many nodes on simulated clocks (stepped wall
//! clocks included) and an in-memory network.

pub mod bans;
pub mod delivery;
pub mod limits;
pub mod orgs;
mod paths;
pub mod peers;
pub mod reliability;
pub mod stats;
pub mod status;

use crate::config::DeliveryConfig;
use crate::config::{BlamePolicy, Config};
use crate::identity::peer_id_of;
use crate::slips::payload::{self, PayloadKind};
use crate::slips::{Recipient, ToSlips};
use crate::wire::{
    self, AckBody, AnnounceBody, ChallengeBody, DataBody, DigestBody, GoodbyeBody, Kind,
    MAX_NACK_IDS, NackBody, ResponseBody, Stamp, Unverified, Verified, WireError,
};
use bans::{BanParams, Bans};
use delivery::{Delivery, Due, Outbox};
use ed25519_dalek::SigningKey;
use limits::{KeyedLimiter, Quota, TokenBucket};
use paths::{Challenger, Ledger, RepeatFilter};
use peers::{Peer, PeerState, PeerTable, PeerTraffic};
pub use peers::{PeerList, PeerRecord};
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
/// Sized so that a flood from many spoofed sources (10 000 a second)
/// fits, each source within its own budget, and a newcomer's source still
/// gets one of its own: about 3 MB at most.
const MAX_SOURCES: usize = 65_536;
/// Misbehaving keys whose strikes and bans are remembered.
const MAX_BAN_KEYS: usize = 4_096;
/// Valid payloads of one peer count for reliability at most this often.
const VALID_PAYLOAD_SPACING_MS: Millis = 10_000;
/// A peer's `last_seen` is rewritten to disk at most this often.
const LAST_SEEN_PERSIST_MS: Millis = 60_000;
/// Unproven addresses whose byte credit is tracked. Beyond it the least
/// recently used is forgotten, so a flood of spoofed sources costs O(1)
/// memory and can only lose its own credit.
const MAX_LEDGER: usize = 1_024;
/// Unproven addresses idle this long are forgotten.
const LEDGER_IDLE_MS: Millis = 60_000;
/// A challenge that got no response is sent again after this long, at
/// most [`CHALLENGE_RETRIES`] times (credit permitting): under 30 % loss a
/// round trip fails half the time.
const CHALLENGE_RETRY_MS: Millis = 150;
/// Retries of one challenge.
const CHALLENGE_RETRIES: u8 = 2;
/// Shortest gap between two challenges of one known peer.
const MIN_CHALLENGE_GAP_MS: Millis = 100;
/// Per peer, Slips hears at most one `peer_update` this often (the latest
/// value wins): every update adds rows to Slips' trust database forever.
const PEER_UPDATE_GAP_MS: Millis = 10_000;
/// All `peer_update`s to Slips: 2 per second, bursts of 20.
const PEER_UPDATE_QUOTA: Quota = Quota {
    per_second: 2.0,
    burst: 20.0,
};
/// `go_data` from one peer with a proven address: 10 per second, bursts of
/// 200 (a Slips that reports a scan sends many reports at once).
const GO_DATA_PEER_QUOTA: Quota = Quota {
    per_second: 10.0,
    burst: 200.0,
};
/// `go_data` from all peers whose address is not proven this run, shared.
const GO_DATA_UNPROVEN_QUOTA: Quota = Quota {
    per_second: 2.0,
    burst: 10.0,
};
/// Every `go_data` to Slips: 50 per second, bursts of 400. Slips drains
/// its channel far slower while it answers requests; this bounds what a
/// few Sybil keys with proven addresses can queue.
const GO_DATA_TOTAL_QUOTA: Quota = Quota {
    per_second: 50.0,
    burst: 400.0,
};

/// Responses to challenges, all keys together: 100 per second, bursts of
/// 200. Each peer challenges us about once per session, so this is far
/// above what a LAN of pigeons needs, and at ~300 bytes each it cannot fill
/// a socket's send buffer (about 208 KiB on Linux) while datagrams to
/// forged, unreachable sources wait in the neighbour queues (~3 s).
const RESPONSE_QUOTA: Quota = Quota {
    per_second: 100.0,
    burst: 200.0,
};

/// Challenges of keys not in the table, on their first announce from an
/// address (and retries): 200 per second, bursts of 200. Challenges to
/// forged, unreachable sources wait ~3 s in the kernel's neighbour queue,
/// charged to the probe socket's send buffer (about 208 KiB): at this rate
/// (360 bytes each) it never fills.
const FIRST_CONTACT_QUOTA: Quota = Quota {
    per_second: 200.0,
    burst: 200.0,
};
/// Challenges of keys not in the table whose address announced before,
/// recently (an honest pigeon starting up announces three times, one
/// second apart; a flood from forged sources mostly once each): a budget
/// of their own, so that such a flood cannot keep a newcomer out.
const REPEAT_CONTACT_QUOTA: Quota = Quota {
    per_second: 200.0,
    burst: 200.0,
};

/// The caller's clocks. Timers run on `mono`, a monotonic clock (any
/// origin, never steps); datagram timestamps, freshness and persisted
/// times use `wall`, Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds.
    pub mono: Millis,
    /// Unix milliseconds.
    pub wall: Millis,
}

impl Now {
    /// Both clocks at the same value (tests, tools).
    pub fn same(ms: Millis) -> Self {
        Self { mono: ms, wall: ms }
    }

    /// The same instant seen by a wall clock off by `skew_ms`.
    pub fn with_wall_skew(self, skew_ms: i64) -> Self {
        Self {
            mono: self.mono,
            wall: self.wall.saturating_add_signed(skew_ms),
        }
    }
}

/// Which socket a datagram arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Via {
    /// The multicast group socket.
    Group,
    /// Our unicast socket.
    Unicast,
}

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The LAN's multicast group.
    Multicast,
    /// One peer, from our unicast socket (the address we announce).
    Unicast(SocketAddrV4),
    /// An address that has not proven it receives our datagrams, from a
    /// socket of its own: challenges to forged, unreachable sources wait in
    /// the kernel's neighbour queues and fill that socket's send buffer,
    /// never the one peers are served from.
    Probe(SocketAddrV4),
}

impl Destination {
    /// The unicast address, if any.
    pub fn unicast(self) -> Option<SocketAddrV4> {
        match self {
            Self::Multicast => None,
            Self::Unicast(a) | Self::Probe(a) => Some(a),
        }
    }
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
    /// Remember the peer list (the runtime writes it to the peer list file).
    SavePeers(PeerList),
    /// org: keep a revocation list that is newer than the one we had (in
    /// `org.revocation_dir`, as `<org id>.list`).
    SaveOrgList {
        /// The organisation's id.
        org: String,
        /// The list's bytes (the file holds their base64).
        list: Vec<u8>,
    },
}

/// Facts about this run that do not come from the configuration.
#[derive(Debug, Clone)]
pub struct NodeParams {
    /// Our unicast address as announced to peers.
    pub unicast: SocketAddrV4,
    /// Random per start; peers use it to tell a restart from a replay.
    pub instance: u64,
    /// Seed of the node's RNG (jitter, challenge secret). Random in
    /// production, fixed in tests for determinism.
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
    max_keys_per_ip: usize,
    peer_quota: Quota,
    response_quota: Quota,
    reliability: ReliabilityParams,
    report_delta: f64,
    save_interval_ms: Millis,
    delivery: DeliveryConfig,
    blames: BlamePolicy,
    blame_allowlist: HashSet<String>,
    report_peer_addresses: bool,
}

impl Settings {
    fn from_config(c: &Config) -> Self {
        let response_bytes = f64::from(c.security.response_bytes_per_sec.max(1));
        Self {
            network: c.network.name.clone(),
            announce_interval_ms: c.discovery.announce_interval_ms.clamp(
                *wire::ANNOUNCE_INTERVAL_MS.start(),
                *wire::ANNOUNCE_INTERVAL_MS.end(),
            ),
            announce_jitter: c.discovery.announce_jitter.clamp(0.0, 0.5),
            startup_announces: c.discovery.startup_announces,
            inactive_after_missed: c.discovery.inactive_after_missed.max(1),
            answer_delay_max_ms: c.discovery.answer_delay_max_ms,
            forget_after_ms: c.discovery.forget_after_days.saturating_mul(86_400_000),
            max_clock_skew_ms: c.security.max_clock_skew_ms,
            max_peers: c.security.max_peers.max(1),
            max_keys_per_ip: c.security.max_keys_per_ip.max(1),
            peer_quota: Quota {
                per_second: f64::from(c.security.per_peer_rate.max(1)),
                burst: f64::from(c.security.per_peer_burst.max(1)),
            },
            // A burst of one second's budget, and never less than what one
            // full nack's repairs take.
            response_quota: Quota {
                per_second: response_bytes,
                burst: response_bytes.max((MAX_NACK_IDS * wire::MAX_DATAGRAM) as f64),
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
            report_peer_addresses: c.slips.report_peer_addresses,
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
    /// Makes and checks the nonces of return-routability challenges.
    challenger: Challenger,
    /// Byte credit of addresses that have not proven they receive.
    ledger: Ledger,
    /// Which source addresses announced recently (first contact or repeat).
    repeats: RepeatFilter,
    /// Budget of challenges on first contact (and retries).
    first_contacts: TokenBucket,
    /// Budget of challenges of addresses that announced before.
    repeat_contacts: TokenBucket,
    bans: Bans,
    /// Shared budget of `go_data` from peers without a proven address.
    unproven_go_data: TokenBucket,
    /// Budget of every `go_data` to Slips.
    total_go_data: TokenBucket,
    /// Budget of every `peer_update` to Slips.
    total_peer_updates: TokenBucket,
    /// Budget of every response to a challenge.
    responses_total: TokenBucket,
    actions: VecDeque<Action>,
    stats: Stats,
    drop_log: DropLog,
    /// Wall clock minus monotonic clock at the latest input: converts the
    /// monotonic `now` of internal code into Unix time where needed.
    wall_offset: i64,
    startup_left: u32,
    next_announce_ms: Millis,
    answer_at_ms: Option<Millis>,
    last_answer_ms: Millis,
    next_housekeeping_ms: Millis,
    /// The peer list changed since it was last handed out for saving.
    dirty: bool,
    last_save_ms: Millis,
    shut_down: bool,
    /// The peer whose verified, fresh datagram is being handled (cleared
    /// at the start of every input): drops meanwhile count against it in
    /// the operator view.
    handling_from: Option<ed25519_dalek::VerifyingKey>,
    /// Monotonic time the node was created (uptime in the operator view).
    started_ms: Millis,
    /// org: memberships, trusted organisations, keys (`core::orgs`).
    orgs: orgs::Orgs,
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
    /// A node that knows the `stored` peers (all inactive and unproven
    /// until heard).
    pub fn new(
        config: &Config,
        key: SigningKey,
        params: NodeParams,
        stored: Vec<PeerRecord>,
        now: Now,
    ) -> Self {
        let settings = Settings::from_config(config);
        let mut rng = StdRng::seed_from_u64(params.rng_seed);
        let t = now.mono;
        let first = t + rng.random_range(0..=FIRST_ANNOUNCE_MAX_DELAY_MS);
        let source_quota = Quota {
            per_second: f64::from(config.security.per_source_rate.max(1)),
            burst: f64::from(config.security.per_source_burst.max(1)),
        };
        let secret: [u8; 32] = rng.random();
        let peer_id = peer_id_of(&key.verifying_key());
        let orgs = orgs::Orgs::new(
            &config.org,
            &key,
            Self::org_rng_seed(&key, params.rng_seed, params.instance),
        );
        let mut node = Self {
            orgs,
            peer_id,
            key,
            seq: 0,
            outbox: Outbox::default(),
            rng,
            peers: PeerTable::default(),
            sources: KeyedLimiter::new(source_quota, MAX_SOURCES, t),
            challenger: Challenger::new(secret),
            ledger: Ledger::new(MAX_LEDGER),
            repeats: RepeatFilter::new(),
            first_contacts: TokenBucket::full(FIRST_CONTACT_QUOTA, t),
            repeat_contacts: TokenBucket::full(REPEAT_CONTACT_QUOTA, t),
            bans: Bans::new(
                BanParams {
                    after: config.security.ban_after_misbehaviours,
                    window_ms: config.security.ban_window_secs.saturating_mul(1000),
                    ban_ms: config.security.ban_secs.saturating_mul(1000),
                },
                MAX_BAN_KEYS,
            ),
            unproven_go_data: TokenBucket::full(GO_DATA_UNPROVEN_QUOTA, t),
            total_go_data: TokenBucket::full(GO_DATA_TOTAL_QUOTA, t),
            total_peer_updates: TokenBucket::full(PEER_UPDATE_QUOTA, t),
            responses_total: TokenBucket::full(RESPONSE_QUOTA, t),
            actions: VecDeque::new(),
            stats: Stats::default(),
            drop_log: DropLog::default(),
            wall_offset: 0,
            startup_left: settings.startup_announces.max(1),
            next_announce_ms: first,
            answer_at_ms: None,
            last_answer_ms: 0,
            next_housekeeping_ms: t + HOUSEKEEPING_MS,
            dirty: false,
            last_save_ms: t,
            shut_down: false,
            handling_from: None,
            started_ms: t,
            settings,
            params,
        };
        node.set_clock(now);
        node.load_stored(stored, t);
        node
    }

    fn set_clock(&mut self, now: Now) -> Millis {
        self.wall_offset = i64::try_from(now.wall)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(now.mono).unwrap_or(i64::MAX));
        now.mono
    }

    /// Unix milliseconds at monotonic time `t` (per the latest input).
    fn wall(&self, t: Millis) -> Millis {
        let w = i64::try_from(t)
            .unwrap_or(i64::MAX)
            .saturating_add(self.wall_offset);
        u64::try_from(w).unwrap_or(0)
    }

    fn load_stored(&mut self, stored: Vec<PeerRecord>, t: Millis) {
        let own = self.key.verifying_key();
        let wall = self.wall(t);
        for s in stored {
            if s.key == own {
                continue;
            }
            if wall.saturating_sub(s.last_seen_ms) > self.settings.forget_after_ms {
                // Forgotten: the file must be rewritten without it.
                self.mark_dirty();
                continue;
            }
            let mut peer = self.new_peer(s.key, t);
            peer.addr = s.addr;
            peer.first_seen_ms = s.first_seen_ms;
            peer.last_seen_ms = s.last_seen_ms;
            peer.persisted_last_seen_ms = s.last_seen_ms;
            peer.last_heard_ms = 0;
            peer.reliability = Reliability::from_sums(s.reliability);
            peer.reported_reliability = s.reported_reliability.filter(|r| r.is_finite());
            self.peers
                .insert(peer, self.settings.max_peers, self.settings.max_keys_per_ip);
        }
    }

    /// The one place a [`Peer`] is built: a key first heard at `t`.
    fn new_peer(&self, key: ed25519_dalek::VerifyingKey, t: Millis) -> Peer {
        let wall = self.wall(t);
        Peer {
            peer_id: peer_id_of(&key),
            key,
            addr: None,
            proven: false,
            state: PeerState::Inactive,
            first_seen_ms: wall,
            last_seen_ms: wall,
            persisted_last_seen_ms: 0,
            last_heard_ms: t,
            last_announce_ms: 0,
            instance: None,
            session_instance: None,
            last_valid_payload_ms: 0,
            last_challenge_ms: 0,
            announce_interval_ms: self.settings.announce_interval_ms,
            missed: 0,
            reliability: Reliability::default(),
            reported_reliability: None,
            update_pending: false,
            last_update_ms: None,
            instances: Vec::new(),
            bucket: TokenBucket::full(self.settings.peer_quota, t),
            responses: TokenBucket::full(self.settings.response_quota, t),
            go_data: TokenBucket::full(GO_DATA_PEER_QUOTA, t),
            traffic: PeerTraffic::default(),
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

    /// Reliability of a peer at monotonic time `t` (of the latest input).
    pub fn reliability_of(&self, peer: &Peer, t: Millis) -> f64 {
        peer.reliability
            .value(self.wall(t), &self.settings.reliability)
    }

    /// The next action to carry out, if any.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Monotonic time at which [`Node::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Millis {
        let mut t = self.next_housekeeping_ms.min(self.next_announce_ms);
        if let Some(a) = self.answer_at_ms {
            t = t.min(a);
        }
        if let Some(d) = self.outbox.next_due() {
            t = t.min(d);
        }
        if let Some(d) = self.ledger.next_due() {
            t = t.min(d);
        }
        t
    }

    // ----- inputs ---------------------------------------------------------

    /// A datagram arrived from `src` on socket `via`.
    pub fn handle_datagram(&mut self, now: Now, via: Via, src: SocketAddr, data: &[u8]) {
        self.handling_from = None;
        if self.shut_down {
            return;
        }
        let t = self.set_clock(now);
        self.stats.datagrams_in += 1;
        if !self.sources.check(&src.ip(), t) {
            return self.drop(t, DropReason::SourceRate, &src);
        }
        let SocketAddr::V4(src) = src else {
            return self.drop(t, DropReason::BadFraming, &"IPv6 source");
        };
        let unverified = match Unverified::parse(data, &self.settings.network) {
            Ok(u) => u,
            Err(e) => return self.drop(t, wire_reason(e), &format_args!("{e} from {src}")),
        };
        let key = *unverified.claimed_key();
        if key == self.key.verifying_key() {
            return self.drop(t, DropReason::Own, &"own datagram");
        }
        // A lookup: a banned key costs no further work, signature included.
        if self.bans.is_banned(key.as_bytes(), t) {
            return self.drop(
                t,
                DropReason::Banned,
                &format_args!("banned key from {src}"),
            );
        }
        let stamp = unverified.stamp();
        let skew = self.settings.max_clock_skew_ms;
        if stamp.ts_ms.saturating_add(skew) < now.wall {
            return self.drop(
                t,
                DropReason::Stale,
                &format_args!("stale datagram from {src}"),
            );
        }
        if stamp.ts_ms > now.wall.saturating_add(skew) {
            return self.drop(
                t,
                DropReason::Future,
                &format_args!("future datagram from {src}"),
            );
        }
        if let Some(p) = self.peers.get(&key)
            && !p.will_accept(stamp.instance, stamp.seq)
        {
            return self.drop(t, DropReason::Replay, &format_args!("replay from {src}"));
        }
        if !allowed_via(unverified.kind(), via) {
            // A unicast-only kind on the group, or the reverse: never sent
            // so by a pigeon; perhaps a datagram re-sent by a third party.
            return self.drop(
                t,
                DropReason::WrongChannel,
                &format_args!("{:?} via {via:?} from {src}", unverified.kind()),
            );
        }
        let verified = match unverified.verify(&self.settings.network) {
            Ok(v) => v,
            Err(e) => return self.drop(t, wire_reason(e), &format_args!("{e} from {src}")),
        };
        // Authenticated from here on.
        if !self.peers.is_proven_at(&key, src) {
            self.ledger.received(src, data.len(), t);
        }
        match verified.kind {
            // Answered for any key, known or not: the response is smaller
            // than the challenge and goes back where it came from.
            Kind::Challenge => return self.on_challenge(t, src, data.len(), &verified),
            Kind::Response if !self.on_response(t, src, &verified) => return,
            Kind::Announce if self.peers.get(&key).is_none() => {
                return self.on_stranger_announce(t, src, data.len(), &verified);
            }
            _ if self.peers.get(&key).is_none() => {
                // Only an announce answered by a valid response brings a
                // key into the table: nothing else creates state.
                return self.drop(
                    t,
                    DropReason::UnknownPeer,
                    &format_args!("{:?} from unknown key at {src}", verified.kind),
                );
            }
            _ => {}
        }
        let quota = self.settings.peer_quota;
        let wall = self.wall(t);
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if peer.commit(stamp.instance, stamp.seq, t).is_none() {
            return self.drop(t, DropReason::Replay, &format_args!("replay from {src}"));
        }
        peer.last_heard_ms = t;
        peer.last_seen_ms = wall;
        peer.traffic.datagrams_in += 1;
        self.handling_from = Some(key);
        if !peer.bucket.take(quota, t) {
            self.drop(
                t,
                DropReason::PeerRate,
                &format_args!("peer over its rate: {src}"),
            );
            return self.over_rate(t, &key);
        }
        if wall.saturating_sub(peer.persisted_last_seen_ms) >= LAST_SEEN_PERSIST_MS {
            self.mark_dirty();
        }
        self.stats.datagrams_accepted += 1;
        self.stats.accepted_by_kind.add(verified.kind);
        match verified.kind {
            Kind::Announce => self.on_announce(t, src, data.len(), &verified),
            Kind::Goodbye => self.on_goodbye(&verified),
            Kind::Data => self.on_data(t, via, src, data.len(), &verified),
            Kind::Ack => self.on_ack(t, &verified),
            Kind::Digest => self.on_digest(t, src, &verified),
            Kind::Nack => self.on_nack(t, src, &verified),
            Kind::Org => self.on_org(t, via, &verified),
            Kind::Challenge | Kind::Response => {}
        }
    }

    /// Slips asked us to send `message` to `recipient`.
    pub fn handle_slips(&mut self, now: Now, message: String, recipient: Recipient) {
        self.handling_from = None;
        if self.shut_down {
            return;
        }
        let t = self.set_clock(now);
        if !self.settings.report_peer_addresses
            && let Ok(p) = payload::validate(&message)
            && p.kind != PayloadKind::Request
            && self.is_own_or_peer_address(&p.key)
        {
            return self.drop(
                t,
                DropReason::ReportsPeer,
                &format_args!("Slips {:?} about {}, a pigeon's address", p.kind, p.key),
            );
        }
        // org: what may go only to members is sealed to them (or goes
        // nowhere); everything else goes in clear.
        let message = match self.org_outgoing(t, &message, &recipient) {
            orgs::Outgoing::Clear => message,
            orgs::Outgoing::Refused(why) => {
                return self.drop(
                    t,
                    DropReason::OrgPolicy,
                    &format_args!("Slips message not sent: {why}"),
                );
            }
            orgs::Outgoing::Sealed(sealed) => {
                for m in sealed {
                    match &recipient {
                        Recipient::All => self.broadcast(t, m),
                        Recipient::Peer(peer_id) => self.send_directed(t, m, peer_id.clone()),
                    }
                }
                return;
            }
        };
        match recipient {
            Recipient::All => self.broadcast(t, message),
            Recipient::Peer(peer_id) => self.send_directed(t, message, peer_id),
        }
    }

    /// Whether `ip` (a Slips payload key) is our address or the proven
    /// address of an active peer: Slips must not report pigeons.
    fn is_own_or_peer_address(&self, key: &str) -> bool {
        let Ok(ip) = key.split('%').next().unwrap_or(key).parse::<IpAddr>() else {
            return false;
        };
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if ip == IpAddr::V4(*self.params.unicast.ip()) {
            return true;
        }
        self.peers.iter().any(|p| {
            p.proven
                && p.state == PeerState::Active
                && p.addr.is_some_and(|a| IpAddr::V4(*a.ip()) == ip)
        })
    }

    fn broadcast(&mut self, t: Millis, payload: String) {
        let body = DataBody {
            id: self.outbox.next_broadcast_id(),
            to: None,
            to_inst: None,
            payload,
        };
        if !self.send(t, Destination::Multicast, Kind::Data, &body) {
            return self.drop(t, DropReason::TooLargeToSend, &"Slips message to *");
        }
        self.outbox
            .broadcast_sent(t, body.payload, &self.settings.delivery, &mut self.rng);
    }

    fn send_directed(&mut self, t: Millis, payload: String, peer_id: String) {
        let target = self
            .peers
            .by_peer_id(&peer_id)
            .filter(|p| p.state == PeerState::Active && p.proven)
            .and_then(|p| Some((p.addr?, *p.key.as_bytes(), p.session_instance?)));
        let Some((addr, to_key, to_inst)) = target else {
            return self.drop(
                t,
                DropReason::UnknownRecipient,
                &format_args!("Slips message for unknown, unproven or inactive peer {peer_id}"),
            );
        };
        let body = DataBody {
            id: self.outbox.next_directed_id(),
            to: Some(peer_id),
            to_inst: Some(to_inst),
            payload,
        };
        if !self.send(t, Destination::Unicast(addr), Kind::Data, &body) {
            return self.drop(t, DropReason::TooLargeToSend, &"directed Slips message");
        }
        let to = delivery::Recipient {
            key: to_key,
            peer_id: body.to.unwrap_or_default(),
            inst: to_inst,
            addr,
        };
        if self
            .outbox
            .directed_sent(t, to, body.payload, &self.settings.delivery)
        {
            self.stats.directed_expired += 1;
        }
    }

    /// Timers: announcements, answers, challenges, housekeeping, saving.
    pub fn handle_timeout(&mut self, now: Now) {
        self.handling_from = None;
        if self.shut_down {
            return;
        }
        let t = self.set_clock(now);
        if t >= self.next_announce_ms {
            self.announce(t);
            self.next_announce_ms = if self.startup_left > 0 {
                self.startup_left -= 1;
                t + STARTUP_SPACING_MS
            } else {
                t + self.jittered_interval()
            };
        }
        if self.answer_at_ms.is_some_and(|a| t >= a) {
            self.answer_at_ms = None;
            self.last_answer_ms = t;
            self.announce(t);
        }
        for (addr, key, left) in self.ledger.due_retries(t) {
            if self.first_contacts.take(FIRST_CONTACT_QUOTA, t) {
                self.challenge(t, addr, &key, left);
            }
        }
        if t >= self.next_housekeeping_ms {
            self.next_housekeeping_ms = t + HOUSEKEEPING_MS;
            self.housekeeping(t);
        }
        self.delivery_timers(t);
    }

    /// Broadcast copies, digests and retransmissions that are due.
    fn delivery_timers(&mut self, t: Millis) {
        let peers = &self.peers;
        let due = self
            .outbox
            .due(t, self.settings.delivery.directed_retry_ms, |peer_id| {
                peers
                    .by_peer_id(peer_id)
                    .filter(|q| q.proven)
                    .and_then(|q| q.addr)
            });
        for d in due {
            match d {
                Due::Repeat(body) => {
                    self.stats.retransmissions += 1;
                    self.send(t, Destination::Multicast, Kind::Data, &body);
                }
                Due::Digest(body) => {
                    self.send(t, Destination::Multicast, Kind::Digest, &body);
                }
                Due::Retransmit { addr, body } => {
                    self.stats.retransmissions += 1;
                    self.send(t, Destination::Unicast(addr), Kind::Data, &body);
                }
                Due::Expired { peer_id, id } => {
                    self.stats.directed_expired += 1;
                    tracing::warn!(peer = %peer_id, id, "directed message not acknowledged in time");
                }
            }
        }
    }

    /// Says goodbye and saves the peer list. The node ignores every input
    /// afterwards.
    pub fn shutdown(&mut self, now: Now) {
        self.handling_from = None;
        if self.shut_down {
            return;
        }
        let t = self.set_clock(now);
        self.send(t, Destination::Multicast, Kind::Goodbye, &GoodbyeBody {});
        self.save(t);
        self.shut_down = true;
    }

    // ----- return routability ----------------------------------------------

    /// Challenges `key` at `addr` if the credit of `addr` allows, and
    /// schedules `retries` more.
    fn challenge(&mut self, t: Millis, addr: SocketAddrV4, key: &[u8; 32], retries: u8) {
        let nonce = self.challenger.nonce(key, addr, t);
        let mut body = ChallengeBody {
            nonce,
            pad: String::new(),
        };
        let Some(len) = self.padded(
            t,
            Kind::Challenge,
            &mut body,
            wire::CHALLENGE_LEN,
            |b, p| {
                b.pad = p;
            },
        ) else {
            return;
        };
        let known = ed25519_dalek::VerifyingKey::from_bytes(key)
            .ok()
            .filter(|k| self.peers.is_proven_at(k, addr));
        let allowed = match known {
            // Its address is proven (it restarted or opened a new session):
            // the per-destination budget applies.
            Some(k) => {
                let quota = self.settings.response_quota;
                self.peers
                    .get_mut(&k)
                    .is_some_and(|p| p.responses.take_n(quota, t, len as f64))
            }
            None => self.ledger.spend(addr, len),
        };
        if !allowed {
            self.stats.amplification_refused += 1;
            return self.drop(
                t,
                DropReason::NoCredit,
                &format_args!("challenge to unproven {addr}"),
            );
        }
        self.stats.challenges_sent += 1;
        self.send(t, Destination::Probe(addr), Kind::Challenge, &body);
        self.ledger
            .schedule_retry(addr, *key, retries, t + CHALLENGE_RETRY_MS);
    }

    /// Fills `body`'s pad so that its datagram is at least `min_len`
    /// bytes; returns the datagram's length.
    fn padded<B: serde::Serialize>(
        &self,
        t: Millis,
        kind: Kind,
        body: &mut B,
        min_len: usize,
        set_pad: impl Fn(&mut B, String),
    ) -> Option<usize> {
        let stamp = self.next_stamp(t);
        let net = &self.settings.network;
        let pad = wire::padding(&self.key, net, stamp, kind, &*body, min_len)?;
        if !pad.is_empty() {
            set_pad(body, pad);
        }
        wire::sealed_len(&self.key, net, stamp, kind, &*body)
    }

    /// A key we do not know announced itself: challenge it, keep nothing.
    fn on_stranger_announce(&mut self, t: Millis, src: SocketAddrV4, len: usize, v: &Verified<'_>) {
        let Ok(body) = v.body::<AnnounceBody>() else {
            return self.drop(
                t,
                DropReason::BadBody,
                &format_args!("malformed announce from {src}"),
            );
        };
        if !body.is_valid() || SocketAddrV4::new(body.ip, body.port) != src {
            return self.drop(
                t,
                DropReason::AddressMismatch,
                &format_args!("announce of another address from {src}"),
            );
        }
        if len < wire::CHALLENGE_LEN {
            return self.drop(
                t,
                DropReason::NoCredit,
                &format_args!("short announce from {src}"),
            );
        }
        let repeat = self
            .repeats
            .seen_before(self.challenger.address_hash(src), t);
        let allowed = if repeat {
            self.repeat_contacts.take(REPEAT_CONTACT_QUOTA, t)
        } else {
            self.first_contacts.take(FIRST_CONTACT_QUOTA, t)
        };
        if !allowed {
            return self.drop(
                t,
                DropReason::ChallengeBudget,
                &format_args!("announce of a new key from {src}: challenges over their budget"),
            );
        }
        self.challenge(t, src, v.key.as_bytes(), CHALLENGE_RETRIES);
        // Announce back (at most once a second): a newcomer must prove us
        // too, and during a flood it challenges only addresses it heard
        // more than once.
        self.schedule_answer(t);
    }

    /// Any key may challenge us: we sign the nonce back to where it came
    /// from, never more bytes than arrived.
    fn on_challenge(&mut self, t: Millis, src: SocketAddrV4, len: usize, v: &Verified<'_>) {
        let body = match v.body::<ChallengeBody>() {
            Ok(b) if b.nonce.len() <= 64 => b,
            _ => {
                return self.drop(
                    t,
                    DropReason::BadBody,
                    &format_args!("malformed challenge from {src}"),
                );
            }
        };
        // Its replay window, if we know the key: a replayed challenge is
        // answered at most once.
        if let Some(p) = self.peers.get_mut(&v.key)
            && p.commit(v.stamp.instance, v.stamp.seq, t).is_none()
        {
            return self.drop(
                t,
                DropReason::Replay,
                &format_args!("replayed challenge from {src}"),
            );
        }
        let resp = ResponseBody {
            nonce: body.nonce,
            next_bcast: self.outbox.next_broadcast_id(),
        };
        let stamp = self.next_stamp(t);
        let out = wire::sealed_len(
            &self.key,
            &self.settings.network,
            stamp,
            Kind::Response,
            &resp,
        );
        // Responses must leave from the address we announce, the socket
        // peers are served from: a budget in total keeps a flood of forged
        // challenges from filling it (honest peers challenge us once per
        // session each).
        if !self.responses_total.take(RESPONSE_QUOTA, t) {
            return self.drop(
                t,
                DropReason::NoCredit,
                &format_args!("challenge from {src} over the budget of responses"),
            );
        }
        if out.is_none_or(|n| n > len) {
            self.stats.amplification_refused += 1;
            return self.drop(
                t,
                DropReason::NoCredit,
                &format_args!("challenge too small to answer from {src}"),
            );
        }
        self.send(t, Destination::Unicast(src), Kind::Response, &resp);
        // org: the challenger is about to know us; our claims follow.
        if self.org_announce_after_response() {
            self.schedule_answer(t);
        }
    }

    /// A response: if it echoes our nonce for this key and address, the
    /// address is proven and a session with the sender instance opens.
    /// Returns whether processing goes on (the peer is now in the table).
    fn on_response(&mut self, t: Millis, src: SocketAddrV4, v: &Verified<'_>) -> bool {
        let body = match v.body::<ResponseBody>() {
            Ok(b) if b.is_valid() => b,
            _ => {
                self.drop(
                    t,
                    DropReason::BadBody,
                    &format_args!("malformed response from {src}"),
                );
                return false;
            }
        };
        if !self.challenger.check(v.key.as_bytes(), src, &body.nonce, t) {
            self.drop(
                t,
                DropReason::BadNonce,
                &format_args!("response with a wrong or expired nonce from {src}"),
            );
            return false;
        }
        self.ledger.forget(&src);
        if self.peers.get(&v.key).is_none() {
            let mut peer = self.new_peer(v.key, t);
            peer.addr = Some(src);
            if !self
                .peers
                .insert(peer, self.settings.max_peers, self.settings.max_keys_per_ip)
            {
                self.drop(t, DropReason::TableFull, &format_args!("new peer at {src}"));
                return false;
            }
            self.mark_dirty();
        }
        let params = self.settings.reliability;
        let wall = self.wall(t);
        let inst = v.stamp.instance;
        let Some(peer) = self.peers.get_mut(&v.key) else {
            return false;
        };
        // The replay window of this instance is committed by the caller;
        // open the session here so that its broadcasts count from now on.
        let state = peer.instance_state(inst, t);
        state.rx.open_session(body.next_bcast);
        let moved = peer.addr != Some(src) || !peer.proven;
        let was_active = peer.state == PeerState::Active;
        peer.proven = true;
        peer.addr = Some(src);
        peer.session_instance = Some(inst);
        if peer.instance != Some(inst) {
            peer.instance = Some(inst);
        }
        peer.state = PeerState::Active;
        peer.missed = 0;
        if peer.last_announce_ms == 0 {
            peer.last_announce_ms = t;
            peer.reliability
                .observe(wall, reliability::ANNOUNCE_ON_TIME, &params);
        }
        let peer_id = peer.peer_id.clone();
        if moved || !was_active {
            tracing::info!(peer = %peer_id, addr = %src, "peer active (address proven)");
            self.mark_dirty();
        }
        self.peer_update(t, &v.key, moved);
        if !was_active {
            self.schedule_answer(t);
        }
        true
    }

    // ----- handlers -------------------------------------------------------

    fn on_announce(&mut self, t: Millis, src: SocketAddrV4, len: usize, v: &Verified<'_>) {
        let body = match v.body::<AnnounceBody>() {
            Ok(b) if b.is_valid() => b,
            _ => return self.misbehaved(t, v, DropReason::BadBody, "malformed announce"),
        };
        if SocketAddrV4::new(body.ip, body.port) != src {
            // A signed announce relayed from elsewhere: never let it
            // redirect directed traffic. Not held against the key: anyone
            // can resend a multicast announce that we missed.
            return self.drop(
                t,
                DropReason::AddressMismatch,
                &format_args!("announce relayed from {src}"),
            );
        }
        let params = self.settings.reliability;
        let wall = self.wall(t);
        let Some(peer) = self.peers.get_mut(&v.key) else {
            return;
        };
        let restarted = peer.instance != Some(v.stamp.instance);
        let has_session = peer.session_instance == Some(v.stamp.instance);
        let at_proven = peer.proven && peer.addr == Some(src);
        peer.instance = Some(v.stamp.instance);
        peer.announce_interval_ms = body.interval_ms;
        if !(at_proven && has_session) {
            // New, restarted, moved or not yet proven this run: it must
            // prove the address (and open a session) before it counts.
            let due = t.saturating_sub(peer.last_challenge_ms) >= MIN_CHALLENGE_GAP_MS;
            let was_active = peer.state == PeerState::Active;
            if due && len >= wire::CHALLENGE_LEN {
                peer.last_challenge_ms = t;
                self.challenge(t, src, v.key.as_bytes(), CHALLENGE_RETRIES);
            }
            if restarted || !was_active {
                self.schedule_answer(t);
            }
            return;
        }
        let was_active = peer.state == PeerState::Active;
        peer.state = PeerState::Active;
        peer.missed = 0;
        // Start-up announcements and answers come faster than the interval;
        // one announcement per half interval counts, so announcing more
        // often cannot raise reliability.
        if t.saturating_sub(peer.last_announce_ms) >= peer.announce_interval_ms / 2 {
            peer.last_announce_ms = t;
            peer.reliability
                .observe(wall, reliability::ANNOUNCE_ON_TIME, &params);
        }
        if !was_active {
            let peer_id = peer.peer_id.clone();
            tracing::info!(peer = %peer_id, addr = %src, "peer active");
            self.mark_dirty();
            self.schedule_answer(t);
        }
        self.peer_update(t, &v.key, false);
        // org: memberships claimed in the announce.
        self.on_org_claims(t, v);
        // An announcement doubles as a digest: it heals what a partition
        // longer than the digest schedule made us miss.
        self.check_broadcasts(t, v, 0, body.last_bcast);
    }

    fn on_goodbye(&mut self, v: &Verified<'_>) {
        // Only the instance we have a session with can say it leaves: a
        // goodbye of an earlier run, replayed, must not silence the peer.
        if let Some(peer) = self
            .peers
            .get_mut(&v.key)
            .filter(|p| p.session_instance == Some(v.stamp.instance))
        {
            if peer.state == PeerState::Active {
                tracing::info!(peer = %peer.peer_id, "peer said goodbye");
            }
            peer.state = PeerState::Inactive;
            self.mark_dirty();
        }
    }

    fn on_data(&mut self, t: Millis, via: Via, src: SocketAddrV4, len: usize, v: &Verified<'_>) {
        let mut body = match v.body::<DataBody>() {
            Ok(b) if b.is_valid() => b,
            _ => return self.misbehaved(t, v, DropReason::BadBody, "malformed data"),
        };
        let directed = body.to.is_some();
        if let Some(to) = &body.to {
            if *to != self.peer_id {
                return self.drop(
                    t,
                    DropReason::NotForUs,
                    &"directed message for another peer",
                );
            }
            if body.to_inst != Some(self.params.instance) {
                // Meant for a previous run of ours (or replayed from it):
                // refused, so that nothing reaches Slips twice.
                return self.drop(
                    t,
                    DropReason::OtherInstance,
                    &"directed message for our previous run",
                );
            }
        }
        // org: a sealed payload is opened first; one we cannot read yet is
        // neither acknowledged nor marked delivered, so that a copy or a
        // repair brings it again once we hold the key.
        let mut sealed_drop = None;
        if crate::org::crypto::SealedPayload::is_sealed(&body.payload) {
            match self.org_open(t, &v.key, &body.payload) {
                orgs::Opened::Plain(p) => body.payload = p,
                orgs::Opened::NotYet(why) => return self.drop(t, DropReason::OrgNoKey, &why),
                orgs::Opened::NotForUs => sealed_drop = Some(DropReason::OrgSealed),
                orgs::Opened::Bad(why) => {
                    return self.misbehaved(t, v, DropReason::BadPayload, why);
                }
            }
        }
        let Some(peer) = self.peers.get_mut(&v.key) else {
            return;
        };
        let reporter = peer.peer_id.clone();
        let proven = peer.proven;
        let has_session = peer.session_instance == Some(v.stamp.instance);
        let Some(inst) = peer.instance_mut(v.stamp.instance) else {
            return;
        };
        let outcome = inst.rx.deliver(directed, body.id);
        if directed {
            if via != Via::Unicast {
                return self.drop(t, DropReason::WrongChannel, &"directed data by multicast");
            }
            // Acknowledge every copy: the previous ack may have been lost.
            let ack = AckBody {
                id: body.id,
                to: reporter.clone(),
            };
            self.reply(t, src, len, &v.key, Kind::Ack, &ack);
        }
        match outcome {
            Delivery::New => {}
            Delivery::Duplicate => {
                return self.drop(t, DropReason::Duplicate, &"message already delivered");
            }
            Delivery::BeforeSession => {
                return self.drop(
                    t,
                    DropReason::BeforeSession,
                    &format_args!("broadcast from {reporter} older than our session"),
                );
            }
            Delivery::NoSession => {
                if !has_session {
                    self.maybe_challenge_known(t, src, len, &v.key);
                }
                return self.drop(
                    t,
                    DropReason::NoSession,
                    &format_args!("broadcast from {reporter} before a session"),
                );
            }
        }
        if let Some(reason) = sealed_drop {
            return self.drop(t, reason, &"org-sealed message not for us");
        }
        let valid = match payload::validate(&body.payload) {
            Ok(p) => p,
            Err(e) => return self.misbehaved(t, v, DropReason::BadPayload, &e.to_string()),
        };
        if valid.kind == PayloadKind::Blame {
            let allowed = match self.settings.blames {
                BlamePolicy::Drop => false,
                BlamePolicy::All => true,
                BlamePolicy::Allowlist => self.settings.blame_allowlist.contains(&reporter),
            } || self.org_blame_allowed(&v.key);
            if !allowed {
                return self.drop(
                    t,
                    DropReason::BlamePolicy,
                    &format_args!("blame about {} from {reporter} (blame policy)", valid.key),
                );
            }
        }
        if valid.kind == PayloadKind::Request && !self.org_request_allowed(&v.key) {
            return self.drop(
                t,
                DropReason::OrgPolicy,
                &format_args!("request from {reporter}, not a member (org.accept_requests)"),
            );
        }
        if !self.take_go_data(t, &v.key, proven) {
            return self.drop(
                t,
                DropReason::SlipsRate,
                &format_args!("message from {reporter} over the rate toward Slips"),
            );
        }
        // At most one valid payload per peer counts per interval, so a
        // chatty (or flooding) key cannot farm reliability.
        if let Some(peer) = self.peers.get_mut(&v.key)
            && t.saturating_sub(peer.last_valid_payload_ms) >= VALID_PAYLOAD_SPACING_MS
        {
            peer.last_valid_payload_ms = t;
            self.observe(t, &v.key, reliability::VALID_PAYLOAD);
        }
        tracing::info!(peer = %reporter, kind = ?valid.kind, ip = %valid.key, "received from peer");
        let report_time = secs(self.wall(t));
        // Slips gets the payload re-encoded as Slips itself writes it
        // (src/slips/payload.rs), never the peer's bytes.
        self.emit(ToSlips::GoData {
            reporter,
            report_time,
            request_ip: (valid.kind == PayloadKind::Request).then(|| valid.key.clone()),
            message: valid.canonical,
        });
    }

    /// Takes a token of the budgets of `go_data` toward Slips.
    fn take_go_data(&mut self, t: Millis, key: &ed25519_dalek::VerifyingKey, proven: bool) -> bool {
        // The sender's own budget first: a peer over it must not spend the
        // total that every other peer shares.
        let own = if proven {
            self.peers
                .get_mut(key)
                .is_some_and(|p| p.go_data.take(GO_DATA_PEER_QUOTA, t))
        } else {
            self.unproven_go_data.take(GO_DATA_UNPROVEN_QUOTA, t)
        };
        own && self.total_go_data.take(GO_DATA_TOTAL_QUOTA, t)
    }

    /// A known peer sent something from an address or instance we have no
    /// proof or session for: challenge it (rate-limited, credit permitting).
    fn maybe_challenge_known(
        &mut self,
        t: Millis,
        src: SocketAddrV4,
        len: usize,
        key: &ed25519_dalek::VerifyingKey,
    ) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        if t.saturating_sub(peer.last_challenge_ms) < MIN_CHALLENGE_GAP_MS
            || len < wire::CHALLENGE_LEN
        {
            return;
        }
        peer.last_challenge_ms = t;
        self.challenge(t, src, key.as_bytes(), CHALLENGE_RETRIES);
    }

    /// Sends a response datagram (ack, nack, repair) to `to`: within the
    /// per-destination byte budget if `to` is the proven address of `key`,
    /// otherwise only if it is no larger than the `received` bytes that
    /// prompted it (credit of the ledger).
    fn reply<B: serde::Serialize>(
        &mut self,
        t: Millis,
        to: SocketAddrV4,
        received: usize,
        key: &ed25519_dalek::VerifyingKey,
        kind: Kind,
        body: &B,
    ) -> bool {
        let stamp = self.next_stamp(t);
        let Some(len) = wire::sealed_len(&self.key, &self.settings.network, stamp, kind, body)
        else {
            return false;
        };
        let quota = self.settings.response_quota;
        let proven = self.peers.is_proven_at(key, to);
        let allowed = if proven {
            self.peers
                .get_mut(key)
                .is_some_and(|p| p.responses.take_n(quota, t, len as f64))
        } else {
            len <= received && self.ledger.spend(to, len)
        };
        if !allowed {
            self.stats.amplification_refused += 1;
            self.drop(
                t,
                DropReason::NoCredit,
                &format_args!("{kind:?} to {to} over its byte budget"),
            );
            return false;
        }
        let dest = if proven {
            Destination::Unicast(to)
        } else {
            Destination::Probe(to)
        };
        self.send(t, dest, kind, body)
    }

    fn on_ack(&mut self, t: Millis, v: &Verified<'_>) {
        let body = match v.body::<AckBody>() {
            Ok(b) if b.is_valid() => b,
            _ => return self.misbehaved(t, v, DropReason::BadBody, "malformed ack"),
        };
        if body.to != self.peer_id {
            return self.drop(t, DropReason::NotForUs, &"ack for another peer");
        }
        // Only the recipient can acknowledge: a third party cannot cancel
        // retransmissions.
        if let Some(first_sent_ms) = self.outbox.acknowledged(body.id, v.key.as_bytes()) {
            // Slips-to-Slips delivery time, as far as the sender sees it.
            self.stats
                .ack_delay
                .observe(t.saturating_sub(first_sent_ms));
        }
    }

    fn on_digest(&mut self, t: Millis, src: SocketAddrV4, v: &Verified<'_>) {
        let body = match v.body::<DigestBody>() {
            Ok(b) if b.is_valid() => b,
            _ => return self.misbehaved(t, v, DropReason::BadBody, "malformed digest"),
        };
        let has_session = self
            .peers
            .get(&v.key)
            .is_some_and(|p| p.session_instance == Some(v.stamp.instance));
        if !has_session {
            // Digests are short: no challenge in reply (it would send more
            // than arrived); the next announce or data brings one.
            return self.drop(
                t,
                DropReason::NoSession,
                &format_args!("digest from {src} before a session"),
            );
        }
        self.check_broadcasts(t, v, body.floor, body.last);
    }

    /// The sender says its broadcasts `floor..=last` are available: ask for
    /// the ones we expected and did not get, at its proven address.
    fn check_broadcasts(&mut self, t: Millis, v: &Verified<'_>, floor: u64, last: u64) {
        let Some(peer) = self.peers.get_mut(&v.key) else {
            return;
        };
        let to = peer.peer_id.clone();
        let addr = peer.addr.filter(|_| peer.proven);
        let Some(inst) = peer.instance_mut(v.stamp.instance) else {
            return;
        };
        let Some(ids) = inst.rx.nack(t, floor, last, MAX_NACK_IDS) else {
            return;
        };
        if let Some(addr) = addr {
            self.reply(t, addr, 0, &v.key, Kind::Nack, &NackBody { to, ids });
        }
    }

    fn on_nack(&mut self, t: Millis, src: SocketAddrV4, v: &Verified<'_>) {
        let body = match v.body::<NackBody>() {
            Ok(b) if b.is_valid() => b,
            _ => return self.misbehaved(t, v, DropReason::BadBody, "malformed nack"),
        };
        if body.to != self.peer_id {
            return self.drop(t, DropReason::NotForUs, &"nack for another peer");
        }
        if !self.peers.is_proven_at(&v.key, src) {
            // Repairs go only to the nacker's proven address.
            return self.drop(
                t,
                DropReason::NoCredit,
                &format_args!("nack from unproven {src}"),
            );
        }
        for repair in self.outbox.repairs(&body.ids) {
            if !self.reply(t, src, 0, &v.key, Kind::Data, &repair) {
                break;
            }
            self.stats.repairs += 1;
        }
    }

    /// A verified peer broke the rules: drop, count, lower its reliability.
    fn misbehaved(&mut self, t: Millis, v: &Verified<'_>, reason: DropReason, what: &str) {
        let who = self
            .peers
            .get(&v.key)
            .map(|p| p.peer_id.clone())
            .unwrap_or_default();
        self.drop(t, reason, &format_args!("{what} from {who}"));
        self.observe(t, &v.key, reliability::MISBEHAVIOUR);
        if self.bans.strike(v.key.as_bytes(), t) {
            self.banned(t, &v.key);
        }
    }

    /// A verified peer went over its rate: a misbehaviour once per second
    /// it lasts (see [`bans::RATE_STRIKE_SPACING_MS`]).
    fn over_rate(&mut self, t: Millis, key: &ed25519_dalek::VerifyingKey) {
        let (counted, banned) = self.bans.rate_strike(key.as_bytes(), t);
        if counted {
            self.observe(t, key, reliability::MISBEHAVIOUR);
        }
        if banned {
            self.banned(t, key);
        }
    }

    /// A key was just banned: it is no longer a peer to send to, and Slips
    /// hears its reliability is 0 until the ban ends.
    fn banned(&mut self, t: Millis, key: &ed25519_dalek::VerifyingKey) {
        self.stats.bans += 1;
        let secs_left = self
            .bans
            .banned_until(key.as_bytes(), t)
            .map_or(0, |u| u.saturating_sub(t) / 1000);
        if let Some(p) = self.peers.get_mut(key) {
            tracing::warn!(peer = %p.peer_id, secs = secs_left, "peer banned after repeated misbehaviour");
            p.state = PeerState::Inactive;
            // Slips must stop trusting it now, not after the gap.
            p.last_update_ms = None;
        }
        self.mark_dirty();
        self.peer_update(t, key, true);
    }

    fn observe(&mut self, t: Millis, key: &ed25519_dalek::VerifyingKey, o: Observation) {
        let params = self.settings.reliability;
        let wall = self.wall(t);
        if let Some(p) = self.peers.get_mut(key) {
            p.reliability.observe(wall, o, &params);
            self.peer_update(t, key, false);
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

    fn schedule_answer(&mut self, t: Millis) {
        if self.answer_at_ms.is_some() {
            return;
        }
        let earliest = self.last_answer_ms + MIN_ANSWER_GAP_MS;
        let delay = self.rng.random_range(0..=self.settings.answer_delay_max_ms);
        self.answer_at_ms = Some((t + delay).max(earliest));
    }

    fn announce(&mut self, t: Millis) {
        let mut body = AnnounceBody {
            ip: *self.params.unicast.ip(),
            port: self.params.unicast.port(),
            interval_ms: self.settings.announce_interval_ms,
            last_bcast: self.outbox.last_broadcast(),
            pad: String::new(),
        };
        // org: our memberships and lists travel in the announce.
        if let Some(mut body) = self.org_announce_body(t, body.clone()) {
            if self
                .padded(
                    t,
                    Kind::Announce,
                    &mut body,
                    wire::MIN_ANNOUNCE_LEN,
                    |b, p| b.base.pad = p,
                )
                .is_some()
            {
                self.send(t, Destination::Multicast, Kind::Announce, &body);
            }
            return;
        }
        if self
            .padded(
                t,
                Kind::Announce,
                &mut body,
                wire::MIN_ANNOUNCE_LEN,
                |b, p| b.pad = p,
            )
            .is_some()
        {
            self.send(t, Destination::Multicast, Kind::Announce, &body);
        }
    }

    fn housekeeping(&mut self, t: Millis) {
        let params = self.settings.reliability;
        let wall = self.wall(t);
        let limit = self.settings.inactive_after_missed;
        let mut changed = Vec::new();
        for peer in self.peers.iter_mut() {
            if peer.state != PeerState::Active || peer.last_announce_ms == 0 {
                continue;
            }
            let interval = peer.announce_interval_ms.max(1);
            let since = t.saturating_sub(peer.last_announce_ms);
            // Announcements jitter by up to ±50 %: one is missed only when
            // half an interval past its mean due time.
            let expected_missed =
                u32::try_from(since.saturating_sub(interval / 2) / interval).unwrap_or(u32::MAX);
            if peer.missed >= expected_missed {
                continue;
            }
            while peer.missed < expected_missed {
                peer.missed += 1;
                peer.reliability
                    .observe(wall, reliability::ANNOUNCE_MISSED, &params);
            }
            // Missed announcements cost reliability, but a peer we still
            // hear from (acks, data, digests) is alive: under heavy loss its
            // announcements may be what got lost.
            let heard_recently = t.saturating_sub(peer.last_heard_ms) < interval;
            if peer.missed >= limit && !heard_recently {
                peer.state = PeerState::Inactive;
                tracing::info!(peer = %peer.peer_id, missed = peer.missed, "peer inactive");
            }
            changed.push(peer.key);
        }
        for key in changed {
            self.peer_update(t, &key, false);
        }
        let forget = self.settings.forget_after_ms;
        let forgotten = self.peers.retain(|p| {
            p.state == PeerState::Active || wall.saturating_sub(p.last_seen_ms) <= forget
        });
        if forgotten > 0 {
            tracing::info!(forgotten, "forgot peers not seen for too long");
            self.mark_dirty();
        }
        self.sources.prune(t);
        self.ledger.prune(t, LEDGER_IDLE_MS);
        for ended in self.bans.prune(t) {
            let key = self
                .peers
                .iter()
                .find(|p| *p.key.as_bytes() == ended)
                .map(|p| p.key);
            if let Some(key) = key {
                // Its real reliability again (misbehaviour included).
                if let Some(p) = self.peers.get_mut(&key) {
                    p.last_update_ms = None;
                }
                self.peer_update(t, &key, true);
            }
        }
        self.org_housekeeping(t);
        self.flush_peer_updates(t);
        let d = &self.settings.delivery;
        self.outbox
            .prune(t, d.retain_broadcasts, d.retain_broadcast_ms);
        self.drop_log.flush(t);
        if self.dirty && t.saturating_sub(self.last_save_ms) >= self.settings.save_interval_ms {
            self.save(t);
        }
    }

    // ----- outputs --------------------------------------------------------

    fn next_stamp(&self, t: Millis) -> Stamp {
        Stamp {
            instance: self.params.instance,
            seq: self.seq + 1,
            ts_ms: self.wall(t),
        }
    }

    fn send<B: serde::Serialize>(
        &mut self,
        t: Millis,
        to: Destination,
        kind: Kind,
        body: &B,
    ) -> bool {
        let stamp = self.next_stamp(t);
        match wire::seal(&self.key, &self.settings.network, stamp, kind, body) {
            Some(datagram) => {
                self.seq += 1;
                self.stats.datagrams_out += 1;
                self.count_sent(to, kind);
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

    /// Notes that Slips should hear about a peer if it is new to Slips,
    /// moved (`force`), or its reliability changed by at least
    /// `report_delta`. Only
    /// peers whose address is proven are told to Slips; each at most once
    /// per [`PEER_UPDATE_GAP_MS`] (the latest value wins) and all within
    /// [`PEER_UPDATE_QUOTA`].
    fn peer_update(&mut self, t: Millis, key: &ed25519_dalek::VerifyingKey, force: bool) {
        let r = self.reported_value(t, key);
        let delta = self.settings.report_delta;
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        if !peer.proven {
            return;
        }
        let due = match peer.reported_reliability {
            None => true,
            Some(old) => (r - old).abs() >= delta,
        };
        if force || due {
            peer.update_pending = true;
            self.flush_peer_update(t, key);
        }
    }

    fn reported_value(&self, t: Millis, key: &ed25519_dalek::VerifyingKey) -> f64 {
        if self.bans.is_banned(key.as_bytes(), t) {
            return 0.0;
        }
        let r = self.peers.get(key).map_or(0.0, |p| {
            p.reliability
                .value(self.wall(t), &self.settings.reliability)
        });
        // org: a verified member of a trusted organisation is trusted at
        // least as its organisation.
        self.org_trust(key).map_or(r, |trust| r.max(trust))
    }

    /// Emits the pending `peer_update` of one peer if its gap and the total
    /// budget allow.
    fn flush_peer_update(&mut self, t: Millis, key: &ed25519_dalek::VerifyingKey) {
        let r = self.reported_value(t, key);
        let prior = self.settings.reliability.prior;
        let timestamp = secs(self.wall(t));
        // org: the first value of a peer waits (briefly) for its
        // membership claims, and a verified member's follows its trust.
        let first_waits = self
            .peers
            .get(key)
            .is_some_and(|p| p.update_pending && p.reported_reliability.is_none())
            && self.org_hold_update(key, t);
        let member_trust = self.org_trust(key);
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        if first_waits {
            return;
        }
        if !peer.update_pending
            || peer
                .last_update_ms
                .is_some_and(|l| t.saturating_sub(l) < PEER_UPDATE_GAP_MS)
        {
            return;
        }
        if !self.total_peer_updates.take(PEER_UPDATE_QUOTA, t) {
            self.stats.peer_updates_deferred += 1;
            return;
        }
        // Slips 1.1.21 weighs a peer's reports by the first reliability it
        // ever stored for it, forever (its trust database reads the oldest
        // row): a key Slips never heard of starts no higher than the prior,
        // however well its first minutes went.
        let r = match (peer.reported_reliability, member_trust) {
            (None, None) => r.min(prior),
            _ => r,
        };
        peer.update_pending = false;
        peer.last_update_ms = Some(t);
        peer.reported_reliability = Some(r);
        let msg = ToSlips::PeerUpdate {
            peerid: peer.peer_id.clone(),
            ip: peer.addr.map(|a| IpAddr::V4(*a.ip())),
            reliability: Some(r),
            timestamp,
        };
        self.mark_dirty();
        self.emit(msg);
    }

    fn flush_peer_updates(&mut self, t: Millis) {
        let pending: Vec<_> = self
            .peers
            .iter()
            .filter(|p| p.update_pending)
            .map(|p| p.key)
            .collect();
        for key in pending {
            self.flush_peer_update(t, &key);
        }
    }

    fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    fn save(&mut self, t: Millis) {
        for p in self.peers.iter_mut() {
            p.persisted_last_seen_ms = p.last_seen_ms;
        }
        let mut peers: Vec<PeerRecord> = self
            .peers
            .iter()
            .map(|p| PeerRecord {
                // org: shown by `pigeon peers`.
                organisations: self.org_ids_of(&p.key),
                ..p.to_record()
            })
            .collect();
        peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        let saved_at_ms = self.wall(t);
        self.actions
            .push_back(Action::SavePeers(PeerList { saved_at_ms, peers }));
        self.dirty = false;
        self.last_save_ms = t;
    }

    fn drop(&mut self, t: Millis, reason: DropReason, detail: &dyn std::fmt::Display) {
        *self.stats.dropped.entry(reason).or_insert(0) += 1;
        self.count_peer_drop(reason);
        self.drop_log.record(t, reason, detail);
    }
}

/// Which socket each kind may arrive on (PROTOCOL.md §2.1). Broadcast
/// `data` comes by multicast and, as a repair, by unicast; directed `data`
/// must come by unicast (checked once the body is read).
fn allowed_via(kind: Kind, via: Via) -> bool {
    match kind {
        Kind::Announce | Kind::Goodbye | Kind::Digest => via == Via::Group,
        // org: lists by multicast or unicast; keys by unicast (checked once
        // the body is read).
        Kind::Data | Kind::Org => true,
        Kind::Ack | Kind::Nack | Kind::Challenge | Kind::Response => via == Via::Unicast,
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
mod lan_attack_tests;
#[cfg(test)]
mod org_tests;
#[cfg(test)]
mod tests;
