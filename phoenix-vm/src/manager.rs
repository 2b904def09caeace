//! [`VmManager`]: QEMU/KVM VMs over the Proxmox API, on the shared guest kit ([`phoenix_pve::guests`]).
//!
//! [`VmDiff`] is the pure half (the field vocabulary of [`fields`]); [`Vms`] the IO half: cloud images,
//! creating and cloning, applying typed field changes, user-data snippets and work inside through the
//! QEMU guest agent.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use phoenix_core::config::VmConfig;
use phoenix_core::import::Imported;
use phoenix_core::{Desired, Fields, ManagerError, Resource, TypedChange};
use phoenix_pve::cluster::Placements;
use phoenix_pve::guest::{self as inside, GuestScripts, QemuAgent, Script};
use phoenix_pve::guests::{GuestDiff, GuestDiffer, GuestDriver, GuestKit, GuestManager, Reads};
use phoenix_pve::host::{HostChannel, sha256_hex};
use phoenix_pve::lifecycle::{GuestType, Migration};
use phoenix_pve::{
    Client, Form, Method, PveError, Session, compare, firewall, props, resolve_secret, storage_for,
};
use serde_json::Value;

use crate::cloudinit;
use crate::fields::{self, BOOT_DISKS, OWNER_TAG, VmField};

/// Mounts the NFS volumes of `PHOENIX_NFS_VOLUMES` (one `server:path mount_point options` per line): an
/// fstab line per volume, written once, and a mount when it is not mounted yet. Values arrive as data.
const NFS_VOLUMES: &str = r#"set -eu
command -v mount.nfs >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q nfs-common; }
printf '%s\n' "$PHOENIX_NFS_VOLUMES" | while read -r source target options; do
    [ -n "$source" ] || continue
    mkdir -p "$target"
    if ! awk -v target="$target" '$2 == target { found = 1 } END { exit !found }' /etc/fstab; then
        printf '%s %s nfs %s 0 0\n' "$source" "$target" "$options" >> /etc/fstab
    fi
    mountpoint -q "$target" || mount "$target"
done
"#;

/// Where cloud images named by file are downloaded from: Ubuntu's, by release code name.
const UBUNTU_IMAGES: &str = "https://cloud-images.ubuntu.com";

/// The VM manager.
pub type VmManager = GuestManager<Vms>;

/// Builds the VM manager of a session: cloud images go to the first declared storage with the `import`
/// content type (else `local`); VMs run features, NFS mounts and health checks through the guest agent;
/// and when the configuration directory has `cloud-init/user-data.template.yml` and the session can reach
/// the node, each VM's user-data is rendered into a snippet on the first `snippets` storage.
pub fn manager(
    session: &Session,
    estate: &phoenix_core::Estate,
    scripts: GuestScripts,
    user_data_template: Option<String>,
) -> VmManager {
    let hypervisor = &estate.files().hypervisor;
    let mut vms = Vms::new(
        session.kit(GuestType::Qemu),
        hypervisor.domain_name.clone(),
        storage_for(&hypervisor.proxmox_storages, "import"),
    )
    .with_scripts(scripts)
    .with_config_dir(session.config_dir());
    if let (Some(template), Some(host)) = (user_data_template, session.host()) {
        let snippets = storage_for(&hypervisor.proxmox_storages, "snippets");
        vms = vms.with_user_data(template, Arc::clone(host), snippets);
    }
    VmManager::new(vms)
}

/// The pure half of the VM manager: what a configuration declares, in [`VmField`]s.
#[derive(Debug, Clone, Default)]
pub struct VmDiff {
    /// The default DNS search domain.
    pub domain: Option<String>,
    /// The scripts VMs run, when the manager runs scripts through the guest agent.
    pub scripts: Option<Arc<GuestScripts>>,
    /// The custom cloud-init user-data template, when VMs get one.
    pub user_data_template: Option<String>,
    /// Where new VMs that name no node go, as placed when the cluster was read.
    pub placements: Option<Placements>,
}

impl VmDiff {
    /// The scripts a VM runs, in order: its NFS mounts, its features, then its application script.
    fn scripts_for(&self, vm: &VmConfig) -> Vec<Script> {
        let Some(scripts) = &self.scripts else {
            return Vec::new();
        };
        let mut all = Vec::new();
        if !vm.volumes.is_empty() {
            let lines: Vec<String> = vm
                .volumes
                .iter()
                .map(|volume| {
                    let options = volume
                        .options
                        .clone()
                        .unwrap_or_else(|| "defaults,_netdev".to_owned());
                    format!(
                        "{}:{} {} {options}",
                        volume.server, volume.path, volume.mount_point
                    )
                })
                .collect();
            let environment = BTreeMap::from([("PHOENIX_NFS_VOLUMES".to_owned(), lines.join("\n"))]);
            all.push(Script {
                record: "nfs-volumes".to_owned(),
                text: NFS_VOLUMES.to_owned(),
                environment,
            });
        }
        all.extend(scripts.for_guest(&vm.features, None, &BTreeMap::new()));
        all
    }

    /// The declared fields, with the scripts' digests when the manager runs scripts in guests.
    fn wanted(&self, vm: &VmConfig) -> Fields<VmField> {
        let mut wanted = fields::desired_fields(vm, self.domain.as_deref());
        let scripts: serde_json::Map<String, Value> = self
            .scripts_for(vm)
            .iter()
            .map(|script| (script.record.clone(), Value::String(script.digest())))
            .collect();
        if !scripts.is_empty() && !vm.is_template {
            wanted.insert(VmField::GuestScripts, Value::Object(scripts));
        }
        if let Some(template) = &self.user_data_template
            && !vm.is_template
        {
            let digest = match cloudinit::render_user_data(template, vm, self.domain.as_deref()) {
                Ok(text) => sha256_hex(text.as_bytes()),
                Err(error) => format!("the user-data template does not render: {error}"),
            };
            wanted.insert(VmField::UserData, Value::String(digest));
        }
        wanted
    }
}

impl GuestDiff for VmDiff {
    type Field = VmField;
    type Config = VmConfig;

    fn config(resource: &Resource) -> Option<&VmConfig> {
        match &resource.desired {
            Desired::Vm(vm) => Some(vm),
            _ => None,
        }
    }

    fn wanted(&self, vm: &VmConfig) -> Fields<VmField> {
        VmDiff::wanted(self, vm)
    }

    fn compare(&self, wanted: &Fields<VmField>, observed: &Fields<VmField>) -> Vec<TypedChange<VmField>> {
        fields::compare(wanted, observed)
    }

    fn replaces(change: &TypedChange<VmField>) -> bool {
        change.field == VmField::Template && change.new == Value::Bool(false)
    }

    fn moves(change: &TypedChange<VmField>) -> bool {
        change.field == VmField::Node
    }

    fn placements(&self) -> Option<&Placements> {
        self.placements.as_ref()
    }
}

/// The IO half of the VM manager.
pub struct Vms {
    kit: GuestKit,
    differ: GuestDiffer<VmDiff>,
    import_storage: String,
    /// Sources that are templates (cloned from their base disk) or snapshots (cloned from the snapshot).
    sources: Mutex<BTreeMap<u32, (bool, Option<String>)>>,
    /// One lock per cloud image volume and node, so that VMs created at once from the same image download it
    /// once: the others wait, then find it on the storage.
    downloads: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    agent_timeout: Duration,
    user_data: Option<UserData>,
    /// The snippet directory of the user-data storage, read once per observe.
    snippets: Mutex<Option<String>>,
    config_dir: PathBuf,
}

/// Where custom cloud-init user-data goes.
struct UserData {
    host: Arc<dyn HostChannel>,
    storage: String,
}

impl Vms {
    /// Reads one VM: its config as the next start will have it, and its fields, with what `reads` names
    /// beyond the config.
    async fn read_with_config(
        &self,
        node: &str,
        vmid: u32,
        status: &str,
        reads: Reads,
    ) -> Result<(BTreeMap<String, Value>, Fields<VmField>), ManagerError> {
        let client = self.kit.client();
        let records = reads.records && self.differ.0.scripts.is_some();
        let user_data = self.user_data_access().filter(|_| reads.node_files);
        let base = format!("/nodes/{node}/qemu/{vmid}");
        // `pending` gives each key's current value and the one the next start will use; Phoenix compares
        // the latter, so a change already made (waiting for a restart) is not made again.
        let pending: Vec<Value> = client.get(&format!("{base}/pending"), &[]).await?;
        let config = effective_config(&pending);
        let names = match reads.snapshots {
            true => self.kit.handle(node, vmid).snapshot_names().await?,
            false => Vec::new(),
        };
        let firewall = match reads.firewall {
            true => firewall::read(client, &base).await?,
            false => (false, Vec::new()),
        };
        let mut fields = fields::observed_fields(&config, status, &names, firewall);
        // What was not read is not shown, rather than shown empty.
        if !reads.snapshots {
            fields.remove(&VmField::Snapshots);
        }
        if !reads.firewall {
            fields.remove(&VmField::FirewallEnabled);
            fields.remove(&VmField::FirewallRules);
        }
        fields.insert(VmField::Node, Value::String(node.to_owned()));
        // Feature records are read through the agent; a VM whose agent does not answer yet simply shows
        // none, and apply waits for the agent before it runs anything.
        if records && status == "running" && fields.get(&VmField::Agent) == Some(&Value::String("1".into())) {
            let agent = QemuAgent {
                client: Arc::clone(client),
                node: node.to_owned(),
                vmid,
            };
            match inside::records(&agent).await {
                Ok(found) => {
                    let found = found
                        .into_iter()
                        .map(|(name, digest)| (name, Value::String(digest)))
                        .collect();
                    fields.insert(VmField::GuestScripts, Value::Object(found));
                }
                Err(error) => tracing::debug!(vmid, %error, "feature records not readable yet"),
            }
        }
        // The user-data snippet attached with `cicustom`, compared by the digest of its content.
        let attached = config
            .get("cicustom")
            .and_then(Value::as_str)
            .and_then(|cicustom| {
                cicustom
                    .split(',')
                    .find_map(|part| part.strip_prefix("user="))
                    .and_then(|volume| volume.split_once(":snippets/"))
            });
        if let (Some((host, dir)), Some((_, file))) = (user_data, attached) {
            let argv = ["cat".to_owned(), format!("{dir}/{file}")];
            if let Ok(output) = host.run(&argv, None, inside::QUICK_TIMEOUT).await
                && output.success()
            {
                fields.insert(
                    VmField::UserData,
                    Value::String(sha256_hex(output.stdout.as_bytes())),
                );
            }
        }
        Ok((config, fields))
    }

    /// VMs through `kit`; `domain` is the default DNS search domain; cloud images are stored on
    /// `import_storage` (a storage with the `import` content type).
    pub fn new(kit: GuestKit, domain: Option<String>, import_storage: impl Into<String>) -> Vms {
        let placements = Some(kit.cluster().placements().clone());
        Vms {
            kit,
            differ: GuestDiffer(VmDiff {
                domain,
                placements,
                ..VmDiff::default()
            }),
            import_storage: import_storage.into(),
            sources: Mutex::default(),
            downloads: Mutex::default(),
            agent_timeout: Duration::from_secs(300),
            user_data: None,
            snippets: Mutex::default(),
            config_dir: PathBuf::from("."),
        }
    }

    /// Where secret files named by the configuration (`{"file": ...}`) are found.
    pub fn with_config_dir(mut self, dir: impl Into<PathBuf>) -> Vms {
        self.config_dir = dir.into();
        self
    }

    /// Renders `template` (Tera) into each VM's cloud-init user-data, written as a snippet on `storage` (a
    /// storage with the `snippets` content type) through `host`, and attached with `cicustom`.
    pub fn with_user_data(
        mut self,
        template: String,
        host: Arc<dyn HostChannel>,
        storage: impl Into<String>,
    ) -> Vms {
        self.differ.0.user_data_template = Some(template);
        self.user_data = Some(UserData {
            host,
            storage: storage.into(),
        });
        self
    }

    /// Lets the manager run features, application scripts, NFS mounts and health checks inside VMs,
    /// through the QEMU guest agent.
    pub fn with_scripts(mut self, scripts: GuestScripts) -> Vms {
        self.differ.0.scripts = Some(Arc::new(scripts));
        self
    }

    /// How long to wait for the guest agent after a start (default five minutes).
    pub fn with_agent_timeout(mut self, timeout: Duration) -> Vms {
        self.agent_timeout = timeout;
        self
    }

    fn agent(&self, node: &str, vmid: u32) -> QemuAgent {
        QemuAgent {
            client: Arc::clone(self.kit.client()),
            node: node.to_owned(),
            vmid,
        }
    }

    fn sources(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, (bool, Option<String>)>> {
        self.sources
            .lock()
            .expect("no code panics while holding this lock")
    }

    /// The host channel and snippet directory, when the manager writes user-data (read by `prepare`).
    fn user_data_access(&self) -> Option<(Arc<dyn HostChannel>, String)> {
        let dir = self
            .snippets
            .lock()
            .expect("no code panics while holding this lock")
            .clone()?;
        Some((Arc::clone(&self.user_data.as_ref()?.host), dir))
    }

    /// Work inside the running VM: its scripts whose records differ (between the lifecycle snapshots),
    /// then its health check. Waits for the guest agent first, within the agent time limit.
    async fn inside(
        &self,
        node: &str,
        vmid: u32,
        vm: &VmConfig,
        run_scripts: bool,
    ) -> Result<(), ManagerError> {
        if self.differ.0.scripts.is_none() || (!run_scripts && vm.health_check.is_none()) {
            return Ok(());
        }
        let agent = self.agent(node, vmid);
        agent.wait_until_ready(self.agent_timeout).await?;
        if run_scripts {
            let mut declared = serde_json::to_value(vm).expect("configuration serialises");
            // An inline password stays out of the guest.
            if let Some(password) = declared.pointer_mut("/user_config/password") {
                *password = Value::String(phoenix_core::engine::resource::SENSITIVE.to_owned());
            }
            let handle = self.kit.handle(node, vmid);
            let scripts = self.differ.0.scripts_for(vm);
            let declared = declared.to_string();
            inside::run_pending(&agent, handle, scripts, vm.enable_lifecycle_snapshots, &declared).await?;
        }
        if let Some(check) = &vm.health_check {
            inside::health_check(&agent, check).await?;
        }
        Ok(())
    }

    /// Renders and writes a VM's user-data snippet; returns the `cicustom` value that attaches it.
    async fn write_user_data(&self, vmid: u32, vm: &VmConfig) -> Result<String, ManagerError> {
        let user_data = self
            .user_data
            .as_ref()
            .ok_or_else(|| ManagerError::failed("no user-data template"))?;
        let template = self
            .differ
            .0
            .user_data_template
            .as_deref()
            .ok_or_else(|| ManagerError::failed("no user-data template"))?;
        let text =
            cloudinit::render_user_data(template, vm, self.differ.0.domain.as_deref()).map_err(|error| {
                ManagerError::failed(format!(
                    "the user-data template does not render for VM {vmid}: {error}"
                ))
            })?;
        let dir = snippet_dir(self.kit.client(), &user_data.storage).await?;
        let file = cloudinit::snippet_name(vmid);
        let argv: Vec<String> = ["/bin/sh", "-c", "mkdir -p \"$0\" && cat > \"$0/$1\"", &dir, &file]
            .map(str::to_owned)
            .to_vec();
        let output = user_data
            .host
            .run(&argv, Some(text.as_bytes()), inside::QUICK_TIMEOUT)
            .await
            .map_err(inside::host_error)?;
        if !output.success() {
            return Err(ManagerError::failed(format!(
                "writing {dir}/{file} failed: {}",
                output.tail(5)
            )));
        }
        Ok(format!("user={}:snippets/{file}", user_data.storage))
    }

    /// The volume of a cloud image on the import storage, downloaded when missing.
    async fn ensure_image(
        &self,
        node: &str,
        image: &str,
        release: Option<&str>,
    ) -> Result<String, ManagerError> {
        let source = image.rsplit('/').next().unwrap_or(image).to_owned();
        // Proxmox's import content takes .qcow2, .raw, .vmdk and .ova only; cloud images named .img are qcow2.
        let file = match source.strip_suffix(".img") {
            Some(stem) => format!("{stem}.qcow2"),
            None => source.clone(),
        };
        let volume = format!("{}:import/{file}", self.import_storage);
        let lock = Arc::clone(
            self.downloads
                .lock()
                .expect("the download locks are never poisoned")
                .entry(format!("{node}/{volume}"))
                .or_default(),
        );
        let _downloading = lock.lock().await;
        let content: Vec<Value> = self
            .kit
            .client()
            .get(
                &format!("/nodes/{node}/storage/{}/content", self.import_storage),
                &[("content", "import")],
            )
            .await?;
        if content.iter().any(|item| item["volid"] == volume) {
            return Ok(volume);
        }
        let url = if image.starts_with("https://") || image.starts_with("http://") {
            image.to_owned()
        } else {
            let codename = release
                .map(str::to_owned)
                .or_else(|| source.split('-').next().map(str::to_owned))
                .ok_or_else(|| {
                    ManagerError::failed(format!(
                        "cannot tell where to download {file} from: give an https:// URL"
                    ))
                })?;
            format!("{UBUNTU_IMAGES}/{codename}/current/{source}")
        };
        tracing::info!(%url, "downloading the cloud image");
        let form = Form::new()
            .text("content", "import")
            .text("filename", &file)
            .text("url", url);
        self.kit
            .client()
            .run_task(
                Method::POST,
                &format!("/nodes/{node}/storage/{}/download-url", self.import_storage),
                &form,
            )
            .await?;
        Ok(volume)
    }
}

/// The directory on the node that holds the snippets of the user-data storage.
async fn snippet_dir(client: &Client, storage: &str) -> Result<String, PveError> {
    let config: Value = client.get(&format!("/storage/{storage}"), &[]).await?;
    let path = config["path"].as_str().unwrap_or("/var/lib/vz");
    Ok(format!("{path}/snippets"))
}

/// The configuration a VM will have at its next start: current values with pending ones laid over them.
fn effective_config(pending: &[Value]) -> BTreeMap<String, Value> {
    pending
        .iter()
        .filter(|item| item["delete"].as_i64().unwrap_or(0) == 0)
        .filter_map(|item| {
            let key = item["key"].as_str()?.to_owned();
            let value = item.get("pending").or_else(|| item.get("value"))?.clone();
            Some((key, value))
        })
        .collect()
}

#[async_trait]
impl GuestDriver for Vms {
    type Diff = VmDiff;

    fn kit(&self) -> &GuestKit {
        &self.kit
    }

    fn differ(&self) -> &GuestDiffer<VmDiff> {
        &self.differ
    }

    async fn prepare(&self, desired: &[Resource]) -> Result<(), ManagerError> {
        {
            let mut sources = self.sources();
            for vm in desired.iter().filter_map(VmDiff::config) {
                sources.insert(vm.vmid, (vm.is_template, vm.template_snapshot_name.clone()));
            }
        }
        let dir = match &self.user_data {
            Some(user_data) => Some(snippet_dir(self.kit.client(), &user_data.storage).await?),
            None => None,
        };
        *self
            .snippets
            .lock()
            .expect("no code panics while holding this lock") = dir;
        Ok(())
    }

    async fn read(
        &self,
        node: &str,
        vmid: u32,
        status: &str,
        wanted: &Fields<VmField>,
    ) -> Result<Fields<VmField>, ManagerError> {
        let reads = Reads {
            snapshots: wanted.contains_key(&VmField::Snapshots),
            firewall: wanted.contains_key(&VmField::FirewallEnabled)
                || wanted.contains_key(&VmField::FirewallRules),
            records: wanted.contains_key(&VmField::GuestScripts),
            node_files: wanted.contains_key(&VmField::UserData),
        };
        Ok(self.read_with_config(node, vmid, status, reads).await?.1)
    }

    async fn import(&self, node: &str, vmid: u32, status: &str) -> Result<Imported, ManagerError> {
        // An entry declares no features (their records are not read), no snapshots and no user-data.
        let reads = Reads {
            firewall: true,
            ..Reads::default()
        };
        let (config, fields) = self.read_with_config(node, vmid, status, reads).await?;
        Ok(crate::import::entry(vmid, node, &config, &fields))
    }

    async fn create(&self, _resource: &Resource, vm: &VmConfig, node: &str) -> Result<(), ManagerError> {
        let vmid = vm.vmid;
        let storage = vm.storage_pool.clone().unwrap_or_else(|| "local-lvm".to_owned());
        match vm.clone_from_vmid {
            Some(source) => {
                let source_node = self.kit.node_of(source, None);
                let (is_template, snapshot) = self.sources().get(&source).cloned().unwrap_or((true, None));
                // Proxmox locks the source while it clones: clones of one source take turns.
                let _turn = self.kit.exclusive(&format!("clone {source}")).await;
                let mut form = Form::new()
                    .number("newid", vmid)
                    .text("name", &vm.name)
                    .flag("full", !vm.linked_clone);
                if !vm.linked_clone {
                    form = form.text("storage", &storage);
                }
                if !is_template && let Some(snapshot) = snapshot {
                    form = form.text("snapname", snapshot);
                }
                let storage = (!vm.linked_clone).then_some(storage.as_str());
                let direct = self
                    .kit
                    .clones_across(&source_node, source, storage, node)
                    .await?;
                if direct && source_node != node {
                    form = form.text("target", node);
                }
                // Something else may hold the source's lock (a backup): then the clone waits for it.
                let client = self.kit.client();
                let path = format!("/nodes/{source_node}/qemu/{source}/clone");
                client
                    .unless_locked(&source_node, "qemu", source, || {
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
                let image = vm.template_image.as_deref().ok_or_else(|| {
                    ManagerError::failed(format!(
                        "VM {vmid} declares no `template_image` or `clone_from_vmid` to be created from (an adopted VM that is gone)"
                    ))
                })?;
                let volume = self.ensure_image(node, image, None).await?;
                let bridge = vm.network_bridge.as_deref().unwrap_or("vmbr0");
                let net = match &vm.mac_address {
                    Some(mac) => format!("virtio={},bridge={bridge}", mac.to_ascii_uppercase()),
                    None => format!("virtio,bridge={bridge}"),
                };
                let form = Form::new()
                    .number("vmid", vmid)
                    .text("name", &vm.name)
                    .text("ostype", "l26")
                    .text("scsihw", "virtio-scsi-pci")
                    .text("scsi0", format!("{storage}:0,import-from={volume}"))
                    .text("ide2", format!("{storage}:cloudinit"))
                    .text("boot", "order=scsi0")
                    .text("serial0", "socket")
                    .text("vga", "serial0")
                    .text("agent", "1")
                    .text("net0", net)
                    .text("tags", OWNER_TAG);
                self.kit
                    .client()
                    .run_task(Method::POST, &format!("/nodes/{node}/qemu"), &form)
                    .await?;
            }
        }
        Ok(())
    }

    /// One config write, then disk growth, firewall, template conversion or start, work inside, and
    /// missing snapshots.
    async fn migrate(&self, node: &str, vmid: u32, target: &str) -> Result<(), ManagerError> {
        let handle = self.kit.handle(node, vmid);
        let how = match handle.status().await?.as_str() {
            "running" => {
                let listing = self.kit.cluster().latest().await;
                let storages = handle.volume_storages().await?;
                let local_disks = storages
                    .iter()
                    .any(|storage| !phoenix_pve::cluster::is_shared(&listing, node, storage));
                Migration::Online { local_disks }
            }
            _ => Migration::Offline,
        };
        handle.migrate(target, how).await?;
        Ok(())
    }

    async fn update(
        &self,
        node: &str,
        vmid: u32,
        changes: &[TypedChange<VmField>],
        vm: &VmConfig,
    ) -> Result<(), ManagerError> {
        let client = self.kit.client();
        let handle = self.kit.handle(node, vmid);
        let base = handle.base();
        let mut config = Form::new();
        let mut grow = None;
        let mut start = false;
        let mut make_template = false;
        let mut snapshots = Vec::new();
        let mut firewall = firewall::FirewallUpdate::default();
        let mut run_scripts = false;
        for change in changes {
            let new = &change.new;
            let text = || new.as_str().unwrap_or_default().to_owned();
            match change.field {
                VmField::Name => config = config.text("name", text()),
                VmField::Nameserver => config = config.text("nameserver", text()),
                VmField::Searchdomain => config = config.text("searchdomain", text()),
                VmField::Ciuser => config = config.text("ciuser", text()),
                VmField::Agent => config = config.text("agent", text()),
                VmField::Sshkeys => config = config.text("sshkeys", fields::percent_encode(&text())),
                VmField::Cores => config = config.text("cores", new.to_string()),
                VmField::Memory => config = config.text("memory", new.to_string()),
                VmField::Onboot => config = config.text("onboot", new.to_string()),
                VmField::Net0 => config = config.text("net0", fields::render_net0(new)),
                VmField::Ipconfig0 => {
                    config = config.text("ipconfig0", props::render_object(new, Some("ip")))
                }
                VmField::Startup => config = config.text("startup", props::render_object(new, None)),
                VmField::Owned => config = config.text("tags", handle.tags_with_owner().await?),
                VmField::DiskGb => grow = new.as_f64(),
                // `false` replaces the VM (a template cannot become a VM again); the new one is a VM.
                VmField::Template => make_template = new == true,
                // A migration is made before the other changes (`GuestDiff::moves`); how a new VM reached
                // its node is only said.
                VmField::Node | VmField::Placement => {}
                VmField::GuestScripts => run_scripts = true,
                VmField::Cipassword => {
                    let secret = vm
                        .user_config
                        .as_ref()
                        .and_then(|user| user.password.as_ref())
                        .ok_or_else(|| {
                            ManagerError::failed(format!("VM {vmid} declares no cloud-init password"))
                        })?;
                    let password = resolve_secret(secret, &|name| std::env::var(name).ok(), &self.config_dir)
                        .map_err(|error| {
                            ManagerError::failed(format!("the cloud-init password of VM {vmid}: {error}"))
                        })?;
                    config = config.text("cipassword", password.expose());
                }
                VmField::UserData => config = config.text("cicustom", self.write_user_data(vmid, vm).await?),
                VmField::Status => start = new == "running",
                VmField::Snapshots => snapshots.extend(compare::added_names(change.old.as_ref(), new)),
                VmField::FirewallEnabled => firewall.enable(new),
                VmField::FirewallRules => firewall.rules(change.old.as_ref(), new),
            }
        }
        if !config.pairs().is_empty() {
            let path = format!("{base}/config");
            let _: Value = handle.unless_locked(|| client.put(&path, &config)).await?;
        }
        if let Some(size) = grow {
            let current: BTreeMap<String, Value> = client.get(&format!("{base}/config"), &[]).await?;
            let disk = BOOT_DISKS
                .iter()
                .find(|disk| current.contains_key(**disk))
                .copied()
                .unwrap_or("scsi0");
            handle.unless_locked(|| handle.resize(disk, size)).await?;
        }
        firewall.apply(client, &base).await?;
        if make_template {
            client
                .run_task(Method::POST, &format!("{base}/template"), &Form::new())
                .await?;
            return Ok(());
        }
        if start {
            handle.unless_locked(|| handle.start()).await?;
        }
        if !make_template {
            self.inside(node, vmid, vm, run_scripts).await?;
        }
        for name in snapshots {
            handle.unless_locked(|| handle.snapshot(&name)).await?;
        }
        Ok(())
    }

    async fn health_check(&self, node: &str, vmid: u32, vm: Option<&VmConfig>) -> Result<(), ManagerError> {
        let Some(check) = vm.and_then(|vm| vm.health_check.as_ref()) else {
            return Err(ManagerError::failed(format!(
                "vm/{vmid} declares no health check"
            )));
        };
        let agent = self.agent(node, vmid);
        agent.wait_until_ready(self.agent_timeout).await?;
        inside::health_check(&agent, check).await
    }
}
