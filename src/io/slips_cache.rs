//! The request guard: before a peer's `request` reaches Slips, read what
//! Slips will read to answer it, and deliver it only if Slips can answer
//! without crashing (`slips::request_guard::judge`; docs/SLIPS.md §11).
//!
//! Slips 1.1.21 reads `HGET IPsInfo:<field> <ip>` for `threat_level`,
//! `score` and `confidence` on its cache connection, Redis port 6379 DB 1
//! (`slips_files/core/database/redis_db/database.py`,
//! `connect_to_redis_server` and `get_ip_info`). The guard reads the same
//! three values in one pipelined round trip. If the cache cannot be read
//! it fails safe: the request is dropped, counted, and the failure logged
//! (at most every 10 s); the connection is retried on a later request, at
//! most once a second.
//!
//! Requests are judged in a task of their own, in arrival order, so a slow
//! or dead cache never holds up the main loop or other messages for Slips.
//! Only requests wait here: reports, blames and peer updates go to the
//! Redis bridge directly. A request may thus reach Slips after messages
//! that arrived later; nothing Slips does depends on that order (it
//! answers a request from its own cache, not from other peers' messages).

use crate::io::redis_bridge::{self, BridgeHandle, RedisTarget};
use crate::slips::request_guard::{self, FIELDS, Verdict};
use crate::untrusted::Untrusted;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Requests waiting to be judged; beyond this they are dropped (counted as
/// `request_guard_full`). A local Redis answers in well under a
/// millisecond, and peers' requests are rate-limited in the core.
pub const QUEUE: usize = 256;
/// Shortest time between two connection attempts to a cache that failed.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// Bound on one read (the three `HGET`s).
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Repeated log lines of one kind appear at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Counters of the guard, for the exit summary and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuardStats {
    /// Requests delivered: Slips can answer them.
    pub passed: u64,
    /// `request_unanswerable`: dropped because Slips would crash on them.
    pub unanswerable: u64,
    /// `request_cache_unreadable`: dropped because the cache could not be
    /// read.
    pub unreadable: u64,
    /// `request_guard_full`: dropped because [`QUEUE`] requests were
    /// already waiting.
    pub full: u64,
}

#[derive(Default)]
struct Counters {
    passed: AtomicU64,
    unanswerable: AtomicU64,
    unreadable: AtomicU64,
    full: AtomicU64,
}

struct Job {
    ip: String,
    json: String,
}

/// Handle of the guard task.
pub struct RequestGuard {
    tx: mpsc::Sender<Job>,
    counters: Arc<Counters>,
}

impl RequestGuard {
    /// Starts the guard: requests judged safe are published through
    /// `bridge`. `password` is used when `target` carries none.
    pub fn spawn(target: RedisTarget, password: Option<String>, bridge: BridgeHandle) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        let reader = CacheReader::new(target, password);
        tokio::spawn(run(rx, reader, bridge, Arc::clone(&counters)));
        Self { tx, counters }
    }

    /// Queues the gopy message `json`, a request about `ip`, for judgement.
    /// Never blocks.
    pub fn submit(&self, ip: String, json: String) {
        if self.tx.try_send(Job { ip, json }).is_err() {
            let n = self.counters.full.fetch_add(1, Ordering::Relaxed);
            if n.is_multiple_of(1000) {
                tracing::warn!(
                    dropped = n + 1,
                    "request guard queue full: requests from peers dropped (request_guard_full)"
                );
            }
        }
    }

    /// Current counters.
    pub fn stats(&self) -> GuardStats {
        let c = &self.counters;
        GuardStats {
            passed: c.passed.load(Ordering::Relaxed),
            unanswerable: c.unanswerable.load(Ordering::Relaxed),
            unreadable: c.unreadable.load(Ordering::Relaxed),
            full: c.full.load(Ordering::Relaxed),
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<Job>,
    mut reader: CacheReader,
    bridge: BridgeHandle,
    counters: Arc<Counters>,
) {
    let mut unreadable_log: Option<Instant> = None;
    let mut unanswerable_log: Option<Instant> = None;
    let mut failing = false;
    let due = |last: &mut Option<Instant>| {
        let now = Instant::now();
        let ready = last.is_none_or(|t| now.duration_since(t) >= LOG_EVERY);
        if ready {
            *last = Some(now);
        }
        ready
    };
    while let Some(job) = rx.recv().await {
        match reader.read(&job.ip).await {
            Ok([t, s, c]) => {
                if failing {
                    failing = false;
                    unreadable_log = None;
                    tracing::info!(cache = %reader.target, "Slips' cache readable again; judging requests");
                }
                let verdict = request_guard::judge(t.as_deref(), s.as_deref(), c.as_deref());
                if verdict.is_safe() {
                    counters.passed.fetch_add(1, Ordering::Relaxed);
                    bridge.publish(job.json);
                } else {
                    let n = counters.unanswerable.fetch_add(1, Ordering::Relaxed) + 1;
                    let (level, detail) = match verdict {
                        Verdict::Crash(r) => ("Slips would crash", r),
                        _ => ("outcome in Slips uncertain", verdict.reason()),
                    };
                    if due(&mut unanswerable_log) {
                        tracing::info!(
                            ip = %Untrusted(&job.ip), total = n,
                            "request from a peer not delivered: Slips has no usable data about the IP ({level}: {detail}); counted as request_unanswerable"
                        );
                    } else {
                        tracing::debug!(ip = %Untrusted(&job.ip), "request_unanswerable: {detail}");
                    }
                }
            }
            Err(e) => {
                failing = true;
                let n = counters.unreadable.fetch_add(1, Ordering::Relaxed) + 1;
                if due(&mut unreadable_log) {
                    tracing::warn!(
                        cache = %reader.target, total = n,
                        "cannot read Slips' cache ({}): requests from peers are dropped until it can be read (request_cache_unreadable)",
                        Untrusted(&e)
                    );
                }
            }
        }
    }
}

/// Reads Slips' cache, reconnecting on demand.
struct CacheReader {
    target: RedisTarget,
    password: Option<String>,
    conn: Option<redis::aio::MultiplexedConnection>,
    /// When the last connection attempt failed, and why.
    failed: Option<(Instant, String)>,
}

impl CacheReader {
    fn new(target: RedisTarget, password: Option<String>) -> Self {
        let password = target.password.clone().or(password);
        Self {
            target,
            password,
            conn: None,
            failed: None,
        }
    }

    /// The raw replies of `HGET IPsInfo:<field> <ip>` for [`FIELDS`].
    async fn read(&mut self, ip: &str) -> Result<[Option<Vec<u8>>; 3], String> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                if let Some((at, why)) = &self.failed
                    && at.elapsed() < RECONNECT_EVERY
                {
                    return Err(why.clone());
                }
                match redis_bridge::plain_connection(&self.target, self.password.as_deref()).await {
                    Ok(c) => {
                        self.failed = None;
                        self.conn.insert(c)
                    }
                    Err(why) => {
                        self.failed = Some((Instant::now(), why.clone()));
                        return Err(why);
                    }
                }
            }
        };
        let mut pipe = redis::pipe();
        for field in FIELDS {
            pipe.cmd("HGET").arg(format!("IPsInfo:{field}")).arg(ip);
        }
        let reply = tokio::time::timeout(
            READ_TIMEOUT,
            pipe.query_async::<(Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>)>(conn),
        )
        .await;
        match reply {
            Ok(Ok((t, s, c))) => Ok([t, s, c]),
            Ok(Err(e)) => {
                // A WRONGTYPE or similar leaves the connection usable; a
                // broken one is rebuilt on the next request.
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    self.conn = None;
                    self.failed = Some((Instant::now(), e.to_string()));
                }
                Err(e.to_string())
            }
            Err(_) => {
                self.conn = None;
                let why = format!("no reply within {READ_TIMEOUT:?}");
                self.failed = Some((Instant::now(), why.clone()));
                Err(why)
            }
        }
    }
}
