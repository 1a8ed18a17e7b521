//! Kernels over ARRAY, MAP and STRUCT values: subscripts, field access, constructors and
//! casts between nested types, with ksqlDB's semantics (arrays index from 1, negative
//! indexes count from the end, a missing element or key is NULL).

use datafusion_common::arrow::array::{
    Array, ArrayRef, AsArray, GenericListArray, ListArray, MapArray, StringArray, StructArray,
    UInt32Array, make_comparator, new_null_array,
};
use datafusion_common::arrow::buffer::OffsetBuffer;
use datafusion_common::arrow::compute::{SortOptions, cast, interleave, take};
use datafusion_common::arrow::datatypes::{DataType, Fields, Int32Type};
use datafusion_common::{Result, exec_err};
use std::sync::Arc;

/// `list[index]`: args are the lists and INTEGER indexes.
pub fn list_element(args: &[ArrayRef], _: usize, _: &DataType) -> Result<ArrayRef> {
    let lists = args[0].as_list::<i32>();
    let index = args[1].as_primitive::<Int32Type>();
    let offsets = lists.value_offsets();
    let picks: UInt32Array = (0..lists.len())
        .map(|row| {
            if lists.is_null(row) || index.is_null(row) {
                return None;
            }
            let (start, end) = (offsets[row] as i64, offsets[row + 1] as i64);
            let i = index.value(row) as i64;
            let at = if i > 0 { start + i - 1 } else { end + i };
            (i != 0 && at >= start && at < end).then_some(at as u32)
        })
        .collect();
    Ok(take(lists.values().as_ref(), &picks, None)?)
}

/// `map[key]`: args are the maps and the keys.
pub fn map_value(args: &[ArrayRef], _: usize, _: &DataType) -> Result<ArrayRef> {
    let maps = args[0].as_map();
    let keys = &args[1];
    let offsets = maps.value_offsets();
    let compare = make_comparator(maps.keys().as_ref(), keys.as_ref(), SortOptions::default())?;
    let picks: UInt32Array = (0..maps.len())
        .map(|row| {
            if maps.is_null(row) || keys.is_null(row) {
                return None;
            }
            // The last entry wins, as a JSON object with a repeated key reads.
            (offsets[row] as usize..offsets[row + 1] as usize)
                .rev()
                .find(|&e| compare(e, row).is_eq())
                .map(|e| e as u32)
        })
        .collect();
    Ok(take(maps.values().as_ref(), &picks, None)?)
}

/// `struct->field`: args are the structs and the field's index (a constant).
pub fn struct_field(args: &[ArrayRef], _: usize, _: &DataType) -> Result<ArrayRef> {
    let structs = args[0].as_struct();
    let index = args[1].as_primitive::<Int32Type>();
    if index.is_empty() {
        return Ok(new_null_array(&DataType::Null, 0));
    }
    let field = structs.column(index.value(0) as usize);
    with_parent_nulls(field, structs.nulls())
}

/// A child column with its parent's NULLs added: the field of a NULL struct is NULL.
fn with_parent_nulls(
    child: &ArrayRef,
    parent: Option<&datafusion_common::arrow::buffer::NullBuffer>,
) -> Result<ArrayRef> {
    let Some(parent) = parent else {
        return Ok(child.clone());
    };
    let nulls = datafusion_common::arrow::buffer::NullBuffer::union(child.nulls(), Some(parent));
    let data = child.to_data().into_builder().nulls(nulls).build()?;
    Ok(datafusion_common::arrow::array::make_array(data))
}

/// `ARRAY[a, b, ...]`: every row gets one element from each argument.
pub fn make_array(args: &[ArrayRef], rows: usize, returns: &DataType) -> Result<ArrayRef> {
    let DataType::List(field) = returns else {
        return exec_err!("ARRAY constructor must return a list, not {returns}");
    };
    let values = interleave_rows(args, rows)?;
    let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(args.len(), rows));
    Ok(Arc::new(ListArray::new(
        field.clone(),
        offsets,
        values,
        None,
    )))
}

/// `MAP(k1 := v1, ...)`: args alternate keys and values. A NULL key is written as the
/// string "null", as ksqlDB's JSON serializer writes a map's null key.
pub fn make_map(args: &[ArrayRef], rows: usize, returns: &DataType) -> Result<ArrayRef> {
    let DataType::Map(entries, sorted) = returns else {
        return exec_err!("MAP constructor must return a map, not {returns}");
    };
    let DataType::Struct(fields) = entries.data_type() else {
        return exec_err!("map entries must be a struct");
    };
    let keys: Vec<ArrayRef> = args
        .iter()
        .step_by(2)
        .map(|k| match k.data_type() {
            DataType::Utf8 => Arc::new(
                k.as_string::<i32>()
                    .iter()
                    .map(|v| Some(v.unwrap_or("null")))
                    .collect::<StringArray>(),
            ),
            _ => k.clone(),
        })
        .collect();
    let values: Vec<ArrayRef> = args.iter().skip(1).step_by(2).cloned().collect();
    let entry_array = StructArray::new(
        fields.clone(),
        vec![
            interleave_rows(&keys, rows)?,
            interleave_rows(&values, rows)?,
        ],
        None,
    );
    let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(keys.len(), rows));
    Ok(Arc::new(MapArray::new(
        entries.clone(),
        offsets,
        entry_array,
        None,
        *sorted,
    )))
}

/// `STRUCT(f := v, ...)`: one argument per field.
pub fn make_struct(args: &[ArrayRef], rows: usize, returns: &DataType) -> Result<ArrayRef> {
    let DataType::Struct(fields) = returns else {
        return exec_err!("STRUCT constructor must return a struct, not {returns}");
    };
    if fields.is_empty() {
        return Ok(Arc::new(StructArray::new_empty_fields(rows, None)));
    }
    Ok(Arc::new(StructArray::new(
        fields.clone(),
        args.to_vec(),
        None,
    )))
}

/// The rows' values, row by row: row 0 of every array, then row 1, ...
fn interleave_rows(arrays: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
    let indices: Vec<(usize, usize)> = (0..rows)
        .flat_map(|row| (0..arrays.len()).map(move |a| (a, row)))
        .collect();
    Ok(interleave(&refs, &indices)?)
}

/// Casts between nested types: STRUCT fields by name (a field the source lacks is
/// NULL), ARRAY and MAP elements one by one.
/// A value as Java's `toString` writes it, as ksqlDB's CAST to STRING does: lists as
/// `[1, 3]`, maps as `{k=1}`, structs as `Struct{F0=1,f1=3}`.
fn java_text(a: &ArrayRef, row: usize) -> String {
    if a.is_null(row) {
        return "null".into();
    }
    match a.data_type() {
        DataType::List(_) => {
            let l = a.as_list::<i32>();
            let items = l.value(row);
            let parts: Vec<String> = (0..items.len()).map(|i| java_text(&items, i)).collect();
            format!("[{}]", parts.join(", "))
        }
        DataType::Map(..) => {
            let m = a.as_map();
            let (start, end) = (
                m.value_offsets()[row] as usize,
                m.value_offsets()[row + 1] as usize,
            );
            let parts: Vec<String> = (start..end)
                .map(|i| format!("{}={}", java_text(m.keys(), i), java_text(m.values(), i)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        DataType::Struct(fields) => {
            let s = a.as_struct();
            let parts: Vec<String> = fields
                .iter()
                .zip(s.columns())
                .map(|(f, c)| format!("{}={}", f.name(), java_text(c, row)))
                .collect();
            format!("Struct{{{}}}", parts.join(","))
        }
        _ => crate::codec::encode::text_value(a, row),
    }
}

pub fn cast_nested(args: &[ArrayRef], _: usize, returns: &DataType) -> Result<ArrayRef> {
    cast_to(&args[0], returns)
}

fn cast_to(array: &ArrayRef, to: &DataType) -> Result<ArrayRef> {
    if array.data_type() == to {
        return Ok(array.clone());
    }
    Ok(match (array.data_type(), to) {
        // A list, map or struct as text: as Java's toString writes them.
        (from, DataType::Utf8) if from.is_nested() => {
            let texts: Vec<Option<String>> = (0..array.len())
                .map(|r| (!array.is_null(r)).then(|| java_text(array, r)))
                .collect();
            Arc::new(datafusion_common::arrow::array::StringArray::from(texts))
        }
        (DataType::Struct(_), DataType::Struct(to_fields)) => {
            let s = array.as_struct();
            Arc::new(StructArray::new(
                to_fields.clone(),
                struct_columns(s, to_fields)?,
                s.nulls().cloned(),
            ))
        }
        (DataType::List(_), DataType::List(item)) => {
            let l: &GenericListArray<i32> = array.as_list();
            Arc::new(ListArray::new(
                item.clone(),
                l.offsets().clone(),
                cast_to(l.values(), item.data_type())?,
                l.nulls().cloned(),
            ))
        }
        (DataType::Map(..), DataType::Map(entries, sorted)) => {
            let m = array.as_map();
            let DataType::Struct(fields) = entries.data_type() else {
                return exec_err!("map entries must be a struct");
            };
            let entry_array =
                StructArray::new(fields.clone(), struct_columns(m.entries(), fields)?, None);
            Arc::new(MapArray::new(
                entries.clone(),
                m.offsets().clone(),
                entry_array,
                m.nulls().cloned(),
                *sorted,
            ))
        }
        (DataType::Null, _) => new_null_array(to, array.len()),
        // Java narrows a long to an int by keeping the low 32 bits.
        (DataType::Int64, DataType::Int32) => Arc::new(
            array
                .as_primitive::<datafusion_common::arrow::datatypes::Int64Type>()
                .unary::<_, Int32Type>(|v| v as i32),
        ),
        _ => cast(array, to)?,
    })
}

fn struct_columns(s: &StructArray, to: &Fields) -> Result<Vec<ArrayRef>> {
    to.iter()
        .map(|f| match s.column_by_name(f.name()) {
            Some(c) => cast_to(c, f.data_type()),
            None => Ok(new_null_array(f.data_type(), s.len())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion_common::arrow::array::{Int32Array, Int64Array};
    use datafusion_common::arrow::datatypes::{Field, Int64Type};

    fn ints(a: &ArrayRef) -> Vec<Option<i64>> {
        a.as_primitive::<Int64Type>().iter().collect()
    }

    #[test]
    fn lists_cast_to_text_as_java_writes_them_and_longs_narrow_like_java() {
        let item = Arc::new(Field::new("item", DataType::Int64, true));
        let values: ArrayRef = Arc::new(Int64Array::from(vec![1, 3, 2_147_483_648]));
        let lists: ArrayRef = Arc::new(ListArray::new(
            item,
            OffsetBuffer::from_lengths([3, 0]),
            values,
            Some(vec![true, false].into()),
        ));
        let text = cast_nested(std::slice::from_ref(&lists), 2, &DataType::Utf8).unwrap();
        let text = text.as_string::<i32>();
        assert_eq!(text.value(0), "[1, 3, 2147483648]");
        assert!(text.is_null(1));
        let narrowed = cast_nested(
            &[lists],
            2,
            &DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
        )
        .unwrap();
        let first = narrowed.as_list::<i32>().value(0);
        let first: Vec<Option<i32>> = first.as_primitive::<Int32Type>().iter().collect();
        assert_eq!(first, vec![Some(1), Some(3), Some(i32::MIN)]);
    }

    #[test]
    fn list_elements_index_from_one_and_from_the_end() {
        let item = Arc::new(Field::new("item", DataType::Int64, true));
        let values: ArrayRef = Arc::new(Int64Array::from(vec![10, 20, 30, 40]));
        // Rows: [10, 20, 30], NULL, [40]
        let lists: ArrayRef = Arc::new(ListArray::new(
            item.clone(),
            OffsetBuffer::from_lengths([3, 0, 1]),
            values,
            Some(vec![true, false, true].into()),
        ));
        let at = |i: Vec<i32>| {
            let index: ArrayRef = Arc::new(Int32Array::from(i));
            ints(&list_element(&[lists.clone(), index], 3, &DataType::Int64).unwrap())
        };
        assert_eq!(at(vec![1, 1, 1]), vec![Some(10), None, Some(40)]);
        assert_eq!(at(vec![-1, -1, -1]), vec![Some(30), None, Some(40)]);
        assert_eq!(at(vec![0, 1, 2]), vec![None, None, None]);
        assert_eq!(at(vec![4, 1, -2]), vec![None, None, None]);
    }

    #[test]
    fn constructors_build_one_value_per_row_and_fields_read_back() {
        let a: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None]));
        let b: ArrayRef = Arc::new(Int64Array::from(vec![Some(2), Some(3)]));
        let list_type = DataType::List(Arc::new(Field::new("item", DataType::Int64, true)));
        let list = make_array(&[a.clone(), b.clone()], 2, &list_type).unwrap();
        let second: ArrayRef = Arc::new(Int32Array::from(vec![2, 2]));
        assert_eq!(
            ints(&list_element(&[list, second], 2, &DataType::Int64).unwrap()),
            vec![Some(2), Some(3)]
        );

        let fields = Fields::from(vec![
            Field::new("A", DataType::Int64, true),
            Field::new("B", DataType::Int64, true),
        ]);
        let st = make_struct(&[a, b], 2, &DataType::Struct(fields.clone())).unwrap();
        let b_index: ArrayRef = Arc::new(Int32Array::from(vec![1, 1]));
        assert_eq!(
            ints(&struct_field(&[st.clone(), b_index], 2, &DataType::Int64).unwrap()),
            vec![Some(2), Some(3)]
        );
        // A cast to a struct with more fields: the new field is NULL.
        let wider = DataType::Struct(Fields::from(vec![
            Field::new("B", DataType::Int64, true),
            Field::new("C", DataType::Utf8, true),
        ]));
        let cast = cast_nested(&[st], 2, &wider).unwrap();
        let cast = cast.as_struct();
        assert_eq!(ints(cast.column(0)), vec![Some(2), Some(3)]);
        assert_eq!(cast.column(1).null_count(), 2);
    }

    #[test]
    fn map_values_by_key_and_null_keys_read_as_text() {
        let keys: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), None]));
        let values: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        let entries = Arc::new(Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("key", DataType::Utf8, false),
                Field::new("value", DataType::Int64, true),
            ])),
            false,
        ));
        let map_type = DataType::Map(entries, false);
        let map = make_map(&[keys, values], 2, &map_type).unwrap();
        let lookup = |k: &str| {
            let key: ArrayRef = Arc::new(StringArray::from(vec![k, k]));
            ints(&map_value(&[map.clone(), key], 2, &DataType::Int64).unwrap())
        };
        // One entry per row: {a: 1}, then {"null": 2}.
        assert_eq!(lookup("a"), vec![Some(1), None]);
        assert_eq!(lookup("null"), vec![None, Some(2)]);
        assert_eq!(lookup("b"), vec![None, None]);
    }
}
