//! A user's Python strategy as the engine's [`Strategy`]: the engine still
//! samples clients, checks and folds every update; the user's
//! `aggregate_fit` turns the round's accepted client models into the next
//! global model, which is checked like any input from outside.

use pyo3::prelude::*;
use tg_strategy::{Fold, FoldRule, Strategy, StrategyError, TrainPlan};
use tg_types::{AgentId, Parameters};

use crate::tensors::{Wire, to_params, to_wire};

/// The user's object with `aggregate_fit(server_round, results,
/// global_model)`; `results` are `(client model, num_examples)` in
/// canonical client order.
pub(crate) struct PyStrategy {
    object: Py<PyAny>,
    /// Sampling and the local objective: the job's own strategy.
    inner: Box<dyn Strategy>,
}

impl PyStrategy {
    pub(crate) fn new(object: Py<PyAny>, inner: Box<dyn Strategy>) -> Self {
        Self { object, inner }
    }
}

/// The round fails with `why` (and the `tensorguard` logger says so); the
/// job goes on.
fn failed(why: String) -> StrategyError {
    let message = format!("the custom strategy: {why}");
    Python::attach(|py| {
        let _ = py
            .import("logging")
            .and_then(|l| l.call_method1("getLogger", ("tensorguard",)))
            .and_then(|log| log.call_method1("warning", (message.clone(),)));
    });
    StrategyError::Rejected(message)
}

impl Strategy for PyStrategy {
    fn name(&self) -> &'static str {
        "python"
    }

    fn configure_train(
        &mut self,
        round: u32,
        global: &Parameters,
        available: &[AgentId],
        rng: &mut dyn rand::RngCore,
    ) -> tg_strategy::Result<TrainPlan> {
        self.inner.configure_train(round, global, available, rng)
    }

    fn fold_rule(&self) -> FoldRule {
        self.inner.fold_rule().keeping()
    }

    fn apply(
        &mut self,
        round: u32,
        global: &Parameters,
        fold: Fold,
    ) -> tg_strategy::Result<Parameters> {
        let mut results = Vec::with_capacity(fold.kept().len());
        for k in fold.kept() {
            // Flower's view: each client's model, not its update.
            let mut model = global.clone();
            model.add_scaled(&k.update, 1.0)?;
            results.push((to_wire(&model), k.num_examples));
        }
        if results.is_empty() {
            return Err(StrategyError::NoResults);
        }
        let returned: Vec<Wire> = Python::attach(|py| {
            self.object
                .call_method1(py, "_tg_aggregate", (round, results, to_wire(global)))
                .and_then(|r| r.extract(py))
                .map_err(|e| failed(format!("aggregate_fit raised {e}")))
        })?;
        let next = to_params(returned).map_err(|e| failed(e.to_string()))?;
        let layout = |p: &Parameters| {
            p.tensors()
                .iter()
                .map(|t| (t.name.clone(), t.shape.clone()))
                .collect::<Vec<_>>()
        };
        if layout(&next) != layout(global) {
            return Err(failed(
                "aggregate_fit returned a model with other tensors (names or shapes) than the global model".into(),
            ));
        }
        if !next.all_finite() {
            return Err(failed(
                "aggregate_fit returned a model with NaN or infinite values".into(),
            ));
        }
        Ok(next)
    }
}
