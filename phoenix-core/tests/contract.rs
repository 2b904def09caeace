//! The contract between schemas, Rust types, examples and the real configuration of the earlier version.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use phoenix_core::lint::schema::SCHEMAS;
use phoenix_core::{CheckOptions, DependencyGraph, Severity, Validation, validate};
use phoenix_testing::{fixture, reference_dir, workspace};
use serde_json::Value;

fn validate_dir(dir: &Path) -> Validation {
    validate(fixture::sources(dir), &CheckOptions::default())
}

#[test]
fn examples_validate_without_any_problem() {
    for example in ["homelab", "minimal"] {
        let validation = validate_dir(&workspace().join("examples").join(example));
        assert!(
            validation.problems().is_empty(),
            "{example}: {:#?}",
            validation.problems()
        );
        assert!(
            validation.estate().is_some(),
            "{example} must deserialize into the Rust types"
        );
    }
}

#[test]
fn the_homelab_example_has_the_estate_its_readme_describes() {
    let validation = validate_dir(&workspace().join("examples/homelab"));
    let estate = validation.estate().expect("homelab is valid");
    let order = DependencyGraph::of(estate).creation_order().expect("no cycle");
    let position = |id: u32| order.iter().position(|&each| each == id).expect("guest exists");
    for (later, earlier) in [
        (901, 900),
        (950, 901),
        (103, 900),
        (102, 103),
        (101, 103),
        (1001, 9000),
        (1001, 102),
        (1002, 1001),
    ] {
        assert!(
            position(earlier) < position(later),
            "{earlier} must come before {later} in {order:?}"
        );
    }
}

#[test]
fn reference_configs_validate_with_warnings_only() {
    let Some(dir) = reference_dir() else {
        return;
    };
    let validation = validate_dir(&dir);
    let errors: Vec<_> = validation
        .problems()
        .iter()
        .filter(|problem| problem.severity() == Severity::Error)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(
        validation.estate().is_some(),
        "the reference must deserialize into the Rust types"
    );
    let codes: BTreeSet<&str> = validation
        .problems()
        .iter()
        .map(|problem| problem.code())
        .collect();
    let expected = BTreeSet::from([
        "phoenix::config::legacy_key",
        "phoenix::config::plaintext_secret",
        "phoenix::config::template_path",
        "phoenix::disk::smaller_than_source",
        "phoenix::firewall::duplicate_rule",
        "phoenix::host::export_not_mounted_there",
        "phoenix::samba::no_password",
        "phoenix::shared_volume::unknown_container",
        // VM 1001's `traefik_service` `portainer` and its stack's labels for router `portainer`.
        "phoenix::traefik::route_replaced",
    ]);
    assert_eq!(codes, expected);
    let legacy_firewall = validation
        .problems()
        .iter()
        .any(|problem| problem.pointer() == "/shared_volumes/firewall");
    assert!(
        legacy_firewall,
        "the firewall under shared_volumes is read and warned about"
    );
    let plaintext = validation
        .problems()
        .iter()
        .any(|problem| problem.pointer() == "/portainer_api/admin_password");
    assert!(plaintext, "the plaintext Portainer password is named");
}

#[test]
fn reference_dependency_graph_is_the_documented_one() {
    let Some(dir) = reference_dir() else {
        return;
    };
    let validation = validate_dir(&dir);
    let estate = validation.estate().expect("reference deserializes");
    // From ../shared/reference/README.md; edges point to what must exist first.
    let documented: &[(u32, &[u32])] = &[
        (101, &[900, 103]),
        (102, &[900, 103]),
        (103, &[900]),
        (901, &[900, 1002]),
        (910, &[901]),
        (911, &[901]),
        (912, &[901]),
        (801, &[911, 1002]),
        (802, &[911, 1002]),
        (914, &[901, 1002]),
        (917, &[901, 1002]),
        (1001, &[9000, 102]),
        (1002, &[9000, 1001]),
    ];
    let expected: BTreeMap<u32, BTreeSet<u32>> = documented
        .iter()
        .map(|(id, needs)| (*id, needs.iter().copied().collect()))
        .collect();
    let actual: BTreeMap<u32, BTreeSet<u32>> = DependencyGraph::of(estate)
        .edges()
        .into_iter()
        .filter(|(_, needs)| !needs.is_empty())
        .collect();
    assert_eq!(actual, expected);
    assert_eq!(estate.guests().len(), 15, "12 containers and 3 VMs");
}

#[test]
fn schemas_have_ids_and_share_identical_definitions() {
    let mut shared: BTreeMap<String, (String, Value)> = BTreeMap::new();
    for schema in &SCHEMAS {
        let document: Value = serde_json::from_str(schema.text).expect("schema is JSON");
        let id = document["$id"].as_str().expect("schema has an $id");
        assert!(
            id.starts_with("https://") && id.ends_with(schema.file_name),
            "{id}"
        );
        assert_eq!(
            document["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        let on_disk =
            std::fs::read_to_string(workspace().join("schemas").join(schema.file_name)).expect("file");
        assert_eq!(
            on_disk, schema.text,
            "the embedded schema is the file in schemas/"
        );
        let definitions = document["$defs"].as_object().cloned().unwrap_or_default();
        for (name, definition) in definitions {
            match shared.get(&name) {
                Some((first_file, first)) => {
                    assert_eq!(
                        &definition, first,
                        "$defs/{name} differs between {first_file} and {}",
                        schema.file_name
                    )
                }
                None => {
                    shared.insert(name, (schema.file_name.to_owned(), definition));
                }
            }
        }
    }
    for common in [
        "secret",
        "firewall_rule",
        "guest_firewall",
        "health_check",
        "traefik_service",
        "portainer_role",
    ] {
        assert!(shared.contains_key(common), "$defs/{common} is shared");
    }
}

#[test]
fn every_pattern_in_the_schemas_carries_a_hint() {
    fn walk(value: &Value, path: &str, missing: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if map.contains_key("pattern") && !map.contains_key("x-phoenix-hint") {
                    missing.push(path.to_owned());
                }
                for (key, child) in map {
                    walk(child, &format!("{path}/{key}"), missing);
                }
            }
            Value::Array(items) => {
                for (index, child) in items.iter().enumerate() {
                    walk(child, &format!("{path}/{index}"), missing);
                }
            }
            _ => {}
        }
    }
    let mut missing = Vec::new();
    for schema in &SCHEMAS {
        let document: Value = serde_json::from_str(schema.text).expect("schema is JSON");
        walk(&document, schema.file_name, &mut missing);
    }
    assert!(
        missing.is_empty(),
        "patterns without x-phoenix-hint: {missing:#?}"
    );
}
