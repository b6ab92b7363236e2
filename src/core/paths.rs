//! Return routability: which addresses have proven that they receive our
//! datagrams, and how much we may send to those that have not.
//!
//! A source address on a LAN is trivially forged, so a pigeon never takes a
//! datagram's source (or an announced `ip:port`) as a peer's address. It
//! sends a `challenge` carrying an unpredictable nonce to that address; only
//! a `response` that echoes the nonce, signed by the challenged key and
//! arriving from that same address, proves the address (as QUIC path
//! validation, RFC 9000 §8.2, and WireGuard's cookie reply do).
//!
//! Nonces are stateless (a MAC of key, address and a time window under a
//! per-process secret, like WireGuard's cookies), so a flood of fresh keys
//! costs no state to challenge. Toward an address that has not proven
//! itself, the [`Ledger`] lets us send at most as many bytes as we received
//! from it (QUIC's anti-amplification limit, RFC 9000 §8.1, allows 3×; we
//! allow 1×).

use super::Millis;
use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::net::SocketAddrV4;

/// A nonce is valid for the window it was made in and the next one: 10 to
/// 20 s, far beyond a LAN round trip and short enough that a captured
/// nonce is soon useless.
const NONCE_WINDOW_MS: Millis = 10_000;

/// Domain separation of the nonce MAC.
const NONCE_DOMAIN: &[u8] = b"pigeon-challenge/2\0";

/// Most credit an unproven address can hold: what a few datagrams bring.
/// Unused credit does not accumulate into a large burst later.
const MAX_CREDIT: usize = 4 * crate::wire::MAX_DATAGRAM;

/// Makes and checks challenge nonces.
pub(super) struct Challenger {
    secret: [u8; 32],
}

impl Challenger {
    /// A challenger with a random secret (from the node's seeded RNG).
    pub(super) fn new(secret: [u8; 32]) -> Self {
        Self { secret }
    }

    fn mac(&self, key: &[u8; 32], addr: SocketAddrV4, window: u64) -> Option<[u8; 16]> {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret).ok()?;
        m.update(NONCE_DOMAIN);
        m.update(key);
        m.update(&addr.ip().octets());
        m.update(&addr.port().to_be_bytes());
        m.update(&window.to_be_bytes());
        let full = m.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(full.get(..16)?);
        Some(out)
    }

    /// The nonce that challenges `key` at `addr` now.
    pub(super) fn nonce(&self, key: &[u8; 32], addr: SocketAddrV4, now: Millis) -> String {
        let n = self
            .mac(key, addr, now / NONCE_WINDOW_MS)
            .unwrap_or([0; 16]);
        BASE64_STANDARD.encode(n)
    }

    /// Whether `nonce` is one we made for `key` at `addr` recently.
    pub(super) fn check(
        &self,
        key: &[u8; 32],
        addr: SocketAddrV4,
        nonce: &str,
        now: Millis,
    ) -> bool {
        let Ok(got) = BASE64_STANDARD.decode(nonce) else {
            return false;
        };
        let w = now / NONCE_WINDOW_MS;
        [w, w.saturating_sub(1)].into_iter().any(|w| {
            self.mac(key, addr, w)
                .is_some_and(|want| constant_time_eq(&want, &got))
        })
    }
}

impl Challenger {
    /// A keyed hash of an address, so that nobody can aim collisions at
    /// the [`RepeatFilter`].
    pub(super) fn address_hash(&self, addr: SocketAddrV4) -> u64 {
        let Ok(mut m) = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret) else {
            return 0;
        };
        m.update(b"pigeon-repeat/2\0");
        m.update(&addr.ip().octets());
        m.update(&addr.port().to_be_bytes());
        let full = m.finalize().into_bytes();
        let mut out = [0u8; 8];
        out.copy_from_slice(full.get(..8).unwrap_or(&[0; 8]));
        u64::from_le_bytes(out)
    }
}

/// Bits of each window of the [`RepeatFilter`]: 2^18, 32 KiB. With two
/// bits per address and 10 000 fresh sources a second, about 0.5 % of them
/// look like repeats.
const REPEAT_BITS: usize = 1 << 18;

/// Length of a window of the [`RepeatFilter`]. A pigeon starting up
/// announces three times, one second apart.
pub(super) const REPEAT_WINDOW_MS: Millis = 1_500;

/// Which source addresses announced before, recently: a Bloom filter of the
/// current and the previous window, fixed in size whatever a flood sends.
/// Under a flood of announces from forged sources (each seen once), the
/// repeated announces of an honest newcomer stand out.
pub(super) struct RepeatFilter {
    current: Vec<u64>,
    previous: Vec<u64>,
    window: Millis,
}

impl RepeatFilter {
    pub(super) fn new() -> Self {
        Self {
            current: vec![0; REPEAT_BITS / 64],
            previous: vec![0; REPEAT_BITS / 64],
            window: 0,
        }
    }

    fn bits(hash: u64) -> [usize; 2] {
        let mask = REPEAT_BITS as u64 - 1;
        [(hash & mask) as usize, ((hash >> 32) & mask) as usize]
    }

    /// Records `hash` at `now`; true if it was seen in this window or the
    /// previous one.
    pub(super) fn seen_before(&mut self, hash: u64, now: Millis) -> bool {
        let w = now / REPEAT_WINDOW_MS;
        if w != self.window {
            if w == self.window + 1 {
                std::mem::swap(&mut self.current, &mut self.previous);
            } else {
                self.previous.iter_mut().for_each(|b| *b = 0);
            }
            self.current.iter_mut().for_each(|b| *b = 0);
            self.window = w;
        }
        let test = |v: &[u64], i: usize| v.get(i / 64).is_some_and(|b| b & (1 << (i % 64)) != 0);
        let bits = Self::bits(hash);
        let seen = bits.iter().all(|&i| test(&self.current, i))
            || bits.iter().all(|&i| test(&self.previous, i));
        for i in bits {
            if let Some(b) = self.current.get_mut(i / 64) {
                *b |= 1 << (i % 64);
            }
        }
        seen
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What we may still send to one unproven address, and the challenge
/// retries owed to it.
#[derive(Debug, Clone)]
struct Credit {
    bytes: usize,
    used_ms: Millis,
    /// Key to challenge again, retries left, and when the next is due.
    retry: Option<([u8; 32], u8, Millis)>,
}

/// Bytes received from, and sent to, addresses that have not proven they
/// receive our datagrams. Bounded: beyond `max` addresses the least
/// recently used is forgotten (it then has no credit: nothing is sent).
pub(super) struct Ledger {
    max: usize,
    entries: HashMap<SocketAddrV4, Credit>,
}

impl Ledger {
    pub(super) fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            entries: HashMap::new(),
        }
    }

    /// The entry of `addr`, made (evicting the least recently used) if new.
    fn entry(&mut self, addr: SocketAddrV4, now: Millis) -> &mut Credit {
        if !self.entries.contains_key(&addr) && self.entries.len() >= self.max {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, c)| c.used_ms)
                .map(|(a, _)| *a);
            if let Some(a) = oldest {
                self.entries.remove(&a);
            }
        }
        self.entries.entry(addr).or_insert(Credit {
            bytes: 0,
            used_ms: now,
            retry: None,
        })
    }

    /// `len` bytes arrived from `addr`.
    pub(super) fn received(&mut self, addr: SocketAddrV4, len: usize, now: Millis) {
        let c = self.entry(addr, now);
        c.bytes = (c.bytes + len).min(MAX_CREDIT);
        c.used_ms = now;
    }

    /// Takes `len` bytes of credit toward `addr`; false (nothing taken) if
    /// there is not enough.
    pub(super) fn spend(&mut self, addr: SocketAddrV4, len: usize) -> bool {
        match self.entries.get_mut(&addr) {
            Some(c) if c.bytes >= len => {
                c.bytes -= len;
                true
            }
            _ => false,
        }
    }

    /// Schedules `retries` more challenges of `key` at `addr`, the first
    /// at `due`.
    pub(super) fn schedule_retry(
        &mut self,
        addr: SocketAddrV4,
        key: [u8; 32],
        retries: u8,
        due: Millis,
    ) {
        let c = self.entry(addr, due);
        c.retry = (retries > 0).then_some((key, retries, due));
    }

    /// The address proved itself (or is no longer of interest).
    pub(super) fn forget(&mut self, addr: &SocketAddrV4) {
        self.entries.remove(addr);
    }

    /// Challenge retries due at `now`: (address, key, retries left after
    /// this one). Their schedule is cleared; the caller re-arms it.
    pub(super) fn due_retries(&mut self, now: Millis) -> Vec<(SocketAddrV4, [u8; 32], u8)> {
        let mut due = Vec::new();
        for (addr, c) in &mut self.entries {
            if let Some((key, left, at)) = c.retry
                && at <= now
            {
                c.retry = None;
                due.push((*addr, key, left.saturating_sub(1)));
            }
        }
        due
    }

    /// Earliest retry due.
    pub(super) fn next_due(&self) -> Option<Millis> {
        self.entries
            .values()
            .filter_map(|c| c.retry.map(|(_, _, at)| at))
            .min()
    }

    /// Forgets addresses idle for `idle_ms`.
    pub(super) fn prune(&mut self, now: Millis, idle_ms: Millis) {
        self.entries
            .retain(|_, c| c.retry.is_some() || now.saturating_sub(c.used_ms) < idle_ms);
    }

    /// Addresses tracked.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn a(n: u8) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, n), 4001)
    }

    #[test]
    fn a_nonce_is_bound_to_key_address_and_time() {
        let c = Challenger::new([7; 32]);
        let n = c.nonce(&[1; 32], a(1), 50_000);
        assert!(c.check(&[1; 32], a(1), &n, 50_000));
        assert!(
            c.check(&[1; 32], a(1), &n, 69_999),
            "next window still valid"
        );
        assert!(!c.check(&[1; 32], a(1), &n, 70_000), "expired");
        assert!(!c.check(&[2; 32], a(1), &n, 50_000), "other key");
        assert!(!c.check(&[1; 32], a(2), &n, 50_000), "other address");
        assert!(
            !Challenger::new([8; 32]).check(&[1; 32], a(1), &n, 50_000),
            "other secret"
        );
        assert!(!c.check(&[1; 32], a(1), "not base64!", 50_000));
    }

    #[test]
    fn the_ledger_never_lends_more_than_it_received() {
        let mut l = Ledger::new(4);
        assert!(!l.spend(a(1), 1), "nothing received yet");
        l.received(a(1), 400, 0);
        assert!(l.spend(a(1), 360));
        assert!(!l.spend(a(1), 360), "only 40 bytes left");
        assert!(l.spend(a(1), 40));
        l.received(a(1), 100_000, 0);
        assert!(!l.spend(a(1), MAX_CREDIT + 1), "credit is capped");
    }

    #[test]
    fn repeats_are_told_from_first_sightings() {
        let c = Challenger::new([3; 32]);
        let mut f = RepeatFilter::new();
        assert!(!f.seen_before(c.address_hash(a(1)), 0));
        assert!(f.seen_before(c.address_hash(a(1)), 1_000), "same window");
        assert!(
            f.seen_before(c.address_hash(a(1)), 2_000),
            "previous window"
        );
        assert!(!f.seen_before(c.address_hash(a(2)), 2_000));
        assert!(!f.seen_before(c.address_hash(a(1)), 10_000), "long ago");
        // 10 000 other addresses: few false repeats.
        let false_repeats = (0..10_000u32)
            .filter(|k| {
                let addr = SocketAddrV4::new(Ipv4Addr::from(0x0B00_0000 + k), 1);
                f.seen_before(c.address_hash(addr), 10_500)
            })
            .count();
        assert!(false_repeats < 200, "{false_repeats}");
    }

    #[test]
    fn the_ledger_is_bounded() {
        let mut l = Ledger::new(3);
        for n in 1..=100 {
            l.received(a(n), 500, u64::from(n));
        }
        assert_eq!(l.len(), 3);
        assert!(l.spend(a(100), 500));
        assert!(!l.spend(a(1), 1), "evicted: no credit");
    }
}
