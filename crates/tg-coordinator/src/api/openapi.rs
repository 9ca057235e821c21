//! The OpenAPI 3.1 document, generated from the handlers' annotations
//! (`tensorguard openapi` prints it; the server serves it at
//! `/api/v1/openapi.json`).

use axum::Json;
use axum::routing::get;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    ApiState, ErrorBody, ErrorDetail, JobDefaults, KeyProvider, ProviderCheck, SubmittedJob,
    agents, audit, events, jobs, models, settings,
};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from `tensorguard api token create --role viewer|operator|admin`",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "TensorGuard coordinator API",
        description = "Jobs, rounds, agents, privacy budgets, models, the audit log and settings of a TensorGuard coordinator. Every route but this document needs a bearer token; roles are ordered viewer < operator < admin.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        jobs::list, jobs::create, jobs::show, jobs::stop, jobs::rounds, jobs::round, jobs::privacy,
        agents::list, agents::reinstate,
        models::list, models::rollback, models::download,
        audit::query, audit::export,
        settings::show, settings::put_job_defaults, settings::put_key_provider, settings::test_key_provider,
        events::events,
        spec,
    ),
    components(schemas(ErrorBody, ErrorDetail, SubmittedJob, ProviderCheck, JobDefaults, KeyProvider, super::models::RollbackRequest, super::agents::Reinstate)),
    modifiers(&BearerAuth),
    tags(
        (name = "jobs", description = "Create, list, show and stop jobs; their rounds"),
        (name = "privacy", description = "Privacy ledgers and remaining budgets"),
        (name = "agents", description = "The fleet"),
        (name = "models", description = "The model registry: committed versions (safetensors), the head, rollbacks"),
        (name = "audit", description = "The signed, hash-chained audit log"),
        (name = "settings", description = "Job defaults and the key-management provider"),
        (name = "events", description = "Live updates (Server-Sent Events)"),
    ),
)]
struct ApiDoc;

/// The API's OpenAPI 3.1 document.
pub fn document() -> serde_json::Value {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut value = serde_json::to_value(doc).unwrap_or_default();
    // Request bodies are parsed with unknown keys refused; say so.
    for name in ["JobDefaults", "KeyProvider", "RollbackRequest", "Reinstate"] {
        if let Some(schema) = value.pointer_mut(&format!("/components/schemas/{name}")) {
            closed(schema);
        }
    }
    // A job file is required (utoipa leaves plain-text bodies optional).
    if let Some(body) = value.pointer_mut("/paths/~1api~1v1~1jobs/post/requestBody") {
        body["required"] = serde_json::Value::Bool(true);
        if let Some(schema) = body.pointer_mut("/content/text~1plain/schema") {
            schema["minLength"] = 1.into();
        }
    }
    value
}

/// Marks every object schema in `schema` as accepting no other keys.
fn closed(schema: &mut serde_json::Value) {
    if let Some(obj) = schema.as_object_mut() {
        if obj.contains_key("properties") {
            obj.insert(
                "additionalProperties".into(),
                serde_json::Value::Bool(false),
            );
        }
        if let Some(serde_json::Value::Array(variants)) = obj.get_mut("oneOf") {
            variants.iter_mut().for_each(closed);
        }
    }
}

pub(super) fn routes() -> axum::Router<ApiState> {
    axum::Router::new().route("/api/v1/openapi.json", get(spec))
}

/// This document (no token needed: it holds no data).
#[utoipa::path(get, operation_id = "openapi", path = "/api/v1/openapi.json", tag = "jobs",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
async fn spec() -> Json<serde_json::Value> {
    Json(document())
}
