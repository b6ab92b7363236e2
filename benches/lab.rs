//! The lab benchmarks: real pigeon processes on a simulated LAN.
//!
//! This is a `harness = false` bench target, so it can use the
//! dev-dependencies (plotters) and `CARGO_BIN_EXE_pigeon`. One binary plays
//! two roles:
//!
//! * the **orchestrator** (`latency`, `fanout`, `converge`, `idle`, `all`,
//!   `summary`, `plot`), run as root in the root network namespace. It
//!   opens no socket at all: it creates labs with `scripts/lab.sh up`,
//!   starts every process with `scripts/lab.sh exec NAME I ...`, reads
//!   files and `/proc`, and removes its labs with `scripts/lab.sh down`
//!   (also on error, from `Drop`);
//! * the **workers** (`w-*`), started by the orchestrator inside lab hosts:
//!   Slips stand-ins talking to the host's own Redis, and the UDP relays of
//!   the latency floor. A worker refuses to run in the root network
//!   namespace, so no socket of this program can ever reach a real
//!   interface.
//!
//! Run it through `scripts/bench.sh`, or `cargo bench --bench lab -- all`.
//! Plain `cargo bench` (no command) only prints how to run it. Results go to
//! `target/bench-lab/*.json`, plots to `docs/plots/`; `docs/BENCHMARKS.md`
//! explains the method and the figures.

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The pigeon built with this bench (release profile).
const PIGEON: &str = env!("CARGO_BIN_EXE_pigeon");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Slips release whose contract the stand-ins follow.
const SLIPS_VERSION: &str = "1.1.21";
/// Each lab host's own Redis (lab.sh starts it), seen from inside the host.
const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
const PYGO: &str = "p2p_pygo";
const GOPY: &str = "p2p_gopy";
/// Unicast port of every pigeon (each host is its own namespace).
const PIGEON_PORT: u16 = 4001;
/// Sequence numbers from here on are warm-up messages, not measured.
const WARMUP_SEQ: u32 = 100_000;
/// Channels and port of the latency floor's relays.
const FLOOR_A: &str = "bench_floor";
const FLOOR_B: &str = "bench_floor_b";
const FLOOR_PORT: u16 = 47999;
/// Multicast port of the pigeons (pigeon.toml default).
const GROUP_PORT: u16 = 47474;
/// Slips' answer to a request in the fan-out benchmark.
const ANSWER: (&str, &str) = ("0.8", "0.9");
/// Every wait of the orchestrator is bounded by this or less.
const LONG_WAIT: Duration = Duration::from_secs(120);

const USAGE: &str = "\
usage: cargo bench --bench lab -- COMMAND [OPTIONS]    (as root; see scripts/bench.sh)

commands (orchestrator; each creates and removes its own lab with scripts/lab.sh):
  latency  [--count 1000] [--pace-directed-ms 10] [--pace-broadcast-ms 40]
           Slips publish on host A -> go_data on host B, next to a floor
           (Redis hop + UDP datagram + Redis hop)
  fanout   [--n 10,25,50] [--requests 100] [--gap-ms 500]
           one request to N responders, time until all N answers are back
  converge [--n 10,25,50,100]
           N pigeons started together, time until every Slips knows all others
  idle     [--peers 1000] [--idle-s 60] [--warmup-s 60] [--count-s 300] [--idle-hosts 5]
           RSS and CPU of an idle pigeon that knows 1000 peers; datagrams per
           minute of idle pigeons (nft counters on the lab bridge)
  all      every benchmark above (idle runs alongside the others); takes
           their options, with --fan-n and --conv-n for the two lists of N
  summary  print Markdown tables of target/bench-lab/*.json and the criterion
           estimates of `cargo bench --bench pure`
  plot     redraw docs/plots/*.png from target/bench-lab/*.json

options: --out DIR (results; default target/bench-lab), --plots DIR (default
docs/plots), --keep (keep the work dirs under /tmp/pigeon-bench).";

fn main() -> ExitCode {
    // cargo bench appends --bench; it means nothing here.
    let argv: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if argv.is_empty() {
        println!(
            "lab benchmarks: not run by plain `cargo bench` (they need root and minutes); \
             run scripts/bench.sh or `cargo bench --bench lab -- help`"
        );
        return ExitCode::SUCCESS;
    }
    match run(&argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab-bench: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(argv: &[String]) -> Result<()> {
    let args = Args::parse(argv)?;
    match args.cmd.as_str() {
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        "latency" => save(&args, "latency", &latency(&args)?),
        "fanout" => save(&args, "fanout", &fanout(&args)?),
        "converge" => save(&args, "converge", &converge(&args)?),
        "idle" => {
            let run = IdleRun::start(&args)?;
            let rss = rss(&args)?;
            save(&args, "rss", &rss)?;
            save(&args, "idle", &run.finish()?)
        }
        "all" => {
            // Idle pigeons only count datagrams: they run on their own lab
            // alongside the others, which costs them nothing measurable.
            let idle = IdleRun::start(&args)?;
            save(&args, "rss", &rss(&args)?)?;
            save(&args, "latency", &latency(&args)?)?;
            save(&args, "fanout", &fanout(&args)?)?;
            save(&args, "converge", &converge(&args)?)?;
            save(&args, "idle", &idle.finish()?)?;
            if let Err(e) = plot(&args) {
                eprintln!("lab-bench: no plots: {e:#}");
            }
            summary(&args)
        }
        "summary" => summary(&args),
        "plot" => plot(&args),
        "w-lat-send" => worker(w_lat_send, &args),
        "w-lat-recv" => worker(w_lat_recv, &args),
        "w-floor-a" => worker(w_floor_a, &args),
        "w-floor-b" => worker(w_floor_b, &args),
        "w-respond" => worker(w_respond, &args),
        "w-request" => worker(w_request, &args),
        "w-watch" => worker(w_watch, &args),
        "w-launch" => worker(w_launch, &args),
        other => bail!("unknown command '{other}'\n{USAGE}"),
    }
}

// ===================================================================== arguments

/// `COMMAND --key value ... [--flag] [-- REST...]`.
struct Args {
    cmd: String,
    opts: HashMap<String, String>,
    rest: Vec<String>,
}

impl Args {
    fn parse(argv: &[String]) -> Result<Args> {
        let (cmd, tail) = argv.split_first().context("no command")?;
        let mut opts = HashMap::new();
        let mut rest = Vec::new();
        let mut it = tail.iter();
        while let Some(a) = it.next() {
            if a == "--" {
                rest = it.cloned().collect();
                break;
            }
            let key = a
                .strip_prefix("--")
                .with_context(|| format!("unexpected argument '{a}'"))?;
            if key == "keep" {
                opts.insert(key.to_owned(), "1".to_owned());
                continue;
            }
            let value = it
                .next()
                .with_context(|| format!("--{key} needs a value"))?;
            opts.insert(key.to_owned(), value.clone());
        }
        Ok(Args {
            cmd: cmd.clone(),
            opts,
            rest,
        })
    }

    fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T> {
        match self.opts.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| anyhow!("--{key}: not a number: '{v}'")),
        }
    }

    fn text(&self, key: &str) -> Result<&str> {
        self.opts
            .get(key)
            .map(String::as_str)
            .with_context(|| format!("--{key} is required"))
    }

    fn list(&self, key: &str, default: &[usize]) -> Result<Vec<usize>> {
        match self.opts.get(key) {
            None => Ok(default.to_vec()),
            Some(v) => v
                .split(',')
                .map(|x| {
                    x.trim()
                        .parse()
                        .map_err(|_| anyhow!("--{key}: not a list of numbers: '{v}'"))
                })
                .collect(),
        }
    }

    /// `key`, else `fallback` (so `all` can give fan-out and convergence
    /// different lists while each command alone takes `--n`).
    fn list_or(&self, key: &str, fallback: &str, default: &[usize]) -> Result<Vec<usize>> {
        if self.opts.contains_key(key) {
            self.list(key, default)
        } else {
            self.list(fallback, default)
        }
    }

    fn keep(&self) -> bool {
        self.opts.contains_key("keep")
    }

    fn out_dir(&self) -> PathBuf {
        self.opts
            .get("out")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(ROOT).join("target/bench-lab"))
    }
}

// ===================================================================== small helpers

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Polls `f` every 20 ms until it is true or `timeout` passes.
fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let end = Instant::now() + timeout;
    loop {
        if f()? {
            return Ok(());
        }
        if Instant::now() >= end {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Distribution of a sample, in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Dist {
    n: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

impl Dist {
    fn of(values: &[f64]) -> Dist {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let mean = if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        };
        Dist {
            n: v.len(),
            p50: pct(&v, 0.50),
            p90: pct(&v, 0.90),
            p99: pct(&v, 0.99),
            max: v.last().copied().unwrap_or(f64::NAN),
            mean,
        }
    }
}

fn save<T: Serialize>(args: &Args, name: &str, value: &T) -> Result<()> {
    let dir = args.out_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.json"));
    fs::write(&path, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("lab-bench: wrote {}", path.display());
    Ok(())
}

fn load<T: for<'de> Deserialize<'de>>(args: &Args, name: &str) -> Result<Option<T>> {
    let path = args.out_dir().join(format!("{name}.json"));
    match fs::read(&path) {
        Ok(b) => Ok(Some(serde_json::from_slice(&b).with_context(|| {
            format!("{}: not a result of this version", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// A benchmark address: 198.18.0.0/15 (RFC 2544, benchmarking) + seq.
fn seq_ip(seq: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + seq)
}

fn ip_seq(ip: &str) -> Option<u32> {
    let ip: Ipv4Addr = ip.parse().ok()?;
    let off = u32::from(ip).checked_sub(u32::from(Ipv4Addr::new(198, 18, 0, 0)))?;
    (off < 1 << 17).then_some(off)
}

// ===================================================================== labs and processes

fn labsh() -> PathBuf {
    Path::new(ROOT).join("scripts/lab.sh")
}

/// A lab of scripts/lab.sh, removed when dropped.
struct Lab {
    name: String,
}

impl Lab {
    fn up(name: &str, hosts: usize) -> Result<Lab> {
        // A lab of ours left by an interrupted run.
        let _ = Command::new(labsh())
            .args(["down", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        eprintln!("lab-bench: lab.sh up {name} {hosts}");
        let st = Command::new(labsh())
            .args(["up", name, &hosts.to_string()])
            .stdout(Stdio::null())
            .status()
            .context("running scripts/lab.sh")?;
        ensure!(st.success(), "scripts/lab.sh up {name} {hosts} failed");
        Ok(Lab {
            name: name.to_owned(),
        })
    }

    /// `lab.sh exec NAME I PROGRAM`: PROGRAM inside host I (lab.sh and ip
    /// exec it, so the child's PID is PROGRAM's own).
    fn cmd(&self, host: usize, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new(labsh());
        c.arg("exec")
            .arg(&self.name)
            .arg(host.to_string())
            .arg(program);
        c
    }

    /// A worker of this program inside host I.
    fn worker(&self, host: usize, cmd: &str) -> Result<Command> {
        let exe = std::env::current_exe().context("own executable")?;
        let mut c = self.cmd(host, exe);
        c.arg(cmd);
        Ok(c)
    }

    fn redis_cli(&self, host: usize, args: &[&str]) -> Result<String> {
        let out = self
            .cmd(host, "redis-cli")
            .arg("--raw")
            .args(args)
            .stderr(Stdio::null())
            .output()
            .context("redis-cli")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// utime + stime (clock ticks) of every process now running in the
    /// given hosts (`ip netns pids`, which only lists).
    fn cpu_ticks(&self, hosts: &[usize]) -> Result<u64> {
        let mut total = 0;
        for h in hosts {
            let out = Command::new("ip")
                .args(["netns", "pids", &format!("{}-h{h}", self.name)])
                .output()
                .context("ip netns pids")?;
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse() {
                    // A process may have exited meanwhile.
                    total += proc_ticks(pid).unwrap_or(0);
                }
            }
        }
        Ok(total)
    }

    /// `nft` in the lab's bridge namespace (counters only; no packet is
    /// sent by it).
    fn bridge_nft(&self, input: &str) -> Result<String> {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &format!("{}-br", self.name),
                "nft",
                "-f",
                "-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("ip netns exec ... nft (install nftables)")?;
        child
            .stdin
            .take()
            .context("nft stdin")?
            .write_all(input.as_bytes())?;
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "nft failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(labsh())
            .args(["down", &self.name])
            .stdout(Stdio::null())
            .status();
    }
}

/// A process we started; stopped (by its PID) when dropped.
struct Proc {
    what: String,
    child: Child,
    done: Option<ExitStatus>,
}

impl Proc {
    fn spawn(what: impl Into<String>, mut cmd: Command) -> Result<Proc> {
        let what = what.into();
        let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        Ok(Proc {
            what,
            child,
            done: None,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn running(&mut self) -> bool {
        if self.done.is_none() {
            self.done = self.child.try_wait().ok().flatten();
        }
        self.done.is_none()
    }

    fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let what = self.what.clone();
        wait_for(&what, timeout, || Ok(!self.running()))?;
        self.done.context("no exit status")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        stop(std::slice::from_mut(self));
    }
}

/// SIGTERM to every running process (by PID), then SIGKILL to those still
/// running 3 s later.
fn stop(procs: &mut [Proc]) {
    let pids: Vec<String> = procs
        .iter_mut()
        .filter_map(|p| p.running().then(|| p.pid().to_string()))
        .collect();
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .args(&pids)
        .stderr(Stdio::null())
        .status();
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end && procs.iter_mut().any(Proc::running) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in procs.iter_mut() {
        if p.running() {
            eprintln!("lab-bench: {} ignored SIGTERM, killing it", p.what);
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// A per-run work directory under /tmp/pigeon-bench, removed when dropped
/// unless --keep.
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    fn new(name: &str, keep: bool) -> Result<WorkDir> {
        let path = Path::new("/tmp/pigeon-bench").join(name);
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(WorkDir { path, keep })
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("lab-bench: kept {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Host I's Slips tree, laid out like a Slips checkout: `VERSION`,
/// `p2p4slips/p2p4slips` (a symlink to the bench's pigeon, so the pigeon
/// finds `VERSION` as under Slips), `permanent/p2p_trust_runtime/` (cwd)
/// and `output/p2p_trust/p2p.log` (stdout).
struct Tree {
    dir: PathBuf,
    host: usize,
}

impl Tree {
    fn new(base: &Path, host: usize) -> Result<Tree> {
        let dir = base.join(format!("h{host}"));
        for sub in [
            "p2p4slips",
            "permanent/p2p_trust_runtime",
            "output/p2p_trust",
        ] {
            fs::create_dir_all(dir.join(sub))?;
        }
        fs::write(dir.join("VERSION"), format!("{SLIPS_VERSION}\n"))?;
        std::os::unix::fs::symlink(PIGEON, dir.join("p2p4slips/p2p4slips"))
            .context("symlinking the pigeon")?;
        Ok(Tree { dir, host })
    }

    fn runtime(&self) -> PathBuf {
        self.dir.join("permanent/p2p_trust_runtime")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("output/p2p_trust/p2p.log")
    }

    fn binary(&self) -> PathBuf {
        self.dir.join("p2p4slips/p2p4slips")
    }

    /// Slips 1.1.21's command line (p2p_trust.py), with -port fixed: each
    /// host is a namespace of its own.
    fn pigeon_args(&self) -> Vec<String> {
        [
            "-port",
            &PIGEON_PORT.to_string(),
            "-host",
            &format!("10.77.0.{}", self.host),
            "-key-file",
            "pigeon.keys",
            "--redis-db",
            "localhost:6379",
            "-redis-channel-pygo",
            PYGO,
            "-redis-channel-gopy",
            GOPY,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Working directory and output files as Slips sets them.
    fn setup(&self, cmd: &mut Command) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())?;
        let err = File::create(self.dir.join("stderr"))?;
        cmd.current_dir(self.runtime())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        Ok(())
    }

    fn start_pigeon(&self, lab: &Lab) -> Result<Proc> {
        let mut cmd = lab.cmd(self.host, self.binary());
        cmd.args(self.pigeon_args());
        self.setup(&mut cmd)?;
        Proc::spawn(format!("pigeon of host {}", self.host), cmd)
    }

    fn log_text(&self) -> String {
        fs::read_to_string(self.log()).unwrap_or_default()
    }
}

/// The peer id host I's pigeon wrote to its Redis (`multiAddress`).
fn peer_id(lab: &Lab, host: usize) -> Result<String> {
    let mut id = String::new();
    wait_for(
        &format!("multiAddress in host {host}'s Redis"),
        Duration::from_secs(10),
        || {
            let addr = lab.redis_cli(host, &["get", "multiAddress"])?;
            id = addr.rsplit('/').next().unwrap_or("").to_owned();
            Ok(id.starts_with("12D3KooW"))
        },
    )?;
    Ok(id)
}

fn ready(path: &Path) -> Result<()> {
    File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(())
}

fn wait_files(paths: &[PathBuf], timeout: Duration) -> Result<()> {
    wait_for("workers to subscribe", timeout, || {
        Ok(paths.iter().all(|p| p.exists()))
    })
}

fn worker_log(work: &WorkDir, name: &str) -> Result<(File, File)> {
    Ok((
        File::create(work.file(&format!("{name}.out")))?,
        File::create(work.file(&format!("{name}.err")))?,
    ))
}

fn spawn_worker(
    lab: &Lab,
    work: &WorkDir,
    host: usize,
    name: &str,
    cmd: &str,
    args: &[String],
) -> Result<Proc> {
    let mut c = lab.worker(host, cmd)?;
    c.args(args);
    let (out, err) = worker_log(work, name)?;
    c.stdin(Stdio::null()).stdout(out).stderr(err);
    Proc::spawn(format!("{name} (host {host})"), c)
}

// ===================================================================== Slips' side

/// Slips' `build_go_message` (Python `json.dumps`: `", "` and `": "`).
fn go_message(message_type: &str, ip: &str, evaluation: Option<(&str, &str)>) -> String {
    let mut text = format!(
        "{{\"message_type\": \"{message_type}\", \"key_type\": \"ip\", \"key\": \"{ip}\", \
         \"evaluation_type\": \"score_confidence\""
    );
    if let Some((score, confidence)) = evaluation {
        text.push_str(&format!(
            ", \"evaluation\": {{\"score\": {score}, \"confidence\": {confidence}}}"
        ));
    }
    text.push('}');
    text
}

/// The scroll Slips publishes on pygo.
fn scroll(inner: &str, recipient: &str) -> String {
    format!(
        "{{\"message\": \"{}\", \"recipient\": \"{recipient}\", \"version\": \"{SLIPS_VERSION}\"}}",
        BASE64_STANDARD.encode(inner.as_bytes())
    )
}

/// What a stand-in needs of a gopy message.
enum Gopy {
    GoData {
        reporter: String,
        message_type: String,
        ip: String,
    },
    PeerUpdate {
        peerid: String,
        has_ip: bool,
    },
    Other,
}

fn parse_gopy(bytes: &[u8]) -> Gopy {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Gopy::Other;
    };
    let c = &v["message_contents"];
    let s = |x: &serde_json::Value| x.as_str().unwrap_or("").to_owned();
    match v["message_type"].as_str() {
        Some("go_data") => {
            let inner = BASE64_STANDARD
                .decode(s(&c["message"]))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .unwrap_or_default();
            Gopy::GoData {
                reporter: s(&c["reporter"]),
                message_type: s(&inner["message_type"]),
                ip: s(&inner["key"]),
            }
        }
        Some("peer_update") => Gopy::PeerUpdate {
            peerid: s(&c["peerid"]),
            has_ip: c["ip"].is_string(),
        },
        _ => Gopy::Other,
    }
}

// ===================================================================== workers

/// Runs a worker after checking we are inside a lab host: a worker opens
/// sockets, which must never happen in the root network namespace. Two
/// independent checks: our network namespace is one that `ip netns`
/// created (`/run/netns/*`), and its only interfaces are `lo` and the lab's
/// `veth0` (so no real interface can be reached from it).
fn worker(f: fn(&Args) -> Result<()>, args: &Args) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let refuse = |why: String| {
        anyhow!(
            "refusing to run '{}': {why}; workers are started inside lab hosts by the \
             orchestrator (scripts/lab.sh exec)",
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
    redis::Client::open(REDIS_URL)?
        .get_connection_with_timeout(Duration::from_secs(3))
        .context("connecting to the host's Redis")
}

fn publish(con: &mut redis::Connection, channel: &str, text: &str) -> Result<i64> {
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(text)
        .query::<i64>(con)
        .context("PUBLISH")
}

/// Subscribes to `channels` and calls `on_msg(channel, payload)` for each
/// message until it returns false or `deadline` passes.
fn subscribe(
    channels: &[&str],
    ready_file: Option<&Path>,
    deadline: Instant,
    mut on_msg: impl FnMut(&str, &[u8]) -> Result<bool>,
) -> Result<()> {
    let mut con = redis()?;
    let mut ps = con.as_pubsub();
    for c in channels {
        ps.subscribe(*c)?;
    }
    if let Some(r) = ready_file {
        ready(r)?;
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        ps.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        match ps.get_message() {
            Ok(m) => {
                if !on_msg(m.get_channel_name(), m.get_payload_bytes())? {
                    return Ok(());
                }
            }
            Err(e) if e.is_timeout() => return Ok(()),
            Err(e) => bail!("lost the Redis connection: {e}"),
        }
    }
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
fn w_lat_send(args: &Args) -> Result<()> {
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
        let text = scroll(
            &go_message("report", &seq_ip(seq).to_string(), Some(ANSWER)),
            to,
        );
        sleep_until(slot);
        let t = now_ns();
        ensure!(
            publish(&mut con, PYGO, &text)? >= 1,
            "the pigeon is not subscribed"
        );
        if seq < WARMUP_SEQ {
            writeln!(out, "p {seq} {t}")?;
        }
        let floor = seq.to_string();
        sleep_until(slot + pace / 2);
        let t = now_ns();
        ensure!(
            publish(&mut con, FLOOR_A, &floor)? >= 1,
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
fn w_lat_recv(args: &Args) -> Result<()> {
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
            } else if let Gopy::GoData { ip, .. } = parse_gopy(payload)
                && let Some(seq) = ip_seq(&ip)
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
fn w_floor_a(args: &Args) -> Result<()> {
    let to: SocketAddrV4 = args.text("to")?.parse()?;
    ensure!(
        to.ip().octets()[..3] == [10, 77, 0],
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
fn w_floor_b(args: &Args) -> Result<()> {
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
                publish(&mut con, FLOOR_B, &text)?;
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
fn w_respond(args: &Args) -> Result<()> {
    let mut out = redis()?;
    subscribe(
        &[GOPY],
        Some(Path::new(args.text("ready")?)),
        deadline(args)?,
        |_, payload| {
            if let Gopy::GoData {
                reporter,
                message_type,
                ip,
            } = parse_gopy(payload)
                && message_type == "request"
            {
                let answer = scroll(&go_message("report", &ip, Some(ANSWER)), &reporter);
                publish(&mut out, PYGO, &answer)?;
            }
            Ok(true)
        },
    )
}

/// The requester's Slips: after a warm-up request that all `--expect`
/// responders answer, publishes `--count` requests `--gap-ms` apart and
/// times each until all answers are in. Writes one line per request:
/// `<seq> <answers> <first µs> <median µs> <all µs or -1>`.
fn w_request(args: &Args) -> Result<()> {
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
        let text = scroll(&go_message("request", ip, None), "*");
        let t0 = Instant::now();
        ensure!(
            publish(&mut pubcon, PYGO, &text)? >= 1,
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
            if let Gopy::GoData {
                reporter,
                message_type,
                ip: about,
            } = parse_gopy(m.get_payload_bytes())
                && message_type == "report"
                && about == ip
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
fn w_watch(args: &Args) -> Result<()> {
    let expect: usize = args.num("expect", 9)?;
    let out = args.text("out")?.to_owned();
    let mut known = HashSet::new();
    let mut done_at = None;
    subscribe(
        &[GOPY],
        Some(Path::new(args.text("ready")?)),
        deadline(args)?,
        |_, payload| {
            if let Gopy::PeerUpdate {
                peerid,
                has_ip: true,
            } = parse_gopy(payload)
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
fn w_launch(args: &Args) -> Result<()> {
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

// ===================================================================== 1. latency

#[derive(Debug, Serialize, Deserialize)]
struct LatencyResult {
    date: String,
    load_before: String,
    count: u32,
    pace_directed_ms: f64,
    pace_broadcast_ms: f64,
    directed: Dist,
    broadcast: Dist,
    floor: Dist,
    lost_directed: usize,
    lost_broadcast: usize,
    lost_floor: usize,
    samples_directed: Vec<f64>,
    samples_broadcast: Vec<f64>,
    samples_floor: Vec<f64>,
}

fn read_stamps(path: &Path) -> Result<Vec<(char, u32, u64)>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next()?.chars().next()?;
            Some((k, it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect())
}

/// Latencies (ms) of kind `k`: receive time minus send time, per seq;
/// returns them and how many were sent but not received.
fn join(sent: &[(char, u32, u64)], recv: &[(char, u32, u64)], k: char) -> (Vec<f64>, usize) {
    let got: HashMap<u32, u64> = recv
        .iter()
        .filter(|r| r.0 == k)
        .map(|r| (r.1, r.2))
        .collect();
    let mut lat = Vec::new();
    let mut lost = 0;
    for s in sent.iter().filter(|s| s.0 == k) {
        match got.get(&s.1) {
            Some(t) => lat.push(t.saturating_sub(s.2) as f64 / 1e6),
            None => lost += 1,
        }
    }
    (lat, lost)
}

fn latency(args: &Args) -> Result<LatencyResult> {
    let count: u32 = args.num("count", 1000)?;
    let pace_d: f64 = args.num("pace-directed-ms", 10.0)?;
    let pace_b: f64 = args.num("pace-broadcast-ms", 40.0)?;
    let load_before = loadavg();
    let work = WorkDir::new("latency", args.keep())?;
    let lab = Lab::up("bench_lat", 2)?;
    let trees = [Tree::new(&work.path, 1)?, Tree::new(&work.path, 2)?];
    let mut pigeons = vec![trees[0].start_pigeon(&lab)?, trees[1].start_pigeon(&lab)?];
    let id_b = peer_id(&lab, 2)?;
    peer_id(&lab, 1)?;
    wait_for(
        "the two pigeons to find each other",
        Duration::from_secs(15),
        || Ok(trees.iter().all(|t| t.log_text().contains("peer active"))),
    )?;
    let secs = (f64::from(count) * pace_b.max(pace_d) / 1000.0) as u64 + 60;
    let ready_a = work.file("floor-a.ready");
    let ready_b = work.file("floor-b.ready");
    let mut relays = vec![
        spawn_worker(
            &lab,
            &work,
            2,
            "floor-b",
            "w-floor-b",
            &[
                "--ready".into(),
                ready_b.display().to_string(),
                "--seconds".into(),
                (2 * secs).to_string(),
            ],
        )?,
        spawn_worker(
            &lab,
            &work,
            1,
            "floor-a",
            "w-floor-a",
            &[
                "--to".into(),
                format!("10.77.0.2:{FLOOR_PORT}"),
                "--ready".into(),
                ready_a.display().to_string(),
                "--seconds".into(),
                (2 * secs).to_string(),
            ],
        )?,
    ];
    wait_files(&[ready_a, ready_b], Duration::from_secs(10))?;

    let phase = |mode: &str, to: &str, pace: f64| -> Result<(Vec<f64>, usize, Vec<f64>, usize)> {
        eprintln!("lab-bench: latency, {mode}: {count} messages, one every {pace} ms");
        let ready = work.file(&format!("recv-{mode}.ready"));
        let recv_out = work.file(&format!("recv-{mode}.txt"));
        let send_out = work.file(&format!("send-{mode}.txt"));
        let mut recv = spawn_worker(
            &lab,
            &work,
            2,
            &format!("recv-{mode}"),
            "w-lat-recv",
            &[
                "--count".into(),
                count.to_string(),
                "--ready".into(),
                ready.display().to_string(),
                "--out".into(),
                recv_out.display().to_string(),
                "--seconds".into(),
                secs.to_string(),
            ],
        )?;
        wait_files(std::slice::from_ref(&ready), Duration::from_secs(10))?;
        let mut send = spawn_worker(
            &lab,
            &work,
            1,
            &format!("send-{mode}"),
            "w-lat-send",
            &[
                "--count".into(),
                count.to_string(),
                "--pace-ms".into(),
                pace.to_string(),
                "--to".into(),
                to.to_owned(),
                "--out".into(),
                send_out.display().to_string(),
            ],
        )?;
        let st = send.wait(Duration::from_secs(secs))?;
        ensure!(
            st.success(),
            "the sender failed ({st}); see {}",
            work.path.display()
        );
        // Whatever has not arrived 3 s after the last send is lost.
        let _ = recv.wait(Duration::from_secs(3));
        stop(std::slice::from_mut(&mut recv));
        let sent = read_stamps(&send_out)?;
        let got = read_stamps(&recv_out)?;
        let (p, lost_p) = join(&sent, &got, 'p');
        let (f, lost_f) = join(&sent, &got, 'f');
        Ok((p, lost_p, f, lost_f))
    };
    let (directed, lost_d, mut floor, mut lost_f) = phase("directed", &id_b, pace_d)?;
    let (broadcast, lost_b, floor2, lost_f2) = phase("broadcast", "*", pace_b)?;
    floor.extend(floor2);
    lost_f += lost_f2;
    stop(&mut relays);
    stop(&mut pigeons);
    let r = LatencyResult {
        date: date(),
        load_before,
        count,
        pace_directed_ms: pace_d,
        pace_broadcast_ms: pace_b,
        directed: Dist::of(&directed),
        broadcast: Dist::of(&broadcast),
        floor: Dist::of(&floor),
        lost_directed: lost_d,
        lost_broadcast: lost_b,
        lost_floor: lost_f,
        samples_directed: directed,
        samples_broadcast: broadcast,
        samples_floor: floor,
    };
    eprintln!(
        "lab-bench: latency p50/p99 ms: directed {:.3}/{:.3}, broadcast {:.3}/{:.3}, floor {:.3}/{:.3}",
        r.directed.p50, r.directed.p99, r.broadcast.p50, r.broadcast.p99, r.floor.p50, r.floor.p99
    );
    Ok(r)
}

// ===================================================================== 2. fan-out

#[derive(Debug, Serialize, Deserialize)]
struct FanoutRound {
    n: usize,
    /// CPU time (ms) that the lab's processes (pigeons, Slips stand-ins,
    /// Redis servers) spent per request, copies and digests included: all
    /// N+1 hosts share this machine's cores.
    cpu_ms_per_request: f64,
    requests: usize,
    incomplete: usize,
    all: Dist,
    first: Dist,
    median: Dist,
    samples_all: Vec<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FanoutResult {
    date: String,
    load_before: String,
    gap_ms: u64,
    rounds: Vec<FanoutRound>,
}

fn fanout(args: &Args) -> Result<FanoutResult> {
    let ns = args.list_or("fan-n", "n", &[10, 25, 50])?;
    let requests: u32 = args.num("requests", 100)?;
    let gap: u64 = args.num("gap-ms", 500)?;
    let load_before = loadavg();
    let max = ns.iter().copied().max().unwrap_or(1);
    let lab = Lab::up("bench_fan", max + 1)?;
    let mut rounds = Vec::new();
    for &n in &ns {
        eprintln!("lab-bench: fan-out, N = {n}: {requests} requests, {gap} ms apart");
        let work = WorkDir::new(&format!("fanout-{n}"), args.keep())?;
        for h in 1..=n + 1 {
            // A previous round's pigeon left its address there.
            lab.redis_cli(h, &["del", "multiAddress"])?;
        }
        let trees: Vec<Tree> = (1..=n + 1)
            .map(|h| Tree::new(&work.path, h))
            .collect::<Result<_>>()?;
        let mut pigeons = trees
            .iter()
            .map(|t| t.start_pigeon(&lab))
            .collect::<Result<Vec<_>>>()?;
        let mut readies = Vec::new();
        let mut responders = Vec::new();
        for h in 2..=n + 1 {
            let r = work.file(&format!("respond-{h}.ready"));
            responders.push(spawn_worker(
                &lab,
                &work,
                h,
                &format!("respond-{h}"),
                "w-respond",
                &[
                    "--ready".into(),
                    r.display().to_string(),
                    "--seconds".into(),
                    "600".into(),
                ],
            )?);
            readies.push(r);
        }
        wait_files(&readies, Duration::from_secs(30))?;
        let hosts: Vec<usize> = (1..=n + 1).collect();
        let ticks0 = lab.cpu_ticks(&hosts)?;
        let out = work.file("request.txt");
        let mut req = spawn_worker(
            &lab,
            &work,
            1,
            "request",
            "w-request",
            &[
                "--expect".into(),
                n.to_string(),
                "--count".into(),
                requests.to_string(),
                "--gap-ms".into(),
                gap.to_string(),
                "--out".into(),
                out.display().to_string(),
            ],
        )?;
        let st = req.wait(LONG_WAIT + Duration::from_millis(gap * u64::from(requests)))?;
        let ticks = lab.cpu_ticks(&hosts)?.saturating_sub(ticks0);
        let warmups = fs::read_to_string(work.file("request.err"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("warm-up request"))
            .count();
        let cpu_ms_per_request =
            ticks as f64 / clk_tck() as f64 * 1000.0 / (requests as usize + warmups).max(1) as f64;
        stop(&mut responders);
        stop(&mut pigeons);
        ensure!(
            st.success(),
            "the requester failed ({st}): {}",
            fs::read_to_string(work.file("request.err")).unwrap_or_default()
        );
        let text = fs::read_to_string(&out)?;
        let (mut all, mut first, mut median, mut incomplete) = (vec![], vec![], vec![], 0);
        for l in text.lines() {
            let f: Vec<i64> = l
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            let [_, _, fst, med, a] = f[..] else { continue };
            first.push(fst as f64 / 1000.0);
            median.push(med as f64 / 1000.0);
            if a < 0 {
                incomplete += 1;
            } else {
                all.push(a as f64 / 1000.0);
            }
        }
        let round = FanoutRound {
            n,
            cpu_ms_per_request,
            requests: first.len(),
            incomplete,
            all: Dist::of(&all),
            first: Dist::of(&first),
            median: Dist::of(&median),
            samples_all: all,
        };
        eprintln!(
            "lab-bench: fan-out N = {n}: all answers p50 {:.2} ms, p99 {:.2} ms ({} incomplete)",
            round.all.p50, round.all.p99, round.incomplete
        );
        rounds.push(round);
    }
    Ok(FanoutResult {
        date: date(),
        load_before,
        gap_ms: gap,
        rounds,
    })
}

// ===================================================================== 3. convergence

#[derive(Debug, Serialize, Deserialize)]
struct ConvergeRound {
    n: usize,
    converged: usize,
    /// Per pigeon: ms from the common start until its Slips knew all others.
    per_pigeon: Dist,
    /// Latest actual start after the planned one (ms): how "together".
    start_spread_ms: f64,
    /// CPU seconds all N pigeons used from the start until every Slips
    /// knew every peer, and the wall time of that span.
    pigeon_cpu_s: f64,
    /// How busy all cores of the machine were meanwhile (every process:
    /// pigeons, their start-up, Redis servers, Slips stand-ins, others').
    machine_busy_pct: f64,
    wall_s: f64,
    /// Datagrams each pigeon received over its run (its own `stopped`
    /// line), on average.
    datagrams_received_mean: f64,
    samples: Vec<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ConvergeResult {
    date: String,
    load_before: String,
    rounds: Vec<ConvergeRound>,
}

fn converge(args: &Args) -> Result<ConvergeResult> {
    let ns = args.list_or("conv-n", "n", &[10, 25, 50, 100])?;
    let load_before = loadavg();
    let max = ns.iter().copied().max().unwrap_or(2);
    let lab = Lab::up("bench_conv", max)?;
    let mut rounds = Vec::new();
    for &n in &ns {
        eprintln!("lab-bench: convergence, N = {n}");
        let work = WorkDir::new(&format!("converge-{n}"), args.keep())?;
        let trees: Vec<Tree> = (1..=n)
            .map(|h| Tree::new(&work.path, h))
            .collect::<Result<_>>()?;
        let mut watchers = Vec::new();
        let mut readies = Vec::new();
        for t in &trees {
            let h = t.host;
            let r = work.file(&format!("watch-{h}.ready"));
            watchers.push(spawn_worker(
                &lab,
                &work,
                h,
                &format!("watch-{h}"),
                "w-watch",
                &[
                    "--expect".into(),
                    (n - 1).to_string(),
                    "--ready".into(),
                    r.display().to_string(),
                    "--out".into(),
                    work.file(&format!("watch-{h}.txt")).display().to_string(),
                    "--seconds".into(),
                    "60".into(),
                ],
            )?);
            readies.push(r);
        }
        wait_files(&readies, Duration::from_secs(60))?;
        // Every launcher is spawned well before the common start.
        let at = now_ns() + 1_500_000_000 + n as u64 * 40_000_000;
        let mut pigeons = Vec::new();
        for t in &trees {
            let mut cmd = lab.worker(t.host, "w-launch")?;
            cmd.args(["--at", &at.to_string(), "--stamp"])
                .arg(work.file(&format!("start-{}.txt", t.host)))
                .arg("--")
                .arg(t.binary())
                .args(t.pigeon_args());
            t.setup(&mut cmd)?;
            pigeons.push(Proc::spawn(format!("pigeon of host {}", t.host), cmd)?);
        }
        // The whole machine's CPU from the start until every Slips knew
        // every peer: shows whether the round was CPU-bound.
        let at_instant = Instant::now() + Duration::from_nanos(at.saturating_sub(now_ns()));
        sleep_until(at_instant);
        let cpu0 = machine_cpu()?;
        for w in &mut watchers {
            w.wait(Duration::from_secs(90))?;
        }
        let cpu1 = machine_cpu()?;
        let machine_busy_pct =
            (cpu1.0 - cpu0.0) as f64 / ((cpu1.1 - cpu0.1) as f64).max(1.0) * 100.0;
        let wall_s = (now_ns().saturating_sub(at)) as f64 / 1e9;
        // CPU the pigeons used from their start until now: on this box all
        // N pigeons share 2 cores, on a real LAN each has its own machine.
        let ticks: u64 = pigeons
            .iter()
            .filter_map(|p| proc_ticks(p.pid()).ok())
            .sum();
        let pigeon_cpu_s = ticks as f64 / clk_tck() as f64;
        stop(&mut pigeons);
        let received: Vec<f64> = trees
            .iter()
            .filter_map(|t| logged_count(&t.log_text(), "received="))
            .map(|x| x as f64)
            .collect();
        let mut samples = Vec::new();
        let mut spread: f64 = 0.0;
        for t in &trees {
            let h = t.host;
            let line = fs::read_to_string(work.file(&format!("watch-{h}.txt"))).unwrap_or_default();
            let f: Vec<&str> = line.split_whitespace().collect();
            if let ["done", ts, _] = f[..] {
                let ts: u64 = ts.parse()?;
                samples.push(ts.saturating_sub(at) as f64 / 1e6);
            } else {
                eprintln!("lab-bench: host {h} did not converge: {}", line.trim());
            }
            if let Ok(s) = fs::read_to_string(work.file(&format!("start-{h}.txt")))
                && let Ok(s) = s.trim().parse::<u64>()
            {
                spread = spread.max(s.saturating_sub(at) as f64 / 1e6);
            }
        }
        let round = ConvergeRound {
            n,
            machine_busy_pct,
            pigeon_cpu_s,
            wall_s,
            datagrams_received_mean: received.iter().sum::<f64>() / received.len().max(1) as f64,
            converged: samples.len(),
            per_pigeon: Dist::of(&samples),
            start_spread_ms: spread,
            samples,
        };
        eprintln!(
            "lab-bench: convergence N = {n}: {}/{n} converged, last after {:.0} ms (median {:.0} ms), starts within {:.1} ms",
            round.converged, round.per_pigeon.max, round.per_pigeon.p50, round.start_spread_ms
        );
        rounds.push(round);
    }
    Ok(ConvergeResult {
        date: date(),
        load_before,
        rounds,
    })
}

// ===================================================================== 4. memory, CPU, idle traffic

#[derive(Debug, Serialize, Deserialize)]
struct ProcSample {
    label: String,
    stored_peers: usize,
    rss_kb: u64,
    /// Anonymous part of the RSS (heap, stacks): what pigeon itself uses,
    /// without the mapped binary and libraries.
    rss_anon_kb: u64,
    hwm_kb: u64,
    cpu_ticks: u64,
    idle_s: f64,
    cpu_pct: f64,
    start_to_multiaddr_ms: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RssResult {
    date: String,
    load_before: String,
    clk_tck: u64,
    pigeons: Vec<ProcSample>,
}

fn proc_status_kb(pid: u32, field: &str) -> Result<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// (busy, total) clock ticks of all CPUs since boot (`/proc/stat`).
fn machine_cpu() -> Result<(u64, u64)> {
    let s = fs::read_to_string("/proc/stat")?;
    let line = s.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    ensure!(v.len() >= 5, "odd /proc/stat: {line}");
    let total: u64 = v.iter().take(8).sum();
    // idle and iowait are not busy.
    Ok((total - v[3] - v[4], total))
}

/// utime + stime of a process, in clock ticks.
fn proc_ticks(pid: u32) -> Result<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may contain spaces: ") S ppid ...".
    let rest = s
        .rsplit_once(')')
        .map(|x| x.1)
        .context("odd /proc/PID/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = f.get(11).context("no utime")?.parse()?;
    let stime: u64 = f.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

fn clk_tck() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// A counter of the pigeon's last `stopped received=… sent=…` log line.
fn logged_count(log: &str, key: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains(" stopped "))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))?
        .parse()
        .ok()
}

/// A peer list of `n` peers (keys from seeds, as pigeon writes it), seen a
/// minute ago, at addresses of the lab subnet (never contacted: they are
/// inactive until they announce).
fn peer_file(n: usize) -> Result<Vec<u8>> {
    use pigeon::peerstore::{FORMAT_VERSION, PeerFile, StoredPeer, StoredReliability};
    let now = now_ns() / 1_000_000_000;
    let peers = (0..n)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            seed[31] = 0xbe;
            let vk = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
            StoredPeer {
                peer_id: pigeon::identity::peer_id_of(&vk),
                public_key: BASE64_STANDARD.encode(vk.as_bytes()),
                ip: Some(Ipv4Addr::new(10, 77, 0, 100 + (i % 150) as u8)),
                port: Some(4001 + (i / 150) as u16),
                first_seen: now - 86_400,
                last_seen: now - 60,
                reliability: StoredReliability {
                    sum: 3.0,
                    weight: 4.0,
                    at_ms: (now - 60) * 1000,
                },
                reported_reliability: Some(0.75),
                organisations: Vec::new(),
            }
        })
        .collect();
    Ok(serde_json::to_vec_pretty(&PeerFile {
        version: FORMAT_VERSION,
        saved_at: now,
        peers,
    })?)
}

/// Unix ns of the first log line containing `needle` (RFC 3339 timestamp
/// at the start of tracing's lines).
fn log_time_ns(log: &str, needle: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains(needle))?;
    let ts = line.split_whitespace().next()?;
    let out = Command::new("date")
        .args(["-d", ts, "+%s%N"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn rss(args: &Args) -> Result<RssResult> {
    let peers: usize = args.num("peers", 1000)?;
    let idle_s: u64 = args.num("idle-s", 60)?;
    let load_before = loadavg();
    let work = WorkDir::new("rss", args.keep())?;
    let lab = Lab::up("bench_rss", 3)?;
    let sizes = [peers, 0, 10_000];
    let mut trees = Vec::new();
    for (i, n) in sizes.iter().enumerate() {
        let t = Tree::new(&work.path, i + 1)?;
        if *n > 0 {
            fs::write(t.runtime().join("peers.json"), peer_file(*n)?)?;
        }
        trees.push(t);
    }
    let mut pigeons = Vec::new();
    let mut started = Vec::new();
    for t in &trees {
        started.push(now_ns());
        pigeons.push(t.start_pigeon(&lab)?);
    }
    for h in 1..=trees.len() {
        peer_id(&lab, h)?;
    }
    eprintln!("lab-bench: rss: pigeons up; settling 5 s, then idle {idle_s} s");
    std::thread::sleep(Duration::from_secs(5));
    let t0: Vec<u64> = pigeons
        .iter()
        .map(|p| proc_ticks(p.pid()))
        .collect::<Result<_>>()?;
    let w0 = Instant::now();
    std::thread::sleep(Duration::from_secs(idle_s));
    let tck = clk_tck();
    let mut samples = Vec::new();
    for (i, p) in pigeons.iter_mut().enumerate() {
        ensure!(p.running(), "{} exited during the idle period", p.what);
        let pid = p.pid();
        let ticks = proc_ticks(pid)? - t0[i];
        let secs = w0.elapsed().as_secs_f64();
        let loaded = log_time_ns(&trees[i].log_text(), "Your Multiaddress Is");
        samples.push(ProcSample {
            label: match sizes[i] {
                0 => "no peer list".to_owned(),
                n => format!("{n} stored peers"),
            },
            stored_peers: sizes[i],
            rss_kb: proc_status_kb(pid, "VmRSS:")?,
            rss_anon_kb: proc_status_kb(pid, "RssAnon:")?,
            hwm_kb: proc_status_kb(pid, "VmHWM:")?,
            cpu_ticks: ticks,
            idle_s: secs,
            cpu_pct: ticks as f64 / tck as f64 / secs * 100.0,
            start_to_multiaddr_ms: loaded.map(|t| t.saturating_sub(started[i]) as f64 / 1e6),
        });
    }
    stop(&mut pigeons);
    for s in &samples {
        eprintln!(
            "lab-bench: rss: {}: VmRSS {} kB (peak {} kB), CPU {:.3} % over {:.0} s",
            s.label, s.rss_kb, s.hwm_kb, s.cpu_pct, s.idle_s
        );
    }
    Ok(RssResult {
        date: date(),
        load_before,
        clk_tck: tck,
        pigeons: samples,
    })
}

#[derive(Debug, Serialize, Deserialize)]
struct IdleResult {
    date: String,
    hosts: usize,
    warmup_s: u64,
    window_s: f64,
    /// Datagrams each pigeon sent into the bridge during the window, per
    /// minute.
    sent_per_min: Vec<f64>,
    /// Bytes of those datagrams (Ethernet frames), per minute.
    bytes_per_min: Vec<f64>,
    /// Every packet each host sent into the bridge (ARP, IGMP too), per
    /// minute.
    all_packets_per_min: Vec<f64>,
    /// The pigeons' own count (`stopped … sent=N`) over their whole run.
    sent_total_logged: Vec<Option<u64>>,
    run_s: f64,
}

/// Idle pigeons on a lab of their own, counted by nft on the bridge.
struct IdleRun {
    // Dropped in this order: processes, then the lab, then the files.
    pigeons: Vec<Proc>,
    trees: Vec<Tree>,
    lab: Lab,
    _work: WorkDir,
    started: Instant,
    warmup_s: u64,
    window_s: u64,
}

const COUNT_TABLE: &str = "bench_count";

impl IdleRun {
    fn start(args: &Args) -> Result<IdleRun> {
        let hosts: usize = args.num("idle-hosts", 5)?;
        let warmup_s = args.num("warmup-s", 60)?;
        let window_s = args.num("count-s", 300)?;
        let work = WorkDir::new("idle", args.keep())?;
        let lab = Lab::up("bench_idle", hosts)?;
        // Two counters per bridge port, on ingress, so each datagram a host
        // sends is counted once whatever the number of receivers: pigeon
        // datagrams (to the group port or a unicast port), then everything
        // (ARP, IGMP reports too).
        let rules: String = (1..=hosts)
            .map(|i| {
                format!(
                    "iifname \"p{i}\" udp dport {{ {PIGEON_PORT}, {GROUP_PORT} }} counter\n\
                     iifname \"p{i}\" counter\n"
                )
            })
            .collect();
        lab.bridge_nft(&format!(
            "table bridge {COUNT_TABLE} {{\nchain pre {{ type filter hook prerouting priority 0; policy accept;\n{rules}}}\n}}\n"
        ))?;
        let trees: Vec<Tree> = (1..=hosts)
            .map(|h| Tree::new(&work.path, h))
            .collect::<Result<_>>()?;
        let started = Instant::now();
        let pigeons = trees
            .iter()
            .map(|t| t.start_pigeon(&lab))
            .collect::<Result<Vec<_>>>()?;
        eprintln!(
            "lab-bench: idle: {hosts} pigeons started; counting from {warmup_s} s to {} s",
            warmup_s + window_s
        );
        Ok(IdleRun {
            lab,
            _work: work,
            trees,
            pigeons,
            started,
            warmup_s,
            window_s,
        })
    }

    /// (packets, bytes) per port: pigeon datagrams, then all packets.
    fn counters(&self) -> Result<Vec<(u64, u64)>> {
        let text = self
            .lab
            .bridge_nft(&format!("list table bridge {COUNT_TABLE}\n"))?;
        let mut v = Vec::new();
        for l in text.lines().filter(|l| l.contains("counter packets")) {
            let f: Vec<&str> = l.split_whitespace().collect();
            let num = |k: &str| -> Option<u64> {
                let i = f.iter().position(|x| *x == k)?;
                f.get(i + 1)?.parse().ok()
            };
            v.push((num("packets").unwrap_or(0), num("bytes").unwrap_or(0)));
        }
        ensure!(
            v.len() == 2 * self.trees.len(),
            "expected {} counters, got: {text}",
            2 * self.trees.len()
        );
        Ok(v)
    }

    fn finish(mut self) -> Result<IdleResult> {
        sleep_until(self.started + Duration::from_secs(self.warmup_s));
        let c0 = self.counters()?;
        let w0 = Instant::now();
        eprintln!("lab-bench: idle: counting for {} s", self.window_s);
        sleep_until(w0 + Duration::from_secs(self.window_s));
        let c1 = self.counters()?;
        let window = w0.elapsed().as_secs_f64();
        for p in &mut self.pigeons {
            ensure!(p.running(), "{} exited while idle", p.what);
        }
        let run_s = self.started.elapsed().as_secs_f64();
        stop(&mut self.pigeons);
        let per_min = |a: u64, b: u64| (b - a) as f64 / window * 60.0;
        let logged = self
            .trees
            .iter()
            .map(|t| logged_count(&t.log_text(), "sent="))
            .collect();
        let r = IdleResult {
            date: date(),
            hosts: self.trees.len(),
            warmup_s: self.warmup_s,
            window_s: window,
            sent_per_min: c0
                .iter()
                .zip(&c1)
                .step_by(2)
                .map(|(a, b)| per_min(a.0, b.0))
                .collect(),
            bytes_per_min: c0
                .iter()
                .zip(&c1)
                .step_by(2)
                .map(|(a, b)| per_min(a.1, b.1))
                .collect(),
            all_packets_per_min: c0
                .iter()
                .zip(&c1)
                .skip(1)
                .step_by(2)
                .map(|(a, b)| per_min(a.0, b.0))
                .collect(),
            sent_total_logged: logged,
            run_s,
        };
        eprintln!(
            "lab-bench: idle: datagrams per pigeon per minute: {:?}",
            r.sent_per_min
        );
        Ok(r)
    }
}

// ===================================================================== summary

/// Criterion's estimate (ns) of one benchmark, the one it prints: the
/// slope of its linear sampling when there is one, else the mean.
fn criterion_ns(group: &str, bench: &str) -> Option<f64> {
    let path = Path::new(ROOT)
        .join("target/criterion")
        .join(group)
        .join(bench)
        .join("new/estimates.json");
    let v: serde_json::Value = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
    v["slope"]["point_estimate"]
        .as_f64()
        .or_else(|| v["mean"]["point_estimate"].as_f64())
}

fn summary(args: &Args) -> Result<()> {
    println!("## Pure parts (criterion, `cargo bench --bench pure`)\n");
    println!("| benchmark | time | per second |\n|---|---|---|");
    let benches = [
        ("envelope", "seal"),
        ("envelope", "parse_verify"),
        ("envelope", "parse_only"),
        ("envelope", "raw_verify_strict"),
        ("envelope", "raw_sign"),
        ("payload", "validate_report"),
        ("node", "handle_datagram_data"),
        ("peer_list", "load_1000"),
        ("peer_list", "node_new_1000"),
        ("peer_list", "load_and_node_new_1000"),
        ("peer_list", "load_10000"),
        ("peer_list", "node_new_10000"),
        ("peer_list", "load_and_node_new_10000"),
    ];
    let mut est = BTreeMap::new();
    for (g, b) in benches {
        if let Some(mean) = criterion_ns(g, b) {
            est.insert(b, mean);
            let t = if mean >= 1e6 {
                format!("{:.2} ms", mean / 1e6)
            } else {
                format!("{:.2} µs", mean / 1e3)
            };
            println!("| {g}/{b} | {t} | {:.0} |", 1e9 / mean);
        }
    }
    if let (Some(w), Some(r)) = (est.get("parse_verify"), est.get("raw_verify_strict")) {
        println!(
            "\nverify ratio (envelope decode+verify per second / raw verify_strict per second): {:.3}",
            r / w
        );
    }
    if let Some(v) = load::<serde_json::Value>(args, "verify_ratio")? {
        println!(
            "interleaved (alternating rounds, same process): decode+verify {} µs, raw verify_strict {} µs, ratio {} ({} byte datagram, {} signed bytes)",
            v["decode_verify_us"],
            v["raw_verify_strict_us"],
            v["ratio"],
            v["datagram_bytes"],
            v["signed_bytes"]
        );
    }
    if let Some(l) = load::<LatencyResult>(args, "latency")? {
        println!("\n## Latency ({}, load before {})\n", l.date, l.load_before);
        println!(
            "| path | n | lost | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|---|"
        );
        for (name, d, lost) in [
            (
                format!("pigeon, directed, 1 per {} ms", l.pace_directed_ms),
                &l.directed,
                l.lost_directed,
            ),
            (
                format!("pigeon, broadcast, 1 per {} ms", l.pace_broadcast_ms),
                &l.broadcast,
                l.lost_broadcast,
            ),
            ("floor".to_owned(), &l.floor, l.lost_floor),
        ] {
            println!(
                "| {name} | {} | {lost} | {:.3} | {:.3} | {:.3} | {:.3} |",
                d.n, d.p50, d.p90, d.p99, d.max
            );
        }
        println!(
            "\nratio to floor: directed p50 {:.2}x p99 {:.2}x; broadcast p50 {:.2}x p99 {:.2}x",
            l.directed.p50 / l.floor.p50,
            l.directed.p99 / l.floor.p99,
            l.broadcast.p50 / l.floor.p50,
            l.broadcast.p99 / l.floor.p99
        );
    }
    if let Some(f) = load::<FanoutResult>(args, "fanout")? {
        println!("\n## Fan-out ({}, load before {})\n", f.date, f.load_before);
        println!(
            "| N | requests | incomplete | all answers p50 ms | p90 ms | p99 ms | max ms | first answer p50 ms | CPU ms per request |\n|---|---|---|---|---|---|---|---|---|"
        );
        for r in &f.rounds {
            println!(
                "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} |",
                r.n,
                r.requests,
                r.incomplete,
                r.all.p50,
                r.all.p90,
                r.all.p99,
                r.all.max,
                r.first.p50,
                r.cpu_ms_per_request
            );
        }
    }
    if let Some(c) = load::<ConvergeResult>(args, "converge")? {
        println!(
            "\n## Convergence ({}, load before {})\n",
            c.date, c.load_before
        );
        println!(
            "| N | converged | all converged after ms | median pigeon ms | start spread ms | pigeons' CPU s / wall s | machine busy | datagrams received per pigeon |\n|---|---|---|---|---|---|---|---|"
        );
        for r in &c.rounds {
            println!(
                "| {} | {}/{} | {:.0} | {:.0} | {:.1} | {:.1} / {:.1} | {:.0} % | {:.0} |",
                r.n,
                r.converged,
                r.n,
                r.per_pigeon.max,
                r.per_pigeon.p50,
                r.start_spread_ms,
                r.pigeon_cpu_s,
                r.wall_s,
                r.machine_busy_pct,
                r.datagrams_received_mean
            );
        }
    }
    if let Some(r) = load::<RssResult>(args, "rss")? {
        println!(
            "\n## Memory and idle CPU ({}, load before {})\n",
            r.date, r.load_before
        );
        println!(
            "| pigeon | VmRSS MB | of which anonymous MB | VmHWM MB | CPU % idle | start to multiaddress ms |\n|---|---|---|---|---|---|"
        );
        for s in &r.pigeons {
            println!(
                "| {} | {:.1} | {:.1} | {:.1} | {:.3} ({} ticks / {:.0} s) | {} |",
                s.label,
                s.rss_kb as f64 / 1024.0,
                s.rss_anon_kb as f64 / 1024.0,
                s.hwm_kb as f64 / 1024.0,
                s.cpu_pct,
                s.cpu_ticks,
                s.idle_s,
                s.start_to_multiaddr_ms
                    .map_or("-".to_owned(), |m| format!("{m:.0}"))
            );
        }
    }
    if let Some(i) = load::<IdleResult>(args, "idle")? {
        println!("\n## Idle traffic ({})\n", i.date);
        println!(
            "{} pigeons, counted from {} s for {:.0} s: pigeon datagrams sent per pigeon per minute {:?}, their bytes per minute {:?}, all packets per minute {:?}; pigeons' own totals over {:.0} s: {:?}",
            i.hosts,
            i.warmup_s,
            i.window_s,
            i.sent_per_min
                .iter()
                .map(|x| (x * 100.0).round() / 100.0)
                .collect::<Vec<_>>(),
            i.bytes_per_min
                .iter()
                .map(|x| x.round())
                .collect::<Vec<_>>(),
            i.all_packets_per_min
                .iter()
                .map(|x| (x * 100.0).round() / 100.0)
                .collect::<Vec<_>>(),
            i.run_s,
            i.sent_total_logged
        );
    }
    Ok(())
}

// ===================================================================== plots

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn register_font() -> Result<()> {
    let bytes = fs::read(FONT).with_context(|| {
        format!("{FONT} (Debian package fonts-dejavu-core) is needed for the plots' text")
    })?;
    plotters::style::register_font(
        "sans-serif",
        plotters::style::FontStyle::Normal,
        Box::leak(bytes.into_boxed_slice()),
    )
    .map_err(|_| anyhow!("{FONT}: not a usable font"))
}

fn plot(args: &Args) -> Result<()> {
    register_font()?;
    let dir = args
        .opts
        .get("plots")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(ROOT).join("docs/plots"));
    fs::create_dir_all(&dir)?;
    if let Some(l) = load::<LatencyResult>(args, "latency")? {
        plot_latency(&dir.join("latency_cdf.png"), &l)?;
    }
    if let Some(f) = load::<FanoutResult>(args, "fanout")? {
        plot_lines(
            &dir.join("fanout.png"),
            "Query fan-out: request to N responders until all N answers are in",
            "responders N",
            "ms",
            &[
                (
                    "all answers, p99",
                    f.rounds.iter().map(|r| (r.n as f64, r.all.p99)).collect(),
                ),
                (
                    "all answers, p50",
                    f.rounds.iter().map(|r| (r.n as f64, r.all.p50)).collect(),
                ),
                (
                    "first answer, p50",
                    f.rounds.iter().map(|r| (r.n as f64, r.first.p50)).collect(),
                ),
            ],
            Some(("goal: p99 <= 50 ms at N = 50", 50.0)),
        )?;
    }
    if let Some(c) = load::<ConvergeResult>(args, "converge")? {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let cpu_label = format!("CPU time of all pigeons / {cores} cores");
        plot_lines(
            &dir.join("convergence.png"),
            "Discovery: N pigeons started together, until every Slips knows all",
            "pigeons N",
            "seconds",
            &[
                (
                    "last pigeon",
                    c.rounds
                        .iter()
                        .map(|r| (r.n as f64, r.per_pigeon.max / 1000.0))
                        .collect(),
                ),
                (
                    "median pigeon",
                    c.rounds
                        .iter()
                        .map(|r| (r.n as f64, r.per_pigeon.p50 / 1000.0))
                        .collect(),
                ),
                (
                    &cpu_label,
                    c.rounds
                        .iter()
                        .map(|r| (r.n as f64, r.pigeon_cpu_s / cores))
                        .collect(),
                ),
            ],
            Some(("goal: <= 3 s at N = 100", 3.0)),
        )?;
    }
    eprintln!("lab-bench: plots in {}", dir.display());
    Ok(())
}

const COLORS: [plotters::style::RGBColor; 4] = [
    plotters::style::RGBColor(0x1f, 0x77, 0xb4),
    plotters::style::RGBColor(0xd6, 0x27, 0x28),
    plotters::style::RGBColor(0x2c, 0xa0, 0x2c),
    plotters::style::RGBColor(0x7f, 0x7f, 0x7f),
];

fn plot_latency(path: &Path, l: &LatencyResult) -> Result<()> {
    use plotters::prelude::*;
    let series = [
        ("pigeon, directed (answer to one peer)", &l.samples_directed),
        ("pigeon, broadcast (to every peer)", &l.samples_broadcast),
        ("floor: Redis hop + UDP + Redis hop", &l.samples_floor),
    ];
    let mut xmax: f64 = 0.0;
    for (_, s) in &series {
        let mut v = s.to_vec();
        v.sort_by(f64::total_cmp);
        xmax = xmax.max(pct(&v, 0.999));
    }
    let xmax = (xmax * 1.1).max(0.1);
    let root = BitMapBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Slips publish on host A -> go_data at host B's Slips ({} messages each)",
                l.count
            ),
            ("sans-serif", 22),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..xmax, 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms); x axis cut at the largest p99.9")
        .y_desc("fraction of messages")
        .label_style(("sans-serif", 16))
        .draw()?;
    for (i, (name, s)) in series.iter().enumerate() {
        let mut v = s.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        let color = COLORS[i];
        chart
            .draw_series(LineSeries::new(
                v.iter()
                    .enumerate()
                    .map(|(k, x)| (x.min(xmax), (k + 1) as f64 / n)),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

type Series = Vec<(f64, f64)>;

fn plot_lines(
    path: &Path,
    title: &str,
    xdesc: &str,
    ydesc: &str,
    series: &[(&str, Series)],
    goal: Option<(&str, f64)>,
) -> Result<()> {
    use plotters::prelude::*;
    let xs = series.iter().flat_map(|s| s.1.iter().map(|p| p.0));
    let xmax = xs.fold(1.0f64, f64::max) * 1.1;
    let ys = series.iter().flat_map(|s| s.1.iter().map(|p| p.1));
    let ymax = ys
        .filter(|y| y.is_finite())
        .fold(goal.map_or(1.0, |g| g.1), f64::max)
        * 1.15;
    let root = BitMapBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc(xdesc)
        .y_desc(ydesc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style(("sans-serif", 16))
        .draw()?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                pts.iter().copied().filter(|p| p.1.is_finite()),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
            });
        chart.draw_series(
            pts.iter()
                .copied()
                .filter(|p| p.1.is_finite())
                .map(|p| Circle::new(p, 4, color.filled())),
        )?;
    }
    if let Some((label, y)) = goal {
        let style = BLACK.stroke_width(2);
        chart
            .draw_series(DashedLineSeries::new([(0.0, y), (xmax, y)], 12, 8, style))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}
