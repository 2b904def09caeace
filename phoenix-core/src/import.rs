//! Writing guests read from a live cluster (`phoenix import`) into the configuration files: [`Doc`], JSON
//! whose keys keep the order they are written in, and [`merge`], which adds entries to a file's text without
//! touching what is already there (its formatting, order and comments-free layout stay byte for byte).

use std::fmt::Write as _;

use serde_json::Value;

use crate::config::FileKind;
use crate::lint::source::SourceFile;

/// A JSON value whose object keys keep the order they were added in, so an imported guest reads like a
/// hand-written one (name first, then sizes, network, firewall), not alphabetically.
#[derive(Debug, Clone, PartialEq)]
pub enum Doc {
    /// An object, its members in order.
    Object(Vec<(String, Doc)>),
    /// An array.
    Array(Vec<Doc>),
    /// A number, string, boolean or null (an object or array here renders with its keys sorted).
    Value(Value),
}

impl Doc {
    /// An empty object, to add members to with [`Doc::with`].
    pub fn object() -> Doc {
        Doc::Object(Vec::new())
    }

    /// This object with one more member.
    pub fn with(mut self, key: &str, value: impl Into<Doc>) -> Doc {
        if let Doc::Object(members) = &mut self {
            members.push((key.to_owned(), value.into()));
        }
        self
    }

    /// This object with one more member when there is a value.
    pub fn with_some<T: Into<Doc>>(self, key: &str, value: Option<T>) -> Doc {
        match value {
            Some(value) => self.with(key, value),
            None => self,
        }
    }

    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Doc> {
        match self {
            Doc::Object(members) => members.iter().find(|(name, _)| name == key).map(|(_, doc)| doc),
            _ => None,
        }
    }

    /// The same document as a `serde_json::Value` (keys then sorted).
    pub fn to_value(&self) -> Value {
        match self {
            Doc::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(key, doc)| (key.clone(), doc.to_value()))
                    .collect(),
            ),
            Doc::Array(items) => Value::Array(items.iter().map(Doc::to_value).collect()),
            Doc::Value(value) => value.clone(),
        }
    }

    /// Pretty-printed, the first line at the current position, the others indented by `indent` plus as many
    /// `unit`s as they are deep.
    pub fn render(&self, indent: &str, unit: &str) -> String {
        let mut out = String::new();
        self.write(indent, unit, &mut out);
        out
    }

    fn write(&self, indent: &str, unit: &str, out: &mut String) {
        let inner = format!("{indent}{unit}");
        match self {
            Doc::Object(members) if members.is_empty() => out.push_str("{}"),
            Doc::Array(items) if items.is_empty() => out.push_str("[]"),
            Doc::Object(members) => {
                out.push('{');
                for (index, (key, doc)) in members.iter().enumerate() {
                    out.push_str(if index == 0 { "\n" } else { ",\n" });
                    let _ = write!(out, "{inner}{}: ", Value::String(key.clone()));
                    doc.write(&inner, unit, out);
                }
                let _ = write!(out, "\n{indent}}}");
            }
            Doc::Array(items) => {
                out.push('[');
                for (index, doc) in items.iter().enumerate() {
                    out.push_str(if index == 0 { "\n" } else { ",\n" });
                    out.push_str(&inner);
                    doc.write(&inner, unit, out);
                }
                let _ = write!(out, "\n{indent}]");
            }
            Doc::Value(value @ (Value::Object(_) | Value::Array(_))) => {
                Doc::from(value.clone()).write(indent, unit, out)
            }
            Doc::Value(value) => out.push_str(&value.to_string()),
        }
    }
}

impl From<Value> for Doc {
    fn from(value: Value) -> Doc {
        match value {
            Value::Object(map) => Doc::Object(
                map.into_iter()
                    .map(|(key, value)| (key, Doc::from(value)))
                    .collect(),
            ),
            Value::Array(items) => Doc::Array(items.into_iter().map(Doc::from).collect()),
            value => Doc::Value(value),
        }
    }
}

impl From<&str> for Doc {
    fn from(text: &str) -> Doc {
        Doc::Value(Value::String(text.to_owned()))
    }
}

impl From<String> for Doc {
    fn from(text: String) -> Doc {
        Doc::Value(Value::String(text))
    }
}

impl From<&String> for Doc {
    fn from(text: &String) -> Doc {
        Doc::from(text.as_str())
    }
}

impl From<bool> for Doc {
    fn from(flag: bool) -> Doc {
        Doc::Value(Value::Bool(flag))
    }
}

impl From<u64> for Doc {
    fn from(number: u64) -> Doc {
        Doc::Value(Value::from(number))
    }
}

impl From<u32> for Doc {
    fn from(number: u32) -> Doc {
        Doc::Value(Value::from(number))
    }
}

impl From<Vec<Doc>> for Doc {
    fn from(items: Vec<Doc>) -> Doc {
        Doc::Array(items)
    }
}

/// A guest read from the cluster and written as configuration: its ID, its entry, and what the operator
/// should know about it (what could not be expressed, secrets to fill in, what the next plan will change).
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The CTID or VM ID.
    pub id: u32,
    /// The entry, as the guest's file writes it (for a VM, including its `vmid`).
    pub entry: Doc,
    /// Notes for the operator, one sentence each.
    pub notes: Vec<String>,
}

/// Where one file keeps its guests: `lxc_configs`, an object keyed by CTID, or `vms`, an array of objects
/// with a `vmid`.
fn container_of(kind: FileKind) -> Option<(&'static str, bool)> {
    match kind {
        FileKind::Lxc => Some(("lxc_configs", true)),
        FileKind::Vm => Some(("vms", false)),
        FileKind::Hypervisor | FileKind::Stacks => None,
    }
}

/// Why imported guests could not be written into a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// The file is not JSON, or its guests are not where the schema puts them.
    #[error("{path} cannot take imported guests: {reason}")]
    Unmergeable {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The text of `kind`'s file with `guests` added, in ID order among existing guests when those are in ID
/// order (at the end otherwise). `existing` is the file as it is, `None` when there is none yet: then a new
/// file with two-space indentation. What the file already holds is kept byte for byte.
pub fn merge(
    kind: FileKind,
    existing: Option<&SourceFile>,
    guests: &[Imported],
) -> Result<String, MergeError> {
    let (name, keyed) = container_of(kind).expect("guests live in the LXC and VM files");
    let mut sorted: Vec<&Imported> = guests.iter().collect();
    sorted.sort_by_key(|guest| guest.id);
    let render_item = |guest: &Imported, indent: &str, unit: &str| {
        let body = guest.entry.render(indent, unit);
        if keyed {
            format!("\"{}\": {body}", guest.id)
        } else {
            body
        }
    };
    let Some(source) = existing else {
        let (unit, inner) = ("  ", "    ");
        let items: Vec<String> = sorted
            .iter()
            .map(|guest| render_item(guest, inner, unit))
            .collect();
        return Ok(format!(
            "{{\n{unit}\"{name}\": {}\n}}\n",
            wrap(&items, keyed, unit, inner)
        ));
    };
    let unmergeable = |reason: &str| MergeError::Unmergeable {
        path: source.path().to_owned(),
        reason: reason.to_owned(),
    };
    // Parsed here (which indexes its spans), so that it does not matter whether the caller had.
    let mut source = source.clone();
    source.parse().map_err(|error| unmergeable(&error.to_string()))?;
    let text = source.text();
    let document: Value = serde_json::from_str(text).map_err(|error| unmergeable(&error.to_string()))?;
    let unit = indent_unit(text);
    let pointer = format!("/{name}");
    let Some(location) = source.locate(&pointer) else {
        // No such member yet: add it at the end of the root object.
        let root = source
            .locate("")
            .ok_or_else(|| unmergeable("it is not an object"))?;
        if !document.is_object() {
            return Err(unmergeable("it is not an object"));
        }
        let close = root.value.end - 1;
        let items: Vec<String> = sorted
            .iter()
            .map(|guest| render_item(guest, &format!("{unit}{unit}"), &unit))
            .collect();
        let member = format!(
            "\"{name}\": {}",
            wrap(&items, keyed, &unit, &format!("{unit}{unit}"))
        );
        let before = text[..close].trim_end();
        let separator = if document.as_object().is_some_and(|map| !map.is_empty()) {
            ","
        } else {
            ""
        };
        return Ok(format!("{before}{separator}\n{unit}{member}\n{}", &text[close..]));
    };
    let container = document.pointer(&pointer).expect("located values exist");
    // The existing guests: where each starts and ends, and its ID, in the order the file has them.
    let mut children: Vec<(usize, usize, Option<u64>)> = match container {
        Value::Object(map) if keyed => map
            .keys()
            .filter_map(|key| {
                let at = source.locate(&format!("{pointer}/{}", escape(key)))?;
                let start = at.key.map_or(at.value.start, |key| key.start);
                Some((start, at.value.end, key.parse().ok()))
            })
            .collect(),
        Value::Array(items) if !keyed => items
            .iter()
            .enumerate()
            .filter_map(|(index, item)| {
                let at = source.locate(&format!("{pointer}/{index}"))?;
                Some((
                    at.value.start,
                    at.value.end,
                    item.get("vmid").and_then(Value::as_u64),
                ))
            })
            .collect(),
        _ => {
            return Err(unmergeable(&format!(
                "`{name}` is not {}",
                if keyed { "an object" } else { "an array" }
            )));
        }
    };
    children.sort_by_key(|child| child.0);
    let outer_indent = line_indent(text, location.key.map_or(location.value.start, |key| key.start));
    let child_indent = match children.first() {
        Some(&(start, ..)) => line_indent(text, start),
        None => format!("{outer_indent}{unit}"),
    };
    if children.is_empty() {
        let items: Vec<String> = sorted
            .iter()
            .map(|guest| render_item(guest, &child_indent, &unit))
            .collect();
        let replaced = wrap(&items, keyed, &outer_indent, &child_indent);
        return Ok(format!(
            "{}{replaced}{}",
            &text[..location.value.start],
            &text[location.value.end..]
        ));
    }
    let in_order = children.windows(2).all(|pair| match (pair[0].2, pair[1].2) {
        (Some(left), Some(right)) => left < right,
        _ => false,
    });
    // Insertions as (offset, text), each guest before the first existing one with a larger ID.
    let mut insertions: Vec<(usize, String)> = Vec::new();
    for guest in sorted {
        let rendered = render_item(guest, &child_indent, &unit);
        let next = children
            .iter()
            .find(|child| in_order && child.2.is_some_and(|id| id > u64::from(guest.id)));
        match next {
            Some(&(start, ..)) => insertions.push((start, format!("{rendered},\n{child_indent}"))),
            None => {
                let end = children.last().expect("not empty").1;
                insertions.push((end, format!(",\n{child_indent}{rendered}")));
            }
        }
    }
    let mut out =
        String::with_capacity(text.len() + insertions.iter().map(|(_, text)| text.len()).sum::<usize>());
    let mut at = 0;
    // Stable: guests going to one place keep their ID order.
    insertions.sort_by_key(|(offset, _)| *offset);
    for (offset, insertion) in insertions {
        out.push_str(&text[at..offset]);
        out.push_str(&insertion);
        at = offset;
    }
    out.push_str(&text[at..]);
    Ok(out)
}

/// The rendered items inside their braces or brackets.
fn wrap(items: &[String], keyed: bool, outer: &str, inner: &str) -> String {
    let (open, close) = if keyed { ('{', '}') } else { ('[', ']') };
    if items.is_empty() {
        return format!("{open}{close}");
    }
    let body = items.join(&format!(",\n{inner}"));
    format!("{open}\n{inner}{body}\n{outer}{close}")
}

/// The whitespace before `offset` on its line, when nothing else precedes it there; otherwise the
/// indentation of that line.
fn line_indent(text: &str, offset: usize) -> String {
    let line_start = text[..offset].rfind('\n').map_or(0, |newline| newline + 1);
    text[line_start..offset]
        .chars()
        .take_while(|c| *c == ' ' || *c == '\t')
        .collect()
}

/// One level of indentation as the file writes it: the indentation of its first indented line (two spaces
/// when it has none).
fn indent_unit(text: &str) -> String {
    text.lines()
        .map(|line| {
            line.chars()
                .take_while(|c| *c == ' ' || *c == '\t')
                .collect::<String>()
        })
        .find(|indent| !indent.is_empty())
        .unwrap_or_else(|| "  ".to_owned())
}

/// A key as a JSON pointer token (RFC 6901).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn source(kind: FileKind, text: &str) -> SourceFile {
        SourceFile::new(kind, kind.file_name(), text)
    }

    fn guest(id: u32, name: &str) -> Imported {
        Imported {
            id,
            entry: Doc::object().with("name", name).with("cores", 2u32),
            notes: Vec::new(),
        }
    }

    #[test]
    fn members_keep_their_order_and_render_like_a_hand_written_file() {
        let doc = Doc::object()
            .with("name", "web")
            .with("memory_mb", 1024u64)
            .with("features", vec![Doc::from("base_setup")])
            .with(
                "firewall",
                Doc::object().with("enabled", true).with("rules", Vec::new()),
            )
            .with("network_config", json!({"ip": "dhcp", "bridge": "vmbr0"}));
        assert_eq!(
            doc.render("", "  "),
            "{\n  \"name\": \"web\",\n  \"memory_mb\": 1024,\n  \"features\": [\n    \"base_setup\"\n  ],\n  \
             \"firewall\": {\n    \"enabled\": true,\n    \"rules\": []\n  },\n  \"network_config\": {\n    \
             \"bridge\": \"vmbr0\",\n    \"ip\": \"dhcp\"\n  }\n}"
        );
    }

    #[test]
    fn containers_go_between_existing_ones_in_id_order_and_the_rest_stays_byte_for_byte() {
        let text = "{\n    \"nvidia_driver_version\": \"580.76.05\",\n    \"lxc_configs\": {\n        \"100\": { \"name\": \"a\" },\n        \"300\": {\n            \"name\": \"c\"\n        }\n    }\n}\n";
        let merged = merge(
            FileKind::Lxc,
            Some(&source(FileKind::Lxc, text)),
            &[guest(400, "d"), guest(200, "b"), guest(50, "z")],
        )
        .expect("merges");
        let value: Value = serde_json::from_str(&merged).expect("still JSON");
        let ids: Vec<&String> = value["lxc_configs"].as_object().expect("object").keys().collect();
        assert_eq!(ids, ["100", "200", "300", "400", "50"]);
        assert!(merged.contains("        \"100\": { \"name\": \"a\" },\n        \"200\": {\n            \"name\": \"b\",\n            \"cores\": 2\n        },\n        \"300\": {"), "{merged}");
        assert!(
            merged.starts_with(
                "{\n    \"nvidia_driver_version\": \"580.76.05\",\n    \"lxc_configs\": {\n        \"50\": {"
            ),
            "{merged}"
        );
        assert!(merged.ends_with("        \"400\": {\n            \"name\": \"d\",\n            \"cores\": 2\n        }\n    }\n}\n"), "{merged}");
        // Taking the new entries out again gives back the file as it was.
        let mut value = value;
        for id in ["50", "200", "400"] {
            value["lxc_configs"].as_object_mut().expect("object").remove(id);
        }
        assert_eq!(value, serde_json::from_str::<Value>(text).expect("JSON"));
    }

    #[test]
    fn vms_are_appended_when_the_file_is_not_in_id_order_and_a_missing_array_is_added() {
        let text = "{\n\t\"vms\": [\n\t\t{\"vmid\": 9000, \"name\": \"t\"},\n\t\t{\"vmid\": 1000, \"name\": \"u\"}\n\t]\n}";
        let vm = |id: u32| Imported {
            id,
            entry: Doc::object().with("vmid", id).with("name", "x"),
            notes: Vec::new(),
        };
        let merged = merge(FileKind::Vm, Some(&source(FileKind::Vm, text)), &[vm(5000)]).expect("merges");
        assert_eq!(
            merged,
            "{\n\t\"vms\": [\n\t\t{\"vmid\": 9000, \"name\": \"t\"},\n\t\t{\"vmid\": 1000, \"name\": \"u\"},\n\t\t{\n\t\t\t\"vmid\": 5000,\n\t\t\t\"name\": \"x\"\n\t\t}\n\t]\n}"
        );
        let defaults_only = "{\n  \"vm_defaults\": { \"cores\": 2 }\n}\n";
        let merged = merge(
            FileKind::Vm,
            Some(&source(FileKind::Vm, defaults_only)),
            &[vm(5000)],
        )
        .expect("merges");
        assert_eq!(
            merged,
            "{\n  \"vm_defaults\": { \"cores\": 2 },\n  \"vms\": [\n    {\n      \"vmid\": 5000,\n      \"name\": \"x\"\n    }\n  ]\n}\n"
        );
        let empty = merge(
            FileKind::Vm,
            Some(&source(FileKind::Vm, "{\"vms\": []}")),
            &[vm(1)],
        )
        .expect("merges");
        assert_eq!(
            serde_json::from_str::<Value>(&empty).expect("JSON"),
            json!({"vms": [{"vmid": 1, "name": "x"}]})
        );
    }

    #[test]
    fn a_new_file_holds_only_the_imported_guests() {
        let merged = merge(FileKind::Lxc, None, &[guest(101, "web")]).expect("merges");
        assert_eq!(
            merged,
            "{\n  \"lxc_configs\": {\n    \"101\": {\n      \"name\": \"web\",\n      \"cores\": 2\n    }\n  }\n}\n"
        );
    }

    #[test]
    fn a_file_whose_guests_are_not_where_the_schema_puts_them_is_refused() {
        let text = "{\"lxc_configs\": []}";
        let error = merge(
            FileKind::Lxc,
            Some(&source(FileKind::Lxc, text)),
            &[guest(1, "a")],
        )
        .expect_err("refused");
        assert!(
            error.to_string().contains("`lxc_configs` is not an object"),
            "{error}"
        );
    }
}
