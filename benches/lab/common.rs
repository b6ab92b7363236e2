//! What every job shares: results on disk, distributions, the benchmark
//! address range, work directories, Slips trees and workers in lab hosts,
//! and the `/proc` figures.

use crate::args::Args;
use anyhow::{Context as _, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::lab::{Lab, LabChild, SlipsTree};
use testkit::wait::poll_until;

/// The pigeon built with this bench (release profile).
pub(crate) const PIGEON: &str = env!("CARGO_BIN_EXE_pigeon");
pub(crate) const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Unicast port of every pigeon (each host is its own namespace).
pub(crate) const PIGEON_PORT: u16 = 4001;
/// Every wait of the orchestrator is bounded by this or less.
pub(crate) const LONG_WAIT: Duration = Duration::from_secs(120);
/// How long a stopped process gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

// ------------------------------------------------------------------ small helpers

pub(crate) fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub(crate) fn date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Polls `f` until it is true or `timeout` passes (then an error naming
/// `what`); an error of `f` ends the wait at once.
pub(crate) fn wait_for(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let outcome = poll_until(timeout, || match f() {
        Ok(true) => Some(Ok(())),
        Ok(false) => None,
        Err(e) => Some(Err(e)),
    });
    match outcome {
        Some(done) => done,
        None => bail!("timed out after {timeout:?} waiting for {what}"),
    }
}

pub(crate) fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Nearest-rank percentile of sorted values.
pub(crate) fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Distribution of a sample, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Dist {
    pub(crate) n: usize,
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
    pub(crate) mean: f64,
}

impl Dist {
    /// An empty sample is all zeros with `n` = 0: JSON has no NaN, and a
    /// result must read back (summary, plot).
    pub(crate) fn of(values: &[f64]) -> Dist {
        if values.is_empty() {
            return Dist::default();
        }
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

pub(crate) fn save<T: Serialize>(args: &Args, name: &str, value: &T) -> Result<()> {
    let dir = args.out_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.json"));
    fs::write(&path, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("lab-bench: wrote {}", path.display());
    Ok(())
}

pub(crate) fn load<T: for<'de> Deserialize<'de>>(args: &Args, name: &str) -> Result<Option<T>> {
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
pub(crate) fn seq_ip(seq: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + seq)
}

pub(crate) fn ip_seq(ip: &str) -> Option<u32> {
    let ip: Ipv4Addr = ip.parse().ok()?;
    let off = u32::from(ip).checked_sub(u32::from(Ipv4Addr::new(198, 18, 0, 0)))?;
    (off < 1 << 17).then_some(off)
}

// ------------------------------------------------------------------ processes and files

/// SIGTERM to every running process (by PID), then SIGKILL to those still
/// running 3 s later; reaps them all.
pub(crate) fn stop(procs: &mut [LabChild]) {
    for p in procs.iter_mut() {
        let _ = p.sigterm();
    }
    let end = Instant::now() + STOP_GRACE;
    for p in procs.iter_mut() {
        if p.wait_timeout(end.saturating_duration_since(Instant::now()))
            .is_none()
        {
            eprintln!("lab-bench: {} ignored SIGTERM, killing it", p.what());
            p.kill_and_wait();
        }
    }
}

/// Waits up to `timeout` for `p` to exit; its exit status.
pub(crate) fn wait_exit(p: &mut LabChild, timeout: Duration) -> Result<std::process::ExitStatus> {
    p.wait_timeout(timeout)
        .with_context(|| format!("timed out after {timeout:?} waiting for {}", p.what()))
}

/// A per-run work directory under /tmp/pigeon-bench, removed when dropped
/// unless --keep.
pub(crate) struct WorkDir {
    pub(crate) path: PathBuf,
    keep: bool,
}

impl WorkDir {
    pub(crate) fn new(name: &str, keep: bool) -> Result<WorkDir> {
        let path = Path::new("/tmp/pigeon-bench").join(name);
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(WorkDir { path, keep })
    }

    pub(crate) fn file(&self, name: &str) -> PathBuf {
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

/// Host `host`'s Slips tree under the work directory, its binary a link
/// to the bench's pigeon.
pub(crate) fn tree(work: &WorkDir, host: usize) -> Result<SlipsTree> {
    SlipsTree::linked_at(work.file(&format!("h{host}")), Path::new(PIGEON))
        .with_context(|| format!("the Slips tree of host {host}"))
}

/// Starts host `host`'s pigeon from `tree` as Slips does, with -port fixed
/// (each host is a namespace of its own).
pub(crate) fn start_pigeon(lab: &Lab, tree: &SlipsTree, host: usize) -> Result<LabChild> {
    tree.spawn_in_lab(lab, host, PIGEON_PORT)
        .with_context(|| format!("starting the pigeon of host {host}"))
}

/// The peer id host I's pigeon wrote to its Redis (`multiAddress`).
pub(crate) fn peer_id(lab: &Lab, host: usize) -> Result<String> {
    let mut id = String::new();
    wait_for(
        &format!("multiAddress in host {host}'s Redis"),
        Duration::from_secs(10),
        || {
            let addr: Option<String> = lab.redis(host, redis::cmd("GET").arg("multiAddress"))?;
            id = addr
                .as_deref()
                .and_then(|a| a.rsplit('/').next())
                .unwrap_or("")
                .to_owned();
            Ok(id.starts_with("12D3KooW"))
        },
    )?;
    Ok(id)
}

pub(crate) fn ready(path: &Path) -> Result<()> {
    File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(())
}

pub(crate) fn wait_files(paths: &[PathBuf], timeout: Duration) -> Result<()> {
    wait_for("workers to subscribe", timeout, || {
        Ok(paths.iter().all(|p| p.exists()))
    })
}

/// This program as the worker `cmd` (to be started in a lab host).
pub(crate) fn worker_command(cmd: &str) -> Result<Command> {
    let exe = std::env::current_exe().context("own executable")?;
    let mut c = Command::new(exe);
    c.arg(cmd);
    Ok(c)
}

/// Starts the worker `cmd args` in lab host `host`, its output in
/// `<work>/<name>.out` and `.err`.
pub(crate) fn spawn_worker(
    lab: &Lab,
    work: &WorkDir,
    host: usize,
    name: &str,
    cmd: &str,
    args: &[String],
) -> Result<LabChild> {
    let mut c = worker_command(cmd)?;
    c.args(args)
        .stdin(Stdio::null())
        .stdout(File::create(work.file(&format!("{name}.out")))?)
        .stderr(File::create(work.file(&format!("{name}.err")))?);
    lab.spawn_command(host, &mut c)
        .with_context(|| format!("starting {name} (host {host})"))
}

// ------------------------------------------------------------------ /proc

pub(crate) fn proc_status_kb(pid: u32, field: &str) -> Result<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// (busy, total) clock ticks of all CPUs since boot (`/proc/stat`).
pub(crate) fn machine_cpu() -> Result<(u64, u64)> {
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
pub(crate) fn proc_ticks(pid: u32) -> Result<u64> {
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

/// utime + stime (clock ticks) of every process now running in the
/// given hosts.
pub(crate) fn cpu_ticks(lab: &Lab, hosts: &[usize]) -> u64 {
    hosts
        .iter()
        .flat_map(|&h| lab.pids(h))
        // A process may have exited meanwhile.
        .map(|pid| proc_ticks(pid).unwrap_or(0))
        .sum()
}

pub(crate) fn clk_tck() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}
