//! Reads a peer's durable state straight from its backend, for tools that
//! judge a stopped or running peer from outside (the simulator's
//! invariants): what it voted, what it applied, its log and its objects.

use std::io;

use flotilla_store::{ObjectKey, StoredObject};

use crate::backend::{Backend, Cf};
use crate::layout::{load_objects, log_key};

pub use crate::layout::{last_applied, revision, vote};

/// The stored log entries with index in `[from, to)`, as (index, encoded
/// entry): encodings are deterministic, so equal bytes mean equal entries.
pub fn log_entries(backend: &dyn Backend, from: u64, to: u64) -> io::Result<Vec<(u64, Vec<u8>)>> {
    let rows = backend.scan(Cf::Log, &log_key(from), Some(&log_key(to)), usize::MAX)?;
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
