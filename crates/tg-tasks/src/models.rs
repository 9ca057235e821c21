//! Models loaded lazily: an idle node holds none, and the first task that
//! needs one verifies and loads it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::{MINILM, MiniLm, TaskError};

/// The models a node can run, loaded on first use from a models directory.
#[derive(Debug)]
pub struct Models {
    root: PathBuf,
    minilm: Mutex<Option<Arc<MiniLm>>>,
}

impl Models {
    /// Models under `root` (each in its own directory, e.g. `root/all-MiniLM-L6-v2`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            minilm: Mutex::new(None),
        }
    }

    /// The models directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether all of MiniLM's files are present (not yet verified).
    pub fn has_minilm(&self) -> bool {
        MINILM
            .files
            .iter()
            .all(|f| self.root.join(MINILM.dir).join(f.name).is_file())
    }

    /// Whether a model is loaded in memory now.
    pub fn loaded(&self) -> bool {
        self.minilm.lock().map(|g| g.is_some()).unwrap_or(false)
    }

    /// MiniLM, verified and loaded on first call.
    pub fn minilm(&self) -> Result<Arc<MiniLm>, TaskError> {
        let mut slot = self
            .minilm
            .lock()
            .map_err(|_| TaskError::Inference("model lock poisoned".into()))?;
        if let Some(m) = slot.as_ref() {
            return Ok(m.clone());
        }
        let m = Arc::new(MiniLm::load(&self.root)?);
        *slot = Some(m.clone());
        Ok(m)
    }
}
