//! Small predicates and builders every controller shares.

use std::cmp::Reverse;

use flotilla_api::Kind;
use flotilla_api::cluster::{Node, ObjectReference};
use flotilla_api::meta::{ObjectMeta, OwnerReference};
use flotilla_api::pod::{Condition, Pod, PodTemplateSpec};

use crate::Action;
use flotilla_api::time::{format_rfc3339, parse_rfc3339};

pub(crate) fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().map_or("", |s| s.phase.as_str())
}

pub(crate) fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

pub(crate) fn is_terminating(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

/// Counts toward a controller's replicas: neither finished nor going away.
pub(crate) fn is_active(pod: &Pod) -> bool {
    !is_terminal(pod) && !is_terminating(&pod.metadata)
}

fn ready_condition(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == "Ready")
}

pub(crate) fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| ready_condition(&s.conditions))
        .is_some_and(|c| c.status == "True")
}

/// Ready for at least `min_ready_seconds`, as Kubernetes' "available".
pub(crate) fn pod_available(pod: &Pod, min_ready_seconds: Option<i32>, now_unix_ms: u64) -> bool {
    if !pod_ready(pod) {
        return false;
    }
    let min_ready_ms = u64::try_from(min_ready_seconds.unwrap_or(0)).unwrap_or(0) * 1000;
    if min_ready_ms == 0 {
        return true;
    }
    let since = pod
        .status
        .as_ref()
        .and_then(|s| ready_condition(&s.conditions))
        .and_then(|c| c.last_transition_time.as_deref())
        .and_then(parse_rfc3339);
    since.is_some_and(|t| t + min_ready_ms <= now_unix_ms)
}

pub(crate) fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| ready_condition(&s.conditions))
        .is_some_and(|c| c.status == "True")
}

/// The reason on a node's Ready condition (`NodeLost` once declared lost).
pub(crate) fn node_ready_reason(node: &Node) -> &str {
    node.status
        .as_ref()
        .and_then(|s| ready_condition(&s.conditions))
        .map_or("", |c| c.reason.as_str())
}

/// The reason on a lost node's Ready condition and on its Pods.
pub const NODE_LOST: &str = "NodeLost";

/// Whether the node lifecycle has declared this node lost.
pub fn node_lost(node: &Node) -> bool {
    !node_ready(node) && node_ready_reason(node) == NODE_LOST
}

pub(crate) fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    meta.owner_references
        .iter()
        .find(|r| r.controller)
        .map(|r| r.uid.as_str())
}

pub(crate) fn controller_ref(kind: Kind, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: kind.api_version().into(),
        kind: kind.name().into(),
        name: owner.name.clone(),
        uid: owner.uid.clone(),
        controller: true,
        block_owner_deletion: true,
    }
}

/// A controller acts only on objects that exist (have a uid) and are not
/// being deleted (the store cascades to their Pods).
pub(crate) fn live(meta: &ObjectMeta) -> bool {
    !meta.uid.is_empty() && !is_terminating(meta)
}

/// A new Pod from `template`: labels and annotations from the template,
/// owned by `owner`.
pub(crate) fn pod_from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    name: String,
    owner: OwnerReference,
) -> Pod {
    Pod {
        api_version: Kind::Pod.api_version().into(),
        kind: Kind::Pod.name().into(),
        metadata: ObjectMeta {
            name,
            namespace: namespace.into(),
            labels: template.metadata.labels.clone(),
            annotations: template.metadata.annotations.clone(),
            owner_references: vec![owner],
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

pub(crate) fn delete(kind: Kind, meta: &ObjectMeta) -> Action {
    Action::Delete {
        kind,
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        resource_version: meta.resource_version.clone(),
    }
}

pub(crate) fn event(
    kind: Kind,
    meta: &ObjectMeta,
    reason: &str,
    message: String,
    warning: bool,
) -> Action {
    Action::Event {
        involved: ObjectReference {
            api_version: kind.api_version().into(),
            kind: kind.name().into(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            uid: meta.uid.clone(),
        },
        reason: reason.into(),
        message,
        warning,
    }
}

/// Sets a condition, keeping its transition time while its status holds,
/// so that rewriting the same status is no change at all.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now_unix_ms: u64,
) {
    let existing = conditions.iter_mut().find(|c| c.type_ == type_);
    match existing {
        Some(c) => {
            if c.status != status {
                c.status = status.into();
                c.last_transition_time = Some(format_rfc3339(now_unix_ms));
            }
            c.reason = reason.into();
            c.message = message;
        }
        None => conditions.push(Condition {
            type_: type_.into(),
            status: status.into(),
            last_transition_time: Some(format_rfc3339(now_unix_ms)),
            reason: reason.into(),
            message,
        }),
    }
}

pub(crate) fn condition_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Sorts Pods so the ones to delete first come first, as Kubernetes scales
/// down: unscheduled before scheduled, Pending before Running, not ready
/// before ready, newer before older (the name breaks ties so the choice is
/// deterministic).
pub(crate) fn sort_for_deletion(pods: &mut [&Pod]) {
    pods.sort_by_key(|p| {
        let phase_rank = match phase(p) {
            "Pending" | "" => 0,
            "Unknown" => 1,
            _ => 2,
        };
        (
            !p.spec.node_name.is_empty(),
            phase_rank,
            pod_ready(p),
            Reverse(p.metadata.creation_timestamp.clone().unwrap_or_default()),
            Reverse(p.metadata.name.clone()),
        )
    });
}

pub(crate) fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Names for an event message, bounded: the first few and how many more.
pub(crate) fn name_list<S: AsRef<str>>(names: &[S]) -> String {
    const SHOWN: usize = 5;
    let mut text = names
        .iter()
        .take(SHOWN)
        .map(|n| n.as_ref())
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}
