//! The nginx gateway (`gateway` in the hypervisor file): its container is a declared container, each route
//! has an upstream, and its template (as the caller read it, [`super::CheckOptions::gateway_template`])
//! renders from the model.

use crate::config::FileKind;
use crate::lint::diagnostic::Problem;
use crate::model::{Estate, GuestSpec};

/// The gateway's template as read from the configuration directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayTemplate {
    /// Where it was looked for, for messages.
    pub path: String,
    /// Its text; `None` when it is not there.
    pub text: Option<String>,
}

pub(super) fn check(estate: &Estate, template: Option<&GatewayTemplate>, problems: &mut Vec<Problem>) {
    let Some(gateway) = &estate.files().hypervisor.gateway else {
        return;
    };
    let is_container = estate
        .guests()
        .get(&gateway.container)
        .is_some_and(|guest| matches!(guest.spec, GuestSpec::Container(_)));
    if !is_container {
        problems.push(
            Problem::error(
                "phoenix::gateway::unknown_container",
                FileKind::Hypervisor,
                "/gateway/container",
                format!("the gateway's container {} is not declared", gateway.container),
            )
            .with_help("name the CTID of the container that runs nginx, from phoenix_lxc_configs.json"),
        );
    }
    if let Err((index, message)) = crate::gateway::routes(estate, gateway) {
        problems.push(
            Problem::error(
                "phoenix::gateway::route",
                FileKind::Hypervisor,
                format!("/gateway/routes/{index}"),
                message,
            )
            .with_help("give the route an `upstream` URL, or a `guest` with a static address and a `port`"),
        );
        return;
    }
    let Some(template) = template else { return };
    let Some(text) = &template.text else {
        problems.push(
            Problem::error(
                "phoenix::gateway::no_template",
                FileKind::Hypervisor,
                "/gateway/template",
                format!("the gateway's template {} is not there", template.path),
            )
            .with_help("write the site as a Tera template there, or point `template` at it"),
        );
        return;
    };
    if let Err(error) = crate::gateway::render(estate, gateway, text) {
        let place = match error.line {
            Some(line) => format!("{}, line {line}", template.path),
            None => template.path.clone(),
        };
        problems.push(
            Problem::error(
                "phoenix::gateway::template",
                FileKind::Hypervisor,
                "/gateway/template",
                format!("{place} does not render: {}", error.message),
            )
            .with_help(
                "the template sees server_names, public_names, map_block, routes, default_upstream, \
                 certificate, certificate_key, http_port, https_port, resolver, domain_name, traefik and guests",
            ),
        );
    }
}
