//! One job run, whoever hosts it. The in-process simulation (`demo`) and a
//! fleet coordinator (`coordinator start`, jobs from the API) each hand a
//! [`JobRun`] their transport, the planned job and the coordinator's
//! held-out data; the run builds the strategy and configuration from the
//! plan, runs the rounds, and sums the job up in one schema
//! ([`JobSummary`]) with one status rule ([`RunOutcome::status`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use tg_store::Store;
use tg_types::record::{JobStatus, RoundRecord, RoundStatus};
use tg_types::{AgentId, JobId, Parameters};

use crate::plan::{NoiseSource, Stages, build_strategy};
use crate::{Coordinator, Evaluator, Result, RunConfig, RunOutcome, StopSignal, Transport};

/// A planned job, ready to run over a transport.
pub struct JobRun<'a> {
    /// The job's id.
    pub id: JobId,
    /// Which runner hosts it, as recorded in the store (`demo`, `fleet`).
    pub kind: &'a str,
    /// The job, resolved and calibrated (`tg_job::Job::plan`).
    pub plan: &'a tg_job::JobPlan,
    /// Stage deadlines.
    pub stages: Stages,
    /// Agents' identity keys, when the runner knows them before round 1
    /// (simulated agents); a fleet learns them at admission.
    pub identities: BTreeMap<AgentId, [u8; 32]>,
    /// The mask generator secure rounds use.
    pub prg: tg_secagg::crypto::Prg,
    /// Where to export rounds, stage latencies and ε.
    pub metrics: Option<Arc<tg_metrics::Metrics>>,
    /// An operator's stop request.
    pub stop: Option<StopSignal>,
    /// The caller's own strategy instead of the job's (see
    /// [`custom_strategy_refusal`]: plaintext rounds without DP only).
    pub strategy: Option<Box<dyn tg_strategy::Strategy>>,
    /// The attested aggregator's session secret: every training reply must
    /// arrive sealed to it (a fleet job with `attested_aggregator`).
    pub sealing: Option<Arc<tg_proto::SessionSecret>>,
}

/// Why a caller's own strategy cannot run `spec`, if it cannot: it sees
/// each client's update, which secure aggregation never reveals, and it
/// would aggregate outside the DP mechanism whose ε the job reports.
pub fn custom_strategy_refusal(spec: &tg_types::spec::JobSpec) -> Option<&'static str> {
    if spec.secure_aggregation.is_some() {
        return Some(
            "a custom strategy needs each client's update, and under secure aggregation the coordinator sees only their sum; use a built-in strategy (fedavg, fedprox, fedadam), which aggregates the sum, or run without secure aggregation",
        );
    }
    if spec.privacy.is_some() || spec.train.dp_sgd.is_some() {
        return Some(
            "under differential privacy the engine's strategy clips and noises the aggregate that ε is reported for; a custom strategy would release it without that noise, so the reported ε would be false; use a built-in strategy, or run without dp",
        );
    }
    if spec.robust.is_some() {
        return Some(
            "the job names a robust aggregator, and a custom strategy would aggregate instead of it, silently; drop the aggregator from the job, or screen the updates in your strategy",
        );
    }
    None
}

/// Why an expert-wise job cannot start from `initial`, if it cannot (see
/// [`tg_strategy::initial_model_refusal`]).
pub fn expert_wise_refusal(spec: &tg_types::spec::JobSpec, initial: &Parameters) -> Option<String> {
    if spec.strategy.kind != tg_types::spec::StrategyKind::ExpertWise {
        return None;
    }
    if let Some(why) = tg_strategy::initial_model_refusal(initial) {
        return Some(why);
    }
    // Report tensors are clipped with the update under DP: they would take
    // its clip (an unscaled 0/1 per expert) and be noise at that scale.
    let reports = [tg_strategy::EXPERT_TASK_MASS, tg_strategy::EXPERT_CLIENTS];
    (spec.privacy.is_some()
        && initial
            .tensors()
            .iter()
            .any(|t| reports.contains(&t.name.as_str())))
    .then(|| {
        format!(
            "strategy expert-wise with DP: the model carries the report tensors `{}`/`{}`, which would share the clip with the update; build it with tensorguard.lora.expert_state_dict(policy, report=False)",
            reports[0], reports[1]
        )
    })
}

pub use tg_types::record::JobSummary;

/// A run that ended: its outcome and its summary.
pub struct Finished {
    /// The job.
    pub id: JobId,
    /// Rounds, final model and evaluation, ε.
    pub outcome: RunOutcome,
    /// The summary every runner records.
    pub summary: JobSummary,
}

impl JobRun<'_> {
    /// Runs (or resumes) the job from `initial`, recording every round in
    /// `store`; `on_round` sees each round as it is recorded.
    pub async fn run<T: Transport>(
        self,
        transport: T,
        evaluator: Box<dyn Evaluator>,
        store: &mut Store,
        initial: Parameters,
        on_round: impl FnMut(&RoundRecord) + Send,
    ) -> Result<Finished> {
        let plan = self.plan;
        let noise = match plan.spec.simulated_noise_seed {
            Some(seed) => NoiseSource::Simulated(seed),
            None => NoiseSource::Os,
        };
        let strategy = match self.strategy {
            Some(custom) => {
                if let Some(why) = custom_strategy_refusal(&plan.spec) {
                    return Err(tg_strategy::StrategyError::Config(why.into()).into());
                }
                custom
            }
            None => build_strategy(&plan.spec, noise)?,
        };
        if let Some(why) = expert_wise_refusal(&plan.spec, &initial) {
            return Err(tg_strategy::StrategyError::Config(why).into());
        }
        let mut config = RunConfig::for_job(
            self.id,
            self.kind,
            &plan.spec,
            self.stages,
            self.identities,
            self.prg,
        );
        config.sealing = self.sealing;
        let mut coordinator = Coordinator::new(transport, strategy, evaluator, store, config);
        if let Some(m) = self.metrics {
            coordinator = coordinator.with_metrics(m);
        }
        if let Some(s) = self.stop {
            coordinator = coordinator.with_stop(s);
        }
        let outcome = coordinator.run(initial, on_round).await?;
        let id = self.id.to_string();
        // Distributed DP: the last ledger row's ε without amplification.
        let epsilon_vs_coordinator = store
            .ledger(&id)
            .ok()
            .and_then(|l| l.last().and_then(|e| e.release.clone()))
            .map(|r| r.epsilon_vs_coordinator);
        let committed = outcome
            .history
            .iter()
            .filter(|r| r.status == RoundStatus::Committed)
            .count();
        let status = outcome.status();
        let summary = JobSummary {
            job: id,
            kind: self.kind.to_owned(),
            status,
            reason: outcome.budget_exhausted.clone().or_else(|| {
                outcome
                    .stopped_before
                    .map(|n| format!("stopped by an operator before round {n}"))
            }),
            rounds: plan.spec.rounds,
            rounds_committed: committed,
            rounds_failed: outcome.history.len() - committed,
            final_accuracy: outcome.final_evaluation.map(|e| e.accuracy),
            final_loss: outcome.final_evaluation.map(|e| e.loss),
            final_model_sha256: outcome.model_sha256.clone(),
            epsilon: outcome.epsilon,
            epsilon_vs_coordinator,
            budget_exhausted: outcome.budget_exhausted.clone(),
            simulation: plan.simulation_label(),
        };
        Ok(Finished {
            id: self.id,
            outcome,
            summary,
        })
    }
}

/// One round as `--json` outputs and the Python SDK's `on_round` show it.
pub fn round_json(r: &RoundRecord) -> serde_json::Value {
    serde_json::json!({
        "round": r.round, "status": r.status.as_str(), "accuracy": r.accuracy, "loss": r.loss,
        "selected": r.selected, "participants": r.participants, "upload_bytes": r.upload_bytes,
        "download_bytes": r.download_bytes, "duration_ms": r.duration_ms, "reason": r.reason,
        "model_sha256": r.model_sha256, "parent_sha256": r.parent_sha256, "epsilon": r.epsilon,
        "federated": r.federated, "gate": r.gate,
        "experts": (!r.experts.is_empty()).then_some(&r.experts),
        "screened": (!r.screened.is_empty()).then_some(&r.screened),
        "reputation": (!r.reputation.is_empty()).then_some(&r.reputation),
    })
}

impl Finished {
    /// The keys every in-process runner (the demo, the Python SDK) adds to
    /// the summary: the job as run (`spec`), its privacy and its history.
    pub fn run_json(&self, spec: &tg_types::spec::JobSpec) -> serde_json::Value {
        let mut v = serde_json::json!({
            "run_id": self.id.to_string(),
            "strategy": spec.strategy.kind.to_string(),
            "clients": spec.clients,
            "min_clients": spec.min_clients,
            "fraction": spec.fraction,
            "seed": spec.seed,
            "local_epochs": spec.train.local_epochs,
            "secure_aggregation": spec.secure_aggregation,
            "history": self.history_json(),
        });
        if let Some(p) = &spec.privacy {
            v["dp"] = serde_json::json!(p.mode_name());
            v["target_epsilon"] = serde_json::json!(p.target_epsilon.get());
            v["delta"] = serde_json::json!(p.delta.get());
            v["accountant"] = serde_json::json!(p.accountant.as_str());
            v["privacy"] = serde_json::to_value(p).unwrap_or_default();
            if self.summary.epsilon_vs_coordinator.is_some() {
                v["budget_stops_on"] = serde_json::json!(p.budget_against.describe());
            }
        }
        v
    }

    /// Each round as `--json` outputs (the demo, the Python SDK) print it.
    pub fn history_json(&self) -> Vec<serde_json::Value> {
        self.outcome.history.iter().map(round_json).collect()
    }

    /// The job's status.
    pub fn status(&self) -> JobStatus {
        self.outcome.status()
    }

    /// The summary as JSON, with the runner's own keys (`extra`, an
    /// object) added after the common ones.
    pub fn to_json(&self, extra: Option<serde_json::Value>) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.summary).unwrap_or(serde_json::Value::Null);
        if let (Some(o), Some(serde_json::Value::Object(x))) = (v.as_object_mut(), extra) {
            for (k, val) in x {
                o.entry(k).or_insert(val);
            }
        }
        v
    }

    /// Records the job's end in `store` with its summary (and `extra`
    /// keys); returns the JSON recorded.
    pub fn record(
        &self,
        store: &Store,
        extra: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let json = self.to_json(extra);
        store.finish_job(
            self.id,
            self.status(),
            self.summary.reason.as_deref(),
            &json,
        )?;
        Ok(json)
    }
}
