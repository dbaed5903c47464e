//! The query engine of the coordinator: SQL in, distributed plans and
//! results out.
//!
//! It owns the DataFusion session (whose catalog mirrors the cluster
//! catalog), classifies statements, plans queries (DataFusion planner and
//! optimizer, then [`DistributedPlanner`]), runs merge plans, and applies
//! DDL and DML to every shard. It knows nothing of Flight SQL; `service`
//! maps its results to the protocol.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::{QueryPlanner, SessionState};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::Volatility;
use datafusion::logical_expr::{DdlStatement, DmlStatement, LogicalPlan, WriteOp};
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::Expr;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    CreateTableOptions, Expr as SqlExpr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident,
    Query, SelectItem, SetExpr, SqlOption, Statement, Value, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use flight_worker::cancel::Cancels;
use futures::{StreamExt, TryStreamExt};

use crate::catalog::{Catalog, Distribution, TableMeta};
use crate::error::{Error, Result};
use crate::gather::{FragmentScan, FsqlQueryPlanner, ShardRoute};
use crate::planner::{Distributed, DistributedPlanner};
use crate::staged::NewTable;
use crate::table::ClusterSchema;
use crate::workers::WorkerPool;

/// The catalog and schema every cluster table lives in.
pub use flight_worker::session::{CATALOG, SCHEMA};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Serve plain unions of shard results as direct worker endpoints.
    pub direct: bool,
    /// Shards of a distributed table when `CREATE TABLE` gives none
    /// (default: one per worker).
    pub default_shards: Option<u32>,
    /// Copies of each shard when `CREATE TABLE` gives no `replicas`.
    pub default_replicas: u32,
    /// Finished statements kept for `system.queries`.
    pub query_history: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            direct: true,
            default_shards: None,
            default_replicas: 1,
            query_history: crate::query_log::DEFAULT_HISTORY,
        }
    }
}

/// What a statement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// Returns rows (SELECT, VALUES, EXPLAIN, ...).
    Query,
    /// Returns an update count (DDL, DML).
    Update,
}

/// A planned query.
#[derive(Debug)]
pub struct PlannedQuery {
    pub query_id: String,
    /// The schema of the result stream (every field nullable).
    pub schema: SchemaRef,
    pub plan: Distributed,
    /// The physical plan, when it was taken from the cache of constant
    /// queries (see [`Engine::constant_plans`]).
    pub physical: Option<Arc<dyn ExecutionPlan>>,
}

/// How many constant queries' plans are kept.
const CONSTANT_PLANS: usize = 256;

pub struct Engine {
    pub catalog: Arc<Catalog>,
    pub pool: Arc<WorkerPool>,
    ctx: SessionContext,
    planner: Arc<FsqlQueryPlanner>,
    pub config: EngineConfig,
    /// Running statements and the recent history (`system.queries`).
    pub query_log: Arc<crate::query_log::QueryLog>,
    /// Cancellation of the client queries merged here.
    cancels: Arc<Cancels>,
    /// Per table: writes hold it shared, a shard move exclusively.
    table_locks:
        parking_lot::Mutex<std::collections::HashMap<String, Arc<tokio::sync::RwLock<()>>>>,
    /// Plans of constant queries, by SQL text and `distributed`: the
    /// `SELECT 1` that JDBC pools and BI tools send to check a connection
    /// is answered without planning it again (most of its latency).
    constant_plans: parking_lot::Mutex<std::collections::HashMap<(String, bool), ConstantPlan>>,
}

/// A constant query's result schema, logical and physical plan.
type ConstantPlan = (SchemaRef, LogicalPlan, Arc<dyn ExecutionPlan>);

/// Whether `plan` reads no table and calls only immutable functions, so
/// that every execution of it gives the same rows.
fn is_constant(plan: &LogicalPlan) -> bool {
    let mut constant = true;
    let _ = plan.apply_with_subqueries(|node| {
        if matches!(
            node,
            LogicalPlan::TableScan(_) | LogicalPlan::Extension(_) | LogicalPlan::RecursiveQuery(_)
        ) {
            constant = false;
        }
        node.apply_expressions(|e| {
            e.apply(|e| {
                let volatility = match e {
                    Expr::ScalarFunction(f) => Some(f.func.signature().volatility),
                    Expr::AggregateFunction(f) => Some(f.func.signature().volatility),
                    Expr::WindowFunction(_) | Expr::Placeholder(_) => Some(Volatility::Volatile),
                    _ => None,
                };
                if volatility.is_some_and(|v| v != Volatility::Immutable) {
                    constant = false;
                }
                Ok(if constant {
                    TreeNodeRecursion::Continue
                } else {
                    TreeNodeRecursion::Stop
                })
            })
        })?;
        Ok(if constant {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    constant
}

/// Replaces `?` placeholders with `$1`, `$2`, ... (outside strings and
/// comments), so both styles bind the same way.
pub fn number_placeholders(sql: &str) -> Result<String> {
    if !sql.contains('?') {
        return Ok(sql.to_string());
    }
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| Error::InvalidArgument(format!("SQL error: {e}")))?;
    let mut n = 0;
    let mut out = String::with_capacity(sql.len() + 8);
    for t in tokens {
        match t {
            Token::Placeholder(p) if p == "?" => {
                n += 1;
                out.push_str(&format!("${n}"));
            }
            other => out.push_str(&other.to_string()),
        }
    }
    Ok(out)
}

pub(crate) fn parse_one(sql: &str) -> Result<Statement> {
    let mut stmts = Parser::parse_sql(&GenericDialect {}, sql)
        .map_err(|e| Error::InvalidArgument(format!("SQL error: {e}")))?;
    match stmts.len() {
        1 => {
            let mut stmt = stmts.remove(0);
            crate::types::exact_big_integers(&mut stmt);
            Ok(stmt)
        }
        0 => Err(Error::InvalidArgument("empty statement".into())),
        n => Err(Error::InvalidArgument(format!(
            "expected one statement, got {n}; send statements one at a time"
        ))),
    }
}

/// Gives casts names of their own. DataFusion names `CAST(x AS T)` like
/// `x`, so `avg(x), avg(CAST(x AS DOUBLE))` collide in one aggregate and
/// `GROUP BY CAST(x AS T), x` binds the select list to the wrong column.
/// Every CAST is wrapped in a one-argument `coalesce` (the identity, which
/// the optimizer removes again), and an unnamed select item with a CAST is
/// named by its SQL text, as DuckDB names it.
fn name_casts(stmt: &mut Statement) {
    struct Rewrite;
    impl VisitorMut for Rewrite {
        type Break = ();
        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
            if let SetExpr::Select(select) = query.body.as_mut() {
                for item in &mut select.projection {
                    if let SelectItem::UnnamedExpr(e) = item {
                        let text = e.to_string();
                        if text.contains("CAST(") || text.contains("::") {
                            *item = SelectItem::ExprWithAlias {
                                expr: e.clone(),
                                alias: Ident::with_quote('"', text),
                            };
                        }
                    }
                }
            }
            ControlFlow::Continue(())
        }
        fn post_visit_expr(&mut self, expr: &mut SqlExpr) -> ControlFlow<()> {
            if matches!(expr, SqlExpr::Cast { .. }) {
                let cast = std::mem::replace(expr, SqlExpr::value(Value::Null));
                let mut call = Parser::new(&GenericDialect {})
                    .try_with_sql("coalesce(NULL)")
                    .and_then(|mut p| p.parse_expr());
                *expr = cast;
                if let Ok(SqlExpr::Function(f)) = &mut call
                    && let FunctionArguments::List(list) = &mut f.args
                    && let [FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))] =
                        list.args.as_mut_slice()
                {
                    std::mem::swap(arg, expr);
                    if let Ok(call) = call {
                        *expr = call;
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Rewrite);
}

/// Whether a statement returns rows or an update count.
pub fn classify(sql: &str) -> Result<StatementKind> {
    let sql = number_placeholders(sql)?;
    if crate::types::parse_create_table(&sql).is_some() || crate::shard_move::parse(&sql).is_some()
    {
        return Ok(StatementKind::Update);
    }
    Ok(match parse_one(&sql)? {
        Statement::Query(_) | Statement::Explain { .. } => StatementKind::Query,
        _ => StatementKind::Update,
    })
}

/// Makes every field nullable (result schemas promise nothing more) and
/// replaces view and dictionary types by their plain forms (not every
/// client reads them).
pub fn nullable_schema(schema: &Schema) -> SchemaRef {
    crate::types::client_schema(schema)
}

/// Rebuilds a batch with exactly `schema` (casting where types differ).
pub fn conform_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(Arc::clone(c))
            } else {
                arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

fn option_value(e: &SqlExpr) -> Option<String> {
    match e {
        SqlExpr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.clone()),
            Value::Number(n, _) => Some(n.clone()),
            _ => None,
        },
        SqlExpr::Identifier(i) => Some(i.value.clone()),
        _ => None,
    }
}

/// Parsed `WITH (...)` table options.
#[derive(Debug, Default)]
struct TableOptions {
    distribution: Option<String>,
    shards: Option<u32>,
    replicas: Option<u32>,
}

fn table_options(opts: &[SqlOption]) -> Result<TableOptions> {
    let mut out = TableOptions::default();
    for o in opts {
        let SqlOption::KeyValue { key, value } = o else {
            return Err(Error::InvalidArgument(format!(
                "unsupported table option {o}; use distribution = '...', shards = N"
            )));
        };
        let v = option_value(value).ok_or_else(|| {
            Error::InvalidArgument(format!("table option {key} needs a string or number value"))
        })?;
        match key.value.to_ascii_lowercase().as_str() {
            "distribution" => out.distribution = Some(v),
            "shards" => {
                let n: u32 = v.parse().map_err(|_| {
                    Error::InvalidArgument(format!("shards must be a positive integer, got {v}"))
                })?;
                if n == 0 || n > 4096 {
                    return Err(Error::InvalidArgument(format!(
                        "shards must be between 1 and 4096, got {n}"
                    )));
                }
                out.shards = Some(n);
            }
            "replicas" => {
                let n: u32 = v.parse().map_err(|_| {
                    Error::InvalidArgument(format!("replicas must be a positive integer, got {v}"))
                })?;
                if n == 0 {
                    return Err(Error::InvalidArgument(
                        "replicas must be at least 1".to_string(),
                    ));
                }
                out.replicas = Some(n);
            }
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown table option {other}; valid options: distribution, shards, replicas"
                )));
            }
        }
    }
    Ok(out)
}

fn parse_distribution(spec: Option<&str>, schema: &Schema) -> Result<Distribution> {
    let Some(spec) = spec else {
        return Ok(Distribution::RoundRobin);
    };
    let s = spec.trim().to_ascii_lowercase();
    if s == "reference" || s == "replicated" {
        return Ok(Distribution::Reference);
    }
    if s == "round_robin" || s == "roundrobin" {
        return Ok(Distribution::RoundRobin);
    }
    if let Some(inner) = s.strip_prefix("hash(").and_then(|r| r.strip_suffix(')')) {
        let column = inner.trim().trim_matches('"');
        let field = schema.field_with_name(column).map_err(|_| {
            Error::InvalidArgument(format!(
                "distribution column {column} is not a column of the table"
            ))
        })?;
        if !fsql_proto::hash::is_hashable(field.data_type()) {
            return Err(Error::InvalidArgument(format!(
                "cannot hash-distribute on column {column} of type {}: distribution keys \
                 must be integers, decimals, floats, strings (UUID included), blobs, \
                 booleans, dates, times or timestamps",
                field.data_type()
            )));
        }
        return Ok(Distribution::Hash(column.to_string()));
    }
    Err(Error::InvalidArgument(format!(
        "unknown distribution '{spec}'; use 'hash(column)', 'round_robin' or 'reference'"
    )))
}

/// The cluster options of `CREATE TABLE ... WITH (...)`.
fn create_options(options: CreateTableOptions) -> Result<TableOptions> {
    match options {
        CreateTableOptions::None => Ok(TableOptions::default()),
        CreateTableOptions::With(o) => table_options(&o),
        other => Err(Error::InvalidArgument(format!(
            "unsupported table options {other}; use WITH (distribution = '...', shards = N)"
        ))),
    }
}

impl Engine {
    pub fn new(catalog: Arc<Catalog>, pool: Arc<WorkerPool>, config: EngineConfig) -> Result<Self> {
        let planner = Arc::new(FsqlQueryPlanner {
            pool: Arc::clone(&pool),
        });
        let mut session_config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_create_default_catalog_and_schema(true)
            .with_information_schema(false);
        // VARCHAR is Utf8 (every Flight SQL client reads it; not all read
        // string views).
        session_config
            .options_mut()
            .sql_parser
            .map_string_types_to_utf8view = false;
        // DataFusion 54 derives a CASE's nullability more precisely in the
        // logical plan than in the physical one (`CASE WHEN a > 1 THEN a
        // ELSE 41 END` is NOT NULL logically, nullable physically), and its
        // aggregate check then rejects valid plans such as a DISTINCT over
        // such a CASE beside a window. Results are unaffected by the
        // difference; every column we return is nullable anyway.
        session_config
            .options_mut()
            .execution
            .skip_physical_aggregate_schema_check = true;
        let state = SessionStateBuilder::new()
            .with_config(session_config)
            .with_default_features()
            .with_optimizer_rules(crate::optimizer::optimizer_rules())
            .with_physical_optimizer_rules(crate::optimizer::physical_optimizer_rules())
            .with_query_planner(Arc::clone(&planner) as Arc<dyn QueryPlanner + Send + Sync>)
            .build();
        let ctx = SessionContext::new_with_state(state);
        let engine = Self {
            catalog,
            pool,
            ctx,
            planner,
            query_log: Arc::new(crate::query_log::QueryLog::new(config.query_history)),
            config,
            cancels: Arc::default(),
            table_locks: Default::default(),
            constant_plans: Default::default(),
        };
        let schema = Arc::new(ClusterSchema {
            catalog: Arc::clone(&engine.catalog),
        });
        let catalog = engine
            .ctx
            .catalog(CATALOG)
            .ok_or_else(|| Error::Internal(format!("catalog {CATALOG} is missing")))?;
        catalog.register_schema(SCHEMA, schema)?;
        catalog.register_schema(
            crate::system::SYSTEM_SCHEMA,
            Arc::new(crate::system::SystemSchema {
                catalog: Arc::clone(&engine.catalog),
                pool: Arc::clone(&engine.pool),
                queries: Arc::clone(&engine.query_log),
            }),
        )?;
        Ok(engine)
    }

    pub fn state(&self) -> SessionState {
        self.ctx.state()
    }

    /// Plans a SQL statement into a DataFusion logical plan (unoptimized).
    async fn logical_plan(&self, sql: &str) -> Result<LogicalPlan> {
        self.statement_plan(parse_one(&number_placeholders(sql)?)?)
            .await
    }

    /// Plans a parsed statement into a DataFusion logical plan.
    async fn statement_plan(&self, stmt: Statement) -> Result<LogicalPlan> {
        let mut stmt = stmt;
        name_casts(&mut stmt);
        let mut state = self.state();
        for (name, files) in crate::files::resolve(&self.catalog, &self.pool, &mut stmt).await? {
            state.register_udtf(&name, files);
        }
        state
            .statement_to_plan(DFStatement::Statement(Box::new(stmt)))
            .await
            .map_err(Error::from)
    }

    /// The parameter types of a statement, in `$n` order.
    pub async fn parameter_schema(&self, sql: &str) -> Result<SchemaRef> {
        if crate::types::parse_create_table(&number_placeholders(sql)?).is_some() {
            return Ok(Arc::new(Schema::empty()));
        }
        let plan = self.logical_plan(sql).await?;
        let types = plan.get_parameter_types()?;
        let mut params: Vec<(usize, Option<DataType>)> = types
            .into_iter()
            .filter_map(|(k, v)| {
                let n: usize = k.trim_start_matches('$').parse().ok()?;
                Some((n, v))
            })
            .collect();
        params.sort_by_key(|(n, _)| *n);
        Ok(Arc::new(Schema::new(
            params
                .into_iter()
                .map(|(n, t)| {
                    Field::new(
                        format!("${n}"),
                        match t {
                            Some(DataType::Null) | None => DataType::Utf8,
                            Some(t) => crate::types::client_type(&t),
                        },
                        true,
                    )
                })
                .collect::<Vec<_>>(),
        )))
    }

    fn bind(plan: LogicalPlan, params: Option<&RecordBatch>, row: usize) -> Result<LogicalPlan> {
        let Some(params) = params else {
            return Ok(plan);
        };
        if params.num_columns() == 0 {
            return Ok(plan);
        }
        let types = plan.get_parameter_types()?;
        if types.is_empty() {
            return Ok(plan);
        }
        let expected = types
            .keys()
            .filter_map(|k| k.trim_start_matches('$').parse::<usize>().ok())
            .max()
            .unwrap_or(0);
        if params.num_columns() < expected {
            return Err(Error::InvalidArgument(format!(
                "the statement has {expected} parameter(s) but {} value(s) were bound",
                params.num_columns()
            )));
        }
        if row >= params.num_rows() {
            return Err(Error::InvalidArgument(
                "the bound parameter batch has no rows".into(),
            ));
        }
        let mut values = Vec::with_capacity(params.num_columns());
        for (i, column) in params.columns().iter().enumerate() {
            let mut v = ScalarValue::try_from_array(column, row)?;
            // The type the statement needs; without one (say `SELECT ?`),
            // the client's type in its plain form (no views, dictionaries).
            let target = match types.get(&format!("${}", i + 1)) {
                Some(Some(t)) if *t != DataType::Null => t.clone(),
                _ => crate::types::client_type(&v.data_type()),
            };
            if v.data_type() != target {
                let t = &target;
                v = v.cast_to(t).map_err(|e| {
                    Error::InvalidArgument(format!(
                        "parameter ${} ({}) cannot be bound as {t}: {e}",
                        i + 1,
                        v.data_type()
                    ))
                })?;
            }
            values.push(v);
        }
        Ok(plan.with_param_values(ParamValues::List(
            values.into_iter().map(Into::into).collect(),
        ))?)
    }

    /// Plans a query (SELECT, VALUES, EXPLAIN) with optional bound
    /// parameters (row `row` of `params`).
    pub async fn plan_query(
        &self,
        sql: &str,
        params: Option<&RecordBatch>,
        query_id: &str,
        distributed: bool,
    ) -> Result<PlannedQuery> {
        if params.is_none()
            && let Some(planned) = self.constant_plan(sql, query_id, distributed)?
        {
            return Ok(planned);
        }
        let stmt = parse_one(&number_placeholders(sql)?)?;
        if let Statement::Explain {
            statement, analyze, ..
        } = &stmt
        {
            let sql = statement.to_string();
            let batch = if *analyze {
                self.explain_analyze(&sql, params, distributed).await?
            } else {
                self.explain(&sql, params, distributed).await?
            };
            let schema = batch.schema();
            let plan = self.ctx.read_batch(batch)?.into_unoptimized_plan();
            return Ok(PlannedQuery {
                query_id: query_id.to_string(),
                schema,
                plan: Distributed::Merged(plan),
                physical: None,
            });
        }
        if !matches!(stmt, Statement::Query(_)) {
            return Err(Error::InvalidArgument(
                "not a query; run DDL and DML as updates".into(),
            ));
        }
        let plan = self.statement_plan(stmt).await?;
        let constant = params.is_none() && is_constant(&plan);
        let mut planned = self
            .plan_logical(plan, params, query_id, distributed)
            .await?;
        if constant && let Distributed::Merged(plan) = &planned.plan {
            let physical = self
                .planner
                .create_physical_plan(plan, &self.state())
                .await?;
            let entry = (
                Arc::clone(&planned.schema),
                plan.clone(),
                Arc::clone(&physical),
            );
            let mut cache = self.constant_plans.lock();
            if cache.len() >= CONSTANT_PLANS {
                cache.clear();
            }
            cache.insert((sql.to_string(), distributed), entry);
            planned.physical = Some(reset_plan_states(physical)?);
        }
        Ok(planned)
    }

    /// A fresh copy of the cached plan of the constant query `sql`.
    fn constant_plan(
        &self,
        sql: &str,
        query_id: &str,
        distributed: bool,
    ) -> Result<Option<PlannedQuery>> {
        let cache = self.constant_plans.lock();
        let Some((schema, plan, physical)) = cache.get(&(sql.to_string(), distributed)) else {
            return Ok(None);
        };
        Ok(Some(PlannedQuery {
            query_id: query_id.to_string(),
            schema: Arc::clone(schema),
            plan: Distributed::Merged(plan.clone()),
            // Operators keep per-execution state: each run gets its own.
            physical: Some(reset_plan_states(Arc::clone(physical))?),
        }))
    }

    pub(crate) async fn plan_logical(
        &self,
        plan: LogicalPlan,
        params: Option<&RecordBatch>,
        query_id: &str,
        distributed: bool,
    ) -> Result<PlannedQuery> {
        let plan = Self::bind(plan, params, 0)?;
        let plan = crate::semantics::duckdb_semantics(plan)?;
        let state = self.state();
        let mut optimized = state.optimize(&plan)?;
        if distributed {
            optimized = crate::reduce::reduce_joins(optimized)?;
            optimized = crate::eager::eager_aggregation(optimized)?;
        }
        let schema = nullable_schema(optimized.schema().as_arrow());
        let planner = DistributedPlanner {
            catalog: &self.catalog,
            query_id,
            distributed,
        };
        let mut dist = planner.plan(&optimized)?;
        if !self.config.direct
            && let Distributed::Direct {
                fragment,
                routes,
                label,
            } = dist
        {
            dist = Distributed::Merged(fragment_scan(query_id, fragment, routes, label));
        }
        Ok(PlannedQuery {
            query_id: query_id.to_string(),
            schema,
            plan: dist,
            physical: None,
        })
    }

    /// Cancels a client query: its merged stream here ends with CANCELLED,
    /// and every worker interrupts its fragments and refuses its tickets.
    /// Returns whether every live worker confirmed.
    pub async fn cancel(&self, query_id: &str) -> bool {
        self.cancels.cancel(query_id);
        let request = fsql_proto::worker_request::Request::Cancel(fsql_proto::CancelQuery {
            query_id: query_id.to_string(),
        });
        let workers = self.catalog.workers();
        let results = futures::future::join_all(workers.iter().map(|w| {
            self.pool
                .action(&w.url, flight_worker::ACTION_CANCEL, request.clone())
        }))
        .await;
        results.iter().all(|r| {
            if let Err(e) = r {
                tracing::warn!(query_id, "cancel: {e}");
            }
            r.is_ok()
        })
    }

    /// Runs a planned query to one stream of batches with `schema`.
    pub async fn execute(&self, planned: PlannedQuery) -> Result<SendableRecordBatchStream> {
        Ok(self.execute_plan(planned).await?.0)
    }

    /// [`Self::execute`], also returning the physical plan running.
    async fn execute_plan(
        &self,
        planned: PlannedQuery,
    ) -> Result<(
        SendableRecordBatchStream,
        Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    )> {
        let cancel = self
            .cancels
            .register(&planned.query_id)
            .ok_or(Error::Cancelled)?;
        let plan = match planned.plan {
            Distributed::Merged(plan) => plan,
            Distributed::Direct {
                fragment,
                routes,
                label,
            } => fragment_scan(&planned.query_id, fragment, routes, label),
        };
        let state = self.state();
        let physical = match planned.physical {
            Some(physical) => physical,
            None => self.planner.create_physical_plan(&plan, &state).await?,
        };
        let stream = execute_stream(Arc::clone(&physical), state.task_ctx())?;
        let schema = planned.schema;
        let out_schema = Arc::clone(&schema);
        let out = stream.map(move |b| {
            b.and_then(|b| {
                conform_batch(&b, &schema)
                    .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
            })
        });
        // A cancelled query ends with CANCELLED, never as a short result.
        let out = futures::stream::unfold(Some((out, cancel)), |state| async move {
            let (mut out, cancel) = state?;
            tokio::select! {
                biased;
                () = cancel.token().cancelled() => Some((
                    Err(datafusion::error::DataFusionError::External(Box::new(
                        tonic::Status::cancelled("the query was cancelled"),
                    ))),
                    None,
                )),
                item = out.next() => item.map(|item| (item, Some((out, cancel)))),
            }
        });
        Ok((
            Box::pin(
                datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(out_schema, out),
            ),
            physical,
        ))
    }

    /// Runs a planned query into a table (CREATE TABLE AS, INSERT ...
    /// SELECT); returns the rows written. Progress (files read by file
    /// scans, rows written) goes to the statement's `system.queries` entry.
    /// A `staged` table is not in the catalog yet (see [`crate::staged`]).
    pub(crate) async fn load(
        &self,
        meta: &TableMeta,
        planned: PlannedQuery,
        staged: bool,
    ) -> Result<u64> {
        let (stream, physical) = self.execute_plan(planned).await?;
        let rows = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = Arc::clone(&rows);
        let counted = stream.map_err(Error::from).inspect_ok(move |b| {
            counter.fetch_add(b.num_rows() as u64, std::sync::atomic::Ordering::Relaxed);
        });
        let report = || {
            crate::query_log::report_progress(|| {
                let rows = rows.load(std::sync::atomic::Ordering::Relaxed);
                match crate::files::progress(&physical) {
                    Some((files_done, files, bytes_done, bytes)) => {
                        let pct = (bytes_done * 100)
                            .checked_div(bytes)
                            .unwrap_or(files_done * 100 / files.max(1));
                        format!("{pct}% ({files_done}/{files} files read, {rows} rows written)")
                    }
                    None => format!("{rows} rows written"),
                }
            })
        };
        let write = async {
            if staged {
                self.write_staged(meta, counted).await
            } else {
                self.write(meta, counted).await
            }
        };
        tokio::pin!(write);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                written = &mut write => {
                    report();
                    return written;
                }
                _ = tick.tick() => report(),
            }
        }
    }

    /// EXPLAIN: the logical plan, the distributed plan, and each fragment's
    /// DuckDB SQL.
    pub async fn explain(
        &self,
        sql: &str,
        params: Option<&RecordBatch>,
        distributed: bool,
    ) -> Result<RecordBatch> {
        let plan = self.logical_plan(sql).await?;
        let planned = self
            .plan_logical(plan, params, "explain", distributed)
            .await?;
        let mut rows: Vec<(String, String)> = Vec::new();
        match &planned.plan {
            Distributed::Direct {
                fragment,
                routes,
                label,
            } => {
                rows.push((
                    "distributed_plan".into(),
                    format!(
                        "Direct: {} endpoint(s), one per shard of {label}, read by the client from the workers\n",
                        routes.len()
                    ),
                ));
                rows.push(fragment_rows(0, fragment, routes.len()));
            }
            Distributed::Merged(plan) => {
                rows.push((
                    "distributed_plan".into(),
                    format!("Merged at the coordinator:\n{}", plan.display_indent()),
                ));
                plan.apply_with_subqueries(|node| {
                    if let LogicalPlan::Extension(ext) = node
                        && let Some(scan) = ext.node.as_any().downcast_ref::<FragmentScan>()
                    {
                        rows.push(fragment_rows(scan.id, &scan.fragment, scan.routes.len()));
                    }
                    Ok(TreeNodeRecursion::Continue)
                })?;
            }
        }
        explain_batch(&rows)
    }

    /// EXPLAIN ANALYZE: runs the query (merging every result here) and
    /// shows the distributed plan, each fragment's shard reads (worker,
    /// rows, time) and the merge plan with its metrics.
    pub async fn explain_analyze(
        &self,
        sql: &str,
        params: Option<&RecordBatch>,
        distributed: bool,
    ) -> Result<RecordBatch> {
        let query_id = format!("explain-analyze-{}", uuid::Uuid::new_v4());
        let plan = self.logical_plan(sql).await?;
        let planned = self
            .plan_logical(plan, params, &query_id, distributed)
            .await?;
        let plan = match planned.plan {
            Distributed::Merged(plan) => plan,
            Distributed::Direct {
                fragment,
                routes,
                label,
            } => fragment_scan(&query_id, fragment, routes, label),
        };
        let state = self.state();
        let started = std::time::Instant::now();
        let physical = self.planner.create_physical_plan(&plan, &state).await?;
        let mut stream = execute_stream(Arc::clone(&physical), state.task_ctx())?;
        let mut result_rows = 0;
        while let Some(batch) = stream.next().await {
            result_rows += batch?.num_rows();
        }
        let elapsed = started.elapsed();
        let mut rows: Vec<(String, String)> = vec![(
            "distributed_plan".into(),
            format!("Merged at the coordinator:\n{}", plan.display_indent()),
        )];
        let mut gathers = Vec::new();
        shard_gathers(&physical, &mut gathers);
        for (i, (label, mut runs)) in gathers.into_iter().enumerate() {
            runs.sort_by_key(|r| r.shard);
            let total: u64 = runs.iter().map(|r| r.rows).sum();
            let mut text = format!("{} shard(s) of {label}, {total} rows:\n", runs.len());
            for r in &runs {
                text.push_str(&format!(
                    "  shard {}: {} rows in {:.1} ms from {}{}\n",
                    r.shard,
                    r.rows,
                    r.elapsed.as_secs_f64() * 1000.0,
                    r.worker,
                    if r.failovers > 0 {
                        format!(" (after {} failed replica(s))", r.failovers)
                    } else {
                        String::new()
                    }
                ));
            }
            rows.push((format!("fragment #{i} (analyzed)"), text));
        }
        rows.push((
            "merge_plan (analyzed)".into(),
            datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(
                physical.as_ref(),
            )
            .indent(true)
            .to_string(),
        ));
        rows.push((
            "total".into(),
            format!(
                "{result_rows} rows in {:.1} ms",
                elapsed.as_secs_f64() * 1000.0
            ),
        ));
        explain_batch(&rows)
    }

    /// Runs DDL or DML; returns the affected row count.
    pub async fn execute_update(&self, sql: &str, params: Option<&RecordBatch>) -> Result<i64> {
        let sql = number_placeholders(sql)?;
        if let Some(m) = crate::shard_move::parse(&sql) {
            return self.move_shard(&m?).await;
        }
        // CREATE TABLE with a column list is read in DuckDB spelling (types
        // DataFusion does not know); everything else as usual.
        let stmt = match crate::types::parse_create_table(&sql) {
            Some(stmt) => stmt,
            None => parse_one(&sql)?,
        };
        match stmt {
            Statement::CreateTable(mut ct) if ct.query.is_none() => {
                let opts = create_options(std::mem::take(&mut ct.table_options))?;
                let name = ct
                    .name
                    .0
                    .last()
                    .and_then(|p| p.as_ident())
                    .map(crate::types::normalize_ident)
                    .ok_or_else(|| Error::InvalidArgument(format!("bad table name {}", ct.name)))?;
                let schema = crate::types::columns_schema(&ct.columns)?;
                let distribution = parse_distribution(opts.distribution.as_deref(), &schema)?;
                let room = self
                    .make_room(&name, ct.if_not_exists, ct.or_replace)
                    .await?;
                let table = NewTable {
                    name: &name,
                    schema,
                    distribution,
                    shards: opts.shards,
                    replicas: opts.replicas,
                };
                self.create_with(table, room, None).await
            }
            Statement::CreateTable(mut ct) => {
                let opts = create_options(std::mem::take(&mut ct.table_options))?;
                let plan = self.statement_plan(Statement::CreateTable(ct)).await?;
                let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(c)) = plan else {
                    return Err(Error::Unsupported(format!(
                        "unsupported CREATE TABLE: {sql}"
                    )));
                };
                self.create_table(c, opts, params).await
            }
            Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. } => Err(Error::Unsupported(NO_TRANSACTIONS.into())),
            Statement::Query(_) | Statement::Explain { .. } => Err(Error::InvalidArgument(
                "a query returns rows; execute it as a query, not an update".into(),
            )),
            other => {
                let plan = self.statement_plan(other).await?;
                match plan {
                    LogicalPlan::Dml(dml) => self.dml(dml, params).await,
                    LogicalPlan::Ddl(DdlStatement::DropTable(d)) => {
                        let name = d.name.table().to_string();
                        self.drop_table(&name, d.if_exists).await?;
                        Ok(0)
                    }
                    other => Err(Error::Unsupported(format!(
                        "statement not supported by this cluster: {}",
                        other.display()
                    ))),
                }
            }
        }
    }

    async fn create_table(
        &self,
        c: datafusion::logical_expr::CreateMemoryTable,
        opts: TableOptions,
        params: Option<&RecordBatch>,
    ) -> Result<i64> {
        let name = c.name.table().to_string();
        let schema = Arc::new(c.input.schema().as_arrow().clone());
        let distribution = parse_distribution(opts.distribution.as_deref(), &schema)?;
        let room = self.make_room(&name, c.if_not_exists, c.or_replace).await?;
        let input = match c.input.as_ref() {
            LogicalPlan::EmptyRelation(_) => None,
            input => Some((input.clone(), params)),
        };
        let table = NewTable {
            name: &name,
            schema,
            distribution,
            shards: opts.shards,
            replicas: opts.replicas,
        };
        self.create_with(table, room, input).await
    }

    /// Places a new (empty) table, creates its shards on the workers, and
    /// records it.
    pub async fn new_table(
        &self,
        name: &str,
        schema: SchemaRef,
        distribution: Distribution,
        shards: Option<u32>,
        replicas: Option<u32>,
    ) -> Result<Arc<TableMeta>> {
        let meta = self
            .place_table(name, name, schema, distribution, shards, replicas)
            .await?;
        match self.catalog.create_table(meta.clone()).await {
            Ok(meta) => Ok(meta),
            // Another coordinator created the table meanwhile: the shards
            // (named alike) are its.
            Err(e @ Error::AlreadyExists(_)) => Err(e),
            Err(e) => {
                self.drop_shards(&meta).await;
                Err(e)
            }
        }
    }

    /// Places a table and creates its empty shards, named after `storage`,
    /// on the workers; does not record it.
    ///
    /// Shard `s` goes to workers `s, s+1, ..., s+R-1` (modulo the live
    /// workers, sorted by id), so the R replicas of a shard are on distinct
    /// workers and shards spread evenly.
    pub(crate) async fn place_table(
        &self,
        name: &str,
        storage: &str,
        schema: SchemaRef,
        distribution: Distribution,
        shards: Option<u32>,
        replicas: Option<u32>,
    ) -> Result<TableMeta> {
        let workers = self.catalog.workers();
        if workers.is_empty() {
            return Err(Error::Unavailable("the cluster has no live workers".into()));
        }
        let replicas = if distribution == Distribution::Reference {
            1
        } else {
            replicas.unwrap_or(self.config.default_replicas).max(1)
        };
        if replicas as usize > workers.len() {
            return Err(Error::InvalidArgument(format!(
                "replicas = {replicas} needs at least {replicas} live workers; the cluster has {}",
                workers.len()
            )));
        }
        let (shard_count, placement) = if distribution == Distribution::Reference {
            (1, vec![workers.iter().map(|w| w.id.clone()).collect()])
        } else {
            let n = shards
                .or(self.config.default_shards)
                .unwrap_or(workers.len() as u32)
                .max(1);
            let placement = (0..n as usize)
                .map(|s| {
                    (0..replicas as usize)
                        .map(|r| workers[(s + r) % workers.len()].id.clone())
                        .collect()
                })
                .collect();
            (n, placement)
        };
        let meta = TableMeta {
            name: name.to_string(),
            storage: storage.to_string(),
            schema,
            distribution,
            shard_count,
            replicas,
            placement,
        };
        self.create_shards(&meta).await?;
        Ok(meta)
    }

    /// Creates every (empty) shard replica of `meta` on its worker; on an
    /// error drops the ones created.
    pub(crate) async fn create_shards(&self, meta: &TableMeta) -> Result<()> {
        let schema_bytes = fsql_proto::ipc::schema_to_bytes(&meta.schema)?;
        let created = futures::future::join_all(
            self.write_targets(meta)?
                .into_iter()
                .map(|(target, url)| self.fresh_shard(url, target, schema_bytes.clone())),
        )
        .await;
        if let Some(err) = created.into_iter().find_map(|r| r.err()) {
            self.drop_shards(meta).await;
            return Err(err);
        }
        Ok(())
    }

    /// Every replica of every shard with its worker's URL; an error naming
    /// the shard and worker when a replica's worker is not live (writes
    /// must reach every copy).
    fn write_targets(&self, meta: &TableMeta) -> Result<Vec<(fsql_proto::ShardTarget, String)>> {
        replica_targets(&self.catalog, meta, true)
    }

    pub(crate) async fn drop_shards(&self, meta: &TableMeta) -> Vec<Error> {
        crate::staged::drop_replicas(&self.catalog, &self.pool, meta).await
    }

    /// Creates an empty shard replica on a worker, replacing whatever a
    /// table of the same name left there (a replica on a worker that was
    /// down when its table was dropped).
    pub(crate) async fn fresh_shard(
        &self,
        url: String,
        target: fsql_proto::ShardTarget,
        schema: bytes::Bytes,
    ) -> Result<()> {
        drop_shard(&self.pool, url.clone(), target.clone()).await?;
        self.pool
            .action(
                &url,
                flight_worker::ACTION_CREATE_SHARD,
                fsql_proto::worker_request::Request::CreateShard(fsql_proto::CreateShard {
                    target: Some(target),
                    schema,
                }),
            )
            .await
            .map(drop)
    }

    pub async fn drop_table(&self, name: &str, if_exists: bool) -> Result<()> {
        let Some(meta) = self.catalog.table(name) else {
            if if_exists {
                return Ok(());
            }
            return Err(Error::NotFound(format!("table {name} does not exist")));
        };
        // The catalog is the commit point: once the record is gone the table
        // is, whatever happens to its shards.
        self.catalog.remove_table(name).await?;
        for e in self.drop_shards(&meta).await {
            tracing::warn!(table = name, "dropping a shard of a dropped table: {e}");
        }
        Ok(())
    }

    async fn dml(&self, dml: DmlStatement, params: Option<&RecordBatch>) -> Result<i64> {
        let name = dml.table_name.table().to_string();
        let meta = self
            .catalog
            .table(&name)
            .ok_or_else(|| Error::NotFound(format!("table {name} does not exist")))?;
        match dml.op {
            WriteOp::Insert(_) => {
                let rows_of_params = params.map(|p| p.num_rows()).unwrap_or(1).max(1);
                let mut total = 0;
                // One execution per parameter row (executemany).
                for row in 0..rows_of_params {
                    let input = Self::bind((*dml.input).clone(), params, row)?;
                    let query_id = statement_query_id();
                    let planned = self.plan_logical(input, None, &query_id, true).await?;
                    total += self.load(&meta, planned, false).await?;
                }
                Ok(total as i64)
            }
            // DELETE without WHERE is TRUNCATE.
            WriteOp::Truncate => self.truncate(&name).await,
            WriteOp::Delete if matches!(dml.input.as_ref(), LogicalPlan::TableScan(_)) => {
                self.truncate(&name).await
            }
            other => Err(Error::Unsupported(format!(
                "{other} is not supported yet; tables accept INSERT, CREATE TABLE AS, TRUNCATE, \
                 DELETE without WHERE and DROP"
            ))),
        }
    }

    /// Writes batches into a table through the shard router.
    pub async fn write(
        &self,
        meta: &TableMeta,
        stream: impl futures::Stream<Item = Result<RecordBatch>> + Unpin,
    ) -> Result<u64> {
        // A shard move of the table finishes first; then the placement is
        // read again.
        let lock = self.table_lock(&meta.name);
        let _moves_wait = lock.read().await;
        let meta = self
            .catalog
            .table(&meta.name)
            .ok_or_else(|| Error::NotFound(format!("table {} does not exist", meta.name)))?;
        if meta.replicas > 1 {
            self.check_replicas_reachable(&meta).await?;
        }
        let catalog = Arc::clone(&self.catalog);
        crate::ingest::write_table(&self.pool, move |id| catalog.worker_url(id), &meta, stream)
            .await
    }

    /// The lock serializing writes with shard moves of one table.
    pub(crate) fn table_lock(&self, table: &str) -> Arc<tokio::sync::RwLock<()>> {
        Arc::clone(
            self.table_locks
                .lock()
                .entry(table.to_string())
                .or_default(),
        )
    }

    /// Ids of the client queries running now.
    pub(crate) fn running_queries(&self) -> Vec<String> {
        self.cancels.running()
    }

    pub(crate) fn cancels(&self) -> Arc<Cancels> {
        Arc::clone(&self.cancels)
    }

    /// Before writing a replicated table: every replica's worker answers,
    /// so that a write does not land on some copies of a shard only
    /// because a worker is known to be gone.
    async fn check_replicas_reachable(&self, meta: &TableMeta) -> Result<()> {
        let targets = self.write_targets(meta)?;
        let urls: std::collections::BTreeSet<String> =
            targets.into_iter().map(|(_, url)| url).collect();
        let checks = futures::future::join_all(urls.iter().map(|url| async move {
            match tokio::time::timeout(Duration::from_secs(5), self.pool.health(url)).await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(format!("{url}: {e}")),
                Err(_) => Some(format!("{url}: no answer within 5 s")),
            }
        }))
        .await;
        let failed: Vec<String> = checks.into_iter().flatten().collect();
        if failed.is_empty() {
            return Ok(());
        }
        Err(Error::Unavailable(format!(
            "cannot write table {}: a worker holding a replica does not answer ({}); \
             nothing was written, retry when it is back",
            meta.name,
            failed.join("; ")
        )))
    }
}

/// The replicas of every shard with their workers' URLs. A replica on a
/// worker that is not live is an error when `every` is set, else left out.
pub(crate) fn replica_targets(
    catalog: &Catalog,
    meta: &TableMeta,
    every: bool,
) -> Result<Vec<(fsql_proto::ShardTarget, String)>> {
    let mut out = Vec::new();
    for (shard, workers) in meta.placement.iter().enumerate() {
        for w in workers {
            let Some(url) = catalog.worker_url(w) else {
                if every {
                    return Err(Error::Unavailable(format!(
                        "shard {shard} of table {}: worker {w} holding a replica is not \
                         live; writes need every replica (retry when it is back)",
                        meta.name
                    )));
                }
                continue;
            };
            out.push((
                fsql_proto::ShardTarget {
                    table: meta.storage.clone(),
                    shard: shard as u32,
                    reference: meta.is_reference(),
                },
                url,
            ));
        }
    }
    Ok(out)
}

/// Drops one shard replica on a worker (nothing when it does not exist).
pub(crate) async fn drop_shard(
    pool: &WorkerPool,
    url: String,
    target: fsql_proto::ShardTarget,
) -> Result<()> {
    pool.action(
        &url,
        flight_worker::ACTION_DROP_SHARD,
        fsql_proto::worker_request::Request::DropShard(fsql_proto::DropShard {
            target: Some(target),
        }),
    )
    .await
    .map(drop)
}

/// Why transaction statements and requests are refused.
pub const NO_TRANSACTIONS: &str = "transactions are not supported by this server yet: every \
     statement commits on its own (autocommit); the statement was not run. Run it without a \
     transaction (in ADBC autocommit=True, in JDBC setAutoCommit(true))";

/// The id for the tickets of a statement's query: the statement's own (so
/// the workers' logs name it), else a fresh one.
pub(crate) fn statement_query_id() -> String {
    crate::query_log::current_query_id().unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// The two-column result of EXPLAIN.
fn explain_batch(rows: &[(String, String)]) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("plan_type", DataType::Utf8, true),
        Field::new("plan", DataType::Utf8, true),
    ]));
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.1))),
        ],
    )?)
}

/// The shard reads of every `ShardGatherExec` in a physical plan.
fn shard_gathers(
    plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    out: &mut Vec<(String, Vec<crate::gather::ShardRun>)>,
) {
    if let Some(g) = plan.downcast_ref::<crate::gather::ShardGatherExec>() {
        out.push(g.runs());
    }
    for child in plan.children() {
        shard_gathers(child, out);
    }
}

fn fragment_scan(
    query_id: &str,
    fragment: LogicalPlan,
    routes: Vec<ShardRoute>,
    label: String,
) -> LogicalPlan {
    LogicalPlan::Extension(datafusion::logical_expr::Extension {
        node: Arc::new(FragmentScan {
            id: 0,
            query_id: query_id.to_string(),
            schema: Arc::clone(fragment.schema()),
            fragment: Arc::new(fragment),
            routes,
            label,
        }),
    })
}

fn fragment_rows(id: u64, fragment: &LogicalPlan, shards: usize) -> (String, String) {
    let sql = flight_worker::sqlgen::fragment_to_sql(fragment, 0)
        .unwrap_or_else(|e| format!("<not translatable: {e}>"));
    (
        format!("fragment #{id}"),
        format!(
            "runs on {shards} shard(s) (DuckDB SQL shown for shard 0):\n{sql}\n{}",
            fragment.display_indent()
        ),
    )
}
