//! A coordinator serving its API for the operators' tests, and how they
//! find external tools.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use super::{free_port, http_get, tg_command, wait_for};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `name`, found by `env` or on PATH or at `fallback`; None (after saying
/// why) when absent and not required.
pub fn tool(name: &str, env: &str, fallback: Option<PathBuf>) -> Option<PathBuf> {
    let found = std::env::var_os(env)
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(name))
                    .find(|c| c.is_file())
            })
        })
        .or(fallback.filter(|f| f.exists()));
    if found.is_none() {
        let msg =
            format!("{name} not found (set {env}, or run .ci/run, which installs it): skipping");
        assert!(
            std::env::var("TENSORGUARD_REQUIRE_OPERATOR_TOOLS").as_deref() != Ok("1"),
            "{msg}"
        );
        eprintln!("SKIP: {msg}");
    }
    found
}

/// A coordinator serving its API (no job yet) with an admin token.
pub struct Served {
    pub dir: tempfile::TempDir,
    pub child: Child,
    pub addr: String,
    pub admin: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tensorguard --data-dir DIR ARGS…`, which must succeed; its stdout.
pub fn tg_ok(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = tg_command()
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tensorguard {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A new API token of `role` for the node in `dir`.
pub fn token(dir: &Path, role: &str) -> String {
    let out = tg_ok(dir, &["api", "token", "create", "--role", role, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

/// A one-time enrollment token from the coordinator in `dir`.
pub fn enrollment(dir: &Path) -> String {
    let out = tg_ok(dir, &["enroll", "create", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

pub fn serve(before: impl FnOnce(&Path)) -> Served {
    let dir = tempfile::tempdir().unwrap();
    before(dir.path());
    let admin = token(dir.path(), "admin");
    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.path().join("coordinator.log")).unwrap();
    let child = tg_command()
        .arg("--data-dir")
        .arg(dir.path())
        .args(["coordinator", "start", "--serve", "--api", &addr])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(60), || {
        (http_get(&addr, "/api/v1/openapi.json", None).0 == 200).then_some(())
    })
    .expect("the coordinator's API did not come up");
    Served {
        dir,
        child,
        addr,
        admin,
    }
}

pub fn job_file(port: u16) -> String {
    format!(
        "[job]\ndataset = \"digits\"\nclients = 2\nrounds = 3\nmin_clients = 2\n\n\
         [network]\nlisten = [\"/ip4/127.0.0.1/tcp/{port}\"]\nmdns = false\n\n\
         [deadlines]\njoin_secs = 120\n"
    )
}
