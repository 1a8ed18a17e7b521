//! A join's state as changelog entries, and the state rebuilt from them.
//!
//! Each change of a join's state is an entry of the query's changelog: a table's row by
//! key, a window store's row, a row of an outer join that waits for its window to close,
//! and the times. A restore reads the entries back and rebuilds each side's rows into
//! batches, which the kept rows point into as rows read from topics point into their
//! input batches.

use super::store::STORE_RESTORE_BATCH;
use super::*;

/// Changelog support: what changed since the last commit, and the state rebuilt from
/// such entries.
impl JoinOp {
    /// Starts recording which state entries change, for `take_changes`.
    pub fn record_changes(&mut self) {
        self.changes.get_or_insert_with(BTreeMap::new);
    }

    /// The state entries changed since the last call (None: deleted), as changelog
    /// entries: the table rows, window rows and rows waiting for their window to close
    /// that changed, and the times. The times entry is written at the first commit
    /// whatever changed, so a changelog without it was written by no join.
    pub fn take_changes(&mut self, out: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        let Some(changes) = &mut self.changes else {
            return Ok(());
        };
        for (entry, row) in std::mem::take(changes) {
            let value = row.map(|r| encode_row(&r)).transpose()?;
            out.push((entry, value));
        }
        if self.times_changed || !self.has_times_entry {
            self.times_changed = false;
            self.has_times_entry = true;
            out.push((vec![ENTRY_TIMES], Some(self.encode_times())));
        }
        Ok(())
    }

    /// Whether the changelog the state was restored from was written by this join
    /// (it holds the join's times entry).
    pub fn restored_from_changelog(&self) -> bool {
        self.has_times_entry
    }

    /// Forgets all state, before it is restored; `keep_stored`: the store's entries are
    /// kept (committed state, onto which the restore replays the changelog's tail).
    pub fn clear(&mut self, keep_stored: bool) -> Result<()> {
        if let Some(store) = &mut self.store {
            if !keep_stored {
                store.storage.clear()?;
            }
            store.restoring.clear();
            store.deleted.clear();
            store.window_keys = [HashSet::new(), HashSet::new()];
            store.window_keys_rebuilt = 0;
        }
        self.tables = [HashMap::new(), HashMap::new()];
        self.windows = [HashMap::new(), HashMap::new()];
        self.pending.clear();
        self.pending_seq = 0;
        self.left_foreign_keys.clear();
        self.subscriptions.clear();
        self.stream_time = i64::MIN;
        self.side_time = [i64::MIN; 2];
        self.since_sweep = 0;
        self.oldest = [i64::MAX; 2];
        self.stored_rows = 0;
        self.times_changed = false;
        self.has_times_entry = false;
        self.restoring.clear();
        if let Some(changes) = &mut self.changes {
            changes.clear();
        }
        Ok(())
    }

    /// Takes one changelog entry (None: deleted) of a restore; `finish_restore` builds
    /// the state once the changelog has been read to its end.
    pub fn restore(&mut self, entry: &[u8], value: Option<&[u8]>) -> Result<()> {
        if let Some(store) = &mut self.store {
            Entry::parse(entry)?;
            store
                .restoring
                .insert(entry.to_vec(), value.map(<[u8]>::to_vec));
            if store.restoring.len() >= STORE_RESTORE_BATCH {
                store.flush_restored()?;
            }
            return Ok(());
        }
        match value {
            Some(v) => self.restoring.insert(entry.to_vec(), v.to_vec()),
            None => self.restoring.remove(entry),
        };
        Ok(())
    }

    /// Builds the state from the entries read back: the rows of each side become
    /// batches again, a few thousand rows each, which the kept rows point into.
    pub fn finish_restore(&mut self) -> Result<()> {
        if self.store.is_some() {
            return self.finish_stored_restore();
        }
        let entries = std::mem::take(&mut self.restoring);
        let mut rows: [Vec<(Entry, Restored)>; 2] = [Vec::new(), Vec::new()];
        for (key, value) in &entries {
            match Entry::parse(key)? {
                Entry::Times => self.decode_times(value)?,
                entry => rows[entry.side() as usize].push((entry, decode_row(value)?)),
            }
        }
        self.rebuild_rows(rows)?;
        // Each window store's rows of a key in the order they were stored.
        for window in &mut self.windows {
            for rows in window.values_mut() {
                rows.sort_by_key(|r| r.seq);
            }
        }
        Ok(())
    }

    /// Puts rows read back, each side's in batches, where their entries say they were.
    pub(super) fn rebuild_rows(&mut self, rows: [Vec<(Entry, Restored)>; 2]) -> Result<()> {
        for (side, side_rows) in [Side::Left, Side::Right].into_iter().zip(rows) {
            let mut side_rows = side_rows.into_iter().peekable();
            while side_rows.peek().is_some() {
                let chunk: Vec<(Entry, Restored)> =
                    side_rows.by_ref().take(RESTORE_BATCH).collect();
                let (entries, restored): (Vec<Entry>, Vec<Restored>) = chunk.into_iter().unzip();
                let times: Vec<i64> = restored.iter().map(|r| r.ts).collect();
                let batch = self.rebuild_batch(side, restored)?;
                for (row, (entry, ts)) in entries.into_iter().zip(times).enumerate() {
                    self.restore_row(entry, &batch, row, ts)?;
                }
            }
        }
        Ok(())
    }

    /// Subscribes left rows of a foreign-key join, given as their primary keys and
    /// foreign keys, to their foreign keys.
    pub(super) fn subscribe(&mut self, rows: Vec<(Vec<u8>, ScalarValue)>) -> Result<()> {
        let (primary, foreign): (Vec<Vec<u8>>, Vec<ScalarValue>) = rows.into_iter().unzip();
        if primary.is_empty() {
            return Ok(());
        }
        let foreign = ScalarValue::iter_to_array(foreign)?;
        let foreign = if foreign.data_type() == &self.key_types[0] {
            foreign
        } else {
            cast(&foreign, &self.key_types[0])?
        };
        let encoded = self.rows.convert_columns(std::slice::from_ref(&foreign))?;
        for (row, pk) in primary.into_iter().enumerate() {
            if foreign.is_null(row) {
                continue;
            }
            let fk = encoded.row(row).as_ref().to_vec();
            self.left_foreign_keys.insert(pk.clone(), fk.clone());
            self.subscriptions.entry(fk).or_default().insert(pk);
        }
        Ok(())
    }

    /// Puts one restored row where its entry says it was.
    pub(super) fn restore_row(
        &mut self,
        entry: Entry,
        batch: &Arc<BatchRows>,
        row: usize,
        ts: i64,
    ) -> Result<()> {
        let kept = |seq| Kept {
            batch: batch.clone(),
            row,
            ts,
            seq,
        };
        match entry {
            Entry::Table(side, key) => {
                if side == Side::Left && self.primary.is_some() {
                    // A foreign-key join's left row subscribes to its foreign key.
                    let foreign = ScalarValue::try_from_array(&batch.key, row)?;
                    self.subscribe(vec![(key.clone(), foreign)])?;
                }
                self.tables[side as usize].insert(TableKey::from_slice(&key), kept(0));
            }
            Entry::Window(side, seq, key) => {
                self.oldest[side as usize] = self.oldest[side as usize].min(ts);
                self.windows[side as usize]
                    .entry(key)
                    .or_default()
                    .push(kept(seq));
            }
            Entry::Pending(side, seq, key) => {
                self.pending.insert((ts, side, key, seq), kept(0));
            }
            Entry::Times => {}
        }
        Ok(())
    }

    /// The carried columns, keys and window bounds of restored rows of one side, as
    /// one batch of the types the side's input batches have.
    pub(super) fn rebuild_batch(&self, side: Side, rows: Vec<Restored>) -> Result<Arc<BatchRows>> {
        let s = side as usize;
        let n = rows.len();
        let schema = &self.carried_schema[s];
        let array = |values: Vec<ScalarValue>, ty: &DataType| -> Result<ArrayRef> {
            let array = ScalarValue::iter_to_array(values)?;
            Ok(if array.data_type() == ty {
                array
            } else {
                cast(&array, ty)?
            })
        };
        let mut keys = Vec::with_capacity(n);
        let mut bounds = [Vec::with_capacity(n), Vec::with_capacity(n)];
        let mut columns: Vec<Vec<ScalarValue>> = vec![Vec::with_capacity(n); schema.fields().len()];
        for r in rows {
            if r.columns.len() != columns.len() {
                return Err(RuntimeError::State(format!(
                    "a join's changelog row has {} columns where the plan carries {}",
                    r.columns.len(),
                    columns.len()
                )));
            }
            keys.push(r.key);
            if let Some([start, end]) = r.bounds {
                bounds[0].push(start);
                bounds[1].push(end);
            }
            for (c, v) in columns.iter_mut().zip(r.columns) {
                c.push(v);
            }
        }
        let bounds = match (self.windowed, bounds) {
            (None, _) => None,
            (Some(_), [starts, ends]) if starts.len() == n => Some([
                array(starts, &DataType::Int64)?,
                array(ends, &DataType::Int64)?,
            ]),
            (Some(_), _) => {
                return Err(RuntimeError::State(
                    "a windowed join's changelog row without its window".into(),
                ));
            }
        };
        let columns = columns
            .into_iter()
            .zip(schema.fields())
            .map(|(values, f)| array(values, f.data_type()))
            .collect::<Result<Vec<_>>>()?;
        let columns = RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?;
        Ok(Arc::new(BatchRows {
            columns,
            key: array(keys, &self.key_types[s])?,
            bounds,
        }))
    }

    /// Records a changed entry for the changelog, and with a store, a deleted row, so
    /// that a lookup does not find it in the store before the next commit.
    pub(super) fn note(&mut self, entry: impl FnOnce() -> Vec<u8>, row: Option<&Kept>) {
        let Some(store) = &mut self.store else {
            return note(&mut self.changes, entry, row);
        };
        let entry = entry();
        if row.is_some() {
            store.deleted.remove(&entry);
        } else {
            store.deleted.insert(entry.clone());
        }
        note(&mut self.changes, || entry, row);
    }

    pub(super) fn encode_times(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(40);
        let mut w = Writer(&mut buf);
        w.i64(self.stream_time);
        w.i64(self.side_time[0]);
        w.i64(self.side_time[1]);
        w.u64(self.stored_rows);
        w.u64(self.pending_seq);
        buf
    }

    pub(super) fn decode_times(&mut self, bytes: &[u8]) -> Result<()> {
        let mut r = Reader::new(bytes);
        self.stream_time = r.i64()?;
        self.side_time = [r.i64()?, r.i64()?];
        self.stored_rows = r.u64()?;
        self.pending_seq = r.u64()?;
        self.has_times_entry = true;
        Ok(())
    }
}

/// Rows rebuilt into one batch at a time when state is restored.
pub(super) const RESTORE_BATCH: usize = 4096;

/// The first byte of a join's changelog entries: what the entry holds.
pub(super) const ENTRY_TABLE: u8 = 0;

pub(super) const ENTRY_WINDOW: u8 = 1;

pub(super) const ENTRY_PENDING: u8 = 2;

pub(super) const ENTRY_TIMES: u8 = 3;

/// A join's changelog entry, by its key.
pub(super) enum Entry {
    /// `[0, side, key]`: a table's current row for a key (a foreign-key join's left
    /// table: for a primary key).
    Table(Side, Vec<u8>),
    /// `[1, side, time, seq, key]`: a row in a window store.
    Window(Side, u64, Vec<u8>),
    /// `[2, time, side, seq, key]`: a row of an outer join waiting for its window to
    /// close (in the order they close).
    Pending(Side, u64, Vec<u8>),
    /// `[3]`: stream time, each side's time, and the counters.
    Times,
}

impl Entry {
    pub(super) fn parse(bytes: &[u8]) -> Result<Entry> {
        let corrupt = || RuntimeError::State("a join's changelog entry is corrupt".into());
        let side = |b: u8| match b {
            0 => Ok(Side::Left),
            1 => Ok(Side::Right),
            _ => Err(corrupt()),
        };
        let u64_at = |at: usize| -> Result<u64> {
            Ok(u64::from_be_bytes(
                bytes
                    .get(at..at + 8)
                    .ok_or_else(corrupt)?
                    .try_into()
                    .expect("8 bytes"),
            ))
        };
        match bytes.first() {
            Some(&ENTRY_TABLE) if bytes.len() >= 2 => {
                Ok(Entry::Table(side(bytes[1])?, bytes[2..].to_vec()))
            }
            Some(&ENTRY_WINDOW) if bytes.len() >= 18 => Ok(Entry::Window(
                side(bytes[1])?,
                u64_at(10)?,
                bytes[18..].to_vec(),
            )),
            Some(&ENTRY_PENDING) if bytes.len() >= 18 => Ok(Entry::Pending(
                side(bytes[9])?,
                u64_at(10)?,
                bytes[18..].to_vec(),
            )),
            Some(&ENTRY_TIMES) if bytes.len() == 1 => Ok(Entry::Times),
            _ => Err(corrupt()),
        }
    }

    pub(super) fn side(&self) -> Side {
        match self {
            Entry::Table(side, _) | Entry::Window(side, _, _) | Entry::Pending(side, _, _) => *side,
            Entry::Times => Side::Left,
        }
    }
}

/// A time as 8 bytes that sort as the times do.
pub(super) fn sortable(ts: i64) -> [u8; 8] {
    ((ts as u64) ^ (1 << 63)).to_be_bytes()
}

pub(super) fn table_entry(side: Side, key: &[u8]) -> Vec<u8> {
    let mut e = Vec::with_capacity(2 + key.len());
    e.extend_from_slice(&[ENTRY_TABLE, side as u8]);
    e.extend_from_slice(key);
    e
}

pub(super) fn window_entry(side: Side, ts: i64, seq: u64, key: &[u8]) -> Vec<u8> {
    let mut e = Vec::with_capacity(18 + key.len());
    e.extend_from_slice(&[ENTRY_WINDOW, side as u8]);
    e.extend_from_slice(&sortable(ts));
    e.extend_from_slice(&seq.to_be_bytes());
    e.extend_from_slice(key);
    e
}

pub(super) fn pending_entry((ts, side, key, seq): &(i64, Side, Vec<u8>, u64)) -> Vec<u8> {
    let mut e = Vec::with_capacity(18 + key.len());
    e.push(ENTRY_PENDING);
    e.extend_from_slice(&sortable(*ts));
    e.push(*side as u8);
    e.extend_from_slice(&seq.to_be_bytes());
    e.extend_from_slice(key);
    e
}

/// A row read back from the changelog.
pub(super) struct Restored {
    pub(super) ts: i64,
    pub(super) key: ScalarValue,
    pub(super) bounds: Option<[ScalarValue; 2]>,
    pub(super) columns: Vec<ScalarValue>,
}

/// A kept row as a changelog value: its time, key, window bounds and carried columns.
pub(super) fn encode_row(kept: &Kept) -> Result<Vec<u8>> {
    let (batch, row) = (&kept.batch, kept.row);
    let mut buf = Vec::new();
    let mut w = Writer(&mut buf);
    w.i64(kept.ts);
    w.scalar(&ScalarValue::try_from_array(&batch.key, row)?)?;
    match &batch.bounds {
        Some(bounds) => {
            w.bool(true);
            for b in bounds {
                w.scalar(&ScalarValue::try_from_array(b, row)?)?;
            }
        }
        None => w.bool(false),
    }
    let columns = batch.columns.columns();
    w.len(columns.len());
    for c in columns {
        w.scalar(&ScalarValue::try_from_array(c, row)?)?;
    }
    Ok(buf)
}

pub(super) fn decode_row(bytes: &[u8]) -> Result<Restored> {
    let mut r = Reader::new(bytes);
    let ts = r.i64()?;
    let key = r.scalar()?;
    let bounds = if r.bool()? {
        Some([r.scalar()?, r.scalar()?])
    } else {
        None
    };
    let columns = r.scalars()?;
    Ok(Restored {
        ts,
        key,
        bounds,
        columns,
    })
}
