//! Library errors as coded, advised errors.

use std::path::Path;

use tg_inproc::InprocError;
use tg_job::JobError;
use tg_model::ModelError;
use tg_store::StoreError;
use tg_trust::TrustError;

use crate::{Code, UserError, invalid};

/// A job error with its code (the same through the CLI, a job file and
/// the API).
pub fn from_job(e: JobError) -> UserError {
    let code = match &e {
        JobError::Quorum(_) => Code::QuorumTooLarge,
        JobError::PrivacyParam(_) => Code::PrivacyParam,
        JobError::PrivacyUnreachable(_) => Code::PrivacyUnreachable,
        JobError::Syntax(_) => Code::ConfigInvalid,
        JobError::UnknownKey(_) => Code::ConfigUnknownKey,
        _ => Code::InvalidValue,
    };
    let p = e.problem();
    UserError::new(code, p.what.clone(), p.why.clone(), p.fix.clone())
}

/// A model or dataset error.
pub fn from_model(e: ModelError) -> UserError {
    match e {
        ModelError::NotFound { path } => UserError::new(
            Code::DatasetMissing,
            format!("dataset not found: {}", path.display()),
            "the path given with --dataset does not exist",
            "check the path, or use --dataset digits for the built-in data set",
        ),
        ModelError::Malformed { path, line, reason } => UserError::new(
            Code::DatasetMalformed,
            if line > 0 {
                format!("{}:{line}: {reason}", path.display())
            } else {
                format!("{}: {reason}", path.display())
            },
            "the file does not match the expected format",
            "CSV: first column an integer label 0..K, then numeric features, one row per example; MNIST: the four IDX files (train-/t10k- images and labels), uncompressed",
        ),
        ModelError::Io { path, source } => UserError::new(
            Code::DatasetMissing,
            format!("cannot read {}", path.display()),
            source.to_string(),
            "check the file's permissions",
        ),
        ModelError::Unsuitable(m) => UserError::new(
            Code::DatasetUnsuitable,
            m,
            "the data and the requested model or split do not fit together",
            "choose another --model, fewer --clients, or another --partition",
        ),
        other => UserError::new(
            Code::Internal,
            other.to_string(),
            "model computation failed",
            "re-run with -vv and report the output",
        ),
    }
}

/// A store error, for the data directory `dir`.
pub fn from_store(e: StoreError, dir: &Path) -> UserError {
    match e {
        StoreError::Unwritable { path, source } => UserError::new(
            Code::DataDirUnwritable,
            format!("cannot write to the data directory {}", path.display()),
            source.to_string(),
            format!(
                "choose a writable directory with --data-dir (or TENSORGUARD_DATA_DIR), or fix the permissions of {}",
                dir.display()
            ),
        ),
        StoreError::NotFound(what) => UserError::new(
            Code::RunNotFound,
            format!("no run matches `{what}`"),
            format!("the data directory {} has no such run", dir.display()),
            "list runs with `tensorguard runs list` (and check --data-dir)",
        ),
        StoreError::Ambiguous { prefix, count } => UserError::new(
            Code::RunNotFound,
            format!("`{prefix}` matches {count} runs"),
            "the id prefix is not unique",
            "give more characters of the run id",
        ),
        StoreError::NoVersion { job, version } => UserError::new(
            Code::VersionNotFound,
            format!(
                "job {} has no committed model version `{version}`",
                &job[..job.len().min(12)]
            ),
            "a version is named by its SHA-256 (at least 6 hex digits) and must be a model this job committed",
            format!(
                "list the job's versions with `tensorguard models list {}`",
                &job[..job.len().min(12)]
            ),
        ),
        StoreError::Unaudited(why) => UserError::new(
            Code::AuditLog,
            "nothing changed: the change could not be recorded in the audit log",
            why,
            "run `tensorguard audit verify`; move a damaged tail aside, check the passphrase and the disk",
        ),
        StoreError::Refused(why) => UserError::new(
            Code::RegistryRefused,
            "the model registry refused the change",
            why,
            "see `tensorguard models list JOB`: the head is marked",
        ),
        other => UserError::new(
            Code::Store,
            other.to_string(),
            format!("the database in {} could not be used", dir.display()),
            "check disk space and permissions; `tensorguard doctor` runs the checks",
        ),
    }
}

/// A key, keyring or audit-log error.
pub fn from_trust(e: TrustError) -> UserError {
    match e {
        TrustError::Exists(p) => UserError::new(
            Code::AlreadyExists,
            format!("{} already exists", p.display()),
            "init never overwrites an existing config or identity key",
            "pass --force to replace them (the old identity is lost), or use --dir for another location",
        ),
        TrustError::InsecurePermissions { path, mode } => UserError::new(
            Code::KeyPermissions,
            format!("identity key {} has mode {mode:o}", path.display()),
            "a key readable by other users can be copied and used to impersonate this node",
            format!("run `chmod 600 {}`", path.display()),
        ),
        TrustError::Malformed(p) => UserError::new(
            Code::KeyInvalid,
            format!("{} is not an identity key", p.display()),
            "the file is damaged or of another kind",
            "restore it from backup, or create a new identity with `tensorguard init --force`",
        ),
        TrustError::NoPassphrase(why) => UserError::new(
            Code::NoPassphrase,
            "no key passphrase",
            why,
            "e.g. `install -m 600 /dev/stdin ~/.config/tensorguard/passphrase` then `export TENSORGUARD_KEY_PASSPHRASE_FILE=~/.config/tensorguard/passphrase` (never on the command line)",
        ),
        TrustError::WrongPassphrase => UserError::new(
            Code::WrongPassphrase,
            "the passphrase does not open the key",
            "either the passphrase is wrong or the sealed key file was altered",
            "check TENSORGUARD_KEY_PASSPHRASE(_FILE); if the file was altered, restore it from backup",
        ),
        TrustError::Unsealed(p) => UserError::new(
            Code::KeyInvalid,
            format!("{} is an unencrypted key file", p.display()),
            "keys must be encrypted at rest",
            format!(
                "encrypt it in place with `tensorguard keys seal {}`",
                p.display()
            ),
        ),
        TrustError::Keyring(m) => UserError::new(
            Code::Keyring,
            m,
            "the keyring refused the operation",
            "see `tensorguard keys list`",
        ),
        TrustError::Pkcs11(m) => UserError::new(
            Code::Keyring,
            m,
            "the PKCS#11 module or token refused the operation",
            "check --pkcs11-module, the token label and TENSORGUARD_PKCS11_PIN(_FILE)",
        ),
        TrustError::Audit(m) => UserError::new(
            Code::AuditLog,
            m,
            "the audit log cannot be used as is",
            "run `tensorguard audit verify` to see its state",
        ),
        TrustError::NoKeyFile(path) => UserError::new(
            Code::KeyInvalid,
            format!("identity key {} does not exist", path.display()),
            "a key named on the command line is never created implicitly",
            "create one with `tensorguard init`, or leave out --key-file to use the data dir's keyring",
        ),
        TrustError::NoPin => UserError::new(
            Code::Keyring,
            "no PKCS#11 PIN",
            "the token's user PIN is needed to use its key",
            format!(
                "set {} to a file (mode 0600) holding the PIN, or {}; never pass it on the command line",
                tg_trust::node::PIN_FILE_ENV,
                tg_trust::node::PIN_ENV
            ),
        ),
        TrustError::NoSigner => UserError::new(
            Code::Keyring,
            "this node has no key to sign its audit log",
            "the keyring holds no active identity or audit key",
            "run `tensorguard keys generate`",
        ),
        other => UserError::new(
            Code::Internal,
            other.to_string(),
            "key handling failed",
            "check the file system and retry",
        ),
    }
}

/// An in-process federation error, for the data directory `dir`.
pub fn from_inproc(e: InprocError, dir: &Path) -> UserError {
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
        other => UserError::new(
            Code::Internal,
            other.to_string(),
            "the federation stopped",
            "re-run with -vv and report the output",
        ),
    }
}

/// A privacy-parameter error.
pub fn from_privacy(e: tg_privacy::PrivacyError) -> UserError {
    match e {
        tg_privacy::PrivacyError::OutOfRange { what, value, range } => UserError::new(
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
        } => UserError::new(
            Code::PrivacyUnreachable,
            format!("no noise multiplier up to {max_sigma} reaches ε = {target_epsilon}"),
            format!("even σ = {max_sigma} spends ε = {best_epsilon:.4}"),
            "raise the target ε or δ, lower the sampling rate, or take fewer steps",
        ),
        other => UserError::new(
            Code::Internal,
            other.to_string(),
            "privacy computation failed",
            "re-run with -vv and report the output",
        ),
    }
}

/// Why a network agent stopped, with its code (the same from
/// `tensorguard agent start` and the Python SDK's `Agent`).
pub fn from_agent(e: tg_agent::AgentError) -> UserError {
    use tg_agent::AgentError;
    match e {
        AgentError::NoTee(why) => UserError::new(
            Code::NoTee,
            "this job requires a TEE and this machine has none",
            why,
            "run the agent inside an SEV-SNP or TDX VM or an SGX enclave (Gramine); for testing only, pass --insecure (the agent is then labelled UNTRUSTED, and only a coordinator started with --allow-simulated admits it)",
        ),
        AgentError::Schema(why) => UserError::new(
            Code::SchemaMismatch,
            "local data does not match the job's declared schema",
            why,
            "nothing was trained or sent; fix the local data or --dataset",
        ),
        AgentError::Refused(reason) => UserError::new(
            Code::NotAdmitted,
            "the coordinator refused this agent",
            reason,
            "see the reason; a token is used once, so ask for a new one if needed",
        ),
        AgentError::CustomModel => UserError::new(
            Code::DatasetUnsuitable,
            "this agent cannot train the job's model",
            "the job trains the operator's own model (its [model] initial file), and `tensorguard agent start` trains only the built-in models",
            "join this job from Python, where your code defines the model: tensorguard.Agent(app, coordinator=ADDR, enroll=TOKEN, model=...)",
        ),
        AgentError::Ledger(why) => UserError::new(
            Code::Store,
            "this agent's privacy ledger cannot be opened",
            why,
            "run one agent per data directory, and check the directory's permissions; nothing was trained or sent",
        ),
        AgentError::Model(e) => from_model(e),
        AgentError::Aggregator(why) => UserError::new(
            Code::AggregatorRefused,
            "this agent refuses the coordinator's aggregator; nothing was sent",
            why,
            "join only a coordinator whose TEE evidence meets --aggregator-policy and binds its session key; for a test with a simulated aggregator, pass --allow-simulated-aggregator",
        ),
        other => UserError::new(
            Code::Network,
            "the agent stopped",
            other.to_string(),
            "check the coordinator address and the network",
        ),
    }
}

/// A round an agent declined, as its owner sees it: the owner's floors
/// (E110) and budget (E062), or another reason (E112). Nothing was sent
/// but the decline's code.
pub fn from_declined(d: &tg_agent::Declined) -> UserError {
    use tg_proto::DeclineReason as R;
    let (code, fix) = match d.reason {
        R::PrivacyBudgetExhausted => (
            Code::BudgetExhausted,
            "the owner's budget is spent for this data; raise [budget] epsilon in the policy only if the owner agrees",
        ),
        R::OwnerFloor | R::PlaintextRefused | R::DpRequired | R::UncertifiedParticipant => (
            Code::OwnerFloor,
            "nothing was sent; ask the operator for rounds that meet this agent's policy, or change the policy (allow_plaintext, floors) if the owner agrees",
        ),
        _ => (
            Code::RoundDeclined,
            "see the detail; the agent takes part again in the next round",
        ),
    };
    UserError::new(
        code,
        format!("round {} declined: {}", d.round, d.reason),
        d.detail.clone(),
        fix,
    )
}

#[cfg(test)]
mod tests {
    use tg_job::{JobError, Problem};

    #[test]
    fn every_job_error_family_has_the_code_tg_job_names() {
        let p = || Problem {
            key: None,
            what: "w".into(),
            why: "y".into(),
            fix: "f".into(),
        };
        for e in [
            JobError::Invalid(p()),
            JobError::Quorum(p()),
            JobError::PrivacyParam(p()),
            JobError::PrivacyUnreachable(p()),
            JobError::Syntax(p()),
            JobError::UnknownKey(p()),
        ] {
            let user = super::from_job(e.clone());
            assert_eq!(user.code.as_str(), e.code());
            assert_eq!(user.to_string(), e.coded());
        }
    }
}
