//! Validates the TPC-H query texts: all 22 run in DuckDB (two independent loads agree) and in
//! DataFusion; DataFusion's answers are compared with DuckDB's and known type-driven
//! differences are listed explicitly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use flight_coordinator::tpch;
use tests::compare::compare_results;
use tests::reference;

const SF: f64 = 0.01;

/// Runs all 22 queries on one DuckDB connection (with the data already loaded).
fn run_all_duckdb(conn: &reference::Connection) -> Vec<Vec<RecordBatch>> {
    (1..=22)
        .map(|n| {
            reference::query(conn, tpch::query(n).unwrap())
                .unwrap_or_else(|e| panic!("Q{n} failed in DuckDB: {e}"))
        })
        .collect()
}

async fn duckdb_answers() -> Vec<Vec<RecordBatch>> {
    tokio::task::spawn_blocking(|| {
        let conn = reference::open().unwrap();
        reference::load_tpch(&conn, SF).unwrap();
        run_all_duckdb(&conn)
    })
    .await
    .unwrap()
}

fn datafusion_context(config: SessionConfig) -> SessionContext {
    let ctx = SessionContext::new_with_config(config);
    for table in tpch::TABLES {
        let schema = tpch::schema(table).unwrap();
        let batches: Vec<RecordBatch> = tpch::generate(table, SF, 8192).unwrap().collect();
        let mem = MemTable::try_new(schema, vec![batches]).unwrap();
        ctx.register_table(table, Arc::new(mem)).unwrap();
    }
    ctx
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_duckdb_two_loads_agree() {
    let (a, b) = tokio::join!(duckdb_answers(), duckdb_answers());
    for n in 1..=22 {
        let (a, b) = (&a[n - 1], &b[n - 1]);
        assert!(rows(a) > 0, "Q{n} returned no rows in DuckDB");
        compare_results(a, b, tpch::query_orders_fully(n))
            .unwrap_or_else(|e| panic!("Q{n}: two DuckDB loads disagree:\n{e}"));
    }
}

/// Queries whose DataFusion answer differs from DuckDB's beyond the comparator's
/// tolerance, and why. A change in this set (a new difference or a fixed one) fails.
fn known_differences() -> BTreeMap<usize, &'static str> {
    BTreeMap::from([])
}

async fn compare_with_datafusion(config: SessionConfig, label: &str) -> BTreeMap<usize, String> {
    let duck = duckdb_answers().await;
    let ctx = datafusion_context(config);
    let mut differences = BTreeMap::new();
    for n in 1..=22 {
        let sql = tpch::query(n).unwrap();
        let df = ctx
            .sql(sql)
            .await
            .unwrap_or_else(|e| panic!("Q{n} does not plan in DataFusion ({label}): {e}"));
        let got = df
            .collect()
            .await
            .unwrap_or_else(|e| panic!("Q{n} fails in DataFusion ({label}): {e}"));
        let expected = &duck[n - 1];
        if let Err(e) = compare_results(expected, &got, tpch::query_orders_fully(n)) {
            println!("---- Q{n}: DataFusion ({label}) differs from DuckDB:\n{e}");
            differences.insert(n, e);
        }
    }
    differences
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_datafusion_matches_duckdb() {
    let differences = compare_with_datafusion(SessionConfig::new(), "default config").await;
    let known = known_differences();
    let got: Vec<usize> = differences.keys().copied().collect();
    let want: Vec<usize> = known.keys().copied().collect();
    assert_eq!(
        got, want,
        "queries where DataFusion differs from DuckDB changed (see the output above)"
    );
}
