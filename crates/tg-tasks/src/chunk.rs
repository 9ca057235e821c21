//! Text chunking: word windows with overlap that prefer to end at a sentence
//! boundary, fanned out as `embed` subtasks and put back together in order.

use crate::embed::vectors_agree;
use crate::kind::check_texts;
use crate::{
    MAX_CHUNK_INPUT_BYTES, MINILM_NAME, Models, Plan, TaskError, TaskInput, TaskKind, TaskOutput,
};

/// How to cut a text into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkParams {
    /// Most words per chunk (MiniLM reads 256 word pieces; 128 words stay inside it).
    pub max_words: usize,
    /// Words repeated at the start of the next chunk.
    pub overlap_words: usize,
}

impl Default for ChunkParams {
    fn default() -> Self {
        Self {
            max_words: 128,
            overlap_words: 16,
        }
    }
}

/// One chunk: its byte span in the text and the text itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Byte offset of its first character.
    pub start: usize,
    /// Byte offset just past its last character.
    pub end: usize,
    /// The chunk's text (`&text[start..end]`).
    pub text: String,
}

/// Chunks per `embed` subtask when a `chunk` task fans out.
pub const CHUNKS_PER_SUBTASK: usize = 8;

/// Cuts `text` into windows of at most `max_words` words, each starting
/// `overlap_words` before the previous one ended, and ending at the last
/// sentence end (`.`, `!`, `?` or a newline) in its second half when there is one.
pub fn chunk_text(text: &str, p: ChunkParams) -> Vec<Chunk> {
    let max = p.max_words.max(1);
    let overlap = p.overlap_words.min(max.saturating_sub(1));
    // Word spans, and whether each word ends a sentence.
    let mut words: Vec<(usize, usize, bool)> = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                words.push((s, i, false));
            }
            if c == '\n'
                && let Some(w) = words.last_mut()
            {
                w.2 = true;
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        words.push((s, text.len(), true));
    }
    for w in &mut words {
        if text[w.0..w.1].ends_with(['.', '!', '?']) {
            w.2 = true;
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let hard_end = (i + max).min(words.len());
        let mut end = hard_end;
        if hard_end < words.len()
            && let Some(k) = (i + max / 2..hard_end).rev().find(|&k| words[k].2)
        {
            end = k + 1;
        }
        let (s, e) = (words[i].0, words[end - 1].1);
        out.push(Chunk {
            start: s,
            end: e,
            text: text[s..e].to_string(),
        });
        if end >= words.len() {
            break;
        }
        i = end.saturating_sub(overlap).max(i + 1);
    }
    out
}

/// `chunk`: splits one long text into chunks and embeds each, in order.
#[derive(Debug)]
pub struct ChunkKind;

impl ChunkKind {
    fn chunks(input: &TaskInput) -> Vec<Chunk> {
        input
            .texts
            .first()
            .map(|t| chunk_text(t, ChunkParams::default()))
            .unwrap_or_default()
    }
}

impl TaskKind for ChunkKind {
    fn name(&self) -> &'static str {
        "chunk"
    }
    fn models(&self) -> &'static [&'static str] {
        &[MINILM_NAME]
    }
    fn validate(&self, input: &TaskInput) -> Result<(), TaskError> {
        if input.texts.len() != 1 {
            return Err(TaskError::Malformed(format!(
                "chunk takes one text, got {}",
                input.texts.len()
            )));
        }
        check_texts(input, 1, MAX_CHUNK_INPUT_BYTES)
    }
    fn plan(&self, input: &TaskInput) -> Result<Plan, TaskError> {
        self.validate(input)?;
        let chunks = Self::chunks(input);
        // A chunk of long "words" (URLs, base64, text without spaces) could
        // exceed what an embed subtask accepts: refuse it here, at submission.
        if let Some(c) = chunks.iter().find(|c| c.text.len() > crate::MAX_TEXT_BYTES) {
            return Err(TaskError::Oversize {
                what: "chunk bytes (text with too few spaces)",
                got: c.text.len(),
                max: crate::MAX_TEXT_BYTES,
            });
        }
        Ok(Plan::FanOut(
            chunks
                .chunks(CHUNKS_PER_SUBTASK)
                .map(|g| TaskInput {
                    kind: "embed".into(),
                    texts: g.iter().map(|c| c.text.clone()).collect(),
                })
                .collect(),
        ))
    }
    fn run(&self, models: &Models, input: &TaskInput) -> Result<TaskOutput, TaskError> {
        let Plan::FanOut(parts) = self.plan(input)? else {
            return Err(TaskError::Malformed("chunk plan".into()));
        };
        let m = models.minilm()?;
        let mut outs = Vec::with_capacity(parts.len());
        for p in parts {
            outs.push(TaskOutput::Embeddings(m.embed(&p.texts)?));
        }
        self.combine(input, outs)
    }
    fn combine(&self, input: &TaskInput, parts: Vec<TaskOutput>) -> Result<TaskOutput, TaskError> {
        let chunks = Self::chunks(input);
        let mut vectors = Vec::with_capacity(chunks.len());
        for p in parts {
            match p {
                TaskOutput::Embeddings(v) => vectors.extend(v),
                _ => {
                    return Err(TaskError::Malformed(
                        "a chunk subtask returned no embeddings".into(),
                    ));
                }
            }
        }
        if vectors.len() != chunks.len() {
            return Err(TaskError::Malformed(format!(
                "{} chunks but {} embeddings came back",
                chunks.len(),
                vectors.len()
            )));
        }
        let spans = chunks
            .iter()
            .map(|c| (c.start as u32, c.end as u32))
            .collect();
        Ok(TaskOutput::ChunkEmbeddings { spans, vectors })
    }
    fn agree(&self, a: &TaskOutput, b: &TaskOutput) -> bool {
        match (a, b) {
            (
                TaskOutput::ChunkEmbeddings {
                    spans: s1,
                    vectors: v1,
                },
                TaskOutput::ChunkEmbeddings {
                    spans: s2,
                    vectors: v2,
                },
            ) => s1 == s2 && vectors_agree(v1, v2),
            _ => false,
        }
    }
    fn well_formed(&self, input: &TaskInput, out: &TaskOutput) -> bool {
        let n = Self::chunks(input).len();
        matches!(out, TaskOutput::ChunkEmbeddings { spans, vectors } if spans.len() == n && crate::kind::unit_vectors(vectors, n, crate::embed::EMBED_DIM))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_text_is_one_chunk() {
        let c = chunk_text("One sentence. Two.", ChunkParams::default());
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].text, "One sentence. Two.");
    }

    #[test]
    fn windows_overlap_and_prefer_sentence_ends() {
        let text = (0..50)
            .map(|i| {
                if i % 7 == 6 {
                    format!("w{i}.")
                } else {
                    format!("w{i}")
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        let c = chunk_text(
            &text,
            ChunkParams {
                max_words: 10,
                overlap_words: 2,
            },
        );
        assert!(c.len() > 4);
        assert!(c[0].text.ends_with("w6."), "{:?}", c[0].text);
        assert!(c[1].text.starts_with("w5 "), "{:?}", c[1].text);
        assert_eq!(c.last().map(|x| x.end), Some(text.len()));
    }

    proptest! {
        #[test]
        fn chunks_cover_every_word_in_order(words in proptest::collection::vec("[a-zé.!?]{1,8}", 1..400), max in 1usize..40, ov in 0usize..10) {
            let text = words.join(" ");
            let c = chunk_text(&text, ChunkParams { max_words: max, overlap_words: ov });
            prop_assert!(!c.is_empty());
            prop_assert_eq!(c[0].start, 0);
            prop_assert_eq!(c.last().map(|x| x.end), Some(text.len()));
            for w in c.windows(2) {
                prop_assert!(w[1].start > w[0].start);
                prop_assert!(w[1].start <= w[0].end + 1);
            }
            for ch in &c {
                prop_assert!(ch.text.split_whitespace().count() <= max);
                prop_assert_eq!(&text[ch.start..ch.end], ch.text.as_str());
            }
        }
    }
}
