//! A real store, a real signed audit log and recording operations behind
//! the API router, for the route tests.
#![allow(clippy::unwrap_used, dead_code)]

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use tg_coordinator::admission::AuditSink;
use tg_coordinator::api::{
    ApiState, JobDefaults, KeyProvider, OperationError, Operations, ProviderCheck, SubmittedJob,
    router,
};
use tg_store::{ApiRole, NewJob, Store};
use tg_types::JobId;
use tg_types::record::{RoundRecord, RoundStatus};
use tower::ServiceExt;

/// A token of `role` (stored by [`fixture`]).
pub fn token(role: ApiRole) -> String {
    let c = match role {
        ApiRole::Viewer => 'a',
        ApiRole::Operator => 'b',
        ApiRole::Admin => 'c',
    };
    format!("tgapi_00000000000000{c}{c}_{}", c.to_string().repeat(64))
}

/// Records what the API asked for; refuses job files without `[job]`.
#[derive(Default)]
pub struct RecordingOps {
    pub submitted: Mutex<Vec<(String, JobDefaults)>>,
    pub stopped: Mutex<Vec<String>>,
}

impl Operations for RecordingOps {
    fn submit_job(&self, file: &str, d: &JobDefaults) -> Result<SubmittedJob, OperationError> {
        if !file.contains("[job]") {
            return Err(OperationError::Invalid(
                "job file has no [job] table".into(),
            ));
        }
        self.submitted
            .lock()
            .unwrap()
            .push((file.into(), d.clone()));
        Ok(SubmittedJob {
            job: "ab".repeat(16),
            queued_behind: 0,
        })
    }
    fn stop_job(&self, job: &str) -> Result<(), OperationError> {
        self.stopped.lock().unwrap().push(job.into());
        Ok(())
    }
    fn test_key_provider(&self, _: &KeyProvider) -> ProviderCheck {
        ProviderCheck {
            status: "unreachable".into(),
            detail: "test".into(),
        }
    }
}

/// A real signed audit log.
struct Log(Mutex<tg_trust::audit::AuditLog>);

impl AuditSink for Log {
    fn record(&self, kind: &str, job: JobId, body: serde_json::Value) {
        self.record_action(kind, Some(job), body).unwrap();
    }
    fn record_action(
        &self,
        kind: &str,
        job: Option<JobId>,
        body: serde_json::Value,
    ) -> Result<(), String> {
        let job = job.map(|j| j.to_string());
        self.0
            .lock()
            .unwrap()
            .append(kind, job.as_deref(), body, 1_700_000_000)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub state: ApiState,
    pub ops: Arc<RecordingOps>,
    pub job: String,
    pub model: String,
}

pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let job = JobId::from_bytes([7; 16]);
    let spec = serde_json::json!({"rounds": 2, "privacy": {"target_epsilon": 4.0}});
    store
        .create_job(&NewJob {
            id: job,
            kind: "fleet",
            spec: &spec,
        })
        .unwrap();
    store
        .record_stage(job, 1, tg_types::record::RoundStage::Selected, None)
        .unwrap();
    store
        .record_stage(job, 1, tg_types::record::RoundStage::ModelSent, None)
        .unwrap();
    let mut r = RoundRecord {
        round: 1,
        status: RoundStatus::Committed,
        accuracy: Some(0.9),
        loss: Some(0.3),
        selected: 3,
        participants: 3,
        upload_bytes: 10,
        download_bytes: 20,
        duration_ms: 5,
        reason: None,
        model_sha256: None,
        parent_sha256: None,
        participants_detail: vec![],
        epsilon: None,
        federated: None,
        gate: None,
        experts: Vec::new(),
        screened: Vec::new(),
        reputation: Vec::new(),
    };
    let model = b"safetensors bytes of round 1".to_vec();
    store.record_round(job, &mut r, Some(&model)).unwrap();
    for role in [ApiRole::Viewer, ApiRole::Operator, ApiRole::Admin] {
        store
            .add_api_token(&token(role), role, "test", None)
            .unwrap();
    }
    let log_path = dir.path().join("audit/audit.jsonl");
    let signer = Arc::new(tg_trust::IdentityKey::generate().unwrap());
    let log = tg_trust::audit::AuditLog::open(&log_path, signer, 1_700_000_000).unwrap();
    let ops = Arc::new(RecordingOps::default());
    let mut state = ApiState::new(store);
    state.ops = Some(ops.clone());
    state.audit = Some(Arc::new(Log(Mutex::new(log))));
    state.audit_log = Some(log_path);
    Fixture {
        _dir: dir,
        state,
        ops,
        job: job.to_string(),
        model: r.model_sha256.unwrap(),
    }
}

pub async fn call(
    state: &ApiState,
    method: &Method,
    uri: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = router(state.clone())
        .oneshot(req.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}
