//! Round logic against a scripted transport: each test decides how every
//! agent answers a training request.

use std::collections::VecDeque;
use std::time::Duration;

use tg_model::{Evaluation, ModelError};
use tg_proto::{ToAgent, ToCoordinator, TrainReply, TrainRequest};
use tg_store::Store;
use tg_strategy::{FedAvg, Sampler};
use tg_types::record::{ParticipantOutcome, RoundStatus};
use tg_types::spec::{OptimizerSpec, TrainConfig};
use tg_types::{AgentId, JobId, NamedTensor, Parameters};

use crate::{Coordinator, Evaluator, RunConfig, Transport, TransportEvent};

type Script = Box<dyn FnMut(&AgentId, &TrainRequest) -> Vec<TransportEvent> + Send>;
type EvalScript =
    Box<dyn FnMut(&AgentId, &tg_proto::EvaluateRequest) -> Vec<TransportEvent> + Send>;

struct ScriptedTransport {
    agents: Vec<AgentId>,
    queue: VecDeque<TransportEvent>,
    script: Script,
    evaluate: Option<EvalScript>,
}

impl Transport for ScriptedTransport {
    fn connected(&self) -> Vec<AgentId> {
        self.agents.clone()
    }

    async fn send(&mut self, to: &AgentId, message: &crate::Outgoing) -> Result<u64, String> {
        match tg_proto::decode::<ToAgent>(message.bytes()) {
            Ok(ToAgent::Train(req)) => {
                let events = (self.script)(to, &req);
                self.queue.extend(events);
            }
            Ok(ToAgent::Evaluate(req)) => {
                if let Some(script) = &mut self.evaluate {
                    let events = script(to, &req);
                    self.queue.extend(events);
                }
            }
            _ => {}
        }
        Ok(message.len())
    }

    async fn next_event(&mut self) -> Option<TransportEvent> {
        match self.queue.pop_front() {
            Some(e) => Some(e),
            None => std::future::pending().await,
        }
    }
}

struct MeanEvaluator;

impl Evaluator for MeanEvaluator {
    fn evaluate(&mut self, p: &Parameters) -> Result<Option<Evaluation>, ModelError> {
        let mean = p.values().map(f64::from).sum::<f64>() / p.num_values() as f64;
        Ok(Some(Evaluation {
            loss: mean.abs(),
            accuracy: 0.5,
            num_examples: 1,
        }))
    }
}

fn params(v: f32) -> Parameters {
    Parameters::new(vec![NamedTensor {
        name: "w".into(),
        shape: vec![2],
        data: vec![v, v],
    }])
    .unwrap()
}

/// An honest training reply's frame for `req` with `update`.
fn trained(agent: &AgentId, req: &TrainRequest, update: Parameters) -> Vec<u8> {
    tg_proto::encode(&ToCoordinator::Trained(TrainReply {
        at: req.at,
        agent: agent.clone(),
        update,
        num_examples: 1,
        train_loss: Some(0.1),
        steps: 1,
        control_delta: None,
        epsilon: None,
        compressed: None,
    }))
    .unwrap()
}

fn reply(agent: &AgentId, req: &TrainRequest, update: Parameters) -> TransportEvent {
    received(agent, trained(agent, req, update))
}

/// An agent's reply as a transport delivers it.
fn received(agent: &AgentId, frame: Vec<u8>) -> TransportEvent {
    TransportEvent::Received {
        from: agent.clone(),
        bytes: frame.len() as u64,
        message: crate::Incoming::from_frame(crate::Frame::whole(frame)),
    }
}

fn config(rounds: u32, quorum: usize) -> RunConfig {
    RunConfig {
        job: JobId::from_bytes([9; 16]),
        kind: "test".into(),
        spec_json: serde_json::json!({}),
        rounds,
        min_results: quorum,
        round_deadline: Duration::from_millis(200),
        stage_deadline: Duration::from_millis(200),
        train: TrainConfig {
            local_epochs: 1,
            batch_size: 1,
            learning_rate: 0.1,
            optimizer: OptimizerSpec::Sgd,
            dp_sgd: None,
            compress: Default::default(),
            adaptive_sparsity: false,
            deadline_ms: None,
        },
        seed: 0,
        privacy: None,
        reputation: None,
        sealing: None,
        byzantine: 0,
        secure: None,
        evaluate_every: 0,
        gate: None,
    }
}

async fn run(
    n_agents: usize,
    quorum: usize,
    rounds: u32,
    script: Script,
) -> (crate::RunOutcome, Store, tempfile::TempDir) {
    run_with(config(rounds, quorum), n_agents, script).await
}

async fn run_with(
    config: RunConfig,
    n_agents: usize,
    script: Script,
) -> (crate::RunOutcome, Store, tempfile::TempDir) {
    let transport = ScriptedTransport {
        agents: (0..n_agents).map(AgentId::numbered).collect(),
        queue: VecDeque::new(),
        script,
        evaluate: None,
    };
    run_over(config, transport).await
}

#[tokio::test]
async fn honest_round_commits_the_average() {
    let script: Script = Box::new(|a, req| {
        let v = if a.as_str().ends_with('0') { 1.0 } else { 3.0 };
        vec![reply(a, req, params(v))]
    });
    let (outcome, store, _d) = run(2, 2, 2, script).await;
    assert_eq!(outcome.model, params(4.0)); // two rounds of +2
    let rounds = store
        .rounds(&JobId::from_bytes([9; 16]).to_string())
        .unwrap();
    assert!(
        rounds
            .iter()
            .all(|r| r.status == RoundStatus::Committed && r.participants == 2)
    );
    let sha = rounds[1].model_sha256.as_deref().unwrap();
    let stored = Parameters::from_safetensors(&store.blobs().get(sha).unwrap()).unwrap();
    assert_eq!(stored, params(4.0));
}

#[tokio::test]
async fn bad_replies_are_rejected_and_stragglers_dropped() {
    let script: Script = Box::new(|a, req| {
        let mut stale = req.clone();
        stale.at.round += 7;
        match a.as_str() {
            "agent-000" => vec![reply(a, req, params(1.0))],
            "agent-001" => vec![reply(a, &stale, params(1.0))], // wrong round
            "agent-002" => vec![received(a, vec![1, 2, 3])],
            "agent-003" => {
                let wrong = Parameters::new(vec![NamedTensor {
                    name: "x".into(),
                    shape: vec![1],
                    data: vec![0.0],
                }])
                .unwrap();
                vec![reply(a, req, wrong)]
            }
            "agent-004" => vec![reply(a, req, params(f32::NAN))],
            "agent-005" => {
                // Impersonation: a frame claiming to be agent-000's second reply, sent by an unselected peer.
                vec![reply(
                    &AgentId::new("intruder").unwrap(),
                    req,
                    params(100.0),
                )]
            }
            _ => vec![], // agent-006 never answers: a straggler
        }
    });
    let (outcome, store, _d) = run(7, 2, 1, script).await;
    assert_eq!(outcome.model, params(0.0), "nothing committed");
    let r = &store
        .rounds(&JobId::from_bytes([9; 16]).to_string())
        .unwrap()[0];
    assert_eq!(r.status, RoundStatus::Failed);
    assert!(
        r.reason.as_deref().unwrap().contains("quorum"),
        "{:?}",
        r.reason
    );
    let outcome_of = |name: &str| {
        r.participants_detail
            .iter()
            .find(|p| p.agent.as_str() == name)
            .unwrap()
            .outcome
    };
    assert_eq!(outcome_of("agent-000"), ParticipantOutcome::Contributed);
    for rejected in ["agent-001", "agent-002", "agent-003", "agent-004"] {
        assert_eq!(
            outcome_of(rejected),
            ParticipantOutcome::Rejected,
            "{rejected}"
        );
    }
    assert_eq!(outcome_of("agent-005"), ParticipantOutcome::Dropped);
    assert_eq!(outcome_of("agent-006"), ParticipantOutcome::Dropped);
}

#[tokio::test]
async fn disconnects_count_as_dropouts_and_quorum_still_commits() {
    let script: Script = Box::new(|a, req| {
        if a.as_str() == "agent-002" {
            vec![TransportEvent::Disconnected(a.clone())]
        } else {
            vec![reply(a, req, params(2.0))]
        }
    });
    let (outcome, store, _d) = run(3, 2, 1, script).await;
    assert_eq!(outcome.model, params(2.0));
    let r = &store
        .rounds(&JobId::from_bytes([9; 16]).to_string())
        .unwrap()[0];
    assert_eq!(
        (r.status, r.selected, r.participants),
        (RoundStatus::Committed, 3, 2)
    );
}

#[tokio::test]
async fn too_few_agents_fail_the_round_before_it_starts() {
    let script: Script = Box::new(|a, req| vec![reply(a, req, params(1.0))]);
    let (_, store, _d) = run(1, 2, 2, script).await;
    let rounds = store
        .rounds(&JobId::from_bytes([9; 16]).to_string())
        .unwrap();
    assert_eq!(rounds.len(), 2, "failed rounds are recorded, not skipped");
    assert!(rounds.iter().all(|r| r.status == RoundStatus::Failed
        && r.reason.as_deref().unwrap().starts_with("not started")));
}

#[tokio::test]
async fn budget_stop_ends_at_the_last_round_that_fits() {
    use tg_privacy::{
        AccountantKind, ClipNorm, Delta, Epsilon, GaussianSteps, NoiseMultiplier, SamplingRate,
    };
    use tg_types::privacy::{CentralDpSpec, ClipSpec, DpMode, PrivacySpec};
    let step = GaussianSteps {
        sampling_rate: SamplingRate::new(0.5).unwrap(),
        noise_multiplier: NoiseMultiplier::new(4.0).unwrap(),
        steps: 1,
    };
    let delta = Delta::new(1e-5).unwrap();
    let eps_after = |k: usize| {
        tg_privacy::accountant::epsilon(AccountantKind::Rdp, &vec![step; k], delta).epsilon
    };
    // A target strictly between ε after 3 and after 4 rounds.
    let target = 0.5 * (eps_after(3) + eps_after(4));
    let mut cfg = config(10, 2);
    cfg.privacy = Some(PrivacySpec {
        mode: DpMode::Central(CentralDpSpec {
            noise_multiplier: step.noise_multiplier,
            clip: ClipSpec::Fixed {
                norm: ClipNorm::new(1.0).unwrap(),
            },
            client_sampling_rate: step.sampling_rate,
            population: 2,
        }),
        target_epsilon: Epsilon::new(target).unwrap(),
        delta,
        accountant: AccountantKind::Rdp,
        budget_against: Default::default(),
    });
    let script: Script = Box::new(|a, req| vec![reply(a, req, params(1.0))]);
    let (outcome, store, _d) = run_with(cfg, 2, script).await;
    assert_eq!(outcome.history.len(), 3);
    let reason = outcome.budget_exhausted.unwrap();
    assert!(
        reason.contains("round 4") && reason.contains("stopped after round 3"),
        "{reason}"
    );
    let job = JobId::from_bytes([9; 16]).to_string();
    let ledger = store.ledger(&job).unwrap();
    assert_eq!(ledger.len(), 3);
    for (k, e) in ledger.iter().enumerate() {
        assert!((e.epsilon_after - eps_after(k + 1)).abs() < 1e-12);
        assert!(e.epsilon_after <= target);
    }
    assert_eq!(outcome.epsilon, Some(ledger[2].epsilon_after));
    let rounds = store.rounds(&job).unwrap();
    assert_eq!(rounds[2].epsilon, Some(ledger[2].epsilon_after));
}

/// Runs a FedAvg job over `transport` from `params(0.0)`.
async fn run_over(
    config: RunConfig,
    transport: ScriptedTransport,
) -> (crate::RunOutcome, Store, tempfile::TempDir) {
    run_in(tempfile::tempdir().unwrap(), config, transport).await
}

/// The same, with the store in `dir` (which other connections may open).
async fn run_in(
    dir: tempfile::TempDir,
    config: RunConfig,
    transport: ScriptedTransport,
) -> (crate::RunOutcome, Store, tempfile::TempDir) {
    let mut store = Store::open(dir.path()).unwrap();
    let quorum = config.min_results;
    let strategy = Box::new(FedAvg::new(Sampler::new(1.0, quorum).unwrap(), 1.0));
    let outcome = Coordinator::new(
        transport,
        strategy,
        Box::new(MeanEvaluator),
        &mut store,
        config,
    )
    .run(params(0.0), |_| {})
    .await
    .unwrap();
    (outcome, store, dir)
}

mod federated;
mod gate;
mod registry;
mod reputation;
mod sealed;

#[tokio::test]
async fn an_update_in_a_form_the_round_did_not_allow_is_rejected() {
    // FedAvg folds sparse updates, so a dense round lets agents send top-k
    // to fit their envelope; 8-bit codes it did not ask for are refused.
    let script: Script = Box::new(|a, req| {
        assert!(req.config.adaptive_sparsity);
        let form = if a.as_str().ends_with('0') {
            tg_types::spec::Compression::TopK(0.5)
        } else {
            tg_types::spec::Compression::Q8
        };
        let msg = ToCoordinator::Trained(TrainReply {
            at: req.at,
            agent: a.clone(),
            update: Parameters::default(),
            num_examples: 1,
            train_loss: Some(0.1),
            steps: 1,
            control_delta: None,
            epsilon: None,
            compressed: tg_compress::Compressor::default().encode(&params(1.0), form),
        });
        vec![received(a, tg_proto::encode(&msg).unwrap())]
    });
    let (_, store, _d) = run(2, 1, 1, script).await;
    let rounds = store
        .rounds(&JobId::from_bytes([9; 16]).to_string())
        .unwrap();
    assert_eq!(rounds[0].status, RoundStatus::Committed);
    let outcomes: Vec<ParticipantOutcome> = rounds[0]
        .participants_detail
        .iter()
        .map(|p| p.outcome)
        .collect();
    assert_eq!(
        outcomes,
        [
            ParticipantOutcome::Contributed,
            ParticipantOutcome::Rejected
        ]
    );
}
