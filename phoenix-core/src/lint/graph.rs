//! The dependency graph of guests: `clone_from_*` and `dependencies` edges across containers and VMs.
//!
//! Edges point from a guest to what must exist before it. petgraph stays inside this module.

use std::collections::{BTreeMap, BTreeSet};

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};

use crate::model::Estate;

/// Why one guest needs another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EdgeKind {
    /// The guest is cloned from the other.
    CloneFrom,
    /// The guest lists the other in `dependencies`.
    DependsOn,
}

/// Guests and what each needs first.
#[derive(Debug, Clone)]
pub struct DependencyGraph {
    graph: DiGraph<u32, EdgeKind>,
    nodes: BTreeMap<u32, NodeIndex>,
}

impl DependencyGraph {
    /// Builds the graph; references to undeclared guests are left out (validation reports them).
    pub fn of(estate: &Estate) -> DependencyGraph {
        let mut graph = DiGraph::new();
        let nodes: BTreeMap<u32, NodeIndex> = estate
            .guests()
            .keys()
            .map(|&id| (id, graph.add_node(id)))
            .collect();
        for guest in estate.guests().values() {
            let from = nodes[&guest.id];
            let clone = guest.clone_from.map(|source| (source, EdgeKind::CloneFrom));
            let dependencies = guest.dependencies.iter().map(|&id| (id, EdgeKind::DependsOn));
            for (target, kind) in clone.into_iter().chain(dependencies) {
                if let Some(&to) = nodes.get(&target)
                    && graph.find_edge(from, to).is_none()
                {
                    graph.add_edge(from, to, kind);
                }
            }
        }
        DependencyGraph { graph, nodes }
    }

    /// For each guest, the guests it needs first.
    pub fn edges(&self) -> BTreeMap<u32, BTreeSet<u32>> {
        self.nodes
            .iter()
            .map(|(&id, &index)| {
                (
                    id,
                    self.graph.neighbors(index).map(|next| self.graph[next]).collect(),
                )
            })
            .collect()
    }

    /// Each edge with why it exists: `(guest, needs, kind)`, sorted.
    pub fn labelled_edges(&self) -> Vec<(u32, u32, EdgeKind)> {
        let mut edges: Vec<_> = self
            .graph
            .edge_indices()
            .filter_map(|edge| {
                let (from, to) = self.graph.edge_endpoints(edge)?;
                Some((self.graph[from], self.graph[to], self.graph[edge]))
            })
            .collect();
        edges.sort_unstable();
        edges
    }

    /// Every cycle, each as the guests along it starting from its smallest ID (`[102, 103]` means
    /// 102 needs 103 and 103 needs 102). Empty when the graph is a DAG.
    pub fn cycles(&self) -> Vec<Vec<u32>> {
        let mut cycles: Vec<Vec<u32>> = tarjan_scc(&self.graph)
            .into_iter()
            .filter(|component| {
                component.len() > 1 || self.graph.find_edge(component[0], component[0]).is_some()
            })
            .map(|component| self.cycle_within(&component))
            .collect();
        cycles.sort();
        cycles
    }

    /// Guests in an order where everything comes after what it needs; `None` when there is a cycle.
    pub fn creation_order(&self) -> Option<Vec<u32>> {
        let mut order: Vec<u32> = toposort(&self.graph, None)
            .ok()?
            .into_iter()
            .map(|i| self.graph[i])
            .collect();
        // Edges point at prerequisites, so the topological order lists dependents first.
        order.reverse();
        Some(order)
    }

    /// Walks from the smallest member of a strongly connected component back to itself.
    fn cycle_within(&self, component: &[NodeIndex]) -> Vec<u32> {
        let members: BTreeSet<NodeIndex> = component.iter().copied().collect();
        let start = *component
            .iter()
            .min_by_key(|&&index| self.graph[index])
            .expect("component is non-empty");
        // Depth-first search for a path back to `start`, visiting smaller IDs first for stable output.
        let mut path = vec![start];
        let mut visited = BTreeSet::from([start]);
        let mut stack = vec![self.sorted_successors(start, &members)];
        while let Some(successors) = stack.last_mut() {
            let Some(next) = successors.pop() else {
                stack.pop();
                path.pop();
                continue;
            };
            if next == start {
                return path.iter().map(|&index| self.graph[index]).collect();
            }
            if visited.insert(next) {
                path.push(next);
                stack.push(self.sorted_successors(next, &members));
            }
        }
        vec![self.graph[start]]
    }

    /// Successors inside the component, largest ID first so that popping yields the smallest.
    fn sorted_successors(&self, index: NodeIndex, members: &BTreeSet<NodeIndex>) -> Vec<NodeIndex> {
        let mut successors: Vec<NodeIndex> = self
            .graph
            .neighbors(index)
            .filter(|next| members.contains(next))
            .collect();
        successors.sort_by_key(|&next| std::cmp::Reverse(self.graph[next]));
        successors
    }
}
