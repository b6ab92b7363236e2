//! A lab for end-to-end scenarios: every host with a [`SlipsTree`], Slips
//! on its Redis ([`SlipsSide`], subscribed before the pigeon starts, as
//! the pigeon's Redis bridge publishes only while Slips listens) and a
//! pigeon started exactly as Slips starts it.
//!
//! Every gopy message any host receives is checked at receipt; every wait
//! of a [`World`] fails at once on an invalid one, naming it, and a failed
//! wait panics with the tails of every pigeon's `p2p.log` and stderr.

// Panicking with a message is how this harness reports a failed set-up.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::lab::{Lab, LabChild, SlipsTree};
use crate::slips::SlipsSide;
use crate::wait::{tail, wait_for};
use crate::{GOPY, PYGO};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// Bound of every wait for what happens at once (a start, a message, an
/// exit, a log line): only a hang reaches it, however busy the machine.
/// The tests judge outcomes, never how soon: Slips reads `multiAddress`
/// about 2 s after starting the pigeon, and the pigeon bounds its own
/// shutdown to 1.5 s, but a loaded machine may take longer to show either
/// (the times are printed).
pub const HANG_LIMIT: Duration = Duration::from_secs(30);
/// `multiAddress` after a start.
pub const MULTIADDR_LIMIT: Duration = HANG_LIMIT;
/// Discovery of every peer by every pigeon: a few announcements.
pub const DISCOVERY_LIMIT: Duration = HANG_LIMIT;
/// A message through pygo → LAN → gopy.
pub const DELIVERY_LIMIT: Duration = HANG_LIMIT;
/// A pigeon's shutdown (the goodbye, saving the peer list).
pub const EXIT_LIMIT: Duration = HANG_LIMIT;

/// `/ip4/<ip>/udp/<port>/p2p/<peer id>`, parsed: what the pigeon writes to
/// Redis' `multiAddress` for Slips.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiAddr {
    /// The pigeon's address (its `-host`).
    pub ip: Ipv4Addr,
    /// Its unicast port (its `-port`).
    pub port: u16,
    /// Its libp2p peer id.
    pub peer_id: String,
}

impl MultiAddr {
    /// Parses `/ip4/IP/udp/PORT/p2p/ID`.
    pub fn parse(s: &str) -> Option<MultiAddr> {
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

/// One lab host: its Slips tree, its Slips side and its pigeon.
pub struct Host {
    /// The host's number in the lab.
    pub i: usize,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Slips' `-port` for this host.
    pub port: u16,
    /// Where its pigeon runs from.
    pub tree: SlipsTree,
    /// Its Slips.
    pub slips: SlipsSide,
    /// Its pigeon, once started.
    pub pigeon: Option<LabChild>,
    /// The pigeon's multiaddress once known.
    pub addr: Option<MultiAddr>,
}

impl Host {
    /// The pigeon's peer id (panics before it is known).
    pub fn peer_id(&self) -> &str {
        &self
            .addr
            .as_ref()
            .unwrap_or_else(|| panic!("host {} has no known peer id", self.i))
            .peer_id
    }

    /// The pigeon's key file.
    pub fn key_file(&self) -> PathBuf {
        self.tree.runtime_dir().join("pigeon.keys")
    }

    /// The pigeon's stdout (Slips' `p2p.log`) so far.
    pub fn log(&self) -> String {
        self.tree.read_log()
    }
}

/// A lab with one Slips tree, Slips side and (optional) pigeon per host.
/// Field order matters: pigeons and subscribers go before the lab.
pub struct World {
    /// Host `i` is `hosts[i - 1]`.
    pub hosts: Vec<Host>,
    /// The lab itself.
    pub lab: Lab,
}

impl World {
    /// A lab of `n` hosts, each with a Slips side already subscribed to
    /// `p2p_gopy`; no pigeon runs yet.
    pub fn up(n: usize) -> World {
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

    /// Host `i`.
    pub fn h(&self, i: usize) -> &Host {
        &self.hosts[i - 1]
    }

    /// Host `i`, mutably.
    pub fn h_mut(&mut self, i: usize) -> &mut Host {
        &mut self.hosts[i - 1]
    }
    /// Tails of every pigeon's logs and every Slips side's messages.
    pub fn diag(&self) -> String {
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
    pub fn wait<T>(&self, limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
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
    pub fn redis<T: redis::FromRedisValue + Send>(&self, i: usize, cmd: &redis::Cmd) -> T {
        self.lab
            .redis(i, cmd)
            .unwrap_or_else(|e| panic!("redis {cmd:?} in host {i}: {e}\n{}", self.diag()))
    }

    /// Publishes `payload` on `p2p_pygo` of host `i`, as Slips does;
    /// returns the number of receivers.
    pub fn publish(&self, i: usize, payload: &str) -> i64 {
        self.redis(i, redis::cmd("PUBLISH").arg(PYGO).arg(payload))
    }

    /// [`Self::publish`] to a running pigeon, which must receive it.
    pub fn publish_to_pigeon(&self, i: usize, payload: &str) {
        let n = self.publish(i, payload);
        assert_eq!(
            n,
            1,
            "nobody got {payload} on {PYGO} of host {i}\n{}",
            self.diag()
        );
    }

    pub fn get(&self, i: usize, key: &str) -> Option<String> {
        self.redis(i, redis::cmd("GET").arg(key))
    }

    pub fn subscribers(&self, i: usize, channel: &str) -> i64 {
        let (_, n): (String, i64) = self.redis(i, redis::cmd("PUBSUB").arg("NUMSUB").arg(channel));
        n
    }

    pub fn wait_subscribers(&self, i: usize, channel: &str, n: i64) {
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
    pub fn start_with(&mut self, i: usize, extra: &[&str]) -> MultiAddr {
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

    pub fn start(&mut self, i: usize) -> MultiAddr {
        let addr = self.start_with(i, &[]);
        assert_eq!(addr.port, self.h(i).port, "the -port Slips gave");
        addr
    }

    /// Waits until every Slips side in `hosts` got a peer_update, with the
    /// right address, for every other host in `hosts`.
    pub fn wait_discovery(&self, hosts: &[usize]) {
        for &a in hosts {
            for &b in hosts.iter().filter(|&&b| b != a) {
                let (id, ip) = (self.h(b).peer_id().to_owned(), self.h(b).ip);
                self.wait(
                    DISCOVERY_LIMIT,
                    &format!("a peer_update about host {b} ({id}, {ip}) at host {a}"),
                    || {
                        self.h(a)
                            .slips
                            .has_peer_update(0, &id, &ip.to_string())
                            .then_some(())
                    },
                );
            }
        }
    }

    /// Waits until host `i`'s Slips side got a go_data from `reporter`
    /// with exactly `message` among the messages from index `from` on.
    pub fn wait_go_data(&self, i: usize, from: usize, reporter: &str, message: &str) {
        let want = (reporter.to_owned(), message.to_owned());
        self.wait(
            DELIVERY_LIMIT,
            &format!("go_data from {reporter} with message {message} at host {i}"),
            || {
                self.h(i)
                    .slips
                    .go_data_pairs_since(from)
                    .contains(&want)
                    .then_some(())
            },
        );
    }

    /// Waits for a line containing every one of `needles` in host `i`'s
    /// p2p.log (stdout), after byte `from`.
    pub fn wait_log(&self, i: usize, from: usize, needles: &[&str], limit: Duration) {
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
    pub fn wait_exit(&mut self, i: usize, limit: Duration) -> ExitStatus {
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

    pub fn pigeon(&mut self, i: usize) -> &mut LabChild {
        self.h_mut(i).pigeon.as_mut().expect("no pigeon started")
    }

    /// Every gopy message every Slips side received passed
    /// [`crate::slips::check_gopy`].
    pub fn assert_all_valid(&self) {
        for h in &self.hosts {
            for r in h.slips.received() {
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
