//! Reading files: `read_parquet('glob')` and `read_csv('glob')` (gzip
//! included) in queries and `CREATE TABLE ... AS`.
//!
//! Before a statement is planned, every call of a file function in its
//! `FROM` clauses is resolved: a worker lists the matching files and tells
//! the schema DuckDB reads from them (`describe_files`), the files are cut
//! into groups of about equal size spread over the live workers, and the
//! call is replaced by a table function without arguments that returns a
//! [`ClusterTable`] whose "shards" are those groups. The distributed
//! planner then treats it like a sharded table: each worker reads its group
//! with DuckDB, filters and projections included, so a load runs on every
//! worker at once. Paths are read by the workers: every worker must see the
//! same files (one machine, or shared storage).

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::catalog::{TableFunctionImpl, TableProvider};
use datafusion::common::plan_err;
use datafusion::prelude::Expr;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr as SqlExpr, FunctionArg, FunctionArgExpr, Ident, ObjectName, Statement,
    TableFactor, TableFunctionArgs, UnaryOperator, Value, VisitMut, VisitorMut,
};
use prost::Message;

use crate::catalog::{Catalog, Distribution, TableMeta};
use crate::error::{Error, Result};
use crate::table::ClusterTable;
use crate::workers::WorkerPool;

/// File groups per live worker: a few, so that progress can be followed
/// group by group without opening a stream per file.
const GROUPS_PER_WORKER: usize = 4;

/// A file function call found in a statement.
struct Call {
    placeholder: String,
    function: &'static str,
    patterns: Vec<String>,
    options: String,
}

/// The table a resolved file function call stands for.
#[derive(Debug)]
pub struct ResolvedFiles(pub Arc<ClusterTable>);

impl TableFunctionImpl for ResolvedFiles {
    fn call(&self, args: &[Expr]) -> datafusion::common::Result<Arc<dyn TableProvider>> {
        if !args.is_empty() {
            return plan_err!("resolved file reads take no arguments");
        }
        Ok(Arc::clone(&self.0) as Arc<dyn TableProvider>)
    }
}

/// The DuckDB function behind a file function name, if it is one.
fn file_function(name: &ObjectName) -> Option<&'static str> {
    let [part] = name.0.as_slice() else {
        return None;
    };
    match part.as_ident()?.value.to_ascii_lowercase().as_str() {
        "read_parquet" | "parquet_scan" => Some("read_parquet"),
        "read_csv" | "read_csv_auto" => Some("read_csv"),
        _ => None,
    }
}

/// Whether an option value is a constant DuckDB accepts as written (the
/// options are passed to the workers' DuckDB as SQL text).
fn is_literal(e: &SqlExpr) -> bool {
    match e {
        SqlExpr::Value(v) => !matches!(v.value, Value::Placeholder(_)),
        SqlExpr::UnaryOp {
            op: UnaryOperator::Minus | UnaryOperator::Plus,
            expr,
        } => matches!(expr.as_ref(), SqlExpr::Value(_)),
        SqlExpr::Array(a) => a.elem.iter().all(is_literal),
        SqlExpr::Dictionary(fields) => fields.iter().all(|f| is_literal(&f.value)),
        _ => false,
    }
}

fn string_value(e: &SqlExpr) -> Option<String> {
    match e {
        SqlExpr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// Reads the arguments of a file function call: the path or list of paths
/// (globs allowed), then named options `name = constant`.
fn parse_call(function: &'static str, args: &TableFunctionArgs) -> Result<(Vec<String>, String)> {
    let usage = || {
        Error::InvalidArgument(format!(
            "{function} takes a path or glob ('data/*.{}') or a list of them, then options \
             written name = value",
            if function == "read_csv" {
                "csv"
            } else {
                "parquet"
            }
        ))
    };
    let mut args = args.args.iter();
    let patterns = match args.next() {
        Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(e))) => match e {
            SqlExpr::Array(a) => a
                .elem
                .iter()
                .map(string_value)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(usage)?,
            other => vec![string_value(other).ok_or_else(usage)?],
        },
        _ => return Err(usage()),
    };
    if patterns.is_empty() || patterns.iter().any(|p| p.is_empty()) {
        return Err(usage());
    }
    let mut options = Vec::new();
    for arg in args {
        let (name, value) = match arg {
            FunctionArg::Named {
                name,
                arg: FunctionArgExpr::Expr(value),
                ..
            } => (name.value.clone(), value),
            FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            })) => match left.as_ref() {
                SqlExpr::Identifier(name) => (name.value.clone(), right.as_ref()),
                _ => return Err(usage()),
            },
            _ => return Err(usage()),
        };
        let name = name.to_ascii_lowercase();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(usage());
        }
        if !is_literal(value) {
            return Err(Error::InvalidArgument(format!(
                "option {name} of {function} must be a constant (a string, number, boolean, \
                 list or {{'key': value}} struct), got {value}"
            )));
        }
        options.push(format!("{name} = {value}"));
    }
    Ok((patterns, options.join(", ")))
}

/// Replaces the file function calls of `stmt` by placeholders; returns the
/// calls found.
fn extract_calls(stmt: &mut Statement) -> Result<Vec<Call>> {
    struct Extract {
        calls: Vec<Call>,
        error: Option<Error>,
    }
    impl VisitorMut for Extract {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
            let TableFactor::Table {
                name,
                args: Some(args),
                ..
            } = factor
            else {
                return ControlFlow::Continue(());
            };
            let Some(function) = file_function(name) else {
                return ControlFlow::Continue(());
            };
            match parse_call(function, args) {
                Ok((patterns, options)) => {
                    let placeholder = format!("fsql_{function}_{}", self.calls.len());
                    *name = ObjectName::from(vec![Ident::new(&placeholder)]);
                    *args = TableFunctionArgs {
                        args: vec![],
                        settings: None,
                    };
                    self.calls.push(Call {
                        placeholder,
                        function,
                        patterns,
                        options,
                    });
                    ControlFlow::Continue(())
                }
                Err(e) => {
                    self.error = Some(e);
                    ControlFlow::Break(())
                }
            }
        }
    }
    let mut v = Extract {
        calls: Vec::new(),
        error: None,
    };
    let _ = stmt.visit(&mut v);
    match v.error {
        Some(e) => Err(e),
        None => Ok(v.calls),
    }
}

/// Cuts `files` into at most `groups` groups of about equal total size
/// (largest first into the lightest group); each group keeps path order.
fn group_files(files: &[String], sizes: &[u64], groups: usize) -> Vec<Vec<String>> {
    let groups = groups.clamp(1, files.len().max(1));
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sizes.get(i).copied().unwrap_or(0)));
    let mut load = vec![0u64; groups];
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); groups];
    for i in order {
        let lightest = (0..groups).min_by_key(|&g| (load[g], g)).unwrap_or(0);
        load[lightest] += sizes.get(i).copied().unwrap_or(0).max(1);
        members[lightest].push(i);
    }
    members
        .into_iter()
        .filter(|m| !m.is_empty())
        .map(|mut m| {
            m.sort_unstable();
            m.into_iter().map(|i| files[i].clone()).collect()
        })
        .collect()
}

/// Resolves the file function calls of `stmt` (see the module docs);
/// returns the placeholder table functions to register for planning it.
pub async fn resolve(
    catalog: &Catalog,
    pool: &WorkerPool,
    stmt: &mut Statement,
) -> Result<Vec<(String, Arc<ResolvedFiles>)>> {
    let calls = extract_calls(stmt)?;
    if calls.is_empty() {
        return Ok(Vec::new());
    }
    let workers = catalog.workers();
    let Some(first) = workers.first() else {
        return Err(Error::Unavailable(
            "the cluster has no live workers to read files".into(),
        ));
    };
    let mut out = Vec::new();
    for call in calls {
        let request =
            fsql_proto::worker_request::Request::DescribeFiles(fsql_proto::DescribeFiles {
                function: call.function.to_string(),
                patterns: call.patterns.clone(),
                options: call.options.clone(),
            });
        let bodies = pool
            .action(&first.url, flight_worker::ACTION_DESCRIBE_FILES, request)
            .await?;
        let description = bodies
            .first()
            .map(|b| fsql_proto::FilesDescription::decode(b.as_ref()))
            .transpose()
            .map_err(|e| Error::Internal(format!("malformed describe_files answer: {e}")))?
            .ok_or_else(|| Error::Internal("describe_files answered nothing".into()))?;
        let schema = fsql_proto::ipc::schema_from_bytes(&description.schema)?;
        let groups = group_files(
            &description.files,
            &description.sizes,
            workers.len() * GROUPS_PER_WORKER,
        );
        let size_of: std::collections::HashMap<&str, u64> = description
            .files
            .iter()
            .map(String::as_str)
            .zip(description.sizes.iter().copied())
            .collect();
        let groups: Vec<fsql_proto::FileGroup> = groups
            .into_iter()
            .map(|files| fsql_proto::FileGroup {
                bytes: files.iter().filter_map(|f| size_of.get(f.as_str())).sum(),
                files,
            })
            .collect();
        let placement = (0..groups.len())
            .map(|g| vec![workers[g % workers.len()].id.clone()])
            .collect();
        let name = format!("{}()", call.placeholder);
        let meta = TableMeta {
            storage: name.clone(),
            name,
            schema,
            distribution: Distribution::RoundRobin,
            shard_count: groups.len() as u32,
            replicas: 1,
            placement,
        };
        let files = fsql_proto::FileSource {
            function: call.function.to_string(),
            groups,
            options: description.options,
        };
        let table = ClusterTable {
            meta: Arc::new(meta),
            files: Some(Arc::new(files)),
        };
        out.push((call.placeholder, Arc::new(ResolvedFiles(Arc::new(table)))));
    }
    Ok(out)
}

/// Files and bytes read so far by the file scans of a running plan, of
/// the totals: `(files_done, files, bytes_done, bytes)`.
pub fn progress(
    plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>,
) -> Option<(u64, u64, u64, u64)> {
    let mut found = None;
    visit_gathers(plan, &mut |g| {
        let Some((total, done)) = g.file_progress() else {
            return;
        };
        let acc = found.get_or_insert((0, 0, 0, 0));
        acc.0 += done.0;
        acc.1 += total.0;
        acc.2 += done.1;
        acc.3 += total.1;
    });
    found
}

fn visit_gathers(
    plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    f: &mut impl FnMut(&crate::gather::ShardGatherExec),
) {
    if let Some(g) = plan.downcast_ref::<crate::gather::ShardGatherExec>() {
        f(g);
    }
    for child in plan.children() {
        visit_gathers(child, f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(sql: &str) -> Result<(Vec<Call>, String)> {
        let mut stmt = crate::engine::parse_one(sql)?;
        let calls = extract_calls(&mut stmt)?;
        Ok((calls, stmt.to_string()))
    }

    #[test]
    fn file_calls_become_placeholders() {
        let (c, sql) = calls(
            "CREATE TABLE t AS SELECT a FROM read_csv(['x/*.csv', 'y.csv.gz'], header = true, \
             delim := '|', types = {'a': 'INT'}) AS f WHERE a > 1",
        )
        .unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].function, "read_csv");
        assert_eq!(c[0].patterns, ["x/*.csv", "y.csv.gz"]);
        assert_eq!(
            c[0].options,
            "header = true, delim = '|', types = {'a': 'INT'}"
        );
        assert!(sql.contains("FROM fsql_read_csv_0() AS f"), "{sql}");
        let (c, _) = calls("SELECT * FROM parquet_scan('p/*.parquet')").unwrap();
        assert_eq!((c[0].function, c[0].patterns.len()), ("read_parquet", 1));
        assert!(calls("SELECT * FROM t").unwrap().0.is_empty());
    }

    #[test]
    fn options_must_be_constants() {
        for bad in [
            "SELECT * FROM read_csv('a.csv', header = (SELECT true))",
            "SELECT * FROM read_csv('a.csv', delim = chr(124))",
            "SELECT * FROM read_csv(42)",
            "SELECT * FROM read_parquet('')",
            "SELECT * FROM read_csv('a.csv', 'b')",
            "SELECT * FROM read_csv('a.csv', header = $1)",
        ] {
            let err = calls(bad).err().unwrap_or_else(|| panic!("accepted {bad}"));
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn groups_balance_sizes() {
        let files: Vec<String> = (0..5).map(|i| format!("f{i}")).collect();
        let groups = group_files(&files, &[100, 10, 10, 80, 10], 2);
        assert_eq!(groups, [vec!["f0", "f4"], vec!["f1", "f2", "f3"]]);
        assert_eq!(group_files(&files[..1], &[5], 8).len(), 1);
        assert_eq!(group_files(&files, &[0; 5], 8).len(), 5);
    }
}
