//! Slips' side of one host's Redis: a subscriber on `p2p_gopy` that keeps
//! and checks every message at receipt, and a connection that publishes
//! Slips' scrolls on `p2p_pygo`; plus [`listen`], the blocking read loop of
//! the tools (`pigeon-slips`, the bench's Slips stand-ins).

use super::check::{GopyMsg, Violation, check_gopy};
use crate::lab::{Lab, current_netns, run_in_netns};
use crate::wait::{now_unix, wait_for};
use crate::{GOPY, PYGO, SLIPS_VERSION};
use std::fmt::Write as _;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// How long a read waits before looking at the stop flag: bounds how long
/// dropping a [`SlipsSide`] takes.
const READ_TIMEOUT: Duration = Duration::from_millis(50);
/// Pause between two connection attempts while Redis is away.
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);
/// Bound of one connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A fresh subscriber must have subscribed within this.
const SUBSCRIBE_LIMIT: Duration = Duration::from_secs(5);

/// One payload received on `p2p_gopy`.
#[derive(Debug, Clone)]
pub struct Received {
    /// When the subscriber read it.
    pub at: Instant,
    /// The payload as published.
    pub raw: Vec<u8>,
    /// [`check_gopy`] at receipt: Slips' clock then decides what is
    /// "in the future".
    pub checked: Result<GopyMsg, Vec<Violation>>,
}

/// A valid `go_data` as Slips received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoData {
    /// The peer that sent it.
    pub reporter: String,
    /// Its base64 `message`, as published.
    pub message: String,
    /// When it arrived.
    pub at: Instant,
}

/// What the subscriber thread shares with its owner.
#[derive(Default)]
struct Inbox {
    received: Mutex<Vec<Received>>,
    /// Successful SUBSCRIBEs so far (2 after one Redis restart).
    sessions: AtomicUsize,
    last_error: Mutex<Option<String>>,
}

/// Locks `m`; a panic elsewhere while holding it leaves the data usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Slips on one Redis: a subscriber thread on `p2p_gopy`, of the network
/// namespace it was started in, that (re)connects and (re)subscribes by
/// itself like redis-py and keeps every payload in order; and a connection
/// for Slips' commands (PUBLISH on `p2p_pygo`, GET), made again if Redis
/// restarted. Stopped on drop.
pub struct SlipsSide {
    inbox: Arc<Inbox>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    url: String,
    netns: File,
    con: Mutex<Option<redis::Connection>>,
}

impl SlipsSide {
    /// Slips of lab host `i` (its Redis, DB 0); returns once subscribed.
    pub fn start(lab: &Lab, i: usize) -> SlipsSide {
        let url = lab.redis_url(i);
        lab.run_in(i, move || SlipsSide::start_here(&url))
    }

    /// Slips on the Redis at `url`, seen from the calling thread's network
    /// namespace (e.g. inside `in_loopback_netns`); returns once
    /// subscribed (at most 5 s, else panics).
    pub fn start_here(url: &str) -> SlipsSide {
        let inbox = Arc::new(Inbox::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, halt, target) = (Arc::clone(&inbox), Arc::clone(&stop), url.to_owned());
        // A thread spawned here stays in this namespace, and so do its
        // reconnections.
        let thread = thread::Builder::new()
            .name("slips-gopy".to_owned())
            .spawn(move || subscriber_loop(&target, &shared, &halt))
            .unwrap_or_else(|e| panic!("cannot spawn the gopy subscriber: {e}"));
        let side = SlipsSide {
            inbox,
            stop,
            thread: Some(thread),
            url: url.to_owned(),
            netns: current_netns(),
            con: Mutex::new(None),
        };
        wait_for(
            SUBSCRIBE_LIMIT,
            &format!("a subscription to {GOPY} on {url}"),
            || side.summary(),
            || (side.sessions() > 0).then_some(()),
        );
        side
    }

    // -------------------------------------------------------------- commands

    /// One command on Slips' connection.
    pub fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let mut con = lock(&self.con);
        if let Some(c) = con.as_mut() {
            match cmd.query(c) {
                Ok(v) => return Ok(v),
                // Redis went away meanwhile: connect again below.
                Err(e) if e.is_io_error() || e.is_connection_dropped() => {}
                Err(e) => return Err(e),
            }
        }
        let url = self.url.clone();
        let fresh = run_in_netns(&self.netns, move || {
            redis::Client::open(url)?.get_connection_with_timeout(CONNECT_TIMEOUT)
        });
        let c = con.insert(fresh?);
        cmd.query(c)
    }

    /// Publishes `scroll` on `p2p_pygo` as Slips does; returns the number
    /// of receivers.
    pub fn publish(&self, scroll: &str) -> i64 {
        self.cmd(redis::cmd("PUBLISH").arg(PYGO).arg(scroll))
            .unwrap_or_else(|e| panic!("PUBLISH on {PYGO} at {}: {e}", self.url))
    }

    /// `GET key`.
    pub fn get(&self, key: &str) -> Option<String> {
        self.cmd(redis::cmd("GET").arg(key))
            .unwrap_or_else(|e| panic!("GET {key} at {}: {e}", self.url))
    }

    /// How many clients are subscribed to `channel`.
    pub fn subscribers(&self, channel: &str) -> i64 {
        let (_, n): (String, i64) = self
            .cmd(redis::cmd("PUBSUB").arg("NUMSUB").arg(channel))
            .unwrap_or_else(|e| panic!("PUBSUB NUMSUB {channel} at {}: {e}", self.url));
        n
    }

    /// How many clients (the pigeon) listen on `p2p_pygo`.
    pub fn pygo_subscribers(&self) -> i64 {
        self.subscribers(PYGO)
    }

    // -------------------------------------------------------------- inbox

    /// Every payload received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.inbox.received).clone()
    }

    /// How many payloads were received so far.
    pub fn len(&self) -> usize {
        lock(&self.inbox.received).len()
    }

    /// Whether nothing was received yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(arrival, payload)` of everything received.
    pub fn messages(&self) -> Vec<(Instant, Vec<u8>)> {
        lock(&self.inbox.received)
            .iter()
            .map(|r| (r.at, r.raw.clone()))
            .collect()
    }

    /// Every payload received, as text.
    pub fn texts(&self) -> Vec<String> {
        lock(&self.inbox.received)
            .iter()
            .map(|r| String::from_utf8_lossy(&r.raw).into_owned())
            .collect()
    }

    /// Waits until `count` payloads were received (panics after `limit`);
    /// returns them as text.
    pub fn wait_texts(&self, count: usize, limit: Duration) -> Vec<String> {
        wait_for(
            limit,
            &format!("{count} messages on {GOPY}"),
            || self.summary(),
            || (self.len() >= count).then(|| self.texts()),
        )
    }

    /// Every valid `go_data`, in order.
    pub fn go_data(&self) -> Vec<GoData> {
        self.go_data_since(0)
    }

    /// The valid `go_data` among the payloads from index `from` on.
    pub fn go_data_since(&self, from: usize) -> Vec<GoData> {
        lock(&self.inbox.received)
            .iter()
            .skip(from)
            .filter_map(|r| match &r.checked {
                Ok(GopyMsg::GoData {
                    reporter, message, ..
                }) => Some(GoData {
                    reporter: reporter.clone(),
                    message: message.clone(),
                    at: r.at,
                }),
                _ => None,
            })
            .collect()
    }

    /// `(reporter, message)` of every valid `go_data` from index `from` on.
    pub fn go_data_pairs_since(&self, from: usize) -> Vec<(String, String)> {
        self.go_data_since(from)
            .into_iter()
            .map(|g| (g.reporter, g.message))
            .collect()
    }

    /// `(reporter, message)` of every valid `go_data`.
    pub fn go_data_pairs(&self) -> Vec<(String, String)> {
        self.go_data_pairs_since(0)
    }

    /// Arrival of the first valid `go_data` whose message is `b64`.
    pub fn go_data_arrival(&self, b64: &str) -> Option<Instant> {
        self.go_data_arrival_from(b64, 0)
    }

    /// [`Self::go_data_arrival`] among the payloads from index `from` on.
    pub fn go_data_arrival_from(&self, b64: &str, from: usize) -> Option<Instant> {
        self.go_data_since(from)
            .into_iter()
            .find(|g| g.message == b64)
            .map(|g| g.at)
    }

    /// How many valid `go_data` carry the message `b64`.
    pub fn count_go_data(&self, b64: &str) -> usize {
        self.go_data().iter().filter(|g| g.message == b64).count()
    }

    /// Every valid `peer_update` from index `from` on: `(peerid, ip,
    /// reliability)`.
    pub fn peer_updates_since(&self, from: usize) -> Vec<(String, Option<String>, Option<f64>)> {
        lock(&self.inbox.received)
            .iter()
            .skip(from)
            .filter_map(|r| match &r.checked {
                Ok(GopyMsg::PeerUpdate {
                    peerid,
                    ip,
                    reliability,
                    ..
                }) => Some((peerid.clone(), ip.clone(), *reliability)),
                _ => None,
            })
            .collect()
    }

    /// Whether a valid `peer_update` names `peer_id`.
    pub fn knows(&self, peer_id: &str) -> bool {
        self.peer_updates_since(0).iter().any(|u| u.0 == peer_id)
    }

    /// Whether a valid `peer_update` from index `from` on names `peer_id`
    /// with the address `ip`.
    pub fn has_peer_update(&self, from: usize, peer_id: &str, ip: &str) -> bool {
        self.peer_updates_since(from)
            .iter()
            .any(|(p, got, _)| p == peer_id && got.as_deref() == Some(ip))
    }

    /// `(ip, reliability)` of the latest valid `peer_update` about `peer`.
    pub fn last_peer_update(&self, peer: &str) -> Option<(Option<String>, Option<f64>)> {
        self.peer_updates_since(0)
            .into_iter()
            .rev()
            .find(|u| u.0 == peer)
            .map(|(_, ip, reliability)| (ip, reliability))
    }

    /// Every payload that failed [`check_gopy`], with the reasons.
    pub fn invalid(&self) -> Vec<String> {
        lock(&self.inbox.received)
            .iter()
            .filter_map(|r| match &r.checked {
                Err(v) => Some(format!("{}: {v:?}", String::from_utf8_lossy(&r.raw))),
                Ok(_) => None,
            })
            .collect()
    }

    /// Successful subscriptions so far (2 after one Redis restart).
    pub fn sessions(&self) -> usize {
        self.inbox.sessions.load(Ordering::Relaxed)
    }

    /// The last error that ended a subscription, if any.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.inbox.last_error).clone()
    }

    /// Counts, subscriptions, last error and the last few payloads.
    pub fn summary(&self) -> String {
        let all = self.received();
        let mut s = format!(
            "{} gopy message(s) ({} invalid), {} subscription(s), last error {:?}",
            all.len(),
            all.iter().filter(|r| r.checked.is_err()).count(),
            self.sessions(),
            self.last_error()
        );
        for r in all.iter().rev().take(8).rev() {
            let _ = write!(s, "\n    {}", String::from_utf8_lossy(&r.raw));
        }
        s
    }
}

impl Drop for SlipsSide {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn subscriber_loop(url: &str, inbox: &Inbox, halt: &AtomicBool) {
    while !halt.load(Ordering::Relaxed) {
        let session = || -> redis::RedisResult<()> {
            let client = redis::Client::open(url)?;
            let mut con = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
            let mut pubsub = con.as_pubsub();
            pubsub.subscribe(GOPY)?;
            pubsub.set_read_timeout(Some(READ_TIMEOUT))?;
            inbox.sessions.fetch_add(1, Ordering::Relaxed);
            while !halt.load(Ordering::Relaxed) {
                match pubsub.get_message() {
                    Ok(msg) => {
                        let at = Instant::now();
                        let raw = msg.get_payload_bytes().to_vec();
                        let checked = check_gopy(&raw, SLIPS_VERSION, now_unix());
                        lock(&inbox.received).push(Received { at, raw, checked });
                    }
                    Err(e) if e.is_timeout() => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        };
        if let Err(e) = session() {
            *lock(&inbox.last_error) = Some(e.to_string());
        }
        thread::sleep(RECONNECT_PAUSE);
    }
}

/// `PUBLISH channel text` on `con`; the number of receivers.
pub fn publish(con: &mut redis::Connection, channel: &str, text: &str) -> redis::RedisResult<i64> {
    redis::cmd("PUBLISH").arg(channel).arg(text).query(con)
}

/// What a [`listen`] handler wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// Stop: [`listen`] returns.
    Stop,
}

/// Subscribes `con` to `channels`, calls `subscribed` once that is done,
/// then hands every message to `on_msg(channel, payload)` until it says
/// [`Flow::Stop`] or `deadline` passes. For tools that read one Redis until
/// something happened; errors if the connection is lost (tools do not
/// reconnect: a lost Redis ends their run).
pub fn listen<E: From<redis::RedisError>>(
    con: &mut redis::Connection,
    channels: &[&str],
    deadline: Instant,
    subscribed: impl FnOnce() -> Result<(), E>,
    mut on_msg: impl FnMut(&str, &[u8]) -> Result<Flow, E>,
) -> Result<(), E> {
    let mut pubsub = con.as_pubsub();
    for c in channels {
        pubsub.subscribe(*c)?;
    }
    subscribed()?;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        pubsub.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        match pubsub.get_message() {
            Ok(m) => {
                if on_msg(m.get_channel_name(), m.get_payload_bytes())? == Flow::Stop {
                    return Ok(());
                }
            }
            Err(e) if e.is_timeout() => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}
