//! Raft for Flotilla: the openraft type configuration, the log and
//! state-machine storage over the [`backend::Backend`] seam (RocksDB or
//! memory) with its on-disk layout, the data directory's identity, the
//! tonic transport both ways, writes batched and forwarded to the leader
//! ([`proposer`]), and membership: bootstrap, join, the voter policy.

pub mod backend;
pub mod codec;
pub mod entropy;
pub mod identity;
pub mod inspect;
mod layout;
pub mod log_store;
pub mod membership;
pub mod network;
pub mod proposer;
pub mod runtime;
pub mod state_machine;
pub mod transport;

/// `stream`, ended as soon as `closing` turns true: a server's graceful
/// shutdown waits for every open stream, so the long-lived ones
/// (replication, watches, followed logs) must end then.
pub fn until_closing<S: futures::Stream>(
    closing: &tokio::sync::watch::Receiver<bool>,
    stream: S,
) -> impl futures::Stream<Item = S::Item> + use<S> {
    let mut closing = closing.clone();
    futures::StreamExt::take_until(stream, async move {
        let _ = closing.wait_for(|closing| *closing).await;
    })
}

/// A member of the cluster as Raft's membership records it.
///
/// `incarnation` names the data directory the member answered from when it
/// joined: a peer whose directory is wiped comes back with the same id but
/// without its log and votes, and must not be taken for the member it was
/// (its empty log would look like a log that went backwards, and its lost
/// votes could count twice). Every Raft message names the incarnation the
/// sender expects; a peer with another one refuses it. Empty while not yet
/// known, which the receiver accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerNode {
    pub addr: String,
    pub incarnation: String,
}

impl PeerNode {
    pub fn new(addr: impl Into<String>, incarnation: impl Into<String>) -> Self {
        Self { addr: addr.into(), incarnation: incarnation.into() }
    }
}

impl std::fmt::Display for PeerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.incarnation.as_str() {
            "" => write!(f, "{}", self.addr),
            incarnation => write!(f, "{} ({incarnation})", self.addr),
        }
    }
}

openraft::declare_raft_types!(
    /// Flotilla's Raft: commands are object-store writes, responses are
    /// their per-op results.
    pub TypeConfig:
        D = flotilla_store::Command,
        R = flotilla_store::CommandResult,
        NodeId = u64,
        Node = PeerNode,
        // Standard Raft: at most one leader per term, as etcd, and the
        // invariant the simulator checks. (openraft's default lets several
        // leaders share a term, told apart by node id.)
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
        AsyncRuntime = runtime::FlotillaRuntime,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig, state_machine::StateMachine>;
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;
/// Snapshots are serialized whole in memory and streamed in bounded chunks.
pub type SnapshotData = std::io::Cursor<Vec<u8>>;

pub use backend::{Backend, MemoryBackend, RocksBackend};
pub use log_store::LogStore;
pub use state_machine::{AppliedEvent, StateMachine, StoreHandle};

/// How storage waits for the disk.
#[derive(Clone, Debug, Default)]
pub enum IoMode {
    /// Real peers: a syncer thread makes appends durable in groups, and
    /// snapshot files are written on Tokio's blocking pool.
    #[default]
    Threads,
    /// The simulator: every sync and snapshot write happens on the task
    /// that asked for it, so that one thread runs the whole cluster in an
    /// order the seed decides. Each log sync first waits `sync_delay_ms`
    /// of (simulated) time: the slow-disk fault.
    Inline { sync_delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64> },
}
