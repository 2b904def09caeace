//! The resolved model: guests of both kinds under one ID space, with defaults merged and references parsed.

use std::collections::BTreeMap;

use crate::config::{ConfigFiles, ContainerConfig, FileKind, VmConfig};
use crate::lint::diagnostic::Problem;
use crate::lint::schema::escape_pointer_token;

/// A validated configuration directory, resolved.
#[derive(Debug, Clone)]
pub struct Estate {
    files: ConfigFiles,
    guests: BTreeMap<u32, Guest>,
}

/// A container or VM, with what the graph needs to know about it.
#[derive(Debug, Clone)]
pub struct Guest {
    /// CTID or VMID.
    pub id: u32,
    /// Container or VM, with its merged configuration.
    pub spec: GuestSpec,
    /// The node it runs on, once defaults are applied; `None` when no node is known.
    pub node: Option<String>,
    /// The guest it is cloned from.
    pub clone_from: Option<u32>,
    /// Guests that must exist first (`dependencies`), in the order written.
    pub dependencies: Vec<u32>,
    /// The file declaring it.
    pub file: FileKind,
    /// JSON pointer of its declaration.
    pub pointer: String,
}

/// The merged configuration of a guest.
#[derive(Debug, Clone)]
pub enum GuestSpec {
    /// An LXC container.
    Container(std::sync::Arc<ContainerConfig>),
    /// A QEMU/KVM virtual machine.
    Vm(Box<VmConfig>),
}

/// Container or VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GuestKind {
    /// An LXC container.
    Container,
    /// A QEMU/KVM virtual machine.
    Vm,
}

impl GuestKind {
    /// `lxc` or `vm`, as used in resource addresses.
    pub fn as_str(self) -> &'static str {
        match self {
            GuestKind::Container => "lxc",
            GuestKind::Vm => "vm",
        }
    }

    /// `container` or `VM`, for messages.
    pub fn noun(self) -> &'static str {
        match self {
            GuestKind::Container => "container",
            GuestKind::Vm => "VM",
        }
    }

    /// The address of guest `id` of this kind.
    pub fn address(self, id: u32) -> crate::Address {
        match self {
            GuestKind::Container => crate::Address::Lxc(id),
            GuestKind::Vm => crate::Address::Vm(id),
        }
    }

    /// The file that declares guests of this kind.
    pub fn file(self) -> crate::FileKind {
        match self {
            GuestKind::Container => crate::FileKind::Lxc,
            GuestKind::Vm => crate::FileKind::Vm,
        }
    }
}

impl Guest {
    /// Container or VM.
    pub fn kind(&self) -> GuestKind {
        match self.spec {
            GuestSpec::Container(_) => GuestKind::Container,
            GuestSpec::Vm(_) => GuestKind::Vm,
        }
    }

    /// The guest's name (its hostname).
    pub fn name(&self) -> &str {
        match &self.spec {
            GuestSpec::Container(container) => &container.name,
            GuestSpec::Vm(vm) => &vm.name,
        }
    }

    /// The snapshot clones of this guest start from.
    pub fn template_snapshot_name(&self) -> Option<&str> {
        match &self.spec {
            GuestSpec::Container(container) => container.template_snapshot_name.as_deref(),
            GuestSpec::Vm(vm) => vm.template_snapshot_name.as_deref(),
        }
    }

    /// The address of `network_config.ip` without its prefix (`10.0.0.12` of `10.0.0.12/24`); `None` when
    /// it has none or takes one by DHCP.
    pub fn static_address(&self) -> Option<&str> {
        let ip = match &self.spec {
            GuestSpec::Container(container) => container.network_config.as_ref()?.ip.as_str(),
            GuestSpec::Vm(vm) => vm.network_config.as_ref()?.ip.as_str(),
        };
        (ip != "dhcp").then(|| ip.split('/').next().unwrap_or(ip))
    }

    /// JSON pointer of one of the guest's keys.
    pub fn pointer_to(&self, key: &str) -> String {
        format!("{}/{}", self.pointer, key)
    }

    /// JSON pointer of the key naming the clone source.
    pub fn clone_pointer(&self) -> String {
        match self.kind() {
            GuestKind::Container => self.pointer_to("clone_from_ctid"),
            GuestKind::Vm => self.pointer_to("clone_from_vmid"),
        }
    }

    /// A short description for messages: `container 101 (Nginx)`.
    pub fn describe(&self) -> String {
        format!("{} {} ({})", self.kind().noun(), self.id, self.name())
    }
}

impl Estate {
    /// Resolves typed files: moves their guests out into [`Guest`]s with defaults merged, parses IDs, and
    /// reports IDs declared twice.
    pub(crate) fn resolve(mut files: ConfigFiles) -> (Estate, Vec<Problem>) {
        let mut problems = Vec::new();
        let mut guests = BTreeMap::new();
        let nodes = files
            .hypervisor
            .proxmox
            .as_ref()
            .map(|connection| connection.nodes.as_slice())
            .unwrap_or(&[]);
        let only_node = match nodes {
            [one] => Some(one.clone()),
            _ => None,
        };

        let lxc_defaults = files
            .hypervisor
            .proxmox_defaults
            .as_ref()
            .and_then(|defaults| defaults.lxc.clone());
        for (key, mut container) in std::mem::take(&mut files.lxc.lxc_configs) {
            let pointer = format!("/lxc_configs/{}", escape_pointer_token(&key));
            let Ok(id) = key.parse::<u32>() else { continue };
            if let Some(defaults) = &lxc_defaults {
                merge(&mut container.cores, &defaults.cores);
                merge(&mut container.memory_mb, &defaults.memory_mb);
                merge(&mut container.swap_mb, &defaults.swap_mb);
                merge(&mut container.storage_pool, &defaults.storage_pool);
                merge(&mut container.storage_size_gb, &defaults.storage_size_gb);
                merge(&mut container.node, &defaults.node);
                if container.pct_options.is_empty()
                    && let Some(features) = &defaults.features
                {
                    container.pct_options = features.split(',').map(str::to_owned).collect();
                }
            }
            merge(&mut container.node, &only_node);
            let guest = Guest {
                id,
                node: container.node.clone(),
                clone_from: container
                    .clone_from_ctid
                    .as_deref()
                    .and_then(|source| source.parse().ok()),
                dependencies: parse_ids(&container.dependencies),
                spec: GuestSpec::Container(std::sync::Arc::new(container)),
                file: FileKind::Lxc,
                pointer,
            };
            guests.insert(id, guest);
        }

        let vm_defaults = &files.vm.vm_defaults;
        for (index, mut vm) in std::mem::take(&mut files.vm.vms).into_iter().enumerate() {
            let pointer = format!("/vms/{index}");
            merge(&mut vm.node, &vm_defaults.node);
            merge(&mut vm.node, &only_node);
            merge(&mut vm.cores, &vm_defaults.cores);
            merge(&mut vm.memory_mb, &vm_defaults.memory_mb);
            merge(&mut vm.disk_size_gb, &vm_defaults.disk_size_gb);
            merge(&mut vm.storage_pool, &vm_defaults.storage_pool);
            merge(&mut vm.network_bridge, &vm_defaults.network_bridge);
            let guest = Guest {
                id: vm.vmid,
                node: vm.node.clone(),
                clone_from: vm.clone_from_vmid,
                dependencies: parse_ids(&vm.dependencies),
                spec: GuestSpec::Vm(Box::new(vm)),
                file: FileKind::Vm,
                pointer,
            };
            if let Some(first) = guests.get(&guest.id) {
                problems.push(
                    Problem::error(
                        "phoenix::id::duplicate",
                        FileKind::Vm,
                        guest.pointer_to("vmid"),
                        format!("ID {} is already used by {}", guest.id, first.describe()),
                    )
                    .with_label("duplicate ID")
                    .with_help("containers and VMs share one ID space on Proxmox: choose an unused ID"),
                );
                continue;
            }
            guests.insert(guest.id, guest);
        }
        (Estate { files, guests }, problems)
    }

    /// The typed files, as written, but for their guests (`lxc_configs` and `vms` are empty): those are
    /// [`Estate::guests`], with defaults merged. Holding each guest once keeps a large estate's memory down.
    pub fn files(&self) -> &ConfigFiles {
        &self.files
    }

    /// The nodes of `proxmox.nodes`, in order (empty when the configuration names none).
    pub fn cluster_nodes(&self) -> Vec<String> {
        self.files
            .hypervisor
            .proxmox
            .as_ref()
            .map(|connection| connection.nodes.clone())
            .unwrap_or_default()
    }

    /// Every guest, by ID.
    pub fn guests(&self) -> &BTreeMap<u32, Guest> {
        &self.guests
    }

    /// One guest.
    pub fn guest(&self, id: u32) -> Option<&Guest> {
        self.guests.get(&id)
    }
}

fn merge<T: Clone>(value: &mut Option<T>, default: &Option<T>) {
    if value.is_none() {
        value.clone_from(default);
    }
}

/// Parses ID strings; the schema has already checked they are digits.
fn parse_ids(ids: &[String]) -> Vec<u32> {
    ids.iter().filter_map(|id| id.trim().parse().ok()).collect()
}
