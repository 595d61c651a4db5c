//! The Raft state machine: applies committed entries to the pure
//! [`ObjectStore`], persists what changed together with the last-applied log
//! id in one batch, publishes the events to watchers, and builds and
//! installs snapshots.
//!
//! The applied state lives in the backend as it is applied, so a restart
//! loads it instead of replaying the log. Its writes are not synced one by
//! one: they share the backend's write-ahead log with the Raft log, whose
//! appends are synced, so they are durable no later than the next append.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use flotilla_store::{Admission, Event, ObjectStore, StoreSnapshot};
use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use tokio::sync::{broadcast, watch};

use crate::backend::{Backend, Batch, Cf};
use crate::codec::{decode, encode};
use crate::layout::{KEY_LAST_APPLIED, KEY_MEMBERSHIP, KEY_REVISION, KEY_TIME, load_objects};
use crate::{IoMode, LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership};

/// Batches of events buffered for watchers. A watcher that falls further
/// behind catches up from the store's history instead.
const EVENT_CHANNEL_BATCHES: usize = 1024;

/// What watchers receive after each applied batch.
#[derive(Clone, Debug)]
pub enum AppliedEvent {
    Changes(Arc<Vec<Event>>),
    /// A snapshot replaced the whole store: watchers must list again.
    Reset { revision: u64 },
}

struct Applied {
    store: ObjectStore,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

struct Shared {
    applied: RwLock<Applied>,
    backend: Arc<dyn Backend>,
    events: broadcast::Sender<AppliedEvent>,
    /// The last applied log index, for reads that wait to catch up.
    applied_index: watch::Sender<u64>,
    /// The last snapshot built or installed, kept whole for followers that
    /// need it; also on disk when `snapshot_path` is set.
    current_snapshot: Mutex<Option<(SnapshotMeta, Arc<Vec<u8>>)>>,
    snapshot_path: Option<PathBuf>,
    /// Write snapshot files on the calling task (see [`IoMode::Inline`]).
    inline_io: bool,
}

/// A read-side handle on the applied state for the API: consistent reads,
/// watch subscriptions, and waiting for the applied index.
#[derive(Clone)]
pub struct StoreHandle {
    shared: Arc<Shared>,
}

impl StoreHandle {
    /// Runs `f` on the store under a read lock. Keep `f` short: applies
    /// wait for it.
    pub fn read<T>(&self, f: impl FnOnce(&ObjectStore) -> T) -> T {
        let applied = self.shared.applied.read().expect("applied state lock");
        f(&applied.store)
    }

    /// Waits until the entry at `index` has been applied.
    pub async fn wait_applied(&self, index: u64) {
        let mut rx = self.shared.applied_index.subscribe();
        // The sender lives as long as `self`, so the wait cannot fail.
        let _ = rx.wait_for(|applied| *applied >= index).await;
    }

    /// Subscribes to applied events together with the history after
    /// `from_revision`, atomically: no event is missed between the two.
    /// With `from_revision` `None` the watch starts now, with no history.
    pub fn subscribe(
        &self,
        from_revision: Option<u64>,
        history_limit: usize,
    ) -> (Result<Vec<Event>, flotilla_store::ReadError>, broadcast::Receiver<AppliedEvent>, u64) {
        let applied = self.shared.applied.read().expect("applied state lock");
        let rx = self.shared.events.subscribe();
        let history = match from_revision {
            Some(r) => applied.store.events_after(r, history_limit),
            None => Ok(Vec::new()),
        };
        (history, rx, applied.store.revision())
    }
}

pub struct StateMachine {
    shared: Arc<Shared>,
}

impl StateMachine {
    /// Loads the applied state from `backend`, and the last snapshot from
    /// `snapshot_path` where one was written.
    /// `admission` checks writes as they are applied (see
    /// [`flotilla_store::Admission`]), and survives snapshot installs.
    pub fn open(
        backend: Arc<dyn Backend>,
        snapshot_path: Option<PathBuf>,
        history_limit: usize,
        admission: Option<Arc<dyn Admission>>,
        io: &IoMode,
    ) -> io::Result<Self> {
        let last_applied = crate::layout::last_applied(backend.as_ref())?;
        let membership: StoredMembership =
            backend.get(Cf::Applied, KEY_MEMBERSHIP)?.map(|b| decode(&b)).transpose()?.unwrap_or_default();
        let revision = crate::layout::revision(backend.as_ref())?;
        let time_unix_ms: u64 = backend.get(Cf::Applied, KEY_TIME)?.map(|b| decode(&b)).transpose()?.unwrap_or(0);
        let objects = load_objects(backend.as_ref())?;
        let kinds = Arc::new(flotilla_api::object::ApiKinds);
        let mut store = ObjectStore::restore(StoreSnapshot { revision, time_unix_ms, objects }, history_limit, kinds);
        store.set_admission(admission);
        let current_snapshot = match &snapshot_path {
            Some(path) if path.exists() => {
                let bytes = std::fs::read(path)?;
                let (meta, data): (SnapshotMeta, Vec<u8>) = decode(&bytes)?;
                Some((meta, Arc::new(data)))
            }
            _ => None,
        };
        let applied_index = last_applied.as_ref().map_or(0, |l| l.index);
        let (events, _) = broadcast::channel(EVENT_CHANNEL_BATCHES);
        let shared = Arc::new(Shared {
            applied: RwLock::new(Applied { store, last_applied, membership }),
            backend,
            events,
            applied_index: watch::Sender::new(applied_index),
            current_snapshot: Mutex::new(current_snapshot),
            snapshot_path,
            inline_io: matches!(io, IoMode::Inline { .. }),
        });
        Ok(Self { shared })
    }

    pub fn handle(&self) -> StoreHandle {
        StoreHandle { shared: self.shared.clone() }
    }

    fn save_snapshot(&self, meta: &SnapshotMeta, data: Arc<Vec<u8>>) -> io::Result<()> {
        if let Some(path) = &self.shared.snapshot_path {
            write_atomically(path, &encode(&(meta, data.as_slice())))?;
        }
        *self.shared.current_snapshot.lock().expect("snapshot lock") = Some((meta.clone(), data));
        Ok(())
    }
}

/// Writes to a temporary file, syncs it, renames it over `path` and syncs
/// the directory: a crash leaves the old file or the new one, never half.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn persist_events(batch: &mut Batch, events: &[Event]) {
    for e in events {
        match &e.stored {
            Some(stored) => batch.put(Cf::Objects, e.key.encode(), encode(stored)),
            None => batch.delete(Cf::Objects, e.key.encode()),
        }
    }
}

impl RaftStateMachine<crate::TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let a = self.shared.applied.read().expect("applied state lock");
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<Strm>(&mut self, entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<crate::TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let entries: Vec<EntryResponder<crate::TypeConfig>> = entries.try_collect().await?;
        let Some(last) = entries.last() else { return Ok(()) };
        let last_index = last.0.log_id.index;
        let mut batch = Batch::default();
        let mut replies = Vec::with_capacity(entries.len());
        let mut all_events = Vec::new();
        {
            let mut a = self.shared.applied.write().expect("applied state lock");
            for (entry, responder) in entries {
                let result = match &entry.payload {
                    EntryPayload::Normal(command) => {
                        let (result, events) = a.store.apply(command);
                        persist_events(&mut batch, &events);
                        all_events.extend(events);
                        result
                    }
                    EntryPayload::Membership(m) => {
                        a.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        Vec::new()
                    }
                    EntryPayload::Blank => Vec::new(),
                };
                a.last_applied = Some(entry.log_id);
                replies.push((responder, result));
            }
            batch.put(Cf::Applied, KEY_LAST_APPLIED, encode(&a.last_applied));
            batch.put(Cf::Applied, KEY_MEMBERSHIP, encode(&a.membership));
            batch.put(Cf::Applied, KEY_REVISION, encode(&a.store.revision()));
            batch.put(Cf::Applied, KEY_TIME, encode(&a.store.time_unix_ms()));
            self.shared.backend.write(batch, false)?;
            // Published under the lock, so a subscriber sees each event either
            // in the history it reads or on the channel, never both or neither.
            if !all_events.is_empty() {
                let _ = self.shared.events.send(AppliedEvent::Changes(Arc::new(all_events)));
            }
        }
        self.shared.applied_index.send_replace(last_index);
        for (responder, result) in replies {
            if let Some(r) = responder {
                r.send(result);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { machine: StateMachine { shared: self.shared.clone() } }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let store_snapshot: StoreSnapshot = decode(&data)?;
        let mut batch = Batch::default();
        batch.delete_range(Cf::Objects, Vec::new(), vec![0xff]);
        for (key, object) in &store_snapshot.objects {
            batch.put(Cf::Objects, key.encode(), encode(object));
        }
        batch.put(Cf::Applied, KEY_LAST_APPLIED, encode(&meta.last_log_id));
        batch.put(Cf::Applied, KEY_MEMBERSHIP, encode(&meta.last_membership));
        batch.put(Cf::Applied, KEY_REVISION, encode(&store_snapshot.revision));
        batch.put(Cf::Applied, KEY_TIME, encode(&store_snapshot.time_unix_ms));
        let revision = store_snapshot.revision;
        {
            let mut a = self.shared.applied.write().expect("applied state lock");
            let history_limit = a.store.history_limit();
            // Synced: Raft may purge its log up to the snapshot right after.
            self.shared.backend.write(batch, true)?;
            let admission = a.store.admission();
            a.store = ObjectStore::restore(store_snapshot, history_limit, a.store.kinds());
            a.store.set_admission(admission);
            a.last_applied = meta.last_log_id;
            a.membership = meta.last_membership.clone();
            let _ = self.shared.events.send(AppliedEvent::Reset { revision });
        }
        self.shared.applied_index.send_replace(meta.last_log_id.as_ref().map_or(0, |l| l.index));
        self.save_snapshot(meta, Arc::new(data))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let current = self.shared.current_snapshot.lock().expect("snapshot lock").clone();
        Ok(current.map(|(meta, data)| Snapshot { meta, snapshot: std::io::Cursor::new(data.as_ref().clone()) }))
    }
}

pub struct SnapshotBuilder {
    machine: StateMachine,
}

impl RaftSnapshotBuilder<crate::TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let (meta, data) = {
            let a = self.machine.shared.applied.read().expect("applied state lock");
            let meta = SnapshotMeta { last_log_id: a.last_applied, last_membership: a.membership.clone() };
            (meta, encode(&a.store.snapshot()))
        };
        let data = Arc::new(data);
        let shared = self.machine.shared.clone();
        let (m, d) = (meta.clone(), data.clone());
        if shared.inline_io {
            StateMachine { shared }.save_snapshot(&m, d)?;
        } else {
            // Writing a large snapshot file blocks; keep it off the async workers.
            tokio::task::spawn_blocking(move || StateMachine { shared }.save_snapshot(&m, d))
                .await
                .map_err(io::Error::other)??;
        }
        Ok(Snapshot { meta, snapshot: std::io::Cursor::new(data.as_ref().clone()) })
    }
}
