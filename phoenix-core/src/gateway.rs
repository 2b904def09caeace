//! The nginx gateway's site (`sync/gateway`): a Tera template of the configuration directory rendered
//! from the model. The template sees:
//!
//! - `server_names`: the `public_names`, space-separated, for `server_name`; `public_names`, the list;
//! - `map_block`: `map $host $upstream_service { ... }`, each route's host to its upstream and the
//!   default upstream (the earlier version's `##MAP_BLOCK##` placeholder is replaced by it too);
//! - `routes` (`host`, `upstream`), `default_upstream`;
//! - `certificate`, `certificate_key`, `http_port`, `https_port`, `resolver`, `domain_name`;
//! - `traefik` (`address`, `port`) when a container has the `traefik` feature and a static address;
//! - `guests`: by ID, each guest's `name` and static `address`.
//!
//! A variable the template uses that is not there is an error naming its line.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::config::hypervisor::Gateway;
use crate::model::Estate;

/// Where the configuration directory's snippets are (`nginx/snippets/*`), copied beside the site.
pub const SNIPPETS_DIR: &str = "nginx/snippets";
/// Where snippets go in the gateway container.
pub const SNIPPETS_TARGET: &str = "/etc/nginx/snippets";
/// The earlier version's placeholder for the map block.
pub const MAP_PLACEHOLDER: &str = "##MAP_BLOCK##";

/// Why a template does not render: what, and the template's line when it can be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// The 1-based line of the template.
    pub line: Option<usize>,
    /// What went wrong.
    pub message: String,
}

/// A public name and where it goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Route {
    /// The public name.
    pub host: String,
    /// The upstream URL.
    pub upstream: String,
}

/// The static address of guest `id`.
fn guest_address(estate: &Estate, id: u32) -> Option<String> {
    estate.guest(id)?.static_address().map(str::to_owned)
}

/// The Traefik container's static address, when one is declared.
fn traefik_address(estate: &Estate) -> Option<String> {
    guest_address(estate, crate::traefik::proxy(estate)?)
}

/// The routes of `gateway`, each upstream resolved; `Err` names a route whose upstream cannot be.
pub fn routes(estate: &Estate, gateway: &Gateway) -> Result<Vec<Route>, (usize, String)> {
    gateway
        .routes
        .iter()
        .enumerate()
        .map(|(index, route)| {
            let upstream = match (&route.upstream, route.guest) {
                (Some(url), None) => url.clone(),
                (None, Some(guest)) => {
                    let address = guest_address(estate, guest).ok_or_else(|| {
                        (
                            index,
                            format!("guest {guest} has no static address to send `{}` to", route.host),
                        )
                    })?;
                    let port = route.port.ok_or_else(|| {
                        (
                            index,
                            format!("the route of `{}` names a guest but no `port`", route.host),
                        )
                    })?;
                    let scheme = route.scheme.as_deref().unwrap_or("http");
                    format!("{scheme}://{address}:{port}")
                }
                _ => {
                    return Err((
                        index,
                        format!(
                            "the route of `{}` needs an `upstream` or a `guest`, not both",
                            route.host
                        ),
                    ));
                }
            };
            Ok(Route {
                host: route.host.clone(),
                upstream,
            })
        })
        .collect()
}

/// Where names without a route go: the declared default, else Traefik's container (at `traefik`, its
/// address) on port 80.
fn default_upstream(gateway: &Gateway, traefik: Option<&str>) -> Option<String> {
    gateway
        .default_upstream
        .clone()
        .or_else(|| traefik.map(|address| format!("http://{address}:80")))
}

/// `map $host $upstream_service { ... }`.
fn map_block(routes: &[Route], default: Option<&str>) -> String {
    let mut block = String::from("map $host $upstream_service {\n    hostnames;\n");
    if let Some(default) = default {
        block.push_str(&format!("    default {default};\n"));
    }
    for route in routes {
        block.push_str(&format!("    {} {};\n", route.host, route.upstream));
    }
    block.push('}');
    block
}

/// What the template sees.
pub fn context(estate: &Estate, gateway: &Gateway) -> Result<Value, TemplateError> {
    let routes = routes(estate, gateway).map_err(|(_, message)| TemplateError { line: None, message })?;
    let traefik = traefik_address(estate);
    let default = default_upstream(gateway, traefik.as_deref());
    let guests: BTreeMap<String, Value> = estate
        .guests()
        .values()
        .map(|guest| {
            (
                guest.id.to_string(),
                json!({ "name": guest.name(), "address": guest.static_address() }),
            )
        })
        .collect();
    let traefik = traefik.map(|address| json!({ "address": address, "port": 80 }));
    Ok(json!({
        "server_names": gateway.public_names.join(" "),
        "public_names": gateway.public_names,
        "map_block": map_block(&routes, default.as_deref()),
        "routes": routes,
        "default_upstream": default,
        "certificate": gateway.certificate,
        "certificate_key": gateway.certificate_key,
        "http_port": gateway.http_port,
        "https_port": gateway.https_port,
        "resolver": gateway.resolver,
        "domain_name": estate.files().hypervisor.domain_name,
        "traefik": traefik,
        "guests": guests,
    }))
}

/// Renders the gateway's site from `template`.
pub fn render(estate: &Estate, gateway: &Gateway, template: &str) -> Result<String, TemplateError> {
    let context = context(estate, gateway)?;
    let map = context["map_block"].as_str().unwrap_or_default().to_owned();
    let tera_context = tera::Context::from_value(context).map_err(|error| TemplateError {
        line: None,
        message: error.to_string(),
    })?;
    let rendered = tera::Tera::one_off(template, &tera_context, false)
        .map_err(|error| template_error(template, &error))?;
    Ok(rendered.replace(MAP_PLACEHOLDER, &map))
}

/// Tera's error with its causes, at the template's line: Tera's parse errors carry `--> line:column`; for
/// an unknown variable, the first line that uses it.
fn template_error(template: &str, error: &tera::Error) -> TemplateError {
    let mut parts = Vec::new();
    let mut cause: Option<&dyn std::error::Error> = Some(error);
    while let Some(current) = cause {
        parts.push(current.to_string().replace("'__tera_one_off'", "the template"));
        cause = current.source();
    }
    let message = parts.join(": ");
    let parsed_line = message
        .split("--> ")
        .nth(1)
        .and_then(|rest| rest.split(':').next()?.trim().parse().ok());
    let variable_line = message
        .split("Variable `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .and_then(|variable| {
            template
                .lines()
                .position(|line| (line.contains("{{") || line.contains("{%")) && line.contains(variable))
                .map(|index| index + 1)
        });
    TemplateError {
        line: parsed_line.or(variable_line),
        message: message.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}
