//! The buffered key-value store over a committed storage.

use crate::Result;
use std::collections::BTreeMap;
use std::ops::Bound;

/// Committed, sorted key-value storage.
pub trait Storage {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Entries with `from <= key < to` (to `None`: to the end), in key order.
    fn scan(&self, from: &[u8], to: Option<&[u8]>) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Applies puts (`Some`) and deletes (`None`) atomically.
    fn write(&mut self, changes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> Result<()>;
    /// Removes every entry.
    fn clear(&mut self) -> Result<()>;
}

/// A store: committed storage plus the writes of the current commit interval.
pub struct KeyValueStore<S: Storage> {
    storage: S,
    /// Pending changes: `Some(value)` put, `None` delete.
    buffer: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<S: Storage> KeyValueStore<S> {
    pub fn new(storage: S) -> Self {
        KeyValueStore {
            storage,
            buffer: BTreeMap::new(),
        }
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.buffer.get(key) {
            Some(pending) => Ok(pending.clone()),
            None => self.storage.get(key),
        }
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.buffer.insert(key.to_vec(), Some(value.to_vec()));
    }

    pub fn delete(&mut self, key: &[u8]) {
        self.buffer.insert(key.to_vec(), None);
    }

    /// Entries with `from <= key < to`, pending writes included, in key order.
    pub fn range(&self, from: &[u8], to: Option<&[u8]>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if to.is_some_and(|t| t <= from) {
            return Ok(Vec::new());
        }
        let committed = self.storage.scan(from, to)?;
        let upper = match to {
            Some(t) => Bound::Excluded(t.to_vec()),
            None => Bound::Unbounded,
        };
        let pending = self.buffer.range((Bound::Included(from.to_vec()), upper));
        // Merge two sorted sequences; a pending change wins over the committed entry.
        let mut out = Vec::with_capacity(committed.len());
        let mut committed = committed.into_iter().peekable();
        for (k, v) in pending {
            while let Some((ck, _)) = committed.peek() {
                if ck < k {
                    out.extend(committed.next());
                } else {
                    if ck == k {
                        committed.next();
                    }
                    break;
                }
            }
            if let Some(v) = v {
                out.push((k.clone(), v.clone()));
            }
        }
        out.extend(committed);
        Ok(out)
    }

    /// Entries whose key starts with `prefix`.
    pub fn prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        match prefix_end(prefix) {
            Some(end) => self.range(prefix, Some(&end)),
            None => self.range(prefix, None),
        }
    }

    /// Number of pending changes.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }

    /// The pending changes, for writing them to a changelog before committing.
    pub fn pending_changes(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.buffer
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
    }

    /// Applies the pending changes to the storage atomically.
    pub fn commit(&mut self) -> Result<()> {
        if !self.buffer.is_empty() {
            self.storage.write(&self.buffer)?;
            self.buffer.clear();
        }
        Ok(())
    }

    /// Drops the pending changes.
    pub fn abort(&mut self) {
        self.buffer.clear();
    }
}

/// The smallest key greater than every key with this prefix (None: no such key).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}
