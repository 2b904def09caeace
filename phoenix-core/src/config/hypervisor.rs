//! `phoenix_hypervisor_config.json`: the Proxmox host, its storage and services, and the connection to it.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use super::access::ProxmoxAccess;
use super::common::{FirewallAction, FirewallRule, Secret};

/// The whole hypervisor file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HypervisorFile {
    /// Editor hint; ignored by Phoenix.
    #[serde(rename = "$schema", default)]
    pub schema: Option<String>,
    /// Version of this configuration, free text.
    #[serde(default)]
    pub version: Option<String>,
    /// Who maintains this configuration, free text.
    #[serde(default)]
    pub author: Option<String>,
    /// How Phoenix reaches the Proxmox API.
    #[serde(default)]
    pub proxmox: Option<Connection>,
    /// DNS domain of the estate; guests' search domain and Traefik host names hang off it.
    #[serde(default)]
    pub domain_name: Option<String>,
    /// Linux users created on the host: one object or a list.
    #[serde(default, deserialize_with = "one_or_many")]
    pub users: Vec<HostUser>,
    /// Legacy: file locations of the earlier version. Phoenix finds files through `--config`.
    #[serde(default)]
    pub core_paths: Option<serde_json::Value>,
    /// Host time zone (`Europe/Berlin`).
    #[serde(default)]
    pub timezone: Option<String>,
    /// The node's locale (`en_US.UTF-8`): generated, and set as the system's `LANG`.
    #[serde(default)]
    pub locale: Option<String>,
    /// The node's APT repositories and packages.
    #[serde(default)]
    pub apt: Option<Apt>,
    /// AppArmor profiles Phoenix installs on the node, by name; each is the file `apparmor/<name>` of the
    /// configuration directory.
    #[serde(default)]
    pub apparmor_profiles: Vec<String>,
    /// Host networking and the addresses of shared services.
    #[serde(default)]
    pub network: Option<HostNetwork>,
    /// Images used for Portainer.
    #[serde(default)]
    pub docker: Option<DockerImages>,
    /// NFS exports served by the host.
    #[serde(default)]
    pub nfs: Option<Nfs>,
    /// Samba shares served by the host.
    #[serde(default)]
    pub samba: Option<Samba>,
    /// ZFS pools and datasets, and their Proxmox storage registration.
    #[serde(default)]
    pub zfs: Option<Zfs>,
    /// Proxmox storage IDs by role (`quickos_lxc` -> `quickOS-lxc-disks`); each counts as a declared storage.
    #[serde(default)]
    pub proxmox_storage_ids: BTreeMap<String, String>,
    /// Storages that exist on the node without a dataset here (`local`, `local-lvm`).
    #[serde(default)]
    pub proxmox_storages: Vec<StorageDecl>,
    /// Where Proxmox mounts directory storages (default `/mnt/pve`).
    #[serde(default)]
    pub mount_point_base: Option<String>,
    /// Defaults for guests.
    #[serde(default)]
    pub proxmox_defaults: Option<ProxmoxDefaults>,
    /// Legacy: test scripts of the earlier version; not run by Phoenix.
    #[serde(default)]
    pub tests: Option<serde_json::Value>,
    /// NVIDIA driver on the host.
    #[serde(default)]
    pub nvidia_driver: Option<NvidiaDriver>,
    /// Legacy: switches of the earlier scripts (`rollback_on_failure`, `debug_mode`). Use `-v` instead.
    #[serde(default)]
    pub behavior: Option<serde_json::Value>,
    /// Host directories shared into containers by CTID; the legacy home of `firewall`.
    #[serde(default)]
    pub shared_volumes: SharedVolumes,
    /// The host (datacenter) firewall.
    #[serde(default)]
    pub firewall: Option<HostFirewall>,
    /// Credentials of the Portainer administrator.
    #[serde(default)]
    pub portainer_api: Option<PortainerApi>,
    /// Host-wide VM settings.
    #[serde(default)]
    pub vm_defaults: Option<HostVmDefaults>,
    /// The dnsmasq DNS server of the internal view, on the host or in a container.
    #[serde(default)]
    pub dns_server: Option<DnsServer>,
    /// The internal certificate authority.
    #[serde(default)]
    pub step_ca: Option<StepCa>,
    /// The nginx gateway: the container that is the one public entry, and its site.
    #[serde(default)]
    pub gateway: Option<Gateway>,
    /// The public DNS view: the gateway's names in the public zones, and the server that publishes them.
    #[serde(default)]
    pub public_dns: Option<PublicDns>,
    /// Certificates issued by ACME and renewed by Phoenix, and the ACME servers that issue them.
    #[serde(default)]
    pub certificates: Option<Certificates>,
    /// Proxmox users, groups, roles, ACL entries and API tokens.
    #[serde(default)]
    pub proxmox_access: Option<ProxmoxAccess>,
}

/// Connection to the Proxmox VE API. Secrets are references, never inline.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    /// API endpoint, `https://host:8006`.
    pub endpoint: String,
    /// Cluster nodes Phoenix manages; a guest without `node` runs on the only one, or is placed by
    /// `placement`.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Where a new guest that names no node goes, in a cluster of several nodes; without it, every guest
    /// of such a cluster must name its node.
    #[serde(default)]
    pub placement: Option<Placement>,
    /// API token id, `user@realm!tokenname`.
    #[serde(default)]
    pub token_id: Option<String>,
    /// API token secret.
    #[serde(default)]
    pub token_secret: Option<Secret>,
    /// User for ticket authentication, `user@realm`, when no token is used.
    #[serde(default)]
    pub user: Option<String>,
    /// Password for ticket authentication.
    #[serde(default)]
    pub password: Option<Secret>,
    /// CA certificate (PEM) that signed the node's certificate.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// SHA-256 fingerprint of the node's certificate, `AA:BB:...`.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// How Phoenix runs host-side commands: `local` (on the node) or an SSH destination; in a cluster,
    /// `{node}` stands for each node's name.
    #[serde(default)]
    pub ssh: Option<String>,
    /// The SSH destination (or `local`) of each node by name, where `ssh` does not give it.
    #[serde(default)]
    pub node_ssh: BTreeMap<String, String>,
}

impl Connection {
    /// How Phoenix reaches `node` for host-side commands: `node_ssh`, else `ssh` with `{node}` replaced;
    /// in a cluster of several nodes, an `ssh` without `{node}` reaches only the first, and the others are
    /// `root@<node>`. `None`: nothing is configured (the caller decides, local when it runs on a node).
    pub fn ssh_for(&self, node: &str) -> Option<String> {
        if let Some(destination) = self.node_ssh.get(node) {
            return Some(destination.clone());
        }
        let first = self.nodes.first().is_none_or(|first| first == node);
        match &self.ssh {
            Some(ssh) if ssh.contains("{node}") => Some(ssh.replace("{node}", node)),
            Some(ssh) if first => Some(ssh.clone()),
            _ if first => None,
            _ => Some(format!("root@{node}")),
        }
    }
}

/// How a new guest that names no node is placed on one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// The first node of `proxmox.nodes` that is online and has the guest's storage (the rule for a
    /// cluster whose guests each name their node, and for a single node).
    #[default]
    FirstNode,
    /// The online node with the most free memory that has the guest's storage, counting the guests
    /// placed before it in the same run.
    MostFreeMemory,
}

/// A Linux user on the host.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostUser {
    /// Login name.
    pub username: String,
    /// Password hash for `/etc/shadow` (`NOT_SET` leaves the password locked).
    #[serde(default)]
    pub password_hash: Option<String>,
    /// Add the user to `sudo`.
    #[serde(default)]
    pub sudo_access: bool,
    /// One authorised SSH public key (empty for none).
    #[serde(default)]
    pub ssh_public_key: Option<String>,
}

/// The node's APT repositories and the packages installed from them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Apt {
    /// The Proxmox VE repository to enable (the other two are turned off).
    #[serde(default)]
    pub proxmox_repository: Option<RepositoryChannel>,
    /// The Ceph repository to enable; without it every Ceph repository is turned off.
    #[serde(default)]
    pub ceph_repository: Option<RepositoryChannel>,
    /// Debian package names to install (never removed when taken out).
    #[serde(default)]
    pub packages: Vec<String>,
}

/// One of Proxmox's repository channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RepositoryChannel {
    /// The stable repository for subscribers (`enterprise.proxmox.com`).
    Enterprise,
    /// The stable repository without a subscription (`download.proxmox.com`).
    NoSubscription,
    /// The test repository.
    Test,
}

impl RepositoryChannel {
    /// Every channel.
    pub const ALL: [RepositoryChannel; 3] = [
        RepositoryChannel::Enterprise,
        RepositoryChannel::NoSubscription,
        RepositoryChannel::Test,
    ];

    /// Its name in the configuration and in Proxmox's repository handles.
    pub fn as_str(self) -> &'static str {
        match self {
            RepositoryChannel::Enterprise => "enterprise",
            RepositoryChannel::NoSubscription => "no-subscription",
            RepositoryChannel::Test => "test",
        }
    }
}

/// Host networking and the addresses of shared services.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostNetwork {
    /// Registry images are pushed to and pulled from.
    #[serde(default)]
    pub external_registry_url: Option<String>,
    /// Address of the Portainer server.
    #[serde(default)]
    pub portainer_server_ip: Option<String>,
    /// HTTPS port of the Portainer server.
    #[serde(default)]
    pub portainer_server_port: Option<u16>,
    /// Port of Portainer agents.
    #[serde(default)]
    pub portainer_agent_port: Option<u16>,
    /// Bridges of the host: one object or a list.
    #[serde(default, deserialize_with = "one_or_many")]
    pub interfaces: Vec<HostInterface>,
    /// Subnet guests live in.
    #[serde(default)]
    pub default_subnet: Option<String>,
    /// Address of the NFS server guests mount from.
    #[serde(default)]
    pub nfs_server: Option<String>,
    /// DNS server used when the internal one is down.
    #[serde(default)]
    pub fallback_dns: Option<String>,
}

/// A bridge on the host.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostInterface {
    /// Bridge name (`vmbr0`).
    pub name: String,
    /// Host address with prefix length.
    #[serde(default)]
    pub address: Option<String>,
    /// Default gateway.
    #[serde(default)]
    pub gateway: Option<String>,
    /// DNS servers of the host.
    #[serde(default)]
    pub dns_nameservers: Vec<String>,
    /// Bridge ports (`eno1`); `Some` of an empty list for a bridge without ports, `None` to leave them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<String>>,
    /// Comment shown in the Proxmox GUI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comments: Option<String>,
    /// Bring the bridge up at boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostart: Option<bool>,
    /// VLAN aware bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan_aware: Option<bool>,
    /// MTU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// Images used for Portainer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DockerImages {
    /// Portainer server image.
    #[serde(default)]
    pub portainer_server_image: Option<String>,
    /// Portainer agent image.
    #[serde(default)]
    pub portainer_agent_image: Option<String>,
}

/// NFS service of the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Nfs {
    /// Lines of `/etc/exports`.
    #[serde(default)]
    pub exports: Vec<NfsExport>,
}

/// One NFS export.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NfsExport {
    /// Exported directory.
    pub path: String,
    /// Client addresses or networks allowed to mount it.
    pub clients: Vec<String>,
    /// Export options (`rw`, `sync`, `no_subtree_check`, ...).
    #[serde(default)]
    pub options: Vec<String>,
    /// The Proxmox storage (type `nfs`) that mounts this export on the node, when Proxmox should use it.
    #[serde(default)]
    pub proxmox_storage: Option<NfsStorage>,
}

/// A Proxmox `nfs` storage for an export of the host.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NfsStorage {
    /// Proxmox storage ID.
    pub id: String,
    /// Content types it holds (`images`, `rootdir`, `backup`, `iso`, `vztmpl`, `snippets`, `import`).
    #[serde(default)]
    pub content: Vec<String>,
    /// The NFS server's address as Proxmox reaches it (default `network.nfs_server`).
    #[serde(default)]
    pub server: Option<String>,
    /// NFS mount options (`vers=4.2`).
    #[serde(default)]
    pub options: Option<String>,
}

/// Samba service of the host.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Samba {
    /// Samba user: a Linux user of the node, added to Samba's user database when `password` is set.
    pub user: String,
    /// The Samba password of `user`, set when Samba does not know the user yet.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Shares.
    #[serde(default)]
    pub shares: Vec<SambaShare>,
}

/// One Samba share.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SambaShare {
    /// Share name.
    pub name: String,
    /// Dataset (`pool/dataset`) or absolute path shared.
    pub path: String,
    /// smb.conf options, `key=value` separated by spaces.
    #[serde(default)]
    pub options: Option<String>,
    /// Users allowed to connect.
    #[serde(default)]
    pub valid_users: Vec<String>,
}

/// ZFS on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Zfs {
    /// Upper bound of the ARC in GiB.
    #[serde(default)]
    pub arc_max_gb: Option<u32>,
    /// Pools.
    #[serde(default)]
    pub pools: Vec<ZfsPool>,
    /// Datasets, each optionally registered as a Proxmox storage.
    #[serde(default)]
    pub datasets: Vec<ZfsDataset>,
    /// Snapshot policies by name, which datasets name in `snapshot_policy`.
    #[serde(default)]
    pub snapshot_policies: BTreeMap<String, SnapshotPolicy>,
}

/// How many snapshots of each period are kept (sanoid's retention counts); 0 takes none of that period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// 15-minute snapshots.
    #[serde(default)]
    pub frequently: u32,
    /// Hourly snapshots.
    #[serde(default)]
    pub hourly: u32,
    /// Daily snapshots.
    #[serde(default)]
    pub daily: u32,
    /// Weekly snapshots.
    #[serde(default)]
    pub weekly: u32,
    /// Monthly snapshots.
    #[serde(default)]
    pub monthly: u32,
    /// Yearly snapshots.
    #[serde(default)]
    pub yearly: u32,
}

/// A snapshot policy: retention on the source, on the replica, and how often replication runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotPolicy {
    /// 15-minute snapshots kept on the dataset.
    #[serde(default)]
    pub frequently: u32,
    /// Hourly snapshots kept on the dataset.
    #[serde(default)]
    pub hourly: u32,
    /// Daily snapshots kept on the dataset.
    #[serde(default)]
    pub daily: u32,
    /// Weekly snapshots kept on the dataset.
    #[serde(default)]
    pub weekly: u32,
    /// Monthly snapshots kept on the dataset.
    #[serde(default)]
    pub monthly: u32,
    /// Yearly snapshots kept on the dataset.
    #[serde(default)]
    pub yearly: u32,
    /// Retention on the replica (default: the same).
    #[serde(default)]
    pub replica: Option<Retention>,
    /// How often replication runs, as a systemd calendar event (default `hourly`).
    #[serde(default)]
    pub replicate_every: Option<String>,
}

impl SnapshotPolicy {
    /// Retention on the dataset itself.
    pub fn source(&self) -> Retention {
        Retention {
            frequently: self.frequently,
            hourly: self.hourly,
            daily: self.daily,
            weekly: self.weekly,
            monthly: self.monthly,
            yearly: self.yearly,
        }
    }

    /// Retention on the replica.
    pub fn replica(&self) -> Retention {
        self.replica.unwrap_or_else(|| self.source())
    }
}

/// A ZFS pool.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ZfsPool {
    /// Pool name.
    pub name: String,
    /// Layout of the disks.
    pub raid_level: RaidLevel,
    /// Disks, preferably by `/dev/disk/by-id/...`.
    pub disks: Vec<String>,
}

/// Layout of a ZFS pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RaidLevel {
    /// One disk, no redundancy.
    Single,
    /// Disks striped, no redundancy.
    Stripe,
    /// Mirrored disks.
    Mirror,
    /// Single parity.
    Raidz,
    /// Single parity (same as `raidz`).
    Raidz1,
    /// Double parity.
    Raidz2,
    /// Triple parity.
    Raidz3,
}

/// A ZFS dataset.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ZfsDataset {
    /// Dataset name within its pool.
    pub name: String,
    /// Pool the dataset lives in.
    pub pool: String,
    /// ZFS properties, `key=value` separated by commas.
    #[serde(default)]
    pub properties: Option<String>,
    /// How Proxmox uses the dataset: `zfspool` (volumes) or `dir` (files).
    #[serde(default)]
    pub proxmox_storage_type: Option<StorageType>,
    /// Proxmox content types, comma separated (`images,rootdir`).
    #[serde(default)]
    pub proxmox_content_type: Option<String>,
    /// `direct` (guest disks) or `shared` (data shared between guests).
    #[serde(default)]
    pub storage_class: Option<StorageClass>,
    /// Proxmox storage ID (default `<pool>-<name>`).
    #[serde(default)]
    pub storage_id: Option<String>,
    /// The snapshot policy (of `zfs.snapshot_policies`) the dataset follows.
    #[serde(default)]
    pub snapshot_policy: Option<String>,
    /// The pool the dataset is replicated to, as `<pool>/<this pool>/<name>`.
    #[serde(default)]
    pub replicate_to: Option<String>,
}

impl ZfsDataset {
    /// The Proxmox storage ID this dataset is registered as, when it is registered at all.
    pub fn proxmox_storage_id(&self) -> Option<String> {
        self.proxmox_storage_type?;
        Some(
            self.storage_id
                .clone()
                .unwrap_or_else(|| format!("{}-{}", self.pool, self.name)),
        )
    }
}

/// Proxmox storage type of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageType {
    /// ZFS volumes and subvolumes.
    Zfspool,
    /// A directory.
    Dir,
}

/// What a dataset is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageClass {
    /// Guest disks.
    Direct,
    /// Data shared between guests.
    Shared,
}

/// A storage that exists on the node independently of the datasets above.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageDecl {
    /// Proxmox storage ID.
    pub id: String,
    /// Content types it holds (`images`, `rootdir`, `vztmpl`, `iso`, `snippets`, `import`, `backup`).
    #[serde(default)]
    pub content: Vec<String>,
}

/// Defaults for guests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxmoxDefaults {
    /// Legacy: dataset for container disks; name the storage with `storage_pool` instead.
    #[serde(default)]
    pub zfs_lxc_pool: Option<String>,
    /// Defaults merged into each container.
    #[serde(default)]
    pub lxc: Option<LxcDefaults>,
}

/// Defaults merged into each container that leaves the field unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LxcDefaults {
    /// CPU cores.
    #[serde(default)]
    pub cores: Option<u32>,
    /// Memory in MiB.
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// Swap in MiB.
    #[serde(default)]
    pub swap_mb: Option<u64>,
    /// Storage for root filesystems.
    #[serde(default)]
    pub storage_pool: Option<String>,
    /// Root filesystem size in GiB.
    #[serde(default)]
    pub storage_size_gb: Option<u64>,
    /// Node.
    #[serde(default)]
    pub node: Option<String>,
    /// Legacy: `ip/prefix,gateway,dns` of the earlier scripts; each container sets `network_config`.
    #[serde(default)]
    pub network_config: Option<String>,
    /// Container features (`nesting=1`), used when a container has no `pct_options`.
    #[serde(default)]
    pub features: Option<String>,
    /// Legacy: unused by the earlier scripts.
    #[serde(default)]
    pub security: Option<String>,
    /// Legacy: use `features` (`nesting=1`).
    #[serde(default)]
    pub nesting: Option<u8>,
}

/// The NVIDIA driver on the host.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NvidiaDriver {
    /// Install the driver.
    #[serde(default)]
    pub install: bool,
    /// Driver version.
    pub version: String,
    /// Runfile to install from.
    #[serde(default)]
    pub runfile_url: Option<String>,
    /// CUDA version.
    #[serde(default)]
    pub cuda_version: Option<String>,
    /// Install the libraries vLLM needs.
    #[serde(default)]
    pub install_vllm_libs: bool,
}

/// Named host directories bind-mounted into containers, plus the legacy home of the firewall.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedVolumes {
    /// Volumes by name.
    pub volumes: BTreeMap<String, SharedVolume>,
    /// The firewall as the earlier version placed it, under `shared_volumes.firewall`.
    pub legacy_firewall: Option<HostFirewall>,
}

/// A host directory shared into several containers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SharedVolume {
    /// Directory on the host.
    pub host_path: String,
    /// Mount path inside each container, keyed by CTID.
    #[serde(default)]
    pub mounts: BTreeMap<String, String>,
}

/// The host (datacenter) firewall.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostFirewall {
    /// Turn the cluster firewall on or off; left out, the cluster's setting is kept.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Policy for incoming traffic no rule matches.
    #[serde(default)]
    pub default_input_policy: Option<FirewallAction>,
    /// Policy for outgoing traffic no rule matches.
    #[serde(default)]
    pub default_output_policy: Option<FirewallAction>,
    /// Rules of the cluster, a block at the top of its list.
    #[serde(default)]
    pub global_firewall_rules: Vec<FirewallRule>,
    /// Security groups (`/cluster/firewall/groups`) by name; each declared group's rules are owned whole.
    #[serde(default)]
    pub security_groups: BTreeMap<String, SecurityGroup>,
    /// Cluster aliases (`/cluster/firewall/aliases`) by name: a name for an address or network.
    #[serde(default)]
    pub aliases: BTreeMap<String, FirewallAlias>,
    /// Cluster IP sets (`/cluster/firewall/ipset`) by name; each declared set's entries are owned whole.
    #[serde(default)]
    pub ipsets: BTreeMap<String, IpSet>,
    /// The firewall of the node itself (`/nodes/{node}/firewall`).
    #[serde(default)]
    pub node: Option<NodeFirewall>,
}

impl HostFirewall {
    /// Whether it declares anything of the cluster firewall itself (options or rules), beyond its
    /// groups, aliases, IP sets and the node's firewall.
    pub fn declares_cluster(&self) -> bool {
        self.enabled.is_some()
            || self.default_input_policy.is_some()
            || self.default_output_policy.is_some()
            || !self.global_firewall_rules.is_empty()
    }
}

/// A security group: a named list of rules that cluster, node and guest rules jump to (`type: group`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroup {
    /// Free text shown with the group.
    #[serde(default)]
    pub comment: Option<String>,
    /// Its rules, in order: exactly these, nothing else.
    #[serde(default)]
    pub rules: Vec<FirewallRule>,
}

/// A cluster alias: a name for one address or network.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallAlias {
    /// The address or network (`10.42.0.5`, `10.42.0.0/24`).
    pub cidr: String,
    /// Free text shown with the alias.
    #[serde(default)]
    pub comment: Option<String>,
}

/// A cluster IP set: a named set of addresses and networks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IpSet {
    /// Free text shown with the set.
    #[serde(default)]
    pub comment: Option<String>,
    /// Its entries: exactly these, nothing else.
    #[serde(default)]
    pub entries: Vec<IpSetEntry>,
}

/// One entry of an IP set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IpSetEntry {
    /// An address, a network, or the name of an alias.
    pub cidr: String,
    /// Excludes this entry from the set (`nomatch`).
    #[serde(default)]
    pub nomatch: bool,
    /// Free text kept with the entry.
    #[serde(default)]
    pub comment: Option<String>,
}

/// The firewall of the node itself: its options and its own rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFirewall {
    /// Turn the node's firewall on or off; left out, the node's setting is kept.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Log level of incoming traffic (`nolog`, `info`, ...).
    #[serde(default)]
    pub log_level_in: Option<String>,
    /// Log level of outgoing traffic.
    #[serde(default)]
    pub log_level_out: Option<String>,
    /// Drop SMURF packets (`nosmurfs`).
    #[serde(default)]
    pub nosmurfs: Option<bool>,
    /// Drop packets with illegal TCP flag combinations (`tcpflags`).
    #[serde(default)]
    pub tcpflags: Option<bool>,
    /// The node's rules, a block at the top of its list.
    #[serde(default)]
    pub rules: Vec<FirewallRule>,
}

/// Credentials of the Portainer administrator.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortainerApi {
    /// Administrator user name.
    pub admin_user: String,
    /// Administrator password.
    pub admin_password: Secret,
    /// Host name the Portainer API is reached at.
    #[serde(default)]
    pub portainer_hostname: Option<String>,
    /// Base URL of the API (default from `network.portainer_server_ip` and `portainer_server_port`).
    #[serde(default)]
    pub url: Option<String>,
    /// An access token to use instead of logging in.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// CA certificate (PEM) that signed Portainer's certificate.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// SHA-256 fingerprint of Portainer's certificate.
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// Host-wide VM settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostVmDefaults {
    /// Ubuntu release code name for cloud images (`noble`).
    #[serde(default)]
    pub ubuntu_release: Option<String>,
}

/// The dnsmasq DNS server of the internal view, on the host or in a container.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsServer {
    /// Run the DNS server.
    #[serde(default)]
    pub enabled: bool,
    /// Servers asked for names outside the estate.
    #[serde(default)]
    pub upstream_servers: Vec<String>,
    /// Zones the server answers for.
    #[serde(default)]
    pub authoritative_zones: Vec<String>,
    /// The container dnsmasq runs in; the node itself when not set.
    #[serde(default)]
    pub container: Option<u32>,
    /// The address it listens on (all when not set).
    #[serde(default)]
    pub listen_address: Option<String>,
    /// The port it listens on.
    #[serde(default)]
    pub port: Option<u16>,
}

/// The nginx gateway container and the site Phoenix renders into it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// The CTID of the container that runs nginx.
    pub container: u32,
    /// The site's Tera template, relative to the configuration directory.
    #[serde(default = "default_gateway_template")]
    pub template: String,
    /// Where the rendered site goes in the container.
    #[serde(default = "default_gateway_site")]
    pub site_path: String,
    /// The names the gateway answers for.
    #[serde(default)]
    pub public_names: Vec<String>,
    /// Where requests for names without a route go (Traefik's container on port 80 when not set).
    #[serde(default)]
    pub default_upstream: Option<String>,
    /// Public names sent elsewhere.
    #[serde(default)]
    pub routes: Vec<GatewayRoute>,
    /// The TLS certificate's path in the container.
    #[serde(default)]
    pub certificate: Option<String>,
    /// The TLS key's path in the container.
    #[serde(default)]
    pub certificate_key: Option<String>,
    /// The plain HTTP port.
    #[serde(default = "default_http_port")]
    pub http_port: u16,
    /// The HTTPS port.
    #[serde(default = "default_https_port")]
    pub https_port: u16,
    /// The DNS server nginx resolves upstream names with.
    #[serde(default)]
    pub resolver: Option<String>,
}

/// A public name and where the gateway sends it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayRoute {
    /// The public name.
    pub host: String,
    /// Where requests go, as a URL.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Or the guest whose static address requests go to.
    #[serde(default)]
    pub guest: Option<u32>,
    /// The guest's port.
    #[serde(default)]
    pub port: Option<u16>,
    /// `http` or `https` to the guest.
    #[serde(default)]
    pub scheme: Option<String>,
}

/// The public DNS view: every public name (the gateway's, and `names`) resolves to the gateway's public
/// address in the zone it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PublicDns {
    /// The public zones Phoenix publishes names in (`example.com`).
    pub zones: Vec<String>,
    /// The IPv4 address public names resolve to: the gateway's public address.
    #[serde(default)]
    pub address: Option<String>,
    /// The IPv6 address public names resolve to.
    #[serde(default)]
    pub address6: Option<String>,
    /// Public names beyond the gateway's.
    #[serde(default)]
    pub names: Vec<String>,
    /// The records' TTL in seconds.
    #[serde(default = "default_public_ttl")]
    pub ttl: u32,
    /// Who owns the records Phoenix writes, in their ownership records (`_phoenix.<name>`).
    #[serde(default = "default_owner_id")]
    pub owner_id: String,
    /// The authoritative server that takes dynamic updates; without one, `phoenix plan` lists the
    /// records to create by hand.
    #[serde(default)]
    pub server: Option<DnsUpdateServer>,
}

/// An authoritative DNS server taking RFC 2136 updates and zone transfers, signed with TSIG.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsUpdateServer {
    /// Its address (`192.0.2.53`, `ns1.example.com`), with `:port` for another port than 53.
    pub address: String,
    /// The TSIG key updates and transfers are signed with.
    #[serde(default)]
    pub tsig: Option<TsigKey>,
}

/// A TSIG key (RFC 8945), as the server knows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TsigKey {
    /// The key's name.
    pub name: String,
    /// `hmac-sha256` (the default), `hmac-sha384` or `hmac-sha512`.
    #[serde(default = "default_tsig_algorithm")]
    pub algorithm: String,
    /// The key, base64-encoded as `tsig-keygen` and `keymgr` print it.
    pub secret: Secret,
}

/// Certificates Phoenix issues by ACME (RFC 8555) and renews, and the servers they come from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Certificates {
    /// The ACME servers, by name: certificates name theirs in `issuer`.
    #[serde(default)]
    pub issuers: BTreeMap<String, AcmeIssuer>,
    /// The certificates, in the keys of the earlier version's `certificate-manifest.json`.
    #[serde(default)]
    pub issue: Vec<CertificateSpec>,
}

/// An ACME server: Step-CA's ACME provisioner, Let's Encrypt, any RFC 8555 server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeIssuer {
    /// Its directory URL.
    pub directory: String,
    /// The CA certificate its HTTPS is checked against (PEM, relative to the configuration directory);
    /// the system's roots when not set.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Contact URLs for the account (`mailto:ops@example.com`).
    #[serde(default)]
    pub contact: Vec<String>,
    /// How the names are proved: `dns-01`, through the public DNS view's server, or `http-01`, a file the
    /// gateway serves.
    #[serde(default = "default_challenge")]
    pub challenge: String,
    /// For http-01: the container that answers `/.well-known/acme-challenge/` (the gateway's when not set).
    #[serde(default)]
    pub http01_container: Option<u32>,
    /// For http-01: the directory in it the challenge location serves (`root` in nginx's terms).
    #[serde(default = "default_http01_root")]
    pub http01_root: String,
    /// The container of a CA Phoenix runs (Step-CA's): its root, read from `ca_path` there, is what the
    /// server's HTTPS is checked against, pinned on first use.
    #[serde(default)]
    pub ca_container: Option<u32>,
    /// Where that root is in the container.
    #[serde(default = "default_ca_path")]
    pub ca_path: String,
}

/// Where Step-CA keeps its root certificate (the `step_ca` feature's `STEPPATH`).
pub const DEFAULT_CA_PATH: &str = "/etc/step-ca/certs/root_ca.crt";

fn default_ca_path() -> String {
    DEFAULT_CA_PATH.to_owned()
}

/// Where http-01 answers are written in the container that serves them, unless an issuer says otherwise.
pub const DEFAULT_HTTP01_ROOT: &str = "/var/lib/phoenix/acme-challenge";

fn default_http01_root() -> String {
    DEFAULT_HTTP01_ROOT.to_owned()
}

/// One certificate, where it goes on the node, and what runs after it is renewed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSpec {
    /// The certificate's common name, also its first name.
    pub common_name: String,
    /// More names; the common name is always one.
    #[serde(default)]
    pub sans: Vec<String>,
    /// Where the certificate chain (PEM) goes on the node.
    pub cert_path: String,
    /// Where its private key (PEM) goes on the node.
    pub key_path: String,
    /// `user:group` of both files.
    #[serde(default)]
    pub owner: Option<String>,
    /// The key's mode, in octal (`640`); 600 when not set. The certificate is 644.
    #[serde(default)]
    pub permissions: Option<String>,
    /// A shell command run on the node after the certificate was issued or renewed.
    #[serde(default)]
    pub post_renewal_command: Option<String>,
    /// The issuer, by its name in `issuers`.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// The guest that uses the files: both paths must then lie in one of its mounts (a container's
    /// `mount_points`, a VM's `volumes` under `mount_point_base`).
    #[serde(default)]
    pub guest: Option<u32>,
}

fn default_challenge() -> String {
    "dns-01".to_owned()
}

fn default_issuer() -> String {
    "internal".to_owned()
}

fn default_public_ttl() -> u32 {
    300
}

fn default_owner_id() -> String {
    "phoenix".to_owned()
}

fn default_tsig_algorithm() -> String {
    "hmac-sha256".to_owned()
}

/// Where the gateway's template is in the configuration directory unless `template` says otherwise (the
/// earlier version's layout).
pub const DEFAULT_GATEWAY_TEMPLATE: &str = "nginx/sites-available/gateway.template";

fn default_gateway_template() -> String {
    DEFAULT_GATEWAY_TEMPLATE.to_owned()
}

fn default_gateway_site() -> String {
    "/etc/nginx/sites-enabled/gateway".to_owned()
}

fn default_http_port() -> u16 {
    80
}

fn default_https_port() -> u16 {
    443
}

/// The internal certificate authority.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StepCa {
    /// Name of the root certificate.
    pub root_ca_name: String,
    /// Name of the intermediate certificate.
    #[serde(default)]
    pub intermediate_ca_name: Option<String>,
    /// DNS name of the CA.
    pub dns_name: String,
    /// ACME/JWK provisioner name.
    #[serde(default)]
    pub provisioner_name: Option<String>,
}

impl<'de> Deserialize<'de> for SharedVolumes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SharedVolumesVisitor;

        impl<'de> Visitor<'de> for SharedVolumesVisitor {
            type Value = SharedVolumes;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of shared volumes keyed by name")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SharedVolumes, A::Error> {
                let mut shared = SharedVolumes::default();
                while let Some(name) = map.next_key::<String>()? {
                    if name == "firewall" {
                        shared.legacy_firewall = Some(map.next_value()?);
                    } else {
                        let volume = map.next_value()?;
                        shared.volumes.insert(name, volume);
                    }
                }
                Ok(shared)
            }
        }

        deserializer.deserialize_map(SharedVolumesVisitor)
    }
}

impl Serialize for SharedVolumes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let legacy = usize::from(self.legacy_firewall.is_some());
        let mut map = serializer.serialize_map(Some(self.volumes.len() + legacy))?;
        for (name, volume) in &self.volumes {
            map.serialize_entry(name, volume)?;
        }
        if let Some(firewall) = &self.legacy_firewall {
            map.serialize_entry("firewall", firewall)?;
        }
        map.end()
    }
}

/// Reads either one object or an array of them into a list.
fn one_or_many<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    struct OneOrMany<T>(std::marker::PhantomData<T>);

    impl<'de, T: DeserializeOwned> Visitor<'de> for OneOrMany<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object or an array of objects")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Vec<T>, A::Error> {
            Vec::deserialize(de::value::SeqAccessDeserializer::new(seq))
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Vec<T>, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map)).map(|one| vec![one])
        }
    }

    deserializer.deserialize_any(OneOrMany(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(nodes: &[&str], ssh: Option<&str>) -> Connection {
        serde_json::from_value(serde_json::json!({
            "endpoint": "https://pve1:8006",
            "nodes": nodes,
            "ssh": ssh,
            "node_ssh": { "pve3": "admin@10.0.0.13" },
        }))
        .expect("a connection")
    }

    #[test]
    fn each_node_is_reached_by_its_own_destination() {
        let single = connection(&["pve1"], Some("root@pve1.lab"));
        assert_eq!(single.ssh_for("pve1").as_deref(), Some("root@pve1.lab"));
        let template = connection(&["pve1", "pve2", "pve3"], Some("root@{node}.lab"));
        assert_eq!(template.ssh_for("pve2").as_deref(), Some("root@pve2.lab"));
        assert_eq!(template.ssh_for("pve3").as_deref(), Some("admin@10.0.0.13"));
        let first_only = connection(&["pve1", "pve2"], Some("local"));
        assert_eq!(first_only.ssh_for("pve1").as_deref(), Some("local"));
        assert_eq!(first_only.ssh_for("pve2").as_deref(), Some("root@pve2"));
        let unset = connection(&["pve1", "pve2"], None);
        assert_eq!(unset.ssh_for("pve1"), None);
        assert_eq!(unset.ssh_for("pve2").as_deref(), Some("root@pve2"));
    }
}
