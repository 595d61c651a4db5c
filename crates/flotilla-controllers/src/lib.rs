//! Flotilla's workload controllers (ReplicaSet, Deployment, Job, DaemonSet,
//! StatefulSet, garbage collection) and node lifecycle, as pure functions
//! the Raft leader calls.
//!
//! # Level-triggered reconciliation
//!
//! A controller here is not told *what changed*. It is given the whole
//! committed state ([`ClusterView`]) and returns the [`Action`]s that move it
//! toward the desired state: "this ReplicaSet wants 3 Pods and has 2" gives
//! one create, whichever event caused the gap (a scale-up, a lost node, a
//! Pod the user deleted, a leader change that dropped an earlier proposal).
//! The leader proposes the actions, the store applies them, and the leader
//! calls [`reconcile`] again on the result. Missed or duplicated
//! notifications do no harm, and a new leader needs no history: counts are
//! derived from objects (a Job's completions from its Succeeded Pods, never
//! from a counter incremented per event), and names are deterministic, so
//! a proposal repeated from a stale view fails as "already exists" rather
//! than making a second Pod.
//!
//! Reconciling must converge: once the state is what the specs ask for,
//! [`reconcile`] returns nothing, so status is written only when it differs,
//! conditions keep their transition time while their status holds, and
//! events accompany changes only. Every write is a compare-and-set on the
//! `resourceVersion` read from the view, so a plan made from a stale view
//! fails instead of overwriting a newer change; the next round replans.
//! One call returns at most [`Limits::max_actions`] actions, so a huge change
//! becomes several bounded proposals rather than one giant one.
//!
//! # Why deleting a bound Pod is graceful
//!
//! A Pod bound to a node is running there, and the store cannot stop a
//! process. [`Action::Delete`] of such a Pod therefore only marks it
//! (`metadata.deletionTimestamp`); the node's agent stops its containers
//! and then removes the object. Controllers treat a terminating Pod as
//! gone for counting but leave it alone, and the StatefulSet controller
//! never creates `<set>-N` while *any* Pod object of that name exists. So
//! a replacement for ordinal N starts only after the old instance has
//! really stopped: at most one instance per ordinal. The one exception is a
//! Pod on a node declared Lost: that node fenced itself (it stopped its
//! Pods once it could no longer reach a leader, and `lost_after` is longer
//! than its fence), so its Pods are removed directly.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use flotilla_api::cluster::{Node, ObjectReference};
use flotilla_api::pod::Pod;
use flotilla_api::workloads::{DaemonSet, Deployment, Job, ReplicaSet, StatefulSet};
use flotilla_api::{Kind, Object};

mod common;
mod daemonset;
mod deployment;
mod events;
mod gc;
mod job;
mod names;
mod node;
mod replicaset;
mod statefulset;

#[cfg(test)]
mod sim;

pub use common::{NODE_LOST, node_lost, set_condition};
pub use events::{EVENT_TTL_MS, MAX_EVENTS, expire_events};
pub use names::{NAME_ALPHABET, pod_name_suffix, template_hash};
pub use node::{NodeTiming, declared_lost, node_lifecycle};

/// The committed state the controllers reconcile, as read at one revision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterView {
    /// The leader's clock when the view was taken (status timestamps,
    /// Job deadlines, minReadySeconds).
    pub now_unix_ms: u64,
    pub nodes: Vec<Node>,
    /// Shared, not owned: the leader keeps the decoded Pods between rounds
    /// and a round must not copy tens of thousands of them.
    pub pods: Vec<Arc<Pod>>,
    pub replica_sets: Vec<ReplicaSet>,
    pub deployments: Vec<Deployment>,
    pub jobs: Vec<Job>,
    pub daemon_sets: Vec<DaemonSet>,
    pub stateful_sets: Vec<StatefulSet>,
}

/// A write a controller wants the leader to propose.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create a new object: name deterministic, namespace set, a controller
    /// ownerReference set, labels from the template; uid and
    /// resourceVersion empty (the IO layer assigns the uid). Pods of a
    /// DaemonSet come with `spec.nodeName` set.
    Create(Object),
    /// Replace an object; compare-and-set on its `metadata.resourceVersion`
    /// as read from the view.
    Update(Object),
    /// Delete an object, compare-and-set on `resource_version`. For a Pod
    /// bound to a node that is not Lost, the IO layer only sets
    /// `metadata.deletionTimestamp` (the node's agent stops it and removes
    /// it); anything else is removed at once.
    Delete {
        kind: Kind,
        namespace: String,
        name: String,
        resource_version: String,
    },
    /// A Kubernetes Event about an object.
    Event {
        involved: ObjectReference,
        reason: String,
        message: String,
        warning: bool,
    },
}

impl Action {
    /// The object an action writes, `None` for an Event.
    pub fn target(&self) -> Option<(Kind, &str, &str)> {
        match self {
            Action::Create(o) | Action::Update(o) => {
                let m = o.metadata();
                Some((o.kind(), m.namespace.as_str(), m.name.as_str()))
            }
            Action::Delete {
                kind,
                namespace,
                name,
                ..
            } => Some((*kind, namespace.as_str(), name.as_str())),
            Action::Event { .. } => None,
        }
    }
}

/// Bounds on one [`reconcile`] call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Actions returned by one call, events included; the rest waits for
    /// the next round.
    pub max_actions: usize,
    /// Pods one controller object may create in one round (Kubernetes'
    /// burst), so one huge ReplicaSet cannot take the whole batch.
    pub max_creates_per_object: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_actions: 2_000,
            max_creates_per_object: 500,
        }
    }
}

/// Runs every controller over `view` and returns at most
/// `limits.max_actions` actions, at most one write per object.
pub fn reconcile(view: &ClusterView, limits: &Limits) -> Vec<Action> {
    let mut out = Out::new(view, limits.max_actions);
    gc::reconcile(view, &mut out);
    deployment::reconcile(view, &mut out);
    replicaset::reconcile(view, limits, &mut out);
    job::reconcile(view, limits, &mut out);
    daemonset::reconcile(view, limits, &mut out);
    statefulset::reconcile(view, limits, &mut out);
    out.actions
}

/// Tries, besides names already taken, before giving up on a free
/// generated name.
const MAX_NAME_ATTEMPTS: u32 = 1_000;

/// Collects one round's actions: bounded, one write per object (two
/// compare-and-sets on the same revision would make one of them fail; the
/// first controller wins and the other acts next round), and Pod names
/// reserved across controllers.
pub(crate) struct Out {
    actions: Vec<Action>,
    max_actions: usize,
    written: BTreeSet<(Kind, String, String)>,
    /// (namespace, name) of every Pod in the view or created this round.
    pod_names: BTreeSet<(String, String)>,
    /// Mixed into generated names so that each round draws new ones: a
    /// name is never reused for a later Pod, and a controller with
    /// thousands of Pods does not run out of attempts.
    round_seed: u64,
    /// The next attempt per seed this round, so that creating many Pods
    /// of one owner does not retry every name already taken.
    next_attempt: BTreeMap<String, u32>,
}

impl Out {
    pub(crate) fn new(view: &ClusterView, max_actions: usize) -> Self {
        let pod_names = view
            .pods
            .iter()
            .map(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()))
            .collect();
        Out {
            actions: Vec::new(),
            max_actions,
            written: BTreeSet::new(),
            pod_names,
            round_seed: view.now_unix_ms,
            next_attempt: BTreeMap::new(),
        }
    }

    pub(crate) fn full(&self) -> bool {
        self.actions.len() >= self.max_actions
    }

    /// Adds `action` unless the round is full or its object already has a
    /// write this round; says whether it was added.
    pub(crate) fn push(&mut self, action: Action) -> bool {
        if self.full() {
            return false;
        }
        if let Some((kind, ns, name)) = action.target() {
            if !self
                .written
                .insert((kind, ns.to_string(), name.to_string()))
            {
                return false;
            }
            if let Action::Create(Object::Pod(_)) = action {
                self.pod_names.insert((ns.to_string(), name.to_string()));
            }
        }
        self.actions.push(action);
        true
    }

    pub(crate) fn pod_name_taken(&self, namespace: &str, name: &str) -> bool {
        self.pod_names
            .contains(&(namespace.to_string(), name.to_string()))
    }

    /// A `<base>-<suffix>` name that no Pod in the view or in this round
    /// has, drawn from `seed` and the round.
    pub(crate) fn fresh_pod_name(&mut self, namespace: &str, base: &str, seed: &str) -> Option<String> {
        let seed = format!("{seed}/{}", self.round_seed);
        let first = self.next_attempt.get(&seed).copied().unwrap_or(0);
        // Every name taken can cost one attempt, beyond the misses allowed.
        let limit = MAX_NAME_ATTEMPTS.saturating_add(u32::try_from(self.pod_names.len()).unwrap_or(u32::MAX));
        let (attempt, name) = (first..first.saturating_add(limit))
            .map(|attempt| (attempt, format!("{base}-{}", pod_name_suffix(&seed, attempt))))
            .find(|(_, name)| !self.pod_name_taken(namespace, name))?;
        self.next_attempt.insert(seed, attempt + 1);
        Some(name)
    }
}

/// Groups a view's Pods by their controller's uid, for lookups per
/// controller object in a large cluster.
pub(crate) fn pods_by_controller(view: &ClusterView) -> BTreeMap<&str, Vec<&Pod>> {
    let mut map: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for pod in &view.pods {
        if let Some(uid) = common::controller_uid(&pod.metadata) {
            map.entry(uid).or_default().push(pod);
        }
    }
    map
}

#[cfg(test)]
mod tests;
