//! Security properties: masked vectors look uniform, forged and replayed
//! messages are refused, and a server that lies about the survivors is caught.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use tg_secagg::crypto::Context;
use tg_secagg::local::run_round;
use tg_secagg::messages::{AdvertiseKeys, ClientBody, ServerBody, Signed, Stage};
use tg_secagg::packing::unpack;
use tg_secagg::{Client, Floors, Refusal, RoundConfig, SecAggError, Server};

fn ctx(round: u32) -> Context {
    Context::new([3; 16], round)
}

fn keys(n: usize, seed: u64) -> Vec<SigningKey> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut b);
            SigningKey::from_bytes(&b)
        })
        .collect()
}

fn config(keys: &[SigningKey], dim: usize, bits: u32) -> Arc<RoundConfig> {
    RoundConfig::new(
        ctx(1),
        keys.iter().map(SigningKey::verifying_key).collect(),
        dim,
        bits,
        0.05,
        0.2,
    )
    .unwrap()
}

#[test]
fn a_masked_vector_is_uniform_over_z_2_b() {
    // All-zero inputs: whatever the server sees of one client is pure mask.
    let (n, dim, bits) = (4, 64 * 1024, 8u32);
    let ks = keys(n, 1);
    let cfg = config(&ks, dim, bits);
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let (_, report) = run_round(
        &cfg,
        &ks,
        vec![vec![0; dim]; n],
        &[None; 4],
        &Floors::default(),
        &mut rng,
        1,
    )
    .unwrap();
    let masked = report
        .transcript
        .iter()
        .find_map(|m| match &m.body {
            ClientBody::MaskedInput(x) if m.from == 0 => Some(x.packed.clone()),
            _ => None,
        })
        .unwrap();
    let lanes = unpack(&masked, dim, bits).unwrap();
    let mut counts = [0f64; 256];
    lanes.iter().for_each(|&v| counts[v as usize] += 1.0);
    let e = dim as f64 / 256.0;
    let chi2: f64 = counts.iter().map(|c| (c - e).powi(2) / e).sum();
    // 255 dof: mean 255, sd ≈ 22.6; 6 sd.
    assert!(chi2 < 255.0 + 6.0 * 22.6, "χ² = {chi2}");
}

#[test]
fn forged_and_replayed_messages_are_rejected() {
    let ks = keys(5, 3);
    let cfg = config(&ks, 8, 16);
    let mut server = Server::new(cfg.clone());
    let adv = |c: &Context, from: u32, key: &SigningKey| {
        Signed::sign(
            c,
            from,
            ClientBody::AdvertiseKeys(AdvertiseKeys {
                share_key: [9; 32],
                mask_key: [9; 32],
            }),
            key,
        )
        .unwrap()
    };
    let rejected = |r: Result<(), SecAggError>| {
        matches!(
            r,
            Err(SecAggError::Rejected(_))
                | Err(SecAggError::Refused {
                    code: Refusal::BadSignature,
                    ..
                })
        )
    };
    // Bad signature.
    let c1 = cfg.ctx;
    let mut forged = adv(&c1, 0, &ks[0]);
    forged.signature[5] ^= 1;
    assert!(rejected(server.receive(forged)));
    // Signed by someone else than the claimed sender.
    assert!(rejected(server.receive(adv(&c1, 1, &ks[0]))));
    // Replayed from another round, or another job, or signed for another
    // configuration of this round.
    assert!(rejected(server.receive(adv(&ctx(2), 0, &ks[0]))));
    assert!(rejected(server.receive(adv(
        &Context::new([4; 16], 1),
        0,
        &ks[0]
    ))));
    assert!(rejected(server.receive(adv(&ctx(1), 0, &ks[0]))));
    // A low-order key (every agreement with it is a known value, and it
    // would abort each neighbour's agreement) is refused at stage 1.
    let low = Signed::sign(
        &c1,
        3,
        ClientBody::AdvertiseKeys(AdvertiseKeys {
            share_key: [9; 32],
            mask_key: [0; 32],
        }),
        &ks[3],
    )
    .unwrap();
    assert!(rejected(server.receive(low)));
    // Unknown sender.
    assert!(server.receive(adv(&c1, 9, &ks[0])).is_err());
    // The genuine message is accepted once; a duplicate is refused.
    assert!(server.receive(adv(&c1, 0, &ks[0])).is_ok());
    assert!(rejected(server.receive(adv(&c1, 0, &ks[0]))));
    // Wrong stage: a masked input while keys are being collected.
    let commitment = Signed::sign(
        &c1,
        2,
        ClientBody::MaskCommitment(tg_secagg::messages::MaskCommitment {
            masked_with: vec![],
        }),
        &ks[2],
    )
    .unwrap();
    let early = Signed::sign(
        &c1,
        2,
        ClientBody::MaskedInput(tg_secagg::messages::MaskedInput {
            packed: vec![0; 16],
            commitment: Box::new(
                tg_secagg::messages::SignedCommitment::from_signed(commitment).unwrap(),
            ),
        }),
        &ks[2],
    )
    .unwrap();
    assert!(rejected(server.receive(early)));
}

#[test]
fn an_inconsistent_survivor_set_makes_honest_clients_abort() {
    let n = 5;
    let ks = keys(n, 7);
    let cfg = config(&ks, 4, 16);
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let mut server = Server::new(cfg.clone());
    let mut clients = Vec::new();
    for (i, k) in ks.iter().enumerate() {
        let (c, m) = Client::new(
            cfg.clone(),
            i as u32,
            k.clone(),
            vec![i as u32; 4],
            &Floors::default(),
            &mut rng,
        )
        .unwrap();
        server.receive(m).unwrap();
        clients.push(c);
    }
    // Run stages 2 and 3 honestly.
    for _ in 0..2 {
        let routed = server.close_stage().unwrap();
        let mut replies = Vec::new();
        for (i, body) in routed {
            let c = &mut clients[i as usize];
            replies.push(match body {
                ServerBody::NeighbourKeys(k) => c.on_neighbour_keys(&k, &mut rng).unwrap(),
                ServerBody::SharesForYou(s) => c.on_shares(&s).unwrap(),
                other => panic!("{other:?}"),
            });
        }
        for r in replies {
            server.receive(r).unwrap();
        }
    }
    assert_eq!(server.stage(), Stage::MaskedInput);
    // A lying server: client 0 hears everyone survived, client 1 hears 4 dropped.
    let all: Vec<u32> = (0..5).collect();
    let fewer: Vec<u32> = (0..4).collect();
    clients[0].on_survivors(&all).unwrap();
    let sig1 = clients[1].on_survivors(&fewer).unwrap();
    let sig2 = clients[2].on_survivors(&all).unwrap();
    let sig3 = clients[3].on_survivors(&all).unwrap();
    let err = clients[0]
        .on_survivor_signatures(&tg_secagg::messages::Confirmations::from_signed([
            sig1, sig2, sig3,
        ]))
        .unwrap_err();
    assert_eq!(err.refusal(), Some(Refusal::Equivocation), "{err}");
}

#[test]
fn out_of_order_calls_are_errors_not_panics() {
    let ks = keys(3, 9);
    let cfg = config(&ks, 4, 8);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (mut c, _) = Client::new(
        cfg.clone(),
        0,
        ks[0].clone(),
        vec![0; 4],
        &Floors::default(),
        &mut rng,
    )
    .unwrap();
    assert!(c.on_shares(&[]).is_err());
    assert!(c.on_survivors(&[0, 1, 2]).is_err());
    assert!(
        Client::new(
            cfg.clone(),
            0,
            ks[0].clone(),
            vec![0; 3],
            &Floors::default(),
            &mut rng
        )
        .is_err()
    );
    assert!(Server::new(cfg).finish(1).is_err());
}
