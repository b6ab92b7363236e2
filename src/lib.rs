//! pigeon: a LAN peer for the Slips intrusion-prevention system.
//!
//! Slips' P2P module starts a helper program, "the Pigeon", and talks to it
//! over two Redis pub/sub channels. pigeon is a drop-in replacement for the
//! Go Pigeon (`p2p4slips`): peers on one LAN find each other and exchange
//! Slips' requests, reports and blames as signed JSON datagrams over UDP
//! multicast, and everything received is validated before Slips sees it.
//!
//! # Layout
//!
//! The protocol is a pure, deterministic state machine; input and output
//! live in thin adapters around it (see `docs/ARCHITECTURE.md`).
//!
//! * [`wire`]: the datagram format: envelope, signing, verification,
//!   replay window. No IO.
//! * [`slips`]: the Slips side of the contract: parsing what Slips
//!   publishes, validating peers' payloads, and the exact JSON shapes Slips
//!   accepts. No IO.
//! * [`core`]: the sans-IO node. It takes `now` and inputs (datagrams,
//!   Slips messages, timer expiry) and returns actions (datagrams to send,
//!   messages for Slips, peer list to save).
//! * [`config`], [`cli`]: `pigeon.toml` and the Go Pigeon's command line.
//! * [`identity`]: the key file (libp2p protobuf encoding) and peer ids.
//! * [`org`]: organisations: credentials, revocation lists, the
//!   cryptography of confidential org messages, the `pigeon org` command
//!   line. No IO.
//! * [`peerstore`]: the persisted peer list (atomic writes).
//! * [`status`]: what `pigeon status` shows: the report of a running
//!   pigeon and its rendering. No IO.
//! * [`io`]: adapters: sockets, Redis, logging, the control socket, the
//!   Prometheus endpoint.
//! * [`runtime`]: the tokio loop that feeds the core and carries out its
//!   actions.
//! * [`untrusted`]: escaping network-derived strings for the log.

pub mod cli;
pub mod config;
pub mod core;
pub mod identity;
pub mod io;
pub mod org;
pub mod peerstore;
pub mod runtime;
pub mod slips;
pub mod status;
pub mod untrusted;
pub mod wire;
