//! A verified log's report cannot hide what the log holds.
use super::*;
use crate::audit::event::{AgentAudit, Encryption};
use serde_json::json;
use tg_types::record::{JobStatus, RoundStatus};

fn entry(seq: u64, kind: &str, body: Value) -> Entry {
    Entry {
        seq,
        time: 0,
        kind: kind.into(),
        job: Some("job-1".into()),
        signer: String::new(),
        body,
        prev: String::new(),
        hash: String::new(),
        sig: String::new(),
    }
}

fn created(rounds: u32) -> AuditEvent {
    let text = String::from("x");
    AuditEvent::JobCreated(Box::new(JobCreated {
        rounds,
        clients: 3,
        quorum: 2,
        strategy: tg_types::spec::StrategyConfig::defaults_for(
            tg_types::spec::StrategyKind::FedAvg,
        ),
        model: tg_types::spec::ModelKind::Mlp,
        dataset: tg_types::spec::DatasetSpec::Digits,
        encryption: Encryption {
            transport: text.clone(),
            frame_signatures: text.clone(),
            secure_aggregation: text.clone(),
            secagg_bits: None,
            secagg_mask_prg: None,
            secagg_clip_l2: None,
            secagg_assumed_corrupt_fraction: None,
            secagg_assumed_dropout_fraction: None,
            secagg_sparsity: None,
            keys_at_rest: text.clone(),
            audit_log: text.clone(),
            models: text,
        },
        privacy: None,
        attestation: json!("not required"),
        simulation: None,
    }))
}

fn round(n: u32) -> AuditEvent {
    AuditEvent::Round(RoundAudit {
        round: n,
        status: RoundStatus::Committed,
        selected: 3,
        participants: 3,
        quorum: 2,
        epsilon: None,
        model_sha256: Some("ab".into()),
        accuracy: Some(0.5),
        reason: None,
        agents: vec![AgentAudit {
            agent: "a".into(),
            outcome: tg_types::record::ParticipantOutcome::Contributed,
            attestation: None,
            measurement: None,
        }],
        gate: None,
        screened: Vec::new(),
        reputation: Vec::new(),
    })
}

#[test]
fn a_verified_log_cannot_hide_a_resume_a_missing_round_or_the_jobs_end() {
    let finished = AuditEvent::JobFinished(Box::new(JobSummary {
        job: "job-1".into(),
        kind: "fleet".into(),
        status: JobStatus::Completed,
        reason: None,
        rounds: 3,
        rounds_committed: 3,
        rounds_failed: 0,
        final_accuracy: Some(0.5),
        final_loss: None,
        final_model_sha256: Some("ab".into()),
        epsilon: None,
        epsilon_vs_coordinator: None,
        budget_exhausted: None,
        simulation: None,
    }));
    let events = [created(3), round(1), created(9), round(3), finished];
    let entries: Vec<Entry> = events
        .iter()
        .enumerate()
        .map(|(i, e)| entry(i as u64, e.kind(), e.body()))
        .chain([entry(9, "job.mystery", json!({}))])
        .collect();
    let verified = VerifyReport {
        ok: true,
        entries: entries.len() as u64,
        last_hash: None,
        last_seq: None,
        signers: Vec::new(),
        findings: Vec::new(),
    };
    let r = build("job", &entries, &verified, &[], Path::new("audit.log"), 0).unwrap();
    let md = markdown(&r);
    assert!(md.contains("DIFFERENT settings"), "{md}");
    assert!(md.contains("missing rounds [2]"), "{md}");
    assert!(
        md.contains("The job's end counts 3 rounds; the log records 2"),
        "{md}"
    );
    assert!(md.contains("job.mystery"), "{md}");
}
