//! Gets clients' writes into the Raft log, many per entry.
//!
//! Concurrent writes are packed into one [`Command`] (one log entry, one
//! fsync on each peer) and up to [`MAX_IN_FLIGHT`] entries are in flight at
//! once, so throughput grows with concurrency instead of paying one disk
//! sync per write. On a follower the whole batch goes to the leader in one
//! RPC, and the leader packs it with its own clients' writes and other
//! followers' batches: the cluster's writes share entries as if every
//! client wrote to the leader.
//!
//! A write is reported as failed only when it certainly was not applied.
//! When the outcome is unknown (leadership lost mid-flight, a lost reply)
//! the error says so: retrying blindly could apply a write twice.

use openraft::async_runtime::WatchReceiver as _;
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::raft::RaftRequest;
use flotilla_proto::raft::raft_transport_client::RaftTransportClient;
use crate::codec::{decode, encode};
use crate::network::{Channels, ClusterIdentity, MAX_PEER_MESSAGE_BYTES};
use crate::Raft;
use flotilla_store::{Command, CommandResult, Op, OpResult, WriteError};
use openraft::error::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Milliseconds since the Unix epoch, from whatever clock the peer uses.
pub type NowFn = Arc<dyn Fn() -> u64 + Send + Sync>;


/// Ops packed into one log entry at most: bounds entry size and the time
/// one apply holds the state lock.
pub const MAX_BATCH_OPS: usize = 512;
/// Log entries proposed and not yet answered, per peer. Two keep the pipe
/// full (one entry committing while the next fills) and make writes that
/// arrive meanwhile wait and share an entry: fewer, larger entries and
/// forwarded batches cost less CPU per write. With 16, most entries held
/// one write and a write cost about 20 % more CPU at 64 clients.
pub const MAX_IN_FLIGHT: usize = 2;
/// Writes waiting to be batched; beyond it clients are told to back off.
pub const MAX_QUEUED_WRITES: usize = 16_384;
/// How long a write waits for a leader to be elected before giving up.
const LEADER_WAIT: Duration = Duration::from_secs(5);
const LEADER_POLL: Duration = Duration::from_millis(25);
/// How long the leader waits for a quorum to accept an entry. A leader cut
/// off from its quorum would otherwise hold clients forever.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline for a batch forwarded to the leader: longer than the leader's
/// own commit timeout, so the leader's answer arrives first.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(8);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    #[error("no leader: the cluster has no quorum right now; the write was not applied")]
    NoLeader,
    #[error("the write's outcome is unknown ({0}): it may or may not have been applied")]
    Indeterminate(String),
    #[error("this peer is shutting down; the write was not applied")]
    ShuttingDown,
    #[error("too many writes are queued on this peer; the write was not applied, try again")]
    Busy,
    /// Only between peers: the receiver is not the leader, nothing was
    /// appended, so the sender may try elsewhere.
    #[error("not the leader")]
    NotLeader,
}

struct Pending {
    ops: Vec<Op>,
    /// A follower's batch: applied here while this peer leads, refused with
    /// [`ProposeError::NotLeader`] otherwise, never forwarded on (the
    /// follower finds the leader itself, and two peers that each think the
    /// other leads must not bounce a batch between them).
    forwarded: bool,
    reply: oneshot::Sender<Result<Vec<Result<OpResult, WriteError>>, ProposeError>>,
}

/// The writes of one caller go in order, each caller's batch answered with
/// one result per op.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<Pending>,
}

impl Proposer {
    /// `now_unix_ms` stamps each entry with the cluster time it was proposed at.
    pub fn start(raft: Raft, channels: Channels, identity: ClusterIdentity, now_unix_ms: NowFn) -> Self {
        let (queue, rx) = mpsc::channel(MAX_QUEUED_WRITES);
        let link = LeaderLink { raft, channels, identity };
        tokio::spawn(run_batcher(rx, link, now_unix_ms));
        Self { queue }
    }

    pub async fn propose(&self, ops: Vec<Op>) -> Result<Vec<Result<OpResult, WriteError>>, ProposeError> {
        assert!(!ops.is_empty() && ops.len() <= MAX_BATCH_OPS, "callers bound their op count");
        self.enqueue(ops, false).await
    }

    /// Takes in a follower's batch on the leader. The batch was bounded by
    /// the follower's own batcher, but it came over the wire: a batch over
    /// the bound is refused, not asserted.
    pub async fn propose_forwarded(&self, ops: Vec<Op>) -> Result<Vec<Result<OpResult, WriteError>>, ProposeError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        if ops.len() > MAX_BATCH_OPS {
            return Err(ProposeError::Busy);
        }
        self.enqueue(ops, true).await
    }

    async fn enqueue(&self, ops: Vec<Op>, forwarded: bool) -> Result<Vec<Result<OpResult, WriteError>>, ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.queue.try_send(Pending { ops, forwarded, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ProposeError::Busy,
            mpsc::error::TrySendError::Closed(_) => ProposeError::ShuttingDown,
        })?;
        rx.await.map_err(|_| ProposeError::ShuttingDown)?
    }
}

async fn run_batcher(mut rx: mpsc::Receiver<Pending>, link: LeaderLink, now_unix_ms: NowFn) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // A write that did not fit the previous entry opens the next one.
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // Waiting for a slot first lets more writes queue up meanwhile, so
        // batches grow exactly when the log is the bottleneck.
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let mut ops_total = first.ops.len();
        let mut batch = vec![first];
        while ops_total < MAX_BATCH_OPS {
            match rx.try_recv() {
                Ok(p) if ops_total + p.ops.len() <= MAX_BATCH_OPS => {
                    ops_total += p.ops.len();
                    batch.push(p);
                }
                Ok(p) => {
                    carry = Some(p);
                    break;
                }
                Err(_) => break,
            }
        }
        let link = link.clone();
        let now_unix_ms = now_unix_ms.clone();
        tokio::spawn(async move {
            submit_batch(&link, now_unix_ms.as_ref(), batch).await;
            drop(permit);
        });
    }
}

async fn submit_batch(link: &LeaderLink, now_unix_ms: &(dyn Fn() -> u64 + Send + Sync), mut batch: Vec<Pending>) {
    loop {
        if batch.iter().any(|p| p.forwarded) && !link.raft.is_leader() {
            batch = refuse_forwarded(batch);
        }
        if batch.is_empty() {
            return;
        }
        let mut ops = Vec::with_capacity(batch.iter().map(|p| p.ops.len()).sum());
        for p in &batch {
            ops.extend(p.ops.iter().cloned());
        }
        let command = Command { time_unix_ms: now_unix_ms(), ops };
        let forwarded = batch.iter().any(|p| p.forwarded);
        let written = if forwarded { link.write_here(command).await } else { link.write(command).await };
        match written {
            // Leadership left before the proposal, so nothing was appended:
            // the followers' batches go back to their senders, this peer's
            // own writes look for the new leader.
            Err(ProposeError::NotLeader) if forwarded => batch = refuse_forwarded(batch),
            Ok(mut results) => {
                for p in batch.into_iter().rev() {
                    let mine = results.split_off(results.len() - p.ops.len());
                    let _ = p.reply.send(Ok(mine));
                }
                return;
            }
            Err(e) => {
                for p in batch {
                    let _ = p.reply.send(Err(e.clone()));
                }
                return;
            }
        }
    }
}

/// Answers the followers' batches [`ProposeError::NotLeader`] and keeps
/// this peer's own writes.
fn refuse_forwarded(batch: Vec<Pending>) -> Vec<Pending> {
    let (forwarded, local): (Vec<_>, Vec<_>) = batch.into_iter().partition(|p| p.forwarded);
    for p in forwarded {
        let _ = p.reply.send(Err(ProposeError::NotLeader));
    }
    local
}

/// What a read index covers.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub enum ReadScope {
    /// What the leader has committed: enough for a linearizable read.
    Committed,
    /// What the leader has appended, committed or not.
    Appended,
}

/// What a follower asks of the leader.
enum Forward {
    Propose,
    ReadIndex,
}

/// Reaches the leader: this peer's own Raft if it leads, the leader's
/// `RaftTransport` otherwise.
#[derive(Clone)]
pub struct LeaderLink {
    pub raft: Raft,
    pub channels: Channels,
    pub identity: ClusterIdentity,
}

impl LeaderLink {
    /// Writes through the leader, waiting a bounded time for one to exist.
    pub async fn write(&self, command: Command) -> Result<CommandResult, ProposeError> {
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        loop {
            let result = match self.leader().await {
                Some((id, _)) if id == *self.raft.node_id() => self.write_here(command.clone()).await,
                Some((_, addr)) => self.forward(&addr, Forward::Propose, encode(&command)).await.and_then(|b| decode_reply(&b)),
                None => Err(ProposeError::NotLeader),
            };
            match result {
                Err(ProposeError::NotLeader) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(LEADER_POLL).await;
                }
                Err(ProposeError::NotLeader) => return Err(ProposeError::NoLeader),
                other => return other,
            }
        }
    }

    /// Proposes on this peer, which believes it leads.
    pub async fn write_here(&self, command: Command) -> Result<CommandResult, ProposeError> {
        if !self.raft.is_leader() {
            return Err(ProposeError::NotLeader);
        }
        let written = tokio::time::timeout(COMMIT_TIMEOUT, self.raft.client_write(command)).await;
        let Ok(written) = written else {
            return Err(ProposeError::Indeterminate(format!("no quorum accepted it within {COMMIT_TIMEOUT:?}")));
        };
        match written {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(ProposeError::Indeterminate("leadership changed while the write was in flight".into()))
            }
            Err(RaftError::APIError(e)) => Err(ProposeError::Indeterminate(e.to_string())),
            Err(RaftError::Fatal(_)) => Err(ProposeError::ShuttingDown),
        }
    }

    /// The log index a linearizable read must wait for, from the leader.
    pub async fn read_index(&self) -> Result<u64, ProposeError> {
        self.read_index_of(ReadScope::Committed).await
    }

    /// The index of everything the leader has appended, confirmed with a
    /// quorum: what a fenced node must have applied before its Pods may run.
    /// A decision the leader made but could not commit yet (declaring this
    /// node lost while it had no quorum, say) is covered, so the node sees
    /// it before it runs anything the decision replaced.
    pub async fn appended_index(&self) -> Result<u64, ProposeError> {
        self.read_index_of(ReadScope::Appended).await
    }

    async fn read_index_of(&self, scope: ReadScope) -> Result<u64, ProposeError> {
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        loop {
            let result = match self.leader().await {
                Some((id, _)) if id == *self.raft.node_id() => self.read_index_here(scope).await,
                Some((_, addr)) => {
                    self.forward(&addr, Forward::ReadIndex, encode(&scope)).await.and_then(|b| decode_reply(&b))
                }
                None => Err(ProposeError::NotLeader),
            };
            match result {
                Err(ProposeError::NotLeader | ProposeError::Indeterminate(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(LEADER_POLL).await;
                }
                Err(ProposeError::NotLeader) => return Err(ProposeError::NoLeader),
                other => return other,
            }
        }
    }

    /// Confirms leadership with a quorum (ReadIndex) and returns the index
    /// every read served after this must see applied: the commit index, or
    /// with [`ReadScope::Appended`] the last index appended by then.
    pub async fn read_index_here(&self, scope: ReadScope) -> Result<u64, ProposeError> {
        if !self.raft.is_leader() {
            return Err(ProposeError::NotLeader);
        }
        match self.raft.ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex).await {
            Ok(read) => Ok(match scope {
                ReadScope::Committed => read.index(),
                ReadScope::Appended => read.index().max(self.raft.metrics().borrow_watched().last_log_index.unwrap_or(0)),
            }),
            Err(RaftError::APIError(_)) => Err(ProposeError::NotLeader),
            Err(RaftError::Fatal(_)) => Err(ProposeError::ShuttingDown),
        }
    }

    /// The leader as this peer knows it: id and address.
    pub async fn leader(&self) -> Option<(u64, String)> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let id = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&id)?.clone();
        Some((id, node.addr))
    }

    async fn forward(&self, addr: &str, method: Forward, payload: Vec<u8>) -> Result<Vec<u8>, ProposeError> {
        // Nothing was sent, so nothing was proposed.
        let channel = self.channels.get(addr).map_err(|_| ProposeError::NoLeader)?;
        let mut client = RaftTransportClient::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
        // Not a Raft message: whichever directory the leader answers from,
        // it only takes the write while it leads.
        let mut req =
            tonic::Request::new(RaftRequest { cluster_id: self.identity.get(), payload, to_incarnation: String::new() });
        req.set_timeout(FORWARD_TIMEOUT);
        let reply = match method {
            Forward::Propose => client.propose(req).await,
            Forward::ReadIndex => client.read_index(req).await,
        };
        match reply {
            Ok(r) => Ok(r.into_inner().payload),
            // Refused before it was sent: nothing was proposed.
            Err(s) if s.code() == tonic::Code::Unavailable && s.message().contains("connect") => Err(ProposeError::NotLeader),
            Err(s) => Err(ProposeError::Indeterminate(format!("leader at {addr}: {}", s.message()))),
        }
    }
}

fn decode_reply<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ProposeError> {
    decode::<Result<T, ProposeError>>(bytes).map_err(|e| ProposeError::Indeterminate(e.to_string()))?
}
