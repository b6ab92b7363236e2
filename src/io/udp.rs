//! The three UDP sockets of a pigeon.
//!
//! * The **group socket** receives multicast only: it is bound to
//!   `group:group_port` (on Linux the kernel then delivers only datagrams
//!   addressed to the group) with `SO_REUSEADDR` + `SO_REUSEPORT`, so several
//!   pigeons can share a host, and joins the group on the `-host` interface.
//! * The **unicast socket** is bound to `host:port` (Slips' `-port`). It
//!   receives directed messages and sends everything: multicast leaves
//!   through the `-host` interface (`IP_MULTICAST_IF`) with TTL 1, so it
//!   never leaves the link, and loops back to other pigeons on this host.
//! * The **probe socket** (any port) sends challenges and acks to
//!   addresses that have not proven they receive, and gets their replies:
//!   datagrams to forged, unreachable sources wait in the kernel's
//!   neighbour queue and fill this socket's send buffer, never the one
//!   peers are served from.

use crate::wire::MAX_DATAGRAM;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use tokio::net::UdpSocket;

/// Errors setting up the sockets.
#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    /// A socket call failed.
    #[error("{what}: {source}")]
    Socket {
        /// Which step failed.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

fn step<T>(what: impl Into<String>, r: std::io::Result<T>) -> Result<T, UdpError> {
    r.map_err(|source| UdpError::Socket {
        what: what.into(),
        source,
    })
}

/// Where to bind and which group to join.
#[derive(Debug, Clone, Copy)]
pub struct UdpSettings {
    /// Interface address (`-host`); unspecified lets the kernel choose.
    pub host: Ipv4Addr,
    /// Unicast port (`-port`); 0 = any.
    pub port: u16,
    /// Multicast group.
    pub group: Ipv4Addr,
    /// Multicast port.
    pub group_port: u16,
    /// Multicast TTL.
    pub ttl: u32,
}

/// The bound sockets.
#[derive(Debug)]
pub struct Sockets {
    /// Receives multicast.
    pub group: UdpSocket,
    /// Receives directed messages, sends everything but probes.
    pub unicast: UdpSocket,
    /// Sends to addresses that have not proven themselves (challenges,
    /// acks to unproven sources) and receives their replies, on a port of
    /// its own, so that a full send buffer there never delays peers.
    pub probe: UdpSocket,
    /// Where multicast goes.
    pub group_addr: SocketAddrV4,
    /// The unicast socket's local address (the actual port when 0 was asked).
    pub local: SocketAddrV4,
}

/// Receive buffer size: one byte more than the largest valid datagram, so
/// an oversized one is seen as such instead of silently truncated.
pub const RECV_BUFFER: usize = MAX_DATAGRAM + 1;

/// Binds both sockets. If `port` is taken, falls back to any free port (the
/// Go Pigeon panicked; a missing pigeon is worse than a different port,
/// which peers learn from announcements anyway) and says so in the log.
pub fn bind(s: UdpSettings) -> Result<Sockets, UdpError> {
    let group = bind_group(&s)?;
    let unicast = match bind_unicast(&s, s.port) {
        Ok(u) => u,
        Err(e) if s.port != 0 => {
            tracing::warn!(
                "unicast port {} unavailable ({e}); using a free port",
                s.port
            );
            bind_unicast(&s, 0)?
        }
        Err(e) => return Err(e),
    };
    let local = match step("local address", unicast.local_addr())?.as_socket() {
        Some(SocketAddr::V4(a)) => a,
        other => SocketAddrV4::new(s.host, other.map_or(s.port, |a| a.port())),
    };
    let probe = bind_unicast(&s, 0)?;
    Ok(Sockets {
        group: step("tokio group socket", UdpSocket::from_std(group.into()))?,
        unicast: step("tokio unicast socket", UdpSocket::from_std(unicast.into()))?,
        probe: step("tokio probe socket", UdpSocket::from_std(probe.into()))?,
        group_addr: SocketAddrV4::new(s.group, s.group_port),
        local,
    })
}

fn new_socket() -> Result<Socket, UdpError> {
    step(
        "socket",
        Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)),
    )
}

fn bind_group(s: &UdpSettings) -> Result<Socket, UdpError> {
    let sock = new_socket()?;
    step("SO_REUSEADDR", sock.set_reuse_address(true))?;
    step("SO_REUSEPORT", sock.set_reuse_port(true))?;
    step("IP_MULTICAST_ALL", sock.set_multicast_all_v4(false))?;
    step("nonblocking", sock.set_nonblocking(true))?;
    let addr = SocketAddrV4::new(s.group, s.group_port);
    step(format!("bind {addr}"), sock.bind(&addr.into()))?;
    step(
        format!("join {} on {}", s.group, s.host),
        sock.join_multicast_v4(&s.group, &s.host),
    )?;
    Ok(sock)
}

fn bind_unicast(s: &UdpSettings, port: u16) -> Result<Socket, UdpError> {
    let sock = new_socket()?;
    step("nonblocking", sock.set_nonblocking(true))?;
    if !s.host.is_unspecified() {
        step("IP_MULTICAST_IF", sock.set_multicast_if_v4(&s.host))?;
    }
    step("IP_MULTICAST_TTL", sock.set_multicast_ttl_v4(s.ttl))?;
    step("IP_MULTICAST_LOOP", sock.set_multicast_loop_v4(true))?;
    let addr = SocketAddrV4::new(s.host, port);
    step(format!("bind {addr}"), sock.bind(&addr.into()))?;
    Ok(sock)
}
