//! Desired resources: what the configuration asks for, one per address, with the edges between them.
//!
//! [`resources`] turns a validated [`Estate`] into resources: host steps first, then guests (edges from
//! `clone_from_*` and `dependencies`), then stacks after their VM, then sync steps after the guests they publish.
//! Every desired state is typed, so that managers read configuration structs, not JSON; JSON appears only in
//! [`Resource::declared_fields`], the view plans diff and print.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::config::PortainerRole;
use crate::config::hypervisor::{
    HostFirewall, HostInterface, HostUser, HypervisorFile, Nfs, NfsExport, NvidiaDriver, RepositoryChannel,
    Retention, Samba, StorageType, Zfs, ZfsDataset, ZfsPool,
};
use crate::config::stacks::{Stack, StacksFile};
use crate::config::{ContainerConfig, VmConfig};
use crate::engine::access::{AccessStep, access_steps};
use crate::engine::address::{Address, ResourceKind};
use crate::engine::host_firewall::{self, FirewallPart};
pub use crate::lint::checks::legacy::is_sensitive_name;
use crate::model::{Estate, GuestSpec};
use crate::traefik::{self, DynamicConfig};

/// One thing Phoenix converges.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Its stable address.
    pub address: Address,
    /// A short human name (`gateway`), when it has one.
    pub name: Option<String>,
    /// Resources that must be converged first.
    pub depends_on: Vec<Address>,
    /// Resources worked on first when they are in the same run, whether they succeed or not: an order,
    /// not a prerequisite (a target does not bring them into scope, and their failure skips nothing).
    pub after: Vec<Address>,
    /// The Proxmox node it lives on, for per-node limits.
    pub node: Option<String>,
    /// The storage its disks are created on, for per-storage limits.
    pub storage: Option<String>,
    /// What the configuration asks for.
    pub desired: Desired,
}

/// The desired state of a resource, by kind.
#[derive(Debug, Clone)]
pub enum Desired {
    /// A host step, with the piece of host configuration it converges.
    Host(HostStep),
    /// A container with defaults merged.
    Container(std::sync::Arc<ContainerConfig>),
    /// A VM with defaults merged.
    Vm(Box<VmConfig>),
    /// A stack on a VM.
    Stack(Box<Stack>),
    /// The Portainer server or one of its environments.
    Portainer(PortainerStep),
    /// A sync step, with the data it publishes.
    Sync(SyncStep),
}

/// The Portainer that stacks are deployed through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortainerStep {
    /// `portainer/server`: the server answers, and has its administrator.
    Server {
        /// The administrator's user name.
        admin_user: String,
    },
    /// `portainer/docker/<vmid>`: the server's or an agent's container, run with Docker on the VM
    /// before Portainer can deploy anything.
    Container {
        /// The VM.
        vmid: u32,
        /// What runs.
        run: DockerRun,
    },
    /// `portainer/endpoint/<vmid>`: the environment of an agent VM.
    Endpoint {
        /// The VM.
        vmid: u32,
        /// Its name in Portainer (`portainer_environment_name`, else the VM's name).
        name: String,
        /// `tcp://<VM address>:<agent port>`.
        url: String,
    },
}

/// A container Phoenix runs itself (`docker run`), where Portainer cannot: Portainer's server and agents.
/// It is compared by what it was run with, which Phoenix records on it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DockerRun {
    /// The container's name.
    pub container: String,
    /// The image, as configured (`portainer/agent:lts`).
    pub image: String,
    /// Published ports, `host:container`.
    pub ports: Vec<String>,
    /// Mounts, `source:target`.
    pub volumes: Vec<String>,
    /// Arguments after the image.
    pub args: Vec<String>,
}

/// The Portainer server's container name, and its agents'.
pub const SERVER_CONTAINER: &str = "portainer";
/// The Portainer agent's container name.
pub const AGENT_CONTAINER: &str = "portainer_agent";

impl DockerRun {
    /// The Portainer server from `image`, its HTTPS port published on `port`.
    pub fn server(image: &str, port: u16) -> DockerRun {
        DockerRun {
            container: SERVER_CONTAINER.to_owned(),
            image: image.to_owned(),
            ports: vec![format!("{port}:9443")],
            volumes: vec![
                "/var/run/docker.sock:/var/run/docker.sock".to_owned(),
                "portainer_data:/data".to_owned(),
            ],
            args: Vec::new(),
        }
    }

    /// A Portainer agent from `image`, listening on `port`.
    pub fn agent(image: &str, port: u16) -> DockerRun {
        DockerRun {
            container: AGENT_CONTAINER.to_owned(),
            image: image.to_owned(),
            ports: vec![format!("{port}:9001")],
            volumes: vec![
                "/var/run/docker.sock:/var/run/docker.sock".to_owned(),
                "/var/lib/docker/volumes:/var/lib/docker/volumes".to_owned(),
            ],
            args: Vec::new(),
        }
    }

    /// The fields it is compared by: what it runs with, and that it runs.
    pub fn fields(&self) -> BTreeMap<String, Value> {
        let mut fields: BTreeMap<String, Value> = match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        fields.insert("running".to_owned(), Value::Bool(true));
        fields
    }
}

/// A host step: the piece of the hypervisor file it converges, as declared there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostStep {
    /// A ZFS pool, at `host/zfs/pool/<name>`.
    ZfsPool(Box<ZfsPool>),
    /// A ZFS dataset, at `host/zfs/dataset/<pool>/<name>`.
    ZfsDataset(Box<ZfsDataset>),
    /// A Proxmox storage registered or converged, at `host/storage/<id>`.
    Storage(Box<ProxmoxStorage>),
    /// The snapshot policies (sanoid) and replication (syncoid) of the datasets, at `host/zfs/snapshots`.
    Snapshots(Box<SnapshotPlan>),
    /// The ARC's upper bound in GiB (`zfs.arc_max_gb`), at `host/zfs/arc`.
    ZfsArc(u32),
    /// The NFS exports of the host, at `host/nfs/exports`; only built when there is at least one export.
    NfsExports(Box<Nfs>),
    /// The Samba shares of the host and its Samba user, at `host/samba`; each share's path is the
    /// directory shared (a dataset's name resolved to where it is mounted).
    Samba(Box<Samba>),
    /// The host firewall, at `host/firewall`, from `firewall` or the legacy `shared_volumes.firewall`.
    Firewall(Box<HostFirewall>),
    /// A Linux user on the host, at `host/user/<username>`.
    User(Box<HostUser>),
    /// The NVIDIA driver, at `host/nvidia`; only built when the driver is to be installed.
    NvidiaDriver(Box<NvidiaDriver>),
    /// The node's timezone, at `host/timezone`, from `timezone`.
    Timezone(String),
    /// The node's resolvers and search domain, at `host/dns`.
    Dns(Box<HostDns>),
    /// The subordinate ID ranges root needs on the node for the containers' `id_maps`, at `host/subids`.
    SubIds(Box<SubIds>),
    /// The Proxmox and Ceph repositories turned on and off, at `host/apt/repositories`.
    AptRepositories(Box<AptRepositories>),
    /// The packages installed on the node, at `host/apt/packages`.
    AptPackages(Box<AptPackages>),
    /// The node's locale, at `host/locale`, from `locale`.
    Locale(String),
    /// An AppArmor profile installed and loaded on the node, at `host/apparmor/<name>`, from
    /// `apparmor_profiles` (its text is the configuration directory's `apparmor/<name>`).
    AppArmor(String),
    /// A Proxmox group, role, user, API token, or the ACL entries, at `host/access/*`.
    Access(Box<AccessStep>),
    /// A security group, alias or IP set of the cluster firewall, or the node's own firewall, at
    /// `host/firewall/<kind>/<name>` and `host/firewall/node`.
    FirewallPart(Box<FirewallPart>),
    /// A bridge of the node (`network.interfaces`), at `host/network/<name>`.
    Bridge(Box<HostInterface>),
}

/// The repository channels of `apt`: the one Proxmox VE channel and the one Ceph channel turned on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AptRepositories {
    /// `apt.proxmox_repository`; without it the Proxmox VE repositories are left as they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxmox: Option<RepositoryChannel>,
    /// `apt.ceph_repository`; without it every Ceph repository is turned off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ceph: Option<RepositoryChannel>,
}

/// A Proxmox storage (`/storage/{id}`): one for each dataset with a `proxmox_storage_type`, and one for
/// each of `proxmox_storages` (which exist already, and whose content types are converged).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProxmoxStorage {
    /// The storage ID.
    pub id: String,
    /// The storage type (`zfspool`, `dir`); `None` for a storage that exists already, of any type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The content types, sorted; empty when not declared (then not compared).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<String>,
    /// The type's settings, by option name: `pool` and `mountpoint` of a `zfspool`, `path` and
    /// `is_mountpoint` of a `dir`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
}

impl ProxmoxStorage {
    /// The storage of a dataset, when it declares a `proxmox_storage_type`.
    fn of_dataset(dataset: &ZfsDataset) -> Option<ProxmoxStorage> {
        let id = dataset.proxmox_storage_id()?;
        let name = format!("{}/{}", dataset.pool, dataset.name);
        let mountpoint = dataset
            .properties
            .iter()
            .flat_map(|text| text.split(','))
            .find_map(|pair| pair.trim().strip_prefix("mountpoint=").map(str::to_owned));
        let mut settings = BTreeMap::new();
        let kind = match dataset.proxmox_storage_type? {
            StorageType::Zfspool => {
                settings.insert("pool".to_owned(), name);
                if let Some(mountpoint) = mountpoint {
                    settings.insert("mountpoint".to_owned(), mountpoint);
                }
                "zfspool"
            }
            StorageType::Dir => {
                settings.insert(
                    "path".to_owned(),
                    mountpoint.unwrap_or_else(|| format!("/{name}")),
                );
                // Proxmox writes nothing there while the dataset is not mounted.
                settings.insert("is_mountpoint".to_owned(), "yes".to_owned());
                "dir"
            }
        };
        Some(ProxmoxStorage {
            id,
            kind: Some(kind.to_owned()),
            content: content_list(
                dataset
                    .proxmox_content_type
                    .iter()
                    .flat_map(|text| text.split(',')),
            ),
            settings,
        })
    }

    /// The `nfs` storage of an export (its path already the directory exported), when it declares one
    /// and a server is known.
    fn of_export(hypervisor: &HypervisorFile, export: &NfsExport) -> Option<ProxmoxStorage> {
        let declared = export.proxmox_storage.as_ref()?;
        let server = declared.server.clone().or_else(|| {
            hypervisor
                .network
                .as_ref()
                .and_then(|network| network.nfs_server.clone())
        })?;
        let base = hypervisor.mount_point_base.as_deref().unwrap_or("/mnt/pve");
        let mut settings = BTreeMap::from([
            ("server".to_owned(), server),
            ("export".to_owned(), export.path.clone()),
            (
                "path".to_owned(),
                format!("{}/{}", base.trim_end_matches('/'), declared.id),
            ),
        ]);
        if let Some(options) = &declared.options {
            settings.insert("options".to_owned(), options.clone());
        }
        Some(ProxmoxStorage {
            id: declared.id.clone(),
            kind: Some("nfs".to_owned()),
            content: content_list(declared.content.iter().map(String::as_str)),
            settings,
        })
    }
}

/// The datasets that follow a snapshot policy, with their replicas.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotPlan {
    /// One per dataset with a `snapshot_policy`, by full name.
    pub datasets: Vec<SnapshotDataset>,
}

/// A dataset under a snapshot policy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotDataset {
    /// `<pool>/<name>`.
    pub dataset: String,
    /// The policy's name.
    pub policy: String,
    /// Snapshots kept of it.
    pub retention: Retention,
    /// Where it is replicated to, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<Replica>,
}

/// A dataset's replica on another pool.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Replica {
    /// `<target pool>/<source pool>/<name>`.
    pub dataset: String,
    /// Snapshots kept of the replica.
    pub retention: Retention,
    /// How often replication runs (a systemd calendar event).
    pub every: String,
}

impl SnapshotPlan {
    /// The datasets of `zfs` that name a declared policy; `None` when there are none.
    fn declared(zfs: &Zfs) -> Option<SnapshotPlan> {
        let datasets: Vec<SnapshotDataset> = zfs
            .datasets
            .iter()
            .filter_map(|dataset| {
                let name = dataset.snapshot_policy.as_ref()?;
                let policy = zfs.snapshot_policies.get(name)?;
                Some(SnapshotDataset {
                    dataset: format!("{}/{}", dataset.pool, dataset.name),
                    policy: name.clone(),
                    retention: policy.source(),
                    replica: dataset.replicate_to.as_ref().map(|target| Replica {
                        dataset: format!("{target}/{}/{}", dataset.pool, dataset.name),
                        retention: policy.replica(),
                        every: policy
                            .replicate_every
                            .clone()
                            .unwrap_or_else(|| "hourly".to_owned()),
                    }),
                })
            })
            .collect();
        (!datasets.is_empty()).then_some(SnapshotPlan { datasets })
    }
}

/// Content types, trimmed, sorted, without repeats.
fn content_list<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut items: Vec<String> = items
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect();
    items.sort_unstable();
    items.dedup();
    items
}

/// The packages the node must have: those `apt.packages` declares and those the other host steps need.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AptPackages {
    /// Package names, sorted, without repeats.
    pub packages: Vec<String>,
}

impl AptPackages {
    /// The packages the hypervisor file asks for, declared or needed (`sudo` for a user with
    /// `sudo_access`, `locales` for a `locale`, `apparmor` for AppArmor profiles, what the NVIDIA driver's install needs, the NFS server for exports),
    /// when there are any.
    pub fn declared(hypervisor: &HypervisorFile) -> Option<AptPackages> {
        let mut packages: Vec<String> = hypervisor
            .apt
            .iter()
            .flat_map(|apt| apt.packages.iter().cloned())
            .collect();
        if hypervisor.users.iter().any(|user| user.sudo_access) {
            packages.push("sudo".to_owned());
        }
        if hypervisor.locale.is_some() {
            packages.push("locales".to_owned());
        }
        if !hypervisor.apparmor_profiles.is_empty() {
            packages.push("apparmor".to_owned());
        }
        if hypervisor
            .nvidia_driver
            .as_ref()
            .is_some_and(|driver| driver.install)
        {
            // `lspci` finds the GPUs, `curl` fetches the runfile, DKMS (with its compiler) builds the module.
            packages.extend(["curl", "dkms", "pciutils"].map(str::to_owned));
        }
        if hypervisor
            .zfs
            .as_ref()
            .is_some_and(|zfs| SnapshotPlan::declared(zfs).is_some())
        {
            // sanoid takes and prunes the snapshots; its syncoid replicates them.
            packages.push("sanoid".to_owned());
        }
        if hypervisor.nfs.as_ref().is_some_and(|nfs| !nfs.exports.is_empty()) {
            // `exportfs` and the NFS server.
            packages.push("nfs-kernel-server".to_owned());
        }
        if hypervisor.samba.is_some() {
            // smbd, `testparm`, `smbcontrol`, `pdbedit` and `smbpasswd`.
            packages.push("samba".to_owned());
        }
        packages.sort_unstable();
        packages.dedup();
        (!packages.is_empty()).then_some(AptPackages { packages })
    }
}

/// Subordinate ID ranges (`/etc/subuid`, `/etc/subgid`) root must own for the containers' ID maps: the
/// usual `100000` range every unprivileged container uses, and each mapped host range.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SubIds {
    /// `(first, count)` ranges of user IDs, sorted.
    pub uids: Vec<(u32, u32)>,
    /// `(first, count)` ranges of group IDs, sorted.
    pub gids: Vec<(u32, u32)>,
}

impl SubIds {
    /// The ranges the estate's containers need, when any container maps IDs.
    pub fn declared(estate: &Estate) -> Option<SubIds> {
        use crate::config::lxc::IdKind;
        let mut uids = vec![(100_000, 65_536)];
        let mut gids = vec![(100_000, 65_536)];
        let mut any = false;
        for guest in estate.guests().values() {
            let GuestSpec::Container(container) = &guest.spec else {
                continue;
            };
            for map in &container.id_maps {
                any = true;
                let ranges = match map.kind {
                    IdKind::Uid => &mut uids,
                    IdKind::Gid => &mut gids,
                };
                ranges.push((map.host_id, map.size));
            }
        }
        for ranges in [&mut uids, &mut gids] {
            ranges.sort_unstable();
            ranges.dedup();
        }
        any.then_some(SubIds { uids, gids })
    }
}

/// The node's DNS settings, as Proxmox keeps them (`/nodes/{node}/dns`): a search domain and up to three
/// resolvers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostDns {
    /// `domain_name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<String>,
    /// The interfaces' `dns_nameservers`, then `network.fallback_dns`, without repeats, at most three.
    pub servers: Vec<String>,
}

impl HostDns {
    /// Proxmox's limit: `dns1` to `dns3`.
    pub const MAX_SERVERS: usize = 3;

    /// The DNS settings the hypervisor file declares, if it declares any; every resolver it names, even
    /// beyond [`HostDns::MAX_SERVERS`] (validation says when there are too many).
    pub fn declared(hypervisor: &HypervisorFile) -> Option<HostDns> {
        let mut servers: Vec<String> = Vec::new();
        let network = hypervisor.network.as_ref();
        let named = network
            .into_iter()
            .flat_map(|network| &network.interfaces)
            .flat_map(|interface| &interface.dns_nameservers)
            .chain(network.and_then(|network| network.fallback_dns.as_ref()));
        for server in named {
            if !servers.contains(server) {
                servers.push(server.clone());
            }
        }
        let search = hypervisor.domain_name.clone();
        (search.is_some() || !servers.is_empty()).then_some(HostDns { search, servers })
    }
}

/// A sync step: what it publishes about the guests.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncStep {
    /// Traefik's dynamic configuration, at `sync/traefik`.
    Traefik(Box<TraefikSync>),
    /// The nginx gateway's site, at `sync/gateway`.
    Gateway(Box<GatewaySync>),
    /// The internal DNS view served by Phoenix's dnsmasq, at `sync/dns/internal`.
    InternalDns(Box<crate::dns::InternalDns>),
    /// A public zone's names, published to its authoritative server, at `sync/dns/public/<zone>`.
    PublicDns(Box<crate::dns::public::PublicZone>),
    /// A certificate issued by ACME, at `sync/certificate/<common name>`.
    Certificate(Box<crate::certificates::CertificateSync>),
}

/// The gateway's site: rendered from its template by the manager, which has the configuration directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GatewaySync {
    /// The container that runs nginx.
    pub container: u32,
    /// Where the site goes in it.
    pub site: String,
    /// The template, relative to the configuration directory.
    pub template: String,
}

/// What the Traefik sync step writes, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct TraefikSync {
    /// The container that runs Traefik (the one with the `traefik` feature).
    pub proxy: u32,
    /// Its dynamic configuration: the routes of guests and stacks.
    pub config: DynamicConfig,
}

impl Resource {
    /// The manager kind that owns it.
    pub fn kind(&self) -> ResourceKind {
        self.address.kind()
    }

    /// The declared fields of the desired state, as JSON, keyed by field name. Keys left unset in the
    /// configuration are absent, so a diff over these fields only covers what the operator declared.
    pub fn declared_fields(&self) -> BTreeMap<String, Value> {
        let value = match &self.desired {
            Desired::Host(step) => host_value(step),
            // Traefik's definitions by name (`router/qdrant`), as the file will say them: an empty object
            // means something there (`tls: {}`), so nothing is pruned.
            Desired::Sync(SyncStep::Traefik(traefik)) => return traefik.config.fields(),
            Desired::Sync(SyncStep::Gateway(gateway)) => to_value(gateway),
            Desired::Sync(SyncStep::InternalDns(view)) => to_value(view),
            Desired::Sync(SyncStep::PublicDns(zone)) => return zone.fields(),
            Desired::Sync(SyncStep::Certificate(certificate)) => return certificate.fields(),
            Desired::Container(container) => to_value(&**container),
            Desired::Vm(vm) => to_value(vm),
            Desired::Stack(stack) => to_value(stack),
            Desired::Portainer(PortainerStep::Server { admin_user }) => {
                serde_json::json!({ "administrator": admin_user })
            }
            Desired::Portainer(PortainerStep::Endpoint { name, url, .. }) => {
                serde_json::json!({ "name": name, "url": url })
            }
            Desired::Portainer(PortainerStep::Container { run, .. }) => return run.fields(),
        };
        match prune(redact(&self.desired, value)) {
            Some(Value::Object(map)) => map.into_iter().collect(),
            Some(other) => BTreeMap::from([("value".to_owned(), other)]),
            None => BTreeMap::new(),
        }
    }
}

/// The mark that replaces a secret written inline, so that plans and logs never show it.
pub const SENSITIVE: &str = "(sensitive)";

/// Replaces inline secrets by [`SENSITIVE`]: a VM user's password, a host user's password hash, and stack
/// variables whose names suggest a secret. References (`{"env": ...}`, `{"file": ...}`) stay: they name, not
/// hold, a secret.
fn redact(desired: &Desired, mut value: Value) -> Value {
    let mask = |slot: Option<&mut Value>| {
        if let Some(slot) = slot.filter(|slot| slot.is_string()) {
            *slot = Value::String(SENSITIVE.to_owned());
        }
    };
    match desired {
        Desired::Vm(_) => mask(value.pointer_mut("/user_config/password")),
        Desired::Host(HostStep::User(_)) => mask(value.pointer_mut("/password_hash")),
        Desired::Host(HostStep::Samba(_)) => mask(value.pointer_mut("/password")),
        Desired::Host(HostStep::Access(_)) => mask(value.pointer_mut("/password")),
        Desired::Stack(_) => {
            let environments = value.get_mut("environments").and_then(Value::as_object_mut);
            for environment in environments.into_iter().flat_map(|map| map.values_mut()) {
                let variables = environment.get_mut("variables").and_then(Value::as_array_mut);
                for variable in variables.into_iter().flatten() {
                    let sensitive = variable
                        .get("name")
                        .and_then(Value::as_str)
                        .is_some_and(is_sensitive_name);
                    if sensitive {
                        mask(variable.get_mut("value"));
                    }
                }
            }
        }
        Desired::Host(_) | Desired::Container(_) | Desired::Sync(_) | Desired::Portainer(_) => {}
    }
    value
}

/// Drops what the configuration leaves unset: nulls, and empty lists and objects, at any depth.
fn prune(value: Value) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::Array(items) => {
            let items: Vec<Value> = items.into_iter().filter_map(prune).collect();
            (!items.is_empty()).then_some(Value::Array(items))
        }
        Value::Object(map) => {
            let map: serde_json::Map<String, Value> = map
                .into_iter()
                .filter_map(|(key, value)| prune(value).map(|value| (key, value)))
                .collect();
            (!map.is_empty()).then_some(Value::Object(map))
        }
        other => Some(other),
    }
}

/// The declared configuration of a host step, as the hypervisor file writes it.
fn host_value(step: &HostStep) -> Value {
    match step {
        HostStep::ZfsPool(pool) => to_value(pool),
        HostStep::ZfsDataset(dataset) => to_value(dataset),
        HostStep::ZfsArc(gib) => serde_json::json!({ "arc_max_gb": gib }),
        HostStep::Snapshots(plan) => to_value(plan),
        HostStep::Storage(storage) => to_value(storage),
        HostStep::NfsExports(nfs) => to_value(nfs),
        HostStep::Firewall(firewall) => {
            // The groups, aliases, IP sets and the node's firewall are resources of their own.
            let cluster = HostFirewall {
                security_groups: BTreeMap::new(),
                aliases: BTreeMap::new(),
                ipsets: BTreeMap::new(),
                node: None,
                ..(**firewall).clone()
            };
            to_value(&cluster)
        }
        HostStep::User(user) => to_value(user),
        HostStep::Samba(samba) => to_value(samba),
        HostStep::NvidiaDriver(driver) => to_value(driver),
        HostStep::Timezone(timezone) => serde_json::json!({ "timezone": timezone }),
        HostStep::Dns(dns) => to_value(dns),
        HostStep::SubIds(ids) => to_value(ids),
        HostStep::AptRepositories(repositories) => to_value(repositories),
        HostStep::AptPackages(packages) => to_value(packages),
        HostStep::Locale(locale) => serde_json::json!({ "locale": locale }),
        HostStep::AppArmor(name) => serde_json::json!({ "profile": name }),
        HostStep::Access(step) => step.declared_value(),
        HostStep::FirewallPart(part) => part.declared_value(),
        HostStep::Bridge(bridge) => to_value(bridge),
    }
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("configuration types serialise to JSON")
}

/// Where an export path written as a declared dataset's name (`/<pool>/<name>`, ZFS's default mount point)
/// is mounted instead, when its mount point is elsewhere (`mount_point_base`): `None` when the path is
/// no such name, or the dataset is mounted there.
pub fn export_mountpoint(hypervisor: &HypervisorFile, path: &str) -> Option<String> {
    let zfs = hypervisor.zfs.as_ref()?;
    let name = path.trim_end_matches('/').strip_prefix('/')?;
    let dataset = zfs
        .datasets
        .iter()
        .find(|dataset| format!("{}/{}", dataset.pool, dataset.name) == name)?;
    let dataset = with_mountpoint(dataset, hypervisor.mount_point_base.as_deref());
    let mountpoint = dataset
        .properties
        .iter()
        .flat_map(|text| text.split(','))
        .find_map(|pair| pair.trim().strip_prefix("mountpoint=").map(str::to_owned))?;
    (mountpoint != path).then_some(mountpoint)
}

/// The directory a Samba share's `path` names: an absolute path as written, unless it is a declared
/// dataset's default mount point; a dataset's name (`pool/name`) where the dataset is mounted.
fn shared_directory(hypervisor: &HypervisorFile, path: &str) -> String {
    let absolute = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    export_mountpoint(hypervisor, &absolute).unwrap_or(absolute)
}

/// A dataset with `mountpoint=<base>/<pool>/<name>` among its properties when the hypervisor file sets
/// `mount_point_base` and the dataset does not say otherwise.
fn with_mountpoint(dataset: &ZfsDataset, base: Option<&str>) -> ZfsDataset {
    let mut dataset = dataset.clone();
    let declared = dataset.properties.as_deref().unwrap_or_default();
    let has = declared
        .split(',')
        .any(|pair| pair.trim().starts_with("mountpoint="));
    if let Some(base) = base.filter(|_| !has) {
        let mountpoint = format!(
            "mountpoint={}/{}/{}",
            base.trim_end_matches('/'),
            dataset.pool,
            dataset.name
        );
        dataset.properties = Some(if declared.trim().is_empty() {
            mountpoint
        } else {
            format!("{declared},{mountpoint}")
        });
    }
    dataset
}

/// Whether a host step is the node's own (its network, packages, pools, ...) rather than the cluster's
/// (the datacenter firewall and its objects, access, storage definitions), which Proxmox keeps once for
/// every node.
pub fn is_per_node(step: &HostStep) -> bool {
    match step {
        HostStep::Firewall(_) | HostStep::Access(_) | HostStep::Storage(_) => false,
        HostStep::FirewallPart(part) => matches!(**part, FirewallPart::Node(_)),
        HostStep::ZfsPool(_)
        | HostStep::ZfsDataset(_)
        | HostStep::Snapshots(_)
        | HostStep::ZfsArc(_)
        | HostStep::NfsExports(_)
        | HostStep::Samba(_)
        | HostStep::User(_)
        | HostStep::NvidiaDriver(_)
        | HostStep::Timezone(_)
        | HostStep::Dns(_)
        | HostStep::SubIds(_)
        | HostStep::AptRepositories(_)
        | HostStep::AptPackages(_)
        | HostStep::Locale(_)
        | HostStep::AppArmor(_)
        | HostStep::Bridge(_) => true,
    }
}

/// The host steps of a cluster of several `nodes`: each of the node's own steps once per node, at
/// `host/<node>/<path>` and depending on the same node's steps; the cluster's steps once, depending on
/// every node's version of what they need. With one node (or none named) the addresses stay `host/<path>`.
fn per_node(
    host: Vec<(Address, Vec<Address>, HostStep)>,
    nodes: &[String],
) -> Vec<(Address, Vec<Address>, Option<String>, HostStep)> {
    if nodes.len() < 2 {
        return host
            .into_iter()
            .map(|(address, depends_on, step)| (address, depends_on, None, step))
            .collect();
    }
    let own: Vec<Address> = host
        .iter()
        .filter(|(_, _, step)| is_per_node(step))
        .map(|(address, _, _)| address.clone())
        .collect();
    let on = |node: &str, address: &Address| match address {
        Address::Host(path) => Address::Host(format!("{node}/{path}")),
        other => other.clone(),
    };
    let mut expanded = Vec::new();
    for (address, depends_on, step) in host {
        if is_per_node(&step) {
            for node in nodes {
                let depends_on = depends_on
                    .iter()
                    .map(|needed| {
                        if own.contains(needed) {
                            on(node, needed)
                        } else {
                            needed.clone()
                        }
                    })
                    .collect();
                expanded.push((on(node, &address), depends_on, Some(node.clone()), step.clone()));
            }
        } else {
            let depends_on = depends_on
                .iter()
                .flat_map(|needed| match own.contains(needed) {
                    true => nodes.iter().map(|node| on(node, needed)).collect(),
                    false => vec![needed.clone()],
                })
                .collect();
            expanded.push((address, depends_on, None, step));
        }
    }
    expanded
}

/// Every resource of an estate, in a stable order (by address).
pub fn resources(estate: &Estate) -> Vec<Resource> {
    let files = estate.files();
    let hypervisor = &files.hypervisor;
    let mut resources = Vec::new();

    // Host steps. Guests depend on all of them: the host is set up before anything runs on it.
    let mut host = Vec::new();
    if let Some(zfs) = &hypervisor.zfs {
        for pool in &zfs.pools {
            host.push((
                Address::Host(format!("zfs/pool/{}", pool.name)),
                Vec::new(),
                HostStep::ZfsPool(Box::new(pool.clone())),
            ));
        }
        for dataset in &zfs.datasets {
            let pool = Address::Host(format!("zfs/pool/{}", dataset.pool));
            let mut depends = if zfs.pools.iter().any(|declared| declared.name == dataset.pool) {
                vec![pool]
            } else {
                Vec::new()
            };
            // A nested dataset after its declared parent.
            if let Some((parent, _)) = dataset.name.rsplit_once('/')
                && zfs
                    .datasets
                    .iter()
                    .any(|other| other.pool == dataset.pool && other.name == parent)
            {
                depends.push(Address::Host(format!("zfs/dataset/{}/{parent}", dataset.pool)));
            }
            let address = Address::Host(format!("zfs/dataset/{}/{}", dataset.pool, dataset.name));
            let dataset = with_mountpoint(dataset, hypervisor.mount_point_base.as_deref());
            host.push((address, depends, HostStep::ZfsDataset(Box::new(dataset))));
        }
        for dataset in &zfs.datasets {
            let dataset = with_mountpoint(dataset, hypervisor.mount_point_base.as_deref());
            if let Some(storage) = ProxmoxStorage::of_dataset(&dataset) {
                let after = Address::Host(format!("zfs/dataset/{}/{}", dataset.pool, dataset.name));
                host.push((
                    Address::Host(format!("storage/{}", storage.id)),
                    vec![after],
                    HostStep::Storage(Box::new(storage)),
                ));
            }
        }
        if let Some(plan) = SnapshotPlan::declared(zfs) {
            // After every dataset and pool (a replica's parent lives on its target pool).
            let after: Vec<Address> = host.iter().map(|(address, _, _)| address.clone()).collect();
            host.push((
                Address::Host("zfs/snapshots".into()),
                after,
                HostStep::Snapshots(Box::new(plan)),
            ));
        }
        if let Some(gib) = zfs.arc_max_gb {
            host.push((Address::Host("zfs/arc".into()), Vec::new(), HostStep::ZfsArc(gib)));
        }
    }
    for declared in &hypervisor.proxmox_storages {
        host.push((
            Address::Host(format!("storage/{}", declared.id)),
            Vec::new(),
            HostStep::Storage(Box::new(ProxmoxStorage {
                id: declared.id.clone(),
                kind: None,
                content: content_list(declared.content.iter().map(String::as_str)),
                settings: BTreeMap::new(),
            })),
        ));
    }
    let datasets: Vec<Address> = host.iter().map(|(address, _, _)| address.clone()).collect();
    let packages_address = Address::Host("apt/packages".into());
    let packages = AptPackages::declared(hypervisor);
    if let Some(nfs) = hypervisor.nfs.as_ref().filter(|nfs| !nfs.exports.is_empty()) {
        let mut nfs = nfs.clone();
        for export in &mut nfs.exports {
            if let Some(mountpoint) = export_mountpoint(hypervisor, &export.path) {
                export.path = mountpoint;
            }
        }
        let mut depends = datasets.clone();
        depends.extend(packages.as_ref().map(|_| packages_address.clone()));
        for export in &nfs.exports {
            if let Some(storage) = ProxmoxStorage::of_export(hypervisor, export) {
                host.push((
                    Address::Host(format!("storage/{}", storage.id)),
                    vec![Address::Host("nfs/exports".into())],
                    HostStep::Storage(Box::new(storage)),
                ));
            }
        }
        host.push((
            Address::Host("nfs/exports".into()),
            depends,
            HostStep::NfsExports(Box::new(nfs)),
        ));
    }
    if let Some(samba) = &hypervisor.samba {
        let mut samba = samba.clone();
        for share in &mut samba.shares {
            share.path = shared_directory(hypervisor, &share.path);
        }
        let mut depends = datasets.clone();
        depends.extend(packages.as_ref().map(|_| packages_address.clone()));
        if hypervisor.users.iter().any(|user| user.username == samba.user) {
            depends.push(Address::Host(format!("user/{}", samba.user)));
        }
        host.push((
            Address::Host("samba".into()),
            depends,
            HostStep::Samba(Box::new(samba)),
        ));
    }
    if let Some(firewall) = hypervisor
        .firewall
        .as_ref()
        .or(hypervisor.shared_volumes.legacy_firewall.as_ref())
    {
        if firewall.declares_cluster() {
            host.push((
                Address::Host("firewall".into()),
                host_firewall::dependencies(firewall, &firewall.global_firewall_rules),
                HostStep::Firewall(Box::new(firewall.clone())),
            ));
        }
        host.extend(host_firewall::steps(firewall));
    }
    if let Some(timezone) = &hypervisor.timezone {
        host.push((
            Address::Host("timezone".into()),
            Vec::new(),
            HostStep::Timezone(timezone.clone()),
        ));
    }
    if let Some(dns) = HostDns::declared(hypervisor) {
        host.push((
            Address::Host("dns".into()),
            Vec::new(),
            HostStep::Dns(Box::new(dns)),
        ));
    }
    let after_packages = || {
        packages
            .as_ref()
            .map(|_| packages_address.clone())
            .into_iter()
            .collect()
    };
    let mut before_packages = Vec::new();
    if let Some(apt) = &hypervisor.apt {
        let address = Address::Host("apt/repositories".into());
        before_packages.push(address.clone());
        let repositories = AptRepositories {
            proxmox: apt.proxmox_repository,
            ceph: apt.ceph_repository,
        };
        host.push((
            address,
            Vec::new(),
            HostStep::AptRepositories(Box::new(repositories)),
        ));
    }
    if let Some(packages) = &packages {
        host.push((
            packages_address.clone(),
            before_packages,
            HostStep::AptPackages(Box::new(packages.clone())),
        ));
    }
    for profile in &hypervisor.apparmor_profiles {
        host.push((
            Address::Host(format!("apparmor/{profile}")),
            after_packages(),
            HostStep::AppArmor(profile.clone()),
        ));
    }
    if let Some(locale) = &hypervisor.locale {
        host.push((
            Address::Host("locale".into()),
            after_packages(),
            HostStep::Locale(locale.clone()),
        ));
    }
    for user in &hypervisor.users {
        host.push((
            Address::Host(format!("user/{}", user.username)),
            after_packages(),
            HostStep::User(Box::new(user.clone())),
        ));
    }
    if let Some(nvidia) = hypervisor.nvidia_driver.as_ref().filter(|driver| driver.install) {
        host.push((
            Address::Host("nvidia".into()),
            after_packages(),
            HostStep::NvidiaDriver(Box::new(nvidia.clone())),
        ));
    }
    for bridge in hypervisor.network.iter().flat_map(|network| &network.interfaces) {
        host.push((
            Address::Host(format!("network/{}", bridge.name)),
            Vec::new(),
            HostStep::Bridge(Box::new(bridge.clone())),
        ));
    }
    if let Some(ids) = SubIds::declared(estate) {
        host.push((
            Address::Host("subids".into()),
            Vec::new(),
            HostStep::SubIds(Box::new(ids)),
        ));
    }
    for (address, depends_on, step) in hypervisor.proxmox_access.iter().flat_map(access_steps) {
        host.push((address, depends_on, HostStep::Access(Box::new(step))));
    }
    let host = per_node(host, &estate.cluster_nodes());
    let host_addresses: Vec<(Address, Option<String>)> = host
        .iter()
        .map(|(address, _, node, _)| (address.clone(), node.clone()))
        .collect();
    for (address, depends_on, node, step) in host {
        resources.push(Resource {
            address,
            name: None,
            depends_on,
            after: Vec::new(),
            node,
            storage: None,
            desired: Desired::Host(step),
        });
    }

    // Guests.
    let address_of = |id: u32| {
        estate.guest(id).map(|guest| match guest.spec {
            GuestSpec::Container(_) => Address::Lxc(id),
            GuestSpec::Vm(_) => Address::Vm(id),
        })
    };
    for guest in estate.guests().values() {
        // The cluster's host steps and those of the guest's node (of every node, for a guest placed when
        // it is created).
        let mut depends_on: Vec<Address> = host_addresses
            .iter()
            .filter(|(_, node)| node.is_none() || guest.node.is_none() || *node == guest.node)
            .map(|(address, _)| address.clone())
            .collect();
        depends_on.extend(
            guest
                .clone_from
                .into_iter()
                .chain(guest.dependencies.iter().copied())
                .filter_map(address_of),
        );
        let (address, storage, desired) = match &guest.spec {
            GuestSpec::Container(container) => (
                Address::Lxc(guest.id),
                container.storage_pool.clone(),
                Desired::Container(container.clone()),
            ),
            GuestSpec::Vm(vm) => (
                Address::Vm(guest.id),
                vm.storage_pool.clone(),
                Desired::Vm(Box::new(with_stack_rules(vm, &files.stacks))),
            ),
        };
        resources.push(Resource {
            address,
            name: Some(guest.name().to_owned()),
            depends_on,
            after: Vec::new(),
            node: guest.node.clone(),
            storage,
            desired,
        });
    }

    // The Portainer server after its VM; an agent's environment after the server and the agent's VM;
    // stacks after their VM and its environment, in the order the VM lists them.
    let portainer = portainer_steps(estate);
    let environments: Vec<u32> = portainer
        .iter()
        .filter_map(|resource| match &resource.desired {
            Desired::Portainer(PortainerStep::Endpoint { vmid, .. }) => Some(*vmid),
            _ => None,
        })
        .collect();
    resources.extend(portainer);
    for guest in estate.guests().values() {
        let GuestSpec::Vm(vm) = &guest.spec else { continue };
        for chosen in &vm.docker_stacks {
            let name = chosen.name();
            let Some(stack) = files.stacks.docker_stacks.get(name) else {
                continue;
            };
            // Only the environment this VM runs it with.
            let mut stack = stack.clone();
            stack
                .environments
                .retain(|environment, _| environment == chosen.environment());
            let mut depends_on = vec![Address::Vm(guest.id)];
            if environments.contains(&guest.id) {
                depends_on.push(Address::Portainer(format!("endpoint/{}", guest.id)));
            }
            resources.push(Resource {
                address: Address::Stack {
                    name: name.to_owned(),
                    vmid: guest.id,
                },
                name: Some(name.to_owned()),
                depends_on,
                after: Vec::new(),
                node: guest.node.clone(),
                storage: None,
                desired: Desired::Stack(Box::new(stack)),
            });
        }
    }

    // Sync steps after the guests they publish. Traefik's also after its own container, which it writes to.
    let (traefik, _) = traefik::declared(estate);
    let internal_dns = crate::dns::internal_view(estate, &traefik);
    if let Some(proxy) = traefik.proxy {
        let mut depends_on: Vec<Address> = traefik.routed.iter().copied().filter_map(address_of).collect();
        depends_on.extend(address_of(proxy));
        depends_on.sort();
        depends_on.dedup();
        let step = SyncStep::Traefik(Box::new(TraefikSync {
            proxy,
            config: traefik.config,
        }));
        let mut step = sync_step("traefik", depends_on, step);
        // After the stacks whose routes it publishes, so that a route appears once its backend is
        // deployed; a stack that fails holds back no route.
        step.after = resources
            .iter()
            .filter(|resource| {
                matches!(resource.address, Address::Stack { vmid, .. } if traefik.routed.contains(&vmid))
            })
            .map(|resource| resource.address.clone())
            .collect();
        resources.push(step);
    }
    if let Some(gateway) = &hypervisor.gateway {
        let step = SyncStep::Gateway(Box::new(GatewaySync {
            container: gateway.container,
            site: gateway.site_path.clone(),
            template: gateway.template.clone(),
        }));
        let mut step = sync_step(
            "gateway",
            address_of(gateway.container).into_iter().collect(),
            step,
        );
        // After Traefik's routes, which it sends traffic to.
        step.after = resources
            .iter()
            .filter(|resource| resource.address == Address::Sync("traefik".to_owned()))
            .map(|resource| resource.address.clone())
            .collect();
        resources.push(step);
    }
    if let Some(view) = internal_dns {
        let depends_on = view.container.and_then(address_of).into_iter().collect();
        resources.push(sync_step(
            "dns/internal",
            depends_on,
            SyncStep::InternalDns(Box::new(view)),
        ));
    }
    for zone in crate::dns::public::public_view(estate) {
        if zone.server.is_none() {
            // Created by hand: `phoenix plan` lists the records.
            continue;
        }
        let mut step = sync_step(
            &format!("dns/public/{}", zone.zone),
            Vec::new(),
            SyncStep::PublicDns(Box::new(zone)),
        );
        // After the gateway's site, so that a name is published once the gateway answers for it.
        step.after = resources
            .iter()
            .filter(|resource| resource.address == Address::Sync("gateway".to_owned()))
            .map(|resource| resource.address.clone())
            .collect();
        resources.push(step);
    }
    // A certificate's names are proved through the public zones (dns-01): after they are published.
    let zones: Vec<Address> = resources
        .iter()
        .filter(|resource| matches!(resource.desired, Desired::Sync(SyncStep::PublicDns(_))))
        .map(|resource| resource.address.clone())
        .collect();
    for certificate in crate::certificates::declared(estate) {
        let mut step = sync_step(
            &format!("certificate/{}", certificate.common_name),
            Vec::new(),
            SyncStep::Certificate(Box::new(certificate)),
        );
        step.after = zones.clone();
        resources.push(step);
    }
    pipeline_order(&mut resources);
    resources.sort_by(|left, right| left.address.cmp(&right.address));
    resources
}

/// `vm` with the firewall rules its stacks declare (in the environment it runs each with) after its own, each
/// once; only for a VM whose firewall Phoenix manages (validation warns about the others).
fn with_stack_rules(vm: &VmConfig, stacks: &StacksFile) -> VmConfig {
    let mut vm = vm.clone();
    let Some(firewall) = vm.firewall.as_mut() else {
        return vm;
    };
    let declared = vm
        .docker_stacks
        .iter()
        .filter_map(|chosen| {
            let stack = stacks.docker_stacks.get(chosen.name())?;
            stack.environments.get(chosen.environment())
        })
        .flat_map(|environment| &environment.firewall_rules);
    for rule in declared {
        if !firewall.rules.contains(rule) {
            firewall.rules.push(rule.clone());
        }
    }
    vm
}

/// `phoenix sync`'s order where nothing requires it: Portainer and the stacks after the internal DNS view, so that
/// they start with the estate's names resolving.
fn pipeline_order(resources: &mut [Resource]) {
    let dns = Address::Sync("dns/internal".to_owned());
    if !resources.iter().any(|resource| resource.address == dns) {
        return;
    }
    for resource in resources {
        if matches!(resource.desired, Desired::Stack(_) | Desired::Portainer(_)) {
            resource.after.push(dns.clone());
        }
    }
}

/// `portainer/server` when a VM is the Portainer primary and `portainer_api` is configured, and an
/// environment per agent VM with a static address.
fn portainer_steps(estate: &Estate) -> Vec<Resource> {
    let files = estate.files();
    let Some(api) = &files.hypervisor.portainer_api else {
        return Vec::new();
    };
    let role = |guest: &crate::model::Guest| match &guest.spec {
        GuestSpec::Vm(vm) => vm.portainer_role,
        GuestSpec::Container(container) => container.portainer_role,
    };
    let Some(primary) = estate
        .guests()
        .values()
        .find(|guest| role(guest) == Some(PortainerRole::Primary))
    else {
        return Vec::new();
    };
    let server = Address::Portainer("server".to_owned());
    let images = files.hypervisor.docker.as_ref();
    let network = files.hypervisor.network.as_ref();
    let mut steps = Vec::new();
    let mut server_needs = address_of_guest(primary);
    // The server's own container, unless the primary VM runs stacks: then one of them is the server, and
    // the server comes after them.
    if let GuestSpec::Vm(vm) = &primary.spec {
        server_needs.extend(vm.docker_stacks.iter().map(|chosen| Address::Stack {
            name: chosen.name().to_owned(),
            vmid: primary.id,
        }));
    }
    if let GuestSpec::Vm(vm) = &primary.spec
        && vm.docker_stacks.is_empty()
        && let Some(image) = images.and_then(|images| images.portainer_server_image.as_deref())
    {
        let port = network
            .and_then(|network| network.portainer_server_port)
            .unwrap_or(DEFAULT_SERVER_PORT);
        let step = docker_step(primary, DockerRun::server(image, port));
        server_needs.push(step.address.clone());
        steps.push(step);
    }
    steps.push(Resource {
        address: server.clone(),
        name: None,
        depends_on: server_needs,
        after: Vec::new(),
        node: primary.node.clone(),
        storage: None,
        desired: Desired::Portainer(PortainerStep::Server {
            admin_user: api.admin_user.clone(),
        }),
    });
    let port = network
        .and_then(|network| network.portainer_agent_port)
        .unwrap_or(DEFAULT_AGENT_PORT);
    let agent_image = images.and_then(|images| images.portainer_agent_image.as_deref());
    for guest in estate.guests().values() {
        let GuestSpec::Vm(vm) = &guest.spec else { continue };
        if vm.portainer_role != Some(PortainerRole::Agent) {
            continue;
        }
        let Some(ip) = vm
            .network_config
            .as_ref()
            .map(|network| network.ip.as_str())
            .filter(|ip| *ip != "dhcp")
        else {
            continue;
        };
        let address = ip.split('/').next().unwrap_or(ip);
        let mut depends_on = vec![server.clone(), Address::Vm(guest.id)];
        if let Some(image) = agent_image {
            let step = docker_step(guest, DockerRun::agent(image, port));
            depends_on.push(step.address.clone());
            steps.push(step);
        }
        steps.push(Resource {
            address: Address::Portainer(format!("endpoint/{}", guest.id)),
            name: Some(guest.name().to_owned()),
            depends_on,
            after: Vec::new(),
            node: guest.node.clone(),
            storage: None,
            desired: Desired::Portainer(PortainerStep::Endpoint {
                vmid: guest.id,
                name: vm
                    .portainer_environment_name
                    .clone()
                    .unwrap_or_else(|| guest.name().to_owned()),
                url: format!("tcp://{address}:{port}"),
            }),
        });
    }
    steps
}

fn address_of_guest(guest: &crate::model::Guest) -> Vec<Address> {
    vec![guest.kind().address(guest.id)]
}

/// The port the Portainer agent listens on unless `network.portainer_agent_port` says otherwise.
pub const DEFAULT_AGENT_PORT: u16 = 9001;
/// The port the Portainer server's HTTPS is published on unless `network.portainer_server_port` says
/// otherwise.
pub const DEFAULT_SERVER_PORT: u16 = 9443;

/// `portainer/docker/<vmid>`: `run` on a VM, after the VM.
fn docker_step(guest: &crate::model::Guest, run: DockerRun) -> Resource {
    Resource {
        address: Address::Portainer(format!("docker/{}", guest.id)),
        name: Some(guest.name().to_owned()),
        depends_on: vec![Address::Vm(guest.id)],
        after: Vec::new(),
        node: guest.node.clone(),
        storage: None,
        desired: Desired::Portainer(PortainerStep::Container { vmid: guest.id, run }),
    }
}

fn sync_step(name: &str, depends_on: Vec<Address>, step: SyncStep) -> Resource {
    Resource {
        address: Address::Sync(name.to_owned()),
        name: None,
        depends_on,
        after: Vec::new(),
        node: None,
        storage: None,
        desired: Desired::Sync(step),
    }
}
