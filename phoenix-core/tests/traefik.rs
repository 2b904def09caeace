//! Traefik's dynamic configuration against Traefik's own file-provider JSON Schema.

use phoenix_core::lint::diagnostic::Severity;
use phoenix_core::traefik::{self, labels::KEYS};
use phoenix_core::{CheckOptions, Estate, FileKind, SourceFile};
use phoenix_testing::{fixture, reference_dir};
use serde_json::Value;

fn schema() -> Option<Value> {
    let path = reference_dir()?
        .parent()?
        .parent()?
        .join("traefik/traefik-v3-file-provider.schema.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    Some(serde_json::from_str(&text).expect("the schema is JSON"))
}

/// The settings of the schema, one line each, as `keys.txt` lists them.
fn derive_keys(schema: &Value) -> String {
    let definitions = &schema["definitions"];
    let mut lines = Vec::new();
    let mut walk = Walk {
        definitions,
        lines: &mut lines,
    };
    walk.node("router", &mut Vec::new(), &definitions["httpRouter"]);
    walk.node("service", &mut Vec::new(), &definitions["httpService"]);
    walk.node("middleware", &mut Vec::new(), &definitions["httpMiddleware"]);
    let options = schema["properties"]["tls"]["properties"]["options"]["patternProperties"]
        .as_object()
        .and_then(|patterns| patterns.values().next())
        .expect("TLS options have one pattern");
    walk.node("tls_options", &mut Vec::new(), options);
    let mut text = String::from(
        "# The settings Traefik labels may name, with their types: derived from Traefik's file-provider\n\
         # JSON Schema by phoenix-core/tests/traefik.rs (UPDATE_EXPECT=1 rewrites this file).\n",
    );
    for line in lines {
        text.push_str(&line);
        text.push('\n');
    }
    text
}

struct Walk<'a> {
    definitions: &'a Value,
    lines: &'a mut Vec<String>,
}

/// The node a `$ref` chain ends at.
fn resolve<'v>(definitions: &'v Value, mut node: &'v Value) -> &'v Value {
    while let Some(reference) = node.get("$ref").and_then(Value::as_str) {
        let name = reference.rsplit('/').next().expect("a $ref names a definition");
        node = &definitions[name];
    }
    node
}

impl Walk<'_> {
    fn leaf(&mut self, section: &str, path: &[String], kind: &str) {
        self.lines.push(format!("{section} {} {kind}", path.join(".")));
    }

    fn node(&mut self, section: &str, path: &mut Vec<String>, node: &Value) {
        let definitions = self.definitions;
        let node = resolve(definitions, node);
        let properties = node.get("properties").and_then(Value::as_object);
        if let (Some(alternatives), None) = (node.get("oneOf").and_then(Value::as_array), properties) {
            for alternative in alternatives {
                for (name, child) in alternative["properties"].as_object().into_iter().flatten() {
                    path.push(name.clone());
                    self.node(section, path, child);
                    path.pop();
                }
            }
            return;
        }
        let kind = node.get("type").and_then(Value::as_str);
        match (kind, properties) {
            (Some("object"), _) | (_, Some(_)) => {
                let free = node
                    .get("additionalProperties")
                    .filter(|value| value.is_object())
                    .or_else(|| {
                        node.get("patternProperties")
                            .and_then(Value::as_object)
                            .and_then(|patterns| patterns.values().next())
                    });
                match (properties.filter(|map| !map.is_empty()), free) {
                    (Some(properties), _) => {
                        for (name, child) in properties {
                            path.push(name.clone());
                            self.node(section, path, child);
                            path.pop();
                        }
                    }
                    (None, Some(free)) => {
                        path.push("*".to_owned());
                        let free = resolve(definitions, free);
                        match free.get("type").and_then(Value::as_str) {
                            Some("string") => self.leaf(section, path, "map"),
                            _ => self.node(section, path, free),
                        }
                        path.pop();
                    }
                    (None, None) => self.leaf(section, path, "object"),
                }
            }
            (Some("array"), None) => {
                let items = resolve(definitions, &node["items"]);
                if items.get("properties").is_some() {
                    let last = path.pop().expect("a list has a name");
                    path.push(format!("{last}[]"));
                    self.node(section, path, items);
                    let last = path.pop().expect("pushed above");
                    path.push(last.trim_end_matches("[]").to_owned());
                } else {
                    assert_eq!(items["type"], "string", "lists of {path:?} hold text");
                    self.leaf(section, path, "list");
                }
            }
            (Some(kind @ ("string" | "integer" | "number" | "boolean")), None) => {
                self.leaf(section, path, kind);
            }
            (other, _) => panic!("{path:?}: a schema node of type {other:?}"),
        }
    }
}

#[test]
fn the_label_settings_are_the_schemas() {
    let Some(schema) = schema() else { return };
    expect_test::expect_file!["../src/traefik/keys.txt"].assert_eq(&derive_keys(&schema));
}

/// The homelab example, with these labels on a compose service `all` of its qdrant stack.
fn homelab_with_labels(labels: &[String]) -> Vec<SourceFile> {
    let dir = phoenix_testing::workspace().join("examples/homelab");
    fixture::sources(&dir)
        .into_iter()
        .map(|source| {
            if source.kind() != FileKind::Stacks || labels.is_empty() {
                return source;
            }
            let mut stacks: Value = serde_json::from_str(source.text()).expect("JSON");
            stacks["docker_stacks"]["qdrant"]["environments"]["production"]["services"]["all"] =
                serde_json::json!({ "traefik_labels": labels });
            let text = serde_json::to_string_pretty(&stacks).expect("serialises");
            SourceFile::new(source.kind(), source.path().to_owned(), text)
        })
        .collect()
}

/// `dynamic_conf.yml` as Traefik would read it, checked against Traefik's schema.
#[track_caller]
fn assert_valid_traefik(schema: &Value, estate: &Estate) -> Value {
    let (declared, problems) = traefik::declared(estate);
    let errors: Vec<_> = problems
        .iter()
        .filter(|problem| problem.severity() == Severity::Error)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let yaml = declared.config.to_yaml();
    let document: Value = serde_saphyr::from_str(&yaml).expect("Phoenix writes YAML");
    let validator = jsonschema::draft7::new(schema).expect("the schema compiles");
    let failures: Vec<String> = validator
        .iter_errors(&document)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect();
    assert!(failures.is_empty(), "{failures:#?}\n{yaml}");
    document
}

#[test]
fn the_examples_and_the_reference_make_valid_traefik_configuration() {
    let Some(schema) = schema() else { return };
    let homelab = fixture::estate(homelab_with_labels(&[]), &CheckOptions::default());
    let document = assert_valid_traefik(&schema, &homelab);
    assert_eq!(
        document["http"]["routers"]
            .as_object()
            .map(|routers| routers.len()),
        Some(5)
    );

    let reference = reference_dir().expect("there, since the schema is");
    let estate = phoenix_core::validate(fixture::sources(&reference), &CheckOptions::default())
        .into_estate()
        .expect("the reference is typed");
    let document = assert_valid_traefik(&schema, &estate);
    // The stack's labels replace VM 1001's own route of the same name: Portainer's UI on port 9000.
    assert_eq!(
        document["http"]["services"]["portainer"]["loadBalancer"]["servers"],
        serde_json::json!([{ "url": "http://10.0.0.111:9000" }])
    );
    assert_eq!(
        document["http"]["routers"]["qdrant"]["tls"]["certResolver"],
        "internal-resolver"
    );
}

/// One label per setting of `keys.txt`, each with a value of its type: every middleware type is a
/// middleware of that name, every kind of service a service, so the result is one valid configuration.
fn every_label() -> Vec<String> {
    let mut labels = Vec::new();
    for line in KEYS.lines().filter(|line| !line.starts_with('#')) {
        let mut words = line.split(' ');
        let (section, path, kind) = (
            words.next().unwrap(),
            words.next().unwrap(),
            words.next().unwrap(),
        );
        let segments: Vec<String> = path
            .split('.')
            .map(|segment| match segment {
                "*" => "X-Phoenix".to_owned(),
                _ => match segment.strip_suffix("[]") {
                    Some(name) => format!("{}[0]", name.to_ascii_lowercase()),
                    None => segment.to_ascii_lowercase(),
                },
            })
            .collect();
        let (prefix, name) = match section {
            "router" => ("traefik.http.routers", "all".to_owned()),
            "service" => ("traefik.http.services", segments[0].clone()),
            "middleware" => ("traefik.http.middlewares", segments[0].clone()),
            "tls_options" => ("traefik.tls.options", "all".to_owned()),
            other => panic!("section {other}"),
        };
        let value = match (section, path, kind) {
            ("router", "service", _) => "loadbalancer",
            ("router", "middlewares", _) => "addprefix,chain",
            ("router", "tls.options", _) => "all",
            (_, _, "integer") => "42",
            (_, _, "number") => "1.5",
            (_, _, "boolean" | "object") => "true",
            (_, _, "list") => "first,second",
            _ => "text",
        };
        labels.push(format!("{prefix}.{name}.{}={value}", segments.join(".")));
    }
    labels
}

#[test]
fn every_label_setting_makes_valid_traefik_configuration() {
    let Some(schema) = schema() else { return };
    let labels = every_label();
    assert!(labels.len() > 150, "{}", labels.len());
    let estate = fixture::estate(homelab_with_labels(&labels), &CheckOptions::default());
    let document = assert_valid_traefik(&schema, &estate);
    // Every middleware type of the schema, each its own middleware.
    let types: std::collections::BTreeSet<&str> = KEYS
        .lines()
        .filter_map(|line| line.strip_prefix("middleware "))
        .filter_map(|rest| rest.split('.').next())
        .collect();
    let middlewares = document["http"]["middlewares"].as_object().expect("middlewares");
    assert_eq!(middlewares.len(), types.len());
    assert_eq!(document["http"]["routers"]["all"]["tls"]["certResolver"], "text");
}
