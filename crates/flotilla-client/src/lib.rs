//! A typed client for the Flotilla gRPC API, used by the CLI, the tests and
//! the benchmarks. Any peer's address works: writes are forwarded to the
//! leader and reads are linearizable unless asked to be stale.

use std::time::Duration;

use flotilla_proto::api::cluster_client::ClusterClient;
use flotilla_proto::api::objects_client::ObjectsClient;
use flotilla_proto::api::{
    ApplyRequest, ApplyResponse, DeleteObjectRequest, DeleteObjectResponse, DeleteRequest, GetRequest, ListRequest,
    ObjectKey, Precondition, PreconditionKind, PutRequest, StatusRequest, StatusResponse, WatchEvent, WatchRequest,
};
use flotilla_proto::node::nodes_client::NodesClient;
use flotilla_proto::node::{ExecReply, ExecRequest, LogsChunk, LogsRequest};
use tonic::transport::{Channel, Endpoint};

pub use flotilla_proto::{api, node};
pub use tonic::Code;

/// Replies can hold large lists; requests are bounded by the server.
const MAX_REPLY_BYTES: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("{}", describe(.0))]
    Status(#[from] tonic::Status),
}

impl ClientError {
    /// The gRPC code, or `Unavailable` when the peer could not be reached.
    pub fn code(&self) -> Code {
        match self {
            ClientError::Connect { .. } => Code::Unavailable,
            ClientError::Status(s) => s.code(),
        }
    }
}

fn describe(s: &tonic::Status) -> String {
    let msg = s.message();
    match s.code() {
        Code::OutOfRange if msg.contains("message length too large") => {
            format!("request too large: {msg}")
        }
        Code::Unavailable if msg.is_empty() || msg.contains("transport error") || msg.contains("tcp connect") => {
            format!("peer unavailable: {msg}")
        }
        _ => msg.to_string(),
    }
}

/// How a write must find the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    Anything,
    Absent,
    Present,
    /// Compare-and-set on the object's resourceVersion.
    Revision(u64),
}

impl From<Expect> for Precondition {
    fn from(e: Expect) -> Self {
        match e {
            Expect::Anything => Precondition { kind: PreconditionKind::None as i32, revision: 0 },
            Expect::Absent => Precondition { kind: PreconditionKind::MustNotExist as i32, revision: 0 },
            Expect::Present => Precondition { kind: PreconditionKind::MustExist as i32, revision: 0 },
            Expect::Revision(r) => Precondition { kind: PreconditionKind::Revision as i32, revision: r },
        }
    }
}

pub fn key(kind: &str, namespace: &str, name: &str) -> ObjectKey {
    ObjectKey { kind: kind.into(), namespace: namespace.into(), name: name.into() }
}

#[derive(Clone)]
pub struct Client {
    objects: ObjectsClient<Channel>,
    cluster: ClusterClient<Channel>,
    nodes: NodesClient<Channel>,
}

impl Client {
    /// Connects to a peer at `HOST:PORT`.
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        let connect_error = |reason: String| ClientError::Connect { addr: addr.to_string(), reason };
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| connect_error(e.to_string()))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        let channel = endpoint.connect().await.map_err(|e| connect_error(source_chain(&e)))?;
        Ok(Self {
            objects: ObjectsClient::new(channel.clone()).max_decoding_message_size(MAX_REPLY_BYTES),
            cluster: ClusterClient::new(channel.clone()),
            nodes: NodesClient::new(channel).max_decoding_message_size(MAX_REPLY_BYTES),
        })
    }

    /// Writes an object; returns it as stored and its revision.
    pub async fn put(&mut self, key: ObjectKey, object_json: String, expect: Expect) -> Result<(String, u64), ClientError> {
        let r = self
            .objects
            .put(PutRequest { key: Some(key), object_json, precondition: Some(expect.into()) })
            .await?
            .into_inner();
        Ok((r.object_json, r.revision))
    }

    pub async fn delete(&mut self, key: ObjectKey, expect: Expect) -> Result<(String, u64), ClientError> {
        let r = self.objects.delete(DeleteRequest { key: Some(key), precondition: Some(expect.into()) }).await?.into_inner();
        Ok((r.object_json, r.revision))
    }

    /// Reads an object; `None` if it does not exist.
    pub async fn get(&mut self, key: ObjectKey, stale: bool) -> Result<Option<String>, ClientError> {
        match self.objects.get(GetRequest { key: Some(key), stale }).await {
            Ok(r) => Ok(Some(r.into_inner().object_json)),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(s.into()),
        }
    }

    /// Lists a kind in a namespace (`None`: all namespaces); returns the
    /// objects and the revision of the list, to watch from.
    pub async fn list(&mut self, kind: &str, namespace: Option<&str>, stale: bool) -> Result<(Vec<String>, u64), ClientError> {
        self.list_at(kind, namespace, 0, stale).await
    }

    pub async fn list_at(
        &mut self,
        kind: &str,
        namespace: Option<&str>,
        revision: u64,
        stale: bool,
    ) -> Result<(Vec<String>, u64), ClientError> {
        self.list_selected(kind, namespace, "", revision, stale).await
    }

    /// Lists objects whose labels match `selector` (kubectl's syntax).
    pub async fn list_selected(
        &mut self,
        kind: &str,
        namespace: Option<&str>,
        selector: &str,
        revision: u64,
        stale: bool,
    ) -> Result<(Vec<String>, u64), ClientError> {
        let r = self
            .objects
            .list(ListRequest {
                kind: kind.into(),
                namespace: namespace.unwrap_or_default().into(),
                all_namespaces: namespace.is_none(),
                revision,
                stale,
                label_selector: selector.into(),
            })
            .await?
            .into_inner();
        Ok((r.items_json, r.revision))
    }

    /// Creates or updates an object from a manifest (JSON), server-side.
    pub async fn apply(&mut self, request: ApplyRequest) -> Result<ApplyResponse, ClientError> {
        Ok(self.objects.apply(request).await?.into_inner())
    }

    /// Deletes an object and, with `cascade`, what it owns.
    pub async fn delete_object(&mut self, key: ObjectKey, cascade: bool) -> Result<DeleteObjectResponse, ClientError> {
        Ok(self.objects.delete_object(DeleteObjectRequest { key: Some(key), cascade }).await?.into_inner())
    }

    /// Events after `from_revision` (0: from now on), in order, each once.
    pub async fn watch(
        &mut self,
        kind: &str,
        namespace: Option<&str>,
        from_revision: u64,
    ) -> Result<tonic::Streaming<WatchEvent>, ClientError> {
        Ok(self
            .objects
            .watch(WatchRequest {
                kind: kind.into(),
                namespace: namespace.unwrap_or_default().into(),
                all_namespaces: namespace.is_none(),
                from_revision,
            })
            .await?
            .into_inner())
    }

    /// The cluster as the leader sees it (or this peer, without a leader).
    /// A container's output, as chunks; with `follow`, until the Pod ends.
    pub async fn logs(&mut self, request: LogsRequest) -> Result<tonic::Streaming<LogsChunk>, ClientError> {
        Ok(self.nodes.logs(request).await?.into_inner())
    }

    /// Runs a command in a container of a running Pod.
    pub async fn exec(&mut self, request: ExecRequest) -> Result<ExecReply, ClientError> {
        Ok(self.nodes.exec(request).await?.into_inner())
    }

    pub async fn status(&mut self) -> Result<StatusResponse, ClientError> {
        Ok(self.cluster.status(StatusRequest { local: false }).await?.into_inner())
    }

    /// This peer's own view, without asking the leader.
    pub async fn local_status(&mut self) -> Result<StatusResponse, ClientError> {
        Ok(self.cluster.status(StatusRequest { local: true }).await?.into_inner())
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}
