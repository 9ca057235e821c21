//! The binary on a terminal: what a person typing at it sees (and never
//! sees: a passphrase echoed).
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should fail the test loudly

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::Sandbox;

/// Runs `tensorguard init` on a pseudo-terminal (util-linux `script`),
/// typing each answer only once its prompt has appeared; returns the
/// terminal transcript and whether init succeeded.
fn init_on_a_terminal(sb: &Sandbox, dir: &Path, answers: &[&str]) -> Option<(String, bool)> {
    use std::io::{Read, Write};
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP: util-linux `script` is not installed; the terminal prompt is not tested");
        return None;
    }
    let command = format!(
        "{} --data-dir {} init --dir {}",
        env!("CARGO_BIN_EXE_tensorguard"),
        sb.data().display(),
        dir.display()
    );
    let mut child = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", sb.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, answer) in answers.iter().enumerate() {
        let prompt = if i == 0 {
            "passphrase (not echoed): "
        } else {
            "Repeat the passphrase: "
        };
        while !seen.contains(prompt) {
            assert!(
                Instant::now() < deadline,
                "no prompt {prompt:?} in {seen:?}"
            );
            let mut buf = [0u8; 256];
            let n = stdout.read(&mut buf).unwrap();
            assert!(n > 0, "the terminal closed before {prompt:?}: {seen:?}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        writeln!(stdin, "{answer}").unwrap();
    }
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    seen.push_str(&rest);
    Some((seen, child.wait().unwrap().success()))
}

#[test]
fn init_asks_for_the_passphrase_twice_on_a_terminal_and_never_echoes_it() {
    let sb = Sandbox::new();
    let dir = sb.path().join("tty");
    let Some((text, ok)) = init_on_a_terminal(&sb, &dir, &["Tr1cky pass", "Tr1cky pass"]) else {
        return;
    };
    assert!(ok, "{text}");
    assert!(
        !text.contains("Tr1cky"),
        "the passphrase was echoed: {text}"
    );
    assert!(dir.join("identity.key").exists(), "{text}");
    // The key opens with that passphrase and no other.
    let cfg = dir.join("config.toml");
    let open = |pass: &str| {
        sb.cmd()
            .env("TENSORGUARD_KEY_PASSPHRASE", pass)
            .args(["--config", cfg.to_str().unwrap(), "doctor", "--json"])
            .output()
            .unwrap()
    };
    assert!(open("Tr1cky pass").status.success());
    assert!(!open("another").status.success());

    let other = sb.path().join("tty2");
    let (text, ok) = init_on_a_terminal(&sb, &other, &["first one", "second one"]).unwrap();
    assert!(
        !ok && text.contains("E043") && text.contains("differ"),
        "{text}"
    );
    assert!(!other.join("identity.key").exists());
}
