//! Temporary bans of keys that keep breaking the rules.
//!
//! A verified peer that misbehaves (a signed datagram with a malformed body
//! or a payload that fails validation, or a sustained flood above its rate)
//! gets a strike. `after` strikes within `window_ms` ban its key for
//! `ban_ms`: while banned, its datagrams are dropped right after the cheap
//! header checks, before any signature work, and Slips is told its
//! reliability is 0.
//!
//! Only the key's holder can earn strikes: every strike comes from a
//! datagram whose signature verified, and each `(instance, seq)` is acted
//! upon at most once (replay window), so relaying someone's genuine
//! datagrams cannot get them banned. That is also why a relayed announce
//! (address mismatch) is *not* a strike: anyone on the LAN can resend a
//! signed multicast announce from another address.
//!
//! The state is bounded: at most `max_keys` keys are tracked; when full,
//! entries with nothing left to remember are pruned, then the key with the
//! oldest strike and no ban is forgotten, and as a last resort the ban
//! closest to its end. Forgetting only ever makes the node more lenient.

use super::Millis;
use std::collections::{HashMap, VecDeque};

/// How often a peer over its rate may earn a strike: a flood is one strike
/// per second it lasts, not one per dropped datagram.
pub const RATE_STRIKE_SPACING_MS: Millis = 1_000;

/// When strikes turn into a ban.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanParams {
    /// Strikes within `window_ms` that ban a key; 0 disables bans.
    pub after: u32,
    /// Sliding window over which strikes count.
    pub window_ms: Millis,
    /// How long a ban lasts.
    pub ban_ms: Millis,
}

#[derive(Debug, Clone, Default)]
struct Entry {
    /// Times of the strikes still within the window, oldest first; never
    /// longer than `after`.
    strikes: VecDeque<Millis>,
    /// End of the ban, if banned.
    banned_until: Option<Millis>,
    /// Last rate strike, for [`RATE_STRIKE_SPACING_MS`].
    last_rate_strike_ms: Option<Millis>,
}

impl Entry {
    fn is_banned(&self, now: Millis) -> bool {
        self.banned_until.is_some_and(|t| now < t)
    }

    /// Forgets strikes that left the window.
    fn expire(&mut self, now: Millis, window_ms: Millis) {
        while self
            .strikes
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= window_ms)
        {
            self.strikes.pop_front();
        }
    }

    /// Whether forgetting the entry changes no future decision.
    fn is_idle(&self, now: Millis, p: &BanParams) -> bool {
        let rate_recent = self
            .last_rate_strike_ms
            .is_some_and(|t| now.saturating_sub(t) < RATE_STRIKE_SPACING_MS);
        self.banned_until.is_none()
            && !rate_recent
            && self
                .strikes
                .back()
                .is_none_or(|t| now.saturating_sub(*t) >= p.window_ms)
    }
}

/// Strikes and bans of keys, bounded.
#[derive(Debug)]
pub struct Bans {
    params: BanParams,
    max_keys: usize,
    entries: HashMap<[u8; 32], Entry>,
}

impl Bans {
    /// No strikes, no bans.
    pub fn new(params: BanParams, max_keys: usize) -> Self {
        Self {
            params,
            max_keys: max_keys.max(1),
            entries: HashMap::new(),
        }
    }

    /// Whether `key` is banned at `now`.
    pub fn is_banned(&self, key: &[u8; 32], now: Millis) -> bool {
        self.entries.get(key).is_some_and(|e| e.is_banned(now))
    }

    /// End of `key`'s ban, if banned at `now`.
    pub fn banned_until(&self, key: &[u8; 32], now: Millis) -> Option<Millis> {
        self.entries
            .get(key)
            .filter(|e| e.is_banned(now))
            .and_then(|e| e.banned_until)
    }

    /// Records a misbehaviour of `key`. Returns true if it bans the key.
    pub fn strike(&mut self, key: &[u8; 32], now: Millis) -> bool {
        if self.params.after == 0 {
            return false;
        }
        let p = self.params;
        let Some(e) = self.entry(key, now) else {
            return false;
        };
        if e.is_banned(now) {
            return false;
        }
        e.banned_until = None;
        e.expire(now, p.window_ms);
        e.strikes.push_back(now);
        if e.strikes.len() >= p.after as usize {
            e.strikes.clear();
            e.banned_until = Some(now.saturating_add(p.ban_ms));
            return true;
        }
        false
    }

    /// Records that `key` went over its rate: a strike at most once per
    /// [`RATE_STRIKE_SPACING_MS`]. Returns `(counted, banned)`: whether
    /// it counted as a strike, and whether that strike banned the key.
    pub fn rate_strike(&mut self, key: &[u8; 32], now: Millis) -> (bool, bool) {
        if self.params.after == 0 {
            return (false, false);
        }
        let Some(e) = self.entry(key, now) else {
            return (false, false);
        };
        if e.is_banned(now)
            || e.last_rate_strike_ms
                .is_some_and(|t| now.saturating_sub(t) < RATE_STRIKE_SPACING_MS)
        {
            return (false, false);
        }
        e.last_rate_strike_ms = Some(now);
        (true, self.strike(key, now))
    }

    /// Forgets what no longer matters; returns the keys whose ban ended
    /// (so their real reliability can be told again).
    pub fn prune(&mut self, now: Millis) -> Vec<[u8; 32]> {
        let p = self.params;
        let mut ended = Vec::new();
        for (k, e) in &mut self.entries {
            if e.banned_until.is_some_and(|t| now >= t) {
                e.banned_until = None;
                ended.push(*k);
            }
            e.expire(now, p.window_ms);
        }
        self.entries.retain(|_, e| !e.is_idle(now, &p));
        ended
    }

    /// Keys tracked now (with strikes or a ban).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys banned at `now`.
    pub fn banned_count(&self, now: Millis) -> usize {
        self.entries.values().filter(|e| e.is_banned(now)).count()
    }

    /// The entry of `key`, making room for it if needed. `None` only if
    /// room could not be made (never with `max_keys` ≥ 1).
    fn entry(&mut self, key: &[u8; 32], now: Millis) -> Option<&mut Entry> {
        if !self.entries.contains_key(key) && self.entries.len() >= self.max_keys {
            let p = self.params;
            self.entries.retain(|_, e| !e.is_idle(now, &p));
            if self.entries.len() >= self.max_keys {
                self.evict(now);
            }
        }
        if self.entries.len() >= self.max_keys && !self.entries.contains_key(key) {
            return None;
        }
        Some(self.entries.entry(*key).or_default())
    }

    /// Forgets one key: the unbanned one with the oldest strike, else the
    /// ban closest to its end.
    fn evict(&mut self, now: Millis) {
        let unbanned = self
            .entries
            .iter()
            .filter(|(_, e)| !e.is_banned(now))
            .min_by_key(|(_, e)| e.strikes.back().copied().unwrap_or(0))
            .map(|(k, _)| *k);
        let victim = unbanned.or_else(|| {
            self.entries
                .iter()
                .min_by_key(|(_, e)| e.banned_until.unwrap_or(0))
                .map(|(k, _)| *k)
        });
        if let Some(k) = victim {
            self.entries.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: BanParams = BanParams {
        after: 3,
        window_ms: 10_000,
        ban_ms: 60_000,
    };

    fn k(n: u32) -> [u8; 32] {
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(&n.to_le_bytes());
        key
    }

    #[test]
    fn strikes_within_the_window_ban_for_a_while() {
        let mut b = Bans::new(P, 10);
        assert!(!b.strike(&k(1), 0));
        assert!(!b.strike(&k(1), 1_000));
        assert!(!b.is_banned(&k(1), 1_000));
        assert!(b.strike(&k(1), 2_000), "third strike bans");
        assert!(b.is_banned(&k(1), 2_000));
        assert_eq!(b.banned_until(&k(1), 2_000), Some(62_000));
        assert!(!b.strike(&k(1), 3_000), "no strikes while banned");
        assert!(b.is_banned(&k(1), 61_999));
        assert!(!b.is_banned(&k(1), 62_000), "ban ends");
        assert_eq!(b.prune(62_000), vec![k(1)]);
        assert!(b.is_empty(), "nothing left to remember");
        // A clean slate after the ban.
        assert!(!b.strike(&k(1), 63_000));
    }

    #[test]
    fn strikes_outside_the_window_do_not_add_up() {
        let mut b = Bans::new(P, 10);
        for t in [0, 6_000, 12_000, 18_000, 24_000] {
            assert!(!b.strike(&k(1), t), "at {t}");
        }
        assert!(!b.is_banned(&k(1), 24_000));
        assert!(b.strike(&k(1), 25_000), "three within 10 s");
    }

    #[test]
    fn rate_strikes_count_once_per_second() {
        let mut b = Bans::new(P, 10);
        assert_eq!(b.rate_strike(&k(1), 0), (true, false));
        for t in 1..1_000 {
            assert_eq!(b.rate_strike(&k(1), t), (false, false));
        }
        assert_eq!(b.rate_strike(&k(1), 1_000), (true, false));
        assert_eq!(b.rate_strike(&k(1), 2_000), (true, true));
        assert!(b.is_banned(&k(1), 2_000));
    }

    #[test]
    fn zero_disables_bans() {
        let mut b = Bans::new(BanParams { after: 0, ..P }, 10);
        for t in 0..100 {
            assert!(!b.strike(&k(1), t));
            assert_eq!(b.rate_strike(&k(1), t * 1_000), (false, false));
        }
        assert!(b.is_empty());
    }

    #[test]
    fn state_is_bounded_and_bans_survive_a_sybil_flood() {
        let mut b = Bans::new(P, 8);
        for t in 0..3 {
            b.strike(&k(0), t);
        }
        assert!(b.is_banned(&k(0), 10));
        // 10 000 keys with one strike each: the table never grows past 8,
        // and the ban of key 0 is kept while unbanned keys can go.
        for n in 1..10_000 {
            b.strike(&k(n), 100 + u64::from(n));
            assert!(b.len() <= 8);
        }
        assert!(b.is_banned(&k(0), 20_000));
        // Even a table full of bans takes new keys (the ban nearest its end
        // is forgotten).
        let mut b = Bans::new(P, 4);
        for n in 0..10u32 {
            for s in 0..3 {
                b.strike(&k(n), u64::from(n) * 10 + s);
            }
            assert!(b.is_banned(&k(n), u64::from(n) * 10 + 3), "key {n}");
            assert!(b.len() <= 4);
        }
        assert_eq!(b.banned_count(100), 4);
    }
}
