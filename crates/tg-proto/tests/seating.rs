//! Red team: a coordinator that chooses who neighbours whom (to seat the
//! identities it controls around a victim) is refused by every agent (E112).
#![allow(clippy::unwrap_used)]

use tg_proto::{RoundRef, SecureRound};
use tg_secagg::Refusal;
use tg_types::{AgentId, JobId};

fn round(participants: Vec<(AgentId, [u8; 32])>) -> SecureRound {
    SecureRound {
        participants,
        bits: 20,
        clip: 1.0,
        corrupt: 0.05,
        dropout: 0.1,
        rotation_seed: [3; 32],
        weight_scale: None,
        keep_fraction: None,
        local_noise_variance: None,
        max_clients: None,
        min_survivors: None,
        certificates: Vec::new(),
        scale: None,
        prg: tg_secagg::crypto::Prg::default(),
    }
}

type Seat = (AgentId, [u8; 32], Option<tg_proto::Certificate>);

fn people(n: u8) -> Vec<Seat> {
    (0..n)
        .map(|i| {
            let key = ed25519_dalek::SigningKey::from_bytes(&[i + 1; 32]);
            (
                AgentId::numbered(usize::from(i)),
                key.verifying_key().to_bytes(),
                None,
            )
        })
        .collect()
}

fn keys(seats: &[Seat]) -> Vec<(AgentId, [u8; 32])> {
    seats.iter().map(|(a, k, _)| (a.clone(), *k)).collect()
}

#[test]
fn only_the_canonical_seating_is_accepted() {
    let at = RoundRef {
        job: JobId::from_bytes([9; 16]),
        round: 4,
    };
    let mut seated = people(12);
    SecureRound::seat(at, &mut seated);
    assert!(round(keys(&seated)).build(at, 64).is_ok());
    // The coordinator's own order (e.g. its Sybils next to a victim).
    let mut chosen = seated.clone();
    chosen.swap(2, 7);
    let err = round(keys(&chosen)).build(at, 64).unwrap_err();
    assert_eq!(err.refusal(), Some(Refusal::NonCanonicalOrder), "{err}");
    // A repeated identity (one agent seated twice).
    let mut twice = seated.clone();
    twice[5].1 = twice[4].1;
    SecureRound::seat(at, &mut twice);
    let err = round(keys(&twice)).build(at, 64).unwrap_err();
    assert_eq!(err.refusal(), Some(Refusal::NonCanonicalOrder), "{err}");
    // The seating of one round is not the next round's.
    let next = RoundRef { round: 5, ..at };
    let mut reseated = seated.clone();
    SecureRound::seat(next, &mut reseated);
    assert_ne!(reseated, seated);
}
