//! The Job controller: runs Pods until `completions` of them succeed, or
//! the Job fails (backoffLimit, activeDeadlineSeconds).
//!
//! Counts come from the Pods themselves: `succeeded` is the number of
//! distinct owned Pods in phase Succeeded, and the controller never deletes
//! a finished Pod while the Job exists, so reconciling the same view twice,
//! or under a new leader, counts every completion exactly once.

use flotilla_api::pod::Pod;
use flotilla_api::workloads::{Job, JobStatus};
use flotilla_api::{Kind, Object};

use crate::common::{
    condition_true, controller_ref, count, delete, event, is_active, live, name_list, phase,
    pod_from_template, set_condition, sort_for_deletion,
};
use flotilla_api::time::{format_rfc3339, parse_rfc3339};
use crate::{Action, ClusterView, Limits, Out, pods_by_controller};

use flotilla_api::wellknown::{CONTROLLER_UID_LABEL, JOB_NAME_LABEL};

pub(crate) fn reconcile(view: &ClusterView, limits: &Limits, out: &mut Out) {
    let by_controller = pods_by_controller(view);
    for job in &view.jobs {
        if out.full() {
            return;
        }
        if !live(&job.metadata) {
            continue;
        }
        let owned: Vec<&Pod> = by_controller
            .get(job.metadata.uid.as_str())
            .into_iter()
            .flatten()
            .copied()
            .filter(|p| {
                p.metadata.namespace == job.metadata.namespace
                    && job
                        .spec
                        .selector
                        .as_ref()
                        .is_none_or(|s| s.matches(&p.metadata.labels))
            })
            .collect();
        sync(view, limits, job, &owned, out);
    }
}

fn sync(view: &ClusterView, limits: &Limits, job: &Job, owned: &[&Pod], out: &mut Out) {
    let meta = &job.metadata;
    let now = view.now_unix_ms;
    let prev = job.status.clone().unwrap_or_default();
    let mut active: Vec<&Pod> = owned.iter().copied().filter(|p| is_active(p)).collect();
    // Never below what was recorded: a Succeeded Pod someone deleted by
    // hand still completed. Never above the Pods: nothing is added blindly.
    let succeeded =
        count(owned.iter().filter(|p| phase(p) == "Succeeded").count()).max(prev.succeeded);
    let failed_pods = count(owned.iter().filter(|p| phase(p) == "Failed").count()).max(prev.failed);
    // With restartPolicy OnFailure a failure is a container restart, not a
    // failed Pod; Kubernetes counts those against backoffLimit too.
    let restarts: i32 = if job.spec.template.spec.restart_policy == "OnFailure" {
        active
            .iter()
            .filter_map(|p| p.status.as_ref())
            .flat_map(|s| s.container_statuses.iter())
            .map(|c| c.restart_count)
            .sum()
    } else {
        0
    };
    let completions = job.spec.completions.unwrap_or(1).max(0);
    let parallelism = job.spec.parallelism.unwrap_or(1).max(0);
    let start_time = prev
        .start_time
        .clone()
        .unwrap_or_else(|| format_rfc3339(now));
    let start_ms = parse_rfc3339(&start_time).unwrap_or(now);

    let mut status = JobStatus {
        active: 0,
        succeeded,
        failed: failed_pods,
        start_time: Some(start_time),
        completion_time: prev.completion_time.clone(),
        conditions: prev.conditions.clone(),
    };

    let already_finished =
        condition_true(&prev.conditions, "Complete") || condition_true(&prev.conditions, "Failed");
    let mut finished = already_finished;
    if !finished {
        let backoff_limit = job.spec.backoff_limit.unwrap_or(6).max(0);
        let deadline_ms = job
            .spec
            .active_deadline_seconds
            .map(|s| u64::try_from(s).unwrap_or(0) * 1000);
        if succeeded >= completions {
            set_condition(
                &mut status.conditions,
                "Complete",
                "True",
                "Completed",
                "job completed".into(),
                now,
            );
            status.completion_time = Some(format_rfc3339(now));
            out.push(event(
                Kind::Job,
                meta,
                "Completed",
                "job completed".into(),
                false,
            ));
            finished = true;
        } else if failed_pods + restarts > backoff_limit {
            let message = format!("job has reached the specified backoff limit of {backoff_limit}");
            set_condition(
                &mut status.conditions,
                "Failed",
                "True",
                "BackoffLimitExceeded",
                message.clone(),
                now,
            );
            out.push(event(
                Kind::Job,
                meta,
                "BackoffLimitExceeded",
                message,
                true,
            ));
            finished = true;
        } else if deadline_ms.is_some_and(|d| now >= start_ms.saturating_add(d)) {
            let message = "job was active longer than specified deadline".to_string();
            set_condition(
                &mut status.conditions,
                "Failed",
                "True",
                "DeadlineExceeded",
                message.clone(),
                now,
            );
            out.push(event(Kind::Job, meta, "DeadlineExceeded", message, true));
            finished = true;
        }
    }

    if finished {
        for pod in &active {
            out.push(delete(Kind::Pod, &pod.metadata));
        }
    } else {
        let want = usize::try_from(parallelism.min(completions - succeeded).max(0)).unwrap_or(0);
        if active.len() < want {
            let mut created = Vec::new();
            for _ in 0..(want - active.len()).min(limits.max_creates_per_object) {
                let Some(name) = out.fresh_pod_name(&meta.namespace, &meta.name, &meta.uid) else {
                    break;
                };
                let mut pod = pod_from_template(
                    &job.spec.template,
                    &meta.namespace,
                    name.clone(),
                    controller_ref(Kind::Job, meta),
                );
                pod.metadata
                    .labels
                    .insert(JOB_NAME_LABEL.into(), meta.name.clone());
                pod.metadata
                    .labels
                    .insert(CONTROLLER_UID_LABEL.into(), meta.uid.clone());
                if !out.push(Action::Create(Object::Pod(pod))) {
                    break;
                }
                created.push(name);
            }
            if !created.is_empty() {
                out.push(event(
                    Kind::Job,
                    meta,
                    "SuccessfulCreate",
                    format!("created pods: {}", name_list(&created)),
                    false,
                ));
            }
        } else if active.len() > want {
            // Parallelism lowered, or fewer completions left than Pods running.
            sort_for_deletion(&mut active);
            for pod in &active[..active.len() - want] {
                out.push(delete(Kind::Pod, &pod.metadata));
            }
        }
    }
    status.active = count(active.len());

    if job.status.as_ref() != Some(&status) {
        let mut updated = job.clone();
        updated.status = Some(status);
        out.push(Action::Update(Object::Job(updated)));
    }
}
