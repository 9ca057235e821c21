//! The robot API's offline package: a round's update, clipped by the
//! engine and written as a self-describing safetensors file.

use std::collections::HashMap;

use pyo3::prelude::*;
use tg_diag::{Code, UserError};

use crate::errors::raise;
use crate::tensors::{Wire, to_params, to_wire};

/// What every package says about itself.
const FORMAT: &str = "tensorguard-edge-package/1";

fn bad(what: impl Into<String>, why: impl Into<String>, fix: impl Into<String>) -> UserError {
    UserError::new(Code::InvalidValue, what, why, fix)
}

/// `update` (local − global) clipped to L2 norm `clip`, with its example
/// count and (when the robot names them) its tasks as JSON, as safetensors
/// bytes. Whether it was clipped is said; by how much is not (that would
/// undo the clip).
#[pyfunction]
pub(crate) fn edge_package(
    py: Python<'_>,
    update: Vec<Wire>,
    examples: u64,
    clip: f64,
    tasks: String,
) -> PyResult<Vec<u8>> {
    if !(clip > 0.0 && clip.is_finite()) {
        return Err(raise(
            py,
            bad(
                format!("clip = {clip}"),
                "an update is clipped to an L2 norm that is a positive number",
                "pass e.g. clip=10.0",
            ),
        ));
    }
    if examples == 0 {
        return Err(raise(
            py,
            bad(
                "a package of zero examples",
                "an update needs at least one demonstration step",
                "add_demonstration() before process_round()",
            ),
        ));
    }
    let mut params = to_params(update).map_err(|e| raise(py, e))?;
    let norm = py.detach(|| params.l2_norm());
    if !norm.is_finite() {
        return Err(raise(
            py,
            bad(
                "the update's norm is not finite",
                "a value overflowed",
                "lower the learning rate",
            ),
        ));
    }
    let clipped = norm > clip;
    if clipped {
        py.detach(|| {
            params.scale((clip / norm) as f32);
            // f32 rounding may leave the norm a hair above the clip: shave it.
            while params.l2_norm() > clip {
                params.scale(1.0 - f32::EPSILON * 4.0);
            }
        });
    }
    let meta: HashMap<String, String> = [
        ("format", FORMAT.to_owned()),
        ("examples", examples.to_string()),
        ("clip", clip.to_string()),
        ("clipped", if clipped { "yes" } else { "no" }.to_owned()),
        ("tasks", tasks),
        (
            "masked",
            "no: masking needs a round's peers (connect to take part in one)".to_owned(),
        ),
        ("noised", "no".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let bytes = py
        .detach(|| params.to_safetensors_with(Some(meta)))
        .map_err(|e| {
            raise(
                py,
                bad(
                    format!("the package cannot be written: {e}"),
                    "safetensors refused it",
                    "check the model's names",
                ),
            )
        })?;
    Ok(bytes)
}

/// A package's update and metadata (untrusted bytes: checked).
#[pyfunction]
pub(crate) fn read_edge_package(
    py: Python<'_>,
    bytes: &[u8],
) -> PyResult<(Vec<Wire>, HashMap<String, String>)> {
    let not_one = |why: String| {
        raise(
            py,
            UserError::new(
                Code::DatasetMalformed,
                "not a TensorGuard edge package",
                why,
                "pass the bytes EdgeClient.process_round() returned",
            ),
        )
    };
    let meta =
        tg_types::Parameters::safetensors_metadata(bytes).map_err(|e| not_one(e.to_string()))?;
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(not_one(format!("its format is not {FORMAT}")));
    }
    let params =
        tg_types::Parameters::from_safetensors(bytes).map_err(|e| not_one(e.to_string()))?;
    Ok((to_wire(&params), meta))
}
