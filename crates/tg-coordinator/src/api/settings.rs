//! Settings: job defaults (applied to job files submitted through the API)
//! and the key-management provider, each persisted and audited.
//!
//! Design decision: each section is a typed document parsed at the boundary
//! (unknown keys and out-of-range values are 400s), stored whole, and
//! written only after its audit entry is: a change that cannot be audited
//! does not happen.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tg_store::{ApiRole, Store};
use utoipa::ToSchema;

use super::auth::{Denied, authorize};
use super::{ApiError, ApiState, ErrorBody, ProviderCheck, ops, with_store};

pub(super) fn routes() -> axum::Router<ApiState> {
    axum::Router::new()
        .route("/api/v1/settings", get(show))
        .route("/api/v1/settings/job_defaults", put(put_job_defaults))
        .route("/api/v1/settings/key_provider", put(put_key_provider))
        .route(
            "/api/v1/settings/key_provider/test",
            post(test_key_provider),
        )
}

/// Defaults for keys a submitted job file leaves out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobDefaults {
    /// Rounds (1–10000).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole"
    )]
    #[schema(minimum = 1, maximum = 10000)]
    pub rounds: Option<u32>,
    /// Local epochs per round (1–1000).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole"
    )]
    #[schema(minimum = 1, maximum = 1000)]
    pub local_epochs: Option<u32>,
    /// Local batch size (1–65536).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole"
    )]
    #[schema(minimum = 1, maximum = 65536)]
    pub batch_size: Option<u32>,
    /// Local learning rate (0 < lr ≤ 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0.0, maximum = 10.0)]
    pub lr: Option<f64>,
    /// Quorum: fewest contributions for a round to commit (≥ 1).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole"
    )]
    #[schema(minimum = 1, maximum = 100000)]
    pub min_clients: Option<u32>,
    /// Privacy target ε for jobs with a `[privacy]` table (0 < ε ≤ 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0.0, maximum = 100.0)]
    pub target_epsilon: Option<f64>,
    /// Privacy δ for jobs with a `[privacy]` table (0 < δ < 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0.0, exclusive_maximum = 1.0)]
    pub delta: Option<f64>,
    /// Fraction of coordinates each agent sends, for jobs with a
    /// `[secure_aggregation]` table (0 < f ≤ 1; shared random-k).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub sparsity: Option<f64>,
}

/// A whole number, also when JSON spells it `7.0` (JSON Schema's integers
/// include integral floats).
fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let v: Option<f64> = Option::deserialize(d)?;
    v.map(|x| {
        if x.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&x) {
            Ok(x as u32)
        } else {
            Err(serde::de::Error::custom(format!(
                "{x} is not a whole number from 0 to {}",
                u32::MAX
            )))
        }
    })
    .transpose()
}

impl JobDefaults {
    /// Parses and checks a JSON document (unknown keys and out-of-range
    /// values are errors that say which key).
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let d: Self =
            serde_json::from_slice(bytes).map_err(|e| format!("invalid job defaults: {e}"))?;
        d.check()?;
        Ok(d)
    }

    fn check(&self) -> Result<(), String> {
        let range = |name: &str, v: Option<f64>, lo: f64, hi: f64, lo_open: bool| match v {
            Some(x) if !(x.is_finite() && (if lo_open { x > lo } else { x >= lo }) && x <= hi) => {
                Err(format!(
                    "{name} = {x} is outside {}{lo}, {hi}]",
                    if lo_open { "(" } else { "[" }
                ))
            }
            _ => Ok(()),
        };
        range("rounds", self.rounds.map(f64::from), 1.0, 10_000.0, false)?;
        range(
            "local_epochs",
            self.local_epochs.map(f64::from),
            1.0,
            1000.0,
            false,
        )?;
        range(
            "batch_size",
            self.batch_size.map(f64::from),
            1.0,
            65_536.0,
            false,
        )?;
        range("lr", self.lr, 0.0, 10.0, true)?;
        range(
            "min_clients",
            self.min_clients.map(f64::from),
            1.0,
            100_000.0,
            false,
        )?;
        range("target_epsilon", self.target_epsilon, 0.0, 100.0, true)?;
        range("sparsity", self.sparsity, 0.0, 1.0, true)?;
        match self.delta {
            Some(d) if !(d > 0.0 && d < 1.0) => Err(format!("delta = {d} is outside (0, 1)")),
            _ => Ok(()),
        }
    }
}

/// Where the coordinator's signing keys live.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "provider", rename_all = "lowercase", deny_unknown_fields)]
pub enum KeyProvider {
    /// Sealed key files in the data directory (`tensorguard keys`).
    Local {},
    /// A PKCS#11 token (HSM, SoftHSM2).
    Pkcs11 {
        /// Path of the PKCS#11 module (`.so`).
        #[schema(
            min_length = 1,
            max_length = 512,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
        )]
        module: String,
        /// Token label.
        #[schema(
            min_length = 1,
            max_length = 512,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
        )]
        token_label: String,
    },
    /// AWS KMS.
    Aws {
        /// Region, e.g. `eu-west-1`.
        #[schema(pattern = r"^[a-z0-9-]{1,32}$")]
        region: String,
        /// Key id or ARN.
        #[schema(
            min_length = 1,
            max_length = 512,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
        )]
        key_id: String,
    },
    /// Azure Key Vault.
    Azure {
        /// Vault URL, `https://NAME.vault.azure.net`.
        #[schema(max_length = 512, pattern = r"^https://[^\x00-\x1f\x7f-\x9f]*$")]
        vault_url: String,
        /// Key name.
        #[schema(
            min_length = 1,
            max_length = 512,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
        )]
        key_name: String,
    },
    /// Google Cloud KMS.
    Gcp {
        /// Project id.
        #[schema(
            min_length = 1,
            max_length = 512,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
        )]
        project: String,
        /// Location, e.g. `europe-west1`.
        #[schema(
            min_length = 1,
            max_length = 512,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
        )]
        location: String,
        /// Key ring.
        #[schema(
            min_length = 1,
            max_length = 512,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
        )]
        key_ring: String,
        /// Key name.
        #[schema(
            min_length = 1,
            max_length = 512,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
        )]
        key_name: String,
    },
}

impl KeyProvider {
    /// Parses and checks a JSON document (`{"provider": "aws", …}`).
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let p: Self =
            serde_json::from_slice(bytes).map_err(|e| format!("invalid key provider: {e}"))?;
        p.check()?;
        Ok(p)
    }

    fn check(&self) -> Result<(), String> {
        let field = |name: &str, v: &str| {
            if v.trim().is_empty() || v.chars().count() > 512 || v.chars().any(char::is_control) {
                Err(format!("`{name}` must be 1–512 printable characters"))
            } else {
                Ok(())
            }
        };
        match self {
            KeyProvider::Local {} => Ok(()),
            KeyProvider::Pkcs11 {
                module,
                token_label,
            } => {
                field("module", module)?;
                field("token_label", token_label)
            }
            KeyProvider::Aws { region, key_id } => {
                field("key_id", key_id)?;
                let ok = !region.is_empty()
                    && region.len() <= 32
                    && region
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                if ok {
                    Ok(())
                } else {
                    Err(format!(
                        "`region` = {region:?} is not an AWS region like eu-west-1"
                    ))
                }
            }
            KeyProvider::Azure {
                vault_url,
                key_name,
            } => {
                field("key_name", key_name)?;
                field("vault_url", vault_url)?;
                if vault_url.starts_with("https://") {
                    Ok(())
                } else {
                    Err(
                        "`vault_url` must start with https:// (e.g. https://NAME.vault.azure.net)"
                            .into(),
                    )
                }
            }
            KeyProvider::Gcp {
                project,
                location,
                key_ring,
                key_name,
            } => {
                field("project", project)?;
                field("location", location)?;
                field("key_ring", key_ring)?;
                field("key_name", key_name)
            }
        }
    }
}

const JOB_DEFAULTS: &str = "job_defaults";
const KEY_PROVIDER: &str = "key_provider";

/// The stored job defaults (empty when never set).
pub(super) fn job_defaults(store: &Store) -> Result<JobDefaults, ApiError> {
    match store.settings(JOB_DEFAULTS).map_err(ApiError::internal)? {
        Some(s) => serde_json::from_value(s.value).map_err(ApiError::internal),
        None => Ok(JobDefaults::default()),
    }
}

fn section(store: &Store, name: &str, default: Value) -> Result<Value, ApiError> {
    Ok(match store.settings(name).map_err(ApiError::internal)? {
        Some(s) => {
            json!({"value": s.value, "updated_at_ms": s.updated_at_ms, "updated_by": s.updated_by})
        }
        None => json!({"value": default, "updated_at_ms": null, "updated_by": null}),
    })
}

/// Both settings sections, with who changed them last.
#[utoipa::path(get, operation_id = "show_settings", path = "/api/v1/settings", tag = "settings", security(("bearer" = [])),
    responses((status = 200, description = "`{\"job_defaults\": {value, updated_at_ms, updated_by}, \"key_provider\": {…}}`", body = Value), Denied))]
pub(super) async fn show(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, "GET /api/v1/settings", ApiRole::Viewer)?;
    with_store(&state, |s| {
        Ok(Json(json!({
            JOB_DEFAULTS: section(s, JOB_DEFAULTS, json!({}))?,
            KEY_PROVIDER: section(s, KEY_PROVIDER, json!({"provider": "local"}))?,
        })))
    })
}

/// Audits, then stores, one section.
fn save(state: &ApiState, name: &str, value: Value, by: &str) -> Result<Json<Value>, ApiError> {
    let audit = state.audit.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "settings cannot be changed here: this server has no audit log to record the change in",
        )
    })?;
    audit
        .record_action(
            tg_trust::audit::kind::CONFIG_CHANGED,
            None,
            json!({"section": name, "value": value, "by": by}),
        )
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the change was not made: it could not be audited ({e})"),
            )
        })?;
    with_store(state, |s| {
        s.put_settings(name, &value, by)
            .map_err(ApiError::internal)?;
        Ok(Json(section(s, name, Value::Null)?))
    })
}

/// Replaces the job defaults.
#[utoipa::path(put, operation_id = "put_job_defaults", path = "/api/v1/settings/job_defaults", tag = "settings", security(("bearer" = [])),
    request_body = JobDefaults,
    responses((status = 200, description = "Saved and audited: `{value, updated_at_ms, updated_by}`", body = Value),
        (status = 400, description = "Unknown key or value out of range", body = ErrorBody),
        (status = 503, description = "No audit log to record the change", body = ErrorBody), Denied))]
pub(super) async fn put_job_defaults(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let token = authorize(
        &state,
        &headers,
        "PUT /api/v1/settings/job_defaults",
        ApiRole::Operator,
    )?;
    let defaults = JobDefaults::from_json(&body).map_err(ApiError::bad_request)?;
    let value = serde_json::to_value(&defaults).map_err(ApiError::internal)?;
    save(&state, JOB_DEFAULTS, value, &token.id)
}

/// Replaces the key-management provider configuration.
#[utoipa::path(put, operation_id = "put_key_provider", path = "/api/v1/settings/key_provider", tag = "settings", security(("bearer" = [])),
    request_body = KeyProvider,
    responses((status = 200, description = "Saved and audited: `{value, updated_at_ms, updated_by}`", body = Value),
        (status = 400, description = "Unknown provider, key or bad value", body = ErrorBody),
        (status = 503, description = "No audit log to record the change", body = ErrorBody), Denied))]
pub(super) async fn put_key_provider(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let token = authorize(
        &state,
        &headers,
        "PUT /api/v1/settings/key_provider",
        ApiRole::Admin,
    )?;
    let provider = KeyProvider::from_json(&body).map_err(ApiError::bad_request)?;
    let value = serde_json::to_value(&provider).map_err(ApiError::internal)?;
    save(&state, KEY_PROVIDER, value, &token.id)
}

/// Tries to reach a key provider; reports honestly what happened.
#[utoipa::path(post, operation_id = "test_key_provider", path = "/api/v1/settings/key_provider/test", tag = "settings", security(("bearer" = [])),
    request_body = KeyProvider,
    responses((status = 200, description = "What the test found (`ok`, `reachable`, `unreachable`, `misconfigured`)", body = ProviderCheck),
        (status = 400, description = "Not a key provider configuration", body = ErrorBody),
        (status = 503, description = "Read-only server", body = ErrorBody), Denied))]
pub(super) async fn test_key_provider(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ProviderCheck>, ApiError> {
    authorize(
        &state,
        &headers,
        "POST /api/v1/settings/key_provider/test",
        ApiRole::Admin,
    )?;
    let provider = KeyProvider::from_json(&body).map_err(ApiError::bad_request)?;
    let ops = ops(&state)?.clone();
    // Probes block (sockets, PKCS#11 modules): off the async workers.
    let check = tokio::task::spawn_blocking(move || ops.test_key_provider(&provider))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(check))
}
