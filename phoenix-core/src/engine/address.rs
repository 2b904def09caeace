//! Stable addresses of managed things: `lxc/101`, `vm/1002`, `host/zfs/pool/tank`, `stack/qdrant@1002`,
//! `sync/traefik`. They name resources in plans, logs, JSON output and command-line targets.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Which manager owns a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    /// Host setup steps (ZFS, NFS, firewall, ...).
    Host,
    /// LXC containers.
    Lxc,
    /// QEMU/KVM virtual machines.
    Vm,
    /// Docker stacks, and the Portainer server and environments that deploy them.
    Stack,
    /// Sync steps that publish the estate to Traefik, DNS, ...
    Sync,
}

impl ResourceKind {
    /// Every kind, in the order the plan lists them when nothing else orders them.
    pub const ALL: [ResourceKind; 5] = [
        ResourceKind::Host,
        ResourceKind::Lxc,
        ResourceKind::Vm,
        ResourceKind::Stack,
        ResourceKind::Sync,
    ];

    /// The first segment of addresses of this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Host => "host",
            ResourceKind::Lxc => "lxc",
            ResourceKind::Vm => "vm",
            ResourceKind::Stack => "stack",
            ResourceKind::Sync => "sync",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The address of one resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Address {
    /// A host step; the path after `host/` (`zfs/pool/tank`).
    Host(String),
    /// A container by CTID.
    Lxc(u32),
    /// A VM by VMID.
    Vm(u32),
    /// The Portainer that deploys stacks, owned by the stack manager; the path after `portainer/`
    /// (`server`, `endpoint/1002`).
    Portainer(String),
    /// A stack deployed on a VM.
    Stack {
        /// Stack name from the stacks file.
        name: String,
        /// The VM it runs on.
        vmid: u32,
    },
    /// A sync step; the name after `sync/` (`traefik`).
    Sync(String),
}

impl Address {
    /// The manager kind that owns this address.
    pub fn kind(&self) -> ResourceKind {
        match self {
            Address::Host(_) => ResourceKind::Host,
            Address::Lxc(_) => ResourceKind::Lxc,
            Address::Vm(_) => ResourceKind::Vm,
            Address::Stack { .. } => ResourceKind::Stack,
            Address::Sync(_) => ResourceKind::Sync,
            Address::Portainer(_) => ResourceKind::Stack,
        }
    }

    /// The guest ID, for containers and VMs.
    pub fn guest_id(&self) -> Option<u32> {
        match self {
            Address::Lxc(id) | Address::Vm(id) => Some(*id),
            _ => None,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Host(path) => write!(f, "host/{path}"),
            Address::Lxc(id) => write!(f, "lxc/{id}"),
            Address::Vm(id) => write!(f, "vm/{id}"),
            Address::Stack { name, vmid } => write!(f, "stack/{name}@{vmid}"),
            Address::Sync(name) => write!(f, "sync/{name}"),
            Address::Portainer(path) => write!(f, "portainer/{path}"),
        }
    }
}

/// Why a string is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a resource address (lxc/ID, vm/ID, host/..., stack/NAME@VMID, sync/NAME, portainer/...)"
)]
pub struct AddressParseError(pub String);

impl FromStr for Address {
    type Err = AddressParseError;

    fn from_str(text: &str) -> Result<Address, AddressParseError> {
        let invalid = || AddressParseError(text.to_owned());
        let (kind, rest) = text.split_once('/').ok_or_else(invalid)?;
        if rest.is_empty() {
            return Err(invalid());
        }
        match kind {
            "host" => Ok(Address::Host(rest.to_owned())),
            "lxc" => rest.parse().map(Address::Lxc).map_err(|_| invalid()),
            "vm" => rest.parse().map(Address::Vm).map_err(|_| invalid()),
            "stack" => {
                let (name, vmid) = rest.rsplit_once('@').ok_or_else(invalid)?;
                let vmid = vmid.parse().map_err(|_| invalid())?;
                if name.is_empty() {
                    return Err(invalid());
                }
                Ok(Address::Stack {
                    name: name.to_owned(),
                    vmid,
                })
            }
            "sync" => Ok(Address::Sync(rest.to_owned())),
            "portainer" => Ok(Address::Portainer(rest.to_owned())),
            _ => Err(invalid()),
        }
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Address, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        for text in [
            "lxc/101",
            "vm/1002",
            "host/zfs/pool/quickOS",
            "stack/qdrant_service@1002",
            "sync/traefik",
            "portainer/endpoint/1002",
        ] {
            let address: Address = text.parse().expect("valid address");
            assert_eq!(address.to_string(), text);
        }
    }

    #[test]
    fn bad_addresses_are_refused() {
        for text in ["101", "lxc/", "lxc/abc", "stack/qdrant", "stack/@1002", "disk/1"] {
            assert!(text.parse::<Address>().is_err(), "{text}");
        }
    }
}
