//! The tokio shell around the pure [`Node`]: it owns the sockets, the Redis
//! bridge, the clock, the peer list file and the signals, feeds the node
//! and carries out its actions. No protocol decision is taken here.

use crate::config::Config;
use crate::core::{Action, Destination, Millis, Node, NodeParams};
use crate::identity::{self, Identity, KeyOutcome};
use crate::io::redis_bridge::{self, BridgeHandle, RedisSettings};
use crate::io::slips_cache::RequestGuard;
use crate::io::udp::{self, RECV_BUFFER, Sockets, UdpSettings};
use crate::peerstore::{self, Loaded, PeerFile};
use crate::slips::{self, FromSlips, SlipsVersion, VersionSource};
use crate::untrusted::Untrusted;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// How long shutdown may take before we exit anyway (Slips kills us soon
/// after its own SIGINT; the Go Pigeon took ~2 s).
const SHUTDOWN_BUDGET: Duration = Duration::from_millis(1_500);
/// How often we check that Slips (our parent) is still alive.
const PARENT_CHECK: Duration = Duration::from_secs(1);
/// Retry delay of a failed peer list write (full disk, read-only dir…).
const SAVE_RETRY: Duration = Duration::from_secs(5);

/// Errors that stop pigeon at start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The key file could not be read or written.
    #[error("key file: {0}")]
    Identity(#[from] identity::IdentityError),
    /// Sockets could not be set up.
    #[error("network: {0}")]
    Udp(#[from] udp::UdpError),
    /// The Redis settings are unusable.
    #[error("redis: {0}")]
    Redis(#[from] redis_bridge::BridgeError),
    /// The peer list could not be read (not: was corrupt).
    #[error("peer list: {0}")]
    Peerstore(#[from] peerstore::PeerstoreError),
    /// Signal handlers could not be installed.
    #[error("signals: {0}")]
    Signals(std::io::Error),
}

/// Wall-clock time in Unix milliseconds.
pub fn unix_now() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Why the main loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopCause {
    Signal(&'static str),
    StopProcess,
    ParentDied,
}

/// Runs a pigeon until SIGINT/SIGTERM, `stop_process` or parent death.
///
/// `binary` is the path we were started as (Slips passes it absolute;
/// `<slips>/VERSION` is found from it) and `base_dir` the working directory
/// against which relative paths of the configuration resolve.
pub async fn run(config: Config, binary: &Path, base_dir: &Path) -> Result<(), RunError> {
    let mut sigint = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let parent = std::os::unix::process::parent_id();

    let identity = load_identity(&config, base_dir)?;
    let mut version = SlipsVersion::discover(binary, &config.slips.version);
    match version.source() {
        VersionSource::File => {
            tracing::info!(version = version.value(), "Slips version from VERSION file")
        }
        _ => tracing::warn!(
            version = version.value(),
            "Slips VERSION file not found next to {}; using the configured version until Slips tells us its own. Slips drops messages with a wrong version!",
            binary.display()
        ),
    }

    // An empty file name disables persistence (the Go Pigeon's default for
    // `-peerstore-file ""`); pigeon persists by default.
    let peer_path = (!config.peerstore.file.as_os_str().is_empty())
        .then(|| base_dir.join(&config.peerstore.file));
    if peer_path.is_none() {
        tracing::warn!("peer list persistence disabled (empty peerstore file name)");
    }
    let loaded = match &peer_path {
        Some(p) => peerstore::load(p)?,
        None => Loaded::Missing,
    };
    let peer_path_shown = peer_path.as_deref().unwrap_or(Path::new("")).display();
    let stored = match loaded {
        Loaded::Missing => Vec::new(),
        Loaded::Peers(f) => {
            tracing::info!(peers = f.peers.len(), file = %peer_path_shown, "peer list loaded");
            f.peers
        }
        Loaded::Corrupt { moved_to, reason } => {
            tracing::error!(
                file = %peer_path_shown, moved_to = %moved_to.display(),
                "peer list unreadable ({reason}); moved aside, starting with no known peers"
            );
            Vec::new()
        }
    };

    let host = config.network.host.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let sockets = udp::bind(UdpSettings {
        host,
        port: config.network.port,
        group: config.network.group,
        group_port: config.network.group_port,
        ttl: config.network.multicast_ttl,
    })?;
    tracing::info!(
        unicast = %sockets.local, group = %sockets.group_addr, network = %config.network.name,
        "listening"
    );

    let redis_settings = RedisSettings::from_config(&config.redis, base_dir)?;
    let guard_password = redis_settings.password.clone();
    let (bridge, mut from_slips) = redis_bridge::start(redis_settings).await?;
    let guard = if config.slips.request_guard {
        let target = redis_bridge::parse_address(&config.slips.cache_redis)?;
        tracing::info!(cache = %target, "request guard on: peers' requests reach Slips only if Slips can answer them");
        Some(RequestGuard::spawn(target, guard_password, bridge.clone()))
    } else {
        tracing::warn!(
            "request guard off (slips.request_guard = false): a request about an IP Slips 1.1.21 has no score for crashes its P2P module"
        );
        None
    };

    let multiaddr = format!(
        "/ip4/{}/udp/{}/p2p/{}",
        sockets.local.ip(),
        sockets.local.port(),
        identity.peer_id()
    );
    if config.redis.delete_on_start {
        // Go's -redis-delete: forget what a previous run left in Redis.
        bridge.delete(["multiAddress".to_owned()]);
    }
    bridge.set("multiAddress".to_owned(), multiaddr.clone());
    tracing::info!("[*] Your Multiaddress Is: {multiaddr}");

    let mut node = Node::new(
        &config,
        identity.signing_key().clone(),
        NodeParams {
            unicast: sockets.local,
            instance: rand::random::<u64>() & crate::wire::MAX_SAFE_INT,
            rng_seed: rand::random(),
        },
        stored,
        unix_now(),
    );
    let saver = PeerSaver::spawn(peer_path);

    let mut group_buf = vec![0u8; RECV_BUFFER];
    let mut unicast_buf = vec![0u8; RECV_BUFFER];
    let mut parent_check = tokio::time::interval(PARENT_CHECK);
    let cause = loop {
        let wait = Duration::from_millis(node.poll_timeout().saturating_sub(unix_now()));
        tokio::select! {
            r = sockets.group.recv_from(&mut group_buf) => {
                on_recv(&mut node, r, &group_buf);
                recv_more(&mut node, &sockets.group, &mut group_buf);
            }
            r = sockets.unicast.recv_from(&mut unicast_buf) => {
                on_recv(&mut node, r, &unicast_buf);
                recv_more(&mut node, &sockets.unicast, &mut unicast_buf);
            }
            msg = from_slips.recv() => match msg {
                Some(raw) => {
                    if on_slips(&mut node, &mut version, &raw) {
                        break StopCause::StopProcess;
                    }
                }
                None => {
                    // The bridge never closes while its handle lives; if it
                    // does, keep serving the LAN rather than exit.
                    tracing::error!("Redis bridge closed its channel");
                    std::future::pending::<()>().await;
                }
            },
            () = tokio::time::sleep(wait) => node.handle_timeout(unix_now()),
            _ = sigint.recv() => break StopCause::Signal("SIGINT"),
            _ = sigterm.recv() => break StopCause::Signal("SIGTERM"),
            _ = parent_check.tick() => {
                if std::os::unix::process::parent_id() != parent {
                    break StopCause::ParentDied;
                }
            }
        }
        carry_out(
            &mut node,
            &sockets,
            &bridge,
            guard.as_ref(),
            &version,
            &saver,
        )
        .await;
    };

    tracing::info!(?cause, "closing: saying goodbye and saving the peer list");
    let deadline = tokio::time::Instant::now() + SHUTDOWN_BUDGET;
    node.shutdown(unix_now());
    carry_out(
        &mut node,
        &sockets,
        &bridge,
        guard.as_ref(),
        &version,
        &saver,
    )
    .await;
    // Further signals (Slips and the terminal both send SIGINT) are absorbed
    // by the handlers still installed; finish the goodbye regardless.
    let saved = tokio::time::timeout_at(deadline, saver.finish()).await;
    if !matches!(saved, Ok(true)) {
        tracing::error!("peer list not saved before exit");
    }
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    if !bridge.flush(left).await {
        tracing::warn!("some messages for Slips were not delivered before exit");
    }
    let stats = node.stats();
    tracing::info!(
        received = stats.datagrams_in,
        accepted = stats.datagrams_accepted,
        sent = stats.datagrams_out,
        to_slips = stats.to_slips,
        // Own multicast echoes, duplicates and messages for other peers
        // are normal; only the rest is worth an operator's attention.
        dropped = stats.dropped_unusual(),
        routine = stats.dropped_total() - stats.dropped_unusual(),
        "stopped"
    );
    let b = bridge.stats();
    tracing::info!(
        published = b.published,
        dropped_outbox = b.dropped_outbox,
        superseded_peer_updates = b.superseded_peer_updates,
        "messages for Slips"
    );
    if let Some(g) = guard.as_ref().map(RequestGuard::stats) {
        tracing::info!(
            passed = g.passed,
            request_unanswerable = g.unanswerable,
            request_cache_unreadable = g.unreadable,
            request_guard_full = g.full,
            "requests from peers"
        );
    }
    if stats.dropped_total() > 0 || stats.bans > 0 {
        let by_reason: Vec<String> = stats
            .dropped
            .iter()
            .map(|(r, n)| format!("{}={n}", r.as_str()))
            .collect();
        tracing::info!(
            bans = stats.bans,
            "drops by reason: {}",
            by_reason.join(" ")
        );
    }
    Ok(())
}

fn load_identity(config: &Config, base_dir: &Path) -> Result<Identity, RunError> {
    let key_file = &config.identity.key_file;
    let path = if key_file.as_os_str().is_empty() {
        PathBuf::new()
    } else {
        base_dir.join(key_file)
    };
    let (identity, outcome) = identity::load_or_create(&path, config.identity.key_reset)?;
    match outcome {
        KeyOutcome::Ephemeral => {
            tracing::warn!(
                "no key file: one-time identity, peers will not recognise us after a restart"
            )
        }
        KeyOutcome::Created => tracing::info!(file = %path.display(), "new key created"),
        KeyOutcome::Loaded { tightened_from } => {
            if let Some(mode) = tightened_from {
                tracing::warn!(file = %path.display(), "key file was readable by others (mode {mode:o}); now 0600");
            }
        }
        KeyOutcome::ReplacedForeign { backup, reason } => tracing::warn!(
            file = %path.display(), backup = %backup.display(),
            "key file held no pigeon key ({reason}, e.g. a Go Pigeon RSA key); kept it as a backup and created a new key"
        ),
        KeyOutcome::Reset { backup } => tracing::warn!(
            file = %path.display(), backup = %backup.display(), "key reset: old key kept as a backup"
        ),
    }
    tracing::info!(peer_id = identity.peer_id(), "identity");
    Ok(identity)
}

/// Datagrams read per wakeup after the first. Under a flood, one trip
/// through the event loop per datagram costs more than judging the
/// datagram; reading a batch lets the kernel drop less (docs/SECURITY.md).
const RECV_BATCH: usize = 64;

/// Reads what is already queued on `socket`, up to [`RECV_BATCH`].
fn recv_more(node: &mut Node, socket: &tokio::net::UdpSocket, buf: &mut [u8]) {
    for _ in 0..RECV_BATCH {
        match socket.try_recv_from(buf) {
            Ok((n, src)) => node.handle_datagram(unix_now(), src, &buf[..n]),
            // WouldBlock: nothing queued; other errors surface at the
            // next recv_from.
            Err(_) => break,
        }
    }
}

fn on_recv(node: &mut Node, r: std::io::Result<(usize, SocketAddr)>, buf: &[u8]) {
    match r {
        Ok((n, src)) => node.handle_datagram(unix_now(), src, &buf[..n]),
        // ICMP errors and the like surface here; the socket stays usable.
        Err(e) => tracing::debug!("receive error: {e}"),
    }
}

/// Handles one pygo message; true means `stop_process`.
fn on_slips(node: &mut Node, version: &mut SlipsVersion, raw: &str) -> bool {
    let msg = match slips::parse_pygo(raw) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!("ignored message from Slips: {e}");
            return false;
        }
    };
    if !version.accept(msg.version()) {
        tracing::info!(
            theirs = %Untrusted(msg.version().unwrap_or("")),
            ours = version.value(),
            "ignored message from another Slips version"
        );
        return false;
    }
    match msg {
        FromSlips::Stop { .. } => true,
        FromSlips::Send {
            message, recipient, ..
        } => {
            node.handle_slips(unix_now(), message, recipient);
            false
        }
    }
}

async fn carry_out(
    node: &mut Node,
    sockets: &Sockets,
    bridge: &BridgeHandle,
    guard: Option<&RequestGuard>,
    version: &SlipsVersion,
    saver: &PeerSaver,
) {
    while let Some(action) = node.poll_action() {
        match action {
            Action::Send { to, datagram } => {
                let dest = match to {
                    Destination::Multicast => sockets.group_addr,
                    Destination::Unicast(a) => a,
                };
                if let Err(e) = sockets.unicast.send_to(&datagram, dest).await {
                    tracing::warn!(%dest, "send failed: {e}");
                }
            }
            Action::ToSlips(m) => match &m {
                // Only the latest update about a peer matters: a newer one
                // replaces the one still waiting (docs/SECURITY.md §7).
                slips::ToSlips::PeerUpdate { peerid, .. } => {
                    bridge.publish_peer_update(peerid, m.to_json(version.value()))
                }
                slips::ToSlips::GoData { request_ip, .. } => match (request_ip, guard) {
                    // A request waits for the guard's verdict (off the loop).
                    (Some(ip), Some(guard)) => guard.submit(ip.clone(), m.to_json(version.value())),
                    _ => bridge.publish(m.to_json(version.value())),
                },
            },
            Action::SavePeers(f) => saver.save(f),
        }
    }
}

/// Writes the peer list off the main loop: only the latest list matters,
/// so a slow disk never queues more than one pending write, and a failed
/// write (full disk, read-only directory) is retried.
struct PeerSaver {
    /// Latest list handed over, numbered.
    tx: watch::Sender<(u64, Option<PeerFile>)>,
    /// Number of the latest list on disk.
    done: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl PeerSaver {
    /// `None`: persistence disabled, lists are discarded.
    fn spawn(path: Option<PathBuf>) -> Self {
        let (tx, mut rx) = watch::channel::<(u64, Option<PeerFile>)>((0, None));
        let (done_tx, done) = watch::channel(0u64);
        let task = tokio::spawn(async move {
            loop {
                let (n, file) = rx.borrow_and_update().clone();
                if path.is_none() {
                    let _ = done_tx.send(n);
                } else if let (Some(file), Some(path)) = (file, &path) {
                    let p = path.clone();
                    match tokio::task::spawn_blocking(move || peerstore::save(&p, &file)).await {
                        Ok(Ok(())) => {
                            let _ = done_tx.send(n);
                        }
                        Ok(Err(e)) => {
                            tracing::error!("cannot save peer list: {e}; retrying");
                            tokio::time::sleep(SAVE_RETRY).await;
                            rx.mark_changed();
                        }
                        Err(e) => tracing::error!("peer list writer failed: {e}"),
                    }
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
        Self { tx, done, task }
    }

    fn save(&self, file: PeerFile) {
        self.tx.send_modify(|(n, f)| {
            *n += 1;
            *f = Some(file);
        });
    }

    /// Waits until the latest list handed over is on disk.
    async fn finish(mut self) -> bool {
        let target = self.tx.borrow().0;
        let ok = self.done.wait_for(|w| *w >= target).await.is_ok();
        self.task.abort();
        ok
    }
}
