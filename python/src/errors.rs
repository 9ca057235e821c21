//! Coded errors as Python exceptions: one `tensorguard.errors` class per
//! family, each instance carrying the CLI's code and words.

use pyo3::prelude::*;
use tg_diag::{Code, UserError};

/// The `tensorguard.errors` class for `code`'s family.
pub(crate) fn family(code: Code) -> &'static str {
    match code {
        Code::ConfigInvalid
        | Code::Usage
        | Code::ConfigUnknownKey
        | Code::InvalidValue
        | Code::QuorumTooLarge => "ConfigError",
        Code::DatasetMissing
        | Code::DatasetMalformed
        | Code::DatasetUnsuitable
        | Code::SchemaMismatch => "DataError",
        Code::DataDirUnwritable
        | Code::Store
        | Code::RunNotFound
        | Code::VersionNotFound
        | Code::RegistryRefused
        | Code::AlreadyExists
        | Code::JobFinished => "StoreError",
        Code::KeyPermissions
        | Code::KeyInvalid
        | Code::NoPassphrase
        | Code::WrongPassphrase
        | Code::Keyring
        | Code::AuditLog
        | Code::AuditTampered => "TrustError",
        Code::PrivacyParam | Code::PrivacyUnreachable | Code::BudgetExhausted => "PrivacyError",
        Code::OwnerFloor | Code::RoundDeclined => "RoundError",
        Code::NotAdmitted | Code::Network | Code::NotRunning => "NetworkError",
        Code::Untrusted | Code::EvidenceUnreadable | Code::NoTee | Code::AggregatorRefused => {
            "AttestationError"
        }
        Code::ArtifactRefused
        | Code::TaskMalformed
        | Code::TaskOversize
        | Code::TaskKindUnknown
        | Code::SignatureRefused
        | Code::OverCaps
        | Code::TaskFailed
        | Code::TaskStoreInUse => "ComputeError",
        _ => "InternalError",
    }
}

/// `e` as the Python exception the SDK raises for it.
pub(crate) fn raise(py: Python<'_>, e: UserError) -> PyErr {
    let message = e.to_string();
    let made = py.import("tensorguard.errors").and_then(|m| {
        let class = m.getattr(family(e.code))?;
        class.call1((
            message.clone(),
            e.code.as_str(),
            e.what.clone(),
            e.why.clone(),
            e.fix.clone(),
        ))
    });
    match made {
        Ok(instance) => PyErr::from_value(instance),
        // The package's own module is missing (a broken install): still
        // say what happened.
        Err(_) => pyo3::exceptions::PyRuntimeError::new_err(message),
    }
}
