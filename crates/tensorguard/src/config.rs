//! Configuration: flags > environment (`TENSORGUARD_*`) > config file > defaults.
//!
//! Clap resolves flags and environment variables (each flag names its
//! variable); this module layers the TOML file and the defaults underneath,
//! and validates a file so that every problem names its key and line.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tg_types::spec::{
    DatasetSpec, JobSpec, ModelKind, OptimizerSpec, PartitionSpec, StrategyConfig, StrategyKind,
    TrainConfig,
};

use crate::cli::DemoArgs;
use crate::errors::{CliError, Code, invalid};

/// The config file's schema. Unknown keys are errors.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Defaults for `tensorguard demo`.
    #[serde(default)]
    pub demo: DemoSection,
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
pub struct DemoSection {
    pub clients: Option<u32>,
    pub rounds: Option<u32>,
    pub strategy: Option<String>,
    pub partition: Option<String>,
    pub dataset: Option<String>,
    pub model: Option<String>,
    pub local_epochs: Option<u32>,
    pub batch_size: Option<u32>,
    pub lr: Option<f64>,
    pub optimizer: Option<String>,
    pub compress: Option<String>,
    pub fraction: Option<f64>,
    pub min_clients: Option<u32>,
    pub dropout: Option<f64>,
    pub seed: Option<u64>,
    pub hidden: Option<usize>,
    pub mu: Option<f32>,
    pub server_lr: Option<f32>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    /// Path of the Ed25519 identity key.
    pub key_file: Option<PathBuf>,
}

/// Defaults of the demo: chosen to converge on non-IID digits in well under a minute on 2 cores.
pub mod defaults {
    pub const CLIENTS: u32 = 10;
    pub const ROUNDS: u32 = 50;
    pub const STRATEGY: &str = "fedavg";
    pub const PARTITION: &str = "dirichlet:0.5";
    pub const DATASET: &str = "digits";
    pub const MODEL: &str = "mlp";
    pub const LOCAL_EPOCHS: u32 = 2;
    pub const BATCH_SIZE: u32 = 16;
    pub const LR: f64 = 0.1;
    pub const OPTIMIZER: &str = "sgd";
    pub const COMPRESS: &str = "none";
    pub const FRACTION: f64 = 1.0;
    pub const DROPOUT: f64 = 0.0;
    pub const SEED: u64 = 42;
    pub const HIDDEN: usize = 64;
}

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
pub fn load(explicit: Option<&Path>) -> Result<Loaded, CliError> {
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
pub fn parse_file(path: &Path) -> Result<FileConfig, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::new(
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
        CliError::new(
            code,
            format!("{}:{line}: {msg}", path.display()),
            "the config file does not match the schema",
            "fix that line; `tensorguard config show` lists every key with its current value",
        )
    })?;
    check_values(&file.demo).map_err(|(key, err)| {
        let line = find_key_line(&text, key);
        CliError::new(
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
fn check_values(d: &DemoSection) -> Result<(), (&'static str, CliError)> {
    let args = DemoArgs::default();
    resolve_demo(&args, d).map(|_| ())
}

/// Resolves the demo's job spec from flags/env over file over defaults.
/// On error, returns the offending key with the error.
pub fn resolve_demo(a: &DemoArgs, f: &DemoSection) -> Result<JobSpec, (&'static str, CliError)> {
    use defaults as d;
    macro_rules! pick {
        ($field:ident, $default:expr) => {
            a.$field
                .clone()
                .or_else(|| f.$field.clone())
                .unwrap_or_else(|| $default.into())
        };
    }
    fn parse<T: std::str::FromStr<Err = tg_types::spec::SpecError>>(
        key: &'static str,
        s: &str,
    ) -> Result<T, (&'static str, CliError)> {
        s.parse::<T>().map_err(|e| {
            (
                key,
                invalid(
                    e.to_string(),
                    format!("--{} takes one of the listed forms", key.replace('_', "-")),
                    format!("use {}", e.expected),
                ),
            )
        })
    }
    let clients: u32 = pick!(clients, d::CLIENTS);
    if clients == 0 {
        return Err((
            "clients",
            invalid(
                "--clients 0",
                "a federation needs at least one client",
                "use --clients 1 or more (default 10)",
            ),
        ));
    }
    let rounds: u32 = pick!(rounds, d::ROUNDS);
    if rounds == 0 {
        return Err((
            "rounds",
            invalid(
                "--rounds 0",
                "at least one round is needed to train",
                "use --rounds 1 or more",
            ),
        ));
    }
    let strategy: StrategyKind = parse("strategy", &pick!(strategy, d::STRATEGY))?;
    let partition: PartitionSpec = parse("partition", &pick!(partition, d::PARTITION))?;
    let dataset: DatasetSpec = parse("dataset", &pick!(dataset, d::DATASET))?;
    let model: ModelKind = parse("model", &pick!(model, d::MODEL))?;
    let compress: tg_types::spec::Compression = parse("compress", &pick!(compress, d::COMPRESS))?;
    let local_epochs: u32 = pick!(local_epochs, d::LOCAL_EPOCHS);
    let batch_size: u32 = pick!(batch_size, d::BATCH_SIZE);
    if local_epochs == 0 || batch_size == 0 {
        return Err((
            "local_epochs",
            invalid(
                "local epochs and batch size must be at least 1",
                "no training would happen",
                "use --local-epochs 1+ and --batch-size 1+",
            ),
        ));
    }
    let lr: f64 = pick!(lr, d::LR);
    if !(lr > 0.0 && lr.is_finite()) {
        return Err((
            "lr",
            invalid(
                format!("--lr {lr}"),
                "the learning rate must be a positive number",
                "try --lr 0.1 (SGD) or --lr 0.001 (AdamW)",
            ),
        ));
    }
    let optimizer = match pick!(optimizer, d::OPTIMIZER).as_str() {
        "sgd" => OptimizerSpec::Sgd,
        "adamw" => OptimizerSpec::AdamW { weight_decay: 1e-4 },
        other => {
            return Err((
                "optimizer",
                invalid(
                    format!("--optimizer {other}"),
                    "unknown optimizer",
                    "use sgd or adamw",
                ),
            ));
        }
    };
    let fraction: f64 = pick!(fraction, d::FRACTION);
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err((
            "fraction",
            invalid(
                format!("--fraction {fraction}"),
                "the sampling fraction must be in (0, 1]",
                "use e.g. --fraction 0.5",
            ),
        ));
    }
    let min_clients: u32 = a
        .min_clients
        .or(f.min_clients)
        .unwrap_or_else(|| clients.div_ceil(2).max(1));
    if min_clients == 0 {
        return Err((
            "min_clients",
            invalid(
                "--min-clients 0",
                "a round with no updates cannot produce a model",
                "use --min-clients 1 or more",
            ),
        ));
    }
    if min_clients > clients {
        return Err((
            "min_clients",
            CliError::new(
                Code::QuorumTooLarge,
                format!("quorum --min-clients {min_clients} is larger than --clients {clients}"),
                "no round could ever commit",
                format!("use --min-clients {} or less, or more --clients", clients),
            ),
        ));
    }
    let dropout: f64 = pick!(dropout, d::DROPOUT);
    if !(0.0..1.0).contains(&dropout) {
        return Err((
            "dropout",
            invalid(
                format!("--dropout {dropout}"),
                "the dropout probability must be in [0, 1)",
                "use e.g. --dropout 0.3",
            ),
        ));
    }
    let hidden: usize = pick!(hidden, d::HIDDEN);
    if hidden == 0 {
        return Err((
            "hidden",
            invalid(
                "--hidden 0",
                "the hidden layer needs at least one unit",
                "use e.g. --hidden 64",
            ),
        ));
    }
    let mut sc = StrategyConfig::defaults_for(strategy);
    if let Some(mu) = a.mu.or(f.mu) {
        if !(mu >= 0.0 && mu.is_finite()) {
            return Err((
                "mu",
                invalid(
                    format!("--mu {mu}"),
                    "FedProx μ must be ≥ 0",
                    "use e.g. --mu 0.01",
                ),
            ));
        }
        sc.proximal_mu = mu;
    }
    if let Some(slr) = a.server_lr.or(f.server_lr) {
        if !(slr > 0.0 && slr.is_finite()) {
            return Err((
                "server_lr",
                invalid(
                    format!("--server-lr {slr}"),
                    "the server learning rate must be positive",
                    "use 1.0 for FedAvg, 0.01 for FedAdam",
                ),
            ));
        }
        sc.server_lr = slr;
    }
    Ok(JobSpec {
        dataset,
        partition,
        model,
        hidden,
        strategy: sc,
        train: TrainConfig {
            local_epochs,
            batch_size,
            learning_rate: lr,
            optimizer,
            dp_sgd: None,
            compress,
        },
        rounds,
        clients,
        fraction,
        min_clients,
        dropout,
        seed: pick!(seed, d::SEED),
        privacy: None,
        secure_aggregation: None,
    })
}

/// The data directory: flag/env > file > XDG default.
pub fn data_dir(flag: Option<&Path>, file: &FileConfig) -> Result<PathBuf, CliError> {
    flag.map(Path::to_owned)
        .or_else(|| file.data_dir.clone())
        .or_else(|| project_dirs().map(|d| d.data_dir().to_owned()))
        .ok_or_else(|| {
            CliError::new(
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

    #[test]
    fn flags_beat_file_beat_defaults() {
        let file = DemoSection {
            clients: Some(7),
            rounds: Some(3),
            ..Default::default()
        };
        let args = DemoArgs {
            rounds: Some(9),
            ..Default::default()
        };
        let spec = resolve_demo(&args, &file).unwrap();
        assert_eq!(
            (spec.clients, spec.rounds, spec.train.local_epochs),
            (7, 9, defaults::LOCAL_EPOCHS)
        );
        assert_eq!(spec.min_clients, 4);
    }

    #[test]
    fn quorum_larger_than_clients_is_rejected() {
        let args = DemoArgs {
            clients: Some(3),
            min_clients: Some(5),
            ..Default::default()
        };
        let (key, e) = resolve_demo(&args, &DemoSection::default()).unwrap_err();
        assert_eq!((key, e.code), ("min_clients", Code::QuorumTooLarge));
    }
}
