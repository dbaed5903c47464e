//! The distributed planner.
//!
//! Input: an optimized DataFusion `LogicalPlan` over [`ClusterTable`]s.
//! Output: either one shard-local fragment whose per-shard results simply
//! union into the answer (served as direct endpoints), or a merge plan for
//! the coordinator whose leaves are [`FragmentScan`]s.
//!
//! The planner walks the plan bottom-up and keeps, for every subtree, whether
//! it is *shard-local*: computing it on each shard and concatenating gives
//! exactly the subtree's result. Scans, filters and projections are local;
//! inner joins with reference tables, outer joins whose preserved side is
//! distributed, and joins of co-located tables on their distribution keys
//! are local; an aggregate grouping on a distribution key is local. Above a
//! local subtree the planner cuts: aggregates split into partial (shards)
//! and final (coordinator) parts, `ORDER BY ... LIMIT` becomes a per-shard
//! top-N under the coordinator's sort, `LIMIT` a per-shard limit. Anything
//! else gathers the local subtree's rows and computes on the coordinator:
//! slower, never wrong.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::datatypes::DataType;
use datafusion::common::{Column, DFSchema, JoinType, Result};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::functions_aggregate::{
    count::count_udaf,
    min_max::{max_udaf, min_udaf},
    sum::sum_udaf,
};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::logical_plan::{FetchType, SkipType};
use datafusion::logical_expr::{
    Aggregate, Cast, Distinct, ExprSchemable, Extension, Limit, LogicalPlan, Projection, Sort,
    TableScan,
};
use datafusion::prelude::{Expr, col, lit};
use flight_worker::fragment::ShardScanTable;

use crate::catalog::{Catalog, TableMeta};
use crate::error::Error;
use crate::gather::{FragmentScan, ShardRoute};
use crate::table::ClusterTable;

static FRAGMENT_IDS: AtomicU64 = AtomicU64::new(1);
/// Which worker reads the next reference-table fragment (see `routes`).
static REFERENCE_TURNS: AtomicU64 = AtomicU64::new(0);

/// How a local subtree's rows are spread.
#[derive(Debug, Clone)]
enum Dist {
    /// Every worker holds the same rows; run on any one of them.
    Reference { table: Arc<TableMeta> },
    /// One fragment per shard of `table`'s placement.
    Sharded {
        table: Arc<TableMeta>,
        /// Output columns whose value determines the shard (with the hash
        /// class of their type): equal values live in the same shard.
        keys: Vec<(Column, String)>,
    },
}

impl Dist {
    fn same_placement(a: &TableMeta, b: &TableMeta) -> bool {
        a.shard_count == b.shard_count && a.placement == b.placement
    }
}

#[derive(Debug, Clone)]
struct Local {
    plan: LogicalPlan,
    dist: Dist,
    /// Tables read, for EXPLAIN.
    tables: Vec<String>,
}

enum Node {
    Local(Local),
    Remote(LogicalPlan),
}

/// The result of distributed planning.
#[derive(Debug)]
pub enum Distributed {
    /// A shard-local fragment: the union of its per-shard results is the
    /// answer, in no particular order.
    Direct {
        fragment: LogicalPlan,
        routes: Vec<ShardRoute>,
        label: String,
    },
    /// A merge plan for the coordinator.
    Merged(LogicalPlan),
}

pub struct DistributedPlanner<'a> {
    pub catalog: &'a Catalog,
    pub query_id: &'a str,
    /// `false` pushes nothing but scans (with their filters and
    /// projections) to the shards and computes the rest on the coordinator:
    /// the session option `distributed`, for comparing answers.
    pub distributed: bool,
}

fn remote_children(plan: &LogicalPlan, children: Vec<LogicalPlan>) -> Result<LogicalPlan> {
    plan.with_new_exprs(plan.expressions(), children)
}

/// Whether the fragment translates to DuckDB SQL.
fn translatable(plan: &LogicalPlan) -> bool {
    flight_worker::sqlgen::fragment_to_sql(plan, 0).is_ok()
}

pub(crate) fn unalias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => unalias(&a.expr),
        other => other,
    }
}

pub(crate) fn output_column(schema: &DFSchema, i: usize) -> Column {
    let (q, f) = schema.qualified_field(i);
    Column::new(q.cloned(), f.name())
}

/// Maps key columns through a node that keeps its input columns at the same
/// positions (filters, aliases, sorts).
fn keys_by_position(
    keys: &[(Column, String)],
    input: &DFSchema,
    output: &DFSchema,
) -> Vec<(Column, String)> {
    keys.iter()
        .filter_map(|(c, class)| {
            let i = input.index_of_column(c).ok()?;
            Some((output_column(output, i), class.clone()))
        })
        .collect()
}

impl DistributedPlanner<'_> {
    pub fn plan(&self, plan: &LogicalPlan) -> Result<Distributed, Error> {
        match self.go(plan)? {
            Node::Local(local) if !self.distributed => {
                Ok(Distributed::Merged(self.materialize(local)?))
            }
            Node::Local(local) => {
                let routes = self.routes(&local.dist)?;
                Ok(Distributed::Direct {
                    label: local.tables.join(", "),
                    fragment: local.plan,
                    routes,
                })
            }
            Node::Remote(plan) => Ok(Distributed::Merged(plan)),
        }
    }

    /// The shard routes of a distribution, with live worker URLs.
    fn routes(&self, dist: &Dist) -> Result<Vec<ShardRoute>, Error> {
        let (table, reference) = match dist {
            Dist::Reference { table } => (table, true),
            Dist::Sharded { table, .. } => (table, false),
        };
        let mut routes = Vec::new();
        for (shard, workers) in table.placement.iter().enumerate() {
            let mut urls: Vec<String> = workers
                .iter()
                .filter_map(|w| self.catalog.worker_url(w))
                .collect();
            if reference && !urls.is_empty() {
                // Every worker holds the reference tables: take turns, so
                // the reference fragments of a query (and of concurrent
                // queries) spread over the workers.
                let turn = REFERENCE_TURNS.fetch_add(1, Ordering::Relaxed) as usize;
                let n = urls.len();
                urls.rotate_left(turn % n);
            }
            if urls.is_empty() {
                let missing: Vec<String> = workers
                    .iter()
                    .map(|w| self.catalog.describe_worker(w))
                    .collect();
                return Err(Error::Unavailable(format!(
                    "shard {shard} of table {} has no live replica: held by worker(s) {}, \
                     none of them live; retry when one is back",
                    table.name,
                    missing.join(", ")
                )));
            }
            routes.push(ShardRoute {
                shard: shard as u32,
                urls,
            });
            if reference {
                break;
            }
        }
        Ok(routes)
    }

    fn materialize(&self, local: Local) -> Result<LogicalPlan> {
        let routes = self
            .routes(&local.dist)
            .map_err(|e| crate::error::unavailable_df(e.to_string()))?;
        Ok(LogicalPlan::Extension(Extension {
            node: Arc::new(FragmentScan {
                id: FRAGMENT_IDS.fetch_add(1, Ordering::Relaxed),
                query_id: self.query_id.to_string(),
                schema: Arc::clone(local.plan.schema()),
                fragment: Arc::new(local.plan),
                routes,
                label: local.tables.join(", "),
            }),
        }))
    }

    fn to_remote(&self, node: Node) -> Result<LogicalPlan> {
        match node {
            Node::Local(l) => self.materialize(l),
            Node::Remote(p) => Ok(p),
        }
    }

    /// Rebuilds `plan` on the coordinator over its (materialized) children.
    fn remote(&self, plan: &LogicalPlan, children: Vec<Node>) -> Result<Node> {
        let children = children
            .into_iter()
            .map(|c| self.to_remote(c))
            .collect::<Result<Vec<_>>>()?;
        let rebuilt = remote_children(plan, children)?;
        Ok(Node::Remote(self.distribute_subqueries(rebuilt)?))
    }

    /// Distributes plans nested in expressions (uncorrelated subqueries).
    fn distribute_subqueries(&self, plan: LogicalPlan) -> Result<LogicalPlan> {
        use datafusion::common::tree_node::Transformed;
        Ok(plan
            .map_subqueries(|sub| {
                let new = match sub {
                    LogicalPlan::Subquery(mut s) => {
                        let inner = self.go(&s.subquery)?;
                        s.subquery = Arc::new(self.to_remote(inner)?);
                        LogicalPlan::Subquery(s)
                    }
                    other => {
                        let inner = self.go(&other)?;
                        self.to_remote(inner)?
                    }
                };
                Ok(Transformed::yes(new))
            })?
            .data)
    }

    fn go(&self, plan: &LogicalPlan) -> Result<Node> {
        if let LogicalPlan::TableScan(scan) = plan {
            return self.scan(scan, plan);
        }
        let children = plan
            .inputs()
            .into_iter()
            .map(|c| self.go(c))
            .collect::<Result<Vec<_>>>()?;
        if !self.distributed {
            return self.remote(plan, children);
        }
        match plan {
            LogicalPlan::Projection(p) => self.projection(plan, p, children),
            LogicalPlan::Filter(_) | LogicalPlan::SubqueryAlias(_) => {
                self.same_columns(plan, children)
            }
            LogicalPlan::Aggregate(a) => self.aggregate(plan, a, children),
            LogicalPlan::Sort(s) => self.sort(plan, s, children),
            LogicalPlan::Limit(l) => self.limit(plan, l, children),
            LogicalPlan::Distinct(Distinct::All(_)) => self.distinct(plan, children),
            LogicalPlan::Join(j) => self.join(plan, j, children),
            _ => self.remote(plan, children),
        }
    }

    fn scan(&self, scan: &TableScan, plan: &LogicalPlan) -> Result<Node> {
        let Ok(provider) = source_as_provider(&scan.source) else {
            return Ok(Node::Remote(plan.clone()));
        };
        let Some(table) = provider.downcast_ref::<ClusterTable>() else {
            return Ok(Node::Remote(plan.clone()));
        };
        let meta = Arc::clone(&table.meta);
        let mut fragment = scan.clone();
        fragment.source = provider_as_source(Arc::new(ShardScanTable {
            table: meta.storage.clone(),
            reference: meta.is_reference(),
            schema: Arc::clone(&meta.schema),
            files: table.files.clone(),
        }));
        let fragment = LogicalPlan::TableScan(fragment);
        let dist = if meta.is_reference() {
            Dist::Reference {
                table: Arc::clone(&meta),
            }
        } else {
            let mut keys = Vec::new();
            if let Some(idx) = meta.hash_column() {
                let field = meta.schema.field(idx);
                let visible = scan.projection.as_ref().is_none_or(|p| p.contains(&idx));
                if let (true, Some(class)) =
                    (visible, fsql_proto::hash::hash_class(field.data_type()))
                {
                    keys.push((
                        Column::new(Some(scan.table_name.clone()), field.name()),
                        class,
                    ));
                }
            }
            Dist::Sharded {
                table: Arc::clone(&meta),
                keys,
            }
        };
        if !translatable(&fragment) {
            // Unreachable in practice: pushed filters were checked when the
            // optimizer asked the table. Read the whole table instead.
            return Ok(Node::Remote(plan.clone()));
        }
        Ok(Node::Local(Local {
            plan: fragment,
            dist,
            tables: vec![match &table.files {
                Some(f) => format!(
                    "{}({} files)",
                    f.function,
                    f.groups.iter().map(|g| g.files.len()).sum::<usize>()
                ),
                None => meta.name.clone(),
            }],
        }))
    }

    /// Tries to extend a local child with `plan` on top; `keys` maps the
    /// child's keys to the new node's output.
    fn extend(
        &self,
        plan: &LogicalPlan,
        child: Local,
        keys: impl FnOnce(&[(Column, String)], &DFSchema) -> Vec<(Column, String)>,
    ) -> Result<Node> {
        let candidate = remote_children(plan, vec![child.plan.clone()])?;
        if !translatable(&candidate) {
            return self.remote(plan, vec![Node::Local(child)]);
        }
        let dist = match child.dist {
            Dist::Sharded { table, keys: k } => Dist::Sharded {
                keys: keys(&k, candidate.schema()),
                table,
            },
            r => r,
        };
        Ok(Node::Local(Local {
            plan: candidate,
            dist,
            tables: child.tables,
        }))
    }

    fn single_local(children: Vec<Node>) -> std::result::Result<Local, Vec<Node>> {
        match <[Node; 1]>::try_from(children) {
            Ok([Node::Local(l)]) => Ok(l),
            Ok([other]) => Err(vec![other]),
            Err(v) => Err(v),
        }
    }

    fn projection(&self, plan: &LogicalPlan, p: &Projection, children: Vec<Node>) -> Result<Node> {
        let child = match Self::single_local(children) {
            Ok(c) => c,
            Err(children) => return self.remote(plan, children),
        };
        let input_schema = Arc::clone(p.input.schema());
        self.extend(plan, child, |keys, out| {
            let mut new = Vec::new();
            for (i, e) in p.expr.iter().enumerate() {
                if let Expr::Column(c) = unalias(e) {
                    for (k, class) in keys {
                        let same = match (
                            input_schema.index_of_column(c),
                            input_schema.index_of_column(k),
                        ) {
                            (Ok(a), Ok(b)) => a == b,
                            _ => false,
                        };
                        if same {
                            new.push((output_column(out, i), class.clone()));
                        }
                    }
                }
            }
            new
        })
    }

    fn same_columns(&self, plan: &LogicalPlan, children: Vec<Node>) -> Result<Node> {
        let child = match Self::single_local(children) {
            Ok(c) => c,
            Err(children) => return self.remote(plan, children),
        };
        let input = Arc::clone(child.plan.schema());
        self.extend(plan, child, |keys, out| keys_by_position(keys, &input, out))
    }

    fn sort(&self, plan: &LogicalPlan, s: &Sort, children: Vec<Node>) -> Result<Node> {
        let child = match Self::single_local(children) {
            Ok(c) => c,
            Err(children) => return self.remote(plan, children),
        };
        if matches!(child.dist, Dist::Reference { .. }) {
            let input = Arc::clone(child.plan.schema());
            return self.extend(plan, child, |k, out| keys_by_position(k, &input, out));
        }
        let Some(fetch) = s.fetch else {
            return self.remote(plan, vec![Node::Local(child)]);
        };
        // Per-shard top-N, then the coordinator's sort keeps the first N.
        let top = LogicalPlan::Sort(Sort {
            expr: s.expr.clone(),
            input: Arc::new(child.plan.clone()),
            fetch: Some(fetch),
        });
        if !translatable(&top) {
            return self.remote(plan, vec![Node::Local(child)]);
        }
        let scan = self.materialize(Local { plan: top, ..child })?;
        Ok(Node::Remote(remote_children(plan, vec![scan])?))
    }

    fn limit(&self, plan: &LogicalPlan, l: &Limit, children: Vec<Node>) -> Result<Node> {
        let child = match Self::single_local(children) {
            Ok(c) => c,
            Err(children) => return self.remote(plan, children),
        };
        if matches!(child.dist, Dist::Reference { .. }) {
            let input = Arc::clone(child.plan.schema());
            return self.extend(plan, child, |k, out| keys_by_position(k, &input, out));
        }
        let (Ok(FetchType::Literal(Some(fetch))), Ok(SkipType::Literal(skip))) =
            (l.get_fetch_type(), l.get_skip_type())
        else {
            return self.remote(plan, vec![Node::Local(child)]);
        };
        let per_shard = LogicalPlan::Limit(Limit {
            skip: None,
            fetch: Some(Box::new(lit((fetch + skip) as i64))),
            input: Arc::new(child.plan.clone()),
        });
        let scan = self.materialize(Local {
            plan: per_shard,
            ..child
        })?;
        Ok(Node::Remote(remote_children(plan, vec![scan])?))
    }

    fn distinct(&self, plan: &LogicalPlan, children: Vec<Node>) -> Result<Node> {
        let child = match Self::single_local(children) {
            Ok(c) => c,
            Err(children) => return self.remote(plan, children),
        };
        let local_ok = match &child.dist {
            Dist::Reference { .. } => true,
            Dist::Sharded { keys, .. } => !keys.is_empty(),
        };
        if local_ok {
            let input = Arc::clone(child.plan.schema());
            return self.extend(plan, child, |k, out| keys_by_position(k, &input, out));
        }
        // DISTINCT per shard, then DISTINCT over the union.
        let partial = remote_children(plan, vec![child.plan.clone()])?;
        if !translatable(&partial) {
            return self.remote(plan, vec![Node::Local(child)]);
        }
        let scan = self.materialize(Local {
            plan: partial,
            ..child
        })?;
        Ok(Node::Remote(remote_children(plan, vec![scan])?))
    }

    fn aggregate(&self, plan: &LogicalPlan, a: &Aggregate, children: Vec<Node>) -> Result<Node> {
        let child = match Self::single_local(children) {
            Ok(c) => c,
            Err(children) => return self.remote(plan, children),
        };
        let input_schema = Arc::clone(a.input.schema());
        // Grouping on a distribution key: every group lives in one shard.
        let group_keys: Vec<(usize, String)> = match &child.dist {
            Dist::Sharded { keys, .. } => a
                .group_expr
                .iter()
                .enumerate()
                .filter_map(|(i, g)| {
                    let Expr::Column(c) = unalias(g) else {
                        return None;
                    };
                    let gi = input_schema.index_of_column(c).ok()?;
                    keys.iter().find_map(|(k, class)| {
                        (input_schema.index_of_column(k).ok()? == gi).then(|| (i, class.clone()))
                    })
                })
                .collect(),
            Dist::Reference { .. } => vec![],
        };
        let whole_local = matches!(child.dist, Dist::Reference { .. }) || !group_keys.is_empty();
        if whole_local {
            let candidate = remote_children(plan, vec![child.plan.clone()])?;
            if translatable(&candidate) {
                let out = Arc::clone(candidate.schema());
                let dist = match child.dist {
                    Dist::Sharded { table, .. } => Dist::Sharded {
                        table,
                        keys: group_keys
                            .into_iter()
                            .map(|(i, class)| (output_column(&out, i), class))
                            .collect(),
                    },
                    r => r,
                };
                return Ok(Node::Local(Local {
                    plan: candidate,
                    dist,
                    tables: child.tables,
                }));
            }
            return self.remote(plan, vec![Node::Local(child)]);
        }
        match self.split_aggregate(a, &child)? {
            Some(plan) => Ok(Node::Remote(plan)),
            None => self.remote(plan, vec![Node::Local(child)]),
        }
    }

    /// Partial aggregation on the shards, final on the coordinator.
    fn split_aggregate(&self, a: &Aggregate, child: &Local) -> Result<Option<LogicalPlan>> {
        if a.group_expr
            .iter()
            .any(|g| matches!(g, Expr::GroupingSet(_)))
        {
            return Ok(None);
        }
        let group_exprs: Vec<Expr> = a
            .group_expr
            .iter()
            .enumerate()
            .map(|(i, g)| unalias(g).clone().alias(format!("__g{i}")))
            .collect();
        let aggs: Vec<&AggregateFunction> = a
            .aggr_expr
            .iter()
            .map(|e| match unalias(e) {
                Expr::AggregateFunction(f) => Some(f),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default();
        if aggs.len() != a.aggr_expr.len() {
            return Ok(None);
        }

        // All aggregates DISTINCT over the same argument: shards send the
        // distinct (groups, argument) pairs, the coordinator aggregates.
        let all_distinct = aggs.iter().all(|f| {
            f.params.distinct
                && f.params.filter.is_none()
                && f.params.args.len() == 1
                && f.params.args == aggs[0].params.args
        });
        if aggs.iter().any(|f| f.params.distinct) {
            if !all_distinct || aggs.is_empty() {
                return Ok(None);
            }
            let mut partial_groups = group_exprs.clone();
            partial_groups.push(aggs[0].params.args[0].clone().alias("__d"));
            let finals: Vec<Expr> = aggs
                .iter()
                .enumerate()
                .map(|(j, f)| {
                    let mut f = (*f).clone();
                    f.params.args = vec![col("__d")];
                    Expr::AggregateFunction(f).alias(format!("__f{j}"))
                })
                .collect();
            let outputs = (0..aggs.len()).map(|j| col(format!("__f{j}"))).collect();
            return self.finish_split(a, child, partial_groups, vec![], finals, outputs);
        }

        let mut partials: Vec<Expr> = Vec::new();
        let mut finals: Vec<Expr> = Vec::new();
        let mut outputs: Vec<Expr> = Vec::new();
        for f in &aggs {
            let name = f.func.name().to_ascii_lowercase();
            let p = partials.len();
            let mk = |udaf, arg: Expr| {
                Expr::AggregateFunction(AggregateFunction::new_udf(
                    udaf,
                    vec![arg],
                    false,
                    None,
                    vec![],
                    None,
                ))
            };
            match name.as_str() {
                "sum" | "count" | "min" | "max" | "bool_and" | "bool_or" => {
                    partials.push(Expr::AggregateFunction((*f).clone()).alias(format!("__p{p}")));
                    let combine = match name.as_str() {
                        "sum" | "count" => sum_udaf(),
                        "min" => min_udaf(),
                        "max" => max_udaf(),
                        _ => f.func.clone(),
                    };
                    let fi = finals.len();
                    finals.push(mk(combine, col(format!("__p{p}"))).alias(format!("__f{fi}")));
                    let out = col(format!("__f{fi}"));
                    outputs.push(if name == "count" {
                        // A group present in no shard's partial cannot occur;
                        // an ungrouped COUNT over no rows sums zeros.
                        // (CASE, not COALESCE: the merge plan is not re-simplified.)
                        datafusion::logical_expr::when(out.clone().is_null(), lit(0i64))
                            .otherwise(out)?
                    } else {
                        out
                    });
                }
                "avg" => {
                    let mut sum = (*f).clone();
                    sum.func = sum_udaf();
                    // `avg(CAST(d AS DOUBLE))` of a decimal (how AVG of a
                    // decimal is planned, see `semantics.rs`): the shards sum
                    // the decimal exactly, which DuckDB does twice as fast
                    // as summing doubles, and the quotient is taken in
                    // DOUBLE here, as DuckDB's own AVG of a decimal does.
                    if let [Expr::Cast(Cast { expr, field })] = sum.params.args.as_slice()
                        && *field.data_type() == DataType::Float64
                        && matches!(
                            expr.get_type(child.plan.schema())?,
                            DataType::Decimal128(..)
                        )
                    {
                        sum.params.args = vec![(**expr).clone()];
                    }
                    let mut cnt = sum.clone();
                    cnt.func = count_udaf();
                    partials.push(Expr::AggregateFunction(sum).alias(format!("__p{p}")));
                    partials.push(Expr::AggregateFunction(cnt).alias(format!("__p{}", p + 1)));
                    let fi = finals.len();
                    finals.push(mk(sum_udaf(), col(format!("__p{p}"))).alias(format!("__f{fi}")));
                    finals.push(
                        mk(sum_udaf(), col(format!("__p{}", p + 1)))
                            .alias(format!("__f{}", fi + 1)),
                    );
                    let s = Expr::Cast(Cast::new(
                        Box::new(col(format!("__f{fi}"))),
                        DataType::Float64,
                    ));
                    let c = Expr::Cast(Cast::new(
                        Box::new(col(format!("__f{}", fi + 1))),
                        DataType::Float64,
                    ));
                    // NULLIF keeps AVG over zero rows NULL instead of NaN.
                    outputs.push(s / datafusion::functions::core::expr_fn::nullif(c, lit(0f64)));
                }
                _ => return Ok(None),
            }
        }
        self.finish_split(a, child, group_exprs, partials, finals, outputs)
    }

    /// Builds the two halves of a split aggregate: `partials` grouped by
    /// `groups` on the shards, then `finals` grouped by the `__g` columns on
    /// the coordinator, and a projection restoring the original aggregate's
    /// names and types from the `__g` columns and `outputs`.
    fn finish_split(
        &self,
        a: &Aggregate,
        child: &Local,
        groups: Vec<Expr>,
        partials: Vec<Expr>,
        finals: Vec<Expr>,
        outputs: Vec<Expr>,
    ) -> Result<Option<LogicalPlan>> {
        let partial = LogicalPlan::Aggregate(Aggregate::try_new(
            Arc::new(child.plan.clone()),
            groups,
            partials,
        )?);
        if !translatable(&partial) {
            return Ok(None);
        }
        let scan = self.materialize(Local {
            plan: partial,
            dist: child.dist.clone(),
            tables: child.tables.clone(),
        })?;
        let n_groups = a.group_expr.len();
        let group_cols = (0..n_groups).map(|i| col(format!("__g{i}"))).collect();
        let fin = LogicalPlan::Aggregate(Aggregate::try_new(Arc::new(scan), group_cols, finals)?);
        let restore = |e: Expr, i: usize| -> Expr {
            let (q, f) = a.schema.qualified_field(i);
            Expr::Cast(Cast::new(Box::new(e), f.data_type().clone()))
                .alias_qualified(q.cloned(), f.name())
        };
        let proj = (0..n_groups)
            .map(|i| col(format!("__g{i}")))
            .chain(outputs)
            .enumerate()
            .map(|(i, e)| restore(e, i))
            .collect();
        Ok(Some(LogicalPlan::Projection(Projection::try_new(
            proj,
            Arc::new(fin),
        )?)))
    }

    /// The filtering side of a semi or anti join computed on the coordinator
    /// needs only its distinct keys: each shard sends them once.
    fn distinct_keys(j: &datafusion::logical_expr::Join, right: Local) -> Local {
        let Dist::Sharded { table, .. } = &right.dist else {
            return right;
        };
        if !matches!(j.join_type, JoinType::LeftSemi | JoinType::LeftAnti) || j.filter.is_some() {
            return right;
        }
        let mut keys: Vec<Expr> = Vec::new();
        for (_, r) in &j.on {
            if !matches!(r, Expr::Column(_)) {
                return right;
            }
            if !keys.contains(r) {
                keys.push(r.clone());
            }
        }
        let dedup = Aggregate::try_new(Arc::new(right.plan.clone()), keys, vec![])
            .map(LogicalPlan::Aggregate);
        match dedup {
            Ok(plan) if translatable(&plan) => Local {
                plan,
                dist: Dist::Sharded {
                    table: Arc::clone(table),
                    keys: vec![],
                },
                tables: right.tables,
            },
            _ => right,
        }
    }

    fn join(
        &self,
        plan: &LogicalPlan,
        j: &datafusion::logical_expr::Join,
        children: Vec<Node>,
    ) -> Result<Node> {
        let [left, right] = match <[Node; 2]>::try_from(children) {
            Ok([Node::Local(l), Node::Local(r)]) => [l, r],
            Ok([l, Node::Local(r)]) => {
                return self.remote(plan, vec![l, Node::Local(Self::distinct_keys(j, r))]);
            }
            Ok([l, r]) => return self.remote(plan, vec![l, r]),
            Err(v) => return self.remote(plan, v),
        };
        use JoinType::*;
        let jt = j.join_type;
        let dist = match (&left.dist, &right.dist) {
            (Dist::Reference { .. }, Dist::Reference { .. }) => Some(left.dist.clone()),
            // Distributed left, reference right: every left row meets the
            // whole right side in its shard.
            (Dist::Sharded { table, keys }, Dist::Reference { .. })
                if matches!(jt, Inner | Left | LeftSemi | LeftAnti) =>
            {
                Some(Dist::Sharded {
                    table: Arc::clone(table),
                    keys: keys.clone(),
                })
            }
            (Dist::Reference { .. }, Dist::Sharded { table, keys })
                if matches!(jt, Inner | Right | RightSemi | RightAnti) =>
            {
                Some(Dist::Sharded {
                    table: Arc::clone(table),
                    keys: keys.clone(),
                })
            }
            (
                Dist::Sharded {
                    table: lt,
                    keys: lk,
                },
                Dist::Sharded {
                    table: rt,
                    keys: rk,
                },
            ) if Dist::same_placement(lt, rt) => {
                let ls = j.left.schema();
                let rs = j.right.schema();
                let colocated = j.on.iter().any(|(l, r)| {
                    let (Expr::Column(lc), Expr::Column(rc)) = (unalias(l), unalias(r)) else {
                        return false;
                    };
                    let lclass = lk.iter().find(|(k, _)| {
                        matches!((ls.index_of_column(k), ls.index_of_column(lc)), (Ok(a), Ok(b)) if a == b)
                    });
                    let rclass = rk.iter().find(|(k, _)| {
                        matches!((rs.index_of_column(k), rs.index_of_column(rc)), (Ok(a), Ok(b)) if a == b)
                    });
                    matches!((lclass, rclass), (Some((_, a)), Some((_, b))) if a == b)
                });
                if colocated {
                    let keys = match jt {
                        Inner => lk.iter().chain(rk.iter()).cloned().collect(),
                        Left | LeftSemi | LeftAnti | LeftMark => lk.clone(),
                        Right | RightSemi | RightAnti | RightMark => rk.clone(),
                        Full => vec![],
                    };
                    Some(Dist::Sharded {
                        table: Arc::clone(lt),
                        keys,
                    })
                } else {
                    None
                }
            }
            _ => None,
        };
        let Some(dist) = dist else {
            let right = Self::distinct_keys(j, right);
            return self.remote(plan, vec![Node::Local(left), Node::Local(right)]);
        };
        let candidate = remote_children(plan, vec![left.plan.clone(), right.plan.clone()])?;
        if !translatable(&candidate) {
            return self.remote(plan, vec![Node::Local(left), Node::Local(right)]);
        }
        let mut tables = left.tables;
        tables.extend(right.tables);
        Ok(Node::Local(Local {
            plan: candidate,
            dist,
            tables,
        }))
    }
}
