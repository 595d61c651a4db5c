//! The leader's control loop: node liveness, workload controllers and the
//! scheduler, each pure, driven here over the local replica.
//!
//! Only the Raft leader runs a round. A round reads the applied state,
//! asks the pure cores what should change, and proposes the changes as
//! compare-and-set writes: if anything moved meanwhile (a user's edit, an
//! agent's status) the write fails and the next round decides again from
//! fresh state. Rounds run on every applied change and on a timer for
//! the node timers, never more often than `MIN_ROUND_INTERVAL`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
// Tokio's clock, so paused or simulated time drives the leader's timers too.
use tokio::time::Instant;

use flotilla_api::{Object, Pod};
use flotilla_controllers::{Action, ClusterView, Limits, NodeTiming};
use flotilla_fence::{Heartbeats, Reading, Refused};
use flotilla_raft::{AppliedEvent, StoreHandle};
use openraft::async_runtime::WatchReceiver as _;
use flotilla_scheduler::{Plan, SchedulerConfig};
use flotilla_store::{Command, ObjectKey, Op, Precondition};
use tokio::sync::{broadcast, watch};

use crate::PeerCore;
use crate::clock::Clock;
use crate::objects;
use crate::resources::{self, Deletion};
use crate::view::ViewCache;

/// Rounds are at least this far apart, so a burst of changes makes one
/// round, not one per change.
const MIN_ROUND_INTERVAL: Duration = Duration::from_millis(10);
/// How often expired Events are looked for.
const EVENT_EXPIRY_INTERVAL: Duration = Duration::from_secs(10);
/// Ops in one proposal: bounds the log entry and the time it holds the
/// state machine.
pub const MAX_OPS_PER_PROPOSAL: usize = 512;

/// The leader's table of answered heartbeats (see
/// [`flotilla_fence::heartbeats`]), shared by the heartbeat service and
/// the rounds.
///
/// Times are monotonic, so a wall-clock step on the leader cannot make a
/// node look silent; they are turned into wall-clock milliseconds only
/// for the pure lifecycle controller, relative to one reading.
#[derive(Default)]
pub struct Liveness {
    table: Mutex<Heartbeats>,
}

impl Liveness {
    fn table(&self) -> std::sync::MutexGuard<'_, Heartbeats> {
        self.table.lock().expect("liveness lock")
    }

    /// Records a heartbeat answered in `term`, unless the node is being
    /// declared lost right now.
    pub fn accept(&self, term: u64, node: &str) -> Result<(), Refused> {
        self.table().accept(term, node, Instant::now().into_std())
    }

    fn set_leading(&self, leading_term: Option<u64>) -> Option<Instant> {
        self.table().set_leading(leading_term, Instant::now().into_std()).map(Instant::from_std)
    }

    fn read(&self) -> Reading {
        self.table().read()
    }
}

/// The heartbeats of `reading` as wall-clock milliseconds relative to
/// `now_unix_ms`.
fn heartbeats_unix_ms(reading: &Reading, now_unix_ms: u64) -> BTreeMap<String, u64> {
    reading.last_heartbeat.iter().map(|(n, at)| (n.clone(), unix_ms_of(Instant::from_std(*at), now_unix_ms))).collect()
}

fn unix_ms_of(at: Instant, now_unix_ms: u64) -> u64 {
    now_unix_ms.saturating_sub(at.elapsed().as_millis() as u64)
}

/// Runs rounds while this peer leads, until `stop` turns true.
pub async fn run(core: Arc<PeerCore>, clock: Arc<dyn Clock>, mut stop: watch::Receiver<bool>) {
    let timing = &core.config.timing;
    let node_timing = NodeTiming {
        not_ready_after_ms: timing.not_ready_after_ms,
        lost_after_ms: timing.lost_after_ms,
        leader_grace_ms: timing.lost_after_ms,
    };
    let tick = Duration::from_millis(timing.node_heartbeat_ms);
    let (_, mut events, _) = core.store.subscribe(None, 0);
    // Decoded objects, kept only while this peer leads: a follower has no
    // use for them.
    let mut cache: Option<ViewCache> = None;
    let mut round: u64 = 0;
    let mut events_expired_at = Instant::now();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(tick) => {}
            // Events change nothing a round decides on, and the events a
            // round writes would otherwise wake the next one. Every event
            // keeps the decoded copy current on the way; missed ones drop it.
            changed = objects::next_change(&mut events, |kind| kind != "Event", |event| match event {
                Some(event) => feed(&mut cache, event),
                None => cache = None,
            }) => {
                if !changed {
                    return;
                }
            }
        }
        // Everything applied so far is in the state this round reads.
        loop {
            match events.try_recv() {
                Ok(event) => feed(&mut cache, &event),
                Err(broadcast::error::TryRecvError::Empty) => break,
                Err(broadcast::error::TryRecvError::Lagged(_)) => cache = None,
                Err(broadcast::error::TryRecvError::Closed) => return,
            }
        }
        // A leader whose clock is behind its predecessor's still decides
        // with the cluster's time, so deadlines and back-offs never rewind.
        let now = clock.now_unix_ms().max(core.store.read(|s| s.time_unix_ms()));
        let metrics = core.raft.metrics().borrow_watched().clone();
        let leading_term = (metrics.current_leader == Some(core.id)).then_some(metrics.current_term);
        let Some(leader_since) = core.liveness.set_leading(leading_term) else {
            cache = None;
            continue;
        };
        let leader_since = unix_ms_of(leader_since, now);
        let view = cache.get_or_insert_with(|| core.store.read(ViewCache::load)).cluster_view(now);
        round += 1;
        let reading = core.liveness.read();
        let (mut ops, lost) = plan_round(&core, &view, &reading, &node_timing, leader_since, now, round);
        // A node answered since the reading may already be catching up to
        // an index before this declaration: decide again on a fresh one.
        if !lost.is_empty()
            && let Err(answered) = core.liveness.table().declare_lost(&reading, &lost)
        {
            tracing::debug!(?answered, "nodes answered while this round declared them lost; deciding again");
            continue;
        }
        // Events are many and change nothing else: expired on a timer of
        // their own rather than decoded every round.
        if events_expired_at.elapsed() >= EVENT_EXPIRY_INTERVAL {
            events_expired_at = Instant::now();
            let events: Vec<flotilla_api::cluster::Event> = core.store.read(|s| objects::decode_all(s, flotilla_api::Kind::Event));
            let expired = flotilla_controllers::expire_events(
                &events,
                now,
                flotilla_controllers::EVENT_TTL_MS,
                flotilla_controllers::MAX_EVENTS,
                MAX_OPS_PER_PROPOSAL,
            );
            ops.extend(expired.into_iter().filter_map(|a| action_op(a, &core.store, now)));
        }
        // A round's writes are independent compare-and-sets decided on one
        // view, so its proposals go out together and share fsyncs rather
        // than each waiting for the one before to commit.
        let written = futures::future::join_all(ops.chunks(MAX_OPS_PER_PROPOSAL).map(|chunk| {
            core.link.write_here(Command { time_unix_ms: clock.now_unix_ms(), ops: chunk.to_vec() })
        }))
        .await;
        for result in written {
            match result {
                Ok(results) => {
                    let failed = results.iter().filter(|r| r.is_err()).count();
                    if failed > 0 {
                        tracing::debug!(failed, "some leader writes lost a race; the next round decides again");
                    }
                }
                Err(e) => tracing::debug!("leader round not written: {e}"),
            }
        }
        core.liveness.table().declared(&lost);
        // Changes that arrive meanwhile (this round's own writes among
        // them) wake the next round at once.
        tokio::time::sleep(MIN_ROUND_INTERVAL).await;
    }
}

/// One round's decisions, as store writes, and the nodes they declare lost.
fn plan_round(
    core: &PeerCore,
    view: &ClusterView,
    reading: &Reading,
    node_timing: &NodeTiming,
    leader_since: u64,
    now: u64,
    round: u64,
) -> (Vec<Op>, BTreeSet<String>) {
    let heartbeats = heartbeats_unix_ms(reading, now);
    let mut actions = flotilla_controllers::node_lifecycle(view, &heartbeats, leader_since, node_timing);
    let lost = flotilla_controllers::declared_lost(&actions);
    actions.extend(flotilla_controllers::reconcile(view, &Limits::default()));
    let mut ops: Vec<Op> = actions.into_iter().filter_map(|a| action_op(a, &core.store, now)).collect();
    // Pods the controllers are about to change are left for the next
    // round's scheduler: their revision is about to move.
    let touched: std::collections::BTreeSet<ObjectKey> = ops.iter().map(|op| op.key().clone()).collect();
    let pods: Vec<Arc<Pod>> = view.pods.iter().filter(|p| !touched.contains(&objects::pod_key(p))).cloned().collect();
    let config = SchedulerConfig { seed: round, ..SchedulerConfig::default() };
    let plan = flotilla_scheduler::schedule(&view.nodes, &pods, &config);
    ops.extend(plan_ops(&plan, &view.pods, now));
    (ops, lost)
}

fn feed(cache: &mut Option<ViewCache>, event: &AppliedEvent) {
    match event {
        AppliedEvent::Changes(changes) => {
            if let Some(cache) = cache {
                changes.iter().for_each(|e| cache.apply(e));
            }
        }
        // A snapshot replaced the store: the copy is rebuilt from it.
        AppliedEvent::Reset { .. } => *cache = None,
    }
}

fn action_op(action: Action, store: &StoreHandle, now: u64) -> Option<Op> {
    match action {
        Action::Create(object) => {
            let key = objects::key_of(&object);
            Some(Op::Put { key, object: object.to_json(), precondition: Precondition::MustNotExist, uid: objects::new_uid() })
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
            match store.read(|s| resources::deletion(s, &key, now)) {
                Deletion::Graceful { object, revision: current } if current == revision => {
                    Some(Op::Put { key, object, precondition: Precondition::Revision(revision), uid: String::new() })
                }
                Deletion::Graceful { .. } | Deletion::Terminating { .. } => None,
                Deletion::Now { .. } => Some(Op::Delete { key, precondition: Precondition::Revision(revision) }),
            }
        }
        Action::Event { involved, reason, message, warning } => {
            Some(objects::event_op(involved, &reason, &message, warning, "flotilla-controller", now))
        }
    }
}

/// Bindings as compare-and-set writes of each Pod with its node set, and
/// unschedulable Pods' PodScheduled condition with an event when the
/// reason changes.
fn plan_ops(plan: &Plan, pods: &[Arc<Pod>], now: u64) -> Vec<Op> {
    let by_key: BTreeMap<(&str, &str), &Pod> =
        pods.iter().map(|p| ((p.metadata.namespace.as_str(), p.metadata.name.as_str()), &**p)).collect();
    let bound = plan.bindings.iter().filter_map(|b| {
        let pod = by_key.get(&(b.namespace.as_str(), b.name.as_str()))?;
        let message = format!("Successfully assigned {}/{} to {}", b.namespace, b.name, b.node);
        scheduling_ops(pod, Some(&b.node), &message, now)
    });
    let unschedulable = plan.unschedulable.iter().filter_map(|u| {
        let pod = by_key.get(&(u.namespace.as_str(), u.name.as_str()))?;
        scheduling_ops(pod, None, &u.message, now)
    });
    bound.chain(unschedulable).flatten().collect()
}

/// The Pod written back (compare-and-set on the revision the plan read)
/// bound to `node`, or marked unschedulable, with the matching event.
/// Nothing when an unschedulable Pod already says the same.
fn scheduling_ops(pod: &Pod, node: Option<&str>, message: &str, now: u64) -> Option<[Op; 2]> {
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
            objects::set_condition(&mut status.conditions, "PodScheduled", "True", "", "", now);
            ("Scheduled", false)
        }
        None => {
            if status.conditions.iter().any(|c| c.type_ == "PodScheduled" && c.message == message) {
                return None;
            }
            objects::set_condition(&mut status.conditions, "PodScheduled", "False", "Unschedulable", message, now);
            ("FailedScheduling", true)
        }
    };
    let put = Op::Put {
        key: objects::pod_key(pod),
        object: serde_json::to_string(&written).expect("API types serialize"),
        precondition: Precondition::Revision(revision),
        uid: String::new(),
    };
    let event = objects::event_op(objects::reference(&Object::Pod(pod.clone())), reason, message, warning, "flotilla-scheduler", now);
    Some([put, event])
}
