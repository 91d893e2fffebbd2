//! The committed JSON Schema matches the model, and accepts every valid fixture.

use crate::{cases, load_dir, workspace};

fn committed() -> String {
    std::fs::read_to_string(workspace().join("config-schema/launchway.schema.json"))
        .unwrap_or_default()
}

#[test]
fn committed_schema_matches_the_model() {
    let generated = launchway_config::json_schema();
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(
            workspace().join("config-schema/launchway.schema.json"),
            &generated,
        )
        .unwrap();
        return;
    }
    assert!(
        committed() == generated,
        "config-schema/launchway.schema.json is out of date: run `make schema` and commit it"
    );
}

#[test]
fn valid_fixtures_validate_against_the_committed_schema() {
    let schema: serde_json::Value = serde_json::from_str(&committed()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for dir in cases("valid") {
        let loaded = launchway_config::load(&load_dir(&dir));
        let document = loaded.document.expect("a valid fixture has a document");
        let errors: Vec<String> = validator
            .iter_errors(&document)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", dir.display());
    }
}

#[test]
fn committed_schema_rejects_an_unknown_key() {
    let schema: serde_json::Value = serde_json::from_str(&committed()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let doc = serde_json::json!({"applications": {"app": {"type": "python:3.11", "wbe": {}}}});
    assert!(!validator.is_valid(&doc));
}
