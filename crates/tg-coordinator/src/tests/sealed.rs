//! An attested aggregator's rounds: updates arrive sealed to its session
//! key and are opened only inside the round logic; an unsealed update, one
//! sealed to another key, or one moved to another sender is rejected.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::*;

fn sealed_reply(
    agent: &AgentId,
    req: &TrainRequest,
    update: Parameters,
    key: &[u8; 32],
) -> TransportEvent {
    let plain = trained(agent, req, update);
    let sealed = tg_proto::seal_reply(key, req.at, agent, &plain).unwrap();
    received(
        agent,
        tg_proto::encode(&ToCoordinator::Sealed(sealed)).unwrap(),
    )
}

#[tokio::test]
async fn only_updates_sealed_to_the_session_key_reach_the_aggregate() {
    let secret = Arc::new(tg_proto::SessionSecret::from_bytes(Zeroizing::new(
        [0x5a; 32],
    )));
    let key = secret.public();
    let other = tg_proto::SessionSecret::from_bytes(Zeroizing::new([0x5b; 32])).public();
    let script: Script = Box::new(move |a, req| match a.as_str() {
        "agent-000" | "agent-001" => vec![sealed_reply(a, req, params(2.0), &key)],
        // In the clear: a host could have read it.
        "agent-002" => vec![reply(a, req, params(50.0))],
        // Sealed to a key the host swapped in.
        "agent-003" => vec![sealed_reply(a, req, params(50.0), &other)],
        // Sealed for the next round (a replay across rounds).
        "agent-004" => {
            let mut later = req.clone();
            later.at.round += 1;
            let TransportEvent::Received { message, bytes, .. } =
                sealed_reply(a, &later, params(50.0), &key)
            else {
                unreachable!()
            };
            vec![TransportEvent::Received {
                from: a.clone(),
                message,
                bytes,
            }]
        }
        // Agent 4's sealed update replayed as agent 5's.
        _ => {
            let TransportEvent::Received { message, bytes, .. } =
                sealed_reply(&AgentId::numbered(4), req, params(50.0), &key)
            else {
                unreachable!()
            };
            vec![TransportEvent::Received {
                from: a.clone(),
                message,
                bytes,
            }]
        }
    });
    let mut config = config(1, 2);
    config.sealing = Some(secret);
    let (outcome, store, _d) = run_with(config, 6, script).await;
    assert_eq!(outcome.model, params(2.0), "only the two sealed updates");
    let r = &store
        .rounds(&JobId::from_bytes([9; 16]).to_string())
        .unwrap()[0];
    assert_eq!(r.status, RoundStatus::Committed);
    assert_eq!(r.participants, 2);
    let rejected: Vec<_> = r
        .participants_detail
        .iter()
        .filter(|p| p.outcome == ParticipantOutcome::Rejected)
        .map(|p| p.agent.as_str().to_owned())
        .collect();
    assert_eq!(
        rejected,
        ["agent-002", "agent-003", "agent-004", "agent-005"]
    );

    // Without an attested aggregator, a sealed reply is refused too.
    let script: Script = Box::new(move |a, req| vec![sealed_reply(a, req, params(2.0), &key)]);
    let (_, store, _d) = run(2, 2, 1, script).await;
    let r = &store
        .rounds(&JobId::from_bytes([9; 16]).to_string())
        .unwrap()[0];
    assert_eq!(r.status, RoundStatus::Failed);
}
