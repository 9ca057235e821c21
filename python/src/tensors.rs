//! Tensors across the boundary: `(name, shape, little-endian f32 bytes)`,
//! which NumPy and torch read and write without a copy of their own.

use tg_diag::{UserError, invalid};
use tg_types::{NamedTensor, Parameters};

/// One tensor as Python passes it.
pub(crate) type Wire = (String, Vec<usize>, Vec<u8>);

/// Python's tensors as the engine's parameters, every size checked.
pub(crate) fn to_params(tensors: Vec<Wire>) -> Result<Parameters, UserError> {
    let mut out = Vec::with_capacity(tensors.len());
    for (name, shape, bytes) in tensors {
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|n| n.checked_mul(4).is_some())
            .ok_or_else(|| {
                invalid(
                    format!("tensor `{name}` has shape {shape:?}, too large to hold"),
                    "its number of values overflows",
                    "check the tensor's shape",
                )
            })?;
        if bytes.len() != 4 * n {
            return Err(invalid(
                format!(
                    "tensor `{name}` of shape {shape:?} needs {} bytes of f32, got {}",
                    4 * n,
                    bytes.len()
                ),
                "its data does not fill its shape",
                "pass each array as float32 in C order (np.ascontiguousarray(a, dtype=np.float32))",
            ));
        }
        let data = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.push(NamedTensor { name, shape, data });
    }
    Parameters::new(out).map_err(|e| {
        invalid(
            format!("the model's tensors are not a valid parameter set: {e}"),
            "names must be unique and shapes must match the data",
            "check the state_dict or the list of arrays",
        )
    })
}

/// The engine's parameters as Python receives them.
pub(crate) fn to_wire(p: &Parameters) -> Vec<Wire> {
    p.tensors()
        .iter()
        .map(|t| {
            let bytes = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (t.name.clone(), t.shape.clone(), bytes)
        })
        .collect()
}

/// Partition `partition_id` of `num_partitions` of the bundled digits, and
/// the shared held-out split: `((features as a [n, 64] tensor), labels)`
/// for training, then for testing.
pub(crate) fn digits(
    partition_id: usize,
    num_partitions: usize,
    partition: &str,
    seed: u64,
) -> Result<(Wire, Vec<u32>, Wire, Vec<u32>), UserError> {
    if partition_id >= num_partitions {
        return Err(invalid(
            format!("partition_id = {partition_id} with num_partitions = {num_partitions}"),
            "partitions are numbered from 0 to num_partitions − 1",
            "pass a partition_id below num_partitions",
        ));
    }
    let spec: tg_types::spec::PartitionSpec = partition.parse().map_err(|e| {
        invalid(
            format!("partition = \"{partition}\""),
            format!("{e}"),
            "use \"iid\", \"dirichlet:0.5\" or \"shards:2\"",
        )
    })?;
    let split = tg_model::load_dataset(&tg_types::spec::DatasetSpec::Digits)
        .map_err(tg_diag::from_model)?;
    let parts = tg_model::partition::partition(split.train.labels(), num_partitions, spec, seed)
        .map_err(tg_diag::from_model)?;
    let mine = split.train.subset(&parts[partition_id]);
    let as_wire = |d: &tg_model::Dataset| -> Wire {
        let bytes = d.features().iter().flat_map(|v| v.to_le_bytes()).collect();
        (
            "features".to_owned(),
            vec![d.len(), d.num_features()],
            bytes,
        )
    };
    Ok((
        as_wire(&mine),
        mine.labels().to_vec(),
        as_wire(&split.test),
        split.test.labels().to_vec(),
    ))
}
