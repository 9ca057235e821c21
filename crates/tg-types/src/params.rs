//! Model parameters as an ordered list of named `f32` tensors.
//!
//! Design decision: aggregation, compression and secure aggregation work on
//! plain `Vec<f32>` buffers with a fixed layout, not on framework tensors, so
//! the pure crates never depend on candle. The layout (names, shapes, order) is
//! part of a model version; two parameter sets combine only when their layouts
//! match, which [`Parameters::check_same_layout`] enforces before any
//! arithmetic.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// One named tensor, row-major.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedTensor {
    /// Name such as `fc1.weight`.
    pub name: String,
    /// Dimensions; the product equals `data.len()`.
    #[serde(deserialize_with = "crate::view::bounded::shape")]
    pub shape: Vec<usize>,
    /// Values, row-major. On the wire one length-prefixed blob of
    /// little-endian `f32` (decoded with one exact allocation, or not at all
    /// through [`crate::view::TensorView`]).
    #[serde(with = "crate::view::f32_le")]
    pub data: Vec<f32>,
}

/// A complete set of model parameters (or an update of the same layout),
/// sorted by tensor name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Parameters {
    #[serde(deserialize_with = "crate::view::bounded::tensors")]
    tensors: Vec<NamedTensor>,
}

/// The precision a tensor is stored in (values are always f32 in memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stored {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16.
    BF16,
}

/// Errors building, combining or decoding parameters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParamsError {
    /// A tensor's data length disagrees with its shape.
    #[error("tensor `{name}` has shape {shape:?} ({expected} values) but holds {actual} values")]
    ShapeMismatch {
        /// Tensor name.
        name: String,
        /// Declared shape.
        shape: Vec<usize>,
        /// Product of the shape.
        expected: usize,
        /// Values present.
        actual: usize,
    },
    /// Two tensors share a name.
    #[error("tensor name `{0}` appears twice")]
    DuplicateName(String),
    /// Two parameter sets do not have the same names and shapes.
    #[error("parameter layouts differ: {0}")]
    LayoutMismatch(String),
    /// Safetensors bytes could not be decoded.
    #[error("not a valid safetensors file: {0}")]
    Safetensors(String),
    /// Safetensors holds a dtype other than F32, F16 or BF16.
    #[error("tensor `{name}` has dtype {dtype}; only F32, F16 and BF16 are supported")]
    UnsupportedDtype {
        /// Tensor name.
        name: String,
        /// Dtype found.
        dtype: String,
    },
}

impl Parameters {
    /// Builds a parameter set, checking shapes and sorting by name.
    pub fn new(mut tensors: Vec<NamedTensor>) -> Result<Self, ParamsError> {
        // What the wire carries (see `view::MAX_TENSORS`): a set peers would
        // refuse is refused here, where its owner can be told.
        if tensors.len() > crate::view::MAX_TENSORS {
            return Err(ParamsError::LayoutMismatch(format!(
                "{} tensors, more than the {} a parameter set may hold",
                tensors.len(),
                crate::view::MAX_TENSORS
            )));
        }
        if let Some(t) = tensors
            .iter()
            .find(|t| t.shape.len() > crate::view::MAX_RANK)
        {
            return Err(ParamsError::LayoutMismatch(format!(
                "tensor `{}` has {} dimensions, more than {}",
                t.name,
                t.shape.len(),
                crate::view::MAX_RANK
            )));
        }
        for t in &tensors {
            let expected: usize = t.shape.iter().product();
            if expected != t.data.len() {
                return Err(ParamsError::ShapeMismatch {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    expected,
                    actual: t.data.len(),
                });
            }
        }
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = tensors.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(ParamsError::DuplicateName(w[0].name.clone()));
        }
        Ok(Self { tensors })
    }

    /// The tensors, sorted by name.
    pub fn tensors(&self) -> &[NamedTensor] {
        &self.tensors
    }

    /// Total number of scalar parameters.
    pub fn num_values(&self) -> usize {
        self.tensors.iter().map(|t| t.data.len()).sum()
    }

    /// A parameter set of the same layout filled with zeros.
    pub fn zeros_like(&self) -> Self {
        Self {
            tensors: self
                .tensors
                .iter()
                .map(|t| NamedTensor {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    data: vec![0.0; t.data.len()],
                })
                .collect(),
        }
    }

    /// Fails unless `other` has exactly the same names and shapes.
    pub fn check_same_layout(&self, other: &Self) -> Result<(), ParamsError> {
        if self.tensors.len() != other.tensors.len() {
            return Err(ParamsError::LayoutMismatch(format!(
                "{} tensors vs {}",
                self.tensors.len(),
                other.tensors.len()
            )));
        }
        for (a, b) in self.tensors.iter().zip(&other.tensors) {
            if a.name != b.name || a.shape != b.shape {
                return Err(ParamsError::LayoutMismatch(format!(
                    "`{}` {:?} vs `{}` {:?}",
                    a.name, a.shape, b.name, b.shape
                )));
            }
        }
        Ok(())
    }

    /// Iterates over all values in layout order.
    pub fn values(&self) -> impl Iterator<Item = f32> + '_ {
        self.tensors.iter().flat_map(|t| t.data.iter().copied())
    }

    /// Applies `f(self_value, other_value)` element-wise in place.
    pub fn zip_apply(
        &mut self,
        other: &Self,
        mut f: impl FnMut(&mut f32, f32),
    ) -> Result<(), ParamsError> {
        self.check_same_layout(other)?;
        for (a, b) in self.tensors.iter_mut().zip(&other.tensors) {
            for (x, y) in a.data.iter_mut().zip(&b.data) {
                f(x, *y);
            }
        }
        Ok(())
    }

    /// `self += alpha * other`.
    pub fn add_scaled(&mut self, other: &Self, alpha: f32) -> Result<(), ParamsError> {
        self.zip_apply(other, |x, y| *x += alpha * y)
    }

    /// `self - other` as a new parameter set.
    pub fn difference(&self, other: &Self) -> Result<Self, ParamsError> {
        let mut out = self.clone();
        out.zip_apply(other, |x, y| *x -= y)?;
        Ok(out)
    }

    /// Multiplies every value by `alpha`.
    pub fn scale(&mut self, alpha: f32) {
        for t in &mut self.tensors {
            t.data.iter_mut().for_each(|x| *x *= alpha);
        }
    }

    /// Mutable access to every value in layout order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut f32> + '_ {
        self.tensors.iter_mut().flat_map(|t| t.data.iter_mut())
    }

    /// Euclidean norm over all values (accumulated in f64).
    pub fn l2_norm(&self) -> f64 {
        self.values()
            .map(|v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt()
    }

    /// True when every value is finite.
    pub fn all_finite(&self) -> bool {
        self.values().all(f32::is_finite)
    }

    /// Serializes to the safetensors format (little-endian F32, sorted names).
    pub fn to_safetensors(&self) -> Result<Vec<u8>, ParamsError> {
        self.to_safetensors_with(None)
    }

    /// As [`Parameters::to_safetensors`], with the header's `__metadata__`
    /// string map.
    pub fn to_safetensors_with(
        &self,
        meta: Option<HashMap<String, String>>,
    ) -> Result<Vec<u8>, ParamsError> {
        self.to_safetensors_as(&HashMap::new(), meta)
    }

    /// As [`Parameters::to_safetensors_with`], storing the tensors named in
    /// `dtypes` in that precision (a half-precision `state_dict` saved as
    /// it came: values that were f16 or bf16 round-trip exactly).
    pub fn to_safetensors_as(
        &self,
        dtypes: &HashMap<String, Stored>,
        meta: Option<HashMap<String, String>>,
    ) -> Result<Vec<u8>, ParamsError> {
        let stored = |name: &str| dtypes.get(name).copied().unwrap_or(Stored::F32);
        // f32 tensors are viewed in place on little-endian machines (what
        // safetensors stores), so serialising holds the model once more, not
        // twice; half precision, or a big-endian machine, takes one exact
        // copy into little-endian bytes.
        let buffers: Vec<std::borrow::Cow<'_, [u8]>> = self
            .tensors
            .iter()
            .map(|t| match stored(&t.name) {
                Stored::F32 if cfg!(target_endian = "little") => {
                    std::borrow::Cow::Borrowed(bytemuck::cast_slice::<f32, u8>(&t.data))
                }
                Stored::F32 => std::borrow::Cow::Owned(le_bytes(&t.data, f32::to_le_bytes)),
                Stored::F16 => std::borrow::Cow::Owned(le_bytes(&t.data, |v| {
                    half::f16::from_f32(v).to_le_bytes()
                })),
                Stored::BF16 => std::borrow::Cow::Owned(le_bytes(&t.data, |v| {
                    half::bf16::from_f32(v).to_le_bytes()
                })),
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = self
            .tensors
            .iter()
            .zip(&buffers)
            .map(|(t, bytes)| {
                let dtype = match stored(&t.name) {
                    Stored::F32 => safetensors::Dtype::F32,
                    Stored::F16 => safetensors::Dtype::F16,
                    Stored::BF16 => safetensors::Dtype::BF16,
                };
                safetensors::tensor::TensorView::new(dtype, t.shape.clone(), bytes.as_ref())
                    .map(|v| (t.name.clone(), v))
                    .map_err(|e| ParamsError::Safetensors(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        safetensors::serialize(views, meta).map_err(|e| ParamsError::Safetensors(e.to_string()))
    }

    /// The header's `__metadata__` string map of safetensors bytes
    /// (untrusted input), empty when there is none.
    pub fn safetensors_metadata(bytes: &[u8]) -> Result<HashMap<String, String>, ParamsError> {
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| ParamsError::Safetensors(e.to_string()))?;
        Ok(meta.metadata().clone().unwrap_or_default())
    }

    /// Decodes safetensors bytes (untrusted input). F32 tensors are taken
    /// as they are; F16 and BF16 tensors (a half-precision `state_dict`)
    /// are widened to f32 exactly. Other dtypes are refused.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, ParamsError> {
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| ParamsError::Safetensors(e.to_string()))?;
        let mut tensors = Vec::with_capacity(st.len());
        for (name, view) in st.tensors() {
            let raw = view.data();
            let data: Vec<f32> = match view.dtype() {
                safetensors::Dtype::F32 => raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                safetensors::Dtype::F16 => raw
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                safetensors::Dtype::BF16 => raw
                    .chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                other => {
                    return Err(ParamsError::UnsupportedDtype {
                        name,
                        dtype: format!("{other:?}"),
                    });
                }
            };
            tensors.push(NamedTensor {
                name,
                shape: view.shape().to_vec(),
                data,
            });
        }
        Self::new(tensors)
    }
}

/// Each value's little-endian bytes, in one exactly sized buffer.
fn le_bytes<const N: usize>(data: &[f32], bytes: impl Fn(f32) -> [u8; N]) -> Vec<u8> {
    let mut b = Vec::with_capacity(data.len() * N);
    b.extend(data.iter().flat_map(|&v| bytes(v)));
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Parameters {
        Parameters::new(vec![
            NamedTensor {
                name: "b".into(),
                shape: vec![2],
                data: vec![1.0, -2.0],
            },
            NamedTensor {
                name: "a".into(),
                shape: vec![2, 2],
                data: vec![0.5, 0.25, 3.0, 4.0],
            },
        ])
        .unwrap()
    }

    #[test]
    fn sorted_and_checked() {
        let p = sample();
        assert_eq!(p.tensors()[0].name, "a");
        assert_eq!(p.num_values(), 6);
        let bad = Parameters::new(vec![NamedTensor {
            name: "x".into(),
            shape: vec![3],
            data: vec![1.0],
        }]);
        assert!(matches!(bad, Err(ParamsError::ShapeMismatch { .. })));
    }

    #[test]
    fn safetensors_round_trip() {
        let p = sample();
        let bytes = p.to_safetensors().unwrap();
        assert_eq!(Parameters::from_safetensors(&bytes).unwrap(), p);
        assert!(Parameters::from_safetensors(&bytes[..bytes.len() - 1]).is_err());
        assert!(Parameters::from_safetensors(b"garbage").is_err());
    }

    #[test]
    fn half_precision_files_widen_exactly_and_other_dtypes_are_refused() {
        // Known answers: 1.0, -2.5 and 65504 (f16's largest) in f16; 1.0,
        // -2.5 and 3.0e38 (rounded to bf16) in bf16.
        let f16: Vec<u8> = [0x3c00u16, 0xc100, 0x7bff]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let bf16: Vec<u8> = [0x3f80u16, 0xc020, 0x7f62]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let views = vec![
            (
                "h".to_string(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![3], &f16)
                    .unwrap(),
            ),
            (
                "b".to_string(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, vec![3], &bf16)
                    .unwrap(),
            ),
        ];
        let bytes = safetensors::serialize(views, None).unwrap();
        let p = Parameters::from_safetensors(&bytes).unwrap();
        let get = |n: &str| {
            p.tensors()
                .iter()
                .find(|t| t.name == n)
                .unwrap()
                .data
                .clone()
        };
        assert_eq!(get("h"), vec![1.0, -2.5, 65504.0]);
        let b = get("b");
        assert_eq!(&b[..2], &[1.0, -2.5]);
        assert_eq!(b[2], f32::from_bits(0x7f62_0000));
        let ints = [0u8; 8];
        let views = vec![(
            "i".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![1], &ints).unwrap(),
        )];
        let bytes = safetensors::serialize(views, None).unwrap();
        let e = Parameters::from_safetensors(&bytes).unwrap_err();
        assert!(e.to_string().contains("I64"), "{e}");
    }

    #[test]
    fn half_precision_tensors_are_written_back_in_their_precision() {
        let p = Parameters::new(vec![
            NamedTensor {
                name: "h".into(),
                shape: vec![2],
                data: vec![1.0, -2.5],
            },
            NamedTensor {
                name: "b".into(),
                shape: vec![1],
                data: vec![3.0],
            },
            NamedTensor {
                name: "f".into(),
                shape: vec![1],
                data: vec![0.1],
            },
        ])
        .unwrap();
        let dtypes = HashMap::from([
            ("h".to_string(), Stored::F16),
            ("b".to_string(), Stored::BF16),
        ]);
        let bytes = p.to_safetensors_as(&dtypes, None).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("h").unwrap().dtype(), safetensors::Dtype::F16);
        assert_eq!(st.tensor("b").unwrap().dtype(), safetensors::Dtype::BF16);
        assert_eq!(st.tensor("f").unwrap().dtype(), safetensors::Dtype::F32);
        assert_eq!(Parameters::from_safetensors(&bytes).unwrap(), p);
    }

    #[test]
    fn layout_mismatch_is_an_error() {
        let mut p = sample();
        let q = Parameters::new(vec![NamedTensor {
            name: "a".into(),
            shape: vec![4],
            data: vec![0.0; 4],
        }])
        .unwrap();
        assert!(p.add_scaled(&q, 1.0).is_err());
    }

    proptest! {
        #[test]
        fn safetensors_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Parameters::from_safetensors(&bytes);
        }

        #[test]
        fn difference_then_add_is_identity(vals in proptest::collection::vec(-1e3f32..1e3, 1..64)) {
            let n = vals.len();
            let a = Parameters::new(vec![NamedTensor { name: "w".into(), shape: vec![n], data: vals.clone() }]).unwrap();
            let b = a.zeros_like();
            let mut d = a.difference(&b).unwrap();
            d.add_scaled(&b, 1.0).unwrap();
            prop_assert_eq!(d, a);
        }
    }
}
