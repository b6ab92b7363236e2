//! The supervisor: connects to Redis, subscribes, watches the connection
//! (PING every second), reconnects and rebuilds it, re-applies pigeon's
//! keys, and forwards Slips' messages; plus the plain connections other
//! readers of Slips' Redis use ([`plain_connection`]).

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{
    ConnectionAddr, ErrorKind, IntoConnectionInfo, Msg, ProtocolVersion, PushInfo, PushKind,
    RedisConnectionInfo, RedisError,
};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use super::outbox::Shared;
use super::{Backoff, Endpoint, LOG_INTERVAL, RETRY_MIN, RateLimit, RedisTarget, until_shutdown};

/// How often the supervisor PINGs. Without a command the manager stops
/// reconnecting once its retries are spent, about 12 s (see the module
/// documentation of `redis_bridge`).
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
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
/// A connection down this long is rebuilt from scratch (re-resolving the
/// host), in case the manager is stuck.
const REBUILD_AFTER_DOWN: Duration = Duration::from_secs(30);
/// Consecutive non-I/O health-check failures (e.g. the server now wants a
/// different password) after which the manager is rebuilt: the manager
/// only reconnects by itself after I/O errors.
const REBUILD_AFTER_FAILURES: u32 = 3;

/// Why a connection attempt or a command failed.
#[derive(Debug)]
pub(super) enum LinkError {
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
pub(super) async fn bounded<T>(
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

/// A client for the first reachable address of `target`, with its
/// database, user and password, speaking `protocol`; and that address,
/// for logs.
async fn client_for(
    target: &RedisTarget,
    password: Option<&str>,
    protocol: ProtocolVersion,
) -> Result<(redis::Client, String), LinkError> {
    let (addr, peer) = reachable_addr(&target.endpoint).await?;
    let mut redis_info = RedisConnectionInfo::default()
        .set_db(target.db)
        .set_protocol(protocol);
    if let Some(user) = &target.username {
        redis_info = redis_info.set_username(user);
    }
    if let Some(password) = password {
        redis_info = redis_info.set_password(password);
    }
    let info = addr.into_connection_info()?.set_redis_settings(redis_info);
    Ok((redis::Client::open(info)?, peer))
}

/// A plain (non-pub/sub) connection to `target`, trying every resolved
/// address as the bridge does; for other readers of Slips' Redis (the
/// request guard's cache reads). The error text never holds the password.
pub(crate) async fn plain_connection(
    target: &RedisTarget,
    password: Option<&str>,
) -> Result<redis::aio::MultiplexedConnection, String> {
    let open = async {
        let (client, _) = client_for(target, password, ProtocolVersion::RESP2).await?;
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
    let (client, peer) = client_for(target, password, ProtocolVersion::RESP3).await?;
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
pub(super) async fn supervise(
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
