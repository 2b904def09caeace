//! What the container and VM managers do the same way, through the same API shapes under `lxc/` and
//! `qemu/`: status, power, snapshots, ownership, destruction and disk growth.

use std::collections::{BTreeMap, BTreeSet};

use phoenix_core::{ManagerError, Operation};
use serde_json::Value;

use crate::client::{Client, Form};
use crate::error::PveError;
use crate::task::Upid;
use crate::{Method, OWNER_TAG};

/// Which API a guest lives under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestType {
    /// `/nodes/{node}/lxc/{vmid}`.
    Lxc,
    /// `/nodes/{node}/qemu/{vmid}`.
    Qemu,
}

impl GuestType {
    /// The path segment.
    pub fn segment(self) -> &'static str {
        match self {
            GuestType::Lxc => "lxc",
            GuestType::Qemu => "qemu",
        }
    }

    /// `container` or `VM`.
    pub fn noun(self) -> &'static str {
        match self {
            GuestType::Lxc => "container",
            GuestType::Qemu => "VM",
        }
    }

    /// How Proxmox names a guest of this type in its messages: `CT 101`, `VM 100`.
    fn label(self) -> &'static str {
        match self {
            GuestType::Lxc => "CT",
            GuestType::Qemu => "VM",
        }
    }
}

/// How a guest moves between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migration {
    /// A stopped guest: its config and disks move; nothing runs meanwhile.
    Offline,
    /// A running container: shut down here, moved, started there (Proxmox's restart mode).
    Restart,
    /// A running VM moves live; `local_disks`: its disks on non-shared storage are copied while it runs.
    Online {
        /// Some disk is on storage only this node has.
        local_disks: bool,
    },
}

/// The storages of a guest config's disks.
pub fn disk_storages(kind: GuestType, config: &BTreeMap<String, Value>) -> BTreeSet<String> {
    let disk_key = |key: &str| match kind {
        GuestType::Lxc => key == "rootfs" || numbered(key, "mp"),
        GuestType::Qemu => {
            ["scsi", "virtio", "sata", "ide"]
                .iter()
                .any(|bus| numbered(key, bus))
                || key == "efidisk0"
                || key == "tpmstate0"
        }
    };
    config
        .iter()
        .filter(|(key, _)| disk_key(key))
        .filter_map(|(_, value)| value.as_str())
        .filter(|value| !value.contains("media=cdrom"))
        .filter_map(|value| {
            let volume = value.split(',').next()?;
            let volume = volume.strip_prefix("volume=").unwrap_or(volume);
            let (storage, _) = volume.split_once(':')?;
            (!volume.starts_with('/')).then(|| storage.to_owned())
        })
        .collect()
}

fn numbered(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|index| !index.is_empty() && index.bytes().all(|byte| byte.is_ascii_digit()))
}

/// One guest on one node.
#[derive(Debug, Clone, Copy)]
pub struct GuestHandle<'a> {
    /// The API client.
    pub client: &'a Client,
    /// The node it lives on.
    pub node: &'a str,
    /// Container or VM.
    pub kind: GuestType,
    /// Its ID.
    pub vmid: u32,
}

impl GuestHandle<'_> {
    /// `/nodes/{node}/{lxc|qemu}/{vmid}`.
    pub fn base(&self) -> String {
        format!("/nodes/{}/{}/{}", self.node, self.kind.segment(), self.vmid)
    }

    /// `running`, `stopped`, ...
    pub async fn status(&self) -> Result<String, PveError> {
        let status: Value = self
            .client
            .get(&format!("{}/status/current", self.base()), &[])
            .await?;
        Ok(status["status"].as_str().unwrap_or("unknown").to_owned())
    }

    /// Waits until no lock is held on the guest.
    pub async fn wait_unlocked(&self) -> Result<(), PveError> {
        self.client
            .wait_unlocked(self.node, self.kind.segment(), self.vmid)
            .await
    }

    /// Sends `write` on this guest, waiting out a lock another operation holds ([`Client::unless_locked`]).
    pub async fn unless_locked<T, F, Fut>(&self, write: F) -> Result<T, PveError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, PveError>>,
    {
        self.client
            .unless_locked(self.node, self.kind.segment(), self.vmid, write)
            .await
    }

    /// Names of the guest's snapshots (without `current`).
    pub async fn snapshot_names(&self) -> Result<Vec<String>, PveError> {
        let snapshots: Vec<Value> = self.client.get(&format!("{}/snapshot", self.base()), &[]).await?;
        Ok(snapshots
            .iter()
            .filter_map(|snapshot| snapshot["name"].as_str())
            .filter(|name| *name != "current")
            .map(str::to_owned)
            .collect())
    }

    /// Takes a snapshot; one of that name that exists already (an earlier attempt whose answer was lost)
    /// is the snapshot asked for.
    pub async fn snapshot(&self, name: &str) -> Result<(), PveError> {
        let form = Form::new().text("snapname", name);
        let exists = format!("snapshot name '{name}' already used");
        self.client
            .run_task_unless(
                Method::POST,
                &format!("{}/snapshot", self.base()),
                &form,
                &[&exists],
            )
            .await?;
        Ok(())
    }

    /// Proxmox's answer when the guest already runs: a start answered so is done.
    fn already_running(&self) -> String {
        format!("{} {} already running", self.kind.label(), self.vmid)
    }

    /// Proxmox's answer when the guest is not running: a stop answered so is done.
    fn not_running(&self) -> String {
        format!("{} {} not running", self.kind.label(), self.vmid)
    }

    async fn power(&self, action: &str) -> Result<(), PveError> {
        let done_if = match action {
            "start" => vec![self.already_running()],
            "stop" | "shutdown" => vec![self.not_running()],
            _ => Vec::new(),
        };
        let done_if: Vec<&str> = done_if.iter().map(String::as_str).collect();
        self.client
            .run_task_unless(
                Method::POST,
                &format!("{}/status/{action}", self.base()),
                &Form::new(),
                &done_if,
            )
            .await?;
        Ok(())
    }

    /// Takes a snapshot unless one of that name exists.
    pub async fn snapshot_once(&self, name: &str) -> Result<(), PveError> {
        if !self
            .snapshot_names()
            .await?
            .iter()
            .any(|existing| existing == name)
        {
            self.snapshot(name).await?;
        }
        Ok(())
    }

    /// Starts the guest; one that already runs is started.
    pub async fn start(&self) -> Result<(), PveError> {
        self.power("start").await
    }

    /// The guest's tags with the owner tag added, keeping the others.
    pub async fn tags_with_owner(&self) -> Result<String, PveError> {
        let mut tags = self.tags().await?;
        if !tags.iter().any(|tag| tag == OWNER_TAG) {
            tags.push(OWNER_TAG.to_owned());
        }
        Ok(tags.join(";"))
    }

    /// Whether the guest carries the owner tag.
    pub async fn is_owned(&self) -> Result<bool, PveError> {
        Ok(self.tags().await?.iter().any(|tag| tag == OWNER_TAG))
    }

    /// Refuses to destroy a guest Phoenix does not own.
    pub async fn ensure_owned(&self, what: &str) -> Result<(), ManagerError> {
        if self.is_owned().await? {
            return Ok(());
        }
        Err(ManagerError::failed(format!(
            "{} {} is not tagged `{OWNER_TAG}`: Phoenix {what} only what it owns",
            self.kind.noun(),
            self.vmid
        )))
    }

    async fn tags(&self) -> Result<Vec<String>, PveError> {
        let config: BTreeMap<String, Value> =
            self.client.get(&format!("{}/config", self.base()), &[]).await?;
        Ok(config
            .get("tags")
            .and_then(Value::as_str)
            .map(|tags| crate::split_tags(tags).map(str::to_owned).collect())
            .unwrap_or_default())
    }

    /// Grows a disk to `size_gb` GiB. A disk already at that size (an earlier run's resize, or a clone
    /// interrupted after it) is left as it is: Proxmox's `disk is already at specified size` is done.
    pub async fn resize(&self, disk: &str, size_gb: f64) -> Result<(), PveError> {
        const AT_SIZE: &str = "disk is already at specified size";
        let form = Form::new().text("disk", disk).text("size", format!("{size_gb}G"));
        let answer: Value = match self.client.put(&format!("{}/resize", self.base()), &form).await {
            Ok(answer) => answer,
            Err(error) if error.says_done(&[AT_SIZE]) => {
                phoenix_core::engine::journal::done(format!(
                    "{disk} of {} {}: {AT_SIZE}",
                    self.kind.noun(),
                    self.vmid
                ));
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        if let Some(upid) = answer.as_str().and_then(Upid::parse) {
            match self.client.wait_task(&upid).await {
                Err(error) if error.says_done(&[AT_SIZE]) => {}
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }

    /// Moves the guest to `target` (`POST .../migrate`), the way `how` says, and waits for the task.
    pub async fn migrate(&self, target: &str, how: Migration) -> Result<(), PveError> {
        self.wait_unlocked().await?;
        let mut form = Form::new().text("target", target);
        match how {
            Migration::Offline => {}
            Migration::Restart => form = form.flag("restart", true),
            Migration::Online { local_disks } => {
                form = form.flag("online", true);
                if local_disks {
                    form = form.flag("with-local-disks", true);
                }
            }
        }
        self.client
            .run_task(Method::POST, &format!("{}/migrate", self.base()), &form)
            .await?;
        Ok(())
    }

    /// The storages the guest's disks are on (its root disk and volume mount points, or its VM disks),
    /// read from its config; bind mounts, CD-ROMs and passed-through devices have none.
    pub async fn volume_storages(&self) -> Result<BTreeSet<String>, PveError> {
        let config: BTreeMap<String, Value> =
            self.client.get(&format!("{}/config", self.base()), &[]).await?;
        Ok(disk_storages(self.kind, &config))
    }

    /// Stops the guest if it runs, then destroys it with its disks.
    pub async fn destroy(&self) -> Result<(), PveError> {
        self.wait_unlocked().await?;
        if self.status().await? == "running" {
            self.power("stop").await?;
        }
        let answer: Value = self.client.delete(&self.base(), &[("purge", "1")]).await?;
        if let Some(upid) = answer.as_str().and_then(Upid::parse) {
            self.client.wait_task(&upid).await?;
        }
        Ok(())
    }

    /// Start, stop, restart, snapshot, rollback and (owned only) delete. Health checks are the managers'.
    pub async fn operate(&self, operation: &Operation) -> Result<(), ManagerError> {
        let base = self.base();
        match operation {
            Operation::Start | Operation::Stop | Operation::Restart => {
                self.wait_unlocked().await?;
                let running = self.status().await? == "running";
                let action = match (operation, running) {
                    (Operation::Start, true) | (Operation::Stop, false) => return Ok(()),
                    (Operation::Start | Operation::Restart, false) => "start",
                    (Operation::Stop, true) => "shutdown",
                    _ => "reboot",
                };
                self.power(action).await?;
            }
            Operation::Snapshot(name) => {
                self.wait_unlocked().await?;
                self.snapshot(name).await?;
            }
            Operation::Rollback(name) => {
                self.wait_unlocked().await?;
                self.client
                    .run_task(
                        Method::POST,
                        &format!("{base}/snapshot/{name}/rollback"),
                        &Form::new(),
                    )
                    .await?;
            }
            Operation::Delete => {
                self.ensure_owned("deletes").await?;
                self.destroy().await?;
            }
            Operation::Adopt => {
                let mut tags = self.tags().await?;
                if !tags.iter().any(|tag| tag == OWNER_TAG) {
                    tags.push(OWNER_TAG.to_owned());
                    let form = Form::new().text("tags", tags.join(";"));
                    let path = format!("{base}/config");
                    let _: Value = self.unless_locked(|| self.client.put(&path, &form)).await?;
                }
            }
            Operation::HealthCheck => {
                return Err(ManagerError::failed(format!(
                    "health checks of {} {} run inside it",
                    self.kind.noun(),
                    self.vmid
                )));
            }
        }
        Ok(())
    }
}
