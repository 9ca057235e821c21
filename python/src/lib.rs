//! `tensorguard._core`: the native half of the Python SDK.
//!
//! Design decision: Python holds the user's model and training code, and
//! nothing else. The round — sampling, the data owner's checks,
//! compression, clipping, noise, masking, aggregation and accounting — runs
//! in the same Rust engine as `tensorguard demo` and a fleet. This module
//! only moves tensors across the boundary (as `(name, shape, little-endian
//! f32 bytes)`), calls the user's handlers with the GIL held, and releases
//! the GIL everywhere else. Errors cross as the CLI's coded errors: each
//! becomes an instance of a `tensorguard.errors` class carrying the same
//! `E0xx` code and the same words.

// `ci-shared-build` turns on test-only features of shared dependencies
// (tg-net's fault injection, tokio's test-util) so that CI's dev build
// reuses the test build (python/Cargo.toml). It must never reach an
// optimised wheel.
#[cfg(all(feature = "ci-shared-build", not(debug_assertions)))]
compile_error!(
    "the ci-shared-build feature is for CI's dev-profile build only (it enables fault injection); build a wheel without it"
);

mod agent;
mod edge;
mod errors;
mod learner;
mod strategy;
mod tensors;

use std::path::PathBuf;
use std::time::Duration;

use pyo3::prelude::*;
use tg_diag::{UserError, from_inproc, from_job};
use tg_types::JobId;

use crate::errors::raise;
use crate::learner::{PyEvaluator, PyLearner};
use crate::tensors::{Wire, to_params};

/// How long a round may wait for the slowest client.
const ROUND_DEADLINE: Duration = Duration::from_secs(3600);

/// Runs `job` (the TOML of a job file's `[job]`, `[privacy]` and
/// `[secure_aggregation]` sections) on `clients`, starting from `initial`,
/// and returns the summary `tensorguard demo --json` prints (as JSON) with
/// the final model.
#[pyfunction]
#[pyo3(signature = (job, initial, clients, evaluate = None, data_dir = None, on_round = None, strategy = None))]
#[allow(clippy::too_many_arguments)]
fn simulate(
    py: Python<'_>,
    job: &str,
    initial: Vec<Wire>,
    clients: Vec<Py<PyAny>>,
    evaluate: Option<Py<PyAny>>,
    data_dir: Option<PathBuf>,
    on_round: Option<Py<PyAny>>,
    strategy: Option<Py<PyAny>>,
) -> PyResult<(String, Vec<Wire>)> {
    let job =
        tg_job::parse_simulation("simulation.run", job).map_err(|e| raise(py, from_job(e)))?;
    let initial = to_params(initial).map_err(|e| raise(py, e))?;
    let layout: Vec<(String, Vec<usize>)> = initial
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    let plan = job
        .plan(&tg_job::Facts {
            num_parameters: initial.num_values(),
            // The clients' data is theirs: the engine learns each count
            // only from what a client reports with its update.
            train_examples: 0,
            client_sizes: None,
        })
        .map_err(|e| raise(py, from_job(e)))?;
    let learners: Vec<Box<dyn tg_agent::Learner>> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let proximal = c
                .bind(py)
                .getattr("_tg_proximal")
                .and_then(|v| v.is_truthy())
                .unwrap_or(false);
            Box::new(PyLearner::new(c, i, layout.clone(), proximal)) as Box<dyn tg_agent::Learner>
        })
        .collect();
    let temp;
    let dir = match data_dir {
        Some(d) => d,
        None => {
            temp = tempfile::tempdir().map_err(|e| {
                raise(
                    py,
                    UserError::new(
                        tg_diag::Code::DataDirUnwritable,
                        format!("no temporary directory for the run's store: {e}"),
                        "the run records its rounds and models in a store",
                        "pass data_dir= a writable directory",
                    ),
                )
            })?;
            temp.path().to_path_buf()
        }
    };
    let evaluator: Box<dyn tg_coordinator::Evaluator> = match evaluate {
        Some(f) => Box::new(PyEvaluator::new(f)),
        None => Box::new(tg_coordinator::plan::NoHeldOut),
    };
    let mut federation = tg_inproc::Federation::new(&plan, initial, learners)
        .map_err(|e| raise(py, from_inproc(e, &dir)))?;
    if let Some(object) = strategy {
        // Sampling and the local objective stay the job's; the user's
        // object aggregates.
        let inner =
            tg_coordinator::plan::build_strategy(&plan.spec, tg_coordinator::plan::NoiseSource::Os)
                .map_err(|e| raise(py, from_inproc(e.into(), &dir)))?;
        federation = federation
            .with_strategy(Box::new(strategy::PyStrategy::new(object, inner)))
            .map_err(|e| raise(py, from_inproc(e, &dir)))?;
    }
    let id = job_id().map_err(|e| raise(py, e))?;
    let spec = plan.spec.clone();
    // The GIL is released for the whole run; each client's handler takes
    // it back only while it runs.
    type Done = (serde_json::Value, Vec<Wire>, Option<PyErr>);
    let (summary, model, interrupted) = py
        .detach(|| -> Result<Done, UserError> {
            let mut store =
                tg_store::Store::open(&dir).map_err(|e| tg_diag::from_store(e, &dir))?;
            let runtime = runtime()?;
            // Ctrl-C: Python's signal handlers run only on the main thread,
            // when it holds the GIL; this thread is the one that released
            // it, so it checks every 100 ms and stops the job before its
            // next round.
            let stop = tg_coordinator::StopSignal::default();
            // The caller's per-round callback, with the GIL; if it raises,
            // the job stops before its next round and the error goes on.
            let raised: std::sync::Mutex<Option<PyErr>> = std::sync::Mutex::new(None);
            let report = |r: &tg_types::record::RoundRecord| {
                let Some(callback) = &on_round else { return };
                let text = tg_coordinator::runner::round_json(r).to_string();
                if let Err(e) = Python::attach(|py| callback.call1(py, (text,)).map(|_| ()))
                    && let Ok(mut slot) = raised.lock()
                    && slot.is_none()
                {
                    stop.stop();
                    *slot = Some(e);
                }
            };
            let (finished, interrupted) = runtime.block_on(async {
                let run = federation.run(
                    id,
                    &mut store,
                    ROUND_DEADLINE,
                    evaluator,
                    stop.clone(),
                    report,
                );
                tokio::pin!(run);
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                let mut interrupted = None;
                loop {
                    tokio::select! {
                        done = &mut run => break (done, interrupted),
                        _ = tick.tick(), if interrupted.is_none() => {
                            if let Err(e) = Python::attach(|py| py.check_signals()) {
                                stop.stop();
                                interrupted = Some(e);
                            }
                        }
                    }
                }
            });
            let finished = finished.map_err(|e| from_inproc(e, &dir))?;
            let interrupted = interrupted.or_else(|| raised.into_inner().ok().flatten());
            let extra = finished.run_json(&spec);
            let summary = finished
                .record(&store, Some(extra))
                .map_err(|e| from_inproc(e.into(), &dir))?;
            Ok((
                summary,
                tensors::to_wire(&finished.outcome.model),
                interrupted,
            ))
        })
        .map_err(|e| raise(py, e))?;
    // Interrupted: the rounds so far are recorded; the interrupt goes on.
    if let Some(e) = interrupted {
        return Err(e);
    }
    Ok((summary.to_string(), model))
}

/// The async runtime a call runs on: two workers, as the machine has.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, UserError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            UserError::new(
                tg_diag::Code::Internal,
                format!("the async runtime could not start: {e}"),
                "the operating system refused threads or timers",
                "check the process's limits (ulimit -u)",
            )
        })
}

fn job_id() -> Result<JobId, UserError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| {
        UserError::new(
            tg_diag::Code::Internal,
            format!("the OS random number generator failed: {e}"),
            "a run's id is drawn from it",
            "check the system's entropy source",
        )
    })?;
    Ok(JobId::from_bytes(b))
}

/// The bundled UCI digits (1,797 8×8 images, features in [0, 1]),
/// partitioned as a job would partition them.
#[pyfunction]
#[pyo3(signature = (partition_id, num_partitions, partition = "iid", seed = 0))]
fn digits(
    py: Python<'_>,
    partition_id: usize,
    num_partitions: usize,
    partition: &str,
    seed: u64,
) -> PyResult<(Wire, Vec<u32>, Wire, Vec<u32>)> {
    tensors::digits(partition_id, num_partitions, partition, seed).map_err(|e| raise(py, e))
}

/// Reads a safetensors file's bytes into `(name, shape, f32 bytes)` tensors.
#[pyfunction]
fn read_safetensors(py: Python<'_>, bytes: &[u8]) -> PyResult<Vec<Wire>> {
    let params = py
        .detach(|| tg_types::Parameters::from_safetensors(bytes))
        .map_err(|e| {
            raise(
                py,
                tg_diag::invalid(
                    format!("not a model TensorGuard can read: {e}"),
                    "models are safetensors files of f32, f16 or bf16 tensors",
                    "save the model with tensorguard.save_model or safetensors.torch.save_file (f32, f16 or bf16 tensors)",
                ),
            )
        })?;
    Ok(tensors::to_wire(&params))
}

/// A committed model from a store, by its SHA-256 (`model_sha256` in a
/// summary's history).
#[pyfunction]
fn stored_model(py: Python<'_>, sha256: &str, data_dir: PathBuf) -> PyResult<Vec<Wire>> {
    let bytes = py
        .detach(|| {
            let store = tg_store::Store::open(&data_dir)?;
            store.blobs().get(sha256)
        })
        .map_err(|e| raise(py, tg_diag::from_store(e, &data_dir)))?;
    read_safetensors(py, &bytes)
}

/// Writes tensors as a safetensors file's bytes (what the engine stores);
/// `dtypes` names tensors to store as `"F16"` or `"BF16"` (f32 otherwise).
#[pyfunction]
#[pyo3(signature = (tensors, dtypes = None))]
fn write_safetensors(
    py: Python<'_>,
    tensors: Vec<Wire>,
    dtypes: Option<std::collections::HashMap<String, String>>,
) -> PyResult<Vec<u8>> {
    let p = to_params(tensors).map_err(|e| raise(py, e))?;
    let mut stored = std::collections::HashMap::new();
    for (name, d) in dtypes.unwrap_or_default() {
        let s = match d.as_str() {
            "F32" => tg_types::Stored::F32,
            "F16" => tg_types::Stored::F16,
            "BF16" => tg_types::Stored::BF16,
            other => {
                return Err(raise(
                    py,
                    tg_diag::invalid(
                        format!("dtype {other:?} for tensor `{name}`"),
                        "models are stored as F32, F16 or BF16",
                        "use one of those",
                    ),
                ));
            }
        };
        stored.insert(name, s);
    }
    py.detach(|| p.to_safetensors_as(&stored, None))
        .map_err(|e| {
            raise(
                py,
                tg_diag::invalid(
                    format!("the model cannot be written: {e}"),
                    "safetensors refused the tensors",
                    "check the tensors' names and shapes",
                ),
            )
        })
}

/// The native module.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(simulate, m)?)?;
    m.add_function(wrap_pyfunction!(digits, m)?)?;
    m.add_function(wrap_pyfunction!(read_safetensors, m)?)?;
    m.add_function(wrap_pyfunction!(write_safetensors, m)?)?;
    m.add_function(wrap_pyfunction!(stored_model, m)?)?;
    m.add_class::<agent::NativeAgent>()?;
    m.add_function(wrap_pyfunction!(edge::edge_package, m)?)?;
    m.add_function(wrap_pyfunction!(edge::read_edge_package, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
