//! `pigeon-slips`: a small stand-in for Slips' side of the Redis contract.
//!
//! Slips talks to its pigeon only through two Redis pub/sub channels. This
//! tool plays Slips there, so the demo and the benchmarks can drive real
//! pigeons without a Slips installation:
//!
//! * `request` and `report` publish on `p2p_pygo` exactly the bytes Slips
//!   1.1.21 publishes (Python `json.dumps` separators, same key order);
//! * `listen`, `respond` and `peers` read `p2p_gopy`, check each message
//!   with the testkit's checker of what Slips accepts (a wrong or missing
//!   `version` means Slips drops it unseen) and print one readable line per
//!   message;
//! * `respond` answers every peer's request with a report to that peer,
//!   as Slips does when it has data about the IP.
//!
//! It connects to `--redis` (default `redis://127.0.0.1:6379/0`): the
//! loopback of whatever network namespace it is started in. The demo starts
//! it inside lab hosts with `scripts/lab.sh exec NAME I pigeon-slips ...`.
//! A binary of the dev-only `testkit` crate: the builders, the checker and
//! the read loop are the ones the tests and the bench use.
//!
//! Exit status: 0 success; 1 an expectation was not met (`--count`,
//! `--expect`, `--require-subscriber`) or a message Slips would drop was
//! seen; 2 bad usage or Redis unreachable.

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use testkit::slips::{
    Flow, GopyMsg, PyNum, Violation, b64, build_go_message, check_gopy, listen, now_unix,
    pygo_scroll,
};
use testkit::{GOPY, PYGO, SLIPS_VERSION};

const DEFAULT_REDIS: &str = "redis://127.0.0.1:6379/0";
const DEFAULT_SECONDS: u64 = 30;
/// Every wait is bounded; an hour is far beyond any demo or benchmark.
const MAX_SECONDS: u64 = 3600;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest payload excerpt shown for a message Slips would refuse.
const EXCERPT: usize = 160;

const USAGE: &str = "\
usage: pigeon-slips [OPTIONS] COMMAND [ARGS]

Plays Slips' side of the Redis contract with a pigeon (Slips 1.1.21).

commands:
  request --ip IP [--require-subscriber]
        ask the network about IP (a request to every peer), as Slips does
  report --ip IP --score S --confidence C [--recipient PEER|*] [--type report|blame]
               [--require-subscriber]
        share a report (recipient *), answer one peer (recipient PEER) or blame
  listen [--seconds N] [--count N] [--only go_data|peer_update]
        print one line per message the pigeon delivers to Slips
  respond --score S --confidence C [--seconds N] [--count N]
        answer every peer's request with a report to that peer
  peers [--seconds N] [--expect N]
        collect peer updates, then print a table

options (before or after the command):
  --redis URL       Redis shared with the pigeon (default redis://127.0.0.1:6379/0)
  --version V       Slips VERSION put in scrolls and required in messages (default 1.1.21)
  --pygo CHANNEL    Slips -> pigeon channel (default p2p_pygo)
  --gopy CHANNEL    pigeon -> Slips channel (default p2p_gopy)
  -h, --help        this text

Waits end after --seconds (default 30), or earlier once --count messages
(listen, respond: answers) or --expect peers with an IP (peers) were seen;
an unmet --count or --expect exits 1. Scores keep the form typed: 1 is sent
as 1, 1.0 as 1.0. Exit status: 0 ok, 1 expectation unmet or a message Slips
would drop, 2 usage error or Redis unreachable.";

// ------------------------------------------------------------------ arguments

/// Options shared by every command.
#[derive(Debug, Clone, PartialEq)]
struct Common {
    redis: String,
    version: String,
    pygo: String,
    gopy: String,
}

/// `report` or `blame`: the inner `message_type` of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Report,
    Blame,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Report => "report",
            Kind::Blame => "blame",
        }
    }
}

/// Which gopy messages `listen` shows and counts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Only {
    GoData,
    PeerUpdate,
}

#[derive(Debug, Clone, PartialEq)]
enum Cmd {
    Help,
    Request {
        ip: String,
        require_subscriber: bool,
    },
    Report {
        ip: String,
        score: PyNum,
        confidence: PyNum,
        recipient: String,
        kind: Kind,
        require_subscriber: bool,
    },
    Listen {
        seconds: u64,
        count: Option<u64>,
        only: Option<Only>,
    },
    Respond {
        score: PyNum,
        confidence: PyNum,
        seconds: u64,
        count: Option<u64>,
    },
    Peers {
        seconds: u64,
        expect: Option<usize>,
    },
}

/// Options given on the command line, before knowing which command uses
/// which.
#[derive(Default)]
struct Raw {
    values: BTreeMap<String, String>,
    flags: Vec<String>,
    command: Option<String>,
}

const VALUE_OPTIONS: &[&str] = &[
    "redis",
    "version",
    "pygo",
    "gopy",
    "ip",
    "score",
    "confidence",
    "recipient",
    "type",
    "seconds",
    "count",
    "only",
    "expect",
];
const FLAG_OPTIONS: &[&str] = &["require-subscriber", "help"];

/// Which options each command accepts (besides the common ones).
fn allowed(command: &str) -> Option<&'static [&'static str]> {
    Some(match command {
        "request" => &["ip", "require-subscriber"],
        "report" => &[
            "ip",
            "score",
            "confidence",
            "recipient",
            "type",
            "require-subscriber",
        ],
        "listen" => &["seconds", "count", "only"],
        "respond" => &["score", "confidence", "seconds", "count"],
        "peers" => &["seconds", "expect"],
        _ => return None,
    })
}

fn parse_args(args: &[String]) -> anyhow::Result<(Common, Cmd)> {
    let mut raw = Raw::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "-h" {
            raw.flags.push("help".to_owned());
            continue;
        }
        let Some(opt) = arg.strip_prefix("--") else {
            if raw.command.is_some() {
                bail!("unexpected argument \"{arg}\"");
            }
            raw.command = Some(arg.clone());
            continue;
        };
        let (name, inline) = match opt.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (opt, None),
        };
        if FLAG_OPTIONS.contains(&name) {
            if inline.is_some() {
                bail!("--{name} takes no value");
            }
            raw.flags.push(name.to_owned());
        } else if VALUE_OPTIONS.contains(&name) {
            let value = match inline {
                Some(v) => v,
                None => {
                    let v = args
                        .get(i)
                        .ok_or_else(|| anyhow!("--{name} needs a value"))?;
                    i += 1;
                    v.clone()
                }
            };
            if raw.values.insert(name.to_owned(), value).is_some() {
                bail!("--{name} given twice");
            }
        } else {
            bail!("unknown option --{name}");
        }
    }

    let common = Common {
        redis: take(&mut raw, "redis").unwrap_or_else(|| DEFAULT_REDIS.to_owned()),
        version: take(&mut raw, "version").unwrap_or_else(|| SLIPS_VERSION.to_owned()),
        pygo: take(&mut raw, "pygo").unwrap_or_else(|| PYGO.to_owned()),
        gopy: take(&mut raw, "gopy").unwrap_or_else(|| GOPY.to_owned()),
    };
    if common.version.is_empty() || !common.version.chars().all(|c| c.is_ascii_graphic()) {
        bail!(
            "--version must be printable ASCII, got {:?}",
            common.version
        );
    }
    if common.pygo == common.gopy {
        bail!("--pygo and --gopy must differ");
    }
    if raw.flags.iter().any(|f| f == "help") {
        return Ok((common, Cmd::Help));
    }
    let command = raw
        .command
        .clone()
        .ok_or_else(|| anyhow!("no command given"))?;
    let accepted = allowed(&command).ok_or_else(|| anyhow!("unknown command \"{command}\""))?;
    for name in raw.values.keys().chain(raw.flags.iter()) {
        if !accepted.contains(&name.as_str()) {
            bail!("{command} does not take --{name}");
        }
    }
    let require_subscriber = raw.flags.iter().any(|f| f == "require-subscriber");
    let cmd = match command.as_str() {
        "request" => Cmd::Request {
            ip: ip_arg(&mut raw)?,
            require_subscriber,
        },
        "report" => Cmd::Report {
            ip: ip_arg(&mut raw)?,
            score: number_arg(&mut raw, "score", -1.0, 1.0)?,
            confidence: number_arg(&mut raw, "confidence", 0.0, 1.0)?,
            recipient: recipient_arg(take(&mut raw, "recipient"))?,
            kind: match take(&mut raw, "type").as_deref() {
                None | Some("report") => Kind::Report,
                Some("blame") => Kind::Blame,
                Some(other) => bail!("--type must be report or blame, got \"{other}\""),
            },
            require_subscriber,
        },
        "listen" => Cmd::Listen {
            seconds: seconds_arg(&mut raw)?,
            count: uint_arg(&mut raw, "count")?,
            only: match take(&mut raw, "only").as_deref() {
                None => None,
                Some("go_data") => Some(Only::GoData),
                Some("peer_update") => Some(Only::PeerUpdate),
                Some(other) => bail!("--only must be go_data or peer_update, got \"{other}\""),
            },
        },
        "respond" => Cmd::Respond {
            score: number_arg(&mut raw, "score", -1.0, 1.0)?,
            confidence: number_arg(&mut raw, "confidence", 0.0, 1.0)?,
            seconds: seconds_arg(&mut raw)?,
            count: uint_arg(&mut raw, "count")?,
        },
        "peers" => Cmd::Peers {
            seconds: seconds_arg(&mut raw)?,
            expect: uint_arg(&mut raw, "expect")?.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        },
        _ => unreachable!("checked by allowed()"),
    };
    Ok((common, cmd))
}

fn take(raw: &mut Raw, name: &str) -> Option<String> {
    raw.values.remove(name)
}

/// `--ip`: what Slips sends is always an address Python's `ipaddress`
/// accepts; anything else would only test the pigeon's error paths.
fn ip_arg(raw: &mut Raw) -> anyhow::Result<String> {
    let ip = take(raw, "ip").ok_or_else(|| anyhow!("--ip is required"))?;
    ip.parse::<IpAddr>()
        .map_err(|_| anyhow!("--ip: \"{ip}\" is not an IP address"))?;
    Ok(ip)
}

/// A score or confidence, kept as Slips would hold the number typed: an
/// integer stays an integer, anything else is a float (written as
/// Python's `repr(float)`).
fn number_arg(raw: &mut Raw, name: &str, low: f64, high: f64) -> anyhow::Result<PyNum> {
    let text = take(raw, name).ok_or_else(|| anyhow!("--{name} is required"))?;
    let (value, number) = if let Ok(n) = text.parse::<i64>() {
        (n as f64, PyNum::Int(n))
    } else {
        let x: f64 = text
            .parse()
            .map_err(|_| anyhow!("--{name}: \"{text}\" is not a number"))?;
        (x, PyNum::Float(x))
    };
    if !value.is_finite() || value < low || value > high {
        bail!("--{name} must be a number in [{low}, {high}], got {text}");
    }
    Ok(number)
}

/// `*` or a peer id (base58 / base32 characters only, as libp2p ids are).
fn recipient_arg(value: Option<String>) -> anyhow::Result<String> {
    let r = value.unwrap_or_else(|| "*".to_owned());
    if r != "*" && (r.is_empty() || !r.chars().all(|c| c.is_ascii_alphanumeric())) {
        bail!("--recipient must be * or a peer id, got \"{r}\"");
    }
    Ok(r)
}

fn seconds_arg(raw: &mut Raw) -> anyhow::Result<u64> {
    let s = uint_arg(raw, "seconds")?.unwrap_or(DEFAULT_SECONDS);
    if s == 0 || s > MAX_SECONDS {
        bail!("--seconds must be in 1..={MAX_SECONDS}, got {s}");
    }
    Ok(s)
}

fn uint_arg(raw: &mut Raw, name: &str) -> anyhow::Result<Option<u64>> {
    take(raw, name)
        .map(|v| {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| anyhow!("--{name} must be a positive integer, got \"{v}\""))
        })
        .transpose()
}

// ------------------------------------------------------------------ what Slips accepts

/// Which kind of message `msg` is.
fn kind_of(msg: &GopyMsg) -> Only {
    match msg {
        GopyMsg::GoData { .. } => Only::GoData,
        GopyMsg::PeerUpdate { .. } => Only::PeerUpdate,
    }
}

/// `key` of a decoded inner message, as text.
fn text_of(inner: &Value, key: &str) -> String {
    match &inner[key] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One readable line about a message Slips accepts.
fn line(msg: &GopyMsg) -> String {
    match msg {
        GopyMsg::GoData {
            reporter, decoded, ..
        } => {
            let (kind, key) = (text_of(decoded, "message_type"), text_of(decoded, "key"));
            let what = match &decoded["evaluation"] {
                Value::Object(e) => format!(
                    "{kind} about {key}: score {}, confidence {}",
                    e.get("score").unwrap_or(&Value::Null),
                    e.get("confidence").unwrap_or(&Value::Null)
                ),
                _ if kind == "request" => format!("request about {key}"),
                _ => format!("{kind} about {key}: no data"),
            };
            format!("go_data      from {reporter}  {what}")
        }
        GopyMsg::PeerUpdate {
            peerid,
            ip,
            reliability,
            timestamp,
        } => format!(
            "peer_update  {peerid}  ip {}  reliability {}  timestamp {timestamp}",
            ip.as_deref().unwrap_or("-"),
            reliability.map_or("-".to_owned(), |r| r.to_string()),
        ),
    }
}

/// The line about a message Slips would drop: the first broken rule (as
/// Slips, which stops at it) and an excerpt.
fn refusal(violations: &[Violation], payload: &[u8]) -> String {
    let why = violations.first().map_or("refused".to_owned(), |v| {
        format!("{} ({})", v.reason, v.detail)
    });
    format!("REFUSED      {why}: {}", excerpt(payload))
}

fn excerpt(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    let mut out: String = text.chars().take(EXCERPT).collect();
    if text.chars().count() > EXCERPT {
        out.push('…');
    }
    out.escape_debug().to_string()
}

// ------------------------------------------------------------------ Redis

/// The URL with any password replaced by `***`, for messages.
fn masked(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn connect(common: &Common) -> anyhow::Result<redis::Connection> {
    let client = redis::Client::open(common.redis.as_str())
        .map_err(|e| anyhow!("bad Redis URL {}: {e}", masked(&common.redis)))?;
    client
        .get_connection_with_timeout(CONNECT_TIMEOUT)
        .map_err(|e| anyhow!("cannot reach Redis at {}: {e}", masked(&common.redis)))
}

/// PUBLISH on pygo; returns the number of subscribers that got it.
fn publish(con: &mut redis::Connection, channel: &str, text: &str) -> anyhow::Result<i64> {
    testkit::slips::publish(con, channel, text).context("PUBLISH failed")
}

/// Subscribes to gopy and hands every payload to `on_msg` until it says
/// stop or `seconds` pass. Errors: Redis unreachable or lost.
fn read_gopy(
    common: &Common,
    seconds: u64,
    mut on_msg: impl FnMut(&[u8]) -> anyhow::Result<Flow>,
) -> anyhow::Result<()> {
    let mut con = connect(common)?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    listen(
        &mut con,
        &[common.gopy.as_str()],
        deadline,
        || Ok(()),
        |_, payload| on_msg(payload),
    )
    .with_context(|| format!("reading {}", common.gopy))
}

// ------------------------------------------------------------------ commands

/// Outcome of a command: `Ok(true)` success, `Ok(false)` exit 1.
type Outcome = anyhow::Result<bool>;

fn cmd_publish(common: &Common, text: &str, what: &str, require_subscriber: bool) -> Outcome {
    let mut con = connect(common)?;
    let receivers = publish(&mut con, &common.pygo, text)?;
    println!("{text}");
    eprintln!(
        "pigeon-slips: published {what} on {}: {receivers} receiver(s)",
        common.pygo
    );
    if receivers == 0 && require_subscriber {
        eprintln!(
            "pigeon-slips: nobody is subscribed to {}: is the pigeon running?",
            common.pygo
        );
        return Ok(false);
    }
    Ok(true)
}

fn cmd_listen(common: &Common, seconds: u64, count: Option<u64>, only: Option<Only>) -> Outcome {
    let (mut shown, mut bad) = (0u64, 0u64);
    read_gopy(common, seconds, |payload| {
        match check_gopy(payload, &common.version, now_unix()) {
            Ok(msg) => {
                if only.is_some_and(|o| o != kind_of(&msg)) {
                    return Ok(Flow::Continue);
                }
                println!("{}", line(&msg));
                shown += 1;
            }
            Err(problem) => {
                println!("{}", refusal(&problem, payload));
                bad += 1;
            }
        }
        Ok(if count.is_some_and(|c| shown >= c) {
            Flow::Stop
        } else {
            Flow::Continue
        })
    })?;
    eprintln!("pigeon-slips: listen: {shown} message(s), {bad} Slips would refuse");
    if let Some(c) = count.filter(|c| shown < *c) {
        eprintln!("pigeon-slips: expected {c} message(s) within {seconds} s, got {shown}");
        return Ok(false);
    }
    Ok(bad == 0)
}

fn cmd_respond(
    common: &Common,
    score: PyNum,
    confidence: PyNum,
    seconds: u64,
    count: Option<u64>,
) -> Outcome {
    // Answers go out on a second connection: the first is in pub/sub mode.
    let mut out = connect(common)?;
    let (mut answered, mut bad, mut unheard) = (0u64, 0u64, 0u64);
    read_gopy(common, seconds, |payload| {
        match check_gopy(payload, &common.version, now_unix()) {
            Ok(msg @ GopyMsg::GoData { .. }) => {
                println!("{}", line(&msg));
                if let GopyMsg::GoData {
                    reporter, decoded, ..
                } = &msg
                    && decoded["message_type"] == "request"
                {
                    let key = text_of(decoded, "key");
                    let answer = pygo_scroll(
                        &b64(&build_go_message("report", &key, Some((score, confidence)))),
                        reporter,
                        &common.version,
                    );
                    let receivers = publish(&mut out, &common.pygo, &answer)?;
                    println!(
                        "  answered   to {reporter}: report about {key}: score {score}, confidence {confidence} ({receivers} receiver(s))"
                    );
                    if receivers == 0 {
                        unheard += 1;
                    }
                    answered += 1;
                }
            }
            Ok(GopyMsg::PeerUpdate { .. }) => {}
            Err(problem) => {
                println!("{}", refusal(&problem, payload));
                bad += 1;
            }
        }
        Ok(if count.is_some_and(|c| answered >= c) {
            Flow::Stop
        } else {
            Flow::Continue
        })
    })?;
    eprintln!("pigeon-slips: respond: {answered} answer(s), {bad} message(s) Slips would refuse");
    if unheard > 0 {
        eprintln!(
            "pigeon-slips: {unheard} answer(s) reached no subscriber of {}",
            common.pygo
        );
    }
    if let Some(c) = count.filter(|c| answered < *c) {
        eprintln!("pigeon-slips: expected {c} request(s) within {seconds} s, answered {answered}");
        return Ok(false);
    }
    Ok(bad == 0 && unheard == 0)
}

/// The latest peer_update of one peer, and how many there were.
struct PeerRow {
    ip: Option<String>,
    reliability: Option<f64>,
    timestamp: i64,
    updates: u64,
}

fn cmd_peers(common: &Common, seconds: u64, expect: Option<usize>) -> Outcome {
    let mut peers: BTreeMap<String, PeerRow> = BTreeMap::new();
    let mut bad = 0u64;
    read_gopy(common, seconds, |payload| {
        match check_gopy(payload, &common.version, now_unix()) {
            Ok(GopyMsg::PeerUpdate {
                peerid,
                ip,
                reliability,
                timestamp,
            }) => {
                let row = peers.entry(peerid).or_insert(PeerRow {
                    ip: None,
                    reliability: None,
                    timestamp,
                    updates: 0,
                });
                // Like Slips, keep what an update leaves out from before.
                row.ip = ip.or(row.ip.take());
                row.reliability = reliability.or(row.reliability.take());
                row.timestamp = timestamp;
                row.updates += 1;
            }
            Ok(GopyMsg::GoData { .. }) => {}
            Err(problem) => {
                println!("{}", refusal(&problem, payload));
                bad += 1;
            }
        }
        let with_ip = peers.values().filter(|p| p.ip.is_some()).count();
        Ok(if expect.is_some_and(|e| with_ip >= e) {
            Flow::Stop
        } else {
            Flow::Continue
        })
    })?;
    println!(
        "{:<54} {:<16} {:>11} {:>11} {:>7}",
        "PEER ID", "IP", "RELIABILITY", "TIMESTAMP", "UPDATES"
    );
    for (id, p) in &peers {
        println!(
            "{:<54} {:<16} {:>11} {:>11} {:>7}",
            id,
            p.ip.as_deref().unwrap_or("-"),
            p.reliability.map_or("-".to_owned(), |r| r.to_string()),
            p.timestamp,
            p.updates
        );
    }
    let with_ip = peers.values().filter(|p| p.ip.is_some()).count();
    eprintln!(
        "pigeon-slips: peers: {} peer(s), {with_ip} with an IP, {bad} message(s) Slips would refuse",
        peers.len()
    );
    if let Some(e) = expect.filter(|e| with_ip < *e) {
        eprintln!(
            "pigeon-slips: expected {e} peer(s) with an IP within {seconds} s, got {with_ip}"
        );
        return Ok(false);
    }
    Ok(bad == 0)
}

fn run(common: &Common, cmd: &Cmd) -> Outcome {
    match cmd {
        Cmd::Help => {
            println!("{USAGE}");
            Ok(true)
        }
        Cmd::Request {
            ip,
            require_subscriber,
        } => cmd_publish(
            common,
            &pygo_scroll(
                &b64(&build_go_message("request", ip, None)),
                "*",
                &common.version,
            ),
            &format!("request about {ip} to *"),
            *require_subscriber,
        ),
        Cmd::Report {
            ip,
            score,
            confidence,
            recipient,
            kind,
            require_subscriber,
        } => cmd_publish(
            common,
            &pygo_scroll(
                &b64(&build_go_message(
                    kind.as_str(),
                    ip,
                    Some((*score, *confidence)),
                )),
                recipient,
                &common.version,
            ),
            &format!("{} about {ip} to {recipient}", kind.as_str()),
            *require_subscriber,
        ),
        Cmd::Listen {
            seconds,
            count,
            only,
        } => cmd_listen(common, *seconds, *count, *only),
        Cmd::Respond {
            score,
            confidence,
            seconds,
            count,
        } => cmd_respond(common, *score, *confidence, *seconds, *count),
        Cmd::Peers { seconds, expect } => cmd_peers(common, *seconds, *expect),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = match std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect::<Result<_, _>>()
    {
        Ok(a) => a,
        Err(bad) => {
            eprintln!("pigeon-slips: argument is not UTF-8: {bad:?}");
            return ExitCode::from(2);
        }
    };
    let (common, cmd) = match parse_args(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("pigeon-slips: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&common, &cmd) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("pigeon-slips: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    /// The exact request scroll Slips 1.1.21 publishes for 1.2.3.4.
    #[test]
    fn request_scroll_is_byte_identical_to_slips() {
        let (c, cmd) = parse_args(&args("request --ip 1.2.3.4")).unwrap();
        let Cmd::Request { ip, .. } = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(
            pygo_scroll(
                &b64(&build_go_message("request", &ip, None)),
                "*",
                &c.version
            ),
            "{\"message\": \"eyJtZXNzYWdlX3R5cGUiOiAicmVxdWVzdCIsICJrZXlfdHlwZSI6ICJpcCIsICJrZXkiOiAiMS4yLjMuNCIsICJldmFsdWF0aW9uX3R5cGUiOiAic2NvcmVfY29uZmlkZW5jZSJ9\", \"recipient\": \"*\", \"version\": \"1.1.21\"}"
        );
    }

    /// Numbers keep the form typed, as Slips holds them: 1 is an integer,
    /// 0.90 the float 0.9.
    #[test]
    fn report_payload_follows_build_go_message() {
        let (_, cmd) = parse_args(&args(
            "report --ip 10.0.0.9 --score 1 --confidence 0.90 --recipient 12D3KooWAbc --type blame",
        ))
        .unwrap();
        let Cmd::Report {
            ip,
            score,
            confidence,
            recipient,
            kind,
            ..
        } = cmd
        else {
            panic!("{cmd:?}")
        };
        assert_eq!((recipient.as_str(), kind), ("12D3KooWAbc", Kind::Blame));
        assert_eq!(
            build_go_message(kind.as_str(), &ip, Some((score, confidence))),
            "{\"message_type\": \"blame\", \"key_type\": \"ip\", \"key\": \"10.0.0.9\", \"evaluation_type\": \"score_confidence\", \"evaluation\": {\"score\": 1, \"confidence\": 0.9}}"
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        for bad in [
            "",
            "frobnicate",
            "request",
            "request --ip 1.2.3",
            "request --ip 1.2.3.4 --score 1",
            "report --ip 1.2.3.4 --score 2 --confidence 1",
            "report --ip 1.2.3.4 --score nan --confidence 1",
            "report --ip 1.2.3.4 --score 1 --confidence -0.1",
            "report --ip 1.2.3.4 --score 1 --confidence 1 --recipient a\"b",
            "report --ip 1.2.3.4 --score 1 --confidence 1 --type warn",
            "listen --seconds 0",
            "listen --count x",
            "listen --only foo",
            "peers --ip 1.2.3.4",
            "listen --version",
            "listen --pygo x --gopy x",
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn options_may_come_before_or_after_the_command() {
        let a = parse_args(&args("--redis redis://127.0.0.1:6390/0 listen --count 2")).unwrap();
        let b = parse_args(&args("listen --count=2 --redis=redis://127.0.0.1:6390/0")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.0.redis, "redis://127.0.0.1:6390/0");
    }

    const NOW: i64 = 1_700_000_000;

    fn go_data(inner: &str, version: &str) -> String {
        format!(
            "{{\"message_type\":\"go_data\",\"message_contents\":{{\"reporter\":\"12D3KooWx\",\"report_time\":{NOW},\"message\":\"{}\"}},\"version\":\"{version}\"}}",
            b64(inner)
        )
    }

    #[test]
    fn valid_messages_are_summarised() {
        let report = build_go_message(
            "report",
            "1.2.3.4",
            Some((PyNum::Float(0.8), PyNum::Float(0.9))),
        );
        let msg = check_gopy(
            go_data(&report, SLIPS_VERSION).as_bytes(),
            SLIPS_VERSION,
            NOW,
        )
        .unwrap();
        assert_eq!(
            line(&msg),
            "go_data      from 12D3KooWx  report about 1.2.3.4: score 0.8, confidence 0.9"
        );
        let request = build_go_message("request", "1.2.3.4", None);
        let msg = check_gopy(
            go_data(&request, SLIPS_VERSION).as_bytes(),
            SLIPS_VERSION,
            NOW,
        )
        .unwrap();
        assert_eq!(
            line(&msg),
            "go_data      from 12D3KooWx  request about 1.2.3.4"
        );
        let upd = format!(
            "{{\"message_type\":\"peer_update\",\"message_contents\":{{\"peerid\":\"12D3KooWy\",\"ip\":\"10.77.0.2\",\"reliability\":0.5,\"timestamp\":{NOW}}},\"version\":\"1.1.21\"}}"
        );
        assert_eq!(
            line(&check_gopy(upd.as_bytes(), SLIPS_VERSION, NOW).unwrap()),
            format!("peer_update  12D3KooWy  ip 10.77.0.2  reliability 0.5  timestamp {NOW}")
        );
    }

    /// A message Slips would drop is shown with the first rule it breaks.
    #[test]
    fn refused_messages_name_the_first_broken_rule() {
        let request = build_go_message("request", "1.2.3.4", None);
        let payload = go_data(&request, "1.1.20");
        let violations = check_gopy(payload.as_bytes(), SLIPS_VERSION, NOW).unwrap_err();
        let shown = refusal(&violations, payload.as_bytes());
        assert!(
            shown.starts_with("REFUSED      version_mismatch ("),
            "{shown}"
        );
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            masked("redis://:s3cret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(masked(DEFAULT_REDIS), DEFAULT_REDIS);
    }
}
