//! End to end: the real `pigeon` binary, started exactly as Slips 1.1.21
//! starts it (a [`SlipsTree`] per host, Slips' argv, cwd and stdout), in
//! the hosts of a simulated LAN ([`Lab`]), each host with its own Redis.
//!
//! The "Slips side" of every host is played by the redis crate's plain
//! synchronous client, created inside the host's network namespace: a
//! subscriber on `p2p_gopy` that reconnects by itself (like redis-py), and
//! `PUBLISH`es on `p2p_pygo` of the exact scrolls Slips sends
//! ([`slips_checks::pygo_scroll`] and friends). Every gopy message any test
//! receives is checked with [`slips_checks::check_gopy`] at receipt, and
//! each test ends by asserting that all of them passed.
//!
//! The pigeon's Redis bridge publishes only while someone listens on
//! `p2p_gopy`, so every Slips side subscribes before its pigeon starts.
//!
//! Waits are bounded polls; a failed wait panics with the relevant tails of
//! every pigeon's `p2p.log` (its stdout) and stderr. The few fixed waits
//! are for "nothing else arrives" checks, which cannot be polled.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::lab::{self, LAB_REDIS_PORT, Lab, LabChild, SLIPS_VERSION, SlipsTree};
use crate::slips_checks::{
    GopyMsg, Violation, check_gopy, now_unix, pygo_scroll, report_b64, report_scroll, request_b64,
    request_scroll,
};

pub(crate) const PYGO: &str = "p2p_pygo";
pub(crate) const GOPY: &str = "p2p_gopy";
/// The Slips side's Redis (DB 0 of the host's lab Redis).
const REDIS_URL: &str = "redis://127.0.0.1:6379/0";

/// Bound of every wait for what happens at once (a start, a message, an
/// exit, a log line): only a hang reaches it, however busy the machine.
/// The tests judge outcomes, never how soon: Slips reads `multiAddress`
/// about 2 s after starting the pigeon, and the pigeon bounds its own
/// shutdown to 1.5 s, but a loaded machine may take longer to show either
/// (the times are printed).
pub(crate) const HANG_LIMIT: Duration = Duration::from_secs(30);
/// `multiAddress` after a start.
const MULTIADDR_LIMIT: Duration = HANG_LIMIT;
/// Discovery of every peer by every pigeon: a few announcements.
pub(crate) const DISCOVERY_LIMIT: Duration = HANG_LIMIT;
/// A message through pygo → LAN → gopy.
pub(crate) const DELIVERY_LIMIT: Duration = HANG_LIMIT;
/// "Nothing else arrives" is checked for this long.
const QUIET: Duration = Duration::from_secs(1);
/// A pigeon's shutdown (the goodbye, saving the peer list).
pub(crate) const EXIT_LIMIT: Duration = HANG_LIMIT;

// ------------------------------------------------------------------ helpers

/// Polls `check` every 20 ms until it returns `Some` or `limit` passes;
/// then panics with `what` and the diagnostics `diag` produces.
pub(crate) fn wait_for<T>(
    limit: Duration,
    what: &str,
    diag: impl Fn() -> String,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        if start.elapsed() >= limit {
            panic!("timed out after {limit:?} waiting for {what}\n{}", diag());
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A synchronous Redis command, from the calling thread's namespace.
fn redis_cmd<T: redis::FromRedisValue>(cmd: &redis::Cmd) -> redis::RedisResult<T> {
    let client = redis::Client::open(REDIS_URL)?;
    let mut con = client.get_connection_with_timeout(Duration::from_secs(1))?;
    cmd.query(&mut con)
}

/// `/ip4/<ip>/udp/<port>/p2p/<peer id>`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MultiAddr {
    pub(crate) ip: Ipv4Addr,
    pub(crate) port: u16,
    pub(crate) peer_id: String,
}

impl MultiAddr {
    fn parse(s: &str) -> Option<MultiAddr> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            ["", "ip4", ip, "udp", port, "p2p", id] if !id.is_empty() => Some(MultiAddr {
                ip: ip.parse().ok()?,
                port: port.parse().ok()?,
                peer_id: (*id).to_owned(),
            }),
            _ => None,
        }
    }
}

/// Today's UTC date as `YYYY-MM-DD` (civil-from-days, H. Hinnant), the
/// suffix of today's log file.
fn today_utc() -> String {
    let z = now_unix().div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

// ------------------------------------------------------------------ Slips side

/// One payload received on `p2p_gopy`, checked at receipt.
#[derive(Debug, Clone)]
struct Received {
    raw: Vec<u8>,
    checked: Result<GopyMsg, Vec<Violation>>,
}

/// Slips' subscriber on `p2p_gopy` of one host: a thread of that host's
/// namespace that (re)connects and (re)subscribes by itself and keeps
/// every payload, in order.
pub(crate) struct SlipsSide {
    received: Arc<Mutex<Vec<Received>>>,
    /// Successful SUBSCRIBEs so far (2 after one Redis restart).
    sessions: Arc<AtomicUsize>,
    last_error: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl SlipsSide {
    /// Starts the subscriber in host `i` (returns at once).
    pub(crate) fn start(lab: &Lab, i: usize) -> SlipsSide {
        let received = Arc::new(Mutex::new(Vec::new()));
        let sessions = Arc::new(AtomicUsize::new(0));
        let last_error = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (out, count, err, halt) = (
            Arc::clone(&received),
            Arc::clone(&sessions),
            Arc::clone(&last_error),
            Arc::clone(&stop),
        );
        // A thread spawned from inside the host's namespace stays there,
        // so its reconnections are made in the host too.
        let handle = lab.run_in(i, move || {
            thread::Builder::new()
                .name(format!("slips-h{i}"))
                .spawn(move || subscriber_loop(&out, &count, &err, &halt))
                .expect("cannot spawn the Slips subscriber")
        });
        SlipsSide {
            received,
            sessions,
            last_error,
            stop,
            thread: Some(handle),
        }
    }

    fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn len(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// `(reporter, message)` of every valid go_data, in order.
    pub(crate) fn go_data(&self) -> Vec<(String, String)> {
        self.go_data_since(0)
    }

    /// [`Self::go_data`] among the messages received from index `from` on.
    pub(crate) fn go_data_since(&self, from: usize) -> Vec<(String, String)> {
        self.all()
            .into_iter()
            .skip(from)
            .filter_map(|r| match r.checked {
                Ok(GopyMsg::GoData {
                    reporter, message, ..
                }) => Some((reporter, message)),
                _ => None,
            })
            .collect()
    }

    /// Whether a valid peer_update from index `from` on names `peer_id`
    /// with address `ip`.
    fn has_peer_update(&self, from: usize, peer_id: &str, ip: Ipv4Addr) -> bool {
        self.all().into_iter().skip(from).any(|r| {
            matches!(r.checked, Ok(GopyMsg::PeerUpdate { peerid, ip: Some(got), .. })
                if peerid == peer_id && got == ip.to_string())
        })
    }

    fn summary(&self) -> String {
        let all = self.all();
        let mut s = format!(
            "{} gopy message(s), {} subscription(s), last error {:?}",
            all.len(),
            self.sessions.load(Ordering::Relaxed),
            self.last_error.lock().unwrap()
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

fn subscriber_loop(
    out: &Mutex<Vec<Received>>,
    sessions: &AtomicUsize,
    last_error: &Mutex<Option<String>>,
    halt: &AtomicBool,
) {
    while !halt.load(Ordering::Relaxed) {
        let session = || -> redis::RedisResult<()> {
            let client = redis::Client::open(REDIS_URL)?;
            let mut con = client.get_connection_with_timeout(Duration::from_secs(1))?;
            let mut pubsub = con.as_pubsub();
            pubsub.subscribe(GOPY)?;
            pubsub.set_read_timeout(Some(Duration::from_millis(100)))?;
            sessions.fetch_add(1, Ordering::Relaxed);
            while !halt.load(Ordering::Relaxed) {
                match pubsub.get_message() {
                    Ok(msg) => {
                        let raw: Vec<u8> = msg.get_payload()?;
                        // Slips' clock at receipt decides what is "future".
                        let checked = check_gopy(&raw, SLIPS_VERSION, now_unix());
                        out.lock().unwrap().push(Received { raw, checked });
                    }
                    Err(e) if e.is_timeout() => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        };
        if let Err(e) = session() {
            *last_error.lock().unwrap() = Some(e.to_string());
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ------------------------------------------------------------------ the world

/// One lab host: its Slips tree, its Slips side and its pigeon.
pub(crate) struct Host {
    pub(crate) i: usize,
    pub(crate) ip: Ipv4Addr,
    /// Slips' `-port` for this host.
    pub(crate) port: u16,
    pub(crate) tree: SlipsTree,
    pub(crate) slips: SlipsSide,
    pub(crate) pigeon: Option<LabChild>,
    /// The pigeon's multiaddress once known.
    pub(crate) addr: Option<MultiAddr>,
}

impl Host {
    pub(crate) fn peer_id(&self) -> &str {
        &self
            .addr
            .as_ref()
            .unwrap_or_else(|| panic!("host {} has no known peer id", self.i))
            .peer_id
    }

    pub(crate) fn key_file(&self) -> PathBuf {
        self.tree.runtime_dir().join("pigeon.keys")
    }

    pub(crate) fn log(&self) -> String {
        self.tree.read_log()
    }
}

/// A lab with one Slips tree, Slips side and (optional) pigeon per host.
/// Field order matters: pigeons and subscribers go before the lab.
pub(crate) struct World {
    pub(crate) hosts: Vec<Host>,
    pub(crate) lab: Lab,
}

impl World {
    /// A lab of `n` hosts, each with a Slips side already subscribed to
    /// `p2p_gopy`; no pigeon runs yet.
    pub(crate) fn up(n: usize) -> World {
        let lab = Lab::up(n);
        let hosts = (1..=n)
            .map(|i| Host {
                i,
                ip: lab.host_ip(i),
                // Slips picks a free port in 32768..65534 per run.
                port: 40_000 + u16::try_from(i).unwrap(),
                tree: SlipsTree::new(),
                slips: SlipsSide::start(&lab, i),
                pigeon: None,
                addr: None,
            })
            .collect();
        let world = World { hosts, lab };
        for i in 1..=n {
            world.wait_subscribers(i, GOPY, 1);
        }
        world
    }

    pub(crate) fn h(&self, i: usize) -> &Host {
        &self.hosts[i - 1]
    }

    pub(crate) fn h_mut(&mut self, i: usize) -> &mut Host {
        &mut self.hosts[i - 1]
    }

    /// Tails of every pigeon's logs and every Slips side's messages.
    pub(crate) fn diag(&self) -> String {
        let mut s = String::new();
        for h in &self.hosts {
            let _ = writeln!(
                s,
                "===== host {} ({}), pigeon pid {:?}, {:?}",
                h.i,
                h.ip,
                h.pigeon.as_ref().map(LabChild::pid),
                h.addr.as_ref().map(|a| &a.peer_id)
            );
            let _ = writeln!(
                s,
                "--- p2p.log (stdout), last lines:\n{}",
                tail(&h.log(), 25)
            );
            let _ = writeln!(s, "--- stderr:\n{}", tail(&h.tree.read_stderr(), 10));
            let _ = writeln!(s, "--- Slips side: {}", h.slips.summary());
        }
        s
    }

    /// Polls `check` (see [`wait_for`]); an invalid gopy message fails
    /// the wait at once, naming the message.
    pub(crate) fn wait<T>(
        &self,
        limit: Duration,
        what: &str,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        wait_for(
            limit,
            what,
            || self.diag(),
            || {
                self.assert_all_valid();
                check()
            },
        )
    }

    /// A Redis command from host `i`'s Slips side.
    pub(crate) fn redis<T: redis::FromRedisValue + Send>(&self, i: usize, cmd: &redis::Cmd) -> T {
        self.lab
            .run_in(i, || redis_cmd(cmd))
            .unwrap_or_else(|e| panic!("redis {cmd:?} in host {i}: {e}\n{}", self.diag()))
    }

    /// Publishes `payload` on `p2p_pygo` of host `i`, as Slips does;
    /// returns the number of receivers.
    pub(crate) fn publish(&self, i: usize, payload: &str) -> i64 {
        self.redis(i, redis::cmd("PUBLISH").arg(PYGO).arg(payload))
    }

    /// [`Self::publish`] to a running pigeon, which must receive it.
    pub(crate) fn publish_to_pigeon(&self, i: usize, payload: &str) {
        let n = self.publish(i, payload);
        assert_eq!(
            n,
            1,
            "nobody got {payload} on {PYGO} of host {i}\n{}",
            self.diag()
        );
    }

    pub(crate) fn get(&self, i: usize, key: &str) -> Option<String> {
        self.redis(i, redis::cmd("GET").arg(key))
    }

    pub(crate) fn subscribers(&self, i: usize, channel: &str) -> i64 {
        let (_, n): (String, i64) = self.redis(i, redis::cmd("PUBSUB").arg("NUMSUB").arg(channel));
        n
    }

    pub(crate) fn wait_subscribers(&self, i: usize, channel: &str, n: i64) {
        self.wait(
            HANG_LIMIT,
            &format!("{n} subscriber(s) on {channel} in host {i}"),
            || (self.subscribers(i, channel) == n).then_some(()),
        );
    }

    /// Starts host `i`'s pigeon as Slips does (with `extra` arguments),
    /// then waits until `multiAddress` is set (Slips reads it about 2 s
    /// after the spawn; how long it took is printed) and the pigeon
    /// listens on `p2p_pygo`.
    pub(crate) fn start_with(&mut self, i: usize, extra: &[&str]) -> MultiAddr {
        let _: i64 = self.redis(i, redis::cmd("DEL").arg("multiAddress"));
        let h = self.h(i);
        let spawned = Instant::now();
        let child = h
            .tree
            .spawn_in_lab_with(&self.lab, i, h.port, extra)
            .unwrap_or_else(|e| panic!("cannot start the pigeon in host {i}: {e}"));
        self.h_mut(i).pigeon = Some(child);
        let value = self.wait(
            MULTIADDR_LIMIT,
            &format!("multiAddress in host {i}"),
            || self.get(i, "multiAddress"),
        );
        let elapsed = spawned.elapsed();
        let addr = MultiAddr::parse(&value).unwrap_or_else(|| {
            panic!(
                "multiAddress {value:?} is not /ip4/IP/udp/PORT/p2p/ID\n{}",
                self.diag()
            )
        });
        assert_eq!(addr.ip, self.h(i).ip, "multiAddress {value}");
        assert!(
            addr.peer_id.starts_with("12D3KooW"),
            "peer id of an ed25519 key: {value}"
        );
        eprintln!("host {i}: multiAddress {elapsed:?} after the spawn");
        self.wait_subscribers(i, PYGO, 1);
        self.h_mut(i).addr = Some(addr.clone());
        addr
    }

    pub(crate) fn start(&mut self, i: usize) -> MultiAddr {
        let addr = self.start_with(i, &[]);
        assert_eq!(addr.port, self.h(i).port, "the -port Slips gave");
        addr
    }

    /// Waits until every Slips side in `hosts` got a peer_update, with the
    /// right address, for every other host in `hosts`.
    pub(crate) fn wait_discovery(&self, hosts: &[usize]) {
        for &a in hosts {
            for &b in hosts.iter().filter(|&&b| b != a) {
                let (id, ip) = (self.h(b).peer_id().to_owned(), self.h(b).ip);
                self.wait(
                    DISCOVERY_LIMIT,
                    &format!("a peer_update about host {b} ({id}, {ip}) at host {a}"),
                    || self.h(a).slips.has_peer_update(0, &id, ip).then_some(()),
                );
            }
        }
    }

    /// Waits until host `i`'s Slips side got a go_data from `reporter`
    /// with exactly `message` among the messages from index `from` on.
    pub(crate) fn wait_go_data(&self, i: usize, from: usize, reporter: &str, message: &str) {
        let want = (reporter.to_owned(), message.to_owned());
        self.wait(
            DELIVERY_LIMIT,
            &format!("go_data from {reporter} with message {message} at host {i}"),
            || {
                self.h(i)
                    .slips
                    .go_data_since(from)
                    .contains(&want)
                    .then_some(())
            },
        );
    }

    /// Waits for a line containing every one of `needles` in host `i`'s
    /// p2p.log (stdout), after byte `from`.
    pub(crate) fn wait_log(&self, i: usize, from: usize, needles: &[&str], limit: Duration) {
        self.wait(
            limit,
            &format!("a line with {needles:?} in the p2p.log of host {i}"),
            || {
                let log = self.h(i).log();
                log.get(from..)
                    .unwrap_or("")
                    .lines()
                    .any(|l| needles.iter().all(|n| l.contains(n)))
                    .then_some(())
            },
        );
    }

    /// Waits up to `limit` for host `i`'s pigeon to exit.
    pub(crate) fn wait_exit(&mut self, i: usize, limit: Duration) -> ExitStatus {
        let status = self
            .h_mut(i)
            .pigeon
            .as_mut()
            .expect("no pigeon started")
            .wait_timeout(limit);
        status.unwrap_or_else(|| {
            panic!(
                "the pigeon of host {i} still runs {limit:?} later\n{}",
                self.diag()
            )
        })
    }

    pub(crate) fn pigeon(&mut self, i: usize) -> &mut LabChild {
        self.h_mut(i).pigeon.as_mut().expect("no pigeon started")
    }

    /// Every gopy message every Slips side received passed
    /// [`check_gopy`].
    pub(crate) fn assert_all_valid(&self) {
        for h in &self.hosts {
            for r in h.slips.all() {
                if let Err(v) = &r.checked {
                    panic!(
                        "host {}: invalid gopy message {}: {v:?}\n{}",
                        h.i,
                        String::from_utf8_lossy(&r.raw),
                        self.diag()
                    );
                }
            }
        }
    }
}

// ------------------------------------------------------------------ tests

/// The issue's "done when": three pigeons find each other, Slips learns
/// about the peers, a request to `*` reaches both others and a directed
/// answer reaches its addressee only.
#[test]
fn three_pigeons_discover_relay_and_answer() {
    let mut w = World::up(3);
    for i in 1..=3 {
        w.start(i);
    }
    let ids: Vec<String> = (1..=3).map(|i| w.h(i).peer_id().to_owned()).collect();
    assert_ne!(ids[0], ids[1]);
    assert_ne!(ids[1], ids[2]);
    assert_ne!(ids[0], ids[2]);
    w.wait_discovery(&[1, 2, 3]);

    // Slips of host 1 asks everyone about an IP.
    let request = request_b64("198.51.100.7");
    w.publish_to_pigeon(1, &request_scroll("198.51.100.7", SLIPS_VERSION));
    w.wait_go_data(2, 0, &ids[0], &request);
    w.wait_go_data(3, 0, &ids[0], &request);

    // Slips of host 2 answers host 1 only.
    let before3 = w.h(3).slips.go_data().len();
    let report = report_b64("198.51.100.7", 0.8, 0.9);
    let scroll = report_scroll("198.51.100.7", 0.8, 0.9, &ids[0], SLIPS_VERSION);
    w.publish_to_pigeon(2, &scroll);
    w.wait_go_data(1, 0, &ids[1], &report);
    thread::sleep(QUIET);
    let at3 = w.h(3).slips.go_data();
    assert_eq!(
        at3.len(),
        before3,
        "host 3 got the directed answer: {at3:?}"
    );
    // Nobody hears itself, and each message arrived once.
    assert_eq!(w.h(1).slips.go_data(), vec![(ids[1].clone(), report)]);
    assert_eq!(
        w.h(2).slips.go_data(),
        vec![(ids[0].clone(), request.clone())]
    );
    assert_eq!(at3, vec![(ids[0].clone(), request)]);
    w.assert_all_valid();
}

/// Slips and the terminal both send SIGINT at shutdown: the pigeon exits 0
/// (the time it took is printed), its peers hear the goodbye, and a directed message to it is
/// then dropped instead of sent into the void.
#[test]
fn sigint_twice_exits_zero_and_says_goodbye() {
    let mut w = World::up(2);
    w.start(1);
    w.start(2);
    w.wait_discovery(&[1, 2]);
    let id1 = w.h(1).peer_id().to_owned();
    let log2_len = w.h(2).log().len();

    let signalled = Instant::now();
    w.pigeon(1).sigint().unwrap();
    w.pigeon(1).sigint().unwrap();
    let status = w.wait_exit(1, EXIT_LIMIT);
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status}\n{}", w.diag());
    eprintln!("shutdown took {took:?}");
    let log1 = w.h(1).log();
    assert!(
        log1.contains("closing"),
        "no shutdown line:\n{}",
        tail(&log1, 20)
    );

    w.wait_log(2, log2_len, &["peer said goodbye", &id1], HANG_LIMIT);
    let scroll = report_scroll("203.0.113.9", 0.5, 0.5, &id1, SLIPS_VERSION);
    w.publish_to_pigeon(2, &scroll);
    w.wait_log(
        2,
        log2_len,
        &["unproven or inactive peer", &id1],
        HANG_LIMIT,
    );
    w.assert_all_valid();
}

/// A restarted pigeon keeps its key (so Slips keeps its trust in it) and
/// its peer list, and finds its peers again.
#[test]
fn restart_keeps_key_and_peer_list() {
    let mut w = World::up(3);
    for i in 1..=3 {
        w.start(i);
    }
    w.wait_discovery(&[1, 2, 3]);
    let (id1, id2, id3) = (
        w.h(1).peer_id().to_owned(),
        w.h(2).peer_id().to_owned(),
        w.h(3).peer_id().to_owned(),
    );
    let key_path = w.h(1).key_file();
    let key = fs::read(&key_path).unwrap();

    w.pigeon(1).sigint().unwrap();
    let status = w.wait_exit(1, EXIT_LIMIT);
    assert!(status.success(), "exit status {status}\n{}", w.diag());
    assert_eq!(fs::read(&key_path).unwrap(), key, "the key file changed");
    let mode = fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "pigeon.keys mode {mode:o}");
    let peers_path = w.h(1).tree.runtime_dir().join("peers.json");
    let text = fs::read_to_string(&peers_path)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", peers_path.display(), w.diag()));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut listed: Vec<&str> = json["peers"]
        .as_array()
        .unwrap_or_else(|| panic!("no peers array in {text}"))
        .iter()
        .map(|p| p["peer_id"].as_str().unwrap())
        .collect();
    listed.sort_unstable();
    let mut want = vec![id2.as_str(), id3.as_str()];
    want.sort_unstable();
    assert_eq!(listed, want, "{text}");

    let log_len = w.h(1).log().len();
    let addr = w.start(1);
    assert_eq!(addr.peer_id, id1, "a new peer id after a restart");
    assert_eq!(fs::read(&key_path).unwrap(), key);
    w.wait_log(1, log_len, &["peer list loaded", "peers=2"], HANG_LIMIT);
    for id in [&id2, &id3] {
        w.wait_log(1, log_len, &["peer active", id], DISCOVERY_LIMIT);
    }
    // Rediscovered for real: directed messages reach both.
    let received = [w.h(2).slips.len(), w.h(3).slips.len()];
    for (i, id) in [(2, &id2), (3, &id3)] {
        let scroll = report_scroll("192.0.2.44", 0.2, 1, id, SLIPS_VERSION);
        w.publish_to_pigeon(1, &scroll);
        w.wait_go_data(i, received[i - 2], &id1, &report_b64("192.0.2.44", 0.2, 1));
    }
    w.assert_all_valid();
}

/// Legacy `stop_process`, raw as the Go Pigeon expected it and wrapped as
/// Slips' `RedisDB.publish` would send it today, and SIGTERM: each stops a
/// pigeon with exit status 0 (non-zero makes Slips stop its P2P module).
#[test]
fn stop_process_both_forms() {
    let mut w = World::up(3);
    for i in 1..=3 {
        w.start(i);
    }
    w.publish_to_pigeon(1, "stop_process");
    let wrapped = format!("{{\"text\": \"stop_process\", \"version\": \"{SLIPS_VERSION}\"}}");
    w.publish_to_pigeon(2, &wrapped);
    w.pigeon(3).sigterm().unwrap();
    for i in 1..=3 {
        let status = w.wait_exit(i, HANG_LIMIT);
        assert!(
            status.success(),
            "host {i}: exit status {status}\n{}",
            w.diag()
        );
    }
    for i in 1..=2 {
        let log = w.h(i).log();
        assert!(log.contains("StopProcess"), "host {i}:\n{}", tail(&log, 20));
    }
    w.assert_all_valid();
}

/// During a Slips self-update two Slips share `p2p_pygo`: the pigeon sends
/// only what its own Slips version asked for.
#[test]
fn other_slips_version_is_ignored() {
    let mut w = World::up(2);
    w.start(1);
    w.start(2);
    w.wait_discovery(&[1, 2]);
    let id1 = w.h(1).peer_id().to_owned();
    let log1_len = w.h(1).log().len();

    let foreign = request_b64("198.51.100.99");
    w.publish_to_pigeon(1, &pygo_scroll(&foreign, "*", "9.9.9"));
    let ours = request_b64("198.51.100.1");
    w.publish_to_pigeon(1, &pygo_scroll(&ours, "*", SLIPS_VERSION));
    w.wait_go_data(2, 0, &id1, &ours);
    thread::sleep(QUIET);
    assert_eq!(w.h(2).slips.go_data(), vec![(id1, ours)]);
    w.wait_log(1, log1_len, &["another Slips version", "9.9.9"], HANG_LIMIT);
    w.assert_all_valid();
}

/// If Slips dies without stopping it, the orphaned pigeon notices (it
/// polls its parent every second) and exits.
#[test]
fn parent_death_stops_pigeon() {
    let w = World::up(1);
    let h = w.h(1);
    let pidfile = h.tree.root().join("pigeon.pid");
    // sh stands in for Slips: the pigeon is its child.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"p="$1"; shift; "$p" "$@" & echo $! > "$PIDFILE"; wait"#)
        .arg("fake-slips")
        .arg(h.tree.binary())
        .args(h.tree.argv(h.ip, h.port, LAB_REDIS_PORT))
        .env("PIDFILE", &pidfile)
        .current_dir(h.tree.runtime_dir())
        .stdin(Stdio::null())
        .stdout(lab::append(&h.tree.log_path()).unwrap())
        .stderr(lab::append(&h.tree.stderr_path()).unwrap());
    let mut shell = w.lab.spawn_command(1, &mut cmd).unwrap();
    let pid: u32 = w.wait(HANG_LIMIT, "the pigeon's pid file", || {
        fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    });
    w.wait(MULTIADDR_LIMIT, "multiAddress", || w.get(1, "multiAddress"));
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // "pid (comm) state ppid ..."
    let ppid = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse::<u32>().ok());
    assert_eq!(ppid, Some(shell.pid()), "not the shell's child: {stat}");

    shell.sigkill().unwrap();
    shell.wait_timeout(HANG_LIMIT).expect("sh survived SIGKILL");
    let killed = Instant::now();
    w.wait(HANG_LIMIT, "the orphaned pigeon to exit", || {
        (!lab::process_alive(pid)).then_some(())
    });
    let took = killed.elapsed();
    let log = h.log();
    assert!(log.contains("ParentDied"), "{}", tail(&log, 20));
    assert!(log.contains("stopped"), "{}", tail(&log, 20));
    eprintln!("orphaned pigeon exited {took:?} after its parent died");
    w.assert_all_valid();
}

/// Logs: stdout (Slips' p2p.log) is plain text, and the pigeon's own
/// `logs/p2p.log.<UTC date>` files rotate daily, keeping `keep_days`
/// (default 1) past days.
#[test]
fn log_files_rotate_daily_and_prune() {
    let mut w = World::up(1);
    let logs = w.h(1).tree.runtime_dir().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let old = ["2020-01-01", "2020-01-02", "2020-01-03"];
    for day in old {
        fs::write(
            logs.join(format!("p2p.log.{day}")),
            format!("old log of {day}\n"),
        )
        .unwrap();
        // distinct creation times: pruning goes by age
        thread::sleep(Duration::from_millis(20));
    }
    let date = today_utc();
    let addr = w.start(1);
    if today_utc() != date {
        eprintln!("skipped: the UTC date changed during the test");
        return;
    }
    let today = logs.join(format!("p2p.log.{date}"));
    w.wait(HANG_LIMIT, "today's log file with the multiaddress", || {
        fs::read_to_string(&today)
            .ok()?
            .contains(&addr.peer_id)
            .then_some(())
    });
    let mut dated: Vec<String> = fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("p2p.log."))
        .collect();
    dated.sort();
    assert_eq!(
        dated,
        ["p2p.log.2020-01-03".to_owned(), format!("p2p.log.{date}")],
        "today plus keep_days = 1 past file"
    );
    let link = logs.join("p2p.log");
    assert_eq!(fs::read_link(&link).unwrap(), today, "p2p.log symlink");

    let stdout = w.h(1).log();
    assert!(!stdout.contains('\u{1b}'), "ANSI escapes in p2p.log");
    assert!(
        stdout.contains(&format!("Your Multiaddress Is: /ip4/{}", addr.ip)),
        "{}",
        tail(&stdout, 20)
    );
    assert!(
        stdout.lines().all(|l| l.is_empty()
            || l.contains("INFO")
            || l.contains("WARN")
            || l.contains("ERROR")
            || l.contains("DEBUG")
            || l.contains("TRACE")),
        "a p2p.log line without a level:\n{stdout}"
    );
    w.pigeon(1).sigint().unwrap();
    assert!(w.wait_exit(1, EXIT_LIMIT).success());
    w.assert_all_valid();
}

/// A Go Pigeon key (RSA, libp2p protobuf) or any other foreign content in
/// pigeon.keys is never destroyed: it is kept byte for byte as a backup.
#[test]
fn go_rsa_key_file_is_kept_as_backup() {
    let mut w = World::up(1);
    let key_path = w.h(1).key_file();
    // What Go's crypto.MarshalPrivateKey writes for RSA: KeyType = 0, then
    // the PKCS#1 DER (here random bytes after a plausible header).
    let mut go_key = vec![0x08, 0x00, 0x12, 0xa8, 0x09, 0x30, 0x82, 0x04, 0xa4];
    go_key.extend((0..1190u32).map(|k| (k.wrapping_mul(2_654_435_761) >> 13) as u8));
    fs::write(&key_path, &go_key).unwrap();
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o755)).unwrap();

    let addr = w.start(1);
    let new_key = fs::read(&key_path).unwrap();
    assert_ne!(new_key, go_key, "the foreign key is still in place");
    let mode = fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "new pigeon.keys mode {mode:o}");
    let backups: Vec<PathBuf> = fs::read_dir(w.h(1).tree.runtime_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("pigeon.keys.bak-")
        })
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(fs::read(&backups[0]).unwrap(), go_key, "backup differs");
    let log = w.h(1).log();
    assert!(log.contains("backup"), "{}", tail(&log, 20));

    // The new key is the one used from now on.
    w.pigeon(1).sigint().unwrap();
    assert!(w.wait_exit(1, EXIT_LIMIT).success());
    assert_eq!(w.start(1).peer_id, addr.peer_id);
    w.assert_all_valid();
}

/// Slips' Redis restarting in the middle of traffic loses nothing: the
/// pigeon keeps receiving on the LAN and holds what it could not publish
/// until Redis is back and Slips listens again.
#[test]
fn redis_restart_during_traffic_loses_nothing() {
    let mut w = World::up(2);
    w.start(1);
    w.start(2);
    w.wait_discovery(&[1, 2]);
    let id1 = w.h(1).peer_id().to_owned();
    let from = w.h(2).slips.len();
    let sessions = w.h(2).slips.sessions.load(Ordering::Relaxed);

    // Reports, not requests: a request that arrives while Slips' cache (the
    // same Redis) is down is dropped by the request guard, on purpose
    // (request_guard.rs); the bridge holds everything else.
    let messages: Vec<String> = (1..=20)
        .map(|k| report_b64(&format!("198.51.100.{k}"), 0.5, 0.25))
        .collect();
    thread::scope(|s| {
        let w = &w;
        let sender = s.spawn(move || {
            for k in 1..=20 {
                w.publish_to_pigeon(
                    1,
                    &report_scroll(&format!("198.51.100.{k}"), 0.5, 0.25, "*", SLIPS_VERSION),
                );
                thread::sleep(Duration::from_millis(200));
            }
        });
        thread::sleep(Duration::from_millis(500));
        w.lab.restart_redis(2, Duration::from_secs(2));
        sender.join().unwrap();
    });
    w.wait(DELIVERY_LIMIT, "host 2's Slips side to resubscribe", || {
        (w.h(2).slips.sessions.load(Ordering::Relaxed) > sessions).then_some(())
    });
    // The pigeon did see the outage (else this test proves nothing).
    w.wait_log(2, 0, &["Redis connection lost"], QUIET);
    let want: Vec<(String, String)> = messages.into_iter().map(|m| (id1.clone(), m)).collect();
    w.wait(HANG_LIMIT, "all 20 reports at host 2", || {
        (w.h(2).slips.go_data_since(from).len() >= want.len()).then_some(())
    });
    thread::sleep(QUIET); // duplicates would show up now
    assert_eq!(w.h(2).slips.go_data_since(from), want, "\n{}", w.diag());
    // The bridge re-applies multiAddress to the restarted (empty) Redis.
    let addr2 = w.h(2).addr.clone().unwrap();
    w.wait(DELIVERY_LIMIT, "multiAddress again in host 2", || {
        w.get(2, "multiAddress")
            .and_then(|v| MultiAddr::parse(&v))
            .filter(|a| *a == addr2)
    });
    w.assert_all_valid();
}

/// Runs the pigeon binary with `args` in a private loopback namespace
/// (should it start for real, it stays there) and returns its exit status,
/// stdout and stderr; kills it after 5 s.
fn run_binary(args: &[&str]) -> (Option<i32>, String, String) {
    let args: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
    lab::in_loopback_netns(move || {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_pigeon"))
            .args(&args)
            .current_dir(tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + HANG_LIMIT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            thread::sleep(Duration::from_millis(10));
        };
        let out = child.wait_with_output().unwrap();
        (
            status.map(|s| s.code().unwrap_or(-1)),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
}

/// Go's flag package conventions: an unknown flag or a bad value is a
/// usage error (exit 2, reason on stderr), `-help` prints usage, exit 0.
#[test]
fn bad_command_line_exits_2() {
    let (code, _, err) = run_binary(&["-port", "4001", "-no-such-flag", "x"]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(
        err.lines().next(),
        Some("flag provided but not defined: -no-such-flag"),
        "{err}"
    );
    assert!(
        err.contains("-redis-channel-gopy"),
        "usage on stderr: {err}"
    );

    let (code, _, err) = run_binary(&["-port", "seventy"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.lines().next().unwrap_or("").contains("-port"), "{err}");

    for help in ["-help", "--help", "-h"] {
        let (code, out, err) = run_binary(&[help]);
        assert_eq!(code, Some(0), "{help}: {err}");
        assert!(
            out.contains("-key-file") && out.contains("-port"),
            "{help}: {out}"
        );
    }
}

/// Slips picks a free *TCP* port; if the UDP port is taken the pigeon
/// still starts on another one, announces that one, and is reachable.
#[test]
fn busy_port_still_starts_and_is_reachable() {
    let mut w = World::up(2);
    let (ip, port) = (w.h(1).ip, w.h(1).port);
    let _squatter = w
        .lab
        .run_in(1, move || std::net::UdpSocket::bind((ip, port)))
        .unwrap();
    let log_len = w.h(1).log().len();
    let addr = w.start_with(1, &[]);
    assert_ne!(addr.port, port, "bound the busy port?");
    w.wait_log(
        1,
        log_len,
        &[&format!("unicast port {port} unavailable")],
        QUIET,
    );
    w.start(2);
    w.wait_discovery(&[1, 2]);
    let id2 = w.h(2).peer_id().to_owned();
    let scroll = report_scroll("192.0.2.80", 1, 1, &addr.peer_id, SLIPS_VERSION);
    w.publish_to_pigeon(2, &scroll);
    w.wait_go_data(1, 0, &id2, &report_b64("192.0.2.80", 1, 1));
    w.assert_all_valid();
}

/// Slips starts the pigeon in a fresh tree with no key, no peer list and
/// no log directory: it creates them all where Slips expects (the runtime
/// dir), and nothing of its own lands next to the binary or in the
/// output dir besides Slips' p2p.log.
#[test]
fn first_start_creates_its_files_in_the_runtime_dir() {
    let mut w = World::up(1);
    w.start(1);
    w.pigeon(1).sigint().unwrap();
    assert!(w.wait_exit(1, EXIT_LIMIT).success());
    let t = &w.h(1).tree;
    let names = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&t.runtime_dir()),
        ["logs", "peers.json", "pigeon.keys"],
        "runtime dir"
    );
    assert_eq!(names(&t.root().join("p2p4slips")), ["p2p4slips"]);
    assert_eq!(
        names(&t.root().join("output/p2p_trust")),
        ["p2p.log", "pigeon.stderr"]
    );
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(t.runtime_dir().join("peers.json")).unwrap())
            .unwrap();
    assert_eq!(json["peers"], serde_json::json!([]), "{json}");
    w.assert_all_valid();
}

/// Slips runs the pigeon with umask 0. pigeon's files are still for its
/// user only: logs/ 0700 (also when it existed as 0777), log files 0600,
/// pigeon.keys and peers.json 0600, and a symlink planted as today's log
/// file is not written through.
#[test]
fn files_are_private_under_umask_0() {
    let mut w = World::up(1);
    let runtime = w.h(1).tree.runtime_dir();
    let logs = runtime.join("logs");
    fs::create_dir(&logs).unwrap();
    fs::set_permissions(&logs, fs::Permissions::from_mode(0o777)).unwrap();
    let old_log = logs.join("p2p.log.2000-01-01");
    fs::write(&old_log, "old\n").unwrap();
    fs::set_permissions(&old_log, fs::Permissions::from_mode(0o666)).unwrap();
    let victim = w.h(1).tree.root().join("victim.txt");
    fs::write(&victim, "precious\n").unwrap();
    let today = logs.join(format!("p2p.log.{}", today_utc()));
    std::os::unix::fs::symlink(&victim, &today).unwrap();

    let _: i64 = w.redis(1, redis::cmd("DEL").arg("multiAddress"));
    let port = w.h(1).port;
    let child = w
        .h(1)
        .tree
        .spawn_in_lab_umask0(&w.lab, 1, port)
        .unwrap_or_else(|e| panic!("cannot start the pigeon: {e}"));
    w.h_mut(1).pigeon = Some(child);
    w.wait(MULTIADDR_LIMIT, "multiAddress in host 1", || {
        w.get(1, "multiAddress")
    });
    w.pigeon(1).sigint().unwrap();
    assert!(w.wait_exit(1, EXIT_LIMIT).success(), "{}", w.diag());

    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&logs), 0o700, "logs/");
    assert_eq!(mode(&old_log), 0o600, "an old log file");
    let today_meta = fs::symlink_metadata(&today).unwrap();
    assert!(
        today_meta.file_type().is_file(),
        "today's log is a file of its own"
    );
    assert_eq!(mode(&today), 0o600, "today's log");
    assert!(fs::read_to_string(&today).unwrap().contains("removed"));
    assert_eq!(
        fs::read_to_string(&victim).unwrap(),
        "precious\n",
        "written through the symlink"
    );
    assert_eq!(mode(&runtime.join("pigeon.keys")), 0o600, "pigeon.keys");
    assert_eq!(mode(&runtime.join("peers.json")), 0o600, "peers.json");
}

/// Slips drops root before it starts the pigeon (SUDO_UID/SUDO_GID): the
/// pigeon must work as an ordinary user, in a tree that user owns.
#[test]
fn runs_unprivileged_as_slips_starts_it() {
    const NOBODY: u32 = 65_534;
    let mut w = World::up(2);
    let h = w.h(1);
    let out = Command::new("chown")
        .args(["-R", &format!("{NOBODY}:{NOBODY}")])
        .arg(h.tree.root())
        .output()
        .unwrap();
    assert!(out.status.success(), "chown: {out:?}");
    let mut cmd = h.tree.command(h.ip, h.port, LAB_REDIS_PORT, &[]).unwrap();
    std::os::unix::process::CommandExt::uid(&mut cmd, NOBODY);
    std::os::unix::process::CommandExt::gid(&mut cmd, NOBODY);
    let child = w.lab.spawn_command(1, &mut cmd).unwrap();
    let uid_line = wait_for(HANG_LIMIT, "the pigeon's /proc status", String::new, || {
        fs::read_to_string(format!("/proc/{}/status", child.pid()))
            .ok()?
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .map(str::to_owned)
    });
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some("65534"),
        "{uid_line}"
    );
    w.h_mut(1).pigeon = Some(child);
    let addr1 = w.wait(MULTIADDR_LIMIT, "multiAddress in host 1", || {
        w.get(1, "multiAddress").and_then(|v| MultiAddr::parse(&v))
    });
    assert_eq!((addr1.ip, addr1.port), (w.h(1).ip, w.h(1).port));
    w.h_mut(1).addr = Some(addr1.clone());
    w.wait_subscribers(1, PYGO, 1);
    let key = fs::metadata(w.h(1).key_file()).unwrap();
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&key),
            key.permissions().mode() & 0o777
        ),
        (NOBODY, 0o600),
        "pigeon.keys owner and mode"
    );

    let addr2 = w.start(2);
    w.wait_discovery(&[1, 2]);
    let request = request_b64("203.0.113.5");
    w.publish_to_pigeon(1, &request_scroll("203.0.113.5", SLIPS_VERSION));
    w.wait_go_data(2, 0, &addr1.peer_id, &request);
    let report = report_scroll("203.0.113.5", 0, 0.5, &addr1.peer_id, SLIPS_VERSION);
    w.publish_to_pigeon(2, &report);
    w.wait_go_data(1, 0, &addr2.peer_id, &report_b64("203.0.113.5", 0, 0.5));
    w.pigeon(1).sigint().unwrap();
    assert!(w.wait_exit(1, EXIT_LIMIT).success(), "{}", w.diag());
    assert!(w.h(1).tree.runtime_dir().join("peers.json").exists());
    w.assert_all_valid();
}
