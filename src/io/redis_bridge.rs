//! The Redis adapter: pigeon's only link to Slips.
//!
//! Slips and its pigeon talk through two pub/sub channels of Slips' main
//! Redis: Slips publishes on `p2p_pygo`, pigeon publishes on `p2p_gopy`, and
//! pigeon writes one key, `multiAddress`, that Slips reads once about two
//! seconds after starting it (slips-contract §1.3-1.4). This module is only
//! that transport: it never looks inside a message.
//!
//! # Why it is built this way
//!
//! * **Redis may be down at any time, for any length of time.** Nothing here
//!   is fatal after [`start`] has accepted the settings: it returns at once,
//!   a supervisor task connects in the background, and everything queued
//!   before that is delivered once Redis answers.
//! * **redis 1.8 does not reconnect pub/sub by itself** (rust-notes §1.3):
//!   `aio::PubSub` never reconnects, and `ConnectionManager` reconnects and
//!   resubscribes only with RESP3, a push sender and automatic
//!   resubscription, and even then gives up once its retry budget (~12 s) is
//!   spent unless a command re-arms it. So the supervisor PINGs every second
//!   through the manager, and rebuilds the manager from scratch when it stays
//!   down for a long time or fails for a non-I/O reason (wrong password).
//! * **Pub/sub has no backlog.** A message published while Slips is not
//!   subscribed is lost, so messages for Slips go through a bounded,
//!   in-order outbox. A message leaves the outbox only when `PUBLISH`
//!   reports at least one receiver; while nobody listens on the channel
//!   (Redis just restarted and Slips has not resubscribed yet) messages are
//!   held. The Go Pigeon published and forgot; holding is deliberate. When
//!   the outbox is full the *oldest* message is dropped: recent peer
//!   updates supersede old ones. At most one `peer_update` per peer id
//!   waits in the outbox: a newer one takes the older one's place
//!   ([`BridgeHandle::publish_peer_update`]), so churn of one peer cannot
//!   fill the outbox or Slips' channel.
//! * Delivery is at least once: a `PUBLISH` whose reply is lost (timeout,
//!   connection cut between execution and reply) is sent again.
//! * `localhost` may resolve to `::1` first while Slips' Redis listens on
//!   127.0.0.1 only, so every resolved address is tried in order and the
//!   first that accepts a TCP connection is used (re-resolved whenever the
//!   connection is rebuilt).
//! * The password never appears in logs, errors or `Debug` output.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{
    ConnectionAddr, ErrorKind, IntoConnectionInfo, Msg, ProtocolVersion, PushInfo, PushKind,
    RedisConnectionInfo, RedisError,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use crate::config::RedisConfig;

/// Redis' standard port, used when an address names none (as the Go
/// client does).
pub const DEFAULT_PORT: u16 = 6379;

/// Capacity of the channel of messages from Slips returned by [`start`].
/// Slips publishes a few messages per minute; the bound only matters if the
/// consumer stalls, and then delivery waits (nothing is dropped).
pub const INBOUND_CAPACITY: usize = 1024;

/// How often the supervisor PINGs. Without a command the manager stops
/// reconnecting after ~12 s (rust-notes §1.3).
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// First retry delay of a failed `PUBLISH` or connection attempt.
const RETRY_MIN: Duration = Duration::from_millis(100);
/// Cap of the `PUBLISH` retry delay.
const PUBLISH_RETRY_MAX: Duration = Duration::from_secs(5);
/// Cap of the retry delay while nobody is subscribed to the channel for
/// Slips: short, so messages flow soon after Slips resubscribes.
const NO_SUBSCRIBER_RETRY_MAX: Duration = Duration::from_secs(1);
/// Cap of the delay between attempts to reach a Redis that is down.
const CONNECT_RETRY_MAX: Duration = Duration::from_secs(1);
/// Delay between attempts after an authentication failure (retrying
/// faster cannot help; the server's password must change first).
const AUTH_RETRY: Duration = Duration::from_secs(5);
/// Cap of the manager's own reconnect backoff.
const MANAGER_MAX_DELAY: Duration = Duration::from_secs(5);
/// Timeout of one TCP connection attempt to one address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Timeout of a reply on an established connection. Slips keeps its Redis
/// busy, so this is generous: a timeout may cause a duplicate `PUBLISH`.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Outer bound on any command, including the wait for a reconnection in
/// progress.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// Outer bound on building a connection manager once the server answered.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// Repeated log lines (attempts, drops) appear at most this often.
const LOG_INTERVAL: Duration = Duration::from_secs(5);
/// A connection down this long is rebuilt from scratch (re-resolving the
/// host), in case the manager is stuck.
const REBUILD_AFTER_DOWN: Duration = Duration::from_secs(30);
/// Consecutive non-I/O health-check failures (e.g. the server now wants a
/// different password) after which the manager is rebuilt: the manager
/// only reconnects by itself after I/O errors.
const REBUILD_AFTER_FAILURES: u32 = 3;

/// Why the bridge could not be set up. Only configuration problems are
/// errors: an unreachable or misbehaving Redis never is (see [`start`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// The Redis address cannot be understood. The address in the error
    /// has any password replaced by `***`.
    #[error("invalid Redis address {address:?}: {reason}")]
    InvalidAddress {
        /// The address as given, password redacted.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The Redis auth file exists but cannot be read.
    #[error("cannot read the Redis auth file {}: {source}", path.display())]
    AuthFileRead {
        /// The file, as resolved against the working directory.
        path: PathBuf,
        /// The read error.
        source: std::io::Error,
    },
    /// The Redis auth file has a shape we do not understand; guessing could
    /// send the wrong secret, so it is an error.
    #[error("Redis auth file {}: {reason}", path.display())]
    AuthFileFormat {
        /// The file, as resolved against the working directory.
        path: PathBuf,
        /// What is wrong with it (never contains the file's contents).
        reason: String,
    },
    /// A setting is unusable (empty channel name, zero outbox capacity…).
    #[error("invalid Redis bridge setting: {0}")]
    InvalidSetting(String),
}

/// Where Redis listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A TCP server. `host` is a name or an IP literal (IPv6 without
    /// brackets); a name is resolved at every (re)connection.
    Tcp {
        /// Host name or IP address.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A Unix domain socket (absolute path).
    Unix(PathBuf),
}

/// A parsed Redis address: where to connect and how to log in.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// Where Redis listens.
    pub endpoint: Endpoint,
    /// Database selected after connecting (`SELECT`); 0 unless the address
    /// says otherwise. Pub/sub ignores it; `multiAddress` lives there.
    pub db: i64,
    /// ACL user name from the address, if any (`redis://user:pw@…`).
    pub username: Option<String>,
    /// Password from the address, if any. Never printed.
    pub password: Option<String>,
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTarget")
            .field("endpoint", &self.endpoint)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl fmt::Display for RedisTarget {
    /// A loggable form without credentials: `host:port/db` or
    /// `unix:/path?db=N`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.endpoint {
            Endpoint::Tcp { host, port } if host.contains(':') => {
                write!(f, "[{host}]:{port}/{}", self.db)
            }
            Endpoint::Tcp { host, port } => write!(f, "{host}:{port}/{}", self.db),
            Endpoint::Unix(path) => write!(f, "unix:{}?db={}", path.display(), self.db),
        }
    }
}

/// Everything the bridge needs, already resolved from the configuration.
#[derive(Clone)]
pub struct RedisSettings {
    /// Redis address, any form [`parse_address`] accepts (Go flag
    /// `--redis-db`).
    pub address: String,
    /// Password for `AUTH`, overriding one in `address`. `None`: the one in
    /// `address`, if any, else no authentication.
    pub password: Option<String>,
    /// Channel Slips publishes on and pigeon subscribes to.
    pub channel_pygo: String,
    /// Channel pigeon publishes on for Slips.
    pub channel_gopy: String,
    /// Messages for Slips kept while they cannot be delivered; beyond this
    /// the oldest are dropped and counted.
    pub outbox_capacity: usize,
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("address", &redact_address(&self.address))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("channel_pygo", &self.channel_pygo)
            .field("channel_gopy", &self.channel_gopy)
            .field("outbox_capacity", &self.outbox_capacity)
            .finish()
    }
}

impl RedisSettings {
    /// Builds the settings from `[redis]` of `pigeon.toml` (plus flags).
    ///
    /// The password is, in order of precedence: `cfg.password` if not
    /// empty; the password inside `cfg.address` (`redis://:pw@host`); the
    /// password in `cfg.redis_auth_file`, resolved against `base_dir` (the
    /// working directory; Slips runs pigeon in
    /// `<slips>/<permanent>/p2p_trust_runtime`, so the default
    /// `../redis_auth.conf` is Slips' `permanent/redis_auth.conf`,
    /// audit finding SLP-006). A missing auth file means no password;
    /// an unreadable or malformed one is an error. See [`parse_auth_file`]
    /// for the accepted file formats.
    pub fn from_config(cfg: &RedisConfig, base_dir: &Path) -> Result<Self, BridgeError> {
        let target = parse_address(&cfg.address)?;
        let password = if !cfg.password.is_empty() {
            Some(cfg.password.clone())
        } else if target.password.is_some() || cfg.redis_auth_file.as_os_str().is_empty() {
            None
        } else {
            read_auth_file(&base_dir.join(&cfg.redis_auth_file))?
        };
        Ok(Self {
            address: cfg.address.clone(),
            password,
            channel_pygo: cfg.channel_pygo.clone(),
            channel_gopy: cfg.channel_gopy.clone(),
            outbox_capacity: cfg.outbox_capacity,
        })
    }
}

/// Reads a Redis auth file. A file that does not exist means "no
/// password" (Redis servers started before SLP-006 have none).
fn read_auth_file(path: &Path) -> Result<Option<String>, BridgeError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_auth_file(&text).map_err(|reason| BridgeError::AuthFileFormat {
            path: path.to_path_buf(),
            reason,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(BridgeError::AuthFileRead {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Extracts the password from the contents of Slips' `redis_auth.conf`.
///
/// Slips does not document the format (SLP-006), so these are accepted:
///
/// * blank lines and lines starting with `#` are ignored, and every line
///   is trimmed of surrounding whitespace;
/// * `requirepass <password>` (redis.conf syntax), `password=<password>`
///   or `password: <password>` (keys case-insensitive, spaces around `=`
///   and `:` allowed); the value may be wrapped in one pair of `"` or `'`,
///   which are removed (no escape sequences). If several such lines
///   exist, the last wins, as in redis.conf, and other lines are ignored;
/// * otherwise, a file with exactly one line: that whole line is the
///   password, taken literally (quotes kept).
///
/// An empty value or a file with nothing but blanks and comments means no
/// password (`Ok(None)`). Several lines without any of the keyed forms are
/// an error rather than a guess. The error text never contains the file's
/// contents.
pub fn parse_auth_file(text: &str) -> Result<Option<String>, String> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    let mut keyed = None;
    for line in &lines {
        if let Some(value) = keyed_password(line) {
            keyed = Some(value);
        }
    }
    if let Some(value) = keyed {
        return Ok(Some(value).filter(|v| !v.is_empty()));
    }
    match lines.as_slice() {
        [] => Ok(None),
        [single] => Ok(Some((*single).to_owned())),
        more => Err(format!(
            "{} non-comment lines and none of the form `requirepass <password>`, \
             `password=<password>` or `password: <password>`",
            more.len()
        )),
    }
}

/// The value of a `requirepass x` / `password=x` / `password: x` line.
fn keyed_password(line: &str) -> Option<String> {
    if let Some(rest) = strip_prefix_ignore_case(line, "requirepass") {
        if rest.is_empty() {
            return Some(String::new());
        }
        if rest.starts_with(char::is_whitespace) {
            return Some(unquote(rest.trim()).to_owned());
        }
    }
    if let Some(rest) = strip_prefix_ignore_case(line, "password") {
        let rest = rest.trim_start();
        if let Some(value) = rest.strip_prefix('=').or_else(|| rest.strip_prefix(':')) {
            return Some(unquote(value.trim()).to_owned());
        }
    }
    None
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Removes one pair of matching surrounding quotes.
fn unquote(s: &str) -> &str {
    for quote in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(quote) && s.ends_with(quote) {
            return &s[1..s.len() - 1];
        }
    }
    s
}

/// Parses a Redis address in any form Slips or a user may give.
///
/// * Go style (what Slips passes to `--redis-db`): `host:port`,
///   `[::1]:6379`, `host` alone (port 6379), a bare IPv6 literal (`::1`),
///   `:6379` (local host, like Go's dialer). No credentials, DB 0.
/// * `redis://[[user]:password@]host[:port][/db][?db=N&protocol=resp3]`
///   (also `valkey://`); user and password are percent-decoded.
/// * `unix:///path/to/sock` or `redis+unix:///path` (also
///   `valkey+unix://`) with optional `?db=N&user=U&pass=P` (`password=`
///   accepted too).
///
/// `0.0.0.0` and `::` (listen addresses) mean the local host, as for Go's
/// dialer on Linux, and become `127.0.0.1` and `::1`. TLS (`rediss://`) is
/// rejected: Slips' Redis is local and plain TCP. `protocol` may only be
/// RESP3 (`3`/`resp3`), which pigeon always uses: reconnecting pub/sub
/// needs it. Other query keys are rejected rather than ignored.
pub fn parse_address(s: &str) -> Result<RedisTarget, BridgeError> {
    let input = s.trim();
    let fail = |reason: String| BridgeError::InvalidAddress {
        address: redact_address(input),
        reason,
    };
    if input.is_empty() {
        return Err(fail("the address is empty".into()));
    }
    let Some((scheme, rest)) = input.split_once("://") else {
        let (host, port) = parse_host_port(input, true).map_err(fail)?;
        return Ok(RedisTarget {
            endpoint: Endpoint::Tcp { host, port },
            db: 0,
            username: None,
            password: None,
        });
    };
    match scheme.to_ascii_lowercase().as_str() {
        "redis" | "valkey" => parse_tcp_url(rest).map_err(fail),
        "rediss" | "valkeys" => Err(fail(
            "TLS (rediss://) is not supported: Slips' Redis is local and plain TCP; \
             use redis://host:port"
                .into(),
        )),
        "unix" | "redis+unix" | "valkey+unix" => parse_unix_url(rest).map_err(fail),
        other => Err(fail(format!(
            "unknown scheme {other:?}; expected host:port, redis://, or unix://"
        ))),
    }
}

/// `host[:port]`, `[v6][:port]` or a bare IPv6 literal.
fn parse_host_port(s: &str, allow_empty_host: bool) -> Result<(String, u16), String> {
    let (host, port) = if let Some(inner) = s.strip_prefix('[') {
        let (v6, after) = inner
            .split_once(']')
            .ok_or("missing `]` after an IPv6 address")?;
        v6.parse::<Ipv6Addr>()
            .map_err(|_| format!("{v6:?} between brackets is not an IPv6 address"))?;
        let port = match after {
            "" => DEFAULT_PORT,
            _ => parse_port(after.strip_prefix(':').ok_or("unexpected text after `]`")?)?,
        };
        (v6.to_owned(), port)
    } else if s.parse::<Ipv6Addr>().is_ok() {
        (s.to_owned(), DEFAULT_PORT)
    } else if let Some((host, port)) = s.rsplit_once(':') {
        if host.contains(':') {
            return Err("an IPv6 address with a port must be written [address]:port".into());
        }
        (host.to_owned(), parse_port(port)?)
    } else {
        (s.to_owned(), DEFAULT_PORT)
    };
    if host.is_empty() {
        if !allow_empty_host {
            return Err("the host is missing".into());
        }
        return Ok(("localhost".to_owned(), port));
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '/' | '@' | '?' | '#' | '[' | ']'))
    {
        return Err(format!("{host:?} is not a host name"));
    }
    let host = match host.parse::<IpAddr>() {
        Ok(ip) if ip == IpAddr::V4(Ipv4Addr::UNSPECIFIED) => Ipv4Addr::LOCALHOST.to_string(),
        Ok(ip) if ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED) => Ipv6Addr::LOCALHOST.to_string(),
        _ => host,
    };
    Ok((host, port))
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{s:?} is not a TCP port (1-65535)")),
        Ok(port) => Ok(port),
    }
}

fn parse_db(s: &str) -> Result<i64, String> {
    s.parse::<i64>()
        .ok()
        .filter(|db| *db >= 0)
        .ok_or_else(|| format!("{s:?} is not a database number"))
}

/// Credentials and DB from the query of a URL.
#[derive(Default)]
struct UrlQuery {
    /// `db=N`, to compare with a DB in the path.
    db: Option<i64>,
    /// `user=` of a Unix socket URL.
    username: Option<String>,
    /// `pass=` of a Unix socket URL.
    password: Option<String>,
}

fn parse_query(query: Option<&str>, allow_credentials: bool) -> Result<UrlQuery, String> {
    let mut out = UrlQuery::default();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value)?;
        match key {
            "db" => out.db = Some(parse_db(&value)?),
            "protocol" => {
                if !matches!(value.to_ascii_lowercase().as_str(), "3" | "resp3") {
                    return Err("pigeon always uses RESP3 (protocol=resp3): reconnecting \
                         pub/sub needs it"
                        .into());
                }
            }
            "user" | "username" if allow_credentials => {
                out.username = Some(value).filter(|v| !v.is_empty());
            }
            "pass" | "password" if allow_credentials => {
                out.password = Some(value).filter(|v| !v.is_empty());
            }
            other => return Err(format!("unsupported query parameter {other:?}")),
        }
    }
    Ok(out)
}

/// The part of `redis://…` after the scheme.
fn parse_tcp_url(rest: &str) -> Result<RedisTarget, String> {
    if rest.contains('#') {
        return Err("URL fragments (#…) are not supported".into());
    }
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((authority, path)) => (authority, path),
        None => (before_query, ""),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => (Some(userinfo), hostport),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(info) => {
            let (user, pass) = match info.split_once(':') {
                Some((user, pass)) => (user, Some(pass)),
                None => (info, None),
            };
            let user = Some(percent_decode(user)?).filter(|u| !u.is_empty());
            let pass = match pass {
                Some(pass) => Some(percent_decode(pass)?).filter(|p| !p.is_empty()),
                None => None,
            };
            (user, pass)
        }
    };
    let (host, port) = parse_host_port(hostport, false)?;
    let path = path.trim_matches('/');
    let path_db = if path.is_empty() {
        None
    } else {
        Some(parse_db(path)?)
    };
    let query = parse_query(query, false)?;
    let db = match (path_db, query.db) {
        (Some(a), Some(b)) if a != b => {
            return Err(format!("database {a} in the path but {b} in the query"));
        }
        (a, b) => a.or(b).unwrap_or(0),
    };
    Ok(RedisTarget {
        endpoint: Endpoint::Tcp { host, port },
        db,
        username,
        password,
    })
}

/// The part of `unix://…` after the scheme: `/path[?query]`.
fn parse_unix_url(rest: &str) -> Result<RedisTarget, String> {
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    let path = percent_decode(path)?;
    if !path.starts_with('/') || path.len() < 2 {
        return Err("a Unix socket needs an absolute path: unix:///path/to/redis.sock".into());
    }
    let query = parse_query(query, true)?;
    Ok(RedisTarget {
        endpoint: Endpoint::Unix(PathBuf::from(path)),
        db: query.db.unwrap_or(0),
        username: query.username,
        password: query.password,
    })
}

/// Decodes `%XX` escapes (UTF-8 result required).
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("invalid %-escape")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a %-escaped value is not UTF-8".to_owned())
}

/// The address with any credentials replaced by `***`, for messages.
fn redact_address(address: &str) -> String {
    let Some((scheme, rest)) = address.split_once("://") else {
        return address.to_owned();
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let authority_end = before_query.find('/').unwrap_or(before_query.len());
    let (authority, path) = before_query.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((_, hostport)) => format!("***@{hostport}"),
        None => authority.to_owned(),
    };
    let mut out = format!("{scheme}://{authority}{path}");
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if matches!(key, "pass" | "password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

/// A snapshot of the bridge's counters, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BridgeStats {
    /// Messages for Slips delivered (`PUBLISH` with at least one receiver).
    pub published: u64,
    /// Messages for Slips dropped because the outbox was full.
    pub dropped_outbox: u64,
    /// Pending `peer_update`s replaced by a newer one for the same peer.
    pub superseded_peer_updates: u64,
    /// Times the connection came back after being lost (the first
    /// connection is not counted).
    pub reconnects: u64,
    /// Whether Redis currently answers and pigeon is subscribed.
    pub connected: bool,
    /// Messages for Slips waiting for delivery.
    pub outbox_len: usize,
    /// Messages from Slips passed to the receiver.
    pub received: u64,
    /// Messages from Slips dropped because they are not UTF-8.
    pub dropped_non_utf8: u64,
    /// Why the last connection attempt or health check failed, while the
    /// bridge is not connected (e.g. a wrong password); `None` once
    /// connected. Never contains the password.
    pub last_error: Option<String>,
}

/// A cheap, cloneable handle to the running bridge.
///
/// Dropping the last handle stops the bridge's tasks (call
/// [`BridgeHandle::flush`] first to deliver what is queued).
#[derive(Clone)]
pub struct BridgeHandle {
    /// Shared state, plus the shutdown signal that fires when the last
    /// handle is dropped.
    inner: Arc<HandleInner>,
}

impl fmt::Debug for BridgeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeHandle")
            .field("stats", &self.stats())
            .finish()
    }
}

/// Owned by the handles only; its drop is the tasks' shutdown signal.
struct HandleInner {
    /// What the handle methods act on.
    shared: Arc<Shared>,
    /// Never sent on: dropping it makes the tasks' `changed()` fail.
    _shutdown: watch::Sender<()>,
}

impl BridgeHandle {
    /// Queues `payload` for `channel_gopy`. Never blocks and never fails:
    /// if the outbox is full, the oldest queued message is dropped and
    /// counted (warned about at most every 5 s).
    pub fn publish(&self, payload: String) {
        self.enqueue(payload, None);
    }

    /// Queues a `peer_update` about `peer_id`: if one about the same peer
    /// is still waiting, this one replaces it (in its place in the queue);
    /// else as [`Self::publish`].
    pub fn publish_peer_update(&self, peer_id: &str, payload: String) {
        self.enqueue(payload, Some(peer_id));
    }

    fn enqueue(&self, payload: String, peer: Option<&str>) {
        let shared = &self.inner.shared;
        let pushed = shared.outbox().push_keyed(payload, peer);
        match pushed {
            Pushed::DroppedOldest => {
                shared.dropped_outbox.fetch_add(1, Ordering::Relaxed);
            }
            Pushed::Replaced => {
                shared.superseded.fetch_add(1, Ordering::Relaxed);
            }
            Pushed::Appended => {}
        }
        shared.outbox_changed.notify_one();
    }

    /// Sets `key` to `value` in the selected DB now if connected, else as
    /// soon as Redis answers, and again after every reconnection (Redis may
    /// have restarted empty). Used for `multiAddress`, which Slips reads
    /// about 2 s after starting pigeon.
    pub fn set(&self, key: String, value: String) {
        let shared = &self.inner.shared;
        {
            let mut keys = shared.keys();
            keys.deletes.remove(&key);
            keys.values.insert(key, value);
            keys.version += 1;
        }
        shared.keys_changed.notify_one();
    }

    /// Deletes `keys` once, as soon as Redis answers, and stops re-applying
    /// them. This is the Go flag `-redis-delete` ("delete the pigeon's keys
    /// at start"): the runtime passes `multiAddress` before setting it
    /// again. Deletes are applied before sets.
    pub fn delete(&self, keys: impl IntoIterator<Item = String>) {
        let shared = &self.inner.shared;
        {
            let mut state = shared.keys();
            for key in keys {
                state.values.remove(&key);
                state.deletes.insert(key);
            }
            state.version += 1;
        }
        shared.keys_changed.notify_one();
    }

    /// Current counters and connection state.
    pub fn stats(&self) -> BridgeStats {
        let shared = &self.inner.shared;
        BridgeStats {
            published: shared.published.load(Ordering::Relaxed),
            dropped_outbox: shared.dropped_outbox.load(Ordering::Relaxed),
            superseded_peer_updates: shared.superseded.load(Ordering::Relaxed),
            reconnects: shared.reconnects.load(Ordering::Relaxed),
            connected: shared.conn.borrow().is_some(),
            outbox_len: shared.outbox().queue.len(),
            received: shared.received.load(Ordering::Relaxed),
            dropped_non_utf8: shared.dropped_non_utf8.load(Ordering::Relaxed),
            last_error: shared.last_error(),
        }
    }

    /// Waits until every queued message has been delivered, or `deadline`
    /// has passed. Returns whether the outbox is empty. Used at shutdown.
    pub async fn flush(&self, deadline: Duration) -> bool {
        let shared = &self.inner.shared;
        let end = Instant::now() + deadline;
        loop {
            let drained = shared.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if shared.outbox().queue.is_empty() {
                return true;
            }
            if tokio::time::timeout_at(end, drained).await.is_err() {
                return shared.outbox().queue.is_empty();
            }
        }
    }
}

impl BridgeHandle {
    /// A read-only view of the bridge for the operator view: it
    /// does not keep the bridge running, unlike a handle.
    pub fn probe(&self) -> BridgeProbe {
        BridgeProbe {
            shared: Arc::clone(&self.inner.shared),
        }
    }
}

/// Asks the bridge's state and Redis itself, for `pigeon status` and the
/// metrics (see [`BridgeHandle::probe`]).
#[derive(Clone)]
pub struct BridgeProbe {
    shared: Arc<Shared>,
}

impl fmt::Debug for BridgeProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeProbe").finish_non_exhaustive()
    }
}

impl BridgeProbe {
    /// Subscribers of `channel_gopy` right now (`PUBSUB NUMSUB`): at least
    /// 1 while Slips listens. `None` if Redis is not connected or does not
    /// answer within the command timeout.
    pub async fn gopy_subscribers(&self) -> Option<u64> {
        let mut manager = self.shared.conn.borrow().clone()?;
        let reply = bounded(
            "PUBSUB NUMSUB",
            redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&self.shared.channel_gopy)
                .query_async::<Vec<(String, u64)>>(&mut manager),
        )
        .await;
        match reply {
            Ok(pairs) => pairs.into_iter().next().map(|(_, n)| n),
            Err(e) => {
                debug!(error = %e, "PUBSUB NUMSUB failed");
                None
            }
        }
    }

    /// The channel Slips listens on.
    pub fn channel_gopy(&self) -> &str {
        &self.shared.channel_gopy
    }
}

/// Starts the bridge and returns its handle and the messages Slips
/// publishes on `channel_pygo`.
///
/// Must be called inside a tokio runtime. Returns at once: connecting,
/// subscribing and reconnecting happen in background tasks, for as long as
/// a handle exists, whether Redis is up now, later, or goes away for a
/// while. Only unusable settings are errors: an unparsable address, empty
/// or identical channel names, a zero outbox capacity.
///
/// The receiver yields each payload as a `String`; payloads that are not
/// UTF-8 are dropped and counted. It ends when the bridge stops.
pub async fn start(
    settings: RedisSettings,
) -> Result<(BridgeHandle, mpsc::Receiver<String>), BridgeError> {
    let target = parse_address(&settings.address)?;
    if settings.channel_pygo.is_empty() || settings.channel_gopy.is_empty() {
        return Err(BridgeError::InvalidSetting(
            "channel names must not be empty".into(),
        ));
    }
    if settings.channel_pygo == settings.channel_gopy {
        return Err(BridgeError::InvalidSetting(
            "channel_pygo and channel_gopy must differ (pigeon would read its own messages)".into(),
        ));
    }
    if settings.outbox_capacity == 0 {
        return Err(BridgeError::InvalidSetting(
            "outbox_capacity must be at least 1".into(),
        ));
    }
    let password = settings
        .password
        .clone()
        .or_else(|| target.password.clone());
    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_CAPACITY);
    let (shutdown_tx, shutdown_rx) = watch::channel(());
    let shared = Arc::new(Shared {
        channel_pygo: settings.channel_pygo,
        channel_gopy: settings.channel_gopy,
        outbox: Mutex::new(Outbox::new(settings.outbox_capacity)),
        outbox_changed: Notify::new(),
        drained: Notify::new(),
        keys: Mutex::new(KeyState::default()),
        keys_changed: Notify::new(),
        conn: watch::Sender::new(None),
        last_error: Mutex::new(None),
        published: AtomicU64::new(0),
        dropped_outbox: AtomicU64::new(0),
        superseded: AtomicU64::new(0),
        reconnects: AtomicU64::new(0),
        received: AtomicU64::new(0),
        dropped_non_utf8: AtomicU64::new(0),
    });
    info!(
        redis = %target,
        pygo = %shared.channel_pygo,
        gopy = %shared.channel_gopy,
        auth = password.is_some(),
        "starting the Redis bridge"
    );
    tokio::spawn(supervise(
        Arc::clone(&shared),
        target,
        password,
        inbound_tx,
        shutdown_rx.clone(),
    ));
    tokio::spawn(deliver(Arc::clone(&shared), shutdown_rx));
    let handle = BridgeHandle {
        inner: Arc::new(HandleInner {
            shared,
            _shutdown: shutdown_tx,
        }),
    };
    Ok((handle, inbound_rx))
}

/// State shared by the handles and the background tasks.
struct Shared {
    /// Channel subscribed to (Slips → pigeon).
    channel_pygo: String,
    /// Channel published on (pigeon → Slips).
    channel_gopy: String,
    /// Messages for Slips not yet delivered. A std mutex: `publish` must
    /// not block or await, and the critical sections are tiny.
    outbox: Mutex<Outbox>,
    /// Signalled on every `publish` (wakes the delivery task).
    outbox_changed: Notify,
    /// Signalled whenever a message leaves the outbox (wakes `flush`).
    drained: Notify,
    /// Keys to maintain in Redis.
    keys: Mutex<KeyState>,
    /// Signalled on every `set`/`delete` (wakes the supervisor).
    keys_changed: Notify,
    /// The usable connection: `Some` exactly while connected and
    /// subscribed. The delivery task waits on it.
    conn: watch::Sender<Option<ConnectionManager>>,
    /// See [`BridgeStats::last_error`].
    last_error: Mutex<Option<String>>,
    /// See [`BridgeStats::published`].
    published: AtomicU64,
    /// See [`BridgeStats::dropped_outbox`].
    dropped_outbox: AtomicU64,
    /// See [`BridgeStats::superseded_peer_updates`].
    superseded: AtomicU64,
    /// See [`BridgeStats::reconnects`].
    reconnects: AtomicU64,
    /// See [`BridgeStats::received`].
    received: AtomicU64,
    /// See [`BridgeStats::dropped_non_utf8`].
    dropped_non_utf8: AtomicU64,
}

impl Shared {
    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn keys(&self) -> MutexGuard<'_, KeyState> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_last_error(&self, error: Option<String>) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = error;
    }

    /// The oldest queued message, without removing it: `(seq, revision,
    /// payload)`.
    fn head(&self) -> Option<(u64, u64, String)> {
        self.outbox()
            .queue
            .front()
            .map(|e| (e.seq, e.rev, e.payload.clone()))
    }

    /// Waits for a message to deliver.
    async fn next_outgoing(&self) -> (u64, u64, String) {
        loop {
            if let Some(head) = self.head() {
                return head;
            }
            self.outbox_changed.notified().await;
        }
    }

    /// Removes message `seq` after delivery of its revision `rev`, unless
    /// overflow already dropped it or a newer `peer_update` replaced it
    /// while the `PUBLISH` was in flight (the newer one is then delivered
    /// next).
    fn delivered(&self, seq: u64, rev: u64) {
        self.outbox().delivered(seq, rev);
        self.published.fetch_add(1, Ordering::Relaxed);
        self.drained.notify_waiters();
    }
}

/// One message waiting for Slips.
struct Entry {
    /// Position: consecutive from the head of the queue.
    seq: u64,
    /// Changes when a newer `peer_update` replaces the payload.
    rev: u64,
    payload: String,
    /// The peer a `peer_update` is about.
    peer: Option<String>,
}

/// What [`Outbox::push_keyed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pushed {
    /// Queued at the end.
    Appended,
    /// Queued at the end; the oldest message was dropped to make room.
    DroppedOldest,
    /// Replaced the pending `peer_update` about the same peer.
    Replaced,
}

/// The bounded queue of messages for Slips.
struct Outbox {
    /// Messages with consecutive sequence numbers, oldest first (only the
    /// head is ever removed, so `seq - head.seq` is an index).
    queue: VecDeque<Entry>,
    /// Sequence number of the next message: lets the delivery task tell
    /// whether the head it published is still the head (overflow may have
    /// dropped it meanwhile).
    next_seq: u64,
    /// Revision of the next payload written.
    next_rev: u64,
    /// The queued `peer_update` of each peer: peer id -> seq. At most
    /// `capacity` entries.
    pending_updates: HashMap<String, u64>,
    /// Most messages kept.
    capacity: usize,
    /// Drops not yet reported in a log line.
    unreported_drops: u64,
    /// Limits the "outbox full" warning.
    drop_log: RateLimit,
}

impl Outbox {
    fn new(capacity: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            next_seq: 0,
            next_rev: 0,
            pending_updates: HashMap::new(),
            capacity,
            unreported_drops: 0,
            drop_log: RateLimit::new(LOG_INTERVAL),
        }
    }

    /// Appends a message; returns whether the oldest had to be dropped.
    #[cfg(test)]
    fn push(&mut self, payload: String) -> bool {
        self.push_keyed(payload, None) == Pushed::DroppedOldest
    }

    /// Queues a message; a `peer_update` about `peer` replaces the one
    /// still queued about the same peer, in its place.
    fn push_keyed(&mut self, payload: String, peer: Option<&str>) -> Pushed {
        let rev = self.next_rev;
        self.next_rev += 1;
        if let Some(peer) = peer
            && let Some(&seq) = self.pending_updates.get(peer)
            && let Some(entry) = self.entry_mut(seq)
        {
            entry.payload = payload;
            entry.rev = rev;
            return Pushed::Replaced;
        }
        let mut dropped = false;
        while self.queue.len() >= self.capacity {
            self.pop_head();
            self.unreported_drops += 1;
            dropped = true;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(peer) = peer {
            self.pending_updates.insert(peer.to_owned(), seq);
        }
        self.queue.push_back(Entry {
            seq,
            rev,
            payload,
            peer: peer.map(str::to_owned),
        });
        if dropped && self.drop_log.ready() {
            warn!(
                dropped = self.unreported_drops,
                capacity = self.capacity,
                "outbox for Slips full (Redis unreachable or nobody subscribed): \
                 dropped the oldest messages"
            );
            self.unreported_drops = 0;
        }
        if dropped {
            Pushed::DroppedOldest
        } else {
            Pushed::Appended
        }
    }

    fn entry_mut(&mut self, seq: u64) -> Option<&mut Entry> {
        let head = self.queue.front()?.seq;
        let index = usize::try_from(seq.checked_sub(head)?).ok()?;
        self.queue.get_mut(index).filter(|e| e.seq == seq)
    }

    fn pop_head(&mut self) {
        if let Some(e) = self.queue.pop_front()
            && let Some(peer) = e.peer
            && self.pending_updates.get(&peer) == Some(&e.seq)
        {
            self.pending_updates.remove(&peer);
        }
    }

    /// See [`Shared::delivered`].
    fn delivered(&mut self, seq: u64, rev: u64) {
        if self
            .queue
            .front()
            .is_some_and(|e| e.seq == seq && e.rev == rev)
        {
            self.pop_head();
        }
    }
}

/// Keys pigeon maintains in Redis.
#[derive(Default)]
struct KeyState {
    /// Keys to (re)set after every connection.
    values: BTreeMap<String, String>,
    /// Keys to delete once (disjoint from `values`).
    deletes: BTreeSet<String>,
    /// Bumped on every change.
    version: u64,
    /// `version` last written to Redis successfully.
    applied: u64,
}

/// Logs something at most once per interval.
struct RateLimit {
    /// Shortest time between two lines.
    every: Duration,
    /// When the current interval started.
    last: Option<Instant>,
}

impl RateLimit {
    fn new(every: Duration) -> Self {
        Self { every, last: None }
    }

    /// Whether to log now (and if so, starts a new interval).
    fn ready(&mut self) -> bool {
        let now = Instant::now();
        if self
            .last
            .is_none_or(|last| now.duration_since(last) >= self.every)
        {
            self.last = Some(now);
            true
        } else {
            false
        }
    }

    /// Starts a new interval without logging.
    fn mark(&mut self) {
        self.last = Some(Instant::now());
    }
}

/// Exponential backoff, doubling from `min` up to `max`.
struct Backoff {
    /// First delay, and the delay after a success.
    min: Duration,
    /// Cap.
    max: Duration,
    /// Delay to return next.
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Runs `fut` unless the bridge is shut down first (`None`).
async fn until_shutdown<F: Future>(
    shutdown: &mut watch::Receiver<()>,
    fut: F,
) -> Option<F::Output> {
    tokio::select! {
        biased;
        _ = shutdown.changed() => None,
        out = fut => Some(out),
    }
}

/// Why a connection attempt or a command failed.
#[derive(Debug)]
enum LinkError {
    /// No address accepted a connection (message lists each attempt).
    Unreachable(String),
    /// Redis or the client library reported an error.
    Redis(RedisError),
    /// No answer in time.
    TimedOut(&'static str),
}

impl LinkError {
    /// Whether the server refused our credentials.
    fn is_auth(&self) -> bool {
        match self {
            Self::Redis(e) => {
                let text = e.to_string();
                e.kind() == ErrorKind::AuthenticationFailed
                    || text.contains("WRONGPASS")
                    || text.contains("NOAUTH")
            }
            _ => false,
        }
    }

    /// Whether the manager will reconnect by itself after this error.
    fn is_io(&self) -> bool {
        match self {
            Self::Redis(e) => e.is_io_error(),
            Self::Unreachable(_) | Self::TimedOut(_) => true,
        }
    }
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable(why) => write!(f, "unreachable: {why}"),
            Self::Redis(e) if self.is_auth() => write!(
                f,
                "authentication failed ({e}): check the password, or the Redis auth file"
            ),
            Self::Redis(e) => write!(f, "{e}"),
            Self::TimedOut(what) => write!(f, "{what} timed out"),
        }
    }
}

impl From<RedisError> for LinkError {
    fn from(e: RedisError) -> Self {
        Self::Redis(e)
    }
}

/// Runs a Redis future under [`COMMAND_TIMEOUT`].
async fn bounded<T>(
    what: &'static str,
    fut: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, LinkError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
        Ok(result) => result.map_err(LinkError::from),
        Err(_) => Err(LinkError::TimedOut(what)),
    }
}

/// The first address of `endpoint` that accepts a connection: every
/// resolved address of a TCP host is tried in resolver order.
async fn reachable_addr(endpoint: &Endpoint) -> Result<(ConnectionAddr, String), LinkError> {
    match endpoint {
        Endpoint::Unix(path) => match tokio::net::UnixStream::connect(path).await {
            Ok(_) => Ok((
                ConnectionAddr::Unix(path.clone()),
                format!("unix:{}", path.display()),
            )),
            Err(e) => Err(LinkError::Unreachable(format!("{}: {e}", path.display()))),
        },
        Endpoint::Tcp { host, port } => {
            let candidates: Vec<SocketAddr> = match host.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, *port)],
                Err(_) => {
                    let mut found = Vec::new();
                    let resolved = tokio::net::lookup_host((host.as_str(), *port))
                        .await
                        .map_err(|e| {
                            LinkError::Unreachable(format!("cannot resolve {host:?}: {e}"))
                        })?;
                    for addr in resolved {
                        if !found.contains(&addr) {
                            found.push(addr);
                        }
                    }
                    found
                }
            };
            let mut failures = Vec::new();
            for addr in &candidates {
                match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
                    .await
                {
                    Ok(Ok(_)) => {
                        return Ok((
                            ConnectionAddr::Tcp(addr.ip().to_string(), addr.port()),
                            addr.to_string(),
                        ));
                    }
                    Ok(Err(e)) => failures.push(format!("{addr}: {e}")),
                    Err(_) => failures.push(format!("{addr}: connection timed out")),
                }
            }
            if failures.is_empty() {
                failures.push(format!("{host:?} resolved to no address"));
            }
            Err(LinkError::Unreachable(failures.join("; ")))
        }
    }
}

/// A freshly connected and subscribed manager.
struct Established {
    /// The reconnecting connection (RESP3, automatic resubscription).
    manager: ConnectionManager,
    /// Push messages of this manager (pub/sub messages, disconnections).
    pushes: mpsc::UnboundedReceiver<PushInfo>,
    /// The address actually used, for logs.
    peer: String,
}

/// A plain (non-pub/sub) connection to `target`, trying every resolved
/// address as the bridge does; for other readers of Slips' Redis (the
/// request guard's cache reads). The error text never holds the password.
pub(crate) async fn plain_connection(
    target: &RedisTarget,
    password: Option<&str>,
) -> Result<redis::aio::MultiplexedConnection, String> {
    let open = async {
        let (addr, _) = reachable_addr(&target.endpoint).await?;
        let mut redis_info = RedisConnectionInfo::default().set_db(target.db);
        if let Some(user) = &target.username {
            redis_info = redis_info.set_username(user);
        }
        if let Some(password) = password {
            redis_info = redis_info.set_password(password);
        }
        let info = addr.into_connection_info()?.set_redis_settings(redis_info);
        let client = redis::Client::open(info)?;
        bounded("connect", client.get_multiplexed_async_connection()).await
    };
    open.await.map_err(|e: LinkError| e.to_string())
}

/// Connects to Redis, builds a reconnecting manager and subscribes.
async fn establish(
    target: &RedisTarget,
    password: Option<&str>,
    channel_pygo: &str,
) -> Result<Established, LinkError> {
    let (addr, peer) = reachable_addr(&target.endpoint).await?;
    let mut redis_info = RedisConnectionInfo::default()
        .set_db(target.db)
        .set_protocol(ProtocolVersion::RESP3);
    if let Some(user) = &target.username {
        redis_info = redis_info.set_username(user);
    }
    if let Some(password) = password {
        redis_info = redis_info.set_password(password);
    }
    let info = addr.into_connection_info()?.set_redis_settings(redis_info);
    let client = redis::Client::open(info)?;
    // One plain handshake first: the manager retries a failed handshake
    // (wrong password, server still loading) for many seconds before
    // reporting it; this reports it at once.
    drop(bounded("handshake", client.get_multiplexed_async_connection()).await?);
    let (push_tx, pushes) = mpsc::unbounded_channel();
    let config = ConnectionManagerConfig::new()
        .set_push_sender(push_tx)
        .set_automatic_resubscription()
        .set_max_delay(MANAGER_MAX_DELAY)
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    let mut manager = match tokio::time::timeout(
        ESTABLISH_TIMEOUT,
        ConnectionManager::new_with_config(client, config),
    )
    .await
    {
        Ok(result) => result?,
        Err(_) => return Err(LinkError::TimedOut("connection")),
    };
    bounded("SUBSCRIBE", manager.subscribe(channel_pygo)).await?;
    Ok(Established {
        manager,
        pushes,
        peer,
    })
}

/// Clears the shared connection when the supervisor ends, so the manager
/// (and with it the push forwarders) can be dropped.
struct ClearOnExit(Arc<Shared>);

impl Drop for ClearOnExit {
    fn drop(&mut self) {
        self.0.conn.send_replace(None);
    }
}

/// The connection state as the supervisor sees it; logs each transition
/// exactly once.
struct Link {
    /// The configured target, for logs.
    target: String,
    /// Whether we consider the connection usable (mirrors `Shared::conn`).
    up: bool,
    /// Whether it ever was: the next success is then a reconnection.
    ever_up: bool,
    /// When `up` last changed (or the bridge started).
    since: Instant,
    /// Limits "still unreachable" lines while down.
    attempt_log: RateLimit,
}

impl Link {
    fn mark_up(&mut self, shared: &Shared, manager: &ConnectionManager, peer: &str) {
        shared.conn.send_replace(Some(manager.clone()));
        shared.set_last_error(None);
        if self.ever_up {
            shared.reconnects.fetch_add(1, Ordering::Relaxed);
            info!(
                redis = %peer,
                down_for = ?self.since.elapsed(),
                "Redis connection restored; subscribed again"
            );
        } else {
            info!(redis = %peer, "connected to Redis and subscribed");
        }
        self.up = true;
        self.ever_up = true;
        self.since = Instant::now();
    }

    fn mark_down(&mut self, shared: &Shared, why: &str) {
        if !self.up {
            return;
        }
        shared.conn.send_replace(None);
        shared.set_last_error(Some(why.to_owned()));
        warn!(
            redis = %self.target,
            error = %why,
            "Redis connection lost; reconnecting (messages for Slips are kept meanwhile)"
        );
        self.up = false;
        self.since = Instant::now();
        self.attempt_log.mark();
    }

    fn attempt_failed(&mut self, shared: &Shared, error: &LinkError) {
        let why = error.to_string();
        shared.set_last_error(Some(why.clone()));
        if !self.attempt_log.ready() {
            debug!(redis = %self.target, error = %why, "Redis still unreachable");
        } else if self.ever_up {
            warn!(
                redis = %self.target,
                error = %why,
                down_for = ?self.since.elapsed(),
                "Redis still unreachable; retrying"
            );
        } else {
            warn!(
                redis = %self.target,
                error = %why,
                waiting_for = ?self.since.elapsed(),
                "cannot connect to Redis; retrying"
            );
        }
    }
}

/// Connects, watches the connection, resubscribes and re-applies keys, for
/// as long as the bridge runs.
async fn supervise(
    shared: Arc<Shared>,
    target: RedisTarget,
    password: Option<String>,
    inbound: mpsc::Sender<String>,
    mut shutdown: watch::Receiver<()>,
) {
    let _clear = ClearOnExit(Arc::clone(&shared));
    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<u64>();
    let mut generation = 0u64;
    let mut link = Link {
        target: target.to_string(),
        up: false,
        ever_up: false,
        since: Instant::now(),
        attempt_log: RateLimit::new(LOG_INTERVAL),
    };
    let mut retry = Backoff::new(RETRY_MIN, CONNECT_RETRY_MAX);
    let mut key_log = RateLimit::new(LOG_INTERVAL);
    loop {
        let attempt = until_shutdown(
            &mut shutdown,
            establish(&target, password.as_deref(), &shared.channel_pygo),
        )
        .await;
        let Established {
            mut manager,
            pushes,
            peer,
        } = match attempt {
            None => return,
            Some(Ok(established)) => established,
            Some(Err(e)) => {
                link.attempt_failed(&shared, &e);
                let delay = if e.is_auth() {
                    AUTH_RETRY
                } else {
                    retry.next_delay()
                };
                if until_shutdown(&mut shutdown, tokio::time::sleep(delay))
                    .await
                    .is_none()
                {
                    return;
                }
                continue;
            }
        };
        retry.reset();
        generation += 1;
        tokio::spawn(forward_pushes(
            pushes,
            Arc::clone(&shared),
            inbound.clone(),
            events_tx.clone(),
            generation,
        ));
        link.mark_up(&shared, &manager, &peer);
        apply_keys_logged(&shared, &mut manager, true, &mut key_log).await;

        let mut tick = tokio::time::interval(HEALTH_INTERVAL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tick.reset();
        let mut failures = 0u32;
        loop {
            let keys_only = tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => false,
                Some(seen) = events_rx.recv() => {
                    if seen == generation {
                        link.mark_down(&shared, "the connection was closed");
                    }
                    false
                }
                _ = shared.keys_changed.notified() => true,
            };
            if keys_only {
                if link.up {
                    apply_keys_logged(&shared, &mut manager, false, &mut key_log).await;
                }
                continue;
            }
            let health = bounded("PING", redis::cmd("PING").query_async::<()>(&mut manager)).await;
            let health = match health {
                // The connection may have been replaced since we were
                // last up: make sure of the subscription (idempotent).
                Ok(()) if !link.up => {
                    bounded("SUBSCRIBE", manager.subscribe(&shared.channel_pygo)).await
                }
                other => other,
            };
            match health {
                Ok(()) => {
                    failures = 0;
                    let force = !link.up;
                    if !link.up {
                        link.mark_up(&shared, &manager, &peer);
                    }
                    apply_keys_logged(&shared, &mut manager, force, &mut key_log).await;
                }
                Err(e) => {
                    failures += 1;
                    if link.up {
                        link.mark_down(&shared, &e.to_string());
                    } else {
                        link.attempt_failed(&shared, &e);
                    }
                    let stuck = !e.is_io() && failures >= REBUILD_AFTER_FAILURES;
                    let long = link.since.elapsed() >= REBUILD_AFTER_DOWN;
                    if stuck || long {
                        debug!(error = %e, "rebuilding the Redis connection");
                        break;
                    }
                }
            }
        }
        shared.conn.send_replace(None);
    }
}

/// Writes the wanted keys if they changed (or always, with `force`), and
/// logs failures at most every 5 s; failed writes are retried on the next
/// health tick because the key state stays dirty.
async fn apply_keys_logged(
    shared: &Shared,
    manager: &mut ConnectionManager,
    force: bool,
    log: &mut RateLimit,
) {
    if let Err(e) = apply_keys(shared, manager, force).await {
        if log.ready() {
            warn!(error = %e, "cannot write pigeon's keys to Redis; will retry");
        } else {
            debug!(error = %e, "cannot write pigeon's keys to Redis");
        }
    }
}

async fn apply_keys(
    shared: &Shared,
    manager: &mut ConnectionManager,
    force: bool,
) -> Result<(), LinkError> {
    let (pipe, version, commands) = {
        let keys = shared.keys();
        if !force && keys.version == keys.applied {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for key in &keys.deletes {
            pipe.cmd("DEL").arg(key).ignore();
        }
        for (key, value) in &keys.values {
            pipe.cmd("SET").arg(key).arg(value).ignore();
        }
        (pipe, keys.version, keys.deletes.len() + keys.values.len())
    };
    if commands > 0 {
        bounded("SET", pipe.query_async::<()>(manager)).await?;
        debug!(commands, "pigeon's keys written to Redis");
    }
    let mut keys = shared.keys();
    if keys.version == version {
        keys.deletes.clear();
        keys.applied = version;
    }
    Ok(())
}

/// Passes one manager's pub/sub messages to the receiver and reports its
/// disconnections to the supervisor. Ends with the manager.
async fn forward_pushes(
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    shared: Arc<Shared>,
    inbound: mpsc::Sender<String>,
    events: mpsc::UnboundedSender<u64>,
    generation: u64,
) {
    let mut bad_log = RateLimit::new(LOG_INTERVAL);
    let mut receiver_gone = false;
    while let Some(push) = pushes.recv().await {
        match push.kind {
            PushKind::Disconnection => {
                // The supervisor may be gone at shutdown; nothing to do then.
                let _ = events.send(generation);
            }
            PushKind::Message => {
                let Some(msg) = Msg::from_push_info(push) else {
                    continue;
                };
                if msg.get_channel_name() != shared.channel_pygo {
                    debug!(
                        channel = msg.get_channel_name(),
                        "message on another channel"
                    );
                    continue;
                }
                match String::from_utf8(msg.get_payload_bytes().to_vec()) {
                    Ok(text) => {
                        shared.received.fetch_add(1, Ordering::Relaxed);
                        if !receiver_gone && inbound.send(text).await.is_err() {
                            receiver_gone = true;
                            debug!("the receiver of Slips' messages is gone");
                        }
                    }
                    Err(e) => {
                        let total = shared.dropped_non_utf8.fetch_add(1, Ordering::Relaxed) + 1;
                        if bad_log.ready() {
                            warn!(
                                len = e.as_bytes().len(),
                                total, "dropped a message from Slips that is not UTF-8"
                            );
                        }
                    }
                }
            }
            PushKind::Subscribe => debug!(data = ?push.data, "subscription confirmed"),
            _ => {}
        }
    }
}

/// Delivers the outbox in order, one message at a time, whenever
/// connected; a message leaves the outbox only once a `PUBLISH` of it
/// reached at least one subscriber.
async fn deliver(shared: Arc<Shared>, mut shutdown: watch::Receiver<()>) {
    let mut conn = shared.conn.subscribe();
    let mut retry = Backoff::new(RETRY_MIN, PUBLISH_RETRY_MAX);
    let mut no_subscriber = Backoff::new(RETRY_MIN, NO_SUBSCRIBER_RETRY_MAX);
    let mut error_log = RateLimit::new(LOG_INTERVAL);
    let mut holding = false;
    loop {
        let Some((seq, rev, payload)) = until_shutdown(&mut shutdown, shared.next_outgoing()).await
        else {
            return;
        };
        let connected = until_shutdown(&mut shutdown, async {
            conn.wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|guard| guard.clone())
        })
        .await;
        let Some(Some(mut manager)) = connected else {
            return;
        };
        let result = bounded(
            "PUBLISH",
            redis::cmd("PUBLISH")
                .arg(&shared.channel_gopy)
                .arg(payload.as_bytes())
                .query_async::<i64>(&mut manager),
        )
        .await;
        let delay = match result {
            Ok(receivers) if receivers > 0 => {
                shared.delivered(seq, rev);
                retry.reset();
                no_subscriber.reset();
                if holding {
                    holding = false;
                    info!(channel = %shared.channel_gopy, "Slips is subscribed again; delivering");
                }
                continue;
            }
            Ok(_) => {
                if !holding {
                    holding = true;
                    info!(
                        channel = %shared.channel_gopy,
                        "nobody is subscribed to the channel for Slips; holding messages"
                    );
                }
                no_subscriber.next_delay()
            }
            Err(e) => {
                if shared.conn.borrow().is_none() {
                    // The connection is known to be down: the next round
                    // waits for it, then tries at once.
                    debug!(error = %e, "PUBLISH to Redis failed while disconnected");
                    continue;
                }
                if error_log.ready() {
                    warn!(error = %e, "PUBLISH to Redis failed; retrying");
                } else {
                    debug!(error = %e, "PUBLISH to Redis failed; retrying");
                }
                retry.next_delay()
            }
        };
        if until_shutdown(&mut shutdown, tokio::time::sleep(delay))
            .await
            .is_none()
        {
            return;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Endpoint {
        Endpoint::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn go_style_addresses() {
        let t = parse_address("localhost:6379").unwrap();
        assert_eq!(t.endpoint, tcp("localhost", 6379));
        assert_eq!((t.db, t.username, t.password), (0, None, None));
        assert_eq!(
            parse_address("127.0.0.1:6380").unwrap().endpoint,
            tcp("127.0.0.1", 6380)
        );
        assert_eq!(
            parse_address("[::1]:6381").unwrap().endpoint,
            tcp("::1", 6381)
        );
        assert_eq!(parse_address("[::1]").unwrap().endpoint, tcp("::1", 6379));
        assert_eq!(parse_address("::1").unwrap().endpoint, tcp("::1", 6379));
        // Ambiguous but a valid IPv6 address, so taken as one (Go would
        // refuse it): write [::1]:6379 for a port.
        assert_eq!(
            parse_address("::1:6379").unwrap().endpoint,
            tcp("::1:6379", 6379)
        );
        assert_eq!(
            parse_address("redis-host").unwrap().endpoint,
            tcp("redis-host", 6379)
        );
        assert_eq!(
            parse_address(" localhost:1 ").unwrap().endpoint,
            tcp("localhost", 1)
        );
        assert_eq!(
            parse_address(":6390").unwrap().endpoint,
            tcp("localhost", 6390)
        );
        assert_eq!(
            parse_address("0.0.0.0:6390").unwrap().endpoint,
            tcp("127.0.0.1", 6390)
        );
        assert_eq!(
            parse_address("[::]:6390").unwrap().endpoint,
            tcp("::1", 6390)
        );
    }

    #[test]
    fn bad_go_style_addresses() {
        for bad in [
            "",
            "   ",
            "host:",
            "host:0",
            "host:65536",
            "host:port",
            "[::1",
            "[::1]x",
            "[nothex]:1",
            "a b:1",
            "host/x:1",
        ] {
            assert!(
                matches!(parse_address(bad), Err(BridgeError::InvalidAddress { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn redis_urls() {
        let t = parse_address("redis://127.0.0.1:6390/0").unwrap();
        assert_eq!(t.endpoint, tcp("127.0.0.1", 6390));
        assert_eq!(t.db, 0);
        let t = parse_address("redis://localhost").unwrap();
        assert_eq!((t.endpoint, t.db), (tcp("localhost", 6379), 0));
        let t = parse_address("redis://:s3cr%40t@host:1/3").unwrap();
        assert_eq!(t.password.as_deref(), Some("s3cr@t"));
        assert_eq!(t.username, None);
        assert_eq!((t.endpoint, t.db), (tcp("host", 1), 3));
        let t = parse_address("redis://alice:pw@[::1]:7/2?protocol=resp3").unwrap();
        assert_eq!(t.username.as_deref(), Some("alice"));
        assert_eq!(t.password.as_deref(), Some("pw"));
        assert_eq!((t.endpoint, t.db), (tcp("::1", 7), 2));
        let t = parse_address("REDIS://h/?db=4").unwrap();
        assert_eq!(t.db, 4);
        let t = parse_address("valkey://h:2/").unwrap();
        assert_eq!((t.endpoint, t.db), (tcp("h", 2), 0));
        // A password containing '@' unescaped: the last '@' separates.
        let t = parse_address("redis://:a@b@h").unwrap();
        assert_eq!(t.password.as_deref(), Some("a@b"));
    }

    #[test]
    fn bad_redis_urls() {
        for bad in [
            "redis://",
            "redis://:pw@",
            "redis://h:1/x",
            "redis://h:1/-1",
            "redis://h/1?db=2",
            "redis://h?protocol=resp2",
            "redis://h?foo=bar",
            "redis://h#frag",
            "redis://h:1/%zz",
            "http://h:1",
            "redis://:%ff@h",
        ] {
            assert!(parse_address(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn tls_is_rejected_clearly() {
        let err = parse_address("rediss://:pw@h:6379").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("TLS"), "{text}");
        assert!(!text.contains("pw"), "password leaked: {text}");
    }

    #[test]
    fn unix_urls() {
        let t = parse_address("unix:///run/redis/redis.sock").unwrap();
        assert_eq!(t.endpoint, Endpoint::Unix("/run/redis/redis.sock".into()));
        assert_eq!(t.db, 0);
        let t = parse_address("redis+unix:///tmp/r.sock?db=1&pass=x%20y&user=u").unwrap();
        assert_eq!(t.endpoint, Endpoint::Unix("/tmp/r.sock".into()));
        assert_eq!(t.db, 1);
        assert_eq!(t.password.as_deref(), Some("x y"));
        assert_eq!(t.username.as_deref(), Some("u"));
        assert!(parse_address("unix://relative/path").is_err());
        assert!(parse_address("unix:///").is_err());
        assert!(parse_address("unix:///s?x=1").is_err());
    }

    #[test]
    fn passwords_never_printed() {
        let t = parse_address("redis://u:hunter2@h:1/0").unwrap();
        assert!(!format!("{t:?}").contains("hunter2"));
        assert!(!t.to_string().contains("hunter2"));
        let err = parse_address("redis://u:hunter2@h:1/x").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = parse_address("unix:///s?pass=hunter2&x=1").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let settings = RedisSettings {
            address: "redis://:hunter2@h".into(),
            password: Some("hunter3".into()),
            channel_pygo: "a".into(),
            channel_gopy: "b".into(),
            outbox_capacity: 1,
        };
        let debug = format!("{settings:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("hunter3"),
            "{debug}"
        );
    }

    #[test]
    fn display_is_loggable() {
        assert_eq!(parse_address("[::1]:5").unwrap().to_string(), "[::1]:5/0");
        assert_eq!(parse_address("redis://h:5/2").unwrap().to_string(), "h:5/2");
        assert_eq!(
            parse_address("unix:///s.sock").unwrap().to_string(),
            "unix:/s.sock?db=0"
        );
    }

    #[test]
    fn auth_file_single_line() {
        assert_eq!(
            parse_auth_file("s3cret\n").unwrap().as_deref(),
            Some("s3cret")
        );
        assert_eq!(
            parse_auth_file("  with space  \r\n").unwrap().as_deref(),
            Some("with space")
        );
        assert_eq!(
            parse_auth_file("\"quoted\"").unwrap().as_deref(),
            Some("\"quoted\"")
        );
        assert_eq!(
            parse_auth_file("# Slips\n\npassword123\n")
                .unwrap()
                .as_deref(),
            Some("password123")
        );
        assert_eq!(
            parse_auth_file("requirepassword").unwrap().as_deref(),
            Some("requirepassword")
        );
    }

    #[test]
    fn auth_file_keyed_lines() {
        assert_eq!(
            parse_auth_file("requirepass abc").unwrap().as_deref(),
            Some("abc")
        );
        assert_eq!(
            parse_auth_file("port 6379\nREQUIREPASS \"a b\"\n# c\n")
                .unwrap()
                .as_deref(),
            Some("a b")
        );
        assert_eq!(
            parse_auth_file("password=xyz").unwrap().as_deref(),
            Some("xyz")
        );
        assert_eq!(
            parse_auth_file("user: slips\nPassword : 'x:y'\n")
                .unwrap()
                .as_deref(),
            Some("x:y")
        );
        assert_eq!(
            parse_auth_file("requirepass one\nrequirepass two\n")
                .unwrap()
                .as_deref(),
            Some("two")
        );
    }

    #[test]
    fn auth_file_without_password() {
        assert_eq!(parse_auth_file("").unwrap(), None);
        assert_eq!(parse_auth_file("\n  \n# only a comment\n").unwrap(), None);
        assert_eq!(parse_auth_file("requirepass").unwrap(), None);
        assert_eq!(parse_auth_file("requirepass \"\"").unwrap(), None);
        assert_eq!(parse_auth_file("password=").unwrap(), None);
    }

    #[test]
    fn auth_file_ambiguous() {
        let err = parse_auth_file("hunter2\nsecond line\n").unwrap_err();
        assert!(!err.contains("hunter2"));
    }

    fn config(address: &str, password: &str, auth_file: &str) -> RedisConfig {
        RedisConfig {
            address: address.into(),
            channel_pygo: "p2p_pygo".into(),
            channel_gopy: "p2p_gopy".into(),
            password: password.into(),
            redis_auth_file: auth_file.into(),
            outbox_capacity: 10,
            ..RedisConfig::default()
        }
    }

    #[test]
    fn settings_password_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().join("runtime");
        std::fs::create_dir(&runtime).unwrap();
        std::fs::write(dir.path().join("redis_auth.conf"), "requirepass fromfile\n").unwrap();
        let auth = "../redis_auth.conf";

        let s = RedisSettings::from_config(&config("localhost:6379", "", auth), &runtime).unwrap();
        assert_eq!(s.password.as_deref(), Some("fromfile"));
        assert_eq!(s.outbox_capacity, 10);
        assert_eq!(s.channel_pygo, "p2p_pygo");

        let s = RedisSettings::from_config(&config("localhost:6379", "explicit", auth), &runtime)
            .unwrap();
        assert_eq!(s.password.as_deref(), Some("explicit"));

        // The URL's password wins over the file (start() uses it).
        let s = RedisSettings::from_config(&config("redis://:url@h", "", auth), &runtime).unwrap();
        assert_eq!(s.password, None);

        // Missing file or no file configured: no password.
        let s = RedisSettings::from_config(&config("h", "", "nope.conf"), &runtime).unwrap();
        assert_eq!(s.password, None);
        let s = RedisSettings::from_config(&config("h", "", ""), &runtime).unwrap();
        assert_eq!(s.password, None);

        // Malformed file: an error naming the file, not its contents.
        std::fs::write(runtime.join("bad.conf"), "hunter2\nhunter3\n").unwrap();
        let err = RedisSettings::from_config(&config("h", "", "bad.conf"), &runtime).unwrap_err();
        assert!(matches!(err, BridgeError::AuthFileFormat { .. }));
        assert!(!err.to_string().contains("hunter"), "{err}");

        // A directory where the file should be: a read error.
        std::fs::create_dir(runtime.join("dir.conf")).unwrap();
        let err = RedisSettings::from_config(&config("h", "", "dir.conf"), &runtime).unwrap_err();
        assert!(matches!(err, BridgeError::AuthFileRead { .. }));

        assert!(RedisSettings::from_config(&config("rediss://h", "", ""), &runtime).is_err());
    }

    #[test]
    fn outbox_drops_oldest() {
        let mut outbox = Outbox::new(3);
        for i in 0..5 {
            let dropped = outbox.push(i.to_string());
            assert_eq!(dropped, i >= 3);
        }
        let kept: Vec<_> = outbox.queue.iter().map(|e| e.payload.as_str()).collect();
        assert_eq!(kept, ["2", "3", "4"]);
        let seqs: Vec<_> = outbox.queue.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [2, 3, 4]);
    }

    fn payloads(outbox: &Outbox) -> Vec<&str> {
        outbox.queue.iter().map(|e| e.payload.as_str()).collect()
    }

    /// A newer peer_update about a peer replaces the pending one, in its
    /// place; other peers and other messages are untouched.
    #[test]
    fn outbox_keeps_one_peer_update_per_peer() {
        let mut outbox = Outbox::new(100);
        assert_eq!(outbox.push_keyed("a1".into(), Some("A")), Pushed::Appended);
        assert_eq!(outbox.push_keyed("data1".into(), None), Pushed::Appended);
        assert_eq!(outbox.push_keyed("b1".into(), Some("B")), Pushed::Appended);
        for i in 2..=300 {
            assert_eq!(
                outbox.push_keyed(format!("a{i}"), Some("A")),
                Pushed::Replaced
            );
        }
        assert_eq!(outbox.push_keyed("data2".into(), None), Pushed::Appended);
        assert_eq!(payloads(&outbox), ["a300", "data1", "b1", "data2"]);
        assert_eq!(outbox.pending_updates.len(), 2);
    }

    /// Once delivered, a peer's next update queues anew; one replaced
    /// while its PUBLISH was in flight stays queued and goes next.
    #[test]
    fn outbox_peer_update_in_flight_is_not_lost() {
        let mut outbox = Outbox::new(10);
        outbox.push_keyed("a1".into(), Some("A"));
        let (seq, rev) = (outbox.queue[0].seq, outbox.queue[0].rev);
        // "a1" is being published; "a2" replaces it meanwhile.
        assert_eq!(outbox.push_keyed("a2".into(), Some("A")), Pushed::Replaced);
        outbox.delivered(seq, rev);
        assert_eq!(payloads(&outbox), ["a2"]);
        let (seq, rev) = (outbox.queue[0].seq, outbox.queue[0].rev);
        outbox.delivered(seq, rev);
        assert!(outbox.queue.is_empty() && outbox.pending_updates.is_empty());
        assert_eq!(outbox.push_keyed("a3".into(), Some("A")), Pushed::Appended);
        assert_eq!(payloads(&outbox), ["a3"]);
    }

    /// Overflow forgets the dropped update, so the peer's next one is
    /// queued rather than lost.
    #[test]
    fn outbox_overflow_forgets_dropped_peer_updates() {
        let mut outbox = Outbox::new(2);
        outbox.push_keyed("a1".into(), Some("A"));
        outbox.push_keyed("x".into(), None);
        assert_eq!(outbox.push_keyed("y".into(), None), Pushed::DroppedOldest);
        assert!(outbox.pending_updates.is_empty());
        assert_eq!(
            outbox.push_keyed("a2".into(), Some("A")),
            Pushed::DroppedOldest
        );
        assert_eq!(payloads(&outbox), ["y", "a2"]);
        assert_eq!(outbox.push_keyed("a3".into(), Some("A")), Pushed::Replaced);
        assert_eq!(payloads(&outbox), ["y", "a3"]);
    }

    #[test]
    fn backoff_doubles_to_cap() {
        let mut b = Backoff::new(RETRY_MIN, PUBLISH_RETRY_MAX);
        let delays: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), RETRY_MIN);
    }

    #[tokio::test]
    async fn bad_settings_are_errors() {
        let good = RedisSettings {
            address: "unix:///nonexistent/pigeon-test/redis.sock".into(),
            password: None,
            channel_pygo: "p".into(),
            channel_gopy: "g".into(),
            outbox_capacity: 1,
        };
        let mut s = good.clone();
        s.outbox_capacity = 0;
        assert!(matches!(
            start(s).await,
            Err(BridgeError::InvalidSetting(_))
        ));
        let mut s = good.clone();
        s.channel_gopy = "p".into();
        assert!(matches!(
            start(s).await,
            Err(BridgeError::InvalidSetting(_))
        ));
        let mut s = good;
        s.channel_pygo = String::new();
        assert!(matches!(
            start(s).await,
            Err(BridgeError::InvalidSetting(_))
        ));
    }
}
