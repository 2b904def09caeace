//! The QEMU/KVM virtual machine manager of Phoenix: cloud-image templates, clones configured through
//! cloud-init, features through the guest agent, for the VMs of `phoenix_vm_configs.json`.
//!
//! The manager is not written yet; the configuration it will read is modelled and validated in
//! `phoenix_core::config::vm`.
