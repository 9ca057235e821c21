//! The alert rules and Grafana dashboards in `deploy/` use only metric
//! names the binaries export: a renamed or removed metric fails here, not
//! silently on an operator's dashboard.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

/// Every sample name a node of `role` exports once each family has a value.
fn exported(role: &str) -> BTreeSet<String> {
    let m = tg_metrics::Metrics::new(role);
    m.round_finished("committed", 1);
    m.stage(1, "aggregate", 0.1);
    m.rejected("replay");
    m.admission("accepted", "allow-list");
    m.api_denied("forbidden");
    m.audit_write_failed();
    m.job(Some((3, Some(1.0))));
    m.attach_disk(|| {
        Some(tg_metrics::DiskSnapshot {
            available: 1,
            size: 2,
        })
    });
    m.encode()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// `tensorguard_…` identifiers in a text.
fn used(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("tensorguard_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        // Metric names, not file or job names (`tensorguard-coordinator`).
        if name.starts_with("tensorguard_coordinator_") || name.starts_with("tensorguard_agent_") {
            out.insert(name.to_owned());
        }
        rest = &tail[end..];
    }
    out
}

#[test]
fn alert_rules_and_dashboards_use_only_exported_metrics() {
    let mut known = exported("coordinator");
    known.extend(exported("agent"));
    let mut files = vec![deploy().join("prometheus/alerts.yml")];
    for entry in std::fs::read_dir(deploy().join("grafana")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            files.push(path);
        }
    }
    assert!(
        files.len() >= 5,
        "expected the alert rules and four dashboards: {files:?}"
    );
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        if file.extension().is_some_and(|e| e == "json") {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(
                v["panels"].as_array().is_some_and(|p| !p.is_empty()),
                "{file:?}"
            );
        }
        let names = used(&text);
        assert!(!names.is_empty(), "{file:?} uses no TensorGuard metric");
        for name in names {
            assert!(
                known.contains(&name),
                "{}: `{name}` is not exported (exported: {known:?})",
                file.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} metric uses checked");
}

#[test]
fn there_are_at_least_ten_alert_rules() {
    let text = std::fs::read_to_string(deploy().join("prometheus/alerts.yml")).unwrap();
    let rules = text.matches("- alert:").count();
    assert!(rules >= 10, "{rules} alert rules");
}
