//! The user's Python handlers as the engine's [`Learner`] and
//! [`Evaluator`]: each call takes the GIL only while Python runs, and
//! whatever Python returns is checked like any input from outside.

use pyo3::prelude::*;
use pyo3::types::PyDict;
use tg_agent::{Capabilities, Learner, Round};
use tg_model::{Evaluation, LocalOutcome, ModelError};
use tg_types::Parameters;
use tg_types::record::TaskSuccesses;
use tg_types::spec::LocalObjective;

use crate::tensors::{Wire, to_params, to_wire};

/// A Python client: an object with `_tg_train(arrays, config)` returning
/// `(arrays, num_examples, loss or None)` and `_tg_evaluate(arrays, config)`
/// returning `(loss, num_examples, accuracy or None, [(task, successes,
/// episodes)])` (the SDK's `ClientApp` and `NumPyClient` adapters provide
/// both).
pub(crate) struct PyLearner {
    client: Py<PyAny>,
    index: usize,
    /// The client declared that it adds FedProx's proximal term.
    proximal: bool,
    layout: Vec<(String, Vec<usize>)>,
    /// What the client last reported: its update's weight.
    examples: usize,
}

impl PyLearner {
    pub(crate) fn new(
        client: Py<PyAny>,
        index: usize,
        layout: Vec<(String, Vec<usize>)>,
        proximal: bool,
    ) -> Self {
        Self {
            client,
            index,
            proximal,
            layout,
            examples: 0,
        }
    }

    /// Logs a failed call on the `tensorguard` logger (the round goes on
    /// without this client) and returns the message.
    fn failed(&self, py: Python<'_>, what: &str, e: &PyErr) -> String {
        let message = format!("client {}: {what} raised {e}", self.index);
        let _ = py
            .import("logging")
            .and_then(|l| l.call_method1("getLogger", ("tensorguard",)))
            .and_then(|log| log.call_method1("warning", (message.clone(),)));
        message
    }
}

fn config<'py>(py: Python<'py>, round: &Round<'_>) -> PyResult<Bound<'py, PyDict>> {
    let c = PyDict::new(py);
    c.set_item("server_round", round.number)?;
    c.set_item("local_epochs", round.config.local_epochs)?;
    c.set_item("batch_size", round.config.batch_size)?;
    c.set_item("learning_rate", round.config.learning_rate)?;
    c.set_item("seed", round.seed)?;
    if let LocalObjective::Proximal { mu } = round.objective {
        c.set_item("proximal_mu", *mu)?;
    }
    Ok(c)
}

impl Learner for PyLearner {
    fn layout(&self) -> Vec<(String, Vec<usize>)> {
        self.layout.clone()
    }

    fn num_examples(&self) -> usize {
        self.examples
    }

    fn capabilities(&self) -> Capabilities {
        if self.proximal {
            Capabilities::plain().with_proximal()
        } else {
            Capabilities::plain()
        }
    }

    fn train(&mut self, round: &Round<'_>) -> Result<LocalOutcome, String> {
        let (weights, examples, loss) = Python::attach(|py| {
            let call = || -> PyResult<(Vec<Wire>, u64, Option<f64>)> {
                let cfg = config(py, round)?;
                self.client
                    .call_method1(py, "_tg_train", (to_wire(round.global), cfg))?
                    .extract(py)
            };
            call().map_err(|e| self.failed(py, "train", &e))
        })?;
        let new = to_params(weights).map_err(|e| e.to_string())?;
        if examples == 0 {
            return Err(format!(
                "client {}: train returned num_examples = 0; an update needs at least one example",
                self.index
            ));
        }
        self.examples = usize::try_from(examples).map_err(|_| "num_examples too large")?;
        let mut update = new;
        update
            .add_scaled(round.global, -1.0)
            .map_err(|e| format!("client {}: the returned model: {e}", self.index))?;
        Ok(LocalOutcome {
            update,
            train_loss: loss,
            steps: 0,
            control_delta: None,
        })
    }

    /// A client with an operating envelope (`EdgeClient`) says how many
    /// bytes its next update may take; an error in it is the client's and
    /// allows nothing (the round is declined rather than over-sent).
    fn upload_budget(&mut self, seconds_left: Option<f64>) -> Option<u64> {
        Python::attach(|py| {
            let client = self.client.bind(py);
            match client.hasattr("_tg_upload_budget") {
                Ok(false) => return None,
                Ok(true) => {}
                Err(e) => {
                    self.failed(py, "the envelope's upload budget", &e);
                    return Some(0);
                }
            }
            match client
                .call_method1("_tg_upload_budget", (seconds_left,))
                .and_then(|b| b.extract::<Option<u64>>())
            {
                Ok(budget) => budget,
                Err(e) => {
                    self.failed(py, "the envelope's upload budget", &e);
                    Some(0)
                }
            }
        })
    }

    /// A client with an operating envelope says whether it may take part
    /// now: `None` (ready) or the reason it sits the round out.
    fn ready(&mut self) -> Result<(), String> {
        Python::attach(|py| {
            let client = self.client.bind(py);
            if !client
                .hasattr("_tg_ready")
                .map_err(|e| self.failed(py, "ready", &e))?
            {
                return Ok(());
            }
            match client
                .call_method0("_tg_ready")
                .and_then(|r| r.extract::<Option<String>>())
            {
                Ok(None) => Ok(()),
                Ok(Some(why)) => Err(why),
                Err(e) => Err(self.failed(py, "ready", &e)),
            }
        })
    }

    fn evaluate(&mut self, model: &Parameters) -> Result<Evaluation, String> {
        self.evaluate_tasks(model).map(|(e, _)| e)
    }

    fn evaluate_tasks(
        &mut self,
        model: &Parameters,
    ) -> Result<(Evaluation, Vec<TaskSuccesses>), String> {
        type Reply = (f64, u64, Option<f64>, Vec<(String, u64, u64)>);
        let (loss, examples, accuracy, tasks) = Python::attach(|py| {
            let call = || -> PyResult<Reply> {
                self.client
                    .call_method1(py, "_tg_evaluate", (to_wire(model), PyDict::new(py)))?
                    .extract(py)
            };
            call().map_err(|e| self.failed(py, "evaluate", &e))
        })?;
        let evaluation = Evaluation {
            loss,
            accuracy: accuracy.ok_or_else(|| {
                format!(
                    "client {}: evaluate reported no metrics[\"accuracy\"]",
                    self.index
                )
            })?,
            num_examples: examples,
        };
        let tasks = tasks
            .into_iter()
            .map(|(task, successes, episodes)| TaskSuccesses {
                task,
                successes,
                episodes,
            })
            .collect();
        Ok((evaluation, tasks))
    }
}

/// The user's server-side evaluation: a callable from the model's arrays
/// to `(loss, accuracy or None)`.
pub(crate) struct PyEvaluator {
    f: Py<PyAny>,
}

impl PyEvaluator {
    pub(crate) fn new(f: Py<PyAny>) -> Self {
        Self { f }
    }
}

impl tg_coordinator::Evaluator for PyEvaluator {
    fn evaluate(&mut self, params: &Parameters) -> Result<Option<Evaluation>, ModelError> {
        Python::attach(|py| {
            let (loss, accuracy): (f64, Option<f64>) = self
                .f
                .call1(py, (to_wire(params),))
                .and_then(|r| r.extract(py))
                .map_err(|e| ModelError::Unsuitable(format!("the evaluate function raised {e}")))?;
            Ok(Some(Evaluation {
                loss,
                accuracy: accuracy.unwrap_or(f64::NAN),
                num_examples: 0,
            }))
        })
    }
}
