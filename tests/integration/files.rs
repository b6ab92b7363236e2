//! Files never corrupt and never stop pigeon: the peer list survives
//! SIGKILL during writes, a corrupt list is moved aside, and a full or
//! read-only disk is reported and retried.

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pigeon::peerstore::{self, FORMAT_VERSION, Loaded, PeerFile, StoredPeer, StoredReliability};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::lab::{LabChild, RedisServer, SlipsTree, in_loopback_netns, run_ok};
use testkit::wait::holds_within;

/// Environment variable that turns [`peerstore_writer_child`] into a
/// writer loop (the test re-executes its own binary).
const WRITER_ENV: &str = "PIGEON_TEST_PEERSTORE_WRITER";
/// The round number of the writer, encoded in the lists it writes.
const ROUND_ENV: &str = "PIGEON_TEST_PEERSTORE_ROUND";

fn peer_list(n: usize, generation: u64) -> PeerFile {
    let peers = (0..n)
        .map(|i| {
            let seed = [(i % 251) as u8 + 1; 32];
            let key = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
            StoredPeer {
                peer_id: pigeon::identity::peer_id_of(&key),
                public_key: BASE64_STANDARD.encode(key.as_bytes()),
                ip: Some(Ipv4Addr::new(10, 77, (i / 250) as u8, (i % 250) as u8 + 1)),
                port: Some(40_000 + (i % 1000) as u16),
                first_seen: generation,
                last_seen: generation + i as u64,
                reliability: StoredReliability {
                    sum: 1.0,
                    weight: 2.0,
                    at_ms: generation * 1000,
                },
                reported_reliability: Some(0.5),
                organisations: Vec::new(),
            }
        })
        .collect();
    PeerFile {
        version: FORMAT_VERSION,
        saved_at: generation,
        peers,
    }
}

/// Not a test of its own: with [`WRITER_ENV`] set, writes peer lists of
/// varying sizes to that path as fast as it can, for at most 60 s, until
/// the parent test kills it.
#[test]
#[ignore = "helper process of peer_list_survives_sigkill_during_writes"]
fn peerstore_writer_child() {
    let Some(path) = std::env::var_os(WRITER_ENV) else {
        return;
    };
    let path = PathBuf::from(path);
    let round: u64 = std::env::var(ROUND_ENV)
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let start = Instant::now();
    // saved_at tells the parent which writer (round) wrote a list.
    let mut generation = round * 1_000_000 + 1;
    while start.elapsed() < Duration::from_secs(60) {
        let n = 1 + (generation as usize * 37) % 400;
        peerstore::save(&path, &peer_list(n, generation)).expect("save");
        generation += 1;
    }
}

#[test]
fn peer_list_survives_sigkill_during_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("peers.json");
    // A valid list to begin with: from then on, any state of the file must
    // load as a complete list.
    peerstore::save(&path, &peer_list(10, 0)).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut killed_mid_stream = 0;
    for round in 0..200u64 {
        let mut child = Command::new(&exe)
            .args([
                "files::peerstore_writer_child",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(WRITER_ENV, &path)
            .env(ROUND_ENV, (round + 1).to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the writer is writing (the list changed), then kill it
        // at a different moment of the write cycle each round.
        let before = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        let started = Instant::now();
        while std::fs::metadata(&path).and_then(|m| m.modified()).ok() == before
            && started.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_micros((round * 397) % 8_000));
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
        child.wait().unwrap();
        match peerstore::load_read_only(&path).unwrap() {
            Loaded::Peers(f) => {
                assert_eq!(f.version, FORMAT_VERSION);
                assert!(!f.peers.is_empty());
                if f.saved_at / 1_000_000 == round + 1 {
                    killed_mid_stream += 1;
                }
            }
            other => panic!("round {round}: peer list not loadable after SIGKILL: {other:?}"),
        }
    }
    // The writers really were killed while writing, not before.
    assert!(
        killed_mid_stream > 150,
        "only {killed_mid_stream} of 200 writers were killed while writing"
    );
    // No temporary files pile up beyond the ones of killed writers, which
    // never replace the list itself.
    let list_files = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .map(|e| e.file_name() == "peers.json")
                .unwrap_or(false)
        })
        .count();
    assert_eq!(list_files, 1);
}

/// Whether the pigeon's p2p.log says `what` within `timeout`.
fn wait_log(tree: &SlipsTree, what: &str, timeout: Duration) -> bool {
    holds_within(timeout, || tree.read_log().contains(what))
}

fn stop(child: &mut LabChild) -> Option<std::process::ExitStatus> {
    child.sigint().ok()?;
    child.wait_timeout(Duration::from_secs(3))
}

#[test]
fn corrupt_peer_list_is_moved_aside_and_pigeon_starts_empty() {
    in_loopback_netns(|| {
        let redis = RedisServer::start(6390);
        let tree = SlipsTree::new();
        let list = tree.runtime_dir().join("peers.json");
        std::fs::write(&list, b"{\"version\": 1, \"peers\": [tru").unwrap();
        let mut child = tree
            .spawn_here(Ipv4Addr::LOCALHOST, 34567, redis.port, &[])
            .unwrap();
        assert!(
            wait_log(&tree, "moved aside", Duration::from_secs(5)),
            "log: {}\nstderr: {}",
            tree.read_log(),
            tree.read_stderr()
        );
        assert!(wait_log(
            &tree,
            "Your Multiaddress Is",
            Duration::from_secs(5)
        ));
        let aside: Vec<_> = std::fs::read_dir(tree.runtime_dir())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("peers.json.corrupt-")
            })
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(
            std::fs::read(aside[0].path()).unwrap(),
            b"{\"version\": 1, \"peers\": [tru",
            "the bad list is kept byte for byte"
        );
        let status = stop(&mut child).expect("exits on SIGINT");
        assert!(status.success());
        // At shutdown a fresh, valid list was written.
        assert!(matches!(peerstore::load(&list).unwrap(), Loaded::Peers(_)));
    });
}

/// Runs the pigeon inside a private mount namespace where `dir` is a tiny
/// tmpfs that is already full, then frees space.
#[test]
fn full_disk_is_reported_and_retried() {
    in_loopback_netns(|| {
        let redis = RedisServer::start(6391);
        let tree = SlipsTree::new();
        let full = tree.runtime_dir().join("state");
        std::fs::create_dir_all(&full).unwrap();
        // A stale peer (60 days unseen) is forgotten at the first
        // housekeeping, which makes the list dirty and due for saving soon.
        let mut stale = peer_list(1, 0);
        stale.peers[0].last_seen = 0;
        let staging = tree.runtime_dir().join("staging.json");
        peerstore::save(&staging, &stale).unwrap();
        let config = tree.runtime_dir().join("full-disk.toml");
        std::fs::write(
            &config,
            format!(
                "[peerstore]\nfile = \"{}\"\nsave_interval_ms = 200\n",
                full.join("peers.json").display()
            ),
        )
        .unwrap();
        let pigeon_cmd = tree
            .command(
                Ipv4Addr::LOCALHOST,
                34568,
                redis.port,
                &["-config", config.to_str().unwrap()],
            )
            .unwrap();
        let argv: Vec<String> = std::iter::once(pigeon_cmd.get_program())
            .chain(pigeon_cmd.get_args())
            .map(|a| shell_quote(a.to_str().unwrap()))
            .collect();
        let d = full.display();
        let script = format!(
            "mount -t tmpfs -o size=64k tmpfs {d} && cp {staging} {d}/peers.json && \
             (dd if=/dev/zero of={d}/fill bs=4k count=100 2>/dev/null || true) && exec {argv}",
            staging = staging.display(),
            argv = argv.join(" ")
        );
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c", &script])
            .current_dir(tree.runtime_dir())
            .stdin(Stdio::null())
            .stdout(testkit::lab::append(&tree.log_path()).unwrap())
            .stderr(testkit::lab::append(&tree.stderr_path()).unwrap());
        let child = cmd.spawn().unwrap();
        let mut child = LabChild::new(child, "pigeon (full disk)".to_owned());
        assert!(
            wait_log(&tree, "cannot save peer list", Duration::from_secs(10)),
            "log: {}\nstderr: {}",
            tree.read_log(),
            tree.read_stderr()
        );
        assert!(child.is_running(), "a full disk must not stop pigeon");
        // Free the space from inside the pigeon's mount namespace; the next
        // retry (every 5 s) succeeds.
        let pid = child.pid();
        let status = Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-m", "rm", "-f"])
            .arg(full.join("fill"))
            .status()
            .unwrap();
        assert!(status.success());
        let saved = holds_within(Duration::from_secs(12), || {
            let out = Command::new("nsenter")
                .args(["-t", &pid.to_string(), "-m", "cat"])
                .arg(full.join("peers.json"))
                .output()
                .unwrap();
            serde_json::from_slice::<PeerFile>(&out.stdout)
                .map(|f| f.peers.is_empty())
                .unwrap_or(false)
        });
        assert!(saved, "the list was not written after space was freed");
        assert!(stop(&mut child).expect("exits on SIGINT").success());
    });
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[test]
fn operator_commands_read_real_files() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("peers.json");
    let file = peer_list(3, 1_800_000_000);
    peerstore::save(&list, &file).unwrap();
    let bin = env!("CARGO_BIN_EXE_pigeon");

    let out = run_ok(
        Command::new(bin)
            .args(["peers", "-peerstore-file"])
            .arg(&list),
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("PEER ID"), "{table}");
    for p in &file.peers {
        assert!(table.contains(&p.peer_id), "{table}");
    }
    assert!(table.contains("10.77.0.1:40000"), "{table}");
    assert!(table.contains("3 peer(s)"), "{table}");

    let out = run_ok(
        Command::new(bin)
            .args(["peers", "-json", "-peerstore-file"])
            .arg(&list),
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 3);
    // sum/weight 1/2 blended with the 0.5 prior: exactly 0.5.
    assert_eq!(rows[0]["reliability"], serde_json::json!(0.5));

    // A missing list is a clear error, exit 1.
    let out = Command::new(bin)
        .args(["peers", "-peerstore-file"])
        .arg(dir.path().join("nope.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such peer list"));

    // `pigeon id` prints the peer id of a key file, and refuses other files.
    let identity = pigeon::identity::Identity::from_seed([9; 32]);
    let key = dir.path().join("pigeon.keys");
    std::fs::write(&key, identity.to_protobuf()).unwrap();
    let out = run_ok(Command::new(bin).args(["id", "-key-file"]).arg(&key));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        identity.peer_id()
    );
    let out = Command::new(bin)
        .args(["id", "-key-file"])
        .arg(&list)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
