//! Rewrites that make DataFusion compute the answers DuckDB gives.
//!
//! Applied to the plan straight from the SQL planner, before type coercion:
//! - `AVG` of a DECIMAL returns DOUBLE (DataFusion would return a DECIMAL
//!   with scale + 4, rounding the answer);
//! - DECIMAL `/` DECIMAL (or integer) is DOUBLE division.
//!
//! Integer `/` stays integer division (PostgreSQL's semantics, documented in
//! the README). Output names are kept so the rest of the plan still binds.

use arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, Result};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{BinaryExpr, Cast, ExprSchemable, LogicalPlan, Operator};
use datafusion::prelude::Expr;

fn is_decimal(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Decimal32(..)
            | DataType::Decimal64(..)
            | DataType::Decimal128(..)
            | DataType::Decimal256(..)
    )
}

fn to_double(e: Expr) -> Expr {
    Expr::Cast(Cast::new(Box::new(e), DataType::Float64))
}

fn rewrite_expr(e: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    e.transform_up(|e| match &e {
        Expr::AggregateFunction(AggregateFunction { func, params })
            if func.name() == "avg" && params.args.len() == 1 =>
        {
            let t = params.args[0].get_type(schema)?;
            if !is_decimal(&t) {
                return Ok(Transformed::no(e));
            }
            let name = e.schema_name().to_string();
            let mut params = params.clone();
            params.args[0] = to_double(params.args[0].clone());
            let new = Expr::AggregateFunction(AggregateFunction {
                func: func.clone(),
                params,
            });
            Ok(Transformed::yes(new.alias(name)))
        }
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Divide,
            right,
        }) => {
            let (lt, rt) = (left.get_type(schema)?, right.get_type(schema)?);
            let dec = (is_decimal(&lt) && (is_decimal(&rt) || rt.is_integer()))
                || (lt.is_integer() && is_decimal(&rt));
            if !dec {
                return Ok(Transformed::no(e));
            }
            let name = e.schema_name().to_string();
            let new = Expr::BinaryExpr(BinaryExpr::new(
                Box::new(to_double((**left).clone())),
                Operator::Divide,
                Box::new(to_double((**right).clone())),
            ));
            Ok(Transformed::yes(new.alias(name)))
        }
        _ => Ok(Transformed::no(e)),
    })
}

/// Applies the rewrites to every node (and subquery) of `plan`.
///
/// Also removes aliases nested inside expressions, which DataFusion's SQL
/// planner leaves behind for functions called by an alias name
/// (`max(length(s))` plans as `max(character_length(s) AS length(s))`,
/// which its type coercion then renames out from under the projection).
/// Expressions that name an output column keep their name as a top alias.
pub fn duckdb_semantics(plan: LogicalPlan) -> Result<LogicalPlan> {
    let out = plan.transform_up_with_subqueries(|node| {
        let input_schema = match node.inputs().as_slice() {
            [one] => one.schema().as_ref().clone(),
            _ => return Ok(Transformed::no(node)),
        };
        let named = match node {
            LogicalPlan::Projection(_) | LogicalPlan::Aggregate(_) | LogicalPlan::Window(_) => true,
            LogicalPlan::Filter(_) | LogicalPlan::Sort(_) => false,
            _ => return Ok(Transformed::no(node)),
        };
        let t = node.map_expressions(|e| {
            let name = named.then(|| e.schema_name().to_string());
            let t = rewrite_expr(e, &input_schema)?;
            let nested = has_nested_alias(&t.data);
            if !t.transformed && !nested {
                return Ok(t);
            }
            let e = strip_nested_aliases(t.data)?;
            Ok(Transformed::yes(match name {
                Some(name) if e.schema_name().to_string() != name => e.unalias().alias(name),
                _ => e,
            }))
        })?;
        if t.transformed {
            Ok(Transformed::yes(t.data.recompute_schema()?))
        } else {
            Ok(t)
        }
    })?;
    Ok(out.data)
}

/// Whether an alias appears below the top of `e`.
fn has_nested_alias(e: &Expr) -> bool {
    let top = match e {
        Expr::Alias(a) => a.expr.as_ref(),
        other => other,
    };
    let mut found = false;
    let _ = top.apply(|e| {
        found = matches!(e, Expr::Alias(_));
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

/// Keeps only an outermost alias: inner aliases added by the rewrite are
/// not valid inside larger expressions.
fn strip_nested_aliases(e: Expr) -> Result<Expr> {
    match e {
        Expr::Alias(mut a) => {
            *a.expr = strip_all_aliases(*a.expr)?;
            Ok(Expr::Alias(a))
        }
        other => strip_all_aliases(other),
    }
}

fn strip_all_aliases(e: Expr) -> Result<Expr> {
    Ok(e.transform_up(|e| match e {
        Expr::Alias(a) => Ok(Transformed::yes(*a.expr)),
        other => Ok(Transformed::no(other)),
    })?
    .data)
}
