//! What `pigeon status` shows: the report a running pigeon
//! sends over its control socket, and its text rendering. Pure: the
//! runtime fills a [`StatusReport`], `io::control` carries it as JSON,
//! `io::metrics` turns it into Prometheus metrics, and [`render`] prints it.

use crate::core::status::{PeerStatus, StatusSnapshot};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::net::SocketAddrV4;

/// Version of the report's JSON layout; bumped on incompatible changes.
pub const FORMAT: u32 = 1;

/// Everything a running pigeon tells its operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// [`FORMAT`].
    pub format: u32,
    /// pigeon's own version (Cargo package version).
    pub pigeon_version: String,
    /// Process id of the daemon.
    pub pid: u32,
    /// Links to Redis and Slips, and the local settings.
    pub health: Health,
    /// The protocol's view: us, our counters, every peer.
    pub node: StatusSnapshot,
}

/// The health block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// Redis address as configured (password hidden).
    pub redis: String,
    /// Whether Redis answers and pigeon is subscribed to `channel_pygo`.
    pub redis_connected: bool,
    /// Why the last attempt failed, while not connected.
    pub redis_error: Option<String>,
    /// Times the Redis connection came back.
    pub redis_reconnects: u64,
    /// The channel Slips listens on (`p2p_gopy`).
    pub channel_gopy: String,
    /// Subscribers of `channel_gopy` (`PUBSUB NUMSUB`): Slips is listening
    /// when at least 1. `None` when Redis could not be asked.
    pub slips_subscribers: Option<u64>,
    /// Slips version stamped on messages for Slips.
    pub slips_version: String,
    /// Where it comes from: `file` (Slips' VERSION), `message` (the first
    /// Slips message) or `config` (the fallback, not confirmed by Slips).
    pub slips_version_source: String,
    /// Messages for Slips waiting in the outbox.
    pub outbox_depth: usize,
    /// Most messages the outbox holds.
    pub outbox_capacity: usize,
    /// Messages for Slips dropped because the outbox was full.
    pub outbox_dropped: u64,
    /// Messages for Slips delivered (a subscriber received them).
    pub to_slips_delivered: u64,
    /// Messages for Slips queued, by type.
    pub to_slips_go_data: u64,
    /// See [`Health::to_slips_go_data`].
    pub to_slips_peer_update: u64,
    /// Messages from Slips, by what became of them.
    pub from_slips: FromSlipsCounts,
    /// The multicast group and port.
    pub group: SocketAddrV4,
    /// The Prometheus endpoint, if enabled.
    pub metrics: Option<String>,
}

/// What became of Slips' messages (kept by the runtime).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FromSlipsCounts {
    /// Sent to every peer.
    pub broadcast: u64,
    /// Sent to one peer.
    pub directed: u64,
    /// Not a message pigeon understands (ignored).
    pub invalid: u64,
    /// From another Slips version (ignored).
    pub other_version: u64,
    /// `stop_process`.
    pub stop: u64,
}

impl Health {
    /// Whether Slips is known to be listening on its channel.
    pub fn slips_subscribed(&self) -> bool {
        self.slips_subscribers.is_some_and(|n| n > 0)
    }
}

/// `12s`, `3m 4s`, `5h 6m`, `7d 8h`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn ago(now_ms: u64, then_ms: u64) -> String {
    if then_ms == 0 {
        return "never".to_owned();
    }
    format!("{} ago", duration(now_ms.saturating_sub(then_ms)))
}

/// The human-readable status: a health block, then one row per peer.
pub fn render(r: &StatusReport) -> String {
    let h = &r.health;
    let n = &r.node;
    let c = &n.counters;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "pigeon {} (pid {}), up {}",
        r.pigeon_version,
        r.pid,
        duration(n.now_ms.saturating_sub(n.started_ms))
    );
    let _ = writeln!(o, "  peer id    {}", n.peer_id);
    let _ = writeln!(
        o,
        "  address    {}  network \"{}\"  group {}",
        n.address, n.network, h.group
    );
    let redis = if h.redis_connected {
        format!("connected to {}", h.redis)
    } else {
        format!(
            "NOT CONNECTED to {} ({})",
            h.redis,
            h.redis_error.as_deref().unwrap_or("connecting")
        )
    };
    let _ = writeln!(
        o,
        "  redis      {redis}, {} reconnect(s)",
        h.redis_reconnects
    );
    let listening = match h.slips_subscribers {
        Some(0) => format!("NOT subscribed to {} (messages are held)", h.channel_gopy),
        Some(k) => format!("subscribed to {} ({k} subscriber(s))", h.channel_gopy),
        None => format!("unknown whether subscribed to {}", h.channel_gopy),
    };
    let source = match h.slips_version_source.as_str() {
        "file" => "from Slips' VERSION file",
        "message" => "from Slips' first message",
        _ => "CONFIGURED FALLBACK, not confirmed by Slips",
    };
    let _ = writeln!(
        o,
        "  slips      {listening}; version {} ({source})",
        h.slips_version
    );
    let f = &h.from_slips;
    let _ = writeln!(
        o,
        "  outbox     {} of {} queued, {} dropped; to Slips {} delivered ({} go_data, {} peer_update queued)",
        h.outbox_depth,
        h.outbox_capacity,
        h.outbox_dropped,
        h.to_slips_delivered,
        h.to_slips_go_data,
        h.to_slips_peer_update
    );
    let _ = writeln!(
        o,
        "  from Slips {} broadcast, {} directed, {} invalid, {} other version",
        f.broadcast, f.directed, f.invalid, f.other_version
    );
    let _ = writeln!(
        o,
        "  datagrams  {} in ({} accepted), {} out; {} retransmitted, {} repaired, {} directed expired",
        c.datagrams_in,
        c.datagrams_accepted,
        c.datagrams_out,
        c.retransmissions,
        c.repairs,
        c.directed_expired
    );
    let mut unusual: Vec<String> = c
        .dropped
        .iter()
        .filter(|(r, v)| **v > 0 && !matches!(r.as_str(), "own" | "duplicate" | "not_for_us"))
        .map(|(r, v)| format!("{r}={v}"))
        .collect();
    if unusual.is_empty() {
        unusual.push("none".to_owned());
    }
    let _ = writeln!(
        o,
        "  drops      {} routine (own echoes, duplicates, not for us); other: {}; {} ban(s)",
        c.dropped_routine,
        unusual.join(" "),
        c.bans
    );
    let _ = writeln!(
        o,
        "  metrics    {}",
        h.metrics
            .as_deref()
            .map_or_else(|| "off".to_owned(), |m| format!("http://{m}/metrics"))
    );
    let _ = writeln!(o);
    render_peers(&mut o, n.now_ms, &n.peers);
    o
}

fn render_peers(o: &mut String, now_ms: u64, peers: &[PeerStatus]) {
    let _ = writeln!(
        o,
        "{:<52}  {:<21}  {:<6}  {:<8}  {:>10}  {:>13}  {:>5}  {:>6}  ORGS",
        "PEER ID", "ADDRESS", "PROVEN", "STATE", "LAST SEEN", "IN/OUT", "DROPS", "RELIAB"
    );
    for p in peers {
        let addr = p.address.map_or_else(|| "-".to_owned(), |a| a.to_string());
        let orgs = if p.organisations.is_empty() {
            "-".to_owned()
        } else {
            p.organisations.join(",")
        };
        let _ = writeln!(
            o,
            "{:<52}  {:<21}  {:<6}  {:<8}  {:>10}  {:>13}  {:>5}  {:>6.3}  {orgs}",
            p.peer_id,
            addr,
            if p.address_proven { "yes" } else { "no" },
            p.state,
            ago(now_ms, p.last_seen_ms),
            format!("{}/{}", p.datagrams_in, p.datagrams_out),
            p.drops,
            p.reliability,
        );
    }
    let active = peers.iter().filter(|p| p.state == "active").count();
    let banned = peers.iter().filter(|p| p.state == "banned").count();
    let _ = writeln!(
        o,
        "{} peer(s): {active} active, {} inactive, {banned} banned",
        peers.len(),
        peers.len() - active - banned
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    use crate::core::stats::Stats;
    use crate::core::status::Counters;

    pub(crate) fn sample() -> StatusReport {
        StatusReport {
            format: FORMAT,
            pigeon_version: "0.1.0".into(),
            pid: 42,
            health: Health {
                redis: "localhost:6379".into(),
                redis_connected: true,
                redis_error: None,
                redis_reconnects: 0,
                channel_gopy: "p2p_gopy".into(),
                slips_subscribers: Some(1),
                slips_version: "1.1.21".into(),
                slips_version_source: "file".into(),
                outbox_depth: 0,
                outbox_capacity: 10_000,
                outbox_dropped: 0,
                to_slips_delivered: 3,
                to_slips_go_data: 2,
                to_slips_peer_update: 1,
                from_slips: FromSlipsCounts::default(),
                group: SocketAddrV4::new([239, 255, 112, 103].into(), 47474),
                metrics: None,
            },
            node: StatusSnapshot {
                peer_id: "12D3KooWself".into(),
                address: SocketAddrV4::new([10, 77, 0, 1].into(), 40001),
                network: "slips".into(),
                instance: 7,
                started_ms: 1_000_000,
                now_ms: 1_125_000,
                counters: Counters::from_stats(&Stats::default()),
                pending_directed: 0,
                retained_broadcasts: 0,
                peers: vec![PeerStatus {
                    peer_id: "12D3KooWpeer".into(),
                    address: Some(SocketAddrV4::new([10, 77, 0, 2].into(), 40002)),
                    address_proven: false,
                    state: "active".into(),
                    first_seen_ms: 1_001_000,
                    last_seen_ms: 1_123_000,
                    datagrams_in: 35,
                    datagrams_out: 12,
                    drops: 0,
                    reliability: 0.625,
                    organisations: Vec::new(),
                }],
            },
        }
    }

    #[test]
    fn render_shows_health_and_one_row_per_peer() {
        let text = render(&sample());
        assert!(text.contains("up 2m 5s"), "{text}");
        assert!(text.contains("connected to localhost:6379"), "{text}");
        assert!(text.contains("subscribed to p2p_gopy (1 subscriber(s))"));
        assert!(text.contains("version 1.1.21 (from Slips' VERSION file)"));
        let row = text
            .lines()
            .find(|l| l.starts_with("12D3KooWpeer"))
            .unwrap();
        for cell in [
            "10.77.0.2:40002",
            " no ",
            "active",
            "2s ago",
            "35/12",
            "0.625",
        ] {
            assert!(row.contains(cell), "{cell} missing from {row}");
        }
        assert!(text.contains("1 peer(s): 1 active, 0 inactive, 0 banned"));
    }

    #[test]
    fn render_flags_a_missing_slips_and_redis() {
        let mut r = sample();
        r.health.redis_connected = false;
        r.health.redis_error = Some("unreachable: 127.0.0.1:6379: refused".into());
        r.health.slips_subscribers = None;
        r.health.slips_version_source = "config".into();
        let text = render(&r);
        assert!(text.contains("NOT CONNECTED to localhost:6379 (unreachable"));
        assert!(text.contains("unknown whether subscribed"));
        assert!(text.contains("CONFIGURED FALLBACK"));
        r.health.slips_subscribers = Some(0);
        assert!(render(&r).contains("NOT subscribed to p2p_gopy"));
    }

    #[test]
    fn report_round_trips_through_json() {
        let r = sample();
        let json = serde_json::to_string(&r).unwrap();
        let back: StatusReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }
}
