//! Red team against the owner's bound on colluders (`Floors::max_colluders`):
//! a coordinator that holds certificates for some agents seats them with a
//! victim, chooses the survivors, and tries to unmask a sum in which the
//! victim's input is the only honest one.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use crate::adversary::{Attack, all_but, announce_and_reveal, config, signing_keys};
use tg_secagg::{Floors, Refusal, Threat};

#[test]
fn certified_accomplices_cannot_isolate_a_victim_when_colluders_are_bounded() {
    // A coordinator holding certificates for three agents (bought or
    // compromised robots) seats them with a victim (0) and one honest agent
    // (4), drops the honest one, and unmasks the sum of {0, 1, 2, 3}, from
    // which it subtracts its accomplices' inputs.
    let keys = signing_keys(5, 40);
    let accomplices = [1, 2, 3];
    let naive = config(&keys, 8, 16, 0.05, 0.2);
    assert_eq!(naive.colluders_sized_for(), 0);
    // Positive control: an owner who bounds nothing takes this round (its
    // thresholds assume no colluder), and the attack exposes the victim.
    let mut a = Attack::new(naive.clone(), &keys, &accomplices, &Floors::default(), 41);
    assert!(a.refusals.is_empty(), "{:?}", a.refusals);
    a.honest_share_and_mask();
    a.vanish(4);
    announce_and_reveal(&mut a, |_| vec![0, 1, 2, 3]);
    // (The dropped agent 4 masked too; three colluders hold t of its shares.)
    assert!(a.exposed().contains(&0), "{:?}", a.refusals);
    // An owner who says the coordinator may hold up to three refuses it.
    let owner = Floors {
        max_colluders: Some(3),
        ..Floors::default()
    };
    let a = Attack::new(naive, &keys, &accomplices, &owner, 42);
    assert_eq!(a.refusals.get(&0), Some(&Refusal::BelowFloor));
    // A round sized for three colluders is taken; the same attack on it
    // fails: the victim will not unmask below the survivor floor, nor with
    // fewer than t of its masking neighbours alive, and t exceeds what
    // three colluders hold.
    let keys = signing_keys(12, 43);
    let sized = config(&keys, 8, 16, 0.25, 0.1);
    assert_eq!(sized.colluders_sized_for(), 3);
    assert!(sized.check_floors(&owner).is_ok());
    let mut a = Attack::new(sized, &keys, &accomplices, &owner, 44);
    a.honest_share_and_mask();
    for h in 4..12 {
        a.vanish(h);
    }
    announce_and_reveal(&mut a, |_| vec![0, 1, 2, 3]);
    assert!(
        matches!(
            a.refusals.get(&0),
            Some(Refusal::SurvivorsBelowFloor | Refusal::MaskingNeighboursDropped)
        ),
        "{:?}",
        a.refusals
    );
    assert!(a.exposed().is_empty(), "{:?}", a.exposed());
    // Told that every honest agent survived, it unmasks only a sum of nine.
    let mut a = Attack::new(
        config(&keys, 8, 16, 0.25, 0.1),
        &keys,
        &accomplices,
        &owner,
        45,
    );
    a.honest_share_and_mask();
    let everyone: Vec<u32> = (0..12).collect();
    announce_and_reveal(&mut a, |_| everyone.clone());
    assert!(a.refusals.is_empty(), "{:?}", a.refusals);
    assert!(a.exposed().is_empty(), "{:?}", a.exposed());
    // A large sparse round whose thresholds assume random seating: sized
    // for 30 colluders of 300, it holds only while they are spread out, and
    // a coordinator that picks the sample and the job id can gather them
    // around one client. An owner who bounds colluders at 30 refuses it.
    let many = signing_keys(300, 46);
    let sparse = config(&many, 8, 16, 0.1, 0.1);
    assert!(sparse.graph.degree < 299);
    let e = sparse
        .check_floors(&Floors {
            max_colluders: Some(30),
            ..Floors::default()
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("seats"), "{e}");
    // Colluders seated around a victim in an accepted sparse round: the
    // coordinator drops every honest neighbour of the victim and keeps the
    // rest, so that the victim's only surviving neighbours are its own. The
    // victim refuses: fewer than t of the neighbours it masked with survive.
    let keys = signing_keys(60, 47);
    let cfg = config(&keys, 8, 16, 0.1, 0.1);
    let k = cfg.graph.degree;
    assert!(k < 59, "want a sparse graph");
    let near: Vec<u32> = cfg
        .graph
        .neighbours(0)
        .into_iter()
        .map(|j| j as u32)
        .collect();
    let seated: Vec<u32> = near.iter().copied().take(6).collect();
    let owner6 = Floors {
        max_colluders: Some(6),
        ..Floors::default()
    };
    assert!(cfg.check_floors(&owner6).is_ok(), "{:?}", cfg.graph);
    let mut a = Attack::new(cfg, &keys, &seated, &owner6, 48);
    a.honest_share_and_mask();
    let cut: BTreeSet<u32> = near
        .iter()
        .copied()
        .filter(|j| !seated.contains(j))
        .collect();
    for &h in &cut {
        a.vanish(h);
    }
    let told = all_but(60, &cut);
    announce_and_reveal(&mut a, |_| told.clone());
    assert_eq!(a.refusals.get(&0), Some(&Refusal::MaskingNeighboursDropped));
    assert!(a.exposed().is_empty(), "{:?}", a.exposed());
    // With malicious thresholds t > (k + c)/2 ≥ c, so any floor of at least
    // t leaves two honest inputs beside c colluders; the semi-honest
    // setting (t just above c) is where that check bites.
    let keys = signing_keys(40, 49);
    let semi = config(&keys, 8, 16, 0.05, 0.1)
        .with_threat(Threat::SemiHonest)
        .unwrap()
        .with_survivor_fraction(0.0)
        .unwrap();
    let c = semi.colluders_sized_for();
    assert!(semi.min_survivors < c + 2, "{} {c}", semi.min_survivors);
    let e = semi
        .check_floors(&Floors {
            min_survivor_fraction: 0.0,
            max_colluders: Some(c),
            ..Floors::allowing_semi_honest()
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("two honest"), "{e}");
}
