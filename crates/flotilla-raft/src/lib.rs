//! Raft for Flotilla: the openraft type configuration, the log and
//! state-machine storage over the [`backend::Backend`] seam (RocksDB or
//! memory), and the tonic transport.

pub mod backend;
pub mod codec;
pub mod log_store;
pub mod network;
pub mod state_machine;

use openraft::impls::BasicNode;

openraft::declare_raft_types!(
    /// Flotilla's Raft: commands are object-store writes, responses are
    /// their per-op results.
    pub TypeConfig:
        D = flotilla_store::Command,
        R = flotilla_store::CommandResult,
        NodeId = u64,
        Node = BasicNode,
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
