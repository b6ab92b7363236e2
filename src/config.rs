//! Configuration: `pigeon.toml`, defaults, and the command line on top.
//!
//! Precedence is flags > file > defaults. Every section rejects unknown keys
//! (`deny_unknown_fields`) so a typo is an error naming the key, never a
//! silently ignored setting. `pigeon.toml` at the repository root is the
//! commented reference of every key.
//!
//! STATUS: struct definitions are fixed (other modules rely on the field
//! names); loading, validation and CLI application are implemented below.

use serde::Deserialize;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The whole configuration of one pigeon.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub network: NetworkConfig,
    pub identity: IdentityConfig,
    pub redis: RedisConfig,
    pub slips: SlipsConfig,
    pub discovery: DiscoveryConfig,
    pub security: SecurityConfig,
    pub reliability: ReliabilityConfig,
    pub peerstore: PeerstoreConfig,
    pub log: LogConfig,
}

/// Where and how datagrams travel.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Network name (Go flag `-rendezvous`). Part of every signature, so
    /// pigeons of different networks on one LAN never accept each other.
    pub name: String,
    /// IPv4 address of the interface to use (Go flag `-host`). Multicast is
    /// joined and sent on the interface owning this address; unicast binds
    /// to it. `None` (flag absent, key absent) lets the kernel choose.
    pub host: Option<Ipv4Addr>,
    /// Unicast UDP port (Go flag `-port`). Slips picks a random free TCP
    /// port per run, so this is never the multicast port. 0 = any.
    pub port: u16,
    /// Multicast group shared by all pigeons of the LAN. Administratively
    /// scoped (239.255.0.0/16, RFC 2365) so routers never forward it.
    pub group: Ipv4Addr,
    /// Multicast UDP port, the same on every host.
    pub group_port: u16,
    /// Multicast TTL. 1 keeps datagrams on the link.
    pub multicast_ttl: u32,
}

/// The peer's key.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Key file (Go flag `-key-file`), relative to the working directory.
    /// Empty: a one-time key that is never saved.
    pub key_file: PathBuf,
    /// Always make a new key (Go flag `-key-reset`); the old file is kept
    /// as a backup.
    pub key_reset: bool,
}

/// How to reach Slips' Redis.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Go flag `--redis-db`: `host:port`, `redis://[:password@]host:port/db`
    /// or `unix:///path/to/socket`.
    pub address: String,
    /// Slips → pigeon channel (Go flag `-redis-channel-pygo`).
    pub channel_pygo: String,
    /// pigeon → Slips channel (Go flag `-redis-channel-gopy`).
    pub channel_gopy: String,
    /// Password; empty = none, or the one in `redis_auth_file`.
    pub password: String,
    /// Newer Slips keep the Redis password in this file (relative to the
    /// working directory); read when it exists and `password` is empty.
    pub redis_auth_file: PathBuf,
    /// Go flag `-redis-delete`: delete the pigeon's keys in Redis at start.
    pub delete_on_start: bool,
    /// Messages for Slips kept while Redis is unreachable; beyond this the
    /// oldest are dropped (and counted).
    pub outbox_capacity: usize,
}

/// What pigeon tells Slips and what it lets through.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlipsConfig {
    /// Slips version put in every message for Slips, used only when the
    /// `VERSION` file of the Slips tree cannot be read and no Slips message
    /// has told us yet.
    pub version: String,
    /// Blames from peers: Slips 1.1.21 blocks a blamed IP without any
    /// check (audit finding SLP-009), so by default they are dropped.
    pub blames: BlamePolicy,
    /// Peer ids whose blames are forwarded with `blames = "allowlist"`.
    pub blame_allowlist: Vec<String>,
}

/// What to do with `blame` messages from peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlamePolicy {
    /// Never forward a peer's blame to Slips (default).
    Drop,
    /// Forward only blames from peers listed in `blame_allowlist`.
    Allowlist,
    /// Forward every valid blame.
    All,
}

/// Finding peers and noticing they are gone.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// Mean interval between announcements.
    pub announce_interval_ms: u64,
    /// Each interval is drawn uniformly in ±jitter × interval, so pigeons
    /// started together do not stay synchronised.
    pub announce_jitter: f64,
    /// Announcements sent at start, about one second apart.
    pub startup_announces: u32,
    /// A peer that missed this many intervals becomes inactive.
    pub inactive_after_missed: u32,
    /// Maximum random delay before answering a newcomer's announcement.
    pub answer_delay_max_ms: u64,
    /// Known peers not seen for this long are forgotten.
    pub forget_after_days: u64,
}

/// Limits against hostile or broken peers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Accepted difference between a datagram's timestamp and our clock.
    pub max_clock_skew_ms: u64,
    /// Most peers kept in the table.
    pub max_peers: usize,
    /// Datagrams per second accepted from one source address (before the
    /// signature is checked).
    pub per_source_rate: u32,
    /// Burst allowed above `per_source_rate`.
    pub per_source_burst: u32,
    /// Datagrams per second accepted from one key (after verification).
    pub per_peer_rate: u32,
    /// Burst allowed above `per_peer_rate`.
    pub per_peer_burst: u32,
}

/// The reliability score of each peer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReliabilityConfig {
    /// Observations lose half their weight after this long.
    pub half_life_hours: f64,
    /// Reliability assumed before anything is known.
    pub prior: f64,
    /// Weight of the prior, in observations.
    pub prior_weight: f64,
    /// A change of at least this much is reported to Slips.
    pub report_delta: f64,
}

/// The persisted peer list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeerstoreConfig {
    /// File (Go flag `-peerstore-file`), relative to the working directory.
    pub file: PathBuf,
    /// Changes are written at most this often (and always at shutdown).
    pub save_interval_ms: u64,
}

/// Where logs go.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Directory of the daily-rotated `p2p.log.YYYY-MM-DD` files, relative
    /// to the working directory.
    pub dir: PathBuf,
    /// Past days kept besides today's file.
    pub keep_days: usize,
    /// `tracing` filter, e.g. `info` or `pigeon=debug`.
    pub level: String,
}
