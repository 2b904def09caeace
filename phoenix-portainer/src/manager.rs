//! `PortainerManager`: the server (`portainer/server`), the agents' environments
//! (`portainer/endpoint/<vmid>`) and the stacks deployed through them (`stack/<name>@<vmid>`).
//!
//! Observe is one status check, then (when Portainer answers and has its administrator) one list of
//! environments, one list of stacks and one compose file per declared stack found. A stack is compared
//! by the digest of its compose file and by its variables; a secret variable shows as `(sensitive)`, or
//! `(sensitive, differs)` when the live value is not the one configured, so no plan holds a secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use phoenix_core::config::stacks::Stack as StackConfig;
use phoenix_core::config::{PortainerRole, Secret};
use phoenix_core::engine::change::diff_declared;
use phoenix_core::engine::resource::{SENSITIVE, is_sensitive_name};
use phoenix_core::traefik::DEFAULT_ENVIRONMENT;
use phoenix_core::{
    Action, Address, Change, Consequence, Desired, Estate, GuestSpec, Manager, ManagerError, Observed,
    PortainerStep, Resource, ResourceKind, Round,
};
use phoenix_pve::guest::GuestExec;
use phoenix_pve::host::sha256_hex;
use phoenix_pve::resolve_secret;
use serde_json::{Value, json};

use crate::assets::{self, DEFAULT_FILES_ROOT, Prepared};
use crate::client::{GitSource, Pair, Portainer, PortainerError};
use crate::docker::{self, DockerHosts, FOREIGN};

/// The variable that marks a stack as deployed by Phoenix: only such stacks are ever removed.
pub const OWNER_VARIABLE: &str = "PHOENIX_OWNER";
const OWNER_VALUE: &str = "phoenix";

/// A live sensitive variable whose value is not the configured one.
const SENSITIVE_DIFFERS: &str = "(sensitive, differs)";

/// Looks up an environment variable (secret references name them).
pub type Lookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The manager of everything Phoenix does through Portainer.
pub struct PortainerManager {
    portainer: Portainer,
    config_dir: PathBuf,
    env: Lookup,
    /// Compose files by stack name: where each was found and its text, or why it cannot be read.
    sources: BTreeMap<String, Result<(PathBuf, String), String>>,
    /// Each stack as deployed in each of its environments (its compose file rewritten for what it builds
    /// and places), or why it cannot be.
    compose: BTreeMap<(String, String), Result<Prepared, String>>,
    /// Where stacks' files go on a VM.
    files_root: String,
    /// The Portainer name of each agent VM's environment.
    environments: BTreeMap<u32, String>,
    /// How long apply waits for a server that does not answer yet (it may be starting).
    ready_timeout: Duration,
    /// Commands inside VMs, for the server's and agents' own containers and the server VM's stacks;
    /// without it those are not planned.
    docker: Option<DockerHosts>,
    /// The VM of the Portainer server, whose stacks are deployed with Compose directly.
    primary: Option<u32>,
    /// The declared stacks.
    stacks: BTreeMap<String, StackConfig>,
}

impl PortainerManager {
    /// The manager for `estate`, reading each stack's compose file from `config_dir` now; `env` looks up
    /// the environment variables that secret references name (at observe and apply, never kept).
    pub fn new(portainer: Portainer, estate: &Estate, config_dir: &Path, env: Lookup) -> PortainerManager {
        let sources = estate
            .files()
            .stacks
            .docker_stacks
            .iter()
            .filter(|(_, stack)| stack.git.is_none())
            .map(|(name, stack)| (name.clone(), read_compose(config_dir, name, stack)))
            .collect();
        let environments = estate
            .guests()
            .values()
            .filter_map(|guest| match &guest.spec {
                GuestSpec::Vm(vm) if vm.portainer_role == Some(PortainerRole::Agent) => Some((
                    guest.id,
                    vm.portainer_environment_name
                        .clone()
                        .unwrap_or_else(|| guest.name().to_owned()),
                )),
                _ => None,
            })
            .collect();
        let mut manager = PortainerManager {
            portainer,
            config_dir: config_dir.to_owned(),
            env,
            sources,
            compose: BTreeMap::new(),
            files_root: DEFAULT_FILES_ROOT.to_owned(),
            environments,
            ready_timeout: Duration::from_secs(300),
            docker: None,
            primary: estate.guests().values().find_map(|guest| match &guest.spec {
                GuestSpec::Vm(vm) if vm.portainer_role == Some(PortainerRole::Primary) => Some(guest.id),
                _ => None,
            }),
            stacks: estate.files().stacks.docker_stacks.clone(),
        };
        manager.prepare();
        manager
    }

    /// Keeps stacks' files under `root` on their VMs instead of [`DEFAULT_FILES_ROOT`].
    pub fn with_files_root(mut self, root: &str) -> PortainerManager {
        self.files_root = root.to_owned();
        self.prepare();
        self
    }

    fn prepare(&mut self) {
        let mut compose = BTreeMap::new();
        for (name, source) in &self.sources {
            let Some(stack) = self.stacks.get(name) else {
                continue;
            };
            let mut environments: Vec<(&str, &[phoenix_core::config::stacks::StackFile])> = stack
                .environments
                .iter()
                .map(|(environment, settings)| (environment.as_str(), settings.files.as_slice()))
                .collect();
            if !stack.environments.contains_key(DEFAULT_ENVIRONMENT) {
                environments.push((DEFAULT_ENVIRONMENT, &[]));
            }
            for (environment, files) in environments {
                let prepared = source.clone().and_then(|(path, text)| {
                    assets::prepare(name, files, &path, &text, &self.config_dir, &self.files_root)
                });
                compose.insert((name.clone(), environment.to_owned()), prepared);
            }
        }
        self.compose = compose;
    }

    /// Stack `name` prepared for the environment `config` (its resource's) runs with, or why it cannot
    /// be deployed.
    fn prepared(&self, name: &str, config: &StackConfig) -> Result<&Prepared, ManagerError> {
        if config.git.is_some() {
            return Err(ManagerError::failed(format!("stack `{name}` comes from Git")));
        }
        let environment = config
            .chosen_environment()
            .map_or(DEFAULT_ENVIRONMENT, |(environment, _)| environment);
        match self.compose.get(&(name.to_owned(), environment.to_owned())) {
            Some(Ok(prepared)) => Ok(prepared),
            Some(Err(why)) => Err(ManagerError::failed(why.clone())),
            None => Err(ManagerError::failed(format!(
                "stack `{name}` has no compose file read for its environment `{environment}`"
            ))),
        }
    }

    /// Puts a stack's files and images on its VM before it is deployed.
    async fn ensure_assets(
        &self,
        resource: &Resource,
        vmid: u32,
        prepared: &Prepared,
    ) -> Result<(), ManagerError> {
        if prepared.has_assets() {
            let host = self.docker_host(resource, vmid)?;
            assets::ensure(host.as_ref(), prepared).await?;
        }
        Ok(())
    }

    /// Removes what earlier versions of a stack left on its VM, where there is a channel into it.
    async fn prune_assets(&self, resource: &Resource, vmid: u32, name: &str, prepared: &Prepared) {
        if let Ok(host) = self.docker_host(resource, vmid) {
            assets::prune(host.as_ref(), name, prepared).await;
        }
    }

    /// Runs the Portainer server's and agents' containers (`portainer/docker/<vmid>`) through `hosts`.
    pub fn with_docker(mut self, hosts: DockerHosts) -> PortainerManager {
        self.docker = Some(hosts);
        self
    }

    /// The channel into a VM for its Portainer container.
    fn docker_host(&self, resource: &Resource, vmid: u32) -> Result<Arc<dyn GuestExec>, ManagerError> {
        let hosts = self
            .docker
            .as_ref()
            .ok_or_else(|| ManagerError::failed(format!("no channel into VM {vmid} to run Docker")))?;
        Ok(hosts(vmid, resource.node.as_deref()))
    }

    /// Waits at most this long for the server at apply (default five minutes).
    pub fn with_ready_timeout(mut self, timeout: Duration) -> PortainerManager {
        self.ready_timeout = timeout;
        self
    }

    /// The compose text and variables to deploy, secrets resolved.
    fn deployment(&self, name: &str, stack: &StackConfig) -> Result<(String, Vec<Pair>), ManagerError> {
        let content = self.prepared(name, stack)?.compose.clone();
        Ok((content, self.variables(name, stack)?))
    }

    /// The Git repository of a stack that comes from one, its password resolved.
    fn git_source(&self, name: &str, stack: &StackConfig) -> Result<Option<GitSource>, ManagerError> {
        let Some(git) = &stack.git else {
            return Ok(None);
        };
        let credentials = match (&git.username, &git.password) {
            (Some(user), Some(password)) => {
                let lookup = |variable: &str| (self.env)(variable);
                let password = resolve_secret(password, &lookup, &self.config_dir).map_err(|error| {
                    ManagerError::failed(format!("the Git password of stack {name}: {error}"))
                })?;
                Some((user.clone(), password))
            }
            (None, None) => None,
            _ => {
                return Err(ManagerError::failed(format!(
                    "stack {name}: a Git `username` needs its `password`, and a password its username"
                )));
            }
        };
        Ok(Some(GitSource {
            url: git.repository_url.clone(),
            reference: git.reference.clone(),
            compose_file: git.compose_file.clone(),
            credentials,
        }))
    }

    /// A stack's variables, secrets resolved, with the mark of Phoenix's ownership.
    fn variables(&self, name: &str, stack: &StackConfig) -> Result<Vec<Pair>, ManagerError> {
        let mut env = Vec::new();
        let lookup = |variable: &str| (self.env)(variable);
        for variable in variables(stack) {
            let value = resolve_secret(&variable.value, &lookup, &self.config_dir).map_err(|error| {
                ManagerError::failed(format!("variable {} of stack {name}: {error}", variable.name))
            })?;
            env.push(Pair {
                name: variable.name.clone(),
                value: value.expose().to_owned(),
            });
        }
        env.push(Pair {
            name: OWNER_VARIABLE.to_owned(),
            value: OWNER_VALUE.to_owned(),
        });
        Ok(env)
    }

    /// The fields a stack is compared by: `compose` (a digest), `env` (secrets masked).
    fn stack_fields(&self, name: &str, stack: &StackConfig) -> BTreeMap<String, Value> {
        let (compose, assets) = match (&stack.git, self.prepared(name, stack)) {
            (Some(git), _) => (
                git_fields(&git.repository_url, &git.reference, &git.compose_file),
                BTreeMap::new(),
            ),
            (None, Ok(prepared)) => (Value::String(digest(&prepared.compose)), prepared.fields()),
            (None, Err(why)) => (Value::String(format!("unreadable: {why}")), BTreeMap::new()),
        };
        let compose_field = if stack.git.is_some() { "git" } else { "compose" };
        let mut env: serde_json::Map<String, Value> = variables(stack)
            .map(|variable| {
                let value = match &variable.value {
                    Secret::Plain(value) if !is_sensitive_name(&variable.name) => value.clone(),
                    _ => SENSITIVE.to_owned(),
                };
                (variable.name.clone(), Value::String(value))
            })
            .collect();
        env.insert(OWNER_VARIABLE.to_owned(), Value::String(OWNER_VALUE.to_owned()));
        let mut fields = assets;
        fields.insert(compose_field.to_owned(), compose);
        fields.insert("env".to_owned(), Value::Object(env));
        fields
    }

    /// The fields of a stack on the server's VM, deployed with Compose directly: the digest of its compose
    /// file and variables (secrets resolved, so a changed secret is a change; never shown), and that it runs.
    fn direct_fields(&self, name: &str, stack: &StackConfig) -> BTreeMap<String, Value> {
        let deployed = match self.direct_deployment(name, stack) {
            Ok((_, _, digest)) => digest,
            Err(error) => format!("(cannot be deployed: {error})"),
        };
        let mut fields = self
            .prepared(name, stack)
            .map(Prepared::fields)
            .unwrap_or_default();
        fields.insert("deployed".to_owned(), Value::String(deployed));
        fields.insert("running".to_owned(), Value::Bool(true));
        fields
    }

    /// The compose text, variables and digest of a stack deployed with Compose directly.
    fn direct_deployment(
        &self,
        name: &str,
        stack: &StackConfig,
    ) -> Result<(String, BTreeMap<String, String>, String), ManagerError> {
        let (content, env) = self.deployment(name, stack)?;
        let variables: BTreeMap<String, String> =
            env.into_iter().map(|pair| (pair.name, pair.value)).collect();
        let mut material = content.clone();
        for (variable, value) in &variables {
            material.push_str(&format!("\n{variable}={value}"));
        }
        Ok((content, variables, digest(&material)))
    }

    /// Whether a stack resource is on the server's VM (deployed with Compose directly).
    fn is_direct(&self, desired: &Resource) -> bool {
        matches!(desired.address, Address::Stack { vmid, .. } if Some(vmid) == self.primary)
    }

    /// A live stack's fields, its sensitive values masked as the desired ones are, or marked as differing.
    fn live_stack_fields(
        &self,
        desired: Option<(&str, &StackConfig)>,
        stack: &crate::client::Stack,
        content: Option<&str>,
    ) -> BTreeMap<String, Value> {
        let lookup = |variable: &str| (self.env)(variable);
        let declared: BTreeMap<&str, &Secret> = desired
            .map(|(_, config)| {
                variables(config)
                    .map(|variable| (variable.name.as_str(), &variable.value))
                    .collect()
            })
            .unwrap_or_default();
        let env: serde_json::Map<String, Value> = stack
            .env
            .iter()
            .map(|pair| {
                let masked = match declared.get(pair.name.as_str()) {
                    Some(Secret::Plain(_)) | None if !is_sensitive_name(&pair.name) => pair.value.clone(),
                    Some(secret) => match resolve_secret(secret, &lookup, &self.config_dir) {
                        Ok(value) if value.expose() == pair.value => SENSITIVE.to_owned(),
                        _ => SENSITIVE_DIFFERS.to_owned(),
                    },
                    None => SENSITIVE.to_owned(),
                };
                (pair.name.clone(), Value::String(masked))
            })
            .collect();
        let mut fields = BTreeMap::from([
            ("env".to_owned(), Value::Object(env)),
            ("id".to_owned(), json!(stack.id)),
        ]);
        match (&stack.git, content) {
            (Some(git), _) => {
                fields.insert(
                    "git".to_owned(),
                    git_fields(&git.url, &git.reference, &git.compose_file),
                );
                fields.insert("commit".to_owned(), Value::String(git.commit.clone()));
            }
            (None, Some(content)) => {
                fields.insert("compose".to_owned(), Value::String(digest(content)));
            }
            (None, None) => {}
        }
        fields
    }

    async fn wait_until_ready(&self) -> Result<(), ManagerError> {
        let deadline = Instant::now() + self.ready_timeout;
        loop {
            match self.portainer.version().await {
                Ok(_) => return Ok(()),
                Err(error) if Instant::now() >= deadline => return Err(portainer_error(error)),
                Err(error) => tracing::debug!(%error, "waiting for Portainer"),
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    async fn endpoint_id(&self, vmid: u32, name: &str) -> Result<u64, ManagerError> {
        let endpoints = self.portainer.endpoints().await.map_err(portainer_error)?;
        endpoints
            .iter()
            .find(|endpoint| endpoint.name == name)
            .map(|endpoint| endpoint.id)
            .ok_or_else(|| {
                ManagerError::failed(format!(
                    "Portainer has no environment `{name}` for VM {vmid} (portainer/endpoint/{vmid} makes it)"
                ))
            })
    }
}

/// The live `images` and `files` of a stack; none when the VM cannot be asked (stopped, say), so the plan
/// puts them in place and apply says what is wrong. One VM that does not answer fails no other stack.
async fn observe_assets(guest: &dyn GuestExec, prepared: &Prepared) -> BTreeMap<String, Value> {
    match assets::observe(guest, prepared).await {
        Ok(fields) => fields,
        Err(error) => {
            tracing::debug!(guest = guest.describe(), %error, "cannot read a stack's images and files");
            BTreeMap::new()
        }
    }
}

/// Whether Phoenix deployed a stack.
fn is_owned(stack: &crate::client::Stack) -> bool {
    stack
        .env
        .iter()
        .any(|pair| pair.name == OWNER_VARIABLE && pair.value == OWNER_VALUE)
}

/// The `git` field of a stack from a repository.
fn git_fields(url: &str, reference: &str, compose_file: &str) -> Value {
    json!({ "url": url, "reference": reference, "compose_file": compose_file })
}

/// Whether a change to a stack needs it deployed again: anything but its images and files alone (which
/// [`assets::ensure`] puts back without touching the containers).
fn redeploys(change: &Change) -> bool {
    change.action == Action::Create
        || change
            .fields
            .iter()
            .any(|field| field.field != "images" && field.field != "files")
}

/// The variables of the environment VMs deploy.
fn variables(stack: &StackConfig) -> impl Iterator<Item = &phoenix_core::config::stacks::StackVariable> {
    stack
        .chosen_environment()
        .into_iter()
        .flat_map(|(_, environment)| &environment.variables)
}

fn digest(content: &str) -> String {
    format!("sha256:{}", sha256_hex(content.as_bytes()))
}

/// The compose file of a stack, where [`StackConfig::compose_candidates`] finds it first.
fn read_compose(config_dir: &Path, name: &str, stack: &StackConfig) -> Result<(PathBuf, String), String> {
    let candidates = stack.compose_candidates(name, config_dir);
    for path in &candidates {
        if let Ok(text) = std::fs::read_to_string(path) {
            return Ok((path.clone(), text));
        }
    }
    let tried: Vec<String> = candidates.iter().map(|path| path.display().to_string()).collect();
    Err(format!(
        "stack `{name}` has no compose file: none of {} exists",
        tried.join(", ")
    ))
}

fn portainer_error(error: PortainerError) -> ManagerError {
    match error {
        PortainerError::Unreachable { .. } => ManagerError::Failed {
            message: error.to_string(),
            details: Some("the readiness check failed: what depends on Portainer is skipped".to_owned()),
        },
        other => ManagerError::failed(other.to_string()),
    }
}

/// The environment name and the VM of a stack resource, from the endpoint resources of the same round.
fn environment_of(desired: &[Resource], vmid: u32) -> Option<&str> {
    desired.iter().find_map(|resource| match &resource.desired {
        Desired::Portainer(PortainerStep::Endpoint { vmid: of, name, .. }) if *of == vmid => {
            Some(name.as_str())
        }
        _ => None,
    })
}

#[async_trait]
impl Manager for PortainerManager {
    fn kind(&self) -> ResourceKind {
        ResourceKind::Stack
    }

    /// The server, the environments, and stacks on agent VMs; the server's and agents' containers when
    /// there is a channel into VMs. A stack on the server's own VM is not deployed yet.
    fn manages(&self, desired: &Resource) -> bool {
        match (&desired.desired, &desired.address) {
            (Desired::Portainer(PortainerStep::Container { .. }), _) => self.docker.is_some(),
            (Desired::Portainer(_), _) => true,
            (Desired::Stack(_), _) if self.is_direct(desired) => self.docker.is_some(),
            (Desired::Stack(config), Address::Stack { name, vmid }) => {
                desired
                    .depends_on
                    .contains(&Address::Portainer(format!("endpoint/{vmid}")))
                    && (self.docker.is_some() || !self.prepared(name, config).is_ok_and(Prepared::has_assets))
            }
            _ => false,
        }
    }

    async fn observe(
        &self,
        desired: &[Resource],
        _round: Round,
    ) -> Result<BTreeMap<Address, Observed>, ManagerError> {
        let mut observed = BTreeMap::new();
        for resource in desired {
            if let Desired::Portainer(PortainerStep::Container { vmid, run }) = &resource.desired {
                let host = self.docker_host(resource, *vmid)?;
                if let Some(fields) = docker::observe(host.as_ref(), run).await {
                    observed.insert(resource.address.clone(), Observed::new(fields));
                }
            }
            if let (Address::Stack { name, vmid }, Desired::Stack(config)) =
                (&resource.address, &resource.desired)
                && self.is_direct(resource)
            {
                let host = self.docker_host(resource, *vmid)?;
                if let Some((deployed, running)) = docker::observe_stack(host.as_ref(), name).await {
                    let mut fields = match self.prepared(name, config) {
                        Ok(prepared) => observe_assets(host.as_ref(), prepared).await,
                        Err(_) => BTreeMap::new(),
                    };
                    fields.insert("deployed".to_owned(), Value::String(deployed));
                    fields.insert("running".to_owned(), Value::Bool(running));
                    observed.insert(resource.address.clone(), Observed::new(fields));
                }
            }
        }
        let server = Address::Portainer("server".to_owned());
        let mut status = BTreeMap::from([("reachable".to_owned(), json!(false))]);
        let reachable = self.portainer.version().await.is_ok();
        let admin = if reachable {
            status.insert("reachable".to_owned(), json!(true));
            self.portainer.admin_exists().await.unwrap_or(false)
        } else {
            false
        };
        let listed = if admin {
            match (self.portainer.endpoints().await, self.portainer.stacks().await) {
                (Ok(endpoints), Ok(stacks)) => {
                    status.insert("login".to_owned(), json!("ok"));
                    Some((endpoints, stacks))
                }
                (Err(error), _) | (_, Err(error)) => {
                    status.insert("login".to_owned(), Value::String(error.to_string()));
                    None
                }
            }
        } else {
            None
        };
        for resource in desired {
            if let Desired::Portainer(PortainerStep::Server { admin_user }) = &resource.desired {
                let mut fields = status.clone();
                if admin {
                    fields.insert("administrator".to_owned(), Value::String(admin_user.clone()));
                }
                observed.insert(server.clone(), Observed::new(fields));
            }
        }
        let Some((endpoints, stacks)) = listed else {
            return Ok(observed);
        };
        for resource in desired {
            match (&resource.desired, &resource.address) {
                (Desired::Portainer(PortainerStep::Endpoint { name, .. }), address) => {
                    if let Some(endpoint) = endpoints.iter().find(|endpoint| endpoint.name == *name) {
                        let fields = BTreeMap::from([
                            ("name".to_owned(), Value::String(endpoint.name.clone())),
                            ("url".to_owned(), Value::String(endpoint.url.clone())),
                        ]);
                        observed.insert(address.clone(), Observed::new(fields));
                    }
                }
                (Desired::Stack(config), Address::Stack { name, vmid }) => {
                    let Some(environment) = environment_of(desired, *vmid) else {
                        continue;
                    };
                    let Some(endpoint) = endpoints.iter().find(|endpoint| endpoint.name == environment)
                    else {
                        continue;
                    };
                    let Some(stack) = stacks
                        .iter()
                        .find(|stack| stack.name == *name && stack.endpoint_id == endpoint.id)
                    else {
                        continue;
                    };
                    // A Git stack's file is its repository's: compared by the repository, not the text.
                    let content = match (&stack.git, &config.git) {
                        (Some(_), Some(_)) => None,
                        _ => Some(
                            self.portainer
                                .stack_file(stack.id)
                                .await
                                .map_err(portainer_error)?,
                        ),
                    };
                    let mut fields = self.live_stack_fields(Some((name, config)), stack, content.as_deref());
                    if let Ok(prepared) = self.prepared(name, config)
                        && prepared.has_assets()
                    {
                        let host = self.docker_host(resource, *vmid)?;
                        fields.extend(observe_assets(host.as_ref(), prepared).await);
                    }
                    observed.insert(resource.address.clone(), Observed::new(fields));
                }
                _ => {}
            }
        }
        // Stacks Phoenix deployed on a declared environment that the configuration no longer lists.
        for resource in desired {
            let Desired::Portainer(PortainerStep::Endpoint { vmid, name, .. }) = &resource.desired else {
                continue;
            };
            let Some(endpoint) = endpoints.iter().find(|endpoint| endpoint.name == *name) else {
                continue;
            };
            for stack in stacks.iter().filter(|stack| stack.endpoint_id == endpoint.id) {
                let owned = is_owned(stack);
                let address = Address::Stack {
                    name: stack.name.clone(),
                    vmid: *vmid,
                };
                if owned && !observed.contains_key(&address) && !desired.iter().any(|r| r.address == address)
                {
                    let fields = BTreeMap::from([("id".to_owned(), json!(stack.id))]);
                    observed.insert(address, Observed::new(fields));
                }
            }
        }
        Ok(observed)
    }

    fn diff(&self, desired: &Resource, observed: Option<&Observed>) -> Vec<Change> {
        match (&desired.desired, &desired.address) {
            (Desired::Portainer(PortainerStep::Server { admin_user }), address) => {
                let wanted = BTreeMap::from([
                    ("reachable".to_owned(), json!(true)),
                    ("administrator".to_owned(), Value::String(admin_user.clone())),
                    // Refused credentials show here, and fail this step before any environment or stack.
                    ("login".to_owned(), json!("ok")),
                ]);
                let live = observed.cloned().unwrap_or_default();
                diff_declared(address, wanted, Some(&live))
            }
            (Desired::Portainer(PortainerStep::Endpoint { .. }), address) => {
                diff_declared(address, desired.declared_fields(), observed)
            }
            (Desired::Portainer(PortainerStep::Container { .. }), address) => {
                let mut changes = diff_declared(address, desired.declared_fields(), observed);
                // Replacing a container Phoenix did not run destroys someone else's.
                for field in changes.iter_mut().flat_map(|change| &mut change.fields) {
                    if field.field == "container"
                        && field
                            .old
                            .as_ref()
                            .and_then(Value::as_str)
                            .is_some_and(|old| old.ends_with(FOREIGN))
                    {
                        field.consequence = Consequence::Destructive;
                    }
                }
                changes
            }
            (Desired::Stack(config), Address::Stack { name, .. }) if self.is_direct(desired) => {
                diff_declared(&desired.address, self.direct_fields(name, config), observed)
            }
            (Desired::Stack(config), Address::Stack { name, .. }) => {
                diff_declared(&desired.address, self.stack_fields(name, config), observed)
            }
            _ => Vec::new(),
        }
    }

    async fn apply(&self, desired: Option<&Resource>, change: &Change) -> Result<(), ManagerError> {
        match (desired.map(|resource| &resource.desired), &change.address) {
            (Some(Desired::Portainer(PortainerStep::Container { vmid, run })), _) => {
                let resource = desired.expect("matched on it");
                let host = self.docker_host(resource, *vmid)?;
                let replace_foreign = change.consequence() == Consequence::Destructive;
                docker::apply(host.as_ref(), run, replace_foreign).await
            }
            (Some(Desired::Portainer(PortainerStep::Server { .. })), _) => {
                self.wait_until_ready().await?;
                if !self.portainer.admin_exists().await.map_err(portainer_error)? {
                    self.portainer.init_admin().await.map_err(portainer_error)?;
                    tracing::info!("created Portainer's administrator");
                }
                // Logs in, so that refused credentials fail here, before any environment or stack.
                self.portainer.endpoints().await.map_err(portainer_error)?;
                Ok(())
            }
            (Some(Desired::Portainer(PortainerStep::Endpoint { name, url, .. })), _) => {
                let endpoints = self.portainer.endpoints().await.map_err(portainer_error)?;
                match endpoints.iter().find(|endpoint| endpoint.name == *name) {
                    Some(endpoint) if endpoint.url == *url => Ok(()),
                    Some(endpoint) => self
                        .portainer
                        .update_endpoint_url(endpoint.id, url)
                        .await
                        .map_err(portainer_error),
                    None => self
                        .portainer
                        .create_endpoint(name, Some(url))
                        .await
                        .map(|_| ())
                        .map_err(portainer_error),
                }
            }
            (Some(Desired::Stack(config)), Address::Stack { name, vmid })
                if desired.is_some_and(|resource| self.is_direct(resource)) =>
            {
                let resource = desired.expect("matched on it");
                let host = self.docker_host(resource, *vmid)?;
                let prepared = self.prepared(name, config)?;
                assets::ensure(host.as_ref(), prepared).await?;
                if redeploys(change) {
                    let (content, variables, digest) = self.direct_deployment(name, config)?;
                    docker::deploy_stack(host.as_ref(), name, &content, &variables, &digest).await?;
                }
                assets::prune(host.as_ref(), name, prepared).await;
                Ok(())
            }
            (Some(Desired::Stack(config)), Address::Stack { name, vmid }) => {
                let resource = desired.expect("matched on it");
                if let Some(source) = self.git_source(name, config)? {
                    return self.deploy_git(*vmid, name, config, &source).await;
                }
                let prepared = self.prepared(name, config)?;
                self.ensure_assets(resource, *vmid, prepared).await?;
                if !redeploys(change) {
                    return Ok(());
                }
                let (content, env) = self.deployment(name, config)?;
                let (endpoint_id, existing) = self.live_stack(*vmid, name, Some(false)).await?;
                match existing {
                    Some(stack) => self
                        .portainer
                        .update_stack(stack.id, endpoint_id, &content, &env)
                        .await
                        .map_err(portainer_error)?,
                    None => self
                        .portainer
                        .create_stack(endpoint_id, name, &content, &env)
                        .await
                        .map(|_| ())
                        .map_err(portainer_error)?,
                }
                if prepared.has_assets() {
                    self.prune_assets(resource, *vmid, name, prepared).await;
                }
                Ok(())
            }
            (None, Address::Stack { name, vmid }) if change.action == Action::Delete => {
                let (endpoint_id, existing) = self.live_stack(*vmid, name, None).await?;
                let Some(stack) = existing else {
                    return Ok(());
                };
                if !is_owned(&stack) {
                    return Err(ManagerError::failed(format!(
                        "stack {name} on VM {vmid} was not deployed by Phoenix (no {OWNER_VARIABLE}); it is left alone"
                    )));
                }
                self.portainer
                    .delete_stack(stack.id, endpoint_id)
                    .await
                    .map_err(portainer_error)
            }
            _ => Err(ManagerError::failed(format!(
                "{} is not something Phoenix does through Portainer",
                change.address
            ))),
        }
    }
}

impl PortainerManager {
    /// Deploys a stack from its Git repository: created, or pointed at the configured repository and
    /// redeployed (a stack of that name made from a file is removed first, when Phoenix deployed it).
    async fn deploy_git(
        &self,
        vmid: u32,
        name: &str,
        config: &StackConfig,
        source: &GitSource,
    ) -> Result<(), ManagerError> {
        let env = self.variables(name, config)?;
        let (endpoint_id, existing) = self.live_stack(vmid, name, Some(true)).await?;
        match existing {
            Some(stack) => self
                .portainer
                .redeploy_git_stack(stack.id, endpoint_id, source, &env)
                .await
                .map_err(portainer_error),
            None => self
                .portainer
                .create_git_stack(endpoint_id, name, source, &env)
                .await
                .map(|_| ())
                .map_err(portainer_error),
        }
    }

    /// The environment of agent VM `vmid` and its stack `name`, when Portainer has one. With `from_git`,
    /// one of the other kind (made from a file where Git is declared, or the other way round) is removed,
    /// when Phoenix deployed it, and not returned: it is made again.
    async fn live_stack(
        &self,
        vmid: u32,
        name: &str,
        from_git: Option<bool>,
    ) -> Result<(u64, Option<crate::client::Stack>), ManagerError> {
        let environment_name = self.environment_name(vmid)?;
        let endpoint_id = self.endpoint_id(vmid, &environment_name).await?;
        let stacks = self.portainer.stacks().await.map_err(portainer_error)?;
        let existing = stacks
            .into_iter()
            .find(|stack| stack.name == name && stack.endpoint_id == endpoint_id);
        match (existing, from_git) {
            (Some(stack), Some(git)) if stack.git.is_some() != git => {
                self.replace_kind(&stack, endpoint_id).await?;
                Ok((endpoint_id, None))
            }
            (existing, _) => Ok((endpoint_id, existing)),
        }
    }

    /// Removes a stack that must be made again from another kind of source (a file, or Git): only one
    /// that Phoenix deployed.
    async fn replace_kind(&self, stack: &crate::client::Stack, endpoint_id: u64) -> Result<(), ManagerError> {
        if !is_owned(stack) {
            return Err(ManagerError::failed(format!(
                "stack {} was not deployed by Phoenix (no {OWNER_VARIABLE}); it is left alone, and this one is not deployed",
                stack.name
            )));
        }
        self.portainer
            .delete_stack(stack.id, endpoint_id)
            .await
            .map_err(portainer_error)
    }

    /// The Portainer name of an agent VM's environment, as the manager's estate declares it.
    fn environment_name(&self, vmid: u32) -> Result<String, ManagerError> {
        self.environments
            .get(&vmid)
            .cloned()
            .ok_or_else(|| ManagerError::failed(format!("VM {vmid} is not a Portainer agent")))
    }
}
