//! `latency`: Slips publishes on host A, its go_data reaches host B's
//! Slips; next to a floor (Redis hop + one UDP datagram + Redis hop).

use crate::args::Args;
use crate::common::{
    Dist, WorkDir, date, loadavg, peer_id, spawn_worker, start_pigeon, stop, tree, wait_exit,
    wait_files, wait_for,
};
use crate::workers::FLOOR_PORT;
use anyhow::{Context as _, Result, ensure};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::time::Duration;
use testkit::lab::Lab;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LatencyResult {
    pub(crate) date: String,
    pub(crate) load_before: String,
    pub(crate) count: u32,
    pub(crate) pace_directed_ms: f64,
    pub(crate) pace_broadcast_ms: f64,
    pub(crate) directed: Dist,
    pub(crate) broadcast: Dist,
    pub(crate) floor: Dist,
    pub(crate) lost_directed: usize,
    pub(crate) lost_broadcast: usize,
    pub(crate) lost_floor: usize,
    pub(crate) samples_directed: Vec<f64>,
    pub(crate) samples_broadcast: Vec<f64>,
    pub(crate) samples_floor: Vec<f64>,
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

/// Messages per phase: 300 at the pace below is ~35 s a phase.
const COUNT: u32 = 300;
/// One message every 110 ms (~9/s) in both phases: below the budget of
/// 10 `go_data` per second per peer toward Slips (PROTOCOL.md §6.1), so the
/// receiver's bucket never empties and nothing is dropped as `slips_rate`
/// whatever the count.
const PACE_MS: f64 = 110.0;

pub(crate) fn run(args: &Args) -> Result<LatencyResult> {
    let count: u32 = args.num("count", COUNT)?;
    let pace_d: f64 = args.num("pace-directed-ms", PACE_MS)?;
    let pace_b: f64 = args.num("pace-broadcast-ms", PACE_MS)?;
    let load_before = loadavg();
    let work = WorkDir::new("latency", args.keep())?;
    let lab = Lab::up(2);
    let trees = [tree(&work, 1)?, tree(&work, 2)?];
    let mut pigeons = vec![
        start_pigeon(&lab, &trees[0], 1)?,
        start_pigeon(&lab, &trees[1], 2)?,
    ];
    let id_b = peer_id(&lab, 2)?;
    peer_id(&lab, 1)?;
    wait_for(
        "the two pigeons to find each other",
        Duration::from_secs(15),
        || Ok(trees.iter().all(|t| t.read_log().contains("peer active"))),
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
                format!("{}:{FLOOR_PORT}", lab.host_ip(2)),
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
        let st = wait_exit(&mut send, Duration::from_secs(secs))?;
        ensure!(
            st.success(),
            "the sender failed ({st}); see {}",
            work.path.display()
        );
        // Whatever has not arrived 3 s after the last send is lost.
        let _ = recv.wait_timeout(Duration::from_secs(3));
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
