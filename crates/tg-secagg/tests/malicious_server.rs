//! Property: a randomized malicious server that deviates at every stage —
//! drops, reorders, duplicates, withholds, substitutes, equivocates, and runs
//! Sybils up to the assumed corruption — never gets an honest client's input
//! alone out of everything it holds. Honest runs summing exactly is
//! `protocol.rs`'s property; this one is about what a deviating server learns.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use crate::adversary::{Attack, config, signing_keys};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use tg_secagg::Floors;
use tg_secagg::messages::{ServerBody, Signed, Stage};

/// How the server treats one client's input for one stage: honestly in
/// `honest` out of 10 cases, otherwise one deviation.
fn tamper<T: Clone>(items: &mut Vec<T>, spare: &[T], honest: u32, rng: &mut ChaCha20Rng) {
    if rng.next_u32() % 10 < honest {
        return;
    }
    match rng.next_u32() % 6 {
        // Withhold a random subset.
        0 => items.retain(|_| !rng.next_u32().is_multiple_of(3)),
        // Withhold all but a few.
        1 => items.truncate((rng.next_u32() % 4) as usize),
        // Duplicate one.
        2 if !items.is_empty() => {
            let i = rng.next_u32() as usize % items.len();
            items.push(items[i].clone());
        }
        // Substitute one with something else the server holds.
        3 if !items.is_empty() && !spare.is_empty() => {
            let i = rng.next_u32() as usize % items.len();
            items[i] = spare[rng.next_u32() as usize % spare.len()].clone();
        }
        // Reorder.
        _ => {
            for i in (1..items.len()).rev() {
                items.swap(i, rng.next_u32() as usize % (i + 1));
            }
        }
    }
}

/// The survivor sets the server tells: one to three candidate sets, each
/// client assigned one (contiguous arcs or at random), some malformed.
fn survivor_views(a: &Attack, honest: u32, rng: &mut ChaCha20Rng) -> Vec<Vec<u32>> {
    let n = a.n();
    let masked: Vec<u32> = (0..n)
        .filter(|&i| a.sent(i, Stage::MaskedInput).is_some() || !a.is_honest(i))
        .collect();
    if honest == 10 {
        return vec![masked; n as usize];
    }
    let sets = 1 + rng.next_u32() % 3;
    let mut pool: Vec<Vec<u32>> = Vec::new();
    for _ in 0..sets {
        let mut s = masked.clone();
        match rng.next_u32() % 6 {
            0 => {}
            1 => s.retain(|_| !rng.next_u32().is_multiple_of(4)),
            2 => {
                // Declare a victim's whole neighbourhood dropped.
                let v = rng.next_u32() % n;
                s.retain(|&j| !a.cfg.are_neighbours(v, j));
            }
            3 => {
                // Keep just above or below the floor.
                let keep = a.cfg.min_survivors.saturating_sub(1) + (rng.next_u32() % 3) as usize;
                s.truncate(keep);
            }
            4 => s.push(n + rng.next_u32() % 4),
            _ => {
                let extra = rng.next_u32() % n;
                s.push(extra);
                s.sort_unstable();
            }
        }
        pool.push(s);
    }
    let arcs = rng.next_u32().is_multiple_of(2);
    (0..n)
        .map(|i| {
            let k = if arcs {
                (i as usize * pool.len()) / n as usize
            } else {
                rng.next_u32() as usize % pool.len()
            };
            pool[k].clone()
        })
        .collect()
}

fn run(seed: u64, n: usize, corrupt: f64, dropout: f64) -> Attack {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let keys = signing_keys(n, seed ^ 0x5eed);
    let cfg = config(&keys, 4, 16, corrupt, dropout);
    // Sybils at random positions, up to the assumed corruption.
    let budget = (corrupt * n as f64).floor() as usize;
    let mut sybils = BTreeSet::new();
    for _ in 0..budget {
        sybils.insert(rng.next_u32() % n as u32);
    }
    let sybils: Vec<u32> = sybils.into_iter().collect();
    let mut a = Attack::new(cfg, &keys, &sybils, &Floors::default(), seed);
    // How honestly each stage is routed this run (out of 10): from a server
    // that follows the protocol to one that deviates for half the clients.
    let mut level = || [10, 10, 9, 7, 5][rng.next_u32() as usize % 5];
    let (keys_honesty, shares_honesty, views_honesty, sigs_honesty) =
        (level(), level(), level(), level());

    // Stage 2: neighbours' keys.
    let adverts: Vec<Signed> = a
        .transcript
        .iter()
        .filter(|m| m.body.stage() == Stage::AdvertiseKeys)
        .cloned()
        .collect();
    for i in a.live() {
        if rng.next_u32().is_multiple_of(40) {
            a.vanish(i);
            continue;
        }
        let mut k = a.neighbour_keys(i);
        tamper(&mut k, &adverts, keys_honesty, &mut rng);
        a.deliver(i, ServerBody::neighbour_keys(k));
    }
    a.sybils_share();
    a.sybils_collect();

    // Stage 3: shares.
    let all_shares: Vec<_> = (0..a.n()).flat_map(|i| a.shares_to(i, |_| true)).collect();
    for i in a.live() {
        if rng.next_u32().is_multiple_of(40) {
            a.vanish(i);
            continue;
        }
        let mut s = a.shares_to(i, |_| true);
        tamper(&mut s, &all_shares, shares_honesty, &mut rng);
        a.deliver(i, ServerBody::SharesForYou(s));
    }

    // Stage 4: survivor sets, equivocated at will.
    let views = survivor_views(&a, views_honesty, &mut rng);
    for i in a.live() {
        if rng.next_u32().is_multiple_of(40) {
            a.vanish(i);
            continue;
        }
        a.deliver(i, ServerBody::Survivors(views[i as usize].clone()));
    }

    // Stage 5: confirmations, with Sybils signing whatever each client was told.
    let every_confirmation: Vec<Signed> = (0..a.n())
        .flat_map(|i| a.stage5_for(i, &views[i as usize]))
        .collect();
    for i in a.live() {
        let mut sigs = a.stage5_for(i, &views[i as usize]);
        tamper(&mut sigs, &every_confirmation, sigs_honesty, &mut rng);
        a.deliver(i, ServerBody::survivor_signatures(sigs));
    }
    a
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]
    #[test]
    fn a_deviating_server_never_recovers_an_honest_input(
        seed: u64,
        n in 6usize..=48,
        corrupt in prop::sample::select(vec![0.05, 0.1]),
        dropout in prop::sample::select(vec![0.1, 0.2, 0.3]),
    ) {
        let a = run(seed, n, corrupt, dropout);
        prop_assert!(a.exposed().is_empty(), "exposed {:?}; refusals {:?}", a.exposed(), a.refusals);
        for set in a.revealable_sets() {
            prop_assert!(set.len() >= 2, "input alone: {:?}; refusals {:?}", set, a.refusals);
        }
    }
}

#[test]
fn the_randomized_server_does_deviate() {
    // Guard against a property that holds because nothing happens: across
    // seeds the adversary triggers many distinct refusals and still
    // completes some unmasking.
    let mut codes = BTreeSet::new();
    let mut revealed = 0;
    for seed in 0..40 {
        let a = run(seed, 24, 0.05, 0.2);
        codes.extend(a.refusals.values().map(|r| r.code()));
        revealed += a.revealable_sets().len();
    }
    assert!(codes.len() >= 9, "{codes:?}");
    assert!(revealed > 0);
}
