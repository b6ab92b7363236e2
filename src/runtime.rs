//! The tokio shell around the pure [`Node`]: it owns the sockets, the Redis
//! bridge, the clock, the peer list file and the signals, feeds the node
//! and carries out its actions. No protocol decision is taken here.

use crate::config::Config;
use crate::core::{Action, Destination, Millis, Node, NodeParams, Now, PeerList, Via};
use crate::identity::{self, Identity, KeyOutcome};
use crate::io::control::{self, ReportRequest};
use crate::io::metrics;
use crate::io::org_lists::ListDir;
use crate::io::redis_bridge::{self, BridgeHandle, RedisSettings};
use crate::io::slips_cache::RequestGuard;
use crate::io::udp::{self, RECV_BUFFER, Sockets, UdpSettings};
use crate::peerstore::{self, Loaded, PeerFile};
use crate::slips::{self, FromSlips, SlipsVersion, ToSlips, VersionSource};
use crate::status::{FromSlipsCounts, Health, StatusReport};
use crate::untrusted::Untrusted;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

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
    /// Another pigeon runs in this directory.
    #[error("{0}")]
    Control(control::ControlError),
    /// A membership credential that is not this pigeon's.
    #[error("{0}")]
    Org(String),
}

/// Wall-clock time in Unix milliseconds.
pub fn unix_now() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Both clocks: monotonic milliseconds since the first call (timers never
/// stall or rush when the system clock steps) and Unix milliseconds.
pub fn now() -> Now {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    Now {
        mono: u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX),
        wall: unix_now(),
    }
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

    // First, before any file is touched: a live control socket means
    // another pigeon runs in this directory.
    let control_socket = bind_control(&config, base_dir).await?;

    let identity = load_identity(&config, base_dir)?;
    // org: our credentials must be of our key (pigeon org request/sign).
    crate::core::orgs::check_memberships(&config.org, identity.signing_key())
        .map_err(RunError::Org)?;
    let version_file = slips::version_file(binary).and_then(|p| std::fs::read_to_string(p).ok());
    let mut version = SlipsVersion::new(version_file.as_deref(), &config.slips.version);
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
            f.into_records()
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
    let (bridge, mut from_slips) = redis_bridge::start(redis_settings).await;
    let guard = if config.slips.request_guard {
        let target = config.slips.cache_redis.target()?.clone();
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
        now(),
    );
    // org: sending keys and nonces from the operating system's generator;
    // the revocation lists we have.
    node.reseed_orgs(rand::random());
    let mut lists = ListDir::new(&config.org.revocation_dir, base_dir);
    read_lists(&mut node, &mut lists);
    let mut list_poll = tokio::time::interval(crate::io::org_lists::POLL);
    let saver = PeerSaver::spawn(peer_path);

    // Operator view: the control socket and the metrics ask the
    // loop for a report through `reports`; everything slower runs in their
    // own tasks.
    let (reports_tx, mut reports) = mpsc::channel::<ReportRequest>(16);
    let mut tally = Tally::default();
    let mut facts = Facts {
        started: unix_now(),
        redis: config
            .redis
            .address
            .target()
            .map_or_else(|_| String::from("?"), |t| t.to_string()),
        channel_gopy: config.redis.channel_gopy.clone(),
        outbox_capacity: config.redis.outbox_capacity,
        group: std::net::SocketAddrV4::new(config.network.group, config.network.group_port),
        metrics: None,
    };
    let mut operator_tasks = Vec::new();
    if let Some(socket) = control_socket {
        tracing::info!(socket = %socket.path().display(), "control socket ready (pigeon status)");
        operator_tasks.push(control::spawn(socket, reports_tx.clone(), bridge.probe()));
    }
    match config.metrics.listen_addr() {
        Ok(None) => {}
        Ok(Some(addr)) => match metrics::bind(addr).await {
            Ok(listener) => {
                let shown = listener.local_addr().map_or(addr, |a| a);
                tracing::info!("Prometheus metrics on http://{shown}/metrics");
                facts.metrics = Some(shown.to_string());
                operator_tasks.push(metrics::spawn(listener, reports_tx.clone(), bridge.probe()));
            }
            Err(e) => tracing::error!("metrics.listen: cannot listen on {addr}: {e}; metrics off"),
        },
        // Validated with the configuration already.
        Err(e) => tracing::error!("metrics.listen: {e}; metrics off"),
    }

    let mut group_buf = vec![0u8; RECV_BUFFER];
    let mut unicast_buf = vec![0u8; RECV_BUFFER];
    let mut probe_buf = vec![0u8; RECV_BUFFER];
    let mut parent_check = tokio::time::interval(PARENT_CHECK);
    let cause = loop {
        let wait = Duration::from_millis(node.poll_timeout().saturating_sub(now().mono));
        tokio::select! {
            r = sockets.group.recv_from(&mut group_buf) => {
                on_recv(&mut node, Via::Group, r, &group_buf);
                recv_more(&mut node, Via::Group, &sockets.group, &mut group_buf);
            }
            r = sockets.unicast.recv_from(&mut unicast_buf) => {
                on_recv(&mut node, Via::Unicast, r, &unicast_buf);
                recv_more(&mut node, Via::Unicast, &sockets.unicast, &mut unicast_buf);
            }
            // Replies to our challenges come back to the probe socket.
            r = sockets.probe.recv_from(&mut probe_buf) => {
                on_recv(&mut node, Via::Unicast, r, &probe_buf);
                recv_more(&mut node, Via::Unicast, &sockets.probe, &mut probe_buf);
            }
            Some(reply) = reports.recv() => {
                let report = build_report(&node, &bridge, &version, &facts, &tally);
                let _ = reply.send(report);
            }
            msg = from_slips.recv() => match msg {
                Some(raw) => {
                    if on_slips(&mut node, &mut version, &raw, &mut tally.from_slips) {
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
            () = tokio::time::sleep(wait) => node.handle_timeout(now()),
            _ = sigint.recv() => break StopCause::Signal("SIGINT"),
            _ = sigterm.recv() => break StopCause::Signal("SIGTERM"),
            _ = parent_check.tick() => {
                if std::os::unix::process::parent_id() != parent {
                    break StopCause::ParentDied;
                }
            }
            _ = list_poll.tick() => read_lists(&mut node, &mut lists),
        }
        carry_out(
            &mut node,
            &sockets,
            &bridge,
            guard.as_ref(),
            &version,
            &saver,
            &mut tally,
            &mut lists,
        );
    };
    for task in operator_tasks {
        task.abort();
        // Dropping the control task removes its socket file.
        let _ = task.await;
    }
    drop(reports_tx);

    tracing::info!(?cause, "closing: saying goodbye and saving the peer list");
    let deadline = tokio::time::Instant::now() + SHUTDOWN_BUDGET;
    node.shutdown(now());
    carry_out(
        &mut node,
        &sockets,
        &bridge,
        guard.as_ref(),
        &version,
        &saver,
        &mut tally,
        &mut lists,
    );
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
fn recv_more(node: &mut Node, via: Via, socket: &tokio::net::UdpSocket, buf: &mut [u8]) {
    for _ in 0..RECV_BATCH {
        match socket.try_recv_from(buf) {
            Ok((n, src)) => node.handle_datagram(now(), via, src, &buf[..n]),
            // WouldBlock: nothing queued; other errors surface at the
            // next recv_from.
            Err(_) => break,
        }
    }
}

fn on_recv(node: &mut Node, via: Via, r: std::io::Result<(usize, SocketAddr)>, buf: &[u8]) {
    match r {
        Ok((n, src)) => node.handle_datagram(now(), via, src, &buf[..n]),
        // ICMP errors and the like surface here; the socket stays usable.
        Err(e) => tracing::debug!("receive error: {e}"),
    }
}

/// Handles one pygo message; true means `stop_process`.
fn on_slips(
    node: &mut Node,
    version: &mut SlipsVersion,
    raw: &str,
    counts: &mut FromSlipsCounts,
) -> bool {
    let msg = match slips::parse_pygo(raw) {
        Ok(m) => m,
        Err(e) => {
            counts.invalid += 1;
            tracing::warn!("ignored message from Slips: {e}");
            return false;
        }
    };
    if !version.accept(msg.version()) {
        counts.other_version += 1;
        tracing::info!(
            theirs = %Untrusted(msg.version().unwrap_or("")),
            ours = version.value(),
            "ignored message from another Slips version"
        );
        return false;
    }
    match msg {
        FromSlips::Stop { .. } => {
            counts.stop += 1;
            true
        }
        FromSlips::Send {
            message, recipient, ..
        } => {
            match recipient {
                slips::Recipient::All => counts.broadcast += 1,
                slips::Recipient::Peer(_) => counts.directed += 1,
            }
            node.handle_slips(now(), message, recipient);
            false
        }
    }
}

/// Binds the control socket, unless disabled. Only another live pigeon
/// stops the start; any other failure leaves pigeon running without it.
async fn bind_control(
    config: &Config,
    base_dir: &Path,
) -> Result<Option<control::ControlSocket>, RunError> {
    if config.control.socket.as_os_str().is_empty() {
        return Ok(None);
    }
    let path = base_dir.join(&config.control.socket);
    match control::bind_waiting(&path, control::BUSY_WAIT).await {
        Ok(s) => Ok(Some(s)),
        Err(e @ control::ControlError::Busy(_)) => Err(RunError::Control(e)),
        Err(e) => {
            tracing::error!("{e}; `pigeon status` will not reach this pigeon");
            Ok(None)
        }
    }
}

/// What the runtime counts for the operator view.
#[derive(Debug, Default)]
struct Tally {
    /// Datagrams the kernel did not take.
    send_errors: SendErrors,
    from_slips: FromSlipsCounts,
    to_slips_go_data: u64,
    to_slips_peer_update: u64,
}

/// Facts of this run for the operator view, fixed at start.
#[derive(Debug)]
struct Facts {
    started: u64,
    redis: String,
    channel_gopy: String,
    outbox_capacity: usize,
    group: std::net::SocketAddrV4,
    metrics: Option<String>,
}

/// The report `pigeon status` and the metrics show; `slips_subscribers`
/// is filled in by the asking task (it needs a Redis round trip).
fn build_report(
    node: &Node,
    bridge: &BridgeHandle,
    version: &SlipsVersion,
    facts: &Facts,
    tally: &Tally,
) -> StatusReport {
    let b = bridge.stats();
    let mut snapshot = node.status(now());
    // The node starts a moment after the process: show the process' uptime.
    snapshot.started_ms = facts.started.min(snapshot.started_ms);
    StatusReport {
        format: crate::status::FORMAT,
        pigeon_version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        health: Health {
            redis: facts.redis.clone(),
            redis_connected: b.connected,
            redis_error: b.last_error,
            redis_reconnects: b.reconnects,
            channel_gopy: facts.channel_gopy.clone(),
            slips_subscribers: None,
            slips_version: version.value().to_owned(),
            slips_version_source: match version.source() {
                VersionSource::File => "file",
                VersionSource::FirstMessage => "message",
                VersionSource::Config => "config",
            }
            .to_owned(),
            outbox_depth: b.outbox_len,
            outbox_capacity: facts.outbox_capacity,
            outbox_dropped: b.dropped_outbox,
            to_slips_delivered: b.published,
            to_slips_go_data: tally.to_slips_go_data,
            to_slips_peer_update: tally.to_slips_peer_update,
            from_slips: tally.from_slips,
            group: facts.group,
            metrics: facts.metrics.clone(),
        },
        node: snapshot,
    }
}

// One argument per thing an action reaches.
#[allow(clippy::too_many_arguments)]
fn carry_out(
    node: &mut Node,
    sockets: &Sockets,
    bridge: &BridgeHandle,
    guard: Option<&RequestGuard>,
    version: &SlipsVersion,
    saver: &PeerSaver,
    tally: &mut Tally,
    lists: &mut ListDir,
) {
    while let Some(action) = node.poll_action() {
        match action {
            Action::Send { to, datagram } => {
                let (socket, dest) = match to {
                    Destination::Multicast => (&sockets.unicast, sockets.group_addr),
                    Destination::Unicast(a) => (&sockets.unicast, a),
                    Destination::Probe(a) => (&sockets.probe, a),
                };
                // Never wait for the socket: a flood that makes us answer
                // many unreachable addresses (challenges to forged sources
                // fill the neighbour queues and the send buffer) must not
                // stall the loop. A datagram the kernel cannot take now is
                // lost like any other; the delivery layer repairs what
                // matters.
                if let Err(e) = socket.try_send_to(&datagram, SocketAddr::V4(dest)) {
                    tally.send_errors.record(&dest, &e);
                }
            }
            Action::ToSlips(m) => match &m {
                // Only the latest update about a peer matters: a newer one
                // replaces the one still waiting (docs/SECURITY.md §7).
                ToSlips::PeerUpdate { peerid, .. } => {
                    tally.to_slips_peer_update += 1;
                    bridge.publish_peer_update(peerid, m.to_json(version.value()));
                }
                ToSlips::GoData { request_ip, .. } => {
                    tally.to_slips_go_data += 1;
                    match (request_ip, guard) {
                        // A request waits for the guard's verdict (off the loop).
                        (Some(ip), Some(guard)) => {
                            guard.submit(ip.clone(), m.to_json(version.value()));
                        }
                        _ => bridge.publish(m.to_json(version.value())),
                    }
                }
            },
            Action::SavePeers(f) => saver.save(f),
            Action::SaveOrgList { org, list } => {
                use base64::Engine as _;
                lists.save(&org, &base64::prelude::BASE64_STANDARD.encode(list));
            }
        }
    }
}

/// org: hands the node the revocation lists that are new or changed in
/// `org.revocation_dir`.
fn read_lists(node: &mut Node, lists: &mut ListDir) {
    for (path, text) in lists.changed() {
        match node.handle_org_list(now(), &text) {
            Ok(true) => tracing::info!(file = %path.display(), "revocation list installed"),
            Ok(false) => {}
            Err(e) => tracing::warn!(file = %path.display(), "revocation list ignored: {e}"),
        }
    }
}

/// Datagrams the kernel did not take, logged at most once per
/// [`SEND_ERROR_LOG_INTERVAL`] so that a flood cannot flood the log.
#[derive(Debug, Default)]
struct SendErrors {
    /// Failed sends since the start.
    total: u64,
    /// Failed sends not yet logged.
    unlogged: u64,
    /// When the last one was logged.
    logged_at: Option<Instant>,
}

/// Shortest gap between two logged send failures.
const SEND_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl SendErrors {
    fn record(&mut self, dest: &SocketAddrV4, e: &std::io::Error) {
        self.total += 1;
        self.unlogged += 1;
        if self
            .logged_at
            .is_none_or(|t| t.elapsed() >= SEND_ERROR_LOG_INTERVAL)
        {
            tracing::warn!(%dest, failed = self.unlogged, total = self.total, "send failed: {e}");
            self.unlogged = 0;
            self.logged_at = Some(Instant::now());
        }
    }
}

/// Writes the peer list off the main loop: only the latest list matters,
/// so a slow disk never queues more than one pending write, and a failed
/// write (full disk, read-only directory) is retried.
struct PeerSaver {
    /// Latest list handed over, numbered.
    tx: watch::Sender<(u64, Option<PeerList>)>,
    /// Number of the latest list on disk.
    done: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl PeerSaver {
    /// `None`: persistence disabled, lists are discarded.
    fn spawn(path: Option<PathBuf>) -> Self {
        let (tx, mut rx) = watch::channel::<(u64, Option<PeerList>)>((0, None));
        let (done_tx, done) = watch::channel(0u64);
        let task = tokio::spawn(async move {
            loop {
                let (n, list) = rx.borrow_and_update().clone();
                if path.is_none() {
                    let _ = done_tx.send(n);
                } else if let (Some(list), Some(path)) = (list, &path) {
                    let p = path.clone();
                    let write = move || peerstore::save(&p, &PeerFile::from_list(&list));
                    match tokio::task::spawn_blocking(write).await {
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

    fn save(&self, list: PeerList) {
        self.tx.send_modify(|(n, l)| {
            *n += 1;
            *l = Some(list);
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
