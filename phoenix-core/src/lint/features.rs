//! The catalogue of features Phoenix ships: scripts applied inside guests after their first start.
//!
//! The scripts are in `phoenix-core/features/` and pass `shellcheck` in CI. A configuration directory may
//! add its own as `features/<name>.sh`.

/// Features shipped with Phoenix, by name.
pub const CATALOGUE: &[Feature] = &[
    shipped(
        "base_setup",
        "locale, time zone, base packages, unattended upgrades",
        include_str!("../../features/base_setup.sh"),
    ),
    shipped(
        "docker",
        "Docker Engine and compose, from the distribution by default",
        include_str!("../../features/docker.sh"),
    ),
    shipped(
        "nvidia",
        "NVIDIA user-space driver matching the host driver",
        include_str!("../../features/nvidia.sh"),
    ),
    shipped(
        "trusted_ca",
        "trust the internal Step-CA root certificate",
        include_str!("../../features/trusted_ca.sh"),
    ),
    shipped(
        "step_cli",
        "the step CLI, bootstrapped against the internal CA",
        include_str!("../../features/step_cli.sh"),
    ),
    shipped(
        "step_ca",
        "the Step-CA certificate authority itself",
        include_str!("../../features/step_ca.sh"),
    ),
    shipped(
        "traefik",
        "the Traefik reverse proxy, fed by the sync step",
        include_str!("../../features/traefik.sh"),
    ),
    shipped(
        "vllm",
        "a vLLM OpenAI-compatible server from vllm_engine_config",
        include_str!("../../features/vllm.sh"),
    ),
    shipped(
        "ollama",
        "the Ollama model server",
        include_str!("../../features/ollama.sh"),
    ),
];

const fn shipped(name: &'static str, summary: &'static str, script: &'static str) -> Feature {
    Feature {
        name,
        summary,
        script,
    }
}

/// One shipped feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    /// Name used in `features` lists.
    pub name: &'static str,
    /// What it installs.
    pub summary: &'static str,
    /// The shell script run inside the guest.
    pub script: &'static str,
}

/// The script of a shipped feature.
pub fn shipped_script(name: &str) -> Option<&'static str> {
    CATALOGUE
        .iter()
        .find(|feature| feature.name == name)
        .map(|feature| feature.script)
}
