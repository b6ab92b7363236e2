//! The Prometheus endpoint, off unless `metrics.listen` is set.
//!
//! Every scrape asks the select loop for a [`StatusReport`] (the same
//! snapshot `pigeon status` shows) and encodes it with `prometheus-client`
//! as OpenMetrics text: the node's counters stay the one source of truth,
//! nothing is counted twice. Names follow the Prometheus conventions
//! (<https://prometheus.io/docs/practices/naming/>): one prefix `pigeon_`,
//! base units (seconds), `_total` on counters, `_info` for build metadata,
//! and no per-peer labels (label values are bounded sets: kinds, reasons,
//! states).
//!
//! The HTTP side is a minimal HTTP/1.1 responder: `GET /metrics` only, one
//! request per connection, request head at most 8 KiB, every connection
//! bounded in time, at most [`MAX_CLIENTS`] at once.

use crate::core::stats::DropReason;
use crate::io::control::{ReportRequest, fetch_report};
use crate::io::redis_bridge::BridgeProbe;
use crate::status::StatusReport;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

/// Connections served at once.
pub const MAX_CLIENTS: usize = 4;
/// Time a scraper gets to send its request and read the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request head accepted.
const MAX_HEAD: usize = 8 * 1024;
/// The OpenMetrics text media type (OpenMetrics 1.0 §"Overall structure").
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The report as a `prometheus-client` collector.
#[derive(Debug)]
struct Snapshot(StatusReport);

type Enc<'a> = DescriptorEncoder<'a>;

fn counter(e: &mut Enc<'_>, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
    let m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

fn gauge(e: &mut Enc<'_>, name: &str, help: &str, v: i64) -> Result<(), std::fmt::Error> {
    let m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}

fn counters_by<'a>(
    e: &mut Enc<'_>,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in values {
        let labels = [(label, value)];
        ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let r = &self.0;
        let h = &r.health;
        let c = &r.node.counters;
        let e = &mut e;

        let m = e.encode_descriptor("build", "pigeon's version.", None, MetricType::Info)?;
        prometheus_client::metrics::info::Info::new([("version", r.pigeon_version.as_str())])
            .encode(m)?;
        let m = e.encode_descriptor(
            "start_time",
            "When this pigeon started, Unix time.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        ConstGauge::new(r.node.started_ms as f64 / 1000.0).encode(m)?;

        // Datagrams.
        let accepted = c.datagrams_accepted;
        counters_by(
            e,
            "datagrams_received",
            "Datagrams received: accepted (signature verified, fresh, acted upon) or rejected before that (see pigeon_drops_total).",
            "result",
            [
                ("accepted", accepted),
                ("rejected", c.datagrams_in.saturating_sub(accepted)),
            ],
        )?;
        counters_by(
            e,
            "datagrams_accepted",
            "Accepted datagrams by kind.",
            "kind",
            c.accepted_by_kind.iter().map(|(k, v)| (k.as_str(), *v)),
        )?;
        counters_by(
            e,
            "datagrams_sent",
            "Datagrams sent by kind.",
            "kind",
            c.sent_by_kind.iter().map(|(k, v)| (k.as_str(), *v)),
        )?;
        counters_by(
            e,
            "drops",
            "Inputs dropped, by reason (own, duplicate and not_for_us are routine).",
            "reason",
            DropReason::ALL.iter().map(|r| {
                let name = r.as_str();
                (name, c.dropped.get(name).copied().unwrap_or(0))
            }),
        )?;
        counter(
            e,
            "retransmissions",
            "Broadcast copies and directed retransmissions sent.",
            c.retransmissions,
        )?;
        counter(
            e,
            "repairs",
            "Broadcasts resent because a peer asked (nack).",
            c.repairs,
        )?;
        counter(
            e,
            "directed_expired",
            "Directed messages given up on (not acknowledged in time).",
            c.directed_expired,
        )?;
        counter(e, "bans", "Keys banned for repeated misbehaviour.", c.bans)?;

        // Slips.
        let f = &h.from_slips;
        counters_by(
            e,
            "slips_messages_received",
            "Messages from Slips, by what became of them.",
            "result",
            [
                ("broadcast", f.broadcast),
                ("directed", f.directed),
                ("invalid", f.invalid),
                ("other_version", f.other_version),
                ("stop", f.stop),
            ],
        )?;
        counters_by(
            e,
            "slips_messages_queued",
            "Messages for Slips put in the outbox, by type.",
            "type",
            [
                ("go_data", h.to_slips_go_data),
                ("peer_update", h.to_slips_peer_update),
            ],
        )?;
        counter(
            e,
            "slips_messages_delivered",
            "Messages for Slips that reached a subscriber of its channel.",
            h.to_slips_delivered,
        )?;
        counter(
            e,
            "slips_outbox_dropped",
            "Messages for Slips dropped because the outbox was full.",
            h.outbox_dropped,
        )?;
        gauge(
            e,
            "slips_outbox_messages",
            "Messages for Slips waiting in the outbox.",
            count(h.outbox_depth),
        )?;
        gauge(
            e,
            "slips_subscribed",
            "1 if Slips listens on its channel (PUBSUB NUMSUB > 0), else 0.",
            i64::from(h.slips_subscribed()),
        )?;
        gauge(
            e,
            "redis_connected",
            "1 if Redis answers and pigeon is subscribed, else 0.",
            i64::from(h.redis_connected),
        )?;
        counter(
            e,
            "redis_reconnects",
            "Times the Redis connection came back after being lost.",
            h.redis_reconnects,
        )?;

        // Peers.
        let mut m =
            e.encode_descriptor("peers", "Known peers by state.", None, MetricType::Gauge)?;
        for state in ["active", "inactive", "banned"] {
            let n = r.node.peers.iter().filter(|p| p.state == state).count();
            ConstGauge::new(count(n)).encode(m.encode_family(&[("state", state)])?)?;
        }
        gauge(
            e,
            "directed_pending_messages",
            "Directed messages waiting for their acknowledgement.",
            count(r.node.pending_directed),
        )?;

        // Delivery time: a directed message first sent → its ack.
        let d = &c.ack_delay;
        let mut m = e.encode_descriptor(
            "directed_delivery",
            "Time from the first transmission of a directed Slips message to its acknowledgement by the peer.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        let buckets: Vec<(f64, u64)> = d
            .bounds_ms
            .iter()
            .map(|b| *b as f64 / 1000.0)
            .chain(std::iter::once(f64::INFINITY))
            .zip(d.counts.iter().copied())
            .collect();
        m.encode_histogram::<NoLabelSet>(d.sum_ms as f64 / 1000.0, d.count, &buckets, None)?;
        Ok(())
    }
}

/// The OpenMetrics text of `report`.
pub fn encode(report: StatusReport) -> String {
    let mut registry = Registry::with_prefix("pigeon");
    registry.register_collector(Box::new(Snapshot(report)));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// Serves `GET /metrics` on `listener` until the task is aborted.
pub fn spawn(
    listener: TcpListener,
    requests: mpsc::Sender<ReportRequest>,
    probe: BridgeProbe,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let limit = Arc::new(Semaphore::new(MAX_CLIENTS));
        loop {
            let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
                return;
            };
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::debug!("metrics accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (requests, probe) = (requests.clone(), probe.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let _ = tokio::time::timeout(IO_TIMEOUT, serve(stream, &requests, &probe)).await;
            });
        }
    })
}

/// Binds the endpoint (a plain TCP listener).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

async fn serve(mut stream: TcpStream, requests: &mpsc::Sender<ReportRequest>, probe: &BridgeProbe) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_HEAD {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            )
            .await;
        }
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or(&[]);
    let mut parts = line.split(|b| *b == b' ');
    let (method, target) = (parts.next().unwrap_or(&[]), parts.next().unwrap_or(&[]));
    if method != b"GET" {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n",
        )
        .await;
    }
    if target != b"/metrics" {
        return respond(&mut stream, "404 Not Found", "text/plain", "see /metrics\n").await;
    }
    match fetch_report(requests, probe).await {
        Some(report) => respond(&mut stream, "200 OK", CONTENT_TYPE, &encode(report)).await,
        None => {
            respond(
                &mut stream,
                "503 Service Unavailable",
                "text/plain",
                "busy\n",
            )
            .await
        }
    }
}

async fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::status::tests::sample;

    #[test]
    fn encoding_follows_prometheus_naming() {
        let text = encode(sample());
        for line in [
            "pigeon_build_info{version=\"0.1.0\"} 1",
            "pigeon_datagrams_received_total{result=\"accepted\"} 0",
            "pigeon_datagrams_sent_total{kind=\"announce\"} 0",
            "pigeon_drops_total{reason=\"bad_signature\"} 0",
            "pigeon_peers{state=\"active\"} 1",
            "pigeon_redis_connected 1",
            "pigeon_slips_subscribed 1",
            "pigeon_slips_messages_delivered_total 3",
            "pigeon_directed_delivery_seconds_bucket{le=\"+Inf\"} 0",
            "pigeon_directed_delivery_seconds_count 0",
            "pigeon_start_time_seconds 1000.0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        // No per-peer label anywhere.
        assert!(!text.contains("12D3KooW"), "{text}");
        // Every sample name carries the prefix.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(l.starts_with("pigeon_"), "{l}");
        }
    }
}
