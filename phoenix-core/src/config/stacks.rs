//! `phoenix_stacks_config.json`: Docker stacks deployed through Portainer, with per-environment settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::common::{FirewallRule, Secret};

/// The whole stacks file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StacksFile {
    /// Editor hint; ignored by Phoenix.
    #[serde(rename = "$schema", default)]
    pub schema: Option<String>,
    /// Stacks keyed by name; VMs name them in `docker_stacks`.
    #[serde(default)]
    pub docker_stacks: BTreeMap<String, Stack>,
}

/// One Docker Compose stack.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Stack {
    /// What the stack is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Compose file, relative to the configuration directory (empty: `stacks/<name>/docker-compose.yml`).
    #[serde(default)]
    pub compose_file_path: String,
    /// Deploy the compose file of a Git repository instead (through Portainer).
    #[serde(default)]
    pub git: Option<StackGit>,
    /// Settings per environment (`production`, `testing`, ...).
    #[serde(default)]
    pub environments: BTreeMap<String, StackEnvironment>,
}

/// A stack whose compose file Portainer clones from a Git repository.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StackGit {
    /// The repository Portainer clones.
    pub repository_url: String,
    /// The branch or tag to deploy, as a Git reference.
    #[serde(default = "default_reference")]
    pub reference: String,
    /// The compose file's path inside the repository.
    #[serde(default = "default_compose_file")]
    pub compose_file: String,
    /// User for a private repository.
    #[serde(default)]
    pub username: Option<String>,
    /// Password or access token for `username`.
    #[serde(default)]
    pub password: Option<Secret>,
}

fn default_reference() -> String {
    "refs/heads/main".to_owned()
}

fn default_compose_file() -> String {
    "docker-compose.yml".to_owned()
}

impl Stack {
    /// The environment a stack runs with on its VM: the one a stack resource carries (`resources` keeps
    /// only the environment its VM names), else `production`.
    pub fn chosen_environment(&self) -> Option<(&str, &StackEnvironment)> {
        if self.environments.len() == 1 {
            return self
                .environments
                .iter()
                .next()
                .map(|(name, settings)| (name.as_str(), settings));
        }
        let name = crate::traefik::DEFAULT_ENVIRONMENT;
        self.environments.get(name).map(|settings| (name, settings))
    }

    /// Where the compose file of stack `name` may be, in the order Phoenix looks: `compose_file_path`
    /// under `config_dir`, `stacks/<name>/docker-compose.yml` there, and the same beside it (the earlier
    /// version kept `stacks/` next to its `etc/`). Paths only; nothing is read.
    pub fn compose_candidates(&self, name: &str, config_dir: &Path) -> Vec<PathBuf> {
        let mut candidates = Vec::new();
        if !self.compose_file_path.is_empty() {
            candidates.push(config_dir.join(&self.compose_file_path));
        }
        candidates.push(config_dir.join("stacks").join(name).join("docker-compose.yml"));
        if let Some(parent) = config_dir.parent() {
            candidates.push(parent.join("stacks").join(name).join("docker-compose.yml"));
        }
        candidates.dedup();
        candidates
    }
}

/// The settings of a stack in one environment.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StackEnvironment {
    /// Environment variables passed to the stack.
    #[serde(default)]
    pub variables: Vec<StackVariable>,
    /// Files copied into the stack's containers.
    #[serde(default)]
    pub files: Vec<StackFile>,
    /// Per-service settings keyed by compose service name.
    #[serde(default)]
    pub services: BTreeMap<String, StackService>,
    /// Firewall rules the VM running this stack needs.
    #[serde(default)]
    pub firewall_rules: Vec<FirewallRule>,
}

/// One environment variable of a stack.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StackVariable {
    /// Variable name.
    pub name: String,
    /// Value; a secret reference for anything sensitive.
    pub value: Secret,
}

/// A file placed into a stack's containers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StackFile {
    /// Source file, relative to the configuration directory.
    pub source: String,
    /// Absolute destination path inside the container.
    pub destination_in_container: String,
}

impl StackFile {
    /// Where the source may be, in the order Phoenix looks: `source` under `config_dir`, then in the
    /// stack's own directory (`stack_dir`, where its compose file is) by ever shorter trailing parts of
    /// `source`. The earlier version named sources by where its host mounted them
    /// (`persistent-storage/thinkheads_ai/configs/prod.env` is the stack's `configs/prod.env`). Paths
    /// only; nothing is read.
    pub fn source_candidates(&self, config_dir: &Path, stack_dir: Option<&Path>) -> Vec<PathBuf> {
        let mut candidates = vec![config_dir.join(&self.source)];
        if let Some(stack_dir) = stack_dir {
            let parts: Vec<&str> = self.source.split('/').filter(|part| !part.is_empty()).collect();
            for start in 0..parts.len() {
                let tail = &parts[start..];
                if tail.contains(&"..") {
                    continue;
                }
                candidates.push(stack_dir.join(tail.join("/")));
            }
        }
        candidates.dedup();
        candidates
    }
}

/// Settings of one compose service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StackService {
    /// Traefik labels added to the service.
    #[serde(default)]
    pub traefik_labels: Vec<String>,
}
