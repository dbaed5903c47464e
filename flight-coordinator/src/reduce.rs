//! Semi-join reduction of distributed join inputs and semi-join push-down,
//! before distributed planning.
//!
//! DataFusion decorrelates `l_quantity < (SELECT avg(l_quantity) FROM
//! lineitem WHERE l_partkey = p_partkey)` into a join with an aggregate over
//! *all* of `lineitem` grouped by `l_partkey`. On the cluster that aggregate
//! is split: every shard sends one partial row per part key, although the
//! other join side keeps only the few keys of the filtered `part` rows.
//! Likewise `NOT EXISTS (SELECT * FROM orders WHERE o_custkey = c_custkey)`
//! over filtered customers gathers every order.
//!
//! For a join whose other side's key values all come from a filtered subtree
//! of reference tables (present on every worker), this rule adds `LEFT SEMI
//! JOIN (that subtree's keys)` to the distributed side, as deep as it can go
//! (below projections, filters, aggregates grouping on the key, and into the
//! side of an inner join holding the key). The added join is shard-local, so
//! the shards send only rows and groups that can match. It changes no
//! answer: a row or group whose key is not among the other side's key values
//! matches nothing (equi-join keys never match NULL), and the reduced side is
//! never the preserved side of an outer or anti join.
//!
//! The same pass moves semi and anti joins (`IN`, `EXISTS` and their
//! negations) below the joins, projections and aggregates of their left side
//! to the input holding the keys, so they filter rows before the joins
//! rather than after them ([`push_down_semi_join`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, NullEquality, Result};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::{
    Distinct, Join, JoinConstraint, JoinType, LogicalPlan, Projection, SubqueryAlias,
};
use datafusion::prelude::Expr;

use crate::planner::{output_column, unalias};
use crate::table::ClusterTable;

static REDUCER_IDS: AtomicU64 = AtomicU64::new(1);

/// Adds semi-join reductions to every join of `plan` where one applies.
pub fn reduce_joins(plan: LogicalPlan) -> Result<LogicalPlan> {
    Ok(plan
        .transform_up_with_subqueries(|node| {
            let LogicalPlan::Join(join) = &node else {
                return Ok(Transformed::no(node));
            };
            // Optimizations: where one cannot be built, plan without it.
            let reduced = reduce_join(join).ok().flatten();
            let join = reduced.as_ref().unwrap_or(join);
            if let Ok(Some(pushed)) = push_down_semi_join(join) {
                return Ok(Transformed::yes(pushed));
            }
            Ok(match reduced {
                Some(j) => Transformed::yes(LogicalPlan::Join(j)),
                None => Transformed::no(node),
            })
        })?
        .data)
}

fn reduce_join(join: &Join) -> Result<Option<Join>> {
    use JoinType::*;
    if join.null_equality != NullEquality::NullEqualsNothing || join.null_aware {
        return Ok(None);
    }
    // A side may shrink unless it is preserved.
    let mut right = None;
    if matches!(join.join_type, Inner | Left | LeftSemi | LeftAnti) {
        let pairs: Vec<_> = join
            .on
            .iter()
            .map(|(l, r)| (r.clone(), l.clone()))
            .collect();
        right = reduce_side(&join.right, &join.left, &pairs, join.join_type)?;
    }
    let mut left = None;
    if matches!(join.join_type, Inner | Right | RightSemi | RightAnti) {
        left = reduce_side(&join.left, &join.right, &join.on, join.join_type)?;
    }
    if left.is_none() && right.is_none() {
        return Ok(None);
    }
    let join = join.clone();
    Ok(Some(Join::try_new(
        left.map_or(join.left, Arc::new),
        right.map_or(join.right, Arc::new),
        join.on,
        join.filter,
        join.join_type,
        join.join_constraint,
        join.null_equality,
        join.null_aware,
    )?))
}

/// Reduces `target` by the key values of `other`; `pairs` are the join keys
/// as (target expression, other expression).
fn reduce_side(
    target: &LogicalPlan,
    other: &LogicalPlan,
    pairs: &[(Expr, Expr)],
    join_type: JoinType,
) -> Result<Option<LogicalPlan>> {
    if !has_distributed(target) {
        return Ok(None);
    }
    // Trace each key of `other` to a filtered reference subtree; use the
    // subtree that covers the most keys.
    let mut groups: Vec<(LogicalPlan, Vec<(Column, Column)>)> = Vec::new();
    for (t, o) in pairs {
        let (Expr::Column(tc), Expr::Column(oc)) = (t, o) else {
            continue;
        };
        let Some((source, sc)) = find_source(other, oc) else {
            continue;
        };
        match groups.iter_mut().find(|(p, _)| *p == source) {
            Some((_, cols)) => cols.push((tc.clone(), sc)),
            None => groups.push((source, vec![(tc.clone(), sc)])),
        }
    }
    let best = groups
        .into_iter()
        .reduce(|best, g| if g.1.len() > best.1.len() { g } else { best });
    let Some((source, cols)) = best else {
        return Ok(None);
    };
    // Same types on both sides, so the semi join needs no casts.
    let same_types = cols.iter().all(|(tc, sc)| {
        match (
            target.schema().qualified_field_from_column(tc),
            source.schema().qualified_field_from_column(sc),
        ) {
            (Ok((_, a)), Ok((_, b))) => a.data_type() == b.data_type(),
            _ => false,
        }
    });
    if !same_types {
        return Ok(None);
    }
    let alias = format!(
        "__fsql_keys_{}",
        REDUCER_IDS.fetch_add(1, Ordering::Relaxed)
    );
    let exprs = cols
        .iter()
        .enumerate()
        .map(|(i, (_, sc))| Expr::Column(sc.clone()).alias(format!("k{i}")))
        .collect();
    let reducer = LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(
        Arc::new(LogicalPlan::Projection(Projection::try_new(
            exprs,
            Arc::new(source),
        )?)),
        alias.as_str(),
    )?);
    let reducer_cols: Vec<Column> = (0..cols.len())
        .map(|i| Column::new(Some(alias.as_str()), format!("k{i}")))
        .collect();
    let target_cols: Vec<Column> = cols.into_iter().map(|(tc, _)| tc).collect();
    let semi = SemiJoin {
        join_type: JoinType::LeftSemi,
        right: &reducer,
        right_keys: reducer_cols.into_iter().map(Expr::Column).collect(),
        null_aware: false,
        distributed_only: true,
    };
    let mut crossed = false;
    let Some(reduced) = place(target, &target_cols, &semi, &mut crossed)? else {
        return Ok(None);
    };
    // Worth it when the target is cut (aggregated or deduplicated on the
    // shards) below the join, or when the join cannot run on the shards
    // anyway: an outer, semi or anti join of reference rows with distributed
    // ones. An inner join with reference tables already runs on the shards.
    let useful = crossed || (join_type != JoinType::Inner && !has_distributed(other));
    Ok(useful.then_some(reduced))
}

/// Output column `i` of `plan`.
pub(crate) fn column_at(plan: &LogicalPlan, i: usize) -> Column {
    output_column(plan.schema(), i)
}

/// The column `e` is, aliases aside.
pub(crate) fn plain_column(e: &Expr) -> Option<&Column> {
    match unalias(e) {
        Expr::Column(c) => Some(c),
        _ => None,
    }
}

/// Maps output column `c` of `plan` to the input column it passes through
/// unchanged: (input index, column), or `None` if computed.
pub(crate) fn input_column(plan: &LogicalPlan, c: &Column) -> Option<(usize, Column)> {
    let i = plan.schema().index_of_column(c).ok()?;
    match plan {
        LogicalPlan::Projection(p) => {
            let inner = plain_column(&p.expr[i])?;
            p.input.schema().index_of_column(inner).ok()?;
            Some((0, inner.clone()))
        }
        LogicalPlan::SubqueryAlias(a) => Some((0, column_at(&a.input, i))),
        LogicalPlan::Filter(_) | LogicalPlan::Distinct(Distinct::All(_)) => Some((0, c.clone())),
        LogicalPlan::Sort(s) if s.fetch.is_none() => Some((0, c.clone())),
        LogicalPlan::Aggregate(a) => {
            let inner = plain_column(a.group_expr.get(i)?)?;
            Some((0, inner.clone()))
        }
        LogicalPlan::Join(j) => {
            let left_len = j.left.schema().fields().len();
            match j.join_type {
                JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full => {
                    if i < left_len {
                        Some((0, column_at(&j.left, i)))
                    } else {
                        Some((1, column_at(&j.right, i - left_len)))
                    }
                }
                JoinType::LeftSemi | JoinType::LeftAnti => Some((0, column_at(&j.left, i))),
                JoinType::RightSemi | JoinType::RightAnti => Some((1, column_at(&j.right, i))),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The highest filtered reference-only subtree of `plan` whose column holds
/// every value `c` can take (NULL aside), with that column.
fn find_source(plan: &LogicalPlan, c: &Column) -> Option<(LogicalPlan, Column)> {
    if reference_only(plan) && filtered(plan) {
        let i = plan.schema().index_of_column(c).ok()?;
        return Some((plan.clone(), column_at(plan, i)));
    }
    if let LogicalPlan::Limit(l) = plan {
        // A limit keeps a subset of its input's rows.
        return find_source(&l.input, c);
    }
    let (child, inner) = input_column(plan, c)?;
    if let LogicalPlan::Join(j) = plan {
        let (this, that, keys_this_side) = if child == 0 {
            (&j.left, &j.right, true)
        } else {
            (&j.right, &j.left, false)
        };
        if let Some(found) = find_source(this, &inner) {
            return Some(found);
        }
        // An inner or semi join's key equals the other side's key.
        let equal_keys = match j.join_type {
            JoinType::Inner => true,
            JoinType::LeftSemi => keys_this_side,
            JoinType::RightSemi => !keys_this_side,
            _ => false,
        };
        if !equal_keys {
            return None;
        }
        return j.on.iter().find_map(|(l, r)| {
            let (mine, theirs) = if keys_this_side { (l, r) } else { (r, l) };
            match (mine, theirs) {
                (Expr::Column(m), Expr::Column(t)) if *m == inner => find_source(that, t),
                _ => None,
            }
        });
    }
    find_source(plan.inputs()[child], &inner)
}

/// A semi or anti join to place over some subtree: `<subtree> join_type
/// JOIN right ON <key columns> = right_keys`.
struct SemiJoin<'a> {
    join_type: JoinType,
    right: &'a LogicalPlan,
    right_keys: Vec<Expr>,
    null_aware: bool,
    /// Only over subtrees reading distributed tables (a reduction).
    distributed_only: bool,
}

/// Puts `target <semi join>` as deep into `target` as it can go, `cols`
/// being the key columns of `target`. `crossed` is set when it went below
/// an aggregate or DISTINCT. `None` when `semi.distributed_only` and it
/// would land on reference tables only.
fn place(
    target: &LogicalPlan,
    cols: &[Column],
    semi: &SemiJoin,
    crossed: &mut bool,
) -> Result<Option<LogicalPlan>> {
    if semi.distributed_only && !has_distributed(target) {
        return Ok(None);
    }
    if let Some(below) = place_below(target, cols, semi, crossed)? {
        return Ok(Some(below));
    }
    let on = cols
        .iter()
        .zip(&semi.right_keys)
        .map(|(t, r)| (Expr::Column(t.clone()), r.clone()))
        .collect();
    Ok(Some(LogicalPlan::Join(Join::try_new(
        Arc::new(target.clone()),
        Arc::new(semi.right.clone()),
        on,
        None,
        semi.join_type,
        JoinConstraint::On,
        NullEquality::NullEqualsNothing,
        semi.null_aware,
    )?)))
}

/// [`place`] into the input of `target` that holds every key column, if
/// filtering that input filters `target` alike.
fn place_below(
    target: &LogicalPlan,
    cols: &[Column],
    semi: &SemiJoin,
    crossed: &mut bool,
) -> Result<Option<LogicalPlan>> {
    let Some(mapped) = cols
        .iter()
        .map(|c| input_column(target, c))
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(None);
    };
    let Some(side) = mapped.first().map(|(i, _)| *i) else {
        return Ok(None);
    };
    if mapped.iter().any(|(i, _)| *i != side) {
        return Ok(None);
    }
    // Never into the side an outer or anti join keeps unmatched rows of
    // the other side for.
    if let LogicalPlan::Join(j) = target {
        let ok = match j.join_type {
            JoinType::Inner => true,
            JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti => side == 0,
            JoinType::Right | JoinType::RightSemi | JoinType::RightAnti => side == 1,
            _ => false,
        };
        if !ok {
            return Ok(None);
        }
    }
    let inner_cols: Vec<Column> = mapped.into_iter().map(|(_, c)| c).collect();
    let Some(new_input) = place(target.inputs()[side], &inner_cols, semi, crossed)? else {
        return Ok(None);
    };
    if matches!(
        target,
        LogicalPlan::Aggregate(_) | LogicalPlan::Distinct(Distinct::All(_))
    ) {
        *crossed = true;
    }
    let mut inputs: Vec<LogicalPlan> = target.inputs().into_iter().cloned().collect();
    inputs[side] = new_input;
    Ok(Some(target.with_new_exprs(target.expressions(), inputs)?))
}

/// Moves a semi or anti join (without a join filter) below the nodes of its
/// left side that keep the key columns, e.g. into the `orders` side of
/// `customer JOIN orders JOIN lineitem` for `o_orderkey IN (...)` (TPC-H
/// Q18), so it filters before the joins instead of after them.
fn push_down_semi_join(join: &Join) -> Result<Option<LogicalPlan>> {
    if !matches!(join.join_type, JoinType::LeftSemi | JoinType::LeftAnti)
        || join.filter.is_some()
        || join.null_equality != NullEquality::NullEqualsNothing
    {
        return Ok(None);
    }
    let Some(cols) = join
        .on
        .iter()
        .map(|(l, _)| match l {
            Expr::Column(c) => Some(c.clone()),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(None);
    };
    let semi = SemiJoin {
        join_type: join.join_type,
        right: &join.right,
        right_keys: join.on.iter().map(|(_, r)| r.clone()).collect(),
        null_aware: join.null_aware,
        distributed_only: false,
    };
    place_below(&join.left, &cols, &semi, &mut false)
}

/// The cluster table `node` scans: `Some(true)` for a reference table,
/// `Some(false)` for a sharded table or files, `None` for anything else.
fn scan_kind(node: &LogicalPlan) -> Option<bool> {
    let LogicalPlan::TableScan(scan) = node else {
        return None;
    };
    let provider = source_as_provider(&scan.source).ok()?;
    let table = provider.downcast_ref::<ClusterTable>()?;
    Some(table.files.is_none() && table.meta.is_reference())
}

/// Whether `plan` (subqueries included) reads a sharded table or files.
pub(crate) fn has_distributed(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        found = scan_kind(node) == Some(false);
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

/// Whether `plan` reads only reference tables through plain relational
/// nodes, with no subqueries and nothing volatile, so that a copy of it
/// computes the same rows on any worker.
pub(crate) fn reference_only(plan: &LogicalPlan) -> bool {
    let plain = |node: &LogicalPlan| {
        let kind_ok = match node {
            LogicalPlan::TableScan(_) => scan_kind(node) == Some(true),
            LogicalPlan::Projection(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::SubqueryAlias(_)
            | LogicalPlan::Aggregate(_)
            | LogicalPlan::Distinct(Distinct::All(_))
            | LogicalPlan::Join(_) => true,
            _ => false,
        };
        kind_ok
            && node.expressions().iter().all(|e| {
                !e.is_volatile()
                    && !e
                        .exists(|x| {
                            Ok(matches!(
                                x,
                                Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
                            ))
                        })
                        .unwrap_or(true)
            })
    };
    !plan.exists(|node| Ok(!plain(node))).unwrap_or(true)
}

/// Whether `plan` filters rows anywhere (a filter or a scan with filters).
fn filtered(plan: &LogicalPlan) -> bool {
    plan.exists(|node| {
        Ok(match node {
            LogicalPlan::Filter(_) => true,
            LogicalPlan::TableScan(s) => !s.filters.is_empty(),
            _ => false,
        })
    })
    .unwrap_or(false)
}
