//! State stores for aggregations and joins.
//!
//! A store is a sorted key-value map. Writes go to a per-store write buffer that reads
//! see at once (read-your-writes) and that reaches the committed storage only at
//! `commit`, atomically: the exactly-once protocol applies local state only after the
//! Kafka transaction that carries the same changes has committed, and `abort` drops the
//! buffer. Two storages sit behind the same interface: RocksDB (a column family per
//! store, one `WriteBatch` per commit) and memory (for the test driver). A property test
//! runs random operation sequences against both and compares.
//!
//! A RocksDB database also keeps a checkpoint: how far into the changelog its stores
//! are, so that a restart replays only the changelog's tail.
//!
//! A `ViewDb` holds a table's rows as of an offset in each partition of its topic, for
//! pull queries.

mod memory;
mod rocks;
mod store;
mod view;

pub use memory::MemoryStorage;
pub use rocks::{Checkpoint, RocksStorage, StateDb};
pub use store::{KeyValueStore, Storage, prefix_end};
pub use view::{ViewChange, ViewDb, ViewRow};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("state directory: {0}")]
    Io(String),
    #[error("state store {0} does not exist")]
    UnknownStore(String),
}

pub type Result<T, E = StateError> = std::result::Result<T, E>;
