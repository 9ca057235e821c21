//! Shared helpers for the end-to-end tests: an isolated sandbox per test.
#![allow(clippy::unwrap_used, dead_code)] // test helpers; each test binary uses a subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// An isolated home: config, data dir and environment of its own.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data(&self) -> PathBuf {
        self.path().join("data")
    }

    pub fn cmd(&self) -> Command {
        self.cmd_with_data_dir(&self.data())
    }

    pub fn cmd_with_data_dir(&self, data: &Path) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tensorguard"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .env("XDG_CONFIG_HOME", self.path().join("config"))
            .env("XDG_DATA_HOME", self.path().join("xdg-data"))
            .env("NO_COLOR", "1")
            .env("TENSORGUARD_KEY_PASSPHRASE", "cli-test-passphrase")
            .arg("--data-dir")
            .arg(data)
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: stdout is not one JSON object ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Runs a command expected to fail with `code`; returns stderr.
    pub fn fails_with(&self, args: &[&str], code: &str) -> String {
        let out = self.run(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(
            err.contains(&format!("error[{code}]")),
            "{args:?}: expected {code}, got: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        // what — why — what to do
        assert!(
            err.matches(" — ").count() >= 2,
            "{args:?}: error lacks why/what-to-do: {err}"
        );
        err
    }
}
