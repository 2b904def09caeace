//! The Proxmox connection: what the schema's endpoint pattern cannot say.
//!
//! The schema already insists on an `https://` URL with a host name or bracketed IPv6 literal and a port
//! in range; an IPv6 literal is checked here by parsing it, so `https://[::::]` fails at `validate`, not at
//! `plan`.

use std::net::Ipv6Addr;

use crate::config::{FileKind, HypervisorFile};
use crate::lint::diagnostic::Problem;

/// Checks `proxmox.endpoint`.
pub(crate) fn check(hypervisor: &HypervisorFile, problems: &mut Vec<Problem>) {
    let Some(connection) = &hypervisor.proxmox else {
        return;
    };
    let endpoint = connection.endpoint.as_str();
    let Some(literal) = ipv6_literal(endpoint) else {
        return;
    };
    if literal.parse::<Ipv6Addr>().is_err() {
        problems.push(
            Problem::error(
                "phoenix::connection::bad_endpoint",
                FileKind::Hypervisor,
                "/proxmox/endpoint",
                format!("`[{literal}]` in the endpoint is not an IPv6 address"),
            )
            .with_label("not an IPv6 address")
            .with_help(
                "write an IPv6 host in brackets, such as `https://[fd00::2]:8006`, or use a host name",
            ),
        );
    }
}

/// The text between the brackets of `https://[...]`, when the host is written that way.
fn ipv6_literal(endpoint: &str) -> Option<&str> {
    let rest = endpoint.strip_prefix("https://")?.strip_prefix('[')?;
    rest.split_once(']').map(|(literal, _)| literal)
}

#[cfg(test)]
mod tests {
    use super::ipv6_literal;

    #[test]
    fn finds_the_bracketed_host() {
        assert_eq!(ipv6_literal("https://[fd00::2]:8006"), Some("fd00::2"));
        assert_eq!(ipv6_literal("https://[::::]"), Some("::::"));
        assert_eq!(ipv6_literal("https://pve1:8006"), None);
        assert_eq!(ipv6_literal("http://[fd00::2]"), None);
    }
}
