//! Host setup for Phoenix: the Proxmox node itself, converged from `phoenix_hypervisor_config.json`.
//!
//! One [`HostManager`] owns every `host/*` resource. Each kind of host step is a module with the same three
//! parts: what the configuration declares (`desired`, a map of fields), what the node has (`observe`), and
//! how to change it (`apply`). Steps Proxmox has an API for go through the API (`timezone`, `dns`,
//! `firewall`, `firewall_parts`, `network`, `repositories`, `access`, `storage`); the rest go through the
//! host channel (`packages`, `locale`, `apparmor`, `user`, `subids`, `nvidia`, `zfs`, `snapshots`, `nfs`), and are left
//! unplanned when there is none.

mod access;
mod apparmor;
mod dns;
mod firewall;
mod firewall_parts;
mod locale;
mod manager;
mod network;
mod nfs;
mod node;
mod nvidia;
mod packages;
mod repositories;
mod samba;
mod snapshots;
mod storage;
mod subids;
mod timezone;
mod user;
mod zfs;

pub use manager::{HostManager, manager, manager_for, manager_on};
pub use node::Node;
