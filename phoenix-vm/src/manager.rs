//! [`VmManager`]: the `Manager` implementation for QEMU/KVM VMs over the Proxmox API.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use phoenix_core::config::VmConfig;
use phoenix_core::{
    Action, Address, Change, Desired, FieldChange, Manager, ManagerError, Observed, Operation, Resource,
    ResourceKind,
};
use phoenix_pve::guest::{self as inside, GuestScripts, QemuAgent, Script};
use phoenix_pve::host::{HostChannel, sha256_hex};
use phoenix_pve::lifecycle::{GuestHandle, GuestType};
use phoenix_pve::{Client, Form, Method, PveError, compare, firewall, props, resolve_secret};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::cloudinit;
use crate::fields::{self, BOOT_DISKS, OWNER_TAG};

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

/// Reads of VM configs at once.
const READ_CONCURRENCY: usize = 8;
/// Where cloud images named by file are downloaded from: Ubuntu's, by release code name.
const UBUNTU_IMAGES: &str = "https://cloud-images.ubuntu.com";

/// Manages VMs on one Proxmox cluster.
pub struct VmManager {
    client: Arc<Client>,
    default_node: String,
    domain: Option<String>,
    import_storage: String,
    known: Mutex<Known>,
    /// One lock per cloud image volume and node, so that VMs created at once from the same image download it
    /// once: the others wait, then find it on the storage.
    downloads: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    scripts: Option<Arc<GuestScripts>>,
    agent_timeout: Duration,
    user_data: Option<Arc<UserData>>,
    config_dir: PathBuf,
}

/// Custom cloud-init user-data: the template, and where snippets go.
struct UserData {
    template: String,
    host: Arc<dyn HostChannel>,
    storage: String,
}

#[derive(Default)]
struct Known {
    nodes: BTreeMap<u32, String>,
    /// Sources that are templates (cloned from their base disk) or snapshots (cloned from the snapshot).
    sources: BTreeMap<u32, (bool, Option<String>)>,
}

impl VmManager {
    /// A manager using `client`; VMs that name no node go to `default_node`; cloud images are stored on
    /// `import_storage` (a storage with the `import` content type).
    pub fn new(
        client: Arc<Client>,
        default_node: impl Into<String>,
        domain: Option<String>,
        import_storage: impl Into<String>,
    ) -> VmManager {
        VmManager {
            client,
            default_node: default_node.into(),
            domain,
            import_storage: import_storage.into(),
            known: Mutex::new(Known::default()),
            downloads: Mutex::default(),
            scripts: None,
            agent_timeout: Duration::from_secs(300),
            user_data: None,
            config_dir: PathBuf::from("."),
        }
    }

    /// Where secret files named by the configuration (`{"file": ...}`) are found.
    pub fn with_config_dir(mut self, dir: impl Into<PathBuf>) -> VmManager {
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
    ) -> VmManager {
        self.user_data = Some(Arc::new(UserData {
            template,
            host,
            storage: storage.into(),
        }));
        self
    }

    /// The host channel and snippet directory, when the manager writes user-data.
    async fn user_data_access(&self) -> Result<Option<(Arc<dyn HostChannel>, String)>, PveError> {
        match &self.user_data {
            Some(user_data) => {
                let dir = Self::snippet_dir(&self.client, &user_data.storage).await?;
                Ok(Some((Arc::clone(&user_data.host), dir)))
            }
            None => Ok(None),
        }
    }

    /// The directory on the node that holds the snippets of the user-data storage.
    async fn snippet_dir(client: &Client, storage: &str) -> Result<String, PveError> {
        let config: Value = client.get(&format!("/storage/{storage}"), &[]).await?;
        let path = config["path"].as_str().unwrap_or("/var/lib/vz");
        Ok(format!("{path}/snippets"))
    }

    /// Lets the manager run features, application scripts, NFS mounts and health checks inside VMs,
    /// through the QEMU guest agent.
    pub fn with_scripts(mut self, scripts: GuestScripts) -> VmManager {
        self.scripts = Some(Arc::new(scripts));
        self
    }

    /// How long to wait for the guest agent after a start (default five minutes).
    pub fn with_agent_timeout(mut self, timeout: Duration) -> VmManager {
        self.agent_timeout = timeout;
        self
    }

    fn agent(&self, node: &str, vmid: u32) -> QemuAgent {
        QemuAgent {
            client: Arc::clone(&self.client),
            node: node.to_owned(),
            vmid,
        }
    }

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
    fn wanted(&self, vm: &VmConfig) -> BTreeMap<String, Value> {
        let mut wanted = fields::desired_fields(vm, self.domain.as_deref());
        let scripts: serde_json::Map<String, Value> = self
            .scripts_for(vm)
            .iter()
            .map(|script| (script.record.clone(), Value::String(script.digest())))
            .collect();
        if !scripts.is_empty() && !vm.is_template {
            wanted.insert("guest_scripts".to_owned(), Value::Object(scripts));
        }
        if let Some(user_data) = &self.user_data
            && !vm.is_template
        {
            let digest = match cloudinit::render_user_data(&user_data.template, vm, self.domain.as_deref()) {
                Ok(text) => sha256_hex(text.as_bytes()),
                Err(error) => format!("the user-data template does not render: {error}"),
            };
            wanted.insert("user_data".to_owned(), Value::String(digest));
        }
        wanted
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
        if self.scripts.is_none() || (!run_scripts && vm.health_check.is_none()) {
            return Ok(());
        }
        let agent = self.agent(node, vmid);
        agent.wait_until_ready(self.agent_timeout).await?;
        if run_scripts {
            let records = inside::records(&agent).await?;
            let pending: Vec<Script> = self
                .scripts_for(vm)
                .into_iter()
                .filter(|script| records.get(&script.record) != Some(&script.digest()))
                .collect();
            if !pending.is_empty() {
                if vm.enable_lifecycle_snapshots {
                    self.handle(node, vmid).snapshot_once("pre-features").await?;
                }
                let mut declared = serde_json::to_value(vm).expect("configuration serialises");
                // An inline password stays out of the guest.
                if let Some(password) = declared.pointer_mut("/user_config/password") {
                    *password = Value::String(phoenix_core::engine::resource::SENSITIVE.to_owned());
                }
                let declared = declared.to_string();
                inside::write_guest_config(&agent, &declared).await?;
                for script in &pending {
                    if script.text.is_empty() {
                        return Err(ManagerError::failed(format!(
                            "no script for `{}`: add it to the configuration directory",
                            script.record
                        )));
                    }
                    inside::apply_script(&agent, script).await?;
                }
                if vm.enable_lifecycle_snapshots {
                    self.handle(node, vmid).snapshot_once("post-features").await?;
                }
            }
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
        let text = cloudinit::render_user_data(&user_data.template, vm, self.domain.as_deref()).map_err(
            |error| {
                ManagerError::failed(format!(
                    "the user-data template does not render for VM {vmid}: {error}"
                ))
            },
        )?;
        let dir = Self::snippet_dir(&self.client, &user_data.storage).await?;
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

    async fn read(
        client: &Arc<Client>,
        node: &str,
        vmid: u32,
        status: &str,
        records: bool,
        user_data: Option<(Arc<dyn HostChannel>, String)>,
    ) -> Result<Observed, PveError> {
        let base = format!("/nodes/{node}/qemu/{vmid}");
        // `pending` gives each key's current value and the one the next start will use; Phoenix compares
        // the latter, so a change already made (waiting for a restart) is not made again.
        let pending: Vec<Value> = client.get(&format!("{base}/pending"), &[]).await?;
        let config = effective_config(&pending);
        let names = GuestHandle {
            client,
            node,
            kind: GuestType::Qemu,
            vmid,
        }
        .snapshot_names()
        .await?;
        let firewall = firewall::read(client, &base).await?;
        let mut fields = fields::observed_fields(&config, status, &names, firewall);
        // Feature records are read through the agent; a VM whose agent does not answer yet simply shows
        // none, and apply waits for the agent before it runs anything.
        if records && status == "running" && fields.get("agent") == Some(&Value::String("1".into())) {
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
                    fields.insert("guest_scripts".to_owned(), Value::Object(found));
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
                    "user_data".to_owned(),
                    Value::String(sha256_hex(output.stdout.as_bytes())),
                );
            }
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
            kind: GuestType::Qemu,
            vmid,
        }
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
            .client
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
        self.client
            .run_task(
                Method::POST,
                &format!("/nodes/{node}/storage/{}/download-url", self.import_storage),
                &form,
            )
            .await?;
        Ok(volume)
    }

    async fn create(&self, resource: &Resource, vm: &VmConfig) -> Result<(), ManagerError> {
        let vmid = vm.vmid;
        let node = self.node_of(vmid, Some(resource));
        let storage = vm.storage_pool.clone().unwrap_or_else(|| "local-lvm".to_owned());
        match vm.clone_from_vmid {
            Some(source) => {
                let source_node = self.node_of(source, None);
                let (is_template, snapshot) =
                    self.known().sources.get(&source).cloned().unwrap_or((true, None));
                self.client.wait_unlocked(&source_node, "qemu", source).await?;
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
                if source_node != node {
                    form = form.text("target", &node);
                }
                self.client
                    .run_task(
                        Method::POST,
                        &format!("/nodes/{source_node}/qemu/{source}/clone"),
                        &form,
                    )
                    .await?;
            }
            None => {
                let image = vm.template_image.as_deref().ok_or_else(|| {
                    ManagerError::failed(format!(
                        "VM {vmid} has neither template_image nor clone_from_vmid"
                    ))
                })?;
                let volume = self.ensure_image(&node, image, None).await?;
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
                self.client
                    .run_task(Method::POST, &format!("/nodes/{node}/qemu"), &form)
                    .await?;
            }
        }
        self.known().nodes.insert(vmid, node.clone());
        let desired = self.wanted(vm);
        let status = self.status(&node, vmid).await?;
        let user_data = self.user_data_access().await?;
        let observed = Self::read(
            &self.client,
            &node,
            vmid,
            &status,
            self.scripts.is_some(),
            user_data,
        )
        .await?;
        self.update(&node, vmid, &fields::diff(&desired, &observed.fields), vm)
            .await
    }

    /// Applies changed fields: one config write, disk growth, firewall, then template conversion or
    /// start, and missing snapshots.
    async fn update(
        &self,
        node: &str,
        vmid: u32,
        changes: &[FieldChange],
        vm: &VmConfig,
    ) -> Result<(), ManagerError> {
        let base = format!("/nodes/{node}/qemu/{vmid}");
        self.client.wait_unlocked(node, "qemu", vmid).await?;
        let mut config = Form::new();
        let mut grow = None;
        let mut start = false;
        let mut make_template = false;
        let mut snapshots = Vec::new();
        let mut firewall_enabled = None;
        let mut firewall_rules = None;
        let mut run_scripts = false;
        for change in changes {
            let Some(new) = &change.new else { continue };
            match change.field.as_str() {
                "name" | "nameserver" | "searchdomain" | "ciuser" | "agent" => {
                    config = config.text(&change.field, new.as_str().unwrap_or_default());
                }
                "sshkeys" => {
                    config = config.text(
                        "sshkeys",
                        fields::percent_encode(new.as_str().unwrap_or_default()),
                    )
                }
                "cores" | "memory" | "onboot" => config = config.text(&change.field, new.to_string()),
                "net0" => config = config.text("net0", fields::render_net0(new)),
                "ipconfig0" => config = config.text("ipconfig0", props::render_object(new, Some("ip"))),
                "startup" => config = config.text("startup", props::render_object(new, None)),
                "owned" => config = config.text("tags", self.handle(node, vmid).tags_with_owner().await?),
                "disk_gb" => grow = new.as_f64(),
                "template" => make_template = new == true,
                "guest_scripts" => run_scripts = true,
                "cipassword" => {
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
                "user_data" => config = config.text("cicustom", self.write_user_data(vmid, vm).await?),
                "status" => start = new == "running",
                "snapshots" => snapshots.extend(compare::added_names(change.old.as_ref(), new)),
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
                other => tracing::warn!(field = other, "no way to apply this field yet"),
            }
        }
        if !config.pairs().is_empty() {
            let _: Value = self.client.put(&format!("{base}/config"), &config).await?;
        }
        if let Some(size) = grow {
            let current: BTreeMap<String, Value> = self.client.get(&format!("{base}/config"), &[]).await?;
            let disk = BOOT_DISKS
                .iter()
                .find(|disk| current.contains_key(**disk))
                .copied()
                .unwrap_or("scsi0");
            self.handle(node, vmid).resize(disk, size).await?;
        }
        if let Some((live, wanted)) = firewall_rules {
            firewall::converge_rules(&self.client, &base, &live, &wanted).await?;
        }
        if let Some(enabled) = firewall_enabled {
            firewall::set_enabled(&self.client, &base, enabled).await?;
        }
        if make_template {
            self.client
                .run_task(Method::POST, &format!("{base}/template"), &Form::new())
                .await?;
            return Ok(());
        }
        if start {
            self.handle(node, vmid).start().await?;
        }
        if !make_template {
            self.inside(node, vmid, vm, run_scripts).await?;
        }
        for name in snapshots {
            self.handle(node, vmid).snapshot(&name).await?;
        }
        Ok(())
    }

    async fn delete(&self, vmid: u32) -> Result<(), ManagerError> {
        let node = self.node_of(vmid, None);
        self.handle(&node, vmid).destroy().await?;
        self.known().nodes.remove(&vmid);
        Ok(())
    }
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

fn vm_of(resource: Option<&Resource>) -> Option<&VmConfig> {
    resource.and_then(|resource| match &resource.desired {
        Desired::Vm(vm) => Some(vm.as_ref()),
        _ => None,
    })
}

#[async_trait]
impl Manager for VmManager {
    fn kind(&self) -> ResourceKind {
        ResourceKind::Vm
    }

    async fn observe(&self, desired: &[Resource]) -> Result<BTreeMap<Address, Observed>, ManagerError> {
        let resources = self.client.cluster_resources().await?;
        let declared: Vec<u32> = desired
            .iter()
            .filter_map(|resource| resource.address.guest_id())
            .collect();
        let mut targets = Vec::new();
        {
            let mut known = self.known();
            for resource in desired {
                if let Some(vm) = vm_of(Some(resource)) {
                    known
                        .sources
                        .insert(vm.vmid, (vm.is_template, vm.template_snapshot_name.clone()));
                }
            }
            for entry in resources.iter().filter(|entry| entry.kind == "qemu") {
                let (Some(vmid), Some(node)) = (entry.vmid, entry.node.clone()) else {
                    continue;
                };
                known.nodes.insert(vmid, node.clone());
                if declared.contains(&vmid) || entry.is_owned() {
                    targets.push((vmid, node, entry.status.clone().unwrap_or_default()));
                }
            }
        }
        let limit = Arc::new(Semaphore::new(READ_CONCURRENCY));
        let records = self.scripts.is_some();
        let access = self.user_data_access().await?;
        let mut reads = tokio::task::JoinSet::new();
        for (vmid, node, status) in targets {
            let client = Arc::clone(&self.client);
            let limit = Arc::clone(&limit);
            let user_data = access.clone();
            reads.spawn(async move {
                let _permit = limit.acquire().await.expect("the semaphore is never closed");
                (
                    vmid,
                    Self::read(&client, &node, vmid, &status, records, user_data).await,
                )
            });
        }
        let mut observed = BTreeMap::new();
        while let Some(joined) = reads.join_next().await {
            let (vmid, result) = joined.expect("reads do not panic");
            observed.insert(Address::Vm(vmid), result?);
        }
        Ok(observed)
    }

    fn diff(&self, desired: &Resource, observed: Option<&Observed>) -> Vec<Change> {
        let Some(vm) = vm_of(Some(desired)) else {
            return Vec::new();
        };
        let wanted = self.wanted(vm);
        let Some(observed) = observed else {
            return vec![Change::create(desired.address.clone(), &wanted)];
        };
        let changed = fields::diff(&wanted, &observed.fields);
        if changed.is_empty() {
            return Vec::new();
        }
        let replace = changed
            .iter()
            .any(|field| field.field == "template" && field.new == Some(Value::Bool(false)));
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
            .ok_or_else(|| ManagerError::failed("not a VM address"))?;
        match (change.action, desired, vm_of(desired)) {
            (Action::Delete, _, _) => self.delete(vmid).await,
            (Action::Create, Some(resource), Some(vm)) => self.create(resource, vm).await,
            (Action::Replace, Some(resource), Some(vm)) => {
                let node = self.node_of(vmid, Some(resource));
                self.handle(&node, vmid).ensure_owned("replaces").await?;
                self.delete(vmid).await?;
                self.create(resource, vm).await
            }
            (Action::Update, Some(resource), Some(vm)) => {
                let node = self.node_of(vmid, Some(resource));
                self.update(&node, vmid, &change.fields, vm).await
            }
            _ => Err(ManagerError::failed(format!(
                "{} has no VM configuration",
                change.address
            ))),
        }
    }

    async fn operate(
        &self,
        desired: Option<&Resource>,
        address: &Address,
        operation: &Operation,
    ) -> Result<(), ManagerError> {
        let vmid = address
            .guest_id()
            .ok_or_else(|| ManagerError::failed("not a VM address"))?;
        let node = self.node_of(vmid, desired);
        match operation {
            Operation::HealthCheck => {
                let check = vm_of(desired).and_then(|vm| vm.health_check.clone());
                let Some(check) = check else {
                    return Err(ManagerError::failed(format!(
                        "{address} declares no health check"
                    )));
                };
                let agent = self.agent(&node, vmid);
                agent.wait_until_ready(self.agent_timeout).await?;
                inside::health_check(&agent, &check).await
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
