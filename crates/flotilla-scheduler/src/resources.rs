//! What a Pod requests and what a Node offers.

use std::collections::BTreeMap;

use flotilla_api::cluster::Node;
use flotilla_api::pod::{Container, Pod};
use flotilla_api::quantity::Quantity;

/// The kubelet's default `maxPods`, used when a Node reports no pod capacity.
pub const DEFAULT_MAX_PODS: u64 = 110;

/// Requests counted for scoring only when a container requests nothing, so
/// that best-effort Pods still spread (Kubernetes does the same).
pub const SCORING_DEFAULT_CPU_MILLIS: u64 = 100;
pub const SCORING_DEFAULT_MEMORY_BYTES: u64 = 200 * 1024 * 1024;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub pods: u64,
}

impl Resources {
    pub fn add(&mut self, other: Resources) {
        self.cpu_millis = self.cpu_millis.saturating_add(other.cpu_millis);
        self.memory_bytes = self.memory_bytes.saturating_add(other.memory_bytes);
        self.pods = self.pods.saturating_add(other.pods);
    }
}

/// The resources a Pod needs on its node: for cpu and memory, the larger of
/// the sum over its containers and the largest init container (init
/// containers run one at a time, before the others). A container that sets
/// a limit but no request requests its limit. Counts as one pod.
pub fn pod_requests(pod: &Pod) -> Resources {
    let (cpu_millis, memory_bytes) = effective(pod, |c| container_request(c, "cpu", Quantity::millis), |c| {
        container_request(c, "memory", Quantity::bytes)
    });
    Resources { cpu_millis, memory_bytes, pods: 1 }
}

/// Like [`pod_requests`] but with Kubernetes' non-zero defaults for
/// containers that request nothing; used only to score.
pub(crate) fn scoring_requests(pod: &Pod) -> (u64, u64) {
    let or_default = |v: u64, default: u64| if v == 0 { default } else { v };
    effective(
        pod,
        |c| or_default(container_request(c, "cpu", Quantity::millis), SCORING_DEFAULT_CPU_MILLIS),
        |c| or_default(container_request(c, "memory", Quantity::bytes), SCORING_DEFAULT_MEMORY_BYTES),
    )
}

fn effective(pod: &Pod, cpu: impl Fn(&Container) -> u64, memory: impl Fn(&Container) -> u64) -> (u64, u64) {
    let sum = |f: &dyn Fn(&Container) -> u64| pod.spec.containers.iter().map(f).fold(0u64, u64::saturating_add);
    let max = |f: &dyn Fn(&Container) -> u64| pod.spec.init_containers.iter().map(f).max().unwrap_or(0);
    (sum(&cpu).max(max(&cpu)), sum(&memory).max(max(&memory)))
}

/// Quantities were validated when the Pod was accepted; one that still does
/// not parse counts as nothing rather than blocking the whole round.
fn container_request(c: &Container, resource: &str, unit: fn(&Quantity) -> Result<u64, String>) -> u64 {
    let r = &c.resources;
    r.requests.get(resource).or_else(|| r.limits.get(resource)).and_then(|q| unit(q).ok()).unwrap_or(0)
}

/// What the Node offers Pods: `status.allocatable`, falling back to
/// `status.capacity` per resource. Missing cpu or memory is zero (as in
/// Kubernetes: only Pods that request none fit); missing pods is the
/// kubelet default.
pub(crate) fn allocatable(node: &Node) -> Resources {
    let empty = BTreeMap::new();
    let (alloc, cap) = node.status.as_ref().map_or((&empty, &empty), |s| (&s.allocatable, &s.capacity));
    let get = |name: &str| alloc.get(name).or_else(|| cap.get(name));
    Resources {
        cpu_millis: get("cpu").and_then(|q| q.millis().ok()).unwrap_or(0),
        memory_bytes: get("memory").and_then(|q| q.bytes().ok()).unwrap_or(0),
        pods: get("pods").and_then(|q| q.value().ok()).map_or(DEFAULT_MAX_PODS, |v| v.floor() as u64),
    }
}
