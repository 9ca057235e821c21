//! Expert-wise aggregation's tests: the ratio of sums, per expert and per task.

use super::*;
use crate::ClientUpdate;
use tg_types::NamedTensor;

fn t(name: &str, shape: Vec<usize>, data: Vec<f32>) -> NamedTensor {
    NamedTensor {
        name: name.into(),
        shape,
        data,
    }
}

/// Two experts of two values each, a shared scalar, and the weights.
fn model(b: [f32; 4], router: f32, ew: [f32; 2], sw: f32) -> Parameters {
    Parameters::new(vec![
        t("layers.0.lora_B", vec![2, 2], b.to_vec()),
        t("router.logits", vec![1], vec![router]),
        t(EXPERT_WEIGHT, vec![2], ew.to_vec()),
        t(SHARED_WEIGHT, vec![1], vec![sw]),
    ])
    .unwrap()
}

fn update(n: usize, p: Parameters) -> ClientUpdate {
    ClientUpdate {
        agent: AgentId::numbered(n),
        update: p,
        num_examples: 1,
        control_delta: None,
    }
}

fn strategy() -> ExpertWise {
    ExpertWise::new(Sampler::new(1.0, 1).unwrap(), 1.0)
}

#[test]
fn each_expert_moves_by_the_weighted_mean_of_the_clients_that_used_it() {
    let global = model([1.0; 4], 0.0, [0.0; 2], 0.0);
    // Client 1 (3 examples) used only expert 0, Δ = +1; client 2
    // (1 example) both experts equally, Δ = −1 everywhere.
    let c1 = model([3.0, 3.0, 0.0, 0.0], 3.0 * 0.5, [3.0, 0.0], 3.0);
    let c2 = model([-0.5, -0.5, -0.5, -0.5], -1.0, [0.5, 0.5], 1.0);
    let mut s = strategy();
    let next = s
        .aggregate_train(1, &global, &[update(1, c1), update(2, c2)])
        .unwrap();
    let v: Vec<f32> = next.values().collect();
    // Expert 0: (3 − 0.5) / 3.5; expert 1: −0.5 / 0.5 = −1.
    let e0 = 1.0 + 2.5 / 3.5;
    assert!(
        (v[0] - e0).abs() < 1e-5 && (v[1] - e0).abs() < 1e-5,
        "{v:?}"
    );
    assert!((v[2] - 0.0).abs() < 1e-5 && (v[3] - 0.0).abs() < 1e-5);
    // The router: (1.5 − 1) / 4 shared weight.
    assert!((v[4] - 0.125).abs() < 1e-6);
    // The weights stay zero in the global model.
    assert_eq!(&v[5..], &[0.0, 0.0, 0.0]);
    assert!(s.last_round().iter().all(|e| e.updated));
}

#[test]
fn the_sum_alone_gives_the_same_model_as_the_individual_updates() {
    // What secure aggregation reveals: one mean update. The ratio is
    // the same, whatever the divisor.
    let global = model([0.5; 4], 0.2, [0.0; 2], 0.0);
    let c1 = model([0.2, -0.1, 0.0, 0.0], 0.3, [2.0, 0.0], 2.0);
    let c2 = model([0.1, 0.1, 0.4, 0.4], -0.2, [1.0, 1.0], 2.0);
    let c3 = model([0.0, 0.0, -0.3, 0.6], 0.1, [0.0, 3.0], 3.0);
    let each = strategy()
        .aggregate_train(
            1,
            &global,
            &[
                update(1, c1.clone()),
                update(2, c2.clone()),
                update(3, c3.clone()),
            ],
        )
        .unwrap();
    let mut sum = c1;
    sum.add_scaled(&c2, 1.0).unwrap();
    sum.add_scaled(&c3, 1.0).unwrap();
    sum.scale(1.0 / 7.0); // any divisor: survivors, or qN under DP
    let once = strategy()
        .aggregate_train(1, &global, &[update(1, sum)])
        .unwrap();
    for (a, b) in each.values().zip(once.values()) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn an_expert_nobody_used_stays_and_a_model_without_weights_is_refused() {
    let global = model([1.0; 4], 0.0, [0.0; 2], 0.0);
    let c = model([2.0, 2.0, 5.0, 5.0], 0.0, [2.0, 0.0], 2.0);
    let mut s = strategy();
    let next = s.aggregate_train(1, &global, &[update(1, c)]).unwrap();
    let v: Vec<f32> = next.values().collect();
    assert_eq!(&v[..4], &[2.0, 2.0, 1.0, 1.0]);
    assert!(!s.last_round()[1].updated);
    let plain = Parameters::new(vec![t("w", vec![1], vec![0.0])]).unwrap();
    let e = strategy()
        .aggregate_train(1, &plain, &[update(1, plain.clone())])
        .unwrap_err();
    assert!(e.to_string().contains(EXPERT_WEIGHT), "{e}");
    let zero = model([0.0; 4], 0.0, [0.0; 2], 0.0);
    let e = strategy()
        .aggregate_train(1, &global, &[update(1, zero)])
        .unwrap_err();
    assert!(matches!(e, StrategyError::Rejected(_)), "{e}");
}

#[test]
fn a_model_that_cannot_start_an_expert_wise_federation_is_refused() {
    let ok = |extra: Vec<NamedTensor>| {
        let mut v = vec![
            t("layers.0.lora_B", vec![2, 1], vec![0.0, 0.0]),
            t("router.logits", vec![3, 2], vec![0.0; 6]),
            t(EXPERT_WEIGHT, vec![2], vec![0.0, 0.0]),
            t(SHARED_WEIGHT, vec![1], vec![0.0]),
        ];
        v.extend(extra);
        Parameters::new(v).unwrap()
    };
    assert_eq!(initial_model_refusal(&ok(vec![])), None);
    assert_eq!(
        initial_model_refusal(&ok(vec![t(TASK_WEIGHT, vec![3], vec![0.0; 3])])),
        None
    );
    for (bad, says) in [
        (t(TASK_WEIGHT, vec![1, 3], vec![0.0; 3]), "shape [T]"),
        // Four tasks, but the router has three rows: nothing per-task.
        (
            t(TASK_WEIGHT, vec![4], vec![0.0; 4]),
            "no tensor is per-task",
        ),
        (
            t(TASK_WEIGHT, vec![3], vec![0.0, 1e8, 0.0]),
            "start at zero",
        ),
    ] {
        let why = initial_model_refusal(&ok(vec![bad])).unwrap();
        assert!(why.contains(says), "{why}");
    }
    let mut nonzero = ok(vec![]).tensors().to_vec();
    nonzero[3].data[0] = 2.0;
    let why = initial_model_refusal(&Parameters::new(nonzero).unwrap()).unwrap();
    assert!(why.contains(SHARED_WEIGHT) && why.contains("zero"), "{why}");
    let plain = Parameters::new(vec![t("w", vec![1], vec![0.0])]).unwrap();
    assert!(
        initial_model_refusal(&plain)
            .unwrap()
            .contains(EXPERT_WEIGHT)
    );
}

#[test]
fn a_task_row_moves_by_the_mean_of_the_clients_that_have_the_task() {
    // Two tasks' router rows of two logits; one expert of one value.
    let m = |rows: [f32; 4], tw: [f32; 2], sw: f32| {
        Parameters::new(vec![
            t("layers.0.lora_B", vec![1, 1], vec![0.0]),
            t("router.logits", vec![2, 2], rows.to_vec()),
            t("task_embed.weight", vec![2, 1], vec![rows[0], rows[2]]),
            t(EXPERT_WEIGHT, vec![1], vec![0.0]),
            t(SHARED_WEIGHT, vec![1], vec![sw]),
            t(TASK_WEIGHT, vec![2], tw.to_vec()),
        ])
        .unwrap()
    };
    let global = m([0.0; 4], [0.0; 2], 0.0);
    // Client 1 has only task 0 (4 examples, Δ = +1 on its row); client
    // 2 only task 1 (1 example, Δ = −2); client 3 both (2 + 2, Δ = +1
    // on both rows). Row 0: (4 + 2) / 6 = 1; row 1: (−2 + 2) / 3 = 0.
    let c1 = m([4.0, 4.0, 0.0, 0.0], [4.0, 0.0], 4.0);
    let c2 = m([0.0, 0.0, -2.0, -2.0], [0.0, 1.0], 1.0);
    let c3 = m([2.0, 2.0, 2.0, 2.0], [2.0, 2.0], 4.0);
    let next = strategy()
        .aggregate_train(1, &global, &[update(1, c1), update(2, c2), update(3, c3)])
        .unwrap();
    let v: Vec<f32> = next.values().collect();
    assert!(
        (v[1] - 1.0).abs() < 1e-5 && (v[2] - 1.0).abs() < 1e-5,
        "{v:?}"
    );
    assert!(v[3].abs() < 1e-5 && v[4].abs() < 1e-5, "{v:?}");
    assert!((v[5] - 1.0).abs() < 1e-5 && v[6].abs() < 1e-5, "{v:?}");
    // A task nobody had stays; a TASK_WEIGHT of another shape is refused.
    let only0 = m([4.0, 4.0, 0.0, 0.0], [4.0, 0.0], 4.0);
    let next = strategy()
        .aggregate_train(1, &global, &[update(1, only0)])
        .unwrap();
    let v: Vec<f32> = next.values().collect();
    assert_eq!(&v[1..5], &[1.0, 1.0, 0.0, 0.0]);
    // A task under the floor (here 0.5 % of the shared weight) is left
    // as it was, not moved by a ratio with a near-zero denominator.
    let tiny = m([4.0, 4.0, 0.01, 0.01], [4.0, 0.02], 4.0);
    let next = strategy()
        .aggregate_train(1, &global, &[update(1, tiny)])
        .unwrap();
    let v: Vec<f32> = next.values().collect();
    assert_eq!(&v[1..5], &[1.0, 1.0, 0.0, 0.0]);
    // The sum alone (what secure aggregation reveals) gives the same
    // rows as the individual updates, whatever the divisor.
    let c1 = m([2.0, 1.0, 0.0, 0.0], [2.0, 0.0], 2.0);
    let c2 = m([0.5, 0.5, -3.0, 1.5], [1.0, 3.0], 4.0);
    let each = strategy()
        .aggregate_train(1, &global, &[update(1, c1.clone()), update(2, c2.clone())])
        .unwrap();
    let mut sum = c1;
    sum.add_scaled(&c2, 1.0).unwrap();
    sum.scale(1.0 / 5.0);
    let once = strategy()
        .aggregate_train(1, &global, &[update(1, sum)])
        .unwrap();
    for (a, b) in each.values().zip(once.values()) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    let bad = Parameters::new(vec![
        t("layers.0.lora_B", vec![1, 1], vec![0.0]),
        t(EXPERT_WEIGHT, vec![1], vec![0.0]),
        t(SHARED_WEIGHT, vec![1], vec![1.0]),
        t(TASK_WEIGHT, vec![1, 2], vec![1.0, 1.0]),
    ])
    .unwrap();
    let e = strategy()
        .aggregate_train(1, &bad, &[update(1, bad.clone())])
        .unwrap_err();
    assert!(e.to_string().contains(TASK_WEIGHT), "{e}");
}

#[test]
fn reports_say_which_tasks_and_what_share_of_clients_trained_each_expert_and_move_nothing() {
    // Two experts, three tasks. Client 1: task 0 on expert 0 (weight 3);
    // client 2: task 1 on expert 0 (1) and task 2 on expert 1 (2); client
    // 3 used nothing above its threshold.
    let m = |b: [f32; 4], ew: [f32; 2], sw: f32, mass: [f32; 6], used: [f32; 2]| {
        Parameters::new(vec![
            t("layers.0.lora_B", vec![2, 2], b.to_vec()),
            t(EXPERT_WEIGHT, vec![2], ew.to_vec()),
            t(SHARED_WEIGHT, vec![1], vec![sw]),
            t(EXPERT_TASK_MASS, vec![2, 3], mass.to_vec()),
            t(EXPERT_CLIENTS, vec![2], used.to_vec()),
        ])
        .unwrap()
    };
    let global = m([0.0; 4], [0.0; 2], 0.0, [0.0; 6], [0.0; 2]);
    assert_eq!(initial_model_refusal(&global), None);
    let c1 = m(
        [3.0, 3.0, 0.0, 0.0],
        [3.0, 0.0],
        3.0,
        [3.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [1.0, 0.0],
    );
    let c2 = m(
        [1.0, 1.0, 2.0, 2.0],
        [1.0, 2.0],
        3.0,
        [0.0, 1.0, 0.0, 0.0, 0.0, 2.0],
        [1.0, 1.0],
    );
    let c3 = m([0.0; 4], [0.0, 0.0], 1.0, [0.0; 6], [0.0, 0.0]);
    let mut each = strategy();
    let with = each
        .aggregate_train(
            1,
            &global,
            &[
                update(1, c1.clone()),
                update(2, c2.clone()),
                update(3, c3.clone()),
            ],
        )
        .unwrap();
    let steps = each.last_round().to_vec();
    let close = |a: &[f64], b: &[f64]| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
    };
    assert!(close(&steps[0].task_share, &[0.75, 0.25, 0.0]), "{steps:?}");
    assert!(close(&steps[1].task_share, &[0.0, 0.0, 1.0]), "{steps:?}");
    assert!((steps[0].client_share.unwrap() - 2.0 / 3.0).abs() < 1e-6);
    assert!((steps[1].client_share.unwrap() - 1.0 / 3.0).abs() < 1e-6);
    // The reports stay zero in the model and move nothing: the same
    // clients without them give the same model.
    let strip = |p: &Parameters| {
        Parameters::new(
            p.tensors()
                .iter()
                .filter(|x| x.name != EXPERT_TASK_MASS && x.name != EXPERT_CLIENTS)
                .cloned()
                .collect(),
        )
        .unwrap()
    };
    let without = strategy()
        .aggregate_train(
            1,
            &strip(&global),
            &[
                update(1, strip(&c1)),
                update(2, strip(&c2)),
                update(3, strip(&c3)),
            ],
        )
        .unwrap();
    let v: Vec<f32> = with.values().collect();
    assert_eq!(v[..7], without.values().collect::<Vec<_>>()[..]);
    assert!(v[7..].iter().all(|&x| x == 0.0), "{v:?}");
    // The same figures from the sum alone.
    let mut sum = c1;
    sum.add_scaled(&c2, 1.0).unwrap();
    sum.add_scaled(&c3, 1.0).unwrap();
    sum.scale(1.0 / 3.0);
    let mut once = strategy();
    once.aggregate_train(1, &global, &[update(1, sum)]).unwrap();
    assert!(close(
        &once.last_round()[0].task_share,
        &steps[0].task_share
    ));
    // Reports in the wrong shape, or not at zero, are refused at start.
    let plain = || {
        vec![
            t("layers.0.lora_B", vec![2, 2], vec![0.0; 4]),
            t(EXPERT_WEIGHT, vec![2], vec![0.0; 2]),
            t(SHARED_WEIGHT, vec![1], vec![0.0]),
        ]
    };
    let with = |x: NamedTensor| plain().into_iter().chain([x]).collect::<Vec<_>>();
    for (bad, says) in [
        (
            with(t(EXPERT_TASK_MASS, vec![3, 2], vec![0.0; 6])),
            "shape [E, T]",
        ),
        (
            with(t(EXPERT_CLIENTS, vec![3], vec![0.0; 3])),
            EXPERT_CLIENTS,
        ),
        (
            with(t(
                EXPERT_TASK_MASS,
                vec![2, 3],
                vec![0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
            )),
            "start at zero",
        ),
    ] {
        let why = initial_model_refusal(&Parameters::new(bad).unwrap()).unwrap();
        assert!(why.contains(says), "{why}");
    }
}
