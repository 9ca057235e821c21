//! The compute network's task kinds, run on CPU by candle.
//!
//! Design decision: a task is *data in, data out, checked by agreement*. A
//! [`TaskKind`] validates its input before any work, runs it against models
//! loaded lazily from pinned, content-addressed artifacts ([`artifact`]), and
//! says when two workers' outputs agree ([`TaskKind::agree`]) — embeddings by
//! cosine, since engines differ in the last bits, so redundancy can verify a
//! result without trusting either worker. Adding a kind is one file plus one
//! line in [`kinds`].
//!
//! This crate is pure: no tokio, libp2p or axum. The network, assignment,
//! receipts and resource caps live in `tg-compute`.

pub mod artifact;
mod chunk;
mod classify;
mod embed;
mod error;
mod kind;
mod models;

pub use artifact::{ArtifactFile, ArtifactId, MINILM, MINILM_NAME, ModelSpec};
pub use chunk::{Chunk, ChunkKind, ChunkParams, chunk_text};
pub use classify::{ClassifyKind, LABELS};
pub use embed::{EMBED_COSINE_BOUND, EMBED_DIM, EmbedKind, MiniLm};
pub use error::TaskError;
pub use kind::{Label, Plan, TaskInput, TaskKind, TaskOutput, kind_by_name, kinds, output_digest};
pub use models::Models;

/// Most texts one task may carry.
pub const MAX_TEXTS: usize = 64;
/// Most bytes of one text for `embed` and `classify` (the model reads 256 tokens at most).
pub const MAX_TEXT_BYTES: usize = 16 * 1024;
/// Most bytes of the text a `chunk` task splits.
pub const MAX_CHUNK_INPUT_BYTES: usize = 1024 * 1024;

/// For tests: where the workspace keeps its models (`target/models`, filled by
/// `scripts/compute/fetch_models.sh`).
#[doc(hidden)]
pub mod testing {
    use std::path::PathBuf;

    /// The models directory when MiniLM is in it. Otherwise prints a SKIP
    /// line and returns `None` — or panics when `TENSORGUARD_REQUIRE_MODELS`
    /// is set (CI fetches the model, so a missing one is a failure there).
    pub fn models_dir() -> Option<PathBuf> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/models");
        if crate::Models::new(&root).has_minilm() {
            return Some(std::fs::canonicalize(&root).unwrap_or(root));
        }
        assert!(
            std::env::var_os("TENSORGUARD_REQUIRE_MODELS").is_none(),
            "MiniLM is not in {} and TENSORGUARD_REQUIRE_MODELS is set",
            root.display()
        );
        eprintln!(
            "SKIP: MiniLM is not in {} — run scripts/compute/fetch_models.sh",
            root.display()
        );
        None
    }
}
