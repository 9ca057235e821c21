//! `tensorguard attest`: verify TEE evidence offline, detect the local TEE.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::json;
use tg_attest::{Evidence, Expected, Policy, SnpAnchors, Status, TrustAnchors, Verdict};

use crate::cli::{AttestCommand, AttestVerifyArgs, EvidenceKind};
use crate::errors::{Code, UserError, invalid};
use crate::output::Output;

pub fn run(cmd: AttestCommand, out: &Output) -> Result<(), UserError> {
    match cmd {
        AttestCommand::Verify(a) => verify(&a, out),
        AttestCommand::Detect { root } => detect(&root, out),
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, UserError> {
    std::fs::read(path).map_err(|e| {
        UserError::new(
            Code::EvidenceUnreadable,
            format!("cannot read the {what} {}", path.display()),
            e.to_string(),
            "check the path and its permissions",
        )
    })
}

/// Parses `--at`: RFC 3339, e.g. 2025-07-04T10:28:44Z.
pub fn parse_time(s: &str) -> Result<SystemTime, UserError> {
    humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).map_err(|e| {
        invalid(
            format!("--at {s}: {e}"),
            "the verification time must be an RFC 3339 UTC time",
            "write it like 2025-07-04T10:28:44Z",
        )
    })
}

/// Reads a policy file: JSON when it ends in .json, TOML otherwise.
pub fn load_policy(path: &Path) -> Result<Policy, UserError> {
    let bytes = read(path, "policy file")?;
    let text = String::from_utf8_lossy(&bytes);
    let parsed = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str::<Policy>(&text).map_err(|e| e.to_string())
    } else {
        toml::from_str::<Policy>(&text).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| {
        invalid(
            format!("policy {}: {e}", path.display()),
            "the attestation policy is not valid",
            "keys: hardware = [\"snp\",\"tdx\",\"sgx\"], measurements = [hex…], allow_debug, min_tcb = {snp = 8, …}, intel_tcb_status = [\"UpToDate\", …]",
        )
    })
}

fn anchors(a: &AttestVerifyArgs) -> Result<TrustAnchors, UserError> {
    let mut anchors = TrustAnchors::default();
    if !a.amd_root.is_empty() {
        let roots = a
            .amd_root
            .iter()
            .map(|p| read(p, "AMD root"))
            .collect::<Result<Vec<_>, _>>()?;
        anchors.snp = SnpAnchors::from_roots(&roots).map_err(|r| {
            invalid(
                format!("--amd-root: {r}"),
                "not a PEM or DER certificate",
                "pass AMD's ARK certificate",
            )
        })?;
    }
    if let Some(p) = &a.intel_root {
        anchors.intel_root_der = Some(read(p, "Intel root")?);
    }
    Ok(anchors)
}

fn evidence(a: &AttestVerifyArgs) -> Result<Evidence, UserError> {
    let body = read(&a.evidence, "evidence file")?;
    let collateral = a
        .collateral
        .as_deref()
        .map(|p| read(p, "collateral"))
        .transpose()?;
    Ok(match a.kind {
        EvidenceKind::Snp => {
            let mut certs = Vec::new();
            for p in &a.cert {
                let bytes = read(p, "certificate")?;
                certs.extend(tg_attest::snp_cert_bundle(&bytes).map_err(|r| {
                    UserError::new(
                        Code::EvidenceUnreadable,
                        format!("{}: {}", p.display(), r.detail),
                        "not a DER certificate or a PEM bundle",
                        "pass the VCEK/VLEK from AMD's KDS (DER or PEM)",
                    )
                })?);
            }
            Evidence::SevSnp {
                report: body,
                certs,
            }
        }
        EvidenceKind::Tdx => Evidence::Tdx {
            quote: body,
            collateral,
        },
        EvidenceKind::Sgx => Evidence::Sgx {
            quote: body,
            collateral,
        },
    })
}

fn report_data(hex_str: Option<&str>) -> Result<Option<[u8; 64]>, UserError> {
    let Some(h) = hex_str else { return Ok(None) };
    let mut rd = [0u8; 64];
    hex::decode_to_slice(h.trim(), &mut rd).map_err(|e| {
        invalid(
            format!("--report-data: {e}"),
            "report data is 64 bytes",
            "give exactly 128 hex digits",
        )
    })?;
    Ok(Some(rd))
}

fn verify(a: &AttestVerifyArgs, out: &Output) -> Result<(), UserError> {
    let at =
        a.at.as_deref()
            .map(parse_time)
            .transpose()?
            .unwrap_or_else(SystemTime::now);
    let policy = a.policy.as_deref().map(load_policy).transpose()?;
    let ev = evidence(a)?;
    let expected = Expected {
        report_data: report_data(a.report_data.as_deref())?,
        agent_key: None,
    };
    let verdict = tg_attest::appraise(&ev, &anchors(a)?, at, policy.as_ref(), &expected);
    // What a TRUSTED verdict does not say, said in every output.
    let code = match &policy {
        None => Some("NO POLICY: the hardware is genuine; what code it runs was not checked"),
        Some(p) if !p.pins_code() => {
            Some("ANY CODE: the policy pins no measurement; any code in a genuine TEE passes")
        }
        Some(_) => None,
    };
    if out.json {
        let mut v = verdict_json(&verdict, at);
        v["code_pinned"] = json!(code.is_none());
        v["code_label"] = json!(code);
        out.json_value(&v);
    } else {
        print_verdict(&verdict, at, out);
        if let Some(label) = code {
            out.line(&out.yellow(&format!("  {label}")));
        }
    }
    if verdict.status == Status::Trusted {
        Ok(())
    } else {
        Err(UserError::new(
            Code::Untrusted,
            format!("the {} evidence is UNTRUSTED", verdict.hardware_type),
            verdict
                .reasons
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join("; "),
            "see the reasons: re-fetch collateral or certificates, check --at, or fix the policy",
        ))
    }
}

/// The verdict as printed by `attest verify --json` (and stored in the audit log).
pub fn verdict_json(v: &Verdict, at: SystemTime) -> serde_json::Value {
    json!({
        "status": v.status,
        "hardware_type": v.hardware_type,
        "measurement": v.measurement,
        "reasons": v.reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "reason_codes": v.reasons.iter().map(|r| r.code).collect::<Vec<_>>(),
        "verified_at": humantime::format_rfc3339_seconds(at).to_string(),
        "claims": v.claims,
    })
}

fn print_verdict(v: &Verdict, at: SystemTime, out: &Output) {
    if out.json {
        out.json_value(&verdict_json(v, at));
        return;
    }
    let status = match v.status {
        Status::Trusted => out.green("TRUSTED"),
        Status::Untrusted => out.red("UNTRUSTED"),
    };
    out.line(&format!(
        "{status}  {} evidence, verified as of {}",
        v.hardware_type,
        humantime::format_rfc3339_seconds(at)
    ));
    if let Some(c) = &v.claims {
        out.line(&format!("  measurement  {}", hex::encode(&c.measurement)));
        out.line(&format!("  signer       {}", c.signer));
        let tcb: Vec<String> = c
            .tcb
            .iter()
            .map(|t| format!("{}={}", t.name, t.svn))
            .collect();
        out.line(&format!("  tcb          {}", tcb.join(" ")));
        if let Some(s) = &c.tcb_status {
            out.line(&format!("  intel status {s} {}", c.advisories.join(" ")));
        }
        out.line(&format!("  debug        {}", c.debug));
        out.line(&format!("  report data  {}", hex::encode(&c.report_data)));
    }
    for r in &v.reasons {
        out.line(&format!("  reason       {r}"));
    }
}

fn detect(root: &PathBuf, out: &Output) -> Result<(), UserError> {
    let found = tg_attest::detect::detect(root);
    if out.json {
        out.json_value(&json!({
            "root": root,
            "tee": found.first().map(|f| f.hardware),
            "interfaces": found.iter().map(|f| json!({"hardware": f.hardware, "interface": f.interface, "path": f.path})).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    if found.is_empty() {
        out.line(&format!(
            "no TEE: none of {CONFIGFS}, {TDX}, {SEV}, {GRAMINE} under {}",
            root.display(),
            CONFIGFS = tg_attest::detect::CONFIGFS_TSM,
            TDX = tg_attest::detect::TDX_GUEST,
            SEV = tg_attest::detect::SEV_GUEST,
            GRAMINE = tg_attest::detect::GRAMINE,
        ));
        out.line("agents on this machine can join only jobs that do not require a TEE (or run with --insecure, labelled untrusted)");
    }
    for f in &found {
        out.line(&format!(
            "{:<4} via {:<13} {}",
            f.hardware,
            f.interface,
            f.path.display()
        ));
    }
    Ok(())
}
