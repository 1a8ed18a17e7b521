//! ksqlDB's scalar functions as DataFusion UDFs, with ksqlDB's NULL semantics.
//!
//! Names match the signatures in `sluice_sql::functions`; arguments arrive already cast
//! to the parameter types the analyzer chose.

mod collections;
mod dates;
mod json;
mod lambda;
mod math;
mod strings;
mod url;

pub(crate) use dates::parse_with_pattern;

/// Helpers the function families' tests share.
#[cfg(test)]
mod test_support {
    use datafusion_common::arrow::array::{ArrayRef, AsArray, StringArray};
    use std::sync::Arc;

    pub fn strings(v: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(v.to_vec()))
    }

    pub fn texts(a: &ArrayRef) -> Vec<Option<String>> {
        a.as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect()
    }

    pub fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    pub fn int_lists(v: Vec<Option<Vec<Option<i32>>>>) -> ArrayRef {
        use datafusion_common::arrow::array::ListArray;
        use datafusion_common::arrow::datatypes::Int32Type;
        Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(v))
    }

    pub fn rows_of(a: &ArrayRef) -> Vec<Option<Vec<Option<i32>>>> {
        use datafusion_common::arrow::array::Array;
        use datafusion_common::arrow::datatypes::Int32Type;
        let l = a.as_list::<i32>();
        (0..l.len())
            .map(|r| {
                l.is_valid(r)
                    .then(|| l.value(r).as_primitive::<Int32Type>().iter().collect())
            })
            .collect()
    }
}

use datafusion_common::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float64Array, Int32Array, Int64Array,
    ListArray, StringArray, make_array,
};
use datafusion_common::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion_common::arrow::datatypes::{DataType, Field, Float64Type, Int32Type, Int64Type};
use datafusion_common::{Result, exec_err};
use datafusion_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use std::sync::Arc;

type Kernel = fn(&[ArrayRef], usize) -> Result<ArrayRef>;

/// A kernel that also needs its result type (nested values it builds or casts to).
pub type TypedKernel = fn(&[ArrayRef], usize, &DataType) -> Result<ArrayRef>;

#[derive(Debug)]
enum Body {
    Plain(Kernel),
    Typed(TypedKernel),
}

/// A function given by a kernel over whole argument arrays.
#[derive(Debug)]
struct KernelUdf {
    name: &'static str,
    signature: Signature,
    returns: DataType,
    kernel: Body,
}

// A function is identified by its name and signature; the kernel follows from them.
impl PartialEq for KernelUdf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.signature == other.signature
    }
}

impl Eq for KernelUdf {}

impl std::hash::Hash for KernelUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.signature.hash(state);
    }
}

impl ScalarUDFImpl for KernelUdf {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        // Every argument as a column of the batch's length: literals too, even when all
        // the arguments are literals (`values_to_arrays` makes those one row long).
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(args.number_rows))
            .collect::<Result<Vec<_>>>()?;
        let out = match self.kernel {
            Body::Plain(k) => k(&arrays, args.number_rows),
            Body::Typed(k) => k(&arrays, args.number_rows, &self.returns),
        }?;
        Ok(ColumnarValue::Array(retype(out, &self.returns)?))
    }
}

/// A runtime-internal function (no SQL name): a typed kernel over arguments of the given
/// types, producing `returns`.
pub fn internal(
    name: &'static str,
    arg_types: Vec<DataType>,
    returns: DataType,
    kernel: TypedKernel,
) -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(KernelUdf {
        name,
        signature: Signature::exact(arg_types, Volatility::Immutable),
        returns,
        kernel: Body::Typed(kernel),
    }))
}

/// The implementation of a function for the given (already cast) argument types.
pub fn lookup(name: &str, arg_types: &[DataType]) -> Option<Arc<ScalarUDF>> {
    let (kernel, returns) = core(name, arg_types)
        .or_else(|| strings::lookup(name, arg_types))
        .or_else(|| math::lookup(name, arg_types))
        .or_else(|| dates::lookup(name, arg_types))
        .or_else(|| collections::lookup(name, arg_types))
        .or_else(|| json::lookup(name, arg_types))
        .or_else(|| url::lookup(name, arg_types))
        .or_else(|| lambda::lookup(name, arg_types))?;
    let name: &'static str = sluice_names().into_iter().find(|n| *n == name)?;
    let volatility = if matches!(name, "RANDOM" | "UUID" | "UNIX_TIMESTAMP" | "UNIX_DATE") {
        Volatility::Volatile
    } else {
        Volatility::Immutable
    };
    Some(Arc::new(ScalarUDF::new_from_impl(KernelUdf {
        name,
        signature: Signature::exact(arg_types.to_vec(), volatility),
        returns,
        kernel,
    })))
}

/// The functions kept here: AS_VALUE, numbers and the DOUBLE functions.
fn core(name: &str, arg_types: &[DataType]) -> Option<(Body, DataType)> {
    // AS_VALUE copies its argument (a key column) into the value.
    if let ("AS_VALUE", [t]) = (name, arg_types) {
        return Some((Body::Plain(|a, _| Ok(a[0].clone())), t.clone()));
    }
    let (kernel, returns): (Kernel, DataType) = match (name, arg_types) {
        ("ABS", [DataType::Int32]) => (
            |a, _| {
                Ok(Arc::new(
                    a[0].as_primitive::<Int32Type>()
                        .unary::<_, Int32Type>(|v| v.wrapping_abs()),
                ) as ArrayRef)
            },
            DataType::Int32,
        ),
        ("ABS", [DataType::Int64]) => (
            |a, _| {
                Ok(Arc::new(
                    a[0].as_primitive::<Int64Type>()
                        .unary::<_, Int64Type>(|v| v.wrapping_abs()),
                ) as ArrayRef)
            },
            DataType::Int64,
        ),
        ("ABS", [DataType::Float64]) => (
            |a, _| {
                Ok(Arc::new(
                    a[0].as_primitive::<Float64Type>()
                        .unary::<_, Float64Type>(f64::abs),
                ) as ArrayRef)
            },
            DataType::Float64,
        ),
        ("ROUND", [DataType::Int32] | [DataType::Int64]) => {
            (|a, _| Ok(a[0].clone()), arg_types[0].clone())
        }
        ("ROUND", [DataType::Float64]) => (round_to_long, DataType::Int64),
        ("ROUND", [DataType::Float64, DataType::Int32]) => (round_to_scale, DataType::Float64),
        ("ATAN2", _) => (|a, _| f64_binary(a, f64::atan2), DataType::Float64),
        ("POWER", _) => (|a, _| f64_binary(a, f64::powf), DataType::Float64),
        ("PI", _) => (
            |_, rows| {
                Ok(Arc::new(Float64Array::from(vec![std::f64::consts::PI; rows])) as ArrayRef)
            },
            DataType::Float64,
        ),
        ("SIN", _) => (|a, _| f64_unary(a, f64::sin), DataType::Float64),
        ("COS", _) => (|a, _| f64_unary(a, f64::cos), DataType::Float64),
        ("TAN", _) => (|a, _| f64_unary(a, f64::tan), DataType::Float64),
        ("COT", _) => (|a, _| f64_unary(a, |x| 1.0 / x.tan()), DataType::Float64),
        ("ASIN", _) => (|a, _| f64_unary(a, f64::asin), DataType::Float64),
        ("ACOS", _) => (|a, _| f64_unary(a, f64::acos), DataType::Float64),
        ("ATAN", _) => (|a, _| f64_unary(a, f64::atan), DataType::Float64),
        ("SINH", _) => (|a, _| f64_unary(a, f64::sinh), DataType::Float64),
        ("COSH", _) => (|a, _| f64_unary(a, f64::cosh), DataType::Float64),
        ("TANH", _) => (|a, _| f64_unary(a, f64::tanh), DataType::Float64),
        ("DEGREES", _) => (|a, _| f64_unary(a, f64::to_degrees), DataType::Float64),
        ("RADIANS", _) => (|a, _| f64_unary(a, f64::to_radians), DataType::Float64),
        ("SQRT", _) => (|a, _| f64_unary(a, f64::sqrt), DataType::Float64),
        ("CBRT", _) => (|a, _| f64_unary(a, f64::cbrt), DataType::Float64),
        ("EXP", _) => (|a, _| f64_unary(a, f64::exp), DataType::Float64),
        ("LN", _) => (|a, _| f64_unary(a, f64::ln), DataType::Float64),
        ("GREATEST", [first, rest @ ..]) if rest.iter().all(|t| t == first) => {
            (|a, rows| extremum(a, rows, true), first.clone())
        }
        ("LEAST", [first, rest @ ..]) if rest.iter().all(|t| t == first) => {
            (|a, rows| extremum(a, rows, false), first.clone())
        }
        _ => return None,
    };
    Some((Body::Plain(kernel), returns))
}

/// Every function name implemented here.
pub fn sluice_names() -> Vec<&'static str> {
    let core: &[&str] = &[
        "AS_VALUE", "ABS", "GREATEST", "LEAST", "ROUND", "ATAN2", "POWER", "PI", "SIN", "COS",
        "TAN", "COT", "ASIN", "ACOS", "ATAN", "SINH", "COSH", "TANH", "DEGREES", "RADIANS", "SQRT",
        "CBRT", "EXP", "LN",
    ];
    [
        core,
        strings::NAMES,
        math::NAMES,
        dates::NAMES,
        collections::NAMES,
        json::NAMES,
        url::NAMES,
        lambda::NAMES,
    ]
    .concat()
}

/// The Arrow type of a MAP, laid out as `types::arrow_type` lays it out.
fn map_type(key: DataType, value: DataType) -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(
                vec![
                    Field::new("key", key, false),
                    Field::new("value", value, true),
                ]
                .into(),
            ),
            false,
        )),
        false,
    )
}

fn types_of_string_map() -> DataType {
    map_type(DataType::Utf8, DataType::Utf8)
}

/// A kernel's output with the exact (nested) type the plan expects: builders name list
/// items and map entries their own way; the layout is the same.
fn retype(out: ArrayRef, returns: &DataType) -> Result<ArrayRef> {
    if out.data_type() == returns || !returns.is_nested() {
        return Ok(out);
    }
    let data = out
        .to_data()
        .into_builder()
        .data_type(returns.clone())
        .build()?;
    Ok(make_array(data))
}

// Helpers shared by the kernels: per-row access and builders.

/// The STRING argument `i`.
fn str_at(a: &[ArrayRef], i: usize) -> &StringArray {
    a[i].as_string::<i32>()
}

/// The value of row `r`, or `None` when it is NULL.
fn opt_str(a: &StringArray, r: usize) -> Option<&str> {
    a.is_valid(r).then(|| a.value(r))
}

fn opt_bytes(a: &BinaryArray, r: usize) -> Option<&[u8]> {
    a.is_valid(r).then(|| a.value(r))
}

/// A builder of MAP<STRING, STRING> with the field names the runtime's map type has.
fn string_map_builder() -> datafusion_common::arrow::array::MapBuilder<
    datafusion_common::arrow::array::StringBuilder,
    datafusion_common::arrow::array::StringBuilder,
> {
    use datafusion_common::arrow::array::{MapBuilder, MapFieldNames, StringBuilder};
    let names = MapFieldNames {
        entry: "entries".into(),
        key: "key".into(),
        value: "value".into(),
    };
    MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new())
}

fn opt_i32(a: &ArrayRef, r: usize) -> Option<i32> {
    let a = a.as_primitive::<Int32Type>();
    a.is_valid(r).then(|| a.value(r))
}

fn opt_i64(a: &ArrayRef, r: usize) -> Option<i64> {
    let a = a.as_primitive::<Int64Type>();
    a.is_valid(r).then(|| a.value(r))
}

fn opt_f64(a: &ArrayRef, r: usize) -> Option<f64> {
    let a = a.as_primitive::<Float64Type>();
    a.is_valid(r).then(|| a.value(r))
}

fn strings_of(rows: usize, f: impl FnMut(usize) -> Option<String>) -> Result<ArrayRef> {
    Ok(Arc::new((0..rows).map(f).collect::<StringArray>()))
}

fn bytes_of(rows: usize, f: impl FnMut(usize) -> Option<Vec<u8>>) -> Result<ArrayRef> {
    Ok(Arc::new((0..rows).map(f).collect::<BinaryArray>()))
}

fn i32s_of(rows: usize, f: impl FnMut(usize) -> Option<i32>) -> Result<ArrayRef> {
    Ok(Arc::new((0..rows).map(f).collect::<Int32Array>()))
}

fn i64s_of(rows: usize, f: impl FnMut(usize) -> Option<i64>) -> Result<ArrayRef> {
    Ok(Arc::new((0..rows).map(f).collect::<Int64Array>()))
}

fn f64s_of(rows: usize, f: impl FnMut(usize) -> Option<f64>) -> Result<ArrayRef> {
    Ok(Arc::new((0..rows).map(f).collect::<Float64Array>()))
}

fn bools_of(rows: usize, f: impl FnMut(usize) -> Option<bool>) -> Result<ArrayRef> {
    Ok(Arc::new((0..rows).map(f).collect::<BooleanArray>()))
}

/// A list per row from the values `items` (already flattened) and each row's length
/// (`None`: a NULL list).
fn list_of(items: ArrayRef, lengths: &[Option<usize>]) -> Result<ArrayRef> {
    let offsets = OffsetBuffer::from_lengths(lengths.iter().map(|l| l.unwrap_or(0)));
    let nulls = NullBuffer::from_iter(lengths.iter().map(Option::is_some));
    let field = Arc::new(Field::new("item", items.data_type().clone(), true));
    Ok(Arc::new(ListArray::try_new(
        field,
        offsets,
        items,
        Some(nulls),
    )?))
}

/// An ARRAY<STRING> per row.
fn string_lists_of(
    rows: usize,
    mut f: impl FnMut(usize) -> Option<Vec<Option<String>>>,
) -> Result<ArrayRef> {
    let mut items: Vec<Option<String>> = Vec::new();
    let mut lengths = Vec::with_capacity(rows);
    for r in 0..rows {
        match f(r) {
            Some(v) => {
                lengths.push(Some(v.len()));
                items.extend(v);
            }
            None => lengths.push(None),
        }
    }
    list_of(Arc::new(StringArray::from(items)), &lengths)
}

fn f64_unary(a: &[ArrayRef], f: fn(f64) -> f64) -> Result<ArrayRef> {
    Ok(Arc::new(
        a[0].as_primitive::<Float64Type>()
            .unary::<_, Float64Type>(f),
    ))
}

fn f64_binary(a: &[ArrayRef], f: fn(f64, f64) -> f64) -> Result<ArrayRef> {
    let (x, y) = (
        a[0].as_primitive::<Float64Type>(),
        a[1].as_primitive::<Float64Type>(),
    );
    let out: Float64Array = x
        .iter()
        .zip(y.iter())
        .map(|(x, y)| Some(f(x?, y?)))
        .collect();
    Ok(Arc::new(out))
}

/// Java's `Math.round`: half up, NaN to 0, saturating at the BIGINT range.
fn round_to_long(a: &[ArrayRef], _: usize) -> Result<ArrayRef> {
    let x = a[0].as_primitive::<Float64Type>();
    Ok(Arc::new(
        x.unary::<_, Int64Type>(|v| (v + 0.5).floor() as i64),
    ))
}

/// ksqlDB's `ROUND(x, n)`: `BigDecimal.valueOf(x).setScale(n, HALF_UP)`, i.e. half up on
/// the shortest decimal representation of x.
fn round_to_scale(a: &[ArrayRef], _: usize) -> Result<ArrayRef> {
    let (x, n) = (
        a[0].as_primitive::<Float64Type>(),
        a[1].as_primitive::<Int32Type>(),
    );
    let out: Float64Array = x
        .iter()
        .zip(n.iter())
        .map(|(x, n)| Some(round_half_up(x?, n?)))
        .collect();
    Ok(Arc::new(out))
}

pub fn round_half_up(x: f64, places: i32) -> f64 {
    if !x.is_finite() {
        return x;
    }
    let text = format!("{}", x.abs());
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let mut digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
    // Index of the first digit dropped.
    let cut = int.len() as i64 + places as i64;
    if cut < 0 {
        return 0.0;
    }
    let cut = cut as usize;
    if cut < digits.len() {
        // Half toward +infinity: HALF_UP on positives, HALF_DOWN on negatives.
        let round_up = if x >= 0.0 {
            digits[cut] >= 5
        } else {
            digits[cut] > 5 || (digits[cut] == 5 && digits[cut + 1..].iter().any(|d| *d > 0))
        };
        digits.truncate(cut);
        if round_up {
            let mut i = digits.len();
            loop {
                if i == 0 {
                    digits.insert(0, 1);
                    break;
                }
                i -= 1;
                if digits[i] == 9 {
                    digits[i] = 0;
                } else {
                    digits[i] += 1;
                    break;
                }
            }
        }
    }
    let carried = digits.len() as i64 > cut as i64;
    let int_len = int.len() as i64 + i64::from(carried);
    let mut s = String::new();
    for (i, d) in digits.iter().enumerate() {
        if i as i64 == int_len {
            s.push('.');
        }
        s.push((b'0' + d) as char);
    }
    // Digits rounded away in the integer part are zeros.
    for _ in digits.len() as i64..int_len {
        s.push('0');
    }
    let v: f64 = if s.is_empty() {
        0.0
    } else {
        s.parse().unwrap_or(0.0)
    };
    // BigDecimal has no negative zero.
    if x < 0.0 && v != 0.0 { -v } else { v }
}

/// The greatest (or least) non-NULL argument of each row; NULL when all are NULL.
fn extremum(a: &[ArrayRef], rows: usize, greatest: bool) -> Result<ArrayRef> {
    use datafusion_common::arrow::compute::kernels::{boolean, cmp, zip::zip};
    use datafusion_common::arrow::compute::{is_not_null, is_null, prep_null_mask_filter};
    let Some(first) = a.first() else {
        return exec_err!("GREATEST and LEAST need an argument");
    };
    let mut best = first.clone();
    for next in &a[1..] {
        let better = if greatest {
            cmp::gt(next, &best)?
        } else {
            cmp::lt(next, &best)?
        };
        // A comparison with NULL is not "better" (prep_null_mask_filter needs nulls).
        let better = if better.null_count() > 0 {
            prep_null_mask_filter(&better)
        } else {
            better
        };
        let take = boolean::or(
            &is_null(&best)?,
            &boolean::and(&is_not_null(next)?, &better)?,
        )?;
        best = zip(&take, next, &best)?;
    }
    debug_assert_eq!(best.len(), rows);
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every function the analyzer accepts has an implementation here, for every exact
    /// signature; generic ones at least by name.
    #[test]
    fn every_signature_has_an_implementation() {
        use sluice_sql::functions::{Params, scalar_functions};
        let names = sluice_names();
        for f in scalar_functions() {
            assert!(names.contains(&f.name), "{} has no implementation", f.name);
            for sig in &f.signatures {
                if let Params::Exact(params) = sig.params {
                    let types: Vec<DataType> =
                        params.iter().map(crate::types::arrow_type).collect();
                    let udf = lookup(f.name, &types)
                        .unwrap_or_else(|| panic!("no {}{:?}", f.name, params));
                    assert_eq!(
                        udf.return_type(&types).unwrap(),
                        crate::types::arrow_type(&sig.returns),
                        "{}{:?}",
                        f.name,
                        params
                    );
                }
            }
        }
    }

    #[test]
    fn greatest_and_least_skip_nulls() {
        let a: ArrayRef = Arc::new(Int32Array::from(vec![Some(1), None, None, Some(7)]));
        let b: ArrayRef = Arc::new(Int32Array::from(vec![Some(3), Some(2), None, Some(-1)]));
        let g = extremum(&[a.clone(), b.clone()], 4, true).unwrap();
        let l = extremum(&[a, b], 4, false).unwrap();
        let (g, l) = (g.as_primitive::<Int32Type>(), l.as_primitive::<Int32Type>());
        assert_eq!(
            (g.value(0), g.value(1), g.is_null(2), g.value(3)),
            (3, 2, true, 7)
        );
        assert_eq!(
            (l.value(0), l.value(1), l.is_null(2), l.value(3)),
            (1, 2, true, -1)
        );
    }

    #[test]
    fn round_is_half_up_on_the_shortest_decimal() {
        assert_eq!(round_half_up(1.25, 1), 1.3);
        assert_eq!(round_half_up(-1.25, 1), -1.2);
        assert_eq!(round_half_up(-1.5, 0), -1.0);
        assert_eq!(round_half_up(-1.51, 0), -2.0);
        assert_eq!(round_half_up(-1.5, -1), 0.0);
        assert!(round_half_up(-1.5, -1).is_sign_positive());
        assert_eq!(round_half_up(1.5, 0), 2.0);
        assert_eq!(round_half_up(2.5, 0), 3.0);
        assert_eq!(round_half_up(1.2, -1), 0.0);
        assert_eq!(round_half_up(15.0, -1), 20.0);
        assert_eq!(round_half_up(999.96, 1), 1000.0);
        assert_eq!(round_half_up(0.1234567890123456, 13), 0.1234567890123);
    }
}
