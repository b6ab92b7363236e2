//! The Redis bridge against a real redis-server, each test inside its own
//! loopback-only network namespace (`testkit::lab::in_loopback_netns`).
//!
//! The "Slips side" is played by the redis crate's plain clients: a
//! connection publishing on `p2p_pygo`, and `testkit::slips::SlipsSide`'s
//! subscriber on `p2p_gopy` that reconnects on its own (like redis-py), on
//! a thread of the test's namespace.
//!
//! Outages are deterministic because the bridge delivers a message only
//! when `PUBLISH` reports a receiver: whatever the order in which the
//! bridge and the test subscriber come back after a restart, nothing
//! published meanwhile is lost, so the tests can demand the exact
//! sequence.
//!
//! The 5-minute outage test is ignored by default; run it with
//! `cargo test --test integration redis_bridge::outage_of_5_minutes -- --ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroUsize;
use std::thread;
use std::time::{Duration, Instant};

use pigeon::config::RedisConfig;
use pigeon::io::redis_bridge::{self, BridgeHandle, RedisSettings};
use tokio::sync::mpsc;

use testkit::lab::{RedisServer, in_loopback_netns};
use testkit::runtime::TestRuntime;
use testkit::slips::SlipsSide;
use testkit::wait::wait_until;
use testkit::{GOPY, PYGO};

pub(crate) fn settings(address: &str, capacity: usize) -> RedisSettings {
    RedisSettings {
        target: redis_bridge::parse_address(address).expect("a valid address"),
        password: None,
        channel_pygo: PYGO.to_owned(),
        channel_gopy: GOPY.to_owned(),
        outbox_capacity: NonZeroUsize::new(capacity).expect("a capacity of at least 1"),
    }
}

/// Bound of the waits for what happens at once on loopback (a connection,
/// a message, a key): only a hang reaches it, however busy the machine.
const HANG: Duration = Duration::from_secs(30);

/// A synchronous Redis command from the Slips side.
fn slips_cmd<T: redis::FromRedisValue>(url: &str, cmd: &redis::Cmd) -> redis::RedisResult<T> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_connection_with_timeout(Duration::from_secs(1))?;
    cmd.query(&mut con)
}

/// Publishes on pygo like Slips; returns the number of receivers.
fn slips_publish(url: &str, payload: impl redis::ToRedisArgs) -> i64 {
    slips_cmd(url, redis::cmd("PUBLISH").arg(PYGO).arg(payload)).unwrap()
}

fn slips_get(url: &str, key: &str) -> Option<String> {
    slips_cmd(url, redis::cmd("GET").arg(key)).unwrap()
}

pub(crate) fn subscribers(url: &str, channel: &str) -> i64 {
    let reply: redis::RedisResult<(String, i64)> =
        slips_cmd(url, redis::cmd("PUBSUB").arg("NUMSUB").arg(channel));
    reply.map_or(0, |(_, n)| n)
}

/// A Redis on `127.0.0.1:port` of the calling thread's namespace, Slips
/// subscribed to gopy on it, and a bridge (outbox of `capacity`) started
/// after Slips listens.
fn slips_and_bridge(
    port: u16,
    capacity: usize,
) -> (
    RedisServer,
    TestRuntime,
    SlipsSide,
    BridgeHandle,
    mpsc::Receiver<String>,
) {
    let server = RedisServer::start(port);
    let url = server.url();
    let rt = TestRuntime::new();
    let slips = SlipsSide::start_here(&url);
    wait_until(HANG, "the gopy subscriber", || subscribers(&url, GOPY) == 1);
    let (bridge, rx) = rt.block_on(redis_bridge::start(settings(&url, capacity)));
    (server, rt, slips, bridge, rx)
}

/// Receives `count` messages from the bridge's pygo receiver.
fn receive(rt: &TestRuntime, rx: &mut mpsc::Receiver<String>, count: usize) -> Vec<String> {
    rt.block_on(async {
        let mut got = Vec::new();
        while got.len() < count {
            match tokio::time::timeout(HANG, rx.recv()).await {
                Ok(Some(msg)) => got.push(msg),
                other => panic!("pygo receiver: {other:?} after {got:?}"),
            }
        }
        got
    })
}

pub(crate) fn wait_connected(bridge: &BridgeHandle, limit: Duration) {
    wait_until(limit, "the bridge to connect", || bridge.stats().connected);
}

#[test]
fn messages_and_keys_flow_both_ways_in_order() {
    in_loopback_netns(|| {
        let (server, rt, slips, bridge, mut rx) = slips_and_bridge(6401, 100);
        let url = server.url();
        bridge.set("multiAddress".into(), "/ip4/10.0.0.1/tcp/4001/p2p/x".into());
        // Slips reads multiAddress once, ~2 s after starting the pigeon.
        wait_until(HANG, "multiAddress", || {
            slips_get(&url, "multiAddress").as_deref() == Some("/ip4/10.0.0.1/tcp/4001/p2p/x")
        });
        wait_connected(&bridge, HANG);

        for i in 0..50 {
            assert_eq!(slips_publish(&url, format!("pygo-{i}")), 1);
        }
        let expected: Vec<String> = (0..50).map(|i| format!("pygo-{i}")).collect();
        assert_eq!(receive(&rt, &mut rx, 50), expected);

        for i in 0..50 {
            bridge.publish(format!("gopy-{i}"));
        }
        assert!(rt.block_on(bridge.flush(HANG)));
        let expected: Vec<String> = (0..50).map(|i| format!("gopy-{i}")).collect();
        assert_eq!(slips.wait_texts(50, HANG), expected);

        // Not UTF-8: dropped and counted; the next message still arrives.
        assert_eq!(slips_publish(&url, &b"\xff\xfe"[..]), 1);
        assert_eq!(slips_publish(&url, "after"), 1);
        assert_eq!(receive(&rt, &mut rx, 1), ["after"]);

        // A new value replaces the old one; delete removes the key.
        bridge.set("multiAddress".into(), "second".into());
        wait_until(HANG, "the new value", || {
            slips_get(&url, "multiAddress").as_deref() == Some("second")
        });
        bridge.delete(["multiAddress".to_owned()]);
        wait_until(HANG, "the deletion", || {
            slips_get(&url, "multiAddress").is_none()
        });

        let stats = bridge.stats();
        assert_eq!(stats.published, 50);
        assert_eq!(stats.received, 51);
        assert_eq!(stats.dropped_non_utf8, 1);
        assert_eq!(stats.dropped_outbox, 0);
        assert_eq!(stats.reconnects, 0);
        assert_eq!(stats.outbox_len, 0);
        assert!(stats.connected);
        assert_eq!(stats.last_error, None);
        assert_eq!(slips.texts().len(), 50);
    });
}

/// Redis goes away for `outage` while the pigeon side publishes one message
/// every 100 ms; afterwards every message must reach Slips exactly once and
/// in order, pygo must work again, and `multiAddress` must be back.
fn survive_outage(port: u16, outage: Duration) {
    in_loopback_netns(move || {
        let (mut server, rt, slips, bridge, mut rx) = slips_and_bridge(port, 10_000);
        let url = server.url();
        bridge.set("multiAddress".into(), "addr".into());
        wait_connected(&bridge, HANG);

        let running = Duration::from_secs(1) + outage + Duration::from_secs(2);
        let total = usize::try_from(running.as_millis() / 100).unwrap();
        let producer = {
            let bridge = bridge.clone();
            rt.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                for i in 0..total {
                    tick.tick().await;
                    bridge.publish(format!("m{i:05}"));
                }
            })
        };

        thread::sleep(Duration::from_secs(1));
        server.stop();
        wait_until(HANG, "the bridge to notice", || !bridge.stats().connected);
        thread::sleep(outage.saturating_sub(Duration::from_millis(500)));
        assert!(!bridge.stats().connected);
        server.restart();

        // Subscription to pygo resumes on its own.
        wait_until(Duration::from_secs(15), "the bridge to resubscribe", || {
            subscribers(&url, PYGO) == 1
        });
        assert_eq!(slips_publish(&url, "after restart"), 1);
        assert_eq!(receive(&rt, &mut rx, 1), ["after restart"]);
        // The restarted Redis is empty: the key is written again.
        wait_until(HANG, "multiAddress again", || {
            slips_get(&url, "multiAddress").as_deref() == Some("addr")
        });

        rt.block_on(producer).unwrap();
        assert!(rt.block_on(bridge.flush(Duration::from_secs(20))));
        let expected: Vec<String> = (0..total).map(|i| format!("m{i:05}")).collect();
        let got = slips.wait_texts(total, HANG);
        assert_eq!(got, expected, "lost, duplicated or reordered messages");

        let stats = bridge.stats();
        assert!(stats.connected);
        assert!(stats.reconnects >= 1, "{stats:?}");
        assert_eq!(stats.dropped_outbox, 0);
        assert_eq!(stats.published, u64::try_from(total).unwrap());
        thread::sleep(Duration::from_millis(300));
        assert_eq!(slips.texts().len(), total, "late duplicates");
    });
}

#[test]
fn outage_of_1_second() {
    survive_outage(6402, Duration::from_secs(1));
}

/// Longer than the connection manager's own retry budget (redis 1.8.1:
/// 6 retries, delays doubling from 100 ms, plus connection timeouts): only
/// the bridge's health check brings it back.
#[test]
fn outage_of_12_seconds() {
    survive_outage(6403, Duration::from_secs(12));
}

/// Too slow for every run (~5.5 min). Run it with
/// `cargo test --test integration redis_bridge::outage_of_5_minutes -- --ignored`.
#[test]
#[ignore = "takes about 5.5 minutes"]
fn outage_of_5_minutes() {
    survive_outage(6404, Duration::from_secs(300));
}

#[test]
fn full_outbox_drops_the_oldest() {
    in_loopback_netns(|| {
        let server = RedisServer::start(6405);
        let url = server.url();
        let rt = TestRuntime::new();
        // Nobody listens on gopy yet: the bridge holds the messages.
        let (bridge, _rx) = rt.block_on(redis_bridge::start(settings(&url, 10)));
        wait_connected(&bridge, HANG);
        for i in 0..25 {
            bridge.publish(format!("m{i}"));
        }
        let stats = bridge.stats();
        assert_eq!(stats.dropped_outbox, 15);
        assert_eq!(stats.outbox_len, 10);
        assert!(!rt.block_on(bridge.flush(Duration::from_millis(300))));
        assert_eq!(bridge.stats().published, 0);

        let slips = SlipsSide::start_here(&url);
        assert!(rt.block_on(bridge.flush(HANG)));
        let expected: Vec<String> = (15..25).map(|i| format!("m{i}")).collect();
        assert_eq!(slips.wait_texts(10, HANG), expected);
        let stats = bridge.stats();
        assert_eq!((stats.published, stats.dropped_outbox), (10, 15));
    });
}

#[test]
fn localhost_reaches_an_ipv4_only_redis() {
    in_loopback_netns(|| {
        let server = RedisServer::start(6406);
        let url = server.url();
        let rt = TestRuntime::new();
        let (bridge, mut rx) = rt.block_on(redis_bridge::start(settings("localhost:6406", 10)));
        bridge.set("multiAddress".into(), "via localhost".into());
        wait_until(HANG, "multiAddress", || {
            slips_get(&url, "multiAddress").as_deref() == Some("via localhost")
        });
        wait_connected(&bridge, HANG);
        assert_eq!(slips_publish(&url, "hello"), 1);
        assert_eq!(receive(&rt, &mut rx, 1), ["hello"]);
    });
}

#[test]
fn redis_down_at_start_is_not_fatal() {
    in_loopback_netns(|| {
        let rt = TestRuntime::new();
        let started = Instant::now();
        let (bridge, mut rx) = rt.block_on(redis_bridge::start(settings("127.0.0.1:6407", 100)));
        assert!(started.elapsed() < Duration::from_secs(5));
        bridge.set("multiAddress".into(), "late".into());
        for i in 0..5 {
            bridge.publish(format!("early-{i}"));
        }
        thread::sleep(Duration::from_secs(3));
        let stats = bridge.stats();
        assert!(!stats.connected);
        assert!(stats.last_error.is_some(), "{stats:?}");
        assert_eq!(stats.outbox_len, 5);

        let server = RedisServer::start(6407);
        let url = server.url();
        let up = Instant::now();
        let slips = SlipsSide::start_here(&url);
        wait_until(HANG, "multiAddress", || {
            slips_get(&url, "multiAddress").as_deref() == Some("late")
        });
        eprintln!("multiAddress {:?} after Redis came up", up.elapsed());
        assert!(rt.block_on(bridge.flush(HANG)));
        let expected: Vec<String> = (0..5).map(|i| format!("early-{i}")).collect();
        assert_eq!(slips.wait_texts(5, HANG), expected);
        assert_eq!(slips_publish(&url, "ping"), 1);
        assert_eq!(receive(&rt, &mut rx, 1), ["ping"]);
        assert_eq!(bridge.stats().reconnects, 0);
    });
}

#[test]
fn passwords_and_auth_files() {
    in_loopback_netns(|| {
        let server = RedisServer::start(6408);
        let url = server.url();
        let _: () = slips_cmd(
            &url,
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("requirepass")
                .arg("s3cret"),
        )
        .unwrap();
        let authed = "redis://:s3cret@127.0.0.1:6408/0".to_owned();
        let rt = TestRuntime::new();

        // Newer Slips keep the password in permanent/redis_auth.conf, which
        // is ../redis_auth.conf from pigeon's working directory.
        let dir = tempfile::tempdir().unwrap();
        let runtime_dir = dir.path().join("p2p_trust_runtime");
        std::fs::create_dir(&runtime_dir).unwrap();
        std::fs::write(
            dir.path().join("redis_auth.conf"),
            "# Slips\nrequirepass s3cret\n",
        )
        .unwrap();
        let cfg = RedisConfig {
            address: "127.0.0.1:6408".into(),
            outbox_capacity: 10,
            ..RedisConfig::default()
        };
        let from_file = RedisSettings::from_config(&cfg, &runtime_dir).unwrap();
        let (good, mut rx) = rt.block_on(redis_bridge::start(from_file));
        good.set("multiAddress".into(), "authenticated".into());
        wait_until(HANG, "multiAddress", || {
            slips_get(&authed, "multiAddress").as_deref() == Some("authenticated")
        });
        assert_eq!(slips_publish(&authed, "secret hello"), 1);
        assert_eq!(receive(&rt, &mut rx, 1), ["secret hello"]);

        // Wrong password, or none: not fatal, reported, never connected.
        let mut wrong = settings("127.0.0.1:6408", 10);
        wrong.password = Some("wrong-pw".into());
        let (wrong, _rx1) = rt.block_on(redis_bridge::start(wrong));
        let (none, _rx2) = rt.block_on(redis_bridge::start(settings("127.0.0.1:6408", 10)));
        for bridge in [&wrong, &none] {
            wait_until(HANG, "an authentication error", || {
                bridge
                    .stats()
                    .last_error
                    .is_some_and(|e| e.contains("authentication failed"))
            });
            let stats = bridge.stats();
            assert!(!stats.connected);
            assert!(!stats.last_error.unwrap_or_default().contains("wrong-pw"));
        }

        // The server drops its password (e.g. restarted without one): the
        // bridge with a stale password recovers on its own, since a user
        // without password accepts any.
        let _: () = slips_cmd(
            &authed,
            redis::cmd("CONFIG").arg("SET").arg("requirepass").arg(""),
        )
        .unwrap();
        wait_connected(&wrong, HANG);
        wait_connected(&none, HANG);
        assert_eq!(wrong.stats().last_error, None);
    });
}
