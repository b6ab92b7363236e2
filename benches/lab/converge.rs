//! `converge`: N pigeons started together, the time until every pigeon
//! has proven every other's address (challenge and response, PROTOCOL.md
//! §4.1), and, separately, until every Slips knows all the others.
//!
//! Since protocol version 2 the second is bounded by the budget of
//! `peer_update`s toward Slips (PROTOCOL.md §6.1: bursts of 20, then 2 per
//! second in total), so N = 100 takes at least (99 − 20) / 2 ≈ 40 s
//! whatever the discovery does: it is reported next to what the budget
//! implies, and the discovery itself is measured on the pigeons' side.

use crate::args::Args;
use crate::common::{
    Dist, PIGEON_PORT, WorkDir, clk_tck, date, loadavg, machine_cpu, proc_ticks, sleep_until,
    spawn_worker, stop, tree, wait_exit, wait_files, worker_command,
};
use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::time::{Duration, Instant};
use testkit::lab::{LAB_REDIS_PORT, Lab};
use testkit::wait::{now_ns, stopped_count};

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ConvergeRound {
    pub(crate) n: usize,
    pub(crate) converged: usize,
    /// Per pigeon: ms from the common start until its Slips knew all others.
    pub(crate) per_pigeon: Dist,
    /// Pigeons that proved the address of all N−1 others.
    #[serde(default)]
    pub(crate) proven: usize,
    /// Per pigeon: ms from the common start until it had proven all N−1
    /// others (its log's `peer active (address proven)` lines).
    #[serde(default)]
    pub(crate) proven_per_pigeon: Dist,
    /// Peers proven per pigeon by the end of the round: the least and
    /// the mean (N−1 when all proved all).
    #[serde(default)]
    pub(crate) proven_min: usize,
    #[serde(default)]
    pub(crate) proven_mean: f64,
    /// Least time (ms) the `peer_update` budget lets N−1 updates take:
    /// the burst goes at once, the rest at the total rate.
    #[serde(default)]
    pub(crate) budget_floor_ms: f64,
    /// Latest actual start after the planned one (ms): how "together".
    pub(crate) start_spread_ms: f64,
    /// CPU seconds all N pigeons used from the start until every Slips
    /// knew every peer, and the wall time of that span.
    pub(crate) pigeon_cpu_s: f64,
    /// How busy all cores of the machine were meanwhile (every process:
    /// pigeons, their start-up, Redis servers, Slips stand-ins, others').
    pub(crate) machine_busy_pct: f64,
    pub(crate) wall_s: f64,
    /// Datagrams each pigeon received over its run (its own `stopped`
    /// line), on average.
    pub(crate) datagrams_received_mean: f64,
    pub(crate) samples: Vec<f64>,
    #[serde(default)]
    pub(crate) samples_proven: Vec<f64>,
}

/// `peer_update`s toward Slips: burst and total rate per second
/// (PROTOCOL.md §6.1).
const PEER_UPDATE_BURST: f64 = 20.0;
const PEER_UPDATE_PER_S: f64 = 2.0;

/// Nanoseconds since the epoch of a log line's RFC 3339 UTC timestamp
/// (`2026-12-01T22:34:23.283849Z  INFO ...`, tracing's default format).
fn log_time_ns(line: &str) -> Option<u64> {
    let ts = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (secs, frac) = ts.split_once('.').unwrap_or((ts, "0"));
    let s = pigeon::org::time::parse_when(&format!("{secs}Z"), 0).ok()?;
    let digits: String = frac.chars().take(9).collect();
    let ns: u64 = format!("{digits:0<9}").parse().ok()?;
    Some(s * 1_000_000_000 + ns)
}

/// How many distinct peers a pigeon's log shows proven, and when (ns
/// since the epoch) it reached `want` of them, if it did.
fn all_proven_at(log: &str, want: usize) -> (usize, Option<u64>) {
    let mut seen = std::collections::HashSet::new();
    for line in log
        .lines()
        .filter(|l| l.contains("peer active (address proven)"))
    {
        let Some(peer) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("peer="))
        else {
            continue;
        };
        if seen.insert(peer.to_owned()) && seen.len() == want {
            return (want, log_time_ns(line));
        }
    }
    (seen.len(), None)
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ConvergeResult {
    pub(crate) date: String,
    pub(crate) load_before: String,
    pub(crate) rounds: Vec<ConvergeRound>,
}

pub(crate) fn run(args: &Args) -> Result<ConvergeResult> {
    let ns = args.list_or("conv-n", "n", &[10, 25, 50, 100])?;
    let load_before = loadavg();
    let max = ns.iter().copied().max().unwrap_or(2);
    let lab = Lab::up(max);
    let mut rounds = Vec::new();
    for &n in &ns {
        eprintln!("lab-bench: convergence, N = {n}");
        let budget_floor_ms =
            ((n as f64 - 1.0 - PEER_UPDATE_BURST).max(0.0) / PEER_UPDATE_PER_S) * 1000.0;
        // The Slips side waits for the budget, with the same minute to
        // spare as before version 2.
        let watch_s = 60 + (budget_floor_ms / 1000.0).ceil() as u64;
        let work = WorkDir::new(&format!("converge-{n}"), args.keep())?;
        let trees = (1..=n)
            .map(|h| tree(&work, h))
            .collect::<Result<Vec<_>>>()?;
        let mut watchers = Vec::new();
        let mut readies = Vec::new();
        for h in 1..=n {
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
                    watch_s.to_string(),
                ],
            )?);
            readies.push(r);
        }
        wait_files(&readies, Duration::from_secs(60))?;
        // Every launcher is spawned well before the common start.
        let at = now_ns() + 1_500_000_000 + n as u64 * 40_000_000;
        let mut pigeons = Vec::new();
        for (t, h) in trees.iter().zip(1..) {
            let mut cmd = worker_command("w-launch")?;
            cmd.args(["--at", &at.to_string(), "--stamp"])
                .arg(work.file(&format!("start-{h}.txt")))
                .arg("--")
                .arg(t.binary())
                .args(t.argv(lab.host_ip(h), PIGEON_PORT, LAB_REDIS_PORT));
            t.as_slips_runs_it(&mut cmd)?;
            let pigeon = lab
                .spawn_command(h, &mut cmd)
                .with_context(|| format!("starting the pigeon of host {h}"))?;
            pigeons.push(pigeon);
        }
        // The whole machine's CPU from the start until every Slips knew
        // every peer: shows whether the round was CPU-bound.
        let at_instant = Instant::now() + Duration::from_nanos(at.saturating_sub(now_ns()));
        sleep_until(at_instant);
        let cpu0 = machine_cpu()?;
        for w in &mut watchers {
            wait_exit(w, Duration::from_secs(watch_s + 30))?;
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
            .filter_map(|t| stopped_count(&t.read_log(), "received="))
            .map(|x| x as f64)
            .collect();
        let proofs: Vec<(usize, Option<u64>)> = trees
            .iter()
            .map(|t| all_proven_at(&t.read_log(), n - 1))
            .collect();
        let samples_proven: Vec<f64> = proofs
            .iter()
            .filter_map(|p| p.1)
            .map(|ts| ts.saturating_sub(at) as f64 / 1e6)
            .collect();
        let proven_min = proofs.iter().map(|p| p.0).min().unwrap_or(0);
        let proven_mean =
            proofs.iter().map(|p| p.0 as f64).sum::<f64>() / proofs.len().max(1) as f64;
        let mut samples = Vec::new();
        let mut spread: f64 = 0.0;
        for h in 1..=n {
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
            proven: samples_proven.len(),
            proven_min,
            proven_mean,
            proven_per_pigeon: Dist::of(&samples_proven),
            budget_floor_ms,
            samples_proven,
        };
        eprintln!(
            "lab-bench: convergence N = {n}: {}/{n} proved all (least {}, mean {:.1} of {}), last after {:.0} ms (median {:.0} ms); \
             {}/{n} Slips knew all, last after {:.0} ms (median {:.0} ms; budget floor {:.0} ms); starts within {:.1} ms",
            round.proven,
            round.proven_min,
            round.proven_mean,
            n - 1,
            round.proven_per_pigeon.max,
            round.proven_per_pigeon.p50,
            round.converged,
            round.per_pigeon.max,
            round.per_pigeon.p50,
            round.budget_floor_ms,
            round.start_spread_ms
        );
        rounds.push(round);
    }
    Ok(ConvergeResult {
        date: date(),
        load_before,
        rounds,
    })
}
