//! Federated evaluation against scripted agents: malformed, repeated and
//! misattributed answers, and self-reported counts.

use super::*;

fn evaluated(
    agent: &AgentId,
    at: tg_proto::RoundRef,
    n: u64,
    loss: f64,
    acc: f64,
) -> TransportEvent {
    received(
        agent,
        tg_proto::encode(&ToCoordinator::Evaluated(tg_proto::EvaluateReply {
            at,
            agent: agent.clone(),
            num_examples: n,
            loss,
            accuracy: acc,
            baseline: None,
            tasks: Vec::new(),
        }))
        .unwrap(),
    )
}

#[tokio::test]
async fn federated_evaluation_combines_only_well_formed_answers_to_this_request() {
    let mut config = config(2, 1);
    config.evaluate_every = 2;
    let agents: Vec<AgentId> = (0..6).map(AgentId::numbered).collect();
    let liar = agents.clone();
    let transport = ScriptedTransport {
        agents: agents.clone(),
        queue: VecDeque::new(),
        script: Box::new(|a, req| vec![reply(a, req, params(1.0))]),
        evaluate: Some(Box::new(move |a, req| {
            let at = req.at;
            let other = tg_proto::RoundRef {
                round: at.round + 1,
                ..at
            };
            match liar.iter().position(|x| x == a) {
                // Honest, then a second answer that must not count twice.
                Some(0) => vec![
                    evaluated(a, at, 10, 0.5, 0.8),
                    evaluated(a, at, 10, 0.0, 0.0),
                ],
                // Out of range, not finite, no examples.
                Some(1) => vec![evaluated(a, at, 10, 0.5, 2.0)],
                Some(2) => vec![evaluated(a, at, 10, f64::NAN, 0.5)],
                Some(3) => vec![evaluated(a, at, 0, 0.5, 0.5)],
                // Another round's answer, then silence: the deadline ends it.
                Some(4) => vec![evaluated(a, other, 10, 0.5, 0.5)],
                // Speaks for someone else.
                _ => vec![evaluated(&liar[0], at, u64::MAX, 9.0, 0.0)],
            }
        })),
    };
    let (outcome, store, _dir) = run_over(config, transport).await;
    assert!(
        outcome.history[0].federated.is_none(),
        "not scheduled in round 1"
    );
    let f = outcome.history[1]
        .federated
        .clone()
        .expect("round 2 is scheduled");
    assert_eq!((f.asked, f.answered, f.num_examples), (6, 1, 10));
    assert_eq!((f.loss, f.accuracy), (0.5, 0.8));
    // Recorded with the round.
    let rounds = store
        .rounds(&JobId::from_bytes([9; 16]).to_string())
        .unwrap();
    assert_eq!(rounds[1].federated, Some(f));
    // The model is the held-out gate's, untouched by any answer.
    assert_eq!(outcome.model, params(2.0));
}

#[test]
fn self_reported_counts_cannot_overflow_the_combination() {
    use tg_strategy::{ClientEvaluation, Strategy};
    let mut s = FedAvg::new(Sampler::new(1.0, 1).unwrap(), 1.0);
    let big = ClientEvaluation {
        num_examples: u64::MAX,
        loss: 1.0,
        accuracy: 1.0,
    };
    let c = s.aggregate_evaluate(&[big, big]).unwrap();
    assert_eq!(c.num_examples, u64::MAX);
    assert!((c.accuracy - 1.0).abs() < 1e-12);
    // Losses near f64::MAX: a product would overflow; the mean is either
    // finite or no mean at all, never infinity in the record.
    let huge = ClientEvaluation {
        num_examples: 2,
        loss: f64::MAX,
        accuracy: 0.5,
    };
    for n in 1..=5 {
        let answers = vec![huge; n];
        if let Some(c) = s.aggregate_evaluate(&answers) {
            assert!(c.loss.is_finite() && c.accuracy.is_finite(), "{n}: {c:?}");
        }
    }
}
