//! Committed storage in RocksDB: one database per task directory, a column family per store.

use crate::store::Storage;
use crate::{Result, StateError};
use rocksdb::{
    ColumnFamilyDescriptor, DBWithThreadMode, Direction, IteratorMode, MultiThreaded, Options,
    WriteBatch, WriteOptions,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

type Db = DBWithThreadMode<MultiThreaded>;

/// A RocksDB database holding the stores of one task.
#[derive(Clone)]
pub struct StateDb {
    db: Arc<Db>,
}

impl StateDb {
    /// Opens (or creates) the database at `path` with its existing column families.
    pub fn open(path: &Path) -> Result<StateDb> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let existing = Db::list_cf(&opts, path).unwrap_or_else(|_| vec!["default".into()]);
        let cfs = existing
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = Db::open_cf_descriptors(&opts, path, cfs)?;
        Ok(StateDb { db: Arc::new(db) })
    }

    /// The storage of one store, creating its column family on first use.
    pub fn storage(&self, name: &str) -> Result<RocksStorage> {
        if self.db.cf_handle(name).is_none() {
            self.db.create_cf(name, &Options::default())?;
        }
        let mut write_options = WriteOptions::default();
        // No write-ahead log: the stores are copies of changelog topics, rebuilt from
        // them at every start, so a crash never needs RocksDB's own log.
        write_options.disable_wal(true);
        Ok(RocksStorage {
            db: self.db.clone(),
            cf: name.to_string(),
            write_options,
        })
    }
}

pub struct RocksStorage {
    db: Arc<Db>,
    cf: String,
    write_options: WriteOptions,
}

impl RocksStorage {
    fn cf(&self) -> Result<Arc<rocksdb::BoundColumnFamily<'_>>> {
        self.db
            .cf_handle(&self.cf)
            .ok_or_else(|| StateError::UnknownStore(self.cf.clone()))
    }
}

impl Storage for RocksStorage {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(&self.cf()?, key)?)
    }

    fn scan(&self, from: &[u8], to: Option<&[u8]>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let cf = self.cf()?;
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(&cf, IteratorMode::From(from, Direction::Forward))
        {
            let (k, v) = item?;
            if to.is_some_and(|t| &*k >= t) {
                break;
            }
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }

    fn write(&mut self, changes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> Result<()> {
        let cf = self.cf()?;
        let mut batch = WriteBatch::default();
        for (k, v) in changes {
            match v {
                Some(v) => batch.put_cf(&cf, k, v),
                None => batch.delete_cf(&cf, k),
            }
        }
        self.db.write_opt(batch, &self.write_options)?;
        Ok(())
    }

    fn clear(&mut self) -> Result<()> {
        // Dropping the column family is one operation, where deleting a million keys
        // would be a million tombstones to compact.
        self.db.drop_cf(&self.cf)?;
        self.db.create_cf(&self.cf, &Options::default())?;
        Ok(())
    }
}
