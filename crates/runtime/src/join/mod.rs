//! Joins of two inputs on a key, with the semantics ksqlDB gets from Kafka Streams.
//!
//! - Stream-table: a stream row looks up the table's current row for its key; table
//!   changes only update the table.
//! - Table-table: a change on either side emits the joined row for its key, or a
//!   deletion when no joined row remains for the key.
//! - Stream-stream: each side's rows are kept for the join window; a row joins the other
//!   side's rows of its key within the window. Rows that an outer join keeps without a
//!   match are emitted at once without a grace period, or once their window has closed
//!   with one (Kafka Streams' rule since KIP-633).
//!
//! Rows are kept as references to the batch they arrived in (an `Arc` and a row number:
//! no copy, and no per-row arrays); the output batch is assembled with one `interleave`
//! per column from the distinct batches its rows point into.
//!
//! The state is changelogged (`changelog`) and, on Kafka, kept in a state store behind
//! the rows memory holds (`store`).

use crate::error::{Result, RuntimeError};
use crate::expr::{PhysExpr, compile, evaluate};
use crate::snapshot::{Reader, Writer};
use crate::types::WINDOW_BOUNDS;
use crate::types::{FLAG_COUNT, KEY_NULL, PSEUDO_COUNT, RETRACT, TOMBSTONE};
use datafusion_common::ScalarValue;
use datafusion_common::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Array, Int64Array, UInt32Array, new_null_array,
};
use datafusion_common::arrow::compute::{cast, interleave, take};
use datafusion_common::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion_common::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion_common::arrow::row::{RowConverter, Rows, SortField};
use hashbrown::{HashMap, HashSet};
use sluice_plan::{CarriedColumn, JoinKind, JoinShape, LogicalSchema, PSEUDO_COLUMNS, WindowKind};
use sluice_state::{Storage, prefix_end};
use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::sync::Arc;

mod changelog;
mod store;

use changelog::{pending_entry, table_entry, window_entry};
use store::JoinStore;

/// Which input of a join a batch comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    Left = 0,
    Right = 1,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Left => Side::Right,
            Side::Right => Side::Left,
        }
    }
}

/// The carried columns and join keys of one input batch, shared by every row of it the
/// join keeps or emits.
struct BatchRows {
    columns: RecordBatch,
    key: ArrayRef,
    /// Joins of windowed sources: the rows' window bounds, which the result keeps.
    bounds: Option<[ArrayRef; 2]>,
}

/// A batch of one side as the join reads it.
struct SideBatch {
    side: Side,
    rows: Arc<BatchRows>,
    /// Each row's key (and window) encoded, for lookups and the stores' keys.
    key_bytes: Rows,
    rowtime: Int64Array,
    partition: Int32Array,
    offset: Int64Array,
    retract: BooleanArray,
    tombstone: BooleanArray,
    /// Foreign-key joins, left side: each row's primary key, encoded.
    primary: Option<Rows>,
}

/// A row of an input batch, kept in the join's state or paired in an output row.
type RowRef = (Arc<BatchRows>, usize);

/// A row kept in the join's state, and its time.
#[derive(Clone)]
struct Kept {
    batch: Arc<BatchRows>,
    row: usize,
    ts: i64,
    /// A window store's rows: the row's number among the rows the join stored, which
    /// tells rows of one key and time apart in the changelog.
    seq: u64,
}

impl Kept {
    fn at(&self) -> RowRef {
        (self.batch.clone(), self.row)
    }
}

/// One row of output, before it is assembled.
struct Emit {
    left: Option<Kept>,
    right: Option<Kept>,
    /// The row that caused it: its key, partition and offset.
    key: RowRef,
    ts: i64,
    partition: i32,
    offset: i64,
    /// A deletion of the key's joined row (tables).
    tombstone: bool,
    /// The key's previous joined row, undone ahead of its new one (tables), for an
    /// aggregation downstream; sinks skip it.
    retract: bool,
}

/// A table row's key bytes.
type TableKey = smallvec::SmallVec<[u8; 16]>;

/// How many stream rows are kept between sweeps of the window stores.
const SWEEP_EVERY: usize = 10_000;

/// The grace period of a stream-stream join without one: Kafka Streams' old default.
const DEFAULT_GRACE_MS: i64 = 24 * 60 * 60 * 1000;

/// A stream row that an outer join keeps, waiting for its window to close.
type Pending = BTreeMap<(i64, Side, Vec<u8>, u64), Kept>;

pub struct JoinOp {
    kind: JoinKind,
    shape: JoinShape,
    keys: [PhysExpr; 2],
    /// The indexes of each side's carried columns in its input rows.
    carried: [Vec<usize>; 2],
    carried_schema: [SchemaRef; 2],
    /// A one-row NULL of each side's carried columns, for output rows without that side.
    nulls: [Vec<ArrayRef>; 2],
    schema: SchemaRef,
    /// An output batch without rows.
    empty: RecordBatch,
    rows: RowConverter,
    /// Joins of windowed sources: where each side's rows have their window bounds, and
    /// whether the end is part of the key (session windows; a time window's key has
    /// only its start, so windows of other sizes that start together match).
    windowed: Option<([[usize; 2]; 2], bool)>,
    /// Tables: each side's current row per key. Keys of up to 16 bytes (numbers, short
    /// strings) are kept in the entry itself: a lookup touches no other memory.
    tables: [HashMap<TableKey, Kept>; 2],
    /// Streams: each side's rows per key, in arrival order.
    windows: [HashMap<Vec<u8>, Vec<Kept>>; 2],
    pending: Pending,
    pending_seq: u64,
    /// Foreign-key joins: the left rows' primary key columns and their encoding, each
    /// left row's foreign key, and per foreign key the left rows that have it (in key
    /// order, as Kafka Streams' subscription store scans them).
    primary: Option<(Vec<usize>, RowConverter)>,
    left_foreign_keys: HashMap<Vec<u8>, Vec<u8>>,
    subscriptions: HashMap<Vec<u8>, BTreeSet<Vec<u8>>>,
    /// The latest time seen on either side.
    stream_time: i64,
    /// The latest time seen on each side: a side's window store keeps rows no older
    /// than this minus its retention.
    side_time: [i64; 2],
    /// Stream rows kept since the window stores were last swept of expired rows.
    since_sweep: usize,
    /// The time of each window store's oldest row in memory (at most): a sweep finds
    /// nothing to expire before the retention passes it.
    oldest: [i64; 2],
    /// How many rows the window stores have taken (each row's `seq`).
    stored_rows: u64,
    /// The changelog: the entries changed since it last took them (None: not recorded),
    /// whether the times changed, and whether the changelog holds the join's times
    /// entry, which every join writes at its first commit.
    changes: Option<BTreeMap<Vec<u8>, Option<Kept>>>,
    times_changed: bool,
    has_times_entry: bool,
    /// Entries read back from the changelog, until `finish_restore` builds the state.
    restoring: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Each side's key type, for rows read back from the changelog.
    key_types: [DataType; 2],
    /// The state in a state store, when it is (see `use_store`).
    store: Option<JoinStore>,
}

impl JoinOp {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: JoinKind,
        shape: &JoinShape,
        left_schema: &Schema,
        right_schema: &Schema,
        left_key: &sluice_plan::Expr,
        right_key: &sluice_plan::Expr,
        left_columns: &[CarriedColumn],
        right_columns: &[CarriedColumn],
        logical: &LogicalSchema,
        window: Option<WindowKind>,
    ) -> Result<JoinOp> {
        let keys = [
            compile(left_key, left_schema)?,
            compile(right_key, right_schema)?,
        ];
        let key_type = keys[0].data_type(left_schema)?;
        let key_types = [key_type.clone(), keys[1].data_type(right_schema)?];
        let bounds_of = |schema: &Schema| -> Option<[usize; 2]> {
            Some([
                schema.index_of(WINDOW_BOUNDS[0]).ok()?,
                schema.index_of(WINDOW_BOUNDS[1]).ok()?,
            ])
        };
        let windowed = match (window, bounds_of(left_schema), bounds_of(right_schema)) {
            (Some(kind), Some(l), Some(r)) => Some(([l, r], kind == WindowKind::Session)),
            _ => None,
        };
        let mut fields = vec![Field::new(&logical.columns[0].name, key_type.clone(), true)];
        let mut carried = [Vec::new(), Vec::new()];
        let mut carried_schema = Vec::new();
        for (i, (schema, columns)) in [(left_schema, left_columns), (right_schema, right_columns)]
            .into_iter()
            .enumerate()
        {
            let mut side_fields = Vec::new();
            for c in columns {
                let idx = schema.index_of(&c.from).map_err(|_| {
                    RuntimeError::Plan(format!("join input column {} missing", c.from))
                })?;
                carried[i].push(idx);
                let f = Field::new(&c.to, schema.field(idx).data_type().clone(), true);
                side_fields.push(f.clone());
                fields.push(f);
            }
            carried_schema.push(Arc::new(Schema::new(side_fields)));
        }
        // The result of a join of windowed sources is windowed as its rows are.
        if windowed.is_some() {
            for bound in WINDOW_BOUNDS {
                fields.push(Field::new(bound, DataType::Int64, false));
            }
        }
        for (name, ty) in PSEUDO_COLUMNS {
            fields.push(Field::new(name, crate::types::arrow_type(&ty), false));
        }
        fields.push(Field::new(RETRACT, DataType::Boolean, false));
        fields.push(Field::new(KEY_NULL, DataType::Boolean, false));
        fields.push(Field::new(TOMBSTONE, DataType::Boolean, false));
        let [l, r]: [SchemaRef; 2] = carried_schema.try_into().expect("two sides");
        let primary = match shape {
            JoinShape::ForeignKey { left_primary_key } => {
                let mut indexes = Vec::new();
                let mut fields = Vec::new();
                for k in left_primary_key {
                    let i = left_schema
                        .index_of(k)
                        .map_err(|_| RuntimeError::Plan(format!("left key column {k} missing")))?;
                    indexes.push(i);
                    fields.push(SortField::new(left_schema.field(i).data_type().clone()));
                }
                Some((indexes, RowConverter::new(fields)?))
            }
            _ => None,
        };
        let nulls = [&l, &r].map(|schema| {
            schema
                .fields()
                .iter()
                .map(|f| new_null_array(f.data_type(), 1))
                .collect()
        });
        let schema = Arc::new(Schema::new(fields));
        Ok(JoinOp {
            kind,
            shape: shape.clone(),
            keys,
            carried,
            carried_schema: [l, r],
            nulls,
            empty: RecordBatch::new_empty(schema.clone()),
            schema,
            rows: RowConverter::new(match windowed {
                None => vec![SortField::new(key_type)],
                Some((_, false)) => vec![SortField::new(key_type), SortField::new(DataType::Int64)],
                Some((_, true)) => vec![
                    SortField::new(key_type),
                    SortField::new(DataType::Int64),
                    SortField::new(DataType::Int64),
                ],
            })?,
            windowed,
            tables: [HashMap::new(), HashMap::new()],
            windows: [HashMap::new(), HashMap::new()],
            pending: BTreeMap::new(),
            pending_seq: 0,
            primary,
            left_foreign_keys: HashMap::new(),
            subscriptions: HashMap::new(),
            stream_time: i64::MIN,
            side_time: [i64::MIN; 2],
            since_sweep: 0,
            oldest: [i64::MAX; 2],
            stored_rows: 0,
            changes: None,
            times_changed: false,
            has_times_entry: false,
            restoring: BTreeMap::new(),
            key_types,
            store: None,
        })
    }

    pub fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// How many rows the window stores hold in memory.
    #[cfg(test)]
    pub(crate) fn window_rows(&self) -> usize {
        self.windows
            .iter()
            .flat_map(|w| w.values())
            .map(Vec::len)
            .sum()
    }

    /// Whether a stream (left) looks up a table (right).
    pub fn is_stream_table(&self) -> bool {
        matches!(self.shape, JoinShape::StreamTable)
    }

    /// Whether each joined row comes after the retraction of the key's previous one.
    pub fn sends_old_values(&self) -> bool {
        matches!(
            self.shape,
            JoinShape::TableTable | JoinShape::ForeignKey { .. }
        )
    }

    /// Runs a batch of one side's rows through the join, returning the joined rows.
    pub fn process(
        &mut self,
        side: Side,
        batch: &RecordBatch,
        errors: &mut u64,
    ) -> Result<RecordBatch> {
        let input = self.prepare(side, batch, errors)?;
        if matches!(self.shape, JoinShape::StreamTable) && side == Side::Left {
            return self.look_up(batch, &input);
        }
        let mut out = Vec::new();
        for row in 0..batch.num_rows() {
            self.process_row(&input, row, &mut out)?;
        }
        self.assemble(out)
    }

    /// Runs the rows of both sides through the join in the order they arrived: `order`
    /// lists each row as its side and its index in that side's batch. The output is
    /// what processing the rows one by one would give, in one batch.
    pub fn process_interleaved(
        &mut self,
        batches: [Option<&RecordBatch>; 2],
        order: &[(Side, u32)],
        errors: &mut u64,
    ) -> Result<RecordBatch> {
        let mut inputs = [None, None];
        for side in [Side::Left, Side::Right] {
            if let Some(batch) = batches[side as usize] {
                inputs[side as usize] = Some(self.prepare(side, batch, errors)?);
            }
        }
        let mut out = Vec::new();
        for &(side, row) in order {
            let input = inputs[side as usize].as_ref().ok_or_else(|| {
                RuntimeError::Plan(format!("a {side:?} row without a {side:?} batch"))
            })?;
            self.process_row(input, row as usize, &mut out)?;
        }
        self.assemble(out)
    }

    /// What the join reads of a batch of one side: its keys (evaluated and encoded),
    /// pseudo-columns and flags, and its carried columns, shared by the rows it keeps.
    fn prepare(&self, side: Side, batch: &RecordBatch, errors: &mut u64) -> Result<SideBatch> {
        let s = side as usize;
        let keys = evaluate(&self.keys[s], batch, errors)?;
        // A windowed row's key is its key and its window.
        let bounds = self
            .windowed
            .map(|(at, _)| at[s].map(|i| batch.column(i).clone()));
        let mut key_columns = vec![keys.clone()];
        if let (Some([start, end]), Some((_, session))) = (&bounds, self.windowed) {
            key_columns.push(start.clone());
            if session {
                key_columns.push(end.clone());
            }
        }
        let key_bytes = self.rows.convert_columns(&key_columns)?;
        let n = batch.num_columns();
        let carried = batch.project(&self.carried[s])?;
        let carried =
            RecordBatch::try_new(self.carried_schema[s].clone(), carried.columns().to_vec())?;
        let primary = match (&self.primary, side) {
            (Some((indexes, converter)), Side::Left) => {
                let columns: Vec<ArrayRef> =
                    indexes.iter().map(|i| batch.column(*i).clone()).collect();
                Some(converter.convert_columns(&columns)?)
            }
            _ => None,
        };
        Ok(SideBatch {
            side,
            rows: Arc::new(BatchRows {
                columns: carried,
                key: keys,
                bounds,
            }),
            key_bytes,
            rowtime: batch.column(n - PSEUDO_COUNT).as_primitive().clone(),
            partition: batch.column(n - PSEUDO_COUNT + 1).as_primitive().clone(),
            offset: batch.column(n - PSEUDO_COUNT + 2).as_primitive().clone(),
            retract: batch.column(n - FLAG_COUNT).as_boolean().clone(),
            tombstone: batch.column(n - 1).as_boolean().clone(),
            primary,
        })
    }

    /// Runs one row of a side through the join, appending what it emits to `out`.
    fn process_row(&mut self, input: &SideBatch, row: usize, out: &mut Vec<Emit>) -> Result<()> {
        let side = input.side;
        let s = side as usize;
        let keys = &input.rows.key;
        let tombstone = input.tombstone.value(row);
        // Retractions are for aggregations; a table side reads upserts. A left row
        // of a foreign-key join is kept whatever its foreign key.
        if input.retract.value(row) || keys.is_null(row) && input.primary.is_none() {
            return Ok(());
        }
        let kept = Kept {
            batch: input.rows.clone(),
            row,
            ts: input.rowtime.value(row),
            seq: 0,
        };
        // Borrowed for lookups; copied only where a row is stored.
        let key: &[u8] = input.key_bytes.row(row).data();
        let trigger = |kept: &Kept| Emit {
            left: None,
            right: None,
            key: kept.at(),
            ts: kept.ts,
            partition: input.partition.value(row),
            offset: input.offset.value(row),
            tombstone: false,
            retract: false,
        };
        match self.shape {
            JoinShape::StreamTable => match side {
                Side::Right => {
                    self.note(|| table_entry(side, key), (!tombstone).then_some(&kept));
                    if tombstone {
                        self.tables[1].remove(key);
                    } else {
                        self.tables[1].insert(TableKey::from_slice(key), kept);
                    }
                }
                Side::Left => {
                    if tombstone {
                        return Ok(());
                    }
                    let found = self.table_row(Side::Right, key)?;
                    if found.is_some() || self.kind.keeps_left() {
                        out.push(Emit {
                            right: found,
                            left: Some(kept.clone()),
                            ..trigger(&kept)
                        });
                    }
                }
            },
            JoinShape::TableTable => {
                let old = self.table_row(side, key)?;
                if tombstone {
                    self.tables[s].remove(key);
                } else {
                    self.tables[s].insert(TableKey::from_slice(key), kept.clone());
                }
                let new = (!tombstone).then(|| kept.clone());
                self.note(|| table_entry(side, key), new.as_ref());
                let other = self.table_row(side.other(), key)?;
                let keeps = |x: Side| match x {
                    Side::Left => self.kind.keeps_left(),
                    Side::Right => self.kind.keeps_right(),
                };
                let ts = match &other {
                    Some(other) => kept.ts.max(other.ts),
                    None => kept.ts,
                };
                let pair = |this: Option<Kept>, that: Option<Kept>| match side {
                    Side::Left => (this, that),
                    Side::Right => (that, this),
                };
                // The key's joined row before this change, which an aggregation
                // downstream undoes (Kafka Streams' old value of the join).
                let before = match (&old, &other) {
                    (Some(_), Some(_)) => Some(pair(old.clone(), other.clone())),
                    (Some(_), None) if keeps(side) => Some(pair(old.clone(), None)),
                    (None, Some(_)) if keeps(side.other()) => Some(pair(None, other.clone())),
                    _ => None,
                };
                if let Some((left, right)) = before {
                    out.push(Emit {
                        left,
                        right,
                        ts,
                        retract: true,
                        ..trigger(&kept)
                    });
                }
                let emit = match (&new, &other) {
                    (Some(_), Some(_)) => Some((pair(new.clone(), other.clone()), false)),
                    (None, Some(_)) if keeps(side.other()) => {
                        Some((pair(None, other.clone()), false))
                    }
                    (None, Some(_)) => Some(((None, None), true)),
                    (Some(_), None) if keeps(side) => Some((pair(new.clone(), None), false)),
                    (None, None) if keeps(side) && old.is_some() => Some(((None, None), true)),
                    _ => None,
                };
                if let Some(((left, right), tomb)) = emit {
                    out.push(Emit {
                        left,
                        right,
                        ts,
                        tombstone: tomb,
                        ..trigger(&kept)
                    });
                }
            }
            JoinShape::ForeignKey { .. } => {
                let t = trigger(&kept);
                match &input.primary {
                    Some(primary) => {
                        let foreign = (!keys.is_null(row)).then(|| key.to_vec());
                        let pk = primary.row(row).as_ref().to_vec();
                        self.foreign_left(pk, foreign, kept, tombstone, t, out)?;
                    }
                    None => self.foreign_right(key.to_vec(), kept, tombstone, t, out)?,
                }
            }
            JoinShape::StreamStream {
                before_ms,
                after_ms,
                grace_ms,
            } => {
                if tombstone {
                    return Ok(());
                }
                let t = trigger(&kept);
                self.stream_stream(
                    side,
                    key.to_vec(),
                    kept,
                    (before_ms, after_ms, grace_ms),
                    t,
                    out,
                )?;
            }
        }
        Ok(())
    }

    /// Stream rows looking up the table (the stream-table join's hot path): each row
    /// that finds its key's row, or every row for a LEFT join, is output with its own
    /// time, partition and offset. The stream side's columns are taken from the batch
    /// as they are; only the table's rows are gathered.
    fn look_up(&mut self, batch: &RecordBatch, input: &SideBatch) -> Result<RecordBatch> {
        let rows = &input.rows;
        let (retract, tombstone) = (&input.retract, &input.tombstone);
        if self.store.is_some() {
            // The table's rows not in memory are read from the store first, into one
            // batch.
            let missing: BTreeSet<&[u8]> = (0..batch.num_rows())
                .filter(|&row| {
                    !(retract.value(row) || tombstone.value(row) || rows.key.is_null(row))
                })
                .map(|row| input.key_bytes.row(row).data())
                .filter(|key| !self.tables[1].contains_key(*key))
                .collect();
            self.load_table_rows(Side::Right, missing)?;
        }
        let keeps_left = self.kind.keeps_left();
        let mut taken: Vec<u32> = Vec::with_capacity(batch.num_rows());
        let mut found: Vec<Option<(&Arc<BatchRows>, usize)>> = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            if retract.value(row) || tombstone.value(row) || rows.key.is_null(row) {
                continue;
            }
            let right = self.tables[1].get(input.key_bytes.row(row).data());
            if right.is_some() || keeps_left {
                taken.push(row as u32);
                found.push(right.map(|k| (&k.batch, k.row)));
            }
        }
        if taken.is_empty() {
            return Ok(self.empty.clone());
        }
        let n = taken.len();
        let taken = UInt32Array::from(taken);
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        columns.push(take(&rows.key, &taken, None)?);
        for c in rows.columns.columns() {
            columns.push(take(c, &taken, None)?);
        }
        self.side_columns(Side::Right, found.into_iter(), &mut columns)?;
        if let Some(bounds) = &rows.bounds {
            for b in bounds {
                columns.push(take(b, &taken, None)?);
            }
        }
        columns.push(take(&input.rowtime, &taken, None)?);
        columns.push(take(&input.partition, &taken, None)?);
        columns.push(take(&input.offset, &taken, None)?);
        let no = Arc::new(BooleanArray::from(vec![false; n])) as ArrayRef;
        columns.extend([no.clone(), no.clone(), no]);
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    /// A change of a left row of a foreign-key join: its subscription moves to its new
    /// foreign key, and it emits its joined row (or, for an inner join without a
    /// match, the deletion of the row it had).
    fn foreign_left(
        &mut self,
        pk: Vec<u8>,
        foreign: Option<Vec<u8>>,
        kept: Kept,
        deleted: bool,
        trigger: Emit,
        out: &mut Vec<Emit>,
    ) -> Result<()> {
        let old = self.table_row(Side::Left, &pk)?;
        self.tables[0].remove(pk.as_slice());
        let old_fk = self.left_foreign_keys.remove(&pk);
        if let Some(old_fk) = &old_fk
            && let Some(subscribed) = self.subscriptions.get_mut(old_fk)
        {
            subscribed.remove(&pk);
            if subscribed.is_empty() {
                self.subscriptions.remove(old_fk);
            }
        }
        // The row's previous result, undone first: the old left row with the right row
        // of its old foreign key.
        if let Some(old) = &old {
            let old_right = match &old_fk {
                Some(fk) => self.table_row(Side::Right, fk)?,
                None => None,
            };
            self.retract(old.clone(), old_right, &trigger, out);
        }
        self.note(|| table_entry(Side::Left, &pk), (!deleted).then_some(&kept));
        if deleted {
            if let Some(old) = old {
                out.push(Emit {
                    left: Some(old),
                    tombstone: true,
                    ..trigger
                });
            }
            return Ok(());
        }
        self.tables[0].insert(TableKey::from_slice(&pk), kept.clone());
        if let Some(fk) = &foreign {
            self.left_foreign_keys.insert(pk.clone(), fk.clone());
            self.subscriptions.entry(fk.clone()).or_default().insert(pk);
        }
        let right = match foreign {
            Some(fk) => self.table_row(Side::Right, &fk)?,
            None => None,
        };
        match right {
            Some(right) => out.push(Emit {
                ts: kept.ts.max(right.ts),
                left: Some(kept),
                right: Some(right),
                ..trigger
            }),
            None if self.kind.keeps_left() => out.push(Emit {
                left: Some(kept),
                ..trigger
            }),
            None if old.is_some() => out.push(Emit {
                left: Some(kept),
                tombstone: true,
                ..trigger
            }),
            None => {}
        }
        Ok(())
    }

    /// Undoes a foreign-key join's previous result for a left row (Kafka Streams' old
    /// value, for an aggregation downstream): the pair it was joined with, or for a LEFT
    /// join the row alone; an inner join without a match had no result.
    fn retract(&self, left: Kept, right: Option<Kept>, trigger: &Emit, out: &mut Vec<Emit>) {
        if right.is_none() && !self.kind.keeps_left() {
            return;
        }
        out.push(Emit {
            left: Some(left),
            right,
            retract: true,
            ..trigger_like(trigger)
        });
    }

    /// A change of a right row of a foreign-key join: every left row with its key as
    /// their foreign key emits its joined row anew.
    fn foreign_right(
        &mut self,
        key: Vec<u8>,
        kept: Kept,
        deleted: bool,
        trigger: Emit,
        out: &mut Vec<Emit>,
    ) -> Result<()> {
        let old_right = match self.subscriptions.contains_key(&key) {
            true => self.table_row(Side::Right, &key)?,
            false => None,
        };
        self.note(
            || table_entry(Side::Right, &key),
            (!deleted).then_some(&kept),
        );
        if deleted {
            self.tables[1].remove(key.as_slice());
        } else {
            self.tables[1].insert(TableKey::from_slice(&key), kept.clone());
        }
        let Some(subscribed) = self.subscriptions.get(&key) else {
            return Ok(());
        };
        for pk in subscribed.iter().cloned().collect::<Vec<_>>() {
            let Some(left) = self.table_row(Side::Left, &pk)? else {
                continue;
            };
            self.retract(left.clone(), old_right.clone(), &trigger, out);
            let ts = left.ts.max(kept.ts);
            out.push(match deleted {
                false => Emit {
                    left: Some(left),
                    right: Some(kept.clone()),
                    ts,
                    ..trigger_like(&trigger)
                },
                true => Emit {
                    left: Some(left),
                    tombstone: !self.kind.keeps_left(),
                    ts,
                    ..trigger_like(&trigger)
                },
            });
        }
        Ok(())
    }

    fn stream_stream(
        &mut self,
        side: Side,
        key: Vec<u8>,
        kept: Kept,
        (before, after, grace): (i64, i64, Option<i64>),
        trigger: Emit,
        out: &mut Vec<Emit>,
    ) -> Result<()> {
        let s = side as usize;
        let o = side.other() as usize;
        let retention = self.retention();
        // With a store, the key's rows of both sides are read into memory first.
        self.load_window(side, &key, retention)?;
        self.load_window(side.other(), &key, retention)?;
        // A left row joins right rows from `before` earlier to `after` later; a right
        // row the mirror image.
        let (back, ahead) = match side {
            Side::Left => (before, after),
            Side::Right => (after, before),
        };
        let ts = kept.ts;
        let from = ts.saturating_sub(back).max(0);
        let to = ts.saturating_add(ahead).max(0);
        self.stream_time = self.stream_time.max(ts);
        self.times_changed = true;
        if let Some(grace) = grace
            && ts == self.stream_time
        {
            self.emit_closed(before, after, grace, &trigger, out);
        }
        let keeps_this = match side {
            Side::Left => self.kind.keeps_left(),
            Side::Right => self.kind.keeps_right(),
        };
        let mut matched = false;
        // Rows older than their side's retention are gone, whether or not they were
        // swept yet (as Kafka Streams' window store fetches no further back).
        let from = from.max(self.side_time[o].saturating_sub(retention));
        let mut others: Vec<Kept> = self.windows[o]
            .get(&key)
            .map(|rows| {
                rows.iter()
                    .filter(|r| r.ts >= from && r.ts <= to)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        // The other side's window store returns its rows in time order.
        others.sort_by_key(|r| r.ts);
        for other in others {
            matched = true;
            if grace.is_some() {
                // The other side's rows of this key and time no longer wait for their
                // window to close.
                let other_side = side.other();
                let waiting = (other.ts, other_side, key.clone(), 0)
                    ..=(other.ts, other_side, key.clone(), u64::MAX);
                let matched: Vec<_> = self
                    .pending
                    .range(waiting)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in matched {
                    self.pending.remove(&k);
                    self.note(|| pending_entry(&k), None);
                }
            }
            let joined_ts = ts.max(other.ts);
            let (left, right) = match side {
                Side::Left => (Some(kept.clone()), Some(other)),
                Side::Right => (Some(other), Some(kept.clone())),
            };
            out.push(Emit {
                left,
                right,
                ts: joined_ts,
                key: trigger.key.clone(),
                ..trigger_like(&trigger)
            });
        }
        if !matched && keeps_this {
            if grace.is_none() || to < self.stream_time {
                out.push(unmatched(side, kept.clone(), ts, &trigger));
            } else {
                self.pending_seq += 1;
                let waiting = (ts, side, key.clone(), self.pending_seq);
                self.note(|| pending_entry(&waiting), Some(&kept));
                self.pending.insert(waiting, kept.clone());
            }
        }
        // The row is kept for the other side's later rows unless it is already older
        // than its side's window store keeps rows (Kafka Streams drops such a put).
        self.side_time[s] = self.side_time[s].max(ts);
        let horizon = self.side_time[s].saturating_sub(retention);
        // Rows of this key that no later row can join are forgotten as the key is
        // written again.
        let changes = &mut self.changes;
        let kept = (ts >= horizon).then(|| {
            self.oldest[s] = self.oldest[s].min(ts);
            self.stored_rows += 1;
            let kept = Kept {
                seq: self.stored_rows,
                ..kept
            };
            note(
                changes,
                || window_entry(side, kept.ts, kept.seq, &key),
                Some(&kept),
            );
            kept
        });
        // A key seen before is found without copying its bytes; a new one takes them.
        match self.windows[s].get_mut(&key) {
            Some(rows) => {
                expire(changes, side, &key, rows, horizon);
                rows.extend(kept);
            }
            None => {
                if let Some(kept) = kept {
                    self.windows[s].insert(key, vec![kept]);
                }
            }
        }
        // Now and then, the keys not seen again are swept too.
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY {
            self.since_sweep = 0;
            for (side, window) in [Side::Left, Side::Right].into_iter().zip(&mut self.windows) {
                let horizon = self.side_time[side as usize].saturating_sub(retention);
                let oldest = &mut self.oldest[side as usize];
                if *oldest >= horizon {
                    // Nothing is old enough yet (a long retention keeps every row).
                    continue;
                }
                *oldest = i64::MAX;
                window.retain(|key, rows| {
                    expire(changes, side, key, rows, horizon);
                    if let Some(first) = rows.iter().map(|r| r.ts).min() {
                        *oldest = (*oldest).min(first);
                    }
                    !rows.is_empty()
                });
            }
        }
        Ok(())
    }

    /// How long a stream-stream join's window stores keep rows: the window and the
    /// grace period (Kafka Streams' old default of a day without one).
    fn retention(&self) -> i64 {
        match self.shape {
            JoinShape::StreamStream {
                before_ms,
                after_ms,
                grace_ms,
            } => before_ms
                .saturating_add(after_ms)
                .saturating_add(grace_ms.unwrap_or(DEFAULT_GRACE_MS)),
            _ => 0,
        }
    }

    /// Emits the kept rows of an outer join whose windows have closed without a match.
    fn emit_closed(
        &mut self,
        before: i64,
        after: i64,
        grace: i64,
        trigger: &Emit,
        out: &mut Vec<Emit>,
    ) {
        while let Some((&(ts, side, _, _), _)) = self.pending.first_key_value() {
            let look_ahead = match side {
                Side::Left => after,
                Side::Right => before,
            };
            if ts.saturating_add(look_ahead).saturating_add(grace) >= self.stream_time {
                break;
            }
            let (waiting, kept) = self.pending.pop_first().expect("not empty");
            self.note(|| pending_entry(&waiting), None);
            out.push(unmatched(side, kept, ts, trigger));
        }
    }

    /// Appends one side's carried columns for output rows that take the given rows of
    /// it (None: the side is missing, its columns NULL).
    fn side_columns<'a>(
        &self,
        side: Side,
        rows: impl Iterator<Item = Option<(&'a Arc<BatchRows>, usize)>>,
        columns: &mut Vec<ArrayRef>,
    ) -> Result<()> {
        let (batches, picks) = gather(rows);
        // Index 0 of the arrays interleaved is the NULL row.
        let picks: Vec<(usize, usize)> = picks
            .into_iter()
            .map(|p| p.map_or((0, 0), |(b, r)| (b + 1, r)))
            .collect();
        for (c, null) in self.nulls[side as usize].iter().enumerate() {
            let mut arrays: Vec<&dyn Array> = Vec::with_capacity(batches.len() + 1);
            arrays.push(null.as_ref());
            arrays.extend(batches.iter().map(|b| b.columns.column(c).as_ref()));
            columns.push(interleave(&arrays, &picks)?);
        }
        Ok(())
    }

    /// Builds the output batch: the key, each side's carried columns (NULL for a side
    /// without a row), the pseudo-columns and flags.
    fn assemble(&self, out: Vec<Emit>) -> Result<RecordBatch> {
        let n = out.len();
        if n == 0 {
            // Most rows of a stream side find nothing yet; an empty batch from the
            // stock one costs no array building.
            return Ok(self.empty.clone());
        }
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        let (batches, picks) = gather(out.iter().map(|e| Some((&e.key.0, e.key.1))));
        let picks: Vec<(usize, usize)> = picks.into_iter().flatten().collect();
        let key_arrays: Vec<&dyn Array> = batches.iter().map(|b| b.key.as_ref()).collect();
        columns.push(interleave(&key_arrays, &picks)?);
        // The window of the row that caused each output (its key's window).
        let bounds: Option<[ArrayRef; 2]> = if self.windowed.is_some() {
            let bound = |i: usize| -> Result<ArrayRef> {
                let arrays: Vec<&dyn Array> = batches
                    .iter()
                    .map(|b| b.bounds.as_ref().expect("windowed rows")[i].as_ref())
                    .collect();
                Ok(interleave(&arrays, &picks)?)
            };
            Some([bound(0)?, bound(1)?])
        } else {
            None
        };
        for side in [Side::Left, Side::Right] {
            let rows = out.iter().map(|e| {
                let kept = if side == Side::Left {
                    &e.left
                } else {
                    &e.right
                };
                kept.as_ref().map(|k| (&k.batch, k.row))
            });
            self.side_columns(side, rows, &mut columns)?;
        }
        columns.extend(bounds.into_iter().flatten());
        columns.push(Arc::new(Int64Array::from_iter_values(
            out.iter().map(|e| e.ts),
        )));
        columns.push(Arc::new(Int32Array::from_iter_values(
            out.iter().map(|e| e.partition),
        )));
        columns.push(Arc::new(Int64Array::from_iter_values(
            out.iter().map(|e| e.offset),
        )));
        columns.push(Arc::new(BooleanArray::from(
            out.iter().map(|e| e.retract).collect::<Vec<_>>(),
        )));
        columns.push(Arc::new(BooleanArray::from(vec![false; n])));
        columns.push(Arc::new(BooleanArray::from(
            out.iter().map(|e| e.tombstone).collect::<Vec<_>>(),
        )));
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// For each output row, the (batch index, row) of the input row it takes, or None.
type Picks = Vec<Option<(usize, usize)>>;

/// The distinct batches that `rows` point into, and for each row its (batch index, row)
/// in them, or None where there is no row.
fn gather<'a>(
    rows: impl Iterator<Item = Option<(&'a Arc<BatchRows>, usize)>>,
) -> (Vec<&'a Arc<BatchRows>>, Picks) {
    let mut batches: Vec<&Arc<BatchRows>> = Vec::new();
    let mut index: HashMap<*const BatchRows, usize> = HashMap::new();
    let picks = rows
        .map(|r| {
            r.map(|(batch, row)| {
                // Rows often come from the batch of the row before: check it first.
                let i = match batches.last() {
                    Some(last) if Arc::ptr_eq(last, batch) => batches.len() - 1,
                    _ => *index.entry(Arc::as_ptr(batch)).or_insert_with(|| {
                        batches.push(batch);
                        batches.len() - 1
                    }),
                };
                (i, row)
            })
        })
        .collect();
    (batches, picks)
}

/// A stream row of one side that an outer join emits without a match, at `ts`.
fn unmatched(side: Side, kept: Kept, ts: i64, trigger: &Emit) -> Emit {
    let key = kept.at();
    let (left, right) = match side {
        Side::Left => (Some(kept), None),
        Side::Right => (None, Some(kept)),
    };
    Emit {
        left,
        right,
        ts,
        key,
        ..trigger_like(trigger)
    }
}

/// The partition and offset of the row that caused an output, for another output.
fn trigger_like(t: &Emit) -> Emit {
    Emit {
        left: None,
        right: None,
        key: t.key.clone(),
        ts: t.ts,
        partition: t.partition,
        offset: t.offset,
        tombstone: false,
        retract: false,
    }
}

/// Records a changed entry, when changes are recorded: its row, or None when deleted.
fn note(
    changes: &mut Option<BTreeMap<Vec<u8>, Option<Kept>>>,
    entry: impl FnOnce() -> Vec<u8>,
    row: Option<&Kept>,
) {
    if let Some(changes) = changes {
        changes.insert(entry(), row.cloned());
    }
}

/// Forgets a key's window rows older than `horizon`, telling the changelog.
fn expire(
    changes: &mut Option<BTreeMap<Vec<u8>, Option<Kept>>>,
    side: Side,
    key: &[u8],
    rows: &mut Vec<Kept>,
    horizon: i64,
) {
    if changes.is_some() {
        for r in rows.iter().filter(|r| r.ts < horizon) {
            note(changes, || window_entry(side, r.ts, r.seq, key), None);
        }
    }
    rows.retain(|r| r.ts >= horizon);
}
