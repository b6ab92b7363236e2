//! `summary`: Markdown tables of every result and of criterion's
//! estimates of the pure benches.

use crate::args::Args;
use crate::common::{ROOT, load};
use crate::converge::ConvergeResult;
use crate::fanout::FanoutResult;
use crate::idle::{IdleResult, RssResult};
use crate::latency::LatencyResult;
use anyhow::Result;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

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

pub(crate) fn run(args: &Args) -> Result<()> {
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
            "| N | requests, gap ms | incomplete | all answers p50 ms | p90 ms | p99 ms | max ms | first answer p50 ms | CPU ms per request |\n|---|---|---|---|---|---|---|---|---|"
        );
        for r in &f.rounds {
            println!(
                "| {} | {}, {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} |",
                r.n,
                r.requests,
                r.gap_ms,
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
            "| N | all proven | all proven after ms | median pigeon ms | Slips knew all | after ms | median Slips ms | budget floor ms | start spread ms | pigeons' CPU s / wall s | machine busy | datagrams received per pigeon |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for r in &c.rounds {
            println!(
                "| {} | {}/{} | {:.0} | {:.0} | {}/{} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} / {:.1} | {:.0} % | {:.0} |",
                r.n,
                r.proven,
                r.n,
                r.proven_per_pigeon.max,
                r.proven_per_pigeon.p50,
                r.converged,
                r.n,
                r.per_pigeon.max,
                r.per_pigeon.p50,
                r.budget_floor_ms,
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
