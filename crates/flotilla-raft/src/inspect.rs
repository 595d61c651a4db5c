//! Reads a peer's durable state straight from its backend, for tools that
//! judge a stopped or running peer from outside (the simulator's
//! invariants): what it voted, what it applied, its log and its objects.

use std::io;

use flotilla_store::{ObjectKey, StoredObject};

use crate::backend::{Backend, Cf};
use crate::codec::decode;
use crate::log_store::KEY_VOTE;
use crate::state_machine::{KEY_LAST_APPLIED, KEY_REVISION, load_objects};
use crate::{LogId, Vote};

pub fn vote(backend: &dyn Backend) -> io::Result<Option<Vote>> {
    backend.get(Cf::Meta, KEY_VOTE)?.map(|b| decode(&b)).transpose()
}

/// The last entry the state machine applied: it and every entry before it
/// are committed.
pub fn last_applied(backend: &dyn Backend) -> io::Result<Option<LogId>> {
    Ok(backend.get(Cf::Applied, KEY_LAST_APPLIED)?.map(|b| decode::<Option<LogId>>(&b)).transpose()?.flatten())
}

/// The store revision of the applied state.
pub fn revision(backend: &dyn Backend) -> io::Result<u64> {
    Ok(backend.get(Cf::Applied, KEY_REVISION)?.map(|b| decode(&b)).transpose()?.unwrap_or(0))
}

/// The stored log entries with index in `[from, to)`, as (index, encoded
/// entry): encodings are deterministic, so equal bytes mean equal entries.
pub fn log_entries(backend: &dyn Backend, from: u64, to: u64) -> io::Result<Vec<(u64, Vec<u8>)>> {
    let rows = backend.scan(Cf::Log, &from.to_be_bytes(), Some(&to.to_be_bytes()), usize::MAX)?;
    Ok(rows
        .into_iter()
        .map(|(k, v)| (u64::from_be_bytes(k.as_slice().try_into().expect("log keys are 8 bytes")), v))
        .collect())
}

/// Every applied object of `kind`.
pub fn objects(backend: &dyn Backend, kind: &str) -> io::Result<Vec<(ObjectKey, StoredObject)>> {
    let mut all = load_objects(backend)?;
    all.retain(|(key, _)| key.kind == kind);
    Ok(all)
}
