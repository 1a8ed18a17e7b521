//! The running state of one aggregate function for one group, with ksqlDB's semantics
//! for each function, and undo for those that can aggregate a table.

use crate::error::{Result, RuntimeError};
use crate::snapshot::{Reader, Writer};
use crate::types::arrow_type;
use datafusion_common::ScalarValue;
use datafusion_common::arrow::array::{ArrayRef, MapArray, StringArray, StructArray};
use datafusion_common::arrow::buffer::OffsetBuffer;
use datafusion_common::arrow::datatypes::DataType;
use datafusion_common::scalar::ScalarStructBuilder;
use sluice_plan::{AggregateCall, Expr, Literal, SqlType};
use std::cmp::Ordering;
use std::collections::VecDeque;
use std::sync::Arc;

/// ksqlDB's default cap on COLLECT_LIST and COLLECT_SET (`ksql.functions.collect_*.limit`).
const COLLECT_LIMIT: usize = 1000;

#[derive(Clone, Debug)]
pub enum Accumulator {
    /// COUNT(*) and COUNT(x): how many rows (with x not NULL).
    Count(i64),
    /// SUM: NULLs are skipped; the sum of nothing is 0; the sum keeps its declared type.
    Sum(ScalarValue, DataType),
    Min(ScalarValue),
    Max(ScalarValue),
    Avg {
        sum: f64,
        count: i64,
    },
    /// EARLIEST_BY_OFFSET / LATEST_BY_OFFSET: the first or last `n` values in arrival
    /// order (one value, not a list, when `n` is None), NULLs skipped if asked.
    ByOffset {
        latest: bool,
        n: Option<usize>,
        ignore_nulls: bool,
        /// Each value with its arrival number, so that merged sessions keep order.
        values: VecDeque<(u64, ScalarValue)>,
        item: DataType,
    },
    /// COLLECT_LIST (every value, NULLs too) and COLLECT_SET (distinct values), up to
    /// `limit` values.
    Collect {
        distinct: bool,
        limit: usize,
        values: Vec<ScalarValue>,
        item: DataType,
    },
    /// TOPK / TOPKDISTINCT: the `k` largest non-NULL values, largest first; with more
    /// arguments, the other values of those rows too (as STRUCT items).
    TopK {
        k: usize,
        distinct: bool,
        values: Vec<(ScalarValue, Vec<ScalarValue>)>,
        item: DataType,
    },
    /// HISTOGRAM: how many times each value was seen, in first-seen order.
    Histogram(Vec<(String, i64)>),
    /// CORRELATION: Pearson's sample correlation of the pairs with neither side NULL.
    Correlation(Moments),
    /// COUNT_DISTINCT: how many distinct non-NULL values, counted exactly (ksqlDB
    /// estimates with HyperLogLog, which is exact for small counts).
    Distinct(std::collections::HashSet<ScalarValue>),
    /// STDDEV_SAMP (which ksqlDB defines as the sample variance) and STDDEV_SAMPLE (the
    /// sample standard deviation), over the non-NULL values.
    Deviation {
        spread: Spread,
        root: bool,
    },
    /// ATTR: the value when every row had the same one (NULL counts as a value), else
    /// NULL. Counts per value, so a row can be taken back.
    Attr(Vec<(ScalarValue, i64)>, DataType),
}

/// How many of an aggregate's arguments are values per row; the rest are literal
/// parameters.
pub fn value_arguments(call: &AggregateCall) -> usize {
    match call.function.as_str() {
        "CORRELATION" => 2,
        // TOPK(sort, other..., k)
        "TOPK" | "TOPKDISTINCT" => call.args.len().saturating_sub(1),
        _ => call.args.len().min(1),
    }
}

fn literal_param(call: &AggregateCall, i: usize) -> Option<&Literal> {
    match call.args.get(i) {
        Some(Expr::Literal(l)) => Some(l),
        _ => None,
    }
}

impl Accumulator {
    pub fn new(call: &AggregateCall) -> Result<Accumulator> {
        let ty = arrow_type(&call.return_type);
        let item = || match &call.return_type {
            SqlType::Array(item) => arrow_type(item),
            other => arrow_type(other),
        };
        let int_param = |i: usize| match literal_param(call, i) {
            Some(Literal::Integer(v)) => Some((*v).max(0) as usize),
            Some(Literal::Bigint(v)) => Some((*v).max(0) as usize),
            _ => None,
        };
        let bool_param = |i: usize| match literal_param(call, i) {
            Some(Literal::Boolean(b)) => Some(*b),
            _ => None,
        };
        Ok(match call.function.as_str() {
            "COUNT" => Accumulator::Count(0),
            "SUM" => Accumulator::Sum(ScalarValue::new_zero(&ty)?, ty),
            "MIN" => Accumulator::Min(ScalarValue::try_from(&ty)?),
            "MAX" => Accumulator::Max(ScalarValue::try_from(&ty)?),
            "AVG" => Accumulator::Avg { sum: 0.0, count: 0 },
            f @ ("LATEST_BY_OFFSET" | "EARLIEST_BY_OFFSET") => {
                let n = int_param(1);
                let ignore_nulls = bool_param(if n.is_some() { 2 } else { 1 }).unwrap_or(true);
                Accumulator::ByOffset {
                    latest: f == "LATEST_BY_OFFSET",
                    n,
                    ignore_nulls,
                    values: VecDeque::new(),
                    item: item(),
                }
            }
            f @ ("COLLECT_LIST" | "COLLECT_SET") => Accumulator::Collect {
                distinct: f == "COLLECT_SET",
                limit: int_param(1).unwrap_or(COLLECT_LIMIT),
                values: Vec::new(),
                item: item(),
            },
            f @ ("TOPK" | "TOPKDISTINCT") => Accumulator::TopK {
                k: int_param(call.args.len().saturating_sub(1)).unwrap_or(0),
                distinct: f == "TOPKDISTINCT",
                values: Vec::new(),
                item: item(),
            },
            "HISTOGRAM" => Accumulator::Histogram(Vec::new()),
            "CORRELATION" => Accumulator::Correlation(Moments::default()),
            "COUNT_DISTINCT" => Accumulator::Distinct(Default::default()),
            f @ ("STDDEV_SAMP" | "STDDEV_SAMPLE") => Accumulator::Deviation {
                spread: Spread::default(),
                root: f == "STDDEV_SAMPLE",
            },
            "ATTR" => Accumulator::Attr(Vec::new(), ty),
            other => {
                return Err(RuntimeError::Plan(format!(
                    "no implementation of the aggregate {other}"
                )));
            }
        })
    }

    /// Adds one row; `args` are the row's value arguments (none for COUNT(*)); `seq`
    /// numbers the rows in arrival order.
    pub fn update(&mut self, args: &[ScalarValue], seq: u64) -> Result<()> {
        let arg = args.first();
        let present = arg.filter(|a| !a.is_null());
        match self {
            Accumulator::Count(n) => {
                if arg.is_none_or(|a| !a.is_null()) {
                    *n += 1;
                }
            }
            Accumulator::Sum(total, t) => {
                if let Some(a) = present {
                    *total = add_like_java(total, a, t, false)?;
                }
            }
            Accumulator::Min(best) => {
                if let Some(a) = present
                    && (best.is_null() || a.partial_cmp(best) == Some(Ordering::Less))
                {
                    *best = a.clone();
                }
            }
            Accumulator::Max(best) => {
                if let Some(a) = present
                    && (best.is_null() || a.partial_cmp(best) == Some(Ordering::Greater))
                {
                    *best = a.clone();
                }
            }
            Accumulator::Avg { sum, count } => {
                if let Some(a) = present {
                    *sum += as_f64(a)?;
                    *count += 1;
                }
            }
            Accumulator::ByOffset {
                latest,
                n,
                ignore_nulls,
                values,
                ..
            } => {
                let Some(a) = arg else { return Ok(()) };
                if *ignore_nulls && a.is_null() {
                    return Ok(());
                }
                let cap = n.unwrap_or(1);
                if *latest {
                    values.push_back((seq, a.clone()));
                    while values.len() > cap {
                        values.pop_front();
                    }
                } else if values.len() < cap {
                    values.push_back((seq, a.clone()));
                }
            }
            Accumulator::Collect {
                distinct,
                limit,
                values,
                ..
            } => {
                if let Some(a) = arg
                    && values.len() < *limit
                    && !(*distinct && values.contains(a))
                {
                    values.push(a.clone());
                }
            }
            Accumulator::TopK {
                k,
                distinct,
                values,
                ..
            } => {
                if let Some(a) = present
                    && !(*distinct && values.iter().any(|(v, _)| v == a))
                {
                    let at = values
                        .iter()
                        .position(|(v, _)| a.partial_cmp(v) == Some(Ordering::Greater))
                        .unwrap_or(values.len());
                    values.insert(at, (a.clone(), args[1..].to_vec()));
                    values.truncate(*k);
                }
            }
            Accumulator::Histogram(counts) => {
                if let Some(ScalarValue::Utf8(Some(s))) = present {
                    match counts.iter_mut().find(|(k, _)| k == s) {
                        Some((_, c)) => *c += 1,
                        None => counts.push((s.clone(), 1)),
                    }
                }
            }
            Accumulator::Correlation(m) => m.add(args, 1.0)?,
            Accumulator::Deviation { spread, .. } => {
                if let Some(a) = arg.filter(|a| !a.is_null()) {
                    spread.add(as_f64(a)?);
                }
            }
            Accumulator::Distinct(seen) => {
                if let Some(a) = arg.filter(|a| !a.is_null()) {
                    seen.insert(a.clone());
                }
            }
            Accumulator::Attr(counts, _) => {
                if let Some(a) = arg {
                    match counts.iter_mut().find(|(v, _)| v == a) {
                        Some((_, c)) => *c += 1,
                        None => counts.push((a.clone(), 1)),
                    }
                }
            }
        }
        Ok(())
    }

    /// Takes back one row added before (a table row that changed or was deleted).
    pub fn undo(&mut self, args: &[ScalarValue]) -> Result<()> {
        let arg = args.first();
        let present = arg.filter(|a| !a.is_null());
        match self {
            Accumulator::Count(n) => {
                if arg.is_none_or(|a| !a.is_null()) {
                    *n -= 1;
                }
            }
            Accumulator::Sum(total, t) => {
                if let Some(a) = present {
                    *total = add_like_java(total, a, t, true)?;
                }
            }
            Accumulator::Avg { sum, count } => {
                if let Some(a) = present {
                    *sum -= as_f64(a)?;
                    *count -= 1;
                }
            }
            Accumulator::Collect { values, .. } => {
                if let Some(a) = arg
                    && let Some(i) = values.iter().position(|v| v == a)
                {
                    values.remove(i);
                }
            }
            Accumulator::Histogram(counts) => {
                if let Some(ScalarValue::Utf8(Some(s))) = present
                    && let Some(i) = counts.iter().position(|(k, _)| k == s)
                {
                    counts[i].1 -= 1;
                    if counts[i].1 <= 0 {
                        counts.remove(i);
                    }
                }
            }
            Accumulator::Correlation(m) => m.add(args, -1.0)?,
            Accumulator::Deviation { spread, .. } => {
                if let Some(a) = arg.filter(|a| !a.is_null()) {
                    spread.remove(as_f64(a)?);
                }
            }
            Accumulator::Attr(counts, _) => {
                if let Some(a) = arg
                    && let Some(i) = counts.iter().position(|(v, _)| v == a)
                {
                    counts[i].1 -= 1;
                    if counts[i].1 <= 0 {
                        counts.remove(i);
                    }
                }
            }
            other => {
                return Err(RuntimeError::Plan(format!(
                    "the aggregate {other:?} cannot undo a row; it cannot aggregate a table"
                )));
            }
        }
        Ok(())
    }

    /// Folds in the state of another group (session windows that merge).
    pub fn merge(&mut self, other: &Accumulator) -> Result<()> {
        match (self, other) {
            (Accumulator::Count(a), Accumulator::Count(b)) => *a += b,
            (Accumulator::Sum(a, t), Accumulator::Sum(b, _)) => {
                *a = add_like_java(a, b, t, false)?;
            }
            (Accumulator::Min(a), Accumulator::Min(b)) => {
                if !b.is_null() && (a.is_null() || b.partial_cmp(a) == Some(Ordering::Less)) {
                    *a = b.clone();
                }
            }
            (Accumulator::Max(a), Accumulator::Max(b)) => {
                if !b.is_null() && (a.is_null() || b.partial_cmp(a) == Some(Ordering::Greater)) {
                    *a = b.clone();
                }
            }
            (Accumulator::Avg { sum, count }, Accumulator::Avg { sum: s, count: c }) => {
                *sum += s;
                *count += c;
            }
            (
                Accumulator::ByOffset {
                    latest, n, values, ..
                },
                Accumulator::ByOffset { values: more, .. },
            ) => {
                let mut all: Vec<(u64, ScalarValue)> =
                    values.drain(..).chain(more.iter().cloned()).collect();
                all.sort_by_key(|(seq, _)| *seq);
                let cap = n.unwrap_or(1);
                let keep = if *latest {
                    all.split_off(all.len().saturating_sub(cap))
                } else {
                    all.truncate(cap);
                    all
                };
                values.extend(keep);
            }
            (
                Accumulator::Collect {
                    distinct,
                    limit,
                    values,
                    ..
                },
                Accumulator::Collect { values: more, .. },
            ) => {
                for v in more {
                    if values.len() < *limit && !(*distinct && values.contains(v)) {
                        values.push(v.clone());
                    }
                }
            }
            (
                Accumulator::TopK {
                    k,
                    distinct,
                    values,
                    ..
                },
                Accumulator::TopK { values: more, .. },
            ) => {
                for (v, rest) in more {
                    if *distinct && values.iter().any(|(x, _)| x == v) {
                        continue;
                    }
                    values.push((v.clone(), rest.clone()));
                }
                values.sort_by(|(a, _), (b, _)| b.partial_cmp(a).unwrap_or(Ordering::Equal));
                values.truncate(*k);
            }
            (Accumulator::Histogram(a), Accumulator::Histogram(b)) => {
                for (k, c) in b {
                    match a.iter_mut().find(|(x, _)| x == k) {
                        Some((_, n)) => *n += c,
                        None => a.push((k.clone(), *c)),
                    }
                }
            }
            (Accumulator::Correlation(a), Accumulator::Correlation(b)) => a.merge(b),
            (
                Accumulator::Deviation { spread: a, .. },
                Accumulator::Deviation { spread: b, .. },
            ) => a.merge(b),
            (Accumulator::Attr(a, _), Accumulator::Attr(b, _)) => {
                for (v, c) in b {
                    match a.iter_mut().find(|(x, _)| x == v) {
                        Some((_, n)) => *n += c,
                        None => a.push((v.clone(), *c)),
                    }
                }
            }
            (a, b) => {
                return Err(RuntimeError::Plan(format!(
                    "cannot merge the aggregates {a:?} and {b:?}"
                )));
            }
        }
        Ok(())
    }

    pub fn value(&self) -> Result<ScalarValue> {
        Ok(match self {
            Accumulator::Count(n) => ScalarValue::Int64(Some(*n)),
            Accumulator::Sum(v, _) | Accumulator::Min(v) | Accumulator::Max(v) => v.clone(),
            Accumulator::Avg { sum, count } => ScalarValue::Float64(Some(if *count == 0 {
                0.0
            } else {
                sum / *count as f64
            })),
            Accumulator::ByOffset {
                n, values, item, ..
            } => match n {
                None => match values.front() {
                    Some((_, v)) => v.clone(),
                    None => ScalarValue::try_from(item)?,
                },
                Some(_) => list(values.iter().map(|(_, v)| v.clone()).collect(), item),
            },
            Accumulator::Collect { values, item, .. } => list(values.clone(), item),
            Accumulator::TopK { values, item, .. } => {
                let items = match item {
                    DataType::Struct(fields) => values
                        .iter()
                        .map(|(sort, others)| {
                            let mut b = ScalarStructBuilder::new();
                            for (f, v) in fields.iter().zip(std::iter::once(sort).chain(others)) {
                                b = b.with_scalar(f.as_ref().clone(), v.clone());
                            }
                            Ok(b.build()?)
                        })
                        .collect::<Result<Vec<_>>>()?,
                    _ => values.iter().map(|(v, _)| v.clone()).collect(),
                };
                list(items, item)
            }
            Accumulator::Histogram(counts) => {
                let keys: ArrayRef = Arc::new(StringArray::from_iter_values(
                    counts.iter().map(|(k, _)| k.as_str()),
                ));
                let values: ArrayRef = Arc::new(
                    datafusion_common::arrow::array::Int64Array::from_iter_values(
                        counts.iter().map(|(_, c)| *c),
                    ),
                );
                let map_type = arrow_type(&SqlType::Map {
                    key: Box::new(SqlType::String),
                    value: Box::new(SqlType::Bigint),
                });
                let DataType::Map(entries, sorted) = map_type else {
                    unreachable!("a MAP is a Map")
                };
                let DataType::Struct(fields) = entries.data_type() else {
                    unreachable!("map entries are a struct")
                };
                let entry_array = StructArray::new(fields.clone(), vec![keys, values], None);
                ScalarValue::Map(Arc::new(MapArray::new(
                    entries.clone(),
                    OffsetBuffer::from_lengths([counts.len()]),
                    entry_array,
                    None,
                    sorted,
                )))
            }
            Accumulator::Correlation(m) => {
                // ksqlDB's formula, for the same rounding.
                let numerator = m.n * m.xy - m.x * m.y;
                let denominator = (m.n * m.xx - m.x * m.x).sqrt() * (m.n * m.yy - m.y * m.y).sqrt();
                ScalarValue::Float64(Some(numerator / denominator))
            }
            Accumulator::Distinct(seen) => ScalarValue::Int64(Some(seen.len() as i64)),
            Accumulator::Deviation { spread, root } => {
                let variance = spread.variance();
                ScalarValue::Float64(Some(if *root { variance.sqrt() } else { variance }))
            }
            Accumulator::Attr(counts, ty) => match counts.as_slice() {
                [(v, _)] => v.clone(),
                _ => ScalarValue::try_from(ty)?,
            },
        })
    }
}

impl Accumulator {
    /// Writes the accumulator's running state (its parameters and types come from the
    /// call, which `load` starts from).
    pub fn save(&self, w: &mut Writer<'_>) -> Result<()> {
        match self {
            Accumulator::Count(n) => w.i64(*n),
            Accumulator::Sum(v, _) | Accumulator::Min(v) | Accumulator::Max(v) => w.scalar(v)?,
            Accumulator::Avg { sum, count } => {
                w.f64(*sum);
                w.i64(*count);
            }
            Accumulator::ByOffset { values, .. } => {
                w.len(values.len());
                for (seq, v) in values {
                    w.u64(*seq);
                    w.scalar(v)?;
                }
            }
            Accumulator::Collect { values, .. } => w.scalars(values)?,
            Accumulator::TopK { values, .. } => {
                w.len(values.len());
                for (v, others) in values {
                    w.scalar(v)?;
                    w.scalars(others)?;
                }
            }
            Accumulator::Histogram(counts) => {
                w.len(counts.len());
                for (v, n) in counts {
                    w.str(v);
                    w.i64(*n);
                }
            }
            Accumulator::Correlation(m) => {
                for x in [m.n, m.x, m.y, m.xx, m.yy, m.xy] {
                    w.f64(x);
                }
            }
            Accumulator::Distinct(values) => {
                w.len(values.len());
                values.iter().try_for_each(|v| w.scalar(v))?;
            }
            Accumulator::Deviation { spread, .. } => {
                for x in [spread.count, spread.sum, spread.m2] {
                    w.f64(x);
                }
            }
            Accumulator::Attr(counts, _) => {
                w.len(counts.len());
                for (v, n) in counts {
                    w.scalar(v)?;
                    w.i64(*n);
                }
            }
        }
        Ok(())
    }

    /// Reads back what `save` wrote into an accumulator fresh from the same call.
    pub fn load(&mut self, r: &mut Reader<'_>) -> Result<()> {
        match self {
            Accumulator::Count(n) => *n = r.i64()?,
            Accumulator::Sum(v, _) | Accumulator::Min(v) | Accumulator::Max(v) => {
                *v = r.scalar()?
            }
            Accumulator::Avg { sum, count } => {
                *sum = r.f64()?;
                *count = r.i64()?;
            }
            Accumulator::ByOffset { values, .. } => {
                let n = r.len()?;
                *values = (0..n)
                    .map(|_| Ok((r.u64()?, r.scalar()?)))
                    .collect::<Result<_>>()?;
            }
            Accumulator::Collect { values, .. } => *values = r.scalars()?,
            Accumulator::TopK { values, .. } => {
                let n = r.len()?;
                *values = (0..n)
                    .map(|_| Ok((r.scalar()?, r.scalars()?)))
                    .collect::<Result<_>>()?;
            }
            Accumulator::Histogram(counts) => {
                let n = r.len()?;
                *counts = (0..n)
                    .map(|_| Ok((r.string()?, r.i64()?)))
                    .collect::<Result<_>>()?;
            }
            Accumulator::Correlation(m) => {
                for x in [
                    &mut m.n, &mut m.x, &mut m.y, &mut m.xx, &mut m.yy, &mut m.xy,
                ] {
                    *x = r.f64()?;
                }
            }
            Accumulator::Distinct(values) => {
                let n = r.len()?;
                *values = (0..n).map(|_| r.scalar()).collect::<Result<_>>()?;
            }
            Accumulator::Deviation { spread, .. } => {
                for x in [&mut spread.count, &mut spread.sum, &mut spread.m2] {
                    *x = r.f64()?;
                }
            }
            Accumulator::Attr(counts, _) => {
                let n = r.len()?;
                *counts = (0..n)
                    .map(|_| Ok((r.scalar()?, r.i64()?)))
                    .collect::<Result<_>>()?;
            }
        }
        Ok(())
    }
}

/// Sums over (x, y) pairs, from which a correlation follows.
#[derive(Clone, Debug, Default)]
pub struct Moments {
    n: f64,
    x: f64,
    y: f64,
    xx: f64,
    yy: f64,
    xy: f64,
}

impl Moments {
    fn merge(&mut self, other: &Moments) {
        self.n += other.n;
        self.x += other.x;
        self.y += other.y;
        self.xx += other.xx;
        self.yy += other.yy;
        self.xy += other.xy;
    }

    /// Adds (sign 1) or takes back (sign -1) a pair; pairs with a NULL do not count.
    fn add(&mut self, args: &[ScalarValue], sign: f64) -> Result<()> {
        if let [a, b] = args
            && !a.is_null()
            && !b.is_null()
        {
            let (a, b) = (as_f64(a)?, as_f64(b)?);
            self.n += sign;
            self.x += sign * a;
            self.y += sign * b;
            self.xx += sign * a * a;
            self.yy += sign * b * b;
            self.xy += sign * a * b;
        }
        Ok(())
    }
}

/// Count, sum and sum of squared deviations, updated as ksqlDB updates them (from the
/// running sum, which decides the last digits), from which the sample variance follows.
#[derive(Clone, Debug, Default)]
pub struct Spread {
    count: f64,
    sum: f64,
    m2: f64,
}

impl Spread {
    fn add(&mut self, v: f64) {
        let (count, sum) = (self.count + 1.0, self.sum + v);
        if self.count > 0.0 {
            let delta = v * count - sum;
            self.m2 += delta * delta / (count * self.count);
        }
        self.count = count;
        self.sum = sum;
    }

    fn remove(&mut self, v: f64) {
        if self.count <= 1.0 {
            *self = Spread::default();
            return;
        }
        let delta = v * self.count - self.sum;
        self.m2 -= delta * delta / (self.count * (self.count - 1.0));
        self.count -= 1.0;
        self.sum -= v;
    }

    fn merge(&mut self, other: &Spread) {
        if other.count == 0.0 {
            return;
        }
        if self.count == 0.0 {
            *self = other.clone();
            return;
        }
        let delta = other.sum / other.count - self.sum / self.count;
        let n = self.count + other.count;
        self.m2 += other.m2 + delta * delta * self.count * other.count / n;
        self.count = n;
        self.sum += other.sum;
    }

    /// The sample variance; 0 for fewer than two values.
    fn variance(&self) -> f64 {
        if self.count < 2.0 {
            0.0
        } else {
            self.m2 / (self.count - 1.0)
        }
    }
}

fn list(values: Vec<ScalarValue>, item: &DataType) -> ScalarValue {
    ScalarValue::List(ScalarValue::new_list_nullable(&values, item))
}

fn as_f64(v: &ScalarValue) -> Result<f64> {
    match v.cast_to(&DataType::Float64)? {
        ScalarValue::Float64(Some(f)) => Ok(f),
        _ => Ok(0.0),
    }
}

/// `total ± a` with Java's arithmetic: integer sums wrap on overflow; a DECIMAL sum
/// past its precision is an error (the total is left as it was), as in ksqlDB.
fn add_like_java(
    total: &ScalarValue,
    a: &ScalarValue,
    t: &DataType,
    subtract: bool,
) -> Result<ScalarValue> {
    Ok(match (total, a) {
        (ScalarValue::Int32(Some(x)), ScalarValue::Int32(Some(y))) => {
            ScalarValue::Int32(Some(if subtract {
                x.wrapping_sub(*y)
            } else {
                x.wrapping_add(*y)
            }))
        }
        (ScalarValue::Int64(Some(x)), ScalarValue::Int64(Some(y))) => {
            ScalarValue::Int64(Some(if subtract {
                x.wrapping_sub(*y)
            } else {
                x.wrapping_add(*y)
            }))
        }
        _ => {
            let sum = if subtract {
                total.sub(a)?
            } else {
                total.add(a)?
            };
            match t {
                // The cast refuses a value past the precision, as does the check.
                DataType::Decimal128(precision, _) => match sum.cast_to(t) {
                    Ok(ScalarValue::Decimal128(Some(v), ..))
                        if v.unsigned_abs() >= 10u128.pow(u32::from(*precision)) =>
                    {
                        return Err(RuntimeError::Overflow);
                    }
                    Ok(sum) => sum,
                    Err(_) => return Err(RuntimeError::Overflow),
                },
                _ => sum.cast_to(t)?,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(function: &str, args: Vec<Expr>, returns: SqlType) -> AggregateCall {
        AggregateCall {
            function: function.into(),
            args,
            return_type: returns,
        }
    }

    fn int(v: Option<i64>) -> ScalarValue {
        ScalarValue::Int64(v)
    }

    fn run(acc: &mut Accumulator, values: &[Option<i64>]) -> Vec<String> {
        values
            .iter()
            .map(|v| {
                acc.update(&[int(*v)], 0).unwrap();
                acc.value().unwrap().to_string()
            })
            .collect()
    }

    #[test]
    fn by_offset_keeps_the_first_or_last_values() {
        let col = Expr::Column("X".into());
        let list = SqlType::Array(Box::new(SqlType::Bigint));
        let mut latest2 = Accumulator::new(&call(
            "LATEST_BY_OFFSET",
            vec![
                col.clone(),
                Expr::Literal(Literal::Integer(2)),
                Expr::Literal(Literal::Boolean(false)),
            ],
            list.clone(),
        ))
        .unwrap();
        assert_eq!(
            run(&mut latest2, &[Some(12), None, Some(13)]),
            vec!["[12]", "[12, ]", "[, 13]"]
        );
        let mut earliest =
            Accumulator::new(&call("EARLIEST_BY_OFFSET", vec![col], SqlType::Bigint)).unwrap();
        assert_eq!(
            run(&mut earliest, &[None, Some(13), Some(14)]),
            vec!["NULL", "13", "13"]
        );
    }

    #[test]
    fn topk_keeps_the_largest_and_attr_needs_one_value() {
        let col = Expr::Column("X".into());
        let mut top = Accumulator::new(&call(
            "TOPK",
            vec![col.clone(), Expr::Literal(Literal::Integer(2))],
            SqlType::Array(Box::new(SqlType::Bigint)),
        ))
        .unwrap();
        assert_eq!(
            run(&mut top, &[Some(1), Some(5), None, Some(3), Some(5)]),
            vec!["[1]", "[5, 1]", "[5, 1]", "[5, 3]", "[5, 5]"]
        );
        let mut attr = Accumulator::new(&call("ATTR", vec![col], SqlType::Bigint)).unwrap();
        assert_eq!(
            run(&mut attr, &[Some(1), Some(1), Some(2)]),
            vec!["1", "1", "NULL"]
        );
        attr.undo(&[int(Some(2))]).unwrap();
        assert_eq!(attr.value().unwrap().to_string(), "1");
    }

    #[test]
    fn count_distinct_counts_each_non_null_value_once() {
        let mut c = Accumulator::new(&call(
            "COUNT_DISTINCT",
            vec![Expr::Column("X".into())],
            SqlType::Bigint,
        ))
        .unwrap();
        for (i, v) in [Some("a"), Some("b"), Some("a"), None]
            .into_iter()
            .enumerate()
        {
            c.update(&[ScalarValue::Utf8(v.map(str::to_string))], i as u64)
                .unwrap();
        }
        assert_eq!(c.value().unwrap(), ScalarValue::Int64(Some(2)));
    }

    #[test]
    fn deviations_follow_ksqldb_and_undo() {
        let mut sample = Accumulator::new(&call(
            "STDDEV_SAMPLE",
            vec![Expr::Column("X".into())],
            SqlType::Double,
        ))
        .unwrap();
        let mut samp = Accumulator::new(&call(
            "STDDEV_SAMP",
            vec![Expr::Column("X".into())],
            SqlType::Double,
        ))
        .unwrap();
        let value = |a: &Accumulator| match a.value().unwrap() {
            ScalarValue::Float64(Some(v)) => v,
            other => panic!("{other:?}"),
        };
        for (i, x) in [10.0, 12.0, 13.0].into_iter().enumerate() {
            sample.update(&[ScalarValue::from(x)], i as u64).unwrap();
            samp.update(&[ScalarValue::from(x)], i as u64).unwrap();
        }
        // ksqlDB's STDDEV_SAMP is the sample variance; STDDEV_SAMPLE its square root.
        assert!((value(&samp) - 7.0 / 3.0).abs() < 1e-12);
        assert!((value(&sample) - (7.0f64 / 3.0).sqrt()).abs() < 1e-12);
        samp.undo(&[ScalarValue::from(13.0)]).unwrap();
        assert!((value(&samp) - 2.0).abs() < 1e-12);
        samp.undo(&[ScalarValue::from(12.0)]).unwrap();
        assert_eq!(value(&samp), 0.0);
    }

    #[test]
    fn correlation_undoes_its_pairs() {
        let mut c = Accumulator::new(&call(
            "CORRELATION",
            vec![Expr::Column("X".into()), Expr::Column("Y".into())],
            SqlType::Double,
        ))
        .unwrap();
        let pair = |x: f64, y: f64| [ScalarValue::from(x), ScalarValue::from(y)];
        c.update(&pair(1.0, 2.0), 0).unwrap();
        assert!(matches!(c.value().unwrap(), ScalarValue::Float64(Some(v)) if v.is_nan()));
        c.update(&pair(2.0, 4.0), 1).unwrap();
        c.update(&pair(3.0, 1.0), 2).unwrap();
        c.undo(&pair(3.0, 1.0)).unwrap();
        let ScalarValue::Float64(Some(r)) = c.value().unwrap() else {
            panic!("a correlation is a DOUBLE")
        };
        assert!((r - 1.0).abs() < 1e-9, "{r}");
    }

    #[test]
    fn a_decimal_sum_past_its_precision_is_an_error() {
        let mut sum = Accumulator::new(&call(
            "SUM",
            vec![Expr::Column("V".into())],
            SqlType::Decimal {
                precision: 4,
                scale: 1,
            },
        ))
        .unwrap();
        let d = |v: i128| [ScalarValue::Decimal128(Some(v), 4, 1)];
        // Whether the row fits: applying it to a copy of the sum succeeds.
        let fits = |sum: &Accumulator, v: [ScalarValue; 1], undo: bool| {
            let mut copy = sum.clone();
            if undo {
                copy.undo(&v)
            } else {
                copy.update(&v, 1)
            }
            .is_ok()
        };
        assert!(fits(&sum, d(9000), false));
        sum.update(&d(9000), 0).unwrap();
        assert!(fits(&sum, d(999), false));
        assert!(!fits(&sum, d(1000), false));
        // Undoing a negative value adds it back.
        assert!(!fits(&sum, d(-1000), true));
        assert!(fits(&sum, d(1000), true));
    }
}
