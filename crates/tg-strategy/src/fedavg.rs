//! FedAvg and FedProx.

use rand::RngCore;
use tg_types::spec::LocalObjective;
use tg_types::{AgentId, Parameters};

use crate::{Fold, Result, Sampler, Strategy, TrainPlan};

/// Sample-weighted averaging (McMahan et al. 2017); with a proximal μ it is
/// FedProx (Li et al. 2020), which differs only in the local objective.
#[derive(Debug)]
pub struct FedAvg {
    sampler: Sampler,
    server_lr: f32,
    proximal_mu: Option<f32>,
}

impl FedAvg {
    /// FedAvg with server step size `server_lr` (1.0 is classic FedAvg).
    pub fn new(sampler: Sampler, server_lr: f32) -> Self {
        Self {
            sampler,
            server_lr,
            proximal_mu: None,
        }
    }

    /// Turns this into FedProx with coefficient `mu`.
    pub fn with_proximal(mut self, mu: f32) -> Self {
        self.proximal_mu = Some(mu);
        self
    }
}

impl Strategy for FedAvg {
    fn name(&self) -> &'static str {
        if self.proximal_mu.is_some() {
            "fedprox"
        } else {
            "fedavg"
        }
    }

    fn configure_train(
        &mut self,
        _round: u32,
        _global: &Parameters,
        available: &[AgentId],
        rng: &mut dyn RngCore,
    ) -> Result<TrainPlan> {
        Ok(TrainPlan {
            selected: self.sampler.sample(available, rng)?,
            objective: match self.proximal_mu {
                Some(mu) => LocalObjective::Proximal { mu },
                None => LocalObjective::Plain,
            },
        })
    }

    fn apply(&mut self, _round: u32, global: &Parameters, fold: Fold) -> Result<Parameters> {
        let mut next = global.clone();
        fold.add_mean_to(&mut next, self.server_lr)?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientUpdate;
    use tg_types::NamedTensor;

    #[test]
    fn applies_the_weighted_mean() {
        let p = |v: f32| {
            Parameters::new(vec![NamedTensor {
                name: "w".into(),
                shape: vec![1],
                data: vec![v],
            }])
            .unwrap()
        };
        let mut s = FedAvg::new(Sampler::new(1.0, 1).unwrap(), 1.0);
        let r = |v, n: u64| ClientUpdate {
            agent: AgentId::numbered(n as usize),
            update: p(v),
            num_examples: n,
            control_delta: None,
        };
        let next = s
            .aggregate_train(1, &p(10.0), &[r(1.0, 1), r(-1.0, 2)])
            .unwrap();
        assert_eq!(next, p(10.0 - 1.0 / 3.0));
        let next = s
            .aggregate_train(1, &p(10.0), &[r(2.0, 3), r(-2.0, 1)])
            .unwrap();
        assert_eq!(next, p(11.0));
    }
}
