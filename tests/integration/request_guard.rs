//! The request guard (`pigeon::io::slips_cache`) against a real
//! redis-server laid out as Slips 1.1.21 lays it out (`IPsInfo:<field>`
//! hashes in DB 1, the gopy channel on DB 0 of the same server), and
//! against the real Slips code (`../shared/slips-1.1.21`, an oracle run
//! with python3): a request reaches Slips exactly when Slips' own
//! `get_ip_info_from_slips` answers it without raising.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use pigeon::io::redis_bridge::{self, BridgeHandle};
use pigeon::io::slips_cache::{GuardStats, RequestGuard};

use crate::redis_bridge::{settings, wait_connected};
use testkit::lab::{RedisServer, in_loopback_netns};
use testkit::runtime::TestRuntime;
use testkit::slips::SlipsSide;
use testkit::wait::wait_until;

/// Slips' cache port (fixed in Slips 1.1.21).
const CACHE_PORT: u16 = 6379;

/// One request: what Slips' cache holds about its IP.
struct Case {
    name: &'static str,
    threat_level: Option<&'static [u8]>,
    score: Option<&'static [u8]>,
    confidence: Option<&'static [u8]>,
    /// What Slips does: answers (or says "no data") without raising.
    slips_survives: bool,
    /// pigeon drops it although Slips would survive: outside what the
    /// guard models exactly (see `slips::request_guard`), dropped to be
    /// safe.
    conservative: bool,
}

const fn case(
    name: &'static str,
    threat_level: Option<&'static [u8]>,
    score: Option<&'static [u8]>,
    confidence: Option<&'static [u8]>,
    slips_survives: bool,
) -> Case {
    Case {
        name,
        threat_level,
        score,
        confidence,
        slips_survives,
        conservative: false,
    }
}

/// The cases named in issue 9 class 8.
const CASES: &[Case] = &[
    case(
        "known IP: threat_level and confidence",
        Some(b"medium"),
        None,
        Some(b"0.8"),
        true,
    ),
    case("score only", None, Some(b"0.5"), Some(b"0.3"), true),
    case("no data", None, None, None, false),
    case(
        "threat_level without confidence",
        Some(b"high"),
        None,
        None,
        false,
    ),
    case(
        "non-numeric confidence",
        Some(b"low"),
        None,
        Some(b"abc"),
        false,
    ),
    case(
        "unknown threat level string",
        Some(b"severe"),
        None,
        None,
        true,
    ),
];

/// Odd values Slips' cache could hold, for the oracle.
const ODD_CASES: &[Case] = &[
    case("level as JSON string", Some(b"\"critical\""), None, Some(b"1"), true),
    case("level list", Some(b"[\"x\"]"), None, Some(b"1"), false),
    case("level dict", Some(b"{\"a\": 1}"), None, Some(b"1"), false),
    case("empty level list, score", Some(b"[]"), Some(b"1"), Some(b"1"), true),
    case("level 0, spaced exponent text", Some(b"0"), Some(b"\" 1e3 \""), Some(b"nan"), true),
    case("level true", Some(b"true"), None, None, true),
    case("level false, score", Some(b"false"), Some(b"0.1"), Some(b"0.2"), true),
    case("level not UTF-8", Some(b"\xff"), None, None, true),
    case("score null", None, Some(b"null"), Some(b"1"), false),
    case("score list", None, Some(b"[1]"), Some(b"1"), false),
    case("score text", None, Some(b"abc"), None, true),
    case("score inf, confidence true", None, Some(b"inf"), Some(b"true"), true),
    case("score underscores", None, Some(b"1_000"), Some(b"-0"), true),
    case("score 1e400", None, Some(b"1e400"), Some(b"1"), true),
    case("score JSON NaN", None, Some(b"NaN"), Some(b"-Infinity"), true),
    case(
        "score huge integer",
        None,
        Some(b"1000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"),
        Some(b"1"),
        false,
    ),
    case("score with \\x1c around", None, Some(b"\x1c5\x1f"), Some(b"1"), true),
    case("confidence empty", Some(b"info"), None, Some(b""), false),
    case("confidence not UTF-8", Some(b"info"), None, Some(b"\xfe"), false),
    case("confidence hex text", Some(b"info"), None, Some(b"\"0x10\""), false),
    case("confidence spaced text", Some(b"info"), None, Some(b"\" 1e3 \""), true),
    case("confidence dict", Some(b"info"), None, Some(b"{}"), false),
    Case {
        conservative: true,
        ..case("confidence in full-width digits", Some(b"info"), None, Some("\"\u{ff11}\"".as_bytes()), true)
    },
];

fn ip_of(i: usize) -> String {
    format!("10.9.{}.{}", i / 200, i % 200 + 1)
}

/// Writes each case into Slips' cache (DB 1), as `HSET IPsInfo:<field>`.
fn seed(url_db1: &str, cases: &[&Case]) {
    let client = redis::Client::open(url_db1).unwrap();
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap();
    for (i, c) in cases.iter().enumerate() {
        for (field, value) in [
            ("threat_level", c.threat_level),
            ("score", c.score),
            ("confidence", c.confidence),
        ] {
            if let Some(v) = value {
                let _: i64 = redis::cmd("HSET")
                    .arg(format!("IPsInfo:{field}"))
                    .arg(ip_of(i))
                    .arg(v)
                    .query(&mut con)
                    .unwrap();
            }
        }
    }
}

/// A Slips-shaped Redis with a bridge, a gopy subscriber and a guard.
struct Setup {
    _server: RedisServer,
    rt: TestRuntime,
    slips: SlipsSide,
    bridge: BridgeHandle,
    url: String,
}

impl Setup {
    fn start() -> Self {
        let server = RedisServer::start(CACHE_PORT);
        let url = server.url();
        let rt = TestRuntime::logged();
        let slips = SlipsSide::start_here(&url);
        let (bridge, _rx) = rt
            .handle
            .block_on(redis_bridge::start(settings(&url, 1000)));
        wait_connected(&bridge, Duration::from_secs(5));
        Self {
            _server: server,
            rt,
            slips,
            bridge,
            url,
        }
    }

    fn guard(&self, cache: &str) -> RequestGuard {
        let target = redis_bridge::parse_address(cache).unwrap();
        let _enter = self.rt.handle.enter();
        RequestGuard::spawn(target, None, self.bridge.clone())
    }

    /// Submits one request per case (the gopy message is the case's
    /// index), then a known-good one; returns the indices delivered.
    fn run(&self, guard: &RequestGuard, cases: &[&Case]) -> Vec<usize> {
        seed(&self.url.replace("/0", "/1"), cases);
        for i in 0..cases.len() {
            guard.submit(ip_of(i), format!("case-{i}"));
        }
        // The guard works in order: once the sentinel is through, every
        // case has been judged.
        let sentinel = cases
            .iter()
            .position(|c| c.name.starts_with("known IP"))
            .unwrap();
        guard.submit(ip_of(sentinel), "sentinel".to_owned());
        wait_until(Duration::from_secs(10), "the sentinel request", || {
            self.slips.texts().iter().any(|m| m == "sentinel")
        });
        self.slips
            .texts()
            .iter()
            .filter_map(|m| m.strip_prefix("case-").and_then(|i| i.parse().ok()))
            .collect()
    }
}

#[test]
fn requests_reach_slips_only_when_slips_can_answer() {
    in_loopback_netns(|| {
        let s = Setup::start();
        let guard = s.guard("redis://127.0.0.1:6379/1");
        let cases: Vec<&Case> = CASES.iter().collect();
        let delivered = s.run(&guard, &cases);
        for (i, c) in cases.iter().enumerate() {
            assert_eq!(
                delivered.contains(&i),
                c.slips_survives,
                "{}: delivered {delivered:?}",
                c.name
            );
        }
        let stats = guard.stats();
        assert_eq!(
            stats,
            GuardStats {
                passed: 3 + 1,
                unanswerable: 3,
                unreadable: 0,
                full: 0
            }
        );
        let log = s.rt.log();
        assert!(log.contains("request_unanswerable"), "{log}");
    });
}

#[test]
fn unreadable_cache_drops_requests_and_says_so() {
    in_loopback_netns(|| {
        let s = Setup::start();
        // Nothing listens on 6390: the cache cannot be read.
        let guard = s.guard("redis://127.0.0.1:6390/1");
        for i in 0..3 {
            guard.submit("10.9.0.1".to_owned(), format!("down-{i}"));
        }
        wait_until(Duration::from_secs(10), "three unreadable drops", || {
            guard.stats().unreadable == 3
        });
        // A request that is safe on the real cache goes through, so the
        // ones above were judged, not lost in transit.
        let ok = s.guard("redis://127.0.0.1:6379/1");
        seed(&s.url.replace("/0", "/1"), &[&CASES[0]]);
        ok.submit(ip_of(0), "up".to_owned());
        wait_until(
            Duration::from_secs(10),
            "the request on the live cache",
            || s.slips.texts().iter().any(|m| m == "up"),
        );
        assert!(!s.slips.texts().iter().any(|m| m.starts_with("down-")));
        assert_eq!(guard.stats().passed, 0);
        let log = s.rt.log();
        assert!(
            log.contains("cannot read Slips' cache") && log.contains("request_cache_unreadable"),
            "{log}"
        );
        // Rate-limited: one warning for the three drops.
        assert_eq!(log.matches("cannot read Slips' cache").count(), 1, "{log}");
    });
}

/// The Slips 1.1.21 tree (`testkit::slips_source_tree`), if it is there.
fn slips_tree() -> Option<PathBuf> {
    let root = testkit::slips_source_tree();
    root.join("modules/p2p_trust/utils/utils.py")
        .is_file()
        .then_some(root)
}

#[test]
fn guard_agrees_with_the_real_slips_code() {
    let Some(tree) = slips_tree() else {
        eprintln!(
            "SKIPPED guard_agrees_with_the_real_slips_code: the Slips 1.1.21 tree is not at {} \
             (set PIGEON_SLIPS_TREE)",
            testkit::slips_source_tree().display()
        );
        return;
    };
    if Command::new("python3").arg("--version").output().is_err() {
        // With the Slips tree there, CI (scripts/test.sh) has python3 too.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "guard_agrees_with_the_real_slips_code: python3 not found"
        );
        eprintln!("SKIPPED guard_agrees_with_the_real_slips_code: python3 not found");
        return;
    }
    in_loopback_netns(move || {
        let s = Setup::start();
        let guard = s.guard("redis://127.0.0.1:6379/1");
        let cases: Vec<&Case> = CASES.iter().chain(ODD_CASES).collect();
        let delivered = s.run(&guard, &cases);

        let oracle = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/integration/oracle/slips_request_oracle.py");
        let out = Command::new("python3")
            .arg(&oracle)
            .arg(&tree)
            .arg(CACHE_PORT.to_string())
            .args((0..cases.len()).map(ip_of))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "oracle failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let verdicts: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(verdicts.len(), cases.len(), "{verdicts:?}");
        for (i, c) in cases.iter().enumerate() {
            let survives = verdicts[i] == "ok";
            assert_eq!(
                survives, c.slips_survives,
                "{}: the real Slips code says {:?}",
                c.name, verdicts[i]
            );
            let passed = delivered.contains(&i);
            if c.conservative {
                assert!(!passed, "{}: expected a conservative drop", c.name);
            } else {
                assert_eq!(passed, survives, "{}: Slips says {:?}", c.name, verdicts[i]);
            }
        }
        eprintln!(
            "oracle: {} cases, {} answered by Slips, {} delivered by pigeon",
            cases.len(),
            verdicts.iter().filter(|v| *v == "ok").count(),
            delivered.len()
        );
    });
}
