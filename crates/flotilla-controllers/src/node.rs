//! Node lifecycle: Ready, then NotReady, then Lost, from the leader's
//! in-memory heartbeat times.
//!
//! Heartbeats do not go through the Raft log; only transitions are
//! written, so a healthy cluster of thousands of nodes costs no writes. A
//! node is declared Lost only after `lost_after_ms`, which is longer than
//! the time after which a cut-off node fences itself (stops its own Pods),
//! so its Pods can be marked Failed and replaced without two instances.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_api::cluster::Node;
use flotilla_api::pod::{ContainerStateTerminated, ContainerStatus, Pod, PodStatus};
use flotilla_api::{Kind, Object};

use crate::common::{
    NODE_LOST, delete, event, is_terminal, is_terminating, node_lost, set_condition,
};
use flotilla_api::time::format_rfc3339;
use crate::{Action, ClusterView};

/// Thresholds of the node lifecycle, all in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeTiming {
    /// Silence after which a node is Ready=Unknown (NodeStatusUnknown).
    pub not_ready_after_ms: u64,
    /// Silence after which a node is Lost and its Pods fail (NodeLost).
    pub lost_after_ms: u64,
    /// A new leader has no heartbeat history: it declares nothing until
    /// this long after taking over.
    pub leader_grace_ms: u64,
}

/// Writes in one call; the rest follow on the next.
const MAX_NODE_ACTIONS: usize = 2_000;

const NODE_STATUS_UNKNOWN: &str = "NodeStatusUnknown";
/// Exit code reported for containers of a Pod whose node was lost (as if
/// killed: the node fenced itself).
const LOST_EXIT_CODE: i32 = 137;

/// The node status transitions due now, and the Pods of Lost nodes to fail
/// (or, if already terminating, to remove).
pub fn node_lifecycle(
    view: &ClusterView,
    last_heartbeat_unix_ms: &BTreeMap<String, u64>,
    leader_since_unix_ms: u64,
    timing: &NodeTiming,
) -> Vec<Action> {
    let now = view.now_unix_ms;
    let in_grace = now < leader_since_unix_ms.saturating_add(timing.leader_grace_ms);
    let mut pods_on: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for pod in view.pods.iter().filter(|p| !p.spec.node_name.is_empty()) {
        pods_on
            .entry(pod.spec.node_name.as_str())
            .or_default()
            .push(pod);
    }
    let mut out = Vec::new();
    for node in &view.nodes {
        if out.len() >= MAX_NODE_ACTIONS {
            break;
        }
        let name = node.metadata.name.as_str();
        let last = last_heartbeat_unix_ms.get(name).copied();
        // Silence counts from the later of the last heartbeat and the
        // leader's takeover: a new leader has not been listening before.
        let silent_ms = now.saturating_sub(last.unwrap_or(0).max(leader_since_unix_ms));
        let fresh = last.is_some_and(|t| now.saturating_sub(t) < timing.not_ready_after_ms);
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
        let was_lost = node_lost(node);
        let was_unknown =
            ready.is_some_and(|c| c.status != "True" && c.reason == NODE_STATUS_UNKNOWN);

        let transition: Option<(&str, &str, String)> = if fresh {
            // Back to Ready only from a state this lifecycle wrote; a
            // NotReady the node's agent reported itself stands.
            (ready.is_none() || was_lost || was_unknown).then(|| {
                (
                    "True",
                    "NodeReady",
                    format!("node {name} is sending heartbeats"),
                )
            })
        } else if in_grace || was_lost {
            None
        } else if silent_ms >= timing.lost_after_ms {
            Some((
                "Unknown",
                NODE_LOST,
                format!(
                    "node {name} was lost: no heartbeat for {}s",
                    silent_ms / 1000
                ),
            ))
        } else if silent_ms >= timing.not_ready_after_ms && !was_unknown {
            Some((
                "Unknown",
                NODE_STATUS_UNKNOWN,
                format!(
                    "node {name} stopped sending heartbeats {}s ago",
                    silent_ms / 1000
                ),
            ))
        } else {
            None
        };
        let lost_now = transition
            .as_ref()
            .is_some_and(|(_, reason, _)| *reason == NODE_LOST);
        if let Some((status, reason, message)) = transition {
            out.push(Action::Update(Object::Node(with_ready(
                node,
                status,
                reason,
                message.clone(),
                now,
            ))));
            let warning = status != "True";
            out.push(event(Kind::Node, &node.metadata, reason, message, warning));
        }
        let stays_lost = was_lost && !fresh;
        if !(lost_now || stays_lost) {
            continue;
        }
        for pod in pods_on.get(name).into_iter().flatten() {
            if out.len() >= MAX_NODE_ACTIONS {
                break;
            }
            if stays_lost && is_terminating(&pod.metadata) {
                // Its node fenced itself and will never finish it.
                out.push(delete(Kind::Pod, &pod.metadata));
            } else if !is_terminal(pod) {
                out.push(Action::Update(Object::Pod(failed_node_lost(
                    pod, name, now,
                ))));
            }
        }
    }
    out
}

/// The nodes that `actions` (from [`node_lifecycle`]) declare lost now.
/// The leader makes that declaration conditional on no heartbeat having
/// been answered since it read the heartbeats (see `flotilla_fence`).
pub fn declared_lost(actions: &[Action]) -> BTreeSet<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Update(Object::Node(node)) => Some(node),
            _ => None,
        })
        .filter(|node| node_lost(node))
        .map(|node| node.metadata.name.clone())
        .collect()
}

fn with_ready(node: &Node, status: &str, reason: &str, message: String, now: u64) -> Node {
    let mut node = node.clone();
    let node_status = node.status.get_or_insert_with(Default::default);
    set_condition(
        &mut node_status.conditions,
        "Ready",
        status,
        reason,
        message,
        now,
    );
    node
}

fn failed_node_lost(pod: &Pod, node: &str, now: u64) -> Pod {
    let mut pod = pod.clone();
    let message = format!("node {node} was lost");
    let status = pod.status.get_or_insert_with(PodStatus::default);
    status.phase = "Failed".into();
    status.reason = NODE_LOST.into();
    status.message = message.clone();
    set_condition(
        &mut status.conditions,
        "Ready",
        "False",
        NODE_LOST,
        message.clone(),
        now,
    );
    for container in &pod.spec.containers {
        if !status
            .container_statuses
            .iter()
            .any(|c| c.name == container.name)
        {
            status.container_statuses.push(ContainerStatus {
                name: container.name.clone(),
                image: container.image.clone(),
                ..ContainerStatus::default()
            });
        }
    }
    for c in &mut status.container_statuses {
        if c.state.terminated.is_none() {
            let started_at = c.state.running.as_ref().and_then(|r| r.started_at.clone());
            c.state.waiting = None;
            c.state.running = None;
            c.state.terminated = Some(ContainerStateTerminated {
                exit_code: LOST_EXIT_CODE,
                reason: NODE_LOST.into(),
                message: message.clone(),
                started_at,
                finished_at: Some(format_rfc3339(now)),
                ..ContainerStateTerminated::default()
            });
        }
        c.ready = false;
        c.started = Some(false);
    }
    pod
}
