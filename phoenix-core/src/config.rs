//! The typed configuration model: one module per file of a configuration directory.
//!
//! These types are the Rust side of the contract whose JSON side is `schemas/`. Both reject unknown keys;
//! legacy keys of the earlier bash version are accepted and reported as warnings by validation.

pub mod access;
pub mod common;
pub mod firewall;
pub mod hypervisor;
pub mod lxc;
pub mod stacks;
pub mod vm;

pub use common::{
    Direction, FirewallAction, FirewallRule, GuestFirewall, HealthCheck, PortainerRole, RuleAction, Scheme,
    Secret, TraefikService,
};
pub use hypervisor::HypervisorFile;
pub use lxc::{ContainerConfig, LxcFile};
pub use stacks::StacksFile;
pub use vm::{VmConfig, VmFile};

/// The four files of a configuration directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileKind {
    /// `phoenix_hypervisor_config.json`.
    Hypervisor,
    /// `phoenix_lxc_configs.json`.
    Lxc,
    /// `phoenix_vm_configs.json`.
    Vm,
    /// `phoenix_stacks_config.json` (optional).
    Stacks,
}

impl FileKind {
    /// All kinds, in the order files are validated and reported.
    pub const ALL: [FileKind; 4] = [
        FileKind::Hypervisor,
        FileKind::Lxc,
        FileKind::Vm,
        FileKind::Stacks,
    ];

    /// The file name inside a configuration directory.
    pub fn file_name(self) -> &'static str {
        match self {
            FileKind::Hypervisor => "phoenix_hypervisor_config.json",
            FileKind::Lxc => "phoenix_lxc_configs.json",
            FileKind::Vm => "phoenix_vm_configs.json",
            FileKind::Stacks => "phoenix_stacks_config.json",
        }
    }

    /// The short name used on the command line (`phoenix schema lxc`).
    pub fn short_name(self) -> &'static str {
        match self {
            FileKind::Hypervisor => "hypervisor",
            FileKind::Lxc => "lxc",
            FileKind::Vm => "vm",
            FileKind::Stacks => "stacks",
        }
    }

    /// Whether a configuration directory must contain this file.
    pub fn is_required(self) -> bool {
        !matches!(self, FileKind::Stacks)
    }
}

/// The typed content of a whole configuration directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigFiles {
    /// The host.
    pub hypervisor: HypervisorFile,
    /// The containers.
    pub lxc: LxcFile,
    /// The VMs.
    pub vm: VmFile,
    /// The stacks; empty when the file is absent.
    pub stacks: StacksFile,
}
