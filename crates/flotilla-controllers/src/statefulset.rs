//! The StatefulSet controller: Pods `<set>-0`, `<set>-1`, ... with stable
//! names and hostnames, and at most one instance per ordinal.
//!
//! `<set>-N` is created only when no Pod object of that name exists at all:
//! not a running one, not a terminating one (its node's agent may still be
//! stopping it), not a Failed one (deleted first, replaced on a later
//! round). With graceful deletion of bound Pods this means a replacement
//! never overlaps the instance it replaces.

use std::collections::BTreeMap;

use flotilla_api::pod::Pod;
use flotilla_api::workloads::{StatefulSet, StatefulSetStatus};
use flotilla_api::{Kind, Object};

use crate::common::{
    controller_ref, controller_uid, count, delete, event, is_active, is_terminal, is_terminating,
    live, phase, pod_from_template, pod_ready,
};
use crate::{Action, ClusterView, Limits, Out};

use flotilla_api::wellknown::POD_NAME_LABEL;

pub(crate) fn reconcile(view: &ClusterView, limits: &Limits, out: &mut Out) {
    for set in &view.stateful_sets {
        if out.full() {
            return;
        }
        if live(&set.metadata) {
            sync(view, limits, set, out);
        }
    }
}

/// The ordinal of `<set>-N` (canonical decimal only, so `web-01` is not
/// ordinal 1).
fn ordinal(set: &str, pod: &str) -> Option<usize> {
    let digits = pod.strip_prefix(set)?.strip_prefix('-')?;
    let n: usize = digits.parse().ok()?;
    (n.to_string() == digits).then_some(n)
}

fn healthy(pod: &Pod) -> bool {
    is_active(pod) && phase(pod) == "Running" && pod_ready(pod)
}

fn sync(view: &ClusterView, limits: &Limits, set: &StatefulSet, out: &mut Out) {
    let meta = &set.metadata;
    let replicas = usize::try_from(set.spec.replicas.unwrap_or(1)).unwrap_or(0);
    let parallel = set.spec.pod_management_policy == "Parallel";
    let owns = |p: &Pod| controller_uid(&p.metadata) == Some(meta.uid.as_str());

    // Every Pod holding one of our names, whoever owns it: a name held by
    // anything at all must not be created again.
    let by_ordinal: BTreeMap<usize, &Pod> = view
        .pods
        .iter()
        .filter(|p| p.metadata.namespace == meta.namespace)
        .filter_map(|p| ordinal(&meta.name, &p.metadata.name).map(|i| (i, &**p)))
        .collect();

    let mut blocked = false;
    let mut created = Vec::new();
    for i in 0..replicas {
        if out.full() {
            return;
        }
        match by_ordinal.get(&i) {
            None => {
                if created.len() >= limits.max_creates_per_object {
                    break;
                }
                let name = format!("{}-{i}", meta.name);
                if out.pod_name_taken(&meta.namespace, &name) {
                    blocked = true;
                    break;
                }
                let mut pod = pod_from_template(
                    &set.spec.template,
                    &meta.namespace,
                    name.clone(),
                    controller_ref(Kind::StatefulSet, meta),
                );
                pod.metadata
                    .labels
                    .insert(POD_NAME_LABEL.into(), name.clone());
                pod.spec.hostname = name.clone();
                if out.push(Action::Create(Object::Pod(pod))) {
                    created.push(name);
                }
                if !parallel {
                    // OrderedReady: the next ordinal waits for this one to be Ready.
                    blocked = true;
                    break;
                }
            }
            Some(pod) => {
                if owns(pod) && is_terminal(pod) && !is_terminating(&pod.metadata) {
                    // Replaced on a later round, once the object is gone.
                    out.push(delete(Kind::Pod, &pod.metadata));
                }
                let ready_here = owns(pod) && healthy(pod);
                if !parallel && !ready_here {
                    blocked = true;
                    break;
                }
            }
        }
    }
    for name in &created {
        out.push(event(
            Kind::StatefulSet,
            meta,
            "SuccessfulCreate",
            format!("create pod {name} in statefulset {} successful", meta.name),
            false,
        ));
    }

    // Ordinals at or above replicas, highest first.
    let mut condemned: Vec<(usize, &Pod)> = by_ordinal
        .iter()
        .filter(|(i, p)| **i >= replicas && owns(p))
        .map(|(i, p)| (*i, *p))
        .collect();
    condemned.reverse();
    let delete_pod = |out: &mut Out, pod: &Pod| {
        if out.push(delete(Kind::Pod, &pod.metadata)) {
            out.push(event(
                Kind::StatefulSet,
                meta,
                "SuccessfulDelete",
                format!("delete pod {} in statefulset {} successful", pod.metadata.name, meta.name),
                false,
            ));
        }
    };
    if parallel {
        for (_, pod) in condemned.iter().filter(|(_, p)| !is_terminating(&p.metadata)) {
            delete_pod(out, pod);
        }
    } else if !blocked && !condemned.iter().any(|(_, p)| is_terminating(&p.metadata)) {
        // One at a time, and only while every kept ordinal is Ready
        // (`blocked` is false only then).
        if let Some((_, pod)) = condemned.first() {
            delete_pod(out, pod);
        }
    }

    let active: Vec<&&Pod> = by_ordinal
        .values()
        .filter(|p| owns(p) && is_active(p))
        .collect();
    let status = StatefulSetStatus {
        replicas: count(active.len()),
        ready_replicas: count(active.iter().filter(|p| pod_ready(p)).count()),
        current_replicas: count(active.len()),
        observed_generation: meta.generation,
    };
    if set.status.as_ref() != Some(&status) {
        let mut updated = set.clone();
        updated.status = Some(status);
        out.push(Action::Update(Object::StatefulSet(updated)));
    }
}
