//! Parameters as they lie in a received frame, read without copying, and the
//! [`Lanes`] interface that aggregation folds from.
//!
//! Design decision: a tensor's values travel as one blob of little-endian
//! `f32`, so a decoder can either allocate exactly once
//! ([`crate::NamedTensor`]) or borrow the frame's bytes ([`TensorView`]) and
//! fold straight from them. Both types serialize identically; a test holds
//! them to it.

use serde::{Deserialize, Serialize};

use crate::{Parameters, ParamsError};

/// serde for `Vec<f32>` as one length-prefixed byte blob (little-endian).
pub mod f32_le {
    use serde::{Deserializer, Serializer};

    /// Writes the values as one byte string.
    pub fn serialize<S: Serializer>(v: &[f32], s: S) -> Result<S::Ok, S::Error> {
        #[cfg(target_endian = "little")]
        {
            s.serialize_bytes(bytemuck::cast_slice(v))
        }
        #[cfg(not(target_endian = "little"))]
        {
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            s.serialize_bytes(&bytes)
        }
    }

    /// Reads a byte string of length 4·n into n values (one allocation).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<f32>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a byte string of little-endian f32 values")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<f32>, E> {
                super::floats(v).map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<f32>, A::Error> {
                // Self-describing formats (JSON) write byte strings as arrays.
                let mut bytes = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    bytes.push(b);
                }
                super::floats(&bytes).map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_bytes(V)
    }
}

fn floats(bytes: &[u8]) -> Result<Vec<f32>, String> {
    if !bytes.len().is_multiple_of(4) {
        return Err(format!(
            "{} bytes of tensor data is not a whole number of f32 values",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Most tensors a parameter set may hold on the wire. Decoding refuses more
/// as it counts them, so a frame of empty tensors cannot make the receiver
/// allocate many times the frame's size (a tensor's header is a few bytes
/// on the wire and a few dozen in memory).
pub const MAX_TENSORS: usize = 16_384;
/// Most dimensions a tensor may have on the wire.
pub const MAX_RANK: usize = 16;
/// Most entries a per-participant list may have on the wire (shares,
/// sealed pairs, survivor sets, signed messages of a round): more than any
/// round has participants.
pub const MAX_PER_PARTICIPANT: usize = 65_536;

/// Sequence decoders that refuse more elements than a bound, counting as
/// they go (before growing for them).
pub mod bounded {
    use std::marker::PhantomData;

    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer};

    use super::{MAX_PER_PARTICIPANT, MAX_RANK, MAX_TENSORS};

    /// A parameter set's tensors: at most [`MAX_TENSORS`].
    pub fn tensors<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        seq(d, MAX_TENSORS, "tensors")
    }

    /// A list with at most one entry per round participant: at most
    /// [`MAX_PER_PARTICIPANT`].
    pub fn per_participant<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        seq(d, MAX_PER_PARTICIPANT, "entries")
    }

    /// One evaluation's per-task counts: at most
    /// [`crate::tasks::MAX_EVALUATED_TASKS`].
    pub fn evaluated_tasks<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        seq(d, crate::tasks::MAX_EVALUATED_TASKS, "tasks")
    }

    /// A tensor's shape: at most [`MAX_RANK`] dimensions.
    pub fn shape<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<usize>, D::Error> {
        seq(d, MAX_RANK, "dimensions")
    }

    fn seq<'de, D, T>(d: D, max: usize, what: &'static str) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        struct V<T> {
            max: usize,
            what: &'static str,
            item: PhantomData<T>,
        }
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "at most {} {}", self.max, self.what)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
                let too_many = || A::Error::custom(format!("more than {} {}", self.max, self.what));
                if seq.size_hint().is_some_and(|n| n > self.max) {
                    return Err(too_many());
                }
                // The claimed length is the sender's word: reserve at most
                // 1 MiB for it up front, and grow only as elements arrive.
                let cap = (1 << 20) / std::mem::size_of::<T>().max(1);
                let mut out =
                    Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max).min(cap));
                while let Some(x) = seq.next_element()? {
                    if out.len() == self.max {
                        return Err(too_many());
                    }
                    out.push(x);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V {
            max,
            what,
            item: PhantomData,
        })
    }
}

/// One tensor borrowed from a frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorView<'a> {
    /// Name.
    pub name: String,
    /// Dimensions.
    #[serde(deserialize_with = "bounded::shape")]
    pub shape: Vec<usize>,
    /// Values: little-endian `f32`, row-major.
    #[serde(with = "bytes_borrowed")]
    pub data: &'a [u8],
}

/// serde for `&[u8]` as one byte blob, borrowed from the input.
pub mod bytes_borrowed {
    use serde::{Deserializer, Serializer};

    /// Writes the bytes as one byte string.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    /// Borrows a byte string from the input.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<&'de [u8], D::Error> {
        <&'de [u8] as serde::Deserialize>::deserialize(d)
    }
}

/// serde for `Vec<u8>` as one byte blob (postcard would otherwise write it
/// element by element).
pub mod bytes_owned {
    use serde::{Deserializer, Serializer};

    /// Writes the bytes as one byte string.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    /// Reads a byte string (one allocation).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_bytes(V)
    }
}

/// A parameter set borrowed from a frame (same wire form as [`Parameters`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ParametersView<'a> {
    /// Tensors, in the order they were sent.
    #[serde(borrow, deserialize_with = "bounded::tensors")]
    pub tensors: Vec<TensorView<'a>>,
}

impl ParametersView<'_> {
    /// Checks every tensor's byte length against its shape.
    pub fn check_shapes(&self) -> Result<(), ParamsError> {
        for t in &self.tensors {
            let expected = t
                .shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .unwrap_or(usize::MAX);
            if expected.checked_mul(4) != Some(t.data.len()) {
                return Err(ParamsError::ShapeMismatch {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    expected,
                    actual: t.data.len() / 4,
                });
            }
        }
        Ok(())
    }
}

/// Something whose values can be folded lane by lane, in layout order.
pub trait Lanes {
    /// (name, shape) of each tensor, in order.
    fn layout(&self) -> impl Iterator<Item = (&str, &[usize])> + '_;
    /// Every value in layout order.
    fn lanes(&self) -> impl Iterator<Item = f32> + '_;
    /// How many values [`Lanes::lanes`] yields.
    fn num_lanes(&self) -> usize;
    /// Euclidean norm, accumulated in f64 in layout order.
    fn l2_norm(&self) -> f64 {
        self.lanes()
            .map(|v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt()
    }
    /// True when every value is finite.
    fn all_finite(&self) -> bool {
        self.lanes().all(f32::is_finite)
    }
}

impl Lanes for Parameters {
    fn layout(&self) -> impl Iterator<Item = (&str, &[usize])> + '_ {
        self.tensors()
            .iter()
            .map(|t| (t.name.as_str(), t.shape.as_slice()))
    }
    fn lanes(&self) -> impl Iterator<Item = f32> + '_ {
        self.values()
    }
    fn num_lanes(&self) -> usize {
        self.num_values()
    }
}

impl Lanes for ParametersView<'_> {
    fn layout(&self) -> impl Iterator<Item = (&str, &[usize])> + '_ {
        self.tensors
            .iter()
            .map(|t| (t.name.as_str(), t.shape.as_slice()))
    }
    fn num_lanes(&self) -> usize {
        self.tensors.iter().map(|t| t.data.len() / 4).sum()
    }
    #[inline]
    fn lanes(&self) -> impl Iterator<Item = f32> + '_ {
        self.tensors.iter().flat_map(|t| {
            t.data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NamedTensor;

    #[test]
    fn views_and_owned_parameters_share_one_wire_form() {
        let p = Parameters::new(vec![
            NamedTensor {
                name: "a".into(),
                shape: vec![2, 2],
                data: vec![1.0, -2.5, f32::MIN_POSITIVE, 3.0e9],
            },
            NamedTensor {
                name: "b".into(),
                shape: vec![1],
                data: vec![0.125],
            },
        ])
        .unwrap();
        let bytes = postcard::to_stdvec(&p).unwrap();
        let view: ParametersView = postcard::from_bytes(&bytes).unwrap();
        view.check_shapes().unwrap();
        assert_eq!(postcard::to_stdvec(&view).unwrap(), bytes);
        assert!(view.lanes().eq(p.values()));
        assert_eq!(Lanes::l2_norm(&view), p.l2_norm());
        let back: Parameters = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, p);
        // 4·n + 4 values' bytes for an n-value shape, and a ragged blob, are refused.
        let bad = ParametersView {
            tensors: vec![TensorView {
                name: "a".into(),
                shape: vec![1],
                data: &[0; 8],
            }],
        };
        assert!(bad.check_shapes().is_err());
        let ragged = postcard::to_stdvec(&ParametersView {
            tensors: vec![TensorView {
                name: "a".into(),
                shape: vec![1],
                data: &[0; 5],
            }],
        })
        .unwrap();
        assert!(postcard::from_bytes::<Parameters>(&ragged).is_err());
    }
}
