//! This peer as a node: it registers its Node, beats its heart to the
//! leader, fences itself when it cannot reach a leader holding a lease,
//! feeds its agent the Pods bound here, and writes what the agent reports.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
// Tokio's clock, so paused or simulated time drives the fence window too.
use tokio::time::Instant;

use flotilla_agent::{Agent, DesiredPod, Report, StatusUpdate};
use flotilla_api::cluster::{NodeAddress, NodeStatus};
use flotilla_api::pod::Volume;
use flotilla_api::quantity::Quantity;
use flotilla_api::wellknown::{HOSTNAME_LABEL, OS_LABEL, PEER_ADDRESS_ANNOTATION};
use flotilla_api::{ConfigMap, Kind, Node, Pod};
use flotilla_fence::{Fence, FenceReason, Step};
use flotilla_proto::node::HeartbeatRequest;
use flotilla_proto::node::nodes_client::NodesClient;
use flotilla_runtime::Capabilities;
use flotilla_store::{ObjectKey, Op, Precondition, WriteError};
use flotilla_control::objects;
use flotilla_control::reports::{self, StatusWrite};
use flotilla_raft::StoreHandle;
use flotilla_raft::membership::ClusterMembership;
use flotilla_raft::network::Channels;
use flotilla_raft::proposer::{LeaderLink, Proposer};
use tokio::sync::{mpsc, watch};

use crate::clock::Clock;
use crate::config::{NodeConfig, PeerConfig};
use crate::leader::Liveness;
use crate::{Random, changes};

/// What the node side needs of the peer.
pub struct NodeSide {
    pub config: PeerConfig,
    pub store: StoreHandle,
    pub proposer: Proposer,
    pub link: LeaderLink,
    pub channels: Channels,
    pub membership: Arc<ClusterMembership>,
    /// Answers this peer's own heartbeats while it leads.
    pub liveness: Arc<Liveness>,
}

/// Reports written in one proposal at most.
const MAX_REPORTS_PER_WRITE: usize = 256;
/// How long pending statuses wait before they are written again.
const STATUS_RETRY_INTERVAL: Duration = Duration::from_millis(200);
/// Attempts at a write that keeps losing compare-and-set races.
const MAX_WRITE_ATTEMPTS: usize = 5;

/// Registers (or refreshes) this peer's Node: capacity, labels, addresses
/// and what its runtime cannot enforce. A cordon set by a user is kept.
pub async fn register(side: &NodeSide, capabilities: &Capabilities, clock: &dyn Clock) -> Result<(), String> {
    let name = side.config.node_name();
    let key = ObjectKey::new("Node", "", name.clone());
    let (cpu_millis, memory_bytes) = machine_capacity(&side.config.node);
    for _ in 0..MAX_WRITE_ATTEMPTS {
        let live = side.store.read(|s| s.get(&key).cloned());
        let mut node: Node = live.as_ref().and_then(|o| serde_json::from_str(&o.json).ok()).unwrap_or_default();
        node.api_version = Kind::Node.api_version().into();
        node.kind = Kind::Node.name().into();
        node.metadata.name = name.clone();
        node.metadata.labels.extend(side.config.node.labels.clone());
        node.metadata.labels.insert(HOSTNAME_LABEL.into(), name.clone());
        node.metadata.labels.insert(OS_LABEL.into(), "linux".into());
        node.metadata.annotations.insert(PEER_ADDRESS_ANNOTATION.into(), side.config.advertised_addr());
        let now = clock.now_unix_ms();
        let status = node.status.get_or_insert_with(NodeStatus::default);
        let resources = BTreeMap::from([
            ("cpu".to_string(), Quantity(format!("{cpu_millis}m"))),
            ("memory".to_string(), Quantity(memory_bytes.to_string())),
            ("pods".to_string(), Quantity(side.config.node.max_pods.to_string())),
        ]);
        status.capacity = resources.clone();
        status.allocatable = resources;
        status.addresses = vec![
            NodeAddress { type_: "InternalIP".into(), address: side.config.listen.ip().to_string() },
            NodeAddress { type_: "Hostname".into(), address: name.clone() },
        ];
        // Readiness after a restart is the lifecycle controller's call, made
        // on heartbeats: a node it declared lost must not look Ready early.
        if live.is_none() {
            flotilla_controllers::set_condition(&mut status.conditions, "Ready", "True", "KubeletReady", "flotilla peer is posting heartbeats".into(), now);
        }
        let (isolated, message) = if capabilities.limitations.is_empty() {
            ("True", format!("{} runtime enforces isolation and limits", side.config.node.runtime))
        } else {
            ("False", capabilities.limitations.join(" "))
        };
        flotilla_controllers::set_condition(&mut status.conditions, "RuntimeIsolation", isolated, "", message, now);
        let precondition = live.as_ref().map_or(Precondition::MustNotExist, |o| Precondition::Revision(o.mod_revision));
        let op = Op::Put {
            key: key.clone(),
            object: serde_json::to_string(&node).expect("API types serialize"),
            precondition,
            uid: objects::new_uid(&Random),
        };
        match side.proposer.propose(vec![op]).await {
            Ok(mut r) => match r.pop().expect("one result per op") {
                Ok(_) => return Ok(()),
                Err(WriteError::Conflict { .. } | WriteError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e.to_string()),
            },
            Err(e) => {
                tracing::debug!("registering node {name}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Err(format!("node {name} could not be registered after {MAX_WRITE_ATTEMPTS} attempts"))
}

/// CPU and memory from the configuration, or what this machine has.
fn machine_capacity(node: &NodeConfig) -> (u64, u64) {
    let cpu = if node.cpu_millis > 0 {
        node.cpu_millis
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get() as u64) * 1000
    };
    let memory = if node.memory_bytes > 0 {
        node.memory_bytes
    } else {
        // SAFETY: sysconf only reads system constants.
        let (pages, page) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
        (pages.max(0) as u64) * (page.max(0) as u64)
    };
    (cpu, memory)
}

/// What the heartbeat loop hears from the work it started.
enum Heard {
    /// The heartbeat sent at `sent` ended: answered by a leader with a
    /// lease, or not.
    Beat { sent: Instant, answered: bool },
    /// The catch-up for the answer sent at `sent` ended.
    CaughtUp { sent: Instant, result: Result<(), String> },
}

/// Beats the heart every `node_heartbeat_ms` and drives this node's
/// [`Fence`] with the answers, its deadline and the catch-ups it asks for:
/// the agent is fenced when no leader with a valid lease has answered a
/// heartbeat sent within `fence_after_ms`, and unfenced once one answers
/// and this replica has caught up.
///
/// One task owns the fence, so a deadline and a late answer due together
/// (a frozen machine thawing) are decided in one place, deadline first.
pub async fn heartbeat_loop(side: Arc<NodeSide>, agent: Arc<Agent>, mut stop: watch::Receiver<bool>) {
    let interval = Duration::from_millis(side.config.timing.node_heartbeat_ms);
    let node_name = side.config.node_name();
    let mut fence = Fence::new(Duration::from_millis(side.config.timing.fence_after_ms));
    let (heard_tx, mut heard) = mpsc::unbounded_channel::<Heard>();
    let mut next_beat = Instant::now() + interval;
    let mut beating = false;
    loop {
        let deadline = fence.deadline();
        let steps: Vec<Step> = tokio::select! {
            biased;
            _ = stop.changed() => return,
            _ = sleep_until(deadline) => fence.tick(now()).into_iter().collect(),
            Some(event) = heard.recv() => match event {
                Heard::Beat { sent, answered } => {
                    beating = false;
                    if answered { fence.answered(sent.into_std(), now()) } else { Vec::new() }
                }
                Heard::CaughtUp { sent, result } => {
                    if let Err(e) = &result {
                        tracing::info!("still fenced: {e}");
                    }
                    let step = fence.caught_up(sent.into_std(), result.is_ok(), now());
                    if result.is_ok() && step.is_none() && fence.is_fenced() {
                        tracing::info!("still fenced: caught up only after the lease had run out");
                    }
                    step.into_iter().collect()
                }
            },
            _ = tokio::time::sleep_until(next_beat) => {
                next_beat = Instant::now() + interval;
                // One heartbeat at a time, as before: a slow leader is not
                // sent a pile of them.
                if !beating {
                    beating = true;
                    let (side, node_name, heard_tx) = (side.clone(), node_name.clone(), heard_tx.clone());
                    tokio::spawn(async move {
                        let sent = Instant::now();
                        let answered = match tokio::time::timeout(interval * 2, send_heartbeat(&side, &node_name)).await {
                            Ok(Ok(())) => true,
                            Ok(Err(e)) => {
                                tracing::trace!("heartbeat: {e}");
                                false
                            }
                            Err(_) => false,
                        };
                        let _ = heard_tx.send(Heard::Beat { sent, answered });
                    });
                }
                Vec::new()
            }
        };
        if let Some(until) = fence.lease_until() {
            agent.renew_lease(Instant::from_std(until));
        }
        for step in steps {
            match step {
                Step::Fence(FenceReason::Silent { since_sent }) => {
                    tracing::warn!(
                        "no leader with a valid lease answered a heartbeat sent in the last {} ms: killing every Pod on this node (fencing)",
                        since_sent.as_millis()
                    );
                    agent.fence().await;
                }
                Step::CatchUp { sent } => {
                    let (side, node_name, heard_tx) = (side.clone(), node_name.clone(), heard_tx.clone());
                    tokio::spawn(async move {
                        let result = caught_up(&side, &node_name).await;
                        let _ = heard_tx.send(Heard::CaughtUp { sent: Instant::from_std(sent), result });
                    });
                }
                Step::Unfence => {
                    tracing::info!("a leader answers and this replica has caught up: Pods may run");
                    agent.unfence();
                    agent.sync(side.store.read(|s| desired_pods(s, &node_name)));
                }
            }
        }
    }
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// Sleeps until `deadline`, or for ever without one.
async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Before Pods may run again: this replica has applied everything the
/// leader had appended, so it knows of every replacement, decided or
/// committed, and the leader has not declared this node lost (it writes
/// Ready again only after a fresh heartbeat).
async fn caught_up(side: &NodeSide, node_name: &str) -> Result<(), String> {
    let index = side.link.appended_index().await.map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(5), side.store.wait_applied(index))
        .await
        .map_err(|_| format!("this replica has not applied index {index} yet"))?;
    let key = ObjectKey::new("Node", "", node_name);
    let lost = side.store.read(|s| {
        s.get(&key).and_then(|o| serde_json::from_str::<Node>(&o.json).ok()).is_some_and(|n| flotilla_controllers::node_lost(&n))
    });
    if lost {
        return Err(format!("node {node_name} is still marked lost"));
    }
    Ok(())
}

async fn send_heartbeat(side: &NodeSide, node_name: &str) -> Result<(), String> {
    let (leader, addr) = side.link.leader().await.ok_or("no leader known")?;
    if leader == side.config.id {
        return side.liveness.answer(node_name).map(|_| ());
    }
    let channel = side.channels.get(&addr).map_err(|e| e.to_string())?;
    let mut client = NodesClient::new(channel);
    let mut request = tonic::Request::new(HeartbeatRequest {
        cluster_id: side.membership.identity.get(),
        peer_id: side.config.id,
        node_name: node_name.to_string(),
    });
    request.set_timeout(Duration::from_millis(side.config.timing.node_heartbeat_ms * 2));
    client.heartbeat(request).await.map(|_| ()).map_err(|s| s.message().to_string())
}

/// Keeps the agent's desired set equal to the Pods bound to this node,
/// recomputed after every applied change that touches Pods or ConfigMaps.
pub async fn feed_agent(side: Arc<NodeSide>, agent: Arc<Agent>, mut stop: watch::Receiver<bool>) {
    let node_name = side.config.node_name();
    let (_, mut events, _) = side.store.subscribe(None, 0);
    let mut last: Option<Vec<(String, String)>> = None;
    loop {
        let desired = side.store.read(|s| desired_pods(s, &node_name));
        // Only the identity and revision matter for "changed".
        let fingerprint: Vec<(String, String)> =
            desired.iter().map(|d| (d.pod.metadata.uid.clone(), d.pod.metadata.resource_version.clone())).collect();
        if last.as_ref() != Some(&fingerprint) {
            agent.sync(desired);
            last = Some(fingerprint);
        }
        tokio::select! {
            _ = stop.changed() => return,
            // Only Pods and ConfigMaps change what this node runs.
            changed = changes::next_change(&mut events, |kind| kind == "Pod" || kind == "ConfigMap", |_| {}) => {
                if !changed {
                    return;
                }
            }
        }
    }
}

fn desired_pods(store: &flotilla_store::ObjectStore, node_name: &str) -> Vec<DesiredPod> {
    // Only this node's Pods are decoded: the store indexes them by node.
    let pods = store.pods_on_node(node_name).filter_map(|(_, o)| serde_json::from_str::<Pod>(&o.json).ok());
    // A Pod declared lost has been replaced: it must not run here again.
    pods.filter(|p| p.spec.node_name == node_name)
        .filter(|p| p.status.as_ref().is_none_or(|s| s.reason != flotilla_controllers::NODE_LOST))
        .map(|pod| {
            let config_maps = config_maps_of(store, &pod);
            DesiredPod { pod, config_maps }
        })
        .collect()
}

fn config_maps_of(store: &flotilla_store::ObjectStore, pod: &Pod) -> BTreeMap<String, BTreeMap<String, String>> {
    let names: BTreeSet<&str> =
        pod.spec.volumes.iter().filter_map(|v: &Volume| v.config_map.as_ref().map(|c| c.name.as_str())).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let key = ObjectKey::new("ConfigMap", pod.metadata.namespace.clone(), name);
            let cm: ConfigMap = serde_json::from_str(&store.get(&key)?.json).ok()?;
            Some((name.to_string(), cm.data))
        })
        .collect()
}

/// Turns what is pending into this round's writes (see
/// [`flotilla_control::reports`]), forgetting what will never need one.
fn pending_writes(
    store: &StoreHandle,
    stopped: &mut BTreeMap<String, ObjectKey>,
    pending: &mut BTreeMap<String, StatusUpdate>,
    round: &mut Vec<Op>,
) {
    store.read(|s| {
        stopped.retain(|uid, key| match reports::stopped_removal(key, s.get(key), uid) {
            Some(op) => {
                round.push(op);
                true
            }
            None => false,
        });
        pending.retain(|_, update| {
            let key = ObjectKey::new("Pod", update.namespace.clone(), update.name.clone());
            match reports::status_write(&key, s.get(&key), &update.uid, &update.status) {
                StatusWrite::Write(op) => {
                    round.push(op);
                    true
                }
                StatusWrite::Drop => false,
            }
        });
    });
}

/// Writes the agent's reports through the leader, many per proposal:
/// statuses onto their Pods (compare-and-set), events as Event objects,
/// and the removal of Pods the agent stopped after a graceful delete.
///
/// A status stays pending until it is written or its Pod is gone (and a
/// stopped Pod until its removal lands): the
/// agent reports a status only when it changes, so one dropped here would
/// leave the Pod's status stale for good. Pending statuses are keyed by
/// uid (at most one per Pod on this node) and retried on a timer, after
/// catching up with the leader when they lost a race.
pub async fn write_reports(side: Arc<NodeSide>, mut reports: mpsc::Receiver<Report>, clock: Arc<dyn Clock>) {
    let mut batch = Vec::with_capacity(MAX_REPORTS_PER_WRITE);
    let mut pending: BTreeMap<String, StatusUpdate> = BTreeMap::new();
    let mut stopped: BTreeMap<String, ObjectKey> = BTreeMap::new();
    let mut behind = false;
    loop {
        tokio::select! {
            received = reports.recv_many(&mut batch, MAX_REPORTS_PER_WRITE) => {
                if received == 0 {
                    return;
                }
            }
            _ = tokio::time::sleep(STATUS_RETRY_INTERVAL), if !pending.is_empty() || !stopped.is_empty() => {}
        }
        if behind {
            // Conflicts mean this replica lags the write that beat us.
            if let Ok(index) = side.link.read_index().await {
                let _ = tokio::time::timeout(STATUS_RETRY_INTERVAL, side.store.wait_applied(index)).await;
            }
        }
        let now = clock.now_unix_ms();
        let mut round = Vec::new();
        for report in batch.drain(..) {
            match report {
                // A later status of a Pod supersedes an earlier one.
                Report::Status(s) => {
                    pending.insert(s.uid.clone(), s);
                }
                Report::Event(e) => {
                    let involved = flotilla_api::cluster::ObjectReference {
                        api_version: "v1".into(),
                        kind: "Pod".into(),
                        namespace: e.namespace,
                        name: e.pod,
                        uid: e.uid,
                    };
                    round.push(objects::event_op(involved, &e.reason, &e.message, e.warning, "flotilla-agent", now, &Random));
                }
                Report::Stopped { namespace, name, uid } => {
                    stopped.insert(uid, ObjectKey::new("Pod", namespace, name));
                }
            }
        }
        // Stopped Pods are removed like statuses are written: kept until
        // the removal lands or the object is no longer that Pod.
        pending_writes(&side.store, &mut stopped, &mut pending, &mut round);
        behind = false;
        for chunk in round.chunks(MAX_REPORTS_PER_WRITE) {
            match side.proposer.propose(chunk.to_vec()).await {
                Ok(results) => {
                    for (op, result) in chunk.iter().zip(&results) {
                        if let (Op::Delete { key, .. }, Err(e)) = (op, result) {
                            tracing::debug!("removing stopped {key}: {e}; tried again");
                        }
                    }
                    behind |= results.iter().any(|r| matches!(r, Err(WriteError::Conflict { .. })));
                }
                Err(e) => tracing::debug!("writing the agent's reports: {e}; statuses stay pending"),
            }
        }
    }
}
