//! The catalogue of features Phoenix ships: scripts applied inside guests after their first start.

/// Features shipped with Phoenix, by name. A configuration directory may add its own in `features/`.
pub const CATALOGUE: &[Feature] = &[
    Feature {
        name: "base_setup",
        summary: "locale, time zone, base packages, unattended upgrades",
    },
    Feature {
        name: "docker",
        summary: "Docker Engine and the compose plugin",
    },
    Feature {
        name: "nvidia",
        summary: "NVIDIA user-space driver and CUDA matching the host driver",
    },
    Feature {
        name: "trusted_ca",
        summary: "trust the internal Step-CA root certificate",
    },
    Feature {
        name: "step_cli",
        summary: "the step CLI, bootstrapped against the internal CA",
    },
    Feature {
        name: "step_ca",
        summary: "the Step-CA certificate authority itself",
    },
    Feature {
        name: "traefik",
        summary: "the Traefik reverse proxy, fed by the sync step",
    },
    Feature {
        name: "vllm",
        summary: "a vLLM OpenAI-compatible server from vllm_engine_config",
    },
    Feature {
        name: "ollama",
        summary: "the Ollama model server",
    },
];

/// One shipped feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    /// Name used in `features` lists.
    pub name: &'static str,
    /// What it installs.
    pub summary: &'static str,
}

/// Whether a feature of this name ships with Phoenix.
pub fn is_shipped(name: &str) -> bool {
    CATALOGUE.iter().any(|feature| feature.name == name)
}
