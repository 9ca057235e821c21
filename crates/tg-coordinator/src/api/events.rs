//! Live events over Server-Sent Events: job status changes, new rounds,
//! round stages and the agents table.
//!
//! Design decision: events are derived from the store (and the live fleet
//! view) by polling once a second per connection, not pushed by the round
//! loop. Whatever writes the store — the network coordinator or the
//! in-process demo — is then visible live with no coupling to the API, a
//! slow dashboard can never slow a round, and a reconnecting client simply
//! re-reads the REST resources and continues.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::Stream;
use serde_json::json;
use tg_store::ApiRole;

use super::auth::{Denied, authorize};
use super::{ApiError, ApiState};

pub(super) fn routes() -> axum::Router<ApiState> {
    axum::Router::new().route("/api/v1/events", get(events))
}

/// How often a connection looks for changes.
const POLL: Duration = Duration::from_secs(1);

/// A job as last reported: status, rounds recorded, last stage.
type JobMark = (String, u32, Option<(u32, String)>);

/// What one connection has already told its client.
#[derive(Default)]
struct Seen {
    /// job id → what was last reported.
    jobs: HashMap<String, JobMark>,
    agents: String,
    primed: bool,
}

fn event(kind: &str, data: &serde_json::Value) -> Event {
    Event::default().event(kind).data(data.to_string())
}

/// A `job` event's data: the job, its summary's history without what
/// viewers may not see (the stream is viewers').
fn job_data(mut job: tg_store::JobRow) -> serde_json::Value {
    if let Some(summary) = job.summary.as_mut() {
        super::jobs::hide_summary_figures(summary);
    }
    json!(job)
}

/// A `round` event's data: the record without its per-expert figures,
/// screening scores and per-task counts (those are for operators, through
/// GET …/rounds; the stream is viewers').
fn round_data(job: &str, r: &tg_types::record::RoundRecord) -> serde_json::Value {
    let mut r = r.clone();
    super::jobs::hide_operator_figures(&mut r);
    json!({"job": job, "record": r})
}

/// Everything that changed since the last poll, as events.
fn changes(state: &ApiState, seen: &mut Seen) -> Vec<Event> {
    let mut out = Vec::new();
    let polled = super::with_store(state, |s| {
        let jobs = s.list_jobs().map_err(ApiError::internal)?;
        let mut rows = Vec::with_capacity(jobs.len());
        for job in jobs {
            let recorded = job.rounds_committed + job.rounds_failed;
            let before = seen.jobs.get(&job.id).cloned();
            let unchanged_status = before
                .as_ref()
                .is_some_and(|(st, n, _)| st == job.status.as_str() && *n == recorded);
            let stage = match job.id.parse::<tg_types::JobId>() {
                Ok(id) if job.status == tg_types::record::JobStatus::Running => s
                    .last_stage(id)
                    .map_err(ApiError::internal)?
                    .map(|r| (r.round, r.stage.to_string())),
                _ => before.as_ref().and_then(|b| b.2.clone()),
            };
            let new_rounds = match &before {
                Some((_, n, _)) if recorded > *n => {
                    let all = s.rounds(&job.id).map_err(ApiError::internal)?;
                    all.into_iter().filter(|r| r.round > *n).collect()
                }
                _ => Vec::new(),
            };
            rows.push((job, recorded, stage, unchanged_status, before, new_rounds));
        }
        Ok(rows)
    });
    let rows = match polled {
        Ok(rows) => rows,
        Err(e) => {
            out.push(event("error", &json!({"message": e.message})));
            return out;
        }
    };
    for (job, recorded, stage, unchanged_status, before, new_rounds) in rows {
        if seen.primed {
            for r in &new_rounds {
                out.push(event("round", &round_data(&job.id, r)));
            }
            if !unchanged_status {
                out.push(event("job", &job_data(job.clone())));
            }
            if let Some((round, name)) = &stage
                && before.as_ref().and_then(|b| b.2.as_ref()) != stage.as_ref()
            {
                out.push(event(
                    "stage",
                    &json!({"job": job.id, "round": round, "stage": name}),
                ));
            }
        }
        seen.jobs.insert(
            job.id.clone(),
            (job.status.as_str().to_owned(), recorded, stage),
        );
    }
    let agents = state.fleet.snapshot();
    let text = serde_json::to_string(&agents).unwrap_or_default();
    if text != seen.agents {
        if seen.primed {
            out.push(event("agents", &json!({"agents": agents})));
        }
        seen.agents = text;
    }
    seen.primed = true;
    out
}

/// A stream of `job`, `round`, `stage`, `agents` and `error` events (JSON
/// data), starting with `hello`; keep-alive comments every 15 s.
#[utoipa::path(get, operation_id = "events", path = "/api/v1/events", tag = "events", security(("bearer" = [])),
    responses((status = 200, description = "Server-Sent Events: `hello`, `job`, `round`, `stage`, `agents`, `error`", content_type = "text/event-stream", body = String), Denied))]
pub(super) async fn events(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    authorize(&state, &headers, "GET /api/v1/events", ApiRole::Viewer)?;
    let mut seen = Seen::default();
    // Baseline now: the client has just read the REST resources.
    changes(&state, &mut seen);
    let hello = futures::stream::once(async {
        Ok(event("hello", &json!({"poll_ms": POLL.as_millis() as u64})))
    });
    let updates = futures::stream::unfold((state, seen), |(state, mut seen)| async move {
        loop {
            tokio::time::sleep(POLL).await;
            let batch = changes(&state, &mut seen);
            if !batch.is_empty() {
                let items: Vec<Result<Event, Infallible>> = batch.into_iter().map(Ok).collect();
                return Some((futures::stream::iter(items), (state, seen)));
            }
        }
    });
    use futures::StreamExt;
    let stream = hello.chain(updates.flatten());
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[cfg(test)]
mod tests {
    use tg_types::record::{ExpertStep, RoundRecord, RoundStatus};

    #[test]
    fn the_live_stream_never_carries_per_expert_figures() {
        let r = RoundRecord {
            round: 1,
            status: RoundStatus::Committed,
            accuracy: None,
            loss: None,
            selected: 2,
            participants: 2,
            upload_bytes: 0,
            download_bytes: 0,
            duration_ms: 1,
            reason: None,
            model_sha256: None,
            parent_sha256: None,
            participants_detail: vec![],
            epsilon: None,
            federated: None,
            gate: None,
            experts: vec![ExpertStep {
                weight: 3.0,
                share: 0.75,
                updated: true,
                task_share: vec![0.25, 0.75],
                client_share: Some(0.5),
                step_norm: 0.2,
            }],
            screened: vec![tg_types::record::ScreenRecord {
                agent: tg_types::AgentId::numbered(1),
                score: Some(7.25),
                admitted: false,
                outlier_z: Some(9.625),
                flagged: true,
            }],
            reputation: Vec::new(),
        };
        let data = super::round_data("j", &r).to_string();
        assert!(
            !data.contains("7.25")
                && !data.contains("9.625")
                && data.contains("\"admitted\":false"),
            "{data}"
        );
        assert!(data.contains("\"round\":1"), "{data}");
        assert!(
            !data.contains("share") && !data.contains("step_norm"),
            "{data}"
        );
        // A `job` event carries the job's summary: its history too.
        let job = tg_store::JobRow {
            id: "j".into(),
            kind: "demo".into(),
            created_at_ms: 0,
            status: tg_types::record::JobStatus::Completed,
            reason: None,
            spec: serde_json::json!({}),
            summary: Some(serde_json::json!({"history": [{
                "round": 1,
                "experts": [{"share": 0.75, "step_norm": 0.2}],
                "gate": {"passed": true, "tasks": [{"task": "reach-wall", "successes": 1, "episodes": 2}]},
                "screened": [{"agent": "a", "score": 7.25, "outlier_z": 9.625, "admitted": false}],
            }]})),
            rounds_committed: 1,
            rounds_failed: 0,
            last_accuracy: None,
        };
        let data = super::job_data(job).to_string();
        for secret in ["reach-wall", "step_norm", "7.25", "9.625"] {
            assert!(!data.contains(secret), "{secret}: {data}");
        }
        assert!(data.contains("\"passed\":true"), "{data}");
    }
}
