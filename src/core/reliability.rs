//! Reliability of a peer: an exponentially decaying weighted mean of what we
//! observed of it, blended with a prior.
//!
//! ```text
//! r = (Σ wᵢ·vᵢ·2^(−ageᵢ/H) + p·w₀) / (Σ wᵢ·2^(−ageᵢ/H) + w₀)
//! ```
//!
//! `vᵢ ∈ [0,1]` is an observation (1 = good), `wᵢ` its weight, `H` the
//! half-life, `p` the prior and `w₀` its weight. Old behaviour fades, so a
//! peer that misbehaved recovers and a good peer that turns bad loses its
//! score within a few half-lives, unlike the Go Pigeon's lifetime average.

/// One kind of observation, with its value and weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// 1 = good behaviour, 0 = bad.
    pub value: f64,
    /// How much it counts, in "announcements".
    pub weight: f64,
}

/// An announcement arrived in time.
pub const ANNOUNCE_ON_TIME: Observation = Observation {
    value: 1.0,
    weight: 1.0,
};
/// An expected announcement did not arrive.
pub const ANNOUNCE_MISSED: Observation = Observation {
    value: 0.0,
    weight: 1.0,
};
/// A well-formed Slips payload. Weighs little: chatter must not farm trust.
pub const VALID_PAYLOAD: Observation = Observation {
    value: 1.0,
    weight: 0.25,
};
/// A signed datagram that broke the rules (bad payload, bad body, flood).
pub const MISBEHAVIOUR: Observation = Observation {
    value: 0.0,
    weight: 3.0,
};

/// Parameters of the score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReliabilityParams {
    /// Half-life of observations, milliseconds.
    pub half_life_ms: f64,
    /// Score before any observation.
    pub prior: f64,
    /// Weight of the prior.
    pub prior_weight: f64,
}

/// The decayed sums as plain numbers: what is remembered across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ReliabilitySums {
    /// Σ weight × value.
    pub sum: f64,
    /// Σ weight.
    pub weight: f64,
    /// Time of the sums, Unix milliseconds.
    pub at_ms: u64,
}

/// Decayed sums of one peer's observations.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Reliability {
    sum: f64,
    weight: f64,
    at_ms: u64,
}

impl Reliability {
    /// Restores remembered sums (non-finite or negative values, or a sum
    /// above the weight, are reset: the file may have been edited).
    pub fn from_sums(s: ReliabilitySums) -> Self {
        let ok = |x: f64| x.is_finite() && x >= 0.0;
        if ok(s.sum) && ok(s.weight) && s.sum <= s.weight {
            Self {
                sum: s.sum,
                weight: s.weight,
                at_ms: s.at_ms,
            }
        } else {
            Self::default()
        }
    }

    /// The sums, to be remembered.
    pub fn sums(self) -> ReliabilitySums {
        ReliabilitySums {
            sum: self.sum,
            weight: self.weight,
            at_ms: self.at_ms,
        }
    }

    fn decay_to(&mut self, now_ms: u64, p: &ReliabilityParams) {
        if now_ms > self.at_ms {
            let age = (now_ms - self.at_ms) as f64;
            let f = (-age / p.half_life_ms * std::f64::consts::LN_2).exp();
            self.sum *= f;
            self.weight *= f;
        }
        self.at_ms = self.at_ms.max(now_ms);
    }

    /// Adds an observation made at `now_ms`.
    pub fn observe(&mut self, now_ms: u64, o: Observation, p: &ReliabilityParams) {
        self.decay_to(now_ms, p);
        self.sum += o.weight * o.value.clamp(0.0, 1.0);
        self.weight += o.weight;
    }

    /// The score at `now_ms`, always in [0, 1].
    pub fn value(&self, now_ms: u64, p: &ReliabilityParams) -> f64 {
        let mut s = *self;
        s.decay_to(now_ms, p);
        let r = (s.sum + p.prior * p.prior_weight) / (s.weight + p.prior_weight);
        if r.is_finite() {
            r.clamp(0.0, 1.0)
        } else {
            p.prior
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    fn params() -> ReliabilityParams {
        ReliabilityParams {
            half_life_ms: 24.0 * HOUR as f64,
            prior: 0.5,
            prior_weight: 4.0,
        }
    }

    #[test]
    fn starts_at_prior_and_rises_with_good_behaviour() {
        let p = params();
        let mut r = Reliability::default();
        assert_eq!(r.value(0, &p), 0.5);
        for i in 0..100 {
            r.observe(i * 30_000, ANNOUNCE_ON_TIME, &p);
        }
        assert!(r.value(100 * 30_000, &p) > 0.95);
    }

    #[test]
    fn misbehaviour_fades_with_time() {
        let p = params();
        let mut r = Reliability::default();
        for _ in 0..10 {
            r.observe(0, MISBEHAVIOUR, &p);
        }
        let bad = r.value(0, &p);
        assert!(bad < 0.1, "{bad}");
        // Five half-lives later the bad record weighs ~3 % of before.
        let later = r.value(5 * 24 * HOUR, &p);
        assert!(later > 0.4, "{later}");
        assert!(later < 0.5);
    }

    #[test]
    fn corrupt_stored_values_are_reset() {
        let s = ReliabilitySums {
            sum: f64::NAN,
            weight: 1.0,
            at_ms: 0,
        };
        assert_eq!(Reliability::from_sums(s), Reliability::default());
        let s = ReliabilitySums {
            sum: 5.0,
            weight: 1.0,
            at_ms: 0,
        };
        assert_eq!(Reliability::from_sums(s), Reliability::default());
    }
}
