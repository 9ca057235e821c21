//! User-facing errors: `error[E0xx]: what happened — why — what to do`.
//!
//! Library crates return typed errors; this module is the one place that turns
//! them into codes and advice. The code table lives in docs/ERRORS.md.

use std::fmt;
use std::path::Path;

use tg_inproc::InprocError;
use tg_model::ModelError;
use tg_store::StoreError;
use tg_trust::TrustError;

/// A stable error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// E001 config file unreadable or invalid TOML.
    ConfigInvalid,
    /// E002 invalid command line.
    Usage,
    /// E003 unknown key in config.
    ConfigUnknownKey,
    /// E010 dataset file missing.
    DatasetMissing,
    /// E011 malformed dataset content.
    DatasetMalformed,
    /// E012 dataset/model unsuitable.
    DatasetUnsuitable,
    /// E020 invalid argument value.
    InvalidValue,
    /// E021 quorum larger than clients.
    QuorumTooLarge,
    /// E030 data dir not writable.
    DataDirUnwritable,
    /// E031 store error.
    Store,
    /// E032 run not found.
    RunNotFound,
    /// E040 would overwrite existing files.
    AlreadyExists,
    /// E041 key file permissions too open.
    KeyPermissions,
    /// E042 key file malformed.
    KeyInvalid,
    /// E060 a privacy parameter is out of its domain.
    PrivacyParam,
    /// E061 a privacy target cannot be met.
    PrivacyUnreachable,
    /// E050 doctor found problems.
    DoctorFailed,
    /// E070 the coordinator refused to admit the agent.
    NotAdmitted,
    /// E071 the job already finished.
    JobFinished,
    /// E072 no background agent is running.
    NotRunning,
    /// E080 the network could not be started or used.
    Network,
    /// E043 no key passphrase available.
    NoPassphrase,
    /// E044 the passphrase does not open the key.
    WrongPassphrase,
    /// E045 keyring or HSM operation refused.
    Keyring,
    /// E047 the audit log cannot be read or written.
    AuditLog,
    /// E048 the audit log failed verification.
    AuditTampered,
    /// E090 evidence verified as UNTRUSTED (the verdict is on stdout).
    Untrusted,
    /// E091 evidence or its certificates/collateral unreadable.
    EvidenceUnreadable,
    /// E092 the job requires a TEE and this machine has none.
    NoTee,
    /// E013 local data does not match the job's declared schema.
    SchemaMismatch,
    /// E099 internal error.
    Internal,
}

impl Code {
    /// The printed code.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::ConfigInvalid => "E001",
            Code::Usage => "E002",
            Code::ConfigUnknownKey => "E003",
            Code::DatasetMissing => "E010",
            Code::DatasetMalformed => "E011",
            Code::DatasetUnsuitable => "E012",
            Code::InvalidValue => "E020",
            Code::QuorumTooLarge => "E021",
            Code::DataDirUnwritable => "E030",
            Code::Store => "E031",
            Code::RunNotFound => "E032",
            Code::AlreadyExists => "E040",
            Code::KeyPermissions => "E041",
            Code::KeyInvalid => "E042",
            Code::DoctorFailed => "E050",
            Code::PrivacyParam => "E060",
            Code::PrivacyUnreachable => "E061",
            Code::NotAdmitted => "E070",
            Code::JobFinished => "E071",
            Code::NotRunning => "E072",
            Code::Network => "E080",
            Code::NoPassphrase => "E043",
            Code::WrongPassphrase => "E044",
            Code::Keyring => "E045",
            Code::AuditLog => "E047",
            Code::AuditTampered => "E048",
            Code::Untrusted => "E090",
            Code::EvidenceUnreadable => "E091",
            Code::NoTee => "E092",
            Code::SchemaMismatch => "E013",
            Code::Internal => "E099",
        }
    }
}

/// An error for a person: what happened, why, what to do.
#[derive(Debug)]
pub struct CliError {
    pub code: Code,
    pub what: String,
    pub why: String,
    pub fix: String,
}

impl CliError {
    pub fn new(
        code: Code,
        what: impl Into<String>,
        why: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            code,
            what: what.into(),
            why: why.into(),
            fix: fix.into(),
        }
    }

    /// Exit status: 2 for input the user can correct, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self.code {
            Code::Internal
            | Code::Store
            | Code::DoctorFailed
            | Code::Untrusted
            | Code::AuditTampered => 1,
            _ => 2,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"error": {"code": self.code.as_str(), "what": self.what, "why": self.why, "fix": self.fix}})
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "error[{}]: {} — {} — {}",
            self.code.as_str(),
            self.what,
            self.why,
            self.fix
        )
    }
}

impl std::error::Error for CliError {}

pub fn invalid(
    what: impl Into<String>,
    why: impl Into<String>,
    fix: impl Into<String>,
) -> CliError {
    CliError::new(Code::InvalidValue, what, why, fix)
}

pub fn from_model(e: ModelError) -> CliError {
    match e {
        ModelError::NotFound { path } => CliError::new(
            Code::DatasetMissing,
            format!("dataset not found: {}", path.display()),
            "the path given with --dataset does not exist",
            "check the path, or use --dataset digits for the built-in data set",
        ),
        ModelError::Malformed { path, line, reason } => CliError::new(
            Code::DatasetMalformed,
            if line > 0 {
                format!("{}:{line}: {reason}", path.display())
            } else {
                format!("{}: {reason}", path.display())
            },
            "the file does not match the expected format",
            "CSV: first column an integer label 0..K, then numeric features, one row per example; MNIST: the four IDX files (train-/t10k- images and labels), uncompressed",
        ),
        ModelError::Io { path, source } => CliError::new(
            Code::DatasetMissing,
            format!("cannot read {}", path.display()),
            source.to_string(),
            "check the file's permissions",
        ),
        ModelError::Unsuitable(m) => CliError::new(
            Code::DatasetUnsuitable,
            m,
            "the data and the requested model or split do not fit together",
            "choose another --model, fewer --clients, or another --partition",
        ),
        other => CliError::new(
            Code::Internal,
            other.to_string(),
            "model computation failed",
            "re-run with -vv and report the output",
        ),
    }
}

pub fn from_store(e: StoreError, dir: &Path) -> CliError {
    match e {
        StoreError::Unwritable { path, source } => CliError::new(
            Code::DataDirUnwritable,
            format!("cannot write to the data directory {}", path.display()),
            source.to_string(),
            format!(
                "choose a writable directory with --data-dir (or TENSORGUARD_DATA_DIR), or fix the permissions of {}",
                dir.display()
            ),
        ),
        StoreError::NotFound(what) => CliError::new(
            Code::RunNotFound,
            format!("no run matches `{what}`"),
            format!("the data directory {} has no such run", dir.display()),
            "list runs with `tensorguard runs list` (and check --data-dir)",
        ),
        StoreError::Ambiguous { prefix, count } => CliError::new(
            Code::RunNotFound,
            format!("`{prefix}` matches {count} runs"),
            "the id prefix is not unique",
            "give more characters of the run id",
        ),
        other => CliError::new(
            Code::Store,
            other.to_string(),
            format!("the database in {} could not be used", dir.display()),
            "check disk space and permissions; `tensorguard doctor` runs the checks",
        ),
    }
}

pub fn from_trust(e: TrustError) -> CliError {
    match e {
        TrustError::Exists(p) => CliError::new(
            Code::AlreadyExists,
            format!("{} already exists", p.display()),
            "init never overwrites an existing config or identity key",
            "pass --force to replace them (the old identity is lost), or use --dir for another location",
        ),
        TrustError::InsecurePermissions { path, mode } => CliError::new(
            Code::KeyPermissions,
            format!("identity key {} has mode {mode:o}", path.display()),
            "a key readable by other users can be copied and used to impersonate this node",
            format!("run `chmod 600 {}`", path.display()),
        ),
        TrustError::Malformed(p) => CliError::new(
            Code::KeyInvalid,
            format!("{} is not an identity key", p.display()),
            "the file is damaged or of another kind",
            "restore it from backup, or create a new identity with `tensorguard init --force`",
        ),
        TrustError::NoPassphrase(why) => CliError::new(
            Code::NoPassphrase,
            "no key passphrase",
            why,
            "e.g. `install -m 600 /dev/stdin ~/.config/tensorguard/passphrase` then `export TENSORGUARD_KEY_PASSPHRASE_FILE=~/.config/tensorguard/passphrase` (never on the command line)",
        ),
        TrustError::WrongPassphrase => CliError::new(
            Code::WrongPassphrase,
            "the passphrase does not open the key",
            "either the passphrase is wrong or the sealed key file was altered",
            "check TENSORGUARD_KEY_PASSPHRASE(_FILE); if the file was altered, restore it from backup",
        ),
        TrustError::Unsealed(p) => CliError::new(
            Code::KeyInvalid,
            format!("{} is an unencrypted key file", p.display()),
            "keys must be encrypted at rest",
            format!(
                "encrypt it in place with `tensorguard keys seal {}`",
                p.display()
            ),
        ),
        TrustError::Keyring(m) => CliError::new(
            Code::Keyring,
            m,
            "the keyring refused the operation",
            "see `tensorguard keys list`",
        ),
        TrustError::Pkcs11(m) => CliError::new(
            Code::Keyring,
            m,
            "the PKCS#11 module or token refused the operation",
            "check --pkcs11-module, the token label and TENSORGUARD_PKCS11_PIN(_FILE)",
        ),
        TrustError::Audit(m) => CliError::new(
            Code::AuditLog,
            m,
            "the audit log cannot be used as is",
            "run `tensorguard audit verify` to see its state",
        ),
        TrustError::NoKeyFile(path) => CliError::new(
            Code::KeyInvalid,
            format!("identity key {} does not exist", path.display()),
            "a key named on the command line is never created implicitly",
            "create one with `tensorguard init`, or leave out --key-file to use the data dir's keyring",
        ),
        TrustError::NoPin => CliError::new(
            Code::Keyring,
            "no PKCS#11 PIN",
            "the token's user PIN is needed to use its key",
            format!(
                "set {} to a file (mode 0600) holding the PIN, or {}; never pass it on the command line",
                tg_trust::node::PIN_FILE_ENV,
                tg_trust::node::PIN_ENV
            ),
        ),
        TrustError::NoSigner => CliError::new(
            Code::Keyring,
            "this node has no key to sign its audit log",
            "the keyring holds no active identity or audit key",
            "run `tensorguard keys generate`",
        ),
        other => CliError::new(
            Code::Internal,
            other.to_string(),
            "key handling failed",
            "check the file system and retry",
        ),
    }
}

pub fn from_inproc(e: InprocError, dir: &Path) -> CliError {
    match e {
        InprocError::Model(m) => from_model(m),
        InprocError::Config(m) => invalid(
            m,
            "the federation settings are inconsistent",
            "see `tensorguard demo --help`",
        ),
        InprocError::Strategy(s) => invalid(
            s.to_string(),
            "the strategy settings are invalid",
            "see `tensorguard demo --help`",
        ),
        InprocError::Coordinator(tg_coordinator::CoordinatorError::Store(s)) => from_store(s, dir),
        other => CliError::new(
            Code::Internal,
            other.to_string(),
            "the federation stopped",
            "re-run with -vv and report the output",
        ),
    }
}

pub fn from_privacy(e: tg_privacy::PrivacyError) -> CliError {
    match e {
        tg_privacy::PrivacyError::OutOfRange { what, value, range } => CliError::new(
            Code::PrivacyParam,
            format!("{what} = {value} is outside {range}"),
            "the accountant is only defined on that range",
            match what {
                "sampling rate q" => {
                    "use the fraction of the population sampled per step, e.g. --sampling-rate 0.01 (1.0 means everyone every step)"
                }
                "noise multiplier σ" => {
                    "use a positive noise multiplier, e.g. --noise-multiplier 1.1"
                }
                "δ" => "use a δ well below 1/population, e.g. --delta 1e-5",
                _ => "use a value in the stated range",
            },
        ),
        tg_privacy::PrivacyError::Unreachable {
            target_epsilon,
            max_sigma,
            best_epsilon,
        } => CliError::new(
            Code::PrivacyUnreachable,
            format!("no noise multiplier up to {max_sigma} reaches ε = {target_epsilon}"),
            format!("even σ = {max_sigma} spends ε = {best_epsilon:.4}"),
            "raise the target ε or δ, lower the sampling rate, or take fewer steps",
        ),
        other => CliError::new(
            Code::Internal,
            other.to_string(),
            "privacy computation failed",
            "re-run with -vv and report the output",
        ),
    }
}

/// Fills `buf` from the OS CSPRNG.
pub fn os_random(buf: &mut [u8]) -> Result<(), CliError> {
    getrandom::fill(buf).map_err(|e| {
        CliError::new(
            Code::Internal,
            "the OS random number generator failed",
            e.to_string(),
            "check /dev/urandom",
        )
    })
}

/// The async runtime every command uses: two worker threads (training runs
/// on blocking threads, so the workers only move messages).
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            CliError::new(
                Code::Internal,
                "cannot start the async runtime",
                e.to_string(),
                "check system limits (threads)",
            )
        })
}
