//! Distributed DP: Skellam noise shares under secure aggregation,
//! calibrated to the budget.
//!
//! The central noise of every unmasked sum is chosen so that it meets the
//! target ε after every planned round, by the Skellam accountant. Every
//! round uses exactly the release the ledger charges: each client adds its
//! share of that noise for a floor of survivors, on the calibrated (pinned)
//! scale, and honest clients refuse to unmask with fewer survivors, so every
//! released sum carries at least the accounted noise. The encoding's scale
//! depends on the noise (room must be left for it in B bits), so calibration
//! evaluates the whole chain — noise → scale → central variance → ε — and
//! bisects on the noise.

use tg_privacy::{AccountantKind, ClipNorm, Delta, Epsilon, SamplingRate};
use tg_types::privacy::{BudgetAgainst, DistributedDpSpec, DpMode, PrivacySpec};
use tg_types::spec::JobSpec;

use crate::{Facts, JobError, Result, from_privacy, invalid, problem};

/// Default fraction of the expected sample that must survive.
const DEFAULT_SURVIVING_FRACTION: f64 = 0.8;

pub(crate) struct Inputs<'a> {
    pub(crate) spec: &'a JobSpec,
    pub(crate) facts: &'a Facts,
    pub(crate) clip: ClipNorm,
    pub(crate) q: SamplingRate,
    pub(crate) population: u32,
    /// The survivor floor as written (the job's `min_clients`).
    pub(crate) min_survivors: Option<u32>,
    pub(crate) target: Epsilon,
    pub(crate) delta: Delta,
    pub(crate) budget_against: BudgetAgainst,
}

/// The calibrated spec: the least noise whose ε after every round meets
/// the target.
pub(crate) fn calibrate(i: &Inputs<'_>) -> Result<PrivacySpec> {
    let (bits, sparsity) = i
        .spec
        .secure_aggregation
        .map(|s| (s.bits, s.keep_fraction))
        .ok_or_else(|| {
            invalid(
                "distributed DP without secure aggregation",
                "the noise is in the masked sum",
                "add a [secure_aggregation] table (--secure-aggregation)",
            )
        })?;
    let q = i.q;
    let n = f64::from(i.population);
    let expected = q.get() * n;
    // Sized for the sample with overwhelming probability (6 sd of the binomial).
    let max_clients = ((expected + 6.0 * (expected * (1.0 - q.get())).sqrt()).ceil() as u32 + 1)
        .min(i.population);
    let min_survivors = i
        .min_survivors
        .unwrap_or(((DEFAULT_SURVIVING_FRACTION * expected).floor() as u32).max(1));
    if min_survivors > max_clients {
        return Err(invalid(
            format!("min_clients = {min_survivors} with distributed DP"),
            format!("at most {max_clients} clients are expected in a round"),
            "lower min_clients, or raise the fraction or the population",
        )
        .at("min_clients"));
    }
    let params = i.facts.num_parameters.max(1);
    let sent = sparsity.map_or(params, |f| {
        ((f * params as f64).ceil() as usize).clamp(1, params)
    });
    let dim = sent + 1; // the weight lane
    let rounds = u64::from(i.spec.rounds);

    let build = |std: f64| -> Option<PrivacySpec> {
        let enc =
            tg_compress::Encoding::new(dim, bits, i.clip.get(), max_clients as usize, std, [0; 32])
                .ok()?;
        Some(PrivacySpec {
            mode: DpMode::Distributed(DistributedDpSpec {
                clip: i.clip,
                client_sampling_rate: q,
                population: i.population,
                min_survivors,
                // The encoding was sized for `std` per client at the floor.
                central_variance: std * std * f64::from(min_survivors),
                scale: enc.scale,
                dimension: enc.padded as u64,
                max_clients,
            }),
            target_epsilon: i.target,
            delta: i.delta,
            accountant: AccountantKind::Skellam,
            budget_against: i.budget_against,
        })
    };
    let epsilon = |std: f64| -> Result<Option<f64>> {
        match build(std) {
            Some(p) => p
                .epsilon_after(rounds)
                .map(Some)
                .map_err(|e| from_privacy("privacy", e)),
            None => Ok(None),
        }
    };
    // The largest noise the bits can carry: double until the encoding refuses.
    let mut top = 1.0;
    while build(top * 2.0).is_some() && top < 1e12 {
        top *= 2.0;
    }
    // …then pin the boundary between `top` (fits) and 2·top (does not).
    let mut over = top * 2.0;
    for _ in 0..60 {
        let mid = 0.5 * (top + over);
        if build(mid).is_some() {
            top = mid;
        } else {
            over = mid;
        }
    }
    // ε is not monotone in the noise: more noise leaves less room, a smaller
    // scale, and a rounding error (√D/s) that eventually dominates the
    // sensitivity. Find the least-ε noise (golden section on log σ; the
    // curve is unimodal), then bisect on its decreasing side.
    let eps_or_inf = |std: f64| -> Result<f64> { Ok(epsilon(std)?.unwrap_or(f64::INFINITY)) };
    let (mut a_lo, mut a_hi) = (1e-3f64.ln(), top.ln());
    let g = 0.5 * (5f64.sqrt() - 1.0);
    for _ in 0..80 {
        let c = a_hi - g * (a_hi - a_lo);
        let d = a_lo + g * (a_hi - a_lo);
        if eps_or_inf(c.exp())? < eps_or_inf(d.exp())? {
            a_hi = d;
        } else {
            a_lo = c;
        }
    }
    let mut hi = (0.5 * (a_lo + a_hi)).exp();
    let best = eps_or_inf(hi)?;
    if best > i.target.get() {
        return Err(JobError::PrivacyUnreachable(problem(
            format!(
                "distributed DP cannot reach ε = {} in {bits}-bit lanes",
                i.target.get()
            ),
            format!(
                "the most noise {bits} bits can hold for {max_clients} clients still spends ε = {best:.4}"
            ),
            "use more bits, a larger population or fraction, fewer rounds, or a larger target ε",
        ))
        .at("privacy.target_epsilon"));
    }
    let mut lo = 1e-6;
    for _ in 0..100 {
        let mid = (lo * hi).sqrt();
        match epsilon(mid)? {
            Some(e) if e <= i.target.get() => hi = mid,
            _ => lo = mid,
        }
        if hi / lo < 1.0 + 1e-9 {
            break;
        }
    }
    build(hi).ok_or_else(|| {
        invalid(
            "distributed DP calibration lost its bracket",
            "the encoding refused a noise level it accepted before",
            "report this with the job description",
        )
    })
}
