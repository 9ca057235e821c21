//! A real network agent whose learner is the user's Python client: the
//! same runtime as `tensorguard agent start` (libp2p, signed frames,
//! admission, attestation, the owner's floors and budget), with
//! [`PyLearner`] in place of the built-in candle learner.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use tg_agent::net::{JoinConfig, Multiaddr, Runner, Status};
use tg_agent::{AgentError, Learner, LocalTraining, OwnerPolicy};
use tg_diag::{Code, UserError};

use crate::errors::raise;
use crate::learner::PyLearner;
use crate::tensors::{Wire, to_params};

/// The user's Python client as a network agent's local training: its
/// data stays in Python, named by its owner for the privacy ledger.
struct PyTraining {
    client: Py<PyAny>,
    /// The client's index in logs.
    index: usize,
    layout: Vec<(String, Vec<usize>)>,
    proximal: bool,
    dataset: String,
}

impl LocalTraining for PyTraining {
    fn examples(&self) -> usize {
        // Known only from what the client reports with each update.
        0
    }

    fn ledger_key(&self, policy: &OwnerPolicy) -> String {
        policy.ledger_key_named(&self.dataset)
    }

    fn learner(&self, _offer: &tg_proto::Offer) -> Result<Box<dyn Learner>, AgentError> {
        // Built-in or operator model alike: every round's model must have
        // this client's layout, or the round is declined.
        let client = Python::attach(|py| self.client.clone_ref(py));
        Ok(Box::new(PyLearner::new(
            client,
            self.index,
            self.layout.clone(),
            self.proximal,
        )))
    }
}

fn usage(what: impl Into<String>, why: impl Into<String>, fix: impl Into<String>) -> UserError {
    UserError::new(Code::InvalidValue, what, why, fix)
}

fn multiaddr(key: &str, text: &str) -> Result<Multiaddr, UserError> {
    text.parse().map_err(|e| {
        usage(
            format!("{key} = {text:?} is not a network address"),
            format!("it does not parse as a multiaddr: {e}"),
            "write it as `tensorguard coordinator start` prints it, e.g. /ip4/10.0.0.5/tcp/7700/p2p/12D3KooW…",
        )
    })
}

/// A network agent: built once, run once (`run` blocks, with the GIL
/// released; `stop` from any thread ends it).
#[pyclass(module = "tensorguard._core", frozen)]
pub(crate) struct NativeAgent {
    training: Arc<PyTraining>,
    key: tg_trust::IdentityKey,
    config: Mutex<Option<JoinConfig>>,
    listen: Vec<Multiaddr>,
    status: Arc<Status>,
    stop: Arc<AtomicBool>,
    on_declined: Option<Py<PyAny>>,
}

#[pymethods]
impl NativeAgent {
    /// Checks every setting and opens (or creates) the agent's identity
    /// key; the network starts in `run`.
    #[new]
    #[pyo3(signature = (
        client, model, *, coordinator, discover, enroll, data_dir, key_file, passphrase,
        name, once, seed, policy, allow_plaintext, certificate, insecure, listen, dataset,
        on_declined, partition_id = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        client: Py<PyAny>,
        model: Vec<Wire>,
        coordinator: Option<String>,
        discover: bool,
        enroll: Option<String>,
        data_dir: PathBuf,
        key_file: Option<PathBuf>,
        passphrase: Option<String>,
        name: String,
        once: bool,
        seed: u64,
        policy: Option<String>,
        allow_plaintext: bool,
        certificate: Option<String>,
        insecure: bool,
        listen: Vec<String>,
        dataset: String,
        on_declined: Option<Py<PyAny>>,
        partition_id: Option<usize>,
    ) -> PyResult<Self> {
        let fail = |e: UserError| raise(py, e);
        if coordinator.is_none() && !discover {
            return Err(fail(UserError::new(
                Code::Usage,
                "no coordinator to join",
                "the agent needs an address or LAN discovery",
                "pass coordinator=\"/ip4/HOST/tcp/7700/p2p/PEER_ID\" (printed by `tensorguard coordinator start`), or discover=True",
            )));
        }
        let coordinator = coordinator
            .as_deref()
            .map(|a| multiaddr("coordinator", a))
            .transpose()
            .map_err(fail)?;
        let listen = listen
            .iter()
            .map(|a| multiaddr("listen", a))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        let model = to_params(model).map_err(fail)?;
        let layout = model
            .tensors()
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect();
        let mut owner = match &policy {
            None => OwnerPolicy::default(),
            Some(text) => OwnerPolicy::from_toml(text).map_err(|e| {
                fail(usage(
                    "the agent's policy is invalid",
                    e,
                    "top-level keys: allow_plaintext, allow_evaluation, fleet_root, max_round_epsilon, \
                     max_local_epochs, max_dp_steps, max_update_bytes, budget_scope; [budget] epsilon/delta; \
                     [secure_aggregation] min_participants/min_threshold/min_survivor_fraction/\
                     assumed_corrupt/allow_semi_honest/max_colluders",
                ))
            })?,
        };
        owner.allow_plaintext |= allow_plaintext;
        let certificate = certificate
            .as_deref()
            .map(tg_proto::Certificate::from_text)
            .transpose()
            .map_err(|e| {
                fail(usage(
                    "the agent's certificate is invalid",
                    e.to_string(),
                    "ask the fleet's operator for a new certificate (`tensorguard keys certify`)",
                ))
            })?;
        let passphrase = match passphrase {
            Some(p) => Some(tg_trust::Passphrase::new(p)),
            None => tg_trust::Passphrase::from_env().transpose(),
        }
        .unwrap_or_else(tg_trust::Passphrase::require)
        .map_err(|e| fail(tg_diag::from_trust(e)))?;
        // Unsealing the key (Argon2id) takes a while: without the GIL.
        let key = py
            .detach(|| {
                std::fs::create_dir_all(&data_dir).map_err(|e| {
                    UserError::new(
                        Code::DataDirUnwritable,
                        format!("cannot create {}: {e}", data_dir.display()),
                        "the agent keeps its identity key and privacy ledger there",
                        "pass data_dir= a writable directory",
                    )
                })?;
                tg_trust::node::identity(&data_dir, key_file.as_deref(), &passphrase)
                    .map_err(tg_diag::from_trust)
            })
            .map_err(fail)?;
        let mut config = JoinConfig {
            coordinator,
            discover,
            name,
            token: enroll,
            seed,
            once,
            // Client `i` of a simulation seeds its shuffling and dither as
            // this agent does: the same job ends on the same model.
            seed_name: partition_id.map(|i| tg_types::AgentId::numbered(i).as_str().to_owned()),
            attest: tg_agent::tee::AttestConfig {
                insecure,
                ..Default::default()
            },
            policy: owner,
            ledger_dir: Some(data_dir),
            certificate,
        };
        config
            .settle_roster(&key.signing_key().verifying_key().to_bytes())
            .map_err(|e| {
                fail(usage(
                    "this agent cannot take part as configured (certificate, policy)",
                    e,
                    "use the certificate the fleet's operator issued for this agent's identity, and a policy that pins the same root",
                ))
            })?;
        let proximal = client
            .bind(py)
            .getattr("_tg_proximal")
            .and_then(|v| v.is_truthy())
            .unwrap_or(false);
        Ok(Self {
            training: Arc::new(PyTraining {
                index: partition_id.unwrap_or(0),
                client,
                layout,
                proximal,
                dataset,
            }),
            key,
            config: Mutex::new(Some(config)),
            listen,
            status: Arc::new(Status::default()),
            stop: Arc::new(AtomicBool::new(false)),
            on_declined,
        })
    }

    /// This agent's peer id (what an operator lists in `allowed_peers`).
    #[getter]
    fn peer_id(&self) -> String {
        tg_agent::net::peer_id_of(self.key.signing_key())
            .map(|p| p.to_string())
            .unwrap_or_default()
    }

    /// The agent's status as JSON (`tensorguard status --json`'s fields).
    fn status(&self) -> String {
        serde_json::to_string(&self.status.snapshot()).unwrap_or_default()
    }

    /// Ends `run` at its next check (within 100 ms).
    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Joins the coordinator and answers its rounds until the job ends
    /// (`once`), `stop` is called, or Ctrl-C; returns the final status.
    fn run(&self, py: Python<'_>) -> PyResult<String> {
        let config = self
            .config
            .lock()
            .ok()
            .and_then(|mut c| c.take())
            .ok_or_else(|| {
                raise(
                    py,
                    usage(
                        "this Agent already ran",
                        "an agent's session (its nonces and replay guard) is used once",
                        "create a new tensorguard.Agent to join again",
                    ),
                )
            })?;
        let on_declined = self.on_declined.as_ref().map(|f| f.clone_ref(py));
        let hook: tg_agent::net::DeclineHook = Box::new(move |d| {
            let e = tg_diag::from_declined(d);
            Python::attach(|py| {
                let exc = raise(py, e);
                match &on_declined {
                    Some(f) => {
                        if let Err(err) = f.call1(py, (exc.value(py),)) {
                            err.print(py);
                        }
                    }
                    None => {
                        let _ = py
                            .import("logging")
                            .and_then(|l| l.call_method1("getLogger", ("tensorguard",)))
                            .and_then(|log| log.call_method1("warning", (exc.to_string(),)));
                    }
                }
            });
        });
        let key = self.key.signing_key().clone();
        let training: Arc<dyn LocalTraining> = self.training.clone();
        let status = self.status.clone();
        let stop = self.stop.clone();
        let listen = self.listen.clone();
        let (result, interrupted) = py.detach(|| {
            let runtime = match crate::runtime() {
                Ok(r) => r,
                Err(e) => return (Err(e), None),
            };
            runtime.block_on(async {
                let (client, events) =
                    match tg_agent::net::start_node(&key, listen, config.discover) {
                        Ok(x) => x,
                        Err(e) => {
                            return (
                                Err(UserError::new(
                                    Code::Network,
                                    "cannot start the network",
                                    e.to_string(),
                                    "check listen= (is the port in use?)",
                                )),
                                None,
                            );
                        }
                    };
                let metrics = tg_metrics::Metrics::new("agent");
                let runner = Runner::new(client, events, key, training, config, status, metrics)
                    .on_declined(hook);
                let run = runner.run();
                tokio::pin!(run);
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tokio::select! {
                        done = &mut run => break (done.map_err(tg_diag::from_agent), None),
                        _ = tick.tick() => {
                            if stop.load(Ordering::SeqCst) {
                                break (Ok(()), None);
                            }
                            if let Err(e) = Python::attach(|py| py.check_signals()) {
                                break (Ok(()), Some(e));
                            }
                        }
                    }
                }
            })
        });
        if let Some(e) = interrupted {
            return Err(e);
        }
        result.map_err(|e| raise(py, e))?;
        Ok(self.status())
    }
}
