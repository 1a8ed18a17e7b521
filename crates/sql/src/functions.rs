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
}

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

/// Every scalar function the engine runs.
pub fn scalar_functions() -> Vec<FunctionDef> {
    use SqlType::*;
    let doubles = DOUBLE_FUNCTIONS
        .iter()
        .map(|(name, description)| FunctionDef {
            name,
            description,
            signatures: vec![exact(&[Double], Double)],
        });
    doubles.chain(vec![
        FunctionDef {
            name: "UCASE",
            description: "Converts a string to upper case.",
            signatures: vec![exact(&[String], String)],
        },
        FunctionDef {
            name: "LCASE",
            description: "Converts a string to lower case.",
            signatures: vec![exact(&[String], String)],
        },
        FunctionDef {
            name: "LEN",
            description: "The length of a string in characters.",
            signatures: vec![exact(&[String], Integer)],
        },
        FunctionDef {
            name: "TRIM",
            description: "Removes leading and trailing whitespace.",
            signatures: vec![exact(&[String], String)],
        },
        FunctionDef {
            name: "CONCAT",
            description: "Concatenates strings; NULL arguments are skipped.",
            signatures: vec![Signature {
                params: Params::Variadic { ty: String, min: 1 },
                returns: String,
            }],
        },
        FunctionDef {
            name: "SUBSTRING",
            description: "The part of a string from a 1-based position (negative counts from the end), optionally of a given length.",
            signatures: vec![
                exact(&[String, Integer], String),
                exact(&[String, Integer, Integer], String),
            ],
        },
        FunctionDef {
            name: "ROUND",
            description: "Rounds half up: to a BIGINT, or to a number of decimal places (negative: tens, hundreds, ...).",
            signatures: vec![
                exact(&[Integer], Integer),
                exact(&[Bigint], Bigint),
                exact(&[Double], Bigint),
                exact(&[Double, Integer], Double),
            ],
        },
        FunctionDef {
            name: "ATAN2",
            description: "The angle of the point (x, y), in radians: ATAN2(y, x).",
            signatures: vec![exact(&[Double, Double], Double)],
        },
        FunctionDef {
            name: "POWER",
            description: "The first argument raised to the power of the second.",
            signatures: vec![exact(&[Double, Double], Double)],
        },
        FunctionDef {
            name: "PI",
            description: "The number pi.",
            signatures: vec![exact(&[], Double)],
        },
        FunctionDef {
            name: "ABS",
            description: "The absolute value of a number.",
            signatures: vec![
                exact(&[Integer], Integer),
                exact(&[Bigint], Bigint),
                exact(&[Double], Double),
            ],
        },
    ])
    .collect()
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
        match self.params {
            Params::Exact(params) => {
                params.len() == args.len() && params.iter().zip(args).all(|(p, a)| a.widens_to(p))
            }
            Params::Variadic { ref ty, min } => {
                args.len() >= min && args.iter().all(|a| a.widens_to(ty))
            }
        }
    }

    /// The parameter type of argument `i`.
    pub fn param(&self, i: usize) -> SqlType {
        match self.params {
            Params::Exact(params) => params[i].clone(),
            Params::Variadic { ref ty, .. } => ty.clone(),
        }
    }
}
