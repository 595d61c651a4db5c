//! Label, selector, taint and affinity-term matching on plain data.

use flotilla_api::cluster::{Node, Taint};
use flotilla_api::pod::{NodeSelectorRequirement, NodeSelectorTerm, Pod, PodAffinityTerm, Toleration};

pub use flotilla_api::wellknown::HOSTNAME_LABEL;

/// A Node's label, where a Node without `kubernetes.io/hostname` has it
/// equal to its name (every kubelet sets it; agents may not).
pub fn node_label<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    match node.metadata.labels.get(key) {
        Some(v) => Some(v.as_str()),
        None if key == HOSTNAME_LABEL => Some(node.metadata.name.as_str()),
        None => None,
    }
}

/// Ready means a `Ready` condition with status `"True"`; no condition at
/// all is not ready.
pub fn node_ready(node: &Node) -> bool {
    node.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if !t.effect.is_empty() && t.effect != taint.effect {
        return false;
    }
    match t.operator.as_str() {
        "Exists" => t.key.is_empty() || t.key == taint.key,
        "" | "Equal" => t.key == taint.key && t.value == taint.value,
        _ => false,
    }
}

pub fn pod_tolerates(pod: &Pod, taint: &Taint) -> bool {
    pod.spec.tolerations.iter().any(|t| tolerates(t, taint))
}

/// An empty term matches no node, as in Kubernetes.
pub fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    !term.match_expressions.is_empty() && term.match_expressions.iter().all(|r| requirement_matches(r, node))
}

fn requirement_matches(r: &NodeSelectorRequirement, node: &Node) -> bool {
    let value = node_label(node, &r.key);
    let number = |s: &str| s.trim().parse::<i64>().ok();
    let compare = |ord: std::cmp::Ordering| match (value.and_then(number), r.values.as_slice()) {
        (Some(v), [bound]) => number(bound).is_some_and(|b| v.cmp(&b) == ord),
        _ => false,
    };
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| r.values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !r.values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => compare(std::cmp::Ordering::Greater),
        "Lt" => compare(std::cmp::Ordering::Less),
        _ => false,
    }
}

/// `spec.nodeSelector` and required node affinity (terms ORed).
pub fn node_affinity_matches(pod: &Pod, node: &Node) -> bool {
    if !pod.spec.node_selector.iter().all(|(k, v)| node_label(node, k) == Some(v.as_str())) {
        return false;
    }
    let required = pod
        .spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref());
    required.is_none_or(|sel| sel.node_selector_terms.iter().any(|t| term_matches(t, node)))
}

/// The namespaces a pod-affinity term looks in: its own list, or the
/// namespace of the Pod that carries it.
pub fn term_namespaces<'a>(term: &'a PodAffinityTerm, owner_namespace: &'a str) -> Vec<&'a str> {
    if term.namespaces.is_empty() {
        vec![owner_namespace]
    } else {
        term.namespaces.iter().map(String::as_str).collect()
    }
}

/// Whether `other` is selected by `term` carried by a Pod in
/// `owner_namespace`. A term without a selector selects nothing.
pub fn term_selects(term: &PodAffinityTerm, owner_namespace: &str, other: &Pod) -> bool {
    term_namespaces(term, owner_namespace).contains(&other.metadata.namespace.as_str())
        && term.label_selector.as_ref().is_some_and(|s| s.matches(&other.metadata.labels))
}

pub fn required_anti_affinity(pod: &Pod) -> &[PodAffinityTerm] {
    pod.spec
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .map_or(&[], |p| p.required_during_scheduling_ignored_during_execution.as_slice())
}

pub fn required_affinity(pod: &Pod) -> &[PodAffinityTerm] {
    pod.spec
        .affinity
        .as_ref()
        .and_then(|a| a.pod_affinity.as_ref())
        .map_or(&[], |p| p.required_during_scheduling_ignored_during_execution.as_slice())
}

/// The uid of the Pod's controller (its managing ReplicaSet, Job, ...).
pub fn controller_uid(pod: &Pod) -> Option<&str> {
    pod.metadata.owner_references.iter().find(|o| o.controller).map(|o| o.uid.as_str())
}

/// Host ports the Pod's containers claim, as (port, protocol).
pub fn host_ports(pod: &Pod) -> Vec<(i32, &str)> {
    pod.spec
        .containers
        .iter()
        .flat_map(|c| &c.ports)
        .filter_map(|p| {
            let port = p.host_port.filter(|&hp| hp > 0)?;
            Some((port, if p.protocol.is_empty() { "TCP" } else { p.protocol.as_str() }))
        })
        .collect()
}

/// Pending: not bound, not being deleted, not finished.
pub fn is_pending(pod: &Pod) -> bool {
    pod.spec.node_name.is_empty() && pod.metadata.deletion_timestamp.is_none() && !is_terminal(pod)
}

pub fn is_terminal(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| s.phase == "Succeeded" || s.phase == "Failed")
}

/// FNV-1a over the parts with a separator, then a SplitMix64 finaliser so
/// nearby inputs spread over the whole range. Stable across runs and
/// platforms, unlike the standard library's randomly keyed hasher.
pub fn seeded_hash(seed: u64, parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    seed.to_le_bytes().into_iter().for_each(&mut feed);
    for part in parts {
        part.bytes().for_each(&mut feed);
        feed(0xff);
    }
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
