//! The Nodes service: heartbeats received by the leader, and `logs` and
//! `exec`, served by the peer that runs the Pod and forwarded there by any
//! other.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use flotilla_agent::Agent;
use flotilla_api::{Node, Pod};
use flotilla_raft::StoreHandle;
use flotilla_raft::membership::ClusterMembership;
use flotilla_raft::network::Channels;
use flotilla_proto::node::nodes_client::NodesClient;
use flotilla_proto::node::nodes_server::Nodes;
use flotilla_proto::node::{ExecReply, ExecRequest, HeartbeatReply, HeartbeatRequest, LogsChunk, LogsRequest};
use flotilla_store::ObjectKey;
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};

use flotilla_api::wellknown::PEER_ADDRESS_ANNOTATION;

use crate::leader::Liveness;

/// Marks a call one peer forwarded to another, which must serve it itself:
/// two peers with stale views never bounce a call between them.
const FORWARDED: &str = "x-flotilla-forwarded";
/// Bytes of log per streamed message, well under gRPC's message limits.
const LOG_CHUNK_BYTES: usize = 256 * 1024;
/// Largest message a forwarded call accepts back.
const MAX_FORWARDED_REPLY_BYTES: usize = 16 << 20;
/// How often `logs -f` looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Chunks buffered per followed log before the reader waits.
const FOLLOW_BUFFER: usize = 16;
/// Longest an exec may run.
const MAX_EXEC_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// The Nodes service, with what it needs of the peer.
pub struct NodesService {
    /// This peer's id, and the name of its node.
    pub id: u64,
    pub node_name: String,
    pub advertised_addr: String,
    pub store: StoreHandle,
    pub liveness: Arc<Liveness>,
    pub membership: Arc<ClusterMembership>,
    pub channels: Channels,
    pub agent: Arc<Agent>,
    pub closing: watch::Receiver<bool>,
}

impl NodesService {
    /// The Pod, and the address of the peer that runs it, or None when it
    /// runs here.
    fn locate(&self, namespace: &str, name: &str) -> Result<(Pod, Option<String>), Status> {
        let namespace = if namespace.is_empty() { "default" } else { namespace };
        let key = ObjectKey::new("Pod", namespace, name);
        let pod: Pod = self
            .store
            .read(|s| s.get(&key).map(|o| o.json.clone()))
            .and_then(|j| serde_json::from_str(&j).ok())
            .ok_or_else(|| Status::not_found(format!("pod {namespace}/{name} not found")))?;
        if pod.spec.node_name.is_empty() {
            return Err(Status::failed_precondition(format!("pod {namespace}/{name} is not scheduled to a node yet")));
        }
        if pod.spec.node_name == self.node_name {
            return Ok((pod, None));
        }
        let node_key = ObjectKey::new("Node", "", pod.spec.node_name.clone());
        let addr = self
            .store
            .read(|s| s.get(&node_key).map(|o| o.json.clone()))
            .and_then(|j| serde_json::from_str::<Node>(&j).ok())
            .and_then(|n| n.metadata.annotations.get(PEER_ADDRESS_ANNOTATION).cloned())
            .ok_or_else(|| Status::unavailable(format!("node {} has no known peer address", pod.spec.node_name)))?;
        Ok((pod, Some(addr)))
    }

    fn client(&self, addr: &str) -> Result<NodesClient<tonic::transport::Channel>, Status> {
        if addr == self.advertised_addr {
            return Err(Status::unavailable(format!("this peer's node is not the Pod's, yet {addr} is this peer")));
        }
        let channel = self.channels.get(addr).map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(NodesClient::new(channel).max_decoding_message_size(MAX_FORWARDED_REPLY_BYTES))
    }
}

/// A request to forward to the Pod's peer, unless it was forwarded here
/// already.
fn forward<T>(request: &Request<T>, inner: T, timeout: Option<Duration>) -> Result<Request<T>, Status> {
    if request.metadata().contains_key(FORWARDED) {
        return Err(Status::unavailable("forwarded to a peer that does not run the Pod either: the cluster's view is changing, try again"));
    }
    let mut forwarded = Request::new(inner);
    forwarded.metadata_mut().insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    if let Some(t) = timeout {
        forwarded.set_timeout(t);
    }
    Ok(forwarded)
}

fn agent_status(e: flotilla_agent::AgentError) -> Status {
    Status::not_found(e.to_string())
}

#[tonic::async_trait]
impl Nodes for NodesService {
    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> Result<Response<HeartbeatReply>, Status> {
        let req = request.into_inner();
        if self.channels.isolated() {
            return Err(Status::unavailable("this peer is cut off from the others (fault injection)"));
        }
        self.membership.accept_cluster(&req.cluster_id).map_err(|e| Status::failed_precondition(e.to_string()))?;
        let term = self.liveness.answer(&req.node_name).map_err(Status::unavailable)?;
        Ok(Response::new(HeartbeatReply { leader_id: self.id, term }))
    }

    type LogsStream = Pin<Box<dyn Stream<Item = Result<LogsChunk, Status>> + Send>>;

    async fn logs(&self, request: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let req = request.get_ref().clone();
        let (pod, remote) = self.locate(&req.namespace, &req.pod)?;
        if let Some(addr) = remote {
            let forwarded = forward(&request, req, None)?;
            let stream = self.client(&addr)?.logs(forwarded).await?.into_inner();
            return Ok(Response::new(Box::pin(flotilla_raft::until_closing(&self.closing, stream))));
        }
        let agent = self.agent.clone();
        let uid = pod.metadata.uid.clone();
        let tail = (req.tail_lines > 0).then_some(req.tail_lines as usize);
        let data = agent.logs(&uid, &req.container, req.previous, tail).await.map_err(agent_status)?;
        let (tx, rx) = mpsc::channel(FOLLOW_BUFFER);
        let follow = req.follow && !req.previous;
        let container = req.container.clone();
        tokio::spawn(async move {
            for chunk in data.chunks(LOG_CHUNK_BYTES) {
                if tx.send(Ok(LogsChunk { data: chunk.to_vec() })).await.is_err() {
                    return;
                }
            }
            if follow {
                // Follow from the end of what was just sent.
                let Ok((_, mut offset)) = agent.logs_from(&uid, &container, 0).await else { return };
                loop {
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(FOLLOW_POLL) => {}
                    }
                    match agent.logs_from(&uid, &container, offset).await {
                        Ok((data, next)) => {
                            offset = next;
                            if !data.is_empty() && tx.send(Ok(LogsChunk { data })).await.is_err() {
                                return;
                            }
                        }
                        // The Pod is gone: the stream ends, as kubectl's does.
                        Err(_) => return,
                    }
                }
            }
        });
        let chunks = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(flotilla_raft::until_closing(&self.closing, chunks))))
    }

    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecReply>, Status> {
        let req = request.get_ref().clone();
        if req.command.is_empty() {
            return Err(Status::invalid_argument("command: required"));
        }
        let timeout = if req.timeout_ms == 0 {
            DEFAULT_EXEC_TIMEOUT
        } else {
            Duration::from_millis(u64::from(req.timeout_ms)).min(MAX_EXEC_TIMEOUT)
        };
        let (pod, remote) = self.locate(&req.namespace, &req.pod)?;
        if let Some(addr) = remote {
            let forwarded = forward(&request, req, Some(timeout + Duration::from_secs(5)))?;
            return self.client(&addr)?.exec(forwarded).await;
        }
        let out = self
            .agent
            .exec(&pod.metadata.uid, &req.container, &req.command, timeout)
            .await
            .map_err(agent_status)?;
        Ok(Response::new(ExecReply { exit_code: out.exit_code, stdout: out.stdout, stderr: out.stderr }))
    }
}
