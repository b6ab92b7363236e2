//! End to end: the real `pigeon` binary, started exactly as Slips 1.1.21
//! starts it (a [`SlipsTree`] per host, Slips' argv, cwd and stdout), in
//! the hosts of a simulated LAN ([`Lab`]), each host with its own Redis.
//!
//! The lab, the Slips side of every host and the waits are
//! `testkit::world`: every gopy message any test receives is checked with
//! `testkit::slips::check_gopy` at receipt, and each test ends by asserting
//! that all of them passed. The few fixed waits are for "nothing else
//! arrives" checks, which cannot be polled.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use testkit::lab::{self, LAB_REDIS_PORT};
use testkit::slips::{pygo_scroll, report_b64, report_scroll, request_b64, request_scroll};
use testkit::wait::{tail, today_utc, wait_for};
use testkit::world::{
    DELIVERY_LIMIT, DISCOVERY_LIMIT, EXIT_LIMIT, HANG_LIMIT, MULTIADDR_LIMIT, MultiAddr, World,
};
use testkit::{PYGO, SLIPS_VERSION};

/// "Nothing else arrives" is checked for this long.
const QUIET: Duration = Duration::from_secs(1);

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
    let before3 = w.h(3).slips.go_data_pairs().len();
    let report = report_b64("198.51.100.7", 0.8, 0.9);
    let scroll = report_scroll("198.51.100.7", 0.8, 0.9, &ids[0], SLIPS_VERSION);
    w.publish_to_pigeon(2, &scroll);
    w.wait_go_data(1, 0, &ids[1], &report);
    thread::sleep(QUIET);
    let at3 = w.h(3).slips.go_data_pairs();
    assert_eq!(
        at3.len(),
        before3,
        "host 3 got the directed answer: {at3:?}"
    );
    // Nobody hears itself, and each message arrived once.
    assert_eq!(w.h(1).slips.go_data_pairs(), vec![(ids[1].clone(), report)]);
    assert_eq!(
        w.h(2).slips.go_data_pairs(),
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
    assert_eq!(w.h(2).slips.go_data_pairs(), vec![(id1, ours)]);
    w.wait_log(
        1,
        log1_len,
        &["another Slips version", "9.9.9"],
        Duration::from_secs(1),
    );
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
    let sessions = w.h(2).slips.sessions();

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
        (w.h(2).slips.sessions() > sessions).then_some(())
    });
    // The pigeon did see the outage (else this test proves nothing).
    w.wait_log(2, 0, &["Redis connection lost"], QUIET);
    let want: Vec<(String, String)> = messages.into_iter().map(|m| (id1.clone(), m)).collect();
    w.wait(HANG_LIMIT, "all 20 reports at host 2", || {
        (w.h(2).slips.go_data_since(from).len() >= want.len()).then_some(())
    });
    thread::sleep(QUIET); // duplicates would show up now
    assert_eq!(
        w.h(2).slips.go_data_pairs_since(from),
        want,
        "\n{}",
        w.diag()
    );
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
