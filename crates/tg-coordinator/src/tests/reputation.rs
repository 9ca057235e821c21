//! Reputation in the round logic: an outlier is flagged, down-weighted and
//! excluded (from training and from evaluation, so it cannot judge the
//! gate); a round with more outliers than the rule's f flags no one, so
//! colluders holding a round's median cannot frame the honest agents; the
//! standings are written with the round's record.

use tg_types::reputation::{ReputationPolicy, Standing};
use tg_types::robust::{AggregatorKind, RobustSpec};

use super::*;

fn robust_run(
    config: RunConfig,
    n: usize,
    script: Script,
) -> (crate::RunOutcome, Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let inner = Box::new(FedAvg::new(Sampler::new(1.0, 1).unwrap(), 1.0));
    let strategy = Box::new(
        tg_strategy::Robust::new(
            inner,
            RobustSpec {
                kind: AggregatorKind::Median,
                f: 1,
                norm_bound: None,
            },
        )
        .unwrap(),
    );
    let transport = ScriptedTransport {
        agents: (0..n).map(AgentId::numbered).collect(),
        queue: VecDeque::new(),
        script,
        evaluate: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = rt
        .block_on(
            Coordinator::new(
                transport,
                strategy,
                Box::new(MeanEvaluator),
                &mut store,
                config,
            )
            .run(params(0.0), |_| {}),
        )
        .unwrap();
    (outcome, store, dir)
}

/// Honest agent `i`'s update: near 1, a little different per agent and round.
fn honest(i: usize, round: u32) -> f32 {
    1.0 + 0.02 * ((i * 7 + round as usize * 3) % 5) as f32
}

fn policy_config(rounds: u32) -> RunConfig {
    let mut c = config(rounds, 3);
    c.reputation = Some(ReputationPolicy::default());
    c.byzantine = 1;
    c
}

#[test]
fn an_outlier_is_excluded_and_a_round_with_more_outliers_than_f_flags_no_one() {
    // Agent 0 sends 40× an honest update in every round it is sampled.
    let script: Script = Box::new(|a, req| {
        let i: usize = a.as_str()[6..].parse().unwrap();
        let v = honest(i, req.at.round);
        vec![reply(a, req, params(if i == 0 { 40.0 * v } else { v }))]
    });
    let (outcome, store, _d) = robust_run(policy_config(6), 7, script);
    let job = JobId::from_bytes([9; 16]).to_string();
    let reps = store.reputations(&job).unwrap();
    let bad = reps
        .iter()
        .find(|r| r.agent == AgentId::numbered(0))
        .unwrap();
    assert_eq!(bad.standing, Standing::Excluded);
    assert!(
        reps.iter()
            .filter(|r| r.agent != bad.agent)
            .all(|r| r.flagged == 0)
    );
    let rounds = store.rounds(&job).unwrap();
    // Excluded in round 3, in the record written with it; never sampled after.
    assert!(
        rounds[2]
            .reputation
            .iter()
            .any(|c| c.to == Standing::Excluded)
    );
    for r in &rounds[3..] {
        assert_eq!(r.selected, 6, "round {}", r.round);
    }
    assert!(
        outcome
            .history
            .iter()
            .all(|r| r.status == RoundStatus::Committed)
    );

    // Four identical colluders of seven hold every coordinate's median: all
    // three honest agents are outliers, more than f = 1, so no one is
    // flagged (without the rule, each would be at z ≈ 10¹²).
    let script: Script = Box::new(|a, req| {
        let i: usize = a.as_str()[6..].parse().unwrap();
        let v = if i < 4 { -3.0 } else { honest(i, req.at.round) };
        vec![reply(a, req, params(v))]
    });
    let (_, store, _d) = robust_run(policy_config(4), 7, script);
    let reps = store.reputations(&job).unwrap();
    assert!(reps.iter().all(|r| r.flagged == 0), "{reps:?}");
}
