//! The Portainer manager of Phoenix: deploys the Docker stacks of `phoenix_stacks_config.json` to the VMs
//! that name them, through the Portainer API.
//!
//! [`Portainer`] is the API client ([`PortainerSettings`] says how to reach it); [`PortainerManager`]
//! converges `portainer/server`, `portainer/endpoint/<vmid>` and `stack/<name>@<vmid>` through it.

mod assets;
mod client;
pub mod docker;
mod manager;
mod settings;

pub use assets::{BUILD_LABEL, DEFAULT_FILES_ROOT, MISSING};
pub use docker::DockerHosts;
pub use manager::{Lookup, OWNER_VARIABLE, PortainerManager};

pub use client::{Endpoint, Pair, Portainer, PortainerError, Stack};
pub use settings::{PortainerAuth, PortainerSettings, PortainerSettingsError};
