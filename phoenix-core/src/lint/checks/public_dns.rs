//! The public DNS view (`public_dns` in the hypervisor file): every public name lies in a declared zone
//! and is not an internal-only name, the names resolve to a public address, and the server's updates are
//! signed.

use std::net::{IpAddr, Ipv4Addr};

use base64::Engine as _;

use crate::config::FileKind;
use crate::config::common::Secret;
use crate::dns::public::{self, normalise};
use crate::lint::diagnostic::Problem;
use crate::model::Estate;

pub(super) fn check(estate: &Estate, problems: &mut Vec<Problem>) {
    let hypervisor = &estate.files().hypervisor;
    let Some(config) = &hypervisor.public_dns else {
        return;
    };
    let domain = hypervisor.domain_name.as_deref().map(normalise);
    for name in public::public_names(estate) {
        if public::zone_of(&name.name, &config.zones).is_none() {
            problems.push(
                Problem::error(
                    "phoenix::dns::outside_zone",
                    FileKind::Hypervisor,
                    &name.pointer,
                    format!(
                        "the public name `{}` is in none of the public zones ({})",
                        name.name,
                        config.zones.join(", ")
                    ),
                )
                .with_label("outside every zone")
                .with_help("add its zone to `public_dns.zones`, or correct the name"),
            );
        }
        let internal = estate.guests().values().find(|guest| {
            let own = guest.name().to_ascii_lowercase();
            name.name == own
                || domain
                    .as_ref()
                    .is_some_and(|domain| name.name == format!("{own}.{domain}"))
        });
        if let Some(guest) = internal {
            problems.push(
                Problem::error(
                    "phoenix::dns::internal_name",
                    FileKind::Hypervisor,
                    &name.pointer,
                    format!(
                        "`{}` is {}'s own name in the internal view; published, it would resolve to the gateway outside and to the guest inside",
                        name.name,
                        guest.describe()
                    ),
                )
                .with_label("internal-only name")
                .with_help("publish the name of a service the gateway routes to it instead"),
            );
        }
    }
    check_address(estate, config, problems);
    let Some(server) = &config.server else {
        return;
    };
    if public::split_server(&server.address).is_none() {
        problems.push(
            Problem::error(
                "phoenix::dns::bad_server",
                FileKind::Hypervisor,
                "/public_dns/server/address",
                format!("`{}` is not a DNS server's address", server.address),
            )
            .with_help("write a host name or an IP address, with `:port` after it for another port than 53 (`[addr]:port` for IPv6)"),
        );
    }
    match &server.tsig {
        None => problems.push(
            Problem::error(
                "phoenix::dns::no_tsig",
                FileKind::Hypervisor,
                "/public_dns/server",
                "the public DNS server has no TSIG key: Phoenix does not send unsigned updates",
            )
            .on_key()
            .with_help(r#"add "tsig": {"name": ..., "secret": {"env": ...}} with the key the server's update policy names"#),
        ),
        Some(key) => {
            if let Secret::Plain(text) = &key.secret
                && base64::engine::general_purpose::STANDARD.decode(text.trim()).is_err()
            {
                problems.push(
                    Problem::error(
                        "phoenix::dns::bad_tsig_secret",
                        FileKind::Hypervisor,
                        "/public_dns/server/tsig/secret",
                        format!("the TSIG key `{}` is not base64", key.name),
                    )
                    .with_help("write the secret as `tsig-keygen` or `keymgr` prints it"),
                );
            }
        }
    }
}

/// The address names resolve to: one, a valid one, and public.
fn check_address(
    estate: &Estate,
    config: &crate::config::hypervisor::PublicDns,
    problems: &mut Vec<Problem>,
) {
    let Some(address) = public::public_address(estate, config) else {
        if config.address6.is_none() {
            problems.push(
                Problem::error(
                    "phoenix::dns::no_address",
                    FileKind::Hypervisor,
                    "/public_dns",
                    "public names have no address to resolve to",
                )
                .on_key()
                .with_help("set `public_dns.address` to the gateway's public address"),
            );
        }
        return;
    };
    let pointer = if config.address.is_some() {
        "/public_dns/address"
    } else {
        "/public_dns"
    };
    match address.parse::<Ipv4Addr>() {
        Err(_) => problems.push(
            Problem::error(
                "phoenix::dns::bad_address",
                FileKind::Hypervisor,
                pointer,
                format!("`{address}` is not an IPv4 address"),
            )
            .with_help("write the gateway's public IPv4 address; IPv6 goes in `address6`"),
        ),
        Ok(ip) if is_private(ip) => problems.push(
            Problem::warning(
                "phoenix::dns::private_address",
                FileKind::Hypervisor,
                pointer,
                format!("public names resolve to `{address}`, which the Internet cannot reach"),
            )
            .with_help("set `public_dns.address` to the address the gateway is reached at from outside"),
        ),
        Ok(_) => {}
    }
    if let Some(address6) = &config.address6
        && !matches!(address6.parse::<IpAddr>(), Ok(IpAddr::V6(_)))
    {
        problems.push(Problem::error(
            "phoenix::dns::bad_address",
            FileKind::Hypervisor,
            "/public_dns/address6",
            format!("`{address6}` is not an IPv6 address"),
        ));
    }
}

fn is_private(ip: Ipv4Addr) -> bool {
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.octets()[0] == 100 && ip.octets()[1] & 0xc0 == 64
}
