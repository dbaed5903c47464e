//! Eager aggregation of the distributed side of a LEFT JOIN with reference
//! rows, before distributed planning.
//!
//! TPC-H Q13 counts each customer's orders: `customer LEFT JOIN orders`,
//! then `GROUP BY c_custkey` with `count(o_orderkey)`. `customer` is a
//! reference table, so the join runs on the coordinator over every
//! (filtered) order. When the aggregate groups by columns of the reference
//! side only and aggregates columns of the distributed side with COUNT,
//! SUM, MIN or MAX, the distributed side can be aggregated by its join keys
//! first (on the shards, as a split aggregate) and the join then meets one
//! row per key:
//!
//! ```text
//! Aggregate(g(L), f(R.x))            Projection(restore names and types)
//!   Left Join(L, R) ON L.k = R.k  =>   Aggregate(g(L), f'(e))
//!                                        Left Join(L, Aggregate(R.k; f(R.x) AS e)) ON L.k = R.k
//! ```
//!
//! Every left row meets at most one pre-aggregated row, holding f over all
//! its matches, so the outer SUM (of COUNTs and SUMs), MIN or MAX is
//! unchanged; a left row without matches gets NULL, as before, and COUNT
//! turns it into 0.

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, NullEquality, Result};
use datafusion::functions_aggregate::{
    min_max::{max_udaf, min_udaf},
    sum::sum_udaf,
};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::when;
use datafusion::logical_expr::{
    Aggregate, Cast, Join, JoinConstraint, JoinType, LogicalPlan, Projection,
};
use datafusion::prelude::{Expr, col, lit};

use crate::planner::unalias;
use crate::reduce::{column_at, has_distributed, plain_column, reference_only};

/// Applies the rewrite to every aggregate of `plan` where it holds.
pub fn eager_aggregation(plan: LogicalPlan) -> Result<LogicalPlan> {
    Ok(plan
        .transform_up_with_subqueries(|node| {
            let LogicalPlan::Aggregate(a) = &node else {
                return Ok(Transformed::no(node));
            };
            // An optimization: where it cannot be built, plan without it.
            Ok(match rewrite(a) {
                Ok(Some(p)) => Transformed::yes(p),
                _ => Transformed::no(node),
            })
        })?
        .data)
}

fn rewrite(a: &Aggregate) -> Result<Option<LogicalPlan>> {
    // The join, maybe under a projection of plain columns.
    let (proj, join) = match a.input.as_ref() {
        LogicalPlan::Join(j) => (None, j),
        LogicalPlan::Projection(p) => match p.input.as_ref() {
            LogicalPlan::Join(j) => (Some(p), j),
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    if join.join_type != JoinType::Left
        || join.filter.is_some()
        || join.null_equality != NullEquality::NullEqualsNothing
        || !reference_only(&join.left)
        || !has_distributed(&join.right)
    {
        return Ok(None);
    }
    let Some(right_keys) = join
        .on
        .iter()
        .map(|(_, r)| plain_column(r).cloned())
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(None);
    };
    if (1..right_keys.len()).any(|i| right_keys[..i].contains(&right_keys[i])) {
        return Ok(None);
    }
    let left_len = join.left.schema().fields().len();
    // A column of the aggregate's input as (right side?, column of that side).
    let resolve = |e: &Expr| -> Option<(bool, Column)> {
        let c = plain_column(e)?;
        let c = match proj {
            Some(p) => plain_column(&p.expr[p.schema.index_of_column(c).ok()?])?.clone(),
            None => c.clone(),
        };
        let i = join.schema.index_of_column(&c).ok()?;
        Some(if i < left_len {
            (false, column_at(&join.left, i))
        } else {
            (true, column_at(&join.right, i - left_len))
        })
    };
    let mut groups = Vec::new();
    for g in &a.group_expr {
        match resolve(g) {
            Some((false, c)) => groups.push(Expr::Column(c)),
            _ => return Ok(None),
        }
    }
    let mut inner = Vec::new();
    let mut outer = Vec::new();
    let mut kinds = Vec::new();
    for (i, e) in a.aggr_expr.iter().enumerate() {
        let Expr::AggregateFunction(f) = unalias(e) else {
            return Ok(None);
        };
        let p = &f.params;
        if p.distinct || p.filter.is_some() || !p.order_by.is_empty() || p.args.len() != 1 {
            return Ok(None);
        }
        let Some((true, arg)) = resolve(&p.args[0]) else {
            return Ok(None);
        };
        let name = f.func.name().to_ascii_lowercase();
        let combine = match name.as_str() {
            "count" | "sum" => sum_udaf(),
            "min" => min_udaf(),
            "max" => max_udaf(),
            _ => return Ok(None),
        };
        let mut pre = f.clone();
        pre.params.args = vec![Expr::Column(arg)];
        inner.push(Expr::AggregateFunction(pre).alias(format!("__eager{i}")));
        outer.push(
            Expr::AggregateFunction(AggregateFunction::new_udf(
                combine,
                vec![col(format!("__eager{i}"))],
                false,
                None,
                vec![],
                None,
            ))
            .alias(format!("__eager_out{i}")),
        );
        kinds.push(name == "count");
    }
    if inner.is_empty() {
        return Ok(None);
    }
    let pre = LogicalPlan::Aggregate(Aggregate::try_new(
        Arc::clone(&join.right),
        right_keys.into_iter().map(Expr::Column).collect(),
        inner,
    )?);
    let joined = LogicalPlan::Join(Join::try_new(
        Arc::clone(&join.left),
        Arc::new(pre),
        join.on.clone(),
        None,
        JoinType::Left,
        JoinConstraint::On,
        NullEquality::NullEqualsNothing,
        false,
    )?);
    let n_groups = groups.len();
    let agg = LogicalPlan::Aggregate(Aggregate::try_new(Arc::new(joined), groups, outer)?);
    // The original names and types.
    let exprs = (0..a.schema.fields().len())
        .map(|i| -> Result<Expr> {
            let (q, field) = a.schema.qualified_field(i);
            let out = Expr::Column(column_at(&agg, i));
            // CASE, not COALESCE: the plan is not simplified again.
            let value = if i >= n_groups && kinds[i - n_groups] {
                when(out.clone().is_null(), lit(0i64)).otherwise(out)?
            } else {
                out
            };
            Ok(
                Expr::Cast(Cast::new(Box::new(value), field.data_type().clone()))
                    .alias_qualified(q.cloned(), field.name()),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(LogicalPlan::Projection(Projection::try_new(
        exprs,
        Arc::new(agg),
    )?)))
}
