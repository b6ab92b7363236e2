//! The bridge's handle and its outbox: what the runtime calls
//! ([`BridgeHandle`], [`BridgeProbe`]), the state it shares with the
//! background tasks ([`Shared`]), the bounded in-order queue of messages
//! for Slips ([`Outbox`]) and the task that delivers it ([`deliver`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::supervisor::bounded;
use super::{Backoff, LOG_INTERVAL, RETRY_MIN, RateLimit, until_shutdown};

/// Cap of the `PUBLISH` retry delay.
const PUBLISH_RETRY_MAX: Duration = Duration::from_secs(5);
/// Cap of the retry delay while nobody is subscribed to the channel for
/// Slips: short, so messages flow soon after Slips resubscribes.
const NO_SUBSCRIBER_RETRY_MAX: Duration = Duration::from_secs(1);

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
    /// The handle of a bridge whose tasks share `shared` and stop when
    /// `shutdown` is dropped.
    pub(super) fn new(shared: Arc<Shared>, shutdown: watch::Sender<()>) -> Self {
        Self {
            inner: Arc::new(HandleInner {
                shared,
                _shutdown: shutdown,
            }),
        }
    }

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

/// State shared by the handles and the background tasks.
pub(super) struct Shared {
    /// Channel subscribed to (Slips → pigeon).
    pub(super) channel_pygo: String,
    /// Channel published on (pigeon → Slips).
    pub(super) channel_gopy: String,
    /// Messages for Slips not yet delivered. A std mutex: `publish` must
    /// not block or await, and the critical sections are tiny.
    outbox: Mutex<Outbox>,
    /// Signalled on every `publish` (wakes the delivery task).
    outbox_changed: Notify,
    /// Signalled whenever a message leaves the outbox (wakes `flush`).
    drained: Notify,
    /// Keys to maintain in Redis.
    pub(super) keys: Mutex<KeyState>,
    /// Signalled on every `set`/`delete` (wakes the supervisor).
    pub(super) keys_changed: Notify,
    /// The usable connection: `Some` exactly while connected and
    /// subscribed. The delivery task waits on it.
    pub(super) conn: watch::Sender<Option<ConnectionManager>>,
    /// See [`BridgeStats::last_error`].
    last_error: Mutex<Option<String>>,
    /// See [`BridgeStats::published`].
    published: AtomicU64,
    /// See [`BridgeStats::dropped_outbox`].
    dropped_outbox: AtomicU64,
    /// See [`BridgeStats::superseded_peer_updates`].
    superseded: AtomicU64,
    /// See [`BridgeStats::reconnects`].
    pub(super) reconnects: AtomicU64,
    /// See [`BridgeStats::received`].
    pub(super) received: AtomicU64,
    /// See [`BridgeStats::dropped_non_utf8`].
    pub(super) dropped_non_utf8: AtomicU64,
}

impl Shared {
    /// Nothing queued, not connected, all counters 0.
    pub(super) fn new(channel_pygo: String, channel_gopy: String, capacity: NonZeroUsize) -> Self {
        Self {
            channel_pygo,
            channel_gopy,
            outbox: Mutex::new(Outbox::new(capacity.get())),
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
        }
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn keys(&self) -> MutexGuard<'_, KeyState> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn set_last_error(&self, error: Option<String>) {
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
pub(super) struct KeyState {
    /// Keys to (re)set after every connection.
    pub(super) values: BTreeMap<String, String>,
    /// Keys to delete once (disjoint from `values`).
    pub(super) deletes: BTreeSet<String>,
    /// Bumped on every change.
    pub(super) version: u64,
    /// `version` last written to Redis successfully.
    pub(super) applied: u64,
}

/// Delivers the outbox in order, one message at a time, whenever
/// connected; a message leaves the outbox only once a `PUBLISH` of it
/// reached at least one subscriber.
pub(super) async fn deliver(shared: Arc<Shared>, mut shutdown: watch::Receiver<()>) {
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
}
