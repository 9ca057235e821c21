//! `tensorguard demo --dashboard`: the web dashboard over the demo's store.
//!
//! Design decision: the demo serves the same router as a coordinator, but
//! read-only (no job queue, no settings changes: there is no audit log to
//! record them in), on its own small runtime so the in-process federation
//! runs exactly as without it. A viewer token valid for one hour is created
//! and printed, because a newcomer has no token yet and the page needs one.

use std::path::Path;
use std::time::Duration;

use tg_store::{ApiRole, Store};

use crate::errors::{Code, UserError, from_store};
use crate::output::Output;

/// Keeps the dashboard's server running while it lives.
pub struct Dashboard {
    runtime: tokio::runtime::Runtime,
}

/// Starts serving the dashboard for `data_dir` on `addr`.
pub fn start(
    addr: std::net::SocketAddr,
    data_dir: &Path,
    out: &Output,
) -> Result<Dashboard, UserError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("dashboard")
        .enable_all()
        .build()
        .map_err(|e| {
            UserError::new(
                Code::Internal,
                "cannot start the dashboard's runtime",
                e.to_string(),
                "run without --dashboard",
            )
        })?;
    let store = Store::open(data_dir).map_err(|e| from_store(e, data_dir))?;
    let (token, _) = crate::api_cmd::new_token(
        &store,
        data_dir,
        ApiRole::Viewer,
        "demo dashboard",
        Some(Duration::from_secs(3600)),
    )?;
    let mut state = tg_coordinator::api::ApiState::new(
        Store::open(data_dir).map_err(|e| from_store(e, data_dir))?,
    );
    state.audit_log = Some(crate::keys::audit_log_path(data_dir));
    let metrics = tg_metrics::Metrics::new("demo");
    let router = tg_coordinator::api::router(state);
    runtime.block_on(crate::fleet::serve_metrics(
        addr,
        metrics,
        Some(router),
        &crate::cli::TlsArgs::default(),
        out,
    ))?;
    out.note(&format!(
        "dashboard: open http://{addr}/ and log in with this viewer token (valid 1 h): {}",
        token.as_str()
    ));
    Ok(Dashboard { runtime })
}

impl Dashboard {
    /// Keeps serving until Ctrl-C.
    pub fn serve_until_interrupted(self, out: &Output) {
        out.note("the demo is over; the dashboard stays up until Ctrl-C");
        let _ = self.runtime.block_on(tokio::signal::ctrl_c());
    }
}
