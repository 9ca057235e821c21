//! Red team: a malicious coordinator that speaks the real protocol tries
//! each attack of the independent review (and more) against honest clients.
//! For each, the honest clients refuse with the specific code, and where the
//! attack used to succeed the attacker's own reconstruction is run and shown
//! to fail. Positive controls (the same attack against the semi-honest
//! thresholds, or with more Sybils than assumed) show the reconstruction
//! does find inputs when the defences are absent.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use crate::adversary::{Attack, all_but, announce_and_reveal, config, signing_keys};
use tg_secagg::crypto::Context;
use tg_secagg::messages::{ServerBody, Stage};
use tg_secagg::{Floors, Refusal, RoundConfig, Threat};

fn harary(n: usize, seed: u64) -> (std::sync::Arc<RoundConfig>, Vec<ed25519_dalek::SigningKey>) {
    let keys = signing_keys(n, seed);
    let cfg = config(&keys, 8, 16, 0.05, 0.1);
    assert!(cfg.graph.degree < n - 1, "want a sparse graph");
    (cfg, keys)
}

#[test]
fn withholding_every_share_is_refused_and_the_mask_stays() {
    let (cfg, keys) = harary(60, 1);
    let victim = 7;
    let mut a = Attack::new(cfg, &keys, &[], &Floors::default(), 2);
    for i in a.live() {
        let k = a.neighbour_keys(i);
        a.deliver(i, ServerBody::neighbour_keys(k));
    }
    for i in a.live() {
        let s = if i == victim {
            Vec::new()
        } else {
            a.shares_to(i, |_| true)
        };
        a.deliver(i, ServerBody::SharesForYou(s));
    }
    assert_eq!(a.refusals.get(&victim), Some(&Refusal::TooFewShares));
    assert!(a.sent(victim, Stage::MaskedInput).is_none());
    // The attack as it was: everyone "survived", neighbours reveal b_victim.
    let everyone: Vec<u32> = (0..a.n()).filter(|&i| i != victim).collect();
    announce_and_reveal(&mut a, |_| everyone.clone());
    assert!(a.exposed().is_empty(), "{:?}", a.exposed());
}

#[test]
fn withholding_all_but_t_minus_one_shares_is_refused() {
    let (cfg, keys) = harary(60, 3);
    let t = cfg.graph.threshold;
    let victim = 11;
    let mut a = Attack::new(cfg, &keys, &[], &Floors::default(), 4);
    for i in a.live() {
        let k = a.neighbour_keys(i);
        a.deliver(i, ServerBody::neighbour_keys(k));
    }
    let mut s = a.shares_to(victim, |_| true);
    s.truncate(t - 1);
    a.deliver(victim, ServerBody::SharesForYou(s));
    assert_eq!(a.refusals.get(&victim), Some(&Refusal::TooFewShares));
}

#[test]
fn masking_with_t_then_declaring_them_dropped_is_refused() {
    // The review's attack at its strongest: the victim gets exactly t
    // shares, masks with those t, and the server declares them dropped.
    let (cfg, keys) = harary(60, 5);
    let t = cfg.graph.threshold;
    let victim = 20;
    let mut a = Attack::new(cfg.clone(), &keys, &[], &Floors::default(), 6);
    for i in a.live() {
        let k = a.neighbour_keys(i);
        a.deliver(i, ServerBody::neighbour_keys(k));
    }
    let chosen: BTreeSet<u32> = a
        .shares_to(victim, |_| true)
        .iter()
        .take(t)
        .map(|(f, _)| *f)
        .collect();
    for i in a.live() {
        let s = if i == victim {
            a.shares_to(i, |f| chosen.contains(&f))
        } else {
            a.shares_to(i, |_| true)
        };
        a.deliver(i, ServerBody::SharesForYou(s));
    }
    assert!(
        a.sent(victim, Stage::MaskedInput).is_some(),
        "masked with t"
    );
    // Listing any other neighbour as a survivor is refused at once (E104),
    // so the server declares the victim's whole neighbourhood dropped.
    let neighbourhood: BTreeSet<u32> = (0..a.n())
        .filter(|&j| cfg.are_neighbours(victim, j))
        .collect();
    let told = all_but(a.n(), &neighbourhood);
    announce_and_reveal(&mut a, |_| told.clone());
    // The victim refuses to sign; its neighbours refuse to reveal its seed.
    assert_eq!(
        a.refusals.get(&victim),
        Some(&Refusal::MaskingNeighboursDropped)
    );
    // Its neighbours, told they dropped, reveal nothing of it.
    let seed_shares = a
        .transcript
        .iter()
        .filter_map(|m| match &m.body {
            tg_secagg::messages::ClientBody::Unmask(u) => Some(u),
            _ => None,
        })
        .flat_map(|u| u.self_mask_shares.iter())
        .filter(|(o, _)| *o == victim)
        .count();
    assert_eq!(seed_shares, 0);
    assert!(a.exposed().is_empty());
}

/// The split view on a ring: clients on one side of the victim are told
/// everyone survived, those on the other that the victim dropped.
fn ring_split(seed: u64) -> (Attack, u32) {
    let (cfg, keys) = harary(60, seed);
    let victim = 30;
    let mut a = Attack::new(cfg, &keys, &[], &Floors::default(), seed + 1);
    a.honest_share_and_mask();
    let n = a.n();
    let everyone: Vec<u32> = (0..n).collect();
    let without: Vec<u32> = (0..n).filter(|&i| i != victim).collect();
    announce_and_reveal(&mut a, |i| {
        if i <= victim {
            everyone.clone()
        } else {
            without.clone()
        }
    });
    (a, victim)
}

#[test]
fn a_ring_split_view_reveals_nothing() {
    let (a, victim) = ring_split(10);
    assert!(a.reconstruct(victim).is_none());
    assert!(a.exposed().is_empty(), "{:?}", a.exposed());
    for set in a.revealable_sets() {
        assert!(set.len() >= 2, "an input alone: {set:?}");
    }
}

/// The split view at its strongest, on 10 clients with one Sybil: group A (4 honest) is told {victim, A, Sybil} survived, group B
/// (4 honest) that only {B, Sybil} did. A reveals the victim's self-mask
/// seed (the victim consents to A's set), B its mask key.
fn two_group_split(threat: Threat) -> (Attack, u32) {
    let keys = signing_keys(10, 40);
    let cfg = config(&keys, 8, 16, 0.1, 0.3).with_threat(threat).unwrap();
    let victim = 0;
    let sybil = 9;
    let mut a = Attack::new(cfg, &keys, &[sybil], &Floors::allowing_semi_honest(), 41);
    a.honest_share_and_mask();
    let group_a = vec![0, 1, 2, 3, 4, 9];
    let group_b = vec![5, 6, 7, 8, 9];
    announce_and_reveal(&mut a, |i| {
        if group_a.contains(&i) {
            group_a.clone()
        } else {
            group_b.clone()
        }
    });
    (a, victim)
}

#[test]
fn a_two_group_split_view_reveals_nothing_against_malicious_thresholds() {
    let (a, victim) = two_group_split(Threat::Malicious);
    assert!(a.reconstruct(victim).is_none());
    assert!(a.exposed().is_empty(), "{:?}", a.exposed());
    // The victim itself refuses the set it was shown.
    assert!(
        matches!(
            a.refusals.get(&victim),
            Some(Refusal::MaskingNeighboursDropped | Refusal::TooFewConfirmations)
        ),
        "{:?}",
        a.refusals
    );
}

#[test]
fn positive_control_the_split_view_exposes_the_victim_under_semi_honest_thresholds() {
    // Not a defence test: it shows the attack and the reconstruction are
    // real, so the test above can fail.
    let (a, victim) = two_group_split(Threat::SemiHonest);
    assert!(a.refusals.is_empty(), "{:?}", a.refusals);
    assert!(a.exposed().contains(&victim), "{:?}", a.exposed());
    assert!(
        a.revealable_sets()
            .iter()
            .any(|s| s == &BTreeSet::from([victim]))
    );
}

#[test]
fn positive_control_more_sybils_than_assumed_expose_a_neighbour() {
    // Thresholds hold only up to the assumed corruption: with t Sybil
    // neighbours the attacker holds t shares of each secret.
    let keys = signing_keys(8, 12);
    let cfg = config(&keys, 8, 16, 0.05, 0.1);
    let t = cfg.graph.threshold;
    let sybils: Vec<u32> = cfg
        .graph
        .neighbours(0)
        .into_iter()
        .take(t)
        .map(|j| j as u32)
        .collect();
    let mut a = Attack::new(cfg, &keys, &sybils, &Floors::default(), 13);
    a.honest_share_and_mask();
    let everyone: Vec<u32> = (0..a.n()).collect();
    announce_and_reveal(&mut a, |_| everyone.clone());
    assert!(a.exposed().contains(&0), "{:?}", a.refusals);
}

#[test]
fn equivocated_configurations_fail_at_the_first_signature() {
    let keys = signing_keys(20, 14);
    let honest = config(&keys, 8, 16, 0.05, 0.1);
    // Client 3 is offered the same round with less noise (another binding),
    // client 4 one with a lower threshold (another dropout assumption).
    let mut lowered = [0u8; 32];
    lowered[0] = 1;
    let less_noise = honest.clone().with_binding(lowered);
    let other_t = config(&keys, 8, 16, 0.05, 0.3);
    let mut cfgs = vec![honest.clone(); 20];
    cfgs[3] = less_noise;
    cfgs[4] = other_t;
    let mut a = Attack::with_configs(cfgs, honest.clone(), &keys, &[], &Floors::default(), 15);
    for i in a.live() {
        let k = a.neighbour_keys(i);
        a.deliver(i, ServerBody::neighbour_keys(k));
    }
    assert_eq!(a.refusals.get(&3), Some(&Refusal::BadSignature));
    assert_eq!(a.refusals.get(&4), Some(&Refusal::BadSignature));
    // And their neighbours refuse their advertisements.
    assert!(
        a.refusals
            .iter()
            .any(|(i, r)| *i != 3 && *i != 4 && *r == Refusal::BadSignature)
    );
}

#[test]
fn two_party_and_sybil_sized_rounds_are_refused() {
    // n = 2 makes t = 1: refused outright against a malicious server…
    let keys = signing_keys(2, 16);
    assert!(
        RoundConfig::new(
            Context::new([1; 16], 1),
            keys.iter().map(|k| k.verifying_key()).collect(),
            4,
            16,
            0.0,
            0.0
        )
        .is_err()
    );
    // …and a semi-honest round is below a default client's floor.
    let three = signing_keys(3, 17);
    let semi = config(&three, 4, 16, 0.0, 0.0)
        .with_threat(Threat::SemiHonest)
        .unwrap();
    let a = Attack::new(semi, &three, &[], &Floors::default(), 18);
    assert_eq!(a.refusals.get(&0), Some(&Refusal::BelowFloor));
    // A data owner who wants at least 10 participants refuses a 6-party round
    // padded with the coordinator's own identities.
    let six = signing_keys(6, 19);
    let floors = Floors {
        min_participants: 10,
        ..Floors::default()
    };
    let a = Attack::new(
        config(&six, 4, 16, 0.0, 0.0),
        &six,
        &[1, 2, 3, 4, 5],
        &floors,
        20,
    );
    assert_eq!(a.refusals.get(&0), Some(&Refusal::BelowFloor));
}

#[test]
fn a_lowered_threshold_or_corruption_assumption_is_below_the_floor() {
    let keys = signing_keys(40, 21);
    // The server assumes nobody is corrupt; this owner assumes 10%.
    let optimistic = config(&keys, 8, 16, 0.0, 0.1);
    let floors = Floors {
        assumed_corrupt: 0.1,
        ..Floors::default()
    };
    let a = Attack::new(optimistic, &keys, &[], &floors, 22);
    assert_eq!(a.refusals.get(&0), Some(&Refusal::BelowFloor));
    // A survivor floor below the owner's fraction.
    let low = config(&keys, 8, 16, 0.05, 0.1)
        .with_survivor_fraction(0.2)
        .unwrap();
    let floors = Floors {
        min_survivor_fraction: 0.6,
        ..Floors::default()
    };
    let a = Attack::new(low, &keys, &[], &floors, 23);
    assert_eq!(a.refusals.get(&5), Some(&Refusal::BelowFloor));
}

#[test]
fn out_of_range_padded_or_short_survivor_lists_are_refused() {
    let (cfg, keys) = harary(40, 24);
    let floor = cfg.min_survivors;
    let mut a = Attack::new(cfg, &keys, &[], &Floors::default(), 25);
    a.honest_share_and_mask();
    let n = a.n();
    let cases: Vec<(u32, Vec<u32>, Refusal)> = vec![
        (0, (0..n).chain([n]).collect(), Refusal::MalformedSurvivors),
        (
            1,
            (0..n).chain([u32::MAX]).collect(),
            Refusal::MalformedSurvivors,
        ),
        (
            2,
            [0, 1, 2, 2].into_iter().chain(3..n).collect(),
            Refusal::MalformedSurvivors,
        ),
        (3, (0..n).rev().collect(), Refusal::MalformedSurvivors),
        (
            4,
            (0..n).filter(|&i| i != 4).collect(),
            Refusal::MalformedSurvivors,
        ),
        (
            5,
            (0..floor as u32 - 1)
                .chain([5])
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            Refusal::SurvivorsBelowFloor,
        ),
    ];
    for (i, set, want) in cases {
        a.deliver(i, ServerBody::Survivors(set));
        assert_eq!(a.refusals.get(&i), Some(&want), "client {i}");
    }
}

#[test]
fn reflected_share_ciphertexts_reveal_nothing_when_neighbours_drop() {
    // No malice: the server follows the protocol; 30 of 100 drop after
    // sharing keys (the review read 43–53 survivors' inputs here).
    let keys = signing_keys(100, 26);
    let cfg = config(&keys, 8, 16, 0.05, 0.3);
    let mut a = Attack::new(cfg, &keys, &[], &Floors::default(), 27);
    for i in a.live() {
        let k = a.neighbour_keys(i);
        a.deliver(i, ServerBody::neighbour_keys(k));
    }
    let dropped: BTreeSet<u32> = (0..100).filter(|i| i % 10 < 3).collect();
    for &d in &dropped {
        a.vanish(d);
    }
    for i in a.live() {
        let s = a.shares_to(i, |_| true);
        a.deliver(i, ServerBody::SharesForYou(s));
    }
    let survivors = all_but(100, &dropped);
    announce_and_reveal(&mut a, |_| survivors.clone());
    assert!(a.refusals.is_empty(), "{:?}", a.refusals);
    // The attacker XORs every revealed share into the reflected ciphertexts.
    assert!(a.exposed().is_empty(), "{:?}", a.exposed());
    let sets = a.revealable_sets();
    assert_eq!(sets.len(), 1, "only the survivors' sum");
    assert_eq!(sets[0].len(), 70);
}

#[test]
fn a_replayed_round_is_refused() {
    let keys = signing_keys(20, 28);
    let r1 = config(&keys, 8, 16, 0.05, 0.1);
    let mut old = Attack::new(r1, &keys, &[], &Floors::default(), 29);
    old.honest_share_and_mask();
    let r2 = RoundConfig::new(
        Context::new([0x5a; 16], 2),
        keys.iter().map(|k| k.verifying_key()).collect(),
        8,
        16,
        0.05,
        0.1,
    )
    .unwrap();
    let mut a = Attack::new(r2, &keys, &[], &Floors::default(), 30);
    // Round 1's advertisements (whose secrets the attacker may have
    // learned since) are replayed into round 2.
    let replayed = old.neighbour_keys(0);
    a.deliver(0, ServerBody::neighbour_keys(replayed));
    assert_eq!(a.refusals.get(&0), Some(&Refusal::BadSignature));
}

#[test]
fn withheld_consent_duplicates_and_foreign_messages_are_refused() {
    let (cfg, keys) = harary(40, 31);
    let mut a = Attack::new(cfg.clone(), &keys, &[], &Floors::default(), 32);
    // A duplicated advertisement.
    let mut k = a.neighbour_keys(0);
    k.push(k[0].clone());
    a.deliver(0, ServerBody::neighbour_keys(k));
    assert_eq!(a.refusals.get(&0), Some(&Refusal::Malformed));
    // A non-neighbour's advertisement.
    let far = (0..40)
        .find(|&j| j != 1 && !cfg.are_neighbours(1, j))
        .unwrap();
    let mut k = a.neighbour_keys(1);
    k.push(a.sent(far, Stage::AdvertiseKeys).unwrap().clone());
    a.deliver(1, ServerBody::neighbour_keys(k));
    assert_eq!(a.refusals.get(&1), Some(&Refusal::Malformed));
    for i in a.live() {
        let k = a.neighbour_keys(i);
        a.deliver(i, ServerBody::neighbour_keys(k));
    }
    for i in a.live() {
        let s = a.shares_to(i, |_| true);
        a.deliver(i, ServerBody::SharesForYou(s));
    }
    let survivors: Vec<u32> = a.live();
    for i in a.live() {
        a.deliver(i, ServerBody::Survivors(survivors.clone()));
    }
    // Client 10's stage 5 without the mask commitments of 9 and 11 (whose
    // seeds it holds).
    let sigs: Vec<_> = a
        .stage5_for(10, &survivors)
        .into_iter()
        .filter(|m| {
            !matches!(m.body, tg_secagg::messages::ClientBody::MaskCommitment(_))
                || (m.from != 9 && m.from != 11)
        })
        .collect();
    a.deliver(10, ServerBody::survivor_signatures(sigs));
    assert_eq!(a.refusals.get(&10), Some(&Refusal::MissingCommitment));
    // Fewer than t confirmations.
    let t = cfg.graph.threshold;
    let sigs: Vec<_> = a
        .confirmations_for(20, &survivors)
        .into_iter()
        .take(t - 1)
        .collect();
    a.deliver(20, ServerBody::survivor_signatures(sigs));
    assert_eq!(a.refusals.get(&20), Some(&Refusal::TooFewConfirmations));
}
