//! The OpenAPI document describes exactly the API's routes: a route added
//! to a router without an OpenAPI entry (or an entry without a route) fails
//! here. Routes are read from the router sources, so nothing has to be
//! listed twice by hand.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

/// (METHOD, path) of every `.route("/api/…", get(..).post(..))` in the
/// API's sources.
fn routed() -> BTreeSet<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/api");
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for chunk in text.split(".route(").skip(1) {
            let Some(quoted) = chunk.trim_start().strip_prefix('"') else {
                continue;
            };
            let (route, rest) = quoted.split_once('"').unwrap();
            // The handlers: up to the end of this `.route(…)` call.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map(|(i, _)| i)
                .unwrap();
            let call = &rest[..end];
            if !route.starts_with("/api/") {
                continue;
            }
            for method in ["get", "post", "put", "patch", "delete"] {
                let plain = call.trim_start_matches([',', ' ', '\n']);
                if plain.starts_with(&format!("{method}(")) || call.contains(&format!(".{method}("))
                {
                    found.insert((method.to_uppercase(), route.to_owned()));
                }
            }
        }
    }
    found
}

fn documented() -> BTreeSet<(String, String)> {
    let doc = tg_coordinator::api::openapi::document();
    let mut found = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            found.insert((method.to_uppercase(), path.clone()));
        }
    }
    found
}

#[test]
fn every_route_is_in_the_openapi_document_and_nothing_else_is() {
    let routed = routed();
    let documented = documented();
    assert!(
        routed.len() >= 18,
        "the source scan found too few routes: {routed:?}"
    );
    let missing: Vec<_> = routed.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the OpenAPI document: {missing:?}"
    );
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");
}

#[test]
fn the_document_is_openapi_3_1_with_bearer_auth_and_unique_operation_ids() {
    let doc = tg_coordinator::api::openapi::document();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let mut ids = BTreeSet::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap().to_owned();
            assert!(ids.insert(id.clone()), "duplicate operationId {id}");
            let needs_token = id != "openapi";
            if needs_token {
                assert!(
                    op["responses"]["401"].is_object(),
                    "{method} {id} documents no 401"
                );
                assert!(op["security"].is_array(), "{method} {id} has no security");
            }
        }
    }
}
