//! Organisations on the namespace LAN (docs/PROTOCOL.md §10): five real
//! pigeons started as Slips starts them, three of them members of
//! organisation A (credentials made with `pigeon org`), one of those
//! revoked during the test, two not members. A capture in the bridge's
//! namespace records every frame of the LAN (unicast included, which a
//! non-member on a switched LAN would not even see) and is searched for
//! the payloads. The `pigeon org` tool on its own (files only, no
//! network) is tested here too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use testkit::SLIPS_VERSION;
use testkit::slips::{blame_b64, pygo_scroll, report_b64};
use testkit::wait::wait_for;
use testkit::world::World;

const PIGEON: &str = env!("CARGO_BIN_EXE_pigeon");
/// The members' announce interval: list gossip to a pigeon that missed
/// the multicast waits for at most one (PROTOCOL.md §10.3).
const ANNOUNCE_MS: u64 = 5_000;
/// A revocation must be in force within the list poll (2 s), the
/// multicast and a margin for this loaded machine.
const REVOCATION_LIMIT: Duration = Duration::from_secs(15);
/// "Nothing arrives" is checked for this long.
const QUIET: Duration = Duration::from_secs(3);
/// At most this much of the LAN is kept by the capture.
const CAPTURE_CAP: usize = 64 << 20;

/// Runs `pigeon org …` (or any subcommand); its stdout, trimmed.
fn pigeon(args: &[&str]) -> String {
    let out = Command::new(PIGEON)
        .args(args)
        .output()
        .expect("run pigeon");
    assert!(
        out.status.success(),
        "pigeon {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Every frame crossing the lab's bridge, concatenated.
struct Capture {
    bytes: Arc<Mutex<Vec<u8>>>,
    frames: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Capture {
    fn start(w: &World) -> Capture {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let frames = Arc::new(Mutex::new(0usize));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, f, s) = (Arc::clone(&bytes), Arc::clone(&frames), Arc::clone(&stop));
        let thread = w.lab.run_in_bridge(move || {
            // AF_PACKET, every protocol: in the bridge's namespace it sees
            // each frame on br0 and on every host's port.
            let proto = socket2::Protocol::from(i32::from((libc::ETH_P_ALL as u16).to_be()));
            let sock =
                socket2::Socket::new(socket2::Domain::PACKET, socket2::Type::RAW, Some(proto))
                    .expect("packet socket (root)");
            sock.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !s.load(Ordering::Relaxed) {
                    if let Ok(n) = (&sock).read(&mut buf) {
                        let mut all = b.lock().unwrap();
                        if all.len() + n <= CAPTURE_CAP {
                            all.extend_from_slice(&buf[..n]);
                            *f.lock().unwrap() += 1;
                        }
                    }
                }
            })
        });
        Capture {
            bytes,
            frames,
            stop,
            thread: Some(thread),
        }
    }

    fn contains(&self, needle: &[u8]) -> bool {
        self.bytes
            .lock()
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
    }

    fn frames(&self) -> usize {
        *self.frames.lock().unwrap()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The organisations host `i`'s pigeon has verified for `peer`, from
/// `pigeon status -json` (its control socket).
fn orgs_seen(w: &World, i: usize, peer: &str) -> Option<Vec<String>> {
    let socket = w.h(i).tree.runtime_dir().join("pigeon.sock");
    let out = Command::new(PIGEON)
        .args(["status", "-json", "-socket"])
        .arg(&socket)
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["node"]["peers"].as_array()?.iter().find_map(|p| {
        (p["peer_id"] == peer).then(|| {
            p["organisations"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|o| o.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        })
    })
}

fn count(w: &World, i: usize, message: &str) -> usize {
    w.h(i)
        .slips
        .go_data()
        .iter()
        .filter(|d| d.message == message)
        .count()
}

fn write_config(dir: &Path, credential: Option<&str>, org: &str) {
    let member = credential.map_or_else(String::new, |c| {
        format!("member = [ {{ credential = \"{c}\" }} ]\n")
    });
    let text = format!(
        "[discovery]\nannounce_interval_ms = {ANNOUNCE_MS}\n\n[org]\n{member}trusted = [ {{ id = \"{org}\", trust = 0.8, forward_blames = true }} ]\n"
    );
    std::fs::write(dir.join("pigeon.toml"), text).unwrap();
}

/// The "done when".
#[test]
fn org_reports_reach_current_members_only_and_a_revoked_member_is_locked_out() {
    let mut w = World::up(5);
    let admin = tempfile::tempdir().unwrap();
    let org_key = admin.path().join("org.key");
    let org = pigeon(&["org", "create", "-org-key", org_key.to_str().unwrap()]);
    // Keys of every host made beforehand (as `pigeon org create` writes a
    // pigeon key file too), so that the members can ask for credentials.
    let mut creds = Vec::new();
    for i in 1..=5 {
        let key: PathBuf = w.h(i).tree.runtime_dir().join("pigeon.keys");
        pigeon(&["org", "create", "-org-key", key.to_str().unwrap()]);
        if i <= 3 {
            let req = pigeon(&["org", "request", "-key-file", key.to_str().unwrap()]);
            let cred = pigeon(&[
                "org",
                "sign",
                "-org-key",
                org_key.to_str().unwrap(),
                "-request",
                &req,
                "-expires",
                "1",
            ]);
            assert_eq!(
                Command::new(PIGEON)
                    .args(["org", "verify", "-credential", &cred, "-org", &org])
                    .stdout(std::process::Stdio::null())
                    .status()
                    .unwrap()
                    .code(),
                Some(0)
            );
            write_config(&w.h(i).tree.runtime_dir(), Some(&cred), &org);
            creds.push(cred);
        } else if i == 4 {
            // Trusts the organisation without being a member.
            write_config(&w.h(i).tree.runtime_dir(), None, &org);
        }
    }
    for i in 1..=5 {
        w.start(i);
    }
    let ids: Vec<String> = (1..=5).map(|i| w.h(i).peer_id().to_owned()).collect();
    w.wait_discovery(&[1, 2, 3, 4, 5]);
    // Membership proven: every member verified by every pigeon that knows
    // the organisation, the non-members by none.
    for i in 1..=4 {
        for j in (1..=3).filter(|j| *j != i) {
            w.wait(
                Duration::from_secs(15),
                &format!("host {i} verifies host {j}"),
                || (orgs_seen(&w, i, &ids[j - 1]) == Some(vec![org.clone()])).then_some(()),
            );
        }
        assert_eq!(orgs_seen(&w, i, &ids[4]), Some(Vec::new()));
    }
    let capture = Capture::start(&w);

    // An org-scoped report from host 1 reaches hosts 2 and 3, once each.
    let ip1 = "198.51.100.201";
    let report1 = report_b64(ip1, 0.7, 0.9);
    w.publish_to_pigeon(1, &pygo_scroll(&report1, "*", SLIPS_VERSION));
    w.wait_go_data(2, 0, &ids[0], &report1);
    w.wait_go_data(3, 0, &ids[0], &report1);
    thread::sleep(QUIET);
    for (i, n) in [(2, 1), (3, 1), (4, 0), (5, 0)] {
        assert_eq!(count(&w, i, &report1), n, "host {i}\n{}", w.diag());
    }
    // Nobody recording the LAN can find it, while a non-member's report
    // (in clear, as without organisations) is right there.
    let ip0 = "198.51.100.200";
    let clear = report_b64(ip0, 0.5, 0.5);
    w.publish_to_pigeon(5, &pygo_scroll(&clear, "*", SLIPS_VERSION));
    w.wait_go_data(1, 0, &ids[4], &clear);
    wait_for(
        Duration::from_secs(5),
        "the clear report in the capture",
        || w.diag(),
        || capture.contains(clear.as_bytes()).then_some(()),
    );
    assert!(
        !capture.contains(report1.as_bytes()),
        "payload in clear on the LAN"
    );
    assert!(
        !capture.contains(ip1.as_bytes()),
        "reported address in clear on the LAN"
    );

    // Blames: a member's (sealed) is forwarded by the other members, whose
    // organisation policy allows it; a non-member's (in clear) by nobody.
    let (ip_m, ip_n) = ("198.51.100.202", "198.51.100.203");
    let (blame_m, blame_n) = (blame_b64(ip_m, 0.9, 0.9), blame_b64(ip_n, 0.9, 0.9));
    w.publish_to_pigeon(2, &pygo_scroll(&blame_m, "*", SLIPS_VERSION));
    w.publish_to_pigeon(4, &pygo_scroll(&blame_n, "*", SLIPS_VERSION));
    w.wait_go_data(1, 0, &ids[1], &blame_m);
    w.wait_go_data(3, 0, &ids[1], &blame_m);
    thread::sleep(QUIET);
    for i in [1, 2, 3, 5] {
        assert_eq!(
            count(&w, i, &blame_n),
            0,
            "host {i} forwarded a non-member's blame"
        );
    }
    assert!(!capture.contains(blame_m.as_bytes()));

    // Host 3 is revoked: the list is dropped on host 1 only.
    let list_dir = w.h(1).tree.runtime_dir().join("org-lists");
    std::fs::create_dir_all(&list_dir).unwrap();
    let list = list_dir.join("a.list");
    let revoked_at = Instant::now();
    pigeon(&[
        "org",
        "revoke",
        "-org-key",
        org_key.to_str().unwrap(),
        "-list",
        list.to_str().unwrap(),
        "-credential",
        &creds[2],
    ]);
    for i in [1, 2, 4] {
        wait_for(
            REVOCATION_LIMIT,
            &format!("host {i} no longer counts host 3 as a member"),
            || w.diag(),
            || (orgs_seen(&w, i, &ids[2]) == Some(Vec::new())).then_some(()),
        );
    }
    let took = revoked_at.elapsed();
    eprintln!("revocation in force at hosts 1, 2 and 4 after {took:?}");
    // The list reached the others' directories (kept across restarts).
    for i in [2, 4] {
        let saved = w
            .h(i)
            .tree
            .runtime_dir()
            .join("org-lists")
            .join(format!("{org}.list"));
        wait_for(
            Duration::from_secs(5),
            "the list saved",
            || w.diag(),
            || saved.exists().then_some(()),
        );
    }

    // After the revocation, host 3 gets nothing it can read.
    let ip2 = "198.51.100.204";
    let report2 = report_b64(ip2, 0.6, 0.8);
    let sent_at = Instant::now();
    w.publish_to_pigeon(1, &pygo_scroll(&report2, "*", SLIPS_VERSION));
    w.wait_go_data(2, 0, &ids[0], &report2);
    eprintln!("org report host 1 -> host 2 after {:?}", sent_at.elapsed());
    thread::sleep(QUIET);
    for (i, n) in [(2, 1), (3, 0), (4, 0), (5, 0)] {
        assert_eq!(count(&w, i, &report2), n, "host {i}\n{}", w.diag());
    }
    assert!(!capture.contains(report2.as_bytes()));
    assert!(!capture.contains(ip2.as_bytes()));
    // Host 3's own reports are no longer taken as the organisation's.
    let ip3 = "198.51.100.205";
    let report3 = report_b64(ip3, 0.6, 0.8);
    w.publish_to_pigeon(3, &pygo_scroll(&report3, "*", SLIPS_VERSION));
    thread::sleep(QUIET);
    for i in [1, 2, 4, 5] {
        assert_eq!(count(&w, i, &report3), 0, "host {i}");
    }

    // A member that restarts reads new org messages again, without the
    // administrator: the others send it their keys when it is back.
    w.pigeon(2).sigint().unwrap();
    w.wait_exit(2, Duration::from_secs(3));
    let restarted = Instant::now();
    w.start(2);
    let mut k = 0u32;
    let first = loop {
        k += 1;
        let ip = format!("198.51.101.{}", k % 250);
        let report = report_b64(&ip, 0.6, 0.8);
        w.publish_to_pigeon(1, &pygo_scroll(&report, "*", SLIPS_VERSION));
        thread::sleep(Duration::from_millis(200));
        if count(&w, 2, &report) == 1 {
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(20),
            "the restarted member reads nothing\n{}",
            w.diag()
        );
    };
    eprintln!("restarted member: first org report read {first:?} after its start ({k} sent)");
    eprintln!("capture: {} frames", capture.frames());
    w.assert_all_valid();

    // `pigeon peers` shows the verified organisations of the saved list.
    w.pigeon(1).sigint().unwrap();
    w.wait_exit(1, Duration::from_secs(3));
    let list = w.h(1).tree.runtime_dir().join("peers.json");
    let table = pigeon(&["peers", "-peerstore-file", list.to_str().unwrap()]);
    let row = |id: &str| {
        table
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("no row for {id} in\n{table}"))
            .to_owned()
    };
    assert!(row(&ids[1]).ends_with(&org), "{table}");
    assert!(row(&ids[2]).ends_with(" -"), "revoked: {table}");
    assert!(row(&ids[4]).ends_with(" -"), "{table}");
}

/// Runs `pigeon` with `args`: exit code, stdout, stderr.
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(PIGEON)
        .args(args)
        .output()
        .expect("run pigeon");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The administrator's tool on its own (files only, no network): the
/// whole life cycle, and clear errors.
#[test]
fn pigeon_org_covers_the_life_cycle_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (org_key, other_key, member_key, list) =
        (p("org.key"), p("other.key"), p("m.keys"), p("a.list"));
    let org = pigeon(&["org", "create", "-org-key", &org_key]);
    assert!(org.starts_with("12D3KooW"), "{org}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&org_key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        pigeon(&["id", "-key-file", &org_key]),
        org,
        "a libp2p key file"
    );
    let (code, _, err) = run(&["org", "create", "-org-key", &org_key]);
    assert_eq!(code, Some(1));
    assert!(err.contains("exists already"), "{err}");
    pigeon(&["org", "create", "-org-key", &other_key]);
    pigeon(&["org", "create", "-org-key", &member_key]);
    let member = pigeon(&["id", "-key-file", &member_key]);
    let req = pigeon(&["org", "request", "-key-file", &member_key]);
    let (code, out, _) = run(&["org", "show", "-request", &req]);
    assert_eq!(code, Some(0));
    assert!(out.contains(&member), "{out}");
    let cred = pigeon(&[
        "org",
        "sign",
        "-org-key",
        &org_key,
        "-request",
        &req,
        "-expires",
        "2099-01-01",
    ]);
    let (code, out, _) = run(&[
        "org",
        "verify",
        "-credential",
        &cred,
        "-org",
        &org,
        "-peer",
        &member,
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("valid until   2099-01-01 00:00:00 UTC"),
        "{out}"
    );
    // Expired, of another organisation, damaged, or missing a flag.
    let old = pigeon(&[
        "org",
        "sign",
        "-org-key",
        &org_key,
        "-request",
        &req,
        "-not-before",
        "2020-01-01",
        "-expires",
        "2020-02-01",
    ]);
    let (code, out, _) = run(&["org", "verify", "-credential", &old]);
    assert_eq!(code, Some(1));
    assert!(out.contains("NOT VALID:    expired at 2020-02-01"), "{out}");
    let other = pigeon(&["id", "-key-file", &other_key]);
    let (code, out, _) = run(&["org", "verify", "-credential", &cred, "-org", &other]);
    assert_eq!(code, Some(1), "{out}");
    let mut damaged = cred.clone().into_bytes();
    damaged[200] = if damaged[200] == b'A' { b'B' } else { b'A' };
    let damaged = String::from_utf8(damaged).unwrap();
    let (code, _, err) = run(&["org", "show", "-credential", &damaged]);
    assert_eq!(code, Some(1));
    assert!(err.contains("bad signature"), "{err}");
    let (code, _, err) = run(&["org", "sign", "-org-key", &org_key, "-request", &req]);
    assert_eq!(code, Some(2));
    assert!(err.contains("org sign: missing flag -expires"), "{err}");
    let (code, out, _) = run(&["org", "revoke", "-help"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("Usage: p2p4slips org revoke"), "{out}");
    // Revocation: each revoke adds an entry with the next seq; another
    // organisation's key cannot extend the list.
    pigeon(&[
        "org",
        "revoke",
        "-org-key",
        &org_key,
        "-list",
        &list,
        "-credential",
        &cred,
    ]);
    pigeon(&[
        "org", "revoke", "-org-key", &org_key, "-list", &list, "-peer", &other, "-until", "30",
    ]);
    let (code, out, _) = run(&["org", "verify", "-list", &list, "-org", &org]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("sequence      2"), "{out}");
    assert!(
        out.contains(&format!("revoked       peer {other}")),
        "{out}"
    );
    let (code, _, err) = run(&[
        "org", "revoke", "-org-key", &other_key, "-list", &list, "-serial", "5",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("a list of organisation"), "{err}");
}
