//! Signatures of the scalar functions: what the analyzer checks calls against.
//!
//! The runtime holds the implementations under the same names; a test there checks that
//! every function listed here has one.

use sluice_plan::SqlType;

/// How a function's parameters are typed.
#[derive(Clone, Debug)]
pub enum Params {
    /// Exactly these types (after ksqlDB's implicit widening of the arguments).
    Exact(&'static [SqlType]),
    /// Any number (at least `min`) of arguments, each of this type.
    Variadic { ty: SqlType, min: usize },
    /// Generic parameters (`ARRAY<T>`, any type, ...): a rule over the argument types
    /// (`None` for an untyped NULL) gives the types the arguments are cast to and the
    /// result type, or `None` when the arguments do not fit. `returns` is then unused.
    Rule(Rule),
}

/// See [`Params::Rule`].
pub type Rule = fn(&[Option<SqlType>]) -> Option<(Vec<SqlType>, SqlType)>;

#[derive(Clone, Debug)]
pub struct Signature {
    pub params: Params,
    pub returns: SqlType,
}

#[derive(Clone, Debug)]
pub struct FunctionDef {
    /// ksqlDB's name, upper-case.
    pub name: &'static str,
    pub description: &'static str,
    pub signatures: Vec<Signature>,
}

fn exact(params: &'static [SqlType], returns: SqlType) -> Signature {
    Signature {
        params: Params::Exact(params),
        returns,
    }
}

fn rule(r: Rule) -> Signature {
    Signature {
        params: Params::Rule(r),
        returns: SqlType::String,
    }
}

fn def(name: &'static str, description: &'static str, signatures: Vec<Signature>) -> FunctionDef {
    FunctionDef {
        name,
        description,
        signatures,
    }
}

/// Functions of one DOUBLE (INT and BIGINT arguments widen), with their descriptions.
pub const DOUBLE_FUNCTIONS: &[(&str, &str)] = &[
    ("SIN", "The sine of an angle in radians."),
    ("COS", "The cosine of an angle in radians."),
    ("TAN", "The tangent of an angle in radians."),
    ("COT", "The cotangent of an angle in radians."),
    ("ASIN", "The arcsine, in radians."),
    ("ACOS", "The arccosine, in radians."),
    ("ATAN", "The arctangent, in radians."),
    ("SINH", "The hyperbolic sine."),
    ("COSH", "The hyperbolic cosine."),
    ("TANH", "The hyperbolic tangent."),
    ("DEGREES", "Radians converted to degrees."),
    ("RADIANS", "Degrees converted to radians."),
    ("SQRT", "The square root."),
    ("CBRT", "The cube root."),
    ("EXP", "e raised to the power of the argument."),
    ("LN", "The natural logarithm."),
];

/// Functions whose first argument is a time unit (`DAYS`, `HOURS`, ...), written as a
/// bare word; the analyzer passes it as the STRING of the unit's name.
pub const TIME_UNIT_FUNCTIONS: &[&str] = &[
    "DATEADD",
    "DATESUB",
    "TIMEADD",
    "TIMESUB",
    "TIMESTAMPADD",
    "TIMESTAMPSUB",
];

/// Every scalar function the engine runs.
pub fn scalar_functions() -> Vec<FunctionDef> {
    use SqlType::*;
    let doubles = DOUBLE_FUNCTIONS
        .iter()
        .map(|(name, description)| def(name, description, vec![exact(&[Double], Double)]));
    let string_fn = |name, description| def(name, description, vec![exact(&[String], String)]);
    let mask_fn = |name, description| {
        def(
            name,
            description,
            vec![
                exact(&[String, Integer], String),
                exact(&[String, Integer, String, String, String, String], String),
            ],
        )
    };
    let mut all: Vec<FunctionDef> = doubles.collect();
    all.extend([
        string_fn("UCASE", "Converts a string to upper case."),
        string_fn("LCASE", "Converts a string to lower case."),
        string_fn("TRIM", "Removes leading and trailing whitespace."),
        string_fn("LTRIM", "Removes leading whitespace."),
        string_fn("RTRIM", "Removes trailing whitespace."),
        string_fn(
            "INITCAP",
            "Capitalizes the first letter of each whitespace-delimited word and lower-cases the rest.",
        ),
        string_fn("MD5", "The hex-encoded MD5 digest of a string's UTF-8 bytes."),
        def(
            "LEN",
            "The length of a string in characters, or of bytes in bytes.",
            vec![exact(&[String], Integer), exact(&[Bytes], Integer)],
        ),
        def(
            "CONCAT",
            "Concatenates strings (or bytes); NULL arguments are skipped.",
            vec![rule(same_type_strings::<1>)],
        ),
        def(
            "CONCAT_WS",
            "Concatenates strings (or bytes) with a separator; NULL values are skipped, a NULL separator gives NULL.",
            vec![rule(same_type_strings::<2>)],
        ),
        def(
            "SUBSTRING",
            "The part of a string from a 1-based position (negative counts from the end), optionally of a given length.",
            vec![
                exact(&[String, Integer], String),
                exact(&[String, Integer, Integer], String),
                exact(&[Bytes, Integer], Bytes),
                exact(&[Bytes, Integer, Integer], Bytes),
            ],
        ),
        def(
            "LPAD",
            "Pads a string (or bytes) on the left to a length, repeating the padding; truncates longer input.",
            vec![
                exact(&[String, Integer, String], String),
                exact(&[Bytes, Integer, Bytes], Bytes),
            ],
        ),
        def(
            "RPAD",
            "Pads a string (or bytes) on the right to a length, repeating the padding; truncates longer input.",
            vec![
                exact(&[String, Integer, String], String),
                exact(&[Bytes, Integer, Bytes], Bytes),
            ],
        ),
        def(
            "REPLACE",
            "Replaces every occurrence of a substring.",
            vec![exact(&[String, String, String], String)],
        ),
        def(
            "REGEXP_REPLACE",
            "Replaces every match of a regular expression.",
            vec![exact(&[String, String, String], String)],
        ),
        def(
            "REGEXP_EXTRACT",
            "The first match of a regular expression (or a capture group of it): REGEXP_EXTRACT(pattern, string[, group]).",
            vec![
                exact(&[String, String], String),
                exact(&[String, String, Integer], String),
            ],
        ),
        def(
            "REGEXP_EXTRACT_ALL",
            "Every match of a regular expression (or a capture group of each): REGEXP_EXTRACT_ALL(pattern, string[, group]).",
            vec![
                exact(&[String, String], Array(Box::new(String))),
                exact(&[String, String, Integer], Array(Box::new(String))),
            ],
        ),
        def(
            "REGEXP_SPLIT_TO_ARRAY",
            "Splits a string around the matches of a regular expression.",
            vec![exact(&[String, String], Array(Box::new(String)))],
        ),
        def(
            "SPLIT",
            "Splits a string (or bytes) around a delimiter; an empty delimiter splits into characters.",
            vec![
                exact(&[String, String], Array(Box::new(String))),
                exact(&[Bytes, Bytes], Array(Box::new(Bytes))),
            ],
        ),
        def(
            "SPLIT_TO_MAP",
            "Splits a string into entries and each entry into key and value: SPLIT_TO_MAP(string, entryDelimiter, kvDelimiter).",
            vec![exact(
                &[String, String, String],
                Map {
                    key: Box::new(String),
                    value: Box::new(String),
                },
            )],
        ),
        def(
            "INSTR",
            "The 1-based position of an occurrence of a substring (0 when absent): INSTR(string, substring[, position[, occurrence]]).",
            vec![
                exact(&[String, String], Integer),
                exact(&[String, String, Integer], Integer),
                exact(&[String, String, Integer, Integer], Integer),
            ],
        ),
        def(
            "CHR",
            "The character of a Unicode code point, given as a number or as '\\uXXXX' text.",
            vec![exact(&[Integer], String), exact(&[String], String)],
        ),
        def(
            "ELT",
            "The n-th (1-based) of the remaining arguments, NULL when out of range.",
            vec![rule(elt)],
        ),
        def(
            "FIELD",
            "The 1-based position of the first argument among the others, 0 when absent or NULL.",
            vec![Signature {
                params: Params::Variadic { ty: String, min: 1 },
                returns: Integer,
            }],
        ),
        def(
            "MASK",
            "Masks a string: upper-case letters become 'X', lower-case 'x', digits 'n', others '-' (or the given masks; NULL keeps a class).",
            vec![
                exact(&[String], String),
                exact(&[String, String, String, String, String], String),
            ],
        ),
        mask_fn("MASK_LEFT", "Masks the first n characters of a string."),
        mask_fn("MASK_RIGHT", "Masks the last n characters of a string."),
        mask_fn(
            "MASK_KEEP_LEFT",
            "Masks all but the first n characters of a string.",
        ),
        mask_fn(
            "MASK_KEEP_RIGHT",
            "Masks all but the last n characters of a string.",
        ),
        def(
            "ENCODE",
            "Re-encodes a string between 'hex', 'utf8', 'ascii' and 'base64': ENCODE(string, from, to).",
            vec![exact(&[String, String, String], String)],
        ),
        def(
            "TO_BYTES",
            "Decodes a string in 'hex', 'utf8', 'ascii' or 'base64' to bytes.",
            vec![exact(&[String, String], Bytes)],
        ),
        def(
            "FROM_BYTES",
            "Encodes bytes as a string in 'hex', 'utf8', 'ascii' or 'base64'.",
            vec![exact(&[Bytes, String], String)],
        ),
        def(
            "UUID",
            "A random (version 4) UUID, or the UUID of 16 bytes.",
            vec![exact(&[], String), exact(&[Bytes], String)],
        ),
        // math
        def(
            "ROUND",
            "Rounds half up: to a BIGINT, or to a number of decimal places (negative: tens, hundreds, ...).",
            vec![
                exact(&[Integer], Integer),
                exact(&[Bigint], Bigint),
                exact(&[Double], Bigint),
                exact(&[Double, Integer], Double),
            ],
        ),
        def(
            "ATAN2",
            "The angle of the point (x, y), in radians: ATAN2(y, x).",
            vec![exact(&[Double, Double], Double)],
        ),
        def(
            "POWER",
            "The first argument raised to the power of the second.",
            vec![exact(&[Double, Double], Double)],
        ),
        def("PI", "The number pi.", vec![exact(&[], Double)]),
        def(
            "ABS",
            "The absolute value of a number.",
            vec![
                exact(&[Integer], Integer),
                exact(&[Bigint], Bigint),
                exact(&[Double], Double),
                rule(decimal_same),
            ],
        ),
        def(
            "CEIL",
            "The smallest integral value not below the argument.",
            vec![
                exact(&[Integer], Integer),
                exact(&[Bigint], Bigint),
                exact(&[Double], Double),
                rule(decimal_same),
            ],
        ),
        def(
            "FLOOR",
            "The largest integral value not above the argument.",
            vec![
                exact(&[Integer], Integer),
                exact(&[Bigint], Bigint),
                exact(&[Double], Double),
                rule(decimal_same),
            ],
        ),
        def(
            "SIGN",
            "The sign of a number: -1, 0 or 1.",
            vec![
                exact(&[Integer], Integer),
                exact(&[Bigint], Integer),
                exact(&[Double], Integer),
            ],
        ),
        def(
            "TRUNC",
            "Truncates toward zero: to a BIGINT, or to a number of decimal places.",
            vec![
                exact(&[Integer], Bigint),
                exact(&[Bigint], Bigint),
                exact(&[Double], Bigint),
                exact(&[Double, Integer], Double),
                rule(decimal_trunc),
            ],
        ),
        def(
            "LOG",
            "The natural logarithm of a value, or LOG(base, value).",
            vec![
                exact(&[Double], Double),
                exact(&[Double, Double], Double),
            ],
        ),
        def(
            "RANDOM",
            "A random DOUBLE in [0, 1).",
            vec![exact(&[], Double)],
        ),
        def(
            "GEO_DISTANCE",
            "The great-circle distance between two points given in degrees: GEO_DISTANCE(lat1, lon1, lat2, lon2[, 'KM'|'MILES']).",
            vec![
                exact(&[Double, Double, Double, Double], Double),
                exact(&[Double, Double, Double, Double, String], Double),
            ],
        ),
        def(
            "AS_VALUE",
            "Copies a key column into the value (the analyzer reads it as its argument).",
            vec![rule(|a| match a {
                [Some(t)] => Some((vec![t.clone()], t.clone())),
                _ => None,
            })],
        ),
        // nulls
        def(
            "COALESCE",
            "The first non-NULL argument.",
            vec![rule(same_type::<1>)],
        ),
        def(
            "IFNULL",
            "The first argument, or the second when it is NULL.",
            vec![rule(same_type_exactly::<2>)],
        ),
        def(
            "NULLIF",
            "NULL when both arguments are equal, else the first.",
            vec![rule(same_type_exactly::<2>)],
        ),
    ]);
    all.extend(more_functions());
    all.extend(lambda_functions());
    all
}

/// Dates and times, collections, JSON and URLs.
fn more_functions() -> Vec<FunctionDef> {
    use SqlType::*;
    let url_fn = |name, description| def(name, description, vec![exact(&[String], String)]);
    let array_fn = |name, description, r: Rule| def(name, description, vec![rule(r)]);
    vec![
        // dates and times
        def(
            "UNIX_TIMESTAMP",
            "Milliseconds since the epoch: now, or of a TIMESTAMP.",
            vec![exact(&[], Bigint), exact(&[Timestamp], Bigint)],
        ),
        def(
            "UNIX_DATE",
            "Days since the epoch: today, or of a DATE.",
            vec![exact(&[], Integer), exact(&[Date], Integer)],
        ),
        def(
            "FROM_UNIXTIME",
            "The TIMESTAMP of milliseconds since the epoch.",
            vec![exact(&[Bigint], Timestamp)],
        ),
        def(
            "FROM_DAYS",
            "The DATE of days since the epoch.",
            vec![exact(&[Integer], Date)],
        ),
        def(
            "DATETOSTRING",
            "Formats days since the epoch with a Java date pattern.",
            vec![exact(&[Integer, String], String)],
        ),
        def(
            "STRINGTODATE",
            "Days since the epoch of a date parsed with a Java date pattern.",
            vec![exact(&[String, String], Integer)],
        ),
        def(
            "TIMESTAMPTOSTRING",
            "Formats milliseconds since the epoch with a Java pattern, in UTC or a time zone.",
            vec![
                exact(&[Bigint, String], String),
                exact(&[Bigint, String, String], String),
            ],
        ),
        def(
            "STRINGTOTIMESTAMP",
            "Milliseconds since the epoch of a timestamp parsed with a Java pattern, in UTC or a time zone.",
            vec![
                exact(&[String, String], Bigint),
                exact(&[String, String, String], Bigint),
            ],
        ),
        def(
            "FORMAT_DATE",
            "Formats a DATE with a Java pattern.",
            vec![exact(&[Date, String], String)],
        ),
        def(
            "PARSE_DATE",
            "Parses a DATE with a Java pattern.",
            vec![exact(&[String, String], Date)],
        ),
        def(
            "FORMAT_TIME",
            "Formats a TIME with a Java pattern.",
            vec![exact(&[Time, String], String)],
        ),
        def(
            "PARSE_TIME",
            "Parses a TIME with a Java pattern.",
            vec![exact(&[String, String], Time)],
        ),
        def(
            "FORMAT_TIMESTAMP",
            "Formats a TIMESTAMP with a Java pattern, in UTC or a time zone.",
            vec![
                exact(&[Timestamp, String], String),
                exact(&[Timestamp, String, String], String),
            ],
        ),
        def(
            "PARSE_TIMESTAMP",
            "Parses a TIMESTAMP with a Java pattern, in UTC or a time zone.",
            vec![
                exact(&[String, String], Timestamp),
                exact(&[String, String, String], Timestamp),
            ],
        ),
        def(
            "CONVERT_TZ",
            "Converts a TIMESTAMP from one time zone to another.",
            vec![exact(&[Timestamp, String, String], Timestamp)],
        ),
        def(
            "DATEADD",
            "Adds a number of time units to a DATE.",
            vec![exact(&[String, Integer, Date], Date)],
        ),
        def(
            "DATESUB",
            "Subtracts a number of time units from a DATE.",
            vec![exact(&[String, Integer, Date], Date)],
        ),
        def(
            "TIMEADD",
            "Adds a number of time units to a TIME, wrapping around midnight.",
            vec![exact(&[String, Integer, Time], Time)],
        ),
        def(
            "TIMESUB",
            "Subtracts a number of time units from a TIME, wrapping around midnight.",
            vec![exact(&[String, Integer, Time], Time)],
        ),
        def(
            "TIMESTAMPADD",
            "Adds a number of time units to a TIMESTAMP.",
            vec![exact(&[String, Bigint, Timestamp], Timestamp)],
        ),
        def(
            "TIMESTAMPSUB",
            "Subtracts a number of time units from a TIMESTAMP.",
            vec![exact(&[String, Bigint, Timestamp], Timestamp)],
        ),
        // collections
        array_fn("ARRAY_LENGTH", "The number of elements of an array.", |a| {
            let [Some(t @ Array(_))] = a else { return None };
            Some((vec![t.clone()], Integer))
        }),
        array_fn(
            "ARRAY_CONTAINS",
            "Whether an array contains a value.",
            array_and_element::<false>,
        ),
        array_fn(
            "ARRAYCONTAINS",
            "Whether an array contains a value (old name of ARRAY_CONTAINS).",
            array_and_element::<false>,
        ),
        array_fn(
            "ARRAY_REMOVE",
            "The array without the elements equal to a value.",
            array_and_element::<true>,
        ),
        array_fn(
            "ARRAY_DISTINCT",
            "The distinct elements of an array, in order of first appearance.",
            one_array,
        ),
        array_fn(
            "ARRAY_EXCEPT",
            "The distinct elements of the first array that are not in the second.",
            two_arrays,
        ),
        array_fn(
            "ARRAY_INTERSECT",
            "The distinct elements in both arrays.",
            two_arrays,
        ),
        array_fn(
            "ARRAY_UNION",
            "The distinct elements in either array.",
            two_arrays,
        ),
        array_fn(
            "ARRAY_CONCAT",
            "The elements of both arrays, duplicates kept.",
            two_arrays,
        ),
        array_fn(
            "ARRAY_JOIN",
            "The elements of an array of primitives as text, joined by a delimiter (',' by default).",
            |a| match a {
                [Some(t @ Array(item))] if item.is_primitive() => Some((vec![t.clone()], String)),
                [Some(t @ Array(item)), d] if item.is_primitive() && is_string(d) => {
                    Some((vec![t.clone(), String], String))
                }
                _ => None,
            },
        ),
        array_fn(
            "ARRAY_MAX",
            "The largest non-NULL element of an array of primitives.",
            array_extremum,
        ),
        array_fn(
            "ARRAY_MIN",
            "The smallest non-NULL element of an array of primitives.",
            array_extremum,
        ),
        array_fn(
            "ARRAY_SORT",
            "The elements of an array of primitives sorted ('ASC' by default, or 'DESC'); NULLs last.",
            |a| match a {
                [Some(t @ Array(item))] if item.is_primitive() => {
                    Some((vec![t.clone()], t.clone()))
                }
                [Some(t @ Array(item)), d] if item.is_primitive() && is_string(d) => {
                    Some((vec![t.clone(), String], t.clone()))
                }
                _ => None,
            },
        ),
        array_fn(
            "GENERATE_SERIES",
            "The numbers from a start to an end, inclusive, by a step (1 or -1 by default).",
            |a| {
                let fits =
                    |t: &Option<SqlType>, to: &SqlType| t.as_ref().is_none_or(|t| t.widens_to(to));
                let ty = if a.iter().all(|t| fits(t, &Integer)) {
                    Integer
                } else if a.iter().all(|t| fits(t, &Bigint)) {
                    Bigint
                } else {
                    return None;
                };
                matches!(a.len(), 2 | 3).then(|| (vec![ty.clone(); a.len()], Array(Box::new(ty))))
            },
        ),
        array_fn(
            "SLICE",
            "The elements of an array from a 1-based position to another, inclusive.",
            |a| match a {
                [Some(t @ Array(_)), f, l] if is_int(f) && is_int(l) => {
                    Some((vec![t.clone(), Integer, Integer], t.clone()))
                }
                _ => None,
            },
        ),
        array_fn(
            "ENTRIES",
            "The entries of a map as an array of STRUCT<K, V>, sorted by key if asked.",
            |a| match a {
                [Some(t @ Map { key, value }), s]
                    if **key == String && s.as_ref().is_none_or(|s| *s == Boolean) =>
                {
                    let entry = Struct(vec![
                        sluice_plan::StructField {
                            name: "K".into(),
                            ty: String,
                        },
                        sluice_plan::StructField {
                            name: "V".into(),
                            ty: (**value).clone(),
                        },
                    ]);
                    Some((vec![t.clone(), Boolean], Array(Box::new(entry))))
                }
                _ => None,
            },
        ),
        array_fn("MAP_KEYS", "The keys of a map.", |a| match a {
            [Some(t @ Map { key, .. })] => Some((vec![t.clone()], Array(key.clone()))),
            _ => None,
        }),
        array_fn("MAP_VALUES", "The values of a map.", |a| match a {
            [Some(t @ Map { value, .. })] => Some((vec![t.clone()], Array(value.clone()))),
            _ => None,
        }),
        array_fn(
            "MAP_UNION",
            "The entries of both maps; the second wins on a shared key.",
            |a| match a {
                [Some(t @ Map { .. }), o] if o.as_ref().is_none_or(|o| o == t) => {
                    Some((vec![t.clone(), t.clone()], t.clone()))
                }
                [None, Some(t @ Map { .. })] => Some((vec![t.clone(), t.clone()], t.clone())),
                _ => None,
            },
        ),
        array_fn(
            "AS_MAP",
            "A map from an array of keys and an array of values.",
            |a| match a {
                [Some(k @ Array(key)), Some(v @ Array(value))] if **key == String => Some((
                    vec![k.clone(), v.clone()],
                    Map {
                        key: key.clone(),
                        value: value.clone(),
                    },
                )),
                _ => None,
            },
        ),
        // JSON
        def(
            "EXTRACTJSONFIELD",
            "The value at a JSONPath in a JSON string, as text.",
            vec![exact(&[String, String], String)],
        ),
        def(
            "IS_JSON_STRING",
            "Whether a string is valid JSON.",
            vec![exact(&[String], Boolean)],
        ),
        def(
            "JSON_ARRAY_LENGTH",
            "The length of a JSON array, NULL when the string is not one.",
            vec![exact(&[String], Integer)],
        ),
        def(
            "JSON_ARRAY_CONTAINS",
            "Whether a JSON array contains a value.",
            vec![rule(|a| match a {
                [s, v] if is_string(s) => {
                    let ty = v.clone().unwrap_or(String);
                    (ty.is_primitive() && !matches!(ty, Bytes | Date | Time | Timestamp))
                        .then(|| (vec![String, ty], Boolean))
                }
                _ => None,
            })],
        ),
        def(
            "JSON_CONCAT",
            "Merges JSON objects, or concatenates JSON arrays (a value is wrapped in an array).",
            vec![Signature {
                params: Params::Variadic { ty: String, min: 1 },
                returns: String,
            }],
        ),
        def(
            "JSON_KEYS",
            "The keys of a JSON object.",
            vec![exact(&[String], Array(Box::new(String)))],
        ),
        def(
            "JSON_ITEMS",
            "The elements of a JSON array, as JSON strings.",
            vec![exact(&[String], Array(Box::new(String)))],
        ),
        def(
            "JSON_RECORDS",
            "The entries of a JSON object, values as JSON strings.",
            vec![exact(
                &[String],
                Map {
                    key: Box::new(String),
                    value: Box::new(String),
                },
            )],
        ),
        def(
            "TO_JSON_STRING",
            "Any value as a JSON string.",
            vec![rule(|a| match a {
                [t] => {
                    let t = t.clone().unwrap_or(String);
                    Some((vec![t], String))
                }
                _ => None,
            })],
        ),
        // URLs
        url_fn(
            "URL_DECODE_PARAM",
            "Decodes an application/x-www-form-urlencoded string.",
        ),
        url_fn(
            "URL_ENCODE_PARAM",
            "Encodes a string as application/x-www-form-urlencoded.",
        ),
        url_fn("URL_EXTRACT_FRAGMENT", "The fragment of a URL."),
        url_fn("URL_EXTRACT_HOST", "The host of a URL."),
        url_fn("URL_EXTRACT_PATH", "The path of a URL."),
        url_fn("URL_EXTRACT_PROTOCOL", "The protocol (scheme) of a URL."),
        url_fn("URL_EXTRACT_QUERY", "The query string of a URL."),
        def(
            "URL_EXTRACT_PARAMETER",
            "The decoded value of the first query parameter of a name in a URL.",
            vec![exact(&[String, String], String)],
        ),
        def(
            "URL_EXTRACT_PORT",
            "The port of a URL.",
            vec![exact(&[String], Integer)],
        ),
    ]
}

fn is_string(t: &Option<SqlType>) -> bool {
    t.as_ref().is_none_or(|t| *t == SqlType::String)
}

fn is_int(t: &Option<SqlType>) -> bool {
    t.as_ref().is_none_or(|t| t.widens_to(&SqlType::Integer))
}

/// An array and a value of its element type (which may widen to it).
fn array_and_element<const RETURNS_ARRAY: bool>(
    a: &[Option<SqlType>],
) -> Option<(Vec<SqlType>, SqlType)> {
    let [Some(t @ SqlType::Array(item)), v] = a else {
        return None;
    };
    if v.as_ref()
        .is_some_and(|v| !v.widens_to(item) && !same_shape(v, item))
    {
        return None;
    }
    let returns = if RETURNS_ARRAY {
        t.clone()
    } else {
        SqlType::Boolean
    };
    Some((vec![t.clone(), (**item).clone()], returns))
}

fn one_array(a: &[Option<SqlType>]) -> Option<(Vec<SqlType>, SqlType)> {
    match a {
        [Some(t @ SqlType::Array(_))] => Some((vec![t.clone()], t.clone())),
        _ => None,
    }
}

/// Two arrays of one type (either may be an untyped NULL).
fn two_arrays(a: &[Option<SqlType>]) -> Option<(Vec<SqlType>, SqlType)> {
    let t = match a {
        [Some(t @ SqlType::Array(_)), None] | [None, Some(t @ SqlType::Array(_))] => t,
        [Some(t @ SqlType::Array(_)), Some(u)] if t == u => t,
        _ => return None,
    };
    Some((vec![t.clone(), t.clone()], t.clone()))
}

fn array_extremum(a: &[Option<SqlType>]) -> Option<(Vec<SqlType>, SqlType)> {
    match a {
        [Some(t @ SqlType::Array(item))] if item.is_primitive() => {
            Some((vec![t.clone()], (**item).clone()))
        }
        _ => None,
    }
}

/// Functions whose last arguments are lambdas; the analyzer types them with
/// [`lambda_params`] and [`lambda_result`].
pub const LAMBDA_FUNCTIONS: &[&str] = &["TRANSFORM", "FILTER", "REDUCE"];

/// The functions taking lambdas, as definitions (they have no fixed signatures).
fn lambda_functions() -> Vec<FunctionDef> {
    vec![
        def(
            "TRANSFORM",
            "Applies a lambda to each element of an array, or two lambdas to the keys and values of a map.",
            vec![],
        ),
        def(
            "FILTER",
            "The elements of an array (entries of a map) for which a lambda is true.",
            vec![],
        ),
        def(
            "REDUCE",
            "Folds an array (map) into a state with a lambda, from an initial state.",
            vec![],
        ),
    ]
}

/// The parameter types of each lambda of a call, given the types of the arguments before
/// the lambdas (the collection, and REDUCE's initial state).
pub fn lambda_params(name: &str, values: &[SqlType]) -> Option<Vec<Vec<SqlType>>> {
    use SqlType::*;
    Some(match (name, values) {
        ("TRANSFORM" | "FILTER", [Array(item)]) => vec![vec![(**item).clone()]],
        ("TRANSFORM", [Map { key, value }]) => {
            let kv = vec![(**key).clone(), (**value).clone()];
            vec![kv.clone(), kv]
        }
        ("FILTER", [Map { key, value }]) => vec![vec![(**key).clone(), (**value).clone()]],
        ("REDUCE", [Array(item), state]) => vec![vec![state.clone(), (**item).clone()]],
        ("REDUCE", [Map { key, value }, state]) => {
            vec![vec![state.clone(), (**key).clone(), (**value).clone()]]
        }
        _ => return None,
    })
}

/// The result type of a lambda call from the argument types before the lambdas and the
/// types of the lambdas' bodies; `None` when the bodies do not fit.
pub fn lambda_result(name: &str, values: &[SqlType], bodies: &[SqlType]) -> Option<SqlType> {
    use SqlType::*;
    match (name, values, bodies) {
        ("TRANSFORM", [Array(_)], [b]) => Some(Array(Box::new(b.clone()))),
        ("TRANSFORM", [Map { .. }], [k, v]) if k.is_primitive() => Some(Map {
            key: Box::new(k.clone()),
            value: Box::new(v.clone()),
        }),
        ("FILTER", [t @ (Array(_) | Map { .. })], [Boolean]) => Some(t.clone()),
        // The state keeps its type: the body must fit it.
        ("REDUCE", [_, state], [b]) if b.widens_to(state) || same_shape(b, state) => {
            Some(state.clone())
        }
        _ => None,
    }
}

/// Arguments that are all STRING or all BYTES (NULLs fit either), at least `MIN` of them.
fn same_type_strings<const MIN: usize>(
    args: &[Option<SqlType>],
) -> Option<(Vec<SqlType>, SqlType)> {
    if args.len() < MIN {
        return None;
    }
    let ty = args
        .iter()
        .flatten()
        .next()
        .cloned()
        .unwrap_or(SqlType::String);
    if !matches!(ty, SqlType::String | SqlType::Bytes) {
        return None;
    }
    args.iter()
        .all(|a| a.as_ref().is_none_or(|a| *a == ty))
        .then(|| (vec![ty.clone(); args.len()], ty))
}

/// At least `MIN` arguments of one type: the first typed argument's; the others may
/// widen to it.
fn same_type<const MIN: usize>(args: &[Option<SqlType>]) -> Option<(Vec<SqlType>, SqlType)> {
    if args.len() < MIN {
        return None;
    }
    let ty = args.iter().flatten().next()?.clone();
    args.iter()
        .all(|a| {
            a.as_ref()
                .is_none_or(|a| a.widens_to(&ty) || same_shape(a, &ty))
        })
        .then(|| (vec![ty.clone(); args.len()], ty))
}

/// Exactly `N` arguments of one type, as [`same_type`].
fn same_type_exactly<const N: usize>(args: &[Option<SqlType>]) -> Option<(Vec<SqlType>, SqlType)> {
    if args.len() != N {
        return None;
    }
    same_type::<N>(args)
}

/// Two decimals of any precision are one generic type to ksqlDB.
fn same_shape(a: &SqlType, b: &SqlType) -> bool {
    matches!((a, b), (SqlType::Decimal { .. }, SqlType::Decimal { .. }))
}

/// One DECIMAL argument; the result has its type.
fn decimal_same(args: &[Option<SqlType>]) -> Option<(Vec<SqlType>, SqlType)> {
    match args {
        [Some(t @ SqlType::Decimal { .. })] => Some((vec![t.clone()], t.clone())),
        _ => None,
    }
}

/// TRUNC of a DECIMAL: with no places, DECIMAL(precision - scale, 0); with places, the
/// argument's type.
fn decimal_trunc(args: &[Option<SqlType>]) -> Option<(Vec<SqlType>, SqlType)> {
    match args {
        [Some(t @ SqlType::Decimal { precision, scale })] => Some((
            vec![t.clone()],
            SqlType::Decimal {
                precision: (precision - scale).max(1),
                scale: 0,
            },
        )),
        [
            Some(t @ SqlType::Decimal { .. }),
            Some(SqlType::Integer) | None,
        ] => Some((vec![t.clone(), SqlType::Integer], t.clone())),
        _ => None,
    }
}

/// ELT(n, s1, s2, ...): an INTEGER then STRINGs.
fn elt(args: &[Option<SqlType>]) -> Option<(Vec<SqlType>, SqlType)> {
    let (first, rest) = args.split_first()?;
    let int_ok = first
        .as_ref()
        .is_none_or(|t| t.widens_to(&SqlType::Integer));
    let strings_ok = rest
        .iter()
        .all(|a| a.as_ref().is_none_or(|t| *t == SqlType::String));
    (int_ok && strings_ok).then(|| {
        let mut params = vec![SqlType::Integer];
        params.extend(std::iter::repeat_n(SqlType::String, rest.len()));
        (params, SqlType::String)
    })
}

/// Every scalar and table function ksqlDB documents. A call to one Sluice does not run
/// yet is "not supported yet"; any other unknown name is an error of the statement.
pub const KSQLDB_FUNCTIONS: &[&str] = &[
    // math
    "ABS",
    "ACOS",
    "ASIN",
    "ATAN",
    "ATAN2",
    "CBRT",
    "CEIL",
    "COS",
    "COSH",
    "COT",
    "DEGREES",
    "EXP",
    "FLOOR",
    "GENERATE_SERIES",
    "GEO_DISTANCE",
    "GREATEST",
    "LEAST",
    "LN",
    "LOG",
    "PI",
    "POWER",
    "RADIANS",
    "RANDOM",
    "ROUND",
    "SIGN",
    "SIN",
    "SINH",
    "SQRT",
    "TAN",
    "TANH",
    "TRUNC",
    // collections
    "ARRAY",
    "ARRAY_CONCAT",
    "ARRAY_CONTAINS",
    "ARRAYCONTAINS",
    "ARRAY_DISTINCT",
    "ARRAY_EXCEPT",
    "ARRAY_INTERSECT",
    "ARRAY_JOIN",
    "ARRAY_LENGTH",
    "ARRAY_MAX",
    "ARRAY_MIN",
    "ARRAY_REMOVE",
    "ARRAY_SORT",
    "ARRAY_UNION",
    "AS_MAP",
    "ELT",
    "ENTRIES",
    "FIELD",
    "FILTER",
    "JSON_ARRAY_CONTAINS",
    "MAP",
    "MAP_KEYS",
    "MAP_UNION",
    "MAP_VALUES",
    "REDUCE",
    "SLICE",
    "TRANSFORM",
    "EXPLODE",
    "CUBE_EXPLODE",
    // strings and bytes
    "CHR",
    "CONCAT",
    "CONCAT_WS",
    "ENCODE",
    "EXTRACTJSONFIELD",
    "FROM_BYTES",
    "INITCAP",
    "INSTR",
    "IS_JSON_STRING",
    "JSON_ARRAY_LENGTH",
    "JSON_CONCAT",
    "JSON_ITEMS",
    "JSON_KEYS",
    "JSON_RECORDS",
    "LCASE",
    "LEN",
    "LPAD",
    "MASK",
    "MASK_KEEP_LEFT",
    "MASK_KEEP_RIGHT",
    "MASK_LEFT",
    "MASK_RIGHT",
    "MD5",
    "REPLACE",
    "REGEXP_EXTRACT",
    "REGEXP_EXTRACT_ALL",
    "REGEXP_REPLACE",
    "REGEXP_SPLIT_TO_ARRAY",
    "RPAD",
    "SPLIT",
    "SPLIT_TO_MAP",
    "SUBSTRING",
    "TO_BYTES",
    "TO_JSON_STRING",
    "TRIM",
    "UCASE",
    "UUID",
    // nulls
    "COALESCE",
    "IFNULL",
    "NULLIF",
    // dates and times
    "CONVERT_TZ",
    "DATEADD",
    "DATESUB",
    "DATETOSTRING",
    "FORMAT_DATE",
    "FORMAT_TIME",
    "FORMAT_TIMESTAMP",
    "FROM_DAYS",
    "FROM_UNIXTIME",
    "PARSE_DATE",
    "PARSE_TIME",
    "PARSE_TIMESTAMP",
    "STRINGTODATE",
    "STRINGTOTIMESTAMP",
    "TIMEADD",
    "TIMESUB",
    "TIMESTAMPADD",
    "TIMESTAMPSUB",
    "TIMESTAMPTOSTRING",
    "UNIX_DATE",
    "UNIX_TIMESTAMP",
    // URLs
    "URL_DECODE_PARAM",
    "URL_ENCODE_PARAM",
    "URL_EXTRACT_FRAGMENT",
    "URL_EXTRACT_HOST",
    "URL_EXTRACT_PARAMETER",
    "URL_EXTRACT_PATH",
    "URL_EXTRACT_PORT",
    "URL_EXTRACT_PROTOCOL",
    "URL_EXTRACT_QUERY",
    // other
    "AS_VALUE",
];

pub fn lookup(name: &str) -> Option<FunctionDef> {
    scalar_functions()
        .into_iter()
        .find(|f| f.name.eq_ignore_ascii_case(name))
}

impl Signature {
    /// Whether arguments of these types fit, allowing implicit widening.
    pub fn accepts(&self, args: &[SqlType]) -> bool {
        let args: Vec<Option<SqlType>> = args.iter().cloned().map(Some).collect();
        self.resolve(&args).is_some()
    }

    /// The parameter types the arguments are cast to and the result type, when the
    /// arguments (`None` for an untyped NULL, which fits any parameter) fit.
    pub fn resolve(&self, args: &[Option<SqlType>]) -> Option<(Vec<SqlType>, SqlType)> {
        let fits = |a: &Option<SqlType>, p: &SqlType| a.as_ref().is_none_or(|a| a.widens_to(p));
        match self.params {
            Params::Exact(params) => (params.len() == args.len()
                && params.iter().zip(args).all(|(p, a)| fits(a, p)))
            .then(|| (params.to_vec(), self.returns.clone())),
            Params::Variadic { ref ty, min } => (args.len() >= min
                && args.iter().all(|a| fits(a, ty)))
            .then(|| (vec![ty.clone(); args.len()], self.returns.clone())),
            Params::Rule(rule) => rule(args),
        }
    }
}

impl FunctionDef {
    /// The signature these arguments select: one whose parameters are exactly their
    /// types first, then a generic one that takes them, else the first one they widen to.
    pub fn resolve(&self, args: &[Option<SqlType>]) -> Option<(Vec<SqlType>, SqlType)> {
        let exact = self.signatures.iter().find(|s| {
            matches!(s.params, Params::Exact(p) if p.len() == args.len()
                && p.iter().zip(args).all(|(p, a)| a.as_ref() == Some(p)))
        });
        if let Some(s) = exact {
            return s.resolve(args);
        }
        let generic = self
            .signatures
            .iter()
            .filter(|s| matches!(s.params, Params::Rule(_)))
            .find_map(|s| s.resolve(args));
        generic.or_else(|| self.signatures.iter().find_map(|s| s.resolve(args)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SqlType::*;

    fn resolve(name: &str, args: &[Option<SqlType>]) -> Option<(Vec<SqlType>, SqlType)> {
        lookup(name).unwrap().resolve(args)
    }

    fn array(t: SqlType) -> SqlType {
        Array(Box::new(t))
    }

    #[test]
    fn exact_signatures_prefer_exact_types_then_widen() {
        assert_eq!(
            resolve("ABS", &[Some(Integer)]),
            Some((vec![Integer], Integer))
        );
        assert_eq!(
            resolve("LOG", &[Some(Integer)]),
            Some((vec![Double], Double))
        );
        assert_eq!(resolve("LEN", &[None]), Some((vec![String], Integer)));
        assert_eq!(resolve("LEN", &[Some(Integer)]), None);
    }

    #[test]
    fn null_helpers_take_the_type_of_their_arguments() {
        assert_eq!(
            resolve("COALESCE", &[None, Some(Bigint), Some(Integer)]),
            Some((vec![Bigint; 3], Bigint))
        );
        assert_eq!(resolve("COALESCE", &[]), None);
        assert_eq!(resolve("IFNULL", &[Some(String), Some(Integer)]), None);
        assert_eq!(
            resolve("IFNULL", &[Some(array(Integer)), Some(array(Integer))]),
            Some((vec![array(Integer); 2], array(Integer)))
        );
    }

    #[test]
    fn collection_functions_are_generic_in_the_element_type() {
        assert_eq!(
            resolve("ARRAY_MAX", &[Some(array(String))]),
            Some((vec![array(String)], String))
        );
        assert_eq!(
            resolve("ARRAY_CONTAINS", &[Some(array(Bigint)), Some(Integer)]),
            Some((vec![array(Bigint), Bigint], Boolean))
        );
        assert_eq!(
            resolve("ARRAY_UNION", &[Some(array(Bigint)), Some(array(String))]),
            None
        );
        let map = Map {
            key: Box::new(String),
            value: Box::new(Double),
        };
        assert_eq!(
            resolve("MAP_VALUES", &[Some(map)]),
            Some((
                vec![Map {
                    key: Box::new(String),
                    value: Box::new(Double)
                }],
                array(Double)
            ))
        );
    }

    #[test]
    fn strings_and_bytes_do_not_mix() {
        assert_eq!(
            resolve("CONCAT", &[Some(Bytes), None, Some(Bytes)]),
            Some((vec![Bytes; 3], Bytes))
        );
        assert_eq!(resolve("CONCAT", &[Some(Bytes), Some(String)]), None);
        assert_eq!(
            resolve("ELT", &[Some(Integer), Some(String), None]),
            Some((vec![Integer, String, String], String))
        );
    }

    #[test]
    fn decimals_keep_their_type() {
        let d = Decimal {
            precision: 5,
            scale: 2,
        };
        assert_eq!(
            resolve("CEIL", &[Some(d.clone())]),
            Some((vec![d.clone()], d.clone()))
        );
        assert_eq!(
            resolve("TRUNC", &[Some(d.clone())]),
            Some((
                vec![d],
                Decimal {
                    precision: 3,
                    scale: 0
                }
            ))
        );
    }
}

/// What SHOW FUNCTIONS and DESCRIBE FUNCTION tell about a function.
#[derive(Clone, Debug, PartialEq)]
pub struct FunctionInfo {
    pub name: String,
    /// SCALAR, AGGREGATE or TABLE.
    pub kind: &'static str,
    pub description: String,
    /// Each signature's argument types and result type, as text (generic ones by name).
    pub signatures: Vec<(Vec<String>, String)>,
}

const AGGREGATE_NAMES: &[&str] = &[
    "ATTR",
    "AVG",
    "COLLECT_LIST",
    "COLLECT_SET",
    "CORRELATION",
    "COUNT",
    "COUNT_DISTINCT",
    "EARLIEST_BY_OFFSET",
    "HISTOGRAM",
    "LATEST_BY_OFFSET",
    "MAX",
    "MIN",
    "STDDEV_SAMP",
    "STDDEV_SAMPLE",
    "SUM",
    "TOPK",
    "TOPKDISTINCT",
];

const TABLE_FUNCTION_NAMES: &[&str] = &["CUBE_EXPLODE", "EXPLODE"];

/// Every function this build runs, by name.
pub fn all_functions() -> Vec<FunctionInfo> {
    let mut all: Vec<FunctionInfo> = scalar_functions()
        .into_iter()
        .map(|f| FunctionInfo {
            name: f.name.to_string(),
            kind: "SCALAR",
            description: f.description.to_string(),
            signatures: f
                .signatures
                .iter()
                .map(|s| match &s.params {
                    Params::Exact(params) => (
                        params.iter().map(|p| p.to_string()).collect(),
                        s.returns.to_string(),
                    ),
                    Params::Variadic { ty, .. } => {
                        (vec![format!("{ty}...")], s.returns.to_string())
                    }
                    Params::Rule(_) => (vec!["generic".into()], "depends on the arguments".into()),
                })
                .collect(),
        })
        .collect();
    for (names, kind, description) in [
        (
            AGGREGATE_NAMES,
            "AGGREGATE",
            "An aggregate function: one value per group.",
        ),
        (
            TABLE_FUNCTION_NAMES,
            "TABLE",
            "A table function: any number of rows per input row.",
        ),
    ] {
        for name in names {
            all.push(FunctionInfo {
                name: name.to_string(),
                kind,
                description: description.into(),
                signatures: Vec::new(),
            });
        }
    }
    for name in LAMBDA_FUNCTIONS {
        if !all.iter().any(|f| f.name == *name) {
            all.push(FunctionInfo {
                name: name.to_string(),
                kind: "SCALAR",
                description: "A function of an array or map and a lambda.".into(),
                signatures: Vec::new(),
            });
        }
    }
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all.dedup_by(|a, b| a.name == b.name);
    all
}

/// One function, for DESCRIBE FUNCTION.
pub fn describe(name: &str) -> Option<FunctionInfo> {
    all_functions()
        .into_iter()
        .find(|f| f.name.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod counts {
    use super::*;

    /// The counts: at least 110 of ksqlDB's documented scalar functions, its 16
    /// documented aggregates, and both table functions, all in SHOW FUNCTIONS' registry
    /// (GREATEST and LEAST, ARRAY and MAP are the analyzer's own forms: they are
    /// checked by planning a call).
    #[test]
    fn the_function_counts_are_met() {
        let all = all_functions();
        let has = |name: &str, kind: &str| all.iter().any(|f| f.name == name && f.kind == kind);
        let special = ["GREATEST", "LEAST", "ARRAY", "MAP"];
        let scalars: Vec<&str> = KSQLDB_FUNCTIONS
            .iter()
            .copied()
            .filter(|n| !TABLE_FUNCTION_NAMES.contains(n))
            .collect();
        let missing: Vec<&str> = scalars
            .iter()
            .copied()
            .filter(|n| !has(n, "SCALAR") && !special.contains(n))
            .collect();
        let supported = scalars.len() - missing.len();
        assert!(
            supported >= 110,
            "{supported} of {} documented scalar functions; missing {missing:?}",
            scalars.len()
        );
        let sql =
            "SELECT k, GREATEST(a, 2), LEAST(a, 1), ARRAY[a], MAP('x' := a) FROM s EMIT CHANGES;";
        let stmt = &crate::parse_statements(&format!(
            "CREATE STREAM s (k STRING KEY, a INT) WITH (kafka_topic='s', value_format='JSON'); {sql}"
        ))
        .unwrap();
        let mut catalog = std::collections::BTreeMap::new();
        let crate::Planned::CreateSource { source, .. } =
            crate::plan_statement(&stmt[0], &catalog, &crate::PlannerConfig::default()).unwrap()
        else {
            panic!("a source")
        };
        catalog.insert(source.name.clone(), source);
        crate::plan_statement(&stmt[1], &catalog, &crate::PlannerConfig::default()).unwrap();
        let aggregates = all.iter().filter(|f| f.kind == "AGGREGATE").count();
        assert!(aggregates >= 16, "{aggregates} aggregates");
        assert!(has("EXPLODE", "TABLE") && has("CUBE_EXPLODE", "TABLE"));
    }
}
