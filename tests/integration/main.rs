//! The one integration-test binary (hickory-dns style).
//!
//! Everything that uses sockets runs inside private network namespaces
//! created by `scripts/lab.sh`, never in the root namespace. The harness
//! (the lab, Slips' side of Redis, the checker of what Slips accepts, the
//! rogue pigeon) is the dev-only crate `testkit/`; the modules here are
//! scenarios.

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
mod slips_checks;
mod spoofing;
