//! [`HostManager`]: the `host/*` resources of one node.

use std::collections::BTreeMap;

use async_trait::async_trait;
use phoenix_core::engine::change::diff_fields;
use phoenix_core::{
    Address, Change, Consequence, Desired, HostStep, Manager, ManagerError, Observed, Resource, ResourceKind,
    Round,
};
use phoenix_pve::Session;
use serde_json::Value;

use crate::node::Node;
use crate::{
    access, apparmor, dns, firewall, firewall_parts, locale, network, nfs, nvidia, packages, repositories,
    samba, snapshots, storage, subids, timezone, user, zfs,
};

/// Converges the host steps it knows on one node.
pub struct HostManager {
    node: Node,
    upgrade: bool,
    /// The text of each AppArmor profile, by name (the configuration directory's `apparmor/` files).
    profiles: BTreeMap<String, String>,
    network: network::Facts,
}

/// The host manager of a live session, on its default node.
pub fn manager(session: &Session) -> HostManager {
    manager_on(session, session.default_node())
}

/// The host manager of a live session, on the node `name`.
pub fn manager_on(session: &Session, name: &str) -> HostManager {
    HostManager::new(Node::of(session, name))
}

impl HostManager {
    /// A manager for `node`.
    pub fn new(node: Node) -> HostManager {
        HostManager {
            node,
            upgrade: false,
            profiles: BTreeMap::new(),
            network: network::Facts::default(),
        }
    }

    /// With `upgrade`, `host/apt/packages` also wants every package of the node upgraded (`--upgrade`).
    pub fn with_upgrade(mut self, upgrade: bool) -> HostManager {
        self.upgrade = upgrade;
        self
    }

    /// The AppArmor profiles' text, by name: a profile is managed only when its text is known.
    pub fn with_profiles(mut self, profiles: BTreeMap<String, String>) -> HostManager {
        self.profiles = profiles;
        self
    }

    /// Whether this manager converges `step` here: the steps it has code for, and of those that need the
    /// host channel, only when there is one.
    pub fn handles(&self, step: &HostStep) -> bool {
        match step {
            HostStep::Timezone(_)
            | HostStep::Dns(_)
            | HostStep::Firewall(_)
            | HostStep::AptRepositories(_)
            | HostStep::Access(_)
            | HostStep::FirewallPart(_)
            | HostStep::Storage(_)
            | HostStep::Bridge(_) => true,
            HostStep::User(_)
            | HostStep::SubIds(_)
            | HostStep::AptPackages(_)
            | HostStep::Locale(_)
            | HostStep::NvidiaDriver(_)
            | HostStep::ZfsPool(_)
            | HostStep::ZfsDataset(_)
            | HostStep::ZfsArc(_)
            | HostStep::Snapshots(_)
            | HostStep::NfsExports(_)
            | HostStep::Samba(_) => self.node.has_channel(),
            HostStep::AppArmor(name) => self.node.has_channel() && self.profiles.contains_key(name),
        }
    }

    async fn observe_one(&self, step: &HostStep) -> Result<Option<BTreeMap<String, Value>>, ManagerError> {
        match step {
            HostStep::Timezone(_) => timezone::observe(&self.node).await.map(Some),
            HostStep::Dns(_) => dns::observe(&self.node).await.map(Some),
            HostStep::User(declared) => user::observe(&self.node, declared).await,
            HostStep::Firewall(declared) => firewall::observe(self.node.client(), declared).await.map(Some),
            HostStep::SubIds(ids) => subids::observe(&self.node, ids).await.map(Some),
            HostStep::AptRepositories(_) => repositories::observe(&self.node).await.map(Some),
            HostStep::AptPackages(declared) => packages::observe(&self.node, declared, self.upgrade)
                .await
                .map(Some),
            HostStep::Locale(declared) => locale::observe(&self.node, declared).await.map(Some),
            HostStep::AppArmor(name) => apparmor::observe(&self.node, name).await,
            HostStep::Access(step) => access::observe(&self.node, step).await,
            HostStep::FirewallPart(part) => firewall_parts::observe(&self.node, part).await,
            HostStep::Bridge(bridge) => network::observe(&self.node, &self.network, bridge).await,
            HostStep::NvidiaDriver(_) => nvidia::observe(&self.node).await.map(Some),
            HostStep::ZfsPool(pool) => zfs::pool_observe(&self.node, pool).await,
            HostStep::ZfsDataset(dataset) => zfs::dataset_observe(&self.node, dataset).await,
            HostStep::ZfsArc(_) => zfs::arc_observe(&self.node).await.map(Some),
            HostStep::Storage(declared) => storage::observe(&self.node, declared).await,
            HostStep::NfsExports(_) => nfs::observe(&self.node).await,
            HostStep::Samba(declared) => samba::observe(&self.node, declared).await,
            HostStep::Snapshots(plan) => snapshots::observe(&self.node, plan).await.map(Some),
        }
    }
}

fn step_of(resource: &Resource) -> Option<&HostStep> {
    match &resource.desired {
        Desired::Host(step) => Some(step),
        _ => None,
    }
}

/// The declared fields of a step, in the vocabulary its module observes.
fn desired_fields(
    step: &HostStep,
    upgrade: bool,
    profiles: &BTreeMap<String, String>,
) -> BTreeMap<String, Value> {
    match step {
        HostStep::Timezone(zone) => timezone::desired(zone),
        HostStep::Dns(declared) => dns::desired(declared),
        HostStep::User(declared) => user::desired(declared),
        HostStep::Firewall(declared) => firewall::desired(declared),
        HostStep::SubIds(ids) => subids::desired(ids),
        HostStep::AptRepositories(declared) => repositories::desired(declared),
        HostStep::AptPackages(declared) => packages::desired(declared, upgrade),
        HostStep::Locale(declared) => locale::desired(declared),
        HostStep::AppArmor(name) => profiles
            .get(name)
            .map(|text| apparmor::desired(text))
            .unwrap_or_default(),
        HostStep::FirewallPart(part) => firewall_parts::desired(part),
        HostStep::Bridge(bridge) => network::desired(bridge),
        HostStep::NvidiaDriver(driver) => nvidia::desired(driver),
        HostStep::ZfsPool(pool) => zfs::pool_desired(pool),
        HostStep::ZfsDataset(dataset) => zfs::dataset_desired(dataset),
        HostStep::ZfsArc(gib) => zfs::arc_desired(*gib),
        HostStep::Storage(declared) => storage::desired(declared),
        HostStep::NfsExports(declared) => nfs::desired(declared),
        HostStep::Samba(declared) => samba::desired(declared),
        HostStep::Snapshots(plan) => snapshots::desired(plan),
        _ => BTreeMap::new(),
    }
}

#[async_trait]
impl Manager for HostManager {
    fn kind(&self) -> ResourceKind {
        ResourceKind::Host
    }

    fn manages(&self, desired: &Resource) -> bool {
        step_of(desired).is_some_and(|step| self.handles(step))
    }

    async fn observe(
        &self,
        desired: &[Resource],
        _round: Round,
    ) -> Result<BTreeMap<Address, Observed>, ManagerError> {
        let mut observed = BTreeMap::new();
        for resource in desired {
            let Some(step) = step_of(resource).filter(|step| self.handles(step)) else {
                continue;
            };
            if let Some(fields) = self.observe_one(step).await? {
                observed.insert(resource.address.clone(), Observed::new(fields));
            }
        }
        // The datasets Phoenix made that are no longer declared, which the plan destroys.
        if self.node.has_channel() && desired.iter().any(|resource| self.manages(resource)) {
            for (name, used) in zfs::owned_datasets(&self.node).await? {
                let address = Address::Host(format!("zfs/dataset/{name}"));
                if desired.iter().any(|resource| resource.address == address) {
                    continue;
                }
                let fields = BTreeMap::from([
                    ("owner".to_owned(), Value::from("phoenix")),
                    ("used".to_owned(), used),
                ]);
                observed.insert(address, Observed::new(fields));
            }
        }
        Ok(observed)
    }

    fn diff(&self, desired: &Resource, observed: Option<&Observed>) -> Vec<Change> {
        let Some(step) = step_of(desired) else {
            return Vec::new();
        };
        if let HostStep::Access(access_step) = step {
            return access::diff(&desired.address, access_step, observed);
        }
        let fields = desired_fields(step, self.upgrade, &self.profiles);
        let live = observed.map(|observed| &observed.fields);
        let consequence = |field: &str| match step {
            HostStep::Bridge(bridge) => network::consequence(&self.network, bridge, live, field),
            _ => Consequence::Live,
        };
        let Some(observed) = observed else {
            let mut change = Change::create(desired.address.clone(), &fields);
            if matches!(step, HostStep::Bridge(_)) {
                network::created(&self.network, &mut change);
            }
            for field in &mut change.fields {
                field.consequence = consequence(&field.field).max(field.consequence);
            }
            return vec![change];
        };
        let changed = diff_fields(&fields, &observed.fields, |field, _, _| consequence(field));
        if changed.is_empty() {
            return Vec::new();
        }
        vec![Change {
            address: desired.address.clone(),
            action: phoenix_core::Action::Update,
            fields: changed,
        }]
    }

    async fn apply(&self, desired: Option<&Resource>, change: &Change) -> Result<(), ManagerError> {
        let Some(step) = desired.and_then(step_of) else {
            // The one host resource Phoenix removes: a dataset it made.
            if let Address::Host(path) = &change.address
                && let Some(name) = path.strip_prefix("zfs/dataset/")
                && change.action == phoenix_core::Action::Delete
            {
                return zfs::dataset_destroy(&self.node, name).await;
            }
            return Err(ManagerError::failed(format!(
                "{} is not declared; the host manager removes only datasets it made",
                change.address
            )));
        };
        match step {
            HostStep::Timezone(zone) => timezone::apply(&self.node, zone).await,
            HostStep::Dns(declared) => dns::apply(&self.node, declared).await,
            HostStep::User(declared) => user::apply(&self.node, declared, change).await,
            HostStep::SubIds(ids) => subids::apply(&self.node, ids).await,
            HostStep::AptRepositories(declared) => repositories::apply(&self.node, declared).await,
            HostStep::AptPackages(declared) => packages::apply(&self.node, declared, self.upgrade).await,
            HostStep::Locale(declared) => locale::apply(&self.node, declared).await,
            HostStep::AppArmor(name) => {
                let text = self.profiles.get(name).ok_or_else(|| {
                    ManagerError::failed(format!("the text of the AppArmor profile {name} is not known"))
                })?;
                apparmor::apply(&self.node, name, text).await
            }
            HostStep::Access(step) => access::apply(&self.node, step, change).await,
            HostStep::FirewallPart(part) => firewall_parts::apply(&self.node, part, change).await,
            HostStep::Bridge(bridge) => network::apply(&self.node, bridge, change).await,
            HostStep::NvidiaDriver(driver) => nvidia::apply(&self.node, driver, change).await,
            HostStep::ZfsPool(pool) => zfs::pool_apply(&self.node, pool, change).await,
            HostStep::ZfsDataset(dataset) => zfs::dataset_apply(&self.node, dataset, change).await,
            HostStep::ZfsArc(gib) => zfs::arc_apply(&self.node, *gib).await,
            HostStep::Storage(declared) => storage::apply(&self.node, declared, change).await,
            HostStep::NfsExports(declared) => nfs::apply(&self.node, declared).await,
            HostStep::Samba(declared) => samba::apply(&self.node, declared, change).await,
            HostStep::Snapshots(plan) => snapshots::apply(&self.node, plan).await,
            HostStep::Firewall(declared) => {
                let fields: Vec<&str> = change.fields.iter().map(|field| field.field.as_str()).collect();
                firewall::apply(self.node.client(), declared, &fields).await
            }
        }
    }
}
