//! Client sampling with a quorum.

use rand::RngCore;
use rand::seq::IndexedRandom;
use tg_types::AgentId;

use crate::{Result, StrategyError};

/// Samples `max(⌈fraction × available⌉, min_clients)` agents per round.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampler {
    fraction: f64,
    min_clients: usize,
}

impl Sampler {
    /// A sampler; `fraction` must be in (0, 1] and `min_clients` ≥ 1.
    pub fn new(fraction: f64, min_clients: usize) -> Result<Self> {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(StrategyError::Config(format!(
                "sampling fraction must be in (0, 1], got {fraction}"
            )));
        }
        if min_clients == 0 {
            return Err(StrategyError::Config(
                "quorum (min clients) must be at least 1".into(),
            ));
        }
        Ok(Self {
            fraction,
            min_clients,
        })
    }

    /// The quorum: fewest results with which a round may commit.
    pub fn min_clients(&self) -> usize {
        self.min_clients
    }

    /// Picks this round's participants, sorted by id.
    pub fn sample(&self, available: &[AgentId], rng: &mut dyn RngCore) -> Result<Vec<AgentId>> {
        if available.len() < self.min_clients {
            return Err(StrategyError::BelowQuorum {
                available: available.len(),
                required: self.min_clients,
            });
        }
        let want = ((self.fraction * available.len() as f64).ceil() as usize)
            .max(self.min_clients)
            .min(available.len());
        let mut picked: Vec<AgentId> = available.choose_multiple(rng, want).cloned().collect();
        picked.sort();
        Ok(picked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn agents(n: usize) -> Vec<AgentId> {
        (0..n).map(AgentId::numbered).collect()
    }

    #[test]
    fn samples_fraction_with_floor_at_quorum() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let s = Sampler::new(0.3, 2).unwrap();
        assert_eq!(s.sample(&agents(10), &mut rng).unwrap().len(), 3);
        assert_eq!(s.sample(&agents(3), &mut rng).unwrap().len(), 2);
        assert!(matches!(
            s.sample(&agents(1), &mut rng),
            Err(StrategyError::BelowQuorum { .. })
        ));
        assert!(Sampler::new(0.0, 1).is_err());
        assert!(Sampler::new(0.5, 0).is_err());
    }
}
