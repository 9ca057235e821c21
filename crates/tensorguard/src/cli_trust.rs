//! Flags of the trust commands: `attest`, `keys`, `audit`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

#[derive(Debug, Subcommand)]
pub enum AttestCommand {
    /// Verify TEE evidence (an SEV-SNP report, a TDX or SGX quote) and rate it.
    Verify(AttestVerifyArgs),
    /// Which TEE interfaces this machine has.
    Detect {
        /// Look under this root instead of / (for tests and containers).
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EvidenceKind {
    /// AMD SEV-SNP attestation report (1184 bytes).
    Snp,
    /// Intel TDX quote.
    Tdx,
    /// Intel SGX quote.
    Sgx,
}

#[derive(Debug, Args)]
pub struct AttestVerifyArgs {
    /// What the evidence file holds.
    #[arg(long, value_enum)]
    pub kind: EvidenceKind,
    /// The raw report or quote.
    #[arg(long, value_name = "FILE")]
    pub evidence: PathBuf,
    /// SNP: the VCEK/VLEK (DER or PEM) first, then any intermediates such as
    /// the ASVK (repeatable).
    #[arg(long, value_name = "FILE")]
    pub cert: Vec<PathBuf>,
    /// TDX/SGX: the DCAP collateral (QuoteCollateralV3 JSON).
    #[arg(long, value_name = "FILE")]
    pub collateral: Option<PathBuf>,
    /// Verify as of this time (RFC 3339, e.g. 2025-07-04T10:28:44Z); default now.
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
    /// Policy file (TOML or JSON): hardware, measurements, allow_debug,
    /// min_tcb, intel_tcb_status.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// The 64-byte report data the evidence must carry (128 hex digits).
    #[arg(long, value_name = "HEX")]
    pub report_data: Option<String>,
    /// Trust only these AMD roots (ARK, PEM or DER) instead of the built-in
    /// Milan/Genoa/Turin roots (repeatable).
    #[arg(long, value_name = "FILE")]
    pub amd_root: Vec<PathBuf>,
    /// Trust this Intel SGX root CA (DER) instead of Intel's production root.
    #[arg(long, value_name = "FILE")]
    pub intel_root: Option<PathBuf>,
}
