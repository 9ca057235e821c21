//! `info`, `doctor`, `init`, `config validate|show`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use serde_json::json;
use tg_trust::IdentityKey;

use crate::config::{self, FileConfig, Loaded};
use crate::errors::{Code, UserError, from_trust};
use crate::output::Output;

/// Default ports the network federation will use (checked by `doctor`).
pub const DEFAULT_P2P_PORT: u16 = 7070;
pub const DEFAULT_API_PORT: u16 = 7071;

fn cpu_features() -> Vec<&'static str> {
    let mut f = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! probe { ($($n:tt),*) => { $( if std::arch::is_x86_feature_detected!($n) { f.push($n); } )* } }
        probe!(
            "aes",
            "pclmulqdq",
            "sse4.1",
            "avx",
            "avx2",
            "fma",
            "avx512f",
            "sha"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! probe { ($($n:tt),*) => { $( if std::arch::is_aarch64_feature_detected!($n) { f.push($n); } )* } }
        probe!("neon", "aes", "sha2");
    }
    f
}

fn has_aes() -> bool {
    cpu_features().contains(&"aes")
}

pub fn info(loaded: &Loaded, data_dir: &Path, out: &Output) {
    let v = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "target": format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
        "build_features": Vec::<&str>::new(),
        "crypto_backends": {
            "signatures": "Ed25519 (ed25519-dalek 3, precomputed tables)",
            "hashing": "SHA-256 (sha2)",
            "randomness": "OS CSPRNG (getrandom) for keys and ids; seeded ChaCha for reproducible training choices",
        },
        "ml_backend": "candle (CPU)",
        "compute_threads": std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".into()),
        "cpu_cores": std::thread::available_parallelism().map_or(1, usize::from),
        "cpu_features": cpu_features(),
        "config_file": loaded.path.as_ref().map(|p| p.display().to_string()),
        "data_dir": data_dir.display().to_string(),
        "protocol_version": tg_proto::PROTOCOL_VERSION,
    });
    if out.json {
        out.json_value(&v);
        return;
    }
    out.line(&format!(
        "{} {}",
        out.bold("tensorguard"),
        env!("CARGO_PKG_VERSION")
    ));
    for (k, val) in v.as_object().into_iter().flatten() {
        if k != "version" {
            out.line(&format!("  {k:<16} {}", val.to_string().trim_matches('"')));
        }
    }
}

struct Check {
    name: &'static str,
    status: &'static str, // ok | warn | fail
    detail: String,
}

/// The keyring in the data dir: its active identity, sealed and private.
fn keyring_check(data_dir: &Path) -> Check {
    let dir = data_dir.join("keys");
    if !dir.join("keyring.json").exists() {
        return Check {
            name: "keyring",
            status: "warn",
            detail: format!(
                "no keyring in {} yet (created by `tensorguard keys generate` or the first coordinator/agent start)",
                dir.display()
            ),
        };
    }
    let ring = match tg_trust::Keyring::open(&dir) {
        Ok(r) => r,
        Err(e) => {
            return Check {
                name: "keyring",
                status: "fail",
                detail: from_trust(e).to_string(),
            };
        }
    };
    let Some(active) = ring.active(tg_trust::Purpose::Identity) else {
        return Check {
            name: "keyring",
            status: "warn",
            detail: "no active identity key: `tensorguard keys generate`".into(),
        };
    };
    if let tg_trust::Storage::File { file } = &active.storage
        && let Err(e) = tg_trust::check_private(&dir.join(file))
    {
        return Check {
            name: "keyring",
            status: "fail",
            detail: from_trust(e).to_string(),
        };
    }
    Check {
        name: "keyring",
        status: "ok",
        detail: format!(
            "{} keys; active identity {} (sealed, mode 0600)",
            ring.records().len(),
            active.id
        ),
    }
}

pub fn doctor(loaded: &Loaded, data_dir: &Path, out: &Output) -> Result<(), UserError> {
    let mut checks = Vec::new();
    checks.push(
        match tg_store::Store::open(data_dir).and_then(|s| s.integrity_check()) {
            Ok(()) => Check {
                name: "data dir",
                status: "ok",
                detail: format!("{} is writable, database intact", data_dir.display()),
            },
            Err(e) => Check {
                name: "data dir",
                status: "fail",
                detail: format!("{}: {e}", data_dir.display()),
            },
        },
    );
    let ring = keyring_check(data_dir);
    // With a keyring and no key file named in the config, the keyring is the identity.
    let keyring_is_identity = ring.status == "ok" && loaded.file.identity.key_file.is_none();
    checks.push(ring);
    let key = key_path(loaded).filter(|_| !keyring_is_identity);
    checks.push(match key.as_deref() {
        None if keyring_is_identity => Check {
            name: "identity key",
            status: "ok",
            detail: "the keyring's active identity key".into(),
        },
        None => Check {
            name: "identity key",
            status: "warn",
            detail: "no identity key configured: run `tensorguard init`".into(),
        },
        Some(p) if !p.exists() => Check {
            name: "identity key",
            status: "warn",
            detail: format!("{} does not exist: run `tensorguard init`", p.display()),
        },
        Some(p) => match tg_trust::Passphrase::from_env().and_then(|pass| match pass {
            Some(pass) => {
                IdentityKey::load(p, &pass).map(|k| (k.public_hex(), "opened with the passphrase"))
            }
            None => tg_trust::check_private(p)
                .and_then(|()| IdentityKey::peek_public(p))
                .map(|h| {
                    (
                        h,
                        "sealed; no passphrase in the environment to test opening it",
                    )
                }),
        }) {
            Ok((public, how)) => Check {
                name: "identity key",
                status: "ok",
                detail: format!("{} (mode 0600, {how}), public key {public}", p.display()),
            },
            Err(e) => Check {
                name: "identity key",
                status: "fail",
                detail: from_trust(e).to_string(),
            },
        },
    });
    for (name, port) in [
        ("p2p port", DEFAULT_P2P_PORT),
        ("api port", DEFAULT_API_PORT),
    ] {
        checks.push(match TcpListener::bind(("127.0.0.1", port)) {
            Ok(_) => Check {
                name,
                status: "ok",
                detail: format!("127.0.0.1:{port} is free"),
            },
            Err(e) => Check {
                name,
                status: "warn",
                detail: format!(
                    "127.0.0.1:{port} is taken ({e}); choose another port when starting services"
                ),
            },
        });
    }
    checks.push(if has_aes() {
        Check {
            name: "AES-NI",
            status: "ok",
            detail: "hardware AES available (fast secure-aggregation masks)".into(),
        }
    } else {
        Check {
            name: "AES-NI",
            status: "warn",
            detail: "no hardware AES: secure aggregation will use ChaCha20 masks".into(),
        }
    });
    let failed = checks.iter().filter(|c| c.status == "fail").count();
    if out.json {
        out.json_value(&json!({
            "ok": failed == 0,
            "checks": checks.iter().map(|c| json!({"name": c.name, "status": c.status, "detail": c.detail})).collect::<Vec<_>>(),
        }));
    } else {
        for c in &checks {
            let tag = match c.status {
                "ok" => out.green("  ok "),
                "warn" => out.yellow("warn "),
                _ => out.red("FAIL "),
            };
            out.line(&format!("{tag} {:<13} {}", c.name, c.detail));
        }
    }
    if failed > 0 {
        return Err(UserError::new(
            Code::DoctorFailed,
            format!("{failed} check(s) failed"),
            "this machine is not ready to run TensorGuard",
            "fix the items marked FAIL above and run `tensorguard doctor` again",
        ));
    }
    Ok(())
}

fn key_path(loaded: &Loaded) -> Option<PathBuf> {
    loaded.file.identity.key_file.clone().or_else(|| {
        let dir = loaded
            .path
            .as_ref()
            .and_then(|p| p.parent().map(Path::to_owned))
            .or_else(config::default_config_dir)?;
        Some(dir.join("identity.key"))
    })
}

pub fn init(dir: Option<&Path>, force: bool, out: &Output) -> Result<(), UserError> {
    let dir = dir
        .map(Path::to_owned)
        .or_else(config::default_config_dir)
        .ok_or_else(|| {
            UserError::new(
                Code::Usage,
                "no config directory",
                "no home directory was found",
                "pass --dir DIR",
            )
        })?;
    std::fs::create_dir_all(&dir).map_err(|e| {
        UserError::new(
            Code::DataDirUnwritable,
            format!("cannot create {}", dir.display()),
            e.to_string(),
            "choose a writable --dir",
        )
    })?;
    let cfg_path = dir.join("config.toml");
    let key_path = dir.join("identity.key");
    for p in [&cfg_path, &key_path] {
        if p.exists() && !force {
            return Err(from_trust(tg_trust::TrustError::Exists(p.clone())));
        }
    }
    let pass = crate::keys::new_passphrase()?;
    let key = IdentityKey::generate().map_err(from_trust)?;
    key.save(&key_path, &pass, force).map_err(from_trust)?;
    let text = starter_config(&key_path);
    std::fs::write(&cfg_path, text).map_err(|e| {
        UserError::new(
            Code::DataDirUnwritable,
            format!("cannot write {}", cfg_path.display()),
            e.to_string(),
            "choose a writable --dir",
        )
    })?;
    if out.json {
        out.json_value(
            &json!({"config": cfg_path, "identity_key": key_path, "public_key": key.public_hex()}),
        );
    } else {
        out.line(&format!("wrote {}", cfg_path.display()));
        out.line(&format!("wrote {} (mode 0600)", key_path.display()));
        out.line(&format!("public key {}", key.public_hex()));
    }
    Ok(())
}

fn starter_config(key: &Path) -> String {
    use config::defaults as d;
    format!(
        "# TensorGuard configuration. Precedence: flags > TENSORGUARD_* environment > this file > defaults.\n\
         # data_dir = \"/var/lib/tensorguard\"\n\n\
         [identity]\nkey_file = {key:?}\n\n\
         [demo]\n# clients = {}\n# rounds = {}\n# strategy = \"{}\"\n# partition = \"{}\"\n# dataset = \"{}\"\n# model = \"{}\"\n\
         # local_epochs = {}\n# batch_size = {}\n# lr = {}\n# seed = {}\n",
        d::CLIENTS,
        d::ROUNDS,
        d::STRATEGY,
        d::PARTITION,
        d::DATASET,
        d::MODEL,
        d::LOCAL_EPOCHS,
        d::BATCH_SIZE,
        d::LR,
        d::SEED
    )
}

pub fn config_validate(
    file: Option<&Path>,
    loaded: &Loaded,
    out: &Output,
) -> Result<(), UserError> {
    let path = file.map(Path::to_owned).or_else(|| loaded.path.clone()).ok_or_else(|| {
        UserError::new(Code::ConfigInvalid, "no config file to validate", "none was given and none exists at the default location", "pass a path: `tensorguard config validate FILE`, or create one with `tensorguard init`")
    })?;
    config::parse_file(&path)?;
    if out.json {
        out.json_value(&json!({"file": path, "valid": true}));
    } else {
        out.line(&format!("{} is valid", path.display()));
    }
    Ok(())
}

pub fn config_show(loaded: &Loaded, data_dir: &Path, out: &Output) -> Result<(), UserError> {
    let spec = tg_job::Job::resolve(&loaded.file.demo, None, None, tg_job::Runner::Simulation)
        .map_err(crate::errors::from_job)?
        .spec()
        .clone();
    let effective = json!({
        "config_file": loaded.path,
        "data_dir": data_dir,
        "identity": {"key_file": key_path(loaded)},
        "demo": spec,
    });
    if out.json {
        out.json_value(&effective);
    } else {
        let file: FileConfig = loaded.file.clone();
        out.line(&format!(
            "# config file: {}",
            loaded
                .path
                .as_ref()
                .map_or("(none; defaults)".into(), |p| p.display().to_string())
        ));
        out.line(&format!("# data dir:    {}", data_dir.display()));
        out.line("# values set in the file (flags and TENSORGUARD_* variables override them):");
        out.line(&toml::to_string_pretty(&file).unwrap_or_default());
        out.line("# effective demo job (file over defaults):");
        out.json_value(&effective["demo"]);
    }
    Ok(())
}
