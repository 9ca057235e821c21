//! Loaders for user data: MNIST IDX files and CSV.

use std::path::{Path, PathBuf};

use crate::dataset::{Dataset, DatasetSplit};
use crate::{ModelError, Result};

/// Largest number of classes a CSV label may imply; guards against a feature
/// column mistaken for the label.
const MAX_CSV_CLASSES: u32 = 10_000;

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ModelError::NotFound {
                path: path.to_owned(),
            }
        } else {
            ModelError::Io {
                path: path.to_owned(),
                source,
            }
        }
    })
}

/// Finds `stem` in `dir` under either MNIST naming (`train-images-idx3-ubyte`
/// or `train-images.idx3-ubyte`).
fn find_idx(dir: &Path, prefix: &str, kind: &str) -> Result<PathBuf> {
    let candidates = [
        dir.join(format!("{prefix}-{kind}")),
        dir.join(format!("{prefix}.{kind}")),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| ModelError::NotFound {
            path: candidates[0].clone(),
        })
}

/// Parses an IDX file of unsigned bytes: returns the dimensions and the data.
fn parse_idx(path: &Path, bytes: &[u8], want_dims: u8) -> Result<(Vec<usize>, Vec<u8>)> {
    let bad = |reason: String| ModelError::Malformed {
        path: path.to_owned(),
        line: 0,
        reason,
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("not an IDX file (bad magic number)".into()));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "element type 0x{:02x} is not unsigned byte (0x08)",
            bytes[2]
        )));
    }
    if bytes[3] != want_dims {
        return Err(bad(format!(
            "has {} dimensions, expected {want_dims}",
            bytes[3]
        )));
    }
    let header = 4 + 4 * usize::from(want_dims);
    if bytes.len() < header {
        return Err(bad("truncated header".into()));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad("dimensions overflow".into()))?;
    let data = &bytes[header..];
    if data.len() != expected {
        return Err(bad(format!(
            "dimensions {dims:?} need {expected} bytes of data, file has {}",
            data.len()
        )));
    }
    Ok((dims, data.to_vec()))
}

fn idx_pair(dir: &Path, prefix: &str) -> Result<Dataset> {
    let img_path = find_idx(dir, &format!("{prefix}-images"), "idx3-ubyte")?;
    let lbl_path = find_idx(dir, &format!("{prefix}-labels"), "idx1-ubyte")?;
    let (idims, pixels) = parse_idx(&img_path, &read(&img_path)?, 3)?;
    let (ldims, labels) = parse_idx(&lbl_path, &read(&lbl_path)?, 1)?;
    if idims[0] != ldims[0] {
        return Err(ModelError::Malformed {
            path: lbl_path,
            line: 0,
            reason: format!("{} labels for {} images", ldims[0], idims[0]),
        });
    }
    let (h, w) = (idims[1], idims[2]);
    let num_classes = labels
        .iter()
        .copied()
        .max()
        .map_or(0, |m| usize::from(m) + 1);
    Dataset::new(
        pixels.iter().map(|&p| f32::from(p) / 255.0).collect(),
        labels.iter().map(|&l| u32::from(l)).collect(),
        h * w,
        num_classes.max(10),
        Some((1, h, w)),
    )
}

/// MNIST (or Fashion-MNIST, KMNIST…) IDX files in `dir`: `train-*` for
/// training, `t10k-*` as the test split.
pub(crate) fn mnist_idx(dir: &Path) -> Result<DatasetSplit> {
    if !dir.is_dir() {
        return Err(ModelError::NotFound {
            path: dir.to_owned(),
        });
    }
    let train = idx_pair(dir, "train")?;
    let test = idx_pair(dir, "t10k")?;
    if train.num_features() != test.num_features() {
        return Err(ModelError::Unsuitable(format!(
            "train images have {} pixels, test images {}",
            train.num_features(),
            test.num_features()
        )));
    }
    let classes = train.num_classes().max(test.num_classes());
    let rebuild = |d: Dataset| {
        let shape = d.image_shape();
        let n = d.num_features();
        Dataset::new(
            d.features().to_vec(),
            d.labels().to_vec(),
            n,
            classes,
            shape,
        )
    };
    Ok(DatasetSplit {
        train: rebuild(train)?,
        test: rebuild(test)?,
    })
}

/// A CSV file whose first column is an integer class label `0..K` and whose
/// other columns are numeric features. A header row is detected (its first
/// field is not a number) and skipped. Features are standardised per column
/// (zero mean, unit variance) so models train on any scale.
pub(crate) fn csv(path: &Path) -> Result<Dataset> {
    let bytes = read(path)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes.as_slice());
    let mut features = Vec::new();
    let mut labels = Vec::new();
    let mut width: Option<usize> = None;
    for (i, record) in reader.records().enumerate() {
        let line = (i + 1) as u64;
        let bad = |reason: String| ModelError::Malformed {
            path: path.to_owned(),
            line,
            reason,
        };
        let record = record.map_err(|e| bad(e.to_string()))?;
        if record.iter().all(str::is_empty) {
            continue;
        }
        let first = record.get(0).unwrap_or_default();
        if i == 0 && first.parse::<f64>().is_err() {
            continue; // header
        }
        let label: u32 = first.parse().map_err(|_| {
            bad(format!(
                "label `{first}` in column 1 is not a non-negative integer"
            ))
        })?;
        if label >= MAX_CSV_CLASSES {
            return Err(bad(format!(
                "label {label} is too large (labels must be 0..{MAX_CSV_CLASSES})"
            )));
        }
        let n = record.len() - 1;
        match width {
            None if n == 0 => return Err(bad("row has a label but no features".into())),
            None => width = Some(n),
            Some(w) if w != n => {
                return Err(bad(format!("row has {n} features, earlier rows have {w}")));
            }
            Some(_) => {}
        }
        for (col, field) in record.iter().enumerate().skip(1) {
            let v: f32 = field
                .parse()
                .map_err(|_| bad(format!("column {}: `{field}` is not a number", col + 1)))?;
            if !v.is_finite() {
                return Err(bad(format!("column {}: `{field}` is not finite", col + 1)));
            }
            features.push(v);
        }
        labels.push(label);
    }
    let Some(width) = width else {
        return Err(ModelError::Malformed {
            path: path.to_owned(),
            line: 0,
            reason: "no data rows".into(),
        });
    };
    standardise(&mut features, width);
    let num_classes = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
    Dataset::new(features, labels, width, num_classes.max(2), None)
}

/// Column-wise zero mean, unit variance (constant columns become 0).
fn standardise(features: &mut [f32], width: usize) {
    let rows = features.len() / width;
    for c in 0..width {
        let col = || {
            features
                .iter()
                .skip(c)
                .step_by(width)
                .map(|&v| f64::from(v))
        };
        let mean = col().sum::<f64>() / rows as f64;
        let var = col().map(|v| (v - mean).powi(2)).sum::<f64>() / rows as f64;
        let sd = if var > 0.0 { var.sqrt() } else { 1.0 };
        for v in features.iter_mut().skip(c).step_by(width) {
            *v = ((f64::from(*v) - mean) / sd) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
        p
    }

    #[test]
    fn csv_with_header_loads_and_standardises() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "d.csv", b"label,a,b\n0,1,10\n1,3,10\n2,5,10\n");
        let d = csv(&p).unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d.num_features(), 2);
        assert_eq!(d.num_classes(), 3);
        assert!((d.features()[0] + 1.2247).abs() < 1e-3);
        assert_eq!(d.features()[1], 0.0);
    }

    #[test]
    fn csv_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "bad.csv", b"0,1,2\n1,x,3\n");
        let e = csv(&p).unwrap_err().to_string();
        assert!(
            e.contains(":2:") && e.contains("`x` is not a number"),
            "{e}"
        );
        let p = write(dir.path(), "ragged.csv", b"0,1,2\n1,3\n");
        assert!(csv(&p).unwrap_err().to_string().contains("1 features"));
        let p = write(dir.path(), "neg.csv", b"0,1\n-1,2\n");
        assert!(csv(&p).unwrap_err().to_string().contains("non-negative"));
        assert!(matches!(
            csv(&dir.path().join("missing.csv")),
            Err(ModelError::NotFound { .. })
        ));
    }

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn mnist_idx_loads_and_rejects_truncation() {
        let dir = tempfile::tempdir().unwrap();
        for p in ["train", "t10k"] {
            write(
                dir.path(),
                &format!("{p}-images-idx3-ubyte"),
                &idx(&[2, 2, 2], &[0, 255, 0, 255, 255, 0, 255, 0]),
            );
            write(
                dir.path(),
                &format!("{p}-labels-idx1-ubyte"),
                &idx(&[2], &[3, 7]),
            );
        }
        let s = mnist_idx(dir.path()).unwrap();
        assert_eq!(s.train.len(), 2);
        assert_eq!(s.train.image_shape(), Some((1, 2, 2)));
        assert_eq!(s.test.labels(), &[3, 7]);
        write(dir.path(), "t10k-labels-idx1-ubyte", &idx(&[3], &[3, 7]));
        assert!(matches!(
            mnist_idx(dir.path()),
            Err(ModelError::Malformed { .. })
        ));
    }
}
