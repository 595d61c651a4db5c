//! The Raft transport's client side over tonic. Raft messages travel as
//! bincode inside the `RaftTransport` service; snapshots as a client stream
//! of bounded chunks.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use flotilla_proto::raft::raft_transport_client::RaftTransportClient;
use flotilla_proto::raft::{RaftRequest, SnapshotChunk};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::impls::BasicNode;
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use crate::codec::{decode, encode};
use crate::{NodeId, Snapshot, SnapshotData, TypeConfig, Vote};

type RaftError = openraft::error::RaftError<TypeConfig>;

/// Largest gRPC message a peer accepts from another peer. Append batches are
/// bounded by openraft's `max_payload_entries`; this is the backstop.
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 << 20;

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
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerClient {
            target,
            addr: node.addr.clone(),
            channels: self.channels.clone(),
            identity: self.identity.clone(),
            snapshot_chunk_bytes: self.snapshot_chunk_bytes,
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
    /// Asked on every call, so that cutting the peer off (fault injection)
    /// takes effect at once. A bad address fails every call as
    /// unreachable, which openraft retries with back-off.
    channels: Channels,
    identity: ClusterIdentity,
    snapshot_chunk_bytes: usize,
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

    fn request<T: serde::Serialize>(&self, body: &T, ttl: Duration) -> tonic::Request<RaftRequest> {
        let mut req = tonic::Request::new(RaftRequest { cluster_id: self.identity.get(), payload: encode(body) });
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
        let stream = futures::stream::iter((0..chunks).map(move |i| {
            let start = i * chunk;
            let end = (start + chunk).min(data.len());
            SnapshotChunk {
                cluster_id: if i == 0 { cluster_id.clone() } else { String::new() },
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
