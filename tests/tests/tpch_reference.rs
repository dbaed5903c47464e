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
    BTreeMap::from([(
        1,
        "avg_qty, avg_disc: DataFusion's AVG of DECIMAL(15,2) is DECIMAL(19,6), truncated to 6 \
         places (avg_disc 0.050081 vs DuckDB's DOUBLE 0.05008133906964238, relative error \
         ~7e-6; avg_qty ~2e-8); avg_price happens to stay within 1e-9",
    )])
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

/// The validation answers at SF 1 published with the TPC-H tools (as shipped in the
/// `tpchgen` crate) against DuckDB running our query texts: checks the substitution
/// parameters. Slow (SF 1 generation and load):
/// `cargo test -p tests --test tpch_reference tpch_sf1 -- --ignored`
#[test]
#[ignore]
fn tpch_sf1_matches_official_answers() {
    use arrow::util::display::array_value_to_string;
    let conn = reference::open().unwrap();
    reference::load_tpch(&conn, 1.0).unwrap();
    let mut failures = Vec::new();
    for n in 1..=22 {
        let answer = tpchgen::q_and_a::answers_sf1::answer(n as i32).unwrap();
        let mut lines = answer.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines.next().unwrap().split('|').collect();
        let want: Vec<Vec<String>> = lines
            .map(|l| l.split('|').map(|f| f.trim().to_string()).collect())
            .collect();
        let batches = reference::query(&conn, tpch::query(n).unwrap()).unwrap();
        let mut got: Vec<Vec<String>> = Vec::new();
        for b in &batches {
            for r in 0..b.num_rows() {
                got.push(
                    b.columns()
                        .iter()
                        .map(|c| array_value_to_string(c, r).unwrap().trim().to_string())
                        .collect(),
                );
            }
        }
        let width = batches.first().map(|b| b.num_columns()).unwrap_or(0);
        if width != header.len() || got.len() != want.len() {
            failures.push(format!(
                "Q{n}: shape {}x{width}, official {}x{}",
                got.len(),
                want.len(),
                header.len()
            ));
            continue;
        }
        'rows: for (r, (g, w)) in got.iter().zip(&want).enumerate() {
            for (c, (gv, wv)) in g.iter().zip(w).enumerate() {
                let same = match (n, c, gv.parse::<f64>(), wv.parse::<f64>()) {
                    // Quirk of the answer file: Q11's ps_partkey was printed right-aligned
                    // in 6 characters and cut to 4 ("129760" -> "1297", "9412" -> "  94").
                    (11, 0, _, _) => format!("{gv:>6}").get(..4).map(str::trim) == Some(wv),
                    // Quirk of the official answer set: Q17 is listed as 348406.02 while the
                    // exact result is 348406.0542857 (every engine, and the TPC-H spec
                    // text, give 348406.05).
                    (17, 0, Ok(x), _) if wv == "348406.02" => (x - 348406.05).abs() <= 0.005,
                    // the answers round to 2 decimal places
                    (_, _, Ok(x), Ok(y)) if wv.contains('.') => {
                        (x - y).abs() <= 0.005 + 1e-9 * y.abs()
                    }
                    _ => gv == wv,
                };
                if !same {
                    failures.push(format!(
                        "Q{n} row {r} column {c} `{}`: DuckDB {gv:?}, official {wv:?}",
                        header[c].trim()
                    ));
                    break 'rows;
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
