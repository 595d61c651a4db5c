//! The Raft log and vote over a [`Backend`].
//!
//! Appends are written at once (so readers see them) without waiting for the
//! disk; one syncer thread then makes every pending append durable with a
//! single sync and acknowledges them together. Under load that is group
//! commit: one fsync covers every append that arrived while the previous one
//! ran.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, RaftTypeConfig};

use crate::backend::{Backend, Batch, Cf};
use crate::codec::{decode, encode};
use crate::layout::{KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE, log_key};
use crate::{Entry, IoMode, LogId, TypeConfig, Vote};


/// Appends waiting for a sync at most; beyond it `append` waits, which
/// slows the leader down instead of letting memory grow.
const MAX_PENDING_SYNCS: usize = 4096;


#[derive(Clone)]
pub struct LogStore {
    backend: Arc<dyn Backend>,
    syncs: Syncs,
}

/// Who makes appends durable.
#[derive(Clone)]
enum Syncs {
    Thread(mpsc::SyncSender<IOFlushed<TypeConfig>>),
    Inline(Arc<std::sync::atomic::AtomicU64>),
}

impl LogStore {
    pub fn new(backend: Arc<dyn Backend>, io: IoMode) -> Self {
        let syncs = match io {
            IoMode::Threads => {
                let (syncer, pending) = mpsc::sync_channel::<IOFlushed<TypeConfig>>(MAX_PENDING_SYNCS);
                let sync_backend = backend.clone();
                std::thread::Builder::new()
                    .name("raft-log-sync".into())
                    .spawn(move || run_syncer(sync_backend, pending))
                    .expect("spawning the log syncer thread");
                Syncs::Thread(syncer)
            }
            IoMode::Inline { sync_delay_ms } => Syncs::Inline(sync_delay_ms),
        };
        Self { backend, syncs }
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        self.backend.get(Cf::Meta, key)?.map(|b| decode(&b)).transpose()
    }
}

/// Syncs once per wake-up and acknowledges every append it covered. Ends
/// when the last `LogStore` handle is dropped.
fn run_syncer(backend: Arc<dyn Backend>, pending: mpsc::Receiver<IOFlushed<TypeConfig>>) {
    while let Ok(first) = pending.recv() {
        let mut waiting = vec![first];
        waiting.extend(pending.try_iter());
        let result = backend.sync();
        for callback in waiting {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            callback.io_completed(r);
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Some(i + 1),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        if end.is_some_and(|e| e <= start) {
            return Ok(Vec::new());
        }
        let end_key = end.map(log_key);
        let rows = self.backend.scan(Cf::Log, &log_key(start), end_key.as_ref().map(|k| &k[..]), usize::MAX)?;
        rows.iter().map(|(_, v)| decode::<Entry>(v)).collect()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        crate::inspect::vote(self.backend.as_ref())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.read_meta(KEY_LAST_PURGED)?;
        let last_log_id = match self.backend.last(Cf::Log)? {
            Some((_, v)) => Some(decode::<Entry>(&v)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let mut b = Batch::default();
        b.put(Cf::Meta, KEY_VOTE, encode(vote));
        // A vote must never be forgotten: that could let this peer vote twice
        // in one term.
        self.backend.write(b, true)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let mut b = Batch::default();
        b.put(Cf::Meta, KEY_COMMITTED, encode(&committed));
        // Only a hint for faster recovery: no sync needed.
        self.backend.write(b, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.read_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = <TypeConfig as RaftTypeConfig>::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut b = Batch::default();
        for entry in entries {
            b.put(Cf::Log, log_key(entry.log_id.index), encode(&entry));
        }
        self.backend.write(b, false)?;
        match &self.syncs {
            Syncs::Thread(syncer) => {
                syncer.send(callback).map_err(|_| io::Error::other("the log syncer thread has stopped"))
            }
            Syncs::Inline(delay_ms) => {
                let delay_ms = delay_ms.load(Ordering::Relaxed);
                if delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                }
                let result = self.backend.sync();
                let report = result.as_ref().map(|_| ()).map_err(|e| io::Error::new(e.kind(), e.to_string()));
                callback.io_completed(report);
                result
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        let mut b = Batch::default();
        b.delete_range(Cf::Log, log_key(from), log_key(u64::MAX));
        b.delete(Cf::Log, log_key(u64::MAX));
        // Conflicting entries must not come back after a crash.
        self.backend.write(b, true)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let mut b = Batch::default();
        b.put(Cf::Meta, KEY_LAST_PURGED, encode(&log_id));
        b.delete_range(Cf::Log, log_key(0), log_key(log_id.index + 1));
        // Purged entries are covered by a snapshot; losing the purge in a
        // crash only keeps entries longer.
        self.backend.write(b, false)
    }
}
