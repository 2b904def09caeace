//! Traefik's dynamic configuration, as the estate declares it: guests' `traefik_service` routes and the
//! Traefik labels of the stacks the VMs run, turned into one file-provider configuration.
//!
//! [`declared`] builds it (and the problems [`crate::validate`] reports); [`DynamicConfig::to_yaml`]
//! writes `dynamic_conf.yml`, and [`observed`] reads a live one back as one field per router, service,
//! middleware and TLS options, which [`crate::engine::change::diff_owned`] compares: a plan names what
//! changes, and a file that says the same in other words is not rewritten.

pub mod labels;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::config::FileKind;
use crate::engine::change::Observed;
use crate::lint::diagnostic::Problem;
use crate::lint::schema::escape_pointer_token;
use crate::model::{Estate, Guest, GuestSpec};
use labels::{Label, Section, Step};

/// The directory Traefik's file provider watches in the proxy container (the `traefik` feature's).
pub const DYNAMIC_DIRECTORY: &str = "/etc/traefik/dynamic";

/// The file Phoenix writes there.
pub const DYNAMIC_FILE: &str = "dynamic_conf.yml";

/// The feature that makes a container the estate's Traefik.
pub const PROXY_FEATURE: &str = "traefik";

/// The environment of a stack that VMs deploy.
pub const DEFAULT_ENVIRONMENT: &str = "production";

/// The first line of the file Phoenix writes.
const HEADER: &str = "# Written by Phoenix from the estate's configuration: edits here are overwritten.\n";

/// The field of a live file that is not YAML Phoenix can read, or holds what Phoenix does not write.
const UNREADABLE: &str = "file";
const OTHER: &str = "other";

/// A file-provider dynamic configuration: routers, services, middlewares and TLS options by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DynamicConfig {
    entries: BTreeMap<(Section, String), Value>,
}

impl DynamicConfig {
    /// Whether it routes nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The definition of one router, service, middleware or TLS options.
    pub fn get(&self, section: Section, name: &str) -> Option<&Value> {
        self.entries.get(&(section, name.to_owned()))
    }

    /// The names in one section, sorted.
    pub fn names(&self, section: Section) -> impl Iterator<Item = &str> {
        self.entries
            .keys()
            .filter(move |(entry, _)| *entry == section)
            .map(|(_, name)| name.as_str())
    }

    /// One field per definition, as plans show them: `router/qdrant`, `service/qdrant`, ...
    pub fn fields(&self) -> BTreeMap<String, Value> {
        self.entries
            .iter()
            .map(|((section, name), value)| (format!("{}/{name}", section.word()), value.clone()))
            .collect()
    }

    /// The configuration as Traefik reads it: `http.routers`, `http.services`, `http.middlewares`,
    /// `tls.options`, empty parts left out.
    pub fn document(&self) -> Value {
        let mut http = Map::new();
        let mut tls = Map::new();
        for ((section, name), value) in &self.entries {
            let (parent, key) = match section {
                Section::Router => (&mut http, "routers"),
                Section::Service => (&mut http, "services"),
                Section::Middleware => (&mut http, "middlewares"),
                Section::TlsOptions => (&mut tls, "options"),
            };
            let part = parent.entry(key).or_insert_with(|| Value::Object(Map::new()));
            part.as_object_mut()
                .expect("sections are objects")
                .insert(name.clone(), value.clone());
        }
        let mut document = Map::new();
        if !http.is_empty() {
            document.insert("http".to_owned(), Value::Object(http));
        }
        if !tls.is_empty() {
            document.insert("tls".to_owned(), Value::Object(tls));
        }
        Value::Object(document)
    }

    /// `dynamic_conf.yml`: the document as YAML, after a header line, with Go-template text escaped (Traefik
    /// runs every file of its file provider through Go templates before reading it).
    pub fn to_yaml(&self) -> String {
        let document = map_strings(self.document(), &escape_template);
        let yaml = if self.is_empty() {
            "{}\n".to_owned()
        } else {
            serde_saphyr::to_string(&document).expect("JSON values serialise to YAML")
        };
        format!("{HEADER}{yaml}")
    }

    /// Reads a live `dynamic_conf.yml` back: the inverse of [`DynamicConfig::to_yaml`] for what Phoenix
    /// wrote. What is not routers, services, middlewares or TLS options is returned apart, as the text of
    /// its JSON, so that a diff shows it as something to remove.
    pub fn from_yaml(text: &str) -> Result<(DynamicConfig, Option<Value>), String> {
        let document: Value = if text.lines().all(|line| {
            let line = line.trim();
            line.is_empty() || line.starts_with('#')
        }) {
            Value::Object(Map::new())
        } else {
            serde_saphyr::from_str(text).map_err(|error| error.to_string())?
        };
        let document = match map_strings(document, &unescape_template) {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            other => return Err(format!("the file holds {other}, not a mapping")),
        };
        let mut config = DynamicConfig::default();
        let mut other = document;
        for (parent, key, section) in [
            ("http", "routers", Section::Router),
            ("http", "services", Section::Service),
            ("http", "middlewares", Section::Middleware),
            ("tls", "options", Section::TlsOptions),
        ] {
            let Some(Value::Object(part)) = other.get_mut(parent) else {
                continue;
            };
            let Some(Value::Object(named)) = part.remove(key) else {
                continue;
            };
            for (name, value) in named {
                config.entries.insert((section, name), value);
            }
            if part.is_empty() {
                other.remove(parent);
            }
        }
        let other = (!other.is_empty()).then_some(Value::Object(other));
        Ok((config, other))
    }

    #[cfg(test)]
    fn insert(&mut self, section: Section, name: &str, value: Value) {
        self.entries.insert((section, name.to_owned()), value);
    }
}

/// The live state of a dynamic configuration file as a sync step observes it: its definitions as fields,
/// plus `other` for what Phoenix does not write, or `file` when it cannot be read.
pub fn observed(text: &str) -> Observed {
    let mut fields = BTreeMap::new();
    match DynamicConfig::from_yaml(text) {
        Ok((config, other)) => {
            fields = config.fields();
            if let Some(other) = other {
                fields.insert(OTHER.to_owned(), other);
            }
        }
        Err(error) => {
            fields.insert(
                UNREADABLE.to_owned(),
                Value::String(format!("not a dynamic configuration: {error}")),
            );
        }
    }
    Observed::new(fields)
}

/// `{{` as a Go template action that prints it.
fn escape_template(text: &str) -> String {
    text.replace("{{", "{{`{{`}}")
}

fn unescape_template(text: &str) -> String {
    text.replace("{{`{{`}}", "{{")
}

fn map_strings(value: Value, map: &dyn Fn(&str) -> String) -> Value {
    match value {
        Value::String(text) => Value::String(map(&text)),
        Value::Array(items) => Value::Array(items.into_iter().map(|item| map_strings(item, map)).collect()),
        Value::Object(entries) => Value::Object(
            entries
                .into_iter()
                .map(|(key, value)| (map(&key), map_strings(value, map)))
                .collect(),
        ),
        other => other,
    }
}

/// The estate's Traefik: the container that runs it, and what it routes.
#[derive(Debug, Clone, PartialEq)]
pub struct Declared {
    /// The container with the `traefik` feature, if one is declared.
    pub proxy: Option<u32>,
    /// The dynamic configuration.
    pub config: DynamicConfig,
    /// The guests whose routes it holds: guests with a `traefik_service` and VMs whose stacks have labels.
    pub routed: Vec<u32>,
}

/// Who declared a definition, for problems.
#[derive(Debug, Clone)]
struct Origin {
    file: FileKind,
    pointer: String,
    /// `container 103's traefik_service`, `stack qdrant on VM 1002`.
    what: String,
    guest: u32,
    from_stack: bool,
}

/// The dynamic configuration the estate declares, and the problems in doing so. Problems are errors
/// (a label Phoenix cannot read, two definitions of one name, a reference to nothing) and warnings (a
/// guest's route replaced by a stack's labels, routes and no proxy).
pub fn declared(estate: &Estate) -> (Declared, Vec<Problem>) {
    let Declarations {
        definitions,
        proxy,
        routed,
        problems,
    } = declare(estate);
    let config = DynamicConfig {
        entries: definitions
            .into_iter()
            .map(|(key, definition)| (key, definition.into_value()))
            .collect(),
    };
    (
        Declared {
            proxy,
            config,
            routed,
        },
        problems,
    )
}

/// The problems of [`declared`], without making the configuration it declares.
pub fn problems(estate: &Estate) -> Vec<Problem> {
    declare(estate).problems
}

/// Definitions, or their origins, by section and name.
type ByName<T> = BTreeMap<(Section, String), T>;

/// What [`declare`] finds: [`Declared`] before its definitions are made JSON, and the problems.
struct Declarations {
    definitions: ByName<Definition>,
    proxy: Option<u32>,
    routed: Vec<u32>,
    problems: Vec<Problem>,
}

fn declare(estate: &Estate) -> Declarations {
    let mut problems = Vec::new();
    let files = estate.files();
    let domain = files.hypervisor.domain_name.as_deref();
    let mut declarations: Vec<(Section, String, Definition, Origin)> = Vec::new();
    let mut proxies = Vec::new();
    let mut routed = Vec::new();

    for guest in estate.guests().values() {
        let service = match &guest.spec {
            GuestSpec::Container(container) => container.traefik_service.as_ref(),
            GuestSpec::Vm(vm) => vm.traefik_service.as_ref(),
        };
        if runs_traefik(guest) {
            proxies.push(guest);
        }
        let address = guest.static_address();
        if let Some(service) = service {
            let pointer = guest.pointer_to("traefik_service");
            let Some(address) = address else {
                problems.push(no_address(guest.file, &pointer, &guest.describe()));
                continue;
            };
            let scheme = service.scheme.map_or("http", |scheme| match scheme {
                crate::config::common::Scheme::Http => "http",
                crate::config::common::Scheme::Https => "https",
            });
            let origin = Origin {
                file: guest.file,
                pointer: guest.pointer_to("traefik_service/name"),
                what: format!("{}'s traefik_service", guest.describe()),
                guest: guest.id,
                from_stack: false,
            };
            declarations.push((
                Section::Router,
                service.name.clone(),
                Definition::Router {
                    rule: host_rule(&service.name, domain),
                    service: service.name.clone(),
                },
                origin.clone(),
            ));
            declarations.push((
                Section::Service,
                service.name.clone(),
                Definition::Server {
                    url: format!("{scheme}://{address}:{}", service.port),
                },
                origin,
            ));
            routed.push(guest.id);
        }
        let GuestSpec::Vm(vm) = &guest.spec else { continue };
        for (index, chosen) in vm.docker_stacks.iter().enumerate() {
            let name = chosen.name();
            let Some(stack) = files.stacks.docker_stacks.get(name) else {
                continue;
            };
            let Some(environment) = stack.environments.get(chosen.environment()) else {
                continue;
            };
            let mut any = false;
            for (service_name, service) in &environment.services {
                let pointer = format!(
                    "/docker_stacks/{}/environments/{}/services/{}/traefik_labels",
                    escape_pointer_token(name),
                    escape_pointer_token(chosen.environment()),
                    escape_pointer_token(service_name)
                );
                let origin = Origin {
                    file: FileKind::Stacks,
                    pointer: pointer.clone(),
                    what: format!("stack {name} on {}", guest.describe()),
                    guest: guest.id,
                    from_stack: true,
                };
                let Some(entries) = stack_service(&service.traefik_labels, &origin, &mut problems) else {
                    continue;
                };
                if entries.is_empty() {
                    continue;
                }
                let Some(address) = address else {
                    problems.push(no_address(
                        guest.file,
                        &guest.pointer_to(&format!("docker_stacks/{index}")),
                        &guest.describe(),
                    ));
                    break;
                };
                any = true;
                for (section, entry_name, value) in
                    finish_service(entries, address, domain, &origin, &mut problems)
                {
                    declarations.push((section, entry_name, Definition::Value(value), origin.clone()));
                }
            }
            if any && !routed.contains(&guest.id) {
                routed.push(guest.id);
            }
        }
    }

    let (definitions, origins) = merge(declarations, &mut problems);
    check_references(&definitions, &origins, &mut problems);

    let proxy = match proxies.as_slice() {
        [] => {
            if let Some((_, first)) = definitions
                .keys()
                .find(|(section, _)| *section == Section::Router)
            {
                problems.push(
                    Problem::warning(
                        "phoenix::traefik::no_proxy",
                        FileKind::Lxc,
                        "/lxc_configs",
                        format!(
                            "routes are declared (router `{first}`, ...) but no container has the `{PROXY_FEATURE}` \
                             feature, so nothing serves them"
                        ),
                    )
                    .with_help(format!(
                        "add the `{PROXY_FEATURE}` feature to the container that runs Traefik: Phoenix writes the \
                         routes to {DYNAMIC_DIRECTORY}/{DYNAMIC_FILE} there"
                    )),
                );
            }
            None
        }
        [proxy] => Some(proxy.id),
        [first, rest @ ..] => {
            for other in rest {
                problems.push(
                    Problem::error(
                        "phoenix::traefik::several_proxies",
                        other.file,
                        other.pointer_to("features"),
                        format!(
                            "{} and {} both have the `{PROXY_FEATURE}` feature",
                            first.describe(),
                            other.describe()
                        ),
                    )
                    .with_label("a second Traefik")
                    .with_help(
                        "Phoenix writes the estate's routes to one Traefik container: keep the feature on one",
                    ),
                );
            }
            Some(first.id)
        }
    };
    routed.sort_unstable();
    Declarations {
        definitions,
        proxy,
        routed,
        problems,
    }
}

/// One definition as declared. A guest's `traefik_service` makes a router and a service of one shape
/// each, kept as their parts: the checks of an estate of ten thousand routes compare and resolve them
/// without making a JSON object for each, and [`declared`] makes the objects of the file it writes.
#[derive(Debug, Clone, PartialEq)]
enum Definition {
    /// From a stack's labels.
    Value(Value),
    /// `{"rule": rule, "service": service}`.
    Router { rule: String, service: String },
    /// `{"loadBalancer": {"servers": [{"url": url}]}}`.
    Server { url: String },
}

impl Definition {
    fn into_value(self) -> Value {
        match self {
            Definition::Value(value) => value,
            Definition::Router { rule, service } => serde_json::json!({ "rule": rule, "service": service }),
            Definition::Server { url } => {
                serde_json::json!({ "loadBalancer": { "servers": [{ "url": url }] } })
            }
        }
    }

    /// The other definitions a router names: its service, middlewares and TLS options.
    fn references(&self) -> Vec<(Section, &str)> {
        let router = match self {
            Definition::Router { service, .. } => return vec![(Section::Service, service.as_str())],
            Definition::Server { .. } => return Vec::new(),
            Definition::Value(router) => router,
        };
        let mut wanted: Vec<(Section, &str)> = Vec::new();
        if let Some(service) = router.get("service").and_then(Value::as_str) {
            wanted.push((Section::Service, service));
        }
        for middleware in router
            .get("middlewares")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(middleware) = middleware.as_str() {
                wanted.push((Section::Middleware, middleware));
            }
        }
        if let Some(options) = router.pointer("/tls/options").and_then(Value::as_str) {
            wanted.push((Section::TlsOptions, options));
        }
        wanted
    }
}

/// The container that runs the estate's Traefik, as [`declared`] finds it, without building the routes:
/// the first with the [`PROXY_FEATURE`] (a second one is an error of `declared`).
pub fn proxy(estate: &Estate) -> Option<u32> {
    estate
        .guests()
        .values()
        .find(|guest| runs_traefik(guest))
        .map(|guest| guest.id)
}

fn runs_traefik(guest: &Guest) -> bool {
    matches!(&guest.spec, GuestSpec::Container(container)
        if container.features.iter().any(|feature| feature == PROXY_FEATURE))
}

fn host_rule(name: &str, domain: Option<&str>) -> String {
    match domain {
        Some(domain) => format!("Host(`{name}.{domain}`)"),
        None => format!("Host(`{name}`)"),
    }
}

fn no_address(file: FileKind, pointer: &str, guest: &str) -> Problem {
    Problem::error(
        "phoenix::traefik::no_address",
        file,
        pointer,
        format!("{guest} is routed through Traefik but has no static address"),
    )
    .with_help(
        "give the guest a static `network_config.ip`: Traefik's routes name the address they forward to",
    )
}

/// The definitions one compose service's labels make, before defaults; `None` when they turn it off
/// (`traefik.enable=false`) or cannot be read.
fn stack_service(
    labels: &[String],
    origin: &Origin,
    problems: &mut Vec<Problem>,
) -> Option<BTreeMap<(Section, String), Value>> {
    let mut entries: BTreeMap<(Section, String), Value> = BTreeMap::new();
    let mut enabled = true;
    let mut readable = true;
    for (index, label) in labels.iter().enumerate() {
        let pointer = format!("{}/{index}", origin.pointer);
        match labels::parse(label) {
            Ok(Label::Enable(enable)) => enabled = enable,
            Ok(Label::Ignored(reason)) => problems.push(
                Problem::warning(
                    "phoenix::traefik::ignored_label",
                    FileKind::Stacks,
                    pointer,
                    reason,
                )
                .with_help("remove the label; it changes nothing"),
            ),
            Ok(Label::Setting {
                section,
                name,
                path,
                value,
            }) => {
                let Some(value) = value else { continue };
                let entry = entries
                    .entry((section, name))
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Err(earlier) = set(entry, &path, value) {
                    readable = false;
                    problems.push(
                        Problem::error(
                            "phoenix::traefik::label_conflict",
                            FileKind::Stacks,
                            pointer,
                            format!("`{label}` sets again what an earlier label set to {earlier}"),
                        )
                        .with_help("keep one label per setting"),
                    );
                }
            }
            Err(error) => {
                readable = false;
                problems.push(
                    Problem::error(
                        "phoenix::traefik::label",
                        FileKind::Stacks,
                        pointer,
                        error.message,
                    )
                    .with_label("not a label Phoenix can read")
                    .with_help(error.help),
                );
            }
        }
    }
    (enabled && readable).then_some(entries)
}

/// Sets `value` at `path` under `entry`; `Err` with the value found when a different one is there.
fn set(entry: &mut Value, path: &[Step], value: Value) -> Result<(), Value> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut node = entry;
    for step in parents {
        node = match step {
            Step::Key(key) => node
                .as_object_mut()
                .ok_or_else(|| Value::String("a value".into()))?
                .entry(key.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            Step::Index(index) => {
                if !node.is_array() {
                    *node = Value::Array(Vec::new());
                }
                let items = node.as_array_mut().expect("made an array");
                while items.len() <= *index {
                    items.push(Value::Object(Map::new()));
                }
                &mut items[*index]
            }
        };
    }
    let Step::Key(key) = last else {
        unreachable!("keys.txt paths end in a field name");
    };
    let object = node
        .as_object_mut()
        .ok_or_else(|| Value::String("a value".into()))?;
    match object.get(key) {
        None => {
            object.insert(key.clone(), value);
            Ok(())
        }
        Some(Value::Object(found)) if value.as_object().is_some_and(Map::is_empty) && !found.is_empty() => {
            Ok(())
        }
        Some(Value::Object(found)) if found.is_empty() && value.is_object() => {
            object.insert(key.clone(), value);
            Ok(())
        }
        Some(found) if *found == value => Ok(()),
        Some(found) => Err(found.clone()),
    }
}

/// One compose service's definitions with the Docker provider's conventions made explicit: a service's
/// `server.port` becomes a server URL on the VM's address; a router without a service takes the one
/// service its labels define; a router without a rule answers `<router>.<domain>`.
fn finish_service(
    mut entries: BTreeMap<(Section, String), Value>,
    address: &str,
    domain: Option<&str>,
    origin: &Origin,
    problems: &mut Vec<Problem>,
) -> Vec<(Section, String, Value)> {
    let services: Vec<String> = entries
        .keys()
        .filter(|(section, _)| *section == Section::Service)
        .map(|(_, name)| name.clone())
        .collect();
    for ((section, name), value) in &mut entries {
        match section {
            Section::Service => {
                let Some(balancer) = value.get_mut("loadBalancer").and_then(Value::as_object_mut) else {
                    continue;
                };
                let server = match balancer.remove("server") {
                    Some(Value::Object(server)) => server,
                    _ if balancer.contains_key("servers") => continue,
                    _ => Map::new(),
                };
                let url = match (server.get("url"), server.get("port")) {
                    (Some(Value::String(url)), _) => url.clone(),
                    (None, Some(port)) => {
                        let scheme = server.get("scheme").and_then(Value::as_str).unwrap_or("http");
                        format!("{scheme}://{address}:{port}")
                    }
                    _ => {
                        problems.push(
                            Problem::error(
                                "phoenix::traefik::no_port",
                                FileKind::Stacks,
                                origin.pointer.clone(),
                                format!("service `{name}` of {} has no port", origin.what),
                            )
                            .with_help(format!(
                                "add `traefik.http.services.{name}.loadbalancer.server.port=<port>`: the port the \
                                 stack publishes on the VM"
                            )),
                        );
                        continue;
                    }
                };
                let servers = balancer
                    .entry("servers")
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Some(servers) = servers.as_array_mut() {
                    servers.push(serde_json::json!({ "url": url }));
                }
            }
            Section::Router => {
                let router = value.as_object_mut().expect("definitions are objects");
                if !router.contains_key("rule") {
                    router.insert("rule".to_owned(), Value::String(host_rule(name, domain)));
                }
                if !router.contains_key("service") {
                    match services.as_slice() {
                        [only] => {
                            router.insert("service".to_owned(), Value::String(only.clone()));
                        }
                        _ => problems.push(
                            Problem::error(
                                "phoenix::traefik::router_without_service",
                                FileKind::Stacks,
                                origin.pointer.clone(),
                                format!(
                                    "router `{name}` of {} names no service, and its labels define {}",
                                    origin.what,
                                    if services.is_empty() { "none" } else { "several" }
                                ),
                            )
                            .with_help(format!(
                                "add `traefik.http.routers.{name}.service=<service>`, or a service with \
                                 `traefik.http.services.<service>.loadbalancer.server.port=<port>`"
                            )),
                        ),
                    }
                }
            }
            Section::Middleware | Section::TlsOptions => {}
        }
    }
    entries
        .into_iter()
        .map(|((section, name), value)| (section, name, value))
        .collect()
}

/// One definition per name. A stack's labels replace the route its own VM's `traefik_service` declares
/// under that name (a warning says so); replicas of one stack on several VMs share routers and gather
/// their servers into one service; any other second definition is an error.
fn merge(
    declarations: Vec<(Section, String, Definition, Origin)>,
    problems: &mut Vec<Problem>,
) -> (ByName<Definition>, ByName<Origin>) {
    let mut grouped: ByName<Vec<(Definition, Origin)>> = BTreeMap::new();
    for (section, name, definition, origin) in declarations {
        grouped
            .entry((section, name))
            .or_default()
            .push((definition, origin));
    }
    let mut definitions = BTreeMap::new();
    let mut origins = BTreeMap::new();
    let mut replaced: Vec<(u32, String)> = Vec::new();
    for ((section, name), mut group) in grouped {
        let stacks_on: Vec<u32> = group
            .iter()
            .filter(|(_, origin)| origin.from_stack)
            .map(|(_, origin)| origin.guest)
            .collect();
        group.retain(|(_, origin)| {
            let shadowed = !origin.from_stack && stacks_on.contains(&origin.guest);
            if shadowed && !replaced.contains(&(origin.guest, name.clone())) {
                replaced.push((origin.guest, name.clone()));
                problems.push(
                    Problem::warning(
                        "phoenix::traefik::route_replaced",
                        origin.file,
                        origin.pointer.clone(),
                        format!(
                            "the route `{name}` of {} is replaced by the Traefik labels of a stack on the same guest",
                            origin.what
                        ),
                    )
                    .with_help("remove the `traefik_service`, or give it another name, so one declaration says how to reach it"),
                );
            }
            !shadowed
        });
        // Several definitions of one name are compared as the objects they make.
        if group.len() > 1 {
            group = group
                .into_iter()
                .map(|(definition, origin)| (Definition::Value(definition.into_value()), origin))
                .collect();
        }
        let mut group = group.into_iter();
        let Some((mut merged, first)) = group.next() else {
            continue;
        };
        for (definition, origin) in group {
            if definition == merged {
                continue;
            }
            if section == Section::Service
                && let (Definition::Value(left), Definition::Value(right)) = (&merged, &definition)
                && let Some(joined) = join_servers(left, right)
            {
                merged = Definition::Value(joined);
                continue;
            }
            if !first.from_stack && !origin.from_stack {
                // Two guests' `traefik_service` of one name: `phoenix::traefik::duplicate_service` says so.
                continue;
            }
            problems.push(
                Problem::error(
                    "phoenix::traefik::duplicate_name",
                    origin.file,
                    origin.pointer.clone(),
                    format!(
                        "{} `{name}` is declared by {} and, differently, by {}",
                        section.word(),
                        first.what,
                        origin.what
                    ),
                )
                .with_label(format!("a second {} `{name}`", section.word()))
                .with_help(format!(
                    "Traefik keeps one {} per name and ignores the others: rename one of them",
                    section.word()
                )),
            );
        }
        definitions.insert((section, name.clone()), merged);
        origins.insert((section, name), first);
    }
    (definitions, origins)
}

/// Two load balancers that differ only in their servers, as one with the servers of both.
fn join_servers(left: &Value, right: &Value) -> Option<Value> {
    let servers = |value: &Value| {
        value
            .pointer("/loadBalancer/servers")
            .and_then(Value::as_array)
            .cloned()
    };
    let without = |value: &Value| {
        let mut value = value.clone();
        value.get_mut("loadBalancer")?.as_object_mut()?.remove("servers");
        Some(value)
    };
    if without(left)? != without(right)? {
        return None;
    }
    let mut all = servers(left)?;
    for server in servers(right)? {
        if !all.contains(&server) {
            all.push(server);
        }
    }
    let mut joined = left.clone();
    joined["loadBalancer"]["servers"] = Value::Array(all);
    Some(joined)
}

/// Routers name services, middlewares and TLS options that exist (or another provider's: `name@provider`).
fn check_references(definitions: &ByName<Definition>, origins: &ByName<Origin>, problems: &mut Vec<Problem>) {
    let routers = definitions
        .iter()
        .filter(|((section, _), _)| *section == Section::Router);
    for (key, router) in routers {
        let name = &key.1;
        let origin = &origins[key];
        for (section, target) in router.references() {
            if target.contains('@') || definitions.contains_key(&(section, target.to_owned())) {
                continue;
            }
            problems.push(
                Problem::error(
                    "phoenix::traefik::unknown_reference",
                    origin.file,
                    origin.pointer.clone(),
                    format!(
                        "router `{name}` of {} uses {} `{target}`, which nothing declares",
                        origin.what,
                        section.word()
                    ),
                )
                .with_help(format!(
                    "declare it with `{}.{target}.` labels, or name another provider's with `{target}@<provider>`",
                    section.label_prefix()
                )),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::engine::address::Address;
    use crate::engine::change::diff_owned;

    #[test]
    fn template_text_is_escaped_and_read_back() {
        let mut config = DynamicConfig::default();
        config.insert(
            Section::Middleware,
            "h",
            json!({ "headers": { "customResponseHeaders": { "X-Template": "{{ .Name }} {{{" } } }),
        );
        let yaml = config.to_yaml();
        assert!(!yaml.replace("{{`{{`}}", "").contains("{{"), "{yaml}");
        let (back, other) = DynamicConfig::from_yaml(&yaml).expect("reads");
        assert_eq!(back, config);
        assert_eq!(other, None);
    }

    #[test]
    fn what_phoenix_does_not_write_is_a_change_to_remove() {
        let mut config = DynamicConfig::default();
        config.insert(
            Section::Router,
            "a",
            json!({ "rule": "Host(`a`)", "service": "a" }),
        );
        let desired = config.fields();
        let live = observed(
            "http:\n  routers:\n    a:\n      service: a\n      rule: Host(`a`)\ntcp:\n  routers: {}\n",
        );
        let found = diff_owned(&Address::Sync("traefik".into()), desired.clone(), Some(&live));
        assert_eq!(found.len(), 1);
        let fields: Vec<(&str, bool)> = found[0]
            .fields
            .iter()
            .map(|field| (field.field.as_str(), field.new.is_some()))
            .collect();
        assert_eq!(fields, [("other", false)]);
        let same = observed(&config.to_yaml());
        assert!(diff_owned(&Address::Sync("traefik".into()), desired, Some(&same)).is_empty());
        assert!(observed("http: [").fields.contains_key("file"));
        assert_eq!(observed(&DynamicConfig::default().to_yaml()), Observed::default());
    }
}
