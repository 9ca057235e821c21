//! The rollout gate against scripted agents: poison, boasts, silence.

use super::*;

/// An evaluation answer with the rollout gate's baseline figures.
fn evaluated_both(
    agent: &AgentId,
    at: tg_proto::RoundRef,
    model: (u64, f64),
    baseline: Option<(u64, f64)>,
) -> TransportEvent {
    evaluated_tasks(agent, at, model, baseline, Vec::new())
}

/// [`evaluated_both`] with per-task counts `(task, successes, episodes)`.
fn evaluated_tasks(
    agent: &AgentId,
    at: tg_proto::RoundRef,
    model: (u64, f64),
    baseline: Option<(u64, f64)>,
    tasks: Vec<(&str, u64, u64)>,
) -> TransportEvent {
    received(
        agent,
        tg_proto::encode(&ToCoordinator::Evaluated(tg_proto::EvaluateReply {
            at,
            agent: agent.clone(),
            num_examples: model.0,
            loss: 1.0 - model.1,
            accuracy: model.1,
            baseline: baseline.map(|(n, a)| tg_proto::EvaluationFigures {
                num_examples: n,
                loss: 1.0 - a,
                accuracy: a,
            }),
            tasks: tasks
                .into_iter()
                .map(
                    |(task, successes, episodes)| tg_types::record::TaskSuccesses {
                        task: task.into(),
                        successes,
                        episodes,
                    },
                )
                .collect(),
        }))
        .unwrap(),
    )
}

#[tokio::test]
async fn the_rollout_gate_keeps_the_current_model_when_a_poisoned_candidate_does_worse_on_robots() {
    let mut config = config(3, 1);
    config.gate = Some(tg_strategy::RolloutGate::new(0.0, 20).unwrap());
    let agents: Vec<AgentId> = (0..4).map(AgentId::numbered).collect();
    let (poisoner, shy, boaster) = (agents[0].clone(), agents[1].clone(), agents[3].clone());
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    let agents2 = agents.clone();
    let transport = ScriptedTransport {
        agents: agents.clone(),
        queue: VecDeque::new(),
        // Round 2: one robot's update is poison.
        script: Box::new(move |a, req| {
            let v = if *a == poisoner && req.at.round == 2 {
                400.0
            } else {
                1.0
            };
            vec![reply(a, req, params(v))]
        }),
        // Robots succeed in 16 of 20 episodes with a sane model and in 1 of
        // 20 with a poisoned one, and answer for both models at once, with
        // the candidate's counts on two tasks. One leaves the baseline out
        // (its answer is not counted); one claims u64::MAX episodes (capped
        // at the gate's 20), and per-task counts that do not add up to
        // them (left out of the per-task sums).
        evaluate: Some(Box::new(move |a, req| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let rate = |p: &Parameters| {
                if p.values().next().unwrap() < 50.0 {
                    0.8
                } else {
                    0.05
                }
            };
            // Agent 2 evaluates 40 episodes (the gate counts 20): its
            // per-task counts are scaled to 20 too.
            let n = if *a == boaster {
                u64::MAX
            } else if *a == agents2[2] {
                40
            } else {
                20
            };
            let baseline = req
                .baseline
                .as_ref()
                .filter(|_| *a != shy)
                .map(|b| (n, rate(b)));
            let k = if n == 40 { 2 } else { 1 };
            let won = (rate(&req.model) * 20.0_f64).round() as u64;
            let tasks = vec![
                ("reach", k * won.div_ceil(2), k * 10),
                ("push", k * (won / 2), k * 10),
            ];
            vec![evaluated_tasks(
                a,
                req.at,
                (n, rate(&req.model)),
                baseline,
                tasks,
            )]
        })),
    };
    let (outcome, store, _dir) = run_over(config, transport).await;
    // One request per agent per round: agents answer one per round.
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 4 * 3);
    let h = &outcome.history;
    assert_eq!(h[0].status, RoundStatus::Committed, "{:?}", h[0].reason);
    let g1 = h[0].gate.clone().expect("round 1 was judged");
    assert!(g1.passed);
    assert_eq!(
        (g1.candidate.episodes, g1.current.episodes),
        (60, 60),
        "three judges, 20 episodes each at most"
    );
    assert_eq!(h[1].status, RoundStatus::Failed);
    let g2 = h[1].gate.clone().expect("round 2 was judged");
    assert!(!g2.passed);
    assert_eq!((g2.candidate.successes, g2.current.successes), (3, 48));
    // Per task, the candidate's counts from the two judges whose figures
    // add up (the boaster's do not): the dashboard's success per task.
    let per_task = |g: &tg_types::record::GateVerdict| {
        g.tasks
            .iter()
            .map(|t| (t.task.clone(), t.successes, t.episodes))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        per_task(&g1),
        [("push".to_string(), 16, 20), ("reach".to_string(), 16, 20)]
    );
    assert_eq!(
        per_task(&g2),
        [("push".to_string(), 0, 20), ("reach".to_string(), 2, 20)]
    );
    let reason = h[1].reason.as_deref().unwrap();
    assert!(
        reason.contains(
            "rollout gate rejected the candidate: candidate 3/60 (5.0%) vs current 48/60 (80.0%)"
        ),
        "{reason}"
    );
    assert_eq!(h[2].status, RoundStatus::Committed);
    // The fleet stayed on round 1's model, then moved on from it.
    assert_eq!(outcome.model, params(2.0));
    // The verdicts are recorded with the rounds.
    let rounds = store
        .rounds(&JobId::from_bytes([9; 16]).to_string())
        .unwrap();
    assert_eq!(rounds[1].gate, Some(g2));
    assert_eq!(rounds[1].model_sha256, None);
}

#[tokio::test]
async fn the_rollout_gate_fails_a_round_it_cannot_judge() {
    // (agents, episodes the gate needs, agents that answer, episodes each
    // claims, what the round's reason says)
    let cases = [
        // One judge of three, however many episodes it claims.
        (3, 1, 1, 1000, "1 of 3 agents answered"),
        // Both answer, with too few episodes.
        (2, 50, 2, 10, "cannot judge"),
    ];
    for (n, needed, answering, episodes, why) in cases {
        let mut config = config(1, 1);
        config.gate = Some(tg_strategy::RolloutGate::new(0.0, needed).unwrap());
        let agents: Vec<AgentId> = (0..n).map(AgentId::numbered).collect();
        let judges: Vec<AgentId> = agents[..answering].to_vec();
        let transport = ScriptedTransport {
            agents,
            queue: VecDeque::new(),
            script: Box::new(|a, req| vec![reply(a, req, params(1.0))]),
            evaluate: Some(Box::new(move |a, req| {
                if judges.contains(a) {
                    vec![evaluated_both(
                        a,
                        req.at,
                        (episodes, 1.0),
                        Some((episodes, 0.0)),
                    )]
                } else {
                    vec![]
                }
            })),
        };
        let (outcome, _store, _dir) = run_over(config, transport).await;
        let round = &outcome.history[0];
        assert_eq!(round.status, RoundStatus::Failed);
        assert!(
            round.reason.as_deref().unwrap().contains(why),
            "{:?}",
            round.reason
        );
        assert_eq!(outcome.model, params(0.0));
    }
}
