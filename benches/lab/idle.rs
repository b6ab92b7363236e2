//! `idle` (with `rss`): memory and CPU of an idle pigeon that knows 1000
//! peers, and the datagrams per minute of idle pigeons (nft counters on
//! the lab bridge).

use crate::args::Args;
use crate::common::{
    PIGEON_PORT, WorkDir, clk_tck, date, loadavg, peer_id, proc_status_kb, proc_ticks, sleep_until,
    start_pigeon, stop, tree,
};
use anyhow::{Result, ensure};
use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use serde::{Deserialize, Serialize};
use std::fs;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::lab::{Lab, LabChild, SlipsTree};
use testkit::wait::{now_ns, stopped_count};

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ProcSample {
    pub(crate) label: String,
    pub(crate) stored_peers: usize,
    pub(crate) rss_kb: u64,
    /// Anonymous part of the RSS (heap, stacks): what pigeon itself uses,
    /// without the mapped binary and libraries.
    pub(crate) rss_anon_kb: u64,
    pub(crate) hwm_kb: u64,
    pub(crate) cpu_ticks: u64,
    pub(crate) idle_s: f64,
    pub(crate) cpu_pct: f64,
    pub(crate) start_to_multiaddr_ms: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RssResult {
    pub(crate) date: String,
    pub(crate) load_before: String,
    pub(crate) clk_tck: u64,
    pub(crate) pigeons: Vec<ProcSample>,
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

pub(crate) fn rss(args: &Args) -> Result<RssResult> {
    let peers: usize = args.num("peers", 1000)?;
    let idle_s: u64 = args.num("idle-s", 60)?;
    let load_before = loadavg();
    let work = WorkDir::new("rss", args.keep())?;
    let lab = Lab::up(3);
    let sizes = [peers, 0, 10_000];
    let mut trees = Vec::new();
    for (i, n) in sizes.iter().enumerate() {
        let t = tree(&work, i + 1)?;
        if *n > 0 {
            fs::write(t.runtime_dir().join("peers.json"), peer_file(*n)?)?;
        }
        trees.push(t);
    }
    let mut pigeons = Vec::new();
    let mut started = Vec::new();
    for (t, h) in trees.iter().zip(1..) {
        started.push(now_ns());
        pigeons.push(start_pigeon(&lab, t, h)?);
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
        ensure!(p.is_running(), "{} exited during the idle period", p.what());
        let pid = p.pid();
        let ticks = proc_ticks(pid)? - t0[i];
        let secs = w0.elapsed().as_secs_f64();
        let loaded = log_time_ns(&trees[i].read_log(), "Your Multiaddress Is");
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
pub(crate) struct IdleResult {
    pub(crate) date: String,
    pub(crate) hosts: usize,
    pub(crate) warmup_s: u64,
    pub(crate) window_s: f64,
    /// Datagrams each pigeon sent into the bridge during the window, per
    /// minute.
    pub(crate) sent_per_min: Vec<f64>,
    /// Bytes of those datagrams (Ethernet frames), per minute.
    pub(crate) bytes_per_min: Vec<f64>,
    /// Every packet each host sent into the bridge (ARP, IGMP too), per
    /// minute.
    pub(crate) all_packets_per_min: Vec<f64>,
    /// The pigeons' own count (`stopped … sent=N`) over their whole run.
    pub(crate) sent_total_logged: Vec<Option<u64>>,
    pub(crate) run_s: f64,
}

/// Idle pigeons on a lab of their own, counted by nft on the bridge.
pub(crate) struct IdleRun {
    // Dropped in this order: processes, then the lab, then the files.
    pub(crate) pigeons: Vec<LabChild>,
    pub(crate) trees: Vec<SlipsTree>,
    pub(crate) lab: Lab,
    pub(crate) _work: WorkDir,
    pub(crate) started: Instant,
    pub(crate) warmup_s: u64,
    pub(crate) window_s: u64,
}

const COUNT_TABLE: &str = "bench_count";

impl IdleRun {
    pub(crate) fn start(args: &Args) -> Result<IdleRun> {
        let hosts: usize = args.num("idle-hosts", 5)?;
        let warmup_s = args.num("warmup-s", 60)?;
        let window_s = args.num("count-s", 300)?;
        let work = WorkDir::new("idle", args.keep())?;
        let lab = Lab::up(hosts);
        let group_port = testkit::rogue::GROUP.port();
        // Two counters per bridge port, on ingress, so each datagram a host
        // sends is counted once whatever the number of receivers: pigeon
        // datagrams (to the group port or a unicast port), then everything
        // (ARP, IGMP reports too).
        let rules: String = (1..=hosts)
            .map(|i| {
                format!(
                    "iifname \"p{i}\" udp dport {{ {PIGEON_PORT}, {group_port} }} counter\n\
                     iifname \"p{i}\" counter\n"
                )
            })
            .collect();
        lab.bridge_nft(&format!(
            "table bridge {COUNT_TABLE} {{\nchain pre {{ type filter hook prerouting priority 0; policy accept;\n{rules}}}\n}}\n"
        ));
        let trees = (1..=hosts)
            .map(|h| tree(&work, h))
            .collect::<Result<Vec<_>>>()?;
        let started = Instant::now();
        let pigeons = (1..=hosts)
            .map(|h| start_pigeon(&lab, &trees[h - 1], h))
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
            .bridge_nft(&format!("list table bridge {COUNT_TABLE}\n"));
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

    pub(crate) fn finish(mut self) -> Result<IdleResult> {
        sleep_until(self.started + Duration::from_secs(self.warmup_s));
        let c0 = self.counters()?;
        let w0 = Instant::now();
        eprintln!("lab-bench: idle: counting for {} s", self.window_s);
        sleep_until(w0 + Duration::from_secs(self.window_s));
        let c1 = self.counters()?;
        let window = w0.elapsed().as_secs_f64();
        for p in &mut self.pigeons {
            ensure!(p.is_running(), "{} exited while idle", p.what());
        }
        let run_s = self.started.elapsed().as_secs_f64();
        stop(&mut self.pigeons);
        let per_min = |a: u64, b: u64| (b - a) as f64 / window * 60.0;
        let logged = self
            .trees
            .iter()
            .map(|t| stopped_count(&t.read_log(), "sent="))
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
