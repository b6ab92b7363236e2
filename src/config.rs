//! Configuration: `pigeon.toml`, defaults, and the command line on top.
//!
//! Precedence is flags > file > defaults. Every section rejects unknown keys
//! (`deny_unknown_fields`) so a typo is an error naming the key, never a
//! silently ignored setting. `pigeon.toml` at the repository root is the
//! commented reference of every key.
//!
//! Field names are relied upon by other modules: add, never rename.
//!
//! Lookup ([`Config::load`]): `-config FILE` (must exist), else
//! `./pigeon.toml`, else `pigeon.toml` beside the executable, else the
//! defaults; then the flags; then `-rename-with-port`; then
//! [`Config::validate`].

use crate::cli::{CliArgs, UsageDefaults};
use crate::io::redis_bridge::RedisAddress;
use serde::{Deserialize, Deserializer};
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The whole configuration of one pigeon.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[network]`: sockets, multicast group, network name.
    pub network: NetworkConfig,
    /// `[identity]`: the key file.
    pub identity: IdentityConfig,
    /// `[redis]`: Slips' Redis and the two channels.
    pub redis: RedisConfig,
    /// `[slips]`: what is told to and let through to Slips.
    pub slips: SlipsConfig,
    /// `[discovery]`: announcements and liveness.
    pub discovery: DiscoveryConfig,
    /// `[delivery]`: retransmission and repair over lossy links.
    pub delivery: DeliveryConfig,
    /// `[security]`: limits against hostile peers.
    pub security: SecurityConfig,
    /// `[reliability]`: the per-peer reliability score.
    pub reliability: ReliabilityConfig,
    /// `[peerstore]`: the saved peer list.
    pub peerstore: PeerstoreConfig,
    /// `[log]`: log files and level.
    pub log: LogConfig,
    /// `[control]`: the local socket `pigeon status` talks to.
    pub control: ControlConfig,
    /// `[metrics]`: the Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// `[org]`: organisations we belong to and trust (`crate::org::config`).
    pub org: crate::org::config::OrgConfig,
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
    /// to it. `None` (flag absent or `""`, key absent or `""`) lets the
    /// kernel choose.
    #[serde(deserialize_with = "de_host")]
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
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
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
    /// or `unix:///path/to/socket`; parsed once, when set.
    pub address: RedisAddress,
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
    /// check (`handle_new_blame_message` in
    /// `slips_files/core/evidence_handler_worker.py`), so by default they
    /// are dropped.
    pub blames: BlamePolicy,
    /// Peer ids whose blames are forwarded with `blames = "allowlist"`.
    pub blame_allowlist: Vec<String>,
    /// Whether Slips may report or blame the address of this host or of an
    /// active peer. Slips 1.1.21 reports its own address after acting on a
    /// network opinion; by default such messages are not sent.
    pub report_peer_addresses: bool,
    /// Deliver a peer's `request` only if Slips can answer it without
    /// crashing (Slips 1.1.21 raises TypeError on a request about an IP it
    /// has no score for): read Slips' cache first, drop when unsafe or
    /// unreadable.
    pub request_guard: bool,
    /// Slips' cache Redis, where the request guard reads
    /// `IPsInfo:threat_level|score|confidence` (Slips 1.1.21 always uses
    /// port 6379, DB 1). Any form `redis.address` accepts; the DB comes from
    /// the address (`redis://host:port/1`).
    pub cache_redis: RedisAddress,
}

/// What to do with `blame` messages from peers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlamePolicy {
    /// Never forward a peer's blame to Slips (default).
    #[default]
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

/// Getting every message through a lossy LAN, exactly once.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Extra copies of each broadcast, sent `repeat_spacing_ms` apart (with
    /// jitter): independent losses rarely take every copy.
    pub broadcast_repeats: u32,
    /// Mean gap between copies of a broadcast.
    pub repeat_spacing_ms: u64,
    /// Digests ("my recent broadcasts are ids a..=b") sent after a
    /// broadcast, at doubling intervals, so a peer that missed every copy
    /// asks for it.
    pub digests_after_broadcast: u32,
    /// Delay of the first digest after a broadcast.
    pub first_digest_ms: u64,
    /// Broadcasts kept for repair.
    pub retain_broadcasts: usize,
    /// How long broadcasts are kept for repair.
    pub retain_broadcast_ms: u64,
    /// First retransmission of an unacknowledged directed message; the
    /// delay doubles each time, up to 150 ms or this value if larger
    /// (`core::delivery::MAX_DIRECTED_BACKOFF_MS`).
    pub directed_retry_ms: u64,
    /// Give up on a directed message after this long. Slips waits 2 s for
    /// answers, so the default stays below that.
    pub directed_deadline_ms: u64,
    /// Unacknowledged directed messages kept at once.
    pub max_pending_directed: usize,
}

/// Largest `security.ban_after_misbehaviours`: that many strike times are
/// kept per misbehaving key.
pub const MAX_BAN_AFTER: u32 = 1000;

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
    /// Misbehaviours (signed datagrams with a malformed body or an invalid
    /// payload, seconds spent over the rate) within `ban_window_secs` that
    /// ban a key for `ban_secs`; 0 disables bans.
    pub ban_after_misbehaviours: u32,
    /// Window over which misbehaviours add up.
    pub ban_window_secs: u64,
    /// How long a banned key's datagrams are dropped unverified.
    pub ban_secs: u64,
    /// Most keys kept in the table for one IPv4 address: a host that proves
    /// its address cannot fill the table with keys of its own.
    pub max_keys_per_ip: usize,
    /// Bytes per second of responses (acks, nacks, repairs) sent to one
    /// peer's proven address.
    pub response_bytes_per_sec: u32,
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

/// The control socket of `pigeon status`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Unix socket, relative to the working directory; empty disables it.
    pub socket: PathBuf,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("pigeon.sock"),
        }
    }
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` to serve `GET /metrics` on, or a bare port for
    /// 127.0.0.1; empty (the default) disables metrics.
    pub listen: String,
}

impl MetricsConfig {
    /// Where to listen, if enabled; `Err` names what is wrong.
    pub fn listen_addr(&self) -> Result<Option<std::net::SocketAddr>, String> {
        let v = self.listen.trim();
        if v.is_empty() {
            return Ok(None);
        }
        if let Ok(port) = v.parse::<u16>() {
            return Ok(Some((Ipv4Addr::LOCALHOST, port).into()));
        }
        v.parse::<std::net::SocketAddr>().map(Some).map_err(|_| {
            format!(
                "must be empty, a port, or an IP address and port such as 127.0.0.1:9464, got \"{}\"",
                v.escape_debug()
            )
        })
    }
}

/// Reads `host`: an IPv4 address, or `""` for "not set" (the Go default),
/// so `host = ""` in a file means the same as the flag `-host ""`.
fn de_host<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ipv4Addr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Ok(None);
    }
    s.parse::<Ipv4Addr>()
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("not an IPv4 address: \"{s}\"")))
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            name: "slips".to_owned(),
            host: None,
            port: 4001,
            group: Ipv4Addr::new(239, 255, 112, 103),
            group_port: 47474,
            multicast_ttl: 1,
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            address: RedisAddress::new("localhost:6379"),
            channel_pygo: "p2p_pygo".to_owned(),
            channel_gopy: "p2p_gopy".to_owned(),
            password: String::new(),
            redis_auth_file: PathBuf::from("../redis_auth.conf"),
            delete_on_start: false,
            outbox_capacity: 10_000,
        }
    }
}

impl Default for SlipsConfig {
    fn default() -> Self {
        Self {
            version: "1.1.21".to_owned(),
            blames: BlamePolicy::default(),
            blame_allowlist: Vec::new(),
            report_peer_addresses: false,
            request_guard: true,
            cache_redis: RedisAddress::new("redis://127.0.0.1:6379/1"),
        }
    }
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            announce_interval_ms: 30_000,
            announce_jitter: 0.2,
            startup_announces: 3,
            inactive_after_missed: 3,
            answer_delay_max_ms: 120,
            forget_after_days: 14,
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            broadcast_repeats: 2,
            repeat_spacing_ms: 100,
            digests_after_broadcast: 5,
            first_digest_ms: 300,
            retain_broadcasts: 256,
            retain_broadcast_ms: 120_000,
            directed_retry_ms: 100,
            directed_deadline_ms: 1_500,
            max_pending_directed: 1_024,
        }
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            max_clock_skew_ms: 30_000,
            max_peers: 1024,
            per_source_rate: 500,
            per_source_burst: 1000,
            per_peer_rate: 400,
            per_peer_burst: 800,
            ban_after_misbehaviours: 5,
            ban_window_secs: 60,
            ban_secs: 600,
            max_keys_per_ip: 4,
            response_bytes_per_sec: 262_144,
        }
    }
}

impl Default for ReliabilityConfig {
    fn default() -> Self {
        Self {
            half_life_hours: 24.0,
            prior: 0.5,
            prior_weight: 4.0,
            report_delta: 0.1,
        }
    }
}

impl Default for PeerstoreConfig {
    fn default() -> Self {
        Self {
            file: PathBuf::from("peers.json"),
            save_interval_ms: 10_000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("logs"),
            keep_days: 1,
            level: "info".to_owned(),
        }
    }
}

/// Why the configuration cannot be used. Every message names where the
/// problem is (file or command line) and the dotted key, so the operator
/// can fix it from one log line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing `-config` file, permissions).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema (unknown key,
    /// wrong type). `detail` is one line naming the dotted key when it can
    /// be located; `source` keeps toml's full report.
    #[error("{}{detail}", prefix(origin))]
    Toml {
        /// The file (`None` for [`Config::from_toml`] on a bare string).
        origin: Option<String>,
        /// One line: `key (line N): reason`.
        detail: String,
        /// toml's error, with the source snippet.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A value out of range.
    #[error("{}{key}: {reason}", prefix(origin))]
    Invalid {
        /// Where the value came from: the file's path, `command line`, or
        /// `None` when [`Config::validate`] is called directly.
        origin: Option<String>,
        /// Dotted key, e.g. `discovery.announce_jitter`.
        key: String,
        /// What is wrong, with the offending value.
        reason: String,
    },
}

/// `"origin: "` or nothing.
fn prefix(origin: &Option<String>) -> String {
    origin
        .as_ref()
        .map(|o| format!("{o}: "))
        .unwrap_or_default()
}

impl ConfigError {
    /// Sets where the error comes from, unless already set.
    fn with_origin(mut self, from: &str) -> Self {
        match &mut self {
            ConfigError::Toml { origin, .. } | ConfigError::Invalid { origin, .. } => {
                if origin.is_none() {
                    *origin = Some(from.to_owned());
                }
            }
            ConfigError::Io { .. } => {}
        }
        self
    }
}

/// Builds an [`ConfigError::Invalid`] without origin.
fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: None,
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// One line for a toml error: the dotted key (found from the error's
/// position: the last `[section]` header above it and the key on its line)
/// and toml's message.
fn toml_detail(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim().replace('\n', " ");
    let Some(span) = err.span() else {
        return message;
    };
    let start = span.start.min(text.len());
    let before = text.get(..start).unwrap_or("");
    let line_no = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    let lines: Vec<&str> = text.lines().collect();
    let idx = line_no - 1;
    let mut key: Option<String> = None;
    let mut section: Option<String> = None;
    for i in (0..=idx.min(lines.len().saturating_sub(1))).rev() {
        let l = lines.get(i).map_or("", |l| l.trim());
        if l.starts_with('[') {
            let name = l.trim_start_matches('[');
            let name = name.split(']').next().unwrap_or("").trim().to_owned();
            if i == idx {
                key = Some(name);
            } else {
                section = Some(name);
            }
            break;
        }
        if key.is_none()
            && !l.starts_with('#')
            && let Some((k, _)) = l.split_once('=')
        {
            key = Some(k.trim().trim_matches('"').to_owned());
        }
    }
    // A value error inside a section: the line with `=` holds the key. An
    // unknown field: toml's message names it; the span is on the key.
    match (section, key) {
        (Some(s), Some(k)) => format!("{s}.{k} (line {line_no}): {message}"),
        (None, Some(k)) => format!("{k} (line {line_no}): {message}"),
        (_, None) => format!("line {line_no}, column {col}: {message}"),
    }
}

impl Config {
    /// Parses a TOML document. Missing keys take their defaults; unknown
    /// keys are errors. Does not validate ranges (see [`Config::validate`]).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Toml {
            origin: None,
            detail: toml_detail(text, &e),
            source: Box::new(e),
        })
    }

    /// Reads, parses and validates one file. Errors name the file.
    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let cfg = Self::from_toml(&text).map_err(|e| e.with_origin(&origin))?;
        cfg.validate().map_err(|e| e.with_origin(&origin))?;
        Ok(cfg)
    }

    /// The file [`Config::load`] reads: `-config FILE` if given (whether
    /// or not it exists: a missing one is then an error), else
    /// `./pigeon.toml`, else `<exe_dir>/pigeon.toml`, else none. Public so
    /// the caller can log which file was used.
    pub fn find_file(cli: &CliArgs, exe_dir: Option<&Path>) -> Option<PathBuf> {
        find_file_in(cli, Path::new("."), exe_dir)
    }

    /// The configuration of a run: file (see [`Config::find_file`]) or
    /// defaults, then the flags, then `-rename-with-port`, then validation.
    /// The file is validated on its own first, so an error names the
    /// origin of the bad value: the file or `command line`.
    pub fn load(cli: &CliArgs, exe_dir: Option<&Path>) -> Result<Config, ConfigError> {
        let mut cfg = match Self::find_file(cli, exe_dir) {
            Some(path) => Self::read(&path)?,
            None => Config::default(),
        };
        cfg.apply_cli(cli);
        cfg.validate().map_err(|e| e.with_origin("command line"))?;
        Ok(cfg)
    }

    /// The values the command line's help text shows as defaults.
    pub fn usage_defaults(&self) -> UsageDefaults<'_> {
        UsageDefaults {
            port: self.network.port,
            host: self.network.host,
            key_file: &self.identity.key_file,
            peerstore_file: &self.peerstore.file,
            redis_address: self.redis.address.as_str(),
            channel_pygo: &self.redis.channel_pygo,
            channel_gopy: &self.redis.channel_gopy,
            network: &self.network.name,
        }
    }

    /// Overrides values with the flags that were given, then applies
    /// `-rename-with-port` (Go parity: the port is appended to the key
    /// file, the peer list file and both channel names, after all values
    /// are known; empty file names stay empty, meaning "not saved").
    pub fn apply_cli(&mut self, cli: &CliArgs) {
        if let Some(v) = cli.port {
            self.network.port = v;
        }
        if let Some(v) = cli.host {
            self.network.host = v;
        }
        if let Some(v) = &cli.rendezvous {
            self.network.name = v.clone();
        }
        if let Some(v) = &cli.key_file {
            self.identity.key_file = v.clone();
        }
        if let Some(v) = cli.key_reset {
            self.identity.key_reset = v;
        }
        if let Some(v) = &cli.peerstore_file {
            self.peerstore.file = v.clone();
        }
        if let Some(v) = &cli.redis_db {
            self.redis.address = RedisAddress::new(v.clone());
        }
        if let Some(v) = cli.redis_delete {
            self.redis.delete_on_start = v;
        }
        if let Some(v) = &cli.redis_channel_pygo {
            self.redis.channel_pygo = v.clone();
        }
        if let Some(v) = &cli.redis_channel_gopy {
            self.redis.channel_gopy = v.clone();
        }
        if cli.rename_with_port == Some(true) {
            let port = self.network.port.to_string();
            let append = |p: &PathBuf| -> PathBuf {
                if p.as_os_str().is_empty() {
                    return p.clone();
                }
                let mut s = OsString::from(p.as_os_str());
                s.push(&port);
                PathBuf::from(s)
            };
            self.identity.key_file = append(&self.identity.key_file);
            self.peerstore.file = append(&self.peerstore.file);
            self.control.socket = append(&self.control.socket);
            self.redis.channel_pygo.push_str(&port);
            self.redis.channel_gopy.push_str(&port);
        }
    }

    /// Checks every range, so a bad value stops pigeon at start with a
    /// message naming the key rather than misbehaving later.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = &self.network;
        if n.name.is_empty()
            || n.name.len() > 64
            || !n.name.bytes().all(|b| (0x20..0x7f).contains(&b))
        {
            return Err(invalid(
                "network.name",
                format!(
                    "must be 1 to 64 printable ASCII characters, got \"{}\"",
                    n.name.escape_debug()
                ),
            ));
        }
        if !n.group.is_multicast() {
            return Err(invalid(
                "network.group",
                format!("must be a multicast address (224.0.0.0/4), got {}", n.group),
            ));
        }
        if n.group_port == 0 {
            return Err(invalid(
                "network.group_port",
                "must be in [1, 65535], got 0",
            ));
        }
        if !(1..=255).contains(&n.multicast_ttl) {
            return Err(invalid(
                "network.multicast_ttl",
                format!("must be in [1, 255], got {}", n.multicast_ttl),
            ));
        }

        if let Err(e) = self.slips.cache_redis.target() {
            return Err(invalid("slips.cache_redis", e.to_string()));
        }

        let r = &self.redis;
        for (key, v) in [
            ("redis.address", r.address.as_str()),
            ("redis.channel_pygo", &r.channel_pygo),
            ("redis.channel_gopy", &r.channel_gopy),
        ] {
            if v.trim().is_empty() {
                return Err(invalid(key, "must not be empty"));
            }
        }
        if let Err(e) = r.address.target() {
            return Err(invalid("redis.address", e.to_string()));
        }
        if r.channel_pygo == r.channel_gopy {
            return Err(invalid(
                "redis.channel_gopy",
                format!(
                    "must differ from redis.channel_pygo, both are \"{}\"",
                    r.channel_gopy
                ),
            ));
        }
        at_least("redis.outbox_capacity", r.outbox_capacity as u64, 1)?;

        let s = &self.slips;
        if s.version.trim().is_empty() {
            return Err(invalid("slips.version", "must not be empty"));
        }
        for (i, id) in s.blame_allowlist.iter().enumerate() {
            if id.parse::<libp2p_identity::PeerId>().is_err() {
                return Err(invalid(
                    &format!("slips.blame_allowlist[{i}]"),
                    format!("not a peer id: \"{}\"", id.escape_debug()),
                ));
            }
        }

        let d = &self.discovery;
        if !crate::wire::ANNOUNCE_INTERVAL_MS.contains(&d.announce_interval_ms) {
            return Err(invalid(
                "discovery.announce_interval_ms",
                format!(
                    "must be in {}..={} (the bounds peers accept), got {}",
                    crate::wire::ANNOUNCE_INTERVAL_MS.start(),
                    crate::wire::ANNOUNCE_INTERVAL_MS.end(),
                    d.announce_interval_ms
                ),
            ));
        }
        if !(0.0..=0.5).contains(&d.announce_jitter) {
            return Err(invalid(
                "discovery.announce_jitter",
                format!("must be in [0, 0.5], got {}", d.announce_jitter),
            ));
        }
        at_least(
            "discovery.inactive_after_missed",
            u64::from(d.inactive_after_missed),
            1,
        )?;
        at_least("discovery.forget_after_days", d.forget_after_days, 1)?;

        let del = &self.delivery;
        at_least("delivery.repeat_spacing_ms", del.repeat_spacing_ms, 1)?;
        at_least("delivery.first_digest_ms", del.first_digest_ms, 1)?;
        at_least(
            "delivery.retain_broadcasts",
            del.retain_broadcasts as u64,
            1,
        )?;
        at_least("delivery.retain_broadcast_ms", del.retain_broadcast_ms, 1)?;
        at_least("delivery.directed_retry_ms", del.directed_retry_ms, 1)?;
        at_least(
            "delivery.directed_deadline_ms",
            del.directed_deadline_ms,
            del.directed_retry_ms,
        )?;
        at_least(
            "delivery.max_pending_directed",
            del.max_pending_directed as u64,
            1,
        )?;

        let sec = &self.security;
        at_least("security.max_clock_skew_ms", sec.max_clock_skew_ms, 1)?;
        at_least("security.max_peers", sec.max_peers as u64, 1)?;
        at_least(
            "security.per_source_rate",
            u64::from(sec.per_source_rate),
            1,
        )?;
        at_least(
            "security.per_source_burst",
            u64::from(sec.per_source_burst),
            1,
        )?;
        at_least("security.per_peer_rate", u64::from(sec.per_peer_rate), 1)?;
        at_least("security.per_peer_burst", u64::from(sec.per_peer_burst), 1)?;
        if sec.ban_after_misbehaviours > MAX_BAN_AFTER {
            return Err(invalid(
                "security.ban_after_misbehaviours",
                format!(
                    "must be at most {MAX_BAN_AFTER} (0 disables bans), got {}",
                    sec.ban_after_misbehaviours
                ),
            ));
        }
        at_least("security.ban_window_secs", sec.ban_window_secs, 1)?;
        at_least("security.ban_secs", sec.ban_secs, 1)?;
        at_least("security.max_keys_per_ip", sec.max_keys_per_ip as u64, 1)?;
        at_least(
            "security.response_bytes_per_sec",
            u64::from(sec.response_bytes_per_sec),
            1,
        )?;

        let rel = &self.reliability;
        if !(rel.half_life_hours.is_finite() && rel.half_life_hours > 0.0) {
            return Err(invalid(
                "reliability.half_life_hours",
                format!("must be > 0, got {}", rel.half_life_hours),
            ));
        }
        if !(0.0..=1.0).contains(&rel.prior) {
            return Err(invalid(
                "reliability.prior",
                format!("must be in [0, 1], got {}", rel.prior),
            ));
        }
        if !(rel.prior_weight.is_finite() && rel.prior_weight > 0.0) {
            return Err(invalid(
                "reliability.prior_weight",
                format!("must be > 0, got {}", rel.prior_weight),
            ));
        }
        if !(rel.report_delta > 0.0 && rel.report_delta <= 1.0) {
            return Err(invalid(
                "reliability.report_delta",
                format!("must be in (0, 1], got {}", rel.report_delta),
            ));
        }

        at_least(
            "peerstore.save_interval_ms",
            self.peerstore.save_interval_ms,
            1,
        )?;

        if let Err(reason) = self.metrics.listen_addr() {
            return Err(invalid("metrics.listen", reason));
        }
        if let Err((key, reason)) = self.org.validate() {
            return Err(invalid(&key, reason));
        }

        let level = &self.log.level;
        if level.trim().is_empty() {
            return Err(invalid("log.level", "must not be empty (e.g. \"info\")"));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(level) {
            return Err(invalid(
                "log.level",
                format!("not a tracing filter: \"{}\": {e}", level.escape_debug()),
            ));
        }
        Ok(())
    }
}

/// [`Config::find_file`] with the working directory as a parameter (tests).
fn find_file_in(cli: &CliArgs, cwd: &Path, exe_dir: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = &cli.config {
        return Some(p.clone());
    }
    let local = cwd.join("pigeon.toml");
    if local.is_file() {
        return Some(local);
    }
    exe_dir
        .map(|d| d.join("pigeon.toml"))
        .filter(|p| p.is_file())
}

/// `value >= min`, else an [`ConfigError::Invalid`] naming `key`.
fn at_least(key: &str, value: u64, min: u64) -> Result<(), ConfigError> {
    if value < min {
        return Err(invalid(key, format!("must be at least {min}, got {value}")));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text).and_then(|c| c.validate().map(|()| c))
    }

    fn invalid_key(text: &str) -> String {
        match parse(text) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected Invalid for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
        assert_eq!(BlamePolicy::default(), BlamePolicy::Drop);
    }

    #[test]
    fn reference_file_equals_defaults() {
        let c = Config::from_toml(include_str!("../pigeon.toml")).unwrap();
        assert_eq!(c, Config::default());
    }

    /// Field names of a section, as listed by serde's unknown-field error.
    fn schema_fields(section: Option<&str>) -> Vec<String> {
        let text = match section {
            Some(s) => format!("[{s}]\n__probe = 1\n"),
            None => "__probe = 1\n".to_owned(),
        };
        let msg = Config::from_toml(&text).unwrap_err().to_string();
        // serde: "expected one of `a`, `b`, `c`" or "expected `a` or `b`".
        let list = msg.split("expected ").nth(1).unwrap();
        let list = list.trim_start_matches("one of ").replace(" or ", ", ");
        list.split(", ")
            .map(|f| f.trim_matches('`').to_owned())
            .collect()
    }

    #[test]
    fn reference_file_lists_every_key() {
        let table: toml::Table = toml::from_str(include_str!("../pigeon.toml")).unwrap();
        let sections = schema_fields(None);
        assert_eq!(sections.len(), 13);
        let mut total = 0;
        for section in &sections {
            let in_file = table[section.as_str()].as_table().unwrap();
            for field in schema_fields(Some(section)) {
                assert!(
                    in_file.contains_key(&field),
                    "pigeon.toml lacks {section}.{field}"
                );
                total += 1;
            }
        }
        // Guards the probe itself (update when adding a field).
        assert_eq!(total, 63);
    }

    #[test]
    fn unknown_key_in_any_section_is_named() {
        for section in [
            "network",
            "identity",
            "redis",
            "slips",
            "discovery",
            "delivery",
            "security",
            "reliability",
            "peerstore",
            "log",
            "control",
            "metrics",
            "org",
        ] {
            let text = format!("[{section}]\ntypo_key = 1\n");
            let e = Config::from_toml(&text).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("{section}.typo_key")) && msg.contains("unknown field"),
                "{msg}"
            );
        }
        let msg = Config::from_toml("[nope]\n").unwrap_err().to_string();
        assert!(
            msg.contains("nope") && msg.contains("unknown field"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_type_names_key() {
        let msg = Config::from_toml("[network]\nport = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("network.port (line 2): invalid type"),
            "{msg}"
        );
        let msg = Config::from_toml("[network]\nhost = \"h.example\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("network.host") && msg.contains("IPv4"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn host_empty_or_address() {
        assert_eq!(parse("[network]\nhost = \"\"").unwrap().network.host, None);
        assert_eq!(
            parse("[network]\nhost = \"10.0.0.1\"")
                .unwrap()
                .network
                .host,
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
    }

    #[test]
    fn bad_values_name_dotted_key() {
        let cases = [
            ("[network]\nname = \"\"", "network.name"),
            ("[network]\nname = \"tab\\there\"", "network.name"),
            (
                &format!("[network]\nname = \"{}\"", "x".repeat(65)),
                "network.name",
            ),
            ("[network]\ngroup = \"10.0.0.1\"", "network.group"),
            ("[network]\ngroup_port = 0", "network.group_port"),
            ("[network]\nmulticast_ttl = 0", "network.multicast_ttl"),
            ("[network]\nmulticast_ttl = 256", "network.multicast_ttl"),
            ("[redis]\naddress = \"\"", "redis.address"),
            ("[redis]\nchannel_pygo = \"\"", "redis.channel_pygo"),
            ("[redis]\nchannel_gopy = \" \"", "redis.channel_gopy"),
            ("[redis]\nchannel_gopy = \"p2p_pygo\"", "redis.channel_gopy"),
            ("[redis]\noutbox_capacity = 0", "redis.outbox_capacity"),
            ("[slips]\nversion = \"\"", "slips.version"),
            ("[slips]\ncache_redis = \"rediss://h\"", "slips.cache_redis"),
            (
                "[slips]\nblame_allowlist = [\"nope\"]",
                "slips.blame_allowlist[0]",
            ),
            (
                "[discovery]\nannounce_interval_ms = 0",
                "discovery.announce_interval_ms",
            ),
            (
                "[discovery]\nannounce_jitter = 0.9",
                "discovery.announce_jitter",
            ),
            (
                "[discovery]\nannounce_jitter = -0.1",
                "discovery.announce_jitter",
            ),
            (
                "[discovery]\nannounce_jitter = nan",
                "discovery.announce_jitter",
            ),
            (
                "[discovery]\ninactive_after_missed = 0",
                "discovery.inactive_after_missed",
            ),
            (
                "[discovery]\nforget_after_days = 0",
                "discovery.forget_after_days",
            ),
            (
                "[security]\nmax_clock_skew_ms = 0",
                "security.max_clock_skew_ms",
            ),
            ("[security]\nmax_peers = 0", "security.max_peers"),
            (
                "[security]\nper_source_rate = 0",
                "security.per_source_rate",
            ),
            (
                "[security]\nper_source_burst = 0",
                "security.per_source_burst",
            ),
            ("[security]\nper_peer_rate = 0", "security.per_peer_rate"),
            ("[security]\nper_peer_burst = 0", "security.per_peer_burst"),
            (
                "[security]\nban_after_misbehaviours = 1001",
                "security.ban_after_misbehaviours",
            ),
            (
                "[security]\nban_window_secs = 0",
                "security.ban_window_secs",
            ),
            ("[security]\nban_secs = 0", "security.ban_secs"),
            (
                "[reliability]\nhalf_life_hours = 0.0",
                "reliability.half_life_hours",
            ),
            (
                "[reliability]\nhalf_life_hours = inf",
                "reliability.half_life_hours",
            ),
            ("[reliability]\nprior = 1.5", "reliability.prior"),
            (
                "[reliability]\nprior_weight = 0.0",
                "reliability.prior_weight",
            ),
            (
                "[reliability]\nreport_delta = 0.0",
                "reliability.report_delta",
            ),
            (
                "[reliability]\nreport_delta = 1.1",
                "reliability.report_delta",
            ),
            (
                "[peerstore]\nsave_interval_ms = 0",
                "peerstore.save_interval_ms",
            ),
            ("[log]\nlevel = \"\"", "log.level"),
            ("[log]\nlevel = \"info,[[[\"", "log.level"),
        ];
        for (text, key) in cases {
            assert_eq!(invalid_key(text), key, "{text}");
        }
        // Edges that are fine.
        parse("[discovery]\nannounce_jitter = 0.5\nstartup_announces = 0").unwrap();
        parse("[reliability]\nprior = 0.0\nreport_delta = 1.0").unwrap();
        parse("[log]\nkeep_days = 0\nlevel = \"info,pigeon::core=debug\"").unwrap();
        parse("[slips]\nblames = \"allowlist\"\nblame_allowlist = [\"12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq\"]").unwrap();
        parse("[network]\nport = 0\nname = \"lab net 1\"").unwrap();
    }

    #[test]
    fn display_format() {
        let e = invalid("discovery.announce_jitter", "must be in [0, 0.5], got 0.9")
            .with_origin("pigeon.toml");
        assert_eq!(
            e.to_string(),
            "pigeon.toml: discovery.announce_jitter: must be in [0, 0.5], got 0.9"
        );
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn read_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "bad.toml",
            "[discovery]\nannounce_jitter = 0.9\n",
        );
        let msg = Config::read(&p).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!(
                "{}: discovery.announce_jitter: must be in [0, 0.5], got 0.9",
                p.display()
            )
        );
        let p = write(dir.path(), "typo.toml", "[log]\nlevl = \"x\"\n");
        let msg = Config::read(&p).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!(
                "{}: log.levl (line 2): unknown field",
                p.display()
            )),
            "{msg}"
        );
        let missing = dir.path().join("missing.toml");
        assert!(matches!(
            Config::read(&missing),
            Err(ConfigError::Io { .. })
        ));
    }

    #[test]
    fn lookup_order() {
        let cwd = tempfile::tempdir().unwrap();
        let exe = tempfile::tempdir().unwrap();
        let none = CliArgs::default();
        assert_eq!(find_file_in(&none, cwd.path(), Some(exe.path())), None);
        let in_exe = write(exe.path(), "pigeon.toml", "");
        assert_eq!(
            find_file_in(&none, cwd.path(), Some(exe.path())),
            Some(in_exe)
        );
        let in_cwd = write(cwd.path(), "pigeon.toml", "");
        assert_eq!(
            find_file_in(&none, cwd.path(), Some(exe.path())),
            Some(in_cwd)
        );
        let flag = CliArgs {
            config: Some("/nonexistent/x.toml".into()),
            ..CliArgs::default()
        };
        assert_eq!(
            find_file_in(&flag, cwd.path(), Some(exe.path())),
            Some(PathBuf::from("/nonexistent/x.toml"))
        );
        // A missing -config file is an error, not a fallback to defaults.
        assert!(matches!(
            Config::load(&flag, None),
            Err(ConfigError::Io { .. })
        ));
    }

    #[test]
    fn precedence_flags_over_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "p.toml",
            "[network]\nport = 5000\nname = \"lab\"\nhost = \"10.0.0.1\"\n\
             [identity]\nkey_file = \"file.keys\"\n[redis]\nchannel_pygo = \"in\"\n",
        );
        let cli = CliArgs {
            config: Some(file.clone()),
            port: Some(32768),
            host: Some(None),
            key_file: Some("pigeon.keys".into()),
            ..CliArgs::default()
        };
        let c = Config::load(&cli, None).unwrap();
        assert_eq!(c.network.port, 32768); // flag
        assert_eq!(c.network.host, None); // flag -host ""
        assert_eq!(c.identity.key_file, PathBuf::from("pigeon.keys")); // flag
        assert_eq!(c.network.name, "lab"); // file
        assert_eq!(c.redis.channel_pygo, "in"); // file
        assert_eq!(c.redis.channel_gopy, "p2p_gopy"); // default
        assert_eq!(c.security, SecurityConfig::default()); // default

        let mut c = Config::default();
        c.apply_cli(&CliArgs {
            host: Some(Some(Ipv4Addr::new(192, 168, 1, 23))),
            key_reset: Some(true),
            peerstore_file: Some("ps.json".into()),
            redis_db: Some("127.0.0.1:6379".into()),
            redis_delete: Some(true),
            redis_channel_pygo: Some("a".into()),
            redis_channel_gopy: Some("b".into()),
            rendezvous: Some("net".into()),
            pid: Some("/slips/1.0".into()),
            test: Some(true),
            ..CliArgs::default()
        });
        assert_eq!(c.network.host, Some(Ipv4Addr::new(192, 168, 1, 23)));
        assert!(c.identity.key_reset && c.redis.delete_on_start);
        assert_eq!(c.peerstore.file, PathBuf::from("ps.json"));
        assert_eq!(c.redis.address.as_str(), "127.0.0.1:6379");
        assert_eq!(
            (c.redis.channel_pygo.as_str(), c.redis.channel_gopy.as_str()),
            ("a", "b")
        );
        assert_eq!(c.network.name, "net");
    }

    #[test]
    fn bad_flag_value_is_attributed_to_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "p.toml", "");
        let cli = CliArgs {
            config: Some(file),
            rendezvous: Some(String::new()),
            ..CliArgs::default()
        };
        let msg = Config::load(&cli, None).unwrap_err().to_string();
        assert!(msg.starts_with("command line: network.name: "), "{msg}");
    }

    #[test]
    fn rename_with_port() {
        let mut c = Config::default();
        c.identity.key_file = "pigeon.keys".into();
        c.apply_cli(&CliArgs {
            port: Some(4001),
            rename_with_port: Some(true),
            ..CliArgs::default()
        });
        assert_eq!(c.identity.key_file, PathBuf::from("pigeon.keys4001"));
        assert_eq!(c.peerstore.file, PathBuf::from("peers.json4001"));
        assert_eq!(c.control.socket, PathBuf::from("pigeon.sock4001"));
        assert_eq!(c.redis.channel_pygo, "p2p_pygo4001");
        assert_eq!(c.redis.channel_gopy, "p2p_gopy4001");

        // Empty file names stay empty; uses the final (flag) port.
        let mut c = Config::default();
        c.peerstore.file = PathBuf::new();
        c.apply_cli(&CliArgs {
            port: Some(32768),
            rename_with_port: Some(true),
            ..CliArgs::default()
        });
        assert_eq!(c.identity.key_file, PathBuf::new());
        assert_eq!(c.peerstore.file, PathBuf::new());
        assert_eq!(c.redis.channel_gopy, "p2p_gopy32768");

        // -rename-with-port=false changes nothing.
        let mut c = Config::default();
        c.apply_cli(&CliArgs {
            rename_with_port: Some(false),
            ..CliArgs::default()
        });
        assert_eq!(c, Config::default());
    }

    #[test]
    fn metrics_listen_is_off_a_port_or_an_address() {
        let listen = |v: &str| {
            MetricsConfig {
                listen: v.to_owned(),
            }
            .listen_addr()
        };
        assert_eq!(Config::default().metrics.listen_addr(), Ok(None));
        assert_eq!(listen(""), Ok(None));
        assert_eq!(listen("9464"), Ok(Some("127.0.0.1:9464".parse().unwrap())));
        assert_eq!(
            listen("10.0.0.1:9100"),
            Ok(Some("10.0.0.1:9100".parse().unwrap()))
        );
        assert_eq!(
            invalid_key("[metrics]\nlisten = \"localhost\"\n"),
            "metrics.listen"
        );
    }

    #[test]
    fn usage_lists_every_flag() {
        let u = crate::cli::usage(&Config::default().usage_defaults());
        for f in [
            "-config",
            "-port",
            "-host",
            "-key-file",
            "-key-reset",
            "-peerstore-file",
            "-rename-with-port",
            "-redis-db",
            "-redis-delete",
            "-redis-channel-pygo",
            "-redis-channel-gopy",
            "-rendezvous",
            "-pid",
            "-test",
            "-help",
        ] {
            assert!(u.contains(f), "{f} missing from usage");
        }
        assert!(u.contains("4001"));
    }
}
