//! Thin adapters between the pure core and the outside world.

pub mod control;
pub mod logging;
pub mod metrics;
pub mod org_lists;
pub mod redis_bridge;
pub mod slips_cache;
pub mod udp;
