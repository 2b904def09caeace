//! The guest kit: everything the container and VM managers do the same way, so each of them only says
//! what is its own (how it reads a guest into fields, creates one, and applies field changes).
//!
//! - [`GuestKit`]: the client, the guest type, the default node, the session's [`Cluster`] (its listing and
//!   placements) and where each guest lives.
//! - [`GuestDiff`]: the pure half of a manager, its field vocabulary and comparison. [`GuestDiffer`] makes
//!   it a core [`Differ`], which the demo target runs.
//! - [`GuestDriver`] and [`GuestManager`]: the IO half, and the `Manager` that drives it: observe (one
//!   cluster read, then bounded parallel reads of declared or owned guests; those on a node that is down
//!   are unreachable), diff, apply (create, then converge like an update; migrate when the node changes;
//!   replace only what Phoenix owns), operate.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use phoenix_core::import::Imported;
use phoenix_core::{
    Action, Address, Change, Differ, FieldKey, Fields, Manager, ManagerError, Observed, Operation, Resource,
    ResourceKind, Round, TypedChange,
};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::client::Client;
use crate::cluster::{Cluster, Placements};
use crate::error::PveError;
use crate::lifecycle::{GuestHandle, GuestType};

/// Guests read at once while observing.
const READ_CONCURRENCY: usize = 8;

/// What both guest managers hold: the client, the cluster listing, which API their guests live under,
/// the node for guests that name none, and the node each guest was last seen on.
pub struct GuestKit {
    client: Arc<Client>,
    cluster: Arc<Cluster>,
    kind: GuestType,
    default_node: String,
    nodes: Mutex<BTreeMap<u32, String>>,
    /// One lock per key for work Proxmox does one at a time (clones of one source lock that source).
    serial: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl GuestKit {
    /// A kit for guests of `kind`; guests that name no node go to `default_node`.
    pub fn new(
        client: Arc<Client>,
        cluster: Arc<Cluster>,
        kind: GuestType,
        default_node: impl Into<String>,
    ) -> GuestKit {
        GuestKit {
            client,
            cluster,
            kind,
            default_node: default_node.into(),
            nodes: Mutex::default(),
            serial: Mutex::default(),
        }
    }

    /// Waits until no other work of this kit holds `key`, then holds it until the guard is dropped.
    /// Proxmox locks a guest while it is cloned, so clones of one source take turns instead of failing
    /// with `CT is locked (disk)`.
    pub async fn exclusive(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = Arc::clone(
            self.serial
                .lock()
                .expect("no code panics while holding this lock")
                .entry(key.to_owned())
                .or_default(),
        );
        lock.lock_owned().await
    }

    /// The API client.
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// The node a guest is on: where it was seen, else the one its resource names, else where it was
    /// placed, else the default.
    pub fn node_of(&self, vmid: u32, resource: Option<&Resource>) -> String {
        if let Some(node) = self.nodes().get(&vmid) {
            return node.clone();
        }
        resource
            .and_then(|resource| resource.node.clone())
            .or_else(|| Some(self.cluster.placements().get(vmid)?.node))
            .unwrap_or_else(|| self.default_node.clone())
    }

    /// Whether a clone of `source`, on `source_node`, can be made straight on `node`: Proxmox clones to
    /// another node only from shared storage, and to shared `storage` when one is given. Otherwise the
    /// clone is made beside its source and migrated (see [`crate::cluster::clone_route`]).
    pub async fn clones_across(
        &self,
        source_node: &str,
        source: u32,
        storage: Option<&str>,
        node: &str,
    ) -> Result<bool, PveError> {
        if source_node == node {
            return Ok(true);
        }
        let listing = self.cluster.latest().await;
        let shared = |storage: &str| crate::cluster::is_shared(&listing, source_node, storage);
        let volumes = self.handle(source_node, source).volume_storages().await?;
        Ok(volumes.iter().all(|volume| shared(volume)) && storage.is_none_or(shared))
    }

    /// The cluster listing and placements this kit shares with the other managers.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// One guest on one node.
    pub fn handle<'a>(&'a self, node: &'a str, vmid: u32) -> GuestHandle<'a> {
        GuestHandle {
            client: &self.client,
            node,
            kind: self.kind,
            vmid,
        }
    }

    /// The address of a guest of this kit's kind.
    pub fn address(&self, vmid: u32) -> Address {
        match self.kind {
            GuestType::Lxc => Address::Lxc(vmid),
            GuestType::Qemu => Address::Vm(vmid),
        }
    }

    fn resource_kind(&self) -> ResourceKind {
        match self.kind {
            GuestType::Lxc => ResourceKind::Lxc,
            GuestType::Qemu => ResourceKind::Vm,
        }
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, String>> {
        self.nodes.lock().expect("no code panics while holding this lock")
    }

    /// The guests to read, with their node and status: those declared and those Phoenix owns; and those
    /// that cannot be read or created now, because their node is down, with why. Remembers the node of
    /// every guest of this kind.
    async fn targets(
        &self,
        desired: &[Resource],
        round: Round,
    ) -> Result<(Vec<Target>, BTreeMap<u32, String>), PveError> {
        let resources = self.cluster.resources(round).await?;
        let declared: BTreeMap<u32, &Resource> = desired
            .iter()
            .filter_map(|resource| Some((resource.address.guest_id()?, resource)))
            .collect();
        let mut targets = Vec::new();
        let mut unreachable = BTreeMap::new();
        {
            let mut nodes = self.nodes();
            for entry in resources.iter().filter(|entry| entry.kind == self.kind.segment()) {
                let (Some(vmid), Some(node)) = (entry.vmid, entry.node.clone()) else {
                    continue;
                };
                nodes.insert(vmid, node.clone());
                if !declared.contains_key(&vmid) && !entry.is_owned() {
                    continue;
                }
                match crate::cluster::node_down(&resources, &node) {
                    Some(reason) => {
                        unreachable.insert(vmid, reason);
                    }
                    None => targets.push(Target {
                        vmid,
                        node,
                        status: entry.status.clone().unwrap_or_default(),
                    }),
                }
            }
        }
        // A guest to create on a node that is down cannot be created now.
        for (vmid, resource) in declared {
            if self.nodes().contains_key(&vmid) {
                continue;
            }
            let node = self.node_of(vmid, Some(resource));
            if let Some(reason) = crate::cluster::node_down(&resources, &node)
                && resources.iter().any(|entry| entry.kind == "node")
            {
                unreachable.insert(
                    vmid,
                    format!("{reason}: the {} cannot be created there", self.kind.noun()),
                );
            }
        }
        Ok((targets, unreachable))
    }

    /// Stops and destroys a guest, and forgets where it was.
    async fn delete(&self, vmid: u32) -> Result<(), ManagerError> {
        let node = self.node_of(vmid, None);
        self.handle(&node, vmid).destroy().await?;
        self.nodes().remove(&vmid);
        Ok(())
    }
}

/// A guest to read while observing.
struct Target {
    vmid: u32,
    node: String,
    status: String,
}

/// The pure half of a guest manager: its field vocabulary, what a configuration declares in it, and how
/// declared fields compare with live ones. Plain functions of data, tested without Proxmox.
pub trait GuestDiff: Send + Sync + 'static {
    /// The vocabulary.
    type Field: FieldKey;
    /// The configuration of one guest.
    type Config: Send + Sync;

    /// The configuration of a resource, when it is of this manager's kind.
    fn config(resource: &Resource) -> Option<&Self::Config>;

    /// The fields the configuration declares, in the shape reads produce.
    fn wanted(&self, config: &Self::Config) -> Fields<Self::Field>;

    /// The changes from `observed` to `wanted`. Each change's `new` is the complete value to write.
    fn compare(
        &self,
        wanted: &Fields<Self::Field>,
        observed: &Fields<Self::Field>,
    ) -> Vec<TypedChange<Self::Field>>;

    /// Whether a change cannot be made in place, so the guest is replaced.
    fn replaces(change: &TypedChange<Self::Field>) -> bool;

    /// Whether a change moves the guest to another node: its `new` is the node, and it is migrated
    /// before the other changes are made there.
    fn moves(change: &TypedChange<Self::Field>) -> bool;

    /// Where new guests that name no node go, as placed when the cluster was read (none offline).
    fn placements(&self) -> Option<&Placements> {
        None
    }
}

/// A [`GuestDiff`] as the engine's [`Differ`]: what the managers' `diff` is, and what the demo target runs.
pub struct GuestDiffer<D>(pub D);

impl<D: GuestDiff> GuestDiffer<D> {
    fn changes(&self, desired: &Resource, observed: Option<&Observed>) -> Vec<Change> {
        let Some(config) = D::config(desired) else {
            return Vec::new();
        };
        let wanted = self.0.wanted(config);
        let Some(observed) = observed else {
            let mut fields: BTreeMap<String, Value> = wanted
                .into_iter()
                .map(|(field, value)| (field.name(), value))
                .collect();
            self.place(desired, &mut fields);
            return vec![Change::create(desired.address.clone(), fields)];
        };
        let changed = self.0.compare(&wanted, &observed.to_fields());
        if changed.is_empty() {
            return Vec::new();
        }
        let action = if changed.iter().any(D::replaces) {
            Action::Replace
        } else {
            Action::Update
        };
        vec![Change {
            address: desired.address.clone(),
            action,
            fields: changed.iter().map(TypedChange::untyped).collect(),
        }]
    }

    /// Where a new guest goes, and why there, when its configuration does not say: `node` and `placement`.
    fn place(&self, desired: &Resource, fields: &mut BTreeMap<String, Value>) {
        let Some(placement) = desired
            .address
            .guest_id()
            .and_then(|vmid| self.0.placements()?.get(vmid))
        else {
            return;
        };
        fields
            .entry("node".to_owned())
            .or_insert_with(|| Value::String(placement.node.clone()));
        if let Some(how) = placement.how {
            fields.insert("placement".to_owned(), Value::String(how));
        }
    }
}

impl<D: GuestDiff> Differ for GuestDiffer<D> {
    fn diff(&self, desired: &Resource, observed: Option<&Observed>) -> Vec<Change> {
        self.changes(desired, observed)
    }

    /// Every field of a guest's creation is live, and apply creates it from its configuration: the plan
    /// keeps only the placement, whose node the executor reads (a configured node is the resource's).
    fn lean_creation(&self, desired: &Resource) -> Option<Change> {
        D::config(desired)?;
        let mut fields = BTreeMap::new();
        self.place(desired, &mut fields);
        Some(Change::create(desired.address.clone(), fields))
    }

    fn created(&self, desired: &Resource) -> Observed {
        D::config(desired)
            .map(|config| Observed::from_fields(&self.0.wanted(config)))
            .unwrap_or_default()
    }
}

/// What reading a guest takes beyond its config and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reads {
    /// Its snapshot list.
    pub snapshots: bool,
    /// Its firewall's options and rules.
    pub firewall: bool,
    /// The records of the scripts run inside it.
    pub records: bool,
    /// Files on its node: a container's raw `lxc.*` lines, a VM's user-data snippet.
    pub node_files: bool,
}

/// The field vocabulary of a driver.
pub type FieldOf<D> = <<D as GuestDriver>::Diff as GuestDiff>::Field;
/// The configuration type of a driver.
pub type ConfigOf<D> = <<D as GuestDriver>::Diff as GuestDiff>::Config;

/// The IO half of a guest manager: what [`GuestManager`] cannot do the same way for containers and VMs.
#[async_trait]
pub trait GuestDriver: Send + Sync + 'static {
    /// The pure half.
    type Diff: GuestDiff;

    /// The shared kit.
    fn kit(&self) -> &GuestKit;

    /// The pure half.
    fn differ(&self) -> &GuestDiffer<Self::Diff>;

    /// Runs once per observe, before the reads: notes what apply needs from the declared resources (the
    /// snapshot a clone starts from, say) and reads what every read shares.
    async fn prepare(&self, desired: &[Resource]) -> Result<(), ManagerError> {
        let _ = desired;
        Ok(())
    }

    /// Reads one guest into fields of the vocabulary: its config and status, and what else comparing
    /// `wanted` (the declared fields; none for a guest no configuration declares) takes, so that a guest
    /// that declares no firewall costs no firewall read.
    async fn read(
        &self,
        node: &str,
        vmid: u32,
        status: &str,
        wanted: &Fields<FieldOf<Self>>,
    ) -> Result<Fields<FieldOf<Self>>, ManagerError>;

    /// Creates the guest on `node` (from a template, an image or a clone); the kit then converges the rest
    /// of its fields like an update.
    async fn create(
        &self,
        resource: &Resource,
        config: &ConfigOf<Self>,
        node: &str,
    ) -> Result<(), ManagerError>;

    /// Reads a guest no configuration declares and writes it as the entry that declares it as it is
    /// (`phoenix import`), with notes on what the entry cannot say.
    async fn import(&self, node: &str, vmid: u32, status: &str) -> Result<Imported, ManagerError>;

    /// Moves the guest from `node` to `target`: offline when it is stopped, otherwise as its kind can
    /// (a container restarts, a VM moves live).
    async fn migrate(&self, node: &str, vmid: u32, target: &str) -> Result<(), ManagerError>;

    /// Applies field changes to an existing guest.
    async fn update(
        &self,
        node: &str,
        vmid: u32,
        changes: &[TypedChange<FieldOf<Self>>],
        config: &ConfigOf<Self>,
    ) -> Result<(), ManagerError>;

    /// Runs the guest's declared health check inside it.
    async fn health_check(
        &self,
        node: &str,
        vmid: u32,
        config: Option<&ConfigOf<Self>>,
    ) -> Result<(), ManagerError>;
}

/// The `Manager` of one kind of guest, over a driver.
pub struct GuestManager<D> {
    driver: Arc<D>,
}

impl<D: GuestDriver> GuestManager<D> {
    /// The manager that drives `driver`.
    pub fn new(driver: D) -> GuestManager<D> {
        GuestManager {
            driver: Arc::new(driver),
        }
    }

    /// The driver.
    pub fn driver(&self) -> &D {
        &self.driver
    }

    /// Creates the guest, then converges every other declared field as an update of the new guest.
    async fn create(&self, resource: &Resource, config: &ConfigOf<D>) -> Result<(), ManagerError> {
        let kit = self.driver.kit();
        let vmid = resource
            .address
            .guest_id()
            .ok_or_else(|| ManagerError::failed("not a guest address"))?;
        let node = kit.node_of(vmid, Some(resource));
        self.driver.create(resource, config, &node).await?;
        kit.nodes().insert(vmid, node.clone());
        // Proxmox creates and clones guests stopped: there is no status to read.
        let differ = &self.driver.differ().0;
        let wanted = differ.wanted(config);
        let observed = self.driver.read(&node, vmid, "stopped", &wanted).await?;
        let changes = differ.compare(&wanted, &observed);
        self.driver.update(&node, vmid, &changes, config).await
    }
}

#[async_trait]
impl<D: GuestDriver> Manager for GuestManager<D> {
    fn kind(&self) -> ResourceKind {
        self.driver.kit().resource_kind()
    }

    async fn observe(
        &self,
        desired: &[Resource],
        round: Round,
    ) -> Result<BTreeMap<Address, Observed>, ManagerError> {
        let kit = self.driver.kit();
        let (targets, unreachable) = kit.targets(desired, round).await?;
        self.driver.prepare(desired).await?;
        let configs: BTreeMap<u32, &ConfigOf<D>> = desired
            .iter()
            .filter_map(|resource| Some((resource.address.guest_id()?, D::Diff::config(resource)?)))
            .collect();
        let limit = Arc::new(Semaphore::new(READ_CONCURRENCY));
        let mut reads = tokio::task::JoinSet::new();
        for target in targets {
            let driver = Arc::clone(&self.driver);
            let limit = Arc::clone(&limit);
            let wanted = configs
                .get(&target.vmid)
                .map(|config| driver.differ().0.wanted(config))
                .unwrap_or_default();
            reads.spawn(async move {
                let _permit = limit.acquire().await.expect("the semaphore is never closed");
                let fields = driver
                    .read(&target.node, target.vmid, &target.status, &wanted)
                    .await;
                (target.vmid, fields)
            });
        }
        let mut observed: BTreeMap<Address, Observed> = unreachable
            .into_iter()
            .map(|(vmid, reason)| (kit.address(vmid), Observed::unreachable(reason)))
            .collect();
        while let Some(joined) = reads.join_next().await {
            let (vmid, fields) = joined.expect("reads do not panic");
            observed.insert(kit.address(vmid), Observed::from_fields(&fields?));
        }
        Ok(observed)
    }

    fn diff(&self, desired: &Resource, observed: Option<&Observed>) -> Vec<Change> {
        self.driver.differ().changes(desired, observed)
    }

    fn lean_creation(&self, desired: &Resource) -> Option<Change> {
        self.driver.differ().lean_creation(desired)
    }

    async fn apply(&self, desired: Option<&Resource>, change: &Change) -> Result<(), ManagerError> {
        let kit = self.driver.kit();
        let vmid = change
            .address
            .guest_id()
            .ok_or_else(|| ManagerError::failed(format!("{} is not a guest address", change.address)))?;
        let resource = desired.and_then(|resource| Some((resource, D::Diff::config(resource)?)));
        match (change.action, resource) {
            (Action::Delete, _) => kit.delete(vmid).await,
            (Action::Create, Some((resource, config))) => self.create(resource, config).await,
            (Action::Replace, Some((resource, config))) => {
                let node = kit.node_of(vmid, Some(resource));
                kit.handle(&node, vmid).ensure_owned("replaces").await?;
                kit.delete(vmid).await?;
                self.create(resource, config).await
            }
            (Action::Update, Some((resource, config))) => {
                let changes = change
                    .fields
                    .iter()
                    .map(|field| field.typed())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|error| ManagerError::failed(error.to_string()))?;
                let (moves, changes): (Vec<_>, Vec<_>) = changes.into_iter().partition(D::Diff::moves);
                let mut node = kit.node_of(vmid, Some(resource));
                if let Some(target) = moves.first().and_then(|change| change.new.as_str()) {
                    self.driver.migrate(&node, vmid, target).await?;
                    kit.nodes().insert(vmid, target.to_owned());
                    node = target.to_owned();
                }
                if changes.is_empty() {
                    return Ok(());
                }
                self.driver.update(&node, vmid, &changes, config).await
            }
            (_, None) => Err(ManagerError::failed(format!(
                "{} has no configuration of its kind",
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
        let kit = self.driver.kit();
        let vmid = address
            .guest_id()
            .ok_or_else(|| ManagerError::failed(format!("{address} is not a guest address")))?;
        let node = kit.node_of(vmid, desired);
        match operation {
            Operation::HealthCheck => {
                let config = desired.and_then(D::Diff::config);
                self.driver.health_check(&node, vmid, config).await
            }
            Operation::Delete => {
                kit.handle(&node, vmid).operate(operation).await?;
                kit.nodes().remove(&vmid);
                Ok(())
            }
            other => kit.handle(&node, vmid).operate(other).await,
        }
    }
}
