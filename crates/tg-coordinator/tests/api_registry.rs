//! The model registry over the REST API: versions, an audited rollback by an
//! operator, refusals that say what to change, and per-expert figures and
//! robust aggregators' scores only for operators.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should fail the test loudly

use crate::common;

use crate::common::{call, fixture, token};
use axum::http::{Method, StatusCode};
use serde_json::Value;
use tg_store::ApiRole;
use tg_types::record::{ExpertStep, RoundRecord, RoundStatus};

/// The fixture's job with a second committed round (carrying expert figures).
fn two_versions() -> (common::Fixture, String, String) {
    let f = fixture();
    let v1 = f.model.clone();
    let job: tg_types::JobId = f.job.parse().unwrap();
    let mut r = RoundRecord {
        round: 2,
        status: RoundStatus::Committed,
        accuracy: Some(0.95),
        loss: Some(0.2),
        selected: 3,
        participants: 3,
        upload_bytes: 10,
        download_bytes: 20,
        duration_ms: 5,
        reason: None,
        model_sha256: None,
        parent_sha256: Some(v1.clone()),
        participants_detail: vec![],
        epsilon: None,
        federated: None,
        gate: Some(tg_types::record::GateVerdict {
            candidate: tg_types::record::Successes {
                successes: 30,
                episodes: 40,
            },
            current: tg_types::record::Successes {
                successes: 20,
                episodes: 40,
            },
            difference_low: 0.05,
            difference_high: 0.4,
            margin: 0.0,
            passed: true,
            tasks: vec![tg_types::record::TaskSuccesses {
                task: "reach-wall".into(),
                successes: 30,
                episodes: 40,
            }],
        }),
        experts: vec![ExpertStep {
            weight: 2.0,
            share: 0.5,
            updated: true,
            task_share: vec![0.25, 0.75],
            client_share: Some(0.5),
            step_norm: 0.1,
        }],
        screened: vec![tg_types::record::ScreenRecord {
            agent: tg_types::AgentId::numbered(2),
            score: Some(7.25),
            admitted: false,
            outlier_z: Some(9.625),
            flagged: true,
        }],
        reputation: Vec::new(),
    };
    let v2 = {
        let mut store = f.state.store.lock().unwrap();
        store.record_round(job, &mut r, Some(b"round 2")).unwrap();
        // The job's summary carries the same round history the CLI prints.
        let history = serde_json::json!({"history": [{
            "round": 2,
            "experts": &r.experts,
            "screened": &r.screened,
            "gate": &r.gate,
        }]});
        store
            .finish_job(job, tg_types::record::JobStatus::Completed, None, &history)
            .unwrap();
        r.model_sha256.clone().unwrap()
    };
    (f, v1, v2)
}

#[tokio::test]
async fn an_operator_rolls_back_through_the_api_and_it_is_audited() {
    let (f, v1, v2) = two_versions();
    let (op, viewer) = (token(ApiRole::Operator), token(ApiRole::Viewer));
    let models = format!("/api/v1/jobs/{}/models", f.job);
    let (s, text) = call(&f.state, &Method::GET, &models, Some(&viewer), "").await;
    assert_eq!(s, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["head"]["sha256"], v2.as_str());
    assert_eq!(v["versions"][1]["parent_sha256"], v1.as_str());

    let url = format!("/api/v1/jobs/{}/models/rollback", f.job);
    let body = |version: &str, reason: &str| {
        serde_json::json!({"version": version, "reason": reason}).to_string()
    };
    // A viewer may not; bad bodies and reasons are 400s that say what to change.
    let (s, _) = call(
        &f.state,
        &Method::POST,
        &url,
        Some(&viewer),
        &body(&v1, "x"),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    for (b, why) in [
        ("{}".to_owned(), "body must be"),
        (
            r#"{"version":"ab","reason":"x","extra":1}"#.to_owned(),
            "body must be",
        ),
        (body(&v1, "   "), "reason"),
        (body(&v1, "line\u{1b}[2Kforged"), "plain text"),
    ] {
        let (s, text) = call(&f.state, &Method::POST, &url, Some(&op), &b).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}: {text}");
        assert!(text.contains(why), "{b}: {text}");
    }
    let (s, _) = call(
        &f.state,
        &Method::POST,
        &url,
        Some(&op),
        &body("abcdef0123", "x"),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(&f.state, &Method::POST, &url, Some(&op), &body(&v2, "x")).await;
    assert_eq!(s, StatusCode::CONFLICT, "already the head");

    let (s, text) = call(
        &f.state,
        &Method::POST,
        &url,
        Some(&op),
        &body(&v1[..10], "round 2 regressed"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{text}");
    let done: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(done["rollback"]["sha256"], v1.as_str());
    assert!(
        done["rollback"]["actor"]
            .as_str()
            .unwrap()
            .starts_with("API token")
    );
    let (_, text) = call(&f.state, &Method::GET, &models, Some(&viewer), "").await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["head"]["sha256"], v1.as_str());
    assert_eq!(v["rollbacks"].as_array().unwrap().len(), 1);
    let log = std::fs::read_to_string(f.state.audit_log.as_ref().unwrap()).unwrap();
    let entry = log
        .lines()
        .find(|l| l.contains("model.rolled_back"))
        .unwrap();
    assert!(
        entry.contains("round 2 regressed") && entry.contains(&v1),
        "{entry}"
    );

    // A read-only server has nothing to audit with.
    let mut ro = f.state.clone();
    ro.audit = None;
    let (s, _) = call(&ro, &Method::POST, &url, Some(&op), &body(&v2, "x")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn per_expert_figures_are_for_operators_only() {
    let (f, _, _) = two_versions();
    for (role, shown) in [(ApiRole::Viewer, false), (ApiRole::Operator, true)] {
        for url in [
            format!("/api/v1/jobs/{}/rounds", f.job),
            format!("/api/v1/jobs/{}/rounds/2", f.job),
            format!("/api/v1/jobs/{}", f.job),
            "/api/v1/jobs".to_string(),
            format!("/api/v1/jobs/{}/models", f.job),
        ] {
            let (s, text) = call(&f.state, &Method::GET, &url, Some(&token(role)), "").await;
            assert_eq!(s, StatusCode::OK, "{text}");
            // Success per task tells which tasks the answering robots hold;
            // the gate's totals are for everyone.
            assert_eq!(text.contains("reach-wall"), shown, "{role:?} {url}: {text}");
            assert!(text.contains("difference_high"), "{role:?} {url}: {text}");
            if url.ends_with("/models") {
                continue;
            }
            assert_eq!(text.contains("step_norm"), shown, "{role:?} {url}: {text}");
            // Which tasks and what share of robots trained each expert, too.
            assert_eq!(text.contains("task_share"), shown, "{role:?} {url}: {text}");
            assert_eq!(
                text.contains("client_share"),
                shown,
                "{role:?} {url}: {text}"
            );
            // Robust aggregators' scores too; whether an update was admitted is for everyone.
            assert_eq!(text.contains("7.25"), shown, "{role:?} {url}: {text}");
            assert_eq!(text.contains("9.625"), shown, "{role:?} {url}: {text}");
            assert!(
                text.contains("\"admitted\":false"),
                "{role:?} {url}: {text}"
            );
        }
    }
}
