//! Local training and evaluation.
//!
//! Strategy-specific terms are applied to the gradients before the optimizer
//! step: FedProx adds μ(w − w_global), SCAFFOLD adds (c − c_i). The optimizer
//! itself is candle's, so both terms work with SGD and AdamW alike.

use candle_core::backprop::GradStore;
use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, SGD};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tg_types::Parameters;
use tg_types::spec::{LocalObjective, OptimizerSpec, TrainConfig};

use tg_privacy::{LatticeGaussian, NoiseRng};

use crate::dataset::Dataset;
use crate::dp_sgd;
use crate::net::{Model, ModelShape};
use crate::{ModelError, Result};

/// Evaluation batch size (memory bound, not a hyper-parameter).
const EVAL_BATCH: usize = 1024;

/// A dataset as candle tensors on the CPU, ready for batching.
pub struct LocalData {
    x: Tensor,
    y: Tensor,
    len: usize,
}

impl LocalData {
    /// Copies a dataset into tensors.
    pub fn new(data: &Dataset) -> Result<Self> {
        let dev = Device::Cpu;
        Ok(Self {
            x: Tensor::from_slice(data.features(), (data.len(), data.num_features()), &dev)?,
            y: Tensor::from_slice(data.labels(), data.len(), &dev)?,
            len: data.len(),
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The examples at `indices` as `(features, labels)`.
    pub(crate) fn batch(&self, indices: &[u32]) -> Result<(Tensor, Tensor)> {
        let idx = Tensor::from_slice(indices, indices.len(), self.x.device())?;
        Ok((self.x.index_select(&idx, 0)?, self.y.index_select(&idx, 0)?))
    }
}

/// Result of one round of local training.
#[derive(Clone, Debug)]
pub struct LocalOutcome {
    /// `local − global`.
    pub update: Parameters,
    /// Mean mini-batch loss over all steps (None under DP-SGD: the loss of
    /// private data is not released).
    pub train_loss: Option<f64>,
    /// Optimizer steps taken.
    pub steps: u64,
    /// SCAFFOLD: `c_i⁺ − c_i` (the client's control is updated in place).
    pub control_delta: Option<Parameters>,
}

enum Opt {
    Sgd(SGD),
    AdamW(AdamW),
}

impl Opt {
    fn step(&mut self, g: &GradStore) -> candle_core::Result<()> {
        match self {
            Opt::Sgd(o) => o.step(g),
            Opt::AdamW(o) => o.step(g),
        }
    }
}

fn to_tensors(p: &Parameters, dev: &Device) -> Result<Vec<Tensor>> {
    p.tensors()
        .iter()
        .map(|t| Ok(Tensor::from_slice(&t.data, t.shape.as_slice(), dev)?))
        .collect()
}

/// Trains from `global` on `data` for `cfg.local_epochs` epochs.
///
/// `client_control` is this client's SCAFFOLD control variate `c_i`, kept by
/// the agent between rounds (`None` the first time: it starts at zero).
pub fn train_local(
    shape: &ModelShape,
    global: &Parameters,
    data: &LocalData,
    cfg: &TrainConfig,
    objective: &LocalObjective,
    client_control: &mut Option<Parameters>,
    seed: u64,
) -> Result<LocalOutcome> {
    if data.is_empty() {
        return Err(ModelError::Unsuitable(
            "this client has no training examples".into(),
        ));
    }
    if cfg.batch_size == 0 || cfg.local_epochs == 0 || !(cfg.learning_rate > 0.0) {
        return Err(ModelError::Unsuitable(format!(
            "invalid local training config: {cfg:?} (batch size, epochs and learning rate must be positive)"
        )));
    }
    let dev = Device::Cpu;
    let model = Model::from_parameters(shape, global, &dev)?;
    let vars: Vec<_> = model.vars.iter().map(|(_, v)| v.clone()).collect();
    let mut opt = match cfg.optimizer {
        OptimizerSpec::AdamW { weight_decay } => Opt::AdamW(AdamW::new(
            vars.clone(),
            ParamsAdamW {
                lr: cfg.learning_rate,
                weight_decay,
                ..Default::default()
            },
        )?),
        _ => Opt::Sgd(SGD::new(vars.clone(), cfg.learning_rate)?),
    };

    // Gradient corrections, as constant tensors aligned with `vars`.
    let global_t = to_tensors(global, &dev)?;
    let scaffold_correction = match objective {
        LocalObjective::Scaffold { server_control } => {
            let ci = client_control.get_or_insert_with(|| global.zeros_like());
            let correction = server_control.difference(ci)?; // c − c_i
            Some(to_tensors(&correction, &dev)?)
        }
        _ => None,
    };
    let mu = match objective {
        LocalObjective::Proximal { mu } => f64::from(*mu),
        _ => 0.0,
    };

    let corrections = Corrections {
        mu,
        global: &global_t,
        scaffold: scaffold_correction.as_deref(),
    };
    let (steps, train_loss) = match cfg.dp_sgd {
        None => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut order: Vec<u32> = (0..data.len as u32).collect();
            let batch = cfg.batch_size as usize;
            let (mut steps, mut loss_sum) = (0u64, 0.0f64);
            for _ in 0..cfg.local_epochs {
                order.shuffle(&mut rng);
                for chunk in order.chunks(batch) {
                    let (xb, yb) = data.batch(chunk)?;
                    let loss = candle_nn::loss::cross_entropy(&model.forward(&xb)?, &yb)?;
                    let mut grads = loss.backward()?;
                    corrections.apply(&mut grads, &vars)?;
                    opt.step(&grads)?;
                    loss_sum += f64::from(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?);
                    steps += 1;
                }
            }
            (steps, Some(loss_sum / steps.max(1) as f64))
        }
        Some(dp) => {
            let q = dp.sampling_rate.get();
            let expected_batch = q * data.len as f64;
            let clip = dp.max_grad_norm.get();
            let dimension = vars.iter().map(|v| v.elem_count()).sum();
            let lattice = LatticeGaussian::calibrated(dp.noise_multiplier.get(), clip, dimension)
                .map_err(|e| ModelError::Unsuitable(format!("DP-SGD: {e}")))?;
            let mut noise =
                NoiseRng::from_os().map_err(|e| ModelError::Unsuitable(format!("DP-SGD: {e}")))?;
            for _ in 0..dp.steps_per_round {
                // Poisson sampling from the CSPRNG: the batch is secret and random-sized.
                let chosen: Vec<u32> = (0..data.len as u32)
                    .filter(|_| noise.bernoulli_rate(q))
                    .collect();
                let sums = if chosen.is_empty() {
                    vars.iter()
                        .map(|v| v.as_tensor().zeros_like())
                        .collect::<candle_core::Result<Vec<_>>>()?
                } else {
                    let (xb, yb) = data.batch(&chosen)?;
                    dp_sgd::clipped_gradient_sum(&model, &xb, &yb, clip)?
                };
                let mut grads = GradStore::default();
                let noised = dp_sgd::privatize(&sums, &lattice, expected_batch, &mut noise)?;
                for (var, g) in vars.iter().zip(noised) {
                    grads.insert(var.as_tensor(), g);
                }
                corrections.apply(&mut grads, &vars)?;
                opt.step(&grads)?;
            }
            (u64::from(dp.steps_per_round), None)
        }
    };

    let local = model.parameters()?;
    let update = local.difference(global)?;
    let control_delta = match objective {
        LocalObjective::Scaffold { server_control } => {
            // Option II of Karimireddy et al.: c_i⁺ = c_i − c + (x − y_i) / (K η).
            // Δc_i = c_i⁺ − c_i = −c − update / (K η).
            let mut delta = update.clone();
            delta.scale(-1.0 / (steps as f32 * cfg.learning_rate as f32));
            delta.add_scaled(server_control, -1.0)?;
            let ci = client_control.get_or_insert_with(|| global.zeros_like());
            ci.add_scaled(&delta, 1.0)?;
            Some(delta)
        }
        _ => None,
    };
    Ok(LocalOutcome {
        update,
        train_loss,
        steps,
        control_delta,
    })
}

/// Data-independent gradient terms a strategy adds: FedProx's μ(w − w_global)
/// and SCAFFOLD's (c − c_i). Added after DP noise, they cost no privacy.
struct Corrections<'a> {
    mu: f64,
    global: &'a [Tensor],
    scaffold: Option<&'a [Tensor]>,
}

impl Corrections<'_> {
    fn apply(&self, grads: &mut GradStore, vars: &[Var]) -> Result<()> {
        if self.mu <= 0.0 && self.scaffold.is_none() {
            return Ok(());
        }
        for (i, var) in vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let mut g = g.clone();
            if self.mu > 0.0 {
                g = (g + ((var.as_tensor() - &self.global[i])? * self.mu)?)?;
            }
            if let Some(corr) = self.scaffold {
                g = (g + &corr[i])?;
            }
            grads.insert(var.as_tensor(), g);
        }
        Ok(())
    }
}

/// Loss and accuracy of a model on a dataset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction classified correctly.
    pub accuracy: f64,
    /// Examples evaluated.
    pub num_examples: u64,
}

/// Evaluates `params` on `data`.
pub fn evaluate(shape: &ModelShape, params: &Parameters, data: &LocalData) -> Result<Evaluation> {
    if data.is_empty() {
        return Err(ModelError::Unsuitable(
            "cannot evaluate on an empty dataset".into(),
        ));
    }
    let model = Model::from_parameters(shape, params, &Device::Cpu)?;
    let (mut loss_sum, mut correct) = (0.0f64, 0u64);
    let mut start = 0;
    while start < data.len {
        let n = EVAL_BATCH.min(data.len - start);
        let xb = data.x.narrow(0, start, n)?;
        let yb = data.y.narrow(0, start, n)?;
        let logits = model.forward(&xb)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &yb)?.to_scalar::<f32>()?;
        loss_sum += f64::from(loss) * n as f64;
        let pred = logits.argmax(D::Minus1)?;
        correct += pred
            .eq(&yb)?
            .to_dtype(DType::U32)?
            .sum_all()?
            .to_scalar::<u32>()? as u64;
        start += n;
    }
    Ok(Evaluation {
        loss: loss_sum / data.len as f64,
        accuracy: correct as f64 / data.len as f64,
        num_examples: data.len as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::init_parameters;
    use tg_types::spec::ModelKind;

    fn setup() -> (ModelShape, LocalData, LocalData, Parameters) {
        let split = crate::dataset::digits().unwrap().split_fixed(0.2);
        let shape = ModelShape::for_dataset(ModelKind::Mlp, 32, &split.train).unwrap();
        let p = init_parameters(&shape, 0).unwrap();
        (
            shape,
            LocalData::new(&split.train).unwrap(),
            LocalData::new(&split.test).unwrap(),
            p,
        )
    }

    /// Trains from `p` with the test config; `ci` is the SCAFFOLD client control.
    fn run(
        shape: &ModelShape,
        p: &Parameters,
        data: &LocalData,
        obj: &LocalObjective,
        ci: &mut Option<Parameters>,
        seed: u64,
    ) -> LocalOutcome {
        train_local(shape, p, data, &cfg(), obj, ci, seed).unwrap()
    }

    fn cfg() -> TrainConfig {
        TrainConfig {
            local_epochs: 3,
            batch_size: 32,
            learning_rate: 0.1,
            optimizer: OptimizerSpec::Sgd,
            dp_sgd: None,
            compress: Default::default(),
            adaptive_sparsity: false,
            deadline_ms: None,
        }
    }

    #[test]
    fn training_learns_digits() {
        let (shape, train, test, p) = setup();
        let before = evaluate(&shape, &p, &test).unwrap();
        let out = run(&shape, &p, &train, &LocalObjective::Plain, &mut None, 1);
        let mut after = p.clone();
        after.add_scaled(&out.update, 1.0).unwrap();
        let after = evaluate(&shape, &after, &test).unwrap();
        assert!(
            after.accuracy > 0.75 && after.accuracy > before.accuracy + 0.5,
            "{before:?} → {after:?}"
        );
        assert_eq!(out.steps, 3 * 1438_u64.div_ceil(32));
    }

    #[test]
    fn training_is_deterministic_under_seed() {
        let (shape, train, _, p) = setup();
        let a = run(&shape, &p, &train, &LocalObjective::Plain, &mut None, 5);
        let b = run(&shape, &p, &train, &LocalObjective::Plain, &mut None, 5);
        assert_eq!(a.update, b.update);
    }

    #[test]
    fn proximal_term_shrinks_the_update() {
        let (shape, train, _, p) = setup();
        let plain = run(&shape, &p, &train, &LocalObjective::Plain, &mut None, 5);
        let prox = run(
            &shape,
            &p,
            &train,
            &LocalObjective::Proximal { mu: 1.0 },
            &mut None,
            5,
        );
        assert!(prox.update.l2_norm() < plain.update.l2_norm());
    }

    #[test]
    fn scaffold_updates_the_client_control() {
        let (shape, train, _, p) = setup();
        let mut ci = None;
        let obj = LocalObjective::Scaffold {
            server_control: p.zeros_like(),
        };
        let out = run(&shape, &p, &train, &obj, &mut ci, 5);
        let delta = out.control_delta.unwrap();
        assert_eq!(ci.unwrap(), delta); // started at zero
        assert!(delta.l2_norm() > 0.0);
    }
}
