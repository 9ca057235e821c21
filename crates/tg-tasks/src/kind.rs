//! The task-kind trait, task inputs and outputs, and the kind registry.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{ChunkKind, ClassifyKind, EmbedKind, Models, TaskError};

/// A task's input: a kind name and its texts. Kinds read what they need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInput {
    /// Kind name (`embed`, `classify`, `chunk`).
    pub kind: String,
    /// The texts to work on, in order.
    pub texts: Vec<String>,
}

/// A label with its probabilities over [`crate::LABELS`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    /// Index into [`crate::LABELS`].
    pub label: u8,
    /// Softmax probabilities, one per label.
    pub probs: Vec<f32>,
}

/// A task's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TaskOutput {
    /// One unit-norm embedding per input text.
    Embeddings(Vec<Vec<f32>>),
    /// One label per input text.
    Labels(Vec<Label>),
    /// A chunked text: each chunk's byte range and its embedding, in order.
    ChunkEmbeddings {
        /// `(start, end)` byte offsets of each chunk in the input text.
        spans: Vec<(u32, u32)>,
        /// One embedding per chunk.
        vectors: Vec<Vec<f32>>,
    },
}

/// How a kind runs an input: on one worker, or fanned out into subtasks
/// whose outputs [`TaskKind::combine`] puts back together in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Run it as one task.
    Run,
    /// Run these subtasks and combine their outputs in this order.
    FanOut(Vec<TaskInput>),
}

/// A kind of task the compute network runs.
pub trait TaskKind: Send + Sync {
    /// Its name on the wire.
    fn name(&self) -> &'static str;
    /// Names of the models it needs loaded (capability records list them).
    fn models(&self) -> &'static [&'static str];
    /// Checks an input before any work: shape, sizes, UTF-8 content.
    fn validate(&self, input: &TaskInput) -> Result<(), TaskError>;
    /// How to run it; most kinds run as one task.
    fn plan(&self, input: &TaskInput) -> Result<Plan, TaskError> {
        self.validate(input)?;
        Ok(Plan::Run)
    }
    /// Runs a validated input.
    fn run(&self, models: &Models, input: &TaskInput) -> Result<TaskOutput, TaskError>;
    /// Puts a fanned-out plan's outputs back together, in plan order.
    fn combine(&self, input: &TaskInput, parts: Vec<TaskOutput>) -> Result<TaskOutput, TaskError> {
        let _ = input;
        match <[TaskOutput; 1]>::try_from(parts) {
            Ok([one]) => Ok(one),
            Err(_) => Err(TaskError::Malformed(format!(
                "{} does not fan out",
                self.name()
            ))),
        }
    }
    /// Whether two workers' outputs for the same input agree.
    fn agree(&self, a: &TaskOutput, b: &TaskOutput) -> bool;
    /// Whether an output has the shape this input calls for (counts,
    /// dimensions, finite values, unit norms, label ranges). A worker's
    /// output that fails this is invalid before any comparison.
    fn well_formed(&self, input: &TaskInput, out: &TaskOutput) -> bool;
}

static EMBED: EmbedKind = EmbedKind;
static CLASSIFY: ClassifyKind = ClassifyKind;
static CHUNK: ChunkKind = ChunkKind;

/// Every kind this node knows.
pub fn kinds() -> [&'static dyn TaskKind; 3] {
    [&EMBED, &CLASSIFY, &CHUNK]
}

/// The kind called `name`.
pub fn kind_by_name(name: &str) -> Result<&'static dyn TaskKind, TaskError> {
    kinds()
        .into_iter()
        .find(|k| k.name() == name)
        .ok_or_else(|| TaskError::UnknownKind(name.chars().take(64).collect()))
}

/// Whether `v` holds `n` finite unit-norm vectors of `dim` values.
pub(crate) fn unit_vectors(v: &[Vec<f32>], n: usize, dim: usize) -> bool {
    v.len() == n
        && v.iter().all(|x| {
            x.len() == dim
                && x.iter().all(|f| f.is_finite())
                && (x.iter().map(|f| f * f).sum::<f32>().sqrt() - 1.0).abs() < 1e-3
        })
}

/// SHA-256 of an output's canonical encoding (JSON, f32s as written by serde).
pub fn output_digest(out: &TaskOutput) -> [u8; 32] {
    let bytes = serde_json::to_vec(out).unwrap_or_default();
    Sha256::digest(bytes).into()
}

/// Shared input checks: a non-empty list of at most `max_texts` texts of at
/// most `max_bytes` each, with no NUL bytes.
pub(crate) fn check_texts(
    input: &TaskInput,
    max_texts: usize,
    max_bytes: usize,
) -> Result<(), TaskError> {
    if input.texts.is_empty() {
        return Err(TaskError::Malformed("no texts".into()));
    }
    if input.texts.len() > max_texts {
        return Err(TaskError::Oversize {
            what: "number of texts",
            got: input.texts.len(),
            max: max_texts,
        });
    }
    for t in &input.texts {
        if t.len() > max_bytes {
            return Err(TaskError::Oversize {
                what: "text bytes",
                got: t.len(),
                max: max_bytes,
            });
        }
        if t.contains('\0') {
            return Err(TaskError::Malformed("a text contains a NUL byte".into()));
        }
        if t.trim().is_empty() {
            return Err(TaskError::Malformed("a text is empty".into()));
        }
    }
    Ok(())
}
