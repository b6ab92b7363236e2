//! Operator subcommands: `pigeon id`, `pigeon peers` and `pigeon status`.

use anyhow::Context as _;
use pigeon::config::Config;
use pigeon::core::reliability::{Reliability, ReliabilityParams};
use pigeon::identity;
use pigeon::peerstore::{self, Loaded};
use std::path::Path;

/// Prints the peer id of a key file (without creating or changing it).
pub(crate) fn print_id(key_file: &Path) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(key_file).with_context(|| format!("cannot read {}", key_file.display()))?;
    let id = identity::Identity::from_protobuf(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a pigeon key: {e}", key_file.display()))?;
    println!("{}", id.peer_id());
    Ok(())
}

/// Prints the saved peer list as a table or JSON.
pub(crate) fn print_peers(file: &Path, json: bool) -> anyhow::Result<()> {
    let list = match peerstore::load_read_only(file)
        .with_context(|| format!("cannot read {}", file.display()))?
    {
        Loaded::Missing => anyhow::bail!("{}: no such peer list", file.display()),
        Loaded::Corrupt { reason, .. } => anyhow::bail!("{}: corrupt: {reason}", file.display()),
        Loaded::Peers(f) => f,
    };
    let defaults = Config::default().reliability;
    let params = ReliabilityParams {
        half_life_ms: defaults.half_life_hours * 3_600_000.0,
        prior: defaults.prior,
        prior_weight: defaults.prior_weight,
    };
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let rows: Vec<serde_json::Value> = list
        .peers
        .iter()
        .map(|p| {
            let r = Reliability::from_sums(p.reliability.into()).value(now_s * 1000, &params);
            serde_json::json!({
                "peer_id": p.peer_id,
                "address": match (p.ip, p.port) {
                    (Some(ip), Some(port)) => format!("{ip}:{port}"),
                    _ => "-".to_owned(),
                },
                "last_seen": p.last_seen,
                "last_seen_ago_s": now_s.saturating_sub(p.last_seen),
                "reliability": (r * 1000.0).round() / 1000.0,
                "organisations": p.organisations,
                "state": if now_s.saturating_sub(list.saved_at) < 120
                    && p.last_seen + 120 >= list.saved_at { "recent" } else { "offline" },
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<54} {:<22} {:>12} {:>11} {:<8} ORGANISATIONS",
        "PEER ID", "LAST ADDRESS", "LAST SEEN", "RELIABILITY", "STATE"
    );
    for (r, p) in rows.iter().zip(&list.peers) {
        println!(
            "{:<54} {:<22} {:>12} {:>11.3} {:<8} {}",
            r["peer_id"].as_str().unwrap_or("-"),
            r["address"].as_str().unwrap_or("-"),
            ago(r["last_seen_ago_s"].as_u64().unwrap_or(0)),
            r["reliability"].as_f64().unwrap_or(0.0),
            r["state"].as_str().unwrap_or("-"),
            if p.organisations.is_empty() {
                "-".to_owned()
            } else {
                p.organisations.join(",")
            },
        );
    }
    println!(
        "{} peer(s), list saved {}",
        rows.len(),
        ago(now_s.saturating_sub(list.saved_at))
    );
    Ok(())
}

fn ago(s: u64) -> String {
    match s {
        0..120 => format!("{s}s ago"),
        120..7200 => format!("{}m ago", s / 60),
        7200..172_800 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// How long `pigeon status` waits for the daemon.
const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Asks the running pigeon (its control socket `socket`, or
/// `socket/pigeon.sock` when `socket` is a directory) for its status.
pub(crate) fn print_status(socket: &Path, json: bool) -> anyhow::Result<()> {
    let path = if socket.is_dir() {
        socket.join("pigeon.sock")
    } else {
        socket.to_owned()
    };
    let report = pigeon::io::control::query(&path, STATUS_TIMEOUT)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", pigeon::status::render(&report));
    }
    Ok(())
}
