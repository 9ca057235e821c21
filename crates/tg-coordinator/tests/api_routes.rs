//! Every route of the REST API: no token → 401, a role below the route's →
//! 403, bad input → 400 with a message that says what to change, and the
//! happy path — over a real store and a real signed audit log.
#![allow(clippy::unwrap_used)]

use crate::common::{Fixture, call, fixture, token};
use axum::http::{Method, StatusCode};
use tg_store::ApiRole;

/// (method, path, least role, happy body, happy status)
fn routes(f: &Fixture) -> Vec<(Method, String, ApiRole, String, StatusCode)> {
    let j = &f.job;
    let kms = r#"{"provider":"aws","region":"eu-west-1","key_id":"alias/tg"}"#.to_owned();
    vec![
        (
            Method::GET,
            "/api/v1/jobs".into(),
            ApiRole::Viewer,
            String::new(),
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/v1/jobs".into(),
            ApiRole::Operator,
            "[job]\nrounds = 2\n".into(),
            StatusCode::ACCEPTED,
        ),
        (
            Method::GET,
            format!("/api/v1/jobs/{j}"),
            ApiRole::Viewer,
            String::new(),
            StatusCode::OK,
        ),
        (
            Method::POST,
            format!("/api/v1/jobs/{j}/stop"),
            ApiRole::Operator,
            String::new(),
            StatusCode::ACCEPTED,
        ),
        (
            Method::GET,
            format!("/api/v1/jobs/{j}/rounds"),
            ApiRole::Viewer,
            String::new(),
            StatusCode::OK,
        ),
        (
            Method::GET,
            format!("/api/v1/jobs/{j}/rounds/1"),
            ApiRole::Viewer,
            String::new(),
            StatusCode::OK,
        ),
        (
            Method::GET,
            format!("/api/v1/jobs/{j}/privacy"),
            ApiRole::Viewer,
            String::new(),
            StatusCode::OK,
        ),
        (
            Method::GET,
            format!("/api/v1/jobs/{j}/models"),
            ApiRole::Viewer,
            String::new(),
            StatusCode::OK,
        ),
        (
            Method::GET,
            format!("/api/v1/models/{}", f.model),
            ApiRole::Viewer,
            String::new(),
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/agents".into(),
            ApiRole::Viewer,
            String::new(),
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/audit".into(),
            ApiRole::Viewer,
            String::new(),
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/audit/export".into(),
            ApiRole::Operator,
            String::new(),
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/settings".into(),
            ApiRole::Viewer,
            String::new(),
            StatusCode::OK,
        ),
        (
            Method::PUT,
            "/api/v1/settings/job_defaults".into(),
            ApiRole::Operator,
            r#"{"rounds": 7, "target_epsilon": 3.0}"#.into(),
            StatusCode::OK,
        ),
        (
            Method::PUT,
            "/api/v1/settings/key_provider".into(),
            ApiRole::Admin,
            kms.clone(),
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/v1/settings/key_provider/test".into(),
            ApiRole::Admin,
            kms,
            StatusCode::OK,
        ),
    ]
}

fn below(role: ApiRole) -> Option<ApiRole> {
    match role {
        ApiRole::Viewer => None,
        ApiRole::Operator => Some(ApiRole::Viewer),
        ApiRole::Admin => Some(ApiRole::Operator),
    }
}

#[tokio::test]
async fn every_route_says_401_403_and_serves_its_role() {
    let f = fixture();
    for (method, path, role, body, ok) in routes(&f) {
        let (s, text) = call(&f.state, &method, &path, None, &body).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {path}: {text}");
        assert!(text.contains("Bearer"), "{text}");
        let (s, _) = call(&f.state, &method, &path, Some("tgapi_nonsense"), &body).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {path}");
        if let Some(low) = below(role) {
            let (s, text) = call(&f.state, &method, &path, Some(&token(low)), &body).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{method} {path}: {text}");
            assert!(text.contains(role.as_str()), "{text}");
        }
        let (s, text) = call(&f.state, &method, &path, Some(&token(role)), &body).await;
        assert_eq!(s, ok, "{method} {path}: {text}");
    }
    // The events stream answers 401 without a token too.
    let (s, _) = call(&f.state, &Method::GET, "/api/v1/events", None, "").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_input_is_a_400_that_says_what_to_change() {
    let f = fixture();
    let op = token(ApiRole::Operator);
    let admin = token(ApiRole::Admin);
    let j = &f.job;
    for (method, path, tok, body, hint) in [
        (
            Method::POST,
            "/api/v1/jobs".to_owned(),
            &op,
            "rounds = 2",
            "[job]",
        ),
        (
            Method::POST,
            "/api/v1/jobs".to_owned(),
            &op,
            "  ",
            "empty body",
        ),
        (
            Method::GET,
            format!("/api/v1/jobs/{j}/rounds/one"),
            &op,
            "",
            "not a round number",
        ),
        (
            Method::GET,
            "/api/v1/models/xyz".to_owned(),
            &op,
            "",
            "not a SHA-256",
        ),
        (
            Method::GET,
            "/api/v1/audit?limit=lots".to_owned(),
            &op,
            "",
            "limit=lots",
        ),
        (
            Method::GET,
            "/api/v1/audit?limit=5000".to_owned(),
            &op,
            "",
            "page with offset",
        ),
        (
            Method::PUT,
            "/api/v1/settings/job_defaults".to_owned(),
            &op,
            r#"{"rounds": 0}"#,
            "rounds = 0",
        ),
        (
            Method::PUT,
            "/api/v1/settings/job_defaults".to_owned(),
            &op,
            r#"{"epochs": 3}"#,
            "unknown field",
        ),
        (
            Method::PUT,
            "/api/v1/settings/job_defaults".to_owned(),
            &op,
            "not json",
            "invalid job defaults",
        ),
        (
            Method::PUT,
            "/api/v1/settings/key_provider".to_owned(),
            &admin,
            r#"{"provider":"vault"}"#,
            "unknown variant",
        ),
        (
            Method::PUT,
            "/api/v1/settings/key_provider".to_owned(),
            &admin,
            r#"{"provider":"azure","vault_url":"http://x","key_name":"k"}"#,
            "https://",
        ),
        (
            Method::POST,
            "/api/v1/settings/key_provider/test".to_owned(),
            &admin,
            r#"{"provider":"aws","region":"EU WEST","key_id":"k"}"#,
            "AWS region",
        ),
    ] {
        let (s, text) = call(&f.state, &method, &path, Some(tok), body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{method} {path} {body}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(hint),
            "{method} {path}: `{msg}` lacks `{hint}`"
        );
    }
    let (s, _) = call(
        &f.state,
        &Method::GET,
        &format!("/api/v1/jobs/{j}/rounds/9"),
        Some(&op),
        "",
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(
        &f.state,
        &Method::GET,
        &format!("/api/v1/models/{}", "0".repeat(64)),
        Some(&op),
        "",
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn settings_are_persisted_audited_and_used_for_submitted_jobs() {
    let f = fixture();
    let op = token(ApiRole::Operator);
    let (s, text) = call(
        &f.state,
        &Method::PUT,
        "/api/v1/settings/job_defaults",
        Some(&op),
        r#"{"rounds": 9, "lr": 0.05}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{text}");
    let (_, text) = call(&f.state, &Method::GET, "/api/v1/settings", Some(&op), "").await;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["job_defaults"]["value"]["rounds"], 9);
    assert_eq!(v["job_defaults"]["updated_by"], "00000000000000bb");
    assert_eq!(v["key_provider"]["value"]["provider"], "local");
    // The change is in the signed audit log, and searchable.
    let (_, text) = call(
        &f.state,
        &Method::GET,
        "/api/v1/audit?kind=config.changed&q=JOB_DEFAULTS",
        Some(&op),
        "",
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["total"], 1, "{text}");
    assert_eq!(v["entries"][0]["body"]["value"]["rounds"], 9);
    let (_, export) = call(
        &f.state,
        &Method::GET,
        "/api/v1/audit/export",
        Some(&op),
        "",
    )
    .await;
    assert_eq!(
        export.lines().count(),
        2,
        "log.opened and config.changed: {export}"
    );
    // A submitted job gets the defaults.
    call(
        &f.state,
        &Method::POST,
        "/api/v1/jobs",
        Some(&op),
        "[job]\n",
    )
    .await;
    let submitted = f.ops.submitted.lock().unwrap();
    assert_eq!(submitted[0].1.rounds, Some(9));
    assert_eq!(submitted[0].1.lr, Some(0.05));
}

#[tokio::test]
async fn round_detail_has_stage_timings_and_the_model_downloads() {
    let f = fixture();
    let v = token(ApiRole::Viewer);
    let (_, text) = call(
        &f.state,
        &Method::GET,
        &format!("/api/v1/jobs/{}/rounds/1", f.job),
        Some(&v),
        "",
    )
    .await;
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["stages"][0]["stage"], "selected");
    assert!(body["stages"][0]["ms"].as_i64().unwrap() >= 0);
    assert_eq!(body["record"]["participants"], 3);
    let (s, bytes) = call(
        &f.state,
        &Method::GET,
        &format!("/api/v1/models/{}", f.model),
        Some(&v),
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(bytes, "safetensors bytes of round 1");
    let (_, text) = call(
        &f.state,
        &Method::POST,
        &format!("/api/v1/jobs/{}/stop", &f.job[..6]),
        Some(&token(ApiRole::Operator)),
        "",
    )
    .await;
    assert!(text.contains(&f.job), "{text}");
    assert_eq!(*f.ops.stopped.lock().unwrap(), vec![f.job.clone()]);
}

#[tokio::test]
async fn a_read_only_server_refuses_changes_with_503() {
    let f = fixture();
    let mut state = f.state.clone();
    state.ops = None;
    state.audit = None;
    let op = token(ApiRole::Operator);
    let (s, text) = call(&state, &Method::POST, "/api/v1/jobs", Some(&op), "[job]\n").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    let (s, text) = call(
        &state,
        &Method::PUT,
        "/api/v1/settings/job_defaults",
        Some(&op),
        "{}",
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert!(text.contains("audit"), "{text}");
}

#[tokio::test]
async fn the_dashboard_and_the_spec_need_no_token() {
    let f = fixture();
    for path in [
        "/",
        "/assets/app.js",
        "/assets/app.css",
        "/api/v1/openapi.json",
    ] {
        let (s, _) = call(&f.state, &Method::GET, path, None, "").await;
        assert_eq!(s, StatusCode::OK, "{path}");
    }
}

#[test]
fn authorize_names_the_role_a_route_needs() {
    let f = fixture();
    let mut headers = axum::http::HeaderMap::new();
    let viewer = format!("Bearer {}", token(ApiRole::Viewer));
    headers.insert("authorization", viewer.parse().unwrap());
    let authorize = tg_coordinator::api::auth::authorize;
    assert!(authorize(&f.state, &headers, "test", ApiRole::Viewer).is_ok());
    let e = authorize(&f.state, &headers, "test", ApiRole::Operator).unwrap_err();
    assert_eq!(e.status, StatusCode::FORBIDDEN);
    assert!(e.message.contains("operator"));
    // A job id prefix finds the job; an unknown one is a 404.
    let (s, _) = tokio_test_get(&f, &format!("/api/v1/jobs/{}/privacy", &f.job[..8]));
    assert_eq!(s, StatusCode::OK);
    let (s, _) = tokio_test_get(&f, "/api/v1/jobs/ffffffff");
    assert_eq!(s, StatusCode::NOT_FOUND);
}

fn tokio_test_get(f: &Fixture, path: &str) -> (StatusCode, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(call(
        &f.state,
        &Method::GET,
        path,
        Some(&token(ApiRole::Viewer)),
        "",
    ))
}
