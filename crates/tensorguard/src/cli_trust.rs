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

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KeyPurposeArg {
    /// The node's network identity (peer id, signed frames).
    Identity,
    /// The key that signs the audit log (may live in an HSM).
    Audit,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a fleet root key (sealed to FILE with the key passphrase; keep
    /// it offline): it certifies agents' identities, so the coordinator cannot
    /// add identities of its own. Prints its public key for agents to pin.
    FleetRoot {
        /// Where to write the sealed root key (refused if it exists).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Certify an agent's identity key with the fleet root; prints the
    /// certificate (`tgcert1-…`) for the agent's `--certificate FILE`.
    Certify {
        /// The sealed fleet root key (from `keys fleet-root`).
        #[arg(long, value_name = "FILE")]
        root: PathBuf,
        /// The agent's identity public key (64 hex digits; `keys export-public` on the agent).
        #[arg(long, value_name = "HEX")]
        identity: String,
        /// Display name in the certificate.
        #[arg(long)]
        name: String,
        /// Days of validity from now.
        #[arg(long, default_value_t = 365)]
        days: u64,
    },
    /// Create the first key for a purpose: sealed in the keyring, or on a
    /// PKCS#11 token (PIN from TENSORGUARD_PKCS11_PIN or _PIN_FILE).
    Generate {
        #[arg(long, value_enum, default_value = "identity")]
        purpose: KeyPurposeArg,
        /// PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so): keep the key on a token.
        #[arg(long, value_name = "PATH", requires = "pkcs11_token")]
        pkcs11_module: Option<PathBuf>,
        /// Label of the token to use.
        #[arg(long, value_name = "LABEL")]
        pkcs11_token: Option<String>,
        /// Label of the key pair on the token (default: tensorguard-<purpose>).
        #[arg(long, value_name = "LABEL")]
        pkcs11_label: Option<String>,
    },
    /// Every key this node has held, with validity windows and status.
    List,
    /// Replace the active key; the old one is kept to verify what it signed.
    Rotate {
        #[arg(long, value_enum, default_value = "identity")]
        purpose: KeyPurposeArg,
        /// Only rotate when the config's [keys] rotate_after has passed.
        #[arg(long)]
        if_due: bool,
    },
    /// Print a public key (default: the active identity key).
    ExportPublic {
        /// Key id (or prefix); default the active key of --purpose.
        id: Option<String>,
        #[arg(long, value_enum, default_value = "identity")]
        purpose: KeyPurposeArg,
    },
    /// Withdraw a retired key: signatures it makes from now on are invalid.
    Revoke {
        /// Key id (or unique prefix).
        id: String,
        /// Why (recorded in the keyring and the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Encrypt an old unencrypted key file in place.
    Seal {
        /// The key file.
        file: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line, as stored.
    Jsonl,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check every entry, the hash chain, the signers and the signed head.
    Verify {
        /// Log file (default: audit/audit.jsonl in the data dir).
        #[arg(long, value_name = "FILE")]
        log: Option<PathBuf>,
        /// A head recorded earlier (SEQ:HASH) that the log must still contain.
        #[arg(long, value_name = "SEQ:HASH")]
        expect_head: Option<String>,
        /// Do not check signers against the data dir's keyring.
        #[arg(long)]
        no_keyring: bool,
    },
    /// Write the log's entries to stdout.
    Export {
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
        /// Log file (default: audit/audit.jsonl in the data dir).
        #[arg(long, value_name = "FILE")]
        log: Option<PathBuf>,
        /// Only this job's entries (and key events).
        #[arg(long)]
        job: Option<String>,
    },
    /// Write a compliance report for a job (Markdown and HTML).
    Report {
        /// Job id (or unique prefix).
        #[arg(long)]
        job: String,
        /// Output directory (default: reports/ in the data dir).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Log file (default: audit/audit.jsonl in the data dir).
        #[arg(long, value_name = "FILE")]
        log: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Read everything.
    Viewer,
    /// Also start and stop jobs and change settings.
    Operator,
    /// Also manage tokens and keys.
    Admin,
}

#[derive(Debug, Subcommand)]
pub enum ApiCommand {
    /// Bearer tokens for the REST API and dashboard.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new token (shown once; only its SHA-256 is stored).
    Create {
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Who or what holds it (shown in lists and the audit log).
        #[arg(long, default_value = "")]
        label: String,
        /// Lifetime, e.g. 90d; default: until revoked.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
    },
    /// Every token: id, role, label, created, expires, last used, revoked.
    List,
    /// Revoke a token by id.
    Revoke {
        /// The token's id (the 16 hex digits after `tgapi_`).
        id: String,
    },
}
