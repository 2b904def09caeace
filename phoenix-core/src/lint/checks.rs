//! Semantic checks: what a schema cannot say. References, cycles, addresses, uniqueness, roles, storage.
//!
//! Every check reads the resolved [`Estate`] and reports [`Problem`]s at JSON pointers; none stops the others.

mod access;
mod certificates;
pub mod compose;
mod connection;
mod firewall;
pub mod gateway;
pub(crate) mod legacy;
pub(crate) mod network;
pub mod public_dns;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use crate::config::hypervisor::{HypervisorFile, NfsStorage};
use crate::config::vm::StackRef;
use crate::config::{ConfigFiles, FileKind, PortainerRole};
use crate::lint::diagnostic::Problem;
use crate::lint::features;
use crate::lint::graph::DependencyGraph;
use crate::lint::schema::escape_pointer_token;
use crate::lint::suggest::did_you_mean;
use crate::model::{Estate, Guest, GuestKind, GuestSpec};
use network::{InterfaceAddress, parse_interface_address, parse_ip, parse_mac, split_list};

/// What the checks need beyond the configuration itself.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Features the configuration directory adds to the shipped catalogue (its `features/` folder).
    pub extra_features: Vec<String>,
    /// The AppArmor profile files of the configuration directory (its `apparmor/` folder), by file name.
    pub apparmor_files: BTreeMap<String, String>,
    /// The compose file of each stack, by stack name (`None`: none was found); `None` as a whole when the
    /// caller did not look, and compose files are not checked.
    pub compose_files: Option<BTreeMap<String, Option<compose::ComposeFile>>>,
    /// The gateway's template, as read from the configuration directory; `None` when the caller did not
    /// look, and it is not rendered.
    pub gateway_template: Option<gateway::GatewayTemplate>,
}

/// The checks of what the files say as written, before their guests are resolved: legacy keys and
/// storages, which are reported where they are written (a default once, at the default).
pub(crate) fn check_written(files: &ConfigFiles, problems: &mut Vec<Problem>) {
    legacy::check(files, problems);
    check_storage(files, problems);
}

/// Runs every semantic check of the resolved estate.
pub(crate) fn check(estate: &Estate, options: &CheckOptions) -> Vec<Problem> {
    let mut problems = Vec::new();
    check_references(estate, &mut problems);
    check_cycles(estate, &mut problems);
    check_addresses(estate, &mut problems);
    check_macs(estate, &mut problems);
    check_guest_names(estate, &mut problems);
    connection::check(&estate.files().hypervisor, &mut problems);
    access::check(&estate.files().hypervisor, &mut problems);
    check_traefik_names(estate, &mut problems);
    problems.extend(crate::traefik::problems(estate));
    if let Some(compose_files) = &options.compose_files {
        compose::check(estate, compose_files, &mut problems);
    }
    gateway::check(estate, options.gateway_template.as_ref(), &mut problems);
    check_dns(estate, &mut problems);
    public_dns::check(estate, &mut problems);
    certificates::check(estate, &mut problems);
    check_stacks(estate, &mut problems);
    check_portainer(estate, &mut problems);
    check_firewalls(estate, &mut problems);
    check_features(estate, options, &mut problems);
    check_nodes(estate, &mut problems);
    check_shared_volumes(estate, &mut problems);
    check_clone_sizes(estate, &mut problems);
    check_host_dns(estate, &mut problems);
    check_apparmor(estate, options, &mut problems);
    check_host_bridges(estate, &mut problems);
    check_samba(estate, &mut problems);
    check_nfs_exports(estate, &mut problems);
    check_snapshot_policies(estate, &mut problems);
    problems
}

/// A dataset's `snapshot_policy` is declared, `replicate_to` comes with one, and a policy's name can
/// name a systemd unit.
fn check_snapshot_policies(estate: &Estate, problems: &mut Vec<Problem>) {
    let Some(zfs) = &estate.files().hypervisor.zfs else {
        return;
    };
    for name in zfs.snapshot_policies.keys() {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            problems.push(
                Problem::error(
                    "phoenix::zfs::policy_name",
                    FileKind::Hypervisor,
                    format!("/zfs/snapshot_policies/{}", pointer_token(name)),
                    format!("the snapshot policy name {name:?} cannot name a systemd timer"),
                )
                .with_help("use letters, digits, `-` and `_` only"),
            );
        }
    }
    for (index, dataset) in zfs.datasets.iter().enumerate() {
        if let Some(policy) = &dataset.snapshot_policy
            && !zfs.snapshot_policies.contains_key(policy)
        {
            let declared: Vec<&str> = zfs.snapshot_policies.keys().map(String::as_str).collect();
            problems.push(
                Problem::error(
                    "phoenix::zfs::unknown_snapshot_policy",
                    FileKind::Hypervisor,
                    format!("/zfs/datasets/{index}/snapshot_policy"),
                    format!("no snapshot policy {policy:?} in zfs.snapshot_policies"),
                )
                .with_help(if declared.is_empty() {
                    "declare it under zfs.snapshot_policies".to_owned()
                } else {
                    format!("declared: {}", declared.join(", "))
                }),
            );
        }
        if dataset.replicate_to.is_some() && dataset.snapshot_policy.is_none() {
            problems.push(
                Problem::error(
                    "phoenix::zfs::replica_without_policy",
                    FileKind::Hypervisor,
                    format!("/zfs/datasets/{index}/replicate_to"),
                    "replication sends the snapshots a policy takes, and this dataset has none".to_owned(),
                )
                .with_help("add \"snapshot_policy\": \"<name of zfs.snapshot_policies>\""),
            );
        }
    }
}

/// A key as a JSON pointer token (`~` and `/` escaped).
fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// An export written as a dataset's default mount point, while the dataset is mounted elsewhere, is
/// exported where it is mounted, and said so.
fn check_nfs_exports(estate: &Estate, problems: &mut Vec<Problem>) {
    let hypervisor = &estate.files().hypervisor;
    for (index, export) in hypervisor
        .nfs
        .iter()
        .flat_map(|nfs| nfs.exports.iter())
        .enumerate()
    {
        let nfs_server = hypervisor
            .network
            .as_ref()
            .and_then(|network| network.nfs_server.as_ref());
        if let Some(storage) = &export.proxmox_storage
            && storage.server.is_none()
            && nfs_server.is_none()
        {
            problems.push(
                Problem::error(
                    "phoenix::nfs::storage_without_server",
                    FileKind::Hypervisor,
                    format!("/nfs/exports/{index}/proxmox_storage"),
                    format!(
                        "the storage {} mounts this export, but no server address says where from",
                        storage.id
                    ),
                )
                .with_help(
                    "set \"server\" here, or network.nfs_server, to the address Proxmox reaches the host at",
                ),
            );
        }
        if let Some(mountpoint) = crate::engine::resource::export_mountpoint(hypervisor, &export.path) {
            problems.push(
                Problem::warning(
                    "phoenix::host::export_not_mounted_there",
                    FileKind::Hypervisor,
                    format!("/nfs/exports/{index}/path"),
                    format!(
                        "{} names the dataset {}, which is mounted at {mountpoint} (mount_point_base): that is \
                         the directory exported",
                        export.path,
                        export.path.trim_start_matches('/')
                    ),
                )
                .with_help(format!("write \"path\": \"{mountpoint}\"")),
            );
        }
    }
}

/// Samba's shares: one section per name, none Samba reserves; a user without a password is said to be
/// left to set by hand.
fn check_samba(estate: &Estate, problems: &mut Vec<Problem>) {
    let Some(samba) = &estate.files().hypervisor.samba else {
        return;
    };
    let mut seen = BTreeSet::new();
    for (index, share) in samba.shares.iter().enumerate() {
        let name = share.name.to_ascii_lowercase();
        let pointer = format!("/samba/shares/{index}/name");
        if ["global", "homes", "printers"].contains(&name.as_str()) {
            problems.push(
                Problem::error(
                    "phoenix::samba::reserved_share",
                    FileKind::Hypervisor,
                    pointer,
                    format!("[{}] is a section Samba reserves, not a share name", share.name),
                )
                .with_help("name the share otherwise"),
            );
        } else if !seen.insert(name) {
            problems.push(
                Problem::error(
                    "phoenix::samba::duplicate_share",
                    FileKind::Hypervisor,
                    pointer,
                    format!(
                        "the share {} is declared twice (Samba's names ignore case)",
                        share.name
                    ),
                )
                .with_help("give each share its own name"),
            );
        }
    }
    if samba.password.is_none() {
        problems.push(
            Problem::warning(
                "phoenix::samba::no_password",
                FileKind::Hypervisor,
                "/samba/user".to_owned(),
                format!(
                    "no Samba password is declared for {0}: Phoenix does not add it to Samba's users, so it can \
                     connect once its password is set by hand (smbpasswd -a {0})",
                    samba.user
                ),
            )
            .with_help(r#"declare "password": {"env": "NAME"} or {"file": "path"} under samba"#),
        );
    }
}

/// The profiles LXC and Proxmox ship, which a container may name without declaring them.
const SHIPPED_APPARMOR_PROFILES: &[&str] = &[
    "unconfined",
    "generated",
    "lxc-container-default",
    "lxc-container-default-cgns",
    "lxc-container-default-with-mounting",
    "lxc-container-default-with-nesting",
];

/// Whether an AppArmor policy file defines the profile `name` (`profile NAME ... {`, or `NAME ... {`).
fn defines_profile(text: &str, name: &str) -> bool {
    text.lines().any(|line| {
        let line = line.trim_start();
        let rest = line.strip_prefix("profile ").map_or(line, str::trim_start);
        rest.strip_prefix(name)
            .is_some_and(|after| after.starts_with(|c: char| c.is_whitespace() || c == '{'))
    })
}

/// Every declared profile has its file and defines itself; every container names a profile that is
/// declared or shipped.
fn check_apparmor(estate: &Estate, options: &CheckOptions, problems: &mut Vec<Problem>) {
    let declared = &estate.files().hypervisor.apparmor_profiles;
    for (index, name) in declared.iter().enumerate() {
        let pointer = format!("/apparmor_profiles/{index}");
        match options.apparmor_files.get(name) {
            None => problems.push(
                Problem::error(
                    "phoenix::host::apparmor_file_missing",
                    FileKind::Hypervisor,
                    pointer,
                    format!("the AppArmor profile `{name}` has no file apparmor/{name} in the configuration directory"),
                )
                .with_label("no such file")
                .with_help(format!("put the profile's policy in apparmor/{name}, next to the configuration files")),
            ),
            Some(text) if !defines_profile(text, name) => problems.push(
                Problem::error(
                    "phoenix::host::apparmor_profile_name",
                    FileKind::Hypervisor,
                    pointer,
                    format!("apparmor/{name} does not define a profile named `{name}`"),
                )
                .with_label("not defined in its file")
                .with_help(format!("the file must hold `profile {name} flags=(...) {{ ... }}`; containers load profiles by that name")),
            ),
            Some(_) => {}
        }
    }
    let known: BTreeSet<&str> = SHIPPED_APPARMOR_PROFILES
        .iter()
        .copied()
        .chain(declared.iter().map(String::as_str))
        .collect();
    for guest in estate.guests().values() {
        let GuestSpec::Container(container) = &guest.spec else {
            continue;
        };
        let Some(profile) = container.apparmor_profile.as_deref() else {
            continue;
        };
        if known.contains(profile) {
            continue;
        }
        let problem = Problem::error(
            "phoenix::lxc::unknown_apparmor_profile",
            guest.file,
            guest.pointer_to("apparmor_profile"),
            format!(
                "{} names the AppArmor profile `{profile}`, which is neither declared nor shipped",
                guest.describe()
            ),
        )
        .with_label("unknown profile");
        problems.push(match did_you_mean(profile, known.iter().copied()) {
            Some(suggestion) => problem.with_help(format!("did you mean `{suggestion}`?")),
            None => problem.with_help(format!(
                "declare it in `apparmor_profiles` of the hypervisor file with its policy in apparmor/{profile}, or use one of {}",
                SHIPPED_APPARMOR_PROFILES.join(", ")
            )),
        });
    }
}

/// Proxmox keeps three resolvers for a node (`dns1` to `dns3`); a fourth would be dropped without a word.
fn check_host_dns(estate: &Estate, problems: &mut Vec<Problem>) {
    let hypervisor = &estate.files().hypervisor;
    let Some(dns) = crate::HostDns::declared(hypervisor) else {
        return;
    };
    if dns.servers.len() <= crate::HostDns::MAX_SERVERS {
        return;
    }
    problems.push(
        Problem::error(
            "phoenix::host::too_many_resolvers",
            FileKind::Hypervisor,
            "/network".to_owned(),
            format!(
                "the node's resolvers are {}: Proxmox keeps at most {}",
                dns.servers.join(", "),
                crate::HostDns::MAX_SERVERS
            ),
        )
        .with_help("the interfaces' `dns_nameservers` and `network.fallback_dns` together name the node's resolvers; keep three"),
    );
}

/// What Proxmox refuses of the node's bridges and can be known offline: one name twice (one resource,
/// `host/network/<name>`, each), one port in two bridges, and a default gateway on two bridges.
fn check_host_bridges(estate: &Estate, problems: &mut Vec<Problem>) {
    let Some(network) = &estate.files().hypervisor.network else {
        return;
    };
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut ports: BTreeMap<&str, &str> = BTreeMap::new();
    let mut gateway: Option<&str> = None;
    for (index, bridge) in network.interfaces.iter().enumerate() {
        // A single interface may be written as the object itself; placement then drops the `/0`.
        let base = format!("/network/interfaces/{index}");
        if let Some(first) = names.insert(&bridge.name, index) {
            problems.push(
                Problem::error(
                    "phoenix::host::duplicate_bridge",
                    FileKind::Hypervisor,
                    format!("{base}/name"),
                    format!(
                        "bridge {} is declared twice (interfaces {first} and {index})",
                        bridge.name
                    ),
                )
                .with_help("declare each bridge once"),
            );
        }
        for (port_index, port) in bridge.ports.iter().flatten().enumerate() {
            match ports.get(port.as_str()) {
                Some(owner) if *owner != bridge.name => problems.push(
                    Problem::error(
                        "phoenix::host::shared_bridge_port",
                        FileKind::Hypervisor,
                        format!("{base}/ports/{port_index}"),
                        format!(
                            "port {port} of bridge {} is a port of bridge {owner} too",
                            bridge.name
                        ),
                    )
                    .with_help("Proxmox gives an interface to one bridge or bond only"),
                ),
                _ => {
                    ports.insert(port, &bridge.name);
                }
            }
        }
        if bridge.gateway.is_some() {
            match gateway {
                Some(first) if first != bridge.name => problems.push(
                    Problem::error(
                        "phoenix::host::two_gateways",
                        FileKind::Hypervisor,
                        format!("{base}/gateway"),
                        format!(
                            "bridges {first} and {} both declare a default gateway",
                            bridge.name
                        ),
                    )
                    .with_help("Proxmox keeps one default gateway per node; declare it on one bridge"),
                ),
                _ => gateway = Some(&bridge.name),
            }
        }
    }
}

/// A clone cannot have a smaller disk than its source: disks grow, never shrink.
fn check_clone_sizes(estate: &Estate, problems: &mut Vec<Problem>) {
    let size = |guest: &Guest| match &guest.spec {
        GuestSpec::Container(container) => container.storage_size_gb.map(|size| ("storage_size_gb", size)),
        GuestSpec::Vm(vm) => vm.disk_size_gb.map(|size| ("disk_size_gb", size)),
    };
    for guest in estate.guests().values() {
        let Some(source) = guest.clone_from.and_then(|id| estate.guest(id)) else {
            continue;
        };
        let (Some((key, wanted)), Some((_, inherited))) = (size(guest), size(source)) else {
            continue;
        };
        if wanted >= inherited {
            continue;
        }
        problems.push(
            Problem::warning(
                "phoenix::disk::smaller_than_source",
                guest.file,
                guest.pointer_to(key),
                format!(
                    "{} asks for {wanted} GiB but is cloned from {} with {inherited} GiB; the clone keeps {inherited} GiB",
                    guest.describe(),
                    source.describe()
                ),
            )
            .with_label("smaller than the clone source")
            .with_help(format!("disks grow but never shrink: declare at least {inherited} GiB, or make the source smaller")),
        );
    }
}

fn check_references(estate: &Estate, problems: &mut Vec<Problem>) {
    for guest in estate.guests().values() {
        if let Some(source_id) = guest.clone_from {
            let pointer = guest.clone_pointer();
            match estate.guest(source_id) {
                None => problems.push(unknown_guest(estate, guest.file, pointer, source_id, "clone source")),
                Some(source) if source.kind() != guest.kind() => problems.push(
                    Problem::error(
                        "phoenix::reference::wrong_kind",
                        guest.file,
                        pointer,
                        format!("{} cannot be cloned from {}", guest.describe(), source.describe()),
                    )
                    .with_label("a clone source of the other kind")
                    .with_help("containers clone from containers (`clone_from_ctid`), VMs from VMs (`clone_from_vmid`)"),
                ),
                Some(source) if source.template_snapshot_name().is_none() => problems.push(
                    Problem::error(
                        "phoenix::clone::no_template_snapshot",
                        guest.file,
                        pointer,
                        format!("clone source {} declares no `template_snapshot_name`", source.describe()),
                    )
                    .with_label("cloned from here")
                    .with_help(format!(
                        "add `template_snapshot_name` to {}: clones start from that snapshot",
                        source.describe()
                    )),
                ),
                Some(_) => {}
            }
        } else if !has_origin(guest) {
            let (what, keys) = match guest.kind() {
                GuestKind::Container => (
                    "an OS template or a clone source",
                    "`template` or `clone_from_ctid`",
                ),
                GuestKind::Vm => (
                    "a cloud image or a clone source",
                    "`template_image` or `clone_from_vmid`",
                ),
            };
            problems.push(
                Problem::error(
                    "phoenix::guest::no_origin",
                    guest.file,
                    guest.pointer.clone(),
                    format!("{} has nothing to be created from", guest.describe()),
                )
                .on_key()
                .with_label(format!("needs {what}"))
                .with_help(format!("set {keys}")),
            );
        }
        for (index, &dependency) in guest.dependencies.iter().enumerate() {
            let pointer = guest.pointer_to(&format!("dependencies/{index}"));
            if dependency == guest.id {
                continue; // Reported as a cycle of one.
            }
            if estate.guest(dependency).is_none() {
                problems.push(unknown_guest(
                    estate,
                    guest.file,
                    pointer,
                    dependency,
                    "dependency",
                ));
            }
        }
    }
}

/// Whether the guest can be created: from a template or image, or, for a guest `phoenix import` adopted,
/// not at all (it exists; the plan says so if it is ever gone).
fn has_origin(guest: &Guest) -> bool {
    match &guest.spec {
        GuestSpec::Container(container) => container.template.is_some() || container.adopted,
        GuestSpec::Vm(vm) => vm.template_image.is_some() || vm.adopted,
    }
}

fn unknown_guest(estate: &Estate, file: FileKind, pointer: String, id: u32, role: &str) -> Problem {
    let known: Vec<String> = estate.guests().keys().map(u32::to_string).collect();
    let typed = id.to_string();
    let problem = Problem::error(
        "phoenix::reference::unknown_guest",
        file,
        pointer,
        format!("{role} {id} is not declared"),
    )
    .with_label("no container or VM has this ID");
    match did_you_mean(&typed, known.iter().map(String::as_str)) {
        Some(suggestion) => {
            problem.with_help(format!("did you mean {suggestion}? Otherwise declare guest {id}"))
        }
        None => problem.with_help(format!(
            "declare guest {id} in the LXC or VM file, or remove the reference"
        )),
    }
}

fn check_cycles(estate: &Estate, problems: &mut Vec<Problem>) {
    for cycle in DependencyGraph::of(estate).cycles() {
        let first = &estate.guests()[&cycle[0]];
        let next = cycle.get(1).copied().unwrap_or(cycle[0]);
        let pointer = if first.clone_from == Some(next) {
            first.clone_pointer()
        } else {
            let index = first.dependencies.iter().position(|&id| id == next).unwrap_or(0);
            first.pointer_to(&format!("dependencies/{index}"))
        };
        let path: Vec<String> = cycle
            .iter()
            .chain(std::iter::once(&cycle[0]))
            .map(u32::to_string)
            .collect();
        problems.push(
            Problem::error(
                "phoenix::graph::cycle",
                first.file,
                pointer,
                format!("dependency cycle: {}", path.join(" -> ")),
            )
            .with_label("this edge closes the cycle")
            .with_help("remove one of these dependencies: a guest cannot wait for itself"),
        );
    }
}

/// A static address claimed by a guest or the host, for uniqueness.
struct Claim {
    owner: String,
    file: FileKind,
    pointer: String,
}

fn check_addresses(estate: &Estate, problems: &mut Vec<Problem>) {
    let mut claims: BTreeMap<IpAddr, Claim> = BTreeMap::new();
    let hypervisor = &estate.files().hypervisor;
    if let Some(network) = &hypervisor.network {
        for (index, interface) in network.interfaces.iter().enumerate() {
            // A single interface may be written as the object itself; placement then drops the `/0`.
            let base = format!("/network/interfaces/{index}");
            let address = interface.address.as_deref();
            let claimed = check_static_address(
                FileKind::Hypervisor,
                &base,
                address.map(|address| ("address", address)),
                interface.gateway.as_deref().map(|gateway| ("gateway", gateway)),
                problems,
            );
            if let Some(ip) = claimed {
                let owner = format!("host interface {}", interface.name);
                claim(
                    &mut claims,
                    ip,
                    Claim {
                        owner,
                        file: FileKind::Hypervisor,
                        pointer: format!("{base}/address"),
                    },
                    problems,
                );
            }
            for (dns_index, server) in interface.dns_nameservers.iter().enumerate() {
                check_ip(
                    FileKind::Hypervisor,
                    format!("{base}/dns_nameservers/{dns_index}"),
                    server,
                    problems,
                );
            }
        }
        for (key, value) in [
            ("portainer_server_ip", &network.portainer_server_ip),
            ("nfs_server", &network.nfs_server),
            ("fallback_dns", &network.fallback_dns),
        ] {
            if let Some(value) = value {
                check_ip(FileKind::Hypervisor, format!("/network/{key}"), value, problems);
            }
        }
        if let Some(subnet) = &network.default_subnet
            && !matches!(parse_interface_address(subnet), Ok(InterfaceAddress::Static(_)))
        {
            problems.push(bad_address(
                FileKind::Hypervisor,
                "/network/default_subnet".into(),
                subnet,
                "a CIDR",
            ));
        }
    }

    for guest in estate.guests().values() {
        let (network_key, ip, gateway, nameservers) = match &guest.spec {
            GuestSpec::Container(container) => match &container.network_config {
                Some(network) => (
                    "network_config",
                    network.ip.as_str(),
                    network.gw.as_deref(),
                    network.nameservers.as_deref(),
                ),
                None => continue,
            },
            GuestSpec::Vm(vm) => match &vm.network_config {
                Some(network) => (
                    "network_config",
                    network.ip.as_str(),
                    network.gw.as_deref(),
                    network.nameserver.as_deref(),
                ),
                None => continue,
            },
        };
        let base = guest.pointer_to(network_key);
        let claimed = check_static_address(
            guest.file,
            &base,
            Some(("ip", ip)),
            gateway.map(|gateway| ("gw", gateway)),
            problems,
        );
        if let Some(address) = claimed {
            let claim_record = Claim {
                owner: guest.describe(),
                file: guest.file,
                pointer: format!("{base}/ip"),
            };
            claim(&mut claims, address, claim_record, problems);
        }
        if let Some(nameservers) = nameservers {
            let key = if guest.kind() == GuestKind::Container {
                "nameservers"
            } else {
                "nameserver"
            };
            for server in split_list(nameservers) {
                if check_ip(guest.file, format!("{base}/{key}"), server, problems).is_none() {
                    break;
                }
            }
        }
        if let GuestSpec::Vm(vm) = &guest.spec {
            for (index, record) in vm.dns_records.iter().enumerate() {
                check_ip(
                    guest.file,
                    guest.pointer_to(&format!("dns_records/{index}/ip")),
                    &record.ip,
                    problems,
                );
            }
        }
    }
}

/// Checks an interface address and its gateway; returns the address when it is static and valid.
fn check_static_address(
    file: FileKind,
    base: &str,
    address: Option<(&str, &str)>,
    gateway: Option<(&str, &str)>,
    problems: &mut Vec<Problem>,
) -> Option<IpAddr> {
    let (address_key, address_text) = address?;
    let parsed = match parse_interface_address(address_text) {
        Ok(parsed) => parsed,
        Err(reason) => {
            problems.push(
                Problem::error(
                    "phoenix::network::bad_address",
                    file,
                    format!("{base}/{address_key}"),
                    reason,
                )
                .with_label("not an interface address")
                .with_help("write `dhcp` or an address with its prefix length, such as `10.0.0.12/24`"),
            );
            return None;
        }
    };
    let InterfaceAddress::Static(network) = parsed else {
        return None;
    };
    if let Some((gateway_key, gateway_text)) = gateway {
        let pointer = format!("{base}/{gateway_key}");
        if let Some(gateway) = check_ip(file, pointer.clone(), gateway_text, problems)
            && !network.contains(&gateway)
        {
            problems.push(
                Problem::error(
                    "phoenix::network::gateway_outside_subnet",
                    file,
                    pointer,
                    format!("gateway {gateway} is outside the subnet {}", network.trunc()),
                )
                .with_label("not reachable without a router")
                .with_help(format!(
                    "use a gateway inside {} or fix the prefix length",
                    network.trunc()
                )),
            );
        }
    }
    Some(network.addr())
}

fn claim(claims: &mut BTreeMap<IpAddr, Claim>, address: IpAddr, claim: Claim, problems: &mut Vec<Problem>) {
    if let Some(first) = claims.get(&address) {
        problems.push(
            Problem::error(
                "phoenix::network::duplicate_ip",
                claim.file,
                claim.pointer,
                format!("{address} is also the address of {}", first.owner),
            )
            .with_label("address already taken")
            .with_help(format!(
                "give {} an address of its own (the first claim is at {})",
                claim.owner, first.pointer
            )),
        );
    } else {
        claims.insert(address, claim);
    }
}

fn check_ip(file: FileKind, pointer: String, text: &str, problems: &mut Vec<Problem>) -> Option<IpAddr> {
    match parse_ip(text) {
        Ok(ip) => Some(ip),
        Err(_) => {
            problems.push(bad_address(file, pointer, text, "an IP address"));
            None
        }
    }
}

fn bad_address(file: FileKind, pointer: String, text: &str, expected: &str) -> Problem {
    Problem::error(
        "phoenix::network::bad_address",
        file,
        pointer,
        format!("`{text}` is not {expected}"),
    )
    .with_label(format!("expected {expected}"))
    .with_help("write addresses as `10.0.0.5` (or `10.0.0.0/24` where a network is meant)")
}

fn check_macs(estate: &Estate, problems: &mut Vec<Problem>) {
    let mut seen: HashMap<[u8; 6], &Guest> = HashMap::new();
    for guest in estate.guests().values() {
        let mac = match &guest.spec {
            GuestSpec::Container(container) => container.mac_address.as_deref(),
            GuestSpec::Vm(vm) => vm.mac_address.as_deref(),
        };
        let Some(mac) = mac else { continue };
        let pointer = guest.pointer_to("mac_address");
        match parse_mac(mac) {
            Err(reason) => problems.push(
                Problem::error("phoenix::network::bad_mac", guest.file, pointer, reason)
                    .with_label("not a MAC address")
                    .with_help("write six hex pairs separated by colons, such as `BC:24:11:4F:00:01`"),
            ),
            Ok(bytes) if bytes[0] & 1 == 1 => problems.push(
                Problem::error(
                    "phoenix::network::multicast_mac",
                    guest.file,
                    pointer,
                    format!("`{mac}` is a multicast address"),
                )
                .with_label("multicast bit set")
                .with_help("the first byte of a NIC's MAC must be even; Proxmox uses the prefix `BC:24:11`"),
            ),
            Ok(bytes) => {
                if let Some(first) = seen.get(&bytes) {
                    problems.push(
                        Problem::error(
                            "phoenix::network::duplicate_mac",
                            guest.file,
                            pointer,
                            format!("MAC address {mac} is also used by {}", first.describe()),
                        )
                        .with_label("duplicate MAC")
                        .with_help(
                            "give each guest its own MAC address, or remove it and let Proxmox generate one",
                        ),
                    );
                } else {
                    seen.insert(bytes, guest);
                }
            }
        }
    }
}

/// Two guests with one name: Proxmox allows it, but a name is a host name. The DNS sync step publishes one
/// record per name (the second guest's would replace the first's), and people and logs tell guests apart by
/// name. DNS names ignore case, so neither does this check.
fn check_guest_names(estate: &Estate, problems: &mut Vec<Problem>) {
    let mut seen: HashMap<String, &Guest> = HashMap::new();
    for guest in estate.guests().values() {
        let name = guest.name().to_ascii_lowercase();
        let Some(first) = seen.get(&name) else {
            seen.insert(name, guest);
            continue;
        };
        problems.push(
            Problem::error(
                "phoenix::guest::duplicate_name",
                guest.file,
                guest.pointer_to("name"),
                format!("{} has the same name as {}", guest.describe(), first.describe()),
            )
            .with_label("name already taken")
            .with_help(
                "give each guest its own name: a name is the guest's host name, and the DNS sync step publishes one \
                 record per name, so one of the two would silently lose its record (DNS ignores case)",
            ),
        );
    }
}

fn check_traefik_names(estate: &Estate, problems: &mut Vec<Problem>) {
    let mut seen: HashMap<&str, &Guest> = HashMap::new();
    for guest in estate.guests().values() {
        let service = match &guest.spec {
            GuestSpec::Container(container) => container.traefik_service.as_ref(),
            GuestSpec::Vm(vm) => vm.traefik_service.as_ref(),
        };
        let Some(service) = service else { continue };
        if let Some(first) = seen.insert(service.name.as_str(), guest) {
            seen.insert(service.name.as_str(), first);
            problems.push(
                Problem::error(
                    "phoenix::traefik::duplicate_service",
                    guest.file,
                    guest.pointer_to("traefik_service/name"),
                    format!(
                        "Traefik service `{}` is also declared by {}",
                        service.name,
                        first.describe()
                    ),
                )
                .with_label("duplicate service name")
                .with_help("service names become router names and host names: make each unique"),
            );
        }
    }
}

/// The internal DNS view's server: its upstreams are addresses (`9.9.9.9`, or `9.9.9.9#5353` with a port),
/// and the container it runs in is a declared container.
fn check_dns(estate: &Estate, problems: &mut Vec<Problem>) {
    let Some(server) = &estate.files().hypervisor.dns_server else {
        return;
    };
    for (index, upstream) in server.upstream_servers.iter().enumerate() {
        let (address, port) = upstream.split_once('#').unwrap_or((upstream, "53"));
        if address.parse::<IpAddr>().is_err() || port.parse::<u16>().is_err() {
            problems.push(
                Problem::error(
                    "phoenix::dns::bad_upstream",
                    FileKind::Hypervisor,
                    format!("/dns_server/upstream_servers/{index}"),
                    format!("`{upstream}` is not an upstream DNS server"),
                )
                .with_help("write an IP address, with `#port` after it for another port than 53"),
            );
        }
    }
    if let Some(ctid) = server.container
        && !estate
            .guests()
            .get(&ctid)
            .is_some_and(|guest| matches!(guest.spec, GuestSpec::Container(_)))
    {
        problems.push(
            Problem::error(
                "phoenix::dns::unknown_container",
                FileKind::Hypervisor,
                "/dns_server/container",
                format!("the DNS server's container {ctid} is not declared"),
            )
            .with_help(
                "name the CTID of the container dnsmasq runs in, or leave it out to run it on the node",
            ),
        );
    }
}

fn check_stacks(estate: &Estate, problems: &mut Vec<Problem>) {
    let stacks = &estate.files().stacks.docker_stacks;
    for (name, stack) in stacks {
        if stack.git.is_some() && !stack.compose_file_path.is_empty() {
            problems.push(
                Problem::error(
                    "phoenix::stack::git_and_compose_file",
                    FileKind::Stacks,
                    format!("/docker_stacks/{}/compose_file_path", escape_pointer_token(name)),
                    format!("stack `{name}` names both a compose file and a Git repository"),
                )
                .with_help("keep one: `git.compose_file` is the compose file's path in the repository"),
            );
        }
    }
    for guest in estate.guests().values() {
        let GuestSpec::Vm(vm) = &guest.spec else { continue };
        for (index, chosen) in vm.docker_stacks.iter().enumerate() {
            let name = chosen.name();
            if let Some(stack) = stacks.get(name) {
                let environment = chosen.environment();
                // A stack without environments runs with nothing set; one with them must have this one.
                let has_it = stack.environments.contains_key(environment)
                    || (stack.environments.is_empty() && environment == crate::traefik::DEFAULT_ENVIRONMENT);
                if !has_it {
                    let pointer = match chosen {
                        StackRef::Name(_) => format!("docker_stacks/{index}"),
                        StackRef::In { .. } => format!("docker_stacks/{index}/environment"),
                    };
                    let problem = Problem::error(
                        "phoenix::stack::unknown_environment",
                        guest.file,
                        guest.pointer_to(&pointer),
                        format!("stack `{name}` has no environment `{environment}`"),
                    )
                    .with_label("no such environment");
                    let known = stack.environments.keys().map(String::as_str);
                    problems.push(match did_you_mean(environment, known) {
                        Some(suggestion) => problem.with_help(format!("did you mean `{suggestion}`?")),
                        None => problem.with_help(format!(
                            "its environments are {}; name one as {{\"name\": \"{name}\", \"environment\": ...}}",
                            stack
                                .environments
                                .keys()
                                .map(|known| format!("`{known}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                    });
                }
                let rules = stack
                    .environments
                    .get(environment)
                    .is_some_and(|environment| !environment.firewall_rules.is_empty());
                if rules && vm.firewall.is_none() {
                    problems.push(
                        Problem::warning(
                            "phoenix::stack::firewall_unmanaged",
                            guest.file,
                            guest.pointer_to(&format!("docker_stacks/{index}")),
                            format!(
                                "stack `{name}` declares firewall rules, but {} has no `firewall`: they are not applied",
                                guest.describe()
                            ),
                        )
                        .with_label("its rules are left out")
                        .with_help("give the VM a `firewall` section (its rules and the stacks' are then Phoenix's)"),
                    );
                }
                if stack.git.is_some() && vm.portainer_role == Some(PortainerRole::Primary) {
                    problems.push(
                        Problem::error(
                            "phoenix::stack::git_on_server",
                            guest.file,
                            guest.pointer_to(&format!("docker_stacks/{index}")),
                            format!(
                                "stack `{name}` comes from Git, which only Portainer deploys, and {} runs Portainer's server",
                                guest.describe()
                            ),
                        )
                        .with_label("deployed before Portainer")
                        .with_help("run it on an `agent` VM, or give it a compose file in the configuration directory"),
                    );
                }
                continue;
            }
            let problem = Problem::error(
                "phoenix::stack::unknown",
                guest.file,
                guest.pointer_to(&format!("docker_stacks/{index}")),
                format!("stack `{name}` is not declared"),
            )
            .with_label("no such stack");
            problems.push(match did_you_mean(name, stacks.keys().map(String::as_str)) {
                Some(suggestion) => problem.with_help(format!("did you mean `{suggestion}`?")),
                None => problem.with_help(format!(
                    "declare `{name}` under `docker_stacks` in phoenix_stacks_config.json"
                )),
            });
        }
    }
}

fn check_portainer(estate: &Estate, problems: &mut Vec<Problem>) {
    let role_of = |guest: &Guest| match &guest.spec {
        GuestSpec::Container(container) => container.portainer_role.unwrap_or_default(),
        GuestSpec::Vm(vm) => vm.portainer_role.unwrap_or_default(),
    };
    let primaries: Vec<&Guest> = estate
        .guests()
        .values()
        .filter(|guest| role_of(guest) == PortainerRole::Primary)
        .collect();
    for extra in primaries.iter().skip(1) {
        problems.push(
            Problem::error(
                "phoenix::portainer::several_primaries",
                extra.file,
                extra.pointer_to("portainer_role"),
                format!(
                    "{} is a second Portainer primary, after {}",
                    extra.describe(),
                    primaries[0].describe()
                ),
            )
            .with_label("second primary")
            .with_help("keep one `primary`; make the others `agent`"),
        );
    }
    if primaries.is_empty() {
        for agent in estate
            .guests()
            .values()
            .filter(|guest| role_of(guest) == PortainerRole::Agent)
        {
            problems.push(
                Problem::error(
                    "phoenix::portainer::agent_without_primary",
                    agent.file,
                    agent.pointer_to("portainer_role"),
                    format!(
                        "{} is a Portainer agent but no guest is the primary",
                        agent.describe()
                    ),
                )
                .with_label("agent of nothing")
                .with_help("give one VM `\"portainer_role\": \"primary\"`"),
            );
        }
    }
    for guest in estate.guests().values() {
        if let GuestSpec::Vm(vm) = &guest.spec
            && !vm.docker_stacks.is_empty()
            && role_of(guest) == PortainerRole::None
        {
            problems.push(
                Problem::error(
                    "phoenix::portainer::stacks_without_role",
                    guest.file,
                    guest.pointer_to("docker_stacks"),
                    format!("{} runs stacks but is not a Portainer node", guest.describe()),
                )
                .with_label("stacks are deployed through Portainer")
                .with_help("set `portainer_role` to `agent` (or `primary`)"),
            );
        }
    }
}

fn check_firewalls(estate: &Estate, problems: &mut Vec<Problem>) {
    let hypervisor = &estate.files().hypervisor;
    let host = hypervisor
        .firewall
        .as_ref()
        .or(hypervisor.shared_volumes.legacy_firewall.as_ref());
    let list = |file: FileKind, in_group: bool| firewall::RuleList { file, host, in_group };
    for (base, declared) in [
        ("/firewall", hypervisor.firewall.as_ref()),
        (
            "/shared_volumes/firewall",
            hypervisor.shared_volumes.legacy_firewall.as_ref(),
        ),
    ] {
        let Some(declared) = declared else { continue };
        let rules_of = |pointer: String, rules, in_group, problems: &mut Vec<Problem>| {
            let list = firewall::RuleList {
                file: FileKind::Hypervisor,
                host: Some(declared),
                in_group,
            };
            firewall::check_rules(list, &pointer, rules, problems);
        };
        rules_of(
            format!("{base}/global_firewall_rules"),
            &declared.global_firewall_rules,
            false,
            problems,
        );
        for (name, group) in &declared.security_groups {
            let pointer = format!("{base}/security_groups/{}/rules", escape_pointer_token(name));
            rules_of(pointer, &group.rules, true, problems);
        }
        if let Some(node) = &declared.node {
            rules_of(format!("{base}/node/rules"), &node.rules, false, problems);
        }
        firewall::check_objects(declared, base, problems);
    }
    for guest in estate.guests().values() {
        let guest_firewall = match &guest.spec {
            GuestSpec::Container(container) => container.firewall.as_ref(),
            GuestSpec::Vm(vm) => vm.firewall.as_ref(),
        };
        if let Some(guest_firewall) = guest_firewall {
            firewall::check_rules(
                list(guest.file, false),
                &guest.pointer_to("firewall/rules"),
                &guest_firewall.rules,
                problems,
            );
        }
    }
    for (name, stack) in &estate.files().stacks.docker_stacks {
        for (environment_name, environment) in &stack.environments {
            let pointer = format!(
                "/docker_stacks/{}/environments/{}/firewall_rules",
                escape_pointer_token(name),
                escape_pointer_token(environment_name)
            );
            firewall::check_rules(
                list(FileKind::Stacks, false),
                &pointer,
                &environment.firewall_rules,
                problems,
            );
        }
    }
}

fn check_features(estate: &Estate, options: &CheckOptions, problems: &mut Vec<Problem>) {
    let known: BTreeSet<&str> = features::CATALOGUE
        .iter()
        .map(|feature| feature.name)
        .chain(options.extra_features.iter().map(String::as_str))
        .collect();
    for guest in estate.guests().values() {
        let list = match &guest.spec {
            GuestSpec::Container(container) => &container.features,
            GuestSpec::Vm(vm) => &vm.features,
        };
        for (index, feature) in list.iter().enumerate() {
            if known.contains(feature.as_str()) {
                continue;
            }
            let problem = Problem::error(
                "phoenix::feature::unknown",
                guest.file,
                guest.pointer_to(&format!("features/{index}")),
                format!("unknown feature `{feature}`"),
            )
            .with_label("not in the catalogue");
            problems.push(match did_you_mean(feature, known.iter().copied()) {
                Some(suggestion) => problem.with_help(format!("did you mean `{suggestion}`?")),
                None => problem.with_help(format!(
                    "shipped features: {}; add your own as features/{feature}.sh in the config directory",
                    known.iter().copied().collect::<Vec<_>>().join(", ")
                )),
            });
        }
    }
}

fn check_storage(files: &ConfigFiles, problems: &mut Vec<Problem>) {
    let hypervisor = &files.hypervisor;
    let declared: BTreeSet<String> = hypervisor
        .zfs
        .iter()
        .flat_map(|zfs| {
            zfs.datasets
                .iter()
                .filter_map(|dataset| dataset.proxmox_storage_id())
        })
        .chain(hypervisor.proxmox_storage_ids.values().cloned())
        .chain(
            hypervisor
                .proxmox_storages
                .iter()
                .map(|storage| storage.id.clone()),
        )
        .chain(nfs_storages(hypervisor).map(|(_, storage)| storage.id.clone()))
        .collect();
    check_storage_ids(hypervisor, problems);
    let mut report = |file: FileKind, pointer: String, storage: Option<&str>| {
        let Some(storage) = storage.filter(|storage| !declared.contains(*storage)) else {
            return;
        };
        let problem = Problem::warning(
            "phoenix::storage::undeclared",
            file,
            pointer,
            format!("storage `{storage}` is not declared by the host configuration"),
        )
        .with_label("unknown storage");
        problems.push(match did_you_mean(storage, declared.iter().map(String::as_str)) {
            Some(suggestion) => problem.with_help(format!("did you mean `{suggestion}`?")),
            None => problem.with_help(
                "declare it as a ZFS dataset with `proxmox_storage_type`, in `proxmox_storage_ids`, or in `proxmox_storages`",
            ),
        });
    };
    // Storages are checked where they are written, so a default is reported once, at the default.
    let lxc_defaults = hypervisor
        .proxmox_defaults
        .as_ref()
        .and_then(|defaults| defaults.lxc.as_ref());
    let default_pool = lxc_defaults.and_then(|lxc| lxc.storage_pool.as_deref());
    report(
        FileKind::Hypervisor,
        "/proxmox_defaults/lxc/storage_pool".into(),
        default_pool,
    );
    for (ctid, container) in &files.lxc.lxc_configs {
        let base = format!("/lxc_configs/{}", escape_pointer_token(ctid));
        report(
            FileKind::Lxc,
            format!("{base}/storage_pool"),
            container.storage_pool.as_deref(),
        );
        let template_storage = container
            .template
            .as_deref()
            .and_then(|template| template.split_once(':'))
            .map(|(storage, _)| storage);
        report(FileKind::Lxc, format!("{base}/template"), template_storage);
        for (index, volume) in container.zfs_volumes.iter().enumerate() {
            report(
                FileKind::Lxc,
                format!("{base}/zfs_volumes/{index}/pool"),
                Some(&volume.pool),
            );
        }
    }
    report(
        FileKind::Vm,
        "/vm_defaults/storage_pool".into(),
        files.vm.vm_defaults.storage_pool.as_deref(),
    );
    for (index, vm) in files.vm.vms.iter().enumerate() {
        report(
            FileKind::Vm,
            format!("/vms/{index}/storage_pool"),
            vm.storage_pool.as_deref(),
        );
    }
}

/// The `nfs` storages of the exports, with each one's export index.
fn nfs_storages(hypervisor: &HypervisorFile) -> impl Iterator<Item = (usize, &NfsStorage)> {
    hypervisor
        .nfs
        .iter()
        .flat_map(|nfs| nfs.exports.iter())
        .enumerate()
        .filter_map(|(index, export)| Some((index, export.proxmox_storage.as_ref()?)))
}

/// A storage ID that two declarations register is an error at the second: Proxmox has one storage per ID.
fn check_storage_ids(hypervisor: &HypervisorFile, problems: &mut Vec<Problem>) {
    let mut seen: BTreeMap<&str, String> = BTreeMap::new();
    let datasets = hypervisor
        .zfs
        .iter()
        .flat_map(|zfs| zfs.datasets.iter().enumerate());
    let mut registered: Vec<(String, String)> = datasets
        .filter_map(|(index, dataset)| {
            let key = if dataset.storage_id.is_some() {
                "/storage_id"
            } else {
                ""
            };
            Some((
                dataset.proxmox_storage_id()?,
                format!("/zfs/datasets/{index}{key}"),
            ))
        })
        .collect();
    registered.extend(nfs_storages(hypervisor).map(|(index, storage)| {
        (
            storage.id.clone(),
            format!("/nfs/exports/{index}/proxmox_storage/id"),
        )
    }));
    registered.extend(
        hypervisor
            .proxmox_storages
            .iter()
            .enumerate()
            .map(|(index, storage)| (storage.id.clone(), format!("/proxmox_storages/{index}/id"))),
    );
    for (id, pointer) in &registered {
        if let Some(first) = seen.get(id.as_str()) {
            problems.push(
                Problem::error(
                    "phoenix::storage::duplicate_id",
                    FileKind::Hypervisor,
                    pointer.clone(),
                    format!("the storage ID {id} is declared already, at {first}"),
                )
                .with_label("second declaration")
                .with_help("give each storage its own ID (a dataset's default is `<pool>-<name>`)"),
            );
        } else {
            seen.insert(id, pointer.clone());
        }
    }
}

fn check_nodes(estate: &Estate, problems: &mut Vec<Problem>) {
    let Some(connection) = &estate.files().hypervisor.proxmox else {
        return;
    };
    if connection.nodes.is_empty() {
        return;
    }
    for guest in estate.guests().values() {
        match &guest.node {
            Some(node) if !connection.nodes.contains(node) => problems.push(
                Problem::error(
                    "phoenix::node::unknown",
                    guest.file,
                    guest.pointer_to("node"),
                    format!("node `{node}` is not one of the connection's nodes"),
                )
                .with_label("unknown node")
                .with_help(format!(
                    "use one of: {} (or add it to `proxmox.nodes`)",
                    connection.nodes.join(", ")
                )),
            ),
            Some(_) => {}
            // A declared placement rule chooses a node for it.
            None if connection.placement.is_some() => {}
            None => problems.push(
                Problem::error(
                    "phoenix::node::unspecified",
                    guest.file,
                    guest.pointer.clone(),
                    format!("{} does not say which node it runs on", guest.describe()),
                )
                .on_key()
                .with_label("no node")
                .with_help(format!(
                    "the cluster has several nodes: set `node` to one of {}, or let `proxmox.placement` choose (`first_node` or `most_free_memory`)",
                    connection.nodes.join(", ")
                )),
            ),
        }
    }
}

fn check_shared_volumes(estate: &Estate, problems: &mut Vec<Problem>) {
    for (name, volume) in &estate.files().hypervisor.shared_volumes.volumes {
        for ctid in volume.mounts.keys() {
            let declared = ctid.parse::<u32>().ok().and_then(|id| estate.guest(id));
            if declared.is_some_and(|guest| guest.kind() == GuestKind::Container) {
                continue;
            }
            problems.push(
                Problem::warning(
                    "phoenix::shared_volume::unknown_container",
                    FileKind::Hypervisor,
                    format!(
                        "/shared_volumes/{}/mounts/{}",
                        escape_pointer_token(name),
                        escape_pointer_token(ctid)
                    ),
                    format!("shared volume `{name}` is mounted into container {ctid}, which is not declared"),
                )
                .on_key()
                .with_label("no such container")
                .with_help("remove the mount or declare the container; the mount is skipped until then"),
            );
        }
    }
}
