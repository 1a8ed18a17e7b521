//! Committed storage in RocksDB: one database per task directory, a column family per store.

use crate::store::Storage;
use crate::{Result, StateError};
use rocksdb::{
    ColumnFamilyDescriptor, DBWithThreadMode, Direction, IteratorMode, MultiThreaded, Options,
    WriteBatch, WriteOptions,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

type Db = DBWithThreadMode<MultiThreaded>;

/// A RocksDB database holding the stores of one task.
#[derive(Clone)]
pub struct StateDb {
    db: Arc<Db>,
    path: PathBuf,
}

/// How far into its changelog the stores of a database are: every entry of the
/// changelog partition before `offset` is in them (they may hold later ones too, which
/// a restore from `offset` writes again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// The checkpoint's file in the database's directory (RocksDB leaves files it does not
/// know alone).
const CHECKPOINT_FILE: &str = "sluice.checkpoint";

impl StateDb {
    /// Opens (or creates) the database at `path` with its existing column families.
    pub fn open(path: &Path) -> Result<StateDb> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let existing = Db::list_cf(&opts, path).unwrap_or_else(|_| vec!["default".into()]);
        let cfs = existing
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, store_options()));
        let db = Db::open_cf_descriptors(&opts, path, cfs)?;
        Ok(StateDb {
            db: Arc::new(db),
            path: path.to_path_buf(),
        })
    }

    /// Writes every store's memory tables to disk and waits: what the stores hold
    /// survives a crash from now on (writes skip RocksDB's log, see `storage`).
    pub fn flush(&self) -> Result<()> {
        let names = Db::list_cf(&Options::default(), &self.path)?;
        let handles: Vec<_> = names.iter().filter_map(|n| self.db.cf_handle(n)).collect();
        let refs: Vec<_> = handles.iter().collect();
        self.db
            .flush_cfs_opt(&refs, &rocksdb::FlushOptions::default())?;
        Ok(())
    }

    /// The checkpoint last written, if there is a readable one.
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        let text = std::fs::read_to_string(self.path.join(CHECKPOINT_FILE)).ok()?;
        let mut fields = text.trim_end().rsplitn(3, ' ');
        let offset = fields.next()?.parse().ok()?;
        let partition = fields.next()?.parse().ok()?;
        let topic = fields.next()?.to_string();
        Some(Checkpoint {
            topic,
            partition,
            offset,
        })
    }

    /// Flushes the stores, then records how far into the changelog they are. The file
    /// is replaced whole (written aside, synced, renamed), so a crash leaves the old
    /// checkpoint or the new one.
    pub fn write_checkpoint(&self, checkpoint: &Checkpoint) -> Result<()> {
        self.flush()?;
        let file = self.path.join(CHECKPOINT_FILE);
        let aside = self.path.join(format!("{CHECKPOINT_FILE}.tmp"));
        let text = format!(
            "{} {} {}\n",
            checkpoint.topic, checkpoint.partition, checkpoint.offset
        );
        let io = |e: std::io::Error| StateError::Io(format!("{}: {e}", file.display()));
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&aside).map_err(io)?;
            f.write_all(text.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&aside, &file).map_err(io)?;
        Ok(())
    }

    /// Forgets the checkpoint, before the stores are cleared and rebuilt: until a new
    /// one is written, a crash must rebuild them from the start.
    pub fn remove_checkpoint(&self) -> Result<()> {
        let file = self.path.join(CHECKPOINT_FILE);
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StateError::Io(format!("{}: {e}", file.display())))
            }
            _ => Ok(()),
        }
    }

    /// The storage of one store, creating its column family on first use.
    pub fn storage(&self, name: &str) -> Result<RocksStorage> {
        if self.db.cf_handle(name).is_none() {
            self.db.create_cf(name, &store_options())?;
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

/// A store's column family options: memtables of 8 MB rather than RocksDB's 64 MB. A
/// server holds a database per task and a column family per store, and the stores only
/// take each commit's changes, so large memtables only hold memory.
fn store_options() -> Options {
    let mut o = Options::default();
    o.set_write_buffer_size(8 << 20);
    o
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
        self.db.create_cf(&self.cf, &store_options())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_is_read_back_after_reopening_until_it_is_removed() {
        let dir = std::env::temp_dir().join(format!("sluice-checkpoint-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let checkpoint = Checkpoint {
            topic: "_sluice-x-query_1-state-changelog".into(),
            partition: 3,
            offset: 12345,
        };
        {
            let db = StateDb::open(&dir).unwrap();
            assert_eq!(db.checkpoint(), None);
            let mut s = db.storage("aggregate-0").unwrap();
            s.write(&BTreeMap::from([(b"k".to_vec(), Some(b"v".to_vec()))]))
                .unwrap();
            db.write_checkpoint(&checkpoint).unwrap();
        }
        let db = StateDb::open(&dir).unwrap();
        assert_eq!(db.checkpoint(), Some(checkpoint));
        assert_eq!(
            db.storage("aggregate-0").unwrap().get(b"k").unwrap(),
            Some(b"v".to_vec())
        );
        db.remove_checkpoint().unwrap();
        assert_eq!(db.checkpoint(), None);
        db.remove_checkpoint().unwrap();
        std::fs::write(dir.join(CHECKPOINT_FILE), "garbage").unwrap();
        assert_eq!(db.checkpoint(), None);
        drop(db);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
