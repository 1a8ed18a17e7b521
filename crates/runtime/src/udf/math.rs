//! Numeric functions beyond the basic ones in `mod.rs`: CEIL, FLOOR, SIGN, TRUNC, LOG,
//! RANDOM, GEO_DISTANCE, the DECIMAL forms of ABS, CEIL and FLOOR, and the null helpers
//! COALESCE, IFNULL and NULLIF (generic over any type).

use super::{Body, Kernel, TypedKernel, f64s_of, i32s_of, i64s_of, opt_f64, opt_i32, opt_str};
use datafusion_common::Result;
use datafusion_common::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, make_comparator, new_null_array,
};
use datafusion_common::arrow::compute::is_not_null;
use datafusion_common::arrow::compute::kernels::zip::zip;
use datafusion_common::arrow::datatypes::{DataType, Decimal128Type, Float64Type, Int64Type};
use std::sync::Arc;

pub(super) const NAMES: &[&str] = &[
    "CEIL",
    "FLOOR",
    "SIGN",
    "TRUNC",
    "LOG",
    "RANDOM",
    "GEO_DISTANCE",
    "COALESCE",
    "IFNULL",
    "NULLIF",
];

pub(super) fn lookup(name: &str, args: &[DataType]) -> Option<(Body, DataType)> {
    use DataType::{Float64, Int32, Int64};
    if let Some(typed) = generic(name, args) {
        return Some(typed);
    }
    let (kernel, returns): (Kernel, DataType) = match (name, args) {
        ("CEIL" | "FLOOR", [Int32 | Int64]) => (|a, _| Ok(a[0].clone()), args[0].clone()),
        ("CEIL", [Float64]) => (|a, _| f64_map(a, f64::ceil), Float64),
        ("FLOOR", [Float64]) => (|a, _| f64_map(a, f64::floor), Float64),
        ("CEIL", [DataType::Decimal128(..)]) => {
            (|a, _| decimal_map(a, ceil_scaled), args[0].clone())
        }
        ("FLOOR", [DataType::Decimal128(..)]) => {
            (|a, _| decimal_map(a, floor_scaled), args[0].clone())
        }
        ("ABS", [DataType::Decimal128(..)]) => (
            |a, _| decimal_map(a, |v, _| Some(v.wrapping_abs())),
            args[0].clone(),
        ),
        ("SIGN", [Int32]) => (
            |a, rows| i32s_of(rows, |r| opt_i32(&a[0], r).map(i32::signum)),
            Int32,
        ),
        ("SIGN", [Int64]) => (
            |a, rows| {
                let x = a[0].as_primitive::<Int64Type>();
                i32s_of(rows, |r| x.is_valid(r).then(|| x.value(r).signum() as i32))
            },
            Int32,
        ),
        // Java's (int) Math.signum: NaN and zeros give 0.
        ("SIGN", [Float64]) => (
            |a, rows| {
                i32s_of(rows, |r| {
                    opt_f64(&a[0], r).map(|v| {
                        if v > 0.0 {
                            1
                        } else if v < 0.0 {
                            -1
                        } else {
                            0
                        }
                    })
                })
            },
            Int32,
        ),
        ("TRUNC", [Int32]) => (
            |a, rows| i64s_of(rows, |r| opt_i32(&a[0], r).map(i64::from)),
            Int64,
        ),
        ("TRUNC", [Int64]) => (|a, _| Ok(a[0].clone()), Int64),
        // Java's Double.longValue(): toward zero, saturating, NaN to 0 (as `as` does).
        ("TRUNC", [Float64]) => (
            |a, rows| i64s_of(rows, |r| opt_f64(&a[0], r).map(|v| v as i64)),
            Int64,
        ),
        ("TRUNC", [Float64, Int32]) => (
            |a, rows| {
                f64s_of(rows, |r| {
                    Some(trunc_places(opt_f64(&a[0], r)?, opt_i32(&a[1], r)?))
                })
            },
            Float64,
        ),
        ("LOG", [Float64]) => (|a, _| f64_map(a, f64::ln), Float64),
        ("LOG", [Float64, Float64]) => (
            |a, rows| {
                f64s_of(rows, |r| {
                    let (base, v) = (opt_f64(&a[0], r)?, opt_f64(&a[1], r)?);
                    Some(if base <= 0.0 || base == 1.0 {
                        f64::NAN
                    } else {
                        v.ln() / base.ln()
                    })
                })
            },
            Float64,
        ),
        ("RANDOM", []) => (|_, rows| f64s_of(rows, |_| Some(random_unit())), Float64),
        ("GEO_DISTANCE", _) => (geo_distance, Float64),
        _ => return None,
    };
    Some((Body::Plain(kernel), returns))
}

/// TRUNC of a DECIMAL, and the null helpers: typed by their arguments.
fn generic(name: &str, args: &[DataType]) -> Option<(Body, DataType)> {
    let (kernel, returns): (TypedKernel, DataType) = match (name, args) {
        ("TRUNC", [DataType::Decimal128(p, s)]) => (
            trunc_decimal_to_integer,
            DataType::Decimal128((*p - *s as u8).max(1), 0),
        ),
        ("TRUNC", [DataType::Decimal128(..), DataType::Int32]) => {
            (trunc_decimal_places, args[0].clone())
        }
        ("COALESCE", [first, ..]) if !args.is_empty() => (coalesce, first.clone()),
        ("IFNULL", [first, _]) => (coalesce, first.clone()),
        ("NULLIF", [first, _]) => (nullif, first.clone()),
        _ => return None,
    };
    Some((Body::Typed(kernel), returns))
}

fn f64_map(a: &[ArrayRef], f: fn(f64) -> f64) -> Result<ArrayRef> {
    Ok(Arc::new(
        a[0].as_primitive::<Float64Type>()
            .unary::<_, Float64Type>(f),
    ))
}

/// Applies `f(unscaled, scale)` to every DECIMAL value, keeping the type; `None` is NULL.
fn decimal_map(a: &[ArrayRef], f: fn(i128, i8) -> Option<i128>) -> Result<ArrayRef> {
    let x = a[0].as_primitive::<Decimal128Type>();
    let (p, s) = match x.data_type() {
        DataType::Decimal128(p, s) => (*p, *s),
        _ => (38, 0),
    };
    let out: Decimal128Array = x.iter().map(|v| f(v?, s)).collect();
    Ok(Arc::new(out.with_precision_and_scale(p, s)?))
}

fn pow10(n: i64) -> Option<i128> {
    10i128.checked_pow(u32::try_from(n).ok()?)
}

fn ceil_scaled(v: i128, scale: i8) -> Option<i128> {
    let f = pow10(scale as i64)?;
    let q = v / f;
    Some(if v % f > 0 { q + 1 } else { q } * f)
}

fn floor_scaled(v: i128, scale: i8) -> Option<i128> {
    let f = pow10(scale as i64)?;
    let q = v / f;
    Some(if v % f < 0 { q - 1 } else { q } * f)
}

/// Drops digits below `places` decimal places (toward zero) of an unscaled value of
/// `scale`, keeping the scale.
fn trunc_scaled(v: i128, scale: i8, places: i32) -> i128 {
    let drop = scale as i64 - places as i64;
    if drop <= 0 {
        return v;
    }
    match pow10(drop) {
        Some(f) => v / f * f,
        None => 0,
    }
}

fn trunc_decimal_to_integer(a: &[ArrayRef], _: usize, returns: &DataType) -> Result<ArrayRef> {
    let x = a[0].as_primitive::<Decimal128Type>();
    let scale = x.scale();
    let f = pow10(scale as i64).unwrap_or(1);
    let out: Decimal128Array = x.iter().map(|v| Some(v? / f)).collect();
    let DataType::Decimal128(p, s) = returns else {
        return Ok(Arc::new(out));
    };
    Ok(Arc::new(out.with_precision_and_scale(*p, *s)?))
}

fn trunc_decimal_places(a: &[ArrayRef], rows: usize, returns: &DataType) -> Result<ArrayRef> {
    let x = a[0].as_primitive::<Decimal128Type>();
    let scale = x.scale();
    let out: Decimal128Array = (0..rows)
        .map(|r| {
            let places = opt_i32(&a[1], r)?;
            x.is_valid(r)
                .then(|| trunc_scaled(x.value(r), scale, places))
        })
        .collect();
    let DataType::Decimal128(p, s) = returns else {
        return Ok(Arc::new(out));
    };
    Ok(Arc::new(out.with_precision_and_scale(*p, *s)?))
}

/// `BigDecimal.valueOf(x).setScale(places, DOWN).doubleValue()`: truncation on the
/// shortest decimal representation of x.
pub(super) fn trunc_places(x: f64, places: i32) -> f64 {
    if !x.is_finite() {
        return x;
    }
    let text = format!("{}", x.abs());
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let kept = if places >= 0 {
        let p = (places as usize).min(frac.len());
        format!("{int}.{}", &frac[..p])
    } else {
        let zeros = (-(places as i64)) as usize;
        if zeros >= int.len() {
            "0".to_string()
        } else {
            format!("{}{}", &int[..int.len() - zeros], "0".repeat(zeros))
        }
    };
    let v: f64 = kept.trim_end_matches('.').parse().unwrap_or(0.0);
    if x < 0.0 && v != 0.0 { -v } else { v }
}

/// A uniformly distributed DOUBLE in [0, 1), from the operating system's randomness.
fn random_unit() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() as u64 >> 11;
    bits as f64 / (1u64 << 53) as f64
}

/// The haversine great-circle distance, in kilometres or miles; coordinates out of range
/// or an unknown unit give NULL.
fn geo_distance(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let units = a.get(4).map(|u| u.as_string::<i32>());
    f64s_of(rows, |r| {
        let (lat1, lon1) = (opt_f64(&a[0], r)?, opt_f64(&a[1], r)?);
        let (lat2, lon2) = (opt_f64(&a[2], r)?, opt_f64(&a[3], r)?);
        let unit = units.and_then(|u| opt_str(u, r));
        haversine(lat1, lon1, lat2, lon2, unit)
    })
}

pub(super) fn haversine(
    lat1: f64,
    lon1: f64,
    lat2: f64,
    lon2: f64,
    unit: Option<&str>,
) -> Option<f64> {
    let lat_ok = |v: f64| (-90.0..=90.0).contains(&v);
    let lon_ok = |v: f64| (-180.0..=180.0).contains(&v);
    if !(lat_ok(lat1) && lat_ok(lat2) && lon_ok(lon1) && lon_ok(lon2)) {
        return None;
    }
    let radius = match unit.map(|u| u.trim().to_lowercase()) {
        None => 6371.0,
        Some(u) if u.is_empty() => 6371.0,
        Some(u) if matches!(u.as_str(), "mi" | "mile" | "miles") => 3959.0,
        Some(u)
            if matches!(
                u.as_str(),
                "km" | "kilometer" | "kilometers" | "kilometre" | "kilometres"
            ) =>
        {
            6371.0
        }
        Some(_) => return None,
    };
    let haversin = |v: f64| (v / 2.0).sin().powf(2.0);
    // Java 8's Math.toRadians, whose rounding ksqlDB's results carry.
    let radians = |deg: f64| deg / 180.0 * std::f64::consts::PI;
    let d_lat = radians(lat2 - lat1);
    let d_lon = radians(lon2 - lon1);
    let h = haversin(d_lat) + haversin(d_lon) * radians(lat1).cos() * radians(lat2).cos();
    Some(2.0 * h.sqrt().asin() * radius)
}

/// The first non-NULL argument of each row.
fn coalesce(a: &[ArrayRef], rows: usize, returns: &DataType) -> Result<ArrayRef> {
    let mut out = new_null_array(returns, rows);
    for next in a.iter().rev() {
        out = zip(&is_not_null(next)?, next, &out)?;
    }
    Ok(out)
}

/// NULL where the two arguments are equal, else the first.
fn nullif(a: &[ArrayRef], rows: usize, returns: &DataType) -> Result<ArrayRef> {
    let cmp = make_comparator(a[0].as_ref(), a[1].as_ref(), Default::default())?;
    let keep: BooleanArray = (0..rows)
        .map(|r| Some(!(a[0].is_valid(r) && a[1].is_valid(r) && cmp(r, r).is_eq())))
        .collect();
    Ok(zip(&keep, &a[0], &new_null_array(returns, rows))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion_common::arrow::array::{Float64Array, Int32Array, StringArray};
    use datafusion_common::arrow::datatypes::Int32Type;

    #[test]
    fn decimals_round_to_integral_values_keeping_their_scale() {
        assert_eq!(ceil_scaled(123, 2), Some(200));
        assert_eq!(ceil_scaled(-123, 2), Some(-100));
        assert_eq!(floor_scaled(123, 2), Some(100));
        assert_eq!(floor_scaled(-123, 2), Some(-200));
        assert_eq!(floor_scaled(-100, 2), Some(-100));
        assert_eq!(trunc_scaled(12345, 3, 1), 12300);
        assert_eq!(trunc_scaled(-12345, 3, -1), -10000);
        assert_eq!(trunc_scaled(12345, 3, 5), 12345);
    }

    #[test]
    fn trunc_cuts_decimal_places_toward_zero() {
        assert_eq!(trunc_places(1.2345, 2), 1.23);
        assert_eq!(trunc_places(-1.2345, 3), -1.234);
        assert_eq!(trunc_places(1234.5, -2), 1200.0);
        assert_eq!(trunc_places(15.0, -3), 0.0);
        assert_eq!(trunc_places(0.1, 5), 0.1);
    }

    #[test]
    fn geo_distance_uses_the_haversine_formula() {
        let km = haversine(37.4439, -122.1663, 51.5257, -0.1122, None).unwrap();
        assert!((km - 8634.66).abs() < 0.01, "{km}");
        // London to Cape Town, to the last bit of the published distance.
        assert_eq!(
            haversine(51.5257, -0.1122, -33.9323, 18.4197, Some("km")),
            Some(9673.40421197142)
        );
        let mi = haversine(37.4439, -122.1663, 51.5257, -0.1122, Some("Miles")).unwrap();
        assert!((mi - 5365.66).abs() < 0.01, "{mi}");
        assert_eq!(haversine(91.0, 0.0, 0.0, 0.0, None), None);
        assert_eq!(haversine(0.0, 0.0, 0.0, 0.0, Some("parsecs")), None);
    }

    #[test]
    fn log_with_a_base() {
        let base: ArrayRef = Arc::new(Float64Array::from(vec![Some(2.0), Some(1.0), None]));
        let v: ArrayRef = Arc::new(Float64Array::from(vec![Some(8.0), Some(8.0), Some(8.0)]));
        let (kernel, _) = lookup("LOG", &[DataType::Float64, DataType::Float64]).unwrap();
        let Body::Plain(k) = kernel else { panic!() };
        let out = k(&[base, v], 3).unwrap();
        let out = out.as_primitive::<Float64Type>();
        assert!((out.value(0) - 3.0).abs() < 1e-12);
        assert!(out.value(1).is_nan());
        assert!(out.is_null(2));
    }

    #[test]
    fn random_is_in_the_unit_interval() {
        for _ in 0..100 {
            let v = random_unit();
            assert!((0.0..1.0).contains(&v));
        }
    }

    #[test]
    fn coalesce_and_nullif() {
        let a: ArrayRef = Arc::new(Int32Array::from(vec![None, Some(1), None]));
        let b: ArrayRef = Arc::new(Int32Array::from(vec![Some(2), Some(3), None]));
        let out = coalesce(&[a.clone(), b.clone()], 3, &DataType::Int32).unwrap();
        let out = out.as_primitive::<Int32Type>();
        assert_eq!(out.iter().collect::<Vec<_>>(), vec![Some(2), Some(1), None]);
        let x: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), Some("a"), None]));
        let y: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), Some("b"), Some("a")]));
        let out = nullif(&[x, y], 3, &DataType::Utf8).unwrap();
        let out = out.as_string::<i32>();
        assert_eq!(out.iter().collect::<Vec<_>>(), vec![None, Some("a"), None]);
    }
}
