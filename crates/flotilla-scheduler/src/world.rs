//! The cluster as the scheduler sees it during one call: per-node usage and
//! an index of placed Pods, built once and updated as Pods are placed.

use std::collections::HashMap;

use flotilla_api::cluster::Node;
use flotilla_api::pod::{Pod, PodAffinityTerm};

use crate::matching::{
    controller_uid, host_ports, node_affinity_matches, node_label, node_ready, pod_tolerates, required_affinity,
    required_anti_affinity, term_namespaces, term_selects,
};
use crate::resources::{Resources, allocatable, pod_requests, scoring_requests};

/// Lets DaemonSet-style Pods onto cordoned nodes, as in Kubernetes.
const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";
/// Lets Pods that tolerate it onto nodes that are not ready.
const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";

pub struct NodeState<'a> {
    pub node: &'a Node,
    ready: bool,
    pub allocatable: Resources,
    pub requested: Resources,
    /// Requests with the scoring defaults for containers that request nothing.
    pub scored_cpu_millis: u64,
    pub scored_memory_bytes: u64,
    host_ports: Vec<(i32, &'a str)>,
    owners: HashMap<&'a str, u32>,
}

impl<'a> NodeState<'a> {
    fn new(node: &'a Node) -> Self {
        NodeState {
            node,
            ready: node_ready(node),
            allocatable: allocatable(node),
            requested: Resources::default(),
            scored_cpu_millis: 0,
            scored_memory_bytes: 0,
            host_ports: Vec::new(),
            owners: HashMap::new(),
        }
    }

    pub fn name(&self) -> &'a str {
        &self.node.metadata.name
    }

    pub fn owner_count(&self, owner: &str) -> u32 {
        self.owners.get(owner).copied().unwrap_or(0)
    }
}

/// Why one node cannot take the Pod. Borrowed and `Copy` so that scanning
/// thousands of nodes allocates nothing; turned into text only when the Pod
/// fits nowhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal<'a> {
    NotReady,
    Unschedulable,
    Taint { key: &'a str, value: &'a str },
    NodeAffinity,
    HostPorts,
    Resources { cpu: bool, memory: bool, pods: bool },
    Affinity,
    AntiAffinity,
    ExistingAntiAffinity,
}

impl Refusal<'_> {
    /// Kubernetes' wording, one entry per reason (a node short of both cpu
    /// and memory counts under both).
    pub fn reasons(&self) -> Vec<String> {
        let one = |s: &str| vec![s.to_string()];
        match *self {
            Refusal::NotReady => one("node(s) were not ready"),
            Refusal::Unschedulable => one("node(s) were unschedulable"),
            Refusal::Taint { key, value } => vec![format!("node(s) had untolerated taint {{{key}: {value}}}")],
            Refusal::NodeAffinity => one("node(s) didn't match Pod's node affinity/selector"),
            Refusal::HostPorts => one("node(s) didn't have free ports for the requested pod ports"),
            Refusal::Resources { cpu, memory, pods } => [(pods, "Too many pods"), (cpu, "Insufficient cpu"), (memory, "Insufficient memory")]
                .into_iter()
                .filter(|(short, _)| *short)
                .map(|(_, r)| r.to_string())
                .collect(),
            Refusal::Affinity => one("node(s) didn't match pod affinity rules"),
            Refusal::AntiAffinity => one("node(s) didn't match pod anti-affinity rules"),
            Refusal::ExistingAntiAffinity => one("node(s) didn't satisfy existing pods anti-affinity rules"),
        }
    }
}

/// Matching Pods per topology value of one term's key.
pub struct DomainCounts<'a> {
    pub key: &'a str,
    pub counts: HashMap<&'a str, i64>,
}

impl DomainCounts<'_> {
    pub fn on(&self, node: &Node) -> i64 {
        node_label(node, self.key).and_then(|v| self.counts.get(v)).copied().unwrap_or(0)
    }
}

/// One pending Pod with everything about it that does not depend on the
/// node, computed once before the node scan.
pub struct Candidate<'a> {
    pub pod: &'a Pod,
    pub requests: Resources,
    pub scored: (u64, u64),
    host_ports: Vec<(i32, &'a str)>,
    anti_affinity: Vec<DomainCounts<'a>>,
    /// (topology key, value) domains where an existing Pod's required
    /// anti-affinity forbids this Pod.
    existing_anti_affinity: Vec<(&'a str, &'a str)>,
    /// Required pod-affinity terms; empty when the term list is satisfied
    /// everywhere (no terms, or the first Pod of a self-affine group).
    affinity: Vec<DomainCounts<'a>>,
    /// Preferred pod affinity (positive weight) and anti-affinity (negative).
    pub preferred: Vec<(i64, DomainCounts<'a>)>,
    pub owner: Option<&'a str>,
}

impl Candidate<'_> {
    /// For checks that see one node only, where the Pods that would satisfy
    /// required pod affinity may be elsewhere.
    pub fn ignore_required_affinity(&mut self) {
        self.affinity.clear();
    }
}

pub struct World<'a> {
    pub nodes: Vec<NodeState<'a>>,
    index: HashMap<&'a str, usize>,
    /// Live Pods placed on known nodes, by namespace, with their node.
    by_namespace: HashMap<&'a str, Vec<(&'a Pod, usize)>>,
    /// Placed Pods that carry required anti-affinity terms.
    anti_affinity_pods: Vec<(&'a Pod, usize)>,
}

impl<'a> World<'a> {
    /// Nodes sorted by name, so results do not depend on the input order.
    /// Pods bound to nodes not in `nodes` are ignored.
    pub fn new(nodes: &'a [Node], bound: impl Iterator<Item = &'a Pod>) -> Self {
        let mut sorted: Vec<&'a Node> = nodes.iter().collect();
        sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        sorted.dedup_by(|a, b| a.metadata.name == b.metadata.name);
        let index = sorted.iter().enumerate().map(|(i, n)| (n.metadata.name.as_str(), i)).collect();
        let mut world = World {
            nodes: sorted.into_iter().map(NodeState::new).collect(),
            index,
            by_namespace: HashMap::new(),
            anti_affinity_pods: Vec::new(),
        };
        for pod in bound {
            if let Some(&i) = world.index.get(pod.spec.node_name.as_str()) {
                world.place(pod, i, pod_requests(pod));
            }
        }
        world
    }

    pub fn place(&mut self, pod: &'a Pod, node: usize, requests: Resources) {
        let state = &mut self.nodes[node];
        state.requested.add(requests);
        let (cpu, memory) = scoring_requests(pod);
        state.scored_cpu_millis = state.scored_cpu_millis.saturating_add(cpu);
        state.scored_memory_bytes = state.scored_memory_bytes.saturating_add(memory);
        state.host_ports.extend(host_ports(pod));
        if let Some(owner) = controller_uid(pod) {
            *state.owners.entry(owner).or_default() += 1;
        }
        self.by_namespace.entry(pod.metadata.namespace.as_str()).or_default().push((pod, node));
        if !required_anti_affinity(pod).is_empty() {
            self.anti_affinity_pods.push((pod, node));
        }
    }

    /// Counts, per topology value of `term`'s key, the placed Pods `term`
    /// selects. Costs one pass over the Pods of the term's namespaces.
    fn domains(&self, term: &'a PodAffinityTerm, owner_namespace: &'a str) -> DomainCounts<'a> {
        let mut counts = HashMap::new();
        for ns in term_namespaces(term, owner_namespace) {
            for &(pod, node) in self.by_namespace.get(ns).map_or(&[][..], Vec::as_slice) {
                if term_selects(term, owner_namespace, pod)
                    && let Some(value) = node_label(self.nodes[node].node, &term.topology_key)
                {
                    *counts.entry(value).or_default() += 1;
                }
            }
        }
        DomainCounts { key: &term.topology_key, counts }
    }

    pub fn candidate(&self, pod: &'a Pod) -> Candidate<'a> {
        let ns = pod.metadata.namespace.as_str();
        let anti_affinity = required_anti_affinity(pod).iter().map(|t| self.domains(t, ns)).collect();
        let mut existing_anti_affinity = Vec::new();
        for &(other, node) in &self.anti_affinity_pods {
            for term in required_anti_affinity(other) {
                if term_selects(term, &other.metadata.namespace, pod)
                    && let Some(value) = node_label(self.nodes[node].node, &term.topology_key)
                {
                    existing_anti_affinity.push((term.topology_key.as_str(), value));
                }
            }
        }
        let terms = required_affinity(pod);
        let mut affinity: Vec<DomainCounts<'a>> = terms.iter().map(|t| self.domains(t, ns)).collect();
        // The first Pod of a group that must sit together has nobody to sit
        // with yet: Kubernetes lets it go anywhere if it matches its own terms.
        if affinity.iter().all(|d| d.counts.is_empty()) && terms.iter().all(|t| term_selects(t, ns, pod)) {
            affinity.clear();
        }
        let mut preferred = Vec::new();
        if let Some(a) = &pod.spec.affinity {
            let weighted = [(1, &a.pod_affinity), (-1, &a.pod_anti_affinity)];
            for (sign, terms) in weighted {
                for w in terms.iter().flat_map(|p| &p.preferred_during_scheduling_ignored_during_execution) {
                    preferred.push((sign * i64::from(w.weight), self.domains(&w.pod_affinity_term, ns)));
                }
            }
        }
        Candidate {
            pod,
            requests: pod_requests(pod),
            scored: scoring_requests(pod),
            host_ports: host_ports(pod),
            anti_affinity,
            existing_anti_affinity,
            affinity,
            preferred,
            owner: controller_uid(pod),
        }
    }

    /// Runs the filters in Kubernetes' order and reports the first that
    /// refuses.
    pub fn filter(&self, node: usize, c: &Candidate<'a>) -> Result<(), Refusal<'a>> {
        let state = &self.nodes[node];
        let n = state.node;
        let pod = c.pod;
        let tolerates_effect = |key: &str, effect: &str| {
            let taint = flotilla_api::cluster::Taint { key: key.into(), value: String::new(), effect: effect.into() };
            pod_tolerates(pod, &taint)
        };
        if !state.ready && !tolerates_effect(NOT_READY_TAINT, "NoSchedule") {
            return Err(Refusal::NotReady);
        }
        if n.spec.unschedulable && !tolerates_effect(UNSCHEDULABLE_TAINT, "NoSchedule") {
            return Err(Refusal::Unschedulable);
        }
        if let Some(t) = n
            .spec
            .taints
            .iter()
            .find(|t| (t.effect == "NoSchedule" || t.effect == "NoExecute") && !pod_tolerates(pod, t))
        {
            return Err(Refusal::Taint { key: &t.key, value: &t.value });
        }
        if !node_affinity_matches(pod, n) {
            return Err(Refusal::NodeAffinity);
        }
        if c.host_ports.iter().any(|p| state.host_ports.contains(p)) {
            return Err(Refusal::HostPorts);
        }
        let (alloc, used, req) = (state.allocatable, state.requested, c.requests);
        let short = |want: u64, used: u64, have: u64| want > 0 && used.saturating_add(want) > have;
        let cpu = short(req.cpu_millis, used.cpu_millis, alloc.cpu_millis);
        let memory = short(req.memory_bytes, used.memory_bytes, alloc.memory_bytes);
        let pods = used.pods.saturating_add(1) > alloc.pods;
        if cpu || memory || pods {
            return Err(Refusal::Resources { cpu, memory, pods });
        }
        if c.affinity.iter().any(|d| d.on(n) == 0) {
            return Err(Refusal::Affinity);
        }
        if c.anti_affinity.iter().any(|d| d.on(n) > 0) {
            return Err(Refusal::AntiAffinity);
        }
        if c.existing_anti_affinity.iter().any(|&(key, value)| node_label(n, key) == Some(value)) {
            return Err(Refusal::ExistingAntiAffinity);
        }
        Ok(())
    }
}
