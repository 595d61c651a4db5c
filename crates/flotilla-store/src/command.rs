use serde::{Deserialize, Serialize};

use crate::ObjectKey;

/// One Raft log entry's worth of writes.
///
/// The proposer stamps the wall-clock time once, so every peer derives the
/// same timestamps from the same entry. Ops are independent: each gets its
/// own result and its own revision, which lets the proposer pack many
/// clients' writes into one entry (one fsync) without one client's conflict
/// failing another's write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub time_unix_ms: u64,
    pub ops: Vec<Op>,
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ops.as_slice() {
            [one] => write!(f, "{one}"),
            ops => write!(f, "{} ops", ops.len()),
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Put { key, .. } => write!(f, "put {key}"),
            Op::Delete { key, .. } => write!(f, "delete {key}"),
        }
    }
}

/// What a write requires of the object's current state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precondition {
    /// Create or replace, whatever is there.
    None,
    /// Create: the object must not exist.
    MustNotExist,
    /// Update: the object must exist.
    MustExist,
    /// Compare-and-set: the object must exist at exactly this revision.
    Revision(u64),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Writes `object` (a JSON object, as text because the log encoding cannot
    /// carry self-describing JSON values) under `key`. `uid` is used only if
    /// the write creates the object.
    Put { key: ObjectKey, object: String, precondition: Precondition, uid: String },
    Delete { key: ObjectKey, precondition: Precondition },
}

impl Op {
    pub fn key(&self) -> &ObjectKey {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } => key,
        }
    }
}

/// The result of one op: the object as stored (or as it was, for a delete)
/// and the revision the op produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpResult {
    pub object: String,
    pub revision: u64,
}

pub type CommandResult = Vec<Result<OpResult, WriteError>>;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WriteError {
    #[error("{key} already exists")]
    AlreadyExists { key: ObjectKey },
    #[error("{key} not found")]
    NotFound { key: ObjectKey },
    #[error("{key}: resourceVersion {expected} does not match the stored {actual}: the object was changed, read it again")]
    Conflict { key: ObjectKey, expected: u64, actual: u64 },
    #[error("{key}: {reason}")]
    Invalid { key: ObjectKey, reason: String },
}
