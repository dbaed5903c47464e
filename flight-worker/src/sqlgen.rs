//! Fragment → DuckDB SQL.
//!
//! Turns a fragment (a small DataFusion `LogicalPlan` built by the
//! coordinator's distributed planner) into one DuckDB `SELECT`. Every plan
//! node becomes a subquery whose output columns are named positionally
//! (`c0`, `c1`, ...), so names and qualifiers of the original query never
//! collide; the worker then casts the result by position to the schema the
//! ticket expects. A chain of inner joins is one `FROM ... WHERE` over its
//! inputs (see `FlatJoin`).
//!
//! The translation keeps DataFusion's semantics where DuckDB's differ:
//! integer `/` is integer division (truncating), literals carry their exact
//! types, `LIKE` without `ESCAPE` treats `\` as the escape character. Any
//! node or expression not listed here is refused with `NotImplemented`; the
//! coordinator uses that same refusal to decide what it must compute itself,
//! so a fragment that reaches a worker always translates.

use std::fmt::Write;

use arrow::datatypes::DataType;
use datafusion::common::{
    Column, DFSchema, DataFusionError, JoinType, NullEquality, Result, ScalarValue,
};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::expr::{AggregateFunction, Alias, ScalarFunction};
use datafusion::logical_expr::{
    Between, BinaryExpr, Case, Cast, Distinct, ExprSchemable, Join, Like, LogicalPlan, Operator,
    SortExpr, TryCast,
};
use datafusion::prelude::Expr;

use crate::fragment::ShardScanTable;

fn unsupported<T>(what: impl std::fmt::Display) -> Result<T> {
    Err(DataFusionError::NotImplemented(format!(
        "cannot run on a shard: {what}"
    )))
}

/// Translates a fragment into DuckDB SQL for `shard`.
pub fn fragment_to_sql(plan: &LogicalPlan, shard: u32) -> Result<String> {
    let g = Gen { shard };
    let body = g.plan(plan)?;
    // The outermost query keeps the positional names; the worker renames by
    // position to the expected schema.
    Ok(body)
}

/// The DuckDB type name for an Arrow type (the same mapping shard tables
/// are created with).
pub fn duckdb_type(dt: &DataType) -> Result<String> {
    crate::storage::sql_type(dt)
        .or_else(|reason| match dt {
            // Only as the type of a NULL literal.
            DataType::Null => Ok("INTEGER".into()),
            _ => Err(reason),
        })
        .or_else(|reason| unsupported(format!("type {dt}: {reason}")))
}

struct Gen {
    shard: u32,
}

/// How column references resolve inside one node's expressions.
enum Scope<'a> {
    /// A single input subquery with positional columns.
    Single(&'a DFSchema),
    /// The inputs of a join (`right` is `None` for a filter or projection
    /// over a flattened join), their columns concatenated and spelled as in
    /// `names`.
    Named {
        left: &'a DFSchema,
        right: Option<&'a DFSchema>,
        names: &'a [String],
    },
    /// A base table scan: columns by their own names.
    Table(&'a DFSchema),
}

impl Scope<'_> {
    fn column(&self, col: &Column) -> Result<String> {
        match self {
            Scope::Single(s) => Ok(format!("c{}", s.index_of_column(col)?)),
            Scope::Named { left, right, names } => {
                let i = match (left.index_of_column(col), right) {
                    (Ok(i), _) => i,
                    (Err(_), Some(r)) => left.fields().len() + r.index_of_column(col)?,
                    (Err(e), None) => return Err(e),
                };
                names.get(i).cloned().ok_or_else(|| {
                    DataFusionError::Internal(format!("column {col} has no name in the join"))
                })
            }
            Scope::Table(s) => {
                let i = s.index_of_column(col)?;
                Ok(fsql_proto::quote_ident(s.field(i).name()))
            }
        }
    }

    fn type_of(&self, e: &Expr) -> Result<DataType> {
        match self {
            Scope::Single(s) | Scope::Table(s) => e.get_type(*s),
            Scope::Named {
                left, right: None, ..
            } => e.get_type(*left),
            Scope::Named {
                left,
                right: Some(r),
                ..
            } => e.get_type(&left.join(r)?),
        }
    }
}

/// A chain of inner joins (with the filters and column-only projections
/// between them) written as one `FROM a, b, ... WHERE ...`, so DuckDB's join
/// order optimizer sees every input at once: it does not reorder joins
/// across the nested subqueries a node-by-node translation gives.
struct FlatJoin {
    /// `(subquery) AS tN` per input.
    from: Vec<String>,
    /// Join conditions and filters, all ANDed.
    conds: Vec<String>,
    /// The expression for each output column.
    out: Vec<String>,
}

/// Whether `plan` is an inner join, possibly under filters, aliases and
/// projections of plain columns: the nodes `Gen::flat` merges.
fn flattens(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Join(j) => j.join_type == JoinType::Inner,
        LogicalPlan::SubqueryAlias(a) => flattens(&a.input),
        LogicalPlan::Filter(f) => flattens(&f.input),
        LogicalPlan::Projection(p) => p.expr.iter().all(is_column) && flattens(&p.input),
        _ => false,
    }
}

fn is_column(e: &Expr) -> bool {
    match e {
        Expr::Column(_) => true,
        Expr::Alias(Alias { expr, .. }) => is_column(expr),
        _ => false,
    }
}

fn cols(n: usize, prefix: &str) -> String {
    if n == 0 {
        // DuckDB needs at least one column; the parent only counts rows
        // (the worker drops the placeholder for a zero-column schema).
        return "NULL AS c0".into();
    }
    (0..n)
        .map(|i| format!("{prefix}c{i} AS c{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Gen {
    fn plan(&self, plan: &LogicalPlan) -> Result<String> {
        if flattens(plan) && !matches!(plan, LogicalPlan::SubqueryAlias(_)) {
            let f = self.flat(plan, &mut 0)?;
            let list = if f.out.is_empty() {
                "NULL AS c0".to_string()
            } else {
                let cols = f.out.iter().enumerate();
                cols.map(|(i, e)| format!("{e} AS c{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut sql = format!("SELECT {list} FROM {}", f.from.join(", "));
            if !f.conds.is_empty() {
                let _ = write!(sql, " WHERE {}", f.conds.join(" AND "));
            }
            return Ok(sql);
        }
        match plan {
            LogicalPlan::TableScan(scan) => {
                let provider = source_as_provider(&scan.source)?;
                let Some(table) = provider.downcast_ref::<ShardScanTable>() else {
                    return unsupported(format!("scan of {}", scan.table_name));
                };
                let name = fsql_proto::shard_table_name(&table.table, self.shard, table.reference);
                let full =
                    DFSchema::try_from_qualified_schema(scan.table_name.clone(), &table.schema)?;
                let scope = Scope::Table(&full);
                let projection: Vec<usize> = match &scan.projection {
                    Some(p) => p.clone(),
                    None => (0..table.schema.fields().len()).collect(),
                };
                let mut sql = String::from("SELECT ");
                if projection.is_empty() {
                    // DuckDB needs at least one column; the parent only counts rows.
                    sql.push_str("NULL AS c0");
                }
                for (out, idx) in projection.iter().enumerate() {
                    let field = table.schema.fields().get(*idx).ok_or_else(|| {
                        DataFusionError::Plan(format!("projection index {idx} out of range"))
                    })?;
                    if out > 0 {
                        sql.push_str(", ");
                    }
                    let _ = write!(sql, "{} AS c{out}", fsql_proto::quote_ident(field.name()));
                }
                match &table.files {
                    Some(files) => {
                        let _ = write!(sql, " FROM {}", file_scan(files, self.shard)?);
                    }
                    None => {
                        let _ = write!(sql, " FROM {}", fsql_proto::quote_ident(&name));
                    }
                }
                if !scan.filters.is_empty() {
                    let preds = scan
                        .filters
                        .iter()
                        .map(|f| self.expr(f, &scope))
                        .collect::<Result<Vec<_>>>()?;
                    let _ = write!(sql, " WHERE {}", preds.join(" AND "));
                }
                if let Some(n) = scan.fetch {
                    let _ = write!(sql, " LIMIT {n}");
                }
                Ok(sql)
            }
            LogicalPlan::Projection(p) => {
                let input = self.plan(&p.input)?;
                let scope = Scope::Single(p.input.schema());
                let exprs = p
                    .expr
                    .iter()
                    .enumerate()
                    .map(|(i, e)| Ok(format!("{} AS c{i}", self.expr(e, &scope)?)))
                    .collect::<Result<Vec<_>>>()?;
                let list = if exprs.is_empty() {
                    "NULL AS c0".to_string()
                } else {
                    exprs.join(", ")
                };
                Ok(format!("SELECT {list} FROM ({input}) AS t"))
            }
            LogicalPlan::Filter(f) => {
                let input = self.plan(&f.input)?;
                let scope = Scope::Single(f.input.schema());
                let pred = self.expr(&f.predicate, &scope)?;
                let n = f.input.schema().fields().len();
                Ok(format!(
                    "SELECT {} FROM ({input}) AS t WHERE {pred}",
                    cols(n, "")
                ))
            }
            LogicalPlan::SubqueryAlias(a) => self.plan(&a.input),
            LogicalPlan::Aggregate(a) => {
                let input = self.plan(&a.input)?;
                let scope = Scope::Single(a.input.schema());
                let mut select = Vec::new();
                let mut group = Vec::new();
                for e in &a.group_expr {
                    if matches!(e, Expr::GroupingSet(_)) {
                        return unsupported("grouping sets");
                    }
                    let s = self.expr(e, &scope)?;
                    select.push(format!("{s} AS c{}", select.len()));
                    group.push(s);
                }
                for e in &a.aggr_expr {
                    let s = self.expr(e, &scope)?;
                    select.push(format!("{s} AS c{}", select.len()));
                }
                if select.is_empty() {
                    select.push("NULL AS c0".into());
                }
                let mut sql = format!("SELECT {} FROM ({input}) AS t", select.join(", "));
                if !group.is_empty() {
                    let _ = write!(sql, " GROUP BY {}", group.join(", "));
                }
                Ok(sql)
            }
            LogicalPlan::Sort(s) => {
                let input = self.plan(&s.input)?;
                let scope = Scope::Single(s.input.schema());
                let order = self.order_by(&s.expr, &scope)?;
                let n = s.input.schema().fields().len();
                let mut sql = format!(
                    "SELECT {} FROM ({input}) AS t ORDER BY {order}",
                    cols(n, "")
                );
                if let Some(f) = s.fetch {
                    let _ = write!(sql, " LIMIT {f}");
                }
                Ok(sql)
            }
            LogicalPlan::Limit(l) => {
                let input = self.plan(&l.input)?;
                let n = l.input.schema().fields().len();
                let mut sql = format!("SELECT {} FROM ({input}) AS t", cols(n, ""));
                let fetch = match l.get_fetch_type()? {
                    datafusion::logical_expr::logical_plan::FetchType::Literal(f) => f,
                    _ => return unsupported("non-literal LIMIT"),
                };
                let skip = match l.get_skip_type()? {
                    datafusion::logical_expr::logical_plan::SkipType::Literal(s) => s,
                    _ => return unsupported("non-literal OFFSET"),
                };
                if let Some(f) = fetch {
                    let _ = write!(sql, " LIMIT {f}");
                }
                if skip > 0 {
                    let _ = write!(sql, " OFFSET {skip}");
                }
                Ok(sql)
            }
            LogicalPlan::Distinct(Distinct::All(input)) => {
                let inner = self.plan(input)?;
                let n = input.schema().fields().len();
                Ok(format!(
                    "SELECT DISTINCT {} FROM ({inner}) AS t",
                    cols(n, "")
                ))
            }
            LogicalPlan::Join(j) => {
                let left = self.plan(&j.left)?;
                let right = self.plan(&j.right)?;
                let nl = j.left.schema().fields().len();
                let nr = j.right.schema().fields().len();
                let names: Vec<String> = (0..nl)
                    .map(|i| format!("l.c{i}"))
                    .chain((0..nr).map(|i| format!("r.c{i}")))
                    .collect();
                let conds = self.join_conditions(j, &names)?;
                let on = if conds.is_empty() {
                    "TRUE".to_string()
                } else {
                    conds.join(" AND ")
                };
                let both = || {
                    let mut v: Vec<String> = (0..nl).map(|i| format!("l.c{i} AS c{i}")).collect();
                    v.extend((0..nr).map(|i| format!("r.c{i} AS c{}", nl + i)));
                    if v.is_empty() {
                        return "NULL AS c0".to_string();
                    }
                    v.join(", ")
                };
                let sql = match j.join_type {
                    // Inner joins were written flat above (`FlatJoin`).
                    JoinType::Left => format!(
                        "SELECT {} FROM ({left}) AS l LEFT JOIN ({right}) AS r ON {on}",
                        both()
                    ),
                    JoinType::Right => format!(
                        "SELECT {} FROM ({left}) AS l RIGHT JOIN ({right}) AS r ON {on}",
                        both()
                    ),
                    JoinType::Full => format!(
                        "SELECT {} FROM ({left}) AS l FULL JOIN ({right}) AS r ON {on}",
                        both()
                    ),
                    // DuckDB's own SEMI/ANTI JOIN: the equivalent `WHERE [NOT]
                    // EXISTS (...)` is planned as a slower mark join.
                    JoinType::LeftSemi => format!(
                        "SELECT {} FROM ({left}) AS l SEMI JOIN ({right}) AS r ON {on}",
                        cols(nl, "l.")
                    ),
                    JoinType::LeftAnti if !j.null_aware => format!(
                        "SELECT {} FROM ({left}) AS l ANTI JOIN ({right}) AS r ON {on}",
                        cols(nl, "l.")
                    ),
                    JoinType::RightSemi => format!(
                        "SELECT {} FROM ({right}) AS r SEMI JOIN ({left}) AS l ON {on}",
                        cols(nr, "r.")
                    ),
                    JoinType::RightAnti => format!(
                        "SELECT {} FROM ({right}) AS r ANTI JOIN ({left}) AS l ON {on}",
                        cols(nr, "r.")
                    ),
                    other => return unsupported(format!("{other} join")),
                };
                Ok(sql)
            }
            other => unsupported(format!("plan node {}", other.display())),
        }
    }

    /// The ON conditions of `j`, its inputs' columns spelled as in `names`.
    fn join_conditions(&self, j: &Join, names: &[String]) -> Result<Vec<String>> {
        let scope = Scope::Named {
            left: j.left.schema(),
            right: Some(j.right.schema()),
            names,
        };
        let mut conds = Vec::new();
        for (l, r) in &j.on {
            let (l, r) = (self.expr(l, &scope)?, self.expr(r, &scope)?);
            conds.push(match j.null_equality {
                NullEquality::NullEqualsNothing => format!("{l} = {r}"),
                NullEquality::NullEqualsNull => format!("{l} IS NOT DISTINCT FROM {r}"),
            });
        }
        if let Some(f) = &j.filter {
            conds.push(self.expr(f, &scope)?);
        }
        Ok(conds)
    }

    /// Merges the inner joins under `plan` into one `FlatJoin` (see
    /// `flattens`); any other node becomes one of its inputs, `t{next}`.
    fn flat(&self, plan: &LogicalPlan, next: &mut usize) -> Result<FlatJoin> {
        if !flattens(plan) {
            let alias = format!("t{next}");
            *next += 1;
            let n = plan.schema().fields().len();
            return Ok(FlatJoin {
                from: vec![format!("({}) AS {alias}", self.plan(plan)?)],
                conds: Vec::new(),
                out: (0..n).map(|i| format!("{alias}.c{i}")).collect(),
            });
        }
        match plan {
            LogicalPlan::Join(j) => {
                let mut f = self.flat(&j.left, next)?;
                let right = self.flat(&j.right, next)?;
                f.out.extend(right.out);
                f.conds.extend(right.conds);
                f.from.extend(right.from);
                let conds = self.join_conditions(j, &f.out)?;
                f.conds.extend(conds);
                Ok(f)
            }
            LogicalPlan::SubqueryAlias(a) => self.flat(&a.input, next),
            LogicalPlan::Filter(filter) => {
                let mut f = self.flat(&filter.input, next)?;
                let scope = Scope::Named {
                    left: filter.input.schema(),
                    right: None,
                    names: &f.out,
                };
                let pred = self.expr(&filter.predicate, &scope)?;
                f.conds.push(pred);
                Ok(f)
            }
            LogicalPlan::Projection(p) => {
                let mut f = self.flat(&p.input, next)?;
                let scope = Scope::Named {
                    left: p.input.schema(),
                    right: None,
                    names: &f.out,
                };
                let out = p
                    .expr
                    .iter()
                    .map(|e| self.expr(e, &scope))
                    .collect::<Result<Vec<_>>>()?;
                f.out = out;
                Ok(f)
            }
            other => unsupported(format!("plan node {}", other.display())),
        }
    }

    fn order_by(&self, exprs: &[SortExpr], scope: &Scope) -> Result<String> {
        Ok(exprs
            .iter()
            .map(|s| {
                Ok(format!(
                    "{} {} {}",
                    self.expr(&s.expr, scope)?,
                    if s.asc { "ASC" } else { "DESC" },
                    if s.nulls_first {
                        "NULLS FIRST"
                    } else {
                        "NULLS LAST"
                    }
                ))
            })
            .collect::<Result<Vec<_>>>()?
            .join(", "))
    }

    fn expr(&self, e: &Expr, scope: &Scope) -> Result<String> {
        Ok(match e {
            Expr::Alias(Alias { expr, .. }) => self.expr(expr, scope)?,
            Expr::Column(c) => scope.column(c)?,
            Expr::Literal(v, _) => literal(v)?,
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let l = self.expr(left, scope)?;
                let r = self.expr(right, scope)?;
                let op_sql = match op {
                    Operator::Eq => "=",
                    Operator::NotEq => "<>",
                    Operator::Lt => "<",
                    Operator::LtEq => "<=",
                    Operator::Gt => ">",
                    Operator::GtEq => ">=",
                    Operator::Plus => "+",
                    Operator::Minus => "-",
                    Operator::Multiply => "*",
                    Operator::Divide => {
                        let lt = scope.type_of(left)?;
                        let rt = scope.type_of(right)?;
                        if lt.is_integer() && rt.is_integer() {
                            // DataFusion divides integers with truncation
                            // toward zero and fails on a zero divisor;
                            // DuckDB's `/` would return a DOUBLE.
                            return Ok(format!(
                                "(CASE WHEN {r} = 0 THEN error('Divide by zero error') ELSE {l} // {r} END)"
                            ));
                        }
                        "/"
                    }
                    Operator::Modulo => "%",
                    Operator::And => "AND",
                    Operator::Or => "OR",
                    Operator::IsDistinctFrom => "IS DISTINCT FROM",
                    Operator::IsNotDistinctFrom => "IS NOT DISTINCT FROM",
                    Operator::StringConcat => "||",
                    Operator::RegexMatch => return Ok(format!("regexp_matches({l}, {r})")),
                    Operator::RegexNotMatch => {
                        return Ok(format!("(NOT regexp_matches({l}, {r}))"));
                    }
                    Operator::RegexIMatch => {
                        return Ok(format!("regexp_matches({l}, {r}, 'i')"));
                    }
                    Operator::RegexNotIMatch => {
                        return Ok(format!("(NOT regexp_matches({l}, {r}, 'i'))"));
                    }
                    Operator::BitwiseAnd => "&",
                    Operator::BitwiseOr => "|",
                    Operator::BitwiseXor => return Ok(format!("xor({l}, {r})")),
                    Operator::BitwiseShiftLeft => "<<",
                    Operator::BitwiseShiftRight => ">>",
                    other => return unsupported(format!("operator {other}")),
                };
                format!("({l} {op_sql} {r})")
            }
            Expr::Like(Like {
                negated,
                expr,
                pattern,
                escape_char,
                case_insensitive,
            }) => {
                let esc = escape_char.unwrap_or('\\');
                // DuckDB matches `LIKE ... ESCAPE` with a generic, much
                // slower function (2.4x on TPC-H Q13); a literal pattern
                // without the escape character needs no ESCAPE.
                let escapes = match pattern.as_ref() {
                    Expr::Literal(v, _) => match v.try_as_str() {
                        Some(Some(p)) => p.contains(esc),
                        _ => true,
                    },
                    _ => true,
                };
                let mut sql = format!(
                    "({} {}{} {}",
                    self.expr(expr, scope)?,
                    if *negated { "NOT " } else { "" },
                    if *case_insensitive { "ILIKE" } else { "LIKE" },
                    self.expr(pattern, scope)?,
                );
                if escapes {
                    let _ = write!(sql, " ESCAPE {}", quote_str(&esc.to_string()));
                }
                sql.push(')');
                sql
            }
            Expr::Not(x) => format!("(NOT {})", self.expr(x, scope)?),
            Expr::IsNull(x) => format!("({} IS NULL)", self.expr(x, scope)?),
            Expr::IsNotNull(x) => format!("({} IS NOT NULL)", self.expr(x, scope)?),
            Expr::IsTrue(x) => format!("({} IS TRUE)", self.expr(x, scope)?),
            Expr::IsFalse(x) => format!("({} IS FALSE)", self.expr(x, scope)?),
            Expr::IsUnknown(x) => format!("({} IS NULL)", self.expr(x, scope)?),
            Expr::IsNotTrue(x) => format!("({} IS NOT TRUE)", self.expr(x, scope)?),
            Expr::IsNotFalse(x) => format!("({} IS NOT FALSE)", self.expr(x, scope)?),
            Expr::IsNotUnknown(x) => format!("({} IS NOT NULL)", self.expr(x, scope)?),
            Expr::Negative(x) => format!("(- {})", self.expr(x, scope)?),
            Expr::Between(Between {
                expr,
                negated,
                low,
                high,
            }) => format!(
                "({} {}BETWEEN {} AND {})",
                self.expr(expr, scope)?,
                if *negated { "NOT " } else { "" },
                self.expr(low, scope)?,
                self.expr(high, scope)?
            ),
            Expr::Case(Case {
                expr,
                when_then_expr,
                else_expr,
            }) => {
                let mut s = String::from("CASE");
                if let Some(e) = expr {
                    let _ = write!(s, " {}", self.expr(e, scope)?);
                }
                for (w, t) in when_then_expr {
                    let _ = write!(
                        s,
                        " WHEN {} THEN {}",
                        self.expr(w, scope)?,
                        self.expr(t, scope)?
                    );
                }
                if let Some(e) = else_expr {
                    let _ = write!(s, " ELSE {}", self.expr(e, scope)?);
                }
                s.push_str(" END");
                s
            }
            Expr::Cast(Cast { expr, field }) => format!(
                "CAST({} AS {})",
                self.expr(expr, scope)?,
                duckdb_type(field.data_type())?
            ),
            Expr::TryCast(TryCast { expr, field }) => format!(
                "TRY_CAST({} AS {})",
                self.expr(expr, scope)?,
                duckdb_type(field.data_type())?
            ),
            Expr::InList(l) => {
                let items = l
                    .list
                    .iter()
                    .map(|x| self.expr(x, scope))
                    .collect::<Result<Vec<_>>>()?;
                format!(
                    "({} {}IN ({}))",
                    self.expr(&l.expr, scope)?,
                    if l.negated { "NOT " } else { "" },
                    items.join(", ")
                )
            }
            Expr::ScalarFunction(f) => self.scalar_function(f, scope)?,
            Expr::AggregateFunction(f) => self.aggregate(f, scope)?,
            other => return unsupported(format!("expression {other}")),
        })
    }

    fn args(&self, args: &[Expr], scope: &Scope) -> Result<Vec<String>> {
        args.iter().map(|a| self.expr(a, scope)).collect()
    }

    fn scalar_function(&self, f: &ScalarFunction, scope: &Scope) -> Result<String> {
        let name = f.func.name();
        let args = self.args(&f.args, scope)?;
        let same = |duck: &str| format!("{duck}({})", args.join(", "));
        Ok(match name {
            "abs" | "ceil" | "floor" | "sqrt" | "exp" | "ln" | "log10" | "log2" | "sign"
            | "lower" | "upper" | "trim" | "ltrim" | "rtrim" | "replace" | "reverse"
            | "starts_with" | "ends_with" | "strpos" | "left" | "right" | "coalesce" | "nullif"
            | "greatest" | "least" | "md5" | "ascii" | "repeat" | "date_trunc" | "power"
            | "cos" | "sin" | "tan" | "pi" | "concat" | "concat_ws" | "split_part"
            | "translate" => same(name),
            // DuckDB's lpad/rpad take an INTEGER length and need the fill.
            "lpad" | "rpad" if args.len() == 2 || args.len() == 3 => format!(
                "{name}({}, CAST({} AS INTEGER), {})",
                args[0],
                args[1],
                args.get(2).map(String::as_str).unwrap_or("' '")
            ),
            "btrim" => same("trim"),
            "character_length" | "char_length" | "length" => same("length"),
            "octet_length" => same("octet_length"),
            "substr" | "substring" => same("substring"),
            "round" if args.len() == 1 => same("round"),
            "round" => format!("round({}, CAST({} AS INTEGER))", args[0], args[1]),
            "date_part" | "datepart" => same("date_part"),
            "random" => same("random"),
            _ => return unsupported(format!("function {name}")),
        })
    }

    fn aggregate(&self, f: &AggregateFunction, scope: &Scope) -> Result<String> {
        let name = f.func.name().to_ascii_lowercase();
        let p = &f.params;
        if !p.order_by.is_empty() || p.null_treatment.is_some() {
            return unsupported(format!("ordered aggregate {name}"));
        }
        let duck = match name.as_str() {
            "sum" | "count" | "min" | "max" | "avg" | "bool_and" | "bool_or" => name.as_str(),
            _ => return unsupported(format!("aggregate {name}")),
        };
        let args = self.args(&p.args, scope)?;
        let mut s = format!(
            "{duck}({}{})",
            if p.distinct { "DISTINCT " } else { "" },
            args.join(", ")
        );
        if let Some(filter) = &p.filter {
            let _ = write!(s, " FILTER (WHERE {})", self.expr(filter, scope)?);
        }
        Ok(s)
    }
}

use crate::storage::sql_string as quote_str;

/// The DuckDB table function call reading file group `shard`.
fn file_scan(files: &fsql_proto::FileSource, shard: u32) -> Result<String> {
    let function = match files.function.as_str() {
        f @ ("read_parquet" | "read_csv") => f,
        other => return unsupported(format!("file function {other}")),
    };
    let group = files
        .groups
        .get(shard as usize)
        .ok_or_else(|| DataFusionError::Plan(format!("no file group {shard}")))?;
    let list: Vec<String> = group.files.iter().map(|f| quote_str(f)).collect();
    let mut call = format!("{function}([{}]", list.join(", "));
    if !files.options.is_empty() {
        let _ = write!(call, ", {}", files.options);
    }
    call.push(')');
    Ok(call)
}

fn typed(v: impl std::fmt::Display, ty: &str) -> String {
    format!("CAST({v} AS {ty})")
}

/// A literal with its exact type.
fn literal(v: &ScalarValue) -> Result<String> {
    use ScalarValue::*;
    if v.is_null() {
        return Ok(format!("CAST(NULL AS {})", duckdb_type(&v.data_type())?));
    }
    Ok(match v {
        Boolean(Some(b)) => if *b { "TRUE" } else { "FALSE" }.into(),
        Int8(Some(x)) => typed(x, "TINYINT"),
        Int16(Some(x)) => typed(x, "SMALLINT"),
        Int32(Some(x)) => typed(x, "INTEGER"),
        Int64(Some(x)) => typed(x, "BIGINT"),
        UInt8(Some(x)) => typed(x, "UTINYINT"),
        UInt16(Some(x)) => typed(x, "USMALLINT"),
        UInt32(Some(x)) => typed(x, "UINTEGER"),
        UInt64(Some(x)) => typed(x, "UBIGINT"),
        Float32(Some(x)) => typed(quote_str(&float_text(f64::from(*x))), "FLOAT"),
        Float64(Some(x)) => typed(quote_str(&float_text(*x)), "DOUBLE"),
        Utf8(Some(s)) | LargeUtf8(Some(s)) | Utf8View(Some(s)) => quote_str(s),
        // The narrowest DECIMAL holding the value, at the same scale (as
        // DuckDB types its own literals): DataFusion types `1 - l_discount`'s
        // `1` DECIMAL(20,0), which would push the arithmetic above it into
        // 128-bit decimals, several times slower in DuckDB. Results keep
        // their values and are cast to the expected schema.
        Decimal128(Some(x), _, s) => {
            let digits = x.unsigned_abs().checked_ilog10().map_or(1, |d| d + 1);
            let (precision, scale) = if *s >= 0 {
                (digits.max(s.unsigned_abs().into()), *s)
            } else {
                (digits + u32::from(s.unsigned_abs()), 0)
            };
            typed(
                quote_str(&decimal_text(*x, *s)),
                &format!("DECIMAL({},{scale})", precision.clamp(1, 38)),
            )
        }
        Date32(Some(_)) | Date64(Some(_)) => typed(quote_str(&v.to_string()), "DATE"),
        TimestampSecond(Some(x), None) => format!("make_timestamp(CAST({x} AS BIGINT) * 1000000)"),
        TimestampMillisecond(Some(x), None) => {
            format!("make_timestamp(CAST({x} AS BIGINT) * 1000)")
        }
        TimestampMicrosecond(Some(x), None) => format!("make_timestamp(CAST({x} AS BIGINT))"),
        TimestampNanosecond(Some(x), None) if x % 1000 == 0 => typed(
            format!("make_timestamp(CAST({} AS BIGINT))", x / 1000),
            "TIMESTAMP_NS",
        ),
        // DuckDB keeps time zone aware timestamps as UTC microseconds.
        TimestampSecond(Some(x), Some(_)) => utc_micros(x.checked_mul(1_000_000))?,
        TimestampMillisecond(Some(x), Some(_)) => utc_micros(x.checked_mul(1_000))?,
        TimestampMicrosecond(Some(x), Some(_)) => utc_micros(Some(*x))?,
        TimestampNanosecond(Some(x), Some(_)) if x % 1000 == 0 => utc_micros(Some(x / 1000))?,
        Time32Second(Some(x)) => time_literal(i64::from(*x) * 1_000_000)?,
        Time32Millisecond(Some(x)) => time_literal(i64::from(*x) * 1_000)?,
        Time64Microsecond(Some(x)) => time_literal(*x)?,
        Time64Nanosecond(Some(x)) if x % 1000 == 0 => time_literal(x / 1000)?,
        Binary(Some(b)) | LargeBinary(Some(b)) | BinaryView(Some(b)) => blob_literal(b),
        FixedSizeBinary(_, Some(b)) => blob_literal(b),
        IntervalYearMonth(Some(m)) => format!("to_months({m})"),
        IntervalDayTime(Some(d)) => format!(
            "(to_days({}) + to_microseconds(CAST({} AS BIGINT) * 1000))",
            d.days, d.milliseconds
        ),
        IntervalMonthDayNano(Some(i)) => format!(
            "(to_months({}) + to_days({}) + to_microseconds(CAST({} AS BIGINT)))",
            i.months,
            i.days,
            i.nanoseconds / 1000
        ),
        other => {
            return unsupported(format!("literal of type {} ({other})", other.data_type()));
        }
    })
}

/// A `TIMESTAMPTZ` from microseconds since the epoch: UTC text with an
/// explicit offset, exact whatever the session time zone (and without the
/// ICU extension).
fn utc_micros(micros: Option<i64>) -> Result<String> {
    let Some(dt) = micros.and_then(arrow::temporal_conversions::timestamp_us_to_datetime) else {
        return unsupported("timestamp out of range");
    };
    Ok(typed(quote_str(&format!("{dt}+00")), "TIMESTAMPTZ"))
}

/// A `TIME` from microseconds since midnight.
fn time_literal(micros: i64) -> Result<String> {
    if !(0..=86_400_000_000).contains(&micros) {
        return unsupported(format!("time of day {micros} us out of range"));
    }
    let (h, rest) = (micros / 3_600_000_000, micros % 3_600_000_000);
    let (m, rest) = (rest / 60_000_000, rest % 60_000_000);
    let (sec, us) = (rest / 1_000_000, rest % 1_000_000);
    Ok(typed(
        quote_str(&format!("{h:02}:{m:02}:{sec:02}.{us:06}")),
        "TIME",
    ))
}

/// A `BLOB` literal (hex, so any byte travels).
fn blob_literal(bytes: &[u8]) -> String {
    let mut hex = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(hex, "{b:02X}");
    }
    format!("from_hex('{hex}')")
}

/// The exact decimal text of an unscaled value.
fn decimal_text(unscaled: i128, scale: i8) -> String {
    if scale <= 0 {
        return format!("{unscaled}{}", "0".repeat(scale.unsigned_abs() as usize));
    }
    let digits = unscaled.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{}{int}.{frac}", if unscaled < 0 { "-" } else { "" })
}

fn float_text(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        // Rust's shortest round-trip representation.
        format!("{x:?}")
    }
}

/// Whether a filter over a base table's columns translates (used by the
/// coordinator to decide which filters the workers apply).
pub fn table_filter_supported(filter: &Expr, table: &DFSchema) -> bool {
    let g = Gen { shard: 0 };
    g.expr(filter, &Scope::Table(table)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_literals_are_exact() {
        assert_eq!(decimal_text(5, 2), "0.05");
        assert_eq!(decimal_text(-5, 2), "-0.05");
        assert_eq!(decimal_text(30000, 2), "300.00");
        assert_eq!(decimal_text(-123456, 3), "-123.456");
        assert_eq!(decimal_text(7, 0), "7");
        assert_eq!(decimal_text(7, -2), "700");
        // The narrowest type holding the value, at the same scale.
        let lit = |x, p, s| literal(&ScalarValue::Decimal128(Some(x), p, s)).unwrap();
        assert_eq!(lit(1, 20, 0), "CAST('1' AS DECIMAL(1,0))");
        assert_eq!(lit(0, 20, 0), "CAST('0' AS DECIMAL(1,0))");
        assert_eq!(lit(5, 15, 2), "CAST('0.05' AS DECIMAL(2,2))");
        assert_eq!(lit(-123456, 38, 3), "CAST('-123.456' AS DECIMAL(6,3))");
        assert_eq!(lit(7, 10, -2), "CAST('700' AS DECIMAL(3,0))");
        assert_eq!(
            lit(i128::MAX / 10, 38, 10),
            format!(
                "CAST('{}' AS DECIMAL(38,10))",
                decimal_text(i128::MAX / 10, 10)
            )
        );
    }

    #[test]
    fn literals_carry_types() {
        assert_eq!(
            literal(&ScalarValue::Int32(Some(-3))).unwrap(),
            "CAST(-3 AS INTEGER)"
        );
        assert_eq!(
            literal(&ScalarValue::Utf8(Some("it's".into()))).unwrap(),
            "'it''s'"
        );
        assert_eq!(
            literal(&ScalarValue::Date32(Some(0))).unwrap(),
            "CAST('1970-01-01' AS DATE)"
        );
        assert_eq!(
            literal(&ScalarValue::Int64(None)).unwrap(),
            "CAST(NULL AS BIGINT)"
        );
        assert_eq!(
            literal(&ScalarValue::Binary(Some(vec![0, 0xab]))).unwrap(),
            "from_hex('00AB')"
        );
        assert_eq!(
            literal(&ScalarValue::Time64Microsecond(Some(45_296_000_001))).unwrap(),
            "CAST('12:34:56.000001' AS TIME)"
        );
        assert_eq!(
            literal(&ScalarValue::TimestampMicrosecond(
                Some(-1),
                Some("UTC".into())
            ))
            .unwrap(),
            "CAST('1969-12-31 23:59:59.999999+00' AS TIMESTAMPTZ)"
        );
        // Sub-microsecond values have no exact DuckDB literal.
        assert!(literal(&ScalarValue::TimestampNanosecond(Some(1), None)).is_err());
    }

    #[test]
    fn like_names_its_escape_only_when_the_pattern_uses_it() {
        use datafusion::prelude::{col, lit};
        let schema = DFSchema::try_from(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("s", DataType::Utf8, true),
        ]))
        .unwrap();
        let sql = |e: Expr| Gen { shard: 0 }.expr(&e, &Scope::Table(&schema)).unwrap();
        assert_eq!(sql(col("s").like(lit("%a%b%"))), r#"("s" LIKE '%a%b%')"#);
        assert_eq!(
            sql(col("s").not_like(lit(r"a\%b"))),
            r#"("s" NOT LIKE 'a\%b' ESCAPE '\')"#
        );
        assert_eq!(sql(col("s").like(col("s"))), r#"("s" LIKE "s" ESCAPE '\')"#);
    }
}
