//! Stream aggregation (GROUP BY), producing a table's changelog.
//!
//! Each input row, in order, updates its group's accumulators and emits the group's new
//! row. State lives in memory here: the deterministic driver runs it; on Kafka,
//! aggregations wait for changelogged state stores (the exactly-once issue).

use crate::accumulator::{Accumulator, value_arguments};
use crate::error::{Result, RuntimeError};
use crate::expr::{PhysExpr, compile, evaluate, output_field};
use crate::snapshot::{Reader, Writer};
use crate::types::{FLAG_COUNT, PSEUDO_COUNT, arrow_type};
use datafusion_common::ScalarValue;
use datafusion_common::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, UInt32Array, new_empty_array,
};
use datafusion_common::arrow::compute::take;
use datafusion_common::arrow::datatypes::Int64Type;
use datafusion_common::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion_common::arrow::record_batch::RecordBatch;
use hashbrown::{HashMap, HashSet};
use sluice_plan::{AggregateCall, Expr, LogicalSchema, NamedExpr, WindowKind, WindowSpec};
use sluice_state::Storage;
use std::collections::BTreeMap;
use std::sync::Arc;

struct Group {
    accumulators: Vec<Accumulator>,
    /// Whether the group's current row was emitted (passed HAVING).
    emitted: bool,
    /// The window's end (sessions grow; time windows end at start + size).
    end: i64,
    /// The largest timestamp of the window's rows: the time of its final row.
    max_ts: i64,
    /// EMIT FINAL: the window's final row was written.
    final_done: bool,
    /// The commit interval that last used the group (see `GroupStore`).
    touched: u64,
}

/// A row the aggregation writes: a group's current row, or the deletion of a session
/// window that merged into another.
enum Emitted {
    Group(Vec<ScalarValue>),
    /// A group's row where there is no HAVING: it always passes, and its group was
    /// marked emitted as the row was made.
    Passed,
    Removed,
}

/// The intermediate rows being built, column by column.
struct Rows {
    /// Key columns, aggregate results and window bounds.
    columns: Vec<Vec<ScalarValue>>,
    /// The input row each row came from, whose pseudo-columns it takes ...
    sources: Vec<u32>,
    /// ... but with this ROWTIME when given.
    rowtimes: Vec<Option<i64>>,
    emitted: Vec<Emitted>,
}

/// Groups kept in a state store (RocksDB on Kafka) instead of all in memory. Memory
/// holds the groups the current commit interval uses, and after a commit at most
/// `max_cached` groups; a row whose group is not in memory reads it back from the store.
/// The store receives an interval's changes only once the Kafka transaction that
/// carries them to the changelog has committed, so it never holds state the changelog
/// lacks; a start rebuilds it from the changelog.
///
/// A time-windowed aggregation keeps its groups under keys that start with the window's
/// start (order-preserving), so that the windows a stream time closes or expires are a
/// range of the store, found without keeping every group in memory.
struct GroupStore {
    storage: Box<dyn Storage + Send>,
    max_cached: usize,
    /// Changelog entries being restored, written to the store in batches.
    restoring: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Groups are time windows, keyed by start first.
    windowed: bool,
    /// Windows starting before this were expired from the store.
    expired_before: i64,
    /// EMIT FINAL: the windows starting at or before this were read back to be closed.
    closed_through: i64,
}

/// How many restored entries are written to a store at once.
const RESTORE_BATCH: usize = 10_000;

pub struct AggregateOp {
    group_by: Vec<PhysExpr>,
    calls: Vec<AggregateCall>,
    /// The value arguments of each aggregate (none for COUNT(*)); literal parameters
    /// are read by the accumulators themselves.
    args: Vec<Vec<PhysExpr>>,
    intermediate: SchemaRef,
    having: Option<PhysExpr>,
    projection: Vec<PhysExpr>,
    output: SchemaRef,
    /// Groups by key; windowed groups by key and window start.
    groups: HashMap<Vec<ScalarValue>, Group>,
    /// Session windows: each key's sessions, as (start, end). Kept whole in memory even
    /// when the groups live in a store: merging, closing and expiring read it.
    sessions: HashMap<Vec<ScalarValue>, Vec<(i64, i64)>>,
    window: Option<WindowSpec>,
    emit_final: bool,
    /// Numbers input rows in arrival order (for *_BY_OFFSET across merged sessions).
    seq: u64,
    /// The largest timestamp seen: windows that ended more than the grace period before
    /// it are closed.
    stream_time: i64,
    /// Records dropped because every window they belong to was closed.
    pub late_records: u64,
    /// The groups changed since the changelog last took them (None: not recorded).
    changed: Option<HashSet<Vec<ScalarValue>>>,
    /// No window expires before its expiry point (a time window's start, a session's
    /// end) falls behind the threshold `expire` computes; this is at most the smallest
    /// such point, so `expire` skips the scan of every group until the threshold passes
    /// it.
    expiry_bound: i64,
    /// Where groups live beyond memory (None: all in memory).
    store: Option<GroupStore>,
    /// The current commit interval, numbered.
    epoch: u64,
    /// Sessions with a store: no indexed session not in memory ends before this, so
    /// `expire` scans the index only once the closing point passes it.
    stored_sessions_bound: i64,
}

/// Changelog keys: a group's key, or the operator's own counters.
const GROUP_ENTRY: u8 = 0;
const META_ENTRY: u8 = 1;

/// Names of the window bounds after the output columns of a windowed aggregation; the
/// sink reads the start for the windowed key.
pub const WINDOW_START: &str = "$windowstart";
pub const WINDOW_END: &str = "$windowend";

/// The starts of the windows that contain `ts`, ascending, into `starts`.
fn window_starts(w: &WindowSpec, ts: i64, starts: &mut Vec<i64>) {
    starts.clear();
    let mut start = ts - ts.rem_euclid(w.advance_ms);
    while start > ts - w.size_ms && start >= 0 {
        starts.push(start);
        start -= w.advance_ms;
    }
    starts.reverse();
}

impl AggregateOp {
    /// Compiles the step against rows of `input` (which end with the pseudo-columns).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        input: &Schema,
        window: Option<&WindowSpec>,
        group_by: &[Expr],
        calls: &[AggregateCall],
        having: Option<&Expr>,
        projection: &[NamedExpr],
        schema: &LogicalSchema,
        emit_final: bool,
    ) -> Result<AggregateOp> {
        let group_exprs = group_by
            .iter()
            .map(|e| compile(e, input))
            .collect::<Result<Vec<_>>>()?;
        let args = calls
            .iter()
            .map(|c| {
                c.args[..value_arguments(c)]
                    .iter()
                    .map(|a| compile(a, input))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        // The intermediate row: key columns, $agg0..., then the pseudo-columns.
        let mut fields: Vec<Field> = schema
            .keys()
            .zip(&group_exprs)
            .map(|(c, e)| output_field(&c.name, e, input))
            .collect::<Result<_>>()?;
        for (i, c) in calls.iter().enumerate() {
            fields.push(Field::new(
                format!("$agg{i}"),
                arrow_type(&c.return_type),
                true,
            ));
        }
        let n = input.fields().len();
        let pseudo: Vec<Field> = input.fields()[n - PSEUDO_COUNT..]
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        if window.is_some() {
            fields.push(Field::new("WINDOWSTART", DataType::Int64, false));
            fields.push(Field::new("WINDOWEND", DataType::Int64, false));
        }
        fields.extend(pseudo.iter().cloned());
        let intermediate = Arc::new(Schema::new(fields));
        let having = having.map(|h| compile(h, &intermediate)).transpose()?;
        let projection = projection
            .iter()
            .map(|p| compile(&p.expr, &intermediate))
            .collect::<Result<Vec<_>>>()?;
        let mut out: Vec<Field> = schema
            .columns
            .iter()
            .map(|c| Field::new(&c.name, arrow_type(&c.ty), true))
            .collect();
        if window.is_some() {
            out.push(Field::new(WINDOW_START, DataType::Int64, false));
            out.push(Field::new(WINDOW_END, DataType::Int64, false));
        }
        out.extend(pseudo);
        Ok(AggregateOp {
            group_by: group_exprs,
            calls: calls.to_vec(),
            args,
            intermediate,
            having,
            projection,
            output: Arc::new(Schema::new(out)),
            groups: HashMap::new(),
            sessions: HashMap::new(),
            stored_sessions_bound: i64::MIN,
            window: window.cloned(),
            emit_final,
            seq: 0,
            stream_time: i64::MIN,
            late_records: 0,
            changed: None,
            expiry_bound: i64::MIN,
            store: None,
            epoch: 0,
        })
    }

    pub fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    /// Aggregates a batch of input rows into the rows of the output table's changelog.
    pub fn process(&mut self, batch: &RecordBatch, errors: &mut u64) -> Result<RecordBatch> {
        let keys: Vec<ArrayRef> = self
            .group_by
            .iter()
            .map(|e| evaluate(e, batch, errors))
            .collect::<Result<_>>()?;
        let args: Vec<Vec<ArrayRef>> = self
            .args
            .iter()
            .map(|exprs| {
                exprs
                    .iter()
                    .map(|e| evaluate(e, batch, errors))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        let n = batch.num_columns();
        let tombstone = batch.column(n - 1).as_boolean();
        let retract = batch.column(n - FLAG_COUNT).as_boolean();

        let mut rows = Rows {
            columns: vec![Vec::new(); self.intermediate.fields().len() - PSEUDO_COUNT],
            sources: Vec::new(),
            rowtimes: Vec::new(),
            emitted: Vec::new(),
        };
        let rowtime = batch
            .column(n - PSEUDO_COUNT)
            .as_primitive::<Int64Type>()
            .clone();
        let window = self.window.clone();
        let mut starts = Vec::new();
        let mut values: Vec<Vec<ScalarValue>> = vec![Vec::new(); args.len()];
        let always_pass = self.having.is_none();
        for row in 0..batch.num_rows() {
            if tombstone.value(row) || keys.iter().any(|k| k.is_null(row)) {
                continue;
            }
            let mut group_key = Vec::with_capacity(keys.len() + 1);
            for k in &keys {
                group_key.push(ScalarValue::try_from_array(k, row)?);
            }
            for (v, arg) in values.iter_mut().zip(&args) {
                v.clear();
                for a in arg {
                    v.push(ScalarValue::try_from_array(a, row)?);
                }
            }
            let ts = rowtime.value(row);
            self.seq += 1;
            let (seq, emit_final) = (self.seq, self.emit_final);
            match &window {
                None => {
                    let undo = retract.value(row);
                    if undo && !self.has_group(&group_key)? {
                        continue;
                    }
                    // A change that stays in its group emits once, after the undo and
                    // the add (KIP-904): the retraction then only undoes.
                    let silent = undo
                        && row + 1 < batch.num_rows()
                        && !retract.value(row + 1)
                        && !tombstone.value(row + 1)
                        && keys.iter().zip(&group_key).all(|(k, v)| {
                            ScalarValue::try_from_array(k, row + 1).is_ok_and(|next| next == *v)
                        });
                    let group = self.group(&group_key, i64::MAX)?;
                    apply(group, &values, undo, seq, ts)?;
                    if !silent {
                        rows.push(&group_key, group, None, row, None)?;
                        if always_pass {
                            group.emitted = true;
                            rows.emitted.push(Emitted::Passed);
                        } else {
                            rows.emitted.push(Emitted::Group(group_key));
                        }
                    }
                }
                Some(w) if w.kind == WindowKind::Session => {
                    self.session_update(&mut rows, group_key, &values, ts, row, w)?;
                }
                Some(w) => {
                    self.stream_time = self.stream_time.max(ts);
                    window_starts(w, ts, &mut starts);
                    starts.retain(|s| s + w.size_ms + w.grace_ms > self.stream_time);
                    if starts.is_empty() {
                        self.late_records += 1;
                    }
                    group_key.push(ScalarValue::Null);
                    for &start in &starts {
                        *group_key.last_mut().expect("pushed above") =
                            ScalarValue::Int64(Some(start));
                        let group = self.group(&group_key, start + w.size_ms)?;
                        apply(group, &values, false, seq, ts)?;
                        // A window's row carries its latest time (Kafka Streams'
                        // window stores keep the largest timestamp of the window).
                        if !emit_final {
                            let latest = group.max_ts;
                            let key = &group_key[..group_key.len() - 1];
                            rows.push(key, group, Some(start), row, Some(latest))?;
                            if always_pass {
                                group.emitted = true;
                                rows.emitted.push(Emitted::Passed);
                            } else {
                                rows.emitted.push(Emitted::Group(group_key.clone()));
                            }
                        }
                    }
                }
            }
            if self.emit_final {
                self.emit_closed(&mut rows, row)?;
            }
        }
        let columns = rows.columns;
        let row_keys = rows.emitted;
        let mut arrays: Vec<ArrayRef> = columns
            .into_iter()
            .zip(self.intermediate.fields())
            .map(|(values, f)| {
                if values.is_empty() {
                    Ok(new_empty_array(f.data_type()))
                } else {
                    ScalarValue::iter_to_array(values).map_err(RuntimeError::from)
                }
            })
            .collect::<Result<_>>()?;
        // The pseudo-columns of the rows' input rows, ROWTIME replaced where given.
        let sources = UInt32Array::from(rows.sources);
        for c in &batch.columns()[n - PSEUDO_COUNT..] {
            arrays.push(take(c, &sources, None)?);
        }
        let at = arrays.len() - PSEUDO_COUNT;
        arrays[at] = Arc::new(Int64Array::from_iter_values(
            rows.rowtimes
                .iter()
                .zip(sources.values())
                .map(|(t, s)| t.unwrap_or_else(|| rowtime.value(*s as usize))),
        ));
        let intermediate = RecordBatch::try_new(self.intermediate.clone(), arrays)?;

        // HAVING: a group that stops passing after it was emitted gets a tombstone;
        // one that never passed emits nothing.
        let passes: Vec<bool> = match &self.having {
            Some(h) => {
                let mask = evaluate(h, &intermediate, errors)?;
                let mask = mask.as_boolean();
                (0..mask.len())
                    .map(|i| mask.is_valid(i) && mask.value(i))
                    .collect()
            }
            None => vec![true; intermediate.num_rows()],
        };
        let mut keep = Vec::with_capacity(passes.len());
        let mut deleted = Vec::with_capacity(passes.len());
        for (emitted, pass) in row_keys.iter().zip(&passes) {
            match emitted {
                Emitted::Group(key) => {
                    let group = self
                        .groups
                        .get_mut(key)
                        .expect("every emitted row has a group");
                    keep.push(*pass || group.emitted);
                    deleted.push(!*pass);
                    group.emitted = *pass;
                }
                Emitted::Passed => {
                    keep.push(true);
                    deleted.push(false);
                }
                Emitted::Removed => {
                    keep.push(true);
                    deleted.push(true);
                }
            }
        }

        let mut out: Vec<ArrayRef> = intermediate.columns()[..self.group_by.len()].to_vec();
        for (e, f) in self
            .projection
            .iter()
            .zip(&self.output.fields()[self.group_by.len()..])
        {
            let a = evaluate(e, &intermediate, errors)?;
            out.push(if a.data_type() == f.data_type() {
                a
            } else {
                datafusion_common::arrow::compute::cast(&a, f.data_type())?
            });
        }
        let m = intermediate.num_columns();
        if self.window.is_some() {
            // The window bounds, for the windowed key.
            let at = m - PSEUDO_COUNT - 2;
            out.extend(intermediate.columns()[at..at + 2].iter().cloned());
        }
        // ROWTIME, ROWPARTITION, ROWOFFSET; every row is the group's new row (no
        // retraction), its key is never null; the tombstones.
        out.extend(
            intermediate.columns()[m - PSEUDO_COUNT..m - FLAG_COUNT]
                .iter()
                .cloned(),
        );
        let no = BooleanArray::from(vec![false; intermediate.num_rows()]);
        out.push(Arc::new(no.clone()));
        out.push(Arc::new(no));
        out.push(Arc::new(BooleanArray::from(deleted)));
        let result = RecordBatch::try_new(self.output.clone(), out)?;
        self.expire()?;
        Ok(datafusion_common::arrow::compute::filter_record_batch(
            &result,
            &BooleanArray::from(keep),
        )?)
    }
}

/// Adds (or takes back) one row's values in a group.
/// Applies a row to a group. A row that takes a result out of its type (a DECIMAL sum
/// past its precision) fails the query, which resumes from its last commit if ever.
fn apply(
    group: &mut Group,
    values: &[Vec<ScalarValue>],
    undo: bool,
    seq: u64,
    ts: i64,
) -> Result<()> {
    for (acc, v) in group.accumulators.iter_mut().zip(values) {
        if undo {
            acc.undo(v)?;
        } else {
            acc.update(v, seq)?;
        }
    }
    group.max_ts = group.max_ts.max(ts);
    Ok(())
}

impl Rows {
    /// Appends the intermediate row of a group: key columns, aggregate results, window
    /// bounds, then (at the end of the batch) the pseudo-columns of input row `source`,
    /// ROWTIME replaced if given. The caller adds what the row is (`emitted`).
    fn push(
        &mut self,
        group_key: &[ScalarValue],
        group: &Group,
        window_start: Option<i64>,
        source: usize,
        rowtime: Option<i64>,
    ) -> Result<()> {
        let mut i = 0;
        for k in group_key {
            self.columns[i].push(k.clone());
            i += 1;
        }
        for acc in &group.accumulators {
            self.columns[i].push(acc.value()?);
            i += 1;
        }
        if let Some(start) = window_start {
            self.columns[i].push(ScalarValue::Int64(Some(start)));
            self.columns[i + 1].push(ScalarValue::Int64(Some(group.end)));
        }
        self.sources.push(source as u32);
        self.rowtimes.push(rowtime);
        Ok(())
    }
}

impl AggregateOp {
    /// The group for `key`, created empty if new; the caller changes it.
    fn group(&mut self, key: &[ScalarValue], end: i64) -> Result<&mut Group> {
        self.touch(key);
        let point = self.expiry_point(key, end);
        let (calls, epoch) = (&self.calls, self.epoch);
        let group = match self.groups.entry_ref(key) {
            hashbrown::hash_map::EntryRef::Occupied(e) => e.into_mut(),
            hashbrown::hash_map::EntryRef::Vacant(e) => {
                // Not in memory: in the store, or new.
                let stored = match &self.store {
                    Some(store) => store.read(key, calls, epoch)?,
                    None => None,
                };
                let group = match stored {
                    Some(group) => group,
                    None => {
                        if let Some(point) = point {
                            self.expiry_bound = self.expiry_bound.min(point);
                        }
                        Group {
                            accumulators: calls
                                .iter()
                                .map(Accumulator::new)
                                .collect::<Result<_>>()?,
                            emitted: false,
                            end,
                            max_ts: i64::MIN,
                            final_done: false,
                            touched: epoch,
                        }
                    }
                };
                e.insert(group)
            }
        };
        group.touched = epoch;
        Ok(group)
    }

    /// A row for a session-windowed aggregation (Kafka Streams' session semantics):
    /// sessions of the key within the gap of `ts` merge with the row into one; the
    /// merged-away sessions are deleted.
    fn session_update(
        &mut self,
        rows: &mut Rows,
        group_key: Vec<ScalarValue>,
        values: &[Vec<ScalarValue>],
        ts: i64,
        source: usize,
        w: &WindowSpec,
    ) -> Result<()> {
        self.stream_time = self.stream_time.max(ts);
        let close = self.stream_time - w.grace_ms - w.size_ms;
        let sessions = self.sessions.get(&group_key).cloned().unwrap_or_default();
        let mut overlapping: Vec<(i64, i64)> = Vec::new();
        for (start, end) in sessions {
            if end >= ts - w.size_ms && start <= ts + w.size_ms {
                overlapping.push((start, end));
            }
        }
        overlapping.sort_by_key(|(s, e)| (*e, *s));
        let start = overlapping.iter().map(|(s, _)| *s).fold(ts, i64::min);
        let end = overlapping.iter().map(|(_, e)| *e).fold(ts, i64::max);
        if end < close {
            self.late_records += 1;
            return Ok(());
        }
        let mut merged = self
            .calls
            .iter()
            .map(Accumulator::new)
            .collect::<Result<Vec<_>>>()?;
        let mut max_ts = i64::MIN;
        let mut emitted = false;
        let same_window = overlapping == [(ts, ts)];
        for (s, e) in &overlapping {
            let mut key = group_key.clone();
            key.push(ScalarValue::Int64(Some(*s)));
            let old = self.take_group(&key)?;
            self.touch(&key);
            for (m, o) in merged.iter_mut().zip(&old.accumulators) {
                m.merge(o)?;
            }
            max_ts = max_ts.max(old.max_ts);
            emitted |= old.emitted;
            if !same_window && !self.emit_final {
                rows.push(&group_key, &old, Some(*s), source, Some(*e))?;
                rows.emitted.push(Emitted::Removed);
            }
        }
        let index = self.sessions.entry(group_key.clone()).or_default();
        index.retain(|(s, _)| !overlapping.iter().any(|(o, _)| o == s));
        index.push((start, end));
        let mut key = group_key.clone();
        key.push(ScalarValue::Int64(Some(start)));
        let (seq, emit_final) = (self.seq, self.emit_final);
        let group = self.group(&key, end)?;
        // The merged session replaces whatever had its key (a store may still hold the
        // old session under it until the commit deletes it).
        group.accumulators = merged;
        group.end = end;
        group.final_done = false;
        group.max_ts = max_ts;
        // A deleted session's row is gone downstream; a same-window update is not.
        group.emitted = same_window && emitted;
        apply(group, values, false, seq, ts)?;
        if !emit_final {
            rows.push(&group_key, group, Some(start), source, Some(end))?;
            rows.emitted.push(Emitted::Group(key));
        }
        Ok(())
    }

    /// EMIT FINAL: writes the rows of windows that closed and are still kept (Kafka
    /// Streams emits on window close from the window store, which forgets windows
    /// older than the retention).
    fn emit_closed(&mut self, rows: &mut Rows, source: usize) -> Result<()> {
        let Some(w) = self.window.clone() else {
            return Ok(());
        };
        let session = w.kind == WindowKind::Session;
        let close = if session {
            self.stream_time - w.grace_ms - w.size_ms
        } else {
            self.stream_time - w.grace_ms
        };
        let kept_from = self.stream_time - w.retention();
        if session {
            self.load_closed_sessions(close)?;
        } else {
            // A time window closes once its end (start + size) is at or before `close`.
            let size = w.size_ms;
            self.load_closed(close.saturating_sub(size))?;
        }
        let mut due: Vec<(String, i64, Vec<ScalarValue>)> = self
            .groups
            .iter()
            .filter(|(key, g)| {
                let start = match key.last() {
                    Some(ScalarValue::Int64(Some(s))) => *s,
                    _ => return false,
                };
                !g.final_done && g.end <= close && (session || start >= kept_from)
            })
            .map(|(key, g)| (format!("{:?}", &key[..key.len() - 1]), g.end, key.clone()))
            .collect();
        due.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        for (_, _, key) in due {
            let start = match key.last() {
                Some(ScalarValue::Int64(Some(s))) => *s,
                _ => continue,
            };
            self.touch(&key);
            let group = self.groups.get_mut(&key).expect("due groups exist");
            group.final_done = true;
            let group = &self.groups[&key];
            rows.push(
                &key[..key.len() - 1],
                group,
                Some(start),
                source,
                Some(group.max_ts),
            )?;
            rows.emitted.push(Emitted::Group(key.clone()));
        }
        Ok(())
    }

    /// Where a new group's window expires: its start (time windows) or its end
    /// (sessions); None without a window.
    fn expiry_point(&self, key: &[ScalarValue], end: i64) -> Option<i64> {
        match (&self.window, key.last()) {
            (Some(w), _) if w.kind == WindowKind::Session => Some(end),
            (Some(_), Some(ScalarValue::Int64(Some(start)))) => Some(*start),
            _ => None,
        }
    }

    /// Forgets windows that can change no more and whose rows are written.
    fn expire(&mut self) -> Result<()> {
        let Some(w) = self.window.clone() else {
            return Ok(());
        };
        let (stream_time, emit_final) = (self.stream_time, self.emit_final);
        self.expire_stored(stream_time - w.retention())?;
        let session = w.kind == WindowKind::Session;
        let close = stream_time - w.grace_ms - if session { w.size_ms } else { 0 };
        let kept_from = stream_time - w.retention();
        let threshold = if session { close } else { kept_from };
        if session && !emit_final && self.store.is_some() && close > self.stored_sessions_bound {
            self.expire_stored_sessions(close);
        }
        if threshold <= self.expiry_bound {
            return Ok(());
        }
        let mut gone_sessions = Vec::new();
        let changed = &mut self.changed;
        let mut bound = i64::MAX;
        self.groups.retain(|key, g| {
            let start = match key.last() {
                Some(ScalarValue::Int64(Some(s))) => *s,
                _ => return true,
            };
            let keep = if session {
                g.end >= close || (emit_final && !g.final_done)
            } else {
                start >= kept_from
            };
            if keep {
                bound = bound.min(if session { g.end } else { start });
            }
            if !keep && session {
                gone_sessions.push((key[..key.len() - 1].to_vec(), start));
            }
            if !keep && let Some(changed) = changed {
                changed.insert(key.clone());
            }
            keep
        });
        self.expiry_bound = bound;
        for (group_key, start) in gone_sessions {
            self.forget_session(&group_key, start);
        }
        Ok(())
    }

    fn forget_session(&mut self, group_key: &[ScalarValue], start: i64) {
        if let Some(index) = self.sessions.get_mut(group_key) {
            index.retain(|(s, _)| *s != start);
            if index.is_empty() {
                self.sessions.remove(group_key);
            }
        }
    }

    /// With a store and without EMIT FINAL (whose closed sessions are read back to be
    /// emitted first, see `load_closed_sessions`): the sessions that ended before `close`
    /// and are not in memory are deleted through the changelog without being read back.
    fn expire_stored_sessions(&mut self, close: i64) {
        let mut gone = Vec::new();
        let mut bound = i64::MAX;
        for (group_key, index) in &self.sessions {
            for (start, end) in index {
                let mut key = group_key.clone();
                key.push(ScalarValue::Int64(Some(*start)));
                if *end < close && !self.groups.contains_key(&key) {
                    gone.push((group_key.clone(), *start, key));
                } else {
                    // A session in memory now may be only in the store by the next call.
                    bound = bound.min(*end);
                }
            }
        }
        for (group_key, start, key) in gone {
            if let Some(changed) = &mut self.changed {
                changed.insert(key);
            }
            self.forget_session(&group_key, start);
        }
        // No indexed session ends before this: the next scan waits until `close` passes
        // it (sessions indexed later end after today's `close`).
        self.stored_sessions_bound = bound;
    }

    /// A group out of memory, or read back from the store; an error if neither has it.
    fn take_group(&mut self, key: &[ScalarValue]) -> Result<Group> {
        if let Some(g) = self.groups.remove(key) {
            return Ok(g);
        }
        let stored = match &self.store {
            Some(store) => store.read(key, &self.calls, self.epoch)?,
            None => None,
        };
        stored.ok_or_else(|| RuntimeError::State("an indexed session window is missing".into()))
    }

    /// EMIT FINAL over sessions with a store: reads back the closed sessions that are not
    /// in memory, so that closing them finds them.
    fn load_closed_sessions(&mut self, close: i64) -> Result<()> {
        if self.store.is_none() {
            return Ok(());
        }
        let mut wanted = Vec::new();
        for (group_key, index) in &self.sessions {
            for (start, end) in index {
                if *end <= close {
                    let mut key = group_key.clone();
                    key.push(ScalarValue::Int64(Some(*start)));
                    if !self.groups.contains_key(&key) {
                        wanted.push(key);
                    }
                }
            }
        }
        for key in wanted {
            let group = self.take_group(&key)?;
            self.groups.insert(key, group);
        }
        Ok(())
    }

    /// Deletes the stored time windows that start before `kept_from`: through the
    /// changelog (as deletions of the interval), or at once when nothing is recorded.
    fn expire_stored(&mut self, kept_from: i64) -> Result<()> {
        let Some(store) = &mut self.store else {
            return Ok(());
        };
        if !store.windowed || kept_from <= store.expired_before {
            return Ok(());
        }
        let gone = store.windows(store.expired_before, kept_from)?;
        store.expired_before = kept_from;
        match &mut self.changed {
            Some(changed) => {
                for (key, _) in gone {
                    self.groups.remove(&key);
                    changed.insert(key);
                }
            }
            None => {
                let mut deletions = BTreeMap::new();
                for (key, _) in gone {
                    self.groups.remove(&key);
                    deletions.insert(group_entry_key(&key)?, None);
                }
                store.write(&deletions)?;
            }
        }
        Ok(())
    }

    /// EMIT FINAL with a store: reads back the stored windows that closed since the last
    /// call (those starting through `closed_through`), so that closing them finds them.
    fn load_closed(&mut self, closed_through: i64) -> Result<()> {
        let Some(store) = &mut self.store else {
            return Ok(());
        };
        if !store.windowed || closed_through <= store.closed_through {
            return Ok(());
        }
        let from = store.closed_through.saturating_add(1);
        let found = store.windows(from, closed_through.saturating_add(1))?;
        store.closed_through = closed_through;
        for (key, value) in found {
            if !self.groups.contains_key(&key) {
                let group = decode_group(&self.calls, self.epoch, &value)?;
                self.groups.insert(key, group);
            }
        }
        Ok(())
    }
}

/// Changelog support: what changed since the last commit, as key and value bytes, and
/// the state rebuilt from such entries.
impl AggregateOp {
    /// Starts recording which groups change.
    pub fn record_changes(&mut self) {
        self.changed.get_or_insert_with(HashSet::new);
    }

    fn touch(&mut self, key: &[ScalarValue]) {
        if let Some(changed) = &mut self.changed
            && !changed.contains(key)
        {
            changed.insert(key.to_vec());
        }
    }

    /// The entries changed since the last call: each changed group's state, or a
    /// deletion for a group that is gone; then the counters.
    pub fn take_changes(&mut self, out: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        let Some(changed) = self.changed.as_mut() else {
            return Ok(());
        };
        if changed.is_empty() {
            return Ok(());
        }
        let changed = std::mem::take(changed);
        for key in changed {
            let value = match self.groups.get(&key) {
                None => None,
                Some(g) => Some(encode_group(g)?),
            };
            out.push((group_entry_key(&key)?, value));
        }
        let mut v = Vec::new();
        let mut w = Writer(&mut v);
        w.i64(self.stream_time);
        w.u64(self.seq);
        w.u64(self.late_records);
        out.push((vec![META_ENTRY], Some(v)));
        Ok(())
    }

    /// Forgets every group, before a restore; `keep_stored`: the store's groups are
    /// kept (they are committed state, and the restore replays only the changelog's
    /// tail onto them), only what memory holds is forgotten.
    pub fn clear(&mut self, keep_stored: bool) -> Result<()> {
        if let Some(store) = &mut self.store {
            if !keep_stored {
                store.storage.clear()?;
            }
            store.restoring.clear();
            store.expired_before = i64::MIN;
            store.closed_through = i64::MIN;
        }
        self.groups.clear();
        self.sessions.clear();
        self.stream_time = i64::MIN;
        self.seq = 0;
        self.expiry_bound = i64::MIN;
        if let Some(c) = &mut self.changed {
            c.clear();
        }
        Ok(())
    }

    /// Applies one changelog entry (the last entry for a key wins).
    pub fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        match key.split_first() {
            Some((&GROUP_ENTRY, rest)) => {
                if let Some(store) = &mut self.store {
                    store
                        .restoring
                        .insert(key.to_vec(), value.map(<[u8]>::to_vec));
                    if store.restoring.len() >= RESTORE_BATCH {
                        store.flush_restored()?;
                    }
                    return Ok(());
                }
                let group_key = Reader::new(rest).scalars()?;
                match value {
                    None => self.groups.remove(&group_key),
                    Some(value) => {
                        let group = decode_group(&self.calls, self.epoch, value)?;
                        self.groups.insert(group_key, group)
                    }
                };
            }
            Some((&META_ENTRY, _)) => {
                if let Some(store) = &mut self.store {
                    store
                        .restoring
                        .insert(key.to_vec(), value.map(<[u8]>::to_vec));
                }
                if let Some(value) = value {
                    let mut r = Reader::new(value);
                    self.stream_time = r.i64()?;
                    self.seq = r.u64()?;
                    self.late_records = r.u64()?;
                }
            }
            _ => {
                return Err(RuntimeError::State(
                    "an aggregation's changelog entry of an unknown kind".into(),
                ));
            }
        }
        Ok(())
    }

    /// Rebuilds what follows from the restored groups: each key's sessions (read from
    /// the store too, when the groups went there).
    pub fn finish_restore(&mut self) -> Result<()> {
        if let Some(store) = &mut self.store {
            store.flush_restored()?;
            // The counters as the store has them: a restore onto kept groups may
            // replay no counters.
            if let Some(value) = store.storage.get(&[META_ENTRY])? {
                let mut r = Reader::new(&value);
                self.stream_time = r.i64()?;
                self.seq = r.u64()?;
                self.late_records = r.u64()?;
            }
        }
        // The next `expire` scans the restored groups and sets the bounds.
        self.expiry_bound = i64::MIN;
        self.stored_sessions_bound = i64::MIN;
        self.sessions.clear();
        if !self
            .window
            .as_ref()
            .is_some_and(|w| w.kind == WindowKind::Session)
        {
            return Ok(());
        }
        let mut found: Vec<(Vec<ScalarValue>, i64)> = self
            .groups
            .iter()
            .map(|(k, g)| (k.clone(), g.end))
            .collect();
        if let Some(store) = &self.store {
            for (k, v) in store
                .storage
                .scan(&[GROUP_ENTRY], Some(&[GROUP_ENTRY + 1]))?
            {
                let key = Reader::new(&k[1..]).scalars()?;
                let mut r = Reader::new(&v);
                let (_emitted, end) = (r.bool()?, r.i64()?);
                found.push((key, end));
            }
        }
        for (key, end) in found {
            if let Some(ScalarValue::Int64(Some(start))) = key.last() {
                let index = self
                    .sessions
                    .entry(key[..key.len() - 1].to_vec())
                    .or_default();
                if !index.iter().any(|(s, _)| s == start) {
                    index.push((*start, end));
                }
            }
        }
        Ok(())
    }
}

/// A group's state from its changelog (and store) value; `calls` are the aggregation's
/// functions, `epoch` the current commit interval.
fn decode_group(calls: &[AggregateCall], epoch: u64, value: &[u8]) -> Result<Group> {
    let mut r = Reader::new(value);
    let (emitted, end, max_ts, final_done) = (r.bool()?, r.i64()?, r.i64()?, r.bool()?);
    let mut accumulators = calls
        .iter()
        .map(Accumulator::new)
        .collect::<Result<Vec<_>>>()?;
    for acc in &mut accumulators {
        acc.load(&mut r)?;
    }
    if !r.is_empty() {
        return Err(RuntimeError::State(
            "an aggregation's changelog entry longer than its state".into(),
        ));
    }
    Ok(Group {
        accumulators,
        emitted,
        end,
        max_ts,
        final_done,
        touched: epoch,
    })
}

/// The changelog (and store) key of a group.
fn group_entry_key(key: &[ScalarValue]) -> Result<Vec<u8>> {
    let mut k = vec![GROUP_ENTRY];
    Writer(&mut k).scalars(key)?;
    Ok(k)
}

/// A group's state as its changelog (and store) value.
fn encode_group(g: &Group) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    let mut w = Writer(&mut v);
    w.bool(g.emitted);
    w.i64(g.end);
    w.i64(g.max_ts);
    w.bool(g.final_done);
    for acc in &g.accumulators {
        acc.save(&mut w)?;
    }
    Ok(v)
}

/// A window start as 8 bytes that sort as the numbers do.
fn ordered_start(start: i64) -> [u8; 8] {
    (start ^ i64::MIN).to_be_bytes()
}

impl GroupStore {
    /// The store key of a group: its changelog key, or for a time window the window's
    /// start first, then the rest of the key.
    fn key_for(&self, key: &[ScalarValue]) -> Result<Vec<u8>> {
        match (self.windowed, key.split_last()) {
            (true, Some((ScalarValue::Int64(Some(start)), rest))) => {
                let mut k = vec![GROUP_ENTRY];
                k.extend_from_slice(&ordered_start(*start));
                Writer(&mut k).scalars(rest)?;
                Ok(k)
            }
            _ => group_entry_key(key),
        }
    }

    /// The store key of a group's changelog key.
    fn store_key(&self, changelog_key: &[u8]) -> Result<Vec<u8>> {
        if !self.windowed || changelog_key.first() != Some(&GROUP_ENTRY) {
            return Ok(changelog_key.to_vec());
        }
        let key = Reader::new(&changelog_key[1..]).scalars()?;
        self.key_for(&key)
    }

    /// The stored state of a group, if the store has it.
    fn read(
        &self,
        key: &[ScalarValue],
        calls: &[AggregateCall],
        epoch: u64,
    ) -> Result<Option<Group>> {
        self.storage
            .get(&self.key_for(key)?)?
            .map(|value| decode_group(calls, epoch, &value))
            .transpose()
    }

    /// The stored windows starting in `from..to`, as group keys (window start last) and
    /// their stored state.
    fn windows(&self, from: i64, to: i64) -> Result<Vec<(Vec<ScalarValue>, Vec<u8>)>> {
        let bound = |start: i64| {
            let mut k = vec![GROUP_ENTRY];
            k.extend_from_slice(&ordered_start(start));
            k
        };
        if from >= to {
            return Ok(Vec::new());
        }
        self.storage
            .scan(&bound(from), Some(&bound(to)))?
            .into_iter()
            .map(|(k, v)| {
                let start = i64::from_be_bytes(k[1..9].try_into().expect("8 bytes")) ^ i64::MIN;
                let mut key = Reader::new(&k[9..]).scalars()?;
                key.push(ScalarValue::Int64(Some(start)));
                Ok((key, v))
            })
            .collect()
    }

    /// Writes changelog entries (keyed as the changelog keys them) to the store.
    fn write(&mut self, entries: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        if !self.windowed {
            return Ok(self.storage.write(entries)?);
        }
        let rekeyed = entries
            .iter()
            .map(|(k, v)| Ok((self.store_key(k)?, v.clone())))
            .collect::<Result<BTreeMap<_, _>>>()?;
        Ok(self.storage.write(&rekeyed)?)
    }

    fn flush_restored(&mut self) -> Result<()> {
        let restored = std::mem::take(&mut self.restoring);
        self.write(&restored)
    }
}

/// Groups in a state store.
impl AggregateOp {
    /// Keeps the groups in `storage`, with at most `max_cached` in memory between
    /// commits. Aggregations without a window and in time windows can; session windows
    /// merge by scanning a key's sessions, which stay in memory. Returns whether the
    /// store was taken.
    pub fn use_store(&mut self, storage: Box<dyn Storage + Send>, max_cached: usize) -> bool {
        if !self.can_use_store() {
            return false;
        }
        self.store = Some(GroupStore {
            storage,
            max_cached,
            restoring: BTreeMap::new(),
            windowed: self
                .window
                .as_ref()
                .is_some_and(|w| w.kind != WindowKind::Session),
            expired_before: i64::MIN,
            closed_through: i64::MIN,
        });
        true
    }

    /// Whether the groups live in a state store, which outlives the process.
    pub fn has_store(&self) -> bool {
        self.store.is_some()
    }

    /// Whether the groups can live in a state store (see `use_store`): all can.
    pub fn can_use_store(&self) -> bool {
        true
    }

    /// Whether the group exists (in memory, or in the store, from which it is read).
    fn has_group(&mut self, key: &[ScalarValue]) -> Result<bool> {
        if self.groups.contains_key(key) {
            return Ok(true);
        }
        let Some(store) = &self.store else {
            return Ok(false);
        };
        match store.read(key, &self.calls, self.epoch)? {
            Some(group) => {
                self.groups.insert(key.to_vec(), group);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Once the changelog holds an interval's changes (its transaction committed): writes
    /// the groups among `changes` (this aggregation's changelog entries) to the store in
    /// one batch, and forgets groups from memory beyond the cache's bound, the ones this
    /// interval did not use first.
    pub fn commit_store(&mut self, changes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> Result<()> {
        let Some(store) = &mut self.store else {
            return Ok(());
        };
        // The groups and the counters: a restore from a checkpoint finds both here.
        store.write(changes)?;
        if self.groups.len() > store.max_cached {
            let epoch = self.epoch;
            self.groups.retain(|_, g| g.touched == epoch);
            if self.groups.len() > store.max_cached {
                self.groups.clear();
            }
        }
        self.epoch += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_fall_into_every_window_that_contains_them() {
        let tumbling = WindowSpec {
            kind: sluice_plan::WindowKind::Tumbling,
            retention_ms: None,
            size_ms: 10,
            advance_ms: 10,
            grace_ms: 0,
        };
        let starts = |w: &WindowSpec, ts: i64| {
            let mut v = Vec::new();
            window_starts(w, ts, &mut v);
            v
        };
        assert_eq!(starts(&tumbling, 0), vec![0]);
        assert_eq!(starts(&tumbling, 19), vec![10]);
        let hopping = WindowSpec {
            kind: sluice_plan::WindowKind::Tumbling,
            retention_ms: None,
            size_ms: 10,
            advance_ms: 5,
            grace_ms: 0,
        };
        assert_eq!(starts(&hopping, 12), vec![5, 10]);
        // Windows never start before the epoch.
        assert_eq!(starts(&hopping, 3), vec![0]);
    }
}
