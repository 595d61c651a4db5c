//! Garbage collection: a Pod or ReplicaSet whose owners are all gone is
//! deleted (the store cascades deletes too; this catches what a cascade
//! missed, such as an owner removed while its dependant was being created).

use std::collections::BTreeSet;

use flotilla_api::Kind;
use flotilla_api::meta::ObjectMeta;

use crate::common::{delete, is_terminating};
use crate::{ClusterView, Out};

/// Owner kinds whose every object is in the view; an owner of another
/// kind cannot be checked, so it is assumed to exist.
const VIEWED_KINDS: [Kind; 7] = [
    Kind::Pod,
    Kind::ReplicaSet,
    Kind::Deployment,
    Kind::Job,
    Kind::DaemonSet,
    Kind::StatefulSet,
    Kind::Node,
];

pub(crate) fn reconcile(view: &ClusterView, out: &mut Out) {
    let uids: BTreeSet<&str> = view
        .nodes
        .iter()
        .map(|o| &o.metadata)
        .chain(view.pods.iter().map(|o| &o.metadata))
        .chain(view.replica_sets.iter().map(|o| &o.metadata))
        .chain(view.deployments.iter().map(|o| &o.metadata))
        .chain(view.jobs.iter().map(|o| &o.metadata))
        .chain(view.daemon_sets.iter().map(|o| &o.metadata))
        .chain(view.stateful_sets.iter().map(|o| &o.metadata))
        .map(|m| m.uid.as_str())
        .filter(|u| !u.is_empty())
        .collect();
    let orphaned = |m: &ObjectMeta| {
        !is_terminating(m)
            && !m.owner_references.is_empty()
            && m.owner_references.iter().all(|r| {
                VIEWED_KINDS.iter().any(|k| k.name() == r.kind) && !uids.contains(r.uid.as_str())
            })
    };
    let candidates = view
        .replica_sets
        .iter()
        .map(|rs| (Kind::ReplicaSet, &rs.metadata))
        .chain(view.pods.iter().map(|p| (Kind::Pod, &p.metadata)));
    for (kind, meta) in candidates {
        if out.full() {
            return;
        }
        if orphaned(meta) {
            out.push(delete(kind, meta));
        }
    }
}
