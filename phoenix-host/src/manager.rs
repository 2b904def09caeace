//! [`HostManager`]: the `host/*` resources of one node, or of each node of a cluster.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use phoenix_core::engine::change::diff_fields;
use phoenix_core::{
    Address, Change, Consequence, Desired, HostStep, Manager, ManagerError, Observed, Resource, ResourceKind,
    Round,
};
use phoenix_pve::Session;
use phoenix_pve::cluster::Cluster;
use serde_json::Value;

use crate::node::Node;
use crate::{
    access, apparmor, dns, firewall, firewall_parts, locale, network, nfs, nvidia, packages, repositories,
    samba, snapshots, storage, subids, timezone, user, zfs,
};

/// Converges the host steps it knows on one node, or on each node of a cluster: a step whose resource
/// names a node (`host/<node>/...`) on that node, the cluster's steps on the first.
pub struct HostManager {
    sites: Vec<Site>,
    upgrade: bool,
    /// The text of each AppArmor profile, by name (the configuration directory's `apparmor/` files).
    profiles: BTreeMap<String, String>,
    /// The session's shared cluster listing; without it (a manager made by hand) it is read itself.
    cluster: Option<Arc<Cluster>>,
}

/// One node, and what was learnt of its network while observing.
struct Site {
    node: Node,
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

/// The host manager of a live session on each of `nodes` (each with its own host channel); the cluster's
/// own steps are worked on through the first.
pub fn manager_for(session: &Session, nodes: &[String]) -> HostManager {
    let mut manager = HostManager::cluster(nodes.iter().map(|name| Node::of(session, name)).collect());
    manager.cluster = Some(Arc::clone(session.cluster()));
    manager
}

impl HostManager {
    /// A manager for `node`.
    pub fn new(node: Node) -> HostManager {
        HostManager::cluster(vec![node])
    }

    /// A manager for the nodes of a cluster; the cluster's own steps are worked on through the first.
    pub fn cluster(nodes: Vec<Node>) -> HostManager {
        assert!(!nodes.is_empty(), "a host manager has a node");
        HostManager {
            sites: nodes
                .into_iter()
                .map(|node| Site {
                    node,
                    network: network::Facts::default(),
                })
                .collect(),
            upgrade: false,
            profiles: BTreeMap::new(),
            cluster: None,
        }
    }

    /// The node a resource's step is worked on: the one it names, else the first; `None` when it names
    /// a node this manager does not have.
    fn site_of(&self, resource: &Resource) -> Option<&Site> {
        match &resource.node {
            Some(name) => self.sites.iter().find(|site| site.node.name() == name),
            None => self.sites.first(),
        }
    }

    /// The site of an address `host/<node>/...`, in a manager of several nodes.
    fn site_named_in(&self, address: &Address) -> Option<(&Site, String)> {
        let Address::Host(path) = address else { return None };
        if self.sites.len() < 2 {
            return Some((self.sites.first()?, path.clone()));
        }
        let (name, rest) = path.split_once('/')?;
        let site = self.sites.iter().find(|site| site.node.name() == name)?;
        Some((site, rest.to_owned()))
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
        self.sites.first().is_some_and(|site| self.handles_on(site, step))
    }

    fn handles_on(&self, site: &Site, step: &HostStep) -> bool {
        let has_channel = site.node.has_channel();
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
            | HostStep::Samba(_) => has_channel,
            HostStep::AppArmor(name) => has_channel && self.profiles.contains_key(name),
        }
    }

    async fn observe_one(
        &self,
        site: &Site,
        step: &HostStep,
    ) -> Result<Option<BTreeMap<String, Value>>, ManagerError> {
        let node = &site.node;
        match step {
            HostStep::Timezone(_) => timezone::observe(node).await.map(Some),
            HostStep::Dns(_) => dns::observe(node).await.map(Some),
            HostStep::User(declared) => user::observe(node, declared).await,
            HostStep::Firewall(declared) => firewall::observe(node.client(), declared).await.map(Some),
            HostStep::SubIds(ids) => subids::observe(node, ids).await.map(Some),
            HostStep::AptRepositories(_) => repositories::observe(node).await.map(Some),
            HostStep::AptPackages(declared) => {
                packages::observe(node, declared, self.upgrade).await.map(Some)
            }
            HostStep::Locale(declared) => locale::observe(node, declared).await.map(Some),
            HostStep::AppArmor(name) => apparmor::observe(node, name).await,
            HostStep::Access(step) => access::observe(node, step).await,
            HostStep::FirewallPart(part) => firewall_parts::observe(node, part).await,
            HostStep::Bridge(bridge) => network::observe(node, &site.network, bridge).await,
            HostStep::NvidiaDriver(_) => nvidia::observe(node).await.map(Some),
            HostStep::ZfsPool(pool) => zfs::pool_observe(node, pool).await,
            HostStep::ZfsDataset(dataset) => zfs::dataset_observe(node, dataset).await,
            HostStep::ZfsArc(_) => zfs::arc_observe(node).await.map(Some),
            HostStep::Storage(declared) => storage::observe(node, declared).await,
            HostStep::NfsExports(_) => nfs::observe(node).await,
            HostStep::Samba(declared) => samba::observe(node, declared).await,
            HostStep::Snapshots(plan) => snapshots::observe(node, plan).await.map(Some),
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
        match (step_of(desired), self.site_of(desired)) {
            (Some(step), Some(site)) => self.handles_on(site, step),
            _ => false,
        }
    }

    async fn observe(
        &self,
        desired: &[Resource],
        round: Round,
    ) -> Result<BTreeMap<Address, Observed>, ManagerError> {
        let mut observed = BTreeMap::new();
        // In a cluster, the nodes that are down: their steps cannot be read, and are skipped.
        let mut down = BTreeMap::new();
        if self.sites.len() > 1 && desired.iter().any(|resource| self.manages(resource)) {
            let listing = match &self.cluster {
                Some(cluster) => cluster.resources(round).await?,
                None => Arc::new(self.sites[0].node.client().cluster_resources().await?),
            };
            for site in &self.sites {
                if let Some(reason) = phoenix_pve::cluster::node_down(&listing, site.node.name()) {
                    down.insert(site.node.name().to_owned(), reason);
                }
            }
        }
        for resource in desired.iter().filter(|resource| self.manages(resource)) {
            let (Some(step), Some(site)) = (step_of(resource), self.site_of(resource)) else {
                continue;
            };
            if let Some(reason) = resource.node.as_ref().and_then(|node| down.get(node)) {
                observed.insert(resource.address.clone(), Observed::unreachable(reason.clone()));
                continue;
            }
            if let Some(fields) = self.observe_one(site, step).await? {
                observed.insert(resource.address.clone(), Observed::new(fields));
            }
        }
        // The datasets Phoenix made that are no longer declared, which the plan destroys.
        let prefixed = self.sites.len() > 1;
        for site in &self.sites {
            let here = |resource: &&Resource| {
                self.site_of(resource)
                    .is_some_and(|found| std::ptr::eq(found, site))
            };
            if !site.node.has_channel()
                || down.contains_key(site.node.name())
                || !desired.iter().filter(here).any(|resource| self.manages(resource))
            {
                continue;
            }
            let prefix = if prefixed {
                format!("{}/", site.node.name())
            } else {
                String::new()
            };
            for (name, used) in zfs::owned_datasets(&site.node).await? {
                let address = Address::Host(format!("{prefix}zfs/dataset/{name}"));
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
        let Some(site) = self.site_of(desired) else {
            return Vec::new();
        };
        let fields = desired_fields(step, self.upgrade, &self.profiles);
        let live = observed.map(|observed| &observed.fields);
        let consequence = |field: &str| match step {
            HostStep::Bridge(bridge) => network::consequence(&site.network, bridge, live, field),
            _ => Consequence::Live,
        };
        let Some(observed) = observed else {
            let mut change = Change::create(desired.address.clone(), fields);
            if matches!(step, HostStep::Bridge(_)) {
                network::created(&site.network, &mut change);
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
        let Some((step, site)) =
            desired.and_then(|desired| Some((step_of(desired)?, self.site_of(desired)?)))
        else {
            // The one host resource Phoenix removes: a dataset it made.
            if let Some((site, path)) = self.site_named_in(&change.address)
                && let Some(name) = path.strip_prefix("zfs/dataset/")
                && change.action == phoenix_core::Action::Delete
            {
                return zfs::dataset_destroy(&site.node, name).await;
            }
            return Err(ManagerError::failed(format!(
                "{} is not declared; the host manager removes only datasets it made",
                change.address
            )));
        };
        match step {
            HostStep::Timezone(zone) => timezone::apply(&site.node, zone).await,
            HostStep::Dns(declared) => dns::apply(&site.node, declared).await,
            HostStep::User(declared) => user::apply(&site.node, declared, change).await,
            HostStep::SubIds(ids) => subids::apply(&site.node, ids).await,
            HostStep::AptRepositories(declared) => repositories::apply(&site.node, declared).await,
            HostStep::AptPackages(declared) => packages::apply(&site.node, declared, self.upgrade).await,
            HostStep::Locale(declared) => locale::apply(&site.node, declared).await,
            HostStep::AppArmor(name) => {
                let text = self.profiles.get(name).ok_or_else(|| {
                    ManagerError::failed(format!("the text of the AppArmor profile {name} is not known"))
                })?;
                apparmor::apply(&site.node, name, text).await
            }
            HostStep::Access(step) => access::apply(&site.node, step, change).await,
            HostStep::FirewallPart(part) => firewall_parts::apply(&site.node, part, change).await,
            HostStep::Bridge(bridge) => network::apply(&site.node, bridge, change).await,
            HostStep::NvidiaDriver(driver) => nvidia::apply(&site.node, driver, change).await,
            HostStep::ZfsPool(pool) => zfs::pool_apply(&site.node, pool, change).await,
            HostStep::ZfsDataset(dataset) => zfs::dataset_apply(&site.node, dataset, change).await,
            HostStep::ZfsArc(gib) => zfs::arc_apply(&site.node, *gib).await,
            HostStep::Storage(declared) => storage::apply(&site.node, declared, change).await,
            HostStep::NfsExports(declared) => nfs::apply(&site.node, declared).await,
            HostStep::Samba(declared) => samba::apply(&site.node, declared, change).await,
            HostStep::Snapshots(plan) => snapshots::apply(&site.node, plan).await,
            HostStep::Firewall(declared) => {
                let fields: Vec<&str> = change.fields.iter().map(|field| field.field.as_str()).collect();
                firewall::apply(site.node.client(), declared, &fields).await
            }
        }
    }
}
