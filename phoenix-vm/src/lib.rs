//! The QEMU/KVM virtual machine manager of Phoenix: cloud-image templates, clones configured through
//! cloud-init, disk growth, start, snapshots and firewalls of the VMs of `phoenix_vm_configs.json`,
//! converging in one run and changing nothing in the second.
//!
//! Like the container manager, it is a driver of the shared guest kit ([`phoenix_pve::guests`]): its own
//! are the field vocabulary [`VmField`], the pure [`VmDiff`] and the IO of [`Vms`].
//!
//! With guest scripts it runs features, NFS volumes and health checks inside VMs through the QEMU guest
//! agent (`phoenix_pve::guest::QemuAgent`); with a user-data template and a way to reach the node it
//! renders each VM's cloud-init user-data into a snippet attached with `cicustom` ([`cloudinit`]).

pub mod cloudinit;
pub mod fields;
mod import;
mod manager;

pub use fields::VmField;
pub use manager::{VmDiff, VmManager, Vms, manager};
