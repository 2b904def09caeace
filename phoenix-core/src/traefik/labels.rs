//! Docker-style Traefik labels (`traefik.http.routers.qdrant.rule=Host(...)`) read as pieces of the file
//! provider's dynamic configuration.
//!
//! Labels are case-insensitive where Traefik's are (`certresolver` is `certResolver`); names of routers,
//! services and middlewares, and free keys such as header names, keep the case they are written in. The
//! settings a label may name, with the type of each, are `keys.txt`: derived from Traefik's file-provider
//! JSON Schema (a test keeps the two equal), plus the few the Docker provider adds, which Phoenix turns
//! into file-provider settings ([`EXTRA_KEYS`]).

use std::sync::OnceLock;

use serde_json::Value;

use crate::lint::suggest::did_you_mean;

/// The settings of the dynamic configuration that labels may set: `<section> <path> <kind>` per line.
pub const KEYS: &str = include_str!("keys.txt");

/// Settings only the Docker provider knows: a service's one server by its port, scheme or URL (turned into
/// `servers` with the VM's address), and a router's `tls=true`.
const EXTRA_KEYS: &str = "\
router tls object
service loadBalancer.server.port integer
service loadBalancer.server.scheme string
service loadBalancer.server.url string
";

/// Where in the dynamic configuration a label's setting goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    /// `http.routers`.
    Router,
    /// `http.services`.
    Service,
    /// `http.middlewares`.
    Middleware,
    /// `tls.options`.
    TlsOptions,
}

impl Section {
    /// All sections, in the order the file lists them.
    pub const ALL: [Section; 4] = [
        Section::Router,
        Section::Service,
        Section::Middleware,
        Section::TlsOptions,
    ];

    /// The word `keys.txt` and plan fields use: `router`, `service`, `middleware`, `tls_options`.
    pub fn word(self) -> &'static str {
        match self {
            Section::Router => "router",
            Section::Service => "service",
            Section::Middleware => "middleware",
            Section::TlsOptions => "tls_options",
        }
    }

    /// The label prefix: `traefik.http.routers`.
    pub fn label_prefix(self) -> &'static str {
        match self {
            Section::Router => "traefik.http.routers",
            Section::Service => "traefik.http.services",
            Section::Middleware => "traefik.http.middlewares",
            Section::TlsOptions => "traefik.tls.options",
        }
    }

    fn from_word(word: &str) -> Option<Section> {
        Section::ALL.into_iter().find(|section| section.word() == word)
    }
}

/// The JSON type of a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text.
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// Text items, written comma-separated.
    List,
    /// A free key with a text value (a header name, say).
    Map,
    /// An object that is present or not: `tls=true`.
    Object,
}

impl Kind {
    fn from_word(word: &str) -> Option<Kind> {
        Some(match word {
            "string" => Kind::String,
            "integer" => Kind::Integer,
            "number" => Kind::Number,
            "boolean" => Kind::Boolean,
            "list" => Kind::List,
            "map" => Kind::Map,
            "object" => Kind::Object,
            _ => return None,
        })
    }
}

/// One segment of a setting's path in `keys.txt`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// A named field: `rule`.
    Field(String),
    /// A list of objects, indexed in labels: `domains[]`, written `domains[0]`.
    Items(String),
    /// A free key: `*`.
    Any,
}

#[derive(Debug)]
struct Key {
    section: Section,
    segments: Vec<Segment>,
    kind: Kind,
}

impl Key {
    /// The label spelling of the path, for suggestions: `tls.certresolver`, `tls.domains[0].main`.
    fn spelling(&self) -> String {
        let parts: Vec<String> = self
            .segments
            .iter()
            .map(|segment| match segment {
                Segment::Field(name) => name.to_ascii_lowercase(),
                Segment::Items(name) => format!("{}[0]", name.to_ascii_lowercase()),
                Segment::Any => "<name>".to_owned(),
            })
            .collect();
        parts.join(".")
    }
}

fn keys() -> &'static [Key] {
    static KEYS_PARSED: OnceLock<Vec<Key>> = OnceLock::new();
    KEYS_PARSED.get_or_init(|| {
        KEYS.lines()
            .chain(EXTRA_KEYS.lines())
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| {
                let mut words = line.split(' ');
                let (Some(section), Some(path), Some(kind), None) =
                    (words.next(), words.next(), words.next(), words.next())
                else {
                    panic!("keys.txt: `{line}` is not `<section> <path> <kind>`");
                };
                let segments = path
                    .split('.')
                    .map(|segment| match segment {
                        "*" => Segment::Any,
                        _ => match segment.strip_suffix("[]") {
                            Some(name) => Segment::Items(name.to_owned()),
                            None => Segment::Field(segment.to_owned()),
                        },
                    })
                    .collect();
                Key {
                    section: Section::from_word(section).expect("keys.txt names known sections"),
                    segments,
                    kind: Kind::from_word(kind).expect("keys.txt names known kinds"),
                }
            })
            .collect()
    })
}

/// One step into the dynamic configuration.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// An object key, as Traefik spells it.
    Key(String),
    /// An item of a list.
    Index(usize),
}

/// What a label says.
#[derive(Debug, Clone, PartialEq)]
pub enum Label {
    /// `traefik.enable=true|false`.
    Enable(bool),
    /// A setting of one router, service, middleware or TLS options.
    Setting {
        /// Where it goes.
        section: Section,
        /// The router's (service's, ...) name, as written.
        name: String,
        /// The path under it, as Traefik spells it.
        path: Vec<Step>,
        /// The value, typed; `None` for `tls=false`, which sets nothing.
        value: Option<Value>,
    },
    /// A label that means nothing to a file provider (`traefik.docker.network`): why.
    Ignored(String),
}

/// A label Phoenix cannot read: what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelError {
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub help: String,
}

impl LabelError {
    fn new(message: impl Into<String>, help: impl Into<String>) -> LabelError {
        LabelError {
            message: message.into(),
            help: help.into(),
        }
    }
}

/// Reads one label.
pub fn parse(label: &str) -> Result<Label, LabelError> {
    let Some((key, value)) = label.split_once('=') else {
        return Err(LabelError::new(
            format!("`{label}` has no value"),
            "a label is `key=value`, as in `traefik.http.routers.app.rule=Host(`app.example.org`)`",
        ));
    };
    let parts: Vec<&str> = key.split('.').collect();
    let lower: Vec<String> = parts.iter().map(|part| part.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    let (section, name, rest) = match lower.as_slice() {
        ["traefik", "enable"] => {
            return match value.to_ascii_lowercase().as_str() {
                "true" => Ok(Label::Enable(true)),
                "false" => Ok(Label::Enable(false)),
                _ => Err(LabelError::new(
                    format!("`{key}` is `{value}`"),
                    "write `traefik.enable=true` or `traefik.enable=false`",
                )),
            };
        }
        ["traefik", "docker" | "swarm", ..] => {
            return Ok(Label::Ignored(format!(
                "`{key}` is a setting of Traefik's Docker provider; Phoenix writes a file provider's \
                 configuration, where it means nothing"
            )));
        }
        ["traefik", "tcp" | "udp", ..] => {
            return Err(LabelError::new(
                format!("`{key}`: Phoenix does not generate TCP or UDP routing yet"),
                "route this service over HTTP, or configure TCP and UDP routers in a file of your own in \
                 Traefik's dynamic directory",
            ));
        }
        ["traefik", "http", "routers", _, _, ..] => (Section::Router, parts[3], &parts[4..]),
        ["traefik", "http", "services", _, _, ..] => (Section::Service, parts[3], &parts[4..]),
        ["traefik", "http", "middlewares", _, _, ..] => (Section::Middleware, parts[3], &parts[4..]),
        ["traefik", "tls", "options", _, _, ..] => (Section::TlsOptions, parts[3], &parts[4..]),
        _ => {
            return Err(LabelError::new(
                format!("`{key}` is not a Traefik label Phoenix knows"),
                "labels start `traefik.http.routers.<name>.`, `traefik.http.services.<name>.`, \
                 `traefik.http.middlewares.<name>.` or `traefik.tls.options.<name>.`, or are `traefik.enable`",
            ));
        }
    };
    if !valid_name(name) {
        return Err(LabelError::new(
            format!("`{name}` in `{key}` is not a valid {} name", section.word()),
            "names are letters, digits, `-` and `_`",
        ));
    }
    let Some((key_found, path)) = keys()
        .iter()
        .filter(|candidate| candidate.section == section)
        .find_map(|candidate| matches(candidate, rest).map(|path| (candidate, path)))
    else {
        let written = rest.join(".");
        let lower = written.to_ascii_lowercase();
        let spellings: Vec<String> = keys()
            .iter()
            .filter(|candidate| candidate.section == section)
            .map(Key::spelling)
            .collect();
        let help = match did_you_mean(&lower, spellings.iter().map(String::as_str)) {
            Some(suggestion) => format!("did you mean `{}.{name}.{suggestion}`?", section.label_prefix()),
            None => format!(
                "see Traefik's reference for {}s; Phoenix knows the settings of its file provider",
                section.word()
            ),
        };
        return Err(LabelError::new(
            format!(
                "`{written}` is not a {} setting Traefik knows (in `{key}`)",
                section.word()
            ),
            help,
        ));
    };
    let value = typed(key_found.kind, value).map_err(|expected| {
        LabelError::new(
            format!("`{key}` is `{value}`, but it takes {expected}"),
            "fix the value after `=`",
        )
    })?;
    Ok(Label::Setting {
        section,
        name: name.to_owned(),
        path,
        value,
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|char| char.is_ascii_alphanumeric() || char == '-' || char == '_')
}

/// The path of `written` (label segments) if it is `key`'s.
fn matches(key: &Key, written: &[&str]) -> Option<Vec<Step>> {
    if key.segments.len() != written.len() {
        return None;
    }
    let mut path = Vec::new();
    for (segment, part) in key.segments.iter().zip(written) {
        let (name, index) = match part.strip_suffix(']').and_then(|part| part.split_once('[')) {
            Some((name, index)) => (name, Some(index.parse::<usize>().ok()?)),
            None => (*part, None),
        };
        match (segment, index) {
            (Segment::Field(field), None) if field.eq_ignore_ascii_case(name) => {
                path.push(Step::Key(field.clone()));
            }
            (Segment::Items(field), Some(index)) if field.eq_ignore_ascii_case(name) => {
                path.push(Step::Key(field.clone()));
                path.push(Step::Index(index));
            }
            (Segment::Any, None) if !name.is_empty() => path.push(Step::Key(name.to_owned())),
            _ => return None,
        }
    }
    Some(path)
}

/// The value of a label as JSON of `kind`, or what was expected.
fn typed(kind: Kind, value: &str) -> Result<Option<Value>, &'static str> {
    Ok(Some(match kind {
        Kind::String | Kind::Map => Value::String(value.to_owned()),
        Kind::Integer => Value::from(value.trim().parse::<i64>().map_err(|_| "a whole number")?),
        Kind::Number => {
            let number: f64 = value.trim().parse().map_err(|_| "a number")?;
            serde_json::Number::from_f64(number)
                .map(Value::Number)
                .ok_or("a finite number")?
        }
        Kind::Boolean => Value::Bool(boolean(value).ok_or("`true` or `false`")?),
        Kind::List => Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| Value::String(item.to_owned()))
                .collect(),
        ),
        Kind::Object => match boolean(value).ok_or("`true` or `false`")? {
            true => Value::Object(serde_json::Map::new()),
            false => return Ok(None),
        },
    }))
}

fn boolean(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn setting(label: &str) -> (Section, String, Vec<Step>, Option<Value>) {
        match parse(label).expect("reads") {
            Label::Setting {
                section,
                name,
                path,
                value,
            } => (section, name, path, value),
            other => panic!("not a setting: {other:?}"),
        }
    }

    fn keys_of(path: &[&str]) -> Vec<Step> {
        path.iter().map(|key| Step::Key((*key).to_owned())).collect()
    }

    #[test]
    fn keys_are_matched_without_case_and_spelled_as_traefik_does() {
        let (section, name, path, value) =
            setting("traefik.http.routers.Qdrant.tls.certresolver=internal-resolver");
        assert_eq!(section, Section::Router);
        assert_eq!(name, "Qdrant");
        assert_eq!(path, keys_of(&["tls", "certResolver"]));
        assert_eq!(value, Some(json!("internal-resolver")));
    }

    #[test]
    fn values_take_the_type_of_their_setting() {
        assert_eq!(
            setting("traefik.http.routers.a.entrypoints=web, websecure").3,
            Some(json!(["web", "websecure"]))
        );
        assert_eq!(setting("traefik.http.routers.a.priority=10").3, Some(json!(10)));
        assert_eq!(
            setting("traefik.http.services.a.loadbalancer.passhostheader=False").3,
            Some(json!(false))
        );
        assert_eq!(setting("traefik.http.routers.a.tls=true").3, Some(json!({})));
        assert_eq!(setting("traefik.http.routers.a.tls=false").3, None);
        let error = parse("traefik.http.routers.a.priority=high").expect_err("not a number");
        assert!(error.message.contains("a whole number"), "{error:?}");
    }

    #[test]
    fn indexed_lists_and_free_keys() {
        let (_, _, path, _) = setting("traefik.http.routers.a.tls.domains[1].main=example.org");
        assert_eq!(
            path,
            [
                Step::Key("tls".into()),
                Step::Key("domains".into()),
                Step::Index(1),
                Step::Key("main".into())
            ]
        );
        let (section, _, path, value) =
            setting("traefik.http.middlewares.h.headers.customrequestheaders.X-Forwarded-Proto=https");
        assert_eq!(section, Section::Middleware);
        assert_eq!(
            path,
            keys_of(&["headers", "customRequestHeaders", "X-Forwarded-Proto"])
        );
        assert_eq!(value, Some(json!("https")));
    }

    #[test]
    fn unknown_settings_are_refused_with_a_suggestion() {
        let error = parse("traefik.http.routers.a.entrypoint=web").expect_err("unknown");
        assert!(
            error.message.contains("`entrypoint` is not a router setting"),
            "{error:?}"
        );
        assert_eq!(error.help, "did you mean `traefik.http.routers.a.entrypoints`?");
        assert!(parse("traefik.http.routers.a=web").is_err());
        assert!(parse("traefik.tcp.routers.a.rule=HostSNI(`*`)").is_err());
        assert!(parse("traefik.http.routers.a b.rule=Host(`x`)").is_err());
        assert!(matches!(
            parse("traefik.docker.network=proxy"),
            Ok(Label::Ignored(_))
        ));
        assert_eq!(parse("traefik.enable=true"), Ok(Label::Enable(true)));
    }
}
