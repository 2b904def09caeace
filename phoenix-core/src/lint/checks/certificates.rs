//! Certificates (`certificates` in the hypervisor file): each names a declared issuer, and each of its
//! names can be proved by that issuer's challenge (for `dns-01`: it lies in a public zone whose server
//! Phoenix updates).

use crate::config::FileKind;
use crate::config::hypervisor::CertificateSpec;
use crate::dns::public::{normalise, zone_of};
use crate::lint::diagnostic::Problem;
use crate::lint::schema::escape_pointer_token;
use crate::model::{Estate, GuestSpec};

pub(super) fn check(estate: &Estate, problems: &mut Vec<Problem>) {
    let hypervisor = &estate.files().hypervisor;
    let Some(config) = &hypervisor.certificates else {
        return;
    };
    let public = hypervisor.public_dns.as_ref();
    let server = public.and_then(|public| public.server.as_ref());
    for (name, issuer) in &config.issuers {
        let used = config.issue.iter().any(|spec| &spec.issuer == name);
        let http01_container = issuer
            .http01_container
            .or(hypervisor.gateway.as_ref().map(|gateway| gateway.container));
        if used && issuer.challenge == "http-01" && http01_container.is_none() {
            problems.push(
                Problem::error(
                    "phoenix::certificate::no_http01_container",
                    FileKind::Hypervisor,
                    format!("/certificates/issuers/{}", escape_pointer_token(name)),
                    format!(
                        "issuer `{name}` proves names by http-01, but no container answers the challenges"
                    ),
                )
                .on_key()
                .with_help(
                    "declare the `gateway`, or name the container that serves them in `http01_container`",
                ),
            );
        }
        for (key, ctid) in [
            ("ca_container", issuer.ca_container),
            ("http01_container", issuer.http01_container),
        ] {
            let declared = |ctid: u32| {
                estate
                    .guests()
                    .get(&ctid)
                    .is_some_and(|guest| matches!(guest.spec, GuestSpec::Container(_)))
            };
            if let Some(ctid) = ctid.filter(|ctid| !declared(*ctid)) {
                problems.push(Problem::error(
                    "phoenix::certificate::unknown_container",
                    FileKind::Hypervisor,
                    format!("/certificates/issuers/{}/{key}", escape_pointer_token(name)),
                    format!("issuer `{name}` names container {ctid}, which is not declared"),
                ));
            }
        }
        if used && issuer.challenge == "dns-01" && server.is_none() {
            problems.push(
                Problem::error(
                    "phoenix::certificate::no_dns_server",
                    FileKind::Hypervisor,
                    format!("/certificates/issuers/{}", escape_pointer_token(name)),
                    format!("issuer `{name}` proves names by dns-01, but `public_dns` names no server to publish the challenge to"),
                )
                .on_key()
                .with_help("declare `public_dns.server` (an RFC 2136 server with a TSIG key) for the zones of the names"),
            );
        }
    }
    for (index, spec) in config.issue.iter().enumerate() {
        let base = format!("/certificates/issue/{index}");
        if let Some(first) = config.issue[..index]
            .iter()
            .position(|other| normalise(&other.common_name) == normalise(&spec.common_name))
        {
            problems.push(Problem::error(
                "phoenix::certificate::duplicate",
                FileKind::Hypervisor,
                format!("{base}/common_name"),
                format!(
                    "certificate `{}` is declared twice (first at /certificates/issue/{first})",
                    spec.common_name
                ),
            ));
        }
        if let Some(id) = spec.guest {
            check_mounts(estate, spec, id, &base, problems);
        }
        let Some(issuer) = config.issuers.get(&spec.issuer) else {
            let known: Vec<&str> = config.issuers.keys().map(String::as_str).collect();
            problems.push(
                Problem::error(
                    "phoenix::certificate::unknown_issuer",
                    FileKind::Hypervisor,
                    format!("{base}/issuer"),
                    format!(
                        "certificate `{}` names issuer `{}`, which `certificates.issuers` does not declare",
                        spec.common_name, spec.issuer
                    ),
                )
                .with_help(if known.is_empty() {
                    "declare the ACME server under `certificates.issuers`".to_owned()
                } else {
                    format!("the issuers are: {}", known.join(", "))
                }),
            );
            continue;
        };
        let names: Vec<(String, &String)> =
            std::iter::once((format!("{base}/common_name"), &spec.common_name))
                .chain(
                    spec.sans
                        .iter()
                        .enumerate()
                        .map(|(at, name)| (format!("{base}/sans/{at}"), name)),
                )
                .collect();
        if issuer.challenge == "http-01" {
            for (pointer, name) in names.into_iter().filter(|(_, name)| name.starts_with("*.")) {
                problems.push(
                    Problem::error(
                        "phoenix::certificate::wildcard_http01",
                        FileKind::Hypervisor,
                        pointer,
                        format!("`{name}` is a wildcard, which http-01 cannot prove"),
                    )
                    .with_help("issue wildcards from an issuer with `\"challenge\": \"dns-01\"`"),
                );
            }
            continue;
        }
        let (Some(public), true) = (public, issuer.challenge == "dns-01") else {
            continue;
        };
        let names = std::iter::once((format!("{base}/common_name"), &spec.common_name)).chain(
            spec.sans
                .iter()
                .enumerate()
                .map(|(at, name)| (format!("{base}/sans/{at}"), name)),
        );
        for (pointer, name) in names {
            let name = normalise(name);
            let proved = name.strip_prefix("*.").unwrap_or(&name);
            if zone_of(proved, &public.zones).is_none() {
                problems.push(
                    Problem::error(
                        "phoenix::certificate::outside_zone",
                        FileKind::Hypervisor,
                        pointer,
                        format!("`{name}` is in none of the public zones, so dns-01 cannot prove it"),
                    )
                    .with_help(
                        "add its zone to `public_dns.zones`, or issue it from a server that can reach it",
                    ),
                );
            }
        }
    }
}

/// Both files of `spec` lie under a host directory that guest `id` mounts, so the guest sees them.
fn check_mounts(estate: &Estate, spec: &CertificateSpec, id: u32, base: &str, problems: &mut Vec<Problem>) {
    let Some(guest) = estate.guests().get(&id) else {
        problems.push(Problem::error(
            "phoenix::certificate::unknown_guest",
            FileKind::Hypervisor,
            format!("{base}/guest"),
            format!(
                "certificate `{}` is for guest {id}, which is not declared",
                spec.common_name
            ),
        ));
        return;
    };
    let mounts: Vec<String> = match &guest.spec {
        GuestSpec::Container(container) => container
            .mount_points
            .iter()
            .map(|mount| mount.host_path.clone())
            .collect(),
        GuestSpec::Vm(vm) => {
            let root = estate
                .files()
                .hypervisor
                .mount_point_base
                .as_deref()
                .unwrap_or("/mnt/pve");
            vm.volumes
                .iter()
                .map(|volume| {
                    format!(
                        "{}/{}",
                        root.trim_end_matches('/'),
                        volume.path.trim_start_matches('/')
                    )
                })
                .collect()
        }
    };
    let inside = |path: &str| {
        mounts.iter().any(|mount| {
            path.strip_prefix(mount.trim_end_matches('/'))
                .is_some_and(|rest| rest.starts_with('/'))
        })
    };
    for (key, path) in [("cert_path", &spec.cert_path), ("key_path", &spec.key_path)] {
        if !inside(path) {
            problems.push(
                Problem::error(
                    "phoenix::certificate::outside_mounts",
                    FileKind::Hypervisor,
                    format!("{base}/{key}"),
                    format!(
                        "`{path}` is in none of {}'s mounts, so it would not see the file",
                        guest.describe()
                    ),
                )
                .with_help(if mounts.is_empty() {
                    "give the guest a mount point for the directory, or drop `guest`".to_owned()
                } else {
                    format!("put the file under one of: {}", mounts.join(", "))
                }),
            );
        }
    }
}
