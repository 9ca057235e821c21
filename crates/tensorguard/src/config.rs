//! Configuration: flags > environment (`TENSORGUARD_*`) > config file > defaults.
//!
//! Clap resolves flags and environment variables (each flag names its
//! variable); this module layers the TOML file and the defaults underneath,
//! and validates a file so that every problem names its key and line.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::errors::{Code, UserError};

/// The config file's schema. Unknown keys are errors.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Defaults for `tensorguard demo`.
    #[serde(default)]
    pub demo: tg_job::JobSection,
    /// Node identity.
    #[serde(default)]
    pub identity: IdentitySection,
    /// Key rotation schedule.
    #[serde(default)]
    pub keys: KeysSection,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysSection {
    /// Rotate keys older than this (e.g. "90d"); `keys rotate --if-due` and
    /// `keys list` use it.
    pub rotate_after: Option<String>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    /// Path of the Ed25519 identity key.
    pub key_file: Option<PathBuf>,
}

pub use tg_job::defaults;

/// The XDG directories of TensorGuard.
pub fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "tensorguard")
}

pub fn default_config_dir() -> Option<PathBuf> {
    project_dirs().map(|d| d.config_dir().to_owned())
}

/// The config file in effect and the loaded contents.
pub struct Loaded {
    pub path: Option<PathBuf>,
    pub file: FileConfig,
}

/// Loads the config: an explicit path must exist; the default path is optional.
pub fn load(explicit: Option<&Path>) -> Result<Loaded, UserError> {
    let (path, required) = match explicit {
        Some(p) => (Some(p.to_owned()), true),
        None => (default_config_dir().map(|d| d.join("config.toml")), false),
    };
    let Some(path) = path else {
        return Ok(Loaded {
            path: None,
            file: FileConfig::default(),
        });
    };
    if !path.exists() && !required {
        return Ok(Loaded {
            path: None,
            file: FileConfig::default(),
        });
    }
    let file = parse_file(&path)?;
    Ok(Loaded {
        path: Some(path),
        file,
    })
}

/// Reads and fully validates a config file.
pub fn parse_file(path: &Path) -> Result<FileConfig, UserError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        UserError::new(
            Code::ConfigInvalid,
            format!("cannot read config file {}", path.display()),
            e.to_string(),
            "check the path given with --config or TENSORGUARD_CONFIG",
        )
    })?;
    let file: FileConfig = toml::from_str(&text).map_err(|e| {
        let line = e.span().map_or(0, |s| line_of(&text, s.start));
        let msg = e.message().to_owned();
        let code = if msg.starts_with("unknown field") {
            Code::ConfigUnknownKey
        } else {
            Code::ConfigInvalid
        };
        UserError::new(
            code,
            format!("{}:{line}: {msg}", path.display()),
            "the config file does not match the schema",
            "fix that line; `tensorguard config show` lists every key with its current value",
        )
    })?;
    check_values(&file.demo).map_err(|(key, err)| {
        let line = find_key_line(&text, &key);
        UserError::new(
            Code::InvalidValue,
            format!("{}:{line}: demo.{key}: {}", path.display(), err.what),
            err.why,
            err.fix,
        )
    })?;
    Ok(file)
}

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

fn find_key_line(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let t = l.trim_start();
            t.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(0, |i| i + 1)
}

/// Checks every value of a demo section, reporting the first bad key.
fn check_values(d: &tg_job::JobSection) -> Result<(), (String, UserError)> {
    tg_job::Job::resolve(d, None, None, tg_job::Runner::Simulation)
        .map(|_| ())
        .map_err(|e| {
            (
                e.key().unwrap_or("demo").to_owned(),
                crate::errors::from_job(e),
            )
        })
}

/// The data directory: flag/env > file > XDG default.
pub fn data_dir(flag: Option<&Path>, file: &FileConfig) -> Result<PathBuf, UserError> {
    flag.map(Path::to_owned)
        .or_else(|| file.data_dir.clone())
        .or_else(|| project_dirs().map(|d| d.data_dir().to_owned()))
        .ok_or_else(|| {
            UserError::new(
                Code::DataDirUnwritable,
                "no data directory",
                "no --data-dir was given and no home directory was found for the default",
                "pass --data-dir DIR or set TENSORGUARD_DATA_DIR",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    #[test]
    fn typo_names_key_and_line() {
        let (_d, p) = write("data_dir = \"/tmp/x\"\n\n[demo]\nclinets = 5\n");
        let e = parse_file(&p).unwrap_err();
        assert_eq!(e.code, Code::ConfigUnknownKey);
        assert!(e.what.contains(":4:") && e.what.contains("clinets"), "{e}");
    }

    #[test]
    fn bad_value_names_key_and_line() {
        let (_d, p) = write("[demo]\nrounds = 3\npartition = \"dirichlet:-1\"\n");
        let e = parse_file(&p).unwrap_err();
        assert!(
            e.what.contains(":3:") && e.what.contains("demo.partition"),
            "{e}"
        );
        let (_d, p) = write("[demo]\nclients = \"ten\"\n");
        assert_eq!(parse_file(&p).unwrap_err().code, Code::ConfigInvalid);
    }
}
