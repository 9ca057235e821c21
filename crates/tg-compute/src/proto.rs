//! The compute protocol's messages and their signatures.
//!
//! Every message travels as one frame on tg-net's request-response protocol,
//! whose connection already authenticates the sender's peer id. Results and
//! receipts are *also* signed, with their own domain tags, because they are
//! shown to third parties: a result to the verifier, a receipt to anyone who
//! checks a wallet's export.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tg_tasks::{TaskInput, TaskOutput, output_digest};

use crate::ComputeError;

/// Protocol version, told in capability replies.
pub const COMPUTE_PROTOCOL: u32 = 2;
/// Largest compute frame accepted (a chunk task's text is at most 1 MiB).
pub const MAX_MESSAGE_BYTES: usize = 2 << 20;
/// Bytes of a model artifact per fetch reply.
pub const ARTIFACT_PART_BYTES: u32 = 512 * 1024;

const RESULT_TAG: &[u8] = b"tensorguard/compute/result/v1\0";
const RECEIPT_TAG: &[u8] = b"tensorguard/compute/receipt/v1\0";

/// A task's id: random, chosen by its submitter.
pub type TaskId = [u8; 16];

/// Short hex of a task id.
pub fn task_hex(id: &TaskId) -> String {
    hex::encode(id)
}

/// SHA-256 of a task input's canonical JSON.
pub fn input_digest(input: &TaskInput) -> [u8; 32] {
    Sha256::digest(serde_json::to_vec(input).unwrap_or_default()).into()
}

/// What a node can do now, as it tells a submitter that asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capability {
    /// Compute protocol version.
    pub protocol: u32,
    /// Task kinds it runs.
    pub kinds: Vec<String>,
    /// Models it holds (content ids, hex).
    pub models: Vec<String>,
    /// Its CPU cap, percent of one core.
    pub cpu_cap_pct: u32,
    /// CPU it used over its last window, percent of one core.
    pub cpu_used_pct: u32,
    /// Tasks queued or running.
    pub queue: u32,
    /// Whether it refuses tasks now (over its memory cap or queue bound).
    pub over_caps: bool,
    /// Why, when it refuses.
    pub reason: Option<String>,
}

/// A signed result of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedResult {
    /// Task.
    pub task: TaskId,
    /// SHA-256 of the input it ran.
    pub input_digest: [u8; 32],
    /// The output.
    pub output: TaskOutput,
    /// SHA-256 of the output.
    pub output_digest: [u8; 32],
    /// Milliseconds it waited in the worker's queue.
    pub queued_ms: u32,
    /// Milliseconds of inference.
    pub compute_ms: u32,
    /// The worker's Ed25519 public key.
    pub worker: [u8; 32],
    /// Signature over the above (64 bytes).
    pub sig: Vec<u8>,
}

fn result_message(r: &SignedResult) -> Vec<u8> {
    let mut m = RESULT_TAG.to_vec();
    m.extend_from_slice(&r.task);
    m.extend_from_slice(&r.input_digest);
    m.extend_from_slice(&r.output_digest);
    m.extend_from_slice(&r.queued_ms.to_be_bytes());
    m.extend_from_slice(&r.compute_ms.to_be_bytes());
    m.extend_from_slice(&r.worker);
    m
}

impl SignedResult {
    /// Signs a result with the worker's key.
    pub fn sign(
        key: &SigningKey,
        task: TaskId,
        input: &TaskInput,
        output: TaskOutput,
        queued_ms: u32,
        compute_ms: u32,
    ) -> Self {
        let mut r = Self {
            task,
            input_digest: input_digest(input),
            output_digest: output_digest(&output),
            output,
            queued_ms,
            compute_ms,
            worker: key.verifying_key().to_bytes(),
            sig: Vec::new(),
        };
        r.sig = key.sign(&result_message(&r)).to_bytes().to_vec();
        r
    }

    /// Checks the signature, the output's digest, and that it answers `input`
    /// and was signed by `expected_worker`.
    pub fn verify(
        &self,
        input: &TaskInput,
        expected_worker: &[u8; 32],
    ) -> Result<(), ComputeError> {
        if &self.worker != expected_worker {
            return Err(ComputeError::BadSignature(
                "signed by another key than the sending peer's".into(),
            ));
        }
        if self.input_digest != input_digest(input) {
            return Err(ComputeError::BadSignature("answers another input".into()));
        }
        if self.output_digest != output_digest(&self.output) {
            return Err(ComputeError::BadSignature(
                "output digest does not match the output".into(),
            ));
        }
        let vk = VerifyingKey::from_bytes(&self.worker)
            .map_err(|e| ComputeError::BadSignature(e.to_string()))?;
        let sig = Signature::from_slice(&self.sig)
            .map_err(|_| ComputeError::BadSignature("signature is not 64 bytes".into()))?;
        vk.verify(&result_message(self), &sig)
            .map_err(|_| ComputeError::BadSignature("result signature does not verify".into()))
    }
}

/// A receipt: the submitter's signed statement that a worker's result for a
/// task was verified, worth `points`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Task.
    pub task: TaskId,
    /// Submitter's Ed25519 public key.
    pub submitter: [u8; 32],
    /// Worker's Ed25519 public key.
    pub worker: [u8; 32],
    /// SHA-256 of the verified output.
    pub output_digest: [u8; 32],
    /// Points earned.
    pub points: u32,
    /// Seconds since the Unix epoch when it was issued.
    pub issued_unix: u64,
    /// Submitter's signature (64 bytes).
    pub sig: Vec<u8>,
}

fn receipt_message(r: &Receipt) -> Vec<u8> {
    let mut m = RECEIPT_TAG.to_vec();
    m.extend_from_slice(&r.task);
    m.extend_from_slice(&r.submitter);
    m.extend_from_slice(&r.worker);
    m.extend_from_slice(&r.output_digest);
    m.extend_from_slice(&r.points.to_be_bytes());
    m.extend_from_slice(&r.issued_unix.to_be_bytes());
    m
}

impl Receipt {
    /// Issues a receipt signed by the submitter.
    pub fn issue(
        key: &SigningKey,
        task: TaskId,
        worker: [u8; 32],
        output_digest: [u8; 32],
        points: u32,
        issued_unix: u64,
    ) -> Self {
        let mut r = Self {
            task,
            submitter: key.verifying_key().to_bytes(),
            worker,
            output_digest,
            points,
            issued_unix,
            sig: Vec::new(),
        };
        r.sig = key.sign(&receipt_message(&r)).to_bytes().to_vec();
        r
    }

    /// Checks the submitter's signature.
    pub fn verify(&self) -> Result<(), ComputeError> {
        let vk = VerifyingKey::from_bytes(&self.submitter)
            .map_err(|e| ComputeError::BadSignature(e.to_string()))?;
        let sig = Signature::from_slice(&self.sig)
            .map_err(|_| ComputeError::BadSignature("signature is not 64 bytes".into()))?;
        vk.verify(&receipt_message(self), &sig)
            .map_err(|_| ComputeError::BadSignature("receipt signature does not verify".into()))
    }
}

/// A compute-protocol message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Msg {
    /// Submitter → worker: what can you do now?
    Probe,
    /// Worker → submitter: its capability.
    Capability(Capability),
    /// Submitter → worker: run this task.
    Assign {
        /// Task.
        task: TaskId,
        /// Input.
        input: TaskInput,
    },
    /// Worker → submitter: the task was taken into the queue.
    Accepted {
        /// Task.
        task: TaskId,
    },
    /// Worker → submitter: the task was refused.
    Decline {
        /// Task.
        task: TaskId,
        /// Error code (E12x).
        code: String,
        /// Why.
        reason: String,
    },
    /// Worker → submitter: a signed result.
    Result(SignedResult),
    /// Submitter → worker: a receipt for a verified result.
    Receipt(Receipt),
    /// Any node → provider: send bytes of an artifact.
    Fetch {
        /// Artifact's content hash.
        id: [u8; 32],
        /// Offset.
        offset: u64,
    },
    /// Provider → fetcher: bytes of an artifact.
    Part {
        /// Artifact.
        id: [u8; 32],
        /// Offset of `data`.
        offset: u64,
        /// Whole artifact's size.
        total: u64,
        /// Bytes.
        data: Vec<u8>,
    },
    /// Provider → fetcher: it does not hold that artifact.
    NoArtifact {
        /// Artifact.
        id: [u8; 32],
    },
    /// Provider → fetcher: it holds that artifact but serves as many parts
    /// as it will right now; ask again later from the same offset.
    ArtifactBusy {
        /// Artifact.
        id: [u8; 32],
    },
}

impl Msg {
    /// Encodes for the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = b"TGC1".to_vec();
        v.extend(postcard::to_allocvec(self).unwrap_or_default());
        v
    }

    /// Decodes a frame, refusing oversize or malformed bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, ComputeError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(ComputeError::Malformed(format!(
                "message of {} bytes, at most {MAX_MESSAGE_BYTES}",
                bytes.len()
            )));
        }
        let body = bytes
            .strip_prefix(b"TGC1")
            .ok_or_else(|| ComputeError::Malformed("not a compute message".into()))?;
        postcard::from_bytes(body).map_err(|e| ComputeError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    #[test]
    fn results_and_receipts_sign_and_verify_and_bind_their_fields() {
        let input = TaskInput {
            kind: "embed".into(),
            texts: vec!["hi".into()],
        };
        let w = key(1);
        let r = SignedResult::sign(
            &w,
            [3; 16],
            &input,
            TaskOutput::Embeddings(vec![vec![1.0, 0.0]]),
            2,
            5,
        );
        r.verify(&input, &w.verifying_key().to_bytes()).unwrap();
        assert!(
            r.verify(&input, &key(2).verifying_key().to_bytes())
                .is_err()
        );
        let mut t = r.clone();
        t.compute_ms = 1;
        assert!(t.verify(&input, &w.verifying_key().to_bytes()).is_err());
        let mut t = r.clone();
        t.task = [4; 16];
        assert!(t.verify(&input, &w.verifying_key().to_bytes()).is_err());
        let rc = Receipt::issue(
            &key(9),
            [3; 16],
            w.verifying_key().to_bytes(),
            r.output_digest,
            1,
            7,
        );
        rc.verify().unwrap();
        let mut t = rc.clone();
        t.points = 2;
        assert!(t.verify().is_err());
        let mut t = rc;
        t.sig.truncate(10);
        assert!(t.verify().is_err());
    }

    #[test]
    fn oversize_and_foreign_bytes_are_refused() {
        assert!(Msg::decode(&vec![0u8; MAX_MESSAGE_BYTES + 1]).is_err());
        assert!(Msg::decode(b"TGC0\x00").is_err());
        assert!(Msg::decode(b"").is_err());
    }

    proptest! {
        #[test]
        fn any_bytes_decode_to_an_error_or_a_stable_message(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut framed = b"TGC1".to_vec();
            framed.extend_from_slice(&data);
            for bytes in [&data[..], &framed[..]] {
                if let Ok(m) = Msg::decode(bytes) {
                    let e = m.encode();
                    prop_assert_eq!(Msg::decode(&e).map(|x| x.encode()).ok(), Some(e));
                    if let Msg::Assign { input, .. } = &m
                        && let Ok(k) = tg_tasks::kind_by_name(&input.kind) {
                            let _ = k.validate(input);
                        }
                    if let Msg::Receipt(r) = &m {
                        prop_assert!(r.verify().is_err());
                    }
                }
            }
        }
    }
}
