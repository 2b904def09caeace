//! The cluster as one run sees it: Proxmox's cluster listing (`GET /cluster/resources`), read once per
//! observe [`Round`] and shared by every manager of a session, and what follows from it: which nodes are
//! down, which storages are shared, and where each new guest that names no node goes ([`place`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use phoenix_core::config::hypervisor::Placement as Rule;
use phoenix_core::{Estate, GuestSpec, Round};

use crate::client::{Client, ClusterResource};
use crate::error::PveError;

/// Proxmox's cluster listing, read once per round of observes, with the placements made from it.
pub struct Cluster {
    client: Arc<Client>,
    demands: Vec<Demand>,
    rule: Rule,
    nodes: Vec<String>,
    placements: Placements,
    cached: tokio::sync::Mutex<Option<(Round, Arc<Vec<ClusterResource>>)>>,
}

impl Cluster {
    /// The listing of the cluster `client` talks to, for an estate without guests to place.
    pub fn new(client: Arc<Client>) -> Cluster {
        Cluster {
            client,
            demands: Vec::new(),
            rule: Rule::default(),
            nodes: Vec::new(),
            placements: Placements::default(),
            cached: tokio::sync::Mutex::default(),
        }
    }

    /// Places the guests of `estate` that name no node by its `proxmox.placement`, among its
    /// `proxmox.nodes` (every node of the cluster when it lists none).
    pub fn for_estate(mut self, estate: &Estate) -> Cluster {
        let connection = estate.files().hypervisor.proxmox.as_ref();
        self.rule = connection
            .and_then(|connection| connection.placement)
            .unwrap_or_default();
        self.nodes = connection
            .map(|connection| connection.nodes.clone())
            .unwrap_or_default();
        self.demands = Demand::of(estate);
        self
    }

    /// The listing as last read (empty before the first read).
    pub async fn latest(&self) -> Arc<Vec<ClusterResource>> {
        match self.cached.lock().await.as_ref() {
            Some((_, resources)) => Arc::clone(resources),
            None => Arc::default(),
        }
    }

    /// Where new guests go, as of the latest read; the guest differs show it in plans.
    pub fn placements(&self) -> &Placements {
        &self.placements
    }

    /// The listing as of `round`: read by the first manager that asks in the round, shared with the others.
    /// Each read places the declared guests the cluster does not have yet.
    pub async fn resources(&self, round: Round) -> Result<Arc<Vec<ClusterResource>>, PveError> {
        let mut cached = self.cached.lock().await;
        if let Some((seen, resources)) = cached.as_ref()
            && *seen == round
        {
            return Ok(Arc::clone(resources));
        }
        let resources = Arc::new(self.client.cluster_resources().await?);
        self.placements
            .set(place(&resources, &self.demands, self.rule, &self.nodes));
        *cached = Some((round, Arc::clone(&resources)));
        Ok(resources)
    }
}

/// What placing a guest needs to know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    /// CTID or VMID.
    pub vmid: u32,
    /// The node it names, if any.
    pub node: Option<String>,
    /// Memory it takes, in MiB.
    pub memory_mb: u64,
    /// The storage its disks go on.
    pub storage: String,
    /// The guest it is cloned from.
    pub source: Option<u32>,
}

impl Demand {
    /// The demands of every guest of the estate, by ID.
    pub fn of(estate: &Estate) -> Vec<Demand> {
        estate
            .guests()
            .values()
            .map(|guest| {
                let (memory, storage) = match &guest.spec {
                    GuestSpec::Container(container) => (container.memory_mb, container.storage_pool.clone()),
                    GuestSpec::Vm(vm) => (vm.memory_mb, vm.storage_pool.clone()),
                };
                Demand {
                    vmid: guest.id,
                    node: guest.node.clone(),
                    memory_mb: memory.unwrap_or(512),
                    storage: storage.unwrap_or_else(|| "local-lvm".to_owned()),
                    source: guest.clone_from,
                }
            })
            .collect()
    }
}

/// Where a new guest goes, and how it gets there when that needs saying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The node.
    pub node: String,
    /// Why this node, or how a clone reaches it (`cloned on pve1, then migrated: ...`), for the plan.
    pub how: Option<String>,
}

/// The placements of one run, shared between the cluster that makes them and the differs that show them.
#[derive(Debug, Clone, Default)]
pub struct Placements(Arc<Mutex<BTreeMap<u32, Placement>>>);

impl Placements {
    /// Where the new guest `vmid` goes, when it was placed.
    pub fn get(&self, vmid: u32) -> Option<Placement> {
        self.lock().get(&vmid).cloned()
    }

    fn set(&self, placements: BTreeMap<u32, Placement>) {
        *self.lock() = placements;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Placement>> {
        self.0.lock().expect("no code panics while holding this lock")
    }
}

/// Why `node` cannot be worked on, when the listing says it is not online.
pub fn node_down(resources: &[ClusterResource], node: &str) -> Option<String> {
    let entry = resources
        .iter()
        .find(|entry| entry.kind == "node" && entry.node.as_deref() == Some(node));
    match entry.and_then(|entry| entry.status.as_deref()) {
        Some("online") => None,
        Some(status) => Some(format!("node {node} is {status}")),
        None if entry.is_some() => Some(format!("node {node} reports no status")),
        None => Some(format!("node {node} is not in the cluster")),
    }
}

/// Whether `storage` is shared between nodes (NFS, Ceph, ...), as `node` lists it.
pub fn is_shared(resources: &[ClusterResource], node: &str, storage: &str) -> bool {
    storage_entry(resources, node, storage).is_some_and(|entry| entry.shared == Some(1))
}

fn storage_entry<'a>(
    resources: &'a [ClusterResource],
    node: &str,
    storage: &str,
) -> Option<&'a ClusterResource> {
    resources.iter().find(|entry| {
        entry.kind == "storage"
            && entry.node.as_deref() == Some(node)
            && entry.storage.as_deref() == Some(storage)
    })
}

const MIB: u64 = 1024 * 1024;

/// Places every demand the cluster has no guest for yet. A guest that names its node stays there; the
/// others go by `rule` among `nodes` (every node of the cluster when empty), to nodes that are online and
/// have the guest's storage available; guests placed earlier in the run count against a node's free
/// memory, sources before their clones and then in ID order, so the result is the same for the same
/// listing. A clone whose source is on
/// another node says how it gets there. A guest no node can take is left out (its node is unknown).
pub fn place(
    resources: &[ClusterResource],
    demands: &[Demand],
    rule: Rule,
    nodes: &[String],
) -> BTreeMap<u32, Placement> {
    let existing: BTreeMap<u32, &str> = resources
        .iter()
        .filter(|entry| entry.kind == "lxc" || entry.kind == "qemu")
        .filter_map(|entry| Some((entry.vmid?, entry.node.as_deref()?)))
        .collect();
    let candidates: Vec<String> = if nodes.is_empty() {
        let all: BTreeSet<&str> = resources
            .iter()
            .filter(|entry| entry.kind == "node")
            .filter_map(|entry| entry.node.as_deref())
            .collect();
        all.into_iter().map(str::to_owned).collect()
    } else {
        nodes.to_vec()
    };
    let mut free: BTreeMap<&str, u64> = resources
        .iter()
        .filter(|entry| entry.kind == "node")
        .filter_map(|entry| {
            let node = entry.node.as_deref()?;
            Some((node, entry.maxmem?.saturating_sub(entry.mem.unwrap_or(0))))
        })
        .collect();
    let by_id: BTreeMap<u32, &Demand> = demands.iter().map(|demand| (demand.vmid, demand)).collect();
    // Sources before their clones (a clone needs to know where its source went), then by ID.
    let depth = |demand: &Demand| {
        let mut depth = 0;
        let mut source = demand.source;
        while let Some(id) = source.filter(|_| depth < demands.len()) {
            depth += 1;
            source = by_id.get(&id).and_then(|demand| demand.source);
        }
        depth
    };
    let mut order: Vec<&Demand> = demands
        .iter()
        .filter(|demand| !existing.contains_key(&demand.vmid))
        .collect();
    order.sort_by_key(|demand| (depth(demand), demand.vmid));
    let mut placed: BTreeMap<u32, Placement> = BTreeMap::new();
    for demand in order {
        let fits = |node: &str| {
            node_down(resources, node).is_none()
                && storage_entry(resources, node, &demand.storage)
                    .is_some_and(|entry| entry.status.as_deref() == Some("available"))
        };
        let (node, mut how) = match &demand.node {
            Some(node) => (node.clone(), None),
            None => {
                let chosen = match rule {
                    Rule::FirstNode => candidates.iter().find(|node| fits(node)),
                    Rule::MostFreeMemory => candidates
                        .iter()
                        .filter(|node| fits(node))
                        // The most free memory; the first listed among equals.
                        .min_by_key(|node| std::cmp::Reverse(free.get(node.as_str()).copied().unwrap_or(0))),
                };
                let Some(node) = chosen else { continue };
                // With one node there is nothing to choose, and nothing to say.
                let how = (candidates.len() > 1).then(|| match rule {
                    Rule::FirstNode => format!(
                        "first_node: {node} is the first node with storage {}",
                        demand.storage
                    ),
                    Rule::MostFreeMemory => format!(
                        "most_free_memory: {node} had {} MiB free",
                        free.get(node.as_str()).copied().unwrap_or(0) / MIB
                    ),
                });
                (node.clone(), how)
            }
        };
        if let Some(left) = free.get_mut(node.as_str()) {
            *left = left.saturating_sub(demand.memory_mb * MIB);
        }
        if let Some(source) = demand.source {
            let source_node = existing
                .get(&source)
                .map(|node| (*node).to_owned())
                .or_else(|| placed.get(&source).map(|placement| placement.node.clone()));
            if let Some(source_node) = source_node.filter(|source_node| *source_node != node) {
                let source_storage = by_id
                    .get(&source)
                    .map_or("local-lvm", |source| source.storage.as_str());
                let route = clone_route(resources, &source_node, source_storage, &demand.storage, &node);
                how = Some(match how {
                    Some(how) => format!("{how}; {route}"),
                    None => route,
                });
            }
        }
        placed.insert(demand.vmid, Placement { node, how });
    }
    placed
}

/// How a clone of a guest on `source_node` reaches `node`: Proxmox clones to another node only from and
/// to shared storage; otherwise the clone is made beside its source and migrated.
pub fn clone_route(
    resources: &[ClusterResource],
    source_node: &str,
    source_storage: &str,
    storage: &str,
    node: &str,
) -> String {
    let local = [source_storage, storage]
        .into_iter()
        .find(|storage| !is_shared(resources, source_node, storage));
    match local {
        None => format!("cloned on {source_node} straight to {node} (shared storage)"),
        Some(storage) => {
            format!("cloned on {source_node}, then migrated to {node}: storage {storage} is not shared")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, status: &str, free_mib: u64) -> ClusterResource {
        ClusterResource {
            id: format!("node/{name}"),
            kind: "node".into(),
            node: Some(name.into()),
            status: Some(status.into()),
            maxmem: Some(8192 * MIB),
            mem: Some((8192 - free_mib) * MIB),
            ..ClusterResource::default()
        }
    }

    fn storage(node: &str, name: &str, shared: bool) -> ClusterResource {
        ClusterResource {
            id: format!("storage/{node}/{name}"),
            kind: "storage".into(),
            node: Some(node.into()),
            storage: Some(name.into()),
            status: Some("available".into()),
            shared: Some(u8::from(shared)),
            ..ClusterResource::default()
        }
    }

    fn guest(vmid: u32, node: &str) -> ClusterResource {
        ClusterResource {
            id: format!("lxc/{vmid}"),
            kind: "lxc".into(),
            node: Some(node.into()),
            vmid: Some(vmid),
            status: Some("running".into()),
            ..ClusterResource::default()
        }
    }

    fn demand(vmid: u32, memory_mb: u64) -> Demand {
        Demand {
            vmid,
            node: None,
            memory_mb,
            storage: "local-lvm".into(),
            source: None,
        }
    }

    fn cluster() -> Vec<ClusterResource> {
        let mut resources = vec![
            node("pve1", "online", 1024),
            node("pve2", "online", 4096),
            node("pve3", "offline", 8192),
        ];
        for name in ["pve1", "pve2", "pve3"] {
            resources.push(storage(name, "local-lvm", false));
            resources.push(storage(name, "nfs", true));
        }
        resources
    }

    fn nodes_of(placed: &BTreeMap<u32, Placement>) -> Vec<(u32, &str)> {
        placed
            .iter()
            .map(|(vmid, placement)| (*vmid, placement.node.as_str()))
            .collect()
    }

    #[test]
    fn most_free_memory_spreads_new_guests_and_skips_nodes_that_are_down() {
        let demands = [demand(101, 2048), demand(102, 2048), demand(103, 2048)];
        let placed = place(&cluster(), &demands, Rule::MostFreeMemory, &[]);
        // pve3 is offline; pve2 has 4 GiB free, then 2, then none; pve1 has 1.
        assert_eq!(nodes_of(&placed), [(101, "pve2"), (102, "pve2"), (103, "pve1")]);
        assert_eq!(
            placed[&101].how.as_deref(),
            Some("most_free_memory: pve2 had 4096 MiB free")
        );
    }

    #[test]
    fn first_node_takes_the_first_listed_node_that_can_and_existing_guests_stay() {
        let mut resources = cluster();
        resources.push(guest(101, "pve2"));
        let nodes = ["pve3".to_owned(), "pve2".to_owned(), "pve1".to_owned()];
        let demands = [demand(101, 512), demand(102, 512)];
        let placed = place(&resources, &demands, Rule::FirstNode, &nodes);
        assert_eq!(nodes_of(&placed), [(102, "pve2")], "101 exists; pve3 is offline");
        let mut unavailable = demand(103, 512);
        unavailable.storage = "tank".into();
        assert!(place(&resources, &[unavailable], Rule::FirstNode, &nodes).is_empty());
    }

    #[test]
    fn a_clone_on_another_node_is_cloned_beside_its_source_unless_storage_is_shared() {
        let mut resources = cluster();
        resources.push(guest(900, "pve1"));
        let mut local = demand(101, 512);
        local.node = Some("pve2".into());
        local.source = Some(900);
        let mut shared = demand(102, 512);
        shared.node = Some("pve2".into());
        shared.source = Some(950);
        shared.storage = "nfs".into();
        let mut source = demand(950, 512);
        source.node = Some("pve1".into());
        source.storage = "nfs".into();
        let placed = place(&resources, &[local, shared, source], Rule::FirstNode, &[]);
        assert_eq!(
            placed[&101].how.as_deref(),
            Some("cloned on pve1, then migrated to pve2: storage local-lvm is not shared")
        );
        assert_eq!(
            placed[&102].how.as_deref(),
            Some("cloned on pve1 straight to pve2 (shared storage)")
        );
        assert_eq!(placed[&950].how, None);
    }

    #[test]
    fn a_single_node_is_chosen_without_a_word() {
        let resources = vec![node("pve1", "online", 4096), storage("pve1", "local-lvm", false)];
        let placed = place(&resources, &[demand(101, 512)], Rule::FirstNode, &[]);
        assert_eq!(
            placed[&101],
            Placement {
                node: "pve1".into(),
                how: None
            }
        );
    }

    #[test]
    fn a_node_is_down_unless_the_listing_says_online() {
        let resources = cluster();
        assert_eq!(node_down(&resources, "pve1"), None);
        assert_eq!(
            node_down(&resources, "pve3").as_deref(),
            Some("node pve3 is offline")
        );
        assert_eq!(
            node_down(&resources, "pve9").as_deref(),
            Some("node pve9 is not in the cluster")
        );
    }
}
