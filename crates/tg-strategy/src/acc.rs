//! The fold's exact accumulator: one `i64` sum per lane, held in six bytes
//! while the sum is small.
//!
//! Design decision: a lane's sum is split into its low 32 bits (`u32`) and
//! its high part (`i16`), so a round whose per-lane sums stay within
//! ±32,767 · 2³² units (±32,767 in model units: Σ wᵢΔᵢ with raw example
//! counts as weights) costs 1.5× the model's `f32` size instead of 2×. A
//! lane whose high part leaves that range *spills*: its full `i64` sum moves
//! to a side table (about 40 bytes a lane) and its high part is marked. When
//! more than one lane in 64 has spilled, the whole accumulator widens to
//! plain `i64` lanes (2×, what it always was): a fleet whose agents hold
//! many examples each, or an update of huge values, costs what it did
//! before. The bounds, against the model's `f32` size: 1.5× while split,
//! about 1.66× with the table full, 2× once wide, and for the moment of
//! widening both forms with the table, about 3.7×. A refused update restores
//! every lane's value exactly, but a spill or a widening it caused stays.
//! Every representation holds the same exact integer, so the fold's results
//! do not depend on which one a round ended in.

use std::collections::BTreeMap;

/// High part marking a lane whose sum lives in the spill table.
const SPILLED: i16 = i16::MIN;

/// Spilled lanes allowed per lane before widening (one in 64: the table
/// then costs about 0.16× the model).
const SPILL_SHARE: usize = 64;

/// Exact `i64` sums, one per lane.
#[derive(Clone, Debug)]
pub(crate) enum Acc {
    /// Low and high parts, with the lanes that outgrew `i16` in `spill`.
    Split {
        low: Vec<u32>,
        high: Vec<i16>,
        spill: BTreeMap<usize, i64>,
    },
    /// Plain `i64` lanes.
    Wide(Vec<i64>),
}

impl Acc {
    /// `n` lanes, all zero.
    pub(crate) fn zeros(n: usize) -> Self {
        Self::Split {
            low: vec![0; n],
            high: vec![0; n],
            spill: BTreeMap::new(),
        }
    }

    /// Number of lanes.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Split { low, .. } => low.len(),
            Self::Wide(w) => w.len(),
        }
    }

    /// Lane `i`'s sum.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> i64 {
        match self {
            Self::Split { low, high, spill } => join(low[i], high[i], spill, i),
            Self::Wide(w) => w[i],
        }
    }

    /// Every lane's sum, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }

    /// `lane i += t`. The caller guarantees the `i64` sum cannot overflow
    /// (the fold bounds every term by `i64::MAX / capacity`).
    #[inline]
    pub(crate) fn add(&mut self, i: usize, t: i64) {
        match self {
            Self::Split { low, high, spill } => {
                let h = high[i];
                if h == SPILLED {
                    if let Some(s) = spill.get_mut(&i) {
                        *s += t;
                    }
                    return;
                }
                let n = join(low[i], h, spill, i) + t;
                let nh = n >> 32;
                if nh > i64::from(SPILLED) && nh <= i64::from(i16::MAX) {
                    high[i] = nh as i16;
                    low[i] = n as u32;
                } else {
                    high[i] = SPILLED;
                    low[i] = 0;
                    spill.insert(i, n);
                    if spill.len() > low.len() / SPILL_SHARE {
                        self.widen();
                    }
                }
            }
            Self::Wide(w) => w[i] += t,
        }
    }

    /// Moves to plain `i64` lanes.
    fn widen(&mut self) {
        if let Self::Split { .. } = self {
            let wide: Vec<i64> = self.iter().collect();
            *self = Self::Wide(wide);
        }
    }
}

/// Equal when every lane's sum is, whatever the representation.
impl PartialEq for Acc {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

#[inline(always)]
fn join(low: u32, high: i16, spill: &BTreeMap<usize, i64>, i: usize) -> i64 {
    if high == SPILLED {
        spill.get(&i).copied().unwrap_or(0)
    } else {
        (i64::from(high) << 32) | i64::from(low)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_sums_stay_split_and_exact() {
        let mut a = Acc::zeros(4);
        a.add(0, -1);
        a.add(1, (1 << 40) + 5);
        a.add(2, -(32_767i64 << 32));
        a.add(3, 7);
        a.add(3, -7);
        assert!(matches!(a, Acc::Split { ref spill, .. } if spill.is_empty()));
        let got: Vec<i64> = a.iter().collect();
        assert_eq!(got, vec![-1, (1 << 40) + 5, -(32_767i64 << 32), 0]);
    }

    #[test]
    fn a_large_lane_spills_and_comes_back_exact() {
        let mut a = Acc::zeros(256);
        a.add(3, i64::MAX / 4);
        a.add(3, -(i64::MAX / 4) + 9);
        assert!(matches!(a, Acc::Split { ref spill, .. } if spill.len() == 1));
        assert_eq!(a.get(3), 9);
        // More than one lane in 64 spilled: the accumulator widens.
        for i in 0..5 {
            a.add(i, 1 << 60);
        }
        assert!(matches!(a, Acc::Wide(_)));
        assert_eq!(a.get(3), 9 + (1 << 60));
        assert_eq!(a.get(4), 1 << 60);
        assert_eq!(a.get(5), 0);
    }

    proptest! {
        #[test]
        fn equals_plain_i64_lanes(ops in proptest::collection::vec((0usize..32, -(1i64 << 55)..(1i64 << 55)), 0..200)) {
            let mut a = Acc::zeros(32);
            let mut want = vec![0i64; 32];
            for (i, t) in ops {
                a.add(i, t);
                want[i] += t;
            }
            prop_assert_eq!(a.iter().collect::<Vec<_>>(), want);
        }
    }
}
