//! The Deployment controller: one ReplicaSet per pod template, rolled
//! forward (RollingUpdate or Recreate) by changing their replica counts;
//! the ReplicaSet controller makes and removes the Pods.

use std::collections::BTreeMap;

use flotilla_api::meta::ObjectMeta;
use flotilla_api::pod::IntOrString;
use flotilla_api::pod::{Pod, PodTemplateSpec};
use flotilla_api::validate::scaled_value;
use flotilla_api::workloads::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use flotilla_api::{Kind, Object};

use crate::common::{
    controller_ref, controller_uid, count, delete, event, is_active, live, pod_available,
    pod_ready, set_condition,
};
use crate::names::template_hash;
use crate::{Action, ClusterView, Out, pods_by_controller};

use flotilla_api::wellknown::{POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION};

/// What the controller knows about one owned ReplicaSet.
struct RsState<'a> {
    rs: &'a ReplicaSet,
    spec: i32,
    active: i32,
    ready: i32,
    available: i32,
    /// Any Pod object at all, terminating or finished included.
    any_pods: bool,
    revision: u64,
}

pub(crate) fn reconcile(view: &ClusterView, out: &mut Out) {
    let by_controller = pods_by_controller(view);
    for d in &view.deployments {
        if out.full() {
            return;
        }
        if live(&d.metadata) {
            sync(view, d, &by_controller, out);
        }
    }
}

fn revision(meta: &ObjectMeta) -> u64 {
    meta.annotations
        .get(REVISION_ANNOTATION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn without_hash_label(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = template.clone();
    t.metadata.labels.remove(POD_TEMPLATE_HASH_LABEL);
    t
}

/// maxSurge rounds up, maxUnavailable down; both zero would deadlock a
/// rollout (validation refuses it), so one Pod may then be unavailable.
fn rolling_params(d: &Deployment, replicas: i32) -> (i32, i32) {
    let ru = d
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let quarter = IntOrString::String("25%".into());
    let surge = ru.and_then(|r| r.max_surge.as_ref()).unwrap_or(&quarter);
    let unavailable = ru
        .and_then(|r| r.max_unavailable.as_ref())
        .unwrap_or(&quarter);
    let surge = scaled_value(surge, replicas, true).unwrap_or(0).max(0);
    let unavailable = scaled_value(unavailable, replicas, false)
        .unwrap_or(0)
        .clamp(0, replicas);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

fn sync(
    view: &ClusterView,
    d: &Deployment,
    by_controller: &BTreeMap<&str, Vec<&Pod>>,
    out: &mut Out,
) {
    let meta = &d.metadata;
    let now = view.now_unix_ms;
    let replicas = d.spec.replicas.unwrap_or(1).max(0);
    let min_ready = d.spec.min_ready_seconds;

    let mut states: Vec<RsState> = view
        .replica_sets
        .iter()
        .filter(|rs| {
            rs.metadata.namespace == meta.namespace
                && controller_uid(&rs.metadata) == Some(meta.uid.as_str())
                && live(&rs.metadata)
        })
        .map(|rs| {
            let pods: &[&Pod] = by_controller
                .get(rs.metadata.uid.as_str())
                .map_or(&[], |v| v.as_slice());
            let active: Vec<&&Pod> = pods.iter().filter(|p| is_active(p)).collect();
            RsState {
                rs,
                spec: rs.spec.replicas.unwrap_or(1).max(0),
                active: count(active.len()),
                ready: count(active.iter().filter(|p| pod_ready(p)).count()),
                available: count(
                    active
                        .iter()
                        .filter(|p| pod_available(p, min_ready, now))
                        .count(),
                ),
                any_pods: !pods.is_empty(),
                revision: revision(&rs.metadata),
            }
        })
        .collect();
    // Oldest first: old ReplicaSets are scaled down and cleaned up in this order.
    states.sort_by(|a, b| {
        (
            a.revision,
            &a.rs.metadata.creation_timestamp,
            &a.rs.metadata.name,
        )
            .cmp(&(
                b.revision,
                &b.rs.metadata.creation_timestamp,
                &b.rs.metadata.name,
            ))
    });
    let new_idx = states
        .iter()
        .position(|s| without_hash_label(&s.rs.spec.template) == d.spec.template);
    let is_old = |i: usize| Some(i) != new_idx;
    let max_old_revision = states
        .iter()
        .enumerate()
        .filter(|(i, _)| is_old(*i))
        .map(|(_, s)| s.revision)
        .max()
        .unwrap_or(0);

    let recreate = d
        .spec
        .strategy
        .as_ref()
        .is_some_and(|s| s.type_ == "Recreate");
    let (max_surge, max_unavailable) = if recreate {
        (0, 0)
    } else {
        rolling_params(d, replicas)
    };
    let min_available = replicas - max_unavailable;
    let new_spec = new_idx.map_or(0, |i| states[i].spec);

    let mut targets: Vec<i32> = states.iter().map(|s| s.spec).collect();
    let mut new_target = new_spec;
    if !d.spec.paused {
        if recreate {
            let old_remain = states
                .iter()
                .enumerate()
                .any(|(i, s)| is_old(i) && (s.spec > 0 || s.any_pods));
            for (i, t) in targets.iter_mut().enumerate() {
                if is_old(i) {
                    *t = 0;
                }
            }
            // The new Pods start only once every old Pod is gone.
            new_target = if old_remain {
                new_spec.min(replicas)
            } else {
                replicas
            };
        } else {
            // Pods not yet deleted by a ReplicaSet still take room.
            let total_size: i32 = states.iter().map(|s| s.spec.max(s.active)).sum();
            new_target = if new_spec >= replicas {
                replicas
            } else {
                let room = replicas + max_surge - total_size;
                new_spec + room.clamp(0, replicas - new_spec)
            };
            // Count only available Pods that survive their ReplicaSet's own
            // scale-down (it deletes unready Pods first), so a scale-down
            // planned last round is not spent twice.
            let total_available: i32 = states.iter().map(|s| s.available.min(s.spec)).sum();
            let mut budget = (total_available - min_available).max(0);
            for (i, s) in states.iter().enumerate() {
                if is_old(i) {
                    // Unavailable old replicas go at no cost to availability.
                    let healthy = s.available.min(s.spec);
                    let cut = budget.min(healthy);
                    budget -= cut;
                    targets[i] = healthy - cut;
                }
            }
        }
    }

    let mut new_revision = None;
    if !d.spec.paused {
        match new_idx {
            None => new_revision = create_new_rs(view, d, new_target, max_old_revision + 1, out),
            Some(i) => {
                let s = &states[i];
                // A template that comes back (rollout undo) becomes the newest revision.
                let rev = if s.revision <= max_old_revision {
                    max_old_revision + 1
                } else {
                    s.revision
                };
                new_revision = Some(rev);
                targets[i] = new_target;
                if rev != s.revision || new_target != s.spec {
                    let mut rs = s.rs.clone();
                    rs.metadata
                        .annotations
                        .insert(REVISION_ANNOTATION.into(), rev.to_string());
                    rs.spec.replicas = Some(new_target);
                    out.push(Action::Update(Object::ReplicaSet(rs)));
                    scaled_event(d, s, new_target, out);
                }
            }
        }
        for (i, s) in states.iter().enumerate() {
            if is_old(i) && targets[i] != s.spec {
                let mut rs = s.rs.clone();
                rs.spec.replicas = Some(targets[i]);
                if out.push(Action::Update(Object::ReplicaSet(rs))) {
                    scaled_event(d, s, targets[i], out);
                }
            }
        }
        cleanup_history(d, &states, &targets, new_idx, out);
    } else if let Some(i) = new_idx {
        new_revision = Some(states[i].revision);
    }

    write_status(view, d, &states, new_idx, new_revision, min_available, out);
}

fn create_new_rs(
    view: &ClusterView,
    d: &Deployment,
    replicas: i32,
    revision: u64,
    out: &mut Out,
) -> Option<u64> {
    let meta = &d.metadata;
    let hash = template_hash(&d.spec.template);
    let name = format!("{}-{hash}", meta.name);
    if view
        .replica_sets
        .iter()
        .any(|rs| rs.metadata.namespace == meta.namespace && rs.metadata.name == name)
    {
        // Taken by a ReplicaSet with another template (or another owner):
        // nothing safe to do; status shows the rollout is not progressing.
        return None;
    }
    let mut template = d.spec.template.clone();
    template
        .metadata
        .labels
        .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
    let mut selector = d.spec.selector.clone();
    selector
        .match_labels
        .insert(POD_TEMPLATE_HASH_LABEL.into(), hash);
    let rs = ReplicaSet {
        api_version: Kind::ReplicaSet.api_version().into(),
        kind: Kind::ReplicaSet.name().into(),
        metadata: ObjectMeta {
            name: name.clone(),
            namespace: meta.namespace.clone(),
            labels: template.metadata.labels.clone(),
            annotations: [(REVISION_ANNOTATION.to_string(), revision.to_string())].into(),
            owner_references: vec![controller_ref(Kind::Deployment, meta)],
            ..ObjectMeta::default()
        },
        spec: ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: d.spec.min_ready_seconds,
            selector,
            template,
        },
        status: None,
    };
    if out.push(Action::Create(Object::ReplicaSet(rs))) {
        out.push(event(
            Kind::Deployment,
            meta,
            "ScalingReplicaSet",
            format!("created replica set {name} with {replicas} replicas"),
            false,
        ));
    }
    Some(revision)
}

fn scaled_event(d: &Deployment, s: &RsState, to: i32, out: &mut Out) {
    if to == s.spec {
        return;
    }
    let direction = if to > s.spec { "up" } else { "down" };
    let message = format!(
        "scaled {direction} replica set {} from {} to {to}",
        s.rs.metadata.name, s.spec
    );
    out.push(event(
        Kind::Deployment,
        &d.metadata,
        "ScalingReplicaSet",
        message,
        false,
    ));
}

/// Deletes the oldest fully scaled-down old ReplicaSets beyond
/// revisionHistoryLimit; the ones kept are what `rollout undo` returns to.
fn cleanup_history(
    d: &Deployment,
    states: &[RsState],
    targets: &[i32],
    new_idx: Option<usize>,
    out: &mut Out,
) {
    let limit = usize::try_from(d.spec.revision_history_limit.unwrap_or(10)).unwrap_or(0);
    let old_count = states.len() - usize::from(new_idx.is_some());
    let excess = old_count.saturating_sub(limit);
    let removable = states
        .iter()
        .enumerate()
        .filter(|(i, s)| Some(*i) != new_idx && s.spec == 0 && targets[*i] == 0 && !s.any_pods)
        .take(excess);
    for (_, s) in removable {
        out.push(delete(Kind::ReplicaSet, &s.rs.metadata));
    }
}

fn write_status(
    view: &ClusterView,
    d: &Deployment,
    states: &[RsState],
    new_idx: Option<usize>,
    new_revision: Option<u64>,
    min_available: i32,
    out: &mut Out,
) {
    let replicas = d.spec.replicas.unwrap_or(1).max(0);
    let prev = d.status.clone().unwrap_or_default();
    let total: i32 = states.iter().map(|s| s.active).sum();
    let available: i32 = states.iter().map(|s| s.available).sum();
    let updated = new_idx.map_or(0, |i| states[i].active);
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: total,
        updated_replicas: updated,
        ready_replicas: states.iter().map(|s| s.ready).sum(),
        available_replicas: available,
        unavailable_replicas: (replicas - available).max(0),
        conditions: prev.conditions.clone(),
    };
    let now = view.now_unix_ms;
    if available >= min_available {
        set_condition(
            &mut status.conditions,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "deployment has minimum availability".into(),
            now,
        );
    } else {
        set_condition(
            &mut status.conditions,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "deployment does not have minimum availability".into(),
            now,
        );
    }
    let new_name = new_idx.map(|i| states[i].rs.metadata.name.as_str());
    let complete =
        new_name.is_some() && updated == replicas && total == replicas && available == replicas;
    match new_name {
        _ if d.spec.paused => set_condition(
            &mut status.conditions,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "deployment is paused".into(),
            now,
        ),
        Some(name) if complete => set_condition(
            &mut status.conditions,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("replica set {name} has successfully progressed"),
            now,
        ),
        Some(name) => set_condition(
            &mut status.conditions,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            format!("replica set {name} is progressing"),
            now,
        ),
        None => set_condition(
            &mut status.conditions,
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            "creating a new replica set".into(),
            now,
        ),
    }

    let mut updated_d = d.clone();
    if let Some(rev) = new_revision {
        updated_d
            .metadata
            .annotations
            .insert(REVISION_ANNOTATION.into(), rev.to_string());
    }
    updated_d.status = Some(status);
    if updated_d != *d {
        out.push(Action::Update(Object::Deployment(updated_d)));
    }
}
