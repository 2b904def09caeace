//! Property tests: no input reaches a panic. Every case runs the whole offline pipeline, as `phoenix
//! validate` and `phoenix plan --offline` run it: validate, render every problem (miette's graphical
//! handler, and the JSON record), and when the configuration is valid, build the resources, plan them
//! against empty fakes, and render the plan (text, with and without colour, and the JSON document) and the
//! graph (DOT and Mermaid).
//!
//! Inputs are mutations of real configurations (the test fixture, `examples/`, and the earlier version's
//! configuration when it is there) and arbitrary JSON or text, for each of the four files. Each run tries
//! `PROPTEST_CASES` cases per property (default [`DEFAULT_CASES`], which keeps the test to seconds in a
//! debug build). Failures are not written to `proptest-regressions/`: whatever a run finds is fixed and kept
//! as a named test in `regressions` below.

use std::path::PathBuf;
use std::sync::OnceLock;

use miette::{GraphicalReportHandler, GraphicalTheme};
use phoenix_core::engine::render::{
    Colour, GraphFormat, graph_source, plan_document, plan_text, report_text,
};
use phoenix_core::{CheckOptions, ExecuteOptions, FileKind, SourceFile, resources, validate};
use phoenix_testing::{Fakes, fixture, workspace};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::Value;

/// Cases per property when `PROPTEST_CASES` is not set.
const DEFAULT_CASES: u32 = 256;

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// One configuration directory, parsed: each file's kind, path and document.
type Base = Vec<(FileKind, String, Value)>;

/// The configurations mutations start from.
fn bases() -> &'static [Base] {
    static BASES: OnceLock<Vec<Base>> = OnceLock::new();
    BASES.get_or_init(|| {
        let mut dirs: Vec<PathBuf> = [
            "phoenix-core/tests/fixtures/estate",
            "examples/homelab",
            "examples/minimal",
        ]
        .iter()
        .map(|dir| workspace().join(dir))
        .collect();
        dirs.extend(phoenix_testing::reference_dir());
        dirs.iter()
            .map(|dir| {
                fixture::sources(dir)
                    .into_iter()
                    .map(|source| {
                        let value = serde_json::from_str(source.text()).expect("a base file is JSON");
                        (source.kind(), source.path().to_owned(), value)
                    })
                    .collect()
            })
            .collect()
    })
}

/// Runs the pipeline over `sources`; any panic fails the property.
fn run_pipeline(sources: Vec<SourceFile>) {
    let validation = validate(sources, &CheckOptions::default());
    let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor()).with_width(80);
    for problem in validation.problems() {
        let mut rendered = String::new();
        handler.render_report(&mut rendered, problem).expect("renders");
        serde_json::to_string(&problem.to_record()).expect("serialises");
    }
    let Ok(estate) = validation.into_estate() else {
        return;
    };
    let resources = resources(&estate);
    for format in [GraphFormat::Dot, GraphFormat::Mermaid] {
        graph_source(&resources, format);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let fakes = Fakes::new();
        let plan = fakes.plan(&resources, &[]).await;
        plan_text(&plan, Colour::Never);
        plan_text(&plan, Colour::Always);
        serde_json::to_string(&plan_document(&plan)).expect("serialises");
        let report = fakes.apply(&plan, &ExecuteOptions::default()).await;
        report_text(&report, Colour::Never);
        let again = fakes.plan(&resources, &[]).await;
        plan_text(&again, Colour::Never);
    });
}

/// The sources of a base, with the documents as given.
fn sources_of(files: &[(FileKind, String, Value)]) -> Vec<SourceFile> {
    files
        .iter()
        .map(|(kind, path, value)| {
            let text = serde_json::to_string_pretty(value).expect("serialises");
            SourceFile::new(*kind, path.clone(), text)
        })
        .collect()
}

/// What a mutation does at the place it picks.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the value there.
    Replace(Value),
    /// Remove it from its object or array.
    Remove,
    /// Add a key with this name and value to the object there (or the object holding it).
    Insert(String, Value),
    /// Copy an array's item or object's member beside itself, so that names and IDs repeat.
    Duplicate,
}

/// Values that have broken parsers, checks and renderers elsewhere.
fn nasty_value() -> impl Strategy<Value = Value> {
    let numbers: Vec<Value> = [
        Value::from(u64::MAX),
        Value::from(u64::MAX - 1),
        Value::from(i64::MIN),
        Value::from(i64::MAX),
        Value::from(-1),
        Value::from(0),
        Value::from(1),
        Value::from(99),
        Value::from(100),
        Value::from(8192),
        Value::from(8193),
        Value::from(65535),
        Value::from(65536),
        Value::from(999_999_999),
        Value::from(1_000_000_000),
        Value::from(u64::from(u32::MAX)),
        Value::from(u64::from(u32::MAX) + 1),
        Value::from(1u64 << 53),
        Value::from((1u64 << 53) + 1),
        Value::from(1.5),
        Value::from(-0.0),
        Value::from(1e308),
    ]
    .into();
    let strings: Vec<&'static str> = vec![
        "",
        " ",
        ".",
        "..",
        "-",
        "a-",
        "a..b",
        "../../../etc/shadow",
        "local:vztmpl/../../../etc/shadow",
        "local:vztmpl/",
        "::::",
        "http://pve:8006",
        "https://",
        "https://[::::]:8006",
        "https://pve:99999",
        "XYZ",
        "dhcp",
        "10.0.0.1/33",
        "10.0.0.300/24",
        "fe80::1/64",
        "0.0.0.0/0",
        "lxc/101",
        "101",
        "100",
        "9000",
        "0",
        "-1",
        "1e400",
        "none",
        "0,1,2",
        "primary",
        "agent",
        "tcp",
        "icmp",
        "80:70",
        "65536",
        "{\"env\": \"X\"}",
        "\u{0}",
        "\u{7f}\u{1b}[31m",
        "\u{202e}abc",
        "e\u{301}\u{301}\u{301}",
        "名前",
        "🦀🦀",
        "a\nb\r\nc",
        "%s%n{}{0}",
        "~1~0/",
        "$(reboot)",
        "'; DROP TABLE",
    ];
    let huge_lengths = prop::sample::select(vec![
        63usize, 64, 253, 254, 255, 256, 4096, 65_535, 65_536, 70_000,
    ]);
    let fill = prop::sample::select(vec!["a", "1", "-", ".", "é", "🦀", "a.", "\u{0}"]);
    prop_oneof![
        2 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        3 => prop::sample::select(numbers),
        2 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_filter_map("finite", |float| serde_json::Number::from_f64(float).map(Value::Number)),
        4 => prop::sample::select(strings).prop_map(Value::from),
        2 => (fill, huge_lengths).prop_map(|(fill, length)| Value::from(fill.repeat(length))),
        2 => "\\PC{0,24}".prop_map(Value::from),
        1 => (1usize..160).prop_map(nested),
        2 => arbitrary_json(),
    ]
}

/// An array nested `depth` deep, with a string at the bottom.
fn nested(depth: usize) -> Value {
    (0..depth).fold(Value::from("bottom"), |inner, _| Value::Array(vec![inner]))
}

/// Any JSON value, small: scalars, arrays and objects a few levels deep, with keys that the files use.
fn arbitrary_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        3 => prop::sample::select(vec![
            "name", "vmid", "cores", "memory_mb", "swap_mb", "template", "clone_from_ctid", "clone_from_vmid",
            "dependencies", "network_config", "ip", "gw", "endpoint", "fingerprint", "proxmox", "nodes", "node",
            "lxc_configs", "vms", "vm_defaults", "docker_stacks", "environments", "storage_size_gb",
            "disk_size_gb", "traefik_service", "port", "features", "firewall", "rules", "101", "9000",
        ])
        .prop_map(str::to_owned),
        1 => "\\PC{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (0u64..2_000).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        prop::sample::select(vec![
            "dhcp",
            "10.0.0.5/24",
            "local:vztmpl/x.tar.zst",
            "101",
            "https://pve:8006"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => nasty_value().prop_map(Mutation::Replace),
        2 => Just(Mutation::Remove),
        1 => ("\\PC{0,8}|name|cores|vmid|dependencies", nasty_value())
            .prop_map(|(key, value)| Mutation::Insert(key, value)),
        2 => Just(Mutation::Duplicate),
    ]
}

/// Every JSON pointer into `value`, the root included, in document order.
fn pointers(value: &Value) -> Vec<String> {
    fn walk(value: &Value, here: String, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let token = key.replace('~', "~0").replace('/', "~1");
                    walk(child, format!("{here}/{token}"), out);
                }
            }
            Value::Array(items) => {
                for (index, child) in items.iter().enumerate() {
                    walk(child, format!("{here}/{index}"), out);
                }
            }
            _ => {}
        }
        out.push(here);
    }
    let mut out = Vec::new();
    walk(value, String::new(), &mut out);
    out
}

/// Applies a mutation at `pointer` of `document`.
fn mutate(document: &mut Value, pointer: &str, mutation: &Mutation) {
    let (parent_pointer, token) = pointer.rsplit_once('/').unwrap_or(("", ""));
    let token = token.replace("~1", "/").replace("~0", "~");
    match mutation {
        Mutation::Replace(value) => {
            if let Some(slot) = document.pointer_mut(pointer) {
                *slot = value.clone();
            }
        }
        Mutation::Insert(key, value) => {
            let target = match document.pointer(pointer) {
                Some(Value::Object(_)) => pointer,
                _ => parent_pointer,
            };
            if let Some(Value::Object(map)) = document.pointer_mut(target) {
                map.insert(key.clone(), value.clone());
            }
        }
        Mutation::Remove | Mutation::Duplicate if pointer.is_empty() => {}
        Mutation::Remove => match document.pointer_mut(parent_pointer) {
            Some(Value::Object(map)) => {
                map.remove(&token);
            }
            Some(Value::Array(items)) => {
                if let Ok(index) = token.parse::<usize>()
                    && index < items.len()
                {
                    items.remove(index);
                }
            }
            _ => {}
        },
        Mutation::Duplicate => match document.pointer_mut(parent_pointer) {
            Some(Value::Object(map)) => {
                if let Some(value) = map.get(&token).cloned() {
                    map.insert(format!("{token}1"), value);
                }
            }
            Some(Value::Array(items)) => {
                if let Some(item) = token
                    .parse::<usize>()
                    .ok()
                    .and_then(|index| items.get(index))
                    .cloned()
                {
                    items.push(item);
                }
            }
            _ => {}
        },
    }
}

/// A base, a file of it, and up to four mutations, each at a place picked by an index.
fn mutated_sources() -> impl Strategy<Value = Vec<SourceFile>> {
    let count = bases().len();
    (
        0..count,
        prop::collection::vec(
            (
                any::<prop::sample::Index>(),
                any::<prop::sample::Index>(),
                mutation(),
            ),
            1..5,
        ),
    )
        .prop_map(|(base, mutations)| {
            let mut files = bases()[base].clone();
            for (file, place, mutation) in &mutations {
                let chosen = file.index(files.len());
                let document = &mut files[chosen].2;
                let candidates = pointers(document);
                let pointer = place.get(&candidates).clone();
                mutate(document, &pointer, mutation);
            }
            sources_of(&files)
        })
}

/// A base with one file replaced by arbitrary JSON, or by arbitrary text.
fn arbitrary_sources() -> impl Strategy<Value = Vec<SourceFile>> {
    let count = bases().len();
    let text = prop_oneof![
        3 => arbitrary_json().prop_map(|value| serde_json::to_string_pretty(&value).expect("serialises")),
        1 => "\\PC{0,64}",
        1 => "[\\[\\]{}\":,0-9a-z \n\u{e9}\u{1f980}]{0,64}",
        1 => (1usize..4_000).prop_map(|depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth))),
    ];
    (0..count, any::<prop::sample::Index>(), text).prop_map(|(base, file, text)| {
        let files = &bases()[base];
        let replaced = file.index(files.len());
        let mut sources = sources_of(files);
        let (kind, path, _) = &files[replaced];
        sources[replaced] = SourceFile::new(*kind, path.clone(), text);
        sources
    })
}

/// A base file's text cut or edited at one byte, so that the parser and the locator see broken JSON.
fn broken_text_sources() -> impl Strategy<Value = Vec<SourceFile>> {
    let count = bases().len();
    let insert = prop::sample::select(vec!["", ",", "\"", "{", "]", "é", "🦀", "\\", "\n", "1e999"]);
    (
        0..count,
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        insert,
    )
        .prop_map(|(base, file, at, insert)| {
            let files = &bases()[base];
            let edited = file.index(files.len());
            let mut sources = sources_of(files);
            let (kind, path, _) = &files[edited];
            let text = sources[edited].text();
            let mut at = at.index(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let (before, after) = text.split_at(at);
            // An empty insertion deletes the character at the cut instead.
            let after = if insert.is_empty() {
                after.chars().skip(1).collect()
            } else {
                after.to_owned()
            };
            let edited_text = format!("{before}{insert}{after}");
            sources[edited] = SourceFile::new(*kind, path.clone(), edited_text);
            sources
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_configurations_never_panic(sources in mutated_sources()) {
        run_pipeline(sources);
    }

    #[test]
    fn arbitrary_files_never_panic(sources in arbitrary_sources()) {
        run_pipeline(sources);
    }

    #[test]
    fn broken_text_never_panics(sources in broken_text_sources()) {
        run_pipeline(sources);
    }
}

/// What the properties found, kept as named cases.
mod regressions {
    use super::*;

    /// The fixture with one edit made to one file's document.
    fn edited(kind: FileKind, pointer: &str, mutation: Mutation) -> Vec<SourceFile> {
        let mut files = bases()[0].clone();
        let (_, _, document) = files
            .iter_mut()
            .find(|(each, _, _)| *each == kind)
            .expect("the fixture has every file");
        assert!(document.pointer(pointer).is_some() || matches!(mutation, Mutation::Insert(..)));
        mutate(document, pointer, &mutation);
        sources_of(&files)
    }

    #[test]
    fn a_guest_name_of_65536_characters() {
        let name = Value::from("a".repeat(65_536));
        run_pipeline(edited(
            FileKind::Lxc,
            "/lxc_configs/101/name",
            Mutation::Replace(name),
        ));
    }

    /// A Traefik service name is a field of `sync/traefik`; the text plan padded field names to the longest,
    /// and `format!` panics on a width above `u16::MAX`.
    #[test]
    fn a_traefik_service_name_of_65536_characters() {
        let name = Value::from("a".repeat(65_536));
        run_pipeline(edited(
            FileKind::Lxc,
            "/lxc_configs/101/traefik_service/name",
            Mutation::Replace(name),
        ));
    }

    /// A host user's name is part of its address, and the apply report padded addresses to the longest.
    #[test]
    fn a_host_user_name_of_65536_characters() {
        let users = serde_json::json!([{ "username": "a".repeat(65_536) }]);
        run_pipeline(edited(
            FileKind::Hypervisor,
            "",
            Mutation::Insert("users".into(), users),
        ));
    }

    #[test]
    fn the_fixture_runs_through() {
        run_pipeline(sources_of(&bases()[0]));
    }
}
