//! End-to-end properties of the protocol, every party in process.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use tg_secagg::crypto::Context;
use tg_secagg::local::run_round;
use tg_secagg::messages::{ClientBody, Stage};
use tg_secagg::packing::lane_mask;
use tg_secagg::{Floors, Refusal, RoundConfig, SecAggError};

const STAGES: [Stage; 5] = [
    Stage::AdvertiseKeys,
    Stage::ShareKeys,
    Stage::MaskedInput,
    Stage::ConsistencyCheck,
    Stage::Unmask,
];

fn setup(
    n: usize,
    dim: usize,
    bits: u32,
    seed: u64,
) -> (Arc<RoundConfig>, Vec<SigningKey>, Vec<Vec<u32>>) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let keys: Vec<SigningKey> = (0..n)
        .map(|_| {
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut b);
            SigningKey::from_bytes(&b)
        })
        .collect();
    let ctx = Context::new([7; 16], 1);
    let cfg = RoundConfig::new(
        ctx,
        keys.iter().map(SigningKey::verifying_key).collect(),
        dim,
        bits,
        0.05,
        0.2,
    )
    .unwrap();
    let mask = lane_mask(bits);
    let inputs = (0..n)
        .map(|_| (0..dim).map(|_| rng.next_u32() & mask).collect())
        .collect();
    (cfg, keys, inputs)
}

fn plaintext_sum(inputs: &[Vec<u32>], who: &[u32], bits: u32) -> Vec<u32> {
    let mut s = vec![0u32; inputs[0].len()];
    for &i in who {
        s.iter_mut()
            .zip(&inputs[i as usize])
            .for_each(|(a, b)| *a = a.wrapping_add(*b));
    }
    s.iter().map(|v| v & lane_mask(bits)).collect()
}

#[test]
fn honest_round_without_dropouts_sums_exactly() {
    let (cfg, keys, inputs) = setup(12, 100, 20, 1);
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let (sum, report) = run_round(
        &cfg,
        &keys,
        inputs.clone(),
        &[None; 12],
        &Floors::default(),
        &mut rng,
        2,
    )
    .unwrap();
    assert_eq!(sum.survivors, (0..12).collect::<Vec<_>>());
    assert_eq!(sum.sum, plaintext_sum(&inputs, &sum.survivors, 20));
    assert!(report.upload_bytes_per_client > 250);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, .. ProptestConfig::default() })]
    #[test]
    fn dropouts_at_any_stage_still_give_the_exact_survivor_sum(
        seed: u64,
        n in 3usize..=200,
        dim in 1usize..64,
        bits in 1u32..=32,
        drop_rate in 0.0f64..0.25,
    ) {
        let (cfg, keys, inputs) = setup(n, dim, bits, seed);
        let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0xd0);
        let drops: Vec<Option<Stage>> = (0..n)
            .map(|_| {
                let r = (rng.next_u32() as f64) / f64::from(u32::MAX);
                (r < drop_rate).then(|| STAGES[rng.next_u32() as usize % 5])
            })
            .collect();
        match run_round(&cfg, &keys, inputs.clone(), &drops, &Floors::default(), &mut rng, 2) {
            Ok((sum, _)) => {
                // Survivors are exactly those who sent a masked input.
                let expect: Vec<u32> = (0..n as u32)
                    .filter(|&i| drops[i as usize].is_none_or(|s| s > Stage::MaskedInput))
                    .collect();
                prop_assert_eq!(&sum.survivors, &expect);
                prop_assert_eq!(sum.sum, plaintext_sum(&inputs, &expect, bits));
            }
            // Too many dropouts, or a survivor that vanished before
            // confirming the set: the round fails closed, with no sum.
            Err(SecAggError::Protocol(msg)) => prop_assert!(
                msg.contains("threshold") || msg.contains("did not confirm"),
                "{}",
                msg
            ),
            Err(e @ SecAggError::Refused { .. }) => prop_assert!(
                matches!(
                    e.refusal(),
                    Some(Refusal::SurvivorsBelowFloor | Refusal::MaskingNeighboursDropped
                        | Refusal::TooFewShares | Refusal::TooFewKeys | Refusal::TooFewConfirmations)
                ),
                "{}",
                e
            ),
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }
}

#[test]
fn no_transcript_holds_both_share_sets_for_one_client() {
    let n = 20;
    let (cfg, keys, inputs) = setup(n, 16, 16, 5);
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let mut drops = vec![None; n];
    drops[3] = Some(Stage::MaskedInput); // shared keys, then vanished
    drops[7] = Some(Stage::Unmask);
    let (_, report) =
        run_round(&cfg, &keys, inputs, &drops, &Floors::default(), &mut rng, 1).unwrap();
    let (mut seeds, mut keys_revealed) = (BTreeSet::new(), BTreeSet::new());
    for m in &report.transcript {
        if let ClientBody::Unmask(u) = &m.body {
            seeds.extend(u.self_mask_shares.iter().map(|(o, _)| *o));
            keys_revealed.extend(u.mask_key_shares.iter().map(|(o, _)| *o));
        }
    }
    assert!(keys_revealed.contains(&3));
    assert!(
        seeds.is_disjoint(&keys_revealed),
        "{seeds:?} ∩ {keys_revealed:?}"
    );
}

#[test]
fn chacha20_masks_sum_exactly_too() {
    let (cfg, keys, inputs) = setup(15, 50, 24, 11);
    let cfg = cfg.with_prg(tg_secagg::crypto::Prg::ChaCha20);
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let mut drops = vec![None; 15];
    drops[4] = Some(Stage::MaskedInput);
    let (sum, _) = run_round(
        &cfg,
        &keys,
        inputs.clone(),
        &drops,
        &Floors::default(),
        &mut rng,
        2,
    )
    .unwrap();
    assert_eq!(sum.sum, plaintext_sum(&inputs, &sum.survivors, 24));
}
