//! The server side of peer-to-peer traffic: Raft RPCs, snapshot streams,
//! forwarded writes and read indexes, and the bootstrap handshake.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use flotilla_proto::raft::raft_transport_server::RaftTransport;
use flotilla_proto::raft::{HelloReply, HelloRequest, RaftReply, RaftRequest, SnapshotChunk};
use crate::codec::{decode, encode};
use crate::{Raft, Snapshot, SnapshotMeta, Vote};
use flotilla_store::Command;
use futures::StreamExt;
use futures::stream::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use crate::membership::ClusterMembership;
use crate::until_closing;
use crate::proposer::{LeaderLink, Proposer};

/// Largest snapshot a peer accepts. The store's objects are bounded in size
/// and the state is held in memory anyway; this catches a runaway sender.
const MAX_SNAPSHOT_BYTES: usize = 8 << 30;

pub struct TransportService {
    pub raft: Raft,
    pub link: LeaderLink,
    /// Forwarded batches join the leader's own: one entry for all of them.
    pub proposer: Proposer,
    pub membership: Arc<ClusterMembership>,
    check: ClusterCheck,
    /// Set when this peer begins to shut down: replication streams end then.
    closing: tokio::sync::watch::Receiver<bool>,
}

impl TransportService {
    pub fn new(
        raft: Raft,
        link: LeaderLink,
        proposer: Proposer,
        membership: Arc<ClusterMembership>,
        closing: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let check = ClusterCheck {
            channels: link.channels.clone(),
            membership: membership.clone(),
            warned: Arc::new(AtomicBool::new(false)),
        };
        Self { raft, link, proposer, membership, check, closing }
    }

    fn check_cluster(&self, cluster_id: &str, to_incarnation: &str) -> Result<(), Status> {
        self.check.check(cluster_id, to_incarnation)
    }
}

/// Decides whether a message from another peer may be taken in: not while
/// this peer is cut off (fault injection), never from another cluster, and
/// never when it is meant for the peer whose data directory this one
/// replaced.
/// Cloned into a long-lived stream, which checks every message it carries.
#[derive(Clone)]
struct ClusterCheck {
    channels: crate::network::Channels,
    membership: Arc<ClusterMembership>,
    /// Warn once about a refused sender rather than on every heartbeat.
    warned: Arc<AtomicBool>,
}

impl ClusterCheck {
    fn check(&self, cluster_id: &str, to_incarnation: &str) -> Result<(), Status> {
        if self.channels.isolated() {
            return Err(Status::unavailable("this peer is cut off from the others (fault injection)"));
        }
        // The incarnation first, before the cluster id is adopted: a wiped
        // peer must not join the cluster as the member it was.
        let accepted = self
            .membership
            .check_incarnation(to_incarnation)
            .and_then(|()| self.membership.accept_cluster(cluster_id));
        match accepted {
            Ok(()) => Ok(()),
            Err(e) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::error!("refusing Raft traffic: {e}");
                }
                Err(Status::failed_precondition(e.to_string()))
            }
        }
    }
}

fn reply<T: serde::Serialize>(value: &T) -> Result<Response<RaftReply>, Status> {
    Ok(Response::new(RaftReply { payload: encode(value) }))
}

fn bad_payload(e: std::io::Error) -> Status {
    Status::invalid_argument(format!("undecodable Raft message: {e}"))
}

#[tonic::async_trait]
impl RaftTransport for TransportService {
    async fn append_entries(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        self.check_cluster(&req.cluster_id, &req.to_incarnation)?;
        let rpc = decode(&req.payload).map_err(bad_payload)?;
        reply(&self.raft.append_entries(rpc).await)
    }

    type AppendStreamStream = BoxStream<'static, Result<RaftReply, Status>>;

    /// Feeds the leader's appends to Raft as they arrive and answers each,
    /// in order, once it is durable here. A message that cannot be taken in
    /// (cut off, another cluster, undecodable) ends the stream with its
    /// error after the answers to the appends before it.
    async fn append_stream(
        &self,
        request: Request<Streaming<RaftRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        // Both halves end when this peer begins to shut down: the request
        // half is what keeps the stream open for the server.
        let incoming = until_closing(&self.closing, request.into_inner());
        let check = self.check.clone();
        let refusal: Arc<std::sync::Mutex<Option<Status>>> = Arc::default();
        let appends = incoming
            .map(move |message| {
                let request = message?;
                check.check(&request.cluster_id, &request.to_incarnation)?;
                decode(&request.payload).map_err(bad_payload)
            })
            .scan(refusal.clone(), |refusal, append| {
                std::future::ready(match append {
                    Ok(append) => Some(append),
                    Err(status) => {
                        *refusal.lock().expect("refusal lock") = Some(status);
                        None
                    }
                })
            });
        let answers = self.raft.stream_append(appends).map(|answer| match answer {
            Ok(result) => Ok(RaftReply { payload: encode(&result) }),
            Err(fatal) => Err(Status::unavailable(format!("Raft has stopped on this peer: {fatal}"))),
        });
        let last = futures::stream::once(async move { refusal.lock().expect("refusal lock").take() })
            .filter_map(|refusal| std::future::ready(refusal.map(Err)));
        Ok(Response::new(Box::pin(until_closing(&self.closing, answers.chain(last)))))
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        self.check_cluster(&req.cluster_id, &req.to_incarnation)?;
        let rpc = decode(&req.payload).map_err(bad_payload)?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn pre_vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        self.check_cluster(&req.cluster_id, &req.to_incarnation)?;
        let rpc = decode(&req.payload).map_err(bad_payload)?;
        reply(&self.raft.pre_vote(rpc).await)
    }

    async fn install_snapshot(&self, request: Request<Streaming<SnapshotChunk>>) -> Result<Response<RaftReply>, Status> {
        let mut stream = request.into_inner();
        let first = stream.next().await.ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        self.check_cluster(&first.cluster_id, &first.to_incarnation)?;
        let (vote, meta): (Vote, SnapshotMeta) = decode(&first.header).map_err(bad_payload)?;
        let mut data = first.data;
        let mut done = first.done;
        while !done {
            let chunk = stream.next().await.ok_or_else(|| Status::aborted("snapshot stream ended early"))??;
            if data.len() + chunk.data.len() > MAX_SNAPSHOT_BYTES {
                return Err(Status::resource_exhausted(format!("snapshot over {MAX_SNAPSHOT_BYTES} bytes")));
            }
            data.extend_from_slice(&chunk.data);
            done = chunk.done;
        }
        tracing::info!(bytes = data.len(), last_log_id = ?meta.last_log_id, "installing snapshot");
        let snapshot = Snapshot { meta, snapshot: std::io::Cursor::new(data) };
        reply(&self.raft.install_full_snapshot(vote, snapshot).await)
    }

    async fn propose(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        self.check_cluster(&req.cluster_id, &req.to_incarnation)?;
        // The follower's timestamp is dropped: the entry is stamped by the
        // leader's clock, with the other writes it shares the entry with.
        let command: Command = decode(&req.payload).map_err(bad_payload)?;
        reply(&self.proposer.propose_forwarded(command.ops).await)
    }

    async fn read_index(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        self.check_cluster(&req.cluster_id, &req.to_incarnation)?;
        let scope = decode(&req.payload).map_err(bad_payload)?;
        reply(&self.link.read_index_here(scope).await)
    }

    async fn hello(&self, _request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        if self.link.channels.isolated() {
            return Err(Status::unavailable("this peer is cut off from the others (fault injection)"));
        }
        let initialized = self.raft.is_initialized().await.unwrap_or(false);
        Ok(Response::new(HelloReply {
            peer_id: *self.raft.node_id(),
            cluster_id: self.membership.cluster_id(),
            initialized,
            incarnation: self.membership.incarnation().to_string(),
        }))
    }
}
