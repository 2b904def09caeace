//! A stateful in-memory manager: the engine's test double and the backend of the built-in demo target.
//!
//! It keeps the live state of one kind of resource as field maps and applies changes to that state. Its
//! diff is a real manager's [`Differ`] when it is given one (the demo target gives the container and VM
//! managers' own), so plans use that manager's vocabulary, values and consequences; otherwise it compares
//! the declared fields with the consequence rules of real guests. It can be given latency, injected
//! failures and drift, and it records how many operations ran at once, overall and per storage.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::engine::address::{Address, ResourceKind};
use crate::engine::change::{Action, Change, Consequence, Observed, diff_fields};
use crate::engine::manager::{Differ, Manager, ManagerError, Operation, Round};
use crate::engine::resource::{Desired, Resource};

/// Fields that cannot change in place: changing one replaces the resource.
const REPLACE_FIELDS: &[&str] = &[
    "clone_from_ctid",
    "clone_from_vmid",
    "template",
    "template_image",
    "is_template",
    "unprivileged",
];

/// Fields that take effect only when a running guest restarts.
const RESTART_FIELDS: &[&str] = &[
    "pct_options",
    "lxc_options",
    "id_maps",
    "mount_points",
    "gpu_assignment",
    "apparmor_profile",
    "network_config",
    "mac_address",
    "network_bridge",
];

/// Sizes that grow live and cannot shrink without destroying data.
const SIZE_FIELDS: &[&str] = &["storage_size_gb", "disk_size_gb"];

/// The consequence of changing a field, the way Proxmox guests behave.
pub fn guest_field_consequence(field: &str, old: Option<&Value>, new: &Value) -> Consequence {
    if SIZE_FIELDS.contains(&field) {
        let shrinks =
            matches!((old.and_then(Value::as_f64), new.as_f64()), (Some(old), Some(new)) if new < old);
        return if shrinks {
            Consequence::Destructive
        } else {
            Consequence::Live
        };
    }
    if REPLACE_FIELDS.contains(&field) && old.is_some() {
        return Consequence::Destructive;
    }
    if RESTART_FIELDS.contains(&field) {
        Consequence::Restart
    } else {
        Consequence::Live
    }
}

/// A stateful in-memory manager of one kind.
#[derive(Clone)]
pub struct FakeManager {
    kind: ResourceKind,
    differ: Option<Arc<dyn Differ>>,
    inner: Arc<Mutex<FakeState>>,
}

#[derive(Default)]
struct FakeState {
    live: BTreeMap<Address, Observed>,
    latency: Duration,
    failures: BTreeMap<Address, String>,
    observe_failure: Option<String>,
    unreachable: BTreeMap<Address, String>,
    running: usize,
    max_running: usize,
    creating_per_storage: BTreeMap<String, usize>,
    max_creating_per_storage: BTreeMap<String, usize>,
    writes: usize,
    applied: Vec<(Address, Action)>,
}

impl FakeManager {
    /// An empty estate of one kind.
    pub fn new(kind: ResourceKind) -> FakeManager {
        FakeManager {
            kind,
            differ: None,
            inner: Arc::new(Mutex::new(FakeState::default())),
        }
    }

    /// Diffs with a real manager's differ, and creates what it says a created resource looks like.
    pub fn with_differ(mut self, differ: Arc<dyn Differ>) -> FakeManager {
        self.differ = Some(differ);
        self
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.inner
            .lock()
            .expect("the fake's lock is never poisoned: no code panics while holding it")
    }

    /// Makes every apply take this long.
    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }

    /// Makes applies to `address` fail with `message` until [`FakeManager::heal`].
    pub fn fail(&self, address: Address, message: impl Into<String>) {
        self.state().failures.insert(address, message.into());
    }

    /// Removes an injected failure.
    pub fn heal(&self, address: &Address) {
        self.state().failures.remove(address);
    }

    /// Makes `observe` fail.
    pub fn fail_observe(&self, message: impl Into<String>) {
        self.state().observe_failure = Some(message.into());
    }

    /// Makes `address` unreachable (its node goes offline): observed as [`Observed::unreachable`] with
    /// `reason` until [`FakeManager::reconnect`]; its live state is kept meanwhile.
    pub fn cut_off(&self, address: Address, reason: impl Into<String>) {
        self.state().unreachable.insert(address, reason.into());
    }

    /// Makes `address` reachable again.
    pub fn reconnect(&self, address: &Address) {
        self.state().unreachable.remove(address);
    }

    /// Changes one live field by hand, as an operator would in the Proxmox UI.
    pub fn drift(&self, address: &Address, field: &str, value: Value) {
        let mut state = self.state();
        let observed = state
            .live
            .get_mut(address)
            .expect("drift is injected into an existing resource");
        observed.fields.insert(field.to_owned(), value);
    }

    /// Puts a resource into the live state directly (one Phoenix owns but no longer declares, say).
    pub fn insert(&self, address: Address, fields: BTreeMap<String, Value>) {
        self.state().live.insert(address, Observed::new(fields));
    }

    /// The live state.
    pub fn live(&self) -> BTreeMap<Address, Observed> {
        self.state().live.clone()
    }

    /// Replaces the live state (the demo target loads it from a file).
    pub fn set_live(&self, live: BTreeMap<Address, Observed>) {
        self.state().live = live;
    }

    /// How many writes (applied changes) the fake has seen.
    pub fn writes(&self) -> usize {
        self.state().writes
    }

    /// Every applied change, in the order they completed.
    pub fn applied(&self) -> Vec<(Address, Action)> {
        self.state().applied.clone()
    }

    /// The most applies that ran at once.
    pub fn max_concurrency(&self) -> usize {
        self.state().max_running
    }

    /// The most creations that ran at once on each storage of a node (`pve1/local-lvm`).
    pub fn max_creations_per_storage(&self) -> BTreeMap<String, usize> {
        self.state().max_creating_per_storage.clone()
    }
}

#[async_trait]
impl Manager for FakeManager {
    fn kind(&self) -> ResourceKind {
        self.kind
    }

    async fn observe(
        &self,
        desired: &[Resource],
        _round: Round,
    ) -> Result<BTreeMap<Address, Observed>, ManagerError> {
        let state = self.state();
        if let Some(message) = &state.observe_failure {
            return Err(ManagerError::failed(message.clone()));
        }
        // Everything of this kind in the fake is Phoenix's own, so undeclared entries come back too.
        let _ = desired;
        let mut live = state.live.clone();
        for (address, reason) in &state.unreachable {
            live.insert(address.clone(), Observed::unreachable(reason.clone()));
        }
        Ok(live)
    }

    fn lean_creation(&self, desired: &Resource) -> Option<Change> {
        self.differ.as_ref()?.lean_creation(desired)
    }

    fn diff(&self, desired: &Resource, observed: Option<&Observed>) -> Vec<Change> {
        if let Some(differ) = &self.differ {
            return differ.diff(desired, observed);
        }
        let fields = desired.declared_fields();
        let Some(observed) = observed else {
            return vec![Change::create(desired.address.clone(), fields)];
        };
        let changed = diff_fields(&fields, &observed.fields, guest_field_consequence);
        if changed.is_empty() {
            return Vec::new();
        }
        let replaces = changed
            .iter()
            .any(|field| REPLACE_FIELDS.contains(&field.field.as_str()));
        let action = if replaces { Action::Replace } else { Action::Update };
        vec![Change {
            address: desired.address.clone(),
            action,
            fields: changed,
        }]
    }

    async fn apply(&self, desired: Option<&Resource>, change: &Change) -> Result<(), ManagerError> {
        let creates = matches!(change.action, Action::Create | Action::Replace);
        let storage = desired.filter(|_| creates).and_then(|resource| {
            let storage = resource.storage.as_deref()?;
            Some(super::executor::storage_key(resource.node.as_deref(), storage))
        });
        let latency = {
            let mut state = self.state();
            state.running += 1;
            state.max_running = state.max_running.max(state.running);
            if let Some(storage) = &storage {
                let now = {
                    let count = state.creating_per_storage.entry(storage.clone()).or_insert(0);
                    *count += 1;
                    *count
                };
                let max = state.max_creating_per_storage.entry(storage.clone()).or_insert(0);
                *max = (*max).max(now);
            }
            state.latency
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut state = self.state();
        state.running -= 1;
        if let Some(storage) = &storage {
            *state
                .creating_per_storage
                .get_mut(storage)
                .expect("counted above") -= 1;
        }
        if let Some(message) = state.failures.get(&change.address) {
            return Err(ManagerError::failed(message.clone()));
        }
        state.writes += 1;
        state.applied.push((change.address.clone(), change.action));
        match change.action {
            Action::Delete => {
                state.live.remove(&change.address);
            }
            Action::Create | Action::Replace => {
                let created = match (&self.differ, desired) {
                    (Some(differ), Some(desired)) => differ.created(desired),
                    (None, Some(desired)) => Observed::new(desired.declared_fields()),
                    (_, None) => Observed::default(),
                };
                state.live.insert(change.address.clone(), created);
            }
            Action::Update => {
                let live = state
                    .live
                    .get_mut(&change.address)
                    .ok_or_else(|| ManagerError::failed(format!("{} does not exist", change.address)))?;
                for field in &change.fields {
                    match &field.new {
                        Some(value) => live.fields.insert(field.field.clone(), value.clone()),
                        None => live.fields.remove(&field.field),
                    };
                }
            }
        }
        Ok(())
    }

    async fn operate(
        &self,
        desired: Option<&Resource>,
        address: &Address,
        operation: &Operation,
    ) -> Result<(), ManagerError> {
        let mut state = self.state();
        if let Some(message) = state.failures.get(address) {
            return Err(ManagerError::failed(message.clone()));
        }
        state.writes += 1;
        if *operation == Operation::Delete {
            return match state.live.remove(address) {
                Some(_) => Ok(()),
                None => Err(ManagerError::failed(format!("{address} does not exist"))),
            };
        }
        let live = state
            .live
            .get_mut(address)
            .ok_or_else(|| ManagerError::failed(format!("{address} does not exist")))?;
        let snapshots = |live: &Observed| -> Vec<Value> {
            live.fields
                .get("snapshots")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        match operation {
            Operation::Start | Operation::Restart => {
                live.fields
                    .insert("status".into(), Value::String("running".into()));
            }
            Operation::Stop => {
                live.fields
                    .insert("status".into(), Value::String("stopped".into()));
            }
            Operation::Snapshot(name) => {
                let mut list = snapshots(live);
                if list.iter().any(|existing| existing == name.as_str()) {
                    return Err(ManagerError::failed(format!(
                        "snapshot `{name}` of {address} already exists"
                    )));
                }
                list.push(Value::String(name.clone()));
                live.fields.insert("snapshots".into(), Value::Array(list));
            }
            Operation::Rollback(name) => {
                if !snapshots(live).iter().any(|existing| existing == name.as_str()) {
                    return Err(ManagerError::failed(format!(
                        "{address} has no snapshot `{name}`"
                    )));
                }
            }
            Operation::HealthCheck => {
                // Like the real managers: a check runs inside a running guest, and only a declared one.
                let declared = desired.is_some_and(|resource| match &resource.desired {
                    Desired::Container(container) => container.health_check.is_some(),
                    Desired::Vm(vm) => vm.health_check.is_some(),
                    _ => false,
                });
                if !declared {
                    return Err(ManagerError::failed(format!(
                        "{address} declares no health check"
                    )));
                }
                if live
                    .fields
                    .get("status")
                    .is_some_and(|status| status != "running")
                {
                    return Err(ManagerError::failed(format!(
                        "the health check of {address} failed: it is not running"
                    )));
                }
            }
            Operation::Adopt => {
                live.fields.insert("owned".into(), Value::Bool(true));
            }
            Operation::Delete => {}
        }
        Ok(())
    }
}
