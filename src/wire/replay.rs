//! Sliding-window replay protection for sequence numbers (RFC 6479 style,
//! as in WireGuard).
//!
//! The check is split in two, as in boringtun: [`ReplayWindow::will_accept`]
//! is a read-only test done *before* the signature is verified, and
//! [`ReplayWindow::commit`] records the number *after* it verified. A
//! forged datagram therefore can never poison the window.

/// Sequence numbers remembered behind the highest one seen.
pub const WINDOW_BITS: u64 = 1024;
const WORDS: usize = (WINDOW_BITS / 64) as usize;

/// Which sequence numbers of one sender instance were already seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Highest sequence number committed; 0 = none yet.
    highest: u64,
    /// Bit `s % WINDOW_BITS` is set when `s` (within the window) was seen.
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// An empty window: every sequence number ≥ 1 is acceptable.
    pub fn new() -> Self {
        Self {
            highest: 0,
            bits: [0; WORDS],
        }
    }

    /// Whether `seq` is new: not seen and not too old. Sequence number 0 is
    /// never valid.
    pub fn will_accept(&self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.highest {
            return true;
        }
        if self.highest - seq >= WINDOW_BITS {
            return false;
        }
        let (w, b) = Self::slot(seq);
        self.bits[w] & (1 << b) == 0
    }

    /// Records `seq` as seen. Returns false (and changes nothing) if it
    /// would not have been accepted.
    pub fn commit(&mut self, seq: u64) -> bool {
        if !self.will_accept(seq) {
            return false;
        }
        if seq > self.highest {
            let advance = seq - self.highest;
            if advance >= WINDOW_BITS {
                self.bits = [0; WORDS];
            } else {
                // Clear the slots of the numbers that enter the window.
                for s in self.highest + 1..seq {
                    let (w, b) = Self::slot(s);
                    self.bits[w] &= !(1 << b);
                }
            }
            self.highest = seq;
        }
        let (w, b) = Self::slot(seq);
        self.bits[w] |= 1 << b;
        true
    }

    /// Highest sequence number committed so far (0 = none).
    pub fn highest(&self) -> u64 {
        self.highest
    }

    fn slot(seq: u64) -> (usize, u32) {
        let i = seq % WINDOW_BITS;
        ((i / 64) as usize, (i % 64) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn duplicates_and_old_numbers_are_refused() {
        let mut w = ReplayWindow::new();
        assert!(!w.will_accept(0));
        assert!(w.commit(1));
        assert!(!w.commit(1));
        assert!(w.commit(5));
        assert!(w.commit(3), "reordered but new");
        assert!(!w.commit(3));
        assert!(w.commit(5 + WINDOW_BITS));
        assert!(!w.will_accept(5), "fell out of the window");
        assert!(w.will_accept(6 + 1), "inside the window and unseen");
    }

    proptest! {
        /// Against a set-based model: a number is accepted iff it is unseen
        /// and within WINDOW_BITS of the highest committed number.
        #[test]
        fn matches_model(seqs in proptest::collection::vec(1u64..3000, 1..400)) {
            let mut w = ReplayWindow::new();
            let mut seen = std::collections::BTreeSet::new();
            let mut highest = 0u64;
            for s in seqs {
                let expect = !seen.contains(&s) && (s > highest || highest - s < WINDOW_BITS);
                prop_assert_eq!(w.commit(s), expect, "seq {}", s);
                if expect {
                    seen.insert(s);
                    highest = highest.max(s);
                }
            }
        }
    }
}
