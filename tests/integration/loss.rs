//! Lossy LANs: every report and answer arrives, exactly once
//! (docs/PROTOCOL.md §5), measured on the simulated LAN with real pigeons.
//!
//! Four lab hosts, each with its own Redis, [`SlipsTree`] and pigeon
//! started as Slips starts it. The "Slips side" of each host is a
//! subscriber on `p2p_gopy` (created inside the host's namespace) that
//! timestamps every message at receipt and checks it with
//! `testkit::slips::check_gopy`, and a Redis connection that `PUBLISH`es Slips' exact
//! scrolls on `p2p_pygo`.
//!
//! Loss is independent per receiver: `lab.sh link-loss` on every host makes
//! the bridge drop that share of *everything* it forwards to the host, so a
//! multicast copy is lost at each receiver independently, and so are the
//! nacks and acks going back to the sender. Loss is switched on after
//! discovery and after every host has resolved its neighbours (ARP), the
//! steady state of a real LAN. Each run counts, per receiver and payload,
//! how many `go_data` Slips got: more than one is a duplicate and fails the
//! test.
//!
//! Overhead is counted by an nft counter of the UDP datagrams leaving each
//! host (netdev egress, so before the bridge drops anything), read before
//! and after the traffic; the pigeons' own totals (the `stopped` line they
//! log at SIGINT) are printed next to it.
//!
//! The tests here keep to what needs real datagrams, kernels and
//! processes (10 % loss, a 5 s cut) and judge outcomes only, never how
//! soon; heavy loss, long streams and a long partition are proven on the
//! simulated LAN (`src/core/tests.rs`). Figures are printed (`--
//! --nocapture`) and recorded in docs/BENCHMARKS.md, "Lossy LAN"; the
//! figure runs are `lossy_lan_figures` and `long_partition_figures`
//! (ignored by default). With `LOSS_KEEP_LOGS=DIR` every pigeon's p2p.log
//! is copied to `DIR/<lab>-h<i>.log` when it stops.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};
use testkit::lab::{Lab, LabChild, SlipsTree};
use testkit::slips::{GoData as Got, SlipsSide, pygo_scroll, report_b64};
use testkit::{GOPY, PYGO, SLIPS_VERSION};

/// The Slips side's Redis, inside each host.
const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
/// One sender, three receivers.
const HOSTS: usize = 4;
const SENDER: usize = 1;
/// Reports per broadcast run (the issue asks for at least 200).
const REPORTS: usize = 200;
/// One report every 30 ms: a busy Slips. Each broadcast is sent three
/// times, so this is ~100 datagrams/s, the most the default per-peer rate
/// sustains (docs/BENCHMARKS.md, "Lossy LAN", finding 3).
const PACE: Duration = Duration::from_millis(30);
/// Directed answers per run, and their spacing.
const ANSWERS: usize = 100;
const ANSWER_PACE: Duration = Duration::from_millis(50);
/// The figure runs wait this long after the latest broadcast for the
/// repairs, then count: the sender's digests follow its latest broadcast
/// at 0.3, 0.9, 2.1, 4.5 and 9.3 s; a nack and its repair take a few
/// milliseconds more.
const REPAIR_LIMIT: Duration = Duration::from_secs(12);
/// Slips waits 2 s for answers to a request (the figures count answers
/// later than this; the tests judge outcomes only).
const SLIPS_WAIT: Duration = Duration::from_secs(2);
/// One announce interval: 30 s + 20 % jitter, plus 1 s of scheduling
/// slack (the long partition's figures).
const ANNOUNCE_LIMIT: Duration = Duration::from_secs(37);
/// Broadcasts are retained for repair this long (`delivery.retain_broadcast_ms`):
/// what the protocol promises to make good arrives within it, so the
/// tests wait for a broadcast this long at most.
const RETENTION: Duration = Duration::from_secs(120);
/// Length of the long partition (figures), and how long host 1 keeps
/// reporting during it (its digests end 9.3 s after its last report,
/// before the heal).
const CUT_FOR: Duration = Duration::from_secs(60);
const HOST1_TALKS_FOR: u64 = 45;
/// Length of the partition of the test, a report a second from each side
/// meanwhile: short enough that the senders' digests are still running
/// at the heal.
const SHORT_CUT_FOR: Duration = Duration::from_secs(5);
/// Bound of every wait for what happens at once on a healthy LAN
/// (start-up, discovery, a directed message, a shutdown): only a hang
/// reaches it, however busy the machine.
const HANG_LIMIT: Duration = Duration::from_secs(30);
/// "Nothing else arrives" (late duplicates) is checked for this long.
const QUIET: Duration = Duration::from_secs(1);
/// The seed of the choice of responders (`LOSS_SEED` overrides it, for
/// figure runs with other choices); printed with the figures.
const SEED: u64 = 0x5EED_0F0A_1155;

// ------------------------------------------------------------------ the LAN

/// One lab host: Slips tree, Slips side, publisher and pigeon. Field
/// order matters: the pigeon and subscriber go before the lab.
struct Host {
    i: usize,
    tree: SlipsTree,
    slips: SlipsSide,
    /// Slips' connection for PUBLISH, created in the host.
    redis: redis::Connection,
    pigeon: Option<LabChild>,
    peer_id: String,
}

/// The final counters a pigeon logs at shutdown.
#[derive(Debug, Clone, Default)]
struct Stopped {
    received: u64,
    accepted: u64,
    sent: u64,
    to_slips: u64,
    dropped: u64,
}

impl Stopped {
    fn summary(all: &[Stopped]) -> String {
        all.iter()
            .enumerate()
            .map(|(k, s)| {
                format!(
                    "h{}: received={} accepted={} sent={} to_slips={} dropped={}",
                    k + 1,
                    s.received,
                    s.accepted,
                    s.sent,
                    s.to_slips,
                    s.dropped
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// UDP datagrams that left the hosts (nft egress counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Traffic {
    multicast: u64,
    unicast: u64,
    bytes: u64,
}

impl Traffic {
    fn total(self) -> u64 {
        self.multicast + self.unicast
    }

    fn since(self, before: Traffic) -> Traffic {
        Traffic {
            multicast: self.multicast - before.multicast,
            unicast: self.unicast - before.unicast,
            bytes: self.bytes - before.bytes,
        }
    }
}

/// The nft table counting what a host sends; separate from lab.sh's loss
/// tables so both can coexist.
const METER_TABLE: &str = "loss_meter";

struct Net {
    hosts: Vec<Host>,
    lab: Lab,
}

impl Net {
    /// A lab of `n` hosts with every pigeon running and every peer known
    /// to every Slips (a peer_update about it), and egress meters set up.
    fn up(n: usize) -> Net {
        let lab = Lab::up(n);
        let mut hosts = Vec::new();
        for i in 1..=n {
            let redis = lab
                .run_in(i, || {
                    redis::Client::open(REDIS_URL)?
                        .get_connection_with_timeout(Duration::from_secs(2))
                })
                .unwrap_or_else(|e| panic!("redis of host {i}: {e}"));
            hosts.push(Host {
                i,
                tree: SlipsTree::new(),
                slips: SlipsSide::start(&lab, i),
                redis,
                pigeon: None,
                peer_id: String::new(),
            });
        }
        let mut net = Net { hosts, lab };
        for i in 1..=n {
            net.wait_numsub(i, GOPY);
            net.install_meter(i);
        }
        // The pigeon's bridge publishes only while Slips listens, so the
        // subscribers are up before the pigeons start.
        for i in 1..=n {
            let port = 40_000 + u16::try_from(i).unwrap();
            let child = net.hosts[i - 1]
                .tree
                .spawn_in_lab(&net.lab, i, port)
                .unwrap_or_else(|e| panic!("cannot start the pigeon of host {i}: {e}"));
            net.hosts[i - 1].pigeon = Some(child);
        }
        for i in 1..=n {
            let value = net.wait(HANG_LIMIT, &format!("multiAddress in host {i}"), |net| {
                let v: Option<String> = redis::cmd("GET")
                    .arg("multiAddress")
                    .query(&mut net.hosts[i - 1].redis)
                    .ok()?;
                v
            });
            let id = value.rsplit('/').next().unwrap_or_default().to_owned();
            assert!(id.starts_with("12D3KooW"), "multiAddress {value}");
            net.hosts[i - 1].peer_id = id;
            net.wait_numsub(i, PYGO);
        }
        for a in 1..=n {
            for b in (1..=n).filter(|&b| b != a) {
                let id = net.h(b).peer_id.clone();
                net.wait(
                    HANG_LIMIT,
                    &format!("a peer_update about host {b} at host {a}"),
                    |net| net.h(a).slips.knows(&id).then_some(()),
                );
            }
        }
        net.warm_arp();
        net
    }

    fn h(&self, i: usize) -> &Host {
        &self.hosts[i - 1]
    }

    fn ids(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.peer_id.clone()).collect()
    }

    /// Polls `check` every 20 ms for up to `limit`; panics with the
    /// diagnostics on timeout. An invalid gopy message fails at once.
    fn wait<T>(
        &mut self,
        limit: Duration,
        what: &str,
        mut check: impl FnMut(&mut Net) -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            self.assert_valid();
            if let Some(v) = check(self) {
                return v;
            }
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}\n{}",
                self.diag()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_numsub(&mut self, i: usize, channel: &str) {
        self.wait(
            HANG_LIMIT,
            &format!("a subscriber on {channel} in host {i}"),
            |net| {
                let (_, n): (String, i64) = redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(channel)
                    .query(&mut net.hosts[i - 1].redis)
                    .ok()?;
                (n == 1).then_some(())
            },
        );
    }

    /// Publishes `scroll` on host `i`'s `p2p_pygo` as Slips does; returns
    /// the moment just before the PUBLISH.
    fn publish(&mut self, i: usize, scroll: &str) -> Instant {
        let at = Instant::now();
        let n: i64 = redis::cmd("PUBLISH")
            .arg(PYGO)
            .arg(scroll)
            .query(&mut self.hosts[i - 1].redis)
            .unwrap_or_else(|e| panic!("PUBLISH in host {i}: {e}"));
        assert_eq!(n, 1, "the pigeon of host {i} did not get {scroll}");
        at
    }

    /// Resolves every host's neighbours (ARP) while the LAN is healthy: a
    /// LAN's steady state. The pigeons find each other by multicast only,
    /// so without this the first unicast between two hosts (an answer, a
    /// nack, a repair) would wait for an ARP exchange that, under the loss
    /// switched on next, the kernel retries only once a second.
    fn warm_arp(&mut self) {
        let n = self.hosts.len();
        for i in 1..=n {
            let targets: Vec<std::net::Ipv4Addr> = (1..=n)
                .filter(|&j| j != i)
                .map(|j| self.lab.host_ip(j))
                .collect();
            let own = self.lab.host_ip(i);
            self.lab.run_in(i, move || {
                // The discard port: nothing listens, the kernel answers
                // with an ICMP error, so both ends resolve each other.
                let s = std::net::UdpSocket::bind((own, 0)).expect("bind a probe socket");
                for t in targets {
                    let _ = s.send_to(b"arp", (t, 9));
                }
            });
        }
        for i in 1..=n {
            for j in (1..=n).filter(|&j| j != i) {
                let ip = self.lab.host_ip(j).to_string();
                self.wait(HANG_LIMIT, &format!("host {i} resolving {ip}"), |net| {
                    let out = net
                        .lab
                        .exec(i, Command::new("ip").args(["neigh", "show", &ip]))
                        .ok()?;
                    let text = String::from_utf8_lossy(&out.stdout).into_owned();
                    text.contains("lladdr").then_some(())
                });
            }
        }
    }

    /// Link loss of `pct` % toward every host.
    fn set_loss(&self, pct: u8) {
        for i in 1..=self.hosts.len() {
            self.lab.link_loss(i, pct);
        }
    }

    fn nft(&self, i: usize, script: &str) -> String {
        self.lab.nft(i, script)
    }

    fn install_meter(&self, i: usize) {
        self.nft(
            i,
            &format!(
                "add table netdev {METER_TABLE}; \
                 add chain netdev {METER_TABLE} eg {{ type filter hook egress device \"veth0\" priority -10; policy accept; }}; \
                 add rule netdev {METER_TABLE} eg ip daddr 224.0.0.0/4 meta l4proto udp counter comment \"mcast\"; \
                 add rule netdev {METER_TABLE} eg ip daddr != 224.0.0.0/4 meta l4proto udp counter comment \"ucast\""
            ),
        );
    }

    /// UDP datagrams sent by all hosts so far.
    fn traffic(&self) -> Traffic {
        let mut t = Traffic::default();
        for i in 1..=self.hosts.len() {
            let listing = self.nft(i, &format!("list table netdev {METER_TABLE}"));
            for line in listing.lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                let after = |w: &str| {
                    words
                        .iter()
                        .position(|x| *x == w)
                        .and_then(|p| words.get(p + 1))
                        .and_then(|v| v.parse::<u64>().ok())
                };
                let (Some(packets), Some(bytes)) = (after("packets"), after("bytes")) else {
                    continue;
                };
                if line.contains("\"mcast\"") {
                    t.multicast += packets;
                } else if line.contains("\"ucast\"") {
                    t.unicast += packets;
                }
                t.bytes += bytes;
            }
        }
        t
    }

    /// SIGINTs every pigeon, waits for it and returns the counters of its
    /// `stopped` line.
    fn stop_all(&mut self) -> Vec<Stopped> {
        for h in &mut self.hosts {
            if let Some(p) = h.pigeon.as_mut() {
                p.sigint().unwrap();
            }
        }
        let mut all = Vec::new();
        for k in 0..self.hosts.len() {
            let status = self.hosts[k]
                .pigeon
                .as_mut()
                .and_then(|p| p.wait_timeout(HANG_LIMIT));
            assert!(
                status.is_some_and(|s| s.success()),
                "pigeon of host {} did not exit cleanly: {status:?}\n{}",
                k + 1,
                self.diag()
            );
            let log = self.hosts[k].tree.read_log();
            if let Ok(dir) = std::env::var("LOSS_KEEP_LOGS") {
                let path = format!("{dir}/{}-h{}.log", self.lab.name(), k + 1);
                std::fs::write(&path, &log).unwrap_or_else(|e| panic!("{path}: {e}"));
            }
            let line = log
                .lines()
                .rev()
                .find(|l| l.contains(" stopped ") && l.contains("sent="))
                .unwrap_or_else(|| panic!("no `stopped` line in host {}'s log", k + 1));
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{name}=")))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
            };
            all.push(Stopped {
                received: field("received"),
                accepted: field("accepted"),
                sent: field("sent"),
                to_slips: field("to_slips"),
                dropped: field("dropped"),
            });
        }
        all
    }

    fn assert_valid(&self) {
        for h in &self.hosts {
            let bad = h.slips.invalid();
            assert!(
                bad.is_empty(),
                "host {}: invalid gopy messages: {bad:#?}",
                h.i
            );
        }
    }

    /// Log tails and Slips sides of every host.
    fn diag(&self) -> String {
        let mut s = String::new();
        for h in &self.hosts {
            let log = h.tree.read_log();
            let lines: Vec<&str> = log.lines().collect();
            let _ = writeln!(
                s,
                "===== host {} ({}), Slips side: {}\n{}",
                h.i,
                h.peer_id,
                h.slips.summary(),
                lines[lines.len().saturating_sub(15)..].join("\n")
            );
        }
        s
    }
}

// ------------------------------------------------------------------ figures

/// A small deterministic PRNG (xorshift64*), seeded per run and printed.
struct Rng(u64);

impl Rng {
    /// [`SEED`], or `LOSS_SEED` when set.
    fn seeded() -> Rng {
        let seed = std::env::var("LOSS_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(SEED);
        Rng(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Percentiles of delivery times.
#[derive(Debug, Clone, Copy, Default)]
struct Latency {
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
}

impl Latency {
    fn of(mut v: Vec<Duration>) -> Latency {
        if v.is_empty() {
            return Latency::default();
        }
        v.sort_unstable();
        let pct = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Latency {
            p50: pct(0.50),
            p90: pct(0.90),
            p99: pct(0.99),
            max: v[v.len() - 1],
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// What one run measured.
#[derive(Debug, Clone)]
struct Figures {
    what: &'static str,
    loss: u8,
    /// Messages Slips published.
    messages: usize,
    /// Deliveries expected (messages × receivers).
    expected: usize,
    /// Deliveries that arrived at least once.
    delivered: usize,
    /// Deliveries that arrived exactly once.
    exactly_once: usize,
    /// Copies beyond the first.
    duplicates: usize,
    /// Deliveries later than [`SLIPS_WAIT`] (answers only).
    late: usize,
    traffic: Traffic,
    latency: Latency,
    stopped: Vec<Stopped>,
    seed: Option<u64>,
}

impl Figures {
    fn once_pct(&self) -> f64 {
        100.0 * self.exactly_once as f64 / self.expected as f64
    }

    fn row(&self) -> String {
        let sent: u64 = self.stopped.iter().map(|s| s.sent).sum();
        format!(
            "| {} | {} % | {} | {}/{} | {:.2} % | {} | {} | {} ({} mc + {} uc) | {:.2} | {:.2} | {} | {} | {} | {} | {} |",
            self.what,
            self.loss,
            self.messages,
            self.delivered,
            self.expected,
            self.once_pct(),
            self.duplicates,
            self.late,
            self.traffic.total(),
            self.traffic.multicast,
            self.traffic.unicast,
            self.traffic.total() as f64 / self.messages as f64,
            self.traffic.total() as f64 / self.delivered.max(1) as f64,
            sent,
            ms(self.latency.p50),
            ms(self.latency.p90),
            ms(self.latency.p99),
            ms(self.latency.max),
        )
    }

    fn print(&self) {
        println!(
            "| run | loss | msgs | delivered | exactly once | dups | late >2 s | datagrams (egress) | per msg | per delivery | pigeons' sent (whole run) | p50 ms | p90 ms | p99 ms | max ms |"
        );
        println!("{}", self.row());
        println!(
            "pigeons (whole run): {}; seed {:?}",
            Stopped::summary(&self.stopped),
            self.seed
        );
    }
}

/// Counts each `(receiver, payload)` in `got`: how many copies arrived and
/// the first arrival. Also checks that every go_data carries one of the
/// expected payloads from the expected reporter.
fn tally(
    receiver: usize,
    got: &[Got],
    expected: &HashMap<String, (String, Instant)>,
) -> BTreeMap<String, (usize, Instant)> {
    let mut seen: BTreeMap<String, (usize, Instant)> = BTreeMap::new();
    for g in got {
        let Some((reporter, _)) = expected.get(&g.message) else {
            continue;
        };
        assert_eq!(
            &g.reporter, reporter,
            "host {receiver}: {} came with reporter {}",
            g.message, g.reporter
        );
        let e = seen.entry(g.message.clone()).or_insert((0, g.at));
        e.0 += 1;
    }
    seen
}

/// A report about `10.<net>.x.y`, distinct for each `k` (k < 62 500).
fn report(net: u8, k: usize) -> (String, String) {
    let ip = format!("10.{net}.{}.{}", k / 250, k % 250 + 1);
    let b64 = report_b64(&ip, 0.5, 0.75);
    (ip, b64)
}

/// `reports` broadcasts from host [`SENDER`], one every `pace`, at `loss` %
/// link loss toward every host; waits until every receiver's Slips has
/// every report, or `wait_for` after the last one, then counts what every
/// receiver's Slips got.
fn broadcast_run(loss: u8, reports: usize, pace: Duration, wait_for: Duration) -> Figures {
    let mut net = Net::up(HOSTS);
    let ids = net.ids();
    net.set_loss(loss);
    let before = net.traffic();
    // message → (reporter, publish time)
    let mut sent: HashMap<String, (String, Instant)> = HashMap::new();
    let t0 = Instant::now();
    for k in 0..reports {
        let due = t0 + pace * u32::try_from(k).unwrap();
        thread::sleep(due.saturating_duration_since(Instant::now()));
        let (_, b64) = report(1, k);
        let at = net.publish(SENDER, &pygo_scroll(&b64, "*", SLIPS_VERSION));
        sent.insert(b64, (ids[SENDER - 1].clone(), at));
    }
    let last = Instant::now();
    let receivers: Vec<usize> = (1..=HOSTS).filter(|&i| i != SENDER).collect();
    // Until everything arrived or `wait_for` is over.
    while last.elapsed() < wait_for {
        net.assert_valid();
        let complete = receivers
            .iter()
            .all(|&r| tally(r, &net.h(r).slips.go_data(), &sent).len() == reports);
        if complete {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    // Copies and repairs still in flight must not show up twice.
    thread::sleep(QUIET);
    let traffic = net.traffic().since(before);
    let stopped = net.stop_all();
    net.assert_valid();

    let mut f = Figures {
        what: "broadcast",
        loss,
        messages: reports,
        expected: reports * receivers.len(),
        delivered: 0,
        exactly_once: 0,
        duplicates: 0,
        late: 0,
        traffic,
        latency: Latency::default(),
        stopped,
        seed: None,
    };
    let mut times = Vec::new();
    for &r in &receivers {
        let seen = tally(r, &net.h(r).slips.go_data(), &sent);
        let missing: Vec<usize> = (0..reports)
            .filter(|&k| !seen.contains_key(&report(1, k).1))
            .collect();
        if !missing.is_empty() {
            println!("host {r} never got reports number {missing:?} (of 0..{reports})");
        }
        for (msg, (n, first)) in seen {
            f.delivered += 1;
            f.exactly_once += usize::from(n == 1);
            f.duplicates += n - 1;
            times.push(first.duration_since(sent[&msg].1));
        }
    }
    let own = tally(SENDER, &net.h(SENDER).slips.go_data(), &sent);
    assert!(own.is_empty(), "the sender's Slips heard its own reports");
    f.latency = Latency::of(times);
    f.print();
    f
}

/// `answers` directed reports from random hosts to host 1 (random from
/// the seed printed with the figures), one every `pace`, at `loss` % link
/// loss toward every host; waits until the asker's Slips has every answer,
/// or `wait_for` after the last one.
fn answers_run(loss: u8, answers: usize, pace: Duration, wait_for: Duration) -> Figures {
    let asker = 1;
    let mut net = Net::up(HOSTS);
    let ids = net.ids();
    net.set_loss(loss);
    let mut rng = Rng::seeded();
    let seed = rng.0;
    let before = net.traffic();
    let mut sent: HashMap<String, (String, Instant)> = HashMap::new();
    let mut about: HashMap<String, String> = HashMap::new();
    let t0 = Instant::now();
    for k in 0..answers {
        let due = t0 + pace * u32::try_from(k).unwrap();
        thread::sleep(due.saturating_duration_since(Instant::now()));
        let responder = 2 + usize::try_from(rng.below(3)).unwrap();
        let (ip, b64) = report(2, k);
        about.insert(b64.clone(), ip);
        let scroll = pygo_scroll(&b64, &ids[asker - 1], SLIPS_VERSION);
        let at = net.publish(responder, &scroll);
        sent.insert(b64, (ids[responder - 1].clone(), at));
    }
    let last = Instant::now();
    // Retransmissions stop 1.5 s after the publish (of the sender's time).
    while last.elapsed() < wait_for {
        net.assert_valid();
        if tally(asker, &net.h(asker).slips.go_data(), &sent).len() == answers {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(QUIET);
    let traffic = net.traffic().since(before);
    let stopped = net.stop_all();
    net.assert_valid();

    let mut f = Figures {
        what: "answer",
        loss,
        messages: answers,
        expected: answers,
        delivered: 0,
        exactly_once: 0,
        duplicates: 0,
        late: 0,
        traffic,
        latency: Latency::default(),
        stopped,
        seed: Some(seed),
    };
    let mut times = Vec::new();
    for (msg, (n, first)) in tally(asker, &net.h(asker).slips.go_data(), &sent) {
        f.delivered += 1;
        f.exactly_once += usize::from(n == 1);
        f.duplicates += n - 1;
        let took = first.duration_since(sent[&msg].1);
        f.late += usize::from(took > SLIPS_WAIT);
        times.push(took);
    }
    for (msg, (reporter, _)) in &sent {
        if !net
            .h(asker)
            .slips
            .go_data()
            .iter()
            .any(|g| &g.message == msg)
        {
            println!("lost: the answer about {} from {reporter}", about[msg]);
        }
    }
    for other in 2..=HOSTS {
        let leaked = tally(other, &net.h(other).slips.go_data(), &sent);
        assert!(
            leaked.is_empty(),
            "answers for host {asker} reached host {other}: {leaked:?}"
        );
    }
    times.sort_unstable();
    println!(
        "slowest answers (ms): {:?}",
        times
            .iter()
            .rev()
            .take(8)
            .map(|t| ms(*t))
            .collect::<Vec<_>>()
    );
    for h in &net.hosts {
        let expired = h
            .tree
            .read_log()
            .lines()
            .filter(|l| l.contains("not acknowledged in time"))
            .count();
        println!("host {}: {expired} directed message(s) given up", h.i);
    }
    f.latency = Latency::of(times);
    f.print();
    f
}

// ------------------------------------------------------------------ tests
//
// On the namespace LAN only what needs the real thing: nft dropping real
// datagrams, the kernel's multicast and unicast, real processes with their
// own timers. The protocol's logic under heavy loss, long streams and long
// partitions is proven on the simulated LAN (`src/core/tests.rs`), seeded,
// in milliseconds; the figure runs below measure it here.

/// 10 % loss on every link (nft, real datagrams): every one of 200
/// reports reaches every peer's Slips exactly once. The run waits for the
/// repairs as long as the broadcasts are retained, so only an outcome is
/// judged, not how soon it came.
#[test]
fn broadcasts_at_10_percent_loss_arrive_exactly_once() {
    let f = broadcast_run(10, REPORTS, PACE, RETENTION);
    assert_eq!(f.duplicates, 0, "duplicates reached Slips: {f:?}");
    assert_eq!(
        f.exactly_once, f.expected,
        "deliveries missing after the retention: {f:?}"
    );
}

/// Slips' answers under 10 % loss on every link, acknowledged and
/// retransmitted over real sockets: all 100 arrive exactly once, and only
/// at the asker. (How soon, and 30 % loss, are the figure run's and the
/// simulated LAN's.)
#[test]
fn answers_at_10_percent_loss_arrive_exactly_once_only_at_the_asker() {
    let f = answers_run(10, ANSWERS, ANSWER_PACE, HANG_LIMIT);
    assert_eq!(f.duplicates, 0, "{f:?}");
    assert_eq!(f.exactly_once, f.expected, "answers lost: {f:?}");
}

/// A partition of the LAN and its heal.
struct Partition {
    /// How long host [`HOSTS`] is cut off.
    cut_for: Duration,
    /// Host 1 reports once a second for this many of the cut's seconds.
    host1_talks_for: u64,
    /// The cut host reports every this many seconds of the cut.
    cut_host_every: u64,
    /// Bound of the waits for the healed host's first report at the
    /// others, and for a directed message to it, after the heal.
    heard_within: Duration,
}

/// A host cut off (`lab.sh cut`) while Slips keeps talking, then healed:
/// nothing crosses the cut; after the heal the healed host's fresh report
/// and a directed message to it arrive within `heard_within`, and what was
/// broadcast during the cut reaches the other side exactly once, each
/// report within its 120 s retention. Prints when each arrived.
fn partition_run(p: &Partition) {
    let cut = HOSTS;
    let mut net = Net::up(HOSTS);
    let ids = net.ids();
    // message → (reporter, publish time), per origin
    let mut from1: HashMap<String, (String, Instant)> = HashMap::new();
    let mut from_cut: HashMap<String, (String, Instant)> = HashMap::new();
    net.lab.cut(cut);
    let t_cut = Instant::now();
    for k in 0..p.cut_for.as_secs() {
        let due = t_cut + Duration::from_secs(k);
        thread::sleep(due.saturating_duration_since(Instant::now()));
        if k < p.host1_talks_for {
            let (_, b64) = report(3, usize::try_from(k).unwrap());
            let at = net.publish(1, &pygo_scroll(&b64, "*", SLIPS_VERSION));
            from1.insert(b64, (ids[0].clone(), at));
        }
        if k % p.cut_host_every == 0 {
            let (_, b64) = report(4, usize::try_from(k).unwrap());
            let at = net.publish(cut, &pygo_scroll(&b64, "*", SLIPS_VERSION));
            from_cut.insert(b64, (ids[cut - 1].clone(), at));
        }
    }
    thread::sleep((t_cut + p.cut_for).saturating_duration_since(Instant::now()));
    // The others talked...
    for i in 2..cut {
        net.wait(
            HANG_LIMIT,
            &format!("host 1's cut-time reports at host {i}"),
            |net| (tally(i, &net.h(i).slips.go_data(), &from1).len() == from1.len()).then_some(()),
        );
    }
    // ...and the cut was real: nothing crossed it.
    assert!(tally(cut, &net.h(cut).slips.go_data(), &from1).is_empty());
    for i in 1..cut {
        assert!(tally(i, &net.h(i).slips.go_data(), &from_cut).is_empty());
    }

    net.lab.heal(cut);
    let t_heal = Instant::now();
    // The healed host's Slips is heard again...
    let (_, fresh) = report(4, 999);
    let at = net.publish(cut, &pygo_scroll(&fresh, "*", SLIPS_VERSION));
    let fresh_map = HashMap::from([(fresh, (ids[cut - 1].clone(), at))]);
    for i in 1..cut {
        net.wait(
            p.heard_within,
            &format!("the healed host's fresh report at host {i}"),
            |net| (tally(i, &net.h(i).slips.go_data(), &fresh_map).len() == 1).then_some(()),
        );
    }
    let heard_after = t_heal.elapsed();
    // ...and an answer reaches it.
    let (_, answer) = report(5, 1);
    let at = net.publish(1, &pygo_scroll(&answer, &ids[cut - 1], SLIPS_VERSION));
    let answer_map = HashMap::from([(answer, (ids[0].clone(), at))]);
    net.wait(
        p.heard_within.saturating_sub(t_heal.elapsed()),
        "a directed message to the healed host",
        |net| (tally(cut, &net.h(cut).slips.go_data(), &answer_map).len() == 1).then_some(()),
    );
    let answered_after = t_heal.elapsed();

    // Everything broadcast during the cut arrives while still retained.
    let retained = |map: &HashMap<String, (String, Instant)>| {
        map.values().map(|(_, t)| *t).max().unwrap() + RETENTION
    };
    let limit = retained(&from1).saturating_duration_since(Instant::now());
    net.wait(
        limit,
        "host 1's cut-time reports at the healed host",
        |net| (tally(cut, &net.h(cut).slips.go_data(), &from1).len() == from1.len()).then_some(()),
    );
    for i in 1..cut {
        let limit = retained(&from_cut).saturating_duration_since(Instant::now());
        net.wait(
            limit,
            &format!("the healed host's cut-time reports at host {i}"),
            |net| {
                (tally(i, &net.h(i).slips.go_data(), &from_cut).len() == from_cut.len())
                    .then_some(())
            },
        );
    }
    // When the last of each set arrived, after the heal.
    let completed = |hosts: std::ops::Range<usize>, map: &HashMap<String, (String, Instant)>| {
        hosts
            .flat_map(|i| tally(i, &net.h(i).slips.go_data(), map).into_values())
            .map(|(_, first)| first.saturating_duration_since(t_heal))
            .max()
            .unwrap_or_default()
    };
    let repaired_at_cut = completed(cut..cut + 1, &from1);
    let repaired_at_others = completed(1..cut, &from_cut);
    thread::sleep(QUIET);
    // Exactly once everywhere, each within its retention.
    for i in 1..=HOSTS {
        let got = net.h(i).slips.go_data();
        for map in [&from1, &from_cut, &fresh_map, &answer_map] {
            for (msg, (n, first)) in tally(i, &got, map) {
                assert_eq!(n, 1, "host {i} got {msg} {n} times");
                let took = first.duration_since(map[&msg].1);
                assert!(took <= RETENTION, "host {i} got {msg} after {took:?}");
            }
        }
    }
    let stopped = net.stop_all();
    println!(
        "partition: {} s cut; {} reports from host 1 (first {} s), {} from the cut host; \
         after healing: the healed host's fresh report heard in {} ms, a directed message to it \
         delivered in {} ms, host 1's cut-time reports all at the healed host after {} ms, the \
         healed host's at the others after {} ms; pigeons: {}",
        p.cut_for.as_secs(),
        from1.len(),
        p.host1_talks_for,
        from_cut.len(),
        heard_after.as_millis(),
        answered_after.as_millis(),
        repaired_at_cut.as_millis(),
        repaired_at_others.as_millis(),
        Stopped::summary(&stopped)
    );
}

/// A host cut off for 5 s by nft while both sides keep reporting, then
/// healed: the healed host is heard again and reached by a directed
/// message, and every report of the cut reaches the other side exactly
/// once (the senders' digests, still running at the heal, make them good).
#[test]
fn partitioned_host_catches_up_after_healing() {
    partition_run(&Partition {
        cut_for: SHORT_CUT_FOR,
        host1_talks_for: SHORT_CUT_FOR.as_secs(),
        cut_host_every: 1,
        heard_within: HANG_LIMIT,
    });
}

/// The figure run of docs/BENCHMARKS.md, "Partition": host 4 cut off for
/// 60 s. Host 1 reports once a second for the first 45 s of the cut, then
/// falls quiet, so its digests are over before the heal and only its
/// announcements can tell the healed host what it missed. The cut host
/// reports every 2 s throughout, and once more after the heal (its digests
/// then tell the others). Judges, besides what the test does, that the
/// healed host is heard and reached within one announce interval. The
/// same scenario runs on the simulated LAN as
/// `core::tests::long_partition_heals_both_ways_exactly_once`.
#[test]
#[ignore = "figure run, ~2.5 min: cargo test --test integration long_partition_figures -- --ignored --nocapture"]
fn long_partition_figures() {
    partition_run(&Partition {
        cut_for: CUT_FOR,
        host1_talks_for: HOST1_TALKS_FOR,
        cut_host_every: 2,
        heard_within: ANNOUNCE_LIMIT,
    });
}

/// The figure run for docs/BENCHMARKS.md: broadcasts (`LOSSY_LAN_REPORTS`,
/// default 1000, one every `LOSSY_LAN_PACE_MS`, default 30) and answers
/// (`LOSSY_LAN_ANSWERS`, default 300) at 0, 10 and 30 % loss. Records,
/// does not judge: only duplicates fail it.
#[test]
#[ignore = "figure run, ~3 min: cargo test --test integration lossy_lan_figures -- --ignored --nocapture"]
fn lossy_lan_figures() {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let reports = env("LOSSY_LAN_REPORTS", 1000);
    let answers = env("LOSSY_LAN_ANSWERS", 300);
    let pace = Duration::from_millis(env("LOSSY_LAN_PACE_MS", 30) as u64);
    let mut rows = Vec::new();
    for loss in [0, 10, 30] {
        rows.push(broadcast_run(loss, reports, pace, REPAIR_LIMIT));
    }
    for loss in [0, 10, 30] {
        rows.push(answers_run(loss, answers, ANSWER_PACE, SLIPS_WAIT + QUIET));
    }
    println!("\n=== lossy LAN figures ===");
    for f in &rows {
        println!("{}", f.row());
    }
    for f in &rows {
        assert_eq!(f.duplicates, 0, "{f:?}");
    }
}
