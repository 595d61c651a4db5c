//! The DaemonSet controller: one Pod on every node the template fits,
//! created already bound (`spec.nodeName`), so the scheduler is not asked.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_api::cluster::{Node, Taint};
use flotilla_api::pod::{NodeSelectorRequirement, Pod, PodSpec, Toleration};
use flotilla_api::workloads::{DaemonSet, DaemonSetStatus};
use flotilla_api::{Kind, Object};

use crate::common::{
    controller_ref, count, delete, event, is_active, is_terminal, is_terminating, live, name_list,
    node_ready, pod_from_template, pod_ready,
};
use crate::names::pod_name_suffix;
use crate::{Action, ClusterView, Limits, Out, pods_by_controller};

/// Name attempts per node before giving up this round.
const MAX_NAME_ATTEMPTS: u32 = 100;

pub(crate) fn reconcile(view: &ClusterView, limits: &Limits, out: &mut Out) {
    let by_controller = pods_by_controller(view);
    for ds in &view.daemon_sets {
        if out.full() {
            return;
        }
        if !live(&ds.metadata) {
            continue;
        }
        let owned: Vec<&Pod> = by_controller
            .get(ds.metadata.uid.as_str())
            .into_iter()
            .flatten()
            .copied()
            .filter(|p| p.metadata.namespace == ds.metadata.namespace)
            .collect();
        sync(view, limits, ds, &owned, out);
    }
}

/// Whether a Pod with `spec` may run on `node`: its nodeSelector, its
/// required node affinity, and the node's NoSchedule and NoExecute taints.
/// Resources are the scheduler's concern, not the DaemonSet's.
pub(crate) fn fits(node: &Node, spec: &PodSpec) -> bool {
    let labels = &node.metadata.labels;
    let selector_ok = spec
        .node_selector
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    // Terms are ORed, a term's expressions ANDed; as in Kubernetes, an
    // empty term matches nothing.
    let affinity_ok = required.is_none_or(|r| {
        r.node_selector_terms.iter().any(|t| {
            !t.match_expressions.is_empty()
                && t.match_expressions
                    .iter()
                    .all(|e| requirement_matches(e, labels))
        })
    });
    let taints_ok = node
        .spec
        .taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|taint| spec.tolerations.iter().any(|tol| tolerates(tol, taint)));
    selector_ok && affinity_ok && taints_ok
}

fn requirement_matches(r: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&r.key);
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| r.values.contains(v)),
        "NotIn" => value.is_none_or(|v| !r.values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| number(v)),
                r.values.first().and_then(|b| number(b)),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect_ok = t.effect.is_empty() || t.effect == taint.effect;
    let key_ok = match t.operator.as_str() {
        "Exists" => t.key.is_empty() || t.key == taint.key,
        _ => t.key == taint.key && t.value == taint.value,
    };
    effect_ok && key_ok
}

fn sync(view: &ClusterView, limits: &Limits, ds: &DaemonSet, owned: &[&Pod], out: &mut Out) {
    let meta = &ds.metadata;
    let mut on_node: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for pod in owned {
        on_node
            .entry(pod.spec.node_name.as_str())
            .or_default()
            .push(pod);
    }
    let node_names: BTreeSet<&str> = view
        .nodes
        .iter()
        .map(|n| n.metadata.name.as_str())
        .collect();
    let (mut desired, mut current, mut ready, mut misscheduled) = (0usize, 0usize, 0usize, 0usize);
    let mut created = 0usize;
    let mut deleted = Vec::new();

    for node in &view.nodes {
        let name = node.metadata.name.as_str();
        let pods = on_node.get(name).map_or(&[][..], |v| v.as_slice());
        let should_run = fits(node, &ds.spec.template.spec);
        let mut active: Vec<&Pod> = pods.iter().copied().filter(|p| is_active(p)).collect();
        if should_run {
            desired += 1;
            if !active.is_empty() {
                current += 1;
            }
            if active.iter().any(|p| pod_ready(p)) {
                ready += 1;
            }
        } else if !active.is_empty() {
            misscheduled += 1;
        }
        // A node that is not Ready may be partitioned or lost: its Pods are
        // left as they are, and new ones would not start there.
        if !node_ready(node) {
            continue;
        }
        if !should_run {
            for pod in &active {
                if out.push(delete(Kind::Pod, &pod.metadata)) {
                    deleted.push(pod.metadata.name.clone());
                }
            }
            continue;
        }
        let finished: Vec<&Pod> = pods
            .iter()
            .copied()
            .filter(|p| is_terminal(p) && !is_terminating(&p.metadata))
            .collect();
        for pod in &finished {
            if out.push(delete(Kind::Pod, &pod.metadata)) {
                deleted.push(pod.metadata.name.clone());
            }
        }
        if active.len() > 1 {
            // Keep the oldest, ready first; the rest are duplicates.
            active.sort_by_key(|p| {
                (
                    !pod_ready(p),
                    p.metadata.creation_timestamp.clone(),
                    p.metadata.name.clone(),
                )
            });
            for pod in &active[1..] {
                if out.push(delete(Kind::Pod, &pod.metadata)) {
                    deleted.push(pod.metadata.name.clone());
                }
            }
        }
        // Replace only once the old Pod is gone: one Pod per node at a time.
        let any_present = pods
            .iter()
            .any(|p| is_active(p) || is_terminating(&p.metadata))
            || !finished.is_empty();
        if !any_present && created < limits.max_creates_per_object {
            let Some(pod_name) = (0..MAX_NAME_ATTEMPTS)
                .map(|a| {
                    format!(
                        "{}-{}",
                        meta.name,
                        pod_name_suffix(&format!("{}/{name}", meta.uid), a)
                    )
                })
                .find(|n| !out.pod_name_taken(&meta.namespace, n))
            else {
                continue;
            };
            let mut pod = pod_from_template(
                &ds.spec.template,
                &meta.namespace,
                pod_name,
                controller_ref(Kind::DaemonSet, meta),
            );
            pod.spec.node_name = name.to_string();
            if out.push(Action::Create(Object::Pod(pod))) {
                created += 1;
            }
        }
    }
    // Pods on nodes that no longer exist.
    for (node, pods) in &on_node {
        if node_names.contains(node) {
            continue;
        }
        let active: Vec<&&Pod> = pods.iter().filter(|p| is_active(p)).collect();
        if !active.is_empty() {
            misscheduled += 1;
        }
        for pod in pods.iter().filter(|p| !is_terminating(&p.metadata)) {
            if out.push(delete(Kind::Pod, &pod.metadata)) {
                deleted.push(pod.metadata.name.clone());
            }
        }
    }
    if created > 0 {
        out.push(event(
            Kind::DaemonSet,
            meta,
            "SuccessfulCreate",
            format!("created {created} pods"),
            false,
        ));
    }
    if !deleted.is_empty() {
        out.push(event(
            Kind::DaemonSet,
            meta,
            "SuccessfulDelete",
            format!("deleted pods: {}", name_list(&deleted)),
            false,
        ));
    }

    let status = DaemonSetStatus {
        current_number_scheduled: count(current),
        desired_number_scheduled: count(desired),
        number_ready: count(ready),
        number_misscheduled: count(misscheduled),
        observed_generation: meta.generation,
    };
    if ds.status.as_ref() != Some(&status) {
        let mut updated = ds.clone();
        updated.status = Some(status);
        out.push(Action::Update(Object::DaemonSet(updated)));
    }
}
