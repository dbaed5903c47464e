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
use datafusion::common::tree_node::{Transformed, TreeNode};
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
pub fn duckdb_semantics(plan: LogicalPlan) -> Result<LogicalPlan> {
    let out = plan.transform_up_with_subqueries(|node| {
        let input_schema = match node.inputs().as_slice() {
            [one] => one.schema().as_ref().clone(),
            _ => return Ok(Transformed::no(node)),
        };
        if !matches!(
            node,
            LogicalPlan::Projection(_) | LogicalPlan::Aggregate(_) | LogicalPlan::Filter(_)
        ) {
            return Ok(Transformed::no(node));
        }
        let t = node.map_expressions(|e| {
            // Aliases at the top of a projection/aggregate keep their names;
            // nested rewrites are aliased and then unaliased below.
            let t = rewrite_expr(e, &input_schema)?;
            t.map_data(strip_nested_aliases)
        })?;
        if t.transformed {
            Ok(Transformed::yes(t.data.recompute_schema()?))
        } else {
            Ok(t)
        }
    })?;
    Ok(out.data)
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
