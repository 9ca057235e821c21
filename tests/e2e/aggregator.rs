//! The attested aggregator end to end, in its named simulation mode (no
//! TEE here): a coordinator started with `--allow-simulated` draws a session
//! key, binds it into simulated evidence and offers it; agents verify the
//! evidence before they join, seal every update to the key, and say
//! UNTRUSTED in their output, as the coordinator does. An agent whose owner
//! pins another measurement, or requires an attested aggregator that is not
//! offered, refuses with E094 and a reason; a coordinator without a TEE and
//! without `--allow-simulated` does not start (E092).

use std::time::Duration;

use crate::common::{Fleet, JobOpts, wait_child};

fn opts() -> JobOpts {
    JobOpts {
        clients: 4,
        rounds: 3,
        min_clients: 3,
        secure: None,
        local_epochs: 1,
        hidden: 16,
        ..JobOpts::default()
    }
}

fn fleet_with(keys: &str) -> Fleet {
    let o = opts();
    let fleet = Fleet::new(&o);
    let toml = o.toml().replacen("[job]\n", &format!("[job]\n{keys}"), 1);
    std::fs::write(&fleet.job, toml).unwrap();
    fleet
}

/// Agent 0's log once it stops, having failed.
fn refusal(fleet: &mut Fleet) -> String {
    let agent = fleet.agents[0].as_mut().unwrap();
    let status = wait_child(agent, Duration::from_secs(60)).expect("the agent stops");
    assert!(!status.success());
    fleet.log("agent-0.err")
}

const ATTESTED: &str =
    "attested_aggregator = true\naggregator = \"outlier-3sigma\"\nbyzantine = 1\n";

#[test]
fn agents_seal_their_updates_to_a_simulated_aggregator_and_every_output_says_untrusted() {
    let mut fleet = fleet_with(ATTESTED);
    fleet.coord_args = vec!["--allow-simulated".into()];
    let addr = fleet.start_coordinator();
    fleet.start_agents(4, &addr);
    let (status, summary) = fleet.wait_coordinator(Duration::from_secs(300));
    assert!(
        status.success(),
        "{summary}\n{}",
        fleet.log("coordinator.err")
    );
    assert_eq!(summary["rounds_committed"], 3, "{summary}");
    let sim = summary["simulation"].as_str().unwrap_or_default();
    assert!(
        sim.contains("UNTRUSTED") && sim.contains("attested aggregator"),
        "{summary}"
    );
    assert!(
        fleet
            .log("coordinator.err")
            .contains("SIMULATED — UNTRUSTED"),
        "{}",
        fleet.log("coordinator.err")
    );
    fleet.agents_exit_cleanly(4);
    for i in 0..4 {
        let err = fleet.log(&format!("agent-{i}.err"));
        assert!(
            err.contains("UNTRUSTED: simulated aggregator attestation"),
            "agent {i}: {err}"
        );
    }
    // Every update arrived sealed and was opened by the aggregator: all
    // four contributed in every round.
    let store = fleet.store();
    let rounds = store.rounds(summary["job"].as_str().unwrap()).unwrap();
    assert!(rounds.iter().all(|r| r.participants == 4), "{rounds:?}");
    // The audit log's job.created names the simulation.
    let out = crate::common::tg_command()
        .arg("--data-dir")
        .arg(fleet.coord_dir())
        .args(["audit", "export"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    let created = log.lines().find(|l| l.contains("\"job.created\"")).unwrap();
    assert!(
        created.contains("attested aggregator without a TEE"),
        "{created}"
    );
}

#[test]
fn an_agent_refuses_an_aggregator_off_its_policy_or_missing_and_says_why() {
    // The owner pins a measurement the coordinator's build does not have.
    let mut fleet = fleet_with(ATTESTED);
    fleet.coord_args = vec!["--allow-simulated".into()];
    let policy = fleet.root.path().join("aggregator-policy.toml");
    std::fs::write(
        &policy,
        format!("measurements = [\"{}\"]\n", "ab".repeat(32)),
    )
    .unwrap();
    fleet.agent_args = vec![
        "--aggregator-policy".into(),
        policy.display().to_string(),
        "--allow-simulated-aggregator".into(),
    ];
    let addr = fleet.start_coordinator();
    fleet.start_agents(1, &addr);
    let err = refusal(&mut fleet);
    assert!(
        err.contains("error[E094]") && err.contains("measurement"),
        "{err}"
    );
    fleet.kill_coordinator();

    // The owner requires an attested aggregator; this job has none.
    let mut fleet = fleet_with("");
    let policy = fleet.root.path().join("aggregator-policy.toml");
    std::fs::write(&policy, "measurements = \"any\"\n").unwrap();
    fleet.agent_args = vec!["--aggregator-policy".into(), policy.display().to_string()];
    let addr = fleet.start_coordinator();
    fleet.start_agents(1, &addr);
    let err = refusal(&mut fleet);
    assert!(
        err.contains("error[E094]") && err.contains("offers no attested aggregator"),
        "{err}"
    );
}

#[test]
fn a_coordinator_without_a_tee_runs_an_attested_aggregator_only_as_a_named_simulation() {
    let mut fleet = fleet_with(ATTESTED);
    let empty = fleet.root.path().join("no-tee");
    std::fs::create_dir_all(&empty).unwrap();
    fleet.coord_args = vec!["--tee-root".into(), empty.display().to_string()];
    let _ = std::fs::create_dir_all(fleet.coord_dir());
    let out = crate::common::tg_command()
        .arg("--data-dir")
        .arg(fleet.coord_dir())
        .args(["coordinator", "start", "--job"])
        .arg(&fleet.job)
        .args(&fleet.coord_args)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error[E092]") && err.contains("--allow-simulated"),
        "{err}"
    );
}

/// A hand-driven coordinator that speaks the real protocol to one real
/// agent process: it offers what the test says, and counts the frames the
/// agent sends back.
struct Rogue {
    rt: tokio::runtime::Runtime,
    client: tg_net::Client,
    events: tokio::sync::mpsc::Receiver<tg_net::Event>,
    key: ed25519_dalek::SigningKey,
    me: tg_net::PeerId,
    nonces: tg_proto::NonceCounter,
    fleet: Fleet,
}

impl Rogue {
    /// Listens, and starts one agent process against it.
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[0x77; 32]);
        let (client, mut events, event_loop) = {
            let _g = rt.enter();
            tg_net::new(
                key.to_bytes(),
                tg_net::Config::new(
                    tg_net::Role::Coordinator,
                    vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
                ),
            )
            .unwrap()
        };
        rt.spawn(event_loop.run());
        let me = client.local_peer_id();
        let addr = rt.block_on(async {
            loop {
                if let Some(tg_net::Event::Listening(a)) = events.recv().await {
                    break format!("{a}/p2p/{me}");
                }
            }
        });
        let mut fleet = Fleet::new(&opts());
        fleet.start_agent(0, 1, &addr, None);
        Self {
            rt,
            client,
            events,
            key,
            me,
            nonces: tg_proto::NonceCounter::from_clock(),
            fleet,
        }
    }

    /// Simulated evidence signed by this coordinator for `job`, binding
    /// `bound` as the session key.
    fn evidence(&self, job: tg_types::JobId, bound: [u8; 32]) -> Vec<u8> {
        let rd = tg_attest::report_data(
            &tg_proto::aggregator_nonce(job),
            &self.me.to_bytes(),
            &bound,
        );
        tg_attest::Evidence::Simulated(tg_attest::SimulatedEvidence::sign(&self.key, [1; 32], rd))
            .to_bytes()
    }

    /// Sends `offers` in turn, the first when the agent connects and each
    /// next one after the agent answers; for `secs` counts the frames the
    /// agent sends.
    fn run(&mut self, offers: Vec<tg_proto::Offer>, secs: u64) -> usize {
        let (client, events, key, nonces) =
            (&self.client, &mut self.events, &self.key, &self.nonces);
        self.rt.block_on(async {
            let mut frames = 0;
            let mut queue = offers.into_iter();
            let mut agent = None;
            let send = |peer, offer: tg_proto::Offer| {
                let frame =
                    tg_proto::signed::seal(key, nonces.next(), &tg_proto::ToAgent::Offer(offer))
                        .unwrap();
                // The agent may read it and hang up without a reply.
                async move {
                    let _ = client.send(peer, frame).await;
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(secs), async {
                loop {
                    match events.recv().await {
                        Some(tg_net::Event::Connected { peer, .. }) => {
                            agent = Some(peer);
                            if let Some(o) = queue.next() {
                                send(peer, o).await;
                            }
                        }
                        Some(tg_net::Event::Frame { .. }) => {
                            frames += 1;
                            if let (Some(peer), Some(o)) = (agent, queue.next()) {
                                send(peer, o).await;
                            }
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
            })
            .await;
            frames
        })
    }

    /// The agent's exit and its log, once it stops.
    fn agent_refused(&mut self) -> String {
        refusal(&mut self.fleet)
    }
}

/// An offer of `job` for the agents' digits, with `aggregator`.
fn offer(
    job: tg_types::JobId,
    aggregator: Option<tg_proto::AggregatorEvidence>,
) -> tg_proto::Offer {
    tg_proto::Offer {
        job,
        model: tg_types::spec::ModelKind::Mlp,
        hidden: 16,
        train: tg_types::spec::TrainConfig {
            local_epochs: 1,
            batch_size: 16,
            learning_rate: 0.1,
            optimizer: tg_types::spec::OptimizerSpec::Sgd,
            dp_sgd: None,
            compress: Default::default(),
            adaptive_sparsity: false,
            deadline_ms: None,
        },
        privacy: None,
        rounds: 1,
        enrollment_required: false,
        attestation_nonce: None,
        schema: None,
        custom_model: false,
        aggregator,
    }
}

/// A malicious coordinator whose offer's session key is not the one its
/// (simulated) evidence binds, as a host that swapped in a key of its own
/// would offer. The real agent process refuses before it joins, names the
/// reason (E094, report data), and sends nothing: no join, no update.
#[test]
fn an_agent_refuses_a_coordinator_whose_evidence_is_bound_to_another_key() {
    let mut rogue = Rogue::start();
    let job = tg_types::JobId::from_bytes([0x42; 16]);
    let swapped = tg_proto::AggregatorEvidence {
        session_key: [0x0c; 32],
        evidence: rogue.evidence(job, [0x0b; 32]),
    };
    // Long enough for the agent to connect, check the offer and stop
    // (about a second), and to see anything it would send after.
    let frames = rogue.run(vec![offer(job, Some(swapped))], 10);
    let err = rogue.agent_refused();
    assert!(
        err.contains("error[E094]") && err.contains("report_data_mismatch"),
        "{err}"
    );
    assert_eq!(frames, 0, "the agent sent nothing to this coordinator");
}

/// A coordinator that offers a job with an attested aggregator, lets the
/// agent join, then offers the same job again without one (to get its
/// updates unsealed): the agent refuses the downgrade with E094.
#[test]
fn an_agent_refuses_a_reoffer_of_its_job_without_the_aggregator() {
    let mut rogue = Rogue::start();
    let job = tg_types::JobId::from_bytes([0x43; 16]);
    let sealed = tg_proto::AggregatorEvidence {
        session_key: [0x0b; 32],
        evidence: rogue.evidence(job, [0x0b; 32]),
    };
    let frames = rogue.run(vec![offer(job, Some(sealed)), offer(job, None)], 10);
    assert!(frames >= 1, "the agent joined the first offer");
    let err = rogue.agent_refused();
    assert!(
        err.contains("error[E094]")
            && err.contains("re-offered this job without the attested aggregator"),
        "{err}"
    );
}
