//! A query plan compiled for execution: records in, records out, a batch at
//! a time.
//!
//! ```text
//! source records ─► decode into Arrow columns (+ ROWTIME, ROWPARTITION, ROWOFFSET)
//!                ─► filter / project (DataFusion physical expressions)
//!                ─► encode key and value ─► output records
//! ```

use crate::aggregate::{AggregateOp, WINDOW_END, WINDOW_START};
use crate::codec::decode::{ColumnBuilder, PartDecoder};
use crate::codec::encode::PartEncoder;
use crate::codec::registered::{Registry, part_encoder};
use crate::error::{Result, RuntimeError};
use crate::expr::{PhysExpr, compile, evaluate, output_field};
use crate::join::{JoinOp, Side};
use crate::types::{FLAG_COUNT, PSEUDO_COUNT, row_schema};
use datafusion_common::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Array, Int64Array,
};
use datafusion_common::arrow::compute::filter_record_batch;
use datafusion_common::arrow::compute::kernels::boolean::{and, not, or};
use datafusion_common::arrow::compute::kernels::nullif::nullif;
use datafusion_common::arrow::datatypes::{
    DataType, Field, Int32Type, Int64Type, Schema, SchemaRef,
};
use datafusion_common::arrow::record_batch::RecordBatch;
use sluice_plan::{
    CarriedColumn, ColumnKind, FormatKind, JoinShape, PLAN_VERSION, QueryPlan, RETRACTION_HEADER,
    SqlType, Step, TopicSpec, WindowKind,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A record read from a topic.
#[derive(Clone, Copy, Debug)]
pub struct SourceRecord<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The record's headers, in order (read only when the source has header columns).
    pub headers: &'a [Header],
    pub timestamp: i64,
    pub partition: i32,
    pub offset: i64,
}

/// A record header: its key and value.
pub type Header = (String, Option<Vec<u8>>);

/// A record to write to the sink topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: i64,
    /// Only a `retractions` topic's records have any (`RETRACTION_HEADER`).
    pub headers: Vec<Header>,
}

/// Whether an output of a row pipeline (`Pipeline::rows`) deletes a table row.
pub fn is_row_deletion(r: &OutputRecord) -> bool {
    r.key.is_some()
}

/// A record that could not be decoded; it is skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeFailure {
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
    /// The record could not be read because a service (the schema registry) did not
    /// answer: it is not bad, and must be read again rather than skipped.
    pub unavailable: bool,
}

enum Op {
    /// Drops the rows for which the predicate is not true.
    Filter(PhysExpr),
    /// Turns the table rows for which the predicate is not true into deletions. When
    /// each row comes after the retraction of the key's previous row (`old_values`: a
    /// table-table join), a deletion is only written for a key whose previous row
    /// passed, as Kafka Streams' filter does when it is sent old values.
    TableFilter {
        predicate: PhysExpr,
        old_values: bool,
    },
    Select {
        exprs: Vec<PhysExpr>,
        schema: SchemaRef,
        /// The key columns are computed anew (PARTITION BY): the key is never null.
        rekeyed: bool,
        /// For each leading key column: whether it reads value columns, which a null
        /// row does not have (its key is then NULL).
        keys: Vec<bool>,
    },
    Aggregate(Box<AggregateOp>),
    /// Table functions (EXPLODE): arrays in, a row per element out. CUBE_EXPLODE's
    /// argument (flagged) is first made the list of its combinations.
    FlatMap {
        arrays: Vec<(PhysExpr, bool)>,
        schema: SchemaRef,
    },
}

/// The current rows of a materialized source table: key bytes to value bytes, as read.
/// A change to a key decodes the stored row again as the retraction.
#[derive(Default)]
struct TableRows {
    rows: std::collections::HashMap<Vec<u8>, Vec<u8>>,
    /// Keys changed since the changelog last took them (None: not recorded).
    changed: Option<std::collections::HashSet<Vec<u8>>>,
}

impl TableRows {
    fn take_changes(&mut self, out: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        if let Some(changed) = &mut self.changed {
            for key in changed.drain() {
                let value = self.rows.get(&key).cloned();
                out.push((key, value));
            }
        }
    }
}

/// A piece of state the changelog carries, in the order `Pipeline::stores` lists them.
enum Store<'a> {
    Table(&'a mut TableRows),
    Aggregate(&'a mut AggregateOp),
    Join(&'a mut JoinOp),
}

/// Where a segment's rows go once its steps have run.
#[derive(Clone, Copy, Debug)]
enum Next {
    Sink,
    Join(usize, Side),
}

/// A run of steps from a source or a join up to the next join or the sink.
struct Segment {
    ops: Vec<Op>,
    next: Next,
    /// The columns of the segment's first rows that its steps read, up to the first
    /// step that replaces the rows (a projection or an aggregation): `rows_replaced`.
    reads: BTreeSet<String>,
    rows_replaced: bool,
}

impl Segment {
    fn new() -> Segment {
        Segment {
            ops: Vec::new(),
            next: Next::Sink,
            reads: BTreeSet::new(),
            rows_replaced: false,
        }
    }

    /// Notes the columns a step reads, if the segment's rows are still its first ones,
    /// and whether the step replaces them.
    fn note_reads<'a>(&mut self, reads: impl IntoIterator<Item = &'a str>, replaces: bool) {
        if !self.rows_replaced {
            self.reads.extend(reads.into_iter().map(str::to_string));
            self.rows_replaced = replaces;
        }
    }
}

/// A topic the plan reads, and the rows decoded from it and not yet processed.
struct Input {
    source: TopicSpec,
    /// A record with an invalid event time fails the query (else it is skipped).
    throw_on_invalid_timestamp: bool,
    /// The source is a table (records without a key are dropped), with its rows kept
    /// when it is materialized.
    table: Option<Option<TableRows>>,
    schema: SchemaRef,
    builders: Vec<ColumnBuilder>,
    key_decoder: PartDecoder,
    value_decoder: PartDecoder,
    rowtime: Vec<i64>,
    partition: Vec<i32>,
    offset: Vec<i64>,
    retract: Vec<bool>,
    key_null: Vec<bool>,
    tombstone: Vec<bool>,
    /// A windowed source's window bounds per row.
    window_bounds: Vec<WindowBounds>,
    /// Header columns: the column's index and its header's key (None: every header).
    header_columns: Vec<(usize, Option<String>)>,
    segment: Segment,
}

struct JoinNode {
    op: JoinOp,
    segment: Segment,
    /// The columns the join reads of each side's rows.
    reads: [SideReads; 2],
}

/// The columns a join reads of one side's rows: those it always reads (keys), and the
/// carried ones, each with its name in the joined row.
struct SideReads {
    always: Vec<String>,
    carried: Vec<(String, String)>,
}

pub struct Pipeline {
    inputs: Vec<Input>,
    joins: Vec<JoinNode>,
    /// The pending rows, as runs of rows of one input in the order they arrived: (input,
    /// rows). Rows are processed in the order they arrived, so a record of another input
    /// first runs the pending rows, unless the two inputs are the sides of one join that
    /// takes both in one go (see `interleaved_join`).
    pending: Vec<(usize, usize)>,
    /// For each input whose rows reach a join through stateless steps only: the join
    /// and the side. Rows of both sides of such a join run through it interleaved, as
    /// they arrived, in one batch per side rather than a batch per run.
    interleaved_join: Vec<Option<(usize, Side)>>,
    /// Output of rows run early (when the input switched), not yet handed out.
    ready: Vec<OutputRecord>,
    /// A failure while running rows early, reported by the next flush.
    deferred: Option<RuntimeError>,
    sink: TopicSpec,
    key_encoder: PartEncoder,
    value_encoder: PartEncoder,
    /// Row mode (push queries): each output row is written as a JSON array of every sink
    /// column, in the sink schema's order (see `Pipeline::rows`).
    row_columns: Option<Vec<usize>>,
    /// The plan's result is a stream: in row mode, a row without a value (a null value
    /// read from a stream) is no row.
    stream_result: bool,
    /// Rows whose expressions failed and yielded NULL, since the start.
    pub expression_errors: u64,
    /// Records skipped because their event-time column was NULL or negative.
    pub invalid_timestamps: u64,
}

/// The segment a step's rows are in while the plan is compiled.
#[derive(Clone, Copy)]
enum Open {
    Input(usize),
    Join(usize),
}

#[derive(Default)]
struct Builder {
    inputs: Vec<Input>,
    joins: Vec<JoinNode>,
    /// Where AVRO inputs find their writers' schemas.
    registry: Option<Registry>,
}

impl Builder {
    fn segment(&mut self, open: Open) -> &mut Segment {
        match open {
            Open::Input(i) => &mut self.inputs[i].segment,
            Open::Join(j) => &mut self.joins[j].segment,
        }
    }

    /// Compiles a step and the steps below it; returns the segment its rows are in and
    /// their schema.
    fn build(&mut self, step: &Step) -> Result<(Open, SchemaRef)> {
        match step {
            Step::StreamSource { topic, .. } => self.input(topic, None),
            Step::TableSource {
                topic,
                materialized,
                ..
            } => self.input(topic, Some(materialized.then(TableRows::default))),
            Step::StreamSink { .. } | Step::TableSink { .. } => {
                Err(RuntimeError::Plan("a sink inside a plan".into()))
            }
            Step::Join {
                left,
                right,
                kind,
                shape,
                left_key,
                right_key,
                left_columns,
                right_columns,
                schema,
            } => {
                let (l, ls) = self.build(left)?;
                let (r, rs) = self.build(right)?;
                let primary_key = match shape {
                    JoinShape::ForeignKey { left_primary_key } => left_primary_key.as_slice(),
                    _ => &[],
                };
                let side_reads =
                    |key: &sluice_plan::Expr, columns: &[CarriedColumn], keys: Vec<&str>| {
                        let always = key.column_refs().into_iter().chain(keys);
                        let carried = columns.iter().map(|c| (c.from.clone(), c.to.clone()));
                        SideReads {
                            always: always.map(str::to_string).collect(),
                            carried: carried.collect(),
                        }
                    };
                let reads = [
                    side_reads(
                        left_key,
                        left_columns,
                        primary_key.iter().map(String::as_str).collect::<Vec<_>>(),
                    ),
                    side_reads(right_key, right_columns, Vec::new()),
                ];
                let op = JoinOp::new(
                    *kind,
                    shape,
                    &ls,
                    &rs,
                    left_key,
                    right_key,
                    left_columns,
                    right_columns,
                    schema,
                    left.sources()
                        .first()
                        .and_then(|(_, topic)| topic.window.as_ref())
                        .map(|w| w.kind),
                )?;
                let j = self.joins.len();
                self.segment(l).next = Next::Join(j, Side::Left);
                self.segment(r).next = Next::Join(j, Side::Right);
                let out = op.output_schema();
                self.joins.push(JoinNode {
                    op,
                    segment: Segment::new(),
                    reads,
                });
                Ok((Open::Join(j), out))
            }
            other => {
                let input = other.input().expect("non-source steps have an input");
                let (open, schema) = self.build(input)?;
                // The value columns of the source a segment starts at (none after a join).
                let source_values: Vec<String> = match open {
                    Open::Input(i) => self.inputs[i]
                        .source
                        .schema
                        .values()
                        .map(|c| c.name.clone())
                        .collect(),
                    Open::Join(_) => Vec::new(),
                };
                // Whether each row comes after the retraction of its key's previous row.
                let old_values =
                    matches!(open, Open::Join(j) if self.joins[j].op.sends_old_values());
                let (reads, replaces) = step_reads(other);
                self.segment(open).note_reads(reads, replaces);
                let (op, schema) = compile_step(other, &schema, &source_values, old_values)?;
                self.segment(open).ops.push(op);
                Ok((open, schema))
            }
        }
    }

    /// The columns of a segment's first rows that it or anything after it reads; None:
    /// every column (they reach the sink as they are).
    fn reads(&self, segment: &Segment) -> Option<BTreeSet<String>> {
        if segment.rows_replaced {
            return Some(segment.reads.clone());
        }
        let Next::Join(j, side) = segment.next else {
            return None;
        };
        let node = &self.joins[j];
        let joined = self.reads(&node.segment);
        let side = &node.reads[side as usize];
        let mut reads = segment.reads.clone();
        reads.extend(side.always.iter().cloned());
        for (from, to) in &side.carried {
            if joined.as_ref().is_none_or(|j| j.contains(to)) {
                reads.insert(from.clone());
            }
        }
        Some(reads)
    }

    fn input(
        &mut self,
        topic: &TopicSpec,
        table: Option<Option<TableRows>>,
    ) -> Result<(Open, SchemaRef)> {
        let source = topic.clone();
        let schema = row_schema(&source.schema, source.window.is_some());
        let builders = source
            .schema
            .columns
            .iter()
            .map(|c| ColumnBuilder::new(&c.ty))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(RuntimeError::Plan)?;
        let part = |kind: ColumnKind| -> Vec<(usize, &sluice_plan::Column)> {
            source
                .schema
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.kind == kind)
                .collect()
        };
        let key_decoder = PartDecoder::new(&source.key_format, &part(ColumnKind::Key), true)
            .with_registry(self.registry.clone());
        let value_decoder = PartDecoder::new(&source.value_format, &part(ColumnKind::Value), false)
            .with_registry(self.registry.clone());
        self.inputs.push(Input {
            source,
            table,
            schema: schema.clone(),
            builders,
            key_decoder,
            value_decoder,
            rowtime: Vec::new(),
            partition: Vec::new(),
            offset: Vec::new(),
            retract: Vec::new(),
            key_null: Vec::new(),
            tombstone: Vec::new(),
            window_bounds: Vec::new(),
            throw_on_invalid_timestamp: false,
            header_columns: topic
                .schema
                .columns
                .iter()
                .enumerate()
                .filter_map(|(i, c)| match &c.kind {
                    ColumnKind::Headers => Some((i, None)),
                    ColumnKind::Header(key) => Some((i, Some(key.clone()))),
                    _ => None,
                })
                .collect(),
            segment: Segment::new(),
        });
        Ok((Open::Input(self.inputs.len() - 1), schema))
    }
}

/// The columns a row-wise step reads of its input rows, and whether its output rows
/// replace them (so that later steps read none of the input's columns).
fn step_reads(step: &Step) -> (Vec<&str>, bool) {
    match step {
        Step::StreamFilter { predicate, .. } | Step::TableFilter { predicate, .. } => {
            (predicate.column_refs(), false)
        }
        Step::StreamFlatMap { functions, .. } => (
            functions
                .iter()
                .flat_map(|f| f.args.iter().flat_map(|a| a.column_refs()))
                .collect(),
            false,
        ),
        Step::StreamSelect { projection, .. } | Step::TableSelect { projection, .. } => (
            projection
                .iter()
                .flat_map(|p| p.expr.column_refs())
                .collect(),
            true,
        ),
        // HAVING and the projection read the aggregation's own rows.
        Step::StreamAggregate {
            group_by,
            aggregates,
            ..
        } => (
            group_by
                .iter()
                .chain(aggregates.iter().flat_map(|a| a.args.iter()))
                .flat_map(|e| e.column_refs())
                .collect(),
            true,
        ),
        // Sources, joins and sinks are not compiled here; a sink reads every column.
        _ => (Vec::new(), false),
    }
}

/// Compiles one row-wise step over rows of `schema`; returns the operator and the schema
/// of its output rows. `source_values` names the value columns of the source the rows
/// come from (for PARTITION BY keys computed from them).
fn compile_step(
    step: &Step,
    schema: &SchemaRef,
    source_values: &[String],
    old_values: bool,
) -> Result<(Op, SchemaRef)> {
    Ok(match step {
        Step::StreamFilter { predicate, .. } => {
            (Op::Filter(compile(predicate, schema)?), schema.clone())
        }
        Step::TableFilter { predicate, .. } => {
            let predicate = compile(predicate, schema)?;
            (
                Op::TableFilter {
                    predicate,
                    old_values,
                },
                schema.clone(),
            )
        }
        Step::StreamFlatMap { functions, .. } => {
            let mut arrays = Vec::with_capacity(functions.len());
            let n = schema.fields().len();
            let mut fields: Vec<Field> = schema.fields()[..n - PSEUDO_COUNT]
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            for (i, f) in functions.iter().enumerate() {
                let [arg] = f.args.as_slice() else {
                    return Err(RuntimeError::Plan(format!(
                        "{} takes one argument",
                        f.function
                    )));
                };
                let cube = match f.function.as_str() {
                    "EXPLODE" => false,
                    "CUBE_EXPLODE" => true,
                    other => {
                        return Err(RuntimeError::Plan(format!(
                            "no implementation of the table function {other}"
                        )));
                    }
                };
                arrays.push((compile(arg, schema)?, cube));
                fields.push(Field::new(
                    format!("$udtf{i}"),
                    crate::types::arrow_type(&f.return_type),
                    true,
                ));
            }
            fields.extend(
                schema.fields()[n - PSEUDO_COUNT..]
                    .iter()
                    .map(|f| f.as_ref().clone()),
            );
            let out = Arc::new(Schema::new(fields));
            (
                Op::FlatMap {
                    arrays,
                    schema: out.clone(),
                },
                out,
            )
        }
        Step::StreamSelect {
            projection,
            schema: logical,
            ..
        }
        | Step::TableSelect {
            projection,
            schema: logical,
            ..
        } => {
            let rekeyed = matches!(step, Step::StreamSelect { rekeyed: true, .. });
            let mut exprs = projection
                .iter()
                .map(|p| compile(&p.expr, schema))
                .collect::<Result<Vec<_>>>()?;
            let mut fields = Vec::with_capacity(exprs.len() + PSEUDO_COUNT);
            for (p, e) in projection.iter().zip(&exprs) {
                fields.push(output_field(&p.name, e, schema)?);
            }
            // Rows of a windowed source keep their window for the sink's keys.
            let window_bounds: Vec<usize> = crate::types::WINDOW_BOUNDS
                .iter()
                .filter_map(|b| schema.index_of(b).ok())
                .collect();
            if window_bounds.len() == 2 {
                for name in [WINDOW_START, WINDOW_END] {
                    fields.push(Field::new(name, DataType::Int64, false));
                    exprs.push(compile(
                        &sluice_plan::Expr::Column(
                            crate::types::WINDOW_BOUNDS[(name == WINDOW_END) as usize].to_string(),
                        ),
                        schema,
                    )?);
                }
            }
            let n = schema.fields().len();
            for f in &schema.fields()[n - PSEUDO_COUNT..] {
                fields.push(f.as_ref().clone());
            }
            let out = Arc::new(Schema::new(fields));
            let keys = projection
                .iter()
                .take(logical.keys().count())
                .map(|p| {
                    p.expr.column_refs().iter().any(|c| {
                        // ksqlDB keeps the pseudo-columns in the value row.
                        source_values.iter().any(|v| v == c)
                            || sluice_plan::PSEUDO_COLUMNS.iter().any(|(p, _)| p == c)
                    })
                })
                .collect();
            (
                Op::Select {
                    exprs,
                    schema: out.clone(),
                    rekeyed,
                    keys,
                },
                out,
            )
        }
        Step::StreamAggregate {
            window,
            group_by,
            aggregates,
            having,
            projection,
            schema: logical,
            emit_final,
            ..
        } => {
            let op = AggregateOp::new(
                schema,
                window.as_ref(),
                group_by,
                aggregates,
                having.as_ref(),
                projection,
                logical,
                *emit_final,
            )?;
            let out = op.output_schema();
            (Op::Aggregate(Box::new(op)), out)
        }
        _ => unreachable!("sources, joins and sinks are compiled by the builder"),
    })
}

/// Runs a batch through a segment's operators; None once no row is left.
fn apply_ops(
    ops: &mut [Op],
    mut batch: RecordBatch,
    errors: &mut u64,
) -> Result<Option<RecordBatch>> {
    for op in ops {
        match op {
            Op::Filter(predicate) => {
                let mask = evaluate(predicate, &batch, errors)?;
                // A null row never passes a filter.
                let tombstone = batch.column(batch.num_columns() - 1).as_boolean();
                let mask = and(mask.as_boolean(), &not(tombstone)?)?;
                batch = filter_record_batch(&batch, &mask)?;
            }
            Op::TableFilter {
                predicate,
                old_values,
            } => {
                let mask = evaluate(predicate, &batch, errors)?;
                let mask = mask.as_boolean();
                // NULL counts as false: the row is deleted too.
                let passes = match mask.nulls() {
                    Some(_) => datafusion_common::arrow::compute::prep_null_mask_filter(mask),
                    None => mask.clone(),
                };
                let n = batch.num_columns();
                let tombstone = or(batch.column(n - 1).as_boolean(), &not(&passes)?)?;
                let mut columns = batch.columns().to_vec();
                columns[n - 1] = Arc::new(tombstone.clone());
                batch = RecordBatch::try_new(batch.schema(), columns)?;
                if *old_values {
                    // A deletion of a key whose previous row did not pass (or that had
                    // none) deletes nothing: it is not written.
                    let retract = batch.column(n - FLAG_COUNT).as_boolean();
                    let keep: BooleanArray = (0..batch.num_rows())
                        .map(|i| {
                            let previous_passed =
                                i > 0 && retract.value(i - 1) && !tombstone.value(i - 1);
                            Some(retract.value(i) || !tombstone.value(i) || previous_passed)
                        })
                        .collect();
                    if keep.false_count() > 0 {
                        batch = filter_record_batch(&batch, &keep)?;
                    }
                }
            }
            Op::Aggregate(agg) => {
                batch = agg.process(&batch, errors)?;
            }
            Op::FlatMap { arrays, schema } => {
                let lists = arrays
                    .iter()
                    .map(|(e, cube)| {
                        let list = evaluate(e, &batch, errors)?;
                        if *cube { cube_lists(&list) } else { Ok(list) }
                    })
                    .collect::<Result<Vec<_>>>()?;
                batch = explode(&batch, &lists, schema)?;
            }
            Op::Select {
                exprs,
                schema,
                rekeyed,
                keys,
            } => {
                let mut cols = Vec::with_capacity(schema.fields().len());
                for e in exprs {
                    cols.push(evaluate(e, &batch, errors)?);
                }
                let n = batch.num_columns();
                cols.extend(batch.columns()[n - PSEUDO_COUNT..].iter().cloned());
                if *rekeyed {
                    // New keys are never null as a whole; on a null row their
                    // columns are NULL (nothing to compute them from).
                    let tombstone = batch.column(n - 1).as_boolean();
                    for (col, reads_value) in cols.iter_mut().zip(keys.iter()) {
                        if *reads_value {
                            *col = nullif(col, tombstone)?;
                        }
                    }
                    cols[schema.fields().len() - 2] =
                        Arc::new(BooleanArray::from(vec![false; batch.num_rows()]));
                }
                batch = RecordBatch::try_new(schema.clone(), cols)?;
            }
        }
        if batch.num_rows() == 0 {
            return Ok(None);
        }
    }
    Ok(Some(batch))
}

impl Pipeline {
    /// The pipeline of a plan; schema-registry formats use `registry`.
    pub fn new(plan: &QueryPlan, registry: Option<Registry>) -> Result<Pipeline> {
        Pipeline::compile(plan, false, registry)
    }

    /// A pipeline whose output records are rows for a client rather than Kafka records:
    /// the key is None, the value is the row as a JSON array of every column of the
    /// sink's schema in order (ksqlDB's push query rows), and a deletion of a table row
    /// has its key columns and NULLs, with `timestamp` as usual; `is_row_deletion` tells
    /// deletions apart.
    pub fn rows(plan: &QueryPlan, registry: Option<Registry>) -> Result<Pipeline> {
        Pipeline::compile(plan, true, registry)
    }

    fn compile(plan: &QueryPlan, rows: bool, registry: Option<Registry>) -> Result<Pipeline> {
        if plan.version > PLAN_VERSION {
            return Err(RuntimeError::Plan(format!(
                "the plan has version {} but this build runs plans up to version {PLAN_VERSION}",
                plan.version
            )));
        }
        let (Step::StreamSink { input, topic: sink } | Step::TableSink { input, topic: sink }) =
            &plan.root
        else {
            return Err(RuntimeError::Plan("a plan must end in a sink".into()));
        };
        let mut builder = Builder {
            registry,
            ..Builder::default()
        };
        let (_, schema) = builder.build(input)?;
        let index = |c: &sluice_plan::Column| {
            schema
                .index_of(&c.name)
                .map_err(|_| RuntimeError::Plan(format!("sink column {} missing", c.name)))
        };
        let sink_part = |kind: ColumnKind| -> Result<PartEncoder> {
            let columns = sink
                .schema
                .columns
                .iter()
                .filter(|c| c.kind == kind)
                .map(|c| index(c).map(|i| (i, c)))
                .collect::<Result<Vec<_>>>()?;
            let format = match kind {
                ColumnKind::Key => &sink.key_format,
                _ => &sink.value_format,
            };
            // Rows for a client are never serialized: no schema to register.
            let registry = if rows {
                None
            } else {
                builder.registry.as_ref()
            };
            if rows {
                return Ok(PartEncoder::new(
                    format,
                    columns.iter().map(|(i, c)| (*i, c.name.clone())).collect(),
                    kind == ColumnKind::Key,
                ));
            }
            part_encoder(
                format,
                &columns,
                kind == ColumnKind::Key,
                &sink.topic,
                registry,
            )
        };
        let key_encoder = sink_part(ColumnKind::Key)?;
        let value_encoder = sink_part(ColumnKind::Value)?;
        let row_columns = if rows {
            Some(
                sink.schema
                    .columns
                    .iter()
                    .map(index)
                    .collect::<Result<_>>()?,
            )
        } else {
            None
        };
        let reads: Vec<_> = builder
            .inputs
            .iter()
            .map(|i| builder.reads(&i.segment))
            .collect();
        let mut inputs = builder.inputs;
        for (input, reads) in inputs.iter_mut().zip(reads) {
            input.throw_on_invalid_timestamp = plan.throw_on_invalid_timestamp;
            if let Some(reads) = reads {
                input.skip_unread_columns(&reads);
            }
        }
        let interleaved_join = inputs
            .iter()
            .map(|i| match i.segment.next {
                Next::Join(j, side) if i.segment.ops.iter().all(Op::is_row_by_row) => {
                    Some((j, side))
                }
                _ => None,
            })
            .collect();
        Ok(Pipeline {
            inputs,
            joins: builder.joins,
            pending: Vec::new(),
            interleaved_join,
            ready: Vec::new(),
            deferred: None,
            sink: sink.clone(),
            key_encoder,
            value_encoder,
            row_columns,
            stream_result: matches!(plan.root, Step::StreamSink { .. }),
            expression_errors: 0,
            invalid_timestamps: 0,
        })
    }

    /// The state the changelog carries: materialized tables, aggregations and joins, in
    /// a fixed order for a plan (joins last: changelogs written before joins kept
    /// theirs in it still number the others alike).
    fn stores(&mut self) -> Vec<Store<'_>> {
        let mut stores = Vec::new();
        let mut segments = Vec::new();
        for input in &mut self.inputs {
            if let Some(Some(rows)) = &mut input.table {
                stores.push(Store::Table(rows));
            }
            segments.push(&mut input.segment);
        }
        let mut joins = Vec::new();
        for j in &mut self.joins {
            segments.push(&mut j.segment);
            joins.push(Store::Join(&mut j.op));
        }
        for segment in segments {
            for op in &mut segment.ops {
                if let Op::Aggregate(a) = op {
                    stores.push(Store::Aggregate(a));
                }
            }
        }
        stores.extend(joins);
        stores
    }

    /// Whether the changelog the joins' state was restored from holds it: false when
    /// the query kept no join state in its changelog yet.
    pub fn joins_restored(&self) -> bool {
        self.joins.iter().all(|j| j.op.restored_from_changelog())
    }

    /// Whether the plan keeps state that a restart restores from a changelog.
    pub fn has_changelog(&mut self) -> bool {
        !self.stores().is_empty()
    }

    /// Starts recording which state entries change, for `take_changes`.
    pub fn record_changes(&mut self) {
        for store in self.stores() {
            match store {
                Store::Table(t) => {
                    t.changed.get_or_insert_with(Default::default);
                }
                Store::Aggregate(a) => a.record_changes(),
                Store::Join(j) => j.record_changes(),
            }
        }
    }

    /// The state entries changed since the last call, as changelog keys (a store
    /// number, then the store's key) and values (None: deleted).
    pub fn take_changes(&mut self, out: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        let mut entries = Vec::new();
        for (n, store) in self.stores().into_iter().enumerate() {
            match store {
                Store::Table(t) => t.take_changes(&mut entries),
                Store::Aggregate(a) => a.take_changes(&mut entries)?,
                Store::Join(j) => j.take_changes(&mut entries)?,
            }
            for (key, value) in entries.drain(..) {
                let mut k = Vec::with_capacity(key.len() + 1);
                k.push(n as u8);
                k.extend_from_slice(&key);
                out.push((k, value));
            }
        }
        Ok(())
    }

    /// Forgets the changelogged state, before it is restored. `keep_stored`: state stores keep their committed contents (a restore from a
    /// checkpoint replays only the changelog's tail onto them).
    pub fn clear_changelogged(&mut self, keep_stored: bool) -> Result<()> {
        for store in self.stores() {
            match store {
                Store::Table(t) => t.rows.clear(),
                Store::Aggregate(a) => a.clear(keep_stored)?,
                Store::Join(j) => j.clear(keep_stored)?,
            }
        }
        Ok(())
    }

    /// For each piece of changelogged state (numbered as the changelog numbers them),
    /// whether it lives in a state store that outlives the process; the others are
    /// rebuilt from the whole changelog at every start.
    pub fn stored_state(&mut self) -> Vec<bool> {
        self.stores()
            .iter()
            .map(|store| match store {
                Store::Table(_) => false,
                Store::Aggregate(a) => a.has_store(),
                Store::Join(j) => j.has_store(),
            })
            .collect()
    }

    /// Keeps the groups of aggregations and the table sides of joins in state stores
    /// that `open` gives by name, with at most `max_cached` groups (rows) of each in
    /// memory between commits. Returns how many took a store.
    pub fn use_state_stores(
        &mut self,
        mut open: impl FnMut(&str) -> Result<Box<dyn sluice_state::Storage + Send>>,
        max_cached: usize,
    ) -> Result<usize> {
        let mut taken = 0;
        for (n, store) in self.stores().into_iter().enumerate() {
            match store {
                Store::Aggregate(a) if a.can_use_store() => {
                    a.use_store(open(&format!("aggregate-{n}"))?, max_cached);
                    taken += 1;
                }
                Store::Join(j) => {
                    j.use_store(open(&format!("join-{n}"))?, max_cached);
                    taken += 1;
                }
                _ => {}
            }
        }
        Ok(taken)
    }

    /// Once the changelog holds the entries `take_changes` gave (their transaction
    /// committed), applies them to the state stores.
    pub fn commit_state(&mut self, changes: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<()> {
        for (n, store) in self.stores().into_iter().enumerate() {
            // This store's entries, without the store number.
            let entries: BTreeMap<Vec<u8>, Option<Vec<u8>>> = changes
                .iter()
                .filter(|(k, _)| k.first() == Some(&(n as u8)))
                .map(|(k, v)| (k[1..].to_vec(), v.clone()))
                .collect();
            match store {
                Store::Aggregate(a) => a.commit_store(&entries)?,
                Store::Join(j) => j.commit_store(&entries)?,
                Store::Table(_) => {}
            }
        }
        Ok(())
    }

    /// Applies one changelog entry; `finish_restore` follows the last one.
    pub fn restore_change(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        let Some((&n, rest)) = key.split_first() else {
            return Err(RuntimeError::State("an empty changelog key".into()));
        };
        let mut stores = self.stores();
        let count = stores.len();
        match stores.get_mut(n as usize) {
            Some(Store::Table(t)) => {
                match value {
                    Some(v) => t.rows.insert(rest.to_vec(), v.to_vec()),
                    None => t.rows.remove(rest),
                };
                Ok(())
            }
            Some(Store::Aggregate(a)) => a.restore(rest, value),
            Some(Store::Join(j)) => j.restore(rest, value),
            None => Err(RuntimeError::State(format!(
                "a changelog entry for store {n}, but the plan has {count}"
            ))),
        }
    }

    pub fn finish_restore(&mut self) -> Result<()> {
        for store in self.stores() {
            match store {
                Store::Aggregate(a) => a.finish_restore()?,
                Store::Join(j) => j.finish_restore()?,
                Store::Table(_) => {}
            }
        }
        Ok(())
    }

    /// Whether an input is only the table side of a stream-table join: its changes
    /// update the join's table and emit nothing.
    pub fn is_lookup_table(&self, input: usize) -> bool {
        let i = &self.inputs[input];
        i.table.is_some()
            && i.segment.ops.is_empty()
            && matches!(i.segment.next, Next::Join(j, Side::Right) if self.joins[j].op.is_stream_table())
    }

    /// Whether a source has header columns, so records must come with their headers.
    pub fn reads_headers(&self) -> bool {
        self.inputs
            .iter()
            .any(|i| !i.header_columns.is_empty() || i.source.retractions)
    }

    /// The topics the plan reads, in the order of their input indexes (for `push`).
    pub fn source_topics(&self) -> Vec<&str> {
        self.inputs
            .iter()
            .map(|i| i.source.topic.as_str())
            .collect()
    }

    pub fn sink_topic(&self) -> &str {
        &self.sink.topic
    }

    /// Decodes one record of input `input` (an index into `source_topics`) into the
    /// pending rows; a record that fails to decode is reported and leaves them as
    /// they were.
    pub fn push(
        &mut self,
        input: usize,
        r: &SourceRecord<'_>,
    ) -> std::result::Result<(), DecodeFailure> {
        let last = self.pending.last().map(|(i, _)| *i);
        let joins_pending = |i: usize| {
            let (Some((j, _)), Some(first)) = (self.interleaved_join[i], self.pending.first())
            else {
                return false;
            };
            matches!(self.interleaved_join[first.0], Some((k, _)) if k == j)
        };
        if last.is_some_and(|p| p != input) && !joins_pending(input) {
            let mut ready = std::mem::take(&mut self.ready);
            if let Err(e) = self.run_pending(&mut ready) {
                self.deferred.get_or_insert(e);
            }
            self.ready = ready;
        }
        let before = self.inputs[input].rowtime.len();
        let result = self.inputs[input].push(r);
        let rows = self.inputs[input].rowtime.len() - before;
        match self.pending.last_mut() {
            Some((i, n)) if *i == input => *n += rows,
            _ if rows > 0 => self.pending.push((input, rows)),
            _ => {}
        }
        result
    }

    /// Rows decoded and not yet processed.
    pub fn pending(&self) -> usize {
        self.inputs.iter().map(|i| i.rowtime.len()).sum()
    }

    /// Runs the pending rows through the plan, appending the output records to `out`.
    pub fn flush(&mut self, out: &mut Vec<OutputRecord>) -> Result<()> {
        out.append(&mut self.ready);
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        self.run_pending(out)
    }

    /// Runs the pending rows: one input's through its segment and on, or the
    /// interleaved rows of a join's two sides through the join and on.
    fn run_pending(&mut self, out: &mut Vec<OutputRecord>) -> Result<()> {
        let runs = std::mem::take(&mut self.pending);
        match runs.as_slice() {
            [] => Ok(()),
            [(input, _)] => self.run_input(*input, out),
            _ => self.run_interleaved(&runs, out),
        }
    }

    /// Runs the rows of a join's two inputs, in the runs they arrived in, through their
    /// stateless steps (a batch per input), then through the join in arrival order.
    fn run_interleaved(
        &mut self,
        runs: &[(usize, usize)],
        out: &mut Vec<OutputRecord>,
    ) -> Result<()> {
        let Some((j, _)) = self.interleaved_join[runs[0].0] else {
            unreachable!("only inputs of a join interleave");
        };
        let mut batches: [Option<RecordBatch>; 2] = [None, None];
        // For each side, the input row each of its rows (after its steps) comes from.
        let mut origins: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
        for (i, side) in self.interleaved_join.clone().into_iter().enumerate() {
            let Some((k, side)) = side else { continue };
            if k != j || self.inputs[i].rowtime.is_empty() {
                continue;
            }
            // Stateless steps keep each row's partition and offset, and the rows' order.
            let arrived: Vec<(i32, i64)> = self.inputs[i]
                .partition
                .iter()
                .copied()
                .zip(self.inputs[i].offset.iter().copied())
                .collect();
            let Some(batch) = self.inputs[i].take_batch(&mut self.invalid_timestamps)? else {
                continue;
            };
            let Some(batch) = apply_ops(
                &mut self.inputs[i].segment.ops,
                batch,
                &mut self.expression_errors,
            )?
            else {
                continue;
            };
            origins[side as usize] = origins_of(&batch, &arrived)?;
            batches[side as usize] = Some(batch);
        }
        let mut order: Vec<(Side, u32)> = Vec::new();
        let mut arrived = [0usize; 2];
        let mut next = [0usize; 2];
        for &(input, rows) in runs {
            let Some((_, side)) = self.interleaved_join[input] else {
                unreachable!("only inputs of the join interleave");
            };
            let s = side as usize;
            arrived[s] += rows;
            while next[s] < origins[s].len() && origins[s][next[s]] < arrived[s] {
                order.push((side, next[s] as u32));
                next[s] += 1;
            }
        }
        let node = &mut self.joins[j];
        let joined = node.op.process_interleaved(
            [batches[0].as_ref(), batches[1].as_ref()],
            &order,
            &mut self.expression_errors,
        )?;
        self.run_from_join(j, joined, out)
    }

    /// Runs an input's pending rows through its segment and every segment after it.
    fn run_input(&mut self, i: usize, out: &mut Vec<OutputRecord>) -> Result<()> {
        let Some(batch) = self.inputs[i].take_batch(&mut self.invalid_timestamps)? else {
            return Ok(());
        };
        let input = &mut self.inputs[i];
        let Some(batch) = apply_ops(&mut input.segment.ops, batch, &mut self.expression_errors)?
        else {
            return Ok(());
        };
        match input.segment.next {
            Next::Sink => self.write(batch, out),
            Next::Join(j, side) => {
                let joined = self.joins[j]
                    .op
                    .process(side, &batch, &mut self.expression_errors)?;
                self.run_from_join(j, joined, out)
            }
        }
    }

    /// Runs a join's output through its segment and every segment after it.
    fn run_from_join(
        &mut self,
        mut j: usize,
        mut joined: RecordBatch,
        out: &mut Vec<OutputRecord>,
    ) -> Result<()> {
        loop {
            if joined.num_rows() == 0 {
                return Ok(());
            }
            let node = &mut self.joins[j];
            let Some(batch) =
                apply_ops(&mut node.segment.ops, joined, &mut self.expression_errors)?
            else {
                return Ok(());
            };
            match node.segment.next {
                Next::Sink => return self.write(batch, out),
                Next::Join(k, side) => {
                    joined = self.joins[k]
                        .op
                        .process(side, &batch, &mut self.expression_errors)?;
                    j = k;
                }
            }
        }
    }

    /// Encodes the rows that reach the sink.
    fn write(&mut self, mut batch: RecordBatch, out: &mut Vec<OutputRecord>) -> Result<()> {
        if let Some(ts) = &self.sink.timestamp {
            let index = batch.schema().index_of(ts)?;
            batch = event_time(
                batch,
                index,
                self.sink.timestamp_format.as_deref(),
                &mut self.invalid_timestamps,
            )?;
            if batch.num_rows() == 0 {
                return Ok(());
            }
        }
        let n = batch.num_columns();
        // Retractions are for aggregations; a sink writes only the new rows, unless
        // its topic carries the changes on to an aggregation (`write_change`).
        let retractions = self.sink.retractions;
        let retract = batch.column(n - FLAG_COUNT).as_boolean().clone();
        if retract.true_count() > 0 && !retractions {
            batch = filter_record_batch(&batch, &not(&retract)?)?;
        }
        let rowtime = batch
            .column(n - PSEUDO_COUNT)
            .as_primitive::<Int64Type>()
            .clone();
        let tombstone = batch.column(n - 1).as_boolean().clone();
        let key_null = batch.column(n - 2).as_boolean().clone();
        let bound = |name: &str| -> Result<_> {
            Ok(batch
                .column(batch.schema().index_of(name)?)
                .as_primitive::<Int64Type>()
                .clone())
        };
        let window = match &self.sink.window {
            Some(w) => Some((w.kind, bound(WINDOW_START)?, bound(WINDOW_END)?)),
            None => None,
        };
        let columns = batch.columns();
        if let Some(row_columns) = &self.row_columns {
            for row in 0..batch.num_rows() {
                let deleted = tombstone.value(row);
                if deleted && self.stream_result {
                    continue;
                }
                let mut s = vec![b'['];
                for (n, i) in row_columns.iter().enumerate() {
                    if n > 0 {
                        s.push(b',');
                    }
                    if deleted && self.sink.schema.columns[n].kind != ColumnKind::Key {
                        s.extend_from_slice(b"null");
                    } else {
                        crate::codec::encode::write_json(&mut s, &columns[*i], row);
                    }
                }
                s.push(b']');
                out.push(OutputRecord {
                    key: deleted.then(Vec::new),
                    value: Some(s),
                    timestamp: if rowtime.is_null(row) {
                        0
                    } else {
                        rowtime.value(row)
                    },
                    headers: Vec::new(),
                });
            }
            return Ok(());
        }
        let mut buf = Vec::new();
        let (keys, values) = (
            self.key_encoder.bind(columns),
            self.value_encoder.bind(columns),
        );
        out.reserve(batch.num_rows());
        // Rows the sink's schema cannot hold are dropped and counted, as ksqlDB drops
        // records it fails to serialize.
        let mut failures = Vec::new();
        // Under `retractions`: the record written for the previous row, when that was a
        // retraction (it then only undoes).
        let mut undoing: Option<usize> = None;
        for row in 0..batch.num_rows() {
            let undone = undoing.take();
            if retractions && tombstone.value(row) {
                // A deletion only undoes the row before it, which its retraction does.
                continue;
            }
            let key = if key_null.value(row) {
                None
            } else {
                let encoded = match keys.encode(row, &mut buf) {
                    Ok(e) => e,
                    Err(e) => {
                        failures.push(e);
                        continue;
                    }
                };
                encoded.map(|()| {
                    // Windowed keys as Kafka Streams writes them (8-byte big-endian
                    // times): a time window's key, then its start; a session's key,
                    // then its end, then its start.
                    match &window {
                        Some((WindowKind::Tumbling | WindowKind::Hopping, start, _)) => {
                            buf.extend_from_slice(&start.value(row).to_be_bytes());
                        }
                        Some((WindowKind::Session, start, end)) => {
                            buf.extend_from_slice(&end.value(row).to_be_bytes());
                            buf.extend_from_slice(&start.value(row).to_be_bytes());
                        }
                        None => {}
                    }
                    buf.clone()
                })
            };
            let value = if tombstone.value(row) {
                None
            } else {
                match values.encode(row, &mut buf) {
                    Ok(e) => e.map(|()| buf.clone()),
                    Err(e) => {
                        failures.push(e);
                        continue;
                    }
                }
            };
            let timestamp = if rowtime.is_null(row) {
                0
            } else {
                rowtime.value(row)
            };
            if retractions {
                write_change(out, key, value, timestamp, retract.value(row), undone);
                undoing = retract.value(row).then(|| out.len() - 1);
                continue;
            }
            out.push(OutputRecord {
                key,
                value,
                timestamp,
                headers: Vec::new(),
            });
        }
        if let Some(last) = failures.last() {
            tracing::warn!(
                count = failures.len(),
                "records not written: they do not fit the sink's schema: {last}"
            );
            self.expression_errors += failures.len() as u64;
        }
        Ok(())
    }
}

/// Writes a row of a table's changes to a `retractions` topic. A retraction becomes a
/// record without a value that carries the undone row in its header. The row that
/// follows it, when it has the same key (the change stays in its group), joins that
/// record instead: one record undoes the old row and adds the new one, so the
/// aggregation behind the topic updates the group once (KIP-904), as without the topic.
fn write_change(
    out: &mut Vec<OutputRecord>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp: i64,
    retraction: bool,
    undone: Option<usize>,
) {
    if retraction {
        out.push(OutputRecord {
            key,
            value: None,
            timestamp,
            headers: vec![(RETRACTION_HEADER.to_string(), value)],
        });
        return;
    }
    if let Some(last) = undone.and_then(|i| out.get_mut(i))
        && last.key == key
    {
        last.value = value;
        last.timestamp = timestamp;
        return;
    }
    out.push(OutputRecord {
        key,
        value,
        timestamp,
        headers: Vec::new(),
    });
}

impl Op {
    /// Whether the step handles each row on its own, keeping none and keeping their
    /// order, partition and offset.
    fn is_row_by_row(&self) -> bool {
        !matches!(self, Op::Aggregate(_))
    }
}

/// For each row of a batch that stateless steps made of the rows that `arrived` (their
/// partitions and offsets, in order), the index of the row it came from.
fn origins_of(batch: &RecordBatch, arrived: &[(i32, i64)]) -> Result<Vec<usize>> {
    let n = batch.num_columns();
    let partition = batch
        .column(n - PSEUDO_COUNT + 1)
        .as_primitive::<Int32Type>();
    let offset = batch
        .column(n - PSEUDO_COUNT + 2)
        .as_primitive::<Int64Type>();
    let mut at = 0;
    let mut origins = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let this = (partition.value(row), offset.value(row));
        while arrived.get(at).is_some_and(|a| *a != this) {
            at += 1;
        }
        if at == arrived.len() {
            return Err(RuntimeError::Plan(format!(
                "a joined row at partition {} offset {} is not among the rows that arrived",
                this.0, this.1
            )));
        }
        origins.push(at);
    }
    Ok(origins)
}

impl Input {
    /// Stops decoding the STRING value columns that no step reads, where every value is
    /// a valid STRING (JSON and DELIMITED text): reading them could not fail a record,
    /// so only their count matters. Most of a wide record's decoding is then skipped.
    fn skip_unread_columns(&mut self, reads: &BTreeSet<String>) {
        let text = matches!(
            self.source.value_format.kind,
            FormatKind::Json | FormatKind::JsonSr | FormatKind::Delimited
        );
        if !text {
            return;
        }
        for (i, c) in self.source.schema.columns.iter().enumerate() {
            let unread = c.kind == ColumnKind::Value
                && c.ty == SqlType::String
                && !reads.contains(&c.name)
                && self.source.timestamp.as_ref() != Some(&c.name);
            if unread {
                self.builders[i] = ColumnBuilder::Unread {
                    ty: DataType::Utf8,
                    len: 0,
                };
            }
        }
    }

    /// Decodes one record into the pending rows; a record that fails to decode is
    /// reported and leaves the rows as they were.
    fn push(&mut self, r: &SourceRecord<'_>) -> std::result::Result<(), DecodeFailure> {
        let before = self.rowtime.len();
        let mut retracted = None;
        match &self.table {
            None => {}
            // A table's rows are identified by their key: a record without one is
            // dropped, as ksqlDB does.
            Some(_) if r.key.is_none() => return Ok(()),
            Some(None) => {}
            Some(Some(state)) => {
                let key = r.key.unwrap_or_default();
                if let Some(old) = state.rows.get(key) {
                    // The row this record replaces, ahead of it: decoded from the bytes
                    // that decoded once already.
                    let old = old.clone();
                    // The old row's headers are not kept: its header columns read none.
                    self.decode_row(r.key, Some(&old), &[])
                        .map_err(|reason| self.rollback(before, r, reason))?;
                    self.push_flags(r, true, false);
                    retracted = Some(old);
                }
            }
        }
        if self.source.retractions {
            // The row the record undoes, ahead of the row it adds (if any).
            if let Some((_, old)) = r.headers.iter().find(|(k, _)| k == RETRACTION_HEADER) {
                self.decode_row(r.key, old.as_deref(), &[])
                    .map_err(|reason| self.rollback(before, r, reason))?;
                self.push_flags(r, true, false);
                if r.value.is_none() {
                    return Ok(());
                }
            }
        }
        let (key, bounds) = match &self.source.window {
            None => (r.key, None),
            Some(w) => match split_windowed_key(r.key, w) {
                Ok((key, bounds)) => (key, Some(bounds)),
                Err(reason) => return Err(self.rollback(before, r, reason)),
            },
        };
        self.decode_row(key, r.value, r.headers)
            .map_err(|reason| self.rollback(before, r, reason))?;
        self.push_flags(r, false, r.value.is_none());
        if let Some(b) = bounds {
            self.window_bounds.push(b);
        }
        if let Some(Some(state)) = &mut self.table {
            let key = r.key.unwrap_or_default().to_vec();
            if let Some(changed) = &mut state.changed {
                changed.insert(key.clone());
            }
            match r.value {
                Some(v) => {
                    state.rows.insert(key, v.to_vec());
                }
                None if retracted.is_some() => {
                    state.rows.remove(&key);
                }
                None => {}
            }
        }
        Ok(())
    }

    fn decode_row(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) -> std::result::Result<(), String> {
        self.key_decoder
            .decode(key, &mut self.builders)
            .map_err(|e| format!("Error deserializing key: {e}"))?;
        self.value_decoder
            .decode(value, &mut self.builders)
            .map_err(|e| format!("Error deserializing value: {e}"))?;
        // Header columns, as JSON values (BYTES as base64), which the builders read.
        let bytes = |v: &Option<Vec<u8>>| match v {
            Some(b) => serde_json::Value::String(crate::codec::encode::base64_encode(b)),
            None => serde_json::Value::Null,
        };
        for (i, key) in &self.header_columns {
            let v = match key {
                None => serde_json::Value::Array(
                    headers
                        .iter()
                        .map(|(k, v)| serde_json::json!({"KEY": k, "VALUE": bytes(v)}))
                        .collect(),
                ),
                Some(key) => headers
                    .iter()
                    .rev()
                    .find(|(k, _)| k == key)
                    .map_or(serde_json::Value::Null, |(_, v)| bytes(v)),
            };
            self.builders[*i]
                .append_json(&v)
                .map_err(|e| format!("Error reading a header column: {e:?}"))?;
        }
        Ok(())
    }

    fn push_flags(&mut self, r: &SourceRecord<'_>, retract: bool, tombstone: bool) {
        self.rowtime.push(r.timestamp);
        self.partition.push(r.partition);
        self.offset.push(r.offset);
        self.retract.push(retract);
        self.key_null.push(r.key.is_none());
        self.tombstone.push(tombstone);
    }

    /// Forgets the rows of a record that failed to decode.
    fn rollback(&mut self, before: usize, r: &SourceRecord<'_>, reason: String) -> DecodeFailure {
        for b in &mut self.builders {
            b.truncate(before);
        }
        self.rowtime.truncate(before);
        self.partition.truncate(before);
        self.offset.truncate(before);
        self.retract.truncate(before);
        self.window_bounds.truncate(before);
        self.key_null.truncate(before);
        self.tombstone.truncate(before);
        DecodeFailure {
            partition: r.partition,
            offset: r.offset,
            reason,
            unavailable: self.key_decoder.unavailable() || self.value_decoder.unavailable(),
        }
    }

    /// The pending rows as a batch (None when there are none), with event times applied.
    fn take_batch(&mut self, invalid_timestamps: &mut u64) -> Result<Option<RecordBatch>> {
        if self.rowtime.is_empty() {
            return Ok(None);
        }
        let mut columns: Vec<ArrayRef> = self.builders.iter_mut().map(|b| b.finish()).collect();
        if self.source.window.is_some() {
            let bounds = std::mem::take(&mut self.window_bounds);
            columns.push(Arc::new(Int64Array::from_iter_values(
                bounds.iter().map(|b| b.0),
            )));
            columns.push(Arc::new(Int64Array::from_iter_values(
                bounds.iter().map(|b| b.1),
            )));
        }
        columns.push(Arc::new(Int64Array::from(std::mem::take(
            &mut self.rowtime,
        ))));
        columns.push(Arc::new(Int32Array::from(std::mem::take(
            &mut self.partition,
        ))));
        columns.push(Arc::new(Int64Array::from(std::mem::take(&mut self.offset))));
        columns.push(Arc::new(BooleanArray::from(std::mem::take(
            &mut self.retract,
        ))));
        columns.push(Arc::new(BooleanArray::from(std::mem::take(
            &mut self.key_null,
        ))));
        columns.push(Arc::new(BooleanArray::from(std::mem::take(
            &mut self.tombstone,
        ))));
        let mut batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        if let Some(ts) = &self.source.timestamp {
            let index = batch.schema().index_of(ts)?;
            let before = *invalid_timestamps;
            batch = event_time(
                batch,
                index,
                self.source.timestamp_format.as_deref(),
                invalid_timestamps,
            )?;
            if self.throw_on_invalid_timestamp && *invalid_timestamps > before {
                return Err(RuntimeError::InvalidTimestamp {
                    topic: self.source.topic.clone(),
                    column: ts.clone(),
                });
            }
        }
        Ok(Some(batch))
    }
}

/// Each row repeated once per element of its longest list, with the lists' elements
/// (NULL past a shorter list's end) placed after the row's columns. A row whose lists
/// are all empty or NULL produces nothing.
fn explode(batch: &RecordBatch, lists: &[ArrayRef], schema: &SchemaRef) -> Result<RecordBatch> {
    use datafusion_common::arrow::array::UInt32Array;
    use datafusion_common::arrow::compute::take;
    let lists: Vec<_> = lists.iter().map(|l| l.as_list::<i32>()).collect();
    let mut rows: Vec<u32> = Vec::new();
    let mut picks: Vec<Vec<Option<u32>>> = vec![Vec::new(); lists.len()];
    for row in 0..batch.num_rows() {
        let len = |l: &&datafusion_common::arrow::array::ListArray| {
            if l.is_null(row) {
                0
            } else {
                l.value_length(row) as usize
            }
        };
        let longest = lists.iter().map(len).max().unwrap_or(0);
        for i in 0..longest {
            rows.push(row as u32);
            for (l, p) in lists.iter().zip(&mut picks) {
                let start = l.value_offsets()[row] as usize;
                p.push((i < len(l)).then_some((start + i) as u32));
            }
        }
    }
    let rows = UInt32Array::from(rows);
    let n = batch.num_columns();
    let mut columns: Vec<ArrayRef> = batch.columns()[..n - PSEUDO_COUNT]
        .iter()
        .map(|c| take(c, &rows, None))
        .collect::<std::result::Result<_, _>>()?;
    for (l, p) in lists.iter().zip(picks) {
        columns.push(take(l.values(), &UInt32Array::from(p), None)?);
    }
    for c in &batch.columns()[n - PSEUDO_COUNT..] {
        columns.push(take(c, &rows, None)?);
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// CUBE_EXPLODE's combinations of each row's array, as a list of arrays per row: every
/// element either kept or NULL, in the order of counting with the first element as the
/// highest digit and NULL before the value (an element that is NULL has one choice).
fn cube_lists(list: &ArrayRef) -> Result<ArrayRef> {
    use datafusion_common::arrow::array::{ListArray, UInt32Array};
    use datafusion_common::arrow::buffer::OffsetBuffer;
    use datafusion_common::arrow::compute::take;
    let lists = list.as_list::<i32>();
    let values = lists.values();
    let mut picks: Vec<Option<u32>> = Vec::new();
    let mut inner = vec![0i32];
    let mut outer = vec![0i32];
    for row in 0..lists.len() {
        if !lists.is_null(row) {
            let start = lists.value_offsets()[row] as usize;
            let len = lists.value_length(row) as usize;
            // Each combination: for each element, NULL or its index.
            let mut combos: Vec<Vec<Option<u32>>> = vec![Vec::new()];
            for j in start..start + len {
                let choices: Vec<Option<u32>> = if values.is_null(j) {
                    vec![None]
                } else {
                    vec![None, Some(j as u32)]
                };
                combos = combos
                    .into_iter()
                    .flat_map(|c| {
                        choices.iter().map(move |choice| {
                            let mut next = c.clone();
                            next.push(*choice);
                            next
                        })
                    })
                    .collect();
            }
            for c in &combos {
                picks.extend(c);
                inner.push(picks.len() as i32);
            }
        }
        outer.push((inner.len() - 1) as i32);
    }
    let item_field = match list.data_type() {
        DataType::List(f) => f.clone(),
        other => {
            return Err(RuntimeError::Plan(format!(
                "CUBE_EXPLODE takes an array, not {other}"
            )));
        }
    };
    let flat = take(values, &UInt32Array::from(picks), None)?;
    let arrays = ListArray::try_new(item_field, OffsetBuffer::new(inner.into()), flat, None)?;
    let field = Arc::new(Field::new("item", arrays.data_type().clone(), true));
    Ok(Arc::new(ListArray::try_new(
        field,
        OffsetBuffer::new(outer.into()),
        Arc::new(arrays),
        None,
    )?))
}

/// A window's start and end, in epoch milliseconds.
type WindowBounds = (i64, i64);

/// Splits a windowed key as Kafka Streams writes it into the key's own bytes and the
/// window's bounds: a time window's start follows the key, a session's end and start.
fn split_windowed_key<'k>(
    key: Option<&'k [u8]>,
    w: &sluice_plan::WindowSpec,
) -> std::result::Result<(Option<&'k [u8]>, WindowBounds), String> {
    let suffix = match w.kind {
        WindowKind::Tumbling | WindowKind::Hopping => 8,
        WindowKind::Session => 16,
    };
    let Some(key) = key.filter(|k| k.len() >= suffix) else {
        return Err(format!(
            "Error deserializing key: a windowed key needs at least {suffix} bytes"
        ));
    };
    let (inner, times) = key.split_at(key.len() - suffix);
    let be = |b: &[u8]| i64::from_be_bytes(b.try_into().expect("8 bytes"));
    let bounds = match w.kind {
        WindowKind::Tumbling | WindowKind::Hopping => {
            let start = be(times);
            (start, start.saturating_add(w.size_ms))
        }
        WindowKind::Session => (be(&times[8..]), be(&times[..8])),
    };
    Ok((Some(inner), bounds))
}

/// Makes the column at `index` (BIGINT or TIMESTAMP) the rows' ROWTIME; rows where it is
/// NULL or negative are dropped and counted, as ksqlDB skips records with an invalid
/// event time.
fn event_time(
    batch: RecordBatch,
    index: usize,
    format: Option<&str>,
    invalid: &mut u64,
) -> Result<RecordBatch> {
    use datafusion_common::arrow::compute::kernels::{boolean, cmp};
    use datafusion_common::arrow::compute::{cast, is_not_null};
    use datafusion_common::arrow::datatypes::DataType;
    let times = match format {
        // A string in the given pattern; one that does not parse is an invalid time.
        Some(pattern) => crate::udf::parse_with_pattern(batch.column(index), pattern),
        None => cast(batch.column(index), &DataType::Int64)?,
    };
    let zero = Int64Array::new_scalar(0);
    let valid = boolean::and(&is_not_null(&times)?, &cmp::gt_eq(&times, &zero)?)?;
    let valid = if valid.null_count() > 0 {
        datafusion_common::arrow::compute::prep_null_mask_filter(&valid)
    } else {
        valid
    };
    *invalid += valid.false_count() as u64;
    let batch = filter_record_batch(&batch, &valid)?;
    let times = datafusion_common::arrow::compute::filter(&times, &valid)?;
    let mut columns = batch.columns().to_vec();
    let n = columns.len();
    columns[n - PSEUDO_COUNT] = times;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plan::{
        BinaryOp, Column, Expr, Format, FormatKind, Literal, LogicalSchema, NamedExpr, SqlType,
    };

    #[test]
    fn a_change_that_stays_in_its_group_is_one_record() {
        let bytes = |s: &str| Some(s.as_bytes().to_vec());
        let retraction = |key: &str, old: &str, ts| OutputRecord {
            key: bytes(key),
            value: None,
            timestamp: ts,
            headers: vec![(RETRACTION_HEADER.to_string(), bytes(old))],
        };
        let mut out = Vec::new();
        // Moves from group a to b: the retraction, then the row.
        write_change(&mut out, bytes("a"), bytes("1"), 1, true, None);
        write_change(&mut out, bytes("b"), bytes("2"), 1, false, Some(0));
        // Stays in b: one record that undoes and adds.
        write_change(&mut out, bytes("b"), bytes("2"), 2, true, None);
        write_change(&mut out, bytes("b"), bytes("3"), 2, false, Some(2));
        // A new row of b that follows no retraction is a record of its own.
        write_change(&mut out, bytes("b"), bytes("4"), 3, false, None);
        let mut stays = retraction("b", "2", 2);
        stays.value = bytes("3");
        let plain = |key: &str, value: &str, ts| OutputRecord {
            key: bytes(key),
            value: bytes(value),
            timestamp: ts,
            headers: Vec::new(),
        };
        assert_eq!(
            out,
            vec![
                retraction("a", "1", 1),
                plain("b", "2", 1),
                stays,
                plain("b", "4", 3),
            ]
        );
    }

    fn plan(value_format: FormatKind, sink_format: FormatKind) -> QueryPlan {
        let source = TopicSpec {
            retractions: false,
            topic: "in".into(),
            timestamp: None,
            timestamp_format: None,
            window: None,
            key_format: Format::new(FormatKind::Kafka),
            value_format: Format::new(value_format),
            schema: LogicalSchema::new(vec![
                Column::key("K", SqlType::String),
                Column::value("ID", SqlType::Bigint),
                Column::value("NAME", SqlType::String),
            ]),
        };
        let out_schema = LogicalSchema::new(vec![
            Column::key("K", SqlType::String),
            Column::value("ID2", SqlType::Bigint),
            Column::value("NAME", SqlType::String),
        ]);
        QueryPlan {
            version: PLAN_VERSION,
            throw_on_invalid_timestamp: false,
            root: Step::StreamSink {
                input: Box::new(Step::StreamSelect {
                    input: Box::new(Step::StreamFilter {
                        input: Box::new(Step::StreamSource {
                            name: "IN".into(),
                            topic: source,
                        }),
                        predicate: Expr::Binary {
                            op: BinaryOp::Gt,
                            left: Box::new(Expr::Column("ID".into())),
                            right: Box::new(Expr::Literal(Literal::Bigint(1))),
                        },
                    }),
                    projection: vec![
                        NamedExpr {
                            name: "K".into(),
                            expr: Expr::Column("K".into()),
                        },
                        NamedExpr {
                            name: "ID2".into(),
                            expr: Expr::Binary {
                                op: BinaryOp::Multiply,
                                left: Box::new(Expr::Column("ID".into())),
                                right: Box::new(Expr::Literal(Literal::Bigint(2))),
                            },
                        },
                        NamedExpr {
                            name: "NAME".into(),
                            expr: Expr::Column("NAME".into()),
                        },
                    ],
                    schema: out_schema.clone(),
                    rekeyed: false,
                }),
                topic: TopicSpec {
                    retractions: false,
                    topic: "out".into(),
                    timestamp: None,
                    timestamp_format: None,
                    window: None,
                    key_format: Format::new(FormatKind::Kafka),
                    value_format: Format::new(sink_format),
                    schema: out_schema,
                },
            },
        }
    }

    fn run(p: &mut Pipeline, values: &[&str]) -> (Vec<OutputRecord>, Vec<DecodeFailure>) {
        let mut failures = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let r = SourceRecord {
                key: Some(b"k"),
                value: Some(v.as_bytes()),
                headers: &[],
                timestamp: 100 + i as i64,
                partition: 0,
                offset: i as i64,
            };
            if let Err(f) = p.push(0, &r) {
                failures.push(f);
            }
        }
        let mut out = Vec::new();
        p.flush(&mut out).unwrap();
        (out, failures)
    }

    #[test]
    fn json_filter_project_json() {
        let mut p = Pipeline::new(&plan(FormatKind::Json, FormatKind::Json), None).unwrap();
        let (out, failures) = run(
            &mut p,
            &[
                r#"{"id": 1, "name": "a"}"#,
                r#"{"ID": 2, "name": "b"}"#,
                r#"not json"#,
                r#"{"id": "x"}"#,
                r#"{"id": 3}"#,
            ],
        );
        assert_eq!(
            failures.iter().map(|f| f.offset).collect::<Vec<_>>(),
            vec![2, 3]
        );
        let values: Vec<String> = out
            .iter()
            .map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap())
            .collect();
        assert_eq!(
            values,
            vec![r#"{"ID2":4,"NAME":"b"}"#, r#"{"ID2":6,"NAME":null}"#]
        );
        assert_eq!(out[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(out[0].timestamp, 101);
        assert_eq!(out[1].timestamp, 104);
    }

    #[test]
    fn delimited_in_and_out() {
        let mut p =
            Pipeline::new(&plan(FormatKind::Delimited, FormatKind::Delimited), None).unwrap();
        let (out, failures) = run(&mut p, &["5,x,y", "5,\"a,b\"", "0,z"]);
        assert_eq!(failures.len(), 1);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].value.as_deref(), Some(&b"10,\"a,b\""[..]));
    }

    #[test]
    fn null_values_are_null_rows() {
        let mut p = Pipeline::new(&plan(FormatKind::Json, FormatKind::Json), None).unwrap();
        let tombstone = SourceRecord {
            key: Some(b"k"),
            value: None,
            headers: &[],
            timestamp: 1,
            partition: 0,
            offset: 0,
        };
        p.push(0, &tombstone).unwrap();
        let mut out = Vec::new();
        p.flush(&mut out).unwrap();
        // The plan filters: a null row never passes a filter.
        assert!(out.is_empty());

        let mut plan = plan(FormatKind::Json, FormatKind::Json);
        // Without the filter, a null row is projected to a null value with its key.
        if let Step::StreamSink { input, .. } = &mut plan.root
            && let Step::StreamSelect {
                input: select_input,
                ..
            } = input.as_mut()
            && let Step::StreamFilter { input: source, .. } = select_input.as_ref().clone()
        {
            *select_input = source;
        }
        let mut p = Pipeline::new(&plan, None).unwrap();
        p.push(0, &tombstone).unwrap();
        p.flush(&mut out).unwrap();
        assert_eq!(
            out,
            vec![OutputRecord {
                key: Some(b"k".to_vec()),
                value: None,
                timestamp: 1,
                headers: Vec::new(),
            }]
        );
    }

    /// `SELECT key, COUNT(*) AS N FROM IN [WINDOW ...] GROUP BY key [HAVING ...]` into a table.
    fn count_by(
        key: &str,
        window: Option<sluice_plan::WindowSpec>,
        having: Option<Expr>,
    ) -> QueryPlan {
        let mut p = plan(FormatKind::Json, FormatKind::Json);
        let source = p.root.source_topics()[0].clone();
        let schema = LogicalSchema::new(vec![
            Column::key(key, SqlType::String),
            Column::value("N", SqlType::Bigint),
        ]);
        p.root = Step::TableSink {
            input: Box::new(Step::StreamAggregate {
                input: Box::new(Step::StreamSource {
                    name: "IN".into(),
                    topic: source,
                }),
                window: window.clone(),
                group_by: vec![Expr::Column(key.into())],
                aggregates: vec![sluice_plan::AggregateCall {
                    function: "COUNT".into(),
                    args: vec![],
                    return_type: SqlType::Bigint,
                }],
                having,
                projection: vec![NamedExpr {
                    name: "N".into(),
                    expr: Expr::Column("$agg0".into()),
                }],
                schema: schema.clone(),
                emit_final: false,
            }),
            topic: TopicSpec {
                retractions: false,
                topic: "out".into(),
                timestamp: None,
                timestamp_format: None,
                window,
                key_format: Format::new(FormatKind::Kafka),
                value_format: Format::new(FormatKind::Json),
                schema,
            },
        };
        p
    }

    #[test]
    fn aggregation_emits_the_changelog_with_having_tombstones() {
        // HAVING COUNT(*) < 3: the third row of a group deletes it.
        let p = count_by(
            "NAME",
            None,
            Some(Expr::Binary {
                op: BinaryOp::Lt,
                left: Box::new(Expr::Column("$agg0".into())),
                right: Box::new(Expr::Literal(Literal::Bigint(3))),
            }),
        );
        let mut pipeline = Pipeline::new(&p, None).unwrap();
        let rows = [
            r#"{"name":"a"}"#,
            r#"{"name":"b"}"#,
            r#"{"name":null}"#,
            r#"{"name":"a"}"#,
            r#"{"name":"a"}"#,
            r#"{"name":"a"}"#,
        ];
        let (out, _) = run(&mut pipeline, &rows);
        let shown: Vec<(String, Option<String>)> = out
            .iter()
            .map(|r| {
                (
                    String::from_utf8(r.key.clone().unwrap()).unwrap(),
                    r.value.clone().map(|v| String::from_utf8(v).unwrap()),
                )
            })
            .collect();
        assert_eq!(
            shown,
            vec![
                ("a".into(), Some(r#"{"N":1}"#.into())),
                ("b".into(), Some(r#"{"N":1}"#.into())),
                ("a".into(), Some(r#"{"N":2}"#.into())),
                ("a".into(), None),
            ]
        );
    }

    #[test]
    fn table_aggregation_undoes_the_rows_a_change_replaces() {
        // The source is a table keyed by K: GROUP BY NAME counts its current rows.
        let mut p = count_by("NAME", None, None);
        if let Step::TableSink { input, .. } = &mut p.root
            && let Step::StreamAggregate { input: source, .. } = input.as_mut()
            && let Step::StreamSource { name, topic } = source.as_ref().clone()
        {
            **source = Step::TableSource {
                name,
                topic,
                materialized: true,
            };
        }
        let mut pipeline = Pipeline::new(&p, None).unwrap();
        let changes: [(Option<&str>, Option<&str>); 7] = [
            (Some("1"), Some(r#"{"name":"a"}"#)),
            (Some("2"), Some(r#"{"name":"a"}"#)),
            // Moves key 1 from a to b: a loses it (emits), b gains it (emits).
            (Some("1"), Some(r#"{"name":"b"}"#)),
            // Same group: one emission, not two.
            (Some("1"), Some(r#"{"name":"b", "id": 5}"#)),
            // A record without a key is no table row.
            (None, Some(r#"{"name":"a"}"#)),
            // A value that does not decode changes nothing.
            (Some("2"), Some("not json")),
            // Deleting key 2 takes it out of a.
            (Some("2"), None),
        ];
        let mut failures = 0;
        for (i, (key, value)) in changes.iter().enumerate() {
            let r = SourceRecord {
                key: key.map(str::as_bytes),
                value: value.map(str::as_bytes),
                headers: &[],
                timestamp: i as i64,
                partition: 0,
                offset: i as i64,
            };
            failures += pipeline.push(0, &r).is_err() as usize;
        }
        let mut out = Vec::new();
        pipeline.flush(&mut out).unwrap();
        let shown: Vec<String> = out
            .iter()
            .map(|r| {
                format!(
                    "{}={}@{}",
                    String::from_utf8_lossy(r.key.as_deref().unwrap()),
                    String::from_utf8_lossy(r.value.as_deref().unwrap()),
                    r.timestamp
                )
            })
            .collect();
        assert_eq!(
            shown,
            vec![
                r#"a={"N":1}@0"#,
                r#"a={"N":2}@1"#,
                r#"a={"N":1}@2"#,
                r#"b={"N":1}@2"#,
                r#"b={"N":1}@3"#,
                r#"a={"N":0}@6"#,
            ]
        );
        assert_eq!(failures, 1);
    }

    #[test]
    fn an_event_time_column_sets_rowtime_and_drops_invalid_times() {
        let mut p = plan(FormatKind::Json, FormatKind::Json);
        if let Step::StreamSink { input, .. } = &mut p.root
            && let Step::StreamSelect { input: filter, .. } = input.as_mut()
            && let Step::StreamFilter { input: source, .. } = filter.as_mut()
            && let Step::StreamSource { topic, .. } = source.as_mut()
        {
            topic.timestamp = Some("ID".into());
        }
        let mut pipeline = Pipeline::new(&p, None).unwrap();
        let (out, _) = run(
            &mut pipeline,
            &[
                r#"{"id": 1000}"#,
                r#"{"id": -5}"#,
                r#"{"name": "no id"}"#,
                r#"{"id": 7}"#,
            ],
        );
        // ID 1000 and 7 pass the filter (ID > 1); -5 and the missing ID are invalid times.
        let times: Vec<i64> = out.iter().map(|r| r.timestamp).collect();
        assert_eq!(times, vec![1000, 7]);
        assert_eq!(pipeline.invalid_timestamps, 2);

        // With ksql.timestamp.throw.on.invalid, an invalid time stops the query.
        p.throw_on_invalid_timestamp = true;
        let mut pipeline = Pipeline::new(&p, None).unwrap();
        let record = br#"{"id": -5}"#;
        let r = SourceRecord {
            key: None,
            value: Some(record),
            headers: &[],
            timestamp: 0,
            partition: 0,
            offset: 0,
        };
        pipeline.push(0, &r).unwrap();
        let err = pipeline.flush(&mut Vec::new()).unwrap_err();
        assert!(
            matches!(err, RuntimeError::InvalidTimestamp { .. }),
            "{err}"
        );
    }

    #[test]
    fn windowed_keys_carry_the_window_start_and_late_records_are_dropped() {
        let window = sluice_plan::WindowSpec {
            kind: sluice_plan::WindowKind::Tumbling,
            retention_ms: None,
            size_ms: 100,
            advance_ms: 100,
            grace_ms: 60,
        };
        // Window [0, 100) closes when stream time reaches 100 + 60: the record at 20 (stream
        // time 150) still counts, the one at 30 (stream time 260) is late and dropped.
        let out = run_times(&count_by("K", Some(window), None), &[10, 150, 20, 260, 30]);
        let got: Vec<(i64, String)> = out
            .iter()
            .map(|r| {
                let key = r.key.as_deref().unwrap();
                let (inner, start) = key.split_at(key.len() - 8);
                assert_eq!(inner, b"k");
                (
                    i64::from_be_bytes(start.try_into().unwrap()),
                    String::from_utf8(r.value.clone().unwrap()).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, r#"{"N":1}"#.to_string()),
                (100, r#"{"N":1}"#.to_string()),
                (0, r#"{"N":2}"#.to_string()),
                (200, r#"{"N":1}"#.to_string()),
            ]
        );
    }

    /// Runs keyed records with these timestamps through `plan`, one at a time.
    fn run_times(p: &QueryPlan, times: &[i64]) -> Vec<OutputRecord> {
        let mut pipeline = Pipeline::new(p, None).unwrap();
        let mut out = Vec::new();
        for (i, ts) in times.iter().enumerate() {
            let r = SourceRecord {
                key: Some(b"k"),
                value: Some(br#"{"id": 1}"#),
                headers: &[],
                timestamp: *ts,
                partition: 0,
                offset: i as i64,
            };
            pipeline.push(0, &r).unwrap();
            pipeline.flush(&mut out).unwrap();
        }
        out
    }

    #[test]
    fn sessions_merge_and_their_old_windows_are_deleted() {
        let window = sluice_plan::WindowSpec {
            kind: sluice_plan::WindowKind::Session,
            retention_ms: None,
            size_ms: 5,
            advance_ms: 5,
            grace_ms: 100,
        };
        let out = run_times(&count_by("K", Some(window), None), &[0, 4, 20]);
        // Session keys: the key, then the end and the start (8 bytes each, big-endian).
        let got: Vec<(i64, i64, Option<String>, i64)> = out
            .iter()
            .map(|r| {
                let key = r.key.as_deref().unwrap();
                let (inner, times) = key.split_at(key.len() - 16);
                assert_eq!(inner, b"k");
                let (end, start) = times.split_at(8);
                (
                    i64::from_be_bytes(start.try_into().unwrap()),
                    i64::from_be_bytes(end.try_into().unwrap()),
                    r.value.clone().map(|v| String::from_utf8(v).unwrap()),
                    r.timestamp,
                )
            })
            .collect();
        let n = |v: &str| Some(v.to_string());
        assert_eq!(
            got,
            vec![
                (0, 0, n(r#"{"N":1}"#), 0),
                (0, 0, None, 0),
                (0, 4, n(r#"{"N":2}"#), 4),
                (20, 20, n(r#"{"N":1}"#), 20),
            ]
        );
    }

    #[test]
    fn emit_final_writes_a_window_once_when_it_closes() {
        let window = sluice_plan::WindowSpec {
            kind: sluice_plan::WindowKind::Tumbling,
            retention_ms: None,
            size_ms: 2,
            advance_ms: 2,
            grace_ms: 0,
        };
        let mut p = count_by("K", Some(window), None);
        if let Step::TableSink { input, .. } = &mut p.root
            && let Step::StreamAggregate { emit_final, .. } = input.as_mut()
        {
            *emit_final = true;
        }
        let out = run_times(&p, &[0, 1, 2, 3]);
        // [0, 2) closes at 2 and is written with its last record's time; [2, 4) is open.
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].value.as_deref(), Some(&br#"{"N":2}"#[..]));
        assert_eq!(out[0].timestamp, 1);
    }

    #[test]
    fn explode_repeats_rows_and_pads_shorter_lists() {
        use datafusion_common::arrow::array::ListArray;
        use datafusion_common::arrow::datatypes::Int32Type;
        let ids: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
        let flags: ArrayRef = Arc::new(BooleanArray::from(vec![false; 3]));
        // Pseudo-columns are passed through; one BOOLEAN stands in for all of them here.
        let mut fields = vec![Field::new("ID", DataType::Int64, true)];
        let mut columns = vec![ids];
        for i in 0..PSEUDO_COUNT {
            fields.push(Field::new(format!("p{i}"), DataType::Boolean, false));
            columns.push(flags.clone());
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields.clone())), columns).unwrap();
        let a = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(10), Some(11)]),
            None,
            Some(vec![Some(30)]),
        ]);
        let b = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(7)]),
            Some(vec![]),
            Some(vec![Some(8), Some(9)]),
        ]);
        let mut out_fields = fields[..1].to_vec();
        out_fields.push(Field::new("$udtf0", DataType::Int32, true));
        out_fields.push(Field::new("$udtf1", DataType::Int32, true));
        out_fields.extend(fields[1..].iter().cloned());
        let out = explode(
            &batch,
            &[Arc::new(a), Arc::new(b)],
            &Arc::new(Schema::new(out_fields)),
        )
        .unwrap();
        // Row 2 has only empty or NULL lists: no rows.
        let ids: Vec<i64> = out.column(0).as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(ids, vec![1, 1, 3, 3]);
        let col = |i: usize| -> Vec<Option<i32>> {
            out.column(i)
                .as_primitive::<datafusion_common::arrow::datatypes::Int32Type>()
                .iter()
                .collect()
        };
        assert_eq!(col(1), vec![Some(10), Some(11), Some(30), None]);
        assert_eq!(col(2), vec![Some(7), None, Some(8), Some(9)]);
    }

    #[test]
    fn newer_plans_are_refused() {
        let mut p = plan(FormatKind::Json, FormatKind::Json);
        p.version = PLAN_VERSION + 1;
        assert!(matches!(
            Pipeline::new(&p, None),
            Err(RuntimeError::Plan(_))
        ));
    }

    fn planned(sql: &str) -> QueryPlan {
        sluice_sql::plan_last_query(sql).unwrap()
    }

    #[test]
    fn string_columns_no_step_reads_are_not_decoded() {
        let unread = |sql: &str| -> Vec<String> {
            let p = Pipeline::new(&planned(sql), None).unwrap();
            let input = &p.inputs[0];
            input
                .source
                .schema
                .columns
                .iter()
                .zip(&input.builders)
                .filter(|(_, b)| matches!(b, ColumnBuilder::Unread { .. }))
                .map(|(c, _)| c.name.clone())
                .collect()
        };
        let source = "CREATE STREAM S (K STRING KEY, A STRING, B STRING, C STRING, N INT, T STRING) \
                      WITH (kafka_topic='s', format='JSON', timestamp='T', timestamp_format='yyyy');";
        // Read by the filter, the projection, or as the event time: decoded.
        assert_eq!(
            unread(&format!(
                "{source} CREATE STREAM O AS SELECT K, UCASE(A) AS A FROM S WHERE B > 'x';"
            )),
            ["C"]
        );
        // Only STRING columns: a number must still be a number.
        assert_eq!(
            unread(&format!("{source} CREATE STREAM O AS SELECT K, N FROM S;")),
            ["A", "B", "C"]
        );
        // Grouped: the group and the aggregates' arguments are read.
        assert_eq!(
            unread(&format!(
                "{source} CREATE TABLE O AS SELECT A, COUNT(C) AS N FROM S GROUP BY A;"
            )),
            ["B"]
        );
        // Every column reaches the sink.
        assert!(unread(&format!("{source} CREATE STREAM O AS SELECT * FROM S;")).is_empty());
        // Through a join: what the projection after it reads of the joined row.
        let users = "CREATE TABLE U (ID STRING PRIMARY KEY, NAME STRING) \
                     WITH (kafka_topic='u', format='JSON');";
        assert_eq!(
            unread(&format!(
                "{source} {users} CREATE STREAM O AS SELECT S.K, A, NAME FROM S JOIN U ON S.K = U.ID WHERE U.NAME <> B;"
            )),
            ["C"]
        );
        assert_eq!(
            unread(&format!(
                "{source} {users} CREATE STREAM O AS SELECT U.ID, NAME FROM S JOIN U ON S.B = U.ID;"
            )),
            ["A", "C"]
        );
        assert!(
            unread(&format!(
                "{source} {users} CREATE STREAM O AS SELECT * FROM S JOIN U ON S.K = U.ID;"
            ))
            .is_empty()
        );
        let delimited = "CREATE STREAM S (K STRING KEY, A STRING, B STRING) \
                         WITH (kafka_topic='s', format='DELIMITED');";
        assert_eq!(
            unread(&format!(
                "{delimited} CREATE STREAM O AS SELECT K, B FROM S;"
            )),
            ["A"]
        );
    }

    #[test]
    fn rows_whose_unread_columns_are_skipped_still_decode_and_fail_as_before() {
        let mut p = Pipeline::new(
            &planned(
                "CREATE STREAM S (K STRING KEY, A STRING, B STRING, N INT) \
                 WITH (kafka_topic='s', format='JSON');
                 CREATE STREAM O AS SELECT K, N FROM S WHERE N > 1;",
            ),
            None,
        )
        .unwrap();
        let values: [&[u8]; 5] = [
            br#"{"A":"x","B":{"nested":[1,2]},"N":2}"#,
            br#"{"A":"x","B":"y","N":"not a number"}"#,
            br#"{"A":"x","B":"y","N":3"#,
            br#"{"A":null,"N":5}"#,
            br#"{"A":"x","B":"y","N":1}"#,
        ];
        let mut failed = Vec::new();
        for (i, value) in values.iter().enumerate() {
            let record = SourceRecord {
                key: Some(br#""k""#),
                value: Some(value),
                headers: &[],
                timestamp: i as i64,
                partition: 0,
                offset: i as i64,
            };
            if p.push(0, &record).is_err() {
                failed.push(i);
            }
        }
        let mut out = Vec::new();
        p.flush(&mut out).unwrap();
        let values: Vec<String> = out
            .iter()
            .map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap())
            .collect();
        assert_eq!(failed, [1, 2]);
        assert_eq!(values, [r#"{"N":2}"#, r#"{"N":5}"#]);
    }

    /// A stream-stream join forgets the rows past its retention, including those of keys
    /// never seen again (swept now and then), and keeps those of a long retention.
    #[test]
    fn window_stores_keep_rows_only_for_their_retention() {
        let rows_kept = |within: &str| {
            let plan = sluice_sql::plan_last_query(&format!(
                "CREATE STREAM l (id STRING KEY, v INT) WITH (kafka_topic='l', format='JSON');
                 CREATE STREAM r (id STRING KEY, v INT) WITH (kafka_topic='r', format='JSON');
                 CREATE STREAM o AS SELECT l.id, l.v AS lv, r.v AS rv FROM l JOIN r {within} ON l.id = r.id;"
            ))
            .unwrap();
            let mut p = Pipeline::new(&plan, None).unwrap();
            let mut out = Vec::new();
            // 50,000 records, 10 ms apart, each of a key never seen again.
            for i in 0..50_000i64 {
                let key = i.to_string();
                let record = SourceRecord {
                    key: Some(key.as_bytes()),
                    value: Some(br#"{"V":1}"#),
                    headers: &[],
                    timestamp: i * 10,
                    partition: 0,
                    offset: i,
                };
                p.push((i % 2) as usize, &record).unwrap();
                if p.pending() >= 1000 {
                    p.flush(&mut out).unwrap();
                }
            }
            p.flush(&mut out).unwrap();
            p.joins[0].op.window_rows()
        };
        // 2 s of retention is 200 records; a sweep every 10,000 rows leaves at most that
        // many more.
        let short = rows_kept("WITHIN 1 SECOND GRACE PERIOD 0 SECONDS");
        assert!(short <= 10_200, "{short} rows kept");
        // A day's default grace keeps every row.
        assert_eq!(rows_kept("WITHIN 1 SECOND"), 50_000);
    }
}
