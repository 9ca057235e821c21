//! The checks an honest client applies to what the server tells it.
//!
//! Design decision: one function per rule, shared by the client judging a
//! survivor set for itself and for each neighbour whose seed it would
//! reveal, so the rule cannot drift between the two uses.

use crate::round::RoundConfig;
use crate::{Refusal, SecAggError};

/// An honest client's refusal with `code`.
pub(crate) fn refused<T>(code: Refusal, detail: impl Into<String>) -> Result<T, SecAggError> {
    Err(SecAggError::refused(code, detail))
}

/// The dropout rule, for `owner` who masked with `masked_with`: the survivor
/// set lists no neighbour of the owner that it did not mask with (E104), and
/// keeps at least `t` of those it did (E105). Checked by the owner before it
/// signs the set, and by each neighbour before it reveals a share of the
/// owner's self-mask seed.
pub(crate) fn strips_no_mask(
    cfg: &RoundConfig,
    owner: u32,
    masked_with: &[u32],
    survivors: &[u32],
) -> Result<(), SecAggError> {
    let mut kept = 0;
    for &s in survivors {
        if !cfg.are_neighbours(owner, s) {
            continue;
        }
        if masked_with.binary_search(&s).is_err() {
            return refused(
                Refusal::UnmaskedSurvivor,
                format!(
                    "neighbour {s} of client {owner} survived, but {owner} did not mask with it"
                ),
            );
        }
        kept += 1;
    }
    let t = cfg.graph.threshold;
    if kept < t {
        return refused(
            Refusal::MaskingNeighboursDropped,
            format!(
                "{kept} of the {} neighbours client {owner} masked with survive, the threshold is {t}",
                masked_with.len()
            ),
        );
    }
    Ok(())
}
