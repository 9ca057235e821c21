//! User-facing errors: the codes and advice are tg-diag's (shared with the
//! Python SDK); this module adds the binary's own: the OS RNG and the async
//! runtime.

pub use tg_diag::{
    Code, UserError, from_inproc, from_job, from_model, from_privacy, from_store, from_trust,
    invalid,
};

/// Fills `buf` from the OS CSPRNG.
pub fn os_random(buf: &mut [u8]) -> Result<(), UserError> {
    getrandom::fill(buf).map_err(|e| {
        UserError::new(
            Code::Internal,
            "the OS random number generator failed",
            e.to_string(),
            "check /dev/urandom",
        )
    })
}

/// The async runtime every command uses: two worker threads (training runs
/// on blocking threads, so the workers only move messages).
pub fn runtime() -> Result<tokio::runtime::Runtime, UserError> {
    built(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
    )
}

/// A runtime on the calling thread alone, for a long-running node that
/// mostly waits: each runtime thread that allocates gets a malloc arena of
/// its own (about 3 MiB each at idle, measured on a compute node).
pub fn runtime_one_thread() -> Result<tokio::runtime::Runtime, UserError> {
    built(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    )
}

fn built(
    rt: std::io::Result<tokio::runtime::Runtime>,
) -> Result<tokio::runtime::Runtime, UserError> {
    rt.map_err(|e| {
        UserError::new(
            Code::Internal,
            "cannot start the async runtime",
            e.to_string(),
            "check system limits (threads)",
        )
    })
}
