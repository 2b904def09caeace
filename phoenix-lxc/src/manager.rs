//! [`LxcManager`]: containers over the Proxmox API, on the shared guest kit ([`phoenix_pve::guests`]).
//!
//! [`ContainerDiff`] is the pure half (the field vocabulary of [`fields`]); [`Containers`] the IO half:
//! reading a container into fields, creating or cloning one, and applying typed field changes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use phoenix_core::config::ContainerConfig;
use phoenix_core::import::Imported;
use phoenix_core::{Desired, Estate, Fields, ManagerError, Resource, TypedChange};
use phoenix_pve::cluster::Placements;
use phoenix_pve::gpu::{self, NvidiaDevices};
use phoenix_pve::guest::{self as inside, GuestScripts, Script};
use phoenix_pve::guests::{GuestDiff, GuestDiffer, GuestDriver, GuestKit, GuestManager, Reads};
use phoenix_pve::host::HostChannel;
use phoenix_pve::lifecycle::{GuestType, Migration};
use phoenix_pve::{Form, Method, PveError, Session, compare, firewall, props};
use serde_json::Value;

use crate::fields::{self, LxcField, OWNER_TAG};
use crate::guest::Guest;

/// Where templates missing from a storage are downloaded from.
const TEMPLATE_MIRROR: &str = "https://download.proxmox.com/images/system";

/// The container manager.
pub type LxcManager = GuestManager<Containers>;

/// Builds the container manager of a session: guests without a node go to the session's default node,
/// the configuration's domain is the default search domain, and with a host channel the manager works
/// inside containers (features, application scripts, health checks) and writes raw `lxc.*` keys.
pub fn manager(session: &Session, estate: &Estate, scripts: GuestScripts) -> LxcManager {
    let domain = estate.files().hypervisor.domain_name.clone();
    let containers = Containers::new(session.kit(GuestType::Lxc), domain);
    let mut containers = match session.host() {
        Some(host) => containers.with_guest_access(Arc::clone(host), scripts),
        None => containers,
    };
    for (node, host) in session.other_hosts() {
        containers = containers.with_node_access(node, Arc::clone(host));
    }
    LxcManager::new(containers)
}

/// The pure half of the container manager: what a configuration declares, in [`LxcField`]s.
#[derive(Debug, Clone, Default)]
pub struct ContainerDiff {
    /// The default DNS search domain.
    pub domain: Option<String>,
    /// The scripts containers run.
    pub scripts: Arc<GuestScripts>,
    /// Whether the manager works inside containers and on their config files: then script digests and
    /// raw LXC keys are declared fields too.
    pub inside: bool,
    /// The node's NVIDIA devices, as discovered when the plan observed (GPU containers' device entries).
    pub gpu: Arc<Mutex<Option<NvidiaDevices>>>,
    /// Where new containers that name no node go, as placed when the cluster was read.
    pub placements: Option<Placements>,
}

impl ContainerDiff {
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
}

impl GuestDiff for ContainerDiff {
    type Field = LxcField;
    type Config = ContainerConfig;

    fn config(resource: &Resource) -> Option<&ContainerConfig> {
        match &resource.desired {
            Desired::Container(container) => Some(container),
            _ => None,
        }
    }

    fn wanted(&self, container: &ContainerConfig) -> Fields<LxcField> {
        let gpu = self.gpu.lock().expect("no code panics while holding this lock");
        let mut wanted = fields::desired_fields(container, self.domain.as_deref(), gpu.as_ref());
        drop(gpu);
        if self.inside {
            let scripts: serde_json::Map<String, Value> = self
                .scripts_for(container)
                .iter()
                .map(|script| (script.record.clone(), Value::String(script.digest())))
                .collect();
            if !scripts.is_empty() {
                wanted.insert(LxcField::GuestScripts, Value::Object(scripts));
            }
            let raw: serde_json::Map<String, Value> = fields::raw_keys(container)
                .into_iter()
                .map(|(key, values)| (key, json_strings(values)))
                .collect();
            if !raw.is_empty() {
                wanted.insert(LxcField::RawLxc, Value::Object(raw));
            }
        }
        wanted
    }

    fn compare(&self, wanted: &Fields<LxcField>, observed: &Fields<LxcField>) -> Vec<TypedChange<LxcField>> {
        fields::compare(wanted, observed)
    }

    fn replaces(change: &TypedChange<LxcField>) -> bool {
        change.field == LxcField::Unprivileged
    }

    fn moves(change: &TypedChange<LxcField>) -> bool {
        change.field == LxcField::Node
    }

    fn placements(&self) -> Option<&Placements> {
        self.placements.as_ref()
    }
}

/// The IO half of the container manager.
pub struct Containers {
    kit: GuestKit,
    differ: GuestDiffer<ContainerDiff>,
    guest: Option<Guest>,
    /// The snapshot each declared template is cloned from.
    template_snapshots: Mutex<BTreeMap<u32, String>>,
    /// Where GPU devices are discovered: a host channel, and the root its paths are read under.
    devices: Option<(Arc<dyn HostChannel>, String)>,
}

impl Containers {
    /// Containers through `kit`; `domain` is the default DNS search domain.
    pub fn new(kit: GuestKit, domain: Option<String>) -> Containers {
        let placements = Some(kit.cluster().placements().clone());
        Containers {
            kit,
            differ: GuestDiffer(ContainerDiff {
                domain,
                placements,
                ..ContainerDiff::default()
            }),
            guest: None,
            template_snapshots: Mutex::default(),
            devices: None,
        }
    }

    /// Lets the manager work inside containers through `host`: features, application scripts and health
    /// checks. Without it, those are left alone.
    /// Device entries of GPU containers are then discovered on the node through `host` too.
    pub fn with_guest_access(mut self, host: Arc<dyn HostChannel>, scripts: GuestScripts) -> Containers {
        self.devices = Some((Arc::clone(&host), "/".to_owned()));
        self.guest = Some(Guest {
            host,
            others: BTreeMap::new(),
            pve_root: "/etc/pve".to_owned(),
        });
        self.differ.0.scripts = Arc::new(scripts);
        self.differ.0.inside = true;
        self
    }

    /// Enters the containers on `node` through `host` (with [`Containers::with_guest_access`], the channel
    /// of the other nodes of a cluster).
    pub fn with_node_access(mut self, node: impl Into<String>, host: Arc<dyn HostChannel>) -> Containers {
        if let Some(guest) = &mut self.guest {
            guest.others.insert(node.into(), host);
        }
        self
    }

    /// Reads and writes container config files under `root` instead of `/etc/pve` (for tests).
    pub fn with_pve_root(mut self, root: impl Into<String>) -> Containers {
        if let Some(guest) = &mut self.guest {
            guest.pve_root = root.into();
        }
        self
    }

    /// Discovers GPU containers' devices through `host`, reading `/dev` and `/proc` under `root` (`/` on a
    /// node; a directory of fixtures in tests). Without it, a GPU container gets only its GPUs' own nodes.
    pub fn with_device_discovery(
        mut self,
        host: Arc<dyn HostChannel>,
        root: impl Into<String>,
    ) -> Containers {
        self.devices = Some((host, root.into()));
        self
    }

    /// The node's NVIDIA devices now, where they can be discovered.
    async fn discover_gpus(&self) -> Result<Option<NvidiaDevices>, ManagerError> {
        let Some((host, root)) = &self.devices else {
            return Ok(None);
        };
        let found = gpu::discover(host.as_ref(), root)
            .await
            .map_err(inside::host_error)?;
        Ok(Some(found))
    }

    fn template_snapshots(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, String>> {
        self.template_snapshots
            .lock()
            .expect("no code panics while holding this lock")
    }

    /// Puts a template on its storage when it is not there yet.
    async fn ensure_template(&self, node: &str, volume: &str) -> Result<(), PveError> {
        let (storage, file) = volume.split_once(':').unwrap_or(("local", volume));
        let content: Vec<Value> = self
            .kit
            .client()
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
        self.kit
            .client()
            .run_task(
                Method::POST,
                &format!("/nodes/{node}/storage/{storage}/download-url"),
                &form,
            )
            .await?;
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
    ) -> Result<(), ManagerError> {
        if run_scripts {
            let handle = self.kit.handle(node, vmid);
            let scripts = self.differ.0.scripts_for(container);
            let declared = serde_json::to_string(container).expect("configuration serialises");
            let lifecycle = container.enable_lifecycle_snapshots;
            inside::run_pending(&guest.exec_on(node, vmid), handle, scripts, lifecycle, &declared).await?;
        }
        if let Some(check) = &container.health_check {
            inside::health_check(&guest.exec_on(node, vmid), check).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl GuestDriver for Containers {
    type Diff = ContainerDiff;

    fn kit(&self) -> &GuestKit {
        &self.kit
    }

    fn differ(&self) -> &GuestDiffer<ContainerDiff> {
        &self.differ
    }

    async fn prepare(&self, desired: &[Resource]) -> Result<(), ManagerError> {
        let with_gpus = desired
            .iter()
            .filter_map(ContainerDiff::config)
            .any(|container| !fields::gpu_indices(container.gpu_assignment.as_deref()).is_empty());
        if with_gpus {
            let found = self.discover_gpus().await?;
            *self
                .differ
                .0
                .gpu
                .lock()
                .expect("no code panics while holding this lock") = found;
        }
        let mut snapshots = self.template_snapshots();
        for resource in desired {
            if let (Some(id), Some(container)) =
                (resource.address.guest_id(), ContainerDiff::config(resource))
                && let Some(snapshot) = &container.template_snapshot_name
            {
                snapshots.insert(id, snapshot.clone());
            }
        }
        Ok(())
    }

    async fn read(
        &self,
        node: &str,
        vmid: u32,
        status: &str,
        wanted: &Fields<LxcField>,
    ) -> Result<Fields<LxcField>, ManagerError> {
        let reads = Reads {
            snapshots: wanted.contains_key(&LxcField::Snapshots),
            firewall: wanted.contains_key(&LxcField::FirewallEnabled)
                || wanted.contains_key(&LxcField::FirewallRules),
            records: wanted.contains_key(&LxcField::GuestScripts),
            node_files: wanted.contains_key(&LxcField::RawLxc),
        };
        Ok(self.read_with_config(node, vmid, status, reads).await?.1)
    }

    async fn import(&self, node: &str, vmid: u32, status: &str) -> Result<Imported, ManagerError> {
        // An entry declares no features (their records are not read) and no snapshots.
        let reads = Reads {
            firewall: true,
            node_files: true,
            ..Reads::default()
        };
        let (config, fields) = self.read_with_config(node, vmid, status, reads).await?;
        Ok(crate::import::entry(vmid, node, &config, &fields))
    }

    async fn create(
        &self,
        resource: &Resource,
        container: &ContainerConfig,
        node: &str,
    ) -> Result<(), ManagerError> {
        let vmid = resource.address.guest_id().expect("a container address");
        match container
            .clone_from_ctid
            .as_deref()
            .and_then(|source| source.parse::<u32>().ok())
        {
            Some(source) => {
                let source_node = self.kit.node_of(source, None);
                let snapshot = self.template_snapshots().get(&source).cloned();
                // Proxmox locks the source while it clones: clones of one source take turns.
                let _turn = self.kit.exclusive(&format!("clone {source}")).await;
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
                let storage = container.storage_pool.as_deref();
                let direct = self
                    .kit
                    .clones_across(&source_node, source, storage, node)
                    .await?;
                if direct && source_node != node {
                    form = form.text("target", node);
                }
                // Something else may hold the source's lock (a backup): then the clone waits for it.
                let client = self.kit.client();
                let path = format!("/nodes/{source_node}/lxc/{source}/clone");
                client
                    .unless_locked(&source_node, "lxc", source, || {
                        client.run_task(Method::POST, &path, &form)
                    })
                    .await?;
                if !direct {
                    // Local storage: cloned beside the source, then moved while it is still stopped.
                    self.kit
                        .handle(&source_node, vmid)
                        .migrate(node, Migration::Offline)
                        .await?;
                }
            }
            None => {
                let template = container.template.as_deref().ok_or_else(|| {
                    ManagerError::failed(format!(
                        "container {vmid} was adopted and is gone: it declares no `template` or `clone_from_ctid` to be created again from"
                    ))
                })?;
                let template = template_volume(template);
                self.ensure_template(node, &template).await?;
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
                self.kit
                    .client()
                    .run_task(Method::POST, &format!("/nodes/{node}/lxc"), &form)
                    .await?;
            }
        }
        Ok(())
    }

    /// One config write, then raw keys, disk growth, firewall, start, work inside, and missing snapshots.
    async fn migrate(&self, node: &str, vmid: u32, target: &str) -> Result<(), ManagerError> {
        let handle = self.kit.handle(node, vmid);
        let how = match handle.status().await?.as_str() {
            "running" => Migration::Restart,
            _ => Migration::Offline,
        };
        handle.migrate(target, how).await?;
        Ok(())
    }

    async fn update(
        &self,
        node: &str,
        vmid: u32,
        changes: &[TypedChange<LxcField>],
        container: &ContainerConfig,
    ) -> Result<(), ManagerError> {
        let client = self.kit.client();
        let handle = self.kit.handle(node, vmid);
        let base = handle.base();
        let mut config = Form::new();
        let mut resizes = Vec::new();
        let mut start = false;
        let mut snapshots = Vec::new();
        let mut run_scripts = false;
        let mut removed: Vec<String> = Vec::new();
        let mut raw_keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut firewall = firewall::FirewallUpdate::default();
        for change in changes {
            let new = &change.new;
            let text = || new.as_str().unwrap_or_default().to_owned();
            match &change.field {
                LxcField::Hostname => config = config.text("hostname", text()),
                LxcField::Nameserver => config = config.text("nameserver", text()),
                LxcField::Searchdomain => config = config.text("searchdomain", text()),
                LxcField::Cores => config = config.text("cores", new.to_string()),
                LxcField::Memory => config = config.text("memory", new.to_string()),
                LxcField::Swap => config = config.text("swap", new.to_string()),
                LxcField::Onboot => config = config.text("onboot", new.to_string()),
                LxcField::Net0 => config = config.text("net0", props::render_object(new, Some("name"))),
                LxcField::Startup => config = config.text("startup", props::render_object(new, None)),
                LxcField::Features => config = config.text("features", props::render_object(new, None)),
                LxcField::Owned => config = config.text("tags", handle.tags_with_owner().await?),
                LxcField::Devices => {
                    let wanted = self.devices_now(node, container, new).await?;
                    for (index, path) in wanted.iter().enumerate() {
                        config = config.text(&format!("dev{index}"), path.as_str().unwrap_or_default());
                    }
                    // Every other devN entry goes, such as those a clone inherits from its source, whatever its
                    // index (entries may have gaps, dev0 and dev3), so the live keys are read.
                    let live: Value = client.get(&format!("{base}/config"), &[]).await?;
                    removed.extend(
                        live.as_object()
                            .into_iter()
                            .flatten()
                            .filter_map(|(key, _)| key.strip_prefix("dev")?.parse::<usize>().ok())
                            .filter(|index| *index >= wanted.len())
                            .map(|index| format!("dev{index}")),
                    );
                }
                LxcField::RootfsGb => resizes.push(("rootfs".to_owned(), new.as_f64().unwrap_or_default())),
                LxcField::Status => start = new == "running",
                LxcField::Snapshots => snapshots.extend(compare::added_names(change.old.as_ref(), new)),
                // A changed `unprivileged` replaces the container; the new one is created with it.
                LxcField::Unprivileged => {}
                // A migration is made before the other changes (`GuestDiff::moves`); how a new container
                // reached its node is only said.
                LxcField::Node | LxcField::Placement => {}
                LxcField::GuestScripts => run_scripts = true,
                LxcField::RawLxc => {
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
                LxcField::FirewallEnabled => firewall.enable(new),
                LxcField::FirewallRules => firewall.rules(change.old.as_ref(), new),
                LxcField::Mount(path) => {
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
                // The diff speaks of mount points one by one (`Mount`), never of all of them at once.
                LxcField::Mounts => {
                    return Err(ManagerError::failed(
                        "mount points change one at a time (`mount <path>`), not as `mounts`",
                    ));
                }
            }
        }
        if !raw_keys.is_empty()
            && let Some(guest) = &self.guest
        {
            // The config file is edited on the node: not while another operation holds the lock.
            handle.wait_unlocked().await?;
            guest.set_raw_keys(node, vmid, &raw_keys).await?;
        }
        if !removed.is_empty() {
            config = config.text("delete", removed.join(","));
        }
        if !config.pairs().is_empty() {
            let path = format!("{base}/config");
            let _: Value = handle.unless_locked(|| client.put(&path, &config)).await?;
        }
        for (disk, size) in resizes {
            handle.unless_locked(|| handle.resize(&disk, size)).await?;
        }
        firewall.apply(client, &base).await?;
        if start {
            handle.unless_locked(|| handle.start()).await?;
        }
        if let Some(guest) = &self.guest {
            self.inside(guest, node, vmid, container, run_scripts).await?;
        }
        for name in snapshots {
            handle.unless_locked(|| handle.snapshot(&name)).await?;
        }
        Ok(())
    }

    async fn health_check(
        &self,
        node: &str,
        vmid: u32,
        container: Option<&ContainerConfig>,
    ) -> Result<(), ManagerError> {
        let check = container.and_then(|container| container.health_check.as_ref());
        let (Some(guest), Some(check)) = (&self.guest, check) else {
            return Err(ManagerError::failed(format!(
                "lxc/{vmid} has no health check, or Phoenix cannot reach the node to run it"
            )));
        };
        inside::health_check(&guest.exec_on(node, vmid), check).await
    }
}

impl Containers {
    /// Reads one container: its config as Proxmox returns it, and its fields, with what `reads` names
    /// beyond the config.
    async fn read_with_config(
        &self,
        node: &str,
        vmid: u32,
        status: &str,
        reads: Reads,
    ) -> Result<(BTreeMap<String, Value>, Fields<LxcField>), ManagerError> {
        let config: BTreeMap<String, Value> = self
            .kit
            .client()
            .get(&format!("/nodes/{node}/lxc/{vmid}/config"), &[])
            .await?;
        let names = match reads.snapshots {
            true => self.kit.handle(node, vmid).snapshot_names().await?,
            false => Vec::new(),
        };
        let firewall = match reads.firewall {
            true => {
                let (enabled, rules) =
                    firewall::read(self.kit.client(), &format!("/nodes/{node}/lxc/{vmid}")).await?;
                fields::ObservedFirewall { enabled, rules }
            }
            false => fields::ObservedFirewall::default(),
        };
        let records = match (&self.guest, status) {
            _ if !reads.records => None,
            // A container the channel cannot reach (on another node of a cluster, say) shows no records;
            // apply then says why it cannot run its scripts.
            (Some(guest), "running") => match inside::records(&guest.exec_on(node, vmid)).await {
                Ok(records) => Some(records),
                Err(error) => {
                    tracing::warn!(vmid, %error, "feature records not readable");
                    None
                }
            },
            _ => None,
        };
        let raw = match &self.guest {
            Some(guest) if reads.node_files => Some(guest.raw_keys(node, vmid).await?),
            _ => None,
        };
        let mut fields = fields::observed_fields(&config, status, &names, &firewall, records.as_ref());
        // What was not read is not shown, rather than shown empty.
        if !reads.snapshots {
            fields.remove(&LxcField::Snapshots);
        }
        if !reads.firewall {
            fields.remove(&LxcField::FirewallEnabled);
            fields.remove(&LxcField::FirewallRules);
        }
        fields.insert(LxcField::Node, Value::String(node.to_owned()));
        if let Some(raw) = raw {
            let raw = raw
                .into_iter()
                .map(|(key, values)| (key, json_strings(values)))
                .collect();
            fields.insert(LxcField::RawLxc, Value::Object(raw));
        }
        Ok((config, fields))
    }

    /// The device entries to write: for a GPU container, built from the node's devices as they are now
    /// (the host driver may have been installed since the plan); else the planned ones.
    async fn devices_now(
        &self,
        node: &str,
        container: &ContainerConfig,
        planned: &Value,
    ) -> Result<Vec<Value>, ManagerError> {
        let indices = fields::gpu_indices(container.gpu_assignment.as_deref());
        let found = if indices.is_empty() {
            None
        } else {
            self.discover_gpus().await?
        };
        let Some(found) = found else {
            return Ok(planned.as_array().cloned().unwrap_or_default());
        };
        let paths = found
            .for_container(node, &indices)
            .map_err(|error| ManagerError::failed(format!("container {}: {error}", container.name)))?;
        Ok(paths.into_iter().map(Value::String).collect())
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
