//! Model architectures as functions of named parameters.

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Conv2d, Conv2dConfig, Linear};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Uniform};
use serde::{Deserialize, Serialize};
use tg_types::spec::ModelKind;
use tg_types::{NamedTensor, Parameters};

use crate::dataset::Dataset;
use crate::{ModelError, Result};

/// Channels of the two convolution layers of the CNN.
const CNN_CHANNELS: (usize, usize) = (16, 32);

/// Everything needed to build a model: architecture plus data dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelShape {
    /// Architecture.
    pub kind: ModelKind,
    /// Input features.
    pub num_features: usize,
    /// Output classes.
    pub num_classes: usize,
    /// Hidden width (MLP).
    pub hidden: usize,
    /// `(channels, height, width)` of image inputs (CNN).
    pub image: Option<(usize, usize, usize)>,
}

impl ModelShape {
    /// The shape of `kind` for a dataset; fails when a CNN is asked for
    /// non-image data or images too small to pool twice.
    pub fn for_dataset(kind: ModelKind, hidden: usize, data: &Dataset) -> Result<Self> {
        if kind == ModelKind::Cnn {
            match data.image_shape() {
                None => {
                    return Err(ModelError::Unsuitable(
                        "the CNN needs image data (digits or MNIST IDX); this dataset is tabular: use --model mlp".into(),
                    ));
                }
                Some((_, h, w)) if h < 4 || w < 4 => {
                    return Err(ModelError::Unsuitable(format!(
                        "the CNN needs images of at least 4×4 pixels, got {h}×{w}"
                    )));
                }
                Some(_) => {}
            }
        }
        if hidden == 0 {
            return Err(ModelError::Unsuitable(
                "hidden width must be at least 1".into(),
            ));
        }
        Ok(Self {
            kind,
            num_features: data.num_features(),
            num_classes: data.num_classes(),
            hidden,
            image: data.image_shape(),
        })
    }

    /// `(name, shape, fan_in)` of every parameter tensor.
    fn layout(&self) -> Vec<(&'static str, Vec<usize>, usize)> {
        match (self.kind, self.image) {
            (ModelKind::Cnn, Some((c, h, w))) => {
                let (c1, c2) = CNN_CHANNELS;
                let flat = c2 * (h / 4) * (w / 4);
                vec![
                    ("conv1.weight", vec![c1, c, 3, 3], c * 9),
                    ("conv1.bias", vec![c1], c * 9),
                    ("conv2.weight", vec![c2, c1, 3, 3], c1 * 9),
                    ("conv2.bias", vec![c2], c1 * 9),
                    ("fc.weight", vec![self.num_classes, flat], flat),
                    ("fc.bias", vec![self.num_classes], flat),
                ]
            }
            _ => vec![
                (
                    "fc1.weight",
                    vec![self.hidden, self.num_features],
                    self.num_features,
                ),
                ("fc1.bias", vec![self.hidden], self.num_features),
                (
                    "fc2.weight",
                    vec![self.num_classes, self.hidden],
                    self.hidden,
                ),
                ("fc2.bias", vec![self.num_classes], self.hidden),
            ],
        }
    }
}

/// Initial parameters, PyTorch-style: uniform in ±1/√fan_in, from a seeded RNG.
pub fn init_parameters(shape: &ModelShape, seed: u64) -> Result<Parameters> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x1417_5eed);
    let tensors = shape
        .layout()
        .into_iter()
        .map(|(name, dims, fan_in)| {
            let bound = 1.0 / (fan_in as f32).sqrt();
            let dist = Uniform::new_inclusive(-bound, bound)
                .map_err(|e| ModelError::Unsuitable(format!("init of {name}: {e}")))?;
            let n = dims.iter().product();
            Ok(NamedTensor {
                name: name.to_owned(),
                shape: dims,
                data: (0..n).map(|_| dist.sample(&mut rng)).collect(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Parameters::new(tensors)?)
}

enum Layers {
    Mlp {
        fc1: Linear,
        fc2: Linear,
    },
    Cnn {
        conv1: Conv2d,
        conv2: Conv2d,
        fc: Linear,
        image: (usize, usize, usize),
    },
}

/// A candle model whose variables were built from a [`Parameters`] set.
pub(crate) struct Model {
    /// Variables in the same (name-sorted) order as the parameters.
    pub(crate) vars: Vec<(String, Var)>,
    layers: Layers,
}

impl Model {
    /// Builds the model for `shape` with the values of `params`.
    pub(crate) fn from_parameters(
        shape: &ModelShape,
        params: &Parameters,
        dev: &Device,
    ) -> Result<Self> {
        check_layout(shape, params)?;
        let vars = params
            .tensors()
            .iter()
            .map(|t| {
                Ok((
                    t.name.clone(),
                    Var::from_slice(&t.data, t.shape.as_slice(), dev)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let get = |name: &str| -> Result<Tensor> {
            vars.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_tensor().clone())
                .ok_or_else(|| ModelError::Unsuitable(format!("missing parameter `{name}`")))
        };
        let layers = match (shape.kind, shape.image) {
            (ModelKind::Cnn, Some(image)) => {
                let cfg = Conv2dConfig {
                    padding: 1,
                    ..Default::default()
                };
                Layers::Cnn {
                    conv1: Conv2d::new(get("conv1.weight")?, Some(get("conv1.bias")?), cfg),
                    conv2: Conv2d::new(get("conv2.weight")?, Some(get("conv2.bias")?), cfg),
                    fc: Linear::new(get("fc.weight")?, Some(get("fc.bias")?)),
                    image,
                }
            }
            _ => Layers::Mlp {
                fc1: Linear::new(get("fc1.weight")?, Some(get("fc1.bias")?)),
                fc2: Linear::new(get("fc2.weight")?, Some(get("fc2.bias")?)),
            },
        };
        Ok(Self { vars, layers })
    }

    /// Logits for a batch `x` of shape `[batch, num_features]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match &self.layers {
            Layers::Mlp { fc1, fc2 } => fc2.forward(&fc1.forward(x)?.relu()?)?,
            Layers::Cnn {
                conv1,
                conv2,
                fc,
                image: (c, h, w),
            } => {
                let b = x.dim(0)?;
                let x = x.reshape((b, *c, *h, *w))?;
                let x = conv1.forward(&x)?.relu()?.max_pool2d(2)?;
                let x = conv2.forward(&x)?.relu()?.max_pool2d(2)?;
                fc.forward(&x.flatten_from(1)?)?
            }
        })
    }

    /// The model's linear layers in forward order, as `(name prefix, layer)`
    /// — `None` when the model has layers of other kinds (the CNN).
    pub(crate) fn linear_layers(&self) -> Option<[(&'static str, &Linear); 2]> {
        match &self.layers {
            Layers::Mlp { fc1, fc2 } => Some([("fc1", fc1), ("fc2", fc2)]),
            Layers::Cnn { .. } => None,
        }
    }

    /// Forward pass of an all-linear model with `probes[l]` (zeros, shape
    /// `[batch, out_l]`) added to layer l's output, returning the logits and
    /// each layer's input. The gradient of a loss summed over examples with
    /// respect to `probes[l]` is then the per-example gradient at layer l's
    /// output — the ingredient of per-example weight gradients.
    pub(crate) fn forward_probed(
        &self,
        x: &Tensor,
        probes: &[Tensor],
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let Some(layers) = self.linear_layers() else {
            return Err(ModelError::Unsuitable(
                "per-example gradients need an all-linear model (mlp)".into(),
            ));
        };
        let mut inputs = Vec::with_capacity(layers.len());
        let mut a = x.clone();
        for (l, ((_, layer), probe)) in layers.iter().zip(probes).enumerate() {
            inputs.push(a.clone());
            let z = (layer.forward(&a)? + probe)?;
            a = if l + 1 < layers.len() { z.relu()? } else { z };
        }
        Ok((a, inputs))
    }

    /// Current variable values as parameters.
    pub(crate) fn parameters(&self) -> Result<Parameters> {
        let tensors = self
            .vars
            .iter()
            .map(|(name, v)| {
                Ok(NamedTensor {
                    name: name.clone(),
                    shape: v.dims().to_vec(),
                    data: v
                        .as_tensor()
                        .flatten_all()?
                        .to_dtype(DType::F32)?
                        .to_vec1()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Parameters::new(tensors)?)
    }
}

/// Fails unless `params` has exactly the names and shapes `shape` needs.
fn check_layout(shape: &ModelShape, params: &Parameters) -> Result<()> {
    let mut want = shape.layout();
    want.sort_by(|a, b| a.0.cmp(b.0)); // parameters are kept sorted by name
    let got = params.tensors();
    let same = want.len() == got.len()
        && want
            .iter()
            .zip(got)
            .all(|((name, dims, _), t)| *name == t.name && *dims == t.shape);
    if same {
        return Ok(());
    }
    let describe = |it: Vec<String>| it.join(", ");
    Err(tg_types::ParamsError::LayoutMismatch(format!(
        "model needs [{}], got [{}]",
        describe(want.iter().map(|(n, d, _)| format!("{n} {d:?}")).collect()),
        describe(
            got.iter()
                .map(|t| format!("{} {:?}", t.name, t.shape))
                .collect()
        ),
    ))
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_seeded_and_bounded() {
        let d = crate::dataset::digits().unwrap();
        let s = ModelShape::for_dataset(ModelKind::Mlp, 32, &d).unwrap();
        let a = init_parameters(&s, 1).unwrap();
        assert_eq!(a, init_parameters(&s, 1).unwrap());
        assert_ne!(a, init_parameters(&s, 2).unwrap());
        assert_eq!(a.num_values(), 64 * 32 + 32 + 32 * 10 + 10);
        for t in a.tensors() {
            let fan_in = if t.name.starts_with("fc1") {
                64.0f32
            } else {
                32.0
            };
            assert!(
                t.data.iter().all(|v| v.abs() <= 1.0 / fan_in.sqrt() + 1e-6),
                "{}",
                t.name
            );
        }
    }

    #[test]
    fn cnn_round_trips_and_rejects_tabular_data() {
        let d = crate::dataset::digits().unwrap();
        let s = ModelShape::for_dataset(ModelKind::Cnn, 32, &d).unwrap();
        let p = init_parameters(&s, 0).unwrap();
        let m = Model::from_parameters(&s, &p, &Device::Cpu).unwrap();
        assert_eq!(m.parameters().unwrap(), p);
        let mlp = ModelShape::for_dataset(ModelKind::Mlp, 32, &d).unwrap();
        let wrong = init_parameters(&mlp, 0).unwrap();
        assert!(
            Model::from_parameters(&s, &wrong, &Device::Cpu).is_err(),
            "MLP weights do not fit the CNN"
        );
        let x = Tensor::zeros((3, 64), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(m.forward(&x).unwrap().dims(), &[3, 10]);
        let tab = Dataset::new(vec![0.0; 6], vec![0, 1], 3, 2, None).unwrap();
        assert!(ModelShape::for_dataset(ModelKind::Cnn, 8, &tab).is_err());
    }
}
