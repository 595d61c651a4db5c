//! The leader's control loop: rounds of the pure control plane
//! ([`flotilla_control::round`]) driven over the local replica.
//!
//! Only the Raft leader runs a round. A round reads the applied state and
//! the heartbeat table, asks the control plane what should change, and
//! proposes its compare-and-set writes. Rounds run on every applied change
//! and on a timer for the node timers, never more often than
//! `MIN_ROUND_INTERVAL`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
// Tokio's clock, so paused or simulated time drives the leader's timers too.
use tokio::time::Instant;

use flotilla_control::round::{self, RoundInput};
use flotilla_control::view::ViewCache;
use flotilla_controllers::NodeTiming;
use flotilla_fence::{Heartbeats, LeaderView, Reading, Refused, lease};
use flotilla_raft::proposer::LeaderLink;
use flotilla_raft::{AppliedEvent, Raft, StoreHandle};
use flotilla_store::Command;
use openraft::Instant as _;
use openraft::async_runtime::WatchReceiver as _;
use tokio::sync::{broadcast, watch};

use crate::clock::Clock;
use crate::config::Timing;
use crate::{Random, changes};

/// Rounds are at least this far apart, so a burst of changes makes one
/// round, not one per change.
const MIN_ROUND_INTERVAL: Duration = Duration::from_millis(10);
/// How often expired Events are looked for.
const EVENT_EXPIRY_INTERVAL: Duration = Duration::from_secs(10);
/// Ops in one proposal: bounds the log entry and the time it holds the
/// state machine.
pub const MAX_OPS_PER_PROPOSAL: usize = 512;

/// The leader's side of node heartbeats: its table of answered heartbeats
/// (see [`flotilla_fence::heartbeats`]), shared by the heartbeat service,
/// this peer's own node and the rounds.
///
/// Times are monotonic, so a wall-clock step on the leader cannot make a
/// node look silent; they are turned into wall-clock milliseconds only
/// for the pure lifecycle controller, relative to one reading.
pub struct Liveness {
    id: u64,
    raft: Raft,
    /// How long a quorum's acknowledgement proves the lease (see
    /// [`flotilla_fence::lease`]).
    lease: Duration,
    table: Mutex<Heartbeats>,
}

impl Liveness {
    pub fn new(id: u64, raft: Raft, lease: Duration) -> Self {
        Liveness { id, raft, lease, table: Mutex::new(Heartbeats::default()) }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Heartbeats> {
        self.table.lock().expect("liveness lock")
    }

    /// Answers `node`'s heartbeat with this leader's term, only while this
    /// peer leads with a lease it can prove, so no node is told "keep
    /// running" by a deposed leader, and not while the node is being
    /// declared lost.
    pub fn answer(&self, node: &str) -> Result<u64, String> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let view = LeaderView {
            me: self.id,
            leader: metrics.current_leader,
            voters: metrics.membership_config.membership().voter_ids().collect(),
            quorum_acked_ago: metrics.last_quorum_acked.map(|at| at.elapsed()),
        };
        lease(&view, self.lease).map_err(|e| e.to_string())?;
        self.table().accept(metrics.current_term, node, Instant::now().into_std()).map_err(|e: Refused| e.to_string())?;
        Ok(metrics.current_term)
    }

    /// The term this peer leads in, if it leads; a new term starts the
    /// table afresh.
    fn set_leading(&self) -> Option<Instant> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let leading_term = (metrics.current_leader == Some(self.id)).then_some(metrics.current_term);
        self.table().set_leading(leading_term, Instant::now().into_std()).map(Instant::from_std)
    }

    fn read(&self) -> Reading {
        self.table().read()
    }
}

/// What the leader's rounds need.
pub struct Leader {
    pub store: StoreHandle,
    pub link: LeaderLink,
    pub liveness: Arc<Liveness>,
    pub timing: Timing,
    pub clock: Arc<dyn Clock>,
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
pub async fn run(leader: Leader, mut stop: watch::Receiver<bool>) {
    let Leader { store, link, liveness, timing, clock } = leader;
    let node_timing = NodeTiming {
        not_ready_after_ms: timing.not_ready_after_ms,
        lost_after_ms: timing.lost_after_ms,
        leader_grace_ms: timing.lost_after_ms,
    };
    let tick = Duration::from_millis(timing.node_heartbeat_ms);
    let (_, mut events, _) = store.subscribe(None, 0);
    // Decoded objects, kept only while this peer leads: a follower has no
    // use for them.
    let mut cache: Option<ViewCache> = None;
    let mut rounds: u64 = 0;
    let mut events_expired_at = Instant::now();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(tick) => {}
            // Events change nothing a round decides on, and the events a
            // round writes would otherwise wake the next one. Every event
            // keeps the decoded copy current on the way; missed ones drop it.
            changed = changes::next_change(&mut events, |kind| kind != "Event", |event| match event {
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
        let now = clock.now_unix_ms().max(store.read(|s| s.time_unix_ms()));
        let Some(leader_since) = liveness.set_leading() else {
            cache = None;
            continue;
        };
        let leader_since = unix_ms_of(leader_since, now);
        let view = cache.get_or_insert_with(|| store.read(ViewCache::load)).cluster_view(now);
        rounds += 1;
        let reading = liveness.read();
        let heartbeats = heartbeats_unix_ms(&reading, now);
        let input = RoundInput { view: &view, heartbeats: &heartbeats, timing: &node_timing, leader_since, round: rounds };
        let round::Round { mut ops, lost } = round::plan(&input, &Random);
        // A node answered since the reading may already be catching up to
        // an index before this declaration: decide again on a fresh one.
        if !lost.is_empty()
            && let Err(answered) = liveness.table().declare_lost(&reading, &lost)
        {
            tracing::debug!(?answered, "nodes answered while this round declared them lost; deciding again");
            continue;
        }
        // Events are many and change nothing else: expired on a timer of
        // their own rather than decoded every round.
        if events_expired_at.elapsed() >= EVENT_EXPIRY_INTERVAL {
            events_expired_at = Instant::now();
            let events: Vec<flotilla_api::cluster::Event> =
                store.read(|s| flotilla_control::objects::decode_all(s, flotilla_api::Kind::Event));
            ops.extend(round::expire_events(&events, now, MAX_OPS_PER_PROPOSAL, &Random));
        }
        // A round's writes are independent compare-and-sets decided on one
        // view, so its proposals go out together and share fsyncs rather
        // than each waiting for the one before to commit.
        let written = futures::future::join_all(ops.chunks(MAX_OPS_PER_PROPOSAL).map(|chunk| {
            link.write_here(Command { time_unix_ms: clock.now_unix_ms(), ops: chunk.to_vec() })
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
        liveness.table().declared(&lost);
        // Changes that arrive meanwhile (this round's own writes among
        // them) wake the next round at once.
        tokio::time::sleep(MIN_ROUND_INTERVAL).await;
    }
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
