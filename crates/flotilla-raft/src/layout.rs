//! The on-disk layout of a peer's state, in one place: which column family
//! holds what, under which key, encoded how (`codec`), and the readers of
//! the values more than one part needs. The log store, the state machine
//! and the inspection tools all go through it.

use std::io;

use flotilla_store::{ObjectKey, StoredObject};

use crate::backend::{Backend, Cf};
use crate::codec::decode;
use crate::{LogId, Vote};

// `Cf::Meta`: Raft's own metadata.
pub(crate) const KEY_VOTE: &[u8] = b"vote";
pub(crate) const KEY_COMMITTED: &[u8] = b"committed";
pub(crate) const KEY_LAST_PURGED: &[u8] = b"last_purged";

// `Cf::Applied`: the applied state's metadata, written with the objects.
pub(crate) const KEY_LAST_APPLIED: &[u8] = b"last_applied";
pub(crate) const KEY_MEMBERSHIP: &[u8] = b"membership";
pub(crate) const KEY_REVISION: &[u8] = b"revision";
pub(crate) const KEY_TIME: &[u8] = b"time";

/// `Cf::Log`: entries by big-endian index, so that scans run in log order.
pub(crate) fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

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

/// Objects read from the backend per scan when loading the applied state.
const LOAD_SCAN_LIMIT: usize = 10_000;

/// Every applied object in `backend`, read in bounded scans.
pub(crate) fn load_objects(backend: &dyn Backend) -> io::Result<Vec<(ObjectKey, StoredObject)>> {
    let mut objects = Vec::new();
    let mut from = Vec::new();
    loop {
        let rows = backend.scan(Cf::Objects, &from, None, LOAD_SCAN_LIMIT)?;
        let Some((last_key, _)) = rows.last() else { break };
        from = last_key.clone();
        from.push(0);
        let full = rows.len() == LOAD_SCAN_LIMIT;
        for (k, v) in rows {
            let key =
                ObjectKey::decode(&k).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "undecodable object key"))?;
            objects.push((key, decode::<StoredObject>(&v)?));
        }
        if !full {
            break;
        }
    }
    Ok(objects)
}
