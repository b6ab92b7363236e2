//! `fanout`: one request to N responders, the time until all N answers
//! are back at the requester's Slips.

use crate::args::Args;
use crate::common::{
    Dist, LONG_WAIT, WorkDir, clk_tck, cpu_ticks, date, loadavg, seq_ip, spawn_worker,
    start_pigeon, stop, tree, wait_exit, wait_files,
};
use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};
use std::fs;
use std::net::Ipv4Addr;
use std::time::Duration;
use testkit::lab::Lab;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct FanoutRound {
    pub(crate) n: usize,
    /// The gap between requests in this round (ms): `--gap-ms`, or longer
    /// so that N answers per request stay under `--answers-per-s`.
    #[serde(default)]
    pub(crate) gap_ms: u64,
    /// CPU time (ms) that the lab's processes (pigeons, Slips stand-ins,
    /// Redis servers) spent per request, copies and digests included: all
    /// N+1 hosts share this machine's cores.
    pub(crate) cpu_ms_per_request: f64,
    pub(crate) requests: usize,
    pub(crate) incomplete: usize,
    pub(crate) all: Dist,
    pub(crate) first: Dist,
    pub(crate) median: Dist,
    pub(crate) samples_all: Vec<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct FanoutResult {
    pub(crate) date: String,
    pub(crate) load_before: String,
    pub(crate) gap_ms: u64,
    pub(crate) rounds: Vec<FanoutRound>,
}

/// Answers per second reaching the asker's Slips: below the total budget
/// of 50 `go_data` per second toward Slips (PROTOCOL.md §6.1; each
/// responder sends one answer per request, far below its own 10/s), so no
/// answer is dropped as `slips_rate` however many requests a round makes.
const ANSWERS_PER_S: u64 = 40;

pub(crate) fn run(args: &Args) -> Result<FanoutResult> {
    let ns = args.list_or("fan-n", "n", &[10, 25, 50])?;
    let requests: u32 = args.num("requests", 100)?;
    let gap: u64 = args.num("gap-ms", 500)?;
    let answers_per_s: u64 = args.num("answers-per-s", ANSWERS_PER_S)?.max(1);
    let load_before = loadavg();
    let max = ns.iter().copied().max().unwrap_or(1);
    let lab = Lab::up(max + 1);
    // The responders' Slips know every address asked about (the warm-up's
    // and the measured ones), so pigeon's request guard lets them through.
    let asked: Vec<String> = (0..250)
        .map(|k| Ipv4Addr::new(198, 19, 255, k).to_string())
        .chain((0..requests).map(|i| seq_ip(i).to_string()))
        .collect();
    for h in 2..=max + 1 {
        lab.seed_slips_cache_with(h, &asked);
    }
    let mut rounds = Vec::new();
    for &n in &ns {
        let gap = gap.max((n as u64 * 1000).div_ceil(answers_per_s));
        eprintln!("lab-bench: fan-out, N = {n}: {requests} requests, {gap} ms apart");
        let work = WorkDir::new(&format!("fanout-{n}"), args.keep())?;
        for h in 1..=n + 1 {
            // A previous round's pigeon left its address there.
            let _: i64 = lab.redis(h, redis::cmd("DEL").arg("multiAddress"))?;
        }
        let trees = (1..=n + 1)
            .map(|h| tree(&work, h))
            .collect::<Result<Vec<_>>>()?;
        let mut pigeons = (1..=n + 1)
            .map(|h| start_pigeon(&lab, &trees[h - 1], h))
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
        let ticks0 = cpu_ticks(&lab, &hosts);
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
        let st = wait_exit(
            &mut req,
            LONG_WAIT + Duration::from_millis(gap * u64::from(requests)),
        )?;
        let ticks = cpu_ticks(&lab, &hosts).saturating_sub(ticks0);
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
            gap_ms: gap,
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
