//! One round of the leader: what node lifecycle, the workload controllers
//! and the scheduler decide on one view of the cluster, as the store
//! writes that make it so.
//!
//! Every write is a compare-and-set on the revision the round read: if
//! anything moved meanwhile (a user's edit, an agent's status) the write
//! fails and the next round decides again from fresh state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use flotilla_api::cluster::Event;
use flotilla_api::{Node, Object, Pod};
use flotilla_controllers::{Action, ClusterView, Limits, NodeTiming};
use flotilla_scheduler::{Plan, SchedulerConfig};
use flotilla_store::{ObjectKey, Op, Precondition};

use crate::Entropy;
use crate::delete::{Deletion, pod_deletion};
use crate::objects;

/// What a round reads.
pub struct RoundInput<'a> {
    pub view: &'a ClusterView,
    /// When each node's heartbeat was last answered, as the leader's
    /// wall-clock milliseconds.
    pub heartbeats: &'a BTreeMap<String, u64>,
    pub timing: &'a NodeTiming,
    /// When this leader began to lead, in wall-clock milliseconds.
    pub leader_since: u64,
    /// The round's number while this peer leads: it seeds the scheduler's
    /// tie-breaks, so consecutive rounds do not all favour one node.
    pub round: u64,
}

/// What a round decides.
pub struct Round {
    pub ops: Vec<Op>,
    /// Nodes the round declares lost: the leader must not answer their
    /// heartbeats until these writes are through (the heartbeat table of
    /// `flotilla_fence` orders the two).
    pub lost: BTreeSet<String>,
}

/// One round's decisions, as store writes.
pub fn plan(input: &RoundInput, entropy: &dyn Entropy) -> Round {
    let view = input.view;
    let now = view.now_unix_ms;
    let index = Index::new(view);
    let mut actions = flotilla_controllers::node_lifecycle(view, input.heartbeats, input.leader_since, input.timing);
    let lost = flotilla_controllers::declared_lost(&actions);
    actions.extend(flotilla_controllers::reconcile(view, &Limits::default()));
    let mut ops: Vec<Op> = actions.into_iter().filter_map(|a| action_op(a, &index, now, entropy)).collect();
    // Pods the controllers are about to change are left for the next
    // round's scheduler: their revision is about to move.
    let touched: BTreeSet<&ObjectKey> = ops.iter().map(|op| op.key()).collect();
    let pods: Vec<Arc<Pod>> = view.pods.iter().filter(|p| !touched.contains(&objects::pod_key(p))).cloned().collect();
    let config = SchedulerConfig { seed: input.round, ..SchedulerConfig::default() };
    let plan = flotilla_scheduler::schedule(&view.nodes, &pods, &config);
    let scheduled = plan_ops(&plan, &index, now, entropy);
    ops.extend(scheduled);
    Round { ops, lost }
}

/// Deletes of Events past their time to live or over the cap, at most
/// `limit`.
pub fn expire_events(events: &[Event], now: u64, limit: usize, entropy: &dyn Entropy) -> Vec<Op> {
    let expired = flotilla_controllers::expire_events(events, now, flotilla_controllers::EVENT_TTL_MS, flotilla_controllers::MAX_EVENTS, limit);
    // Events are never Pods: no deletion of theirs needs the view.
    expired.into_iter().filter_map(|a| action_op(a, &Index::default(), now, entropy)).collect()
}

/// The view's Pods by namespace and name, and its Nodes by name.
#[derive(Default)]
struct Index<'a> {
    pods: BTreeMap<(&'a str, &'a str), &'a Pod>,
    nodes: BTreeMap<&'a str, &'a Node>,
}

impl<'a> Index<'a> {
    fn new(view: &'a ClusterView) -> Self {
        Index {
            pods: view.pods.iter().map(|p| ((p.metadata.namespace.as_str(), p.metadata.name.as_str()), &**p)).collect(),
            nodes: view.nodes.iter().map(|n| (n.metadata.name.as_str(), n)).collect(),
        }
    }
}

fn action_op(action: Action, index: &Index, now: u64, entropy: &dyn Entropy) -> Option<Op> {
    match action {
        Action::Create(object) => {
            let key = objects::key_of(&object);
            Some(Op::Put { key, object: object.to_json(), precondition: Precondition::MustNotExist, uid: objects::new_uid(entropy) })
        }
        Action::Update(object) => {
            let key = objects::key_of(&object);
            let revision = object.metadata().resource_version.parse().ok()?;
            Some(Op::Put { key, object: object.to_json(), precondition: Precondition::Revision(revision), uid: String::new() })
        }
        Action::Delete { kind, namespace, name, resource_version } => {
            let revision: u64 = resource_version.parse().ok()?;
            let key = ObjectKey::new(kind.name(), namespace, name);
            // Bound Pods are deleted as users' deletes are: gracefully.
            let deletion = match index.pods.get(&(key.namespace.as_str(), key.name.as_str())) {
                Some(pod) if key.kind == "Pod" => {
                    let node = index.nodes.get(pod.spec.node_name.as_str()).copied();
                    pod_deletion(pod, revision, node, now)
                }
                _ => Deletion::Now { revision: Some(revision) },
            };
            match deletion {
                Deletion::Graceful { object, revision } => {
                    Some(Op::Put { key, object, precondition: Precondition::Revision(revision), uid: String::new() })
                }
                Deletion::Terminating { .. } => None,
                Deletion::Now { .. } => Some(Op::Delete { key, precondition: Precondition::Revision(revision) }),
            }
        }
        Action::Event { involved, reason, message, warning } => {
            Some(objects::event_op(involved, &reason, &message, warning, "flotilla-controller", now, entropy))
        }
    }
}

/// Bindings as compare-and-set writes of each Pod with its node set, and
/// unschedulable Pods' PodScheduled condition with an event when the
/// reason changes.
fn plan_ops(plan: &Plan, index: &Index, now: u64, entropy: &dyn Entropy) -> Vec<Op> {
    let bound = plan.bindings.iter().filter_map(|b| {
        let pod = index.pods.get(&(b.namespace.as_str(), b.name.as_str()))?;
        let message = format!("Successfully assigned {}/{} to {}", b.namespace, b.name, b.node);
        scheduling_ops(pod, Some(&b.node), &message, now, entropy)
    });
    let unschedulable = plan.unschedulable.iter().filter_map(|u| {
        let pod = index.pods.get(&(u.namespace.as_str(), u.name.as_str()))?;
        scheduling_ops(pod, None, &u.message, now, entropy)
    });
    bound.chain(unschedulable).flatten().collect()
}

/// The Pod written back (compare-and-set on the revision the plan read)
/// bound to `node`, or marked unschedulable, with the matching event.
/// Nothing when an unschedulable Pod already says the same.
fn scheduling_ops(pod: &Pod, node: Option<&str>, message: &str, now: u64, entropy: &dyn Entropy) -> Option<[Op; 2]> {
    let revision = pod.metadata.resource_version.parse().ok()?;
    let mut written = pod.clone();
    let status = written.status.get_or_insert_with(Default::default);
    if status.phase.is_empty() {
        status.phase = "Pending".into();
    }
    let (reason, warning) = match node {
        Some(node) => {
            written.spec.node_name = node.to_string();
            let status = written.status.as_mut().expect("set above");
            flotilla_controllers::set_condition(&mut status.conditions, "PodScheduled", "True", "", String::new(), now);
            ("Scheduled", false)
        }
        None => {
            if status.conditions.iter().any(|c| c.type_ == "PodScheduled" && c.message == message) {
                return None;
            }
            flotilla_controllers::set_condition(&mut status.conditions, "PodScheduled", "False", "Unschedulable", message.to_string(), now);
            ("FailedScheduling", true)
        }
    };
    let put = Op::Put {
        key: objects::pod_key(pod),
        object: serde_json::to_string(&written).expect("API types serialize"),
        precondition: Precondition::Revision(revision),
        uid: String::new(),
    };
    let event = objects::event_op(
        objects::reference(&Object::Pod(pod.clone())),
        reason,
        message,
        warning,
        "flotilla-scheduler",
        now,
        entropy,
    );
    Some([put, event])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Counting, node, pod, put};
    use crate::view::ViewCache;
    use flotilla_store::ObjectStore;
    use serde_json::Value;

    const TIMING: NodeTiming = NodeTiming { not_ready_after_ms: 1_000, lost_after_ms: 2_000, leader_grace_ms: 2_000 };

    fn written(ops: &[Op], kind: &str, name: &str) -> Vec<Value> {
        ops.iter()
            .filter_map(|op| match op {
                Op::Put { key, object, .. } if key.kind == kind && key.name == name => Some(serde_json::from_str(object).unwrap()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_round_declares_a_silent_node_lost_fails_its_pods_and_binds_the_pending() {
        let mut store = ObjectStore::default();
        put(&mut store, node("n1", false));
        put(&mut store, node("n2", false));
        put(&mut store, pod("pending", "", "Pending"));
        put(&mut store, pod("stranded", "n2", "Running"));
        let now = 100_000;
        let view = ViewCache::load(&store).cluster_view(now);
        let heartbeats = BTreeMap::from([("n1".to_string(), now - 10)]);
        let input = RoundInput { view: &view, heartbeats: &heartbeats, timing: &TIMING, leader_since: 0, round: 1 };
        let Round { ops, lost } = plan(&input, &Counting::default());

        assert_eq!(lost, BTreeSet::from(["n2".to_string()]));
        let n2 = written(&ops, "Node", "n2");
        assert_eq!(n2[0]["status"]["conditions"][0]["reason"], "NodeLost");
        let stranded = written(&ops, "Pod", "stranded");
        assert_eq!(stranded[0]["status"]["phase"], "Failed");
        let pending = written(&ops, "Pod", "pending");
        assert_ne!(pending[0]["spec"]["nodeName"], "", "bound to a node");
        let revision_of = |name: &str| store.get(&ObjectKey::new("Pod", "default", name)).unwrap().mod_revision;
        for op in &ops {
            match op {
                Op::Put { key, precondition, .. } if key.kind == "Pod" => {
                    assert_eq!(*precondition, Precondition::Revision(revision_of(&key.name)), "{key} on the revision read");
                }
                Op::Put { key, precondition, .. } if key.kind == "Event" => assert_eq!(*precondition, Precondition::MustNotExist),
                _ => {}
            }
        }
        assert!(written(&ops, "Node", "n1").is_empty(), "a node that answers is left alone");
    }

    #[test]
    fn a_new_leader_declares_nothing_within_its_grace() {
        let mut store = ObjectStore::default();
        put(&mut store, node("n1", false));
        let now = 100_000;
        let view = ViewCache::load(&store).cluster_view(now);
        let heartbeats = BTreeMap::new();
        let input = RoundInput { view: &view, heartbeats: &heartbeats, timing: &TIMING, leader_since: now - 1_000, round: 1 };
        let Round { ops, lost } = plan(&input, &Counting::default());
        assert!(lost.is_empty());
        assert!(ops.is_empty(), "{ops:?}");
    }
}
