//! openraft's own storage conformance suite, run against Flotilla's log
//! store and state machine over both backends.

use std::sync::Arc;

use flotilla_raft::{IoMode, LogStore, MemoryBackend, RocksBackend, StateMachine, TypeConfig};
use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;

struct Memory;

impl StoreBuilder<TypeConfig, LogStore, StateMachine> for Memory {
    async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError<TypeConfig>> {
        let backend = Arc::new(MemoryBackend::default());
        // The simulator's mode: syncs and snapshot writes on the caller's task.
        let inline = IoMode::Inline { sync_delay_ms: Arc::default() };
        let sm = StateMachine::open(backend.clone(), None, 100, None, &inline).expect("state machine");
        Ok(((), LogStore::new(backend, inline), sm))
    }
}

/// Builds each store in its own directory under one parent, removed when
/// the test ends: the suite does not drop every guard it is handed.
struct Rocks {
    parent: tempfile::TempDir,
    built: std::sync::atomic::AtomicUsize,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine> for Rocks {
    async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError<TypeConfig>> {
        let n = self.built.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self.parent.path().join(n.to_string());
        let backend = Arc::new(RocksBackend::open(&dir.join("db")).expect("rocksdb"));
        let sm = StateMachine::open(backend.clone(), Some(dir.join("snapshot.bin")), 100, None, &IoMode::Threads).expect("state machine");
        Ok(((), LogStore::new(backend, IoMode::Threads), sm))
    }
}

#[test]
fn memory_backend_passes_the_openraft_storage_suite() {
    TypeConfig::run(async { Suite::test_all(Memory).await.expect("suite") });
}

#[test]
fn rocksdb_backend_passes_the_openraft_storage_suite() {
    let rocks = Rocks { parent: tempfile::tempdir().expect("temporary directory"), built: Default::default() };
    TypeConfig::run(async { Suite::test_all(rocks).await.expect("suite") });
}
