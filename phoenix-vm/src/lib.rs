//! The QEMU/KVM virtual machine manager of Phoenix: cloud-image templates, clones configured through
//! cloud-init, disk growth, start, snapshots and firewalls of the VMs of `phoenix_vm_configs.json`,
//! converging in one run and changing nothing in the second.
//!
//! Not yet here: features and health checks through the QEMU guest agent, NFS volumes inside guests,
//! and custom cloud-init user-data snippets.

pub mod cloudinit;
mod fields;
mod manager;

pub use manager::VmManager;
