//! The workers: Slips stand-ins on a lab host's Redis and the UDP relays
//! of the latency floor, each started by a job inside a lab host. They read
//! what the pigeon delivers with the testkit's checker of what Slips
//! accepts (a message Slips would drop fails the worker) and publish the
//! bytes Slips publishes (`testkit::slips`).

use crate::args::Args;
use crate::common::{ip_seq, ready, seq_ip, sleep_until};
use anyhow::{Context as _, Result, anyhow, bail, ensure};
use serde_json::Value;
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::lab::{LAB_REDIS_URL, LAB_SUBNET};
use testkit::slips::{
    Flow, GopyMsg, check_gopy, listen, now_unix, publish, report_scroll, request_scroll,
};
use testkit::wait::now_ns;
use testkit::{GOPY, PYGO, SLIPS_VERSION};

/// Sequence numbers from here on are warm-up messages, not measured.
const WARMUP_SEQ: u32 = 100_000;
/// Channels and port of the latency floor's relays.
const FLOOR_A: &str = "bench_floor";
const FLOOR_B: &str = "bench_floor_b";
pub(crate) const FLOOR_PORT: u16 = 47999;
/// Slips' answer to a request in the fan-out benchmark: (score, confidence).
const ANSWER: (f64, f64) = (0.8, 0.9);

/// Runs a worker after checking we are inside a lab host: a worker opens
/// sockets, which must never happen in the root network namespace. Two
/// independent checks: our network namespace is one that `ip netns`
/// created (`/run/netns/*`), and its only interfaces are `lo` and the lab's
/// `veth0` (so no real interface can be reached from it).
pub(crate) fn run(f: fn(&Args) -> Result<()>, args: &Args) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let refuse = |why: String| {
        anyhow!(
            "refusing to run '{}': {why}; workers are started inside lab hosts by the \
             orchestrator",
            args.cmd
        )
    };
    let own = fs::metadata("/proc/self/ns/net")
        .context("reading /proc/self/ns/net")?
        .ino();
    let named = fs::read_dir("/run/netns")
        .map_err(|e| refuse(format!("no /run/netns ({e})")))?
        .filter_map(|e| e.ok())
        .any(|e| fs::metadata(e.path()).is_ok_and(|m| m.ino() == own));
    if !named {
        return Err(refuse("not in a namespace made by `ip netns`".to_owned()));
    }
    let dev = fs::read_to_string("/proc/self/net/dev").context("reading /proc/self/net/dev")?;
    let ifaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(str::trim))
        .collect();
    if ifaces.iter().any(|i| *i != "lo" && *i != "veth0") || !ifaces.contains(&"veth0") {
        return Err(refuse(format!(
            "interfaces {ifaces:?} are not those of a lab host (lo, veth0)"
        )));
    }
    f(args)
}

fn redis() -> Result<redis::Connection> {
    redis::Client::open(LAB_REDIS_URL)?
        .get_connection_with_timeout(Duration::from_secs(3))
        .context("connecting to the host's Redis")
}

/// A gopy message as Slips reads it; one Slips would drop ends the run.
fn gopy(payload: &[u8]) -> Result<GopyMsg> {
    check_gopy(payload, SLIPS_VERSION, now_unix()).map_err(|v| {
        anyhow!(
            "the pigeon sent Slips a message it would drop: {}: {v:?}",
            String::from_utf8_lossy(payload)
        )
    })
}

/// `key` of a go_data's decoded inner message, as text.
fn inner<'a>(decoded: &'a Value, key: &str) -> &'a str {
    decoded[key].as_str().unwrap_or("")
}

/// Subscribes to `channels` on the host's Redis, creates `ready_file`
/// once subscribed, and calls `on_msg(channel, payload)` for each message
/// until it returns false or `deadline` passes.
fn subscribe(
    channels: &[&str],
    ready_file: Option<&Path>,
    deadline: Instant,
    mut on_msg: impl FnMut(&str, &[u8]) -> Result<bool>,
) -> Result<()> {
    let mut con = redis()?;
    listen(
        &mut con,
        channels,
        deadline,
        || ready_file.map_or(Ok(()), ready),
        |channel, payload| {
            Ok(if on_msg(channel, payload)? {
                Flow::Continue
            } else {
                Flow::Stop
            })
        },
    )
}

fn deadline(args: &Args) -> Result<Instant> {
    Ok(Instant::now() + Duration::from_secs(args.num("seconds", 60u64)?.min(3600)))
}

/// Host A's Slips: publishes `count` reports to `--to` (a peer id or `*`)
/// every `pace` ms, and halfway between two of them the same sequence
/// number on the floor channel. Writes `p|f <seq> <unix ns>` per publish.
///
/// `--warmup` messages (not recorded) go first, then a 1 s pause: the
/// pigeon's Redis bridge may still be backing off from peer updates it
/// held while no Slips was subscribed, and first datagrams pay for ARP.
pub(crate) fn lat_send(args: &Args) -> Result<()> {
    let count: u32 = args.num("count", 1000)?;
    let warmup: u32 = args.num("warmup", 20)?;
    let pace = Duration::from_micros((args.num("pace-ms", 10.0f64)? * 1000.0) as u64);
    let to = args.text("to")?;
    let mut out = std::io::BufWriter::new(File::create(args.text("out")?)?);
    let mut con = redis()?;
    let start = Instant::now() + Duration::from_millis(50);
    let measured = start + pace * warmup + Duration::from_secs(1);
    let slots = (0..warmup)
        .map(|i| (WARMUP_SEQ + i, start + pace * i))
        .chain((0..count).map(|i| (i, measured + pace * i)));
    for (seq, slot) in slots {
        let text = report_scroll(
            &seq_ip(seq).to_string(),
            ANSWER.0,
            ANSWER.1,
            to,
            SLIPS_VERSION,
        );
        sleep_until(slot);
        let t = now_ns();
        ensure!(
            publish(&mut con, PYGO, &text).context("PUBLISH")? >= 1,
            "the pigeon is not subscribed"
        );
        if seq < WARMUP_SEQ {
            writeln!(out, "p {seq} {t}")?;
        }
        let floor = seq.to_string();
        sleep_until(slot + pace / 2);
        let t = now_ns();
        ensure!(
            publish(&mut con, FLOOR_A, &floor).context("PUBLISH")? >= 1,
            "the floor relay is not subscribed"
        );
        if seq < WARMUP_SEQ {
            writeln!(out, "f {seq} {t}")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Host B's Slips: timestamps every go_data about a benchmark address and
/// every floor message; `p|f <seq> <unix ns>` per message, written at once.
/// Warm-up messages are not recorded.
pub(crate) fn lat_recv(args: &Args) -> Result<()> {
    let count: u32 = args.num("count", 1000)?;
    let mut out = File::create(args.text("out")?)?;
    let (mut p, mut f) = (0u32, 0u32);
    subscribe(
        &[GOPY, FLOOR_B],
        Some(Path::new(args.text("ready")?)),
        deadline(args)?,
        |channel, payload| {
            let t = now_ns();
            if channel == FLOOR_B {
                if let Ok(seq) = std::str::from_utf8(payload).unwrap_or("").parse::<u32>()
                    && seq < WARMUP_SEQ
                {
                    out.write_all(format!("f {seq} {t}\n").as_bytes())?;
                    f += 1;
                }
            } else if let GopyMsg::GoData { decoded, .. } = gopy(payload)?
                && let Some(seq) = ip_seq(inner(&decoded, "key"))
                && seq < WARMUP_SEQ
            {
                out.write_all(format!("p {seq} {t}\n").as_bytes())?;
                p += 1;
            }
            Ok(p < count || f < count)
        },
    )
}

/// Floor, host A side: Redis subscriber that sends each message as one UDP
/// datagram to host B's relay.
pub(crate) fn floor_a(args: &Args) -> Result<()> {
    let to: SocketAddrV4 = args.text("to")?.parse()?;
    ensure!(
        to.ip().octets()[..3] == LAB_SUBNET,
        "the floor relay only sends within the lab subnet 10.77.0.0/24"
    );
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    subscribe(
        &[FLOOR_A],
        Some(Path::new(args.text("ready")?)),
        deadline(args)?,
        |_, payload| {
            sock.send_to(payload, to)?;
            Ok(true)
        },
    )
}

/// Floor, host B side: UDP receiver that publishes each datagram on host
/// B's Redis.
pub(crate) fn floor_b(args: &Args) -> Result<()> {
    let sock = UdpSocket::bind(("0.0.0.0", FLOOR_PORT))?;
    let mut con = redis()?;
    let end = deadline(args)?;
    ready(Path::new(args.text("ready")?))?;
    let mut buf = [0u8; 1500];
    while Instant::now() < end {
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                publish(&mut con, FLOOR_B, &text).context("PUBLISH")?;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A responder's Slips: answers every request with a report to its
/// sender, as Slips does when it knows the IP.
pub(crate) fn respond(args: &Args) -> Result<()> {
    let mut out = redis()?;
    subscribe(
        &[GOPY],
        Some(Path::new(args.text("ready")?)),
        deadline(args)?,
        |_, payload| {
            if let GopyMsg::GoData {
                reporter, decoded, ..
            } = gopy(payload)?
                && inner(&decoded, "message_type") == "request"
            {
                let ip = inner(&decoded, "key");
                let answer = report_scroll(ip, ANSWER.0, ANSWER.1, &reporter, SLIPS_VERSION);
                publish(&mut out, PYGO, &answer).context("PUBLISH")?;
            }
            Ok(true)
        },
    )
}

/// The requester's Slips: after a warm-up request that all `--expect`
/// responders answer, publishes `--count` requests `--gap-ms` apart and
/// times each until all answers are in. Writes one line per request:
/// `<seq> <answers> <first µs> <median µs> <all µs or -1>`.
pub(crate) fn request(args: &Args) -> Result<()> {
    let expect: usize = args.num("expect", 10)?;
    let count: u32 = args.num("count", 30)?;
    let gap = Duration::from_millis(args.num("gap-ms", 500)?);
    let answer_timeout = Duration::from_millis(args.num("timeout-ms", 5000)?);
    let warmup = Duration::from_secs(args.num("warmup-s", 60)?);
    let mut out = std::io::BufWriter::new(File::create(args.text("out")?)?);
    let mut pubcon = redis()?;
    let mut con = redis()?;
    let mut ps = con.as_pubsub();
    ps.subscribe(GOPY)?;

    // Sends one request about `ip`; returns the answer times (µs).
    let mut ask = |ip: &str, limit: Duration| -> Result<Vec<u64>> {
        let text = request_scroll(ip, SLIPS_VERSION);
        let t0 = Instant::now();
        ensure!(
            publish(&mut pubcon, PYGO, &text).context("PUBLISH")? >= 1,
            "the pigeon is not subscribed"
        );
        let mut who = HashSet::new();
        let mut times = Vec::new();
        while who.len() < expect {
            let left = (t0 + limit).saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            ps.set_read_timeout(Some(left))?;
            let m = match ps.get_message() {
                Ok(m) => m,
                Err(e) if e.is_timeout() => break,
                Err(e) => bail!("lost the Redis connection: {e}"),
            };
            let at = t0.elapsed();
            if let GopyMsg::GoData {
                reporter, decoded, ..
            } = gopy(m.get_payload_bytes())?
                && inner(&decoded, "message_type") == "report"
                && inner(&decoded, "key") == ip
                && who.insert(reporter)
            {
                times.push(at.as_micros() as u64);
            }
        }
        Ok(times)
    };

    let begin = Instant::now();
    let mut attempt = 0u32;
    loop {
        let ip = Ipv4Addr::new(198, 19, 255, (attempt % 250) as u8).to_string();
        let got = ask(&ip, Duration::from_millis(1500))?.len();
        eprintln!("warm-up request {attempt}: {got}/{expect} answers");
        if got == expect {
            break;
        }
        ensure!(
            begin.elapsed() < warmup,
            "warm-up: only {got} of {expect} responders answered after {warmup:?}"
        );
        attempt += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    // Let the warm-up's broadcast copies and digests pass.
    std::thread::sleep(Duration::from_secs(1));
    for i in 0..count {
        let slot = Instant::now() + gap;
        let times = ask(&seq_ip(i).to_string(), answer_timeout)?;
        let all = if times.len() == expect {
            times.last().map_or(-1, |t| *t as i64)
        } else {
            -1
        };
        let first = times.first().copied().unwrap_or(0);
        let median = times.get(times.len() / 2).copied().unwrap_or(0);
        writeln!(out, "{i} {} {first} {median} {all}", times.len())?;
        sleep_until(slot);
    }
    out.flush()?;
    Ok(())
}

/// A Slips at start: records when peer_updates with an IP have arrived for
/// `--expect` distinct peers. Writes `done|timeout <unix ns> <peers>`.
pub(crate) fn watch(args: &Args) -> Result<()> {
    let expect: usize = args.num("expect", 9)?;
    let out = args.text("out")?.to_owned();
    let mut known = HashSet::new();
    let mut done_at = None;
    subscribe(
        &[GOPY],
        Some(Path::new(args.text("ready")?)),
        deadline(args)?,
        |_, payload| {
            if let GopyMsg::PeerUpdate {
                peerid,
                ip: Some(_),
                ..
            } = gopy(payload)?
            {
                known.insert(peerid);
            }
            if known.len() >= expect {
                done_at = Some(now_ns());
                return Ok(false);
            }
            Ok(true)
        },
    )?;
    let line = match done_at {
        Some(t) => format!("done {t} {}\n", known.len()),
        None => format!("timeout {} {}\n", now_ns(), known.len()),
    };
    fs::write(out, line)?;
    Ok(())
}

/// Waits until `--at` (Unix ns), notes the time in `--stamp`, then becomes
/// the command after `--` (same PID, cwd and output).
pub(crate) fn launch(args: &Args) -> Result<()> {
    let at: u64 = args.num("at", 0)?;
    let now = now_ns();
    if at > now {
        std::thread::sleep(Duration::from_nanos(at - now));
    }
    fs::write(args.text("stamp")?, now_ns().to_string())?;
    let (prog, rest) = args.rest.split_first().context("nothing to launch")?;
    let e = Command::new(prog).args(rest).exec();
    Err(e).with_context(|| format!("exec {prog}"))
}
