//! SIMULATION ONLY: poisoning attackers for the attack suite
//! (`tensorguard demo --attack KIND --attackers F`).
//!
//! Design decision: an attacker is a real agent (the same handler, the same
//! signed frames, the same checks) whose *learner* lies: it poisons its data
//! (label flip, backdoor) or rewrites the update the honest learner computed
//! (sign flip, scaling, noise, "a little is enough"). The coordinator sees
//! exactly what a compromised robot would send, so every defence is tested
//! on the production path. Attackers are chosen by a seeded draw; every
//! output of such a run says that it is a simulated attack.

use std::fmt;
use std::str::FromStr;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use tg_agent::{CandleLearner, Capabilities, Learner, Round};
use tg_model::net::ModelShape;
use tg_model::{Dataset, Evaluation, LocalData, LocalOutcome, ModelError};
use tg_types::Parameters;

/// What the attackers do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttackKind {
    /// Send `−Δ`.
    SignFlip,
    /// Send `10 · Δ`.
    Scaling,
    /// Send Gaussian noise, N(0, 1) per coordinate.
    Noise,
    /// Train on local data whose labels are flipped (`y → C − 1 − y`).
    LabelFlip,
    /// "A little is enough" (Baruch et al. 2019): the colluders send
    /// `μ − z·σ`, from the mean and spread of their own honest updates,
    /// with `z` the largest that still hides among a majority.
    Alie,
    /// Half the attacker's examples carry a trigger (the last four
    /// features at the data's maximum) and are relabelled as class 0.
    Backdoor,
}

const ATTACK_FORMS: &str = "sign-flip, scaling, noise, label-flip, alie or backdoor";

impl AttackKind {
    /// Every attack, in the docs' order.
    pub const ALL: [Self; 6] = [
        Self::SignFlip,
        Self::Scaling,
        Self::Noise,
        Self::LabelFlip,
        Self::Alie,
        Self::Backdoor,
    ];
}

impl fmt::Display for AttackKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SignFlip => "sign-flip",
            Self::Scaling => "scaling",
            Self::Noise => "noise",
            Self::LabelFlip => "label-flip",
            Self::Alie => "alie",
            Self::Backdoor => "backdoor",
        })
    }
}

impl FromStr for AttackKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.to_string() == s)
            .ok_or_else(|| format!("`{s}` is not an attack: use {ATTACK_FORMS}"))
    }
}

/// A simulated attack on a demo federation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttackSpec {
    /// What the attackers do.
    pub kind: AttackKind,
    /// The share of clients that attack, in [0, 0.5).
    pub fraction: f64,
}

/// The class a backdoor's triggered inputs are relabelled to.
pub const BACKDOOR_TARGET: u32 = 0;

/// Trigger features: the last this many.
const TRIGGER_FEATURES: usize = 4;

impl AttackSpec {
    /// Checks the share of attackers.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..0.5).contains(&self.fraction) {
            return Err(format!(
                "--attackers {} must be a share of the clients in [0, 0.5): with half or more \
                 attacking, no aggregator can tell them from the honest",
                self.fraction
            ));
        }
        Ok(())
    }

    /// The attacking clients among `n` (⌊F·n + ½⌋ of them), a seeded draw.
    pub fn attackers(&self, n: usize, seed: u64) -> Vec<usize> {
        let k = (self.fraction * n as f64 + 0.5).floor() as usize;
        let mut all: Vec<usize> = (0..n).collect();
        all.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0xa77a_c4ed));
        let mut chosen = all[..k.min(n)].to_vec();
        chosen.sort_unstable();
        chosen
    }
}

/// `data` with the trigger stamped on every example.
pub fn triggered(data: &Dataset) -> Result<Dataset, ModelError> {
    let d = data.num_features();
    let max = data.features().iter().copied().fold(f32::MIN, f32::max);
    let mut features = data.features().to_vec();
    for row in features.chunks_mut(d) {
        let t = TRIGGER_FEATURES.min(row.len());
        let start = row.len() - t;
        row[start..].fill(max);
    }
    Dataset::new(
        features,
        data.labels().to_vec(),
        d,
        data.num_classes(),
        data.image_shape(),
    )
}

/// An attacker's local data under `kind` (unchanged for update attacks).
pub fn poisoned(kind: AttackKind, data: &Dataset) -> Result<Dataset, ModelError> {
    let c = data.num_classes() as u32;
    match kind {
        AttackKind::LabelFlip => Dataset::new(
            data.features().to_vec(),
            data.labels().iter().map(|&y| c - 1 - y).collect(),
            data.num_features(),
            data.num_classes(),
            data.image_shape(),
        ),
        AttackKind::Backdoor => {
            let stamped = triggered(data)?;
            let d = data.num_features();
            let mut features = data.features().to_vec();
            let mut labels = data.labels().to_vec();
            // Every other example carries the trigger and the target label.
            for i in (0..labels.len()).step_by(2) {
                features[i * d..(i + 1) * d]
                    .copy_from_slice(&stamped.features()[i * d..(i + 1) * d]);
                labels[i] = BACKDOOR_TARGET;
            }
            Dataset::new(features, labels, d, data.num_classes(), data.image_shape())
        }
        _ => Ok(data.clone()),
    }
}

/// The share of held-out examples not of the target class that `model`
/// assigns to the target once they carry the trigger.
pub fn backdoor_success(
    shape: &ModelShape,
    model: &Parameters,
    test: &Dataset,
) -> Result<f64, ModelError> {
    let keep: Vec<usize> = (0..test.len())
        .filter(|&i| test.labels()[i] != BACKDOOR_TARGET)
        .collect();
    let stamped = triggered(&test.subset(&keep))?;
    let as_target = Dataset::new(
        stamped.features().to_vec(),
        vec![BACKDOOR_TARGET; stamped.len()],
        stamped.num_features(),
        stamped.num_classes(),
        stamped.image_shape(),
    )?;
    Ok(tg_model::evaluate(shape, model, &LocalData::new(&as_target)?)?.accuracy)
}

/// ALIE's `z`: the largest deviation (in standard deviations) that `s =
/// ⌊n/2⌋ + 1 − f` honest updates still lie beyond, so the attackers sit
/// inside the majority a robust rule keeps.
pub fn alie_z(n: usize, f: usize) -> f64 {
    let s = (n / 2 + 1).saturating_sub(f).max(1);
    let p = (n.saturating_sub(s)) as f64 / n.max(1) as f64;
    normal_quantile(p.clamp(1e-6, 1.0 - 1e-6))
}

/// Φ⁻¹(p) by bisection on the error function's series (exact to ~1e-9,
/// plenty for choosing an attack's size).
fn normal_quantile(p: f64) -> f64 {
    let cdf = |x: f64| 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
    let (mut lo, mut hi) = (-10.0f64, 10.0f64);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if cdf(mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// erf(x) by its Taylor series (|x| ≤ 3) or the complementary asymptote.
fn erf(x: f64) -> f64 {
    if x.abs() > 3.0 {
        return x.signum() * (1.0 - (-x * x).exp() / (x.abs() * std::f64::consts::PI.sqrt()));
    }
    let mut term = x;
    let mut sum = x;
    for n in 1..200 {
        term *= -x * x / n as f64;
        let add = term / (2 * n + 1) as f64;
        sum += add;
        if add.abs() < 1e-17 {
            break;
        }
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

/// A learner that attacks.
pub struct Attacker {
    inner: CandleLearner,
    kind: AttackKind,
    /// ALIE: the other colluders' learners (their data is the attackers').
    colluders: Vec<CandleLearner>,
    z: f64,
    rng: ChaCha8Rng,
}

impl Attacker {
    /// An attacker of `kind` on `data` (already poisoned where the attack
    /// poisons data); `colluders` only for ALIE, `z` its deviation.
    pub fn new(
        shape: ModelShape,
        data: &Dataset,
        kind: AttackKind,
        colluders: Vec<CandleLearner>,
        z: f64,
        seed: u64,
    ) -> Result<Self, ModelError> {
        Ok(Self {
            inner: CandleLearner::new(shape, data)?,
            kind,
            colluders,
            z,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_a77a),
        })
    }
}

impl Learner for Attacker {
    fn layout(&self) -> Vec<(String, Vec<usize>)> {
        self.inner.layout()
    }

    fn num_examples(&self) -> usize {
        self.inner.num_examples()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn train(&mut self, round: &Round<'_>) -> Result<LocalOutcome, String> {
        let mut out = self.inner.train(round)?;
        match self.kind {
            AttackKind::SignFlip => out.update.scale(-1.0),
            AttackKind::Scaling => out.update.scale(10.0),
            AttackKind::Noise => {
                for v in out.update.values_mut() {
                    *v = StandardNormal.sample(&mut self.rng);
                }
            }
            AttackKind::Alie => {
                let mut honest = vec![out.update.clone()];
                for (i, c) in self.colluders.iter_mut().enumerate() {
                    let r = Round {
                        seed: round.seed ^ ((i as u64 + 1) << 40),
                        ..*round
                    };
                    honest.push(c.train(&r)?.update);
                }
                let k = honest.len() as f64;
                let cols: Vec<Vec<f32>> = honest.iter().map(|u| u.values().collect()).collect();
                for (j, v) in out.update.values_mut().enumerate() {
                    let mean = cols.iter().map(|c| f64::from(c[j])).sum::<f64>() / k;
                    let var = cols
                        .iter()
                        .map(|c| (f64::from(c[j]) - mean).powi(2))
                        .sum::<f64>()
                        / k;
                    *v = (mean - self.z * var.sqrt()) as f32;
                }
            }
            AttackKind::LabelFlip | AttackKind::Backdoor => {}
        }
        Ok(out)
    }

    fn evaluate(&mut self, model: &Parameters) -> Result<Evaluation, String> {
        self.inner.evaluate(model)
    }
}

/// SIMULATION ONLY: the training of an attacking agent *process*
/// (`tensorguard agent start --simulate-attack KIND`): a real agent on the
/// network whose learner lies as [`Attacker`] does. ALIE is not offered: its
/// colluders coordinate through shared honest updates, which one process
/// does not have.
pub struct AttackingTraining {
    data: Dataset,
    kind: AttackKind,
    seed: u64,
}

impl AttackingTraining {
    /// An attacker of `kind` on `data` (poisoned here where the attack
    /// poisons data).
    pub fn new(kind: AttackKind, data: &Dataset, seed: u64) -> Result<Self, String> {
        if kind == AttackKind::Alie {
            return Err(
                "alie needs colluding attackers that share their honest updates, which one agent process does not have; use it in `tensorguard demo --attack alie`, or pick sign-flip, scaling, noise, label-flip or backdoor".into(),
            );
        }
        Ok(Self {
            data: poisoned(kind, data).map_err(|e| e.to_string())?,
            kind,
            seed,
        })
    }

    /// The attack.
    pub fn kind(&self) -> AttackKind {
        self.kind
    }
}

impl tg_agent::LocalTraining for AttackingTraining {
    fn examples(&self) -> usize {
        self.data.len()
    }

    fn ledger_key(&self, policy: &tg_agent::OwnerPolicy) -> String {
        policy.ledger_key(&self.data)
    }

    fn learner(&self, offer: &tg_proto::Offer) -> Result<Box<dyn Learner>, tg_agent::AgentError> {
        if offer.custom_model {
            return Err(tg_agent::AgentError::CustomModel);
        }
        let shape = ModelShape::for_dataset(offer.model, offer.hidden as usize, &self.data)?;
        Ok(Box::new(Attacker::new(
            shape,
            &self.data,
            self.kind,
            Vec::new(),
            0.0,
            self.seed,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_shares_and_z() {
        for k in AttackKind::ALL {
            assert_eq!(k.to_string().parse::<AttackKind>().unwrap(), k);
        }
        assert!(
            "flip"
                .parse::<AttackKind>()
                .unwrap_err()
                .contains("sign-flip")
        );
        let spec = AttackSpec {
            kind: AttackKind::SignFlip,
            fraction: 0.2,
        };
        let a = spec.attackers(10, 1);
        assert_eq!(a.len(), 2);
        assert_eq!(a, spec.attackers(10, 1));
        assert!(
            AttackSpec {
                fraction: 0.5,
                ..spec
            }
            .check()
            .is_err()
        );
        // n = 10, f = 2: s = 4, z = Φ⁻¹(0.6) ≈ 0.2533.
        assert!((alie_z(10, 2) - 0.2533).abs() < 1e-3, "{}", alie_z(10, 2));
        assert!((normal_quantile(0.975) - 1.95996).abs() < 1e-4);
    }
}
