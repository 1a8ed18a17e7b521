//! A join's state in a state store (RocksDB on Kafka), behind the rows memory keeps.

use super::changelog::{
    ENTRY_PENDING, ENTRY_TABLE, ENTRY_TIMES, ENTRY_WINDOW, Entry, RESTORE_BATCH, Restored,
    decode_row, sortable, table_entry,
};
use super::*;

/// A join's state in a state store (RocksDB on Kafka) instead of all in memory: the
/// store holds the join's changelog entries as of the last commit (window rows
/// re-keyed, see `write`); memory holds the table rows and the keys' window rows the
/// current commit interval used, and after a commit at most `max_cached` of them; a
/// lookup that misses memory reads the store. Rows of an outer join that wait for their
/// window to close stay whole in memory (a grace period's worth). As for aggregations,
/// the store receives an interval's changes only once the transaction carrying them to
/// the changelog has committed.
pub(super) struct JoinStore {
    pub(super) storage: Box<dyn Storage + Send>,
    pub(super) max_cached: usize,
    /// Changelog entries being restored, written to the store in batches.
    pub(super) restoring: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The rows deleted since the last commit, which the store still has.
    pub(super) deleted: HashSet<Vec<u8>>,
    /// Each side's keys that may have window rows in the store, as hashes: a key not
    /// among them has none, and is not looked for (most keys of a stream are new). It
    /// only grows between rebuilds from the store's time index, when it doubled.
    pub(super) window_keys: [HashSet<u64>; 2],
    pub(super) window_keys_rebuilt: usize,
    pub(super) hasher: hashbrown::DefaultHashBuilder,
}

impl JoinStore {
    pub(super) fn key_hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Whether the store may hold window rows of a side's key.
    pub(super) fn may_have_window(&self, side: Side, key: &[u8]) -> bool {
        self.window_keys[side as usize].contains(&self.key_hash(key))
    }

    /// Makes `window_keys` the keys the store's time index has, once it has doubled
    /// since it last was (keys whose rows all expired then drop out).
    pub(super) fn rebuild_window_keys(&mut self, force: bool) -> Result<()> {
        let size: usize = self.window_keys.iter().map(HashSet::len).sum();
        if !force && size < 2 * self.window_keys_rebuilt.max(1000) {
            return Ok(());
        }
        let mut keys = [HashSet::new(), HashSet::new()];
        for (side, keys) in keys.iter_mut().enumerate() {
            let from = [STORE_WINDOW_INDEX, side as u8];
            let to = [STORE_WINDOW_INDEX, side as u8 + 1];
            for (index, _) in self.storage.scan(&from, Some(&to))? {
                if let Some(key) = index.get(18..) {
                    keys.insert(self.key_hash(key));
                }
            }
        }
        self.window_keys_rebuilt = keys.iter().map(HashSet::len).sum();
        self.window_keys = keys;
        Ok(())
    }

    pub(super) fn flush_restored(&mut self) -> Result<()> {
        if !self.restoring.is_empty() {
            let restored = std::mem::take(&mut self.restoring);
            self.write(&restored)?;
        }
        Ok(())
    }

    /// Writes changelog entries to the store. A window row is kept twice: under its key
    /// first (`[5, side, key, time, seq]`: a key's rows are one range), and in a time
    /// index (`[4, side, time, seq, key]`, no value: the expired rows are one range).
    pub(super) fn write(&mut self, entries: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        if !entries.keys().any(|k| k.first() == Some(&ENTRY_WINDOW)) {
            return Ok(self.storage.write(entries)?);
        }
        let mut rekeyed = BTreeMap::new();
        for (entry, value) in entries {
            match Entry::parse(entry)? {
                Entry::Window(side, seq, key) => {
                    if value.is_some() {
                        let hash = self.key_hash(&key);
                        self.window_keys[side as usize].insert(hash);
                    }
                    let time = &entry[2..10];
                    let mut row = vec![STORE_WINDOW_ROW, side as u8];
                    row.extend_from_slice(&key);
                    row.extend_from_slice(time);
                    row.extend_from_slice(&seq.to_be_bytes());
                    let mut index = entry.clone();
                    index[0] = STORE_WINDOW_INDEX;
                    rekeyed.insert(row, value.clone());
                    rekeyed.insert(index, value.as_ref().map(|_| Vec::new()));
                }
                _ => {
                    rekeyed.insert(entry.clone(), value.clone());
                }
            }
        }
        Ok(self.storage.write(&rekeyed)?)
    }
}

/// A window row's time and seq, from its key in the store (`[5, side, key, time, seq]`).
pub(super) fn stored_window_time(stored: &[u8]) -> Result<(i64, u64)> {
    let n = stored.len();
    if n < 18 {
        return Err(RuntimeError::State(
            "a join's stored window row is corrupt".into(),
        ));
    }
    let time = u64::from_be_bytes(stored[n - 16..n - 8].try_into().expect("8 bytes"));
    let seq = u64::from_be_bytes(stored[n - 8..].try_into().expect("8 bytes"));
    Ok(((time ^ (1 << 63)) as i64, seq))
}

/// The first byte of the store's own keys for window rows (see `JoinStore::write`).
pub(super) const STORE_WINDOW_INDEX: u8 = 4;

pub(super) const STORE_WINDOW_ROW: u8 = 5;

/// How many restored entries are written to a store at once.
pub(super) const STORE_RESTORE_BATCH: usize = 10_000;

/// The state in a store: rows read back as lookups need them.
impl JoinOp {
    /// A restore into the store: the rows stay there, read as lookups need them; the
    /// times are read back, and a foreign-key join's subscriptions follow from its left
    /// rows (the index stays whole in memory, as a session aggregation's does).
    pub(super) fn finish_stored_restore(&mut self) -> Result<()> {
        let store = self.store.as_mut().expect("a store");
        store.flush_restored()?;
        store.rebuild_window_keys(true)?;
        if let Some(times) = store.storage.get(&[ENTRY_TIMES])? {
            self.decode_times(&times)?;
        }
        // The rows waiting for their windows to close, into memory.
        let store = self.store.as_ref().expect("a store");
        let waiting = store.storage.scan(&[ENTRY_PENDING], Some(&[ENTRY_TIMES]))?;
        let mut rows: [Vec<(Entry, Restored)>; 2] = [Vec::new(), Vec::new()];
        for (entry, value) in &waiting {
            let entry = Entry::parse(entry)?;
            rows[entry.side() as usize].push((entry, decode_row(value)?));
        }
        self.rebuild_rows(rows)?;
        let Some(store) = self.store.as_ref().filter(|_| self.primary.is_some()) else {
            return Ok(());
        };
        let from = [ENTRY_TABLE, Side::Left as u8];
        let to = [ENTRY_TABLE, Side::Right as u8];
        let left = store.storage.scan(&from, Some(&to))?;
        for chunk in left.chunks(RESTORE_BATCH) {
            let mut keys = Vec::with_capacity(chunk.len());
            for (entry, value) in chunk {
                keys.push((entry[2..].to_vec(), decode_row(value)?.key));
            }
            self.subscribe(keys)?;
        }
        Ok(())
    }

    /// Keeps the state in `storage` (see `JoinStore`), with at most `max_cached` table
    /// rows and keys' window rows in memory between commits.
    pub fn use_store(&mut self, storage: Box<dyn Storage + Send>, max_cached: usize) {
        self.store = Some(JoinStore {
            storage,
            max_cached,
            restoring: BTreeMap::new(),
            deleted: HashSet::new(),
            window_keys: [HashSet::new(), HashSet::new()],
            window_keys_rebuilt: 0,
            hasher: Default::default(),
        });
    }

    /// Whether the state lives in a state store, which outlives the process.
    pub fn has_store(&self) -> bool {
        self.store.is_some()
    }

    /// Once the changelog holds an interval's changes (its transaction committed):
    /// writes this join's entries among them to the store in one batch, and forgets
    /// rows from memory beyond the cache's bound. Rows are forgotten only while changes
    /// are recorded: otherwise the store never receives them.
    pub fn commit_store(&mut self, changes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> Result<()> {
        let Some(store) = &mut self.store else {
            return Ok(());
        };
        store.write(changes)?;
        store.deleted.clear();
        store.rebuild_window_keys(false)?;
        if self.changes.is_some() {
            // Deleted from the store with the next interval's changes.
            self.expire_stored()?;
        }
        let store = self.store.as_ref().expect("a store");
        let cached = self.tables.iter().map(|t| t.len()).sum::<usize>()
            + self.windows.iter().map(|w| w.len()).sum::<usize>();
        if self.changes.is_some() && cached > store.max_cached {
            // Half of the bound stays, so that the next commits do not empty memory
            // again at once.
            let mut keep = store.max_cached / 2;
            let mut keeps = || {
                let kept = keep > 0;
                keep = keep.saturating_sub(1);
                kept
            };
            for table in &mut self.tables {
                table.retain(|_, _| keeps());
            }
            for window in &mut self.windows {
                window.retain(|_, _| keeps());
            }
        }
        Ok(())
    }

    /// Reads rows of a side that memory does not have from the store, into memory, as
    /// one batch (keys the store does not have either stay absent).
    pub(super) fn load_table_rows(&mut self, side: Side, keys: BTreeSet<&[u8]>) -> Result<()> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let mut found = Vec::new();
        let mut restored = Vec::new();
        for key in keys {
            let entry = table_entry(side, key);
            if store.deleted.contains(&entry) {
                continue;
            }
            if let Some(bytes) = store.storage.get(&entry)? {
                restored.push(decode_row(&bytes)?);
                found.push(key);
            }
        }
        if found.is_empty() {
            return Ok(());
        }
        let times: Vec<i64> = restored.iter().map(|r| r.ts).collect();
        let batch = self.rebuild_batch(side, restored)?;
        for (row, (key, ts)) in found.into_iter().zip(times).enumerate() {
            let kept = Kept {
                batch: batch.clone(),
                row,
                ts,
                seq: 0,
            };
            self.tables[side as usize].insert(TableKey::from_slice(key), kept);
        }
        Ok(())
    }

    /// A side's current row for a key: from memory, else (unless the current interval
    /// deleted it) from the store, kept in memory from then on.
    pub(super) fn table_row(&mut self, side: Side, key: &[u8]) -> Result<Option<Kept>> {
        let s = side as usize;
        if let Some(kept) = self.tables[s].get(key) {
            return Ok(Some(kept.clone()));
        }
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let entry = table_entry(side, key);
        if store.deleted.contains(&entry) {
            return Ok(None);
        }
        let Some(bytes) = store.storage.get(&entry)? else {
            return Ok(None);
        };
        let restored = decode_row(&bytes)?;
        let ts = restored.ts;
        let kept = Kept {
            batch: self.rebuild_batch(side, vec![restored])?,
            row: 0,
            ts,
            seq: 0,
        };
        self.tables[s].insert(TableKey::from_slice(key), kept.clone());
        Ok(Some(kept))
    }

    /// With a store: deletes the rows the window stores hold in it that are older than
    /// their side's retention, found through the store's time index (memory holds only
    /// the keys recently used).
    pub(super) fn expire_stored(&mut self) -> Result<()> {
        let (Some(store), JoinShape::StreamStream { .. }) = (&self.store, &self.shape) else {
            return Ok(());
        };
        let retention = self.retention();
        let mut expired = Vec::new();
        for side in [Side::Left, Side::Right] {
            let horizon = self.side_time[side as usize].saturating_sub(retention);
            let from = [STORE_WINDOW_INDEX, side as u8];
            let mut to = from.to_vec();
            to.extend_from_slice(&sortable(horizon));
            for (index, _) in store.storage.scan(&from, Some(&to))? {
                // [4, side, time, seq, key] is the changelog's [1, side, time, seq, key].
                let mut entry = index;
                entry[0] = ENTRY_WINDOW;
                expired.push(entry);
            }
        }
        for entry in expired {
            note(&mut self.changes, || entry, None);
        }
        Ok(())
    }

    /// With a store: reads a key's window rows of one side into memory, unless memory
    /// has them (all of them: a key in memory is complete). Rows past the retention are
    /// left out.
    pub(super) fn load_window(&mut self, side: Side, key: &[u8], retention: i64) -> Result<()> {
        let s = side as usize;
        let Some(store) = &self.store else {
            return Ok(());
        };
        if self.windows[s].contains_key(key) {
            return Ok(());
        }
        if !store.may_have_window(side, key) {
            self.windows[s].insert(key.to_vec(), Vec::new());
            return Ok(());
        }
        let mut prefix = vec![STORE_WINDOW_ROW, side as u8];
        prefix.extend_from_slice(key);
        let end = prefix_end(&prefix);
        let horizon = self.side_time[s].saturating_sub(retention);
        let mut seqs = Vec::new();
        let mut restored = Vec::new();
        for (stored, value) in store.storage.scan(&prefix, end.as_deref())? {
            let (ts, seq) = stored_window_time(&stored)?;
            if ts >= horizon {
                seqs.push(seq);
                restored.push(decode_row(&value)?);
            }
        }
        let mut rows = Vec::with_capacity(seqs.len());
        if !restored.is_empty() {
            let times: Vec<i64> = restored.iter().map(|r| r.ts).collect();
            let batch = self.rebuild_batch(side, restored)?;
            for (row, (ts, seq)) in times.into_iter().zip(seqs).enumerate() {
                rows.push(Kept {
                    batch: batch.clone(),
                    row,
                    ts,
                    seq,
                });
            }
            rows.sort_by_key(|r| r.seq);
        }
        if let Some(first) = rows.iter().map(|r| r.ts).min() {
            self.oldest[s] = self.oldest[s].min(first);
        }
        // Even without rows: the key is known to have none.
        self.windows[s].insert(key.to_vec(), rows);
        Ok(())
    }
}
