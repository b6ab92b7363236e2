//! The operator view (issue 13) against real pigeons in the lab: `pigeon
//! status` through the control socket while peers come and go, the clear
//! failure when no pigeon runs, and the Prometheus endpoint scraped over
//! HTTP inside a lab host.
//!
//! Uses `testkit::world::World` (a Slips tree, a Slips-side subscriber and a
//! pigeon per lab host). `pigeon status` runs inside the lab host too
//! (`Lab::exec`), although a Unix socket is no network socket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Output};
use std::time::Duration;
use testkit::SLIPS_VERSION;
use testkit::lab::Lab;
use testkit::slips::{report_scroll, request_scroll};
use testkit::wait::tail;
use testkit::world::{DISCOVERY_LIMIT, EXIT_LIMIT, World};

/// Where host 1's pigeon serves its metrics (inside host 1 only).
const METRICS: &str = "127.0.0.1:9464";

/// Runs `pigeon status ARGS` in host `i`, in its runtime directory.
fn status(w: &World, i: usize, args: &[&str]) -> Output {
    let h = w.h(i);
    let mut cmd = Command::new(h.tree.binary());
    cmd.arg("status")
        .args(args)
        .current_dir(h.tree.runtime_dir());
    w.lab.exec(i, &mut cmd).expect("cannot run pigeon status")
}

/// `pigeon status -json` of host `i`, parsed; `None` if it failed.
fn status_json(w: &World, i: usize) -> Option<serde_json::Value> {
    let out = status(w, i, &["-json"]);
    if !out.status.success() {
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).expect("pigeon status -json is not JSON"))
}

/// The row of `peer_id` in a `-json` report.
fn row<'a>(report: &'a serde_json::Value, peer_id: &str) -> Option<&'a serde_json::Value> {
    report["node"]["peers"]
        .as_array()?
        .iter()
        .find(|p| p["peer_id"] == peer_id)
}

/// While peers come and go, `pigeon status` shows them appear, turn
/// inactive when they leave, and its JSON parses; the health block shows
/// Redis, Slips' subscription and the version from Slips' VERSION file.
#[test]
fn status_follows_peers_as_they_come_and_go() {
    let mut w = World::up(3);
    w.start(1);
    w.start(2);
    w.wait_discovery(&[1, 2]);
    let (id1, id2) = (w.h(1).peer_id().to_owned(), w.h(2).peer_id().to_owned());

    let socket = w.h(1).tree.runtime_dir().join("pigeon.sock");
    let mode = fs::symlink_metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "control socket mode");

    let r = w.wait(DISCOVERY_LIMIT, "host 2 in host 1's status", || {
        status_json(&w, 1).filter(|r| row(r, &id2).is_some_and(|p| p["state"] == "active"))
    });
    assert_eq!(r["format"], 1);
    assert_eq!(r["node"]["peer_id"], id1.as_str());
    assert_eq!(
        r["node"]["address"],
        format!("{}:{}", w.h(1).ip, w.h(1).port)
    );
    let h = &r["health"];
    assert_eq!(h["redis_connected"], true, "{h}");
    assert_eq!(h["slips_subscribers"], 1, "the Slips side listens: {h}");
    assert_eq!(h["slips_version"], SLIPS_VERSION);
    assert_eq!(h["slips_version_source"], "file");
    assert_eq!(h["group"], "239.255.112.103:47474");
    let p2 = row(&r, &id2).unwrap();
    assert_eq!(p2["address"], format!("{}:{}", w.h(2).ip, w.h(2).port));
    assert_eq!(p2["address_proven"], true, "proven by its response: {p2}");
    assert!(p2["datagrams_in"].as_u64().unwrap() >= 1, "{p2}");
    assert_eq!(p2["organisations"], serde_json::json!([]));
    assert_eq!(r["node"]["peers"].as_array().unwrap().len(), 1);

    // A third peer comes: a row appears.
    w.start(3);
    let id3 = w.h(3).peer_id().to_owned();
    w.wait(DISCOVERY_LIMIT, "host 3 in host 1's status", || {
        status_json(&w, 1).filter(|r| row(r, &id3).is_some_and(|p| p["state"] == "active"))
    });

    // Traffic moves the counters: a broadcast from host 1's Slips.
    w.publish_to_pigeon(1, &request_scroll("198.51.100.20", SLIPS_VERSION));
    let r = w.wait(
        DISCOVERY_LIMIT,
        "the broadcast in host 1's counters",
        || status_json(&w, 1).filter(|r| r["health"]["from_slips"]["broadcast"] == 1),
    );
    assert!(
        r["node"]["counters"]["sent_by_kind"]["data"]
            .as_u64()
            .unwrap()
            >= 1
    );

    // Host 2 leaves: its row turns inactive.
    w.pigeon(2).sigint().unwrap();
    assert!(w.wait_exit(2, EXIT_LIMIT).success(), "{}", w.diag());
    w.wait(
        DISCOVERY_LIMIT,
        "host 2 inactive in host 1's status",
        || status_json(&w, 1).filter(|r| row(r, &id2).is_some_and(|p| p["state"] == "inactive")),
    );

    // What an operator sees (printed for docs with --nocapture).
    let out = status(&w, 1, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    println!("$ pigeon status\n{text}");
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("connected to localhost:6379"), "{text}");
    assert!(
        text.contains("subscribed to p2p_gopy (1 subscriber(s))"),
        "{text}"
    );
    for (id, state) in [(&id2, "inactive"), (&id3, "active")] {
        let line = text
            .lines()
            .find(|l| l.starts_with(id.as_str()))
            .unwrap_or_else(|| panic!("no row for {id}:\n{text}"));
        assert!(line.contains(state), "{line}");
    }
    assert!(
        text.contains("2 peer(s): 1 active, 1 inactive, 0 banned"),
        "{text}"
    );

    // Host 1 stops: its socket goes with it.
    w.pigeon(1).sigint().unwrap();
    assert!(w.wait_exit(1, EXIT_LIMIT).success(), "{}", w.diag());
    assert!(!socket.exists(), "control socket left behind");
    w.assert_all_valid();
}

/// With no pigeon running, `pigeon status` exits 1 with a message saying
/// so, whether the socket is missing or left behind by a killed pigeon.
#[test]
fn status_without_a_pigeon_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pigeon"))
            .arg("status")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no pigeon is running here"), "{err}");
    assert!(err.contains("pigeon.sock does not exist"), "{err}");
    assert!(out.stdout.is_empty());

    // A socket file nobody listens on, as a SIGKILLed pigeon leaves it.
    drop(std::os::unix::net::UnixListener::bind(dir.path().join("pigeon.sock")).unwrap());
    let out = run(&["-json", "-socket", dir.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no pigeon is running here"), "{err}");
    assert!(err.contains("refuses connections"), "{err}");
}

/// A second pigeon started in the same runtime directory refuses to start
/// while the first answers; after a SIGKILL the stale socket is replaced.
#[test]
fn control_socket_guards_the_runtime_directory() {
    let mut w = World::up(1);
    w.start(1);
    let h = w.h(1);
    let mut second = h
        .tree
        .command(h.ip, h.port + 100, testkit::lab::LAB_REDIS_PORT, &[])
        .unwrap();
    let out = w.lab.exec(1, &mut second).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let log = w.h(1).log();
    assert!(
        log.contains("another pigeon is running in this directory"),
        "{}",
        tail(&log, 10)
    );
    // The first one still answers.
    assert!(status_json(&w, 1).is_some());

    w.pigeon(1).sigkill().unwrap();
    w.wait_exit(1, EXIT_LIMIT);
    assert!(w.h(1).tree.runtime_dir().join("pigeon.sock").exists());
    w.start(1);
    assert!(status_json(&w, 1).is_some(), "{}", w.diag());
}

/// Another user cannot use the control socket (mode 0600), even with the
/// directories open to everyone.
#[test]
fn status_is_refused_to_other_users() {
    const NOBODY: u32 = 65_534;
    let mut w = World::up(1);
    w.start(1);
    let tree = &w.h(1).tree;
    for d in [
        tree.root().to_owned(),
        tree.root().join("permanent"),
        tree.runtime_dir(),
    ] {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut cmd = Command::new(tree.binary());
    cmd.arg("status").current_dir(tree.runtime_dir());
    std::os::unix::process::CommandExt::uid(&mut cmd, NOBODY);
    std::os::unix::process::CommandExt::gid(&mut cmd, NOBODY);
    let out = w.lab.exec(1, &mut cmd).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("permission denied"), "{err}");
    assert!(out.stdout.is_empty());
}

/// One scrape: the HTTP head and the samples (`name{labels}` → value).
fn scrape(lab: &Lab, i: usize) -> (String, BTreeMap<String, f64>) {
    let raw = lab.run_in(i, || -> std::io::Result<String> {
        let mut s = TcpStream::connect(METRICS)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text)
    });
    let raw = raw.expect("cannot scrape the metrics");
    let (head, body) = raw.split_once("\r\n\r\n").expect("no HTTP head");
    let mut samples = BTreeMap::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line.rsplit_once(' ').expect("sample without value");
        samples.insert(name.to_owned(), value.parse().expect("value not a number"));
    }
    assert!(body.ends_with("# EOF\n"), "{body}");
    (head.to_owned(), samples)
}

/// With `[metrics] listen` set, the endpoint answers inside the host, in
/// OpenMetrics text, and its values move as traffic flows.
#[test]
fn metrics_scraped_over_http_move_with_traffic() {
    let mut w = World::up(2);
    for i in 1..=2 {
        fs::write(
            w.h(i).tree.runtime_dir().join("pigeon.toml"),
            format!("[metrics]\nlisten = \"{METRICS}\"\n"),
        )
        .unwrap();
    }
    w.start(1);
    w.start(2);
    w.wait_discovery(&[1, 2]);
    let id1 = w.h(1).peer_id().to_owned();

    let (head, m) = scrape(&w.lab, 1);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert_eq!(m["pigeon_build_info{version=\"0.1.0\"}"], 1.0);
    assert_eq!(m["pigeon_redis_connected"], 1.0);
    assert_eq!(m["pigeon_slips_subscribed"], 1.0);
    assert_eq!(m["pigeon_peers{state=\"active\"}"], 1.0);
    // The peer joined: its response to our challenge was accepted.
    assert!(m["pigeon_datagrams_accepted_total{kind=\"response\"}"] >= 1.0);
    assert_eq!(m["pigeon_directed_delivery_seconds_count"], 0.0);
    assert!(!m.keys().any(|k| k.contains("12D3KooW")), "per-peer label");

    // Host 1's Slips asks everyone; host 2's answers host 1 directly.
    let sent_before = m["pigeon_datagrams_sent_total{kind=\"data\"}"];
    w.publish_to_pigeon(1, &request_scroll("198.51.100.21", SLIPS_VERSION));
    w.publish_to_pigeon(
        2,
        &report_scroll("198.51.100.21", 0.5, 0.9, &id1, SLIPS_VERSION),
    );
    let m = w.wait(DISCOVERY_LIMIT, "the traffic in host 1's metrics", || {
        let (_, m) = scrape(&w.lab, 1);
        (m["pigeon_slips_messages_received_total{result=\"broadcast\"}"] == 1.0
            && m["pigeon_slips_messages_queued_total{type=\"go_data\"}"] >= 1.0)
            .then_some(m)
    });
    assert!(m["pigeon_datagrams_sent_total{kind=\"data\"}"] > sent_before);
    assert!(
        m["pigeon_datagrams_sent_total{kind=\"ack\"}"] >= 1.0,
        "acked the answer"
    );
    // Host 2 measured the delivery of its directed answer.
    let m2 = w.wait(
        DISCOVERY_LIMIT,
        "the directed delivery in host 2's metrics",
        || {
            let (_, m) = scrape(&w.lab, 2);
            (m["pigeon_directed_delivery_seconds_count"] == 1.0).then_some(m)
        },
    );
    assert_eq!(
        m2["pigeon_directed_delivery_seconds_bucket{le=\"+Inf\"}"],
        1.0
    );
    assert_eq!(
        m2["pigeon_slips_messages_received_total{result=\"directed\"}"],
        1.0
    );
    w.assert_all_valid();
}

/// Metrics are off by default: nothing listens on the metrics port.
#[test]
fn metrics_are_off_by_default() {
    let mut w = World::up(1);
    w.start(1);
    let r = status_json(&w, 1).expect("status");
    assert_eq!(r["health"]["metrics"], serde_json::Value::Null);
    let refused = w.lab.run_in(1, || TcpStream::connect(METRICS).is_err());
    assert!(refused, "something listens on {METRICS}");
}
