//! The JSON Schemas of the four files: embedded, compiled once, and turned into [`Problem`]s.
//!
//! `schemas/*.schema.json` are the public contract. Where a schema puts an `x-phoenix-hint` beside a
//! keyword (a `pattern`, an `enum`), its text becomes the help line of the error.

use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use crate::config::FileKind;
use crate::lint::diagnostic::Problem;
use crate::lint::suggest::did_you_mean;
use crate::lint::tape::{TapeJson, TapeNode};

/// One embedded schema.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    /// The configuration file it describes.
    pub kind: FileKind,
    /// Its file name in `schemas/`.
    pub file_name: &'static str,
    /// The schema itself, as JSON text.
    pub text: &'static str,
}

/// Every schema, in [`FileKind::ALL`] order.
pub const SCHEMAS: [Schema; 4] = [
    Schema {
        kind: FileKind::Hypervisor,
        file_name: "phoenix_hypervisor_config.schema.json",
        text: include_str!("../../../schemas/phoenix_hypervisor_config.schema.json"),
    },
    Schema {
        kind: FileKind::Lxc,
        file_name: "phoenix_lxc_configs.schema.json",
        text: include_str!("../../../schemas/phoenix_lxc_configs.schema.json"),
    },
    Schema {
        kind: FileKind::Vm,
        file_name: "phoenix_vm_configs.schema.json",
        text: include_str!("../../../schemas/phoenix_vm_configs.schema.json"),
    },
    Schema {
        kind: FileKind::Stacks,
        file_name: "phoenix_stacks_config.schema.json",
        text: include_str!("../../../schemas/phoenix_stacks_config.schema.json"),
    },
];

impl Schema {
    /// The schema of a file kind.
    pub fn of(kind: FileKind) -> &'static Schema {
        SCHEMAS
            .iter()
            .find(|schema| schema.kind == kind)
            .expect("every file kind has a schema")
    }

    /// Finds a schema by file kind name (`lxc`), file name or schema file name.
    pub fn find(name: &str) -> Option<&'static Schema> {
        let name = name.trim_end_matches(".json").trim_end_matches(".schema");
        SCHEMAS.iter().find(|schema| {
            let file_stem = schema.kind.file_name().trim_end_matches(".json");
            name == file_stem || name == schema.kind.short_name()
        })
    }
}

struct Compiled {
    document: Value,
    validator: Validator<TapeJson>,
}

fn compiled(kind: FileKind) -> &'static Compiled {
    static COMPILED: OnceLock<Vec<Compiled>> = OnceLock::new();
    let all = COMPILED.get_or_init(|| {
        SCHEMAS
            .iter()
            .map(|schema| {
                let document: Value = serde_json::from_str(schema.text).expect("embedded schema is JSON");
                let validator = jsonschema::options_for::<TapeJson>()
                    .with_draft(jsonschema::Draft::Draft202012)
                    .build(&document)
                    .expect("embedded schema compiles");
                Compiled { document, validator }
            })
            .collect()
    });
    let position = FileKind::ALL
        .iter()
        .position(|each| *each == kind)
        .expect("kind is listed");
    &all[position]
}

/// Checks a parsed file against its schema; returns every problem found.
pub(crate) fn check(kind: FileKind, instance: TapeNode<'_>) -> Vec<Problem> {
    let compiled = compiled(kind);
    let mut problems = Vec::new();
    // Most files are valid: the yes-or-no walk stops at nothing and builds no error, so it comes first.
    if compiled.validator.is_valid(instance) {
        return problems;
    }
    for error in compiled.validator.iter_errors(instance) {
        problems.extend(to_problems(kind, &compiled.document, &error));
    }
    problems
}

fn to_problems(kind: FileKind, schema: &Value, error: &ValidationError<'_>) -> Vec<Problem> {
    let pointer = error.instance_path().as_str().to_owned();
    let keyword_schema = keyword_parent(schema, error);
    let hint = keyword_schema
        .and_then(|parent| parent.get("x-phoenix-hint"))
        .and_then(Value::as_str);
    let instance = error.instance();
    let problem = match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            let known: Vec<&str> = keyword_schema
                .and_then(|parent| parent.get("properties"))
                .and_then(Value::as_object)
                .map(|properties| properties.keys().map(String::as_str).collect())
                .unwrap_or_default();
            return unexpected
                .iter()
                .map(|key| {
                    let mut problem = Problem::error(
                        "phoenix::schema::unknown_key",
                        kind,
                        format!("{pointer}/{}", escape_pointer_token(key)),
                        format!("unknown key `{key}`"),
                    )
                    .on_key()
                    .with_label("not a known key here");
                    problem = match did_you_mean(key, known.iter().copied()) {
                        Some(suggestion) => problem.with_help(format!("did you mean `{suggestion}`?")),
                        None if !known.is_empty() => {
                            problem.with_help(format!("known keys here: {}", known.join(", ")))
                        }
                        None => problem,
                    };
                    problem
                })
                .collect();
        }
        ValidationErrorKind::PropertyNames { error: inner } => {
            let key = inner.instance().as_str().unwrap_or_default().to_owned();
            let inner_hint = keyword_parent(schema, inner).and_then(|parent| parent.get("x-phoenix-hint"));
            let mut problem = Problem::error(
                "phoenix::schema::invalid_key",
                kind,
                format!("{pointer}/{}", escape_pointer_token(&key)),
                format!("`{key}` is not a valid key here"),
            )
            .on_key()
            .with_label("invalid key");
            if let Some(hint) = inner_hint.and_then(Value::as_str).or(hint) {
                problem = problem.with_help(hint);
            }
            return vec![problem];
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            Problem::error(
                "phoenix::schema::missing_key",
                kind,
                pointer.clone(),
                format!("missing required key `{name}`"),
            )
            .on_key()
            .with_label(format!("`{name}` is required here"))
        }
        ValidationErrorKind::Type { kind: expected } => Problem::error(
            "phoenix::schema::wrong_type",
            kind,
            pointer.clone(),
            format!(
                "expected {}, found {}",
                describe_types(expected),
                describe_value(instance)
            ),
        )
        .with_label(format!("expected {}", describe_types(expected))),
        ValidationErrorKind::Enum { options } => {
            let allowed: Vec<String> = options
                .as_array()
                .map(|values| values.iter().map(render_scalar).collect())
                .unwrap_or_default();
            let mut problem = Problem::error(
                "phoenix::schema::not_allowed",
                kind,
                pointer.clone(),
                format!(
                    "{} must be one of {}, not {}",
                    subject(&pointer),
                    allowed.join(", "),
                    render_scalar(instance)
                ),
            )
            .with_label("not an allowed value");
            let typed = instance.as_str().unwrap_or_default();
            let suggestion = did_you_mean(typed, allowed.iter().map(|each| each.trim_matches('"')));
            if let Some(suggestion) = suggestion {
                problem = problem.with_help(format!("did you mean `{suggestion}`?"));
            } else if let Some(hint) = hint {
                problem = problem.with_help(hint);
            }
            return vec![problem];
        }
        ValidationErrorKind::Pattern { .. } => Problem::error(
            "phoenix::schema::bad_format",
            kind,
            pointer.clone(),
            format!("{} is not a valid {}", render_scalar(instance), subject(&pointer)),
        )
        .with_label("does not have the expected form"),
        ValidationErrorKind::Minimum { limit } | ValidationErrorKind::ExclusiveMinimum { limit } => {
            Problem::error(
                "phoenix::schema::out_of_range",
                kind,
                pointer.clone(),
                format!("{} is below the minimum of {limit}", render_scalar(instance)),
            )
            .with_label("too small")
        }
        ValidationErrorKind::Maximum { limit } | ValidationErrorKind::ExclusiveMaximum { limit } => {
            Problem::error(
                "phoenix::schema::out_of_range",
                kind,
                pointer.clone(),
                format!("{} is above the maximum of {limit}", render_scalar(instance)),
            )
            .with_label("too large")
        }
        ValidationErrorKind::MaxLength { limit } => Problem::error(
            "phoenix::schema::too_long",
            kind,
            pointer.clone(),
            format!(
                "{} is {} characters long, more than the {limit} allowed",
                subject(&pointer),
                instance.as_str().map_or(0, |text| text.chars().count())
            ),
        )
        .with_label("too long"),
        ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context } => {
            // One form of the right type (an array where "one object or an array" is accepted): its own
            // errors say what is wrong, deeper down, better than "no form matches".
            let of_the_right_type: Vec<&Vec<ValidationError<'_>>> = context
                .iter()
                .filter(|errors| {
                    !errors.iter().any(|inner| {
                        inner.instance_path().as_str() == pointer
                            && matches!(inner.kind(), ValidationErrorKind::Type { .. })
                    })
                })
                .collect();
            if let [errors] = of_the_right_type.as_slice()
                && !errors.is_empty()
            {
                return errors
                    .iter()
                    .flat_map(|inner| to_problems(kind, schema, inner))
                    .collect();
            }
            let description = keyword_schema
                .and_then(|parent| parent.get("description"))
                .and_then(Value::as_str);
            let mut problem = Problem::error(
                "phoenix::schema::no_variant",
                kind,
                pointer.clone(),
                format!(
                    "{} does not match any of the accepted forms",
                    describe_value(instance)
                ),
            )
            .with_label("not an accepted form");
            if let Some(text) = hint.or(description) {
                problem = problem.with_help(text);
            }
            return vec![problem];
        }
        _ => Problem::error(
            "phoenix::schema::invalid",
            kind,
            pointer.clone(),
            error.to_string(),
        )
        .with_label("invalid value"),
    };
    vec![match hint {
        Some(hint) => problem.with_help(hint),
        None => problem,
    }]
}

/// The schema object holding the keyword that failed, found through its absolute keyword location.
fn keyword_parent<'a>(schema: &'a Value, error: &ValidationError<'_>) -> Option<&'a Value> {
    let location = error.absolute_keyword_location()?;
    let fragment = location.fragment()?.as_str();
    let decoded = percent_decode(fragment);
    let parent = decoded.rsplit_once('/').map_or("", |(parent, _keyword)| parent);
    schema.pointer(parent)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%'
            && let Some(byte) = text
                .get(index + 1..index + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            index += 3;
            continue;
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Escapes one JSON pointer token (RFC 6901).
pub(crate) fn escape_pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// What a pointer names, for messages: its last key, or `item of <key>` for an array element.
fn subject(pointer: &str) -> String {
    let mut tokens = pointer.rsplit('/');
    let last = tokens.next().unwrap_or_default();
    if last.bytes().all(|byte| byte.is_ascii_digit()) && !last.is_empty() {
        let parent = tokens.next().unwrap_or("value");
        format!("item of `{parent}`")
    } else if last.is_empty() {
        "document".to_owned()
    } else {
        format!("`{}`", last.replace("~1", "/").replace("~0", "~"))
    }
}

fn describe_types(kind: &TypeKind) -> String {
    match kind {
        TypeKind::Single(single) => article(&single.to_string()),
        TypeKind::Multiple(many) => {
            let names: Vec<String> = many.iter().map(|each| article(&each.to_string())).collect();
            names.join(" or ")
        }
    }
}

fn article(type_name: &str) -> String {
    match type_name {
        "integer" | "array" | "object" => format!("an {type_name}"),
        "null" => "null".to_owned(),
        other => format!("a {other}"),
    }
}

fn describe_value(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(_) => "a boolean".to_owned(),
        Value::Number(number) if number.is_i64() || number.is_u64() => format!("the integer {number}"),
        Value::Number(number) => format!("the number {number}"),
        Value::String(text) => format!("the string {}", quoted(text)),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

fn render_scalar(value: &Value) -> String {
    match value {
        Value::String(text) => quoted(text),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
        other => other.to_string(),
    }
}

/// A string in quotes, as messages show it: escaped, and whole when short, else its start and its length,
/// so that a value of megabytes does not make a message of megabytes.
fn quoted(text: &str) -> String {
    const LIMIT: usize = 60;
    let length = text.chars().count();
    if length <= LIMIT {
        return format!("\"{}\"", text.escape_debug());
    }
    let start: String = text.chars().take(LIMIT).collect();
    format!("\"{}…\" ({length} characters)", start.escape_debug())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lint::tape::{self, TapeNode};

    /// The errors a validator finds, as (instance pointer, message), sorted.
    fn on_value(kind: FileKind, value: &Value) -> Vec<(String, String)> {
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&compiled(kind).document)
            .expect("schema compiles");
        let mut errors: Vec<(String, String)> = validator
            .iter_errors(value)
            .map(|error| (error.instance_path().as_str().to_owned(), error.to_string()))
            .collect();
        errors.sort();
        errors
    }

    fn on_tape(kind: FileKind, text: &str) -> Vec<(String, String)> {
        let entries = tape::scan(text).expect("valid JSON");
        let root = TapeNode::root(text, &entries).expect("a root");
        let mut errors: Vec<(String, String)> = compiled(kind)
            .validator
            .iter_errors(root)
            .map(|error| (error.instance_path().as_str().to_owned(), error.to_string()))
            .collect();
        errors.sort();
        assert_eq!(compiled(kind).validator.is_valid(root), errors.is_empty());
        errors
    }

    /// The schema reads the tape as it reads a `serde_json::Value`: the same errors at the same places, on
    /// the examples and on breakages of every kind of keyword.
    #[test]
    fn the_tape_validates_as_a_value_does() {
        let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/homelab");
        type Breakage = (&'static str, fn(&mut Value));
        let breakages: [Breakage; 7] = [
            ("as written", |_| {}),
            ("wrong type", |lxc| {
                lxc["lxc_configs"]["901"]["memory_mb"] = "lots".into()
            }),
            ("unknown key", |lxc| {
                lxc["lxc_configs"]["901"]["memroy_mb"] = 1.into()
            }),
            ("not in the enum", |lxc| {
                lxc["lxc_configs"]["901"]["gpu_assignment"] = "maybe".into()
            }),
            ("missing key", |lxc| {
                lxc["lxc_configs"]["901"]
                    .as_object_mut()
                    .expect("object")
                    .remove("name");
            }),
            ("bad key", |lxc| {
                lxc["lxc_configs"]["abc"] = serde_json::json!({"name": "x"})
            }),
            ("escaped string", |lxc| {
                lxc["lxc_configs"]["901"]["name"] = "tab\there \u{e9}\"".into()
            }),
        ];
        for (what, breakage) in breakages {
            let text =
                std::fs::read_to_string(format!("{examples}/phoenix_lxc_configs.json")).expect("example");
            let mut value: Value = serde_json::from_str(&text).expect("JSON");
            breakage(&mut value);
            let text = serde_json::to_string_pretty(&value).expect("serialises");
            let expected = on_value(FileKind::Lxc, &value);
            assert_eq!(on_tape(FileKind::Lxc, &text), expected, "{what}");
            assert_eq!(expected.is_empty(), what == "as written", "{what}: {expected:?}");
        }
        // Escapes, as a hand writes them: the name is valid only once `\u0041` is read as `A`.
        let text = std::fs::read_to_string(format!("{examples}/phoenix_lxc_configs.json")).expect("example");
        let escaped = text.replacen(r#""name": ""#, r#""name": "\u0041b\u0063-"#, 1);
        assert_ne!(escaped, text);
        let value: Value = serde_json::from_str(&escaped).expect("JSON");
        assert_eq!(on_tape(FileKind::Lxc, &escaped), on_value(FileKind::Lxc, &value));
        assert!(on_value(FileKind::Lxc, &value).is_empty());
        for kind in [FileKind::Hypervisor, FileKind::Vm, FileKind::Stacks] {
            let text = std::fs::read_to_string(format!("{examples}/{}", kind.file_name())).expect("example");
            let value: Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(on_tape(kind, &text), on_value(kind, &value), "{kind:?}");
        }
    }
}
