//! openraft's own storage conformance suite, run against Flotilla's log
//! store and state machine over both backends.

use std::sync::Arc;

use flotilla_raft::{LogStore, MemoryBackend, RocksBackend, StateMachine, TypeConfig};
use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;

struct Memory;

impl StoreBuilder<TypeConfig, LogStore, StateMachine> for Memory {
    async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError<TypeConfig>> {
        let backend = Arc::new(MemoryBackend::default());
        let sm = StateMachine::open(backend.clone(), None, 100).expect("state machine");
        Ok(((), LogStore::new(backend), sm))
    }
}

struct Rocks;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Rocks {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let backend = Arc::new(RocksBackend::open(&dir.path().join("db")).expect("rocksdb"));
        let sm = StateMachine::open(backend.clone(), Some(dir.path().join("snapshot.bin")), 100).expect("state machine");
        Ok((dir, LogStore::new(backend), sm))
    }
}

#[test]
fn memory_backend_passes_the_openraft_storage_suite() {
    TypeConfig::run(async { Suite::test_all(Memory).await.expect("suite") });
}

#[test]
fn rocksdb_backend_passes_the_openraft_storage_suite() {
    TypeConfig::run(async { Suite::test_all(Rocks).await.expect("suite") });
}
