//! The one integration-test binary (hickory-dns style).
//!
//! Everything that uses sockets runs inside private network namespaces
//! created by `scripts/lab.sh` (see `lab.rs`), never in the root namespace.

mod attacks;
mod e2e;
mod files;
mod lab;
mod loss;
mod operator;
mod orgs;
mod real_slips;
mod redis_bridge;
mod request_guard;
mod rogue;
mod slips_checks;
mod spoofing;
