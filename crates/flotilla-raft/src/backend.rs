//! The storage seam: a small ordered key-value interface with column
//! families, atomic batches and an explicit durability point. RocksDB backs
//! real peers; memory backs the simulator, where "crash" means forgetting
//! everything written since the last [`Backend::sync`].

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The column families of a peer's database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cf {
    /// Raft log entries by big-endian index.
    Log,
    /// Raft metadata: vote, last purged log id, committed, cluster identity.
    Meta,
    /// Applied objects by encoded object key.
    Objects,
    /// Applied-state metadata: last applied log id, membership, revision,
    /// cluster time.
    Applied,
}

impl Cf {
    pub const ALL: [Cf; 4] = [Cf::Log, Cf::Meta, Cf::Objects, Cf::Applied];

    fn name(self) -> &'static str {
        match self {
            Cf::Log => "log",
            Cf::Meta => "meta",
            Cf::Objects => "objects",
            Cf::Applied => "applied",
        }
    }
}

#[derive(Debug)]
pub enum BatchOp {
    Put(Cf, Vec<u8>, Vec<u8>),
    Delete(Cf, Vec<u8>),
    /// Deletes keys in `[from, to)`.
    DeleteRange(Cf, Vec<u8>, Vec<u8>),
}

/// Writes applied together or not at all.
#[derive(Debug, Default)]
pub struct Batch {
    pub ops: Vec<BatchOp>,
}

impl Batch {
    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Put(cf, key.into(), value.into()));
    }

    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Delete(cf, key.into()));
    }

    pub fn delete_range(&mut self, cf: Cf, from: impl Into<Vec<u8>>, to: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::DeleteRange(cf, from.into(), to.into()));
    }
}

pub type KeyValue = (Vec<u8>, Vec<u8>);

pub trait Backend: Send + Sync + 'static {
    /// Applies the batch atomically. With `sync`, it is durable on return.
    fn write(&self, batch: Batch, sync: bool) -> io::Result<()>;
    fn get(&self, cf: Cf, key: &[u8]) -> io::Result<Option<Vec<u8>>>;
    /// Keys in `[from, to)` in order, at most `limit` of them.
    fn scan(&self, cf: Cf, from: &[u8], to: Option<&[u8]>, limit: usize) -> io::Result<Vec<KeyValue>>;
    /// The last key and value in the family, if any.
    fn last(&self, cf: Cf) -> io::Result<Option<KeyValue>>;
    /// Makes every earlier write durable, synced or not. Writes share one
    /// write-ahead log, so this covers all column families in write order.
    fn sync(&self) -> io::Result<()>;
}

pub struct RocksBackend {
    db: rocksdb::DB,
}

impl RocksBackend {
    pub fn open(path: &Path) -> io::Result<Self> {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Small writes arrive continuously; a larger buffer means fewer
        // flushes and less write amplification for the log.
        opts.set_write_buffer_size(64 << 20);
        opts.set_max_background_jobs(2);
        // The write-ahead log is written out only by `sync` (and by synced
        // writes), not by every write: one write and one fsync per group of
        // appends instead of a system call per batch. Unsynced writes were
        // never durable before a sync, so no guarantee changes.
        opts.set_manual_wal_flush(true);
        let cfs = Cf::ALL.iter().map(|cf| rocksdb::ColumnFamilyDescriptor::new(cf.name(), rocksdb::Options::default()));
        let db = rocksdb::DB::open_cf_descriptors(&opts, path, cfs).map_err(to_io)?;
        Ok(Self { db })
    }

    fn cf(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(cf.name()).expect("every column family is created at open")
    }
}

fn to_io(e: rocksdb::Error) -> io::Error {
    io::Error::other(e.into_string())
}

impl Backend for RocksBackend {
    fn write(&self, batch: Batch, sync: bool) -> io::Result<()> {
        let mut wb = rocksdb::WriteBatch::default();
        for op in batch.ops {
            match op {
                BatchOp::Put(cf, k, v) => wb.put_cf(self.cf(cf), k, v),
                BatchOp::Delete(cf, k) => wb.delete_cf(self.cf(cf), k),
                BatchOp::DeleteRange(cf, from, to) => wb.delete_range_cf(self.cf(cf), from, to),
            }
        }
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(wb, &wo).map_err(to_io)
    }

    fn get(&self, cf: Cf, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(cf), key).map_err(to_io)
    }

    fn scan(&self, cf: Cf, from: &[u8], to: Option<&[u8]>, limit: usize) -> io::Result<Vec<KeyValue>> {
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(self.cf(cf), rocksdb::IteratorMode::From(from, rocksdb::Direction::Forward));
        for item in iter {
            let (k, v) = item.map_err(to_io)?;
            if to.is_some_and(|to| &*k >= to) || out.len() >= limit {
                break;
            }
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }

    fn last(&self, cf: Cf) -> io::Result<Option<KeyValue>> {
        match self.db.iterator_cf(self.cf(cf), rocksdb::IteratorMode::End).next() {
            None => Ok(None),
            Some(item) => {
                let (k, v) = item.map_err(to_io)?;
                Ok(Some((k.into_vec(), v.into_vec())))
            }
        }
    }

    fn sync(&self) -> io::Result<()> {
        self.db.flush_wal(true).map_err(to_io)
    }
}

type Tables = BTreeMap<Cf, BTreeMap<Vec<u8>, Vec<u8>>>;

/// An in-memory backend for the simulator and unit tests. It keeps what was
/// synced apart from what was only written, so a simulated crash loses
/// exactly what a real one could.
#[derive(Default, Clone)]
pub struct MemoryBackend {
    inner: Arc<Mutex<MemoryState>>,
}

#[derive(Default)]
struct MemoryState {
    /// What reads see.
    live: Tables,
    /// What survives a crash.
    durable: Tables,
}

impl MemoryBackend {
    /// Simulates a power loss: unsynced writes are forgotten.
    pub fn crash(&self) {
        let mut s = self.inner.lock().expect("memory backend lock");
        s.live = s.durable.clone();
    }
}

fn apply_to(tables: &mut Tables, ops: &[BatchOp]) {
    for op in ops {
        match op {
            BatchOp::Put(cf, k, v) => {
                tables.entry(*cf).or_default().insert(k.clone(), v.clone());
            }
            BatchOp::Delete(cf, k) => {
                tables.entry(*cf).or_default().remove(k);
            }
            BatchOp::DeleteRange(cf, from, to) => {
                let t = tables.entry(*cf).or_default();
                let doomed: Vec<_> = t.range(from.clone()..to.clone()).map(|(k, _)| k.clone()).collect();
                for k in doomed {
                    t.remove(&k);
                }
            }
        }
    }
}

impl Backend for MemoryBackend {
    fn write(&self, batch: Batch, sync: bool) -> io::Result<()> {
        let mut s = self.inner.lock().expect("memory backend lock");
        apply_to(&mut s.live, &batch.ops);
        if sync {
            s.durable = s.live.clone();
        }
        Ok(())
    }

    fn get(&self, cf: Cf, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let s = self.inner.lock().expect("memory backend lock");
        Ok(s.live.get(&cf).and_then(|t| t.get(key)).cloned())
    }

    fn scan(&self, cf: Cf, from: &[u8], to: Option<&[u8]>, limit: usize) -> io::Result<Vec<KeyValue>> {
        let s = self.inner.lock().expect("memory backend lock");
        let Some(t) = s.live.get(&cf) else { return Ok(Vec::new()) };
        Ok(t.range(from.to_vec()..)
            .take_while(|(k, _)| to.is_none_or(|to| k.as_slice() < to))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn last(&self, cf: Cf) -> io::Result<Option<KeyValue>> {
        let s = self.inner.lock().expect("memory backend lock");
        Ok(s.live.get(&cf).and_then(|t| t.iter().next_back()).map(|(k, v)| (k.clone(), v.clone())))
    }

    fn sync(&self) -> io::Result<()> {
        let mut s = self.inner.lock().expect("memory backend lock");
        s.durable = s.live.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(b: &dyn Backend) {
        let mut batch = Batch::default();
        for i in 0u64..10 {
            batch.put(Cf::Log, i.to_be_bytes(), vec![i as u8]);
        }
        batch.put(Cf::Meta, b"vote".to_vec(), b"v1".to_vec());
        b.write(batch, true).unwrap();
        assert_eq!(b.get(Cf::Meta, b"vote").unwrap().as_deref(), Some(&b"v1"[..]));
        assert_eq!(b.get(Cf::Objects, b"vote").unwrap(), None, "families are separate");
        let got = b.scan(Cf::Log, &3u64.to_be_bytes(), Some(&6u64.to_be_bytes()), 100).unwrap();
        assert_eq!(got.iter().map(|(_, v)| v[0]).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(b.scan(Cf::Log, &[], None, 2).unwrap().len(), 2);
        let mut batch = Batch::default();
        batch.delete_range(Cf::Log, 0u64.to_be_bytes(), 8u64.to_be_bytes());
        b.write(batch, false).unwrap();
        let rest = b.scan(Cf::Log, &[], None, 100).unwrap();
        assert_eq!(rest.iter().map(|(_, v)| v[0]).collect::<Vec<_>>(), vec![8, 9]);
        assert_eq!(b.last(Cf::Log).unwrap().unwrap().1, vec![9]);
        assert_eq!(b.last(Cf::Applied).unwrap(), None);
    }

    #[test]
    fn rocksdb_and_memory_behave_alike() {
        let dir = tempfile::tempdir().unwrap();
        exercise(&RocksBackend::open(dir.path()).unwrap());
        exercise(&MemoryBackend::default());
    }

    #[test]
    fn rocksdb_keeps_synced_writes_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = RocksBackend::open(dir.path()).unwrap();
            let mut batch = Batch::default();
            batch.put(Cf::Applied, b"k".to_vec(), b"v".to_vec());
            b.write(batch, false).unwrap();
            b.sync().unwrap();
        }
        let b = RocksBackend::open(dir.path()).unwrap();
        assert_eq!(b.get(Cf::Applied, b"k").unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn a_memory_crash_loses_exactly_the_unsynced_writes() {
        let b = MemoryBackend::default();
        let mut batch = Batch::default();
        batch.put(Cf::Log, b"a".to_vec(), b"1".to_vec());
        b.write(batch, true).unwrap();
        let mut batch = Batch::default();
        batch.put(Cf::Log, b"b".to_vec(), b"2".to_vec());
        b.write(batch, false).unwrap();
        b.crash();
        assert!(b.get(Cf::Log, b"a").unwrap().is_some());
        assert!(b.get(Cf::Log, b"b").unwrap().is_none());
    }
}
