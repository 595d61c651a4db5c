//! Flotilla's scheduler: given every Node and every Pod, decide where the
//! pending Pods go. The Raft leader calls [`schedule`] each round and
//! proposes the resulting [`Binding`]s as compare-and-set writes; the state
//! machine calls [`check_fit`] when it applies one, so a plan computed on
//! stale data can never oversubscribe a node.
//!
//! The library is pure and deterministic: plain data in, a [`Plan`] out, no
//! clock, no IO, and no randomness except a seed in [`SchedulerConfig`].
//! The same nodes, pods and seed always give the same plan, which is what
//! the simulator and the tests rely on.
//!
//! # Pipeline
//!
//! 1. **Index** (once per call, O(nodes + pods)): per-node usage (requests
//!    of the live Pods bound there), host ports, Pods per controller, and
//!    the placed Pods by namespace for the inter-pod rules.
//! 2. **Order** the pending Pods by creation time, then namespace/name.
//! 3. **Filter** each node in turn, as kube-scheduler's filter plugins and
//!    Nomad's feasibility checks do: Ready, not cordoned, taints tolerated,
//!    nodeSelector and required node affinity, free host ports, cpu/memory/
//!    pod count, required pod affinity and anti-affinity (the Pod's own and
//!    that of Pods already placed). The first failing filter is the node's
//!    reason.
//! 4. **Sample**: nodes are visited in a rotating order (a seeded start that
//!    moves on by the number of nodes visited for each Pod) and the scan
//!    stops once enough feasible nodes are found, the larger of
//!    `min_feasible_nodes_to_find` and an adaptive share of the cluster
//!    (half of a small cluster, falling to 5% of a very large one).
//! 5. **Score** the sampled feasible nodes, each score normalised to
//!    0..=100 over them and weighted: least or most allocated, preferred
//!    node affinity, preferred pod affinity/anti-affinity, spreading Pods of
//!    the same controller, and avoiding `PreferNoSchedule` taints.
//! 6. **Pick** the highest total; ties go to the highest hash of (seed, pod
//!    uid, node name), so equal nodes share the load without a global RNG.
//!    The chosen node's usage is updated at once, so later Pods of the same
//!    round see it.
//!
//! A Pod with no feasible node has, necessarily, been checked against every
//! node, so its [`Unschedulable`] message counts every node's reason the
//! way Kubernetes words it: `0/3 nodes are available: 1 Insufficient cpu,
//! 2 node(s) had untolerated taint {dedicated: gpu}.`
//!
//! # Why sample
//!
//! With 5,000 nodes and thousands of pending Pods, scoring every node for
//! every Pod costs tens of millions of evaluations a round, and the leader
//! has Raft to serve too. Once a few hundred nodes are known to fit, the
//! best of them is almost always as good as the best of all: the score only
//! breaks near-ties among nodes that all fit. The rotation makes successive
//! Pods look at different nodes, so sampling does not pile them onto the
//! first nodes by name. Pods whose constraints already failed this round
//! (same namespace, labels, requests, ports, tolerations and affinity) are
//! answered from a cache rather than rescanning every node: within a round
//! nodes only fill up, so what failed once fails again.

mod admission;
mod matching;
mod resources;
mod score;
mod world;

#[cfg(test)]
mod tests;

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};

use flotilla_api::cluster::Node;
use flotilla_api::pod::Pod;

pub use admission::BindingAdmission;
pub use resources::{Resources, pod_requests};

use matching::{is_pending, is_terminal, required_affinity, seeded_hash};
use world::{Refusal, World};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scoring {
    /// Spread load: prefer the node with the most free cpu and memory.
    LeastAllocated,
    /// Bin-pack: prefer the fullest node that still fits.
    MostAllocated,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    pub seed: u64,
    pub scoring: Scoring,
    /// Stop scanning nodes for a Pod once this many (or the adaptive share
    /// of the cluster, if larger) are known to fit.
    pub min_feasible_nodes_to_find: usize,
    /// At most this many bindings per call; the rest wait for the next.
    pub max_bindings_per_round: usize,
    /// At most this many Pods checked against the nodes per call (Pods
    /// answered from the failed-constraints cache do not count), which
    /// bounds a round when many Pods fit nowhere.
    pub max_pods_checked_per_round: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            seed: 0,
            scoring: Scoring::LeastAllocated,
            min_feasible_nodes_to_find: 100,
            max_bindings_per_round: 1_000,
            max_pods_checked_per_round: 5_000,
        }
    }
}

/// Bind Pod `namespace/name` (as of `resource_version`) to `node`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    pub node: String,
}

/// A pending Pod that fits on no node, with Kubernetes' explanation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unschedulable {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub message: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub bindings: Vec<Binding>,
    pub unschedulable: Vec<Unschedulable>,
}

/// Kube's adaptive share: 50% of the nodes, less 1% per 125 nodes, at least
/// 5%; never fewer than `min_feasible` (or every node, if there are fewer).
pub fn feasible_nodes_to_find(node_count: usize, min_feasible: usize) -> usize {
    let min_feasible = min_feasible.max(1);
    if node_count <= min_feasible {
        return node_count;
    }
    let percent = 50usize.saturating_sub(node_count / 125).max(5);
    (node_count * percent / 100).max(min_feasible)
}

/// Plans bindings for the pending Pods.
///
/// `nodes`: every Node object. `pods`: every Pod in the cluster. Pending =
/// `spec.nodeName` empty, no `metadata.deletionTimestamp`, phase not
/// Succeeded/Failed. Pods bound to a node count toward its usage unless
/// their phase is Succeeded or Failed.
///
/// The Pods may be owned or shared (`Arc<Pod>`): the leader hands over the
/// Pods it keeps rather than copying every one of them each round.
pub fn schedule<P: Borrow<Pod>>(nodes: &[Node], pods: &[P], config: &SchedulerConfig) -> Plan {
    let pods = || pods.iter().map(Borrow::borrow);
    let mut world = World::new(nodes, pods().filter(|p| !p.spec.node_name.is_empty() && !is_terminal(p)));
    let mut pending: Vec<&Pod> = pods().filter(|p| is_pending(p)).collect();
    pending.sort_by(|a, b| {
        let (a, b) = (&a.metadata, &b.metadata);
        (a.creation_timestamp.as_deref(), &a.namespace, &a.name).cmp(&(b.creation_timestamp.as_deref(), &b.namespace, &b.name))
    });

    let node_count = world.nodes.len();
    let want = feasible_nodes_to_find(node_count, config.min_feasible_nodes_to_find);
    let mut start = if node_count == 0 { 0 } else { (seeded_hash(config.seed, &[]) % node_count as u64) as usize };
    let mut plan = Plan::default();
    let mut failed_classes: HashMap<String, String> = HashMap::new();
    let mut checked = 0usize;
    let mut feasible = Vec::with_capacity(want);
    let mut refusals = Vec::new();

    for pod in pending {
        if plan.bindings.len() >= config.max_bindings_per_round {
            break;
        }
        let class = constraint_class(pod);
        if let Some(message) = class.as_ref().and_then(|c| failed_classes.get(c)) {
            plan.unschedulable.push(unschedulable(pod, message.clone()));
            continue;
        }
        if checked >= config.max_pods_checked_per_round {
            break;
        }
        checked += 1;

        let candidate = world.candidate(pod);
        feasible.clear();
        refusals.clear();
        let mut visited = 0;
        while visited < node_count && feasible.len() < want {
            let i = (start + visited) % node_count;
            visited += 1;
            match world.filter(i, &candidate) {
                Ok(()) => feasible.push(i),
                Err(r) => refusals.push(r),
            }
        }
        if node_count > 0 {
            start = (start + visited) % node_count;
        }

        if feasible.is_empty() {
            let message = fit_error(node_count, &refusals);
            if let Some(class) = class {
                failed_classes.insert(class, message.clone());
            }
            plan.unschedulable.push(unschedulable(pod, message));
            continue;
        }
        let node = score::pick(&world, &candidate, &feasible, config.scoring, config.seed);
        let requests = candidate.requests;
        world.place(pod, node, requests);
        plan.bindings.push(Binding {
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            node: world.nodes[node].name().to_string(),
        });
    }
    plan
}

/// Re-checks, when a binding is applied, that `pod` still fits on `node`
/// given the Pods already bound there: readiness, cordon, taints, node
/// selector and affinity, host ports, resources, and pod anti-affinity
/// among the Pods on this node. Required pod affinity needs the rest of the
/// cluster and is left to the scheduler. Finished Pods and `pod` itself in
/// `bound_on_node` are ignored.
pub fn check_fit(node: &Node, bound_on_node: &[&Pod], pod: &Pod) -> Result<(), String> {
    let uid = pod.metadata.uid.as_str();
    let live = bound_on_node.iter().copied().filter(|p| !is_terminal(p) && (uid.is_empty() || p.metadata.uid != uid));
    let world = World::new(std::slice::from_ref(node), live);
    let mut candidate = world.candidate(pod);
    candidate.ignore_required_affinity();
    world.filter(0, &candidate).map_err(|refusal| {
        format!(
            "pod {}/{} does not fit on node {}: {}",
            pod.metadata.namespace,
            pod.metadata.name,
            node.metadata.name,
            refusal.reasons().join(", ").to_lowercase()
        )
    })
}

fn unschedulable(pod: &Pod, message: String) -> Unschedulable {
    Unschedulable {
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        message,
    }
}

/// Kubernetes' FitError text: each reason with the number of nodes that
/// gave it, the "N reason" strings sorted.
fn fit_error(node_count: usize, refusals: &[Refusal<'_>]) -> String {
    if node_count == 0 {
        return "0/0 nodes are available: no nodes available to schedule pods.".into();
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for reason in refusals.iter().flat_map(Refusal::reasons) {
        *counts.entry(reason).or_default() += 1;
    }
    let mut parts: Vec<String> = counts.into_iter().map(|(reason, n)| format!("{n} {reason}")).collect();
    parts.sort();
    format!("0/{node_count} nodes are available: {}.", parts.join(", "))
}

/// Everything the filters read from a Pod, as a cache key. `None` for Pods
/// with required pod affinity: a Pod placed later in the round can satisfy
/// it, so an earlier failure does not carry over.
fn constraint_class(pod: &Pod) -> Option<String> {
    if !required_affinity(pod).is_empty() {
        return None;
    }
    let r = pod_requests(pod);
    let ports: Vec<_> = matching::host_ports(pod);
    let key = (
        &pod.metadata.namespace,
        &pod.metadata.labels,
        (r.cpu_millis, r.memory_bytes),
        ports,
        &pod.spec.tolerations,
        &pod.spec.node_selector,
        &pod.spec.affinity,
    );
    serde_json::to_string(&key).ok()
}
