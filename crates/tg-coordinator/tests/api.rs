//! The REST API over a real store: authentication, roles, errors, data.
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tg_coordinator::api::{ApiState, auth::authorize, router};
use tg_store::{ApiRole, NewJob, Store};
use tg_types::JobId;
use tg_types::record::{RoundRecord, RoundStatus};
use tower::ServiceExt;

const VIEWER: &str =
    "tgapi_00000000000000aa_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

fn state() -> (tempfile::TempDir, ApiState, String) {
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
        participants_detail: vec![],
        epsilon: None,
    };
    store.record_round(job, &mut r, None).unwrap();
    store
        .add_api_token(VIEWER, ApiRole::Viewer, "test", None)
        .unwrap();
    (dir, ApiState::new(store), job.to_string())
}

async fn get(state: &ApiState, uri: &str, token: Option<&str>) -> (StatusCode, serde_json::Value) {
    let mut req = Request::builder().uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = router(state.clone())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn every_route_refuses_missing_and_bad_tokens_and_serves_a_viewer() {
    let (_dir, state, job) = state();
    for route in [
        "/api/v1/jobs".to_owned(),
        format!("/api/v1/jobs/{job}"),
        format!("/api/v1/jobs/{job}/rounds"),
        format!("/api/v1/jobs/{job}/privacy"),
    ] {
        let (s, body) = get(&state, &route, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{route}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Bearer"),
            "{body}"
        );
        let bad = VIEWER.replace("_aaaa", "_bbbb");
        assert_eq!(
            get(&state, &route, Some(&bad)).await.0,
            StatusCode::UNAUTHORIZED,
            "{route}"
        );
        let (s, body) = get(&state, &route, Some(VIEWER)).await;
        assert_eq!(s, StatusCode::OK, "{route}: {body}");
    }
    let (_, body) = get(&state, &format!("/api/v1/jobs/{job}/rounds"), Some(VIEWER)).await;
    assert_eq!(body["rounds"][0]["round"], 1);
    let (_, body) = get(
        &state,
        &format!("/api/v1/jobs/{}/privacy", &job[..8]),
        Some(VIEWER),
    )
    .await;
    assert_eq!(body["target_epsilon"], 4.0);
    let (s, body) = get(&state, "/api/v1/jobs/ffffffff", Some(VIEWER)).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
}

#[test]
fn a_role_below_the_route_is_forbidden() {
    let (_dir, state, _) = state();
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {VIEWER}").parse().unwrap());
    assert!(authorize(&state, &headers, "test", ApiRole::Viewer).is_ok());
    let e = authorize(&state, &headers, "test", ApiRole::Operator).unwrap_err();
    assert_eq!(e.status, StatusCode::FORBIDDEN);
    assert!(e.message.contains("operator"));
}
