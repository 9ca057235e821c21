//! The owner's operating envelope on the wire: the most bytes one update may
//! take, and adaptive sparsity to fit it.
//!
//! Design decision: the budget is checked against the reply frame that would
//! leave (its real encoded size), not an estimate, and top-k's residual is
//! restored before every try, so error feedback carries exactly what the
//! update that is sent leaves out.

use tg_compress::Compressor;
use tg_proto::{ToCoordinator, TrainReply};
use tg_types::spec::Compression;

/// Tries at most this many top-k fractions before giving up.
const TRIES: usize = 8;

/// What sealing adds to a reply on the wire (binding, nonce, sender, a
/// signature, length prefixes) and the transport's chunk framing, at most.
const SEAL_OVERHEAD: u64 = 512;

/// Why a round's update could never fit `budget`, known before training
/// (so nothing is charged for it): a dense round that may not be
/// sparsified, or a secure round whose masked vector alone is over it.
pub(crate) fn cannot_fit(req: &tg_proto::TrainRequest, budget: Option<u64>) -> Option<String> {
    let budget = budget?;
    let d = req.global.num_values() as u64;
    let (least, what) = match &req.secure {
        Some(s) => (
            (d * u64::from(s.bits)).div_ceil(8),
            "this secure round's masked vector",
        ),
        None if req.config.adaptive_sparsity => return None,
        None => match req.config.compress {
            Compression::None => (4 * d, "this round's dense update"),
            // Compressed forms are measured after training.
            _ => return None,
        },
    };
    (least + SEAL_OVERHEAD > budget).then(|| {
        format!(
            "{what} takes at least {least} bytes; this machine's envelope allows {budget} now (max_update_bytes, or its uplink)"
        )
    })
}

/// The reply's frame size in bytes.
fn frame_len(reply: &TrainReply) -> Result<u64, String> {
    tg_proto::encode(&ToCoordinator::Trained(reply.clone()))
        .map(|f| f.len() as u64)
        .map_err(|e| e.to_string())
}

/// `reply` (with its dense update) encoded as the round asks, or, when that
/// is over `budget` bytes and the round allows it, top-k sparsified to fit.
/// Returns the reply that leaves and its frame size; an error when it cannot
/// fit (nothing leaves).
pub(crate) fn fit(
    compressor: &mut Compressor,
    mut reply: TrainReply,
    asked: Compression,
    adaptive: bool,
    budget: Option<u64>,
) -> Result<(TrainReply, u64), String> {
    let dense = std::mem::take(&mut reply.update);
    let saved = compressor.clone();
    let encode = |compressor: &mut Compressor, reply: &mut TrainReply, c: Compression| {
        reply.compressed = compressor.encode(&dense, c);
        reply.update = if reply.compressed.is_some() {
            tg_types::Parameters::default()
        } else {
            dense.clone()
        };
        frame_len(reply)
    };
    let Some(budget) = budget else {
        // No envelope: as asked, unmeasured.
        reply.compressed = compressor.encode(&dense, asked);
        reply.update = if reply.compressed.is_some() {
            tg_types::Parameters::default()
        } else {
            dense
        };
        return Ok((reply, 0));
    };
    // What leaves is the reply sealed and framed.
    let budget = budget.saturating_sub(SEAL_OVERHEAD);
    let len = encode(compressor, &mut reply, asked)?;
    if len <= budget {
        return Ok((reply, len));
    }
    if !adaptive {
        *compressor = saved;
        return Err(format!(
            "the update takes {len} bytes on the wire; this machine's envelope allows {budget} now \
             (max_update_bytes, or its uplink), and this round's strategy cannot take a sparsified update"
        ));
    }
    let d = dense.num_values().max(1) as f64;
    // ~4 bytes of value and 1–2 of index gap per coordinate sent; a few
    // hundred bytes of framing.
    let mut fraction = ((budget.saturating_sub(256)) as f64 / (6.0 * d)).min(1.0);
    if let Compression::TopK(f) = asked {
        fraction = fraction.min(f);
    }
    for _ in 0..TRIES {
        if fraction * d < 1.0 {
            break;
        }
        *compressor = saved.clone();
        let len = encode(compressor, &mut reply, Compression::TopK(fraction))?;
        if len <= budget {
            tracing::info!(
                bytes = len,
                budget,
                fraction,
                "update sparsified to fit the owner's envelope"
            );
            return Ok((reply, len));
        }
        fraction *= 0.97 * budget as f64 / len as f64;
    }
    *compressor = saved;
    Err(format!(
        "the update does not fit this machine's envelope of {budget} bytes even sparsified \
         (the model has {} values); raise max_update_bytes or train fewer parameters",
        dense.num_values()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tg_types::{AgentId, JobId, NamedTensor, Parameters};

    fn reply(d: usize) -> TrainReply {
        TrainReply {
            at: tg_proto::RoundRef {
                job: JobId::from_bytes([1; 16]),
                round: 1,
            },
            agent: AgentId::numbered(1),
            update: Parameters::new(vec![NamedTensor {
                name: "w".into(),
                shape: vec![d],
                data: (0..d).map(|i| (i as f32 * 0.37).sin()).collect(),
            }])
            .unwrap(),
            num_examples: 5,
            train_loss: Some(0.1),
            steps: 1,
            control_delta: None,
            epsilon: None,
            compressed: None,
        }
    }

    #[test]
    fn an_update_over_the_envelope_is_sparsified_to_fit_and_its_residual_is_kept() {
        let mut c = Compressor::default();
        let (dense, _) = fit(&mut c, reply(10_000), Compression::None, true, None).unwrap();
        assert!(dense.compressed.is_none() && dense.update.num_values() == 10_000);
        for budget in [30_000u64, 5_000, 1_200] {
            let mut c = Compressor::default();
            let (r, len) =
                fit(&mut c, reply(10_000), Compression::None, true, Some(budget)).unwrap();
            // Sealed and framed, it fits.
            assert!(len + SEAL_OVERHEAD <= budget, "{len} > {budget}");
            assert!(r.compressed.is_some() && r.update.num_values() == 0);
            // Not far under the budget either: the link is used.
            assert!(
                (len + SEAL_OVERHEAD) * 2 > budget,
                "{len} is far under {budget}"
            );
            // What was not sent is carried to the next round.
            assert_eq!(c.residual().len(), 10_000);
        }
    }

    #[test]
    fn what_cannot_fit_or_may_not_be_sparsified_is_refused_and_leaves_no_residual() {
        let mut c = Compressor::default();
        let e = fit(&mut c, reply(10_000), Compression::None, false, Some(5_000)).unwrap_err();
        assert!(e.contains("cannot take a sparsified update"), "{e}");
        let e = fit(&mut c, reply(10_000), Compression::None, true, Some(600)).unwrap_err();
        assert!(e.contains("does not fit"), "{e}");
        assert!(c.residual().is_empty());
        // Within the budget: as asked, untouched.
        let (r, _) = fit(&mut c, reply(100), Compression::None, true, Some(5_000)).unwrap();
        assert!(r.compressed.is_none());
    }

    #[test]
    fn what_could_never_fit_is_known_before_training() {
        let req = |d: usize, adaptive: bool| tg_proto::TrainRequest {
            at: reply(1).at,
            global: reply(d).update,
            config: tg_types::spec::TrainConfig {
                local_epochs: 1,
                batch_size: 1,
                learning_rate: 0.1,
                optimizer: tg_types::spec::OptimizerSpec::Sgd,
                dp_sgd: None,
                compress: Compression::None,
                adaptive_sparsity: adaptive,
                deadline_ms: None,
            },
            objective: tg_types::spec::LocalObjective::Plain,
            secure: None,
        };
        assert!(cannot_fit(&req(10_000, false), Some(20_000)).is_some());
        assert!(cannot_fit(&req(10_000, true), Some(20_000)).is_none());
        assert!(cannot_fit(&req(10_000, false), Some(50_000)).is_none());
        assert!(cannot_fit(&req(10_000, false), None).is_none());
        // A secure round's bound counts every neighbour's shares.
        let alone = crate::secure::secure_upload_bound(10_000, 20, 0);
        assert!(alone >= 25_000);
        assert!(crate::secure::secure_upload_bound(10_000, 20, 30) >= alone + 30 * 256);
    }

    #[test]
    fn a_round_that_asked_for_top_k_is_never_sent_denser() {
        let mut c = Compressor::default();
        let (r, len) = fit(
            &mut c,
            reply(10_000),
            Compression::TopK(0.01),
            true,
            Some(60_000),
        )
        .unwrap();
        assert!(len < 2_000, "{len}");
        assert!(r.compressed.is_some());
    }
}
