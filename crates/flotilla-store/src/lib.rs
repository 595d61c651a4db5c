//! The replicated object store as a pure, synchronous state machine.
//!
//! Every peer applies the same committed [`Command`]s in the same order and so
//! holds the same [`ObjectStore`]. Nothing here touches a clock, a disk or a
//! socket: the proposer stamps commands with the time and the uid they need,
//! and the storage layer persists the [`Event`]s that [`ObjectStore::apply`]
//! returns. That keeps the store testable on plain data and replayable by the
//! simulator.

mod command;
mod key;
mod store;

pub use command::{Command, CommandResult, Op, OpResult, Precondition, WriteError};
pub use key::{KeyError, ObjectKey};
pub use store::{
    Admission, Event, EventType, KindRules, ListResult, ObjectStore, PlainObjects, ReadError, StoreSnapshot, StoredObject,
    DEFAULT_HISTORY_LIMIT, MAX_OBJECT_BYTES,
};
