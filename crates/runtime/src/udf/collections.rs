//! ARRAY and MAP functions, generic over the element type: they pick elements of their
//! arguments (by index) rather than look at values, except to compare them. Equality is
//! Java's `equals` (NULL equals NULL, nested values compare deeply); ordering is only
//! asked of primitive elements.

use super::{
    Body, Kernel, TypedKernel, bools_of, i32s_of, list_of, opt_i32, opt_i64, opt_str, strings_of,
};
use datafusion_common::arrow::array::{
    Array, ArrayRef, AsArray, ListArray, MapArray, StructArray, UInt32Array, make_comparator,
};
use datafusion_common::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion_common::arrow::compute::kernels::concat::concat;
use datafusion_common::arrow::compute::{SortOptions, take};
use datafusion_common::arrow::datatypes::{DataType, Fields};
use datafusion_common::{Result, exec_err};
use std::cmp::Ordering;
use std::ops::Range;
use std::sync::Arc;

pub(super) const NAMES: &[&str] = &[
    "ARRAY_LENGTH",
    "ARRAY_CONTAINS",
    "ARRAYCONTAINS",
    "ARRAY_REMOVE",
    "ARRAY_DISTINCT",
    "ARRAY_EXCEPT",
    "ARRAY_INTERSECT",
    "ARRAY_UNION",
    "ARRAY_CONCAT",
    "ARRAY_JOIN",
    "ARRAY_MAX",
    "ARRAY_MIN",
    "ARRAY_SORT",
    "SLICE",
    "GENERATE_SERIES",
    "ENTRIES",
    "MAP_KEYS",
    "MAP_VALUES",
    "MAP_UNION",
    "AS_MAP",
];

fn item_type(t: &DataType) -> Option<DataType> {
    match t {
        DataType::List(f) => Some(f.data_type().clone()),
        _ => None,
    }
}

fn map_parts(t: &DataType) -> Option<(DataType, DataType)> {
    let DataType::Map(entries, _) = t else {
        return None;
    };
    let DataType::Struct(fields) = entries.data_type() else {
        return None;
    };
    Some((fields[0].data_type().clone(), fields[1].data_type().clone()))
}

pub(super) fn lookup(name: &str, args: &[DataType]) -> Option<(Body, DataType)> {
    let first = args.first()?;
    let list_of_first = |t: DataType| {
        DataType::List(Arc::new(datafusion_common::arrow::datatypes::Field::new(
            "item", t, true,
        )))
    };
    let plain: Option<(Kernel, DataType)> = match name {
        "ARRAY_LENGTH" => Some((
            |a, rows| {
                let l = a[0].as_list::<i32>();
                i32s_of(rows, |r| l.is_valid(r).then(|| l.value_length(r)))
            },
            DataType::Int32,
        )),
        "ARRAY_CONTAINS" | "ARRAYCONTAINS" => Some((contains, DataType::Boolean)),
        "ARRAY_JOIN" => Some((join, DataType::Utf8)),
        _ => None,
    };
    if let Some((k, t)) = plain {
        return Some((Body::Plain(k), t));
    }
    let (kernel, returns): (TypedKernel, DataType) = match name {
        "ARRAY_REMOVE" => (remove, first.clone()),
        "ARRAY_DISTINCT" => (
            |a, rows, t| set_op(a, rows, t, SetOp::Distinct),
            first.clone(),
        ),
        "ARRAY_EXCEPT" => (
            |a, rows, t| set_op(a, rows, t, SetOp::Except),
            first.clone(),
        ),
        "ARRAY_INTERSECT" => (
            |a, rows, t| set_op(a, rows, t, SetOp::Intersect),
            first.clone(),
        ),
        "ARRAY_UNION" => (|a, rows, t| set_op(a, rows, t, SetOp::Union), first.clone()),
        "ARRAY_CONCAT" => (
            |a, rows, t| set_op(a, rows, t, SetOp::Concat),
            first.clone(),
        ),
        "ARRAY_MAX" => (|a, rows, _| extremum(a, rows, true), item_type(first)?),
        "ARRAY_MIN" => (|a, rows, _| extremum(a, rows, false), item_type(first)?),
        "ARRAY_SORT" => (sort, first.clone()),
        "SLICE" => (slice, first.clone()),
        "GENERATE_SERIES" => (generate_series, list_of_first(first.clone())),
        "MAP_KEYS" => (map_keys, list_of_first(map_parts(first)?.0)),
        "MAP_VALUES" => (map_values, list_of_first(map_parts(first)?.1)),
        "MAP_UNION" => (map_union, first.clone()),
        "ENTRIES" => {
            let (_, v) = map_parts(first)?;
            let entry = DataType::Struct(Fields::from(vec![
                datafusion_common::arrow::datatypes::Field::new("K", DataType::Utf8, true),
                datafusion_common::arrow::datatypes::Field::new("V", v, true),
            ]));
            (entries, list_of_first(entry))
        }
        "AS_MAP" => (
            as_map,
            super::map_type(DataType::Utf8, item_type(args.get(1)?)?),
        ),
        _ => return None,
    };
    Some((Body::Typed(kernel), returns))
}

/// The element range of row `r` of a list.
fn range(l: &ListArray, r: usize) -> Range<usize> {
    let o = l.value_offsets();
    o[r] as usize..o[r + 1] as usize
}

/// Java equality of two elements of one array.
pub(super) fn equality(a: &ArrayRef) -> impl Fn(usize, usize) -> bool + '_ {
    move |i, j| same(a, i, a, j)
}

/// Java equality of two elements: NULLs are equal, nested values compare deeply.
fn same(a: &ArrayRef, i: usize, b: &ArrayRef, j: usize) -> bool {
    match (a.is_valid(i), b.is_valid(j)) {
        (false, false) => true,
        (true, true) => a.slice(i, 1).to_data() == b.slice(j, 1).to_data(),
        _ => false,
    }
}

fn contains(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let l = a[0].as_list::<i32>();
    let values = l.values();
    bools_of(rows, |r| {
        Some(l.is_valid(r) && range(l, r).any(|i| same(values, i, &a[1], r)))
    })
}

/// Each row's list length (`None`: NULL) and all picked indexes, in order.
fn flatten_picks(picks: Vec<Option<Vec<usize>>>) -> (Vec<Option<usize>>, UInt32Array) {
    let lengths = picks.iter().map(|p| p.as_ref().map(Vec::len)).collect();
    let indices = picks
        .into_iter()
        .flatten()
        .flatten()
        .map(|i| Some(i as u32))
        .collect();
    (lengths, indices)
}

/// Lists made of elements picked from `source` by index, one list per row (`None`: NULL).
pub(super) fn picked(
    source: &ArrayRef,
    picks: Vec<Option<Vec<usize>>>,
    returns: &DataType,
) -> Result<ArrayRef> {
    let (lengths, indices) = flatten_picks(picks);
    let items = take(source.as_ref(), &indices, None)?;
    let out = list_of(items, &lengths)?;
    super::retype(out, returns)
}

fn remove(a: &[ArrayRef], rows: usize, returns: &DataType) -> Result<ArrayRef> {
    let l = a[0].as_list::<i32>();
    let values = l.values();
    let picks = (0..rows)
        .map(|r| {
            l.is_valid(r).then(|| {
                range(l, r)
                    .filter(|&i| !same(values, i, &a[1], r))
                    .collect()
            })
        })
        .collect();
    picked(values, picks, returns)
}

#[derive(Clone, Copy, PartialEq)]
enum SetOp {
    Distinct,
    Except,
    Intersect,
    Union,
    Concat,
}

/// The set functions, over the elements of both arguments in one array (the second
/// list's elements after the first's).
fn set_op(a: &[ArrayRef], rows: usize, returns: &DataType, op: SetOp) -> Result<ArrayRef> {
    let left = a[0].as_list::<i32>();
    let right = a.get(1).map(|b| b.as_list::<i32>());
    let all = match right {
        Some(rl) => concat(&[left.values().as_ref(), rl.values().as_ref()])?,
        None => left.values().clone(),
    };
    let shift = left.values().len();
    let picks = (0..rows)
        .map(|r| {
            let lv = left.is_valid(r);
            let rv = right.is_some_and(|l| l.is_valid(r));
            let ls: Vec<usize> = if lv { range(left, r).collect() } else { vec![] };
            let rs: Vec<usize> = match right {
                Some(rl) if rv => range(rl, r).map(|i| i + shift).collect(),
                _ => vec![],
            };
            let in_right = |i: usize| rs.iter().any(|&j| same(&all, i, &all, j));
            let candidates: Vec<usize> = match op {
                SetOp::Distinct if lv => ls,
                SetOp::Except | SetOp::Intersect if lv && rv => ls
                    .into_iter()
                    .filter(|&i| in_right(i) == (op == SetOp::Intersect))
                    .collect(),
                SetOp::Union if lv && rv => ls.into_iter().chain(rs.iter().copied()).collect(),
                SetOp::Concat if lv || rv => return Some(ls.into_iter().chain(rs).collect()),
                _ => return None,
            };
            let mut out: Vec<usize> = Vec::with_capacity(candidates.len());
            for i in candidates {
                if !out.iter().any(|&j| same(&all, i, &all, j)) {
                    out.push(i);
                }
            }
            Some(out)
        })
        .collect();
    picked(&all, picks, returns)
}

/// ARRAY_MAX / ARRAY_MIN: the extreme non-NULL element; NULL for an empty list.
fn extremum(a: &[ArrayRef], rows: usize, max: bool) -> Result<ArrayRef> {
    let l = a[0].as_list::<i32>();
    let values = l.values();
    let cmp = make_comparator(values.as_ref(), values.as_ref(), SortOptions::default())?;
    let picks: UInt32Array = (0..rows)
        .map(|r| {
            if l.is_null(r) {
                return None;
            }
            range(l, r)
                .filter(|&i| values.is_valid(i))
                .reduce(|best, i| {
                    let o = cmp(i, best);
                    if (max && o == Ordering::Greater) || (!max && o == Ordering::Less) {
                        i
                    } else {
                        best
                    }
                })
                .map(|i| i as u32)
        })
        .collect();
    Ok(take(values.as_ref(), &picks, None)?)
}

/// ARRAY_SORT(list[, 'ASC'|'DESC']): NULL elements last either way; another direction
/// gives NULL.
fn sort(a: &[ArrayRef], rows: usize, returns: &DataType) -> Result<ArrayRef> {
    let l = a[0].as_list::<i32>();
    let values = l.values();
    let dir = a.get(1).map(|d| d.as_string::<i32>());
    let cmp = make_comparator(values.as_ref(), values.as_ref(), SortOptions::default())?;
    let picks = (0..rows)
        .map(|r| {
            let descending = match dir {
                None => false,
                Some(d) => match opt_str(d, r)?.to_ascii_uppercase().as_str() {
                    "ASC" => false,
                    "DESC" => true,
                    _ => return None,
                },
            };
            if l.is_null(r) {
                return None;
            }
            let mut idx: Vec<usize> = range(l, r).collect();
            idx.sort_by(|&x, &y| match (values.is_valid(x), values.is_valid(y)) {
                (false, false) => Ordering::Equal,
                (false, true) => Ordering::Greater,
                (true, false) => Ordering::Less,
                (true, true) if descending => cmp(y, x),
                (true, true) => cmp(x, y),
            });
            Some(idx)
        })
        .collect();
    picked(values, picks, returns)
}

/// SLICE(list, from, to): 1-based and inclusive; NULL bounds are the list's ends; bounds
/// outside the list give NULL.
fn slice(a: &[ArrayRef], rows: usize, returns: &DataType) -> Result<ArrayRef> {
    let l = a[0].as_list::<i32>();
    let picks = (0..rows)
        .map(|r| {
            if l.is_null(r) {
                return None;
            }
            let range = range(l, r);
            let len = range.len() as i64;
            let from = opt_i32(&a[1], r).map_or(0, |f| f as i64 - 1);
            let to = opt_i32(&a[2], r).map_or(len, |t| t as i64);
            if from < 0 || from > to || to > len {
                return None;
            }
            Some((range.start + from as usize..range.start + to as usize).collect())
        })
        .collect();
    picked(l.values(), picks, returns)
}

/// GENERATE_SERIES(start, end[, step]): start, start + step, ... up to end inclusive; the
/// step is 1, or -1 when end is below start. A step of 0 or one that walks away from
/// the end fails the row (NULL); a NULL argument gives NULL.
fn generate_series(a: &[ArrayRef], rows: usize, returns: &DataType) -> Result<ArrayRef> {
    let item = match returns {
        DataType::List(f) => f.data_type().clone(),
        other => return exec_err!("GENERATE_SERIES returns {other}"),
    };
    let wide: Vec<ArrayRef> = a
        .iter()
        .map(|x| datafusion_common::arrow::compute::cast(x, &DataType::Int64))
        .collect::<std::result::Result<_, _>>()?;
    let mut values: Vec<i64> = Vec::new();
    let mut offsets = vec![0i32];
    let mut valid = Vec::with_capacity(rows);
    for r in 0..rows {
        let (start, end) = (opt_i64(&wide[0], r), opt_i64(&wide[1], r));
        let step = match wide.get(2) {
            Some(s) => opt_i64(s, r),
            None => start.zip(end).map(|(s, e)| if e < s { -1 } else { 1 }),
        };
        let series = match (start, end, step) {
            (Some(s), Some(e), Some(st)) if st != 0 && (e - s).signum() * st.signum() >= 0 => {
                let mut v = s;
                while (st > 0 && v <= e) || (st < 0 && v >= e) {
                    values.push(v);
                    v = match v.checked_add(st) {
                        Some(next) => next,
                        None => break,
                    };
                }
                true
            }
            _ => false,
        };
        valid.push(series);
        offsets.push(values.len() as i32);
    }
    let flat = datafusion_common::arrow::compute::cast(
        &(Arc::new(datafusion_common::arrow::array::Int64Array::from(values)) as ArrayRef),
        &item,
    )?;
    let field = match returns {
        DataType::List(f) => f.clone(),
        _ => unreachable!("checked above"),
    };
    Ok(Arc::new(ListArray::try_new(
        field,
        datafusion_common::arrow::buffer::OffsetBuffer::new(offsets.into()),
        flat,
        Some(valid.into()),
    )?))
}

fn map_keys(a: &[ArrayRef], rows: usize, returns: &DataType) -> Result<ArrayRef> {
    let m = a[0].as_map();
    let keys: ArrayRef = m.keys().clone();
    let picks = (0..rows)
        .map(|r| m.is_valid(r).then(|| map_range(m, r).collect()))
        .collect();
    picked(&keys, picks, returns)
}

fn map_values(a: &[ArrayRef], rows: usize, returns: &DataType) -> Result<ArrayRef> {
    let m = a[0].as_map();
    let values: ArrayRef = m.values().clone();
    let picks = (0..rows)
        .map(|r| m.is_valid(r).then(|| map_range(m, r).collect()))
        .collect();
    picked(&values, picks, returns)
}

fn map_range(m: &MapArray, r: usize) -> Range<usize> {
    let o = m.value_offsets();
    o[r] as usize..o[r + 1] as usize
}

/// A map per row made of entries picked from `keys` / `values` by index.
pub(super) fn picked_map(
    keys: &ArrayRef,
    values: &ArrayRef,
    picks: Vec<Option<Vec<usize>>>,
    returns: &DataType,
) -> Result<ArrayRef> {
    let DataType::Map(entries_field, sorted) = returns else {
        return exec_err!("a map function must return a MAP");
    };
    let DataType::Struct(fields) = entries_field.data_type() else {
        return exec_err!("map entries must be a struct");
    };
    let lengths = picks.iter().map(|p| p.as_ref().map_or(0, Vec::len));
    let offsets = OffsetBuffer::from_lengths(lengths);
    let nulls = NullBuffer::from_iter(picks.iter().map(Option::is_some));
    let indices: UInt32Array = picks
        .into_iter()
        .flatten()
        .flatten()
        .map(|i| Some(i as u32))
        .collect();
    let k = take(keys.as_ref(), &indices, None)?;
    let v = take(values.as_ref(), &indices, None)?;
    let entries = StructArray::try_new(fields.clone(), vec![k, v], None)?;
    Ok(Arc::new(MapArray::try_new(
        entries_field.clone(),
        offsets,
        entries,
        Some(nulls),
        *sorted,
    )?))
}

/// MAP_UNION(a, b): a's entries, with b's values for shared keys, then b's other
/// entries; a NULL map counts as empty unless both are NULL.
fn map_union(a: &[ArrayRef], rows: usize, returns: &DataType) -> Result<ArrayRef> {
    let (m1, m2) = (a[0].as_map(), a[1].as_map());
    let keys = concat(&[m1.keys().as_ref(), m2.keys().as_ref()])?;
    let values = concat(&[m1.values().as_ref(), m2.values().as_ref()])?;
    let shift = m1.keys().len();
    let picks = (0..rows)
        .map(|r| {
            if m1.is_null(r) && m2.is_null(r) {
                return None;
            }
            let mut out: Vec<usize> = Vec::new();
            let first = if m1.is_valid(r) {
                map_range(m1, r)
            } else {
                0..0
            };
            let second = if m2.is_valid(r) {
                map_range(m2, r)
            } else {
                0..0
            };
            for i in first.chain(second.map(|i| i + shift)) {
                match out.iter_mut().find(|j| same(&keys, **j, &keys, i)) {
                    Some(slot) => *slot = i,
                    None => out.push(i),
                }
            }
            Some(out)
        })
        .collect();
    picked_map(&keys, &values, picks, returns)
}

/// AS_MAP(keys, values): pairs by position up to the shorter list; NULL keys skipped.
fn as_map(a: &[ArrayRef], rows: usize, returns: &DataType) -> Result<ArrayRef> {
    let (kl, vl) = (a[0].as_list::<i32>(), a[1].as_list::<i32>());
    let (keys, values) = (kl.values(), vl.values());
    // Entries index the keys; values are aligned to them below.
    let mut key_idx: Vec<Option<Vec<usize>>> = Vec::with_capacity(rows);
    let mut value_idx: Vec<u32> = Vec::new();
    for r in 0..rows {
        if kl.is_null(r) || vl.is_null(r) {
            key_idx.push(None);
            continue;
        }
        let mut row: Vec<(usize, usize)> = Vec::new();
        for (k, v) in range(kl, r).zip(range(vl, r)) {
            if keys.is_null(k) {
                continue;
            }
            match row.iter_mut().find(|(j, _)| same(keys, *j, keys, k)) {
                Some(slot) => slot.1 = v,
                None => row.push((k, v)),
            }
        }
        value_idx.extend(row.iter().map(|(_, v)| *v as u32));
        key_idx.push(Some(row.into_iter().map(|(k, _)| k).collect()));
    }
    // Values in entry order, so entry i's value is at i.
    let aligned = take(values.as_ref(), &UInt32Array::from(value_idx), None)?;
    let mut n = 0;
    let value_picks: Vec<Option<Vec<usize>>> = key_idx
        .iter()
        .map(|p| {
            p.as_ref().map(|p| {
                let v: Vec<usize> = (n..n + p.len()).collect();
                n += p.len();
                v
            })
        })
        .collect();
    let flat_keys: UInt32Array = key_idx
        .iter()
        .flatten()
        .flatten()
        .map(|&k| Some(k as u32))
        .collect();
    let keys = take(keys.as_ref(), &flat_keys, None)?;
    picked_map(&keys, &aligned, value_picks, returns)
}

/// ENTRIES(map, sorted): STRUCT<K, V> per entry, sorted by key when asked.
fn entries(a: &[ArrayRef], rows: usize, returns: &DataType) -> Result<ArrayRef> {
    let m = a[0].as_map();
    let sorted = a[1].as_boolean();
    let keys: ArrayRef = m.keys().clone();
    let cmp = make_comparator(keys.as_ref(), keys.as_ref(), SortOptions::default())?;
    let picks: Vec<Option<Vec<usize>>> = (0..rows)
        .map(|r| {
            if m.is_null(r) {
                return None;
            }
            let mut idx: Vec<usize> = map_range(m, r).collect();
            if sorted.is_valid(r) && sorted.value(r) {
                idx.sort_by(|&x, &y| cmp(x, y));
            }
            Some(idx)
        })
        .collect();
    let DataType::List(item) = returns else {
        return exec_err!("ENTRIES returns a list");
    };
    let DataType::Struct(fields) = item.data_type() else {
        return exec_err!("ENTRIES returns a list of structs");
    };
    let (lengths, indices) = flatten_picks(picks);
    let k = take(keys.as_ref(), &indices, None)?;
    let v = take(m.values().as_ref(), &indices, None)?;
    let items = StructArray::try_new(fields.clone(), vec![k, v], None)?;
    let out = list_of(Arc::new(items), &lengths)?;
    super::retype(out, returns)
}

/// ARRAY_JOIN(list[, delimiter]): elements as Java prints them, NULL as "null".
fn join(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let l = a[0].as_list::<i32>();
    let values = l.values();
    let delim = a.get(1).map(|d| d.as_string::<i32>());
    let text: Vec<Option<String>> = (0..values.len())
        .map(|i| super::json::java_text(values, i))
        .collect::<Result<_>>()?;
    strings_of(rows, |r| {
        if l.is_null(r) {
            return None;
        }
        let d = match delim {
            Some(d) => opt_str(d, r).unwrap_or(""),
            None => ",",
        };
        let parts: Vec<&str> = range(l, r)
            .map(|i| text[i].as_deref().unwrap_or("null"))
            .collect();
        Some(parts.join(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udf::test_support::{int_lists, rows_of};
    use datafusion_common::arrow::array::{Int32Array, StringArray};
    use datafusion_common::arrow::datatypes::Int32Type;

    #[test]
    fn generate_series_counts_up_down_and_by_steps() {
        let ints = |v: Vec<Option<i32>>| -> ArrayRef { Arc::new(Int32Array::from(v)) };
        let list = DataType::List(Arc::new(datafusion_common::arrow::datatypes::Field::new(
            "item",
            DataType::Int32,
            true,
        )));
        let two = generate_series(
            &[
                ints(vec![Some(0), Some(4), None]),
                ints(vec![Some(3), Some(2), Some(1)]),
            ],
            3,
            &list,
        )
        .unwrap();
        assert_eq!(
            rows_of(&two),
            [
                Some(vec![Some(0), Some(1), Some(2), Some(3)]),
                Some(vec![Some(4), Some(3), Some(2)]),
                None
            ]
        );
        let stepped = generate_series(
            &[
                ints(vec![Some(0), Some(0), Some(0)]),
                ints(vec![Some(7), Some(7), Some(7)]),
                ints(vec![Some(3), Some(-1), Some(0)]),
            ],
            3,
            &list,
        )
        .unwrap();
        assert_eq!(
            rows_of(&stepped),
            [Some(vec![Some(0), Some(3), Some(6)]), None, None]
        );
    }

    #[test]
    fn set_functions_keep_first_appearances() {
        let a = int_lists(vec![
            Some(vec![Some(1), Some(2), Some(1), None, None]),
            Some(vec![Some(1)]),
            None,
        ]);
        let b = int_lists(vec![
            Some(vec![Some(2), Some(3)]),
            None,
            Some(vec![Some(4)]),
        ]);
        let t = a.data_type().clone();
        let run = |op| rows_of(&set_op(&[a.clone(), b.clone()], 3, &t, op).unwrap());
        assert_eq!(
            run(SetOp::Distinct),
            vec![
                Some(vec![Some(1), Some(2), None]),
                Some(vec![Some(1)]),
                None
            ]
        );
        assert_eq!(
            run(SetOp::Except),
            vec![Some(vec![Some(1), None]), None, None]
        );
        assert_eq!(run(SetOp::Intersect), vec![Some(vec![Some(2)]), None, None]);
        assert_eq!(
            run(SetOp::Union),
            vec![Some(vec![Some(1), Some(2), None, Some(3)]), None, None]
        );
        assert_eq!(
            run(SetOp::Concat),
            vec![
                Some(vec![
                    Some(1),
                    Some(2),
                    Some(1),
                    None,
                    None,
                    Some(2),
                    Some(3)
                ]),
                Some(vec![Some(1)]),
                Some(vec![Some(4)])
            ]
        );
    }

    #[test]
    fn sort_puts_nulls_last_and_extremes_skip_them() {
        let a = int_lists(vec![
            Some(vec![Some(3), None, Some(-1), Some(2)]),
            Some(vec![]),
        ]);
        let t = a.data_type().clone();
        let desc: ArrayRef = Arc::new(StringArray::from(vec!["desc", "desc"]));
        assert_eq!(
            rows_of(&sort(std::slice::from_ref(&a), 2, &t).unwrap()),
            vec![Some(vec![Some(-1), Some(2), Some(3), None]), Some(vec![])]
        );
        assert_eq!(
            rows_of(&sort(&[a.clone(), desc], 2, &t).unwrap()),
            vec![Some(vec![Some(3), Some(2), Some(-1), None]), Some(vec![])]
        );
        let max = extremum(std::slice::from_ref(&a), 2, true).unwrap();
        let min = extremum(&[a], 2, false).unwrap();
        let (max, min) = (
            max.as_primitive::<Int32Type>(),
            min.as_primitive::<Int32Type>(),
        );
        assert_eq!((max.value(0), max.is_null(1)), (3, true));
        assert_eq!(min.value(0), -1);
    }

    #[test]
    fn remove_contains_and_slice() {
        let a = int_lists(vec![Some(vec![Some(1), None, Some(1), Some(2)]), None]);
        let t = a.data_type().clone();
        let one: ArrayRef = Arc::new(Int32Array::from(vec![Some(1), Some(1)]));
        assert_eq!(
            rows_of(&remove(&[a.clone(), one.clone()], 2, &t).unwrap()),
            vec![Some(vec![None, Some(2)]), None]
        );
        let c = contains(&[a.clone(), one], 2).unwrap();
        let c = c.as_boolean();
        assert!(c.value(0) && !c.value(1));
        let from: ArrayRef = Arc::new(Int32Array::from(vec![Some(2), Some(1)]));
        let to: ArrayRef = Arc::new(Int32Array::from(vec![Some(3), None]));
        assert_eq!(
            rows_of(&slice(&[a, from, to], 2, &t).unwrap()),
            vec![Some(vec![None, Some(1)]), None]
        );
    }

    #[test]
    fn join_prints_elements_like_java() {
        let a = int_lists(vec![Some(vec![Some(1), None, Some(-3)])]);
        let out = join(std::slice::from_ref(&a), 1).unwrap();
        assert_eq!(out.as_string::<i32>().value(0), "1,null,-3");
        let d: ArrayRef = Arc::new(StringArray::from(vec!["|"]));
        let out = join(&[a, d], 1).unwrap();
        assert_eq!(out.as_string::<i32>().value(0), "1|null|-3");
    }
}
