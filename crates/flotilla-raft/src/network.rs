//! The Raft transport's client side over tonic. Raft messages travel as
//! bincode inside the `RaftTransport` service; replication as one
//! bidirectional stream per follower, so that the leader need not wait for
//! one batch's answer before sending the next; snapshots as a client stream
//! of bounded chunks.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use openraft::base::{BoxFuture, BoxStream};
use openraft::raft::StreamAppendResult;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use flotilla_proto::raft::raft_transport_client::RaftTransportClient;
use flotilla_proto::raft::{RaftRequest, SnapshotChunk};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use crate::codec::{decode, encode};
use crate::{NodeId, PeerNode, Snapshot, SnapshotData, TypeConfig, Vote};

type RaftError = openraft::error::RaftError<TypeConfig>;

/// Largest gRPC message a peer accepts from another peer. Append batches are
/// bounded by openraft's `max_payload_entries`; this is the backstop.
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 << 20;

/// AppendEntries sent on a replication stream and not yet answered. Each
/// may carry up to `max_payload_entries`; the bound keeps a slow follower
/// from making the leader buffer its whole log.
const MAX_APPENDS_IN_FLIGHT: usize = 8;

/// The cluster this peer belongs to, once known. Every request carries it so
/// that peers of different clusters never exchange Raft traffic.
#[derive(Clone, Default, Debug)]
pub struct ClusterIdentity {
    id: Arc<RwLock<String>>,
}

impl ClusterIdentity {
    pub fn new(id: String) -> Self {
        Self { id: Arc::new(RwLock::new(id)) }
    }

    pub fn get(&self) -> String {
        self.id.read().expect("cluster id lock").clone()
    }

    pub fn set(&self, id: String) {
        *self.id.write().expect("cluster id lock") = id;
    }
}

/// Turns an endpoint into a lazily connecting channel: over the operating
/// system's TCP for real peers, over the simulated network in the simulator.
pub type ChannelMaker = Arc<dyn Fn(Endpoint) -> Channel + Send + Sync>;

/// Opens (lazily) and caches one HTTP/2 channel per peer address.
#[derive(Clone, Default)]
pub struct Channels {
    cache: Arc<Mutex<HashMap<String, Channel>>>,
    /// Set by fault injection: every call to another peer fails as if the
    /// network were cut, so a partition can be tested on one machine.
    isolated: Arc<AtomicBool>,
    /// `None`: tonic's own TCP connector.
    maker: Option<ChannelMaker>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("bad peer address {addr:?}: {source}")]
    BadAddress { addr: String, source: tonic::transport::Error },
    #[error("this peer is cut off from the others (fault injection)")]
    Isolated,
}

impl Channels {
    /// Channels made by `maker` instead of tonic's TCP connector.
    pub fn with_maker(maker: ChannelMaker) -> Self {
        Self { maker: Some(maker), ..Self::default() }
    }

    /// Cuts this peer off from the others (`true`) or reconnects it.
    pub fn set_isolated(&self, isolated: bool) {
        self.isolated.store(isolated, Ordering::SeqCst);
    }

    pub fn isolated(&self) -> bool {
        self.isolated.load(Ordering::SeqCst)
    }

    pub fn get(&self, addr: &str) -> Result<Channel, ChannelError> {
        if self.isolated() {
            return Err(ChannelError::Isolated);
        }
        let mut cache = self.cache.lock().expect("channel cache lock");
        if let Some(c) = cache.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|source| ChannelError::BadAddress { addr: addr.to_string(), source })?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = match &self.maker {
            Some(make) => make(endpoint),
            None => endpoint.connect_lazy(),
        };
        cache.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

#[derive(Clone)]
pub struct NetworkFactory {
    pub identity: ClusterIdentity,
    pub channels: Channels,
    pub snapshot_chunk_bytes: usize,
    /// The least time a follower has to answer an append on a replication
    /// stream. openraft allows one heartbeat interval, which a follower
    /// catching up on a slow or busy disk can exceed on every batch: its
    /// stream would fail and restart forever, and it would never catch up.
    pub min_append_answer: Duration,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> Self::Network {
        PeerClient {
            target,
            addr: node.addr.clone(),
            incarnation: node.incarnation.clone(),
            channels: self.channels.clone(),
            identity: self.identity.clone(),
            snapshot_chunk_bytes: self.snapshot_chunk_bytes,
            min_append_answer: self.min_append_answer,
        }
    }
}

/// The unary Raft RPCs, which share one encoding and error mapping.
enum Unary {
    AppendEntries,
    Vote,
    PreVote,
}

pub struct PeerClient {
    target: NodeId,
    addr: String,
    /// The target's data directory as the membership records it: sent with
    /// every message, so that a wiped peer refuses instead of answering.
    incarnation: String,
    /// Asked on every call, so that cutting the peer off (fault injection)
    /// takes effect at once. A bad address fails every call as
    /// unreachable, which openraft retries with back-off.
    channels: Channels,
    identity: ClusterIdentity,
    snapshot_chunk_bytes: usize,
    min_append_answer: Duration,
}

fn unreachable<E: std::error::Error + 'static>(e: &E) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(e))
}

fn status_error(target: NodeId, addr: &str, status: tonic::Status) -> RPCError<TypeConfig> {
    let msg = format!("peer {target} at {addr}: {}", status.message());
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::FailedPrecondition | tonic::Code::DeadlineExceeded => {
            RPCError::Unreachable(Unreachable::from_string(msg))
        }
        _ => RPCError::Network(NetworkError::from_string(msg)),
    }
}

impl PeerClient {
    fn client(&self) -> Result<RaftTransportClient<Channel>, RPCError<TypeConfig>> {
        let channel = self.channels.get(&self.addr).map_err(|e| unreachable(&e))?;
        Ok(RaftTransportClient::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES))
    }

    /// `payload` addressed as every message to the target is: from this
    /// cluster, to the incarnation the membership records.
    fn envelope(&self, payload: Vec<u8>) -> RaftRequest {
        RaftRequest { cluster_id: self.identity.get(), payload, to_incarnation: self.incarnation.clone() }
    }

    fn request<T: serde::Serialize>(&self, body: &T, ttl: Duration) -> tonic::Request<RaftRequest> {
        let mut req = tonic::Request::new(self.envelope(encode(body)));
        req.set_timeout(ttl);
        req
    }

    async fn call<Req: serde::Serialize, Resp: DeserializeOwned>(
        &self,
        method: Unary,
        rpc: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let mut client = self.client()?;
        let req = self.request(rpc, option.hard_ttl());
        let reply = match method {
            Unary::AppendEntries => client.append_entries(req).await,
            Unary::Vote => client.vote(req).await,
            Unary::PreVote => client.pre_vote(req).await,
        }
        .map_err(|s| status_error(self.target, &self.addr, s))?;
        self.reply(&reply.into_inner().payload)
    }

    fn reply<T: DeserializeOwned>(&self, payload: &[u8]) -> Result<T, RPCError<TypeConfig>> {
        let decoded: Result<T, RaftError> = decode(payload).map_err(|e| unreachable(&e))?;
        decoded.map_err(|e| RPCError::Unreachable(Unreachable::from_string(format!("peer {}: {e}", self.target))))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Unary::AppendEntries, &rpc, &option).await
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>, RPCError<TypeConfig>>>
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + openraft::OptionalSend + Unpin + 'static,
    {
        Box::pin(async move {
            // openraft backs off inside its request stream, so the first
            // append is taken before connecting: a follower that is down
            // must not be redialled in a tight loop.
            let mut input = input;
            let Some(first) = input.next().await else {
                let none: BoxStream<'s, _> = Box::pin(futures::stream::empty());
                return Ok(none);
            };
            let mut client = self.client()?;
            let in_flight = Arc::new(InFlight::default());
            let input = futures::stream::once(std::future::ready(first)).chain(input);
            let requests = outgoing_appends(input, self.channels.clone(), self.envelope(Vec::new()), in_flight.clone());
            let replies = client
                .append_stream(tonic::Request::new(requests))
                .await
                .map_err(|s| status_error(self.target, &self.addr, s))?
                .into_inner();
            let answers = AppendAnswers {
                replies,
                in_flight,
                answer_within: option.hard_ttl().max(self.min_append_answer),
                target: self.target,
                addr: self.addr.clone(),
            };
            let stream: BoxStream<'s, _> = Box::pin(futures::stream::unfold(Some(answers), |answers| async move {
                let mut answers = answers?;
                let answer = answers.next().await?;
                let go_on = matches!(answer, Ok(Ok(_)));
                Some((answer, go_on.then_some(answers)))
            }));
            Ok(stream)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Unary::Vote, &rpc, &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Unary::PreVote, &rpc, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let to_streaming = |e: RPCError<TypeConfig>| match e {
            RPCError::Unreachable(u) => StreamingError::Unreachable(u),
            RPCError::Network(n) => StreamingError::Network(n),
            RPCError::Timeout(t) => StreamingError::Timeout(t),
            other => StreamingError::Network(NetworkError::from_string(other.to_string())),
        };
        let mut client = self.client().map_err(to_streaming)?;
        let header = encode(&(vote, snapshot.meta));
        let data = Arc::new(snapshot.snapshot.into_inner());
        let chunk = self.snapshot_chunk_bytes;
        let chunks = data.len().div_ceil(chunk).max(1);
        let cluster_id = self.identity.get();
        let to_incarnation = self.incarnation.clone();
        let stream = futures::stream::iter((0..chunks).map(move |i| {
            let start = i * chunk;
            let end = (start + chunk).min(data.len());
            SnapshotChunk {
                cluster_id: if i == 0 { cluster_id.clone() } else { String::new() },
                to_incarnation: if i == 0 { to_incarnation.clone() } else { String::new() },
                header: if i == 0 { header.clone() } else { Vec::new() },
                data: data[start..end].to_vec(),
                done: i + 1 == chunks,
            }
        }));
        let mut req = tonic::Request::new(stream);
        req.set_timeout(option.hard_ttl());
        let send = client.install_snapshot(req);
        let reply = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = send => r.map_err(|s| to_streaming(status_error(self.target, &self.addr, s)))?,
        };
        let decoded: Result<SnapshotResponse<TypeConfig>, openraft::error::Fatal<TypeConfig>> =
            decode(&reply.into_inner().payload).map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        decoded.map_err(|e| StreamingError::Unreachable(Unreachable::from_string(format!("peer {}: {e}", self.target))))
    }
}

/// The appends of one replication stream that await their answer, oldest
/// first: answers come back in the order the appends were sent.
#[derive(Default)]
struct InFlight {
    sent: Mutex<VecDeque<(Instant, OwnedSemaphorePermit)>>,
    /// Wakes the reader when the first append goes out after an idle spell,
    /// so that its answer deadline starts counting.
    sent_one: Notify,
}

/// Encodes openraft's appends for the wire, holding one of
/// [`MAX_APPENDS_IN_FLIGHT`] slots for each until it is answered. Ends the
/// stream when this peer is cut off (fault injection). Each message is
/// `envelope` with the append as its payload.
fn outgoing_appends<S>(
    input: S,
    channels: Channels,
    envelope: RaftRequest,
    in_flight: Arc<InFlight>,
) -> impl futures::Stream<Item = RaftRequest> + Send + 'static
where
    S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_APPENDS_IN_FLIGHT));
    futures::stream::unfold(input, move |mut input| {
        let (slots, channels, envelope, in_flight) = (slots.clone(), channels.clone(), envelope.clone(), in_flight.clone());
        async move {
            let slot = slots.acquire_owned().await.expect("the semaphore is never closed");
            let append = input.next().await?;
            if channels.isolated() {
                return None;
            }
            let request = RaftRequest { payload: encode(&append), ..envelope };
            in_flight.sent.lock().expect("in-flight lock").push_back((Instant::now(), slot));
            in_flight.sent_one.notify_one();
            Some((request, input))
        }
    })
}

/// The follower's answers on a replication stream, each due within
/// `answer_within` of its append: a follower that stops answering (a cut
/// network drops packets silently) fails the stream, as a unary call's
/// deadline would.
struct AppendAnswers {
    replies: tonic::Streaming<flotilla_proto::raft::RaftReply>,
    in_flight: Arc<InFlight>,
    answer_within: Duration,
    target: NodeId,
    addr: String,
}

impl AppendAnswers {
    async fn next(&mut self) -> Option<Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>> {
        loop {
            let oldest = self.in_flight.sent.lock().expect("in-flight lock").front().map(|(sent_at, _)| *sent_at);
            let reply = match oldest {
                None => tokio::select! {
                    reply = self.replies.next() => reply,
                    _ = self.in_flight.sent_one.notified() => continue,
                },
                Some(sent_at) => tokio::select! {
                    reply = self.replies.next() => reply,
                    _ = tokio::time::sleep_until(sent_at + self.answer_within) => {
                        let msg = format!("peer {} at {}: no answer to an append within {:?}", self.target, self.addr, self.answer_within);
                        return Some(Err(RPCError::Unreachable(Unreachable::from_string(msg))));
                    }
                },
            };
            let reply = match reply? {
                Ok(reply) => reply,
                Err(status) => return Some(Err(status_error(self.target, &self.addr, status))),
            };
            if self.in_flight.sent.lock().expect("in-flight lock").pop_front().is_none() {
                let msg = format!("peer {} at {}: an answer to an append never sent", self.target, self.addr);
                return Some(Err(RPCError::Network(NetworkError::from_string(msg))));
            }
            return Some(decode(&reply.payload).map_err(|e| unreachable(&e)));
        }
    }
}
