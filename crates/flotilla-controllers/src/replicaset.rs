//! The ReplicaSet controller: keeps `spec.replicas` active Pods.

use flotilla_api::pod::Pod;
use flotilla_api::workloads::{ReplicaSet, ReplicaSetStatus};
use flotilla_api::{Kind, Object};

use crate::common::{
    controller_ref, count, delete, event, is_active, is_terminal, is_terminating, live, name_list,
    pod_available, pod_from_template, pod_ready, sort_for_deletion,
};
use crate::{Action, ClusterView, Limits, Out, pods_by_controller};

pub(crate) fn reconcile(view: &ClusterView, limits: &Limits, out: &mut Out) {
    let by_controller = pods_by_controller(view);
    for rs in &view.replica_sets {
        if out.full() {
            return;
        }
        if !live(&rs.metadata) {
            continue;
        }
        // A Pod counts only if the ReplicaSet controls it and its selector
        // still selects it (a relabelled Pod is no longer a replica).
        let owned: Vec<&Pod> = by_controller
            .get(rs.metadata.uid.as_str())
            .into_iter()
            .flatten()
            .copied()
            .filter(|p| {
                p.metadata.namespace == rs.metadata.namespace
                    && rs.spec.selector.matches(&p.metadata.labels)
            })
            .collect();
        sync(view, limits, rs, &owned, out);
    }
}

fn sync(view: &ClusterView, limits: &Limits, rs: &ReplicaSet, owned: &[&Pod], out: &mut Out) {
    let meta = &rs.metadata;
    let desired = usize::try_from(rs.spec.replicas.unwrap_or(1)).unwrap_or(0);
    let mut active: Vec<&Pod> = owned.iter().copied().filter(|p| is_active(p)).collect();

    // Finished Pods are not replicas: delete them so they are replaced.
    for pod in owned
        .iter()
        .filter(|p| is_terminal(p) && !is_terminating(&p.metadata))
    {
        out.push(delete(Kind::Pod, &pod.metadata));
    }

    if active.len() < desired {
        let mut created = Vec::new();
        for _ in 0..(desired - active.len()).min(limits.max_creates_per_object) {
            let Some(name) = out.fresh_pod_name(&meta.namespace, &meta.name, &meta.uid) else {
                break;
            };
            let pod = pod_from_template(
                &rs.spec.template,
                &meta.namespace,
                name.clone(),
                controller_ref(Kind::ReplicaSet, meta),
            );
            if !out.push(Action::Create(Object::Pod(pod))) {
                break;
            }
            created.push(name);
        }
        if !created.is_empty() {
            out.push(event(
                Kind::ReplicaSet,
                meta,
                "SuccessfulCreate",
                format!("created pods: {}", name_list(&created)),
                false,
            ));
        }
    } else if active.len() > desired {
        sort_for_deletion(&mut active);
        let mut deleted = Vec::new();
        for pod in &active[..active.len() - desired] {
            if out.push(delete(Kind::Pod, &pod.metadata)) {
                deleted.push(pod.metadata.name.as_str());
            }
        }
        if !deleted.is_empty() {
            out.push(event(
                Kind::ReplicaSet,
                meta,
                "SuccessfulDelete",
                format!("deleted pods: {}", name_list(&deleted)),
                false,
            ));
        }
    }

    let min_ready = rs.spec.min_ready_seconds;
    let status = ReplicaSetStatus {
        replicas: count(active.len()),
        ready_replicas: count(active.iter().filter(|p| pod_ready(p)).count()),
        available_replicas: count(
            active
                .iter()
                .filter(|p| pod_available(p, min_ready, view.now_unix_ms))
                .count(),
        ),
        observed_generation: meta.generation,
    };
    if rs.status.as_ref() != Some(&status) {
        let mut updated = rs.clone();
        updated.status = Some(status);
        out.push(Action::Update(Object::ReplicaSet(updated)));
    }
}
