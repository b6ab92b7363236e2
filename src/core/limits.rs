//! Rate limits with bounded state, driven by the caller's clock.

use std::collections::HashMap;
use std::hash::Hash;

/// A token bucket: `rate` tokens per second, at most `burst` stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    at_ms: u64,
}

/// Rate and burst of a bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    /// Tokens added per second.
    pub per_second: f64,
    /// Bucket size.
    pub burst: f64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(quota: Quota, now_ms: u64) -> Self {
        Self {
            tokens: quota.burst,
            at_ms: now_ms,
        }
    }

    fn refill(&mut self, quota: Quota, now_ms: u64) {
        if now_ms > self.at_ms {
            let dt = (now_ms - self.at_ms) as f64 / 1000.0;
            self.tokens = (self.tokens + dt * quota.per_second).min(quota.burst);
            self.at_ms = now_ms;
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, quota: Quota, now_ms: u64) -> bool {
        self.refill(quota, now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens if there are that many (byte budgets).
    pub fn take_n(&mut self, quota: Quota, now_ms: u64, n: f64) -> bool {
        self.refill(quota, now_ms);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Whether the bucket has refilled completely (the key can be forgotten
    /// without changing any decision).
    pub fn is_full(&self, quota: Quota, now_ms: u64) -> bool {
        let mut b = *self;
        b.refill(quota, now_ms);
        b.tokens >= quota.burst
    }
}

/// Per-key token buckets with a bounded number of keys.
///
/// When `max_keys` keys are tracked, every further key shares one overflow
/// bucket, so spoofed keys cost O(1) memory and cannot starve known keys.
/// [`KeyedLimiter::prune`] forgets keys whose bucket is full again.
#[derive(Debug)]
pub struct KeyedLimiter<K> {
    quota: Quota,
    max_keys: usize,
    buckets: HashMap<K, TokenBucket>,
    overflow: TokenBucket,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// An empty limiter.
    pub fn new(quota: Quota, max_keys: usize, now_ms: u64) -> Self {
        Self {
            quota,
            max_keys,
            buckets: HashMap::new(),
            overflow: TokenBucket::full(quota, now_ms),
        }
    }

    /// Takes one token for `key`.
    pub fn check(&mut self, key: &K, now_ms: u64) -> bool {
        if let Some(b) = self.buckets.get_mut(key) {
            return b.take(self.quota, now_ms);
        }
        if self.buckets.len() >= self.max_keys {
            return self.overflow.take(self.quota, now_ms);
        }
        let mut b = TokenBucket::full(self.quota, now_ms);
        let ok = b.take(self.quota, now_ms);
        self.buckets.insert(key.clone(), b);
        ok
    }

    /// Forgets keys whose bucket has refilled.
    pub fn prune(&mut self, now_ms: u64) {
        let q = self.quota;
        self.buckets.retain(|_, b| !b.is_full(q, now_ms));
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Quota = Quota {
        per_second: 10.0,
        burst: 5.0,
    };

    #[test]
    fn bucket_allows_burst_then_rate() {
        let mut b = TokenBucket::full(Q, 0);
        assert_eq!((0..10).filter(|_| b.take(Q, 0)).count(), 5);
        assert!(!b.take(Q, 50));
        assert!(b.take(Q, 100));
    }

    #[test]
    fn keyed_limiter_is_bounded() {
        let mut l = KeyedLimiter::new(Q, 3, 0);
        for k in 0..1000u32 {
            l.check(&k, 0);
        }
        assert_eq!(l.len(), 3);
        // Keys 0..3 keep their own buckets; the rest share the overflow one.
        assert!(l.check(&0, 0));
        assert!(!l.check(&999, 0), "overflow bucket exhausted by the flood");
        l.prune(10_000);
        assert!(l.is_empty());
    }
}
