//! Trust end to end: an HSM-held audit key (SoftHSM2), the launch gate for
//! jobs that require a TEE, simulated attestation labelled everywhere, and a
//! compliance report built from the audit log.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;

fn softhsm_module() -> Option<PathBuf> {
    let candidates = [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib64/pkcs11/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ];
    let found = candidates.iter().map(PathBuf::from).find(|p| p.exists());
    if found.is_none() || which("softhsm2-util").is_none() {
        eprintln!(
            "SKIP: SoftHSM2 is not installed (`.ci/run` installs it: apt-get install softhsm2)"
        );
        return None;
    }
    found
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.exists())
}

#[test]
fn softhsm_holds_the_audit_key_end_to_end() {
    let Some(module) = softhsm_module() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let conf = root.path().join("softhsm2.conf");
    std::fs::create_dir_all(root.path().join("tokens")).unwrap();
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            root.path().join("tokens").display()
        ),
    )
    .unwrap();
    let conf_s = conf.to_str().unwrap();
    let init = std::process::Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", conf_s)
        .args([
            "--init-token",
            "--free",
            "--label",
            "tg-e2e",
            "--pin",
            "2468",
            "--so-pin",
            "97531",
        ])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let env = [
        ("SOFTHSM2_CONF", conf_s),
        ("TENSORGUARD_PKCS11_PIN", "2468"),
    ];
    let dir = root.path().join("node");
    let module_s = module.to_str().unwrap();

    ok(&tg(&dir, &env, &["--json", "keys", "generate"]));
    let audit = ok(&tg(
        &dir,
        &env,
        &[
            "--json",
            "keys",
            "generate",
            "--purpose",
            "audit",
            "--pkcs11-module",
            module_s,
            "--pkcs11-token",
            "tg-e2e",
        ],
    ));
    let hsm_public = audit["public_key"].as_str().unwrap().to_owned();
    assert_eq!(audit["storage"]["kind"], "pkcs11");
    // No secret for the HSM key exists on disk.
    let files: Vec<String> = std::fs::read_dir(dir.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.iter().all(|f| !f.starts_with("audit-")), "{files:?}");

    // Rotating the identity is recorded and signed by the HSM key.
    ok(&tg(&dir, &env, &["--json", "keys", "rotate"]));
    let export = tg(&dir, &env, &["audit", "export", "--format", "jsonl"]);
    let entries: Vec<serde_json::Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rotated = entries.iter().find(|e| e["kind"] == "key.rotated").unwrap();
    assert_eq!(
        rotated["signer"],
        hsm_public.as_str(),
        "the rotation must be signed by the token's key"
    );
    let v = ok(&tg(&dir, &env, &["--json", "audit", "verify"]));
    assert_eq!(v["ok"], true, "{v}");
    let v = ok(&tg(
        &dir,
        &env,
        &["--json", "audit", "verify", "--no-keyring"],
    ));
    assert_eq!(v["ok"], true, "the log alone authorises the HSM key: {v}");

    // A wrong PIN is a clear error, not a panic.
    let bad = tg(
        &dir,
        &[
            ("SOFTHSM2_CONF", conf_s),
            ("TENSORGUARD_PKCS11_PIN", "0000"),
        ],
        &["keys", "rotate"],
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("error[E045]"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // Tampering with what the HSM signed is detected.
    let log = dir.join("audit/audit.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&log, text.replacen("\"identity\"", "\"audit\"", 1)).unwrap();
    let v = tg(&dir, &env, &["--json", "audit", "verify"]);
    assert_eq!(v.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(v["ok"], false);
}

#[test]
fn tee_required_job_refuses_an_agent_without_a_tee() {
    let opts = JobOpts {
        clients: 1,
        rounds: 1,
        min_clients: 1,
        secure: None,
        attestation: true,
        ..JobOpts::default()
    };
    let mut fleet = Fleet::new(&opts);
    let empty_root = fleet.root.path().join("no-tee");
    std::fs::create_dir_all(&empty_root).unwrap();
    fleet.agent_args = vec!["--tee-root".into(), empty_root.display().to_string()];
    let addr = fleet.start_coordinator();
    fleet.start_agents(1, &addr);
    let status = wait_child(fleet.agents[0].as_mut().unwrap(), Duration::from_secs(60))
        .expect("agent exits");
    assert_eq!(status.code(), Some(2));
    let err = fleet.log("agent-0.err");
    assert!(
        err.contains("error[E092]: this job requires a TEE and this machine has none"),
        "{err}"
    );
    assert!(
        err.contains("--insecure"),
        "the message says what to do: {err}"
    );
}

#[test]
fn insecure_agents_are_simulated_untrusted_and_admitted_only_with_allow_simulated() {
    let opts = JobOpts {
        clients: 2,
        rounds: 2,
        min_clients: 2,
        secure: None,
        attestation: true,
        ..JobOpts::default()
    };

    // Without --allow-simulated the coordinator refuses simulated evidence.
    let mut strict = Fleet::new(&opts);
    strict.agent_args = vec![
        "--insecure".into(),
        "--tee-root".into(),
        strict.root.path().display().to_string(),
    ];
    let addr = strict.start_coordinator();
    strict.start_agents(1, &addr);
    let status = wait_child(strict.agents[0].as_mut().unwrap(), Duration::from_secs(60))
        .expect("agent exits");
    assert!(!status.success());
    let err = strict.log("agent-0.err");
    assert!(err.contains("UNTRUSTED"), "{err}");
    assert!(err.contains("--allow-simulated"), "{err}");
    drop(strict);

    // With it, they are admitted, the job runs, and every record says UNTRUSTED.
    let mut fleet = Fleet::new(&opts);
    fleet.coord_args = vec!["--allow-simulated".into()];
    fleet.agent_args = vec![
        "--insecure".into(),
        "--tee-root".into(),
        fleet.root.path().display().to_string(),
    ];
    let addr = fleet.start_coordinator();
    fleet.start_agents(2, &addr);
    let (status, summary) = fleet.wait_coordinator(Duration::from_secs(300));
    assert!(status.success(), "{}", fleet.log("coordinator.err"));
    assert_eq!(summary["rounds_committed"], 2, "{summary}");
    fleet.agents_exit_cleanly(2);
    let job = summary["job"].as_str().unwrap().to_owned();
    assert!(
        fleet
            .log("coordinator.err")
            .contains("SIMULATED — UNTRUSTED"),
        "coordinator output labels it"
    );
    assert!(
        fleet.log("agent-0.err").contains("UNTRUSTED"),
        "agent output labels it"
    );

    let coord = fleet.coord_dir();
    let v = ok(&tg(&coord, &[], &["--json", "audit", "verify"]));
    assert_eq!(v["ok"], true, "{v}");
    let export = tg(
        &coord,
        &[],
        &["audit", "export", "--format", "jsonl", "--job", &job],
    );
    let entries: Vec<serde_json::Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let admitted: Vec<_> = entries
        .iter()
        .filter(|e| e["kind"] == "admission.accepted")
        .collect();
    assert_eq!(admitted.len(), 2);
    for a in &admitted {
        assert_eq!(a["body"]["attestation"]["simulated"], true);
        assert_eq!(a["body"]["attestation"]["status"], "UNTRUSTED");
        // The job pins no measurement (measurements = "any"): said in the record.
        let label = a["body"]["attestation"]["label"].as_str().unwrap();
        assert!(label.contains("ANY CODE"), "{label}");
    }
    let committed: Vec<_> = entries
        .iter()
        .filter(|e| e["kind"] == "round.committed")
        .collect();
    assert_eq!(committed.len(), 2);
    assert!(
        committed[0]["body"]["agents"][0]["attestation"]
            .as_str()
            .unwrap()
            .contains("UNTRUSTED")
    );
    assert!(committed[0]["body"]["model_sha256"].is_string());

    // The compliance report has every section, in Markdown and HTML.
    let report = ok(&tg(
        &coord,
        &[],
        &["--json", "audit", "report", "--job", &job[..8]],
    ));
    let md = std::fs::read_to_string(report["markdown"].as_str().unwrap()).unwrap();
    let html = std::fs::read_to_string(report["html"].as_str().unwrap()).unwrap();
    for section in [
        "Audit log integrity",
        "Key rotation history",
        "Encryption parameters",
        "Privacy spent per round",
        "Quorum per round",
        "Attestation outcomes",
    ] {
        assert!(md.contains(section), "markdown lacks {section}:\n{md}");
        assert!(html.contains(section), "html lacks {section}");
    }
    assert!(md.contains("VERIFIED"), "{md}");
    assert!(md.contains("SIMULATED — UNTRUSTED"), "{md}");
    assert!(
        md.contains("secagg") || md.contains("secure_aggregation"),
        "{md}"
    );
    assert!(html.starts_with("<!doctype html>"));
}

#[test]
fn api_tokens_are_shown_once_stored_hashed_and_audited() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node");
    ok(&tg(&dir, &[], &["--json", "keys", "generate"]));
    let created = ok(&tg(
        &dir,
        &[],
        &[
            "--json", "api", "token", "create", "--role", "viewer", "--label", "grafana",
        ],
    ));
    let token = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(token.starts_with(&format!("tgapi_{id}_")));
    // The database holds the digest, never the token.
    let db = std::fs::read(dir.join("tensorguard.db")).unwrap_or_default();
    let secret = token.rsplit('_').next().unwrap();
    assert!(!String::from_utf8_lossy(&db).contains(secret));
    let list = ok(&tg(&dir, &[], &["--json", "api", "token", "list"]));
    assert_eq!(list["tokens"][0]["role"], "viewer");
    assert!(
        list.to_string().find(secret).is_none(),
        "list never shows the secret"
    );
    ok(&tg(&dir, &[], &["api", "token", "revoke", &id]));
    let again = tg(&dir, &[], &["api", "token", "revoke", &id]);
    assert_eq!(again.status.code(), Some(2));
    let export = tg(&dir, &[], &["audit", "export"]);
    let text = String::from_utf8_lossy(&export.stdout);
    assert!(text.contains("api.token_created") && text.contains("api.token_revoked"));
    assert!(!text.contains(secret));
}
