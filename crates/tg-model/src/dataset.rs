//! In-memory labelled datasets and the fixed train/test split.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tg_types::spec::DatasetSpec;

use crate::{ModelError, Result, loaders};

/// Seed of the fixed held-out split. Deliberately *not* the run seed: every
/// run, whatever its `--seed`, is scored on the same test examples.
pub const SPLIT_SEED: u64 = 0x7e57_5eed;

/// Fraction of examples held out for testing when a source has no test split.
pub const TEST_FRACTION: f64 = 0.2;

/// A labelled dataset: `len × num_features` features (row-major) and labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    features: Vec<f32>,
    labels: Vec<u32>,
    num_features: usize,
    num_classes: usize,
    image: Option<(usize, usize, usize)>,
}

impl Dataset {
    /// Builds a dataset, checking that sizes agree and labels are below `num_classes`.
    pub fn new(
        features: Vec<f32>,
        labels: Vec<u32>,
        num_features: usize,
        num_classes: usize,
        image: Option<(usize, usize, usize)>,
    ) -> Result<Self> {
        if num_features == 0 || features.len() != labels.len() * num_features {
            return Err(ModelError::Unsuitable(format!(
                "{} feature values do not form {} rows of {} features",
                features.len(),
                labels.len(),
                num_features
            )));
        }
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= num_classes) {
            return Err(ModelError::Unsuitable(format!(
                "label {bad} is outside 0..{num_classes}"
            )));
        }
        if let Some((c, h, w)) = image
            && c * h * w != num_features
        {
            return Err(ModelError::Unsuitable(format!(
                "image shape {c}×{h}×{w} does not match {num_features} features"
            )));
        }
        Ok(Self {
            features,
            labels,
            num_features,
            num_classes,
            image,
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Features per example.
    pub fn num_features(&self) -> usize {
        self.num_features
    }

    /// Number of classes (labels are `0..num_classes`).
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// `(channels, height, width)` when examples are images.
    pub fn image_shape(&self) -> Option<(usize, usize, usize)> {
        self.image
    }

    /// Labels.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Row-major features.
    pub fn features(&self) -> &[f32] {
        &self.features
    }

    /// The examples at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Self {
        let f = self.num_features;
        let mut features = Vec::with_capacity(indices.len() * f);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            features.extend_from_slice(&self.features[i * f..(i + 1) * f]);
            labels.push(self.labels[i]);
        }
        Self {
            features,
            labels,
            num_features: f,
            num_classes: self.num_classes,
            image: self.image,
        }
    }

    /// Splits off a fixed, seed-independent test set of `fraction` of the examples.
    pub fn split_fixed(self, fraction: f64) -> DatasetSplit {
        let mut idx: Vec<usize> = (0..self.len()).collect();
        idx.shuffle(&mut ChaCha8Rng::seed_from_u64(SPLIT_SEED));
        let n_test = ((self.len() as f64) * fraction).round() as usize;
        let (test, train) = idx.split_at(n_test);
        DatasetSplit {
            train: self.subset(train),
            test: self.subset(test),
        }
    }
}

/// A training set (to be partitioned among clients) and a held-out test set.
#[derive(Clone, Debug)]
pub struct DatasetSplit {
    /// Pooled training examples.
    pub train: Dataset,
    /// Held-out examples for evaluation.
    pub test: Dataset,
}

/// The UCI optical digits set (1,797 8×8 images, 10 classes) embedded in the
/// `smartcore` crate, scaled to [0, 1].
pub fn digits() -> Result<Dataset> {
    let raw = smartcore::dataset::digits::load_dataset();
    let features = raw.data.iter().map(|v| v / 16.0).collect();
    let labels = raw
        .target
        .iter()
        .map(|&t| {
            if t >= 0.0 && t.fract() == 0.0 && t < 10.0 {
                Ok(t as u32)
            } else {
                Err(ModelError::Unsuitable(format!(
                    "digits label {t} is not 0..9"
                )))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Dataset::new(features, labels, raw.num_features, 10, Some((1, 8, 8)))
}

/// Loads a dataset and its train/test split.
///
/// Digits and CSV hold out a fixed 20 % (seed-independent); MNIST uses its own
/// `t10k` test files.
pub fn load_dataset(spec: &DatasetSpec) -> Result<DatasetSplit> {
    match spec {
        DatasetSpec::Digits => Ok(digits()?.split_fixed(TEST_FRACTION)),
        DatasetSpec::MnistIdx(dir) => loaders::mnist_idx(dir),
        DatasetSpec::Csv(path) => Ok(loaders::csv(path)?.split_fixed(TEST_FRACTION)),
        other => Err(ModelError::Unsuitable(format!(
            "dataset `{other}` is not supported by this build"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_has_the_documented_shape_and_a_fixed_split() {
        let d = digits().unwrap();
        assert_eq!(d.len(), 1797);
        assert_eq!(d.num_features(), 64);
        assert!(d.features().iter().all(|v| (0.0..=1.0).contains(v)));
        let a = d.clone().split_fixed(0.2);
        let b = d.split_fixed(0.2);
        assert_eq!(a.test, b.test);
        assert_eq!(a.test.len(), 359);
        assert_eq!(a.train.len() + a.test.len(), 1797);
    }

    #[test]
    fn rejects_inconsistent_data() {
        assert!(Dataset::new(vec![0.0; 5], vec![0, 1], 2, 2, None).is_err());
        assert!(Dataset::new(vec![0.0; 4], vec![0, 2], 2, 2, None).is_err());
    }
}
