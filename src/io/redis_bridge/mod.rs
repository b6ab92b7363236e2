//! The Redis adapter: pigeon's only link to Slips.
//!
//! Slips and its pigeon talk through two pub/sub channels of Slips' main
//! Redis: Slips publishes on `p2p_pygo`, pigeon publishes on `p2p_gopy`, and
//! pigeon writes one key, `multiAddress`, that Slips reads once, two
//! seconds after starting it (Slips 1.1.21 `modules/p2p_trust/p2p_trust.py`:
//! `time.sleep(2)` then `get_multiaddr()`). This module is only that
//! transport: it never looks inside a message.
//!
//! # Why it is built this way
//!
//! * **Redis may be down at any time, for any length of time.** Nothing here
//!   is fatal after [`start`] has accepted the settings: it returns at once,
//!   a supervisor task connects in the background, and everything queued
//!   before that is delivered once Redis answers.
//! * **redis 1.8 does not reconnect pub/sub by itself**: `aio::PubSub`
//!   never reconnects, and `ConnectionManager` reconnects and resubscribes
//!   only with RESP3, a push sender and automatic resubscription
//!   (`ConnectionManagerConfig::set_automatic_resubscription`,
//!   <https://docs.rs/redis/1.8.1/redis/aio/struct.ConnectionManagerConfig.html>),
//!   and even then gives up once its retry budget is spent (by default 6
//!   retries, delays doubling from 100 ms: redis 1.8.1
//!   `src/aio/connection_manager.rs`; with the connection timeouts about
//!   12 s) unless a command re-arms it (`outage_of_12_seconds` in
//!   `tests/integration/redis_bridge.rs` shows it). So the supervisor PINGs every second
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
//!
//! # Layout
//!
//! * `address`: Redis addresses and Slips' auth file, parsed once
//!   ([`RedisAddress`] in the configuration, [`parse_auth_file`]);
//! * `outbox`: the [`BridgeHandle`] the runtime holds, the state it shares
//!   with the tasks, the outbox and the task that delivers it;
//! * `supervisor`: the connection's life (connect, subscribe, health
//!   checks, rebuilds, keys) and the forwarding of Slips' messages;
//! * here: the settings ([`RedisSettings::from_config`]) and [`start`].
//!   The settings are checked once, by `Config::validate`.

use std::fmt;
use std::future::Future;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::info;

use crate::config::RedisConfig;

mod address;
mod outbox;
mod supervisor;

pub use address::{
    DEFAULT_PORT, Endpoint, RedisAddress, RedisTarget, parse_address, parse_auth_file,
};
pub use outbox::{BridgeHandle, BridgeProbe, BridgeStats};
pub(crate) use supervisor::plain_connection;

/// Capacity of the channel of messages from Slips returned by [`start`].
/// Slips publishes a few messages per minute; the bound only matters if the
/// consumer stalls, and then delivery waits (nothing is dropped).
pub const INBOUND_CAPACITY: usize = 1024;

/// First retry delay of a failed `PUBLISH` or connection attempt.
const RETRY_MIN: Duration = Duration::from_millis(100);
/// Repeated log lines (attempts, drops) appear at most this often.
const LOG_INTERVAL: Duration = Duration::from_secs(5);
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
}

/// Everything the bridge needs, already resolved from the configuration.
/// The values are taken as they are: `Config::validate` is where they are
/// checked (channel names not empty and distinct, so that pigeon never
/// reads its own messages; the address parsed).
#[derive(Clone)]
pub struct RedisSettings {
    /// Where Redis is and how to log in (Go flag `--redis-db`).
    pub target: RedisTarget,
    /// Password for `AUTH`, overriding one in `target`. `None`: the one in
    /// `target`, if any, else no authentication.
    pub password: Option<String>,
    /// Channel Slips publishes on and pigeon subscribes to.
    pub channel_pygo: String,
    /// Channel pigeon publishes on for Slips.
    pub channel_gopy: String,
    /// Messages for Slips kept while they cannot be delivered; beyond this
    /// the oldest are dropped and counted.
    pub outbox_capacity: NonZeroUsize,
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("target", &self.target)
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
    /// `../redis_auth.conf` is Slips' `permanent/redis_auth.conf`, where
    /// Slips after 1.1.21 keeps the password of all its Redis servers:
    /// `slips_files/core/database/redis_db/redis_auth.py`). A missing auth
    /// file means no password;
    /// an unreadable or malformed one is an error. See [`parse_auth_file`]
    /// for the accepted file formats. An address that did not parse is an
    /// error too (`Config::validate` reports it first).
    pub fn from_config(cfg: &RedisConfig, base_dir: &Path) -> Result<Self, BridgeError> {
        let target = cfg.address.target()?.clone();
        let password = if !cfg.password.is_empty() {
            Some(cfg.password.clone())
        } else if target.password.is_some() || cfg.redis_auth_file.as_os_str().is_empty() {
            None
        } else {
            address::read_auth_file(&base_dir.join(&cfg.redis_auth_file))?
        };
        Ok(Self {
            target,
            password,
            channel_pygo: cfg.channel_pygo.clone(),
            channel_gopy: cfg.channel_gopy.clone(),
            // `Config::validate` refuses 0.
            outbox_capacity: NonZeroUsize::new(cfg.outbox_capacity).unwrap_or(NonZeroUsize::MIN),
        })
    }
}

/// Starts the bridge and returns its handle and the messages Slips
/// publishes on `channel_pygo`.
///
/// Must be called inside a tokio runtime. Returns at once: connecting,
/// subscribing and reconnecting happen in background tasks, for as long as
/// a handle exists, whether Redis is up now, later, or goes away for a
/// while. Nothing about Redis is an error.
///
/// The receiver yields each payload as a `String`; payloads that are not
/// UTF-8 are dropped and counted. It ends when the bridge stops.
pub async fn start(settings: RedisSettings) -> (BridgeHandle, mpsc::Receiver<String>) {
    let RedisSettings {
        target,
        password,
        channel_pygo,
        channel_gopy,
        outbox_capacity,
    } = settings;
    let password = password.or_else(|| target.password.clone());
    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_CAPACITY);
    let (shutdown_tx, shutdown_rx) = watch::channel(());
    let shared = Arc::new(outbox::Shared::new(
        channel_pygo,
        channel_gopy,
        outbox_capacity,
    ));
    info!(
        redis = %target,
        pygo = %shared.channel_pygo,
        gopy = %shared.channel_gopy,
        auth = password.is_some(),
        "starting the Redis bridge"
    );
    tokio::spawn(supervisor::supervise(
        Arc::clone(&shared),
        target,
        password,
        inbound_tx,
        shutdown_rx.clone(),
    ));
    tokio::spawn(outbox::deliver(Arc::clone(&shared), shutdown_rx));
    (BridgeHandle::new(shared, shutdown_tx), inbound_rx)
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

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
            target: parse_address("redis://:hunter2@h").unwrap(),
            password: Some("hunter3".into()),
            channel_pygo: "a".into(),
            channel_gopy: "b".into(),
            outbox_capacity: NonZeroUsize::MIN,
        };
        let debug = format!("{settings:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("hunter3"),
            "{debug}"
        );
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
        assert_eq!(s.outbox_capacity.get(), 10);
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
}
