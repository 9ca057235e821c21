//! Reputation over the REST API: the fleet view shows each agent's standing
//! (its last score to operators only), and an operator's reinstatement of an
//! excluded agent is refused unless it can be audited, and audited first.
#![allow(clippy::unwrap_used)]

use crate::common::{call, fixture, token};
use axum::http::{Method, StatusCode};
use serde_json::Value;
use tg_store::{ApiRole, NewJob};
use tg_types::reputation::{Reputation, ReputationPolicy, Standing};
use tg_types::{AgentId, JobId};

#[tokio::test]
async fn an_operator_reinstates_an_excluded_agent_and_it_is_audited() {
    let f = fixture();
    let job = JobId::from_bytes([8; 16]);
    let policy = ReputationPolicy::default();
    let attacker = AgentId::new("12D3KooWattacker").unwrap();
    let honest = AgentId::new("12D3KooWhonest").unwrap();
    {
        let mut store = f.state.store.lock().unwrap();
        store
            .create_job(&NewJob {
                id: job,
                kind: "fleet",
                spec: &serde_json::json!({"rounds": 5, "reputation": policy}),
            })
            .unwrap();
        let mut a = Reputation::new(attacker.clone());
        for round in 1..=3 {
            a.observe(&policy, round, true, false, Some(41.5));
        }
        let mut h = Reputation::new(honest.clone());
        h.observe(&policy, 1, false, true, Some(0.4));
        store.save_reputations(job, &[a, h]).unwrap();
    }
    let (op, viewer) = (token(ApiRole::Operator), token(ApiRole::Viewer));

    // The fleet view: standing for everyone, scores for operators.
    let (s, text) = call(&f.state, &Method::GET, "/api/v1/agents", Some(&viewer), "").await;
    assert_eq!(s, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let row = |v: &Value, id: &AgentId| {
        v["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["peer_id"] == id.as_str())
            .cloned()
            .unwrap()
    };
    let a = row(&v, &attacker);
    assert_eq!(a["reputation"]["standing"], "excluded", "{a}");
    assert_eq!(a["reputation"]["flagged"], 3);
    assert!(a["reputation"].get("last_score").is_none(), "{a}");
    assert_eq!(row(&v, &honest)["reputation"]["standing"], "good");
    let (_, text) = call(&f.state, &Method::GET, "/api/v1/agents", Some(&op), "").await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(row(&v, &attacker)["reputation"]["last_score"], 41.5);

    let url = |agent: &AgentId| format!("/api/v1/jobs/{job}/agents/{agent}/reinstate");
    let body = |reason: &str| serde_json::json!({ "reason": reason }).to_string();
    // A viewer may not; bodies and reasons are checked; only an excluded
    // agent of a job that keeps reputation can be reinstated.
    let (s, _) = call(
        &f.state,
        &Method::POST,
        &url(&attacker),
        Some(&viewer),
        &body("x"),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    for (b, why) in [
        ("{}".to_owned(), "body must be"),
        (r#"{"reason":"x","extra":1}"#.to_owned(), "body must be"),
        (body("  "), "reason"),
        (body("ok\u{1b}[2Kforged"), "plain text"),
    ] {
        let (s, text) = call(&f.state, &Method::POST, &url(&attacker), Some(&op), &b).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}: {text}");
        assert!(text.contains(why), "{b}: {text}");
    }
    let (s, text) = call(
        &f.state,
        &Method::POST,
        &url(&honest),
        Some(&op),
        &body("x"),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{text}");
    let nobody = AgentId::new("12D3KooWnobody").unwrap();
    let (s, _) = call(
        &f.state,
        &Method::POST,
        &url(&nobody),
        Some(&op),
        &body("x"),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let other = format!("/api/v1/jobs/{}/agents/{attacker}/reinstate", f.job);
    let (s, text) = call(&f.state, &Method::POST, &other, Some(&op), &body("x")).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a job without reputation: {text}");

    let (s, text) = call(
        &f.state,
        &Method::POST,
        &url(&attacker),
        Some(&op),
        &body("its sensor was recalibrated"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{text}");
    let done: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(done["reputation"]["standing"], "good");
    let back = f
        .state
        .store
        .lock()
        .unwrap()
        .reputations(&job.to_string())
        .unwrap();
    let a = back.iter().find(|r| r.agent == attacker).unwrap();
    assert_eq!((a.standing, a.weight, a.flagged), (Standing::Good, 1.0, 3));
    let log = std::fs::read_to_string(f.state.audit_log.as_ref().unwrap()).unwrap();
    let entry: Value = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["kind"] == "agent.reinstated")
        .expect("audited");
    assert_eq!(entry["body"]["change"]["from"], "excluded");
    assert_eq!(entry["body"]["change"]["agent"], attacker.as_str());
    assert!(
        entry["body"]["change"]["reason"]
            .as_str()
            .unwrap()
            .contains("recalibrated")
    );
    // Reinstated once: a second request finds it in good standing.
    let (s, _) = call(
        &f.state,
        &Method::POST,
        &url(&attacker),
        Some(&op),
        &body("again"),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
}
