//! Text embedding with all-MiniLM-L6-v2: BERT, mean pooling over real tokens,
//! then L2 normalisation — what sentence-transformers does for this model.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::kind::check_texts;
use crate::{
    MAX_TEXT_BYTES, MAX_TEXTS, MINILM, MINILM_NAME, Models, TaskError, TaskInput, TaskKind,
    TaskOutput,
};

/// Two embeddings of the same text agree when their cosine is at least this.
///
/// Candle and PyTorch differ by ~1e-7 in cosine on this model; a perturbed
/// result (noise of 1% of the norm per coordinate) falls below 0.99.
pub const EMBED_COSINE_BOUND: f32 = 0.999;

/// Dimensions of a MiniLM embedding.
pub const EMBED_DIM: usize = 384;

/// The tokens the model reads per text (sentence-transformers' `max_seq_length`).
const MAX_TOKENS: usize = 256;

/// A loaded MiniLM: tokenizer and weights, verified against their pins.
pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
}

impl std::fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MiniLm")
    }
}

impl MiniLm {
    /// Verifies `root/all-MiniLM-L6-v2`'s files against their pinned hashes and loads them.
    pub fn load(root: &Path) -> Result<Self, TaskError> {
        MINILM.verify(root)?;
        let dir = root.join(MINILM.dir);
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read(&p).map_err(|source| TaskError::Io { path: p, source })
        };
        let config: Config = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| TaskError::Inference(format!("config.json: {e}")))?;
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|e| TaskError::Inference(format!("tokenizer.json: {e}")))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| TaskError::Inference(format!("tokenizer truncation: {e}")))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        let weights = read("model.safetensors")?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)?;
        let model = BertModel::load(vb, &config)?;
        Ok(Self { model, tokenizer })
    }

    /// Embeds a batch of texts: one unit-norm 384-d vector each, in order.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, TaskError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| TaskError::Inference(format!("tokenizer: {e}")))?;
        let n = enc.len();
        let len = enc.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(n * len);
        let mut types = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        for e in &enc {
            ids.extend_from_slice(e.get_ids());
            types.extend_from_slice(e.get_type_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        let dev = Device::Cpu;
        let ids = Tensor::from_vec(ids, (n, len), &dev)?;
        let types = Tensor::from_vec(types, (n, len), &dev)?;
        let mask = Tensor::from_vec(mask, (n, len), &dev)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?; // (n, len, 384)
        let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (n, len, 1)
        let summed = hidden.broadcast_mul(&m)?.sum(1)?; // (n, 384)
        let counts = m.sum(1)?.clamp(1e-9f32, f32::MAX)?; // (n, 1)
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12f32, f32::MAX)?;
        let unit = mean.broadcast_div(&norm)?;
        Ok(unit.to_vec2::<f32>()?)
    }
}

/// Cosine of two vectors (0 when either is zero or their lengths differ).
pub(crate) fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 || !ab.is_finite() {
        return 0.0;
    }
    (ab / (aa.sqrt() * bb.sqrt())) as f32
}

/// Whether two lists of vectors agree pairwise to [`EMBED_COSINE_BOUND`].
pub(crate) fn vectors_agree(a: &[Vec<f32>], b: &[Vec<f32>]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| cosine(x, y) >= EMBED_COSINE_BOUND)
}

/// `embed`: sentence embeddings with all-MiniLM-L6-v2.
#[derive(Debug)]
pub struct EmbedKind;

impl TaskKind for EmbedKind {
    fn name(&self) -> &'static str {
        "embed"
    }
    fn models(&self) -> &'static [&'static str] {
        &[MINILM_NAME]
    }
    fn validate(&self, input: &TaskInput) -> Result<(), TaskError> {
        check_texts(input, MAX_TEXTS, MAX_TEXT_BYTES)
    }
    fn run(&self, models: &Models, input: &TaskInput) -> Result<TaskOutput, TaskError> {
        self.validate(input)?;
        Ok(TaskOutput::Embeddings(
            models.minilm()?.embed(&input.texts)?,
        ))
    }
    fn agree(&self, a: &TaskOutput, b: &TaskOutput) -> bool {
        match (a, b) {
            (TaskOutput::Embeddings(x), TaskOutput::Embeddings(y)) => vectors_agree(x, y),
            _ => false,
        }
    }
    fn well_formed(&self, input: &TaskInput, out: &TaskOutput) -> bool {
        matches!(out, TaskOutput::Embeddings(v) if crate::kind::unit_vectors(v, input.texts.len(), EMBED_DIM))
    }
}
