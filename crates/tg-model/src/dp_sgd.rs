//! Sample-level DP-SGD (Abadi et al. 2016): per-example clipping and
//! Gaussian noise inside local training.
//!
//! Design decision: per-example gradients are computed in *one* backward pass,
//! not a loop of batch-size-1 passes. A zero "probe" is added to each linear
//! layer's output; the gradient of the summed loss with respect to probe l is
//! the matrix G_l whose row i is example i's gradient at that output. Example
//! i's weight gradient is then the outer product g_i a_iᵀ with the layer input
//! a_i, whose squared norm is ‖g_i‖²‖a_i‖² ("ghost norm", Goodfellow 2015), so
//! norms never need the per-example gradients themselves, and the clipped sum
//! is one matrix product (G_l ∘ c)ᵀ A_l with the per-example clip factors c.

use candle_core::{DType, Device, Tensor, Var};
use tg_privacy::{LatticeGaussian, NoiseRng};

use crate::net::Model;
use crate::{ModelError, Result};

/// Σ_i min(1, C/‖∇ℓ_i‖)·∇ℓ_i over the batch `(x, y)` (cross-entropy loss),
/// one tensor per variable in `Model::vars` order.
pub(crate) fn clipped_gradient_sum(
    model: &Model,
    x: &Tensor,
    y: &Tensor,
    clip: f64,
) -> Result<Vec<Tensor>> {
    let layers = model.linear_layers().ok_or_else(|| {
        ModelError::Unsuitable(
            "DP-SGD computes per-example gradients for linear layers only: use --model mlp".into(),
        )
    })?;
    let b = x.dim(0)?;
    let dev = x.device();
    let probes = layers
        .iter()
        .map(|(_, l)| Var::zeros((b, l.weight().dim(0)?), DType::F32, dev))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let probe_tensors: Vec<Tensor> = probes.iter().map(|p| p.as_tensor().clone()).collect();
    let (logits, inputs) = model.forward_probed(x, &probe_tensors)?;
    // The mean loss times b is the summed loss, whose gradient is per-example.
    let loss_sum = (candle_nn::loss::cross_entropy(&logits, y)? * b as f64)?;
    let grads = loss_sum.backward()?;

    // Per-example squared norms, summed over layers: ‖g_i‖²(‖a_i‖² + 1).
    let mut outs = Vec::with_capacity(layers.len());
    let mut norm2 = Tensor::zeros(b, DType::F32, dev)?;
    for (probe, input) in probes.iter().zip(&inputs) {
        let g = grads
            .get(probe.as_tensor())
            .ok_or_else(|| ModelError::Unsuitable("no gradient reached a layer".into()))?
            .clone();
        let a = input.detach();
        let g2 = g.sqr()?.sum(1)?;
        let a2 = (a.sqr()?.sum(1)? + 1.0)?;
        norm2 = (norm2 + (g2 * a2)?)?;
        outs.push((g, a));
    }
    // c_i = min(1, C / ‖∇ℓ_i‖), with ‖∇ℓ_i‖ = 0 giving 1.
    let norm = norm2.sqrt()?;
    let factor = (norm.maximum(clip)?.recip()? * clip)?.unsqueeze(1)?;

    let mut by_name: Vec<(String, Tensor)> = Vec::with_capacity(2 * layers.len());
    for ((name, _), (g, a)) in layers.iter().zip(outs) {
        let gc = g.broadcast_mul(&factor)?;
        by_name.push((format!("{name}.weight"), gc.t()?.matmul(&a)?));
        by_name.push((format!("{name}.bias"), gc.sum(0)?));
    }
    model
        .vars
        .iter()
        .map(|(name, _)| {
            by_name
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| {
                    ModelError::Unsuitable(format!("no per-example gradient for {name}"))
                })
        })
        .collect()
}

/// The noised mean gradient: every variable's clipped sum gets lattice
/// Gaussian noise (one lattice for the whole model, calibrated to the
/// model's dimension) and is divided by the expected batch size.
pub(crate) fn privatize(
    sums: &[Tensor],
    noise: &LatticeGaussian,
    expected_batch: f64,
    rng: &mut NoiseRng,
) -> Result<Vec<Tensor>> {
    let noise_err = |e: tg_privacy::PrivacyError| ModelError::Unsuitable(format!("DP noise: {e}"));
    sums.iter()
        .map(|sum| {
            let mut v: Vec<f64> = sum
                .flatten_all()?
                .to_vec1::<f32>()?
                .into_iter()
                .map(f64::from)
                .collect();
            rng.add_lattice_gaussian(&mut v, noise).map_err(noise_err)?;
            let v: Vec<f32> = v.into_iter().map(|x| (x / expected_batch) as f32).collect();
            Ok(Tensor::from_vec(v, sum.dims(), &Device::Cpu)?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{ModelShape, init_parameters};
    use tg_types::spec::ModelKind;

    /// Per-example gradients from batch-size-1 backward passes, as flat vectors.
    fn reference(model: &Model, x: &Tensor, y: &Tensor) -> Vec<Vec<f32>> {
        (0..x.dim(0).unwrap())
            .map(|i| {
                let xi = x.narrow(0, i, 1).unwrap();
                let yi = y.narrow(0, i, 1).unwrap();
                let loss =
                    candle_nn::loss::cross_entropy(&model.forward(&xi).unwrap(), &yi).unwrap();
                let g = loss.backward().unwrap();
                model
                    .vars
                    .iter()
                    .flat_map(|(_, v)| {
                        g.get(v.as_tensor())
                            .unwrap()
                            .flatten_all()
                            .unwrap()
                            .to_vec1::<f32>()
                            .unwrap()
                    })
                    .collect()
            })
            .collect()
    }

    fn flat(ts: &[Tensor]) -> Vec<f32> {
        ts.iter()
            .flat_map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect()
    }

    fn setup(n: usize) -> (Model, Tensor, Tensor) {
        let d = crate::dataset::digits().unwrap();
        let shape = ModelShape::for_dataset(ModelKind::Mlp, 16, &d).unwrap();
        let p = init_parameters(&shape, 3).unwrap();
        let model = Model::from_parameters(&shape, &p, &Device::Cpu).unwrap();
        let data = crate::train::LocalData::new(&d).unwrap();
        let (x, y) = data.batch(&(0..n as u32).collect::<Vec<_>>()).unwrap();
        (model, x, y)
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (u, v) in a.iter().zip(b) {
            assert!((u - v).abs() <= 1e-5 + 1e-4 * v.abs(), "{u} vs {v}");
        }
    }

    #[test]
    fn unclipped_sum_equals_batch_size_one_gradients() {
        let (model, x, y) = setup(12);
        let refs = reference(&model, &x, &y);
        let mut want = vec![0.0f32; refs[0].len()];
        for r in &refs {
            want.iter_mut().zip(r).for_each(|(w, v)| *w += v);
        }
        let got = clipped_gradient_sum(&model, &x, &y, 1e9).unwrap();
        close(&flat(&got), &want);
    }

    #[test]
    fn clipping_is_per_example() {
        let (model, x, y) = setup(12);
        let refs = reference(&model, &x, &y);
        let norms: Vec<f32> = refs
            .iter()
            .map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt())
            .collect();
        // A bound below most norms, so clipping really happens.
        let mut sorted = norms.clone();
        sorted.sort_by(f32::total_cmp);
        let c = sorted[3];
        let mut want = vec![0.0f32; refs[0].len()];
        for (r, n) in refs.iter().zip(&norms) {
            let f = (c / n).min(1.0);
            want.iter_mut().zip(r).for_each(|(w, v)| *w += f * v);
        }
        let got = clipped_gradient_sum(&model, &x, &y, f64::from(c)).unwrap();
        close(&flat(&got), &want);
    }

    #[test]
    fn cnn_is_refused_with_a_reason() {
        let d = crate::dataset::digits().unwrap();
        let shape = ModelShape::for_dataset(ModelKind::Cnn, 16, &d).unwrap();
        let p = init_parameters(&shape, 3).unwrap();
        let model = Model::from_parameters(&shape, &p, &Device::Cpu).unwrap();
        let x = Tensor::zeros((2, 64), DType::F32, &Device::Cpu).unwrap();
        let y = Tensor::zeros(2, DType::U32, &Device::Cpu).unwrap();
        let err = clipped_gradient_sum(&model, &x, &y, 1.0).err().unwrap();
        assert!(err.to_string().contains("--model mlp"), "{err}");
    }
}
