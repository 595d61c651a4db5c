//! The client API every peer serves: objects (put, delete, get, list,
//! watch) and cluster status and membership.

use openraft::Instant as _;
use openraft::async_runtime::WatchReceiver as _;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::api::cluster_client::ClusterClient;
use flotilla_proto::api::cluster_server::Cluster;
use flotilla_proto::api::objects_server::Objects;
use flotilla_proto::api::{
    ApplyAction, ApplyRequest, ApplyResponse, DeleteObjectRequest, DeleteObjectResponse, DeleteRequest,
    DeleteResponse, EventType as PbEventType, GetRequest, GetResponse, JoinRequest, JoinResponse, ListRequest,
    ListResponse, PeerStatus, PreconditionKind, PutRequest, PutResponse, StatusRequest, StatusResponse, WatchEvent,
    WatchRequest,
};
use flotilla_raft::membership::ClusterMembership;
use flotilla_raft::network::Channels;
use flotilla_raft::proposer::{LeaderLink, Proposer};
use flotilla_raft::{AppliedEvent, Raft, StoreHandle};
use flotilla_store::{Event, EventType, MAX_OBJECT_BYTES, ObjectKey, Op, OpResult, Precondition, ReadError, WriteError};
use futures::Stream;
use tokio::sync::{broadcast, mpsc, watch};
use tonic::{Request, Response, Status};

use flotilla_control::apply::{self, Applied, MAX_APPLY_ATTEMPTS};
use flotilla_control::delete::{self, Deletion, MAX_CASCADE_OBJECTS};
use flotilla_control::objects::{labels_of, new_uid, uid_of};

use flotilla_raft::proposer::ProposeError;

use crate::Random;
use crate::clock::Clock;

/// Events a watch replays from history per read of the store, so one slow
/// watcher never holds the state lock for long.
const WATCH_PAGE: usize = 1_000;
/// Events buffered per watch stream before the watcher waits.
const WATCH_BUFFER: usize = 256;
/// How long a linearizable read waits for this replica to catch up.
const READ_CATCH_UP: Duration = Duration::from_secs(5);

/// The Objects service, with what it needs of the peer.
pub struct ObjectsService {
    pub store: StoreHandle,
    pub proposer: Proposer,
    pub link: LeaderLink,
    pub clock: Arc<dyn Clock>,
    pub closing: watch::Receiver<bool>,
}

/// The Cluster service, with what it needs of the peer.
pub struct ClusterService {
    pub id: u64,
    pub raft: Raft,
    pub store: StoreHandle,
    pub link: LeaderLink,
    pub channels: Channels,
    pub membership: Arc<ClusterMembership>,
    pub max_voters: u32,
    /// Silence after which another peer shows as unreachable.
    pub silence_limit: Duration,
}

fn key_from(key: Option<flotilla_proto::api::ObjectKey>) -> Result<ObjectKey, Status> {
    let k = key.ok_or_else(|| Status::invalid_argument("key: required"))?;
    let key = ObjectKey::new(k.kind, k.namespace, k.name);
    key.validate().map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(key)
}

fn precondition_from(p: Option<flotilla_proto::api::Precondition>) -> Result<Precondition, Status> {
    let Some(p) = p else { return Ok(Precondition::None) };
    match PreconditionKind::try_from(p.kind) {
        Ok(PreconditionKind::None) => Ok(Precondition::None),
        Ok(PreconditionKind::MustNotExist) => Ok(Precondition::MustNotExist),
        Ok(PreconditionKind::MustExist) => Ok(Precondition::MustExist),
        Ok(PreconditionKind::Revision) if p.revision > 0 => Ok(Precondition::Revision(p.revision)),
        Ok(PreconditionKind::Revision) => Err(Status::invalid_argument("precondition.revision: required for REVISION")),
        Err(_) => Err(Status::invalid_argument(format!("precondition.kind: unknown value {}", p.kind))),
    }
}

fn propose_status(e: ProposeError) -> Status {
    match e {
        ProposeError::Busy => Status::resource_exhausted(e.to_string()),
        ProposeError::Indeterminate(_) => Status::unknown(e.to_string()),
        ProposeError::NoLeader | ProposeError::ShuttingDown | ProposeError::NotLeader => Status::unavailable(e.to_string()),
    }
}

fn write_status(e: WriteError) -> Status {
    match &e {
        WriteError::AlreadyExists { .. } => Status::already_exists(e.to_string()),
        WriteError::NotFound { .. } => Status::not_found(e.to_string()),
        WriteError::Conflict { .. } => Status::aborted(e.to_string()),
        WriteError::Invalid { .. } => Status::invalid_argument(e.to_string()),
    }
}

fn read_status(e: ReadError) -> Status {
    Status::out_of_range(e.to_string())
}

impl ObjectsService {
    /// Deletes one object and returns its uid. A Pod that may be running
    /// on a live node is deleted gracefully, as Kubernetes does: it gets a
    /// deletionTimestamp, its node stops it within its grace period and
    /// then removes it, so its name (a StatefulSet ordinal) is free only
    /// once nothing runs under it.
    async fn delete_one(&self, key: &ObjectKey) -> Result<(String, u64), Status> {
        for attempt in 0..MAX_APPLY_ATTEMPTS {
            if attempt > 0 {
                // The object changed under us: judge it again on state at
                // least as new as the write that beat us.
                self.read_barrier(false).await?;
            }
            let now = self.clock.now_unix_ms();
            let op = match self.store.read(|s| delete::deletion(s, key, now)) {
                Deletion::Graceful { object, revision } => {
                    Op::Put { key: key.clone(), object, precondition: Precondition::Revision(revision), uid: String::new() }
                }
                Deletion::Terminating { uid, revision } => return Ok((uid, revision)),
                Deletion::Now { revision } => Op::Delete {
                    key: key.clone(),
                    precondition: revision.map_or(Precondition::MustExist, Precondition::Revision),
                },
            };
            match self.write(op).await {
                Ok(r) => return Ok((uid_of(&r.object), r.revision)),
                Err(s) if s.code() == tonic::Code::Aborted => continue,
                Err(s) => return Err(s),
            }
        }
        Err(Status::aborted(format!("{key} kept changing while it was deleted; try again")))
    }

    async fn write(&self, op: Op) -> Result<OpResult, Status> {
        let mut results = self.proposer.propose(vec![op]).await.map_err(propose_status)?;
        results.pop().expect("one result per op").map_err(write_status)
    }

    /// Makes the next local read linearizable: learns the leader's commit
    /// index through a quorum-confirmed ReadIndex and waits until this
    /// replica has applied it.
    async fn read_barrier(&self, stale: bool) -> Result<(), Status> {
        if stale {
            return Ok(());
        }
        let index = self.link.read_index().await.map_err(propose_status)?;
        tokio::time::timeout(READ_CATCH_UP, self.store.wait_applied(index))
            .await
            .map_err(|_| Status::unavailable(format!("this peer has not caught up to index {index}; try another peer or --stale")))
    }
}

#[tonic::async_trait]
impl Objects for ObjectsService {
    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = request.into_inner();
        let key = key_from(req.key)?;
        if req.object_json.len() > MAX_OBJECT_BYTES {
            return Err(Status::invalid_argument(format!(
                "{key}: object is {} bytes, over the limit of {MAX_OBJECT_BYTES} bytes",
                req.object_json.len()
            )));
        }
        let precondition = precondition_from(req.precondition)?;
        let op = Op::Put { key, object: req.object_json, precondition, uid: new_uid(&Random) };
        let r = self.write(op).await?;
        Ok(Response::new(PutResponse { object_json: r.object, revision: r.revision }))
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let req = request.into_inner();
        let op = Op::Delete { key: key_from(req.key)?, precondition: precondition_from(req.precondition)? };
        let r = self.write(op).await?;
        Ok(Response::new(DeleteResponse { object_json: r.object, revision: r.revision }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let req = request.into_inner();
        let key = key_from(req.key)?;
        self.read_barrier(req.stale).await?;
        let (object, revision) = self.store.read(|s| (s.get(&key).map(|o| o.json.to_string()), s.revision()));
        let object = object.ok_or_else(|| Status::not_found(format!("{key} not found")))?;
        Ok(Response::new(GetResponse { object_json: object, revision }))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let req = request.into_inner();
        if req.kind.is_empty() {
            return Err(Status::invalid_argument("kind: required"));
        }
        let selector = if req.label_selector.is_empty() {
            None
        } else {
            Some(flotilla_api::meta::parse_selector(&req.label_selector).map_err(Status::invalid_argument)?)
        };
        self.read_barrier(req.stale).await?;
        let namespace = (!req.all_namespaces).then_some(req.namespace.as_str());
        let listed = self.store.read(|s| s.list(&req.kind, namespace, req.revision)).map_err(read_status)?;
        let items_json = listed
            .items
            .into_iter()
            .map(|(_, o)| o.json.to_string())
            .filter(|json| selector.as_ref().is_none_or(|sel| sel.matches(&labels_of(json))))
            .collect();
        Ok(Response::new(ListResponse { items_json, revision: listed.revision }))
    }

    async fn apply(&self, request: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        let req = request.into_inner();
        if req.object_json.len() > MAX_OBJECT_BYTES {
            return Err(Status::invalid_argument(format!(
                "object is {} bytes, over the limit of {MAX_OBJECT_BYTES} bytes",
                req.object_json.len()
            )));
        }
        let prepared = apply::prepare(&req.object_json, &req.namespace, req.warn_unknown_fields, &Random)
            .map_err(Status::invalid_argument)?;
        let key = prepared.key.clone();
        let reply = |object_json, revision, action: ApplyAction| {
            Response::new(ApplyResponse { object_json, revision, action: action as i32, warnings: prepared.warnings.clone() })
        };
        for _ in 0..MAX_APPLY_ATTEMPTS {
            self.read_barrier(false).await?;
            let live = self.store.read(|s| s.get(&key).cloned());
            let applied = apply::merge(&prepared, live.as_ref(), req.create_only).map_err(|e| Status::already_exists(e.to_string()))?;
            let (object, precondition, created) = match applied {
                Applied::Unchanged { object, revision } => return Ok(reply(object, revision, ApplyAction::Unchanged)),
                Applied::Write { object, precondition, created } => (object, precondition, created),
            };
            let action = if created { ApplyAction::Created } else { ApplyAction::Configured };
            if req.dry_run {
                return Ok(reply(object, 0, action));
            }
            let op = Op::Put { key: key.clone(), object, precondition, uid: new_uid(&Random) };
            match self.write(op).await {
                Ok(r) => return Ok(reply(r.object, r.revision, action)),
                // Someone changed it between the read and the write: merge again.
                Err(s) if s.code() == tonic::Code::Aborted || (s.code() == tonic::Code::AlreadyExists && !req.create_only) => {}
                Err(s) => return Err(s),
            }
        }
        Err(Status::aborted(format!("{key} kept changing while it was applied; try again")))
    }

    async fn delete_object(&self, request: Request<DeleteObjectRequest>) -> Result<Response<DeleteObjectResponse>, Status> {
        let req = request.into_inner();
        let first = key_from(req.key)?;
        self.read_barrier(false).await?;
        let mut queue = std::collections::VecDeque::from([first.clone()]);
        let mut deleted = Vec::new();
        let mut revision = 0;
        while let Some(key) = queue.pop_front() {
            if deleted.len() >= MAX_CASCADE_OBJECTS {
                return Err(Status::resource_exhausted(format!(
                    "cascade from {first} reached {} objects; deleted so far: {}",
                    deleted.len(),
                    deleted.iter().map(|k: &ObjectKey| k.to_string()).collect::<Vec<_>>().join(", ")
                )));
            }
            // The uid as this replica knows it: the garbage collector may
            // remove a dependent first, and what that one owned must still
            // be found and waited for.
            let known_uid = self.store.read(|s| s.get(&key).map(|o| uid_of(&o.json)));
            let uid = match self.delete_one(&key).await {
                Ok((uid, r)) => {
                    revision = r;
                    deleted.push(key.clone());
                    uid
                }
                Err(s) if s.code() == tonic::Code::NotFound && key != first => match known_uid {
                    Some(uid) => uid,
                    None => continue,
                },
                Err(s) => return Err(s),
            };
            if req.cascade {
                queue.extend(self.store.read(|s| delete::owned_by(s, &key.namespace, &uid)));
            }
        }
        Ok(Response::new(DeleteObjectResponse {
            deleted: deleted
                .into_iter()
                .map(|k| flotilla_proto::api::ObjectKey { kind: k.kind, namespace: k.namespace, name: k.name })
                .collect(),
            revision,
        }))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        if req.kind.is_empty() {
            return Err(Status::invalid_argument("kind: required"));
        }
        let filter = WatchFilter {
            kind: req.kind,
            namespace: (!req.all_namespaces).then_some(req.namespace),
        };
        let from = (req.from_revision > 0).then_some(req.from_revision);
        let (first_page, live, current) = self.store.subscribe(from, WATCH_PAGE);
        let first_page = first_page.map_err(read_status)?;
        let start = from.unwrap_or(current);
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut w = Watcher { filter, tx, last: start, store };
            w.run(first_page, live).await;
        });
        let events = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(flotilla_raft::until_closing(&self.closing, events))))
    }
}

struct WatchFilter {
    kind: String,
    namespace: Option<String>,
}

impl WatchFilter {
    fn matches(&self, key: &ObjectKey) -> bool {
        key.kind == self.kind && self.namespace.as_ref().is_none_or(|ns| key.namespace == *ns)
    }
}

/// Feeds one watch stream: history first, then live events, falling back
/// to history whenever it lags behind the live channel. `last` is the
/// revision of the last event looked at, so every event is sent once.
struct Watcher {
    filter: WatchFilter,
    tx: mpsc::Sender<Result<WatchEvent, Status>>,
    last: u64,
    store: flotilla_raft::StoreHandle,
}

enum Flow {
    Continue,
    Stop,
}

impl Watcher {
    async fn run(&mut self, first_page: Vec<Event>, mut live: broadcast::Receiver<AppliedEvent>) {
        let mut page = first_page;
        // Replay history in pages until it is exhausted.
        loop {
            let full = page.len() == WATCH_PAGE;
            if let Flow::Stop = self.send_all(&page).await {
                return;
            }
            if !full {
                break;
            }
            match self.store.read(|s| s.events_after(self.last, WATCH_PAGE)) {
                Ok(p) => page = p,
                Err(e) => return self.fail(read_status(e)).await,
            }
        }
        loop {
            let received = tokio::select! {
                r = live.recv() => r,
                _ = self.tx.closed() => return,
            };
            match received {
                Ok(AppliedEvent::Changes(events)) => {
                    if let Flow::Stop = self.send_all(&events).await {
                        return;
                    }
                }
                Ok(AppliedEvent::Reset { revision }) => {
                    return self
                        .fail(Status::out_of_range(format!(
                            "this replica installed a snapshot at revision {revision}: list again and watch from there"
                        )))
                        .await;
                }
                Err(broadcast::error::RecvError::Lagged(_)) => loop {
                    match self.store.read(|s| s.events_after(self.last, WATCH_PAGE)) {
                        Ok(p) if p.is_empty() => break,
                        Ok(p) => {
                            if let Flow::Stop = self.send_all(&p).await {
                                return;
                            }
                        }
                        Err(e) => return self.fail(read_status(e)).await,
                    }
                },
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    async fn send_all(&mut self, events: &[Event]) -> Flow {
        for e in events {
            if e.revision <= self.last {
                continue;
            }
            debug_assert_eq!(e.revision, self.last + 1, "events arrive in consecutive revisions");
            self.last = e.revision;
            if !self.filter.matches(&e.key) {
                continue;
            }
            let event_type = match e.event_type {
                EventType::Added => PbEventType::Added,
                EventType::Modified => PbEventType::Modified,
                EventType::Deleted => PbEventType::Deleted,
            };
            let msg = WatchEvent { r#type: event_type as i32, object_json: e.object.to_string(), revision: e.revision };
            if self.tx.send(Ok(msg)).await.is_err() {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    async fn fail(&self, status: Status) {
        let _ = self.tx.send(Err(status)).await;
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let local = request.into_inner().local;
        if !local
            && let Some((leader, addr)) = self.link.leader().await
            && leader != self.id
            && let Ok(channel) = self.channels.get(&addr)
        {
            let mut req = Request::new(StatusRequest { local: true });
            req.set_timeout(Duration::from_secs(2));
            if let Ok(r) = ClusterClient::new(channel).status(req).await {
                return Ok(r);
            }
        }
        Ok(Response::new(self.local_status()))
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let req = request.into_inner();
        if req.id == 0 {
            return Err(Status::invalid_argument("id: must be at least 1"));
        }
        if req.addr.is_empty() {
            return Err(Status::invalid_argument("addr: required"));
        }
        if req.incarnation.is_empty() {
            return Err(Status::invalid_argument("incarnation: required"));
        }
        let (leader, addr) = self.link.leader().await.ok_or_else(|| Status::unavailable("no leader yet"))?;
        if leader == self.id {
            self.membership
                .add_learner(&self.raft, req.id, req.addr, req.incarnation)
                .await
                .map_err(|e| Status::unavailable(format!("adding peer failed: {e}")))?;
            return Ok(Response::new(JoinResponse { leader }));
        }
        let channel = self.channels.get(&addr).map_err(|e| Status::unavailable(e.to_string()))?;
        ClusterClient::new(channel).join(Request::new(req)).await
    }
}

impl ClusterService {
    /// This peer's view of the cluster. On the leader it includes how far
    /// each peer has replicated and when it last answered.
    fn local_status(&self) -> StatusResponse {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let learners: Vec<u64> = membership.learner_ids().collect();
        let leader = m.current_leader;
        let silence_limit = self.silence_limit;
        let peers: Vec<PeerStatus> = membership
            .nodes()
            .map(|(&id, node)| {
                let voter = voters.contains(&id);
                let matched = m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map(|l| l.index);
                let acked = m.heartbeat.as_ref().and_then(|h| h.get(&id).cloned().flatten()).map(|at| at.elapsed());
                let state = if Some(id) == leader {
                    "leader".to_string()
                } else if id == self.id {
                    match m.state {
                        openraft::ServerState::Candidate => "candidate".into(),
                        openraft::ServerState::Learner => "learner".into(),
                        openraft::ServerState::Shutdown => "shutdown".into(),
                        _ if voter => "follower".into(),
                        _ => "learner".into(),
                    }
                } else if m.heartbeat.is_some() && acked.is_none_or(|a| a > silence_limit) {
                    "unreachable".into()
                } else if voter {
                    "follower".into()
                } else {
                    "learner".into()
                };
                PeerStatus {
                    id,
                    addr: node.addr.clone(),
                    state,
                    voter,
                    matched_index: if id == self.id { m.last_log_index.unwrap_or(0) } else { matched.unwrap_or(0) },
                    last_ack_ms: if id == self.id { 0 } else { acked.map_or(-1, |a| a.as_millis() as i64) },
                    incarnation: node.incarnation.clone(),
                }
            })
            .collect();
        let down = peers.iter().filter(|p| p.voter && p.state == "unreachable").map(|p| p.id).collect();
        StatusResponse {
            cluster_id: self.membership.cluster_id(),
            answered_by: self.id,
            leader: leader.unwrap_or(0),
            has_leader: leader.is_some(),
            term: m.current_term,
            commit_index: [&m.local_committed, &m.cluster_committed].iter().filter_map(|c| c.as_ref().map(|l| l.index)).max().unwrap_or(0),
            last_applied: m.last_applied.map_or(0, |l| l.index),
            revision: self.store.read(|s| s.revision()),
            voters,
            learners,
            peers,
            max_voters: self.max_voters,
            failures_tolerated: flotilla_fence::failures_tolerated(membership.get_joint_config(), &down),
        }
    }
}
