//! The rules every job obeys, however it was written: demo flags, a job
//! file or the API's `POST /jobs` all reach [`JobSpec::check`], so one
//! combination is refused in the same words everywhere (E020).

use crate::spec::{Compression, JobSpec, StrategyKind};

/// Settings of one job that contradict each other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecConflict(pub String);

impl JobSpec {
    /// The rules every job obeys, however it was written (demo flags, a job
    /// file, the API): a job that breaks one is refused before it starts,
    /// never at round 1.
    pub fn check(&self) -> Result<(), SpecConflict> {
        use crate::privacy::DpMode;
        let bad = |m: String| Err(SpecConflict(m));
        if self.clients == 0 {
            return bad("a federation needs at least 1 client".into());
        }
        if self.min_clients == 0 || self.min_clients > self.clients {
            return bad(format!(
                "quorum {} must be between 1 and the {} clients",
                self.min_clients, self.clients
            ));
        }
        if self.rounds == 0 {
            return bad("rounds must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!(
                "dropout probability must be in [0, 1), got {}",
                self.dropout
            ));
        }
        let mode = self.privacy.map(|p| p.mode);
        if matches!(mode, Some(DpMode::Distributed(_))) && self.secure_aggregation.is_none() {
            return bad(
                "distributed DP needs secure aggregation: the noise is in the masked sum".into(),
            );
        }
        if self.secure_aggregation.is_some() {
            if self.clients < 3 {
                return bad(format!(
                    "secure aggregation against a malicious coordinator needs at least 3 clients, \
                     got {}: with two, each learns the other's update from the sum",
                    self.clients
                ));
            }
            if self.strategy.kind == StrategyKind::Scaffold {
                return bad("SCAFFOLD needs each client's control variate, which secure aggregation hides; use fedavg, fedprox or fedadam".into());
            }
            if self.train.compress != Compression::None {
                return bad(format!(
                    "compression {} applies to plaintext rounds; secure aggregation has its own encoding (use its sparsity)",
                    self.train.compress
                ));
            }
            if matches!(mode, Some(DpMode::Central(_))) {
                return bad("central DP adds noise to individual updates at the coordinator, which secure aggregation never reveals; use local-sgd (DP-SGD) or distributed DP with secure aggregation".into());
            }
        }
        if let Some(g) = self.gate
            && (!(0.0..1.0).contains(&g.margin) || g.min_episodes == 0)
        {
            return bad(format!(
                "the rollout gate's margin must be in [0, 1) and it needs at least one episode per model, got margin {} and {} episodes",
                g.margin, g.min_episodes
            ));
        }
        if self.gate.is_some()
            && matches!(
                self.strategy.kind,
                StrategyKind::FedAdam | StrategyKind::Scaffold
            )
        {
            return bad(format!(
                "the rollout gate cannot run with {}: its aggregation keeps state across rounds (moments, control variates) that a rejected candidate would already have changed; use fedavg, fedprox or expert-wise",
                self.strategy.kind
            ));
        }
        if self.strategy.kind == StrategyKind::ExpertWise {
            if self.train.compress != Compression::None {
                return bad(format!(
                    "expert-wise aggregation divides each expert's sum by its weight's sum, and compression {} drops weights apart from what they weigh; run it uncompressed",
                    self.train.compress
                ));
            }
            if let Some(sa) = &self.secure_aggregation
                && sa.keep_fraction.is_some_and(|k| k < 1.0)
            {
                return bad("expert-wise aggregation divides each expert's sum by its weight's sum, and secure aggregation's sparsity would drop weights apart from what they weigh; run it without keep_fraction".into());
            }
        }
        if self.gate.is_some() && (mode.is_some() || self.train.dp_sgd.is_some()) {
            return bad("the rollout gate releases each agent's success counts on its own episodes without noise, which a DP job's budget does not cover; run the gate in a job without dp, or gate on the coordinator's held-out set".into());
        }
        if self.evaluate_every > 0 && mode.is_some() {
            return bad("federated evaluation releases each agent's loss and accuracy on its own data without noise, which a DP job's budget does not cover (its agents decline it); evaluate on the coordinator's held-out set instead (evaluate_every = 0)".into());
        }
        if let Some(r) = &self.robust {
            self.check_robust(r)?;
        }
        if self.attested_aggregator && self.secure_aggregation.is_some() {
            return bad("attested_aggregator seals each update to an aggregator in a TEE so that its robust rules can see it; under secure aggregation no one sees an update, so there is nothing to seal: use one or the other".into());
        }
        if let Some(p) = &self.reputation {
            p.check().map_err(SpecConflict)?;
            let screens = self.robust.is_some_and(|r| {
                r.kind.needs_individual_updates()
                    && !(r.kind == crate::robust::AggregatorKind::NormBound
                        && r.norm_bound.is_some())
            });
            if !screens {
                return bad("reputation counts the robust aggregator's flags, and this job's rounds screen no individual update; set aggregator = \"outlier-3sigma\" (or median, trimmed-mean, krum, multi-krum, bulyan, or norm-bound without a fixed norm_bound)".into());
            }
        }
        if self.strategy.kind == StrategyKind::Scaffold && matches!(mode, Some(DpMode::Central(_)))
        {
            return bad("SCAFFOLD cannot run under central DP: its control variates are per-client and un-noised; use fedavg, fedprox or fedadam".into());
        }
        Ok(())
    }

    /// A robust rule needs every update in the clear, a plain server step,
    /// and rounds big enough for its `f`.
    fn check_robust(&self, r: &crate::robust::RobustSpec) -> Result<(), SpecConflict> {
        let bad = |m: String| Err(SpecConflict(m));
        r.check().map_err(SpecConflict)?;
        if !r.kind.needs_individual_updates() {
            return Ok(());
        }
        if self.secure_aggregation.is_some() {
            return bad(format!(
                "the {} aggregator needs each agent's update, which secure aggregation never \
                 reveals to anyone; under SecAgg+ use aggregator = fedavg with the rollout gate \
                 (gate_margin) and rollback, or run the robust rule without secure aggregation",
                r.kind
            ));
        }
        if self.privacy.is_some() || self.train.dp_sgd.is_some() {
            return bad(format!(
                "the {} aggregator drops or reweighs updates by what the others sent, which the \
                 DP accountant does not cover (its bound assumes every sampled update is clipped \
                 and summed); under dp, run without an aggregator (the DP clip already bounds \
                 every update's influence), or run the robust rule without dp",
                r.kind
            ));
        }
        if matches!(
            self.strategy.kind,
            StrategyKind::Scaffold | StrategyKind::ExpertWise
        ) {
            return bad(format!(
                "the {} aggregator combines whole updates, and {} needs its own per-client sums \
                 (control variates, per-expert weights); use fedavg, fedprox or fedadam",
                r.kind, self.strategy.kind
            ));
        }
        if self.train.compress != Compression::None {
            return bad(format!(
                "the {} aggregator compares whole updates, and compression {} sends each agent's \
                 largest coordinates only; run it uncompressed",
                r.kind, self.train.compress
            ));
        }
        // What the sampler selects (crate tg-strategy's Sampler: ⌈q·n⌉,
        // at least the quorum, at most everyone).
        let selected = ((f64::from(self.clients) * self.fraction).ceil() as usize)
            .max(self.min_clients as usize)
            .min(self.clients as usize);
        if let Some(why) = r.refuses(selected) {
            return bad(format!(
                "{why} (this job selects {selected} of {} clients per round)",
                self.clients
            ));
        }
        if (self.min_clients as usize) < r.min_updates() {
            return bad(format!(
                "the {} aggregator needs {} updates in a round, and the quorum min_clients = {} \
                 would let a round with fewer reach it and fail (E113); set min_clients to {} or more",
                r.kind,
                r.min_updates(),
                self.min_clients,
                r.min_updates()
            ));
        }
        Ok(())
    }
}
