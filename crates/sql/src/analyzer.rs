//! Resolves and type-checks expressions against the columns in scope, producing the
//! plan's expressions with ksqlDB's implicit casts made explicit.

use crate::ast::{self, ExprKind, LiteralValue, UnaryOp};
use crate::error::{Pos, SqlError, closest};
use crate::functions;
use sluice_plan::{BinaryOp, Expr, Literal, SqlType};

/// A column that expressions may reference.
#[derive(Clone, Debug)]
pub struct ScopeColumn {
    /// The column's name in the rows the expression reads.
    pub name: String,
    pub ty: SqlType,
    /// In a join: the source (its alias) the column comes from and its name there, so
    /// that `L.A` and an unambiguous `A` find the joined row's column `L_A`.
    pub origin: Option<(String, String)>,
}

/// The columns visible to an expression, and the names its source may be qualified with.
#[derive(Clone, Debug)]
pub struct Scope {
    pub qualifiers: Vec<String>,
    pub columns: Vec<ScopeColumn>,
}

/// What a column reference found in a scope.
enum Found<'a> {
    One(&'a ScopeColumn),
    None,
    /// An unqualified name that more than one joined source has: their `Q.NAME`s.
    Ambiguous(Vec<String>),
}

impl Scope {
    fn find(&self, qualifier: Option<&str>, name: &str) -> Found<'_> {
        if let Some(q) = qualifier
            && let Some(c) = self
                .columns
                .iter()
                .find(|c| c.origin.as_ref().is_some_and(|(s, f)| s == q && f == name))
        {
            return Found::One(c);
        }
        // Columns of no particular source (a single source's, or a join's own ROWTIME
        // and key) come first.
        if let Some(c) = self
            .columns
            .iter()
            .find(|c| c.origin.is_none() && c.name == name)
        {
            return Found::One(c);
        }
        if qualifier.is_some() {
            return Found::None;
        }
        let matches: Vec<&ScopeColumn> = self
            .columns
            .iter()
            .filter(|c| c.origin.as_ref().is_some_and(|(_, f)| f == name))
            .collect();
        match matches.as_slice() {
            [] => Found::None,
            [one] => Found::One(one),
            many => Found::Ambiguous(
                many.iter()
                    .filter_map(|c| c.origin.as_ref())
                    .map(|(s, f)| format!("{s}.{f}"))
                    .collect(),
            ),
        }
    }
}

/// Which clause an expression is in, for error messages ("WHERE column ...").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clause {
    Select,
    Where,
    JoinOn,
}

impl Clause {
    fn name(self) -> &'static str {
        match self {
            Clause::Select => "SELECT",
            Clause::Where => "WHERE",
            Clause::JoinOn => "JOIN ON",
        }
    }
}

pub struct ExprAnalyzer<'a> {
    pub scope: &'a Scope,
    pub clause: Clause,
}

/// A typed plan expression.
pub type Typed = (Expr, SqlType);

/// The type of an untyped NULL literal until context gives it one.
fn null_type() -> SqlType {
    SqlType::String
}

/// Reads a string literal as a value of `target`, as ksqlDB coerces literals: numbers
/// through their decimal value (so '4.000' is the INTEGER 4 and '2e1' is 20).
fn coerce_string_literal(target: &SqlType, s: &str) -> Result<Literal, String> {
    let bad = || format!("invalid input syntax for type {target}: \"{s}\".");
    let t = s.trim();
    let integral = || -> Result<i64, String> {
        if let Ok(v) = t.parse::<i64>() {
            return Ok(v);
        }
        let f: f64 = t.parse().map_err(|_| bad())?;
        if f.fract() == 0.0 && f.abs() < 9.2e18 {
            Ok(f as i64)
        } else {
            Err(bad())
        }
    };
    Ok(match target {
        // ksqlDB reads any prefix of true/yes and false/no, in any case.
        SqlType::Boolean => {
            let v = t.to_ascii_lowercase();
            let prefix_of = |word: &str| !v.is_empty() && word.starts_with(&v);
            if prefix_of("true") || prefix_of("yes") {
                Literal::Boolean(true)
            } else if prefix_of("false") || prefix_of("no") {
                Literal::Boolean(false)
            } else {
                return Err(bad());
            }
        }
        SqlType::Integer => match i32::try_from(integral()?) {
            Ok(v) => Literal::Integer(v),
            // Too large for INTEGER: it stays BIGINT, and the comparison widens.
            Err(_) => Literal::Bigint(integral()?),
        },
        SqlType::Bigint => Literal::Bigint(integral()?),
        SqlType::Double => Literal::Double(t.parse().map_err(|_| bad())?),
        SqlType::Decimal { .. } => number_literal(t, Pos::new(1, 1)).map_err(|_| bad())?,
        SqlType::String => Literal::String(s.to_string()),
        _ => return Err(bad()),
    })
}

/// The type values of types `a` and `b` can share: numbers widen, STRUCTs take the
/// union of their fields, ARRAYs and MAPs unify their elements.
pub fn unify(a: &SqlType, b: &SqlType) -> Option<SqlType> {
    if a == b {
        return Some(a.clone());
    }
    match (a, b) {
        (SqlType::Array(x), SqlType::Array(y)) => Some(SqlType::Array(Box::new(unify(x, y)?))),
        (SqlType::Map { key: k1, value: v1 }, SqlType::Map { key: k2, value: v2 }) => {
            Some(SqlType::Map {
                key: Box::new(unify(k1, k2)?),
                value: Box::new(unify(v1, v2)?),
            })
        }
        (SqlType::Struct(x), SqlType::Struct(y)) => {
            let mut fields = x.clone();
            for f in y {
                match fields.iter_mut().find(|g| g.name == f.name) {
                    Some(g) => g.ty = unify(&g.ty, &f.ty)?,
                    None => fields.push(f.clone()),
                }
            }
            Some(SqlType::Struct(fields))
        }
        _ => SqlType::common_numeric(a, b),
    }
}

/// Columns holding epoch milliseconds that ksqlDB compares with timestamp strings.
fn is_time_column(name: &str) -> bool {
    matches!(name, "ROWTIME" | "WINDOWSTART" | "WINDOWEND")
}

fn is_temporal(t: &SqlType) -> bool {
    matches!(t, SqlType::Date | SqlType::Time | SqlType::Timestamp)
}

fn is_null_literal(e: &ast::Expr) -> bool {
    matches!(e.kind, ExprKind::Literal(LiteralValue::Null))
}

fn comparison_name(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Eq => "EQUAL",
        BinaryOp::NotEq => "NOT_EQUAL",
        BinaryOp::Lt => "LESS_THAN",
        BinaryOp::LtEq => "LESS_THAN_OR_EQUAL",
        BinaryOp::Gt => "GREATER_THAN",
        BinaryOp::GtEq => "GREATER_THAN_OR_EQUAL",
        BinaryOp::IsDistinctFrom => "IS_DISTINCT_FROM",
        BinaryOp::IsNotDistinctFrom => "IS_NOT_DISTINCT_FROM",
        _ => "COMPARE",
    }
}

/// Wraps `e` in a cast unless it already has type `to`.
pub fn cast_to(e: Typed, to: &SqlType) -> Expr {
    if &e.1 == to {
        return e.0;
    }
    // Literals widen now rather than on every row.
    match (&e.0, to) {
        (Expr::Literal(Literal::Null(_)), _) => return Expr::Literal(Literal::Null(to.clone())),
        (Expr::Literal(Literal::Integer(v)), SqlType::Bigint) => {
            return Expr::Literal(Literal::Bigint(*v as i64));
        }
        (Expr::Literal(Literal::Integer(v)), SqlType::Double) => {
            return Expr::Literal(Literal::Double(*v as f64));
        }
        (Expr::Literal(Literal::Bigint(v)), SqlType::Double) => {
            return Expr::Literal(Literal::Double(*v as f64));
        }
        _ => {}
    }
    Expr::Cast {
        expr: Box::new(e.0),
        to: to.clone(),
    }
}

/// Whether a literal that rounds to the largest DOUBLE is in fact above it (its first
/// 17 significant digits, those of `f64::MAX`, are larger).
fn beyond_double_max(text: &str) -> bool {
    let mantissa = text.split(['e', 'E']).next().unwrap_or_default();
    let digits: String = mantissa
        .chars()
        .filter(char::is_ascii_digit)
        .skip_while(|c| *c == '0')
        .chain(std::iter::repeat('0'))
        .take(17)
        .collect();
    digits.as_str() > "17976931348623157"
}

/// The type of a number literal as ksqlDB types it: INT if it fits, else BIGINT; with a
/// point, DECIMAL of its digits; with an exponent, DOUBLE.
pub fn number_literal(text: &str, pos: Pos) -> Result<Literal, SqlError> {
    let bad = || SqlError::syntax(pos, format!("Syntax Error: invalid number {text}"));
    if text.contains(['e', 'E']) {
        let v = text.parse::<f64>().map_err(|_| bad())?;
        if v.is_infinite() || (v.abs() == f64::MAX && beyond_double_max(text)) {
            return Err(SqlError::semantic(
                pos,
                format!("Number overflows DOUBLE: {text}"),
            ));
        }
        return Ok(Literal::Double(v));
    }
    if let Some((int, frac)) = text.split_once('.') {
        let negative = int.starts_with('-');
        let int_digits = int.trim_start_matches('-').trim_start_matches('0');
        let digits = format!("{int_digits}{frac}");
        let unscaled: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| bad())?
        };
        let scale = frac.len();
        let precision = (int_digits.len() + scale).max(scale).max(1);
        if precision > 38 {
            return text.parse::<f64>().map(Literal::Double).map_err(|_| bad());
        }
        return Ok(Literal::Decimal {
            unscaled: if negative { -unscaled } else { unscaled },
            precision: precision as u8,
            scale: scale as u8,
        });
    }
    if let Ok(v) = text.parse::<i32>() {
        return Ok(Literal::Integer(v));
    }
    if let Ok(v) = text.parse::<i64>() {
        return Ok(Literal::Bigint(v));
    }
    Err(SqlError::semantic(
        pos,
        format!("Invalid numeric literal: {text}"),
    ))
}

impl ExprAnalyzer<'_> {
    pub fn analyze(&self, e: &ast::Expr) -> Result<Typed, SqlError> {
        match &e.kind {
            ExprKind::Column { qualifier, name } => self.column(qualifier.as_deref(), name, e.pos),
            ExprKind::Literal(l) => {
                let lit = match l {
                    LiteralValue::Null => Literal::Null(null_type()),
                    LiteralValue::Boolean(b) => Literal::Boolean(*b),
                    LiteralValue::String(s) => Literal::String(s.clone()),
                    LiteralValue::Number(n) => number_literal(n, e.pos)?,
                };
                let ty = lit.sql_type();
                Ok((Expr::Literal(lit), ty))
            }
            ExprKind::Binary { op, left, right } => self.binary(*op, left, right, e),
            ExprKind::Unary { op, expr } => {
                let (inner, ty) = self.analyze(expr)?;
                match op {
                    UnaryOp::Not => {
                        self.expect_boolean(&ty, expr)?;
                        Ok((Expr::Not(Box::new(inner)), SqlType::Boolean))
                    }
                    UnaryOp::Minus | UnaryOp::Plus => {
                        if !ty.is_numeric() {
                            return Err(SqlError::semantic(
                                e.pos,
                                format!(
                                    "Unary {} requires a numeric operand, got {ty}: {expr}",
                                    if *op == UnaryOp::Minus {
                                        "minus"
                                    } else {
                                        "plus"
                                    }
                                ),
                            ));
                        }
                        if *op == UnaryOp::Plus {
                            return Ok((inner, ty));
                        }
                        Ok((Expr::Negate(Box::new(inner)), ty))
                    }
                }
            }
            ExprKind::IsNull { expr, negated } => {
                let (inner, _) = self.analyze(expr)?;
                Ok((
                    Expr::IsNull {
                        expr: Box::new(inner),
                        negated: *negated,
                    },
                    SqlType::Boolean,
                ))
            }
            ExprKind::Between {
                expr,
                low,
                high,
                negated,
            } => {
                let ge = ast::Expr::new(
                    ExprKind::Binary {
                        op: BinaryOp::GtEq,
                        left: expr.clone(),
                        right: low.clone(),
                    },
                    e.pos,
                );
                let le = ast::Expr::new(
                    ExprKind::Binary {
                        op: BinaryOp::LtEq,
                        left: expr.clone(),
                        right: high.clone(),
                    },
                    e.pos,
                );
                let (ge, _) = self.analyze(&ge)?;
                let (le, _) = self.analyze(&le)?;
                let both = Expr::Binary {
                    op: BinaryOp::And,
                    left: Box::new(ge),
                    right: Box::new(le),
                };
                Ok((
                    if *negated {
                        Expr::Not(Box::new(both))
                    } else {
                        both
                    },
                    SqlType::Boolean,
                ))
            }
            ExprKind::InList {
                expr,
                list,
                negated,
            } => {
                let value = self.analyze(expr)?;
                let mut common = value.1.clone();
                let mut items = Vec::with_capacity(list.len());
                for item in list {
                    // Each item is checked against what the value and the items before
                    // it unify to, as ksqlDB checks them.
                    let t = self.in_list_item(&common, item)?;
                    if !is_null_literal(item) {
                        common = self.common_type(&common, &t.1).unwrap_or(common);
                    }
                    items.push(t);
                }
                let list = items.into_iter().map(|t| cast_to(t, &common)).collect();
                Ok((
                    Expr::InList {
                        expr: Box::new(cast_to(value, &common)),
                        list,
                        negated: *negated,
                    },
                    SqlType::Boolean,
                ))
            }
            ExprKind::Like {
                expr,
                pattern,
                escape,
                negated,
            } => {
                let value = self.analyze(expr)?;
                let pat = self.analyze(pattern)?;
                for (t, src) in [(&value.1, expr), (&pat.1, pattern)] {
                    if *t != SqlType::String {
                        return Err(SqlError::semantic(
                            src.pos,
                            format!(
                                "The column type for Like condition must be VARCHAR. The column type is {t}"
                            ),
                        ));
                    }
                }
                let escape = match escape {
                    None => None,
                    Some(s) if s.chars().count() == 1 => s.chars().next(),
                    Some(s) => {
                        return Err(SqlError::semantic(
                            e.pos,
                            format!("Escape character must be a single character: '{s}'"),
                        ));
                    }
                };
                Ok((
                    Expr::Like {
                        expr: Box::new(value.0),
                        pattern: Box::new(pat.0),
                        escape,
                        negated: *negated,
                    },
                    SqlType::Boolean,
                ))
            }
            ExprKind::Case {
                operand,
                whens,
                otherwise,
            } => self.case(operand.as_deref(), whens, otherwise.as_deref()),
            ExprKind::Cast { expr, to } => {
                let inner = self.analyze(expr)?;
                check_cast(&inner.1, to).map_err(|m| {
                    let m = match self.clause {
                        Clause::Select => format!("Invalid Select: {m}"),
                        _ => m,
                    };
                    SqlError::semantic(e.pos, m)
                })?;
                Ok((cast_to(inner, to), to.clone()))
            }
            ExprKind::Call { name, args, star } => self.call(name, args, *star, e),
            ExprKind::Subscript { expr, index } => self.subscript(expr, index, e),
            ExprKind::Dereference { expr, field } => {
                let (base, ty) = self.analyze(expr)?;
                let SqlType::Struct(fields) = &ty else {
                    return Err(SqlError::semantic(
                        e.pos,
                        format!("Expected STRUCT type, got: {ty} for expression {expr}"),
                    ));
                };
                let Some(f) = fields.iter().find(|f| f.name == *field) else {
                    return Err(SqlError::semantic(
                        e.pos,
                        format!("Could not find field '{field}' in '{expr}'."),
                    ));
                };
                Ok((
                    Expr::Field {
                        expr: Box::new(base),
                        name: f.name.clone(),
                    },
                    f.ty.clone(),
                ))
            }
            ExprKind::Array(_) | ExprKind::Map(_) | ExprKind::Struct(_) => {
                self.analyze_expected(e, None)
            }
            ExprKind::Lambda { .. } => Err(SqlError::unsupported(
                e.pos,
                format!("Lambda expressions are not supported yet: {e}"),
            )),
        }
    }

    /// Analyzes `e` where a value of type `expected` is wanted: string literals (also
    /// inside ARRAY, MAP and STRUCT constructors) are read as that type, as ksqlDB does.
    fn analyze_expected(
        &self,
        e: &ast::Expr,
        expected: Option<&SqlType>,
    ) -> Result<Typed, SqlError> {
        match (&e.kind, expected) {
            (ExprKind::Literal(LiteralValue::String(text)), Some(t))
                if t.is_primitive() && *t != SqlType::String =>
            {
                let lit =
                    coerce_string_literal(t, text).map_err(|m| SqlError::semantic(e.pos, m))?;
                let ty = lit.sql_type();
                Ok((cast_to((Expr::Literal(lit), ty), t), t.clone()))
            }
            (ExprKind::Array(items), _) => self.make_array(
                items,
                match expected {
                    Some(SqlType::Array(item)) => Some(item),
                    _ => None,
                },
            ),
            (ExprKind::Map(entries), _) => self.make_map(
                entries,
                match expected {
                    Some(SqlType::Map { value, .. }) => Some(value),
                    _ => None,
                },
            ),
            (ExprKind::Struct(fields), _) => {
                let wanted = match expected {
                    Some(SqlType::Struct(f)) => f.as_slice(),
                    _ => &[],
                };
                let mut typed = Vec::with_capacity(fields.len());
                let mut types = Vec::with_capacity(fields.len());
                for (name, value) in fields {
                    let want = wanted.iter().find(|f| f.name == *name).map(|f| &f.ty);
                    if is_null_literal(value) {
                        return Err(SqlError::semantic(
                            value.pos,
                            format!(
                                "Can't infer a type of null. Please explicitly cast it to a required type, e.g. CAST(null AS VARCHAR). Field: {name}"
                            ),
                        ));
                    }
                    let (v, ty) = self.analyze_expected(value, want)?;
                    types.push(sluice_plan::StructField {
                        name: name.clone(),
                        ty,
                    });
                    typed.push((name.clone(), v));
                }
                let ty = SqlType::Struct(types);
                Ok((
                    Expr::MakeStruct {
                        fields: typed,
                        ty: ty.clone(),
                    },
                    ty,
                ))
            }
            _ => self.analyze(e),
        }
    }

    /// `base[index]`: an ARRAY's element by an INTEGER index, or a MAP's value by key.
    fn subscript(
        &self,
        base: &ast::Expr,
        index: &ast::Expr,
        whole: &ast::Expr,
    ) -> Result<Typed, SqlError> {
        let (b, ty) = self.analyze(base)?;
        let (key_type, result) = match &ty {
            SqlType::Array(item) => (SqlType::Integer, (**item).clone()),
            SqlType::Map { key, value } => ((**key).clone(), (**value).clone()),
            other => {
                return Err(SqlError::semantic(
                    whole.pos,
                    format!("Subscript expression ({whole}) do not apply to {other}."),
                ));
            }
        };
        let (i, ity) = self.analyze(index)?;
        let i = if is_null_literal(index) {
            Expr::Literal(Literal::Null(key_type.clone()))
        } else if ity == key_type || (key_type == SqlType::Integer && ity == SqlType::Bigint) {
            cast_to((i, ity), &key_type)
        } else {
            return Err(SqlError::semantic(
                index.pos,
                format!("Subscript index of {ty} must be of type {key_type}, got {ity}: {index}"),
            ));
        };
        Ok((
            Expr::Subscript {
                expr: Box::new(b),
                index: Box::new(i),
            },
            result,
        ))
    }

    /// Types values that must share one type (ARRAY items, MAP keys or values): the
    /// common type of the non-literal values and literals, with string literals read as
    /// that type; NULLs take it too. `None` when every value is NULL.
    fn unify_values(
        &self,
        values: &[&ast::Expr],
        expected: Option<&SqlType>,
    ) -> Result<Option<(SqlType, Vec<Expr>)>, SqlError> {
        let typed: Vec<Typed> = values
            .iter()
            .map(|v| self.analyze_expected(v, expected))
            .collect::<Result<_, _>>()?;
        let is_string_literal =
            |e: &ast::Expr| matches!(e.kind, ExprKind::Literal(LiteralValue::String(_)));
        let is_number_literal =
            |e: &ast::Expr| matches!(e.kind, ExprKind::Literal(LiteralValue::Number(_)));
        // The values that are not literals decide the type...
        let mut target: Option<SqlType> = None;
        for (v, (_, ty)) in values.iter().zip(&typed) {
            if matches!(v.kind, ExprKind::Literal(_)) {
                continue;
            }
            target = Some(match target {
                None => ty.clone(),
                Some(t) => unify(&t, ty).ok_or_else(|| {
                    SqlError::semantic(v.pos, format!("operator does not exist: {t} = {ty} ({v})"))
                })?,
            });
        }
        // ...number literals widen a numeric type (or are written as text in a STRING)...
        for (v, (_, ty)) in values.iter().zip(&typed) {
            if !is_number_literal(v)
                && !matches!(v.kind, ExprKind::Literal(LiteralValue::Boolean(_)))
            {
                continue;
            }
            target = Some(match target {
                None => ty.clone(),
                Some(SqlType::String) => SqlType::String,
                Some(t) => unify(&t, ty).ok_or_else(|| {
                    SqlError::semantic(v.pos, format!("operator does not exist: {t} = {ty} ({v})"))
                })?,
            });
        }
        // ...and with string literals only: the wanted type, else STRING.
        if target.is_none() && values.iter().any(|v| is_string_literal(v)) {
            target = Some(expected.cloned().unwrap_or(SqlType::String));
        }
        let Some(target) = target else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(values.len());
        for (v, t) in values.iter().zip(typed) {
            out.push(match &v.kind {
                ExprKind::Literal(LiteralValue::Null) => {
                    Expr::Literal(Literal::Null(target.clone()))
                }
                ExprKind::Literal(LiteralValue::String(s)) if target != SqlType::String => {
                    let lit = coerce_string_literal(&target, s)
                        .map_err(|m| SqlError::semantic(v.pos, m))?;
                    let ty = lit.sql_type();
                    cast_to((Expr::Literal(lit), ty), &target)
                }
                _ => cast_to(t, &target),
            });
        }
        Ok(Some((target, out)))
    }

    fn make_array(
        &self,
        items: &[ast::Expr],
        expected: Option<&SqlType>,
    ) -> Result<Typed, SqlError> {
        if items.is_empty() {
            return Err(SqlError::semantic(
                None,
                "Array constructor cannot be empty. Please supply at least one element (see https://github.com/confluentinc/ksql/issues/4239).",
            ));
        }
        let refs: Vec<&ast::Expr> = items.iter().collect();
        let Some((item, typed)) = self.unify_values(&refs, expected)? else {
            return Err(SqlError::semantic(
                None,
                "Cannot construct an array with all NULL elements (see https://github.com/confluentinc/ksql/issues/4239). As a workaround, you may cast a NULL value to the desired type.",
            ));
        };
        let ty = SqlType::Array(Box::new(item));
        Ok((
            Expr::MakeArray {
                items: typed,
                ty: ty.clone(),
            },
            ty,
        ))
    }

    /// `MAP(k := v, ...)`: keys are STRINGs (others are cast, as ksqlDB does).
    fn make_map(
        &self,
        entries: &[(ast::Expr, ast::Expr)],
        expected: Option<&SqlType>,
    ) -> Result<Typed, SqlError> {
        if entries.is_empty() {
            return Err(SqlError::semantic(
                None,
                "Map constructor cannot be empty. Please supply at least one key value pair (see https://github.com/confluentinc/ksql/issues/4239).",
            ));
        }
        let values: Vec<&ast::Expr> = entries.iter().map(|(_, v)| v).collect();
        let Some((value, typed_values)) = self.unify_values(&values, expected)? else {
            return Err(SqlError::semantic(
                None,
                "Cannot construct a map with all NULL values (see https://github.com/confluentinc/ksql/issues/4239). As a workaround, you may cast a NULL value to the desired type.",
            ));
        };
        let keys: Vec<&ast::Expr> = entries.iter().map(|(k, _)| k).collect();
        // Keys: STRING unless they say otherwise (all NULL keys are STRING NULLs).
        let (key, typed_keys) = match self.unify_values(&keys, None)? {
            Some(k) => k,
            None => (
                SqlType::String,
                keys.iter()
                    .map(|_| Expr::Literal(Literal::Null(SqlType::String)))
                    .collect(),
            ),
        };
        if !key.is_primitive() {
            return Err(SqlError::semantic(
                None,
                format!("MAP keys must be of a primitive type, got {key}"),
            ));
        }
        let out: Vec<(Expr, Expr)> = typed_keys.into_iter().zip(typed_values).collect();
        let ty = SqlType::Map {
            key: Box::new(key),
            value: Box::new(value),
        };
        Ok((
            Expr::MakeMap {
                entries: out,
                ty: ty.clone(),
            },
            ty,
        ))
    }

    /// An item of `x IN (...)`: of x's type, a numeric type x widens with, or a string
    /// literal that reads as a value of x's type.
    fn in_list_item(&self, target: &SqlType, item: &ast::Expr) -> Result<Typed, SqlError> {
        let t = if target.is_primitive() {
            self.analyze(item)?
        } else {
            self.analyze_expected(item, Some(target))
                .map_err(|e| match e {
                    SqlError::Semantic { pos, message, hint }
                        if message.starts_with("invalid input syntax") =>
                    {
                        SqlError::Semantic {
                            pos,
                            message: format!("Invalid Predicate: {message}"),
                            hint,
                        }
                    }
                    other => other,
                })?
        };
        if is_null_literal(item) || self.common_type(target, &t.1).is_some() {
            return Ok(t);
        }
        // A number written in the list of a STRING is read as its text.
        if *target == SqlType::String
            && let ExprKind::Literal(LiteralValue::Number(n)) = &item.kind
        {
            return Ok((
                Expr::Literal(sluice_plan::Literal::String(n.clone())),
                SqlType::String,
            ));
        }
        if let ExprKind::Literal(LiteralValue::String(s)) = &item.kind
            && target.is_primitive()
        {
            if !matches!(
                target,
                SqlType::Boolean
                    | SqlType::Integer
                    | SqlType::Bigint
                    | SqlType::Double
                    | SqlType::Decimal { .. }
            ) {
                return Ok(t);
            }
            let lit = coerce_string_literal(target, s)
                .map_err(|m| SqlError::semantic(item.pos, format!("Invalid Predicate: {m}")))?;
            let ty = lit.sql_type();
            return Ok((Expr::Literal(lit), ty));
        }
        Err(SqlError::semantic(
            item.pos,
            format!(
                "Invalid Predicate: operator does not exist: {target} = {} ({item})\nHint: You might need to add explicit type casts.",
                t.1
            ),
        ))
    }

    /// GREATEST / LEAST: arguments of one comparable type (literals may widen to it);
    /// NULLs are ignored.
    fn extremum(
        &self,
        name: &str,
        args: &[ast::Expr],
        whole: &ast::Expr,
    ) -> Result<Typed, SqlError> {
        let typed: Vec<Typed> = args
            .iter()
            .map(|a| self.analyze(a))
            .collect::<Result<_, _>>()?;
        let shown = {
            let t: Vec<String> = typed.iter().map(|t| t.1.to_string()).collect();
            t.join(", ")
        };
        if typed.is_empty() {
            return Err(SqlError::semantic(
                whole.pos,
                format!(
                    "Function '{}' does not accept parameters ().",
                    name.to_ascii_lowercase()
                ),
            ));
        }
        let is_literal = |e: &ast::Expr| matches!(e.kind, ExprKind::Literal(_));
        let lower = name.to_ascii_lowercase();
        if args.iter().all(is_null_literal) {
            let nulls = vec!["null"; args.len()].join(", ");
            return Err(SqlError::semantic(
                whole.pos,
                format!(
                    "Function '{lower}' cannot be resolved due to ambiguous method parameters ({nulls})."
                ),
            ));
        }
        let refuse = || {
            SqlError::semantic(
                whole.pos,
                format!("Function '{lower}' does not accept parameters ({shown})."),
            )
        };
        let ambiguous = || {
            SqlError::semantic(
                whole.pos,
                format!(
                    "Function '{lower}' cannot be resolved due to ambiguous method parameters ({shown})."
                ),
            )
        };
        let temporal =
            |t: &SqlType| matches!(t, SqlType::Date | SqlType::Time | SqlType::Timestamp);
        // The columns decide the type; decimals widen to a common decimal.
        let mut ty: Option<SqlType> = None;
        for (a, t) in args.iter().zip(&typed) {
            if is_literal(a) {
                continue;
            }
            ty = Some(match ty {
                None => t.1.clone(),
                Some(prev) if prev == t.1 => prev,
                Some(prev @ SqlType::Decimal { .. }) if matches!(t.1, SqlType::Decimal { .. }) => {
                    SqlType::common_numeric(&prev, &t.1).unwrap_or(prev)
                }
                Some(prev) if prev.is_numeric() && t.1.is_numeric() => return Err(ambiguous()),
                Some(_) => return Err(refuse()),
            });
        }
        let ty = match ty {
            Some(t) => t,
            None => typed
                .iter()
                .zip(args)
                .filter(|(_, a)| !is_null_literal(a))
                .map(|(t, _)| t.1.clone())
                .reduce(|a, b| self.common_type(&a, &b).unwrap_or(a))
                .unwrap_or(SqlType::String),
        };
        if !ty.is_primitive() || ty == SqlType::Boolean {
            return Err(refuse());
        }
        let mut out = Vec::with_capacity(typed.len());
        for (t, a) in typed.into_iter().zip(args) {
            let fits = is_null_literal(a)
                || t.1 == ty
                || t.1.widens_to(&ty)
                || (t.1 == SqlType::String && temporal(&ty) && is_literal(a));
            if !fits {
                return Err(if t.1.is_numeric() && ty.is_numeric() {
                    ambiguous()
                } else {
                    refuse()
                });
            }
            out.push(cast_to(t, &ty));
        }
        Ok((
            Expr::Call {
                function: name.to_string(),
                args: out,
                return_type: ty.clone(),
            },
            ty,
        ))
    }

    fn column(&self, qualifier: Option<&str>, name: &str, pos: Pos) -> Result<Typed, SqlError> {
        if let Some(q) = qualifier
            && !self.scope.qualifiers.iter().any(|s| s == q)
        {
            return Err(SqlError::semantic(
                pos,
                format!(
                    "Failed to prepare statement: '{q}' is not a valid stream/table name or alias."
                ),
            ));
        }
        match self.scope.find(qualifier, name) {
            Found::One(c) => Ok((Expr::Column(c.name.clone()), c.ty.clone())),
            Found::Ambiguous(candidates) => {
                let (last, init) = candidates.split_last().expect("two or more");
                Err(SqlError::semantic(
                    pos,
                    format!(
                        "Column '{name}' is ambiguous. Could be {} or {last}.",
                        init.join(", ")
                    ),
                ))
            }
            Found::None => {
                let shown = match qualifier {
                    Some(q) => format!("{q}.{name}"),
                    None => name.to_string(),
                };
                let err = SqlError::semantic(
                    pos,
                    format!(
                        "{} column '{shown}' cannot be resolved.",
                        self.clause.name()
                    ),
                );
                Err(
                    match closest(name, self.scope.columns.iter().map(|c| c.name.as_str())) {
                        Some(c) => err.with_hint(format!("Did you mean {c}?")),
                        None => err,
                    },
                )
            }
        }
    }

    /// An operand as ksqlDB shows it in messages: a joined source's column by its name
    /// in the joined row (`I1_BAR`), anything else as written.
    fn shown(&self, e: &ast::Expr, resolved: &Expr) -> String {
        match (&e.kind, resolved) {
            (ExprKind::Column { .. }, Expr::Column(c))
                if self
                    .scope
                    .columns
                    .iter()
                    .any(|s| s.name == *c && s.origin.is_some()) =>
            {
                c.clone()
            }
            _ => e.to_string(),
        }
    }

    fn expect_boolean(&self, ty: &SqlType, e: &ast::Expr) -> Result<(), SqlError> {
        if *ty != SqlType::Boolean && !is_null_literal(e) {
            return Err(SqlError::semantic(
                e.pos,
                format!("Type mismatch: expected BOOLEAN but {e} is {ty}"),
            ));
        }
        Ok(())
    }

    /// The type two values compared or combined widen to.
    fn common_type(&self, a: &SqlType, b: &SqlType) -> Option<SqlType> {
        if a == b {
            return Some(a.clone());
        }
        if !a.is_primitive() && !b.is_primitive() {
            return unify(a, b);
        }
        SqlType::common_numeric(a, b)
    }

    fn binary(
        &self,
        op: BinaryOp,
        left: &ast::Expr,
        right: &ast::Expr,
        whole: &ast::Expr,
    ) -> Result<Typed, SqlError> {
        if is_null_literal(left) && is_null_literal(right) && op.is_plain_comparison() {
            return Err(SqlError::semantic(
                whole.pos,
                format!(
                    "Comparison with NULL not supported: NULL {} NULL",
                    op.symbol()
                ),
            ));
        }
        let mut l = self.analyze(left)?;
        let mut r = self.analyze(right)?;
        // An untyped NULL takes the other side's type.
        if is_null_literal(left) {
            l.1 = r.1.clone();
        }
        if is_null_literal(right) {
            r.1 = l.1.clone();
        }
        match op {
            BinaryOp::And | BinaryOp::Or => {
                self.expect_boolean(&l.1, left)?;
                self.expect_boolean(&r.1, right)?;
                Ok((
                    Expr::Binary {
                        op,
                        left: Box::new(cast_to(l, &SqlType::Boolean)),
                        right: Box::new(cast_to(r, &SqlType::Boolean)),
                    },
                    SqlType::Boolean,
                ))
            }
            BinaryOp::Concat => {
                if l.1 != SqlType::String || r.1 != SqlType::String {
                    return Err(SqlError::semantic(
                        whole.pos,
                        format!(
                            "Error processing expression: {whole}. || requires STRING operands, got {} and {}",
                            l.1, r.1
                        ),
                    ));
                }
                Ok((
                    Expr::Binary {
                        op,
                        left: Box::new(cast_to(l, &SqlType::String)),
                        right: Box::new(cast_to(r, &SqlType::String)),
                    },
                    SqlType::String,
                ))
            }
            // ksqlDB reads a string compared with ROWTIME as a timestamp.
            _ if op.is_comparison()
                && (matches!(&l.0, Expr::Column(c) if is_time_column(c))
                    || matches!(&r.0, Expr::Column(c) if is_time_column(c)))
                && (matches!(l.0, Expr::Literal(Literal::String(_)))
                    || matches!(r.0, Expr::Literal(Literal::String(_)))) =>
            {
                let millis = |e: Typed, src: &ast::Expr| -> Result<Expr, SqlError> {
                    match e.0 {
                        Expr::Literal(Literal::String(text)) => parse_timestamp(&text)
                            .map(|ms| Expr::Literal(Literal::Bigint(ms)))
                            .ok_or_else(|| {
                                SqlError::semantic(
                                    src.pos,
                                    format!("Failed to parse timestamp '{text}': use yyyy-MM-dd'T'HH:mm:ss.SSS with an optional time zone"),
                                )
                            }),
                        other => Ok(other),
                    }
                };
                Ok((
                    Expr::Binary {
                        op,
                        left: Box::new(millis(l, left)?),
                        right: Box::new(millis(r, right)?),
                    },
                    SqlType::Boolean,
                ))
            }
            // A DATE, TIME or TIMESTAMP compared with a string reads the string as one.
            _ if op.is_comparison()
                && ((is_temporal(&l.1) && r.1 == SqlType::String)
                    || (l.1 == SqlType::String && is_temporal(&r.1))) =>
            {
                let t = if is_temporal(&l.1) {
                    l.1.clone()
                } else {
                    r.1.clone()
                };
                Ok((
                    Expr::Binary {
                        op,
                        left: Box::new(cast_to(l, &t)),
                        right: Box::new(cast_to(r, &t)),
                    },
                    SqlType::Boolean,
                ))
            }
            _ if op.is_comparison() => {
                let common = self.common_type(&l.1, &r.1).filter(|t| {
                    t.is_primitive()
                        || matches!(
                            op,
                            BinaryOp::Eq
                                | BinaryOp::NotEq
                                | BinaryOp::IsDistinctFrom
                                | BinaryOp::IsNotDistinctFrom
                        )
                });
                let Some(common) = common else {
                    return Err(SqlError::semantic(
                        whole.pos,
                        format!(
                            "Cannot compare {} ({}) to {} ({}) with {}.\nStatement: {whole}",
                            self.shown(left, &l.0),
                            l.1,
                            self.shown(right, &r.0),
                            r.1,
                            comparison_name(op)
                        ),
                    ));
                };
                Ok((
                    Expr::Binary {
                        op,
                        left: Box::new(cast_to(l, &common)),
                        right: Box::new(cast_to(r, &common)),
                    },
                    SqlType::Boolean,
                ))
            }
            _ => {
                // Arithmetic with an untyped NULL has no type to work in.
                if is_null_literal(left) || is_null_literal(right) {
                    let shown = |e: &ast::Expr, t: &SqlType| {
                        if is_null_literal(e) {
                            "null".to_string()
                        } else {
                            t.to_string()
                        }
                    };
                    return Err(SqlError::semantic(
                        whole.pos,
                        format!(
                            "Error processing expression: {whole}. Arithmetic on types {} and {} are not supported.",
                            shown(left, &l.1),
                            shown(right, &r.1)
                        ),
                    ));
                }
                // Arithmetic. `+` on two strings concatenates, as in ksqlDB.
                if op == BinaryOp::Add && l.1 == SqlType::String && r.1 == SqlType::String {
                    return Ok((
                        Expr::Binary {
                            op: BinaryOp::Concat,
                            left: Box::new(l.0),
                            right: Box::new(r.0),
                        },
                        SqlType::String,
                    ));
                }
                let Some(common) = SqlType::common_numeric(&l.1, &r.1) else {
                    // ksqlDB names the base types here (DECIMAL, not DECIMAL(2, 1)).
                    let base = |t: &SqlType| {
                        let s = t.to_string();
                        s.split(['(', '<']).next().unwrap_or_default().to_string()
                    };
                    return Err(SqlError::semantic(
                        whole.pos,
                        format!(
                            "Error processing expression: {whole}. Unsupported arithmetic types. {} {}",
                            base(&l.1),
                            base(&r.1)
                        ),
                    ));
                };
                let result = match (&common, l.1.as_decimal(), r.1.as_decimal()) {
                    (SqlType::Decimal { .. }, Some((p1, s1)), Some((p2, s2))) => {
                        decimal_result(op, p1, s1, p2, s2)
                    }
                    _ => common.clone(),
                };
                let e = Expr::Binary {
                    op,
                    left: Box::new(cast_to(l, &common)),
                    right: Box::new(cast_to(r, &common)),
                };
                let e = if result != common {
                    Expr::Cast {
                        expr: Box::new(e),
                        to: result.clone(),
                    }
                } else {
                    e
                };
                Ok((e, result))
            }
        }
    }

    fn case(
        &self,
        operand: Option<&ast::Expr>,
        whens: &[(ast::Expr, ast::Expr)],
        otherwise: Option<&ast::Expr>,
    ) -> Result<Typed, SqlError> {
        let mut conditions = Vec::with_capacity(whens.len());
        for (w, _) in whens {
            let cond = match operand {
                Some(o) => ast::Expr::new(
                    ExprKind::Binary {
                        op: BinaryOp::Eq,
                        left: Box::new(o.clone()),
                        right: Box::new(w.clone()),
                    },
                    w.pos,
                ),
                None => w.clone(),
            };
            let (c, ty) = self.analyze(&cond)?;
            if ty != SqlType::Boolean && !is_null_literal(w) {
                return Err(SqlError::semantic(
                    w.pos,
                    format!("WHEN operand type should be boolean.\nType for '{w}' is {ty}"),
                ));
            }
            conditions.push(c);
        }
        let mut results = Vec::with_capacity(whens.len() + 1);
        let mut result_type: Option<SqlType> = None;
        for r in whens.iter().map(|(_, t)| t).chain(otherwise) {
            let t = self.analyze(r)?;
            if !is_null_literal(r) {
                result_type = Some(match result_type {
                    None => t.1.clone(),
                    Some(prev) => self.common_type(&prev, &t.1).ok_or_else(|| {
                        SqlError::semantic(
                            r.pos,
                            format!(
                                "Invalid Case expression. Type for all 'THEN' clauses should be the same.\nTHEN expression '{r}' has type: {}.",
                                t.1
                            ),
                        )
                    })?,
                });
            }
            results.push(t);
        }
        let Some(ty) = result_type else {
            return Err(SqlError::semantic(
                whens.first().map(|(w, _)| w.pos),
                "Invalid Case expression. All case branches have NULL type",
            ));
        };
        let mut results = results.into_iter().map(|t| cast_to(t, &ty));
        let whens = conditions
            .into_iter()
            .zip(results.by_ref())
            .collect::<Vec<_>>();
        let otherwise = otherwise.map(|_| Box::new(results.next().expect("else result")));
        Ok((
            Expr::Case {
                whens,
                otherwise,
                ty: ty.clone(),
            },
            ty,
        ))
    }

    fn call(
        &self,
        name: &str,
        args: &[ast::Expr],
        star: bool,
        whole: &ast::Expr,
    ) -> Result<Typed, SqlError> {
        // AS_VALUE copies a key column into the value: the expression itself.
        if name.eq_ignore_ascii_case("AS_VALUE") {
            return match args {
                [arg] if !star => self.analyze(arg),
                _ => Err(SqlError::semantic(
                    whole.pos,
                    "Function 'as_value' takes exactly one argument.",
                )),
            };
        }
        if name.eq_ignore_ascii_case("GREATEST") || name.eq_ignore_ascii_case("LEAST") {
            return self.extremum(&name.to_ascii_uppercase(), args, whole);
        }
        if is_aggregate(name) {
            return Err(SqlError::unsupported(
                whole.pos,
                format!("Aggregate functions are not supported yet: {name}"),
            ));
        }
        let upper = name.to_ascii_uppercase();
        if functions::LAMBDA_FUNCTIONS.contains(&upper.as_str()) {
            return self.lambda_call(&upper, args, whole);
        }
        let Some(def) = functions::lookup(name) else {
            if functions::KSQLDB_FUNCTIONS.contains(&name.to_ascii_uppercase().as_str()) {
                return Err(SqlError::unsupported(
                    whole.pos,
                    format!(
                        "The function {} is not supported yet",
                        name.to_ascii_uppercase()
                    ),
                ));
            }
            let err = SqlError::semantic(
                whole.pos,
                format!("Can't find any functions with the name '{name}'"),
            );
            let names: Vec<&str> = functions::scalar_functions()
                .iter()
                .map(|f| f.name)
                .collect();
            return Err(match closest(name, names.iter().copied()) {
                Some(c) => err.with_hint(format!("Did you mean {c}?")),
                None => err,
            });
        };
        if star {
            return Err(SqlError::semantic(
                whole.pos,
                format!("Function '{name}' does not accept *"),
            ));
        }
        let args = time_unit_argument(def.name, args);
        let typed: Vec<Typed> = args
            .iter()
            .map(|a| self.analyze(a))
            .collect::<Result<_, _>>()?;
        let kinds: Vec<Option<SqlType>> = typed
            .iter()
            .zip(args.iter())
            .map(|(t, a)| (!is_null_literal(a)).then(|| t.1.clone()))
            .collect();
        let Some((params, returns)) = def.resolve(&kinds) else {
            let shown: Vec<String> = typed.iter().map(|t| t.1.to_string()).collect();
            // ksqlDB names the function as registered when no argument was given, and
            // as written in lower case otherwise.
            let shown_name = if typed.is_empty() {
                def.name.to_string()
            } else {
                name.to_ascii_lowercase()
            };
            return Err(SqlError::semantic(
                whole.pos,
                format!(
                    "Function '{shown_name}' does not accept parameters ({}).",
                    shown.join(", ")
                ),
            ));
        };
        let args = typed
            .into_iter()
            .zip(kinds)
            .zip(&params)
            .map(|((t, kind), p)| match kind {
                None => Expr::Literal(Literal::Null(p.clone())),
                Some(_) => cast_to(t, p),
            })
            .collect();
        Ok((
            Expr::Call {
                function: def.name.to_string(),
                args,
                return_type: returns.clone(),
            },
            returns,
        ))
    }
}

/// Milliseconds since the epoch of an ISO-8601 timestamp, possibly partial (`2018`,
/// `2018-05`, `2018-05-11T10`, ...), with an optional `Z` or `+HHMM` / `+HH:MM` offset;
/// UTC when none is given.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, time) = match text.split_once('T') {
        Some((d, t)) => (d, t),
        None => (text, ""),
    };
    // The offset, if any, ends the time part.
    let (time, offset_minutes) = if let Some(t) = time.strip_suffix('Z') {
        (t, 0)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let (t, z) = time.split_at(i);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let digits: String = z[1..].chars().filter(|c| *c != ':').collect();
        if digits.len() != 4 && digits.len() != 2 {
            return None;
        }
        let hours: i64 = digits[..2].parse().ok()?;
        let minutes: i64 = if digits.len() == 4 {
            digits[2..].parse().ok()?
        } else {
            0
        };
        (t, sign * (hours * 60 + minutes))
    } else {
        (time, 0)
    };
    let mut d = date.split('-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: i64 = d.next().map_or(Some(1), |m| m.parse().ok())?;
    let day: i64 = d.next().map_or(Some(1), |x| x.parse().ok())?;
    if d.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut c = clock.split(':').filter(|p| !p.is_empty());
    let hour: i64 = c.next().map_or(Some(0), |x| x.parse().ok())?;
    let minute: i64 = c.next().map_or(Some(0), |x| x.parse().ok())?;
    let second: i64 = c.next().map_or(Some(0), |x| x.parse().ok())?;
    let millis: i64 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<3}")[..3].parse().ok()?
    };
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(((days * 24 + hour) * 60 + minute - offset_minutes) * 60_000 + second * 1000 + millis)
}

/// ksqlDB's decimal result types (those of SQL Server).
fn decimal_result(op: BinaryOp, p1: u8, s1: u8, p2: u8, s2: u8) -> SqlType {
    let (p1, s1, p2, s2) = (p1 as i32, s1 as i32, p2 as i32, s2 as i32);
    let (p, s) = match op {
        BinaryOp::Add | BinaryOp::Subtract => {
            let s = s1.max(s2);
            ((p1 - s1).max(p2 - s2) + s + 1, s)
        }
        BinaryOp::Multiply => (p1 + p2 + 1, s1 + s2),
        BinaryOp::Divide => {
            let s = 6.max(s1 + p2 + 1);
            (p1 - s1 + s2 + s, s)
        }
        _ => {
            let s = s1.max(s2);
            ((p1 - s1).min(p2 - s2) + s, s)
        }
    };
    let p = p.clamp(1, 38);
    SqlType::Decimal {
        precision: p as u8,
        scale: s.min(p) as u8,
    }
}

/// Which CASTs ksqlDB allows: to and from STRING for primitive types, between numeric
/// types, and between the date and time types.
fn check_cast(from: &SqlType, to: &SqlType) -> Result<(), String> {
    use SqlType::*;
    let castable = |a: &SqlType, b: &SqlType| check_cast(a, b).is_ok();
    let ok = from == to
        || (*to == String && *from != Bytes)
        || (*from == String && to.is_primitive() && *to != Bytes)
        || (from.is_numeric() && to.is_numeric())
        || matches!((from, to), (Timestamp, Date | Time) | (Date, Timestamp))
        || match (from, to) {
            (Array(a), Array(b)) => castable(a, b),
            (Map { key: k1, value: v1 }, Map { key: k2, value: v2 }) => {
                castable(k1, k2) && castable(v1, v2)
            }
            (Struct(a), Struct(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|(x, y)| x.name == y.name && castable(&x.ty, &y.ty))
            }
            _ => false,
        };
    if ok {
        Ok(())
    } else {
        Err(format!("Cast of {from} to {to} is not supported"))
    }
}

/// Names of ksqlDB's aggregate functions.
pub fn is_aggregate(name: &str) -> bool {
    matches!(
        name.to_ascii_uppercase().as_str(),
        "COUNT"
            | "SUM"
            | "AVG"
            | "MIN"
            | "MAX"
            | "COUNT_DISTINCT"
            | "COLLECT_LIST"
            | "COLLECT_SET"
            | "TOPK"
            | "TOPKDISTINCT"
            | "HISTOGRAM"
            | "LATEST_BY_OFFSET"
            | "EARLIEST_BY_OFFSET"
            | "CORRELATION"
            | "STDDEV_SAMP"
            | "STDDEV_SAMPLE"
            | "ATTR"
    )
}

/// The arguments of a call, with a bare time unit (`DAYS`) leading the arguments of
/// DATEADD and its kin read as the STRING of the unit's name.
fn time_unit_argument<'a>(
    function: &str,
    args: &'a [ast::Expr],
) -> std::borrow::Cow<'a, [ast::Expr]> {
    if let Some(first) = args.first()
        && functions::TIME_UNIT_FUNCTIONS.contains(&function)
        && let ExprKind::Column {
            qualifier: None,
            name,
        } = &first.kind
        && crate::parser::time_unit_ms(&name.to_ascii_uppercase()).is_some()
    {
        let mut out = args.to_vec();
        out[0] = ast::Expr::new(
            ExprKind::Literal(LiteralValue::String(name.to_ascii_uppercase())),
            first.pos,
        );
        return std::borrow::Cow::Owned(out);
    }
    std::borrow::Cow::Borrowed(args)
}

impl ExprAnalyzer<'_> {
    /// TRANSFORM, FILTER and REDUCE. Each lambda's body is typed in a scope of its own
    /// parameters; the plan carries the lambda as a STRING literal holding its parameters
    /// and typed body (JSON), and the result type as a typed NULL after the last argument,
    /// which is how the runtime learns it.
    fn lambda_call(
        &self,
        name: &str,
        args: &[ast::Expr],
        whole: &ast::Expr,
    ) -> Result<Typed, SqlError> {
        let split = args
            .iter()
            .position(|a| matches!(a.kind, ExprKind::Lambda { .. }))
            .unwrap_or(args.len());
        let (values, lambdas) = args.split_at(split);
        let typed: Vec<Typed> = values
            .iter()
            .map(|a| self.analyze(a))
            .collect::<Result<_, _>>()?;
        let types: Vec<SqlType> = typed.iter().map(|t| t.1.clone()).collect();
        let shown: Vec<String> = types
            .iter()
            .map(ToString::to_string)
            .chain(lambdas.iter().map(|_| "LAMBDA".to_string()))
            .collect();
        let refuse = || {
            SqlError::semantic(
                whole.pos,
                format!(
                    "Function '{}' does not accept parameters ({}).",
                    name.to_ascii_lowercase(),
                    shown.join(", ")
                ),
            )
        };
        if values.iter().any(is_null_literal) {
            return Err(refuse());
        }
        let params = functions::lambda_params(name, &types).ok_or_else(refuse)?;
        if params.len() != lambdas.len() {
            return Err(refuse());
        }
        let mut bodies = Vec::with_capacity(lambdas.len());
        for (lambda, param_types) in lambdas.iter().zip(&params) {
            let ExprKind::Lambda {
                params: names,
                body,
            } = &lambda.kind
            else {
                return Err(refuse());
            };
            if names.len() != param_types.len() {
                return Err(SqlError::semantic(
                    lambda.pos,
                    format!(
                        "The lambda {lambda} of {name} must take {} arguments.",
                        param_types.len()
                    ),
                ));
            }
            // The body sees its parameters and, where no parameter has their name, the
            // row's columns, which the call then passes in (captured).
            let mut columns: Vec<ScopeColumn> = names
                .iter()
                .zip(param_types)
                .map(|(n, t)| ScopeColumn {
                    name: n.clone(),
                    ty: t.clone(),
                    origin: None,
                })
                .collect();
            columns.extend(
                self.scope
                    .columns
                    .iter()
                    .filter(|c| !names.contains(&c.name))
                    .cloned(),
            );
            let scope = Scope {
                qualifiers: self.scope.qualifiers.clone(),
                columns,
            };
            let inner = ExprAnalyzer {
                scope: &scope,
                clause: self.clause,
            };
            let body = inner.analyze(body)?;
            bodies.push((names.clone(), param_types.clone(), body));
        }
        let body_types: Vec<SqlType> = bodies.iter().map(|b| b.2.1.clone()).collect();
        let returns = functions::lambda_result(name, &types, &body_types).ok_or_else(refuse)?;
        // The row's columns the bodies read: passed after the lambdas, and to each body
        // as parameters after its own.
        let mut captured: Vec<(String, SqlType)> = Vec::new();
        for (names, _, body) in &bodies {
            for c in body.0.column_refs() {
                if !names.iter().any(|n| n == c)
                    && !captured.iter().any(|(n, _)| n == c)
                    && let Some(col) = self.scope.columns.iter().find(|x| x.name == c)
                {
                    captured.push((c.to_string(), col.ty.clone()));
                }
            }
        }
        let mut out: Vec<Expr> = typed.into_iter().map(|t| t.0).collect();
        for (names, param_types, body) in bodies {
            // REDUCE's body yields the next state, of the state's type.
            let body = if name == "REDUCE" {
                cast_to(body, &returns)
            } else {
                body.0
            };
            let mut lambda: Vec<(String, SqlType)> = names.into_iter().zip(param_types).collect();
            lambda.extend(captured.iter().cloned());
            let text = serde_json::to_string(&(lambda, body))
                .map_err(|e| SqlError::semantic(whole.pos, e.to_string()))?;
            out.push(Expr::Literal(Literal::String(text)));
        }
        out.extend(captured.into_iter().map(|(n, _)| Expr::Column(n)));
        out.push(Expr::Literal(Literal::Null(returns.clone())));
        Ok((
            Expr::Call {
                function: name.to_string(),
                args: out,
                return_type: returns.clone(),
            },
            returns,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::parse_expression;

    fn scope() -> Scope {
        Scope {
            qualifiers: vec!["S".into()],
            columns: vec![
                ScopeColumn {
                    name: "I".into(),
                    ty: SqlType::Integer,
                    origin: None,
                },
                ScopeColumn {
                    name: "B".into(),
                    ty: SqlType::Bigint,
                    origin: None,
                },
                ScopeColumn {
                    name: "NAME".into(),
                    ty: SqlType::String,
                    origin: None,
                },
            ],
        }
    }

    fn analyze(sql: &str) -> Result<Typed, SqlError> {
        let s = scope();
        ExprAnalyzer {
            scope: &s,
            clause: Clause::Select,
        }
        .analyze(&parse_expression(sql).unwrap())
    }

    #[test]
    fn mixed_integers_widen() {
        let (e, t) = analyze("I + B").unwrap();
        assert_eq!(t, SqlType::Bigint);
        assert_eq!(e.to_string(), "(CAST(I AS BIGINT) + B)");
    }

    #[test]
    fn literals_are_typed_like_ksqldb() {
        assert_eq!(analyze("1").unwrap().1, SqlType::Integer);
        assert_eq!(analyze("10000000000").unwrap().1, SqlType::Bigint);
        assert_eq!(
            analyze("1.50").unwrap().1,
            SqlType::Decimal {
                precision: 3,
                scale: 2
            }
        );
        assert_eq!(analyze("1e3").unwrap().1, SqlType::Double);
    }

    #[test]
    fn bad_comparisons_name_both_sides() {
        let e = analyze("I = 'x'").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Cannot compare I (INTEGER) to 'x' (STRING) with EQUAL.\nStatement: (I = 'x')"
        );
    }

    #[test]
    fn unknown_columns_get_a_hint() {
        let e = analyze("NAEM").unwrap_err();
        assert_eq!(e.to_string(), "SELECT column 'NAEM' cannot be resolved.");
        assert_eq!(e.hint(), Some("Did you mean NAME?"));
    }

    #[test]
    fn functions_check_their_arguments() {
        assert_eq!(analyze("LEN(NAME)").unwrap().1, SqlType::Integer);
        let e = analyze("LEN(I)").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Function 'len' does not accept parameters (INTEGER)."
        );
        let e = analyze("NOPE(I)").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Can't find any functions with the name 'NOPE'"
        );
    }

    #[test]
    fn timestamps_parse_like_ksqldb() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00"), Some(0));
        assert_eq!(parse_timestamp("2018"), Some(1_514_764_800_000));
        assert_eq!(
            parse_timestamp("2018-01-01T00:00:00.001"),
            Some(1_514_764_800_001)
        );
        assert_eq!(
            parse_timestamp("2019-01-01T00:00:00+0445"),
            Some(1_546_300_800_000 - 17_100_000)
        );
        assert_eq!(
            parse_timestamp("2019-01-01T04:45:00+04:45"),
            Some(1_546_300_800_000)
        );
        assert_eq!(parse_timestamp("not a time"), None);
        let (e, _) = analyze_with_rowtime("ROWTIME >= '2018'");
        assert_eq!(e.to_string(), "(ROWTIME >= 1514764800000)");
    }

    fn analyze_with_rowtime(sql: &str) -> Typed {
        let mut s = scope();
        s.columns.push(ScopeColumn {
            name: "ROWTIME".into(),
            ty: SqlType::Bigint,
            origin: None,
        });
        ExprAnalyzer {
            scope: &s,
            clause: Clause::Where,
        }
        .analyze(&parse_expression(sql).unwrap())
        .unwrap()
    }

    #[test]
    fn case_results_share_a_type() {
        let (_, t) = analyze("CASE WHEN I > 1 THEN I ELSE B END").unwrap();
        assert_eq!(t, SqlType::Bigint);
        assert!(analyze("CASE WHEN I > 1 THEN I ELSE NAME END").is_err());
    }

    #[test]
    fn constructors_unify_their_values() {
        let (e, t) = analyze("ARRAY[I, B, '3', NULL]").unwrap();
        assert_eq!(t.to_string(), "ARRAY<BIGINT>");
        assert_eq!(e.to_string(), "ARRAY[CAST(I AS BIGINT), B, 3, null]");
        // Keys follow their values' types; number literals are written as text.
        let (e, t) = analyze("MAP(NAME := I, 10 := 5)").unwrap();
        assert_eq!(t.to_string(), "MAP<STRING, INTEGER>");
        assert_eq!(e.to_string(), "MAP(NAME:=I, CAST(10 AS STRING):=5)");
        assert!(analyze("MAP(NAME := I, 10 := 'yes')").is_err());
        let (_, t) = analyze("STRUCT(A := I, `b` := NAME)").unwrap();
        assert_eq!(t.to_string(), "STRUCT<`A` INTEGER, `b` STRING>");
        assert!(analyze("ARRAY[NULL]").is_err());
        assert!(analyze("ARRAY[I, NAME]").is_err());
        assert_eq!(
            analyze("ARRAY[1, 'x']").unwrap_err().to_string(),
            "invalid input syntax for type INTEGER: \"x\"."
        );
    }

    #[test]
    fn subscripts_and_fields_take_the_element_type() {
        let (e, t) = analyze("ARRAY[I][1]").unwrap();
        assert_eq!(t, SqlType::Integer);
        assert_eq!(e.to_string(), "ARRAY[I][1]");
        let (_, t) = analyze("MAP('k' := B)['k']").unwrap();
        assert_eq!(t, SqlType::Bigint);
        let (_, t) = analyze("STRUCT(A := NAME)->A").unwrap();
        assert_eq!(t, SqlType::String);
        assert!(analyze("I[1]").is_err());
        assert!(analyze("STRUCT(A := NAME)->B").is_err());
    }
}
