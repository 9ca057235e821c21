//! TEE attestation: hardware evidence in, normalised claims out, and a
//! separate policy that rates the claims.
//!
//! Design decision: **verification and policy are two steps**. [`verify`]
//! answers one question — is this genuine evidence, signed through a chain to
//! one of *our* trust anchors, valid at time `at`? — and returns [`Claims`]
//! (hardware type, measurement, TCB, debug flag, report data) in one shape for
//! SEV-SNP, TDX and SGX. [`Policy::evaluate`](policy::Policy::evaluate)
//! answers the other — do these claims meet what this job requires? Trust
//! anchors and the clock are parameters, never globals, so the same evidence
//! gives the same answer on an auditor's laptop a year later (`--at`).
//! [`appraise`] runs both and gives the [`Verdict`] the CLI and the
//! coordinator print.
//!
//! `Simulated` evidence exists so a fleet can be exercised on machines
//! without a TEE. It is signed by the agent's own key and proves nothing
//! about the hardware, so every verdict on it is UNTRUSTED, whatever the
//! policy says; only an explicit operator switch (the coordinator's
//! `--allow-simulated`) may admit it, and it stays labelled.

mod binding;
mod dcap;
pub mod detect;
pub mod policy;
mod simulated;
mod snp;

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use binding::{REPORT_DATA_DOMAIN, report_data};
pub use policy::Policy;
pub use simulated::{SimulatedEvidence, SimulatedStatement};
pub use snp::{SnpAnchors, parse_cert_bundle as snp_cert_bundle};

/// Evidence a machine presents about the environment its code runs in.
/// Decoded from untrusted bytes; nothing in it is believed until [`verify`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Evidence {
    /// An AMD SEV-SNP attestation report (1184 bytes) with the certificate
    /// of the key that signed it: the VCEK or VLEK first (DER), then any
    /// intermediates the verifier may not have built in (ASVK for a VLEK).
    SevSnp {
        /// The raw report as the firmware produced it.
        report: Vec<u8>,
        /// DER certificates, endorsement key first.
        certs: Vec<Vec<u8>>,
    },
    /// An Intel TDX quote (v4/v5) with its DCAP collateral (JSON).
    Tdx {
        /// Raw quote.
        quote: Vec<u8>,
        /// `QuoteCollateralV3` as JSON, from a PCCS or Intel PCS.
        collateral: Option<Vec<u8>>,
    },
    /// An Intel SGX quote (v3) with its DCAP collateral (JSON).
    Sgx {
        /// Raw quote.
        quote: Vec<u8>,
        /// `QuoteCollateralV3` as JSON.
        collateral: Option<Vec<u8>>,
    },
    /// No hardware: a statement signed by the agent's own key.
    Simulated(SimulatedEvidence),
}

impl Evidence {
    /// The hardware this evidence claims to come from.
    pub fn hardware(&self) -> HardwareType {
        match self {
            Evidence::SevSnp { .. } => HardwareType::SevSnp,
            Evidence::Tdx { .. } => HardwareType::Tdx,
            Evidence::Sgx { .. } => HardwareType::Sgx,
            Evidence::Simulated(_) => HardwareType::Simulated,
        }
    }

    /// Canonical binary encoding (postcard), for the wire and for hashing.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Encoding a plain enum of byte vectors into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes untrusted bytes; at most `max` bytes are accepted.
    pub fn from_bytes(bytes: &[u8], max: usize) -> Result<Self, Reason> {
        if bytes.len() > max {
            return Err(Reason::new(
                ReasonCode::Malformed,
                format!("evidence is {} bytes, limit {max}", bytes.len()),
            ));
        }
        postcard::from_bytes(bytes)
            .map_err(|e| Reason::new(ReasonCode::Malformed, format!("evidence: {e}")))
    }
}

/// Which kind of trusted execution environment produced evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum HardwareType {
    /// AMD SEV-SNP confidential VM.
    #[serde(rename = "snp", alias = "sev-snp")]
    SevSnp,
    /// Intel TDX trust domain.
    Tdx,
    /// Intel SGX enclave.
    Sgx,
    /// No TEE: simulation mode, never trusted.
    Simulated,
}

impl HardwareType {
    /// Stable lower-case name, as in policies and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            HardwareType::SevSnp => "snp",
            HardwareType::Tdx => "tdx",
            HardwareType::Sgx => "sgx",
            HardwareType::Simulated => "simulated",
        }
    }
}

impl std::fmt::Display for HardwareType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One security-version component of the platform's trusted computing base.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcbComponent {
    /// Component name (`bootloader`, `tee`, `snp`, `microcode`, `isv_svn`, …).
    pub name: String,
    /// Its security version number.
    pub svn: u64,
}

/// What verified evidence says, in one shape for every kind of hardware.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Hardware type.
    pub hardware: HardwareType,
    /// Launch measurement: SNP `MEASUREMENT`, TDX `MRTD`, SGX `MRENCLAVE`,
    /// or for simulation the SHA-256 of the agent's executable.
    #[serde(with = "hex_bytes")]
    pub measurement: Vec<u8>,
    /// TCB components as reported (SNP `REPORTED_TCB`, SGX ISV SVN, TDX
    /// module SVN).
    pub tcb: Vec<TcbComponent>,
    /// Intel's TCB status for the platform (DCAP only), e.g. `UpToDate`.
    pub tcb_status: Option<String>,
    /// Intel security advisories that apply to the platform (DCAP only).
    pub advisories: Vec<String>,
    /// Whether the environment can be debugged (its memory read by the host).
    pub debug: bool,
    /// The 64 bytes the guest bound into the evidence.
    #[serde(with = "hex_bytes")]
    pub report_data: Vec<u8>,
    /// Who signed the evidence (e.g. `VCEK (SEV-Milan)`, `Intel PCK`).
    pub signer: String,
    /// Further measurements worth recording (TDX RTMRs, SGX MRSIGNER, SNP
    /// host data), as name → hex.
    pub extra: Vec<(String, String)>,
}

/// Why evidence was not accepted: a stable code and a human sentence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct Reason {
    /// Stable machine-readable code.
    pub code: ReasonCode,
    /// What exactly was wrong.
    pub detail: String,
}

impl Reason {
    /// A reason with the given code and detail.
    pub fn new(code: ReasonCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }
}

/// Stable codes for rejected evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReasonCode {
    /// The evidence could not be parsed.
    Malformed,
    /// SEV-SNP evidence without the VCEK/VLEK certificate.
    MissingCertificate,
    /// A DCAP quote without collateral.
    MissingCollateral,
    /// The certificate chain does not lead to a trust anchor.
    UntrustedChain,
    /// A certificate is outside its validity window at the chosen time.
    CertificateExpired,
    /// The evidence's signature does not verify.
    BadSignature,
    /// The endorsement key certificate is for a different TCB than reported.
    TcbMismatch,
    /// The endorsement key certificate is for a different chip.
    ChipMismatch,
    /// DCAP collateral (CRL, TCB info, QE identity) is expired or not yet
    /// valid at the chosen time.
    CollateralExpired,
    /// The platform's TCB matches no level in Intel's TCB info.
    NoMatchingTcb,
    /// Any other DCAP quote verification failure.
    QuoteInvalid,
    /// Simulated evidence: not hardware-rooted, never trusted.
    Simulated,
    /// Hardware type not allowed by the policy.
    HardwareNotAllowed,
    /// Measurement not on the policy's allow-list.
    MeasurementNotAllowed,
    /// Debuggable environment where the policy forbids it.
    DebugEnabled,
    /// A TCB component below the policy's minimum.
    TcbBelowMinimum,
    /// Intel TCB status not on the policy's allow-list.
    TcbStatusNotAllowed,
    /// Report data does not bind the expected nonce, peer and session key.
    ReportDataMismatch,
    /// Simulated evidence signed by a key other than the agent's.
    WrongSigner,
}

impl ReasonCode {
    /// The snake_case name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::Malformed => "malformed",
            ReasonCode::MissingCertificate => "missing_certificate",
            ReasonCode::MissingCollateral => "missing_collateral",
            ReasonCode::UntrustedChain => "untrusted_chain",
            ReasonCode::CertificateExpired => "certificate_expired",
            ReasonCode::BadSignature => "bad_signature",
            ReasonCode::TcbMismatch => "tcb_mismatch",
            ReasonCode::ChipMismatch => "chip_mismatch",
            ReasonCode::CollateralExpired => "collateral_expired",
            ReasonCode::NoMatchingTcb => "no_matching_tcb",
            ReasonCode::QuoteInvalid => "quote_invalid",
            ReasonCode::Simulated => "simulated",
            ReasonCode::HardwareNotAllowed => "hardware_not_allowed",
            ReasonCode::MeasurementNotAllowed => "measurement_not_allowed",
            ReasonCode::DebugEnabled => "debug_enabled",
            ReasonCode::TcbBelowMinimum => "tcb_below_minimum",
            ReasonCode::TcbStatusNotAllowed => "tcb_status_not_allowed",
            ReasonCode::ReportDataMismatch => "report_data_mismatch",
            ReasonCode::WrongSigner => "wrong_signer",
        }
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The roots the verifier trusts. Parameters, so tests and air-gapped
/// auditors can pin their own.
#[derive(Clone, Debug, Default)]
pub struct TrustAnchors {
    /// AMD roots and intermediates for SEV-SNP.
    pub snp: SnpAnchors,
    /// Intel SGX Root CA (DER); `None` uses Intel's production root that
    /// dcap-qvl carries.
    pub intel_root_der: Option<Vec<u8>>,
}

/// Verifies evidence at time `at` and returns its claims, or the first
/// reason it is not genuine. No policy is applied here.
pub fn verify(
    evidence: &Evidence,
    anchors: &TrustAnchors,
    at: SystemTime,
) -> Result<Claims, Reason> {
    match evidence {
        Evidence::SevSnp { report, certs } => snp::verify(report, certs, &anchors.snp, at),
        Evidence::Tdx { quote, collateral } => dcap::verify(
            HardwareType::Tdx,
            quote,
            collateral.as_deref(),
            anchors.intel_root_der.as_deref(),
            unix_secs(at),
        ),
        Evidence::Sgx { quote, collateral } => dcap::verify(
            HardwareType::Sgx,
            quote,
            collateral.as_deref(),
            anchors.intel_root_der.as_deref(),
            unix_secs(at),
        ),
        Evidence::Simulated(sim) => sim.verify(),
    }
}

/// The overall rating of a piece of evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Genuine, and meets the policy (when one was given).
    Trusted,
    /// Not genuine, does not meet the policy, or simulated.
    Untrusted,
}

/// What the caller expects the evidence to be bound to.
#[derive(Clone, Debug, Default)]
pub struct Expected {
    /// The report data the evidence must carry (see [`report_data`]).
    pub report_data: Option<[u8; 64]>,
    /// For simulated evidence: the agent key that must have signed it.
    pub agent_key: Option<[u8; 32]>,
}

/// Verification plus policy: the answer printed by `attest verify` and
/// recorded by the coordinator for each admission.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// TRUSTED or UNTRUSTED.
    pub status: Status,
    /// The hardware the evidence claims.
    pub hardware_type: HardwareType,
    /// Measurement (hex), when the evidence verified.
    pub measurement: Option<String>,
    /// Every reason it is not trusted; empty when TRUSTED.
    pub reasons: Vec<Reason>,
    /// Full claims, when the evidence verified.
    pub claims: Option<Claims>,
}

/// Verifies `evidence` at `at`, then rates it against `policy` and the
/// expected binding. Simulated evidence is always UNTRUSTED.
pub fn appraise(
    evidence: &Evidence,
    anchors: &TrustAnchors,
    at: SystemTime,
    policy: Option<&Policy>,
    expected: &Expected,
) -> Verdict {
    let hardware_type = evidence.hardware();
    let claims = match verify(evidence, anchors, at) {
        Ok(c) => c,
        Err(reason) => {
            return Verdict {
                status: Status::Untrusted,
                hardware_type,
                measurement: None,
                reasons: vec![reason],
                claims: None,
            };
        }
    };
    let mut reasons = Vec::new();
    if hardware_type == HardwareType::Simulated {
        reasons.push(Reason::new(
            ReasonCode::Simulated,
            "simulated evidence is signed by the agent's own key and proves nothing about the hardware",
        ));
        if let (Some(want), Evidence::Simulated(sim)) = (expected.agent_key, evidence)
            && sim.statement.agent_key != want
        {
            reasons.push(Reason::new(
                ReasonCode::WrongSigner,
                "simulated evidence is signed by a key other than the agent's",
            ));
        }
    }
    if let Some(want) = expected.report_data
        && claims.report_data != want
    {
        reasons.push(Reason::new(
                ReasonCode::ReportDataMismatch,
                format!(
                    "report data {} does not bind this session's nonce, peer id and session key (expected {})",
                    short_hex(&claims.report_data),
                    short_hex(&want)
                ),
            ));
    }
    if let Some(p) = policy {
        reasons.extend(p.evaluate(&claims));
    }
    Verdict {
        status: if reasons.is_empty() {
            Status::Trusted
        } else {
            Status::Untrusted
        },
        hardware_type,
        measurement: Some(hex::encode(&claims.measurement)),
        reasons,
        claims: Some(claims),
    }
}

fn short_hex(b: &[u8]) -> String {
    let h = hex::encode(b);
    if h.len() > 16 {
        format!("{}…", &h[..16])
    } else {
        h
    }
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Serde helper: bytes as a hex string in human-readable formats.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(b))
        } else {
            s.serialize_bytes(b)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            hex::decode(s).map_err(serde::de::Error::custom)
        } else {
            Vec::<u8>::deserialize(d)
        }
    }
}
