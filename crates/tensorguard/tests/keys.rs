//! Keys through the binary: `init`'s private identity key, `doctor`'s
//! permission check, and the fleet root that certifies agents' identities
//! (and what an agent does with a certificate at start-up).
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should fail the test loudly

use crate::common::Sandbox;

#[test]
fn init_writes_a_private_key_and_refuses_to_overwrite() {
    let sb = Sandbox::new();
    let dir = sb.path().join("cfg");
    let d = sb.json(&["init", "--dir", dir.to_str().unwrap(), "--json"]);
    assert_eq!(d["public_key"].as_str().unwrap().len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("identity.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
    sb.fails_with(&["init", "--dir", dir.to_str().unwrap()], "E040");
    sb.json(&["init", "--dir", dir.to_str().unwrap(), "--force", "--json"]);
    let cfg = dir.join("config.toml");
    sb.json(&[
        "--config",
        cfg.to_str().unwrap(),
        "config",
        "validate",
        "--json",
    ]);
    let doc = sb.json(&["--config", cfg.to_str().unwrap(), "doctor", "--json"]);
    assert_eq!(doc["ok"], true, "{doc}");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("identity.key"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let out = sb.run(&["--config", cfg.to_str().unwrap(), "doctor"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !out.status.success() && text.contains("E041") && text.contains("chmod 600"),
            "{text}"
        );
    }
}

#[test]
fn a_fleet_root_certifies_identities_that_agents_can_check() {
    let sb = Sandbox::new();
    let root_file = sb.path().join("fleet-root.key");
    let root_arg = root_file.to_str().unwrap();
    let v = sb.json(&["keys", "fleet-root", "--out", root_arg, "--json"]);
    let root_hex = v["fleet_root"].as_str().unwrap().to_owned();
    // Created once: a second run would orphan every certificate.
    sb.fails_with(&["keys", "fleet-root", "--out", root_arg], "E040");
    let identity = "ab".repeat(32);
    let c = sb.json(&[
        "keys",
        "certify",
        "--root",
        root_arg,
        "--identity",
        &identity,
        "--name",
        "robot-7",
        "--days",
        "30",
        "--json",
    ]);
    let cert = tg_proto::Certificate::from_text(c["certificate"].as_str().unwrap()).unwrap();
    let mut root = [0u8; 32];
    for (i, b) in root.iter_mut().enumerate() {
        *b = u8::from_str_radix(&root_hex[2 * i..2 * i + 2], 16).unwrap();
    }
    let now = cert.not_before + 60;
    assert!(cert.verify(&root, &[0xab; 32], now).is_ok());
    assert!(cert.verify(&root, &[0xac; 32], now).is_err());
    assert_eq!(cert.not_after - cert.not_before, 30 * 86_400);
    sb.fails_with(
        &[
            "keys",
            "certify",
            "--root",
            root_arg,
            "--identity",
            "xyz",
            "--name",
            "r",
        ],
        "E020",
    );
    // An agent that pins no root and allows no plaintext round would refuse
    // every round: refused at start-up, saying how to fix it.
    let nowhere = "/ip4/127.0.0.1/tcp/9";
    let err = sb.fails_with(&["agent", "start", "--coordinator", nowhere], "E020");
    assert!(err.contains("refuse every round"), "{err}");
    // A certificate issued for another identity than this agent's.
    let other = sb.path().join("other.cert");
    std::fs::write(&other, c["certificate"].as_str().unwrap()).unwrap();
    let other = other.to_str().unwrap();
    let err = sb.fails_with(
        &[
            "agent",
            "start",
            "--coordinator",
            nowhere,
            "--certificate",
            other,
        ],
        "E020",
    );
    assert!(err.contains("another identity"), "{err}");
}
