//! The coordinator's optimizer rules: DataFusion's defaults, with
//! `eliminate_duplicated_expr` replaced by [`EliminateExactDuplicates`] and
//! the physical `FilterPushdown` rules left out ([`physical_optimizer_rules`]).
//!
//! DataFusion 54's `eliminate_duplicated_expr` also drops sort keys that
//! the input's functional dependencies say are determined by earlier keys.
//! Those dependencies can be wrong: a projection's dependencies are mapped
//! by matching each expression's name in its input and flattening the
//! matches, so a computed expression with no match shifts every later
//! column left (`calc_func_dependencies_for_project`). After
//! `eliminate_group_by_constant` rewrites `GROUP BY k * 0, k` to
//! `GROUP BY k` under `Projection: k * 0 AS c0, k AS c1`, the dependency
//! "k is a key" lands on `c0`, and `ORDER BY c0, c1 DESC` loses `c1 DESC`.
//! The replacement keeps the rule's exact-duplicate removal (which the
//! planner relies on for `GROUP BY k, k`) and prunes nothing else.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::Transformed;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, Sort, SortExpr};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{Optimizer, OptimizerConfig, OptimizerRule};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;

/// DataFusion's default logical optimizer rules, in order, with
/// `eliminate_duplicated_expr` replaced by [`EliminateExactDuplicates`].
pub fn optimizer_rules() -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    Optimizer::new()
        .rules
        .into_iter()
        .map(|rule| {
            if rule.name() == "eliminate_duplicated_expr" {
                Arc::new(EliminateExactDuplicates) as Arc<dyn OptimizerRule + Send + Sync>
            } else {
                rule
            }
        })
        .collect()
}

/// DataFusion's default physical optimizer rules without the two
/// `FilterPushdown` phases.
///
/// In DataFusion 54 the physical filter pushdown maps a filter's columns
/// through a projection by name. Over `Projection: t0.dt, t1.k, t1.dt` on a
/// right join, `t1.k <= 45 OR t0.dt <= DATE '2020-07-30'` was pushed into
/// the join's preserved side with `t0.dt` read as `t1.dt`, keeping rows the
/// filter rejects. The logical optimizer has already pushed every filter
/// that can move; the physical rule only added dynamic filters (TopK, join
/// build sides), an optimization we give up for exact answers.
pub fn physical_optimizer_rules() -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    PhysicalOptimizer::new()
        .rules
        .into_iter()
        .filter(|rule| !rule.name().starts_with("FilterPushdown"))
        .collect()
}

/// Removes sort keys whose expression already appears earlier in the same
/// sort (the first one wins) and repeated group-by expressions. Unlike
/// DataFusion's rule, it never uses functional dependencies.
#[derive(Debug, Default)]
pub struct EliminateExactDuplicates;

impl OptimizerRule for EliminateExactDuplicates {
    fn name(&self) -> &str {
        "eliminate_exact_duplicated_expr"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        match plan {
            LogicalPlan::Sort(sort) => {
                let len = sort.expr.len();
                let mut unique: Vec<SortExpr> = Vec::with_capacity(len);
                for e in sort.expr {
                    if !unique.iter().any(|u| u.expr == e.expr) {
                        unique.push(e);
                    }
                }
                let changed = unique.len() != len;
                let plan = LogicalPlan::Sort(Sort {
                    expr: unique,
                    input: sort.input,
                    fetch: sort.fetch,
                });
                Ok(if changed {
                    Transformed::yes(plan)
                } else {
                    Transformed::no(plan)
                })
            }
            LogicalPlan::Aggregate(agg) => {
                let len = agg.group_expr.len();
                let mut unique: Vec<Expr> = Vec::with_capacity(len);
                for e in agg.group_expr {
                    if !unique.contains(&e) {
                        unique.push(e);
                    }
                }
                let changed = unique.len() != len;
                // As DataFusion's rule does, rebuild the node either way.
                let agg = Aggregate::try_new(agg.input, unique, agg.aggr_expr)?;
                let plan = LogicalPlan::Aggregate(agg);
                Ok(if changed {
                    Transformed::yes(plan)
                } else {
                    Transformed::no(plan)
                })
            }
            other => Ok(Transformed::no(other)),
        }
    }
}
