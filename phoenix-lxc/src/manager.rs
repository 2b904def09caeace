//! [`LxcManager`]: the `Manager` implementation over the Proxmox API.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use phoenix_core::config::ContainerConfig;
use phoenix_core::{
    Action, Address, Change, Desired, FieldChange, Manager, ManagerError, Observed, Operation, Resource,
    ResourceKind,
};
use phoenix_pve::host::HostChannel;
use phoenix_pve::lifecycle::{GuestHandle, GuestType};
use phoenix_pve::props;
use phoenix_pve::{Client, Form, Method, PveError, compare, firewall};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::fields::{self, OWNER_TAG};
use crate::guest::Guest;
use phoenix_pve::guest::{self as inside, GuestScripts, Script};

/// Reads of container configs at once.
const READ_CONCURRENCY: usize = 8;
/// Where templates missing from a storage are downloaded from.
const TEMPLATE_MIRROR: &str = "https://download.proxmox.com/images/system";

/// Manages LXC containers on one Proxmox cluster.
pub struct LxcManager {
    client: Arc<Client>,
    default_node: String,
    domain: Option<String>,
    known: Mutex<Known>,
    guest: Option<Guest>,
    scripts: Arc<GuestScripts>,
}

/// What observe learned that apply needs: where containers live and which snapshot clones start from.
#[derive(Default)]
struct Known {
    nodes: BTreeMap<u32, String>,
    template_snapshots: BTreeMap<u32, String>,
}

/// A failure of the API or of work inside a container.
enum LxcError {
    Pve(PveError),
    Guest(ManagerError),
}

impl From<PveError> for LxcError {
    fn from(error: PveError) -> LxcError {
        LxcError::Pve(error)
    }
}

impl From<ManagerError> for LxcError {
    fn from(error: ManagerError) -> LxcError {
        LxcError::Guest(error)
    }
}

impl From<LxcError> for ManagerError {
    fn from(error: LxcError) -> ManagerError {
        match error {
            LxcError::Pve(error) => ManagerError::from(error),
            LxcError::Guest(error) => error,
        }
    }
}

impl LxcManager {
    /// A manager using `client`; guests that name no node go to `default_node`; `domain` is the default
    /// DNS search domain.
    pub fn new(client: Arc<Client>, default_node: impl Into<String>, domain: Option<String>) -> LxcManager {
        LxcManager {
            client,
            default_node: default_node.into(),
            domain,
            known: Mutex::new(Known::default()),
            guest: None,
            scripts: Arc::new(GuestScripts::default()),
        }
    }

    /// Lets the manager work inside containers through `host`: features, application scripts and health
    /// checks. Without it, those are left alone.
    pub fn with_guest_access(mut self, host: Arc<dyn HostChannel>, scripts: GuestScripts) -> LxcManager {
        self.guest = Some(Guest {
            host,
            pve_root: "/etc/pve".to_owned(),
        });
        self.scripts = Arc::new(scripts);
        self
    }

    /// Reads and writes container config files under `root` instead of `/etc/pve` (for tests).
    pub fn with_pve_root(mut self, root: impl Into<String>) -> LxcManager {
        if let Some(guest) = &mut self.guest {
            guest.pve_root = root.into();
        }
        self
    }

    /// The scripts a container runs, in order: its features, then its application script.
    fn scripts_for(&self, container: &ContainerConfig) -> Vec<Script> {
        let extra: BTreeMap<String, String> = container
            .bootstrap_ca_url
            .iter()
            .map(|url| ("PHOENIX_CA_URL".to_owned(), url.clone()))
            .collect();
        self.scripts.for_guest(
            &container.features,
            container.application_script.as_deref(),
            &extra,
        )
    }

    /// The declared fields, with the scripts' digests when the manager can work inside containers.
    fn wanted(&self, container: &ContainerConfig) -> BTreeMap<String, Value> {
        let mut wanted = fields::desired_fields(container, self.domain.as_deref());
        if self.guest.is_some() {
            let scripts: serde_json::Map<String, Value> = self
                .scripts_for(container)
                .iter()
                .map(|script| (script.record.clone(), Value::String(script.digest())))
                .collect();
            if !scripts.is_empty() {
                wanted.insert("guest_scripts".to_owned(), Value::Object(scripts));
            }
            let raw: serde_json::Map<String, Value> = fields::raw_keys(container)
                .into_iter()
                .map(|(key, values)| (key, json_strings(values)))
                .collect();
            if !raw.is_empty() {
                wanted.insert("raw_lxc".to_owned(), Value::Object(raw));
            }
        }
        wanted
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().expect("no code panics while holding this lock")
    }

    fn node_of(&self, vmid: u32, resource: Option<&Resource>) -> String {
        if let Some(node) = self.known().nodes.get(&vmid) {
            return node.clone();
        }
        resource
            .and_then(|resource| resource.node.clone())
            .unwrap_or_else(|| self.default_node.clone())
    }

    async fn read(&self, node: &str, vmid: u32, status: &str) -> Result<Observed, LxcError> {
        let config: BTreeMap<String, Value> = self
            .client
            .get(&format!("/nodes/{node}/lxc/{vmid}/config"), &[])
            .await?;
        let names = self.handle(node, vmid).snapshot_names().await?;
        let (enabled, rules) = firewall::read(&self.client, &format!("/nodes/{node}/lxc/{vmid}")).await?;
        let firewall = fields::ObservedFirewall { enabled, rules };
        let records = match (&self.guest, status) {
            // A container the channel cannot reach (on another node of a cluster, say) shows no records;
            // apply then says why it cannot run its scripts.
            (Some(guest), "running") => match inside::records(&guest.exec(vmid)).await {
                Ok(records) => Some(records),
                Err(error) => {
                    tracing::warn!(vmid, %error, "feature records not readable");
                    None
                }
            },
            _ => None,
        };
        let raw = match &self.guest {
            Some(guest) => Some(guest.raw_keys(node, vmid).await?),
            None => None,
        };
        let mut fields = fields::observed_fields(&config, status, &names, &firewall, records.as_ref());
        if let Some(raw) = raw {
            let raw = raw
                .into_iter()
                .map(|(key, values)| (key, json_strings(values)))
                .collect();
            fields.insert("raw_lxc".to_owned(), Value::Object(raw));
        }
        Ok(Observed { fields })
    }

    async fn status(&self, node: &str, vmid: u32) -> Result<String, PveError> {
        self.handle(node, vmid).status().await
    }

    fn handle<'a>(&'a self, node: &'a str, vmid: u32) -> GuestHandle<'a> {
        GuestHandle {
            client: &self.client,
            node,
            kind: GuestType::Lxc,
            vmid,
        }
    }

    async fn create(&self, resource: &Resource, container: &ContainerConfig) -> Result<(), LxcError> {
        let vmid = resource.address.guest_id().expect("a container address");
        let node = self.node_of(vmid, Some(resource));
        match container
            .clone_from_ctid
            .as_deref()
            .and_then(|source| source.parse::<u32>().ok())
        {
            Some(source) => {
                let source_node = self.node_of(source, None);
                let snapshot = self.known().template_snapshots.get(&source).cloned();
                self.client.wait_unlocked(&source_node, "lxc", source).await?;
                let mut form = Form::new()
                    .number("newid", vmid)
                    .text("hostname", &container.name)
                    .flag("full", true);
                if let Some(snapshot) = snapshot {
                    form = form.text("snapname", snapshot);
                }
                if let Some(storage) = &container.storage_pool {
                    form = form.text("storage", storage);
                }
                if source_node != node {
                    form = form.text("target", &node);
                }
                self.client
                    .run_task(
                        Method::POST,
                        &format!("/nodes/{source_node}/lxc/{source}/clone"),
                        &form,
                    )
                    .await?;
            }
            None => {
                let template = template_volume(container.template.as_deref().unwrap_or_default());
                self.ensure_template(&node, &template).await?;
                let storage = container
                    .storage_pool
                    .clone()
                    .unwrap_or_else(|| "local-lvm".to_owned());
                let size = container.storage_size_gb.unwrap_or(8);
                let form = Form::new()
                    .number("vmid", vmid)
                    .text("ostemplate", template)
                    .text("hostname", &container.name)
                    .text("storage", &storage)
                    .text("rootfs", format!("{storage}:{size}"))
                    .flag("unprivileged", container.unprivileged.unwrap_or(true))
                    .text("tags", OWNER_TAG);
                self.client
                    .run_task(Method::POST, &format!("/nodes/{node}/lxc"), &form)
                    .await?;
            }
        }
        self.known().nodes.insert(vmid, node.clone());
        // Everything else converges like an update of the new container.
        let desired = self.wanted(container);
        let status = self.status(&node, vmid).await?;
        let observed = self.read(&node, vmid, &status).await?;
        self.update(&node, vmid, &fields::diff(&desired, &observed.fields), container)
            .await
    }

    /// Puts a template on its storage when it is not there yet.
    async fn ensure_template(&self, node: &str, volume: &str) -> Result<(), PveError> {
        let (storage, file) = volume.split_once(':').unwrap_or(("local", volume));
        let content: Vec<Value> = self
            .client
            .get(
                &format!("/nodes/{node}/storage/{storage}/content"),
                &[("content", "vztmpl")],
            )
            .await?;
        if content.iter().any(|item| item["volid"] == volume) {
            return Ok(());
        }
        let filename = file.trim_start_matches("vztmpl/");
        tracing::info!(volume, "downloading the container template");
        let form = Form::new()
            .text("content", "vztmpl")
            .text("filename", filename)
            .text("url", format!("{TEMPLATE_MIRROR}/{filename}"));
        self.client
            .run_task(
                Method::POST,
                &format!("/nodes/{node}/storage/{storage}/download-url"),
                &form,
            )
            .await?;
        Ok(())
    }

    /// Applies changed fields: one config write, then disk growth, start, and missing snapshots.
    async fn update(
        &self,
        node: &str,
        vmid: u32,
        changes: &[FieldChange],
        container: &ContainerConfig,
    ) -> Result<(), LxcError> {
        let base = format!("/nodes/{node}/lxc/{vmid}");
        self.client.wait_unlocked(node, "lxc", vmid).await?;
        let mut config = Form::new();
        let mut resizes = Vec::new();
        let mut start = false;
        let mut snapshots = Vec::new();
        let mut run_scripts = false;
        let mut removed: Vec<String> = Vec::new();
        let mut raw_keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut firewall_enabled = None;
        let mut firewall_rules = None;
        for change in changes {
            let Some(new) = &change.new else { continue };
            match change.field.as_str() {
                "hostname" | "nameserver" | "searchdomain" => {
                    config = config.text(&change.field, new.as_str().unwrap_or_default())
                }
                "cores" | "memory" | "swap" | "onboot" => {
                    config = config.text(&change.field, new.to_string())
                }
                "net0" => config = config.text("net0", props::render_object(new, Some("name"))),
                "startup" | "features" => {
                    config = config.text(&change.field, props::render_object(new, None))
                }
                "owned" => config = config.text("tags", self.handle(node, vmid).tags_with_owner().await?),
                "devices" => {
                    let wanted = new.as_array().cloned().unwrap_or_default();
                    for (index, path) in wanted.iter().enumerate() {
                        config = config.text(&format!("dev{index}"), path.as_str().unwrap_or_default());
                    }
                    // Every other devN entry goes, such as those a clone inherits from its source, whatever its
                    // index (entries may have gaps, dev0 and dev3), so the live keys are read.
                    let live: Value = self.client.get(&format!("{base}/config"), &[]).await?;
                    removed.extend(
                        live.as_object()
                            .into_iter()
                            .flatten()
                            .filter_map(|(key, _)| key.strip_prefix("dev")?.parse::<usize>().ok())
                            .filter(|index| *index >= wanted.len())
                            .map(|index| format!("dev{index}")),
                    );
                }
                "rootfs_gb" => resizes.push(("rootfs".to_owned(), new.as_f64().unwrap_or_default())),
                "status" => start = new == "running",
                "snapshots" => snapshots.extend(compare::added_names(change.old.as_ref(), new)),
                "unprivileged" => {}
                "guest_scripts" => run_scripts = true,
                "raw_lxc" => {
                    raw_keys = new
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(key, values)| {
                            let values = values.as_array().into_iter().flatten();
                            (
                                key.clone(),
                                values.filter_map(Value::as_str).map(str::to_owned).collect(),
                            )
                        })
                        .collect();
                }
                "firewall_enabled" => firewall_enabled = Some(new == true),
                "firewall_rules" => {
                    let old = change
                        .old
                        .as_ref()
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    firewall_rules = Some((old, new.as_array().cloned().unwrap_or_default()));
                }
                field if field.starts_with("mount ") => {
                    let path = field.trim_start_matches("mount ");
                    let index = new["index"].as_u64().unwrap_or_default();
                    let key = format!("mp{index}");
                    if let Some(host_path) = new["host_path"].as_str() {
                        let read_only = if new["ro"] == true { ",ro=1" } else { "" };
                        config = config.text(&key, format!("{host_path},mp={path}{read_only}"));
                    } else if let Some(volume) = new["volume"].as_str() {
                        // An existing volume: written again only for its read-only flag, grown only when
                        // the declared size is larger (Proxmox never shrinks).
                        let read_only = new["ro"] == true;
                        let old = change.old.as_ref();
                        let live_size = old.and_then(|old| old["size_gb"].as_f64());
                        if old.is_some_and(|old| (old["ro"] == true) != read_only) {
                            let size = live_size.map(|size| format!(",size={size}G")).unwrap_or_default();
                            let flag = if read_only { ",ro=1" } else { "" };
                            config = config.text(&key, format!("{volume},mp={path}{size}{flag}"));
                        }
                        let size = new["size_gb"].as_f64().unwrap_or_default();
                        if live_size.is_some_and(|live| size > live) {
                            resizes.push((key, size));
                        }
                    } else {
                        let storage = new["storage"].as_str().unwrap_or_default();
                        let size = new["size_gb"].as_f64().unwrap_or(1.0);
                        config = config.text(&key, format!("{storage}:{size},mp={path}"));
                    }
                }
                other => tracing::warn!(field = other, "no way to apply this field yet"),
            }
        }
        if !raw_keys.is_empty()
            && let Some(guest) = &self.guest
        {
            guest.set_raw_keys(node, vmid, &raw_keys).await?;
        }
        if !removed.is_empty() {
            config = config.text("delete", removed.join(","));
        }
        if !config.pairs().is_empty() {
            let _: Value = self.client.put(&format!("{base}/config"), &config).await?;
        }
        for (disk, size) in resizes {
            self.handle(node, vmid).resize(&disk, size).await?;
        }
        if let Some((live, wanted)) = firewall_rules {
            firewall::converge_rules(&self.client, &base, &live, &wanted).await?;
        }
        if let Some(enabled) = firewall_enabled {
            firewall::set_enabled(&self.client, &base, enabled).await?;
        }
        if start {
            self.handle(node, vmid).start().await?;
        }
        if let Some(guest) = &self.guest {
            self.inside(guest, node, vmid, container, run_scripts).await?;
        }
        for name in snapshots {
            self.handle(node, vmid).snapshot(&name).await?;
        }
        Ok(())
    }

    /// Work inside the running container: its scripts whose records differ (between the lifecycle
    /// snapshots), then its health check.
    async fn inside(
        &self,
        guest: &Guest,
        node: &str,
        vmid: u32,
        container: &ContainerConfig,
        run_scripts: bool,
    ) -> Result<(), LxcError> {
        if run_scripts {
            let records = inside::records(&guest.exec(vmid)).await?;
            let pending: Vec<Script> = self
                .scripts_for(container)
                .into_iter()
                .filter(|script| records.get(&script.record) != Some(&script.digest()))
                .collect();
            if !pending.is_empty() {
                if container.enable_lifecycle_snapshots {
                    self.handle(node, vmid).snapshot_once("pre-features").await?;
                }
                let declared = serde_json::to_string(container).expect("configuration serialises");
                inside::write_guest_config(&guest.exec(vmid), &declared).await?;
                for script in &pending {
                    if script.text.is_empty() {
                        return Err(ManagerError::failed(format!(
                            "no script for `{}`: add it to the configuration directory",
                            script.record
                        ))
                        .into());
                    }
                    inside::apply_script(&guest.exec(vmid), script).await?;
                }
                if container.enable_lifecycle_snapshots {
                    self.handle(node, vmid).snapshot_once("post-features").await?;
                }
            }
        }
        if let Some(check) = &container.health_check {
            inside::health_check(&guest.exec(vmid), check).await?;
        }
        Ok(())
    }

    async fn delete(&self, vmid: u32) -> Result<(), LxcError> {
        let node = self.node_of(vmid, None);
        self.handle(&node, vmid).destroy().await?;
        self.known().nodes.remove(&vmid);
        Ok(())
    }
}

fn json_strings(values: Vec<String>) -> Value {
    Value::Array(values.into_iter().map(Value::String).collect())
}

/// A template volume id; a host path (the earlier version's form) is looked up by file name on `local`.
fn template_volume(template: &str) -> String {
    if template.starts_with('/') {
        let file = template.rsplit('/').next().unwrap_or(template);
        return format!("local:vztmpl/{file}");
    }
    template.to_owned()
}

#[async_trait]
impl Manager for LxcManager {
    fn kind(&self) -> ResourceKind {
        ResourceKind::Lxc
    }

    async fn observe(&self, desired: &[Resource]) -> Result<BTreeMap<Address, Observed>, ManagerError> {
        let resources = self
            .client
            .cluster_resources()
            .await
            .map_err(ManagerError::from)?;
        let declared: BTreeMap<u32, &Resource> = desired
            .iter()
            .filter_map(|resource| resource.address.guest_id().map(|id| (id, resource)))
            .collect();
        let mut targets = Vec::new();
        {
            let mut known = self.known();
            for resource in desired {
                if let (Some(id), Desired::Container(container)) =
                    (resource.address.guest_id(), &resource.desired)
                    && let Some(snapshot) = &container.template_snapshot_name
                {
                    known.template_snapshots.insert(id, snapshot.clone());
                }
            }
            for entry in resources.iter().filter(|entry| entry.kind == "lxc") {
                let (Some(vmid), Some(node)) = (entry.vmid, entry.node.clone()) else {
                    continue;
                };
                known.nodes.insert(vmid, node.clone());
                if declared.contains_key(&vmid) || entry.is_owned() {
                    targets.push((vmid, node, entry.status.clone().unwrap_or_default()));
                }
            }
        }
        let limit = Arc::new(Semaphore::new(READ_CONCURRENCY));
        let mut reads = tokio::task::JoinSet::new();
        for (vmid, node, status) in targets {
            let client = Arc::clone(&self.client);
            let limit = Arc::clone(&limit);
            let mut manager = LxcManager::new(client, node.clone(), None);
            manager.guest = self.guest.clone();
            reads.spawn(async move {
                let _permit = limit.acquire().await.expect("the semaphore is never closed");
                (vmid, manager.read(&node, vmid, &status).await)
            });
        }
        let mut observed = BTreeMap::new();
        while let Some(joined) = reads.join_next().await {
            let (vmid, result) = joined.expect("reads do not panic");
            observed.insert(Address::Lxc(vmid), result?);
        }
        Ok(observed)
    }

    fn diff(&self, desired: &Resource, observed: Option<&Observed>) -> Vec<Change> {
        let Desired::Container(container) = &desired.desired else {
            return Vec::new();
        };
        let wanted = self.wanted(container);
        let Some(observed) = observed else {
            return vec![Change::create(desired.address.clone(), &wanted)];
        };
        let changed = fields::diff(&wanted, &observed.fields);
        if changed.is_empty() {
            return Vec::new();
        }
        let replace = changed.iter().any(|field| field.field == "unprivileged");
        let action = if replace { Action::Replace } else { Action::Update };
        vec![Change {
            address: desired.address.clone(),
            action,
            fields: changed,
        }]
    }

    async fn apply(&self, desired: Option<&Resource>, change: &Change) -> Result<(), ManagerError> {
        let vmid = change
            .address
            .guest_id()
            .ok_or_else(|| ManagerError::failed("not a container address"))?;
        let container = desired.and_then(|resource| match &resource.desired {
            Desired::Container(container) => Some(container.as_ref()),
            _ => None,
        });
        let result = match (change.action, desired, container) {
            (Action::Delete, _, _) => self.delete(vmid).await,
            (Action::Create, Some(resource), Some(container)) => self.create(resource, container).await,
            (Action::Replace, Some(resource), Some(container)) => {
                let node = self.node_of(vmid, Some(resource));
                self.handle(&node, vmid).ensure_owned("replaces").await?;
                match self.delete(vmid).await {
                    Ok(()) => self.create(resource, container).await,
                    Err(error) => Err(error),
                }
            }
            (Action::Update, Some(resource), Some(container)) => {
                let node = self.node_of(vmid, Some(resource));
                self.update(&node, vmid, &change.fields, container).await
            }
            _ => {
                return Err(ManagerError::failed(format!(
                    "{} has no container configuration",
                    change.address
                )));
            }
        };
        result.map_err(ManagerError::from)
    }

    async fn operate(
        &self,
        desired: Option<&Resource>,
        address: &Address,
        operation: &Operation,
    ) -> Result<(), ManagerError> {
        let vmid = address
            .guest_id()
            .ok_or_else(|| ManagerError::failed("not a container address"))?;
        let node = self.node_of(vmid, desired);
        match operation {
            Operation::HealthCheck => {
                let check = desired.and_then(|resource| match &resource.desired {
                    Desired::Container(container) => container.health_check.clone(),
                    _ => None,
                });
                let (Some(guest), Some(check)) = (&self.guest, check) else {
                    return Err(ManagerError::failed(format!(
                        "{address} has no health check, or Phoenix cannot reach the node to run it"
                    )));
                };
                inside::health_check(&guest.exec(vmid), &check).await
            }
            Operation::Delete => {
                self.handle(&node, vmid).operate(operation).await?;
                self.known().nodes.remove(&vmid);
                Ok(())
            }
            other => self.handle(&node, vmid).operate(other).await,
        }
    }
}
