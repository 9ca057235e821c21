//! Jobs: list, show, create from a job file, stop; their rounds (with stage
//! timings and participants) and their privacy ledger.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tg_store::{ApiRole, StoreError};

use super::auth::{Denied, authorize};
use super::settings::job_defaults;
use super::{ApiError, ApiState, ErrorBody, SubmittedJob, ops, with_store};

pub(super) fn routes() -> axum::Router<ApiState> {
    axum::Router::new()
        .route("/api/v1/jobs", get(list).post(create))
        .route("/api/v1/jobs/{id}", get(show))
        .route("/api/v1/jobs/{id}/stop", post(stop))
        .route("/api/v1/jobs/{id}/rounds", get(rounds))
        .route("/api/v1/jobs/{id}/rounds/{round}", get(round))
        .route("/api/v1/jobs/{id}/privacy", get(privacy))
}

pub(super) fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound(what) => {
            ApiError::new(StatusCode::NOT_FOUND, format!("no job matches `{what}`"))
        }
        StoreError::Ambiguous { prefix, count } => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("`{prefix}` matches {count} jobs; give more of the id"),
        ),
        other => ApiError::internal(other),
    }
}

/// The job named by `id` (or a unique prefix), and `query` on its full id.
pub(super) fn job_and<T>(
    state: &ApiState,
    id: &str,
    query: impl FnOnce(&tg_store::Store, &str) -> tg_store::Result<T>,
) -> Result<(tg_store::JobRow, T), ApiError> {
    with_store(state, |s| {
        let job = s.find_job(id).map_err(not_found)?;
        let found = query(s, &job.id).map_err(ApiError::internal)?;
        Ok((job, found))
    })
}

/// Every job this coordinator has run or is running, newest first.
#[utoipa::path(get, operation_id = "list_jobs", path = "/api/v1/jobs", tag = "jobs", security(("bearer" = [])),
    responses((status = 200, description = "`{\"jobs\": [job]}`", body = Value), Denied))]
pub(super) async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let token = authorize(&state, &headers, "GET /api/v1/jobs", ApiRole::Viewer)?;
    let mut jobs = with_store(&state, |s| s.list_jobs().map_err(ApiError::internal))?;
    if token.role < ApiRole::Operator {
        for summary in jobs.iter_mut().filter_map(|j| j.summary.as_mut()) {
            hide_summary_figures(summary);
        }
    }
    Ok(Json(json!({"jobs": jobs})))
}

/// Queues a job from a job file (the TOML of `coordinator start --job`),
/// with the stored job defaults for keys it leaves out.
#[utoipa::path(post, operation_id = "create_job", path = "/api/v1/jobs", tag = "jobs", security(("bearer" = [])),
    request_body(content = String, content_type = "text/plain", description = "A job file (TOML, as for `coordinator start --job`)"),
    responses(
        (status = 202, description = "Queued", body = SubmittedJob),
        (status = 400, description = "The job file is invalid; the message says where", body = ErrorBody),
        (status = 503, description = "Read-only server or full queue", body = ErrorBody),
        Denied))]
pub(super) async fn create(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: String,
) -> Result<(StatusCode, Json<SubmittedJob>), ApiError> {
    let token = authorize(&state, &headers, "POST /api/v1/jobs", ApiRole::Operator)?;
    let ops = ops(&state)?.clone();
    if body.trim().is_empty() {
        return Err(ApiError::bad_request(
            "empty body: send a job file (TOML with a [job] table), e.g. `curl --data-binary @job.toml`",
        ));
    }
    let defaults = with_store(&state, job_defaults)?;
    let submitted = ops.submit_job(&body, &defaults)?;
    tracing::info!(job = %submitted.job, token = %token.id, "job submitted through the API");
    Ok((StatusCode::ACCEPTED, Json(submitted)))
}

/// One job.
#[utoipa::path(get, operation_id = "show_job", path = "/api/v1/jobs/{id}", tag = "jobs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Job id or a unique prefix")),
    responses((status = 200, description = "The job", body = Value),
        (status = 404, description = "No such job", body = ErrorBody), Denied))]
pub(super) async fn show(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let token = authorize(&state, &headers, "GET /api/v1/jobs/{id}", ApiRole::Viewer)?;
    let mut job = with_store(&state, |s| s.find_job(&id).map_err(not_found))?;
    if token.role < ApiRole::Operator
        && let Some(summary) = job.summary.as_mut()
    {
        hide_summary_figures(summary);
    }
    Ok(Json(json!(job)))
}

/// A job summary's round history as the rounds route shows it to roles
/// below operator (and the live stream to everyone): without per-expert
/// figures, screening scores or per-task counts.
pub(super) fn hide_summary_figures(summary: &mut Value) {
    let Some(history) = summary.get_mut("history").and_then(Value::as_array_mut) else {
        return;
    };
    for r in history.iter_mut().filter_map(Value::as_object_mut) {
        r.remove("experts");
        for key in ["gate", "federated"] {
            if let Some(x) = r.get_mut(key).and_then(Value::as_object_mut) {
                x.remove("tasks");
            }
        }
        if let Some(screened) = r.get_mut("screened").and_then(Value::as_array_mut) {
            for s in screened.iter_mut().filter_map(Value::as_object_mut) {
                s.insert("score".into(), Value::Null);
                s.remove("outlier_z");
            }
        }
    }
}

/// Asks a job to stop before its next round (the round in progress is
/// finished and recorded).
#[utoipa::path(post, operation_id = "stop_job", path = "/api/v1/jobs/{id}/stop", tag = "jobs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Job id or a unique prefix")),
    responses((status = 202, description = "Stop requested", body = Value),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is not running here", body = ErrorBody),
        (status = 503, description = "Read-only server", body = ErrorBody), Denied))]
pub(super) async fn stop(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let token = authorize(
        &state,
        &headers,
        "POST /api/v1/jobs/{id}/stop",
        ApiRole::Operator,
    )?;
    let ops = ops(&state)?.clone();
    // A job that has not started yet is only in the queue, by its full id.
    let job = match with_store(&state, |s| s.find_job(&id).map_err(not_found)) {
        Ok(job) => job.id,
        Err(e) if e.status == StatusCode::NOT_FOUND => id,
        Err(e) => return Err(e),
    };
    ops.stop_job(&job)?;
    tracing::info!(job = %job, token = %token.id, "stop requested through the API");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"job": job, "stop_requested": true})),
    ))
}

/// Per-expert figures describe the fleet's task mix; without DP, rounds with
/// different participants can be differenced into one robot's mix, so only
/// operators (who run the coordinator that computes them) see them.
/// Robust aggregators' scores are functions of each agent's update, so they
/// too are for operators; others see only whether an update was admitted.
/// Per-task success counts tell which tasks the answering robots hold (one
/// robot's, when one answered): operators only, too.
fn hide_experts_from(role: ApiRole, r: &mut tg_types::record::RoundRecord) {
    if role < ApiRole::Operator {
        hide_operator_figures(r);
    }
}

/// What [`hide_experts_from`] hides from roles below operator (and the live
/// event stream from everyone).
pub(super) fn hide_operator_figures(r: &mut tg_types::record::RoundRecord) {
    r.experts.clear();
    for s in &mut r.screened {
        s.score = None;
        s.outlier_z = None;
    }
    hide_task_counts(&mut r.gate, &mut r.federated);
}

/// Clears the per-task success counts of a gate verdict and a federated
/// evaluation (a round's, or a model version's): operators' only.
pub(super) fn hide_task_counts(
    gate: &mut Option<tg_types::record::GateVerdict>,
    federated: &mut Option<tg_types::record::FederatedEvaluation>,
) {
    if let Some(g) = gate.as_mut() {
        g.tasks.clear();
    }
    if let Some(f) = federated.as_mut() {
        f.tasks.clear();
    }
}

/// Every round of a job.
#[utoipa::path(get, operation_id = "list_rounds", path = "/api/v1/jobs/{id}/rounds", tag = "jobs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Job id or a unique prefix")),
    responses((status = 200, description = "`{\"job\", \"rounds\": [round]}`", body = Value),
        (status = 404, description = "No such job", body = ErrorBody), Denied))]
pub(super) async fn rounds(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let token = authorize(
        &state,
        &headers,
        "GET /api/v1/jobs/{id}/rounds",
        ApiRole::Viewer,
    )?;
    let (job, mut rounds) = job_and(&state, &id, |s, job| s.rounds(job))?;
    for r in &mut rounds {
        hide_experts_from(token.role, r);
    }
    Ok(Json(json!({"job": job.id, "rounds": rounds})))
}

/// One round: its record, participants and per-stage timings.
#[utoipa::path(get, operation_id = "show_round", path = "/api/v1/jobs/{id}/rounds/{round}", tag = "jobs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Job id or a unique prefix"),
           ("round" = u32, Path, description = "Round number (from 1)")),
    responses((status = 200, description = "`{\"job\", \"round\", \"record\", \"stages\": [{stage, at_ms, ms}]}`", body = Value),
        (status = 400, description = "Not a round number", body = ErrorBody),
        (status = 404, description = "No such job or round", body = ErrorBody), Denied))]
pub(super) async fn round(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((id, round)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let token = authorize(
        &state,
        &headers,
        "GET /api/v1/jobs/{id}/rounds/{round}",
        ApiRole::Viewer,
    )?;
    let n: u32 = round
        .parse()
        .map_err(|_| ApiError::bad_request(format!("`{round}` is not a round number (1, 2, …)")))?;
    let (job, (records, stages)) = job_and(&state, &id, |s, job| {
        let id: tg_types::JobId = job
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("job id {job}")))?;
        Ok((s.rounds(job)?, s.stage_times(id, n)?))
    })?;
    let mut record = records.into_iter().find(|r| r.round == n);
    if let Some(r) = &mut record {
        hide_experts_from(token.role, r);
    }
    if record.is_none() && stages.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("job {} has no round {n}", job.id),
        ));
    }
    // Each stage lasts until the next one starts (the last until now or
    // until the round's record).
    let timed: Vec<Value> = stages
        .iter()
        .enumerate()
        .map(|(i, (stage, at))| {
            let ms = stages.get(i + 1).map(|(_, next)| next - at);
            json!({"stage": stage, "at_ms": at, "ms": ms})
        })
        .collect();
    Ok(Json(json!({
        "job": job.id,
        "round": n,
        "in_progress": record.is_none(),
        "record": record,
        "stages": timed,
    })))
}

/// The privacy ledger and what is left of the budget.
#[utoipa::path(get, operation_id = "show_privacy", path = "/api/v1/jobs/{id}/privacy", tag = "privacy", security(("bearer" = [])),
    params(("id" = String, Path, description = "Job id or a unique prefix")),
    responses((status = 200, description = "`{target_epsilon, epsilon_spent, epsilon_remaining, fraction_used, ledger}`", body = Value),
        (status = 404, description = "No such job", body = ErrorBody), Denied))]
pub(super) async fn privacy(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(
        &state,
        &headers,
        "GET /api/v1/jobs/{id}/privacy",
        ApiRole::Viewer,
    )?;
    let (job, ledger) = job_and(&state, &id, |s, job| s.ledger(job))?;
    let target = job
        .spec
        .pointer("/privacy/target_epsilon")
        .and_then(Value::as_f64);
    let spent = ledger.last().map(|e| e.epsilon_after);
    Ok(Json(json!({
        "job": job.id,
        "target_epsilon": target,
        "delta": job.spec.pointer("/privacy/delta").and_then(Value::as_f64),
        "epsilon_spent": spent,
        // A run whose noise came from a public seed says so wherever ε does.
        "simulation": job
            .spec
            .pointer("/simulated_noise_seed")
            .and_then(Value::as_u64)
            .map(tg_job::simulation_label),
        "epsilon_remaining": target.zip(spent).map(|(t, s)| (t - s).max(0.0)),
        "fraction_used": target.zip(spent).map(|(t, s)| if t > 0.0 { s / t } else { 1.0 }),
        "ledger": ledger,
    })))
}
