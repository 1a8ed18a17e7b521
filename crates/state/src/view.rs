//! A table's rows as of an offset in each partition of its topic: the store pull queries
//! are answered from.
//!
//! Rows are kept by partition, then by the key's bytes, which is also the order a scan
//! hands them out in (the order ksqlDB's stores have). Each write carries the offsets
//! it reaches in one `WriteBatch` with the rows, so after a crash the rows and the
//! offsets still agree and reading goes on from there.

use crate::Result;
use rocksdb::{DBWithThreadMode, Direction, IteratorMode, MultiThreaded, Options, WriteBatch};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;

type Db = DBWithThreadMode<MultiThreaded>;

/// Row keys start with this byte, offsets with `POSITION`: a scan of rows never meets
/// an offset.
const ROW: u8 = 1;
const POSITION: u8 = 0;

/// One record of a table's topic, as the view keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewRow {
    pub partition: i32,
    pub key: Vec<u8>,
    pub offset: i64,
    pub timestamp: i64,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub value: Vec<u8>,
}

/// A change to the view: a row put, or a key deleted (a tombstone).
#[derive(Clone, Debug)]
pub enum ViewChange {
    Put(ViewRow),
    Delete { partition: i32, key: Vec<u8> },
}

/// The RocksDB database of one table's view.
pub struct ViewDb {
    db: Db,
}

impl ViewDb {
    pub fn open(path: &Path) -> Result<ViewDb> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_write_buffer_size(8 << 20);
        Ok(ViewDb {
            db: Db::open(&opts, path)?,
        })
    }

    /// The next offset to read in each partition the view has read from.
    pub fn positions(&self) -> Result<BTreeMap<i32, i64>> {
        let mut out = BTreeMap::new();
        for item in self
            .db
            .iterator(IteratorMode::From(&[POSITION], Direction::Forward))
        {
            let (k, v) = item?;
            if k.first() != Some(&POSITION) {
                break;
            }
            if let (Some(p), Some(o)) = (be_i32(&k[1..]), le_i64(&v)) {
                out.insert(p, o);
            }
        }
        Ok(out)
    }

    /// Applies changes and the offsets they reach, atomically.
    pub fn apply(&self, changes: &[ViewChange], positions: &BTreeMap<i32, i64>) -> Result<()> {
        let mut batch = WriteBatch::default();
        for c in changes {
            match c {
                ViewChange::Put(row) => batch.put(row_key(row.partition, &row.key), encode(row)),
                ViewChange::Delete { partition, key } => batch.delete(row_key(*partition, key)),
            }
        }
        for (p, o) in positions {
            let mut k = vec![POSITION];
            k.extend_from_slice(&p.to_be_bytes());
            batch.put(k, o.to_le_bytes());
        }
        self.db.write(batch)?;
        Ok(())
    }

    /// Removes every row and offset: the view starts again from nothing.
    pub fn clear(&self) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_range(&[POSITION][..], &[ROW + 1][..]);
        self.db.write(batch)?;
        Ok(())
    }

    /// Up to `limit` rows in scan order, from the first after `after` (a position a
    /// previous call returned) or from the start.
    pub fn scan(&self, after: Option<&(i32, Vec<u8>)>, limit: usize) -> Result<Vec<ViewRow>> {
        let start = match after {
            Some((p, key)) => {
                let mut k = row_key(*p, key);
                // The smallest key after it.
                k.push(0);
                k
            }
            None => vec![ROW],
        };
        self.rows_from(&start, |_| true, limit)
    }

    /// The rows of `partition` whose key is `key` or starts with it (a windowed table's
    /// keys are the key's bytes and then the window's).
    pub fn with_key_prefix(&self, partition: i32, key: &[u8]) -> Result<Vec<ViewRow>> {
        let prefix = row_key(partition, key);
        self.rows_from(&prefix, |k| k.starts_with(&prefix), usize::MAX)
    }

    /// Up to `limit` rows of `partition` whose keys lie between the bounds, in key order.
    pub fn range(
        &self,
        partition: i32,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<ViewRow>> {
        let start = match lower {
            Bound::Included(k) => row_key(partition, k),
            Bound::Excluded(k) => {
                let mut k = row_key(partition, k);
                k.push(0);
                k
            }
            Bound::Unbounded => row_key(partition, &[]),
        };
        let prefix = row_key(partition, &[]);
        self.rows_from(
            &start,
            |k| {
                k.starts_with(&prefix)
                    && match upper {
                        Bound::Included(u) => &k[5..] <= u,
                        Bound::Excluded(u) => &k[5..] < u,
                        Bound::Unbounded => true,
                    }
            },
            limit,
        )
    }

    /// The row of `partition` with exactly `key`.
    pub fn get(&self, partition: i32, key: &[u8]) -> Result<Option<ViewRow>> {
        Ok(self
            .db
            .get(row_key(partition, key))?
            .and_then(|v| decode(partition, key, &v)))
    }

    fn rows_from(
        &self,
        start: &[u8],
        mut within: impl FnMut(&[u8]) -> bool,
        limit: usize,
    ) -> Result<Vec<ViewRow>> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator(IteratorMode::From(start, Direction::Forward))
        {
            let (k, v) = item?;
            if out.len() >= limit || k.first() != Some(&ROW) || !within(&k) {
                break;
            }
            let Some(partition) = be_i32(&k[1..]) else {
                continue;
            };
            out.extend(decode(partition, &k[5..], &v));
        }
        Ok(out)
    }
}

fn row_key(partition: i32, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + key.len());
    k.push(ROW);
    // Partitions are never negative, so big-endian bytes sort as the numbers do.
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(key);
    k
}

fn be_i32(b: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

fn le_i64(b: &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(b.get(..8)?.try_into().ok()?))
}

fn le_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?))
}

/// offset, timestamp, header count, each header (name length, name, 0 or 1 and the
/// value's length and bytes), then the value's bytes.
fn encode(row: &ViewRow) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + row.value.len());
    out.extend_from_slice(&row.offset.to_le_bytes());
    out.extend_from_slice(&row.timestamp.to_le_bytes());
    out.extend_from_slice(&(row.headers.len() as u32).to_le_bytes());
    for (name, value) in &row.headers {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        match value {
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
            None => out.push(0),
        }
    }
    out.extend_from_slice(&row.value);
    out
}

fn decode(partition: i32, key: &[u8], b: &[u8]) -> Option<ViewRow> {
    let offset = le_i64(b)?;
    let timestamp = le_i64(&b[8..])?;
    let count = le_u32(&b[16..])?;
    let mut at = 20;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = b.get(at..at + n)?;
        at += n;
        Some(s)
    };
    let mut headers = Vec::new();
    for _ in 0..count {
        let len = le_u32(take(4)?)? as usize;
        let name = String::from_utf8_lossy(take(len)?).into_owned();
        let value = match take(1)?[0] {
            0 => None,
            _ => {
                let len = le_u32(take(4)?)? as usize;
                Some(take(len)?.to_vec())
            }
        };
        headers.push((name, value));
    }
    Some(ViewRow {
        partition,
        key: key.to_vec(),
        offset,
        timestamp,
        headers,
        value: b[at..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(partition: i32, key: &str, offset: i64, value: &str) -> ViewRow {
        ViewRow {
            partition,
            key: key.as_bytes().to_vec(),
            offset,
            timestamp: 1000 + offset,
            headers: Vec::new(),
            value: value.as_bytes().to_vec(),
        }
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sluice-view-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn rows_come_out_by_partition_then_key_and_survive_reopening_with_their_offsets() {
        let dir = temp_dir("order");
        {
            let db = ViewDb::open(&dir).unwrap();
            assert!(db.positions().unwrap().is_empty());
            let changes = vec![
                ViewChange::Put(row(1, "b", 0, "1")),
                ViewChange::Put(row(0, "z", 0, "2")),
                ViewChange::Put(row(1, "a", 1, "3")),
                ViewChange::Put(row(0, "y", 1, "4")),
            ];
            db.apply(&changes, &BTreeMap::from([(0, 2), (1, 2)]))
                .unwrap();
            let deleted = vec![
                ViewChange::Delete {
                    partition: 0,
                    key: b"y".to_vec(),
                },
                ViewChange::Put(row(1, "b", 2, "5")),
            ];
            db.apply(&deleted, &BTreeMap::from([(0, 3), (1, 3)]))
                .unwrap();
        }
        let db = ViewDb::open(&dir).unwrap();
        assert_eq!(db.positions().unwrap(), BTreeMap::from([(0, 3), (1, 3)]));
        let all = db.scan(None, 100).unwrap();
        let shown: Vec<(i32, &[u8], &[u8])> = all
            .iter()
            .map(|r| (r.partition, &r.key[..], &r.value[..]))
            .collect();
        assert_eq!(
            shown,
            vec![(0, &b"z"[..], &b"2"[..]), (1, b"a", b"3"), (1, b"b", b"5")]
        );
        // Paging: each call goes on after the last row the previous one gave.
        let first = db.scan(None, 2).unwrap();
        let last = first.last().map(|r| (r.partition, r.key.clone())).unwrap();
        let rest = db.scan(Some(&last), 2).unwrap();
        assert_eq!(first.len() + rest.len(), 3);
        assert_eq!(rest[0].key, b"b");
        assert_eq!(db.get(1, b"b").unwrap().unwrap().offset, 2);
        assert_eq!(db.get(0, b"y").unwrap(), None);
        db.clear().unwrap();
        assert!(db.scan(None, 100).unwrap().is_empty());
        assert!(db.positions().unwrap().is_empty());
        drop(db);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn prefixes_find_windowed_keys_and_headers_come_back() {
        let dir = temp_dir("prefix");
        let db = ViewDb::open(&dir).unwrap();
        let mut windowed = row(2, "k", 5, "v");
        windowed.key.extend_from_slice(&1000i64.to_be_bytes());
        windowed.headers = vec![("h".into(), Some(b"x".to_vec())), ("n".into(), None)];
        let other = row(2, "kk", 6, "w");
        db.apply(
            &[ViewChange::Put(windowed.clone()), ViewChange::Put(other)],
            &BTreeMap::from([(2, 7)]),
        )
        .unwrap();
        let ranged = |lower, upper| -> Vec<Vec<u8>> {
            db.range(2, lower, upper, 10)
                .unwrap()
                .into_iter()
                .map(|r| r.key)
                .collect()
        };
        assert_eq!(
            ranged(Bound::Excluded(&b"k"[..]), Bound::Unbounded).len(),
            2,
            "a windowed k sorts after k"
        );
        assert_eq!(
            ranged(Bound::Included(&b"kk"[..]), Bound::Included(&b"kk"[..])),
            [b"kk".to_vec()]
        );
        assert!(ranged(Bound::Unbounded, Bound::Excluded(&b"k"[..])).is_empty());
        assert!(
            db.range(1, Bound::Unbounded, Bound::Unbounded, 10)
                .unwrap()
                .is_empty()
        );
        let found = db.with_key_prefix(2, b"k").unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0], windowed);
        assert!(db.with_key_prefix(1, b"k").unwrap().is_empty());
        drop(db);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
