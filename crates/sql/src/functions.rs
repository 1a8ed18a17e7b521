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

/// Every scalar function the engine runs.
pub fn scalar_functions() -> Vec<FunctionDef> {
    use SqlType::*;
    vec![
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
            name: "ABS",
            description: "The absolute value of a number.",
            signatures: vec![
                exact(&[Integer], Integer),
                exact(&[Bigint], Bigint),
                exact(&[Double], Double),
            ],
        },
    ]
}

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
